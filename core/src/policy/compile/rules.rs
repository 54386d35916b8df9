//! The rules loop (names used once, global rules only with a `global`
//! section) and one rule's checks: each part of a rule is checked by the
//! file that knows it, and the options a rule cannot combine here.

use std::collections::HashMap;

use super::keys::template_params;
use super::{rule_identity, Compiler};
use crate::policy::raw::{RawKeyPart, RawRule};
use crate::policy::{Algorithm, Cost, Mode, PlanSource, Rule, Scope};

const MAX_NAME_LEN: usize = 64;

impl Compiler {
    /// The rules, in policy order: names used once, global ones only with
    /// the policy's `global` section; every rule a shadow one when the
    /// policy is.
    pub(super) fn rules(&mut self, raw: Vec<RawRule>, has_global: bool, has_tenant: bool, shadow_all: bool, plan: Option<&PlanSource>) -> Vec<Rule> {
        let mut rules: Vec<Rule> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, raw_rule) in raw.into_iter().enumerate() {
            let at = format!("rules[{i}]");
            if let Some(first) = seen.get(&raw_rule.name) {
                self.problem(format!("{at}.name"), format!("duplicate rule name {:?} (first used at rules[{first}])", raw_rule.name));
            } else {
                seen.insert(raw_rule.name.clone(), i);
            }
            if raw_rule.scope == Scope::Global && !has_global {
                self.problem(format!("{at}.scope"), "a global rule needs the policy's `global` section (the counter service's cluster)");
            }
            // Plans and overrides are variants of the rule (`plans`).
            let written = (raw_rule.plans.is_some() || !raw_rule.overrides.is_empty()).then(|| raw_rule.clone());
            if let Some(mut rule) = self.rule(&at, raw_rule, has_tenant) {
                let variants = written.map(|w| self.variants(&at, &mut rule, &w, plan, has_tenant)).unwrap_or_default();
                for mut r in std::iter::once(rule).chain(variants) {
                    r.shadow |= shadow_all;
                    rules.push(r);
                }
            }
        }
        rules
    }

    pub(super) fn rule(&mut self, at: &str, raw: RawRule, has_tenant: bool) -> Option<Rule> {
        let before = self.problems.len();
        let tier = self.name_and_tier(at, &raw);
        let (methods, head_as_get) = self.methods(at, &raw.matcher.methods, raw.matcher.head);
        let paths = self.paths(at, raw.matcher.paths);
        let integrations = self.integrations(at, &raw.matcher.integration);
        let jsonrpc = raw.matcher.jsonrpc.as_ref().map(|j| self.jsonrpc(at, j));
        let headers = raw.matcher.headers.into_iter().enumerate().filter_map(|(i, h)| self.header(&format!("{at}.match.headers[{i}]"), h)).collect();
        let params = template_params(&paths);
        let mut key = Vec::new();
        for (i, part) in raw.key.into_iter().enumerate() {
            let here = format!("{at}.key[{i}]");
            if matches!(part, RawKeyPart::Tenant) && !has_tenant {
                self.problem(here, "key uses \"tenant\" but the policy defines no `tenant` sources");
                continue;
            }
            if let Some(p) = self.key_part(&here, part, &params) {
                key.push(p);
            }
        }
        let algorithm = raw.algorithm.unwrap_or(if raw.limit.calendar.is_some() { Algorithm::FixedWindow } else { Algorithm::TokenBucket });
        let limit = self.limit(at, &raw.limit, algorithm);
        let queue = raw.queue.as_ref().and_then(|q| self.queue(at, q, algorithm, limit.as_ref()));
        let cost = raw.cost.as_ref().and_then(|c| self.cost(at, c, limit.as_ref()));
        let priority = raw.priority.as_ref().and_then(|p| self.priority(at, p, algorithm, limit.as_ref(), queue.as_ref()));
        let adaptive = raw.adaptive.as_ref().and_then(|a| self.adaptive(at, a, limit.as_ref()));
        let refund_from = raw.count.as_ref().and_then(|c| self.count(at, c));
        let penalty = raw.penalty.as_ref().and_then(|p| self.penalty(at, p));
        let options = Options {
            counts_success: refund_from.is_some(),
            response_cost: cost.as_ref().is_some_and(Cost::from_response),
            penalty: raw.penalty.is_some(),
            concurrent: raw.limit.concurrent.is_some(),
            global: raw.scope == Scope::Global,
            queue: raw.queue.is_some(),
            priority: raw.priority.is_some(),
            adaptive: raw.adaptive.is_some(),
            obey_upstream: raw.obey_upstream,
            algorithm,
        };
        self.combinations(at, &options);
        let max_block = self.max_block(at, raw.max_block.as_deref());
        if self.problems.len() > before {
            return None;
        }
        let identity = rule_identity(&raw.name, &key);
        Some(Rule {
            identity,
            name: raw.name,
            tier,
            methods,
            head_as_get,
            paths,
            headers,
            integrations,
            key,
            concurrent: raw.limit.concurrent.is_some(),
            refund_from,
            penalty,
            limit: limit?,
            algorithm,
            shadow: raw.mode == Mode::Shadow,
            missing: raw.missing,
            scope: raw.scope,
            failure_mode: raw.failure_mode,
            queue,
            obey_upstream: raw.obey_upstream,
            max_block,
            cost,
            priority,
            adaptive,
            jsonrpc,
            choice: None,
        })
    }

    /// Checks the rule's name; its tier (`default` when not given).
    fn name_and_tier(&mut self, at: &str, raw: &RawRule) -> String {
        let name_ok = !raw.name.is_empty() && raw.name.len() <= MAX_NAME_LEN && raw.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            self.problem(format!("{at}.name"), format!("{:?} must be 1-{MAX_NAME_LEN} letters, digits, '-' or '_'", raw.name));
        }
        let tier = raw.tier.clone().unwrap_or_else(|| "default".to_string());
        if tier.is_empty() || tier.len() > 32 || !tier.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_') {
            self.problem(format!("{at}.tier"), format!("{tier:?} must be 1-32 lower-case letters, digits, '-' or '_'"));
        }
        tier
    }

    /// Options a rule cannot combine: a concurrency limit with a scope,
    /// queue, priority, adaptive limit, upstream limits or algorithm; upstream
    /// limits with an algorithm other than the token bucket.
    fn combinations(&mut self, at: &str, o: &Options) {
        if o.concurrent {
            let refused = [
                (o.global, "scope", "a concurrency limit is per instance: `global` scope is not supported"),
                (o.queue, "queue", "a concurrency limit refuses at once: it takes no queue"),
                (o.priority, "priority", "a concurrency limit takes no priority"),
                (o.adaptive, "adaptive", "a concurrency limit takes no adaptive limit"),
                (o.obey_upstream, "obey_upstream", "a concurrency limit cannot obey upstream limits"),
                (o.algorithm != Algorithm::TokenBucket, "algorithm", "a concurrency limit takes no algorithm"),
                (o.counts_success, "count", "a concurrency limit frees its unit when the request ends, whatever the answer"),
                (o.penalty, "penalty", "a concurrency limit takes no penalty box"),
                (o.response_cost, "cost", "a concurrency limit holds its units until the request ends: a cost read from the response cannot be settled"),
            ];
            for (_, field, why) in refused.iter().filter(|r| r.0) {
                self.problem(format!("{at}.{field}"), *why);
            }
        }
        if o.obey_upstream && o.algorithm != Algorithm::TokenBucket {
            self.problem(format!("{at}.obey_upstream"), "only token_bucket rules can obey upstream limits: the bucket is kept empty until the upstream's time");
        }
    }
}

/// The options of a rule that constrain each other.
struct Options {
    counts_success: bool,
    response_cost: bool,
    penalty: bool,
    concurrent: bool,
    global: bool,
    queue: bool,
    priority: bool,
    adaptive: bool,
    obey_upstream: bool,
    algorithm: Algorithm,
}
