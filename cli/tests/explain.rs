//! `sluicectl explain` run as a program, against the default policy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

const GATEWAY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/mcp-gateway.json");

fn sluicectl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluicectl")).args(args).output().expect("sluicectl runs")
}

fn explain(request: &str, extra: &[&str]) -> Output {
    let mut args = vec!["explain", "--policy", GATEWAY, "--request", request];
    args.extend_from_slice(extra);
    sluicectl(&args)
}

/// The rule a heading line (` 3. name: ...`) is about.
fn heading(line: &str) -> Option<&str> {
    let (number, rest) = line.trim_start().split_once(". ")?;
    number.chars().all(|c| c.is_ascii_digit()).then(|| rest.split_once(": ").map_or(rest, |(name, _)| name))
}

/// The lines printed for one rule: its heading and the lines under it.
fn block(stdout: &str, rule: &str) -> String {
    let mut lines = stdout.lines().skip_while(|l| heading(l) != Some(rule));
    let Some(head) = lines.next() else { panic!("no rule {rule} in:\n{stdout}") };
    let mut out = vec![head];
    out.extend(lines.take_while(|l| !l.is_empty() && heading(l).is_none()));
    out.join("\n")
}

fn text(out: &[u8]) -> String {
    String::from_utf8(out.to_vec()).expect("UTF-8")
}

#[test]
fn an_invoke_call_shows_each_rule_with_its_key_and_limit() {
    let out = explain("POST /api/v1/tools/invoke x-tenant-id: Acme x-integration: notion", &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);

    let per_ip = block(&stdout, "per-ip");
    assert!(per_ip.contains("per-ip: APPLIES (local, enforced)"), "{per_ip}");
    assert!(per_ip.contains("key:      client_ip=127.0.0.1"), "{per_ip}");
    assert!(per_ip.contains("limit:    1000 per 1 second, burst 1000, token_bucket"), "{per_ip}");

    let per_tenant = block(&stdout, "per-tenant");
    assert!(per_tenant.contains("APPLIES (global, enforced)"), "{per_tenant}");
    assert!(per_tenant.contains("key:      tenant=acme  (counter service key \"acme\")"), "{per_tenant}");
    assert!(per_tenant.contains("100 per 1 second, burst 100"), "{per_tenant}");

    let invoke = block(&stdout, "tools-invoke");
    assert!(invoke.contains("APPLIES (global, enforced)"), "{invoke}");
    assert!(invoke.contains("key:      tenant=acme"), "{invoke}");
    assert!(invoke.contains("limit:    20 per 1 second, burst 20, token_bucket"), "{invoke}");

    let notion = block(&stdout, "integration-notion");
    assert!(notion.contains("key:      integration=notion:tenant=acme  (counter service key \"notion:acme\")"), "{notion}");
    assert!(notion.contains("queue:    waits up to 2 seconds for its turn"), "{notion}");
    assert!(notion.contains("upstream: obeys upstream limits"), "{notion}");

    let list = block(&stdout, "tools-list");
    assert!(list.contains("tools-list: does not apply (global, enforced; 5 per 1 second, burst 5, token_bucket)"), "{list}");
    assert!(list.contains("why not:  method POST is not one of GET, HEAD"), "{list}");
    assert!(!list.contains("key:"), "{list}");
    let select = block(&stdout, "tools-select");
    assert!(select.contains("why not:  path /api/v1/tools/invoke does not match exact /api/v1/tools/select"), "{select}");
    let github = block(&stdout, "integration-github");
    assert!(github.contains("why not:  integration notion is not one of github, api.github.com"), "{github}");

    assert!(stdout.contains("\ntenant:      acme\n"), "{stdout}");
    assert!(stdout.contains("\nintegration: notion\n"), "{stdout}");
    assert!(stdout.contains("4 of "), "{stdout}");
}

#[test]
fn the_client_ip_and_exempt_paths_show() {
    // trusted_hops is 0 (Envoy is the edge): the peer is the client, and
    // X-Forwarded-For is whatever the client wrote.
    let forged = "GET /api/v1/tools/list x-forwarded-for: 198.51.100.1, 203.0.113.5";
    let out = explain(forged, &["--client-ip", "10.0.0.2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(block(&stdout, "per-ip").contains("client_ip=10.0.0.2"), "{stdout}");
    // Behind one proxy (trusted_hops 1) the rightmost entry is the client.
    let behind = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("explain-behind-one-proxy.json");
    let policy = std::fs::read_to_string(GATEWAY).unwrap().replacen(r#""trusted_hops": 0"#, r#""trusted_hops": 1"#, 1);
    std::fs::write(&behind, policy).unwrap();
    let out = sluicectl(&["explain", "--policy", behind.to_str().unwrap(), "--request", forged, "--client-ip", "10.0.0.2"]);
    assert!(block(&text(&out.stdout), "per-ip").contains("client_ip=203.0.113.5"), "{}", text(&out.stdout));
    // IPv6: the client is its /64.
    let out = explain("GET /api/v1/tools/list", &["--client-ip", "2001:db8:5:6::7"]);
    assert!(block(&text(&out.stdout), "per-ip").contains("client_ip=2001:db8:5:6::/64"), "{}", text(&out.stdout));
    // No tenant: the rule applies, to the bucket shared by every such request.
    assert!(block(&stdout, "tools-list").contains("key:      tenant=(missing)  (counter service key \"-\")"), "{stdout}");
    assert!(stdout.contains("\ntenant:      (none)\n"), "{stdout}");

    let out = explain("GET /health/", &[]);
    let stdout = text(&out.stdout);
    assert!(block(&stdout, "per-ip").contains("why not:  path /health is exempt"), "{stdout}");
    assert!(block(&stdout, "health").contains("APPLIES (local, enforced)"), "{stdout}");
    assert!(stdout.contains("path:        /health (exempt"), "{stdout}");
    assert!(stdout.contains("1 of "), "{stdout}");
}

#[test]
fn host_names_the_integration_and_a_body_can_be_read() {
    let out = explain("GET /v1/search host: API.Notion.com x-tenant-id: acme", &[]);
    let stdout = text(&out.stdout);
    assert!(block(&stdout, "integration-notion").contains("integration=notion:tenant=acme"), "{stdout}");
    assert!(stdout.contains("\nintegration: api.notion.com\n"), "{stdout}");

    let dir = std::env::temp_dir().join(format!("sluicectl-explain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("body.json");
    std::fs::write(
        &policy,
        r#"{"read_body": true, "integration": [{"body": "integration"}], "rules": [
        {"name": "by-integration", "key": ["integration"], "limit": {"requests": 5, "per": "1s"},
         "cost": {"body": "units", "max": 5}}]}"#,
    )
    .unwrap();
    let out = sluicectl(&["explain", "--policy", policy.to_str().unwrap(), "--request", "POST /x", "--body", r#"{"integration": "GitHub", "units": 3}"#]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let rule = block(&stdout, "by-integration");
    assert!(rule.contains("key:      integration=github"), "{stdout}");
    assert!(rule.contains("cost:     units from body field units, default 1, max 5; this request: 3"), "{stdout}");
}

#[test]
fn a_cost_read_from_the_response_shows_its_source_and_estimate() {
    let dir = std::env::temp_dir().join(format!("sluicectl-explain-response-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("response.json");
    std::fs::write(
        &policy,
        r#"{"rules": [
        {"name": "tokens", "key": [], "limit": {"requests": 100000, "per": "1m"}, "cost": {"response_body": "usage.total_tokens", "estimate": 500, "max": 8000}},
        {"name": "units", "key": [], "limit": {"requests": 100, "per": "1s"}, "cost": {"response_header": "x-units"}}]}"#,
    )
    .unwrap();
    let out = sluicectl(&["explain", "--policy", policy.to_str().unwrap(), "--request", "POST /v1/chat"]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let tokens = block(&stdout, "tokens");
    assert!(tokens.contains("cost:     units from the response body field usage.total_tokens, settled when the response ends"), "{stdout}");
    assert!(tokens.contains("max 8000: the estimate stands); estimate 500, charged up front; this request: 500 now"), "{stdout}");
    assert!(block(&stdout, "units").contains("units from the response header x-units, settled"), "{stdout}");
}

#[test]
fn bad_input_exits_2_with_a_clear_message() {
    for (request, says) in [
        ("", "bad --request: it is empty"),
        ("POST", "bad --request: no path after \"POST\""),
        ("GET api/v1/tools/list", "bad --request: the path \"api/v1/tools/list\" does not start with '/'"),
        ("GET /x acme", "bad --request: \"acme\" comes before any header name"),
        ("/x GET", "bad --request: \"/x\" is not an HTTP method"),
    ] {
        let out = explain(request, &[]);
        assert_eq!(out.status.code(), Some(2), "{request:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(says), "{request:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(out.stdout.is_empty());
    }
    let out = explain("GET /x", &["--client-ip", "nowhere"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("bad --client-ip: \"nowhere\" is not an IP address"));

    let dir = std::env::temp_dir().join(format!("sluicectl-explain-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("bad.json");
    std::fs::write(&policy, r#"{"rules": [{"name": "x", "limit": {"requests": 5, "per": "5x"}}]}"#).unwrap();
    let out = sluicectl(&["explain", "--policy", policy.to_str().unwrap(), "--request", "GET /x"]);
    let missing = sluicectl(&["explain", "--policy", dir.join("none.json").to_str().unwrap(), "--request", "GET /x"]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("rules[0].limit.per: bad duration \"5x\""), "{}", text(&out.stderr));
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("cannot read"), "{}", text(&missing.stderr));
}

#[test]
fn the_example_policies_show_their_penalty_box_and_what_they_count() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/examples/");
    let run = |file: &str, request: &str| {
        let out = sluicectl(&["explain", "--policy", &format!("{examples}{file}"), "--request", request]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let penalty = block(&run("penalty.json", "GET /api/v1/anything x-tenant-id: acme"), "per-ip");
    assert!(penalty.contains("penalty:  10 refusals within 1 minute box the key for 1 minute (429 tier penalty)"), "{penalty}");
    let count = block(&run("count-success.json", "POST /api/v1/tools/invoke x-tenant-id: acme"), "tools-invoke");
    assert!(count.contains("count:    successes only: an answer with status 500 or above gives the units back"), "{count}");
}
