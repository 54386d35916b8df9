//! What one shared-data slot holds: a key's bucket (see `bucket` for its
//! 26 bytes), the key's flags, what workers reserved from the bucket, and,
//! for a global rule, the key's lease beside its bucket.
//!
//! Encoding: the bucket's 26 bytes (`[1][tag][fingerprint][a][b][c]`);
//! then the flags byte, present when not zero or when a lease follows;
//! then the lease (`Lease::encode_into`), only when it holds something.
//! A local rule's slot is thus the 26 or 27 bytes it always was. One slot
//! per global key, read and written once for its bucket and its lease
//! together, rather than one for each.
//!
//! A slot whose bucket is empty keeps its fingerprint while it holds a
//! lease (a key whose lease was written before its bucket). A value
//! written by a version that kept leases in slots of their own (tag 4)
//! reads as an empty slot: it is taken over, and that key's lease starts
//! afresh (it asks the counter service again).

use crate::allowance::Reserved;
use crate::bucket::{State, ENCODED_LEN};
use crate::lease::Lease;
use crate::little_endian::u64_at;

/// The whole value of a slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    pub state: State,
    /// Flags about the key (`store::FLAG_*`).
    pub flags: u8,
    /// What workers have reserved from a token bucket (see `allowance`).
    pub reserved: Reserved,
    /// A global rule's lease of the key (`Lease::default()`: none).
    pub lease: Lease,
}

/// Where the lease starts in a slot that has one.
const LEASE_AT: usize = ENCODED_LEN + 1;

impl Slot {
    /// The slot's bytes, for the key hashed to `fingerprint`.
    pub fn encode(&self, fingerprint: u64) -> Vec<u8> {
        let mut out = self.state.encode_reserved(fingerprint, self.flags, self.reserved);
        if self.lease != Lease::default() {
            out.resize(LEASE_AT, 0);
            if let Some(flags) = out.get_mut(ENCODED_LEN) {
                *flags = self.flags;
            }
            self.lease.encode_into(&mut out);
        }
        out
    }

    /// Decodes a slot: its fingerprint (0, which no key has, for anything
    /// malformed or empty) and what it holds.
    pub fn decode(bytes: &[u8]) -> (u64, Slot) {
        let (fp, state) = State::decode(bytes);
        let lease = bytes.get(LEASE_AT..).and_then(Lease::decode).filter(|_| Self::bucket_tag(bytes).is_some());
        let fp = match (fp, lease) {
            (0, Some(_)) => u64_at(bytes, 2).unwrap_or(0),
            _ => fp,
        };
        let flags = if Self::bucket_tag(bytes).is_some() { bytes.get(ENCODED_LEN).copied().unwrap_or(0) } else { 0 };
        let flags = if state == State::Empty && lease.is_none() { 0 } else { flags };
        (fp, Slot { state, flags, reserved: State::reserved(bytes), lease: lease.unwrap_or_default() })
    }

    /// The bucket's tag, when the bytes hold a bucket of this version.
    fn bucket_tag(bytes: &[u8]) -> Option<u8> {
        match bytes.get(..2) {
            Some([1, tag @ 0..=3]) if bytes.len() >= ENCODED_LEN => Some(*tag),
            _ => None,
        }
    }

    /// Nanoseconds until the slot holds nothing worth keeping for the key
    /// (0: another key may take it over), its bucket judged with `limit`.
    pub fn idle_in(&self, limit: &crate::policy::Limit, now: u64) -> u64 {
        let bucket = self.state.idle_in(limit, now);
        let reserved = if self.reserved.live(now) > 0 { 1 } else { 0 };
        let lease = if self.lease == Lease::default() { 0 } else { self.lease.idle_in(now, limit.window_ns(now)) };
        bucket.max(reserved).max(lease)
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::testing::{per_second, S};

    fn lease() -> Lease {
        Lease { window: 3, units: 2, used: 1, ends_at: 4 * S, ..Lease::default() }
    }

    #[test]
    fn a_slot_round_trips_with_and_without_a_lease() {
        let reserved = Reserved { units: 4, until_ms: 99 };
        for state in [State::Tat(123), State::Fixed { window: 9, count: 4 }, State::Sliding { window: 9, current: 4, previous: 7 }, State::Empty] {
            for (flags, lease) in [(0, Lease::default()), (2, Lease::default()), (0, lease()), (3, lease())] {
                let reserved = if matches!(state, State::Tat(_)) { reserved } else { Reserved::default() };
                let slot = Slot { state, flags, reserved, lease };
                let (fp, back) = Slot::decode(&slot.encode(0xdead_beef));
                if state == State::Empty && lease == Lease::default() {
                    assert_eq!((fp, back), (0, Slot::default()), "an empty slot names no key");
                } else {
                    assert_eq!((fp, back), (0xdead_beef, slot), "{slot:?}");
                }
            }
        }
    }

    #[test]
    fn a_local_rule_slot_keeps_its_size() {
        assert_eq!(Slot { state: State::Tat(5), ..Slot::default() }.encode(7).len(), ENCODED_LEN);
        assert_eq!(Slot { state: State::Tat(5), flags: 1, ..Slot::default() }.encode(7).len(), ENCODED_LEN + 1);
        assert_eq!(Slot { state: State::Tat(5), lease: lease(), ..Slot::default() }.encode(7).len(), LEASE_AT + Lease::ENCODED_LEN);
    }

    #[test]
    fn garbage_and_old_lease_slots_read_as_free() {
        assert_eq!(Slot::decode(b""), (0, Slot::default()));
        assert_eq!(Slot::decode(&[9u8; 120]), (0, Slot::default()));
        // A lease in a slot of its own, as an earlier version wrote it.
        let mut old = vec![1u8, 4];
        old.extend_from_slice(&7u64.to_le_bytes());
        lease().encode_into(&mut old);
        assert_eq!(Slot::decode(&old), (0, Slot::default()));
        // A lease cut short reads as none.
        let whole = Slot { state: State::Tat(5), lease: lease(), ..Slot::default() }.encode(7);
        let (fp, cut) = Slot::decode(whole.get(..LEASE_AT + 20).expect("long enough"));
        assert_eq!((fp, cut.lease), (7, Lease::default()));
    }

    #[test]
    fn a_slot_is_active_while_its_bucket_its_reservations_or_its_lease_are() {
        let l = per_second(10);
        let now = 3 * S;
        assert_eq!(Slot::default().idle_in(&l, now), 0);
        assert!(Slot { state: State::Tat(now + S), ..Slot::default() }.idle_in(&l, now) > 0);
        assert!(Slot { reserved: Reserved { units: 2, until_ms: 3_400 }, ..Slot::default() }.idle_in(&l, now) > 0);
        assert!(Slot { lease: lease(), ..Slot::default() }.idle_in(&l, now) > 0, "a lease whose window runs");
        assert_eq!(Slot { lease: lease(), ..Slot::default() }.idle_in(&l, 5 * S), 0, "its window over");
    }
}
