//! The files under ops/ against a real Prometheus (Debian's `prometheus`
//! package): the alert rules pass `promtool check rules` and their unit
//! tests, and the scrape configuration, rendered with the ports of a test
//! stack (2 Envoys, the counter service in front of Redis), passes `promtool
//! check config`. Prometheus then scrapes the stack while a load touches
//! every metric (refusals, near-limit admissions, resets, shadow refusals,
//! queueing, an upstream's 429 shared through the counter service, a flood
//! of new keys, Redis and the counter service going away and coming back).
//! Afterwards every query of every panel of ops/grafana/sluice.json, and of
//! its variables, returns data with a value above zero at some point, every
//! alert of ops/alerts.yml has at least been pending, and every rule
//! evaluates without error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use wasm_test_harness::{CounterOptions, Redis};

use common::Cluster;

/// Values the test gives the dashboard's variables.
const VARIABLES: [(&str, &str); 6] =
    [("$__rate_interval", "1m"), ("$__interval", "15s"), ("$__range", "5m"), ("${rule}", ".*"), ("${tier}", ".*"), ("${instance}", ".*")];

/// Rules added to the gateway policy so that every series gets data: a
/// shadow rule; a local rule that queues (the gateway's queueing rules are
/// global; requests of a local one are resumed in place, which records
/// their wait in sluice_queue_wait_ms); and a rule that a flood of new
/// tenants runs into (one request a minute per tenant).
const EXTRA_RULES: &str = r#"[
    {"name": "export-shadow", "tier": "endpoint", "mode": "shadow",
     "match": {"methods": ["GET"], "paths": [{"prefix": "/api/v1/export"}]},
     "key": ["tenant"], "limit": {"requests": 2, "per": "1s"}},
    {"name": "batch-queue", "tier": "integration",
     "match": {"methods": ["POST"], "paths": [{"prefix": "/api/v1/batch"}]},
     "key": ["tenant"], "limit": {"requests": 3, "per": "1s"}, "queue": {"max_wait": "2s"}},
    {"name": "new-tenants", "match": {"paths": [{"prefix": "/api/v1/flood"}]},
     "key": ["tenant"], "limit": {"requests": 1, "per": "1m"}}
]"#;

fn ops() -> PathBuf {
    wasm_test_harness::repo_root().join("ops")
}

/// `program` from `PATH`; fails the test when it is missing.
fn tool(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "`{program}` is not on PATH. It comes with Debian's prometheus package: `make deps` installs it \
             when run as root, or run `sudo apt-get install prometheus`."
        )
    })
}

/// Runs `promtool` with `args` in `dir`; fails the test with its output
/// unless it succeeds.
fn promtool(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(tool("promtool")).args(args).current_dir(dir).output().expect("running promtool");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {} failed ({}):\n{text}", args.join(" "), out.status);
    text
}

/// A scratch directory, removed on drop unless the test failed.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
        let dir = std::env::temp_dir().join(format!("sluice-ops-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} for inspection", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A Prometheus server on 127.0.0.1, killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Prometheus {
    fn start(config: &Path, dir: &Path) -> Prometheus {
        let port = wasm_test_harness::free_port();
        // Prometheus logs to stderr.
        let log = dir.join("prometheus.log");
        let mut cmd = Command::new(tool("prometheus"));
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().expect("starting prometheus");
        let mut prometheus = Prometheus { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if wasm_test_harness::get(&prometheus.url("/-/ready"), &[]).is_ok_and(|r| r.status == 200) {
                return prometheus;
            }
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", prometheus.log_tail());
            }
            assert!(Instant::now() < deadline, "prometheus not ready after 20 s:\n{}", prometheus.log_tail());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `data` of a successful API answer.
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let mut url = self.url(path);
        for (i, (k, v)) in params.iter().enumerate() {
            let _ = write!(url, "{}{k}={}", if i == 0 { '?' } else { '&' }, encode(v));
        }
        let r = wasm_test_harness::get(&url, &[]).map_err(|e| e.to_string())?;
        let body: Value = serde_json::from_str(&r.body).map_err(|e| format!("{e}: {}", r.body))?;
        if body["status"] != "success" {
            return Err(format!("{} {}", body["errorType"], body["error"]));
        }
        Ok(body["data"].clone())
    }

    /// Instant query: its series.
    fn query(&self, q: &str) -> Result<Vec<Value>, String> {
        Ok(self.api("/api/v1/query", &[("query", q)])?["result"].as_array().cloned().unwrap_or_default())
    }

    /// Every value of `q` between `start` and now, one step a second.
    fn values_since(&self, q: &str, start: f64) -> Result<Vec<f64>, String> {
        let end = format!("{:.3}", now());
        let data = self.api("/api/v1/query_range", &[("query", q), ("start", &format!("{start:.3}")), ("end", &end), ("step", "1")])?;
        let series = data["result"].as_array().cloned().unwrap_or_default();
        Ok(series
            .iter()
            .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v[1].as_str().and_then(|x| x.parse::<f64>().ok()))
            .collect())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- prometheus log (last 30 lines) ----\n{}\n----", self.log_tail());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Percent-encoding of a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `text` with the `targets` of scrape job `job` replaced.
fn set_targets(text: &str, job: &str, targets: &[String]) -> String {
    let start = text.find(&format!("job_name: {job}\n")).unwrap_or_else(|| panic!("no job {job} in ops/prometheus.yml"));
    let at = start + text[start..].find("- targets: [").unwrap_or_else(|| panic!("job {job} has no `- targets: [...]`")) + "- targets: [".len();
    let end = at + text[at..].find(']').unwrap();
    let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    format!("{}{}{}", &text[..at], list.join(", "), &text[end..])
}

/// ops/prometheus.yml with the stack's targets and a 1 s interval.
fn render_config(envoys: &[u16], counter: u16) -> String {
    let text = std::fs::read_to_string(ops().join("prometheus.yml")).unwrap();
    let mut out = text.clone();
    for key in ["scrape_interval", "evaluation_interval"] {
        let line = format!("  {key}: 15s\n");
        assert!(out.contains(&line), "ops/prometheus.yml has no `{}`", line.trim());
        out = out.replace(&line, &format!("  {key}: 1s\n"));
    }
    let envoys: Vec<String> = envoys.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    out = set_targets(&out, "envoy", &envoys);
    set_targets(&out, "sluice-counter", &[format!("127.0.0.1:{counter}")])
}

/// A query of the dashboard with its variables given test values; fails on
/// a variable the test does not know.
fn substitute(expr: &str) -> String {
    let mut q = expr.to_string();
    for (var, value) in VARIABLES {
        q = q.replace(var, value);
        // `$rule` as well as `${rule}`.
        let short = var.replace(['{', '}'], "");
        q = q.replace(&short, value);
    }
    assert!(!q.contains('$'), "unknown variable in {expr}");
    q
}

/// One query of a dashboard panel.
struct Target {
    panel: String,
    expr: String,
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(ops().join("grafana/sluice.json")).unwrap();
    serde_json::from_str(&text).expect("ops/grafana/sluice.json is JSON")
}

/// Every query of every panel, after checking the panels' structure.
fn panel_targets(dash: &Value) -> Vec<Target> {
    assert!(dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36), "schemaVersion");
    let ds = dash["templating"]["list"].as_array().unwrap().iter().find(|v| v["name"] == "DS_PROMETHEUS").expect("a DS_PROMETHEUS variable");
    assert_eq!((ds["type"].as_str(), ds["query"].as_str()), (Some("datasource"), Some("prometheus")));
    let mut ids = std::collections::HashSet::new();
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        let title = p["title"].as_str().expect("every panel has a title").to_string();
        assert!(ids.insert(p["id"].as_u64().expect("panel id")), "panel id of {title} repeated");
        assert!(p["gridPos"]["w"].as_u64().is_some(), "{title} has no gridPos");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "data source of {title}");
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{title} has no targets"));
        assert!(!targets.is_empty(), "{title} has no targets");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_else(|| panic!("a target of {title} has no expr"));
            out.push(Target { panel: title.clone(), expr: expr.to_string() });
        }
    }
    out
}

/// `(name, label, selector)` of each `label_values(selector, label)`
/// variable, the selector with test values.
fn variable_queries(dash: &Value) -> Vec<(String, String, String)> {
    dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let name = v["name"].as_str().unwrap().to_string();
            let q = v["query"]["query"].as_str().or(v["query"].as_str()).unwrap();
            let inner = q.strip_prefix("label_values(").and_then(|s| s.strip_suffix(')')).unwrap_or_else(|| panic!("variable {name}: {q}"));
            let (selector, label) = inner.rsplit_once(',').unwrap();
            (name, label.trim().to_string(), substitute(selector.trim()))
        })
        .collect()
}

/// Alert names of ops/alerts.yml.
fn alert_names() -> Vec<String> {
    let text = std::fs::read_to_string(ops().join("alerts.yml")).unwrap();
    text.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")).map(|s| s.trim().to_string()).collect()
}

/// Sends `n` requests at once; returns their statuses and the body of the
/// last refusal (to tell why, should a check fail).
fn burst(url: &str, method: &str, n: usize, headers: &[(&str, &str)]) -> (Vec<u16>, String) {
    std::thread::scope(|s| {
        let threads: Vec<_> =
            (0..n).map(|_| s.spawn(|| wasm_test_harness::request(method, url, headers, "").map_or((0, String::new()), |r| (r.status, r.body)))).collect();
        let answers: Vec<(u16, String)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let refusal = answers.iter().rev().find(|(status, _)| *status != 200).map(|(_, body)| body.clone()).unwrap_or_default();
        (answers.into_iter().map(|(status, _)| status).collect(), refusal)
    })
}

/// One round of traffic: refusals, near-limit admissions and resets
/// (tools-list), shadow refusals, other tiers, and two queues (Notion's
/// global rule and the local batch rule).
fn round(cluster: &Cluster, r: usize) {
    let [a, b] = [&cluster.envoys[0], &cluster.envoys[1]];
    let tenant = format!("ops-{r}");
    std::thread::scope(|s| {
        // 10 Notion calls at once for a new tenant: 3 a second, the rest wait.
        let queue = s.spawn(|| {
            let e = &cluster.envoys[r % 2];
            let t = format!("ops-queue-{r}");
            burst(&e.url("/api/v1/tools/invoke"), "POST", 10, &[("x-integration", "notion"), ("x-tenant-id", &t)])
        });
        // 8 batch calls at once: 3 a second, the rest wait at this instance.
        let batch = s.spawn(|| {
            let e = &cluster.envoys[(r + 1) % 2];
            burst(&e.url("/api/v1/batch"), "POST", 8, &[("x-tenant-id", &format!("ops-batch-{r}"))])
        });
        let list = |e: &wasm_test_harness::Envoy, t: &str| {
            (0..7).map(|_| wasm_test_harness::get(&e.url("/api/v1/tools/list"), &[("x-tenant-id", t)]).unwrap().status).collect::<Vec<_>>()
        };
        // The same tenant every round at instance 0: refused, then admitted
        // again a round later (a reset).
        let statuses = list(a, "ops-list");
        assert!(statuses.contains(&200), "{statuses:?}");
        list(b, "ops-list-b");
        let e = &cluster.envoys[r % 2];
        for _ in 0..4 {
            assert_eq!(wasm_test_harness::get(&e.url("/api/v1/export"), &[("x-tenant-id", "ops-export")]).unwrap().status, 200);
        }
        for _ in 0..3 {
            wasm_test_harness::request("POST", &e.url("/api/v1/tools/select"), &[("x-tenant-id", &tenant)], "").unwrap();
        }
        wasm_test_harness::get(&e.url(&format!("/api/v1/tenants/{tenant}/integrations")), &[]).unwrap();
        wasm_test_harness::get(&e.url("/api/v1/categories"), &[]).unwrap();
        for (queued, refusal) in [queue.join().unwrap(), batch.join().unwrap()] {
            assert!(queued.iter().filter(|s| **s == 200).count() >= 6, "{queued:?}; {refusal}");
        }
    });
}

/// 300 new tenants, 3 requests each, against a rule allowing one a minute:
/// 600 refusals and as many rate-limit log lines due, most suppressed.
fn flood(cluster: &Cluster) {
    let url = cluster.envoys[0].url("/api/v1/flood");
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..5)
            .map(|t| {
                let url = &url;
                s.spawn(move || {
                    let mut statuses = Vec::new();
                    for i in 0..60 {
                        let tenant = format!("ops-flood-{t}-{i}");
                        for _ in 0..3 {
                            statuses.push(wasm_test_harness::get(url, &[("x-tenant-id", &tenant)]).unwrap().status);
                        }
                    }
                    statuses
                })
            })
            .collect();
        threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
    });
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert!(refused >= 550, "{refused} of {} refused", statuses.len());
}

/// Notion answers instance 0 with 429 and `Retry-After: 1`: instance 0 blocks
/// the key at the counter service, and instance 1's lease for it is
/// answered as blocked, so that its request waits in the rule's queue
/// until the block ends.
fn upstream_block(cluster: &Cluster) {
    let h = [("x-integration", "notion"), ("x-tenant-id", "ops-block")];
    let send = |i: usize, extra: &[(&str, &str)]| {
        let headers: Vec<(&str, &str)> = h.iter().chain(extra).copied().collect();
        wasm_test_harness::request("POST", &cluster.envoys[i].url("/api/v1/tools/invoke"), &headers, "").unwrap().status
    };
    assert_eq!(send(0, &[("x-echo-status", "429"), ("x-echo-header", "retry-after=1")]), 429);
    // The block is posted while the 429 goes back to the client.
    std::thread::sleep(Duration::from_millis(200));
    let asked = Instant::now();
    let status = send(1, &[]);
    let waited = asked.elapsed();
    assert!(status == 429 || waited >= Duration::from_millis(500), "instance 1 answered {status} after {waited:?}: not held back");
}

/// Requests for new tenants at both instances for `secs`: each asks the
/// counter service for a lease.
fn fresh_tenants(cluster: &Cluster, tag: &str, secs: f64) {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let mut i = 0;
    while Instant::now() < until {
        for e in &cluster.envoys {
            let _ = wasm_test_harness::get(&e.url("/api/v1/tools/list"), &[("x-tenant-id", &format!("ops-{tag}-{i}"))]);
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn degraded(envoy: &wasm_test_harness::Envoy) -> Option<f64> {
    let text = wasm_test_harness::get(&envoy.admin_url("/stats/prometheus"), &[]).ok()?.body;
    text.lines().find_map(|l| l.strip_prefix("sluice_degraded")?.rsplit_once(' ')?.1.parse().ok())
}

#[test]
fn dashboard_queries_and_alerts_work_against_real_prometheus() {
    let started = Instant::now();
    // The rules, and their unit tests.
    let checked = promtool(&ops(), &["check", "rules", "alerts.yml"]);
    println!("{}", checked.trim());
    let tested = promtool(&ops(), &["test", "rules", "alerts_test.yml"]);
    println!("{}", tested.trim());

    let dash = dashboard();
    let targets = panel_targets(&dash);
    let variables = variable_queries(&dash);
    let alerts = alert_names();
    assert!(alerts.len() >= 5, "{alerts:?}");

    // The stack.
    let mut policy: Value = serde_json::from_str(&common::patient(common::GATEWAY)).unwrap();
    let extra: Value = serde_json::from_str(EXTRA_RULES).unwrap();
    policy["rules"].as_array_mut().unwrap().extend(extra.as_array().unwrap().iter().cloned());
    let mut redis = Redis::start().expect("redis");
    let counter = CounterOptions { redis_url: Some(redis.url()), ..Default::default() };
    let mut cluster = Cluster::start(&policy.to_string(), 2, counter);

    // Prometheus on a rendered copy of ops/prometheus.yml.
    let scratch = Scratch::new();
    let admin: Vec<u16> = cluster.envoys.iter().map(|e| e.admin_port()).collect();
    std::fs::write(scratch.0.join("prometheus.yml"), render_config(&admin, cluster.counter.port())).unwrap();
    std::fs::copy(ops().join("alerts.yml"), scratch.0.join("alerts.yml")).unwrap();
    println!("{}", promtool(&scratch.0, &["check", "config", "prometheus.yml"]).trim());
    let prom = Prometheus::start(&scratch.0.join("prometheus.yml"), &scratch.0);

    // Every series exists (at 0) in Prometheus before the load, so that
    // rates count the load from its first request.
    for e in &cluster.envoys {
        assert_eq!(wasm_test_harness::get(&e.url("/api/v1/categories"), &[]).unwrap().status, 200);
    }
    assert!(
        common::eventually(Duration::from_secs(15), || {
            let up = prom.query("count(up == 1)").ok().and_then(|r| r.first().cloned());
            let fixed = prom.query("count(sluice_log_lines_suppressed_total)").ok().and_then(|r| r.first().cloned());
            let n = |v: Option<Value>| v.and_then(|v| v["value"][1].as_str().and_then(|x| x.parse::<f64>().ok())).unwrap_or(0.0);
            n(up) == 3.0 && n(fixed) == 2.0
        }),
        "Prometheus did not scrape all 3 targets: {:?}",
        prom.api("/api/v1/targets", &[]).map(|d| d["activeTargets"].clone())
    );
    let load_start = now() - 1.0;
    println!("stack and Prometheus up after {:.1} s", started.elapsed().as_secs_f64());

    // The load: several rounds across at least two of Envoy's stats flushes
    // (histograms), the flood and the upstream block among them.
    let load = Instant::now();
    let mut r = 0;
    while r < 5 || load.elapsed() < Duration::from_secs(12) {
        round(&cluster, r);
        match r {
            0 => flood(&cluster),
            1 => upstream_block(&cluster),
            _ => {}
        }
        r += 1;
    }
    println!("{r} rounds in {:.1} s", load.elapsed().as_secs_f64());

    // Redis goes away (store errors, 503s, degraded mode), then the
    // counter service itself (a failed scrape); both come back.
    redis.kill();
    fresh_tenants(&cluster, "redis-down", 3.0);
    cluster.counter.kill();
    fresh_tenants(&cluster, "counter-down", 3.0);
    redis.restart().expect("redis restart");
    cluster.counter.restart().expect("counter restart");
    assert!(
        common::eventually(Duration::from_secs(10), || cluster.envoys.iter().all(|e| degraded(e) == Some(0.0))),
        "global enforcement back at both instances: {:?}",
        cluster.envoys.iter().map(degraded).collect::<Vec<_>>()
    );
    // Workers read the flag at their root's next tick (every 10 ms); until
    // then a request still goes to the fallback (one Notion call per
    // instance, the rest refused). Leave a loaded machine room for it.
    std::thread::sleep(Duration::from_millis(300));
    round(&cluster, r);
    println!("outage and recovery done after {:.1} s", started.elapsed().as_secs_f64());

    // Every panel's queries, every variable and every alert, until all hold
    // (histograms need one more stats flush and scrape).
    let check = || -> Vec<String> {
        let mut failed = Vec::new();
        for t in &targets {
            let q = substitute(&t.expr);
            let problem = match (prom.query(&q), prom.values_since(&q, load_start)) {
                (Err(e), _) | (_, Err(e)) => Some(format!("error {e}")),
                (Ok(now), _) if now.is_empty() => Some("no data now".to_string()),
                (_, Ok(values)) if !values.iter().any(|v| v.is_finite() && *v > 0.0) => Some("never above 0".to_string()),
                _ => None,
            };
            if let Some(p) = problem {
                failed.push(format!("panel \"{}\": {p}: {q}", t.panel));
            }
        }
        for (name, label, selector) in &variables {
            match prom.api(&format!("/api/v1/label/{label}/values"), &[("match[]", selector)]) {
                Ok(v) if v.as_array().is_some_and(|a| !a.is_empty()) => {}
                other => failed.push(format!("variable {name}: no {label} values for {selector}: {other:?}")),
            }
        }
        for alert in &alerts {
            let q = format!("ALERTS{{alertname=\"{alert}\"}}");
            if !prom.values_since(&q, load_start).is_ok_and(|v| !v.is_empty()) {
                failed.push(format!("alert {alert} was never pending or firing"));
            }
        }
        match prom.api("/api/v1/rules", &[]) {
            Ok(data) => {
                let rules: Vec<Value> =
                    data["groups"].as_array().into_iter().flatten().flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default()).collect();
                if rules.len() < alerts.len() {
                    failed.push(format!("Prometheus loaded {} rules", rules.len()));
                }
                for rule in rules.iter().filter(|r| r["health"] != "ok") {
                    failed.push(format!("rule {} is {}: {}", rule["name"], rule["health"], rule["lastError"]));
                }
            }
            Err(e) => failed.push(format!("rules: {e}")),
        }
        failed
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut failed = check();
    while !failed.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        failed = check();
    }
    println!("{} panel queries, {} variables, {} alerts checked after {:.1} s", targets.len(), variables.len(), alerts.len(), started.elapsed().as_secs_f64());
    assert!(failed.is_empty(), "{} failed:\n{}", failed.len(), failed.join("\n"));
    let down = prom.query("up == 0").unwrap();
    assert!(down.is_empty(), "targets down at the end: {down:?}");
}
