//! The peers in scenario `accuracy` (see [`crate::accuracy`]): Envoy's own
//! `envoy.filters.http.ratelimit` calling one shared `limitador-rls`
//! ([`crate::peer`]), in memory and counting in a real Redis of its own,
//! for the one-rule rows only. For each peer, 3 Envoy instances × 2 workers
//! (template `ratelimit.yaml`) are offered the same loads as Sluice's
//! one-rule rows ([`crate::accuracy::one_rule_loads`]): the rule's limit at
//! each instance (3× in all) for a window of warm-up and then the measured
//! windows, and then half the limit in all. Both sides of the peer come
//! from the accuracy policy's global rules, as [`PeerConfig::from_policy`]
//! builds them for the default policy.
//!
//! Reported per peer and rule: admitted ÷ allowed, the gRPC calls to the
//! service per request and per admitted request (Envoy's
//! `cluster.rate_limit_service.upstream_rq_total`: one per request with a
//! descriptor, by design), the requests the filter let through because the
//! service failed or did not answer within its 50 ms (it fails open, like
//! the policy's global rules), and the false denials at half the limit.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use serde::Serialize;
use wasm_test_harness::{Envoy, EnvoyOptions, LoadReport};

use crate::accuracy::{one_rule_loads, policy, OneRuleLoad, INSTANCES, WORKERS};
use crate::accuracy_load::measure_counting;
use crate::peer::PeerConfig;
use crate::variant::{checked, template, Peers, Variant};

/// Envoy's counters read around each run, summed over the instances: the
/// gRPC requests sent to the service; the filter's answers from it (under
/// and over the limit), its failed calls (refused, reset, or no answer in
/// 50 ms), and the requests it let through after one. The filter's are
/// under the route's cluster (`no_upstream`) and its `stat_prefix`.
const COUNTERS: [&str; 5] = [
    "cluster.rate_limit_service.upstream_rq_total",
    "cluster.no_upstream.ratelimit.peer.ok",
    "cluster.no_upstream.ratelimit.peer.over_limit",
    "cluster.no_upstream.ratelimit.peer.error",
    "cluster.no_upstream.ratelimit.peer.failure_mode_allowed",
];

/// One run of a peer: the instances' reports merged, and how much each of
/// [`COUNTERS`] grew meanwhile.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub report: LoadReport,
    pub grown: Vec<u64>,
}

impl Run {
    fn counter(&self, index: usize) -> u64 {
        self.grown.get(index).copied().unwrap_or(0)
    }
}

/// One peer's figures for one rule.
#[derive(Debug, Clone, Serialize)]
pub struct PeerRow {
    pub peer: Variant,
    pub rule: String,
    pub limit_per_s: u64,
    pub windows: u32,
    /// Requests per second offered in all (every instance together).
    pub offered_per_s: f64,
    /// Why the peer cannot express the rule; nothing was measured then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_expressed: Option<String>,
    /// Requests answered in the measured windows, and their statuses.
    pub offered: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub admitted: u64,
    pub allowed: u64,
    pub admitted_over_allowed: f64,
    /// gRPC requests to the service in the measured windows, and its
    /// answers there: under and over the limit.
    pub grpc_calls: u64,
    pub service_ok: u64,
    pub service_over_limit: u64,
    pub calls_per_request: f64,
    pub calls_per_admitted: f64,
    /// Failed calls to the service, and requests let through after one,
    /// over both runs.
    pub service_errors: u64,
    pub failed_open: u64,
    /// The run at half the limit: requests, and answers other than 200.
    pub under_limit_offered: u64,
    pub false_denials: u64,
    pub under_limit_statuses: BTreeMap<u16, u64>,
    /// Requests without an answer, over both runs.
    pub errors: u64,
}

impl PeerRow {
    fn empty(peer: Variant, load: &OneRuleLoad, windows: u32) -> PeerRow {
        PeerRow {
            peer,
            rule: load.rule.into(),
            limit_per_s: load.limit,
            windows,
            offered_per_s: (load.limit * 3) as f64,
            not_expressed: None,
            offered: 0,
            statuses: BTreeMap::new(),
            admitted: 0,
            allowed: load.limit * u64::from(windows),
            admitted_over_allowed: 0.0,
            grpc_calls: 0,
            service_ok: 0,
            service_over_limit: 0,
            calls_per_request: 0.0,
            calls_per_admitted: 0.0,
            service_errors: 0,
            failed_open: 0,
            under_limit_offered: 0,
            false_denials: 0,
            under_limit_statuses: BTreeMap::new(),
            errors: 0,
        }
    }

    /// The row of a rule the peer cannot express.
    pub fn not_expressed(peer: Variant, load: &OneRuleLoad, windows: u32, why: &str) -> PeerRow {
        PeerRow { not_expressed: Some(why.into()), ..PeerRow::empty(peer, load, windows) }
    }

    /// The row from the run at 3× (`over`) and the one at half the limit.
    pub fn summarise(peer: Variant, load: &OneRuleLoad, windows: u32, over: &Run, under: &Run) -> PeerRow {
        let mut r = PeerRow::empty(peer, load, windows);
        r.offered = over.report.responses();
        r.statuses = over.report.statuses.clone();
        r.admitted = over.report.count(200);
        r.admitted_over_allowed = r.admitted as f64 / r.allowed.max(1) as f64;
        r.grpc_calls = over.counter(0);
        r.calls_per_request = r.grpc_calls as f64 / r.offered.max(1) as f64;
        r.calls_per_admitted = r.grpc_calls as f64 / r.admitted.max(1) as f64;
        (r.service_ok, r.service_over_limit) = (over.counter(1), over.counter(2));
        r.service_errors = over.counter(3) + under.counter(3);
        r.failed_open = over.counter(4) + under.counter(4);
        r.under_limit_offered = under.report.responses();
        r.false_denials = r.under_limit_offered - under.report.count(200);
        r.under_limit_statuses = under.report.statuses.clone();
        r.errors = over.report.errors + under.report.errors;
        r
    }

    fn log(&self) {
        if let Some(why) = &self.not_expressed {
            eprintln!("  {} {}: not expressible ({why})", self.peer.name(), self.rule);
            return;
        }
        eprintln!(
            "  {} {} ({}/s offered): admitted {} of {} allowed ({:.2}%), statuses {:?}, {} gRPC calls ({:.4} per request, {:.4} per admitted; {} ok, {} over the limit), \
             {} service errors, {} failed open, {} false denials of {} under the limit, {} errors",
            self.peer.name(),
            self.rule,
            self.offered_per_s,
            self.admitted,
            self.allowed,
            100.0 * self.admitted_over_allowed,
            self.statuses,
            self.grpc_calls,
            self.calls_per_request,
            self.calls_per_admitted,
            self.service_ok,
            self.service_over_limit,
            self.service_errors,
            self.failed_open,
            self.false_denials,
            self.under_limit_offered,
            self.errors,
        );
    }
}

/// The peers' rows, with the limits they were given.
#[derive(Debug, Clone, Serialize)]
pub struct PeerResults {
    /// Limitador's limits and the filter's `rate_limits`, from the policy.
    pub limits: serde_json::Value,
    pub rate_limits: serde_json::Value,
    /// The policy's global rules the peers cannot express, with why.
    pub skipped: Vec<(String, String)>,
    /// Rules expressed without a part of them, with the part.
    pub expressed_without: Vec<(String, String)>,
    pub rows: Vec<PeerRow>,
}

/// The policy's global rules with a part the peers leave out (Envoy's
/// filter has no queue and nothing to obey an upstream's 429 with): the
/// rule's name and the parts.
pub fn expressed_without(policy: &str) -> Vec<(String, String)> {
    let policy: serde_json::Value = serde_json::from_str(policy).unwrap_or_default();
    let rules = policy["rules"].as_array().map(Vec::as_slice).unwrap_or_default();
    rules
        .iter()
        .filter(|r| r["scope"] == "global")
        .filter_map(|r| {
            let parts: Vec<&str> = [("queue", "its queue"), ("obey_upstream", "obey_upstream")]
                .into_iter()
                .filter(|(key, _)| !r[*key].is_null() && r[*key] != false)
                .map(|(_, part)| part)
                .collect();
            (!parts.is_empty()).then(|| (r["name"].as_str().unwrap_or("?").to_string(), parts.join(" and ")))
        })
        .collect()
}

/// The peer's limit for `rule` (requests, seconds), or why there is none.
pub fn peer_limit(config: &PeerConfig, rule: &str) -> Result<(u64, u64), String> {
    if let Some((_, why)) = config.skipped.iter().find(|(name, _)| name == rule) {
        return Err(why.clone());
    }
    let limits = config.limits.as_array().map(Vec::as_slice).unwrap_or_default();
    let limit = limits.iter().find(|l| l["name"] == rule).ok_or_else(|| format!("no global rule {rule} in the policy"))?;
    match (limit["max_value"].as_u64(), limit["seconds"].as_u64()) {
        (Some(requests), Some(seconds)) => Ok((requests, seconds)),
        _ => Err(format!("limit {rule} without max_value or seconds")),
    }
}

/// Runs the one-rule rows against each peer in turn.
pub fn run(windows: u32) -> anyhow::Result<PeerResults> {
    let policy = checked(&policy())?;
    let peers = Peers::start(&Variant::PEERS, &policy)?.context("the peers' rate-limit services did not start")?;
    let loads = one_rule_loads();
    let mut rows = Vec::new();
    for peer in Variant::PEERS {
        let envoys = start(peer, &policy, &peers.template_vars(peer)?)?;
        for load in &loads {
            let row = match peer_limit(&peers.config, load.rule) {
                Err(why) => PeerRow::not_expressed(peer, load, windows, &why),
                Ok((requests, seconds)) if (requests, seconds) != (load.limit, 1) => {
                    bail!("the peers' limit of {} is {requests} per {seconds} s, the row's {}/s", load.rule, load.limit)
                }
                Ok(_) => {
                    let (over, under) = measure_row(&envoys, load, windows);
                    PeerRow::summarise(peer, load, windows, &over, &under)
                }
            };
            row.log();
            rows.push(row);
        }
    }
    let config = peers.config.clone();
    Ok(PeerResults { limits: config.limits, rate_limits: config.rate_limits, skipped: config.skipped, expressed_without: expressed_without(&policy), rows })
}

/// The 3 instances of `peer`, each calling its service (`vars`: the
/// template's `RLS_PORT` and `RATE_LIMITS`).
fn start(peer: Variant, policy: &str, vars: &[(String, String)]) -> anyhow::Result<Vec<Envoy>> {
    (0..INSTANCES)
        .map(|i| {
            Envoy::start(EnvoyOptions {
                instance: i,
                template: template("ratelimit.yaml"),
                // Not read by the template; the harness writes it anyway.
                policy_json: policy.to_string(),
                concurrency: WORKERS,
                extra_vars: vars.to_vec(),
                log_level: "warn".into(),
                ..Default::default()
            })
            .with_context(|| format!("starting Envoy ({})", peer.name()))
        })
        .collect()
}

/// The rule's limit at each instance (3× in all), then half the limit in all.
fn measure_row(envoys: &[Envoy], load: &OneRuleLoad, windows: u32) -> (Run, Run) {
    let limit = load.limit as f64;
    let (report, grown) = measure_counting(envoys, limit, &load.over, windows, &COUNTERS);
    let over = Run { report, grown };
    let (report, grown) = measure_counting(envoys, limit * 0.5 / f64::from(INSTANCES), &load.under, windows, &COUNTERS);
    (over, Run { report, grown })
}

/// The peers' table, after Sluice's.
pub fn render(peers: &PeerResults) -> String {
    let mut md = vec![
        "#### The peers: Envoy's ratelimit filter and limitador-rls".to_string(),
        String::new(),
        format!(
            "3 Envoy instances × 2 workers whose `envoy.filters.http.ratelimit` calls one shared `limitador-rls` (in memory, or counting \
             in a Redis of its own) for every request with a descriptor, failing open after 50 ms; its limits built from the same policy's \
             global rules ({}), offered the same loads as Sluice's one-rule rows. The other rows are left out: they measure how Sluice \
             shares a limit among instances (floods, two rules at once, skew, fairness, bursts) or its queue (the small limit), while \
             the peers ask one service about every request and have no queue.{}",
            expressed(peers),
            skipped(peers)
        ),
        String::new(),
        "| peer | rule | limit | windows | offered | admitted ÷ allowed | gRPC calls per request (per admitted) | service errors (let through), both runs | false denials at ½ limit |".into(),
        "|---|---|---|---|---|---|---|---|---|".into(),
    ];
    for r in &peers.rows {
        let head = format!("| {} | {} | {}/s | {} |", r.peer.name(), r.rule, r.limit_per_s, r.windows);
        if let Some(why) = &r.not_expressed {
            md.push(format!("{head} — | not expressible: {why} | — | — | — |"));
            continue;
        }
        md.push(format!(
            "{head} {}/s: {}{} | {} ÷ {} = {:.2}% | {} ÷ {} = {:.4} ({:.4}) | {} ({}) | {} of {}{} |",
            crate::stats::number(r.offered_per_s, 0),
            r.offered,
            crate::accuracy_report::statuses(&r.statuses),
            r.admitted,
            r.allowed,
            100.0 * r.admitted_over_allowed,
            r.grpc_calls,
            r.offered,
            r.calls_per_request,
            r.calls_per_admitted,
            r.service_errors,
            r.failed_open,
            r.false_denials,
            r.under_limit_offered,
            crate::accuracy_report::statuses(&r.under_limit_statuses),
        ));
    }
    md.join("\n") + "\n"
}

/// `per-tenant 100/s, tools-invoke 20/s`: the limits the peers were given.
fn expressed(peers: &PeerResults) -> String {
    let limits = peers.limits.as_array().map(Vec::as_slice).unwrap_or_default();
    let each: Vec<String> = limits
        .iter()
        .map(|l| {
            let (name, requests, seconds) = (l["name"].as_str().unwrap_or("?"), l["max_value"].as_u64().unwrap_or(0), l["seconds"].as_u64().unwrap_or(0));
            if seconds == 1 {
                format!("{name} {requests}/s")
            } else {
                format!("{name} {requests} per {seconds} s")
            }
        })
        .collect();
    each.join(", ")
}

/// ` Not expressible for the peers: rule (why).` and ` Expressed without:
/// rule (part).`, where there are such rules.
fn skipped(peers: &PeerResults) -> String {
    let list = |rules: &[(String, String)]| rules.iter().map(|(name, why)| format!("{name} ({why})")).collect::<Vec<_>>().join(", ");
    let mut out = String::new();
    if !peers.skipped.is_empty() {
        out.push_str(&format!(" Not expressible for the peers: {}.", list(&peers.skipped)));
    }
    if !peers.expressed_without.is_empty() {
        out.push_str(&format!(" Expressed without: {}.", list(&peers.expressed_without)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accuracy_load::stat_sums;

    fn config() -> PeerConfig {
        PeerConfig::from_policy(&policy()).unwrap()
    }

    fn load(rule: &'static str) -> OneRuleLoad {
        one_rule_loads().into_iter().find(|l| l.rule == rule).unwrap()
    }

    fn run_of(statuses: &[(u16, u64)], grown: [u64; 5]) -> Run {
        Run { report: LoadReport { statuses: statuses.iter().copied().collect(), ..Default::default() }, grown: grown.to_vec() }
    }

    #[test]
    fn the_accuracy_policy_gives_the_peers_every_one_rule_limit_as_sluice_has_it() {
        let config = config();
        assert!(config.skipped.is_empty(), "{:?}", config.skipped);
        for load in one_rule_loads() {
            assert_eq!(peer_limit(&config, load.rule), Ok((load.limit, 1)), "{}", load.rule);
        }
        assert_eq!(peer_limit(&config, "bulk"), Ok((100, 1)));
        assert_eq!(peer_limit(&config, "integration-notion"), Ok((3, 1)));
        let names: Vec<&str> = config.limits.as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["per-tenant", "tools-invoke", "bulk", "integration-notion"]);
        // per-tenant applies to every request with a tenant; tools-invoke
        // only to POST /api/v1/tools/invoke.
        let rate_limits = config.rate_limits.as_array().unwrap();
        assert_eq!(rate_limits[0]["actions"], serde_json::json!([{"request_headers": {"header_name": "x-tenant-id", "descriptor_key": "per_tenant_tenant"}}]));
        let invoke = &rate_limits[1]["actions"][0]["header_value_match"]["headers"];
        assert_eq!(invoke[0]["string_match"]["exact"], "POST");
        assert_eq!(invoke[1]["string_match"]["exact"], "/api/v1/tools/invoke");
    }

    #[test]
    fn only_the_queued_rule_loses_a_part() {
        assert_eq!(expressed_without(&policy()), [("integration-notion".to_string(), "its queue and obey_upstream".to_string())]);
        let none = r#"{"rules": [{"name": "a", "scope": "global", "queue": {"max_wait": "1s"}}, {"name": "b", "queue": {"max_wait": "1s"}},
            {"name": "c", "scope": "global", "obey_upstream": false}]}"#;
        assert_eq!(expressed_without(none), [("a".to_string(), "its queue".to_string())]);
    }

    #[test]
    fn a_rule_the_peers_cannot_express_gives_why_and_an_unknown_rule_says_so() {
        let mut config = config();
        config.skipped.push(("oauth".into(), "a path template (path parameters)".into()));
        assert_eq!(peer_limit(&config, "oauth"), Err("a path template (path parameters)".into()));
        assert!(peer_limit(&config, "nowhere").unwrap_err().contains("no global rule nowhere"));
    }

    #[test]
    fn a_row_is_summarised_from_its_two_runs() {
        let over = run_of(&[(200, 500), (429, 1000)], [1500, 500, 998, 2, 2]);
        let under = run_of(&[(200, 240), (429, 9), (503, 1)], [250, 240, 9, 1, 1]);
        let r = PeerRow::summarise(Variant::EnvoyRatelimitLimitadorRedis, &load("per-tenant"), 5, &over, &under);
        assert_eq!((r.offered, r.admitted, r.allowed), (1500, 500, 500));
        assert!((r.admitted_over_allowed - 1.0).abs() < 1e-12);
        assert_eq!((r.grpc_calls, r.service_ok, r.service_over_limit), (1500, 500, 998));
        assert!((r.calls_per_request - 1.0).abs() < 1e-12 && (r.calls_per_admitted - 3.0).abs() < 1e-12);
        assert_eq!((r.service_errors, r.failed_open), (3, 3));
        assert_eq!((r.under_limit_offered, r.false_denials), (250, 10));
        assert_eq!(r.offered_per_s, 300.0);
        // Admitting more than allowed shows as more than 100%.
        let over = run_of(&[(200, 60), (429, 240)], [300, 60, 240, 0, 0]);
        let r = PeerRow::summarise(Variant::EnvoyRatelimitLimitadorMemory, &load("tools-invoke"), 2, &over, &run_of(&[(200, 20)], [20, 20, 0, 0, 0]));
        assert_eq!((r.allowed, r.admitted, r.false_denials), (40, 60, 0));
        assert!((r.admitted_over_allowed - 1.5).abs() < 1e-12);
    }

    /// Envoy's counters that [`COUNTERS`] names: a service that does not
    /// answer shows as calls, errors and requests let through.
    #[test]
    #[ignore = "needs Envoy; run with --ignored"]
    fn through_envoy_a_service_that_does_not_answer_is_counted_and_let_through() {
        let config = config();
        let vars = vec![("RLS_PORT".to_string(), wasm_test_harness::free_port().to_string()), ("RATE_LIMITS".to_string(), config.rate_limits.to_string())];
        let envoys = start(Variant::EnvoyRatelimitLimitadorMemory, &policy(), &vars).unwrap();
        let before = stat_sums(&envoys, &COUNTERS);
        for envoy in &envoys {
            let answer = wasm_test_harness::get(&envoy.url("/api/v1/anything"), &[("x-tenant-id", "accuracy-peers-test")]).unwrap();
            assert_eq!(answer.status, 200);
        }
        let grown: Vec<u64> = stat_sums(&envoys, &COUNTERS).iter().zip(&before).map(|(a, b)| a - b).collect();
        // Connections refused: no request reached the service.
        assert_eq!(grown, [0, 0, 0, 3, 3], "{COUNTERS:?}");
    }

    /// The same counters with the service answering: `tools-invoke` (20/s
    /// per tenant) lets a tenant's 20 requests through and refuses the 21st.
    #[test]
    #[ignore = "needs Envoy and target/release/limitador-rls (make limitador-rls); run with --ignored"]
    fn through_envoy_the_service_s_answers_are_counted() {
        let config = config();
        let rls = crate::peer::Rls::start(&config, None).unwrap();
        let vars = vec![("RLS_PORT".to_string(), rls.port().to_string()), ("RATE_LIMITS".to_string(), config.rate_limits.to_string())];
        let envoys = start(Variant::EnvoyRatelimitLimitadorMemory, &policy(), &vars).unwrap();
        let before = stat_sums(&envoys, &COUNTERS);
        let tenant = format!("accuracy-peers-{}", std::process::id());
        let statuses: Vec<u16> = (0..21)
            .map(|i| {
                let url = envoys[i % envoys.len()].url("/api/v1/tools/invoke");
                wasm_test_harness::request("POST", &url, &[("x-tenant-id", &tenant)], "").unwrap().status
            })
            .collect();
        let grown: Vec<u64> = stat_sums(&envoys, &COUNTERS).iter().zip(&before).map(|(a, b)| a - b).collect();
        assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 20, "{statuses:?}");
        assert_eq!(statuses[20], 429);
        assert_eq!(grown, [21, 20, 1, 0, 0], "{COUNTERS:?}");
    }

    #[test]
    fn the_table_has_a_row_per_peer_and_rule_and_says_which_rows_are_left_out() {
        let config = config();
        let over = run_of(&[(200, 100), (429, 200)], [300, 100, 200, 0, 0]);
        let under = run_of(&[(200, 50)], [50, 50, 0, 0, 0]);
        let rows = vec![
            PeerRow::summarise(Variant::EnvoyRatelimitLimitadorMemory, &load("per-tenant"), 1, &over, &under),
            PeerRow::not_expressed(Variant::EnvoyRatelimitLimitadorRedis, &load("tools-invoke"), 1, "a path template (path parameters)"),
        ];
        let results = PeerResults {
            limits: config.limits,
            rate_limits: config.rate_limits,
            skipped: vec![("x".into(), "why".into())],
            expressed_without: expressed_without(&policy()),
            rows,
        };
        let md = render(&results);
        assert!(
            md.contains(
                "| envoy-ratelimit-limitador-memory | per-tenant | 100/s | 1 | 300/s: 300 (429: 200) | 100 ÷ 100 = 100.00% | 300 ÷ 300 = 1.0000 (3.0000) |"
            ),
            "{md}"
        );
        assert!(md.contains("| envoy-ratelimit-limitador-redis | tools-invoke | 20/s | 1 | — | not expressible: a path template (path parameters) |"), "{md}");
        assert!(md.contains("per-tenant 100/s, tools-invoke 20/s, bulk 100/s, integration-notion 3/s"), "{md}");
        assert!(md.contains("The other rows are left out") && md.contains("Not expressible for the peers: x (why)."), "{md}");
        assert!(md.contains("Expressed without: integration-notion (its queue and obey_upstream)."), "{md}");
    }
}
