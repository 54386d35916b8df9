//! Hot reload through ECDS in a real Envoy: a good policy takes effect fast,
//! keeps the counts of unchanged rules and fails no request; a bad one is
//! refused with one log line naming the problem, and the old one stays.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{eventually, Stack};

const REJECTED: &str = "extension_config_discovery.http_filter.sluice.update_rejected";
const ACCEPTED: &str = "extension_config_discovery.http_filter.sluice.update_success";

/// Three rules on three paths; `list` is the one whose limit changes.
fn policy(list_limit: u32, rekeyed_key: &str) -> String {
    format!(
        r#"{{"tenant": [{{"header": "x-tenant-id"}}], "rules": [
        {{"name": "list", "match": {{"paths": [{{"exact": "/list"}}]}}, "key": ["tenant"], "limit": {{"requests": {list_limit}, "per": "1h"}}}},
        {{"name": "kept", "match": {{"paths": [{{"exact": "/kept"}}]}}, "key": ["tenant"], "limit": {{"requests": 3, "per": "1h"}}}},
        {{"name": "rekeyed", "match": {{"paths": [{{"exact": "/rekeyed"}}]}}, "key": [{rekeyed_key}], "limit": {{"requests": 3, "per": "1h"}}}}
    ]}}"#
    )
}

#[test]
fn a_bad_policy_is_refused_and_the_old_one_stays() {
    let stack = Stack::start(&policy(5, r#""tenant""#));
    let t = [("x-tenant-id", "a")];
    assert_eq!(stack.admitted(3, "GET", "/list", &t), 3);
    let accepted = stack.envoy.stat(ACCEPTED).unwrap_or(0);
    for (bad, logged) in [
        (r#"{"rules": [{"name": "list", "limit": {"requests": 0, "per": "1s"}}]}"#, "rules[0].limit.requests: must be a whole number"),
        (r#"{"rules": [{"name": "x", "limit": {"requests": 1, "per": "1s"}, "burts": 4}]}"#, "rules[0].burts: unknown field `burts`"),
        (
            r#"{"rules": [{"name": "x", "match": {"paths": [{"template": "/a/{b"}]}, "limit": {"requests": 1, "per": "1s"}}]}"#,
            "rules[0].match.paths[0].template",
        ),
        ("not json", "expected ident"),
    ] {
        let before = stack.envoy.stat(REJECTED).unwrap_or(0);
        stack.envoy.apply_policy(bad).unwrap();
        stack.envoy.wait_for_stat(REJECTED, |v| v > before, Duration::from_secs(5)).expect("rejected");
        let log = stack.envoy.logs_tail(400);
        let line = log.lines().find(|l| l.contains("policy refused") && l.contains(logged));
        assert!(line.is_some(), "no log line with {logged:?}:\n{log}");
    }
    assert_eq!(stack.envoy.stat(ACCEPTED).unwrap_or(0), accepted);
    // The old policy still counts: 2 of 5 left for tenant a.
    assert_eq!(stack.admitted(4, "GET", "/list", &t), 2);
}

#[test]
fn a_good_policy_applies_fast_keeps_counts_and_fails_nothing() {
    let stack = Stack::start(&policy(5, r#""tenant""#));
    let t = [("x-tenant-id", "a")];
    assert_eq!(stack.admitted(3, "GET", "/kept", &t), 3);
    assert_eq!(stack.admitted(3, "GET", "/rekeyed", &t), 3);

    // Background traffic on every path throughout the switch.
    let stop = Arc::new(AtomicBool::new(false));
    let statuses = Arc::new(Mutex::new(BTreeMap::<u16, u64>::new()));
    let port = stack.envoy.port();
    let background = {
        let (stop, statuses) = (stop.clone(), statuses.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && i < 50_000 {
                let path = ["/list", "/kept", "/rekeyed", "/other"][(i % 4) as usize];
                let tenant = format!("bg-{}", i % 7);
                let url = format!("http://127.0.0.1:{port}{path}");
                let status = wasm_test_harness::get(&url, &[("x-tenant-id", &tenant)]).map_or(0, |r| r.status);
                *statuses.lock().unwrap().entry(status).or_default() += 1;
                i += 1;
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));

    let applied = Instant::now();
    stack.envoy.apply_policy(&policy(2, r#"{"header": "x-user"}"#)).unwrap();
    // A fresh tenant sees the new limit of 2 within 2 s.
    let mut n = 0;
    let took_effect = common::eventually(Duration::from_secs(2), || {
        n += 1;
        let fresh = format!("fresh-{n}");
        stack.admitted(3, "GET", "/list", &[("x-tenant-id", &fresh)]) == 2
    });
    let elapsed = applied.elapsed();
    assert!(took_effect, "new limit not in force after {elapsed:?}");
    println!("new limit in force after {elapsed:?}");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    background.join().unwrap();

    let statuses = statuses.lock().unwrap().clone();
    let total: u64 = statuses.values().sum();
    assert!(total > 50, "background traffic ran: {statuses:?}");
    assert!(statuses.keys().all(|s| *s == 200 || *s == 429), "a request failed during the switch: {statuses:?}");
    // Unchanged name and key: the count survived. Changed key: fresh buckets.
    assert_eq!(stack.get("/kept", &t).status, 429);
    assert_eq!(stack.admitted(3, "GET", "/rekeyed", &[("x-tenant-id", "a"), ("x-user", "u1")]), 3);
    assert!(eventually(Duration::from_secs(1), || stack.envoy.stat(REJECTED).unwrap_or(0) == 0));
}
