//! Each algorithm enforced in a real Envoy, and one bucket shared by both
//! workers of an instance.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Stack;

const ALGORITHMS: &str = r#"{"rules": [
    {"name": "bucket", "match": {"paths": [{"prefix": "/bucket"}]}, "key": [{"header": "x-user"}],
     "algorithm": "token_bucket", "limit": {"requests": 60, "per": "1h", "burst": 4}},
    {"name": "fixed", "match": {"paths": [{"prefix": "/fixed"}]}, "key": [{"header": "x-user"}],
     "algorithm": "fixed_window", "limit": {"requests": 3, "per": "1h"}},
    {"name": "sliding", "match": {"paths": [{"prefix": "/sliding"}]}, "key": [{"header": "x-user"}],
     "algorithm": "sliding_window", "limit": {"requests": 6, "per": "1h"}}
]}"#;

#[test]
fn each_algorithm_admits_its_limit() {
    let stack = Stack::start(ALGORITHMS);
    for (path, admitted) in [("/bucket", 4), ("/fixed", 3), ("/sliding", 6)] {
        let u = [("x-user", "ann")];
        assert_eq!(stack.admitted(10, "GET", path, &u), admitted, "{path}");
        let r = stack.get(path, &u);
        assert_eq!(r.status, 429);
        assert_eq!(r.json().unwrap()["limits"]["tier"], path.trim_start_matches('/'));
        assert_eq!(stack.get(path, &[("x-user", "bob")]).status, 200, "{path}: other key");
    }
    // The token bucket refills at 60/h: one more after a minute, not before.
    let r = stack.get("/bucket", &[("x-user", "ann")]);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((60..=66).contains(&retry), "{retry}");
}

#[test]
fn both_workers_share_one_bucket() {
    let stack = Stack::with_workers(r#"{"rules": [{"name": "shared", "key": [], "limit": {"requests": 40, "per": "1h"}}]}"#, 2);
    // A new connection per request; Envoy spreads connections over workers.
    let admitted = stack.admitted(120, "GET", "/x", &[]);
    assert_eq!(admitted, 40);
    let stats = stack.envoy.stats().unwrap();
    let per_worker = |w: u32| {
        stats
            .iter()
            .filter(|(k, _)| k.starts_with("listener.127.0.0.1_") && k.ends_with(&format!("worker_{w}.downstream_cx_total")))
            .map(|(_, v)| *v)
            .sum::<u64>()
    };
    assert!(per_worker(0) > 0 && per_worker(1) > 0, "both workers served: {} / {}", per_worker(0), per_worker(1));
}
