//! Fixed-window lease arithmetic: the one definition of what a reservation or
//! a release does to a counter. [`MemoryStore`](crate::MemoryStore) runs it
//! directly; the Lua script in [`store::script`](crate::store) mirrors it line
//! for line, and the contract tests hold both to the same results.
//!
//! A counter remembers one window index `w` and the units reserved in each of
//! the [`SPAN`] windows `w ..= w + 4` ([`Slot::counts`]). When time moves on by
//! `d` windows the counts shift down by `d`: the count of `w + d` becomes the
//! current one and those of windows now past are forgotten. If the clock ever
//! reads earlier than `w` (a Redis failover to a node whose clock is behind),
//! the counter keeps serving window `w`, so no window is granted twice.
//!
//! A reservation ([`reserve_span`]) grants the same number of units in
//! `windows` consecutive windows from the target one (the current window, or
//! the next with `next`): as many as every one of them still has room for, so
//! that holding that many in each window never makes any exceed the limit. A
//! release ([`release`]) gives units back in windows that are not over yet.
//!
//! A counter's windows are `floor(now_ms / window_ms)`, or with a
//! [`Calendar`] its days or months ([`index_at`], [`start_ms`]).
//!
//! A key (rule, id) may also be *blocked* until some time ([`block_until`]):
//! while it is, every reservation for it is a read (`want` taken as 0), and the
//! reply says for how long the block still holds ([`blocked_ms`]).

/// Number of windows a counter holds counts for: the current one and the four
/// after it.
pub const SPAN: usize = 5;

/// Most consecutive windows one lease may cover (the contract's bound).
pub const MAX_WINDOWS: u64 = sluice_wire::MAX_WINDOWS;

pub use sluice_wire::Calendar;

/// The stored state of one counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Window index the counts start at.
    pub window: u64,
    /// `counts[i]`: units reserved in window `window + i`.
    pub counts: [u64; SPAN],
}

/// One reservation request against a counter.
#[derive(Clone, Copy, Debug)]
pub struct Ask {
    /// Server time, milliseconds since the Unix epoch.
    pub now_ms: u64,
    /// Window length (≥ 1).
    pub window_ms: u64,
    /// Calendar windows instead of `window_ms` ones.
    pub calendar: Option<Calendar>,
    /// Units allowed per window.
    pub limit: u64,
    /// Units wanted; 0 only reads.
    pub want: u64,
    /// Reserve in the window that starts next instead of the current one.
    pub next: bool,
}

/// One release against a counter: `units` given back in each of `windows`
/// consecutive windows from window index `from`.
#[derive(Clone, Copy, Debug)]
pub struct Release {
    /// Server time, milliseconds since the Unix epoch.
    pub now_ms: u64,
    /// Window length (≥ 1).
    pub window_ms: u64,
    /// Calendar windows instead of `window_ms` ones.
    pub calendar: Option<Calendar>,
    /// Units given back per window (a count never goes below 0).
    pub units: u64,
    /// Index of the first window to give units back in.
    pub from: u64,
    /// Number of consecutive windows (1..=[`MAX_WINDOWS`]).
    pub windows: u64,
}

/// What a reservation or release did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Units granted (0..=want) in each window covered; 0 for a release.
    pub granted: u64,
    /// For a reservation, the largest count among the windows covered after
    /// it (with one window: the target window's count); for a release, the
    /// current window's count after it.
    pub used: u64,
    /// Index of the target window (the first one covered); for a release,
    /// the current window.
    pub window: u64,
    /// The current window's count after it (all instances): a filter that
    /// reserved the next window learns from it whether the current one's
    /// budget was all taken.
    pub current: u64,
}

/// The window holding `now_ms`: `floor(now_ms / window_ms)`, or the
/// calendar's day or month.
pub fn index_at(now_ms: u64, window_ms: u64, calendar: Option<Calendar>) -> u64 {
    match calendar {
        Some(c) => c.index(now_ms),
        None => now_ms / window_ms.max(1),
    }
}

/// When window `w` starts, ms since the epoch.
pub fn start_ms(w: u64, window_ms: u64, calendar: Option<Calendar>) -> u64 {
    match calendar {
        Some(c) => c.start_ms(w),
        None => w.saturating_mul(window_ms),
    }
}

/// The current window and its counts onward, seen at `now_ms`, from the
/// stored `slot` (None: no state).
fn shifted(
    slot: Option<Slot>,
    now_ms: u64,
    window_ms: u64,
    calendar: Option<Calendar>,
) -> (u64, [u64; SPAN]) {
    let mut current = index_at(now_ms, window_ms, calendar);
    let mut counts = [0; SPAN];
    if let Some(s) = slot {
        if s.window > current {
            current = s.window;
        }
        let d = current - s.window;
        for (i, count) in counts.iter_mut().enumerate() {
            let from = usize::try_from(d).ok().and_then(|d| d.checked_add(i));
            if let Some(&stored) = from.and_then(|j| s.counts.get(j)) {
                *count = stored;
            }
        }
    }
    (current, counts)
}

/// Applies `ask` to the counter state `slot` (None: no state) in the target
/// window alone. Returns the new state when it changed (only when units were
/// granted) and the outcome.
pub fn reserve(slot: Option<Slot>, ask: &Ask) -> (Option<Slot>, Outcome) {
    reserve_span(slot, ask, 1)
}

/// Applies `ask` to the counter state `slot` (None: no state) in `windows`
/// consecutive windows from the target one (clamped to those the counter
/// holds): granted = min(want, room left in the fullest of them), added to
/// each. Returns the new state when it changed (only when units were
/// granted) and the outcome.
pub fn reserve_span(slot: Option<Slot>, ask: &Ask, windows: u64) -> (Option<Slot>, Outcome) {
    let (current, mut counts) = shifted(slot, ask.now_ms, ask.window_ms, ask.calendar);
    let first = usize::from(ask.next);
    let windows = usize::try_from(windows.max(1)).unwrap_or(SPAN);
    let last = first.saturating_add(windows).min(SPAN);
    let span = &mut counts[first..last];
    let room = span
        .iter()
        .map(|count| ask.limit.saturating_sub(*count))
        .min()
        .unwrap_or(0);
    let granted = ask.want.min(room);
    for count in span.iter_mut() {
        *count += granted;
    }
    let used = span.iter().copied().max().unwrap_or(0);
    let outcome = Outcome {
        granted,
        used,
        window: current + u64::from(ask.next),
        current: counts[0],
    };
    let changed = (granted > 0).then_some(Slot {
        window: current,
        counts,
    });
    (changed, outcome)
}

/// Applies `release` to the counter state `slot` (None: no state): in each
/// window `from ..` `from + windows`, the count drops by `units` (not below
/// 0); windows already over are skipped and those past the counter's span
/// hold nothing. Returns the new state when it changed (only when some count
/// dropped) and the outcome (nothing granted; the current window's count).
pub fn release(slot: Option<Slot>, release: &Release) -> (Option<Slot>, Outcome) {
    let (current, mut counts) = shifted(slot, release.now_ms, release.window_ms, release.calendar);
    let mut changed = false;
    for j in 0..release.windows {
        let window = release.from.saturating_add(j);
        let Some(offset) = window.checked_sub(current) else {
            continue;
        };
        let count = usize::try_from(offset).ok().and_then(|i| counts.get_mut(i));
        if let Some(count) = count {
            let back = release.units.min(*count);
            if back > 0 {
                *count -= back;
                changed = true;
            }
        }
    }
    let outcome = Outcome {
        granted: 0,
        used: counts[0],
        window: current,
        current: counts[0],
    };
    let changed = changed.then_some(Slot {
        window: current,
        counts,
    });
    (changed, outcome)
}

/// Milliseconds since the epoch at which a counter in state `slot` may be
/// forgotten: the end of the latest window it holds units for (at least
/// `slot.window`), plus a margin of max(1 s, window / 10) (with a calendar,
/// `window_ms` is its longest window: a month's counter lives to 3.1 days
/// after its month ends).
pub fn expires_at_ms(slot: &Slot, window_ms: u64, calendar: Option<Calendar>) -> u64 {
    let ahead = slot
        .counts
        .iter()
        .rposition(|count| *count > 0)
        .unwrap_or(0);
    let latest = slot.window.saturating_add(ahead as u64);
    start_ms(latest.saturating_add(1), window_ms, calendar).saturating_add(margin_ms(window_ms))
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
pub fn timing(window: u64, window_ms: u64, calendar: Option<Calendar>, now_ms: u64) -> (u64, u64) {
    let start = start_ms(window, window_ms, calendar);
    let end = start_ms(window.saturating_add(1), window_ms, calendar);
    (start.saturating_sub(now_ms), end.saturating_sub(now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(now_ms: u64, want: u64, next: bool) -> Ask {
        Ask {
            now_ms,
            window_ms: 1000,
            calendar: None,
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
                window: 5,
                current: 7
            }
        );
        let (s, o) = reserve(s, &ask(5_600, 7, false));
        assert_eq!(
            o,
            Outcome {
                granted: 3,
                used: 10,
                window: 5,
                current: 10
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
            counts: [4, 0, 0, 0, 0],
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
                window: 6,
                current: 0
            }
        );
        assert_eq!(timing(6, 1000, None, 5_900), (100, 1100));
        let (_, o) = reserve(s, &ask(6_000, 10, false));
        assert_eq!(
            o,
            Outcome {
                granted: 4,
                used: 10,
                window: 6,
                current: 10
            }
        );
        let (_, o) = reserve(s, &ask(7_000, 10, false));
        assert_eq!(o.granted, 10, "two windows later everything is forgotten");
    }

    #[test]
    fn a_clock_running_backwards_keeps_the_stored_window() {
        let slot = Slot {
            window: 9,
            counts: [10, 0, 0, 0, 0],
        };
        let (_, o) = reserve(Some(slot), &ask(8_999, 5, false));
        assert_eq!(
            o,
            Outcome {
                granted: 0,
                used: 10,
                window: 9,
                current: 10
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
            counts: [1, 0, 0, 0, 0],
        };
        assert_eq!(expires_at_ms(&slot, 1000, None), 7_000);
        let slot = Slot {
            window: 5,
            counts: [1, 1, 0, 0, 0],
        };
        assert_eq!(expires_at_ms(&slot, 1000, None), 8_000);
        let slot = Slot {
            window: 5,
            counts: [0, 0, 0, 3, 0],
        };
        assert_eq!(
            expires_at_ms(&slot, 1000, None),
            10_000,
            "the latest non-zero"
        );
        let slot = Slot {
            window: 5,
            counts: [0; SPAN],
        };
        assert_eq!(expires_at_ms(&slot, 1000, None), 7_000, "all given back");
        assert_eq!(margin_ms(60_000), 6_000);
    }

    fn give_back(now_ms: u64, units: u64, from: u64, windows: u64) -> Release {
        Release {
            now_ms,
            window_ms: 1000,
            calendar: None,
            units,
            from,
            windows,
        }
    }

    #[test]
    fn calendar_months_roll_at_their_first_day() {
        use sluice_wire::calendar::{Unit, DAY_MS, MONTH_MS};
        let month = Some(Calendar {
            unit: Unit::Month,
            offset_min: 0,
        });
        // 2024-02-29T23:00Z: the last hour of a leap February.
        let feb29 = 19_782 * DAY_MS + 23 * 3_600_000;
        let at = |now_ms, want| Ask {
            now_ms,
            window_ms: MONTH_MS,
            calendar: month,
            limit: 100,
            want,
            next: false,
        };
        let (s, o) = reserve(None, &at(feb29, 60));
        assert_eq!((o.granted, o.window), (60, 54 * 12 + 1));
        let s = s.expect("granted");
        assert_eq!(timing(o.window, MONTH_MS, month, feb29), (0, 3_600_000));
        assert_eq!(
            expires_at_ms(&s, MONTH_MS, month),
            feb29 + 3_600_000 + MONTH_MS / 10,
            "until 3.1 days after the month"
        );
        let (_, o) = reserve(Some(s), &at(feb29, 60));
        assert_eq!(o.granted, 40, "the month's budget");
        let (_, o) = reserve(Some(s), &at(feb29 + 3_600_000, 100));
        assert_eq!((o.granted, o.window), (100, 54 * 12 + 2), "March is new");
        let (_, o) = reserve(Some(s), &at(feb29, 10).clone_next());
        assert_eq!((o.granted, o.window), (10, 54 * 12 + 2));
    }

    impl Ask {
        fn clone_next(&self) -> Ask {
            Ask {
                next: true,
                ..*self
            }
        }
    }

    #[test]
    fn a_span_grants_uniformly_what_the_fullest_window_allows() {
        let slot = Slot {
            window: 5,
            counts: [2, 7, 1, 0, 9],
        };
        let (s, o) = reserve_span(Some(slot), &ask(5_100, 6, false), 3);
        assert_eq!(
            o,
            Outcome {
                granted: 3,
                used: 10,
                window: 5,
                current: 5
            },
            "window 6 has room for 3"
        );
        assert_eq!(s.expect("changed").counts, [5, 10, 4, 0, 9]);
        let (s, o) = reserve_span(Some(slot), &ask(5_100, 6, true), 4);
        assert_eq!(
            (o.granted, o.used, o.window),
            (1, 10, 6),
            "window 9 is fullest"
        );
        assert_eq!(s.expect("changed").counts, [2, 8, 2, 1, 10]);
        let (s, o) = reserve_span(Some(slot), &ask(5_100, 0, false), 4);
        assert_eq!(
            (s, o.granted, o.used),
            (None, 0, 7),
            "a read reports the fullest"
        );
        let (s, o) = reserve_span(Some(slot), &ask(5_100, 5, false), 1);
        assert_eq!(o, reserve(Some(slot), &ask(5_100, 5, false)).1);
        assert_eq!(s.expect("changed").counts, [7, 7, 1, 0, 9]);
    }

    #[test]
    fn a_span_beyond_the_counter_is_clamped() {
        let (s, o) = reserve_span(None, &ask(5_100, 4, true), 9);
        assert_eq!((o.granted, o.used, o.window), (4, 4, 6));
        assert_eq!(s.expect("changed").counts, [0, 4, 4, 4, 4]);
        let (_, o) = reserve_span(None, &ask(5_100, 4, false), 0);
        assert_eq!((o.granted, o.used), (4, 4), "0 windows counts as 1");
    }

    #[test]
    fn counts_shift_down_as_time_moves_on() {
        let (s, _) = reserve_span(None, &ask(5_500, 3, false), 4);
        let s = s.expect("changed");
        assert_eq!((s.window, s.counts), (5, [3, 3, 3, 3, 0]));
        for (now_ms, left) in [(6_000, 7), (7_999, 7), (8_000, 7), (9_000, 10)] {
            let (_, o) = reserve(Some(s), &ask(now_ms, 10, false));
            assert_eq!(o.granted, left, "at {now_ms}");
        }
        let (moved, o) = reserve_span(Some(s), &ask(7_100, 1, false), 3);
        assert_eq!((o.granted, o.used, o.window), (1, 4, 7));
        let moved = moved.expect("changed");
        assert_eq!((moved.window, moved.counts), (7, [4, 4, 1, 0, 0]));
        let far = Slot {
            window: 5,
            counts: [1, 1, 1, 1, 1],
        };
        let (moved, _) = reserve(Some(far), &ask(u64::MAX, 1, false));
        assert_eq!(moved.expect("changed").counts, [1, 0, 0, 0, 0]);
    }

    #[test]
    fn a_release_gives_back_without_going_below_zero() {
        let slot = Slot {
            window: 5,
            counts: [4, 4, 4, 1, 0],
        };
        let (s, o) = release(Some(slot), &give_back(5_100, 3, 5, 4));
        assert_eq!(
            o,
            Outcome {
                granted: 0,
                used: 1,
                window: 5,
                current: 1
            }
        );
        assert_eq!(s.expect("changed").counts, [1, 1, 1, 0, 0]);
        let (s, o) = release(Some(slot), &give_back(7_100, 3, 5, 4));
        assert_eq!((o.used, o.window), (1, 7), "windows 5 and 6 are over");
        let s = s.expect("changed");
        assert_eq!((s.window, s.counts), (7, [1, 0, 0, 0, 0]));
        let (s, _) = release(Some(slot), &give_back(5_100, 3, 9, 4));
        assert_eq!(s, None, "window 9 holds nothing, 10 and on are not held");
        let (s, _) = release(Some(slot), &give_back(5_100, 3, u64::MAX - 1, 4));
        assert_eq!(s, None);
        let (s, o) = release(None, &give_back(5_100, 3, 5, 1));
        assert_eq!((s, o.used, o.window), (None, 0, 5));
        let (s, _) = release(Some(slot), &give_back(5_100, 0, 5, 4));
        assert_eq!(s, None, "nothing given back, nothing written");
        let behind = release(Some(slot), &give_back(4_100, 4, 5, 1));
        assert_eq!(behind.1.window, 5, "a clock behind keeps window 5");
        assert_eq!(behind.0.expect("changed").counts, [0, 4, 4, 1, 0]);
    }
}
