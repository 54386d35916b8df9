//! Adaptive limits in real Envoy: the effective limit of a rule drops when
//! the upstream slows down or fails, shows in the rate-limit headers and
//! the log, and climbs back when the upstream recovers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Stack;

const POLICY: &str = r#"{"rules": [{"name": "search", "match": {"paths": [{"prefix": "/search"}]},
    "limit": {"requests": 20, "per": "1s"},
    "adaptive": {"floor": 4, "latency": {"percentile": 90, "above": "150ms"}, "errors": 0.2,
                 "interval": "1s", "increase": 4, "min_samples": 5}}]}"#;

/// Sends requests at `per_second` for `secs`, each with `headers`, from
/// their own threads; returns the `x-ratelimit-limit` of every admitted
/// answer in the order they were sent.
fn traffic(stack: &Stack, per_second: u64, secs: u64, headers: &[(&'static str, &'static str)]) -> Vec<(u16, Option<u64>)> {
    let gap = Duration::from_millis(1000 / per_second);
    let threads: Vec<_> = (0..per_second * secs)
        .map(|_| {
            let url = stack.envoy.url("/search");
            let headers = headers.to_vec();
            let t = std::thread::spawn(move || {
                let r = wasm_test_harness::request("GET", &url, &headers, "").unwrap();
                (r.status, r.header("x-ratelimit-limit").and_then(|v| v.parse().ok()))
            });
            std::thread::sleep(gap);
            t
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn last_limit(answers: &[(u16, Option<u64>)]) -> u64 {
    answers.iter().rev().find_map(|(_, l)| *l).expect("an admitted answer with headers")
}

#[test]
fn a_slow_upstream_lowers_the_limit_and_a_healthy_one_raises_it_back() {
    let stack = Stack::start(POLICY);
    // Healthy: the configured limit.
    let healthy = traffic(&stack, 10, 2, &[]);
    assert_eq!(last_limit(&healthy), 20, "{healthy:?}");
    // Every answer takes 300 ms: the limit is cut (halved per interval).
    let slow = traffic(&stack, 10, 3, &[("x-echo-delay-ms", "300")]);
    let low = last_limit(&slow);
    println!("slow upstream: effective limit {low}");
    assert!((4..=10).contains(&low), "{slow:?}");
    let log = stack.envoy.logs_tail(400);
    assert!(log.contains("rule search: effective limit lowered from 20 to 10 per 1 second"), "{log}");
    // Fast again: the limit climbs back (by 4 per half-interval) to 20.
    let start = Instant::now();
    let mut recovered = false;
    while start.elapsed() < Duration::from_secs(10) && !recovered {
        recovered = last_limit(&traffic(&stack, 8, 1, &[])) == 20;
    }
    assert!(recovered, "back to 20 within 10 s");
    assert!(stack.envoy.logs_tail(400).contains("rule search: effective limit raised"));
}

#[test]
fn a_failing_upstream_lowers_the_limit_and_it_is_enforced() {
    let stack = Stack::start(POLICY);
    // 503s: more than 20 % 5xx.
    let failing = traffic(&stack, 10, 3, &[("x-echo-status", "503")]);
    assert!(failing.iter().any(|(s, _)| *s == 503), "{failing:?}");
    let low = last_limit(&failing);
    assert!(low <= 10, "{failing:?}");
    // The lowered limit holds: a burst of 20 gets about `low` through.
    let admitted = stack.admitted(20, "GET", "/search", &[]);
    assert!(admitted as u64 <= low + 2, "admitted {admitted} with the limit at {low}");
}
