//! `sluicectl explain`: which rules of a policy apply to one request, the
//! key each would count it under, and its limit; for a rule that does not
//! apply, why not. The per-rule answers come from the core
//! (`sluice_core::limiter::explain`), which uses the decision's own
//! matching and key code.

use std::process::ExitCode;

use sluice_core::limiter::{explain, resolve, Explained};
use sluice_core::policy::{Algorithm, CostSource, FailureMode, Policy, Rule, Scope};
use sluice_core::request::MemoryRequest;

#[derive(clap::Args)]
pub struct Args {
    /// The policy JSON file (`-` for standard input).
    #[arg(long)]
    policy: String,
    /// The request: `<method> <path> [<header>: <value> ...]`, e.g.
    /// 'POST /api/v1/tools/invoke x-tenant-id: acme x-integration: notion'.
    /// A header's value runs to the next word ending in ':'; `host:` sets
    /// the :authority.
    #[arg(long)]
    request: String,
    /// The TCP peer's address (Envoy's `source.address`).
    #[arg(long, default_value = "127.0.0.1")]
    client_ip: String,
    /// The request body, for policies that read it (`read_body`).
    #[arg(long)]
    body: Option<String>,
}

/// A request as written on the command line.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed {
    pub method: String,
    pub path: String,
    /// Lower-case names, in the order given.
    pub headers: Vec<(String, String)>,
}

/// Parses `<method> <path> [<name>: <value> ...]`.
pub fn parse_request(text: &str) -> Result<Parsed, String> {
    let mut words = text.split_whitespace();
    let method = words.next().ok_or("it is empty; expected '<method> <path> [<header>: <value> ...]'")?;
    if !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(format!("{method:?} is not an HTTP method (the request starts with the method, then the path)"));
    }
    let path = words.next().ok_or_else(|| format!("no path after {method:?}; expected '<method> <path> [<header>: <value> ...]'"))?;
    if !path.starts_with('/') {
        return Err(format!("the path {path:?} does not start with '/'"));
    }
    let mut headers: Vec<(String, String)> = Vec::new();
    for word in words {
        if let Some(name) = word.strip_suffix(':') {
            let bare = name.strip_prefix(':').unwrap_or(name);
            if bare.is_empty() || !bare.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.!#$%&'*+^`|~".contains(&b)) {
                return Err(format!("{word:?} is not a header name"));
            }
            headers.push((name.to_ascii_lowercase(), String::new()));
            continue;
        }
        let Some((_, value)) = headers.last_mut() else {
            return Err(format!("{word:?} comes before any header name; write headers as 'name: value'"));
        };
        if !value.is_empty() {
            value.push(' ');
        }
        value.push_str(word);
    }
    Ok(Parsed { method: method.to_ascii_uppercase(), path: path.to_string(), headers })
}

pub fn run(args: Args) -> ExitCode {
    let text = match crate::read(&args.policy) {
        Ok(t) => t,
        Err(e) => return crate::fail(&e),
    };
    let policy = match crate::parse_policy(&args.policy, &text, ExitCode::from(2)) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let parsed = match parse_request(&args.request) {
        Ok(p) => p,
        Err(e) => return crate::fail(&format!("bad --request: {e}")),
    };
    if sluice_core::client_ip::peer_ip(&args.client_ip).is_none() {
        return crate::fail(&format!("bad --client-ip: {:?} is not an IP address", args.client_ip));
    }
    let mut req = MemoryRequest::new(&parsed.method, &parsed.path).from_address(&args.client_ip);
    req.authority = String::new();
    for (name, value) in &parsed.headers {
        match name.as_str() {
            "host" | ":authority" => req.authority = value.clone(),
            _ => req = req.header(name, value),
        }
    }
    req.body = args.body.as_ref().map(|b| b.clone().into_bytes());
    print!("{}", report(&policy, &parsed, &args, &req));
    ExitCode::SUCCESS
}

/// The whole explanation, as printed.
fn report(policy: &Policy, parsed: &Parsed, args: &Args, req: &MemoryRequest) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("request: {} {} from {}", parsed.method, parsed.path, args.client_ip));
    for (name, value) in &parsed.headers {
        line(format!("  {name}: {value}"));
    }
    match (&args.body, policy.needs_body) {
        (Some(b), true) => line(format!("  body: {b}")),
        (Some(_), false) => line("  body: given, but the policy reads no body".into()),
        (None, true) => line("  body: none (the policy reads bodies: a body cost is charged at its max)".into()),
        (None, false) => {}
    }
    line(String::new());
    let all = explain(policy, &mut req.clone());
    let width = all.len().to_string().len();
    // Numbered as written: a rule with plans or overrides is one entry.
    for (number, e) in (1..).zip(&all) {
        let rule = &policy.rules[e.rule];
        if let Some(why) = &e.skip {
            // One line for the rule, one for the reason.
            line(format!("{number:>width$}. {}: does not apply ({}; {})", rule.name, kind(rule), limit_text(rule)));
            line(format!("{}why not:  {why}", pad(width)));
            continue;
        }
        line(format!("{number:>width$}. {}: APPLIES ({})", rule.name, kind(rule)));
        line(format!("{}key:      {}", pad(width), key_text(e)));
        line(format!("{}limit:    {}", pad(width), limit_text(rule)));
        if let Some(by) = &e.limit_by {
            line(format!("{}because:  {by}", pad(width)));
        }
        for (what, text) in extras(rule, e) {
            line(format!("{}{:<10}{text}", pad(width), format!("{what}:")));
        }
    }
    line(String::new());
    let resolved = resolve(policy, &mut req.clone());
    line(format!("tenant:      {}", resolved.tenant.as_deref().unwrap_or("(none)")));
    line(format!("integration: {}", resolved.integration.as_deref().unwrap_or("(none)")));
    if let Some(plan) = &resolved.plan {
        line(format!("plan:        {plan}"));
    }
    let exempt = if resolved.exempt { " (exempt: only rules naming it exactly apply)" } else { "" };
    line(format!("path:        {}{exempt}", resolved.path));
    let applying = all.iter().filter(|e| e.applies()).count();
    line(format!("{applying} of {} rules apply.", all.len()));
    out
}

fn pad(width: usize) -> String {
    " ".repeat(width + 2)
}

/// Local or global, enforced or shadow.
fn kind(rule: &Rule) -> String {
    let scope = match (rule.scope, rule.failure_mode) {
        (Scope::Local, _) => "local",
        (Scope::Global, FailureMode::Open) => "global",
        (Scope::Global, FailureMode::Closed) => "global, fails closed",
    };
    let mode = if rule.shadow { "shadow" } else { "enforced" };
    format!("{scope}, {mode}")
}

fn key_text(e: &Explained) -> String {
    let text = if e.key.is_empty() { "(no parts: one bucket for every request it applies to)".to_string() } else { e.key_text() };
    match &e.global_id {
        Some(id) => format!("{text}  (counter service key {id:?})"),
        None => text,
    }
}

/// `20 per 1 second, burst 20, token_bucket`, or `4 in flight (each held
/// 5 minutes at most)`.
pub fn limit_text(rule: &Rule) -> String {
    let l = &rule.limit;
    if rule.concurrent {
        return format!("{} in flight (each held {} at most)", l.requests, l.per);
    }
    let algorithm = match rule.algorithm {
        Algorithm::TokenBucket => return format!("{} per {}, burst {}, token_bucket", l.requests, l.per, l.burst),
        Algorithm::FixedWindow => "fixed_window",
        Algorithm::SlidingWindow => "sliding_window",
    };
    format!("{} per {}, {algorithm}", l.requests, l.window_text())
}

/// The other settings of a rule that applies, each as (what, text), with
/// what this request gets from them.
fn extras(rule: &Rule, e: &Explained) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(q) = &rule.queue {
        out.push(("queue", format!("waits up to {} for its turn, at most {} waiting per key", q.max_wait, q.max_queued)));
    }
    if let Some(p) = &rule.priority {
        let mut text = format!("classes {} from header {}, default {}", p.classes.join(" > "), p.header, p.classes.get(p.default).map_or("?", String::as_str));
        if let Some(class) = &e.class {
            text.push_str(&format!("; this request: {class}"));
        }
        out.push(("priority", text));
    }
    if let Some(c) = &rule.cost {
        let text = match &c.source {
            CostSource::Header(h) => format!("units from header {h}, default {}, max {}; this request: {}", c.default, c.max, e.cost),
            CostSource::Body(path) => format!("units from body field {}, default {}, max {}; this request: {}", path.join("."), c.default, c.max, e.cost),
            CostSource::ResponseHeader(h) => settled(&format!("response header {h}"), c, e.cost),
            CostSource::ResponseBody(path) => settled(&format!("response body field {}", path.join(".")), c, e.cost),
        };
        out.push(("cost", text));
    }
    if let Some(a) = &rule.adaptive {
        out.push(("adaptive", format!("follows the upstream's health, never below {} per {}", a.floor, rule.limit.per)));
    }
    if rule.obey_upstream {
        out.push(("upstream", "obeys upstream limits (429/503 with a wait hold the key back)".into()));
    }
    if let Some(from) = rule.refund_from {
        out.push(("count", format!("successes only: an answer with status {from} or above gives the units back")));
    }
    if let Some(p) = &rule.penalty {
        out.push(("penalty", format!("{} refusals within {} box the key for {} (429 tier {})", p.after, p.within, p.block, p.tier)));
    }
    out
}

/// A cost read from the response: its estimate now, settled later.
fn settled(source: &str, c: &sluice_core::policy::Cost, now: u64) -> String {
    format!(
        "units from the {source}, settled when the response ends (missing, unreadable or above max {}: the estimate stands); estimate {}, charged up front; this request: {now} now",
        c.max, c.default
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_with_multi_word_values() {
        let p = parse_request("post /api/v1/tools/invoke X-Tenant-Id: acme x-note: two words   host: api.notion.com").expect("parsed");
        assert_eq!(p.method, "POST");
        assert_eq!(p.path, "/api/v1/tools/invoke");
        assert_eq!(
            p.headers,
            vec![
                ("x-tenant-id".to_string(), "acme".to_string()),
                ("x-note".to_string(), "two words".to_string()),
                ("host".to_string(), "api.notion.com".to_string())
            ]
        );
        assert_eq!(parse_request("GET /x x-empty:").expect("parsed").headers, vec![("x-empty".to_string(), String::new())]);
        for (bad, says) in [
            ("", "empty"),
            ("   ", "empty"),
            ("/api GET", "not an HTTP method"),
            ("GET", "no path"),
            ("GET api/v1", "does not start with '/'"),
            ("GET /x acme", "before any header name"),
            ("GET /x x(y): 1", "not a header name"),
            ("GET /x :", "not a header name"),
        ] {
            let err = parse_request(bad).expect_err(bad);
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }
}
