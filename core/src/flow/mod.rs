//! One request's life, from its headers to its end, as a state machine the
//! host drives with events (the headers, the body, the answer to a reserve
//! call, a wake-up, the client leaving) and that answers with what the
//! host must do ([`Out`]: let it go, reply, call the counter service, wake
//! it later). The filter (`src/`), the replay behind `make simulate` and
//! the multi-instance tests all drive this one machine, so the decide →
//! call → apply → decide-again sequence exists once.
//!
//! ```text
//!  Headers ──> [Body] ──> decide ─┬─ reply (429/503) ─────────────> Replied
//!                                 ├─ call (no lease yet) ─> Calling ─ Answered ─> decide
//!                                 ├─ hold (queue turn) ───> Holding ─ Wake ─────> Upstream
//!                                 ├─ hold (next window) ──> Holding ─ Wake ─────> decide
//!                                 └─ go ────────────────────────────────────────> Upstream
//!  Left (any state): what it kept or spent is given back; concurrency units freed.
//! ```
//!
//! The machine touches shared data only through the [`Env`] it is given
//! (the core's `SharedStore` and `Request`), and time only as `Env::now`:
//! natively tested with a fake clock (`flow/tests.rs`).

mod answers;
mod io;
mod settle;
mod tally;
#[cfg(test)]
mod tests;

use std::ops::Deref;

pub use answers::{apply_answers, forget_asks, Answered};
pub use io::{Admitted, At, Decided, Env, Event, Fate, Host, Out};
pub use settle::{ResponsePart, Settled, Wants};
pub use tally::{tallies, Tally};

use crate::lease::Answer;
use crate::limiter::{decide_carrying, give_back, give_back_kept, may_hold, refuse_hold, release, Carry, Ctx, Decision, LeaseNeed, Spent};
use crate::policy::Policy;
use crate::response::{admitted_headers, denial, unavailable};

/// Held requests are woken on this tick (the filter's root context ticks
/// at this period), so a wake time is kept to this precision.
pub const TICK_NS: u64 = crate::limiter::TICK_GRACE_NS;

/// Most request body read for a rule's cost or a JSON-RPC match; a larger
/// body is decided as too large (see `Request::body_too_large`).
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Debug)]
enum State {
    /// No headers yet.
    Start,
    /// Waiting for the whole body (a rule reads it).
    Body { buffered: usize },
    /// Waiting for a reserve call's answer, keeping its turns meanwhile.
    Calling { needs: Vec<LeaseNeed>, kept: Vec<Carry> },
    /// Admitted, waiting for its turn; gives back `spent` if it leaves.
    Turn { spent: Vec<Spent> },
    /// Waiting for a later window, keeping its turns.
    Window { kept: Vec<Carry> },
    /// Gone upstream.
    Upstream,
    /// Answered locally.
    Replied,
    /// The stream ended (`call`: a reserve call made for it is still to
    /// be answered, and its answer applied).
    Ended { call: Option<Vec<LeaseNeed>> },
}

/// One request's state. `P` is how the host holds its policy (`Rc<Policy>`
/// in the filter, `&Policy` in the replay): a request keeps the policy it
/// arrived under, across reloads.
#[derive(Debug)]
pub struct Flow<P: Deref<Target = Policy>> {
    policy: P,
    arrival: u64,
    body_size: Option<usize>,
    state: State,
    /// A decision other than a wait for a call was made before.
    settled: bool,
    /// Concurrency units the admitted request holds until it ends.
    units: Vec<Spent>,
    /// What it spent from rules that count only successes, given back if
    /// its answer fails.
    refundable: Vec<Spent>,
    /// What it spent from rules whose cost the response settles (see
    /// `settle`), until each one's part of the response comes.
    costed: Vec<Spent>,
    admitted: Option<Admitted>,
}

impl<P: Deref<Target = Policy>> Flow<P> {
    pub fn new(policy: P) -> Flow<P> {
        Flow {
            policy,
            arrival: 0,
            body_size: None,
            state: State::Start,
            settled: false,
            units: Vec::new(),
            refundable: Vec::new(),
            costed: Vec::new(),
            admitted: None,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The buffered body's size, once the decision waited for it.
    pub fn body_size(&self) -> Option<usize> {
        self.body_size
    }

    /// When the headers arrived (wall-clock ns).
    pub fn arrival(&self) -> u64 {
        self.arrival
    }

    /// How the host holds the request's policy.
    pub fn policy_handle(&self) -> &P {
        &self.policy
    }

    /// What its response is for, once it was admitted (taken once, when
    /// the response arrives).
    pub fn take_admitted(&mut self) -> Option<Admitted> {
        self.admitted.take()
    }

    /// Its answer's status matters: some rule counts only successes.
    pub fn wants_status(&self) -> bool {
        !self.refundable.is_empty()
    }

    /// It waits for a reserve call or a wake-up (its body is held too).
    pub fn waiting(&self) -> bool {
        matches!(self.state, State::Calling { .. } | State::Turn { .. } | State::Window { .. })
    }

    /// Handles one event.
    pub fn on(&mut self, event: Event, env: &mut Env) -> Out {
        let mut out = Out::default();
        match event {
            Event::Headers { end_of_stream } => self.headers(end_of_stream, env, &mut out),
            Event::Body { size, end_of_stream } => self.body(Some(size), end_of_stream, env, &mut out),
            Event::Trailers => self.body(None, true, env, &mut out),
            Event::Answered(answers) => self.answered(answers, env, &mut out),
            Event::Wake => self.wake(env, &mut out),
            Event::Response { status } => self.response(status, env, &mut out),
            Event::ResponseCost(part) => self.response_cost(part, env, &mut out),
            Event::Left => self.left(env, &mut out),
        }
        out
    }

    fn headers(&mut self, end_of_stream: bool, env: &mut Env, out: &mut Out) {
        if !matches!(self.state, State::Start) {
            return;
        }
        self.arrival = env.host.now();
        if self.policy.needs_body && !end_of_stream {
            let method = env.request.method().unwrap_or_default();
            let path = env.request.path().unwrap_or_default();
            if self.policy.reads_body(&method, &path) {
                self.state = State::Body { buffered: 0 };
                return;
            }
        }
        self.start(env, out);
    }

    /// Body bytes (`size`), or trailers (`None`: what was buffered is all).
    fn body(&mut self, size: Option<usize>, end_of_stream: bool, env: &mut Env, out: &mut Out) {
        // A request waiting keeps its body until it is resumed (continuing
        // the body would release the headers too).
        let State::Body { buffered } = self.state else {
            out.go = !self.waiting();
            return;
        };
        let size = size.unwrap_or(buffered);
        if !end_of_stream && size <= MAX_BODY {
            self.state = State::Body { buffered: size };
            return;
        }
        self.body_size = Some(size);
        env.request.body_buffered(size);
        self.start(env, out);
    }

    /// The request's first decision.
    fn start(&mut self, env: &mut Env, out: &mut Out) {
        let now = env.host.now();
        let degraded = self.policy.global.is_some() && env.host.degraded();
        let ctx = Ctx { degraded, random: env.host.random(), ..Ctx::at(now) };
        self.decide(ctx, Vec::new(), env, out);
    }

    fn answered(&mut self, answers: Option<Vec<Answer>>, env: &mut Env, out: &mut Out) {
        let now = env.host.now();
        let (needs, mut kept) = match std::mem::replace(&mut self.state, State::Ended { call: None }) {
            State::Calling { needs, kept } => (needs, kept),
            State::Ended { call: Some(needs) } => {
                // The client left meanwhile: the answer still fills the
                // leases (what it granted this request goes unspent).
                if let Some(answers) = answers {
                    let a = apply_answers(&self.policy, env.store, &needs, &answers, now);
                    out.warnings.extend(a.warnings);
                    out.granted.extend(a.granted);
                }
                return;
            }
            other => {
                self.state = other;
                return;
            }
        };
        let answered = answers.is_some();
        let mut carried = Vec::new();
        if let Some(answers) = answers {
            let a = apply_answers(&self.policy, env.store, &needs, &answers, now);
            // A turn kept in the queue of a rule whose upstream now asks
            // to wait no longer holds.
            kept.retain(|c| !matches!(c, Carry::Turn { rule, .. } if a.blocked.contains(rule)));
            carried = a.carried;
            out.warnings.extend(a.warnings);
            out.granted.extend(a.granted);
        }
        carried.extend(kept);
        let ctx = Ctx { degraded: !answered, may_wait: false, waited_ns: self.waited(now), random: env.host.random(), ..Ctx::at(now) };
        self.decide(ctx, carried, env, out);
    }

    fn wake(&mut self, env: &mut Env, out: &mut Out) {
        let now = env.host.now();
        match std::mem::replace(&mut self.state, State::Ended { call: None }) {
            State::Turn { .. } => {
                self.state = State::Upstream;
                if let Some(a) = self.admitted.as_mut() {
                    a.sent_at = now;
                }
                out.go = true;
                out.waited_ns = Some(self.waited(now));
            }
            State::Window { kept } => {
                let degraded = self.policy.global.is_some() && env.host.degraded();
                let ctx = Ctx { degraded, waited_ns: self.waited(now), random: env.host.random(), ..Ctx::at(now) };
                self.decide(ctx, kept, env, out);
            }
            other => self.state = other,
        }
    }

    fn left(&mut self, env: &mut Env, out: &mut Out) {
        let policy = &*self.policy;
        // A response that never ended leaves its estimates standing.
        self.costed.clear();
        let holds = matches!(self.state, State::Turn { .. } | State::Window { .. } | State::Calling { .. });
        if self.units.is_empty() && !holds {
            // Nothing to release or give back (most requests): no clock read.
            if !matches!(self.state, State::Ended { .. }) {
                self.state = State::Ended { call: None };
            }
            return;
        }
        let now = env.host.now();
        // Releasing a unit twice is harmless.
        for (rule, e) in release(env.store, &std::mem::take(&mut self.units), now) {
            out.warnings.push(format!("rule {}: a concurrency unit was not released (it expires): {e}", policy.rule_name(rule)));
        }
        let errors = match std::mem::replace(&mut self.state, State::Ended { call: None }) {
            State::Turn { spent } => give_back(policy, env.store, &spent, now),
            State::Window { kept } => give_back_kept(policy, env.store, &kept, now),
            State::Calling { needs, kept } => {
                // The answer may still come: it is applied then.
                self.state = State::Ended { call: Some(needs) };
                give_back_kept(policy, env.store, &kept, now)
            }
            State::Ended { call } => {
                self.state = State::Ended { call };
                Vec::new()
            }
            _ => Vec::new(),
        };
        for (rule, e) in errors {
            out.warnings.push(format!("rule {}: giving back a queued turn: {e}", policy.rule_name(rule)));
        }
    }

    /// Gives back what the request spent from the rules whose count its
    /// answer fails (once).
    fn response(&mut self, status: u32, env: &mut Env, out: &mut Out) {
        if self.refundable.is_empty() {
            return;
        }
        let policy = &*self.policy;
        let fails = |s: &Spent| refund_from(policy, s).is_some_and(|from| status >= u32::from(from));
        let refund: Vec<Spent> = std::mem::take(&mut self.refundable).into_iter().filter(fails).collect();
        if refund.is_empty() {
            return;
        }
        // A failed answer's spend is given back whole: nothing to settle.
        self.costed.retain(|s| !refund.contains(s));
        let now = env.host.now();
        for (rule, e) in give_back(policy, env.store, &refund, now) {
            out.warnings.push(format!("rule {}: a failed request's units not given back: {e}", policy.rule_name(rule)));
        }
        for s in &refund {
            let rule = s.rule();
            if !out.refunded.contains(&rule) {
                out.refunded.push(rule);
            }
        }
    }

    fn waited(&self, now: u64) -> u64 {
        now.saturating_sub(self.arrival)
    }

    /// Decides the request with what it carries, and settles the decision
    /// unless it waits for a reserve call.
    fn decide(&mut self, ctx: Ctx, carried: Vec<Carry>, env: &mut Env, out: &mut Out) {
        let mut d = decide_carrying(&self.policy, env.request, env.store, ctx, &carried);
        out.refills.append(&mut d.effects.refills);
        for (rule, id) in d.effects.boxes.iter().filter_map(|(r, id)| Some((self.policy.rules.get(*r)?, id.as_ref()?))) {
            let for_ms = rule.penalty.as_ref().map_or(1, |p| (p.block.nanos() / 1_000_000).clamp(1, crate::counter_api::MAX_BLOCK_MS));
            out.share.push(crate::counter_api::Block { rule: rule.name.clone(), id: id.clone(), for_ms });
        }
        if d.pending() && self.policy.global.is_some() {
            self.state = State::Calling { needs: d.effects.wait_for.clone(), kept: d.effects.kept.clone() };
            out.call = Some(d.effects.wait_for.clone());
            out.decided.push(Decided { decision: d, carried, first: !self.settled, fate: Fate::Calls });
            return;
        }
        self.settle(d, carried, ctx.now, env, out);
    }

    /// Acts on a final decision: a reply, a hold, or go.
    fn settle(&mut self, d: Decision, carried: Vec<Carry>, ctx_now: u64, env: &mut Env, out: &mut Out) {
        let policy = &*self.policy;
        let now = ctx_now;
        let first = !self.settled;
        let waits = d.allowed() && (d.ruling.redo_at.is_some() || d.ruling.hold_ns > 0);
        if waits && !may_hold(env.host.held_here()) {
            // A worker holds a bounded number of requests: beyond it, one
            // that would wait is refused as its rule refuses.
            let (mut refused, errors) = refuse_hold(policy, env.store, &d, now);
            // What the waiting decision found stays for logs and metrics.
            (refused.books.notes, refused.books.errors, refused.books.unread) = (d.books.notes, d.books.errors, d.books.unread);
            for (rule, e) in errors {
                out.warnings.push(format!("rule {}: a refused wait kept its turn: {e}", policy.rule_name(rule)));
            }
            out.hold_refused = true;
            return self.settle(refused, carried, ctx_now, env, out);
        }
        let jitter = env.host.random().rotate_left(32);
        if let Some(reply) = unavailable(policy, &d).or_else(|| denial(policy, &d, now, jitter)) {
            self.state = State::Replied;
            out.reply = Some(reply);
            out.decided.push(Decided { decision: d, carried, first, fate: Fate::Replied });
            return;
        }
        self.settled = true;
        if let Some(at) = d.ruling.redo_at {
            self.state = State::Window { kept: d.effects.kept.clone() };
            out.wake_at = Some(at);
            out.decided.push(Decided { decision: d, carried, first, fate: Fate::WaitsWindow });
            return;
        }
        self.units.extend(d.effects.spent.iter().filter(|s| matches!(s, Spent::Concurrent { .. })));
        self.refundable = d.effects.spent.iter().filter(|s| refund_from(policy, s).is_some()).copied().collect();
        self.costed = d.effects.spent.iter().filter(|s| settle::settles(policy, s)).copied().collect();
        let rule = |a: &&crate::limiter::RuleOutcome| policy.rules.get(a.rule);
        let learns = d.ruling.applied.iter().any(|a| rule(&a).is_some_and(|r| r.obey_upstream));
        self.admitted = Some(Admitted {
            headers: admitted_headers(policy, &d, now),
            // What learning from the upstream needs, only where a rule does.
            spent: if learns { d.effects.spent.clone() } else { Vec::new() },
            global_ids: if learns { d.effects.global_ids.clone() } else { Vec::new() },
            learns,
            adapts: d.ruling.applied.iter().filter(|a| rule(a).is_some_and(|r| r.adaptive.is_some())).map(|a| a.rule).collect(),
            sent_at: now,
        });
        if d.ruling.hold_ns > 0 {
            self.state = State::Turn { spent: d.effects.spent.clone() };
            out.wake_at = Some(now.saturating_add(d.ruling.hold_ns));
            out.decided.push(Decided { decision: d, carried, first, fate: Fate::Holds });
            return;
        }
        self.state = State::Upstream;
        out.go = true;
        if !first {
            out.waited_ns = Some(self.waited(now));
        }
        out.decided.push(Decided { decision: d, carried, first, fate: Fate::Goes });
    }
}

/// The status from which an answer gives back this spend (its rule counts
/// only successes; a concurrency unit is freed anyway).
fn refund_from(policy: &Policy, s: &Spent) -> Option<u16> {
    if matches!(s, Spent::Concurrent { .. }) {
        return None;
    }
    policy.rules.get(s.rule()).and_then(|r| r.refund_from)
}
