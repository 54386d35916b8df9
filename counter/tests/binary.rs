//! The `sluice-counter` binary: announces its address on the first stdout
//! line, serves, and exits 0 on SIGTERM and SIGINT; refuses bad flags.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: failing loudly is the point.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

/// The running binary, killed on drop if still there.
struct Service {
    child: Child,
    base: String,
}

impl Service {
    fn start(args: &[&str]) -> Service {
        Service::start_with(args, None)
    }

    /// Starts the binary with `args` and, if given, `SLUICE_COUNTER_SECRET`.
    fn start_with(args: &[&str], secret_env: Option<&str>) -> Service {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice-counter"));
        cmd.env_remove("SLUICE_COUNTER_SECRET")
            .env_remove("SLUICE_COUNTER_SECRET_FILE");
        if let Some(secret) = secret_env {
            cmd.env("SLUICE_COUNTER_SECRET", secret);
        }
        let mut child = cmd
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("first line");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        assert!(
            addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
            "{addr}"
        );
        Service {
            child,
            base: format!("http://{addr}"),
        }
    }

    /// Sends `signal` and returns the exit code (within 5 s).
    fn stop(mut self, signal: i32) -> Option<i32> {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: signalling our own child process by its id.
        unsafe { libc::kill(pid, signal) };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            assert!(Instant::now() < deadline, "no exit after signal {signal}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serves_and_stops_gracefully_on_sigterm_and_sigint() {
    let redis = wasm_test_harness::Redis::start().expect("redis");
    for (signal, store) in [(libc::SIGTERM, None), (libc::SIGINT, Some(redis.url()))] {
        let mut args = vec!["--prefix", "bin:"];
        if let Some(url) = &store {
            args.extend(["--redis-url", url.as_str()]);
        }
        let service = Service::start_with(&args, Some("k"));
        let health =
            wasm_test_harness::get(&format!("{}/healthz", service.base), &[]).expect("get");
        assert_eq!((health.status, health.body.as_str()), (200, "ok"));
        let body = json!({"instance": "bin", "leases": [
            {"rule": "r", "id": "i", "limit": 5, "window_ms": 60000, "want": 3}
        ]})
        .to_string();
        let url = format!("{}/v1/reserve", service.base);
        let denied = wasm_test_harness::request("POST", &url, &[], &body).expect("post");
        assert_eq!(denied.status, 401);
        let res = wasm_test_harness::request("POST", &url, &[("x-sluice-secret", "k")], &body)
            .expect("post");
        assert_eq!(res.status, 200, "{}", res.body);
        assert_eq!(res.json().expect("json")["leases"][0]["granted"], 3);
        let blocks = json!({"instance": "bin", "blocks": [
            {"rule": "r", "id": "i", "for_ms": 60000}
        ]})
        .to_string();
        let block_url = format!("{}/v1/block", service.base);
        let denied = wasm_test_harness::request("POST", &block_url, &[], &blocks).expect("post");
        assert_eq!(denied.status, 401);
        let res =
            wasm_test_harness::request("POST", &block_url, &[("x-sluice-secret", "k")], &blocks)
                .expect("post");
        assert_eq!(res.status, 200, "{}", res.body);
        assert_eq!(res.json().expect("json")["blocks"][0]["blocked_ms"], 60000);
        let res = wasm_test_harness::request("POST", &url, &[("x-sluice-secret", "k")], &body)
            .expect("post");
        let lease = &res.json().expect("json")["leases"][0];
        assert_eq!(
            (&lease["granted"], &lease["used"]),
            (&json!(0), &json!(3)),
            "{lease}"
        );
        assert_eq!(service.stop(signal), Some(0), "signal {signal}");
    }
    let exists = support::redis_procs::command(redis.port(), "EXISTS bin:r:{i}:60");
    assert_eq!(exists.as_deref(), Some(":1"), "the Redis run wrote its key");
    let exists = support::redis_procs::command(redis.port(), "EXISTS bin:r:{i}:block");
    assert_eq!(exists.as_deref(), Some(":1"), "and its block");
}

#[test]
fn bad_flags_are_refused_with_a_message() {
    for args in [
        vec!["--prefix", "a{b"],
        vec!["--secret", "k", "--insecure-no-secret"],
        vec!["--secret-file", "/nonexistent/secret"],
        vec!["--cluster"],
        vec!["--redis-url", "nonsense://"],
        vec!["--listen", "127.0.0.1:99999"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice-counter"))
            .args(&args)
            .arg("--insecure-no-secret")
            .env_remove("SLUICE_COUNTER_SECRET")
            .env_remove("SLUICE_COUNTER_SECRET_FILE")
            .stdin(Stdio::null())
            .output()
            .expect("run");
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(!out.stderr.is_empty(), "{args:?} gave no message");
    }
}

/// Runs the binary to completion (it is expected to refuse to start).
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice-counter"));
    cmd.args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("SLUICE_COUNTER_SECRET")
        .env_remove("SLUICE_COUNTER_SECRET_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn");
    // A service that starts would serve forever: give it 5 s to refuse.
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} {env:?}: the service started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    // 1: refused by the service; 2: by the flag parser.
    assert!(
        matches!(out.status.code(), Some(1 | 2)),
        "{args:?} {env:?} started: {:?}",
        out.status
    );
    assert!(
        out.stdout.is_empty(),
        "{args:?} {env:?} announced an address"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn without_a_secret_it_refuses_to_start_unless_told_to_serve_anyone() {
    let why = refused(&[], &[]);
    assert!(why.contains("no shared secret"), "{why}");
    assert!(why.contains("--insecure-no-secret"), "{why}");
    let why = refused(&[], &[("SLUICE_COUNTER_SECRET", "")]);
    assert!(why.contains("is empty"), "{why}");
    // On the command line a secret is readable by every local user.
    let why = refused(&["--secret", "k"], &[]);
    assert!(why.contains("--secret"), "{why}");

    let open = Service::start(&["--insecure-no-secret"]);
    let body =
        json!({"leases": [{"rule": "r", "id": "i", "limit": 5, "window_ms": 1000, "want": 1}]})
            .to_string();
    let res = wasm_test_harness::request("POST", &format!("{}/v1/reserve", open.base), &[], &body)
        .expect("post");
    assert_eq!(res.status, 200, "{}", res.body);
}

#[test]
fn a_secret_file_guards_v1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("secret");
    std::fs::write(&file, "from-a-file\n").expect("write");
    let service = Service::start(&["--secret-file", file.to_str().expect("utf-8")]);
    let url = format!("{}/v1/reserve", service.base);
    let body =
        json!({"leases": [{"rule": "r", "id": "i", "limit": 5, "window_ms": 1000, "want": 1}]})
            .to_string();
    for headers in [
        vec![],
        vec![("x-sluice-secret", "from-a-fil")],
        vec![("x-sluice-secret", "k")],
    ] {
        let res = wasm_test_harness::request("POST", &url, &headers, &body).expect("post");
        assert_eq!(res.status, 401, "{headers:?}: {}", res.body);
    }
    let res =
        wasm_test_harness::request("POST", &url, &[("x-sluice-secret", "from-a-file")], &body)
            .expect("post");
    assert_eq!(res.status, 200, "{}", res.body);
    // Probes stay open for the orchestrator.
    let health = wasm_test_harness::get(&format!("{}/healthz", service.base), &[]).expect("get");
    assert_eq!(health.status, 200);
}
