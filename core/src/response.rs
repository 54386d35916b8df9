//! What the client sees: the 429 answer (the gateway's JSON body and
//! headers) and the rate-limit headers on admitted responses.
//!
//! Denied: `Retry-After`, `X-RateLimit-Limit`, `X-RateLimit-Remaining`,
//! `X-RateLimit-Reset` (epoch seconds), `X-RateLimit-Tenant` (when known),
//! and the IETF draft's `RateLimit-Policy: "<rule>";q=<limit>;w=<seconds>`
//! and `RateLimit: "<rule>";r=<remaining>;t=<seconds>`. The retry-after gets
//! up to a tenth of the rule's window (at most 5 s) of jitter, so clients
//! told to wait do not all return in the same instant.
//! Admitted: the same headers, less `Retry-After`, for the rule closest to
//! its limit.
//!
//! A refused JSON-RPC request (MCP) gets, with the same headers, a JSON-RPC
//! error instead of the gateway's body, so that an MCP client surfaces it
//! as what it is: `{"jsonrpc": "2.0", "id": <the request's id>, "error":
//! {"code": -32029, "message": "Rate limit exceeded (<rule>): retry after
//! <n> s", "data": {"retryAfter": <n>, "limits": {...}}}}` (`limits` as in
//! the gateway's body). A batch gets an array with one error per call that
//! has an id; a notification, or a batch of only notifications, gets the
//! 429 with no body (JSON-RPC answers no notification).

pub use crate::civil::civil_from_days;
use crate::limiter::{Decision, RuleOutcome};
use crate::policy::{Policy, ResponseHeaders, Rule};

const NS: u64 = 1_000_000_000;

/// JSON-RPC error code of a refusal: one of the codes JSON-RPC leaves to
/// servers (-32000 to -32099), 429 read into it.
pub const JSONRPC_RATE_LIMITED: i32 = -32029;
/// JSON-RPC error code of a 503 from a global rule that fails closed (its
/// counter service is unreachable): retry later, nothing was counted.
pub const JSONRPC_LIMITS_UNAVAILABLE: i32 = -32030;
const MAX_JITTER_NS: u64 = 5 * NS;

/// A complete local reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// A reply with a JSON `body`; a notification's empty body goes without
    /// a content type.
    fn json(status: u32, mut headers: Vec<(String, String)>, body: String) -> Reply {
        if !body.is_empty() {
            headers.push(("content-type".to_string(), "application/json".to_string()));
        }
        Reply { status, headers, body }
    }
}

fn ceil_secs(ns: u64) -> u64 {
    ns.div_ceil(NS)
}

fn common_headers(rule: &Rule, ro: &RuleOutcome, tenant: Option<&str>, reset_at_s: u64, t_s: u64) -> Vec<(String, String)> {
    let mut h = x_ratelimit_headers(ro, tenant, reset_at_s);
    h.extend(ietf_headers(rule, ro, t_s));
    h
}

/// The IETF pair: `RateLimit-Policy` and `RateLimit`.
fn ietf_headers(rule: &Rule, ro: &RuleOutcome, t_s: u64) -> [(String, String); 2] {
    [
        ("ratelimit-policy".to_string(), format!("\"{}\";q={};w={}", rule.name, ro.limit, ceil_secs(rule.limit.per.nanos()))),
        ("ratelimit".to_string(), format!("\"{}\";r={};t={}", rule.name, ro.outcome.remaining, t_s)),
    ]
}

/// The seed's `X-RateLimit-*` headers.
fn x_ratelimit_headers(ro: &RuleOutcome, tenant: Option<&str>, reset_at_s: u64) -> Vec<(String, String)> {
    let mut h = vec![
        ("x-ratelimit-limit".to_string(), ro.limit.to_string()),
        ("x-ratelimit-remaining".to_string(), ro.outcome.remaining.to_string()),
        ("x-ratelimit-reset".to_string(), reset_at_s.to_string()),
    ];
    if let Some(t) = tenant {
        h.push(("x-ratelimit-tenant".to_string(), t.to_string()));
    }
    h
}

/// The 429 reply for a denied decision; `None` when the request passes.
/// `now` is wall-clock ns since the epoch; `random` any random number.
pub fn denial(policy: &Policy, d: &Decision, now: u64, random: u64) -> Option<Reply> {
    let ro = d.ruling.denied_by.as_ref()?;
    let rule = policy.rules.get(ro.rule)?;
    let jitter_span = (rule.limit.per.nanos() / 10).min(MAX_JITTER_NS);
    let jitter = random.checked_rem(jitter_span.saturating_add(1)).unwrap_or(0);
    let retry_after = ceil_secs(ro.outcome.retry_after_ns.saturating_add(jitter)).max(1);
    // A calendar budget comes back at its boundary, whatever the jitter
    // (and a global rule's lease end, learnt a call away, may be a few ms
    // off it).
    let reset_at = match rule.limit.calendar {
        Some(_) => ceil_secs(rule.limit.window_end(rule.limit.window_at(now))),
        None => (now / NS).saturating_add(retry_after),
    };
    let tenant = d.ruling.tenant.as_deref().filter(|t| is_header_safe(t));
    let mut headers = common_headers(rule, ro, tenant, reset_at, retry_after);
    headers.insert(0, ("retry-after".to_string(), retry_after.to_string()));
    // A key in its penalty box is refused under the box's own tier.
    let boxed = rule.penalty.as_ref().filter(|_| d.books.boxed.contains(&ro.rule));
    let tier = boxed.map_or(&rule.name, |p| &p.tier);
    let limits = format!(
        "{{\"tier\":{},\"limit\":{},\"window\":\"{}\",\"remaining\":{},\"resetAt\":\"{}\"}}",
        json_string(tier),
        ro.limit,
        rule.limit.window_text(),
        ro.outcome.remaining,
        rfc3339(reset_at),
    );
    let body = match &d.ruling.jsonrpc {
        Some(msg) => {
            let message = match boxed {
                Some(_) => format!("Rate limit exceeded too often ({}): refused for {retry_after} s", rule.name),
                None => format!("Rate limit exceeded ({}): retry after {retry_after} s", rule.name),
            };
            jsonrpc_errors(msg, JSONRPC_RATE_LIMITED, &message, &format!("{{\"retryAfter\":{retry_after},\"limits\":{limits}}}"))
        }
        None => {
            let message = match boxed {
                Some(_) => "Too many requests over the limit: refused until resetAt.",
                None => "Too many requests. Please try again later.",
            };
            format!("{{\"error\":\"Rate Limit Exceeded\",\"message\":\"{message}\",\"retryAfter\":{retry_after},\"limits\":{limits}}}")
        }
    };
    Some(Reply::json(429, headers, body))
}

/// The JSON-RPC answer to a refused message: one error per call with an
/// id, as an array for a batch; empty when no call has an id. `data` is
/// JSON.
fn jsonrpc_errors(msg: &crate::jsonrpc::Message, code: i32, message: &str, data: &str) -> String {
    let message = json_string(message);
    let errors: Vec<String> = msg
        .calls
        .iter()
        .filter_map(|c| c.id.as_ref())
        .map(|id| format!("{{\"jsonrpc\":\"2.0\",\"id\":{},\"error\":{{\"code\":{code},\"message\":{message},\"data\":{data}}}}}", id.to_json()))
        .collect();
    match (msg.batch, errors.as_slice()) {
        (_, []) => String::new(),
        (false, [one, ..]) => one.clone(),
        (true, _) => format!("[{}]", errors.join(",")),
    }
}

/// The 503 reply when a global rule with `failure_mode: closed` cannot
/// reach its counter service; `None` otherwise.
pub fn unavailable(policy: &Policy, d: &Decision) -> Option<Reply> {
    let rule = policy.rules.get(d.ruling.unavailable?)?;
    let limits = format!("{{\"tier\":{},\"limit\":{},\"window\":\"{}\"}}", json_string(&rule.name), rule.limit.requests, rule.limit.window_text());
    let body = match &d.ruling.jsonrpc {
        Some(msg) => {
            let message = format!("Rate limit service unavailable ({}): retry after 1 s", rule.name);
            jsonrpc_errors(msg, JSONRPC_LIMITS_UNAVAILABLE, &message, &format!("{{\"retryAfter\":1,\"limits\":{limits}}}"))
        }
        None => format!(
            concat!(
                "{{\"error\":\"Service Unavailable\",",
                "\"message\":\"The rate limit service is unavailable. Please try again later.\",",
                "\"retryAfter\":1,",
                "\"limits\":{}}}"
            ),
            limits
        ),
    };
    Some(Reply::json(503, vec![("retry-after".to_string(), "1".to_string())], body))
}

/// Headers for an admitted response: those of the rule closest to its
/// limit. When a shadow rule would have refused the request, its headers
/// as a 429 would carry them (without `Retry-After`, since the request
/// passed), plus `X-RateLimit-Shadow: <rule>`, so that clients and
/// operators see the enforcement to come.
pub fn admitted_headers(policy: &Policy, d: &Decision, now: u64) -> Vec<(String, String)> {
    let tenant = d.ruling.tenant.as_deref().filter(|t| is_header_safe(t));
    if let Some(ro) = d.ruling.shadow_denied.iter().max_by_key(|s| s.outcome.retry_after_ns) {
        let Some(rule) = policy.rules.get(ro.rule) else { return Vec::new() };
        let retry_after = ceil_secs(ro.outcome.retry_after_ns).max(1);
        let mut h = common_headers(rule, ro, tenant, (now / NS).saturating_add(retry_after), retry_after);
        h.push(("x-ratelimit-shadow".to_string(), rule.name.clone()));
        return h;
    }
    let Some(ro) = d.ruling.tightest.as_ref() else { return Vec::new() };
    let Some(rule) = policy.rules.get(ro.rule) else { return Vec::new() };
    let reset_in = ceil_secs(ro.outcome.reset_ns);
    let reset_at = now.div_ceil(NS).saturating_add(reset_in);
    match policy.response_headers {
        ResponseHeaders::All => common_headers(rule, ro, tenant, reset_at, reset_in),
        ResponseHeaders::XRatelimit => x_ratelimit_headers(ro, tenant, reset_at),
        ResponseHeaders::Ietf => ietf_headers(rule, ro, reset_in).to_vec(),
        ResponseHeaders::None => Vec::new(),
    }
}

/// Tenants come from requests; only printable ASCII goes back in a header.
fn is_header_safe(v: &str) -> bool {
    v.len() <= 256 && v.bytes().all(|b| (0x20..0x7f).contains(&b))
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// `2025-11-17T12:34:45Z` for epoch seconds (proleptic Gregorian, UTC).
pub fn rfc3339(epoch_s: u64) -> String {
    let secs = epoch_s % 86_400;
    let (year, month, day) = civil_from_days(i64::try_from(epoch_s / 86_400).unwrap_or(i64::MAX));
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3_600, secs % 3_600 / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    use crate::bucket::Outcome;
    use crate::jsonrpc;

    const NOW: u64 = 1_700_235_285 * NS;

    fn refused(body: Option<&str>) -> (Policy, Decision) {
        let policy = Policy::from_json(r#"{"rules": [{"name": "tools-list", "key": [], "limit": {"requests": 5, "per": "1s"}}]}"#).unwrap();
        let outcome = Outcome { allowed: false, remaining: 0, reset_ns: NS, retry_after_ns: 200_000_000 };
        let ruling = crate::limiter::Ruling {
            denied_by: Some(RuleOutcome { rule: 0, outcome, limit: 5, near: false }),
            jsonrpc: body.map(|b| jsonrpc::parse(b.as_bytes()).unwrap()),
            ..Default::default()
        };
        let d = Decision { ruling, ..Decision::default() };
        (policy, d)
    }

    fn header<'a>(r: &'a Reply, name: &str) -> Option<&'a str> {
        r.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_rest_request_gets_the_gateway_body() {
        let (policy, d) = refused(None);
        let r = denial(&policy, &d, NOW, 0).unwrap();
        assert_eq!(r.status, 429);
        assert_eq!(
            r.body,
            r#"{"error":"Rate Limit Exceeded","message":"Too many requests. Please try again later.","retryAfter":1,"limits":{"tier":"tools-list","limit":5,"window":"1 second","remaining":0,"resetAt":"2023-11-17T15:34:46Z"}}"#
        );
        assert_eq!(header(&r, "content-type"), Some("application/json"));
        assert_eq!(header(&r, "retry-after"), Some("1"));
    }

    #[test]
    fn a_calendar_budget_resets_at_its_boundary() {
        let json = r#"{"rules": [{"name": "daily", "key": [], "limit": {"requests": 100, "calendar": "day", "utc_offset": "+02:00"}}]}"#;
        let policy = Policy::from_json(json).unwrap();
        // 2023-11-17T15:34:45Z; the day at +02:00 ends at 22:00Z.
        let left = (22 * 3_600 - (15 * 3_600 + 34 * 60 + 45)) * NS;
        let outcome = Outcome { allowed: false, remaining: 0, reset_ns: left, retry_after_ns: left };
        let ruling = crate::limiter::Ruling { denied_by: Some(RuleOutcome { rule: 0, outcome, limit: 100, near: false }), ..Default::default() };
        let d = Decision { ruling, ..Decision::default() };
        let r = denial(&policy, &d, NOW, 4_999_999_999).unwrap();
        assert!(r.body.contains(r#""window":"1 day (UTC+02:00)","remaining":0,"resetAt":"2023-11-17T22:00:00Z""#), "{}", r.body);
        assert_eq!(header(&r, "x-ratelimit-reset"), Some("1700258400"));
        assert_eq!(header(&r, "retry-after"), Some(((left + 4_999_999_999).div_ceil(NS)).to_string().as_str()), "jitter on the wait only");
    }

    #[test]
    fn a_json_rpc_request_gets_a_json_rpc_error() {
        let limits = r#"{"tier":"tools-list","limit":5,"window":"1 second","remaining":0,"resetAt":"2023-11-17T15:34:46Z"}"#;
        let error = |id: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":-32029,"message":"Rate limit exceeded (tools-list): retry after 1 s","data":{{"retryAfter":1,"limits":{limits}}}}}}}"#
            )
        };
        let cases: Vec<(&str, String)> = vec![
            (r#"{"jsonrpc":"2.0","id":6,"method":"tools/list"}"#, error("6")),
            (r#"{"jsonrpc":"2.0","id":"x\"1","method":"tools/list"}"#, error(r#""x\"1""#)),
            (r#"{"jsonrpc":"2.0","id":1.5,"method":"tools/list"}"#, error("null")),
            (r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#, String::new()),
            (r#"[{"id":1,"method":"tools/list"},{"method":"notifications/x"},{"id":"b","method":"ping"}]"#, format!("[{},{}]", error("1"), error(r#""b""#))),
            (r#"[{"method":"notifications/x"}]"#, String::new()),
        ];
        for (body, want) in cases {
            let (policy, d) = refused(Some(body));
            let r = denial(&policy, &d, NOW, 0).unwrap();
            assert_eq!(r.status, 429, "{body}");
            assert_eq!(r.body, want, "{body}");
            if !want.is_empty() {
                let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
                let first = if v.is_array() { &v[0] } else { &v };
                assert_eq!(first["error"]["data"]["retryAfter"], 1, "{body}");
            }
            assert_eq!(header(&r, "content-type").is_some(), !want.is_empty(), "{body}: a content type only with a body");
            assert_eq!(header(&r, "retry-after"), Some("1"), "{body}");
            assert!(header(&r, "ratelimit").is_some(), "{body}");
        }
    }

    #[test]
    fn a_failing_closed_rule_answers_json_rpc_with_its_own_code() {
        let (policy, mut d) = refused(None);
        d.ruling.denied_by = None;
        d.ruling.unavailable = Some(0);
        let rest = unavailable(&policy, &d).unwrap();
        assert_eq!(
            rest.body,
            r#"{"error":"Service Unavailable","message":"The rate limit service is unavailable. Please try again later.","retryAfter":1,"limits":{"tier":"tools-list","limit":5,"window":"1 second"}}"#
        );
        d.ruling.jsonrpc = jsonrpc::parse(br#"{"jsonrpc":"2.0","id":"q","method":"tools/list"}"#);
        let r = unavailable(&policy, &d).unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(
            r.body,
            r#"{"jsonrpc":"2.0","id":"q","error":{"code":-32030,"message":"Rate limit service unavailable (tools-list): retry after 1 s","data":{"retryAfter":1,"limits":{"tier":"tools-list","limit":5,"window":"1 second"}}}}"#
        );
        d.ruling.jsonrpc = jsonrpc::parse(br#"{"jsonrpc":"2.0","method":"notifications/x"}"#);
        let r = unavailable(&policy, &d).unwrap();
        assert_eq!((r.status, r.body.as_str()), (503, ""));
        assert!(!r.headers.iter().any(|(n, _)| n == "content-type"));
    }

    #[test]
    fn formats_timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_235_285), "2023-11-17T15:34:45Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }
}
