//! Who decides the client IP, in a real Envoy: with the default policy
//! (`trusted_hops` 0, Envoy is the edge) a client that writes its own
//! `X-Forwarded-For` stays in its own per-IP bucket; the same traffic under
//! `trusted_hops` 1 escapes, which is why that setting belongs only behind
//! a proxy that writes the header. IPv6 clients are their /64, and an
//! IPv4-mapped address is the IPv4 client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{gateway_per, Stack};

/// `GET /api/v1/metrics` (100 per client IP per hour) with a new
/// `X-Forwarded-For` and a new tenant each time: 200s out of `n`.
fn admitted_with_forged_headers(stack: &Stack, n: usize, xff: impl Fn(usize) -> String) -> usize {
    (0..n)
        .filter(|i| {
            let xff = xff(*i);
            let tenant = format!("t{i}");
            stack.get("/api/v1/metrics", &[("x-forwarded-for", &xff), ("x-tenant-id", &tenant)]).status == 200
        })
        .count()
}

#[test]
fn a_forged_forwarded_for_cannot_escape_the_per_ip_limit() {
    let forged = |i: usize| format!("203.0.{}.{}", i / 250, i % 250);
    let stack = Stack::start(&gateway_per("1h"));
    assert_eq!(admitted_with_forged_headers(&stack, 110, forged), 100, "the default policy let a forged X-Forwarded-For pick new per-ip buckets");
    drop(stack);

    // The same client against a policy that trusts one hop, with Envoy
    // still the edge: every forged address is a fresh bucket.
    let stack = Stack::start(&common::behind_one_proxy(&gateway_per("1h")));
    assert_eq!(admitted_with_forged_headers(&stack, 110, forged), 110);
}

#[test]
fn ipv6_clients_are_their_64_and_mapped_ipv4_is_ipv4() {
    // Behind one proxy, so that the test can name IPv6 clients through the
    // header the proxy would write.
    let stack = Stack::start(&common::behind_one_proxy(&gateway_per("1h")));
    let same_64 = |i: usize| format!("2001:db8:aa:1:{:x}::{:x}", i, i + 1);
    assert_eq!(admitted_with_forged_headers(&stack, 105, same_64), 100, "addresses of one /64 must share a per-ip bucket");
    let next_64 = |i: usize| format!("2001:db8:aa:2::{:x}", i + 1);
    assert_eq!(admitted_with_forged_headers(&stack, 3, next_64), 3, "another /64 is another client");

    let v4 = |_| "192.0.2.44".to_string();
    let mapped = |_| "::ffff:192.0.2.44".to_string();
    assert_eq!(admitted_with_forged_headers(&stack, 60, v4), 60);
    assert_eq!(admitted_with_forged_headers(&stack, 60, mapped), 40, "::ffff:a.b.c.d must be the client a.b.c.d");

    // A policy that keys whole addresses (/128) gives each its own bucket.
    let per_address = common::behind_one_proxy(&gateway_per("1h")).replacen(r#""trusted_hops": 1,"#, r#""trusted_hops": 1, "ipv6_prefix": 128,"#, 1);
    let stack = Stack::start(&per_address);
    assert_eq!(admitted_with_forged_headers(&stack, 105, same_64), 105);
}
