//! Leases: a global rule's share of its limit, reserved from the counter
//! service for one window and spent locally, so that no request waits on
//! Redis.
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
}

/// An ask counts as lost after this long without an answer.
pub const ASK_EXPIRES_NS: u64 = 500_000_000;

impl Lease {
    /// The lease as of `now`: when the window ended, the next window's
    /// reservation becomes current and the counts move back one window.
    pub fn roll(mut self, now: u64, per: u64) -> Lease {
        if self.window == 0 || now < self.ends_at {
            return self;
        }
        let passed = now.saturating_sub(self.ends_at).checked_div(per).unwrap_or(0).saturating_add(1);
        let had_next = self.next_units > 0 || self.next_used > 0;
        self.seen_before = if passed == 1 { self.seen } else { 0 };
        self.used_before = if passed == 1 { self.used } else { 0 };
        self.seen = 0;
        // A debt the service never covered stays with its window.
        self.owed = 0;
        if passed == 1 && had_next {
            self.window = self.window.saturating_add(1);
            self.units = self.next_units;
            self.used = self.next_used;
            self.ends_at = self.ends_at.saturating_add(per);
        } else {
            self = Lease { seen_before: self.seen_before, used_before: self.used_before, asked_at: self.asked_at, ..Lease::default() };
        }
        self.next_units = 0;
        self.next_used = 0;
        self
    }

    /// A request wants `cost` units at `now`; `credit`: a quiet key's
    /// request may be admitted on credit (see `quiet`).
    pub fn spend(self, now: u64, limit: &Limit, cost: u64, credit: bool) -> (Step, Lease) {
        let mut l = self.roll(now, limit.per.nanos());
        let cost = u32::try_from(cost).unwrap_or(u32::MAX);
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
                    l.units = l.next_units;
                    l.used_before = l.used;
                    l.used = l.next_used;
                    l.next_units = 0;
                    l.next_used = 0;
                    l.seen_before = l.seen;
                    l.seen = 0;
                } else {
                    l.units = 0;
                    l.used = 0;
                }
                l.window = a.window;
                l.credit(a.granted);
                l.used = l.used.max(a.used);
                l.ends_at = now.saturating_add(a.ends_in_ns);
            }
        } else if l.window == 0 {
            l.window = a.window.saturating_sub(1);
            l.ends_at = now.saturating_add(a.starts_in_ns);
            l.next_units = a.granted;
            l.next_used = a.used;
        } else if l.window.checked_add(1) == Some(a.window) {
            l.next_units = l.next_units.saturating_add(a.granted);
            l.next_used = l.next_used.max(a.used);
        }
        l
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

    /// What to ask the service for now, if anything: `(units, next_window)`.
    /// A refill is due when the units left would last less than half of the
    /// rest of the window at the observed rate, or when units are owed; it
    /// asks for the rest of the window plus an eighth (plus the debt),
    /// never more than the global budget left. In the
    /// second half of a window it asks for the next one: a key with a
    /// request or two a window then finds its next window reserved rather
    /// than waiting for a call in it.
    pub fn want(&self, now: u64, limit: &Limit) -> Option<(u32, bool)> {
        let per = limit.per.nanos().max(1);
        if self.asked_at != 0 && now.saturating_sub(self.asked_at) < ASK_EXPIRES_NS {
            return None;
        }
        let rate = self.rate(now, per);
        let cap = |n: u64| u32::try_from(n.min(limit.requests)).unwrap_or(u32::MAX).max(1);
        if self.window == 0 {
            return Some((cap(rate.saturating_add(rate / 8).saturating_add(u64::from(self.owed))), false));
        }
        let left_ns = self.ends_at.saturating_sub(now);
        let needed = mul_div(rate, left_ns, per);
        let budget = limit.requests.saturating_sub(u64::from(self.used));
        let (units, owed) = (u64::from(self.units), u64::from(self.owed));
        if (units.saturating_mul(2) < needed || owed > 0) && budget > 0 {
            let want = needed.saturating_add(rate / 8).saturating_add(1).saturating_add(owed);
            return Some((cap(want.saturating_sub(units).min(budget)), false));
        }
        if left_ns <= per / 2 && self.next_units == 0 && self.next_used == 0 {
            return Some((cap(rate.saturating_add(rate / 8).saturating_add(1)), true));
        }
        None
    }

    /// What to reserve in the next window now, if nothing is yet: for
    /// requests that will wait for it.
    pub fn want_next(&self, now: u64, limit: &Limit) -> Option<u32> {
        let per = limit.per.nanos().max(1);
        let asked = self.asked_at != 0 && now.saturating_sub(self.asked_at) < ASK_EXPIRES_NS;
        if asked || self.window == 0 || self.next_units > 0 || self.next_used > 0 {
            return None;
        }
        let rate = self.rate(now, per);
        u32::try_from(rate.saturating_add(rate / 8).saturating_add(1).min(limit.requests)).ok()
    }

    /// Nanoseconds until the lease holds nothing worth keeping.
    /// An ask still in flight counts too: its answer's units belong here.
    pub fn idle_in(&self, now: u64, per: u64) -> u64 {
        let asking = if self.asked_at == 0 { 0 } else { self.asked_at.saturating_add(ASK_EXPIRES_NS).saturating_sub(now) };
        if self.window == 0 {
            return asking;
        }
        let end = if self.next_units > 0 || self.next_used > 0 { self.ends_at.saturating_add(per) } else { self.ends_at };
        end.saturating_sub(now).max(asking)
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        for v in [self.window, self.ends_at, self.asked_at] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [self.units, self.used, self.next_units, self.next_used, self.seen, self.seen_before, self.owed, self.used_before] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// Length of `encode_into`'s output.
    pub const ENCODED_LEN: usize = 3 * 8 + 8 * 4;

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
        Answer { granted, used, window, starts_in_ns: 0, ends_in_ns, blocked_ns: 0 }
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
        lease = lease.grant(late, &l, &Answer { granted: 100, used: 100, window: 11, starts_in_ns: S / 5, ends_in_ns: 6 * S / 5, blocked_ns: 0 });
        let (step, rolled) = lease.spend(start + S + 1, &l, 1, true);
        assert_eq!(step, Step::Spent);
        assert_eq!((rolled.window, rolled.units, rolled.seen_before), (11, 99, 100));
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
        assert_eq!(far.roll(u64::MAX, 2).window, u64::MAX);
        let last = Lease { window: u64::MAX, ends_at: now + week, ..Lease::default() };
        let answer = Answer { granted: 1, used: 1, window: u64::MAX, starts_in_ns: 5, ends_in_ns: 5, blocked_ns: 0 };
        assert_eq!(last.grant(now, &l, &answer).next_units, 0, "no window after the last");
        let tiny = Limit { requests: 10, per: Span::from_nanos(1), burst: 10 };
        assert_eq!(Lease { window: 1, ends_at: 1, seen: u32::MAX, ..Lease::default() }.want_next(0, &tiny), Some(10));
    }

    #[test]
    fn encoding_round_trips() {
        let lease = Lease { window: 1, units: 2, used: 3, ends_at: 4, next_units: 5, next_used: 6, seen: 7, seen_before: 8, asked_at: 9, owed: 10, used_before: 11 };
        let mut out = Vec::new();
        lease.encode_into(&mut out);
        assert_eq!(out.len(), Lease::ENCODED_LEN);
        assert_eq!(Lease::decode(&out), Some(lease));
        assert_eq!(Lease::decode(&out[..10]), None);
        let earlier = Lease::decode(&out[..48]).expect("a lease of an earlier version");
        assert_eq!(earlier, Lease { owed: 0, used_before: 0, ..lease });
    }
}
