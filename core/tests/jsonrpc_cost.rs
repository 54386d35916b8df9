//! What reading a JSON-RPC body costs the core, measured natively (the
//! in-Envoy figure is `sluice-bench --scenario jsonrpc`): the scenario's
//! 512-byte `tools/call` body parsed alone, and whole decisions on the
//! scenario's policy (policies/mcp.json with a REST twin of each rule a
//! `tools/call` meets) for a JSON-RPC request and its REST twin, whose body
//! is not read.
//!
//! Ignored by default; run one with its iteration count, e.g.
//!
//! ```text
//! SLUICE_COST_ITERS=20000 cargo test --release -p sluice-core --test jsonrpc_cost -- --ignored --nocapture
//! ```
//!
//! Each prints nanoseconds per iteration. Under
//! `valgrind --tool=callgrind` (repeatable on a busy machine) run one test
//! at a time with `--exact --test-threads=1`, once with
//! `SLUICE_COST_ITERS=0` and once with N: the difference over N is the
//! instructions per iteration.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Instant;

use sluice_core::limiter::{decide, release, Ctx};
use sluice_core::policy::Policy;
use sluice_core::request::MemoryRequest;
use sluice_core::store::{ensure_slots, MemoryStore};

const MCP: &str = include_str!("../../policies/mcp.json");
const BODY_BYTES: usize = 512;
const CLIENTS: u64 = 1000;
const S: u64 = 1_000_000_000;
/// 2025-11-17T12:34:45Z
const T0: u64 = 1_763_382_885 * S;

fn iterations() -> u64 {
    std::env::var("SLUICE_COST_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000)
}

/// The body `sluice-bench` sends for request `i` (bench/src/jsonrpc.rs).
fn body(jsonrpc: bool, i: u64) -> String {
    let (head, tail) = if jsonrpc {
        (format!(r#"{{"jsonrpc":"2.0","id":{},"method":"tools/call","params":{{"name":"echo","arguments":{{"text":""#, i + 1), r#""}}}"#)
    } else {
        (r#"{"text":""#.to_string(), r#""}"#)
    };
    let pad = BODY_BYTES.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(pad))
}

/// The scenario's policy (bench/src/variant.rs, `mcp_policy`).
fn policy() -> Policy {
    let mut doc: serde_json::Value = serde_json::from_str(&MCP.replacen(r#""trusted_hops": 0"#, r#""trusted_hops": 1"#, 1)).unwrap();
    let rules = doc["rules"].as_array_mut().unwrap();
    let twins: Vec<serde_json::Value> = rules
        .iter()
        .filter(|r| {
            let j = &r["match"]["jsonrpc"];
            let methods: Vec<&str> = j["methods"].as_array().map(|m| m.iter().filter_map(|v| v.as_str()).collect()).unwrap_or_default();
            j.is_object() && j.get("tools").is_none() && methods.iter().any(|m| *m == "tools/call" || *m == "tools/*")
        })
        .map(|r| {
            let mut twin = r.clone();
            twin["name"] = format!("rest-{}", r["name"].as_str().unwrap()).into();
            twin["match"] = serde_json::json!({"methods": ["POST"], "paths": [{"exact": "/api/v1/items"}]});
            twin
        })
        .collect();
    assert!(!twins.is_empty());
    rules.extend(twins);
    Policy::from_json(&doc.to_string()).expect("policy")
}

/// Client `k`'s request, as `bench/wrk/jsonrpc.lua` sends it (the REST
/// body is not read: no rule of its path needs it).
fn request(jsonrpc: bool, k: u64) -> MemoryRequest {
    let path = if jsonrpc { "/mcp" } else { "/api/v1/items" };
    let mut r = MemoryRequest::new("POST", path)
        .header("content-type", "application/json")
        .header("x-forwarded-for", &format!("10.{}.{}.{}", (k >> 16) & 255, (k >> 8) & 255, k & 255))
        .header("x-tenant-id", &format!("tenant-{k}"));
    if jsonrpc {
        r.body = Some(body(true, k).into_bytes());
    }
    r
}

fn report(what: &str, n: u64, started: Instant) {
    if n > 0 {
        println!("{what}: {:.0} ns per iteration ({n} iterations)", started.elapsed().as_nanos() as f64 / n as f64);
    }
}

#[test]
#[ignore = "a measurement: run it with --ignored"]
fn parse_a_tools_call_body() {
    let bodies: Vec<Vec<u8>> = (0..CLIENTS).map(|k| body(true, k).into_bytes()).collect();
    assert!(bodies.iter().all(|b| b.len() == BODY_BYTES));
    assert_eq!(sluice_core::jsonrpc::parse(&bodies[0]).unwrap().calls[0].tool.as_deref(), Some("echo"));
    let n = iterations();
    let started = Instant::now();
    for i in 0..n {
        let b = &bodies[(i % CLIENTS) as usize];
        black_box(sluice_core::jsonrpc::parse(black_box(b)));
    }
    report("jsonrpc::parse, 512-byte tools/call", n, started);
}

/// Decides `n` requests of one kind from clients cycling over `CLIENTS`,
/// one every millisecond (far below every limit), each released at once.
fn decisions(jsonrpc: bool) {
    let policy = policy();
    let store = MemoryStore::default();
    ensure_slots(&store, policy.slots).unwrap();
    let mut requests: Vec<MemoryRequest> = (0..CLIENTS).map(|k| request(jsonrpc, k)).collect();
    let n = iterations();
    let started = Instant::now();
    for i in 0..n {
        // MemoryRequest hands out a copy of its body, as the host does.
        let req = &mut requests[(i % CLIENTS) as usize];
        let now = T0 + i * 1_000_000;
        let d = decide(&policy, req, &store, Ctx::at(now));
        assert!(d.allowed() && d.ruling.denied_by.is_none());
        assert!(release(&store, &d.effects.spent, now).is_empty());
        black_box(d);
    }
    report(if jsonrpc { "decision, JSON-RPC tools/call" } else { "decision, REST twin" }, n, started);
}

#[test]
#[ignore = "a measurement: run it with --ignored"]
fn decide_jsonrpc() {
    decisions(true);
}

#[test]
#[ignore = "a measurement: run it with --ignored"]
fn decide_rest() {
    decisions(false);
}
