//! MCP traffic (JSON-RPC over Streamable HTTP) decided in the core with
//! policies/mcp.json: rules on methods and tools, batches, bodies that are
//! not JSON-RPC or too large to read, the JSON-RPC answer to a refusal,
//! and which requests have their body read at all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use sluice_core::limiter::{decide, explain, Ctx, Decision};
use sluice_core::policy::Policy;
use sluice_core::request::{MemoryRequest, Request};
use sluice_core::response::{denial, JSONRPC_RATE_LIMITED};
use sluice_core::store::{ensure_slots, MemoryStore};

const MCP: &str = include_str!("../../policies/mcp.json");
const S: u64 = 1_000_000_000;
/// 2025-11-17T12:34:45Z
const T0: u64 = 1_763_382_885 * S;

struct Mcp {
    policy: Policy,
    store: MemoryStore,
}

impl Mcp {
    fn new(json: &str) -> Mcp {
        let policy = Policy::from_json(json).expect("policy");
        let store = MemoryStore::default();
        ensure_slots(&store, policy.slots).unwrap();
        Mcp { policy, store }
    }

    fn send(&self, req: &mut dyn Request) -> Decision {
        decide(&self.policy, req, &self.store, Ctx::at(T0))
    }

    /// A POST that ends at once once decided, as a quick call does: the
    /// units of concurrency limits it took are released.
    fn post(&self, body: &str) -> Decision {
        let d = self.send(&mut post(body));
        assert!(sluice_core::limiter::release(&self.store, &d.effects.spent, T0).is_empty());
        d
    }

    fn denied_by(&self, d: &Decision) -> Option<String> {
        d.ruling.denied_by.map(|r| self.policy.rules[r.rule].name.clone())
    }
}

fn post(body: &str) -> MemoryRequest {
    let mut r = MemoryRequest::new("POST", "/mcp").header("x-tenant-id", "acme").header("content-type", "application/json");
    r.body = Some(body.as_bytes().to_vec());
    r
}

fn call(id: u32, method: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}"}}"#)
}

fn tool(id: u32, name: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{name}","arguments":{{}}}}}}"#)
}

/// A request whose body was too large for the filter to read.
struct TooLarge(MemoryRequest);

impl Request for TooLarge {
    fn method(&mut self) -> Option<String> {
        self.0.method()
    }
    fn path(&mut self) -> Option<String> {
        self.0.path()
    }
    fn authority(&mut self) -> Option<String> {
        self.0.authority()
    }
    fn header(&mut self, name: &str) -> Option<String> {
        Request::header(&mut self.0, name)
    }
    fn property(&mut self, path: &[String]) -> Option<Vec<u8>> {
        self.0.property(path)
    }
    fn body_too_large(&mut self) -> bool {
        true
    }
}

#[test]
fn the_sixth_tools_list_in_a_second_gets_a_json_rpc_error_with_its_id() {
    let m = Mcp::new(MCP);
    for id in 1..=5 {
        assert!(m.post(&call(id, "tools/list")).allowed(), "call {id}");
    }
    let d = m.post(&call(6, "tools/list"));
    assert_eq!(m.denied_by(&d).as_deref(), Some("tools-list"));
    let reply = denial(&m.policy, &d, T0, 0).unwrap();
    assert_eq!(reply.status, 429);
    let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(body["jsonrpc"], "2.0");
    assert_eq!(body["id"], 6);
    assert_eq!(body["error"]["code"], JSONRPC_RATE_LIMITED);
    assert!(body["error"]["message"].as_str().unwrap().contains("Rate limit"), "{body}");
    assert_eq!(body["error"]["data"]["retryAfter"], 1);
    assert_eq!(body["error"]["data"]["limits"]["tier"], "tools-list");
    assert_eq!(body["error"]["data"]["limits"]["limit"], 5);
    assert!(reply.headers.iter().any(|(n, v)| n == "retry-after" && v == "1"));
    // Another tenant has its own bucket.
    let mut other = post(&call(7, "tools/list"));
    other.headers.retain(|(n, _)| n != "x-tenant-id");
    assert!(m.send(&mut other.header("x-tenant-id", "globex")).allowed());
}

#[test]
fn a_refused_notification_gets_no_body() {
    let m = Mcp::new(
        r#"{"read_body": true, "rules": [{"name": "n", "match": {"jsonrpc": {"methods": ["notifications/*"]}}, "key": [], "limit": {"requests": 1, "per": "1h"}}]}"#,
    );
    let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    assert!(m.post(note).allowed());
    let d = m.post(note);
    assert_eq!(m.denied_by(&d).as_deref(), Some("n"));
    let reply = denial(&m.policy, &d, T0, 0).unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (429, ""));
    assert!(!reply.headers.iter().any(|(n, _)| n == "content-type"));
}

#[test]
fn the_handshake_is_never_refused_by_a_tool_limit() {
    let m = Mcp::new(MCP);
    let admitted = (0..30).filter(|i| m.post(&tool(*i, "github-search")).allowed()).count();
    assert_eq!(admitted, 20, "tools/call: 20/s per tenant");
    assert_eq!(m.denied_by(&m.post(&tool(99, "github-search"))).as_deref(), Some("tools-call"));
    for (i, method) in ["initialize", "notifications/initialized", "ping"].into_iter().enumerate() {
        let body = if method.starts_with("notifications/") { format!(r#"{{"jsonrpc":"2.0","method":"{method}"}}"#) } else { call(i as u32, method) };
        assert!(m.post(&body).allowed(), "{method}");
    }
    // An event stream (GET) is counted by its own rule only.
    let d = m.send(&mut MemoryRequest::new("GET", "/mcp").header("x-tenant-id", "acme"));
    assert!(d.allowed());
    let rules: Vec<&str> = d.ruling.applied.iter().map(|a| m.policy.rules[a.rule].name.as_str()).collect();
    assert_eq!(rules, ["mcp-event-streams"]);
}

#[test]
fn a_tool_limit_matches_by_name_and_queues() {
    let m = Mcp::new(MCP);
    for i in 0..3 {
        let d = m.post(&tool(i, "notion-search"));
        assert!(d.allowed() && d.ruling.hold_ns == 0, "call {i}: {d:?}");
    }
    let d = m.post(&tool(3, "Notion-Create-Page"));
    assert!(d.allowed(), "over 3/s a notion call waits for its turn");
    assert!(d.ruling.hold_ns > 0 && d.ruling.hold_ns <= 2 * S, "{}", d.ruling.hold_ns);
    // Another integration's tool is not held by Notion's limit.
    let d = m.post(&tool(4, "github-search"));
    assert!(d.allowed() && d.ruling.hold_ns == 0);
    let applied: Vec<&str> = d.ruling.applied.iter().map(|a| m.policy.rules[a.rule].name.as_str()).collect();
    assert_eq!(applied, ["per-ip", "per-tenant", "tenant-in-flight", "tools-call", "integration-github"]);
}

#[test]
fn a_batch_costs_one_unit_per_call_and_is_decided_whole() {
    let m = Mcp::new(MCP);
    let four = format!("[{},{},{},{}]", call(1, "tools/list"), call(2, "tools/list"), call(3, "ping"), call(4, "tools/list"));
    let d = m.post(&four);
    assert!(d.allowed());
    let list = d.ruling.applied.iter().find(|a| m.policy.rules[a.rule].name == "tools-list").unwrap();
    assert_eq!(list.outcome.remaining, 2, "three tools/list calls spent three units");
    let d = m.post(&four);
    assert_eq!(m.denied_by(&d).as_deref(), Some("tools-list"), "three more do not fit in the two left");
    let reply = denial(&m.policy, &d, T0, 0).unwrap();
    let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    let ids: Vec<&serde_json::Value> = body.as_array().unwrap().iter().map(|e| &e["id"]).collect();
    assert_eq!(ids, [1, 2, 3, 4], "one error per call with an id, the ping included");
    // Refused as a whole: nothing was spent, two still fit.
    assert!(m.post(&format!("[{},{}]", call(5, "tools/list"), call(6, "tools/list"))).allowed());
}

#[test]
fn a_body_that_is_not_json_rpc_meets_only_the_rest_rules() {
    let m = Mcp::new(MCP);
    for body in ["not json", r#"{"hello": "world"}"#, "[]"] {
        let d = m.post(body);
        let rules: Vec<&str> = d.ruling.applied.iter().map(|a| m.policy.rules[a.rule].name.as_str()).collect();
        assert_eq!(rules, ["per-ip"], "{body}");
        assert!(d.ruling.jsonrpc.is_none());
    }
}

#[test]
fn a_body_too_large_to_read_counts_against_every_json_rpc_rule() {
    let m = Mcp::new(MCP);
    let mut req = TooLarge(post(""));
    let d = m.send(&mut req);
    assert!(d.allowed());
    let json_rpc_rules = m.policy.rules.iter().filter(|r| r.jsonrpc.is_some()).count();
    assert_eq!(d.ruling.applied.len(), 1 + json_rpc_rules - 2, "per-ip and every JSON-RPC rule but the two session ones (no session)");
    let refused = (0..5).map(|_| m.send(&mut TooLarge(post("")))).find(|d| !d.allowed()).expect("tools-list's 5/s runs out");
    let reply = denial(&m.policy, &refused, T0, 0).unwrap();
    assert!(reply.body.starts_with(r#"{"error":"Rate Limit Exceeded""#), "no id to answer: the gateway's body");
}

#[test]
fn keys_read_the_method_the_tool_and_the_session() {
    let m = Mcp::new(
        r#"{"read_body": true, "rules": [{"name": "k", "match": {"jsonrpc": {}}, "key": ["jsonrpc_method", "tool", "mcp_session"], "limit": {"requests": 1, "per": "1h"}}]}"#,
    );
    let mut req = post(&tool(1, "Notion-Search")).header("mcp-session-id", "S1");
    let all = explain(&m.policy, &mut req);
    assert_eq!(all[0].key_text(), "jsonrpc_method=tools/call:tool=notion-search:header(mcp-session-id)=s1");
    assert!(m.send(&mut post(&tool(1, "a")).header("mcp-session-id", "s1")).allowed());
    assert!(m.send(&mut post(&tool(1, "b")).header("mcp-session-id", "s1")).allowed(), "another tool, another bucket");
    assert!(m.send(&mut post(&tool(1, "a")).header("mcp-session-id", "s2")).allowed(), "another session, another bucket");
    assert!(!m.send(&mut post(&tool(1, "A")).header("mcp-session-id", "S1")).allowed(), "case-folded");
}

#[test]
fn the_body_wins_over_mcp_headers_and_the_mismatch_is_noted() {
    let m = Mcp::new(MCP);
    let mut req = post(&tool(1, "notion-search")).header("mcp-method", "ping");
    let d = m.send(&mut req);
    assert!(d.books.mcp_headers_disagree);
    assert!(d.ruling.applied.iter().any(|a| m.policy.rules[a.rule].name == "integration-notion"), "counted as the tools/call it is");
    let mut req = post(&tool(2, "notion-search")).header("mcp-method", "tools/call").header("mcp-name", "notion-search");
    assert!(!m.send(&mut req).books.mcp_headers_disagree);
}

#[test]
fn only_requests_a_json_rpc_rule_could_match_have_their_body_read() {
    let p = Policy::from_json(MCP).unwrap();
    assert!(p.reads_body("POST", "/mcp"));
    assert!(p.reads_body("post", "/mcp?x=1"));
    assert!(!p.reads_body("GET", "/mcp"), "event streams are not read");
    assert!(!p.reads_body("DELETE", "/mcp"));
    assert!(!p.reads_body("POST", "/api/other"));
    let rest = Policy::from_json(include_str!("../../policies/mcp-gateway.json")).unwrap();
    assert!(rest.reads_body("POST", "/anything") == rest.needs_body);
}

#[test]
fn json_rpc_mistakes_are_named_with_their_path() {
    let cases = [
        (r#"{"rules": [{"name": "a", "match": {"jsonrpc": {"methods": ["tools/call"]}}, "limit": {"requests": 1, "per": "1s"}}]}"#, "read_body:"),
        (
            r#"{"read_body": true, "rules": [{"name": "a", "match": {"jsonrpc": {"methods": [""]}}, "limit": {"requests": 1, "per": "1s"}}]}"#,
            "rules[0].match.jsonrpc.methods[0]:",
        ),
        (
            r#"{"read_body": true, "rules": [{"name": "a", "match": {"jsonrpc": {"tools": ["a b"]}}, "limit": {"requests": 1, "per": "1s"}}]}"#,
            "rules[0].match.jsonrpc.tools[0]:",
        ),
        (
            r#"{"read_body": true, "rules": [{"name": "a", "match": {"jsonrpc": {"methods": ["tools/list"], "tools": ["x"]}}, "limit": {"requests": 1, "per": "1s"}}]}"#,
            "rules[0].match.jsonrpc.tools: only a tools/call names a tool",
        ),
        (
            r#"{"read_body": true, "rules": [{"name": "a", "match": {"jsonrpc": {"method": "x"}}, "limit": {"requests": 1, "per": "1s"}}]}"#,
            "rules[0].match.jsonrpc.method: unknown field `method`",
        ),
        (
            r#"{"read_body": true, "rules": [{"name": "a", "key": ["tools"], "limit": {"requests": 1, "per": "1s"}}]}"#,
            "rules[0].key[0]: unknown variant `tools`",
        ),
    ];
    for (json, want) in cases {
        let err = Policy::from_json(json).unwrap_err().to_string();
        assert!(err.contains(want), "{json}\n  got: {err}\n want: {want}");
    }
}

/// `make check` on every shipped policy: policies/mcp.json among them,
/// and the examples in policies/examples/.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn every_shipped_policy_passes_the_check() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let mut checked = Vec::new();
    for dir in [dir.clone(), dir.join("examples")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let json = std::fs::read_to_string(&path).unwrap();
                if let Err(e) = sluice_core::policy::check(&json) {
                    panic!("{}: {e}", path.display());
                }
                checked.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
    }
    assert!(checked.iter().any(|n| n == "penalty.json"), "{checked:?}");
    assert!(checked.iter().any(|n| n == "mcp.json"), "{checked:?}");
}
