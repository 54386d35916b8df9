//! The bound on requests one worker holds (waiting for a queue turn or a
//! later window). Each held request is a paused stream with its buffers in
//! Envoy, so a flood of requests that all qualify to wait must not pile up
//! without limit: beyond [`MAX_HELD_PER_WORKER`] a request that would wait
//! is refused as its rule refuses one over the limit (429 with the wait as
//! `Retry-After`), and what it spent is given back.

use super::{give_back, give_back_kept, Carry, Decision, RuleOutcome, Ruling, Spent, StoreError};
use crate::bucket::Outcome;
use crate::policy::Policy;
use crate::store::SharedStore;

/// Most requests one worker holds at once. With Envoy's default of one
/// worker per core that is tens of thousands per instance, far above what
/// any rule's `max_queued` lets one key hold, and small enough that the
/// paused streams' memory stays bounded (a few KiB each).
pub const MAX_HELD_PER_WORKER: usize = 8_192;

/// Whether a worker holding `held` requests may hold one more.
pub fn may_hold(held: usize) -> bool {
    held < MAX_HELD_PER_WORKER
}

/// The refusal of a request that `d` would hold, for a worker that may
/// not hold more: what it spent (or kept, waiting for a window) is given
/// back, and it is denied by the rule that would have held it, with the
/// wait it would have had as its retry-after. The rule is the first whose
/// turn the request kept or whose unit it spent; failing those, the first
/// of the policy's rules that queue. Shared-data errors of the give-back
/// are returned beside it.
pub fn refuse_hold(policy: &Policy, store: &dyn SharedStore, d: &Decision, now: u64) -> (Decision, Vec<(usize, StoreError)>) {
    let errors = if d.ruling.redo_at.is_some() { give_back_kept(policy, store, &d.effects.kept, now) } else { give_back(policy, store, &d.effects.spent, now) };
    let wait = d.ruling.redo_at.map_or(d.ruling.hold_ns, |at| at.saturating_sub(now)).max(1);
    let queued = |i: &usize| policy.rules.get(*i).is_some_and(|r| r.queue.is_some());
    let rule = d
        .effects
        .kept
        .iter()
        .map(|c| match *c {
            Carry::Turn { rule, .. } | Carry::Units { rule, .. } => rule,
        })
        .chain(d.effects.spent.iter().map(Spent::rule))
        .find(queued)
        .or_else(|| (0..policy.rules.len()).find(queued))
        .unwrap_or(0);
    let limit = d.ruling.applied.iter().find(|a| a.rule == rule).map_or_else(|| policy.rules.get(rule).map_or(0, |r| r.limit.requests), |a| a.limit);
    let outcome = Outcome { allowed: false, remaining: 0, reset_ns: wait, retry_after_ns: wait };
    let ruling = Ruling {
        denied_by: Some(RuleOutcome { rule, outcome, limit, near: false }),
        applied: d.ruling.applied.clone(),
        tenant: d.ruling.tenant.clone(),
        jsonrpc: d.ruling.jsonrpc.clone(),
        ..Ruling::default()
    };
    let refused = Decision { ruling, ..Decision::default() };
    (refused, errors)
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::limiter::{decide, Ctx};
    use crate::request::MemoryRequest;
    use crate::response::denial;
    use crate::store::{ensure_slots, MemoryStore};
    use crate::testing::S;

    const POLICY: &str = r#"{"rules": [
        {"name": "open", "limit": {"requests": 1000, "per": "1s"}},
        {"name": "notion", "limit": {"requests": 1, "per": "1s"}, "queue": {"max_wait": "5s"}}
    ]}"#;

    #[test]
    fn a_worker_that_holds_its_bound_refuses_with_the_rules_429_and_gives_back_the_turn() {
        let p = Policy::from_json(POLICY).expect("policy");
        let store = MemoryStore::default();
        ensure_slots(&store, p.slots).expect("slots");
        let now = 100 * S;
        let send = || decide(&p, &mut MemoryRequest::new("GET", "/"), &store, Ctx::at(now));
        assert_eq!(send().ruling.hold_ns, 0, "the first goes at once");
        let held = send();
        assert!(held.allowed() && held.ruling.hold_ns > 0, "the second waits for its turn: {held:?}");
        assert!(may_hold(MAX_HELD_PER_WORKER - 1));
        assert!(!may_hold(MAX_HELD_PER_WORKER));
        let (refused, errors) = refuse_hold(&p, &store, &held, now);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(!refused.allowed());
        let reply = denial(&p, &refused, now, 0).expect("a 429");
        assert_eq!(reply.status, 429);
        assert!(reply.body.contains(r#""tier":"notion""#), "{}", reply.body);
        let retry: u64 = reply.headers.iter().find(|(n, _)| n == "retry-after").map(|(_, v)| v.parse().expect("seconds")).expect("retry-after");
        assert_eq!(retry, held.ruling.hold_ns.div_ceil(S), "the wait it would have had");
        // Its turn was given back: the next request gets the same wait.
        assert_eq!(send().ruling.hold_ns, held.ruling.hold_ns);
    }
}
