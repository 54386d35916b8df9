//! Calendar windows: a lease's windows as calendar days or months, at UTC
//! or at a fixed offset from it, instead of fixed lengths since the epoch.
//! The filter and the service both count them with these functions, so
//! that a window index means the same day or month on both sides.
//!
//! - A day window is `floor((ms + offset) / 86,400,000)`: day 0 began at
//!   1970-01-01T00:00 at the offset.
//! - A month window is the number of months since January 1970 of the date
//!   at the offset: month 0 is January 1970, month 672 is January 2026.
//!
//! Windows start at whole minutes, so their bounds are exact in ms (and in
//! the filter's ns). Times before the first window read as window 0, and
//! bounds past the end of `u64` saturate: only hostile or broken clocks get
//! there, and both sides then agree on window 0 or the last one.

use serde::{Deserialize, Serialize};

use crate::civil::{civil_from_days, days_from_civil};

/// Milliseconds in a day.
pub const DAY_MS: u64 = 86_400_000;
/// The `window_ms` a calendar lease carries: its longest window, one day
/// or 31 days.
pub const MONTH_MS: u64 = 31 * DAY_MS;
/// The farthest offset from UTC, either way, in minutes: 14 hours (the
/// zones in use run from UTC-12:00 to UTC+14:00).
pub const MAX_OFFSET_MIN: i32 = 14 * 60;

const MINUTE_MS: i64 = 60_000;

/// Which calendar unit a window is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Day,
    Month,
}

/// A lease's calendar windows: `{"unit": "day", "offset_min": 120}` on the
/// wire (`offset_min` sent only when not 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calendar {
    pub unit: Unit,
    /// Minutes east of UTC at which days begin: -840..=840
    /// ([`MAX_OFFSET_MIN`]); `+02:00` is 120.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset_min: i32,
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}

impl Calendar {
    /// Whether the offset is within ±[`MAX_OFFSET_MIN`].
    pub fn valid(&self) -> bool {
        (-MAX_OFFSET_MIN..=MAX_OFFSET_MIN).contains(&self.offset_min)
    }

    /// The `window_ms` a lease with these windows carries: the longest
    /// window, [`DAY_MS`] or [`MONTH_MS`].
    pub fn window_ms(&self) -> u64 {
        match self.unit {
            Unit::Day => DAY_MS,
            Unit::Month => MONTH_MS,
        }
    }

    fn offset_ms(&self) -> i64 {
        i64::from(self.offset_min.clamp(-MAX_OFFSET_MIN, MAX_OFFSET_MIN)).saturating_mul(MINUTE_MS)
    }

    /// The window holding `now_ms` (ms since the epoch).
    pub fn index(&self, now_ms: u64) -> u64 {
        let local = i64::try_from(now_ms)
            .unwrap_or(i64::MAX)
            .saturating_add(self.offset_ms());
        let days = local.div_euclid(DAY_MS as i64);
        let index = match self.unit {
            Unit::Day => days,
            Unit::Month => {
                let (year, month, _) = civil_from_days(days);
                year.saturating_sub(1970)
                    .saturating_mul(12)
                    .saturating_add(i64::from(month))
                    .saturating_sub(1)
            }
        };
        u64::try_from(index).unwrap_or(0)
    }

    /// When window `index` starts, in ms since the epoch (0 for a window
    /// that would start before the epoch).
    pub fn start_ms(&self, index: u64) -> u64 {
        let i = i64::try_from(index).unwrap_or(i64::MAX);
        let days = match self.unit {
            Unit::Day => Some(i),
            Unit::Month => {
                let year = (i / 12).saturating_add(1970);
                // 1..=12: the remainder of a non-negative number by 12.
                let month = u32::try_from(i % 12).unwrap_or(0).saturating_add(1);
                days_from_civil(year, month, 1)
            }
        };
        let Some(days) = days else {
            return u64::MAX;
        };
        let ms = i128::from(days)
            .saturating_mul(i128::from(DAY_MS))
            .saturating_sub(i128::from(self.offset_ms()));
        u64::try_from(ms.max(0)).unwrap_or(u64::MAX)
    }

    /// When window `index` ends: when the next one starts.
    pub fn end_ms(&self, index: u64) -> u64 {
        self.start_ms(index.saturating_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UTC_DAY: Calendar = Calendar {
        unit: Unit::Day,
        offset_min: 0,
    };
    const UTC_MONTH: Calendar = Calendar {
        unit: Unit::Month,
        offset_min: 0,
    };

    fn ms(y: i64, m: u32, d: u32) -> u64 {
        u64::try_from(days_from_civil(y, m, d).expect("a date")).expect("after 1970") * DAY_MS
    }

    #[test]
    fn days_and_months_at_utc() {
        let t = ms(2026, 3, 14) + 5_000;
        let day = UTC_DAY.index(t);
        assert_eq!(UTC_DAY.start_ms(day), ms(2026, 3, 14));
        assert_eq!(UTC_DAY.end_ms(day), ms(2026, 3, 15));
        let month = UTC_MONTH.index(t);
        assert_eq!(month, 56 * 12 + 2);
        assert_eq!(UTC_MONTH.start_ms(month), ms(2026, 3, 1));
        assert_eq!(UTC_MONTH.end_ms(month), ms(2026, 4, 1));
        assert_eq!(UTC_MONTH.index(ms(2026, 3, 31) + DAY_MS - 1), month);
        assert_eq!(UTC_MONTH.index(ms(2026, 4, 1)), month + 1);
    }

    #[test]
    fn february_and_leap_years() {
        for (year, days) in [(2024, 29), (2025, 28), (2100, 28), (2000, 29)] {
            let feb = UTC_MONTH.index(ms(year, 2, 10));
            let len = UTC_MONTH.end_ms(feb) - UTC_MONTH.start_ms(feb);
            assert_eq!(len, days * DAY_MS, "{year}");
        }
        let dec = UTC_MONTH.index(ms(2025, 12, 31));
        assert_eq!(UTC_MONTH.end_ms(dec), ms(2026, 1, 1), "the year turns");
    }

    #[test]
    fn offsets_move_the_boundary() {
        let plus2 = Calendar {
            unit: Unit::Day,
            offset_min: 120,
        };
        // 22:30 UTC on 14 March is 00:30 on 15 March at +02:00.
        let t = ms(2026, 3, 14) + 22 * 3_600_000 + 1_800_000;
        assert_eq!(plus2.index(t), UTC_DAY.index(t) + 1);
        assert_eq!(
            plus2.start_ms(plus2.index(t)),
            ms(2026, 3, 14) + 22 * 3_600_000
        );
        let minus5 = Calendar {
            unit: Unit::Month,
            offset_min: -300,
        };
        // 03:00 UTC on 1 April is still March at -05:00.
        let t = ms(2026, 4, 1) + 3 * 3_600_000;
        assert_eq!(minus5.index(t), UTC_MONTH.index(t) - 1);
        assert_eq!(
            minus5.end_ms(minus5.index(t)),
            ms(2026, 4, 1) + 5 * 3_600_000
        );
    }

    #[test]
    fn every_window_is_its_own_bounds() {
        for cal in [
            UTC_DAY,
            UTC_MONTH,
            Calendar {
                unit: Unit::Month,
                offset_min: 840,
            },
            Calendar {
                unit: Unit::Day,
                offset_min: -720,
            },
        ] {
            let mut t = ms(2023, 11, 20) + 12_345;
            while t < ms(2028, 3, 1) {
                let i = cal.index(t);
                assert!(cal.start_ms(i) <= t && t < cal.end_ms(i), "{cal:?} {t}");
                assert_eq!(cal.index(cal.start_ms(i)), i);
                assert_eq!(cal.index(cal.end_ms(i) - 1), i);
                t += 7 * 3_600_000 + 13;
            }
        }
    }

    #[test]
    fn hostile_clocks_saturate() {
        assert_eq!(UTC_MONTH.index(0), 0);
        let before = Calendar {
            unit: Unit::Day,
            offset_min: -60,
        };
        assert_eq!(
            before.index(0),
            0,
            "the last hour of 1969 reads as window 0"
        );
        for cal in [UTC_DAY, UTC_MONTH] {
            // No panic, and a window no earlier than today's.
            let far = cal.index(u64::MAX);
            assert!(cal.start_ms(far) > ms(2026, 1, 1));
            assert_eq!(cal.start_ms(u64::MAX), u64::MAX);
        }
        assert!(!Calendar {
            unit: Unit::Day,
            offset_min: 841
        }
        .valid());
    }

    #[test]
    fn the_wire_form() {
        let json = serde_json::to_string(&UTC_DAY).expect("json");
        assert_eq!(json, r#"{"unit":"day"}"#);
        let back: Calendar =
            serde_json::from_str(r#"{"unit":"month","offset_min":-300}"#).expect("json");
        assert_eq!(back.offset_min, -300);
        assert!(serde_json::from_str::<Calendar>(r#"{"unit":"week"}"#).is_err());
        assert!(serde_json::from_str::<Calendar>(r#"{"unit":"day","tz":"x"}"#).is_err());
    }
}
