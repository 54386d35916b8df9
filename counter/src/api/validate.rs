//! Checks a parsed [`ReserveRequest`] or [`BlockRequest`] against the
//! documented limits and turns it into store [`Lease`]s or [`Block`]s with
//! their keys. The first problem found is reported, with the path of its
//! field.

use super::wire::{BlockRequest, LeaseRequest, ReserveRequest};
use super::ApiError;
use crate::keys;
use crate::store::{Block, Lease};
use crate::window::MAX_WINDOWS;

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
/// Most blocks in one request.
pub const MAX_BLOCKS: usize = 256;
/// Longest block: one hour.
pub const MAX_BLOCK_MS: u64 = 3_600_000;

fn invalid(field: String, message: String) -> ApiError {
    ApiError::Invalid { message, field }
}

fn check_instance(instance: &str) -> Result<(), ApiError> {
    if instance.len() > MAX_INSTANCE {
        return Err(invalid(
            "instance".into(),
            format!("instance is longer than {MAX_INSTANCE} bytes"),
        ));
    }
    Ok(())
}

/// 1..=`max` items in the list `name`.
fn check_count(name: &str, len: usize, max: usize) -> Result<(), ApiError> {
    if len == 0 || len > max {
        return Err(invalid(
            name.into(),
            format!("{name} must hold 1 to {max} items, not {len}"),
        ));
    }
    Ok(())
}

/// A rule and id as in reserve; `at` names the field.
fn check_rule_and_id(rule: &str, id: &str, at: impl Fn(&str) -> String) -> Result<(), ApiError> {
    let rule_ok = (1..=MAX_RULE).contains(&rule.len())
        && rule
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !rule_ok {
        return Err(invalid(
            at("rule"),
            format!("rule must be 1 to {MAX_RULE} characters of A-Z, a-z, 0-9, '_' and '-'"),
        ));
    }
    if id.is_empty() || id.len() > MAX_ID {
        return Err(invalid(at("id"), format!("id must be 1 to {MAX_ID} bytes")));
    }
    Ok(())
}

/// The leases of a valid request, keys under `prefix`.
pub fn leases(req: &ReserveRequest, prefix: &str) -> Result<Vec<Lease>, ApiError> {
    check_instance(&req.instance)?;
    check_count("leases", req.leases.len(), MAX_LEASES)?;
    req.leases
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let at = |name: &str| format!("leases[{i}].{name}");
            check_rule_and_id(&l.rule, &l.id, at)?;
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
            let from = check_release(l, at)?;
            Ok(Lease {
                key: keys::counter_key(prefix, &l.rule, &l.id, l.window_ms),
                block_key: keys::block_key(prefix, &l.rule, &l.id),
                limit: l.limit,
                window_ms: l.window_ms,
                want: l.want,
                next: l.next,
                windows: l.windows,
                release: l.release,
                from,
            })
        })
        .collect()
}

/// Checks a lease's `windows`, `release` and `from`; returns the first
/// window of a release (0 when it is not one).
fn check_release(l: &LeaseRequest, at: impl Fn(&str) -> String) -> Result<u64, ApiError> {
    if !(1..=MAX_WINDOWS).contains(&l.windows) {
        return Err(invalid(
            at("windows"),
            format!(
                "windows must be between 1 and {MAX_WINDOWS}, not {}",
                l.windows
            ),
        ));
    }
    if l.release > l.limit {
        return Err(invalid(
            at("release"),
            format!(
                "release must be between 0 and limit ({}), not {}",
                l.limit, l.release
            ),
        ));
    }
    match (l.release, l.from) {
        (0, None) => Ok(0),
        (0, Some(_)) => Err(invalid(
            at("from"),
            "from is only allowed with release above 0".into(),
        )),
        (_, None) => Err(invalid(
            at("from"),
            "from is required when release is above 0".into(),
        )),
        (_, Some(_)) if l.want > 0 => Err(invalid(
            at("want"),
            format!("want must be 0 when release is above 0, not {}", l.want),
        )),
        (_, Some(_)) if l.next => Err(invalid(
            at("next"),
            "next must be false when release is above 0".into(),
        )),
        (_, Some(from)) => Ok(from),
    }
}

/// The blocks of a valid request, keys under `prefix`.
pub fn blocks(req: &BlockRequest, prefix: &str) -> Result<Vec<Block>, ApiError> {
    check_instance(&req.instance)?;
    check_count("blocks", req.blocks.len(), MAX_BLOCKS)?;
    req.blocks
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let at = |name: &str| format!("blocks[{i}].{name}");
            check_rule_and_id(&b.rule, &b.id, at)?;
            if !(1..=MAX_BLOCK_MS).contains(&b.for_ms) {
                return Err(invalid(
                    at("for_ms"),
                    format!(
                        "for_ms must be between 1 and {MAX_BLOCK_MS}, not {}",
                        b.for_ms
                    ),
                ));
            }
            Ok(Block {
                key: keys::block_key(prefix, &b.rule, &b.id),
                for_ms: b.for_ms,
            })
        })
        .collect()
}
