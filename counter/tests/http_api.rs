//! The HTTP surface over the memory store: request validation (tables of bad
//! bodies for `/v1/reserve` and `/v1/block` and the status, message and field
//! each gets), the shared secret, probes and metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: failing loudly is the point.

mod support;

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{json, Value};
use sluice_counter::{app, MemoryStore};
use support::{
    block, block_body, block_item, block_ok, body, call, give_back, lease, reserve, reserve_ok,
    router, span,
};

fn memory_app() -> axum::Router {
    router(Arc::new(MemoryStore::new()))
}

#[tokio::test]
async fn invalid_requests_get_4xx_json_naming_the_field() {
    let app = memory_app();
    let ok = lease("r", "i", 10, 1000, 1, false);
    let with = |field: &str, value: Value| {
        let mut l = ok.clone();
        l[field] = value;
        body(vec![ok.clone(), ok.clone(), ok.clone(), l])
    };
    let with_all = |fields: &[(&str, Value)]| {
        let mut l = ok.clone();
        for (field, value) in fields {
            l[*field] = value.clone();
        }
        body(vec![ok.clone(), ok.clone(), ok.clone(), l])
    };
    let release = |want: u64, next: bool| {
        with_all(&[
            ("release", json!(2)),
            ("from", json!(7)),
            ("want", json!(want)),
            ("next", json!(next)),
        ])
    };
    let many: Vec<Value> = (0..257).map(|_| ok.clone()).collect();
    let table: Vec<(&str, String, u16, Option<&str>, &str)> = vec![
        ("not json", "{".into(), 400, None, "invalid JSON body"),
        (
            "trailing data",
            format!("{} x", body(vec![ok.clone()])),
            400,
            None,
            "trailing",
        ),
        (
            "unknown top field",
            json!({"leases": [ok], "x": 1}).to_string(),
            400,
            Some("x"),
            "unknown field `x`",
        ),
        (
            "unknown lease field",
            with("color", json!("red")).to_string(),
            400,
            Some("leases[3].color"),
            "unknown field `color`",
        ),
        (
            "missing want",
            json!({"leases": [{"rule": "r", "id": "i", "limit": 1, "window_ms": 1}]}).to_string(),
            400,
            Some("leases[0]"),
            "missing field `want`",
        ),
        (
            "negative want",
            with("want", json!(-1)).to_string(),
            400,
            Some("leases[3].want"),
            "invalid value",
        ),
        (
            "fractional limit",
            with("limit", json!(1.5)).to_string(),
            400,
            Some("leases[3].limit"),
            "invalid type",
        ),
        (
            "no leases",
            body(vec![]).to_string(),
            400,
            Some("leases"),
            "1 to 256",
        ),
        (
            "too many leases",
            body(many).to_string(),
            400,
            Some("leases"),
            "not 257",
        ),
        (
            "long instance",
            json!({"instance": "i".repeat(65), "leases": [ok]}).to_string(),
            400,
            Some("instance"),
            "64 bytes",
        ),
        (
            "empty rule",
            with("rule", json!("")).to_string(),
            400,
            Some("leases[3].rule"),
            "rule must be",
        ),
        (
            "rule with dot",
            with("rule", json!("a.b")).to_string(),
            400,
            Some("leases[3].rule"),
            "rule must be",
        ),
        (
            "long rule",
            with("rule", json!("r".repeat(65))).to_string(),
            400,
            Some("leases[3].rule"),
            "rule must be",
        ),
        (
            "empty id",
            with("id", json!("")).to_string(),
            400,
            Some("leases[3].id"),
            "1 to 1024 bytes",
        ),
        (
            "long id",
            with("id", json!("i".repeat(1025))).to_string(),
            400,
            Some("leases[3].id"),
            "1 to 1024 bytes",
        ),
        (
            "zero limit",
            with("limit", json!(0)).to_string(),
            400,
            Some("leases[3].limit"),
            "between 1 and 1000000000",
        ),
        (
            "huge limit",
            with("limit", json!(1_000_000_001u64)).to_string(),
            400,
            Some("leases[3].limit"),
            "between 1 and 1000000000",
        ),
        (
            "zero window",
            with("window_ms", json!(0)).to_string(),
            400,
            Some("leases[3].window_ms"),
            "between 1 and 604800000",
        ),
        (
            "long window",
            with("window_ms", json!(604_800_001u64)).to_string(),
            400,
            Some("leases[3].window_ms"),
            "between 1 and 604800000",
        ),
        (
            "want above limit",
            with("want", json!(11)).to_string(),
            400,
            Some("leases[3].want"),
            "between 0 and limit (10)",
        ),
        (
            "zero windows",
            with("windows", json!(0)).to_string(),
            400,
            Some("leases[3].windows"),
            "windows must be between 1 and 4, not 0",
        ),
        (
            "five windows",
            with("windows", json!(5)).to_string(),
            400,
            Some("leases[3].windows"),
            "windows must be between 1 and 4, not 5",
        ),
        (
            "negative windows",
            with("windows", json!(-1)).to_string(),
            400,
            Some("leases[3].windows"),
            "invalid value",
        ),
        (
            "release above limit",
            with_all(&[
                ("want", json!(0)),
                ("release", json!(11)),
                ("from", json!(7)),
            ])
            .to_string(),
            400,
            Some("leases[3].release"),
            "release must be between 0 and limit (10), not 11",
        ),
        (
            "release without from",
            with_all(&[("want", json!(0)), ("release", json!(1))]).to_string(),
            400,
            Some("leases[3].from"),
            "from is required when release is above 0",
        ),
        (
            "from without release",
            with("from", json!(7)).to_string(),
            400,
            Some("leases[3].from"),
            "from is only allowed with release above 0",
        ),
        (
            "from with release 0",
            with_all(&[("release", json!(0)), ("from", json!(7))]).to_string(),
            400,
            Some("leases[3].from"),
            "from is only allowed with release above 0",
        ),
        (
            "release with want",
            release(1, false).to_string(),
            400,
            Some("leases[3].want"),
            "want must be 0 when release is above 0, not 1",
        ),
        (
            "release with next",
            release(0, true).to_string(),
            400,
            Some("leases[3].next"),
            "next must be false when release is above 0",
        ),
        (
            "body over 64 KiB",
            json!({"instance": "x".repeat(70_000), "leases": [ok]}).to_string(),
            413,
            None,
            "larger than 65536 bytes",
        ),
    ];
    for (name, text, status, field, message) in table {
        let (got, reply) = call(&app, "POST", "/v1/reserve", &[], text).await;
        assert_eq!(got.as_u16(), status, "{name}: {reply}");
        let error = reply["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no error in {reply}"));
        assert!(
            error.contains(message),
            "{name}: {error:?} lacks {message:?}"
        );
        assert_eq!(reply["field"].as_str(), field, "{name}: {reply}");
    }
}

#[tokio::test]
async fn invalid_block_requests_get_4xx_json_naming_the_field() {
    let app = memory_app();
    let ok = block_item("r", "i", 1000);
    let with = |field: &str, value: Value| {
        let mut b = ok.clone();
        b[field] = value;
        block_body(vec![ok.clone(), ok.clone(), b])
    };
    let many: Vec<Value> = (0..257).map(|_| ok.clone()).collect();
    let table: Vec<(&str, String, u16, Option<&str>, &str)> = vec![
        ("not json", "{".into(), 400, None, "invalid JSON body"),
        ("empty body", String::new(), 400, None, "invalid JSON body"),
        ("not an object", "5".into(), 400, None, "invalid type"),
        (
            "trailing data",
            format!("{} x", block_body(vec![ok.clone()])),
            400,
            None,
            "trailing",
        ),
        (
            "no blocks field",
            json!({"instance": "i"}).to_string(),
            400,
            None,
            "missing field `blocks`",
        ),
        (
            "leases instead of blocks",
            json!({"leases": [ok]}).to_string(),
            400,
            Some("leases"),
            "unknown field `leases`",
        ),
        (
            "unknown block field",
            with("want", json!(1)).to_string(),
            400,
            Some("blocks[2].want"),
            "unknown field `want`",
        ),
        (
            "missing for_ms",
            json!({"blocks": [{"rule": "r", "id": "i"}]}).to_string(),
            400,
            Some("blocks[0]"),
            "missing field `for_ms`",
        ),
        (
            "negative for_ms",
            with("for_ms", json!(-5)).to_string(),
            400,
            Some("blocks[2].for_ms"),
            "invalid value",
        ),
        (
            "fractional for_ms",
            with("for_ms", json!(1.5)).to_string(),
            400,
            Some("blocks[2].for_ms"),
            "invalid type",
        ),
        (
            "string for_ms",
            with("for_ms", json!("100")).to_string(),
            400,
            Some("blocks[2].for_ms"),
            "invalid type",
        ),
        (
            "zero for_ms",
            with("for_ms", json!(0)).to_string(),
            400,
            Some("blocks[2].for_ms"),
            "for_ms must be between 1 and 3600000, not 0",
        ),
        (
            "for_ms over an hour",
            with("for_ms", json!(3_600_001u64)).to_string(),
            400,
            Some("blocks[2].for_ms"),
            "for_ms must be between 1 and 3600000, not 3600001",
        ),
        (
            "no blocks",
            block_body(vec![]).to_string(),
            400,
            Some("blocks"),
            "blocks must hold 1 to 256 items, not 0",
        ),
        (
            "too many blocks",
            block_body(many).to_string(),
            400,
            Some("blocks"),
            "blocks must hold 1 to 256 items, not 257",
        ),
        (
            "long instance",
            json!({"instance": "i".repeat(65), "blocks": [ok]}).to_string(),
            400,
            Some("instance"),
            "64 bytes",
        ),
        (
            "empty rule",
            with("rule", json!("")).to_string(),
            400,
            Some("blocks[2].rule"),
            "rule must be",
        ),
        (
            "rule with colon",
            with("rule", json!("a:b")).to_string(),
            400,
            Some("blocks[2].rule"),
            "rule must be",
        ),
        (
            "long rule",
            with("rule", json!("r".repeat(65))).to_string(),
            400,
            Some("blocks[2].rule"),
            "rule must be",
        ),
        (
            "empty id",
            with("id", json!("")).to_string(),
            400,
            Some("blocks[2].id"),
            "1 to 1024 bytes",
        ),
        (
            "long id",
            with("id", json!("i".repeat(1025))).to_string(),
            400,
            Some("blocks[2].id"),
            "1 to 1024 bytes",
        ),
        (
            "body over 64 KiB",
            json!({"instance": "x".repeat(70_000), "blocks": [ok]}).to_string(),
            413,
            None,
            "larger than 65536 bytes",
        ),
    ];
    for (name, text, status, field, message) in table {
        let (got, reply) = call(&app, "POST", "/v1/block", &[], text).await;
        assert_eq!(got.as_u16(), status, "{name}: {reply}");
        let error = reply["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no error in {reply}"));
        assert!(
            error.contains(message),
            "{name}: {error:?} lacks {message:?}"
        );
        assert_eq!(reply["field"].as_str(), field, "{name}: {reply}");
    }
    // None of them blocked anything.
    let (_, r) = reserve_ok(&app, vec![lease("r", "i", 10, 1000, 1, false)]).await;
    assert_eq!(
        (&r[0]["granted"], &r[0]["blocked_ms"]),
        (&json!(1), &json!(0))
    );
    let (status, _) = call(&app, "GET", "/v1/block", &[], "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn block_boundary_values_are_accepted() {
    let app = memory_app();
    let (_, b) = block_ok(
        &app,
        vec![
            block_item(&"R_-9".repeat(16), &"i".repeat(1024), 3_600_000),
            block_item("r", "i", 1),
        ],
    )
    .await;
    assert_eq!(b[0]["blocked_ms"], 3_600_000);
    assert!(b[1]["blocked_ms"].as_u64().expect("blocked_ms") <= 1);
    let blocks: Vec<Value> = (0..256)
        .map(|i| block_item("r", &i.to_string(), 1000))
        .collect();
    let body = json!({"blocks": blocks}).to_string();
    let (status, reply) = call(&app, "POST", "/v1/block", &[], body).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "256 blocks and no instance: {reply}"
    );
    assert_eq!(reply["blocks"].as_array().map(Vec::len), Some(256));
    let (_, r) = reserve_ok(
        &app,
        vec![
            lease(&"R_-9".repeat(16), &"i".repeat(1024), 5, 1000, 5, false),
            lease("r", "255", 5, 1000, 5, false),
            lease("r", "256", 5, 1000, 5, false),
        ],
    )
    .await;
    let granted: Vec<&Value> = r.iter().map(|x| &x["granted"]).collect();
    assert_eq!(granted, [&json!(0), &json!(0), &json!(5)]);
}

#[tokio::test]
async fn boundary_values_are_accepted() {
    let app = memory_app();
    let (_, r) = reserve_ok(
        &app,
        vec![
            lease(
                &"R_-9".repeat(16),
                &"i".repeat(1024),
                1_000_000_000,
                604_800_000,
                1_000_000_000,
                true,
            ),
            lease("r", "i", 1, 1, 0, false),
        ],
    )
    .await;
    assert_eq!(r[0]["granted"], 1_000_000_000u64);
    assert_eq!(r[1]["granted"], 0);
    let (_, r) = reserve_ok(
        &app,
        vec![
            span(lease("r", "s", 5, 1000, 5, true), 4),
            give_back("r", "t", 5, 1000, 5, 0, 4),
            span(lease("r", "u", 5, 1000, 5, false), 1),
        ],
    )
    .await;
    let windows: Vec<&Value> = r.iter().map(|x| &x["windows"]).collect();
    assert_eq!(windows, [&json!(4), &json!(4), &json!(1)]);
    let granted: Vec<&Value> = r.iter().map(|x| &x["granted"]).collect();
    assert_eq!(granted, [&json!(5), &json!(0), &json!(5)]);
    let leases: Vec<Value> = (0..256)
        .map(|i| lease("r", &i.to_string(), 1, 1000, 1, false))
        .collect();
    let body = json!({"leases": leases}).to_string();
    let (status, _) = call(&app, "POST", "/v1/reserve", &[], body).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "256 leases and no instance are fine"
    );
}

#[tokio::test]
async fn the_secret_guards_v1_only() {
    let mut state = support::state(Arc::new(MemoryStore::new()));
    state.secret = Some(Arc::from("s3cret"));
    let app = app(state);
    let text = body(vec![lease("r", "i", 10, 1000, 1, false)]).to_string();
    for headers in [
        vec![],
        vec![("x-sluice-secret", "s3cre")],
        vec![("x-sluice-secret", "s3cret!")],
    ] {
        let (status, reply) = call(&app, "POST", "/v1/reserve", &headers, text.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(reply["error"], "missing or wrong x-sluice-secret header");
    }
    let (status, _) = call(
        &app,
        "POST",
        "/v1/reserve",
        &[("x-sluice-secret", "s3cret")],
        text.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let blocks = block_body(vec![block_item("r", "i", 60_000)]).to_string();
    for headers in [vec![], vec![("x-sluice-secret", "S3CRET")]] {
        let (status, reply) = call(&app, "POST", "/v1/block", &headers, blocks.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(reply["error"], "missing or wrong x-sluice-secret header");
    }
    let (_, reply) = call(
        &app,
        "POST",
        "/v1/reserve",
        &[("x-sluice-secret", "s3cret")],
        text.clone(),
    )
    .await;
    assert_eq!(
        reply["leases"][0]["granted"], 1,
        "the refused blocks did nothing"
    );
    let (status, reply) = call(
        &app,
        "POST",
        "/v1/block",
        &[("x-sluice-secret", "s3cret")],
        blocks,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["blocks"][0]["blocked_ms"], 60_000);
    let (_, reply) = call(
        &app,
        "POST",
        "/v1/reserve",
        &[("x-sluice-secret", "s3cret")],
        text,
    )
    .await;
    assert_eq!(reply["leases"][0]["granted"], 0, "blocked now");
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, _) = call(&app, "GET", path, &[], "").await;
        assert_eq!(status, StatusCode::OK, "{path} needs no secret");
    }
    let (_, metrics) = call(&app, "GET", "/metrics", &[], "").await;
    let metrics = metrics.as_str().expect("text");
    assert!(
        metrics.contains("sluice_counter_requests_total{status=\"401\"} 5"),
        "{metrics}"
    );
}

#[tokio::test]
async fn probes_and_metrics_report() {
    let app = memory_app();
    assert_eq!(
        call(&app, "GET", "/healthz", &[], "").await,
        (StatusCode::OK, json!("ok"))
    );
    assert_eq!(
        call(&app, "GET", "/readyz", &[], "").await,
        (StatusCode::OK, json!("ready"))
    );
    reserve_ok(
        &app,
        vec![
            lease("r", "i", 10, 1000, 7, false),
            lease("r", "j", 10, 1000, 0, false),
        ],
    )
    .await;
    reserve_ok(&app, vec![lease("r", "i", 10, 1000, 7, false)]).await;
    let (status, _) = reserve(&app, &body(vec![])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    block_ok(
        &app,
        vec![block_item("r", "i", 60_000), block_item("r", "k", 60_000)],
    )
    .await;
    block_ok(&app, vec![block_item("r", "i", 1_000)]).await;
    let (status, _) = block(&app, &block_body(vec![])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    reserve_ok(
        &app,
        vec![
            lease("r", "i", 10, 60_000, 3, false),
            lease("r", "j", 10, 60_000, 2, false),
            lease("r", "k", 10, 60_000, 0, false),
        ],
    )
    .await;
    let (_, metrics) = call(&app, "GET", "/metrics", &[], "").await;
    let metrics = metrics.as_str().expect("text").to_owned();
    assert!(
        metrics
            .lines()
            .any(|l| l == "sluice_counter_units_released_total 0"),
        "{metrics}"
    );
    // Units count per window: 2 granted in each of 3 windows, 1 asked back
    // in each of 2.
    reserve_ok(
        &app,
        vec![
            span(lease("r", "s", 10, 60_000, 2, false), 3),
            give_back("r", "t", 10, 60_000, 1, 0, 2),
        ],
    )
    .await;
    let (_, metrics) = call(&app, "GET", "/metrics", &[], "").await;
    let metrics = metrics.as_str().expect("text");
    for line in [
        "sluice_counter_requests_total{status=\"200\"} 6",
        "sluice_counter_requests_total{status=\"400\"} 2",
        "sluice_counter_leases_total 8",
        "sluice_counter_units_granted_total 18",
        "sluice_counter_units_released_total 2",
        "sluice_counter_leases_blocked_total 2",
        "sluice_counter_block_requests_total 2",
        "sluice_counter_blocks_total 3",
        "sluice_counter_store_errors_total 0",
        "sluice_counter_store_seconds_count 6",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    }
}
