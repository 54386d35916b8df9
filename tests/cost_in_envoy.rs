//! Cost-weighted hits in real Envoy: units from a header or from a JSON
//! body field (the decision waits for the body), with safe defaults for
//! missing, malformed and oversized values.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Stack;

const UNITS: &str = r#"{"read_body": true, "rules": [
    {"name": "units", "match": {"paths": [{"prefix": "/h"}]}, "key": [], "limit": {"requests": 100, "per": "1h"},
     "cost": {"header": "x-units", "default": 2, "max": 50}},
    {"name": "tokens", "match": {"paths": [{"prefix": "/b"}]}, "key": [], "limit": {"requests": 1000, "per": "1h"},
     "cost": {"body": "usage.tokens", "max": 400}}
]}"#;

fn remaining(r: &wasm_test_harness::Response) -> u64 {
    r.header("x-ratelimit-remaining").unwrap().parse().unwrap()
}

#[test]
fn a_header_sets_the_cost() {
    let stack = Stack::start(UNITS);
    assert_eq!(remaining(&stack.get("/h", &[("x-units", "10")])), 90);
    assert_eq!(remaining(&stack.get("/h", &[])), 88, "missing: default 2");
    assert_eq!(remaining(&stack.get("/h", &[("x-units", "lots")])), 38, "malformed: max 50");
    let r = stack.get("/h", &[("x-units", "39")]);
    assert_eq!(r.status, 429);
    assert_eq!(r.json().unwrap()["limits"]["tier"], "units");
    assert_eq!(remaining(&stack.get("/h", &[("x-units", "38")])), 0);
}

#[test]
fn a_json_body_field_sets_the_cost() {
    let stack = Stack::start(UNITS);
    let post = |body: &str| wasm_test_harness::request("POST", &stack.envoy.url("/b"), &[("content-type", "application/json")], body).unwrap();
    let r = post(r#"{"usage": {"tokens": 300}, "model": "m"}"#);
    assert_eq!(r.status, 200);
    assert_eq!(remaining(&r), 700);
    // The upstream still gets the whole body.
    assert_eq!(r.json().unwrap()["method"], "POST");
    assert_eq!(remaining(&post(r#"{"usage": {}}"#)), 699, "missing field: default 1");
    assert_eq!(remaining(&post("not json")), 299, "not JSON: max 400");
    let big = format!(r#"{{"usage": {{"tokens": 1}}, "pad": "{}"}}"#, "x".repeat(100_000));
    assert_eq!(post(&big).status, 429, "too large to read: max 400, more than is left");
    assert_eq!(remaining(&post(r#"{"usage": {"tokens": 299}}"#)), 0);
}
