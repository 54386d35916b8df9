//! The root context: parses and validates the policy on every
//! (re)configuration and hands it to each new HTTP context. A refused policy
//! makes `on_configure` return false, which makes Envoy keep the previous
//! configuration.
//!
//! With global rules, every root ticks, handing its worker's refills to the
//! shared queue; the one elected leader of the instance drains the queue
//! into batched reserve calls and, while the counter service is down,
//! probes it once a second.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};
use sluice_core::allowance::Budget;
use sluice_core::coordination::{resign, try_lead};
use sluice_core::flow::{Event, TICK_NS};
use sluice_core::limiter::{LeaseNeed, Outbox, Spans, ASKS_PER_TICK, SWEEP_PER_TICK};
use sluice_core::policy::Policy;
use sluice_core::store::ensure_slots;

use crate::callout;
use crate::drive::{drive, SharedFlow};
use crate::filter::SluiceFilter;
use crate::global::{self, REFILL_QUEUE};
use crate::host::{now_ns, random, HostStore};
use crate::logs::warn_within_budget;
use crate::queue;

/// Lease work runs every `LEASE_EVERY_NS`; held requests are woken on
/// every tick (the core keeps their wake times to this precision).
const TICK: Duration = Duration::from_nanos(TICK_NS);
const LEASE_EVERY_NS: u64 = 50_000_000;
const LEADER_TERM_NS: u64 = 4 * LEASE_EVERY_NS;
const PROBE_EVERY_NS: u64 = 1_000_000_000;

/// What a root context's callout was for.
enum Call {
    Reserve(Vec<LeaseNeed>),
    Probe,
    /// Leases for a woken request being decided again (stream
    /// `context_id`), and what it asked.
    Woken {
        context_id: u32,
        flow: SharedFlow,
        needs: Vec<LeaseNeed>,
    },
}

pub struct SluiceRoot {
    context_id: u32,
    policy: Option<Rc<Policy>>,
    me: u32,
    queue: Option<u32>,
    instance: Rc<str>,
    calls: HashMap<u32, Call>,
    last_probe: u64,
    last_lease_work: u64,
    /// As leader: the keys whose reservations ahead span windows.
    spans: Spans,
    /// As leader: give-backs and renewals the sweeps found, sent with the
    /// next lease work's call (a call costs the leader 100–200 µs; one per
    /// tick held Envoy's main thread for that long on every tick).
    swept: Vec<LeaseNeed>,
    /// As leader: the asks of its lease work not sent yet (at most
    /// `ASKS_PER_TICK` go out a tick, see `sluice_core::limiter::Outbox`).
    outbox: Outbox,
    /// This root won the last leader election.
    leading: bool,
    /// Envoy is done with this root (its configuration was replaced): it
    /// only waits for the answers of its calls in flight.
    closing: bool,
    /// The tick period set, ns.
    tick_ns: u64,
}

impl SluiceRoot {
    pub fn new(context_id: u32) -> Self {
        SluiceRoot {
            context_id,
            policy: None,
            me: u32::try_from(random() & 0xffff_ffff).unwrap_or(1),
            queue: None,
            instance: Rc::from("sluice"),
            calls: HashMap::new(),
            last_probe: 0,
            last_lease_work: 0,
            spans: Spans::default(),
            swept: Vec::new(),
            outbox: Outbox::default(),
            leading: false,
            closing: false,
            tick_ns: 0,
        }
    }
}

impl Context for SluiceRoot {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        let started = std::time::Instant::now();
        self.answered(token, body_size);
        crate::metrics::periodic_work(crate::metrics::micros_since(started));
        if self.closing && self.calls.is_empty() {
            crate::host::done();
        }
    }

    /// A root whose configuration was replaced stays until the answers to
    /// its calls are in: the counter service has already counted the units
    /// they reserve, and a call cancelled with the context would leave
    /// them spent by nobody. It gives up the lead at once, so that the new
    /// root takes it at its next tick.
    fn on_done(&mut self) -> bool {
        self.closing = true;
        if let Err(e) = resign(&HostStore, self.me) {
            log::debug!("leader resignation: {e}");
        }
        // Asks not sent yet: their keys ask again, through the next leader.
        if let (Some(policy), false) = (self.policy.clone(), self.outbox.is_empty()) {
            global::forget(&policy, &self.outbox.take_all(), now_ns());
        }
        self.calls.is_empty()
    }
}

impl SluiceRoot {
    fn answered(&mut self, token: u32, body_size: usize) {
        let now = now_ns();
        match self.calls.remove(&token) {
            Some(Call::Reserve(needs)) => {
                let Some(policy) = self.policy.clone() else { return };
                global::refilled(&policy, &needs, body_size, now);
            }
            Some(Call::Probe) if callout::status() == Some(200) => global::reachable(true, now, ""),
            Some(Call::Probe) => crate::metrics::failed(crate::metrics::Call::Probe),
            Some(Call::Woken { context_id, flow, needs }) => {
                let answers = global::read_answers(&needs, body_size, now);
                self.wake(context_id, &flow, Event::Answered(answers));
            }
            None => {}
        }
    }

    /// The leader's periodic work.
    fn lead(&mut self, policy: &Policy) {
        let Some(settings) = policy.global.as_ref() else { return };
        let now = now_ns();
        // Read from shared data on this very tick (`on_tick`).
        let degraded = global::degraded();
        if degraded && now.saturating_sub(self.last_probe) >= PROBE_EVERY_NS {
            self.last_probe = now;
            match callout::probe(settings) {
                Ok(token) => {
                    crate::metrics::sent(crate::metrics::Call::Probe);
                    self.calls.insert(token, Call::Probe);
                }
                Err(e) => {
                    crate::metrics::failed(crate::metrics::Call::Probe);
                    log::debug!("probe not sent: {e}");
                }
            }
        }
        let Some(queue) = self.queue else { return };
        let (mut needs, dropped) = global::dequeue(queue);
        global::forget(policy, &dropped, now);
        if degraded {
            self.forget_unsent(policy, needs, now);
            return;
        }
        // Steady keys reserve several windows ahead in one ask (the keys
        // the traffic left give back on the ticks, `sweep`).
        self.spans.widen(policy, &mut needs, now);
        needs.append(&mut self.swept);
        self.outbox.push(needs);
    }

    /// As leader, on every tick: looks at a few of the leases reserved
    /// ahead, for giving back what keys the traffic left hold and renewing
    /// spans still in use; both go out with the next batched call (`lead`).
    fn sweep(&mut self, policy: &Policy, now: u64) {
        if policy.global.is_none() || !self.leading || self.closing || self.spans.is_empty() || global::degraded() {
            return;
        }
        let (back, errors) = self.spans.sweep(policy, &HostStore, now, SWEEP_PER_TICK);
        for e in errors {
            warn_within_budget!(now, "a lease reserved ahead not looked at: {e}");
        }
        crate::metrics::given_back(&back);
        self.swept.extend(back);
    }

    /// As leader, on every tick: sends this tick's share of the asks
    /// waiting, in as many calls as the service's bounds take.
    fn send(&mut self, policy: &Policy, now: u64) {
        let Some(settings) = policy.global.as_ref() else { return };
        if self.outbox.is_empty() || global::degraded() {
            // Down: the next lease work forgets them.
            return;
        }
        for batch in self.outbox.calls(ASKS_PER_TICK) {
            match callout::reserve(settings, &self.instance, &batch) {
                Ok(token) => {
                    crate::metrics::sent(crate::metrics::Call::Reserve);
                    self.calls.insert(token, Call::Reserve(batch));
                }
                Err(e) => {
                    crate::metrics::failed(crate::metrics::Call::Reserve);
                    global::forget(policy, &batch, now);
                    global::reachable(false, now, &e);
                }
            }
        }
    }
}

impl SluiceRoot {
    /// Hands `event` to the flow of a held stream (woken, or answered a
    /// call this root made for it) and resumes the stream when it may go
    /// on. A reserve call it needs is made by this root, as the stream's
    /// own context may be gone by the time it is answered.
    fn wake(&mut self, context_id: u32, flow: &SharedFlow, event: Event) {
        if hostcalls::set_effective_context(context_id).is_err() {
            // The stream is gone; its flow was told (`on_done`). An answer
            // still fills the leases.
            let (host, gone) = ((self.queue, &*self.instance), &mut |_: &_, _: &_| Err("stream gone".into()));
            drive(context_id, flow, Event::Left, host, gone);
            if matches!(event, Event::Answered(_)) {
                drive(context_id, flow, event, host, gone);
            }
            return;
        }
        let (root, instance, calls) = (self.context_id, self.instance.clone(), &mut self.calls);
        let go = drive(context_id, flow, event, (self.queue, &instance), &mut |settings, needs| {
            // The call belongs to this root, not to the stream. Both
            // contexts exist (this root runs; the stream is being decided),
            // so switching cannot fail.
            let _ = hostcalls::set_effective_context(root);
            let token = callout::reserve(settings, &instance, needs);
            let _ = hostcalls::set_effective_context(context_id);
            calls.insert(token?, Call::Woken { context_id, flow: flow.clone(), needs: needs.to_vec() });
            Ok(())
        });
        if go {
            if let Err(e) = hostcalls::resume_http_request() {
                log::debug!("held request {context_id} not resumed: {e:?}");
            }
        }
        // Back to this root, which exists (it is running): the call cannot
        // fail, and nothing else could be done.
        let _ = hostcalls::set_effective_context(self.context_id);
    }
}

impl RootContext for SluiceRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        // The SDK's getter panics on a refusal; no configuration is refused below.
        let bytes = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX).ok().flatten().unwrap_or_default();
        let text = match std::str::from_utf8(&bytes) {
            Ok(t) => t,
            Err(e) => {
                log::error!("policy refused: not UTF-8 text: {e}");
                return false;
            }
        };
        let mut policy = match Policy::from_json(text) {
            Ok(p) => p,
            Err(e) => {
                log::error!("policy refused: {}", e.one_line());
                return false;
            }
        };
        // The counter service's secret, when the policy names the variable
        // holding it (the VM's environment: vm_config.environment_variables).
        if let Err(e) = policy.resolve_secret(|name| std::env::var(name).ok()) {
            log::error!("policy refused: {e}");
            return false;
        }
        if let Err(e) = ensure_slots(&HostStore, policy.slots) {
            log::error!("policy refused: cannot create {} state slots: {e}", policy.slots);
            return false;
        }
        if policy.rules.iter().any(|r| r.concurrent) {
            if let Err(e) = sluice_core::concurrency::ensure_slots(&HostStore) {
                log::error!("policy refused: cannot create the concurrency slots: {e}");
                return false;
            }
        }
        // Slot addresses are keyed by the instance's secret (drawn once,
        // shared by every worker through shared data).
        let mut fresh = [0u8; 16];
        if getrandom::fill(&mut fresh).is_err() {
            let (a, b) = (random(), random());
            fresh = u128::from(a).wrapping_shl(64).wrapping_add(u128::from(b)).to_le_bytes();
        }
        match sluice_core::store::ensure_secret(&HostStore, fresh) {
            Ok(secret) => policy.slot_secret = secret,
            Err(e) => {
                log::error!("policy refused: cannot read or create the slot secret: {e}");
                return false;
            }
        }
        if let Err(e) = sluice_core::adaptive::ensure(&HostStore, &policy.rules) {
            log::error!("policy refused: cannot create the adaptive rules' state: {e}");
            return false;
        }
        if policy.global.is_some() {
            // Without the queue no refill would reach the leader: every key
            // would wait for a call whenever its lease ran out.
            match hostcalls::register_shared_queue(REFILL_QUEUE) {
                Ok(queue) => self.queue = Some(queue),
                Err(e) => {
                    log::error!("policy refused: cannot register the shared queue {REFILL_QUEUE:?} for global lease refills: {e:?}");
                    return false;
                }
            }
            if let Ok(Some(id)) = hostcalls::get_property(vec!["node", "id"]) {
                self.instance = Rc::from(sluice_core::counter_api::instance_name(&String::from_utf8_lossy(&id)));
            }
        }
        // Requests held under a previous policy still need waking.
        // Otherwise the tick only hands the worker's metrics to Envoy.
        // And a worker's shares settle a few per tick, well before they lapse.
        let ticks = policy.global.is_some() || policy.rules.iter().any(|r| r.queue.is_some() || sluice_core::allowance::eligible(r)) || queue::len() > 0;
        let period = if ticks { TICK } else { crate::metrics::FLUSH_EVERY };
        if let Err(e) = hostcalls::set_tick_period(period) {
            log::error!("no tick period set: {e:?}");
        }
        self.tick_ns = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX);
        crate::metrics::define_rules(&policy.rules);
        // The shares this worker holds were reserved under the old limits.
        settle_shares(now_ns(), None);
        log::info!("policy loaded: {} rules, {} slots", policy.rules.len(), policy.slots);
        self.policy = Some(Rc::new(policy));
        true
    }

    fn on_tick(&mut self) {
        let started = std::time::Instant::now();
        self.tick();
        crate::metrics::periodic_work(crate::metrics::micros_since(started));
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(SluiceFilter::new(context_id, self.policy.clone(), self.queue, self.instance.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl SluiceRoot {
    /// The root's periodic work: metrics to Envoy, shares settled, held
    /// requests woken, refills handed over; as leader, the lease work.
    fn tick(&mut self) {
        crate::metrics::flush();
        let now = now_ns();
        settle_shares(now, Some(Budget::per_tick(now, self.tick_ns)));
        for (context_id, flow) in queue::due(now) {
            self.wake(context_id, &flow, Event::Wake);
        }
        let Some(policy) = self.policy.clone() else { return };
        if policy.global.is_some() {
            global::refresh_degraded();
            global::send_refills(self.queue);
        }
        self.sweep(&policy, now);
        if self.closing || policy.global.is_none() {
            return;
        }
        if now.saturating_sub(self.last_lease_work) >= LEASE_EVERY_NS {
            self.lease_work(&policy, now);
        }
        if self.leading {
            self.send(&policy, now);
        }
    }

    /// Every `LEASE_EVERY_NS`: the leader election, and as leader the
    /// round of lease work.
    fn lease_work(&mut self, policy: &Policy, now: u64) {
        self.last_lease_work = now;
        self.leading = match try_lead(&HostStore, self.me, now, LEADER_TERM_NS) {
            Ok(won) => won,
            Err(e) => {
                log::debug!("leader election: {e}");
                false
            }
        };
        if self.leading {
            self.lead(policy);
        } else {
            // The lead was lost: the new leader watches and asks afresh.
            self.forget_unsent(policy, Vec::new(), now);
        }
    }

    /// Forgets `needs` with the sweeps' give-backs and renewals and the
    /// asks not sent yet (the service is down, or another root leads):
    /// their keys may ask again.
    fn forget_unsent(&mut self, policy: &Policy, mut needs: Vec<LeaseNeed>, now: u64) {
        needs.append(&mut self.swept);
        needs.append(&mut self.outbox.take_all());
        if !needs.is_empty() {
            global::forget(policy, &needs, now);
        }
    }
}

/// Settles this worker's shares and loans of busy keys that may no longer
/// be spent, within `budget` (`None`: every one, due or not); see
/// `sluice_core::allowance`.
fn settle_shares(now: u64, budget: Option<Budget>) {
    if let Some(shares) = sluice_core::store::SharedStore::allowances(&HostStore) {
        let errors = match budget {
            Some(b) => sluice_core::allowance::settle_some(shares, &HostStore, now, false, b),
            None => sluice_core::allowance::settle_due(shares, &HostStore, now, true),
        };
        for e in errors {
            warn_within_budget!(now, "a worker's share of a key not settled (it lapses by itself within a second): {e}");
        }
    }
}
