//! The HTTP context: hands Envoy's events for one request to its flow
//! (`sluice_core::flow`, driven by `drive`), which answers 429/503, holds
//! the request, waits for one reserve call, or lets it through; then adds
//! the rate-limit headers to the upstream's response and learns from it
//! (upstream limits, adaptive rules), and hands the flow what a rule's cost
//! settles on (a response header; the response body, copied as it passes,
//! never held back).

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};
use sluice_core::counter_api::{Block, MAX_BLOCK_MS};
use sluice_core::flow::{Event, Flow, ResponsePart, MAX_BODY};
use sluice_core::limiter::{obey_upstream, LeaseNeed, Spent};
use sluice_core::policy::Policy;
use sluice_core::upstream::block_for;

use crate::callout;
use crate::drive::{drive, SharedFlow};
use crate::global;
use crate::host::{header_map, now_ns, HostStore};
use crate::logs::warn_within_budget;
use crate::queue;

pub struct SluiceFilter {
    context_id: u32,
    /// The request's flow; none without a policy.
    flow: Option<SharedFlow>,
    queue: Option<u32>,
    instance: Rc<str>,
    /// The reserve call this context made for its flow: its token and what
    /// it asked.
    call: Option<(u32, Vec<LeaseNeed>)>,
    /// The response body copied so far, while a rule's cost waits for it
    /// (at most `MAX_BODY` bytes; the body itself is never held back).
    response_body: Option<Vec<u8>>,
}

impl SluiceFilter {
    pub fn new(context_id: u32, policy: Option<Rc<Policy>>, queue: Option<u32>, instance: Rc<str>) -> SluiceFilter {
        let flow = policy.map(|p| Rc::new(RefCell::new(Flow::new(p))));
        SluiceFilter { context_id, flow, queue, instance, call: None, response_body: None }
    }

    /// Hands `event` to the flow; true when the request goes on now.
    fn drive(&mut self, event: Event) -> bool {
        let Some(flow) = self.flow.clone() else { return true };
        let (instance, mut made) = (self.instance.clone(), None);
        let go = drive(self.context_id, &flow, event, (self.queue, &instance), &mut |settings, needs| {
            made = Some((callout::reserve(settings, &instance, needs)?, needs.to_vec()));
            Ok(())
        });
        if made.is_some() {
            self.call = made;
        }
        go
    }

    /// The action for a request callback.
    fn act(&mut self, event: Event) -> Action {
        if self.drive(event) {
            Action::Continue
        } else {
            Action::Pause
        }
    }
}

impl SluiceFilter {
    /// An upstream's 429/503 with a wait blocks the keys of the rules that
    /// obey upstream limits; the start of each block is logged once.
    fn learn(&self, policy: &Policy, status: u32, spent: &[Spent], ids: &[(usize, String)]) {
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
        global::share_blocks(policy, &self.instance, &blocks, now, "upstream block");
        for (rule, e) in errors {
            warn_within_budget!(now, "rule {}: recording an upstream limit: {e}", policy.rule_name(rule));
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

impl SluiceFilter {
    /// Hands the flow what its rules settle their cost on from the
    /// response's headers, and starts copying the body if one waits for it.
    fn settle_on_headers(&mut self, flow: &SharedFlow, end_of_stream: bool) {
        let wants = flow.borrow().response_wants();
        if !wants.headers.is_empty() {
            // As bytes: the SDK's String getter aborts on a value that is not UTF-8.
            let read = |h: &String| Some((h.clone(), hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, h).ok()??));
            let pairs = wants.headers.iter().filter_map(read).collect();
            self.drive(Event::ResponseCost(ResponsePart::Headers(pairs)));
        }
        if wants.body {
            if end_of_stream {
                self.drive(Event::ResponseCost(ResponsePart::Body(None)));
            } else {
                self.response_body = Some(Vec::new());
            }
        }
    }

    /// Copies a chunk of the response body (passed on as it is) while a
    /// rule's cost waits for it; the whole body, or `None` past `MAX_BODY`,
    /// goes to the flow when the stream ends.
    fn copy_response_body(&mut self, size: usize, end_of_stream: bool) {
        let Some(mut copied) = self.response_body.take() else { return };
        let fits = copied.len().checked_add(size).is_some_and(|n| n <= MAX_BODY);
        let chunk = if fits && size > 0 { hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size) } else { Ok(None) };
        match chunk {
            _ if !fits => return self.end_response_body(None),
            Ok(Some(bytes)) => copied.extend_from_slice(&bytes),
            Ok(None) => {}
            Err(e) => {
                log::debug!("response body not read: {e:?}");
                return self.end_response_body(None);
            }
        }
        if end_of_stream {
            self.end_response_body(Some(copied));
        } else {
            self.response_body = Some(copied);
        }
    }

    fn end_response_body(&mut self, body: Option<Vec<u8>>) {
        self.response_body = None;
        self.drive(Event::ResponseCost(ResponsePart::Body(body)));
    }
}

impl Context for SluiceFilter {
    fn on_done(&mut self) -> bool {
        // The stream ended (answered, refused or the client left): the
        // flow frees its concurrency units and gives back a turn it kept.
        queue::release(self.context_id);
        self.drive(Event::Left);
        crate::host::forget_headers(self.context_id);
        true
    }

    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        let Some((_, needs)) = self.call.take_if(|(t, _)| *t == token) else { return };
        let answers = global::read_answers(&needs, body_size, now_ns());
        if self.drive(Event::Answered(answers)) {
            if let Err(e) = hostcalls::resume_http_request() {
                log::debug!("request not resumed (stream gone): {e:?}");
            }
        }
    }
}

impl HttpContext for SluiceFilter {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        self.act(Event::Headers { end_of_stream })
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.act(Event::Body { size: body_size, end_of_stream })
    }

    fn on_http_request_trailers(&mut self, _trailers: usize) -> Action {
        // An HTTP/2 (or gRPC) request may end with trailers instead of a
        // last body frame: its body is whole now, and it is decided like
        // any other. Without this the SDK's default would let it through.
        self.act(Event::Trailers)
    }

    fn on_http_response_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        let Some(flow) = self.flow.clone() else { return Action::Continue };
        let (policy, admitted, refunds) = {
            let mut f = flow.borrow_mut();
            (f.policy_handle().clone(), f.take_admitted(), f.wants_status())
        };
        let Some(after) = admitted else { return Action::Continue };
        if after.learns || !after.adapts.is_empty() || refunds {
            // The upstream's status, read once for all.
            let status = crate::host::status(MapType::HttpResponseHeaders).unwrap_or(0);
            if refunds {
                self.drive(Event::Response { status });
            }
            if after.learns {
                self.learn(&policy, status, &after.spent, &after.global_ids);
            }
            if !after.adapts.is_empty() {
                self.adapt(&policy, status, &after.adapts, after.sent_at);
            }
        }
        self.settle_on_headers(&flow, end_of_stream);
        for (name, value) in after.headers {
            // The SDK's setter panics on a refusal; a header not added is
            // not worth the VM.
            if let Err(e) = hostcalls::set_map_value(MapType::HttpResponseHeaders, &name, Some(&value)) {
                log::debug!("response header {name} not added: {e:?}");
            }
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        // Continued chunk by chunk: `body_size` is this chunk's.
        self.copy_response_body(body_size, end_of_stream);
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _trailers: usize) -> Action {
        // A response that ends in trailers (HTTP/2, gRPC): its body is whole.
        if let Some(body) = self.response_body.take() {
            self.end_response_body(Some(body));
        }
        Action::Continue
    }
}
