//! Validation: turns a parsed `RawPolicy` into a `Policy`, collecting every
//! problem with its JSON path instead of stopping at the first or dropping a
//! bad entry quietly.
//!
//! This file holds the entry point and the policy's top-level settings
//! (slots, trusted hops, IPv6 prefix, exempt paths, whether to read the
//! body); each part of a policy is checked by a file of its own:
//!
//! - `rules`: the rules loop and one rule's checks (name, tier, options
//!   that cannot be combined);
//! - `keys`: key parts and the tenant and integration sources;
//! - `matchers`: what a rule matches (methods, paths, integrations,
//!   headers, JSON-RPC calls);
//! - `limits`: a rule's limit (rate or concurrency) and its `max_block`;
//! - `options`: a rule's queue, cost and priority classes;
//! - `adaptive`: an adaptive rule's floor, signals and steps;
//! - `global`: the counter service section and its secret;
//! - `plans`: the policy's `plan` section, and a rule's plans and
//!   overrides expanded into variants of it;
//! - `identity`: a rule's identity, the hash its buckets are kept under.

mod adaptive;
mod global;
mod identity;
mod keys;
mod limits;
mod matchers;
mod options;
mod plans;
mod rules;

pub(crate) use identity::rule_identity;

use super::raw::{RawKeyPart, RawPolicy};
use super::{Cost, CostSource, KeyPart, Mode, Policy, PolicyError, Problem, MAX_SLOTS, MIN_SLOTS};
use crate::path::normalize;

const MAX_TRUSTED_HOPS: i64 = 16;

pub(super) fn compile(json: &str) -> Result<Policy, PolicyError> {
    let de = &mut serde_json::Deserializer::from_str(json);
    let raw: RawPolicy = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        PolicyError { problems: vec![Problem { path, message: e.inner().to_string() }] }
    })?;
    let mut c = Compiler { problems: Vec::new() };
    let policy = c.policy(raw);
    if c.problems.is_empty() {
        Ok(policy)
    } else {
        Err(PolicyError { problems: c.problems })
    }
}

struct Compiler {
    problems: Vec<Problem>,
}

impl Compiler {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem { path: path.into(), message: message.into() });
    }

    fn policy(&mut self, raw: RawPolicy) -> Policy {
        let slots = if (i64::from(MIN_SLOTS)..=i64::from(MAX_SLOTS)).contains(&raw.slots) {
            raw.slots as u32
        } else {
            self.problem("slots", format!("must be between {MIN_SLOTS} and {MAX_SLOTS}, got {}", raw.slots));
            MIN_SLOTS
        };
        let trusted_hops = if (0..=MAX_TRUSTED_HOPS).contains(&raw.trusted_hops) {
            raw.trusted_hops as u32
        } else {
            self.problem("trusted_hops", format!("must be between 0 and {MAX_TRUSTED_HOPS}, got {}", raw.trusted_hops));
            0
        };
        let ipv6_prefix = match u8::try_from(raw.ipv6_prefix) {
            Ok(bits @ 1..=128) => bits,
            _ => {
                self.problem("ipv6_prefix", format!("must be between 1 and 128 (bits of an IPv6 address that name one client), got {}", raw.ipv6_prefix));
                crate::client_ip::DEFAULT_IPV6_PREFIX
            }
        };
        let mut exempt_paths = Vec::new();
        for (i, p) in raw.exempt_paths.iter().enumerate() {
            if p.starts_with('/') {
                exempt_paths.push(normalize(p));
            } else {
                self.problem(format!("exempt_paths[{i}]"), format!("path {p:?} must start with '/'"));
            }
        }
        let tenant = self.sources("tenant", "integration", raw.tenant);
        let sources = raw.integration.unwrap_or_else(|| vec![RawKeyPart::Header("x-integration".into())]);
        let integration = self.sources("integration", "tenant", sources);
        let global = raw.global.and_then(|g| self.global(g));
        let plan = raw.plan.and_then(|p| self.plan_section(p));
        let rules = self.rules(raw.rules, global.is_some(), !tenant.is_empty(), raw.mode == Mode::Shadow, plan.as_ref());
        let body_part = |p: &KeyPart| matches!(p, KeyPart::Body(_) | KeyPart::JsonRpcMethod | KeyPart::Tool);
        let body_always = rules.iter().any(|r| matches!(r.cost, Some(Cost { source: CostSource::Body(_), .. })) || r.key.iter().any(body_part))
            || tenant.iter().any(body_part)
            || integration.iter().any(body_part)
            || plan.as_ref().is_some_and(|p| p.from.iter().any(body_part));
        let needs_body = body_always || rules.iter().any(|r| r.jsonrpc.is_some());
        if needs_body && !raw.read_body {
            self.problem(
                "read_body",
                "a cost, key, tenant or integration comes from the request body, or a rule matches JSON-RPC calls: set \"read_body\": true, which needs Envoy's Wasm PluginConfig allow_on_headers_stop_iteration: true (set by this project's ECDS resource; not settable through Istio's WasmPlugin)",
            );
        }
        Policy {
            slots,
            trusted_hops,
            ipv6_prefix,
            exempt_paths,
            tenant,
            integration,
            plan,
            global,
            rules,
            needs_body,
            body_always,
            response_headers: raw.response_headers,
            slot_secret: Default::default(),
        }
    }
}
