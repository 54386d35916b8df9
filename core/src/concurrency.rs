//! Concurrency limits: how many requests of a key are in flight.
//!
//! A rule with `"limit": {"concurrent": N}` admits a request while fewer
//! than `N` units of its key are held; the admitted request holds a unit
//! until its stream ends (response done, or client gone), when the filter
//! releases it. Counting is per Envoy instance, shared by its workers.
//!
//! Units live in [`SLOTS`] shared-data keys `sluice/c/<n>`, a key's slot
//! being its fingerprint modulo `SLOTS` (so memory is bounded whatever
//! keys clients invent). A slot's value is a version byte (1; Envoy reads
//! an empty value as absent) and a list of units, each its key's
//! fingerprint, a random id and a deadline (wall-clock ns), 24 bytes
//! little-endian; every write is a compare-and-swap. A unit is dropped
//! when released (by id: releasing twice, or releasing a unit that
//! expired, changes nothing) or when its deadline passes (the rule's
//! `max_hold`, 5 minutes unless the rule says otherwise), so a unit whose
//! release was lost (the worker's VM restarted, the rule was removed by a
//! reload) frees itself: the count never goes negative and never leaks
//! for longer than `max_hold`. A slot holds at most [`MAX_UNITS`] live
//! units (of all the keys that share it); a key whose slot is full is
//! refused like a key at its limit.

use crate::store::{update_key, SharedStore, StoreError};

/// Shared-data keys holding units.
pub const SLOTS: u64 = 1024;
/// Live units one slot holds at most.
pub const MAX_UNITS: usize = 256;
const UNIT: usize = 24;
const VERSION: u8 = 1;

/// One held unit, to release when the request ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unit {
    pub fingerprint: u64,
    pub id: u64,
}

fn key(fingerprint: u64) -> String {
    format!("sluice/c/{}", fingerprint % SLOTS)
}

/// Creates the slots that do not exist yet (before traffic, so that
/// request-time writes are always compare-and-swap on an existing value).
pub fn ensure_slots(store: &dyn SharedStore) -> Result<(), StoreError> {
    for n in 0..SLOTS {
        let key = format!("sluice/c/{n}");
        if store.get(&key)?.is_none() {
            store.set(&key, &[VERSION], 0)?;
        }
    }
    Ok(())
}

/// The live units of a slot's value (malformed tails are ignored).
fn live(bytes: &[u8], now: u64) -> Vec<(u64, u64, u64)> {
    bytes
        .get(1..)
        .unwrap_or_default()
        .chunks_exact(UNIT)
        .filter_map(|c| {
            let at = |i: usize| c.get(i..i.saturating_add(8)).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_le_bytes);
            Some((at(0)?, at(8)?, at(16)?))
        })
        .filter(|&(_, _, deadline)| deadline > now)
        .collect()
}

fn encode(units: &[(u64, u64, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(units.len().saturating_mul(UNIT).saturating_add(1));
    out.push(VERSION);
    for (fp, id, deadline) in units {
        out.extend_from_slice(&fp.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&deadline.to_le_bytes());
    }
    out
}

/// What an acquire found: whether it took `cost` units, and how many of
/// the key's units are held now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acquired {
    pub allowed: bool,
    pub held: u64,
}

/// Takes `cost` units of `fingerprint` (all under `id`) if fewer than
/// `limit - cost + 1` are held, each held until `now + max_hold_ns` at most.
pub fn acquire(store: &dyn SharedStore, fingerprint: u64, id: u64, limit: u64, cost: u64, max_hold_ns: u64, now: u64) -> Result<Acquired, StoreError> {
    let deadline = now.saturating_add(max_hold_ns);
    update_key(store, &key(fingerprint), |bytes| {
        let mut units = live(bytes, now);
        let held = units.iter().filter(|u| u.0 == fingerprint).count() as u64;
        let room = units.len().saturating_add(usize::try_from(cost).unwrap_or(usize::MAX)) <= MAX_UNITS;
        if held.saturating_add(cost) > limit || !room {
            // Expired units are dropped on the next write, not by a read.
            return (Acquired { allowed: false, held }, None);
        }
        for _ in 0..cost {
            units.push((fingerprint, id, deadline));
        }
        (Acquired { allowed: true, held: held.saturating_add(cost) }, Some(encode(&units)))
    })
}

/// How many units of `fingerprint` are held, without taking any.
pub fn held(store: &dyn SharedStore, fingerprint: u64, now: u64) -> Result<u64, StoreError> {
    let bytes = store.get(&key(fingerprint))?.map(|(b, _)| b).unwrap_or_default();
    Ok(live(&bytes, now).iter().filter(|u| u.0 == fingerprint).count() as u64)
}

/// Releases every unit taken under `unit.id`; a unit already released
/// or expired is no longer there, and nothing changes.
pub fn release(store: &dyn SharedStore, unit: Unit, now: u64) -> Result<(), StoreError> {
    update_key(store, &key(unit.fingerprint), |bytes| {
        let units = live(bytes, now);
        let before = units.len();
        let kept: Vec<_> = units.into_iter().filter(|u| !(u.0 == unit.fingerprint && u.1 == unit.id)).collect();
        let changed = kept.len() != before || bytes.len() != kept.len().saturating_mul(UNIT).saturating_add(1);
        ((), changed.then(|| encode(&kept)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use crate::testing::S;

    const HOLD: u64 = 300 * S;

    fn store() -> MemoryStore {
        let store = MemoryStore::default();
        ensure_slots(&store).expect("slots");
        store
    }

    #[test]
    fn admits_up_to_the_limit_and_a_release_frees_one() {
        let s = store();
        for id in 1..=3 {
            assert!(acquire(&s, 7, id, 3, 1, HOLD, S).expect("acquire").allowed);
        }
        let fourth = acquire(&s, 7, 4, 3, 1, HOLD, S).expect("acquire");
        assert_eq!(fourth, Acquired { allowed: false, held: 3 });
        // Another key in the same slot is counted apart.
        assert!(acquire(&s, 7 + SLOTS, 5, 3, 1, HOLD, S).expect("acquire").allowed);
        release(&s, Unit { fingerprint: 7, id: 2 }, S).expect("release");
        assert_eq!(held(&s, 7, S).expect("held"), 2);
        assert!(acquire(&s, 7, 6, 3, 1, HOLD, S).expect("acquire").allowed);
    }

    #[test]
    fn releasing_twice_or_an_unknown_unit_frees_nothing_more() {
        let s = store();
        for id in 1..=2 {
            assert!(acquire(&s, 9, id, 2, 1, HOLD, S).expect("acquire").allowed);
        }
        release(&s, Unit { fingerprint: 9, id: 1 }, S).expect("release");
        release(&s, Unit { fingerprint: 9, id: 1 }, S).expect("release");
        release(&s, Unit { fingerprint: 9, id: 99 }, S).expect("release");
        assert_eq!(held(&s, 9, S).expect("held"), 1);
        assert!(acquire(&s, 9, 3, 2, 1, HOLD, S).expect("acquire").allowed);
        assert!(!acquire(&s, 9, 4, 2, 1, HOLD, S).expect("acquire").allowed);
    }

    #[test]
    fn a_unit_never_released_expires_after_max_hold() {
        let s = store();
        assert!(acquire(&s, 5, 1, 1, 1, HOLD, S).expect("acquire").allowed);
        assert!(!acquire(&s, 5, 2, 1, 1, HOLD, S + HOLD - 1).expect("acquire").allowed);
        assert!(acquire(&s, 5, 3, 1, 1, HOLD, S + HOLD).expect("acquire").allowed);
        // The expired unit's late release does not free the new one.
        release(&s, Unit { fingerprint: 5, id: 1 }, S + HOLD).expect("release");
        assert_eq!(held(&s, 5, S + HOLD).expect("held"), 1);
    }

    #[test]
    fn a_full_slot_refuses_and_malformed_values_count_nothing() {
        let s = store();
        for id in 0..MAX_UNITS as u64 {
            assert!(acquire(&s, 3 + id * SLOTS, id, 1, 1, HOLD, S).expect("acquire").allowed);
        }
        assert!(!acquire(&s, 3 + 9999 * SLOTS, 1, 1, 1, HOLD, S).expect("acquire").allowed);
        s.set(&key(4), &[1, 2, 3], 0).expect("set");
        assert_eq!(held(&s, 4, S).expect("held"), 0);
        assert!(acquire(&s, 4, 1, 1, 1, HOLD, S).expect("acquire").allowed);
    }
}
