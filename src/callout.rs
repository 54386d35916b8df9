//! Calls to the counter service through Envoy (`dispatch_http_call` to the
//! policy's cluster) and reading their answers. A missing answer (reset),
//! a status other than 200 or a body that does not fit the request are all
//! failures the caller handles per `failure_mode`.

use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType};
use sluice_core::counter_api::{block_body, parse_reply, reserve_body, Ask, Block, CounterError, BLOCK_PATH, RESERVE_PATH, SECRET_HEADER};
use sluice_core::lease::Answer;
use sluice_core::limiter::LeaseNeed;
use sluice_core::policy::Global;

/// Dispatches one reserve call for `needs`; returns the call's token.
pub fn reserve(global: &Global, instance: &str, needs: &[LeaseNeed]) -> Result<u32, String> {
    let asks: Vec<&Ask> = needs.iter().map(|n| &n.ask).collect();
    let body = reserve_body(instance, &asks);
    dispatch(global, "POST", RESERVE_PATH, Some(&body))
}

/// Dispatches one call sharing upstream blocks with the other instances;
/// its answer is not waited for (the service keeps the longest block).
pub fn block(global: &Global, instance: &str, blocks: &[Block]) -> Result<u32, String> {
    dispatch(global, "POST", BLOCK_PATH, Some(&block_body(instance, blocks)))
}

/// Dispatches a readiness probe (`GET /readyz`).
pub fn probe(global: &Global) -> Result<u32, String> {
    dispatch(global, "GET", "/readyz", None)
}

fn dispatch(global: &Global, method: &str, path: &str, body: Option<&[u8]>) -> Result<u32, String> {
    let mut headers = vec![(":method", method), (":path", path), (":authority", global.authority.as_str())];
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    if let Some(secret) = &global.secret {
        headers.push((SECRET_HEADER, secret.as_str()));
    }
    let timeout = Duration::from_nanos(global.timeout.nanos());
    hostcalls::dispatch_http_call(&global.cluster, headers, body, vec![], timeout).map_err(|s| format!("cannot call cluster {:?}: {s:?}", global.cluster))
}

/// The HTTP status of the call being answered (None: reset, no answer).
pub fn status() -> Option<u32> {
    crate::host::status(MapType::HttpCallResponseHeaders)
}

/// The answers to `needs` in the call being answered.
pub fn answers(needs: &[LeaseNeed], body_size: usize) -> Result<Vec<Answer>, CounterError> {
    match status() {
        None => return Err(CounterError::Malformed("no answer (connection reset or timeout)".into())),
        Some(200) => {}
        Some(s) => return Err(CounterError::Status(s)),
    }
    let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size).ok().flatten().unwrap_or_default();
    let asks: Vec<&Ask> = needs.iter().map(|n| &n.ask).collect();
    parse_reply(&body, &asks)
}
