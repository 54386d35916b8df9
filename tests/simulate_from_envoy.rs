//! `make simulate` on a log Envoy wrote: replaying the ingress access log
//! through the same policy gives the answers Envoy gave.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::Stack;
use sluice::core::policy::Policy;
use sluice::core::simulate::{replay, Record};

const POLICY: &str = r#"{"trusted_hops": 1, "tenant": [{"header": "x-tenant-id"}], "rules": [
    {"name": "per-ip", "key": ["client_ip"], "limit": {"requests": 8, "per": "1h"}},
    {"name": "per-tenant", "key": ["tenant"], "limit": {"requests": 5, "per": "1h"}}]}"#;

#[test]
fn replaying_the_access_log_gives_envoys_answers() {
    let stack = Stack::start(POLICY);
    let mut statuses = Vec::new();
    for (tenant, ip, n) in [("a", "203.0.113.1", 7), ("b", "203.0.113.1", 3), ("c", "203.0.113.2", 6)] {
        for _ in 0..n {
            statuses.push(stack.get("/api/v1/tools/list", &[("x-tenant-id", tenant), ("x-forwarded-for", ip)]).status);
        }
    }
    let refused = statuses.iter().filter(|s| **s == 429).count() as u64;
    // a: 5 of 7; b: 3 of 3 but the shared IP allows 8 in all (5 + 3);
    // c: 5 of 6.
    assert_eq!(refused, 3, "{statuses:?}");
    let path = stack.envoy.access_log();
    assert!(common::eventually(Duration::from_secs(10), || { std::fs::read_to_string(&path).is_ok_and(|t| t.lines().count() == statuses.len()) }));
    let records: Vec<Record> = std::fs::read_to_string(&path).unwrap().lines().map(|l| Record::parse(l).unwrap()).collect();
    // Each line carries the request's duration (concurrency limits hold
    // their units that long in the replay).
    assert!(records.iter().all(|r| r.duration_ns.is_some_and(|d| d < 10_000_000_000)), "{records:?}");
    let report = replay(&Policy::from_json(POLICY).unwrap(), records);
    assert_eq!(report.requests, 16);
    assert_eq!(report.denied, refused);
    assert_eq!(report.admitted, 16 - refused);
    let tenant = report.rules.iter().find(|r| r.rule == "per-tenant").unwrap();
    assert_eq!(tenant.denied, 3);
    let keys: Vec<(&str, u64)> = tenant.top_denied.iter().map(|k| (k.key.as_str(), k.count)).collect();
    assert_eq!(keys, [("tenant=a", 2), ("tenant=c", 1)]);
}
