//! Accuracy of global limits when several rules bind at once, in real
//! Envoy: 3 instances × 2 workers sharing one counter service and one real
//! Redis, the default policy. The allocation itself is tested natively in
//! `core/tests/accuracy.rs`; this checks that the filter, the leader's
//! calls and the service keep it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{align_to_second, Cluster};
use wasm_test_harness::{CounterOptions, Redis, RequestSpec};

/// `tools-invoke`'s limit in the default policy (per tenant and second);
/// `per-tenant` (100/s) applies to the same requests.
const INVOKE_LIMIT: u64 = 20;
const WINDOWS: u64 = 10;

/// Offers `rate` requests/s of `spec` to every instance for `span`; returns
/// the 200s.
fn offer(cluster: &Cluster, rate: f64, span: Duration, spec: &RequestSpec) -> u64 {
    cluster
        .offer(rate, span, spec)
        .into_iter()
        .map(|r| {
            assert_eq!(r.errors, 0, "{r:?}");
            assert!(r.statuses.keys().all(|s| *s == 200 || *s == 429), "{r:?}");
            r.count(200)
        })
        .sum()
}

#[test]
fn a_tenant_flooding_tools_invoke_gets_its_limit_although_per_tenant_applies_too() {
    let redis = Redis::start().unwrap();
    // Patient, so that a loaded machine's slow calls do not send the rules
    // to their fallback; the service waits for Redis as long.
    let counter = CounterOptions { redis_url: Some(redis.url()), redis_timeout_ms: Some(900), ..Default::default() };
    let cluster = Cluster::start(&common::patient(common::GATEWAY), 3, counter);
    let mut spec = RequestSpec::get("/api/v1/tools/invoke");
    spec.method = "POST".into();
    for times in [10, 50] {
        let first = flood(&cluster, &spec, &format!("flood-{times}"), times);
        // The whole suite shares this machine's 2 cores in CI: a window in
        // which the instances' leaders and the load generator were starved
        // can fall short (seen once in three runs, and with two of these
        // tests run at once). Measured once more then, with a fresh tenant;
        // both runs are printed, and the second must hold. `make bench`
        // (scenario `accuracy`) holds the figures on a machine left to
        // Envoy.
        if let Err(why) = acceptable(times, &first) {
            println!("{times}x: {why}; measuring again");
            let again = flood(&cluster, &spec, &format!("flood-{times}-again"), times);
            acceptable(times, &again).unwrap();
        }
    }
}

/// Floods `tools/invoke` as `tenant` at `times` its limit, a third at each
/// instance: a window of warm-up, then each window measured on its own,
/// from just after it starts to just before it ends. Admissions per window.
fn flood(cluster: &Cluster, spec: &RequestSpec, tenant: &str, times: u64) -> Vec<u64> {
    let spec = spec.clone().header("x-tenant-id", tenant);
    // Round robin in effect: every instance gets a third.
    let rate = (INVOKE_LIMIT * times) as f64 / cluster.envoys.len() as f64;
    align_to_second();
    offer(cluster, rate, Duration::from_millis(950), &spec);
    let calls_before = cluster.counter_calls();
    let windows: Vec<u64> = (0..WINDOWS)
        .map(|_| {
            align_to_second();
            offer(cluster, rate, common::until_in_second(940), &spec)
        })
        .collect();
    let calls = cluster.counter_calls() - calls_before;
    let (admitted, allowed) = (windows.iter().sum::<u64>(), INVOKE_LIMIT * WINDOWS);
    println!(
        "{times}x tools-invoke: admitted {windows:?} = {admitted} of {allowed} allowed ({:.1} %), {calls} counter calls ({:.3} per admitted)",
        100.0 * admitted as f64 / allowed as f64,
        calls as f64 / admitted.max(1) as f64
    );
    windows
}

/// Never more than the limit a window (a unit spent a call's latency after
/// its window ended may count in the next); at least 95 % over the run,
/// and no window under half. When requests another rule refused counted in
/// a rule's demand, this admitted 180 and 80 of 200, with whole windows
/// at 0.
fn acceptable(times: u64, windows: &[u64]) -> Result<(), String> {
    let (admitted, allowed) = (windows.iter().sum::<u64>(), INVOKE_LIMIT * WINDOWS);
    if admitted > allowed + 2 {
        return Err(format!("{times}x: admitted {admitted} of {allowed}"));
    }
    if admitted * 20 < allowed * 19 || windows.iter().any(|w| *w * 2 < INVOKE_LIMIT) {
        return Err(format!("{times}x: admitted {admitted} of {allowed}: {windows:?}"));
    }
    Ok(())
}
