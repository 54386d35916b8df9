//! Fixed-window lease arithmetic: the one definition of what a reservation does
//! to a counter. [`MemoryStore`](crate::MemoryStore) runs it directly; the Lua
//! script in [`store::script`](crate::store) mirrors it line for line, and the
//! contract tests hold both to the same results.
//!
//! A counter remembers one window index `w` with `used` units reserved in it and
//! `next_used` units reserved in `w + 1`. When time reaches `w + 1` the next
//! count becomes the current one; further on, both are forgotten. If the clock
//! ever reads earlier than `w` (a Redis failover to a node whose clock is
//! behind), the counter keeps serving window `w`, so no window is granted twice.
//!
//! A key (rule, id) may also be *blocked* until some time ([`block_until`]):
//! while it is, every reservation for it is a read (`want` taken as 0), and the
//! reply says for how long the block still holds ([`blocked_ms`]).

/// The stored state of one counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Window index the counts refer to.
    pub window: u64,
    /// Units reserved in `window`.
    pub used: u64,
    /// Units reserved in `window + 1`.
    pub next_used: u64,
}

/// One reservation request against a counter.
#[derive(Clone, Copy, Debug)]
pub struct Ask {
    /// Server time, milliseconds since the Unix epoch.
    pub now_ms: u64,
    /// Window length (≥ 1).
    pub window_ms: u64,
    /// Units allowed per window.
    pub limit: u64,
    /// Units wanted; 0 only reads.
    pub want: u64,
    /// Reserve in the window that starts next instead of the current one.
    pub next: bool,
}

/// What a reservation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Units granted (0..=want).
    pub granted: u64,
    /// Units reserved in the target window after this reservation.
    pub used: u64,
    /// Index of the target window.
    pub window: u64,
}

/// Applies `ask` to the counter state `slot` (None: no state). Returns the new
/// state when it changed (only when units were granted) and the outcome.
pub fn reserve(slot: Option<Slot>, ask: &Ask) -> (Option<Slot>, Outcome) {
    let window_ms = ask.window_ms.max(1);
    let mut current = ask.now_ms / window_ms;
    let (mut used, mut next_used) = match slot {
        Some(s) if s.window == current => (s.used, s.next_used),
        Some(s) if s.window.saturating_add(1) == current => (s.next_used, 0),
        Some(s) if s.window > current => {
            current = s.window;
            (s.used, s.next_used)
        }
        _ => (0, 0),
    };
    let target_used = if ask.next { &mut next_used } else { &mut used };
    let granted = ask.want.min(ask.limit.saturating_sub(*target_used));
    *target_used += granted;
    let after = *target_used;
    let outcome = Outcome {
        granted,
        used: after,
        window: current + u64::from(ask.next),
    };
    let changed = (granted > 0).then_some(Slot {
        window: current,
        used,
        next_used,
    });
    (changed, outcome)
}

/// Milliseconds since the epoch at which a counter in state `slot` may be
/// forgotten: the end of the latest window it holds units for, plus a margin of
/// max(1 s, window / 10).
pub fn expires_at_ms(slot: &Slot, window_ms: u64) -> u64 {
    let latest = slot.window + u64::from(slot.next_used > 0);
    (latest + 1)
        .saturating_mul(window_ms)
        .saturating_add(margin_ms(window_ms))
}

/// Expiry margin after a window ends: max(1 s, window / 10).
pub fn margin_ms(window_ms: u64) -> u64 {
    (window_ms / 10).max(1000)
}

/// Ms a key whose block ends at `until_ms` (None: no block) stays blocked
/// at `now_ms`; 0 when it is not blocked.
pub fn blocked_ms(until_ms: Option<u64>, now_ms: u64) -> u64 {
    until_ms.map_or(0, |until| until.saturating_sub(now_ms))
}

/// When a key's block ends after blocking it for `for_ms` at `now_ms`, given
/// when its current block ends (None: none): the later of the two, so a block
/// is never shortened.
pub fn block_until(until_ms: Option<u64>, now_ms: u64, for_ms: u64) -> u64 {
    let wanted = now_ms.saturating_add(for_ms);
    until_ms.map_or(wanted, |until| until.max(wanted))
}

/// (starts_in_ms, ends_in_ms) of window `window` seen at `now_ms`.
pub fn timing(window: u64, window_ms: u64, now_ms: u64) -> (u64, u64) {
    let start = window.saturating_mul(window_ms);
    let end = start.saturating_add(window_ms);
    (start.saturating_sub(now_ms), end.saturating_sub(now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(now_ms: u64, want: u64, next: bool) -> Ask {
        Ask {
            now_ms,
            window_ms: 1000,
            limit: 10,
            want,
            next,
        }
    }

    #[test]
    fn grants_up_to_the_limit_then_nothing() {
        let (s, o) = reserve(None, &ask(5_500, 7, false));
        assert_eq!(
            o,
            Outcome {
                granted: 7,
                used: 7,
                window: 5
            }
        );
        let (s, o) = reserve(s, &ask(5_600, 7, false));
        assert_eq!(
            o,
            Outcome {
                granted: 3,
                used: 10,
                window: 5
            }
        );
        let s = s.expect("state changed");
        let (unchanged, o) = reserve(Some(s), &ask(5_700, 7, false));
        assert_eq!((unchanged, o.granted, o.used), (None, 0, 10));
    }

    #[test]
    fn zero_want_reads_without_writing() {
        let slot = Slot {
            window: 5,
            used: 4,
            next_used: 0,
        };
        let (changed, o) = reserve(Some(slot), &ask(5_100, 0, false));
        assert_eq!((changed, o.granted, o.used), (None, 0, 4));
    }

    #[test]
    fn next_window_shifts_in_when_time_reaches_it() {
        let (s, o) = reserve(None, &ask(5_900, 6, true));
        assert_eq!(
            o,
            Outcome {
                granted: 6,
                used: 6,
                window: 6
            }
        );
        assert_eq!(timing(6, 1000, 5_900), (100, 1100));
        let (_, o) = reserve(s, &ask(6_000, 10, false));
        assert_eq!(
            o,
            Outcome {
                granted: 4,
                used: 10,
                window: 6
            }
        );
        let (_, o) = reserve(s, &ask(7_000, 10, false));
        assert_eq!(o.granted, 10, "two windows later everything is forgotten");
    }

    #[test]
    fn a_clock_running_backwards_keeps_the_stored_window() {
        let slot = Slot {
            window: 9,
            used: 10,
            next_used: 0,
        };
        let (_, o) = reserve(Some(slot), &ask(8_999, 5, false));
        assert_eq!(
            o,
            Outcome {
                granted: 0,
                used: 10,
                window: 9
            }
        );
    }

    #[test]
    fn blocks_only_grow_and_count_down() {
        assert_eq!(block_until(None, 1_000, 300), 1_300);
        assert_eq!(block_until(Some(1_300), 1_100, 50), 1_300, "not shortened");
        assert_eq!(block_until(Some(1_300), 1_100, 500), 1_600, "lengthened");
        assert_eq!(blocked_ms(Some(1_300), 1_100), 200);
        assert_eq!(blocked_ms(Some(1_300), 1_300), 0);
        assert_eq!(blocked_ms(Some(1_300), 1_400), 0);
        assert_eq!(blocked_ms(None, 1_400), 0);
    }

    #[test]
    fn expiry_covers_the_latest_window_plus_margin() {
        let slot = Slot {
            window: 5,
            used: 1,
            next_used: 0,
        };
        assert_eq!(expires_at_ms(&slot, 1000), 7_000);
        let slot = Slot {
            window: 5,
            used: 1,
            next_used: 1,
        };
        assert_eq!(expires_at_ms(&slot, 1000), 8_000);
        assert_eq!(margin_ms(60_000), 6_000);
    }
}
