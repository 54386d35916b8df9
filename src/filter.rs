//! The HTTP context: asks the core for a decision on the request headers,
//! answers 429 itself when denied, and adds the rate-limit headers to the
//! upstream's response when admitted.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use sluice_core::limiter::{decide, Ctx};
use sluice_core::policy::Policy;
use sluice_core::response::{admitted_headers, denial};

use crate::host::{now_ns, HostRequest, HostStore, Jitter};

pub struct SluiceFilter {
    policy: Option<Rc<Policy>>,
    jitter: Jitter,
    response_headers: Vec<(String, String)>,
}

impl SluiceFilter {
    pub fn new(policy: Option<Rc<Policy>>, jitter: Jitter) -> SluiceFilter {
        SluiceFilter { policy, jitter, response_headers: Vec::new() }
    }
}

impl Context for SluiceFilter {}

impl HttpContext for SluiceFilter {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let Some(policy) = self.policy.clone() else {
            return Action::Continue;
        };
        let now = now_ns();
        let decision = decide(&policy, &mut HostRequest, &HostStore, Ctx::at(now));
        for (rule, e) in &decision.errors {
            log::warn!("rule {} let a request pass: {e}", policy.rules[*rule].name);
        }
        if let Some(reply) = denial(&policy, &decision, now, self.jitter.next()) {
            let headers: Vec<(&str, &str)> = reply.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            self.send_http_response(reply.status, headers, Some(reply.body.as_bytes()));
            return Action::Pause;
        }
        self.response_headers = admitted_headers(&policy, &decision, now);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        for (name, value) in std::mem::take(&mut self.response_headers) {
            self.set_http_response_header(&name, Some(&value));
        }
        Action::Continue
    }
}
