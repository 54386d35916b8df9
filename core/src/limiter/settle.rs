//! Charging more to what an admitted request spent, when its response
//! says it cost more than its estimate (a cost read from the response, see
//! `flow::settle`). The surplus of an estimate goes back through
//! [`super::give_back`]; this is the other direction, and it never refuses:
//! the request already happened.

use super::{fallback_limit, Spent};
use crate::policy::Policy;
use crate::store::{self, SharedStore, StoreError};

/// Charges `extra` units more to the bucket or lease `spent` took from,
/// past its limit if need be: a bucket's key then waits longer for its
/// next requests; a lease's units run out sooner, and what it lacks is
/// owed to the counter service (paid by the lease's next grant). A
/// concurrency unit has nothing to charge.
pub fn charge(policy: &Policy, store: &dyn SharedStore, spent: &Spent, extra: u64, now: u64) -> Result<(), (usize, StoreError)> {
    match *spent {
        Spent::Bucket { rule, fingerprint, fallback, .. } => {
            let Some(r) = policy.rules.get(rule) else { return Ok(()) };
            // An adaptive rule whose health cannot be read charges
            // against its configured limit, as a refund does.
            let limit = if fallback { fallback_limit(policy, r) } else { crate::adaptive::limit(store, r).unwrap_or(r.limit) };
            store::charge(store, policy.slots, fingerprint, r.algorithm, &limit, now, extra).map_err(|e| (rule, e))
        }
        Spent::Lease { rule, fingerprint, .. } => {
            let Some(r) = policy.rules.get(rule) else { return Ok(()) };
            store::lease_update(store, policy.slots, fingerprint, &r.limit, now, |l| ((), Some(l.charge(now, &r.limit, extra)))).map_err(|e| (rule, e))
        }
        // Rules with a cost get no share (`allowance::eligible`).
        Spent::Concurrent { .. } | Spent::Share { .. } => Ok(()),
    }
}

/// The same spend with another cost (what a give-back or a charge moves).
pub fn with_cost(spent: &Spent, units: u64) -> Spent {
    match *spent {
        Spent::Bucket { rule, fingerprint, fallback, .. } => Spent::Bucket { rule, fingerprint, fallback, cost: units },
        Spent::Lease { rule, fingerprint, window, .. } => Spent::Lease { rule, fingerprint, window, cost: units },
        Spent::Share { rule, fingerprint, .. } => Spent::Share { rule, fingerprint, cost: units },
        other => other,
    }
}

/// What a spend cost (a concurrency unit: nothing to settle).
pub fn cost_of(spent: &Spent) -> Option<u64> {
    match *spent {
        Spent::Bucket { cost, .. } | Spent::Lease { cost, .. } | Spent::Share { cost, .. } => Some(cost),
        Spent::Concurrent { .. } => None,
    }
}
