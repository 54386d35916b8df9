//! The HTTP context: asks the core for a decision on the request headers,
//! answers 429 (or 503) itself when denied, and adds the rate-limit headers
//! to the upstream's response when admitted. When a global rule has no
//! lease yet, the request stays paused for one reserve call (bounded by the
//! policy's timeout) and is then decided again. When a rule queues the
//! request, it stays paused until its turn (see `queue`); if its client
//! leaves first, what it reserved is given back.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use sluice_core::coordination::degraded_since;
use sluice_core::limiter::{decide, give_back, Ctx, Decision, LeaseNeed, Spent};
use sluice_core::policy::Policy;
use sluice_core::response::{admitted_headers, denial, unavailable};

use crate::callout;
use crate::global;
use crate::host::{now_ns, HostRequest, HostStore, Jitter};
use crate::queue;

pub struct SluiceFilter {
    context_id: u32,
    policy: Option<Rc<Policy>>,
    queue: Option<u32>,
    instance: Rc<str>,
    jitter: Jitter,
    response_headers: Vec<(String, String)>,
    /// The reserve call this request waits for.
    waiting: Option<(u32, Vec<LeaseNeed>)>,
    /// What a request held in a queue reserved.
    held: Vec<Spent>,
}

impl SluiceFilter {
    pub fn new(context_id: u32, policy: Option<Rc<Policy>>, queue: Option<u32>, instance: Rc<str>, jitter: Jitter) -> SluiceFilter {
        SluiceFilter { context_id, policy, queue, instance, jitter, response_headers: Vec::new(), waiting: None, held: Vec::new() }
    }

    fn decide(&mut self, policy: &Policy, ctx: Ctx) -> Decision {
        let decision = decide(policy, &mut HostRequest, &HostStore, ctx);
        for (rule, e) in &decision.errors {
            log::warn!("rule {} let a request pass: {e}", policy.rules[*rule].name);
        }
        global::enqueue(self.queue, &decision.refills);
        decision
    }

    /// Answers a final decision: a local reply, or headers for later.
    fn finish(&mut self, policy: &Policy, d: &Decision, now: u64) -> Action {
        let reply = unavailable(policy, d).or_else(|| denial(policy, d, now, self.jitter.next()));
        if let Some(reply) = reply {
            let headers: Vec<(&str, &str)> = reply.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            self.send_http_response(reply.status, headers, Some(reply.body.as_bytes()));
            return Action::Pause;
        }
        self.response_headers = admitted_headers(policy, d, now);
        if d.hold_ns > 0 {
            self.held = d.spent.clone();
            queue::hold(self.context_id, now.saturating_add(d.hold_ns));
            return Action::Pause;
        }
        Action::Continue
    }
}

impl Context for SluiceFilter {
    fn on_done(&mut self) -> bool {
        if queue::release(self.context_id) {
            // The client left before its turn: give the turn back.
            if let Some(policy) = &self.policy {
                for (rule, e) in give_back(policy, &HostStore, &self.held, now_ns()) {
                    log::warn!("rule {}: a queued turn was not given back: {e}", policy.rules[rule].name);
                }
            }
        }
        true
    }

    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        let (Some(policy), Some((expected, needs))) = (self.policy.clone(), self.waiting.take()) else { return };
        if token != expected {
            return;
        }
        let now = now_ns();
        let ctx = match callout::answers(&needs, body_size) {
            Ok(answers) => {
                global::apply(&policy, &needs, &answers, now);
                global::reachable(true, now, "");
                Ctx { now, degraded: false, may_wait: false }
            }
            Err(e) => {
                global::reachable(false, now, &e.to_string());
                Ctx { now, degraded: true, may_wait: false }
            }
        };
        let d = self.decide(&policy, ctx);
        if self.finish(&policy, &d, now) == Action::Continue {
            self.resume_http_request();
        }
    }
}

impl HttpContext for SluiceFilter {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let Some(policy) = self.policy.clone() else {
            return Action::Continue;
        };
        let now = now_ns();
        let degraded = policy.global.is_some() && degraded_since(&HostStore).is_some();
        let d = self.decide(&policy, Ctx { now, degraded, may_wait: true });
        if d.pending() {
            if let Some(settings) = policy.global.as_ref() {
                match callout::reserve(settings, &self.instance, &d.wait_for) {
                    Ok(token) => {
                        self.waiting = Some((token, d.wait_for));
                        return Action::Pause;
                    }
                    Err(e) => {
                        global::reachable(false, now, &e);
                        let d = self.decide(&policy, Ctx { now, degraded: true, may_wait: false });
                        return self.finish(&policy, &d, now);
                    }
                }
            }
        }
        self.finish(&policy, &d, now)
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        for (name, value) in std::mem::take(&mut self.response_headers) {
            self.set_http_response_header(&name, Some(&value));
        }
        Action::Continue
    }
}
