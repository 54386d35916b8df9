//! Plans and overrides decided in the core on a fake clock: which limit a
//! request gets, where it is counted, what the 429 says, what survives a
//! reload, and what validation refuses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

mod support;

use sluice_core::limiter::{decide, explain, Ctx, Decision};
use sluice_core::policy::Policy;
use sluice_core::request::MemoryRequest;
use sluice_core::response::denial;
use sluice_core::store::{ensure_slots, MemoryStore};
use support::{FakeCounter, Instance};

const PLANS: &str = include_str!("../../policies/examples/plans.json");
const GATEWAY: &str = include_str!("../../policies/mcp-gateway.json");
const S: u64 = 1_000_000_000;
/// 2025-11-17T12:34:45Z
const T0: u64 = 1_763_382_885 * S;

fn list(tenant: &str) -> MemoryRequest {
    MemoryRequest::new("GET", "/api/v1/tools/list").header("x-tenant-id", tenant)
}

fn on_plan(req: MemoryRequest, plan: &str) -> MemoryRequest {
    req.header("x-plan", plan)
}

/// One instance of the example policy with its counter service.
struct Gateway {
    policy: Policy,
    instance: Instance,
    counter: FakeCounter,
}

impl Gateway {
    fn new() -> Gateway {
        let policy = Policy::from_json(PLANS).expect("plans.json");
        Gateway { instance: Instance::new(policy.clone()), policy, counter: FakeCounter::default() }
    }

    fn send(&mut self, req: &MemoryRequest, now: u64) -> Decision {
        let d = self.instance.send(&mut self.counter, req, now);
        self.instance.tick(&mut self.counter, now);
        d
    }

    /// Admissions among `n` copies of `req` at `now`.
    fn burst(&mut self, req: &MemoryRequest, n: u32, now: u64) -> u32 {
        (0..n).map(|_| u32::from(self.send(req, now).allowed())).sum()
    }
}

#[test]
fn free_gets_five_a_second_and_pro_fifty() {
    let mut g = Gateway::new();
    assert_eq!(g.burst(&on_plan(list("free-co"), "free"), 6, T0), 5);
    assert_eq!(g.burst(&on_plan(list("pro-co"), "pro"), 51, T0), 50);
    // The next second, both again.
    assert_eq!(g.burst(&on_plan(list("free-co"), "free"), 6, T0 + S), 5);
    assert_eq!(g.burst(&on_plan(list("pro-co"), "pro"), 51, T0 + S), 50);
    // Each plan's key is its own at the counter service, asked with its limit.
    let used = |id: &str| g.counter.used_in_all("tools-list", id);
    assert!(used("pro-co:pro") > 10, "{}", used("pro-co:pro"));
    assert_eq!(used("pro-co"), 0);
    assert!((1..=10).contains(&used("free-co")), "{}", used("free-co"));
}

#[test]
fn no_plan_and_unknown_plans_are_the_default() {
    let mut g = Gateway::new();
    assert_eq!(g.burst(&list("a"), 10, T0), 5, "no x-plan: free");
    assert_eq!(g.burst(&on_plan(list("b"), "gold"), 10, T0), 5, "not a plan: free");
    assert_eq!(g.burst(&on_plan(list("c"), ""), 10, T0), 5, "empty: free");
    assert_eq!(g.burst(&on_plan(list("d"), "pro-plus"), 10, T0), 5, "a prefix is not the plan");
    let huge = "pro".repeat(20_000);
    assert_eq!(g.burst(&on_plan(list("e"), &huge), 10, T0), 5, "huge: free");
    assert_eq!(g.burst(&on_plan(list("f"), " Pro "), 60, T0), 50, "case and blanks do not matter");
}

#[test]
fn the_429_names_the_limit_of_the_plan() {
    let mut g = Gateway::new();
    let pro = on_plan(list("acme"), "pro");
    assert_eq!(g.burst(&pro, 50, T0), 50);
    let d = g.send(&pro, T0);
    let reply = denial(&g.policy, &d, T0, 0).expect("denied");
    assert!(reply.body.contains(r#""tier":"tools-list","limit":50"#), "{}", reply.body);
    let header = |name: &str| reply.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    assert_eq!(header("x-ratelimit-limit").as_deref(), Some("50"));
    assert_eq!(header("ratelimit-policy").as_deref(), Some("\"tools-list\";q=50;w=1"));
    let free = list("globex");
    assert_eq!(g.burst(&free, 5, T0), 5);
    let d = g.send(&free, T0);
    let reply = denial(&g.policy, &d, T0, 0).expect("denied");
    assert!(reply.body.contains(r#""tier":"tools-list","limit":5"#), "{}", reply.body);
}

#[test]
fn a_key_that_changes_plan_changes_bucket() {
    let mut g = Gateway::new();
    assert_eq!(g.burst(&list("acme"), 5, T0), 5);
    assert!(!g.send(&list("acme"), T0).allowed());
    // Upgraded: its pro bucket is fresh, and not the free one reinterpreted.
    assert_eq!(g.burst(&on_plan(list("acme"), "pro"), 51, T0), 50);
    // Back on free within the second: the free bucket is still spent.
    assert!(!g.send(&list("acme"), T0).allowed());
}

/// A local policy deciding straight against a store.
struct Local {
    policy: Policy,
    store: MemoryStore,
}

impl Local {
    fn new(json: &str) -> Local {
        let policy = Policy::from_json(json).expect("policy");
        let store = MemoryStore::default();
        ensure_slots(&store, policy.slots).expect("slots");
        Local { policy, store }
    }

    fn reload(&mut self, json: &str) {
        self.policy = Policy::from_json(json).expect("policy");
    }

    fn burst(&self, req: &MemoryRequest, n: u32, now: u64) -> u32 {
        (0..n).map(|_| u32::from(decide(&self.policy, &mut req.clone(), &self.store, Ctx::at(now)).allowed())).sum()
    }
}

fn local(plans: &str, overrides: &str) -> String {
    format!(
        r#"{{"tenant": [{{"header": "x-tenant-id"}}],
            "plan": {{"from": [{{"header": "x-plan"}}, {{"metadata": {{"filter": "jwt", "path": ["plan"]}}}}], "names": ["free", "pro", "team"], "default": "free"}},
            "rules": [{{"name": "calls", "key": ["tenant"], "limit": {{"requests": 2, "per": "1s"}}{plans}{overrides}}}]}}"#
    )
}

#[test]
fn overrides_win_over_plans_and_ignore_case() {
    let json = local(r#", "plans": {"pro": {"requests": 4, "per": "1s"}}"#, r#", "overrides": [{"value": "Acme", "limit": {"requests": 7, "per": "1s"}}]"#);
    let l = Local::new(&json);
    let t = |tenant: &str| MemoryRequest::new("GET", "/").header("x-tenant-id", tenant);
    assert_eq!(l.burst(&t("acme"), 10, T0), 7, "the override");
    assert_eq!(l.burst(&t("ACME").header("x-plan", "pro"), 10, T0 + S), 7, "the override, whatever the plan or case");
    assert_eq!(l.burst(&t("globex").header("x-plan", "pro"), 10, T0), 4, "a plan");
    assert_eq!(l.burst(&t("initech").header("x-plan", "team"), 10, T0), 2, "a plan without a limit of its own: the rule's");
    assert_eq!(l.burst(&t("hooli"), 10, T0), 2, "the default plan");
    assert_eq!(l.burst(&t("acme-corp"), 10, T0), 2, "only the exact value is overridden");
}

#[test]
fn a_plan_from_metadata_that_is_not_utf8_is_the_default() {
    let l = Local::new(&local(r#", "plans": {"pro": {"requests": 4, "per": "1s"}}"#, ""));
    let mut req = MemoryRequest::new("GET", "/").header("x-tenant-id", "acme");
    let path: Vec<String> = ["metadata", "filter_metadata", "jwt", "plan"].map(String::from).to_vec();
    req.properties.push((path.clone(), b"pro".to_vec()));
    assert_eq!(l.burst(&req, 10, T0), 4, "a claim names the plan");
    let mut bad = MemoryRequest::new("GET", "/").header("x-tenant-id", "globex");
    bad.properties.push((path, vec![b'p', 0xff, b'r', b'o']));
    assert_eq!(l.burst(&bad, 10, T0), 2, "not UTF-8: the default plan");
}

#[test]
fn a_reload_that_adds_plans_keeps_the_counts_of_unchanged_keys() {
    let mut l = Local::new(&local("", ""));
    let acme = MemoryRequest::new("GET", "/").header("x-tenant-id", "acme");
    assert_eq!(l.burst(&acme, 2, T0), 2);
    l.reload(&local(r#", "plans": {"pro": {"requests": 4, "per": "1s"}}"#, r#", "overrides": [{"value": "globex", "limit": {"requests": 3, "per": "1s"}}]"#));
    assert_eq!(l.burst(&acme, 1, T0), 0, "the free key kept its count");
    assert_eq!(l.burst(&acme.clone().header("x-plan", "pro"), 5, T0), 4, "the pro key is its own");
    // And the rule as written keeps its identity in the example policy.
    let before = Policy::from_json(GATEWAY).unwrap();
    let after = Policy::from_json(PLANS).unwrap();
    let ids = |p: &Policy| p.rules.iter().filter(|r| r.name == "tools-list").map(|r| r.identity).collect::<Vec<_>>();
    let (b, a) = (ids(&before), ids(&after));
    assert_eq!(a.len(), 2);
    assert_eq!(a.first(), b.first(), "tools-list as written kept its identity");
    assert_ne!(a.get(1), b.first(), "its pro variant is counted apart");
    for (x, y) in before.rules.iter().filter(|r| r.name != "tools-list").zip(after.rules.iter().filter(|r| r.name != "tools-list")) {
        assert_eq!(x.identity, y.identity, "{}", x.name);
    }
}

#[test]
fn explain_shows_the_plan_or_override_chosen() {
    let p = Policy::from_json(&local(
        r#", "plans": {"pro": {"requests": 4, "per": "1s"}}"#,
        r#", "overrides": [{"value": "acme", "limit": {"requests": 7, "per": "1s"}}]"#,
    ))
    .unwrap();
    let by = |req: MemoryRequest| {
        let all = explain(&p, &mut req.clone());
        assert_eq!(all.len(), 1, "one entry per rule as written");
        let e = all.into_iter().next().unwrap();
        (p.rules[e.rule].limit.requests, e.limit_by.unwrap_or_default())
    };
    let t = |tenant: &str| MemoryRequest::new("GET", "/").header("x-tenant-id", tenant);
    assert_eq!(by(t("acme")), (7, "override for \"acme\"".to_string()));
    assert_eq!(by(t("globex").header("x-plan", "PRO")), (4, "plan pro".to_string()));
    assert_eq!(by(t("globex")), (2, "plan free (the default: the request names no plan): the rule's own limit".to_string()));
    assert_eq!(by(t("globex").header("x-plan", "gold")), (2, "plan free (the default: \"gold\" is not a plan): the rule's own limit".to_string()));
}

fn problems(json: &str) -> Vec<String> {
    match Policy::from_json(json) {
        Ok(_) => Vec::new(),
        Err(e) => e.problems.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn mistakes_are_named_with_their_path() {
    let rate = r#"{"requests": 4, "per": "1s"}"#;
    let cases: Vec<(String, &str)> = vec![
        (local(&format!(r#", "plans": {{"gold": {rate}}}"#), ""), "rules[0].plans.gold: unknown plan \"gold\": the plans are free, pro, team"),
        (local(&format!(r#", "plans": {{"pro": {rate}, "pro": {rate}}}"#), ""), "rules[0].plans.pro: duplicate plan \"pro\""),
        (local(r#", "plans": {"pro": {"requests": 0, "per": "1s"}}"#, ""), "rules[0].plans.pro.requests: must be a whole number"),
        (local(r#", "plans": {"pro": {"requests": 4, "per": "1 sec"}}"#, ""), "rules[0].plans.pro.per: bad duration"),
        (local(r#", "plans": {"pro": {"requests": 4, "pre": "1s"}}"#, ""), "rules[0].plans.pro.pre: unknown field `pre`"),
        (local(r#", "plans": {"pro": {"concurrent": 4}}"#, ""), "rules[0].plans.pro: must be the same kind of limit"),
        (
            local("", &format!(r#", "overrides": [{{"value": "acme", "limit": {rate}}}, {{"value": "ACME", "limit": {rate}}}]"#)),
            "rules[0].overrides[1].value: duplicate override \"ACME\" (first at overrides[0]",
        ),
        (local("", &format!(r#", "overrides": [{{"value": "", "limit": {rate}}}]"#)), "rules[0].overrides[0].value: must be 1 to 128 bytes"),
        (local("", &format!(r#", "overrides": [{{"value": "{}", "limit": {rate}}}]"#, "x".repeat(129))), "rules[0].overrides[0].value: must be 1 to 128 bytes"),
        (
            local("", &format!(r#", "overrides": [{{"on": "client_ip", "value": "acme", "limit": {rate}}}]"#)),
            "rules[0].overrides[0].on: not a part of the rule's key",
        ),
        (local("", r#", "overrides": [{"value": "acme", "limit": {"requests": 4}}]"#), "rules[0].overrides[0].limit.per: missing"),
        (
            format!(
                r#"{{"rules": [{{"name": "r", "key": ["client_ip", "method"], "limit": {rate}, "overrides": [{{"value": "1.2.3.4", "limit": {rate}}}]}}]}}"#
            ),
            "rules[0].overrides[0].on: the rule's key has 2 parts",
        ),
        (
            format!(
                r#"{{"rules": [{{"name": "r", "key": ["client_ip", "method"], "limit": {rate}, "overrides": [{{"on": "client_ip", "value": "1.2.3.4", "limit": {rate}}}, {{"on": "method", "value": "get", "limit": {rate}}}]}}]}}"#
            ),
            "rules[0].overrides[1].on: every override of a rule must be on the same key part",
        ),
        (format!(r#"{{"rules": [{{"name": "r", "limit": {rate}, "plans": {{"pro": {rate}}}}}]}}"#), "rules[0].plans: the policy has no `plan` section"),
        (
            format!(r#"{{"plan": {{"from": [], "names": ["free", "Pro", "free"], "default": "gold"}}, "rules": [{{"name": "r", "limit": {rate}}}]}}"#),
            "plan.from: give at least one source",
        ),
        (
            format!(r#"{{"plan": {{"from": [{{"header": "x-plan"}}], "names": ["Pro"]}}, "rules": [{{"name": "r", "limit": {rate}}}]}}"#),
            "plan.names[0]: \"Pro\" must be",
        ),
        (
            format!(r#"{{"plan": {{"from": [{{"header": "x-plan"}}], "names": ["free", "free"]}}, "rules": [{{"name": "r", "limit": {rate}}}]}}"#),
            "plan.names[1]: duplicate plan \"free\" (first at plan.names[0])",
        ),
        (
            format!(r#"{{"plan": {{"from": [{{"header": "x-plan"}}], "names": ["free"], "default": "gold"}}, "rules": [{{"name": "r", "limit": {rate}}}]}}"#),
            "plan.default: unknown plan \"gold\"",
        ),
        (
            format!(r#"{{"plan": {{"from": ["tool"], "names": ["free"]}}, "rules": [{{"name": "r", "limit": {rate}}}]}}"#),
            "plan.from[0]: a plan cannot come from a JSON-RPC call",
        ),
        (
            format!(
                r#"{{"plan": {{"from": [{{"header": "x-plan"}}], "names": ["free"]}}, "rules": [{{"name": "r", "limit": {rate}, "queue": {{"max_wait": "1s"}}, "priority": {{"header": "x-p", "classes": ["a", "b"], "reserve": 3}}, "plans": {{"free": {{"requests": 3, "per": "1s"}}}}}}]}}"#
            ),
            "rules[0].priority.reserve: with the limit at rules[0].plans.free: 3 tokens kept back",
        ),
    ];
    for (json, want) in &cases {
        let found = problems(json);
        assert!(found.iter().any(|p| p.starts_with(want)), "want {want:?}, got {found:?} for {json}");
    }
}
