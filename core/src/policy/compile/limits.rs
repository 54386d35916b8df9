//! A rule's limit: requests per duration (with a token bucket's burst) or
//! requests in flight (with their longest hold); and `max_block`, the
//! longest an upstream's wait is believed.

use super::Compiler;
use crate::calendar;
use crate::duration::Span;
use crate::policy::raw::RawLimit;
use crate::policy::{Algorithm, Limit};

/// How long one upstream answer holds a key back unless the rule says
/// otherwise, and the shortest `max_block` a rule may set.
const DEFAULT_MAX_BLOCK_S: u64 = 60;
const MIN_BLOCK_NS: u64 = 1_000_000_000;
/// Most requests a limit may name; larger figures are typos.
pub(super) const MAX_REQUESTS: i64 = 1_000_000_000;
/// A concurrency limit's largest `concurrent` (a slot holds at most
/// `concurrency::MAX_UNITS` units).
const MAX_CONCURRENT: i64 = crate::concurrency::MAX_UNITS as i64;
const DEFAULT_MAX_HOLD_S: u64 = 300;
const MAX_HOLD_NS: u64 = 3_600_000_000_000;

impl Compiler {
    pub(super) fn limit(&mut self, at: &str, l: &RawLimit, algorithm: Algorithm) -> Option<Limit> {
        if let Some(n) = l.concurrent {
            return self.concurrent_limit(at, l, n);
        }
        if l.max_hold.is_some() {
            self.problem(format!("{at}.limit.max_hold"), "only a concurrency limit (`concurrent`) takes a max_hold");
        }
        let requests = match l.requests {
            Some(r) if (1..=MAX_REQUESTS).contains(&r) => Some(r as u64),
            Some(r) => {
                self.problem(format!("{at}.limit.requests"), format!("must be a whole number from 1 to {MAX_REQUESTS}, got {r}"));
                None
            }
            None => {
                self.problem(format!("{at}.limit.requests"), "missing: give `requests` and `per`, or `concurrent`");
                None
            }
        };
        if let Some(unit) = l.calendar.as_deref() {
            return self.calendar_limit(at, l, unit, requests, algorithm);
        }
        if l.utc_offset.is_some() {
            self.problem(format!("{at}.limit.utc_offset"), "only a calendar limit (`calendar`) takes a utc_offset");
        }
        let Some(per) = l.per.as_deref() else {
            self.problem(format!("{at}.limit.per"), "missing: give `requests` and `per`, or `concurrent`");
            return None;
        };
        let per = match Span::parse(per) {
            Ok(s) => Some(s),
            Err(e) => {
                self.problem(format!("{at}.limit.per"), e);
                None
            }
        };
        let burst = match (l.burst, algorithm) {
            (None, _) => requests,
            (Some(b), Algorithm::TokenBucket) if (1..=MAX_REQUESTS).contains(&b) => Some(b as u64),
            (Some(b), Algorithm::TokenBucket) => {
                self.problem(format!("{at}.limit.burst"), format!("must be a whole number from 1 to {MAX_REQUESTS}, got {b}"));
                None
            }
            (Some(_), _) => {
                self.problem(format!("{at}.limit.burst"), "only the token_bucket algorithm takes a burst; windows allow `requests` per window");
                None
            }
        };
        Some(Limit { requests: requests?, per: per?, burst: burst?, calendar: None })
    }

    /// `{"requests": N, "calendar": "day", "utc_offset": "+02:00"}`: `N`
    /// per calendar day or month, counted in a fixed window.
    fn calendar_limit(&mut self, at: &str, l: &RawLimit, unit: &str, requests: Option<u64>, algorithm: Algorithm) -> Option<Limit> {
        if l.per.is_some() || l.burst.is_some() {
            self.problem(format!("{at}.limit.calendar"), "a calendar limit takes no `per` or `burst`: its window is the day or the month");
        }
        if algorithm != Algorithm::FixedWindow {
            let why = "a calendar limit counts a fixed window per day or month: leave `algorithm` out or give fixed_window (a token bucket or a sliding window never resets at the boundary)";
            self.problem(format!("{at}.algorithm"), why);
        }
        let unit = calendar::parse_unit(unit).map_err(|e| self.problem(format!("{at}.limit.calendar"), e)).ok();
        let offset = calendar::parse_offset(l.utc_offset.as_deref().unwrap_or("+00:00")).map_err(|e| self.problem(format!("{at}.limit.utc_offset"), e)).ok();
        let cal = calendar::Calendar { unit: unit?, offset_min: offset? };
        let requests = requests?;
        Some(Limit { requests, per: calendar::longest(&cal), burst: requests, calendar: Some(cal) })
    }

    /// `{"concurrent": N, "max_hold": "5m"}`: `N` requests in flight per
    /// key, each unit held for `max_hold` at most (kept as `requests` and
    /// `per`).
    fn concurrent_limit(&mut self, at: &str, l: &RawLimit, n: i64) -> Option<Limit> {
        if l.requests.is_some() || l.per.is_some() || l.burst.is_some() || l.calendar.is_some() || l.utc_offset.is_some() {
            self.problem(format!("{at}.limit.concurrent"), "a concurrency limit takes no `requests`, `per`, `burst` or `calendar`");
        }
        let requests = if (1..=MAX_CONCURRENT).contains(&n) {
            Some(n as u64)
        } else {
            self.problem(format!("{at}.limit.concurrent"), format!("must be a whole number from 1 to {MAX_CONCURRENT}, got {n}"));
            None
        };
        let max_hold = match l.max_hold.as_deref().map(Span::parse) {
            None => Some(Span::from_secs(DEFAULT_MAX_HOLD_S)),
            Some(Ok(s)) if (MIN_BLOCK_NS..=MAX_HOLD_NS).contains(&s.nanos()) => Some(s),
            Some(Ok(s)) => {
                self.problem(format!("{at}.limit.max_hold"), format!("{s} is out of range: at least 1s and at most 1h"));
                None
            }
            Some(Err(e)) => {
                self.problem(format!("{at}.limit.max_hold"), e);
                None
            }
        };
        let requests = requests?;
        Some(Limit { requests, per: max_hold?, burst: requests, calendar: None })
    }

    /// The longest an upstream's wait is believed (default 60 s, between
    /// 1 s and 5 min).
    pub(super) fn max_block(&mut self, at: &str, raw: Option<&str>) -> Span {
        match raw.map(Span::parse) {
            None => Span::from_secs(DEFAULT_MAX_BLOCK_S),
            Some(Ok(s)) if (MIN_BLOCK_NS..=crate::upstream::MAX_BLOCK_NS).contains(&s.nanos()) => s,
            Some(Ok(s)) => {
                self.problem(format!("{at}.max_block"), format!("{s} is out of range: at least 1s and at most 5m"));
                Span::from_secs(DEFAULT_MAX_BLOCK_S)
            }
            Some(Err(e)) => {
                self.problem(format!("{at}.max_block"), e);
                Span::from_secs(DEFAULT_MAX_BLOCK_S)
            }
        }
    }
}
