//! Checks a parsed [`ReserveRequest`] against the documented limits and turns
//! it into store [`Lease`]s with their keys. The first problem found is
//! reported, with the path of its field.

use super::wire::ReserveRequest;
use super::ApiError;
use crate::keys;
use crate::store::Lease;

/// Longest `instance`.
pub const MAX_INSTANCE: usize = 64;
/// Most leases in one request.
pub const MAX_LEASES: usize = 256;
/// Longest rule name.
pub const MAX_RULE: usize = 64;
/// Longest id.
pub const MAX_ID: usize = 1024;
/// Largest limit.
pub const MAX_LIMIT: u64 = 1_000_000_000;
/// Longest window: one week.
pub const MAX_WINDOW_MS: u64 = 604_800_000;

/// The leases of a valid request, keys under `prefix`.
pub fn leases(req: &ReserveRequest, prefix: &str) -> Result<Vec<Lease>, ApiError> {
    let invalid = |field: String, message: String| ApiError::Invalid { message, field };
    if req.instance.len() > MAX_INSTANCE {
        return Err(invalid(
            "instance".into(),
            format!("instance is longer than {MAX_INSTANCE} bytes"),
        ));
    }
    if req.leases.is_empty() || req.leases.len() > MAX_LEASES {
        return Err(invalid(
            "leases".into(),
            format!(
                "leases must hold 1 to {MAX_LEASES} items, not {}",
                req.leases.len()
            ),
        ));
    }
    req.leases
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let at = |name: &str| format!("leases[{i}].{name}");
            let rule_ok = (1..=MAX_RULE).contains(&l.rule.len())
                && l.rule
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !rule_ok {
                return Err(invalid(
                    at("rule"),
                    format!(
                        "rule must be 1 to {MAX_RULE} characters of A-Z, a-z, 0-9, '_' and '-'"
                    ),
                ));
            }
            if l.id.is_empty() || l.id.len() > MAX_ID {
                return Err(invalid(at("id"), format!("id must be 1 to {MAX_ID} bytes")));
            }
            if !(1..=MAX_LIMIT).contains(&l.limit) {
                return Err(invalid(
                    at("limit"),
                    format!("limit must be between 1 and {MAX_LIMIT}, not {}", l.limit),
                ));
            }
            if !(1..=MAX_WINDOW_MS).contains(&l.window_ms) {
                return Err(invalid(
                    at("window_ms"),
                    format!(
                        "window_ms must be between 1 and {MAX_WINDOW_MS}, not {}",
                        l.window_ms
                    ),
                ));
            }
            if l.want > l.limit {
                return Err(invalid(
                    at("want"),
                    format!(
                        "want must be between 0 and limit ({}), not {}",
                        l.limit, l.want
                    ),
                ));
            }
            Ok(Lease {
                key: keys::counter_key(prefix, &l.rule, &l.id, l.window_ms),
                limit: l.limit,
                window_ms: l.window_ms,
                want: l.want,
                next: l.next,
            })
        })
        .collect()
}
