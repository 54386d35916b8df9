//! The policy's `global` section (the counter service's cluster, authority,
//! timeout, expected instances and secret), and reading the secret from the
//! Wasm VM's environment once the policy is compiled.

use super::Compiler;
use crate::duration::Span;
use crate::policy::raw::RawGlobal;
use crate::policy::{Global, Policy};

impl Compiler {
    pub(super) fn global(&mut self, raw: RawGlobal) -> Option<Global> {
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
}

/// A value the counter service can compare and Envoy can send as a header.
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
