//! Refusals a worker remembers (`allowance::refusals`) inside whole
//! decisions: a flood past a limit is refused from memory, with the
//! outcome the slot would give, admitted when the bucket has its next
//! unit, and a unit that comes back early is seen within the bound; a
//! flood past a global rule's budget is decided lease first.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

mod support;

use sluice_core::allowance::{settle_due, WorkerStore, REFUSED_FOR_NS};
use sluice_core::limiter::{decide, Ctx, Decision};
use sluice_core::policy::Policy;
use sluice_core::request::MemoryRequest;
use sluice_core::store::{ensure_slots, MemoryStore};
use support::{FakeCounter, Instance};

const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
const T0: u64 = 1_763_382_885 * S;

fn policy(json: &str) -> Policy {
    Policy::from_json(json).expect("policy")
}

/// A store with the policy's slots (the calls that made them counted).
fn store(policy: &Policy) -> MemoryStore {
    let shared = MemoryStore::default();
    ensure_slots(&shared, policy.slots).unwrap();
    shared
}

fn req(path: &str) -> MemoryRequest {
    MemoryRequest::new("GET", path).header("x-tenant-id", "acme")
}

/// What a refusal tells the client: the refusing rule, its retry-after and reset.
fn told(d: &Decision) -> Option<(usize, u64, u64)> {
    d.ruling.denied_by.as_ref().map(|r| (r.rule, r.outcome.retry_after_ns, r.outcome.reset_ns))
}

#[test]
fn a_flood_is_refused_from_memory_as_the_slot_would_and_admitted_on_time() {
    let policy = policy(r#"{"rules": [{"name": "per-tenant", "key": [{"header": "x-tenant-id"}], "limit": {"requests": 10, "per": "1s"}}]}"#);
    // The same flood decided by a worker with its memory, and by the
    // store alone (every request read in the slot).
    let (remembering, alone) = (store(&policy), store(&policy));
    let worker = WorkerStore::new(&remembering);
    let (mut refused, mut remembered, setup) = (0u64, 0u64, (remembering.calls(), alone.calls()));
    for n in 0..6000u64 {
        let now = T0 + n * (S / 2000);
        let with = decide(&policy, &mut req("/items"), &worker, Ctx::at(now));
        let without = decide(&policy, &mut req("/items"), &alone, Ctx::at(now));
        assert_eq!(with.allowed(), without.allowed(), "request {n}");
        assert_eq!(told(&with), told(&without), "request {n}: what the refusal says");
        refused += u64::from(!with.allowed());
        remembered += u64::from(!with.books.remembered.is_empty());
        assert!(without.books.remembered.is_empty());
    }
    assert_eq!(refused, 6000 - 10 - 29, "the burst, then 10 a second for 3 s");
    // With the memory: a read when each refusal's 100 ms run out, or
    // sooner when the next unit comes (every 100 ms at 10/s).
    let calls = (remembering.calls() - setup.0, alone.calls() - setup.1);
    // Alone: a read per refusal (and a write for each first refusal).
    assert!(calls.1 >= refused, "{} slot calls alone", calls.1);
    assert!(calls.0 <= 4 * 39, "{} slot calls for {refused} refusals", calls.0);
    assert!(remembered + 4 * 39 >= refused, "{remembered} of {refused} refusals from memory");
}

#[test]
fn a_refused_request_only_looks_at_its_other_rules() {
    let policy = policy(
        r#"{"rules": [
        {"name": "per-tenant", "key": [{"header": "x-tenant-id"}], "limit": {"requests": 1000, "per": "1s"}},
        {"name": "export", "match": {"paths": [{"exact": "/export"}]}, "key": [{"header": "x-tenant-id"}], "limit": {"requests": 1, "per": "1s"}}]}"#,
    );
    let shared = store(&policy);
    let worker = WorkerStore::new(&shared);
    let (mut admitted, mut flood_calls, mut refused) = (0u64, 0u64, 0u64);
    // 900 requests a second to /export for 2 s, one to /items in ten.
    for n in 0..1800u64 {
        let now = T0 + n * (S / 900);
        let path = if n % 10 == 0 { "/items" } else { "/export" };
        let before = shared.calls();
        let d = decide(&policy, &mut req(path), &worker, Ctx::at(now));
        if d.allowed() {
            admitted += 1;
        } else {
            // Refused by `export`: per-tenant was looked at, not spent.
            assert_eq!(told(&d).map(|t| t.0), Some(1));
            let per_tenant = d.ruling.applied.iter().find(|a| a.rule == 0).expect("per-tenant looked at");
            assert!(per_tenant.outcome.allowed);
            refused += 1;
            flood_calls += shared.calls() - before;
        }
    }
    assert_eq!(admitted, 180 + 2, "every /items request, one /export a second");
    // per-tenant's bucket holds only what was admitted: its next request
    // is told so (the shares of the worker settled first).
    assert!(settle_due(&worker.shares, &worker, T0 + 2 * S, true).is_empty());
    let d = decide(&policy, &mut req("/items"), &worker, Ctx::at(T0 + 2 * S));
    let left = d.ruling.applied.iter().find(|a| a.rule == 0).expect("per-tenant").outcome.remaining;
    assert!(left >= 1000 - 60, "per-tenant has {left} left: refused requests were spent from it");
    assert!(flood_calls * 10 < refused, "{flood_calls} slot calls for {refused} refused requests");
}

#[test]
fn a_unit_that_comes_back_early_is_seen_within_the_bound() {
    // 32 per 10 s: a unit every 312 ms; shares of 2.
    let policy = policy(r#"{"rules": [{"name": "per-tenant", "key": [{"header": "x-tenant-id"}], "limit": {"requests": 32, "per": "10s"}}]}"#);
    let shared = store(&policy);
    let (one, two) = (WorkerStore::new(&shared), WorkerStore::new(&shared));
    // Worker two decides the key twice (its share of 2 is reserved with
    // the second), then admits a request from the share.
    for _ in 0..3 {
        assert!(decide(&policy, &mut req("/items"), &two, Ctx::at(T0)).allowed());
    }
    assert_eq!(two.shares.borrow().len(), 1);
    // Worker one takes the rest, and is refused: the share counts as spent.
    let mut taken = 0;
    while decide(&policy, &mut req("/items"), &one, Ctx::at(T0)).allowed() {
        taken += 1;
    }
    assert_eq!(taken, 32 - 2 - 2);
    let d = decide(&policy, &mut req("/items"), &one, Ctx::at(T0 + MS));
    let retry = told(&d).expect("refused").1;
    assert!(retry > REFUSED_FOR_NS, "the next unit is {retry} ns away");
    // Worker two settles its share, half spent: a unit is free now, but
    // worker one refuses from memory until its refusal's bound.
    assert!(settle_due(&two.shares, &two, T0 + 2 * MS, true).is_empty());
    let calls = shared.calls();
    assert!(!decide(&policy, &mut req("/items"), &one, Ctx::at(T0 + REFUSED_FOR_NS / 2)).allowed());
    assert_eq!(shared.calls(), calls, "refused from memory");
    assert!(decide(&policy, &mut req("/items"), &one, Ctx::at(T0 + 2 * MS + REFUSED_FOR_NS)).allowed());
}

#[test]
fn a_flood_past_a_global_budget_is_refused_in_one_slot_write_and_each_window_admits_its_budget() {
    let policy = policy(
        r#"{"global": {"expected_instances": 2}, "rules": [
        {"name": "tools-invoke", "scope": "global", "key": [{"header": "x-tenant-id"}], "limit": {"requests": 20, "per": "1s"}}]}"#,
    );
    let mut counter = FakeCounter::default();
    let mut instances = [Instance::new(policy.clone()), Instance::new(policy)];
    // 1000 requests a second for 4 s, alternating between the instances.
    let (mut admitted, mut refused, mut refused_calls) = ([0u64; 4], 0u64, 0u64);
    for n in 0..4000u64 {
        let now = T0 + n * MS;
        let inst = &mut instances[(n % 2) as usize];
        if n % 20 < 2 {
            inst.tick(&mut counter, now);
        }
        let before = inst.store.calls();
        let d = inst.send(&mut counter, &req("/invoke"), now);
        if d.allowed() {
            admitted[(n / 1000) as usize] += 1;
        } else {
            // The budget is gone for the window: told to come back then.
            let retry = told(&d).expect("refused by tools-invoke").1;
            assert!(retry <= S - (n % 1000) * MS, "request {n}: retry after {retry}");
            refused += 1;
            refused_calls += inst.store.calls() - before;
        }
    }
    assert_eq!(admitted, [20; 4], "the budget of every window, never more");
    // Taking a unit from the bucket, being refused by the lease and giving
    // the unit back would be 6 slot calls (three reads, three writes). The
    // bucket and the lease decided together: the key's slot read once and
    // written once (the lease counts the demand).
    assert!(refused_calls <= 2 * refused + 100, "{refused_calls} slot calls for {refused} refusals");
}

/// Every read fails; the worker's memory is the instance's.
struct Unreadable<'a>(&'a support::Worker);

impl sluice_core::store::SharedStore for Unreadable<'_> {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, sluice_core::store::StoreError> {
        Err(sluice_core::store::StoreError::Host(format!("get {key}: refused")))
    }
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), sluice_core::store::StoreError> {
        sluice_core::store::SharedStore::set(self.0, key, value, cas)
    }
    fn allowances(&self) -> Option<&std::cell::RefCell<sluice_core::allowance::Allowances>> {
        sluice_core::store::SharedStore::allowances(self.0)
    }
}

#[test]
fn a_global_rule_whose_slot_cannot_be_read_records_its_error_once() {
    let policy = policy(
        r#"{"global": {"expected_instances": 2}, "rules": [
        {"name": "tools-invoke", "scope": "global", "key": [{"header": "x-tenant-id"}], "limit": {"requests": 20, "per": "1s"}}]}"#,
    );
    let mut counter = FakeCounter::default();
    let mut instances = [Instance::new(policy.clone()), Instance::new(policy.clone())];
    // Past the window's budget.
    for n in 0..300u64 {
        let inst = &mut instances[(n % 2) as usize];
        if n % 20 < 2 {
            inst.tick(&mut counter, T0 + n * MS);
        }
        inst.send(&mut counter, &req("/invoke"), T0 + n * MS);
    }
    // The bucket cannot be read: the rule lets the request pass, with one error.
    let d = decide(&policy, &mut req("/invoke"), &Unreadable(&instances[0].store), Ctx::at(T0 + 300 * MS));
    assert!(d.allowed());
    assert_eq!(d.books.errors.len(), 1, "{:?}", d.books.errors);
}
