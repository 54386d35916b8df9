//! Checks a parsed [`ReserveRequest`] or [`BlockRequest`] against the
//! documented limits and turns it into store [`Lease`]s or [`Block`]s with
//! their keys. The first problem found is reported, with the path of its
//! field.

use super::wire::{BlockRequest, KeyBlockRequest, LeaseRequest, ReserveRequest};
use super::ApiError;
use crate::keys;
use crate::store::{Block, Lease};
use crate::window::MAX_WINDOWS;
use sluice_wire::calendar::{Calendar, MAX_OFFSET_MIN};

pub use sluice_wire::{
    MAX_BLOCKS, MAX_ID, MAX_INSTANCE, MAX_LEASES, MAX_LIMIT, MAX_RULE, MAX_WINDOW_MS,
    SERVICE_MAX_BLOCK_MS as MAX_BLOCK_MS,
};

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
    // Every field named, here and below: one added to the contract does not
    // build until it is checked.
    let ReserveRequest { instance, leases } = req;
    check_instance(instance)?;
    check_count("leases", leases.len(), MAX_LEASES)?;
    leases
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let at = |name: &str| format!("leases[{i}].{name}");
            let LeaseRequest {
                rule,
                id,
                limit,
                window_ms,
                want,
                next,
                windows,
                release,
                from: _,
                calendar,
            } = l;
            check_rule_and_id(rule, id, at)?;
            if !(1..=MAX_LIMIT).contains(limit) {
                return Err(invalid(
                    at("limit"),
                    format!("limit must be between 1 and {MAX_LIMIT}, not {limit}"),
                ));
            }
            check_window(*window_ms, calendar.as_ref(), at)?;
            if want > limit {
                return Err(invalid(
                    at("want"),
                    format!("want must be between 0 and limit ({limit}), not {want}"),
                ));
            }
            let from = check_release(l, at)?;
            Ok(Lease {
                key: match calendar {
                    Some(c) => keys::calendar_key(prefix, rule, id, c),
                    None => keys::counter_key(prefix, rule, id, *window_ms),
                },
                block_key: keys::block_key(prefix, rule, id),
                limit: *limit,
                window_ms: *window_ms,
                calendar: *calendar,
                want: *want,
                next: *next,
                windows: *windows,
                release: *release,
                from,
            })
        })
        .collect()
}

/// Checks a lease's `window_ms` and `calendar`: 1..=[`MAX_WINDOW_MS`]
/// without a calendar; with one, an offset within ±14 hours and the
/// calendar's longest window ([`Calendar::window_ms`]).
fn check_window(
    window_ms: u64,
    calendar: Option<&Calendar>,
    at: impl Fn(&str) -> String,
) -> Result<(), ApiError> {
    let Some(c) = calendar else {
        if !(1..=MAX_WINDOW_MS).contains(&window_ms) {
            return Err(invalid(
                at("window_ms"),
                format!("window_ms must be between 1 and {MAX_WINDOW_MS}, not {window_ms}"),
            ));
        }
        return Ok(());
    };
    if !c.valid() {
        return Err(invalid(
            at("calendar.offset_min"),
            format!(
                "offset_min must be between -{MAX_OFFSET_MIN} and {MAX_OFFSET_MIN}, not {}",
                c.offset_min
            ),
        ));
    }
    if window_ms != c.window_ms() {
        return Err(invalid(
            at("window_ms"),
            format!(
                "window_ms of a calendar lease must be its longest window, {}, not {window_ms}",
                c.window_ms()
            ),
        ));
    }
    Ok(())
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
    let BlockRequest { instance, blocks } = req;
    check_instance(instance)?;
    check_count("blocks", blocks.len(), MAX_BLOCKS)?;
    blocks
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let at = |name: &str| format!("blocks[{i}].{name}");
            let KeyBlockRequest { rule, id, for_ms } = b;
            check_rule_and_id(rule, id, at)?;
            if !(1..=MAX_BLOCK_MS).contains(for_ms) {
                return Err(invalid(
                    at("for_ms"),
                    format!("for_ms must be between 1 and {MAX_BLOCK_MS}, not {for_ms}"),
                ));
            }
            Ok(Block {
                key: keys::block_key(prefix, rule, id),
                for_ms: *for_ms,
            })
        })
        .collect()
}
