//! Properties the rest of the code relies on, over generated inputs
//! (proptest): a bucket never admits more than its limit allows, whatever
//! the arrivals and costs on a fake clock; the slot and handoff encodings
//! give back what was encoded; normalising a path twice changes nothing.
//! Native only: proptest does not run under wasm-bindgen-test.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use sluice_core::bucket::State;
use sluice_core::counter_api::Ask;
use sluice_core::duration::Span;
use sluice_core::lease::Lease;
use sluice_core::limiter::{decode_needs, encode_needs, LeaseNeed};
use sluice_core::path::normalize;
use sluice_core::policy::{Algorithm, Limit};
use sluice_core::slot::Slot;

const MS: u64 = 1_000_000;
/// 2025-11-17T12:34:45Z.
const T0: u64 = 1_763_382_885_000_000_000;

/// A limit a policy may hold: 1..=1000 requests per 1 ms..=10 s, bursts of
/// 1..=1000.
fn limits() -> impl Strategy<Value = Limit> {
    (1u64..=1000, 1u64..=10_000, 1u64..=1000).prop_map(|(requests, per_ms, burst)| Limit {
        requests,
        per: Span::from_nanos(per_ms * MS),
        burst,
        calendar: None,
    })
}

/// Arrivals on a fake clock: (gap since the previous one in ns, cost).
fn arrivals() -> impl Strategy<Value = Vec<(u64, u64)>> {
    prop::collection::vec((prop_oneof![Just(0u64), 0u64..=MS, 0u64..=20_000 * MS], 1u64..=5), 1..300)
}

/// Runs `arrivals` through one bucket; the (time, cost) of each admitted
/// request.
fn admitted(algorithm: Algorithm, limit: &Limit, arrivals: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut state = State::Empty;
    let mut now = T0;
    let mut out = Vec::new();
    for &(gap, cost) in arrivals {
        now += gap;
        let (outcome, next) = state.take(algorithm, limit, now, cost);
        assert_eq!(outcome.allowed, next.is_some());
        if let Some(s) = next {
            // What is stored reads back the same (the slot round trip).
            assert_eq!(State::decode(&s.encode(7)), (7, s));
            state = s;
            out.push((now, cost));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// GCRA: between any two admissions at `a <= b`, the units admitted
    /// (both included) are at most `burst + requests * (b - a) / per`,
    /// plus what whole-nanosecond steps round away: one nanosecond per
    /// admission, `n * requests / per` units in all (under 0.3 of a unit
    /// here).
    #[test]
    fn a_token_bucket_admits_at_most_burst_plus_rate(limit in limits(), arrivals in arrivals()) {
        let got = admitted(Algorithm::TokenBucket, &limit, &arrivals);
        let (per, requests, burst) = (u128::from(limit.per.nanos()), u128::from(limit.requests), u128::from(limit.burst));
        for i in 0..got.len() {
            let mut units = 0u128;
            for (j, &(t, cost)) in got.iter().enumerate().skip(i) {
                units += u128::from(cost);
                let span = u128::from(t - got[i].0);
                let n = (j - i + 1) as u128;
                prop_assert!(
                    units * per <= burst * per + requests * span + n * requests,
                    "{units} units in {span} ns over {n} admissions with {limit:?}"
                );
            }
        }
    }

    /// Fixed window: at most `requests` units admitted per window.
    #[test]
    fn a_fixed_window_admits_at_most_its_limit_per_window(limit in limits(), arrivals in arrivals()) {
        let got = admitted(Algorithm::FixedWindow, &limit, &arrivals);
        let per = limit.per.nanos();
        let mut per_window = std::collections::BTreeMap::<u64, u64>::new();
        for (t, cost) in got {
            *per_window.entry(t / per).or_default() += cost;
        }
        for (w, units) in per_window {
            prop_assert!(units <= limit.requests, "window {w}: {units} > {}", limit.requests);
        }
    }

    /// Sliding window: at every admission, the units of its window plus
    /// the previous window's, weighted by how much of it the sliding
    /// window still covers, are within the limit; so any span of one
    /// window's length admits at most twice the limit.
    #[test]
    fn a_sliding_window_admits_at_most_its_weighted_limit(limit in limits(), arrivals in arrivals()) {
        let got = admitted(Algorithm::SlidingWindow, &limit, &arrivals);
        let per = limit.per.nanos();
        let mut per_window = std::collections::BTreeMap::<u64, u64>::new();
        for &(t, cost) in &got {
            let w = t / per;
            let current = {
                let c = per_window.entry(w).or_default();
                *c += cost;
                *c
            };
            let previous = w.checked_sub(1).and_then(|p| per_window.get(&p)).copied().unwrap_or(0);
            let elapsed = t - w * per;
            let estimate = u128::from(current) * u128::from(per) + u128::from(previous) * u128::from(per - elapsed);
            prop_assert!(estimate <= u128::from(limit.requests) * u128::from(per), "at {t}: {current} + {previous} weighted");
        }
        for (i, &(t, _)) in got.iter().enumerate() {
            let units: u64 = got[i..].iter().take_while(|(u, _)| u - t < per).map(|(_, c)| c).sum();
            prop_assert!(units <= 2 * limit.requests, "{units} within one window's length");
        }
    }

    /// A slot reads back as written, with its flags, for every state.
    #[test]
    fn slot_states_round_trip(fingerprint in 1u64.., flags: u8, a: u64, b: u32, c: u32, tag in 0u8..4) {
        let state = match tag {
            0 => State::Tat(a),
            1 => State::Fixed { window: a, count: b },
            2 => State::Sliding { window: a, current: b, previous: c },
            _ => State::Empty,
        };
        let bytes = state.encode_flagged(fingerprint, flags);
        if state == State::Empty {
            prop_assert_eq!(State::decode(&bytes), (0, State::Empty));
        } else {
            prop_assert_eq!(State::decode(&bytes), (fingerprint, state));
            prop_assert_eq!(State::flags(&bytes), flags);
        }
    }

    /// A lease reads back as written, alone and in its slot.
    #[test]
    fn leases_round_trip(fingerprint in 1u64.., a: [u64; 4], b: [u32; 12]) {
        let lease = Lease {
            window: a[0], ends_at: a[1], asked_at: a[2],
            units: b[0], used: b[1], next_units: b[2], next_used: b[3],
            seen: b[4], seen_before: b[5], owed: b[6], used_before: b[7],
            ahead_units: b[8], ahead_used: b[9], ahead_last: a[3], arrived: b[10], held: b[11],
        };
        let mut out = Vec::new();
        lease.encode_into(&mut out);
        prop_assert_eq!(out.len(), Lease::ENCODED_LEN);
        prop_assert_eq!(Lease::decode(&out), Some(lease));
        let slot = Slot { lease, ..Slot::default() };
        let expected = if lease == Lease::default() { (0, Slot::default()) } else { (fingerprint, slot) };
        prop_assert_eq!(Slot::decode(&slot.encode(fingerprint)), expected);
    }

    /// Any bytes decode to something or nothing, never a panic, and what a
    /// slot decodes to encodes back to the same slot.
    #[test]
    fn any_slot_bytes_decode(bytes in prop::collection::vec(any::<u8>(), 0..140)) {
        let (fp, state) = State::decode(&bytes);
        if fp != 0 && state != State::Empty {
            prop_assert_eq!(State::decode(&state.encode(fp)), (fp, state));
        }
        let (fp, slot) = Slot::decode(&bytes);
        if fp != 0 {
            prop_assert_eq!(Slot::decode(&slot.encode(fp)), (fp, slot));
        }
    }

    /// The refill message a worker hands its leader reads back as sent.
    #[test]
    fn handoff_messages_round_trip(needs in prop::collection::vec(needs(), 0..8)) {
        let bytes = encode_needs(&needs).expect("short names encode");
        prop_assert_eq!(decode_needs(&bytes), needs);
    }

    /// Normalising is idempotent, on any text and on path-like text.
    #[test]
    fn normalising_twice_changes_nothing(raw in prop_oneof![any::<String>(), path_like()]) {
        let once = normalize(&raw);
        prop_assert_eq!(normalize(&once), once.clone(), "{:?}", raw);
    }
}

fn needs() -> impl Strategy<Value = LeaseNeed> {
    ((any::<u32>(), any::<u64>(), any::<u64>(), any::<u32>(), any::<bool>()), (".{0,40}", ".{0,80}", any::<u64>(), any::<u64>(), any::<u32>(), any::<bool>()))
        .prop_map(|((rule, fingerprint, bucket, carry, owns_ask), (rule_name, id, limit, window_ms, want, next))| LeaseNeed {
            rule: rule as usize,
            fingerprint,
            ask: Ask::new(rule_name, id, limit, window_ms, want, next),
            owns_ask,
            carry,
            bucket,
        })
}

/// Paths made of the pieces normalisation works on.
fn path_like() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec!["/", "//", ".", "..", "a", "B", "%41", "%2F", "%2e", "%", "%4", "~", "\u{e9}", "?q=1", "#f", "-_"]);
    prop::collection::vec(piece, 0..12).prop_map(|p| p.concat())
}
