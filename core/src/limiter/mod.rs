//! The decision for one request: which rules apply, the key of each, and
//! whether the request may pass.
//!
//! Order: local rules first, then global ones, each in policy order
//! (`evaluation_order`: a request a local rule refuses then only peeks at
//! its global rules, without spending from their leases; what is decided
//! does not depend on the order). Each applicable rule spends from its
//! bucket; when one (in enforce mode) denies, the remaining rules are only
//! looked at (to report the most restrictive one, the one whose
//! retry-after is longest) and what the earlier rules spent is given back.
//! So a denied request spends no quota at all, and an admitted one spends
//! its cost (1 unless the rule says otherwise) from every rule that applied.
//! A rule that queues may admit a request for later (`hold_ns`): its turn
//! is reserved now. Shadow rules count like enforced ones but never deny;
//! their would-be denials are reported.
//!
//! A key is the rule's identity followed by each part's value, case-folded
//! (a client cannot get a fresh bucket by changing the case of a header),
//! hashed with SipHash-1-3 under the instance's slot secret (`hash::Keyed`:
//! a client cannot aim its keys at one slot). A missing part (no such
//! header, no tenant, ...) is hashed as a marker no real value has, so by
//! default every request lacking it shares one bucket: leaving a header
//! out never escapes a rule. A rule with `"missing": "skip"` does not
//! apply to such requests instead.
//!
//! A global rule first passes its own bucket (the instance's share of
//! smoothing, at the full limit), then spends a unit of its lease (see
//! `lease`). When the lease is empty and the service may still have units,
//! the decision asks the caller to wait for a reservation (`wait_for`),
//! having spent nothing; asks that keep leases topped up ahead of need come
//! back in `refills`. While the counter service is unreachable (`degraded`)
//! a global rule falls back to its `failure_mode`: `open` enforces
//! `limit / expected_instances` in a bucket of its own, `closed` refuses.

mod attrs;
mod decide;
mod explain;
mod global;
mod held;
mod outbox;
pub mod penalty;
mod plans;
mod refill_messages;
mod settle;
mod spans;

use crate::bucket::Outcome;
use crate::counter_api::Ask;
use crate::policy::{Policy, Rule};
use crate::request::Request;
pub use crate::store::Note;
use crate::store::{self, SharedStore, StoreError};

pub use decide::decide_carrying;
pub use explain::{explain, resolve, Explained, KeyValue, Resolved, Skip};
pub use global::{apply_answer, fallback_limit, forget_ask, Applied};
pub use held::{may_hold, refuse_hold, MAX_HELD_PER_WORKER};
pub use outbox::{Outbox, ASKS_PER_TICK};
pub use refill_messages::{decode_needs, encode_needs, gather, MAX_GATHERED};
pub use settle::{charge, cost_of, with_cost};
pub use spans::{Spans, MAX_WATCHED, SPAN_MAX_WINDOW_MS, SPAN_MIN_LIMIT, SWEEP_PER_TICK};

/// What a request already holds when it is decided again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carry {
    /// Units of a global rule's window that the counter service reserved
    /// for this very request (its own wait's answer): spent by it, never by
    /// another request that happens to look at the lease first.
    Units { rule: usize, window: u64, units: u64 },
    /// Its turn in a queueing rule's bucket, due at `at` (wall-clock ns),
    /// kept while the request waits for something else (a lease, or the
    /// next window of a global rule), so that it keeps its place in line.
    Turn { rule: usize, fingerprint: u64, at: u64, cost: u64 },
}

impl Carry {
    /// What the request spent for it, to give back if it never goes (the
    /// client left, or a rule denied it). Granted units are only ever held
    /// within one decision, so only turns have something to give back.
    fn spent(&self) -> Option<Spent> {
        match *self {
            Carry::Turn { rule, fingerprint, cost, .. } => Some(Spent::Bucket { rule, fingerprint, fallback: false, cost }),
            Carry::Units { .. } => None,
        }
    }
}

/// The circumstances of one decision.
#[derive(Clone, Copy, Debug)]
pub struct Ctx {
    /// Wall-clock nanoseconds since the epoch.
    pub now: u64,
    /// The counter service is known to be unreachable.
    pub degraded: bool,
    /// The request may wait for a lease (false on the second pass).
    pub may_wait: bool,
    /// How long the request has already waited in queues; a queue's
    /// `max_wait` counts from its arrival.
    pub waited_ns: u64,
    /// Any random number: spreads requests waiting for the same window.
    pub random: u64,
}

impl Ctx {
    pub fn at(now: u64) -> Ctx {
        Ctx { now, degraded: false, may_wait: true, waited_ns: 0, random: 0 }
    }
}

/// A reservation to ask the counter service for. Serialisable, as workers
/// hand refills to the instance's leader through a shared queue.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeaseNeed {
    /// Index into `Policy::rules`.
    pub rule: usize,
    /// The key's slot fingerprint (its bucket's: the lease is kept beside
    /// it, see `slot`), to apply the answer to.
    pub fingerprint: u64,
    pub ask: Ask,
    /// This is the lease's one ask in flight (its answer lets the lease ask
    /// again); a waiting request's own small ask is not.
    pub owns_ask: bool,
    /// Units of the answer that belong to the waiting request that asked
    /// (its cost; 0 for a refill): they are carried by it, not pooled.
    #[serde(default)]
    pub carry: u32,
    /// The fingerprint of the key's own bucket, which an answer reporting
    /// an upstream block keeps empty (rules that obey upstream limits).
    #[serde(default)]
    pub bucket: u64,
}

/// What a request spent, to give back if it ends up denied, or if its
/// client leaves while it waits in a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spent {
    Bucket {
        rule: usize,
        fingerprint: u64,
        fallback: bool,
        cost: u64,
    },
    Lease {
        rule: usize,
        fingerprint: u64,
        window: u64,
        cost: u64,
    },
    /// Units of a concurrency limit, held until the request ends: released
    /// by [`release`] (or given back with the rest when it is refused).
    Concurrent {
        rule: usize,
        unit: crate::concurrency::Unit,
    },
    /// Units admitted from this worker's share of the key (see
    /// `allowance`): given back to the share, if it is still held.
    Share {
        rule: usize,
        fingerprint: u64,
        cost: u64,
    },
}

impl Spent {
    /// The rule the spend was for.
    pub fn rule(&self) -> usize {
        match *self {
            Spent::Bucket { rule, .. } | Spent::Lease { rule, .. } | Spent::Concurrent { rule, .. } | Spent::Share { rule, .. } => rule,
        }
    }
}

/// One rule's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleOutcome {
    /// Index into `Policy::rules`.
    pub rule: usize,
    pub outcome: Outcome,
    /// The rule's requests per `per` as enforced (an adaptive rule's
    /// effective limit).
    pub limit: u64,
    /// Admitted with at most a fifth of the rule's capacity left (80 %
    /// used or more).
    pub near: bool,
}

/// What happens to the request: the ruling, its effects, and its books.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub ruling: Ruling,
    pub effects: Effects,
    pub books: Books,
}

/// What was decided: which rules applied, which one refused, and whether the request waits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruling {
    /// The enforced rule that denied the request (the most restrictive one).
    pub denied_by: Option<RuleOutcome>,
    /// Of the rules that admitted it, the closest to its limit.
    pub tightest: Option<RuleOutcome>,
    /// Shadow rules that would have denied it.
    pub shadow_denied: Vec<RuleOutcome>,
    /// Every rule that applied, in policy order.
    pub applied: Vec<RuleOutcome>,
    /// A global rule with `failure_mode: closed` whose service is down.
    pub unavailable: Option<usize>,
    /// Nanoseconds the admitted request must wait for its turn in the
    /// queues of the rules that hold it (0: go now).
    pub hold_ns: u64,
    /// A queueing global rule found its window's budget gone: the request
    /// waits until this time (wall-clock ns), having spent nothing, and is
    /// decided again then.
    pub redo_at: Option<u64>,
    pub tenant: Option<String>,
    /// The body's JSON-RPC message, when the request was refused and its
    /// body is JSON-RPC: the 429 answers each call (see `response`).
    pub jsonrpc: Option<crate::jsonrpc::Message>,
}

/// What the decision left for the host and the stores: what the request spent or keeps (to give back), the calls to make, the boxes to share.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// What the request spent; see [`give_back`].
    pub spent: Vec<Spent>,
    /// Turns in queues the request keeps while it waits (`wait_for` or
    /// `redo_at`): pass them to the next decision, or to [`give_back_kept`]
    /// if the request ends before.
    pub kept: Vec<Carry>,
    /// Leases to reserve before this request can be decided; nothing was
    /// spent. Decide again once they are answered.
    pub wait_for: Vec<LeaseNeed>,
    /// Leases to top up in the background.
    pub refills: Vec<LeaseNeed>,
    /// Keys (as the counter service knows them) of the global rules that
    /// obey upstream limits, to share an upstream's block with the other
    /// instances.
    pub global_ids: Vec<(usize, String)>,
    /// Rules whose penalty box this request's refusal started, with the
    /// key as the counter service knows it (global rules), to share.
    pub boxes: Vec<(usize, Option<String>)>,
}

/// What the decision found on the way, for logs and metrics only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Books {
    /// Shared-data failures; the affected rules let the request pass.
    pub errors: Vec<(usize, StoreError)>,
    /// Adaptive rules whose health could not be read: they decided (or
    /// gave back) with their configured limit.
    pub unread: Vec<(usize, StoreError)>,
    /// What this decision meant for its keys (episodes, approaching): for
    /// logs and metrics, once per occurrence.
    pub notes: Vec<(usize, Note)>,
    /// Global rules whose unit the admitted request took on credit (see
    /// `lease`); empty unless the request goes on now.
    pub credited: Vec<usize>,
    /// Rules whose key found no free slot (its probes all held active
    /// keys) and was decided against the rule's overflow bucket (see
    /// `store`), for a metric.
    pub overflowed: Vec<usize>,
    /// The `Mcp-Method`/`Mcp-Name` headers disagreed with the body (the
    /// body counted), for a metric.
    pub mcp_headers_disagree: bool,
    /// Rules that refused the request because its key is in their penalty
    /// box (see `penalty`).
    pub boxed: Vec<usize>,
    /// Rules that refused the request from this worker's memory of an
    /// earlier refusal, without reading their slot (see
    /// `allowance::refusals`), for a metric.
    pub remembered: Vec<usize>,
}

impl Decision {
    /// The request passes (it may still have to wait, see `pending`,
    /// `hold_ns` and `redo_at`).
    pub fn allowed(&self) -> bool {
        self.ruling.denied_by.is_none() && self.ruling.unavailable.is_none()
    }

    /// The request waits for `wait_for` before it can be decided.
    pub fn pending(&self) -> bool {
        self.allowed() && !self.effects.wait_for.is_empty()
    }
}

/// Held requests are woken on a 10 ms tick, so a turn is kept to that
/// precision: one that comes up to a tick after `max_wait` still counts.
pub const TICK_GRACE_NS: u64 = 10_000_000;

/// An upstream answered the request that spent `spent` with a wait: keeps
/// the buckets of its rules that obey upstream limits empty until then.
/// Returns the rules for which this starts a block (to log once), and
/// shared-data errors: a block not recorded, or recorded against the
/// configured limit of an adaptive rule whose health could not be read.
pub fn obey_upstream(policy: &Policy, store: &dyn SharedStore, spent: &[Spent], wait_ns: u64, now: u64) -> (Vec<usize>, Vec<(usize, StoreError)>) {
    let (mut started, mut errors) = (Vec::new(), Vec::new());
    for s in spent {
        let Spent::Bucket { rule, fingerprint, fallback: false, .. } = *s else { continue };
        let Some(r) = policy.rules.get(rule) else { continue };
        if !r.obey_upstream {
            continue;
        }
        let until = now.saturating_add(wait_ns.min(r.max_block.nanos()));
        let limit = crate::adaptive::limit(store, r).unwrap_or_else(|e| {
            errors.push((rule, e));
            r.limit
        });
        match store::cas_update(store, policy.slots, fingerprint, &limit, now, |st| {
            let (next, start) = st.block(&limit, now, until);
            (start, Some(next))
        }) {
            Ok(true) => started.push(rule),
            Ok(false) => {}
            Err(e) => errors.push((rule, e)),
        }
    }
    (started, errors)
}

/// Decides one request.
pub fn decide(policy: &Policy, req: &mut dyn Request, store: &dyn SharedStore, ctx: Ctx) -> Decision {
    decide_carrying(policy, req, store, ctx, &[])
}

/// A refused request of a concurrency limit is told to retry after this:
/// when a unit frees is not known.
pub const CONCURRENT_RETRY_NS: u64 = 1_000_000_000;

/// A concurrency limit's outcome: takes `cost` units of the key unless an
/// earlier rule denied the request (then only looks).
#[allow(clippy::too_many_arguments)]
fn concurrent(
    store: &dyn SharedStore,
    rule: &Rule,
    i: usize,
    fp: u64,
    cost: u64,
    denied: bool,
    ctx: Ctx,
    spent: &mut Vec<Spent>,
) -> Result<Outcome, StoreError> {
    use crate::concurrency as c;
    let limit = rule.limit.requests;
    let refused =
        |held: u64| Outcome { allowed: false, remaining: limit.saturating_sub(held), reset_ns: CONCURRENT_RETRY_NS, retry_after_ns: CONCURRENT_RETRY_NS };
    if denied {
        let held = c::held(store, fp, ctx.now)?;
        return Ok(if held.saturating_add(cost) > limit {
            refused(held)
        } else {
            Outcome { allowed: true, remaining: limit.saturating_sub(held), reset_ns: 0, retry_after_ns: 0 }
        });
    }
    // Distinct per request: the host's randomness, mixed with the time and
    // the rule so that decisions in one instant differ even without it.
    let id = crate::hash::fnv1a(&[ctx.random.to_le_bytes(), ctx.now.to_le_bytes(), (i as u64).to_le_bytes()].concat());
    let a = c::acquire(store, fp, id, limit, cost, rule.limit.per.nanos(), ctx.now)?;
    if !a.allowed {
        return Ok(refused(a.held));
    }
    spent.push(Spent::Concurrent { rule: i, unit: c::Unit { fingerprint: fp, id } });
    Ok(Outcome { allowed: true, remaining: limit.saturating_sub(a.held), reset_ns: 0, retry_after_ns: 0 })
}

/// Releases the concurrency units among `spent` (an admitted request's
/// stream ended). Needs no policy: a unit is found by its key and id, so a
/// release after a reload, or a second one, is harmless.
pub fn release(store: &dyn SharedStore, spent: &[Spent], now: u64) -> Vec<(usize, StoreError)> {
    spent
        .iter()
        .filter_map(|s| match *s {
            Spent::Concurrent { rule, unit } => crate::concurrency::release(store, unit, now).err().map(|e| (rule, e)),
            _ => None,
        })
        .collect()
}

/// Gives back what an admitted request spent, when its client went away
/// while it waited in a queue. Errors are reported, not fatal: what was
/// not given back, then adaptive rules whose health could not be read
/// (given back against their configured limit).
pub fn give_back(policy: &Policy, store: &dyn SharedStore, spent: &[Spent], now: u64) -> Vec<(usize, StoreError)> {
    let mut d = Decision::default();
    refund(policy, store, now, spent, &mut d);
    d.books.errors.append(&mut d.books.unread);
    d.books.errors
}

/// Gives back the turns a waiting request kept, when its client left.
pub fn give_back_kept(policy: &Policy, store: &dyn SharedStore, kept: &[Carry], now: u64) -> Vec<(usize, StoreError)> {
    let spent: Vec<Spent> = kept.iter().filter_map(Carry::spent).collect();
    give_back(policy, store, &spent, now)
}

/// Gives back what a denied (or waiting) request spent.
pub(super) fn refund(policy: &Policy, store: &dyn SharedStore, now: u64, spent: &[Spent], d: &mut Decision) {
    for s in spent {
        let result = match *s {
            Spent::Bucket { rule, fingerprint, fallback, cost } => {
                let Some(r) = policy.rules.get(rule) else { continue };
                let limit = if fallback {
                    fallback_limit(policy, r)
                } else {
                    crate::adaptive::limit(store, r).unwrap_or_else(|e| {
                        d.books.unread.push((rule, e));
                        r.limit
                    })
                };
                store::refund(store, policy.slots, fingerprint, r.algorithm, &limit, now, cost).map_err(|e| (rule, e))
            }
            Spent::Lease { rule, fingerprint, window, cost } => {
                let Some(r) = policy.rules.get(rule) else { continue };
                store::lease_update(store, policy.slots, fingerprint, &r.limit, now, |l| ((), Some(l.refund(now, &r.limit, window, cost))))
                    .map_err(|e| (rule, e))
            }
            Spent::Concurrent { rule, unit } => crate::concurrency::release(store, unit, now).map_err(|e| (rule, e)),
            Spent::Share { fingerprint, cost, .. } => {
                if let Some(a) = store.allowances() {
                    a.borrow_mut().give_back(fingerprint, cost);
                }
                Ok(())
            }
        };
        if let Err(e) = result {
            d.books.errors.push(e);
        }
    }
}
