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
mod explain;
mod global;
mod handoff;
mod held;
mod spans;

use crate::bucket::Outcome;
use crate::counter_api::Ask;
use crate::policy::{Policy, Rule, Scope};
use crate::request::Request;
pub use crate::store::Note;
use crate::store::{self, SharedStore, StoreError};

use attrs::Attrs;
pub use explain::{explain, resolve, Explained, KeyValue, Resolved, Skip};
pub use global::{apply_answer, fallback_limit, forget_ask, Applied};
pub use handoff::{decode_needs, encode_needs, gather, MAX_GATHERED};
pub use held::{may_hold, refuse_hold, MAX_HELD_PER_WORKER};
pub use spans::{Spans, MAX_WATCHED, SPAN_MAX_WINDOW_MS, SPAN_MIN_LIMIT};

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
    /// The lease's slot fingerprint, to apply the answer to.
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

/// What happens to the request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// The enforced rule that denied the request (the most restrictive one).
    pub denied_by: Option<RuleOutcome>,
    /// Of the rules that admitted it, the closest to its limit.
    pub tightest: Option<RuleOutcome>,
    /// Shadow rules that would have denied it.
    pub shadow_denied: Vec<RuleOutcome>,
    /// Every rule that applied, in policy order.
    pub applied: Vec<RuleOutcome>,
    pub tenant: Option<String>,
    /// Shared-data failures; the affected rules let the request pass.
    pub errors: Vec<(usize, StoreError)>,
    /// Adaptive rules whose health could not be read: they decided (or
    /// gave back) with their configured limit.
    pub unread: Vec<(usize, StoreError)>,
    /// Leases to reserve before this request can be decided; nothing was
    /// spent. Decide again once they are answered.
    pub wait_for: Vec<LeaseNeed>,
    /// Leases to top up in the background.
    pub refills: Vec<LeaseNeed>,
    /// A global rule with `failure_mode: closed` whose service is down.
    pub unavailable: Option<usize>,
    /// Nanoseconds the admitted request must wait for its turn in the
    /// queues of the rules that hold it (0: go now).
    pub hold_ns: u64,
    /// A queueing global rule found its window's budget gone: the request
    /// waits until this time (wall-clock ns), having spent nothing, and is
    /// decided again then.
    pub redo_at: Option<u64>,
    /// What the request spent; see [`give_back`].
    pub spent: Vec<Spent>,
    /// What this decision meant for its keys (episodes, approaching): for
    /// logs and metrics, once per occurrence.
    pub notes: Vec<(usize, Note)>,
    /// Keys (as the counter service knows them) of the global rules that
    /// obey upstream limits, to share an upstream's block with the other
    /// instances.
    pub global_ids: Vec<(usize, String)>,
    /// Turns in queues the request keeps while it waits (`wait_for` or
    /// `redo_at`): pass them to the next decision, or to [`give_back_kept`]
    /// if the request ends before.
    pub kept: Vec<Carry>,
    /// Global rules whose unit the admitted request took on credit (see
    /// `lease`); empty unless the request goes on now.
    pub credited: Vec<usize>,
    /// Rules whose key found no free slot (its probes all held active
    /// keys) and was decided against the rule's overflow bucket (see
    /// `store`), for a metric.
    pub overflowed: Vec<usize>,
    /// The body's JSON-RPC message, when the request was refused and its
    /// body is JSON-RPC: the 429 answers each call (see `response`).
    pub jsonrpc: Option<crate::jsonrpc::Message>,
    /// The `Mcp-Method`/`Mcp-Name` headers disagreed with the body (the
    /// body counted), for a metric.
    pub mcp_headers_disagree: bool,
}

impl Decision {
    /// The request passes (it may still have to wait, see `pending`,
    /// `hold_ns` and `redo_at`).
    pub fn allowed(&self) -> bool {
        self.denied_by.is_none() && self.unavailable.is_none()
    }

    /// The request waits for `wait_for` before it can be decided.
    pub fn pending(&self) -> bool {
        self.allowed() && !self.wait_for.is_empty()
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

/// `a` is closer to its limit than `b`: a smaller share of the limit left.
fn tighter(a: &RuleOutcome, b: &RuleOutcome) -> bool {
    let (la, lb) = (a.limit, b.limit);
    // Two u64 never overflow a u128 product.
    let (x, y) = (u128::from(a.outcome.remaining).saturating_mul(u128::from(lb)), u128::from(b.outcome.remaining).saturating_mul(u128::from(la)));
    // Ties go to the rule first in the policy, whatever the order of evaluation.
    x < y || (x == y && a.rule < b.rule)
}

/// The rules in the order they are evaluated: local rules first, then
/// global ones (each in policy order). A request a local rule refuses then
/// only peeks at its global rules' buckets, instead of spending from their
/// buckets and leases and giving it all back (several shared-data
/// round trips). What is decided does not depend on the order.
fn evaluation_order(policy: &Policy) -> impl Iterator<Item = (usize, &Rule)> {
    let local = policy.rules.iter().enumerate().filter(|(_, r)| r.scope != Scope::Global);
    local.chain(policy.rules.iter().enumerate().filter(|(_, r)| r.scope == Scope::Global))
}

/// Decides one request.
pub fn decide(policy: &Policy, req: &mut dyn Request, store: &dyn SharedStore, ctx: Ctx) -> Decision {
    decide_carrying(policy, req, store, ctx, &[])
}

/// Decides a request again, with what it already holds (`carried`: the
/// units its own reserve call was granted, the turns it kept).
pub fn decide_carrying(policy: &Policy, req: &mut dyn Request, store: &dyn SharedStore, ctx: Ctx, carried: &[Carry]) -> Decision {
    let now = ctx.now;
    let mut attrs = Attrs::new(req);
    let exempt = policy.exempt_paths.iter().any(|p| p.eq_ignore_ascii_case(&attrs.path));
    let mut d = Decision::default();
    // Kept turns are spent already: a denial gives them back like the rest.
    let mut turns: Vec<Carry> = carried.iter().filter(|c| matches!(c, Carry::Turn { .. })).copied().collect();
    let mut spent: Vec<Spent> = turns.iter().filter_map(Carry::spent).collect();
    // Global rules a refused request did not reach, with their limits.
    let mut unreached: Vec<(usize, crate::policy::Limit)> = Vec::new();
    'rules: for (i, rule) in evaluation_order(policy) {
        let Some(params) = attrs.applies(policy, rule, exempt) else { continue };
        let Some((key_fp, id)) = attrs.key(policy, rule, &params) else { continue };
        let cost = attrs.cost(rule);
        let denied = !d.allowed();
        if rule.concurrent {
            match concurrent(store, rule, i, key_fp, cost, denied, ctx, &mut spent) {
                Ok(outcome) => report(&mut d, rule, i, rule.limit.requests, rule.limit.burst, outcome, denied),
                Err(e) => d.errors.push((i, e)),
            }
            continue;
        }
        let overflow_fp = store::overflow_fingerprint(i);
        let kept_turn = carried.iter().find_map(|c| match *c {
            Carry::Turn { rule, fingerprint, at, .. } if rule == i && (fingerprint == key_fp || fingerprint == overflow_fp) => Some(at),
            _ => None,
        });
        // An adaptive rule's limit as it stands (its configured one otherwise,
        // and when its health cannot be read).
        let mut limit = crate::adaptive::limit(store, rule).unwrap_or_else(|e| {
            d.unread.push((i, e));
            rule.limit
        });
        let class = rule.priority.as_ref().map_or(0, |p| p.class(attrs.header(&p.header).as_deref(), ctx.waited_ns));
        // A key without a free slot is decided against the rule's overflow
        // bucket; a global rule's, like its fallback, at limit / instances
        // and without a lease (the lease is per key).
        let (mut fp, mut overflowed) = (key_fp, false);
        let result = loop {
            let result = match (denied, rule.queue.as_ref(), kept_turn) {
                (true, _, _) => store::peek(store, policy.slots, fp, rule.algorithm, &limit, now, cost).map(|o| (o, 0)),
                (false, _, Some(at)) => {
                    let wait = at.saturating_sub(now);
                    Ok((Outcome { allowed: true, remaining: 0, reset_ns: wait, retry_after_ns: 0 }, wait))
                }
                (false, queue, None) if class > 0 => {
                    // A lower class takes a token only while the higher ones
                    // keep theirs; when it queues it waits, without a turn,
                    // until there is room for it, and is decided again then.
                    let reserve = (class as u64).saturating_mul(rule.priority.as_ref().map_or(0, |p| p.reserve));
                    match store::take_leaving(store, policy.slots, fp, &limit, now, cost, reserve) {
                        Ok(o) if !o.allowed && !rule.shadow => {
                            let room = queue.map_or(0, |q| q.max_wait.nanos().saturating_add(TICK_GRACE_NS).saturating_sub(ctx.waited_ns));
                            if o.retry_after_ns <= room {
                                d.redo_at = Some(d.redo_at.unwrap_or(0).max(now.saturating_add(o.retry_after_ns)));
                                continue 'rules;
                            }
                            Ok((o, 0))
                        }
                        other => other.map(|o| (o, 0)),
                    }
                }
                (false, Some(q), None) => {
                    let left_ns = q.max_wait.nanos().saturating_add(TICK_GRACE_NS).saturating_sub(ctx.waited_ns);
                    let left = crate::policy::Queue { max_wait: crate::duration::Span::from_nanos(left_ns), ..*q };
                    store::take_queued_noting(store, policy.slots, fp, &limit, &left, now, cost).map(|(ow, note)| {
                        d.notes.extend(note.map(|n| (i, n)));
                        ow
                    })
                }
                (false, None, None) => store::take_noting(store, policy.slots, fp, rule.algorithm, &limit, now, cost).map(|(o, note)| {
                    d.notes.extend(note.map(|n| (i, n)));
                    (o, 0)
                }),
            };
            match result {
                Err(StoreError::Full) if !overflowed => {
                    (fp, overflowed) = (overflow_fp, true);
                    d.overflowed.push(i);
                    if rule.scope == Scope::Global {
                        limit = fallback_limit(policy, rule);
                    }
                }
                other => break other,
            }
        };
        if denied && rule.scope == Scope::Global && !overflowed && !ctx.degraded {
            unreached.push((i, limit));
        }
        let (mut outcome, wait) = match result {
            Ok((o, wait)) => {
                d.hold_ns = d.hold_ns.max(wait);
                (o, wait)
            }
            Err(e) => {
                d.errors.push((i, e));
                continue;
            }
        };
        if outcome.allowed && !denied {
            if kept_turn.is_none() {
                let fallback = overflowed && rule.scope == Scope::Global;
                spent.push(Spent::Bucket { rule: i, fingerprint: fp, fallback, cost });
                if rule.queue.is_some() {
                    turns.push(Carry::Turn { rule: i, fingerprint: fp, at: now.saturating_add(wait), cost });
                }
            }
            if rule.scope == Scope::Global && !overflowed {
                let id = id.unwrap_or_default();
                if rule.obey_upstream {
                    d.global_ids.push((i, id.clone()));
                }
                let units = carried.iter().find_map(|c| match *c {
                    Carry::Units { rule, window, units } if rule == i && units >= cost => Some(window),
                    _ => None,
                });
                match global::global(policy, (rule, &limit), i, (fp, cost), id, store, ctx, (units, wait), &mut d, &mut spent) {
                    Ok(Some(o)) => outcome = o,
                    Ok(None) => continue,
                    // The key's lease (or fallback bucket) found no free
                    // slot: the rule's overflow bucket decides, as above.
                    Err(StoreError::Full) => {
                        d.overflowed.push(i);
                        let fallback = fallback_limit(policy, rule);
                        match store::take(store, policy.slots, overflow_fp, rule.algorithm, &fallback, now, cost) {
                            Ok(o) => {
                                if o.allowed {
                                    spent.push(Spent::Bucket { rule: i, fingerprint: overflow_fp, fallback: true, cost });
                                }
                                outcome = o;
                            }
                            Err(e) => d.errors.push((i, e)),
                        }
                    }
                    Err(e) => d.errors.push((i, e)),
                }
            }
        }
        let capacity = if rule.algorithm == crate::policy::Algorithm::TokenBucket { limit.burst } else { limit.requests };
        report(&mut d, rule, i, limit.requests, capacity, outcome, denied);
    }
    // A refusal that reserves ahead for its rule does so for the global
    // rules the request did not reach too.
    let ahead = d.refills.iter().filter(|n| n.ask.next && n.owns_ask).map(|n| n.ask.want).max();
    if let (false, Some(want)) = (d.allowed(), ahead) {
        for (i, limit) in unreached {
            let Some(rule) = policy.rules.get(i) else { continue };
            let Some(params) = attrs.applies(policy, rule, exempt) else { continue };
            let Some((fp, id)) = attrs.key(policy, rule, &params) else { continue };
            match global::plan_ahead(policy, (rule, &limit), i, (fp, &id.unwrap_or_default()), want, store, now) {
                Ok(need) => d.refills.extend(need),
                Err(e) => d.errors.push((i, e)),
            }
        }
    }
    // Reported in policy order.
    d.applied.sort_by_key(|a| a.rule);
    d.shadow_denied.sort_by_key(|a| a.rule);
    d.notes.sort_by_key(|(i, _)| *i);
    d.global_ids.sort_by_key(|(i, _)| *i);
    if !d.allowed() {
        refund(policy, store, now, &spent, &mut d);
        d.tightest = None;
        d.hold_ns = 0;
        d.wait_for.clear();
        d.redo_at = None;
        d.credited.clear();
    } else if d.pending() || d.redo_at.is_some() {
        // Waiting for a lease or a window: keep the turns taken in queues
        // (the request's place in line), give back everything else.
        let kept: Vec<Spent> = turns.iter().filter_map(Carry::spent).collect();
        let rest: Vec<Spent> = spent.into_iter().filter(|s| !kept.contains(s)).collect();
        refund(policy, store, now, &rest, &mut d);
        d.kept = turns;
        d.tightest = None;
        d.hold_ns = 0;
        d.credited.clear();
    } else {
        d.spent = spent;
    }
    d.tenant = attrs.tenant(policy);
    if !d.allowed() {
        d.jsonrpc = attrs.message();
    }
    d.mcp_headers_disagree = attrs.mcp_headers_disagree();
    d
}

/// Records one rule's outcome in the decision.
fn report(d: &mut Decision, rule: &Rule, i: usize, limit: u64, capacity: u64, outcome: Outcome, denied: bool) {
    let near = outcome.allowed && u128::from(outcome.remaining) * 5 <= u128::from(capacity);
    let ro = RuleOutcome { rule: i, outcome, limit, near };
    d.applied.push(ro);
    if outcome.allowed {
        if !denied && d.tightest.as_ref().is_none_or(|t| tighter(&ro, t)) {
            d.tightest = Some(ro);
        }
    } else if rule.shadow {
        d.shadow_denied.push(ro);
    } else if d.denied_by.as_ref().is_none_or(|w| (outcome.retry_after_ns, std::cmp::Reverse(i)) > (w.outcome.retry_after_ns, std::cmp::Reverse(w.rule))) {
        d.denied_by = Some(ro);
    }
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
    d.errors.append(&mut d.unread);
    d.errors
}

/// Gives back the turns a waiting request kept, when its client left.
pub fn give_back_kept(policy: &Policy, store: &dyn SharedStore, kept: &[Carry], now: u64) -> Vec<(usize, StoreError)> {
    let spent: Vec<Spent> = kept.iter().filter_map(Carry::spent).collect();
    give_back(policy, store, &spent, now)
}

/// Gives back what a denied (or waiting) request spent.
fn refund(policy: &Policy, store: &dyn SharedStore, now: u64, spent: &[Spent], d: &mut Decision) {
    for s in spent {
        let result = match *s {
            Spent::Bucket { rule, fingerprint, fallback, cost } => {
                let Some(r) = policy.rules.get(rule) else { continue };
                let limit = if fallback {
                    fallback_limit(policy, r)
                } else {
                    crate::adaptive::limit(store, r).unwrap_or_else(|e| {
                        d.unread.push((rule, e));
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
        };
        if let Err(e) = result {
            d.errors.push(e);
        }
    }
}
