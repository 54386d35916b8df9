//! `POST /v1/block`: read and check the body, record the upstream blocks in
//! the store, and answer with how long each key now stays blocked.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;

use super::wire::{BlockReply, KeyBlockReply};
use super::{body, ApiError, AppState};

/// The handler.
pub async fn block(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BlockReply>, ApiError> {
    let blocks = super::block_list(&body::bytes(body)?, &state.prefix)?;

    let started = Instant::now();
    let result = state.store.block(&blocks).await;
    state.metrics.store_call(started.elapsed(), result.is_err());
    let blocked = result.map_err(ApiError::from_store)?;

    state.metrics.blocks(blocked.len() as u64);
    let now_ms = blocked.iter().map(|b| b.now_ms).max().unwrap_or_default();
    let blocks = blocked
        .iter()
        .map(|b| KeyBlockReply {
            blocked_ms: b.blocked_ms,
        })
        .collect();
    Ok(Json(BlockReply { now_ms, blocks }))
}
