//! `policies/examples/daily-budget.json` enforced by the filter in a real
//! Envoy: 100 `POST /api/v1/tools/select` per tenant per UTC day
//! (`tools-select-daily`), counted by the counter service.
//!
//! The per-second rules the requests also pass (`tools-select` at 10/s,
//! `per-tenant` at 100/s) are raised to 1000/s here, so that a test can send
//! a day's budget in a second or two and only the budget refuses.
//!
//! The wall clock: a test works out the next UTC midnight (what `resetAt`
//! must name) and needs the whole test to fall within one UTC day; one
//! started within `MIDNIGHT_MARGIN` of midnight first waits until just after
//! it, and one that crosses midnight all the same fails saying so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{patient, Cluster, Stack};
use serde_json::Value;
use sluice_core::response::rfc3339;
use wasm_test_harness::{CounterOptions, Envoy, EnvoyOptions, Redis, Response};

const EXAMPLE: &str = include_str!("../policies/examples/daily-budget.json");
const SELECT: &str = "/api/v1/tools/select";
const BUDGET: u64 = 100;
const DAY: u64 = 86_400;
/// The longest a test here takes, with room for a loaded machine.
const MIDNIGHT_MARGIN: u64 = 180;

/// The example with `tools-select` and `per-tenant` at 1000 a second;
/// `closed` also makes the budget fail closed (a 503, nothing counted,
/// while the counter service cannot be reached: the docs' advice for a
/// strict budget), so that no request is admitted uncounted in the moment
/// a restarted service is reconnected.
fn policy(closed: bool) -> String {
    let mut doc: Value = serde_json::from_str(&patient(EXAMPLE)).unwrap();
    let rules = doc["rules"].as_array_mut().unwrap();
    let mut found = 0;
    for rule in rules.iter_mut() {
        match rule["name"].as_str().unwrap() {
            "tools-select" | "per-tenant" => {
                assert_eq!(rule["limit"]["per"], "1s");
                rule["limit"]["requests"] = 1000.into();
                found += 1;
            }
            "tools-select-daily" => {
                assert_eq!(rule["limit"], serde_json::json!({"requests": BUDGET, "calendar": "day"}));
                if closed {
                    rule["failure_mode"] = "closed".into();
                }
                found += 1;
            }
            _ => {}
        }
    }
    assert_eq!(found, 3, "the example lacks a rule this test derives");
    doc.to_string()
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Waits out the last `MIDNIGHT_MARGIN` seconds of a UTC day; returns the
/// day (days since the epoch) the test runs in.
fn a_day_to_run_in() -> u64 {
    let left = DAY - now_s() % DAY;
    if left < MIDNIGHT_MARGIN {
        eprintln!("{left} s to UTC midnight: waiting until just after it");
        std::thread::sleep(Duration::from_secs(left + 2));
    }
    now_s() / DAY
}

/// Fails when the test has run into the next UTC day.
fn still(day: u64) {
    assert_eq!(now_s() / DAY, day, "the test crossed UTC midnight (started more than {MIDNIGHT_MARGIN} s before it): run it again");
}

fn select(envoy: &Envoy, tenant: &str) -> Response {
    wasm_test_harness::request("POST", &envoy.url(SELECT), &[("x-tenant-id", tenant)], "{}").expect("request")
}

/// Checks `r` is the budget's 429 on `day`: `tools-select-daily` in the
/// body, reset at the next UTC midnight in the body and the headers, and a
/// `Retry-After` of the time until then (plus its jitter, at most 5 s).
fn assert_budget_refusal(r: &Response, day: u64, sent_at: u64) {
    assert_eq!(r.status, 429, "{}", r.body);
    let midnight = (day + 1) * DAY;
    let body = r.json().unwrap();
    let limits = &body["limits"];
    assert_eq!(limits["tier"], "tools-select-daily", "{}", r.body);
    assert_eq!(limits["limit"], BUDGET);
    assert_eq!(limits["remaining"], 0);
    assert_eq!(limits["window"], "1 day");
    assert_eq!(limits["resetAt"], rfc3339(midnight).as_str());
    assert_eq!(r.header("x-ratelimit-reset"), Some(midnight.to_string().as_str()));
    assert_eq!(r.header("x-ratelimit-limit"), Some("100"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(r.header("ratelimit-policy"), Some("\"tools-select-daily\";q=100;w=86400"));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    let (least, most) = ((midnight - now_s()).saturating_sub(1), midnight - sent_at + 6);
    assert!((least..=most).contains(&retry), "Retry-After {retry}, expected {least}..={most}");
    assert_eq!(body["retryAfter"], retry);
}

#[test]
fn the_hundred_and_first_select_of_the_day_is_refused_until_midnight() {
    let stack = Stack::start(&policy(false));
    let day = a_day_to_run_in();
    for i in 0..BUDGET {
        let r = select(&stack.envoy, "acme");
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
    }
    let sent_at = now_s();
    let r = select(&stack.envoy, "acme");
    assert_budget_refusal(&r, day, sent_at);
    eprintln!("101st: {} Retry-After {} at {}", r.body, r.header("retry-after").unwrap(), rfc3339(sent_at));
    // Still refused, and other tenants are not.
    assert_eq!(select(&stack.envoy, "acme").status, 429);
    let globex: Vec<u16> = (0..10).map(|_| select(&stack.envoy, "globex").status).collect();
    assert_eq!(globex, [200; 10]);
    // The budget is the tenant's tools/select only.
    assert_eq!(stack.get("/api/v1/tools/list", &[("x-tenant-id", "acme")]).status, 200);
    assert_eq!(select(&stack.envoy, "acme").status, 429);
    // The log lines name the window as the 429 does.
    let logged = |what: &str| {
        let tail = stack.envoy.logs_tail(2000);
        tail.lines().find(|l| l.contains(what) && l.contains(r#"{"rule":"tools-select-daily""#)).map(str::to_string)
    };
    assert!(common::eventually(Duration::from_secs(5), || logged("rate limit exceeded").is_some()), "{}", stack.envoy.logs_tail(40));
    let approaching = logged("rate limit approaching").expect("no approaching line for the budget");
    let window = format!(r#""limit":100,"window":"1 day","resetAt":"{}"}}"#, rfc3339((day + 1) * DAY));
    assert!(approaching.ends_with(&window), "{approaching}");
    eprintln!("{approaching}");
    still(day);
}

/// A minimal Redis client: one command, its reply as text (integers and
/// bulk strings), arrays flattened; `None` for a nil.
fn redis(port: u16, args: &[&str]) -> Vec<Option<String>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut cmd = format!("*{}\r\n", args.len());
    for a in args {
        cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(cmd.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut out = Vec::new();
    let mut pending = 1;
    while pending > 0 {
        pending -= 1;
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let line = line.trim_end();
        let (kind, rest) = line.split_at(1);
        match kind {
            "*" => pending += rest.parse::<usize>().unwrap(),
            ":" | "+" => out.push(Some(rest.to_string())),
            "$" if rest == "-1" => out.push(None),
            "$" => {
                let mut v = String::new();
                r.read_line(&mut v).unwrap();
                out.push(Some(v.trim_end().to_string()));
            }
            _ => panic!("Redis answered {line}"),
        }
    }
    out
}

/// Units of `tenant`'s budget on `day` the counter service has handed out
/// (spent or leased), as Redis holds them.
fn counted_in_redis(redis_port: u16, tenant: &str, day: u64) -> u64 {
    let key = format!("rl:tools-select-daily:{{{tenant}}}:day");
    let fields = redis(redis_port, &["HMGET", &key, "w", "n"]);
    match fields.as_slice() {
        [Some(w), Some(n)] => {
            assert_eq!(w.parse::<u64>().unwrap(), day, "{key} counts another day");
            n.parse().unwrap()
        }
        _ => panic!("{key}: {fields:?}; keys: {:?}", redis(redis_port, &["KEYS", "*"])),
    }
}

fn start_envoy(cluster: &Cluster, instance: u32, policy: &str) -> Envoy {
    Envoy::start(EnvoyOptions {
        instance,
        upstream_port: cluster.echo.port(),
        counter_port: cluster.counter.port(),
        policy_json: policy.to_string(),
        concurrency: 2,
        ..Default::default()
    })
    .expect("envoy")
}

/// Sends `n` requests of `tenant` to each instance in turn; returns how
/// many were admitted. A 503 (the budget failing closed while the service
/// is reconnected: nothing counted) is sent again.
fn spend(cluster: &Cluster, tenant: &str, n: usize) -> (u64, u64) {
    let (mut admitted, mut unavailable) = (0, 0);
    for i in 0..n {
        for envoy in &cluster.envoys {
            loop {
                let r = select(envoy, tenant);
                match r.status {
                    200 => admitted += 1,
                    503 if unavailable < 50 => {
                        unavailable += 1;
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                    _ => panic!("request {i} to {}: {} {}", envoy.port(), r.status, r.body),
                }
                break;
            }
        }
    }
    (admitted, unavailable)
}

/// Sends `tenant`'s requests to every instance in turn until three rounds
/// in a row are all refused (each refusal the budget's); returns how many
/// were admitted.
fn spend_the_rest(cluster: &Cluster, tenant: &str, day: u64) -> u64 {
    let (mut admitted, mut refused_rounds) = (0, 0);
    for _ in 0..300 {
        let mut refused = 0;
        for envoy in &cluster.envoys {
            let sent_at = now_s();
            let r = select(envoy, tenant);
            match r.status {
                200 => admitted += 1,
                429 => {
                    assert_budget_refusal(&r, day, sent_at);
                    refused += 1;
                }
                503 => std::thread::sleep(Duration::from_millis(50)),
                _ => panic!("{} {}", r.status, r.body),
            }
        }
        if refused == cluster.envoys.len() {
            refused_rounds += 1;
            if refused_rounds == 3 {
                return admitted;
            }
            std::thread::sleep(Duration::from_millis(100));
        } else {
            refused_rounds = 0;
        }
    }
    panic!("still admitting after 300 rounds ({admitted} admitted)");
}

#[test]
fn the_budget_lives_in_redis_across_restarts_of_the_service_and_every_envoy() {
    let policy = policy(true);
    let redis_server = Redis::start().expect("redis");
    let counter = CounterOptions { redis_url: Some(redis_server.url()), redis_timeout_ms: Some(900), ..Default::default() };
    let mut cluster = Cluster::start(&policy, 2, counter);
    let day = a_day_to_run_in();
    let tenant = "acme";

    // 20 at each of the two instances.
    let (spent1, _) = spend(&cluster, tenant, 20);
    assert_eq!(spent1, 40);
    let counted1 = counted_in_redis(redis_server.port(), tenant, day);

    // The counter service restarts: the instances keep their leases and
    // the service reads the count from Redis.
    cluster.counter.restart().expect("counter service restarted");
    let (spent2, unavailable) = spend(&cluster, tenant, 10);
    assert_eq!(spent2, 20);
    let spent = spent1 + spent2;
    let counted2 = counted_in_redis(redis_server.port(), tenant, day);
    assert!(counted2 >= spent && counted2 >= counted1 && counted2 <= BUDGET, "{counted2} counted after {spent} spent");

    // Every Envoy stops: units they leased and had not spent are lost for
    // the day (what Redis counts beyond what was admitted). Then the service
    // restarts too, and two new Envoys start.
    cluster.envoys.clear();
    let counted = counted_in_redis(redis_server.port(), tenant, day);
    let lost = counted - spent;
    cluster.counter.restart().expect("counter service restarted");
    cluster.envoys = (0..2).map(|i| start_envoy(&cluster, i, &policy)).collect();

    // The rest of the day's budget, not a fresh one: exactly what Redis had
    // not handed out.
    let rest = spend_the_rest(&cluster, tenant, day);
    eprintln!(
        "admitted {spent1} + {spent2} (service restarted; {unavailable} requests answered 503 meanwhile), Redis counted {counted1} then {counted2}; \
         every Envoy and the service restarted with {counted} counted ({lost} leased and lost); then {rest} more admitted: {} of {BUDGET}",
        spent + rest
    );
    assert_eq!(rest, BUDGET - counted, "admitted after the restarts");
    assert_eq!(counted_in_redis(redis_server.port(), tenant, day), BUDGET);
    // Another tenant has its own budget.
    assert_eq!(spend(&cluster, "globex", 5).0, 10);
    still(day);
}
