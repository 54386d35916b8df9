//! Glue shared by the root and HTTP contexts: deciding a request, handing
//! refills to the leader through the shared queue, applying the counter
//! service's answers, and recording (and logging once) whether the service
//! is reachable.

use proxy_wasm::hostcalls;
use sluice_core::coordination::{record, Transition};
use sluice_core::lease::Answer;
use sluice_core::limiter::{apply_answer, decide_carrying, decode_needs, encode_needs, forget_ask, gather, Carry, Ctx, Decision, LeaseNeed};
use sluice_core::policy::{Global, Policy};

use crate::host::{HostRequest, HostStore};
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

/// Decides a request (the effective context's stream) with what it
/// carries, logs shared-data errors, and hands the decision's refills to
/// the leader.
pub fn decide(policy: &Policy, request: &mut HostRequest, ctx: Ctx, carried: &[Carry], queue: Option<u32>) -> Decision {
    let d = decide_carrying(policy, request, &HostStore, ctx, carried);
    for (rule, e) in &d.errors {
        warn_within_budget!(ctx.now, "rule {} let a request pass: {e}", crate::rule_name(policy, *rule));
    }
    for (rule, e) in &d.unread {
        warn_within_budget!(ctx.now, "rule {}: adaptive limit not read, its configured limit applies: {e}", crate::rule_name(policy, *rule));
    }
    if !d.notes.is_empty() {
        crate::logs::notes(policy, &d, ctx.now);
        for (i, note) in &d.notes {
            if let (sluice_core::limiter::Note::Reset, Some(rule)) = (note, policy.rules.get(*i)) {
                crate::metrics::count(crate::metrics::rule(rule).resets);
            }
        }
    }
    // Empty unless the request goes on now (the core gives back the
    // credit of a request denied or waiting).
    for rule in d.credited.iter().filter_map(|i| policy.rules.get(*i)) {
        crate::metrics::count(crate::metrics::rule(rule).credit);
    }
    enqueue(queue, &d.refills);
    d
}

/// A request paused for one reserve call.
pub struct Waiting {
    pub token: u32,
    pub needs: Vec<LeaseNeed>,
    /// Turns it keeps meanwhile (to carry into the next decision, or give
    /// back if it ends first).
    pub kept: Vec<Carry>,
}

/// What comes of deciding a request. (Not boxed: it lives for one call,
/// and the decision path should not allocate for it.)
#[allow(clippy::large_enum_variant)]
pub enum Then {
    /// A final decision to settle.
    Settle(Decision),
    /// It waits for a reserve call.
    Wait(Waiting),
}

/// Decides a request; when the decision waits for leases, makes the one
/// reserve call it waits for through `call` (which dispatches it from the
/// right context) and returns that instead. When the call cannot be made,
/// the request is decided again at once as if the service were down.
pub fn decide_or_call(
    policy: &Policy,
    request: &mut HostRequest,
    ctx: Ctx,
    carried: &[Carry],
    queue: Option<u32>,
    call: impl FnOnce(&Global, &[LeaseNeed]) -> Result<u32, String>,
) -> Then {
    let d = decide(policy, request, ctx, carried, queue);
    let Some(settings) = policy.global.as_ref().filter(|_| d.pending()) else { return Then::Settle(d) };
    match call(settings, &d.wait_for) {
        Ok(token) => {
            crate::metrics::sent(crate::metrics::Call::Reserve);
            Then::Wait(Waiting { token, needs: d.wait_for, kept: d.kept })
        }
        Err(e) => {
            crate::metrics::failed(crate::metrics::Call::Reserve);
            reachable(false, ctx.now, &e);
            Then::Settle(decide(policy, request, Ctx { degraded: true, may_wait: false, ..ctx }, &d.kept, queue))
        }
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
/// answered), applies it and records that the service answered; on a
/// failure records that instead. Returns whether the call was answered,
/// and what the request that waited for it carries into its next
/// decision: the units granted to it and the turns it `kept` (but not in
/// the queue of a rule whose upstream now asks to wait).
pub fn receive(policy: &Policy, needs: &[LeaseNeed], body_size: usize, now: u64, kept: Vec<Carry>) -> (bool, Vec<Carry>) {
    match crate::callout::answers(needs, body_size) {
        Ok(answers) => {
            let carried = apply(policy, needs, &answers, now, kept);
            reachable(true, now, "");
            (true, carried)
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
            (false, kept)
        }
    }
}

/// Applies answers to the leases they were asked for.
fn apply(policy: &Policy, needs: &[LeaseNeed], answers: &[Answer], now: u64, mut kept: Vec<Carry>) -> Vec<Carry> {
    let mut carried = Vec::new();
    for (need, answer) in needs.iter().zip(answers) {
        match apply_answer(policy, &HostStore, need, answer, now) {
            Ok(applied) => {
                carried.extend(applied.carry);
                if let Some(rule) = applied.rule.and_then(|r| policy.rules.get(r)) {
                    crate::metrics::lease_units(crate::metrics::rule(rule), u64::from(answer.granted));
                }
                if let Some(blocked) = applied.blocked_rule {
                    kept.retain(|c| !matches!(c, Carry::Turn { rule, .. } if *rule == blocked));
                }
                if let Some(e) = &applied.unread {
                    warn_within_budget!(
                        now,
                        "rule {}: adaptive limit not read, an upstream block was recorded against its configured limit: {e}",
                        need.ask.rule
                    );
                }
                if applied.block_started {
                    warn_within_budget!(
                        now,
                        "rule {}: key {:?} held back for {:.1}s: its upstream asked another instance to wait",
                        need.ask.rule,
                        need.ask.id,
                        answer.blocked_ns as f64 / 1e9
                    );
                }
            }
            Err(e) => warn_within_budget!(now, "lease for rule {} not stored: {e}", need.ask.rule),
        }
    }
    carried.extend(kept);
    carried
}

/// Lets failed asks be asked again. An ask not forgotten keeps its key
/// from asking until the ask expires: logged.
pub fn forget(policy: &Policy, needs: &[LeaseNeed], now: u64) {
    for need in needs {
        if let Err(e) = forget_ask(policy, &HostStore, need, now) {
            warn_within_budget!(now, "rule {}: a failed ask not forgotten (the key asks again when it expires): {e}", need.ask.rule);
        }
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
