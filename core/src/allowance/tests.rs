#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::store::{ensure_slots, MemoryStore};
use crate::testing::{per_second, S};

const SLOTS: u32 = 1024;
const MS: u64 = 1_000_000;

fn shared() -> MemoryStore {
    let store = MemoryStore::default();
    ensure_slots(&store, SLOTS).expect("slots");
    store
}

/// One request of `fp` from `worker`: from its share if it can, else with
/// a compare-and-swap (settling and reserving as `take_noting` does).
fn take(worker: &WorkerStore, fp: u64, limit: &Limit, now: u64, cost: u64) -> Outcome {
    if let Some(o) = worker.shares.borrow_mut().spend(fp, limit, now, cost) {
        return o;
    }
    take_noting(&worker.shares, worker, SLOTS, fp, limit, now, cost).expect("take").0
}

/// `worker` decided key `fp` a moment ago (so its next request may get a share).
fn seen(worker: &WorkerStore, fp: u64, now: u64) {
    worker.shares.borrow_mut().busy(fp, now.saturating_sub(MS));
}

/// Keys 1 to `keys`, `gap` apart from `S`: each busy, its share reserved
/// and a unit of it spent.
fn spend_from_shares(worker: &WorkerStore, limit: &Limit, keys: u64, gap: u64) {
    for k in 0..keys {
        let t = S + k * gap;
        seen(worker, k + 1, t);
        take(worker, k + 1, limit, t, 1);
        assert!(worker.shares.borrow_mut().spend(k + 1, limit, t, 1).is_some());
    }
}

/// The units reserved in the key's slot.
fn reserved_in(store: &dyn SharedStore, fp: u64, limit: &Limit, now: u64) -> u64 {
    store::locate(store, SLOTS, fp, limit, now).expect("slot").slot.reserved.live(now)
}

#[test]
fn a_busy_key_is_admitted_from_the_share_without_hostcalls() {
    let store = shared();
    let worker = WorkerStore::new(&store);
    let limit = per_second(100);
    assert_eq!(share(&limit), 6);
    let mut t = S;
    // A key's first request gets no share: one-off keys reserve nothing.
    assert!(take(&worker, 7, &limit, t, 1).allowed);
    assert_eq!(reserved_in(&store, 7, &limit, t), 0);
    t += MS;
    let o = take(&worker, 7, &limit, t, 1);
    assert!(o.allowed);
    assert_eq!(o.remaining, 98, "the worker's own share still counts as left");
    assert_eq!(reserved_in(&store, 7, &limit, t), 6);
    // The key's first request probed for its slot; from now on it is found at once.
    let calls = store.calls();
    for n in 0..6 {
        t += MS;
        let o = take(&worker, 7, &limit, t, 1);
        assert!(o.allowed);
        assert_eq!(o.remaining, 97 - n, "request {n} of the share");
    }
    assert_eq!(store.calls(), calls, "six requests from the share: no hostcall");
    t += MS;
    assert!(take(&worker, 7, &limit, t, 1).allowed);
    assert_eq!(store.calls(), calls + 2, "the share used up: the next request settles and reserves again, in one read and one compare-and-swap");
    assert_eq!(reserved_in(&store, 7, &limit, t), 6, "the old share released, a new one reserved");
}

#[test]
fn small_limits_get_no_share_and_stay_exact_request_by_request() {
    let store = shared();
    let worker = WorkerStore::new(&store);
    let limit = per_second(20);
    assert_eq!(share(&limit), 0);
    assert!(take(&worker, 3, &limit, S, 1).allowed);
    for n in 1..20u32 {
        let calls = store.calls();
        assert!(take(&worker, 3, &limit, S, 1).allowed, "request {n}");
        assert_eq!(store.calls(), calls + 2, "request {n} reads and writes its slot");
    }
    assert!(!take(&worker, 3, &limit, S, 1).allowed, "the 21st");
    assert!(worker.shares.borrow().is_empty());
}

/// A tiny deterministic generator for the interleavings.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Replays `admitted` (times, in order) through an exact token bucket:
/// every one must have been allowed there too.
fn conforms(admitted: &[u64], limit: &Limit) -> bool {
    let mut state = State::Empty;
    admitted.iter().all(|&t| {
        let (o, next) = state.take(Algorithm::TokenBucket, limit, t, 1);
        state = next.unwrap_or(state);
        o.allowed
    })
}

#[test]
fn one_worker_decides_exactly_as_the_bucket_alone() {
    let limit = per_second(100);
    let (store, plain) = (shared(), shared());
    let (made, plain_made) = (store.calls(), plain.calls());
    let worker = WorkerStore::new(&store);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut t = S;
    for n in 0..5000 {
        // Bursts, steady spells and pauses.
        t += match rng.next() % 10 {
            0 => 300 * MS,
            1..=4 => MS,
            _ => 12 * MS,
        };
        let ours = take(&worker, 11, &limit, t, 1);
        let exact = store::take(&plain, SLOTS, 11, Algorithm::TokenBucket, &limit, t, 1).expect("take");
        assert_eq!((ours.allowed, ours.remaining, ours.reset_ns), (exact.allowed, exact.remaining, exact.reset_ns), "request {n} at {t}");
    }
    let (ours, theirs) = (store.calls() - made, plain.calls() - plain_made);
    assert!(ours < theirs / 2, "{ours} hostcalls against {theirs}");
}

#[test]
fn several_workers_never_admit_more_than_the_bucket_allows() {
    let limit = per_second(100);
    let store = shared();
    let workers: Vec<WorkerStore> = (0..4).map(|_| WorkerStore::new(&store)).collect();
    let mut rng = Rng(12345);
    let (mut t, mut admitted) = (S, Vec::new());
    // 3× the limit, spread over four workers in random order, for 20 s.
    while t < 21 * S {
        t += 3 * MS + rng.next() % (MS / 3);
        let w = &workers[(rng.next() % 4) as usize];
        if take(w, 5, &limit, t, 1).allowed {
            admitted.push(t);
        }
        if rng.next().is_multiple_of(50) {
            // A worker's tick.
            assert!(settle_due(&w.shares, w, t, false).is_empty());
        }
    }
    assert!(conforms(&admitted, &limit), "every admission fits the exact bucket");
    // The exact bucket would admit 100 + 20 s × 100/s; shares held by the
    // other workers near the limit cost a little.
    assert!(admitted.len() >= 1800, "admitted {}", admitted.len());
}

#[test]
fn a_worker_that_vanishes_costs_its_share_for_one_life_at_most() {
    let limit = per_second(100);
    let store = shared();
    let gone = WorkerStore::new(&store);
    seen(&gone, 9, S);
    assert!(take(&gone, 9, &limit, S, 1).allowed);
    assert_eq!(reserved_in(&store, 9, &limit, S), 6);
    drop(gone);
    let other = WorkerStore::new(&store);
    let spent: u64 = (0..200).map(|_| u64::from(take(&other, 9, &limit, S + MS, 1).allowed)).sum();
    assert_eq!(spent, 100 - 1 - 6, "the vanished worker's share is out of reach");
    // Once its reservation lapsed the bucket counts it no more.
    let later = S + LIFE_NS + MS;
    assert_eq!(reserved_in(&store, 9, &limit, later), 0);
    let o = store::peek(&store, SLOTS, 9, Algorithm::TokenBucket, &limit, later, 1).expect("peek");
    assert!(o.allowed);
}

#[test]
fn the_tick_settles_what_may_no_longer_be_spent() {
    let limit = per_second(1000);
    let store = shared();
    let worker = WorkerStore::new(&store);
    seen(&worker, 4, S);
    for n in 0..10 {
        assert!(take(&worker, 4, &limit, S + n, 1).allowed);
    }
    assert_eq!(reserved_in(&store, 4, &limit, S), 62);
    assert!(settle_due(&worker.shares, &worker, S + MS, false).is_empty());
    assert_eq!(worker.shares.borrow().len(), 1, "still spendable");
    assert!(settle_due(&worker.shares, &worker, S + SPEND_WITHIN_NS, false).is_empty());
    assert!(worker.shares.borrow().is_empty());
    let now = S + SPEND_WITHIN_NS;
    assert_eq!(reserved_in(&store, 4, &limit, now), 0, "released");
    // The ten requests are in the bucket: 1000 − 10 left at the first one's time.
    let plain = shared();
    for n in 0..10 {
        store::take(&plain, SLOTS, 4, Algorithm::TokenBucket, &limit, S + n, 1).expect("take");
    }
    let left = |s: &dyn SharedStore| store::peek(s, SLOTS, 4, Algorithm::TokenBucket, &limit, S + 1000, 1).expect("peek").remaining;
    assert_eq!(left(&store), left(&plain));
}

#[test]
fn a_share_reserved_under_another_limit_is_settled_not_spent() {
    let store = shared();
    let worker = WorkerStore::new(&store);
    let (old, new) = (per_second(100), per_second(200));
    assert!(take(&worker, 2, &old, S, 1).allowed);
    assert!(worker.shares.borrow_mut().spend(2, &new, S + MS, 1).is_none(), "not under the new limit");
    let o = take(&worker, 2, &new, S + MS, 1);
    assert!(o.allowed);
    assert_eq!(reserved_in(&store, 2, &new, S + MS), share(&new), "the old share released, one under the new limit reserved");
}

#[test]
fn a_reservation_keeps_its_slot_from_other_keys() {
    let store = shared();
    let worker = WorkerStore::new(&store);
    // One request of 1000/s leaves the bucket idle again within 1 ms;
    // the reservation keeps the slot for half a second.
    let limit = Limit { requests: 1000, per: crate::duration::Span::from_secs(1), burst: 1000, calendar: None };
    seen(&worker, 8, S);
    assert!(take(&worker, 8, &limit, S, 1).allowed);
    let found = store::locate(&store, SLOTS, 8, &limit, S).expect("slot");
    // A key that lives in the same slot finds it taken while reserved.
    for probe in 1..4u64 {
        let other = 8 + probe * u64::from(SLOTS);
        assert_ne!(store::locate(&store, SLOTS, other, &limit, S + LIFE_NS / 2).expect("slot").key, found.key, "probe {probe}");
    }
    // Once it lapsed, the idle bucket's slot is anybody's.
    let other = 8 + u64::from(SLOTS);
    assert_eq!(store::locate(&store, SLOTS, other, &limit, S + LIFE_NS + MS).expect("slot").key, found.key);
}

#[test]
fn reserved_units_survive_other_updates_and_lapse_on_time() {
    let r = Reserved::default().adding(6, S);
    assert_eq!(r.live(S), 6);
    assert_eq!(r.live(S + LIFE_NS - MS), 6);
    assert_eq!(r.live(S + LIFE_NS), 0);
    let more = r.adding(6, S + LIFE_NS / 2);
    assert_eq!((more.live(S + LIFE_NS), more.live(S + LIFE_NS * 3 / 2)), (12, 0));
    // Encoded in the bucket's spare fields, and read back.
    let bytes = State::Tat(5 * S).encode_reserved(77, crate::store::FLAG_WARNED, more);
    assert_eq!(State::decode(&bytes), (77, State::Tat(5 * S)));
    assert_eq!(State::reserved(&bytes), more);
    assert_eq!(State::flags(&bytes), crate::store::FLAG_WARNED);
    assert_eq!(State::reserved(&State::Fixed { window: 1, count: 3 }.encode(77)), Reserved::default());
}

#[test]
fn another_workers_reservation_is_decided_on_but_not_shown_as_spent() {
    let limit = per_second(100);
    let store = shared();
    let (a, b) = (WorkerStore::new(&store), WorkerStore::new(&store));
    seen(&a, 6, S);
    assert_eq!(take(&a, 6, &limit, S, 10).remaining, 90);
    assert_eq!(reserved_in(&store, 6, &limit, S), 6);
    // Worker b is told what the bucket has left, a's unused share included…
    assert_eq!(take(&b, 6, &limit, S, 2).remaining, 88);
    // …but cannot spend it: 88 − 6 of a's and 6 of its own.
    let more: u64 = (0..100).map(|_| u64::from(take(&b, 6, &limit, S, 1).allowed)).sum();
    assert_eq!(more, 88 - 6);
    // Worker a still has its share.
    assert!(take(&a, 6, &limit, S, 6).allowed);
    assert!(!take(&a, 6, &limit, S, 1).allowed);
}

#[test]
fn an_unused_share_costs_the_tick_no_hostcall_and_lapses() {
    let limit = per_second(100);
    let store = shared();
    let worker = WorkerStore::new(&store);
    // A quiet key: one request now, the next in a second.
    seen(&worker, 12, S);
    assert!(take(&worker, 12, &limit, S, 1).allowed);
    assert_eq!(reserved_in(&store, 12, &limit, S), 6);
    let calls = store.calls();
    assert!(settle_due(&worker.shares, &worker, S + SPEND_WITHIN_NS, false).is_empty());
    assert_eq!(store.calls(), calls, "nothing spent, nothing written");
    assert!(worker.shares.borrow().is_empty());
    assert_eq!(reserved_in(&store, 12, &limit, S + SPEND_WITHIN_NS), 6, "still counted until it lapses");
    assert_eq!(reserved_in(&store, 12, &limit, S + LIFE_NS), 0);
    // The bucket holds the one request only.
    let o = store::peek(&store, SLOTS, 12, Algorithm::TokenBucket, &limit, S + LIFE_NS, 1).expect("peek");
    assert_eq!(o.remaining, 99);
}

#[test]
fn a_flood_of_one_off_keys_reserves_nothing_and_the_memory_of_keys_is_bounded() {
    let limit = per_second(1000);
    let store = shared();
    let worker = WorkerStore::new(&store);
    for n in 0..(2 * MAX_SEEN_KEYS as u64) {
        let fp = 1_000 + n;
        let t = S + n * 1_000;
        assert!(take(&worker, fp, &limit, t, 1).allowed);
        assert_eq!(reserved_in(&store, fp, &limit, t), 0, "key {n}");
    }
    assert!(worker.shares.borrow().is_empty());
    assert!(worker.shares.borrow().seen.len() <= MAX_SEEN_KEYS);
}

#[test]
fn a_loan_is_spent_up_to_what_was_lent_and_never_past_its_window() {
    let l = per_second(1000);
    let now = 10 * S;
    let lease = crate::lease::Lease { window: 10, units: 100, used: 300, ends_at: now + 100 * MS, ..Default::default() };
    assert_eq!(loan_size(&lease, &l, now), 25, "a quarter of the units, under a sixteenth of the limit (62)");
    assert_eq!(loan_size(&crate::lease::Lease { used: 1000, ..lease }, &l, now), 0, "contested");
    assert_eq!(loan_size(&crate::lease::Lease { owed: 1, ..lease }, &l, now), 0, "owes");
    assert_eq!(loan_size(&lease, &per_second(31), now), 0, "too small a limit to lend");
    assert_eq!(loan_size(&lease, &l, now + 100 * MS), 0, "the window is over");
    let lent = lease.lend(4);
    let mut a = Allowances::default();
    a.keep_loan(7, Loan::new((SLOTS, 7), &l, &lent, 4, now));
    let o = a.spend_lease(7, &l, now, 1).expect("from the loan");
    // The instance's global budget left: 1000 - 300 reserved + 100 here, less this one.
    assert_eq!((o.allowed, o.remaining, o.reset_ns), (true, 799, 100 * MS));
    assert!(a.spend_lease(7, &per_second(999), now, 1).is_none(), "another limit");
    assert!(a.spend_lease(7, &l, now, 4).is_none(), "more than is left");
    assert!(a.spend_lease(7, &l, now + 100 * MS, 1).is_none(), "the window ended");
    for _ in 0..3 {
        assert!(a.spend_lease(7, &l, now + 99 * MS, 1).is_some());
    }
    assert!(a.spend_lease(7, &l, now + 99 * MS, 1).is_none(), "all four spent");
    a.give_back(7, 1);
    assert!(a.spend_lease(7, &l, now + 99 * MS, 1).is_some(), "the unit given back");
    // Repaid on the tick once it may no longer be spent.
    let store = shared();
    let a = RefCell::new(a);
    assert!(settle_due(&a, &store, now + 50 * MS, false).is_empty());
    assert_eq!(a.borrow().len(), 1, "still spendable");
    assert!(settle_due(&a, &store, now + 100 * MS, false).is_empty());
    assert!(a.borrow().is_empty(), "repaid");
}

#[test]
fn a_tick_settles_within_its_budget_the_nearest_deadlines_first() {
    let store = shared();
    let worker = WorkerStore::new(&store);
    let l = per_second(1000);
    // 40 keys, each with a share spent from, reserved 1 ms apart.
    spend_from_shares(&worker, &l, 40, MS);
    assert_eq!(worker.shares.borrow().len(), 40);
    // All due; 10 writes a tick, and the two whose reservations lapse
    // before the urgent mark go whatever the budget.
    let now = S + SPEND_WITHIN_NS + 40 * MS;
    let budget = Budget { writes: 10, urgent_until: S + LIFE_NS + 12 * MS, tick_ns: 10 * MS };
    let before = store.calls();
    assert!(settle_some(&worker.shares, &worker, now, false, budget).is_empty());
    assert_eq!(worker.shares.borrow().len(), 28, "the 12 urgent ones settled, over the budget of 10");
    assert!(store.calls() > before);
    let left: Vec<u64> = {
        let mut k: Vec<u64> = worker.shares.borrow().shares.keys().copied().collect();
        k.sort_unstable();
        k
    };
    assert_eq!(left.first(), Some(&13), "the earliest reserved went first");
    // Not urgent: the budget alone.
    let budget = Budget { writes: 10, urgent_until: 0, tick_ns: 10 * MS };
    assert!(settle_some(&worker.shares, &worker, now, false, budget).is_empty());
    assert_eq!(worker.shares.borrow().len(), 18);
    assert!(settle_due(&worker.shares, &worker, now, false).is_empty());
    assert!(worker.shares.borrow().is_empty());
}

#[test]
fn the_shares_a_burst_leaves_are_settled_at_an_even_pace_before_they_lapse() {
    let store = shared();
    let worker = WorkerStore::new(&store);
    let l = per_second(1000);
    // A burst that ends: 400 keys, each with a share spent from, reserved
    // within 10 ms.
    spend_from_shares(&worker, &l, 400, 25_000);
    // The worker's ticks, every 10 ms once they are due, as the filter's:
    // 10 writes, and whatever would lapse before the tick after next.
    let (tick, mut now, mut most) = (10 * MS, S + SPEND_WITHIN_NS + 10 * MS, 0);
    while !worker.shares.borrow().is_empty() {
        let before = worker.shares.borrow().len();
        let budget = Budget { writes: 10, urgent_until: now + 2 * tick, tick_ns: tick };
        assert!(settle_some(&worker.shares, &worker, now, false, budget).is_empty());
        let left = worker.shares.borrow();
        most = most.max(before - left.len());
        assert!(left.shares.values().all(|s| s.until > now), "a share lapsed unsettled at {now}");
        now += tick;
    }
    // 400 in the 23 ticks before the first lapses: about 18 a tick, not a
    // few hundred in the last ones.
    assert!(most <= 25, "{most} settled in one tick");
}

#[test]
fn every_loan_due_is_repaid_whatever_the_budget() {
    let store = shared();
    let l = per_second(1000);
    let now = 10 * S;
    let lease = crate::lease::Lease { window: 10, units: 100, ends_at: now + S, ..Default::default() };
    let a = RefCell::new(Allowances::default());
    for fp in 1..=3 {
        a.borrow_mut().keep_loan(fp, Loan::new((SLOTS, fp), &l, &lease.lend(8), 8, now));
    }
    let budget = Budget { writes: 0, urgent_until: 0, tick_ns: 10 * MS };
    assert!(settle_some(&a, &store, now + 100 * MS, false, budget).is_empty());
    assert_eq!(a.borrow().len(), 3, "not due yet");
    let later = now + SPEND_WITHIN_NS;
    assert!(settle_some(&a, &store, later, false, Budget { writes: 0, urgent_until: later + 20 * MS, tick_ns: 10 * MS }).is_empty());
    assert!(a.borrow().is_empty(), "all three repaid");
    // Loans the window's end stopped (every busy key's at once) are repaid
    // at a pace, within SPEND_WITHIN_NS.
    let end = now + S;
    for fp in 1..=30 {
        a.borrow_mut().keep_loan(fp, Loan::new((SLOTS, fp), &l, &lease.lend(2), 2, end - 10 * MS));
    }
    let mut t = end;
    let per_tick: Vec<usize> = std::iter::from_fn(|| {
        let before = a.borrow().len();
        assert!(settle_some(&a, &store, t, false, Budget { writes: 0, urgent_until: t + 20 * MS, tick_ns: 10 * MS }).is_empty());
        t += 10 * MS;
        (before > 0).then(|| before - a.borrow().len())
    })
    .collect();
    assert!(per_tick.iter().all(|&n| n <= 3), "{per_tick:?}");
    assert!(t <= end + SPEND_WITHIN_NS + 20 * MS, "all repaid by {t}");
}

#[test]
fn refusals_are_remembered_within_their_bound_under_their_limit_and_forgotten_on_a_new_policy() {
    let store = shared();
    let l = per_second(10);
    let a = RefCell::new(Allowances::default());
    let refusal = |retry_after_ns| Outcome { allowed: false, remaining: 0, reset_ns: S, retry_after_ns };
    // A refusal whose next unit is 30 ms away: remembered for those 30 ms,
    // counted down; one 2 s away: for REFUSED_FOR_NS only.
    a.borrow_mut().note_outcome((0, 1), &l, S, &refusal(30 * MS));
    a.borrow_mut().note_outcome((2, 2), &l, S, &refusal(2 * S));
    assert_eq!(a.borrow().refused(1, &l, S + 10 * MS), Some(refusal(20 * MS)).map(|o| Outcome { reset_ns: S - 10 * MS, ..o }));
    assert_eq!(a.borrow().refused(1, &l, S + 30 * MS), None);
    assert_eq!(a.borrow().refused(1, &per_second(20), S), None, "another limit");
    assert!(a.borrow().refused(2, &l, S + REFUSED_FOR_NS - 1).is_some_and(|o| o.retry_after_ns == 2 * S - REFUSED_FOR_NS + 1));
    assert_eq!(a.borrow().refused(2, &l, S + REFUSED_FOR_NS), None);
    assert_eq!(a.borrow().refusing_rules(), &[0, 2]);
    // An admission forgets; the tick forgets what lapsed, and the rules.
    a.borrow_mut().note_outcome((0, 1), &l, S, &Outcome { allowed: true, remaining: 3, reset_ns: 0, retry_after_ns: 0 });
    assert_eq!(a.borrow().refused(1, &l, S), None);
    assert!(settle_some(&a, &store, S + REFUSED_FOR_NS, false, Budget { writes: 0, urgent_until: 0, tick_ns: 10 * MS }).is_empty());
    assert_eq!((a.borrow().refusals(), a.borrow().refusing_rules().len()), (0, 0));
    // Bounded: past MAX_REFUSED_KEYS live ones, no more are kept.
    for fp in 0..MAX_REFUSED_KEYS as u64 + 10 {
        a.borrow_mut().note_outcome((0, fp), &l, 2 * S, &refusal(50 * MS));
    }
    assert_eq!(a.borrow().refusals(), MAX_REFUSED_KEYS);
    // A new policy: every refusal forgotten.
    assert!(settle_due(&a, &store, 2 * S, true).is_empty());
    assert_eq!(a.borrow().refusals(), 0);
}
