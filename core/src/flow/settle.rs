//! Costs known only from the response (`"cost": {"response_header": ..}`
//! or `{"response_body": ..}`): the decision charged the rule's estimate,
//! and the response's figure settles it. A figure above the estimate is
//! charged on top, past the limit if need be (the request already
//! happened; the key's next requests wait longer); one below it gives the
//! surplus back. A figure that is missing, unreadable, or above the
//! rule's `max`, and a body that is not JSON or larger than
//! [`super::MAX_BODY`], leave the estimate standing: an upstream's garbage
//! never moves the count.
//!
//! The host hands the response over as it comes: its headers (the ones
//! [`Flow::response_wants`] names), then its body once it ended (copied as
//! it passes, never held back; `None` when it was not read whole). Each
//! rule settles on its own source's part, once.

use std::ops::Deref;

use super::{Env, Flow, Out, MAX_BODY};
use crate::limiter::{charge, cost_of, give_back, with_cost, Spent};
use crate::policy::{CostSource, Policy};

/// What the response says, as the host reads it.
#[derive(Clone, Debug)]
pub enum ResponsePart {
    /// Its headers the flow asked for, names lower case, values as bytes
    /// (an upstream may send any byte).
    Headers(Vec<(String, Vec<u8>)>),
    /// Its whole body, or `None`: it had none, it was larger than
    /// [`MAX_BODY`], or it did not end.
    Body(Option<Vec<u8>>),
}

/// What the host must read from the response for its flow to settle.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wants {
    /// These headers (lower case).
    pub headers: Vec<String>,
    /// The body, copied up to [`MAX_BODY`] bytes until it ends.
    pub body: bool,
}

/// One rule's settled cost, for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settled {
    pub rule: usize,
    /// Units charged on top of the estimate.
    pub charged: u64,
    /// Units of the estimate given back.
    pub returned: u64,
    /// The response had no usable figure: the estimate stands.
    pub kept: bool,
}

impl<P: Deref<Target = Policy>> Flow<P> {
    /// What of the response the request's rules settle their cost on
    /// (nothing unless it was admitted by such a rule).
    pub fn response_wants(&self) -> Wants {
        let mut wants = Wants::default();
        for source in self.costed.iter().filter_map(|s| source(&self.policy, s)) {
            match source {
                CostSource::ResponseHeader(h) if !wants.headers.contains(h) => wants.headers.push(h.clone()),
                CostSource::ResponseBody(_) => wants.body = true,
                _ => {}
            }
        }
        wants
    }

    /// Settles the costs of the rules that read this part of the response.
    pub(super) fn response_cost(&mut self, part: ResponsePart, env: &mut Env, out: &mut Out) {
        let policy = &*self.policy;
        let is_body = matches!(part, ResponsePart::Body(_));
        let (due, later): (Vec<Spent>, Vec<Spent>) =
            std::mem::take(&mut self.costed).into_iter().partition(|s| source(policy, s).is_some_and(|c| matches!(c, CostSource::ResponseBody(_)) == is_body));
        self.costed = later;
        if due.is_empty() {
            return;
        }
        // Parsed once for every rule (serde_json bounds its nesting).
        let json = match &part {
            ResponsePart::Body(Some(b)) if b.len() <= MAX_BODY => serde_json::from_slice::<serde_json::Value>(b).ok(),
            _ => None,
        };
        let now = env.host.now();
        for s in &due {
            let rule = s.rule();
            let Some(cost) = policy.rules.get(rule).and_then(|r| r.cost.as_ref()) else { continue };
            let figure = match (&cost.source, &part) {
                (CostSource::ResponseHeader(name), ResponsePart::Headers(h)) => {
                    h.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).and_then(|(_, v)| whole(std::str::from_utf8(v).ok()?))
                }
                (CostSource::ResponseBody(path), ResponsePart::Body(_)) => {
                    json.as_ref().and_then(|j| path.iter().try_fold(j, |v, k| v.get(k))).and_then(number)
                }
                _ => None,
            };
            let settled = settle_one(policy, env, s, figure.filter(|n| *n <= cost.max), now, out);
            if !out.settled.iter().any(|o| o.rule == rule) {
                out.settled.push(settled);
            }
        }
    }
}

/// Settles one spend to `figure` (`None`: the estimate stands).
fn settle_one(policy: &Policy, env: &mut Env, s: &Spent, figure: Option<u64>, now: u64, out: &mut Out) -> Settled {
    let rule = s.rule();
    let mut settled = Settled { rule, charged: 0, returned: 0, kept: figure.is_none() };
    let (Some(figure), Some(paid)) = (figure, cost_of(s)) else { return settled };
    if let Some(extra) = figure.checked_sub(paid).filter(|n| *n > 0) {
        match charge(policy, env.store, s, extra, now) {
            Ok(()) => settled.charged = extra,
            Err((_, e)) => out.warnings.push(format!("rule {}: {extra} units the response added not charged: {e}", policy.rule_name(rule))),
        }
    } else if let Some(surplus) = paid.checked_sub(figure).filter(|n| *n > 0) {
        let errors = give_back(policy, env.store, &[with_cost(s, surplus)], now);
        for (_, e) in &errors {
            out.warnings.push(format!("rule {}: {surplus} units of the estimate not given back: {e}", policy.rule_name(rule)));
        }
        if errors.is_empty() {
            settled.returned = surplus;
        }
    }
    settled
}

/// Where the rule of a spend reads its cost from the response, if it does.
fn source<'p>(policy: &'p Policy, s: &Spent) -> Option<&'p CostSource> {
    cost_of(s)?;
    let cost = policy.rules.get(s.rule())?.cost.as_ref()?;
    cost.from_response().then_some(&cost.source)
}

/// Whether the rule of a spend settles its cost on the response.
pub(super) fn settles(policy: &Policy, s: &Spent) -> bool {
    source(policy, s).is_some()
}

/// A whole number of units written as text (surrounding spaces allowed).
fn whole(text: &str) -> Option<u64> {
    let t = text.trim();
    (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit())).then(|| t.parse().ok()).flatten()
}

/// A JSON whole number, or one written as a string.
fn number(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => whole(s),
        _ => None,
    }
}
