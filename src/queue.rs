//! Requests held for their turn in a rule's queue, per worker. The HTTP
//! context pauses and registers its wake-up time here; the worker's root
//! context resumes it from its tick. Both run on the worker's thread, in
//! the worker's VM, so a thread-local map is all the coordination needed,
//! and it outlives policy reloads (the VM stays).

use std::cell::RefCell;
use std::collections::BTreeMap;

thread_local! {
    static HELD: RefCell<BTreeMap<u32, u64>> = const { RefCell::new(BTreeMap::new()) };
}

/// Registers the paused request `context_id`, to resume at `wake_at` (ns).
pub fn hold(context_id: u32, wake_at: u64) {
    HELD.with(|h| h.borrow_mut().insert(context_id, wake_at));
}

/// Forgets `context_id`; true when it was still held (its client left).
pub fn release(context_id: u32) -> bool {
    HELD.with(|h| h.borrow_mut().remove(&context_id).is_some())
}

/// Takes the requests whose turn has come, earliest first. Each is handed
/// out once.
pub fn due(now: u64) -> Vec<u32> {
    HELD.with(|h| {
        let mut held = h.borrow_mut();
        let mut ready: Vec<(u64, u32)> = held.iter().filter(|(_, w)| **w <= now).map(|(c, w)| (*w, *c)).collect();
        ready.sort_unstable();
        for (_, c) in &ready {
            held.remove(c);
        }
        ready.into_iter().map(|(_, c)| c).collect()
    })
}

/// Requests held on this worker.
pub fn len() -> usize {
    HELD.with(|h| h.borrow().len())
}
