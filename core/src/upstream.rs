//! Reading an upstream's own rate-limit answer: how long it asks us to stay
//! away. Only a 429 or 503 counts. Sources, first found wins:
//! `Retry-After` (seconds or an HTTP date), the IETF `RateLimit` header
//! (`"name";r=0;t=3`) or `RateLimit-Reset` with nothing remaining, and
//! `X-RateLimit-Reset` (epoch seconds, or seconds when small) with
//! `X-RateLimit-Remaining` absent or 0. The wait is capped at
//! [`MAX_BLOCK_NS`] so a confused upstream cannot shut a key out for long.

const S: u64 = 1_000_000_000;
/// Longest block taken from an upstream's headers: 5 minutes.
pub const MAX_BLOCK_NS: u64 = 300 * S;
/// Numbers above this are epoch seconds, below it a number of seconds.
const EPOCH_SECONDS_FROM: u64 = 1_000_000_000;

/// Nanoseconds the upstream asks us to wait, from its status and headers
/// (names lower case), at wall-clock `now` (ns since the epoch).
pub fn block_for(status: u32, headers: &[(String, String)], now: u64) -> Option<u64> {
    if status != 429 && status != 503 {
        return None;
    }
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.trim());
    let until_epoch = |secs: u64| secs.saturating_mul(S).saturating_sub(now);
    let seconds = |v: &str| v.parse::<u64>().ok();
    let exhausted = || header("x-ratelimit-remaining").and_then(seconds).is_none_or(|r| r == 0);
    let wait = header("retry-after")
        .and_then(|v| seconds(v).map(secs_to_ns).or_else(|| http_date(v).map(until_epoch)))
        .or_else(|| header("ratelimit").and_then(ietf_wait))
        .or_else(|| {
            let reset = header("ratelimit-reset").and_then(seconds)?;
            (header("ratelimit-remaining").and_then(seconds) == Some(0)).then_some(secs_to_ns(reset))
        })
        .or_else(|| {
            let reset = header("x-ratelimit-reset").and_then(seconds)?;
            exhausted().then(|| if reset >= EPOCH_SECONDS_FROM { until_epoch(reset) } else { secs_to_ns(reset) })
        })?;
    Some(wait.min(MAX_BLOCK_NS)).filter(|w| *w > 0)
}

/// Seconds from a header, in nanoseconds; the largest numbers saturate
/// (and are then capped) instead of wrapping to a short wait.
fn secs_to_ns(secs: u64) -> u64 {
    secs.saturating_mul(S)
}

/// `"name";r=0;t=3` (several items comma-separated): the longest `t` of an
/// item with nothing remaining.
fn ietf_wait(value: &str) -> Option<u64> {
    value
        .split(',')
        .filter_map(|item| {
            let mut r = None;
            let mut t = None;
            for param in item.split(';').skip(1) {
                match param.trim().split_once('=') {
                    Some(("r", v)) => r = v.trim().parse::<u64>().ok(),
                    Some(("t", v)) => t = v.trim().parse::<u64>().ok(),
                    _ => {}
                }
            }
            (r == Some(0)).then_some(t?).map(secs_to_ns)
        })
        .max()
}

/// Epoch seconds of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`);
/// `None` for a date before the epoch or too far ahead to count.
fn http_date(v: &str) -> Option<u64> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else { return None };
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"].iter().position(|m| m == month)?;
    let month = u32::try_from(month).ok()?.checked_add(1)?;
    let (day, year): (u32, i64) = (day.parse().ok()?, year.parse().ok()?);
    let hms: Vec<u64> = time.split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let [h, m, s] = hms.as_slice() else { return None };
    let days = u64::try_from(crate::civil::days_from_civil(year, month, day)?).ok()?;
    days.checked_mul(86_400)?.checked_add(h.checked_mul(3_600)?)?.checked_add(m.checked_mul(60)?)?.checked_add(*s)
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    const NOW: u64 = 1_700_000_000 * S;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn reads_every_kind_of_answer() {
        for (status, headers, want) in [
            (429, h(&[("retry-after", "3")]), Some(3 * S)),
            (503, h(&[("retry-after", "Tue, 14 Nov 2023 22:13:30 GMT")]), Some(10 * S)),
            (429, h(&[("ratelimit", "\"burst\";r=5;t=1, \"day\";r=0;t=40")]), Some(40 * S)),
            (429, h(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "7")]), Some(7 * S)),
            (429, h(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1700000012")]), Some(12 * S)),
            (429, h(&[("x-ratelimit-reset", "20")]), Some(20 * S)),
            (429, h(&[("retry-after", "99999")]), Some(MAX_BLOCK_NS)),
            (429, h(&[("x-ratelimit-remaining", "4"), ("x-ratelimit-reset", "20")]), None),
            (429, h(&[("retry-after", "soon")]), None),
            (429, h(&[("retry-after", "0")]), None),
            (429, h(&[]), None),
            (503, h(&[]), None),
            (200, h(&[("retry-after", "3")]), None),
            (500, h(&[("retry-after", "3")]), None),
            (429, h(&[("retry-after", "Tue, 14 Nov 2023 22:13:10 GMT")]), None),
        ] {
            assert_eq!(block_for(status, &headers, NOW), want, "{status} {headers:?}");
        }
    }

    #[test]
    fn hostile_numbers_are_capped_not_wrapped() {
        // 18446744074 s is just over u64::MAX ns: multiplied unchecked it
        // wrapped to 0.29 s (and panicked with overflow checks on).
        for (name, value) in [("retry-after", "18446744074"), ("retry-after", "18446744073709551615"), ("ratelimit", "\"x\";r=0;t=18446744074")] {
            assert_eq!(block_for(429, &h(&[(name, value)]), NOW), Some(MAX_BLOCK_NS), "{name}: {value}");
        }
        let reset = h(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "18446744074")]);
        assert_eq!(block_for(429, &reset, NOW), Some(MAX_BLOCK_NS));
        let x_reset = h(&[("x-ratelimit-reset", "999999999")]);
        assert_eq!(block_for(429, &x_reset, NOW), Some(MAX_BLOCK_NS));
        assert_eq!(block_for(429, &h(&[("retry-after", "Sun, 06 Nov 999999 08:49:37 GMT")]), NOW), Some(MAX_BLOCK_NS));
        // A year too far out to count is no date at all.
        assert_eq!(block_for(429, &h(&[("retry-after", "Sun, 06 Nov 9999999999999999 08:49:37 GMT")]), NOW), None);
        assert_eq!(http_date("Sun, 99999999999999999 Nov 1994 08:49:37 GMT"), None);
        assert_eq!(http_date("Sun, 06 Nov 1994 18446744073709551615:49:37 GMT"), None);
    }

    #[test]
    fn parses_http_dates() {
        assert_eq!(http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(http_date("Sun, 06 Nov 1994 08:49:37 UTC"), None);
        assert_eq!(http_date("Sun, 06 Foo 1994 08:49:37 GMT"), None);
        assert_eq!(http_date(""), None);
    }
}
