//! The penalty box: a key its rule keeps refusing (`after` refusals within
//! `within`) is refused outright for `block`. Each key has a second slot
//! beside its bucket, a token bucket of strikes (`Penalty::strikes`): a
//! refusal takes a strike; taking the last one boxes the key, which keeps
//! the strikes empty until the box ends. A request first looks at the
//! strikes (one read): a boxed key is refused there, its bucket untouched.
//! A global rule's box is shared through the counter service, which then
//! grants the key nothing at any instance; another instance boxes the key
//! when an answer tells it so (`box_until`).

use crate::bucket::Outcome;
use crate::policy::{Algorithm, Policy, Rule};
use crate::store::{self, SharedStore, StoreError};

/// The slot of a key's strikes, beside the key's bucket `key_fp` (any
/// other fixed function would do: the key's fingerprint is keyed already).
pub fn strikes_fingerprint(key_fp: u64) -> u64 {
    crate::hash::fnv1a(&[key_fp.to_le_bytes(), *b"penalty!"].concat())
}

/// The refusal of a boxed key, or `None` when it is not boxed.
pub(super) fn boxed(policy: &Policy, store: &dyn SharedStore, rule: &Rule, key_fp: u64, now: u64) -> Result<Option<Outcome>, StoreError> {
    let Some(p) = rule.penalty.as_ref() else { return Ok(None) };
    let o = store::peek(store, policy.slots, strikes_fingerprint(key_fp), Algorithm::TokenBucket, &p.strikes(), now, 1)?;
    Ok((!o.allowed).then_some(Outcome { allowed: false, remaining: 0, reset_ns: o.retry_after_ns, retry_after_ns: o.retry_after_ns }))
}

/// Counts one refusal of the key; true when it boxes the key (until
/// `now + block`).
pub(super) fn strike(policy: &Policy, store: &dyn SharedStore, rule: &Rule, key_fp: u64, now: u64) -> Result<bool, StoreError> {
    let Some(p) = rule.penalty.as_ref() else { return Ok(false) };
    let (strikes, fp) = (p.strikes(), strikes_fingerprint(key_fp));
    let until = now.saturating_add(p.block.nanos());
    store::cas_update(store, policy.slots, fp, &strikes, now, |st| {
        let (o, next) = st.take(Algorithm::TokenBucket, &strikes, now, 1);
        match next {
            // Boxed already (a refusal that raced the box).
            _ if !o.allowed => (false, None),
            Some(next) if o.remaining == 0 => (true, Some(next.block(&strikes, now, until).0)),
            next => (false, next),
        }
    })
}

/// Boxes the key until `until` (another instance boxed it); true when
/// this starts a box here.
pub(super) fn box_until(policy: &Policy, store: &dyn SharedStore, rule: &Rule, key_fp: u64, now: u64, until: u64) -> Result<bool, StoreError> {
    let Some(p) = rule.penalty.as_ref() else { return Ok(false) };
    let strikes = p.strikes();
    store::cas_update(store, policy.slots, strikes_fingerprint(key_fp), &strikes, now, |st| {
        let (next, started) = st.block(&strikes, now, until);
        (started, Some(next))
    })
}
