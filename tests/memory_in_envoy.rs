//! A million distinct client IPs through a real Envoy: its memory stops
//! growing at the slot bound the policy sets, and a busy client is still
//! held to its limit while the table churns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Stack;
use wasm_test_harness::{load, LoadOptions, RequestSpec};

const SLOTS: u64 = 16_384;
const PHASE: u64 = 250_000;
const MIB: u64 = 1024 * 1024;

fn policy() -> String {
    format!(
        r#"{{"slots": {SLOTS}, "trusted_hops": 1, "rules": [
        {{"name": "per-ip", "key": ["client_ip"], "limit": {{"requests": 1000, "per": "1s"}}}},
        {{"name": "hot", "match": {{"paths": [{{"prefix": "/hot"}}]}}, "key": ["client_ip"], "limit": {{"requests": 50, "per": "1s"}}}}
    ]}}"#
    )
}

/// Request `i` comes from its own address: 10.a.b.c, 16.7M possible.
fn distinct_ip(offset: u64) -> Arc<dyn Fn(u64) -> RequestSpec + Send + Sync> {
    Arc::new(move |i| {
        let n = i + offset;
        let ip = format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255);
        RequestSpec::get("/api/v1/x").header("x-forwarded-for", &ip)
    })
}

#[test]
fn memory_is_bounded_by_the_slot_table() {
    let stack = Stack::with_workers(&policy(), 2);
    let port = stack.envoy.port();
    let mut rss = Vec::new();
    let mut hot = None;
    for phase in 0..4u64 {
        let hot_client = (phase == 3).then(|| {
            std::thread::spawn(move || {
                load(LoadOptions {
                    port,
                    connections: 2,
                    duration: Some(Duration::from_secs(5)),
                    rate: Some(200.0),
                    request: Arc::new(|_| RequestSpec::get("/hot").header("x-forwarded-for", "192.0.2.1")),
                    ..Default::default()
                })
                .unwrap()
            })
        });
        let report = load(LoadOptions {
            port,
            connections: 32,
            total: Some(PHASE),
            duration: Some(Duration::from_secs(240)),
            request: distinct_ip(phase * PHASE),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(report.errors, 0, "{report:?}");
        assert_eq!(report.count(200), PHASE, "one request per new client is never limited: {report:?}");
        if let Some(h) = hot_client {
            hot = Some(h.join().unwrap());
        }
        rss.push(stack.envoy.rss_bytes().unwrap());
        println!("after {} distinct IPs: Envoy RSS {} MiB ({:.0} req/s)", (phase + 1) * PHASE, rss[phase as usize] / MIB, report.rps());
    }
    let growth = rss[3].saturating_sub(rss[0]);
    assert!(growth < 16 * MIB, "RSS grew {} MiB between 250k and 1M distinct IPs: {rss:?}", growth / MIB);
    // The busy client sent 200/s for ~5 s against 50/s: at most 50 * (t + 1).
    let hot = hot.unwrap();
    let admitted = hot.count(200) as f64;
    let bound = 50.0 * (hot.elapsed.as_secs_f64() + 1.0);
    println!("hot client: {admitted} admitted of {} in {:?} (bound {bound:.0})", hot.responses(), hot.elapsed);
    assert!(hot.responses() >= 900, "{hot:?}");
    assert!(admitted <= bound && admitted >= 0.9 * 50.0 * hot.elapsed.as_secs_f64(), "hot client admitted {admitted}: {hot:?}");
}
