//! Reading a JSON request body strictly: 413 past the size limit, 400 naming
//! the offending field for bad JSON, unknown fields or trailing data.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::ApiError;

/// The body's bytes, or why they cannot be read.
pub fn bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::BodyTooLarge,
        _ => ApiError::BadJson {
            message: rejection.body_text(),
            field: None,
        },
    })
}

/// The parsed body.
pub fn from_slice<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|err| {
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
    Ok(value)
}
