//! The load generator against the echo server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use wasm_test_harness::{load, EchoServer, LoadOptions, RequestSpec};

#[test]
fn total_requests_with_per_index_specs() {
    let echo = EchoServer::start().unwrap();
    let report = load(LoadOptions {
        port: echo.port(),
        connections: 8,
        total: Some(2000),
        request: Arc::new(|i| {
            let status = if i % 4 == 0 { "429" } else { "200" };
            RequestSpec::get(&format!("/r/{i}")).header("x-echo-status", status)
        }),
        ..LoadOptions::default()
    })
    .unwrap();
    assert_eq!(report.errors, 0);
    assert_eq!(report.responses(), 2000);
    assert_eq!(report.count(429), 500);
    assert_eq!(report.count(200), 1500);
    assert!(report.p50_us > 0 && report.p50_us <= report.p99_us && report.p99_us <= report.max_us);
    eprintln!(
        "echo: {:.0} req/s, p50 {} us, p99 {} us",
        report.rps(),
        report.p50_us,
        report.p99_us
    );
}

#[test]
fn duration_bound_stops_by_itself() {
    let echo = EchoServer::start().unwrap();
    let report = load(LoadOptions {
        port: echo.port(),
        connections: 4,
        duration: Some(Duration::from_millis(500)),
        ..LoadOptions::default()
    })
    .unwrap();
    assert!(
        report.elapsed < Duration::from_secs(2),
        "{:?}",
        report.elapsed
    );
    assert!(report.responses() > 100);
}

#[test]
fn rate_is_paced() {
    let echo = EchoServer::start().unwrap();
    let report = load(LoadOptions {
        port: echo.port(),
        connections: 4,
        total: Some(100),
        rate: Some(200.0),
        ..LoadOptions::default()
    })
    .unwrap();
    assert_eq!(report.responses(), 100);
    // 100 requests at 200/s take about half a second.
    assert!(
        report.elapsed >= Duration::from_millis(450),
        "{:?}",
        report.elapsed
    );
    assert!(
        report.elapsed < Duration::from_secs(3),
        "{:?}",
        report.elapsed
    );
}

#[test]
fn rate_with_duration_stops_at_the_deadline() {
    let echo = EchoServer::start().unwrap();
    let report = load(LoadOptions {
        port: echo.port(),
        connections: 2,
        duration: Some(Duration::from_millis(300)),
        rate: Some(100.0),
        ..LoadOptions::default()
    })
    .unwrap();
    assert!(
        (25..=35).contains(&report.responses()),
        "{}",
        report.responses()
    );
}

#[test]
fn connection_failures_are_errors() {
    // A port held by a socket that is bound but not listening: connections
    // to it are refused, and no other test's server can be given it (a
    // port only known to be free was, once, by an echo server's).
    let held = tokio::net::TcpSocket::new_v4().unwrap();
    held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = held.local_addr().unwrap().port();
    let report = load(LoadOptions {
        port,
        connections: 2,
        total: Some(10),
        ..LoadOptions::default()
    })
    .unwrap();
    assert_eq!(report.errors, 10);
    assert_eq!(report.responses(), 0);
}

#[test]
fn needs_a_bound() {
    assert!(load(LoadOptions {
        port: 1,
        ..LoadOptions::default()
    })
    .is_err());
    assert!(load(LoadOptions {
        port: 1,
        total: Some(1),
        connections: 0,
        ..LoadOptions::default()
    })
    .is_err());
}
