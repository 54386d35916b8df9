//! Workers taking a key's tokens ahead (`worker_tokens`): several workers
//! share one `MemoryStore` (Envoy's shared data) and each keeps its own
//! tokens, on a fake clock. Small limits stay exact; a busy key far from
//! its limit crosses into the store rarely; near the limit, what the
//! workers admit stays within the bounds `docs/policy.md` states.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::{Cell, RefCell};

use sluice_core::limiter::{decide, Ctx};
use sluice_core::policy::Policy;
use sluice_core::request::MemoryRequest;
use sluice_core::store::{ensure_slots, MemoryStore, SharedStore, StoreError};
use sluice_core::worker_tokens::{hold, lifetime, WorkerTokens};

const MS: u64 = 1_000_000;
const T0: u64 = 1_700_000_000_000 * MS;

/// One Envoy worker: the instance's shared data, its own tokens, and a
/// count of the shared-data calls it made (each a crossing in Envoy).
struct Worker<'a> {
    shared: &'a MemoryStore,
    tokens: RefCell<WorkerTokens>,
    calls: Cell<u64>,
}

impl<'a> Worker<'a> {
    fn new(shared: &'a MemoryStore) -> Worker<'a> {
        Worker { shared, tokens: RefCell::default(), calls: Cell::new(0) }
    }
}

impl SharedStore for Worker<'_> {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.calls.set(self.calls.get() + 1);
        self.shared.get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        self.calls.set(self.calls.get() + 1);
        self.shared.set(key, value, cas)
    }
    fn worker_tokens(&self) -> Option<&RefCell<WorkerTokens>> {
        Some(&self.tokens)
    }
}

fn policy(limit: &str) -> Policy {
    let p = Policy::from_json(&format!(r#"{{"slots": 1024, "rules": [{{"name": "r", "key": [], "limit": {limit}}}]}}"#)).unwrap();
    p
}

fn shared(p: &Policy) -> MemoryStore {
    let s = MemoryStore::default();
    ensure_slots(&s, p.slots).unwrap();
    s
}

fn admitted(p: &Policy, w: &Worker, now: u64) -> bool {
    decide(p, &mut MemoryRequest::new("GET", "/x"), w, Ctx::at(now)).allowed()
}

#[test]
fn how_much_a_worker_holds_and_for_how_long() {
    let limit = |requests, burst| sluice_core::policy::Limit { requests, per: sluice_core::duration::Span::from_nanos(1_000 * MS), burst, calendar: None };
    assert_eq!(hold(&limit(5, 5)), 0);
    assert_eq!(hold(&limit(31, 31)), 0);
    assert_eq!(hold(&limit(32, 32)), 2);
    assert_eq!(hold(&limit(1000, 1000)), 62);
    assert_eq!(hold(&limit(1000, 10)), 0, "the burst is what a worker may hold from");
    assert_eq!(lifetime(&limit(1000, 1000)), 62_500_000);
}

#[test]
fn a_small_limit_stays_exact_and_every_request_crosses() {
    let p = policy(r#"{"requests": 5, "per": "1s"}"#);
    let s = shared(&p);
    let workers = [Worker::new(&s), Worker::new(&s), Worker::new(&s)];
    for second in 0..3u64 {
        let mut n = 0;
        for i in 0..30u64 {
            let w = &workers[(i % 3) as usize];
            let before = w.calls.get();
            n += u64::from(admitted(&p, w, T0 + second * 1_000 * MS + i * MS));
            assert!(w.calls.get() > before, "request {i} went to the shared bucket");
        }
        assert_eq!(n, 5, "second {second}");
    }
}

#[test]
fn a_busy_key_far_from_its_limit_crosses_rarely() {
    let p = policy(r#"{"requests": 1000, "per": "1s"}"#);
    let s = shared(&p);
    let workers = [Worker::new(&s), Worker::new(&s)];
    // 400 requests a second, well under the limit, for a second.
    for i in 0..400u64 {
        assert!(admitted(&p, &workers[(i % 2) as usize], T0 + i * 2_500_000), "request {i}");
    }
    let calls: u64 = workers.iter().map(|w| w.calls.get()).sum();
    // Without taking ahead: a get and a set per request (800).
    assert!(calls <= 80, "{calls} shared-data calls for 400 requests");
}

#[test]
fn near_the_limit_the_workers_admit_within_the_stated_bounds() {
    // Burst 1000, 1000 a second; 4 workers offered 10,000 a second for 3 s.
    let p = policy(r#"{"requests": 1000, "per": "1s"}"#);
    let s = shared(&p);
    let workers: Vec<Worker> = (0..4).map(|_| Worker::new(&s)).collect();
    let w = workers.len() as u64;
    let h = hold(&p.rules[0].limit);
    let mut admitted_by = Vec::new();
    let mut n = 0u64;
    for i in 0..30_000u64 {
        let now = T0 + i * 100_000;
        n += u64::from(admitted(&p, &workers[(i % w) as usize], now));
        admitted_by.push(n);
    }
    // The strict bucket admits its burst and then its rate: 1000 + t × 1000.
    for (i, &n) in admitted_by.iter().enumerate().step_by(997) {
        let t_ms = i as u64 / 10;
        // What the strict bucket admits of what was offered so far.
        let strict = (1000 + t_ms).min(i as u64 + 1);
        assert!(n <= strict + w * h, "at {t_ms} ms: {n} admitted, strict {strict}, bound +{}", w * h);
        assert!(n + w * h >= strict, "at {t_ms} ms: {n} admitted, strict {strict}, bound -{}", w * h);
    }
    // Once the key is near its limit nothing is held ahead any more: the
    // last second is exact within what was held when it began.
    let (start, end) = (admitted_by[19_999], admitted_by[29_999]);
    assert!((end - start).abs_diff(1000) <= w * h, "last second: {}", end - start);
}

#[test]
fn tokens_not_spent_in_time_go_back_with_the_next_take() {
    let p = policy(r#"{"requests": 1000, "per": "1s"}"#);
    let s = shared(&p);
    let (a, b) = (Worker::new(&s), Worker::new(&s));
    let h = hold(&p.rules[0].limit);
    assert!(admitted(&p, &a, T0));
    assert_eq!(a.tokens.borrow().total(), h, "a took {h} ahead");
    // b sees the instance's tokens less a's.
    let seen = decide(&p, &mut MemoryRequest::new("GET", "/x"), &b, Ctx::at(T0)).ruling.tightest.unwrap().outcome.remaining;
    assert_eq!(seen, 1000 - 2 * (1 + h) + h, "a's tokens are gone, b's own count as left");
    // Past a's lifetime its next take gives its tokens back in the same
    // compare-and-swap, and takes ahead again.
    let later = T0 + lifetime(&p.rules[0].limit) + MS;
    let calls = a.calls.get();
    assert!(admitted(&p, &a, later));
    assert_eq!(a.calls.get() - calls, 2, "one get and one set");
    let fresh = decide(&p, &mut MemoryRequest::new("GET", "/x"), &Worker::new(&s), Ctx::at(later)).ruling.tightest.unwrap().outcome.remaining;
    // 63.5 ms refilled 63.5 of the 126 taken; a gave back 62 and took 63,
    // the fresh worker 63: 126.5 taken, 873 left, plus its own 62 held
    // (873 + 62 = 935; had a's tokens lapsed: 811 + 62 = 873).
    assert_eq!(fresh, 935);
}
