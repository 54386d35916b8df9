//! Durations as policies write them (`500ms`, `1s`, `30s`, `2m`, `1h`, `1d`)
//! and as people read them in a 429 body (`1 second`, `2 minutes`).

use std::fmt;
use std::num::NonZeroU64;

const NS_PER_MS: u64 = 1_000_000;
const NS_PER_S: u64 = 1_000_000_000;

/// The longest window a rule may use: 7 days. Longer windows are better
/// served by quotas than by a rate limiter, and the cap keeps every
/// nanosecond product inside `u128` comfortably.
pub const MAX_NS: u64 = 7 * 86_400 * NS_PER_S;

/// A positive duration in nanoseconds, parsed from `<digits><unit>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(u64);

impl Span {
    pub fn from_nanos(ns: u64) -> Span {
        Span(ns)
    }
    pub fn from_secs(s: u64) -> Span {
        Span(s.saturating_mul(NS_PER_S))
    }
    pub fn nanos(self) -> u64 {
        self.0
    }
    /// The nanoseconds as a divisor: never zero (a zero span, which no
    /// policy can hold, counts as 1 ns).
    pub fn nonzero_nanos(self) -> NonZeroU64 {
        NonZeroU64::new(self.0).unwrap_or(NonZeroU64::MIN)
    }

    /// Parses `500ms`, `1s`, `30s`, `2m`, `1h`, `1d`: one integer and one unit,
    /// at least 1 ms and at most [`MAX_NS`].
    pub fn parse(text: &str) -> Result<Span, String> {
        let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (digits, unit) = text.split_at(digits_end);
        if digits.is_empty() {
            return Err(format!("bad duration {text:?}: expected a whole number and a unit, like \"1s\" or \"2m\""));
        }
        let n: u64 = digits.parse().map_err(|_| format!("bad duration {text:?}: number too large"))?;
        let scale = match unit {
            "ms" => NS_PER_MS,
            "s" => NS_PER_S,
            "m" => 60 * NS_PER_S,
            "h" => 3_600 * NS_PER_S,
            "d" => 86_400 * NS_PER_S,
            _ => return Err(format!("bad duration {text:?}: unit must be one of ms, s, m, h, d")),
        };
        let ns = n.checked_mul(scale).filter(|ns| *ns <= MAX_NS).ok_or_else(|| format!("bad duration {text:?}: longer than 7 days"))?;
        if ns == 0 {
            return Err(format!("bad duration {text:?}: must be greater than zero"));
        }
        Ok(Span(ns))
    }
}

/// Human form for the 429 body's `window` field: `1 second`, `30 seconds`,
/// `1 minute`, `1500 milliseconds`. Uses the largest unit that divides evenly.
impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 5] =
            [(86_400 * NS_PER_S, "day"), (3_600 * NS_PER_S, "hour"), (60 * NS_PER_S, "minute"), (NS_PER_S, "second"), (NS_PER_MS, "millisecond")];
        for (scale, name) in UNITS {
            if self.0.is_multiple_of(scale) {
                let n = self.0.checked_div(scale).unwrap_or(0);
                let plural = if n == 1 { "" } else { "s" };
                return write!(f, "{n} {name}{plural}");
            }
        }
        write!(f, "{} nanoseconds", self.0)
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn parses_every_unit() {
        for (text, ns) in [
            ("500ms", 500 * NS_PER_MS),
            ("1s", NS_PER_S),
            ("30s", 30 * NS_PER_S),
            ("2m", 120 * NS_PER_S),
            ("1h", 3_600 * NS_PER_S),
            ("1d", 86_400 * NS_PER_S),
            ("7d", MAX_NS),
        ] {
            assert_eq!(Span::parse(text), Ok(Span(ns)), "{text}");
        }
    }

    #[test]
    fn rejects_bad_text() {
        for text in ["", "s", "1", "1x", "-1s", "0s", "1.5s", "8d", "99999999999999999999s", " 1s"] {
            let err = Span::parse(text).expect_err(text);
            assert!(err.contains("bad duration"), "{text}: {err}");
        }
    }

    #[test]
    fn displays_for_people() {
        for (text, human) in [
            ("1s", "1 second"),
            ("30s", "30 seconds"),
            ("60s", "1 minute"),
            ("2m", "2 minutes"),
            ("1h", "1 hour"),
            ("1d", "1 day"),
            ("1500ms", "1500 milliseconds"),
        ] {
            assert_eq!(Span::parse(text).map(|s| s.to_string()), Ok(human.to_string()));
        }
    }
}
