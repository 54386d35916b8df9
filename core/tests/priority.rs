//! Priority classes under contention, decided in the core with the filter's
//! way of waiting (held requests decided again when told to).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

mod support;

use sluice_core::policy::Policy;
use sluice_core::request::MemoryRequest;
use support::{FakeCounter, Instance, Step, MS};

const S: u64 = 1_000_000_000;
const T0: u64 = 1_763_382_885 * S;

fn policy(aging: &str) -> Policy {
    Policy::from_json(&format!(
        r#"{{"rules": [{{"name": "search", "key": [{{"header": "x-tenant-id"}}],
            "limit": {{"requests": 10, "per": "1s", "burst": 3}}, "queue": {{"max_wait": "3s"}},
            "priority": {{"header": "x-priority", "classes": ["critical", "normal", "bulk"], "aging": "{aging}"}}}}]}}"#
    ))
    .expect("policy")
}

fn req(class: &str) -> MemoryRequest {
    MemoryRequest::new("GET", "/search").header("x-tenant-id", "t").header("x-priority", class)
}

/// Runs requests `(arrival, class)` to the end; returns when each went.
fn run(inst: &mut Instance, requests: &[(u64, &str)]) -> Vec<Option<u64>> {
    let mut counter = FakeCounter::default();
    let mut pending: Vec<(u64, usize, Option<_>)> = requests.iter().enumerate().map(|(i, (t, _))| (*t, i, None)).collect();
    let mut went = vec![None; requests.len()];
    while let Some(pos) = (0..pending.len()).min_by_key(|p| (pending[*p].0, pending[*p].1)) {
        let (now, i, kept) = pending.remove(pos);
        // Held requests are woken on a 10 ms tick.
        let now = now.div_ceil(10 * MS) * 10 * MS;
        match inst.step(&mut counter, &req(requests[i].1), kept, now) {
            Step::Refused => {}
            Step::Redo(t, flow) => pending.push((t.max(now + 1), i, Some(flow))),
            Step::Went(t) => went[i] = Some(t),
        }
    }
    went
}

#[test]
fn critical_requests_get_tokens_before_bulk_ones() {
    let mut inst = Instance::new(policy("10s"));
    // Six bulk calls, then six critical ones 10 ms later.
    let mut requests: Vec<(u64, &str)> = (0..6).map(|_| (T0, "bulk")).collect();
    requests.extend((0..6).map(|_| (T0 + 10 * MS, "critical")));
    let went = run(&mut inst, &requests);
    assert!(went.iter().all(Option::is_some), "{went:?}");
    let at = |i: usize| went[i].unwrap();
    // The bulk class leaves 2 of the 3 tokens of burst to the classes
    // above it: one bulk call goes at once, the rest wait for room.
    assert_eq!(at(0), T0);
    let last_critical = (6..12).map(at).max().unwrap();
    let first_waiting_bulk = (1..6).map(at).min().unwrap();
    assert!(last_critical < first_waiting_bulk, "critical all before waiting bulk: {went:?}");
    // Over all, still at most the rate: 12 requests need 0.9 s after the burst of 3.
    let last = went.iter().flatten().max().unwrap();
    assert!(*last >= T0 + 900 * MS, "{went:?}");
}

#[test]
fn an_unknown_or_missing_class_is_the_default_one() {
    let p = policy("1s");
    let prio = p.rules[0].priority.as_ref().unwrap();
    assert_eq!(prio.class(Some("CRITICAL"), 0), 0);
    assert_eq!(prio.class(Some("bulk"), 0), 2);
    assert_eq!(prio.class(Some("urgent!!"), 0), 1);
    assert_eq!(prio.class(None, 0), 1);
    // Aging: one class up per second waited.
    assert_eq!(prio.class(Some("bulk"), S), 1);
    assert_eq!(prio.class(Some("bulk"), 5 * S), 0);
}

#[test]
fn a_steady_critical_stream_does_not_starve_bulk_forever() {
    // Critical calls above the rate (every 80 ms) for 3 s keep the bucket
    // empty; one bulk call waits. With aging 500 ms it becomes critical
    // after 1 s and takes a turn.
    let mut requests: Vec<(u64, &str)> = (0..38).map(|i| (T0 + i * 80 * MS, "critical")).collect();
    requests.push((T0 + 5 * MS, "bulk"));
    let went = run(&mut Instance::new(policy("500ms")), &requests);
    let bulk = went[38].expect("the bulk call went");
    assert!(bulk <= T0 + 2 * S, "bulk went {} ms after arrival", (bulk - T0) / MS);
    // Without aging (10 s) it waits until its 3 s are over and is refused.
    let went = run(&mut Instance::new(policy("10s")), &requests);
    assert_eq!(went[38], None, "{went:?}");
}
