//! Windows reserved ahead: a grant for the next window that also covers
//! the windows after it (a span), and what an instance gives back of its
//! reservations once the key's traffic there slows down or leaves.

use super::{Answer, Lease};
use crate::bucket::mul_div;

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

impl Lease {
    /// Windows reserved past the next one.
    pub fn spans(&self) -> bool {
        self.window != 0 && self.ahead_last >= self.window.saturating_add(2)
    }

    /// Records the windows past the next that a grant for the next window
    /// also covers.
    pub(super) fn span(&mut self, a: &Answer) {
        if a.windows > 1 {
            self.ahead_units = a.granted;
            self.ahead_used = a.used;
            self.ahead_last = a.window.saturating_add(u64::from(a.windows).saturating_sub(1));
        }
    }

    pub(super) fn drop_span(&mut self) {
        self.ahead_units = 0;
        self.ahead_used = 0;
        self.ahead_last = 0;
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
}
