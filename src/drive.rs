//! Drives a request's `Flow` (the core's state machine, see
//! `sluice_core::flow`): hands it Envoy's events and carries out what it
//! answers: a local reply, a hold in the worker's queue, a reserve call,
//! and the logs and metrics of each decision. Nothing here decides a
//! request's fate.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use sluice_core::flow::{tallies, Decided, Event, Fate, Flow, Host, Out, Tally};
use sluice_core::limiter::LeaseNeed;
use sluice_core::policy::{Global, Policy};

use crate::global;
use crate::host::{now_ns, random, HostRequest, HostStore};
use crate::logs::warn_within_budget;
use crate::queue;

/// A request's flow: owned by its HTTP context, and shared with the
/// worker's queue while it is held, and with the root while the root's
/// reserve call for it is in flight.
pub type SharedFlow = Rc<RefCell<Flow<Rc<Policy>>>>;

/// Dispatches a flow's reserve call from the right context and keeps what
/// its answer needs.
pub type Dispatch<'a> = dyn FnMut(&Global, &[LeaseNeed]) -> Result<(), String> + 'a;

/// The worker's clock and circumstances, read when the flow asks.
#[derive(Default)]
struct Worker {
    now: Option<u64>,
}

impl Host for Worker {
    fn now(&mut self) -> u64 {
        *self.now.get_or_insert_with(now_ns)
    }
    fn random(&mut self) -> u64 {
        random()
    }
    fn degraded(&mut self) -> bool {
        global::degraded()
    }
    fn held_here(&mut self) -> usize {
        queue::len()
    }
}

/// Hands `event` to the flow of stream `context_id` (the effective
/// context) and carries out what it answers; true when the request goes on
/// now. `call` dispatches a reserve call for the flow from the right
/// context and keeps what its answer needs; when it cannot, the flow is
/// told at once (and decides as if the counter service were down).
pub fn drive(context_id: u32, flow: &SharedFlow, event: Event, (queue, instance): (Option<u32>, &str), call: &mut Dispatch) -> bool {
    let mut next = Some(event);
    let mut go = false;
    while let Some(event) = next.take() {
        let mut worker = Worker::default();
        let timed = crate::metrics::time_this_decision().then(std::time::Instant::now);
        let out = {
            let mut f = flow.borrow_mut();
            let mut request = HostRequest::new(context_id, f.body_size());
            let out = f.on(event, &mut sluice_core::flow::Env { store: &HostStore, request: &mut request, host: &mut worker });
            if !out.go && out.reply.is_none() {
                // It waits (for its body, a reserve call, its turn): decided again later.
                request.keep();
            }
            out
        };
        go = out.go;
        if out.is_quiet() {
            continue;
        }
        if let (Some(started), false) = (timed, out.decided.is_empty()) {
            crate::metrics::decision_time(crate::metrics::micros_since(started));
        }
        let policy = flow.borrow().policy_handle().clone();
        let now = worker.now.unwrap_or_else(now_ns);
        report(&policy, &out, now, queue);
        if let Some(reply) = &out.reply {
            let headers: Vec<(&str, &str)> = reply.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            if let Err(e) = hostcalls::send_http_response(reply.status, headers, Some(reply.body.as_bytes())) {
                warn_within_budget!(now, "local reply not sent: {e:?}");
            }
        }
        global::share_blocks(&policy, instance, &out.share, now, "penalty box");
        if let Some(at) = out.wake_at {
            queue::hold(context_id, at, flow.clone());
        }
        if let Some(needs) = &out.call {
            let made = policy.global.as_ref().map_or_else(|| Err("no counter service configured".to_string()), |settings| call(settings, needs));
            match made {
                Ok(()) => crate::metrics::sent(crate::metrics::Call::Reserve),
                Err(e) => {
                    crate::metrics::failed(crate::metrics::Call::Reserve);
                    global::reachable(false, now, &e);
                    next = Some(Event::Answered(None));
                }
            }
        }
    }
    go
}

/// The logs and metrics of what the flow did.
fn report(policy: &Policy, out: &Out, now: u64, queue: Option<u32>) {
    for decided in &out.decided {
        observe(policy, decided, now);
    }
    for line in &out.warnings {
        warn_within_budget!(now, "{line}");
    }
    crate::metrics::lease_units(policy, &out.granted);
    global::enqueue(queue, &out.refills);
    if out.hold_refused {
        crate::metrics::held_refused();
    }
    for rule in out.refunded.iter().filter_map(|i| policy.rules.get(*i)) {
        crate::metrics::count(crate::metrics::rule(rule).refunds);
    }
    for (rule, settled) in out.settled.iter().filter_map(|s| policy.rules.get(s.rule).map(|r| (r, s))) {
        crate::metrics::cost_settled(rule, settled);
    }
    if let Some(waited) = out.waited_ns {
        crate::metrics::queue_wait(waited / 1_000_000);
    }
}

/// One decision's log lines and counters.
fn observe(policy: &Policy, decided: &Decided, now: u64) {
    let d = &decided.decision;
    for (rule, e) in &d.books.errors {
        warn_within_budget!(now, "rule {} let a request pass: {e}", policy.rule_name(*rule));
    }
    for (rule, e) in &d.books.unread {
        warn_within_budget!(now, "rule {}: adaptive limit not read, its configured limit applies: {e}", policy.rule_name(*rule));
    }
    if !d.books.notes.is_empty() {
        crate::logs::notes(policy, d, now);
    }
    if d.books.mcp_headers_disagree && decided.first && decided.fate != Fate::Calls {
        crate::metrics::mcp_headers_disagree();
    }
    tallies(policy, decided, |rule, tally| {
        let Some(rule) = policy.rules.get(rule) else { return };
        let ids = crate::metrics::rule(rule);
        crate::metrics::count(match tally {
            Tally::Allowed => ids.allowed,
            Tally::Denied => ids.denied,
            Tally::ShadowDenied => ids.shadow_denied,
            Tally::NearLimit => ids.near_limit,
            Tally::Queued => ids.queued,
            Tally::SlotOverflow => ids.slot_overflow,
            Tally::Credit => ids.credit,
            Tally::Reset => ids.resets,
            Tally::Boxed => ids.boxed,
            Tally::BoxStarted => ids.boxes,
            Tally::FromShare => ids.from_share,
            Tally::RefusedFromMemory => ids.refused_from_memory,
        });
    });
}
