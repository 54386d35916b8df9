//! The HTTP context: asks the core for a decision on the request headers;
//! `settle` answers 429/503 itself, holds the request, or lets it through
//! with rate-limit headers added to the upstream's response. When a global
//! rule has no lease yet, the request stays paused for one reserve call
//! (bounded by the policy's timeout) and is then decided again. If a held
//! request's client leaves, what it reserved is given back.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};
use sluice_core::counter_api::{Block, MAX_BLOCK_MS};
use sluice_core::limiter::{give_back, give_back_kept, obey_upstream, release, Carry, Ctx, Spent};
use sluice_core::policy::Policy;
use sluice_core::upstream::block_for;

use crate::callout;
use crate::global::{self, Then, Waiting};
use crate::host::{header_map, now_ns, random, HostRequest, HostStore, MAX_BODY};
use crate::logs::warn_within_budget;
use crate::queue::{self, Held};
use crate::settle::{settle, Next, Stream};

pub struct SluiceFilter {
    context_id: u32,
    policy: Option<Rc<Policy>>,
    queue: Option<u32>,
    instance: Rc<str>,
    arrival: u64,
    /// The decision waits for the request body (a rule's cost is in it).
    awaiting_body: bool,
    /// The buffered body's size, when the decision waited for it.
    body_size: Option<usize>,
    /// The body buffered so far, while the decision waits for the rest.
    buffered: usize,
    /// The reserve call this request waits for.
    waiting: Option<Waiting>,
    /// Concurrency units the admitted request holds until its stream ends.
    units: Vec<Spent>,
}

impl SluiceFilter {
    pub fn new(context_id: u32, policy: Option<Rc<Policy>>, queue: Option<u32>, instance: Rc<str>) -> SluiceFilter {
        SluiceFilter { context_id, policy, queue, instance, arrival: 0, awaiting_body: false, body_size: None, buffered: 0, waiting: None, units: Vec::new() }
    }

    /// Decides the request with what it carries; settles the decision, or
    /// pauses for the reserve call it waits for.
    fn decide(&mut self, policy: &Rc<Policy>, ctx: Ctx, carried: &[Carry]) -> Next {
        let ctx = Ctx { random: random(), ..ctx };
        let mut request = HostRequest::new(self.body_size);
        let instance = self.instance.clone();
        let started = crate::metrics::time_this_decision().then(std::time::Instant::now);
        let then = global::decide_or_call(policy, &mut request, ctx, carried, self.queue, |settings, needs| callout::reserve(settings, &instance, needs));
        if let Some(started) = started {
            crate::metrics::decision_time(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        }
        match then {
            Then::Settle(d) => {
                if d.allowed() && !d.pending() && d.redo_at.is_none() {
                    self.units.extend(d.spent.iter().filter(|s| matches!(s, Spent::Concurrent { .. })));
                }
                let stream = Stream { context_id: self.context_id, arrival: self.arrival, body_size: self.body_size, first: true };
                settle(policy, &d, stream, ctx.now, random())
            }
            Then::Wait(waiting) => {
                self.waiting = Some(waiting);
                Next::Held
            }
        }
    }

    /// Decides the request (on its headers, or on its body when a rule's
    /// cost is in it) at `now` and tells how the stream goes on.
    fn start(&mut self, policy: &Rc<Policy>, now: u64) -> Action {
        let degraded = policy.global.is_some() && global::degraded();
        match self.decide(policy, Ctx { degraded, ..Ctx::at(now) }, &[]) {
            Next::Go => Action::Continue,
            Next::Held | Next::Replied => Action::Pause,
        }
    }
}

impl SluiceFilter {
    /// An upstream's 429/503 with a wait blocks the keys of the rules that
    /// obey upstream limits; the start of each block is logged once.
    fn learn(&self, policy: &Policy, status: u32, spent: &[sluice_core::limiter::Spent], ids: &[(usize, String)]) {
        if status != 429 && status != 503 {
            return;
        }
        // The whole map only for an answer that may ask us to wait.
        let headers: Vec<(String, String)> =
            header_map(MapType::HttpResponseHeaders).utf8_pairs().map(|(n, v)| (n.to_ascii_lowercase(), v.to_string())).collect();
        let now = now_ns();
        let Some(wait) = block_for(status, &headers, now) else { return };
        let (started, errors) = obey_upstream(policy, &HostStore, spent, wait, now);
        let mut blocks = Vec::new();
        for (rule, r) in started.into_iter().filter_map(|i| policy.rules.get(i).map(|r| (i, r))) {
            // As long as the rule lets one answer hold its key back.
            let held = wait.min(r.max_block.nanos());
            warn_within_budget!(now, "upstream answered {status} for rule {}: holding its key back for {:.1}s", r.name, held as f64 / 1e9);
            // A global rule's other instances learn it through the counter service.
            if let Some((_, id)) = ids.iter().find(|(i, _)| *i == rule) {
                let for_ms = (held / 1_000_000).clamp(1, MAX_BLOCK_MS);
                blocks.push(Block { rule: r.name.clone(), id: id.clone(), for_ms });
            }
        }
        if let (Some(settings), false) = (policy.global.as_ref(), blocks.is_empty()) {
            match callout::block(settings, &self.instance, &blocks) {
                Ok(_) => crate::metrics::sent(crate::metrics::Call::Block),
                Err(e) => {
                    crate::metrics::failed(crate::metrics::Call::Block);
                    warn_within_budget!(now, "upstream block not shared with the other instances: {e}");
                }
            }
        }
        for (rule, e) in errors {
            warn_within_budget!(now, "rule {}: recording an upstream limit: {e}", crate::rule_name(policy, rule));
        }
    }
}

impl SluiceFilter {
    /// Records the upstream's answer for adaptive rules; a change of an
    /// effective limit is logged.
    fn adapt(&self, policy: &Policy, status: u32, rules: &[usize], sent_at: u64) {
        let now = now_ns();
        for rule in rules.iter().filter_map(|&i| policy.rules.get(i)) {
            match sluice_core::adaptive::record(&HostStore, rule, now, now.saturating_sub(sent_at), status) {
                Ok(Some(c)) => {
                    let (verb, level) = if c.to < c.from { ("lowered", log::Level::Warn) } else { ("raised", log::Level::Info) };
                    log::log!(
                        level,
                        "rule {}: effective limit {verb} from {} to {} per {} (last interval: {} answers, {} slow, {} 5xx)",
                        rule.name,
                        c.from,
                        c.to,
                        rule.limit.per,
                        c.seen.answers,
                        c.seen.slow,
                        c.seen.errors
                    );
                }
                Ok(None) => {}
                Err(e) => warn_within_budget!(now, "rule {}: upstream health not recorded: {e}", rule.name),
            }
        }
    }
}

impl Context for SluiceFilter {
    fn on_done(&mut self) -> bool {
        queue::take_after(self.context_id);
        let now = now_ns();
        // The stream ended (answered, refused or the client left): its
        // concurrency units are free. Releasing one twice is harmless.
        for (rule, e) in release(&HostStore, &std::mem::take(&mut self.units), now) {
            warn_within_budget!(now, "rule {rule}: a concurrency unit was not released (it expires): {e}");
        }
        // The client left before its turn: give the turn back.
        let errors = match (queue::release(self.context_id), self.waiting.take(), self.policy.as_ref()) {
            (Some(Held::Resume { policy, spent, .. }), _, _) => (give_back(&policy, &HostStore, &spent, now), policy),
            (Some(Held::Redo { policy, kept, .. }), _, _) => (give_back_kept(&policy, &HostStore, &kept, now), policy),
            (None, Some(waiting), Some(policy)) => (give_back_kept(policy, &HostStore, &waiting.kept, now), policy.clone()),
            _ => return true,
        };
        let (errors, policy) = errors;
        for (rule, e) in errors {
            warn_within_budget!(now, "rule {}: giving back a queued turn: {e}", crate::rule_name(&policy, rule));
        }
        true
    }

    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        let Some(policy) = self.policy.clone() else { return };
        let Some(waiting) = self.waiting.take_if(|w| w.token == token) else { return };
        let now = now_ns();
        let waited_ns = now.saturating_sub(self.arrival);
        let (answered, carried) = global::receive(&policy, &waiting.needs, body_size, now, waiting.kept);
        let degraded = !answered;
        let ctx = Ctx { degraded, may_wait: false, waited_ns, ..Ctx::at(now) };
        if self.decide(&policy, ctx, &carried) == Next::Go {
            if let Err(e) = hostcalls::resume_http_request() {
                log::debug!("request not resumed (stream gone): {e:?}");
            }
        }
    }
}

/// The policy reads this request's body (see `Policy::reads_body`).
fn reads_body(policy: &Policy) -> bool {
    use sluice_core::request::Request;
    let mut request = HostRequest::new(None);
    let (method, path) = (request.method().unwrap_or_default(), request.path().unwrap_or_default());
    policy.reads_body(&method, &path)
}

impl HttpContext for SluiceFilter {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        let Some(policy) = self.policy.clone() else {
            return Action::Continue;
        };
        self.arrival = now_ns();
        if policy.needs_body && !end_of_stream && reads_body(&policy) {
            self.awaiting_body = true;
            return Action::Pause;
        }
        self.start(&policy, self.arrival)
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
            self.buffered = body_size;
            return Action::Pause;
        }
        self.awaiting_body = false;
        self.body_size = Some(body_size);
        self.start(&policy, now_ns())
    }

    fn on_http_request_trailers(&mut self, _trailers: usize) -> Action {
        // An HTTP/2 (or gRPC) request may end with trailers instead of a
        // last body frame: its body is whole now, and it is decided like
        // any other. Without this the SDK's default would let it through.
        if self.waiting.is_some() || queue::is_held(self.context_id) {
            return Action::Pause;
        }
        let Some(policy) = self.policy.clone().filter(|_| self.awaiting_body) else {
            return Action::Continue;
        };
        self.awaiting_body = false;
        self.body_size = Some(self.buffered);
        self.start(&policy, now_ns())
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let after = queue::take_after(self.context_id);
        if after.learn.is_some() || after.adapt.is_some() {
            // The upstream's status, read once for both.
            let status = crate::host::status(MapType::HttpResponseHeaders).unwrap_or(0);
            if let Some(learn) = after.learn {
                self.learn(&learn.policy, status, &learn.spent, &learn.global_ids);
            }
            if let Some((policy, rules)) = after.adapt {
                self.adapt(&policy, status, &rules, after.sent_at);
            }
        }
        for (name, value) in after.headers {
            // The SDK's setter panics on a refusal; a header not added is
            // not worth the VM.
            if let Err(e) = hostcalls::set_map_value(MapType::HttpResponseHeaders, &name, Some(&value)) {
                log::debug!("response header {name} not added: {e:?}");
            }
        }
        Action::Continue
    }
}
