//! How long one upstream answer can hold a key back: `Retry-After` and the
//! reset headers are capped by the rule's `max_block` (60 s by default).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use sluice_core::limiter::{decide, obey_upstream, Ctx};
use sluice_core::policy::Policy;
use sluice_core::request::MemoryRequest;
use sluice_core::store::{ensure_slots, MemoryStore};
use sluice_core::upstream::block_for;

const S: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_000 * S;

fn policy(max_block: Option<&str>) -> Policy {
    let max_block = max_block.map_or(String::new(), |m| format!(r#", "max_block": "{m}""#));
    Policy::from_json(&format!(
        r#"{{"tenant": [{{"header": "x-tenant-id"}}], "rules": [{{"name": "notion", "key": ["tenant"],
            "limit": {{"requests": 10, "per": "1s"}}, "obey_upstream": true{max_block}}}]}}"#
    ))
    .expect("policy")
}

/// Sends one request at `now`; an upstream answer `retry_after` (seconds)
/// to it, if given, is obeyed.
fn send(policy: &Policy, store: &MemoryStore, now: u64, retry_after: Option<&str>) -> bool {
    let mut req = MemoryRequest::new("GET", "/").header("x-tenant-id", "victim");
    let d = decide(policy, &mut req, store, Ctx::at(now));
    if let Some(secs) = retry_after {
        let wait = block_for(429, &[("retry-after".to_string(), secs.to_string())], now).expect("a wait");
        obey_upstream(policy, store, &d.effects.spent, wait, now);
    }
    d.allowed()
}

#[test]
fn retry_after_300_holds_a_key_back_for_max_block_only() {
    for (max_block, back_after) in [(None, 60), (Some("10s"), 10), (Some("5m"), 300)] {
        let p = policy(max_block);
        let store = MemoryStore::default();
        ensure_slots(&store, p.slots).expect("slots");
        assert!(send(&p, &store, T0, Some("300")), "the request that met the upstream's 429 had been admitted");
        assert!(!send(&p, &store, T0 + S, None), "{max_block:?}: held back");
        let just_before = T0 + (back_after - 1) * S;
        assert!(!send(&p, &store, just_before, None), "{max_block:?}: still held back after {}s", back_after - 1);
        let after = T0 + (back_after + 1) * S;
        assert!(send(&p, &store, after, None), "{max_block:?}: admitted again {}s after the 429", back_after + 1);
    }
}

#[test]
fn max_block_is_checked() {
    for (bad, why) in [("0s", "greater than zero"), ("10m", "at most 5m"), ("soon", "bad duration")] {
        let doc = format!(r#"{{"rules": [{{"name": "n", "limit": {{"requests": 1, "per": "1s"}}, "obey_upstream": true, "max_block": "{bad}"}}]}}"#);
        let err = Policy::from_json(&doc).expect_err(bad).to_string();
        assert!(err.contains("rules[0].max_block") && err.contains(why), "{bad}: {err}");
    }
}

/// What `an_upstream_429_holds_the_integration_back_until_its_retry_after`
/// (tests/queue_in_envoy.rs) shows in Envoy, stated exactly: a rule that
/// queues for up to 2 s, told at T0 to wait 3 s, refuses a request whose
/// wait would pass its queue and holds one whose wait fits until exactly
/// T0 + 3 s, not a moment more.
#[test]
fn a_queued_request_is_held_until_the_upstreams_retry_after_exactly() {
    let p = Policy::from_json(
        r#"{"tenant": [{"header": "x-tenant-id"}], "rules": [{"name": "notion", "key": ["tenant"],
            "limit": {"requests": 3, "per": "1s"}, "queue": {"max_wait": "2s"}, "obey_upstream": true}]}"#,
    )
    .expect("policy");
    let store = MemoryStore::default();
    ensure_slots(&store, p.slots).expect("slots");
    assert!(send(&p, &store, T0, Some("3")), "the request the upstream answered");
    let decide_at = |now: u64| decide(&p, &mut MemoryRequest::new("GET", "/").header("x-tenant-id", "victim"), &store, Ctx::at(now));
    let d = decide_at(T0 + S);
    assert!(!d.allowed(), "a wait of 2 s and a bit is past the queue: {d:?}");
    let at = T0 + 1300 * 1_000_000;
    let d = decide_at(at);
    assert!(d.allowed(), "{d:?}");
    assert_eq!(at + d.ruling.hold_ns, T0 + 3 * S, "held until the upstream's time, exactly");
}
