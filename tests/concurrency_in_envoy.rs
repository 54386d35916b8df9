//! Concurrency limits in real Envoy (two workers sharing the count): slow
//! requests above the limit are refused at once with the usual 429, their
//! units free when they end, and a client that hangs up mid-request frees
//! its unit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::Stack;

const TWO: &str = r#"{"tenant": [{"header": "x-tenant-id"}], "rules": [
    {"name": "in-flight", "tier": "tenant", "key": ["tenant"], "limit": {"concurrent": 2}}
]}"#;

/// Sends `n` requests at once, each held `delay_ms` by the upstream;
/// returns (status, seconds until answered, the 429 body's tier).
fn slow(stack: &Stack, n: usize, delay_ms: u64, tenant: &str) -> Vec<(u16, f64, String)> {
    let start = Instant::now();
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let url = stack.envoy.url("/x");
            let (tenant, delay) = (tenant.to_string(), delay_ms.to_string());
            std::thread::spawn(move || {
                let r = wasm_test_harness::request("GET", &url, &[("x-tenant-id", &tenant), ("x-echo-delay-ms", &delay)], "").unwrap();
                let tier = r.json().ok().and_then(|b| b["limits"]["tier"].as_str().map(String::from)).unwrap_or_default();
                (r.status, start.elapsed().as_secs_f64(), tier)
            })
        })
        .collect();
    let mut out: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    out.sort_by(|a, b| a.1.total_cmp(&b.1));
    out
}

#[test]
fn three_slow_requests_with_a_limit_of_two_then_room_again() {
    let stack = Stack::start(TWO);
    let answers = slow(&stack, 3, 1500, "acme");
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert_eq!(statuses, [429, 200, 200], "{answers:?}");
    // Refused at once, not after the others ended, with the usual contract.
    assert!(answers[0].1 < 1.0 && answers[0].2 == "in-flight", "{answers:?}");
    // Counted like any other refusal (workers hand metrics over on a tick).
    let denied = r#"sluice_requests_total{rule="in-flight",tier="tenant",decision="denied"} 1"#;
    let scrape = || wasm_test_harness::get(&stack.envoy.admin_url("/stats/prometheus"), &[]).unwrap().body;
    assert!(common::eventually(Duration::from_secs(5), || scrape().contains(denied)), "{}", scrape());
    // Another tenant is not held back by acme's calls.
    assert_eq!(slow(&stack, 2, 0, "other").iter().map(|a| a.0).collect::<Vec<_>>(), [200, 200]);
    // The ended requests gave their units back.
    let again: Vec<u16> = slow(&stack, 2, 300, "acme").iter().map(|a| a.0).collect();
    assert_eq!(again, [200, 200]);
    assert_eq!(stack.statuses(5, "GET", "/x", &[("x-tenant-id", "acme")]), [200; 5]);
    assert!(!stack.envoy.logs_tail(200).contains("panicked"));
}

#[test]
fn a_client_that_hangs_up_mid_request_frees_its_unit() {
    let stack = Stack::start(&TWO.replace(r#""concurrent": 2"#, r#""concurrent": 1"#));
    let h = [("x-tenant-id", "t1")];
    let mut s = std::net::TcpStream::connect(("127.0.0.1", stack.envoy.port())).unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nhost: x\r\nx-tenant-id: t1\r\nx-echo-delay-ms: 8000\r\n\r\n").unwrap();
    // Once it is upstream, its unit is held: the next request is refused.
    let upstream = || stack.envoy.stat("cluster.upstream.upstream_rq_active").unwrap_or(0) >= 1;
    assert!(common::eventually(Duration::from_secs(5), upstream), "the slow request never went upstream");
    assert_eq!(stack.send("GET", "/x", &h).status, 429);
    drop(s);
    stack.wait_until_gone();
    // Freed long before the upstream would have answered.
    assert_eq!(stack.send("GET", "/x", &h).status, 200);
    assert!(!stack.envoy.logs_tail(200).contains("panicked"));
}
