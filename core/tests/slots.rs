//! The slot table against a client who knows how keys are hashed: keys
//! are addressed by a keyed hash under the instance's secret, and a key
//! that finds no free slot never takes one from an active key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use sluice_core::hash::{Fnv, Keyed};
use sluice_core::limiter::{decide, Ctx};
use sluice_core::policy::Policy;
use sluice_core::request::MemoryRequest;
use sluice_core::store::{ensure_slots, MemoryStore};

const S: u64 = 1_000_000_000;
const SLOTS: u64 = 1024;

/// One rule: 2 requests an hour per tenant, so a spent bucket stays
/// active for the whole test.
const POLICY: &str = r#"{
  "slots": 1024,
  "tenant": [{"header": "x-tenant-id"}],
  "rules": [{"name": "per-tenant", "key": ["tenant"], "limit": {"requests": 2, "per": "1h"}}]
}"#;

fn allowed(policy: &Policy, store: &MemoryStore, tenant: &str, now: u64) -> bool {
    let mut req = MemoryRequest::new("GET", "/").header("x-tenant-id", tenant);
    decide(policy, &mut req, store, Ctx::at(now)).allowed()
}

/// The slot a tenant's key would have under the unkeyed hash (FNV-1a of
/// the rule's identity and the key), as anyone can compute it.
fn fnv_home(policy: &Policy, tenant: &str) -> u64 {
    let fp = Fnv::default().field(&policy.rules[0].identity.to_le_bytes()).field(tenant.as_bytes()).finish().max(1);
    fp % SLOTS
}

#[test]
fn an_attacker_who_knows_the_unkeyed_hash_cannot_aim_at_a_victim() {
    let mut policy = Policy::from_json(POLICY).expect("policy");
    policy.slot_secret = sluice_core::hash::SlotSecret(*b"an instance's 16");
    let store = MemoryStore::default();
    ensure_slots(&store, policy.slots).expect("slots");
    let t0 = 1_700_000_000 * S;
    assert!(allowed(&policy, &store, "victim", t0));
    assert!(allowed(&policy, &store, "victim", t0));
    assert!(!allowed(&policy, &store, "victim", t0), "the victim's 2 an hour are spent");
    // Tenant ids whose unkeyed home is the victim's, enough to fill its
    // probes and take one more: each spends its whole burst, later than
    // the victim, so that the victim's bucket is the closest to idle.
    let home = fnv_home(&policy, "victim");
    let aimed: Vec<String> = (0u64..).map(|n| format!("t{n}")).filter(|t| fnv_home(&policy, t) == home).take(16).collect();
    for (n, t) in aimed.iter().enumerate() {
        let at = t0 + (n as u64 + 1) * S;
        allowed(&policy, &store, t, at);
        allowed(&policy, &store, t, at);
    }
    let later = t0 + 60 * S;
    assert!(!allowed(&policy, &store, "victim", later), "the victim's bucket was taken over: its limit reset");
}

#[test]
fn a_key_without_a_free_slot_is_decided_on_its_rules_overflow_bucket() {
    let mut policy = Policy::from_json(POLICY).expect("policy");
    let secret = sluice_core::hash::SlotSecret(*b"an instance's 16");
    policy.slot_secret = secret;
    let store = MemoryStore::default();
    ensure_slots(&store, policy.slots).expect("slots");
    // Knowing the secret (this test does; a client does not), find
    // tenants that share the victim's home slot.
    let home = |t: &str| Keyed::new(&secret).field(&policy.rules[0].identity.to_le_bytes()).field(t.as_bytes()).finish() % SLOTS;
    let victim_home = home("victim");
    let same: Vec<String> = (0u64..).map(|n| format!("t{n}")).filter(|t| home(t) == victim_home).take(6).collect();
    let t0 = 1_700_000_000 * S;
    let send = |tenant: &str, now: u64| {
        let mut req = MemoryRequest::new("GET", "/").header("x-tenant-id", tenant);
        decide(&policy, &mut req, &store, Ctx::at(now))
    };
    assert!(send("victim", t0).allowed() && send("victim", t0).allowed());
    assert!(!send("victim", t0).allowed());
    // Three neighbours fill the victim's other probes.
    for t in &same[..3] {
        let d = send(t, t0 + S);
        assert!(d.allowed() && d.books.overflowed.is_empty(), "{t} found a slot");
    }
    // The next ones find all four active: they share the rule's overflow
    // bucket (2 an hour, like one key), and the victim keeps its own.
    let overflowing: Vec<_> = same[3..].iter().map(|t| send(t, t0 + 2 * S)).collect();
    assert!(overflowing.iter().all(|d| d.books.overflowed == [0]), "{overflowing:?}");
    let admitted: Vec<bool> = overflowing.iter().map(|d| d.allowed()).collect();
    assert_eq!(admitted, [true, true, false], "one key's allowance for all overflowing keys");
    assert!(!send("victim", t0 + 3 * S).allowed(), "the victim's bucket is intact");
}
