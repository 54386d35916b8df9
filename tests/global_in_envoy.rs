//! Global rules in real Envoy instances sharing one counter service and one
//! real Redis: accuracy under overload, calls per admission, and what
//! happens when the service or Redis fails, slows down or talks garbage.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{align_to_second, eventually, Cluster};
use wasm_test_harness::{load, load_each, CounterOptions, LoadOptions, LoadReport, Redis, RequestSpec};

fn policy(failure_mode: &str, instances: u32) -> String {
    format!(
        r#"{{"global": {{"expected_instances": {instances}, "timeout": "50ms"}},
        "tenant": [{{"header": "x-tenant-id"}}], "rules": [
        {{"name": "per-tenant", "scope": "global", "failure_mode": "{failure_mode}", "key": ["tenant"], "limit": {{"requests": 100, "per": "1s"}}}},
        {{"name": "tools-invoke", "scope": "global", "failure_mode": "{failure_mode}", "match": {{"methods": ["POST"], "paths": [{{"exact": "/api/v1/tools/invoke"}}]}},
          "key": ["tenant"], "limit": {{"requests": 20, "per": "1s"}}}}
    ]}}"#
    )
}

/// `policy` with credit turned off: a key's first requests wait for their
/// reservations, so that a window admits exactly its limit even when a
/// new key jumps from nothing to over its limit.
fn without_credit(policy: &str) -> String {
    let strict = policy.replacen(r#""global": {"#, r#""global": {"credit": false, "#, 1);
    assert_ne!(strict, policy, "the policy has no global section");
    strict
}

fn redis_counter(redis: &Redis) -> CounterOptions {
    CounterOptions { redis_url: Some(redis.url()), ..Default::default() }
}

/// `redis_counter` for tests that count exactly under `common::patient`
/// policies: a Redis answer past the service's 40 ms default (a loaded
/// machine) would be a 503 for units Redis counted all the same.
fn patient_counter(redis: &Redis) -> CounterOptions {
    CounterOptions { redis_timeout_ms: Some(900), ..redis_counter(redis) }
}

/// Offers `rate` requests/s of `spec` to every instance for `secs` seconds.
fn overload(cluster: &Cluster, rate: f64, secs: u64, spec: RequestSpec) -> Vec<LoadReport> {
    cluster.offer(rate, Duration::from_secs(secs), &spec)
}

fn admitted(reports: &[LoadReport]) -> u64 {
    reports.iter().map(|r| r.count(200)).sum()
}

/// Offers `rate`/s of `spec` to every instance: one window to warm the
/// key's leases up (a key's first window pays for paused calls), then 10
/// whole windows measured. Returns (offered, admitted, counter calls).
fn measure(cluster: &Cluster, rate: f64, spec: RequestSpec) -> (u64, u64, u64) {
    align_to_second();
    overload(cluster, rate, 1, spec.clone());
    align_to_second();
    let calls_before = cluster.counter_calls();
    let reports = overload(cluster, rate, 10, spec);
    for r in &reports {
        assert_eq!(r.errors, 0, "{r:?}");
        assert!(r.statuses.keys().all(|s| *s == 200 || *s == 429), "{r:?}");
    }
    let offered = reports.iter().map(LoadReport::responses).sum();
    (offered, admitted(&reports), cluster.counter_calls() - calls_before)
}

#[test]
fn three_instances_admit_the_global_limit() {
    let redis = Redis::start().unwrap();
    let cluster = Cluster::start(&policy("open", 3), 3, redis_counter(&redis));
    // 100/s per tenant, offered 3 x 100/s.
    let (offered, tenant, calls) = measure(&cluster, 100.0, RequestSpec::get("/api/v1/anything").header("x-tenant-id", "tenant-a"));
    println!(
        "per-tenant 100/s: offered {offered}, admitted {tenant} of 1000 allowed ({:.1}%), {calls} counter calls ({:.3} per admitted)",
        tenant as f64 / 10.0,
        calls as f64 / tenant as f64
    );
    assert!(offered >= 2900, "offered {offered}");
    // At most 5 % under: 943 was seen in CI on a loaded machine, and 945
    // and 946 here with three busy loops beside the test, for this build
    // and the one before it alike; 993-1001 when the machine is quiet.
    // The bench's accuracy scenario holds the issue's bound (99-100.1 %).
    assert!((930..=1010).contains(&tenant), "admitted {tenant} of 1000");
    // One reservation per instance and span of four windows (0.0075 per
    // admitted; 0.03 with one reservation per window, 1.0 asking per
    // request). A loaded machine adds a refill or a wait now and then.
    assert!(calls as f64 <= 0.02 * tenant as f64, "{calls} calls for {tenant} admitted");

    // tools/invoke: 20/s per tenant, offered 3 x 20/s.
    let mut spec = RequestSpec::get("/api/v1/tools/invoke").header("x-tenant-id", "tenant-b");
    spec.method = "POST".into();
    let (_, invoke, calls) = measure(&cluster, 20.0, spec);
    println!(
        "tools-invoke 20/s: admitted {invoke} of 200 allowed ({:.1}%), {calls} counter calls ({:.3} per admitted)",
        invoke as f64 / 2.0,
        calls as f64 / invoke as f64
    );
    assert!((180..=202).contains(&invoke), "admitted {invoke} of 200");
}

/// A worker's requests of a busy key spend from its memory (a share of
/// the local bucket, a loan of the global lease), and the metrics say so.
#[test]
fn a_busy_key_is_served_from_the_workers_memory_within_its_limits() {
    let redis = Redis::start().unwrap();
    let policy = r#"{"global": {"expected_instances": 2, "timeout": "50ms"}, "tenant": [{"header": "x-tenant-id"}], "rules": [
        {"name": "per-tenant", "scope": "global", "key": ["tenant"], "limit": {"requests": 1000, "per": "1s"}},
        {"name": "tenant-burst", "key": ["tenant"], "limit": {"requests": 2000, "per": "1s"}}]}"#;
    let cluster = Cluster::start(policy, 2, redis_counter(&redis));
    let spec = RequestSpec::get("/api/v1/items").header("x-tenant-id", "busy");
    let from_memory = |rule: &str| -> u64 {
        // Counters reach Envoy on each worker's next tick.
        std::thread::sleep(Duration::from_millis(300));
        cluster.envoys.iter().filter_map(|e| common::rule_stat(e, "sluice_worker_share_admitted_total", rule)).sum()
    };
    // 300/s at each instance, well under both limits: every request goes.
    overload(&cluster, 300.0, 1, spec.clone());
    let before = (from_memory("per-tenant"), from_memory("tenant-burst"));
    let reports = overload(&cluster, 300.0, 2, spec);
    let offered: u64 = reports.iter().map(LoadReport::responses).sum();
    assert_eq!(admitted(&reports), offered, "{reports:?}");
    let (lent, shared) = (from_memory("per-tenant") - before.0, from_memory("tenant-burst") - before.1);
    println!("of {offered} admitted: {lent} from loans of per-tenant's lease, {shared} from shares of tenant-burst");
    // A loan is a sixteenth of the limit at most and lasts 250 ms: the
    // requests that take or repay one cross, most of the others do not.
    assert!(lent >= offered / 2 && lent <= offered, "{lent} of {offered} from loans");
    assert!(shared >= offered / 2 && shared <= offered, "{shared} of {offered} from shares");
}

/// A key whose traffic moves to another instance: the first instance's
/// leader gives back what it reserved for the windows ahead (a give-back
/// found by its sweep, sent with its next batched call), and the second
/// instance gets that budget instead of waiting for those windows to end.
#[test]
fn a_key_whose_traffic_moves_gives_its_reservations_ahead_back() {
    let redis = Redis::start().unwrap();
    let cluster = Cluster::start(&policy("open", 2), 2, redis_counter(&redis));
    let spec = RequestSpec::get("/api/v1/anything").header("x-tenant-id", "moving");
    let at = |envoy: usize, span: Duration| load_each(&[cluster.envoys[envoy].port()], 80.0, span, &spec).remove(0).expect("load");
    // Spans end on windows 3 mod 4: traffic from a window 2 mod 4 renews
    // in its second window for the four windows after it. The traffic
    // moves at the start of the third, so without a give-back the first
    // instance would hold some 90 of the 100 in it and the two after.
    let window = || SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    align_to_second();
    while window() % 4 != 2 {
        align_to_second();
    }
    let first = at(0, Duration::from_millis(2900));
    assert!(first.count(200) >= 220, "{first:?}");
    align_to_second();
    let second = at(1, Duration::from_secs(3));
    let stats = cluster.envoys[0].stats().expect("stats");
    let given_back = stats.iter().find(|(k, _)| k.contains("sluice_lease_units_given_back_total")).map_or(0, |(_, v)| *v);
    println!("80/s moved: the second instance admitted {} of {} in three windows; {given_back} units given back", second.count(200), second.responses());
    assert!(given_back > 0, "nothing given back");
    assert!(second.count(200) >= 150, "{second:?}");
}

/// A flood past a global rule's budget: a worker that knows the key's
/// lease has nothing left in this window decides the lease first and only
/// looks at the bucket. Each refusal then reads and writes the lease's
/// slot and reads the bucket's at most, where taking a unit of the bucket
/// and giving it back would make it six calls (Envoy's count of the
/// filter's shared-data calls says which).
#[test]
fn a_flood_past_a_global_budget_makes_few_shared_data_calls_per_refusal() {
    let redis = Redis::start().unwrap();
    let policy = r#"{"global": {"expected_instances": 2, "timeout": "50ms"}, "rules": [
        {"name": "export", "scope": "global", "key": [{"header": "x-user"}], "limit": {"requests": 20, "per": "1s"}}]}"#;
    let cluster = Cluster::start(&common::patient(policy), 2, patient_counter(&redis));
    let slot_calls = || {
        // Each worker hands its count to Envoy on its next tick.
        std::thread::sleep(Duration::from_millis(300));
        cluster.envoys.iter().map(|e| e.shared_data_calls().expect("Sluice's shared-data counters")).sum::<u64>()
    };
    let spec = RequestSpec::get("/export").header("x-user", "flood");
    overload(&cluster, 100.0, 1, spec.clone());
    // What the instances' ticks read and write without traffic, then the flood.
    let (quiet_from, span) = (slot_calls(), Duration::from_secs(3));
    std::thread::sleep(span);
    let (quiet, flood_from) = (slot_calls().saturating_sub(quiet_from), slot_calls());
    let reports = cluster.offer(300.0, span, &spec);
    let flood = slot_calls().saturating_sub(flood_from).saturating_sub(quiet);
    let (refused, passed) = (reports.iter().map(|r| r.count(429)).sum::<u64>(), admitted(&reports));
    let per = flood as f64 / refused.max(1) as f64;
    println!("a flood of 2 x 300/s on 20/s for 3 s: {passed} admitted, {refused} refused, {flood} shared-data calls ({per:.2} per refusal; {quiet} in 3 s without traffic)");
    assert!(refused >= 1000 && passed <= 80, "{reports:?}");
    // About 2.2 here with the bucket and the lease decided in one write of
    // their slot; 3.3 with the lease decided first in a slot of its own,
    // 6.3 with the bucket spent from and given back. A refusal the lease
    // gives reads its slot at least.
    assert!((1.0..=3.0).contains(&per), "{per:.2} shared-data calls per refusal");
}

#[test]
fn redis_down_falls_back_open_and_recovers() {
    let mut redis = Redis::start().unwrap();
    let cluster = Cluster::start(&policy("open", 2), 1, redis_counter(&redis));
    let envoy = &cluster.envoys[0];
    let h = [("x-tenant-id", "t")];
    assert_eq!(wasm_test_harness::get(&envoy.url("/x"), &h).unwrap().status, 200);
    redis.kill();
    // Requests keep flowing, decided within the callout timeout, at the
    // instance's share (100 / 2 instances).
    std::thread::sleep(Duration::from_millis(1100));
    let started = Instant::now();
    let report = load(LoadOptions {
        port: envoy.port(),
        connections: 4,
        total: Some(120),
        request: Arc::new(|_| RequestSpec::get("/y").header("x-tenant-id", "u")),
        ..Default::default()
    })
    .unwrap();
    println!("Redis down: {report:?} in {:?}", started.elapsed());
    assert_eq!(report.errors, 0);
    assert!(report.max_us < 1_000_000, "a request waited {} us", report.max_us);
    let ok = report.count(200);
    assert!((50..=55).contains(&ok), "fallback admitted {ok} of 120 (share 50)");
    assert!(envoy.logs_tail(2000).matches("counter service unreachable").count() == 1, "logged once");
    // Redis returns: global enforcement resumes within 5 s.
    redis.restart().unwrap();
    let back = Instant::now();
    assert!(eventually(Duration::from_secs(5), || envoy.logs_tail(2000).contains("counter service reachable again")), "{}", envoy.logs_tail(40));
    println!("global enforcement back after {:?}", back.elapsed());
    align_to_second();
    let ok = (0..120).filter(|_| wasm_test_harness::get(&envoy.url("/z"), &[("x-tenant-id", "w")]).unwrap().status == 200).count();
    // One more at most: the new key's first request goes on credit, and
    // the window's whole budget may be reserved before its refill is
    // answered (the bound of credit, docs/global.md).
    assert!((100..=101).contains(&ok), "the global limit again: {ok}");
}

#[test]
fn counter_service_killed_then_restarted() {
    let redis = Redis::start().unwrap();
    let mut cluster = Cluster::start(&policy("closed", 1), 1, redis_counter(&redis));
    let url = cluster.envoys[0].url("/x");
    assert_eq!(wasm_test_harness::get(&url, &[("x-tenant-id", "t")]).unwrap().status, 200);
    cluster.counter.kill();
    // failure_mode closed: 503 with a JSON body naming the rule.
    let r = wasm_test_harness::get(&url, &[("x-tenant-id", "fresh")]).unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json().unwrap()["limits"]["tier"], "per-tenant");
    cluster.counter.restart().unwrap();
    assert!(eventually(Duration::from_secs(5), || { wasm_test_harness::get(&url, &[("x-tenant-id", "again")]).unwrap().status == 200 }));
}

#[test]
fn garbage_answers_are_not_trusted() {
    // The counter cluster points at the echo server: 200s with the wrong body.
    let echo = wasm_test_harness::EchoServer::start().unwrap();
    let envoy = wasm_test_harness::Envoy::start(wasm_test_harness::EnvoyOptions {
        upstream_port: echo.port(),
        counter_port: echo.port(),
        // Hour-long windows: no refill while the test counts.
        policy_json: policy("open", 4).replace(r#""per": "1s""#, r#""per": "1h""#),
        ..Default::default()
    })
    .unwrap();
    let ok = (0..40).filter(|_| wasm_test_harness::get(&envoy.url("/api/v1/tools/invoke"), &[("x-tenant-id", "g")]).unwrap().status == 200).count();
    // The first request goes on credit (nothing is known of the key yet,
    // nor that the service talks garbage); then per-tenant falls back to
    // 100/4 = 25 for GET; invoke is POST-only.
    assert_eq!(ok, 1 + 25);
    assert!(envoy.logs_tail(500).contains("counter service answered garbage"), "{}", envoy.logs_tail(40));
}

#[test]
fn a_slow_redis_never_holds_a_request_past_the_timeout() {
    let redis = Redis::start().unwrap();
    let cluster = Cluster::start(&policy("open", 1), 1, redis_counter(&redis));
    let port = cluster.envoys[0].port();
    let sleeper = sleep_redis(&redis, 1.5);
    // Fresh tenants: every request needs a lease while Redis sleeps.
    let report = load(LoadOptions {
        port,
        connections: 4,
        total: Some(200),
        request: Arc::new(|i| RequestSpec::get("/slow").header("x-tenant-id", &format!("slow-{i}"))),
        ..Default::default()
    })
    .unwrap();
    sleeper.join().unwrap();
    println!("slow Redis: {report:?}");
    assert_eq!(report.errors, 0);
    assert_eq!(report.count(200), 200, "failing open: each fresh tenant is within its share");
    assert!(report.max_us < 500_000, "a request waited {} us with a 50 ms timeout", report.max_us);
}

#[test]
fn a_reload_keeps_outstanding_leases_and_counts() {
    let redis = Redis::start().unwrap();
    // Patient: on a loaded machine a call past 50 ms would send requests to
    // the fallback, which counts apart.
    let policy = without_credit(&common::patient(&policy("open", 1)));
    let cluster = Cluster::start(&policy, 1, patient_counter(&redis));
    let envoy = &cluster.envoys[0];
    align_to_second();
    let h = [("x-tenant-id", "r")];
    let first = (0..60).filter(|_| wasm_test_harness::get(&envoy.url("/x"), &h).unwrap().status == 200).count();
    // Same per-tenant rule, another rule changed: counts of the window survive.
    common::reload(envoy, &policy.replace(r#""requests": 20"#, r#""requests": 25"#));
    let second = (0..60).filter(|_| wasm_test_harness::get(&envoy.url("/x"), &h).unwrap().status == 200).count();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    assert!(now.subsec_millis() < 950, "the test stayed within one window");
    assert_eq!(first + second, 100, "{first} + {second}");
}

#[test]
fn a_reload_while_a_refill_is_in_flight_loses_no_units() {
    // Hour-long windows: the count only ends at the limit. A patient
    // timeout: the refill waits for a sleeping Redis instead of failing.
    let redis = Redis::start().unwrap();
    let policy = without_credit(&common::patient(&policy("open", 1))).replace(r#""per": "1s""#, r#""per": "1h""#);
    // The service waits for Redis at least as long as Envoy waits for it.
    let cluster = Cluster::start(&policy, 1, CounterOptions { redis_timeout_ms: Some(2000), ..redis_counter(&redis) });
    let envoy = &cluster.envoys[0];
    let h = [("x-tenant-id", "in-flight")];
    let admit = |n: usize| (0..n).filter(|_| wasm_test_harness::get(&envoy.url("/x"), &h).unwrap().status == 200).count();
    assert_eq!(admit(20), 20);
    // Redis sleeps; requests go on spending the lease until the leader's
    // refill is on its way and held there (on a busy machine it may go
    // out later: up to 30 requests, about 0.6 s of Redis's 0.9 s asleep;
    // once failed in CI with 15). A refill answered just before Redis fell
    // asleep leaves none to hold (failed once in CI on a fast machine):
    // Redis then sleeps again, up to three times in all. Every request
    // admitted meanwhile is counted in `during`.
    let in_flight = || envoy.stat("cluster.sluice_counter.upstream_rq_active").unwrap_or(0) >= 1;
    let mut during = 0;
    let mut held = None;
    for _ in 0..3 {
        let sleeper = sleep_redis(&redis, 0.9);
        let mut tries = 0;
        while !in_flight() && tries < 30 {
            tries += 1;
            during += admit(1);
            std::thread::sleep(Duration::from_millis(20));
        }
        if in_flight() {
            held = Some(sleeper);
            break;
        }
        sleeper.join().unwrap();
    }
    let sleeper = held.expect("no reserve call was held by the sleeping Redis, three times");
    // The configuration that made the call is replaced meanwhile.
    common::reload(envoy, &policy.replace(r#""requests": 20"#, r#""requests": 25"#));
    sleeper.join().unwrap();
    // Every unit Redis reserved is spent by someone: 100 in all.
    let after = admit(120);
    // What the calls did, should the count be off.
    let mut calls: Vec<_> =
        envoy.stats().unwrap_or_default().into_iter().filter(|(k, _)| k.contains("sluice_lease_units") || k.contains("sluice_callout")).collect();
    calls.sort();
    assert_eq!(20 + during + after, 100, "20 + {during} + {after}; {calls:?}\n{}", envoy.logs_tail(30));
}

#[test]
fn a_quiet_key_does_not_wait_for_a_sleeping_redis_unless_credit_is_off() {
    let redis = Redis::start().unwrap();
    let policy = common::patient(&policy("open", 1));
    // The service waits for Redis at least as long as Envoy waits for it.
    let cluster = Cluster::start(&policy, 1, CounterOptions { redis_timeout_ms: Some(1000), ..redis_counter(&redis) });
    let envoy = &cluster.envoys[0];
    let timed = |tenant: &str| {
        let start = Instant::now();
        let status = wasm_test_harness::get(&envoy.url("/x"), &[("x-tenant-id", tenant)]).unwrap().status;
        (status, start.elapsed())
    };
    // A new key's first request is admitted on credit.
    let sleeper = sleep_redis(&redis, 0.8);
    let (status, took) = timed("quiet-1");
    sleeper.join().unwrap();
    println!("on credit: {status} after {took:?}");
    assert_eq!(status, 200);
    // That it asks nothing before admitting is the core's, stated exactly
    // in core/tests/global.rs (`a_quiet_key_is_admitted_on_credit_and_its_refill_pays_for_it`:
    // admitted, no call). Here: had it waited for its reserve call, it would
    // have waited out the rest of Redis's 0.8 s sleep, begun 100 ms before it
    // (`sleep_redis`), 700 ms; one trip through Envoy takes far less, and
    // 500 ms leaves a loaded machine room on both sides.
    assert!(took < Duration::from_millis(500), "waited {took:?} for a sleeping Redis");
    // Without credit it waits for its reservation.
    common::reload(envoy, &without_credit(&policy));
    let sleeper = sleep_redis(&redis, 0.8);
    let (status, took) = timed("quiet-2");
    sleeper.join().unwrap();
    println!("without credit: {status} after {took:?}");
    assert_eq!(status, 200);
    assert!(took >= Duration::from_millis(300), "answered after {took:?}: it did not wait");
}

#[test]
fn envoy_stops_at_once_while_a_reserve_call_is_in_flight() {
    // A root that waits for its calls' answers must not hold up shutdown.
    let redis = Redis::start().unwrap();
    let policy = common::patient(&policy("open", 1));
    let cluster = Cluster::start(&policy, 1, redis_counter(&redis));
    let envoy = &cluster.envoys[0];
    let sleeper = sleep_redis(&redis, 3.0);
    let url = envoy.url("/x");
    // A fresh tenant waits for its reserve call, held by the sleeping Redis.
    let client = std::thread::spawn(move || wasm_test_harness::get(&url, &[("x-tenant-id", "stopping")]).map(|r| r.status));
    assert!(eventually(Duration::from_secs(2), || envoy.stat("cluster.sluice_counter.upstream_rq_active").unwrap_or(0) >= 1), "no reserve call in flight");
    let Cluster { envoys, .. } = cluster;
    let stopping = Instant::now();
    drop(envoys);
    let took = stopping.elapsed();
    let _ = client.join();
    sleeper.join().unwrap();
    println!("Envoy stopped in {took:?} with a reserve call in flight");
    assert!(took < Duration::from_secs(2), "Envoy took {took:?} to stop");
}

/// Makes `redis` sleep for `secs` seconds, on a connection of its own.
fn sleep_redis(redis: &Redis, secs: f64) -> std::thread::JoinHandle<()> {
    let port = redis.port();
    let t = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(format!("DEBUG SLEEP {secs}\r\n").as_bytes()).unwrap();
        let mut buf = [0u8; 16];
        let _ = s.read(&mut buf);
    });
    std::thread::sleep(Duration::from_millis(100));
    t
}

#[test]
fn an_upstream_429_at_one_instance_holds_the_key_back_at_every_instance() {
    let redis = Redis::start().expect("redis");
    let cluster = Cluster::start(&common::patient(common::GATEWAY), 2, redis_counter(&redis));
    let notion = [("x-integration", "notion"), ("x-tenant-id", "shared-block")];
    let send = |i: usize, extra: &[(&str, &str)]| {
        let url = cluster.envoys[i].url("/api/v1/integrations/notion/search");
        let headers: Vec<(&str, &str)> = notion.iter().chain(extra).copied().collect();
        wasm_test_harness::request("POST", &url, &headers, "").unwrap()
    };
    // Instance 0 reaches Notion, which answers 429, Retry-After: 3.
    let start = Instant::now();
    let r = send(0, &[("x-echo-status", "429"), ("x-echo-header", "retry-after=3")]);
    assert_eq!(r.status, 429);
    assert!(r.json().map_or(true, |b| b["limits"].is_null()), "the upstream's own answer: {}", r.body);
    // Instance 0 shares the block with a callout made as the answer passes;
    // under load it may land after the client has its answer.
    let blocks = || common::counter_metric(&cluster.counter, "sluice_counter_blocks_total");
    assert!(common::eventually(Duration::from_secs(2), || blocks() >= 1), "the counter service has the block");
    // Instance 1 never saw that answer, yet holds the key back: its 429 is
    // Sluice's, at once, with about 3 s to wait.
    let r = send(1, &[]);
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json().unwrap()["limits"]["tier"], "integration-notion");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((2..=4).contains(&retry), "retry-after {retry}");
    assert!(start.elapsed() < Duration::from_secs(1));
    let log = cluster.envoys[1].logs_tail(300);
    assert_eq!(log.matches("its upstream asked another instance to wait").count(), 1, "{log}");
    // Another tenant is unaffected; after the 3 s, the key is served again.
    let other = wasm_test_harness::request(
        "POST",
        &cluster.envoys[1].url("/api/v1/integrations/notion/search"),
        &[("x-integration", "notion"), ("x-tenant-id", "someone-else")],
        "",
    )
    .unwrap();
    assert_eq!(other.status, 200);
    std::thread::sleep(Duration::from_millis(3200).saturating_sub(start.elapsed()));
    let r = send(1, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
}
