//! The request's life natively, on a fake clock: every path the Envoy
//! tests drive (body reads, waits for a lease, queue turns, later windows,
//! clients leaving, concurrency units, the held bound), without Envoy.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::counter_api::Ask;
use crate::limiter::MAX_HELD_PER_WORKER;
use crate::memory_counter::MemoryCounter;
use crate::request::MemoryRequest;
use crate::store::{ensure_slots, MemoryStore};
use crate::testing::S;

/// A whole second: the fake counter's windows start on it.
const T0: u64 = 1_763_382_885 * S;
const MS: u64 = 1_000_000;

struct Bench {
    policy: Policy,
    store: MemoryStore,
    counter: std::cell::RefCell<MemoryCounter>,
}

impl Bench {
    fn new(json: &str) -> Bench {
        let policy = Policy::from_json(json).expect("policy");
        let store = MemoryStore::default();
        ensure_slots(&store, policy.slots).expect("slots");
        Bench { policy, store, counter: Default::default() }
    }

    fn on(&self, flow: &mut Flow<&Policy>, req: &MemoryRequest, event: Event, mut at: At) -> Out {
        flow.on(event, &mut Env { store: &self.store, request: &mut req.clone(), host: &mut at })
    }

    /// A new request's headers (no body) at `now`.
    fn arrive<'p>(&'p self, req: &MemoryRequest, now: u64) -> (Flow<&'p Policy>, Out) {
        let mut flow = Flow::new(&self.policy);
        let out = self.on(&mut flow, req, Event::Headers { end_of_stream: true }, At::new(now));
        (flow, out)
    }

    fn answer(&self, needs: &[LeaseNeed], now: u64) -> Vec<Answer> {
        let asks: Vec<Ask> = needs.iter().map(|n| n.ask.clone()).collect();
        self.counter.borrow_mut().reserve(&asks, now)
    }
}

/// Every counter a decision bumps.
fn tallied(policy: &Policy, decided: &Decided) -> Vec<(usize, Tally)> {
    let mut out = Vec::new();
    tallies(policy, decided, |rule, tally| out.push((rule, tally)));
    out
}

fn status(out: &Out) -> Option<u32> {
    out.reply.as_ref().map(|r| r.status)
}

fn fate(out: &Out) -> Option<Fate> {
    out.decided.last().map(|d| d.fate)
}

const TWO_PER_SECOND: &str = r#"{"rules": [{"name": "two", "limit": {"requests": 2, "per": "1s"}}]}"#;

#[test]
fn a_request_under_its_limit_goes_and_the_one_over_it_gets_a_429() {
    let b = Bench::new(TWO_PER_SECOND);
    let req = MemoryRequest::new("GET", "/x");
    for _ in 0..2 {
        let (flow, out) = b.arrive(&req, T0);
        assert!(out.go && out.reply.is_none(), "{out:?}");
        assert!(flow.admitted().is_some_and(|a| a.headers.iter().any(|(n, _)| n == "x-ratelimit-remaining")));
    }
    let (mut flow, out) = b.arrive(&req, T0);
    assert!(!out.go);
    assert_eq!(status(&out), Some(429));
    assert_eq!(fate(&out), Some(Fate::Replied));
    // Its body, if any, is no longer the flow's business.
    let body = b.on(&mut flow, &req, Event::Body { size: 10, end_of_stream: true }, At::new(T0));
    assert!(body.go && body.is_quiet());
    // The next window admits again.
    assert!(b.arrive(&req, T0 + S).1.go);
}

impl<P: Deref<Target = Policy>> Flow<P> {
    fn admitted(&self) -> Option<&Admitted> {
        self.admitted.as_ref()
    }
}

#[test]
fn a_body_is_read_whole_before_the_decision_and_a_large_one_is_decided_as_too_large() {
    let b = Bench::new(
        r#"{"read_body": true, "rules": [{"name": "tools", "match": {"paths": [{"exact": "/mcp"}], "jsonrpc": {"methods": ["tools/call"]}},
            "limit": {"requests": 1, "per": "1s"}}]}"#,
    );
    let call = |id: u32| {
        let mut r = MemoryRequest::new("POST", "/mcp");
        r.body = Some(format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"x"}}}}"#).into_bytes());
        r
    };
    let mut flow = Flow::new(&b.policy);
    let out = b.on(&mut flow, &call(1), Event::Headers { end_of_stream: false }, At::new(T0));
    assert!(!out.go && out.decided.is_empty(), "waits for the body: {out:?}");
    let out = b.on(&mut flow, &call(1), Event::Body { size: 30, end_of_stream: false }, At::new(T0));
    assert!(!out.go && out.decided.is_empty(), "still buffering: {out:?}");
    let out = b.on(&mut flow, &call(1), Event::Body { size: 60, end_of_stream: true }, At::new(T0));
    assert!(out.go && fate(&out) == Some(Fate::Goes), "{out:?}");
    assert_eq!(flow.body_size(), Some(60));
    // The second call in the second is refused with a JSON-RPC error.
    let mut flow = Flow::new(&b.policy);
    b.on(&mut flow, &call(2), Event::Headers { end_of_stream: false }, At::new(T0));
    let out = b.on(&mut flow, &call(2), Event::Trailers, At::new(T0));
    assert_eq!(status(&out), Some(429));
    assert!(out.reply.as_ref().is_some_and(|r| r.body.contains("\"id\":2")), "{out:?}");
    // A body past the bound is decided when it crosses it, as too large.
    let mut flow = Flow::new(&b.policy);
    b.on(&mut flow, &call(3), Event::Headers { end_of_stream: false }, At::new(T0 + S));
    let out = b.on(&mut flow, &call(3), Event::Body { size: MAX_BODY + 1, end_of_stream: false }, At::new(T0 + S));
    assert!(!out.decided.is_empty(), "{out:?}");
    assert_eq!(flow.body_size(), Some(MAX_BODY + 1));
}

const GLOBAL: &str = r#"{"global": {}, "tenant": [{"header": "x-tenant-id"}], "rules": [
    {"name": "per-tenant", "scope": "global", "key": ["tenant"], "limit": {"requests": 5, "per": "1s"}}]}"#;

#[test]
fn a_cold_global_key_calls_once_and_is_decided_on_the_answer() {
    let b = Bench::new(GLOBAL);
    let req = MemoryRequest::new("GET", "/x").header("x-tenant-id", "acme");
    let (mut flow, out) = b.arrive(&req, T0);
    let needs = out.call.clone().expect("a reserve call");
    assert!(!out.go && fate(&out) == Some(Fate::Calls));
    assert!(flow.waiting());
    let answers = b.answer(&needs, T0);
    let out = b.on(&mut flow, &req, Event::Answered(Some(answers)), At::new(T0 + 3 * MS));
    assert!(out.go, "{out:?}");
    assert!(out.granted.iter().any(|(rule, units)| *rule == 0 && *units > 0), "{out:?}");
    assert_eq!(flow.arrival(), T0);
    // It spent the unit granted to it, not one another request pooled.
    let carried = &out.decided.last().expect("decided").carried;
    assert!(carried.iter().any(|c| matches!(c, Carry::Units { rule: 0, units: 1, .. })), "{carried:?}");
}

#[test]
fn a_call_without_an_answer_follows_the_failure_mode() {
    let closed = GLOBAL.replace(r#""limit": {"requests": 5"#, r#""failure_mode": "closed", "limit": {"requests": 5"#);
    for (json, expect_go) in [(GLOBAL.to_string(), true), (closed, false)] {
        let b = Bench::new(&json);
        let req = MemoryRequest::new("GET", "/x").header("x-tenant-id", "acme");
        let (mut flow, out) = b.arrive(&req, T0);
        assert!(out.call.is_some());
        let out = b.on(&mut flow, &req, Event::Answered(None), At::new(T0));
        assert_eq!(out.go, expect_go, "{json}: {out:?}");
        if !expect_go {
            assert_eq!(status(&out), Some(503));
        }
        assert!(out.call.is_none(), "no second call: {out:?}");
    }
}

const QUEUED: &str = r#"{"rules": [{"name": "notion", "limit": {"requests": 1, "per": "1s", "burst": 1},
    "queue": {"max_wait": "3s"}}]}"#;

#[test]
fn a_queued_request_waits_for_its_turn_and_goes_on_its_wake() {
    let b = Bench::new(QUEUED);
    let req = MemoryRequest::new("GET", "/x");
    assert!(b.arrive(&req, T0).1.go);
    let (mut flow, out) = b.arrive(&req, T0);
    let wake = out.wake_at.expect("held for its turn");
    assert_eq!(fate(&out), Some(Fate::Holds));
    assert!((T0 + 900 * MS..=T0 + S).contains(&wake), "turn at {wake}");
    assert!(tallied(&b.policy, out.decided.last().unwrap()).contains(&(0, Tally::Queued)));
    // Its body waits with it.
    let body = b.on(&mut flow, &req, Event::Body { size: 5, end_of_stream: true }, At::new(T0 + MS));
    assert!(!body.go);
    let out = b.on(&mut flow, &req, Event::Wake, At::new(wake));
    assert!(out.go);
    assert_eq!(out.waited_ns, Some(wake - T0));
    assert_eq!(flow.admitted().map(|a| a.sent_at), Some(wake));
}

#[test]
fn four_simultaneous_calls_of_one_per_second_go_a_second_apart_and_the_fifth_past_the_wait_is_refused() {
    // What queue_in_envoy shows with wall-clock bounds, on the fake clock.
    let b = Bench::new(QUEUED);
    let req = MemoryRequest::new("GET", "/x");
    let wakes: Vec<Option<u64>> = (0..5).map(|_| b.arrive(&req, T0).1.wake_at).collect();
    assert_eq!(wakes[0], None, "the first goes at once");
    for (i, w) in wakes.iter().enumerate().take(4).skip(1) {
        let w = w.expect("held");
        let expected = T0 + i as u64 * S;
        assert!(w.abs_diff(expected) <= TICK_NS, "call {i} at {w}, expected about {expected}");
    }
    assert_eq!(wakes[4], None, "past max_wait: refused, not held");
}

#[test]
fn a_client_that_leaves_while_queued_gives_its_turn_back() {
    let b = Bench::new(QUEUED);
    let req = MemoryRequest::new("GET", "/x");
    assert!(b.arrive(&req, T0).1.go);
    let (mut flow, out) = b.arrive(&req, T0);
    let wake = out.wake_at.expect("held");
    let left = b.on(&mut flow, &req, Event::Left, At::new(T0 + MS));
    assert!(left.warnings.is_empty(), "{left:?}");
    // The next request takes the turn it gave back.
    let (_, next) = b.arrive(&req, T0 + 2 * MS);
    assert!(next.wake_at.is_some_and(|w| w <= wake), "{next:?}");
    // A wake after leaving does nothing.
    assert!(!b.on(&mut flow, &req, Event::Wake, At::new(wake)).go);
}

#[test]
fn a_worker_at_its_bound_refuses_a_request_that_would_wait() {
    let b = Bench::new(QUEUED);
    let req = MemoryRequest::new("GET", "/x");
    assert!(b.arrive(&req, T0).1.go);
    let mut flow = Flow::new(&b.policy);
    let at = At { held_here: MAX_HELD_PER_WORKER, ..At::new(T0) };
    let out = b.on(&mut flow, &req, Event::Headers { end_of_stream: true }, at);
    assert!(out.hold_refused && out.wake_at.is_none());
    assert_eq!(status(&out), Some(429));
    // Its turn was given back: the next request is held no later.
    let (_, next) = b.arrive(&req, T0);
    assert!(next.wake_at.is_some_and(|w| w <= T0 + S), "{next:?}");
}

#[test]
fn concurrency_units_are_held_until_the_stream_ends() {
    let b = Bench::new(r#"{"rules": [{"name": "in-flight", "limit": {"concurrent": 1}}]}"#);
    let req = MemoryRequest::new("GET", "/x");
    let (mut first, out) = b.arrive(&req, T0);
    assert!(out.go);
    assert_eq!(status(&b.arrive(&req, T0 + MS).1), Some(429));
    let left = b.on(&mut first, &req, Event::Left, At::new(T0 + 2 * MS));
    assert!(left.warnings.is_empty(), "{left:?}");
    assert!(b.arrive(&req, T0 + 3 * MS).1.go, "freed when the first ended");
}

/// A fake host that counts its clock reads (each one a hostcall in Envoy).
struct Clocked {
    at: At,
    reads: usize,
}

impl Host for Clocked {
    fn now(&mut self) -> u64 {
        self.reads += 1;
        self.at.now
    }
    fn random(&mut self) -> u64 {
        self.at.random
    }
    fn degraded(&mut self) -> bool {
        self.at.degraded
    }
    fn held_here(&mut self) -> usize {
        self.at.held_here
    }
}

#[test]
fn a_stream_that_holds_nothing_ends_without_reading_the_clock() {
    let b = Bench::new(
        r#"{"rules": [{"name": "two", "limit": {"requests": 2, "per": "1s"}}, {"name": "in-flight", "match": {"paths": [{"prefix": "/busy"}]}, "limit": {"concurrent": 1}}]}"#,
    );
    let leave = |flow: &mut Flow<&Policy>, req: &MemoryRequest| {
        let mut host = Clocked { at: At::new(T0 + MS), reads: 0 };
        let out = flow.on(Event::Left, &mut Env { store: &b.store, request: &mut req.clone(), host: &mut host });
        assert!(out.warnings.is_empty(), "{out:?}");
        host.reads
    };
    let plain = MemoryRequest::new("GET", "/x");
    let (mut admitted, out) = b.arrive(&plain, T0);
    assert!(out.go);
    assert_eq!(leave(&mut admitted, &plain), 0, "admitted, no unit held");
    assert!(b.arrive(&plain, T0).1.go);
    let (mut refused, out) = b.arrive(&plain, T0);
    assert_eq!(status(&out), Some(429));
    assert_eq!(leave(&mut refused, &plain), 0, "refused");
    // A concurrency unit is released at the stream's end, on the clock.
    let busy = MemoryRequest::new("GET", "/busy");
    let (mut holding, out) = b.arrive(&busy, T0 + 2 * S);
    assert!(out.go, "{out:?}");
    assert_eq!(leave(&mut holding, &busy), 1);
    assert!(b.arrive(&busy, T0 + 2 * S + 2 * MS).1.go, "its unit was released");
}

const GLOBAL_QUEUED: &str = r#"{"global": {}, "tenant": [{"header": "x-tenant-id"}], "rules": [
    {"name": "notion", "scope": "global", "key": ["tenant"], "limit": {"requests": 1, "per": "1s"}, "queue": {"max_wait": "2s"}}]}"#;

/// Drives a flow through its calls, answered at once.
fn settle_calls(b: &Bench, flow: &mut Flow<&Policy>, req: &MemoryRequest, mut out: Out, now: u64) -> Out {
    while let Some(needs) = out.call.take() {
        let answers = b.answer(&needs, now);
        out = b.on(flow, req, Event::Answered(Some(answers)), At::new(now));
    }
    out
}

#[test]
fn a_global_budget_spent_sends_a_queued_request_to_the_next_window() {
    let b = Bench::new(GLOBAL_QUEUED);
    let req = MemoryRequest::new("GET", "/x").header("x-tenant-id", "acme");
    let (mut first, out) = b.arrive(&req, T0 + 100 * MS);
    let out = settle_calls(&b, &mut first, &req, out, T0 + 100 * MS);
    assert!(out.go, "{out:?}");
    let (mut second, out) = b.arrive(&req, T0 + 200 * MS);
    let out = settle_calls(&b, &mut second, &req, out, T0 + 200 * MS);
    assert_eq!(fate(&out), Some(Fate::WaitsWindow), "{out:?}");
    let wake = out.wake_at.expect("a later window");
    assert!(wake >= T0 + S, "woken in the next window, not at {wake}");
    let out = b.on(&mut second, &req, Event::Wake, At::new(wake));
    let out = settle_calls(&b, &mut second, &req, out, wake);
    assert!(out.go, "{out:?}");
    assert_eq!(out.waited_ns, Some(wake - (T0 + 200 * MS)));
}

#[test]
fn a_client_that_leaves_during_its_call_gives_back_its_turn_and_the_answer_still_fills_the_lease() {
    let b = Bench::new(GLOBAL_QUEUED);
    let req = MemoryRequest::new("GET", "/x").header("x-tenant-id", "acme");
    let (mut flow, out) = b.arrive(&req, T0);
    let needs = out.call.expect("a call");
    let left = b.on(&mut flow, &req, Event::Left, At::new(T0 + MS));
    assert!(left.warnings.is_empty(), "{left:?}");
    let answers = b.answer(&needs, T0 + MS);
    let out = b.on(&mut flow, &req, Event::Answered(Some(answers)), At::new(T0 + 2 * MS));
    assert!(!out.go && out.decided.is_empty(), "no decision for a request gone: {out:?}");
    assert!(out.granted.iter().any(|(_, u)| *u > 0), "the lease was filled: {out:?}");
}

#[test]
fn tallies_count_a_denial_once_and_a_wait_for_a_call_not_at_all() {
    let b = Bench::new(TWO_PER_SECOND);
    let req = MemoryRequest::new("GET", "/x");
    b.arrive(&req, T0);
    let admitted = b.arrive(&req, T0).1;
    assert!(tallied(&b.policy, admitted.decided.last().unwrap()).contains(&(0, Tally::Allowed)));
    let denied = b.arrive(&req, T0).1;
    let t = tallied(&b.policy, denied.decided.last().unwrap());
    assert_eq!(t.iter().filter(|(_, t)| *t == Tally::Denied).count(), 1, "{t:?}");
    let g = Bench::new(GLOBAL);
    let calls = g.arrive(&MemoryRequest::new("GET", "/x").header("x-tenant-id", "a"), T0).1;
    let t = tallied(&g.policy, calls.decided.last().unwrap());
    assert!(t.iter().all(|(_, t)| matches!(t, Tally::Credit | Tally::Reset)), "{t:?}");
}

#[test]
fn a_rule_that_counts_successes_gives_back_what_a_failed_answer_spent() {
    let b = Bench::new(
        r#"{"rules": [{"name": "two", "limit": {"requests": 2, "per": "1s"}, "count": "success"},
        {"name": "all", "limit": {"requests": 3, "per": "1s"}}]}"#,
    );
    let req = MemoryRequest::new("GET", "/x");
    let (mut failed, out) = b.arrive(&req, T0);
    assert!(out.go && failed.wants_status());
    let refunded = b.on(&mut failed, &req, Event::Response { status: 503 }, At::new(T0 + MS));
    assert_eq!(refunded.refunded, vec![0], "only the rule that counts successes: {refunded:?}");
    // Once: a second answer (there is none in Envoy) gives nothing more.
    assert!(b.on(&mut failed, &req, Event::Response { status: 503 }, At::new(T0 + MS)).refunded.is_empty());
    let (mut ok, _) = b.arrive(&req, T0);
    assert!(b.on(&mut ok, &req, Event::Response { status: 499 }, At::new(T0 + MS)).refunded.is_empty(), "below 500 counts");
    // `two` has one unit left (the failed call's came back) for a third
    // call; `all` counted all three, and refuses the fourth.
    assert!(b.arrive(&req, T0 + 2 * MS).1.go);
    let fourth = b.arrive(&req, T0 + 3 * MS).1;
    assert_eq!(status(&fourth), Some(429));
    let all = fourth.decided.last().and_then(|d| d.decision.ruling.applied.iter().find(|a| a.rule == 1).copied());
    assert!(all.is_some_and(|a| !a.outcome.allowed), "`all` counted the failed call: {fourth:?}");
}

#[test]
fn a_global_rule_that_counts_successes_returns_the_unit_to_its_lease() {
    let json = GLOBAL.replace(r#""limit": {"requests": 5"#, r#""count": {"success_below": 400}, "limit": {"requests": 5"#);
    let b = Bench::new(&json);
    let req = MemoryRequest::new("GET", "/x").header("x-tenant-id", "acme");
    let (mut flow, out) = b.arrive(&req, T0);
    let out = settle_calls(&b, &mut flow, &req, out, T0);
    assert!(out.go && flow.wants_status(), "{out:?}");
    let refunded = b.on(&mut flow, &req, Event::Response { status: 404 }, At::new(T0 + MS));
    assert_eq!(refunded.refunded, vec![0], "{refunded:?}");
    assert!(refunded.warnings.is_empty(), "{refunded:?}");
}

const PENALTY: &str = r#"{"rules": [{"name": "per-ip", "key": ["client_ip"], "limit": {"requests": 5, "per": "1s"},
    "penalty": {"after": 3, "within": "60s", "block": "60s"}}]}"#;

#[test]
fn a_key_refused_too_often_is_boxed_for_the_penalty_then_let_go() {
    let b = Bench::new(PENALTY);
    let req = MemoryRequest::new("GET", "/x");
    let other = MemoryRequest::new("GET", "/x").from_address("10.0.0.9:1234");
    for _ in 0..5 {
        assert!(b.arrive(&req, T0).1.go);
    }
    // Three refusals: the third boxes the key.
    let refusals: Vec<Out> = (0..3).map(|i| b.arrive(&req, T0 + i * MS).1).collect();
    assert!(refusals.iter().all(|o| status(o) == Some(429)));
    let started: Vec<usize> =
        refusals.iter().map(|o| tallied(&b.policy, o.decided.last().unwrap()).iter().filter(|t| t.1 == Tally::BoxStarted).count()).collect();
    assert_eq!(started, vec![0, 0, 1], "{refusals:?}");
    // Two seconds later the bucket is full again, but the key is boxed:
    // refused under the box's tier, until the box ends.
    let boxed = b.arrive(&req, T0 + 2 * S).1;
    let body = &boxed.reply.as_ref().expect("a 429").body;
    assert!(body.contains(r#""tier":"penalty""#), "{body}");
    let retry: u64 = boxed.reply.as_ref().unwrap().headers.iter().find(|(n, _)| n == "retry-after").unwrap().1.parse().unwrap();
    assert!((57..=61).contains(&retry), "retry after {retry}");
    assert!(tallied(&b.policy, boxed.decided.last().unwrap()).contains(&(0, Tally::Boxed)));
    // Another client is not affected.
    assert!(b.arrive(&other, T0 + 2 * S).1.go);
    // After the box, the key is let go.
    assert!(b.arrive(&req, T0 + 62 * S).1.go);
}

#[test]
fn a_global_rules_box_is_shared_and_learnt_from_the_counter_service() {
    let json = r#"{"global": {}, "rules": [{"name": "per-ip", "scope": "global", "key": ["client_ip"], "limit": {"requests": 2, "per": "1s"},
        "penalty": {"after": 2, "within": "60s", "block": "30s", "tier": "boxed"}}]}"#;
    let b = Bench::new(json);
    let req = MemoryRequest::new("GET", "/x");
    let mut shared = Vec::new();
    for i in 0..8 {
        let (mut flow, out) = b.arrive(&req, T0 + i * MS);
        let out = settle_calls(&b, &mut flow, &req, out, T0 + i * MS);
        shared.extend(out.share);
    }
    assert_eq!(shared.len(), 1, "one box, shared once: {shared:?}");
    assert_eq!((shared[0].rule.as_str(), shared[0].for_ms), ("per-ip", 30_000));
    // The box's own metric and tier at this instance.
    let out = b.arrive(&req, T0 + 10 * MS).1;
    assert!(out.reply.as_ref().is_some_and(|r| r.body.contains(r#""tier":"boxed""#)), "{out:?}");
}

#[test]
fn an_answer_that_says_another_instance_boxed_the_key_boxes_it_here() {
    let json = r#"{"global": {}, "rules": [{"name": "per-ip", "scope": "global", "key": ["client_ip"], "limit": {"requests": 100, "per": "1s"},
        "penalty": {"after": 10, "within": "60s", "block": "30s"}}]}"#;
    let b = Bench::new(json);
    let req = MemoryRequest::new("GET", "/x");
    // A quiet key is admitted on credit; its refill goes to the leader,
    // whose answer this is.
    let needs = b.arrive(&req, T0).1.refills;
    assert!(!needs.is_empty());
    let mut answers = b.answer(&needs, T0);
    // The service grants a blocked key nothing, and says for how long.
    answers[0].granted = 0;
    answers[0].blocked_ns = 20 * S;
    let applied = apply_answers(&b.policy, &b.store, &needs, &answers, T0);
    assert!(applied.warnings.iter().any(|w| w.contains("penalty box")), "{applied:?}");
    let later = b.arrive(&req, T0 + S).1;
    assert!(later.reply.as_ref().is_some_and(|r| r.body.contains(r#""tier":"penalty""#)), "{later:?}");
    assert!(b.arrive(&req, T0 + 21 * S).1.reply.as_ref().is_none_or(|r| !r.body.contains("penalty")));
}

const RESPONSE_HEADER: &str = r#"{"rules": [{"name": "units", "algorithm": "fixed_window", "limit": {"requests": 100, "per": "1m"},
    "cost": {"response_header": "x-units", "estimate": 10}}]}"#;

fn remaining(out: &Out, flow: &Flow<&Policy>) -> Option<u64> {
    assert!(out.go, "{out:?}");
    flow.admitted()?.headers.iter().find(|(n, _)| n == "x-ratelimit-remaining")?.1.parse().ok()
}

fn units(figure: &str) -> Event {
    Event::ResponseCost(ResponsePart::Headers(vec![("x-units".into(), figure.as_bytes().to_vec())]))
}

#[test]
fn a_response_cost_charges_the_estimate_then_settles_up_or_down_to_the_response_header() {
    let b = Bench::new(RESPONSE_HEADER);
    let req = MemoryRequest::new("GET", "/x");
    let (mut flow, out) = b.arrive(&req, T0);
    assert_eq!(remaining(&out, &flow), Some(90), "the estimate is charged up front");
    assert_eq!(flow.response_wants(), Wants { headers: vec!["x-units".into()], body: false });
    // Settle up: 30 units, 20 more than the estimate.
    let up = b.on(&mut flow, &req, units(" 30 "), At::new(T0 + MS));
    assert_eq!(up.settled, vec![Settled { rule: 0, charged: 20, returned: 0, kept: false }], "{up:?}");
    assert!(b.on(&mut flow, &req, units("30"), At::new(T0 + MS)).settled.is_empty(), "once");
    assert_eq!(flow.response_wants(), Wants::default());
    let (mut flow, out) = b.arrive(&req, T0 + 2 * MS);
    assert_eq!(remaining(&out, &flow), Some(60));
    // Settle down: nothing used gives the whole estimate back.
    let down = b.on(&mut flow, &req, units("0"), At::new(T0 + 3 * MS));
    assert_eq!(down.settled, vec![Settled { rule: 0, charged: 0, returned: 10, kept: false }]);
    let (flow, out) = b.arrive(&req, T0 + 4 * MS);
    assert_eq!(remaining(&out, &flow), Some(60), "70 left before this request, 60 after");
}

#[test]
fn a_response_figure_past_the_limit_is_charged_and_the_next_requests_wait() {
    let b = Bench::new(RESPONSE_HEADER);
    let req = MemoryRequest::new("GET", "/x");
    let (mut flow, _) = b.arrive(&req, T0);
    // 100 is the most a response may say (`max`: the burst); 90 were left.
    let out = b.on(&mut flow, &req, units("100"), At::new(T0 + MS));
    assert_eq!(out.settled.first().map(|s| s.charged), Some(90));
    let refused = b.arrive(&req, T0 + 2 * MS).1;
    assert_eq!(status(&refused), Some(429), "the window is spent: the next request waits for the next one");
    assert!(b.arrive(&req, T0 + 60 * S).1.go);
}

#[test]
fn a_missing_or_unreadable_or_huge_response_figure_leaves_the_estimate() {
    let b = Bench::new(&RESPONSE_HEADER.replace(r#""estimate": 10"#, r#""estimate": 10, "max": 50"#).replace(r#""requests": 100,"#, r#""requests": 1000,"#));
    let req = MemoryRequest::new("GET", "/x");
    let garbage: &[&[u8]] = &[b"", b"abc", b"-5", b"+5", b"1e3", b"3.5", b"51", b"99999999999999999999999", b"\xff\xfe", b"1 2"];
    for g in garbage {
        let (mut flow, _) = b.arrive(&req, T0);
        let part = ResponsePart::Headers(vec![("x-units".into(), g.to_vec())]);
        let out = b.on(&mut flow, &req, Event::ResponseCost(part), At::new(T0 + MS));
        assert_eq!(out.settled, vec![Settled { rule: 0, charged: 0, returned: 0, kept: true }], "{g:?}");
    }
    let (mut flow, _) = b.arrive(&req, T0);
    let missing = b.on(&mut flow, &req, Event::ResponseCost(ResponsePart::Headers(Vec::new())), At::new(T0 + MS));
    assert!(missing.settled.first().is_some_and(|s| s.kept), "{missing:?}");
    // Each of the eleven requests cost its estimate.
    let (flow, out) = b.arrive(&req, T0 + 2 * MS);
    assert_eq!(remaining(&out, &flow), Some(1000 - 12 * 10));
}

const RESPONSE_BODY: &str = r#"{"rules": [{"name": "tokens", "algorithm": "fixed_window", "limit": {"requests": 100000, "per": "1m"},
    "cost": {"response_body": "usage.total_tokens", "estimate": 100, "max": 1000}}]}"#;

fn body(text: &[u8]) -> Event {
    Event::ResponseCost(ResponsePart::Body(Some(text.to_vec())))
}

#[test]
fn a_response_body_cost_settles_on_the_whole_body_and_garbage_leaves_the_estimate() {
    let b = Bench::new(RESPONSE_BODY);
    let req = MemoryRequest::new("POST", "/v1/chat");
    let (mut flow, out) = b.arrive(&req, T0);
    assert_eq!(remaining(&out, &flow), Some(99_900));
    assert_eq!(flow.response_wants(), Wants { headers: Vec::new(), body: true });
    // The headers settle nothing of a body rule.
    assert!(b.on(&mut flow, &req, units("5"), At::new(T0 + MS)).settled.is_empty());
    let up = b.on(&mut flow, &req, body(br#"{"id": "x", "usage": {"prompt_tokens": 50, "total_tokens": 250}}"#), At::new(T0 + MS));
    assert_eq!(up.settled, vec![Settled { rule: 0, charged: 150, returned: 0, kept: false }]);
    let (mut flow, out) = b.arrive(&req, T0 + 2 * MS);
    assert_eq!(remaining(&out, &flow), Some(99_650));
    let down = b.on(&mut flow, &req, body(br#"{"usage": {"total_tokens": "40"}}"#), At::new(T0 + MS));
    assert_eq!(down.settled, vec![Settled { rule: 0, charged: 0, returned: 60, kept: false }]);
    let mut huge = br#"{"usage": {"total_tokens": 1}, "pad": ""#.to_vec();
    huge.extend(std::iter::repeat_n(b'a', MAX_BODY));
    huge.extend(br#""}"#);
    let garbage: Vec<Option<Vec<u8>>> = vec![
        None,
        Some(b"not json".to_vec()),
        Some(br#"{"usage": {"total_tokens": -1}}"#.to_vec()),
        Some(br#"{"usage": {"total_tokens": 1.5}}"#.to_vec()),
        Some(br#"{"usage": {"total_tokens": 1001}}"#.to_vec()),
        Some(br#"{"usage": {"prompt_tokens": 1}}"#.to_vec()),
        Some(br#"{"usage": [1]}"#.to_vec()),
        Some(br#"{"usage": {"total_tokens": 1}"#.to_vec()),
        Some(b"data: {\"usage\": {\"total_tokens\": 1}}\n\n".to_vec()),
        Some(huge),
        Some(vec![b'['; 10_000]),
    ];
    for g in garbage {
        let (mut flow, _) = b.arrive(&req, T0 + 3 * MS);
        let out = b.on(&mut flow, &req, Event::ResponseCost(ResponsePart::Body(g.clone())), At::new(T0 + 4 * MS));
        assert_eq!(out.settled, vec![Settled { rule: 0, charged: 0, returned: 0, kept: true }], "{:?}", g.map(|g| g.len()));
    }
}

#[test]
fn a_failed_answer_gives_the_estimate_back_and_settles_nothing_more() {
    let b = Bench::new(&RESPONSE_HEADER.replace(r#""cost""#, r#""count": "success", "cost""#));
    let req = MemoryRequest::new("GET", "/x");
    let (mut flow, _) = b.arrive(&req, T0);
    assert_eq!(b.on(&mut flow, &req, Event::Response { status: 502 }, At::new(T0 + MS)).refunded, vec![0]);
    assert!(b.on(&mut flow, &req, units("50"), At::new(T0 + MS)).settled.is_empty());
    let (flow, out) = b.arrive(&req, T0 + 2 * MS);
    assert_eq!(remaining(&out, &flow), Some(90));
}

#[test]
fn a_client_that_leaves_before_the_response_ends_keeps_its_estimate() {
    let b = Bench::new(RESPONSE_BODY);
    let req = MemoryRequest::new("POST", "/v1/chat");
    let (mut flow, _) = b.arrive(&req, T0);
    b.on(&mut flow, &req, Event::Left, At::new(T0 + MS));
    assert!(b.on(&mut flow, &req, body(br#"{"usage": {"total_tokens": 1}}"#), At::new(T0 + MS)).settled.is_empty());
}

#[test]
fn a_global_rules_response_cost_settles_against_its_lease() {
    let json = GLOBAL.replace(
        r#""limit": {"requests": 5, "per": "1s"}"#,
        r#""limit": {"requests": 100, "per": "1s"}, "cost": {"response_header": "x-units", "estimate": 10}"#,
    );
    let b = Bench::new(&json);
    let rule = b.policy.rules.first().expect("rule").clone();
    let req = MemoryRequest::new("GET", "/x").header("x-tenant-id", "acme");
    let (mut flow, out) = b.arrive(&req, T0);
    let out = settle_calls(&b, &mut flow, &req, out, T0);
    assert!(out.go, "{out:?}");
    let fp = flow.costed.iter().find_map(|s| matches!(s, Spent::Lease { .. }).then_some(*s)).expect("a lease spend to settle");
    let Spent::Lease { fingerprint, .. } = fp else { unreachable!() };
    let lease = |now| crate::store::lease_update(&b.store, b.policy.slots, fingerprint, &rule.limit, now, |l| (l, None)).expect("lease");
    // What the lease holds for the key's next requests (a debt taken on
    // credit counts against it).
    let net = |l: crate::lease::Lease| i64::from(l.units) - i64::from(l.owed);
    let before = lease(T0 + MS);
    let down = b.on(&mut flow, &req, units("4"), At::new(T0 + MS));
    assert_eq!((down.settled.first().map(|s| s.returned), down.warnings.len()), (Some(6), 0), "{down:?}");
    assert_eq!(net(lease(T0 + MS)), net(before) + 6, "the surplus goes back to the lease");
    let (mut second, out) = b.arrive(&req, T0 + 2 * MS);
    let out = settle_calls(&b, &mut second, &req, out, T0 + 2 * MS);
    assert!(out.go, "{out:?}");
    let before = lease(T0 + 2 * MS);
    let extra = u64::from(before.units) + 5;
    let up = b.on(&mut second, &req, units(&(10 + extra).to_string()), At::new(T0 + 3 * MS));
    assert_eq!((up.settled.first().map(|s| s.charged), up.warnings.len()), (Some(extra), 0), "{up:?}");
    let after = lease(T0 + 3 * MS);
    assert_eq!((after.units, after.owed), (0, before.owed + 5), "what the lease lacks is owed to the service");
}
