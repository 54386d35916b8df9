//! Tokens a worker takes ahead from a key's shared bucket and spends from
//! its own memory, so that a busy key far from its limit costs most of its
//! requests no shared-data crossing at all.
//!
//! Only local token-bucket rules without queue, priority classes or an
//! adaptive limit take ahead (GCRA: taking `n` tokens at once is exactly
//! `n` requests at that instant), and only with a capacity (burst) of at
//! least [`MIN_CAPACITY`]. A worker whose take leaves the bucket with at
//! least half its capacity after the batch takes [`hold`] more tokens than
//! the request costs (`capacity / 16`) and keeps them for [`lifetime`]
//! (`per / 16`). Nearer the limit every request reads and writes the
//! shared bucket itself, as without batching. The bounds, with `W` workers
//! (Envoy's `--concurrency`) and `h = capacity / 16`:
//!
//! - a worker holds at most `h` tokens of a key, for at most `per / 16`;
//! - other workers may see up to `(W - 1) × h` fewer tokens than are
//!   unspent (temporary under-admission): tokens still held when their
//!   time is up go back to the bucket with the worker's next take of that
//!   key, in the same compare-and-swap; a worker that never sees the key
//!   again lets them lapse, which the bucket refills like spent ones
//!   (within `h / rate`, at most `per / 16`);
//! - a token spent up to `per / 16` after it was taken can admit, in any
//!   interval, at most `W × h` requests more than the strict bucket would
//!   (the tokens taken just before the interval and spent in it).
//!
//! So a limit of 5 a second (capacity under 32) is exact; one of 1000 a
//! second is within 62 requests per worker of exact, and only while the
//! key has more than half of its burst left.

use std::collections::HashMap;

use crate::bucket::{Outcome, State};
use crate::policy::{Algorithm, Limit};
use crate::store::{self, Note, SharedStore, StoreError};

/// The least capacity (burst) that takes tokens ahead: below it every
/// request spends from the shared bucket.
pub const MIN_CAPACITY: u64 = 32;
/// The most keys a worker holds tokens for; past it, no new ones.
pub const MAX_KEYS: usize = 4096;

/// What a worker holds of one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Grant {
    /// Tokens left to spend.
    left: u64,
    /// Spendable until (wall-clock ns).
    until: u64,
    /// The shared bucket's remaining tokens when they were taken.
    remaining: u64,
    /// When the shared bucket was to be full again (wall-clock ns).
    reset_at: u64,
}

/// One worker's tokens taken ahead, by key fingerprint.
#[derive(Debug, Default)]
pub struct WorkerTokens {
    grants: HashMap<u64, Grant>,
}

/// How many tokens a worker takes ahead of a key with `limit`.
pub fn hold(limit: &Limit) -> u64 {
    if limit.burst < MIN_CAPACITY {
        0
    } else {
        limit.burst / 16
    }
}

/// How long a worker may spend tokens it took ahead.
pub fn lifetime(limit: &Limit) -> u64 {
    limit.per.nanos() / 16
}

impl WorkerTokens {
    /// Tokens held for the key `fp` (spendable or not).
    pub fn held(&self, fp: u64) -> u64 {
        self.grants.get(&fp).map_or(0, |g| g.left)
    }

    /// Tokens held for every key.
    pub fn total(&self) -> u64 {
        self.grants.values().map(|g| g.left).fold(0, u64::saturating_add)
    }

    /// Spends `cost` from what is held for `fp`, when that is enough and
    /// still in time.
    fn spend(&mut self, fp: u64, cost: u64, now: u64) -> Option<Outcome> {
        let g = self.grants.get_mut(&fp).filter(|g| now < g.until && g.left >= cost)?;
        g.left = g.left.saturating_sub(cost);
        let remaining = g.remaining.saturating_add(g.left);
        Some(Outcome { allowed: true, remaining, reset_ns: g.reset_at.saturating_sub(now), retry_after_ns: 0 })
    }

    /// Forgets what was taken for keys whose time is up, when the map is
    /// full: their tokens lapse (the bucket refills them).
    fn make_room(&mut self, now: u64) -> bool {
        if self.grants.len() >= MAX_KEYS {
            self.grants.retain(|_, g| now < g.until);
        }
        self.grants.len() < MAX_KEYS
    }
}

/// Takes `cost` tokens for the key `fp` of a local token-bucket rule: from
/// the worker's own tokens when it holds enough, else from the shared
/// bucket in one compare-and-swap that gives back what the worker held and
/// may take [`hold`] more ahead (see the module docs).
pub fn take(
    tokens: &mut WorkerTokens,
    store: &dyn SharedStore,
    slots: u32,
    fp: u64,
    limit: &Limit,
    now: u64,
    cost: u64,
) -> Result<(Outcome, Option<Note>), StoreError> {
    if let Some(o) = tokens.spend(fp, cost, now) {
        return Ok((o, None));
    }
    let back = tokens.grants.remove(&fp).map_or(0, |g| g.left);
    let extra = if tokens.make_room(now) { hold(limit) } else { 0 };
    let alg = Algorithm::TokenBucket;
    let (o, note, ahead) = store::cas_update_flagged(store, slots, fp, limit, now, |s, flags| {
        let refunded = back > 0 && s != State::Empty;
        let s = if refunded { s.refund(alg, limit, now, back) } else { s };
        let (mut o, mut next) = s.take(alg, limit, now, cost);
        let mut ahead = 0;
        if o.allowed && extra > 0 && o.remaining >= (limit.burst / 2).saturating_add(extra) {
            if let (o2, Some(n2)) = s.take(alg, limit, now, cost.saturating_add(extra)) {
                // What the instance has left counts what this worker holds.
                (o, next, ahead) = (Outcome { remaining: o2.remaining.saturating_add(extra), ..o2 }, Some(n2), extra);
            }
        }
        let (f, note) = store::noted(&o, limit.burst, flags);
        let write = next.or((f != flags || refunded).then_some(s)).map(|n| (n, f));
        ((o, note, ahead), write)
    })?;
    if ahead > 0 {
        let until = now.saturating_add(lifetime(limit));
        let g = Grant { left: ahead, until, remaining: o.remaining.saturating_sub(ahead), reset_at: now.saturating_add(o.reset_ns) };
        tokens.grants.insert(fp, g);
    }
    Ok((o, note))
}
