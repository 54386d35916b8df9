//! Scenario `accuracy`: global limits across 3 Envoy instances × 2 workers
//! sharing one counter service and one real Redis, measured like
//! `tests/global_in_envoy.rs`: each instance is offered the rule's limit
//! (3× overload in all) for one window of warm-up, then for whole windows
//! aligned to the counter service's one-second windows. Reported per rule:
//! admitted ÷ allowed, counter-service calls per admitted request, and, in
//! a separate run at half the limit in all, false denials (any 429 there).
//! Two more rows have two rules bind at once: one tenant floods
//! `tools/invoke` (20/s, and `per-tenant` 100/s applies too) at 10× and 50×
//! its limit, a third at each instance, each window measured on its own
//! (from 5 ms after it starts to 60 ms before it ends) for the worst one.
//!
//! The other rows run on [`crate::accuracy_load::timeline`], which offers
//! load without a pause from the warm-up window to the end and counts every
//! answer in the window in which it arrived (the client's clock, aligned to
//! whole seconds like the counter service's windows):
//!
//! - two rules binding at 100/s: `bulk` and `per-tenant`, 10× (1,000/s, a
//!   third at each instance), counter calls over the whole run after the
//!   warm-up window, and false denials at half the limit;
//! - skew: one tenant at 3× `per-tenant` (300/s), all of it at instance 0
//!   for the first half of the windows, then all at instance 1;
//! - fairness: 50 tenants each at 1.5× `tools-invoke` (30/s each, 1,500/s in
//!   all, round-robin over the instances);
//! - bursts: `per-tenant` at 5× (500/s) for 2 windows, silent for 2, again
//!   and again; only the windows with load count;
//! - a small limit that queues: `integration-notion` (3/s, queue up to
//!   2 s) at 10× (30/s); a queued request counts in the window its answer
//!   arrived in.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use wasm_test_harness::{Envoy, EnvoyOptions, RequestSpec};

use crate::accuracy_load::{measure, measure_windows, timeline, Stretch, Timeline};
pub use crate::accuracy_report::{render, targets};
use crate::variant::{checked, template, Backends};

pub const INSTANCES: u32 = 3;
pub const WORKERS: u32 = 2;
/// Tenants of the fairness row.
const FAIR_TENANTS: u64 = 50;

/// The policy of `tests/global_in_envoy.rs` (two global rules failing
/// open), with two more global rules: `bulk`, which binds at 100/s like
/// `per-tenant`, and `integration-notion` as the default policy has it
/// (3/s, queueing up to 2 s).
pub fn policy() -> String {
    format!(
        r#"{{"global": {{"expected_instances": {INSTANCES}, "timeout": "50ms"}},
        "tenant": [{{"header": "x-tenant-id"}}], "integration": [{{"header": "x-integration"}}], "rules": [
        {{"name": "per-tenant", "scope": "global", "key": ["tenant"], "limit": {{"requests": 100, "per": "1s"}}}},
        {{"name": "tools-invoke", "scope": "global", "match": {{"methods": ["POST"], "paths": [{{"exact": "/api/v1/tools/invoke"}}]}},
          "key": ["tenant"], "limit": {{"requests": 20, "per": "1s"}}}},
        {{"name": "bulk", "scope": "global", "match": {{"methods": ["POST"], "paths": [{{"exact": "/api/v1/tools/bulk"}}]}},
          "key": ["tenant"], "limit": {{"requests": 100, "per": "1s"}}}},
        {{"name": "integration-notion", "tier": "integration", "scope": "global", "match": {{"integration": ["notion"]}},
          "key": ["integration", "tenant"], "limit": {{"requests": 3, "per": "1s"}}, "queue": {{"max_wait": "2s"}},
          "obey_upstream": true}}
    ]}}"#
    )
}

/// What a row measures, and so which targets apply to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// One rule at 3×, over the whole run, and a run at half the limit.
    OneRule,
    /// `tools-invoke` and `per-tenant` flooded, each window on its own.
    Flood,
    /// `bulk` and `per-tenant` at 10×, both binding at 100/s.
    TwoRules,
    /// 3× moved from one instance to another at a window boundary.
    Skew,
    /// 50 tenants at 1.5× each.
    Fairness,
    /// 2 windows at 5×, 2 silent, again and again.
    Bursts,
    /// A small limit that queues, at 10×.
    Queued,
}

/// One rule's figures.
#[derive(Debug, Clone, Serialize)]
pub struct RuleResult {
    pub rule: String,
    pub kind: Kind,
    pub limit_per_s: u64,
    /// Measured windows (for bursts: the windows with load).
    pub windows: u32,
    /// Requests per second offered in all (every instance together).
    pub offered_per_s: f64,
    /// Requests answered in the measured windows.
    pub offered: u64,
    pub admitted: u64,
    pub allowed: u64,
    pub admitted_over_allowed: f64,
    /// Admissions per window, when each window was measured on its own.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub per_window: Vec<u64>,
    /// Answers in the measured windows, by status (rows on the timeline).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub statuses: BTreeMap<u16, u64>,
    /// The fairness row's tenants.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenants: Option<Tenants>,
    /// The small limit's refusals (among `statuses`) that came 1 s or more
    /// after their request: held in the queue, then refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub late_refusals: Option<u64>,
    pub counter_calls: u64,
    pub calls_per_admitted: f64,
    /// The run at half the limit: requests, and 429s among them.
    pub under_limit_offered: u64,
    pub false_denials: u64,
    /// Responses of the run at half the limit, by status.
    pub under_limit_statuses: BTreeMap<u16, u64>,
    pub errors: u64,
}

/// Each tenant's admitted ÷ allowed, of the fairness row.
#[derive(Debug, Clone, Serialize)]
pub struct Tenants {
    pub count: u64,
    pub lowest: f64,
    pub median: f64,
    pub highest: f64,
    /// The fewest admissions of one tenant in one window.
    pub worst_window: u64,
    /// Admissions per tenant over the measured windows.
    pub admitted: Vec<u64>,
}

impl RuleResult {
    fn new(rule: &str, kind: Kind, limit: u64, windows: u32, offered_per_s: f64) -> RuleResult {
        RuleResult {
            rule: rule.into(),
            kind,
            limit_per_s: limit,
            windows,
            offered_per_s,
            offered: 0,
            admitted: 0,
            allowed: limit * u64::from(windows),
            admitted_over_allowed: 0.0,
            per_window: Vec::new(),
            statuses: BTreeMap::new(),
            tenants: None,
            late_refusals: None,
            counter_calls: 0,
            calls_per_admitted: 0.0,
            under_limit_offered: 0,
            false_denials: 0,
            under_limit_statuses: BTreeMap::new(),
            errors: 0,
        }
    }

    /// Fills the figures of the timeline's `measured` windows (indices).
    fn counted(mut self, t: &Timeline, measured: &[i64]) -> RuleResult {
        self.per_window = measured.iter().map(|w| t.count(|r| r.window == *w && r.status == 200)).collect();
        self.offered = t.count(|r| measured.contains(&r.window));
        for r in t.responses.iter().filter(|r| measured.contains(&r.window)) {
            *self.statuses.entry(r.status).or_default() += 1;
        }
        self.admitted = self.per_window.iter().sum();
        self.admitted_over_allowed = self.admitted as f64 / self.allowed.max(1) as f64;
        self.counter_calls = t.calls;
        self.calls_per_admitted = t.calls as f64 / self.admitted.max(1) as f64;
        self.errors = t.errors;
        self
    }

    pub fn worst(&self) -> Option<u64> {
        match &self.tenants {
            Some(t) => Some(t.worst_window),
            None => self.per_window.iter().min().copied(),
        }
    }

    fn log(&self) {
        let tenants = self.tenants.as_ref().map_or(String::new(), |t| format!(", tenants lowest {:.2}% median {:.2}%", 100.0 * t.lowest, 100.0 * t.median));
        let denials = if self.under_limit_offered > 0 {
            format!(", {} false denials of {} under the limit", self.false_denials, self.under_limit_offered)
        } else {
            String::new()
        };
        eprintln!(
            "  {} ({}/s offered): admitted {:?} = {} of {} allowed ({:.2}%){tenants}, worst window {}, {} counter calls ({:.4} per admitted){denials}, statuses {:?}{}, {} errors",
            self.rule,
            self.offered_per_s,
            self.per_window,
            self.admitted,
            self.allowed,
            100.0 * self.admitted_over_allowed,
            self.worst().map_or("—".into(), |w| w.to_string()),
            self.counter_calls,
            self.calls_per_admitted,
            self.statuses,
            self.late_refusals.map_or(String::new(), |n| format!(" ({n} refused after ≥ 1 s)")),
            self.errors,
        );
    }
}

/// Runs every row.
pub fn run(windows: u32) -> anyhow::Result<Vec<RuleResult>> {
    let backends = Backends::start()?;
    let policy = checked(&policy())?;
    let envoys = (0..INSTANCES)
        .map(|i| {
            Envoy::start(EnvoyOptions {
                instance: i,
                template: template("wasm.yaml"),
                counter_port: backends.counter.port(),
                policy_json: policy.clone(),
                concurrency: WORKERS,
                log_level: "warn".into(),
                ..Default::default()
            })
            .context("starting Envoy")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut out: Vec<RuleResult> = one_rule_loads().iter().map(|load| one_rule(&envoys, load, windows)).collect();
    // Two rules at once: the under-limit run of tools-invoke above already
    // has both rules apply.
    out.extend([10, 50].map(|times| flood(&envoys, times, windows)));
    out.push(two_rules(&envoys, windows));
    out.push(skew(&envoys, windows));
    out.push(fairness(&envoys, windows));
    out.push(bursts(&envoys, windows));
    out.push(queued(&envoys, windows));
    Ok(out)
}

/// `GET /api/v1/anything` of `tenant`: `per-tenant` applies.
fn get(tenant: &str) -> RequestSpec {
    RequestSpec::get("/api/v1/anything").header("x-tenant-id", tenant)
}

/// `POST path` of `tenant`.
fn post_to(path: &str, tenant: &str) -> RequestSpec {
    let mut spec = RequestSpec::get(path).header("x-tenant-id", tenant);
    spec.method = "POST".into();
    spec
}

/// `POST /api/v1/tools/invoke` of `tenant`: `tools-invoke` and `per-tenant` apply.
fn post(tenant: &str) -> RequestSpec {
    post_to("/api/v1/tools/invoke", tenant)
}

/// The load of a one-rule row: the rule, its limit per second, the request
/// offered at 3× and the one offered at half the limit (another tenant).
pub struct OneRuleLoad {
    pub rule: &'static str,
    pub limit: u64,
    pub over: RequestSpec,
    pub under: RequestSpec,
}

/// The one-rule rows: `per-tenant` and `tools-invoke`.
pub fn one_rule_loads() -> Vec<OneRuleLoad> {
    vec![
        OneRuleLoad { rule: "per-tenant", limit: 100, over: get("accuracy-a"), under: get("accuracy-b") },
        OneRuleLoad { rule: "tools-invoke", limit: 20, over: post("accuracy-c"), under: post("accuracy-d") },
    ]
}

/// One rule at 3× over the whole run (the limit at each instance), then a
/// run at half the limit in all, shared by the instances.
fn one_rule(envoys: &[Envoy], load: &OneRuleLoad, windows: u32) -> RuleResult {
    let (limit, instances) = (load.limit, f64::from(INSTANCES));
    let (over, calls) = measure(envoys, limit as f64, load.over.clone(), windows);
    let (under, _) = measure(envoys, limit as f64 * 0.5 / instances, load.under.clone(), windows);
    let (offered, admitted) = (over.responses(), over.count(200));
    let (under_offered, under_admitted) = (under.responses(), under.count(200));
    let mut r = RuleResult::new(load.rule, Kind::OneRule, limit, windows, (limit * 3) as f64);
    r.offered = offered;
    r.admitted = admitted;
    r.admitted_over_allowed = admitted as f64 / r.allowed as f64;
    r.counter_calls = calls;
    r.calls_per_admitted = calls as f64 / admitted.max(1) as f64;
    r.under_limit_offered = under_offered;
    r.false_denials = under_offered - under_admitted;
    r.under_limit_statuses = under.statuses.clone();
    r.errors = over.errors + under.errors;
    r.log();
    r
}

/// One tenant floods `tools-invoke` at `times` its limit, a third at each
/// instance, each window measured on its own.
fn flood(envoys: &[Envoy], times: u64, windows: u32) -> RuleResult {
    let spec = post(&format!("accuracy-flood-{times}"));
    let rate = (20 * times) as f64 / f64::from(INSTANCES);
    let (per_window, offered, calls, errors) = measure_windows(envoys, rate, &spec, windows);
    let mut r = RuleResult::new(&format!("tools-invoke and per-tenant, {times}×"), Kind::Flood, 20, windows, (20 * times) as f64);
    r.admitted = per_window.iter().sum();
    r.per_window = per_window;
    r.offered = offered;
    r.admitted_over_allowed = r.admitted as f64 / r.allowed as f64;
    r.counter_calls = calls;
    r.calls_per_admitted = calls as f64 / r.admitted.max(1) as f64;
    r.errors = errors;
    r.log();
    r
}

/// `rate`/s in all from window 0 to `secs`, a third at each instance.
fn all(rate: f64, secs: u32) -> Vec<Stretch> {
    (0..INSTANCES as usize).map(|instance| Stretch::new(instance, 0, secs, rate / f64::from(INSTANCES))).collect()
}

/// The windows measured after the warm-up window 0.
fn measured(windows: u32) -> Vec<i64> {
    (1..=i64::from(windows)).collect()
}

/// Two rules binding at 100/s: bulk and per-tenant, 10×.
fn two_rules(envoys: &[Envoy], windows: u32) -> RuleResult {
    let spec = post_to("/api/v1/tools/bulk", "accuracy-bulk");
    let t = timeline(envoys, &all(1000.0, windows + 1), 8, |_, _| spec.clone());
    let mut r = RuleResult::new("bulk and per-tenant, 10×", Kind::TwoRules, 100, windows, 1000.0).counted(&t, &measured(windows));
    let (under, _) = measure(envoys, 50.0 / f64::from(INSTANCES), post_to("/api/v1/tools/bulk", "accuracy-bulk-half"), windows);
    r.under_limit_offered = under.responses();
    r.false_denials = under.responses() - under.count(200);
    r.under_limit_statuses = under.statuses.clone();
    r.errors += under.errors;
    r.log();
    r
}

/// Skew: 3× per-tenant at instance 0, then at instance 1.
fn skew(envoys: &[Envoy], windows: u32) -> RuleResult {
    let moved = 1 + (windows / 2).max(1);
    let stretches = [Stretch::new(0, 0, moved, 300.0), Stretch::new(1, moved, windows + 1, 300.0)];
    let spec = get("accuracy-skew");
    let t = timeline(envoys, &stretches, 8, |_, _| spec.clone());
    let r = RuleResult::new(&format!("per-tenant, skew: 3× at instance 0, at instance 1 from window {moved}"), Kind::Skew, 100, windows, 300.0)
        .counted(&t, &measured(windows));
    r.log();
    r
}

/// Fairness: 50 tenants at 1.5× tools-invoke, round-robin over the instances.
fn fairness(envoys: &[Envoy], windows: u32) -> RuleResult {
    let measured = measured(windows);
    let rate = 30.0 * FAIR_TENANTS as f64;
    let tenant = |instance: usize, index: u64| (index * u64::from(INSTANCES) + instance as u64) % FAIR_TENANTS;
    let specs: Vec<RequestSpec> = (0..FAIR_TENANTS).map(|k| post(&format!("accuracy-fair-{k}"))).collect();
    let t = timeline(envoys, &all(rate, windows + 1), 8, |instance, index| specs[tenant(instance, index) as usize].clone());
    let mut r =
        RuleResult::new(&format!("tools-invoke, {FAIR_TENANTS} tenants at 1.5× each"), Kind::Fairness, 20 * FAIR_TENANTS, windows, rate).counted(&t, &measured);
    let mut cells = vec![vec![0u64; measured.len()]; FAIR_TENANTS as usize];
    for resp in t.responses.iter().filter(|resp| resp.status == 200) {
        if let Some(w) = measured.iter().position(|w| *w == resp.window) {
            cells[tenant(resp.instance, resp.index) as usize][w] += 1;
        }
    }
    let admitted: Vec<u64> = cells.iter().map(|c| c.iter().sum()).collect();
    let allowed = 20.0 * f64::from(windows);
    let mut ratios: Vec<f64> = admitted.iter().map(|a| *a as f64 / allowed).collect();
    ratios.sort_by(f64::total_cmp);
    r.tenants = Some(Tenants {
        count: FAIR_TENANTS,
        lowest: ratios.first().copied().unwrap_or(0.0),
        median: median(&ratios),
        highest: ratios.last().copied().unwrap_or(0.0),
        worst_window: cells.iter().flatten().min().copied().unwrap_or(0),
        admitted,
    });
    r.log();
    r
}

/// Bursts: 5× per-tenant for 2 windows, silent for 2. Window 0 is a burst
/// of warm-up, then 2 silent ones; measured bursts start at 3.
fn bursts(envoys: &[Envoy], windows: u32) -> RuleResult {
    let bursts = (windows / 2).max(1);
    let mut stretches = all(500.0, 1);
    let mut on = Vec::new();
    for b in 0..bursts {
        let from = 3 + 4 * b;
        stretches.extend((0..INSTANCES as usize).map(|i| Stretch::new(i, from, from + 2, 500.0 / f64::from(INSTANCES))));
        on.extend([i64::from(from), i64::from(from) + 1]);
    }
    let spec = get("accuracy-bursts");
    let t = timeline(envoys, &stretches, 8, |_, _| spec.clone());
    let r = RuleResult::new("per-tenant, bursts: 2 windows at 5×, 2 silent", Kind::Bursts, 100, 2 * bursts, 500.0).counted(&t, &on);
    r.log();
    r
}

/// A small limit that queues: integration-notion, 10×.
fn queued(envoys: &[Envoy], windows: u32) -> RuleResult {
    let measured = measured(windows);
    let spec = get("accuracy-notion").header("x-integration", "notion");
    let t = timeline(envoys, &all(30.0, windows + 1), 32, |_, _| spec.clone());
    let mut r = RuleResult::new("integration-notion (queue 2 s), 10×", Kind::Queued, 3, windows, 30.0).counted(&t, &measured);
    r.late_refusals = Some(t.count(|a| measured.contains(&a.window) && a.status != 200 && a.took >= Duration::from_secs(1)));
    r.log();
    r
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}
