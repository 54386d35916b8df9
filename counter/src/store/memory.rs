//! [`MemoryStore`]: counters in a process-local map, for a single counter
//! instance without Redis (and for tests). Time is the process wall clock.
//!
//! Entries past their expiry (see [`window::expires_at_ms`]) read as absent and
//! are swept out every few thousand writes, so memory follows the set of
//! counters in use rather than every counter ever seen.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{BoxFuture, CounterStore, Lease, Reserved, StoreError};
use crate::window::{self, Ask, Slot};

/// Writes between two sweeps of expired entries.
const SWEEP_EVERY: u64 = 4096;

/// Counters in memory.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    counters: HashMap<String, (Slot, u64)>,
    writes: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Number of entries held (expired ones included until the next sweep).
    pub fn len(&self) -> usize {
        self.lock().counters.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written entry
        // (each insert is one statement), so a poisoned map is still sound.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn apply(&self, leases: &[Lease], now_ms: u64) -> Vec<Reserved> {
        let mut inner = self.lock();
        let results = leases
            .iter()
            .map(|lease| {
                let slot = inner
                    .counters
                    .get(&lease.key)
                    .filter(|(_, expires)| *expires > now_ms)
                    .map(|(slot, _)| *slot);
                let ask = Ask {
                    now_ms,
                    window_ms: lease.window_ms,
                    limit: lease.limit,
                    want: lease.want,
                    next: lease.next,
                };
                let (changed, outcome) = window::reserve(slot, &ask);
                if let Some(slot) = changed {
                    let expires = window::expires_at_ms(&slot, lease.window_ms);
                    inner.counters.insert(lease.key.clone(), (slot, expires));
                    inner.writes += 1;
                }
                Reserved {
                    granted: outcome.granted,
                    used: outcome.used,
                    window: outcome.window,
                    now_ms,
                }
            })
            .collect();
        if inner.writes >= SWEEP_EVERY {
            inner.writes = 0;
            inner.counters.retain(|_, (_, expires)| *expires > now_ms);
        }
        results
    }
}

/// Wall-clock milliseconds since the epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl CounterStore for MemoryStore {
    fn reserve<'a>(
        &'a self,
        leases: &'a [Lease],
    ) -> BoxFuture<'a, Result<Vec<Reserved>, StoreError>> {
        Box::pin(async move { Ok(self.apply(leases, now_ms())) })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_entries_read_as_absent_and_are_swept() {
        let store = MemoryStore::new();
        let lease = |key: String| Lease {
            key,
            limit: 1,
            window_ms: 10,
            want: 1,
            next: false,
        };
        let first = store.apply(&[lease("a".into())], 1_000_000);
        assert_eq!(first[0].granted, 1);
        // Margin is 1 s: still there 1 s after the window, gone after.
        assert_eq!(store.apply(&[lease("a".into())], 1_000_005)[0].granted, 0);
        assert_eq!(store.apply(&[lease("a".into())], 1_001_010)[0].granted, 1);
        let batch = |tag: &str| -> Vec<Lease> {
            (0..SWEEP_EVERY)
                .map(|i| lease(format!("{tag}{i}")))
                .collect()
        };
        store.apply(&batch("old"), 2_000_000);
        store.apply(&batch("new"), 3_000_000);
        let count = usize::try_from(SWEEP_EVERY).expect("small");
        assert_eq!(store.len(), count, "the sweep drops the expired batch");
        assert!(!store.is_empty());
    }
}
