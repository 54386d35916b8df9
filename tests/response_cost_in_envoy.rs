//! Costs known only from the response, in real Envoy: an estimate charged
//! up front, settled to a response header or to a field of the JSON
//! response body when the response ends (the difference charged, past the
//! limit if need be, or the surplus given back); garbage leaves the
//! estimate. The echo upstream's body lists the request's headers, so a
//! request header `x-usage` becomes the body field `headers.x-usage`.
//! Token buckets of a day: nothing refills within the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::Stack;

const POLICY: &str = r#"{"rules": [
    {"name": "metered", "match": {"paths": [{"prefix": "/h"}]}, "key": [], "limit": {"requests": 100, "per": "24h"},
     "cost": {"response_header": "x-units", "estimate": 10, "max": 100}},
    {"name": "tokens", "match": {"paths": [{"prefix": "/b"}]}, "key": [], "limit": {"requests": 1000, "per": "24h"},
     "cost": {"response_body": "headers.x-usage", "estimate": 100, "max": 1000}}
]}"#;

fn remaining(r: &wasm_test_harness::Response) -> u64 {
    assert_eq!(r.status, 200, "{}", r.body);
    r.header("x-ratelimit-remaining").unwrap().parse().unwrap()
}

/// A counter of rule `rule`, once the worker handed it to Envoy.
fn counter(stack: &Stack, name: &str, rule: &str) -> Option<u64> {
    let stats = stack.envoy.stats().ok()?;
    stats.iter().find(|(k, _)| k.contains(name) && k.contains(rule)).map(|(_, v)| *v)
}

#[test]
fn a_response_header_settles_the_estimate_up_or_down_and_garbage_leaves_it() {
    let stack = Stack::start(POLICY);
    let answer = |units: &str| stack.get("/h", &[("x-echo-header", &format!("x-units={units}"))]);
    let r = answer("30");
    assert_eq!(r.header("x-units"), Some("30"));
    assert_eq!(remaining(&r), 90, "the estimate is charged up front");
    assert_eq!(remaining(&answer("0")), 60, "30 used by the first: 20 charged on top");
    assert_eq!(remaining(&stack.get("/h", &[])), 60, "nothing used by the second: its 10 came back");
    // No figure, not a number, not UTF-8, above max: the estimate stands.
    assert_eq!(remaining(&answer("lots")), 50);
    assert_eq!(remaining(&answer("%FF%FE")), 40);
    assert_eq!(remaining(&answer("1000")), 30);
    // 100 used where 30 were left: charged past the limit.
    assert_eq!(remaining(&answer("100")), 20);
    let r = stack.get("/h", &[]);
    assert_eq!(r.status, 429, "the request already happened; the next ones wait");
    assert_eq!(r.json().unwrap()["limits"]["tier"], "metered");
    let settled = || (counter(&stack, "sluice_cost_charged_units_total", "metered"), counter(&stack, "sluice_cost_returned_units_total", "metered"));
    assert!(common::eventually(Duration::from_secs(5), || settled() == (Some(110), Some(10))), "{:?}", settled());
    let kept = || counter(&stack, "sluice_cost_estimate_kept_total", "metered");
    assert!(common::eventually(Duration::from_secs(5), || kept() == Some(4)), "{:?}", kept());
}

#[test]
fn a_json_response_body_field_settles_the_estimate() {
    let stack = Stack::start(POLICY);
    let used = |n: &str| stack.get("/b", &[("x-usage", n)]);
    let r = used("250");
    assert!(r.body.contains(r#""x-usage":"250""#), "the body passes whole: {}", r.body);
    assert_eq!(remaining(&r), 900);
    assert_eq!(remaining(&used("40")), 650, "250 used: 150 charged on top");
    assert_eq!(remaining(&stack.get("/b", &[])), 610, "40 used: 60 came back");
    assert_eq!(remaining(&used("-3")), 510, "no figure: the estimate stood");
    assert_eq!(remaining(&stack.get("/b", &[])), 410, "unreadable: the estimate stood");
    // A body of several chunks is copied whole (and passed on whole).
    let pad = "p".repeat(40_000);
    let r = stack.get("/b", &[("x-usage", "7"), ("x-pad", &pad)]);
    assert!(r.body.len() > 40_000 && r.body.contains(r#""x-usage":"7""#));
    assert_eq!(remaining(&r), 310);
    assert_eq!(remaining(&stack.get("/b", &[])), 303, "7 used: 93 came back");
    let returned = || counter(&stack, "sluice_cost_returned_units_total", "tokens");
    assert!(common::eventually(Duration::from_secs(5), || returned() == Some(153)), "{:?}", returned());
}
