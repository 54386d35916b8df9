//! [`MemoryStore`]: counters and upstream blocks in process-local maps, for a
//! single counter instance without Redis (and for tests). Time is the process
//! wall clock.
//!
//! Entries past their expiry (see [`window::expires_at_ms`]; a block at its
//! end) read as absent and are swept out every few thousand writes, so memory
//! follows the set of counters and blocks in use rather than every one ever
//! seen.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Block, Blocked, BoxFuture, CounterStore, Lease, Reserved, StoreError};
use crate::window::{self, Ask, Release, Slot};

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
    /// Block key → when the block ends (ms since the epoch).
    blocks: HashMap<String, u64>,
    writes: u64,
}

impl Inner {
    /// When the block on `key` ends, if it still holds at `now_ms`.
    fn block_until(&self, key: &str, now_ms: u64) -> Option<u64> {
        self.blocks
            .get(key)
            .copied()
            .filter(|until| *until > now_ms)
    }

    /// Drops expired entries once enough writes have happened.
    fn maybe_sweep(&mut self, now_ms: u64) {
        if self.writes >= SWEEP_EVERY {
            self.writes = 0;
            self.counters.retain(|_, (_, expires)| *expires > now_ms);
            self.blocks.retain(|_, until| *until > now_ms);
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Number of entries held, counters and blocks (expired ones included
    /// until the next sweep).
    pub fn len(&self) -> usize {
        let inner = self.lock();
        inner.counters.len() + inner.blocks.len()
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
                let blocked_ms =
                    window::blocked_ms(inner.block_until(&lease.block_key, now_ms), now_ms);
                let slot = inner
                    .counters
                    .get(&lease.key)
                    .filter(|(_, expires)| *expires > now_ms)
                    .map(|(slot, _)| *slot);
                let (changed, outcome) = if lease.release > 0 {
                    let release = Release {
                        now_ms,
                        window_ms: lease.window_ms,
                        calendar: lease.calendar,
                        units: lease.release,
                        from: lease.from,
                        windows: lease.windows,
                    };
                    window::release(slot, &release)
                } else {
                    let ask = Ask {
                        now_ms,
                        window_ms: lease.window_ms,
                        calendar: lease.calendar,
                        limit: lease.limit,
                        want: if blocked_ms > 0 { 0 } else { lease.want },
                        next: lease.next,
                    };
                    window::reserve_span(slot, &ask, lease.windows)
                };
                if let Some(slot) = changed {
                    let expires = window::expires_at_ms(&slot, lease.window_ms, lease.calendar);
                    inner.counters.insert(lease.key.clone(), (slot, expires));
                    inner.writes += 1;
                }
                Reserved {
                    granted: outcome.granted,
                    used: outcome.used,
                    window: outcome.window,
                    now_ms,
                    blocked_ms,
                    current_used: outcome.current,
                }
            })
            .collect();
        inner.maybe_sweep(now_ms);
        results
    }

    fn apply_blocks(&self, blocks: &[Block], now_ms: u64) -> Vec<Blocked> {
        let mut inner = self.lock();
        let results = blocks
            .iter()
            .map(|block| {
                let current = inner.block_until(&block.key, now_ms);
                let until = window::block_until(current, now_ms, block.for_ms);
                if current != Some(until) {
                    inner.blocks.insert(block.key.clone(), until);
                    inner.writes += 1;
                }
                Blocked {
                    blocked_ms: window::blocked_ms(Some(until), now_ms),
                    now_ms,
                }
            })
            .collect();
        inner.maybe_sweep(now_ms);
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

    fn block<'a>(&'a self, blocks: &'a [Block]) -> BoxFuture<'a, Result<Vec<Blocked>, StoreError>> {
        Box::pin(async move { Ok(self.apply_blocks(blocks, now_ms())) })
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
            block_key: format!("{key}:block"),
            key,
            limit: 1,
            window_ms: 10,
            calendar: None,
            want: 1,
            next: false,
            windows: 1,
            release: 0,
            from: 0,
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

    #[test]
    fn blocks_hold_grow_and_are_swept() {
        let store = MemoryStore::new();
        let lease = |want: u64| Lease {
            key: "c".into(),
            block_key: "b".into(),
            limit: 10,
            window_ms: 60_000,
            calendar: None,
            want,
            next: false,
            windows: 1,
            release: 0,
            from: 0,
        };
        let block = |for_ms: u64| Block {
            key: "b".into(),
            for_ms,
        };
        let t = 6_000_000;
        assert_eq!(store.apply(&[lease(2)], t)[0].granted, 2);
        assert_eq!(store.apply_blocks(&[block(300)], t)[0].blocked_ms, 300);
        let r = store.apply(&[lease(2)], t + 100)[0];
        assert_eq!((r.granted, r.used, r.blocked_ms), (0, 2, 200));
        let b = store.apply_blocks(&[block(50)], t + 100)[0];
        assert_eq!(b.blocked_ms, 200, "a shorter block does not shorten it");
        let b = store.apply_blocks(&[block(500)], t + 100)[0];
        assert_eq!(b.blocked_ms, 500, "a longer one lengthens it");
        let r = store.apply(&[lease(2)], t + 600)[0];
        assert_eq!((r.granted, r.used, r.blocked_ms), (2, 4, 0));
        let batch = |tag: &str| -> Vec<Block> {
            (0..SWEEP_EVERY)
                .map(|i| Block {
                    key: format!("{tag}{i}"),
                    for_ms: 10,
                })
                .collect()
        };
        store.apply_blocks(&batch("old"), t + 1_000);
        store.apply_blocks(&batch("new"), t + 2_000);
        let count = usize::try_from(SWEEP_EVERY).expect("small");
        assert_eq!(
            store.len(),
            count + 1,
            "expired blocks are swept, not the counter"
        );
    }
}
