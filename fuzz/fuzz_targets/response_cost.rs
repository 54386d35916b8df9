//! A response's cost figure (`flow::settle`) with any header value and any
//! body: never a panic or an overflow; what is charged on top of the
//! estimate stays within `max`, what comes back within the estimate, and a
//! rule settles once.
//!
//! Input: the first line is the `x-units` header's value (any bytes), the
//! rest the response body.
#![no_main]

extern crate sluice_fuzz;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sluice_core::flow::{At, Env, Event, Flow, ResponsePart};
use sluice_core::policy::Policy;
use sluice_core::request::MemoryRequest;
use sluice_core::store::{ensure_slots, MemoryStore};

const POLICY: &str = r#"{"slots": 1024, "rules": [
    {"name": "units", "key": [], "limit": {"requests": 100, "per": "1s"}, "cost": {"response_header": "x-units", "estimate": 10, "max": 50}},
    {"name": "tokens", "key": [], "algorithm": "sliding_window", "limit": {"requests": 5000, "per": "1m"},
     "cost": {"response_body": "usage.total_tokens", "estimate": 100, "max": 4000}}]}"#;
const NOW: u64 = 1_763_382_885_000_000_000;

thread_local! {
    /// One store for every input; each input arrives a minute after the
    /// last, so its buckets have refilled.
    static STORE: MemoryStore = {
        let store = MemoryStore::default();
        ensure_slots(&store, 1024).unwrap_or_else(|e| panic!("slots: {e}"));
        store
    };
    static INPUTS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn policy() -> &'static Policy {
    static POLICY_: OnceLock<Policy> = OnceLock::new();
    POLICY_.get_or_init(|| Policy::from_json(POLICY).unwrap_or_else(|e| panic!("policy: {e}")))
}

fuzz_target!(|data: &[u8]| {
    let policy = policy();
    let n = INPUTS.with(|i| {
        i.set(i.get() + 1);
        i.get()
    });
    let now = NOW + n * 60_000_000_000;
    STORE.with(|store| run(policy, store, data, now));
});

fn run(policy: &Policy, store: &MemoryStore, data: &[u8], now: u64) {
    let (header, body) = data.split_at(data.iter().position(|b| *b == b'\n').unwrap_or(data.len()));
    let mut flow = Flow::new(policy);
    let on = |flow: &mut Flow<&Policy>, event| {
        let mut req = MemoryRequest::new("GET", "/x");
        flow.on(event, &mut Env { store, request: &mut req, host: &mut At::new(now) })
    };
    assert!(on(&mut flow, Event::Headers { end_of_stream: true }).go);
    let parts = [ResponsePart::Headers(vec![("x-units".into(), header.to_vec())]), ResponsePart::Body(Some(body.to_vec()))];
    for part in parts {
        for (i, out) in [0, 1].map(|_| on(&mut flow, Event::ResponseCost(part.clone()))).iter().enumerate() {
            assert!(i == 0 || out.settled.is_empty(), "settled twice");
            for s in &out.settled {
                let (estimate, max) = if s.rule == 0 { (10, 50) } else { (100, 4000) };
                assert!(s.charged <= max - estimate && s.returned <= estimate, "{s:?}");
                assert!(!(s.kept && (s.charged > 0 || s.returned > 0)), "{s:?}");
            }
        }
    }
}
