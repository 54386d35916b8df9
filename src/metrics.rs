//! Metrics through proxy-wasm, exposed by Envoy's `/stats/prometheus`.
//!
//! Names carry their labels in Envoy's tag syntax (`_rule.<name>;`), which
//! the `stats_tags` of `envoy.yaml` turn into Prometheus labels:
//! `sluice_requests_total_rule.tools-list;_tier.endpoint;_decision.denied;`
//! is scraped as `sluice_requests_total{rule="tools-list",tier="endpoint",decision="denied"}`.
//! Ids are defined once per worker and reused (a definition is a hostcall
//! and a string). Counter and gauge increments add up in the worker and
//! reach Envoy on the root's tick, at most `FLUSH_EVERY` later: one hostcall
//! per series per tick instead of one per request. The decision-time
//! histogram has a worker's first `ALWAYS_TIMED` decisions, then one in
//! `DECISION_SAMPLE` (timing is two clock reads and a hostcall). The series and what
//! they mean are listed in docs/operations.md.

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
    pub credit: Option<u32>,
    pub slot_overflow: Option<u32>,
    pub refunds: Option<u32>,
    pub boxed: Option<u32>,
    pub boxes: Option<u32>,
    pub from_share: Option<u32>,
    pub refused_from_memory: Option<u32>,
}

/// The series of a rule whose cost the response settles.
#[derive(Clone, Copy, Debug, Default)]
struct CostIds {
    charged: Option<u32>,
    returned: Option<u32>,
    kept: Option<u32>,
}

/// Series without a rule.
#[derive(Clone, Copy, Debug, Default)]
struct Fixed {
    decision_us: Option<u32>,
    periodic_us: Option<u32>,
    queue_wait_ms: Option<u32>,
    queue_length: Option<u32>,
    degraded: Option<u32>,
    log_suppressed: Option<u32>,
    refills_dropped: Option<u32>,
    given_back: Option<u32>,
    held_refused: Option<u32>,
    mcp_headers_disagree: Option<u32>,
    callouts: [Option<u32>; 3],
    callout_errors: [Option<u32>; 3],
    slot_reads: Option<u32>,
    slot_writes: Option<u32>,
}

/// What a callout was for.
#[derive(Clone, Copy, Debug)]
pub enum Call {
    Reserve = 0,
    Block = 1,
    Probe = 2,
}

const CALLS: [&str; 3] = ["reserve", "block", "probe"];

/// Longest time an increment waits in the worker before Envoy has it.
pub const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// Series pending before a flush is forced (bounds the worker's buffer).
const MAX_PENDING: usize = 256;
/// Decisions a worker times before it samples.
const ALWAYS_TIMED: u32 = 1024;
/// Then one decision in this many is timed.
const DECISION_SAMPLE: u32 = 16;

thread_local! {
    /// Increments not yet handed to Envoy, per metric id.
    static PENDING: RefCell<Vec<(u32, i64)>> = const { RefCell::new(Vec::new()) };
    static DECISIONS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    static RULES: RefCell<HashMap<u64, RuleIds>> = RefCell::new(HashMap::new());
    /// The cost series of rules whose cost the response settles.
    static COSTS: RefCell<HashMap<u64, CostIds>> = RefCell::new(HashMap::new());
    static FIXED: RefCell<Option<Fixed>> = const { RefCell::new(None) };
    /// Shared-data reads and writes since the last flush (counted apart
    /// from `PENDING`: they come several to a request).
    static SLOT_CALLS: std::cell::Cell<(u32, u32)> = const { std::cell::Cell::new((0, 0)) };
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
    let Some(id) = id else { return };
    let full = PENDING.with(|p| {
        let mut p = p.borrow_mut();
        match p.iter_mut().find(|(i, _)| *i == id) {
            Some((_, sum)) => *sum = sum.saturating_add(n),
            None => p.push((id, n)),
        }
        p.len() >= MAX_PENDING
    });
    if full {
        flush();
    }
}

/// Hands the worker's pending increments to Envoy (on every root tick).
pub fn flush() {
    let (reads, writes) = SLOT_CALLS.with(|c| c.replace((0, 0)));
    if reads > 0 || writes > 0 {
        let f = fixed();
        add(f.slot_reads, i64::from(reads));
        add(f.slot_writes, i64::from(writes));
    }
    let pending = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    for (id, n) in pending {
        if n != 0 {
            // The id was defined by this worker; a refusal loses one
            // flush of one counter, and logging it (per flush, per
            // metric) would cost more than the count is worth.
            let _ = hostcalls::increment_metric(id, n);
        }
    }
}

/// Whether to time this decision.
pub fn time_this_decision() -> bool {
    DECISIONS.with(|d| {
        let n = d.get();
        d.set(n.saturating_add(1));
        n < ALWAYS_TIMED || n % DECISION_SAMPLE == 0
    })
}

fn record(id: Option<u32>, v: u64) {
    if let Some(id) = id {
        // As in `flush`: one sample lost, not worth a line per sample.
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
        credit: define(MetricType::Counter, &format!("sluice_lease_credit_total{tags}")),
        slot_overflow: define(MetricType::Counter, &format!("sluice_slot_overflow_total{tags}")),
        refunds: define(MetricType::Counter, &format!("sluice_refunds_total{tags}")),
        boxed: define(MetricType::Counter, &format!("sluice_penalty_refused_total{tags}")),
        boxes: define(MetricType::Counter, &format!("sluice_penalty_boxes_total{tags}")),
        from_share: define(MetricType::Counter, &format!("sluice_worker_share_admitted_total{tags}")),
        refused_from_memory: define(MetricType::Counter, &format!("sluice_worker_memory_refused_total{tags}")),
    };
    RULES.with(|r| r.borrow_mut().insert(key, ids));
    ids
}

/// Defines the series of every rule of a new policy, so that they show
/// (at 0) before traffic.
pub fn define_rules(rules: &[Rule]) {
    for r in rules {
        rule(r);
        if r.cost.as_ref().is_some_and(sluice_core::policy::Cost::from_response) {
            cost_ids(r);
        }
    }
}

/// The cost series of `rule`, defined on first use in this worker.
fn cost_ids(rule: &Rule) -> CostIds {
    let key = rule_key(rule);
    if let Some(ids) = COSTS.with(|c| c.borrow().get(&key).copied()) {
        return ids;
    }
    let tags = format!("_rule.{};_tier.{};", rule.name, rule.tier);
    let ids = CostIds {
        charged: define(MetricType::Counter, &format!("sluice_cost_charged_units_total{tags}")),
        returned: define(MetricType::Counter, &format!("sluice_cost_returned_units_total{tags}")),
        kept: define(MetricType::Counter, &format!("sluice_cost_estimate_kept_total{tags}")),
    };
    COSTS.with(|c| c.borrow_mut().insert(key, ids));
    ids
}

/// A cost read from the response was settled: `charged` units on top of
/// its estimate, or `returned` of it, or the estimate `kept` (no usable
/// figure).
pub fn cost_settled(rule: &Rule, s: &sluice_core::flow::Settled) {
    let ids = cost_ids(rule);
    add(ids.charged, i64::try_from(s.charged).unwrap_or(i64::MAX));
    add(ids.returned, i64::try_from(s.returned).unwrap_or(i64::MAX));
    if s.kept {
        add(ids.kept, 1);
    }
}

fn fixed() -> Fixed {
    if let Some(f) = FIXED.with(|f| *f.borrow()) {
        return f;
    }
    let f = Fixed {
        decision_us: define(MetricType::Histogram, "sluice_decision_duration_us"),
        periodic_us: define(MetricType::Histogram, "sluice_periodic_work_duration_us"),
        queue_wait_ms: define(MetricType::Histogram, "sluice_queue_wait_ms"),
        queue_length: define(MetricType::Gauge, "sluice_queue_length"),
        degraded: define(MetricType::Gauge, "sluice_degraded"),
        log_suppressed: define(MetricType::Counter, "sluice_log_lines_suppressed_total"),
        refills_dropped: define(MetricType::Counter, "sluice_lease_refills_dropped_total"),
        given_back: define(MetricType::Counter, "sluice_lease_units_given_back_total"),
        held_refused: define(MetricType::Counter, "sluice_held_refused_total"),
        mcp_headers_disagree: define(MetricType::Counter, "sluice_mcp_header_mismatch_total"),
        callouts: CALLS.map(|k| define(MetricType::Counter, &format!("sluice_callouts_total_call.{k};"))),
        callout_errors: CALLS.map(|k| define(MetricType::Counter, &format!("sluice_callout_errors_total_call.{k};"))),
        slot_reads: define(MetricType::Counter, "sluice_shared_data_reads_total"),
        slot_writes: define(MetricType::Counter, "sluice_shared_data_writes_total"),
    };
    FIXED.with(|slot| *slot.borrow_mut() = Some(f));
    f
}

pub fn count(id: Option<u32>) {
    add(id, 1);
}

/// Lease units the counter service granted, per rule (index into
/// `policy.rules`).
pub fn lease_units(policy: &sluice_core::policy::Policy, granted: &[(usize, u64)]) {
    for (r, units) in granted.iter().filter_map(|&(i, u)| policy.rules.get(i).map(|r| (r, u))) {
        add(rule(r).lease_units, i64::try_from(units).unwrap_or(i64::MAX));
    }
}

/// Microseconds since `started`, for the timing histograms.
pub fn micros_since(started: std::time::Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

pub fn decision_time(us: u64) {
    record(fixed().decision_us, us);
}

/// How long one tick, or the handling of one counter-service answer, held
/// the worker: the requests that arrive meanwhile wait for it.
pub fn periodic_work(us: u64) {
    record(fixed().periodic_us, us);
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

/// Lease refills dropped past a bound (their asks expire and are asked
/// again by a later request).
/// Units of spans reserved ahead given back (each window counted).
pub fn given_back(needs: &[sluice_core::limiter::LeaseNeed]) {
    let units = needs.iter().fold(0u64, |sum, n| sum.saturating_add(u64::from(n.ask.release).saturating_mul(u64::from(n.ask.windows))));
    add(fixed().given_back, i64::try_from(units).unwrap_or(i64::MAX));
}

pub fn refills_dropped(n: usize) {
    add(fixed().refills_dropped, i64::try_from(n).unwrap_or(i64::MAX));
}

/// A request's `Mcp-Method`/`Mcp-Name` headers disagreed with its body.
pub fn mcp_headers_disagree() {
    add(fixed().mcp_headers_disagree, 1);
}

/// A request that would have waited was refused: its worker held
/// `limiter::MAX_HELD_PER_WORKER` already.
pub fn held_refused() {
    add(fixed().held_refused, 1);
}

/// A read of Envoy's shared data (a slot, or the instance's coordination).
pub fn slot_read() {
    SLOT_CALLS.with(|c| {
        let (r, w) = c.get();
        c.set((r.saturating_add(1), w));
    });
}

/// A write of Envoy's shared data, whether or not its compare-and-swap held.
pub fn slot_written() {
    SLOT_CALLS.with(|c| {
        let (r, w) = c.get();
        c.set((r, w.saturating_add(1)));
    });
}

/// A callout was dispatched.
pub fn sent(call: Call) {
    add(fixed().callouts.get(call as usize).copied().flatten(), 1);
}

/// A callout could not be dispatched, or its answer was unusable.
pub fn failed(call: Call) {
    add(fixed().callout_errors.get(call as usize).copied().flatten(), 1);
}
