//! The counter contract across both sides: every body the filter
//! (`sluice_core::counter_api`) writes, as the service reads and checks it;
//! every reply the service writes, as the filter reads and checks it; and
//! how filters and services of different versions meet. The format itself
//! is `sluice-wire`; a field added to it without both sides placing it does
//! not build (both sides name every field), and the pinned field lists
//! below fail if the JSON changes shape.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: failing loudly is the point.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_core::counter_api::{
    batch_len, block_body, instance_name, parse_reply, reserve_body, wire_id, Ask, Block,
    CounterError, MAX_ASKS, MAX_BLOCK_MS,
};
use sluice_core::lease::Answer;
use sluice_counter::api::{block_list, reserve_leases, ApiError};
use sluice_counter::{app, AppState, MemoryStore};
use sluice_wire::{
    BlockReply, KeyBlockReply, LeaseReply, LeaseRequest, ReserveReply, ReserveRequest, BLOCK_PATH,
    FILTER_MAX_BLOCK_MS, MAX_BODY_BYTES, MAX_ID, MAX_INSTANCE, MAX_LEASES, RESERVE_PATH,
    SECRET_HEADER, SERVICE_MAX_BLOCK_MS,
};
use tower::ServiceExt;

mod support;

const MS: u64 = 1_000_000;
const HOUR: u64 = 3_600_000;

fn ask(want: u32, next: bool) -> Ask {
    Ask::new(
        "per-tenant".into(),
        "tenant-1".into(),
        100,
        HOUR,
        want,
        next,
    )
}

fn span(want: u32, windows: u32) -> Ask {
    Ask {
        windows,
        ..ask(want, true)
    }
}

fn give_back(units: u32, from: u64, windows: u32) -> Ask {
    Ask {
        windows,
        release: units,
        from,
        ..ask(0, false)
    }
}

fn secret_app() -> Router {
    let mut state = AppState::new(Arc::new(MemoryStore::new()));
    state.secret = Some(Arc::from("s3cret"));
    app(state)
}

/// Posts `body` to `path` with the secret; returns the status and the bytes.
async fn post(app: &Router, path: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let req = Request::builder()
        .method("POST")
        .uri(path)
        .header(SECRET_HEADER, "s3cret")
        .body(Body::from(body))
        .expect("request");
    let res = app.clone().oneshot(req).await.expect("infallible");
    let status = res.status();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    (status, bytes.to_vec())
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    k.sort();
    k
}

#[test]
fn the_filters_reserve_bodies_are_read_as_sent() {
    let asks = [
        ask(20, false),
        ask(7, true),
        ask(0, false),
        span(20, 4),
        give_back(20, 12, 3),
    ];
    let refs: Vec<&Ask> = asks.iter().collect();
    let body = reserve_body("sluice-0", &refs);

    // The service's types read exactly what the filter meant, and write it
    // back byte for byte.
    let req: ReserveRequest = serde_json::from_slice(&body).expect("reads");
    assert_eq!(req.instance, "sluice-0");
    let wire: Vec<LeaseRequest> = asks.iter().map(Ask::wire).collect();
    assert_eq!(req.leases, wire);
    assert_eq!(serde_json::to_vec(&req).expect("writes"), body);

    // And its checks take every one of them, field for field.
    let leases = reserve_leases(&body, "p:").expect("valid");
    assert_eq!(leases.len(), asks.len());
    for (l, a) in leases.iter().zip(&asks) {
        assert_eq!(
            (
                l.limit,
                l.window_ms,
                l.want,
                l.next,
                l.windows,
                l.release,
                l.from
            ),
            (
                a.limit,
                a.window_ms,
                u64::from(a.want),
                a.next,
                u64::from(a.windows),
                u64::from(a.release),
                a.from
            ),
            "{a:?}"
        );
        assert!(
            l.key.contains(&a.rule) && l.key.contains(&a.id),
            "{}",
            l.key
        );
    }

    // The shape is pinned: single asks as they always were; spans and
    // give-backs add their fields.
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(keys(&v), ["instance", "leases"]);
    let fields: Vec<Vec<String>> = v["leases"]
        .as_array()
        .expect("leases")
        .iter()
        .map(keys)
        .collect();
    let single = ["id", "limit", "next", "rule", "want", "window_ms"];
    assert_eq!(fields[0], single);
    assert_eq!(fields[3], [&single[..], &["windows"]].concat());
    assert_eq!(
        fields[4],
        [
            "from",
            "id",
            "limit",
            "next",
            "release",
            "rule",
            "want",
            "window_ms",
            "windows"
        ]
    );
}

#[test]
fn the_filters_bounds_fit_the_services() {
    // The largest batch the filter makes, of the longest ids it sends and
    // the longest instance name, is taken whole.
    let long = Ask::new(
        "r".repeat(64),
        wire_id("\u{1}".repeat(5000)),
        100,
        HOUR,
        1,
        false,
    );
    assert!(long.id.len() <= MAX_ID);
    for asks in [vec![ask(1, false); 300], vec![long; 300]] {
        let n = batch_len(&asks);
        assert!(n <= MAX_ASKS && MAX_ASKS <= MAX_LEASES);
        let refs: Vec<&Ask> = asks.iter().take(n).collect();
        let instance = instance_name(&"sidecar~10.244.12.34~".repeat(10));
        assert!(instance.len() <= MAX_INSTANCE);
        let body = reserve_body(&instance, &refs);
        assert!(body.len() <= MAX_BODY_BYTES);
        assert_eq!(reserve_leases(&body, "p:").expect("valid").len(), n);
    }
    // Every block the filter shares is taken; the service takes longer ones.
    let blocks = [
        Block {
            rule: "integration-notion".into(),
            id: "notion:t1".into(),
            for_ms: 1,
        },
        Block {
            rule: "integration-notion".into(),
            id: "notion:t2".into(),
            for_ms: MAX_BLOCK_MS,
        },
    ];
    assert_eq!(MAX_BLOCK_MS, FILTER_MAX_BLOCK_MS);
    let got = block_list(&block_body("sluice-0", &blocks), "p:").expect("valid");
    assert_eq!(
        got.iter().map(|b| b.for_ms).collect::<Vec<_>>(),
        [1, MAX_BLOCK_MS]
    );
    let longest = Block {
        for_ms: SERVICE_MAX_BLOCK_MS,
        ..blocks[0].clone()
    };
    assert!(block_list(&block_body("i", std::slice::from_ref(&longest)), "p:").is_ok());
    let over = Block {
        for_ms: SERVICE_MAX_BLOCK_MS + 1,
        ..longest
    };
    assert!(block_list(&block_body("i", &[over]), "p:").is_err());
}

#[tokio::test]
async fn the_services_replies_are_read_and_checked_by_the_filter() {
    let app = secret_app();

    // A single ask, one for the next window and a span: the filter's body
    // through the service's router, the service's reply through the filter.
    let asks = [ask(20, false), ask(30, true), span(10, 4)];
    let refs: Vec<&Ask> = asks.iter().collect();
    let (status, reply) = post(&app, RESERVE_PATH, reserve_body("sluice-0", &refs)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let answers = parse_reply(&reply, &refs).expect("believed");
    let typed: ReserveReply = serde_json::from_slice(&reply).expect("reads");
    assert!(typed.now_ms > 0);
    assert_eq!(
        serde_json::to_vec(&typed).expect("writes"),
        reply,
        "byte for byte"
    );
    let mut windows = Vec::new();
    for ((answer, r), a) in answers.iter().zip(&typed.leases).zip(&asks) {
        assert_eq!(u64::from(answer.granted), u64::from(a.want));
        assert_eq!(answer.windows, a.windows);
        assert_eq!(r.limit, a.limit);
        assert_eq!(answer.window, r.window);
        assert_eq!(answer.starts_in_ns, r.starts_in_ms * MS);
        assert_eq!(answer.ends_in_ns, r.ends_in_ms * MS);
        assert_eq!(answer.blocked_ns, 0);
        windows.push(r.window);
    }
    assert_eq!(windows[1], windows[0] + 1, "next is the window after");
    assert_eq!(answers[0].current_used, 20);

    // A give-back of the span's units from its second window.
    let back = give_back(10, windows[2] + 1, 3);
    let (status, reply) = post(&app, RESERVE_PATH, reserve_body("sluice-0", &[&back])).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let answers = parse_reply(&reply, &[&back]).expect("believed");
    assert_eq!((answers[0].granted, answers[0].windows), (0, 3));

    // A block, then the key's reservations say so.
    let block = Block {
        rule: "per-tenant".into(),
        id: "tenant-1".into(),
        for_ms: MAX_BLOCK_MS,
    };
    let (status, reply) = post(&app, BLOCK_PATH, block_body("sluice-0", &[block])).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let blocked: BlockReply = serde_json::from_slice(&reply).expect("reads");
    assert_eq!(
        blocked.blocks,
        [KeyBlockReply {
            blocked_ms: MAX_BLOCK_MS
        }]
    );
    assert_eq!(
        keys(&serde_json::from_slice(&reply).expect("json")),
        ["blocks", "now_ms"]
    );
    let one = ask(5, false);
    let (_, reply) = post(&app, RESERVE_PATH, reserve_body("sluice-0", &[&one])).await;
    let answers = parse_reply(&reply, &[&one]).expect("believed");
    assert_eq!(answers[0].granted, 0);
    assert!(answers[0].blocked_ns > 0 && answers[0].blocked_ns <= MAX_BLOCK_MS * MS);
}

#[test]
fn every_reply_field_reaches_the_filter() {
    // A reply as the service writes it, every field set.
    let reply = ReserveReply {
        now_ms: 1_700_000_000_123,
        leases: vec![LeaseReply {
            granted: 20,
            used: 60,
            limit: 100,
            window: 8,
            windows: 4,
            starts_in_ms: 300,
            ends_in_ms: 1300,
            blocked_ms: 2500,
            current_used: 250,
        }],
    };
    let body = serde_json::to_vec(&reply).expect("writes");
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(keys(&v), ["leases", "now_ms"]);
    assert_eq!(keys(&v["leases"][0]), support::LEASE_REPLY_FIELDS);
    let a = Ask {
        window_ms: 1000,
        ..span(20, 4)
    };
    let got = parse_reply(&body, &[&a]).expect("believed");
    assert_eq!(
        got,
        [Answer {
            granted: 20,
            used: 60,
            window: 8,
            starts_in_ns: 300 * MS,
            ends_in_ns: 1300 * MS,
            blocked_ns: 2500 * MS,
            windows: 4,
            current_used: 100,
        }]
    );
}

/// `POST /v1/reserve` as a service from before spans read it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct OldRequest {
    #[serde(default)]
    instance: String,
    leases: Vec<OldLease>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct OldLease {
    rule: String,
    id: String,
    limit: u64,
    window_ms: u64,
    want: u64,
    #[serde(default)]
    next: bool,
}

#[test]
fn a_newer_filter_and_an_older_service() {
    // Asks without the newer fields are the bytes an older service read.
    let single = reserve_body("sluice-0", &[&ask(20, false), &ask(1, true)]);
    assert!(serde_json::from_slice::<OldRequest>(&single).is_ok());
    // An ask that needs them is refused, never read without them.
    for a in [span(20, 4), give_back(5, 12, 1)] {
        let body = reserve_body("sluice-0", &[&a]);
        let err = serde_json::from_slice::<OldRequest>(&body)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
    // The service refuses any field it does not know, naming it (400): a
    // filter never has a field it sends silently ignored.
    let mut v: Value = serde_json::from_slice(&single).expect("json");
    v["leases"][1]["version"] = json!(2);
    match reserve_leases(v.to_string().as_bytes(), "p:") {
        Err(ApiError::BadJson { field, .. }) => {
            assert_eq!(field.as_deref(), Some("leases[1].version"))
        }
        other => panic!("{other:?}"),
    }
    let mut v: Value = serde_json::from_slice(&single).expect("json");
    v["version"] = json!(2);
    assert!(matches!(
        reserve_leases(v.to_string().as_bytes(), "p:"),
        Err(ApiError::BadJson { field: Some(f), .. }) if f == "version"
    ));
    let mut v = json!({"instance": "i", "blocks": [{"rule": "r", "id": "t", "for_ms": 5}]});
    v["blocks"][0]["until"] = json!(9);
    assert!(matches!(
        block_list(v.to_string().as_bytes(), "p:"),
        Err(ApiError::BadJson { field: Some(f), .. }) if f == "blocks[0].until"
    ));
    // A refused call is not the service being down, and grants nothing.
    assert!(!CounterError::Status(400).service_down());

    // An older service's reply lacks the newer fields: read with their
    // defaults, believed for single asks, refused for a span (it reserved
    // one window only).
    let old = br#"{"leases": [{"granted": 20, "used": 60, "window": 8, "starts_in_ms": 0, "ends_in_ms": 400}]}"#;
    let got = parse_reply(old, &[&ask(20, false)]).expect("believed");
    assert_eq!(
        (got[0].windows, got[0].blocked_ns, got[0].current_used),
        (1, 0, 0)
    );
    assert!(matches!(
        parse_reply(old, &[&span(20, 4)]),
        Err(CounterError::Inconsistent(_))
    ));
}

#[test]
fn an_older_filter_and_a_newer_service() {
    // An older filter's body (no spans, no give-backs) means what it did.
    let old = br#"{"instance": "sluice-0", "leases": [
        {"rule": "per-tenant", "id": "tenant-1", "limit": 100, "window_ms": 1000, "want": 20, "next": false}]}"#;
    let leases = reserve_leases(old, "p:").expect("valid");
    assert_eq!(
        (
            leases[0].want,
            leases[0].windows,
            leases[0].release,
            leases[0].from
        ),
        (20, 1, 0, 0)
    );
    // Reply fields it does not know are ignored, whatever they hold.
    let newer =
        br#"{"now_ms": 1, "version": 9, "leases": [{"granted": 20, "used": 60, "limit": 100,
        "window": 7, "windows": 1, "starts_in_ms": 0, "ends_in_ms": 400, "blocked_ms": 0,
        "current_used": 60, "hint": {"x": [1, 2]}}]}"#;
    let got = parse_reply(
        newer,
        &[&Ask {
            window_ms: 1000,
            ..ask(20, false)
        }],
    )
    .expect("believed");
    assert_eq!((got[0].granted, got[0].used), (20, 60));
    assert!(serde_json::from_slice::<ReserveReply>(newer).is_ok());
    assert!(serde_json::from_slice::<BlockReply>(
        br#"{"now_ms": 1, "blocks": [{"blocked_ms": 5, "extra": true}]}"#
    )
    .is_ok());
}

#[test]
fn a_calendar_ask_travels_with_its_calendar_and_only_then() {
    use sluice_wire::calendar::{Calendar, Unit};
    let day = Calendar {
        unit: Unit::Day,
        offset_min: 120,
    };
    let a = Ask {
        calendar: Some(day),
        ..Ask::new(
            "budget".into(),
            "acme".into(),
            100,
            day.window_ms(),
            5,
            false,
        )
    };
    let plain = ask(5, false);
    let body = reserve_body("sluice-0", &[&a, &plain]);
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        v["leases"][0]["calendar"],
        serde_json::json!({"unit": "day", "offset_min": 120})
    );
    assert!(
        v["leases"][1].get("calendar").is_none(),
        "sent only when used"
    );
    let leases = reserve_leases(&body, "p:").expect("valid");
    assert_eq!(leases[0].calendar, Some(day));
    assert_eq!(leases[0].key, "p:budget:{acme}:day+0200");
    assert_eq!(leases[1].calendar, None);
}
