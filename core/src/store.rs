//! The slot table: every bucket of every rule lives in one of a fixed number
//! of shared-data slots, so memory is bounded by the policy's `slots` however
//! many keys clients invent.
//!
//! Slot key format: `sluice/b/<index>` for `index` in `0..slots`, each value
//! an encoded bucket or lease (see `bucket`). `sluice/slots` records how many
//! slots exist. A bucket's address is its key hash modulo `slots`; the full
//! 64-bit hash is stored beside the state as a fingerprint, so collisions are
//! detected. A key probes [`PROBES`] consecutive slots: its own bucket if
//! one carries its fingerprint, else a slot whose bucket is idle (as good as
//! empty), else the one closest to idle, which it takes over. Taking over a
//! busy slot forgets at most that bucket's remaining debt.
//!
//! Every write is a compare-and-swap through [`cas_update`]; Envoy's shared
//! data is one map behind a mutex, shared by all workers of the instance.

use std::num::{NonZeroU32, NonZeroU64};

use crate::bucket::State;
use crate::lease::Lease;
use crate::policy::{Algorithm, Limit};

/// Consecutive slots a key may live in.
pub const PROBES: u32 = 4;
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
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::CasMismatch => write!(f, "shared data changed during the update"),
            StoreError::Contended => write!(f, "shared data stayed contended for {CAS_ATTEMPTS} attempts"),
            StoreError::Host(m) => write!(f, "shared data: {m}"),
        }
    }
}

/// Envoy's shared data as the core sees it (proxy-wasm in the filter, a map
/// in tests). `cas` 0 writes unconditionally.
pub trait SharedStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError>;
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError>;
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
        Some((v, _)) => crate::le::u32_at(&v, 0).unwrap_or(0),
        None => 0,
    };
    if existing >= slots {
        return Ok(());
    }
    let empty = State::Empty.encode(0);
    for i in existing..slots {
        let key = slot_key(i);
        if store.get(&key)?.is_none() {
            store.set(&key, &empty, 0)?;
        }
    }
    store.set(SLOT_COUNT_KEY, &slots.to_le_bytes(), 0)
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

/// A bucket found for a key: where it is and what it holds.
#[derive(Clone, Debug)]
pub struct Found {
    pub key: String,
    pub cas: u32,
    pub state: State,
    /// Flags about the key (`FLAG_*`).
    pub flags: u8,
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
fn noted(o: &crate::bucket::Outcome, capacity: u64, flags: u8) -> (u8, Option<Note>) {
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
fn capacity(algorithm: Algorithm, limit: &Limit) -> u64 {
    if algorithm == Algorithm::TokenBucket { limit.burst } else { limit.requests }
}

/// Finds the slot for the key hashed to `fingerprint` (see the module docs).
pub fn locate(store: &dyn SharedStore, slots: u32, fingerprint: u64, limit: &Limit, now: u64) -> Result<Found, StoreError> {
    let slots = NonZeroU32::new(slots).unwrap_or(NonZeroU32::MIN);
    // Below `slots`, so the cast keeps every bit.
    let home = (fingerprint % NonZeroU64::from(slots)) as u32;
    let mut best: Option<(u64, Found)> = None;
    for probe in 0..PROBES.min(slots.get()) {
        let key = slot_key(home.saturating_add(probe) % slots);
        let (bytes, cas) = store.get(&key)?.unwrap_or_default();
        let (fp, state) = State::decode(&bytes);
        if fp == fingerprint {
            return Ok(Found { key, cas, state, flags: State::flags(&bytes) });
        }
        let idle_in = if fp == 0 { 0 } else { state.idle_in(limit, now) };
        if best.as_ref().is_none_or(|(b, _)| idle_in < *b) {
            best = Some((idle_in, Found { key, cas, state: State::Empty, flags: 0 }));
        }
    }
    best.map(|(_, f)| f).ok_or_else(|| StoreError::Host("no slots".into()))
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

/// Like `cas_update`, with the key's flags read and written too.
pub fn cas_update_flagged<T>(
    store: &dyn SharedStore,
    slots: u32,
    fingerprint: u64,
    limit: &Limit,
    now: u64,
    mut f: impl FnMut(State, u8) -> (T, Option<(State, u8)>),
) -> Result<T, StoreError> {
    for _ in 0..CAS_ATTEMPTS {
        let found = locate(store, slots, fingerprint, limit, now)?;
        let (answer, next) = f(found.state, found.flags);
        let Some((next, flags)) = next else {
            return Ok(answer);
        };
        let flags = if matches!(next, State::Lease(_)) { 0 } else { flags };
        match store.set(&found.key, &next.encode_flagged(fingerprint, flags), found.cas) {
            Ok(()) => return Ok(answer),
            Err(StoreError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Contended)
}

/// Takes `cost` units from the key's bucket.
pub fn take(store: &dyn SharedStore, slots: u32, fingerprint: u64, algorithm: Algorithm, limit: &Limit, now: u64, cost: u64) -> Result<crate::bucket::Outcome, StoreError> {
    cas_update(store, slots, fingerprint, limit, now, |s| s.take(algorithm, limit, now, cost))
}

/// Like `take`, noting what the outcome means for the key (see `Note`);
/// a rejection episode's first refusal writes its flag.
pub fn take_noting(store: &dyn SharedStore, slots: u32, fingerprint: u64, algorithm: Algorithm, limit: &Limit, now: u64, cost: u64) -> Result<(crate::bucket::Outcome, Option<Note>), StoreError> {
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
pub fn take_leaving(store: &dyn SharedStore, slots: u32, fingerprint: u64, limit: &Limit, now: u64, cost: u64, reserve: u64) -> Result<crate::bucket::Outcome, StoreError> {
    cas_update(store, slots, fingerprint, limit, now, |s| s.take_leaving(limit, now, cost, reserve))
}

/// The outcome `take` would have, without spending anything.
pub fn peek(store: &dyn SharedStore, slots: u32, fingerprint: u64, algorithm: Algorithm, limit: &Limit, now: u64, cost: u64) -> Result<crate::bucket::Outcome, StoreError> {
    let found = locate(store, slots, fingerprint, limit, now)?;
    Ok(found.state.take(algorithm, limit, now, cost).0)
}

/// Gives back units taken by a request that ended up denied.
pub fn refund(store: &dyn SharedStore, slots: u32, fingerprint: u64, algorithm: Algorithm, limit: &Limit, now: u64, cost: u64) -> Result<(), StoreError> {
    cas_update(store, slots, fingerprint, limit, now, |s| ((), (s != State::Empty).then(|| s.refund(algorithm, limit, now, cost))))
}

/// Updates the lease of the key hashed to `fingerprint` (see `lease`).
pub fn lease_update<T>(
    store: &dyn SharedStore,
    slots: u32,
    fingerprint: u64,
    limit: &Limit,
    now: u64,
    mut f: impl FnMut(Lease) -> (T, Option<Lease>),
) -> Result<T, StoreError> {
    cas_update(store, slots, fingerprint, limit, now, |s| {
        let lease = match s {
            State::Lease(l) => l,
            _ => Lease::default(),
        };
        let (answer, next) = f(lease);
        (answer, next.map(State::Lease))
    })
}

/// An in-memory `SharedStore` with Envoy's semantics (CAS tokens, first
/// write unconditional), for tests and for `make simulate`.
#[derive(Default)]
pub struct MemoryStore {
    map: std::cell::RefCell<std::collections::HashMap<String, (Vec<u8>, u32)>>,
    next_cas: std::cell::Cell<u32>,
}

impl MemoryStore {
    pub fn len(&self) -> usize {
        self.map.borrow().len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        Ok(self.map.borrow().get(key).cloned())
    }
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
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
        assert_eq!(store.len(), 1025);
        ensure_slots(&store, 1024).expect("again");
        assert_eq!(store.len(), 1025);
        let l = limit(1);
        for i in 0..100_000u64 {
            let fp = crate::hash::fnv1a(&i.to_le_bytes());
            take(&store, 1024, fp, Algorithm::TokenBucket, &l, 10 * S, 1).expect("take");
        }
        assert_eq!(store.len(), 1025, "no key beyond the slot table");
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
            let fp = crate::hash::fnv1a(&(i + 1_000_000).to_le_bytes());
            take(&store, 1024, fp, Algorithm::TokenBucket, &l, t, 1).expect("take");
            if i % 100 == 0 {
                hot_allowed += u64::from(take(&store, 1024, hot, Algorithm::TokenBucket, &l, t, 1).expect("hot").allowed);
            }
        }
        // 2 s of traffic: at most burst + 2 s * 10/s.
        assert!(hot_allowed <= 30, "hot key admitted {hot_allowed}");
        assert!(hot_allowed >= 20, "hot key admitted {hot_allowed}");
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
