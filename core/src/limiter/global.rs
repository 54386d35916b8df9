//! The global part of a rule: spending from its lease, waiting for the
//! next window when it queues, and the failure modes while the counter
//! service is unreachable.

use super::{Carry, Ctx, LeaseNeed, Spent, TICK_GRACE_NS};
use crate::allowance::{Allowances, Loan};
use crate::bucket::Outcome;
use crate::counter_api::Ask;
use crate::hash::Fnv;
use crate::lease::Step;
use crate::policy::{FailureMode, Limit, Policy, Rule};
use crate::store::{self, SharedStore, StoreError};
use std::cell::RefCell;

/// The limit a failing-open global rule enforces in each instance.
pub fn fallback_limit(policy: &Policy, rule: &Rule) -> Limit {
    let n = policy.global.as_ref().map_or(1, |g| u64::from(g.expected_instances.max(1)));
    let share = |v: u64| v.div_ceil(n).max(1);
    Limit { requests: share(rule.limit.requests), burst: share(rule.limit.burst), ..rule.limit }
}

/// What applying an answer gave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Units that belong to the waiting request that asked.
    pub carry: Option<Carry>,
    /// The answer reported an upstream block that this instance did not
    /// know of (to log once); the key's bucket is now kept empty.
    pub block_started: bool,
    /// The answer reported an upstream block for this rule (index): a turn
    /// the waiting request kept in its queue no longer holds.
    pub blocked_rule: Option<usize>,
    /// The rule (index) the answer was applied to; `None` when the policy
    /// no longer has it.
    pub rule: Option<usize>,
    /// The rule adapts and its health could not be read: a block it
    /// reported was recorded against the configured limit.
    pub unread: Option<StoreError>,
}

/// The rule a need was asked for: the one at its index, unless the policy
/// changed meanwhile, then the one of its name, if any.
pub(super) fn rule_of<'a>(policy: &'a Policy, need: &LeaseNeed) -> Option<(usize, &'a Rule)> {
    match policy.rules.get(need.rule) {
        Some(r) if r.name == need.ask.rule => Some((need.rule, r)),
        _ => policy.rules.iter().enumerate().find(|(_, r)| r.name == need.ask.rule),
    }
}

/// Applies the counter service's answer to the lease it was asked for.
/// The units that belong to the waiting request that asked (`carry`) are
/// not pooled: they come back for that request to spend. A block learnt
/// by another instance (`blocked_ns`) keeps the key's bucket empty until
/// it ends, for rules that obey upstream limits, and boxes the key for
/// rules with a penalty box. A rule that no longer
/// exists (the policy changed meanwhile) is skipped.
pub fn apply_answer(policy: &Policy, store: &dyn SharedStore, need: &LeaseNeed, answer: &crate::lease::Answer, now: u64) -> Result<Applied, StoreError> {
    let Some((index, rule)) = rule_of(policy, need) else { return Ok(Applied::default()) };
    // Units given back: the lease forgot them when it gave them.
    if need.ask.release > 0 {
        return Ok(Applied { rule: Some(index), ..Applied::default() });
    }
    let (mut block_started, mut unread) = (false, None);
    if answer.blocked_ns > 0 && rule.penalty.is_some() && need.bucket != 0 {
        // Another instance boxed the key (the service blocks it for all).
        let until = now.saturating_add(answer.blocked_ns.min(rule.penalty.as_ref().map_or(0, |p| p.block.nanos())));
        block_started = super::penalty::box_until(policy, store, rule, need.bucket, now, until)?;
    }
    let blocked = answer.blocked_ns > 0 && rule.obey_upstream && need.bucket != 0;
    if blocked {
        let limit = crate::adaptive::limit(store, rule).unwrap_or_else(|e| {
            unread = Some(e);
            rule.limit
        });
        // Capped by this instance's policy too, whatever another learnt.
        let until = now.saturating_add(answer.blocked_ns.min(rule.max_block.nanos()));
        block_started = store::cas_update(store, policy.slots, need.bucket, &limit, now, |st| {
            let (next, start) = st.block(&limit, now, until);
            (start, Some(next))
        })?;
    }
    let own = if need.carry > 0 && answer.granted >= need.carry && answer.starts_in_ns == 0 { need.carry } else { 0 };
    let pooled = crate::lease::Answer { granted: answer.granted.saturating_sub(own), ..*answer };
    store::lease_update(store, policy.slots, need.fingerprint, &rule.limit, now, |l| {
        let mut granted = l.grant(now, &rule.limit, &pooled);
        if !need.owns_ask {
            granted.asked_at = l.asked_at;
        }
        ((), Some(granted))
    })?;
    Ok(Applied {
        carry: (own > 0).then_some(Carry::Units { rule: index, window: answer.window, units: u64::from(own) }),
        block_started,
        blocked_rule: blocked.then_some(index),
        rule: Some(index),
        unread,
    })
}

/// Forgets an ask that failed, so that the lease may ask again.
pub fn forget_ask(policy: &Policy, store: &dyn SharedStore, need: &LeaseNeed, now: u64) -> Result<(), StoreError> {
    let Some((_, rule)) = rule_of(policy, need) else { return Ok(()) };
    if !need.owns_ask {
        return Ok(());
    }
    store::lease_update(store, policy.slots, need.fingerprint, &rule.limit, now, |l| ((), Some(crate::lease::Lease { asked_at: 0, ..l })))
}

/// Smallest limit whose quiet keys may be admitted on credit: one request
/// per instance over the limit is then at most a percent or so, and only in
/// a window in which a key goes from under half of its limit to over all
/// of it.
pub const CREDIT_MIN_LIMIT: u64 = 100;

/// Whether a request of `rule` may be admitted on credit (see
/// `Lease::spend`): the policy allows it, the limit is large, the rule
/// fails open (a closed one refuses rather than guess), and it neither
/// queues (turns count exact windows) nor protects an upstream's own
/// limit, nor counts a calendar budget (a lease that does not know its
/// window yet, as after a restart, cannot tell a day spent hours ago).
fn credit_allowed(policy: &Policy, rule: &Rule, limit: &Limit) -> bool {
    policy.global.as_ref().is_some_and(|g| g.credit)
        && limit.calendar.is_none()
        && limit.requests >= CREDIT_MIN_LIMIT
        && rule.failure_mode == FailureMode::Open
        && rule.queue.is_none()
        && !rule.obey_upstream
}

/// Fingerprints derived from a rule's key fingerprint: its fallback
/// bucket's slot, and its loans in a worker's memory.
fn derived(fingerprint: u64, what: &[u8]) -> u64 {
    Fnv::default().field(&fingerprint.to_le_bytes()).field(what).finish().max(1)
}

/// What a worker keeps its loans of the key's lease under (see
/// `allowance::lease`), apart from its share of the key's bucket.
pub(super) fn loan_key(fingerprint: u64) -> u64 {
    derived(fingerprint, b"lease")
}

/// A global rule's key, for its lease.
pub(super) struct LeaseKey<'a> {
    pub rule: &'a Rule,
    /// The rule's limit as it stands.
    pub limit: &'a Limit,
    /// Index of the rule in the policy.
    pub index: usize,
    /// The key's bucket fingerprint.
    pub fp: u64,
    pub cost: u64,
    /// The key as the counter service knows it.
    pub id: String,
}

/// What a global rule's lease said of a request.
#[derive(Debug)]
pub(super) enum Verdict {
    /// Admitted or refused, with the rule's outcome.
    Decided(Outcome),
    /// It waits: for a reservation (`LeaseEffects::wait_for`) or for a later
    /// window (`LeaseEffects::redo_at`).
    Waits,
}

/// What deciding on a lease leaves for the decision.
#[derive(Debug, Default)]
pub(super) struct LeaseEffects {
    /// What the request spent (to give back if another rule refuses it).
    pub spent: Option<Spent>,
    /// Reservations to hand to the leader.
    pub refills: Vec<LeaseNeed>,
    /// The one reserve call the request waits for.
    pub wait_for: Option<LeaseNeed>,
    /// It was admitted on credit.
    pub credited: bool,
    /// Decide it again at this time (its turn's window).
    pub redo_at: Option<u64>,
    /// A failing-closed rule without its counter service.
    pub unavailable: bool,
}

/// The lease part of a global rule whose own bucket admitted the request:
/// spends a unit of the key's lease (or the units granted to this request,
/// `carried`: their window), or tells to wait. `turn_wait`: how long the
/// request waits for its turn in the rule's queue.
pub(super) fn spend_lease(
    policy: &Policy,
    key: &LeaseKey,
    store: &dyn SharedStore,
    ctx: Ctx,
    carried: Option<u64>,
    turn_wait: u64,
) -> Result<(Verdict, LeaseEffects), StoreError> {
    let (rule, limit, now) = (key.rule, key.limit, ctx.now);
    if ctx.degraded && carried.is_none() {
        return fail(policy, key, store, now);
    }
    // A queued request spends from the window in which its turn comes, so
    // that it goes within that window: it is decided again then, keeping
    // its turn.
    if rule.queue.is_some() && turn_wait > 0 {
        return Ok((Verdict::Waits, LeaseEffects { redo_at: Some(now.saturating_add(turn_wait)), ..LeaseEffects::default() }));
    }
    let lease_fp = loan_key(key.fp);
    let loans = store.allowances().filter(|_| carried.is_none() && crate::allowance::lease_eligible(rule, limit));
    if let Some(o) = loans.and_then(|a| a.borrow_mut().spend_lease(lease_fp, limit, now, key.cost)) {
        let spent = Some(Spent::Share { rule: key.index, fingerprint: lease_fp, cost: key.cost });
        return Ok((Verdict::Decided(o), LeaseEffects { spent, ..LeaseEffects::default() }));
    }
    let step = spend(policy, key, lease_fp, store, ctx, carried, loans)?;
    verdict(policy, key, store, ctx, carried, &step)
}

/// What spending from the key's lease (`step`) says of the request, and
/// what it leaves for the decision. `carried`: the window of the units
/// granted to this request, which it spent.
pub(super) fn verdict(
    policy: &Policy,
    key: &LeaseKey,
    store: &dyn SharedStore,
    ctx: Ctx,
    carried: Option<u64>,
    step: &Spending,
) -> Result<(Verdict, LeaseEffects), StoreError> {
    let (rule, limit, now) = (key.rule, key.limit, ctx.now);
    let ask = |want: u32, next: bool| lease_need((rule, limit), key.index, key.fp, &key.id, want, next);
    let mut fx = LeaseEffects { refills: step.refill.map(|(want, next)| ask(want, next)).into_iter().collect(), ..LeaseEffects::default() };
    let lease = step.lease;
    match step.step {
        Step::Spent => {
            fx.spent = Some(Spent::Lease { rule: key.index, fingerprint: key.fp, window: carried.unwrap_or(lease.window), cost: key.cost });
            fx.credited = step.credited;
            let global_left = lease.global_left(limit);
            // On credit for a window not known yet: the service's windows
            // are aligned to its clock, which ours is assumed to match.
            let reset_ns = if lease.window == 0 { limit.window_end(limit.window_at(now)).saturating_sub(now) } else { lease.ends_at.saturating_sub(now) };
            Ok((Verdict::Decided(Outcome { allowed: true, remaining: global_left, reset_ns, retry_after_ns: 0 }), fx))
        }
        Step::Exhausted { retry_after_ns } => {
            fx.refills.extend(step.top_up.map(|want| LeaseNeed { owns_ask: false, ..ask(want, false) }));
            // A queueing rule waits for the next window when it opens in
            // time; waiters spread over up to a tenth of it (never past
            // their max_wait) so that they do not all return at once.
            if let Some(q) = rule.queue.as_ref() {
                let room = q.max_wait.nanos().saturating_add(TICK_GRACE_NS).saturating_sub(ctx.waited_ns);
                if retry_after_ns <= room {
                    let spread_max = (limit.per.nanos() / 10).min(room.saturating_sub(retry_after_ns));
                    let wait = retry_after_ns.saturating_add(ctx.random.checked_rem(spread_max).unwrap_or(0));
                    fx.redo_at = Some(now.saturating_add(wait));
                    return Ok((Verdict::Waits, fx));
                }
            }
            Ok((Verdict::Decided(Outcome { allowed: false, remaining: 0, reset_ns: retry_after_ns, retry_after_ns }), fx))
        }
        Step::Missing if ctx.may_wait => {
            // Parallel waiters each asking for the rate would take the
            // window's budget into answers not yet applied, and some would
            // see it gone: only the one that owns the lease's ask does.
            // A waiter also asks for what the lease owes (a request admitted
            // on credit): its answer, a call away, pays the debt before the
            // leader's batched refill does, which shrinks the time in which
            // the budget could be gone before the debt is covered.
            let own = u32::try_from(key.cost).unwrap_or(u32::MAX).max(1);
            let need = match step.refill {
                Some((want, false)) => LeaseNeed { carry: own, ..ask(want.max(own), false) },
                _ => LeaseNeed { owns_ask: false, carry: own, ..ask(own.saturating_add(lease.owed), false) },
            };
            // The waiter's own ask replaces the refill it owns.
            fx.refills.clear();
            fx.wait_for = Some(need);
            Ok((Verdict::Waits, fx))
        }
        Step::Missing => fail(policy, key, store, now),
    }
}

/// What spending from a lease gave.
#[derive(Clone, Copy, Debug)]
pub(super) struct Spending {
    pub step: Step,
    /// The lease after it.
    pub lease: crate::lease::Lease,
    /// The lease's own ask, if one is due: `(units, next window)`.
    refill: Option<(u32, bool)>,
    /// Units of the current window asked along with a reservation ahead.
    top_up: Option<u32>,
    credited: bool,
    /// Units lent to this worker's memory.
    lent: u32,
}

/// Spends a unit of the key's lease (one compare-and-swap), and works out
/// what it should ask the counter service for. With `loans` (this
/// worker's, see `allowance::lease`), the same compare-and-swap repays the
/// worker's last loan of the key and, while the key is busy here and far
/// from its budget, lends it a new one.
fn spend(
    policy: &Policy,
    key: &LeaseKey,
    lease_fp: u64,
    store: &dyn SharedStore,
    ctx: Ctx,
    carried: Option<u64>,
    loans: Option<&RefCell<Allowances>>,
) -> Result<Spending, StoreError> {
    let (old, busy) = loans.map_or((None, false), |a| a.borrow_mut().take_loan(lease_fp, ctx.now));
    let result = store::lease_update(store, policy.slots, key.fp, key.limit, ctx.now, |l| {
        let l = old.as_ref().map_or(l, |loan| loan.repaid(l, ctx.now));
        let s = spend_in(policy, key, ctx, carried, busy, l);
        (s, Some(s.lease))
    });
    end_loan((policy.slots, ctx.now), key, (lease_fp, loans), old, result.as_ref().ok().map(Some));
    result
}

/// After a compare-and-swap that took the key's loan out of this worker's
/// memory (`old`): keeps the new loan it lent, or `old` back when the
/// lease was not reached (`Some(None)`) or not written (`None`), to be
/// repaid later (by the tick).
pub(super) fn end_loan(
    (slots, now): (u32, u64),
    key: &LeaseKey,
    (lease_fp, loans): (u64, Option<&RefCell<Allowances>>),
    old: Option<Loan>,
    spent: Option<Option<&Spending>>,
) {
    let Some(a) = loans else { return };
    match spent {
        Some(Some(s)) if s.lent > 0 => a.borrow_mut().keep_loan(lease_fp, Loan::new((slots, key.fp), key.limit, &s.lease, s.lent, now)),
        Some(Some(_)) => {}
        Some(None) | None => {
            if let Some(loan) = old {
                a.borrow_mut().keep_loan(lease_fp, loan);
            }
        }
    }
}

/// Spends from the key's lease `l` as read from its slot (and with this
/// worker's last loan repaid): the step, and the lease to write. `busy`:
/// the key is busy enough here for a loan.
pub(super) fn spend_in(policy: &Policy, key: &LeaseKey, ctx: Ctx, carried: Option<u64>, busy: bool, l: crate::lease::Lease) -> Spending {
    let (rule, limit, cost, now) = (key.rule, key.limit, key.cost, ctx.now);
    let credit = credit_allowed(policy, rule, limit);
    // Units granted to this request are its own: nothing to spend
    // here, but it counts in the lease's demand now.
    let (step, mut next) = match carried {
        Some(_) => (Step::Spent, l.spend_carried(now, limit, cost)),
        None => l.spend(now, limit, cost, credit),
    };
    let credited = next.owed > l.owed;
    let lent = if busy && step == Step::Spent && !credited { crate::allowance::loan_size(&next, limit, now) } else { 0 };
    next = next.lend(lent);
    // An exhausted window still reserves the next one ahead of time,
    // at once when requests will queue for it.
    let refill = match step {
        Step::Spent => next.want(now, limit),
        Step::Exhausted { .. } if rule.queue.is_some() => next.want_next(now, limit).map(|w| (w, true)),
        Step::Exhausted { .. } => next.want(now, limit).filter(|(_, ahead)| *ahead),
        // The first waiter asks for the lease (sized to the rate,
        // counting itself: it counts once decided with its units); the
        // others, while that ask is in flight, for themselves only.
        Step::Missing if ctx.may_wait => next.counting(cost).want(now, limit),
        Step::Missing => None,
    };
    if refill.is_some() {
        next.asked_at = now;
    }
    // Holding nothing in a window another instance took: its units may
    // come back (see `Lease::give_back`), so ask along with the
    // reservation ahead, in the same call.
    let top_up = match (step, refill) {
        (Step::Exhausted { .. }, Some((_, true))) => next.top_up(now, limit),
        _ => None,
    };
    Spending { step, lease: next, refill, top_up, credited, lent }
}

/// The lease's own ask for `want` units of a rule's key.
fn lease_need((rule, limit): (&Rule, &Limit), i: usize, fp: u64, id: &str, want: u32, next: bool) -> LeaseNeed {
    LeaseNeed {
        rule: i,
        fingerprint: fp,
        owns_ask: true,
        carry: 0,
        bucket: fp,
        ask: Ask { calendar: limit.calendar, ..Ask::new(rule.name.clone(), id.to_owned(), limit.requests, limit.per.nanos() / 1_000_000, want, next) },
    }
}

/// The reservation ahead of a global rule that a refused request did not
/// reach (another rule refused it first), made when the refusing rule
/// reserves ahead, for as many units (`want`, at most this rule's limit):
/// so that an instance renews the budgets of all the rules of its
/// requests together, in the same call, rather than only the one that
/// refuses first (whose units it could not use without the others', while
/// another instance that won the others' could not use them either). Only
/// for rules whose reservations may span windows (see `Spans`), and when
/// the lease has nothing reserved ahead and no ask in flight.
pub(super) fn plan_ahead(
    policy: &Policy,
    (rule, limit): (&Rule, &Limit),
    i: usize,
    (fp, id): (u64, &str),
    want: u32,
    store: &dyn SharedStore,
    now: u64,
) -> Result<Option<LeaseNeed>, StoreError> {
    if rule.queue.is_some() || rule.obey_upstream || limit.requests < super::SPAN_MIN_LIMIT {
        return Ok(None);
    }
    let per = limit.window_ns(now);
    let want = u32::try_from(u64::from(want).min(limit.requests)).unwrap_or(u32::MAX);
    let planned = store::lease_update(store, policy.slots, fp, limit, now, |l| {
        let mut next = l.roll(now, per);
        if next.asking(now) || next.has_next() {
            return (false, None);
        }
        next.asked_at = now;
        (true, Some(next))
    })?;
    Ok(planned.then(|| lease_need((rule, limit), i, fp, id, want, true)))
}

/// A global rule without its counter service: `failure_mode` decides.
fn fail(policy: &Policy, key: &LeaseKey, store: &dyn SharedStore, now: u64) -> Result<(Verdict, LeaseEffects), StoreError> {
    let rule = key.rule;
    match rule.failure_mode {
        FailureMode::Open => {
            let limit = fallback_limit(policy, rule);
            let fallback_fp = derived(key.fp, b"fallback");
            let o = store::take(store, policy.slots, fallback_fp, rule.algorithm, &limit, now, key.cost)?;
            let spent = o.allowed.then_some(Spent::Bucket { rule: key.index, fingerprint: fallback_fp, fallback: true, cost: key.cost });
            Ok((Verdict::Decided(o), LeaseEffects { spent, ..LeaseEffects::default() }))
        }
        FailureMode::Closed => {
            let o = Outcome { allowed: true, remaining: 0, reset_ns: 0, retry_after_ns: 0 };
            Ok((Verdict::Decided(o), LeaseEffects { unavailable: true, ..LeaseEffects::default() }))
        }
    }
}
