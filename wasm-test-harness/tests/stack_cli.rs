//! End-to-end tests of the `sluice-stack` binary: each test starts
//! `sluice-stack run` as a child process (echo upstream plus real Envoys
//! loading the built filter), talks to it over HTTP and drives
//! `sluice-stack apply` against it.
//!
//! Needs Envoy (`make envoy`, or `SLUICE_ENVOY`) and the built filter
//! (`make build`, or `SLUICE_WASM`); a missing one fails the test with a hint
//! instead of skipping it. Every test uses its own free ports and temporary
//! run directory, so they run in parallel. The stack is stopped when its
//! [`Stack`] guard is dropped, also when a test fails; the run directory of a
//! failed test is kept and its logs are printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasm_test_harness::{envoy_binary, free_port, get, repo_root, wasm_module, Response};

const BIN: &str = env!("CARGO_BIN_EXE_sluice-stack");
/// The rule of the default policy these tests exercise, and its limit there.
const RULE: &str = "tools-list";
const DEFAULT_LIMIT: usize = 5;
const PATH: &str = "/api/v1/tools/list";

/// Until `sluice-stack run` serves on every instance.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// For one `sluice-stack apply` to finish.
const APPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// For `sluice-stack run` to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Until a successfully applied policy shows in the traffic.
const TAKE_EFFECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A burst must finish faster than one token refills (200 ms at 5/s) to
/// measure the burst size exactly; slower bursts are repeated.
const BURST_BUDGET: Duration = Duration::from_millis(150);
const BURST_MAX: usize = 10;
const BURST_ATTEMPTS: usize = 5;

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

#[test]
fn run_in_front_of_an_http1_service_streams_and_limits() {
    run_in_front_of_a_streaming_service(false);
}

#[test]
fn run_in_front_of_an_h2c_service_streams_and_limits() {
    run_in_front_of_a_streaming_service(true);
}

/// `make run UPSTREAM=...`: the user's own service behind Sluice. A slow
/// event stream passes chunk by chunk (the service sends the next event
/// only once the client has received the previous one, so a buffering
/// proxy would leave the client with one event), and the default policy's
/// limits apply to the service's other paths.
fn run_in_front_of_a_streaming_service(h2c: bool) {
    let service = StreamingService::start(h2c);
    // The h2c service is named by a host name (a STRICT_DNS cluster).
    let upstream = if h2c {
        format!("h2c://localhost:{}", service.port)
    } else {
        format!("127.0.0.1:{}", service.port)
    };
    let stack = Stack::start_with(1, &["--upstream", &upstream]);
    assert!(
        stack.logs().contains(&format!(
            "routing to {}",
            if h2c {
                upstream.clone()
            } else {
                format!("http://{upstream}")
            }
        )),
        "the banner names the upstream:\n{}",
        stack.logs()
    );
    assert!(stack.logs().contains("client IP:"), "{}", stack.logs());

    let r = tools_list(stack.port(0), &fresh_tenant());
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body, "from the user's service",
        "answered by the service, not the echo server"
    );
    assert_eq!(observed_limit(stack.port(0)), DEFAULT_LIMIT);

    let started = Instant::now();
    let events = read_event_stream(stack.port(0), &service);
    assert_eq!(
        events,
        (0..STREAM_EVENTS)
            .map(|i| format!("event-{i}"))
            .collect::<Vec<_>>(),
        "every event arrived while the stream was still open"
    );
    assert!(
        started.elapsed() >= STREAM_GAP * (STREAM_EVENTS as u32 - 1),
        "the service paced its events ({:?})",
        started.elapsed()
    );
    assert_eq!(
        service.seen_protocol(),
        Some(if h2c { "HTTP/2.0" } else { "HTTP/1.1" }.to_string())
    );
}

#[test]
fn run_refuses_a_malformed_upstream() {
    let out = run_cli(
        Command::new(BIN)
            .args(["run", "--upstream", "https://example.com:443", "--policy"])
            .arg(default_policy()),
        APPLY_TIMEOUT,
    );
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("only http:// and h2c://"), "{out}");
}

#[test]
fn run_serves_echo_and_limits_tools_list() {
    let stack = Stack::start(1);
    let r = tools_list(stack.port(0), &fresh_tenant());
    assert_eq!(r.status, 200, "{}", r.body);
    let echo = r.json().unwrap();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], PATH);

    // Five pass, the sixth is refused by the tools-list rule.
    assert_eq!(observed_limit(stack.port(0)), DEFAULT_LIMIT);
}

#[test]
fn run_counter_service_requires_the_secret_envoy_holds() {
    let stack = Stack::start(1);
    assert_eq!(tools_list(stack.port(0), &fresh_tenant()).status, 200);
    // The filter's lease calls were answered (it sent the secret), never refused.
    let admin = |name: &str| {
        let stats = get(
            &format!(
                "http://127.0.0.1:{}/stats?filter=^{name}$",
                stack.admin_port(0)
            ),
            &[],
        )
        .unwrap()
        .body;
        stats
            .rsplit(": ")
            .next()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(
        admin("cluster.sluice_counter.upstream_rq_200") > 0,
        "{}",
        stack.logs()
    );
    assert_eq!(
        admin("cluster.sluice_counter.upstream_rq_401"),
        0,
        "{}",
        stack.logs()
    );
    // No policy or ECDS file holds the secret.
    let ecds = stack.ecds_files().concat();
    assert!(
        String::from_utf8_lossy(&ecds).contains(r#"\"secret_env\": \"SLUICE_COUNTER_SECRET\""#),
        "the policy does not name the variable"
    );
    // A caller without the secret is refused.
    let log = std::fs::read_to_string(stack.dir().join("run.log")).unwrap();
    let port = log
        .split("counter service on 127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no counter port in: {log}"));
    let body =
        r#"{"leases": [{"rule": "r", "id": "i", "limit": 5, "window_ms": 1000, "want": 1}]}"#;
    let r = wasm_test_harness::request(
        "POST",
        &format!("http://127.0.0.1:{port}/v1/reserve"),
        &[],
        body,
    )
    .unwrap();
    assert_eq!(r.status, 401, "{}", r.body);
}

#[test]
fn apply_valid_policy_reaches_every_instance() {
    let stack = Stack::start(2);
    let policy = stack.write_policy("two.json", &policy_with_limit(2));
    let out = stack.apply(&policy);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains("applied to 2 instance(s)"), "{out}");

    let deadline = Instant::now() + TAKE_EFFECT_TIMEOUT;
    for i in 0..stack.instances {
        wait_for_limit(stack.port(i), 2, deadline);
    }
}

#[test]
fn apply_invalid_policy_exits_2_and_keeps_limit() {
    let stack = Stack::start(1);
    let before = stack.ecds_files();
    let policy = stack.write_policy("zero.json", &policy_with_limit(0));
    let out = stack.apply(&policy);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("rules["), "no JSON path in: {out}");
    assert_unchanged(&stack, &before);
}

#[test]
fn apply_non_json_file_changes_nothing() {
    let stack = Stack::start(1);
    let before = stack.ecds_files();
    let policy = stack.write_policy("not-json.txt", "rules: [tools-list: 2/s]\n");
    let out = stack.apply(&policy);
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("not-json.txt"), "{out}");
    assert_unchanged(&stack, &before);
}

#[test]
fn apply_without_running_stack_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_cli(
        Command::new(BIN)
            .arg("apply")
            .arg("--policy")
            .arg(default_policy())
            .arg("--run-dir")
            .arg(dir.path()),
        APPLY_TIMEOUT,
    );
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("no stack is running"), "{out}");
    assert!(out.stderr.contains("sluice-stack run"), "{out}");
}

#[test]
fn apply_rejected_by_envoy_restores_previous_file() {
    let stack = Stack::start(1);
    let before = stack.ecds_files();
    // A policy that passes validation but a module Envoy cannot load, so the
    // filter config is refused on the Envoy side.
    let junk = stack.dir().join("junk.wasm");
    std::fs::write(&junk, "not a wasm module").unwrap();
    let stack_file = stack.run_dir().join("stack.json");
    let mut desc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stack_file).unwrap()).unwrap();
    desc["wasm"] = junk.to_string_lossy().into_owned().into();
    std::fs::write(&stack_file, desc.to_string()).unwrap();

    let out = stack.apply(&default_policy());
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("instance 0"), "{out}");
    assert!(out.stderr.contains("rejected"), "{out}");
    assert!(out.stderr.contains("envoy-0/stderr.log"), "{out}");
    assert_unchanged(&stack, &before);
}

#[test]
fn sigterm_stops_run_and_its_envoys() {
    stops_run_and_its_envoys(libc::SIGTERM);
}

/// The terminal `make run` runs in was closed.
#[test]
fn sighup_stops_run_and_its_envoys() {
    stops_run_and_its_envoys(libc::SIGHUP);
}

fn stops_run_and_its_envoys(signal: libc::c_int) {
    let mut stack = Stack::start(1);
    let admin = stack.admin_port(0);
    let status = stack.stop(signal, STOP_TIMEOUT);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "run did not exit 0 within {STOP_TIMEOUT:?}"
    );
    assert!(
        get(&format!("http://127.0.0.1:{admin}/ready"), &[]).is_err(),
        "Envoy admin on port {admin} still answers"
    );
    assert_eq!(processes_mentioning(&stack.run_dir()), Vec::<u32>::new());
    assert!(!stack.run_dir().join("stack.json").exists());
}

// ---------------------------------------------------------------------------
// The stack under test
// ---------------------------------------------------------------------------

/// A `sluice-stack run` child with its own ports and temporary directory
/// (`run/` is its run dir; `run.log` its output). Dropping it stops the stack:
/// SIGTERM, then SIGKILL, then SIGKILL for any Envoy left in its run dir.
struct Stack {
    child: Child,
    dir: Option<tempfile::TempDir>,
    base_port: u16,
    instances: u16,
}

impl Stack {
    fn start(instances: u16) -> Stack {
        Stack::start_with(instances, &[])
    }

    /// `sluice-stack run` with more arguments (e.g. `--upstream`).
    fn start_with(instances: u16, extra: &[&str]) -> Stack {
        // A port of the block may be taken between the check and Envoy's
        // bind (another test's Envoy picking an ephemeral admin port): then
        // the stack starts again on another block.
        for _ in 0..3 {
            let mut stack = Stack::spawn(instances, extra);
            match stack.wait_serving() {
                Ok(()) => return stack,
                Err(_) if stack.logs().contains("Address already in use") => continue,
                Err(status) => panic!("sluice-stack run exited ({status}) before serving"),
            }
        }
        panic!("sluice-stack run found its ports taken three times");
    }

    fn spawn(instances: u16, extra: &[&str]) -> Stack {
        let wasm = built_wasm();
        let dir = tempfile::Builder::new()
            .prefix("sluice-stack-")
            .tempdir()
            .unwrap();
        // Listeners on base..base+n, admins on base+n..base+2n.
        let base_port = free_port_block(2 * instances);
        let log = File::create(dir.path().join("run.log")).unwrap();
        let child = Command::new(BIN)
            .arg("run")
            .args(["--port", &base_port.to_string()])
            .args(["--admin-port", &(base_port + instances).to_string()])
            .args(["--instances", &instances.to_string()])
            .arg("--policy")
            .arg(default_policy())
            .arg("--run-dir")
            .arg(dir.path().join("run"))
            .arg("--wasm")
            .arg(wasm)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Stack {
            child,
            dir: Some(dir),
            base_port,
            instances,
        }
    }

    /// Waits until `stack.json` is written and every admin says LIVE; the
    /// exit status if `run` ends first.
    fn wait_serving(&mut self) -> Result<(), std::process::ExitStatus> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(status);
            }
            let live = |i| {
                get(
                    &format!("http://127.0.0.1:{}/ready", self.admin_port(i)),
                    &[],
                )
                .is_ok_and(|r| r.status == 200 && r.body.trim() == "LIVE")
            };
            if self.run_dir().join("stack.json").is_file() && (0..self.instances).all(live) {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "stack not serving after {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("temporary directory").path()
    }

    fn run_dir(&self) -> PathBuf {
        self.dir().join("run")
    }

    fn port(&self, instance: u16) -> u16 {
        self.base_port + instance
    }

    fn admin_port(&self, instance: u16) -> u16 {
        self.base_port + self.instances + instance
    }

    fn ecds_file(&self, instance: u16) -> PathBuf {
        self.run_dir()
            .join(format!("envoy-{instance}"))
            .join("ecds")
            .join(wasm_test_harness::ECDS_FILE)
    }

    /// Contents of every instance's ECDS file.
    fn ecds_files(&self) -> Vec<Vec<u8>> {
        (0..self.instances)
            .map(|i| std::fs::read(self.ecds_file(i)).unwrap())
            .collect()
    }

    fn write_policy(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `sluice-stack apply --policy <policy> --run-dir <this stack>`.
    fn apply(&self, policy: &Path) -> CliOutput {
        run_cli(
            Command::new(BIN)
                .arg("apply")
                .arg("--policy")
                .arg(policy)
                .arg("--run-dir")
                .arg(self.run_dir()),
            APPLY_TIMEOUT,
        )
    }

    /// Sends `signal` to `run` and waits up to `timeout` for it to exit.
    fn stop(&mut self, signal: libc::c_int, timeout: Duration) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        // SAFETY: kill(2) on the pid of our own, not yet reaped child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
        wait_child(&mut self.child, timeout)
    }

    /// `run.log` and the tail of every Envoy's stderr.log.
    fn logs(&self) -> String {
        let mut out = format!(
            "---- sluice-stack run output ----\n{}",
            std::fs::read_to_string(self.dir().join("run.log")).unwrap_or_default()
        );
        for i in 0..self.instances {
            let path = self.run_dir().join(format!("envoy-{i}/stderr.log"));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out += &format!(
                "---- {} (last 40 lines) ----\n{}\n",
                path.display(),
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
        out
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if self.stop(libc::SIGTERM, Duration::from_secs(15)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // Envoys lead their own process groups; after a SIGKILL of `run` they
        // would outlive it.
        for pid in processes_mentioning(&self.run_dir()) {
            // SAFETY: kill(2) on a process started by this stack.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
            if let Some(dir) = self.dir.take() {
                eprintln!("---- run directory kept: {}", dir.keep().display());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Traffic
// ---------------------------------------------------------------------------

/// A tenant no earlier request used, so its buckets start full.
fn fresh_tenant() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("tenant-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn tools_list(port: u16, tenant: &str) -> Response {
    get(
        &format!("http://127.0.0.1:{port}{PATH}"),
        &[("x-tenant-id", tenant)],
    )
    .unwrap()
}

/// How many back-to-back tools-list requests of a fresh tenant pass before
/// the first 429 (at most [`BURST_MAX`]). Checks that the refusal names the
/// tools-list tier.
fn observed_limit(port: u16) -> usize {
    for _ in 0..BURST_ATTEMPTS {
        let tenant = fresh_tenant();
        let start = Instant::now();
        let mut passed = 0;
        for _ in 0..BURST_MAX {
            let r = tools_list(port, &tenant);
            match r.status {
                200 => passed += 1,
                429 => {
                    assert_eq!(r.json().unwrap()["limits"]["tier"], RULE, "{}", r.body);
                    break;
                }
                s => panic!("unexpected status {s}: {}", r.body),
            }
        }
        if start.elapsed() < BURST_BUDGET {
            return passed;
        }
    }
    panic!("{BURST_ATTEMPTS} bursts in a row took longer than {BURST_BUDGET:?}");
}

/// Polls [`observed_limit`] on `port` until it is `expected`, failing at `deadline`.
fn wait_for_limit(port: u16, expected: usize, deadline: Instant) {
    loop {
        let seen = observed_limit(port);
        if seen == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "port {port}: limit still {seen}, expected {expected}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The ECDS files are untouched and the default limit still holds everywhere.
fn assert_unchanged(stack: &Stack, before: &[Vec<u8>]) {
    assert!(stack.ecds_files() == before, "an ECDS file changed");
    for i in 0..stack.instances {
        assert_eq!(observed_limit(stack.port(i)), DEFAULT_LIMIT, "instance {i}");
    }
}

// ---------------------------------------------------------------------------
// Files, policies, processes
// ---------------------------------------------------------------------------

/// The filter module the stack loads; fails with a hint when it is not built.
fn built_wasm() -> PathBuf {
    if let Err(e) = envoy_binary() {
        panic!("{e:#}");
    }
    let wasm = wasm_module();
    assert!(
        wasm.is_file(),
        "filter module {} not found: run `make build` first (or set SLUICE_WASM)",
        wasm.display()
    );
    wasm
}

fn default_policy() -> PathBuf {
    repo_root().join("policies/mcp-gateway.json")
}

/// The default policy with the tools-list rule's `requests` set to `requests`.
fn policy_with_limit(requests: i64) -> String {
    let text = std::fs::read_to_string(default_policy()).unwrap();
    let mut policy: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rule = policy["rules"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|r| r["name"] == RULE)
        .expect("tools-list rule in the default policy");
    rule["limit"]["requests"] = requests.into();
    serde_json::to_string_pretty(&policy).unwrap()
}

/// A port `p` such that `p..p + len` were all free a moment ago.
fn free_port_block(len: u16) -> u16 {
    for _ in 0..100 {
        let base = free_port();
        let Some(end) = base.checked_add(len) else {
            continue;
        };
        let held: Result<Vec<_>, _> = (base..end)
            .map(|p| TcpListener::bind(("127.0.0.1", p)))
            .collect();
        if held.is_ok() {
            return base;
        }
    }
    panic!("no block of {len} free ports found");
}

/// Pids of processes whose command line mentions `dir` (Linux `/proc`).
fn processes_mentioning(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .collect()
}

/// Waits up to `timeout` for `child` to exit.
fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Exit code and output of one CLI invocation.
struct CliOutput {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl CliOutput {
    fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to completion, killing it and failing after `timeout`.
fn run_cli(cmd: &mut Command, timeout: Duration) -> CliOutput {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = read_all(child.stdout.take().unwrap());
    let stderr = read_all(child.stderr.take().unwrap());
    let Some(status) = wait_child(&mut child, timeout) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{cmd:?} did not finish within {timeout:?}");
    };
    CliOutput {
        code: status.code(),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

// ---------------------------------------------------------------------------
// A user's service that streams: server-sent events, paced by the reader
// ---------------------------------------------------------------------------

const STREAM_EVENTS: usize = 4;
/// 4 events 700 ms apart: a stream of just over 2 s.
const STREAM_GAP: Duration = Duration::from_millis(700);
/// How long the service waits for the client to have read an event.
const STREAM_ACK_TIMEOUT: Duration = Duration::from_secs(10);
const STREAM_PATH: &str = "/events";

/// An HTTP/1.1 or h2c server: `GET /events` answers `text/event-stream`
/// and sends event i+1 only after the test reports (through `acks`) that
/// the client has read event i and `STREAM_GAP` has passed; any other path
/// answers a short text at once.
struct StreamingService {
    port: u16,
    acks: std::sync::mpsc::Sender<usize>,
    protocol: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    _runtime: tokio::runtime::Runtime,
}

impl StreamingService {
    fn start(h2c: bool) -> StreamingService {
        use std::sync::{Arc, Mutex};
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let (acks, ack_rx) = std::sync::mpsc::channel::<usize>();
        let ack_rx = Arc::new(Mutex::new(ack_rx));
        let protocol = Arc::new(Mutex::new(None));
        let seen = protocol.clone();
        runtime.spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let (ack_rx, seen) = (ack_rx.clone(), seen.clone());
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (ack_rx, seen) = (ack_rx.clone(), seen.clone());
                        async move {
                            *seen.lock().unwrap() = Some(format!("{:?}", req.version()));
                            Ok::<_, std::convert::Infallible>(stream_or_text(
                                req.uri().path(),
                                ack_rx,
                            ))
                        }
                    },
                );
                let io = hyper_util::rt::TokioIo::new(socket);
                tokio::spawn(async move {
                    if h2c {
                        let _ = hyper::server::conn::http2::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(io, service)
                        .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, service)
                            .await;
                    }
                });
            }
        });
        StreamingService {
            port,
            acks,
            protocol,
            _runtime: runtime,
        }
    }

    /// The HTTP version of the last request the service received.
    fn seen_protocol(&self) -> Option<String> {
        self.protocol.lock().unwrap().clone()
    }
}

fn stream_or_text(
    path: &str,
    acks: std::sync::Arc<std::sync::Mutex<std::sync::mpsc::Receiver<usize>>>,
) -> hyper::Response<ChannelBody> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    if path != STREAM_PATH {
        let _ = tx.try_send(bytes::Bytes::from_static(b"from the user's service"));
        return hyper::Response::new(ChannelBody(rx));
    }
    tokio::spawn(async move {
        for i in 0..STREAM_EVENTS {
            if i > 0 {
                tokio::time::sleep(STREAM_GAP).await;
                let acks = acks.clone();
                let read = tokio::task::spawn_blocking(move || {
                    acks.lock().unwrap().recv_timeout(STREAM_ACK_TIMEOUT)
                })
                .await;
                // The client never saw the last event: end the stream short.
                if !matches!(read, Ok(Ok(n)) if n == i - 1) {
                    return;
                }
            }
            let event = bytes::Bytes::from(format!("data: event-{i}\n\n"));
            if tx.send(event).await.is_err() {
                return;
            }
        }
    });
    hyper::Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(ChannelBody(rx))
        .unwrap()
}

/// A response body fed from a channel, one frame per message.
struct ChannelBody(tokio::sync::mpsc::Receiver<bytes::Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|m| m.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// Reads `GET /events` through Envoy over a raw HTTP/1.1 connection,
/// reporting each event to the service as soon as it arrives; returns the
/// events in order.
fn read_event_stream(port: u16, service: &StreamingService) -> Vec<String> {
    use std::io::Write;
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(STREAM_ACK_TIMEOUT * 2)).unwrap();
    write!(
        conn,
        "GET {STREAM_PATH} HTTP/1.1\r\nhost: localhost\r\nx-tenant-id: {}\r\naccept: text/event-stream\r\nconnection: close\r\n\r\n",
        fresh_tenant()
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => panic!("reading the event stream: {e} (so far: {text:?})"),
        };
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        while seen.len() < STREAM_EVENTS {
            let i = seen.len();
            if !text.contains(&format!("data: event-{i}\n\n")) {
                break;
            }
            seen.push(format!("event-{i}"));
            let _ = service.acks.send(i);
        }
        if seen.len() == STREAM_EVENTS && text.contains("\r\n0\r\n\r\n") {
            break;
        }
    }
    seen
}
