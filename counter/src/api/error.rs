//! [`ApiError`]: every way an HTTP request can fail, with its status and the
//! JSON body `{"error": "<what is wrong>", "field": "<where>"}` (`field` only
//! when one field is at fault).

use std::fmt;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::store::StoreError;

/// A request that cannot be served.
#[derive(Debug)]
pub enum ApiError {
    /// The body exceeds the 64 KiB limit.
    BodyTooLarge,
    /// The body is not the expected JSON.
    BadJson {
        /// What the parser said.
        message: String,
        /// Path of the offending field, if known.
        field: Option<String>,
    },
    /// A field holds a value out of range.
    Invalid {
        /// What is wrong.
        message: String,
        /// Path of the field, like `leases[3].want`.
        field: String,
    },
    /// The shared secret is missing or wrong.
    Unauthorized,
    /// The store failed.
    Store(StoreError),
}

impl ApiError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadJson { .. } | ApiError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A failed store call, logged unless it is transient (those show in
    /// the metrics and the 503s).
    pub fn from_store(err: StoreError) -> ApiError {
        if !err.is_transient() {
            eprintln!("sluice-counter: store error: {err}");
        }
        ApiError::Store(err)
    }

    fn field(&self) -> Option<&str> {
        match self {
            ApiError::BadJson { field, .. } => field.as_deref(),
            ApiError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::BodyTooLarge => write!(
                f,
                "request body is larger than {} bytes",
                super::MAX_BODY_BYTES
            ),
            ApiError::BadJson { message, .. } => write!(f, "invalid JSON body: {message}"),
            ApiError::Invalid { message, .. } => f.write_str(message),
            ApiError::Unauthorized => f.write_str("missing or wrong x-sluice-secret header"),
            ApiError::Store(err) => write!(f, "store unavailable: {err}"),
        }
    }
}

impl std::error::Error for ApiError {}

#[derive(Serialize)]
struct Body<'a> {
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: self.to_string(),
            field: self.field(),
        };
        (self.status(), Json(body)).into_response()
    }
}
