//! The default gateway policy decided end to end in the core, against an
//! in-memory store with Envoy's shared-data semantics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

mod support;

use std::cell::RefCell;

use sluice_core::limiter::Decision;
use sluice_core::policy::Policy;
use sluice_core::request::MemoryRequest;
use sluice_core::response::{admitted_headers, denial};
use support::{FakeCounter, Instance};

const GATEWAY: &str = include_str!("../../policies/mcp-gateway.json");
const S: u64 = 1_000_000_000;
/// 2025-11-17T12:34:45Z
const T0: u64 = 1_763_382_885 * S;

/// One instance with the gateway policy and its own counter service.
struct Gateway {
    policy: Policy,
    instance: RefCell<Instance>,
    counter: RefCell<FakeCounter>,
    now: u64,
}

impl Gateway {
    fn new(json: &str) -> Gateway {
        let policy = Policy::from_json(json).expect("policy");
        let instance = RefCell::new(Instance::new(policy.clone()));
        Gateway { policy, instance, counter: RefCell::default(), now: T0 }
    }

    fn send(&self, req: MemoryRequest) -> Decision {
        let mut instance = self.instance.borrow_mut();
        let mut counter = self.counter.borrow_mut();
        let d = instance.send(&mut counter, &req, self.now);
        instance.tick(&mut counter, self.now);
        d
    }

    /// Sends `n` copies of `req` at the current instant; returns admissions.
    fn burst(&self, req: &MemoryRequest, n: u32) -> u32 {
        (0..n).map(|_| u32::from(self.send(req.clone()).allowed())).sum()
    }

    fn denied_by(&self, req: MemoryRequest) -> Option<String> {
        self.send(req).ruling.denied_by.map(|d| self.policy.rules[d.rule].name.clone())
    }
}

fn get(path: &str) -> MemoryRequest {
    MemoryRequest::new("GET", path)
}

fn tenant(req: MemoryRequest, t: &str) -> MemoryRequest {
    req.header("x-tenant-id", t)
}

#[test]
fn endpoint_limits_per_tenant() {
    let g = Gateway::new(GATEWAY);
    for (method, path, limit, rule) in [
        ("GET", "/api/v1/tools/list", 5, "tools-list"),
        ("POST", "/api/v1/tools/select", 10, "tools-select"),
        ("POST", "/api/v1/tools/invoke", 20, "tools-invoke"),
    ] {
        let req = tenant(MemoryRequest::new(method, path), "tenant-a");
        assert_eq!(g.burst(&req, limit + 5), limit, "{path}");
        assert_eq!(g.denied_by(req).as_deref(), Some(rule));
    }
}

#[test]
fn tenants_are_isolated() {
    let g = Gateway::new(GATEWAY);
    let a = tenant(get("/api/v1/tools/list"), "tenant-a");
    let b = tenant(get("/api/v1/tools/list"), "tenant-b");
    assert_eq!(g.burst(&a, 10), 5);
    assert_eq!(g.burst(&b, 10), 5);
}

#[test]
fn oauth_config_limits_come_from_the_path_tenant() {
    let g = Gateway::new(GATEWAY);
    let path = "/api/v1/tenants/acme/integrations/notion/oauth-config";
    let write = MemoryRequest::new("POST", path);
    assert_eq!(g.burst(&write, 3), 1);
    assert_eq!(g.denied_by(write).as_deref(), Some("oauth-config-write"));
    let d = g.send(MemoryRequest::new("DELETE", path));
    assert!(d.allowed(), "delete has its own bucket");
    assert_eq!(d.ruling.tenant.as_deref(), Some("acme"));
    assert_eq!(g.burst(&MemoryRequest::new("GET", path), 12), 10);
    // Another tenant's path is another bucket, whatever header it sends.
    let other = MemoryRequest::new("POST", "/api/v1/tenants/globex/integrations/notion/oauth-config").header("x-tenant-id", "acme");
    assert!(g.send(other).allowed());
    assert_eq!(g.burst(&get("/api/v1/tenants/acme/integrations"), 8), 5);
}

#[test]
fn per_tenant_limit_spans_endpoints() {
    let g = Gateway::new(GATEWAY);
    let mut admitted = 0;
    for i in 0..150 {
        let path = format!("/api/v1/anything/{i}");
        admitted += u32::from(g.send(tenant(get(&path), "tenant-a").from_address(&format!("10.0.{}.1:1", i % 200))).allowed());
    }
    assert_eq!(admitted, 100);
}

#[test]
fn per_ip_limit_and_exempt_paths() {
    let g = Gateway::new(&behind_one_proxy());
    // 1100 requests from one client spread over 20 tenants: the IP limit bites.
    let mut admitted = 0;
    for i in 0..1100 {
        let r = tenant(get("/api/v1/categories/x"), &format!("t{}", i % 20)).header("x-forwarded-for", "203.0.113.42");
        admitted += u32::from(g.send(r).allowed());
    }
    assert_eq!(admitted, 1000);
    let r = get("/api/v1/x").header("x-forwarded-for", "203.0.113.42");
    assert_eq!(g.denied_by(r).as_deref(), Some("per-ip"));
    // Health checks skip the global per-IP and per-tenant rules, but have their own.
    let health = get("/health").header("x-forwarded-for", "203.0.113.42");
    let d = g.send(health.clone());
    assert!(d.allowed());
    let names: Vec<&str> = d.ruling.applied.iter().map(|a| g.policy.rules[a.rule].name.as_str()).collect();
    assert_eq!(names, ["health"]);
    assert_eq!(g.burst(&health, 1100), 999);
    assert!(g.send(get("/ready").header("x-forwarded-for", "203.0.113.42")).allowed());
}

/// The default policy behind one proxy that writes `X-Forwarded-For`
/// (a load balancer or ingress gateway in front of Envoy).
fn behind_one_proxy() -> String {
    let json = GATEWAY.replacen(r#""trusted_hops": 0"#, r#""trusted_hops": 1"#, 1);
    assert_ne!(json, GATEWAY, "the default policy names no trusted_hops 0");
    json
}

#[test]
fn a_forged_forwarded_for_does_not_make_a_new_client() {
    // Envoy is the edge (trusted_hops 0): the header is the client's own
    // text, and the TCP peer is the client whatever it says.
    let g = Gateway::new(GATEWAY);
    let forging = |i: u32| tenant(get("/api/v1/metrics"), "t").header("x-forwarded-for", &format!("198.51.100.{}", i % 250)).from_address("192.0.2.9:4000");
    let admitted: u32 = (0..150).map(|i| u32::from(g.send(forging(i)).allowed())).sum();
    assert_eq!(admitted, 100, "a client that varies X-Forwarded-For escaped the per-ip limit");
    // Nor can a client spend another address's bucket by naming it.
    let victim = tenant(get("/api/v1/metrics"), "v").from_address("198.51.100.1:5000");
    assert_eq!(g.burst(&victim, 100), 100);
}

#[test]
fn ipv6_clients_share_their_64() {
    let g = Gateway::new(GATEWAY);
    // Each request its own tenant: only the per-ip rules can bite.
    let n = std::cell::Cell::new(0);
    let from = |addr: &str| {
        n.set(n.get() + 1);
        tenant(get("/api/v1/metrics"), &format!("t{}", n.get())).from_address(addr)
    };
    let admitted: u32 = (0..150).map(|i| u32::from(g.send(from(&format!("[2001:db8:7:7::{:x}]:4000", i + 1))).allowed())).sum();
    assert_eq!(admitted, 100, "addresses of one /64 are one client");
    assert!(g.send(from("[2001:db8:7:8::1]:4000")).allowed(), "the next /64 is another client");
    // An IPv4 client and its IPv4-mapped IPv6 form share one bucket.
    let v4: u32 = (0..60).map(|_| u32::from(g.send(from("192.0.2.200:1")).allowed())).sum();
    let mapped: u32 = (0..60).map(|_| u32::from(g.send(from("[::ffff:192.0.2.200]:1")).allowed())).sum();
    assert_eq!((v4, mapped), (60, 40));
}

#[test]
fn client_ip_is_the_rightmost_forwarded_address() {
    let g = Gateway::new(&behind_one_proxy());
    let spoofing = |i: u32| get("/api/v1/metrics").header("x-forwarded-for", &format!("1.2.3.{}, 198.51.100.7", i % 250));
    let admitted: u32 = (0..150).map(|i| u32::from(g.send(spoofing(i)).allowed())).sum();
    assert_eq!(admitted, 100, "made-up left entries do not make new clients");
    // Without the header, the peer address is the client.
    let direct = tenant(get("/api/v1/metrics"), "tenant-b").from_address("192.0.2.1:5000");
    assert_eq!(g.burst(&direct, 150), 100);
}

#[test]
fn integration_limits() {
    // Without their queues, to count refusals (queueing is tested below).
    let g = Gateway::new(&GATEWAY.replace(",\n     \"queue\": {\"max_wait\": \"2s\"}", ""));
    assert!(g.policy.rules.iter().all(|r| r.queue.is_none()));
    for (name, limit) in [("notion", 3), ("github", 60), ("search", 5), ("linkedin", 100)] {
        let req = tenant(get("/api/v1/integrations/call"), &format!("tenant-{name}")).header("x-integration", name);
        assert_eq!(g.burst(&req, limit + 10), limit, "{name}");
        if limit < 100 {
            assert_eq!(g.denied_by(req).as_deref(), Some(format!("integration-{name}").as_str()));
        } else {
            // At 100/s per-tenant denies with the same retry-after; the
            // first rule in policy order is reported.
            assert_eq!(g.denied_by(req).as_deref(), Some("per-tenant"));
        }
    }
    // Case does not make a new integration bucket.
    let shouting = tenant(get("/api/v1/integrations/call"), "tenant-notion").header("x-integration", "NOTION");
    assert_eq!(g.denied_by(shouting).as_deref(), Some("integration-notion"));
}

#[test]
fn leaving_the_header_out_does_not_escape() {
    let g = Gateway::new(GATEWAY);
    // No tenant at all: every such request shares one per-tenant bucket.
    let anonymous = |i: u32| get("/api/v1/tools/list").from_address(&format!("10.1.{}.{}:1", i / 250, i % 250));
    let admitted: u32 = (0..50).map(|i| u32::from(g.send(anonymous(i)).allowed())).sum();
    assert_eq!(admitted, 5);
}

#[test]
fn spellings_of_a_path_share_its_limit() {
    let g = Gateway::new(GATEWAY);
    let spellings =
        ["/api/v1/tools/list", "/API/v1/tools/list", "/api/v1/tools/list/", "//api/v1//tools/list", "/api/v1/tools/%6cist", "/api/v1/x/../tools/list?page=2"];
    let admitted: u32 = spellings.iter().cycle().take(12).map(|p| u32::from(g.send(tenant(get(p), "tenant-a")).allowed())).sum();
    assert_eq!(admitted, 5);
    // Tenant case does not make a new bucket either.
    assert!(!g.send(tenant(get("/api/v1/tools/list"), "TENANT-A")).allowed());
}

#[test]
fn a_denied_request_spends_nothing() {
    let g = Gateway::new(GATEWAY);
    let list = tenant(get("/api/v1/tools/list"), "tenant-a");
    assert_eq!(g.burst(&list, 50), 5);
    // 45 denials spent nothing of per-tenant (100) or per-ip (1000): 95 left.
    let other = tenant(get("/api/v1/other"), "tenant-a");
    assert_eq!(g.burst(&other, 200), 95);
}

#[test]
fn the_rate_holds_over_time() {
    let mut g = Gateway::new(GATEWAY);
    let list = tenant(get("/api/v1/tools/list"), "tenant-a");
    let mut admitted = 0;
    // 100 requests a second for 10 s: at most 5 * (10 + 1); tools-list is
    // global, so 5 per counter window: 50 for these 10 windows.
    for _ in 0..1000 {
        admitted += u32::from(g.send(list.clone()).allowed());
        g.now += S / 100;
    }
    assert_eq!(admitted, 50);
}

#[test]
fn denial_reply_matches_the_gateway_contract() {
    let g = Gateway::new(GATEWAY);
    let list = tenant(get("/api/v1/tools/list"), "tenant-123");
    g.burst(&list, 5);
    let d = g.send(list);
    let reply = denial(&g.policy, &d, g.now, 0).expect("denied");
    assert_eq!(reply.status, 429);
    let body: serde_json::Value = serde_json::from_str(&reply.body).expect("json");
    assert_eq!(
        body,
        serde_json::json!({
            "error": "Rate Limit Exceeded",
            "message": "Too many requests. Please try again later.",
            "retryAfter": 1,
            "limits": {"tier": "tools-list", "limit": 5, "window": "1 second", "remaining": 0, "resetAt": "2025-11-17T12:34:46Z"}
        })
    );
    let keys: Vec<&str> = reply.body.split('"').skip(1).step_by(2).take(3).collect();
    assert_eq!(keys, ["error", "Rate Limit Exceeded", "message"], "field order as in the contract");
    let h = |n: &str| reply.headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    assert_eq!(h("retry-after"), Some("1"));
    assert_eq!(h("x-ratelimit-limit"), Some("5"));
    assert_eq!(h("x-ratelimit-remaining"), Some("0"));
    assert_eq!(h("x-ratelimit-reset"), Some("1763382886"));
    assert_eq!(h("x-ratelimit-tenant"), Some("tenant-123"));
    assert_eq!(h("ratelimit-policy"), Some("\"tools-list\";q=5;w=1"));
    assert_eq!(h("ratelimit"), Some("\"tools-list\";r=0;t=1"));
    assert_eq!(h("content-type"), Some("application/json"));
}

#[test]
fn retry_after_is_jittered_within_a_tenth_of_the_window() {
    let g = Gateway::new(&GATEWAY.replace(r#""requests": 5, "per": "1s""#, r#""requests": 5, "per": "1m""#));
    let list = tenant(get("/api/v1/tools/list"), "tenant-a");
    g.burst(&list, 5);
    let d = g.send(list);
    let mut seen = std::collections::BTreeSet::new();
    for r in 0..200u64 {
        let reply = denial(&g.policy, &d, g.now, r * 7_654_321_987).expect("denied");
        let body: serde_json::Value = serde_json::from_str(&reply.body).expect("json");
        seen.insert(body["retryAfter"].as_u64().expect("number"));
    }
    // 12 s until the next token, plus up to 6 s of jitter.
    assert!(seen.iter().all(|s| (12..=18).contains(s)), "{seen:?}");
    assert!(seen.len() > 3, "{seen:?}");
}

#[test]
fn admitted_headers_show_the_tightest_rule() {
    let g = Gateway::new(GATEWAY);
    let list = tenant(get("/api/v1/tools/list"), "tenant-a");
    let d = g.send(list);
    let headers = admitted_headers(&g.policy, &d, g.now);
    let h = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    assert_eq!(h("x-ratelimit-limit"), Some("5"));
    assert_eq!(h("x-ratelimit-remaining"), Some("4"));
    assert_eq!(h("x-ratelimit-reset"), Some("1763382886"));
    assert_eq!(h("ratelimit-policy"), Some("\"tools-list\";q=5;w=1"));
    assert!(h("retry-after").is_none());
}

#[test]
fn response_headers_choose_what_admitted_responses_carry_and_never_what_429s_do() {
    for (choice, want) in [
        ("all", vec!["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "x-ratelimit-tenant", "ratelimit-policy", "ratelimit"]),
        ("x-ratelimit", vec!["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "x-ratelimit-tenant"]),
        ("ietf", vec!["ratelimit-policy", "ratelimit"]),
        ("none", vec![]),
    ] {
        let g = Gateway::new(&GATEWAY.replacen("{\n", &format!("{{\n  \"response_headers\": \"{choice}\",\n"), 1));
        let list = tenant(get("/api/v1/tools/list"), "tenant-a");
        let d = g.send(list.clone());
        let names: Vec<String> = admitted_headers(&g.policy, &d, g.now).into_iter().map(|(k, _)| k).collect();
        assert_eq!(names, want, "{choice}");
        // The limit's 429 carries every header whatever the choice.
        assert_eq!(g.burst(&list, 10), 4);
        let reply = denial(&g.policy, &g.send(list), g.now, 0).expect("denied");
        for name in ["retry-after", "x-ratelimit-limit", "x-ratelimit-tenant", "ratelimit-policy", "ratelimit"] {
            assert!(reply.headers.iter().any(|(k, _)| k == name), "{choice}: {name} missing from the 429");
        }
    }
    let refused = Policy::from_json(&GATEWAY.replacen("{\n", "{\n  \"response_headers\": \"some\",\n", 1)).unwrap_err();
    assert!(refused.to_string().contains("response_headers"), "{refused}");
}

#[test]
fn shadow_rules_count_but_never_deny() {
    let shadowed = GATEWAY.replace(r#""name": "tools-list", "tier": "endpoint","#, r#""name": "tools-list", "tier": "endpoint", "mode": "shadow","#);
    let g = Gateway::new(&shadowed);
    let list = tenant(get("/api/v1/tools/list"), "tenant-a");
    assert_eq!(g.burst(&list, 5), 5);
    let d = g.send(list);
    assert!(d.allowed());
    assert_eq!(d.ruling.shadow_denied.len(), 1);
    assert_eq!(g.policy.rules[d.ruling.shadow_denied[0].rule].name, "tools-list");
    // Headed as if enforced: the shadow rule's limit, nothing remaining.
    let h = admitted_headers(&g.policy, &d, T0);
    let get_h = |n: &str| h.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    assert_eq!(get_h("x-ratelimit-shadow"), Some("tools-list"));
    assert_eq!(get_h("x-ratelimit-limit"), Some("5"));
    assert_eq!(get_h("x-ratelimit-remaining"), Some("0"));
    assert_eq!(get_h("retry-after"), None);
    let whole = Gateway::new(&GATEWAY.replacen("{\n", "{\n  \"mode\": \"shadow\",\n", 1));
    let list = tenant(get("/api/v1/tools/list"), "tenant-a");
    assert_eq!(whole.burst(&list, 20), 20);
}

#[test]
fn algorithms_and_other_key_sources() {
    let policy = r#"{"rules": [
        {"name": "fixed", "match": {"paths": [{"prefix": "/fixed"}]}, "key": [{"query": "user"}], "algorithm": "fixed_window", "limit": {"requests": 3, "per": "30s"}},
        {"name": "sliding", "match": {"paths": [{"prefix": "/sliding"}]}, "key": ["method", "authority"], "algorithm": "sliding_window", "limit": {"requests": 4, "per": "2m"}},
        {"name": "by-claim", "match": {"paths": [{"prefix": "/jwt"}]}, "missing": "skip",
         "key": [{"metadata": {"filter": "envoy.filters.http.jwt_authn", "path": ["jwt_payload", "sub"]}}], "limit": {"requests": 2, "per": "1h"}}
    ]}"#;
    let mut g = Gateway::new(policy);
    assert_eq!(g.burst(&get("/fixed?user=ann"), 5), 3);
    assert_eq!(g.burst(&get("/fixed?user=bob&x=1"), 5), 3);
    assert_eq!(g.burst(&get("/fixed?user=%61nn"), 5), 0, "decoded query value is the same user");
    assert_eq!(g.burst(&get("/sliding"), 6), 4);
    assert_eq!(g.burst(&MemoryRequest::new("POST", "/sliding"), 6), 4);
    let mut claim = get("/jwt");
    claim
        .properties
        .push((["metadata", "filter_metadata", "envoy.filters.http.jwt_authn", "jwt_payload", "sub"].map(String::from).to_vec(), b"user-1".to_vec()));
    assert_eq!(g.burst(&claim, 4), 2);
    assert_eq!(g.burst(&get("/jwt"), 4), 4, "missing: skip lets requests without the claim through");
    g.now += 30 * S;
    assert_eq!(g.burst(&get("/fixed?user=ann"), 5), 3, "a new fixed window");
}

#[test]
fn queued_requests_wait_their_turn_and_can_give_it_back() {
    let policy = r#"{"tenant": [{"header": "x-tenant-id"}], "rules": [
        {"name": "notion", "match": {"headers": [{"name": "x-integration", "exact": "notion"}]},
         "key": ["tenant"], "limit": {"requests": 3, "per": "1s"}, "queue": {"max_wait": "2s", "max_queued": 4}}]}"#;
    let g = Gateway::new(policy);
    let req = tenant(get("/x"), "a").header("x-integration", "notion");
    let holds: Vec<Option<u64>> = (0..9)
        .map(|_| {
            let d = g.send(req.clone());
            d.allowed().then_some(d.ruling.hold_ns / 1_000_000)
        })
        .collect();
    // 3 now, 4 queued a third of a second apart, then max_queued refuses.
    assert_eq!(holds, [Some(0), Some(0), Some(0), Some(333), Some(666), Some(999), Some(1333), None, None]);
    // A waiting client leaves: its turn goes to the next one.
    let d = g.send(req.clone());
    assert!(!d.allowed());
    let mut g2 = Gateway::new(policy);
    g2.now = g.now;
    let mut last = None;
    for _ in 0..5 {
        last = Some(g2.send(req.clone()));
    }
    let leaving = last.expect("sent");
    assert_eq!(leaving.ruling.hold_ns / 1_000_000, 666);
    let errors = sluice_core::limiter::give_back(&g2.policy, &g2.instance.borrow().store, &leaving.effects.spent, g2.now);
    assert!(errors.is_empty());
    assert_eq!(g2.send(req).ruling.hold_ns / 1_000_000, 666, "the departed client's turn is taken again");
}

#[test]
fn requests_can_cost_several_units() {
    let policy = r#"{"read_body": true, "rules": [
        {"name": "units", "match": {"paths": [{"prefix": "/h"}]}, "key": [], "limit": {"requests": 100, "per": "1h"},
         "cost": {"header": "x-units", "default": 2, "max": 50}},
        {"name": "tokens", "match": {"paths": [{"prefix": "/b"}]}, "key": [], "limit": {"requests": 100, "per": "1h"},
         "cost": {"body": "usage.tokens", "max": 40}}
    ]}"#;
    let units = |g: &Gateway, v: Option<&str>| {
        let mut r = get("/h");
        if let Some(v) = v {
            r = r.header("x-units", v);
        }
        g.send(r).ruling.applied[0].outcome.remaining
    };
    let g = Gateway::new(policy);
    assert_eq!(units(&g, Some("10")), 90);
    assert_eq!(units(&g, None), 88, "missing: the default, 2");
    assert_eq!(units(&g, Some("-3")), 38, "malformed: the max, 50");
    assert_eq!(units(&g, Some("51")), 38, "over max: refused at the max (38 left < 50)");
    assert_eq!(units(&g, Some("38")), 0);
    let body = |g: &Gateway, b: Option<&str>| {
        let mut r = MemoryRequest::new("POST", "/b");
        r.body = b.map(|b| b.as_bytes().to_vec());
        let d = g.send(r);
        (d.allowed(), d.ruling.applied[0].outcome.remaining)
    };
    let g = Gateway::new(policy);
    assert_eq!(body(&g, Some(r#"{"usage": {"tokens": 30}}"#)), (true, 70));
    assert_eq!(body(&g, Some(r#"{"usage": {}}"#)), (true, 69), "missing field: default 1");
    assert_eq!(body(&g, Some("not json")), (true, 29), "garbage: the max, 40");
    assert_eq!(body(&g, None), (false, 29), "no body: the max, 40, more than is left");
    assert_eq!(body(&g, Some(r#"{"usage": {"tokens": "29"}}"#)), (true, 0));
    assert!(!body(&g, Some(r#"{"usage": {"tokens": 1}}"#)).0);
}

#[test]
fn the_integration_comes_from_a_header_the_body_or_the_upstream_authority() {
    // The gateway policy, with the body as a second source (read_body on).
    let json = GATEWAY.replace(",\n     \"queue\": {\"max_wait\": \"2s\"}", "").replace(
        r#""integration": [{"header": "x-integration"}, "authority"]"#,
        r#""read_body": true, "integration": [{"header": "x-integration"}, {"body": "integration"}, "authority"]"#,
    );
    let g = Gateway::new(&json);
    assert!(g.policy.needs_body);
    let invoke = |body: &str| {
        let mut r = tenant(MemoryRequest::new("POST", "/api/v1/tools/invoke"), "t-src");
        r.body = Some(body.as_bytes().to_vec());
        r
    };
    let mut egress = tenant(get("/v1/search"), "t-src");
    egress.authority = "API.Notion.com".into();
    // Notion allows 3/s per tenant: one through each source, then a 429
    // whichever source names it.
    assert!(g.send(tenant(get("/api/v1/integrations/call"), "t-src").header("x-integration", "notion")).allowed());
    assert!(g.send(invoke(r#"{"integration": "Notion", "tool": "search"}"#)).allowed());
    assert!(g.send(egress.clone()).allowed());
    assert_eq!(g.denied_by(egress).as_deref(), Some("integration-notion"));
    assert_eq!(g.denied_by(invoke(r#"{"integration": "notion"}"#)).as_deref(), Some("integration-notion"));
    // A body without the field, or not JSON, names no integration.
    assert!(g.send(invoke(r#"{"tool": "search"}"#)).ruling.applied.iter().all(|a| !g.policy.rules[a.rule].name.starts_with("integration-")));
    assert!(g.send(invoke("not json")).allowed());
    // The header wins over the body.
    let both = invoke(r#"{"integration": "notion"}"#).header("x-integration", "github");
    assert!(g.send(both).allowed());
}

#[test]
fn episodes_and_approaching_are_noted_once() {
    use sluice_core::limiter::{decide, Ctx, Note};
    use sluice_core::store::{ensure_slots, MemoryStore};
    let policy = Policy::from_json(GATEWAY).expect("policy");
    let store = MemoryStore::default();
    ensure_slots(&store, policy.slots).expect("slots");
    let list = policy.rules.iter().position(|r| r.name == "tools-list").expect("rule");
    assert_eq!(policy.rules[list].tier, "endpoint");
    let req = tenant(get("/api/v1/tools/list"), "noted");
    // The gateway's rules made local, to keep this in memory.
    let local = Policy::from_json(&GATEWAY.replace(r#" "scope": "global","#, "")).expect("policy");
    assert_eq!(local.rules[list].scope, sluice_core::policy::Scope::Local);
    let notes = |now: u64| {
        let d = decide(&local, &mut req.clone(), &store, Ctx::at(now));
        (d.allowed(), d.books.notes.iter().filter(|(r, _)| *r == list).map(|(_, n)| *n).collect::<Vec<_>>())
    };
    // 5 per second: the fifth leaves nothing (past 95 %), the sixth starts
    // an episode, the seventh is in it; a second later the limit has reset.
    for _ in 0..4 {
        assert_eq!(notes(T0), (true, vec![]));
    }
    assert_eq!(notes(T0), (true, vec![Note::Approaching]));
    assert_eq!(notes(T0), (false, vec![Note::Refusing]));
    assert_eq!(notes(T0), (false, vec![]));
    assert_eq!(notes(T0 + 1_000_000_000), (true, vec![Note::Reset]));
    // Warned already, and still near the limit: no second warning until the
    // key falls below half of it.
    assert_eq!(notes(T0 + 1_000_000_000), (true, vec![]));
    assert_eq!(notes(T0 + 3_000_000_000), (true, vec![]));
    for _ in 0..4 {
        notes(T0 + 3_000_000_000);
    }
    assert_eq!(notes(T0 + 3_000_000_000).1, vec![Note::Refusing]);
}
