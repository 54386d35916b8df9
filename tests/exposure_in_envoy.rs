//! The counter service's shared secret end to end, in a real Envoy: the
//! service refuses callers without it, and the filter sends it from the
//! environment variable its policy names (`global.secret_env`, filled by
//! Envoy's `vm_config.environment_variables`), so no secret sits in a
//! policy file. A filter without the variable refuses the policy instead of
//! calling the service unauthenticated.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::gateway_per;
use wasm_test_harness::{Counter, CounterOptions, EchoServer, Envoy, EnvoyOptions, COUNTER_SECRET_ENV};

/// The gateway policy (hour windows) with the secret taken from the
/// environment.
fn policy_with_secret_env() -> String {
    let policy = gateway_per("1h");
    let with = policy.replacen(r#""global": {"#, &format!(r#""global": {{"secret_env": "{COUNTER_SECRET_ENV}", "#), 1);
    assert_ne!(with, policy);
    with
}

struct Secured {
    envoy: Envoy,
    _counter: Counter,
    _echo: EchoServer,
}

/// A counter service that requires `service_secret`, and an Envoy whose
/// environment holds `envoy_secret`.
fn start(service_secret: &str, envoy_secret: Option<&str>) -> Secured {
    let echo = EchoServer::start().unwrap();
    let counter = Counter::start(CounterOptions { secret: Some(service_secret.into()), ..Default::default() }).unwrap();
    let envoy = Envoy::start(EnvoyOptions {
        upstream_port: echo.port(),
        counter_port: counter.port(),
        policy_json: policy_with_secret_env(),
        counter_secret: envoy_secret.map(String::from),
        ..Default::default()
    })
    .unwrap();
    Secured { envoy, _counter: counter, _echo: echo }
}

fn tools_list(envoy: &Envoy, n: usize) -> usize {
    (0..n).filter(|_| wasm_test_harness::get(&envoy.url("/api/v1/tools/list"), &[("x-tenant-id", "s")]).unwrap().status == 200).count()
}

#[test]
fn the_filter_authenticates_with_the_secret_from_its_environment() {
    let s = start("s3cret-from-a-k8s-secret", Some("s3cret-from-a-k8s-secret"));
    assert_eq!(tools_list(&s.envoy, 8), 5);
    assert!(s.envoy.stat("cluster.sluice_counter.upstream_rq_200").unwrap_or(0) > 0, "no lease was granted");
    assert_eq!(s.envoy.stat("cluster.sluice_counter.upstream_rq_401").unwrap_or(0), 0);
}

#[test]
fn a_caller_without_the_right_secret_is_refused() {
    // The policy and the variable are there, the value is not the
    // service's: every call is refused, and the rules fall back.
    let s = start("the-service-secret", Some("a-guess"));
    tools_list(&s.envoy, 3);
    s.envoy
        .wait_for_stat("cluster.sluice_counter.upstream_rq_401", |v| v > 0, Duration::from_secs(5))
        .expect("the counter service refused the wrong secret with 401");
    // Nothing was granted: the service's own count of /v1 answers (Envoy's
    // upstream_rq_200 also counts the leader's probes of /readyz, which
    // need no secret and start once the calls are refused).
    assert_eq!(common::counter_metric(&s._counter, r#"sluice_counter_requests_total{status="200"}"#), 0);
    assert_eq!(common::counter_metric(&s._counter, "sluice_counter_leases_total"), 0);

    // And a direct call without it.
    let body = r#"{"leases": [{"rule": "r", "id": "i", "limit": 5, "window_ms": 1000, "want": 1}]}"#;
    let direct = wasm_test_harness::request("POST", &s._counter.url("/v1/reserve"), &[], body).unwrap();
    assert_eq!(direct.status, 401, "{}", direct.body);
}

#[test]
fn without_the_variable_the_policy_is_refused() {
    let s = start("the-service-secret", None);
    s.envoy
        .wait_for_stat("extension_config_discovery.http_filter.sluice.config_fail", |v| v >= 1, Duration::from_secs(5))
        .expect("the filter loaded a policy whose secret it cannot read");
    assert_eq!(s.envoy.stat("cluster.sluice_counter.upstream_rq_total").unwrap_or(0), 0, "called the service without the secret");
}
