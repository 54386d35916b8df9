//! The HTTP context: asks the core for a decision on the request headers;
//! `settle` answers 429/503 itself, holds the request, or lets it through
//! with rate-limit headers added to the upstream's response. When a global
//! rule has no lease yet, the request stays paused for one reserve call
//! (bounded by the policy's timeout) and is then decided again. If a held
//! request's client leaves, what it reserved is given back.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use sluice_core::coordination::degraded_since;
use sluice_core::limiter::{give_back, obey_upstream, Ctx, Decision, LeaseNeed};
use sluice_core::upstream::block_for;
use sluice_core::policy::Policy;

use crate::callout;
use crate::global;
use crate::host::{now_ns, HostRequest, HostStore, Jitter, MAX_BODY};
use crate::queue::{self, Held};
use crate::settle::{settle, Next, Stream};

pub struct SluiceFilter {
    context_id: u32,
    policy: Option<Rc<Policy>>,
    queue: Option<u32>,
    instance: Rc<str>,
    jitter: Jitter,
    arrival: u64,
    /// The decision waits for the request body (a rule's cost is in it).
    awaiting_body: bool,
    request: HostRequest,
    /// The reserve call this request waits for.
    waiting: Option<(u32, Vec<LeaseNeed>)>,
}

impl SluiceFilter {
    pub fn new(context_id: u32, policy: Option<Rc<Policy>>, queue: Option<u32>, instance: Rc<str>, jitter: Jitter) -> SluiceFilter {
        SluiceFilter {
            context_id,
            policy,
            queue,
            instance,
            jitter,
            arrival: 0,
            awaiting_body: false,
            request: HostRequest::default(),
            waiting: None,
        }
    }

    fn decide(&mut self, policy: &Policy, ctx: Ctx) -> Decision {
        let ctx = Ctx { random: self.jitter.next(), ..ctx };
        let mut request = self.request;
        global::decide(policy, &mut request, ctx, self.queue)
    }

    fn settle(&mut self, policy: &Rc<Policy>, d: &Decision, now: u64) -> Next {
        let stream = Stream { context_id: self.context_id, arrival: self.arrival, body_size: self.request.body_size };
        settle(policy, d, stream, now, self.jitter.next())
    }

    /// Decides the request (on its headers, or on its body when a rule's
    /// cost is in it) and tells how the stream goes on.
    fn start(&mut self, policy: &Rc<Policy>) -> Action {
        let now = now_ns();
        let degraded = policy.global.is_some() && degraded_since(&HostStore).is_some();
        let mut d = self.decide(policy, Ctx { degraded, ..Ctx::at(now) });
        if d.pending() {
            if let Some(settings) = policy.global.as_ref() {
                match callout::reserve(settings, &self.instance, &d.wait_for) {
                    Ok(token) => {
                        self.waiting = Some((token, d.wait_for));
                        return Action::Pause;
                    }
                    Err(e) => {
                        global::reachable(false, now, &e);
                        d = self.decide(policy, Ctx { degraded: true, may_wait: false, ..Ctx::at(now) });
                    }
                }
            }
        }
        match self.settle(policy, &d, now) {
            Next::Go => Action::Continue,
            Next::Held | Next::Replied => Action::Pause,
        }
    }
}

impl SluiceFilter {
    /// An upstream's 429/503 with a wait blocks the keys of the rules that
    /// obey upstream limits; the start of each block is logged once.
    fn learn(&self, policy: &Policy, spent: &[sluice_core::limiter::Spent]) {
        let status = self.get_http_response_header(":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        if status != 429 && status != 503 {
            return;
        }
        let headers: Vec<(String, String)> =
            self.get_http_response_headers().into_iter().map(|(n, v)| (n.to_ascii_lowercase(), v)).collect();
        let now = now_ns();
        let Some(wait) = block_for(status, &headers, now) else { return };
        let (started, errors) = obey_upstream(policy, &HostStore, spent, wait, now);
        for rule in started {
            log::warn!(
                "upstream answered {status} for rule {}: holding its key back for {:.1}s",
                policy.rules[rule].name,
                wait as f64 / 1e9
            );
        }
        for (rule, e) in errors {
            log::warn!("rule {}: upstream limit not recorded: {e}", policy.rules[rule].name);
        }
    }
}

impl Context for SluiceFilter {
    fn on_done(&mut self) -> bool {
        queue::take_after(self.context_id);
        if let Some(Held::Resume { policy, spent }) = queue::release(self.context_id) {
            // The client left before its turn: give the turn back.
            for (rule, e) in give_back(&policy, &HostStore, &spent, now_ns()) {
                log::warn!("rule {}: a queued turn was not given back: {e}", policy.rules[rule].name);
            }
        }
        true
    }

    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        let Some(policy) = self.policy.clone() else { return };
        let Some((_, needs)) = self.waiting.take_if(|(expected, _)| *expected == token) else { return };
        let now = now_ns();
        let waited_ns = now.saturating_sub(self.arrival);
        let degraded = !global::receive(&policy, &needs, body_size, now);
        let ctx = Ctx { degraded, may_wait: false, waited_ns, ..Ctx::at(now) };
        let d = self.decide(&policy, ctx);
        if self.settle(&policy, &d, now) == Next::Go {
            self.resume_http_request();
        }
    }
}

impl HttpContext for SluiceFilter {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        let Some(policy) = self.policy.clone() else {
            return Action::Continue;
        };
        self.arrival = now_ns();
        if policy.needs_body && !end_of_stream {
            self.awaiting_body = true;
            return Action::Pause;
        }
        self.start(&policy)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        // A request held or waiting for a lease keeps its body until it is
        // resumed (continuing the body would release the headers too).
        if self.waiting.is_some() || queue::is_held(self.context_id) {
            return Action::Pause;
        }
        let Some(policy) = self.policy.clone().filter(|_| self.awaiting_body) else {
            return Action::Continue;
        };
        if !end_of_stream && body_size <= MAX_BODY {
            // Buffer until the whole body is here (or it is too large to read).
            return Action::Pause;
        }
        self.awaiting_body = false;
        self.request.body_size = Some(body_size);
        self.start(&policy)
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let after = queue::take_after(self.context_id);
        if let Some((policy, spent)) = after.learn {
            self.learn(&policy, &spent);
        }
        for (name, value) in after.headers {
            self.set_http_response_header(&name, Some(&value));
        }
        Action::Continue
    }
}
