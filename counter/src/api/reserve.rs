//! `POST /v1/reserve`: read and check the body, apply the leases in the store,
//! and answer with what was granted, when each window starts and ends, and how
//! long each key stays blocked.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;

use super::wire::{LeaseReply, ReserveReply};
use super::{body, ApiError, AppState};
use crate::window;

/// The handler.
pub async fn reserve(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ReserveReply>, ApiError> {
    let leases = super::reserve_leases(&body::bytes(body)?, &state.prefix)?;

    let started = Instant::now();
    let result = state.store.reserve(&leases).await;
    state.metrics.store_call(started.elapsed(), result.is_err());
    let reserved = result.map_err(ApiError::from_store)?;

    let granted: u64 = leases
        .iter()
        .zip(&reserved)
        .map(|(lease, r)| r.granted.saturating_mul(lease.windows))
        .sum();
    let released: u64 = leases
        .iter()
        .map(|lease| lease.release.saturating_mul(lease.windows))
        .sum();
    let blocked = reserved.iter().filter(|r| r.blocked_ms > 0).count() as u64;
    state
        .metrics
        .leases(reserved.len() as u64, granted, blocked);
    state.metrics.released(released);
    let now_ms = reserved.iter().map(|r| r.now_ms).max().unwrap_or_default();
    let leases = leases
        .iter()
        .zip(&reserved)
        .map(|(lease, r)| {
            let (starts_in_ms, ends_in_ms) =
                window::timing(r.window, lease.window_ms, lease.calendar, r.now_ms);
            LeaseReply {
                granted: r.granted,
                used: r.used,
                limit: lease.limit,
                window: r.window,
                windows: lease.windows,
                starts_in_ms,
                ends_in_ms,
                blocked_ms: r.blocked_ms,
                current_used: r.current_used,
            }
        })
        .collect();
    Ok(Json(ReserveReply { now_ms, leases }))
}
