//! The production policy `policies/mcp-gateway-jwt.json` in a real Envoy
//! behind Envoy's `jwt_authn` filter (a local JWKS, RS256 test tokens signed
//! here with the test-only key in tests/fixtures/): the tenant is the
//! verified `tenant_id` claim, read from dynamic metadata, so a client
//! cannot pick whose bucket it spends. A forged token or none at all is
//! refused by `jwt_authn` (401) before Sluice counts it; where missing tokens
//! are allowed, they share one anonymous bucket that `x-tenant-id` cannot
//! change.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use wasm_test_harness::{repo_root, Counter, CounterOptions, EchoServer, Envoy, EnvoyOptions, Response};

const JWT_POLICY: &str = include_str!("../policies/mcp-gateway-jwt.json");
const KEY: &[u8] = include_bytes!("fixtures/jwt-test-key.pem");
const JWKS: &str = include_str!("fixtures/jwt-test-jwks.json");

/// Every path needs a valid token.
const REQUIRED: &str = "{provider_name: tenants}";
/// A valid token or none (an invalid one is still refused).
const OPTIONAL: &str = "{requires_any: {requirements: [{provider_name: tenants}, {allow_missing: {}}]}}";

struct Gateway {
    envoy: Envoy,
    _counter: Counter,
    _echo: EchoServer,
}

impl Gateway {
    /// The JWT policy with hour windows (nothing refills while the test
    /// counts) behind `jwt_authn` with the requirement `requires`.
    fn start(requires: &str) -> Gateway {
        let policy = common::patient(JWT_POLICY).replace(r#""per": "1s""#, r#""per": "1h""#);
        let jwks: Value = serde_json::from_str(JWKS).unwrap();
        let echo = EchoServer::start().unwrap();
        let counter = Counter::start(CounterOptions::default()).unwrap();
        let envoy = Envoy::start(EnvoyOptions {
            upstream_port: echo.port(),
            counter_port: counter.port(),
            policy_json: policy,
            template: repo_root().join("tests/fixtures/envoy-jwt.yaml"),
            extra_vars: vec![("JWKS".into(), jwks.to_string()), ("REQUIRES".into(), requires.into())],
            ..Default::default()
        })
        .unwrap();
        Gateway { envoy, _counter: counter, _echo: echo }
    }

    fn tools_list(&self, token: Option<&str>, extra: &[(&str, &str)]) -> Response {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = extra.to_vec();
        if let Some(b) = &bearer {
            headers.push(("authorization", b));
        }
        wasm_test_harness::get(&self.envoy.url("/api/v1/tools/list"), &headers).unwrap()
    }

    /// Statuses of `n` `GET /api/v1/tools/list` (5 per tenant per hour).
    fn statuses(&self, n: usize, token: Option<&str>, extra: &[(&str, &str)]) -> Vec<u16> {
        (0..n).map(|_| self.tools_list(token, extra).status).collect()
    }
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

/// An RS256 token from the test issuer for `tenant`.
fn token(tenant: &str) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
    let claims = json!({"iss": "https://issuer.sluice.test", "aud": "mcp-gateway", "sub": format!("user@{tenant}"), "tenant_id": tenant, "exp": exp});
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("sluice-test".into());
    encode(&header, &claims, &EncodingKey::from_rsa_pem(KEY).unwrap()).unwrap()
}

/// `token` with its payload's tenant changed and the signature kept: what a
/// client without the issuer's key can make.
fn forged(token: &str, tenant: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let payload = json!({"iss": "https://issuer.sluice.test", "aud": "mcp-gateway", "sub": "mallory", "tenant_id": tenant, "exp": 4_102_444_800u64});
    format!("{}.{}.{}", parts[0], base64url(payload.to_string().as_bytes()), parts[2])
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| n << 8 | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

#[test]
fn the_jwt_policy_is_the_default_with_a_verified_tenant() {
    let default: Value = serde_json::from_str(common::GATEWAY).unwrap();
    let jwt: Value = serde_json::from_str(JWT_POLICY).unwrap();
    assert_eq!(jwt["tenant"], json!([{"metadata": {"filter": "envoy.filters.http.jwt_authn", "path": ["jwt_payload", "tenant_id"]}}]));
    // Rules that keyed on the tenant named in the path key on the verified
    // tenant: otherwise a client could spend another tenant's quota by
    // naming it in the URL.
    let mut expected = default.clone();
    expected["tenant"] = jwt["tenant"].clone();
    for rule in expected["rules"].as_array_mut().unwrap() {
        if rule["key"] == json!([{"path_param": "tenantId"}]) {
            rule["key"] = json!(["tenant"]);
        }
    }
    assert_eq!(jwt, expected, "policies/mcp-gateway-jwt.json drifted from policies/mcp-gateway.json");
    sluice_core::policy::check(JWT_POLICY).unwrap();
}

#[test]
fn a_valid_token_counts_in_its_own_tenants_bucket() {
    let g = Gateway::start(REQUIRED);
    let (a, b) = (token("tenant-a"), token("tenant-b"));
    // Tenant A, pretending to be B by header: counted as A.
    let r = g.tools_list(Some(&a), &[("x-tenant-id", "tenant-b")]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-ratelimit-tenant"), Some("tenant-a"));
    let more = g.statuses(6, Some(&a), &[("x-tenant-id", "tenant-b")]);
    assert_eq!((count(&more, 200), count(&more, 429)), (4, 2), "{more:?}");
    // B's bucket is whole.
    let r = g.tools_list(Some(&b), &[]);
    assert_eq!(r.header("x-ratelimit-tenant"), Some("tenant-b"));
    assert_eq!(count(&g.statuses(6, Some(&b), &[]), 200), 4);
    // The tenant in the path does not choose the bucket either.
    let c = token("tenant-c");
    let cfg = |t: &str| format!("/api/v1/tenants/{t}/integrations/notion/oauth-config");
    let post = |path: &str| wasm_test_harness::request("POST", &g.envoy.url(path), &[("authorization", &format!("Bearer {c}"))], "").unwrap().status;
    assert_eq!((post(&cfg("victim")), post(&cfg("victim-2"))), (200, 429), "oauth-config-write is 1 per tenant: C's, whatever the path says");
}

#[test]
fn a_forged_or_missing_token_cannot_choose_a_bucket() {
    let g = Gateway::start(REQUIRED);
    let victim = token("tenant-v");
    for attempt in [Some(forged(&victim, "tenant-v")), Some(forged(&victim, "tenant-w")), Some("not.a.jwt".to_string()), None] {
        let statuses = g.statuses(3, attempt.as_deref(), &[("x-tenant-id", "tenant-v")]);
        assert_eq!(statuses, [401, 401, 401], "{attempt:?}");
    }
    // Nothing reached the limiter: the victim still has its 5.
    assert_eq!(count(&g.statuses(7, Some(&victim), &[]), 200), 5);
}

#[test]
fn where_tokens_are_optional_the_tokenless_share_one_bucket() {
    let g = Gateway::start(OPTIONAL);
    // No token: whatever x-tenant-id says, one anonymous bucket of 5.
    let mut anonymous = Vec::new();
    for i in 0..10 {
        let r = g.tools_list(None, &[("x-tenant-id", &format!("tenant-{i}"))]);
        assert_eq!(r.header("x-ratelimit-tenant"), None, "a header chose a tenant");
        anonymous.push(r.status);
    }
    assert_eq!(count(&anonymous, 200), 5, "{anonymous:?}");
    // A forged token is still refused, not anonymous.
    let victim = token("tenant-v");
    assert_eq!(g.tools_list(Some(&forged(&victim, "tenant-v")), &[]).status, 401);
    // A real tenant is unaffected by the anonymous traffic.
    assert_eq!(count(&g.statuses(7, Some(&victim), &[]), 200), 5);
}
