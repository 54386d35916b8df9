//! The counter service's wire format, as the filter speaks it. The format
//! itself (the bodies of `POST /v1/reserve` and `POST /v1/block`, the
//! paths, the secret header, the service's bounds) lives in `sluice-wire`,
//! shared with the service; here the filter builds its requests from its
//! [`Ask`]s and [`Block`]s, and checks the service's answers against what
//! it asked. Anything else in an answer (wrong length, missing fields, a
//! grant above the request, a span other than the one asked) is an error,
//! never trusted; reply fields the filter does not know are ignored.

use serde::{Deserialize, Serialize};
use sluice_wire::{LeaseReply, LeaseRequest, ReserveReply, ReserveRequest};

use crate::lease::Answer;

pub use sluice_wire::{KeyBlockRequest as Block, BLOCK_PATH, MAX_INSTANCE, RESERVE_PATH, SECRET_HEADER};

/// Longest upstream block shared or believed (the service takes up to an
/// hour, [`sluice_wire::SERVICE_MAX_BLOCK_MS`]).
pub const MAX_BLOCK_MS: u64 = sluice_wire::FILTER_MAX_BLOCK_MS;
const MS: u64 = 1_000_000;

/// Longest key id the filter sends. A longer one (a client can send a
/// tenant id of any length) is sent as its first bytes, `~` and a hash of
/// the whole ([`wire_id`]), well inside the service's own bound of 1,024
/// bytes ([`sluice_wire::MAX_ID`]), so that no client can make the service
/// refuse a batch.
pub const MAX_WIRE_ID: usize = 128;
/// Most asks in one reserve call (the service takes 256).
pub const MAX_ASKS: usize = sluice_wire::MAX_LEASES;
/// Most bytes of one reserve call's body (the service takes 64 KiB,
/// [`sluice_wire::MAX_BODY_BYTES`]; the rest is room for the instance name
/// and the wrapping object). 256 asks of short rule names and ids fit.
pub const MAX_BATCH_BYTES: usize = 60 * 1024;
const _: () = assert!(MAX_WIRE_ID <= sluice_wire::MAX_ID && MAX_BATCH_BYTES < sluice_wire::MAX_BODY_BYTES);
/// A bound on the JSON of one ask besides its rule and id.
const ASK_OVERHEAD: usize = 128;

/// The id a key is known by at the counter service: `text` itself when it
/// is at most [`MAX_WIRE_ID`] bytes, else its first bytes (on a character
/// boundary), `~` and 32 hex digits of its SHA-256, [`MAX_WIRE_ID`] bytes
/// in all. Every instance derives the same id from the same key.
pub fn wire_id(text: String) -> String {
    use sha2::Digest;
    const HASH_HEX: usize = 32;
    if text.len() <= MAX_WIRE_ID {
        return text;
    }
    let digest = sha2::Sha256::digest(text.as_bytes());
    let mut head = MAX_WIRE_ID - HASH_HEX - 1;
    while !text.is_char_boundary(head) {
        head = head.saturating_sub(1);
    }
    let mut id = String::with_capacity(MAX_WIRE_ID);
    id.push_str(text.get(..head).unwrap_or_default());
    id.push('~');
    for b in digest.iter().take(HASH_HEX / 2) {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

/// How many of `asks`, from the front, fit in one reserve call: at most
/// [`MAX_ASKS`], and a body of at most [`MAX_BATCH_BYTES`] even if every
/// character of every rule and id needed JSON's longest escape. At least
/// one, so that a batch always moves.
pub fn batch_len<'a>(asks: impl IntoIterator<Item = &'a Ask>) -> usize {
    let mut bytes = 0usize;
    let mut n: usize = 0;
    for ask in asks.into_iter().take(MAX_ASKS) {
        let worst = ASK_OVERHEAD.saturating_add(ask.rule.len().saturating_add(ask.id.len()).saturating_mul(6));
        bytes = bytes.saturating_add(worst);
        if n > 0 && bytes > MAX_BATCH_BYTES {
            break;
        }
        n = n.saturating_add(1);
    }
    n
}

/// One key to reserve units for: a lease of the reserve call, in the
/// core's own types ([`Ask::wire`] is what travels to the service). Its
/// serde form is the workers' handoff queue (`limiter::refill_messages`), not the
/// counter service's format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ask {
    pub rule: String,
    pub id: String,
    pub limit: u64,
    pub window_ms: u64,
    pub want: u32,
    pub next: bool,
    /// Windows the grant covers from the target on (1..=[`MAX_SPAN`]): the
    /// same units in each. Sent only when above 1.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub windows: u32,
    /// Units given back in each of `windows` windows from window `from`
    /// (with `want` 0): a reservation ahead this instance will not use.
    /// Sent only when above 0, with `from`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub release: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub from: u64,
    /// Calendar windows (a calendar rule's days or months); `window_ms` is
    /// then the calendar's longest window. Sent only when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar: Option<sluice_wire::Calendar>,
}

/// Most windows one ask reserves (the service keeps the current window and
/// four ahead).
pub const MAX_SPAN: u32 = 4;
const _: () = assert!(MAX_SPAN as u64 == sluice_wire::MAX_WINDOWS);

fn one() -> u32 {
    1
}

fn is_one(v: &u32) -> bool {
    *v == 1
}

fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl Ask {
    /// An ask for `want` units of the current window, or of the next.
    pub fn new(rule: String, id: String, limit: u64, window_ms: u64, want: u32, next: bool) -> Ask {
        Ask { rule, id, limit, window_ms, want, next, windows: 1, release: 0, from: 0, calendar: None }
    }

    /// The lease as it travels.
    pub fn wire(&self) -> LeaseRequest {
        // Every field named: one added to either side must be placed here.
        let Ask { rule, id, limit, window_ms, want, next, windows, release, from, calendar } = self;
        LeaseRequest {
            rule: rule.clone(),
            id: id.clone(),
            limit: *limit,
            window_ms: *window_ms,
            want: u64::from(*want),
            next: *next,
            windows: u64::from(*windows),
            release: u64::from(*release),
            from: (*release > 0).then_some(*from),
            calendar: *calendar,
        }
    }
}

/// Why an answer of the counter service was not usable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CounterError {
    /// Not the reply format (garbage, truncated, wrong field types).
    Malformed(String),
    /// A well-formed reply that contradicts the request.
    Inconsistent(String),
    /// An HTTP status other than 200.
    Status(u32),
}

impl CounterError {
    /// Whether the answer means the service cannot serve this instance
    /// (down, overloaded, answering garbage, refusing our secret), so that
    /// global rules follow their failure mode; or only that it refused
    /// this one call's request (400, 413, 422), which says nothing about
    /// the calls of other keys.
    pub fn service_down(&self) -> bool {
        !matches!(self, CounterError::Status(400 | 413 | 422))
    }
}

impl std::fmt::Display for CounterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CounterError::Malformed(m) => write!(f, "counter service answered garbage: {m}"),
            CounterError::Inconsistent(m) => write!(f, "counter service answer does not fit the request: {m}"),
            CounterError::Status(s) => write!(f, "counter service answered HTTP {s}"),
        }
    }
}

/// The name an Envoy gives itself in calls: its node id, shortened when
/// longer than the service accepts (Istio's sidecar ids, such as
/// `sidecar~10.244.12.34~mcp-gateway-5f7d8c9b6d-abcde.mcp~mcp.svc.cluster.local`,
/// often are) to its start and a hash of the whole, so that it stays
/// unique and recognisable.
pub fn instance_name(node_id: &str) -> String {
    let clean: String = node_id.chars().filter(|c| !c.is_control()).collect();
    if clean.is_empty() {
        return "sluice".into();
    }
    if clean.len() <= MAX_INSTANCE {
        return clean;
    }
    let hash = crate::hash::fnv1a(clean.as_bytes());
    let mut head = MAX_INSTANCE - 17;
    while !clean.is_char_boundary(head) {
        head = head.saturating_sub(1);
    }
    format!("{}~{hash:016x}", &clean[..head])
}

/// The `POST /v1/block` body for `blocks` (each one key an upstream asked
/// us to stay away from, for `for_ms` milliseconds).
pub fn block_body(instance: &str, blocks: &[Block]) -> Vec<u8> {
    serde_json::to_vec(&sluice_wire::BlockRequest { instance: instance.into(), blocks: blocks.to_vec() }).unwrap_or_default()
}

/// The request body for `asks`.
pub fn reserve_body(instance: &str, asks: &[&Ask]) -> Vec<u8> {
    serde_json::to_vec(&ReserveRequest { instance: instance.into(), leases: asks.iter().map(|a| a.wire()).collect() }).unwrap_or_default()
}

/// Parses and checks an answer to `asks`.
pub fn parse_reply(body: &[u8], asks: &[&Ask]) -> Result<Vec<Answer>, CounterError> {
    let reply: ReserveReply = serde_json::from_slice(body).map_err(|e| CounterError::Malformed(e.to_string()))?;
    if reply.leases.len() != asks.len() {
        return Err(CounterError::Inconsistent(format!("{} answers for {} asks", reply.leases.len(), asks.len())));
    }
    reply
        .leases
        .iter()
        .zip(asks)
        .map(|(r, a)| {
            // Every field named: one added to the reply must be placed here
            // (or knowingly ignored).
            let LeaseReply { granted, used, limit: _, window, windows, starts_in_ms, ends_in_ms, blocked_ms, current_used } = *r;
            // `used` may exceed the limit asked with (the limit was lowered
            // mid-window); it only means the budget is gone.
            if granted > u64::from(a.want) || granted > used || granted > a.limit || window == 0 {
                return Err(CounterError::Inconsistent(format!("granted {} of {} with {} used of {} in window {}", granted, a.want, used, a.limit, window)));
            }
            if windows != u64::from(a.windows) {
                return Err(CounterError::Inconsistent(format!("a grant over {} windows for an ask of {}", windows, a.windows)));
            }
            if ends_in_ms > a.window_ms.saturating_mul(2) || starts_in_ms > a.window_ms {
                return Err(CounterError::Inconsistent(format!("window timing {}..{} ms", starts_in_ms, ends_in_ms)));
            }
            Ok(Answer {
                granted: u32::try_from(granted).unwrap_or(0),
                used: u32::try_from(used.min(a.limit)).unwrap_or(u32::MAX),
                window,
                starts_in_ns: starts_in_ms.saturating_mul(MS),
                ends_in_ns: ends_in_ms.saturating_mul(MS),
                // An upstream's wait is capped at 5 minutes where it is learnt.
                blocked_ns: blocked_ms.min(MAX_BLOCK_MS).saturating_mul(MS),
                windows: a.windows,
                current_used: u32::try_from(current_used.min(a.limit)).unwrap_or(u32::MAX),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn ask(want: u32) -> Ask {
        Ask::new("per-tenant".into(), "tenant-1".into(), 100, 1000, want, false)
    }

    #[test]
    fn body_has_the_documented_shape() {
        let body = reserve_body("sluice-0", &[&ask(20)]);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"instance": "sluice-0", "leases": [
                {"rule": "per-tenant", "id": "tenant-1", "limit": 100, "window_ms": 1000, "want": 20, "next": false}]})
        );
        // Spans and give-backs add their fields; single asks stay as they were.
        let span = Ask { windows: 4, next: true, ..ask(20) };
        let back = Ask { want: 0, windows: 3, release: 20, from: 12, ..ask(0) };
        let v: serde_json::Value = serde_json::from_slice(&reserve_body("sluice-0", &[&span, &back])).expect("json");
        assert_eq!(
            v["leases"],
            serde_json::json!([
                {"rule": "per-tenant", "id": "tenant-1", "limit": 100, "window_ms": 1000, "want": 20, "next": true, "windows": 4},
                {"rule": "per-tenant", "id": "tenant-1", "limit": 100, "window_ms": 1000, "want": 0, "next": false, "windows": 3, "release": 20, "from": 12}])
        );
    }

    #[test]
    fn a_span_is_answered_for_as_many_windows_as_asked() {
        let span = Ask { windows: 4, next: true, ..ask(20) };
        let body = br#"{"leases": [{"granted": 20, "used": 60, "window": 8, "starts_in_ms": 300, "ends_in_ms": 1300, "windows": 4}]}"#;
        assert_eq!(parse_reply(body, &[&span]).expect("ok")[0].windows, 4);
        let told = br#"{"leases": [{"granted": 20, "used": 60, "window": 8, "starts_in_ms": 300, "ends_in_ms": 1300, "windows": 4, "current_used": 250}]}"#;
        assert_eq!(parse_reply(told, &[&span]).expect("ok")[0].current_used, 100, "never above the limit");
        // A service that granted one window (or does not know spans) is not
        // believed: the filter would spend units never reserved.
        let one = br#"{"leases": [{"granted": 20, "used": 60, "window": 8, "starts_in_ms": 300, "ends_in_ms": 1300}]}"#;
        assert!(matches!(parse_reply(one, &[&span]), Err(CounterError::Inconsistent(_))));
        assert_eq!(parse_reply(one, &[&Ask { next: true, ..ask(20) }]).expect("ok")[0].windows, 1);
    }

    #[test]
    fn long_ids_are_sent_short_and_distinct() {
        assert_eq!(wire_id("tenant-1".into()), "tenant-1");
        let exact = "a".repeat(MAX_WIRE_ID);
        assert_eq!(wire_id(exact.clone()), exact);
        let long = "t".repeat(1100);
        let a = wire_id(long.clone());
        let b = wire_id(format!("{long}x"));
        assert_eq!(a.len(), MAX_WIRE_ID);
        assert!(a.starts_with("ttt") && a.contains('~'), "{a}");
        assert_ne!(a, b);
        assert_eq!(a, wire_id(long), "the same key, the same id");
        // Multi-byte characters are never cut.
        let wide = wire_id("é".repeat(100));
        assert!(wide.len() <= MAX_WIRE_ID, "{wide}");
    }

    #[test]
    fn batches_stay_within_the_service_bounds() {
        let short: Vec<Ask> = (0..300).map(|_| ask(1)).collect();
        assert_eq!(batch_len(&short), MAX_ASKS);
        let long = Ask { rule: "r".repeat(64), id: "\u{1}".repeat(MAX_WIRE_ID), ..ask(1) };
        let longs: Vec<Ask> = (0..300).map(|_| long.clone()).collect();
        let n = batch_len(&longs);
        assert!(n > 1 && n < MAX_ASKS, "{n}");
        let refs: Vec<&Ask> = longs.iter().take(n).collect();
        assert!(reserve_body(&"i".repeat(MAX_INSTANCE), &refs).len() <= MAX_BATCH_BYTES);
        assert_eq!(batch_len(&longs[..1]), 1);
        assert_eq!(batch_len(&[]), 0);
    }

    #[test]
    fn only_a_refused_call_leaves_the_service_up() {
        for down in
            [CounterError::Status(500), CounterError::Status(503), CounterError::Status(401), CounterError::Status(404), CounterError::Malformed("x".into())]
        {
            assert!(down.service_down(), "{down}");
        }
        for refused in [400, 413, 422] {
            assert!(!CounterError::Status(refused).service_down(), "{refused}");
        }
    }

    #[test]
    fn long_node_ids_are_shortened_uniquely() {
        assert_eq!(instance_name("sluice-0"), "sluice-0");
        assert_eq!(instance_name(""), "sluice");
        let a = instance_name("sidecar~10.244.12.34~mcp-gateway-5f7d8c9b6d-abcde.mcp~mcp.svc.cluster.local");
        let b = instance_name("sidecar~10.244.12.35~mcp-gateway-5f7d8c9b6d-fghij.mcp~mcp.svc.cluster.local");
        assert!(a.len() <= MAX_INSTANCE && b.len() <= MAX_INSTANCE);
        assert!(a.starts_with("sidecar~10.244.12.34~mcp-gateway"));
        assert_ne!(a, b);
        let wide = instance_name(&"é".repeat(40));
        assert!(wide.len() <= MAX_INSTANCE);
    }

    #[test]
    fn good_answers_parse() {
        let body = br#"{"now_ms": 1, "leases": [{"granted": 20, "used": 60, "limit": 100, "window": 7, "starts_in_ms": 0, "ends_in_ms": 400}]}"#;
        let got = parse_reply(body, &[&ask(20)]).expect("ok");
        assert_eq!(got, vec![Answer { granted: 20, used: 60, window: 7, starts_in_ns: 0, ends_in_ns: 400 * MS, blocked_ns: 0, windows: 1, current_used: 0 }]);
        let blocked = br#"{"leases": [{"granted": 0, "used": 60, "window": 7, "starts_in_ms": 0, "ends_in_ms": 400, "blocked_ms": 2500}]}"#;
        assert_eq!(parse_reply(blocked, &[&ask(20)]).expect("ok")[0].blocked_ns, 2500 * MS);
        let body = block_body("sluice-0", &[Block { rule: "integration-notion".into(), id: "notion:t1".into(), for_ms: 3000 }]);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v, serde_json::json!({"instance": "sluice-0", "blocks": [{"rule": "integration-notion", "id": "notion:t1", "for_ms": 3000}]}));
    }

    #[test]
    fn a_lowered_limit_reads_as_an_exhausted_budget() {
        let body = br#"{"leases": [{"granted": 0, "used": 150, "window": 7, "starts_in_ms": 0, "ends_in_ms": 400}]}"#;
        let got = parse_reply(body, &[&ask(20)]).expect("ok");
        assert_eq!(got[0].used, 100);
    }

    #[test]
    fn garbage_and_contradictions_are_refused() {
        let cases: &[&[u8]] = &[
            b"",
            b"<html>503</html>",
            br#"{"leases": [{"granted": "x"}]}"#,
            br#"{"leases": []}"#,
            br#"{"leases": [{"granted": 21, "used": 60, "window": 7, "starts_in_ms": 0, "ends_in_ms": 400}]}"#,
            br#"{"leases": [{"granted": 5, "used": 101, "window": 0, "starts_in_ms": 0, "ends_in_ms": 400}]}"#,
            br#"{"leases": [{"granted": 5, "used": 4, "window": 7, "starts_in_ms": 0, "ends_in_ms": 400}]}"#,
            br#"{"leases": [{"granted": 5, "used": 50, "window": 7, "starts_in_ms": 0, "ends_in_ms": 99999}]}"#,
            br#"{"leases": [{"granted": -1, "used": 50, "window": 7, "starts_in_ms": 0, "ends_in_ms": 10}]}"#,
        ];
        for body in cases {
            assert!(parse_reply(body, &[&ask(20)]).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }
}
