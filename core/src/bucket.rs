//! Bucket arithmetic for the three algorithms, on integer nanoseconds, and
//! the fixed 26-byte encoding a bucket has in one shared-data slot.
//!
//! - token bucket: GCRA. The whole state is the "theoretical arrival time"
//!   `tat`; a request costing `c` moves it `c * per / requests` forward and
//!   is allowed while `tat - now` stays within `burst * per / requests`.
//!   Over any span of `t` windows at most `burst + requests * t` pass.
//! - fixed window: a count per window `floor(now / per)`, or per calendar
//!   day or month (`calendar.rs`).
//! - sliding window: the current and previous window counts, the previous
//!   one weighted by how much of it still overlaps the sliding window.
//!
//! Encoding (little endian): `[1][tag][fingerprint: u64][a: u64][b: u32][c: u32]`
//! with tag 0 = empty, 1 = token bucket (a = tat), 2 = fixed window
//! (a = window, b = count), 3 = sliding window (a = window, b = current,
//! c = previous). A token bucket's b and c hold what workers have
//! reserved from it ([`Reserved`], see `allowance`). A bucket's 27th
//! byte, when present, holds flags about its key (see `store::FLAG_*`);
//! older 26-byte values read as no flags. A global rule's lease follows
//! (see `slot`).

use std::num::{NonZeroU128, NonZeroU64};

use crate::allowance::Reserved;
use crate::little_endian::{u32_at, u64_at};
use crate::policy::{Algorithm, Limit, Queue};

pub const ENCODED_LEN: usize = 26;
const VERSION: u8 = 1;

/// A bucket's state. `Empty` is also what any undecodable bytes read as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum State {
    #[default]
    Empty,
    Tat(u64),
    Fixed {
        window: u64,
        count: u32,
    },
    Sliding {
        window: u64,
        current: u32,
        previous: u32,
    },
}

/// The answer for one rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub allowed: bool,
    /// Requests still allowed right after this one (before it, when denied).
    pub remaining: u64,
    /// Nanoseconds until the limit is fully available again.
    pub reset_ns: u64,
    /// Nanoseconds until this request would be allowed (0 when allowed).
    pub retry_after_ns: u64,
}

/// GCRA figures, all in ns: the arrival time after earlier requests, the
/// step this request adds, the tolerance (burst), the time per unit, and
/// the arrival time after this request.
struct Gcra {
    tat: u64,
    step: u64,
    capacity: u64,
    interval: NonZeroU64,
    new_tat: u64,
}

/// When window `w` of `per` ns ends (saturating at the end of time).
fn window_end(w: u64, per: NonZeroU64) -> u64 {
    w.saturating_add(1).saturating_mul(per.get())
}

/// `a × b / c` without overflow (a zero `c` counts as 1), saturating at
/// `u64::MAX`.
pub(crate) fn mul_div(a: u64, b: u64, c: u64) -> u64 {
    // Two u64 never overflow a u128 product.
    let c = NonZeroU128::new(u128::from(c)).unwrap_or(NonZeroU128::MIN);
    let v = u128::from(a).saturating_mul(u128::from(b)) / c;
    u64::try_from(v).unwrap_or(u64::MAX)
}

fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl State {
    /// The state as seen by `algorithm`: a state written by another
    /// algorithm (the rule changed on reload) starts afresh.
    fn for_algorithm(self, algorithm: Algorithm) -> State {
        match (self, algorithm) {
            (State::Tat(_), Algorithm::TokenBucket) | (State::Fixed { .. }, Algorithm::FixedWindow) | (State::Sliding { .. }, Algorithm::SlidingWindow) => self,
            _ => State::Empty,
        }
    }

    /// The token bucket's figures for taking `cost` units at `now`.
    fn gcra(self, limit: &Limit, now: u64, cost: u64) -> Gcra {
        let per = limit.per.nanos();
        let tat = match self {
            State::Tat(t) => t.max(now),
            _ => now,
        };
        let step = mul_div(per, cost, limit.requests);
        Gcra {
            tat,
            step,
            capacity: mul_div(per, limit.burst, limit.requests),
            interval: NonZeroU64::new(mul_div(per, 1, limit.requests)).unwrap_or(NonZeroU64::MIN),
            new_tat: tat.saturating_add(step),
        }
    }

    /// Takes `cost` units at `now`. Returns the outcome and, when allowed,
    /// the state to store.
    pub fn take(self, algorithm: Algorithm, limit: &Limit, now: u64, cost: u64) -> (Outcome, Option<State>) {
        let per = limit.per.nonzero_nanos();
        match (algorithm, self.for_algorithm(algorithm)) {
            (Algorithm::TokenBucket, s) => {
                let Gcra { tat, step, capacity, interval, new_tat } = s.gcra(limit, now, cost);
                let debt = new_tat.saturating_sub(now);
                if debt <= capacity {
                    let remaining = capacity.saturating_sub(debt) / interval;
                    (Outcome { allowed: true, remaining, reset_ns: debt, retry_after_ns: 0 }, Some(State::Tat(new_tat)))
                } else {
                    let remaining = capacity.saturating_sub(tat.saturating_sub(now)) / interval;
                    let retry = if step > capacity { per.get() } else { debt.saturating_sub(capacity) };
                    (Outcome { allowed: false, remaining, reset_ns: tat.saturating_sub(now), retry_after_ns: retry }, None)
                }
            }
            (Algorithm::FixedWindow, s) => {
                let window = limit.window_at(now);
                let count = match s {
                    State::Fixed { window: w, count } if w == window => u64::from(count),
                    _ => 0,
                };
                let reset = limit.window_end(window).saturating_sub(now);
                let after = count.saturating_add(cost);
                if after <= limit.requests {
                    let next = State::Fixed { window, count: clamp_u32(after) };
                    (Outcome { allowed: true, remaining: limit.requests.saturating_sub(after), reset_ns: reset, retry_after_ns: 0 }, Some(next))
                } else {
                    let retry = if cost > limit.requests { limit.window_ns(now) } else { reset };
                    (Outcome { allowed: false, remaining: limit.requests.saturating_sub(count), reset_ns: reset, retry_after_ns: retry }, None)
                }
            }
            (Algorithm::SlidingWindow, s) => {
                let window = now / per;
                let (current, previous) = match s {
                    State::Sliding { window: w, current, previous } if w == window => (u64::from(current), u64::from(previous)),
                    State::Sliding { window: w, current, .. } if w.checked_add(1) == Some(window) => (0, u64::from(current)),
                    _ => (0, 0),
                };
                let elapsed = now % per;
                // Estimate in units of 1/per requests to stay in integers;
                // products of two u64 cannot overflow a u128, and the sums
                // of two of them are far from its end.
                let wide = |a: u64, b: u64| u128::from(a).saturating_mul(u128::from(b));
                let estimate = wide(previous, per.get().saturating_sub(elapsed)).saturating_add(wide(current, per.get()));
                let wanted = wide(cost, per.get());
                let budget = wide(limit.requests, per.get());
                let per_wide = NonZeroU128::from(per);
                let reset = window_end(window, per).saturating_sub(now);
                if estimate.saturating_add(wanted) <= budget {
                    let left = u64::try_from(budget.saturating_sub(estimate).saturating_sub(wanted) / per_wide).unwrap_or(u64::MAX);
                    let next = State::Sliding { window, current: clamp_u32(current.saturating_add(cost)), previous: clamp_u32(previous) };
                    (Outcome { allowed: true, remaining: left, reset_ns: reset, retry_after_ns: 0 }, Some(next))
                } else {
                    let left = u64::try_from(budget.saturating_sub(estimate) / per_wide).unwrap_or(u64::MAX);
                    let retry = sliding_retry(limit.requests, per.get(), elapsed, current, previous, cost);
                    (Outcome { allowed: false, remaining: left, reset_ns: reset, retry_after_ns: retry }, None)
                }
            }
        }
    }

    /// Like `take` for a token bucket, but a request over the limit may
    /// reserve its turn: it is admitted after the returned wait when that
    /// wait is within `queue.max_wait` and at most `queue.max_queued`
    /// requests (this one included) are waiting. Turns are handed out in
    /// the order of the compare-and-swap that reserves them: FIFO per key.
    pub fn take_queued(self, limit: &Limit, now: u64, cost: u64, queue: &Queue) -> (Outcome, Option<State>, u64) {
        let (outcome, next) = self.take(Algorithm::TokenBucket, limit, now, cost);
        if outcome.allowed {
            return (outcome, next, 0);
        }
        let Gcra { step, capacity, interval, new_tat, .. } = self.for_algorithm(Algorithm::TokenBucket).gcra(limit, now, cost);
        let wait = new_tat.saturating_sub(now).saturating_sub(capacity);
        let waiting = wait.div_ceil(interval.get());
        if step <= capacity && wait <= queue.max_wait.nanos() && waiting <= queue.max_queued {
            let held = Outcome { allowed: true, remaining: 0, reset_ns: new_tat.saturating_sub(now), retry_after_ns: 0 };
            (held, Some(State::Tat(new_tat)), wait)
        } else {
            (outcome, None, 0)
        }
    }

    /// Like `take` for a token bucket, for a priority class that leaves
    /// `reserve` units for the classes above it: allowed only while that
    /// many would still be left. A refusal's `retry_after_ns` is when there
    /// will be room for this class (if nobody else takes it first).
    pub fn take_leaving(self, limit: &Limit, now: u64, cost: u64, reserve: u64) -> (Outcome, Option<State>) {
        let s = self.for_algorithm(Algorithm::TokenBucket);
        let Gcra { tat, step, capacity, interval, new_tat } = s.gcra(limit, now, cost);
        let room = capacity.saturating_sub(mul_div(limit.per.nanos(), reserve, limit.requests));
        let debt = new_tat.saturating_sub(now);
        if debt <= room {
            let remaining = room.saturating_sub(debt) / interval;
            (Outcome { allowed: true, remaining, reset_ns: debt, retry_after_ns: 0 }, Some(State::Tat(new_tat)))
        } else {
            let remaining = room.saturating_sub(tat.saturating_sub(now)) / interval;
            let retry = if step > room { limit.per.nanos() } else { debt.saturating_sub(room) };
            (Outcome { allowed: false, remaining, reset_ns: tat.saturating_sub(now), retry_after_ns: retry }, None)
        }
    }

    /// Keeps a token bucket empty until `until` (an upstream asked us to
    /// stay away), after which it refills from nothing. Returns the new
    /// state and whether this starts a block (the bucket was not blocked
    /// already), for logging once per episode.
    pub fn block(self, limit: &Limit, now: u64, until: u64) -> (State, bool) {
        let Gcra { tat, capacity, interval, .. } = self.for_algorithm(Algorithm::TokenBucket).gcra(limit, now, 1);
        let blocked_tat = until.saturating_add(capacity).saturating_sub(interval.get());
        let was_blocked = tat.saturating_add(interval.get()) > now.saturating_add(capacity);
        (State::Tat(tat.max(blocked_tat)), !was_blocked && blocked_tat > tat)
    }

    /// Gives back `cost` units taken at `now` by a request that was denied
    /// by a later rule after all.
    pub fn refund(self, algorithm: Algorithm, limit: &Limit, now: u64, cost: u64) -> State {
        let per = limit.per.nonzero_nanos();
        match self.for_algorithm(algorithm) {
            State::Tat(t) => State::Tat(t.saturating_sub(mul_div(per.get(), cost, limit.requests)).max(now)),
            State::Fixed { window, count } if window == limit.window_at(now) => State::Fixed { window, count: count.saturating_sub(clamp_u32(cost)) },
            State::Sliding { window, current, previous } if window == now / per => {
                State::Sliding { window, current: current.saturating_sub(clamp_u32(cost)), previous }
            }
            other => other,
        }
    }

    /// Takes `cost` more units at `now` whatever is left: a request that
    /// already went upstream turned out to cost more than it was charged
    /// (its response said so). The bucket may go past its limit; the key's
    /// next requests then wait longer (a token bucket's debt carries over,
    /// a window's count is the current window's).
    pub fn charge(self, algorithm: Algorithm, limit: &Limit, now: u64, cost: u64) -> State {
        let per = limit.per.nonzero_nanos();
        match (algorithm, self.for_algorithm(algorithm)) {
            (Algorithm::TokenBucket, s) => State::Tat(s.gcra(limit, now, cost).new_tat),
            (Algorithm::FixedWindow, s) => {
                let window = limit.window_at(now);
                let count = match s {
                    State::Fixed { window: w, count } if w == window => count,
                    _ => 0,
                };
                State::Fixed { window, count: count.saturating_add(clamp_u32(cost)) }
            }
            (Algorithm::SlidingWindow, s) => {
                let window = now / per;
                let (current, previous) = match s {
                    State::Sliding { window: w, current, previous } if w == window => (current, previous),
                    State::Sliding { window: w, current, .. } if w.checked_add(1) == Some(window) => (0, current),
                    _ => (0, 0),
                };
                State::Sliding { window, current: current.saturating_add(clamp_u32(cost)), previous }
            }
        }
    }

    /// Nanoseconds until this bucket is indistinguishable from an empty one;
    /// 0 means the slot may be taken over.
    pub fn idle_in(self, limit: &Limit, now: u64) -> u64 {
        let per = limit.per.nonzero_nanos();
        let window = now / per;
        let until_end_of = |w: u64| window_end(w, per).saturating_sub(now);
        match self {
            State::Empty => 0,
            State::Tat(t) => t.saturating_sub(now),
            State::Fixed { window: w, count } if w == limit.window_at(now) && count > 0 => limit.window_end(w).saturating_sub(now),
            State::Sliding { window: w, current, previous } if w == window && (current > 0 || previous > 0) => {
                until_end_of(if current > 0 { w.saturating_add(1) } else { w })
            }
            State::Sliding { window: w, current, .. } if w.checked_add(1) == Some(window) && current > 0 => until_end_of(window),
            _ => 0,
        }
    }

    pub fn encode(self, fingerprint: u64) -> Vec<u8> {
        self.encode_flagged(fingerprint, 0)
    }

    /// Encodes with the key's flags.
    pub fn encode_flagged(self, fingerprint: u64, flags: u8) -> Vec<u8> {
        self.encode_reserved(fingerprint, flags, Reserved::default())
    }

    /// Encodes with the key's flags and, for a token bucket, what workers
    /// have reserved from it.
    pub fn encode_reserved(self, fingerprint: u64, flags: u8, reserved: Reserved) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENCODED_LEN + 1 + crate::lease::Lease::ENCODED_LEN);
        out.push(VERSION);
        let (tag, a, b, c) = match self {
            State::Empty => (0u8, 0u64, 0u32, 0u32),
            State::Tat(t) => (1, t, reserved.units, reserved.until_ms),
            State::Fixed { window, count } => (2, window, count, 0),
            State::Sliding { window, current, previous } => (3, window, current, previous),
        };
        out.push(tag);
        out.extend_from_slice(&fingerprint.to_le_bytes());
        out.extend_from_slice(&a.to_le_bytes());
        out.extend_from_slice(&b.to_le_bytes());
        out.extend_from_slice(&c.to_le_bytes());
        if flags != 0 {
            out.push(flags);
        }
        out
    }

    /// What workers have reserved from an encoded token bucket (none for
    /// any other state).
    pub fn reserved(bytes: &[u8]) -> Reserved {
        match (bytes.get(..2), u32_at(bytes, 18), u32_at(bytes, 22)) {
            (Some([VERSION, 1]), Some(units), Some(until_ms)) if bytes.len() >= ENCODED_LEN => Reserved { units, until_ms },
            _ => Reserved::default(),
        }
    }

    /// The flags byte of an encoded bucket (0 when absent).
    pub fn flags(bytes: &[u8]) -> u8 {
        match bytes.get(1) {
            Some(1..=3) => bytes.get(ENCODED_LEN).copied().unwrap_or(0),
            _ => 0,
        }
    }

    /// Decodes a slot; anything malformed reads as an empty slot with
    /// fingerprint 0, which no key has.
    pub fn decode(bytes: &[u8]) -> (u64, State) {
        let Some(b) = bytes.get(..ENCODED_LEN) else {
            return (0, State::Empty);
        };
        if b.first() != Some(&VERSION) {
            return (0, State::Empty);
        }
        let fp = u64_at(b, 2).unwrap_or(0);
        let (a, x, y) = (u64_at(b, 10).unwrap_or(0), u32_at(b, 18).unwrap_or(0), u32_at(b, 22).unwrap_or(0));
        let state = match b.get(1) {
            Some(1) => State::Tat(a),
            Some(2) => State::Fixed { window: a, count: x },
            Some(3) => State::Sliding { window: a, current: x, previous: y },
            _ => return (0, State::Empty),
        };
        (fp, state)
    }
}

/// Earliest wait after which a sliding window admits `cost` more.
fn sliding_retry(requests: u64, per: u64, elapsed: u64, current: u64, previous: u64, cost: u64) -> u64 {
    if cost > requests {
        return per;
    }
    let until_end = per.saturating_sub(elapsed);
    if current.saturating_add(cost) <= requests && previous > 0 {
        // Within this window, once previous * (per - e) / per <= requests - cost - current.
        let room = requests.saturating_sub(cost).saturating_sub(current);
        let e_needed = per.saturating_sub(mul_div(room, per, previous));
        return e_needed.saturating_sub(elapsed).max(1);
    }
    if current == 0 {
        return until_end.max(1);
    }
    // Next window: the current count becomes the weighted previous one.
    let room = requests.saturating_sub(cost);
    let e_needed = per.saturating_sub(mul_div(room, per, current));
    until_end.saturating_add(e_needed.max(1))
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::duration::Span;

    const S: u64 = 1_000_000_000;

    fn limit(requests: u64, per_s: u64, burst: u64) -> Limit {
        Limit { requests, per: Span::from_secs(per_s), burst, calendar: None }
    }

    /// Sends one request every `gap` ns for `span` ns and counts admissions.
    fn admitted(alg: Algorithm, l: &Limit, start: u64, gap: u64, span: u64) -> u64 {
        let mut state = State::Empty;
        let mut n = 0;
        let mut t = start;
        while t < start + span {
            let (o, next) = state.take(alg, l, t, 1);
            if let Some(s) = next {
                state = s;
            }
            n += u64::from(o.allowed);
            t += gap;
        }
        n
    }

    #[test]
    fn token_bucket_allows_burst_then_rate() {
        let l = limit(10, 1, 10);
        // Flood at 1 request per ms for 3 s: 10 burst + 10/s * 3 s.
        let n = admitted(Algorithm::TokenBucket, &l, 1_000 * S, S / 1000, 3 * S);
        assert!((39..=40).contains(&n), "{n}");
    }

    #[test]
    fn token_bucket_never_exceeds_n_times_t_plus_one() {
        // The policy's promise: at most N*(t+1) in any span of t seconds.
        let l = limit(100, 1, 100);
        let mut state = State::Empty;
        let mut times = Vec::new();
        let mut t = 5 * S;
        for i in 0..200_000u64 {
            t += 7_000 + (i * 7919) % 13_000; // irregular arrivals, ~100k/s
            let (o, next) = state.take(Algorithm::TokenBucket, &l, t, 1);
            if let Some(s) = next {
                state = s;
            }
            if o.allowed {
                times.push(t);
            }
        }
        for span in [S / 100, S / 2, S, 3 * S / 2, 2 * S] {
            let mut j = 0;
            for i in 0..times.len() {
                while times[i] - times[j] > span {
                    j += 1;
                }
                let bound = 100 * (span + S) / S;
                assert!((i - j + 1) as u64 <= bound, "span {span}: {} > {bound}", i - j + 1);
            }
        }
    }

    #[test]
    fn token_bucket_reports_remaining_and_retry() {
        let l = limit(5, 1, 5);
        let now = 10 * S;
        let (o, s) = State::Empty.take(Algorithm::TokenBucket, &l, now, 1);
        assert!(o.allowed);
        assert_eq!(o.remaining, 4);
        assert_eq!(o.reset_ns, S / 5);
        let mut state = s.expect("stored");
        for _ in 0..4 {
            state = state.take(Algorithm::TokenBucket, &l, now, 1).1.expect("allowed");
        }
        let (denied, none) = state.take(Algorithm::TokenBucket, &l, now, 1);
        assert!(!denied.allowed && none.is_none());
        assert_eq!(denied.remaining, 0);
        assert_eq!(denied.retry_after_ns, S / 5);
        // Refund gives the last unit back.
        let back = state.refund(Algorithm::TokenBucket, &l, now, 1);
        assert!(back.take(Algorithm::TokenBucket, &l, now, 1).0.allowed);
    }

    #[test]
    fn queued_requests_get_turns_in_order_within_bounds() {
        // Notion: 3/s, wait up to 2 s.
        let l = limit(3, 1, 3);
        let q = Queue { max_wait: Span::from_secs(2), max_queued: 100 };
        let now = 10 * S;
        let mut state = State::Empty;
        let mut waits = Vec::new();
        for _ in 0..10 {
            let (o, next, wait) = state.take_queued(&l, now, 1, &q);
            if let Some(s) = next {
                state = s;
            }
            // In ms, rounded: the turns are 1/3 s apart.
            waits.push(o.allowed.then_some((wait + 500_000) / 1_000_000));
        }
        let want: Vec<Option<u64>> = vec![Some(0), Some(0), Some(0), Some(333), Some(667), Some(1000), Some(1333), Some(1667), Some(2000), None];
        let third = S / 3;
        assert_eq!(waits, want, "9 fit within 2 s, the 10th is refused");
        let short = Queue { max_wait: Span::from_secs(2), max_queued: 2 };
        let (o, _, _) = State::Tat(now + S + third).take_queued(&l, now, 1, &short);
        assert!(o.allowed, "one waiting ahead, this one is the second");
        let (o, _, _) = State::Tat(now + S + 2 * third).take_queued(&l, now, 1, &short);
        assert!(!o.allowed, "a third waiter is over max_queued");
    }

    #[test]
    fn a_blocked_bucket_refuses_until_the_upstream_said() {
        let l = limit(10, 1, 10);
        let now = 10 * S;
        let (blocked, started) = State::Empty.block(&l, now, now + 3 * S);
        assert!(started);
        assert!(!blocked.take(Algorithm::TokenBucket, &l, now + 2 * S, 1).0.allowed);
        let (o, next) = blocked.take(Algorithm::TokenBucket, &l, now + 3 * S, 1);
        assert!(o.allowed, "one at the end of the block");
        assert!(!next.expect("stored").take(Algorithm::TokenBucket, &l, now + 3 * S, 1).0.allowed, "then at the rate");
        let (_, again) = blocked.block(&l, now + S, now + 4 * S);
        assert!(!again, "the same episode");
        let q = Queue { max_wait: Span::from_secs(4), max_queued: 100 };
        let (o, _, wait) = blocked.take_queued(&l, now, 1, &q);
        assert!(o.allowed && wait == 3 * S, "queued until the block ends: {wait}");
    }

    #[test]
    fn fixed_window_counts_per_window() {
        let l = limit(3, 1, 3);
        let n = admitted(Algorithm::FixedWindow, &l, 10 * S, S / 100, 3 * S);
        assert_eq!(n, 9);
        let (o, _) = State::Fixed { window: 10, count: 3 }.take(Algorithm::FixedWindow, &l, 10 * S + S / 4, 1);
        assert!(!o.allowed);
        assert_eq!(o.retry_after_ns, 3 * S / 4);
    }

    #[test]
    fn sliding_window_smooths_the_boundary() {
        let l = limit(10, 1, 10);
        // 10 at the end of window 10, then at 25% into window 11 the
        // previous window still weighs 75%: 7.5 used, 2 more allowed.
        let s = State::Sliding { window: 10, current: 10, previous: 0 };
        let now = 11 * S + S / 4;
        let (o, next) = s.take(Algorithm::SlidingWindow, &l, now, 1);
        assert!(o.allowed);
        assert_eq!(o.remaining, 1);
        let (o2, next2) = next.expect("stored").take(Algorithm::SlidingWindow, &l, now, 1);
        assert!(o2.allowed && o2.remaining == 0);
        let (o3, _) = next2.expect("stored").take(Algorithm::SlidingWindow, &l, now, 1);
        assert!(!o3.allowed);
        assert!(o3.retry_after_ns > 0 && o3.retry_after_ns <= S, "{}", o3.retry_after_ns);
        // Sustained flood settles at the limit.
        let n = admitted(Algorithm::SlidingWindow, &l, 20 * S, S / 1000, 10 * S);
        // The weighted estimate runs slightly ahead of the true count, so a
        // flood settles a little under the limit, never over it.
        assert!((85..=100).contains(&n), "{n}");
    }

    #[test]
    fn idle_buckets_can_be_taken_over() {
        let l = limit(10, 1, 10);
        assert_eq!(State::Tat(5 * S).idle_in(&l, 6 * S), 0);
        assert_eq!(State::Tat(6 * S).idle_in(&l, 5 * S), S);
        assert_eq!(State::Fixed { window: 4, count: 2 }.idle_in(&l, 6 * S), 0);
        assert!(State::Fixed { window: 6, count: 2 }.idle_in(&l, 6 * S) > 0);
        assert_eq!(State::Sliding { window: 4, current: 2, previous: 1 }.idle_in(&l, 6 * S), 0);
        assert!(State::Sliding { window: 5, current: 2, previous: 0 }.idle_in(&l, 6 * S) > 0);
    }

    #[test]
    fn encoding_round_trips_and_garbage_is_empty() {
        for s in [State::Tat(123), State::Fixed { window: 9, count: 4 }, State::Sliding { window: 9, current: 4, previous: 7 }, State::Empty] {
            let fp = if s == State::Empty { 0 } else { 0xdead_beef };
            assert_eq!(State::decode(&s.encode(fp)), (fp, s));
        }
        assert_eq!(State::decode(b""), (0, State::Empty));
        assert_eq!(State::decode(&[9u8; 40]), (0, State::Empty));
        let mut bad_tag = State::Tat(1).encode(7);
        bad_tag[1] = 200;
        assert_eq!(State::decode(&bad_tag), (0, State::Empty));
        assert_eq!(State::decode(&State::Tat(1).encode(7)[..20]), (0, State::Empty));
    }

    #[test]
    fn changed_algorithm_starts_afresh() {
        let l = limit(1, 1, 1);
        let (o, _) = State::Tat(u64::MAX / 2).take(Algorithm::FixedWindow, &l, S, 1);
        assert!(o.allowed);
    }
}
