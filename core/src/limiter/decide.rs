//! One request's decision, step by step: each rule that applies takes from
//! its bucket (or its concurrency units), a global rule then from its
//! lease (both in one write of their slot where it can, see `joint`);
//! the rules a refused request did not reach reserve ahead with the
//! one that refused it; what the request spent is kept, carried or given
//! back. See the module documentation of `limiter` for the order and what
//! is decided.

use super::attrs::Attrs;
use super::{global, refund, Carry, Ctx, Decision, RuleOutcome, Spent, TICK_GRACE_NS};
use crate::bucket::Outcome;
use crate::policy::{Limit, Policy, Queue, Rule, Scope};
use crate::request::Request;
use crate::store::{self, SharedStore, StoreError};
use joint::Joint;

mod joint;

/// The rules in the order they are evaluated: local rules first, then
/// global ones (each in policy order). A request a local rule refuses then
/// only peeks at its global rules' buckets, instead of spending from their
/// buckets and leases and giving it all back (several shared-data
/// round trips). What is decided does not depend on the order.
fn evaluation_order(policy: &Policy) -> impl Iterator<Item = (usize, &Rule)> {
    let local = policy.rules.iter().enumerate().filter(|(_, r)| r.scope != Scope::Global);
    local.chain(policy.rules.iter().enumerate().filter(|(_, r)| r.scope == Scope::Global))
}

/// Decides a request again, with what it already holds (`carried`: the
/// units its own reserve call was granted, the turns it kept).
pub fn decide_carrying(policy: &Policy, req: &mut dyn Request, store: &dyn SharedStore, ctx: Ctx, carried: &[Carry]) -> Decision {
    let mut pass = Pass::new(policy, req, store, ctx, carried);
    let first = pass.refused_first();
    if let Some((i, rule)) = first.and_then(|i| Some((i, policy.rules.get(i)?))) {
        pass.rule(i, rule);
    }
    for (i, rule) in evaluation_order(policy).filter(|(i, _)| Some(*i) != first) {
        pass.rule(i, rule);
    }
    pass.plan_unreached();
    pass.finish()
}

/// A decision in progress.
struct Pass<'p, 'r> {
    policy: &'p Policy,
    store: &'p dyn SharedStore,
    ctx: Ctx,
    carried: &'p [Carry],
    attrs: Attrs<'r>,
    exempt: bool,
    d: Decision,
    /// Turns taken in queues (kept ones included).
    turns: Vec<Carry>,
    /// What the request spent so far.
    spent: Vec<Spent>,
    /// Global rules a refused request did not reach, with their limits.
    unreached: Vec<(usize, Limit)>,
}

/// What a rule's bucket said.
enum Took {
    /// Its outcome, and how long the request waits for its turn.
    /// `shared`: spent from this worker's share, not from the slot.
    Decided { outcome: Outcome, wait: u64, fp: u64, overflowed: bool, limit: Limit, shared: bool },
    /// A lower priority class waits for room and is decided again then.
    WaitsForRoom,
    /// The store failed (recorded in the decision).
    Failed { overflowed: bool, limit: Limit },
}

impl<'p, 'r> Pass<'p, 'r> {
    fn new(policy: &'p Policy, req: &'r mut dyn Request, store: &'p dyn SharedStore, ctx: Ctx, carried: &'p [Carry]) -> Pass<'p, 'r> {
        let attrs = Attrs::new(req);
        let exempt = policy.exempt_paths.iter().any(|p| p.eq_ignore_ascii_case(&attrs.path));
        // Kept turns are spent already: a denial gives them back like the rest.
        let turns: Vec<Carry> = carried.iter().filter(|c| matches!(c, Carry::Turn { .. })).copied().collect();
        let spent: Vec<Spent> = turns.iter().filter_map(Carry::spent).collect();
        Pass { policy, store, ctx, carried, attrs, exempt, d: Decision::default(), turns, spent, unreached: Vec::new() }
    }

    /// A rule this worker remembers refusing the request's key (see
    /// `allowance::refusals`): decided first, so that the request's other
    /// rules are only looked at, not spent from and given back.
    fn refused_first(&mut self) -> Option<usize> {
        let shares = self.store.allowances()?;
        if shares.borrow().refusing_rules().is_empty() {
            return None;
        }
        let rules = shares.borrow().refusing_rules().to_vec();
        rules.into_iter().find(|&i| {
            let Some(rule) = self.policy.rules.get(i).filter(|r| crate::allowance::eligible(r)) else { return false };
            let Some(params) = self.attrs.applies(self.policy, rule, self.exempt) else { return false };
            let Some((fp, _)) = self.attrs.key(self.policy, rule, &params) else { return false };
            shares.borrow().refused(fp, &rule.limit, self.ctx.now).is_some()
        })
    }

    /// Decides one rule, if it applies.
    fn rule(&mut self, i: usize, rule: &Rule) {
        let Some(params) = self.attrs.applies(self.policy, rule, self.exempt) else { return };
        let Some((key_fp, mut id)) = self.attrs.key(self.policy, rule, &params) else { return };
        let cost = self.attrs.cost(rule);
        let denied = !self.d.allowed();
        if rule.concurrent {
            match super::concurrent(self.store, rule, i, key_fp, cost, denied, self.ctx, &mut self.spent) {
                Ok(outcome) => report(&mut self.d, rule, i, rule.limit.requests, rule.limit.burst, outcome, denied),
                Err(e) => self.d.books.errors.push((i, e)),
            }
            return;
        }
        if rule.penalty.is_some() && self.boxed(i, rule, key_fp, denied) {
            return;
        }
        // Kept for a box to share (the lease takes the id).
        let box_id = rule.penalty.as_ref().and(id.clone());
        let kept_turn = self.kept_turn(i, key_fp);
        let mut full = false;
        if !denied && kept_turn.is_none() {
            match self.joint(i, rule, (key_fp, cost), &mut id) {
                Joint::No => {}
                Joint::Full => full = true,
                Joint::Waits => return,
                Joint::Decided(outcome) => return self.close(i, rule, (key_fp, box_id), &rule.limit, outcome, false),
            }
        }
        let (mut outcome, wait, fp, overflowed, limit, shared) = match self.take(i, rule, (key_fp, full), cost, denied, kept_turn) {
            Took::Decided { outcome, wait, fp, overflowed, limit, shared } => (outcome, wait, fp, overflowed, limit, shared),
            Took::WaitsForRoom => return,
            Took::Failed { overflowed, limit } => {
                self.note_unreached(i, rule, denied, overflowed, limit);
                return;
            }
        };
        self.note_unreached(i, rule, denied, overflowed, limit);
        self.d.ruling.hold_ns = self.d.ruling.hold_ns.max(wait);
        if outcome.allowed && !denied {
            if shared {
                self.spent.push(Spent::Share { rule: i, fingerprint: fp, cost });
            } else if kept_turn.is_none() {
                let fallback = overflowed && rule.scope == Scope::Global;
                self.spent.push(Spent::Bucket { rule: i, fingerprint: fp, fallback, cost });
                if rule.queue.is_some() {
                    self.turns.push(Carry::Turn { rule: i, fingerprint: fp, at: self.ctx.now.saturating_add(wait), cost });
                }
            }
            if rule.scope == Scope::Global && !overflowed {
                match self.lease(i, rule, &limit, (fp, cost), id.take().unwrap_or_default(), wait) {
                    Some(o) => outcome = o,
                    None => return,
                }
            }
        }
        self.close(i, rule, (key_fp, box_id), &limit, outcome, denied);
    }

    /// Reports rule `i`'s outcome; a refusal strikes the key of a rule
    /// with a penalty box.
    fn close(&mut self, i: usize, rule: &Rule, (key_fp, box_id): (u64, Option<String>), limit: &Limit, outcome: Outcome, denied: bool) {
        report(&mut self.d, rule, i, limit.requests, store::capacity(rule.algorithm, limit), outcome, denied);
        if rule.penalty.is_some() && !outcome.allowed && !rule.shadow {
            self.strike(i, rule, key_fp, box_id);
        }
    }

    /// A rule with a penalty box: whether the key is in it (then the rule
    /// refused the request, its bucket untouched).
    fn boxed(&mut self, i: usize, rule: &Rule, key_fp: u64, denied: bool) -> bool {
        match super::penalty::boxed(self.policy, self.store, rule, key_fp, self.ctx.now) {
            Ok(Some(outcome)) => {
                self.d.books.boxed.push(i);
                report(&mut self.d, rule, i, rule.limit.requests, rule.limit.burst, outcome, denied);
                true
            }
            Ok(None) => false,
            Err(e) => {
                self.d.books.errors.push((i, e));
                false
            }
        }
    }

    /// The rule refused the request: one strike against its key.
    fn strike(&mut self, i: usize, rule: &Rule, key_fp: u64, id: Option<String>) {
        match super::penalty::strike(self.policy, self.store, rule, key_fp, self.ctx.now) {
            Ok(true) => self.d.effects.boxes.push((i, id.filter(|_| rule.scope == Scope::Global))),
            Ok(false) => {}
            Err(e) => self.d.books.errors.push((i, e)),
        }
    }

    /// A global rule a refused request only looked at (see
    /// `plan_unreached`).
    fn note_unreached(&mut self, i: usize, rule: &Rule, denied: bool, overflowed: bool, limit: Limit) {
        if denied && rule.scope == Scope::Global && !overflowed && !self.ctx.degraded {
            self.unreached.push((i, limit));
        }
    }

    /// When the turn this request kept in rule `i`'s queue comes.
    fn kept_turn(&self, i: usize, key_fp: u64) -> Option<u64> {
        let overflow_fp = store::overflow_fingerprint(i);
        self.carried.iter().find_map(|c| match *c {
            Carry::Turn { rule, fingerprint, at, .. } if rule == i && (fingerprint == key_fp || fingerprint == overflow_fp) => Some(at),
            _ => None,
        })
    }

    /// The rule's bucket: its outcome for this request. A key without a
    /// free slot is decided against the rule's overflow bucket; a global
    /// rule's, like its fallback, at limit / instances and without a lease
    /// (the lease is per key).
    /// `full`: the key is known to have no slot.
    fn take(&mut self, i: usize, rule: &Rule, (key_fp, full): (u64, bool), cost: u64, denied: bool, kept_turn: Option<u64>) -> Took {
        // An adaptive rule's limit as it stands (its configured one
        // otherwise, and when its health cannot be read).
        let mut limit = crate::adaptive::limit(self.store, rule).unwrap_or_else(|e| {
            self.d.books.unread.push((i, e));
            rule.limit
        });
        let (mut fp, mut overflowed) = (key_fp, false);
        let mut found = if full { Err(StoreError::Full) } else { self.take_once(i, rule, fp, &limit, cost, denied, kept_turn) };
        loop {
            match found {
                Err(StoreError::Full) if !overflowed => {
                    (fp, overflowed) = (store::overflow_fingerprint(i), true);
                    self.d.books.overflowed.push(i);
                    if rule.scope == Scope::Global {
                        limit = super::fallback_limit(self.policy, rule);
                    }
                    found = self.take_once(i, rule, fp, &limit, cost, denied, kept_turn);
                }
                Ok(Some((outcome, wait, shared))) => return Took::Decided { outcome, wait, fp, overflowed, limit, shared },
                Ok(None) => return Took::WaitsForRoom,
                Err(e) => {
                    self.d.books.errors.push((i, e));
                    return Took::Failed { overflowed, limit };
                }
            }
        }
    }

    /// One try at the bucket `fp`: `Ok(None)` when a lower priority class
    /// waits for room (told to come back, `redo_at`).
    #[allow(clippy::too_many_arguments)]
    fn take_once(
        &mut self,
        i: usize,
        rule: &Rule,
        fp: u64,
        limit: &Limit,
        cost: u64,
        denied: bool,
        kept_turn: Option<u64>,
    ) -> Result<Option<(Outcome, u64, bool)>, StoreError> {
        let (policy, store, now, waited) = (self.policy, self.store, self.ctx.now, self.ctx.waited_ns);
        let room_in = |q: &Queue| q.max_wait.nanos().saturating_add(TICK_GRACE_NS).saturating_sub(waited);
        let class = rule.priority.as_ref().map_or(0, |p| p.class(self.attrs.header(&p.header), waited));
        // This worker's memory of the key's bucket: its share, and the
        // refusal it last gave (see `allowance::refusals`).
        let shares = store.allowances().filter(|_| fp != store::overflow_fingerprint(i) && crate::allowance::eligible(rule));
        match (denied, rule.queue.as_ref(), kept_turn) {
            (true, _, _) => {
                if let Some(o) = shares.and_then(|a| a.borrow().looked(fp, limit, now, cost)) {
                    return Ok(Some((o, 0, false)));
                }
                let o = store::peek(store, policy.slots, fp, rule.algorithm, limit, now, cost)?;
                if let Some(a) = shares {
                    a.borrow_mut().note_outcome((i, fp), limit, now, &o);
                }
                Ok(Some((o, 0, false)))
            }
            (false, _, Some(at)) => {
                let wait = at.saturating_sub(now);
                Ok(Some((Outcome { allowed: true, remaining: 0, reset_ns: wait, retry_after_ns: 0 }, wait, false)))
            }
            (false, queue, None) if class > 0 => {
                // A lower class takes a token only while the higher ones
                // keep theirs; when it queues it waits, without a turn,
                // until there is room for it, and is decided again then.
                let reserve = (class as u64).saturating_mul(rule.priority.as_ref().map_or(0, |p| p.reserve));
                let o = store::take_leaving(store, policy.slots, fp, limit, now, cost, reserve)?;
                if !o.allowed && !rule.shadow && o.retry_after_ns <= queue.map_or(0, room_in) {
                    self.d.ruling.redo_at = Some(self.d.ruling.redo_at.unwrap_or(0).max(now.saturating_add(o.retry_after_ns)));
                    return Ok(None);
                }
                Ok(Some((o, 0, false)))
            }
            (false, Some(q), None) => {
                let left = Queue { max_wait: crate::duration::Span::from_nanos(room_in(q)), ..*q };
                let ((o, wait), note) = store::take_queued_noting(store, policy.slots, fp, limit, &left, now, cost)?;
                self.d.books.notes.extend(note.map(|n| (i, n)));
                Ok(Some((o, wait, false)))
            }
            (false, None, None) => {
                if let Some(o) = shares.and_then(|a| a.borrow().refused(fp, limit, now)) {
                    self.d.books.remembered.push(i);
                    return Ok(Some((o, 0, false)));
                }
                if let Some(o) = shares.and_then(|a| a.borrow_mut().spend(fp, limit, now, cost)) {
                    return Ok(Some((o, 0, true)));
                }
                let (o, note) = match shares {
                    Some(a) => {
                        let taken = crate::allowance::take_noting(a, store, policy.slots, fp, limit, now, cost)?;
                        a.borrow_mut().note_outcome((i, fp), limit, now, &taken.0);
                        taken
                    }
                    None => store::take_noting(store, policy.slots, fp, rule.algorithm, limit, now, cost)?,
                };
                self.d.books.notes.extend(note.map(|n| (i, n)));
                Ok(Some((o, 0, false)))
            }
        }
    }

    /// A global rule whose bucket admitted the request: its lease. `None`
    /// when the request waits (for a reservation or a window).
    fn lease(&mut self, i: usize, rule: &Rule, limit: &Limit, (fp, cost): (u64, u64), id: String, wait: u64) -> Option<Outcome> {
        let (policy, store) = (self.policy, self.store);
        if rule.obey_upstream {
            self.d.effects.global_ids.push((i, id.clone()));
        }
        let units = self.carried_units(i, cost);
        let key = global::LeaseKey { rule, limit, index: i, fp, cost, id };
        let decided = global::spend_lease(policy, &key, store, self.ctx, units, wait);
        self.leased(i, rule, cost, decided)
    }

    /// The window of the units rule `i`'s own reserve call granted this
    /// request, if it carries `cost` of them.
    fn carried_units(&self, i: usize, cost: u64) -> Option<u64> {
        self.carried.iter().find_map(|c| match *c {
            Carry::Units { rule, window, units } if rule == i && units >= cost => Some(window),
            _ => None,
        })
    }

    /// What rule `i`'s lease decided, its effects taken into the decision:
    /// the rule's outcome, or `None` when the request waits or the rule
    /// failed (see `lease_failed`).
    fn leased(&mut self, i: usize, rule: &Rule, cost: u64, decided: Result<(global::Verdict, global::LeaseEffects), StoreError>) -> Option<Outcome> {
        match decided {
            Ok((verdict, fx)) => {
                self.apply(i, fx);
                match verdict {
                    global::Verdict::Decided(o) => Some(o),
                    global::Verdict::Waits => None,
                }
            }
            Err(e) => self.lease_failed(i, rule, cost, e),
        }
    }

    /// What a global rule's lease could not decide: when the key's lease
    /// (or fallback bucket) found no free slot, the rule's overflow bucket,
    /// as for its bucket; otherwise the error, recorded (`None`).
    fn lease_failed(&mut self, i: usize, rule: &Rule, cost: u64, e: StoreError) -> Option<Outcome> {
        let (policy, store, now) = (self.policy, self.store, self.ctx.now);
        let taken = match e {
            StoreError::Full => {
                self.d.books.overflowed.push(i);
                let overflow_fp = store::overflow_fingerprint(i);
                let fallback = super::fallback_limit(policy, rule);
                store::take(store, policy.slots, overflow_fp, rule.algorithm, &fallback, now, cost).map(|o| (o, overflow_fp))
            }
            e => Err(e),
        };
        match taken {
            Ok((o, overflow_fp)) => {
                if o.allowed {
                    self.spent.push(Spent::Bucket { rule: i, fingerprint: overflow_fp, fallback: true, cost });
                }
                Some(o)
            }
            Err(e) => {
                self.d.books.errors.push((i, e));
                None
            }
        }
    }

    /// Takes what deciding on rule `i`'s lease left into the decision.
    fn apply(&mut self, i: usize, fx: global::LeaseEffects) {
        let d = &mut self.d;
        self.spent.extend(fx.spent);
        d.effects.refills.extend(fx.refills);
        d.effects.wait_for.extend(fx.wait_for);
        if fx.credited {
            d.books.credited.push(i);
        }
        if let Some(at) = fx.redo_at {
            d.ruling.redo_at = Some(d.ruling.redo_at.unwrap_or(0).max(at));
        }
        if fx.unavailable && d.ruling.unavailable.is_none() {
            d.ruling.unavailable = Some(i);
        }
    }

    /// A refusal that reserves ahead for its rule does so for the global
    /// rules the request did not reach too.
    fn plan_unreached(&mut self) {
        let ahead = self.d.effects.refills.iter().filter(|n| n.ask.next && n.owns_ask).map(|n| n.ask.want).max();
        let (false, Some(want)) = (self.d.allowed(), ahead) else { return };
        for (i, limit) in std::mem::take(&mut self.unreached) {
            let Some(rule) = self.policy.rules.get(i) else { continue };
            let Some(params) = self.attrs.applies(self.policy, rule, self.exempt) else { continue };
            let Some((fp, id)) = self.attrs.key(self.policy, rule, &params) else { continue };
            match global::plan_ahead(self.policy, (rule, &limit), i, (fp, &id.unwrap_or_default()), want, self.store, self.ctx.now) {
                Ok(need) => self.d.effects.refills.extend(need),
                Err(e) => self.d.books.errors.push((i, e)),
            }
        }
    }

    /// The decision: reported in policy order; what a denied request spent
    /// given back; a waiting one keeps its turns only.
    fn finish(mut self) -> Decision {
        let (policy, store, now) = (self.policy, self.store, self.ctx.now);
        let d = &mut self.d;
        d.ruling.applied.sort_by_key(|a| a.rule);
        d.ruling.shadow_denied.sort_by_key(|a| a.rule);
        d.books.notes.sort_by_key(|(i, _)| *i);
        d.effects.global_ids.sort_by_key(|(i, _)| *i);
        if !d.allowed() {
            refund(policy, store, now, &self.spent, d);
            d.ruling.tightest = None;
            d.ruling.hold_ns = 0;
            d.effects.wait_for.clear();
            d.ruling.redo_at = None;
            d.books.credited.clear();
        } else if d.pending() || d.ruling.redo_at.is_some() {
            // Waiting for a lease or a window: keep the turns taken in
            // queues (the request's place in line), give back everything
            // else.
            let kept: Vec<Spent> = self.turns.iter().filter_map(Carry::spent).collect();
            let rest: Vec<Spent> = std::mem::take(&mut self.spent).into_iter().filter(|s| !kept.contains(s)).collect();
            refund(policy, store, now, &rest, d);
            d.effects.kept = std::mem::take(&mut self.turns);
            d.ruling.tightest = None;
            d.ruling.hold_ns = 0;
            d.books.credited.clear();
        } else {
            d.effects.spent = std::mem::take(&mut self.spent);
        }
        d.ruling.tenant = self.attrs.tenant(policy);
        if !d.allowed() {
            d.ruling.jsonrpc = self.attrs.message();
        }
        d.books.mcp_headers_disagree = self.attrs.mcp_headers_disagree();
        self.d
    }
}

/// `a` is closer to its limit than `b`: a smaller share of the limit left.
fn tighter(a: &RuleOutcome, b: &RuleOutcome) -> bool {
    let (la, lb) = (a.limit, b.limit);
    // Two u64 never overflow a u128 product.
    let (x, y) = (u128::from(a.outcome.remaining).saturating_mul(u128::from(lb)), u128::from(b.outcome.remaining).saturating_mul(u128::from(la)));
    // Ties go to the rule first in the policy, whatever the order of evaluation.
    x < y || (x == y && a.rule < b.rule)
}

/// Records one rule's outcome in the decision.
fn report(d: &mut Decision, rule: &Rule, i: usize, limit: u64, capacity: u64, outcome: Outcome, denied: bool) {
    let near = outcome.allowed && u128::from(outcome.remaining) * 5 <= u128::from(capacity);
    let ro = RuleOutcome { rule: i, outcome, limit, near };
    d.ruling.applied.push(ro);
    if outcome.allowed {
        if !denied && d.ruling.tightest.as_ref().is_none_or(|t| tighter(&ro, t)) {
            d.ruling.tightest = Some(ro);
        }
    } else if rule.shadow {
        d.ruling.shadow_denied.push(ro);
    } else if d.ruling.denied_by.as_ref().is_none_or(|w| (outcome.retry_after_ns, std::cmp::Reverse(i)) > (w.outcome.retry_after_ns, std::cmp::Reverse(w.rule)))
    {
        d.ruling.denied_by = Some(ro);
    }
}
