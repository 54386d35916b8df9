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

pub use crate::civil::civil_from_days;
use crate::limiter::{Decision, RuleOutcome};
use crate::policy::{Policy, ResponseHeaders, Rule};

const NS: u64 = 1_000_000_000;
const MAX_JITTER_NS: u64 = 5 * NS;

/// A complete local reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

fn ceil_secs(ns: u64) -> u64 {
    ns.div_ceil(NS)
}

fn common_headers(rule: &Rule, ro: &RuleOutcome, tenant: Option<&str>, reset_at_s: u64, t_s: u64) -> Vec<(String, String)> {
    let mut h = x_ratelimit_headers(ro, tenant, reset_at_s);
    h.push(("ratelimit-policy".to_string(), format!("\"{}\";q={};w={}", rule.name, ro.limit, ceil_secs(rule.limit.per.nanos()))));
    h.push(("ratelimit".to_string(), format!("\"{}\";r={};t={}", rule.name, ro.outcome.remaining, t_s)));
    h
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
    let ro = d.denied_by.as_ref()?;
    let rule = policy.rules.get(ro.rule)?;
    let jitter_span = (rule.limit.per.nanos() / 10).min(MAX_JITTER_NS);
    let jitter = random.checked_rem(jitter_span.saturating_add(1)).unwrap_or(0);
    let retry_after = ceil_secs(ro.outcome.retry_after_ns.saturating_add(jitter)).max(1);
    let reset_at = (now / NS).saturating_add(retry_after);
    let tenant = d.tenant.as_deref().filter(|t| is_header_safe(t));
    let mut headers = common_headers(rule, ro, tenant, reset_at, retry_after);
    headers.insert(0, ("retry-after".to_string(), retry_after.to_string()));
    headers.push(("content-type".to_string(), "application/json".to_string()));
    let body = format!(
        concat!(
            "{{\"error\":\"Rate Limit Exceeded\",",
            "\"message\":\"Too many requests. Please try again later.\",",
            "\"retryAfter\":{},",
            "\"limits\":{{\"tier\":{},\"limit\":{},\"window\":\"{}\",\"remaining\":{},\"resetAt\":\"{}\"}}}}"
        ),
        retry_after,
        json_string(&rule.name),
        ro.limit,
        rule.limit.per,
        ro.outcome.remaining,
        rfc3339(reset_at),
    );
    Some(Reply { status: 429, headers, body })
}

/// The 503 reply when a global rule with `failure_mode: closed` cannot
/// reach its counter service; `None` otherwise.
pub fn unavailable(policy: &Policy, d: &Decision) -> Option<Reply> {
    let rule = policy.rules.get(d.unavailable?)?;
    let body = format!(
        concat!(
            "{{\"error\":\"Service Unavailable\",",
            "\"message\":\"The rate limit service is unavailable. Please try again later.\",",
            "\"retryAfter\":1,",
            "\"limits\":{{\"tier\":{},\"limit\":{},\"window\":\"{}\"}}}}"
        ),
        json_string(&rule.name),
        rule.limit.requests,
        rule.limit.per,
    );
    let headers = vec![
        ("retry-after".to_string(), "1".to_string()),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    Some(Reply { status: 503, headers, body })
}

/// Headers for an admitted response: those of the rule closest to its
/// limit. When a shadow rule would have refused the request, its headers
/// as a 429 would carry them (without `Retry-After`, since the request
/// passed), plus `X-RateLimit-Shadow: <rule>`, so that clients and
/// operators see the enforcement to come.
pub fn admitted_headers(policy: &Policy, d: &Decision, now: u64) -> Vec<(String, String)> {
    let tenant = d.tenant.as_deref().filter(|t| is_header_safe(t));
    if let Some(ro) = d.shadow_denied.iter().max_by_key(|s| s.outcome.retry_after_ns) {
        let Some(rule) = policy.rules.get(ro.rule) else { return Vec::new() };
        let retry_after = ceil_secs(ro.outcome.retry_after_ns).max(1);
        let mut h = common_headers(rule, ro, tenant, (now / NS).saturating_add(retry_after), retry_after);
        h.push(("x-ratelimit-shadow".to_string(), rule.name.clone()));
        return h;
    }
    let Some(ro) = d.tightest.as_ref() else { return Vec::new() };
    let Some(rule) = policy.rules.get(ro.rule) else { return Vec::new() };
    let reset_in = ceil_secs(ro.outcome.reset_ns);
    let reset_at = now.div_ceil(NS).saturating_add(reset_in);
    match policy.response_headers {
        ResponseHeaders::All => common_headers(rule, ro, tenant, reset_at, reset_in),
        ResponseHeaders::XRatelimit => x_ratelimit_headers(ro, tenant, reset_at),
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
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn formats_timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_235_285), "2023-11-17T15:34:45Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }
}
