//! `sluicectl simulate`: replays recorded traffic (the ingress access log
//! `envoy.yaml` writes, one JSON object per line) through a policy, with
//! the filter's own decision code (`sluice_core::simulate`), and reports
//! per rule what it admitted, queued and denied.

use std::io::BufRead;
use std::process::ExitCode;

use sluice_core::simulate::{format_time, Record, Replay, Report};

/// Bad lines reported one by one; the rest are only counted.
const BAD_LINES_SHOWN: usize = 5;

#[derive(clap::Args)]
pub struct Args {
    /// The policy JSON file.
    #[arg(long)]
    policy: String,
    /// The log: one JSON object per line (`-` for standard input).
    #[arg(long)]
    log: String,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

/// Records read from a log, and the lines that could not be read.
struct Read {
    records: Vec<Record>,
    /// Line numbers (from 1) and reasons, for the first few.
    bad: Vec<(usize, String)>,
    bad_count: usize,
}

fn read_log(input: &mut dyn BufRead) -> Result<Read, String> {
    let mut read = Read { records: Vec::new(), bad: Vec::new(), bad_count: 0 };
    let mut buf = Vec::new();
    let mut number = 0;
    loop {
        buf.clear();
        let n = input.read_until(b'\n', &mut buf).map_err(|e| format!("cannot read the log: {e}"))?;
        if n == 0 {
            break;
        }
        number += 1;
        let result = match std::str::from_utf8(&buf) {
            Err(_) => Err("not UTF-8 text".to_string()),
            Ok(line) if line.trim().is_empty() => continue,
            Ok(line) => Record::parse(line.trim()),
        };
        match result {
            Ok(r) => read.records.push(r),
            Err(reason) => {
                read.bad_count += 1;
                if read.bad.len() < BAD_LINES_SHOWN {
                    read.bad.push((number, reason));
                }
            }
        }
    }
    Ok(read)
}

pub fn run(args: Args) -> ExitCode {
    let text = match std::fs::read_to_string(&args.policy) {
        Ok(t) => t,
        Err(e) => return crate::fail(&format!("cannot read {}: {e}", args.policy)),
    };
    let policy = match crate::parse_policy(&args.policy, &text, ExitCode::from(2)) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let read = if args.log == "-" {
        read_log(&mut std::io::stdin().lock())
    } else {
        match std::fs::File::open(&args.log) {
            Ok(f) => read_log(&mut std::io::BufReader::new(f)),
            Err(e) => Err(format!("cannot read {}: {e}", args.log)),
        }
    };
    let mut read = match read {
        Ok(r) => r,
        Err(e) => return crate::fail(&e),
    };
    if read.bad_count > 0 {
        for (line, reason) in &read.bad {
            eprintln!("{}:{line}: skipped: {reason}", args.log);
        }
        let more = read.bad_count - read.bad.len();
        let tail = if more > 0 { format!(" ({more} more not shown)") } else { String::new() };
        eprintln!("{}: {} bad line(s) skipped{tail}", args.log, read.bad_count);
    }
    // Envoy writes a line when a request ends; replay in order of arrival.
    read.records.sort_by_key(|r| r.time_ns);
    let mut replay = Replay::new(&policy);
    for r in &read.records {
        replay.feed(r);
    }
    let report = replay.finish();
    if args.json {
        match json(&report, &args, read.bad_count) {
            Ok(text) => println!("{text}"),
            Err(e) => return crate::fail(&format!("cannot write JSON: {e}")),
        }
    } else {
        print!("{}", table(&report, &args, read.bad_count));
    }
    if read.records.is_empty() && read.bad_count > 0 {
        eprintln!("{}: no line could be replayed", args.log);
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn json(report: &Report, args: &Args, bad: usize) -> Result<String, serde_json::Error> {
    let mut value = serde_json::to_value(report)?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert("policy".into(), args.policy.clone().into());
        obj.insert("log".into(), args.log.clone().into());
        obj.insert("skipped_lines".into(), bad.into());
        if report.requests > 0 {
            obj.insert("first".into(), format_time(report.first_ns).into());
            obj.insert("last".into(), format_time(report.last_ns).into());
        }
    }
    serde_json::to_string_pretty(&value)
}

fn table(report: &Report, args: &Args, bad: usize) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    if report.requests == 0 {
        line(format!("{}: no requests to replay", args.log));
    } else {
        let span = report.last_ns - report.first_ns;
        line(format!(
            "{} requests from {} to {} ({}.{:03} s), policy {}",
            report.requests,
            format_time(report.first_ns),
            format_time(report.last_ns),
            span / 1_000_000_000,
            span % 1_000_000_000 / 1_000_000,
            args.policy
        ));
    }
    if bad > 0 {
        line(format!("{bad} bad line(s) skipped"));
    }
    line(String::new());
    let width = report.rules.iter().map(|r| r.rule.len() + if r.shadow { 9 } else { 0 }).max().unwrap_or(0).max(16);
    line(format!("{:<width$}  {:>6}  {:>8}  {:>8}  {:>7}  {:>8}  {:>13}", "rule", "scope", "applied", "admitted", "queued", "denied", "shadow-denied"));
    for r in &report.rules {
        let name = if r.shadow { format!("{} (shadow)", r.rule) } else { r.rule.clone() };
        line(format!("{name:<width$}  {:>6}  {:>8}  {:>8}  {:>7}  {:>8}  {:>13}", r.scope, r.applied, r.admitted, r.queued, r.denied, r.shadow_denied));
    }
    line(format!(
        "{:<width$}  {:>6}  {:>8}  {:>8}  {:>7}  {:>8}  {:>13}",
        "total (requests)", "", report.requests, report.admitted, report.queued, report.denied, report.shadow_denied
    ));
    let denying: Vec<_> = report.rules.iter().filter(|r| !r.top_denied.is_empty()).collect();
    if !denying.is_empty() {
        line(String::new());
        line("Keys denied most (shadow rules: would have denied):".into());
        for r in denying {
            line(format!("  {}", r.rule));
            for k in &r.top_denied {
                let key = if k.key.is_empty() { "(the rule's one bucket)" } else { &k.key };
                line(format!("    {:>8}  {key}", k.count));
            }
        }
    }
    line(String::new());
    line("Queued requests are counted again as admitted or denied. One instance stands for the fleet;".into());
    line("upstream answers are not replayed (no upstream 429 learning, adaptive limits as configured).".into());
    out
}
