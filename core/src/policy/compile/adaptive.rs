//! An adaptive rule: its floor and step up (counts up to the rule's
//! limit), the latency and error signals, the decrease factor, the
//! interval and the fewest samples.

use super::limits::MAX_REQUESTS;
use super::Compiler;
use crate::duration::Span;
use crate::policy::raw::{RawAdaptive, RawLatency};
use crate::policy::{Adaptive, Limit};

impl Compiler {
    pub(super) fn adaptive(&mut self, at: &str, a: &RawAdaptive, limit: Option<&Limit>) -> Option<Adaptive> {
        let before = self.problems.len();
        let here = format!("{at}.adaptive");
        let requests = limit.map_or(MAX_REQUESTS as u64, |l| l.requests);
        let floor = self.up_to_limit(&format!("{here}.floor"), a.floor, requests);
        let latency = a.latency.as_ref().and_then(|l| self.latency(&here, l));
        let errors_permille = self.share(&format!("{here}.errors"), a.errors, 100, "a share");
        let decrease_permille = self.share(&format!("{here}.decrease"), a.decrease, 500, "a factor");
        let interval = match a.interval.as_deref().map(Span::parse) {
            None => Some(Span::from_secs(10)),
            Some(Ok(s)) if s.nanos() >= 100_000_000 => Some(s),
            Some(Ok(_)) => {
                self.problem(format!("{here}.interval"), "must be at least 100ms");
                None
            }
            Some(Err(e)) => {
                self.problem(format!("{here}.interval"), e);
                None
            }
        };
        let increase = self.up_to_limit(&format!("{here}.increase"), a.increase, requests);
        let min_samples = match a.min_samples {
            None => Some(10),
            Some(n) if (1..=1_000_000).contains(&n) => Some(n as u32),
            Some(n) => {
                self.problem(format!("{here}.min_samples"), format!("must be between 1 and 1000000, got {n}"));
                None
            }
        };
        if self.problems.len() > before {
            return None;
        }
        Some(Adaptive {
            floor: floor?,
            latency,
            errors_permille,
            interval: interval?,
            decrease_permille: decrease_permille?,
            increase: increase?,
            min_samples: min_samples?,
        })
    }

    /// A count from 1 to the rule's limit (default: a tenth of it).
    fn up_to_limit(&mut self, here: &str, value: Option<i64>, requests: u64) -> Option<u64> {
        match value {
            None => Some((requests / 10).max(1)),
            Some(v) if v >= 1 && v as u64 <= requests => Some(v as u64),
            Some(v) => {
                self.problem(here.to_string(), format!("must be between 1 and the rule's limit ({requests}), got {v}"));
                None
            }
        }
    }

    /// A share or factor strictly between 0 and 1, in thousandths
    /// (`default` when not given).
    fn share(&mut self, here: &str, value: Option<f64>, default: u32, what: &str) -> Option<u32> {
        let Some(v) = value else { return Some(default) };
        let permille = (v > 0.0 && v < 1.0).then(|| (v * 1000.0).round() as u32);
        if permille.is_none() {
            self.problem(here.to_string(), format!("must be {what} between 0 and 1 (exclusive), got {v}"));
        }
        permille
    }

    /// An adaptive rule's latency condition: a percentile from 50 to 99
    /// above a duration.
    fn latency(&mut self, here: &str, l: &RawLatency) -> Option<(u8, Span)> {
        if !(50..=99).contains(&l.percentile) {
            self.problem(format!("{here}.latency.percentile"), format!("must be a whole number from 50 to 99, got {}", l.percentile));
        }
        match Span::parse(&l.above) {
            Ok(s) if s.nanos() > 0 => Some((l.percentile.clamp(50, 99) as u8, s)),
            Ok(_) => {
                self.problem(format!("{here}.latency.above"), "must be longer than 0");
                None
            }
            Err(e) => {
                self.problem(format!("{here}.latency.above"), e);
                None
            }
        }
    }
}
