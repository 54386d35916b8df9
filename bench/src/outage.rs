//! Scenario `outage`: Sluice with the default policy (global rules through
//! the counter service and a real Redis, failing open) under a steady load;
//! Redis is killed mid-run and restarted later. Latency is reported per
//! phase (before, during the outage, after the restart), and the seconds
//! from the restart until the filter logs that global enforcement is back.

use std::time::{Duration, Instant};

use serde::Serialize;
use wasm_test_harness::{load, Envoy, LoadOptions, LoadReport};

use crate::mix::Mix;
use crate::report::SETUP;
use crate::variant::{Setup, Variant};

const DOWN: &str = "counter service unreachable";
const BACK: &str = "counter service reachable again";

/// One phase of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    pub seconds: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub ok: u64,
    pub denied_429: u64,
    pub unavailable_503: u64,
    pub errors: u64,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Outage {
    pub rate: f64,
    pub phases: Vec<Phase>,
    /// From the kill until the filter logged the service unreachable.
    pub seconds_to_fallback: Option<f64>,
    /// From Redis answering again until the filter logged enforcement back.
    pub seconds_to_recover: Option<f64>,
}

/// Runs it: `phase` seconds before and during the outage, then up to
/// `phase` + 10 s after the restart.
pub fn run(setup: &mut Setup, mix: Mix, rate: f64, phase: Duration) -> anyhow::Result<Outage> {
    let envoy = setup.start(Variant::SluiceGlobal, 2, "info")?;
    let drive = |secs: Duration| -> anyhow::Result<LoadReport> {
        load(LoadOptions {
            port: envoy.port(),
            connections: 8,
            duration: Some(secs),
            rate: Some(rate),
            request: mix.request_fn(),
            timeout: Duration::from_secs(5),
            ..Default::default()
        })
    };
    drive(Duration::from_secs(2))?;
    let mut phases = vec![summarise("before", &drive(phase)?)];

    let Some(backends) = setup.backends_mut() else { anyhow::bail!("the outage needs Redis") };
    let killed = Instant::now();
    backends.redis.kill();
    let during = std::thread::scope(|s| {
        let watcher = s.spawn(|| wait_for_log(&envoy, DOWN, phase + Duration::from_secs(5)));
        let report = drive(phase);
        (report, watcher.join().ok().flatten())
    });
    let seconds_to_fallback = during.1.map(|at| at.duration_since(killed).as_secs_f64());
    phases.push(summarise("Redis down", &during.0?));

    backends.redis.restart()?;
    let restarted = Instant::now();
    let after = std::thread::scope(|s| {
        let watcher = s.spawn(|| wait_for_log(&envoy, BACK, phase + Duration::from_secs(10)));
        let report = drive(phase + Duration::from_secs(2));
        (report, watcher.join().ok().flatten())
    });
    let seconds_to_recover = after.1.map(|at| at.duration_since(restarted).as_secs_f64());
    phases.push(summarise("after restart", &after.0?));
    for p in &phases {
        eprintln!(
            "  {:<14} p50 {} µs, p99 {} µs, max {} µs; 200: {}, 429: {}, 503: {}, errors: {}",
            p.name, p.p50_us, p.p99_us, p.max_us, p.ok, p.denied_429, p.unavailable_503, p.errors
        );
    }
    let secs = |s: Option<f64>| s.map_or_else(|| "not seen".to_string(), |s| format!("{s:.2} s"));
    eprintln!("  fallback logged {} after the kill, enforcement back {} after the restart", secs(seconds_to_fallback), secs(seconds_to_recover));
    Ok(Outage { rate, phases, seconds_to_fallback, seconds_to_recover })
}

fn summarise(name: &str, r: &LoadReport) -> Phase {
    Phase {
        name: name.into(),
        seconds: r.elapsed.as_secs_f64(),
        p50_us: r.p50_us,
        p99_us: r.p99_us,
        max_us: r.max_us,
        ok: r.count(200),
        denied_429: r.count(429),
        unavailable_503: r.count(503),
        errors: r.errors,
    }
}

/// When `needle` first appears in Envoy's log, polling for up to `timeout`.
fn wait_for_log(envoy: &Envoy, needle: &str, timeout: Duration) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if envoy.logs_tail(5000).contains(needle) {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// The markdown table.
pub fn render(o: &Outage, header: &str) -> String {
    let mut md = vec!["### Redis outage".to_string(), String::new(), format!("{SETUP}{header}"), String::new()];
    md.push("| phase | seconds | p50 µs | p99 µs | max µs | 200 | 429 | 503 | errors |".into());
    md.push("|---|---|---|---|---|---|---|---|---|".into());
    for p in &o.phases {
        md.push(format!(
            "| {} | {:.1} | {} | {} | {} | {} | {} | {} | {} |",
            p.name, p.seconds, p.p50_us, p.p99_us, p.max_us, p.ok, p.denied_429, p.unavailable_503, p.errors
        ));
    }
    let secs = |s: Option<f64>| s.map_or_else(|| "not seen".to_string(), |s| format!("{s:.2} s"));
    md.push(String::new());
    md.push(format!(
        "Fallback logged {} after the kill; global enforcement back {} after Redis answered again.",
        secs(o.seconds_to_fallback),
        secs(o.seconds_to_recover)
    ));
    md.join("\n") + "\n"
}
