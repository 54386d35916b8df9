//! Glue shared by the root and HTTP contexts: handing refills to the
//! leader through the shared queue, reading the counter service's answers
//! (applying the leader's own), and recording (and logging once) whether
//! the service is reachable.

use proxy_wasm::hostcalls;
use sluice_core::coordination::{record, Transition};
use sluice_core::counter_api::Block;
use sluice_core::flow::{apply_answers, forget_asks};
use sluice_core::lease::Answer;
use sluice_core::limiter::{decode_needs, encode_needs, gather, LeaseNeed};
use sluice_core::policy::Policy;

use crate::host::HostStore;
use crate::logs::warn_within_budget;

/// Name of the shared queue carrying refill asks to the leader.
pub const REFILL_QUEUE: &str = "sluice_refills";

thread_local! {
    /// Refills this worker's requests asked for since its root's last
    /// tick: they go to the leader in one queue message per tick rather
    /// than one hostcall per request.
    static PENDING: std::cell::RefCell<Vec<LeaseNeed>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Hands refills to the instance's leader, at this worker's next tick
/// (`send_refills`).
pub fn enqueue(queue: Option<u32>, needs: &[LeaseNeed]) {
    if queue.is_none() || needs.is_empty() {
        return;
    }
    // Past the bound a refill is dropped (and counted): its ask expires.
    let dropped = PENDING.with(|p| gather(&mut p.borrow_mut(), needs.iter().cloned()));
    if !dropped.is_empty() {
        crate::metrics::refills_dropped(dropped.len());
    }
}

/// Sends this worker's pending refills to the leader (every tick).
pub fn send_refills(queue: Option<u32>) {
    let Some(queue) = queue else { return };
    let needs = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    if needs.is_empty() {
        return;
    }
    // A lost refill only delays its lease: its ask expires and the next
    // request asks again.
    let Some(bytes) = encode_needs(&needs) else { return };
    if let Err(e) = hostcalls::enqueue_shared_queue(queue, Some(&bytes)) {
        log::debug!("cannot queue {} lease refills: {e:?}", needs.len());
    }
}

/// Takes every queued refill, so that the queue never outgrows one round
/// of the workers' messages, keeping at most `MAX_GATHERED`; the rest are
/// returned apart (counted), for the leader to forget.
pub fn dequeue(queue: u32) -> (Vec<LeaseNeed>, Vec<LeaseNeed>) {
    let mut out = Vec::new();
    let mut dropped = Vec::new();
    while let Ok(Some(bytes)) = hostcalls::dequeue_shared_queue(queue) {
        dropped.extend(gather(&mut out, decode_needs(&bytes)));
    }
    if !dropped.is_empty() {
        crate::metrics::refills_dropped(dropped.len());
    }
    (out, dropped)
}

/// Reads the answer to a reserve call for `needs` (the call being
/// answered) and records whether the service answered; `None` when there
/// is no usable answer.
pub fn read_answers(needs: &[LeaseNeed], body_size: usize, now: u64) -> Option<Vec<Answer>> {
    match crate::callout::answers(needs, body_size) {
        Ok(answers) => {
            reachable(true, now, "");
            Some(answers)
        }
        Err(e) => {
            crate::metrics::failed(crate::metrics::Call::Reserve);
            if e.service_down() {
                reachable(false, now, &e.to_string());
            } else {
                // The service refused this call's request and answers
                // others: only the requests that waited for this call
                // follow their failure mode.
                warn_within_budget!(now, "counter service refused a reserve call for {} key(s): {e}", needs.len());
            }
            None
        }
    }
}

/// Applies the answers to the leader's own call (refills and give-backs);
/// without one, lets its asks be asked again. All at once: applying them a
/// few per tick (to keep each tick short) left leases without units long
/// enough for requests to wait for calls of their own, which cost more
/// (measured: 51.9 → 60.7 µs of Envoy CPU per request for sluice-global).
pub fn refilled(policy: &Policy, needs: &[LeaseNeed], body_size: usize, now: u64) {
    let Some(answers) = read_answers(needs, body_size, now) else {
        forget(policy, needs, now);
        return;
    };
    let a = apply_answers(policy, &HostStore, needs, &answers, now);
    for line in &a.warnings {
        warn_within_budget!(now, "{line}");
    }
    crate::metrics::lease_units(policy, &a.granted);
}

/// Tells the other instances, through the counter service, to hold these
/// keys back (`what`: why, for the log line when the call cannot be made).
/// Its answer is not waited for: the service keeps the longest block.
pub fn share_blocks(policy: &Policy, instance: &str, blocks: &[Block], now: u64, what: &str) {
    let Some(settings) = policy.global.as_ref().filter(|_| !blocks.is_empty()) else { return };
    match crate::callout::block(settings, instance, blocks) {
        Ok(_) => crate::metrics::sent(crate::metrics::Call::Block),
        Err(e) => {
            crate::metrics::failed(crate::metrics::Call::Block);
            warn_within_budget!(now, "{what} not shared with the other instances: {e}");
        }
    }
}

/// Lets failed asks be asked again. An ask not forgotten keeps its key
/// from asking until the ask expires: logged.
pub fn forget(policy: &Policy, needs: &[LeaseNeed], now: u64) {
    for line in forget_asks(policy, &HostStore, needs, now) {
        warn_within_budget!(now, "{line}");
    }
}

thread_local! {
    /// The instance's "counter service down" flag as this worker last saw
    /// it: read from shared data on every tick of the root (10 ms) and set
    /// when this worker records a call's outcome, so that a request does
    /// not read it through a hostcall.
    static DEGRADED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the counter service is known to be unreachable (see `DEGRADED`).
pub fn degraded() -> bool {
    DEGRADED.with(std::cell::Cell::get)
}

/// Reads the instance's flag into the worker's copy.
pub fn refresh_degraded() {
    let down = sluice_core::coordination::degraded_since(&HostStore).is_some();
    DEGRADED.with(|d| d.set(down));
}

/// Records whether the counter service answered; logs transitions once per
/// instance.
pub fn reachable(ok: bool, now: u64, detail: &str) {
    let recorded = record(&HostStore, ok, now);
    if recorded.is_ok() {
        DEGRADED.with(|d| d.set(!ok));
    }
    match recorded {
        Ok(Transition::WentDown) => {
            crate::metrics::degraded(true);
            log::warn!("counter service unreachable ({detail}); global rules follow their failure_mode until it answers again");
        }
        Ok(Transition::CameBack { since }) => {
            crate::metrics::degraded(false);
            let secs = now.saturating_sub(since) as f64 / 1e9;
            log::info!("counter service reachable again after {secs:.1}s; global limits enforced again");
        }
        Ok(Transition::Unchanged) => {}
        Err(e) => warn_within_budget!(now, "cannot record the counter service state: {e}"),
    }
}
