//! Helpers for the core's unit tests.

use crate::duration::Span;
use crate::policy::Limit;

/// One second in nanoseconds.
pub const S: u64 = 1_000_000_000;

/// `n` requests per second, bursts of `n`.
pub fn per_second(n: u64) -> Limit {
    Limit { requests: n, per: Span::from_secs(1), burst: n, calendar: None }
}
