//! Methods in a real Envoy: a rule that lists `GET` limits `HEAD` too,
//! since upstreams (Express, most frameworks) answer HEAD with the GET
//! handler and it costs them the same.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{align_to_second, patient, Stack, GATEWAY};

#[test]
fn head_requests_spend_the_get_limit() {
    let stack = Stack::start(&patient(GATEWAY));
    let t = [("x-tenant-id", "tenant-head")];
    // tools-list: GET, 5 per second per tenant.
    align_to_second();
    let statuses = stack.statuses(6, "HEAD", "/api/v1/tools/list", &t);
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429], "the 6th HEAD in a second is over tools-list's 5/s");
    let denied = stack.send("HEAD", "/api/v1/tools/list", &t);
    assert_eq!(denied.status, 429);
    assert_eq!(denied.header("ratelimit-policy"), Some("\"tools-list\";q=5;w=1"));
    // HEAD and GET share the bucket: GET finds it empty as well.
    assert_eq!(stack.get("/api/v1/tools/list", &t).status, 429);
}
