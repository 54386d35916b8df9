//! The HTTP surface: [`app`] wires the routes, the shared [`AppState`], the
//! secret check and request counting around `/v1/*`.
//!
//! Routes: `POST /v1/reserve` ([`reserve`]), `POST /v1/block` ([`block`]),
//! `GET /healthz`, `GET /readyz` ([`health`]) and `GET /metrics`.

mod auth;
mod block;
mod body;
mod error;
mod health;
mod reserve;
mod validate;
mod wire;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

pub use error::ApiError;
pub use wire::{
    BlockReply, BlockRequest, KeyBlockReply, KeyBlockRequest, LeaseReply, LeaseRequest,
    ReserveReply, ReserveRequest,
};

use crate::metrics::Metrics;
use crate::store::{Block, CounterStore, Lease};

/// Largest accepted request body.
pub use sluice_wire::MAX_BODY_BYTES;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Where counters live.
    pub store: Arc<dyn CounterStore>,
    /// Key prefix, see [`keys`](crate::keys).
    pub prefix: Arc<str>,
    /// Required value of `x-sluice-secret` on `/v1/*`, if any.
    pub secret: Option<Arc<str>>,
    /// Service metrics.
    pub metrics: Arc<Metrics>,
}

impl AppState {
    /// State over `store` with the default prefix `rl:`, no secret and fresh
    /// metrics.
    pub fn new(store: Arc<dyn CounterStore>) -> AppState {
        AppState {
            store,
            prefix: Arc::from("rl:"),
            secret: None,
            metrics: Arc::default(),
        }
    }
}

/// The service's router.
pub fn app(state: AppState) -> Router {
    let v1 = Router::new()
        .route(sluice_wire::RESERVE_PATH, post(reserve::reserve))
        .route(sluice_wire::BLOCK_PATH, post(block::block))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_secret,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .merge(v1)
        .with_state(state)
}

/// The store leases a `POST /v1/reserve` body asks for, read and checked
/// as the handler does (also the fuzz target's entry point).
pub fn reserve_leases(body: &[u8], prefix: &str) -> Result<Vec<Lease>, ApiError> {
    validate::leases(&body::from_slice(body)?, prefix)
}

/// The store blocks a `POST /v1/block` body asks for, read and checked as
/// the handler does.
pub fn block_list(body: &[u8], prefix: &str) -> Result<Vec<Block>, ApiError> {
    validate::blocks(&body::from_slice(body)?, prefix)
}

/// Counts every answered `/v1/*` request by status.
async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    state.metrics.request(response.status().as_u16());
    response
}
