//! The HTTP surface over the memory store: request validation (a table of bad
//! bodies and the status, message and field each gets), the shared secret,
//! probes and metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: failing loudly is the point.

mod support;

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{json, Value};
use sluice_counter::{app, MemoryStore};
use support::{body, call, lease, reserve, reserve_ok, router};

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
        text,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, _) = call(&app, "GET", path, &[], "").await;
        assert_eq!(status, StatusCode::OK, "{path} needs no secret");
    }
    let (_, metrics) = call(&app, "GET", "/metrics", &[], "").await;
    let metrics = metrics.as_str().expect("text");
    assert!(
        metrics.contains("sluice_counter_requests_total{status=\"401\"} 3"),
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
    let (_, metrics) = call(&app, "GET", "/metrics", &[], "").await;
    let metrics = metrics.as_str().expect("text");
    for line in [
        "sluice_counter_requests_total{status=\"200\"} 2",
        "sluice_counter_requests_total{status=\"400\"} 1",
        "sluice_counter_leases_total 3",
        "sluice_counter_units_granted_total 10",
        "sluice_counter_store_errors_total 0",
        "sluice_counter_store_seconds_count 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    }
}
