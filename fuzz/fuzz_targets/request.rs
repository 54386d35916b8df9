//! A request's headers as Envoy hands them over (`HeaderPairs::parse` on
//! any bytes), and the request attributes the rules read from them
//! (method, path, query, headers, client IP, tenant, integration, costs,
//! properties, body): each header map is decided against the default
//! gateway policy and a policy that reads every kind of attribute, then
//! answered.
#![no_main]

extern crate sluice_fuzz;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sluice_core::limiter::{decide, explain, Ctx};
use sluice_core::policy::Policy;
use sluice_core::request::{HeaderPairs, Request};
use sluice_core::response::{admitted_headers, denial};
use sluice_core::store::MemoryStore;

const S: u64 = 1_000_000_000;
const GATEWAY: &str = include_str!("../../policies/mcp-gateway.json");
/// Every key part, header test, cost source and algorithm once.
const EVERY_ATTRIBUTE: &str = r#"{
  "slots": 1024, "trusted_hops": 2, "read_body": true,
  "tenant": [{"query": "tenant"}, {"body": "tenant.id"}, {"header": "x-tenant-id"}],
  "integration": [{"header": "x-integration"}, "authority"],
  "rules": [
    {"name": "by-query", "key": [{"query": "q"}, "method", "path"], "algorithm": "fixed_window",
     "match": {"headers": [{"name": "x-a", "exact": "yes"}, {"name": "x-b", "prefix": "pre"}, {"name": "x-c", "present": false}]},
     "limit": {"requests": 2, "per": "1s"}},
    {"name": "by-body", "key": [{"body": "user.name"}, "client_ip"], "algorithm": "sliding_window",
     "cost": {"body": "n", "default": 1, "max": 40}, "limit": {"requests": 40, "per": "1m"}},
    {"name": "by-header-cost", "key": [{"header": "x-user"}, "authority", "integration"],
     "cost": {"header": "x-cost", "max": 300}, "limit": {"requests": 100, "per": "1s", "burst": 300}},
    {"name": "by-property", "key": [{"property": ["source", "address"]}, {"const": "k"}, "tenant"], "missing": "skip",
     "match": {"paths": [{"template": "/t/{id}/**"}, {"prefix": "/p"}]},
     "priority": {"header": "x-priority", "classes": ["high", "low"], "reserve": 2, "aging": "1s"},
     "queue": {"max_wait": "2s"}, "limit": {"requests": 5, "per": "1s"}},
    {"name": "by-param", "key": [{"path_param": "id"}], "mode": "shadow",
     "match": {"methods": ["GET", "POST"], "paths": [{"template": "/t/{id}/x"}]},
     "limit": {"requests": 1, "per": "1h"}}
  ]
}"#;

fn policies() -> &'static [Policy; 2] {
    static POLICIES: OnceLock<[Policy; 2]> = OnceLock::new();
    POLICIES.get_or_init(|| {
        let load = |json| Policy::from_json(json).unwrap_or_else(|e| panic!("fuzz policy: {e}"));
        [load(GATEWAY), load(EVERY_ATTRIBUTE)]
    })
}

/// A request read from a header map, as the filter reads Envoy's;
/// properties are headers named by their dotted path, the body is the
/// value of `:body`.
struct Headers(HeaderPairs);

impl Request for Headers {
    fn method(&mut self) -> Option<String> {
        self.0.get(":method").map(str::to_string)
    }
    fn path(&mut self) -> Option<String> {
        self.0.get(":path").map(str::to_string)
    }
    fn authority(&mut self) -> Option<String> {
        self.0.get(":authority").map(str::to_string)
    }
    fn header(&mut self, name: &str) -> Option<String> {
        self.0.get(name).map(str::to_string)
    }
    fn property(&mut self, path: &[String]) -> Option<Vec<u8>> {
        self.0.get(&path.join(".")).map(|v| v.as_bytes().to_vec())
    }
    fn body(&mut self) -> Option<&[u8]> {
        self.0.get(":body").map(str::as_bytes)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, map)) = data.split_first() else {
        return;
    };
    let headers = HeaderPairs::parse(map.to_vec());
    // Never more pairs than 8-byte size entries in the buffer.
    assert!(headers.len() <= map.len() / 8);
    for name in [":method", ":path", "x-tenant-id", "X-Forwarded-For", ""] {
        if let Some(v) = headers.get(name) {
            assert!(v.len() < map.len());
        }
    }
    let now = 1_763_382_885 * S + u64::from(flags) * 7_919;
    let ctx = Ctx {
        degraded: flags & 1 != 0,
        may_wait: flags & 2 != 0,
        waited_ns: u64::from(flags) * S / 16,
        ..Ctx::at(now)
    };
    for policy in policies() {
        let store = MemoryStore::default();
        let mut req = Headers(headers.clone());
        // With flag 8, twice: the second decision meets the first's state.
        for _ in 0..1 + (flags >> 3 & 1) {
            let d = decide(policy, &mut req, &store, ctx);
            let _ = denial(policy, &d, now, u64::from(flags));
            let _ = admitted_headers(policy, &d, now);
        }
        if flags & 4 != 0 {
            let _ = explain(policy, &mut req);
        }
    }
});
