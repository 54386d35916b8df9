//! The policy document exactly as written: serde types that reject unknown
//! fields. Nothing here is checked beyond JSON shape; `compile` turns a
//! `RawPolicy` into the validated runtime `Policy`.

use serde::Deserialize;

fn default_slots() -> i64 {
    65_536
}

fn default_ipv6_prefix() -> i64 {
    i64::from(crate::client_ip::DEFAULT_IPV6_PREFIX)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    #[serde(default = "default_slots")]
    pub slots: i64,
    #[serde(default)]
    pub trusted_hops: i64,
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: i64,
    #[serde(default)]
    pub exempt_paths: Vec<String>,
    #[serde(default)]
    pub tenant: Vec<RawKeyPart>,
    pub integration: Option<Vec<RawKeyPart>>,
    /// Where a request's plan comes from (see `RawPlan`).
    pub plan: Option<RawPlan>,
    #[serde(default)]
    pub mode: Mode,
    pub global: Option<RawGlobal>,
    #[serde(default)]
    pub read_body: bool,
    #[serde(default)]
    pub response_headers: ResponseHeaders,
    pub rules: Vec<RawRule>,
}

fn default_cluster() -> String {
    "sluice_counter".into()
}
fn default_authority() -> String {
    "sluice-counter".into()
}
fn default_timeout() -> String {
    "50ms".into()
}

fn default_credit() -> bool {
    true
}

fn default_instances() -> i64 {
    1
}

/// How global rules reach the counter service.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGlobal {
    #[serde(default = "default_cluster")]
    pub cluster: String,
    #[serde(default = "default_authority")]
    pub authority: String,
    #[serde(default = "default_timeout")]
    pub timeout: String,
    #[serde(default = "default_instances")]
    pub expected_instances: i64,
    pub secret: Option<String>,
    pub secret_env: Option<String>,
    #[serde(default = "default_credit")]
    pub credit: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: String,
    pub tier: Option<String>,
    #[serde(rename = "match", default)]
    pub matcher: RawMatch,
    #[serde(default)]
    pub key: Vec<RawKeyPart>,
    pub limit: RawLimit,
    /// `token_bucket` unless given (`fixed_window` for a calendar limit).
    pub algorithm: Option<Algorithm>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub missing: Missing,
    #[serde(default)]
    pub scope: Scope,
    #[serde(default)]
    pub failure_mode: FailureMode,
    pub queue: Option<RawQueue>,
    #[serde(default)]
    pub obey_upstream: bool,
    pub max_block: Option<String>,
    pub cost: Option<RawCost>,
    pub priority: Option<RawPriority>,
    pub adaptive: Option<RawAdaptive>,
    pub count: Option<RawCount>,
    pub penalty: Option<RawPenalty>,
    /// Limits of their own for some plans (see `RawPlans`).
    pub plans: Option<RawPlans>,
    /// Limits of their own for some values of a key part.
    #[serde(default)]
    pub overrides: Vec<RawOverride>,
}

/// Refuse a key outright for `block` after `after` refusals within
/// `within`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPenalty {
    pub after: i64,
    pub within: String,
    pub block: String,
    pub tier: Option<String>,
}

/// Which requests a rule counts: `"all"` (the default), `"success"` (the
/// upstream did not fail: answers from 500 on give their units back), or
/// `{"success_below": N}` (answers from N on give them back).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum RawCount {
    Word(String),
    Below {
        #[serde(rename = "success_below")]
        below: i64,
    },
}

/// Let the effective limit follow the upstream's health.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdaptive {
    pub floor: Option<i64>,
    pub latency: Option<RawLatency>,
    pub errors: Option<f64>,
    pub interval: Option<String>,
    pub decrease: Option<f64>,
    pub increase: Option<i64>,
    pub min_samples: Option<i64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLatency {
    pub percentile: i64,
    pub above: String,
}

/// Classes of requests, highest first, read from a header.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPriority {
    pub header: String,
    pub classes: Vec<String>,
    pub default: Option<String>,
    pub reserve: Option<i64>,
    pub aging: Option<String>,
}

/// Units a request costs: from a request header or JSON body field, or
/// from the response's (an `estimate` charged up front, settled to it).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCost {
    pub header: Option<String>,
    pub body: Option<String>,
    pub response_header: Option<String>,
    pub response_body: Option<String>,
    pub default: Option<i64>,
    pub estimate: Option<i64>,
    pub max: Option<i64>,
}

/// Hold requests over the limit for up to `max_wait` instead of refusing.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    pub max_wait: String,
    pub max_queued: Option<i64>,
}

/// Where a rule counts: in this Envoy instance, or across every instance
/// sharing the counter service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    #[default]
    Local,
    Global,
}

/// What a global rule does while the counter service cannot be reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Keep enforcing locally at limit / expected instances.
    #[default]
    Open,
    /// Answer 503.
    Closed,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub head: HeadMethod,
    #[serde(default)]
    pub paths: Vec<RawPath>,
    #[serde(default)]
    pub headers: Vec<RawHeader>,
    #[serde(default)]
    pub integration: Vec<String>,
    /// JSON-RPC calls in the body (MCP): methods and tools, as globs.
    pub jsonrpc: Option<RawJsonRpc>,
}

/// `{"methods": ["tools/call"], "tools": ["notion*"]}`: the rule applies to
/// a JSON-RPC body with a call whose method (and, when `tools` is given,
/// whose `tools/call` tool) matches one of the globs; empty lists match
/// any.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJsonRpc {
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub tools: Vec<String>,
}

/// Whether a rule whose methods list `GET` also covers `HEAD`, which
/// most servers answer with the GET handler (as nginx's `limit_except GET`
/// does).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadMethod {
    /// `HEAD` counts as `GET`: it matches, and keys as `get`.
    #[default]
    WithGet,
    /// `HEAD` matches only where listed.
    Separate,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RawPath {
    Exact(String),
    Prefix(String),
    Template(String),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeader {
    pub name: String,
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub present: Option<bool>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    pub requests: Option<i64>,
    pub per: Option<String>,
    pub burst: Option<i64>,
    /// Requests in flight per key, instead of a rate (see `concurrency`).
    pub concurrent: Option<i64>,
    /// How long a concurrency unit is held at most (5m unless given).
    pub max_hold: Option<String>,
    /// `day` or `month`: calendar windows instead of `per` (see `calendar`).
    pub calendar: Option<String>,
    /// Where calendar days begin: `+02:00` (UTC unless given).
    pub utc_offset: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    #[default]
    TokenBucket,
    FixedWindow,
    SlidingWindow,
}

/// The rate-limit headers of admitted responses (429s always carry them all).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResponseHeaders {
    /// `X-RateLimit-Limit`, `-Remaining`, `-Reset`, `-Tenant`, `RateLimit-Policy` and `RateLimit`.
    #[default]
    All,
    /// The `X-RateLimit-*` headers only.
    XRatelimit,
    /// The IETF pair only: `RateLimit-Policy` and `RateLimit`.
    Ietf,
    /// None.
    None,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Enforce,
    Shadow,
}

/// What a rule does when a request lacks a value its key needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missing {
    /// All such requests share one bucket (the secure default).
    #[default]
    Shared,
    /// The rule does not apply to such requests.
    Skip,
}

/// One part of a rule's key. Unit variants are written as strings
/// (`"client_ip"`), the others as one-field objects (`{"header": "x"}`).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawKeyPart {
    ClientIp,
    Method,
    Authority,
    Path,
    Tenant,
    Integration,
    Header(String),
    Body(String),
    PathParam(RawPathParam),
    Query(String),
    Property(Vec<String>),
    Metadata(RawMetadata),
    Const(String),
    /// The JSON-RPC method of the call the rule matched.
    JsonrpcMethod,
    /// The tool of the `tools/call` the rule matched.
    Tool,
    /// The MCP session (`Mcp-Session-Id`).
    McpSession,
}

/// `{"path_param": "tenantId"}` takes the parameter from the template the
/// rule matched; `{"path_param": {"name": .., "template": ..}}` from its own.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum RawPathParam {
    Name(String),
    WithTemplate(RawTemplateParam),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTemplateParam {
    pub name: String,
    pub template: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetadata {
    pub filter: String,
    pub path: Vec<String>,
}

/// `{"from": [{"header": "x-plan"}], "names": ["free", "pro"], "default":
/// "free"}`: where a request's plan comes from (key sources, the first
/// with a value wins), the plans, and the plan of a request that names
/// none or an unknown one (the first name unless given).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlan {
    pub from: Vec<RawKeyPart>,
    pub names: Vec<String>,
    pub default: Option<String>,
}

/// `{"pro": {"requests": 50, "per": "1s"}}`: a rule's limit for requests
/// on these plans, in the order written, duplicates kept (for validation
/// to name them; a JSON object would silently keep the last).
#[derive(Clone, Debug, Default)]
pub struct RawPlans(pub Vec<(String, RawLimit)>);

impl<'de> Deserialize<'de> for RawPlans {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = RawPlans;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of plan names and their limits")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<RawPlans, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, RawLimit>()? {
                    out.push(entry);
                }
                Ok(RawPlans(out))
            }
        }
        d.deserialize_map(Entries)
    }
}

/// `{"value": "acme", "limit": {...}}`: a rule's limit for requests whose
/// key part `on` (the key's only part unless given) has this value.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOverride {
    pub on: Option<RawKeyPart>,
    pub value: String,
    pub limit: RawLimit,
}
