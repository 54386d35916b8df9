//! The shared secret, configured the way the binary configures it (flags
//! and environment into `Args::state`), checked in process: without a
//! secret the service does not start unless told to serve anyone, and with
//! one an unauthenticated call is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: failing loudly is the point.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use clap::Parser;
use sluice_counter::app;
use sluice_counter::config::{Args, StartError};
use tower::ServiceExt;

fn args(argv: &[&str]) -> Args {
    let mut args =
        Args::try_parse_from(std::iter::once("sluice-counter").chain(argv.iter().copied()))
            .unwrap();
    // Whatever the test process's environment holds.
    args.secret = None;
    args
}

async fn reserve(router: axum::Router, secret: Option<&str>) -> StatusCode {
    let mut req = Request::post("/v1/reserve").header("content-type", "application/json");
    if let Some(s) = secret {
        req = req.header("x-sluice-secret", s);
    }
    let body =
        r#"{"leases": [{"rule": "r", "id": "i", "limit": 5, "window_ms": 1000, "want": 1}]}"#;
    router
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn no_secret_no_service() {
    assert!(matches!(args(&[]).state(), Err(StartError::NoSecret)));
    let open = args(&["--insecure-no-secret"]).state().unwrap();
    assert_eq!(reserve(app(open), None).await, StatusCode::OK);
}

#[tokio::test]
async fn an_unauthenticated_call_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, "mounted\n").unwrap();
    let from_file = args(&["--secret-file", file.to_str().unwrap()]);
    let mut from_env = args(&[]);
    from_env.secret = Some("mounted".into());
    for a in [from_file, from_env] {
        let state = a.state().unwrap();
        assert_eq!(
            reserve(app(state.clone()), None).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            reserve(app(state.clone()), Some("Mounted")).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(reserve(app(state), Some("mounted")).await, StatusCode::OK);
    }
}
