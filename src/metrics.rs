//! Metrics through proxy-wasm, exposed by Envoy's `/stats/prometheus`.
//!
//! Names carry their labels in Envoy's tag syntax (`_rule.<name>;`), which
//! the `stats_tags` of `envoy.yaml` turn into Prometheus labels:
//! `sluice_requests_total_rule.tools-list;_tier.endpoint;_decision.denied;`
//! is scraped as `sluice_requests_total{rule="tools-list",tier="endpoint",decision="denied"}`.
//! Ids are defined once per worker and reused (a definition is a hostcall
//! and a string; an increment is one hostcall). The series and what they
//! mean are listed in docs/operations.md.

use std::cell::RefCell;
use std::collections::HashMap;

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use sluice_core::hash::Fnv;
use sluice_core::policy::Rule;

/// One rule's series.
#[derive(Clone, Copy, Debug, Default)]
pub struct RuleIds {
    pub allowed: Option<u32>,
    pub denied: Option<u32>,
    pub shadow_denied: Option<u32>,
    pub queued: Option<u32>,
    pub near_limit: Option<u32>,
    pub resets: Option<u32>,
    pub lease_units: Option<u32>,
}

/// Series without a rule.
#[derive(Clone, Copy, Debug, Default)]
struct Fixed {
    decision_us: Option<u32>,
    queue_wait_ms: Option<u32>,
    queue_length: Option<u32>,
    degraded: Option<u32>,
    log_suppressed: Option<u32>,
    callouts: [Option<u32>; 3],
    callout_errors: [Option<u32>; 3],
}

/// What a callout was for.
#[derive(Clone, Copy, Debug)]
pub enum Call {
    Reserve = 0,
    Block = 1,
    Probe = 2,
}

const CALLS: [&str; 3] = ["reserve", "block", "probe"];

thread_local! {
    static RULES: RefCell<HashMap<u64, RuleIds>> = RefCell::new(HashMap::new());
    static FIXED: RefCell<Option<Fixed>> = const { RefCell::new(None) };
}

fn define(kind: MetricType, name: &str) -> Option<u32> {
    match hostcalls::define_metric(kind, name) {
        Ok(id) => Some(id),
        Err(e) => {
            log::debug!("metric {name} not defined: {e:?}");
            None
        }
    }
}

fn add(id: Option<u32>, n: i64) {
    if let Some(id) = id {
        let _ = hostcalls::increment_metric(id, n);
    }
}

fn record(id: Option<u32>, v: u64) {
    if let Some(id) = id {
        let _ = hostcalls::record_metric(id, v);
    }
}

fn rule_key(rule: &Rule) -> u64 {
    Fnv::default().field(&rule.identity.to_le_bytes()).field(rule.tier.as_bytes()).finish()
}

/// The series of `rule`, defined on first use in this worker.
pub fn rule(rule: &Rule) -> RuleIds {
    let key = rule_key(rule);
    if let Some(ids) = RULES.with(|r| r.borrow().get(&key).copied()) {
        return ids;
    }
    let tags = format!("_rule.{};_tier.{};", rule.name, rule.tier);
    let decision = |d: &str| define(MetricType::Counter, &format!("sluice_requests_total{tags}_decision.{d};"));
    let ids = RuleIds {
        allowed: decision("allowed"),
        denied: decision("denied"),
        shadow_denied: decision("shadow_denied"),
        queued: decision("queued"),
        near_limit: define(MetricType::Counter, &format!("sluice_near_limit_total{tags}")),
        resets: define(MetricType::Counter, &format!("sluice_limit_resets_total{tags}")),
        lease_units: define(MetricType::Counter, &format!("sluice_lease_units_granted_total{tags}")),
    };
    RULES.with(|r| r.borrow_mut().insert(key, ids));
    ids
}

/// Defines the series of every rule of a new policy, so that they show
/// (at 0) before traffic.
pub fn define_rules(rules: &[Rule]) {
    for r in rules {
        rule(r);
    }
}

fn fixed() -> Fixed {
    if let Some(f) = FIXED.with(|f| *f.borrow()) {
        return f;
    }
    let f = Fixed {
        decision_us: define(MetricType::Histogram, "sluice_decision_duration_us"),
        queue_wait_ms: define(MetricType::Histogram, "sluice_queue_wait_ms"),
        queue_length: define(MetricType::Gauge, "sluice_queue_length"),
        degraded: define(MetricType::Gauge, "sluice_degraded"),
        log_suppressed: define(MetricType::Counter, "sluice_log_lines_suppressed_total"),
        callouts: CALLS.map(|k| define(MetricType::Counter, &format!("sluice_callouts_total_call.{k};"))),
        callout_errors: CALLS.map(|k| define(MetricType::Counter, &format!("sluice_callout_errors_total_call.{k};"))),
    };
    FIXED.with(|slot| *slot.borrow_mut() = Some(f));
    f
}

pub fn count(id: Option<u32>) {
    add(id, 1);
}

pub fn lease_units(rule_ids: RuleIds, units: u64) {
    add(rule_ids.lease_units, i64::try_from(units).unwrap_or(i64::MAX));
}

pub fn decision_time(us: u64) {
    record(fixed().decision_us, us);
}

pub fn queue_wait(ms: u64) {
    record(fixed().queue_wait_ms, ms);
}

/// A request started (+1) or stopped (-1) being held on this instance.
pub fn queue_length(delta: i64) {
    add(fixed().queue_length, delta);
}

pub fn degraded(down: bool) {
    record(fixed().degraded, u64::from(down));
}

pub fn log_suppressed(n: u64) {
    add(fixed().log_suppressed, i64::try_from(n).unwrap_or(i64::MAX));
}

/// A callout was dispatched.
pub fn sent(call: Call) {
    add(fixed().callouts[call as usize], 1);
}

/// A callout could not be dispatched, or its answer was unusable.
pub fn failed(call: Call) {
    add(fixed().callout_errors[call as usize], 1);
}
