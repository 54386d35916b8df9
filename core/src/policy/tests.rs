#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

const GATEWAY: &str = include_str!("../../../policies/mcp-gateway.json");

fn problems(json: &str) -> Vec<String> {
    match Policy::from_json(json) {
        Ok(_) => Vec::new(),
        Err(e) => e.problems.iter().map(ToString::to_string).collect(),
    }
}

/// A policy with one rule whose body is `rule` (inserted as JSON text).
fn one_rule(rule: &str) -> String {
    format!(r#"{{"tenant": [{{"header": "x-tenant-id"}}], "rules": [{{"name": "r", {rule}}}]}}"#)
}

#[test]
fn the_gateway_policy_is_valid() {
    let p = Policy::from_json(GATEWAY).expect("default policy");
    assert_eq!(p.trusted_hops, 0, "Envoy is the edge of `make run` and compose: X-Forwarded-For is the client's");
    assert_eq!(p.ipv6_prefix, 64);
    assert_eq!(p.exempt_paths, ["/health", "/ready"]);
    let list = p.rule("tools-list").expect("tools-list rule");
    assert_eq!(list.limit.requests, 5);
    assert_eq!(list.limit.burst, 5);
    assert_eq!(list.limit.per, crate::duration::Span::from_secs(1));
    assert_eq!(p.rules.iter().filter(|r| r.name.starts_with("integration-")).count(), 14);
    assert!(p.global.as_ref().is_some_and(|g| g.credit), "credit is on unless turned off");
    // Every limit of the policy is "N per second" with bursts of one second.
    for r in &p.rules {
        assert_eq!(r.limit.per.nanos(), 1_000_000_000, "{}", r.name);
        assert_eq!(r.limit.burst, r.limit.requests, "{}", r.name);
        assert_eq!(r.algorithm, Algorithm::TokenBucket, "{}", r.name);
    }
}

#[test]
fn the_gateway_policy_made_local_counts_every_rule_here() {
    let global = Policy::from_json(GATEWAY).expect("default policy");
    assert!(global.rules.iter().any(|r| r.scope == Scope::Global), "the default policy has global rules");
    let mut doc: serde_json::Value = serde_json::from_str(GATEWAY).expect("JSON");
    make_local(&mut doc);
    let local = Policy::from_json(&doc.to_string()).expect("still valid");
    assert!(local.global.is_none());
    assert!(local.rules.iter().all(|r| r.scope == Scope::Local));
    let names = |p: &Policy| p.rules.iter().map(|r| (r.name.clone(), r.limit)).collect::<Vec<_>>();
    assert_eq!(names(&local), names(&global), "the same rules and limits");
    // Anything but an object is left as it is.
    let mut not_a_policy = serde_json::json!([1, 2]);
    make_local(&mut not_a_policy);
    assert_eq!(not_a_policy, serde_json::json!([1, 2]));
}

#[test]
fn each_mistake_is_named_with_its_path() {
    let cases: &[(&str, &str)] = &[
        (r#"{"rules": [], "slotz": 5}"#, "unknown field `slotz`"),
        (r#"{"rules": [{"name": "r", "limit": {"requests": 1, "per": "1s"}, "limt": 1}]}"#, "rules[0].limt: unknown field `limt`"),
        (&one_rule(r#""limit": {"requests": 0, "per": "1s"}"#), "rules[0].limit.requests: must be a whole number"),
        (&one_rule(r#""limit": {"requests": -5, "per": "1s"}"#), "rules[0].limit.requests: must be a whole number"),
        (&one_rule(r#""limit": {"requests": 1.5, "per": "1s"}"#), "rules[0].limit.requests: invalid type"),
        (&one_rule(r#""limit": {"requests": 1, "per": "1 sec"}"#), "rules[0].limit.per: bad duration"),
        (&one_rule(r#""limit": {"requests": 1, "per": "0s"}"#), "rules[0].limit.per: bad duration"),
        (&one_rule(r#""limit": {"requests": 1, "per": "1s", "burst": 0}"#), "rules[0].limit.burst: must be"),
        (&one_rule(r#""algorithm": "fixed_window", "limit": {"requests": 1, "per": "1s", "burst": 2}"#), "rules[0].limit.burst: only the token_bucket"),
        (&one_rule(r#""algorithm": "leaky", "limit": {"requests": 1, "per": "1s"}"#), "rules[0].algorithm: unknown variant `leaky`"),
        (&one_rule(r#""mode": "dry", "limit": {"requests": 1, "per": "1s"}"#), "rules[0].mode: unknown variant `dry`"),
        (
            &one_rule(r#""match": {"paths": [{"template": "/a/{x}/{x}"}]}, "limit": {"requests": 1, "per": "1s"}"#),
            "rules[0].match.paths[0].template: template \"/a/{x}/{x}\": parameter {x} appears twice",
        ),
        (&one_rule(r#""match": {"paths": [{"template": "/a/b{x}"}]}, "limit": {"requests": 1, "per": "1s"}"#), "rules[0].match.paths[0].template"),
        (
            &one_rule(r#""match": {"paths": [{"exact": "health"}]}, "limit": {"requests": 1, "per": "1s"}"#),
            "rules[0].match.paths[0]: path \"health\" must start with '/'",
        ),
        (&one_rule(r#""match": {"paths": [{"regex": ".*"}]}, "limit": {"requests": 1, "per": "1s"}"#), "rules[0].match.paths[0]: unknown variant `regex`"),
        (&one_rule(r#""match": {"methods": ["GE T"]}, "limit": {"requests": 1, "per": "1s"}"#), "rules[0].match.methods[0]"),
        (
            &one_rule(r#""match": {"headers": [{"name": "x", "exact": "a", "prefix": "b"}]}, "limit": {"requests": 1, "per": "1s"}"#),
            "rules[0].match.headers[0]: give at most one",
        ),
        (&one_rule(r#""match": {"headers": [{"name": "bad header"}]}, "limit": {"requests": 1, "per": "1s"}"#), "rules[0].match.headers[0].name"),
        (
            &one_rule(r#""key": [{"path_param": "tenantId"}], "limit": {"requests": 1, "per": "1s"}"#),
            "rules[0].key[0].path_param: {tenantId} is not a parameter",
        ),
        (
            &one_rule(
                r#""match": {"paths": [{"template": "/t/{id}"}, {"exact": "/x"}]}, "key": [{"path_param": "id"}], "limit": {"requests": 1, "per": "1s"}"#,
            ),
            "rules[0].key[0].path_param",
        ),
        (
            &one_rule(r#""key": [{"path_param": {"name": "id", "template": "/t/{tid}"}}], "limit": {"requests": 1, "per": "1s"}"#),
            "rules[0].key[0].path_param.name",
        ),
        (&one_rule(r#""key": [{"cookie": "x"}], "limit": {"requests": 1, "per": "1s"}"#), "rules[0].key[0]: unknown variant `cookie`"),
        (&one_rule(r#""key": [{"property": []}], "limit": {"requests": 1, "per": "1s"}"#), "rules[0].key[0].property"),
        (&one_rule(r#""key": [{"metadata": {"filter": "", "path": ["sub"]}}], "limit": {"requests": 1, "per": "1s"}"#), "rules[0].key[0].metadata"),
        (
            r#"{"rules": [{"name": "r", "key": ["tenant"], "limit": {"requests": 1, "per": "1s"}}]}"#,
            "rules[0].key[0]: key uses \"tenant\" but the policy defines no `tenant`",
        ),
        (r#"{"rules": [{"name": "a b", "limit": {"requests": 1, "per": "1s"}}]}"#, "rules[0].name"),
        (
            r#"{"rules": [{"name": "a", "limit": {"requests": 1, "per": "1s"}}, {"name": "a", "limit": {"requests": 1, "per": "1s"}}]}"#,
            "rules[1].name: duplicate rule name \"a\" (first used at rules[0])",
        ),
        (r#"{"slots": 10, "rules": []}"#, "slots: must be between"),
        (r#"{"trusted_hops": -1, "rules": []}"#, "trusted_hops: must be between"),
        (r#"{"ipv6_prefix": 0, "rules": []}"#, "ipv6_prefix: must be between 1 and 128"),
        (r#"{"ipv6_prefix": 129, "rules": []}"#, "ipv6_prefix: must be between 1 and 128"),
        (r#"{"ipv6_prefix": "64", "rules": []}"#, "ipv6_prefix: invalid type"),
        (r#"{"exempt_paths": ["health"], "rules": []}"#, "exempt_paths[0]"),
        (r#"{"tenant": ["tenant"], "rules": []}"#, "tenant[0]: the tenant cannot be defined by itself"),
        (r#"{"tenant": [{"path_param": "tenantId"}], "rules": []}"#, "tenant[0]: path_param \"tenantId\" needs its own template"),
        (r#"{"global": {"credit": "yes"}, "rules": []}"#, "global.credit: invalid type"),
        (r#"{"rules": {}}"#, "rules: invalid type"),
        (r#"{"rules": ["#, "EOF while parsing"),
        ("", "EOF while parsing"),
        (r#"{}"#, "missing field `rules`"),
    ];
    for (json, want) in cases {
        let got = problems(json);
        assert!(got.iter().any(|p| p.contains(want)), "{json}\nwant: {want}\ngot: {got:?}");
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    let json = r#"{"slots": 1, "rules": [
        {"name": "a", "limit": {"requests": 0, "per": "1s"}},
        {"name": "b", "limit": {"requests": 1, "per": "1y"}}]}"#;
    let err = Policy::from_json(json).expect_err("invalid");
    assert_eq!(err.problems.len(), 3, "{err}");
    assert_eq!(err.one_line().matches("; ").count(), 2);
}

#[test]
fn identity_survives_limit_changes_but_not_key_changes() {
    let a = Policy::from_json(&one_rule(r#""key": ["tenant"], "limit": {"requests": 1, "per": "1s"}"#)).expect("a");
    let b = Policy::from_json(&one_rule(r#""key": ["tenant"], "limit": {"requests": 9, "per": "1m"}"#)).expect("b");
    let c = Policy::from_json(&one_rule(r#""key": ["client_ip"], "limit": {"requests": 1, "per": "1s"}"#)).expect("c");
    assert_eq!(a.rules[0].identity, b.rules[0].identity);
    assert_ne!(a.rules[0].identity, c.rules[0].identity);
}

/// A rule's identity is its name and key spec in the encoding documented
/// at `rule_identity`: these values must never change, since a new value
/// starts the rule's buckets afresh in every instance.
#[test]
fn identities_are_pinned() {
    const PINNED: [u64; 4] = [0xd80d_1eae_a7db_fa62, 0xfa45_89c7_3aca_7d05, 0xc423_0b02_7a57_1c1a, 0x3e8a_3e58_7eb4_5822];
    let identity = |rule: &str| Policy::from_json(&one_rule(rule)).expect("policy").rules[0].identity;
    let limit = r#""limit": {"requests": 1, "per": "1s"}"#;
    assert_eq!(identity(&format!(r#""key": [], {limit}"#)), PINNED[0]);
    assert_eq!(identity(&format!(r#""key": ["tenant"], {limit}"#)), PINNED[1]);
    assert_eq!(identity(&format!(r#""key": ["client_ip", {{"header": "X-Api-Key"}}], {limit}"#)), PINNED[2]);
    let parts = r#"[{"body": "params.name"}, {"path_param": {"name": "t", "template": "/v1/{t}/x"}}, {"query": "q"}, {"property": ["source", "principal"]}, {"const": "c"}, "jsonrpc_method", "tool"]"#;
    let body = format!(r#"{{"read_body": true, "rules": [{{"name": "mcp", "key": {parts}, {limit}}}]}}"#);
    assert_eq!(Policy::from_json(&body).expect("policy").rules[0].identity, PINNED[3]);
    // The documented bytes of one: name "r", tenant (5), header (7) "x-a".
    let bytes = [1, 0, 0, 0, b'r', 5, 7, 3, 0, 0, 0, b'x', b'-', b'a'];
    assert_eq!(compile::rule_identity("r", &[KeyPart::Tenant, KeyPart::Header("x-a".into())]), crate::hash::fnv1a(&bytes));
}

#[test]
fn distinct_keys_have_distinct_identities() {
    let s = |v: &str| v.to_string();
    let template = crate::path::Template::parse("/v1/{t}").expect("template");
    let other = crate::path::Template::parse("/v2/{t}").expect("template");
    let keys: Vec<(&str, Vec<KeyPart>)> = vec![
        ("r", vec![]),
        ("s", vec![]),
        ("r", vec![KeyPart::ClientIp]),
        ("r", vec![KeyPart::Method]),
        ("r", vec![KeyPart::Authority]),
        ("r", vec![KeyPart::Path]),
        ("r", vec![KeyPart::Tenant]),
        ("r", vec![KeyPart::Integration]),
        ("r", vec![KeyPart::JsonRpcMethod]),
        ("r", vec![KeyPart::Tool]),
        ("r", vec![KeyPart::Tenant, KeyPart::ClientIp]),
        ("r", vec![KeyPart::ClientIp, KeyPart::Tenant]),
        ("r", vec![KeyPart::Tenant, KeyPart::Tenant]),
        ("r", vec![KeyPart::Header(s("a"))]),
        ("r", vec![KeyPart::Header(s("b"))]),
        ("r", vec![KeyPart::Query(s("a"))]),
        ("r", vec![KeyPart::Const(s("a"))]),
        ("r", vec![KeyPart::PathParam(s("a"))]),
        // Where strings end matters.
        ("r", vec![KeyPart::Header(s("ab")), KeyPart::Const(s("c"))]),
        ("r", vec![KeyPart::Header(s("a")), KeyPart::Const(s("bc"))]),
        ("ra", vec![KeyPart::Header(s("b"))]),
        ("r", vec![KeyPart::Body(vec![s("a"), s("b")])]),
        ("r", vec![KeyPart::Body(vec![s("a.b")])]),
        ("r", vec![KeyPart::Body(vec![s("a")]), KeyPart::Body(vec![s("b")])]),
        ("r", vec![KeyPart::Property(vec![s("a"), s("b")])]),
        ("r", vec![KeyPart::TemplateParam { name: s("t"), template: template.clone() }]),
        ("r", vec![KeyPart::TemplateParam { name: s("t"), template: other }]),
    ];
    let mut seen = std::collections::HashMap::new();
    for (name, key) in &keys {
        let id = compile::rule_identity(name, key);
        if let Some(before) = seen.insert(id, (name, key)) {
            panic!("{before:?} and {:?} share identity {id:#x}", (name, key));
        }
    }
    assert_eq!(compile::rule_identity("r", &[KeyPart::Header(s("a"))]), compile::rule_identity("r", &[KeyPart::Header(s("a"))]));
}

#[test]
fn istio_plugin_config_form_is_the_same_document() {
    // WasmPlugin's pluginConfig arrives as this JSON text unchanged.
    let v: serde_json::Value = serde_json::from_str(GATEWAY).expect("json");
    let again = serde_json::to_string(&v).expect("text");
    assert!(Policy::from_json(&again).is_ok());
}

#[test]
fn priority_classes_are_checked() {
    let limit = r#""limit": {"requests": 10, "per": "1s", "burst": 3}"#;
    let bad: &[(&str, &str)] = &[
        (r#""priority": {"header": "x-priority", "classes": ["only"]}"#, "rules[0].priority.classes"),
        (r#""priority": {"header": "x-priority", "classes": ["a", "A"]}"#, "rules[0].priority.classes[1]"),
        (r#""priority": {"header": "x p", "classes": ["a", "b"]}"#, "rules[0].priority.header"),
        (r#""priority": {"header": "x-priority", "classes": ["a", "b"], "default": "c"}"#, "rules[0].priority.default"),
        (r#""priority": {"header": "x-priority", "classes": ["a", "b", "c"], "reserve": 2}"#, "rules[0].priority.reserve"),
        (r#""priority": {"header": "x-priority", "classes": ["a", "b"], "aging": "0s"}"#, "rules[0].priority.aging"),
    ];
    for (prio, path) in bad {
        let found = problems(&one_rule(&format!("{limit}, {prio}")));
        assert!(found.iter().any(|p| p.starts_with(path)), "{prio}: {found:?}");
    }
    let fixed = problems(&one_rule(
        r#""limit": {"requests": 10, "per": "1s"}, "algorithm": "fixed_window", "priority": {"header": "x-priority", "classes": ["a", "b"]}"#,
    ));
    assert!(fixed.iter().any(|p| p.starts_with("rules[0].priority")), "{fixed:?}");
    let ok =
        Policy::from_json(&one_rule(&format!(r#"{limit}, "priority": {{"header": "X-Priority", "classes": ["Critical", "normal", "bulk"]}}"#))).expect("valid");
    let p = ok.rules[0].priority.as_ref().expect("priority");
    assert_eq!((p.header.as_str(), p.default, p.reserve), ("x-priority", 1, 1));
    assert_eq!(p.classes, ["critical", "normal", "bulk"]);
}

#[test]
fn adaptive_settings_are_checked() {
    let limit = r#""limit": {"requests": 20, "per": "1s"}"#;
    let bad: &[(&str, &str)] = &[
        (r#""adaptive": {"floor": 0}"#, "rules[0].adaptive.floor"),
        (r#""adaptive": {"floor": 21}"#, "rules[0].adaptive.floor"),
        (r#""adaptive": {"latency": {"percentile": 100, "above": "1s"}}"#, "rules[0].adaptive.latency.percentile"),
        (r#""adaptive": {"latency": {"percentile": 90, "above": "soon"}}"#, "rules[0].adaptive.latency.above"),
        (r#""adaptive": {"errors": 1.5}"#, "rules[0].adaptive.errors"),
        (r#""adaptive": {"decrease": 1.0}"#, "rules[0].adaptive.decrease"),
        (r#""adaptive": {"interval": "10ms"}"#, "rules[0].adaptive.interval"),
        (r#""adaptive": {"increase": 0}"#, "rules[0].adaptive.increase"),
        (r#""adaptive": {"min_samples": 0}"#, "rules[0].adaptive.min_samples"),
    ];
    for (adaptive, path) in bad {
        let found = problems(&one_rule(&format!("{limit}, {adaptive}")));
        assert!(found.iter().any(|p| p.starts_with(path)), "{adaptive}: {found:?}");
    }
    let ok = Policy::from_json(&one_rule(&format!(r#"{limit}, "adaptive": {{}}"#))).expect("valid");
    let a = ok.rules[0].adaptive.as_ref().expect("adaptive");
    assert_eq!((a.floor, a.increase, a.min_samples, a.decrease_permille, a.errors_permille), (2, 2, 10, 500, Some(100)));
    assert_eq!(a.latency, None);
}

#[test]
fn the_counter_secret_can_come_from_the_environment() {
    let json = r#"{"global": {"secret_env": "SLUICE_COUNTER_SECRET"}, "rules": []}"#;
    let mut p = Policy::from_json(json).expect("policy");
    assert_eq!(p.global.as_ref().and_then(|g| g.secret.clone()), None);
    let env = |value: Option<&'static str>| move |name: &str| (name == "SLUICE_COUNTER_SECRET").then_some(value).flatten().map(String::from);
    p.resolve_secret(env(Some("k3y"))).expect("resolved");
    assert_eq!(p.global.as_ref().and_then(|g| g.secret.as_deref()), Some("k3y"));
    for (value, why) in [(None, "is not set in the Wasm VM"), (Some(""), "not printable"), (Some("a b"), "not printable")] {
        let mut p = Policy::from_json(json).expect("policy");
        let e = p.resolve_secret(env(value)).expect_err("refused");
        assert!(e.starts_with("global.secret_env: the environment variable SLUICE_COUNTER_SECRET") && e.contains(why), "{e}");
    }
    // Nothing to read: nothing asked of the environment.
    let mut inline = Policy::from_json(r#"{"global": {"secret": "k"}, "rules": []}"#).expect("policy");
    inline.resolve_secret(|_| panic!("read the environment")).expect("ok");
    assert_eq!(
        problems(r#"{"global": {"secret": "k", "secret_env": "K"}, "rules": []}"#),
        ["global.secret_env: give the secret once: `secret` or `secret_env`, not both"]
    );
    assert_eq!(problems(r#"{"global": {"secret_env": "1A"}, "rules": []}"#).len(), 1);
    assert_eq!(problems(r#"{"global": {"secret_env": "A-B"}, "rules": []}"#).len(), 1);
}

#[test]
fn count_takes_all_success_or_a_status_and_nothing_else() {
    let rule = |count: &str| format!(r#"{{"rules": [{{"name": "r", "limit": {{"requests": 1, "per": "1s"}}, "count": {count}}}]}}"#);
    let from = |count: &str| Policy::from_json(&rule(count)).map(|p| p.rules[0].refund_from);
    assert_eq!(from(r#""all""#).unwrap(), None);
    assert_eq!(from(r#""success""#).unwrap(), Some(500));
    assert_eq!(from(r#"{"success_below": 400}"#).unwrap(), Some(400));
    for bad in [r#""some""#, r#"{"success_below": 100}"#, r#"{"success_below": 600}"#, r#"{"success_below": -1}"#] {
        let e = from(bad).expect_err(bad);
        assert!(e.problems.iter().any(|p| p.path.starts_with("rules[0].count")), "{bad}: {e:?}");
    }
    let concurrent = r#"{"rules": [{"name": "r", "limit": {"concurrent": 2}, "count": "success"}]}"#;
    let e = Policy::from_json(concurrent).expect_err("a concurrency limit");
    assert!(e.problems.iter().any(|p| p.path == "rules[0].count"), "{e:?}");
}

#[test]
fn a_cost_read_from_the_response_takes_an_estimate() {
    let p = Policy::from_json(&one_rule(r#""limit": {"requests": 1000, "per": "1m"}, "cost": {"response_body": "usage.total_tokens", "estimate": 100}"#))
        .expect("policy");
    let cost = p.rules.first().and_then(|r| r.cost.clone()).expect("cost");
    assert_eq!(cost.source, CostSource::ResponseBody(vec!["usage".into(), "total_tokens".into()]));
    assert_eq!((cost.default, cost.max, cost.from_response()), (100, 1000, true));
    let header = Policy::from_json(&one_rule(r#""limit": {"requests": 10, "per": "1s"}, "cost": {"response_header": "X-Units"}"#)).expect("policy");
    let cost = header.rules.first().and_then(|r| r.cost.clone()).expect("cost");
    assert_eq!((cost.source, cost.default), (CostSource::ResponseHeader("x-units".into()), 1), "the estimate is 1 unless given");
    assert!(!header.needs_body, "a response's body needs no request body read");
    let cases: &[(&str, &str)] = &[
        (r#""cost": {"response_header": "x-units", "header": "x-units"}"#, "rules[0].cost: give exactly one of"),
        (r#""cost": {"response_body": "usage..tokens"}"#, "rules[0].cost.response_body: \"usage..tokens\" must be a dotted path"),
        (r#""cost": {"response_header": "x units"}"#, "rules[0].cost.response_header: \"x units\" is not a valid header name"),
        (r#""cost": {"response_header": "x-units", "estimate": 11}"#, "rules[0].cost.estimate: must be between 0 and `max`"),
        (r#""cost": {"response_header": "x-units", "default": 2}"#, "rules[0].cost.default: a cost read from the response takes `estimate`"),
        (r#""cost": {"header": "x-units", "estimate": 2}"#, "rules[0].cost.estimate: `estimate` is for a cost read from the response"),
    ];
    for (rule, want) in cases {
        let got = problems(&one_rule(&format!(r#""limit": {{"requests": 10, "per": "1s"}}, {rule}"#)));
        assert!(got.iter().any(|p| p.contains(want)), "{rule}: want {want:?}, got {got:?}");
    }
    let concurrent = problems(&one_rule(r#""limit": {"concurrent": 4}, "cost": {"response_header": "x-units"}"#));
    assert!(concurrent.iter().any(|p| p.contains("rules[0].cost: a concurrency limit holds its units")), "{concurrent:?}");
}
