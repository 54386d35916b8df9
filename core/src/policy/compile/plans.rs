//! Plans and overrides: the policy's `plan` section, and a rule's `plans`
//! and `overrides`, each checked with its JSON path and expanded into
//! variants of the rule (see `policy::plans`): the rule as written first,
//! then one per plan it lists, then one per override.

use std::sync::Arc;

use super::keys::template_params;
use super::{rule_identity, Compiler};
use crate::policy::raw::{RawKeyPart, RawLimit, RawPathParam, RawPlan, RawRule};
use crate::policy::{Choice, Group, KeyPart, PlanSource, Problem, Rule, Takes};

/// Most plans a policy may name, and the longest name.
const MAX_PLANS: usize = 16;
const MAX_PLAN_NAME: usize = 32;
/// Most overrides a rule may have: each is a variant the rule's requests
/// are looked at against.
pub(super) const MAX_OVERRIDES: usize = 64;
/// Longest override value: a longer key value is not sent to the counter
/// service as it is (see `counter_api::wire_id`), and is no customer's name.
const MAX_VALUE: usize = crate::counter_api::MAX_WIRE_ID;

impl Compiler {
    /// The policy's `plan` section: its sources, names and default plan.
    pub(super) fn plan_section(&mut self, raw: RawPlan) -> Option<PlanSource> {
        let before = self.problems.len();
        if raw.from.is_empty() {
            self.problem("plan.from", "give at least one source of the plan, e.g. [{\"header\": \"x-plan\"}]");
        }
        let mut from = Vec::new();
        for (i, part) in raw.from.into_iter().enumerate() {
            let at = format!("plan.from[{i}]");
            match part {
                RawKeyPart::PathParam(RawPathParam::Name(n)) => self.problem(
                    at,
                    format!("path_param {n:?} needs its own template here: {{\"path_param\": {{\"name\": {n:?}, \"template\": \"/.../{{{n}}}/**\"}}}}"),
                ),
                RawKeyPart::JsonrpcMethod | RawKeyPart::Tool => self.problem(at, "a plan cannot come from a JSON-RPC call (each rule counts its own call)"),
                part => from.extend(self.key_part(&at, part, &[])),
            }
        }
        if raw.names.is_empty() || raw.names.len() > MAX_PLANS {
            self.problem("plan.names", format!("name 1 to {MAX_PLANS} plans, got {}", raw.names.len()));
        }
        for (i, name) in raw.names.iter().enumerate() {
            if name.is_empty() || name.len() > MAX_PLAN_NAME || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_') {
                self.problem(format!("plan.names[{i}]"), format!("{name:?} must be 1-{MAX_PLAN_NAME} lower-case letters, digits, '-' or '_'"));
            } else if let Some(first) = raw.names.iter().position(|n| n == name).filter(|f| *f != i) {
                self.problem(format!("plan.names[{i}]"), format!("duplicate plan {name:?} (first at plan.names[{first}])"));
            }
        }
        let default = match raw.default.as_deref() {
            None => 0,
            Some(d) => raw.names.iter().position(|n| n == d).unwrap_or_else(|| {
                self.problem("plan.default", format!("unknown plan {d:?}: the plans are {}", raw.names.join(", ")));
                0
            }),
        };
        (self.problems.len() == before).then_some(PlanSource { from, names: raw.names, default })
    }

    /// The variants of a rule with `plans` or `overrides` (`raw` is the
    /// rule as written; `base` its compiled form, given its choice here):
    /// none for a rule without them.
    pub(super) fn variants(&mut self, at: &str, base: &mut Rule, raw: &RawRule, plan: Option<&PlanSource>, has_tenant: bool) -> Vec<Rule> {
        let plans = raw.plans.as_ref().map(|p| p.0.as_slice()).unwrap_or_default();
        if plans.is_empty() && raw.overrides.is_empty() {
            return Vec::new();
        }
        let mut group = Group::default();
        let mut out = Vec::new();
        match (plans.is_empty(), plan) {
            (true, _) => {}
            (false, None) => self.problem(format!("{at}.plans"), "the policy has no `plan` section saying where a request's plan comes from"),
            (false, Some(source)) => {
                for (name, limit) in plans {
                    let here = format!("{at}.plans.{name}");
                    let Some(p) = source.names.iter().position(|n| n == name) else {
                        self.problem(here, format!("unknown plan {name:?}: the plans are {}", source.names.join(", ")));
                        continue;
                    };
                    if group.plans.contains(&p) {
                        self.problem(here, format!("duplicate plan {name:?}"));
                        continue;
                    }
                    group.plans.push(p);
                    if let Some(mut v) = self.variant(at, &here, raw, limit, has_tenant) {
                        v.key.push(KeyPart::Plan);
                        v.identity = rule_identity(&v.name, &v.key);
                        v.choice = Some(Choice { takes: Takes::Plan(p), group: Arc::default() });
                        out.push(v);
                    }
                }
            }
        }
        self.overrides(at, base, raw, has_tenant, &mut group, &mut out);
        group.values.sort();
        let group = Arc::new(group);
        base.choice = Some(Choice { takes: Takes::Written, group: Arc::clone(&group) });
        for v in &mut out {
            if let Some(c) = v.choice.as_mut() {
                c.group = Arc::clone(&group);
            }
        }
        out
    }

    /// A rule's overrides: all on one part of its key, each value once.
    fn overrides(&mut self, at: &str, base: &Rule, raw: &RawRule, has_tenant: bool, group: &mut Group, out: &mut Vec<Rule>) {
        if raw.overrides.len() > MAX_OVERRIDES {
            self.problem(format!("{at}.overrides"), format!("at most {MAX_OVERRIDES} overrides per rule, got {}", raw.overrides.len()));
            return;
        }
        let params = template_params(&base.paths);
        for (j, o) in raw.overrides.iter().enumerate() {
            let here = format!("{at}.overrides[{j}]");
            let on = match (&o.on, base.key.as_slice()) {
                (None, [_]) => Some(0),
                (None, key) => {
                    self.problem(
                        format!("{here}.on"),
                        format!("the rule's key has {} parts: say which one the value is of, e.g. \"on\": \"tenant\"", key.len()),
                    );
                    None
                }
                (Some(part), key) => self.key_part(&format!("{here}.on"), part.clone(), &params).and_then(|p| {
                    let found = key.iter().position(|k| *k == p);
                    if found.is_none() {
                        self.problem(format!("{here}.on"), "not a part of the rule's key: an override is for the value of one of its parts");
                    }
                    found
                }),
            };
            match (on, group.on) {
                (Some(i), Some(first)) if i != first => {
                    self.problem(format!("{here}.on"), "every override of a rule must be on the same key part as overrides[0]")
                }
                (Some(i), _) => group.on = Some(i),
                (None, _) => {}
            }
            let value = o.value.to_ascii_lowercase();
            if value.is_empty() || value.len() > MAX_VALUE {
                self.problem(format!("{here}.value"), format!("must be 1 to {MAX_VALUE} bytes"));
                continue;
            }
            if let Some(first) = raw.overrides.iter().take(j).position(|p| p.value.eq_ignore_ascii_case(&value)) {
                self.problem(
                    format!("{here}.value"),
                    format!("duplicate override {:?} (first at overrides[{first}]; values compare without case, as keys do)", o.value),
                );
                continue;
            }
            group.values.push(value.clone());
            if let Some(mut v) = self.variant(at, &format!("{here}.limit"), raw, &o.limit, has_tenant) {
                v.choice = Some(Choice { takes: Takes::Override(value), group: Arc::default() });
                out.push(v);
            }
        }
    }

    /// The rule as written with `limit` instead of its own. Its problems
    /// (a limit out of range, or one its queue or classes cannot take) are
    /// reported at `here`, where that limit is written.
    fn variant(&mut self, at: &str, here: &str, raw: &RawRule, limit: &RawLimit, has_tenant: bool) -> Option<Rule> {
        let before = self.problems.len();
        if limit.concurrent.is_some() != raw.limit.concurrent.is_some() {
            self.problem(here, "must be the same kind of limit as the rule's `limit`: both a rate (`requests` per `per`) or both `concurrent`");
            return None;
        }
        let written = RawRule { limit: limit.clone(), plans: None, overrides: Vec::new(), ..raw.clone() };
        let rule = self.rule(at, written, has_tenant);
        let own = format!("{at}.limit");
        for p in self.problems.iter_mut().skip(before) {
            *p = match p.path.strip_prefix(&own) {
                Some(rest) => Problem { path: format!("{here}{rest}"), message: std::mem::take(&mut p.message) },
                None => Problem { path: std::mem::take(&mut p.path), message: format!("with the limit at {here}: {}", p.message) },
            };
        }
        rule
    }
}
