//! What a decision means for the stream, wherever it was made (the HTTP
//! context on request headers or on a lease answer, or the root context
//! redoing a held request): a local reply, a hold, or go on.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use sluice_core::limiter::{may_hold, refuse_hold, Decision};
use sluice_core::policy::Policy;
use sluice_core::response::{admitted_headers, denial, unavailable};

use crate::queue::{self, After, Held, Learn};

/// How the stream goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// A local reply (429/503) was sent.
    Replied,
    /// The request waits in `queue`.
    Held,
    /// Let the request through now.
    Go,
}

/// The stream a decision is about.
#[derive(Clone, Copy, Debug)]
pub struct Stream {
    pub context_id: u32,
    pub arrival: u64,
    pub body_size: Option<usize>,
    /// Its first decision (not one made again after a wait).
    pub first: bool,
}

/// Counts a decision in the metrics: every rule that applied, once, when
/// the decision is final; `queued` when the request first waits.
fn count(policy: &Policy, d: &Decision, stream: Stream, held: bool) {
    let waits = d.hold_ns > 0 || d.redo_at.is_some();
    if waits && stream.first {
        for rule in d.applied.iter().filter_map(|a| policy.rules.get(a.rule)) {
            if rule.queue.is_some() {
                crate::metrics::count(crate::metrics::rule(rule).queued);
            }
        }
    }
    if held && d.redo_at.is_some() {
        return;
    }
    // Keys that found no free slot, decided on their rule's overflow bucket.
    for rule in d.overflowed.iter().filter_map(|i| policy.rules.get(*i)) {
        crate::metrics::count(crate::metrics::rule(rule).slot_overflow);
    }
    for a in &d.applied {
        let Some(rule) = policy.rules.get(a.rule) else { continue };
        let ids = crate::metrics::rule(rule);
        let id = if d.denied_by.is_some_and(|w| w.rule == a.rule) {
            ids.denied
        } else if d.shadow_denied.iter().any(|s| s.rule == a.rule) {
            ids.shadow_denied
        } else {
            ids.allowed
        };
        crate::metrics::count(id);
        if a.near {
            crate::metrics::count(ids.near_limit);
        }
    }
}

/// Acts on a final decision for `stream` (the effective context).
pub fn settle(policy: &Rc<Policy>, d: &Decision, stream: Stream, now: u64, random: u64) -> Next {
    let context_id = stream.context_id;
    // A worker holds a bounded number of requests: beyond it, one that
    // would wait is refused as its rule refuses (and gives back its turn).
    let waits = d.allowed() && (d.redo_at.is_some() || d.hold_ns > 0);
    if waits && !queue::is_held(context_id) && !may_hold(queue::len()) {
        let (refused, errors) = refuse_hold(policy, &crate::host::HostStore, d, now);
        for (rule, e) in errors {
            crate::logs::warn_within_budget!(now, "rule {}: a refused wait kept its turn: {e}", crate::rule_name(policy, rule));
        }
        crate::metrics::held_refused();
        return settle(policy, &refused, stream, now, random);
    }
    if d.mcp_headers_disagree && stream.first {
        crate::metrics::mcp_headers_disagree();
    }
    if let Some(reply) = unavailable(policy, d).or_else(|| denial(policy, d, now, random)) {
        let headers: Vec<(&str, &str)> = reply.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        if let Err(e) = hostcalls::send_http_response(reply.status, headers, Some(reply.body.as_bytes())) {
            crate::logs::warn_within_budget!(now, "local reply not sent: {e:?}");
        }
        count(policy, d, stream, false);
        return Next::Replied;
    }
    if let Some(at) = d.redo_at {
        count(policy, d, stream, true);
        queue::hold(context_id, at, Held::Redo { policy: policy.clone(), arrival: stream.arrival, body_size: stream.body_size, kept: d.kept.clone() });
        return Next::Held;
    }
    count(policy, d, stream, d.hold_ns > 0);
    let learns = d.applied.iter().any(|a| policy.rules.get(a.rule).is_some_and(|r| r.obey_upstream));
    let adapts: Vec<usize> = d.applied.iter().filter(|a| policy.rules.get(a.rule).is_some_and(|r| r.adaptive.is_some())).map(|a| a.rule).collect();
    queue::set_after(
        context_id,
        After {
            headers: admitted_headers(policy, d, now),
            learn: learns.then(|| Learn { policy: policy.clone(), spent: d.spent.clone(), global_ids: d.global_ids.clone() }),
            adapt: (!adapts.is_empty()).then(|| (policy.clone(), adapts)),
            sent_at: now,
        },
    );
    if d.hold_ns > 0 {
        queue::hold(context_id, now.saturating_add(d.hold_ns), Held::Resume { policy: policy.clone(), spent: d.spent.clone(), arrival: stream.arrival });
        return Next::Held;
    }
    Next::Go
}
