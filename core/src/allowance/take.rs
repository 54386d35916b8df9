//! Taking from a key's bucket in its slot, with this worker's share of
//! the key settled and a new one reserved in the same compare-and-swap
//! (see the parent module); alone, or with a global rule's lease beside
//! it (`limiter::decide::joint`).

use std::cell::RefCell;

use super::{holding, releasing, share, units_ns, Allowances, Reserved, Share, LIFE_NS, MAX_HELD_KEYS, SPEND_WITHIN_NS};
use crate::bucket::{Outcome, State};
use crate::policy::{Algorithm, Limit};
use crate::store::{self, Note, SharedStore, StoreError};

/// Takes `cost` units of the key from its bucket (as `store::take_noting`),
/// in the same compare-and-swap settling this worker's last share of the
/// key and, while the key has more than half its burst left after this
/// request, reserving a new one.
#[allow(clippy::too_many_arguments)]
pub fn take_noting(
    allowances: &RefCell<Allowances>,
    store: &dyn SharedStore,
    slots: u32,
    fingerprint: u64,
    limit: &Limit,
    now: u64,
    cost: u64,
) -> Result<(Outcome, Option<Note>), StoreError> {
    let taking = allowances.borrow_mut().start_take(fingerprint, limit, now);
    let result = store::cas_update_reserved(store, slots, fingerprint, limit, now, |state, flags, reserved| {
        let t = taking.take(Algorithm::TokenBucket, limit, now, cost, (state, flags, reserved));
        (t, t.after)
    });
    allowances.borrow_mut().end_take(taking, (slots, fingerprint), limit, now, result.as_ref().ok());
    result.map(|t| (t.outcome, t.note))
}

/// A take from a key's bucket in progress: the worker's last share of the
/// key, out of its memory until the compare-and-swap settles it, and the
/// share it may reserve (0: none).
#[derive(Debug, Default)]
pub(crate) struct Taking {
    old: Option<Share>,
    k: u64,
}

/// What a take from a bucket gave, and what to write.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Taken {
    /// The outcome the request is told (see [`shown`]).
    pub outcome: Outcome,
    pub note: Option<Note>,
    /// Units reserved for this worker's new share.
    grant: u64,
    tat: u64,
    /// The bucket, its flags and reservations after the take, if changed.
    pub after: Option<(State, u8, Reserved)>,
    /// Them as if the unit had been given back at once (the last share
    /// settled and the flags noted, nothing taken or reserved), if changed.
    pub untaken: Option<(State, u8, Reserved)>,
}

impl Taken {
    /// The take with its unit given back in the same write (see `untaken`).
    pub(crate) fn given_back(self) -> Taken {
        Taken { grant: 0, after: self.untaken, ..self }
    }
}

impl Allowances {
    /// Starts a take from the key's bucket (see [`Taking`]).
    pub(crate) fn start_take(&mut self, fingerprint: u64, limit: &Limit, now: u64) -> Taking {
        let old = self.shares.remove(&fingerprint);
        let busy = self.busy(fingerprint, now);
        Taking { old, k: if busy && self.len() < MAX_HELD_KEYS { share(limit) } else { 0 } }
    }

    /// Ends a take: keeps the share it reserved, or, when it failed
    /// (`None`), the last share back, settled later (by the tick).
    pub(crate) fn end_take(&mut self, taking: Taking, (slots, fingerprint): (u32, u64), limit: &Limit, now: u64, taken: Option<&Taken>) {
        match taken {
            Some(t) if t.grant > 0 => {
                let (until, stop_at) = (now.saturating_add(LIFE_NS), now.saturating_add(SPEND_WITHIN_NS));
                let s = Share { slots, limit: *limit, granted: t.grant, spent: 0, base_tat: t.tat, local_tat: t.tat, stop_at, until };
                self.shares.insert(fingerprint, s);
            }
            Some(_) => {}
            None => {
                if let Some(s) = taking.old {
                    self.shares.insert(fingerprint, s);
                }
            }
        }
    }
}

impl Taking {
    /// Takes `cost` units from a bucket as stored (reserved units not
    /// counted in its state): the last share settled first.
    pub(crate) fn take(&self, algorithm: Algorithm, limit: &Limit, now: u64, cost: u64, (state, flags, reserved): (State, u8, Reserved)) -> Taken {
        let (state, reserved) = self.old.as_ref().map_or((state, reserved), |s| s.settled(state, reserved, now));
        let held = reserved.live(now);
        let (o, next) = holding(state, limit, now, held).take(algorithm, limit, now, cost);
        let (f, note) = store::noted(&o, store::capacity(algorithm, limit), flags);
        let after = next.map_or(state, |n| releasing(n, limit, held));
        let far = o.remaining >= (limit.burst / 2).saturating_add(self.k);
        let grant = if o.allowed && self.k > 0 && far { self.k } else { 0 };
        let still = if held > 0 { reserved } else { Reserved::default() };
        let kept = if grant > 0 { reserved.adding(grant, now) } else { still };
        let write = self.old.is_some() || next.is_some() || f != flags || grant > 0;
        let unwrite = self.old.is_some() || f != flags;
        let tat = if let State::Tat(t) = after { t } else { now };
        Taken { outcome: shown(o, limit, held), note, grant, tat, after: write.then_some((after, f, kept)), untaken: unwrite.then_some((state, f, still)) }
    }
}

/// What an admitted request is told: `o` without the `held` units other
/// workers reserved (see the module documentation).
fn shown(o: Outcome, limit: &Limit, held: u64) -> Outcome {
    if !o.allowed || held == 0 {
        return o;
    }
    Outcome { remaining: o.remaining.saturating_add(held).min(limit.burst), reset_ns: o.reset_ns.saturating_sub(units_ns(limit, held)), ..o }
}
