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
        .and_then(|v| seconds(v).map(|s| s * S).or_else(|| http_date(v).map(until_epoch)))
        .or_else(|| header("ratelimit").and_then(ietf_wait))
        .or_else(|| {
            let reset = header("ratelimit-reset").and_then(seconds)?;
            (header("ratelimit-remaining").and_then(seconds) == Some(0)).then_some(reset * S)
        })
        .or_else(|| {
            let reset = header("x-ratelimit-reset").and_then(seconds)?;
            exhausted().then(|| if reset >= EPOCH_SECONDS_FROM { until_epoch(reset) } else { reset * S })
        })?;
    Some(wait.min(MAX_BLOCK_NS)).filter(|w| *w > 0)
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
            (r == Some(0)).then_some(t?).map(|t| t * S)
        })
        .max()
}

/// Epoch seconds of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn http_date(v: &str) -> Option<u64> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else { return None };
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"].iter().position(|m| m == month)? as i64 + 1;
    let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let hms: Vec<u64> = time.split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let [h, m, s] = hms.as_slice() else { return None };
    // Howard Hinnant's days_from_civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    Some(days * 86_400 + h * 3_600 + m * 60 + s)
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
    fn parses_http_dates() {
        assert_eq!(http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(http_date("Sun, 06 Nov 1994 08:49:37 UTC"), None);
        assert_eq!(http_date("Sun, 06 Foo 1994 08:49:37 GMT"), None);
        assert_eq!(http_date(""), None);
    }
}
