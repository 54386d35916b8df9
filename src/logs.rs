//! The rate-limit log lines ("rate limit approaching" and "rate limit
//! exceeded", their fields shown in docs/observability.md), and the log
//! budget they and every warning a client or an upstream can repeat
//! (`warn_within_budget!`) spend, so that their volume stays bounded.
//!
//! A key crossing 95 % of its limit is logged once as a warning ("rate
//! limit approaching"), and each rejection episode of a key (from its first
//! refusal to its next admission) once as an error ("rate limit exceeded"),
//! whatever the request rate: the episode is a flag in the key's own
//! bucket (see `sluice_core::store::Note`). An attacker inventing a key per
//! request still makes one episode per key, so each worker also spends a
//! log budget (`PER_SECOND` lines a second, bursts of `BURST`); lines past
//! it are counted (`sluice_log_lines_suppressed_total`) and summed up in
//! one line per second.

use std::cell::Cell;

use proxy_wasm::hostcalls;
use sluice_core::limiter::{Decision, Note};
use sluice_core::policy::Policy;
use sluice_core::response::rfc3339;

const PER_SECOND: u64 = 20;
const BURST: u64 = 50;
const NS: u64 = 1_000_000_000;

thread_local! {
    /// The budget's bucket: when it is full again (GCRA), and the lines
    /// suppressed since the last summary, and when that was.
    static TAT: Cell<u64> = const { Cell::new(0) };
    static SUPPRESSED: Cell<u64> = const { Cell::new(0) };
    static SUMMARY_AT: Cell<u64> = const { Cell::new(0) };
}

/// Spends one line of the budget; false when over it.
pub fn within_budget(now: u64) -> bool {
    budget(now)
}

/// `log::warn!` within the worker's log budget (lines past it are counted
/// and summed up): every warning that a client or an upstream can cause
/// again and again goes through it.
macro_rules! warn_within_budget {
    ($now:expr, $($arg:tt)+) => {
        if $crate::logs::within_budget($now) {
            log::warn!($($arg)+);
        }
    };
}
pub(crate) use warn_within_budget;

/// Spends one line of the budget; false when over it.
fn budget(now: u64) -> bool {
    let interval = NS / PER_SECOND;
    let tat = TAT.with(Cell::get).max(now);
    // `tat` is at least `now`; the constants are small.
    if tat.saturating_add(interval).saturating_sub(now) > BURST.saturating_mul(interval) {
        SUPPRESSED.with(|s| s.set(s.get().saturating_add(1)));
        crate::metrics::log_suppressed(1);
        return false;
    }
    TAT.with(|t| t.set(tat.saturating_add(interval)));
    let suppressed = SUPPRESSED.with(Cell::get);
    if suppressed > 0 && now.saturating_sub(SUMMARY_AT.with(Cell::get)) >= NS {
        log::warn!("{suppressed} rate-limit log lines suppressed (more than {PER_SECOND} a second)");
        SUPPRESSED.with(|s| s.set(0));
        SUMMARY_AT.with(|s| s.set(now));
    }
    true
}

fn json(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Logs what the decision's notes call for (the effective context is the
/// request's stream).
pub fn notes(policy: &Policy, d: &Decision, now: u64) {
    for (i, note) in &d.books.notes {
        let Some(rule) = policy.rules.get(*i) else { continue };
        let tenant = json(d.ruling.tenant.as_deref().unwrap_or("-"));
        let outcome = d.ruling.applied.iter().find(|a| a.rule == *i).map(|a| a.outcome);
        match note {
            Note::Approaching => {
                if !budget(now) {
                    continue;
                }
                let limit = d.ruling.applied.iter().find(|a| a.rule == *i).map_or(rule.limit.requests, |a| a.limit);
                let remaining = outcome.map_or(0, |o| o.remaining);
                // A calendar budget resets at its boundary, as its 429 says.
                let reset_at = match rule.limit.calendar {
                    Some(_) => rule.limit.window_end(rule.limit.window_at(now)).div_ceil(NS),
                    None => (now / NS).saturating_add(outcome.map_or(0, |o| o.reset_ns.div_ceil(NS))),
                };
                log::warn!(
                    "rate limit approaching {{\"rule\":{},\"tier\":{},\"tenant\":{tenant},\"used\":{},\"limit\":{limit},\"window\":\"{}\",\"resetAt\":\"{}\"}}",
                    json(&rule.name),
                    json(&rule.tier),
                    limit.saturating_sub(remaining),
                    rule.limit.window_text(),
                    rfc3339(reset_at)
                );
            }
            Note::Refusing => {
                if !budget(now) {
                    continue;
                }
                let header = |name| {
                    let value = hostcalls::get_map_value_bytes(proxy_wasm::types::MapType::HttpRequestHeaders, name);
                    String::from_utf8_lossy(&value.ok().flatten().unwrap_or_default()).into_owned()
                };
                let (method, path) = (header(":method"), header(":path"));
                let path = path.split('?').next().unwrap_or("");
                let wait = outcome.map_or(0, |o| o.retry_after_ns.div_ceil(NS));
                let endpoint = json(&format!("{method} {path}"));
                if rule.shadow {
                    log::warn!(
                        "rate limit exceeded (shadow: not enforced) {{\"rule\":{},\"tier\":{},\"tenant\":{tenant},\"endpoint\":{endpoint},\"timestamp\":\"{}\",\"remainingWait\":{wait}}}",
                        json(&rule.name),
                        json(&rule.tier),
                        rfc3339(now / NS)
                    );
                } else {
                    log::error!(
                        "rate limit exceeded {{\"rule\":{},\"tier\":{},\"tenant\":{tenant},\"endpoint\":{endpoint},\"timestamp\":\"{}\",\"remainingWait\":{wait}}}",
                        json(&rule.name),
                        json(&rule.tier),
                        rfc3339(now / NS)
                    );
                }
            }
            Note::Reset => {}
        }
    }
}
