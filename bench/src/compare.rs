//! Scenarios `overhead` (nothing denied) and `denial` (about half denied):
//! every variant measured in the same run, interleaved round by round (the
//! order rotates each round), each run on a freshly started Envoy with one
//! worker:
//!
//! 1. warm-up: wrk for `warmup` (V8 compiles, buckets and leases fill);
//! 2. saturation: wrk, one thread, `connections` connections, for `saturation`;
//! 3. fixed rate: the harness load generator at `fixed_rate` requests per
//!    second for `fixed_duration`, for latency at a moderate load.
//!
//! Every figure is summarised as a median with min–max over rounds; ratios
//! and added latencies are paired within a round (variant vs `none` of the
//! same round) before taking their median.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use wasm_test_harness::{load, Envoy, LoadOptions};

use crate::chart::{self, Bars};
use crate::machine::envoy_cpu_ns;
use crate::mix::Mix;
use crate::report::{Files, Target, SETUP};
use crate::stats::{number, Spread};
use crate::variant::{Setup, Variant};
use crate::wrk::{Wrk, WrkResult};

/// How a comparison runs.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub rounds: u32,
    pub variants: Vec<Variant>,
    /// What each variant is.
    pub descriptions: BTreeMap<&'static str, &'static str>,
    pub mix: Mix,
    pub mix_description: String,
    #[serde(serialize_with = "secs")]
    pub warmup: Duration,
    #[serde(serialize_with = "secs")]
    pub saturation: Duration,
    pub wrk_connections: u32,
    pub fixed_rate: f64,
    #[serde(serialize_with = "secs")]
    pub fixed_duration: Duration,
    pub fixed_connections: usize,
    pub envoy_workers: u32,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// One run of one variant.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub round: u32,
    pub variant: Variant,
    pub saturation_rps: f64,
    pub saturation: WrkResult,
    pub fixed: Fixed,
    /// Sluice's own `sluice_decision_duration_us` histogram over the whole
    /// run (p50, p99): the time inside the filter's decision.
    pub decision_us: Option<(f64, f64)>,
    /// Sluice's `sluice_periodic_work_duration_us` during the fixed-rate run
    /// (p99, max, as the histogram buckets holding them): how long its ticks
    /// and the counter service's answers held the worker.
    pub periodic_us: Option<(f64, f64)>,
    /// Envoy's CPU time per request, µs (all its threads, from schedstat):
    /// at saturation and at the fixed rate. Less noisy than throughput, and
    /// what a filter costs whatever the load.
    pub saturation_cpu_us: Option<f64>,
    pub fixed_cpu_us: Option<f64>,
    /// Sluice's shared-data reads and writes per request at saturation
    /// (its `sluice_shared_data_*_total` counters, all threads): the
    /// crossings its slots cost, counted in Envoy rather than timed.
    pub saturation_slot_calls: Option<f64>,
    pub envoy_rss_bytes: u64,
}

/// The fixed-rate part of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Fixed {
    pub offered_rps: f64,
    pub achieved_rps: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub errors: u64,
}

impl Fixed {
    fn denied(&self) -> f64 {
        let all: u64 = self.statuses.values().sum();
        let ok: u64 = self.statuses.iter().filter(|(s, _)| (200..400).contains(*s)).map(|(_, n)| n).sum();
        (all - ok) as f64 / all.max(1) as f64
    }
}

/// A variant over all rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub variant: Variant,
    pub rps: Option<Spread>,
    pub rps_vs_none: Option<Spread>,
    pub rps_vs_noop: Option<Spread>,
    pub rps_vs_local: Option<Spread>,
    pub saturation_p50_us: Option<Spread>,
    pub saturation_p99_us: Option<Spread>,
    pub saturation_denied: Option<Spread>,
    pub fixed_p50_us: Option<Spread>,
    pub fixed_p99_us: Option<Spread>,
    pub added_p50_us: Option<Spread>,
    pub added_p99_us: Option<Spread>,
    pub fixed_denied: Option<Spread>,
    pub decision_p50_us: Option<Spread>,
    pub decision_p99_us: Option<Spread>,
    /// Sluice's periodic work (ticks, answers applied), p99 and max µs.
    pub periodic_p99_us: Option<Spread>,
    pub periodic_max_us: Option<Spread>,
    pub cpu_us: Option<Spread>,
    /// CPU per request minus noop-wasm's in the same round: the filter's own cost.
    pub cpu_us_vs_noop: Option<Spread>,
    pub fixed_cpu_us: Option<Spread>,
    /// Shared-data reads and writes per request at saturation.
    pub slot_calls: Option<Spread>,
    pub socket_errors: u64,
}

/// Everything a comparison produced.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub runs: Vec<Run>,
    pub summaries: Vec<Summary>,
}

/// Runs every round; a failed run is reported and left out.
pub fn run(setup: &Setup, wrk: &Wrk, settings: &Settings) -> anyhow::Result<Comparison> {
    let mut runs = Vec::new();
    let n = settings.variants.len();
    for round in 0..settings.rounds {
        for i in 0..n {
            let variant = settings.variants[(i + round as usize) % n];
            match one(setup, wrk, settings, variant, round) {
                Ok(r) => {
                    eprintln!(
                        "  round {}/{} {:<32} {:>7} req/s, {} µs CPU{} each (p50 {} µs, p99 {} µs, {:.1}% denied) | {} req/s: p50 {} µs, p99 {} µs",
                        round + 1,
                        settings.rounds,
                        variant.name(),
                        number(r.saturation_rps, 0),
                        r.saturation_cpu_us.map_or_else(|| "?".into(), |c| number(c, 1)),
                        r.saturation_slot_calls.map_or_else(String::new, |c| format!(" and {c:.2} shared-data calls")),
                        r.saturation.p50_us,
                        r.saturation.p99_us,
                        100.0 * r.saturation.denied(),
                        number(settings.fixed_rate, 0),
                        r.fixed.p50_us,
                        r.fixed.p99_us
                    );
                    runs.push(r);
                }
                Err(e) => eprintln!("  round {}/{} {}: failed: {e:#}", round + 1, settings.rounds, variant.name()),
            }
        }
    }
    if runs.is_empty() {
        anyhow::bail!("every run failed");
    }
    let summaries = settings.variants.iter().map(|v| summarise(&runs, *v)).collect();
    Ok(Comparison { runs, summaries })
}

fn one(setup: &Setup, wrk: &Wrk, settings: &Settings, variant: Variant, round: u32) -> anyhow::Result<Run> {
    let envoy = setup.start(variant, settings.envoy_workers, "warn")?;
    let port = envoy.port();
    wrk.run(port, &settings.mix, settings.warmup)?;
    let cpu = || envoy_cpu_ns(&envoy);
    let (before, slots_before) = (cpu(), envoy.shared_data_calls());
    let saturation = wrk.run(port, &settings.mix, settings.saturation)?;
    let saturation_cpu_us = per_request(before, cpu(), saturation.requests);
    // Each worker hands its counts to Envoy on its tick (within 100 ms).
    std::thread::sleep(Duration::from_millis(200));
    let saturation_slot_calls = slots_before.zip(envoy.shared_data_calls()).and_then(|(b, a)| {
        let requests = saturation.requests;
        (requests > 0).then(|| a.saturating_sub(b) as f64 / requests as f64)
    });
    let before = cpu();
    let periodic_before = buckets(&envoy, PERIODIC);
    let report = load(LoadOptions {
        port,
        connections: settings.fixed_connections,
        duration: Some(settings.fixed_duration),
        rate: Some(settings.fixed_rate),
        request: settings.mix.request_fn(),
        timeout: Duration::from_secs(5),
        ..Default::default()
    })?;
    let fixed_cpu_us = per_request(before, cpu(), report.statuses.values().sum());
    let envoy_rss_bytes = envoy.rss_bytes().unwrap_or(0);
    let decision_us = quantiles(&envoy, "sluice_decision_duration_us", [50.0, 99.0]);
    let periodic_us = periodic_before.zip(buckets(&envoy, PERIODIC)).and_then(|(b, a)| bucket_quantiles(&b, &a));
    drop(envoy);
    Ok(Run {
        round,
        variant,
        saturation_rps: saturation.rps(),
        saturation,
        fixed: Fixed {
            offered_rps: settings.fixed_rate,
            achieved_rps: report.rps(),
            p50_us: report.p50_us,
            p99_us: report.p99_us,
            max_us: report.max_us,
            statuses: report.statuses.clone(),
            errors: report.errors,
        },
        decision_us,
        periodic_us,
        saturation_cpu_us,
        fixed_cpu_us,
        saturation_slot_calls,
        envoy_rss_bytes,
    })
}

/// CPU µs per request between two schedstat readings.
fn per_request(before: Option<u64>, after: Option<u64>, requests: u64) -> Option<f64> {
    let spent = after?.checked_sub(before?)?;
    (requests > 0).then(|| spent as f64 / 1e3 / requests as f64)
}

/// Two quantiles (in percent) of one of Sluice's histograms, from Envoy's
/// admin.
fn quantiles(envoy: &Envoy, name: &str, [q1, q2]: [f64; 2]) -> Option<(f64, f64)> {
    let url = envoy.admin_url(&format!("/stats?format=json&filter={name}"));
    let body = wasm_test_harness::get(&url, &[]).ok()?.json().ok()?;
    let hist = body["stats"].as_array()?.iter().find_map(|s| s.get("histograms"))?;
    let supported: Vec<f64> = hist["supported_quantiles"].as_array()?.iter().filter_map(|q| q.as_f64()).collect();
    let values = hist["computed_quantiles"].as_array()?.iter().find(|h| h["name"].as_str().is_some_and(|n| n.contains(name)))?["values"].as_array()?;
    let at = |q: f64| {
        let i = supported.iter().position(|x| (x - q).abs() < 1e-9)?;
        values.get(i)?["cumulative"].as_f64()
    };
    Some((at(q1)?, at(q2)?))
}

/// Sluice's periodic-work histogram.
const PERIODIC: &str = "sluice_periodic_work_duration_us";

/// A histogram's cumulative bucket counts, `(le, count)`, from Envoy's
/// Prometheus output (`+Inf` as infinity).
fn buckets(envoy: &Envoy, name: &str) -> Option<Vec<(f64, f64)>> {
    let url = envoy.admin_url(&format!("/stats/prometheus?filter={name}"));
    let text = wasm_test_harness::get(&url, &[]).ok()?.body;
    let prefix = format!("{name}_bucket{{");
    let out: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    (!out.is_empty()).then_some(out)
}

/// p99 and max of what was recorded between two readings of a histogram's
/// buckets, each as the upper bound of the bucket holding it.
fn bucket_quantiles(before: &[(f64, f64)], after: &[(f64, f64)]) -> Option<(f64, f64)> {
    let delta: Vec<(f64, f64)> = after.iter().map(|&(le, n)| (le, n - before.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1))).collect();
    let total = delta.iter().map(|d| d.1).fold(0.0, f64::max);
    if total <= 0.0 {
        return None;
    }
    let bound = |q: f64| delta.iter().find(|d| d.1 >= q * total).map(|d| d.0);
    Some((bound(0.99)?, bound(1.0)?))
}

fn summarise(runs: &[Run], variant: Variant) -> Summary {
    let mine: Vec<&Run> = runs.iter().filter(|r| r.variant == variant).collect();
    let of = |f: &dyn Fn(&Run) -> f64| Spread::of(&mine.iter().map(|r| f(r)).collect::<Vec<_>>());
    // Paired with `base` in the same round.
    let paired = |base: Variant, f: &dyn Fn(&Run, &Run) -> f64| {
        let values: Vec<f64> = mine.iter().filter_map(|r| runs.iter().find(|b| b.variant == base && b.round == r.round).map(|b| f(r, b))).collect();
        if variant == base {
            None
        } else {
            Spread::of(&values)
        }
    };
    let ratio = |r: &Run, b: &Run| r.saturation_rps / b.saturation_rps;
    Summary {
        variant,
        rps: of(&|r| r.saturation_rps),
        rps_vs_none: paired(Variant::None, &ratio),
        rps_vs_noop: paired(Variant::NoopWasm, &ratio),
        rps_vs_local: paired(Variant::SluiceLocal, &ratio),
        saturation_p50_us: of(&|r| r.saturation.p50_us as f64),
        saturation_p99_us: of(&|r| r.saturation.p99_us as f64),
        saturation_denied: of(&|r| r.saturation.denied()),
        fixed_p50_us: of(&|r| r.fixed.p50_us as f64),
        fixed_p99_us: of(&|r| r.fixed.p99_us as f64),
        added_p50_us: paired(Variant::None, &|r, b| r.fixed.p50_us as f64 - b.fixed.p50_us as f64),
        added_p99_us: paired(Variant::None, &|r, b| r.fixed.p99_us as f64 - b.fixed.p99_us as f64),
        fixed_denied: of(&|r| r.fixed.denied()),
        decision_p50_us: of(&|r| r.decision_us.map_or(f64::NAN, |d| d.0)),
        decision_p99_us: of(&|r| r.decision_us.map_or(f64::NAN, |d| d.1)),
        periodic_p99_us: of(&|r| r.periodic_us.map_or(f64::NAN, |d| d.0)),
        periodic_max_us: of(&|r| r.periodic_us.map_or(f64::NAN, |d| d.1)),
        cpu_us: of(&|r| r.saturation_cpu_us.unwrap_or(f64::NAN)),
        cpu_us_vs_noop: paired(Variant::NoopWasm, &|r, b| match (r.saturation_cpu_us, b.saturation_cpu_us) {
            (Some(a), Some(b)) => a - b,
            _ => f64::NAN,
        }),
        fixed_cpu_us: of(&|r| r.fixed_cpu_us.unwrap_or(f64::NAN)),
        slot_calls: of(&|r| r.saturation_slot_calls.unwrap_or(f64::NAN)),
        socket_errors: mine.iter().map(|r| r.saturation.errors() + r.fixed.errors).sum(),
    }
}

fn find(c: &Comparison, v: Variant) -> Option<&Summary> {
    c.summaries.iter().find(|s| s.variant == v)
}

/// The targets for this comparison. `reference` adds the ones about
/// Envoy and the VM rather than about Sluice (overhead only).
pub fn targets(c: &Comparison, settings: &Settings, reference: bool, tag: &str) -> Vec<Target> {
    let mut out = Vec::new();
    let name = |s: &str| format!("{s} ({tag})");
    let near = |x: f64, want: f64| (x - want).abs() <= 0.1 * want;
    let ratio = |s: Option<&Spread>| s.map_or_else(|| "–".to_string(), |s| format!("{:.3}×", s.median));
    if reference {
        let rps = find(c, Variant::None).and_then(|s| s.rps);
        out.push(Target::reference(
            &name("no filter ≈ 30k req/s (1 worker, wrk on the other core)"),
            "≈ 30,000 req/s (±10%)",
            rps.map_or_else(|| "–".into(), |s| format!("{} req/s", number(s.median, 0))),
            rps.map(|s| near(s.median, 30_000.0)),
        ));
        for (v, want) in [(Variant::NativeLocalRatelimit, 0.96), (Variant::NoopWasm, 0.70)] {
            let r = find(c, v).and_then(|s| s.rps_vs_none);
            out.push(Target::reference(
                &name(&format!("{} ≈ {want:.2}× no filter", v.name())),
                &format!("≈ {want:.2}× (±10%)"),
                ratio(r.as_ref()),
                r.map(|s| near(s.median, want)),
            ));
        }
    }
    for (v, what, want) in [(Variant::SluiceLocal, "default headers", 0.75), (Variant::SluiceLocalNoHeaders, "response_headers none", 0.85)] {
        let r = find(c, v).and_then(|s| s.rps_vs_noop);
        let label = format!("{} ≥ {want:.2}× the do-nothing wasm filter ({what})", v.name());
        out.push(Target::new(&name(&label), &format!("≥ {want:.2}×"), ratio(r.as_ref()), r.map(|s| s.median >= want)));
    }
    let cpu = find(c, Variant::SluiceLocal).and_then(|s| s.cpu_us_vs_noop);
    out.push(Target::new(
        &name("sluice-local Envoy CPU over noop-wasm per request"),
        "≤ 8 µs",
        cpu.map_or_else(|| "–".into(), |s| format!("{:.1} µs", s.median)),
        cpu.map(|s| s.median <= 8.0),
    ));
    // Issue 16: p50 and p99 for sluice-local, p99 for sluice-global.
    let latency = [(Variant::SluiceLocal, "p50", 50.0), (Variant::SluiceLocal, "p99", 250.0), (Variant::SluiceGlobal, "p99", 500.0)];
    for (v, p, limit) in latency {
        let Some(s) = find(c, v) else { continue };
        let spread = if p == "p50" { s.added_p50_us } else { s.added_p99_us };
        let target = Target::new(
            &name(&format!("{} added latency {p} at {} req/s", v.name(), number(settings.fixed_rate, 0))),
            &format!("≤ {} µs", limit),
            spread.map_or_else(|| "–".into(), |s| format!("{:.0} µs", s.median)),
            spread.map(|s| s.median <= limit),
        );
        out.push(target.unless_noisy(noise(c, p), limit, &format!("no filter's own {p}")));
    }
    let global = find(c, Variant::SluiceGlobal).and_then(|s| s.rps_vs_local);
    out.push(Target::new(&name("sluice-global ≥ 0.95× sluice-local"), "≥ 0.95×", ratio(global.as_ref()), global.map(|s| s.median >= 0.95)));
    let p99 = |v: Variant| find(c, v).and_then(|s| s.added_p99_us);
    for (peer, want) in [(Variant::EnvoyRatelimitLimitadorRedis, 3.0), (Variant::EnvoyRatelimitLimitadorMemory, 2.0)] {
        if find(c, peer).is_none() || find(c, Variant::SluiceGlobal).is_none() {
            continue;
        }
        let r = paired_rps(c, Variant::SluiceGlobal, peer);
        out.push(Target::new(
            &name(&format!("sluice-global ≥ {want:.0}× the req/s of {}", peer.name())),
            &format!("≥ {want:.0}×"),
            ratio(r.as_ref()),
            r.map(|s| s.median >= want),
        ));
        let (mine, theirs) = (p99(Variant::SluiceGlobal), p99(peer));
        let target = Target::new(
            &name(&format!("sluice-global added p99 below {}'s", peer.name())),
            "lower",
            match (mine, theirs) {
                (Some(m), Some(t)) => format!("{:.0} vs {:.0} µs", m.median, t.median),
                _ => "–".into(),
            },
            mine.zip(theirs).map(|(m, t)| m.median < t.median),
        );
        let apart = mine.zip(theirs).map_or(0.0, |(m, t)| (m.median - t.median).abs());
        out.push(target.unless_noisy(noise(c, "p99"), apart, "no filter's own p99"));
    }
    out
}

/// How far no filter's own latency at the fixed rate (`p`: "p50" or
/// "p99") moved between rounds: added latencies are paired against it, so
/// a difference smaller than that is the machine's, not the filter's.
fn noise(c: &Comparison, p: &str) -> Option<f64> {
    let s = find(c, Variant::None)?;
    let spread = if p == "p50" { s.fixed_p50_us } else { s.fixed_p99_us }?;
    Some(spread.max - spread.min)
}

/// `a`'s saturation req/s over `b`'s, paired within each round.
fn paired_rps(c: &Comparison, a: Variant, b: Variant) -> Option<Spread> {
    let values: Vec<f64> = c
        .runs
        .iter()
        .filter(|r| r.variant == a)
        .filter_map(|r| c.runs.iter().find(|o| o.variant == b && o.round == r.round).map(|o| r.saturation_rps / o.saturation_rps))
        .collect();
    Spread::of(&values)
}

/// The markdown table (with chart links) and the charts.
pub fn render(c: &Comparison, settings: &Settings, files: &Files, title: &str, header: &str) -> anyhow::Result<String> {
    let rate = number(settings.fixed_rate, 0);
    let mut md = vec![format!("### {title}"), String::new(), format!("{SETUP}{header}"), String::new()];
    md.push(format!(
        "| variant | req/s at saturation | × none | × noop-wasm | Envoy CPU µs per request | CPU µs over noop-wasm | p50 / p99 µs at {rate} req/s | added p50 µs | added p99 µs | Sluice's decision p50 / p99 µs | Sluice's shared-data calls per request | Sluice's periodic work p99 / max µs | denied |"
    ));
    md.push("|---|---|---|---|---|---|---|---|---|---|---|---|---|".into());
    let show = |s: Option<Spread>, d: usize| s.map_or_else(|| "–".to_string(), |s| s.show(d));
    for s in &c.summaries {
        let lat = match (s.fixed_p50_us, s.fixed_p99_us) {
            (Some(a), Some(b)) => format!("{:.0} / {:.0}", a.median, b.median),
            _ => "–".into(),
        };
        let denied = s.saturation_denied.map_or_else(|| "–".into(), |d| format!("{:.1}%", 100.0 * d.median));
        let decision = match (s.decision_p50_us, s.decision_p99_us) {
            (Some(a), Some(b)) => format!("{:.1} / {:.1}", a.median, b.median),
            _ => "–".into(),
        };
        let periodic = match (s.periodic_p99_us, s.periodic_max_us) {
            (Some(a), Some(b)) => format!("{:.0} / {:.0}", a.median, b.median),
            _ => "–".into(),
        };
        md.push(format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.variant.name(),
            show(s.rps, 0),
            show(s.rps_vs_none, 3),
            show(s.rps_vs_noop, 3),
            show(s.cpu_us, 1),
            show(s.cpu_us_vs_noop, 1),
            lat,
            show(s.added_p50_us, 0),
            show(s.added_p99_us, 0),
            decision,
            show(s.slot_calls, 2),
            periodic,
            denied
        ));
    }
    let names: Vec<String> = c.summaries.iter().map(|s| s.variant.name().to_string()).collect();
    chart::draw(
        &files.path("-rps.svg"),
        &Bars {
            title: &format!("{title}: requests/s at saturation (median, min–max)"),
            y_label: "requests per second",
            categories: names.clone(),
            series: vec![("req/s".into(), c.summaries.iter().map(|s| s.rps).collect())],
        },
    )?;
    let others: Vec<&Summary> = c.summaries.iter().filter(|s| s.variant != Variant::None).collect();
    chart::draw(
        &files.path("-latency.svg"),
        &Bars {
            title: &format!("{title}: latency added to no filter at {rate} req/s"),
            y_label: "µs",
            categories: others.iter().map(|s| s.variant.name().to_string()).collect(),
            series: vec![
                ("added p50".into(), others.iter().map(|s| s.added_p50_us).collect()),
                ("added p99".into(), others.iter().map(|s| s.added_p99_us).collect()),
            ],
        },
    )?;
    md.push(String::new());
    md.push(format!("![req/s]({}) ![added latency]({})", files.link("-rps.svg"), files.link("-latency.svg")));
    Ok(md.join("\n") + "\n")
}

#[cfg(test)]
mod tests;
