//! Shared set-up for the tests that run the filter in a real Envoy: an echo
//! upstream plus one Envoy loading `sluice.wasm` through ECDS, both torn down
//! on drop (with Envoy's log printed when a test fails).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use wasm_test_harness::{load_each, Counter, CounterOptions, EchoServer, Envoy, EnvoyOptions, LoadReport, RequestSpec, Response};

pub const GATEWAY: &str = include_str!("../../policies/mcp-gateway.json");

/// `policy` (the gateway's, or one derived from it) with a counter-service
/// timeout that a busy test machine keeps: tests run side by side, and one
/// timed-out reserve call puts an instance in fallback mode for a second.
pub fn patient(policy: &str) -> String {
    let patient = policy.replace(r#""timeout": "50ms""#, r#""timeout": "1s""#);
    assert_ne!(patient, policy, "the policy names no 50ms timeout");
    patient
}

/// Replaces `envoy`'s policy through ECDS and waits until Envoy has taken
/// it (its second accepted configuration).
pub fn reload(envoy: &Envoy, policy: &str) {
    envoy.apply_policy(policy).unwrap();
    envoy.wait_for_stat("extension_config_discovery.http_filter.sluice.update_success", |v| v >= 2, Duration::from_secs(5)).unwrap();
}

/// One Envoy with an echo upstream and an in-memory counter service.
pub struct Stack {
    pub envoy: Envoy,
    // Dropped after Envoy.
    _echo: EchoServer,
    _counter: Counter,
}

/// Envoy instances sharing one counter service (and its store).
pub struct Cluster {
    pub envoys: Vec<Envoy>,
    pub counter: Counter,
    pub echo: EchoServer,
}

impl Cluster {
    /// `instances` Envoys with 2 workers each, all pointed at `counter`.
    pub fn start(policy: &str, instances: u32, counter: CounterOptions) -> Cluster {
        let echo = EchoServer::start().expect("echo upstream");
        let counter = Counter::start(counter).expect("counter service");
        let envoys = (0..instances)
            .map(|i| {
                Envoy::start(EnvoyOptions {
                    instance: i,
                    upstream_port: echo.port(),
                    counter_port: counter.port(),
                    policy_json: policy.to_string(),
                    concurrency: 2,
                    ..Default::default()
                })
                .expect("envoy")
            })
            .collect();
        Cluster { envoys, counter, echo }
    }

    /// Offers `rate` requests/s of `spec` to every instance at once, for
    /// `span`; one report per instance.
    pub fn offer(&self, rate: f64, span: Duration, spec: &RequestSpec) -> Vec<LoadReport> {
        let ports: Vec<u16> = self.envoys.iter().map(Envoy::port).collect();
        load_each(&ports, rate, span, spec).into_iter().map(|r| r.expect("load")).collect()
    }

    /// Calls to the counter service made by every instance so far.
    pub fn counter_calls(&self) -> u64 {
        self.envoys.iter().map(|e| e.stat("cluster.sluice_counter.upstream_rq_total").unwrap_or(0)).sum()
    }
}

impl Stack {
    pub fn start(policy: &str) -> Stack {
        Stack::with_workers(policy, 2)
    }

    pub fn with_workers(policy: &str, workers: u32) -> Stack {
        let echo = EchoServer::start().expect("echo upstream");
        let counter = Counter::start(CounterOptions::default()).expect("counter service");
        let envoy = Envoy::start(EnvoyOptions {
            upstream_port: echo.port(),
            counter_port: counter.port(),
            policy_json: policy.to_string(),
            concurrency: workers,
            ..Default::default()
        })
        .expect("envoy");
        Stack { envoy, _echo: echo, _counter: counter }
    }

    pub fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        wasm_test_harness::request(method, &self.envoy.url(path), headers, "").expect("request")
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.send("GET", path, headers)
    }

    /// Sends `n` identical requests; returns their statuses.
    pub fn statuses(&self, n: usize, method: &str, path: &str, headers: &[(&str, &str)]) -> Vec<u16> {
        (0..n).map(|_| self.send(method, path, headers).status).collect()
    }

    /// Waits until Envoy has no request in flight on the ingress
    /// listener: clients that hung up have been seen to leave.
    pub fn wait_until_gone(&self) {
        self.envoy.wait_for_stat("http.ingress.downstream_rq_active", |v| v == 0, Duration::from_secs(5)).expect("requests of departed clients ended");
    }

    /// Number of 200s among `n` identical requests.
    pub fn admitted(&self, n: usize, method: &str, path: &str, headers: &[(&str, &str)]) -> usize {
        self.statuses(n, method, path, headers).iter().filter(|s| **s == 200).count()
    }
}

/// The default policy with every `"per": "1s"` turned into `per`, so that
/// tests can count without tokens coming back mid-test; patient, so that a
/// loaded machine does not send its global rules to their fallback.
pub fn gateway_per(per: &str) -> String {
    patient(GATEWAY).replace(r#""per": "1s""#, &format!(r#""per": "{per}""#))
}

/// `policy` behind one proxy that writes `X-Forwarded-For` (trusted_hops
/// 1), so that a test can name clients through that header.
pub fn behind_one_proxy(policy: &str) -> String {
    let one = policy.replacen(r#""trusted_hops": 0"#, r#""trusted_hops": 1"#, 1);
    assert_ne!(one, policy, "the policy names no trusted_hops 0");
    one
}

/// Sleeps until just after the next whole second. Global rules count in
/// the counter service's one-second windows (aligned to the clock); a test
/// that counts a burst against them starts it here.
pub fn align_to_second() {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock");
    std::thread::sleep(Duration::from_nanos(u64::from(1_000_000_000 - now.subsec_nanos()) + 5_000_000));
}

/// The time from now until `ms` milliseconds into the current second
/// (zero when past it): a load started after `align_to_second` on a busy
/// machine may wake late, and must still stop inside its window.
pub fn until_in_second(ms: u64) -> Duration {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock");
    Duration::from_millis(ms).saturating_sub(Duration::from_nanos(u64::from(now.subsec_nanos())))
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A series of the counter service's `/metrics`, by its whole name (labels
/// included); 0 when absent.
pub fn counter_metric(counter: &Counter, series: &str) -> u64 {
    let text = wasm_test_harness::get(&counter.url("/metrics"), &[]).unwrap().body;
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0)
}

/// Envoy's counter `name` of the rule `rule` (its tags are in the stat's
/// name), if it exists.
pub fn rule_stat(envoy: &Envoy, name: &str, rule: &str) -> Option<u64> {
    envoy.stats().ok()?.into_iter().find(|(k, _)| k.contains(name) && k.contains(rule)).map(|(_, v)| v)
}
