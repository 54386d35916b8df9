//! Proleptic Gregorian dates and days since 1970-01-01 (Howard Hinnant's
//! `days_from_civil` and `civil_from_days`): the calendar windows of
//! [`crate::calendar`], and in the filter HTTP dates, RFC 3339 times and the
//! 429 body's `resetAt`.
//!
//! Inputs come from headers and logs, so both directions first bound their
//! input (years within ±1,000,000,000, days within what those years span);
//! inside that range no step can overflow, and the saturating operations
//! below are then exact.

/// Farthest year either way.
const MAX_YEAR: i64 = 1_000_000_000;
/// Days from 1970 to about year ±1,000,000,000.
const MAX_DAYS: i64 = 365_242_500_000;

/// Days since 1970-01-01 of `year-month-day`; `None` for a month outside
/// 1..=12, a day outside 1..=31 or a year beyond ±1,000,000,000. The day is
/// not checked against the month's length (31 February is 3 March).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> Option<i64> {
    if !(-MAX_YEAR..=MAX_YEAR).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
    {
        return None;
    }
    let (month, day) = (i64::from(month), i64::from(day));
    let y = if month <= 2 {
        year.saturating_sub(1)
    } else {
        year
    };
    let era = y.div_euclid(400);
    let yoe = y.saturating_sub(era.saturating_mul(400));
    let mp = month.saturating_add(9) % 12;
    let doy = (mp.saturating_mul(153).saturating_add(2) / 5)
        .saturating_add(day)
        .saturating_sub(1);
    let doe = yoe
        .saturating_mul(365)
        .saturating_add(yoe / 4)
        .saturating_sub(yoe / 100)
        .saturating_add(doy);
    Some(
        era.saturating_mul(146_097)
            .saturating_add(doe)
            .saturating_sub(719_468),
    )
}

/// The `(year, month, day)` of the day `days` after 1970-01-01; days
/// beyond about ±1,000,000,000 years are taken as that far.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days.clamp(-MAX_DAYS, MAX_DAYS).saturating_add(719_468);
    let era = z.div_euclid(146_097);
    let doe = z.saturating_sub(era.saturating_mul(146_097));
    let yoe = doe
        .saturating_sub(doe / 1_460)
        .saturating_add(doe / 36_524)
        .saturating_sub(doe / 146_096)
        / 365;
    let doy = doe.saturating_sub(
        yoe.saturating_mul(365)
            .saturating_add(yoe / 4)
            .saturating_sub(yoe / 100),
    );
    let mp = doy.saturating_mul(5).saturating_add(2) / 153;
    let day = doy
        .saturating_sub(mp.saturating_mul(153).saturating_add(2) / 5)
        .saturating_add(1);
    let month = if mp < 10 {
        mp.saturating_add(3)
    } else {
        mp.saturating_sub(9)
    };
    let year = yoe
        .saturating_add(era.saturating_mul(400))
        .saturating_add(i64::from(month <= 2));
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_bounds() {
        for (y, m, d, days) in [
            (1970, 1, 1, 0),
            (2000, 2, 29, 11_016),
            (1969, 12, 31, -1),
            (2099, 12, 31, 47_481),
            (1, 1, 1, -719_162),
        ] {
            assert_eq!(days_from_civil(y, m, d), Some(days), "{y}-{m}-{d}");
            assert_eq!(civil_from_days(days), (y, m, d));
        }
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), Some(days));
        }
        assert_eq!(days_from_civil(MAX_YEAR + 1, 1, 1), None);
        assert_eq!(days_from_civil(i64::MIN, 1, 1), None);
        assert_eq!(days_from_civil(2000, 13, 1), None);
        assert_eq!(days_from_civil(2000, 1, 0), None);
        let far = civil_from_days(i64::MAX);
        assert_eq!(far, civil_from_days(MAX_DAYS));
        assert!(far.0 > 999_000_000, "{far:?}");
        assert!(civil_from_days(i64::MIN).0 < -999_000_000);
    }
}
