//! Calendar windows of a limit: `{"requests": 100, "calendar": "day"}`
//! counts per calendar day (or `"month"`), at UTC or at a fixed offset
//! (`"utc_offset": "+02:00"`), and resets at the boundary. The counting is
//! a fixed window's (`bucket.rs`) and a global rule's lease (`lease/`);
//! what a window is, its index and its bounds, is defined once in
//! `sluice_wire::calendar` so that the counter service agrees.
//!
//! Here: the policy text (`"day"`, `"+02:00"`), and a limit's windows in
//! nanoseconds whether they are calendar ones or `floor(now / per)`.

use crate::duration::Span;
use crate::policy::Limit;

pub use sluice_wire::calendar::{Calendar, Unit, MAX_OFFSET_MIN};

const NS_PER_MS: u64 = 1_000_000;

/// `day` or `month`.
pub fn parse_unit(text: &str) -> Result<Unit, String> {
    match text {
        "day" => Ok(Unit::Day),
        "month" => Ok(Unit::Month),
        _ => Err(format!("{text:?} is not a calendar unit: give \"day\" or \"month\"")),
    }
}

/// `+02:00`, `-05:30`, `+00:00`: a sign, two digits of hours and two of
/// minutes, within ±14:00. Returns minutes east of UTC.
pub fn parse_offset(text: &str) -> Result<i32, String> {
    let bad = || format!("bad utc_offset {text:?}: expected a sign, hours and minutes, like \"+02:00\" or \"-05:30\", within ±14:00");
    let b = text.as_bytes();
    let (sign, digits) = match (b.first(), b.get(1..)) {
        (Some(b'+'), Some(rest)) => (1, rest),
        (Some(b'-'), Some(rest)) => (-1, rest),
        _ => return Err(bad()),
    };
    let [h1, h2, b':', m1, m2] = digits else { return Err(bad()) };
    let digit = |c: &u8| c.is_ascii_digit().then(|| i32::from(c.wrapping_sub(b'0')));
    let (Some(h1), Some(h2), Some(m1), Some(m2)) = (digit(h1), digit(h2), digit(m1), digit(m2)) else { return Err(bad()) };
    // Single digits: no step below can overflow.
    let (hours, minutes) = (h1.saturating_mul(10).saturating_add(h2), m1.saturating_mul(10).saturating_add(m2));
    let total = hours.saturating_mul(60).saturating_add(minutes);
    if minutes >= 60 || total > MAX_OFFSET_MIN {
        return Err(bad());
    }
    Ok(total.saturating_mul(sign))
}

/// The limit's `per` for a calendar: its longest window (a day, or 31
/// days), what a lease carries as `window_ms`.
pub fn longest(calendar: &Calendar) -> Span {
    Span::from_nanos(calendar.window_ms().saturating_mul(NS_PER_MS))
}

impl Limit {
    /// The window holding `now` (ns since the epoch): `now / per`, or the
    /// calendar's day or month.
    pub fn window_at(&self, now: u64) -> u64 {
        match &self.calendar {
            Some(c) => c.index(now / NS_PER_MS),
            None => now / self.per.nonzero_nanos(),
        }
    }

    /// When window `w` starts, ns since the epoch (saturating).
    pub fn window_start(&self, w: u64) -> u64 {
        match &self.calendar {
            Some(c) => c.start_ms(w).saturating_mul(NS_PER_MS),
            None => w.saturating_mul(self.per.nanos()),
        }
    }

    /// When window `w` ends.
    pub fn window_end(&self, w: u64) -> u64 {
        self.window_start(w.saturating_add(1))
    }

    /// The length of the window holding `now` (a calendar month's is 28 to
    /// 31 days); never 0.
    pub fn window_ns(&self, now: u64) -> u64 {
        if self.calendar.is_none() {
            return self.per.nanos().max(1);
        }
        let w = self.window_at(now);
        self.window_end(w).saturating_sub(self.window_start(w)).max(1)
    }

    /// The window as the 429 body's `window` reads it: `1 second`,
    /// `1 day`, `1 month`, `1 day (UTC+02:00)`.
    pub fn window_text(&self) -> String {
        let Some(c) = &self.calendar else { return self.per.to_string() };
        let unit = match c.unit {
            Unit::Day => "1 day",
            Unit::Month => "1 month",
        };
        if c.offset_min == 0 {
            return unit.to_string();
        }
        let sign = if c.offset_min < 0 { '-' } else { '+' };
        let m = c.offset_min.unsigned_abs();
        format!("{unit} (UTC{sign}{:02}:{:02})", m / 60, m % 60)
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn offsets_parse_and_hostile_text_does_not() {
        for (text, min) in [("+02:00", 120), ("-05:30", -330), ("+00:00", 0), ("-00:00", 0), ("+14:00", 840), ("-12:00", -720)] {
            assert_eq!(parse_offset(text), Ok(min), "{text}");
        }
        for text in ["", "+", "02:00", "+2:00", "+02:60", "+14:01", "-15:00", "+02:00 ", "+0200", "+\u{1d7ce}2:00", "+99:99"] {
            assert!(parse_offset(text).is_err(), "{text}");
        }
        assert_eq!(parse_unit("day"), Ok(Unit::Day));
        assert!(parse_unit("Day").is_err() && parse_unit("week").is_err());
    }

    #[test]
    fn windows_in_nanoseconds() {
        const DAY: u64 = 86_400 * 1_000_000_000;
        let cal = Calendar { unit: Unit::Month, offset_min: 0 };
        let month = Limit { requests: 10, per: longest(&cal), burst: 10, calendar: Some(cal) };
        // 2024-02-10: February of a leap year.
        let now = 19_763 * DAY;
        assert_eq!(month.window_ns(now), 29 * DAY);
        assert_eq!(month.window_text(), "1 month");
        let plain = Limit { requests: 10, per: Span::from_secs(1), burst: 10, calendar: None };
        assert_eq!(plain.window_at(5_500_000_000), 5);
        assert_eq!(plain.window_end(5), 6_000_000_000);
        let day = Limit { calendar: Some(Calendar { unit: Unit::Day, offset_min: -330 }), ..month };
        assert_eq!(day.window_text(), "1 day (UTC-05:30)");
        assert_eq!(day.window_ns(now), DAY);
    }
}
