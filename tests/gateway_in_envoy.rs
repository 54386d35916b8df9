//! The default gateway policy enforced by the filter in a real Envoy: the
//! 429 contract, tenant isolation, exemptions, client IPs, templates and
//! integrations.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{align_to_second, gateway_per, patient, Stack, GATEWAY};

#[test]
fn denial_follows_the_gateway_contract() {
    let stack = Stack::start(&patient(GATEWAY));
    let t1 = [("x-tenant-id", "tenant-123")];
    let mut remaining = Vec::new();
    align_to_second();
    for _ in 0..5 {
        let r = stack.get("/api/v1/tools/list", &t1);
        assert_eq!(r.status, 200, "{}", r.body);
        // The request reached the upstream.
        assert_eq!(r.json().unwrap()["path"], "/api/v1/tools/list");
        assert_eq!(r.header("x-ratelimit-limit"), Some("5"));
        assert_eq!(r.header("x-ratelimit-tenant"), Some("tenant-123"));
        remaining.push(r.header("x-ratelimit-remaining").unwrap().parse::<u32>().unwrap());
    }
    assert!(remaining.windows(2).all(|w| w[1] <= w[0]), "{remaining:?}");
    let r = stack.get("/api/v1/tools/list", &t1);
    assert_eq!(r.status, 429);
    let body = r.json().unwrap();
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 4);
    assert_eq!(body["error"], "Rate Limit Exceeded");
    assert_eq!(body["message"], "Too many requests. Please try again later.");
    let retry = body["retryAfter"].as_u64().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let limits = &body["limits"];
    assert_eq!(limits["tier"], "tools-list");
    assert_eq!(limits["limit"], 5);
    assert_eq!(limits["window"], "1 second");
    assert_eq!(limits["remaining"], 0);
    assert_eq!(limits.as_object().unwrap().len(), 5);
    let reset_at = limits["resetAt"].as_str().unwrap();
    assert!(reset_at.len() == 20 && reset_at.ends_with('Z'), "{reset_at}");
    assert_eq!(r.header("retry-after"), Some(retry.to_string().as_str()));
    assert_eq!(r.header("x-ratelimit-limit"), Some("5"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(r.header("x-ratelimit-tenant"), Some("tenant-123"));
    assert_eq!(r.header("ratelimit-policy"), Some("\"tools-list\";q=5;w=1"));
    assert_eq!(r.header("ratelimit"), Some(format!("\"tools-list\";r=0;t={retry}").as_str()));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let reset: u64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(reset >= now && reset <= now + 3, "reset {reset} now {now}");
}

#[test]
fn tenants_are_isolated_and_limits_recover() {
    let stack = Stack::start(&patient(GATEWAY));
    let a = [("x-tenant-id", "tenant-a")];
    let b = [("x-tenant-id", "tenant-b")];
    align_to_second();
    assert_eq!(stack.admitted(8, "GET", "/api/v1/tools/list", &a), 5);
    assert_eq!(stack.admitted(8, "GET", "/api/v1/tools/list", &b), 5);
    // 5/s: a second later tenant-a has its burst back.
    align_to_second();
    assert_eq!(stack.admitted(8, "GET", "/api/v1/tools/list", &a), 5);
}

#[test]
fn endpoint_limits_of_the_gateway() {
    let stack = Stack::start(&gateway_per("1h"));
    let t = [("x-tenant-id", "tenant-e")];
    for (method, path, limit, rule) in [("POST", "/api/v1/tools/select", 10, "tools-select"), ("POST", "/api/v1/tools/invoke", 20, "tools-invoke")] {
        let statuses = stack.statuses(limit + 3, method, path, &t);
        assert_eq!(statuses.iter().filter(|s| **s == 200).count(), limit, "{path}");
        assert_eq!(stack.send(method, path, &t).json().unwrap()["limits"]["tier"], rule);
    }
    // oauth-config: the tenant comes from the path.
    let cfg = "/api/v1/tenants/acme/integrations/notion/oauth-config";
    assert_eq!(stack.admitted(3, "POST", cfg, &[]), 1);
    let r = stack.send("POST", cfg, &[]);
    assert_eq!(r.json().unwrap()["limits"]["tier"], "oauth-config-write");
    assert_eq!(r.header("x-ratelimit-tenant"), Some("acme"));
    assert_eq!(stack.admitted(3, "DELETE", cfg, &[]), 1);
    assert_eq!(stack.admitted(12, "GET", cfg, &[]), 10);
    assert_eq!(stack.admitted(7, "GET", "/api/v1/tenants/acme/integrations", &[]), 5);
    assert_eq!(stack.admitted(3, "POST", "/api/v1/tenants/globex/integrations/notion/oauth-config", &[]), 1);
}

#[test]
fn integrations_are_limited_by_header() {
    let stack = Stack::start(&gateway_per("1h"));
    for (name, limit) in [("notion", 3), ("calendar", 5), ("gmail", 25)] {
        let h = [("x-tenant-id", "tenant-i"), ("x-integration", name)];
        assert_eq!(stack.admitted(limit + 2, "POST", "/api/v1/tools/invoke-x", &h), limit, "{name}");
        let r = stack.send("POST", "/api/v1/tools/invoke-x", &h);
        assert_eq!(r.json().unwrap()["limits"]["tier"], format!("integration-{name}"));
    }
}

#[test]
fn health_checks_skip_the_global_per_ip_rule() {
    // per-ip at 1000/h and health at 1000/h make the counts exact.
    let stack = Stack::start(&common::behind_one_proxy(&gateway_per("1h")).replace(
        r#""name": "per-ip", "tier": "ip",
     "key": ["client_ip"],
     "limit": {"requests": 1000"#,
        r#""name": "per-ip", "tier": "ip",
     "key": ["client_ip"],
     "limit": {"requests": 10"#,
    ));
    let ip = [("x-forwarded-for", "203.0.113.42"), ("x-tenant-id", "t")];
    assert_eq!(stack.admitted(12, "GET", "/api/v1/anything", &ip), 10);
    assert_eq!(stack.get("/api/v1/other", &ip).json().unwrap()["limits"]["tier"], "per-ip");
    // Same client, health and readiness: not subject to per-ip.
    assert_eq!(stack.admitted(20, "GET", "/health", &ip), 20);
    assert_eq!(stack.admitted(20, "GET", "/ready", &ip), 20);
    // Another client is unaffected.
    assert_eq!(stack.get("/api/v1/anything", &[("x-forwarded-for", "198.51.100.1")]).status, 200);
}

#[test]
fn client_ip_is_the_rightmost_forwarded_address() {
    let stack = Stack::start(&common::behind_one_proxy(&gateway_per("1h")));
    // /api/v1/metrics: 100 per client IP. Varying the left of the header
    // does not make a new client.
    let mut admitted = 0;
    for i in 0..105 {
        let xff = format!("10.9.8.{i}, 192.0.2.77");
        admitted += usize::from(stack.get("/api/v1/metrics", &[("x-forwarded-for", &xff), ("x-tenant-id", "m")]).status == 200);
    }
    assert_eq!(admitted, 100);
    assert_eq!(stack.get("/api/v1/metrics", &[("x-forwarded-for", "192.0.2.78"), ("x-tenant-id", "n")]).status, 200);
}

#[test]
fn a_missing_tenant_shares_one_bucket() {
    let stack = Stack::start(&gateway_per("1h"));
    let mut admitted = 0;
    for i in 0..12 {
        let xff = format!("192.0.2.{i}");
        admitted += usize::from(stack.get("/api/v1/tools/list", &[("x-forwarded-for", &xff)]).status == 200);
    }
    assert_eq!(admitted, 5, "requests without x-tenant-id must not escape tools-list");
}
