//! Where the integration comes from, in real Envoy: the `x-integration`
//! header, a field of the JSON body, or the upstream's authority on the
//! egress listener; all three name one integration and share its limit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Stack;

/// The gateway policy without queues (so that refusals are immediate),
/// reading the integration from the body too.
fn policy() -> String {
    common::patient(common::GATEWAY).replace(",\n     \"queue\": {\"max_wait\": \"2s\"}", "").replace(
        r#""integration": [{"header": "x-integration"}, "authority"]"#,
        r#""read_body": true, "integration": [{"header": "x-integration"}, {"body": "integration"}, "authority"]"#,
    )
}

#[test]
fn header_body_and_egress_authority_share_the_integration_limit() {
    let stack = Stack::start(&policy());
    let tenant = ("x-tenant-id", "src");
    // Notion: 3/s per tenant.
    let by_header = stack.send("GET", "/api/v1/integrations/call", &[tenant, ("x-integration", "notion")]);
    assert_eq!(by_header.status, 200, "{}", by_header.body);
    let url = stack.envoy.url("/api/v1/tools/invoke");
    let by_body = wasm_test_harness::request("POST", &url, &[tenant], r#"{"integration": "notion", "tool": "search"}"#).unwrap();
    assert_eq!(by_body.status, 200, "{}", by_body.body);
    // The echo upstream got the body whole.
    assert_eq!(by_body.json().unwrap()["headers"]["content-length"], "43", "{}", by_body.body);
    let egress = stack.envoy.egress_url("/v1/search");
    let by_authority = wasm_test_harness::request("GET", &egress, &[tenant, ("host", "api.notion.com")], "").unwrap();
    assert_eq!(by_authority.status, 200, "{}", by_authority.body);
    assert_eq!(by_authority.header("x-ratelimit-limit"), Some("3"));
    // The fourth, whichever way it names Notion, is refused.
    let refused = wasm_test_harness::request("GET", &egress, &[tenant, ("host", "api.notion.com")], "").unwrap();
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json().unwrap()["limits"]["tier"], "integration-notion");
    let refused = wasm_test_harness::request("POST", &url, &[tenant], r#"{"integration": "notion"}"#).unwrap();
    assert_eq!(refused.json().unwrap()["limits"]["tier"], "integration-notion");
    // Another third party through the egress listener is unaffected.
    let github = wasm_test_harness::request("GET", &egress, &[tenant, ("host", "api.github.com")], "").unwrap();
    assert_eq!(github.status, 200, "{}", github.body);
}

#[test]
fn the_default_policy_names_integrations_by_header_and_egress_authority() {
    let stack = Stack::start(&common::patient(common::GATEWAY));
    let egress = stack.envoy.egress_url("/v1/search");
    let r = wasm_test_harness::request("GET", &egress, &[("x-tenant-id", "d1"), ("host", "api.github.com")], "").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    // GitHub's 60/s is the tightest rule that applied (per-tenant is 100/s).
    assert_eq!(r.header("x-ratelimit-limit"), Some("60"));
}

#[test]
fn the_access_log_records_what_a_replay_needs() {
    let stack = Stack::start(&common::patient(common::GATEWAY));
    let r = stack.send("GET", "/api/v1/tools/list?x=1", &[("x-tenant-id", "logged"), ("x-forwarded-for", "203.0.113.9")]);
    assert_eq!(r.status, 200);
    let path = stack.envoy.access_log();
    assert!(common::eventually(std::time::Duration::from_secs(5), || std::fs::read_to_string(&path).is_ok_and(|t| !t.is_empty())));
    let text = std::fs::read_to_string(&path).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    println!("{line}");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/api/v1/tools/list?x=1");
    assert_eq!(line["client_ip"], "127.0.0.1");
    assert_eq!(line["headers"]["x-tenant-id"], "logged");
    assert_eq!(line["headers"]["x-forwarded-for"], "203.0.113.9");
    assert!(line["headers"]["x-integration"].is_null(), "{line}");
    let ts: f64 = line["ts"].as_str().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((now - ts).abs() < 30.0, "{ts}");
    assert_eq!(line["status"], 200);
}
