//! `policies/examples/plans.json` enforced by the filter in a real Envoy:
//! the tenant's plan from the `x-plan` header, `tools-list` at 5/s on
//! `free` (the default) and 50/s on `pro`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Instant;

use common::{align_to_second, patient, Stack};

const PLANS: &str = include_str!("../policies/examples/plans.json");
const LIST: &str = "/api/v1/tools/list";

#[test]
fn free_is_refused_at_the_sixth_tools_list_and_pro_gets_fifty() {
    let stack = Stack::start(&patient(PLANS));

    // No x-plan: the default plan, free.
    align_to_second();
    let free = [("x-tenant-id", "free-co")];
    for i in 0..5 {
        let r = stack.get(LIST, &free);
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
    }
    let r = stack.get(LIST, &free);
    assert_eq!(r.status, 429, "{}", r.body);
    let body = r.json().unwrap();
    assert_eq!(body["limits"]["tier"], "tools-list");
    assert_eq!(body["limits"]["limit"], 5);
    assert_eq!(r.header("x-ratelimit-limit"), Some("5"));
    assert_eq!(r.header("ratelimit-policy"), Some("\"tools-list\";q=5;w=1"));
    // Naming a plan that does not exist is still free.
    assert_eq!(stack.get(LIST, &[("x-tenant-id", "free-co"), ("x-plan", "unlimited")]).status, 429);

    // Pro: fifty in a second, each told its limit is 50.
    align_to_second();
    let started = Instant::now();
    let pro = [("x-tenant-id", "pro-co"), ("x-plan", "Pro")];
    for i in 0..50 {
        let r = stack.get(LIST, &pro);
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
        assert_eq!(r.header("x-ratelimit-limit"), Some("50"), "request {i}");
    }
    let r = stack.get(LIST, &pro);
    eprintln!("51 pro requests in {:?}", started.elapsed());
    // The 51st within the same second of the counter service is refused
    // (on a machine too slow for 51 requests in a second, the next
    // window has opened: nothing to check).
    if started.elapsed().as_millis() < 900 {
        assert_eq!(r.status, 429, "{}", r.body);
        assert_eq!(r.json().unwrap()["limits"]["limit"], 50);
        assert_eq!(r.header("ratelimit-policy"), Some("\"tools-list\";q=50;w=1"));
    }
}

#[test]
fn a_tenant_on_another_plan_is_counted_apart() {
    let stack = Stack::start(&patient(PLANS));
    align_to_second();
    let free = [("x-tenant-id", "acme")];
    assert_eq!(stack.admitted(6, "GET", LIST, &free), 5);
    // The same tenant upgraded: its pro key is its own, at the pro limit.
    let pro = [("x-tenant-id", "acme"), ("x-plan", "pro")];
    assert_eq!(stack.admitted(10, "GET", LIST, &pro), 10);
    // Its free key is still spent for this second.
    assert_eq!(stack.get(LIST, &free).status, 429);
}
