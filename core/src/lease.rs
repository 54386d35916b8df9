//! Leases: a global rule's share of its limit, reserved from the counter
//! service a window at a time (a steady key's reservation ahead may span
//! several windows, see `limiter::spans`) and spent locally, so that no
//! request waits on Redis.
//!
//! The counter service counts fixed windows (`floor(server_ms / per)`) and
//! never reserves more than the limit in one, so the instances together can
//! never admit more than the limit per window. Each instance keeps, per key,
//! one `Lease` in a shared-data slot (all workers spend from it with
//! compare-and-swap): the units left for the current window, what the
//! service said was reserved in it (`used`), and a reservation for the next
//! window made ahead of time. Requests counted per window (`seen`) size the
//! next ask: an instance asks for what it expects to spend, never more than
//! the global budget left, so unused units (the only source of
//! under-admission) stay few. A request counts only if the request's other
//! rules admit it (or if this rule refuses it): units of one rule reserved
//! for requests another rule refuses would sit unused at this instance
//! while other instances, whose requests that rule admits, find none. A quiet key's request that finds no units
//! may be admitted on credit (`owed`), paid by the next grant.
//!
//! Everything here is arithmetic on values; the filter does the callouts.

use crate::bucket::mul_div;
use crate::le::{u32_at, u64_at};
use crate::policy::Limit;

/// What a request found in the lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// One unit was spent.
    Spent,
    /// The global budget of this window is gone.
    Exhausted { retry_after_ns: u64 },
    /// No unit here, and the service may still have some: ask it.
    Missing,
}

/// One answer of the counter service for a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    pub granted: u32,
    /// Units reserved in that window, all instances, after this grant.
    pub used: u32,
    /// The service's window index.
    pub window: u64,
    /// 0 for the current window; else nanoseconds until it starts.
    pub starts_in_ns: u64,
    /// Nanoseconds until that window ends.
    pub ends_in_ns: u64,
    /// Nanoseconds the key stays blocked by an upstream's limit, learnt by
    /// some instance (0: not blocked).
    pub blocked_ns: u64,
    /// Windows the grant covers, from `window` on (the same units in each).
    pub windows: u32,
    /// Units reserved in the service's current window, all instances, as
    /// of this answer (so an answer for the next window still tells
    /// whether the current one's budget was all taken).
    pub current_used: u32,
}

/// A key's lease, as stored in its slot. `window == 0` means unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lease {
    pub window: u64,
    pub units: u32,
    pub used: u32,
    /// Local wall-clock ns at which `window` ends.
    pub ends_at: u64,
    pub next_units: u32,
    pub next_used: u32,
    /// Requests that wanted a unit in `window` and in the window before.
    pub seen: u32,
    pub seen_before: u32,
    /// When a refill was asked for and not yet answered (0: none).
    pub asked_at: u64,
    /// Units admitted on credit in `window`, not yet covered by a grant.
    pub owed: u32,
    /// All instances' reservations in the window before, as last known.
    pub used_before: u32,
    /// A span reserved ahead in one ask: `ahead_units` units in each window
    /// from `window + 2` to `ahead_last` (the one after `window` is in
    /// `next_units`), with `ahead_used` reserved in all as last known.
    pub ahead_units: u32,
    pub ahead_used: u32,
    pub ahead_last: u64,
    /// Requests that reached the lease in `window`, whatever came of them
    /// (`seen` leaves out those another rule refused): none means the
    /// key's traffic is not here (see `give_back`).
    pub arrived: u32,
}

/// Units reserved ahead that an instance gives back (see
/// [`Lease::give_back`]): `units` in each of `windows` windows from window
/// `from`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GiveBack {
    pub units: u32,
    pub from: u64,
    pub windows: u32,
}

/// A key is idle at an instance when none of at least this many requests
/// expected there came (see `Lease::give_back`).
pub const IDLE_EXPECTED: u64 = 8;

/// An ask counts as lost after this long without an answer.
pub const ASK_EXPIRES_NS: u64 = 500_000_000;

impl Lease {
    /// The lease as of `now`: when the window ended, the reservation made
    /// ahead for the window now current (if any) becomes current and the
    /// counts move back one window.
    pub fn roll(mut self, now: u64, per: u64) -> Lease {
        if self.window == 0 || now < self.ends_at {
            return self;
        }
        let passed = now.saturating_sub(self.ends_at).checked_div(per).unwrap_or(0).saturating_add(1);
        self.seen_before = if passed == 1 { self.seen } else { 0 };
        self.used_before = if passed == 1 { self.used } else { 0 };
        self.seen = 0;
        self.arrived = 0;
        // A debt the service never covered stays with its window.
        self.owed = 0;
        let target = self.window.saturating_add(passed);
        match self.reserved(target) {
            Some((units, used)) => {
                let (next_units, next_used) = self.reserved(target.saturating_add(1)).unwrap_or((0, 0));
                self.window = target;
                self.units = units;
                self.used = used;
                self.ends_at = self.ends_at.saturating_add(passed.saturating_mul(per));
                self.next_units = next_units;
                self.next_used = next_used;
                if self.ahead_last < target.saturating_add(2) {
                    self.drop_span();
                }
            }
            _ => self = Lease { seen_before: self.seen_before, used_before: self.used_before, asked_at: self.asked_at, ..Lease::default() },
        }
        self
    }

    /// What was reserved ahead for window `w`, `(units, used)`, if
    /// anything was (a reservation that was granted nothing still tells
    /// that the window's budget is gone).
    fn reserved(&self, w: u64) -> Option<(u32, u32)> {
        if self.window.checked_add(1) == Some(w) {
            return self.has_next().then_some((self.next_units, self.next_used));
        }
        let span = self.window.saturating_add(2)..=self.ahead_last;
        (span.contains(&w) && (self.ahead_units > 0 || self.ahead_used > 0)).then_some((self.ahead_units, self.ahead_used))
    }

    fn drop_span(&mut self) {
        self.ahead_units = 0;
        self.ahead_used = 0;
        self.ahead_last = 0;
    }

    /// Windows reserved past the next one.
    pub fn spans(&self) -> bool {
        self.window != 0 && self.ahead_last >= self.window.saturating_add(2)
    }

    /// A request wants `cost` units at `now`; `credit`: a quiet key's
    /// request may be admitted on credit (see `quiet`).
    pub fn spend(self, now: u64, limit: &Limit, cost: u64, credit: bool) -> (Step, Lease) {
        let mut l = self.roll(now, limit.per.nanos());
        let cost = u32::try_from(cost).unwrap_or(u32::MAX);
        l.arrived = l.arrived.saturating_add(1);
        let step = if l.units >= cost {
            l.units = l.units.saturating_sub(cost);
            Step::Spent
        } else if l.window != 0 && u64::from(l.used) >= limit.requests {
            Step::Exhausted { retry_after_ns: l.ends_at.saturating_sub(now).max(1) }
        } else if credit && l.quiet(limit, cost) {
            l.owed = l.owed.saturating_add(cost);
            Step::Spent
        } else {
            // Counted once it is decided again with its own units (see
            // `spend_carried`): until then another rule may refuse it.
            return (Step::Missing, l);
        };
        l.seen = l.seen.saturating_add(cost);
        (step, l)
    }

    /// Whether a request may be admitted on credit: nothing is owed yet,
    /// and the key's reservations, all instances together, were at most
    /// half of the limit in this window and the one before (as last
    /// known), with room for this request. A quiet key's request then
    /// does not wait for the counter service; the refill it triggers pays
    /// the debt. The limit can only be passed if a key's traffic jumps
    /// from under half of it to over all of it within one window, and then
    /// by at most one request per instance.
    fn quiet(&self, limit: &Limit, cost: u32) -> bool {
        let used = u64::from(self.used.max(self.used_before));
        self.owed == 0 && used.saturating_add(u64::from(cost)).saturating_mul(2) <= limit.requests
    }

    /// Adds units granted for the current window, paying the debt first.
    fn credit(&mut self, granted: u32) {
        let pay = granted.min(self.owed);
        self.owed = self.owed.saturating_sub(pay);
        self.units = self.units.saturating_add(granted.saturating_sub(pay));
    }

    /// A request spends units the service granted to it alone (its own
    /// wait's answer): nothing comes out of the lease, but it counts now.
    pub fn spend_carried(self, now: u64, limit: &Limit, cost: u64) -> Lease {
        self.roll(now, limit.per.nanos()).counting(cost)
    }

    /// The lease with `cost` more requests counted in this window.
    pub fn counting(self, cost: u64) -> Lease {
        Lease { seen: self.seen.saturating_add(u32::try_from(cost).unwrap_or(u32::MAX)), ..self }
    }

    /// Gives back a unit spent by a request that another rule denied (or
    /// that waits to be decided again), and takes the request out of
    /// `seen`: a rule's demand counts only the requests the other rules
    /// admit, so that an instance whose requests another rule refuses
    /// does not reserve this rule's budget for them (see docs/global.md,
    /// *Several rules*).
    pub fn refund(self, now: u64, limit: &Limit, window: u64, cost: u64) -> Lease {
        let mut l = self.roll(now, limit.per.nanos());
        let cost = u32::try_from(cost).unwrap_or(u32::MAX);
        if l.window == window {
            l.seen = l.seen.saturating_sub(cost);
            if window != 0 || l.owed > 0 {
                l.credit(cost);
            }
        }
        l
    }

    /// Applies the service's answer, received at `now`.
    pub fn grant(self, now: u64, limit: &Limit, a: &Answer) -> Lease {
        let per = limit.per.nanos();
        let mut l = self.roll(now, per);
        l.asked_at = 0;
        if a.starts_in_ns == 0 {
            if l.window == a.window {
                l.credit(a.granted);
                l.used = l.used.max(a.used);
            } else if a.window > l.window {
                // A debt taken while the window was unknown is this
                // window's; an older window's is not.
                if l.window != 0 {
                    l.owed = 0;
                }
                if l.window != 0 && l.window.checked_add(1) == Some(a.window) {
                    // Our clock lags the service's: what we held as the
                    // next window is the service's current one.
                    let (next_units, next_used) = l.reserved(a.window.saturating_add(1)).unwrap_or((0, 0));
                    l.units = l.next_units;
                    l.used_before = l.used;
                    l.used = l.next_used;
                    l.next_units = next_units;
                    l.next_used = next_used;
                    l.seen_before = l.seen;
                    l.seen = 0;
                    if l.ahead_last < a.window.saturating_add(2) {
                        l.drop_span();
                    }
                } else {
                    l.units = 0;
                    l.used = 0;
                    l.next_units = 0;
                    l.next_used = 0;
                    l.drop_span();
                }
                l.window = a.window;
                l.credit(a.granted);
                l.used = l.used.max(a.used);
                l.ends_at = now.saturating_add(a.ends_in_ns);
            }
        } else if l.window == 0 {
            l.window = a.window.saturating_sub(1);
            l.ends_at = now.saturating_add(a.starts_in_ns);
            l.used = a.current_used;
            l.next_units = a.granted;
            l.next_used = a.used;
            l.span(a);
        } else if l.window.checked_add(1) == Some(a.window) {
            l.used = l.used.max(a.current_used);
            l.next_units = l.next_units.saturating_add(a.granted);
            l.next_used = l.next_used.max(a.used);
            l.span(a);
        }
        l
    }

    /// Records the windows past the next that a grant for the next window
    /// also covers.
    fn span(&mut self, a: &Answer) {
        if a.windows > 1 {
            self.ahead_units = a.granted;
            self.ahead_used = a.used;
            self.ahead_last = a.window.saturating_add(u64::from(a.windows).saturating_sub(1));
        }
    }

    /// What to give back of a span reserved ahead, and the lease without
    /// it: `[current window, windows ahead]`.
    ///
    /// - Once a quarter of the window has passed, when the key's pace here
    ///   would spend less than a quarter of what each window ahead holds
    ///   (a key gone quieter), every window after the current one is given
    ///   back; the next requests reserve ahead again at their own rate.
    /// - When the key is idle here (no request reached the lease in this
    ///   window where the window before's pace expected at least
    ///   [`IDLE_EXPECTED`]: the traffic moved to another instance, or
    ///   another rule refuses it before it gets here), the current window's
    ///   units are given back too, at once, for the instance that can use
    ///   them (see [`Lease::top_up`]).
    ///
    /// So no budget stays reserved at an instance the traffic left.
    pub fn give_back(self, now: u64, per: u64) -> ([Option<GiveBack>; 2], Lease) {
        let mut l = self.roll(now, per);
        if l.window == 0 {
            return ([None, None], l);
        }
        let elapsed = per.saturating_sub(l.ends_at.saturating_sub(now));
        let idle = l.arrived == 0 && mul_div(u64::from(l.seen_before), elapsed, per) >= IDLE_EXPECTED;
        // Requests that another rule refuses here still come here: this
        // rule's units may serve them once that rule's budget does.
        let pace = mul_div(u64::from(l.seen.max(l.arrived)), per, elapsed.max(1));
        let slower = l.spans() && elapsed >= per / 4 && pace.saturating_mul(4) < u64::from(l.ahead_units);
        if !idle && !slower {
            return ([None, None], l);
        }
        let mut out = [None, None];
        if idle && l.units > 0 {
            out[0] = Some(GiveBack { units: l.units, from: l.window, windows: 1 });
            l.units = 0;
        }
        // Never more than is held in every window given back.
        let (units, windows) =
            if l.spans() { (l.next_units.min(l.ahead_units), u32::try_from(l.ahead_last.saturating_sub(l.window)).unwrap_or(0)) } else { (l.next_units, 1) };
        if units > 0 && windows > 0 {
            out[1] = Some(GiveBack { units, from: l.window.saturating_add(1), windows });
        }
        l.next_units = l.next_units.saturating_sub(units);
        l.drop_span();
        (out, l)
    }

    /// For an instance that holds nothing in a window whose budget it last
    /// heard was gone, while it reserves the next window: the units it
    /// would spend in the rest of this one at its rate, asked in the same
    /// call, in case an instance the traffic left gave some back.
    pub fn top_up(&self, now: u64, limit: &Limit) -> Option<u32> {
        let per = limit.per.nanos().max(1);
        let left = self.ends_at.saturating_sub(now);
        if self.window == 0 || self.units > 0 || left < per / 8 {
            return None;
        }
        let needed = mul_div(self.rate(now, per), left, per);
        let want = needed.saturating_add(needed / 8).saturating_add(1).min(limit.requests);
        (needed > 0).then(|| u32::try_from(want).unwrap_or(u32::MAX))
    }

    /// Requests expected in a whole window, from the last two windows: the
    /// previous window's count, the count over the last whole window
    /// (sliding), and, once half of the window has passed, the current
    /// window's pace. A young window's pace is not extrapolated: one early
    /// request would read as ten times the rate, and every instance asking
    /// that much would take the budget the others need (denials far under
    /// the limit).
    fn rate(&self, now: u64, per: u64) -> u64 {
        let (seen, before) = (u64::from(self.seen), u64::from(self.seen_before));
        if self.window == 0 {
            return seen.max(before).max(1);
        }
        let elapsed = per.saturating_sub(self.ends_at.saturating_sub(now)).clamp(1, per);
        let sliding = seen.saturating_add(mul_div(before, per.saturating_sub(elapsed), per));
        let pace = if elapsed >= per / 2 { mul_div(seen, per, elapsed) } else { 0 };
        sliding.max(pace).max(before).max(1)
    }

    /// Whether the key's whole budget was reserved in this window or the
    /// one before, as last heard: the instances together want more than
    /// the limit.
    fn contested(&self, limit: &Limit) -> bool {
        u64::from(self.used.max(self.used_before)) >= limit.requests
    }

    /// What to ask the service for now, if anything: `(units, next_window)`.
    /// A refill is due when the units left would last less than half of the
    /// rest of the window at the observed rate, or when units are owed; it
    /// asks for the rest of the window plus an eighth (plus the debt),
    /// never more than the global budget left. When the budget is
    /// contested, the eighth is left out: the margin of the instances
    /// served first would be units the others lack. In the
    /// second half of a window it asks for the next one (the rate and one,
    /// no margin): a key with a request or two a window then finds its
    /// next window reserved rather than waiting for a call in it.
    pub fn want(&self, now: u64, limit: &Limit) -> Option<(u32, bool)> {
        let per = limit.per.nanos().max(1);
        if self.asking(now) {
            return None;
        }
        let rate = self.rate(now, per);
        let margin = if self.contested(limit) { 0 } else { rate / 8 };
        let cap = |n: u64| u32::try_from(n.min(limit.requests)).unwrap_or(u32::MAX).max(1);
        if self.window == 0 {
            return Some((cap(rate.saturating_add(margin).saturating_add(u64::from(self.owed))), false));
        }
        let left_ns = self.ends_at.saturating_sub(now);
        let needed = mul_div(rate, left_ns, per);
        let budget = limit.requests.saturating_sub(u64::from(self.used));
        let (units, owed) = (u64::from(self.units), u64::from(self.owed));
        if (units.saturating_mul(2) < needed || owed > 0) && budget > 0 {
            let want = needed.saturating_add(margin).saturating_add(1).saturating_add(owed);
            return Some((cap(want.saturating_sub(units).min(budget)), false));
        }
        // Ahead without the margin: it would be reserved for every window
        // of a span, and the first instance to ask (which does not learn
        // that the others found the budget gone) would strand it.
        // Refills within the window cover a rate that grows.
        if left_ns <= per / 2 && !self.has_next() {
            // Contested: what the last whole window wanted here, exactly
            // (a rounded-up estimate of a small limit's share strands a
            // unit or two a window, a tenth of a limit of 20).
            let ahead = if self.contested(limit) && self.seen_before > 0 { u64::from(self.seen_before) } else { rate.saturating_add(1) };
            return Some((cap(ahead), true));
        }
        None
    }

    /// What to reserve in the next window now, if nothing is yet: for
    /// requests that will wait for it.
    pub fn want_next(&self, now: u64, limit: &Limit) -> Option<u32> {
        let per = limit.per.nanos().max(1);
        if self.asking(now) || self.window == 0 || self.has_next() {
            return None;
        }
        let rate = self.rate(now, per);
        u32::try_from(rate.saturating_add(rate / 8).saturating_add(1).min(limit.requests)).ok()
    }

    /// Whether the window after `window` was reserved (a reservation that
    /// was granted nothing still tells that its budget is gone).
    pub fn has_next(&self) -> bool {
        self.next_units > 0 || self.next_used > 0
    }

    /// Whether an ask of the lease is in flight at `now` (asked, not yet
    /// answered, and not expired: a lost ask lets the lease ask again).
    pub fn asking(&self, now: u64) -> bool {
        self.asked_at != 0 && now.saturating_sub(self.asked_at) < ASK_EXPIRES_NS
    }

    /// Nanoseconds until the lease holds nothing worth keeping.
    /// An ask still in flight counts too: its answer's units belong here.
    pub fn idle_in(&self, now: u64, per: u64) -> u64 {
        let asking = if self.asked_at == 0 { 0 } else { self.asked_at.saturating_add(ASK_EXPIRES_NS).saturating_sub(now) };
        if self.window == 0 {
            return asking;
        }
        let end = if self.has_next() { self.ends_at.saturating_add(per) } else { self.ends_at };
        end.saturating_sub(now).max(asking)
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        for v in [self.window, self.ends_at, self.asked_at] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [self.units, self.used, self.next_units, self.next_used, self.seen, self.seen_before, self.owed, self.used_before] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [self.ahead_units, self.ahead_used] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.ahead_last.to_le_bytes());
        out.extend_from_slice(&self.arrived.to_le_bytes());
    }

    /// Length of `encode_into`'s output.
    pub const ENCODED_LEN: usize = 4 * 8 + 11 * 4;

    pub fn decode(b: &[u8]) -> Option<Lease> {
        Some(Lease {
            window: u64_at(b, 0)?,
            ends_at: u64_at(b, 8)?,
            asked_at: u64_at(b, 16)?,
            units: u32_at(b, 24)?,
            used: u32_at(b, 28)?,
            next_units: u32_at(b, 32)?,
            next_used: u32_at(b, 36)?,
            seen: u32_at(b, 40)?,
            seen_before: u32_at(b, 44)?,
            // Absent from leases stored by earlier versions.
            owed: u32_at(b, 48).unwrap_or(0),
            used_before: u32_at(b, 52).unwrap_or(0),
            ahead_units: u32_at(b, 56).unwrap_or(0),
            ahead_used: u32_at(b, 60).unwrap_or(0),
            ahead_last: u64_at(b, 64).unwrap_or(0),
            arrived: u32_at(b, 72).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::duration::Span;
    use crate::testing::{per_second as limit, S};

    fn answer(granted: u32, used: u32, window: u64, ends_in_ns: u64) -> Answer {
        Answer { granted, used, window, starts_in_ns: 0, ends_in_ns, blocked_ns: 0, windows: 1, current_used: 0 }
    }

    #[test]
    fn spends_what_was_granted_then_asks() {
        let l = limit(100);
        let now = 10 * S;
        // A busy key (60 of 100 reserved in the window before) waits.
        let busy = Lease { used_before: 60, ..Lease::default() };
        let (step, lease) = busy.spend(now, &l, 1, true);
        assert_eq!(step, Step::Missing);
        assert_eq!(lease.want(now, &l), Some((1, false)));
        let mut lease = lease.grant(now, &l, &answer(3, 63, 10, S));
        for _ in 0..3 {
            let (step, next) = lease.spend(now, &l, 1, true);
            assert_eq!(step, Step::Spent);
            lease = next;
        }
        assert_eq!(lease.spend(now, &l, 1, true).0, Step::Missing);
    }

    #[test]
    fn a_quiet_key_spends_on_credit_and_the_grant_pays_the_debt() {
        let l = limit(100);
        let now = 10 * S;
        // A key never seen: its first request does not wait.
        let (step, lease) = Lease::default().spend(now, &l, 1, true);
        assert_eq!(step, Step::Spent);
        assert_eq!(lease.owed, 1);
        assert_eq!(Lease::default().spend(now, &l, 1, false).0, Step::Missing, "without credit it waits");
        // One debt at a time: the next request waits for the refill.
        assert_eq!(lease.spend(now, &l, 1, true).0, Step::Missing);
        let (want, next) = lease.want(now, &l).expect("the debt is asked for");
        assert!(!next && want >= 1, "{want}");
        let lease = lease.grant(now, &l, &answer(3, 3, 10, S));
        assert_eq!((lease.owed, lease.units), (0, 2), "the grant paid the debt first");
        // A grant short of the debt leaves it owed: no more credit.
        let short = Lease { window: 10, ends_at: now + S, owed: 2, ..Lease::default() }.grant(now, &l, &answer(1, 100, 10, S));
        assert_eq!((short.owed, short.units), (1, 0));
        assert!(matches!(short.spend(now, &l, 1, true).0, Step::Exhausted { .. }));
    }

    #[test]
    fn credit_needs_a_quiet_window_and_the_one_before() {
        let l = limit(100);
        let now = 10 * S;
        let known = Lease { window: 10, ends_at: now + S / 2, ..Lease::default() };
        assert_eq!(Lease { used: 49, ..known }.spend(now, &l, 1, true).0, Step::Spent);
        assert_eq!(Lease { used: 50, ..known }.spend(now, &l, 1, true).0, Step::Missing);
        assert_eq!(Lease { used_before: 50, ..known }.spend(now, &l, 1, true).0, Step::Missing);
        assert_eq!(Lease { used: 10, ..known }.spend(now, &l, 41, true).0, Step::Missing, "room for the whole cost");
        // The window's reservations become the one before's.
        let rolled = Lease { used: 70, next_used: 5, next_units: 5, ..known }.roll(now + S / 2, S);
        assert_eq!((rolled.used, rolled.used_before), (5, 70));
        let unknown = Lease { used: 70, ..known }.roll(now + S / 2, S);
        assert_eq!((unknown.window, unknown.used_before), (0, 70));
        assert_eq!(unknown.spend(now + S / 2, &l, 1, true).0, Step::Missing);
    }

    #[test]
    fn a_debt_is_refunded_or_forgotten_with_its_window() {
        let l = limit(100);
        let now = 10 * S;
        let (_, owing) = Lease { window: 10, ends_at: now + S / 2, ..Lease::default() }.spend(now, &l, 1, true);
        assert_eq!(owing.owed, 1);
        // Denied by another rule: the debt is cancelled, not turned into a unit.
        let refunded = owing.refund(now, &l, 10, 1);
        assert_eq!((refunded.owed, refunded.units), (0, 0));
        // A debt the service never covered stays with its window.
        assert_eq!(owing.roll(now + S / 2, S).owed, 0);
        // Taken while the window was unknown, it is the answer's window's.
        let (_, fresh) = Lease::default().spend(now, &l, 1, true);
        let refunded = fresh.refund(now, &l, 0, 1);
        assert_eq!((refunded.owed, refunded.units), (0, 0));
    }

    #[test]
    fn demand_counts_the_requests_the_other_rules_admit() {
        let l = limit(100);
        let now = 10 * S;
        let lease = Lease::default().grant(now, &l, &answer(5, 5, 10, S));
        let (_, spent) = lease.spend(now, &l, 1, false);
        assert_eq!(spent.seen, 1);
        // Another rule refused it: its unit and its count come back.
        let refunded = spent.refund(now, &l, 10, 1);
        assert_eq!((refunded.units, refunded.seen), (5, 0));
        // This rule refuses it: it counts.
        let gone = Lease { window: 10, ends_at: now + S, used: 100, ..Lease::default() };
        assert_eq!(gone.spend(now, &l, 1, false).1.seen, 1);
        // It waits for units: it counts once decided with them.
        let busy = Lease { window: 10, ends_at: now + S, used: 60, ..Lease::default() };
        let (step, waiting) = busy.spend(now, &l, 1, false);
        assert_eq!((step, waiting.seen), (Step::Missing, 0));
        assert_eq!(waiting.spend_carried(now, &l, 1).seen, 1);
        // A refund for a window gone leaves the counts alone.
        let later = spent.refund(now + S, &l, 10, 1);
        assert_eq!((later.seen, later.seen_before), (0, 1));
    }

    #[test]
    fn an_exhausted_window_denies_without_asking() {
        let l = limit(10);
        let now = 10 * S + S / 2;
        let lease = Lease::default().grant(now, &l, &answer(2, 10, 10, S / 2));
        let (_, lease) = lease.spend(now, &l, 1, true);
        let (_, lease) = lease.spend(now, &l, 1, true);
        let (step, _) = lease.spend(now, &l, 1, true);
        assert_eq!(step, Step::Exhausted { retry_after_ns: S / 2 });
    }

    #[test]
    fn the_next_window_is_reserved_ahead_and_takes_over() {
        let l = limit(100);
        let start = 10 * S;
        let mut lease = Lease::default().grant(start, &l, &answer(100, 100, 10, S));
        // 100 requests over the window; in its second half it wants the next.
        for i in 0..100 {
            lease = lease.spend(start + i * S / 100, &l, 1, true).1;
        }
        let late = start + 4 * S / 5;
        let (want, next) = lease.want(late, &l).expect("asks ahead");
        assert!(next);
        assert!((100..=120).contains(&want), "{want}");
        lease = lease.grant(
            late,
            &l,
            &Answer { granted: 100, used: 100, window: 11, starts_in_ns: S / 5, ends_in_ns: 6 * S / 5, blocked_ns: 0, windows: 1, current_used: 0 },
        );
        let (step, rolled) = lease.spend(start + S + 1, &l, 1, true);
        assert_eq!(step, Step::Spent);
        assert_eq!((rolled.window, rolled.units, rolled.seen_before), (11, 99, 100));
    }

    #[test]
    fn a_span_reserved_ahead_becomes_current_window_by_window() {
        let l = limit(100);
        let start = 10 * S;
        let lease = Lease::default().grant(start, &l, &answer(40, 100, 10, S));
        let late = start + 3 * S / 4;
        let span = Answer { granted: 40, used: 90, window: 11, starts_in_ns: S / 4, ends_in_ns: 5 * S / 4, blocked_ns: 0, windows: 4, current_used: 0 };
        let lease = lease.grant(late, &l, &span);
        assert!(lease.spans());
        assert_eq!((lease.next_units, lease.ahead_units, lease.ahead_last), (40, 40, 14));
        // Windows 11 to 14 each start with 40 units, and nothing is asked
        // ahead while the next window is held.
        let mut at = lease;
        for w in 11..=14u64 {
            let now = start + (w - 10) * S + S / 10;
            let (step, next) = at.spend(now, &l, 1, false);
            assert_eq!(step, Step::Spent, "window {w}");
            assert_eq!((next.window, next.units, next.used), (w, 39, 90));
            assert_eq!(next.next_units, if w < 14 { 40 } else { 0 }, "window {w}");
            assert_eq!(next.want(start + (w - 10) * S + 3 * S / 4, &l).map(|(_, ahead)| ahead), if w < 14 { None } else { Some(true) }, "window {w}");
            at = next;
        }
        assert!(!at.spans());
        // Quiet for two windows within the span: the third still holds its units.
        let skipped = lease.roll(start + 3 * S + 1, S);
        assert_eq!((skipped.window, skipped.units, skipped.next_units), (13, 40, 40));
        assert_eq!(lease.roll(start + 6 * S, S).window, 0, "past the span: nothing known");
    }

    #[test]
    fn a_span_the_traffic_left_is_given_back() {
        let l = limit(100);
        let start = 10 * S;
        let span = Answer { granted: 40, used: 90, window: 11, starts_in_ns: S / 4, ends_in_ns: 5 * S / 4, blocked_ns: 0, windows: 4, current_used: 0 };
        let lease = Lease::default().grant(start, &l, &answer(40, 100, 10, S)).grant(start + 3 * S / 4, &l, &span);
        let in_11 = start + S;
        // Early in a window nothing is judged, unless the key is idle.
        let kept = Lease { seen_before: 7, ..lease.roll(in_11, S) };
        assert_eq!(kept.give_back(in_11 + S / 5, S).0, [None, None]);
        let (back, after) = lease.give_back(in_11 + S / 5, S);
        assert_eq!(back, [None, None], "nothing was expected yet");
        assert_eq!(after.units, 40);
        // A quarter in without a request: windows 12 to 14 go back.
        let (back, after) = kept.give_back(in_11 + S / 4, S);
        assert_eq!(back, [None, Some(GiveBack { units: 40, from: 12, windows: 3 })]);
        assert_eq!((after.window, after.units, after.next_units), (11, 40, 0));
        assert!(!after.spans());
        assert_eq!(after.give_back(in_11 + S / 2, S).0, [None, None], "once");
        // The traffic left: 100 in the window before, none in 0.1 s of this
        // one. The current window's units go back too, at once.
        let left = Lease { seen_before: 100, ..lease.roll(in_11, S) };
        let (back, after) = left.give_back(in_11 + S / 10, S);
        assert_eq!(back, [Some(GiveBack { units: 40, from: 11, windows: 1 }), Some(GiveBack { units: 40, from: 12, windows: 3 })]);
        assert_eq!((after.units, after.next_units), (0, 0));
        assert_eq!(left.give_back(in_11 + S / 20, S).0, [None, None], "5 expected: not yet idle");
        // Requests that come but another rule refuses: not idle, not slower.
        let refused = (0..30).fold(left, |l, i| {
            let (_, spent) = l.spend(in_11 + i * S / 300, &l_limit(), 1, false);
            spent.refund(in_11 + i * S / 300, &l_limit(), 11, 1)
        });
        assert_eq!((refused.seen, refused.arrived), (0, 30));
        assert_eq!(refused.give_back(in_11 + S / 2, S).0, [None, None]);
        // At a pace that spends a quarter of a window's units it keeps them.
        let mut busy = lease;
        for i in 0..12 {
            busy = busy.spend(in_11 + i * S / 40, &l, 1, false).1;
        }
        assert_eq!(busy.give_back(in_11 + 3 * S / 10, S).0, [None, None], "40 a window, of 40 held");
        assert_eq!(busy.give_back(in_11 + 9 * S / 10, S).0, [None, None], "12 in 0.9 s: over a quarter");
        let slow = lease.spend(in_11, &l, 1, false).1;
        assert!(slow.give_back(in_11 + S / 2, S).0[1].is_some(), "1 in 0.5 s: under a quarter");
        // What is given back never exceeds what is held in every window.
        let short = Lease { next_units: 10, ..lease.roll(in_11, S) };
        assert_eq!(short.give_back(in_11 + S / 2, S).0[1].map(|b| b.units), Some(10));
    }

    fn l_limit() -> Limit {
        limit(100)
    }

    #[test]
    fn an_instance_without_units_tops_up_with_its_reservation_ahead() {
        let l = limit(100);
        let now = 10 * S;
        let starving = Lease { window: 10, ends_at: now + S / 2, used: 100, seen: 150, ..Lease::default() };
        // 150 in half a window: 300 a window, 150 for the half left.
        assert_eq!(starving.top_up(now, &l), Some(100));
        assert_eq!(Lease { units: 1, ..starving }.top_up(now, &l), None, "it holds units");
        assert_eq!(starving.top_up(now + S / 2 - S / 10, &l), None, "too late in the window");
        assert_eq!(Lease::default().top_up(now, &l), None, "no window known");
    }

    #[test]
    fn refills_never_exceed_the_budget_left() {
        let l = limit(100);
        let now = 10 * S;
        // Busy: 80 seen in the first fifth of the window, 5 units left,
        // the service had 90 reserved in all.
        let lease = Lease { window: 10, units: 5, used: 90, ends_at: now + 4 * S / 5, seen: 80, ..Lease::default() };
        let (want, next) = lease.want(now, &l).expect("refill");
        assert!(!next);
        assert_eq!(want, 10, "all the budget left, no more");
        let asked = Lease { asked_at: now, ..lease };
        assert_eq!(asked.want(now + 1, &l), None, "one ask in flight at a time");
        assert!(asked.want(now + ASK_EXPIRES_NS, &l).is_some(), "a lost ask expires");
    }

    #[test]
    fn a_window_without_reservation_starts_empty() {
        let l = limit(100);
        let lease = Lease { window: 10, units: 7, used: 50, ends_at: 11 * S, seen: 9, ..Lease::default() };
        let rolled = lease.roll(11 * S + 1, S);
        assert_eq!((rolled.window, rolled.units, rolled.seen_before), (0, 0, 9));
        let far = lease.roll(15 * S, S);
        assert_eq!(far.seen_before, 0);
        assert_eq!(lease.spend(11 * S + 1, &l, 1, true).0, Step::Missing);
    }

    #[test]
    fn refund_returns_the_unit_to_its_window() {
        let l = limit(100);
        let lease = Lease::default().grant(S, &l, &answer(1, 1, 1, S));
        let (_, spent) = lease.spend(S, &l, 1, true);
        assert_eq!(spent.units, 0);
        assert_eq!(spent.refund(S, &l, 1, 1).units, 1);
        assert_eq!(spent.refund(S, &l, 2, 1).units, 0, "another window's unit is not ours");
    }

    #[test]
    fn hostile_counts_and_windows_do_not_wrap() {
        // A week's window (the longest) and counts at the top of u32:
        // `seen * per` is far past u64.
        let week = crate::duration::MAX_NS;
        let l = Limit { requests: u64::MAX, per: Span::from_nanos(week), burst: u64::MAX };
        let now = 10 * week;
        let lease = Lease { window: 10, ends_at: now + week / 4, seen: u32::MAX, seen_before: u32::MAX, units: 0, ..Lease::default() };
        // Three quarters of the window passed: the pace is seen * 4 / 3.
        let pace = u64::from(u32::MAX) * 4 / 3;
        assert_eq!(lease.rate(now, week), pace);
        // A quarter of the window left at that pace, an eighth more, and one.
        assert_eq!(lease.want(now, &l), Some((u32::try_from(pace / 4 + pace / 8 + 1).unwrap(), false)));
        // Rolled past u64::MAX: no wrap back to the start of time.
        let far = Lease { window: u64::MAX, ends_at: u64::MAX - 1, next_units: 1, ..Lease::default() };
        let rolled = far.roll(u64::MAX, 2).window;
        assert!(rolled == u64::MAX || rolled == 0, "{rolled}: the last window, or unknown");
        let last = Lease { window: u64::MAX, ends_at: now + week, ..Lease::default() };
        let answer = Answer { granted: 1, used: 1, window: u64::MAX, starts_in_ns: 5, ends_in_ns: 5, blocked_ns: 0, windows: 1, current_used: 0 };
        assert_eq!(last.grant(now, &l, &answer).next_units, 0, "no window after the last");
        let tiny = Limit { requests: 10, per: Span::from_nanos(1), burst: 10 };
        assert_eq!(Lease { window: 1, ends_at: 1, seen: u32::MAX, ..Lease::default() }.want_next(0, &tiny), Some(10));
    }

    #[test]
    fn encoding_round_trips() {
        let lease = Lease {
            window: 1,
            units: 2,
            used: 3,
            ends_at: 4,
            next_units: 5,
            next_used: 6,
            seen: 7,
            seen_before: 8,
            asked_at: 9,
            owed: 10,
            used_before: 11,
            ahead_units: 12,
            ahead_used: 13,
            ahead_last: 14,
            arrived: 15,
        };
        let mut out = Vec::new();
        lease.encode_into(&mut out);
        assert_eq!(out.len(), Lease::ENCODED_LEN);
        assert_eq!(Lease::decode(&out), Some(lease));
        assert_eq!(Lease::decode(&out[..10]), None);
        let earlier = Lease::decode(&out[..48]).expect("a lease of an earlier version");
        assert_eq!(earlier, Lease { owed: 0, used_before: 0, ahead_units: 0, ahead_used: 0, ahead_last: 0, arrived: 0, ..lease });
        let before_spans = Lease::decode(&out[..56]).expect("a lease stored before spans");
        assert_eq!(before_spans, Lease { ahead_units: 0, ahead_used: 0, ahead_last: 0, arrived: 0, ..lease });
    }
}
