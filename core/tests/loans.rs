//! Loans of a global rule's lease to a worker's memory (`allowance::lease`)
//! inside whole decisions: a busy key's requests stop crossing into the
//! slot, what a refused request took goes back, and instances sharing a
//! counter never admit more than the limit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

mod support;

use sluice_core::flow::{tallies, At, Event, Tally};
use sluice_core::policy::Policy;
use sluice_core::request::MemoryRequest;
use support::{FakeCounter, Instance, MS};

const S: u64 = 1_000_000_000;
const T0: u64 = 1_763_382_885 * S;

fn policy(limit: u64) -> Policy {
    Policy::from_json(&format!(
        r#"{{"global": {{"expected_instances": 3}}, "tenant": [{{"header": "x-tenant-id"}}], "rules": [
        {{"name": "per-tenant", "scope": "global", "key": ["tenant"], "limit": {{"requests": {limit}, "per": "1s"}}}},
        {{"name": "export", "match": {{"paths": [{{"exact": "/export"}}]}}, "key": ["tenant"], "limit": {{"requests": 1, "per": "1s"}}}}
    ]}}"#
    ))
    .expect("policy")
}

fn req(path: &str, tenant: &str) -> MemoryRequest {
    MemoryRequest::new("GET", path).header("x-tenant-id", tenant)
}

/// `per-tenant`'s outcome for a request.
fn per_tenant(d: &sluice_core::limiter::Decision) -> (bool, u64) {
    let a = d.ruling.applied.iter().find(|a| a.rule == 0).expect("per-tenant applied");
    (a.outcome.allowed, a.outcome.remaining)
}

#[test]
fn a_busy_keys_requests_are_admitted_from_the_workers_memory() {
    let mut inst = Instance::new(policy(1000));
    let mut counter = FakeCounter::default();
    let r = req("/items", "acme");
    // A steady 200/s: the lease is granted and reserved ahead.
    for i in 0..200 {
        assert!(inst.send(&mut counter, &r, T0 + i * 5 * MS).allowed());
        if i % 10 == 0 {
            inst.tick(&mut counter, T0 + i * 5 * MS);
        }
    }
    let before = inst.store.calls();
    let (mut admitted, at) = (0u64, T0 + S);
    for i in 0..100 {
        admitted += u64::from(inst.send(&mut counter, &r, at + i * 5 * MS).allowed());
    }
    let calls = inst.store.calls() - before;
    assert_eq!(admitted, 100);
    // Without shares or loans: the bucket's read and write and the
    // lease's, four per request; with the bucket's share alone, two.
    assert!(calls < 100, "{calls} slot reads and writes for 100 requests");
    assert!(inst.store.shares.borrow().len() >= 2, "a share of the bucket and a loan of the lease");
}

#[test]
fn a_unit_taken_from_the_loan_goes_back_when_another_rule_refuses() {
    let mut inst = Instance::new(policy(1000));
    let mut counter = FakeCounter::default();
    for i in 0..20 {
        inst.send(&mut counter, &req("/items", "acme"), T0 + i * MS);
        inst.tick(&mut counter, T0 + i * MS);
    }
    let at = T0 + 30 * MS;
    assert!(inst.store.shares.borrow().len() >= 2, "a share of the bucket and a loan of the lease");
    let items = per_tenant(&inst.send(&mut counter, &req("/items", "acme"), at));
    let export = per_tenant(&inst.send(&mut counter, &req("/export", "acme"), at));
    assert_eq!(export, (true, items.1 - 1));
    // Refused by `export` after per-tenant admitted it from the loan: the
    // unit goes back, and the next request sees the same remaining.
    let refused = inst.send(&mut counter, &req("/export", "acme"), at);
    assert!(!refused.allowed());
    let next = per_tenant(&inst.send(&mut counter, &req("/items", "acme"), at));
    assert_eq!(next, (true, export.1 - 1), "the refused request's unit came back");
}

/// How many of `n` requests of `path`, 5 ms apart from `at`, each rule's
/// metrics count as admitted from the worker's memory.
fn counted_from_share(inst: &mut Instance, counter: &mut FakeCounter, path: &str, at: u64, n: u64) -> [u64; 2] {
    let mut from_share = [0u64; 2];
    for i in 0..n {
        let now = at + i * 5 * MS;
        let mut flow = inst.flow();
        let out = inst.on(&mut flow, &req(path, "acme"), Event::Headers { end_of_stream: true }, At::new(now));
        for d in &out.decided {
            tallies(&inst.policy, d, |rule, t| from_share[rule] += u64::from(t == Tally::FromShare));
        }
        inst.tick(counter, now);
    }
    from_share
}

#[test]
fn the_metrics_count_what_a_loan_admits_and_nothing_a_refusal_gave_back() {
    let mut inst = Instance::new(policy(1000));
    let mut counter = FakeCounter::default();
    for i in 0..200 {
        inst.send(&mut counter, &req("/items", "acme"), T0 + i * 5 * MS);
        inst.tick(&mut counter, T0 + i * 5 * MS);
    }
    let [per_tenant, _] = counted_from_share(&mut inst, &mut counter, "/items", T0 + S, 100);
    // A loan covers a sixteenth of the limit at most: the requests that
    // take or repay one cross, the others do not.
    assert!((50..100).contains(&per_tenant), "{per_tenant} of 100 from memory");
    // `export` refuses all but its first: per-tenant's unit goes back, and
    // what was given back is not counted.
    let [per_tenant, export] = counted_from_share(&mut inst, &mut counter, "/export", T0 + 2 * S, 20);
    assert!(per_tenant <= 1, "{per_tenant}");
    assert_eq!(export, 0, "a limit of 1 is never shared");
    // Under 32 a window, a limit is never lent.
    let mut small = Instance::new(policy(20));
    assert_eq!(counted_from_share(&mut small, &mut counter, "/items", T0 + 3 * S, 20), [0, 0]);
}

/// Three instances offered `rate` requests a second each, evenly, for
/// `windows` windows, ticking every 10 ms: what each window admitted, and
/// the slot reads and writes per request.
fn three_instances(limit: u64, rate: u64, windows: u64) -> (Vec<u64>, f64) {
    let mut counter = FakeCounter::default();
    let mut insts: Vec<Instance> = (0..3).map(|_| Instance::new(policy(limit))).collect();
    let setup: u64 = insts.iter().map(|i| i.store.calls()).sum();
    let r = req("/items", "acme");
    let gap = S / rate;
    let mut admitted = vec![0u64; windows as usize];
    let mut t = T0 - T0 % S;
    let end = t + windows * S;
    let mut next_tick = t;
    while t < end {
        if t >= next_tick {
            for inst in &mut insts {
                inst.tick(&mut counter, t);
            }
            next_tick += 10 * MS;
        }
        for (k, inst) in insts.iter_mut().enumerate() {
            // Staggered so the instances do not ask in lockstep.
            let at = t + k as u64 * gap / 3;
            let window = ((at - (T0 - T0 % S)) / S) as usize;
            if window < admitted.len() && inst.send(&mut counter, &r, at).allowed() {
                admitted[window] += 1;
            }
        }
        t += gap;
    }
    let calls = insts.iter().map(|i| i.store.calls()).sum::<u64>() - setup;
    (admitted, calls as f64 / (3 * rate * windows) as f64)
}

#[test]
fn instances_lending_to_their_workers_never_admit_more_than_the_limit() {
    // Far under the limit: loans are taken, nothing is refused.
    let (quiet, calls) = three_instances(300, 50, 6);
    assert!(quiet.iter().all(|&n| n == 150), "{quiet:?}");
    // The lease alone is a read and a write per request without loans.
    assert!(calls < 1.5, "{calls:.2} slot reads and writes per request");
    // Over it: never more than the limit in a window.
    let (flooded, _) = three_instances(300, 200, 6);
    assert!(flooded.iter().all(|&n| n <= 300), "{flooded:?}");
    assert!(flooded[2..].iter().all(|&n| n >= 270), "{flooded:?}");
}
