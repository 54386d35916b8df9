//! Requests held inside Envoy, per worker: waiting for their turn in a
//! rule's queue (`Resume`), or for the next window of a global rule's
//! budget (`Redo`, decided again then). The HTTP context pauses and
//! registers here; the worker's root context wakes it from its tick. Both
//! run on the worker's thread, in the worker's VM, so thread-local maps are
//! all the coordination needed, and they outlive policy reloads (the VM
//! stays). What to do with the eventual response (headers to add, rules
//! that learn from the upstream's answer) waits here too.
//!
//! A worker holds at most `limiter::MAX_HELD_PER_WORKER` requests (the
//! caller checks `len` before `hold`; beyond it the request is refused with
//! its rule's 429, counted in `sluice_held_refused_total`). Wake times are
//! kept in order beside the map, so a tick takes the due requests from the
//! front instead of scanning every held one.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use sluice_core::limiter::{Carry, Spent};
use sluice_core::policy::Policy;

/// What to do when a held request's time comes.
pub enum Held {
    /// Its turn has come: let it through. `spent` is given back if its
    /// client leaves first.
    Resume { policy: Rc<Policy>, spent: Vec<Spent>, arrival: u64 },
    /// A new window opens, or its turn comes: decide it again (it arrived
    /// at `arrival`; its buffered body, if it was read, has `body_size`
    /// bytes). `kept`: its turns in queues, given back if its client leaves.
    Redo { policy: Rc<Policy>, arrival: u64, body_size: Option<usize>, kept: Vec<Carry> },
}

/// What an upstream's 429/503 is learnt for.
pub struct Learn {
    pub policy: Rc<Policy>,
    /// What the request spent (its rules' keys).
    pub spent: Vec<Spent>,
    /// The keys of its global rules that obey upstream limits.
    pub global_ids: Vec<(usize, String)>,
}

/// What to do with the response of an admitted request.
#[derive(Default)]
pub struct After {
    /// Rate-limit headers to add.
    pub headers: Vec<(String, String)>,
    /// When some rule obeys upstream limits: what to learn from.
    pub learn: Option<Learn>,
    /// When some rule adapts to the upstream's health: the policy and
    /// those rules.
    pub adapt: Option<(Rc<Policy>, Vec<usize>)>,
    /// When the request was let go upstream (wall-clock ns).
    pub sent_at: u64,
}

thread_local! {
    static HELD: RefCell<BTreeMap<u32, (u64, Held)>> = const { RefCell::new(BTreeMap::new()) };
    /// `(wake_at, context_id)` of every entry of `HELD`, earliest first.
    static WAKES: RefCell<BTreeSet<(u64, u32)>> = const { RefCell::new(BTreeSet::new()) };
    static AFTER: RefCell<BTreeMap<u32, After>> = const { RefCell::new(BTreeMap::new()) };
}

/// Registers the paused request `context_id` until `wake_at` (ns).
pub fn hold(context_id: u32, wake_at: u64, held: Held) {
    match HELD.with(|h| h.borrow_mut().insert(context_id, (wake_at, held))) {
        None => crate::metrics::queue_length(1),
        Some((before, _)) => {
            WAKES.with(|w| w.borrow_mut().remove(&(before, context_id)));
        }
    }
    WAKES.with(|w| w.borrow_mut().insert((wake_at, context_id)));
}

/// Forgets `context_id`; returns what it was held for (its client left).
pub fn release(context_id: u32) -> Option<Held> {
    let (wake_at, held) = HELD.with(|h| h.borrow_mut().remove(&context_id))?;
    WAKES.with(|w| w.borrow_mut().remove(&(wake_at, context_id)));
    crate::metrics::queue_length(-1);
    Some(held)
}

/// Takes the requests whose time has come, earliest first; each is handed
/// out once.
pub fn due(now: u64) -> Vec<(u32, Held)> {
    let ready: Vec<(u64, u32)> = WAKES.with(|w| {
        let mut wakes = w.borrow_mut();
        // Entries from (now + 1, 0) on wake later; the front is due.
        let later = wakes.split_off(&(now.saturating_add(1), 0));
        std::mem::replace(&mut *wakes, later).into_iter().collect()
    });
    let out: Vec<(u32, Held)> = HELD.with(|h| {
        let mut held = h.borrow_mut();
        ready.into_iter().filter_map(|(_, c)| held.remove(&c).map(|(_, h)| (c, h))).collect()
    });
    crate::metrics::queue_length(0i64.saturating_sub(i64::try_from(out.len()).unwrap_or(i64::MAX)));
    out
}

/// Whether `context_id` is held.
pub fn is_held(context_id: u32) -> bool {
    HELD.with(|h| h.borrow().contains_key(&context_id))
}

/// Requests held on this worker.
pub fn len() -> usize {
    HELD.with(|h| h.borrow().len())
}

/// Records what to do with the response of `context_id`.
pub fn set_after(context_id: u32, after: After) {
    AFTER.with(|a| {
        let mut map = a.borrow_mut();
        if after.headers.is_empty() && after.learn.is_none() && after.adapt.is_none() {
            map.remove(&context_id);
        } else {
            map.insert(context_id, after);
        }
    });
}

/// Records that `context_id`, held until now, was let go upstream.
pub fn sent(context_id: u32, now: u64) {
    AFTER.with(|a| {
        if let Some(after) = a.borrow_mut().get_mut(&context_id) {
            after.sent_at = now;
        }
    });
}

/// Takes what to do with the response of `context_id`.
pub fn take_after(context_id: u32) -> After {
    AFTER.with(|a| a.borrow_mut().remove(&context_id)).unwrap_or_default()
}
