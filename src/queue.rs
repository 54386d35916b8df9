//! Requests held inside Envoy, per worker: paused streams whose flow asked
//! to be woken at a time (a turn in a rule's queue, or the next window of a
//! global rule's budget). The HTTP context registers its flow here; the
//! worker's root context wakes it from its tick. Both run on the worker's
//! thread, in the worker's VM, so a thread-local map is all the
//! coordination needed, and it outlives policy reloads (the VM stays).
//!
//! A worker holds at most `limiter::MAX_HELD_PER_WORKER` requests (the flow
//! asks `len` before it holds; beyond it the request is refused with its
//! rule's 429, counted in `sluice_held_refused_total`). Wake times are kept
//! in order beside the map, so a tick takes the due requests from the
//! front instead of scanning every held one.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use crate::drive::SharedFlow;

thread_local! {
    static HELD: RefCell<BTreeMap<u32, (u64, SharedFlow)>> = const { RefCell::new(BTreeMap::new()) };
    /// `(wake_at, context_id)` of every entry of `HELD`, earliest first.
    static WAKES: RefCell<BTreeSet<(u64, u32)>> = const { RefCell::new(BTreeSet::new()) };
}

/// Registers the paused request `context_id` until `wake_at` (ns).
pub fn hold(context_id: u32, wake_at: u64, flow: SharedFlow) {
    match HELD.with(|h| h.borrow_mut().insert(context_id, (wake_at, flow))) {
        None => crate::metrics::queue_length(1),
        Some((before, _)) => {
            WAKES.with(|w| w.borrow_mut().remove(&(before, context_id)));
        }
    }
    WAKES.with(|w| w.borrow_mut().insert((wake_at, context_id)));
}

/// Forgets `context_id` (its client left).
pub fn release(context_id: u32) {
    let Some((wake_at, _)) = HELD.with(|h| h.borrow_mut().remove(&context_id)) else { return };
    WAKES.with(|w| w.borrow_mut().remove(&(wake_at, context_id)));
    crate::metrics::queue_length(-1);
}

/// Takes the requests whose time has come, earliest first; each is handed
/// out once.
pub fn due(now: u64) -> Vec<(u32, SharedFlow)> {
    let ready: Vec<(u64, u32)> = WAKES.with(|w| {
        let mut wakes = w.borrow_mut();
        // Entries from (now + 1, 0) on wake later; the front is due.
        let later = wakes.split_off(&(now.saturating_add(1), 0));
        std::mem::replace(&mut *wakes, later).into_iter().collect()
    });
    let out: Vec<(u32, SharedFlow)> = HELD.with(|h| {
        let mut held = h.borrow_mut();
        ready.into_iter().filter_map(|(_, c)| held.remove(&c).map(|(_, f)| (c, f))).collect()
    });
    crate::metrics::queue_length(0i64.saturating_sub(i64::try_from(out.len()).unwrap_or(i64::MAX)));
    out
}

/// Requests held on this worker.
pub fn len() -> usize {
    HELD.with(|h| h.borrow().len())
}
