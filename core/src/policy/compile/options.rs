//! A rule's options beside its limit: the queue (how long and how many
//! may wait), the cost (where a request's units come from) and the
//! priority classes (header, classes, reserve, aging).

use super::limits::MAX_REQUESTS;
use super::Compiler;
use crate::duration::Span;
use crate::policy::raw::{RawCost, RawCount, RawPenalty, RawPriority, RawQueue};
use crate::policy::{Algorithm, Cost, CostSource, Limit, Penalty, Priority, Queue};

impl Compiler {
    /// Which requests the rule counts: the status from which an answer
    /// gives the units back (`None`: every request counts).
    pub(super) fn count(&mut self, at: &str, c: &RawCount) -> Option<u16> {
        match c {
            RawCount::Word(w) if w == "all" => None,
            RawCount::Word(w) if w == "success" => Some(500),
            RawCount::Word(w) => {
                self.problem(format!("{at}.count"), format!("{w:?} is not a count: \"all\", \"success\" or {{\"success_below\": status}}"));
                None
            }
            RawCount::Below { below } => match u16::try_from(*below) {
                Ok(b) if (200..=599).contains(&b) => Some(b),
                _ => {
                    self.problem(format!("{at}.count.success_below"), format!("{below} is not a status from 200 to 599"));
                    None
                }
            },
        }
    }

    /// The penalty box: how many refusals, within how long, block the key
    /// for how long (each from 1s to 1h), and the tier its 429 names.
    pub(super) fn penalty(&mut self, at: &str, p: &RawPenalty) -> Option<Penalty> {
        let before = self.problems.len();
        if !(1..=10_000).contains(&p.after) {
            self.problem(format!("{at}.penalty.after"), format!("{} is out of range: 1 to 10000 refusals", p.after));
        }
        let mut span = |field: &str, raw: &str| match Span::parse(raw) {
            Ok(s) if (1_000_000_000..=3_600_000_000_000).contains(&s.nanos()) => Some(s),
            Ok(s) => {
                self.problem(format!("{at}.penalty.{field}"), format!("{s} is out of range: at least 1s and at most 1h"));
                None
            }
            Err(e) => {
                self.problem(format!("{at}.penalty.{field}"), e);
                None
            }
        };
        let (within, block) = (span("within", &p.within), span("block", &p.block));
        let tier = p.tier.clone().unwrap_or_else(|| "penalty".to_string());
        if tier.is_empty() || tier.len() > 64 || !tier.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            self.problem(format!("{at}.penalty.tier"), format!("{tier:?} must be 1-64 letters, digits, '-' or '_'"));
        }
        if self.problems.len() > before {
            return None;
        }
        Some(Penalty { after: u64::try_from(p.after).ok()?, within: within?, block: block?, tier })
    }

    pub(super) fn queue(&mut self, at: &str, q: &RawQueue, algorithm: Algorithm, limit: Option<&Limit>) -> Option<Queue> {
        let before = self.problems.len();
        if algorithm != Algorithm::TokenBucket {
            self.problem(format!("{at}.queue"), "only token_bucket rules can queue: the bucket reserves each waiting request's turn");
        }
        let max_wait = match Span::parse(&q.max_wait) {
            Ok(w) if w.nanos() <= 60 * 1_000_000_000 => Some(w),
            Ok(_) => {
                self.problem(format!("{at}.queue.max_wait"), format!("{:?} is too long: at most 60s", q.max_wait));
                None
            }
            Err(e) => {
                self.problem(format!("{at}.queue.max_wait"), e);
                None
            }
        };
        let max_queued = match q.max_queued {
            None => None,
            Some(n) if (1..=100_000).contains(&n) => Some(n as u64),
            Some(n) => {
                self.problem(format!("{at}.queue.max_queued"), format!("must be between 1 and 100000, got {n}"));
                None
            }
        };
        if self.problems.len() > before {
            return None;
        }
        let (max_wait, limit) = (max_wait?, limit?);
        // By default as many as the limit lets through in max_wait.
        let by_rate = crate::bucket::mul_div(limit.requests, max_wait.nanos(), limit.per.nanos()).max(1);
        Some(Queue { max_wait, max_queued: max_queued.unwrap_or(by_rate) })
    }

    pub(super) fn cost(&mut self, at: &str, c: &RawCost, limit: Option<&Limit>) -> Option<Cost> {
        let before = self.problems.len();
        let source = self.cost_source(at, c);
        let from_response = matches!(source, Some(CostSource::ResponseHeader(_) | CostSource::ResponseBody(_)));
        let burst = limit.map_or(MAX_REQUESTS as u64, |l| l.burst.max(l.requests));
        let max = match c.max {
            None => Some(burst),
            Some(m) if m >= 1 && (m as u64) <= burst => Some(m as u64),
            Some(m) => {
                self.problem(format!("{at}.cost.max"), format!("must be between 1 and the rule's burst ({burst}), got {m}"));
                None
            }
        };
        // A response's cost is charged as its estimate until the response
        // tells; a request's as its default when the field is missing.
        let (field, given, other) =
            if from_response { ("estimate", c.estimate, ("default", c.default)) } else { ("default", c.default, ("estimate", c.estimate)) };
        if other.1.is_some() && source.is_some() {
            let why = if from_response {
                "a cost read from the response takes `estimate`, charged until the response tells"
            } else {
                "`estimate` is for a cost read from the response (`response_header` or `response_body`)"
            };
            self.problem(format!("{at}.cost.{}", other.0), why);
        }
        let default = match given {
            None => Some(1),
            Some(d) if d >= 0 && max.is_none_or(|m| d as u64 <= m) => Some(d as u64),
            Some(d) => {
                self.problem(format!("{at}.cost.{field}"), format!("must be between 0 and `max`, got {d}"));
                None
            }
        };
        if self.problems.len() > before {
            return None;
        }
        Some(Cost { source: source?, default: default?, max: max? })
    }

    /// Where a cost is read: exactly one of the four sources.
    fn cost_source(&mut self, at: &str, c: &RawCost) -> Option<CostSource> {
        let given = [c.header.is_some(), c.body.is_some(), c.response_header.is_some(), c.response_body.is_some()];
        if given.iter().filter(|g| **g).count() != 1 {
            self.problem(format!("{at}.cost"), "give exactly one of `header`, `body`, `response_header` or `response_body`");
            return None;
        }
        let mut path = |field: &str, b: &str| {
            if !b.is_empty() && b.split('.').all(|p| !p.is_empty()) {
                return Some(b.split('.').map(str::to_string).collect::<Vec<_>>());
            }
            self.problem(format!("{at}.cost.{field}"), format!("{b:?} must be a dotted path of JSON object keys, like \"usage.units\""));
            None
        };
        if let Some(b) = &c.body {
            return path("body", b).map(CostSource::Body);
        }
        if let Some(b) = &c.response_body {
            return path("response_body", b).map(CostSource::ResponseBody);
        }
        if let Some(h) = &c.response_header {
            return self.header_name(&format!("{at}.cost.response_header"), h).map(CostSource::ResponseHeader);
        }
        let h = c.header.as_deref().unwrap_or_default();
        self.header_name(&format!("{at}.cost.header"), h).map(CostSource::Header)
    }

    pub(super) fn priority(&mut self, at: &str, p: &RawPriority, algorithm: Algorithm, limit: Option<&Limit>, queue: Option<&Queue>) -> Option<Priority> {
        let before = self.problems.len();
        let here = format!("{at}.priority");
        if algorithm != Algorithm::TokenBucket {
            self.problem(here.clone(), "only token_bucket rules have priority classes: classes are kept apart by the tokens left in the bucket");
        }
        let header = self.header_name(&format!("{here}.header"), &p.header);
        let classes: Vec<String> = p.classes.iter().map(|c| c.trim().to_ascii_lowercase()).collect();
        if !(2..=8).contains(&classes.len()) {
            self.problem(format!("{here}.classes"), format!("give 2 to 8 class names, highest first; got {}", classes.len()));
        }
        for (i, c) in classes.iter().enumerate() {
            if c.is_empty() || classes.iter().take(i).any(|o| o == c) {
                self.problem(format!("{here}.classes[{i}]"), format!("{c:?} must be a non-empty name used once"));
            }
        }
        let default = match &p.default {
            None => Some(classes.len().saturating_sub(1) / 2),
            Some(d) => {
                let found = classes.iter().position(|c| c.eq_ignore_ascii_case(d));
                if found.is_none() {
                    self.problem(format!("{here}.default"), format!("{d:?} is not one of the classes"));
                }
                found
            }
        };
        let lower = classes.len().saturating_sub(1) as u64;
        let burst = limit.map_or(u64::MAX, |l| l.burst);
        let reserve = match p.reserve {
            None => Some(burst.checked_div(classes.len() as u64).unwrap_or(burst).max(1)),
            Some(r) if r >= 1 => Some(r as u64),
            Some(r) => {
                self.problem(format!("{here}.reserve"), format!("must be at least 1, got {r}"));
                None
            }
        };
        if let (Some(r), Some(l)) = (reserve, limit) {
            if r.saturating_mul(lower) >= l.burst {
                self.problem(
                    format!("{here}.reserve"),
                    format!("{r} tokens kept back per class leave the lowest class no room: the burst ({}) must exceed reserve × {lower}", l.burst),
                );
            }
        }
        let aging = match &p.aging {
            None => Some(
                queue.map_or(Span::from_nanos(1_000_000_000), |q| Span::from_nanos(q.max_wait.nanos().checked_div(classes.len() as u64).unwrap_or(1).max(1))),
            ),
            Some(a) => match Span::parse(a) {
                Ok(s) if s.nanos() > 0 => Some(s),
                Ok(_) => {
                    self.problem(format!("{here}.aging"), "must be longer than 0");
                    None
                }
                Err(e) => {
                    self.problem(format!("{here}.aging"), e);
                    None
                }
            },
        };
        if self.problems.len() > before {
            return None;
        }
        Some(Priority { header: header?, classes, default: default?, reserve: reserve?, aging: aging? })
    }
}
