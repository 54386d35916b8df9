//! Worker shares of a global rule's lease: the same idea as a bucket's
//! share (see the parent module), for the units an instance holds of a
//! key's global budget.
//!
//! A lease's units are already this instance's (the counter service
//! counted them when it granted them), so a worker may take some into its
//! memory without any bound to keep beyond the lease's own: it *lends*
//! them, in the compare-and-swap of a request that spends from the lease
//! (`Lease::lend`: out of `units`, into `held`), admits the key's next
//! requests from them, and *repays* in the compare-and-swap of its next
//! decision on the key, or on its tick: what it admitted is counted in the
//! window's demand (`seen`), the rest goes back to `units` (`Lease::repay`).
//!
//! - **Never more than the lease.** A lent unit is out of every other
//!   worker's reach, and a worker spends only units it was lent, only in
//!   the window they were granted for: it stops at the window's end as the
//!   lease knew it, and the lease forgets what it lent when the window
//!   ends (units lent and not spent are lost with the window, as unspent
//!   units always are).
//! - **What it may cost.** Units lent to one worker are out of the others'
//!   reach until repaid (at most [`SPEND_WITHIN_NS`], 250 ms, or the
//!   worker's next tick after it): a loan is a sixteenth of the limit at
//!   most and a quarter of what the lease holds, and only while the lease
//!   holds at least twice the loan besides. The refill sizing counts lent
//!   units as the instance's (`Lease::held_here`), so a loan never makes
//!   the instance ask the service for more; the requests admitted from a
//!   loan count in the demand when it is repaid (up to 250 ms late).
//! - **Which rules.** Those whose buckets may be shared (see
//!   [`super::eligible`]: no cost, queue, priority, penalty, upstream
//!   blocks, adaptive limit or refunds) with a limit of at least 32 per
//!   window (a sixteenth of it is at least 2) and no calendar budget; only
//!   for a key this worker decided within [`SPEND_WITHIN_NS`], whose
//!   window is known, owes nothing and is not contested.

use super::{Allowances, MAX_HELD_KEYS, MIN_SHARE, SHARE_DIVISOR, SPEND_WITHIN_NS};
use crate::bucket::Outcome;
use crate::lease::Lease;
use crate::policy::{Limit, Rule};

/// Units of one key's lease lent to this worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Loan {
    pub slots: u32,
    /// The key's slot, where its lease is (its bucket's fingerprint).
    pub slot_fp: u64,
    pub limit: Limit,
    pub window: u64,
    pub lent: u32,
    pub spent: u32,
    /// When it may no longer be spent: the window's end, or
    /// [`SPEND_WITHIN_NS`] after it was lent.
    pub stop_at: u64,
    pub ends_at: u64,
    /// The global budget left as of the loan (for the response headers).
    pub global_left: u64,
}

/// Whether a global rule's lease may be lent to workers (see the module
/// documentation).
pub fn lease_eligible(rule: &Rule, limit: &Limit) -> bool {
    super::eligible(rule) && limit.calendar.is_none() && limit.requests / SHARE_DIVISOR >= MIN_SHARE
}

/// The loan a worker takes of a lease that was just spent from (0: none):
/// a sixteenth of the limit, at most a quarter of the units left, while
/// the key owes nothing, is not contested and its window has time left.
pub fn loan_size(lease: &Lease, limit: &Limit, now: u64) -> u32 {
    if lease.window == 0 || lease.owed > 0 || lease.contested(limit) || now >= lease.ends_at {
        return 0;
    }
    let k = (limit.requests / SHARE_DIVISOR).min(u64::from(lease.units / 4));
    if k >= MIN_SHARE {
        u32::try_from(k).unwrap_or(0)
    } else {
        0
    }
}

impl Allowances {
    /// Admits `cost` units of the key from this worker's loan of its
    /// lease, if it holds enough of one for `limit` that may still be
    /// spent: the request's outcome for the rule.
    pub fn spend_lease(&mut self, lease_fp: u64, limit: &Limit, now: u64, cost: u64) -> Option<Outcome> {
        let cost = self.loan_holds(lease_fp, limit, now, cost)?;
        let l = self.loans.get_mut(&lease_fp)?;
        l.spent = l.spent.saturating_add(cost);
        let remaining = l.global_left.saturating_sub(u64::from(l.spent));
        Some(Outcome { allowed: true, remaining, reset_ns: l.ends_at.saturating_sub(now), retry_after_ns: 0 })
    }

    /// Whether this worker holds enough of a loan of the key's lease for
    /// `limit` that may still be spent: the cost, then.
    pub(crate) fn loan_holds(&self, lease_fp: u64, limit: &Limit, now: u64, cost: u64) -> Option<u32> {
        let l = self.loans.get(&lease_fp)?;
        let cost = u32::try_from(cost).ok()?;
        (now < l.stop_at && l.limit == *limit && cost <= l.lent.saturating_sub(l.spent)).then_some(cost)
    }

    /// Takes the key's loan out, to repay it in the compare-and-swap to
    /// come; and whether the key is busy enough here for a new one.
    pub(crate) fn take_loan(&mut self, lease_fp: u64, now: u64) -> (Option<Loan>, bool) {
        let old = self.loans.remove(&lease_fp);
        let busy = self.busy(lease_fp, now) && self.len() < MAX_HELD_KEYS;
        (old, busy)
    }

    /// Keeps a loan the worker was just granted (or one it could not repay).
    pub(crate) fn keep_loan(&mut self, lease_fp: u64, loan: Loan) {
        self.loans.insert(lease_fp, loan);
    }

    /// Gives back to a loan what a refused request took from it.
    pub(super) fn give_back_loan(&mut self, lease_fp: u64, cost: u64) -> bool {
        match self.loans.get_mut(&lease_fp) {
            Some(l) => {
                l.spent = l.spent.saturating_sub(u32::try_from(cost).unwrap_or(u32::MAX));
                true
            }
            None => false,
        }
    }
}

impl Loan {
    /// A loan of `lent` units of `lease` (as just written in the slot
    /// `slot_fp` of a table of `slots`), at `now`.
    pub(crate) fn new((slots, slot_fp): (u32, u64), limit: &Limit, lease: &Lease, lent: u32, now: u64) -> Loan {
        Loan {
            slots,
            slot_fp,
            limit: *limit,
            window: lease.window,
            lent,
            spent: 0,
            stop_at: now.saturating_add(SPEND_WITHIN_NS).min(lease.ends_at),
            ends_at: lease.ends_at,
            global_left: lease.global_left(limit),
        }
    }

    /// The lease with this loan repaid at `now`.
    pub(crate) fn repaid(&self, lease: Lease, now: u64) -> Lease {
        lease.repay(now, &self.limit, self.window, self.lent, self.spent)
    }
}
