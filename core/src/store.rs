//! The slot table: every bucket of every rule lives in one of a fixed number
//! of shared-data slots, so memory is bounded by the policy's `slots` however
//! many keys clients invent.
//!
//! Slot key format: `sluice/b/<index>` for `index` in `0..slots`, each value
//! a key's bucket and, for a global rule, its lease beside it (see `slot`). `sluice/slots` records how many
//! slots exist; `sluice/o/<n>` for `n` in `0..OVERFLOW_SLOTS` are the rules'
//! overflow buckets; `sluice/secret` holds the instance's [`SlotSecret`].
//!
//! A key's fingerprint is a keyed hash (SipHash-1-3, see `hash`) of its
//! rule and values under the instance's secret, drawn from the host's
//! randomness: a client cannot compute where a key lives. A bucket's
//! address is its fingerprint modulo `slots`; the fingerprint is stored
//! beside the state, so collisions are detected. A key probes [`PROBES`]
//! consecutive slots: its own bucket if one carries its fingerprint, else
//! the first slot that is not active. A slot is *active* while its state
//! still says something: a token bucket not yet full again (its arrival
//! time is ahead of now), a fixed or sliding window with requests counted
//! in the window or the one before it still weighs on (judged with the
//! window length the newcomer's rule has), units reserved by workers not
//! yet lapsed, or a lease whose window (or the next one, reserved ahead)
//! has not ended or whose ask to the counter service is still in flight.
//! An active slot is never taken over.
//!
//! When all of a key's probes are active, it has no slot
//! ([`StoreError::Full`]) and the limiter decides it against its rule's
//! overflow bucket: one bucket per rule (`sluice/o/<rule index mod
//! OVERFLOW_SLOTS>`) with the rule's limit, shared by every key of the rule
//! that found no slot. So a flood of new keys costs the new keys (they
//! share one key's allowance), never the keys already counted. The bound:
//! memory is `slots + OVERFLOW_SLOTS + 2` values whatever the traffic;
//! every key active in a neighbourhood keeps its state; a key overflows
//! only when its 4 probes hold active keys, which with a random secret
//! needs about `slots` active keys in all (a client cannot choose the
//! neighbourhood); `sluice_slot_overflow_total` counts the requests
//! decided on an overflow bucket.
//!
//! Every write is a compare-and-swap through [`cas_update`]; Envoy's shared
//! data is one map behind a mutex, shared by all workers of the instance.

use std::num::{NonZeroU32, NonZeroU64};

pub use crate::allowance::Reserved;
use crate::bucket::State;
pub use crate::hash::SlotSecret;
use crate::lease::Lease;
use crate::policy::{Algorithm, Limit};
use crate::slot::Slot;

/// Consecutive slots a key may live in.
pub const PROBES: u32 = 4;
/// Overflow buckets: rule `i` uses `sluice/o/<i mod OVERFLOW_SLOTS>`.
pub const OVERFLOW_SLOTS: usize = 256;
/// Fingerprints from here up name overflow buckets (`OVERFLOW_BASE + rule
/// index`); key fingerprints stay below it.
pub const OVERFLOW_BASE: u64 = u64::MAX - 1_000_000;
const SECRET_KEY: &str = "sluice/secret";
/// Attempts before a contended update gives up.
pub const CAS_ATTEMPTS: u32 = 8;
const SLOT_COUNT_KEY: &str = "sluice/slots";

/// Why a shared-data write failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The value changed since it was read; read again and retry.
    CasMismatch,
    /// Every retry met a concurrent writer.
    Contended,
    /// The host refused the operation.
    Host(String),
    /// Every slot the key may live in holds another key's active state.
    Full,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::CasMismatch => write!(f, "shared data changed during the update"),
            StoreError::Contended => write!(f, "shared data stayed contended for {CAS_ATTEMPTS} attempts"),
            StoreError::Host(m) => write!(f, "shared data: {m}"),
            StoreError::Full => write!(f, "every slot the key may use holds an active key"),
        }
    }
}

/// Envoy's shared data as the core sees it (proxy-wasm in the filter, a map
/// in tests). `cas` 0 writes unconditionally.
pub trait SharedStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError>;
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError>;
    /// The worker's shares of busy keys (see `allowance`), when this store
    /// is one worker's view of the instance's shared data; none otherwise,
    /// and every decision then reads and writes the slots.
    fn allowances(&self) -> Option<&std::cell::RefCell<crate::allowance::Allowances>> {
        None
    }
}

pub fn slot_key(index: u32) -> String {
    // Built by hand: every probe of every decision names a slot.
    let mut digits = [b'0'; 10];
    let mut n = index;
    let mut first = digits.len();
    for (at, d) in digits.iter_mut().enumerate().rev() {
        // A decimal digit fits in the low bits of b'0' (0x30).
        *d = b'0' | (n % 10) as u8;
        n /= 10;
        first = at;
        if n == 0 {
            break;
        }
    }
    let mut key = String::with_capacity(19);
    key.push_str("sluice/b/");
    key.extend(digits.iter().skip(first).map(|d| char::from(*d)));
    key
}

/// Creates the slots `0..slots` that do not exist yet. Done once per
/// configuration, before traffic uses the slots, so that request-time
/// updates are always compare-and-swap on an existing value (a first write
/// to a missing key is unconditional and could lose a concurrent update).
pub fn ensure_slots(store: &dyn SharedStore, slots: u32) -> Result<(), StoreError> {
    let existing = match store.get(SLOT_COUNT_KEY)? {
        Some((v, _)) => crate::little_endian::u32_at(&v, 0).unwrap_or(0),
        None => 0,
    };
    let empty = State::Empty.encode(0);
    for n in 0..OVERFLOW_SLOTS {
        let key = overflow_key(n);
        if store.get(&key)?.is_none() {
            store.set(&key, &empty, 0)?;
        }
    }
    if existing >= slots {
        return Ok(());
    }
    for i in existing..slots {
        let key = slot_key(i);
        if store.get(&key)?.is_none() {
            store.set(&key, &empty, 0)?;
        }
    }
    store.set(SLOT_COUNT_KEY, &slots.to_le_bytes(), 0)
}

fn overflow_key(n: usize) -> String {
    format!("sluice/o/{n}")
}

/// The fingerprint of rule `rule`'s overflow bucket (see the module docs).
pub fn overflow_fingerprint(rule: usize) -> u64 {
    OVERFLOW_BASE.saturating_add(u64::try_from(rule).unwrap_or(u64::MAX)).max(OVERFLOW_BASE)
}

/// The instance's slot secret: the one in shared data, or `fresh` (from
/// the host's randomness) written there by the first root to configure.
/// A first write to a missing key is unconditional in Envoy, so the value
/// is read back and that is what every root uses. (Envoy configures its
/// main thread's VM before the workers', so in practice one root writes.)
pub fn ensure_secret(store: &dyn SharedStore, fresh: [u8; 16]) -> Result<SlotSecret, StoreError> {
    let read = |store: &dyn SharedStore| -> Result<Option<SlotSecret>, StoreError> {
        Ok(store.get(SECRET_KEY)?.and_then(|(v, _)| <[u8; 16]>::try_from(v.as_slice()).ok()).map(SlotSecret))
    };
    if let Some(secret) = read(store)? {
        return Ok(secret);
    }
    let cas = store.get(SECRET_KEY)?.map_or(0, |(_, cas)| cas);
    match store.set(SECRET_KEY, &fresh, cas) {
        Ok(()) | Err(StoreError::CasMismatch) => {}
        Err(e) => return Err(e),
    }
    read(store)?.ok_or_else(|| StoreError::Host("the slot secret did not stick".into()))
}

/// Updates the value of a plain shared-data key (not a slot) with
/// compare-and-swap: `f` reads the current bytes (empty when absent) and
/// returns its answer and the bytes to store, if any.
pub fn update_key<T>(store: &dyn SharedStore, key: &str, mut f: impl FnMut(&[u8]) -> (T, Option<Vec<u8>>)) -> Result<T, StoreError> {
    for _ in 0..CAS_ATTEMPTS {
        let (bytes, cas) = store.get(key)?.unwrap_or_default();
        let (answer, next) = f(&bytes);
        let Some(next) = next else { return Ok(answer) };
        match store.set(key, &next, cas) {
            Ok(()) => return Ok(answer),
            Err(StoreError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Contended)
}

/// A key's slot found: where it is and what it holds (its bucket, the
/// key's flags (`FLAG_*`), the workers' reservations and a global rule's
/// lease, see `slot`).
#[derive(Clone, Debug)]
pub struct Found {
    pub key: String,
    pub cas: u32,
    pub slot: Slot,
}

/// The key is in a rejection episode: a request was refused and none was
/// admitted since.
pub const FLAG_REFUSING: u8 = 1;
/// The key was reported as approaching its limit, and has not fallen back
/// below half of it since.
pub const FLAG_WARNED: u8 = 2;

/// What a take meant for its key, to log and count once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Note {
    /// The key has just passed 95 % of its limit.
    Approaching,
    /// The first refusal after admissions: a rejection episode starts.
    Refusing,
    /// The first admission after refusals: the limit has reset.
    Reset,
}

/// The flags after an outcome of a key whose capacity is `capacity`, and
/// what changed.
pub(crate) fn noted(o: &crate::bucket::Outcome, capacity: u64, flags: u8) -> (u8, Option<Note>) {
    let capacity = u128::from(capacity.max(1));
    let left = u128::from(o.remaining);
    if !o.allowed {
        return if flags & FLAG_REFUSING == 0 { (flags | FLAG_REFUSING, Some(Note::Refusing)) } else { (flags, None) };
    }
    if flags & FLAG_REFUSING != 0 {
        return (flags & !FLAG_REFUSING, Some(Note::Reset));
    }
    if left * 20 <= capacity && flags & FLAG_WARNED == 0 {
        return (flags | FLAG_WARNED, Some(Note::Approaching));
    }
    if left * 2 > capacity && flags & FLAG_WARNED != 0 {
        return (flags & !FLAG_WARNED, None);
    }
    (flags, None)
}

/// The most a key's bucket holds: its burst (token bucket) or its limit.
pub(crate) fn capacity(algorithm: Algorithm, limit: &Limit) -> u64 {
    if algorithm == Algorithm::TokenBucket {
        limit.burst
    } else {
        limit.requests
    }
}

/// Finds the slot for the key hashed to `fingerprint` (see the module
/// docs): its own, or the first that is not active; [`StoreError::Full`]
/// when every probe holds another key's active state.
pub fn locate(store: &dyn SharedStore, slots: u32, fingerprint: u64, limit: &Limit, now: u64) -> Result<Found, StoreError> {
    if let Some(rule) = fingerprint.checked_sub(OVERFLOW_BASE) {
        // A rule's overflow bucket: shared, whoever wrote it last.
        let key = overflow_key(usize::try_from(rule).unwrap_or(0) % OVERFLOW_SLOTS);
        let (bytes, cas) = store.get(&key)?.unwrap_or_default();
        let (_, slot) = Slot::decode(&bytes);
        // An overflow bucket is never a lease's.
        return Ok(Found { key, cas, slot: Slot { lease: Lease::default(), ..slot } });
    }
    let slots = NonZeroU32::new(slots).unwrap_or(NonZeroU32::MIN);
    // Below `slots`, so the cast keeps every bit.
    let home = (fingerprint % NonZeroU64::from(slots)) as u32;
    let mut free: Option<Found> = None;
    for probe in 0..PROBES.min(slots.get()) {
        let key = slot_key(home.saturating_add(probe) % slots);
        let (bytes, cas) = store.get(&key)?.unwrap_or_default();
        let (fp, slot) = Slot::decode(&bytes);
        if fp == fingerprint {
            return Ok(Found { key, cas, slot });
        }
        // The key's own bucket may sit further on: keep probing. Units
        // reserved by workers keep a bucket active until they lapse.
        if free.is_none() && (fp == 0 || slot.idle_in(limit, now) == 0) {
            free = Some(Found { key, cas, slot: Slot::default() });
        }
    }
    free.ok_or(StoreError::Full)
}

/// Reads the key's bucket, lets `f` decide, and stores the new state (if
/// any) with compare-and-swap, retrying on a concurrent change.
pub fn cas_update<T>(
    store: &dyn SharedStore,
    slots: u32,
    fingerprint: u64,
    limit: &Limit,
    now: u64,
    mut f: impl FnMut(State) -> (T, Option<State>),
) -> Result<T, StoreError> {
    cas_update_flagged(store, slots, fingerprint, limit, now, |s, flags| {
        let (answer, next) = f(s);
        (answer, next.map(|n| (n, flags)))
    })
}

/// Like `cas_update`, with the key's flags read and written too. Units
/// that workers have reserved from a token bucket (see `allowance`) count
/// as spent for `f`, and stay reserved.
pub fn cas_update_flagged<T>(
    store: &dyn SharedStore,
    slots: u32,
    fingerprint: u64,
    limit: &Limit,
    now: u64,
    mut f: impl FnMut(State, u8) -> (T, Option<(State, u8)>),
) -> Result<T, StoreError> {
    cas_update_reserved(store, slots, fingerprint, limit, now, |state, flags, reserved| {
        let held = reserved.live(now);
        let (answer, next) = f(crate::allowance::holding(state, limit, now, held), flags);
        (answer, next.map(|(n, fl)| (crate::allowance::releasing(n, limit, held), fl, if held > 0 { reserved } else { Reserved::default() })))
    })
}

/// Like `cas_update_flagged`, with the bucket's state as stored (reserved
/// units not counted in it) and its reservations read and written by `f`.
pub fn cas_update_reserved<T>(
    store: &dyn SharedStore,
    slots: u32,
    fingerprint: u64,
    limit: &Limit,
    now: u64,
    mut f: impl FnMut(State, u8, Reserved) -> (T, Option<(State, u8, Reserved)>),
) -> Result<T, StoreError> {
    cas_update_slot(store, slots, fingerprint, limit, now, |slot| {
        let (answer, next) = f(slot.state, slot.flags, slot.reserved);
        (answer, next.map(|(state, flags, reserved)| Slot { state, flags, reserved, ..slot }))
    })
}

/// Reads the key's whole slot (see `slot`), lets `f` decide, and stores
/// what it returns (if anything) with compare-and-swap, retrying on a
/// concurrent change. Every update of a slot goes through here.
pub fn cas_update_slot<T>(
    store: &dyn SharedStore,
    slots: u32,
    fingerprint: u64,
    limit: &Limit,
    now: u64,
    mut f: impl FnMut(Slot) -> (T, Option<Slot>),
) -> Result<T, StoreError> {
    for _ in 0..CAS_ATTEMPTS {
        let found = locate(store, slots, fingerprint, limit, now)?;
        let (answer, next) = f(found.slot);
        let Some(next) = next else {
            return Ok(answer);
        };
        match store.set(&found.key, &next.encode(fingerprint), found.cas) {
            Ok(()) => return Ok(answer),
            Err(StoreError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Contended)
}

/// Takes `cost` units from the key's bucket.
pub fn take(
    store: &dyn SharedStore,
    slots: u32,
    fingerprint: u64,
    algorithm: Algorithm,
    limit: &Limit,
    now: u64,
    cost: u64,
) -> Result<crate::bucket::Outcome, StoreError> {
    cas_update(store, slots, fingerprint, limit, now, |s| s.take(algorithm, limit, now, cost))
}

/// Like `take`, noting what the outcome means for the key (see `Note`);
/// a rejection episode's first refusal writes its flag.
pub fn take_noting(
    store: &dyn SharedStore,
    slots: u32,
    fingerprint: u64,
    algorithm: Algorithm,
    limit: &Limit,
    now: u64,
    cost: u64,
) -> Result<(crate::bucket::Outcome, Option<Note>), StoreError> {
    cas_update_flagged(store, slots, fingerprint, limit, now, |s, flags| {
        let (o, next) = s.take(algorithm, limit, now, cost);
        let (f, note) = noted(&o, capacity(algorithm, limit), flags);
        let write = next.or((f != flags).then_some(s)).map(|n| (n, f));
        ((o, note), write)
    })
}

/// Takes a unit or reserves a turn in the queue (the wait comes back too),
/// noting what the outcome means for the key.
pub fn take_queued_noting(
    store: &dyn SharedStore,
    slots: u32,
    fingerprint: u64,
    limit: &Limit,
    queue: &crate::policy::Queue,
    now: u64,
    cost: u64,
) -> Result<((crate::bucket::Outcome, u64), Option<Note>), StoreError> {
    cas_update_flagged(store, slots, fingerprint, limit, now, |s, flags| {
        let (o, next, wait) = s.take_queued(limit, now, cost, queue);
        let (f, note) = noted(&o, limit.burst, flags);
        let write = next.or((f != flags).then_some(s)).map(|n| (n, f));
        (((o, wait), note), write)
    })
}

/// Takes units for a priority class that leaves `reserve` to the classes
/// above it (see `State::take_leaving`).
pub fn take_leaving(
    store: &dyn SharedStore,
    slots: u32,
    fingerprint: u64,
    limit: &Limit,
    now: u64,
    cost: u64,
    reserve: u64,
) -> Result<crate::bucket::Outcome, StoreError> {
    cas_update(store, slots, fingerprint, limit, now, |s| s.take_leaving(limit, now, cost, reserve))
}

/// The outcome `take` would have, without spending anything.
pub fn peek(
    store: &dyn SharedStore,
    slots: u32,
    fingerprint: u64,
    algorithm: Algorithm,
    limit: &Limit,
    now: u64,
    cost: u64,
) -> Result<crate::bucket::Outcome, StoreError> {
    let found = locate(store, slots, fingerprint, limit, now)?;
    let state = crate::allowance::holding(found.slot.state, limit, now, found.slot.reserved.live(now));
    Ok(state.take(algorithm, limit, now, cost).0)
}

/// Gives back units taken by a request that ended up denied.
pub fn refund(store: &dyn SharedStore, slots: u32, fingerprint: u64, algorithm: Algorithm, limit: &Limit, now: u64, cost: u64) -> Result<(), StoreError> {
    cas_update(store, slots, fingerprint, limit, now, |s| ((), (s != State::Empty).then(|| s.refund(algorithm, limit, now, cost))))
}

/// Takes `cost` more units from the key's bucket, past its limit if need
/// be (see `State::charge`).
pub fn charge(store: &dyn SharedStore, slots: u32, fingerprint: u64, algorithm: Algorithm, limit: &Limit, now: u64, cost: u64) -> Result<(), StoreError> {
    cas_update(store, slots, fingerprint, limit, now, |s| ((), Some(s.charge(algorithm, limit, now, cost))))
}

/// Updates the lease of the key hashed to `fingerprint` (see `lease`),
/// kept in the slot of the key's bucket.
pub fn lease_update<T>(
    store: &dyn SharedStore,
    slots: u32,
    fingerprint: u64,
    limit: &Limit,
    now: u64,
    mut f: impl FnMut(Lease) -> (T, Option<Lease>),
) -> Result<T, StoreError> {
    cas_update_slot(store, slots, fingerprint, limit, now, |slot| {
        let (answer, next) = f(slot.lease);
        (answer, next.map(|lease| Slot { lease, ..slot }))
    })
}

/// An in-memory `SharedStore` with Envoy's semantics (CAS tokens, first
/// write unconditional), for tests and for `make simulate`.
#[derive(Default)]
pub struct MemoryStore {
    map: std::cell::RefCell<std::collections::HashMap<String, (Vec<u8>, u32)>>,
    next_cas: std::cell::Cell<u32>,
    calls: std::cell::Cell<u64>,
}

impl MemoryStore {
    /// Reads and writes made so far: the hostcalls the filter would make.
    pub fn calls(&self) -> u64 {
        self.calls.get()
    }

    pub fn len(&self) -> usize {
        self.map.borrow().len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.calls.set(self.calls.get().saturating_add(1));
        Ok(self.map.borrow().get(key).cloned())
    }
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        self.calls.set(self.calls.get().saturating_add(1));
        let mut map = self.map.borrow_mut();
        if cas != 0 && map.get(key).map(|(_, c)| *c) != Some(cas) {
            return Err(StoreError::CasMismatch);
        }
        let next = self.next_cas.get().wrapping_add(1).max(1);
        self.next_cas.set(next);
        map.insert(key.to_string(), (value.to_vec(), next));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::testing::{per_second as limit, S};

    #[test]
    fn slot_keys_name_their_index() {
        for i in [0, 7, 10, 65_535, 1_000_000, u32::MAX] {
            assert_eq!(slot_key(i), format!("sluice/b/{i}"));
        }
    }

    #[test]
    fn slots_are_created_once_and_bounded() {
        let store = MemoryStore::default();
        ensure_slots(&store, 1024).expect("created");
        let created = 1024 + 1 + OVERFLOW_SLOTS;
        assert_eq!(store.len(), created);
        ensure_slots(&store, 1024).expect("again");
        assert_eq!(store.len(), created);
        let l = limit(1);
        let mut full = 0;
        for i in 0..100_000u64 {
            let fp = crate::hash::fnv1a(&i.to_le_bytes()).min(OVERFLOW_BASE - 1);
            match take(&store, 1024, fp, Algorithm::TokenBucket, &l, 10 * S, 1) {
                Ok(_) => {}
                Err(StoreError::Full) => full += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(store.len(), created, "no key beyond the slot table");
        // 100k keys active for a second in 1024 slots: most find none.
        assert!(full > 90_000, "{full}");
    }

    #[test]
    fn a_busy_key_keeps_its_bucket_under_a_flood_of_new_keys() {
        let store = MemoryStore::default();
        ensure_slots(&store, 1024).expect("created");
        let l = limit(10);
        let hot = 42u64;
        let mut hot_allowed = 0;
        let mut t = 10 * S;
        // 200k one-off keys at 100k/s while the hot key sends 1000/s.
        for i in 0..200_000u64 {
            t += S / 100_000;
            let fp = crate::hash::fnv1a(&(i + 1_000_000).to_le_bytes()).min(OVERFLOW_BASE - 1);
            // Most of the one-off keys find every slot active: no slot.
            match take(&store, 1024, fp, Algorithm::TokenBucket, &l, t, 1) {
                Ok(_) | Err(StoreError::Full) => {}
                Err(e) => panic!("{e}"),
            }
            if i % 100 == 0 {
                hot_allowed += u64::from(take(&store, 1024, hot, Algorithm::TokenBucket, &l, t, 1).expect("hot").allowed);
            }
        }
        // 2 s of traffic: at most burst + 2 s * 10/s.
        assert!(hot_allowed <= 30, "hot key admitted {hot_allowed}");
        assert!(hot_allowed >= 20, "hot key admitted {hot_allowed}");
    }

    #[test]
    fn a_full_neighbourhood_of_active_keys_does_not_evict_the_victim() {
        let store = MemoryStore::default();
        ensure_slots(&store, 1024).expect("created");
        // 2 an hour: a spent bucket stays active for an hour.
        let l = Limit { requests: 2, per: crate::duration::Span::from_secs(3_600), burst: 2, calendar: None };
        let tb = Algorithm::TokenBucket;
        let victim = 5u64;
        assert!(take(&store, 1024, victim, tb, &l, S, 2).expect("victim").allowed);
        assert!(!take(&store, 1024, victim, tb, &l, S, 1).expect("victim").allowed, "the victim's limit is spent");
        // Keys sharing the victim's home fill its other probes, spending
        // as much (later, so the victim's bucket is the closest to idle).
        for n in 1..PROBES {
            let fp = victim + u64::from(n) * 1024;
            assert!(take(&store, 1024, fp, tb, &l, 2 * S, 2).expect("neighbour").allowed);
        }
        // One more key: every probe is active, and none is its own.
        let intruder = victim + u64::from(PROBES) * 1024;
        let r = take(&store, 1024, intruder, tb, &l, 3 * S, 1);
        assert_eq!(r.map(|o| o.allowed), Err(StoreError::Full), "no slot is taken from an active key");
        // The victim's bucket is still its own, and still spent.
        assert!(!take(&store, 1024, victim, tb, &l, 4 * S, 1).expect("victim").allowed, "the victim's bucket survived");
        // Once the victim's bucket is idle again, its slot may be reused.
        let later = 2 * 3_600 * S;
        assert!(take(&store, 1024, intruder, tb, &l, later, 1).expect("intruder").allowed);
    }

    #[test]
    fn the_secret_is_drawn_once_and_then_kept() {
        let store = MemoryStore::default();
        let first = ensure_secret(&store, [1; 16]).expect("secret");
        assert_eq!(first, SlotSecret([1; 16]));
        assert_eq!(ensure_secret(&store, [2; 16]).expect("secret"), first, "a later root reads the first one's");
        // A malformed value is replaced.
        let broken = MemoryStore::default();
        broken.set(SECRET_KEY, b"short", 0).expect("set");
        assert_eq!(ensure_secret(&broken, [3; 16]).expect("secret"), SlotSecret([3; 16]));
    }

    #[test]
    fn overflow_buckets_are_shared_per_rule_and_created_with_the_slots() {
        let store = MemoryStore::default();
        ensure_slots(&store, 1024).expect("created");
        let l = limit(2);
        let tb = Algorithm::TokenBucket;
        let (rule_0, rule_1) = (overflow_fingerprint(0), overflow_fingerprint(1));
        assert!(take(&store, 1024, rule_0, tb, &l, S, 2).expect("overflow").allowed);
        assert!(!take(&store, 1024, rule_0, tb, &l, S, 1).expect("overflow").allowed, "one bucket for every overflowing key of the rule");
        assert!(take(&store, 1024, rule_1, tb, &l, S, 1).expect("overflow").allowed, "another rule's is its own");
        assert_eq!(store.len(), 1024 + 1 + OVERFLOW_SLOTS, "no key created at request time");
    }

    #[test]
    fn colliding_keys_do_not_share_a_bucket() {
        let store = MemoryStore::default();
        ensure_slots(&store, 1024).expect("created");
        let l = limit(1);
        // Same home slot, different fingerprints.
        let (a, b) = (5u64, 5u64 + 1024);
        assert!(take(&store, 1024, a, Algorithm::TokenBucket, &l, S, 1).expect("a").allowed);
        assert!(take(&store, 1024, b, Algorithm::TokenBucket, &l, S, 1).expect("b").allowed);
        assert!(!take(&store, 1024, a, Algorithm::TokenBucket, &l, S, 1).expect("a").allowed);
        assert!(!take(&store, 1024, b, Algorithm::TokenBucket, &l, S, 1).expect("b").allowed);
    }

    #[test]
    fn a_bucket_and_the_lease_beside_it_keep_each_other_through_updates() {
        let store = MemoryStore::default();
        ensure_slots(&store, 1024).expect("created");
        let (l, tb, fp) = (limit(10), Algorithm::TokenBucket, 9u64);
        let lease = Lease { window: 1, units: 5, ends_at: 2 * S, ..Lease::default() };
        assert!(take(&store, 1024, fp, tb, &l, S, 1).expect("take").allowed);
        lease_update(&store, 1024, fp, &l, S, |_| ((), Some(lease))).expect("lease");
        assert!(take(&store, 1024, fp, tb, &l, S, 1).expect("take").allowed);
        assert_eq!(lease_update(&store, 1024, fp, &l, S, |x| (x, None)).expect("lease"), lease, "a bucket's take keeps the lease");
        assert_eq!(peek(&store, 1024, fp, tb, &l, S, 1).expect("peek").remaining, 7, "the lease's update kept both takes");
        let used = (0..1024).filter(|i| store.get(&slot_key(*i)).ok().flatten().is_some_and(|(b, _)| Slot::decode(&b).0 == fp)).count();
        assert_eq!(used, 1, "one slot for both");
    }

    #[test]
    fn a_slot_whose_lease_runs_is_not_taken_over_and_a_new_key_starts_without_it() {
        let store = MemoryStore::default();
        ensure_slots(&store, 1).expect("created");
        let l = limit(10);
        let lease = Lease { window: 1, units: 5, ends_at: 2 * S, ..Lease::default() };
        // The key's lease, its bucket long idle (never written).
        lease_update(&store, 1, 5, &l, S, |_| ((), Some(lease))).expect("lease");
        assert_eq!(take(&store, 1, 6, Algorithm::TokenBucket, &l, S, 1), Err(StoreError::Full), "the lease's window runs");
        assert!(take(&store, 1, 6, Algorithm::TokenBucket, &l, 3 * S, 1).expect("taken over").allowed, "its window over");
        assert_eq!(lease_update(&store, 1, 6, &l, 3 * S, |x| (x, None)).expect("lease"), Lease::default(), "nothing inherited");
    }

    /// A store whose value changes behind the caller's back `n` times.
    struct Racy {
        inner: MemoryStore,
        races: std::cell::Cell<u32>,
        /// Rewrite the same bytes instead of spending a unit.
        touch_only: bool,
    }
    impl SharedStore for Racy {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
            if self.races.get() > 0 {
                self.races.set(self.races.get() - 1);
                // Another worker spends a unit first.
                let (bytes, c) = self.inner.get(key)?.unwrap_or_default();
                let (fp, s) = State::decode(&bytes);
                let fp = if fp == 0 { 7 } else { fp };
                let spent = if self.touch_only { s } else { s.take(Algorithm::TokenBucket, &limit(3), S, 1).1.unwrap_or(s) };
                self.inner.set(key, &spent.encode(fp), c)?;
            }
            self.inner.set(key, value, cas)
        }
    }

    #[test]
    fn concurrent_writers_are_never_lost() {
        let store = Racy { inner: MemoryStore::default(), races: std::cell::Cell::new(2), touch_only: false };
        ensure_slots(&store.inner, 1024).expect("created");
        let l = limit(3);
        // Our take retries past two concurrent spends: 3 units, 3 spent.
        assert!(take(&store, 1024, 7, Algorithm::TokenBucket, &l, S, 1).expect("take").allowed);
        assert!(!take(&store, 1024, 7, Algorithm::TokenBucket, &l, S, 1).expect("take").allowed);
        let endless = Racy { inner: MemoryStore::default(), races: std::cell::Cell::new(1000), touch_only: true };
        ensure_slots(&endless.inner, 1024).expect("created");
        assert_eq!(take(&endless, 1024, 7, Algorithm::TokenBucket, &l, S, 1), Err(StoreError::Contended));
    }

    #[test]
    fn peek_spends_nothing_and_refund_gives_back() {
        let store = MemoryStore::default();
        ensure_slots(&store, 1024).expect("created");
        let l = limit(1);
        assert!(peek(&store, 1024, 9, Algorithm::TokenBucket, &l, S, 1).expect("peek").allowed);
        assert!(take(&store, 1024, 9, Algorithm::TokenBucket, &l, S, 1).expect("take").allowed);
        assert!(!peek(&store, 1024, 9, Algorithm::TokenBucket, &l, S, 1).expect("peek").allowed);
        refund(&store, 1024, 9, Algorithm::TokenBucket, &l, S, 1).expect("refund");
        assert!(take(&store, 1024, 9, Algorithm::TokenBucket, &l, S, 1).expect("take").allowed);
    }
}
