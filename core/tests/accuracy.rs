//! Accuracy of global limits in the core's multi-instance simulation: the
//! default gateway policy at three instances sharing one fake counter
//! service, on a fake clock, each instance's leader ticking every 50 ms.
//! Each scenario reports admitted ÷ allowed over whole windows, the worst
//! window, counter calls per admitted request and refusals under the limit;
//! the two-rule flood runs in real Envoy in `tests/accuracy_in_envoy.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

mod support;

use std::collections::BTreeMap;

use sluice_core::flow::{At, Event as FlowEvent, Fate};
use sluice_core::lease::Answer;
use sluice_core::limiter::LeaseNeed;
use sluice_core::policy::Policy;
use sluice_core::request::MemoryRequest;
use support::{FakeCounter, Instance, TestFlow, MS};

const GATEWAY: &str = include_str!("../../policies/mcp-gateway.json");
const S: u64 = 1_000_000_000;
/// A whole second: the fake counter's windows start on it.
const T0: u64 = 1_763_382_885 * S;
const INSTANCES: usize = 3;
const TICK: u64 = 50 * MS;
/// Seeds of the runs: the leaders' phases and the calls' latencies.
/// (Leases sized on requests another rule refused failed the two-rule
/// flood in 7 of the first 16 at 10x, in 1 at 50x.)
fn seeds() -> impl Iterator<Item = u64> {
    (1..=10u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// What a tenant sends.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// `POST /api/v1/tools/invoke`: `tools-invoke` (20/s) and `per-tenant`
    /// (100/s) both apply.
    Invoke,
    /// `GET /api/v1/anything`: only `per-tenant` (100/s).
    Other,
    /// A call to Notion: `integration-notion` (3/s, queued up to 2 s) and
    /// `per-tenant`.
    Notion,
    /// `POST /api/v1/tools/bulk`: in `bulk_policy`, `bulk` (100/s) and
    /// `per-tenant` (100/s) both apply.
    Bulk,
}

fn request(kind: Kind, tenant: usize) -> MemoryRequest {
    let id = format!("tenant-{tenant}");
    // One client address per tenant: the local per-ip rule stays out of the way.
    let from = format!("10.0.{}.{}:40000", tenant / 200, tenant % 200 + 1);
    let req = match kind {
        Kind::Invoke => MemoryRequest::new("POST", "/api/v1/tools/invoke"),
        Kind::Other => MemoryRequest::new("GET", "/api/v1/anything"),
        Kind::Notion => MemoryRequest::new("POST", "/api/v1/integrations/notion/search").header("x-integration", "notion"),
        Kind::Bulk => MemoryRequest::new("POST", "/api/v1/tools/bulk"),
    };
    req.header("x-tenant-id", &id).from_address(&from)
}

/// One request offered: when, to which instance, from which tenant.
#[derive(Clone, Copy, Debug)]
struct Arrival {
    at: u64,
    instance: usize,
    tenant: usize,
}

/// `rate` requests a second from `tenant` over `[from, to)`, evenly spaced
/// (the first `phase` ns in), to the instance `to_instance` picks from the
/// request's number.
fn even(rate: u64, span: (u64, u64), tenant: usize, phase: u64, to_instance: impl Fn(u64) -> usize) -> Vec<Arrival> {
    spaced(S / rate, span, tenant, phase, to_instance)
}

/// `even`, one request every `gap` ns.
fn spaced(gap: u64, (from, to): (u64, u64), tenant: usize, phase: u64, to_instance: impl Fn(u64) -> usize) -> Vec<Arrival> {
    (0..).map(|i| (i, from + phase % gap + i * gap)).take_while(|(_, at)| *at < to).map(|(i, at)| Arrival { at, instance: to_instance(i), tenant }).collect()
}

fn round_robin(i: u64) -> usize {
    (i % INSTANCES as u64) as usize
}

/// What a run gave: per tenant, admissions, offers and refusals per
/// measured window (windows `[T0 + w s, T0 + (w + 1) s)`), and the counter
/// calls made in them.
struct Run {
    went: Vec<Vec<u64>>,
    offered: Vec<Vec<u64>>,
    refused: Vec<Vec<u64>>,
    calls: u64,
}

/// Something due at an instance.
enum Event {
    /// A request arrives, or its flow wakes for a later window.
    Decide { a: Arrival, flow: Option<TestFlow> },
    /// The answer to a request's own reserve call arrives: its flow
    /// decides again.
    Resume { a: Arrival, flow: TestFlow, answers: Vec<Answer> },
    /// The leader sends the refills gathered since its last tick.
    Tick(usize),
    /// The answer to a leader's call arrives.
    Refilled { instance: usize, needs: Vec<LeaseNeed>, answers: Vec<Answer> },
}

/// A call's round trip: the service counts half-way, the answer is applied
/// at the end. Requests that arrive meanwhile find the lease as it was.
const CALL: u64 = 2 * MS;
/// A call takes `CALL` and up to this much more, at random.
const CALL_SPREAD: u64 = 30 * MS;

/// Runs the arrivals through `INSTANCES` instances of `policy` the way the
/// filter handles them: a request that waits for a lease is decided again
/// when its call's answer arrives, one that waits for a window when told
/// to; every leader sends its refills every 50 ms (out of step with the
/// others). Windows before `T0` warm up; `windows` whole windows from `T0`
/// on are measured.
fn run(policy: &Policy, kind: Kind, tenants: usize, arrivals: Vec<Arrival>, windows: u64, seed: u64) -> Run {
    let end = T0 + windows * S;
    let first = arrivals.iter().map(|a| a.at).min().unwrap_or(T0);
    let mut counter = FakeCounter::default();
    let mut instances: Vec<Instance> = (0..INSTANCES).map(|_| Instance::new(policy.clone())).collect();
    // Due events by (time, order of scheduling).
    let mut due: BTreeMap<(u64, u64), Event> = BTreeMap::new();
    let mut order = 0u64;
    let mut at = |due: &mut BTreeMap<(u64, u64), Event>, t: u64, e: Event| {
        order += 1;
        due.insert((t, order), e);
    };
    for k in 0..INSTANCES {
        at(&mut due, first + (seed >> (8 * k)) % TICK, Event::Tick(k));
    }
    for a in arrivals {
        at(&mut due, a.at, Event::Decide { a, flow: None });
    }
    let window = |t: u64| (t >= T0 && t < end).then(|| ((t - T0) / S) as usize);
    let zeros = || vec![vec![0u64; windows as usize]; tenants];
    let (mut went, mut offered, mut refused) = (zeros(), zeros(), zeros());
    let mut calls_at = [None, None];
    let requests: Vec<MemoryRequest> = (0..tenants).map(|t| request(kind, t)).collect();
    let mut rng = seed | 1;
    let mut random = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    while let Some(((now, _), event)) = due.pop_first() {
        for (i, mark) in [T0, end].into_iter().enumerate() {
            if now >= mark && calls_at[i].is_none() {
                calls_at[i] = Some(counter.calls);
            }
        }
        let (a, flow, out) = match event {
            Event::Tick(k) => {
                let needs = instances[k].lead(now);
                if !needs.is_empty() {
                    let took = CALL + random() % CALL_SPREAD;
                    let answers = counter.reserve(&needs.iter().map(|n| n.ask.clone()).collect::<Vec<_>>(), now + took / 2);
                    at(&mut due, now + took, Event::Refilled { instance: k, needs, answers });
                }
                // Ticks stop once every request has been decided.
                if due.values().any(|e| !matches!(e, Event::Tick(_))) {
                    at(&mut due, now + TICK, Event::Tick(k));
                }
                continue;
            }
            Event::Refilled { instance, needs, answers } => {
                instances[instance].answer(&needs, &answers, now);
                continue;
            }
            Event::Decide { a, flow } => {
                if flow.is_none() {
                    if let Some(w) = window(a.at) {
                        offered[a.tenant][w] += 1;
                    }
                }
                let r = random();
                let inst = &mut instances[a.instance];
                let (mut flow, event) = match flow {
                    Some(flow) => (flow, FlowEvent::Wake),
                    None => (inst.flow(), FlowEvent::Headers { end_of_stream: true }),
                };
                let mut out = inst.on(&mut flow, &requests[a.tenant], event, At { now, random: r, ..At::default() });
                if let Some(needs) = out.call.take() {
                    let took = CALL + random() % CALL_SPREAD;
                    let answers = counter.reserve(&needs.iter().map(|n| n.ask.clone()).collect::<Vec<_>>(), now + took / 2);
                    at(&mut due, now + took, Event::Resume { a, flow, answers });
                    continue;
                }
                (a, flow, out)
            }
            Event::Resume { a, mut flow, answers } => {
                let inst = &mut instances[a.instance];
                let out = inst.on(&mut flow, &requests[a.tenant], FlowEvent::Answered(Some(answers)), At::new(now));
                (a, flow, out)
            }
        };
        let Some(last) = out.decided.last() else { continue };
        match last.fate {
            Fate::Replied | Fate::Calls => {
                if let Some(w) = window(a.at) {
                    refused[a.tenant][w] += 1;
                }
            }
            Fate::WaitsWindow => at(&mut due, out.wake_at.unwrap_or(now), Event::Decide { a, flow: Some(flow) }),
            Fate::Holds | Fate::Goes => {
                if let Some(w) = window(now + last.decision.ruling.hold_ns) {
                    went[a.tenant][w] += 1;
                }
            }
        }
    }
    let calls = calls_at[1].unwrap_or(counter.calls) - calls_at[0].unwrap_or(counter.calls);
    Run { went, offered, refused, calls }
}

/// A scenario's figures for one tenant whose binding limit is `limit` a
/// window.
struct Figures {
    admitted: u64,
    allowed: u64,
    /// The fewest admissions in a window offered at least twice the limit.
    worst: Option<u64>,
    refused: u64,
    offered: u64,
}

impl Figures {
    fn of(run: &Run, tenant: usize, limit: u64, counted: impl Fn(usize) -> bool) -> Figures {
        let windows = || (0..run.went[tenant].len()).filter(|w| counted(*w));
        Figures {
            admitted: windows().map(|w| run.went[tenant][w]).sum(),
            allowed: windows().count() as u64 * limit,
            worst: windows().filter(|w| run.offered[tenant][*w] >= 2 * limit).map(|w| run.went[tenant][w]).min(),
            refused: windows().map(|w| run.refused[tenant][w]).sum(),
            offered: windows().map(|w| run.offered[tenant][w]).sum(),
        }
    }

    fn share(&self) -> f64 {
        self.admitted as f64 / self.allowed as f64
    }

    /// The issue's bounds: within [97 %, 100.5 %] of the limit over the
    /// run, no window under half of it while at least twice is offered.
    fn check(&self, what: &str, limit: u64) {
        assert!((0.97..=1.005).contains(&self.share()), "{what}: admitted {} of {} allowed", self.admitted, self.allowed);
        if let Some(worst) = self.worst {
            assert!(2 * worst >= limit, "{what}: a window admitted {worst} of {limit}");
        }
    }
}

fn gateway() -> Policy {
    Policy::from_json(GATEWAY).expect("the default policy")
}

/// Two global rules of 100/s per tenant, both on `POST /api/v1/tools/bulk`
/// (as in `make bench`'s accuracy scenario).
fn bulk_policy() -> Policy {
    Policy::from_json(
        r#"{"global": {"expected_instances": 3}, "tenant": [{"header": "x-tenant-id"}], "rules": [
        {"name": "per-tenant", "scope": "global", "key": ["tenant"], "limit": {"requests": 100, "per": "1s"}},
        {"name": "bulk", "scope": "global", "match": {"methods": ["POST"], "paths": [{"exact": "/api/v1/tools/bulk"}]},
         "key": ["tenant"], "limit": {"requests": 100, "per": "1s"}}]}"#,
    )
    .expect("the bulk policy")
}

/// Counter calls per admitted request for steady keys at 100/s: spans of
/// four windows reserved ahead make it at most one call per instance in
/// four windows (0.0075 with three instances).
const CALLS_PER_ADMITTED: f64 = 0.01;

#[test]
fn one_rule_at_three_times_calls_once_in_four_windows_per_instance() {
    for seed in seeds().take(3) {
        let arrivals = even(300, (T0 - S, T0 + 20 * S), 0, 0, round_robin);
        let run = run(&gateway(), Kind::Other, 1, arrivals, 20, seed);
        let f = Figures::of(&run, 0, 100, |_| true);
        report("one rule, 3x", &f, run.calls);
        f.check(&format!("one rule, seed {seed:x}"), 100);
        let per_admitted = run.calls as f64 / f.admitted as f64;
        assert!(per_admitted <= CALLS_PER_ADMITTED, "one rule, seed {seed:x}: {} calls for {}", run.calls, f.admitted);
    }
}

#[test]
fn two_rules_binding_at_a_hundred_call_once_in_four_windows_per_instance() {
    for times in [3, 10] {
        for seed in seeds() {
            let arrivals = even(100 * times, (T0 - S, T0 + 20 * S), 0, 0, round_robin);
            let run = run(&bulk_policy(), Kind::Bulk, 1, arrivals, 20, seed);
            let f = Figures::of(&run, 0, 100, |_| true);
            report(&format!("two rules at 100/s, {times}x"), &f, run.calls);
            f.check(&format!("two rules at 100/s, {times}x, seed {seed:x}"), 100);
            let per_admitted = run.calls as f64 / f.admitted as f64;
            assert!(per_admitted <= CALLS_PER_ADMITTED, "two rules, {times}x, seed {seed:x}: {} calls for {}", run.calls, f.admitted);
        }
    }
}

fn report(what: &str, f: &Figures, calls: u64) {
    println!(
        "{what}: admitted {} of {} allowed ({:.1} %), worst window {:?}, {calls} calls ({:.3} per admitted), {} refused of {} offered",
        f.admitted,
        f.allowed,
        100.0 * f.share(),
        f.worst,
        calls as f64 / f.admitted.max(1) as f64,
        f.refused,
        f.offered
    );
}

/// One tenant floods `tools/invoke` at `times` its limit (20/s), round robin
/// over the instances: `per-tenant` (100/s) applies too, and must not refuse
/// what `tools-invoke` admits.
fn two_rules(times: u64, seed: u64) -> (Figures, u64) {
    let arrivals = even(20 * times, (T0 - S, T0 + 10 * S), 0, 0, round_robin);
    let run = run(&gateway(), Kind::Invoke, 1, arrivals, 10, seed);
    (Figures::of(&run, 0, 20, |_| true), run.calls)
}

#[test]
fn two_rules_flooded_at_ten_times_admit_the_binding_limit() {
    for seed in seeds() {
        let (f, calls) = two_rules(10, seed);
        report("two rules, 10x", &f, calls);
        f.check(&format!("two rules, 10x, seed {seed:x}"), 20);
    }
}

#[test]
fn two_rules_flooded_at_fifty_times_admit_the_binding_limit() {
    for seed in seeds() {
        let (f, calls) = two_rules(50, seed);
        report("two rules, 50x", &f, calls);
        f.check(&format!("two rules, 50x, seed {seed:x}"), 20);
    }
}

#[test]
fn two_rules_at_half_the_limit_refuse_nothing() {
    for (phase, seed) in [0, 7 * MS, 33 * MS].into_iter().zip(seeds()) {
        let arrivals = even(10, (T0 - S, T0 + 10 * S), 0, phase, round_robin);
        let run = run(&gateway(), Kind::Invoke, 1, arrivals, 10, seed);
        let f = Figures::of(&run, 0, 20, |_| true);
        report("two rules, half", &f, run.calls);
        assert_eq!(f.refused, 0, "phase {phase}: {} refused of {}", f.refused, f.offered);
    }
}

#[test]
fn one_rule_moving_from_one_instance_to_another_keeps_its_limit() {
    // per-tenant (100/s) at 3x, all on instance 0, then from window 5 on
    // all on instance 1.
    for seed in seeds().take(3) {
        let arrivals = even(300, (T0 - S, T0 + 10 * S), 0, 0, |_| 0);
        let arrivals = arrivals.into_iter().map(|a| Arrival { instance: usize::from(a.at >= T0 + 5 * S), ..a }).collect();
        let run = run(&gateway(), Kind::Other, 1, arrivals, 10, seed);
        let f = Figures::of(&run, 0, 100, |_| true);
        report("skew", &f, run.calls);
        // The instance the traffic left gives back what it holds as soon as
        // it sees none of what it expected; the one it moved to takes it
        // with its reservation ahead (before spans and give-backs: 90.1 %,
        // the whole window of the move lost).
        f.check(&format!("skew, seed {seed:x}"), 100);
    }
}

/// 50 tenants each offering 1.5x their limit of `kind`, spread over the
/// instances: each tenant gets its limit, all together within the issue's
/// bounds, the lowest tenant within 95 %.
fn fairness(kind: Kind, limit: u64) {
    let tenants = 50;
    let rate = limit * 3 / 2;
    let arrivals = (0..tenants).flat_map(|t| even(rate, (T0 - S, T0 + 5 * S), t, t as u64 * 131 * MS / 10, move |i| (i as usize + t) % INSTANCES)).collect();
    let run = run(&gateway(), kind, tenants, arrivals, 5, seeds().next().unwrap());
    let mut lowest = 1.0f64;
    for t in 0..tenants {
        let f = Figures::of(&run, t, limit, |_| true);
        lowest = lowest.min(f.share());
        if t < 3 {
            report(&format!("fairness {limit}/s, tenant {t}"), &f, run.calls);
        }
    }
    let admitted: u64 = run.went.iter().flatten().sum();
    let allowed = tenants as u64 * 5 * limit;
    println!(
        "fairness {limit}/s: {admitted} admitted of {allowed} allowed ({:.1} %, lowest tenant {:.1} %), {} calls ({:.4} per admitted)",
        100.0 * admitted as f64 / allowed as f64,
        100.0 * lowest,
        run.calls,
        run.calls as f64 / admitted as f64
    );
    // Instances reserve a contested key without the eighth of margin,
    // which those served first never spent (before: 91-93 % each).
    assert!((0.97..=1.005).contains(&(admitted as f64 / allowed as f64)), "fairness {limit}/s: {admitted} of {allowed}");
    assert!(lowest >= 0.95, "fairness {limit}/s: a tenant got {:.1} %", 100.0 * lowest);
}

#[test]
fn fifty_tenants_at_one_and_a_half_times_each_get_their_limit() {
    fairness(Kind::Other, 100);
}

#[test]
fn fifty_tenants_at_one_and_a_half_times_a_small_limit_get_it() {
    fairness(Kind::Invoke, 20);
}

#[test]
fn bursts_of_five_times_with_silences_get_the_limit_while_they_last() {
    // per-tenant (100/s): 2 s at 500/s, 2 s silent, from 4 s before T0.
    for seed in seeds().take(3) {
        let arrivals = (0..4u64).flat_map(|c| {
            let start = T0 - 4 * S + c * 4 * S;
            even(500, (start, start + 2 * S), 0, 0, round_robin)
        });
        let run = run(&gateway(), Kind::Other, 1, arrivals.collect(), 12, seed);
        let f = Figures::of(&run, 0, 100, |w| w % 4 < 2);
        report("bursts", &f, run.calls);
        f.check(&format!("bursts, seed {seed:x}"), 100);
    }
}

#[test]
fn a_small_queued_limit_under_ten_times_goes_at_its_rate() {
    // integration-notion: 3/s, queued up to 2 s; 30/s offered.
    for seed in seeds().take(3) {
        let arrivals = even(30, (T0 - S, T0 + 10 * S), 0, 0, round_robin);
        let run = run(&gateway(), Kind::Notion, 1, arrivals, 10, seed);
        let f = Figures::of(&run, 0, 3, |_| true);
        report("notion", &f, run.calls);
        println!("notion per window {:?}", run.went[0]);
        f.check(&format!("notion, seed {seed:x}"), 3);
    }
}

#[test]
fn one_rule_and_a_queued_rule_at_half_the_limit_refuse_nothing() {
    for seed in seeds().take(3) {
        let run1 = run(&gateway(), Kind::Other, 1, even(50, (T0 - S, T0 + 10 * S), 0, 3 * MS, round_robin), 10, seed);
        let f = Figures::of(&run1, 0, 100, |_| true);
        report("one rule, half", &f, run1.calls);
        assert_eq!(f.refused, 0);
        // Notion at 1.5/s.
        let arrivals = spaced(2 * S / 3, (T0 - S, T0 + 10 * S), 0, 0, round_robin);
        let run2 = run(&gateway(), Kind::Notion, 1, arrivals, 10, seed);
        let f = Figures::of(&run2, 0, 3, |_| true);
        report("notion, half", &f, run2.calls);
        assert_eq!(f.refused, 0);
    }
}
