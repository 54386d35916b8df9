//! Probes and metrics: `GET /healthz` (the process answers), `GET /readyz`
//! (the store answers a ping) and `GET /metrics` (Prometheus text).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;

use super::{ApiError, AppState};

/// 200 `ok` while the process runs.
pub async fn healthz() -> &'static str {
    "ok"
}

/// 200 `ready` when the store answers, else 503 with the reason.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready".to_owned()),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(err).to_string(),
        ),
    }
}

/// The Prometheus exposition.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
