//! What to ask the counter service for: the expected rate from the last
//! two windows, a refill for the rest of the window, a reservation of the
//! next one, and a top-up of a window whose budget was thought gone.

use super::Lease;
use crate::bucket::mul_div;
use crate::policy::Limit;

impl Lease {
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
        let per = limit.window_ns(now);
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
        let (units, owed) = (self.held_here(), u64::from(self.owed));
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
        let per = limit.window_ns(now);
        if self.asking(now) || self.window == 0 || self.has_next() {
            return None;
        }
        let rate = self.rate(now, per);
        u32::try_from(rate.saturating_add(rate / 8).saturating_add(1).min(limit.requests)).ok()
    }

    /// For an instance that holds nothing in a window whose budget it last
    /// heard was gone, while it reserves the next window: the units it
    /// would spend in the rest of this one at its rate, asked in the same
    /// call, in case an instance the traffic left gave some back.
    pub fn top_up(&self, now: u64, limit: &Limit) -> Option<u32> {
        let per = limit.window_ns(now);
        let left = self.ends_at.saturating_sub(now);
        if self.window == 0 || self.held_here() > 0 || left < per / 8 {
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
    pub(super) fn rate(&self, now: u64, per: u64) -> u64 {
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
    pub(crate) fn contested(&self, limit: &Limit) -> bool {
        u64::from(self.used.max(self.used_before)) >= limit.requests
    }
}
