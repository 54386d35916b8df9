//! What each decision counts in the per-rule metrics, so that the filter
//! only adds one to the series this names.

use super::{Decided, Fate};
use crate::limiter::{Note, Spent};
use crate::policy::Policy;

/// A per-rule counter a decision bumps by one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tally {
    /// The rule applied and admitted the request.
    Allowed,
    /// The rule denied it (the most restrictive of those that did).
    Denied,
    /// A shadow rule would have denied it.
    ShadowDenied,
    /// Admitted with at most a fifth of the rule's capacity left.
    NearLimit,
    /// The request waits in the rule's queue (counted once per request).
    Queued,
    /// The key found no free slot and was decided on the overflow bucket.
    SlotOverflow,
    /// The global rule's unit was taken on credit.
    Credit,
    /// The rule's key was reset (an idle slot reused, a window rolled).
    Reset,
    /// The rule refused the request because its key is in the penalty box.
    Boxed,
    /// The request's refusal put its key in the rule's penalty box.
    BoxStarted,
    /// The rule admitted the request from this worker's share of its key
    /// (a bucket's tokens, or a loan of a global rule's lease), without
    /// reading the shared slot; counted only when the request is admitted.
    FromShare,
    /// The rule refused the request from this worker's memory of its
    /// key's last refusal, without reading the shared slot (counted with
    /// `Denied`, or `ShadowDenied` for a shadow rule).
    RefusedFromMemory,
}

/// The counters `decided` bumps, handed to `count` one by one (nothing
/// allocated): each rule that applied once, when the decision is final;
/// `Queued` when the request first waits.
pub fn tallies(policy: &Policy, decided: &Decided, mut count: impl FnMut(usize, Tally)) {
    let d = &decided.decision;
    let mut out = Sink(&mut count);
    out.extend(d.books.credited.iter().map(|&r| (r, Tally::Credit)));
    out.extend(d.books.notes.iter().filter(|(_, n)| matches!(n, Note::Reset)).map(|&(r, _)| (r, Tally::Reset)));
    out.extend(d.effects.boxes.iter().map(|&(r, _)| (r, Tally::BoxStarted)));
    if decided.fate == Fate::Calls {
        return;
    }
    let waits = d.ruling.hold_ns > 0 || d.ruling.redo_at.is_some();
    if waits && decided.first {
        let queues = |r: usize| policy.rules.get(r).is_some_and(|rule| rule.queue.is_some());
        out.extend(d.ruling.applied.iter().filter(|a| queues(a.rule)).map(|a| (a.rule, Tally::Queued)));
    }
    if decided.fate == Fate::WaitsWindow {
        return;
    }
    out.extend(d.books.overflowed.iter().map(|&r| (r, Tally::SlotOverflow)));
    // Every unit of the rule from memory: a global rule spends from its
    // bucket and its lease, and a share of one alone still crossed.
    let from_share = |rule: usize| {
        let mut of_rule = d.effects.spent.iter().filter(|s| s.rule() == rule).peekable();
        of_rule.peek().is_some() && of_rule.all(|s| matches!(s, Spent::Share { .. }))
    };
    for a in &d.ruling.applied {
        let tally = if d.ruling.denied_by.is_some_and(|w| w.rule == a.rule) {
            Tally::Denied
        } else if d.ruling.shadow_denied.iter().any(|s| s.rule == a.rule) {
            Tally::ShadowDenied
        } else {
            Tally::Allowed
        };
        out.push((a.rule, tally));
        if tally == Tally::Denied && d.books.boxed.contains(&a.rule) {
            out.push((a.rule, Tally::Boxed));
        }
        if a.near {
            out.push((a.rule, Tally::NearLimit));
        }
        if d.allowed() && from_share(a.rule) {
            out.push((a.rule, Tally::FromShare));
        }
        if tally != Tally::Allowed && d.books.remembered.contains(&a.rule) {
            out.push((a.rule, Tally::RefusedFromMemory));
        }
    }
}

/// Hands pairs to the caller's counter.
struct Sink<'a, F: FnMut(usize, Tally)>(&'a mut F);

impl<F: FnMut(usize, Tally)> Sink<'_, F> {
    fn push(&mut self, (rule, tally): (usize, Tally)) {
        (self.0)(rule, tally);
    }

    fn extend(&mut self, pairs: impl IntoIterator<Item = (usize, Tally)>) {
        pairs.into_iter().for_each(|p| self.push(p));
    }
}
