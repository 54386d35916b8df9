//! A global rule's bucket and lease decided in one compare-and-swap.
//!
//! The key's lease is kept beside its bucket, in one slot (see `slot`).
//! When a request needs the slot for both (neither this worker's share of
//! the bucket nor its loan of the lease answers it from memory), one read
//! and one write decide both: the bucket's unit is taken, then the
//! lease's. When the lease does not spend (the window's budget is gone, or
//! the request waits for the counter service), the bucket's unit is not
//! taken either, in the same write, where the usual order took it and
//! then gave it back. So a request of a global rule costs the slot calls
//! of a local one, and a refusal for want of global budget two.
//!
//! What is decided is the usual order's: the bucket first (its refusal is
//! the rule's, and the lease never sees that request), then the lease,
//! which counts the demand of the requests the bucket admits. Rules this
//! does not take: those with a queue or priority classes (their turns and
//! reserves), an adaptive limit (read from another key), and requests
//! that carry units granted to them, or that meet the rule while the
//! counter service is away (its failure mode decides).

use super::{global, Pass, Spent};
use crate::allowance::Taking;
use crate::bucket::Outcome;
use crate::lease::Step;
use crate::policy::{Rule, Scope};
use crate::slot::Slot;
use crate::store::{self, StoreError};

/// What deciding a rule's bucket and lease together gave.
pub(super) enum Joint {
    /// Not tried: the usual order decides.
    No,
    /// The key has no slot: the rule's overflow bucket decides.
    Full,
    /// The request waits (for the counter service or a window), or the
    /// rule failed (recorded).
    Waits,
    /// The rule's outcome.
    Decided(Outcome),
}

impl Pass<'_, '_> {
    /// Whether rule `i`'s bucket and lease may be decided together for
    /// this request (see the module documentation).
    fn joint_applies(&self, i: usize, rule: &Rule, cost: u64) -> bool {
        let carries = self.carried_units(i, cost).is_some();
        rule.scope == Scope::Global && rule.queue.is_none() && rule.priority.is_none() && rule.adaptive.is_none() && !self.ctx.degraded && !carries
    }

    /// Decides rule `i` (global, applying, not yet refused by another
    /// rule, no turn kept) in one compare-and-swap of the key's slot.
    pub(super) fn joint(&mut self, i: usize, rule: &Rule, (fp, cost): (u64, u64), id: &mut Option<String>) -> Joint {
        if !self.joint_applies(i, rule, cost) {
            return Joint::No;
        }
        let (policy, store, ctx, now) = (self.policy, self.store, self.ctx, self.ctx.now);
        let limit = rule.limit;
        let memory = store.allowances();
        let shares = memory.filter(|_| crate::allowance::eligible(rule));
        let lease_fp = global::loan_key(fp);
        let loans = memory.filter(|_| crate::allowance::lease_eligible(rule, &limit));
        // Memory answers one of them: the usual order, one slot update.
        let remembered = shares.is_some_and(|a| a.borrow().looked(fp, &limit, now, cost).is_some());
        if remembered || loans.is_some_and(|a| a.borrow().loan_holds(lease_fp, &limit, now, cost).is_some()) {
            return Joint::No;
        }
        let mut key = global::LeaseKey { rule, limit: &limit, index: i, fp, cost, id: String::new() };
        let taking = shares.map_or_else(Taking::default, |a| a.borrow_mut().start_take(fp, &limit, now));
        let (old, busy) = loans.map_or((None, false), |a| a.borrow_mut().take_loan(lease_fp, now));
        let result = store::cas_update_slot(store, policy.slots, fp, &limit, now, |slot| {
            let t = taking.take(rule.algorithm, &limit, now, cost, (slot.state, slot.flags, slot.reserved));
            let bucket = |parts: Option<_>| parts.map_or(slot, |(state, flags, reserved)| Slot { state, flags, reserved, ..slot });
            if !t.outcome.allowed {
                return ((t, None), t.after.map(|_| bucket(t.after)));
            }
            let lease = old.as_ref().map_or(slot.lease, |loan| loan.repaid(slot.lease, now));
            let s = global::spend_in(policy, &key, ctx, None, busy, lease);
            let t = if s.step == Step::Spent { t } else { t.given_back() };
            ((t, Some(s)), Some(Slot { lease: s.lease, ..bucket(t.after) }))
        });
        if let Some(a) = shares {
            a.borrow_mut().end_take(taking, (policy.slots, fp), &limit, now, result.as_ref().ok().map(|(t, _)| t));
        }
        global::end_loan((policy.slots, now), &key, (lease_fp, loans), old, result.as_ref().ok().map(|(_, s)| s.as_ref()));
        let (t, spending) = match result {
            Ok(r) => r,
            Err(StoreError::Full) => return Joint::Full,
            // The usual order meets it again, and records it.
            Err(_) => return Joint::No,
        };
        self.d.books.notes.extend(t.note.map(|n| (i, n)));
        if let Some(a) = shares {
            a.borrow_mut().note_outcome((i, fp), &limit, now, &t.outcome);
        }
        let Some(s) = spending else { return Joint::Decided(t.outcome) };
        key.id = id.take().unwrap_or_default();
        if rule.obey_upstream {
            self.d.effects.global_ids.push((i, key.id.clone()));
        }
        if s.step == Step::Spent {
            self.spent.push(Spent::Bucket { rule: i, fingerprint: fp, fallback: false, cost });
        }
        let decided = global::verdict(policy, &key, store, ctx, None, &s);
        self.leased(i, rule, cost, decided).map_or(Joint::Waits, Joint::Decided)
    }
}
