//! Refusals a worker remembers: a key whose bucket just refused a request
//! is refused again from the worker's memory, without a shared-data read,
//! until the bucket could admit its next request.
//!
//! A client that keeps sending past its limit (a retry loop, a flood) gets
//! most of its requests refused, and each refusal read the key's slot: one
//! crossing into Envoy and an allocation callback, plus a read of every
//! other rule the request met (their outcomes go into the refusal's
//! headers and `Retry-After`). When a bucket refuses, its answer says when
//! its next unit comes (`retry_after`): no request can be admitted before
//! then, whoever decides it, since other requests only ever take units.
//! So the worker keeps that moment, and refuses the key's requests from
//! memory until it, with the outcome the slot would give (the same
//! `Retry-After` and reset, counted down). A refused request's look at its
//! other rules is answered from memory too: from such a refusal, or from a
//! share the worker holds of the key ([`super::Allowances::spend`]'s view,
//! without spending).
//!
//! What it may cost: units can come back before that moment after all,
//! when another worker settles a share it reserved while the key was far
//! from its limit (the slot counted it as spent), or when a request
//! another worker admitted is refused by a later rule and gives its unit
//! back. Such a unit is out of this worker's reach until the refusal it
//! remembers ends: at most [`REFUSED_FOR_NS`] (100 ms), however far the
//! bucket's next unit is. Only rules whose buckets may be shared
//! ([`super::eligible`]: a token bucket, one unit a request, no queue,
//! priority, penalty, refunds or adaptive limit) are remembered; a key's
//! first refusal in an episode is decided in its slot, which notes it.
//! At most [`MAX_REFUSED_KEYS`] keys are remembered per worker; past it,
//! refusals are read from the slot as before.

use super::Allowances;
use crate::bucket::Outcome;
use crate::policy::Limit;

/// How long a worker refuses a key from memory at most.
pub const REFUSED_FOR_NS: u64 = 100_000_000;
/// Keys a worker remembers a refusal of, at most.
pub const MAX_REFUSED_KEYS: usize = 4096;

/// A refusal remembered: under which limit, until when, and the moments
/// its outcome counts down to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Refusal {
    rule: usize,
    limit: Limit,
    until: u64,
    retry_at: u64,
    reset_at: u64,
}

impl Refusal {
    fn outcome(&self, now: u64) -> Outcome {
        Outcome { allowed: false, remaining: 0, reset_ns: self.reset_at.saturating_sub(now), retry_after_ns: self.retry_at.saturating_sub(now) }
    }
}

impl Allowances {
    /// The refusal of the key this worker remembers under `limit`, if it
    /// still holds at `now`.
    pub fn refused(&self, fingerprint: u64, limit: &Limit, now: u64) -> Option<Outcome> {
        if self.refusals.is_empty() {
            return None;
        }
        let r = self.refusals.get(&fingerprint)?;
        (now < r.until && r.limit == *limit).then(|| r.outcome(now))
    }

    /// What the key's bucket would say of `cost` more units, from memory:
    /// a refusal remembered, or the share this worker holds (without
    /// spending from it). `None`: only the slot can tell.
    pub fn looked(&self, fingerprint: u64, limit: &Limit, now: u64, cost: u64) -> Option<Outcome> {
        self.refused(fingerprint, limit, now).or_else(|| self.share_outcome(fingerprint, limit, now, cost))
    }

    /// Remembers the refusal `o` of the key's bucket (of policy rule
    /// `rule`) under `limit` at `now`; an admission forgets any earlier one.
    pub fn note_outcome(&mut self, (rule, fingerprint): (usize, u64), limit: &Limit, now: u64, o: &Outcome) {
        if o.allowed || o.retry_after_ns == 0 {
            // Most outcomes admit: no hashing while nothing is remembered.
            if !self.refusals.is_empty() {
                self.refusals.remove(&fingerprint);
            }
            return;
        }
        if self.refusals.len() >= MAX_REFUSED_KEYS && !self.refusals.contains_key(&fingerprint) {
            self.forget_refusals(now);
            if self.refusals.len() >= MAX_REFUSED_KEYS {
                return;
            }
        }
        let retry_at = now.saturating_add(o.retry_after_ns);
        if !self.refusing.contains(&rule) {
            self.refusing.push(rule);
        }
        let refusal = Refusal {
            rule,
            limit: *limit,
            until: now.saturating_add(o.retry_after_ns.min(REFUSED_FOR_NS)),
            retry_at,
            reset_at: now.saturating_add(o.reset_ns),
        };
        self.refusals.insert(fingerprint, refusal);
    }

    /// Forgets the refusals that no longer hold at `now`.
    pub(super) fn forget_refusals(&mut self, now: u64) {
        self.refusals.retain(|_, r| now < r.until);
        self.refusing.clear();
        for r in self.refusals.values() {
            if !self.refusing.contains(&r.rule) {
                self.refusing.push(r.rule);
            }
        }
    }

    /// The policy rules this worker may remember a refusal of (those it
    /// noted one of since its last tick).
    pub fn refusing_rules(&self) -> &[usize] {
        &self.refusing
    }

    /// Keys this worker remembers a refusal of.
    pub fn refusals(&self) -> usize {
        self.refusals.len()
    }
}
