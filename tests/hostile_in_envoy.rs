//! Hostile clients and upstreams in real Envoy: an upstream answer with a
//! header that is not UTF-8, tenant ids longer than the counter service
//! takes, HTTP/2 requests that end with trailers, and a client that
//! retries without pause. Each must get a safe decision and leave the
//! filter working for everyone else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::{Cluster, Stack};
use hyper::body::Frame;
use wasm_test_harness::CounterOptions;

/// The gateway policy without queues, so that refusals are immediate.
fn unqueued() -> String {
    common::patient(common::GATEWAY).replace(",\n     \"queue\": {\"max_wait\": \"2s\"}", "")
}

#[test]
fn a_client_retrying_without_pause_is_refused_from_memory_with_the_same_retry_after() {
    let stack = Stack::with_workers(
        r#"{"rules": [
        {"name": "per-user", "key": [{"header": "x-user"}], "limit": {"requests": 1000, "per": "1s"}},
        {"name": "export", "match": {"paths": [{"exact": "/export"}]}, "key": [{"header": "x-user"}], "limit": {"requests": 2, "per": "1h"}}]}"#,
        2,
    );
    let ann = [("x-user", "ann")];
    let mut retry_after = Vec::new();
    for _ in 0..300 {
        let r = stack.get("/export", &ann);
        if r.status == 429 {
            assert_eq!(r.json().unwrap()["limits"]["tier"], "export", "{}", r.body);
            retry_after.push(r.header("retry-after").unwrap().parse::<u64>().unwrap());
        }
    }
    assert_eq!(retry_after.len(), 298, "two an hour");
    // The next unit is half an hour away (plus the jitter of up to 5 s),
    // whether the slot or a worker's memory of it says so.
    assert!(retry_after.iter().all(|s| (1795..=1806).contains(s)), "{retry_after:?}");
    // Each worker reads the slot again 100 ms after its last read at most
    // (its counters reach Envoy every 100 ms).
    let remembered = || common::rule_stat(&stack.envoy, "sluice_worker_memory_refused_total", "_rule.export;").unwrap_or(0);
    common::eventually(Duration::from_secs(5), || remembered() > 100);
    let remembered = remembered();
    assert!(remembered > 100 && remembered < 298, "{remembered} of 298 refusals from memory");
    // Everyone else is untouched.
    assert_eq!(stack.get("/export", &[("x-user", "bob")]).status, 200);
}

#[test]
fn an_upstream_header_that_is_not_utf8_does_not_take_a_worker_down() {
    // One worker: the request that meets the bad header and the ones after
    // it run in the same VM.
    let stack = Stack::with_workers(&unqueued(), 1);
    let bad = stack.send(
        "POST",
        "/api/v1/tools/invoke",
        &[
            ("x-tenant-id", "victim"),
            ("x-integration", "notion"),
            ("x-echo-status", "429"),
            ("x-echo-header", "x-bad=%FF%FE"),
            ("x-echo-header", "retry-after=%FF"),
        ],
    );
    assert_eq!(bad.status, 429, "the upstream's own answer: {}", bad.body);
    // The filter went on: other tenants pass, and the filter still counts.
    for i in 0..5 {
        let r = stack.get("/api/v1/tools/list", &[("x-tenant-id", "after")]);
        assert_eq!(r.status, 200, "request {i} after the bad header: {}", r.body);
        assert!(r.header("x-ratelimit-limit").is_some(), "the filter still adds its headers");
    }
    assert_eq!(stack.get("/api/v1/tools/list", &[("x-tenant-id", "after")]).status, 429);
    // A 429 with a bad header and a readable Retry-After still holds the
    // integration back for that tenant.
    let r = stack.send(
        "POST",
        "/api/v1/tools/invoke",
        &[("x-tenant-id", "held"), ("x-integration", "notion"), ("x-echo-status", "429"), ("x-echo-header", "x-bad=%FF"), ("x-echo-header", "retry-after=30")],
    );
    assert_eq!(r.status, 429);
    let held = stack.send("POST", "/api/v1/tools/invoke", &[("x-tenant-id", "held"), ("x-integration", "notion")]);
    assert_eq!(held.status, 429, "held back by the upstream's Retry-After");
    assert_eq!(held.json().unwrap()["limits"]["tier"], "integration-notion");
    assert!(!stack.envoy.logs_tail(200).contains("panicked"), "{}", stack.envoy.logs_tail(50));
}

#[test]
fn a_tenant_id_longer_than_the_service_takes_leaves_other_tenants_exact() {
    let cluster = Cluster::start(&common::patient(common::GATEWAY), 1, CounterOptions::default());
    let envoy = &cluster.envoys[0];
    let send = |tenant: &str| wasm_test_harness::get(&envoy.url("/api/v1/tools/list"), &[("x-tenant-id", tenant)]).unwrap();
    let long = "x".repeat(1100);
    // Rounds of the long tenant beside an ordinary one: the ordinary
    // tenant's global rules stay enforced exactly (5 a second for
    // tools-list), never handed to the fallback.
    for round in 0..3 {
        common::align_to_second();
        for _ in 0..3 {
            assert_ne!(send(&long).status, 503, "a long tenant gets a decision");
        }
        let tenant = format!("ordinary-{round}");
        let statuses: Vec<u16> = (0..7).map(|_| send(&tenant).status).collect();
        assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429], "round {round}");
    }
    let stats = envoy.stats().unwrap();
    let degraded = stats.iter().find(|(k, _)| k.contains("sluice_degraded")).map(|(_, v)| *v);
    assert_ne!(degraded, Some(1), "the counter service was never taken for down");
    let log = envoy.logs_tail(400);
    assert!(!log.contains("counter service unreachable"), "{log}");
    assert!(!log.contains("refused a reserve call"), "no call was refused: {log}");
    // The long tenant's own limit is counted like any other.
    std::thread::sleep(Duration::from_millis(1100));
    let statuses: Vec<u16> = (0..7).map(|_| send(&long).status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 5, "{statuses:?}");
}

/// A rule charging the body's `n` against 1 a second.
const BY_BODY: &str = r#"{"read_body": true, "rules": [
    {"name": "by-body", "match": {"paths": [{"prefix": "/b"}]}, "key": [], "limit": {"requests": 1, "per": "1h"},
     "cost": {"body": "n", "max": 1}}
]}"#;

#[test]
fn http2_requests_that_end_with_trailers_are_decided() {
    let stack = Stack::start(BY_BODY);
    let port = stack.envoy.port();
    let with_trailers = h2_posts(port, 10, true);
    assert_eq!(with_trailers.iter().filter(|s| **s == 200).count(), 1, "{with_trailers:?}");
    assert_eq!(with_trailers.iter().filter(|s| **s == 429).count(), 9, "{with_trailers:?}");
    let without = h2_posts(port, 5, false);
    assert_eq!(without, [429; 5]);
}

/// `n` HTTP/2 (prior knowledge) POSTs to `/b` on one connection, each with
/// a JSON body and, if `trailers`, a trailer block after it; their statuses.
fn h2_posts(port: u16, n: usize, trailers: bool) -> Vec<u16> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn);
        let mut statuses = Vec::new();
        for _ in 0..n {
            let mut frames = VecDeque::from([Frame::data(Bytes::from_static(br#"{"n": 1}"#))]);
            if trailers {
                let mut t = hyper::HeaderMap::new();
                t.insert("x-checksum", hyper::header::HeaderValue::from_static("abc"));
                frames.push_back(Frame::trailers(t));
            }
            let req = hyper::Request::post(format!("http://127.0.0.1:{port}/b")).header("content-type", "application/json").body(Frames(frames)).unwrap();
            let r = tokio::time::timeout(Duration::from_secs(10), send.send_request(req)).await.unwrap().unwrap();
            statuses.push(r.status().as_u16());
        }
        statuses
    })
}

/// A request body sent as the given frames.
struct Frames(VecDeque<Frame<Bytes>>);

impl hyper::body::Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
}
