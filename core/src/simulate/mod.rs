//! Replaying recorded traffic through a policy (`sluicectl simulate`).
//!
//! Each recorded request goes through the filter's own state machine
//! ([`Flow`]) at the time it was recorded, against an in-memory store.
//! What the replay assumes:
//!
//! - One Envoy instance stands for the whole fleet: global rules reserve
//!   from one in-memory counter with the real service's contract (fixed
//!   windows of the rule's `per`, never more than the limit reserved in
//!   one), and every reservation is answered at once, so a request that
//!   waits for a lease gets its answer at the time it arrived, and leases
//!   are topped up as soon as a decision asks for it.
//! - A request held in a queue (`hold_ns`) goes at its turn; one told to
//!   come back (`redo_at`) is decided again then (on the filter's 10 ms
//!   tick), keeping the turns it holds, as the filter does.
//! - The counter service is always reachable (failure modes never apply),
//!   and upstream answers are not replayed: no upstream 429 is learnt
//!   (`obey_upstream`) and adaptive limits stay at their configured values.
//! - Clients never leave while held. A request holds the units of
//!   concurrency limits until it ended as recorded (`duration_ms`, Envoy's
//!   `%DURATION%`); a record without a duration frees them when it goes.
//!
//! [`Record`] is one line of the access log that `envoy.yaml` writes (see
//! `docs/operations.md`); [`Replay`] takes records in time order and counts,
//! per rule, what happened to the requests it applied to.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::counter_api::Ask;
use crate::flow::{apply_answers, At, Decided, Env, Event, Fate, Flow, Out, TICK_NS};
use crate::limiter::{explain, release, Carry, Decision, Explained, LeaseNeed, Spent};
use crate::policy::{Algorithm, Policy, Rule, Scope};
use crate::request::MemoryRequest;
use crate::store::MemoryStore;

const NS_PER_S: u64 = 1_000_000_000;
const NS_PER_MS: u64 = 1_000_000;

mod record;
pub use record::{format_time, parse_time, Record};
/// Keys listed per rule among those denied most.
pub const TOP_KEYS: usize = 5;
/// A request decided again this many times is given up on (counted as
/// denied). Held requests come back at most every tick until their
/// `max_wait` (at most 60 s) runs out, far fewer times than this.
const MAX_DECISIONS: u32 = 100_000;

/// A request between its arrival and its final decision.
struct Flight<'p> {
    req: MemoryRequest,
    flow: Flow<&'p Policy>,
    /// When the request ended, as recorded.
    ends: Option<u64>,
    /// Rules that applied to it (indices, ascending).
    applied: Vec<usize>,
    /// Rules that held it for its turn or for a later window.
    held_by: Vec<usize>,
    /// It waited (held or told to come back).
    held: bool,
    decisions: u32,
    /// Its explanation, worked out when needed (keys of denials, rules
    /// that hold it).
    explained: Option<Vec<Explained>>,
}

impl Flight<'_> {
    fn explained(&mut self, policy: &Policy) -> &[Explained] {
        let req = &self.req;
        self.explained.get_or_insert_with(|| explain(policy, &mut req.clone()))
    }
}

fn add(set: &mut Vec<usize>, rule: usize) {
    if let Err(at) = set.binary_search(&rule) {
        set.insert(at, rule);
    }
}

#[derive(Default)]
struct Tally {
    applied: u64,
    admitted: u64,
    queued: u64,
    denied: u64,
    shadow_denied: u64,
    /// Keys it denied (a shadow rule: would have denied), with counts.
    keys: HashMap<String, u64>,
}

/// Replays requests in time order through one policy.
pub struct Replay<'p> {
    policy: &'p Policy,
    store: MemoryStore,
    counter: crate::memory_counter::MemoryCounter,
    /// Requests to decide again, by (time, order of arrival at the queue).
    held: BTreeMap<(u64, u64), Flight<'p>>,
    /// Units of concurrency limits to release when their requests end, by
    /// (time, order).
    ends: BTreeMap<(u64, u64), Vec<Spent>>,
    seq: u64,
    now: u64,
    rng: u64,
    rules: Vec<Tally>,
    report: Report,
    /// A record was fed.
    fed: bool,
}

impl<'p> Replay<'p> {
    pub fn new(policy: &'p Policy) -> Replay<'p> {
        // The store's slots are created as keys first use them: with one
        // decision at a time, a first (unconditional) write cannot race
        // another, so this is what `ensure_slots` would give, without
        // allocating every slot of a large table up front.
        Replay {
            policy,
            store: MemoryStore::default(),
            counter: crate::memory_counter::MemoryCounter::default(),
            held: BTreeMap::new(),
            ends: BTreeMap::new(),
            seq: 0,
            now: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
            rules: policy.rules.iter().map(|_| Tally::default()).collect(),
            report: Report::default(),
            fed: false,
        }
    }

    /// Replays one request. Records must come in time order; one earlier
    /// than the previous is taken as arriving with it.
    pub fn feed(&mut self, record: &Record) {
        let now = record.time_ns.max(self.now);
        self.run_until(now);
        self.now = now;
        if !self.fed {
            self.fed = true;
            self.report.first_ns = now;
        }
        self.report.last_ns = now;
        let flight = Flight {
            req: record.request(),
            flow: Flow::new(self.policy),
            ends: record.duration_ns.map(|d| now.saturating_add(d)),
            applied: Vec::new(),
            held_by: Vec::new(),
            held: false,
            decisions: 0,
            explained: None,
        };
        self.step(flight, Event::Headers { end_of_stream: true }, now);
    }

    /// Ends the requests and decides the held ones whose time has come by
    /// `until`, in time order (a request ending frees its units before one
    /// decided at the same time).
    fn run_until(&mut self, until: u64) {
        loop {
            let end = self.ends.first_key_value().map(|(k, _)| k.0).filter(|t| *t <= until);
            let decide = self.held.first_key_value().map(|(k, _)| k.0).filter(|t| *t <= until);
            match (end, decide) {
                (Some(e), d) if d.is_none_or(|d| e <= d) => {
                    if let Some(((at, _), units)) = self.ends.pop_first() {
                        self.now = self.now.max(at);
                        // In memory: a release cannot fail.
                        let _ = release(&self.store, &units, at);
                    }
                }
                (_, Some(_)) => {
                    if let Some(((at, _), flight)) = self.held.pop_first() {
                        self.now = self.now.max(at);
                        self.step(flight, Event::Wake, at);
                    }
                }
                _ => break,
            }
        }
    }

    /// Lets every held request reach its final decision; the figures.
    pub fn finish(mut self) -> Report {
        self.run_until(u64::MAX);
        let mut report = std::mem::take(&mut self.report);
        report.rules = self
            .policy
            .rules
            .iter()
            .zip(self.rules)
            .map(|(rule, t)| {
                let mut keys: Vec<KeyCount> = t.keys.into_iter().map(|(key, count)| KeyCount { key, count }).collect();
                keys.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
                keys.truncate(TOP_KEYS);
                RuleReport {
                    rule: rule.name.clone(),
                    scope: if rule.scope == Scope::Global { "global" } else { "local" },
                    shadow: rule.shadow,
                    applied: t.applied,
                    admitted: t.admitted,
                    queued: t.queued,
                    denied: t.denied,
                    shadow_denied: t.shadow_denied,
                    top_denied: keys,
                }
            })
            .collect();
        report
    }

    /// Hands the request's flow one event, answering its reserve calls at
    /// once and its refills right after, and acts on what it decided.
    fn step(&mut self, mut f: Flight<'p>, event: Event, now: u64) {
        let policy = self.policy;
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        f.decisions = f.decisions.saturating_add(1);
        let mut at = At { now, random: self.rng, ..At::default() };
        let mut out = f.flow.on(event, &mut Env { store: &self.store, request: &mut f.req.clone(), host: &mut at });
        let (mut decided, mut refills) = (std::mem::take(&mut out.decided), std::mem::take(&mut out.refills));
        while let Some(needs) = out.call.take() {
            let answers = self.counter.reserve(&asks(&needs), now);
            out = f.flow.on(Event::Answered(Some(answers)), &mut Env { store: &self.store, request: &mut f.req.clone(), host: &mut at });
            decided.append(&mut out.decided);
            refills.append(&mut out.refills);
        }
        if !refills.is_empty() {
            // In memory: an answer that cannot be stored is lost, as in the
            // filter (which logs it).
            let answers = self.counter.reserve(&asks(&refills), now);
            apply_answers(policy, &self.store, &refills, &answers, now);
        }
        let Some(last) = decided.pop() else { return };
        for o in &last.decision.ruling.applied {
            add(&mut f.applied, o.rule);
        }
        match last.fate {
            Fate::Replied | Fate::Calls => self.settle(f, &last.decision, false),
            Fate::WaitsWindow if f.decisions >= MAX_DECISIONS => {
                f.flow.on(Event::Left, &mut Env { store: &self.store, request: &mut f.req.clone(), host: &mut at });
                self.settle(f, &Decision::default(), false);
            }
            Fate::WaitsWindow => self.wait_window(f, &last, &out, now),
            Fate::Holds | Fate::Goes => self.admit(f, &last, now),
        }
    }

    /// A request told to come back for a later window: the rules that
    /// apply but did not decide wait for a turn or a window.
    fn wait_window(&mut self, mut f: Flight<'p>, last: &Decided, out: &Out, now: u64) {
        let (policy, d) = (self.policy, &last.decision);
        f.held = true;
        let waiting: Vec<usize> = f
            .explained(policy)
            .iter()
            .filter(|e| e.applies() && !d.ruling.applied.iter().any(|o| o.rule == e.rule) && !d.books.errors.iter().any(|(r, _)| *r == e.rule))
            .map(|e| e.rule)
            .collect();
        for r in waiting {
            add(&mut f.held_by, r);
            add(&mut f.applied, r);
        }
        // Held requests are woken on the filter's tick.
        let at = out.wake_at.unwrap_or(now).max(now.saturating_add(1)).div_ceil(TICK_NS).saturating_mul(TICK_NS);
        self.seq = self.seq.wrapping_add(1);
        self.held.insert((at, self.seq), f);
    }

    /// An admitted request: the rules whose queue it waits in, and the
    /// concurrency units it holds until it ended.
    fn admit(&mut self, mut f: Flight<'p>, last: &Decided, now: u64) {
        let (policy, d) = (self.policy, &last.decision);
        if d.ruling.hold_ns > 0 {
            f.held = true;
            for o in d.ruling.applied.iter().filter(|o| o.outcome.allowed) {
                let kept_turn = last.carried.iter().any(|c| matches!(*c, Carry::Turn { rule, .. } if rule == o.rule));
                let waits = if kept_turn {
                    o.outcome.reset_ns > 0
                } else {
                    // A turn taken now: the bucket's debt is past what it
                    // lets through at once.
                    policy.rules.get(o.rule).is_some_and(|rule| rule.queue.is_some() && o.outcome.reset_ns > capacity_ns(&self.store, rule))
                };
                if waits {
                    add(&mut f.held_by, o.rule);
                }
            }
        }
        // Units of concurrency limits are held until the request ended, as
        // recorded (without a duration: at once).
        let units: Vec<Spent> = d.effects.spent.iter().filter(|s| matches!(s, Spent::Concurrent { .. })).copied().collect();
        if !units.is_empty() {
            let went = now.saturating_add(d.ruling.hold_ns);
            self.seq = self.seq.wrapping_add(1);
            self.ends.insert((f.ends.unwrap_or(went).max(went), self.seq), units);
        }
        self.settle(f, d, true);
    }

    /// Counts a request's final decision.
    fn settle(&mut self, mut f: Flight<'p>, d: &Decision, admitted: bool) {
        let policy = self.policy;
        let r = &mut self.report;
        let bump = |n: &mut u64, by: bool| *n = n.saturating_add(u64::from(by));
        bump(&mut r.requests, true);
        bump(&mut r.admitted, admitted);
        bump(&mut r.denied, !admitted);
        bump(&mut r.queued, f.held);
        bump(&mut r.shadow_denied, !d.ruling.shadow_denied.is_empty());
        for &i in &f.applied {
            if let Some(rule) = self.rules.get_mut(i) {
                bump(&mut rule.applied, true);
                bump(&mut rule.admitted, admitted);
            }
        }
        for &i in &f.held_by {
            self.rules.get_mut(i).into_iter().for_each(|rule| bump(&mut rule.queued, true));
        }
        let mut denials: Vec<usize> = d.ruling.shadow_denied.iter().map(|o| o.rule).collect();
        if let Some(o) = d.ruling.denied_by {
            self.rules.get_mut(o.rule).into_iter().for_each(|rule| bump(&mut rule.denied, true));
            denials.push(o.rule);
        }
        for o in &d.ruling.shadow_denied {
            self.rules.get_mut(o.rule).into_iter().for_each(|rule| bump(&mut rule.shadow_denied, true));
        }
        if denials.is_empty() {
            return;
        }
        let explained = f.explained(policy);
        for i in denials {
            let key = explained.get(i).map(Explained::key_text).unwrap_or_default();
            if let Some(rule) = self.rules.get_mut(i) {
                bump(rule.keys.entry(key).or_default(), true);
            }
        }
    }
}

fn asks(needs: &[LeaseNeed]) -> Vec<Ask> {
    needs.iter().map(|n| n.ask.clone()).collect()
}

/// How far (ns) a token bucket's debt may run before a request waits.
fn capacity_ns(store: &MemoryStore, rule: &Rule) -> u64 {
    if rule.algorithm != Algorithm::TokenBucket {
        return u64::MAX;
    }
    // A memory store's reads do not fail; were one to, the configured
    // limit is what a fresh health allows.
    let limit = crate::adaptive::limit(store, rule).unwrap_or(rule.limit);
    crate::bucket::mul_div(limit.per.nanos(), limit.burst, limit.requests)
}

/// Replays `records` (sorted by time here; equal times keep their order).
pub fn replay(policy: &Policy, mut records: Vec<Record>) -> Report {
    records.sort_by_key(|r| r.time_ns);
    let mut replay = Replay::new(policy);
    for r in &records {
        replay.feed(r);
    }
    replay.finish()
}

/// What a replay found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Requests replayed.
    pub requests: u64,
    /// Let through (at once or after waiting).
    pub admitted: u64,
    /// Held for a while (then admitted or denied).
    pub queued: u64,
    /// Refused (429).
    pub denied: u64,
    /// Requests some shadow rule would have refused.
    pub shadow_denied: u64,
    /// The first and last arrival replayed (ns since the epoch; 0 when
    /// there were none).
    pub first_ns: u64,
    pub last_ns: u64,
    /// Every rule, in policy order.
    pub rules: Vec<RuleReport>,
}

/// One rule's figures. A request counts once per rule however many times
/// it was decided.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RuleReport {
    pub rule: String,
    /// `local` or `global`.
    pub scope: &'static str,
    pub shadow: bool,
    /// Requests the rule applied to.
    pub applied: u64,
    /// Of those, admitted.
    pub admitted: u64,
    /// Of those, held by this rule (for their turn in its queue, or for
    /// a later window of its global budget).
    pub queued: u64,
    /// Requests this rule refused (when several refuse one, the one whose
    /// wait is longest, as the 429 names it).
    pub denied: u64,
    /// Requests this shadow rule would have refused.
    pub shadow_denied: u64,
    /// The keys refused most (would-be refusals for a shadow rule), most
    /// first, at most [`TOP_KEYS`].
    pub top_denied: Vec<KeyCount>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KeyCount {
    /// The key as `explain` shows it (`tenant=acme`); empty for a rule
    /// whose key has no parts.
    pub key: String,
    pub count: u64,
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::testing::S;

    const GATEWAY: &str = include_str!("../../../policies/mcp-gateway.json");
    /// 2026-11-26T12:34:45Z, a whole second.
    const T0: u64 = 1_795_696_485 * S;
    const MS: u64 = 1_000_000;

    fn gateway() -> Policy {
        Policy::from_json(GATEWAY).expect("gateway policy")
    }

    fn rec(t: u64, method: &str, path: &str, headers: &[(&str, &str)]) -> Record {
        Record {
            time_ns: t,
            method: method.into(),
            path: path.into(),
            authority: Some("gateway.example".into()),
            client_ip: Some("10.0.0.1".into()),
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            body: None,
            duration_ns: None,
        }
    }

    /// `rate` requests a second for `secs` seconds from `start`.
    fn steady(start: u64, rate: u64, secs: u64, make: impl Fn(u64) -> Record) -> Vec<Record> {
        (0..rate * secs).map(|i| make(start + i * S / rate)).collect()
    }

    fn rule<'a>(r: &'a Report, name: &str) -> &'a RuleReport {
        r.rules.iter().find(|x| x.rule == name).unwrap_or_else(|| panic!("no rule {name}"))
    }

    #[test]
    fn parses_the_envoy_access_log_line() {
        let line = r#"{"authority":"127.0.0.1:34437","client_ip":"127.0.0.1","headers":{"x-forwarded-for":"203.0.113.9","x-integration":null,"x-priority":null,"x-tenant-id":"logged"},"method":"GET","path":"/api/v1/tools/list?x=1","status":200,"ts":"1795745929.312"}"#;
        let r = Record::parse(line).expect("parsed");
        assert_eq!(r.time_ns, 1_795_745_929_312_000_000);
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/api/v1/tools/list?x=1"));
        assert_eq!(r.authority.as_deref(), Some("127.0.0.1:34437"));
        assert_eq!(r.client_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(r.headers, vec![("x-forwarded-for".to_string(), "203.0.113.9".to_string()), ("x-tenant-id".to_string(), "logged".to_string())]);
        assert_eq!(r.body, None);
        let req = r.request();
        assert_eq!(req.source_address, "127.0.0.1");
        let minimal = Record::parse(r#"{"ts": 1795745929, "method": "POST", "path": "/x", "body": "{\"a\":1}"}"#).expect("minimal");
        assert_eq!(minimal.time_ns, 1_795_745_929 * S);
        assert_eq!(minimal.body.as_deref(), Some("{\"a\":1}"));
        assert_eq!(minimal.client_ip, None);
        assert_eq!(minimal.duration_ns, None);
        let timed = |d: &str| Record::parse(&format!(r#"{{"ts": 1, "method": "GET", "path": "/", "duration_ms": {d}}}"#)).map(|r| r.duration_ns);
        assert_eq!(timed("1500"), Ok(Some(1500 * MS)));
        assert_eq!(timed(r#""25""#), Ok(Some(25 * MS)));
        assert_eq!(timed(r#""-""#), Ok(None), "Envoy's `-` for a value it does not have");
        assert!(timed("-3").is_err() && timed("1.5").is_err() && timed(r#""x""#).is_err() && timed("[]").is_err());
    }

    #[test]
    fn concurrency_limits_hold_their_units_for_the_recorded_duration() {
        let policy = Policy::from_json(
            r#"{"tenant": [{"header": "x-tenant-id"}], "rules": [
            {"name": "in-flight", "key": ["tenant"], "limit": {"concurrent": 2}}]}"#,
        )
        .expect("policy");
        // Five requests 100 ms apart, each lasting 250 ms: at most 2 in
        // flight, so the 3rd (at 200 ms, the 1st and 2nd still running) is
        // refused; the 4th (300 ms) finds the 1st ended (250 ms) and goes;
        // the 5th (400 ms) finds the 2nd ended (350 ms) and goes.
        let records: Vec<Record> =
            (0..5).map(|i| Record { duration_ns: Some(250 * MS), ..rec(T0 + i * 100 * MS, "GET", "/x", &[("x-tenant-id", "t")]) }).collect();
        let r = replay(&policy, records.clone());
        assert_eq!((rule(&r, "in-flight").admitted, rule(&r, "in-flight").denied), (4, 1));
        // Without durations the units are freed when each request goes.
        let untimed: Vec<Record> = records.into_iter().map(|r| Record { duration_ns: None, ..r }).collect();
        assert_eq!(rule(&replay(&policy, untimed), "in-flight").denied, 0);
    }

    #[test]
    fn times_in_every_accepted_form() {
        let t = |v: serde_json::Value| parse_time(&v);
        let want = 1_795_696_485 * S + 312 * MS;
        assert_eq!(t(serde_json::json!("1795696485.312")), Ok(want));
        assert_eq!(t(serde_json::json!(1_795_696_485.312)), Ok(want));
        assert_eq!(t(serde_json::json!("2026-11-26T12:34:45.312Z")), Ok(want));
        assert_eq!(t(serde_json::json!("2026-11-26t14:34:45.312+02:00")), Ok(want));
        assert_eq!(t(serde_json::json!("2026-11-26 07:04:45.312-05:30")), Ok(want));
        assert_eq!(t(serde_json::json!("1795696485.123456789123")), Ok(1_795_696_485 * S + 123_456_789));
        assert_eq!(t(serde_json::json!("2024-02-29T00:00:00Z")), Ok(1_709_164_800 * S));
        assert_eq!(t(serde_json::json!(1.7e9)), Ok(1_700_000_000 * S));
        assert_eq!(format_time(want), "2026-11-26T12:34:45.312Z");
        for s in [0, 951_782_400, 1_709_164_800, 4_102_444_799, 7_258_118_399] {
            assert_eq!(t(serde_json::json!(format_time(s * S))), Ok(s * S), "{}", format_time(s * S));
        }
        for bad in [
            serde_json::json!("soon"),
            serde_json::json!("-5"),
            serde_json::json!("12.3.4"),
            serde_json::json!("2023-02-29T00:00:00Z"),
            serde_json::json!("2026-11-26T12:34:45"),
            serde_json::json!("2026-13-26T12:34:45Z"),
            serde_json::json!("2026-11-26T12:34:45.Z"),
            serde_json::json!("1969-12-31T23:59:59Z"),
            serde_json::json!("99999999999999999999"),
            serde_json::json!("7258118400"),
            serde_json::json!("2200-01-01T00:00:00Z"),
            serde_json::json!("9999-12-31T23:59:59Z"),
            serde_json::json!(-1),
            serde_json::json!(true),
        ] {
            assert!(t(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        for (line, says) in [
            ("", "not JSON"),
            ("[1]", "not a JSON object"),
            (r#"{"method":"GET","path":"/"}"#, "no \"ts\""),
            (r#"{"ts":"x","method":"GET","path":"/"}"#, "\"ts\""),
            (r#"{"ts":1,"path":"/"}"#, "no \"method\""),
            (r#"{"ts":1,"method":"GE T","path":"/"}"#, "not an HTTP method"),
            (r#"{"ts":1,"method":"GET"}"#, "no \"path\""),
            (r#"{"ts":1,"method":"GET","path":7}"#, "\"path\" is not a string"),
            (r#"{"ts":1,"method":"GET","path":"/","client_ip":"nowhere"}"#, "not an IP address"),
            (r#"{"ts":1,"method":"GET","path":"/","headers":{"x-a":1}}"#, "header \"x-a\""),
            (r#"{"ts":1,"method":"GET","path":"/","headers":[]}"#, "\"headers\" is not an object"),
        ] {
            let err = Record::parse(line).expect_err(line);
            assert!(err.contains(says), "{line}: {err}");
        }
    }

    #[test]
    fn one_tenant_over_tools_list_gets_the_limit_per_window() {
        let p = gateway();
        // 10/s for 5 s against tools-list's 5/s (global), half a second
        // into the service's window.
        let log = steady(T0 + S / 2, 10, 5, |t| rec(t, "GET", "/api/v1/tools/list", &[("x-tenant-id", "acme")]));
        let r = replay(&p, log);
        assert_eq!(r.requests, 50);
        // At least the budget of the five windows the traffic fills, at
        // most the bucket's burst plus its rate over 5 s.
        assert!((25..=30).contains(&r.admitted), "{r:?}");
        assert_eq!(r.admitted + r.denied, 50);
        assert_eq!(r.queued, 0);
        let list = rule(&r, "tools-list");
        assert_eq!((list.applied, list.admitted, list.denied, list.queued), (50, r.admitted, r.denied, 0));
        assert_eq!(list.top_denied, vec![KeyCount { key: "tenant=acme".into(), count: r.denied }]);
        for other in ["per-ip", "per-tenant"] {
            let o = rule(&r, other);
            assert_eq!((o.applied, o.admitted, o.denied), (50, r.admitted, 0), "{other}");
        }
        assert_eq!(rule(&r, "tools-invoke").applied, 0);
        assert_eq!((r.first_ns, r.last_ns), (T0 + S / 2, T0 + S / 2 + 49 * S / 10));
    }

    #[test]
    fn tenants_are_counted_apart() {
        let p = gateway();
        let mut log = steady(T0, 10, 4, |t| rec(t, "GET", "/api/v1/tools/list", &[("x-tenant-id", "busy")]));
        log.extend(steady(T0 + 3 * MS, 3, 4, |t| rec(t, "GET", "/api/v1/tools/list", &[("x-tenant-id", "calm")])));
        let r = replay(&p, log);
        let list = rule(&r, "tools-list");
        assert_eq!(list.applied, 52);
        assert!(r.denied >= 15, "{r:?}");
        assert_eq!(list.admitted, 52 - r.denied, "every calm request passes");
        assert_eq!(list.top_denied.len(), 1, "{:?}", list.top_denied);
        assert_eq!(list.top_denied[0], KeyCount { key: "tenant=busy".into(), count: r.denied });
    }

    #[test]
    fn an_integration_rule_queues_then_refuses_past_its_wait() {
        let p = gateway();
        // Nine Notion calls at once: 3 per window, all within 2 s.
        let nine: Vec<Record> =
            (0..9).map(|_| rec(T0 + 300 * MS, "POST", "/api/v1/tools/invoke", &[("x-tenant-id", "acme"), ("x-integration", "notion")])).collect();
        let r = replay(&p, nine);
        let notion = rule(&r, "integration-notion");
        assert_eq!((r.admitted, r.denied), (9, 0), "{r:?}");
        assert_eq!((notion.applied, notion.admitted, notion.queued), (9, 9, 6), "{notion:?}");
        assert_eq!(r.queued, 6);
        assert_eq!(rule(&r, "tools-invoke").queued, 0, "only the integration rule queues");
        // Twenty at once: what cannot go within 2 s is refused.
        let twenty: Vec<Record> =
            (0..20).map(|_| rec(T0 + 300 * MS, "POST", "/api/v1/tools/invoke", &[("x-tenant-id", "acme"), ("x-integration", "notion")])).collect();
        let r = replay(&p, twenty);
        let notion = rule(&r, "integration-notion");
        assert!((9..=10).contains(&r.admitted), "{r:?}");
        assert_eq!(notion.denied, 20 - r.admitted);
        assert!(notion.queued >= 6, "{notion:?}");
        assert_eq!(notion.top_denied[0].key, "integration=notion:tenant=acme");
    }

    #[test]
    fn a_local_queue_holds_requests_for_their_turn() {
        let p = Policy::from_json(
            r#"{"rules": [
            {"name": "per-ip", "key": ["client_ip"], "limit": {"requests": 100, "per": "1s"}},
            {"name": "slow", "key": [{"header": "x-user"}], "limit": {"requests": 2, "per": "1s"}, "queue": {"max_wait": "2s"}}]}"#,
        )
        .expect("policy");
        // Two go at once, four take turns at 0.5 s intervals (the last at
        // 2 s), the rest would wait longer.
        let log: Vec<Record> = (0..8).map(|_| rec(T0, "GET", "/", &[("x-user", "u")])).collect();
        let r = replay(&p, log);
        assert_eq!((r.admitted, r.queued, r.denied), (6, 4, 2), "{r:?}");
        assert_eq!((r.rules[1].queued, r.rules[1].denied), (4, 2));
        assert_eq!((r.rules[0].queued, r.rules[0].applied, r.rules[0].admitted), (0, 8, 6));
    }

    #[test]
    fn a_global_rule_behaves_like_the_same_local_limit() {
        let policy = |scope: &str| {
            Policy::from_json(&format!(
                r#"{{"global": {{}}, "tenant": [{{"header": "x-tenant-id"}}], "rules": [
                {{"name": "per-tenant", "scope": "{scope}", "key": ["tenant"], "limit": {{"requests": 8, "per": "1s"}}}}]}}"#
            ))
            .expect("policy")
        };
        let log = steady(T0 + 250 * MS, 20, 6, |t| rec(t, "GET", "/x", &[("x-tenant-id", "t")]));
        let local = replay(&policy("local"), log.clone());
        let global = replay(&policy("global"), log);
        assert!((48..=56).contains(&local.admitted), "{local:?}");
        // The service's windows cap each one at the limit; the instance's
        // own bucket may admit one burst more over the run.
        assert!(global.admitted <= local.admitted && local.admitted - global.admitted <= 8, "local {} global {}", local.admitted, global.admitted);
        assert_eq!(global.rules[0].scope, "global");
        assert_eq!(global.rules[0].denied, 120 - global.admitted);
    }

    #[test]
    fn a_global_rule_never_admits_more_than_its_limit_in_a_window() {
        // A burst twice the limit: the instance's bucket would let 16 go at
        // once, the service's window only 8.
        let policy = |scope: &str| {
            Policy::from_json(&format!(
                r#"{{"global": {{}}, "rules": [
                {{"name": "all", "scope": "{scope}", "key": [], "limit": {{"requests": 8, "per": "1s", "burst": 16}}}}]}}"#
            ))
            .expect("policy")
        };
        let log: Vec<Record> = (0..40).map(|i| rec(T0 + 100 * MS + i, "GET", "/", &[])).collect();
        assert_eq!(replay(&policy("local"), log.clone()).admitted, 16);
        let global = replay(&policy("global"), log.clone());
        assert_eq!(global.admitted, 8, "{global:?}");
        assert_eq!(global.rules[0].top_denied, vec![KeyCount { key: String::new(), count: 32 }]);
        // The next window has its own budget.
        let mut two = log;
        two.extend((0..40).map(|i| rec(T0 + S + 100 * MS + i, "GET", "/", &[])));
        assert_eq!(replay(&policy("global"), two).admitted, 16);
    }

    #[test]
    fn shadow_rules_count_what_they_would_deny() {
        let p = Policy::from_json(
            r#"{"rules": [
            {"name": "watch", "mode": "shadow", "key": ["client_ip"], "limit": {"requests": 2, "per": "1s"}},
            {"name": "enforce", "key": [], "limit": {"requests": 100, "per": "1s"}}]}"#,
        )
        .expect("policy");
        let log: Vec<Record> = (0..10).map(|i| rec(T0 + i * MS, "GET", "/", &[])).collect();
        let r = replay(&p, log);
        assert_eq!((r.admitted, r.denied, r.shadow_denied), (10, 0, 8));
        assert!(r.rules[0].shadow);
        assert_eq!((r.rules[0].shadow_denied, r.rules[0].denied), (8, 0));
        assert_eq!(r.rules[0].top_denied, vec![KeyCount { key: "client_ip=10.0.0.1".into(), count: 8 }]);
    }

    #[test]
    fn records_are_replayed_in_time_order() {
        let p = gateway();
        let log = steady(T0, 10, 3, |t| rec(t, "GET", "/api/v1/tools/list", &[("x-tenant-id", "acme")]));
        let mut shuffled = log.clone();
        shuffled.reverse();
        shuffled.swap(3, 17);
        assert_eq!(replay(&p, shuffled), replay(&p, log));
    }
}
