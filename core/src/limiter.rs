//! The decision for one request: which rules apply, the key of each, and
//! whether the request may pass.
//!
//! Order: rules are taken in policy order. Each applicable rule spends from
//! its bucket; when one (in enforce mode) denies, the remaining rules are
//! only looked at (to report the most restrictive one, the one whose
//! retry-after is longest) and what the earlier rules spent is given back.
//! So a denied request spends no quota at all, and an admitted one spends
//! one unit of every rule that applied. Shadow rules count like enforced
//! ones but never deny; their would-be denials are reported.
//!
//! A key is the rule's identity followed by each part's value, case-folded
//! (a client cannot get a fresh bucket by changing the case of a header),
//! hashed with FNV-1a. A missing part (no such header, no tenant, ...) is
//! hashed as a marker no real value has, so by default every request lacking
//! it shares one bucket: leaving a header out never escapes a rule. A rule
//! with `"missing": "skip"` does not apply to such requests instead.
//!
//! A global rule first passes its own bucket (the instance's share of
//! smoothing, at the full limit), then spends a unit of its lease (see
//! `lease`). When the lease is empty and the service may still have units,
//! the decision asks the caller to wait for a reservation (`wait_for`),
//! having spent nothing; asks that keep leases topped up ahead of need come
//! back in `refills`. While the counter service is unreachable (`degraded`)
//! a global rule falls back to its `failure_mode`: `open` enforces
//! `limit / expected_instances` in a bucket of its own, `closed` refuses.

use crate::bucket::Outcome;
use crate::client_ip::{client_ip, peer_ip};
use crate::counter_api::Ask;
use crate::hash::Fnv;
use crate::lease::Step;
use crate::path::{normalize, Params};
use crate::policy::{CostSource, FailureMode, HeaderTest, KeyPart, Limit, Missing, Policy, Rule, Scope};
use crate::request::Request;
use crate::store::{self, SharedStore, StoreError};

/// The circumstances of one decision.
#[derive(Clone, Copy, Debug)]
pub struct Ctx {
    /// Wall-clock nanoseconds since the epoch.
    pub now: u64,
    /// The counter service is known to be unreachable.
    pub degraded: bool,
    /// The request may wait for a lease (false on the second pass).
    pub may_wait: bool,
    /// How long the request has already waited in queues; a queue's
    /// `max_wait` counts from its arrival.
    pub waited_ns: u64,
    /// Any random number: spreads requests waiting for the same window.
    pub random: u64,
}

impl Ctx {
    pub fn at(now: u64) -> Ctx {
        Ctx { now, degraded: false, may_wait: true, waited_ns: 0, random: 0 }
    }
}

/// A reservation to ask the counter service for. Serialisable, as workers
/// hand refills to the instance's leader through a shared queue.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeaseNeed {
    /// Index into `Policy::rules`.
    pub rule: usize,
    /// The lease's slot fingerprint, to apply the answer to.
    pub fingerprint: u64,
    pub ask: Ask,
}

/// What a request spent, to give back if it ends up denied, or if its
/// client leaves while it waits in a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spent {
    Bucket { rule: usize, fingerprint: u64, fallback: bool, cost: u64 },
    Lease { rule: usize, fingerprint: u64, window: u64, cost: u64 },
}

/// One rule's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleOutcome {
    /// Index into `Policy::rules`.
    pub rule: usize,
    pub outcome: Outcome,
}

/// What happens to the request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// The enforced rule that denied the request (the most restrictive one).
    pub denied_by: Option<RuleOutcome>,
    /// Of the rules that admitted it, the closest to its limit.
    pub tightest: Option<RuleOutcome>,
    /// Shadow rules that would have denied it.
    pub shadow_denied: Vec<RuleOutcome>,
    /// Every rule that applied, in policy order.
    pub applied: Vec<RuleOutcome>,
    pub tenant: Option<String>,
    /// Shared-data failures; the affected rules let the request pass.
    pub errors: Vec<(usize, StoreError)>,
    /// Leases to reserve before this request can be decided; nothing was
    /// spent. Decide again once they are answered.
    pub wait_for: Vec<LeaseNeed>,
    /// Leases to top up in the background.
    pub refills: Vec<LeaseNeed>,
    /// A global rule with `failure_mode: closed` whose service is down.
    pub unavailable: Option<usize>,
    /// Nanoseconds the admitted request must wait for its turn in the
    /// queues of the rules that hold it (0: go now).
    pub hold_ns: u64,
    /// A queueing global rule found its window's budget gone: the request
    /// waits until this time (wall-clock ns), having spent nothing, and is
    /// decided again then.
    pub redo_at: Option<u64>,
    /// What the request spent; see [`give_back`].
    pub spent: Vec<Spent>,
}

impl Decision {
    /// The request passes (it may still have to wait, see `pending`,
    /// `hold_ns` and `redo_at`).
    pub fn allowed(&self) -> bool {
        self.denied_by.is_none() && self.unavailable.is_none()
    }

    /// The request waits for `wait_for` before it can be decided.
    pub fn pending(&self) -> bool {
        self.allowed() && !self.wait_for.is_empty()
    }
}

/// Held requests are woken on a 10 ms tick, so a turn is kept to that
/// precision: one that comes up to a tick after `max_wait` still counts.
pub const TICK_GRACE_NS: u64 = 10_000_000;

/// The limit a failing-open global rule enforces in each instance.
pub fn fallback_limit(policy: &Policy, rule: &Rule) -> Limit {
    let n = policy.global.as_ref().map_or(1, |g| u64::from(g.expected_instances.max(1)));
    let share = |v: u64| v.div_ceil(n).max(1);
    Limit { requests: share(rule.limit.requests), per: rule.limit.per, burst: share(rule.limit.burst) }
}

/// Applies the counter service's answer to the lease it was asked for.
/// A rule that no longer exists (the policy changed meanwhile) is skipped.
pub fn apply_answer(policy: &Policy, store: &dyn SharedStore, need: &LeaseNeed, answer: &crate::lease::Answer, now: u64) -> Result<(), StoreError> {
    let Some(rule) = policy.rule(&need.ask.rule) else { return Ok(()) };
    store::lease_update(store, policy.slots, need.fingerprint, &rule.limit, now, |l| ((), Some(l.grant(now, &rule.limit, answer))))
}

/// Forgets an ask that failed, so that the lease may ask again.
pub fn forget_ask(policy: &Policy, store: &dyn SharedStore, need: &LeaseNeed, now: u64) -> Result<(), StoreError> {
    let Some(rule) = policy.rule(&need.ask.rule) else { return Ok(()) };
    store::lease_update(store, policy.slots, need.fingerprint, &rule.limit, now, |l| ((), Some(crate::lease::Lease { asked_at: 0, ..l })))
}

/// An upstream answered the request that spent `spent` with a wait: keeps
/// the buckets of its rules that obey upstream limits empty until then.
/// Returns the rules for which this starts a block (to log once), and
/// shared-data errors.
pub fn obey_upstream(policy: &Policy, store: &dyn SharedStore, spent: &[Spent], wait_ns: u64, now: u64) -> (Vec<usize>, Vec<(usize, StoreError)>) {
    let (mut started, mut errors) = (Vec::new(), Vec::new());
    for s in spent {
        let Spent::Bucket { rule, fingerprint, fallback: false, .. } = *s else { continue };
        let r = &policy.rules[rule];
        if !r.obey_upstream {
            continue;
        }
        let until = now.saturating_add(wait_ns);
        match store::cas_update(store, policy.slots, fingerprint, &r.limit, now, |st| {
            let (next, start) = st.block(&r.limit, now, until);
            (start, Some(next))
        }) {
            Ok(true) => started.push(rule),
            Ok(false) => {}
            Err(e) => errors.push((rule, e)),
        }
    }
    (started, errors)
}

/// Slot fingerprints derived from a rule's key fingerprint.
fn derived(fingerprint: u64, what: &[u8]) -> u64 {
    Fnv::default().field(&fingerprint.to_le_bytes()).field(what).finish().max(1)
}

/// Request attributes fetched once and reused by every rule.
struct Attrs<'r> {
    req: &'r mut dyn Request,
    method: String,
    raw_path: String,
    path: String,
    headers: Vec<(String, Option<String>)>,
    client_ip: Option<Option<String>>,
    tenant: Option<Option<String>>,
    body: Option<Option<serde_json::Value>>,
}

impl<'r> Attrs<'r> {
    fn new(req: &'r mut dyn Request) -> Attrs<'r> {
        let method = req.method().unwrap_or_default().to_ascii_uppercase();
        let raw_path = req.path().unwrap_or_default();
        let path = normalize(&raw_path);
        Attrs { req, method, raw_path, path, headers: Vec::new(), client_ip: None, tenant: None, body: None }
    }

    fn header(&mut self, name: &str) -> Option<String> {
        if let Some((_, v)) = self.headers.iter().find(|(n, _)| n == name) {
            return v.clone();
        }
        let v = self.req.header(name);
        self.headers.push((name.to_string(), v.clone()));
        v
    }

    fn client_ip(&mut self, trusted_hops: u32) -> Option<String> {
        if self.client_ip.is_none() {
            let peer = self
                .req
                .property(&["source".to_string(), "address".to_string()])
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|a| peer_ip(&a));
            let ip = peer.map(|p| {
                let xff = if trusted_hops > 0 { self.header("x-forwarded-for") } else { None };
                client_ip(xff.as_deref(), &p, trusted_hops)
            });
            self.client_ip = Some(ip);
        }
        self.client_ip.clone().flatten()
    }

    fn query(&self, name: &str) -> Option<String> {
        let query = self.raw_path.split_once('?')?.1;
        let query = query.split('#').next().unwrap_or("");
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
    }

    /// The value of one key part, as bytes to hash.
    fn part(&mut self, policy: &Policy, part: &KeyPart, params: &Params) -> Option<Vec<u8>> {
        let text = match part {
            KeyPart::ClientIp => self.client_ip(policy.trusted_hops),
            KeyPart::Method => Some(self.method.clone()),
            KeyPart::Authority => self.req.authority(),
            KeyPart::Path => Some(self.path.clone()),
            KeyPart::Tenant => self.tenant(policy),
            KeyPart::Header(h) => self.header(h),
            KeyPart::PathParam(name) => params.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()),
            KeyPart::TemplateParam { name, template } => template
                .matches(&self.path)
                .and_then(|ps| ps.into_iter().find(|(n, _)| n == name).map(|(_, v)| v)),
            KeyPart::Query(q) => self.query(q),
            KeyPart::Property(p) => return self.req.property(p).filter(|v| !v.is_empty()),
            KeyPart::Const(c) => Some(c.clone()),
        };
        text.filter(|t| !t.is_empty()).map(String::into_bytes)
    }

    /// Units this request costs under `rule` (see `policy::Cost`).
    fn cost(&mut self, rule: &Rule) -> u64 {
        let Some(cost) = rule.cost.as_ref() else { return 1 };
        let value = match &cost.source {
            CostSource::Header(h) => self.header(h).map(|v| serde_json::Value::String(v.trim().to_string())),
            CostSource::Body(path) => {
                if self.body.is_none() {
                    self.body = Some(self.req.body().and_then(|b| serde_json::from_slice(&b).ok()));
                }
                match self.body.as_ref().and_then(Option::as_ref) {
                    // No JSON body: none sent, too large to read, or not JSON.
                    None => return cost.max,
                    Some(json) => path.iter().try_fold(json, |v, k| v.get(k)).cloned(),
                }
            }
        };
        let n = match value {
            None => return cost.default,
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.parse::<u64>().ok(),
            Some(_) => None,
        };
        n.filter(|n| *n <= cost.max).unwrap_or(cost.max)
    }

    fn tenant(&mut self, policy: &Policy) -> Option<String> {
        if self.tenant.is_none() {
            let mut found = None;
            for source in &policy.tenant {
                if let Some(v) = self.part(policy, source, &Vec::new()) {
                    found = Some(String::from_utf8_lossy(&v).to_ascii_lowercase());
                    break;
                }
            }
            self.tenant = Some(found);
        }
        self.tenant.clone().flatten()
    }

    /// The path parameters when `rule` applies to this request.
    fn applies(&mut self, rule: &Rule, exempt: bool) -> Option<Params> {
        if !rule.methods.is_empty() && !rule.methods.contains(&self.method) {
            return None;
        }
        let params = if rule.paths.is_empty() {
            if exempt {
                return None;
            }
            Vec::new()
        } else {
            let path = &self.path;
            rule.paths
                .iter()
                .filter(|m| !exempt || m.names_exactly(path))
                .find_map(|m| m.matches(path))?
        };
        for h in &rule.headers {
            let value = self.header(&h.name);
            let ok = match (&h.test, value) {
                (HeaderTest::Present(want), v) => v.is_some() == *want,
                (HeaderTest::Exact(want), Some(v)) => v.eq_ignore_ascii_case(want),
                (HeaderTest::Prefix(want), Some(v)) => {
                    v.len() >= want.len() && v.as_bytes()[..want.len()].eq_ignore_ascii_case(want.as_bytes())
                }
                (_, None) => false,
            };
            if !ok {
                return None;
            }
        }
        Some(params)
    }

    /// The rule's key hash, or `None` when a part is missing and the rule
    /// skips such requests.
    /// For global rules also the key as text, parts joined by `:`, for
    /// the counter service.
    fn key(&mut self, policy: &Policy, rule: &Rule, params: &Params) -> Option<(u64, Option<String>)> {
        let mut h = Fnv::default();
        h.field(&rule.identity.to_le_bytes());
        let mut text = (rule.scope == Scope::Global).then(String::new);
        for (i, part) in rule.key.iter().enumerate() {
            let value = match self.part(policy, part, params) {
                Some(mut v) => {
                    v.make_ascii_lowercase();
                    h.field(&v);
                    Some(v)
                }
                None if rule.missing == Missing::Skip => return None,
                // 0xfe never occurs in UTF-8, nor as a whole property value.
                None => {
                    h.field(&[0xfe]);
                    None
                }
            };
            if let Some(t) = text.as_mut() {
                if i > 0 {
                    t.push(':');
                }
                match value {
                    Some(v) => t.push_str(&String::from_utf8_lossy(&v)),
                    None => t.push('-'),
                }
            }
        }
        // 0 marks an empty slot.
        Some((h.finish().max(1), text))
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a` is closer to its limit than `b`: a smaller share of the limit left.
fn tighter(policy: &Policy, a: &RuleOutcome, b: &RuleOutcome) -> bool {
    let (la, lb) = (policy.rules[a.rule].limit.requests, policy.rules[b.rule].limit.requests);
    u128::from(a.outcome.remaining) * u128::from(lb) < u128::from(b.outcome.remaining) * u128::from(la)
}

/// Decides one request.
pub fn decide(policy: &Policy, req: &mut dyn Request, store: &dyn SharedStore, ctx: Ctx) -> Decision {
    let now = ctx.now;
    let mut attrs = Attrs::new(req);
    let exempt = policy.exempt_paths.iter().any(|p| p.eq_ignore_ascii_case(&attrs.path));
    let mut d = Decision::default();
    let mut spent: Vec<Spent> = Vec::new();
    for (i, rule) in policy.rules.iter().enumerate() {
        let Some(params) = attrs.applies(rule, exempt) else { continue };
        let Some((fp, id)) = attrs.key(policy, rule, &params) else { continue };
        let cost = attrs.cost(rule);
        let denied = !d.allowed();
        let result = match (denied, rule.queue.as_ref()) {
            (true, _) => store::peek(store, policy.slots, fp, rule.algorithm, &rule.limit, now, cost).map(|o| (o, 0)),
            (false, Some(q)) => {
                let left_ns = (q.max_wait.nanos() + TICK_GRACE_NS).saturating_sub(ctx.waited_ns);
                let left = crate::policy::Queue { max_wait: crate::duration::Span::from_nanos(left_ns), ..*q };
                store::take_queued(store, policy.slots, fp, &rule.limit, &left, now, cost)
            }
            (false, None) => store::take(store, policy.slots, fp, rule.algorithm, &rule.limit, now, cost).map(|o| (o, 0)),
        };
        let mut outcome = match result {
            Ok((o, wait)) => {
                d.hold_ns = d.hold_ns.max(wait);
                o
            }
            Err(e) => {
                d.errors.push((i, e));
                continue;
            }
        };
        if outcome.allowed && !denied {
            spent.push(Spent::Bucket { rule: i, fingerprint: fp, fallback: false, cost });
            if rule.scope == Scope::Global {
                let id = id.unwrap_or_default();
                match global(policy, rule, i, (fp, cost), id, store, ctx, &mut d, &mut spent) {
                    Ok(Some(o)) => outcome = o,
                    Ok(None) => continue,
                    Err(e) => d.errors.push((i, e)),
                }
            }
        }
        let ro = RuleOutcome { rule: i, outcome };
        d.applied.push(ro);
        if outcome.allowed {
            if !denied && d.tightest.as_ref().is_none_or(|t| tighter(policy, &ro, t)) {
                d.tightest = Some(ro);
            }
        } else if rule.shadow {
            d.shadow_denied.push(ro);
        } else if d.denied_by.as_ref().is_none_or(|w| outcome.retry_after_ns > w.outcome.retry_after_ns) {
            d.denied_by = Some(ro);
        }
    }
    if !d.allowed() || d.pending() || d.redo_at.is_some() {
        refund(policy, store, now, &spent, &mut d);
        d.tightest = None;
        d.hold_ns = 0;
        if !d.allowed() {
            d.wait_for.clear();
            d.redo_at = None;
        }
    } else {
        d.spent = spent;
    }
    d.tenant = attrs.tenant(policy);
    d
}

/// Gives back what an admitted request spent, when its client went away
/// while it waited in a queue. Errors are reported, not fatal.
pub fn give_back(policy: &Policy, store: &dyn SharedStore, spent: &[Spent], now: u64) -> Vec<(usize, StoreError)> {
    let mut d = Decision::default();
    refund(policy, store, now, spent, &mut d);
    d.errors
}

/// The lease part of a global rule whose own bucket admitted the request.
/// `Ok(None)`: the rule waits for a reservation (recorded in `d`).
#[allow(clippy::too_many_arguments)]
fn global(
    policy: &Policy,
    rule: &Rule,
    i: usize,
    (fp, cost): (u64, u64),
    id: String,
    store: &dyn SharedStore,
    ctx: Ctx,
    d: &mut Decision,
    spent: &mut Vec<Spent>,
) -> Result<Option<Outcome>, StoreError> {
    let now = ctx.now;
    if ctx.degraded {
        return fail(policy, rule, i, (fp, cost), store, now, d, spent).map(Some);
    }
    let lease_fp = derived(fp, b"lease");
    let (step, lease, refill) = store::lease_update(store, policy.slots, lease_fp, &rule.limit, now, |l| {
        let (step, mut next) = l.spend(now, &rule.limit, cost);
        // An exhausted window still reserves the next one ahead of time,
        // at once when requests will queue for it.
        let refill = match step {
            Step::Spent => next.want(now, &rule.limit),
            Step::Exhausted { .. } if rule.queue.is_some() => next.want_next(now, &rule.limit).map(|w| (w, true)),
            Step::Exhausted { .. } => next.want(now, &rule.limit).filter(|(_, ahead)| *ahead),
            Step::Missing => None,
        };
        if refill.is_some() {
            next.asked_at = now;
        }
        ((step, next, refill), Some(next))
    })?;
    let ask = |want: u32, next: bool| LeaseNeed {
        rule: i,
        fingerprint: lease_fp,
        ask: Ask {
            rule: rule.name.clone(),
            id: id.clone(),
            limit: rule.limit.requests,
            window_ms: rule.limit.per.nanos() / 1_000_000,
            want,
            next,
        },
    };
    match step {
        Step::Spent => {
            spent.push(Spent::Lease { rule: i, fingerprint: lease_fp, window: lease.window, cost });
            if let Some((want, next)) = refill {
                d.refills.push(ask(want, next));
            }
            let global_left = rule.limit.requests.saturating_sub(u64::from(lease.used)) + u64::from(lease.units);
            Ok(Some(Outcome { allowed: true, remaining: global_left, reset_ns: lease.ends_at.saturating_sub(now), retry_after_ns: 0 }))
        }
        Step::Exhausted { retry_after_ns } => {
            if let Some((want, next)) = refill {
                d.refills.push(ask(want, next));
            }
            // A queueing rule waits for the next window when it opens in
            // time; waiters spread over up to a tenth of it (never past
            // their max_wait) so that they do not all return at once.
            if let Some(q) = rule.queue.as_ref() {
                let room = (q.max_wait.nanos() + TICK_GRACE_NS).saturating_sub(ctx.waited_ns);
                if retry_after_ns <= room {
                    let spread_max = (rule.limit.per.nanos() / 10).min(room - retry_after_ns).max(1);
                    let wait = retry_after_ns + ctx.random % spread_max;
                    d.redo_at = Some(d.redo_at.unwrap_or(0).max(now + wait));
                    return Ok(None);
                }
            }
            Ok(Some(Outcome { allowed: false, remaining: 0, reset_ns: retry_after_ns, retry_after_ns }))
        }
        Step::Missing if ctx.may_wait => {
            let want = crate::lease::Lease { asked_at: 0, ..lease }.want(now, &rule.limit).map_or(1, |w| w.0);
            let want = want.max(u32::try_from(cost).unwrap_or(u32::MAX));
            d.wait_for.push(ask(want, false));
            Ok(None)
        }
        Step::Missing => fail(policy, rule, i, (fp, cost), store, now, d, spent).map(Some),
    }
}

/// A global rule without its counter service: `failure_mode` decides.
#[allow(clippy::too_many_arguments)]
fn fail(
    policy: &Policy,
    rule: &Rule,
    i: usize,
    (fp, cost): (u64, u64),
    store: &dyn SharedStore,
    now: u64,
    d: &mut Decision,
    spent: &mut Vec<Spent>,
) -> Result<Outcome, StoreError> {
    match rule.failure_mode {
        FailureMode::Open => {
            let limit = fallback_limit(policy, rule);
            let fallback_fp = derived(fp, b"fallback");
            let o = store::take(store, policy.slots, fallback_fp, rule.algorithm, &limit, now, cost)?;
            if o.allowed {
                spent.push(Spent::Bucket { rule: i, fingerprint: fallback_fp, fallback: true, cost });
            }
            Ok(o)
        }
        FailureMode::Closed => {
            if d.unavailable.is_none() {
                d.unavailable = Some(i);
            }
            Ok(Outcome { allowed: true, remaining: 0, reset_ns: 0, retry_after_ns: 0 })
        }
    }
}

/// Gives back what a denied (or waiting) request spent.
fn refund(policy: &Policy, store: &dyn SharedStore, now: u64, spent: &[Spent], d: &mut Decision) {
    for s in spent {
        let result = match *s {
            Spent::Bucket { rule, fingerprint, fallback, cost } => {
                let r = &policy.rules[rule];
                let limit = if fallback { fallback_limit(policy, r) } else { r.limit };
                store::refund(store, policy.slots, fingerprint, r.algorithm, &limit, now, cost).map_err(|e| (rule, e))
            }
            Spent::Lease { rule, fingerprint, window, cost } => {
                let r = &policy.rules[rule];
                store::lease_update(store, policy.slots, fingerprint, &r.limit, now, |l| ((), Some(l.refund(now, &r.limit, window, cost))))
                    .map_err(|e| (rule, e))
            }
        };
        if let Err(e) = result {
            d.errors.push(e);
        }
    }
}
