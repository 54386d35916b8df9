//! Test support shared by the core's integration tests: an in-memory
//! counter service with the real one's contract, and an instance that
//! handles requests the way the filter does (wait for a lease when told to,
//! then decide again; refills go out on ticks).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::rc::Rc;

use sluice_core::allowance::{settle_due, settle_some, Allowances, Budget};
use sluice_core::counter_api::Ask;
use sluice_core::flow::{apply_answers, At, Env, Event, Fate, Flow, Out, TICK_NS};
use sluice_core::lease::Answer;
use sluice_core::limiter::{decide_carrying, Carry, Ctx, Decision, LeaseNeed, Outbox, Spans, ASKS_PER_TICK, SWEEP_PER_TICK};
use sluice_core::memory_counter::MemoryCounter;
use sluice_core::policy::Policy;
use sluice_core::request::MemoryRequest;
use sluice_core::store::{ensure_slots, MemoryStore, SharedStore, StoreError};

pub const MS: u64 = 1_000_000;

/// A request's flow in these tests.
pub type TestFlow = Flow<Rc<Policy>>;

/// Where a request stands after one decision.
#[derive(Debug)]
pub enum Step {
    Refused,
    /// Wake its flow at this time (it waits for a later window).
    Redo(u64, Box<TestFlow>),
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

/// An instance's shared data as its one worker sees it: the store, and
/// the worker's shares and loans of busy keys (as the filter's).
#[derive(Default)]
pub struct Worker {
    pub shared: MemoryStore,
    pub shares: std::cell::RefCell<Allowances>,
}

impl std::ops::Deref for Worker {
    type Target = MemoryStore;
    fn deref(&self) -> &MemoryStore {
        &self.shared
    }
}

impl SharedStore for Worker {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.shared.get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        self.shared.set(key, value, cas)
    }
    fn allowances(&self) -> Option<&std::cell::RefCell<Allowances>> {
        Some(&self.shares)
    }
}

pub struct Instance {
    pub policy: Rc<Policy>,
    pub store: Worker,
    pub refills: Vec<LeaseNeed>,
    /// The leader's watch of spans reserved ahead.
    pub spans: Spans,
    /// A xorshift state: the random number each decision gets.
    pub rng: u64,
    /// Ticks settle shares, look at spans and send asks within the
    /// filter's budgets (ticks every `TICK_NS`), where by default they do
    /// every one due.
    pub paced: bool,
    /// The leader's asks not sent yet (paced only).
    pub outbox: Outbox,
}

impl Instance {
    pub fn new(policy: Policy) -> Instance {
        let store = Worker::default();
        ensure_slots(&store.shared, policy.slots).unwrap();
        Instance {
            policy: Rc::new(policy),
            store,
            refills: Vec::new(),
            spans: Spans::default(),
            rng: 0x9e37_79b9_7f4a_7c15,
            paced: false,
            outbox: Outbox::default(),
        }
    }

    /// Applies answers; returns the units that belong to the asking request.
    pub fn answer(&self, needs: &[LeaseNeed], answers: &[Answer], now: u64) -> Vec<Carry> {
        apply_answers(&self.policy, &self.store, needs, answers, now).carried
    }

    /// A request's first decision alone, up to its wait for a lease (if any).
    pub fn first(&mut self, req: &MemoryRequest, now: u64) -> Decision {
        let d = decide_carrying(&self.policy, &mut req.clone(), &self.store, Ctx::at(now), &[]);
        self.refills.extend(d.effects.refills.iter().cloned());
        d
    }

    /// A new request's flow.
    pub fn flow(&self) -> TestFlow {
        Flow::new(self.policy.clone())
    }

    /// Hands `flow` one event; its refills wait for the next tick.
    pub fn on(&mut self, flow: &mut TestFlow, req: &MemoryRequest, event: Event, mut at: At) -> Out {
        let mut out = flow.on(event, &mut Env { store: &self.store, request: &mut req.clone(), host: &mut at });
        self.refills.append(&mut out.refills);
        out
    }

    /// Hands `flow` one event, answering its reserve call at once; the
    /// last decision, and when the flow asks to be woken.
    pub fn drive(
        &mut self,
        counter: &mut FakeCounter,
        req: &MemoryRequest,
        flow: &mut TestFlow,
        event: Event,
        at: At,
    ) -> (Option<(Decision, Fate)>, Option<u64>) {
        let mut out = self.on(flow, req, event, at);
        let mut last = out.decided.pop();
        while let Some(needs) = out.call.take() {
            let asks: Vec<Ask> = needs.iter().map(|n| n.ask.clone()).collect();
            let answers = counter.reserve(&asks, at.now);
            out = self.on(flow, req, Event::Answered(Some(answers)), at);
            last = out.decided.pop().or(last);
        }
        (last.map(|d| (d.decision, d.fate)), out.wake_at)
    }

    /// One request the way the filter handles it: wait for a lease when
    /// told to, then decide again.
    pub fn send(&mut self, counter: &mut FakeCounter, req: &MemoryRequest, now: u64) -> Decision {
        let mut flow = self.flow();
        let (last, _) = self.drive(counter, req, &mut flow, Event::Headers { end_of_stream: true }, At::new(now));
        last.map(|(d, _)| d).unwrap_or_default()
    }

    /// One step of a request's flow at `now`: its first (`flow: None`), or
    /// its wake-up for a later window.
    pub fn step(&mut self, counter: &mut FakeCounter, req: &MemoryRequest, flow: Option<Box<TestFlow>>, now: u64) -> Step {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let (mut flow, event) = match flow {
            Some(flow) => (*flow, Event::Wake),
            None => (self.flow(), Event::Headers { end_of_stream: true }),
        };
        let at = At { now, random: self.rng, ..At::default() };
        match self.drive(counter, req, &mut flow, event, at) {
            (Some((_, Fate::WaitsWindow)), Some(t)) => Step::Redo(t, Box::new(flow)),
            (Some((d, Fate::Holds | Fate::Goes)), _) => Step::Went(now + d.ruling.hold_ns),
            _ => Step::Refused,
        }
    }

    /// The leader's tick: one batched call for every refill (asks ahead
    /// widened to spans) and every span given back.
    pub fn tick(&mut self, counter: &mut FakeCounter, now: u64) {
        let needs = self.lead(now);
        let calls = if self.paced {
            self.outbox.push(needs);
            self.outbox.calls(ASKS_PER_TICK)
        } else {
            vec![needs]
        };
        for needs in calls.into_iter().filter(|n| !n.is_empty()) {
            let asks: Vec<Ask> = needs.iter().map(|n| n.ask.clone()).collect();
            let answers = counter.reserve(&asks, now);
            self.answer(&needs, &answers, now);
        }
    }

    /// What the leader sends on a tick, as the filter's leader does.
    pub fn lead(&mut self, now: u64) -> Vec<LeaseNeed> {
        let unsettled = if self.paced {
            settle_some(&self.store.shares, &self.store, now, false, Budget::per_tick(now, TICK_NS))
        } else {
            settle_due(&self.store.shares, &self.store, now, false)
        };
        assert!(unsettled.is_empty(), "{unsettled:?}");
        let mut needs = std::mem::take(&mut self.refills);
        self.spans.widen(&self.policy, &mut needs, now);
        let budget = if self.paced { SWEEP_PER_TICK } else { usize::MAX };
        let (back, errors) = self.spans.sweep(&self.policy, &self.store, now, budget);
        assert!(errors.is_empty(), "{errors:?}");
        needs.extend(back);
        needs
    }
}
