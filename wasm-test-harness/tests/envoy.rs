//! Envoy lifecycle with whatever filter `SLUICE_WASM` (or the default build
//! path) provides. Needs Envoy and a built filter: `make test` installs and
//! builds both first.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasm_test_harness::{get, load, EchoServer, Envoy, EnvoyOptions, LoadOptions, RequestSpec};

const STAT_OK: &str = "extension_config_discovery.http_filter.sluice.update_success";

fn policy() -> String {
    std::env::var("SLUICE_TEST_POLICY").unwrap_or_else(|_| r#"{"rules":[]}"#.to_string())
}

#[test]
fn start_proxy_reload_stop() {
    let echo = EchoServer::start().unwrap();
    let t = Instant::now();
    let envoy = Envoy::start(EnvoyOptions {
        upstream_port: echo.port(),
        policy_json: policy(),
        ..EnvoyOptions::default()
    })
    .unwrap();
    eprintln!("envoy live after {:?}", t.elapsed());
    assert!(envoy.run_dir().join("config_dump.json").is_file());
    assert_ne!(envoy.admin_port(), 0);

    let r = get(&envoy.url("/hello?x=1"), &[("x-echo-status", "201")]).unwrap();
    assert_eq!(r.status, 201);
    assert_eq!(r.header("server"), Some("envoy"));
    assert_eq!(r.json().unwrap()["path"], "/hello?x=1");

    let before = envoy
        .wait_for_stat(STAT_OK, |v| v >= 1, Duration::from_secs(5))
        .unwrap();
    envoy.apply_policy(&policy()).unwrap();
    envoy
        .wait_for_stat(STAT_OK, |v| v > before, Duration::from_secs(5))
        .unwrap();
    assert!(envoy.stats().unwrap().contains_key("server.live"));
    assert!(envoy.rss_bytes().unwrap() > 1 << 20);

    let admin = envoy.admin_url("/ready");
    envoy.stop();
    assert!(get(&admin, &[]).is_err());
}

#[test]
fn load_through_envoy_one_worker() {
    let echo = EchoServer::start().unwrap();
    let envoy = Envoy::start(EnvoyOptions {
        upstream_port: echo.port(),
        policy_json: policy(),
        concurrency: 1,
        log_level: "warn".into(),
        ..EnvoyOptions::default()
    })
    .unwrap();
    let report = load(LoadOptions {
        port: envoy.port(),
        connections: 32,
        duration: Some(Duration::from_secs(3)),
        request: Arc::new(|i| RequestSpec::get(&format!("/api/{}", i % 16))),
        ..LoadOptions::default()
    })
    .unwrap();
    eprintln!(
        "through envoy: {:.0} req/s, statuses {:?}, errors {}, p50 {} us, p99 {} us",
        report.rps(),
        report.statuses,
        report.errors,
        report.p50_us,
        report.p99_us
    );
    assert_eq!(report.errors, 0);
}

#[test]
fn missing_filter_is_a_clear_error() {
    let err = Envoy::start(EnvoyOptions {
        wasm: Some("/nonexistent/sluice.wasm".into()),
        ..EnvoyOptions::default()
    })
    .err()
    .unwrap();
    assert!(err.to_string().contains("not found"), "{err}");
}

#[test]
fn early_exit_reports_envoy_log() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("bad.yaml");
    std::fs::write(&template, "admin: {address: {socket_address: {address: 127.0.0.1, port_value: {{ADMIN_PORT}}}}}\nbogus_field: {{PORT}}\n").unwrap();
    let err = Envoy::start(EnvoyOptions {
        template,
        ..EnvoyOptions::default()
    })
    .err()
    .unwrap();
    let msg = format!("{err:#}");
    assert!(msg.contains("exited"), "{msg}");
    assert!(msg.contains("bogus_field"), "{msg}");
}
