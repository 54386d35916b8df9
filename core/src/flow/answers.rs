//! The counter service's answers applied to the leases they were asked
//! for: by a request that waited for its own reserve call, and by the
//! instance's leader for the refills it asked in the background.

use crate::lease::Answer;
use crate::limiter::{apply_answer, forget_ask, Carry, LeaseNeed};
use crate::policy::Policy;
use crate::store::SharedStore;

/// What applying a call's answers gave.
#[derive(Debug, Default)]
pub struct Answered {
    /// Units that belong to the waiting request that asked.
    pub carried: Vec<Carry>,
    /// Rules whose answer reported an upstream block: a turn kept in
    /// their queues no longer holds.
    pub blocked: Vec<usize>,
    /// Units granted, per rule (metrics).
    pub granted: Vec<(usize, u64)>,
    /// What could not be stored, and blocks that started (log lines).
    pub warnings: Vec<String>,
}

/// Applies `answers` (in the order of `needs`, as the service answers).
pub fn apply_answers(policy: &Policy, store: &dyn SharedStore, needs: &[LeaseNeed], answers: &[Answer], now: u64) -> Answered {
    let mut out = Answered::default();
    for (need, answer) in needs.iter().zip(answers) {
        let applied = match apply_answer(policy, store, need, answer, now) {
            Ok(applied) => applied,
            Err(e) => {
                out.warnings.push(format!("lease for rule {} not stored: {e}", need.ask.rule));
                continue;
            }
        };
        out.carried.extend(applied.carry);
        if let Some(rule) = applied.rule {
            out.granted.push((rule, u64::from(answer.granted)));
        }
        out.blocked.extend(applied.blocked_rule);
        if let Some(e) = &applied.unread {
            out.warnings.push(format!("rule {}: adaptive limit not read, an upstream block was recorded against its configured limit: {e}", need.ask.rule));
        }
        if applied.block_started {
            let boxed = applied.rule.and_then(|r| policy.rules.get(r)).is_some_and(|r| r.penalty.is_some());
            let why = if boxed { "another instance put it in the penalty box" } else { "its upstream asked another instance to wait" };
            out.warnings.push(format!("rule {}: key {:?} held back for {:.1}s: {why}", need.ask.rule, need.ask.id, answer.blocked_ns as f64 / 1e9));
        }
    }
    out
}

/// Lets failed asks be asked again; returns a line for each that could
/// not be forgotten (its key asks again only when the ask expires).
pub fn forget_asks(policy: &Policy, store: &dyn SharedStore, needs: &[LeaseNeed], now: u64) -> Vec<String> {
    needs
        .iter()
        .filter_map(|need| forget_ask(policy, store, need, now).err().map(|e| (need, e)))
        .map(|(need, e)| format!("rule {}: a failed ask not forgotten (the key asks again when it expires): {e}", need.ask.rule))
        .collect()
}
