//! Worker allowances: a worker spends a busy key's units from its own
//! memory, without crossing into Envoy's shared data for each request,
//! while the key is far from its limit.
//!
//! Every decision on a token bucket reads the key's slot and writes it back
//! (two hostcalls and an allocation callback, about 3 µs of Envoy's CPU).
//! When the worker decided the key within the last [`SPEND_WITHIN_NS`]
//! already (never on a key's first request: one-off keys reserve nothing)
//! and the slot shows the key with more than half its burst left after a
//! request, the worker also *reserves* a share of the burst for itself
//! (`burst / 16` units, see [`share`]) in the same compare-and-swap. The
//! slot records reserved units beside the bucket ([`Reserved`]: how many,
//! and until when), and every other decision on the key counts them as
//! spent. The worker then admits the key's next requests from its share,
//! in memory, for at most [`SPEND_WITHIN_NS`]; then, or when the share is
//! used up, its next decision on the key (or its tick) *settles*: the
//! units it admitted are written into the bucket and the reservation is
//! released, in the compare-and-swap of that decision. A share the tick
//! finds unused is dropped without a write: its reservation lapses.
//!
//! Why this never admits more than the bucket allows: a reserved unit is
//! out of everybody else's reach from the moment it is reserved (the slot
//! counts it as spent), and the reservation is only granted while at least
//! half the burst is left besides it. The units a worker admitted reach the
//! bucket when it settles, as if they had all been admitted then (or
//! exactly as admitted, when nobody else wrote the bucket meanwhile): never
//! earlier than they were, so the bucket refills no sooner than it would
//! have. What it costs: while a key is near its limit, units other workers
//! reserved but did not use are out of reach until they settle, at most
//! `burst / 16` per worker, for at most [`SPEND_WITHIN_NS`] (250 ms) and
//! [`LIFE_NS`] (500 ms) if the worker is late. Limits with a burst
//! under 32 get no share (`burst / 16` would be under 2): they stay exact
//! request by request.
//!
//! A reservation lapses at [`LIFE_NS`] whatever happens to its worker (a
//! VM restart, a reload): the slot then stops counting it. A worker stops
//! spending [`LIFE_NS`] − [`SPEND_WITHIN_NS`] (250 ms) before that and
//! settles on its next tick (every 100 ms at most), so its units are in
//! the bucket before the reservation lapses. A worker that loses its
//! memory (a VM restart) loses the units it admitted but did not settle:
//! at most one share per key it held.
//!
//! What an admitted request is told it has left (`X-RateLimit-Remaining`)
//! leaves the other workers' reservations out: it is the bucket as of the
//! worker's last settlement, with the worker's own requests since. It is
//! exact with one worker, and otherwise overstates by what other workers
//! admitted from their shares and have not settled yet (at most a share
//! each, for at most 250 ms); counting their whole reservations instead
//! would understate by a share per worker at once, as soon as a key is
//! busy on two workers. The decision itself always counts them.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::bucket::{mul_div, Outcome, State};
use crate::policy::{Algorithm, Limit, Rule};
use crate::store::{self, SharedStore, StoreError};

mod lease;
mod refusals;
mod take;
pub(crate) use lease::Loan;
pub use lease::{lease_eligible, loan_size};
pub use refusals::{MAX_REFUSED_KEYS, REFUSED_FOR_NS};
pub use take::take_noting;
pub(crate) use take::Taking;

/// How long a reservation counts in its slot.
pub const LIFE_NS: u64 = 500_000_000;
/// How long after reserving a worker spends from its share.
pub const SPEND_WITHIN_NS: u64 = 250_000_000;
/// A share is this fraction of the burst.
pub const SHARE_DIVISOR: u64 = 16;
/// The smallest share worth reserving: smaller limits stay exact.
pub const MIN_SHARE: u64 = 2;
/// Keys a worker holds shares of at most; past it, no new share.
pub const MAX_HELD_KEYS: usize = 4096;
/// Keys a worker remembers having decided lately, at most.
pub const MAX_SEEN_KEYS: usize = 8192;

const NS_PER_MS: u64 = 1_000_000;

/// Units workers have reserved from a token bucket, and until when the
/// latest of them counts (milliseconds since the epoch, modulo 2^32).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reserved {
    pub units: u32,
    pub until_ms: u32,
}

/// Milliseconds since the epoch, modulo 2^32 (wraps every 49 days; only
/// compared over spans of seconds).
fn ms(ns: u64) -> u32 {
    // Keeps the low 32 bits on purpose.
    (ns / NS_PER_MS) as u32
}

/// `a` is after `b` (within 24 days either way).
fn later(a: u32, b: u32) -> bool {
    // The wrapping difference read as signed: positive when `a` is ahead.
    (a.wrapping_sub(b) as i32) > 0
}

impl Reserved {
    /// The units still reserved at `now` (0 once the latest has lapsed).
    pub fn live(self, now: u64) -> u64 {
        if self.units > 0 && later(self.until_ms, ms(now)) {
            u64::from(self.units)
        } else {
            0
        }
    }

    /// With `units` more, reserved until `now + LIFE_NS` at least.
    fn adding(self, units: u64, now: u64) -> Reserved {
        let live = self.live(now);
        let until = ms(now.saturating_add(LIFE_NS));
        let until_ms = if live > 0 && later(self.until_ms, until) { self.until_ms } else { until };
        Reserved { units: u32::try_from(live.saturating_add(units)).unwrap_or(u32::MAX), until_ms }
    }
}

/// `units` of `limit` in nanoseconds of a token bucket's arrival time.
fn units_ns(limit: &Limit, units: u64) -> u64 {
    mul_div(limit.per.nanos(), units, limit.requests)
}

/// A token bucket's state with `held` reserved units counted as spent at
/// `now` (any other state as it is).
pub fn holding(state: State, limit: &Limit, now: u64, held: u64) -> State {
    match state {
        _ if held == 0 => state,
        State::Tat(t) => State::Tat(t.max(now).saturating_add(units_ns(limit, held))),
        State::Empty => State::Tat(now.saturating_add(units_ns(limit, held))),
        other => other,
    }
}

/// The inverse of [`holding`] for the state an update produced from it.
pub fn releasing(state: State, limit: &Limit, held: u64) -> State {
    match state {
        State::Tat(t) if held > 0 => State::Tat(t.saturating_sub(units_ns(limit, held))),
        other => other,
    }
}

/// The share of `limit` a worker reserves at a time (0: none, the limit is
/// too small to batch).
pub fn share(limit: &Limit) -> u64 {
    let k = limit.burst / SHARE_DIVISOR;
    if k >= MIN_SHARE {
        k
    } else {
        0
    }
}

/// Whether `rule`'s bucket may be spent from worker shares: a token
/// bucket whose requests cost one unit each and whose spends are final
/// when decided (no queue or priority classes, no penalty strikes, no
/// upstream blocks, no adaptive limit, no refunds). A rule with a cost
/// gets no share: one costly request can take a key from far to near its
/// limit, where other workers' shares would be out of its reach.
pub fn eligible(rule: &Rule) -> bool {
    rule.algorithm == Algorithm::TokenBucket
        && !rule.concurrent
        && rule.queue.is_none()
        && rule.priority.is_none()
        && rule.penalty.is_none()
        && !rule.obey_upstream
        && rule.adaptive.is_none()
        && rule.refund_from.is_none()
        && rule.cost.is_none()
}

/// One key's share held by this worker.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Share {
    /// The slot table and limit it was reserved under.
    slots: u32,
    limit: Limit,
    granted: u64,
    spent: u64,
    /// The bucket's arrival time when the share was reserved, and with
    /// this worker's requests since.
    base_tat: u64,
    local_tat: u64,
    stop_at: u64,
    until: u64,
}

impl Share {
    /// The bucket and its reservations with this share settled: the units
    /// spent written into the bucket, the reservation released (unless it
    /// may have lapsed already: then it is left to lapse).
    fn settled(&self, state: State, reserved: Reserved, now: u64) -> (State, Reserved) {
        let units = if now < self.until { reserved.units.saturating_sub(u32::try_from(self.granted).unwrap_or(u32::MAX)) } else { reserved.units };
        let spent_ns = units_ns(&self.limit, self.spent);
        let state = match state {
            // Nobody wrote the bucket since: this worker's arrival time is exact.
            State::Tat(t) if t == self.base_tat => State::Tat(self.local_tat),
            State::Tat(t) if self.spent > 0 => State::Tat(t.max(now).saturating_add(spent_ns)),
            State::Empty if self.spent > 0 => State::Tat(now.saturating_add(spent_ns)),
            other => other,
        };
        (state, Reserved { units, ..reserved })
    }
}

/// The shares one worker holds, by key fingerprint, and the keys it
/// decided lately.
#[derive(Debug, Default)]
pub struct Allowances {
    shares: HashMap<u64, Share>,
    /// Units of global rules' leases lent to this worker (see `lease`).
    loans: HashMap<u64, Loan>,
    /// When this worker last decided each key in its slot (bounded by
    /// [`MAX_SEEN_KEYS`]): a share goes only to a key seen within
    /// [`SPEND_WITHIN_NS`], never on a key's first request.
    seen: HashMap<u64, u64>,
    /// Refusals this worker remembers (see `refusals`).
    refusals: HashMap<u64, refusals::Refusal>,
    /// The rules of those refusals.
    refusing: Vec<usize>,
}

impl Allowances {
    /// Keys this worker holds a share or a loan of.
    pub fn len(&self) -> usize {
        self.shares.len().saturating_add(self.loans.len())
    }

    pub fn is_empty(&self) -> bool {
        self.shares.is_empty() && self.loans.is_empty()
    }

    /// Admits `cost` units of the key from this worker's share, if it has
    /// enough of one for `limit` that may still be spent.
    pub fn spend(&mut self, fingerprint: u64, limit: &Limit, now: u64, cost: u64) -> Option<Outcome> {
        let o = self.share_outcome(fingerprint, limit, now, cost)?;
        let s = self.shares.get_mut(&fingerprint)?;
        s.spent = s.spent.saturating_add(cost);
        s.local_tat = s.local_tat.max(now).saturating_add(units_ns(limit, cost));
        Some(o)
    }

    /// What spending `cost` units of the key's share would say, without
    /// spending them (`None`: no share that may be spent holds them).
    fn share_outcome(&self, fingerprint: u64, limit: &Limit, now: u64, cost: u64) -> Option<Outcome> {
        let s = self.shares.get(&fingerprint)?;
        let left = s.granted.saturating_sub(s.spent);
        if now >= s.stop_at || s.limit != *limit || cost > left {
            return None;
        }
        let debt = s.local_tat.max(now).saturating_add(units_ns(limit, cost)).saturating_sub(now);
        let interval = units_ns(limit, 1).max(1);
        let remaining = units_ns(limit, limit.burst).saturating_sub(debt).checked_div(interval).unwrap_or(0);
        Some(Outcome { allowed: true, remaining, reset_ns: debt, retry_after_ns: 0 })
    }

    /// Notes that the key was decided in its slot at `now`; whether it was
    /// already, within [`SPEND_WITHIN_NS`] (then it is busy enough for a
    /// share). A key seen once is not: a flood of one-off keys reserves
    /// nothing, and leaves their slots free as soon as their buckets are.
    fn busy(&mut self, fingerprint: u64, now: u64) -> bool {
        if self.seen.len() >= MAX_SEEN_KEYS && !self.seen.contains_key(&fingerprint) {
            self.seen.retain(|_, at| now.saturating_sub(*at) < SPEND_WITHIN_NS);
            if self.seen.len() >= MAX_SEEN_KEYS {
                return false;
            }
        }
        let last = self.seen.insert(fingerprint, now);
        last.is_some_and(|at| now.saturating_sub(at) < SPEND_WITHIN_NS)
    }

    /// Gives back `cost` units admitted from the key's share (or loan) by a request
    /// that was then refused (or waits) after all.
    pub fn give_back(&mut self, fingerprint: u64, cost: u64) {
        if self.give_back_loan(fingerprint, cost) {
            return;
        }
        if let Some(s) = self.shares.get_mut(&fingerprint) {
            s.spent = s.spent.saturating_sub(cost);
            s.local_tat = s.local_tat.saturating_sub(units_ns(&s.limit, cost));
        }
    }
}

/// Settles the shares that may no longer be spent (`all`: every share,
/// before a new policy replaces the limits they were reserved under), and
/// repays the loans likewise. A share none of whose units were spent is
/// dropped without a write: its reservation lapses by itself
/// ([`LIFE_NS`]), so a key too quiet to use its share costs no more
/// hostcalls than without shares. A loan is repaid even unspent: its units
/// go back to the lease. Returns the errors; a share or loan that could not
/// be settled is dropped too.
pub fn settle_due(allowances: &RefCell<Allowances>, store: &dyn SharedStore, now: u64, all: bool) -> Vec<StoreError> {
    settle_some(allowances, store, now, all, Budget { writes: usize::MAX, urgent_until: 0, tick_ns: 1 })
}

/// How much one tick settles, the nearest deadlines first: `writes`
/// compare-and-swaps, or more when the ticks left before the deadlines
/// (one every `tick_ns`, the last kept in reserve) need a faster pace to
/// settle every one in time; and whatever the count, every share whose
/// reservation lapses before `urgent_until` and every loan due before its
/// window's end. The rest wait for the next tick (or for the key's next
/// request, which settles it in its own compare-and-swap): a burst of
/// traffic that ends leaves thousands of shares due within a quarter of a
/// second, and settling them as their reservations neared their lapse
/// held the worker's requests for half a millisecond on tick after tick.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub writes: usize,
    pub urgent_until: u64,
    pub tick_ns: u64,
}

/// Shares settled per tick (a compare-and-swap each), unless more are
/// needed to settle every one due before it lapses at an even pace. Few:
/// a busy key's next request settles its share in its own
/// compare-and-swap, for nothing, if the tick leaves it time to.
pub const SETTLE_PER_TICK: usize = 4;

impl Budget {
    /// The filter's budget for its tick at `now`, one every `tick_ns`:
    /// [`SETTLE_PER_TICK`], and whatever would lapse before the tick after
    /// next.
    pub fn per_tick(now: u64, tick_ns: u64) -> Budget {
        Budget { writes: SETTLE_PER_TICK, urgent_until: now.saturating_add(tick_ns.saturating_mul(2)), tick_ns }
    }
}

/// How many of `due` (sorted by deadline) to settle now under `budget`.
fn paced(due: &[(u64, u64, bool)], now: u64, budget: Budget) -> usize {
    let mut n = budget.writes;
    for (count, (deadline, _, _)) in (1usize..).zip(due) {
        if *deadline < budget.urgent_until {
            n = n.max(count);
            continue;
        }
        // Ticks left before this deadline, the last kept in reserve.
        let ticks = deadline.saturating_sub(now).checked_div(budget.tick_ns).unwrap_or(u64::MAX).saturating_sub(1).max(1);
        n = n.max(count.div_ceil(usize::try_from(ticks).unwrap_or(usize::MAX)));
    }
    n.min(due.len())
}

/// [`settle_due`] within a [`Budget`].
pub fn settle_some(allowances: &RefCell<Allowances>, store: &dyn SharedStore, now: u64, all: bool, budget: Budget) -> Vec<StoreError> {
    let mut a = allowances.borrow_mut();
    if all {
        a.refusals.clear();
        a.refusing.clear();
    } else {
        a.forget_refusals(now);
    }
    // Unspent shares need no write.
    a.shares.retain(|_, s| s.spent > 0 || !(all || now >= s.stop_at));
    // (deadline, fingerprint, a loan)
    let mut due: Vec<(u64, u64, bool)> = a.shares.iter().filter(|(_, s)| all || now >= s.stop_at).map(|(fp, s)| (s.until, *fp, false)).collect();
    // A loan due within its window is repaid at once: until then its
    // units are out of the other workers' reach (they would wait for
    // calls of their own). Those its window's end stopped (every busy
    // key's at once) only hold units of a window gone: repaid within
    // SPEND_WITHIN_NS, so the demand they served counts in that window's.
    let deadline = |l: &Loan| if l.stop_at >= l.ends_at { l.ends_at.saturating_add(SPEND_WITHIN_NS) } else { l.stop_at };
    due.extend(a.loans.iter().filter(|(_, l)| all || now >= l.stop_at).map(|(fp, l)| (deadline(l), *fp, true)));
    due.sort_unstable();
    due.truncate(paced(&due, now, budget));
    let (mut shares, mut loans) = (Vec::new(), Vec::new());
    for (_, fp, loan) in due {
        if loan {
            loans.extend(a.loans.remove(&fp).map(|l| (fp, l)));
        } else {
            shares.extend(a.shares.remove(&fp).map(|s| (fp, s)));
        }
    }
    drop(a);
    let repaid =
        loans.into_iter().filter_map(|(_, l)| store::lease_update(store, l.slots, l.slot_fp, &l.limit, now, |lease| ((), Some(l.repaid(lease, now)))).err());
    shares
        .into_iter()
        .filter_map(|(fp, s)| {
            store::cas_update_reserved(store, s.slots, fp, &s.limit, now, |state, flags, reserved| {
                let (state, reserved) = s.settled(state, reserved, now);
                ((), Some((state, flags, reserved)))
            })
            .err()
        })
        .chain(repaid)
        .collect()
}

/// One worker's view of an instance's shared data: the store, and the
/// worker's shares. For the tests and the replay; the filter's own is its
/// `HostStore`, with one `Allowances` per worker thread.
pub struct WorkerStore<'a> {
    pub shared: &'a dyn SharedStore,
    pub shares: RefCell<Allowances>,
}

impl<'a> WorkerStore<'a> {
    pub fn new(shared: &'a dyn SharedStore) -> WorkerStore<'a> {
        WorkerStore { shared, shares: RefCell::new(Allowances::default()) }
    }
}

impl SharedStore for WorkerStore<'_> {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.shared.get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        self.shared.set(key, value, cas)
    }
    fn allowances(&self) -> Option<&RefCell<Allowances>> {
        Some(&self.shares)
    }
}

#[cfg(test)]
mod tests;
