//! Concurrency limits decided in the core: units taken up to the limit,
//! the next request refused, units freed by a release (once only), by a
//! refusal from another rule, and by expiry; policy validation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sluice_core::concurrency;
use sluice_core::limiter::{decide, release, Ctx, Decision, Spent};
use sluice_core::policy::Policy;
use sluice_core::request::MemoryRequest;
use sluice_core::store::{ensure_slots, MemoryStore};

const S: u64 = 1_000_000_000;
const T0: u64 = 1_763_382_885 * S;

const POLICY: &str = r#"{"tenant": [{"header": "x-tenant-id"}], "rules": [
    {"name": "in-flight", "key": ["tenant"], "limit": {"concurrent": 2, "max_hold": "1m"}},
    {"name": "slow-path", "match": {"paths": [{"exact": "/rare"}]}, "key": ["tenant"], "limit": {"requests": 1, "per": "1h"}}
]}"#;

struct Instance {
    policy: Policy,
    store: MemoryStore,
    n: u64,
}

impl Instance {
    fn new() -> Instance {
        let policy = Policy::from_json(POLICY).expect("policy");
        let store = MemoryStore::default();
        ensure_slots(&store, policy.slots).unwrap();
        concurrency::ensure_slots(&store).unwrap();
        Instance { policy, store, n: 0 }
    }

    fn send(&mut self, path: &str, tenant: &str, now: u64) -> Decision {
        self.n += 1;
        let mut req = MemoryRequest::new("GET", path).header("x-tenant-id", tenant);
        decide(&self.policy, &mut req, &self.store, Ctx { random: self.n, ..Ctx::at(now) })
    }
}

fn units(d: &Decision) -> Vec<Spent> {
    d.effects.spent.iter().filter(|s| matches!(s, Spent::Concurrent { .. })).copied().collect()
}

#[test]
fn admits_up_to_the_limit_then_refuses_until_a_release() {
    let mut i = Instance::new();
    let a = i.send("/x", "acme", T0);
    let b = i.send("/x", "acme", T0);
    assert!(a.allowed() && b.allowed());
    assert_eq!(units(&a).len(), 1);
    let c = i.send("/x", "acme", T0);
    assert!(!c.allowed());
    let by = c.ruling.denied_by.unwrap();
    assert_eq!((by.rule, by.limit, by.outcome.remaining), (0, 2, 0));
    assert!(by.outcome.retry_after_ns > 0);
    // Another tenant has its own units.
    assert!(i.send("/x", "other", T0).allowed());
    assert!(release(&i.store, &units(&a), T0 + S).is_empty());
    assert!(i.send("/x", "acme", T0 + S).allowed());
    assert!(!i.send("/x", "acme", T0 + S).allowed());
}

#[test]
fn a_second_release_frees_nothing_more() {
    let mut i = Instance::new();
    let a = i.send("/x", "acme", T0);
    let _b = i.send("/x", "acme", T0);
    release(&i.store, &units(&a), T0);
    release(&i.store, &units(&a), T0);
    assert!(i.send("/x", "acme", T0).allowed());
    assert!(!i.send("/x", "acme", T0).allowed(), "a double release must not free b's unit");
}

#[test]
fn a_request_refused_by_another_rule_holds_no_unit() {
    let mut i = Instance::new();
    assert!(i.send("/rare", "acme", T0).allowed());
    // Refused by slow-path: its unit of in-flight is given back at once.
    for _ in 0..5 {
        let d = i.send("/rare", "acme", T0);
        assert_eq!(d.ruling.denied_by.map(|r| r.rule), Some(1));
        assert!(units(&d).is_empty());
    }
    assert!(i.send("/x", "acme", T0).allowed(), "the refused requests leaked units");
    assert!(!i.send("/x", "acme", T0).allowed());
}

#[test]
fn units_never_released_expire_after_max_hold() {
    let mut i = Instance::new();
    assert!(i.send("/x", "acme", T0).allowed());
    assert!(i.send("/x", "acme", T0).allowed());
    assert!(!i.send("/x", "acme", T0 + 59 * S).allowed());
    assert!(i.send("/x", "acme", T0 + 60 * S).allowed());
}

#[test]
fn a_release_after_a_reload_without_the_rule_is_harmless() {
    let mut i = Instance::new();
    let a = i.send("/x", "acme", T0);
    // The new policy has no concurrency rule; the old unit is released anyway.
    i.policy = Policy::from_json(r#"{"rules": [{"name": "r", "limit": {"requests": 9, "per": "1s"}}]}"#).unwrap();
    assert!(release(&i.store, &units(&a), T0).is_empty());
    assert!(release(&i.store, &units(&a), T0).is_empty());
}

#[test]
fn bad_concurrency_limits_are_refused_at_their_path() {
    let rule = |limit: &str, extra: &str| format!(r#"{{"rules": [{{"name": "c", "limit": {limit}{extra}}}]}}"#);
    let cases = [
        (rule(r#"{"concurrent": 0}"#, ""), "rules[0].limit.concurrent: must be a whole number from 1 to 256"),
        (rule(r#"{"concurrent": 4, "per": "1s"}"#, ""), "rules[0].limit.concurrent: a concurrency limit takes no"),
        (rule(r#"{"concurrent": 4, "max_hold": "0s"}"#, ""), "rules[0].limit.max_hold"),
        (rule(r#"{"concurrent": 4, "max_hold": "2h"}"#, ""), "rules[0].limit.max_hold: 2 hours is out of range"),
        (rule(r#"{"requests": 4, "per": "1s", "max_hold": "1m"}"#, ""), "rules[0].limit.max_hold: only a concurrency limit"),
        (rule(r#"{"per": "1s"}"#, ""), "rules[0].limit.requests: missing"),
        (rule(r#"{"concurrent": 4}"#, r#", "queue": {"max_wait": "1s"}"#), "rules[0].queue: a concurrency limit refuses at once"),
        (rule(r#"{"concurrent": 4}"#, r#", "algorithm": "fixed_window""#), "rules[0].algorithm: a concurrency limit takes no algorithm"),
    ];
    for (json, want) in cases {
        let err = Policy::from_json(&json).unwrap_err().to_string();
        assert!(err.contains(want), "{json}: {err}");
    }
    let global = r#"{"global": {"cluster": "sluice_counter"}, "rules": [
        {"name": "c", "scope": "global", "limit": {"concurrent": 4}}]}"#;
    let err = Policy::from_json(global).unwrap_err().to_string();
    assert!(err.contains("rules[0].scope: a concurrency limit is per instance"), "{err}");
}
