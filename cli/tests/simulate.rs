//! `sluicectl simulate` run as a program on generated access logs, against
//! the default policy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

const GATEWAY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/mcp-gateway.json");
/// A whole second (2026-11-27T02:18:49Z).
const T0_MS: u64 = 1_795_745_929_000;

fn sluicectl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluicectl")).args(args).output().expect("sluicectl runs")
}

fn text(out: &[u8]) -> String {
    String::from_utf8(out.to_vec()).expect("UTF-8")
}

/// A temporary file, removed when dropped.
struct Temp(PathBuf);

impl Temp {
    fn new(name: &str, content: &str) -> Temp {
        let path = std::env::temp_dir().join(format!("sluicectl-simulate-{}-{name}", std::process::id()));
        std::fs::write(&path, content).unwrap();
        Temp(path)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One line as the ingress access log of `envoy.yaml` writes it.
fn line(at_ms: u64, method: &str, path: &str, tenant: Option<&str>, integration: Option<&str>) -> String {
    let header = |v: Option<&str>| v.map_or(serde_json::Value::Null, |v| v.into());
    serde_json::json!({
        "authority": "127.0.0.1:34437",
        "client_ip": "127.0.0.1",
        "headers": {
            "x-forwarded-for": "203.0.113.9",
            "x-integration": header(integration),
            "x-priority": null,
            "x-tenant-id": header(tenant),
        },
        "method": method,
        "path": path,
        "status": 200,
        "ts": format!("{}.{:03}", at_ms / 1000, at_ms % 1000),
    })
    .to_string()
}

/// Busy: 10/s for 5 s on tools-list (5/s), half a second into a window;
/// calm: 2/s meanwhile; nine Notion calls at once (3/s, queued up to 2 s);
/// and three bad lines. Lines are written roughly as requests end, not
/// quite in arrival order.
fn log() -> String {
    let mut lines = Vec::new();
    for i in 0..50 {
        lines.push(line(T0_MS + 500 + i * 100, "GET", "/api/v1/tools/list?page=1", Some("busy"), None));
    }
    for i in 0..10 {
        lines.push(line(T0_MS + 520 + i * 500, "GET", "/api/v1/tools/list", Some("calm"), None));
    }
    for _ in 0..9 {
        lines.push(line(T0_MS + 1_300, "POST", "/api/v1/tools/invoke", Some("acme"), Some("notion")));
    }
    lines.swap(3, 40);
    lines.swap(55, 12);
    lines.insert(7, "not json at all".into());
    lines.insert(20, r#"{"method":"GET","path":"/api/v1/tools/list"}"#.into());
    lines.insert(30, r#"{"ts":"1795745930.5","method":"GET","path":"/","headers":{"x-tenant-id":7}}"#.into());
    lines.push(String::new());
    lines.join("\n")
}

fn rule<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["rules"].as_array().unwrap().iter().find(|r| r["rule"] == name).unwrap_or_else(|| panic!("no rule {name}"))
}

fn n(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[test]
fn a_generated_log_gives_the_known_answer() {
    let log = Temp::new("known.log", &log());
    let out = sluicectl(&["simulate", "--policy", GATEWAY, "--log", log.path(), "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(n(&report["requests"]), 69);
    assert_eq!(n(&report["skipped_lines"]), 3);
    assert_eq!(n(&report["admitted"]) + n(&report["denied"]), 69);

    let list = rule(&report, "tools-list");
    assert_eq!(list["scope"], "global");
    assert_eq!(n(&list["applied"]), 60);
    // The busy tenant gets the five windows it fills (5 each), at most
    // the bucket's burst plus its rate over 5 s; the calm one everything.
    let busy_denied = n(&list["denied"]);
    assert!((20..=25).contains(&busy_denied), "{list}");
    assert_eq!(n(&list["admitted"]), 60 - busy_denied);
    assert_eq!(list["top_denied"], serde_json::json!([{"key": "tenant=busy", "count": busy_denied}]));

    let notion = rule(&report, "integration-notion");
    assert_eq!((n(&notion["applied"]), n(&notion["admitted"]), n(&notion["queued"]), n(&notion["denied"])), (9, 9, 6, 0), "{notion}");
    assert_eq!(n(&report["queued"]), 6);
    assert_eq!(n(&rule(&report, "tools-invoke")["applied"]), 9);
    assert_eq!(n(&rule(&report, "per-ip")["applied"]), 69);
    assert_eq!(n(&rule(&report, "tools-select")["applied"]), 0);
    assert_eq!(n(&report["denied"]), busy_denied);
    assert_eq!(report["first"], "2026-11-27T02:18:49.500Z");
    assert_eq!(report["last"], "2026-11-27T02:18:54.400Z");

    let stderr = text(&out.stderr);
    assert!(stderr.contains(":8: skipped: not JSON"), "{stderr}");
    assert!(stderr.contains(":21: skipped: no \"ts\""), "{stderr}");
    assert!(stderr.contains(":31: skipped: header \"x-tenant-id\": not a string or null"), "{stderr}");
    assert!(stderr.contains("3 bad line(s) skipped"), "{stderr}");
}

#[test]
fn the_table_shows_each_rule_and_the_keys_denied_most() {
    let log = Temp::new("table.log", &log());
    let out = sluicectl(&["simulate", "--policy", GATEWAY, "--log", log.path()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let row = |name: &str| -> Vec<String> {
        let l = stdout.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_else(|| panic!("no row {name}:\n{stdout}"));
        l.split_whitespace().map(String::from).collect()
    };
    let list = row("tools-list");
    assert_eq!(list[1..3], ["global".to_string(), "60".to_string()], "{stdout}");
    let denied: u64 = list[5].parse().unwrap();
    assert!((20..=25).contains(&denied), "{stdout}");
    assert_eq!(list[3].parse::<u64>().unwrap(), 60 - denied);
    assert_eq!(row("integration-notion")[2..7], ["9", "9", "6", "0", "0"].map(String::from), "{stdout}");
    let total = row("total");
    assert_eq!(total[2..7], ["69".to_string(), (69 - denied).to_string(), "6".into(), denied.to_string(), "0".into()], "{stdout}");
    assert!(stdout.contains(&format!("{denied:>8}  tenant=busy\n")), "{stdout}");
    assert!(!stdout.contains("tenant=calm"), "{stdout}");
    assert!(stdout.contains("69 requests from 2026-11-27T02:18:49.500Z to 2026-11-27T02:18:54.400Z"), "{stdout}");
}

#[test]
fn unreadable_input_is_reported_not_panicked_on() {
    let empty = Temp::new("empty.log", "\n\n");
    let out = sluicectl(&["simulate", "--policy", GATEWAY, "--log", empty.path()]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("no requests to replay"));

    let junk: String = (0..8).map(|i| format!("junk {i}\n")).collect();
    let bad = Temp::new("bad.log", &junk);
    let out = sluicectl(&["simulate", "--policy", GATEWAY, "--log", bad.path()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(":5: skipped: not JSON") && !stderr.contains(":6: skipped"), "{stderr}");
    assert!(stderr.contains("8 bad line(s) skipped (3 more not shown)"), "{stderr}");
    assert!(stderr.contains("no line could be replayed"), "{stderr}");

    let binary = Temp::new("binary.log", "");
    std::fs::write(&binary.0, [0xff, 0xfe, b'\n']).unwrap();
    let out = sluicectl(&["simulate", "--policy", GATEWAY, "--log", binary.path()]);
    assert!(text(&out.stderr).contains(":1: skipped: not UTF-8 text"), "{}", text(&out.stderr));

    let out = sluicectl(&["simulate", "--policy", GATEWAY, "--log", "/nonexistent/sluice.log"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read /nonexistent/sluice.log"));

    let policy = Temp::new("bad-policy.json", r#"{"rules": [{"name": "x"}]}"#);
    let out = sluicectl(&["simulate", "--policy", policy.path(), "--log", empty.path()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("policy refused"), "{}", text(&out.stderr));
}
