//! The counter service's contract in memory, on the caller's clock: fixed
//! windows of each ask's `window_ms` (or its calendar days or months), never more than the limit reserved
//! in one, grants spanning several windows and units given back. The
//! replay (`simulate`) and the multi-instance tests count with it; the
//! service's own definition is `counter/src/window.rs`, whose contract
//! tests hold both of its stores to the same answers.

use std::collections::HashMap;

use crate::counter_api::{Ask, MAX_SPAN};
use crate::lease::Answer;

const NS_PER_MS: u64 = 1_000_000;

/// Per rule and key, the units reserved in each window.
#[derive(Default)]
pub struct MemoryCounter {
    /// (rule, key, window) → units reserved, and when the window ends.
    used: HashMap<(String, String, u64), (u64, u64)>,
    pruned_at: u64,
    /// Reserve calls answered.
    pub calls: u64,
}

impl MemoryCounter {
    /// Units reserved in a window of a key.
    pub fn used(&self, rule: &str, id: &str, window: u64) -> u64 {
        self.used.get(&(rule.to_owned(), id.to_owned(), window)).map_or(0, |(n, _)| *n)
    }

    /// Units reserved for a key, all windows together.
    pub fn used_in_all(&self, rule: &str, id: &str) -> u64 {
        self.used.iter().filter(|((r, i, _), _)| r == rule && i == id).map(|(_, (n, _))| *n).sum()
    }

    /// Answers one reserve call of `asks`, made at `now` (ns).
    pub fn reserve(&mut self, asks: &[Ask], now: u64) -> Vec<Answer> {
        self.calls = self.calls.saturating_add(1);
        // Windows that are over are never asked about again.
        if now.saturating_sub(self.pruned_at) >= 1_000 * NS_PER_MS {
            self.used.retain(|_, (_, end)| *end > now);
            self.pruned_at = now;
        }
        asks.iter().map(|a| self.one(a, now)).collect()
    }

    fn one(&mut self, a: &Ask, now: u64) -> Answer {
        let per = a.window_ms.saturating_mul(NS_PER_MS).max(1);
        let starts = |w: u64| match &a.calendar {
            Some(c) => c.start_ms(w).saturating_mul(NS_PER_MS),
            None => w.saturating_mul(per),
        };
        let cur = match &a.calendar {
            Some(c) => c.index(now / NS_PER_MS),
            None => now.checked_div(per).unwrap_or(0),
        };
        // The service keeps the current window and four ahead.
        let last_kept = cur.saturating_add(u64::from(MAX_SPAN));
        let span = u64::from(a.windows.clamp(1, MAX_SPAN));
        let key = |w: u64| (a.rule.clone(), a.id.clone(), w);
        let ends = |w: u64| starts(w.saturating_add(1));
        let used_map = &mut self.used;
        let mut count = |w: u64, f: &mut dyn FnMut(&mut u64)| -> u64 {
            let n = &mut used_map.entry(key(w)).or_insert((0, ends(w))).0;
            f(n);
            *n
        };
        let (target, granted, used) = if a.release > 0 {
            for w in a.from.max(cur)..a.from.saturating_add(u64::from(a.windows)).min(last_kept.saturating_add(1)) {
                count(w, &mut |n| *n = n.saturating_sub(u64::from(a.release)));
            }
            (cur, 0, count(cur, &mut |_| {}))
        } else {
            let target = cur.saturating_add(u64::from(a.next));
            let windows: Vec<u64> = (target..target.saturating_add(span)).filter(|w| *w <= last_kept).collect();
            let room = windows.iter().map(|w| a.limit.saturating_sub(count(*w, &mut |_| {}))).min().unwrap_or(0);
            let granted = u64::from(a.want).min(room);
            let mut used = 0;
            for w in windows {
                used = used.max(count(w, &mut |n| *n = n.saturating_add(granted)));
            }
            (target, granted, used)
        };
        let start = starts(target);
        Answer {
            granted: u32::try_from(granted).unwrap_or(u32::MAX),
            used: u32::try_from(used).unwrap_or(u32::MAX),
            window: target,
            starts_in_ns: start.saturating_sub(now),
            ends_in_ns: ends(target).saturating_sub(now),
            blocked_ns: 0,
            windows: a.windows,
            current_used: u32::try_from(count(cur, &mut |_| {})).unwrap_or(u32::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    const S: u64 = 1_000_000_000;

    fn ask(want: u32, next: bool, windows: u32) -> Ask {
        Ask { windows, ..Ask::new("r".into(), "k".into(), 100, 1000, want, next) }
    }

    #[test]
    fn spans_grant_alike_and_releases_give_back() {
        let mut c = MemoryCounter::default();
        let now = 10 * S + S / 2;
        // Window 12 already holds 70: a span over 11..=14 gets 30 in each.
        c.reserve(&[Ask::new("r".into(), "k".into(), 100, 1000, 70, false)], 12 * S);
        let got = c.reserve(&[ask(50, true, 4)], now);
        assert_eq!((got[0].granted, got[0].used, got[0].window, got[0].windows), (30, 100, 11, 4));
        assert_eq!((got[0].starts_in_ns, got[0].ends_in_ns), (S / 2, 3 * S / 2));
        assert_eq!([11, 12, 13, 14, 15].map(|w| c.used("r", "k", w)), [30, 100, 30, 30, 0]);
        // Giving back 40 from 12 on: never below zero, never a past window.
        let back = Ask { release: 40, from: 12, windows: 3, ..ask(0, false, 1) };
        let answer = c.reserve(std::slice::from_ref(&back), now);
        assert_eq!((answer[0].granted, answer[0].window), (0, 10));
        assert_eq!([11, 12, 13, 14].map(|w| c.used("r", "k", w)), [30, 60, 0, 0]);
        c.reserve(&[Ask { from: 11, windows: 2, ..back }], 12 * S);
        assert_eq!([11, 12].map(|w| c.used("r", "k", w)), [30, 20]);
        assert_eq!(c.calls, 4);
    }
}
