//! The ECDS resource that delivers the Sluice filter to Envoy.
//!
//! Envoy watches a directory and reloads `sluice.json` when a file is renamed
//! onto it, so [`write_ecds`] always writes a temporary sibling first and then
//! renames it into place; in-place edits would go unnoticed.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;

/// Name of the ECDS resource file inside the watched directory.
pub const ECDS_FILE: &str = "sluice.json";

/// The environment variable that carries the counter service's secret to
/// the service and, through Envoy (`vm_config.environment_variables`), to
/// the filter.
pub const COUNTER_SECRET_ENV: &str = "SLUICE_COUNTER_SECRET";

/// The discovery response carrying the Wasm filter config for `wasm` with
/// `policy_json` as its plugin configuration (a JSON string value).
pub fn ecds_resource(wasm: &Path, policy_json: &str) -> String {
    let wasm: PathBuf = std::path::absolute(wasm).unwrap_or_else(|_| wasm.to_path_buf());
    json!({
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            "name": "sluice",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": "sluice",
                    "root_id": "sluice",
                    "vm_config": {
                        "vm_id": "sluice",
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": { "local": { "filename": wasm.to_string_lossy() } },
                        // The counter service's secret reaches the filter
                        // from Envoy's environment, for a policy whose
                        // `global.secret_env` names it (docs/global.md).
                        "environment_variables": { "host_env_keys": [COUNTER_SECRET_ENV] }
                    },
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": policy_json
                    },
                    "failure_policy": "FAIL_CLOSED",
                    // Pausing on request headers must still deliver the body
                    // (rules whose cost is in a JSON body read it first).
                    "allow_on_headers_stop_iteration": true
                }
            }
        }]
    })
    .to_string()
}

/// Atomically replaces `dir/sluice.json` with the resource for `wasm` and `policy_json`.
pub fn write_ecds(dir: &Path, wasm: &Path, policy_json: &str) -> anyhow::Result<()> {
    let body = ecds_resource(wasm, policy_json);
    let mut tmp = tempfile::Builder::new()
        .prefix(".sluice.json.tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(body.as_bytes())?;
    tmp.as_file().sync_all()?;
    let target = dir.join(ECDS_FILE);
    tmp.persist(&target)
        .with_context(|| format!("renaming into {}", target.display()))?;
    Ok(())
}
