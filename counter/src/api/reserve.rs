//! `POST /v1/reserve`: read and check the body, apply the leases in the store,
//! and answer with what was granted and when each window starts and ends.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::wire::{LeaseReply, ReserveReply, ReserveRequest};
use super::{validate, ApiError, AppState};
use crate::window;

/// The handler.
pub async fn reserve(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ReserveReply>, ApiError> {
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::BodyTooLarge,
        _ => ApiError::BadJson {
            message: rejection.body_text(),
            field: None,
        },
    })?;
    let req = parse(&body)?;
    let leases = validate::leases(&req, &state.prefix)?;

    let started = Instant::now();
    let result = state.store.reserve(&leases).await;
    state.metrics.store_call(started.elapsed(), result.is_err());
    let reserved = result.map_err(|err| {
        if !err.is_transient() {
            eprintln!("sluice-counter: store error: {err}");
        }
        ApiError::Store(err)
    })?;

    let granted: u64 = reserved.iter().map(|r| r.granted).sum();
    state.metrics.leases(reserved.len() as u64, granted);
    let now_ms = reserved.iter().map(|r| r.now_ms).max().unwrap_or_default();
    let leases = leases
        .iter()
        .zip(&reserved)
        .map(|(lease, r)| {
            let (starts_in_ms, ends_in_ms) = window::timing(r.window, lease.window_ms, r.now_ms);
            LeaseReply {
                granted: r.granted,
                used: r.used,
                limit: lease.limit,
                window: r.window,
                starts_in_ms,
                ends_in_ms,
            }
        })
        .collect();
    Ok(Json(ReserveReply { now_ms, leases }))
}

/// Parses the body, naming the offending field on failure.
fn parse(body: &[u8]) -> Result<ReserveRequest, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let req: ReserveRequest = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        ApiError::BadJson {
            message: err.inner().to_string(),
            // serde_path_to_error writes "." or "?" when no field is known.
            field: path
                .contains(|c: char| c.is_ascii_alphanumeric())
                .then_some(path),
        }
    })?;
    de.end().map_err(|err| ApiError::BadJson {
        message: err.to_string(),
        field: None,
    })?;
    Ok(req)
}
