//! Test support shared by the core's integration tests: an in-memory
//! counter service with the real one's contract, and an instance that
//! handles requests the way the filter does (wait for a lease when told to,
//! then decide again; refills go out on ticks).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use sluice_core::counter_api::Ask;
use sluice_core::lease::Answer;
use sluice_core::limiter::{apply_answer, decide_carrying, Carry, Ctx, Decision, LeaseNeed, Spans};
use sluice_core::memory_counter::MemoryCounter;
use sluice_core::policy::Policy;
use sluice_core::request::MemoryRequest;
use sluice_core::store::{ensure_slots, MemoryStore};

pub const MS: u64 = 1_000_000;

/// Where a request stands after one decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Refused,
    /// Decide again at this time, with what the request kept.
    Redo(u64, Vec<Carry>),
    /// Went upstream at this time.
    Went(u64),
}

/// The counter service's contract, in memory (the core's own, which the
/// replay uses too), counting calls.
#[derive(Default)]
pub struct FakeCounter {
    pub service: MemoryCounter,
    pub calls: u64,
}

impl FakeCounter {
    pub fn reserve(&mut self, asks: &[Ask], now: u64) -> Vec<Answer> {
        self.calls += 1;
        self.service.reserve(asks, now)
    }

    /// Units reserved in a window of a key.
    pub fn used(&self, rule: &str, id: &str, window: u64) -> u64 {
        self.service.used(rule, id, window)
    }

    pub fn used_in_all(&self, rule: &str, id: &str) -> u64 {
        self.service.used_in_all(rule, id)
    }
}

pub struct Instance {
    pub policy: Policy,
    pub store: MemoryStore,
    pub refills: Vec<LeaseNeed>,
    /// The leader's watch of spans reserved ahead.
    pub spans: Spans,
    /// A xorshift state: the random number each decision gets.
    pub rng: u64,
}

impl Instance {
    pub fn new(policy: Policy) -> Instance {
        let store = MemoryStore::default();
        ensure_slots(&store, policy.slots).unwrap();
        Instance { policy, store, refills: Vec::new(), spans: Spans::default(), rng: 0x9e37_79b9_7f4a_7c15 }
    }

    /// Applies answers; returns the units that belong to the asking request.
    pub fn answer(&self, needs: &[LeaseNeed], answers: &[Answer], now: u64) -> Vec<Carry> {
        needs.iter().zip(answers).filter_map(|(n, a)| apply_answer(&self.policy, &self.store, n, a, now).unwrap().carry).collect()
    }

    /// A request's first decision, up to its wait for a lease (if any).
    pub fn first(&mut self, req: &MemoryRequest, now: u64) -> Decision {
        let d = decide_carrying(&self.policy, &mut req.clone(), &self.store, Ctx::at(now), &[]);
        self.refills.extend(d.refills.iter().cloned());
        d
    }

    /// The decision after the counter answered the wait of `first`.
    pub fn then(&mut self, counter: &mut FakeCounter, req: &MemoryRequest, first: &Decision, now: u64) -> Decision {
        let asks: Vec<Ask> = first.wait_for.iter().map(|n| n.ask.clone()).collect();
        let answers = counter.reserve(&asks, now);
        let mut carried = self.answer(&first.wait_for, &answers, now);
        carried.extend(first.kept.iter().copied());
        let again = decide_carrying(&self.policy, &mut req.clone(), &self.store, Ctx { may_wait: false, ..Ctx::at(now) }, &carried);
        self.refills.extend(again.refills.iter().cloned());
        again
    }

    /// One request the way the filter handles it: wait for a lease when
    /// told to, then decide again.
    pub fn send(&mut self, counter: &mut FakeCounter, req: &MemoryRequest, now: u64) -> Decision {
        let d = self.first(req, now);
        if !d.pending() {
            return d;
        }
        self.then(counter, req, &d, now)
    }

    /// One decision for a request that arrived at `arrival`, made at `now`,
    /// the way the filter makes it (waiting for a lease when told to).
    /// `kept`: what it kept from its previous decision.
    pub fn step(&mut self, counter: &mut FakeCounter, req: &MemoryRequest, arrival: u64, now: u64, kept: &[Carry]) -> Step {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let ctx = Ctx { waited_ns: now - arrival, random: self.rng, ..Ctx::at(now) };
        let mut d = decide_carrying(&self.policy, &mut req.clone(), &self.store, ctx, kept);
        if d.pending() {
            let asks: Vec<Ask> = d.wait_for.iter().map(|n| n.ask.clone()).collect();
            let answers = counter.reserve(&asks, now);
            let mut carried = self.answer(&d.wait_for, &answers, now);
            carried.extend(d.kept.iter().copied());
            d = decide_carrying(&self.policy, &mut req.clone(), &self.store, Ctx { may_wait: false, ..ctx }, &carried);
        }
        self.refills.extend(d.refills.iter().cloned());
        match (d.allowed(), d.redo_at) {
            (false, _) => Step::Refused,
            (true, Some(t)) => Step::Redo(t, d.kept),
            (true, None) => Step::Went(now + d.hold_ns),
        }
    }

    /// The leader's tick: one batched call for every refill (asks ahead
    /// widened to spans) and every span given back.
    pub fn tick(&mut self, counter: &mut FakeCounter, now: u64) {
        let needs = self.lead(now);
        if needs.is_empty() {
            return;
        }
        let asks: Vec<Ask> = needs.iter().map(|n| n.ask.clone()).collect();
        let answers = counter.reserve(&asks, now);
        self.answer(&needs, &answers, now);
    }

    /// What the leader sends on a tick, as the filter's leader does.
    pub fn lead(&mut self, now: u64) -> Vec<LeaseNeed> {
        let mut needs = std::mem::take(&mut self.refills);
        self.spans.widen(&self.policy, &mut needs, now);
        let (back, errors) = self.spans.sweep(&self.policy, &self.store, now);
        assert!(errors.is_empty(), "{errors:?}");
        needs.extend(back);
        needs
    }
}
