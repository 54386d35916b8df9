//! Refills on their way from a worker to the instance's leader: one
//! shared-queue message per worker tick, in a compact binary form (JSON
//! cost more than the rest of the leader's work per refill).
//!
//! A message is the byte `FORMAT`, the number of needs (u32), then per need: `rule` (u32),
//! `fingerprint`, `bucket` (u64), `carry` (u32), flags (u8: bit 0
//! `owns_ask`, bit 1 `ask.next`), `ask.limit`, `ask.window_ms` (u64),
//! `ask.want` (u32), then `ask.rule` and `ask.id`, each a u16 length and
//! its UTF-8 bytes, then, when flags bit 2 says the ask has calendar
//! windows, the unit (u8: 1 day, 2 month) and the offset in minutes (i32);
//! numbers little-endian.

use super::LeaseNeed;
use crate::calendar::{Calendar, Unit};
use crate::counter_api::Ask;
use crate::little_endian::{u32_at, u64_at};

/// First byte of a message (never the first byte of JSON text).
const FORMAT: u8 = 0xb1;
/// Bytes of a need with empty names.
const NEED_MIN: usize = 49;

/// Most refills a worker gathers between two ticks, and most the leader
/// takes from the queue in one round (four reserve calls' worth), however
/// many keys clients invent. A refill dropped past it only delays its
/// lease: its ask expires (or the leader forgets it) and a later request
/// asks again.
pub const MAX_GATHERED: usize = 4 * crate::counter_api::MAX_ASKS;

/// Appends `more` to `gathered` while it holds fewer than
/// [`MAX_GATHERED`]; returns what did not fit, in order.
pub fn gather<T>(gathered: &mut Vec<T>, more: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut more = more.into_iter();
    let room = MAX_GATHERED.saturating_sub(gathered.len());
    gathered.extend(more.by_ref().take(room));
    more.collect()
}

/// Encodes `needs` as one message; `None` when a name is too long for
/// its u16 length (policies keep them far shorter).
pub fn encode_needs(needs: &[LeaseNeed]) -> Option<Vec<u8>> {
    let size = needs.iter().fold(5usize, |sum, n| sum.saturating_add(NEED_MIN).saturating_add(n.ask.rule.len()).saturating_add(n.ask.id.len()));
    let mut out = Vec::with_capacity(size);
    out.push(FORMAT);
    out.extend_from_slice(&u32::try_from(needs.len()).ok()?.to_le_bytes());
    for n in needs {
        out.extend_from_slice(&u32::try_from(n.rule).ok()?.to_le_bytes());
        out.extend_from_slice(&n.fingerprint.to_le_bytes());
        out.extend_from_slice(&n.bucket.to_le_bytes());
        out.extend_from_slice(&n.carry.to_le_bytes());
        out.push(u8::from(n.owns_ask) | (u8::from(n.ask.next) << 1) | (u8::from(n.ask.calendar.is_some()) << 2));
        out.extend_from_slice(&n.ask.limit.to_le_bytes());
        out.extend_from_slice(&n.ask.window_ms.to_le_bytes());
        out.extend_from_slice(&n.ask.want.to_le_bytes());
        for text in [&n.ask.rule, &n.ask.id] {
            out.extend_from_slice(&u16::try_from(text.len()).ok()?.to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        if let Some(c) = n.ask.calendar {
            out.push(if c.unit == Unit::Day { 1 } else { 2 });
            out.extend_from_slice(&c.offset_min.to_le_bytes());
        }
    }
    Some(out)
}

/// Reads a message of `encode_needs`, or JSON holding one need or an array
/// of them (as earlier versions sent, which a new leader may meet during
/// an upgrade). A malformed message reads as no need at all: a lost refill
/// only delays its lease, whose ask expires and is made again.
pub fn decode_needs(bytes: &[u8]) -> Vec<LeaseNeed> {
    match bytes.first() {
        Some(&FORMAT) => bytes.get(1..).and_then(decode_binary).unwrap_or_default(),
        Some(b'[') => serde_json::from_slice(bytes).unwrap_or_default(),
        Some(b'{') => serde_json::from_slice::<LeaseNeed>(bytes).map(|n| vec![n]).unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn decode_binary(b: &[u8]) -> Option<Vec<LeaseNeed>> {
    let count = usize::try_from(u32_at(b, 0)?).ok()?;
    let mut b = b.get(4..)?;
    // A count beyond what the bytes can hold is a lie.
    let mut out = Vec::with_capacity(count.min(b.len() / NEED_MIN));
    for _ in 0..count {
        let rule = usize::try_from(u32_at(b, 0)?).ok()?;
        let fingerprint = u64_at(b, 4)?;
        let bucket = u64_at(b, 12)?;
        let carry = u32_at(b, 20)?;
        let flags = *b.get(24)?;
        let limit = u64_at(b, 25)?;
        let window_ms = u64_at(b, 33)?;
        let want = u32_at(b, 41)?;
        b = b.get(45..)?;
        let mut texts = [String::new(), String::new()];
        for text in &mut texts {
            let len = usize::from(u16::from_le_bytes(b.get(..2)?.try_into().ok()?));
            let (head, rest) = b.get(2..)?.split_at_checked(len)?;
            *text = std::str::from_utf8(head).ok()?.to_owned();
            b = rest;
        }
        let [rule_name, id] = texts;
        let mut calendar = None;
        if flags & 4 != 0 {
            let unit = match b.first()? {
                1 => Unit::Day,
                2 => Unit::Month,
                _ => return None,
            };
            calendar = Some(Calendar { unit, offset_min: i32::from_le_bytes(b.get(1..5)?.try_into().ok()?) });
            b = b.get(5..)?;
        }
        out.push(LeaseNeed {
            rule,
            fingerprint,
            ask: Ask { calendar, ..Ask::new(rule_name, id, limit, window_ms, want, flags & 2 != 0) },
            owns_ask: flags & 1 != 0,
            carry,
            bucket,
        });
    }
    b.is_empty().then_some(out)
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn gathering_stops_at_the_bound_and_returns_the_rest() {
        let mut gathered: Vec<usize> = (0..MAX_GATHERED - 2).collect();
        let rest = gather(&mut gathered, [1, 2, 3, 4, 5]);
        assert_eq!(gathered.len(), MAX_GATHERED);
        assert_eq!(gathered[MAX_GATHERED - 2..], [1, 2]);
        assert_eq!(rest, [3, 4, 5]);
        assert_eq!(gather(&mut gathered, [6]), [6], "a full list takes nothing");
        let mut empty = Vec::new();
        assert!(gather(&mut empty, 0..10).is_empty());
        assert_eq!(empty.len(), 10);
    }

    #[test]
    fn a_calendar_ask_crosses_the_queue() {
        let day = Calendar { unit: Unit::Day, offset_min: -330 };
        let need = |calendar| LeaseNeed {
            rule: 1,
            fingerprint: 2,
            ask: Ask { calendar, ..Ask::new("budget".into(), "acme".into(), 100, 86_400_000, 7, true) },
            owns_ask: true,
            carry: 0,
            bucket: 3,
        };
        let needs = vec![need(Some(day)), need(None), need(Some(Calendar { unit: Unit::Month, offset_min: 120 }))];
        let bytes = encode_needs(&needs).unwrap();
        assert_eq!(decode_needs(&bytes), needs);
        assert!(decode_needs(&bytes[..bytes.len() - 1]).is_empty(), "a cut calendar is no need at all");
    }
}
