//! MCP through real Envoy with policies/mcp.json, driven by the official
//! MCP Python SDK (PyPI `mcp`, installed by `make mcp-sdk` into
//! .tools/mcp): its `MCPServer` over Streamable HTTP behind Envoy, and its
//! `Client` (tests/mcp/client.py) reporting what it surfaced, one JSON line
//! per step. Raw requests check what the SDK does not show (notifications,
//! the Mcp-Method check).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use wasm_test_harness::{free_port, repo_root, Envoy, EnvoyOptions, Upstream};

const MCP: &str = include_str!("../policies/mcp.json");

/// The SDK's Python (`SLUICE_MCP_PYTHON`, else the Makefile's venv).
fn python() -> PathBuf {
    let p = std::env::var_os("SLUICE_MCP_PYTHON").map_or_else(|| repo_root().join(".tools/mcp/bin/python"), PathBuf::from);
    assert!(p.exists(), "{} is missing: run `make mcp-sdk` (the MCP Python SDK in a venv)", p.display());
    p
}

/// The test MCP server, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start() -> Server {
        let port = free_port();
        let child = Command::new(python())
            .arg(repo_root().join("tests/mcp/server.py"))
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("MCP server");
        let server = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the MCP server did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Envoy with `policy` in front of the test MCP server.
fn envoy(server: &Server, policy: &str) -> Envoy {
    Envoy::start(EnvoyOptions {
        upstream: Some(Upstream::parse(&format!("127.0.0.1:{}", server.port)).unwrap()),
        policy_json: policy.to_string(),
        concurrency: 2,
        ..Default::default()
    })
    .expect("envoy")
}

/// Runs the SDK client against Envoy; its JSON lines.
fn client(envoy: &Envoy, tenant: &str) -> Vec<Value> {
    let out = Command::new(python()).arg(repo_root().join("tests/mcp/client.py")).arg(envoy.url("/mcp")).arg(tenant).output().expect("MCP client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "client failed: {}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn steps<'a>(lines: &'a [Value], name: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["step"] == name).collect()
}

/// A Prometheus series' value, matched by name and labels.
fn series(envoy: &Envoy, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = wasm_test_harness::get(&envoy.admin_url("/stats/prometheus"), &[]).ok()?.body;
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

#[test]
fn the_sdk_client_sees_rate_limits_as_json_rpc_errors_and_queued_calls_complete() {
    let server = Server::start();
    let envoy = envoy(&server, MCP);
    let lines = client(&envoy, "acme");
    println!("{}", lines.iter().map(Value::to_string).collect::<Vec<_>>().join("\n"));
    assert_eq!(steps(&lines, "handshake").len(), 1, "the handshake passed");

    let list = steps(&lines, "list");
    assert_eq!(list.len(), 6);
    for l in &list[..5] {
        assert_eq!(l["ok"], true, "{l}");
        assert_eq!(l["result"], serde_json::json!(["echo", "github-search", "notion-search", "slow-echo"]));
    }
    // The 6th in the same second: the SDK raises MCPError with Sluice's code.
    let sixth = list[5];
    assert_eq!(sixth["ok"], false, "{sixth}");
    assert_eq!(sixth["code"], -32029, "{sixth}");
    assert!(sixth["message"].as_str().unwrap().starts_with("Rate limit exceeded (tools-list): retry after"), "{sixth}");
    assert!(sixth["data"]["retryAfter"].as_u64().unwrap() >= 1, "{sixth}");
    assert_eq!(sixth["data"]["limits"]["tier"], "tools-list");
    assert_eq!(sixth["data"]["limits"]["limit"], 5);

    // Notion's 3 a second: the 4th call in a row waits for its turn and
    // then completes.
    let notion = steps(&lines, "notion");
    assert_eq!(notion.len(), 4);
    for l in &notion {
        assert_eq!(l["ok"], true, "{l}");
        assert_eq!(l["result"], serde_json::json!(["notion results for q"]));
    }
    let queued = [("rule", "integration-notion"), ("decision", "queued")];
    assert!(eventually(|| series(&envoy, "sluice_requests_total", &queued) == Some(1.0)), "{:?}", series(&envoy, "sluice_requests_total", &queued));
    assert!(notion[3]["ms"].as_u64().unwrap() >= 100, "the 4th call waited for its turn: {}", notion[3]);

    // Twelve calls of a second each at once: 10 in flight
    // (`tenant-in-flight`), the other 2 refused at once with the same
    // JSON-RPC error; once the 10 have ended, the tenant has room again.
    // (This SDK speaks protocol 2026-07-28, which has no session, so
    // `session-in-flight` does not apply: see docs/mcp.md.)
    let inflight = steps(&lines, "inflight");
    assert_eq!(inflight.len(), 12);
    let (done, refused): (Vec<&&Value>, Vec<&&Value>) = inflight.iter().partition(|l| l["ok"] == true);
    assert_eq!((done.len(), refused.len()), (10, 2), "{inflight:?}");
    for l in &refused {
        assert_eq!(l["code"], -32029, "{l}");
        assert_eq!(l["data"]["limits"]["tier"], "tenant-in-flight", "{l}");
        assert!(l["ms"].as_u64().unwrap() < 900, "refused without waiting for the others: {l}");
    }
    for l in &done {
        assert!(l["ms"].as_u64().unwrap() >= 1000, "{l}");
    }
    let after = steps(&lines, "after");
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["ok"], true, "freed when the calls ended: {}", after[0]);
    assert_eq!(after[0]["result"], serde_json::json!(["after"]));
}

/// A raw JSON-RPC POST to Envoy.
fn post(envoy: &Envoy, body: &str, headers: &[(&str, &str)]) -> wasm_test_harness::Response {
    let mut all = vec![("x-tenant-id", "raw"), ("content-type", "application/json"), ("accept", "application/json, text/event-stream")];
    all.extend_from_slice(headers);
    wasm_test_harness::request("POST", &envoy.url("/mcp"), &all, body).unwrap()
}

#[test]
fn notifications_are_refused_without_a_body_and_mcp_headers_do_not_outrank_the_body() {
    let server = Server::start();
    let policy = r#"{"read_body": true, "tenant": [{"header": "x-tenant-id"}], "rules": [
        {"name": "notes", "match": {"jsonrpc": {"methods": ["notifications/*"]}}, "key": ["tenant"], "limit": {"requests": 1, "per": "1h"}},
        {"name": "pings", "match": {"jsonrpc": {"methods": ["ping"]}}, "key": ["tenant"], "limit": {"requests": 1, "per": "1h"}}
    ]}"#;
    let envoy = envoy(&server, policy);
    let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    post(&envoy, note, &[]);
    let r = post(&envoy, note, &[]);
    assert_eq!(r.status, 429);
    assert_eq!(r.body, "", "JSON-RPC answers no notification");
    assert!(r.header("retry-after").is_some());

    // A ping that claims to be a tools/call in Mcp-Method is still a ping.
    let ping = |id: u32| format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#);
    post(&envoy, &ping(1), &[("mcp-method", "tools/call")]);
    let r = post(&envoy, &ping(2), &[("mcp-method", "tools/call")]);
    assert_eq!(r.status, 429, "{}", r.body);
    let v = r.json().unwrap();
    assert_eq!((v["id"].clone(), v["error"]["code"].clone()), (Value::from(2), Value::from(-32029)), "{v}");
    assert!(
        eventually(|| series(&envoy, "sluice_mcp_header_mismatch_total", &[]) == Some(2.0)),
        "{:?}",
        series(&envoy, "sluice_mcp_header_mismatch_total", &[])
    );
}

#[test]
fn a_body_too_large_to_read_counts_against_every_json_rpc_rule() {
    let server = Server::start();
    let policy = r#"{"read_body": true, "tenant": [{"header": "x-tenant-id"}], "rules": [
        {"name": "lists", "match": {"jsonrpc": {"methods": ["tools/list"]}}, "key": ["tenant"], "limit": {"requests": 1, "per": "1h"}}
    ]}"#;
    let envoy = envoy(&server, policy);
    // A tools/call padded past the 64 KiB the filter reads: not read, so
    // it counts as a call of every method, tools/list included.
    let padded = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"{}"}}}}}}"#, "x".repeat(70_000));
    let small = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}"#;
    assert_ne!(post(&envoy, small, &[]).status, 429, "a readable tools/call is no tools/list");
    assert_ne!(post(&envoy, small, &[]).status, 429);
    assert_ne!(post(&envoy, &padded, &[]).status, 429, "the first fits in the limit");
    let r = post(&envoy, &padded, &[]);
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json().unwrap()["limits"]["tier"], "lists", "no id was read: the gateway's body");
}
