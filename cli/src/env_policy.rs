//! `sluicectl policy-from-env`: the default policy with the gateway's
//! environment variables applied.
//!
//! The MCP gateway was configured with `RATE_LIMIT_*` variables (global,
//! per-tenant and per-endpoint limits, exempt paths, Redis) and with one
//! `<INTEGRATION>_RATE_LIMIT` variable per third-party API. This command
//! starts from a policy (the embedded `policies/mcp-gateway.json`, or
//! `--base`), applies every variable that is set, validates the result with
//! the filter's own validator and prints it as JSON on stdout. Warnings and
//! errors go to stderr; bad input exits with 2. The mapping is documented in
//! `docs/configuration.md`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::process::ExitCode;

use serde_json::{Map, Value};
use sluice_core::duration::Span;
use sluice_core::policy::{Policy, PolicyError};

/// The default policy, as shipped in `policies/mcp-gateway.json`.
const DEFAULT_POLICY: &str = include_str!("../../policies/mcp-gateway.json");

#[derive(clap::Args)]
pub struct Args {
    /// Policy to start from (`-` for standard input); default: the
    /// embedded MCP gateway policy (policies/mcp-gateway.json).
    #[arg(long, value_name = "FILE")]
    base: Option<String>,
}

const PREFIX: &str = "RATE_LIMIT_";
const INTEGRATION_SUFFIX: &str = "_RATE_LIMIT";
const INTEGRATION_RULE_PREFIX: &str = "integration-";

/// Largest `limit.requests` the validator accepts.
const MAX_REQUESTS: u128 = 1_000_000_000;
/// Longest window a policy accepts (7 days), in milliseconds.
const MAX_WINDOW_MS: u64 = 7 * 86_400 * 1000;

/// Every `RATE_LIMIT_*` variable this command knows (without the prefix).
const KNOWN: &[&str] = &[
    "GLOBAL_ENABLED",
    "GLOBAL_RPS",
    "GLOBAL_WINDOW_MS",
    "TENANT_ENABLED",
    "TENANT_RPS",
    "TENANT_WINDOW_MS",
    "ENDPOINT_TOOLS_SELECT_RPS",
    "ENDPOINT_TOOLS_INVOKE_RPS",
    "ENDPOINT_OAUTH_CONFIG_RPS",
    "EXEMPT_PATHS",
    "REDIS_URL",
    "KEY_PREFIX",
    "KEY_TTL",
];

/// A rule with an on/off switch, a rate and a window.
struct Tier {
    rule: &'static str,
    enabled: &'static str,
    rps: &'static str,
    window: &'static str,
}

const TIERS: &[Tier] = &[
    Tier { rule: "per-ip", enabled: "RATE_LIMIT_GLOBAL_ENABLED", rps: "RATE_LIMIT_GLOBAL_RPS", window: "RATE_LIMIT_GLOBAL_WINDOW_MS" },
    Tier { rule: "per-tenant", enabled: "RATE_LIMIT_TENANT_ENABLED", rps: "RATE_LIMIT_TENANT_RPS", window: "RATE_LIMIT_TENANT_WINDOW_MS" },
];

/// Per-endpoint variables and the rules each one sets.
const ENDPOINTS: &[(&str, &[&str])] = &[
    ("RATE_LIMIT_ENDPOINT_TOOLS_SELECT_RPS", &["tools-select"]),
    ("RATE_LIMIT_ENDPOINT_TOOLS_INVOKE_RPS", &["tools-invoke"]),
    // The gateway's single OAuth-config limit (1/s) is the write and delete
    // limit; reads have their own, higher limit (10/s) and keep it.
    ("RATE_LIMIT_ENDPOINT_OAUTH_CONFIG_RPS", &["oauth-config-write", "oauth-config-delete"]),
];

/// What rendering produced: the policy and messages for stderr.
struct Rendered {
    json: String,
    warnings: Vec<String>,
}

pub fn run(args: Args) -> ExitCode {
    let base = match &args.base {
        None => DEFAULT_POLICY.to_string(),
        Some(path) => match read(path) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let base_name = match args.base.as_deref() {
        None => "the default policy",
        Some("-") => "the policy on standard input",
        Some(path) => path,
    };
    let env = match environment(std::env::vars_os()) {
        Ok(env) => env,
        Err(errors) => return fail(&errors),
    };
    match render(&base, base_name, &env) {
        Ok(out) => {
            for w in &out.warnings {
                eprintln!("warning: {w}");
            }
            println!("{}", out.json);
            ExitCode::SUCCESS
        }
        Err(errors) => fail(&errors),
    }
}

fn fail(errors: &[String]) -> ExitCode {
    for e in errors {
        eprintln!("error: {e}");
    }
    ExitCode::from(2)
}

fn read(path: &str) -> Result<String, String> {
    if path == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("--base: cannot read standard input: {e}"))
    } else {
        std::fs::read_to_string(path).map_err(|e| format!("--base: cannot read {path}: {e}"))
    }
}

/// Whether a variable name is one this command reads or warns about.
fn relevant(name: &str) -> bool {
    name.starts_with(PREFIX) || name.ends_with(INTEGRATION_SUFFIX)
}

/// The relevant variables that are set and not empty (an empty variable
/// counts as unset). A relevant variable whose value is not UTF-8 is an
/// error.
fn environment(vars: impl Iterator<Item = (OsString, OsString)>) -> Result<BTreeMap<String, String>, Vec<String>> {
    let mut env = BTreeMap::new();
    let mut errors = Vec::new();
    for (name, value) in vars {
        let Ok(name) = name.into_string() else {
            continue;
        };
        if !relevant(&name) {
            continue;
        }
        match value.into_string() {
            Ok(v) if v.trim().is_empty() => {}
            Ok(v) => {
                env.insert(name, v.trim().to_string());
            }
            Err(_) => errors.push(format!("{name}: the value is not valid UTF-8")),
        }
    }
    if errors.is_empty() {
        Ok(env)
    } else {
        Err(errors)
    }
}

/// Applies `env` to the policy `base` and validates the result.
fn render(base: &str, base_name: &str, env: &BTreeMap<String, String>) -> Result<Rendered, Vec<String>> {
    if let Err(e) = Policy::from_json(base) {
        return Err(vec![format!("{base_name} is not a valid policy:\n{}", indent(&e))]);
    }
    let mut policy: Value = serde_json::from_str(base).map_err(|e| vec![format!("{base_name}: {e}")])?;
    let mut errors = Vec::new();
    let mut warnings = Vec::new();

    for name in env.keys() {
        if let Some(rest) = name.strip_prefix(PREFIX) {
            if !KNOWN.contains(&rest) {
                warnings.push(format!(
                    "{name} is not a variable policy-from-env knows; ignored (known: {})",
                    KNOWN.iter().map(|k| format!("{PREFIX}{k}")).collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }

    for tier in TIERS {
        apply_tier(&mut policy, env, tier, &mut errors, &mut warnings);
    }
    for (var, rules) in ENDPOINTS {
        if let Some(rps) = number(env, var, &mut errors) {
            for rule in *rules {
                if let Err(e) = set_rate(&mut policy, rule, var, rps, None) {
                    errors.push(e);
                }
            }
        }
    }
    apply_integrations(&mut policy, env, &mut errors, &mut warnings);
    apply_exempt_paths(&mut policy, env, &mut errors);
    if let Some(url) = env.get("RATE_LIMIT_REDIS_URL") {
        if let Err(why) = check_redis_url(url) {
            errors.push(format!("RATE_LIMIT_REDIS_URL={url:?}: {why}"));
        }
    }

    if !errors.is_empty() {
        return Err(errors);
    }
    let json = serde_json::to_string_pretty(&policy).map_err(|e| vec![e.to_string()])?;
    if let Err(e) = Policy::from_json(&json) {
        let applied: Vec<&str> = env.keys().map(String::as_str).collect();
        let mut head = String::from("the policy with the variables applied is refused");
        if !applied.is_empty() {
            let _ = write!(head, " (set: {})", applied.join(", "));
        }
        let _ = write!(head, ":\n{}", indent(&e));
        return Err(vec![head]);
    }
    Ok(Rendered { json, warnings })
}

/// The validator's problems, one per line, indented.
fn indent(e: &PolicyError) -> String {
    e.problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n")
}

/// `RATE_LIMIT_<TIER>_ENABLED`, `_RPS` and `_WINDOW_MS` for one rule.
fn apply_tier(policy: &mut Value, env: &BTreeMap<String, String>, tier: &Tier, errors: &mut Vec<String>, warnings: &mut Vec<String>) {
    let enabled = env.get(tier.enabled).and_then(|v| match boolean(v) {
        Some(b) => Some(b),
        None => {
            errors.push(format!("{}={v:?}: expected true or false (also 1/0, yes/no)", tier.enabled));
            None
        }
    });
    let rps = number(env, tier.rps, errors);
    let window = window_ms(env, tier.window, errors);
    match enabled {
        Some(false) => {
            if remove_rule(policy, tier.rule) {
                for var in [tier.rps, tier.window] {
                    if env.contains_key(var) {
                        warnings.push(format!("{var} has no effect: {}=false removes rule {}", tier.enabled, tier.rule));
                    }
                }
            } else {
                warnings.push(format!("{}=false: the base policy has no rule {}; nothing to remove", tier.enabled, tier.rule));
            }
            return;
        }
        Some(true) if find_rule(policy, tier.rule).is_none() => {
            errors.push(format!("{}=true, but the base policy has no rule {}", tier.enabled, tier.rule));
            return;
        }
        _ => {}
    }
    let result = match (rps, window) {
        (Some(rps), window) => set_rate(policy, tier.rule, tier.rps, rps, window),
        (None, Some(window)) => set_window(policy, tier.rule, tier.window, window),
        (None, None) => Ok(()),
    };
    if let Err(e) = result {
        errors.push(e);
    }
}

/// `<INTEGRATION>_RATE_LIMIT` for every `integration-<name>` rule.
fn apply_integrations(policy: &mut Value, env: &BTreeMap<String, String>, errors: &mut Vec<String>, warnings: &mut Vec<String>) {
    let names: Vec<String> = rules(policy)
        .iter()
        .filter_map(|r| r.get("name").and_then(Value::as_str))
        .filter(|n| n.starts_with(INTEGRATION_RULE_PREFIX))
        .map(str::to_string)
        .collect();
    let mut used = Vec::new();
    for rule in &names {
        let var = integration_variable(rule);
        if let Some(rps) = number(env, &var, errors) {
            if let Err(e) = set_rate(policy, rule, &var, rps, None) {
                errors.push(e);
            }
        }
        used.push(var);
    }
    for name in env.keys() {
        if name.ends_with(INTEGRATION_SUFFIX) && !name.starts_with(PREFIX) && !used.contains(name) {
            let rule = format!("{INTEGRATION_RULE_PREFIX}{}", name.trim_end_matches(INTEGRATION_SUFFIX).to_ascii_lowercase().replace('_', "-"));
            warnings.push(format!("{name} is set, but the policy has no rule {rule}; ignored"));
        }
    }
}

/// `integration-notion` → `NOTION_RATE_LIMIT`.
fn integration_variable(rule: &str) -> String {
    let name = rule.trim_start_matches(INTEGRATION_RULE_PREFIX);
    format!("{}{INTEGRATION_SUFFIX}", name.to_ascii_uppercase().replace('-', "_"))
}

fn apply_exempt_paths(policy: &mut Value, env: &BTreeMap<String, String>, errors: &mut Vec<String>) {
    let var = "RATE_LIMIT_EXEMPT_PATHS";
    let Some(list) = env.get(var) else { return };
    let mut paths = Vec::new();
    for (i, item) in list.split(',').enumerate() {
        let path = item.trim();
        if path.is_empty() {
            errors.push(format!("{var}={list:?}: entry {} is empty", i + 1));
        } else if !path.starts_with('/') {
            errors.push(format!("{var}={list:?}: path {path:?} must start with '/'"));
        } else if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            errors.push(format!("{var}={list:?}: path {path:?} contains a space"));
        } else if !paths.iter().any(|p: &Value| p.as_str() == Some(path)) {
            paths.push(Value::String(path.to_string()));
        }
    }
    if let Some(obj) = policy.as_object_mut() {
        obj.insert("exempt_paths".to_string(), Value::Array(paths));
    }
}

/// Accepts the URL forms the counter service's Redis client takes.
fn check_redis_url(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("expected a URL like redis://host:6379".to_string());
    };
    if !["redis", "rediss", "redis+unix", "unix"].contains(&scheme) {
        return Err(format!("scheme {scheme:?} is not redis, rediss, redis+unix or unix"));
    }
    if rest.is_empty() || rest.chars().any(char::is_whitespace) {
        return Err("expected a host (or socket path) after the scheme".to_string());
    }
    Ok(())
}

/// true/false/1/0/yes/no, without regard to case.
fn boolean(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// A requests-per-second variable: a whole number from 1 to 10^9.
fn number(env: &BTreeMap<String, String>, var: &str, errors: &mut Vec<String>) -> Option<u64> {
    let text = env.get(var)?;
    match text.parse::<u64>() {
        Ok(n) if (1..=MAX_REQUESTS).contains(&u128::from(n)) => Some(n),
        _ => {
            errors.push(format!("{var}={text:?}: expected a whole number of requests per second, 1 to {MAX_REQUESTS}"));
            None
        }
    }
}

/// A window variable: whole milliseconds, 1 to 7 days.
fn window_ms(env: &BTreeMap<String, String>, var: &str, errors: &mut Vec<String>) -> Option<u64> {
    let text = env.get(var)?;
    match text.parse::<u64>() {
        Ok(n) if (1..=MAX_WINDOW_MS).contains(&n) => Some(n),
        _ => {
            errors.push(format!("{var}={text:?}: expected a window in whole milliseconds, 1 to {MAX_WINDOW_MS} (7 days)"));
            None
        }
    }
}

/// A window as the policy writes it: `60s`, or `1500ms`.
fn duration(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn rules(policy: &Value) -> &[Value] {
    policy.get("rules").and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn find_rule<'a>(policy: &'a mut Value, name: &str) -> Option<&'a mut Map<String, Value>> {
    policy.get_mut("rules")?.as_array_mut()?.iter_mut().filter_map(Value::as_object_mut).find(|r| r.get("name").and_then(Value::as_str) == Some(name))
}

fn remove_rule(policy: &mut Value, name: &str) -> bool {
    let Some(rules) = policy.get_mut("rules").and_then(Value::as_array_mut) else {
        return false;
    };
    let before = rules.len();
    rules.retain(|r| r.get("name").and_then(Value::as_str) != Some(name));
    rules.len() != before
}

/// The rule's `limit` object and its window in milliseconds.
fn limit_of<'a>(policy: &'a mut Value, rule: &str, var: &str) -> Result<(&'a mut Map<String, Value>, u64), String> {
    let limit = find_rule(policy, rule)
        .ok_or_else(|| format!("{var} is set, but the base policy has no rule {rule}"))?
        .get_mut("limit")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| format!("{var}: rule {rule} has no limit object"))?;
    let per = limit.get("per").and_then(Value::as_str).unwrap_or_default();
    let span = Span::parse(per).map_err(|e| format!("{var}: rule {rule}: {e}"))?;
    Ok((limit, span.nanos() / 1_000_000))
}

/// Writes `requests` per `window_ms` into `limit`; an explicit `burst` is
/// dropped, so the burst is one window's worth.
fn write_limit(limit: &mut Map<String, Value>, requests: u128, window_ms: u64) {
    limit.insert("requests".to_string(), Value::from(requests as u64));
    limit.insert("per".to_string(), Value::String(duration(window_ms)));
    limit.remove("burst");
}

/// Sets a rule to `rps` requests per second, counted over `window_ms` (the
/// rule's own window when `None`): `rps × window` requests per window.
fn set_rate(policy: &mut Value, rule: &str, var: &str, rps: u64, window: Option<u64>) -> Result<(), String> {
    let (limit, current_ms) = limit_of(policy, rule, var)?;
    let window_ms = window.unwrap_or(current_ms);
    let product = u128::from(rps) * u128::from(window_ms);
    if !product.is_multiple_of(1000) {
        return Err(format!(
            "{var}={rps} over a window of {window_ms} ms (rule {rule}) is {rps} × {window_ms} / 1000 requests per window, \
             not a whole number; choose a rate or window whose product is a multiple of 1000"
        ));
    }
    let requests = product / 1000;
    if requests > MAX_REQUESTS {
        return Err(format!("{var}={rps} over a window of {window_ms} ms (rule {rule}) is {requests} requests per window, above {MAX_REQUESTS}"));
    }
    write_limit(limit, requests, window_ms);
    Ok(())
}

/// Changes a rule's window and keeps its rate: the requests scale with it.
fn set_window(policy: &mut Value, rule: &str, var: &str, window_ms: u64) -> Result<(), String> {
    let (limit, current_ms) = limit_of(policy, rule, var)?;
    let requests = limit.get("requests").and_then(Value::as_u64).unwrap_or_default();
    let product = u128::from(requests) * u128::from(window_ms);
    let current = u128::from(current_ms.max(1));
    if !product.is_multiple_of(current) {
        return Err(format!(
            "{var}={window_ms}: rule {rule} allows {requests} per {current_ms} ms, which is not a whole number \
             of requests per {window_ms} ms; set the rate variable too, or choose another window"
        ));
    }
    let scaled = product / current;
    if !(1..=MAX_REQUESTS).contains(&scaled) {
        return Err(format!("{var}={window_ms}: rule {rule} would allow {scaled} requests per window, outside 1 to {MAX_REQUESTS}"));
    }
    write_limit(limit, scaled, window_ms);
    Ok(())
}
