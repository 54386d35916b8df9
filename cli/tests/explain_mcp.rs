//! `sluicectl explain` (`make explain BODY=...`) on JSON-RPC requests with
//! policies/mcp.json: which method and tool rules apply, and why the others
//! do not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

const MCP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/mcp.json");

fn explain(body: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sluicectl"))
        .args(["explain", "--policy", MCP, "--request", "POST /mcp x-tenant-id: acme", "--body", body])
        .output()
        .expect("sluicectl runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn applying(stdout: &str) -> Vec<&str> {
    stdout.lines().filter(|l| l.contains(": APPLIES")).filter_map(|l| l.trim_start().split_once(". ")?.1.split_once(':').map(|(n, _)| n)).collect()
}

#[test]
fn a_notion_tool_call_meets_the_tool_and_integration_rules() {
    let out = explain(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"notion-search","arguments":{}}}"#);
    assert_eq!(applying(&out), ["per-ip", "per-tenant", "tenant-in-flight", "tools-call", "integration-notion"], "{out}");
    assert!(out.contains("why not:  the body has no JSON-RPC tools/call of tool github*"), "{out}");
    assert!(out.contains("why not:  the body has no JSON-RPC call of method tools/list"), "{out}");
}

#[test]
fn the_handshake_meets_only_the_protocol_rule() {
    let out = explain(r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}"#);
    assert_eq!(applying(&out), ["per-ip", "mcp-protocol"], "{out}");
}

#[test]
fn a_body_that_is_not_json_rpc_meets_only_the_rest_rules() {
    let out = explain("hello");
    assert_eq!(applying(&out), ["per-ip"], "{out}");
}

#[test]
fn a_concurrency_limit_reads_as_calls_in_flight() {
    let out = explain(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#);
    assert!(out.contains("session-in-flight: does not apply (local, enforced; 4 in flight (each held 5 minutes at most))"), "{out}");
}
