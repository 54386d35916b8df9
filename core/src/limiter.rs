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

use crate::bucket::Outcome;
use crate::client_ip::{client_ip, peer_ip};
use crate::hash::Fnv;
use crate::path::{normalize, Params};
use crate::policy::{HeaderTest, KeyPart, Missing, Policy, Rule};
use crate::request::Request;
use crate::store::{self, SharedStore, StoreError};

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
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.denied_by.is_none()
    }
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
}

impl<'r> Attrs<'r> {
    fn new(req: &'r mut dyn Request) -> Attrs<'r> {
        let method = req.method().unwrap_or_default().to_ascii_uppercase();
        let raw_path = req.path().unwrap_or_default();
        let path = normalize(&raw_path);
        Attrs { req, method, raw_path, path, headers: Vec::new(), client_ip: None, tenant: None }
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
    fn key(&mut self, policy: &Policy, rule: &Rule, params: &Params) -> Option<u64> {
        let mut h = Fnv::default();
        h.field(&rule.identity.to_le_bytes());
        for part in &rule.key {
            match self.part(policy, part, params) {
                Some(mut v) => {
                    v.make_ascii_lowercase();
                    h.field(&v);
                }
                None if rule.missing == Missing::Skip => return None,
                // 0xfe never occurs in UTF-8, nor as a whole property value.
                None => {
                    h.field(&[0xfe]);
                }
            }
        }
        // 0 marks an empty slot.
        Some(h.finish().max(1))
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

/// Decides one request at wall-clock time `now` (ns since the epoch).
pub fn decide(policy: &Policy, req: &mut dyn Request, store: &dyn SharedStore, now: u64) -> Decision {
    let mut attrs = Attrs::new(req);
    let exempt = policy.exempt_paths.iter().any(|p| p.eq_ignore_ascii_case(&attrs.path));
    let mut d = Decision::default();
    // Buckets this request spent from, for the refund if it is denied.
    let mut spent: Vec<(usize, u64)> = Vec::new();
    for (i, rule) in policy.rules.iter().enumerate() {
        let Some(params) = attrs.applies(rule, exempt) else { continue };
        let Some(fp) = attrs.key(policy, rule, &params) else { continue };
        let result = if d.denied_by.is_some() {
            store::peek(store, policy.slots, fp, rule.algorithm, &rule.limit, now, 1)
        } else {
            store::take(store, policy.slots, fp, rule.algorithm, &rule.limit, now, 1)
        };
        let outcome = match result {
            Ok(o) => o,
            Err(e) => {
                d.errors.push((i, e));
                continue;
            }
        };
        let ro = RuleOutcome { rule: i, outcome };
        d.applied.push(ro);
        if outcome.allowed {
            if d.denied_by.is_none() {
                spent.push((i, fp));
                if d.tightest.as_ref().is_none_or(|t| tighter(policy, &ro, t)) {
                    d.tightest = Some(ro);
                }
            }
        } else if rule.shadow {
            d.shadow_denied.push(ro);
        } else if d.denied_by.as_ref().is_none_or(|w| outcome.retry_after_ns > w.outcome.retry_after_ns) {
            d.denied_by = Some(ro);
        }
    }
    if d.denied_by.is_some() {
        for (i, fp) in spent {
            let rule = &policy.rules[i];
            if let Err(e) = store::refund(store, policy.slots, fp, rule.algorithm, &rule.limit, now, 1) {
                d.errors.push((i, e));
            }
        }
        d.tightest = None;
    }
    d.tenant = attrs.tenant(policy);
    d
}
