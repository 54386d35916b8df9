//! Global rules decided in the core: leases, several instances sharing a
//! counter, and the failure modes. The counter here is an in-memory fake
//! with the service's contract (never more than the limit per window);
//! the real service and Redis are tested in `counter/` and in real Envoy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

mod support;

use sluice_core::bucket::State;
use sluice_core::limiter::{decide, decide_carrying, Ctx};
use sluice_core::policy::Policy;
use sluice_core::request::MemoryRequest;
use sluice_core::response::unavailable;
use sluice_core::slot::Slot;
use sluice_core::store::{slot_key, SharedStore};
use support::{FakeCounter, Instance, Step, MS};

const S: u64 = 1_000_000_000;
const T0: u64 = 1_763_382_885 * S;

/// Without credit: a request that finds no units waits for the counter.
fn policy(mode: &str, instances: u32) -> Policy {
    policy_with(mode, instances, false)
}

fn policy_with(mode: &str, instances: u32, credit: bool) -> Policy {
    Policy::from_json(&format!(
        r#"{{"global": {{"expected_instances": {instances}, "credit": {credit}}}, "tenant": [{{"header": "x-tenant-id"}}], "rules": [
        {{"name": "per-tenant", "scope": "global", "failure_mode": "{mode}", "key": ["tenant"], "limit": {{"requests": 100, "per": "1s"}}}},
        {{"name": "tools-invoke", "scope": "global", "failure_mode": "{mode}", "match": {{"paths": [{{"exact": "/api/v1/tools/invoke"}}]}},
          "key": ["tenant"], "limit": {{"requests": 20, "per": "1s"}}}}
    ]}}"#
    ))
    .expect("policy")
}

fn tenant(path: &str, t: &str) -> MemoryRequest {
    MemoryRequest::new("POST", path).header("x-tenant-id", t)
}

#[test]
fn a_first_request_waits_for_a_lease_and_spends_nothing_meanwhile() {
    let mut inst = Instance::new(policy("open", 1));
    let mut counter = FakeCounter::default();
    let req = tenant("/x", "t1");
    let d = decide(&inst.policy, &mut req.clone(), &inst.store, Ctx::at(T0));
    assert!(d.pending());
    assert_eq!(d.effects.wait_for.len(), 1);
    assert_eq!(d.effects.wait_for[0].ask.rule, "per-tenant");
    assert_eq!(d.effects.wait_for[0].ask.id, "t1");
    assert_eq!(d.effects.wait_for[0].ask.window_ms, 1000);
    assert_eq!(counter.calls, 0);
    let d = inst.send(&mut counter, &req, T0);
    assert!(d.allowed() && !d.pending());
    assert_eq!(counter.calls, 1);
}

#[test]
fn a_global_key_keeps_its_bucket_and_its_lease_in_one_slot() {
    let mut inst = Instance::new(policy("open", 1));
    let mut counter = FakeCounter::default();
    let req = tenant("/x", "t1");
    for n in 0..5 {
        assert!(inst.send(&mut counter, &req, T0 + n * MS).allowed());
    }
    let held = slots_held(&inst);
    assert_eq!(held.len(), 1, "one rule, one key: one slot, {held:?}");
    assert!(matches!(held[0].state, State::Tat(_)) && held[0].lease.window != 0, "the bucket and the lease: {held:?}");
}

/// Every slot that holds a key, decoded.
fn slots_held(inst: &Instance) -> Vec<Slot> {
    (0..inst.policy.slots)
        .filter_map(|i| inst.store.shared.get(&slot_key(i)).unwrap())
        .map(|(bytes, _)| Slot::decode(&bytes))
        .filter(|(fp, _)| *fp != 0)
        .map(|(_, slot)| slot)
        .collect()
}

/// The key's one slot, decoded.
fn slot_of(inst: &Instance) -> Slot {
    let held = slots_held(inst);
    assert_eq!(held.len(), 1, "{held:?}");
    held[0]
}

#[test]
fn a_global_rule_decides_its_bucket_and_lease_in_one_read_and_one_write() {
    // Under 32 a window: no worker share or loan, every request in the slot.
    let json = r#"{"global": {"expected_instances": 1}, "tenant": [{"header": "x-tenant-id"}], "rules": [
        {"name": "per-tenant", "scope": "global", "key": ["tenant"], "limit": {"requests": 20, "per": "1s"}}]}"#;
    let mut inst = Instance::new(Policy::from_json(json).expect("policy"));
    let mut counter = FakeCounter::default();
    let req = tenant("/x", "t1");
    let mut calls = Vec::new();
    // 25 a second for 1.2 s: the bucket (20 a second, 20 at once) never
    // runs out; the window's global budget of 20 does.
    for n in 0..30u64 {
        let now = T0 + n * 40 * MS;
        inst.tick(&mut counter, now);
        let (before, asked) = (inst.store.calls(), counter.calls);
        let d = inst.send(&mut counter, &req, now);
        // Those that waited for the service are decided twice.
        if counter.calls == asked {
            calls.push((d.allowed(), inst.store.calls() - before));
        }
    }
    // One read and one write, admitted or refused, where taking the
    // bucket's unit and then the lease's were four (and a refusal gave
    // the bucket's unit back: two more).
    assert!(calls.iter().all(|(_, c)| *c == 2), "{calls:?}");
    assert!(calls.iter().filter(|(allowed, _)| !allowed).count() >= 4, "the window's budget ran out: {calls:?}");
    assert!(calls.iter().filter(|(allowed, _)| *allowed).count() >= 20, "{calls:?}");
}

#[test]
fn a_request_the_lease_refuses_leaves_its_bucket_as_it_was() {
    let json = r#"{"global": {"expected_instances": 1}, "tenant": [{"header": "x-tenant-id"}], "rules": [
        {"name": "per-tenant", "scope": "global", "key": ["tenant"], "limit": {"requests": 5, "per": "1s", "burst": 50}}]}"#;
    let mut inst = Instance::new(Policy::from_json(json).expect("policy"));
    let mut counter = FakeCounter::default();
    let req = tenant("/x", "t1");
    let admitted = (0..5u64).filter(|n| inst.send(&mut counter, &req, T0 + n * MS).allowed()).count();
    assert_eq!(admitted, 5, "the window's global budget");
    let before = slot_of(&inst);
    for n in 5..10u64 {
        let d = decide(&inst.policy, &mut req.clone(), &inst.store, Ctx::at(T0 + n * MS));
        assert!(!d.allowed() && !d.pending(), "{d:?}");
    }
    let after = slot_of(&inst);
    assert_eq!((after.state, after.flags, after.reserved), (before.state, before.flags, before.reserved), "the bucket untouched");
    // They reached the lease, and count in the window's demand (as a
    // refusal by the lease always did).
    assert_eq!((after.lease.arrived, after.lease.seen), (before.lease.arrived + 5, before.lease.seen + 5));
}

#[test]
fn a_quiet_key_is_admitted_on_credit_and_its_refill_pays_for_it() {
    let mut inst = Instance::new(policy_with("open", 1, true));
    let mut counter = FakeCounter::default();
    let req = tenant("/x", "quiet");
    // Admitted at once; the ask for the lease goes to the leader.
    let d = inst.send(&mut counter, &req, T0);
    assert!(d.allowed() && !d.pending(), "{d:?}");
    assert_eq!(d.books.credited, [0], "per-tenant's unit was taken on credit");
    assert_eq!(counter.calls, 0, "nobody waited for the counter");
    inst.tick(&mut counter, T0 + 50 * MS);
    assert_eq!(counter.calls, 1);
    let window = T0 / S;
    // The refill asks for the debt and for the key's rate (one a window).
    assert_eq!(counter.used("per-tenant", "quiet", window), 2, "the credited unit was reserved");
    // Paid: the next request spends the unit reserved for it.
    let d = inst.send(&mut counter, &req, T0 + 100 * MS);
    assert!(d.allowed() && !d.pending() && d.books.credited.is_empty(), "{d:?}");
    // Then the lease is empty but the debt is paid: the next one may go
    // on credit again, and the lease asks for it in turn.
    let d = inst.send(&mut counter, &req, T0 + 110 * MS);
    assert_eq!(d.books.credited, [0], "{d:?}");
    inst.tick(&mut counter, T0 + 150 * MS);
    let used = counter.used("per-tenant", "quiet", window);
    assert!(used >= 3, "the second credited unit was reserved too: {used}");
}

#[test]
fn a_request_waiting_behind_a_credited_one_pays_its_debt() {
    let mut inst = Instance::new(policy_with("open", 1, true));
    let mut counter = FakeCounter::default();
    let req = tenant("/x", "owing");
    assert!(inst.send(&mut counter, &req, T0).allowed(), "on credit");
    // Before the leader's refill goes out, the next request waits for a
    // call of its own, which asks for its unit and the debt.
    let d = inst.send(&mut counter, &req, T0 + MS);
    assert!(d.allowed() && d.books.credited.is_empty(), "{d:?}");
    assert_eq!(counter.calls, 1);
    assert_eq!(counter.used("per-tenant", "owing", T0 / S), 2);
}

#[test]
fn a_slow_key_asks_once_a_window_with_or_without_credit() {
    // Two requests a window (say 1000 tenants at 2000 req/s), the leader
    // ticking every 50 ms: the second request of a window reserves the
    // next one, which then covers both of its requests. A credited
    // request's refill asks for the window's rate on top of its debt, or
    // the lease runs dry in mid-window and asks again every window.
    for credit in [false, true] {
        for offset in [0, 100, 300, 450] {
            let mut inst = Instance::new(policy_with("open", 1, credit));
            let mut counter = FakeCounter::default();
            let req = tenant("/x", "slow");
            for step in 0..2000u64 {
                let t = T0 + step * 10 * MS;
                if step % 50 == offset / 10 {
                    assert!(inst.send(&mut counter, &req, t).allowed());
                }
                if step % 5 == 0 {
                    inst.tick(&mut counter, t + MS);
                }
            }
            // 20 windows: one call each, and one for the first request.
            assert!(counter.calls <= 22, "credit {credit}, requests at {offset} ms: {} calls in 20 windows", counter.calls);
        }
    }
}

#[test]
fn refills_travel_to_the_leader_in_one_message_and_old_messages_still_read() {
    use sluice_core::limiter::{decode_needs, encode_needs};
    let mut inst = Instance::new(policy_with("open", 1, true));
    let mut counter = FakeCounter::default();
    for t in ["a", "b", "c"] {
        assert!(inst.send(&mut counter, &tenant("/x", t), T0).allowed());
    }
    let mut needs = std::mem::take(&mut inst.refills);
    assert_eq!(needs.len(), 3, "{needs:?}");
    // Every field survives, whatever its value.
    needs[1].carry = 7;
    needs[1].bucket = u64::MAX;
    needs[1].owns_ask = !needs[1].owns_ask;
    needs[1].ask.next = !needs[1].ask.next;
    needs[2].ask.id = "tenant with ünicode and \"quotes\"".into();
    let message = encode_needs(&needs).unwrap();
    assert_eq!(decode_needs(&message), needs);
    // JSON, one need or several per message, as earlier versions sent.
    let single = serde_json::to_vec(&needs[1]).unwrap();
    assert_eq!(decode_needs(&single), [needs[1].clone()]);
    assert_eq!(decode_needs(&serde_json::to_vec(&needs).unwrap()), needs);
    // Garbage and every truncation read as nothing (never a made-up need).
    for bad in [&b""[..], b"{}", b"[1, 2]", b"null", b"\xb1\x01"] {
        assert!(decode_needs(bad).is_empty(), "{:?}", String::from_utf8_lossy(bad));
    }
    for cut in 1..message.len() {
        let read = decode_needs(&message[..cut]);
        assert!(read.is_empty(), "{cut} of {} bytes read as {read:?}", message.len());
    }
    assert!(decode_needs(&encode_needs(&[]).unwrap()).is_empty());
    // A name too long for the format is refused, not cut.
    let mut long = needs[0].clone();
    long.ask.id = "x".repeat(70_000);
    assert!(encode_needs(&[long]).is_none());
}

#[test]
fn instances_sharing_a_counter_admit_the_limit_and_rarely_call() {
    for credit in [false, true] {
        sharing_a_counter(credit);
    }
}

fn sharing_a_counter(credit: bool) {
    // 3 instances, traffic spread over them at 3x each limit for 10 s.
    let mut counter = FakeCounter::default();
    let mut instances: Vec<Instance> = (0..3).map(|_| Instance::new(policy_with("open", 3, credit))).collect();
    let (mut tenant_ok, mut invoke_ok) = (0u64, 0u64);
    // A window of warm-up, then ten whole windows measured: the limits
    // allow 1000 and 200 in them.
    let start = T0 - S;
    let end = T0 + 10 * S;
    let mut now = start;
    let mut i = 0u64;
    let mut next_tick = start;
    let mut calls_before = None;
    while now < end {
        let measured = now >= T0;
        if measured && calls_before.is_none() {
            calls_before = Some(counter.calls);
        }
        // 300 req/s to /other for tenant-a, 60 req/s to invoke for tenant-b.
        let inst = &mut instances[(i % 3) as usize];
        if inst.send(&mut counter, &tenant("/other", "tenant-a"), now).allowed() && measured {
            tenant_ok += 1;
        }
        if i.is_multiple_of(5) && inst.send(&mut counter, &tenant("/api/v1/tools/invoke", "tenant-b"), now).allowed() && measured {
            invoke_ok += 1;
        }
        if now >= next_tick {
            for inst in &mut instances {
                inst.tick(&mut counter, now);
            }
            next_tick += 50 * MS;
        }
        now += S / 300;
        i += 1;
    }
    let calls = counter.calls - calls_before.unwrap_or(0);
    println!("credit {credit}: per-tenant {tenant_ok}/1000, invoke {invoke_ok}/200, calls {calls}");
    assert!((950..=1000).contains(&tenant_ok), "{tenant_ok}");
    assert!((180..=200).contains(&invoke_ok), "{invoke_ok}");
    let per_admitted = calls as f64 / (tenant_ok + invoke_ok) as f64;
    assert!(per_admitted <= 0.05, "{calls} calls for {} admitted", tenant_ok + invoke_ok);
}

#[test]
fn instances_under_the_limit_deny_nothing_at_window_starts() {
    for credit in [false, true] {
        under_the_limit(credit);
    }
}

fn under_the_limit(credit: bool) {
    // 3 instances, each sent 4 requests a window (12 of the 20 allowed),
    // the first of each just after the window opens: young windows must
    // not read one early request as ten times the rate and reserve the
    // others' budget.
    let mut counter = FakeCounter::default();
    let mut instances: Vec<Instance> = (0..3).map(|_| Instance::new(policy_with("open", 3, credit))).collect();
    let mut denied = Vec::new();
    let mut next_tick = T0;
    for w in 0..8u64 {
        for k in 0..4u64 {
            for n in 0..3 {
                let now = T0 + w * S + 5 * MS + n as u64 * MS + k * 300 * MS;
                // The leaders send the refills every 50 ms.
                while next_tick <= now {
                    for inst in &mut instances {
                        inst.tick(&mut counter, next_tick);
                    }
                    next_tick += 50 * MS;
                }
                let inst = &mut instances[n];
                if !inst.send(&mut counter, &tenant("/api/v1/tools/invoke", "half"), now).allowed() {
                    denied.push((w, k, n));
                }
            }
        }
    }
    assert_eq!(denied, [], "(window, request, instance) denied under the limit, credit {credit}");
}

#[test]
fn an_exhausted_window_is_denied_until_it_ends() {
    let mut a = Instance::new(policy("open", 2));
    let mut b = Instance::new(policy("open", 2));
    let mut counter = FakeCounter::default();
    let now = T0 + 200 * MS;
    let req = tenant("/api/v1/tools/invoke", "t");
    let admitted =
        (0..30).filter(|_| a.send(&mut counter, &req, now).allowed()).count() + (0..30).filter(|_| b.send(&mut counter, &req, now).allowed()).count();
    assert_eq!(admitted, 20);
    let d = b.send(&mut counter, &req, now);
    let denied = d.ruling.denied_by.expect("denied");
    assert_eq!(b.policy.rules[denied.rule].name, "tools-invoke");
    assert_eq!(denied.outcome.retry_after_ns, 800 * MS);
    // The next window opens the budget again.
    assert!(b.send(&mut counter, &req, now + S).allowed());
}

#[test]
fn failing_open_enforces_the_instance_share() {
    let inst = Instance::new(policy("open", 4));
    let degraded = Ctx { degraded: true, may_wait: true, ..Ctx::at(T0) };
    let req = tenant("/api/v1/tools/invoke", "t");
    let admitted = (0..20).filter(|_| decide(&inst.policy, &mut req.clone(), &inst.store, degraded).allowed()).count();
    assert_eq!(admitted, 5, "20/s over 4 instances");
}

#[test]
fn failing_closed_refuses_with_503() {
    let inst = Instance::new(policy("closed", 1));
    let d = decide(&inst.policy, &mut tenant("/x", "t"), &inst.store, Ctx { degraded: true, may_wait: true, ..Ctx::at(T0) });
    assert!(!d.allowed());
    let reply = unavailable(&inst.policy, &d).expect("503");
    assert_eq!(reply.status, 503);
    let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(body["limits"]["tier"], "per-tenant");
    assert_eq!(body["error"], "Service Unavailable");
}

#[test]
fn a_failed_wait_falls_back_per_failure_mode() {
    let inst = Instance::new(policy("open", 2));
    // Second pass without a lease (the callout failed): open -> local share.
    let ctx = Ctx { degraded: false, may_wait: false, ..Ctx::at(T0) };
    let req = tenant("/api/v1/tools/invoke", "t");
    let admitted = (0..20).filter(|_| decide(&inst.policy, &mut req.clone(), &inst.store, ctx).allowed()).count();
    assert_eq!(admitted, 10);
}

#[test]
fn a_queueing_global_rule_waits_for_the_next_window() {
    // Notion, 3/s across instances, queued up to 2 s.
    let policy = Policy::from_json(
        r#"{"global": {}, "tenant": [{"header": "x-tenant-id"}], "rules": [
        {"name": "integration-notion", "scope": "global", "match": {"headers": [{"name": "x-integration", "exact": "notion"}]},
         "key": ["tenant"], "limit": {"requests": 3, "per": "1s"}, "queue": {"max_wait": "2s"}}]}"#,
    )
    .expect("policy");
    let mut counter = FakeCounter::default();
    let mut a = Instance::new(policy.clone());
    let mut b = Instance::new(policy);
    let req = MemoryRequest::new("POST", "/x").header("x-tenant-id", "t").header("x-integration", "notion");
    // 10 at once, 0.5 s into a window, spread over two instances; decisions
    // happen in time order, redone requests when their time comes.
    let arrival = T0 + S / 2;
    let mut pending: Vec<(u64, usize, Option<_>)> = (0..10).map(|i| (arrival, i, None)).collect();
    let mut times: Vec<Option<u64>> = vec![None; 10];
    let mut next_tick = arrival;
    while let Some(pos) = (0..pending.len()).min_by_key(|p| (pending[*p].0, pending[*p].1)) {
        let (now, i, kept) = pending.remove(pos);
        while next_tick <= now {
            a.tick(&mut counter, next_tick);
            b.tick(&mut counter, next_tick);
            next_tick += 50 * MS;
        }
        let inst = if i % 2 == 0 { &mut a } else { &mut b };
        match inst.step(&mut counter, &req, kept, now) {
            Step::Refused => {}
            Step::Redo(t, flow) => pending.push((t, i, Some(flow))),
            Step::Went(t) => times[i] = Some(t),
        }
    }
    let mut went: Vec<u64> = times.iter().flatten().map(|t| (t - arrival) / MS).collect();
    went.sort_unstable();
    println!("{went:?} ms after arrival");
    // 3 in this window, 3 in each of the next two (both within 2 s); the
    // last one would wait past 2 s.
    assert_eq!(times.iter().filter(|t| t.is_none()).count(), 1, "{times:?}");
    let per_window = |w: u64| went.iter().filter(|ms| (**ms + 500) / 1000 == w).count();
    assert_eq!((per_window(0), per_window(1), per_window(2)), (3, 3, 3), "{went:?}");
    assert!(went.iter().all(|ms| *ms <= 2000), "{went:?}");
}

#[test]
fn units_granted_to_a_waiting_request_are_its_own() {
    // Ten requests for a cold key wait for their leases together; while
    // each answer is applied, a fresh request arrives. The fresh one must
    // not spend the waiter's unit (the waiter would then fall back to the
    // instance share, admitting what the service never granted).
    let mut inst = Instance::new(policy("open", 3));
    let mut counter = FakeCounter::default();
    let req = tenant("/api/v1/tools/invoke", "cold");
    let waiting: Vec<_> = (0..10).map(|_| inst.first(&req, T0)).collect();
    assert!(waiting.iter().all(|d| d.pending()));
    let mut admitted = 0u64;
    for first in &waiting {
        let asks: Vec<_> = first.effects.wait_for.iter().map(|n| n.ask.clone()).collect();
        let answers = counter.reserve(&asks, T0);
        let carried = inst.answer(&first.effects.wait_for, &answers, T0);
        if inst.send(&mut counter, &req, T0).allowed() {
            admitted += 1;
        }
        let ctx = Ctx { may_wait: false, ..Ctx::at(T0) };
        let again = decide_carrying(&inst.policy, &mut req.clone(), &inst.store, ctx, &carried);
        assert!(again.allowed() && !again.pending(), "{again:?}");
        admitted += 1;
    }
    let granted = counter.used_in_all("tools-invoke", "cold");
    assert_eq!(admitted, 20);
    assert!(admitted <= granted, "admitted {admitted}, the service granted {granted}");
}

#[test]
fn queued_requests_keep_their_turn_across_global_windows() {
    // Notion, 3/s across instances, queued up to 2 s: nine simultaneous
    // calls all go within 2 s whatever the phase of the counter's window,
    // in order of their turns, never more than 3 in one window.
    let policy = Policy::from_json(
        r#"{"global": {}, "tenant": [{"header": "x-tenant-id"}], "rules": [
        {"name": "integration-notion", "scope": "global", "match": {"headers": [{"name": "x-integration", "exact": "notion"}]},
         "key": ["tenant"], "limit": {"requests": 3, "per": "1s"}, "queue": {"max_wait": "2s"}}]}"#,
    )
    .expect("policy");
    for phase_ms in (10..1000).step_by(70) {
        let mut counter = FakeCounter::default();
        let mut a = Instance::new(policy.clone());
        let req = MemoryRequest::new("POST", "/x").header("x-tenant-id", "t").header("x-integration", "notion");
        let arrival = T0 + phase_ms * MS;
        // A tenth call 100 ms later finds the line full: it must not take
        // the place of one of the nine while they wait for a window (ties
        // go to the latest caller, the worst case).
        let arrivals: Vec<u64> = (0..10).map(|i| if i < 9 { arrival } else { arrival + 100 * MS }).collect();
        let mut pending: Vec<(u64, usize, Option<_>)> = (0..10).map(|i| (arrivals[i], i, None)).collect();
        let mut went = vec![None; 10];
        let mut next_tick = arrival;
        while let Some(pos) = (0..pending.len()).min_by_key(|p| (pending[*p].0, std::cmp::Reverse(pending[*p].1))) {
            let (now, i, kept) = pending.remove(pos);
            while next_tick <= now {
                a.tick(&mut counter, next_tick);
                next_tick += 50 * MS;
            }
            match a.step(&mut counter, &req, kept, now) {
                Step::Refused => {}
                Step::Redo(t, flow) => pending.push((t, i, Some(flow))),
                Step::Went(t) => went[i] = Some(t),
            }
        }
        assert!(went[9].is_none(), "phase {phase_ms} ms: the late call went: {went:?}");
        went.truncate(9);
        assert!(went.iter().all(Option::is_some), "phase {phase_ms} ms: {went:?}");
        let ms: Vec<u64> = went.iter().flatten().map(|t| (t - arrival) / MS).collect();
        assert!(ms.iter().all(|m| *m <= 2010), "phase {phase_ms} ms: {ms:?}");
        for w in 0..4 {
            let start = T0 + w * S;
            let n = went.iter().flatten().filter(|t| (start..start + S).contains(*t)).count();
            assert!(n <= 3, "phase {phase_ms} ms: {n} in window {w}: {ms:?}");
        }
    }
}

#[test]
fn an_upstream_block_reported_by_the_service_holds_the_key_back() {
    let policy = Policy::from_json(
        r#"{"global": {}, "tenant": [{"header": "x-tenant-id"}], "rules": [
        {"name": "integration-notion", "scope": "global", "match": {"integration": ["notion"]},
         "key": ["integration", "tenant"], "limit": {"requests": 3, "per": "1s"}, "obey_upstream": true}]}"#,
    )
    .expect("policy");
    let inst = Instance::new(policy);
    let req = MemoryRequest::new("POST", "/x").header("x-tenant-id", "t").header("x-integration", "notion");
    let d = decide(&inst.policy, &mut req.clone(), &inst.store, Ctx::at(T0));
    assert!(d.pending());
    assert_eq!(d.effects.wait_for[0].ask.id, "notion:t");
    // Another instance learnt a 3 s block: nothing granted, blocked_ms set.
    let answer =
        sluice_core::lease::Answer { granted: 0, used: 0, window: T0 / S, starts_in_ns: 0, ends_in_ns: S, blocked_ns: 3 * S, windows: 1, current_used: 0 };
    let applied = sluice_core::limiter::apply_answer(&inst.policy, &inst.store, &d.effects.wait_for[0], &answer, T0).unwrap();
    assert!(applied.block_started && applied.carry.is_none());
    assert_eq!(applied.blocked_rule, Some(0));
    let again = sluice_core::limiter::apply_answer(&inst.policy, &inst.store, &d.effects.wait_for[0], &answer, T0).unwrap();
    assert!(!again.block_started, "logged once per episode");
    let d = decide(&inst.policy, &mut req.clone(), &inst.store, Ctx { may_wait: false, ..Ctx::at(T0) });
    let denied = d.ruling.denied_by.expect("held back");
    assert!(denied.outcome.retry_after_ns >= 2 * S && denied.outcome.retry_after_ns <= 3 * S, "{denied:?}");
}

/// Drives one instance at `rate` requests a second of `req` over
/// `[from, to)`, its leader ticking every 50 ms; returns those admitted.
fn drive(inst: &mut Instance, counter: &mut FakeCounter, req: &MemoryRequest, rate: u64, (from, to): (u64, u64)) -> u64 {
    let mut admitted = 0;
    let gap = S / rate;
    let mut t = from;
    let mut next_tick = from;
    while t < to {
        if inst.send(counter, req, t).allowed() {
            admitted += 1;
        }
        while next_tick <= t {
            inst.tick(counter, next_tick);
            next_tick += 50 * MS;
        }
        t += gap;
    }
    admitted
}

#[test]
fn a_steady_key_reserves_spans_ahead_and_gives_them_back_when_its_traffic_leaves() {
    let mut inst = Instance::new(policy_with("open", 1, true));
    let mut counter = FakeCounter::default();
    let req = tenant("/x", "busy");
    let w0 = T0 / S;
    // 80/s for three windows: spans ahead up to the next multiple of four.
    assert_eq!(drive(&mut inst, &mut counter, &req, 80, (T0, T0 + 3 * S)), 240);
    assert_eq!(inst.spans.len(), 1, "the key is watched");
    let last = (w0 + 3..w0 + 8).filter(|w| counter.used("per-tenant", "busy", *w) > 0).max().expect("reserved ahead");
    assert!(last > w0 + 3, "window {} only", last - w0);
    assert_eq!((last + 1) % 4, 0, "spans end on multiples of four");
    let calls = counter.calls;
    // The traffic stops: within a tick and an eighth of a window, what the
    // instance holds for this window and every window ahead goes back.
    let held_now = counter.used("per-tenant", "busy", w0 + 3);
    assert!(held_now > 0);
    for tick in 0..8 {
        inst.tick(&mut counter, T0 + 3 * S + tick * 50 * MS);
    }
    assert!(counter.used("per-tenant", "busy", w0 + 3) < held_now, "the current window's units go back");
    for w in w0 + 4..=last {
        assert_eq!(counter.used("per-tenant", "busy", w), 0, "window {} given back", w - w0);
    }
    assert_eq!(counter.calls, calls + 1, "in one call");
    // Nothing more: no renewal, and the watch forgets the key.
    for tick in 8..80 {
        inst.tick(&mut counter, T0 + 3 * S + tick * 50 * MS);
    }
    assert_eq!(counter.calls, calls + 1);
    assert_eq!(inst.spans.len(), 0);
}

#[test]
fn a_key_that_slows_down_is_no_longer_watched_once_its_span_is_given_back() {
    let mut inst = Instance::new(policy_with("open", 1, true));
    let mut counter = FakeCounter::default();
    let req = tenant("/x", "bursty");
    assert_eq!(drive(&mut inst, &mut counter, &req, 80, (T0, T0 + 3 * S)), 240);
    assert_eq!(inst.spans.len(), 1, "the burst widened the key");
    // 3 a second from now on: the span goes back, and the key reserves
    // one window at a time like any slow key, unwatched.
    assert_eq!(drive(&mut inst, &mut counter, &req, 3, (T0 + 3 * S, T0 + 9 * S)), 19, "every request admitted");
    assert_eq!(inst.spans.len(), 0, "a slow key still watched: its lease read on every sweep");
    assert_eq!(counter.used("per-tenant", "bursty", T0 / S + 11), 0, "nothing reserved two windows ahead");
}

#[test]
fn slow_keys_and_small_limits_reserve_one_window_at_a_time() {
    // 3/s of a 100/s limit: asks under a sixteenth of it.
    let mut inst = Instance::new(policy_with("open", 1, true));
    let mut counter = FakeCounter::default();
    drive(&mut inst, &mut counter, &tenant("/x", "slow"), 3, (T0, T0 + 3 * S));
    assert_eq!(inst.spans.len(), 0);
    assert!(counter.used_in_all("per-tenant", "slow") > 0, "reserved");
    assert_eq!(counter.used("per-tenant", "slow", T0 / S + 4), 0, "nothing two windows ahead");
    // 18/s of tools-invoke's 20/s: its limit is under 100 (per-tenant,
    // 100/s, does span: 18 a window is over a sixteenth of it).
    let mut inst = Instance::new(policy_with("open", 1, true));
    let mut counter = FakeCounter::default();
    drive(&mut inst, &mut counter, &tenant("/api/v1/tools/invoke", "t"), 18, (T0, T0 + 3 * S));
    assert!(counter.used_in_all("tools-invoke", "t") > 0, "reserved");
    assert_eq!(counter.used("tools-invoke", "t", T0 / S + 4), 0, "nothing two windows ahead");
    assert!(counter.used("per-tenant", "t", T0 / S + 4) > 0, "per-tenant spans");
}

#[test]
fn a_sweep_looks_at_no_more_leases_than_its_budget_and_the_rest_stay_due() {
    let mut inst = Instance::new(policy_with("open", 1, true));
    let mut counter = FakeCounter::default();
    for k in 0..5 {
        let key = format!("busy-{k}");
        drive(&mut inst, &mut counter, &tenant("/x", &key), 80, (T0, T0 + 3 * S));
    }
    assert_eq!(inst.spans.len(), 5, "five keys watched");
    // The traffic stops; each sweep of the ticks that follow looks at two
    // leases at most, and the others wait for the next ones.
    let mut seen = std::collections::BTreeSet::new();
    for tick in 0..16 {
        let policy = inst.policy.clone();
        let (back, errors) = inst.spans.sweep(&policy, &inst.store, T0 + 3 * S + tick * 50 * MS, 2);
        assert!(errors.is_empty(), "{errors:?}");
        let keys: std::collections::BTreeSet<u64> = back.iter().map(|n| n.fingerprint).collect();
        assert!(keys.len() <= 2, "tick {tick} gave back for {} leases", keys.len());
        seen.extend(keys);
    }
    assert_eq!(seen.len(), 5, "every lease gave back within 16 sweeps of two");
}
