//! Policies: the JSON document operators write (`raw`), its validation
//! (`compile`) and the immutable runtime form the filter evaluates (`Policy`).
//!
//! A document is parsed strictly (unknown fields are errors), then every
//! semantic problem is collected with the JSON path it sits at, so one
//! refusal lists all that is wrong.

mod compile;
mod plans;
mod raw;

use std::fmt;

pub use plans::{Choice, Group, PlanSource, Takes};
pub use raw::{Algorithm, FailureMode, HeadMethod, Missing, Mode, ResponseHeaders, Scope};

use crate::duration::Span;
use crate::path::{PathMatcher, Template};

/// Fewest and most state slots a policy may ask for.
pub const MIN_SLOTS: u32 = 1_024;
pub const MAX_SLOTS: u32 = 4_194_304;

/// A validated policy, ready to evaluate.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Number of state slots in shared data (the memory bound).
    pub slots: u32,
    /// Proxies in front of Envoy whose `X-Forwarded-For` entries are trusted.
    pub trusted_hops: u32,
    /// Leading bits of an IPv6 client address that make one client key
    /// (1..=128; 64 unless the policy says otherwise).
    pub ipv6_prefix: u8,
    /// Paths no rule applies to, unless the rule names the path exactly.
    pub exempt_paths: Vec<String>,
    /// Where the tenant comes from: the first source with a value wins.
    pub tenant: Vec<KeyPart>,
    /// Where the integration (the third-party API a request is for) comes
    /// from: the first source with a value wins.
    pub integration: Vec<KeyPart>,
    /// Where a request's plan comes from, when rules have plans.
    pub plan: Option<PlanSource>,
    /// The counter service, when any rule is global.
    pub global: Option<Global>,
    pub rules: Vec<Rule>,
    /// Some rule reads the request body (decisions wait for it).
    pub needs_body: bool,
    /// A cost, key, tenant or integration comes from the body: every
    /// request's body is read. Otherwise only JSON-RPC rules read it, and
    /// only for requests they could match (see [`Policy::reads_body`]).
    pub body_always: bool,
    /// The rate-limit headers admitted responses carry.
    pub response_headers: ResponseHeaders,
    /// The instance's secret for slot addresses (not part of the document:
    /// the filter sets it from shared data, see `store::ensure_secret`).
    pub slot_secret: crate::hash::SlotSecret,
}

/// How global rules reach the counter service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Global {
    /// Envoy cluster of the counter service.
    pub cluster: String,
    /// `:authority` of callouts.
    pub authority: String,
    /// Callout timeout.
    pub timeout: Span,
    /// Envoy instances sharing the service; a failing-open global rule
    /// enforces `limit / expected_instances` locally.
    pub expected_instances: u32,
    /// Value of the `x-sluice-secret` header, when the service wants one.
    pub secret: Option<String>,
    /// The environment variable holding that value, read by the filter
    /// when it loads the policy (see [`Policy::resolve_secret`]).
    pub secret_env: Option<String>,
    /// A quiet key's request is admitted on credit instead of waiting for
    /// the counter service (see `lease`).
    pub credit: bool,
}

/// One rate-limit rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub name: String,
    /// A label grouping rules in metrics and logs (`ip`, `tenant`,
    /// `endpoint`, `integration`, ...); `default` when not given.
    pub tier: String,
    /// Stable across reloads while the name and key spec are unchanged, so
    /// the rule's buckets keep their counts: a hash of an explicit encoding
    /// of both (`compile::rule_identity`), fixed by the policy tests.
    pub identity: u64,
    /// Upper-case methods; empty means any. Includes `HEAD` when the rule
    /// lists `GET` and not `"head": "separate"` (see `head_as_get`).
    pub methods: Vec<String>,
    /// `HEAD` was added for `GET`: a key's `method` part reads it as `get`,
    /// so that HEAD and GET share the rule's bucket.
    pub head_as_get: bool,
    /// Empty means any path.
    pub paths: Vec<PathMatcher>,
    pub headers: Vec<HeaderMatch>,
    /// Integration names (lower case) the rule applies to; empty means
    /// any. The first is the rule's own name for the integration.
    pub integrations: Vec<String>,
    pub key: Vec<KeyPart>,
    pub limit: Limit,
    pub algorithm: Algorithm,
    pub shadow: bool,
    pub missing: Missing,
    pub scope: Scope,
    pub failure_mode: FailureMode,
    /// Requests over the limit wait for their turn instead of being refused.
    pub queue: Option<Queue>,
    /// An upstream 429/503 with a wait (`Retry-After`, ...) empties the
    /// key's bucket until then, for at most `max_block`.
    pub obey_upstream: bool,
    /// The longest one upstream answer can hold a key back (1 s to 5 min,
    /// 60 s unless the rule says otherwise): a client that can make the
    /// upstream answer `Retry-After: 300` for a key it names cannot shut
    /// that key out for longer.
    pub max_block: Span,
    /// Units a request costs (1 when absent).
    pub cost: Option<Cost>,
    /// Classes that take tokens in order under contention.
    pub priority: Option<Priority>,
    /// The effective limit follows the upstream's health (see `adaptive`).
    pub adaptive: Option<Adaptive>,
    /// The rule applies to JSON-RPC calls (see [`JsonRpcMatch`]).
    pub jsonrpc: Option<JsonRpcMatch>,
    /// The limit bounds requests in flight (`limit.requests` of them per
    /// key, each held for `limit.per` at most) instead of a rate; see
    /// `concurrency`.
    pub concurrent: bool,
    /// Only requests the upstream did not fail count: an answer with this
    /// status or above (Envoy's own 503/504 for an upstream reset or
    /// timeout included) gives the request's units back (`"count"`).
    pub refund_from: Option<u16>,
    /// The penalty box: a key refused this often is refused outright for a
    /// while (`"penalty"`).
    pub penalty: Option<Penalty>,
    /// One variant of a rule with plans or overrides: which requests it
    /// takes (see `plans`); `None` for a rule without them.
    pub choice: Option<Choice>,
}

/// A rule's JSON-RPC condition: the body is JSON-RPC (see `jsonrpc`) and
/// has a call whose method matches one of `methods` and, when `tools` is
/// not empty, a `tools/call` whose tool matches one of `tools` (globs, `*`
/// for any run of characters, ASCII case ignored; an empty list matches
/// any). The request costs one unit per such call. A body too large to
/// read counts as one call matching every JSON-RPC rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonRpcMatch {
    pub methods: Vec<String>,
    pub tools: Vec<String>,
}

impl JsonRpcMatch {
    /// `call` is one this rule counts.
    pub fn matches(&self, call: &crate::jsonrpc::Call) -> bool {
        let any = |globs: &[String], text: &str| globs.is_empty() || globs.iter().any(|g| crate::jsonrpc::glob(g, text));
        any(&self.methods, &call.method) && (self.tools.is_empty() || call.tool.as_deref().is_some_and(|t| any(&self.tools, t)))
    }
}

/// How an adaptive rule judges the upstream's health and moves its limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Adaptive {
    /// The effective limit never goes below this many requests per `per`.
    pub floor: u64,
    /// Overloaded when this percentile of latency is above this bound.
    pub latency: Option<(u8, Span)>,
    /// Overloaded when more than this share (in 1/1000) of answers are 5xx.
    pub errors_permille: Option<u32>,
    /// Health is judged over this sliding interval.
    pub interval: Span,
    /// A cut keeps this share (in 1/1000) of the effective limit.
    pub decrease_permille: u32,
    /// Requests added per healthy half-interval.
    pub increase: u64,
    /// Fewer answers in an interval change nothing.
    pub min_samples: u32,
}

/// Priority classes of a token-bucket rule. Class `c` (0 is the highest)
/// may only take a token while `c × reserve` tokens are left for the
/// classes above it, so under contention the higher classes get tokens
/// first and the lowest last. The top class queues for its turn (when the
/// rule queues); the others wait, without a turn, until the bucket has
/// room for their class. Against starvation, a waiting request moves up
/// one class per `aging` it has waited, so that it reaches the top class,
/// and a turn, after at most `(classes - 1) × aging`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Priority {
    /// Lower-case header name.
    pub header: String,
    /// Lower-case class names, highest first.
    pub classes: Vec<String>,
    /// Class of a request without the header or with an unknown value.
    pub default: usize,
    pub reserve: u64,
    pub aging: Span,
}

impl Priority {
    /// The class of a request carrying `value`, after waiting `waited_ns`.
    pub fn class(&self, value: Option<&str>, waited_ns: u64) -> usize {
        let named = value.and_then(|v| self.classes.iter().position(|c| c.eq_ignore_ascii_case(v.trim()))).unwrap_or(self.default);
        let steps = waited_ns / self.aging.nonzero_nanos();
        named.saturating_sub(usize::try_from(steps).unwrap_or(usize::MAX))
    }
}

/// Where a rule reads what a request costs. A missing header or body field
/// costs `default`; an unreadable value (not a whole number, negative,
/// above `max`; no JSON body at all, or one too large to read) costs `max`,
/// so that a client cannot lower its bill by sending garbage.
///
/// A cost read from the response charges `default` (the policy's
/// `estimate`) up front and is settled to the response's figure when the
/// response ends (`flow::settle`); a figure that is missing, unreadable or
/// above `max` leaves the estimate standing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cost {
    pub source: CostSource,
    pub default: u64,
    pub max: u64,
}

impl Cost {
    /// The cost is known only from the response.
    pub fn from_response(&self) -> bool {
        matches!(self.source, CostSource::ResponseHeader(_) | CostSource::ResponseBody(_))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CostSource {
    Header(String),
    /// A field of a JSON body, as a path of object keys.
    Body(Vec<String>),
    /// A header of the response (lower case).
    ResponseHeader(String),
    /// A field of a JSON response body, as a path of object keys.
    ResponseBody(Vec<String>),
}

/// How a rule holds requests over its limit: each takes its turn (FIFO per
/// key, as turns are reserved in the bucket) if that comes within
/// `max_wait` and at most `max_queued` are waiting for the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Queue {
    pub max_wait: Span,
    pub max_queued: u64,
}

/// A key refused `after` times within `within` is refused outright for
/// `block`, at every instance for a global rule; its 429 names `tier`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Penalty {
    pub after: u64,
    pub within: Span,
    pub block: Span,
    pub tier: String,
}

impl Penalty {
    /// The key's strikes, as a token bucket: `after` at once, coming back
    /// one every `within / after` (so about `after` refusals within
    /// `within` empty it).
    pub fn strikes(&self) -> Limit {
        Limit { requests: self.after, per: self.within, burst: self.after, calendar: None }
    }
}

/// `requests` per `per`, with bursts of at most `burst` (token bucket only;
/// the windows allow `requests` per window).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub requests: u64,
    pub per: Span,
    pub burst: u64,
    /// Calendar days or months instead of windows of `per` (which is then
    /// the longest such window); see `calendar`.
    pub calendar: Option<crate::calendar::Calendar>,
}

/// A header condition of a rule's match. Names are lower case; values
/// compare without regard to ASCII case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderMatch {
    pub name: String,
    pub test: HeaderTest,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderTest {
    Exact(String),
    Prefix(String),
    Present(bool),
}

/// Where one part of a key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyPart {
    ClientIp,
    Method,
    Authority,
    /// The normalised path.
    Path,
    /// The policy's tenant.
    Tenant,
    /// The policy's integration; for a rule that matches integrations, the
    /// first name it lists (so every spelling of it shares a bucket).
    Integration,
    Header(String),
    /// A field of a JSON request body, as a path of object keys.
    Body(Vec<String>),
    /// A parameter of the template the rule matched.
    PathParam(String),
    /// A parameter of a template of its own (used where the rule matches
    /// other paths too, as for the policy-wide tenant).
    TemplateParam {
        name: String,
        template: Template,
    },
    Query(String),
    /// An Envoy attribute path; dynamic metadata is
    /// `["metadata", "filter_metadata", <filter>, ...]`.
    Property(Vec<String>),
    Const(String),
    /// The JSON-RPC method of the call the rule counts (the first such
    /// call of a batch; for a rule without a JSON-RPC condition, the
    /// body's first call).
    JsonRpcMethod,
    /// The tool of that call, when it is a `tools/call`.
    Tool,
    /// The request's plan (see `plans`): ends the key of a plan's variant
    /// of a rule.
    Plan,
}

/// Everything wrong with a policy document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    pub problems: Vec<Problem>,
}

/// One problem, at a JSON path such as `rules[3].limit.per`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// One problem per line.
impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyError {}

impl PolicyError {
    /// All problems on one line, for a single log entry.
    pub fn one_line(&self) -> String {
        self.problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    }
}

impl Policy {
    /// Rule `i`'s name for a message, `?` for an index the policy does not
    /// have (which the core never hands out).
    pub fn rule_name(&self, i: usize) -> &str {
        self.rules.get(i).map_or("?", |r| r.name.as_str())
    }

    /// Parses and validates a policy document.
    pub fn from_json(json: &str) -> Result<Policy, PolicyError> {
        compile::compile(json)
    }

    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// The decision on a request with this method and path (as sent) waits
    /// for its body: some rule reads every body, or a JSON-RPC rule could
    /// match it (its methods and paths do; headers and integrations are
    /// not looked at, so this may read a body in vain, never miss one).
    pub fn reads_body(&self, method: &str, path: &str) -> bool {
        if self.body_always {
            return true;
        }
        if !self.needs_body {
            return false;
        }
        let path = crate::path::normalize(path);
        self.rules.iter().filter(|r| r.jsonrpc.is_some()).any(|r| {
            (r.methods.is_empty() || r.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
                && (r.paths.is_empty() || r.paths.iter().any(|m| m.matches(&path).is_some()))
        })
    }
}

/// Validates a policy document (the `make check` entry point).
pub fn check(json: &str) -> Result<(), PolicyError> {
    Policy::from_json(json).map(|_| ())
}

/// A policy document (parsed JSON) with every rule counted locally: no
/// `global` section, no rule `scope`. The benchmarks' `sluice-local` and
/// the core's examples compare the same policy both ways with it.
pub fn make_local(doc: &mut serde_json::Value) {
    let Some(root) = doc.as_object_mut() else { return };
    root.remove("global");
    for rule in root.get_mut("rules").and_then(|r| r.as_array_mut()).into_iter().flatten() {
        if let Some(rule) = rule.as_object_mut() {
            rule.remove("scope");
        }
    }
}

#[cfg(test)]
mod tests;
