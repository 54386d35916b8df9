//! The optional shared secret: when configured, every `/v1/*` request must
//! carry it in `x-sluice-secret`; the comparison takes the same time wherever
//! the first differing byte is.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};

/// Header carrying the secret.
pub use sluice_wire::SECRET_HEADER;

/// Middleware: 401 unless the secret (if any) is present and right.
pub async fn require_secret(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(secret) = &state.secret {
        let given = req
            .headers()
            .get(SECRET_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !same(given, secret.as_bytes()) {
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(req).await
}

/// Constant-time equality (only the lengths may leak).
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn compares_bytes() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
        assert!(same(b"", b""));
    }
}
