//! `sluicectl policy-from-env` run as a process with a controlled
//! environment: each variable changes exactly its field, bad values exit 2
//! naming the variable, unknown variables warn.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};
use sluice_core::policy::Policy;

const DEFAULT_POLICY: &str = include_str!("../../policies/mcp-gateway.json");

/// Runs `sluicectl policy-from-env` with only PATH and `vars` set.
fn run_with(vars: &[(&str, &str)], args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluicectl"));
    cmd.arg("policy-from-env").args(args).env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start sluicectl");
    if let Some(text) = stdin {
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("wait for sluicectl")
}

fn run(vars: &[(&str, &str)]) -> Output {
    run_with(vars, &[], None)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The printed policy, after checking the exit code, that stdout is JSON
/// alone and that the filter's validator accepts it.
fn policy(out: &Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(out));
    let text = String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8");
    if let Err(e) = Policy::from_json(&text) {
        panic!("the printed policy is refused: {e}\n{text}");
    }
    serde_json::from_str(&text).expect("stdout is one JSON document")
}

fn default_policy() -> Value {
    serde_json::from_str(DEFAULT_POLICY).expect("default policy is JSON")
}

fn rule_index(policy: &Value, name: &str) -> Option<usize> {
    policy["rules"].as_array().expect("rules").iter().position(|r| r["name"] == name)
}

/// Asserts that `got` is the default policy except for the given rules'
/// limits, which must be as given.
fn assert_only_limits_changed(got: &Value, changed: &[(&str, Value)]) {
    let mut expected = default_policy();
    for (rule, limit) in changed {
        let i = rule_index(&expected, rule).unwrap_or_else(|| panic!("no rule {rule}"));
        expected["rules"][i]["limit"] = limit.clone();
    }
    assert_eq!(got, &expected);
}

/// Asserts a failure with exit code 2, nothing on stdout, and a message
/// naming `var`.
fn assert_refused(vars: &[(&str, &str)], var: &str) {
    let out = run(vars);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{vars:?} should exit 2; stderr: {err}");
    assert!(out.stdout.is_empty(), "{vars:?} printed a policy");
    assert!(err.contains(var), "the message for {vars:?} does not name {var}: {err}");
    assert!(!err.contains("panicked"), "{vars:?} panicked: {err}");
}

#[test]
fn no_variables_print_the_default_policy() {
    let out = run(&[]);
    assert_eq!(policy(&out), default_policy());
    assert!(stderr(&out).is_empty(), "unexpected stderr: {}", stderr(&out));
}

#[test]
fn unrelated_and_empty_variables_change_nothing() {
    let out = run(&[("HOME", "/nonexistent"), ("RATE_LIMIT_TENANT_RPS", ""), ("LANG", "C")]);
    assert_eq!(policy(&out), default_policy());
    assert!(stderr(&out).is_empty(), "unexpected stderr: {}", stderr(&out));
}

#[test]
fn global_rps_sets_the_per_ip_rule() {
    let got = policy(&run(&[("RATE_LIMIT_GLOBAL_RPS", "250")]));
    assert_only_limits_changed(&got, &[("per-ip", json!({"requests": 250, "per": "1s"}))]);
}

#[test]
fn global_window_keeps_the_rate_per_second() {
    let got = policy(&run(&[("RATE_LIMIT_GLOBAL_RPS", "50"), ("RATE_LIMIT_GLOBAL_WINDOW_MS", "2000")]));
    assert_only_limits_changed(&got, &[("per-ip", json!({"requests": 100, "per": "2s"}))]);

    let got = policy(&run(&[("RATE_LIMIT_GLOBAL_WINDOW_MS", "1500")]));
    assert_only_limits_changed(&got, &[("per-ip", json!({"requests": 1500, "per": "1500ms"}))]);
}

#[test]
fn global_disabled_removes_the_per_ip_rule() {
    for spelling in ["false", "FALSE", "0", "no", "No"] {
        let got = policy(&run(&[("RATE_LIMIT_GLOBAL_ENABLED", spelling)]));
        let mut expected = default_policy();
        let i = rule_index(&expected, "per-ip").expect("per-ip");
        expected["rules"].as_array_mut().expect("rules").remove(i);
        assert_eq!(got, expected, "RATE_LIMIT_GLOBAL_ENABLED={spelling}");
        assert_eq!(rule_index(&got, "per-ip"), None);
    }
}

#[test]
fn enabled_true_changes_nothing() {
    for spelling in ["true", "True", "1", "yes", "YES"] {
        let out = run(&[("RATE_LIMIT_GLOBAL_ENABLED", spelling), ("RATE_LIMIT_TENANT_ENABLED", spelling)]);
        assert_eq!(policy(&out), default_policy(), "{spelling}");
    }
}

#[test]
fn disabled_with_a_rate_warns_that_the_rate_has_no_effect() {
    let out = run(&[("RATE_LIMIT_TENANT_ENABLED", "false"), ("RATE_LIMIT_TENANT_RPS", "5")]);
    let got = policy(&out);
    assert_eq!(rule_index(&got, "per-tenant"), None);
    assert!(rule_index(&got, "per-ip").is_some());
    let err = stderr(&out);
    assert!(err.contains("RATE_LIMIT_TENANT_RPS has no effect"), "{err}");
}

#[test]
fn tenant_variables_set_the_per_tenant_rule() {
    let got = policy(&run(&[("RATE_LIMIT_TENANT_RPS", "7")]));
    assert_only_limits_changed(&got, &[("per-tenant", json!({"requests": 7, "per": "1s"}))]);

    // The gateway plan's values: 100 requests per second over a one-minute window.
    let got = policy(&run(&[("RATE_LIMIT_TENANT_RPS", "100"), ("RATE_LIMIT_TENANT_WINDOW_MS", "60000")]));
    assert_only_limits_changed(&got, &[("per-tenant", json!({"requests": 6000, "per": "60s"}))]);

    let got = policy(&run(&[("RATE_LIMIT_TENANT_ENABLED", "no")]));
    assert_eq!(rule_index(&got, "per-tenant"), None);
    assert_eq!(got["rules"].as_array().map(Vec::len), default_policy()["rules"].as_array().map(|r| r.len() - 1));
}

#[test]
fn the_gateway_plan_renders_the_default_limits() {
    // The variables of the gateway's rate-limiting plan, with its values.
    let out = run(&[
        ("RATE_LIMIT_GLOBAL_ENABLED", "true"),
        ("RATE_LIMIT_GLOBAL_RPS", "1000"),
        ("RATE_LIMIT_GLOBAL_WINDOW_MS", "1000"),
        ("RATE_LIMIT_TENANT_ENABLED", "true"),
        ("RATE_LIMIT_TENANT_RPS", "100"),
        ("RATE_LIMIT_TENANT_WINDOW_MS", "60000"),
        ("RATE_LIMIT_ENDPOINT_TOOLS_SELECT_RPS", "10"),
        ("RATE_LIMIT_ENDPOINT_TOOLS_INVOKE_RPS", "20"),
        ("RATE_LIMIT_ENDPOINT_OAUTH_CONFIG_RPS", "1"),
        ("RATE_LIMIT_REDIS_URL", "redis://localhost:6379"),
        ("RATE_LIMIT_KEY_PREFIX", "rl:"),
        ("RATE_LIMIT_KEY_TTL", "90000"),
        ("RATE_LIMIT_EXEMPT_PATHS", "/health,/ready"),
    ]);
    let got = policy(&out);
    assert_only_limits_changed(&got, &[("per-tenant", json!({"requests": 6000, "per": "60s"}))]);
    assert!(stderr(&out).is_empty(), "unexpected stderr: {}", stderr(&out));
}

#[test]
fn endpoint_variables_set_their_rules() {
    let got = policy(&run(&[("RATE_LIMIT_ENDPOINT_TOOLS_SELECT_RPS", "3")]));
    assert_only_limits_changed(&got, &[("tools-select", json!({"requests": 3, "per": "1s"}))]);

    let got = policy(&run(&[("RATE_LIMIT_ENDPOINT_TOOLS_INVOKE_RPS", "40")]));
    assert_only_limits_changed(&got, &[("tools-invoke", json!({"requests": 40, "per": "1s"}))]);

    // Write and delete; the read rule keeps its own limit.
    let got = policy(&run(&[("RATE_LIMIT_ENDPOINT_OAUTH_CONFIG_RPS", "2")]));
    assert_only_limits_changed(
        &got,
        &[("oauth-config-write", json!({"requests": 2, "per": "1s"})), ("oauth-config-delete", json!({"requests": 2, "per": "1s"}))],
    );
}

#[test]
fn exempt_paths_replace_the_list() {
    let got = policy(&run(&[("RATE_LIMIT_EXEMPT_PATHS", " /health , /ready,/metrics")]));
    let mut expected = default_policy();
    expected["exempt_paths"] = json!(["/health", "/ready", "/metrics"]);
    assert_eq!(got, expected);

    let got = policy(&run(&[("RATE_LIMIT_EXEMPT_PATHS", "/livez")]));
    assert_eq!(got["exempt_paths"], json!(["/livez"]));
}

#[test]
fn integration_variables_set_their_rules() {
    let got = policy(&run(&[("NOTION_RATE_LIMIT", "9")]));
    assert_only_limits_changed(&got, &[("integration-notion", json!({"requests": 9, "per": "1s"}))]);

    let got = policy(&run(&[("GITHUB_RATE_LIMIT", "30"), ("LINKEDIN_RATE_LIMIT", "50"), ("REDDIT_RATE_LIMIT", "10")]));
    assert_only_limits_changed(
        &got,
        &[
            ("integration-github", json!({"requests": 30, "per": "1s"})),
            ("integration-linkedin", json!({"requests": 50, "per": "1s"})),
            ("integration-reddit", json!({"requests": 10, "per": "1s"})),
        ],
    );

    // Every integration rule of the default policy has its variable.
    let rules = default_policy()["rules"].as_array().expect("rules").clone();
    let integrations: Vec<String> =
        rules.iter().filter_map(|r| r["name"].as_str()).filter_map(|n| n.strip_prefix("integration-")).map(str::to_string).collect();
    assert!(integrations.len() >= 14, "{integrations:?}");
    for name in integrations {
        let var = format!("{}_RATE_LIMIT", name.to_ascii_uppercase().replace('-', "_"));
        let got = policy(&run(&[(var.as_str(), "2")]));
        let rule = format!("integration-{name}");
        assert_only_limits_changed(&got, &[(rule.as_str(), json!({"requests": 2, "per": "1s"}))]);
    }
}

#[test]
fn counter_service_variables_do_not_change_the_policy() {
    let out = run(&[("RATE_LIMIT_REDIS_URL", "redis://redis.example:6379/2"), ("RATE_LIMIT_KEY_PREFIX", "gw:"), ("RATE_LIMIT_KEY_TTL", "90000")]);
    assert_eq!(policy(&out), default_policy());
}

#[test]
fn bad_values_exit_2_naming_the_variable() {
    assert_refused(&[("RATE_LIMIT_TENANT_RPS", "abc")], "RATE_LIMIT_TENANT_RPS");
    assert_refused(&[("RATE_LIMIT_TENANT_RPS", "0")], "RATE_LIMIT_TENANT_RPS");
    assert_refused(&[("RATE_LIMIT_TENANT_RPS", "-5")], "RATE_LIMIT_TENANT_RPS");
    assert_refused(&[("RATE_LIMIT_TENANT_RPS", "1.5")], "RATE_LIMIT_TENANT_RPS");
    assert_refused(&[("RATE_LIMIT_TENANT_RPS", "2000000000")], "RATE_LIMIT_TENANT_RPS");
    assert_refused(&[("RATE_LIMIT_GLOBAL_RPS", "1e3")], "RATE_LIMIT_GLOBAL_RPS");
    assert_refused(&[("RATE_LIMIT_GLOBAL_WINDOW_MS", "1s")], "RATE_LIMIT_GLOBAL_WINDOW_MS");
    assert_refused(&[("RATE_LIMIT_TENANT_WINDOW_MS", "0")], "RATE_LIMIT_TENANT_WINDOW_MS");
    assert_refused(&[("RATE_LIMIT_TENANT_WINDOW_MS", "604800001")], "RATE_LIMIT_TENANT_WINDOW_MS");
    assert_refused(&[("RATE_LIMIT_GLOBAL_ENABLED", "maybe")], "RATE_LIMIT_GLOBAL_ENABLED");
    assert_refused(&[("RATE_LIMIT_TENANT_ENABLED", "on")], "RATE_LIMIT_TENANT_ENABLED");
    assert_refused(&[("RATE_LIMIT_ENDPOINT_TOOLS_SELECT_RPS", "ten")], "RATE_LIMIT_ENDPOINT_TOOLS_SELECT_RPS");
    assert_refused(&[("RATE_LIMIT_ENDPOINT_TOOLS_INVOKE_RPS", "0")], "RATE_LIMIT_ENDPOINT_TOOLS_INVOKE_RPS");
    assert_refused(&[("RATE_LIMIT_ENDPOINT_OAUTH_CONFIG_RPS", "x")], "RATE_LIMIT_ENDPOINT_OAUTH_CONFIG_RPS");
    assert_refused(&[("NOTION_RATE_LIMIT", "fast")], "NOTION_RATE_LIMIT");
    assert_refused(&[("RATE_LIMIT_EXEMPT_PATHS", "health")], "RATE_LIMIT_EXEMPT_PATHS");
    assert_refused(&[("RATE_LIMIT_EXEMPT_PATHS", "/health,,/ready")], "RATE_LIMIT_EXEMPT_PATHS");
    assert_refused(&[("RATE_LIMIT_EXEMPT_PATHS", "/health /ready")], "RATE_LIMIT_EXEMPT_PATHS");
    assert_refused(&[("RATE_LIMIT_REDIS_URL", "localhost:6379")], "RATE_LIMIT_REDIS_URL");
    assert_refused(&[("RATE_LIMIT_REDIS_URL", "http://localhost:6379")], "RATE_LIMIT_REDIS_URL");
}

#[test]
fn a_fractional_number_per_window_is_refused() {
    // 3 per second over 500 ms would be 1.5 requests per window.
    assert_refused(&[("RATE_LIMIT_GLOBAL_RPS", "3"), ("RATE_LIMIT_GLOBAL_WINDOW_MS", "500")], "RATE_LIMIT_GLOBAL_RPS");
}

#[test]
fn every_bad_variable_is_reported() {
    let out = run(&[("RATE_LIMIT_TENANT_RPS", "abc"), ("RATE_LIMIT_GLOBAL_ENABLED", "maybe")]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("RATE_LIMIT_TENANT_RPS") && err.contains("RATE_LIMIT_GLOBAL_ENABLED"), "{err}");
}

#[test]
fn unknown_variables_warn_and_change_nothing() {
    let out = run(&[("RATE_LIMIT_FOO", "1")]);
    assert_eq!(policy(&out), default_policy());
    let err = stderr(&out);
    assert!(err.contains("warning") && err.contains("RATE_LIMIT_FOO"), "{err}");

    // A misspelt known variable.
    let out = run(&[("RATE_LIMIT_TENANT_RPM", "100")]);
    assert_eq!(policy(&out), default_policy());
    assert!(stderr(&out).contains("RATE_LIMIT_TENANT_RPM"), "{}", stderr(&out));

    // An integration the policy has no rule for.
    let out = run(&[("NOTON_RATE_LIMIT", "3")]);
    assert_eq!(policy(&out), default_policy());
    let err = stderr(&out);
    assert!(err.contains("NOTON_RATE_LIMIT") && err.contains("integration-noton"), "{err}");
}

#[test]
fn base_policy_from_a_file_or_stdin() {
    let base = r#"{"tenant": [{"header": "x-tenant-id"}], "rules": [
        {"name": "per-tenant", "key": ["tenant"], "limit": {"requests": 10, "per": "1m", "burst": 4}},
        {"name": "integration-acme-crm", "key": ["tenant"], "limit": {"requests": 1, "per": "1s"}}
    ]}"#;
    let out = run_with(&[("RATE_LIMIT_TENANT_RPS", "2"), ("ACME_CRM_RATE_LIMIT", "5")], &["--base", "-"], Some(base));
    let got = policy(&out);
    // The rule's own window is kept (2 per second over 1 minute); the
    // explicit burst gives way to one window's worth.
    assert_eq!(got["rules"][0]["limit"], json!({"requests": 120, "per": "60s"}));
    assert_eq!(got["rules"][1]["limit"], json!({"requests": 5, "per": "1s"}));

    let dir = std::env::temp_dir().join(format!("sluice-env-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("base.json");
    std::fs::write(&file, base).expect("write base");
    let out = run_with(&[("RATE_LIMIT_TENANT_WINDOW_MS", "30000")], &["--base", file.to_str().expect("path")], None);
    let got = policy(&out);
    assert_eq!(got["rules"][0]["limit"], json!({"requests": 5, "per": "30s"}));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_variable_for_a_rule_the_base_lacks_is_refused() {
    let base = r#"{"rules": [{"name": "per-ip", "key": ["client_ip"], "limit": {"requests": 10, "per": "1s"}}]}"#;
    let out = run_with(&[("RATE_LIMIT_TENANT_RPS", "2")], &["--base", "-"], Some(base));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("RATE_LIMIT_TENANT_RPS") && err.contains("per-tenant"), "{err}");
}

#[test]
fn a_bad_base_is_refused() {
    let out = run_with(&[], &["--base", "-"], Some(r#"{"rules": [{"name": "x"}]}"#));
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(stderr(&out).contains("not a valid policy"), "{}", stderr(&out));

    let out = run_with(&[], &["--base", "/nonexistent/policy.json"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--base"), "{}", stderr(&out));
}
