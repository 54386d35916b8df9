//! What the examples share: the default policy and the bench's clients.

use sluice_core::policy::Policy;
use sluice_core::request::MemoryRequest;

/// `policies/mcp-gateway.json`, as is (`global`) or with every rule made
/// local (as `sluice-bench`'s `sluice-local`), trusting `trusted_hops`
/// proxies when given.
pub fn default_policy(global: bool, trusted_hops: Option<u64>) -> Result<Policy, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/mcp-gateway.json");
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let root = doc.as_object_mut().ok_or("the policy is not an object")?;
    if let Some(hops) = trusted_hops {
        root.insert("trusted_hops".into(), hops.into());
    }
    if !global {
        sluice_core::policy::make_local(&mut doc);
    }
    Policy::from_json(&doc.to_string()).map_err(|e| e.to_string())
}

/// Client `k` of the bench's overhead mix: `GET /api/v1/items` with its
/// own address and tenant.
pub fn client(k: u64) -> MemoryRequest {
    MemoryRequest::new("GET", "/api/v1/items")
        .header("x-forwarded-for", &format!("10.0.{}.{}", k / 256, k % 256))
        .header("x-tenant-id", &format!("tenant-{k}"))
        .from_address("127.0.0.1:40000")
}
