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
//!
//! This file holds the lease, its roll-over, spending, refunds, the
//! service's answers and the stored form; `ask` sizes what to ask the
//! service for, and `ahead` keeps the windows reserved ahead and gives
//! them back when the key's traffic leaves.

use crate::little_endian::{u32_at, u64_at};
use crate::policy::Limit;

mod ahead;
mod ask;

pub use ahead::{GiveBack, IDLE_EXPECTED};

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
    /// Units of `window` lent to workers' memories (see
    /// `allowance::lease`): out of `units`, still this instance's to spend.
    pub held: u32,
}

/// An ask counts as lost after this long without an answer.
pub const ASK_EXPIRES_NS: u64 = 500_000_000;

impl Lease {
    /// The lease as of `now`: when the window ended, the reservation made
    /// ahead for the window now current (if any) becomes current and the
    /// counts move back one window. `per` is the length of the window
    /// holding `now` (a calendar month's own length), exact for the window
    /// right after the lease's (the service's answers set the end of any
    /// other).
    pub fn roll(mut self, now: u64, per: u64) -> Lease {
        if self.window == 0 || now < self.ends_at {
            return self;
        }
        let passed = now.saturating_sub(self.ends_at).checked_div(per).unwrap_or(0).saturating_add(1);
        self.seen_before = if passed == 1 { self.seen } else { 0 };
        self.used_before = if passed == 1 { self.used } else { 0 };
        self.seen = 0;
        self.arrived = 0;
        // Units lent in the window that ended are spent or lost with it.
        self.held = 0;
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

    /// A request wants `cost` units at `now`; `credit`: a quiet key's
    /// request may be admitted on credit (see `quiet`).
    pub fn spend(self, now: u64, limit: &Limit, cost: u64, credit: bool) -> (Step, Lease) {
        let mut l = self.roll(now, limit.window_ns(now));
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
        self.roll(now, limit.window_ns(now)).counting(cost)
    }

    /// The lease with `cost` more requests counted in this window.
    pub fn counting(self, cost: u64) -> Lease {
        Lease { seen: self.seen.saturating_add(u32::try_from(cost).unwrap_or(u32::MAX)), ..self }
    }

    /// Units this instance may still spend in `window`: those in the lease
    /// and those lent to workers.
    pub fn held_here(&self) -> u64 {
        u64::from(self.units).saturating_add(u64::from(self.held))
    }

    /// The key's global budget left in `window` as far as this instance
    /// knows: what the instances have not reserved (nor owe), and what it
    /// holds itself.
    pub fn global_left(&self, limit: &Limit) -> u64 {
        let reserved = u64::from(self.used).saturating_add(u64::from(self.owed));
        limit.requests.saturating_sub(reserved).saturating_add(self.held_here())
    }

    /// Lends `units` to a worker's memory (see `allowance::lease`).
    pub fn lend(self, units: u32) -> Lease {
        let units = units.min(self.units);
        Lease { units: self.units.saturating_sub(units), held: self.held.saturating_add(units), ..self }
    }

    /// A worker's loan comes back: `lent` units of `window`, of which it
    /// admitted `spent` requests (counted now, in the window they were
    /// admitted in); the rest return to the lease while that window lasts.
    pub fn repay(mut self, now: u64, limit: &Limit, window: u64, lent: u32, spent: u32) -> Lease {
        // Into the window the loan was for, before it rolls (if it ended).
        if self.window == window && window != 0 {
            self.held = self.held.saturating_sub(lent);
            self.units = self.units.saturating_add(lent.saturating_sub(spent));
            self.seen = self.seen.saturating_add(spent);
            self.arrived = self.arrived.saturating_add(spent);
        } else if window != 0 && window.checked_add(1) == Some(self.window) {
            self.seen_before = self.seen_before.saturating_add(spent);
        }
        self.roll(now, limit.window_ns(now))
    }

    /// Gives back a unit spent by a request that another rule denied (or
    /// that waits to be decided again), and takes the request out of
    /// `seen`: a rule's demand counts only the requests the other rules
    /// admit, so that an instance whose requests another rule refuses
    /// does not reserve this rule's budget for them (see docs/global.md,
    /// *Several rules*).
    pub fn refund(self, now: u64, limit: &Limit, window: u64, cost: u64) -> Lease {
        let mut l = self.roll(now, limit.window_ns(now));
        let cost = u32::try_from(cost).unwrap_or(u32::MAX);
        if l.window == window {
            l.seen = l.seen.saturating_sub(cost);
            if window != 0 || l.owed > 0 {
                l.credit(cost);
            }
        }
        l
    }

    /// A request already admitted costs `cost` more (its response said
    /// so): the units come out of the lease, and what the lease lacks is
    /// owed, paid first by its next grant in this window (so the service
    /// counts it; a debt still unpaid when the window ends stays with it,
    /// as credit's does).
    pub fn charge(self, now: u64, limit: &Limit, cost: u64) -> Lease {
        let mut l = self.roll(now, limit.window_ns(now));
        let cost = u32::try_from(cost).unwrap_or(u32::MAX);
        let from_units = l.units.min(cost);
        l.units = l.units.saturating_sub(from_units);
        l.owed = l.owed.saturating_add(cost.saturating_sub(from_units));
        l.seen = l.seen.saturating_add(cost);
        l
    }

    /// Applies the service's answer, received at `now`.
    pub fn grant(self, now: u64, limit: &Limit, a: &Answer) -> Lease {
        let mut l = self.roll(now, limit.window_ns(now));
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
                    l.held = 0;
                    if l.ahead_last < a.window.saturating_add(2) {
                        l.drop_span();
                    }
                } else {
                    l.units = 0;
                    l.held = 0;
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
        out.extend_from_slice(&self.held.to_le_bytes());
    }

    /// Length of `encode_into`'s output.
    pub const ENCODED_LEN: usize = 4 * 8 + 12 * 4;

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
            held: u32_at(b, 76).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests;
