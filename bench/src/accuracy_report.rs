//! The targets and the markdown table of scenario `accuracy` (see
//! [`crate::accuracy`]).

use std::collections::BTreeMap;

use crate::accuracy::{Kind, RuleResult};
use crate::report::{Target, SETUP};

/// The targets: limits of at least 100/s admit within [99%, 100.1%]
/// of what they allow at 3× with at most 0.01 counter calls per admitted
/// request; every other row within [97%, 100.5%]; where at least 2× the
/// limit is offered and windows are counted one by one (floods, two rules at
/// 100/s, skew, the windows with load of the bursts, the small limit), no
/// window under half the limit (not fairness: 1.5× there); at most 0.01
/// calls per admitted request for two rules binding at 100/s too; no rule
/// denies at half its limit (the runs at half the limit: one-rule rows and
/// two rules at 100/s).
pub fn targets(results: &[RuleResult]) -> Vec<Target> {
    let mut out = Vec::new();
    let calls = |r: &RuleResult| {
        Target::new(
            &match r.kind {
                Kind::TwoRules => format!("{}: counter calls per admitted request (two rules at 100/s)", r.rule),
                _ => format!("{} {}/s: counter calls per admitted request", r.rule, r.limit_per_s),
            },
            "≤ 0.01",
            format!("{:.4}", r.calls_per_admitted),
            Some(r.calls_per_admitted <= 0.01),
        )
    };
    for r in results {
        if r.kind == Kind::OneRule && r.limit_per_s >= 100 {
            out.push(Target::new(
                &format!("{} {}/s: admitted ÷ allowed (3 instances, 3× overload)", r.rule, r.limit_per_s),
                "99% – 100.1%",
                format!("{:.2}%", 100.0 * r.admitted_over_allowed),
                Some((0.99..=1.001).contains(&r.admitted_over_allowed)),
            ));
            out.push(calls(r));
            continue;
        }
        let name = match r.kind {
            Kind::OneRule => format!("{} {}/s: admitted ÷ allowed (3 instances, 3× overload)", r.rule, r.limit_per_s),
            Kind::Fairness => format!("{}: admitted ÷ allowed (all tenants)", r.rule),
            Kind::Bursts => format!("{}: admitted ÷ allowed (windows with load)", r.rule),
            _ => format!("{}: admitted ÷ allowed", r.rule),
        };
        out.push(Target::new(
            &name,
            "97% – 100.5%",
            format!("{:.2}%", 100.0 * r.admitted_over_allowed),
            Some((0.97..=1.005).contains(&r.admitted_over_allowed)),
        ));
        if matches!(r.kind, Kind::Flood | Kind::TwoRules | Kind::Skew | Kind::Bursts | Kind::Queued) {
            let worst = r.worst().unwrap_or(0);
            out.push(Target::new(
                &format!("{}: worst window", r.rule),
                &format!("≥ {}", r.limit_per_s.div_ceil(2)),
                worst.to_string(),
                Some(!r.per_window.is_empty() && worst * 2 >= r.limit_per_s),
            ));
        }
        if r.kind == Kind::TwoRules {
            out.push(calls(r));
        }
    }
    let halves: Vec<&RuleResult> = results.iter().filter(|r| matches!(r.kind, Kind::OneRule | Kind::TwoRules)).collect();
    let denials: u64 = halves.iter().map(|r| r.false_denials).sum();
    out.push(Target::new(
        "no false denials at half the limit (every rule)",
        "0",
        denials.to_string(),
        Some(denials == 0 && halves.iter().all(|r| r.under_limit_offered > 0)),
    ));
    out
}

/// The markdown table.
pub fn render(results: &[RuleResult], header: &str) -> String {
    let mut md = vec!["### Accuracy of global limits".to_string(), String::new(), format!("{SETUP}{header}"), String::new()];
    md.push("| rule | limit | windows | offered | admitted ÷ allowed | worst window | counter calls per admitted | false denials at ½ limit |".into());
    md.push("|---|---|---|---|---|---|---|---|".into());
    for r in results {
        let (limit, worst) = match &r.tenants {
            Some(t) => (
                format!("{}/s each × {}", r.limit_per_s / t.count.max(1), t.count),
                format!("{} of {} (one tenant)", t.worst_window, r.limit_per_s / t.count.max(1)),
            ),
            None => (format!("{}/s", r.limit_per_s), r.per_window.iter().min().map_or("—".to_string(), |w| format!("{w} of {}", r.limit_per_s))),
        };
        let windows = if r.kind == Kind::Bursts { format!("{} with load", r.windows) } else { r.windows.to_string() };
        let tenants = r.tenants.as_ref().map_or(String::new(), |t| format!("; tenants: lowest {:.2}%, median {:.2}%", 100.0 * t.lowest, 100.0 * t.median));
        let denials = if r.under_limit_offered > 0 {
            format!("{} of {}{}", r.false_denials, r.under_limit_offered, statuses(&r.under_limit_statuses))
        } else if r.kind == Kind::Flood {
            "— (the tools-invoke row)".to_string()
        } else {
            "—".to_string()
        };
        md.push(format!(
            "| {} | {limit} | {windows} | {}/s: {}{}{} | {} ÷ {} = {:.2}%{tenants} | {worst} | {} ÷ {} = {:.4} | {denials} |",
            r.rule,
            crate::stats::number(r.offered_per_s, 0),
            r.offered,
            statuses(&r.statuses),
            r.late_refusals.map_or(String::new(), |n| format!(", {n} refused after ≥ 1 s held")),
            r.admitted,
            r.allowed,
            100.0 * r.admitted_over_allowed,
            r.counter_calls,
            r.admitted,
            r.calls_per_admitted,
        ));
    }
    md.join("\n") + "\n"
}

/// ` (429: 1)`: the statuses other than 200, if any.
pub fn statuses(all: &BTreeMap<u16, u64>) -> String {
    let other: Vec<String> = all.iter().filter(|(s, _)| **s != 200).map(|(s, n)| format!("{s}: {n}")).collect();
    if other.is_empty() {
        String::new()
    } else {
        format!(" ({})", other.join(", "))
    }
}
