//! Requests held inside Envoy, per worker: waiting for their turn in a
//! rule's queue (`Resume`), or for the next window of a global rule's
//! budget (`Redo`, decided again then). The HTTP context pauses and
//! registers here; the worker's root context wakes it from its tick. Both
//! run on the worker's thread, in the worker's VM, so thread-local maps are
//! all the coordination needed, and they outlive policy reloads (the VM
//! stays). Headers for the eventual response wait here too.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use sluice_core::limiter::Spent;
use sluice_core::policy::Policy;

/// What to do when a held request's time comes.
pub enum Held {
    /// Its turn has come: let it through. `spent` is given back if its
    /// client leaves first.
    Resume { policy: Rc<Policy>, spent: Vec<Spent> },
    /// A new window opens: decide it again (it arrived at `arrival`).
    Redo { policy: Rc<Policy>, arrival: u64 },
}

thread_local! {
    static HELD: RefCell<BTreeMap<u32, (u64, Held)>> = const { RefCell::new(BTreeMap::new()) };
    static HEADERS: RefCell<BTreeMap<u32, Vec<(String, String)>>> = const { RefCell::new(BTreeMap::new()) };
}

/// Registers the paused request `context_id` until `wake_at` (ns).
pub fn hold(context_id: u32, wake_at: u64, held: Held) {
    HELD.with(|h| h.borrow_mut().insert(context_id, (wake_at, held)));
}

/// Forgets `context_id`; returns what it was held for (its client left).
pub fn release(context_id: u32) -> Option<Held> {
    HELD.with(|h| h.borrow_mut().remove(&context_id)).map(|(_, held)| held)
}

/// Takes the requests whose time has come, earliest first; each is handed
/// out once.
pub fn due(now: u64) -> Vec<(u32, Held)> {
    HELD.with(|h| {
        let mut held = h.borrow_mut();
        let mut ready: Vec<(u64, u32)> = held.iter().filter(|(_, (w, _))| *w <= now).map(|(c, (w, _))| (*w, *c)).collect();
        ready.sort_unstable();
        ready.into_iter().filter_map(|(_, c)| held.remove(&c).map(|(_, h)| (c, h))).collect()
    })
}

/// Requests held on this worker.
pub fn len() -> usize {
    HELD.with(|h| h.borrow().len())
}

/// Headers to add to the response of `context_id`.
pub fn set_headers(context_id: u32, headers: Vec<(String, String)>) {
    HEADERS.with(|h| {
        let mut map = h.borrow_mut();
        if headers.is_empty() {
            map.remove(&context_id);
        } else {
            map.insert(context_id, headers);
        }
    });
}

/// Takes the headers for the response of `context_id`.
pub fn take_headers(context_id: u32) -> Vec<(String, String)> {
    HEADERS.with(|h| h.borrow_mut().remove(&context_id)).unwrap_or_default()
}
