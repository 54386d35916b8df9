//! The slot codecs: a slot's stored bytes (`Slot::decode`, and the
//! bucket's and lease's own `State::decode`, `State::flags`,
//! `Lease::decode`) on any bytes, `decode(encode(x)) == x` for any bucket
//! with any flags and any lease beside it, and every bucket and lease
//! operation on whatever a slot decodes to, with any limit a policy may
//! hold, at any time up to the year 2200.
#![no_main]

extern crate sluice_fuzz;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sluice_core::bucket::State;
use sluice_core::duration::{Span, MAX_NS};
use sluice_core::lease::{Answer, Lease};
use sluice_core::policy::{Algorithm, Limit, Queue};
use sluice_core::slot::Slot;

/// 2200-01-01T00:00:00Z in ns, the latest time the core is given.
const LATEST_NS: u64 = 7_258_118_400 * 1_000_000_000;
const MS: u64 = 1_000_000;
/// A policy's largest `requests`, `burst` and queue length.
const MAX_REQUESTS: u64 = 1_000_000_000;
const MAX_QUEUED: u64 = 100_000;

#[derive(Arbitrary, Debug)]
enum Shape {
    Empty,
    Tat(u64),
    Fixed(u64, u32),
    Sliding(u64, u32, u32),
}

#[derive(Arbitrary, Debug)]
struct Input {
    stored: Vec<u8>,
    shape: Shape,
    lease: Option<([u64; 3], [u32; 8])>,
    fingerprint: u64,
    flags: u8,
    requests: u64,
    per: u64,
    burst: u64,
    cost: u64,
    now: u64,
    later: u32,
    answer: (u32, u32, u64, u32, u32, u32),
}

fn lease_of(a: [u64; 3], b: [u32; 8]) -> Lease {
    Lease {
        window: a[0],
        ends_at: a[1],
        asked_at: a[2],
        units: b[0],
        used: b[1],
        next_units: b[2],
        next_used: b[3],
        seen: b[4],
        seen_before: b[5],
        owed: b[6],
        used_before: b[7],
        ..Lease::default()
    }
}

fuzz_target!(|input: Input| {
    // Any stored bytes: a slot or nothing, never a panic.
    let (fp, decoded) = State::decode(&input.stored);
    let _ = State::flags(&input.stored);
    let _ = Lease::decode(&input.stored);
    if fp != 0 && decoded != State::Empty {
        assert_eq!(State::decode(&decoded.encode(fp)), (fp, decoded), "re-encoded");
    }
    let (slot_fp, slot) = Slot::decode(&input.stored);
    if slot_fp != 0 {
        assert_eq!(Slot::decode(&slot.encode(slot_fp)), (slot_fp, slot), "re-encoded slot");
    }

    // Any state: decode(encode(x)) == x, flags kept for buckets.
    let shaped = match input.shape {
        Shape::Empty => State::Empty,
        Shape::Tat(t) => State::Tat(t),
        Shape::Fixed(window, count) => State::Fixed { window, count },
        Shape::Sliding(window, current, previous) => State::Sliding { window, current, previous },
    };
    let bytes = shaped.encode_flagged(input.fingerprint, input.flags);
    let want = if shaped == State::Empty { (0, State::Empty) } else { (input.fingerprint, shaped) };
    assert_eq!(State::decode(&bytes), want, "{bytes:?}");
    if matches!(shaped, State::Tat(_) | State::Fixed { .. } | State::Sliding { .. }) {
        assert_eq!(State::flags(&bytes), input.flags);
    }
    // Any slot: the bucket, its flags and the lease beside it read back.
    let lease = input.lease.map_or(Lease::default(), |(a, b)| lease_of(a, b));
    let mut out = Vec::new();
    lease.encode_into(&mut out);
    assert_eq!((out.len(), Lease::decode(&out)), (Lease::ENCODED_LEN, Some(lease)));
    let shaped_slot = Slot { state: shaped, flags: input.flags, lease, ..Slot::default() };
    let (back_fp, back) = Slot::decode(&shaped_slot.encode(input.fingerprint));
    if shaped == State::Empty && lease == Lease::default() {
        assert_eq!((back_fp, back), (0, Slot::default()));
    } else {
        assert_eq!((back_fp, back), (input.fingerprint, shaped_slot));
    }

    // Every operation on what a slot may hold, with a valid policy limit.
    let requests = 1 + input.requests % MAX_REQUESTS;
    let burst = 1 + input.burst % MAX_REQUESTS;
    let limit = Limit { requests, per: Span::from_nanos(MS + input.per % MAX_NS), burst, calendar: None };
    let cost = 1 + input.cost % burst.max(requests);
    let now = input.now % LATEST_NS;
    let queue = Queue { max_wait: Span::from_nanos(MS + input.per % (60_000 * MS)), max_queued: 1 + input.requests % MAX_QUEUED };
    for (state, l) in [(decoded, slot.lease), (shaped, lease)] {
        for algorithm in [Algorithm::TokenBucket, Algorithm::FixedWindow, Algorithm::SlidingWindow] {
            let (o, next) = state.take(algorithm, &limit, now, cost);
            assert_eq!(o.allowed, next.is_some());
            let _ = state.refund(algorithm, &limit, now, cost);
            if let Some(s) = next {
                let _ = s.refund(algorithm, &limit, now, cost).idle_in(&limit, now);
            }
        }
        let _ = state.take_queued(&limit, now, cost, &queue);
        let _ = state.take_leaving(&limit, now, cost, input.burst % burst);
        let _ = state.block(&limit, now, now.saturating_add(u64::from(input.later)));
        let _ = state.idle_in(&limit, now);
        {
            let (granted, used, window, starts_ms, ends_ms, blocked_ms) = input.answer;
            let window_ms = limit.per.nanos() / MS;
            let answer = Answer {
                granted,
                used,
                window,
                starts_in_ns: u64::from(starts_ms) % (window_ms + 1) * MS,
                ends_in_ns: u64::from(ends_ms) % (2 * window_ms + 1) * MS,
                blocked_ns: u64::from(blocked_ms) * MS,
                windows: used % 4 + 1,
                current_used: used / 2,
            };
            for credit in [false, true] {
                let (_, spent) = l.spend(now, &limit, cost, credit);
                let _ = spent.refund(now, &limit, l.window, cost);
                let later = now + u64::from(input.later);
                let granted = spent.grant(later, &limit, &answer);
                let _ = granted.want(later, &limit);
                let _ = granted.want_next(later, &limit);
                let _ = granted.top_up(later, &limit);
                let _ = granted.give_back(later, limit.per.nanos());
                let _ = granted.idle_in(later, limit.per.nanos());
            }
        }
    }
});
