//! Redis misbehaving: down and back (the service answers 503 meanwhile and
//! recovers by itself), too slow (503 within about the timeout), or replying
//! garbage (503, never a made-up grant).
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: failing loudly is the point.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use support::fake_redis::FakeRedis;
use support::redis_procs::{debug_server, Server};
use support::{
    block, block_body, block_item, body, call, eventually, lease, redis_store, reserve, router,
};

fn one() -> serde_json::Value {
    body(vec![lease("r", "i", 1_000_000, 60_000, 1, false)])
}

/// A service whose calls to a Redis of its own give up after `timeout_ms`,
/// checked to serve; then that Redis frozen for `secs` from another
/// connection. The second value keeps Redis running.
async fn frozen(
    timeout_ms: u64,
    secs: f64,
) -> (axum::Router, (tempfile::TempDir, Server, TcpStream)) {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = debug_server(dir.path());
    let app = router(redis_store(&redis.url(), timeout_ms));
    assert_eq!(reserve(&app, &one()).await.0, StatusCode::OK);
    let mut other = TcpStream::connect(("127.0.0.1", redis.port)).expect("connect");
    other
        .write_all(format!("DEBUG SLEEP {secs}\r\n").as_bytes())
        .expect("send");
    std::thread::sleep(Duration::from_millis(30));
    (app, (dir, redis, other))
}

/// One reservation, with the time its answer took.
async fn timed_reserve(app: &axum::Router) -> (StatusCode, serde_json::Value, Duration) {
    let started = Instant::now();
    let (status, reply) = reserve(app, &one()).await;
    (status, reply, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_redis_gives_503_and_recovery_needs_no_restart() {
    let mut redis = wasm_test_harness::Redis::start().expect("redis");
    let app = router(redis_store(&redis.url(), 40));
    assert_eq!(reserve(&app, &one()).await.0, StatusCode::OK);

    redis.kill();
    let blocks = block_body(vec![block_item("r", "i", 1_000)]);
    let (status, reply) = block(&app, &blocks).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{reply}");
    for _ in 0..5 {
        let started = Instant::now();
        let (status, reply) = reserve(&app, &one()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{reply}");
        let error = reply["error"].as_str().expect("error");
        assert!(error.starts_with("store unavailable: "), "{error}");
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
    }
    let (status, _) = call(&app, "GET", "/readyz", &[], "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        call(&app, "GET", "/healthz", &[], "").await.0,
        StatusCode::OK
    );

    redis.restart().expect("restart");
    let took = eventually(Duration::from_secs(5), || async {
        reserve(&app, &one()).await.0 == StatusCode::OK
    })
    .await;
    let took = took.expect("no recovery within 5 s after Redis came back");
    eprintln!("recovered {took:?} after Redis restarted");
    assert_eq!(
        call(&app, "GET", "/readyz", &[], "").await.0,
        StatusCode::OK
    );
    let (_, metrics) = call(&app, "GET", "/metrics", &[], "").await;
    let metrics = metrics.as_str().expect("text");
    assert!(
        metrics.contains("sluice_counter_requests_total{status=\"503\"}"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("sluice_counter_store_errors_total 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_redis_gives_503_within_the_timeout() {
    let (app, _redis) = frozen(40, 0.3).await;
    let (status, reply, took) = timed_reserve(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{reply}");
    assert_eq!(
        reply["error"],
        "store unavailable: Redis did not answer within 40 ms"
    );
    assert!(
        took >= Duration::from_millis(35),
        "answered before the timeout: {took:?}"
    );
    assert!(
        took < Duration::from_millis(150),
        "not bounded by the timeout: {took:?}"
    );
    let started = Instant::now();
    let (status, _) = call(&app, "GET", "/readyz", &[], "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_millis(150));

    let took = eventually(Duration::from_secs(2), || async {
        reserve(&app, &one()).await.0 == StatusCode::OK
    })
    .await;
    assert!(
        took.is_some(),
        "Redis awake again but the service still fails"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_timeout_is_waited_out_in_full() {
    // A Redis slower than the client library's own default (500 ms) but
    // within the configured timeout still answers: giving up earlier would
    // leave units counted in Redis that no caller receives.
    let (app, _redis) = frozen(2_000, 0.9).await;
    let (status, reply, took) = timed_reserve(&app).await;
    assert_eq!(status, StatusCode::OK, "after {took:?}: {reply}");
    assert_eq!(reply["leases"][0]["granted"], 1, "{reply}");
    assert!(
        took >= Duration::from_millis(600),
        "Redis did not sleep: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_replies_give_503() {
    let fake = FakeRedis::start();
    let app = router(redis_store(&fake.url(), 500));
    let (status, reply) = reserve(&app, &one()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{reply}");
    let error = reply["error"].as_str().expect("error");
    assert!(
        error.starts_with("store unavailable: unexpected reply from Redis"),
        "{error}"
    );
    let blocks = block_body(vec![block_item("r", "i", 1_000)]);
    let (status, reply) = block(&app, &blocks).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{reply}");
    let error = reply["error"].as_str().expect("error");
    assert!(
        error.starts_with("store unavailable: unexpected reply from Redis"),
        "{error}"
    );
    assert_eq!(
        call(&app, "GET", "/readyz", &[], "").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn starting_without_redis_is_fine_and_connects_later() {
    let mut redis = wasm_test_harness::Redis::start().expect("redis");
    redis.kill();
    let app = router(redis_store(&redis.url(), 40));
    assert_eq!(
        reserve(&app, &one()).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    redis.restart().expect("restart");
    let took = eventually(Duration::from_secs(5), || async {
        reserve(&app, &one()).await.0 == StatusCode::OK
    })
    .await;
    assert!(took.is_some(), "never connected after Redis started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_node_lost_and_back_gives_503_then_recovers() {
    let mut cluster = support::redis_procs::Cluster::start();
    let target = sluice_counter::RedisTarget::Cluster(cluster.urls());
    let store = sluice_counter::RedisStore::new(&target, Duration::from_millis(40)).expect("store");
    let app = router(std::sync::Arc::new(store));
    // Ids spread over the three nodes' slots.
    let spread = || {
        body(
            (0..12)
                .map(|i| lease("r", &format!("id{i}"), 1_000_000, 60_000, 1, false))
                .collect(),
        )
    };
    let ok = eventually(Duration::from_secs(5), || async {
        reserve(&app, &spread()).await.0 == StatusCode::OK
    })
    .await;
    assert!(ok.is_some(), "cluster never served");

    cluster.nodes[0].kill();
    let started = Instant::now();
    let (status, reply) = reserve(&app, &spread()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{reply}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );

    cluster.nodes[0].restart();
    let took = eventually(Duration::from_secs(10), || async {
        reserve(&app, &spread()).await.0 == StatusCode::OK
    })
    .await;
    let took = took.expect("no recovery within 10 s after the node came back");
    eprintln!("cluster recovered {took:?} after the node restarted");
}
