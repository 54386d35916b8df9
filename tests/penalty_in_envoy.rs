//! The penalty box in real Envoy: `policies/examples/penalty.json`, where
//! a client IP that `per-ip` (5 a second) refuses 10 times within 60 s is
//! refused for 60 s.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::Stack;

const EXAMPLE: &str = include_str!("../policies/examples/penalty.json");

#[test]
fn a_client_refused_ten_times_is_boxed_and_others_are_not() {
    let stack = Stack::start(&common::behind_one_proxy(&common::patient(EXAMPLE)));
    let hammer = [("x-forwarded-for", "203.0.113.7"), ("x-tenant-id", "p1")];
    let statuses = stack.statuses(40, "GET", "/api/v1/anything", &hammer);
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert!(refused >= 10, "{statuses:?}");
    // Boxed: refused under the box's tier, with the box's wait, long after
    // `per-ip` would admit again (1 s).
    std::thread::sleep(Duration::from_millis(1200));
    let r = stack.get("/api/v1/anything", &hammer);
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json().unwrap()["limits"]["tier"], "penalty");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((50..=61).contains(&retry), "retry after {retry}");
    // Another client goes on.
    assert_eq!(stack.get("/api/v1/anything", &[("x-forwarded-for", "203.0.113.8"), ("x-tenant-id", "p2")]).status, 200);
    // Counted.
    let stat = |name: &str| common::rule_stat(&stack.envoy, name, "per-ip");
    assert!(common::eventually(Duration::from_secs(5), || stat("sluice_penalty_boxes_total") == Some(1)), "{:?}", stat("sluice_penalty_boxes_total"));
    assert!(common::eventually(Duration::from_secs(5), || stat("sluice_penalty_refused_total").unwrap_or(0) >= 1));
}
