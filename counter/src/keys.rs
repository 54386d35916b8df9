//! Key names: one Redis key (or memory-map entry) per counter (rule, id, window
//! length), and one per upstream block (rule, id).
//!
//! Counter format: `<prefix><rule>:{<identifier>}:<window>`, following the
//! scheme `rl:{type}:{identifier}:{window}` with the prefix defaulting to `rl:`:
//!
//! - `<rule>` is the rule name, already validated as 1–64 of `[A-Za-z0-9_-]`.
//! - `<identifier>` is the lease id as is when it is at most 64 bytes of
//!   `[A-Za-z0-9._@-]`, otherwise `h-<16 lowercase hex digits of FNV-1a 64>` of
//!   the id's bytes. The braces around it are a Redis Cluster hash tag, so every
//!   window length and rule of one identifier lives in one slot.
//! - `<window>` is the window length in whole seconds when `window_ms` is a
//!   multiple of 1000 (`60` for one minute), otherwise `<n>ms` (`250ms`).
//!
//! Example: `rl:per-tenant:{tenant-123}:60`.
//!
//! A counter of calendar windows ends in its unit and, when not at UTC, its
//! offset as `±HHMM` instead of a length: `rl:tools-select-day:{acme}:day`,
//! `rl:tokens:{acme}:month+0200`.
//!
//! Block format: `<prefix><rule>:{<identifier>}:block`, e.g.
//! `rl:per-tenant:{tenant-123}:block`. It has the same hash tag as the
//! counters of that rule and id, so the reserve script can read it in the same
//! call, and it cannot collide with a counter key (whose last part is digits,
//! or digits and `ms`).
//!
//! The prefix may not contain `{` or `}` (it would move the hash tag), see
//! [`check_prefix`].

use sluice_wire::calendar::{Calendar, Unit};

/// Longest identifier kept verbatim in a key.
const MAX_PLAIN_ID: usize = 64;
/// Longest accepted prefix.
const MAX_PREFIX: usize = 64;

/// The key of the counter for `rule`/`id` with windows of `window_ms`.
pub fn counter_key(prefix: &str, rule: &str, id: &str, window_ms: u64) -> String {
    format!(
        "{prefix}{rule}:{{{}}}:{}",
        identifier(id),
        window_part(window_ms)
    )
}

/// The key of the counter for `rule`/`id` with calendar windows.
pub fn calendar_key(prefix: &str, rule: &str, id: &str, calendar: &Calendar) -> String {
    format!(
        "{prefix}{rule}:{{{}}}:{}",
        identifier(id),
        calendar_part(calendar)
    )
}

/// The window part of a calendar counter's key: `day`, `month`, or either
/// with the offset, `day-0530`.
pub fn calendar_part(calendar: &Calendar) -> String {
    let unit = match calendar.unit {
        Unit::Day => "day",
        Unit::Month => "month",
    };
    let offset = calendar.offset_min;
    if offset == 0 {
        return unit.to_owned();
    }
    let sign = if offset < 0 { '-' } else { '+' };
    let minutes = offset.unsigned_abs();
    format!("{unit}{sign}{:02}{:02}", minutes / 60, minutes % 60)
}

/// The key of the upstream block for `rule`/`id`.
pub fn block_key(prefix: &str, rule: &str, id: &str) -> String {
    format!("{prefix}{rule}:{{{}}}:block", identifier(id))
}

/// The identifier part of a key (without the hash-tag braces).
pub fn identifier(id: &str) -> String {
    let plain = !id.is_empty()
        && id.len() <= MAX_PLAIN_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'));
    if plain {
        id.to_owned()
    } else {
        format!("h-{:016x}", fnv1a64(id.as_bytes()))
    }
}

/// The window part of a key: whole seconds, or `<n>ms`.
pub fn window_part(window_ms: u64) -> String {
    if window_ms.is_multiple_of(1000) {
        (window_ms / 1000).to_string()
    } else {
        format!("{window_ms}ms")
    }
}

/// Whether `prefix` can start keys: at most 64 printable ASCII bytes, no braces
/// or spaces. Returns what is wrong otherwise.
pub fn check_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix.len() > MAX_PREFIX {
        return Err("longer than 64 bytes");
    }
    if !prefix
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}')
    {
        return Err("only printable ASCII without spaces, '{' or '}' is allowed");
    }
    Ok(())
}

/// FNV-1a, 64 bits.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_documented_format() {
        assert_eq!(
            counter_key("rl:", "per-tenant", "tenant-123", 60_000),
            "rl:per-tenant:{tenant-123}:60"
        );
        assert_eq!(counter_key("x:", "r", "a@b.c", 250), "x:r:{a@b.c}:250ms");
        assert_eq!(counter_key("", "r", "i", 1500), "r:{i}:1500ms");
        let cal = |unit, offset_min| Calendar { unit, offset_min };
        assert_eq!(
            calendar_key("rl:", "r", "acme", &cal(Unit::Day, 0)),
            "rl:r:{acme}:day"
        );
        assert_eq!(
            calendar_key("rl:", "r", "acme", &cal(Unit::Month, 120)),
            "rl:r:{acme}:month+0200"
        );
        assert_eq!(calendar_part(&cal(Unit::Day, -330)), "day-0530");
        assert_eq!(
            block_key("rl:", "per-tenant", "tenant-123"),
            "rl:per-tenant:{tenant-123}:block"
        );
    }

    #[test]
    fn a_block_shares_the_hash_tag_of_its_counters() {
        let tag = |key: &str| -> String {
            let open = key.find('{').expect("open");
            let close = key[open..].find('}').expect("close") + open;
            key[open..=close].to_owned()
        };
        for id in ["tenant-123", "a b/{c}", &"x".repeat(1024)] {
            let block = block_key("rl:", "r", id);
            assert_eq!(tag(&block), tag(&counter_key("rl:", "r", id, 60_000)));
            assert_eq!(tag(&block), tag(&counter_key("rl:", "r", id, 250)));
            assert!(block.ends_with(":block"));
        }
    }

    #[test]
    fn odd_identifiers_are_hashed() {
        // FNV-1a 64 reference values.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(identifier("a b"), format!("h-{:016x}", fnv1a64(b"a b")));
        assert_eq!(identifier("{tag}").len(), 18);
        assert_eq!(identifier(&"x".repeat(64)), "x".repeat(64));
        assert!(identifier(&"x".repeat(65)).starts_with("h-"));
        assert!(identifier("é").starts_with("h-"));
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(check_prefix("rl:").is_ok());
        assert!(check_prefix("").is_ok());
        assert!(check_prefix("a{b").is_err());
        assert!(check_prefix("a b").is_err());
        assert!(check_prefix(&"p".repeat(65)).is_err());
    }
}
