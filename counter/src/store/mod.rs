//! The storage boundary: the [`CounterStore`] trait every backend implements,
//! the per-counter request and result types it speaks, and its error type.
//!
//! A store applies each [`Lease`] atomically on its own (see
//! [`window::reserve_span`](crate::window::reserve_span) and
//! [`window::release`](crate::window::release)); leases of one call are
//! independent of each other and may run concurrently. Likewise a store
//! records each [`Block`] atomically on its own.

mod error;
mod memory;
mod redis;
mod script;

use std::future::Future;
use std::pin::Pin;

pub use error::StoreError;
pub use memory::MemoryStore;
pub use redis::{RedisStore, RedisTarget};

/// A boxed, sendable future (the trait is used as `dyn CounterStore`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One reservation against one counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Counter key, see [`keys`](crate::keys).
    pub key: String,
    /// Key of the upstream block of the counter's rule and id, see
    /// [`keys::block_key`](crate::keys::block_key); while it holds, the lease
    /// grants nothing.
    pub block_key: String,
    /// Units allowed per window.
    pub limit: u64,
    /// Window length in milliseconds (with a calendar, its longest window).
    pub window_ms: u64,
    /// Calendar windows (days or months) instead of `window_ms` ones.
    pub calendar: Option<crate::window::Calendar>,
    /// Units wanted; 0 only reads.
    pub want: u64,
    /// Reserve in the window that starts next.
    pub next: bool,
    /// Number of consecutive windows covered, from the target window (or
    /// from `from` for a release): 1..=[`MAX_WINDOWS`](crate::window::MAX_WINDOWS).
    pub windows: u64,
    /// Units given back in each of the `windows` windows from `from`; when
    /// non-zero the lease is a release (see
    /// [`window::release`](crate::window::release)), with `want` 0 and
    /// `next` false.
    pub release: u64,
    /// Index of the first window of a release (unused otherwise).
    pub from: u64,
}

/// What a store did for one [`Lease`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reserved {
    /// Units granted in each window covered (0 for a release).
    pub granted: u64,
    /// Units reserved afterwards: the largest count among the windows
    /// covered; for a release, the current window's count.
    pub used: u64,
    /// Index of the target window; for a release, the current window.
    pub window: u64,
    /// The store's clock when it applied the lease (ms since the epoch).
    pub now_ms: u64,
    /// Ms the key's upstream block still holds (0: not blocked).
    pub blocked_ms: u64,
    /// Units reserved in the current window after this lease.
    pub current_used: u64,
}

/// One upstream block of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// Block key, see [`keys::block_key`](crate::keys::block_key).
    pub key: String,
    /// Block for this many ms from the store's clock (a longer block already
    /// in place stays).
    pub for_ms: u64,
}

/// What a store did for one [`Block`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocked {
    /// Ms the key stays blocked after this call.
    pub blocked_ms: u64,
    /// The store's clock when it applied the block (ms since the epoch).
    pub now_ms: u64,
}

/// A place where counters live.
pub trait CounterStore: Send + Sync + 'static {
    /// Applies every lease (each atomically) and returns results in order.
    /// Either every lease is reported or the call fails; on failure some leases
    /// may still have been applied (their units are lost, never over-granted).
    fn reserve<'a>(
        &'a self,
        leases: &'a [Lease],
    ) -> BoxFuture<'a, Result<Vec<Reserved>, StoreError>>;

    /// Records every block (each atomically): the key is blocked until the
    /// store's clock plus `for_ms`, unless it is already blocked for longer.
    /// Returns results in order. On failure some blocks may have been applied.
    fn block<'a>(&'a self, blocks: &'a [Block]) -> BoxFuture<'a, Result<Vec<Blocked>, StoreError>>;

    /// Whether the store answers (Redis `PING`).
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Short description for logs, such as `memory` or `redis cluster`.
    fn describe(&self) -> String;
}
