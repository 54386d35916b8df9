//! Adaptive limits: a rule's effective limit moves between a floor and its
//! configured value with the upstream's health as the filter sees it.
//!
//! Every answered request of an adaptive rule is recorded: how long the
//! upstream took to answer (from the moment the filter let the request go)
//! and whether it answered 5xx. Samples are counted in two halves of the
//! rule's `interval`, so the health is always judged over the last whole
//! interval (sliding in half-interval steps). When a half ends, with at
//! least `min_samples` samples in the interval:
//! - overload (the share of 5xx above `errors`, or the latency percentile
//!   above its bound, i.e. more than `100 - percentile` % of answers slower)
//!   cuts the effective limit multiplicatively (`decrease`), at most once
//!   per interval, so that each cut is judged on answers given after the
//!   previous one;
//! - health raises it additively (`increase`), up to the configured limit.
//!
//! One state per rule (not per key: the health is the upstream's), in its
//! own shared-data entry, shared by the workers of the instance.

use crate::little_endian::{u32_at, u64_at};
use crate::policy::{Adaptive, Limit, Rule};
use crate::store::{update_key, SharedStore, StoreError};

/// Answers counted in one half-interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub answers: u32,
    pub slow: u32,
    pub errors: u32,
}

impl Counts {
    fn plus(self, o: Counts) -> Counts {
        Counts { answers: self.answers.saturating_add(o.answers), slow: self.slow.saturating_add(o.slow), errors: self.errors.saturating_add(o.errors) }
    }
}

/// A rule's health and effective limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// Effective requests per `per`; 0 means the configured limit.
    pub effective: u64,
    /// Start of the current half-interval (wall-clock ns).
    pub started: u64,
    /// When the limit was last cut.
    pub cut_at: u64,
    pub current: Counts,
    pub previous: Counts,
}

/// Why the effective limit moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub from: u64,
    pub to: u64,
    /// The interval's figures, for the log line.
    pub seen: Counts,
}

impl Health {
    /// The effective limit's requests.
    pub fn requests(&self, rule: &Rule) -> u64 {
        if self.effective == 0 {
            rule.limit.requests
        } else {
            self.effective.min(rule.limit.requests)
        }
    }

    /// Records one answer at `now`; returns a change of the effective limit.
    pub fn record(&mut self, a: &Adaptive, rule: &Rule, now: u64, latency_ns: u64, status: u32) -> Option<Change> {
        let change = self.roll(a, rule, now);
        let slow = a.latency.is_some_and(|(_, above)| latency_ns > above.nanos());
        let one = Counts { answers: 1, slow: u32::from(slow), errors: u32::from(status >= 500) };
        self.current = self.current.plus(one);
        change
    }

    /// Ends the half-intervals that are over at `now`, judging the
    /// interval when one ends.
    fn roll(&mut self, a: &Adaptive, rule: &Rule, now: u64) -> Option<Change> {
        let half = (a.interval.nanos() / 2).max(1);
        if self.started == 0 {
            self.started = now;
            return None;
        }
        if now < self.started.saturating_add(half) {
            return None;
        }
        let seen = self.current.plus(self.previous);
        let halves = now.saturating_sub(self.started).checked_div(half).unwrap_or(1);
        self.previous = if halves == 1 { self.current } else { Counts::default() };
        self.current = Counts::default();
        self.started = self.started.saturating_add(halves.saturating_mul(half));
        let from = self.requests(rule);
        let share = |n: u32| crate::bucket::mul_div(u64::from(n), 1000, u64::from(seen.answers));
        let too_slow = a.latency.is_some_and(|(pct, _)| share(seen.slow) > 1000u64.saturating_sub(u64::from(pct).saturating_mul(10)));
        let failing = a.errors_permille.is_some_and(|e| share(seen.errors) > u64::from(e));
        let to = match (too_slow || failing, seen.answers >= a.min_samples) {
            // Too few answers to judge an overload: hold.
            (true, false) => return None,
            (true, true) => {
                if self.cut_at != 0 && now.saturating_sub(self.cut_at) < a.interval.nanos() {
                    return None;
                }
                self.cut_at = now;
                crate::bucket::mul_div(from, u64::from(a.decrease_permille), 1000).max(a.floor)
            }
            // No sign of overload, however few answers a low limit lets
            // through: climb back.
            (false, _) => from.saturating_add(a.increase).min(rule.limit.requests),
        };
        self.effective = to;
        (to != from).then_some(Change { from, to, seen })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::ENCODED_LEN);
        for v in [self.effective, self.started, self.cut_at] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for c in [self.current, self.previous] {
            for v in [c.answers, c.slow, c.errors] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    pub const ENCODED_LEN: usize = 3 * 8 + 6 * 4;

    /// A value that is not a state (garbage, or absent) reads as fresh.
    pub fn decode(b: &[u8]) -> Health {
        let counts = |at: usize| Some(Counts { answers: u32_at(b, at)?, slow: u32_at(b, at.checked_add(4)?)?, errors: u32_at(b, at.checked_add(8)?)? });
        let read = || Some(Health { effective: u64_at(b, 0)?, started: u64_at(b, 8)?, cut_at: u64_at(b, 16)?, current: counts(24)?, previous: counts(36)? });
        if b.len() == Self::ENCODED_LEN {
            read().unwrap_or_default()
        } else {
            Health::default()
        }
    }
}

/// The shared-data key of a rule's health.
pub fn key(rule: &Rule) -> String {
    format!("sluice/adaptive/{:016x}", rule.identity)
}

/// Creates the health entries of the policy's adaptive rules that do not
/// exist yet (at configuration, so request-time writes are real CAS).
pub fn ensure(store: &dyn SharedStore, rules: &[Rule]) -> Result<(), StoreError> {
    for rule in rules.iter().filter(|r| r.adaptive.is_some()) {
        if store.get(&key(rule))?.is_none() {
            store.set(&key(rule), &Health::default().encode(), 0)?;
        }
    }
    Ok(())
}

/// The rule's limit as it stands: its configured one unless it adapts.
/// An error when its health cannot be read: the caller reports it and goes
/// on with the configured limit, which is what a fresh health allows
/// (`rule.limit`).
pub fn limit(store: &dyn SharedStore, rule: &Rule) -> Result<Limit, StoreError> {
    if rule.adaptive.is_none() {
        return Ok(rule.limit);
    }
    let health = store.get(&key(rule))?.map(|(b, _)| Health::decode(&b)).unwrap_or_default();
    Ok(scaled(rule, health.requests(rule)))
}

/// `rule`'s limit at `requests` per `per`, its burst scaled alike.
pub fn scaled(rule: &Rule, requests: u64) -> Limit {
    let l = rule.limit;
    if requests >= l.requests {
        return l;
    }
    let burst = crate::bucket::mul_div(l.burst, requests, l.requests).max(1);
    Limit { requests: requests.max(1), per: l.per, burst, calendar: l.calendar }
}

/// Records one answer of the upstream for `rule`.
pub fn record(store: &dyn SharedStore, rule: &Rule, now: u64, latency_ns: u64, status: u32) -> Result<Option<Change>, StoreError> {
    let Some(a) = rule.adaptive.as_ref() else { return Ok(None) };
    update_key(store, &key(rule), |bytes| {
        let mut health = Health::decode(bytes);
        let change = health.record(a, rule, now, latency_ns, status);
        (change, Some(health.encode()))
    })
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::policy::Policy;
    use crate::store::MemoryStore;

    const MS: u64 = 1_000_000;
    const T0: u64 = 1_763_382_885_000 * MS;

    fn rule() -> Rule {
        let p = Policy::from_json(
            r#"{"rules": [{"name": "search", "limit": {"requests": 20, "per": "1s"},
                "adaptive": {"floor": 4, "latency": {"percentile": 90, "above": "200ms"}, "errors": 0.2,
                             "interval": "1s", "min_samples": 5}}]}"#,
        )
        .expect("policy");
        p.rules[0].clone()
    }

    /// `n` answers spread over `ms` from `start`, each slow or failing as told.
    fn answers(store: &MemoryStore, r: &Rule, start: u64, ms: u64, n: u64, latency_ms: u64, status: u32) -> Vec<Change> {
        (0..n).filter_map(|i| record(store, r, start + i * ms * MS / n, latency_ms * MS, status).expect("record")).collect()
    }

    #[test]
    fn slow_answers_cut_the_limit_and_health_brings_it_back() {
        let store = MemoryStore::default();
        let r = rule();
        ensure(&store, std::slice::from_ref(&r)).expect("ensure");
        assert_eq!(limit(&store, &r).expect("health").requests, 20);
        // 2 s of answers slower than 200 ms at p90.
        let cuts = answers(&store, &r, T0, 2000, 40, 500, 200);
        assert!(!cuts.is_empty());
        assert_eq!(cuts[0].from, 20);
        assert_eq!(cuts[0].to, 10, "halved");
        let low = limit(&store, &r).expect("health");
        assert!(low.requests < 20 && low.requests >= 4, "{low:?}");
        assert!(low.burst <= low.requests);
        // Keep failing: never below the floor.
        answers(&store, &r, T0 + 2000 * MS, 5000, 100, 10, 503);
        assert_eq!(limit(&store, &r).expect("health").requests, 4);
        // Healthy again: climbs back by `increase` (default 2) per half.
        let ups = answers(&store, &r, T0 + 7000 * MS, 10_000, 200, 10, 200);
        assert!(ups.iter().all(|c| c.to > c.from));
        assert_eq!(limit(&store, &r).expect("health").requests, 20);
    }

    #[test]
    fn few_samples_or_a_few_slow_answers_change_nothing() {
        let store = MemoryStore::default();
        let r = rule();
        ensure(&store, std::slice::from_ref(&r)).expect("ensure");
        // 4 answers per second: below min_samples.
        assert!(answers(&store, &r, T0, 3000, 12, 900, 500).is_empty());
        // 1 in 20 slow: p90 is still fast.
        let mut changes = Vec::new();
        for i in 0..60u64 {
            let slow = if i % 20 == 0 { 900 } else { 10 };
            changes.extend(record(&store, &r, T0 + 4000 * MS + i * 50 * MS, slow * MS, 200).expect("record"));
        }
        assert!(changes.iter().all(|c| c.to >= c.from), "{changes:?}");
        assert_eq!(limit(&store, &r).expect("health").requests, 20);
    }

    /// A store whose reads of adaptive health fail.
    struct Unreadable(MemoryStore);
    impl SharedStore for Unreadable {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            if key.starts_with("sluice/adaptive/") {
                return Err(StoreError::Host("refused".into()));
            }
            self.0.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
            self.0.set(key, value, cas)
        }
    }

    #[test]
    fn an_unreadable_health_is_reported_and_the_configured_limit_applies() {
        let store = Unreadable(MemoryStore::default());
        let r = rule();
        assert_eq!(limit(&store, &r), Err(StoreError::Host("refused".into())));
        let p = Policy::from_json(r#"{"slots": 1024, "rules": [{"name": "search", "limit": {"requests": 20, "per": "1s"}, "adaptive": {"floor": 4}}]}"#)
            .expect("policy");
        crate::store::ensure_slots(&store.0, p.slots).expect("slots");
        let mut req = crate::request::MemoryRequest::new("GET", "/");
        let d = crate::limiter::decide(&p, &mut req, &store, crate::limiter::Ctx::at(T0));
        assert!(d.allowed());
        assert!(d.books.errors.is_empty(), "{:?}", d.books.errors);
        assert_eq!(d.books.unread, [(0, StoreError::Host("refused".into()))]);
        assert_eq!(d.ruling.applied[0].limit, 20, "the configured limit");
    }

    #[test]
    fn a_garbled_state_reads_as_fresh() {
        let store = MemoryStore::default();
        let r = rule();
        store.set(&key(&r), b"garbage", 0).expect("set");
        assert_eq!(limit(&store, &r).expect("health").requests, 20);
        assert!(record(&store, &r, T0, MS, 200).is_ok());
        assert_eq!(Health::decode(&Health::default().encode()), Health::default());
    }
}
