//! Worker shares (`allowance`) inside whole decisions: what a request
//! spent from its worker's share goes back when another rule refuses it,
//! and several workers on one instance admit what the bucket allows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use sluice_core::allowance::WorkerStore;
use sluice_core::limiter::{decide, Ctx};
use sluice_core::policy::Policy;
use sluice_core::request::MemoryRequest;
use sluice_core::store::{ensure_slots, MemoryStore};

const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
const T0: u64 = 1_763_382_885 * S;

fn policy() -> Policy {
    Policy::from_json(
        r#"{"rules": [
        {"name": "per-tenant", "key": [{"header": "x-tenant-id"}], "limit": {"requests": 1000, "per": "1s"}},
        {"name": "export", "match": {"paths": [{"exact": "/export"}]}, "key": [{"header": "x-tenant-id"}], "limit": {"requests": 1, "per": "1s"}}]}"#,
    )
    .expect("policy")
}

fn req(path: &str) -> MemoryRequest {
    MemoryRequest::new("GET", path).header("x-tenant-id", "acme")
}

/// `per-tenant`'s remaining after a request to `path`.
fn remaining(policy: &Policy, store: &WorkerStore, path: &str, now: u64) -> (bool, u64) {
    let d = decide(policy, &mut req(path), store, Ctx::at(now));
    (d.allowed(), d.ruling.applied.iter().find(|a| a.rule == 0).expect("per-tenant applied").outcome.remaining)
}

#[test]
fn a_unit_spent_from_the_share_goes_back_when_another_rule_refuses() {
    let policy = policy();
    let shared = MemoryStore::default();
    ensure_slots(&shared, policy.slots).unwrap();
    let worker = WorkerStore::new(&shared);
    assert_eq!(remaining(&policy, &worker, "/items", T0), (true, 999));
    assert!(worker.shares.borrow().is_empty(), "no share on a key's first request");
    assert_eq!(remaining(&policy, &worker, "/items", T0), (true, 998));
    assert_eq!(worker.shares.borrow().len(), 1, "per-tenant's share reserved");
    assert_eq!(remaining(&policy, &worker, "/export", T0), (true, 997));
    // Refused by `export`: the unit per-tenant took from the share goes back.
    let (allowed, _) = remaining(&policy, &worker, "/export", T0);
    assert!(!allowed);
    assert_eq!(remaining(&policy, &worker, "/items", T0), (true, 996));
}

#[test]
fn four_workers_admit_the_limit_and_touch_the_slot_a_fraction_of_the_time() {
    let policy = Policy::from_json(r#"{"rules": [{"name": "per-tenant", "key": [{"header": "x-tenant-id"}], "limit": {"requests": 200, "per": "1s"}}]}"#)
        .expect("policy");
    let shared = MemoryStore::default();
    ensure_slots(&shared, policy.slots).unwrap();
    let before = shared.calls();
    let workers: Vec<WorkerStore> = (0..4).map(|_| WorkerStore::new(&shared)).collect();
    // 150/s for 10 s, round robin: under the limit, nothing may be refused.
    let mut refused = 0;
    for n in 0..1500u64 {
        let now = T0 + n * (S / 150);
        let w = &workers[(n % 4) as usize];
        if !decide(&policy, &mut req("/items"), w, Ctx::at(now)).allowed() {
            refused += 1;
        }
        if n.is_multiple_of(15) {
            assert!(sluice_core::allowance::settle_due(&w.shares, w, now, false).is_empty());
        }
    }
    assert_eq!(refused, 0);
    // Without shares every decision reads and writes the slot (2 calls);
    // with them, each worker settles and reserves once per share of 12.
    let per_request = (shared.calls() - before) as f64 / 1500.0;
    assert!(per_request < 0.5, "{per_request} hostcalls per request");
    // Then 1000/s for 2 s: about 200 a second get through, never more.
    let mut admitted = Vec::new();
    for n in 0..2000u64 {
        let now = T0 + 10 * S + n * MS;
        let w = &workers[(n % 4) as usize];
        if decide(&policy, &mut req("/items"), w, Ctx::at(now)).allowed() {
            admitted.push(now);
        }
    }
    // At most the burst plus 2 s of refill, and no unit lost for good.
    assert!(admitted.len() <= 200 + 400, "{}", admitted.len());
    assert!(admitted.len() >= 400, "{}", admitted.len());
}
