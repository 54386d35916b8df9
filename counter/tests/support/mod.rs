//! Shared test helpers: calling the router in process, building request
//! bodies, and the Redis processes and fakes the store tests run against.
#![allow(dead_code)]

pub mod fake_redis;
pub mod redis_procs;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sluice_counter::{app, AppState, CounterStore, RedisStore, RedisTarget};
use tower::ServiceExt;

/// A router over `store` with a prefix no other test uses.
pub fn router(store: Arc<dyn CounterStore>) -> Router {
    app(state(store))
}

/// State over `store` with a unique prefix.
pub fn state(store: Arc<dyn CounterStore>) -> AppState {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut state = AppState::new(store);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    state.prefix = Arc::from(format!("t{}-{n}:", std::process::id()).as_str());
    state
}

/// A Redis store on `url` with `timeout_ms`.
pub fn redis_store(url: &str, timeout_ms: u64) -> Arc<dyn CounterStore> {
    let target = RedisTarget::Single(url.to_owned());
    Arc::new(RedisStore::new(&target, Duration::from_millis(timeout_ms)).expect("store"))
}

/// Sends one request; returns the status and the body (JSON, or a string).
pub async fn call(
    app: &Router,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(body.into()).expect("request");
    let res = app.clone().oneshot(req).await.expect("infallible");
    let status = res.status();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

/// `POST /v1/reserve` with a JSON body.
pub async fn reserve(app: &Router, body: &Value) -> (StatusCode, Value) {
    call(app, "POST", "/v1/reserve", &[], body.to_string()).await
}

/// One lease item.
pub fn lease(rule: &str, id: &str, limit: u64, window_ms: u64, want: u64, next: bool) -> Value {
    json!({"rule": rule, "id": id, "limit": limit, "window_ms": window_ms, "want": want, "next": next})
}

/// `lease` with `windows` consecutive windows.
pub fn span(mut lease: Value, windows: u64) -> Value {
    lease["windows"] = json!(windows);
    lease
}

/// A release item: `units` back in each of `windows` windows from `from`.
pub fn give_back(
    rule: &str,
    id: &str,
    limit: u64,
    window_ms: u64,
    units: u64,
    from: u64,
    windows: u64,
) -> Value {
    json!({"rule": rule, "id": id, "limit": limit, "window_ms": window_ms, "want": 0,
           "release": units, "from": from, "windows": windows})
}

/// A request body holding `leases`.
pub fn body(leases: Vec<Value>) -> Value {
    json!({"instance": "test", "leases": leases})
}

/// The fields of one lease result, sorted: every reply carries each.
pub const LEASE_REPLY_FIELDS: [&str; 9] = [
    "blocked_ms",
    "current_used",
    "ends_in_ms",
    "granted",
    "limit",
    "starts_in_ms",
    "used",
    "window",
    "windows",
];

/// `POST /v1/reserve` expecting 200; returns the lease results.
pub async fn reserve_ok(app: &Router, leases: Vec<Value>) -> (u64, Vec<Value>) {
    let (status, reply) = reserve(app, &body(leases)).await;
    assert_eq!(status, StatusCode::OK, "reply: {reply}");
    let now = reply["now_ms"].as_u64().expect("now_ms");
    let leases = reply["leases"].as_array().expect("leases").clone();
    for l in &leases {
        let mut fields: Vec<&String> = l.as_object().expect("object").keys().collect();
        fields.sort();
        assert_eq!(fields, LEASE_REPLY_FIELDS, "lease result {l}");
    }
    (now, leases)
}

/// `POST /v1/block` with a JSON body.
pub async fn block(app: &Router, body: &Value) -> (StatusCode, Value) {
    call(app, "POST", "/v1/block", &[], body.to_string()).await
}

/// One block item.
pub fn block_item(rule: &str, id: &str, for_ms: u64) -> Value {
    json!({"rule": rule, "id": id, "for_ms": for_ms})
}

/// A block request body holding `blocks`.
pub fn block_body(blocks: Vec<Value>) -> Value {
    json!({"instance": "test", "blocks": blocks})
}

/// `POST /v1/block` expecting 200; returns `now_ms` and the block results.
pub async fn block_ok(app: &Router, blocks: Vec<Value>) -> (u64, Vec<Value>) {
    let (status, reply) = block(app, &block_body(blocks)).await;
    assert_eq!(status, StatusCode::OK, "reply: {reply}");
    let now = reply["now_ms"].as_u64().expect("now_ms");
    let blocks = reply["blocks"].as_array().expect("blocks").clone();
    for b in &blocks {
        let fields: Vec<&String> = b.as_object().expect("object").keys().collect();
        assert_eq!(fields, ["blocked_ms"], "block result {b}");
    }
    (now, blocks)
}

/// Polls `check` every 50 ms until it holds or `within` passes; returns the
/// time it took, or None.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}
