//! Scenario `cardinality`: Sluice (default policy, rules local, 65536 slots)
//! under loads where every request comes from a new client address and a
//! new tenant, for 10^4, 10^5 and 10^6 distinct clients. Each level runs on
//! a fresh Envoy (one worker, pinned like the overhead runs) in two passes
//! of N new clients each; Envoy's resident memory is read before and after
//! each pass. Once the slot table is full (2 keys per client, so from N ≥
//! slots / 2 on), the second pass must not grow memory: that is the bound.

use std::time::Duration;

use serde::Serialize;

use crate::mix::Mix;
use crate::report::{Target, SETUP};
use crate::stats::number;
use crate::variant::{Setup, Variant};
use crate::wrk::{Wrk, WrkResult};

const MIB: f64 = 1024.0 * 1024.0;
/// Growth over a pass that still counts as flat.
const FLAT_MIB: f64 = 16.0;
/// Requests per second assumed when sizing a pass to cover every client.
const ASSUMED_RPS: u64 = 10_000;

/// One level of distinct clients.
#[derive(Debug, Clone, Serialize)]
pub struct Level {
    pub clients: u64,
    /// Keys (client IPs and tenants) per pass, against the policy's slots.
    pub keys_per_pass: u64,
    pub slots: u32,
    pub passes: Vec<Pass>,
    pub rss_start_bytes: u64,
}

/// One pass over `clients` new clients.
#[derive(Debug, Clone, Serialize)]
pub struct Pass {
    pub offset: u64,
    pub rps: f64,
    /// Share of the pass's clients that sent at least one request.
    pub coverage: f64,
    pub rss_after_bytes: u64,
    pub wrk: WrkResult,
}

impl Level {
    /// Memory growth over the second pass, in MiB.
    pub fn second_pass_growth_mib(&self) -> Option<f64> {
        let [a, b] = self.passes.as_slice() else { return None };
        Some((b.rss_after_bytes as f64 - a.rss_after_bytes as f64) / MIB)
    }

    fn past_budget(&self) -> bool {
        self.keys_per_pass >= u64::from(self.slots)
    }
}

/// Runs every level.
pub fn run(setup: &Setup, wrk: &Wrk, levels: &[u64]) -> anyhow::Result<Vec<Level>> {
    let slots = sluice_core::policy::Policy::from_json(&setup.local_policy).map_or(0, |p| p.slots);
    let mut out = Vec::new();
    for &clients in levels {
        let envoy = setup.start(Variant::SluiceLocal, 1, "warn")?;
        let port = envoy.port();
        // Warm the VM with a few clients far from the measured ones.
        wrk.run(port, &Mix { keys: 100, offset: 15_000_000, hot: false }, Duration::from_secs(1))?;
        let rss_start_bytes = envoy.rss_bytes()?;
        let secs = (clients * 13 / 10).div_ceil(ASSUMED_RPS).max(4);
        let mut passes = Vec::new();
        for pass in 0..2 {
            let offset = pass * clients;
            let result = wrk.run(port, &Mix { keys: clients, offset, hot: false }, Duration::from_secs(secs))?;
            let rss_after_bytes = envoy.rss_bytes()?;
            eprintln!(
                "  {} clients, pass {}: {} req/s, Envoy RSS {:.1} MiB (start {:.1} MiB)",
                number(clients as f64, 0),
                pass + 1,
                number(result.rps(), 0),
                rss_after_bytes as f64 / MIB,
                rss_start_bytes as f64 / MIB
            );
            passes.push(Pass { offset, rps: result.rps(), coverage: (result.requests as f64 / clients as f64).min(1.0), rss_after_bytes, wrk: result });
        }
        out.push(Level { clients, keys_per_pass: 2 * clients, slots, passes, rss_start_bytes });
    }
    Ok(out)
}

/// Memory stays flat past the slot budget (judged on levels past it).
pub fn targets(levels: &[Level]) -> Vec<Target> {
    let past: Vec<&Level> = levels.iter().filter(|l| l.past_budget()).collect();
    let growths: Vec<String> =
        past.iter().filter_map(|l| Some(format!("{:+.1} MiB at {}", l.second_pass_growth_mib()?, number(l.clients as f64, 0)))).collect();
    let flat = past.iter().all(|l| l.second_pass_growth_mib().is_some_and(|g| g <= FLAT_MIB));
    vec![Target::new(
        "Envoy memory flat past the slot budget (growth over a pass of N new clients)",
        &format!("≤ {FLAT_MIB:.0} MiB"),
        if growths.is_empty() { "–".into() } else { growths.join(", ") },
        (!past.is_empty()).then_some(flat),
    )]
}

/// The markdown table.
pub fn render(levels: &[Level], header: &str) -> String {
    let mut md = vec!["### Key cardinality".to_string(), String::new(), format!("{SETUP}{header}"), String::new()];
    md.push("| distinct clients per pass | keys ÷ slots | req/s pass 1 / 2 | Envoy RSS start → pass 1 → pass 2 | growth in pass 2 |".into());
    md.push("|---|---|---|---|---|".into());
    for l in levels {
        // A pass too short to reach every client says so.
        let rps: Vec<String> = l
            .passes
            .iter()
            .map(|p| {
                let covered = if p.coverage < 1.0 { format!(" ({:.0}% of clients)", 100.0 * p.coverage) } else { String::new() };
                format!("{}{covered}", number(p.rps, 0))
            })
            .collect();
        let rss: Vec<String> =
            std::iter::once(l.rss_start_bytes).chain(l.passes.iter().map(|p| p.rss_after_bytes)).map(|b| format!("{:.1}", b as f64 / MIB)).collect();
        md.push(format!(
            "| {} | {:.2} | {} | {} MiB | {} |",
            number(l.clients as f64, 0),
            l.keys_per_pass as f64 / f64::from(l.slots.max(1)),
            rps.join(" / "),
            rss.join(" → "),
            l.second_pass_growth_mib().map_or_else(|| "–".into(), |g| format!("{g:+.1} MiB"))
        ));
    }
    md.join("\n") + "\n"
}
