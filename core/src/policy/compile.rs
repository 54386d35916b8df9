//! Validation: turns a parsed `RawPolicy` into a `Policy`, collecting every
//! problem with its JSON path instead of stopping at the first or dropping a
//! bad entry quietly.

use std::collections::HashMap;

use super::raw::{
    HeadMethod, RawAdaptive, RawCost, RawGlobal, RawHeader, RawJsonRpc, RawKeyPart, RawLatency, RawLimit, RawPath, RawPathParam, RawPolicy, RawPriority,
    RawQueue, RawRule,
};
use super::{
    Adaptive, Algorithm, Cost, CostSource, Global, HeaderMatch, HeaderTest, JsonRpcMatch, KeyPart, Limit, Mode, Policy, PolicyError, Priority, Problem, Queue,
    Rule, Scope, MAX_SLOTS, MIN_SLOTS,
};
use crate::duration::Span;

/// How long one upstream answer holds a key back unless the rule says
/// otherwise, and the shortest `max_block` a rule may set.
const DEFAULT_MAX_BLOCK_S: u64 = 60;
const MIN_BLOCK_NS: u64 = 1_000_000_000;
use crate::hash::Fnv;
use crate::path::{normalize, PathMatcher, Template};

/// Most requests a limit may name; larger figures are typos.
const MAX_REQUESTS: i64 = 1_000_000_000;
/// A concurrency limit's largest `concurrent` (a slot holds at most
/// `concurrency::MAX_UNITS` units).
const MAX_CONCURRENT: i64 = crate::concurrency::MAX_UNITS as i64;
const DEFAULT_MAX_HOLD_S: u64 = 300;
const MAX_HOLD_NS: u64 = 3_600_000_000_000;
const MAX_TRUSTED_HOPS: i64 = 16;
const MAX_NAME_LEN: usize = 64;

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
        let rules = self.rules(raw.rules, global.is_some(), !tenant.is_empty(), raw.mode == Mode::Shadow);
        let body_part = |p: &KeyPart| matches!(p, KeyPart::Body(_) | KeyPart::JsonRpcMethod | KeyPart::Tool);
        let body_always = rules.iter().any(|r| matches!(r.cost, Some(Cost { source: CostSource::Body(_), .. })) || r.key.iter().any(body_part))
            || tenant.iter().any(body_part)
            || integration.iter().any(body_part);
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
            global,
            rules,
            needs_body,
            body_always,
            response_headers: raw.response_headers,
            slot_secret: Default::default(),
        }
    }

    /// Where the tenant (or the integration) of a request comes from: key
    /// parts other than itself and `other`, path parameters with their
    /// own template.
    fn sources(&mut self, field: &str, other: &str, parts: Vec<RawKeyPart>) -> Vec<KeyPart> {
        let mut out = Vec::new();
        for (i, part) in parts.into_iter().enumerate() {
            let at = format!("{field}[{i}]");
            match part {
                RawKeyPart::Tenant | RawKeyPart::Integration => self.problem(at, format!("the {field} cannot be defined by itself or by the {other}")),
                RawKeyPart::PathParam(RawPathParam::Name(n)) => self.problem(
                    at,
                    format!("path_param {n:?} needs its own template here: {{\"path_param\": {{\"name\": {n:?}, \"template\": \"/.../{{{n}}}/**\"}}}}"),
                ),
                part => {
                    if let Some(p) = self.key_part(&at, part, &[]) {
                        out.push(p);
                    }
                }
            }
        }
        out
    }

    /// The rules, in policy order: names used once, global ones only with
    /// the policy's `global` section; every rule a shadow one when the
    /// policy is.
    fn rules(&mut self, raw: Vec<RawRule>, has_global: bool, has_tenant: bool, shadow_all: bool) -> Vec<Rule> {
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
            if let Some(mut rule) = self.rule(&at, raw_rule, has_tenant) {
                rule.shadow |= shadow_all;
                rules.push(rule);
            }
        }
        rules
    }

    fn global(&mut self, raw: RawGlobal) -> Option<Global> {
        let before = self.problems.len();
        if raw.cluster.is_empty() {
            self.problem("global.cluster", "must name the Envoy cluster of the counter service");
        }
        if raw.authority.is_empty() {
            self.problem("global.authority", "must not be empty");
        }
        let timeout = match Span::parse(&raw.timeout) {
            Ok(t) if t.nanos() <= 1_000_000_000 => Some(t),
            Ok(_) => {
                self.problem("global.timeout", format!("{:?} is too long: at most 1s, so that no request waits on the counter service", raw.timeout));
                None
            }
            Err(e) => {
                self.problem("global.timeout", e);
                None
            }
        };
        if !(1..=1000).contains(&raw.expected_instances) {
            self.problem("global.expected_instances", format!("must be between 1 and 1000, got {}", raw.expected_instances));
        }
        if raw.secret.as_deref().is_some_and(|s| !secret_ok(s)) {
            self.problem("global.secret", "must be printable ASCII without spaces");
        }
        if let Some(name) = &raw.secret_env {
            let name_ok = name.len() <= 128
                && name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !name_ok {
                self.problem("global.secret_env", format!("{name:?} is not an environment variable name (letters, digits, '_', at most 128)"));
            }
            if raw.secret.is_some() {
                self.problem("global.secret_env", "give the secret once: `secret` or `secret_env`, not both");
            }
        }
        if self.problems.len() > before {
            return None;
        }
        Some(Global {
            cluster: raw.cluster,
            authority: raw.authority,
            timeout: timeout?,
            expected_instances: raw.expected_instances as u32,
            secret: raw.secret,
            secret_env: raw.secret_env,
            credit: raw.credit,
        })
    }

    fn rule(&mut self, at: &str, raw: RawRule, has_tenant: bool) -> Option<Rule> {
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
        let limit = self.limit(at, &raw.limit, raw.algorithm);
        let queue = raw.queue.as_ref().and_then(|q| self.queue(at, q, raw.algorithm, limit.as_ref()));
        let cost = raw.cost.as_ref().and_then(|c| self.cost(at, c, limit.as_ref()));
        let priority = raw.priority.as_ref().and_then(|p| self.priority(at, p, raw.algorithm, limit.as_ref(), queue.as_ref()));
        let adaptive = raw.adaptive.as_ref().and_then(|a| self.adaptive(at, a, limit.as_ref()));
        let options = Options {
            concurrent: raw.limit.concurrent.is_some(),
            global: raw.scope == Scope::Global,
            queue: raw.queue.is_some(),
            priority: raw.priority.is_some(),
            adaptive: raw.adaptive.is_some(),
            obey_upstream: raw.obey_upstream,
            algorithm: raw.algorithm,
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
            limit: limit?,
            algorithm: raw.algorithm,
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

    /// The methods matched, upper case, and whether `HEAD` was added for
    /// `GET`: a server answers HEAD with its GET handler, so unless the
    /// rule says otherwise, a limit on GET is one on HEAD too.
    fn methods(&mut self, at: &str, raw: &[String], head: HeadMethod) -> (Vec<String>, bool) {
        let mut methods: Vec<String> = raw
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                if !m.is_empty() && m.chars().all(|c| c.is_ascii_alphabetic()) {
                    Some(m.to_ascii_uppercase())
                } else {
                    self.problem(format!("{at}.match.methods[{i}]"), format!("{m:?} is not an HTTP method"));
                    None
                }
            })
            .collect();
        let head_as_get = head == HeadMethod::WithGet && methods.iter().any(|m| m == "GET") && !methods.iter().any(|m| m == "HEAD");
        if head_as_get {
            methods.push("HEAD".to_string());
        }
        (methods, head_as_get)
    }

    /// The paths matched: exact ones normalised, templates parsed.
    fn paths(&mut self, at: &str, raw: Vec<RawPath>) -> Vec<PathMatcher> {
        let mut paths = Vec::new();
        for (i, p) in raw.into_iter().enumerate() {
            let here = format!("{at}.match.paths[{i}]");
            match p {
                RawPath::Exact(s) | RawPath::Prefix(s) if !s.starts_with('/') => {
                    self.problem(here, format!("path {s:?} must start with '/'"));
                }
                RawPath::Exact(s) => paths.push(PathMatcher::Exact(normalize(&s))),
                RawPath::Prefix(s) => paths.push(PathMatcher::Prefix(s)),
                RawPath::Template(t) => match Template::parse(&t) {
                    Ok(t) => paths.push(PathMatcher::Template(t)),
                    Err(e) => self.problem(format!("{here}.template"), e),
                },
            }
        }
        paths
    }

    /// The integrations matched, trimmed and lower case.
    fn integrations(&mut self, at: &str, raw: &[String]) -> Vec<String> {
        let integrations: Vec<String> = raw.iter().map(|n| n.trim().to_ascii_lowercase()).collect();
        for (i, n) in integrations.iter().enumerate() {
            if n.is_empty() {
                self.problem(format!("{at}.match.integration[{i}]"), "must not be empty");
            }
        }
        integrations
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
            ];
            for (_, field, why) in refused.iter().filter(|r| r.0) {
                self.problem(format!("{at}.{field}"), *why);
            }
        }
        if o.obey_upstream && o.algorithm != Algorithm::TokenBucket {
            self.problem(format!("{at}.obey_upstream"), "only token_bucket rules can obey upstream limits: the bucket is kept empty until the upstream's time");
        }
    }

    /// The longest an upstream's wait is believed (default 60 s, between
    /// 1 s and 5 min).
    fn max_block(&mut self, at: &str, raw: Option<&str>) -> Span {
        match raw.map(Span::parse) {
            None => Span::from_secs(DEFAULT_MAX_BLOCK_S),
            Some(Ok(s)) if (MIN_BLOCK_NS..=crate::upstream::MAX_BLOCK_NS).contains(&s.nanos()) => s,
            Some(Ok(s)) => {
                self.problem(format!("{at}.max_block"), format!("{s} is out of range: at least 1s and at most 5m"));
                Span::from_secs(DEFAULT_MAX_BLOCK_S)
            }
            Some(Err(e)) => {
                self.problem(format!("{at}.max_block"), e);
                Span::from_secs(DEFAULT_MAX_BLOCK_S)
            }
        }
    }

    /// A rule's JSON-RPC condition; a `tools` list alone means `tools/call`.
    fn jsonrpc(&mut self, at: &str, j: &RawJsonRpc) -> JsonRpcMatch {
        let here = format!("{at}.match.jsonrpc");
        let mut globs = |what: &str, list: &[String]| -> Vec<String> {
            for (i, g) in list.iter().enumerate() {
                if g.is_empty() || g.len() > 256 || !g.bytes().all(|b| (0x21..0x7f).contains(&b)) {
                    self.problem(format!("{here}.{what}[{i}]"), format!("{g:?} must be 1-256 printable ASCII characters without spaces (`*` for any run)"));
                }
            }
            list.to_vec()
        };
        let mut methods = globs("methods", &j.methods);
        let tools = globs("tools", &j.tools);
        if !tools.is_empty() {
            if methods.is_empty() {
                methods.push("tools/call".to_string());
            } else if !methods.iter().any(|m| crate::jsonrpc::glob(m, "tools/call")) {
                self.problem(format!("{here}.tools"), "only a tools/call names a tool: add \"tools/call\" to `methods`, or leave `methods` out");
            }
        }
        JsonRpcMatch { methods, tools }
    }

    fn adaptive(&mut self, at: &str, a: &RawAdaptive, limit: Option<&Limit>) -> Option<Adaptive> {
        let before = self.problems.len();
        let here = format!("{at}.adaptive");
        let requests = limit.map_or(MAX_REQUESTS as u64, |l| l.requests);
        let floor = self.up_to_limit(&format!("{here}.floor"), a.floor, requests);
        let latency = a.latency.as_ref().and_then(|l| self.latency(&here, l));
        let errors_permille = self.share(&format!("{here}.errors"), a.errors, 100, "a share");
        let decrease_permille = self.share(&format!("{here}.decrease"), a.decrease, 500, "a factor");
        let interval = match a.interval.as_deref().map(Span::parse) {
            None => Some(Span::from_secs(10)),
            Some(Ok(s)) if s.nanos() >= 100_000_000 => Some(s),
            Some(Ok(_)) => {
                self.problem(format!("{here}.interval"), "must be at least 100ms");
                None
            }
            Some(Err(e)) => {
                self.problem(format!("{here}.interval"), e);
                None
            }
        };
        let increase = self.up_to_limit(&format!("{here}.increase"), a.increase, requests);
        let min_samples = match a.min_samples {
            None => Some(10),
            Some(n) if (1..=1_000_000).contains(&n) => Some(n as u32),
            Some(n) => {
                self.problem(format!("{here}.min_samples"), format!("must be between 1 and 1000000, got {n}"));
                None
            }
        };
        if self.problems.len() > before {
            return None;
        }
        Some(Adaptive {
            floor: floor?,
            latency,
            errors_permille,
            interval: interval?,
            decrease_permille: decrease_permille?,
            increase: increase?,
            min_samples: min_samples?,
        })
    }

    /// A count from 1 to the rule's limit (default: a tenth of it).
    fn up_to_limit(&mut self, here: &str, value: Option<i64>, requests: u64) -> Option<u64> {
        match value {
            None => Some((requests / 10).max(1)),
            Some(v) if v >= 1 && v as u64 <= requests => Some(v as u64),
            Some(v) => {
                self.problem(here.to_string(), format!("must be between 1 and the rule's limit ({requests}), got {v}"));
                None
            }
        }
    }

    /// A share or factor strictly between 0 and 1, in thousandths
    /// (`default` when not given).
    fn share(&mut self, here: &str, value: Option<f64>, default: u32, what: &str) -> Option<u32> {
        let Some(v) = value else { return Some(default) };
        let permille = (v > 0.0 && v < 1.0).then(|| (v * 1000.0).round() as u32);
        if permille.is_none() {
            self.problem(here.to_string(), format!("must be {what} between 0 and 1 (exclusive), got {v}"));
        }
        permille
    }

    /// An adaptive rule's latency condition: a percentile from 50 to 99
    /// above a duration.
    fn latency(&mut self, here: &str, l: &RawLatency) -> Option<(u8, Span)> {
        if !(50..=99).contains(&l.percentile) {
            self.problem(format!("{here}.latency.percentile"), format!("must be a whole number from 50 to 99, got {}", l.percentile));
        }
        match Span::parse(&l.above) {
            Ok(s) if s.nanos() > 0 => Some((l.percentile.clamp(50, 99) as u8, s)),
            Ok(_) => {
                self.problem(format!("{here}.latency.above"), "must be longer than 0");
                None
            }
            Err(e) => {
                self.problem(format!("{here}.latency.above"), e);
                None
            }
        }
    }

    fn priority(&mut self, at: &str, p: &RawPriority, algorithm: Algorithm, limit: Option<&Limit>, queue: Option<&Queue>) -> Option<Priority> {
        let before = self.problems.len();
        let here = format!("{at}.priority");
        if algorithm != Algorithm::TokenBucket {
            self.problem(here.clone(), "only token_bucket rules have priority classes: classes are kept apart by the tokens left in the bucket");
        }
        let header = self.header_name(&format!("{here}.header"), &p.header);
        let classes: Vec<String> = p.classes.iter().map(|c| c.trim().to_ascii_lowercase()).collect();
        if !(2..=8).contains(&classes.len()) {
            self.problem(format!("{here}.classes"), format!("give 2 to 8 class names, highest first; got {}", classes.len()));
        }
        for (i, c) in classes.iter().enumerate() {
            if c.is_empty() || classes.iter().take(i).any(|o| o == c) {
                self.problem(format!("{here}.classes[{i}]"), format!("{c:?} must be a non-empty name used once"));
            }
        }
        let default = match &p.default {
            None => Some(classes.len().saturating_sub(1) / 2),
            Some(d) => {
                let found = classes.iter().position(|c| c.eq_ignore_ascii_case(d));
                if found.is_none() {
                    self.problem(format!("{here}.default"), format!("{d:?} is not one of the classes"));
                }
                found
            }
        };
        let lower = classes.len().saturating_sub(1) as u64;
        let burst = limit.map_or(u64::MAX, |l| l.burst);
        let reserve = match p.reserve {
            None => Some(burst.checked_div(classes.len() as u64).unwrap_or(burst).max(1)),
            Some(r) if r >= 1 => Some(r as u64),
            Some(r) => {
                self.problem(format!("{here}.reserve"), format!("must be at least 1, got {r}"));
                None
            }
        };
        if let (Some(r), Some(l)) = (reserve, limit) {
            if r.saturating_mul(lower) >= l.burst {
                self.problem(
                    format!("{here}.reserve"),
                    format!("{r} tokens kept back per class leave the lowest class no room: the burst ({}) must exceed reserve × {lower}", l.burst),
                );
            }
        }
        let aging = match &p.aging {
            None => Some(
                queue.map_or(Span::from_nanos(1_000_000_000), |q| Span::from_nanos(q.max_wait.nanos().checked_div(classes.len() as u64).unwrap_or(1).max(1))),
            ),
            Some(a) => match Span::parse(a) {
                Ok(s) if s.nanos() > 0 => Some(s),
                Ok(_) => {
                    self.problem(format!("{here}.aging"), "must be longer than 0");
                    None
                }
                Err(e) => {
                    self.problem(format!("{here}.aging"), e);
                    None
                }
            },
        };
        if self.problems.len() > before {
            return None;
        }
        Some(Priority { header: header?, classes, default: default?, reserve: reserve?, aging: aging? })
    }

    fn cost(&mut self, at: &str, c: &RawCost, limit: Option<&Limit>) -> Option<Cost> {
        let before = self.problems.len();
        let source = match (&c.header, &c.body) {
            (Some(h), None) => self.header_name(&format!("{at}.cost.header"), h).map(CostSource::Header),
            (None, Some(b)) if !b.is_empty() && b.split('.').all(|p| !p.is_empty()) => Some(CostSource::Body(b.split('.').map(str::to_string).collect())),
            (None, Some(b)) => {
                self.problem(format!("{at}.cost.body"), format!("{b:?} must be a dotted path of JSON object keys, like \"usage.units\""));
                None
            }
            _ => {
                self.problem(format!("{at}.cost"), "give exactly one of `header` or `body`");
                None
            }
        };
        let burst = limit.map_or(MAX_REQUESTS as u64, |l| l.burst.max(l.requests));
        let max = match c.max {
            None => Some(burst),
            Some(m) if m >= 1 && (m as u64) <= burst => Some(m as u64),
            Some(m) => {
                self.problem(format!("{at}.cost.max"), format!("must be between 1 and the rule's burst ({burst}), got {m}"));
                None
            }
        };
        let default = match c.default {
            None => Some(1),
            Some(d) if d >= 0 && max.is_none_or(|m| d as u64 <= m) => Some(d as u64),
            Some(d) => {
                self.problem(format!("{at}.cost.default"), format!("must be between 0 and `max`, got {d}"));
                None
            }
        };
        if self.problems.len() > before {
            return None;
        }
        Some(Cost { source: source?, default: default?, max: max? })
    }

    fn queue(&mut self, at: &str, q: &RawQueue, algorithm: Algorithm, limit: Option<&Limit>) -> Option<Queue> {
        let before = self.problems.len();
        if algorithm != Algorithm::TokenBucket {
            self.problem(format!("{at}.queue"), "only token_bucket rules can queue: the bucket reserves each waiting request's turn");
        }
        let max_wait = match Span::parse(&q.max_wait) {
            Ok(w) if w.nanos() <= 60 * 1_000_000_000 => Some(w),
            Ok(_) => {
                self.problem(format!("{at}.queue.max_wait"), format!("{:?} is too long: at most 60s", q.max_wait));
                None
            }
            Err(e) => {
                self.problem(format!("{at}.queue.max_wait"), e);
                None
            }
        };
        let max_queued = match q.max_queued {
            None => None,
            Some(n) if (1..=100_000).contains(&n) => Some(n as u64),
            Some(n) => {
                self.problem(format!("{at}.queue.max_queued"), format!("must be between 1 and 100000, got {n}"));
                None
            }
        };
        if self.problems.len() > before {
            return None;
        }
        let (max_wait, limit) = (max_wait?, limit?);
        // By default as many as the limit lets through in max_wait.
        let by_rate = crate::bucket::mul_div(limit.requests, max_wait.nanos(), limit.per.nanos()).max(1);
        Some(Queue { max_wait, max_queued: max_queued.unwrap_or(by_rate) })
    }

    fn limit(&mut self, at: &str, l: &RawLimit, algorithm: Algorithm) -> Option<Limit> {
        if let Some(n) = l.concurrent {
            return self.concurrent_limit(at, l, n);
        }
        if l.max_hold.is_some() {
            self.problem(format!("{at}.limit.max_hold"), "only a concurrency limit (`concurrent`) takes a max_hold");
        }
        let requests = match l.requests {
            Some(r) if (1..=MAX_REQUESTS).contains(&r) => Some(r as u64),
            Some(r) => {
                self.problem(format!("{at}.limit.requests"), format!("must be a whole number from 1 to {MAX_REQUESTS}, got {r}"));
                None
            }
            None => {
                self.problem(format!("{at}.limit.requests"), "missing: give `requests` and `per`, or `concurrent`");
                None
            }
        };
        let Some(per) = l.per.as_deref() else {
            self.problem(format!("{at}.limit.per"), "missing: give `requests` and `per`, or `concurrent`");
            return None;
        };
        let per = match Span::parse(per) {
            Ok(s) => Some(s),
            Err(e) => {
                self.problem(format!("{at}.limit.per"), e);
                None
            }
        };
        let burst = match (l.burst, algorithm) {
            (None, _) => requests,
            (Some(b), Algorithm::TokenBucket) if (1..=MAX_REQUESTS).contains(&b) => Some(b as u64),
            (Some(b), Algorithm::TokenBucket) => {
                self.problem(format!("{at}.limit.burst"), format!("must be a whole number from 1 to {MAX_REQUESTS}, got {b}"));
                None
            }
            (Some(_), _) => {
                self.problem(format!("{at}.limit.burst"), "only the token_bucket algorithm takes a burst; windows allow `requests` per window");
                None
            }
        };
        Some(Limit { requests: requests?, per: per?, burst: burst? })
    }

    /// `{"concurrent": N, "max_hold": "5m"}`: `N` requests in flight per
    /// key, each unit held for `max_hold` at most (kept as `requests` and
    /// `per`).
    fn concurrent_limit(&mut self, at: &str, l: &RawLimit, n: i64) -> Option<Limit> {
        if l.requests.is_some() || l.per.is_some() || l.burst.is_some() {
            self.problem(format!("{at}.limit.concurrent"), "a concurrency limit takes no `requests`, `per` or `burst`");
        }
        let requests = if (1..=MAX_CONCURRENT).contains(&n) {
            Some(n as u64)
        } else {
            self.problem(format!("{at}.limit.concurrent"), format!("must be a whole number from 1 to {MAX_CONCURRENT}, got {n}"));
            None
        };
        let max_hold = match l.max_hold.as_deref().map(Span::parse) {
            None => Some(Span::from_secs(DEFAULT_MAX_HOLD_S)),
            Some(Ok(s)) if (MIN_BLOCK_NS..=MAX_HOLD_NS).contains(&s.nanos()) => Some(s),
            Some(Ok(s)) => {
                self.problem(format!("{at}.limit.max_hold"), format!("{s} is out of range: at least 1s and at most 1h"));
                None
            }
            Some(Err(e)) => {
                self.problem(format!("{at}.limit.max_hold"), e);
                None
            }
        };
        let requests = requests?;
        Some(Limit { requests, per: max_hold?, burst: requests })
    }

    fn header(&mut self, at: &str, h: RawHeader) -> Option<HeaderMatch> {
        let name = self.header_name(&format!("{at}.name"), &h.name)?;
        let test = match (h.exact, h.prefix, h.present) {
            (Some(v), None, None) => HeaderTest::Exact(v),
            (None, Some(v), None) => HeaderTest::Prefix(v),
            (None, None, Some(p)) => HeaderTest::Present(p),
            (None, None, None) => HeaderTest::Present(true),
            _ => {
                self.problem(at, "give at most one of `exact`, `prefix`, `present`");
                return None;
            }
        };
        Some(HeaderMatch { name, test })
    }

    fn header_name(&mut self, at: &str, name: &str) -> Option<String> {
        let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if ok {
            Some(name.to_ascii_lowercase())
        } else {
            self.problem(at, format!("{name:?} is not a valid header name"));
            None
        }
    }

    /// `params`: the path parameters the rule's templates all provide.
    fn key_part(&mut self, at: &str, part: RawKeyPart, params: &[String]) -> Option<KeyPart> {
        Some(match part {
            RawKeyPart::ClientIp => KeyPart::ClientIp,
            RawKeyPart::Method => KeyPart::Method,
            RawKeyPart::Authority => KeyPart::Authority,
            RawKeyPart::Path => KeyPart::Path,
            RawKeyPart::Tenant => KeyPart::Tenant,
            RawKeyPart::Integration => KeyPart::Integration,
            RawKeyPart::Header(h) => KeyPart::Header(self.header_name(&format!("{at}.header"), &h)?),
            RawKeyPart::Body(b) if b.is_empty() || b.split('.').any(str::is_empty) => {
                self.problem(format!("{at}.body"), format!("{b:?} must be a dotted path of JSON object keys, like \"integration\" or \"params.tool\""));
                return None;
            }
            RawKeyPart::Body(b) => KeyPart::Body(b.split('.').map(str::to_string).collect()),
            RawKeyPart::PathParam(RawPathParam::Name(n)) => {
                if !params.contains(&n) {
                    self.problem(
                        format!("{at}.path_param"),
                        format!("{{{n}}} is not a parameter of every template in this rule's match.paths (they provide: {params:?}); give a template of its own with {{\"name\": .., \"template\": ..}}"),
                    );
                    return None;
                }
                KeyPart::PathParam(n)
            }
            RawKeyPart::PathParam(RawPathParam::WithTemplate(t)) => {
                let template = match Template::parse(&t.template) {
                    Ok(tpl) => tpl,
                    Err(e) => {
                        self.problem(format!("{at}.path_param.template"), e);
                        return None;
                    }
                };
                if !template.params().any(|p| p == t.name) {
                    self.problem(format!("{at}.path_param.name"), format!("{{{}}} does not occur in template {:?}", t.name, t.template));
                    return None;
                }
                KeyPart::TemplateParam { name: t.name, template }
            }
            RawKeyPart::Query(q) if q.is_empty() => {
                self.problem(format!("{at}.query"), "query parameter name must not be empty");
                return None;
            }
            RawKeyPart::Query(q) => KeyPart::Query(q),
            RawKeyPart::Property(p) if p.is_empty() || p.iter().any(String::is_empty) => {
                self.problem(format!("{at}.property"), "property path must be a non-empty list of non-empty names, e.g. [\"source\", \"principal\"]");
                return None;
            }
            RawKeyPart::Property(p) => KeyPart::Property(p),
            RawKeyPart::Metadata(m) if m.filter.is_empty() || m.path.is_empty() || m.path.iter().any(String::is_empty) => {
                self.problem(format!("{at}.metadata"), "metadata needs a filter name and a non-empty path, e.g. {\"filter\": \"envoy.filters.http.jwt_authn\", \"path\": [\"jwt_payload\", \"sub\"]}");
                return None;
            }
            RawKeyPart::Metadata(m) => {
                let mut path = vec!["metadata".to_string(), "filter_metadata".to_string(), m.filter];
                path.extend(m.path);
                KeyPart::Property(path)
            }
            RawKeyPart::Const(c) => KeyPart::Const(c),
            RawKeyPart::JsonrpcMethod => KeyPart::JsonRpcMethod,
            RawKeyPart::Tool => KeyPart::Tool,
            RawKeyPart::McpSession => KeyPart::Header("mcp-session-id".to_string()),
        })
    }
}

/// The options of a rule that constrain each other.
struct Options {
    concurrent: bool,
    global: bool,
    queue: bool,
    priority: bool,
    adaptive: bool,
    obey_upstream: bool,
    algorithm: Algorithm,
}

/// Parameters every template among `paths` is sure to provide (none unless
/// every path is a template).
fn template_params(paths: &[PathMatcher]) -> Vec<String> {
    let templates: Vec<&Template> = paths
        .iter()
        .filter_map(|p| match p {
            PathMatcher::Template(t) => Some(t),
            _ => None,
        })
        .collect();
    if paths.is_empty() || templates.len() != paths.len() {
        return Vec::new();
    }
    templates.first().into_iter().flat_map(|t| t.params()).filter(|n| templates.iter().all(|t| t.params().any(|m| m == *n))).map(str::to_string).collect()
}

/// A value the counter service can compare and Envoy can send as a header.
/// A rule's identity: FNV-1a (64-bit, [`Fnv`]) of the bytes below, which
/// depend on the rule's name and key spec only, so that a rule keeps its
/// buckets (and an adaptive rule its health) across reloads that change
/// anything else.
///
/// - the name, as a string;
/// - then each key part in order: one tag byte, then its fields.
///
/// A string is its UTF-8 length as 4 bytes little-endian, then its bytes;
/// a list of strings is its length as 4 bytes little-endian, then each
/// string. The tags and fields:
///
/// | tag | part | fields |
/// |-----|------|--------|
/// | 1 | `client_ip` | |
/// | 2 | `method` | |
/// | 3 | `authority` | |
/// | 4 | `path` | |
/// | 5 | `tenant` | |
/// | 6 | `integration` | |
/// | 7 | header | name (string) |
/// | 8 | body field | path (list) |
/// | 9 | path parameter | name (string) |
/// | 10 | template parameter | name, then the template's source (strings) |
/// | 11 | query parameter | name (string) |
/// | 12 | property | path (list) |
/// | 13 | constant | value (string) |
/// | 14 | `jsonrpc_method` | |
/// | 15 | `tool` | |
///
/// The fields are as compiled (a header name lower case, for one). Every
/// part is self-delimiting, so distinct (name, key) pairs encode to
/// distinct bytes. Changing this encoding (a tag, a field, the order)
/// gives every rule a new identity: `identities_are_pinned` in the policy
/// tests fails for that reason.
///
/// This encoding replaced a hash of the key's `Debug` text, so the version
/// that brought it gave each rule a new identity once: the buckets and
/// adaptive health in the instance's shared data started fresh at that
/// upgrade, as they do at an Envoy restart. The counter service never sees
/// identities (it knows a global key by its rule's name and the key's text),
/// so global counts were not affected.
pub(crate) fn rule_identity(name: &str, key: &[KeyPart]) -> u64 {
    let mut out = Vec::with_capacity(64);
    string(&mut out, name);
    for part in key {
        match part {
            KeyPart::ClientIp => out.push(1),
            KeyPart::Method => out.push(2),
            KeyPart::Authority => out.push(3),
            KeyPart::Path => out.push(4),
            KeyPart::Tenant => out.push(5),
            KeyPart::Integration => out.push(6),
            KeyPart::Header(name) => {
                out.push(7);
                string(&mut out, name);
            }
            KeyPart::Body(path) => {
                out.push(8);
                list(&mut out, path);
            }
            KeyPart::PathParam(name) => {
                out.push(9);
                string(&mut out, name);
            }
            KeyPart::TemplateParam { name, template } => {
                out.push(10);
                string(&mut out, name);
                string(&mut out, template.source());
            }
            KeyPart::Query(name) => {
                out.push(11);
                string(&mut out, name);
            }
            KeyPart::Property(path) => {
                out.push(12);
                list(&mut out, path);
            }
            KeyPart::Const(value) => {
                out.push(13);
                string(&mut out, value);
            }
            KeyPart::JsonRpcMethod => out.push(14),
            KeyPart::Tool => out.push(15),
        }
    }
    Fnv::default().write(&out).finish()
}

/// Appends a string of [`rule_identity`]'s encoding: length, then bytes.
fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Appends a list of [`rule_identity`]'s encoding: count, then strings.
fn list(out: &mut Vec<u8>, items: &[String]) {
    out.extend_from_slice(&u32::try_from(items.len()).unwrap_or(u32::MAX).to_le_bytes());
    for s in items {
        string(out, s);
    }
}

fn secret_ok(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..0x7f).contains(&b))
}

impl Policy {
    /// Reads `global.secret_env` through `env` (the filter passes the Wasm
    /// VM's environment, which Envoy fills from `vm_config.
    /// environment_variables`) into `global.secret`. A variable that is
    /// missing, empty or not a header value is an error: a deployment that
    /// means to authenticate must not quietly call the counter service
    /// without the secret.
    pub fn resolve_secret(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        let Some(global) = self.global.as_mut() else { return Ok(()) };
        let Some(name) = global.secret_env.as_deref() else { return Ok(()) };
        match env(name) {
            Some(value) if secret_ok(&value) => {
                global.secret = Some(value);
                Ok(())
            }
            Some(_) => Err(format!("global.secret_env: the environment variable {name} is not printable ASCII without spaces")),
            None => Err(format!(
                "global.secret_env: the environment variable {name} is not set in the Wasm VM (Envoy: vm_config.environment_variables.host_env_keys; Istio: WasmPlugin vmConfig.env, valueFrom HOST)"
            )),
        }
    }
}
