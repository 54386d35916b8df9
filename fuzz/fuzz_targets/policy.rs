//! The policy parser and compiler on any document; a policy that compiles
//! then decides a few requests (against an in-memory store, at a fixed
//! time and at the end of time) and answers them, so that whatever
//! figures an operator may write are carried through the decision and
//! the reply arithmetic.
#![no_main]

extern crate sluice_fuzz;

use libfuzzer_sys::fuzz_target;
use sluice_core::limiter::{decide, explain, Ctx};
use sluice_core::policy::Policy;
use sluice_core::request::MemoryRequest;
use sluice_core::response::{admitted_headers, denial, unavailable};
use sluice_core::store::MemoryStore;

const S: u64 = 1_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(json) = std::str::from_utf8(data) else {
        return;
    };
    let policy = match Policy::from_json(json) {
        Ok(p) => p,
        Err(e) => {
            assert!(!e.problems.is_empty(), "a refusal names a problem");
            let _ = e.to_string();
            return;
        }
    };
    let store = MemoryStore::default();
    let requests = [
        MemoryRequest::new(
            "GET",
            "/api/v1/tenants/acme/integrations/notion/oauth-config",
        )
        .header("x-tenant-id", "acme")
        .header("x-integration", "notion")
        .header("x-priority", "low")
        .header("x-cost", "7")
        .header("x-forwarded-for", "203.0.113.7, 10.0.0.1"),
        MemoryRequest::new("POST", "/api/v1/tools/invoke?tenant=a&x=%41"),
    ];
    for now in [1_763_382_885 * S, u64::MAX - 1] {
        for req in &requests {
            for degraded in [false, true] {
                let d = decide(
                    &policy,
                    &mut req.clone(),
                    &store,
                    Ctx {
                        degraded,
                        ..Ctx::at(now)
                    },
                );
                let _ = denial(&policy, &d, now, now);
                let _ = unavailable(&policy, &d);
                let _ = admitted_headers(&policy, &d, now);
            }
            let _ = explain(&policy, &mut req.clone());
        }
    }
});
