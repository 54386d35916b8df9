//! Counting only what the upstream did not fail, in real Envoy:
//! `policies/examples/count-success.json`, where `tools-invoke` (20 per
//! tenant, global) gives back the units of calls answered from 500 on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::Stack;

const EXAMPLE: &str = include_str!("../policies/examples/count-success.json");

/// The example with an hour's windows, so that counts do not come back
/// mid-test, and patient with a loaded machine's counter calls.
fn example_per_hour() -> String {
    common::patient(EXAMPLE).replace(r#""per": "1s""#, r#""per": "1h""#)
}

#[test]
fn failed_calls_give_their_units_back_and_successes_count() {
    let stack = Stack::start(&example_per_hour());
    let t = ("x-tenant-id", "count-1");
    // 30 calls the upstream fails: none is refused (without give-backs the
    // 21st would be), and each comes back as the upstream's own 500.
    for i in 0..30 {
        let r = stack.send("POST", "/api/v1/tools/invoke", &[t, ("x-echo-status", "500")]);
        assert_eq!(r.status, 500, "call {i}: {}", r.body);
    }
    // The tenant's 20 are whole: 20 successes pass, the 21st is refused.
    let statuses = stack.statuses(21, "POST", "/api/v1/tools/invoke", &[t]);
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 20, "{statuses:?}");
    let r = stack.send("POST", "/api/v1/tools/invoke", &[t]);
    assert_eq!(r.status, 429);
    assert_eq!(r.json().unwrap()["limits"]["tier"], "tools-invoke");
    // A 4xx is the caller's failure, not the upstream's: it counts.
    let other = ("x-tenant-id", "count-2");
    for _ in 0..20 {
        assert_eq!(stack.send("POST", "/api/v1/tools/invoke", &[other, ("x-echo-status", "404")]).status, 404);
    }
    assert_eq!(stack.send("POST", "/api/v1/tools/invoke", &[other]).status, 429);
    // Counted per rule (the worker hands its counters to Envoy on its tick).
    let refunds = || {
        let stats = stack.envoy.stats().ok()?;
        stats.iter().find(|(k, _)| k.contains("sluice_refunds_total") && k.contains("tools-invoke")).map(|(_, v)| *v)
    };
    assert!(common::eventually(Duration::from_secs(5), || refunds() == Some(30)), "{:?}", refunds());
}
