//! Scenario `jsonrpc`: what deciding on a JSON-RPC request costs over a
//! REST request of the same size. One Envoy with one worker (pinned like
//! the overhead runs) and Sluice with `policies/mcp.json` (every rule
//! local, `trusted_hops` 1) plus a REST twin of each of its rules that a
//! `tools/call` meets (`variant::mcp_policy`) takes two loads, interleaved
//! round by round
//! (the order alternates), each from wrk (`bench/wrk/jsonrpc.lua`) at
//! saturation, like the overhead runs: with every connection busy, Envoy's
//! CPU per request is the cost of a request, without the idle event-loop
//! wake-ups that a paced load spreads over its requests (they made paced
//! runs differ by ±20 µs per request from round to round). The clients are
//! at least [`MIN_CLIENTS`], so that every key stays far below its limit:
//!
//! - JSON-RPC: `POST /mcp`, a `tools/call` body padded to [`BODY_BYTES`]:
//!   the filter reads and parses the body for the JSON-RPC rules;
//! - REST: `POST /api/v1/items`, a JSON body of exactly the same length:
//!   the REST twins apply (the same keys and limits, by the path), no
//!   JSON-RPC rule does, so the body is not read.
//!
//! Both meet the same rules, so the difference is reading the body and
//! matching JSON-RPC.
//!
//! Both with `content-type: application/json` and client `k`'s address and
//! tenant (`k` cycling over `clients`). Measured per run: Envoy's CPU time
//! per request (all its threads, from schedstat, as in `compare`) and wrk's
//! latency; per round, JSON-RPC − REST. Sluice's counters are read around
//! each run to check that nothing was denied and that the JSON-RPC rules
//! matched the JSON-RPC requests only.

use std::time::Duration;

use serde::Serialize;
use wasm_test_harness::Envoy;

use crate::machine::envoy_cpu_ns;
use crate::report::{Target, SETUP};
use crate::stats::{number, Spread};
use crate::variant::{Setup, Variant};
use crate::wrk::{Wrk, WrkResult};

/// Size of every request body, bytes.
pub const BODY_BYTES: usize = 512;
/// The target: JSON-RPC over REST, µs of Envoy CPU per request.
pub const TARGET_US: f64 = 10.0;
/// Fewest distinct clients: at 15,000 req/s, under 4 requests a second
/// for each tenant, far from `tools-call`'s 20 a second.
pub const MIN_CLIENTS: u64 = 4000;
/// wasm.yaml with the buffer filter before the route's direct response.
const TEMPLATE: &str = "wasm-buffered.yaml";
/// The rule that counts every `tools/call` (and only those).
const JSONRPC_RULE: &str = "tools-call";

/// The two kinds of request compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    JsonRpc,
    Rest,
}

impl Kind {
    fn arg(self) -> &'static str {
        match self {
            Kind::JsonRpc => "jsonrpc",
            Kind::Rest => "rest",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::JsonRpc => "JSON-RPC",
            Kind::Rest => "REST",
        }
    }
}

/// Body of request `i` (0-based) of `kind`, `bytes` long; what
/// `bench/wrk/jsonrpc.lua` sends.
pub fn body(kind: Kind, i: u64, bytes: usize) -> String {
    let (head, tail) = match kind {
        Kind::JsonRpc => (format!(r#"{{"jsonrpc":"2.0","id":{},"method":"tools/call","params":{{"name":"echo","arguments":{{"text":""#, i + 1), r#""}}}"#),
        Kind::Rest => (r#"{"text":""#.to_string(), r#""}"#),
    };
    let pad = bytes.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(pad))
}

/// How the scenario runs.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub rounds: u32,
    pub clients: u64,
    pub body_bytes: usize,
    /// wrk's connections, each sending its next request when the last is answered.
    pub connections: u32,
    pub warmup_s: u64,
    pub duration_s: u64,
    pub envoy_workers: u32,
}

impl Settings {
    pub fn new(rounds: u32, clients: u64, connections: u32, quick: bool) -> Settings {
        Settings {
            rounds,
            clients: clients.max(MIN_CLIENTS),
            body_bytes: BODY_BYTES,
            connections: connections.max(1),
            warmup_s: if quick { 1 } else { 2 },
            duration_s: if quick { 3 } else { 10 },
            envoy_workers: 1,
        }
    }

    fn args(&self, kind: Kind) -> Vec<String> {
        vec![kind.arg().into(), self.clients.to_string(), self.body_bytes.to_string(), "0".into()]
    }
}

/// One run of one kind.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub round: u32,
    pub kind: Kind,
    pub rps: f64,
    pub wrk: WrkResult,
    /// Envoy's CPU time per request over the run, µs.
    pub cpu_us: Option<f64>,
    /// Requests Sluice's `tools-call` rule allowed during the run.
    pub jsonrpc_rule_allowed: Option<u64>,
    /// Requests any rule denied or queued during the run.
    pub denied: Option<u64>,
    /// Connections Envoy accepted during the run (wrk keeps its own open,
    /// so this stays 0 unless Envoy closes them).
    pub connections_opened: Option<u64>,
}

/// JSON-RPC − REST within one round.
#[derive(Debug, Clone, Serialize)]
pub struct Pair {
    pub round: u32,
    pub jsonrpc_cpu_us: f64,
    pub rest_cpu_us: f64,
    pub cpu_diff_us: f64,
    pub p50_diff_us: f64,
    pub p99_diff_us: f64,
}

/// Everything the scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub runs: Vec<Run>,
    pub pairs: Vec<Pair>,
    pub cpu_diff_us: Option<Spread>,
    pub jsonrpc_cpu_us: Option<Spread>,
    pub rest_cpu_us: Option<Spread>,
    pub p50_diff_us: Option<Spread>,
    pub p99_diff_us: Option<Spread>,
    /// Why the runs do not measure what they should (answers other than
    /// 2xx, socket errors, denials, JSON-RPC rules matching the wrong
    /// requests); empty when they do.
    pub problems: Vec<String>,
}

/// Runs the warm-up and every round on one Envoy.
pub fn run(setup: &Setup, wrk: &Wrk, settings: &Settings) -> anyhow::Result<Outcome> {
    let envoy = setup.start_from(Variant::SluiceLocal, TEMPLATE, settings.envoy_workers, "warn")?;
    let port = envoy.port();
    for kind in [Kind::JsonRpc, Kind::Rest] {
        probe(&envoy, kind, settings.body_bytes)?;
    }
    for kind in [Kind::JsonRpc, Kind::Rest] {
        wrk.run_named(port, "jsonrpc.lua", settings.connections, &settings.args(kind), Duration::from_secs(settings.warmup_s))?;
    }
    let mut runs = Vec::new();
    for round in 0..settings.rounds {
        let order = if round % 2 == 0 { [Kind::JsonRpc, Kind::Rest] } else { [Kind::Rest, Kind::JsonRpc] };
        for kind in order {
            match one(&envoy, wrk, settings, kind, round) {
                Ok(r) => {
                    eprintln!(
                        "  round {}/{} {:<8} {:>6} req/s, {} µs CPU each, p50 {} µs, p99 {} µs, {} non-2xx, {} denied, {} by {JSONRPC_RULE}, {} connections opened",
                        round + 1,
                        settings.rounds,
                        kind.label(),
                        number(r.rps, 0),
                        r.cpu_us.map_or_else(|| "?".into(), |c| number(c, 1)),
                        r.wrk.p50_us,
                        r.wrk.p99_us,
                        r.wrk.non2xx,
                        r.denied.map_or_else(|| "?".into(), |d| d.to_string()),
                        r.jsonrpc_rule_allowed.map_or_else(|| "?".into(), |d| d.to_string()),
                        r.connections_opened.map_or_else(|| "?".into(), |d| d.to_string()),
                    );
                    runs.push(r);
                }
                Err(e) => eprintln!("  round {}/{} {}: failed: {e:#}", round + 1, settings.rounds, kind.label()),
            }
        }
    }
    drop(envoy);
    if runs.is_empty() {
        anyhow::bail!("every run failed");
    }
    Ok(summarise(runs, settings.connections))
}

fn one(envoy: &Envoy, wrk: &Wrk, settings: &Settings, kind: Kind, round: u32) -> anyhow::Result<Run> {
    let counts_before = sluice_counts(envoy);
    let cpu_before = envoy_cpu_ns(envoy);
    let result = wrk.run_named(envoy.port(), "jsonrpc.lua", settings.connections, &settings.args(kind), Duration::from_secs(settings.duration_s))?;
    let cpu_after = envoy_cpu_ns(envoy);
    // Sluice hands its counters to Envoy on its tick (every 100 ms).
    std::thread::sleep(Duration::from_millis(300));
    let counts_after = sluice_counts(envoy);
    let cpu_us = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) if b >= a && result.requests > 0 => Some((b - a) as f64 / 1e3 / result.requests as f64),
        _ => None,
    };
    let delta = |f: fn(&Counts) -> u64| Some(f(counts_after.as_ref()?).saturating_sub(f(counts_before.as_ref()?)));
    Ok(Run {
        round,
        kind,
        rps: result.rps(),
        wrk: result,
        cpu_us,
        jsonrpc_rule_allowed: delta(|c| c.jsonrpc_rule_allowed),
        denied: delta(|c| c.denied),
        connections_opened: delta(|c| c.connections),
    })
}

/// One request of `kind` (from a client outside the loads') must be
/// answered 200: the route answers POSTs, and Sluice lets it through.
fn probe(envoy: &Envoy, kind: Kind, bytes: usize) -> anyhow::Result<()> {
    let path = match kind {
        Kind::JsonRpc => "/mcp",
        Kind::Rest => crate::variant::REST_PATH,
    };
    let url = format!("http://127.0.0.1:{}{path}", envoy.port());
    let headers = [("content-type", "application/json"), ("x-forwarded-for", "192.0.2.99"), ("x-tenant-id", "tenant-probe")];
    let answer = wasm_test_harness::request("POST", &url, &headers, body(kind, 0, bytes))?;
    if answer.status != 200 {
        anyhow::bail!("POST {path} ({}) answered {}: {:.200}", kind.label(), answer.status, answer.body);
    }
    Ok(())
}

/// Counters read from Envoy's admin.
struct Counts {
    /// Requests Sluice's `tools-call` rule allowed.
    jsonrpc_rule_allowed: u64,
    /// Requests any of Sluice's rules denied or queued.
    denied: u64,
    /// Downstream connections Envoy accepted.
    connections: u64,
}

fn sluice_counts(envoy: &Envoy) -> Option<Counts> {
    let url = envoy.admin_url("/stats?format=json&filter=sluice_requests_total|downstream_cx_total");
    let body = wasm_test_harness::get(&url, &[]).ok()?.json().ok()?;
    let mut c = Counts { jsonrpc_rule_allowed: 0, denied: 0, connections: 0 };
    for stat in body["stats"].as_array()? {
        let (Some(name), Some(value)) = (stat["name"].as_str(), stat["value"].as_u64()) else { continue };
        if name.contains(&format!("_rule.{JSONRPC_RULE};")) && name.contains("_decision.allowed;") {
            c.jsonrpc_rule_allowed += value;
        }
        if name.contains("_decision.denied;") || name.contains("_decision.queued;") {
            c.denied += value;
        }
        if name == "http.ingress.downstream_cx_total" {
            c.connections = value;
        }
    }
    Some(c)
}

fn summarise(runs: Vec<Run>, connections: u32) -> Outcome {
    let find = |round: u32, kind: Kind| runs.iter().find(|r| r.round == round && r.kind == kind);
    let mut rounds: Vec<u32> = runs.iter().map(|r| r.round).collect();
    rounds.dedup();
    let pairs: Vec<Pair> = rounds
        .into_iter()
        .filter_map(|round| {
            let (j, r) = (find(round, Kind::JsonRpc)?, find(round, Kind::Rest)?);
            let (jc, rc) = (j.cpu_us?, r.cpu_us?);
            Some(Pair {
                round,
                jsonrpc_cpu_us: jc,
                rest_cpu_us: rc,
                cpu_diff_us: jc - rc,
                p50_diff_us: j.wrk.p50_us as f64 - r.wrk.p50_us as f64,
                p99_diff_us: j.wrk.p99_us as f64 - r.wrk.p99_us as f64,
            })
        })
        .collect();
    let over = |f: &dyn Fn(&Pair) -> f64| Spread::of(&pairs.iter().map(f).collect::<Vec<_>>());
    let mut problems = Vec::new();
    let non2xx: u64 = runs.iter().map(|r| r.wrk.non2xx).sum();
    let errors: u64 = runs.iter().map(|r| r.wrk.errors()).sum();
    let denied: u64 = runs.iter().filter_map(|r| r.denied).sum();
    if non2xx > 0 {
        problems.push(format!("{non2xx} answers other than 2xx"));
    }
    if errors > 0 {
        problems.push(format!("{errors} socket errors"));
    }
    if denied > 0 {
        problems.push(format!("{denied} requests denied or queued"));
    }
    if runs.iter().any(|r| r.denied.is_none()) {
        problems.push("Sluice's counters unreadable".into());
    }
    // wrk opens its connections anew each run; more means Envoy closed some.
    let reopened: Vec<String> = runs
        .iter()
        .filter(|r| r.connections_opened.is_some_and(|c| c > 2 * u64::from(connections) + 2))
        .map(|r| format!("round {} {}: {} connections opened", r.round + 1, r.kind.label(), r.connections_opened.unwrap_or(0)))
        .collect();
    problems.extend(reopened);
    for r in &runs {
        let counted = r.jsonrpc_rule_allowed.unwrap_or(0);
        let wrong = match r.kind {
            // wrk counts requests whose answer arrived; a few more may have reached the filter.
            Kind::JsonRpc => counted < r.wrk.requests,
            Kind::Rest => counted > 0,
        };
        if wrong && r.jsonrpc_rule_allowed.is_some() {
            problems.push(format!("round {} {}: {JSONRPC_RULE} counted {counted} of {} requests", r.round + 1, r.kind.label(), r.wrk.requests));
        }
    }
    Outcome {
        cpu_diff_us: over(&|p| p.cpu_diff_us),
        jsonrpc_cpu_us: over(&|p| p.jsonrpc_cpu_us),
        rest_cpu_us: over(&|p| p.rest_cpu_us),
        p50_diff_us: over(&|p| p.p50_diff_us),
        p99_diff_us: over(&|p| p.p99_diff_us),
        pairs,
        runs,
        problems,
    }
}

/// The issue's target: at most [`TARGET_US`] of Envoy CPU per request more
/// for JSON-RPC than for REST; not measured when the runs are not valid,
/// and no verdict when the REST runs' own CPU per request moved more than
/// the target between rounds (a loaded machine).
pub fn targets(o: &Outcome) -> Vec<Target> {
    let measured = match (&o.cpu_diff_us, o.problems.is_empty()) {
        (Some(d), true) => format!("{} µs", number(d.median, 1)),
        (Some(d), false) => format!("{} µs, runs not valid: {}", number(d.median, 1), o.problems.join("; ")),
        (None, _) => "–".into(),
    };
    let target = Target::new(
        &format!("JSON-RPC decision cost over REST of the same size ({BODY_BYTES} B), Envoy CPU per request (jsonrpc)"),
        &format!("≤ {TARGET_US:.0} µs"),
        measured,
        o.cpu_diff_us.filter(|_| o.problems.is_empty()).map(|d| d.median <= TARGET_US),
    );
    vec![target.unless_noisy(o.rest_cpu_us.map(|r| r.max - r.min), TARGET_US, "REST's own CPU per request")]
}

/// The markdown table.
pub fn render(o: &Outcome, settings: &Settings, header: &str) -> String {
    let mut md = vec!["### JSON-RPC decision cost over REST".to_string(), String::new(), format!("{SETUP}{header}"), String::new()];
    md.push(
        "| round | JSON-RPC: Envoy CPU µs per request | REST: Envoy CPU µs per request | JSON-RPC − REST, µs | p50 / p99 µs JSON-RPC | p50 / p99 µs REST | req/s JSON-RPC / REST |"
            .into(),
    );
    md.push("|---|---|---|---|---|---|---|".into());
    let find = |round: u32, kind: Kind| o.runs.iter().find(|r| r.round == round && r.kind == kind);
    let lat = |r: Option<&Run>| r.map_or_else(|| "–".into(), |r| format!("{} / {}", r.wrk.p50_us, r.wrk.p99_us));
    let rps = |r: Option<&Run>| r.map_or_else(|| "–".into(), |r| number(r.rps, 0));
    for p in &o.pairs {
        let (j, r) = (find(p.round, Kind::JsonRpc), find(p.round, Kind::Rest));
        md.push(format!(
            "| {} | {} | {} | {} | {} | {} | {} / {} |",
            p.round + 1,
            number(p.jsonrpc_cpu_us, 1),
            number(p.rest_cpu_us, 1),
            number(p.cpu_diff_us, 1),
            lat(j),
            lat(r),
            rps(j),
            rps(r)
        ));
    }
    let show = |s: &Option<Spread>| s.map_or_else(|| "–".to_string(), |s| s.show(1));
    let diff = |s: &Option<Spread>| s.map_or_else(|| "–".to_string(), |s| number(s.median, 0));
    md.push(format!(
        "| **median (min–max)** | {} | {} | **{}** | added p50 {} µs, p99 {} µs | | |",
        show(&o.jsonrpc_cpu_us),
        show(&o.rest_cpu_us),
        show(&o.cpu_diff_us),
        diff(&o.p50_diff_us),
        diff(&o.p99_diff_us)
    ));
    md.push(String::new());
    let requests: u64 = o.runs.iter().map(|r| r.wrk.requests).sum();
    let check = if o.problems.is_empty() {
        format!(
            "All {} measured requests answered 200 with no socket error; Sluice denied none, and its `{JSONRPC_RULE}` rule counted \
             every JSON-RPC request and no REST one; Envoy kept every connection open.",
            number(requests as f64, 0)
        )
    } else {
        format!("**The runs do not measure what they should:** {}.", o.problems.join("; "))
    };
    md.push(check);
    md.push(String::new());
    md.push(format!(
        "Each run: wrk -t1 -c{} at saturation (no pause between requests), {} s; CPU per request is Envoy's (all threads) \
         over the run divided by the requests answered.",
        settings.connections, settings.duration_s
    ));
    md.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_bodies_have_the_same_length_and_the_jsonrpc_one_is_a_tools_call() {
        for i in [0, 9, 99, 999, 123_456] {
            let j = body(Kind::JsonRpc, i, BODY_BYTES);
            let r = body(Kind::Rest, i, BODY_BYTES);
            assert_eq!((j.len(), r.len()), (BODY_BYTES, BODY_BYTES), "{i}");
            let v: serde_json::Value = serde_json::from_str(&j).unwrap();
            assert_eq!(v["method"], "tools/call");
            assert_eq!(v["id"], i + 1);
            assert_eq!(v["params"]["name"], "echo");
            let v: serde_json::Value = serde_json::from_str(&r).unwrap();
            assert!(v["text"].as_str().unwrap().starts_with('x'));
        }
    }

    #[test]
    fn saturation_with_enough_clients_to_stay_below_every_limit() {
        let s = Settings::new(3, 1000, 32, true);
        assert_eq!((s.connections, s.clients), (32, MIN_CLIENTS));
        assert_eq!(s.args(Kind::Rest), ["rest", "4000", "512", "0"]);
        assert_eq!(Settings::new(3, 10_000, 0, true).args(Kind::JsonRpc), ["jsonrpc", "10000", "512", "0"]);
        assert_eq!(Settings::new(3, 10_000, 0, true).connections, 1);
    }

    fn run(round: u32, kind: Kind, cpu: f64, counted: u64) -> Run {
        let wrk = crate::wrk::parse(
            "sluice-bench {\"requests\": 100, \"duration_us\": 1000000, \"non2xx\": 0, \"connect_errors\": 0, \"read_errors\": 0, \
             \"write_errors\": 0, \"timeouts\": 0, \"p50_us\": 300, \"p90_us\": 400, \"p99_us\": 500, \"max_us\": 900}",
        )
        .unwrap();
        Run { round, kind, rps: 100.0, wrk, cpu_us: Some(cpu), jsonrpc_rule_allowed: Some(counted), denied: Some(0), connections_opened: Some(0) }
    }

    #[test]
    fn the_target_is_the_median_of_paired_differences_and_can_fail() {
        let runs = vec![
            run(0, Kind::JsonRpc, 60.0, 100),
            run(0, Kind::Rest, 52.0, 0),
            run(1, Kind::Rest, 50.0, 0),
            run(1, Kind::JsonRpc, 70.0, 100),
            run(2, Kind::JsonRpc, 65.0, 100),
            run(2, Kind::Rest, 50.0, 0),
        ];
        let o = summarise(runs.clone(), 8);
        assert_eq!(o.cpu_diff_us.unwrap().median, 15.0);
        assert_eq!(targets(&o)[0].met, Some(false));
        let mut cheaper = runs.clone();
        cheaper[3].cpu_us = Some(55.0);
        cheaper[4].cpu_us = Some(55.0);
        let o = summarise(cheaper, 8);
        assert_eq!(o.cpu_diff_us.unwrap().median, 5.0);
        assert_eq!(targets(&o)[0].met, Some(true));
        // A REST run the JSON-RPC rules counted: not a valid measurement.
        let mut wrong = runs;
        wrong[1].jsonrpc_rule_allowed = Some(100);
        let o = summarise(wrong, 8);
        assert_eq!(targets(&o)[0].met, None);
        assert!(!o.problems.is_empty());
    }

    #[test]
    fn no_verdict_when_rest_alone_moved_more_than_the_target() {
        // The JSON-RPC runs cost 15 µs more, but REST alone moved 12 µs
        // between rounds: the machine, not the decision.
        let runs = vec![run(0, Kind::JsonRpc, 60.0, 100), run(0, Kind::Rest, 45.0, 0), run(1, Kind::Rest, 57.0, 0), run(1, Kind::JsonRpc, 72.0, 100)];
        let t = &targets(&summarise(runs, 8))[0];
        assert_eq!((t.met, t.noisy, t.verdict()), (None, true, "too noisy to tell"));
        assert!(t.measured.contains("REST's own CPU per request moved 12 µs"), "{}", t.measured);
    }
}
