//! The core guarantee under contention: many tasks reserving at once, through
//! several service replicas, are never granted more than `limit` in a window.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: failing loudly is the point.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use sluice_counter::{app, CounterStore, MemoryStore, RedisStore, RedisTarget};
use support::redis_procs::Cluster;
use support::{lease, redis_store, reserve_ok};

const LIMIT: u64 = 100;
const TASKS: u64 = 32;
const ROUNDS: u64 = 25;

/// Runs TASKS tasks × ROUNDS requests over `apps` (round robin) against one
/// counter with 1 s windows, mixing current and next-window reservations, and
/// checks the grants per window.
async fn hammer(apps: Vec<Router>) {
    let apps = Arc::new(apps);
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let apps = apps.clone();
        tasks.push(tokio::spawn(async move {
            let mut grants = Vec::new();
            for round in 0..ROUNDS {
                let app = &apps[((t + round) as usize) % apps.len()];
                let want = 1 + (t * 7 + round * 3) % 9;
                let next = (t + round) % 4 == 0;
                let (_, r) =
                    reserve_ok(app, vec![lease("hot", "one", LIMIT, 1_000, want, next)]).await;
                let granted = r[0]["granted"].as_u64().expect("granted");
                let used = r[0]["used"].as_u64().expect("used");
                assert!(granted <= want && used <= LIMIT, "{}", r[0]);
                grants.push((r[0]["window"].as_u64().expect("window"), granted));
            }
            grants
        }));
    }
    let mut per_window: BTreeMap<u64, u64> = BTreeMap::new();
    for task in tasks {
        for (window, granted) in task.await.expect("task") {
            *per_window.entry(window).or_default() += granted;
        }
    }
    for (window, total) in &per_window {
        assert!(*total <= LIMIT, "window {window} granted {total} > {LIMIT}");
    }
    assert!(
        per_window.values().any(|&total| total == LIMIT),
        "demand far above the limit should exhaust a window: {per_window:?}"
    );
}

fn apps(stores: Vec<Arc<dyn CounterStore>>) -> Vec<Router> {
    let prefix = support::state(Arc::new(MemoryStore::new())).prefix;
    stores
        .into_iter()
        .map(|store| {
            let mut state = support::state(store);
            state.prefix = prefix.clone();
            app(state)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn memory_store_never_grants_beyond_the_limit() {
    hammer(apps(vec![Arc::new(MemoryStore::new())])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn redis_replicas_never_grant_beyond_the_limit() {
    let redis = wasm_test_harness::Redis::start().expect("redis");
    let stores = (0..3).map(|_| redis_store(&redis.url(), 1_000)).collect();
    hammer(apps(stores)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn redis_cluster_replicas_never_grant_beyond_the_limit() {
    let cluster = Cluster::start();
    let target = RedisTarget::Cluster(cluster.urls());
    let stores = (0..3)
        .map(|_| {
            let store = RedisStore::new(&target, Duration::from_secs(1)).expect("store");
            Arc::new(store) as Arc<dyn CounterStore>
        })
        .collect();
    hammer(apps(stores)).await;
}
