//! `sluice-bench`: Sluice's benchmarks in real Envoy, run through
//! wasm-test-harness (see docs/bench.md).
//!
//! ```text
//! sluice-bench [--quick] [--scenario NAME]... [--rounds N] [--out DIR]
//! ```
//!
//! Scenarios: `overhead` and `denial` (every variant interleaved round by
//! round, one Envoy worker on its own CPU, wrk at saturation and the harness
//! load generator at a fixed rate), `jsonrpc` (Envoy CPU per JSON-RPC
//! request over a REST request of the same size), `accuracy` (global limits
//! across 3 instances), `cardinality` (10^4–10^6 distinct clients) and `outage`
//! (Redis killed mid-run). Each writes `<out>/<date>-<scenario>.json`, a
//! markdown table and SVG charts; README.md and docs/bench.md are then
//! rebuilt from the latest files. Load only ever targets 127.0.0.1 and every
//! run stops by itself.

mod accuracy;
mod accuracy_load;
mod accuracy_peers;
mod accuracy_report;
mod cardinality;
mod chart;
mod compare;
mod jsonrpc;
mod machine;
mod mix;
mod outage;
mod peer;
mod report;
mod stats;
mod variant;
mod wrk;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use machine::{Machine, Pinning};
use mix::Mix;
use report::{Envelope, Files, Target};
use variant::{Setup, Variant};
use wrk::Wrk;

/// A benchmark scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Scenario {
    Overhead,
    Denial,
    Jsonrpc,
    Accuracy,
    Cardinality,
    Outage,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [Scenario::Overhead, Scenario::Denial, Scenario::Jsonrpc, Scenario::Accuracy, Scenario::Cardinality, Scenario::Outage];
    /// What `--quick` runs when no scenario is named.
    const QUICK: [Scenario; 5] = [Scenario::Overhead, Scenario::Denial, Scenario::Jsonrpc, Scenario::Accuracy, Scenario::Cardinality];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Overhead => "overhead",
            Scenario::Denial => "denial",
            Scenario::Jsonrpc => "jsonrpc",
            Scenario::Accuracy => "accuracy",
            Scenario::Cardinality => "cardinality",
            Scenario::Outage => "outage",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Scenario::Overhead => "Overhead, nothing denied",
            Scenario::Denial => "Denial path, about half denied",
            Scenario::Jsonrpc => "JSON-RPC decision cost over REST",
            Scenario::Accuracy => "Accuracy of global limits",
            Scenario::Cardinality => "Key cardinality",
            Scenario::Outage => "Redis outage",
        }
    }
}

#[derive(Debug, Parser)]
#[command(name = "sluice-bench", about = "Sluice's benchmarks in real Envoy (see docs/bench.md)")]
struct Args {
    /// A subset in under five minutes: 3 short rounds of overhead and
    /// denial, 5 short rounds of jsonrpc, 5 windows of accuracy, 10^4 and
    /// 10^5 clients.
    #[arg(long)]
    quick: bool,
    /// Scenario to run (repeatable); default: all (with --quick: all but outage).
    #[arg(long = "scenario", value_enum)]
    scenarios: Vec<Scenario>,
    /// Rounds of every comparison (default 5; 3 with --quick).
    #[arg(long)]
    rounds: Option<u32>,
    /// Where result files go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Variant of overhead and denial (repeatable); default: all.
    #[arg(long = "variant", value_enum)]
    variants: Vec<Variant>,
    /// Distinct clients (each with its own IP and tenant) in the overhead, denial and jsonrpc loads (jsonrpc: at least 4,000).
    #[arg(long, default_value_t = 1000)]
    clients: u64,
    /// Offered rate of the fixed-rate latency runs, requests per second.
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// wrk connections at saturation (overhead, denial and jsonrpc).
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// Policy for sluice-local (and cardinality) instead of the default
    /// policy made local; to see what a policy's rules cost.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Another build of the filter, run as variant `sluice-before` beside
    /// `sluice-local` (same policy), to measure a change before and after.
    #[arg(long, value_name = "FILE")]
    before: Option<PathBuf>,
    /// Leave README.md and docs/bench.md alone.
    #[arg(long)]
    no_readme: bool,
    /// Run nothing: rebuild README.md's and docs/bench.md's blocks from
    /// the latest result files in --out (after removing a run's files).
    #[arg(long, conflicts_with = "no_readme")]
    render: bool,
}

impl Args {
    fn scenarios(&self) -> Vec<Scenario> {
        let mut s = if !self.scenarios.is_empty() {
            self.scenarios.clone()
        } else if self.quick {
            Scenario::QUICK.to_vec()
        } else {
            Scenario::ALL.to_vec()
        };
        s.sort();
        s.dedup();
        s
    }

    fn variants(&self) -> Vec<Variant> {
        let mut v = if self.variants.is_empty() { Variant::ALL.to_vec() } else { self.variants.clone() };
        if self.before.is_some() {
            if v.contains(&Variant::SluiceGlobal) {
                v.push(Variant::SluiceGlobalBefore);
            }
            v.extend([Variant::SluiceBefore, Variant::SluiceLocal]);
        }
        v.sort();
        v.dedup();
        v
    }

    /// The command line, without machine-specific paths.
    fn command(&self) -> String {
        let mut c = vec!["sluice-bench".to_string()];
        if self.quick {
            c.push("--quick".into());
        }
        if !self.scenarios.is_empty() {
            c.extend(self.scenarios().iter().map(|s| format!("--scenario {}", s.name())));
        }
        if let Some(r) = self.rounds {
            c.push(format!("--rounds {r}"));
        }
        if !self.variants.is_empty() {
            c.extend(self.variants().iter().map(|v| format!("--variant {}", v.name())));
        }
        if let Some(b) = &self.before {
            c.push(format!("--before {}", b.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned())));
        }
        if let Some(p) = &self.policy {
            c.push(format!("--policy {}", p.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned())));
        }
        c.join(" ")
    }
}

fn main() -> ExitCode {
    // Envoy, Redis and the services lead process groups of their own: a
    // bench stopped by a signal stops them first.
    if let Err(e) = wasm_test_harness::stop_children_on_signal() {
        eprintln!("sluice-bench: {e:#}; a signal will leave the processes it started running");
    }
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("sluice-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs every scenario asked for; `false` if one failed.
fn run(args: &Args) -> anyhow::Result<bool> {
    if args.render {
        rewrite_docs(&args.out)?;
        return Ok(true);
    }
    if args.rounds == Some(0) || args.clients == 0 || args.rate.is_nan() || args.rate <= 0.0 || args.connections == 0 {
        anyhow::bail!("--rounds, --clients, --rate and --connections must be positive");
    }
    let pinning = Pinning::detect();
    let machine = Machine::detect(pinning.as_ref());
    let (date, _) = report::utc_now();
    eprintln!(
        "sluice-bench: {} CPUs ({}), Envoy {}, commit {}; {}",
        machine.nproc, machine.cpu_model, machine.envoy_version, machine.git_commit, machine.pinning
    );
    let mut ok = true;
    for scenario in args.scenarios() {
        eprintln!("== {} ==", scenario.title());
        let (_, started_at) = report::utc_now();
        let files = Files { dir: args.out.clone(), date: date.clone(), scenario };
        std::fs::create_dir_all(&files.dir).with_context(|| format!("creating {}", files.dir.display()))?;
        match run_scenario(args, scenario, &files, &machine, pinning.as_ref()) {
            Ok(done) => {
                let (_, finished_at) = report::utc_now();
                let envelope = Envelope {
                    scenario: scenario.name().into(),
                    title: scenario.title().into(),
                    date: date.clone(),
                    started_at,
                    finished_at,
                    quick: args.quick,
                    command: args.command(),
                    machine: machine.clone(),
                    targets: done.targets,
                    settings: done.settings,
                    result: done.result,
                };
                files.write(&envelope, &done.markdown)?;
                println!("{}", done.markdown);
                for t in &envelope.targets {
                    println!("- {}: {} (target {}): {}", t.name, t.measured, t.expected, t.verdict().replace("**", ""));
                }
                println!();
            }
            Err(e) => {
                ok = false;
                eprintln!("sluice-bench: {} failed: {e:#}", scenario.name());
            }
        }
        if let Some(p) = &pinning {
            p.release_bench()?;
        }
    }
    if !args.no_readme {
        rewrite_docs(&args.out)?;
    }
    Ok(ok)
}

/// What a scenario hands back for its files.
struct Done {
    settings: serde_json::Value,
    result: serde_json::Value,
    targets: Vec<Target>,
    markdown: String,
}

fn run_scenario(args: &Args, scenario: Scenario, files: &Files, machine: &Machine, pinning: Option<&Pinning>) -> anyhow::Result<Done> {
    let quick = args.quick;
    let secs = Duration::from_secs;
    let about = format!(
        "{}, `{}`, commit {}; {} × {}, Envoy {}.",
        files.date,
        args.command(),
        machine.git_commit,
        machine.nproc,
        machine.cpu_model,
        machine.envoy_version.split('/').nth(1).unwrap_or(&machine.envoy_version)
    );
    match scenario {
        Scenario::Overhead | Scenario::Denial => {
            if let Some(p) = pinning {
                p.bench_to_load_cpu()?;
            }
            let wrk = Wrk::find(args.connections)?;
            let variants = args.variants();
            let setup = Setup::new(&variants, pinning.cloned(), args.policy.as_deref(), args.before.as_deref())?;
            let hot = scenario == Scenario::Denial;
            let mix = Mix { keys: args.clients, offset: 0, hot };
            let settings = compare::Settings {
                rounds: args.rounds.unwrap_or(if quick { 3 } else { 5 }),
                descriptions: variants.iter().map(|v| (v.name(), v.describe())).collect(),
                variants,
                mix,
                mix_description: mix.describe(),
                warmup: secs(if quick { 1 } else { 2 }),
                saturation: secs(if quick { 2 } else { 10 }),
                wrk_connections: args.connections,
                fixed_rate: args.rate,
                fixed_duration: secs(if quick { 2 } else { 10 }),
                fixed_connections: 4,
                envoy_workers: 1,
            };
            let comparison = compare::run(&setup, &wrk, &settings)?;
            let header = format!(
                "{about} One Envoy worker; {}. Load: {}. Saturation: wrk -t1 -c{}, {} s per run; latency: {} req/s for {} s \
                 (harness load generator, {} connections). {} rounds, variants interleaved.",
                machine.pinning,
                settings.mix_description,
                settings.wrk_connections,
                settings.saturation.as_secs(),
                stats::number(settings.fixed_rate, 0),
                settings.fixed_duration.as_secs(),
                settings.fixed_connections,
                settings.rounds
            );
            let markdown = compare::render(&comparison, &settings, files, scenario.title(), &header)?;
            let tag = scenario.name();
            let targets = compare::targets(&comparison, &settings, scenario == Scenario::Overhead, tag);
            Ok(Done { settings: serde_json::to_value(&settings)?, result: serde_json::to_value(&comparison)?, targets, markdown })
        }
        Scenario::Jsonrpc => {
            if let Some(p) = pinning {
                p.bench_to_load_cpu()?;
            }
            let wrk = Wrk::find(args.connections)?;
            let mut setup = Setup::new(&[Variant::SluiceLocal], pinning.cloned(), None, None)?;
            setup.local_policy = variant::mcp_policy()?;
            let settings = jsonrpc::Settings::new(args.rounds.unwrap_or(5), args.clients, args.connections, quick);
            let outcome = jsonrpc::run(&setup, &wrk, &settings)?;
            let header = format!(
                "{about} One Envoy worker; {}. Sluice with policies/mcp.json (every rule local, trusted_hops 1) and a REST \
                 twin of each of its rules a tools/call meets (same key and limit, by the path). Two loads of \
                 {} clients (own IP via X-Forwarded-For and own tenant each), bodies of {} bytes, content-type \
                 application/json: JSON-RPC (POST /mcp, tools/call, read and parsed for the JSON-RPC rules) and REST (POST \
                 /api/v1/items, body not read, the same rules by their twins), each at saturation (wrk -t1 -c{}) for {} s after {} s of warm-up, \
                 {} rounds on the same Envoy, the order alternating.",
                machine.pinning,
                stats::number(settings.clients as f64, 0),
                settings.body_bytes,
                settings.connections,
                settings.duration_s,
                settings.warmup_s,
                settings.rounds
            );
            Ok(Done {
                settings: serde_json::to_value(&settings)?,
                result: serde_json::to_value(&outcome)?,
                targets: jsonrpc::targets(&outcome),
                markdown: jsonrpc::render(&outcome, &settings, &header),
            })
        }
        Scenario::Accuracy => {
            let windows = if quick { 5 } else { 10 };
            let results = accuracy::run(windows)?;
            let peers = accuracy_peers::run(windows)?;
            let header = format!(
                "{about} 3 Envoy instances × 2 workers, one counter service, one Redis; each instance offered the limit \
                 (3× overload), {windows} whole one-second windows after one of warm-up; false denials from a separate \
                 run at half the limit. The two-rule rows offer 10× and 50× tools-invoke's limit, a third at each \
                 instance, each window measured on its own. The rows after them (two rules at 100/s, skew, fairness, \
                 bursts, a small limit that queues) are offered without a pause from a window of warm-up on and count \
                 each answer in the window it arrived in (docs/bench.md). The peers run the one-rule rows only."
            );
            let peer_names: Vec<&str> = Variant::PEERS.iter().map(|v| v.name()).collect();
            Ok(Done {
                settings: serde_json::json!({"instances": 3, "workers": 2, "windows": windows, "peers": peer_names}),
                result: serde_json::json!({"sluice": results, "peers": peers}),
                targets: accuracy::targets(&results),
                markdown: format!("{}\n{}", accuracy::render(&results, &header), accuracy_peers::render(&peers)),
            })
        }
        Scenario::Cardinality => {
            if let Some(p) = pinning {
                p.bench_to_load_cpu()?;
            }
            let wrk = Wrk::find(args.connections)?;
            let setup = Setup::new(&[Variant::SluiceLocal], pinning.cloned(), args.policy.as_deref(), None)?;
            let levels: Vec<u64> = if quick { vec![10_000, 100_000] } else { vec![10_000, 100_000, 1_000_000] };
            let results = cardinality::run(&setup, &wrk, &levels)?;
            let header = format!(
                "{about} sluice-local (65536 slots), one Envoy worker; {}. Every request from a new client (own IP via \
                 X-Forwarded-For, own tenant), two passes of N new clients each (wrk -t1 -c{}).",
                machine.pinning, args.connections
            );
            Ok(Done {
                settings: serde_json::json!({"levels": levels, "wrk_connections": args.connections}),
                result: serde_json::to_value(&results)?,
                targets: cardinality::targets(&results),
                markdown: cardinality::render(&results, &header),
            })
        }
        Scenario::Outage => {
            let mut setup = Setup::new(&[Variant::SluiceGlobal], None, None, None)?;
            let mix = Mix { keys: args.clients, offset: 0, hot: false };
            let phase = secs(if quick { 3 } else { 5 });
            let result = outage::run(&mut setup, mix, args.rate, phase)?;
            let header = format!(
                "{about} sluice-global (default policy, failing open), one Envoy with 2 workers, counter service and Redis; \
                 {} req/s of {} (harness load generator, 8 connections); Redis killed, then restarted.",
                stats::number(args.rate, 0),
                mix.describe()
            );
            Ok(Done {
                settings: serde_json::json!({"rate": args.rate, "phase_s": phase.as_secs(), "mix": mix}),
                result: serde_json::to_value(&result)?,
                targets: Vec::new(),
                markdown: outage::render(&result, &header),
            })
        }
    }
}

/// Rebuilds the generated blocks of README.md and docs/bench.md from the
/// latest result files, when `out` lies inside the repository.
fn rewrite_docs(out: &Path) -> anyhow::Result<()> {
    let root = wasm_test_harness::repo_root();
    let out = std::path::absolute(out).context("resolving --out")?;
    let Ok(relative) = out.strip_prefix(&root) else {
        eprintln!("sluice-bench: {} is outside the repository; README.md left alone", out.display());
        return Ok(());
    };
    let results = relative.to_string_lossy().replace('\\', "/");
    report::rewrite(&root.join("README.md"), report::README_START, report::README_END, &report::readme_block(&out, &results))?;
    let docs_results = format!("../{results}");
    report::rewrite(&root.join("docs/bench.md"), report::TARGETS_START, report::TARGETS_END, &report::targets_block(&out, &docs_results))?;
    Ok(())
}
