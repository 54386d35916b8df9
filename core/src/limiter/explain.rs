//! What the limiter makes of one request, rule by rule, without deciding
//! it: whether each rule applies (and if not, why), the key it would use,
//! and what the request costs. Whether a rule applies and whether its key
//! skips the request come from the very calls the decision makes
//! (`Attrs::applies`, `Attrs::key`), so an explanation cannot disagree
//! with a decision; only the reason given for a rule that does not apply
//! is worked out here, by looking at its conditions one by one in the
//! order `applies` checks them.

use std::fmt;

use super::attrs::Attrs;
use crate::path::{Params, PathMatcher};
use crate::policy::{HeaderTest, KeyPart, Missing, Policy, Rule, Scope, Takes};
use crate::request::Request;

/// One rule as it stands for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explained {
    /// Index into `Policy::rules`.
    pub rule: usize,
    /// Why the rule does not apply; `None` when it does.
    pub skip: Option<Skip>,
    /// The key's parts in key order, when the rule's match holds (also
    /// when a missing part then makes it skip the request); empty
    /// otherwise, and for a rule whose key is `[]`.
    pub key: Vec<KeyValue>,
    /// A global rule's key as the counter service knows it (the values
    /// joined by `:`, `-` for a missing one), when the rule applies.
    pub global_id: Option<String>,
    /// Units the request spends from the rule's bucket, when it applies.
    pub cost: u64,
    /// The request's priority class, for a rule with classes that applies.
    pub class: Option<String>,
    /// For a rule with plans or overrides whose match holds, whose limit
    /// the request gets: `plan pro`, `override for "acme"`, ...
    pub limit_by: Option<String>,
}

impl Explained {
    pub fn applies(&self) -> bool {
        self.skip.is_none()
    }

    /// The key for people: `source=value` for each part, joined by `:`
    /// (`integration=notion:tenant=acme`); a missing value reads
    /// `(missing)`. Empty for a key of no parts.
    pub fn key_text(&self) -> String {
        self.key.iter().map(ToString::to_string).collect::<Vec<_>>().join(":")
    }
}

/// One part of a rule's key and its value for the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// Where the part comes from: `client_ip`, `tenant`,
    /// `header(x-integration)`, `path_param(tenantId)`, ...
    pub source: String,
    /// The value as the key uses it (case-folded); `None` when missing.
    pub value: Option<String>,
}

impl fmt::Display for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={v}", self.source),
            None => write!(f, "{}=(missing)", self.source),
        }
    }
}

/// Why a rule does not apply to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The method is not one of the rule's.
    Method { method: String, methods: Vec<String> },
    /// The rule is for some integrations and the request names none.
    NoIntegration { integrations: Vec<String> },
    /// The request's integration is not one of the rule's.
    Integration { integration: String, integrations: Vec<String> },
    /// The path is in `exempt_paths` and the rule does not name it with
    /// an `exact` matcher.
    Exempt { path: String },
    /// No path matcher of the rule matches the (normalised) path.
    Path { path: String, matchers: Vec<String> },
    /// A header condition does not hold.
    Header { name: String, test: String, value: Option<String> },
    /// The body has no JSON-RPC call the rule counts (or is not JSON-RPC).
    JsonRpc { methods: Vec<String>, tools: Vec<String> },
    /// A key part has no value and the rule says `"missing": "skip"`.
    Missing { source: String },
    /// None of the above found, though the rule does not apply (should
    /// not happen: the reasons follow `applies` check by check).
    Unknown,
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::Method { method, methods } => write!(f, "method {method} is not {}", one_of(methods)),
            Skip::NoIntegration { integrations } => write!(f, "no integration in the request (the rule is for {})", one_of(integrations)),
            Skip::Integration { integration, integrations } => write!(f, "integration {integration} is not {}", one_of(integrations)),
            Skip::Exempt { path } => write!(f, "path {path} is exempt (exempt_paths) and the rule does not name it exactly"),
            Skip::Path { path, matchers } => write!(f, "path {path} does not match {}", one_of(matchers)),
            Skip::Header { name, test, value: Some(v) } => write!(f, "header {name} is {v:?}, the rule wants it {test}"),
            Skip::Header { name, test, value: None } => write!(f, "header {name} is absent, the rule wants it {test}"),
            Skip::JsonRpc { methods, tools } if tools.is_empty() => {
                write!(f, "the body has no JSON-RPC call of method {}", one_of(methods))
            }
            Skip::JsonRpc { tools, .. } => write!(f, "the body has no JSON-RPC tools/call of tool {}", one_of(tools)),
            Skip::Missing { source } => write!(f, "no value for key part {source}, and the rule skips such requests (\"missing\": \"skip\")"),
            Skip::Unknown => write!(f, "its match does not hold"),
        }
    }
}

fn one_of(items: &[String]) -> String {
    match items {
        [one] => one.clone(),
        _ => format!("one of {}", items.join(", ")),
    }
}

/// A key part's source as people read it: `client_ip`, `tenant`,
/// `header(x-integration)`, `path_param(tenantId)`, `body(usage.tokens)`,
/// `query(user)`, `property(source.principal)`, `const`.
fn source_name(part: &KeyPart) -> String {
    match part {
        KeyPart::ClientIp => "client_ip".into(),
        KeyPart::Method => "method".into(),
        KeyPart::Authority => "authority".into(),
        KeyPart::Path => "path".into(),
        KeyPart::Tenant => "tenant".into(),
        KeyPart::Integration => "integration".into(),
        KeyPart::Header(h) => format!("header({h})"),
        KeyPart::Body(path) => format!("body({})", path.join(".")),
        KeyPart::PathParam(name) | KeyPart::TemplateParam { name, .. } => format!("path_param({name})"),
        KeyPart::Query(q) => format!("query({q})"),
        KeyPart::Property(p) => format!("property({})", p.join(".")),
        KeyPart::Const(_) => "const".into(),
        KeyPart::JsonRpcMethod => "jsonrpc_method".into(),
        KeyPart::Tool => "tool".into(),
        KeyPart::Plan => "plan".into(),
    }
}

/// A path matcher as the policy writes it: `exact /p`, `prefix /p`,
/// `template /p/{x}`.
fn matcher_text(m: &PathMatcher) -> String {
    match m {
        PathMatcher::Exact(p) => format!("exact {p}"),
        PathMatcher::Prefix(p) => format!("prefix {p}"),
        PathMatcher::Template(t) => format!("template {}", t.source()),
    }
}

/// A header condition for people: `equal to "notion"`, `starting with
/// "x"`, `present`, `absent`.
fn test_text(test: &HeaderTest) -> String {
    match test {
        HeaderTest::Exact(v) => format!("equal to {v:?}"),
        HeaderTest::Prefix(v) => format!("starting with {v:?}"),
        HeaderTest::Present(true) => "present".into(),
        HeaderTest::Present(false) => "absent".into(),
    }
}

/// The request as the policy sees it, beyond single rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// The normalised path rules match.
    pub path: String,
    /// The path is one of `exempt_paths`.
    pub exempt: bool,
    pub tenant: Option<String>,
    pub integration: Option<String>,
    /// The request's plan, when the policy has plans.
    pub plan: Option<String>,
}

/// The path, tenant and integration of a request as the policy resolves
/// them (the tenant is the `X-RateLimit-Tenant` of the answer).
pub fn resolve(policy: &Policy, req: &mut dyn Request) -> Resolved {
    let mut attrs = Attrs::new(req);
    let exempt = is_exempt(policy, &attrs.path);
    let tenant = attrs.tenant(policy);
    let integration = attrs.integration(policy);
    let plan = super::plans::plan_name(&mut attrs, policy);
    Resolved { path: attrs.path.clone(), exempt, tenant, integration, plan }
}

fn is_exempt(policy: &Policy, path: &str) -> bool {
    policy.exempt_paths.iter().any(|p| p.eq_ignore_ascii_case(path))
}

/// Every rule of the policy, in policy order, as it stands for `req`. A
/// rule with plans or overrides is one entry: the variant of it that
/// takes the request (`limit_by` says which), or when its match does not
/// hold, the rule as written.
pub fn explain(policy: &Policy, req: &mut dyn Request) -> Vec<Explained> {
    let method = req.method().unwrap_or_default().to_ascii_uppercase();
    let mut attrs = Attrs::new(req);
    let exempt = is_exempt(policy, &attrs.path);
    let mut out: Vec<Explained> = Vec::with_capacity(policy.rules.len());
    for (i, rule) in policy.rules.iter().enumerate() {
        let mut e = Explained { rule: i, skip: None, key: Vec::new(), global_id: None, cost: 0, class: None, limit_by: None };
        // Another variant of the rule just listed.
        let variant = rule.choice.as_ref().is_some_and(|c| c.takes != Takes::Written);
        let Some(params) = attrs.applies(policy, rule, exempt) else {
            if !variant {
                e.skip = Some(why_not(&mut attrs, policy, rule, exempt, &method));
                out.push(e);
            }
            continue;
        };
        e.limit_by = super::plans::describe(&mut attrs, policy, rule, &params);
        e.key = rule.key.iter().map(|part| KeyValue { source: source_name(part), value: part_value(&mut attrs, policy, rule, part, &params) }).collect();
        match attrs.key(policy, rule, &params) {
            None => {
                let source = e.key.iter().find(|k| k.value.is_none()).map_or_else(String::new, |k| k.source.clone());
                e.skip = Some(Skip::Missing { source });
            }
            Some((_, id)) => {
                e.global_id = id;
                e.cost = attrs.cost(rule);
                e.class = rule.priority.as_ref().and_then(|p| {
                    let value = attrs.header(&p.header);
                    p.classes.get(p.class(value, 0)).cloned()
                });
            }
        }
        // The variant that takes the request stands for its rule.
        if variant {
            out.pop();
        }
        out.push(e);
    }
    out
}

/// The value of one key part, taken through `Attrs::key` itself: a rule
/// keyed on that part alone, which skips a missing value and, being
/// global, gives its key as text.
fn part_value(attrs: &mut Attrs<'_>, policy: &Policy, rule: &Rule, part: &KeyPart, params: &Params) -> Option<String> {
    let probe = Rule { key: vec![part.clone()], scope: Scope::Global, missing: Missing::Skip, ..rule.clone() };
    attrs.key(policy, &probe, params).and_then(|(_, text)| text)
}

/// Why `rule` does not apply: its conditions in the order `applies`
/// checks them, the first that fails.
fn why_not(attrs: &mut Attrs<'_>, policy: &Policy, rule: &Rule, exempt: bool, method: &str) -> Skip {
    if !rule.methods.is_empty() && !rule.methods.iter().any(|m| m == method) {
        return Skip::Method { method: method.to_string(), methods: rule.methods.clone() };
    }
    if !rule.integrations.is_empty() {
        match attrs.integration(policy) {
            None => return Skip::NoIntegration { integrations: rule.integrations.clone() },
            Some(found) if !rule.integrations.contains(&found) => {
                return Skip::Integration { integration: found, integrations: rule.integrations.clone() };
            }
            Some(_) => {}
        }
    }
    let path = attrs.path.clone();
    if rule.paths.is_empty() {
        if exempt {
            return Skip::Exempt { path };
        }
    } else if !rule.paths.iter().any(|m| m.matches(&path).is_some() && (!exempt || m.names_exactly(&path))) {
        if exempt && rule.paths.iter().any(|m| m.matches(&path).is_some()) {
            return Skip::Exempt { path };
        }
        return Skip::Path { path, matchers: rule.paths.iter().map(matcher_text).collect() };
    }
    for h in &rule.headers {
        let value = attrs.header(&h.name).map(str::to_string);
        let ok = match (&h.test, value.as_deref()) {
            (HeaderTest::Present(want), v) => v.is_some() == *want,
            (HeaderTest::Exact(want), Some(v)) => v.eq_ignore_ascii_case(want),
            (HeaderTest::Prefix(want), Some(v)) => crate::path::starts_with_ignore_case(v, want),
            (_, None) => false,
        };
        if !ok {
            return Skip::Header { name: h.name.clone(), test: test_text(&h.test), value };
        }
    }
    if let Some(j) = &rule.jsonrpc {
        let any = || vec!["*".to_string()];
        let methods = if j.methods.is_empty() { any() } else { j.methods.clone() };
        return Skip::JsonRpc { methods, tools: j.tools.clone() };
    }
    Skip::Unknown
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::limiter::{decide, Ctx};
    use crate::request::MemoryRequest;
    use crate::store::{ensure_slots, MemoryStore};
    use crate::testing::S;

    const GATEWAY: &str = include_str!("../../../policies/mcp-gateway.json");

    fn gateway() -> Policy {
        Policy::from_json(GATEWAY).expect("gateway policy")
    }

    fn by_name<'a>(policy: &Policy, all: &'a [Explained], name: &str) -> &'a Explained {
        all.iter().find(|e| policy.rules[e.rule].name == name).unwrap_or_else(|| panic!("no rule {name}"))
    }

    #[test]
    fn an_invoke_call_meets_the_ip_tenant_invoke_and_integration_rules() {
        let p = gateway();
        let mut req =
            MemoryRequest::new("POST", "/api/v1/tools/invoke").header("x-tenant-id", "Acme").header("x-integration", "Notion").from_address("10.1.2.3:5555");
        let all = explain(&p, &mut req);
        assert_eq!(all.len(), p.rules.len());
        let applying: Vec<&str> = all.iter().filter(|e| e.applies()).map(|e| p.rules[e.rule].name.as_str()).collect();
        assert_eq!(applying, ["per-ip", "per-tenant", "tools-invoke", "integration-notion"]);
        assert_eq!(by_name(&p, &all, "per-ip").key_text(), "client_ip=10.1.2.3");
        assert_eq!(by_name(&p, &all, "per-ip").global_id, None);
        let tenant = by_name(&p, &all, "per-tenant");
        assert_eq!(tenant.key_text(), "tenant=acme");
        assert_eq!(tenant.global_id.as_deref(), Some("acme"));
        let notion = by_name(&p, &all, "integration-notion");
        assert_eq!(notion.key_text(), "integration=notion:tenant=acme");
        assert_eq!(notion.global_id.as_deref(), Some("notion:acme"));
        assert_eq!(notion.cost, 1);
        let list = by_name(&p, &all, "tools-list");
        assert_eq!(
            list.skip,
            Some(Skip::Method { method: "POST".into(), methods: vec!["GET".into(), "HEAD".into()] }),
            "the first failing condition is the method (HEAD comes with GET)"
        );
        assert!(list.key.is_empty());
        let select = by_name(&p, &all, "tools-select");
        assert!(matches!(&select.skip, Some(Skip::Path { path, .. }) if path == "/api/v1/tools/invoke"), "{select:?}");
        let github = by_name(&p, &all, "integration-github");
        assert_eq!(github.skip, Some(Skip::Integration { integration: "notion".into(), integrations: vec!["github".into(), "api.github.com".into()] }));
        let r = resolve(&p, &mut req);
        assert_eq!((r.tenant.as_deref(), r.integration.as_deref(), r.exempt), (Some("acme"), Some("notion"), false));
    }

    #[test]
    fn head_counts_as_get_unless_the_rule_says_otherwise() {
        let p = gateway();
        let mut head = MemoryRequest::new("HEAD", "/api/v1/tools/list").header("x-tenant-id", "acme");
        let all = explain(&p, &mut head);
        assert!(by_name(&p, &all, "tools-list").applies(), "HEAD is served by the GET handler: {:?}", by_name(&p, &all, "tools-list"));
        let mut post = MemoryRequest::new("POST", "/api/v1/tools/list");
        let all = explain(&p, &mut post);
        assert_eq!(by_name(&p, &all, "tools-list").skip.as_ref().map(ToString::to_string).as_deref(), Some("method POST is not one of GET, HEAD"));
        // A rule keyed on the method counts HEAD in GET's bucket.
        let keyed = r#"{"rules": [{"name": "m", "match": {"methods": ["get"]}, "key": ["method"], "limit": {"requests": 1, "per": "1s"}}]}"#;
        let keyed = Policy::from_json(keyed).expect("policy");
        let all = explain(&keyed, &mut MemoryRequest::new("HEAD", "/"));
        assert_eq!(all[0].key_text(), "method=get");
        // The opt-out: a rule for GET alone.
        let alone = r#"{"rules": [{"name": "g", "match": {"methods": ["GET"], "head": "separate"}, "limit": {"requests": 1, "per": "1s"}}]}"#;
        let alone = Policy::from_json(alone).expect("policy");
        let all = explain(&alone, &mut MemoryRequest::new("HEAD", "/"));
        assert_eq!(all[0].skip, Some(Skip::Method { method: "HEAD".into(), methods: vec!["GET".into()] }));
    }

    #[test]
    fn a_tenant_from_the_path_wins_and_missing_parts_show() {
        let p = gateway();
        let req = MemoryRequest::new("GET", "/api/v1/tenants/T9/integrations").header("x-tenant-id", "other");
        // No authority either (the policy's second integration source).
        let mut req = MemoryRequest { authority: String::new(), ..req };
        let all = explain(&p, &mut req);
        assert_eq!(by_name(&p, &all, "tenant-integrations").key_text(), "path_param(tenantId)=t9");
        assert_eq!(by_name(&p, &all, "per-tenant").global_id.as_deref(), Some("t9"));
        // No integration: integration rules do not apply, for that reason.
        let notion = by_name(&p, &all, "integration-notion");
        assert!(matches!(notion.skip, Some(Skip::NoIntegration { .. })), "{notion:?}");
        // No tenant at all: the rule still applies, to the shared bucket.
        let mut anon = MemoryRequest::new("GET", "/api/v1/tools/list");
        let all = explain(&p, &mut anon);
        let list = by_name(&p, &all, "tools-list");
        assert!(list.applies());
        assert_eq!(list.key_text(), "tenant=(missing)");
        assert_eq!(list.global_id.as_deref(), Some("-"));
    }

    #[test]
    fn exempt_paths_skip_and_skip_rules_name_the_missing_part() {
        let p = Policy::from_json(
            r#"{"exempt_paths": ["/health"], "rules": [
            {"name": "all", "key": ["client_ip"], "limit": {"requests": 5, "per": "1s"}},
            {"name": "health", "match": {"paths": [{"exact": "/health"}]}, "limit": {"requests": 5, "per": "1s"}},
            {"name": "prefixed", "match": {"paths": [{"prefix": "/h"}]}, "limit": {"requests": 5, "per": "1s"}},
            {"name": "by-user", "key": [{"header": "x-user"}], "missing": "skip", "limit": {"requests": 5, "per": "1s"}},
            {"name": "beta", "match": {"headers": [{"name": "x-beta", "exact": "yes"}]}, "limit": {"requests": 5, "per": "1s"}},
            {"name": "costly", "key": [], "cost": {"header": "x-units", "max": 9}, "limit": {"requests": 10, "per": "1s"},
             "priority": {"header": "x-priority", "classes": ["high", "low"]}}
        ]}"#,
        )
        .expect("policy");
        let mut health = MemoryRequest::new("GET", "/health/").header("x-beta", "no");
        let all = explain(&p, &mut health);
        assert_eq!(all[0].skip, Some(Skip::Exempt { path: "/health".into() }));
        assert!(all[1].applies(), "an exact matcher names the exempt path");
        assert_eq!(all[2].skip, Some(Skip::Exempt { path: "/health".into() }));
        assert_eq!(all[3].skip, Some(Skip::Exempt { path: "/health".into() }));
        assert_eq!(
            all[3].skip.as_ref().map(ToString::to_string).unwrap_or_default(),
            "path /health is exempt (exempt_paths) and the rule does not name it exactly"
        );

        let mut other = MemoryRequest::new("GET", "/x").header("x-beta", "No").header("x-units", "4").header("x-priority", "LOW");
        let all = explain(&p, &mut other);
        assert_eq!(all[3].skip, Some(Skip::Missing { source: "header(x-user)".into() }));
        assert_eq!(all[3].key_text(), "header(x-user)=(missing)");
        assert_eq!(all[4].skip, Some(Skip::Header { name: "x-beta".into(), test: "equal to \"yes\"".into(), value: Some("No".into()) }));
        assert!(all[5].applies());
        assert_eq!((all[5].cost, all[5].class.as_deref(), all[5].key_text()), (4, Some("low"), String::new()));
        let mut other = MemoryRequest::new("GET", "/x").header("x-user", "u1").header("x-beta", "yes");
        let all = explain(&p, &mut other);
        assert!(all[3].applies() && all[4].applies());
        assert_eq!(all[3].key_text(), "header(x-user)=u1");
    }

    /// The rules an explanation says apply are exactly those the decision
    /// counts, and a global rule's counter id is the one the decision asks
    /// the service about.
    #[test]
    fn explanations_agree_with_decisions() {
        let p = gateway();
        let requests = [
            MemoryRequest::new("POST", "/api/v1/tools/invoke").header("x-tenant-id", "acme").header("x-integration", "notion"),
            MemoryRequest::new("GET", "/api/v1/tools/list?page=2").header("x-tenant-id", "acme"),
            MemoryRequest::new("get", "/API/v1//tools/%6cist/"),
            MemoryRequest::new("GET", "/health"),
            MemoryRequest::new("GET", "/ready/"),
            MemoryRequest::new("POST", "/api/v1/tenants/t1/integrations/github/oauth-config"),
            MemoryRequest::new("DELETE", "/api/v1/tenants/t1/integrations/github/oauth-config").header("x-tenant-id", "t2"),
            MemoryRequest::new("GET", "/v1/search").header("x-tenant-id", "acme"),
            MemoryRequest { authority: "api.github.com".into(), ..MemoryRequest::new("GET", "/repos").header("x-tenant-id", "acme") },
            MemoryRequest::new("PUT", "/api/v1/categories").header("x-integration", "Gmail"),
            MemoryRequest::new("GET", "/api/v1/metrics").from_address("[2001:db8::1]:443").header("x-forwarded-for", "203.0.113.7"),
        ];
        for req in requests {
            let all = explain(&p, &mut req.clone());
            let said: Vec<usize> = all.iter().filter(|e| e.applies()).map(|e| e.rule).collect();
            // Degraded: every global rule decides at once, failing open.
            let store = MemoryStore::default();
            ensure_slots(&store, p.slots).expect("slots");
            let ctx = Ctx { degraded: true, ..Ctx::at(1_800_000_000 * S) };
            let d = decide(&p, &mut req.clone(), &store, ctx);
            assert!(d.allowed(), "{req:?}");
            let decided: Vec<usize> = d.ruling.applied.iter().map(|o| o.rule).collect();
            assert_eq!(said, decided, "{req:?}");
            // Not degraded: each global rule asks for its key's lease (a
            // new key's first request goes on credit, and its ask with it).
            let store = MemoryStore::default();
            ensure_slots(&store, p.slots).expect("slots");
            let d = decide(&p, &mut req.clone(), &store, Ctx::at(1_800_000_000 * S));
            let mut asked: Vec<(usize, String)> = d.effects.wait_for.iter().chain(&d.effects.refills).map(|n| (n.rule, n.ask.id.clone())).collect();
            asked.sort();
            let ids: Vec<(usize, String)> = all.iter().filter_map(|e| e.global_id.clone().map(|id| (e.rule, id))).collect();
            assert_eq!(asked, ids, "{req:?}");
            assert_eq!(resolve(&p, &mut req.clone()).tenant, d.ruling.tenant, "{req:?}");
        }
    }
}
