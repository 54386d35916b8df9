//! The echo server's protocol, through the blocking HTTP client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use wasm_test_harness::{get, request, EchoServer};

#[test]
fn echoes_method_path_and_headers() {
    let echo = EchoServer::start().unwrap();
    let r = get(
        &format!("{}/a/b?x=1&y=2", echo.url()),
        &[
            ("X-Forwarded-For", "10.0.0.1, 10.0.0.2"),
            ("Host", "example.test"),
        ],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let j = r.json().unwrap();
    assert_eq!(j["method"], "GET");
    assert_eq!(j["path"], "/a/b?x=1&y=2");
    assert_eq!(j["headers"]["x-forwarded-for"], "10.0.0.1, 10.0.0.2");
    assert_eq!(j["headers"]["host"], "example.test");
}

#[test]
fn default_host_and_post_body() {
    let echo = EchoServer::start().unwrap();
    let r = request("POST", &format!("{}/p", echo.url()), &[], "hello").unwrap();
    let j = r.json().unwrap();
    assert_eq!(j["method"], "POST");
    assert_eq!(j["headers"]["host"], format!("127.0.0.1:{}", echo.port()));
    assert_eq!(j["headers"]["content-length"], "5");
}

#[test]
fn status_and_extra_headers() {
    let echo = EchoServer::start().unwrap();
    let r = get(
        &echo.url(),
        &[
            ("x-echo-status", "429"),
            ("x-echo-header", "retry-after=7"),
            ("x-echo-header", "X-Custom = a=b"),
            ("x-echo-header", "broken"),
        ],
    )
    .unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(r.header("x-custom"), Some("a=b"));
    assert!(r.headers.iter().all(|(n, _)| n == &n.to_lowercase()));
}

#[test]
fn bad_status_is_ignored() {
    let echo = EchoServer::start().unwrap();
    assert_eq!(
        get(&echo.url(), &[("x-echo-status", "abc")])
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        get(&echo.url(), &[("x-echo-status", "1000")])
            .unwrap()
            .status,
        200
    );
}

#[test]
fn delay() {
    let echo = EchoServer::start().unwrap();
    let t = Instant::now();
    get(&echo.url(), &[("x-echo-delay-ms", "300")]).unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
}

#[test]
fn stops_on_drop() {
    let echo = EchoServer::start().unwrap();
    let url = echo.url();
    get(&url, &[]).unwrap();
    drop(echo);
    assert!(get(&url, &[]).is_err());
}

#[test]
fn client_works_inside_a_runtime() {
    let echo = EchoServer::start().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let status = rt.block_on(async { get(&echo.url(), &[]).unwrap().status });
    assert_eq!(status, 200);
}

#[test]
fn rejects_non_http_urls() {
    assert!(get("https://127.0.0.1:1/", &[]).is_err());
    assert!(get("not a url", &[]).is_err());
}
