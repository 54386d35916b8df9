//! The instance's leader in real Envoy: the asks of one round of lease
//! work go out at most `ASKS_PER_TICK` (64) a tick, so that no call's
//! answer holds the leader's thread for long (`sluice_core::limiter::Outbox`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{counter_metric, eventually, Cluster};
use sluice_core::limiter::ASKS_PER_TICK;
use wasm_test_harness::{load, CounterOptions, LoadOptions, Redis, RequestSpec};

#[test]
fn many_cold_keys_at_once_are_asked_for_in_calls_of_at_most_64_asks() {
    let redis = Redis::start().unwrap();
    let policy = r#"{"global": {"expected_instances": 1, "timeout": "50ms"}, "tenant": [{"header": "x-tenant-id"}], "rules": [
        {"name": "per-tenant", "scope": "global", "key": ["tenant"], "limit": {"requests": 100, "per": "1s"}}]}"#;
    let cluster = Cluster::start(policy, 1, CounterOptions { redis_url: Some(redis.url()), ..Default::default() });
    // 400 tenants, one request each, as fast as the load goes: each is
    // admitted on credit, and its refill goes through the leader, whose
    // rounds (every 50 ms) gather far more than 64 of them.
    let keys = 400u64;
    let report = load(LoadOptions {
        port: cluster.envoys[0].port(),
        connections: 16,
        total: Some(keys),
        request: Arc::new(|n| RequestSpec::get("/api/v1/items").header("x-tenant-id", &format!("cold-{n}"))),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(report.count(200), keys, "{report:?}");
    let leases = || counter_metric(&cluster.counter, "sluice_counter_leases_total");
    assert!(eventually(Duration::from_secs(3), || leases() >= keys), "{} leases of {keys} keys", leases());
    let calls = counter_metric(&cluster.counter, r#"sluice_counter_requests_total{status="200"}"#);
    println!("{keys} cold keys in {:?}: {} leases in {calls} calls", report.elapsed, leases());
    let most = u64::try_from(ASKS_PER_TICK).unwrap();
    assert!(calls.saturating_mul(most) >= leases(), "{} leases in {calls} calls: more than {most} a call", leases());
}
