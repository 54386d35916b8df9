//! Instance-wide state the workers of one Envoy share besides buckets: who
//! does the periodic lease work (one root context per instance, elected
//! through a shared-data lease with a deadline) and whether the counter
//! service is reachable (a flag whose transitions are logged once).
//!
//! Keys: `sluice/leader` = `[deadline ns: u64][holder: u32]`,
//! `sluice/degraded` = `[since ns: u64]` (0: the service is reachable).

use crate::store::{update_key, SharedStore, StoreError};

const LEADER_KEY: &str = "sluice/leader";
const DEGRADED_KEY: &str = "sluice/degraded";

fn u64_at(b: &[u8], i: usize) -> u64 {
    crate::little_endian::u64_at(b, i).unwrap_or(0)
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    crate::little_endian::u32_at(b, i).unwrap_or(0)
}

/// Becomes (or stays) the leader when the current one's term has run out
/// or is `me`; a term lasts `term_ns`. Returns whether `me` leads.
pub fn try_lead(store: &dyn SharedStore, me: u32, now: u64, term_ns: u64) -> Result<bool, StoreError> {
    let lead = update_key(store, LEADER_KEY, |bytes| {
        let (deadline, holder) = (u64_at(bytes, 0), u32_at(bytes, 8));
        if holder != me && now < deadline {
            return (false, None);
        }
        let mut value = now.saturating_add(term_ns).to_le_bytes().to_vec();
        value.extend_from_slice(&me.to_le_bytes());
        (true, Some(value))
    });
    // Always contended: someone else is taking the lead.
    match lead {
        Err(StoreError::Contended) => Ok(false),
        other => other,
    }
}

/// Gives the lead up when `me` holds it, so that another root takes it at
/// its next try instead of waiting for the term to run out.
pub fn resign(store: &dyn SharedStore, me: u32) -> Result<(), StoreError> {
    let done = update_key(store, LEADER_KEY, |bytes| {
        if u32_at(bytes, 8) != me {
            return ((), None);
        }
        ((), Some(vec![0; 12]))
    });
    match done {
        Err(StoreError::Contended) => Ok(()),
        other => other,
    }
}

/// A change of the counter service's reachability, to log once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Unchanged,
    /// It failed; global rules now follow their `failure_mode`.
    WentDown,
    /// It answered again after being down since the given time.
    CameBack {
        since: u64,
    },
}

/// Since when the counter service has been unreachable (None: reachable).
pub fn degraded_since(store: &dyn SharedStore) -> Option<u64> {
    match store.get(DEGRADED_KEY) {
        Ok(Some((b, _))) => Some(u64_at(&b, 0)).filter(|s| *s != 0),
        _ => None,
    }
}

/// Records the outcome of a call to the counter service. Exactly one of the
/// workers that see a change gets the transition back.
pub fn record(store: &dyn SharedStore, reachable: bool, now: u64) -> Result<Transition, StoreError> {
    update_key(store, DEGRADED_KEY, |bytes| match (reachable, u64_at(bytes, 0)) {
        (true, 0) | (false, 1..) => (Transition::Unchanged, None),
        (true, s) => (Transition::CameBack { since: s }, Some(0u64.to_le_bytes().to_vec())),
        (false, 0) => (Transition::WentDown, Some(now.max(1).to_le_bytes().to_vec())),
    })
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn one_leader_until_its_term_runs_out() {
        let store = MemoryStore::default();
        assert_eq!(try_lead(&store, 1, 100, 50), Ok(true));
        assert_eq!(try_lead(&store, 2, 120, 50), Ok(false));
        assert_eq!(try_lead(&store, 1, 140, 50), Ok(true), "the leader renews");
        assert_eq!(try_lead(&store, 2, 180, 50), Ok(false));
        assert_eq!(try_lead(&store, 2, 191, 50), Ok(true), "a silent leader is replaced");
        assert_eq!(try_lead(&store, 1, 200, 50), Ok(false));
    }

    #[test]
    fn a_leader_that_resigns_is_replaced_at_once() {
        let store = MemoryStore::default();
        assert_eq!(try_lead(&store, 1, 100, 50), Ok(true));
        assert_eq!(resign(&store, 2), Ok(()));
        assert_eq!(try_lead(&store, 2, 110, 50), Ok(false), "only the holder resigns");
        assert_eq!(resign(&store, 1), Ok(()));
        assert_eq!(try_lead(&store, 2, 111, 50), Ok(true));
        assert_eq!(try_lead(&store, 1, 112, 50), Ok(false));
    }

    #[test]
    fn transitions_are_reported_once() {
        let store = MemoryStore::default();
        assert_eq!(degraded_since(&store), None);
        assert_eq!(record(&store, true, 5), Ok(Transition::Unchanged));
        assert_eq!(record(&store, false, 10), Ok(Transition::WentDown));
        assert_eq!(record(&store, false, 11), Ok(Transition::Unchanged));
        assert_eq!(degraded_since(&store), Some(10));
        assert_eq!(record(&store, true, 20), Ok(Transition::CameBack { since: 10 }));
        assert_eq!(record(&store, true, 21), Ok(Transition::Unchanged));
        assert_eq!(degraded_since(&store), None);
    }
}
