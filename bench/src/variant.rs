//! The Envoy set-ups the bench compares, each rendered from a template under
//! `bench/envoy/` and started through wasm-test-harness:
//!
//! | variant | template | filter |
//! |---|---|---|
//! | `none` | `none.yaml` | no rate-limit filter: the baseline |
//! | `native-local-ratelimit` | `native.yaml` | Envoy's `local_ratelimit` with descriptors for the default policy's local rules |
//! | `noop-wasm` | `wasm.yaml` | `bench/noop-filter`, a proxy-wasm filter that does nothing: the VM floor |
//! | `sluice-local` | `wasm.yaml` | Sluice, the default policy with its global rules made local |
//! | `sluice-local-no-headers` | `wasm.yaml` | the same with `response_headers: none` (no rate-limit headers on admitted responses) |
//! | `sluice-global` | `wasm.yaml` | Sluice, the default policy as is, counting through the counter service and a real Redis |
//! | `envoy-ratelimit-limitador-memory` | `ratelimit.yaml` | Envoy's `ratelimit` filter and `limitador-rls` in memory, for the default policy's global rules (local ones in `local_ratelimit`) |
//! | `envoy-ratelimit-limitador-redis` | `ratelimit.yaml` | the same, `limitador-rls` counting in a real Redis |

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Serialize;
use wasm_test_harness::{Counter, CounterOptions, Envoy, EnvoyOptions, Redis};

use crate::machine::Pinning;
use crate::peer::{PeerConfig, Rls};

/// One Envoy set-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    None,
    NativeLocalRatelimit,
    NoopWasm,
    SluiceLocal,
    /// `sluice-local` with `response_headers: none`: what the rate-limit
    /// headers of admitted responses cost.
    SluiceLocalNoHeaders,
    SluiceGlobal,
    /// Envoy's `ratelimit` filter calling `limitador-rls` (in memory) for
    /// the global rules, Envoy's `local_ratelimit` for the local ones.
    EnvoyRatelimitLimitadorMemory,
    /// The same with `limitador-rls` counting in Redis.
    EnvoyRatelimitLimitadorRedis,
    /// Sluice with local rules, from another build (`--before FILE`): an
    /// earlier module run interleaved with the current one.
    SluiceBefore,
    /// Sluice with the default policy's global rules, from the build given
    /// by `--before` (added when `sluice-global` runs with `--before`).
    SluiceGlobalBefore,
}

impl Variant {
    pub const ALL: [Variant; 8] = [
        Variant::None,
        Variant::NativeLocalRatelimit,
        Variant::NoopWasm,
        Variant::SluiceLocal,
        Variant::SluiceLocalNoHeaders,
        Variant::SluiceGlobal,
        Variant::EnvoyRatelimitLimitadorMemory,
        Variant::EnvoyRatelimitLimitadorRedis,
    ];
    /// The peers for global limits.
    pub const PEERS: [Variant; 2] = [Variant::EnvoyRatelimitLimitadorMemory, Variant::EnvoyRatelimitLimitadorRedis];

    pub fn name(self) -> &'static str {
        match self {
            Variant::None => "none",
            Variant::NativeLocalRatelimit => "native-local-ratelimit",
            Variant::NoopWasm => "noop-wasm",
            Variant::SluiceLocal => "sluice-local",
            Variant::SluiceLocalNoHeaders => "sluice-local-no-headers",
            Variant::SluiceGlobal => "sluice-global",
            Variant::EnvoyRatelimitLimitadorMemory => "envoy-ratelimit-limitador-memory",
            Variant::EnvoyRatelimitLimitadorRedis => "envoy-ratelimit-limitador-redis",
            Variant::SluiceBefore => "sluice-before",
            Variant::SluiceGlobalBefore => "sluice-global-before",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Variant::None => "Envoy without a rate-limit filter",
            Variant::NativeLocalRatelimit => "Envoy's local_ratelimit, descriptors for the default policy's local rules",
            Variant::NoopWasm => "a proxy-wasm filter that does nothing (the VM floor)",
            Variant::SluiceLocal => "Sluice, default policy with every rule local",
            Variant::SluiceLocalNoHeaders => "Sluice, default policy with every rule local and response_headers none",
            Variant::SluiceGlobal => "Sluice, default policy (global rules through the counter service and Redis)",
            Variant::EnvoyRatelimitLimitadorMemory => {
                "Envoy's ratelimit filter calling limitador-rls (Limitador, in memory) over gRPC for the default policy's global rules; local_ratelimit for its local ones"
            }
            Variant::EnvoyRatelimitLimitadorRedis => {
                "Envoy's ratelimit filter calling limitador-rls (Limitador, in Redis) over gRPC for the default policy's global rules; local_ratelimit for its local ones"
            }
            Variant::SluiceBefore => "Sluice with every rule local, the module given by --before",
            Variant::SluiceGlobalBefore => "Sluice, default policy (global rules), the module given by --before",
        }
    }

    /// Sluice counting through the counter service and Redis.
    pub fn counts_globally(self) -> bool {
        matches!(self, Variant::SluiceGlobal | Variant::SluiceGlobalBefore)
    }

    fn template(self) -> &'static str {
        match self {
            Variant::None => "none.yaml",
            Variant::NativeLocalRatelimit => "native.yaml",
            Variant::NoopWasm
            | Variant::SluiceLocal
            | Variant::SluiceLocalNoHeaders
            | Variant::SluiceGlobal
            | Variant::SluiceBefore
            | Variant::SluiceGlobalBefore => "wasm.yaml",
            Variant::EnvoyRatelimitLimitadorMemory | Variant::EnvoyRatelimitLimitadorRedis => "ratelimit.yaml",
        }
    }
}

/// A bench template under `bench/envoy/`.
pub fn template(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("envoy").join(name)
}

/// The default policy, `policies/mcp-gateway.json`, trusting one proxy
/// hop: the load generator plays many clients by writing each one's address
/// in `X-Forwarded-For`, as a load balancer in front of Envoy would (the
/// native variant sets `xff_num_trusted_hops: 1` for the same reason).
pub fn gateway_policy() -> anyhow::Result<String> {
    one_hop("policies/mcp-gateway.json")
}

/// The path of scenario `jsonrpc`'s REST requests.
pub const REST_PATH: &str = "/api/v1/items";

/// `policies/mcp.json` (every rule local already) trusting one proxy hop,
/// like [`gateway_policy`], plus a REST twin of each rule that a
/// `tools/call` of a tool without an integration meets (same key, same
/// limit, matching `POST` [`REST_PATH`] instead of the JSON-RPC call): the
/// policy of scenario `jsonrpc`, in which both kinds of request meet the
/// same rules, so that their difference is what reading and matching
/// JSON-RPC costs.
pub fn mcp_policy() -> anyhow::Result<String> {
    let policy = one_hop("policies/mcp.json")?;
    let mut doc: serde_json::Value = serde_json::from_str(&policy).context("policies/mcp.json is not JSON")?;
    if doc.get("global").is_some() {
        bail!("policies/mcp.json has global rules: scenario jsonrpc expects every rule local");
    }
    let rules = doc.get_mut("rules").and_then(|r| r.as_array_mut()).context("policies/mcp.json has no rules")?;
    let twins: Vec<serde_json::Value> = rules
        .iter()
        .filter(|r| {
            let jsonrpc = &r["match"]["jsonrpc"];
            let methods = jsonrpc["methods"].as_array().map(|m| m.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>()).unwrap_or_default();
            jsonrpc.is_object() && jsonrpc.get("tools").is_none() && methods.iter().any(|m| *m == "tools/call" || *m == "tools/*")
        })
        .map(|r| {
            let mut twin = r.clone();
            twin["name"] = serde_json::Value::String(format!("rest-{}", r["name"].as_str().unwrap_or_default()));
            twin["match"] = serde_json::json!({"methods": ["POST"], "paths": [{"exact": REST_PATH}]});
            twin
        })
        .collect();
    if twins.is_empty() {
        bail!("policies/mcp.json has no rule for tools/call to twin");
    }
    rules.extend(twins);
    checked(&serde_json::to_string_pretty(&doc)?)
}

/// The policy file at `relative` (from the repository root) with
/// `"trusted_hops": 0` set to 1.
fn one_hop(relative: &str) -> anyhow::Result<String> {
    let path = wasm_test_harness::repo_root().join(relative);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let one_hop = text.replacen(r#""trusted_hops": 0"#, r#""trusted_hops": 1"#, 1);
    if one_hop == text {
        bail!("{}: no \"trusted_hops\": 0 to set to 1", path.display());
    }
    Ok(one_hop)
}

/// `policy` with every rule counted locally: no `global` section, no rule
/// `scope`. Validated like `make check` does.
pub fn local_policy(policy: &str) -> anyhow::Result<String> {
    let mut doc: serde_json::Value = serde_json::from_str(policy).context("the default policy is not JSON")?;
    if !doc.is_object() {
        bail!("the default policy is not a JSON object");
    }
    sluice_core::policy::make_local(&mut doc);
    let json = serde_json::to_string_pretty(&doc)?;
    checked(&json)
}

/// `policy` with `response_headers` set to `none`: admitted responses
/// carry no rate-limit headers (a 429 still carries its own).
pub fn without_headers(policy: &str) -> anyhow::Result<String> {
    let mut doc: serde_json::Value = serde_json::from_str(policy).context("the policy is not JSON")?;
    let Some(obj) = doc.as_object_mut() else { bail!("the policy is not a JSON object") };
    obj.insert("response_headers".into(), serde_json::Value::String("none".into()));
    checked(&serde_json::to_string_pretty(&doc)?)
}

/// `json` if the filter would accept it.
pub fn checked(json: &str) -> anyhow::Result<String> {
    if let Err(e) = sluice_core::policy::check(json) {
        bail!("policy refused: {}", e.one_line());
    }
    Ok(json.to_string())
}

/// Redis and a counter service in front of it, for global rules.
pub struct Backends {
    // Dropped before Redis.
    pub counter: Counter,
    pub redis: Redis,
}

impl Backends {
    pub fn start() -> anyhow::Result<Backends> {
        let redis = Redis::start().context("starting redis-server (make redis installs it)")?;
        let counter = Counter::start(CounterOptions { redis_url: Some(redis.url()), ..Default::default() })
            .context("starting sluice-counter (cargo build --release -p sluice-counter)")?;
        Ok(Backends { counter, redis })
    }
}

/// The peers' rate-limit services (and the Redis of one), for the default
/// policy's global rules.
pub struct Peers {
    pub config: PeerConfig,
    // Dropped before Redis.
    memory: Option<Rls>,
    redis_rls: Option<Rls>,
    _redis: Option<Redis>,
}

impl Peers {
    /// Starts the services `variants` need (a Redis of its own for the Redis one).
    pub fn start(variants: &[Variant], policy: &str) -> anyhow::Result<Option<Peers>> {
        if !variants.iter().any(|v| Variant::PEERS.contains(v)) {
            return Ok(None);
        }
        let config = PeerConfig::from_policy(policy)?;
        let memory = if variants.contains(&Variant::EnvoyRatelimitLimitadorMemory) { Some(Rls::start(&config, None)?) } else { None };
        let (redis_rls, redis) = if variants.contains(&Variant::EnvoyRatelimitLimitadorRedis) {
            let redis = Redis::start().context("starting redis-server (make redis installs it)")?;
            (Some(Rls::start(&config, Some(&redis.url()))?), Some(redis))
        } else {
            (None, None)
        };
        Ok(Some(Peers { config, memory, redis_rls, _redis: redis }))
    }

    /// The service of `variant`.
    pub fn rls(&self, variant: Variant) -> Option<&Rls> {
        match variant {
            Variant::EnvoyRatelimitLimitadorMemory => self.memory.as_ref(),
            Variant::EnvoyRatelimitLimitadorRedis => self.redis_rls.as_ref(),
            _ => None,
        }
    }

    /// The `{{RLS_PORT}}` and `{{RATE_LIMITS}}` of `ratelimit.yaml` for `variant`.
    pub fn template_vars(&self, variant: Variant) -> anyhow::Result<Vec<(String, String)>> {
        let rls = self.rls(variant).with_context(|| format!("{} needs its rate-limit service", variant.name()))?;
        Ok(vec![("RLS_PORT".into(), rls.port().to_string()), ("RATE_LIMITS".into(), serde_json::to_string(&self.config.rate_limits)?)])
    }
}

/// Everything the variants of a scenario share: modules, policies, CPU
/// pinning, and Redis with the counter service when a variant needs them.
pub struct Setup {
    sluice_wasm: PathBuf,
    noop_wasm: PathBuf,
    before_wasm: Option<PathBuf>,
    pub local_policy: String,
    /// `local_policy` without rate-limit headers on admitted responses.
    no_headers_policy: String,
    pub global_policy: String,
    pinning: Option<Pinning>,
    backends: Option<Backends>,
    peers: Option<Peers>,
}

impl Setup {
    /// Checks that the modules exist and starts the backends if one of
    /// `variants` counts globally. `local` replaces the default policy made
    /// local; `before` is the module of `sluice-before`.
    pub fn new(variants: &[Variant], pinning: Option<Pinning>, local: Option<&Path>, before: Option<&Path>) -> anyhow::Result<Setup> {
        let sluice_wasm = wasm_test_harness::wasm_module();
        if !sluice_wasm.is_file() {
            bail!("{} is missing: run `make build`", sluice_wasm.display());
        }
        let noop_wasm = noop_module();
        if variants.contains(&Variant::NoopWasm) && !noop_wasm.is_file() {
            bail!("{} is missing: run `make bench` (it builds bench/noop-filter)", noop_wasm.display());
        }
        if let Some(before) = before.filter(|b| !b.is_file()) {
            bail!("--before {}: no such module", before.display());
        }
        let gateway = gateway_policy()?;
        let backends = if variants.iter().any(|v| v.counts_globally()) { Some(Backends::start()?) } else { None };
        let peers = Peers::start(variants, &gateway)?;
        let local_policy = match local {
            Some(path) => checked(&std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?)?,
            None => local_policy(&gateway)?,
        };
        Ok(Setup {
            sluice_wasm,
            noop_wasm,
            before_wasm: before.map(Path::to_path_buf),
            no_headers_policy: without_headers(&local_policy)?,
            local_policy,
            global_policy: checked(&gateway)?,
            pinning,
            backends,
            peers,
        })
    }

    /// Starts `variant` with `concurrency` workers, pinned when pinning is on.
    pub fn start(&self, variant: Variant, concurrency: u32, log_level: &str) -> anyhow::Result<Envoy> {
        self.start_from(variant, variant.template(), concurrency, log_level)
    }

    /// [`Setup::start`] from another template under `bench/envoy/`.
    pub fn start_from(&self, variant: Variant, template_name: &str, concurrency: u32, log_level: &str) -> anyhow::Result<Envoy> {
        let (wasm, policy) = match variant {
            Variant::NoopWasm => (&self.noop_wasm, "{}"),
            Variant::SluiceGlobal => (&self.sluice_wasm, self.global_policy.as_str()),
            Variant::SluiceBefore | Variant::SluiceGlobalBefore => match (&self.before_wasm, variant) {
                (Some(before), Variant::SluiceBefore) => (before, self.local_policy.as_str()),
                (Some(before), _) => (before, self.global_policy.as_str()),
                (None, _) => bail!("{} needs --before FILE", variant.name()),
            },
            Variant::SluiceLocalNoHeaders => (&self.sluice_wasm, self.no_headers_policy.as_str()),
            _ => (&self.sluice_wasm, self.local_policy.as_str()),
        };
        let counter_port = match (&self.backends, variant.counts_globally()) {
            (Some(b), true) => b.counter.port(),
            (None, true) => bail!("{} needs the counter service", variant.name()),
            _ => 0,
        };
        let extra_vars = match (&self.peers, Variant::PEERS.contains(&variant)) {
            (Some(peers), true) => peers.template_vars(variant)?,
            (None, true) => bail!("{} needs its rate-limit service", variant.name()),
            _ => Vec::new(),
        };
        let envoy = Envoy::start(EnvoyOptions {
            template: template(template_name),
            wasm: Some(wasm.clone()),
            policy_json: policy.to_string(),
            concurrency,
            counter_port,
            extra_vars,
            log_level: log_level.to_string(),
            ..Default::default()
        })
        .with_context(|| format!("starting Envoy ({})", variant.name()))?;
        if let Some(pinning) = &self.pinning {
            pinning.envoy_to_its_cpu(&envoy)?;
        }
        Ok(envoy)
    }

    pub fn backends_mut(&mut self) -> Option<&mut Backends> {
        self.backends.as_mut()
    }
}

/// The do-nothing filter: `$SLUICE_NOOP_WASM`, else its release build.
pub fn noop_module() -> PathBuf {
    match std::env::var_os("SLUICE_NOOP_WASM") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => wasm_test_harness::repo_root().join("target/wasm32-wasip1/release/sluice_noop_filter.wasm"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_made_local_is_valid_and_has_no_global_rule() {
        let local = local_policy(&gateway_policy().unwrap()).unwrap();
        assert!(!local.contains("\"global\""), "{local}");
        let policy = sluice_core::policy::Policy::from_json(&local).unwrap();
        assert!(policy.global.is_none());
        assert!(policy.rule("per-tenant").is_some());
    }

    #[test]
    fn the_no_headers_policy_is_the_local_one_without_response_headers() {
        use sluice_core::policy::{Policy, ResponseHeaders};
        let local = local_policy(&gateway_policy().unwrap()).unwrap();
        let (with, without) = (Policy::from_json(&local).unwrap(), Policy::from_json(&without_headers(&local).unwrap()).unwrap());
        assert_eq!(with.response_headers, ResponseHeaders::All);
        assert_eq!(without.response_headers, ResponseHeaders::None);
        assert_eq!(with.rules.len(), without.rules.len());
        assert!(without.global.is_none());
    }

    #[test]
    fn the_mcp_policy_trusts_one_hop_and_reads_bodies() {
        let policy = sluice_core::policy::Policy::from_json(&mcp_policy().unwrap()).unwrap();
        assert!(policy.global.is_none());
        assert_eq!(policy.trusted_hops, 1);
        assert!(policy.needs_body);
        assert!(policy.reads_body("POST", "/mcp"));
        assert!(!policy.reads_body("POST", REST_PATH));
        // Both kinds of request meet the same rules, JSON-RPC ones by the
        // body and their REST twins by the path.
        let applying = |mut req: sluice_core::request::MemoryRequest| -> Vec<String> {
            let names: Vec<String> =
                sluice_core::limiter::explain(&policy, &mut req).iter().filter(|e| e.applies()).map(|e| policy.rules[e.rule].name.clone()).collect();
            names.into_iter().map(|n| n.trim_start_matches("rest-").to_string()).collect()
        };
        let mut jsonrpc = sluice_core::request::MemoryRequest::new("POST", "/mcp").header("x-tenant-id", "t").header("content-type", "application/json");
        jsonrpc.body = Some(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}"#.to_vec());
        let rest = sluice_core::request::MemoryRequest::new("POST", REST_PATH).header("x-tenant-id", "t").header("content-type", "application/json");
        let (a, b) = (applying(jsonrpc), applying(rest));
        assert!(a.contains(&"tools-call".to_string()) && a.contains(&"tenant-in-flight".to_string()), "{a:?}");
        assert_eq!(a, b);
    }

    #[test]
    fn every_template_exists_and_names_its_placeholders() {
        for v in Variant::ALL {
            let text = std::fs::read_to_string(template(v.template())).unwrap();
            assert!(text.contains("{{PORT}}") && text.contains("{{ADMIN_PORT}}"), "{}", v.name());
        }
        let buffered = std::fs::read_to_string(template("wasm-buffered.yaml")).unwrap();
        assert!(buffered.contains("{{ECDS_DIR}}") && buffered.contains("envoy.filters.http.buffer"));
    }
}
