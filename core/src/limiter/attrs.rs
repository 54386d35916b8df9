//! Request attributes as the rules see them, fetched once per request and
//! reused by every rule: method, normalised path, headers, client IP,
//! tenant, query, properties, body; plus each rule's match, key and cost.

use crate::client_ip::{forwarded_client, peer_client};
use crate::hash::Keyed;
use crate::jsonrpc::{self, Call, Message};
use crate::path::{hex_byte, normalize, starts_with_ignore_case, Params};
use crate::policy::{CostSource, HeaderTest, KeyPart, Missing, Policy, Rule, Scope};
use crate::request::Request;

/// The body as JSON-RPC, read once for every rule that asks.
enum Rpc {
    /// No body, or one that is not JSON-RPC.
    Not,
    /// A body too large to read: counts as one call of any method.
    TooLarge,
    Message(Message),
}

/// Request attributes fetched once and reused by every rule.
pub(super) struct Attrs<'r> {
    req: &'r mut dyn Request,
    method: String,
    raw_path: String,
    pub(super) path: String,
    headers: Vec<(String, Option<String>)>,
    client_ip: Option<Option<String>>,
    tenant: Option<Option<String>>,
    integration: Option<Option<String>>,
    body: Option<Option<serde_json::Value>>,
    rpc: Option<Rpc>,
    /// The call the rule being looked at counts (its key's method and
    /// tool): set by `applies`.
    call: usize,
}

impl<'r> Attrs<'r> {
    pub(super) fn new(req: &'r mut dyn Request) -> Attrs<'r> {
        let mut method = req.method().unwrap_or_default();
        method.make_ascii_uppercase();
        let raw_path = req.path().unwrap_or_default();
        let path = normalize(&raw_path);
        Attrs { req, method, raw_path, path, headers: Vec::new(), client_ip: None, tenant: None, integration: None, body: None, rpc: None, call: 0 }
    }

    /// The method, upper case.
    pub(super) fn method(&self) -> &str {
        &self.method
    }

    /// Header `name`, read from the request once and borrowed after.
    pub(super) fn header(&mut self, name: &str) -> Option<&str> {
        let at = match self.headers.iter().position(|(n, _)| n == name) {
            Some(at) => at,
            None => {
                let v = self.req.header(name);
                self.headers.push((name.to_string(), v));
                self.headers.len().saturating_sub(1)
            }
        };
        self.headers.get(at).and_then(|(_, v)| v.as_deref())
    }

    /// The client's address as keys hold it, resolved once and borrowed.
    fn client_ip(&mut self, trusted_hops: u32, ipv6_prefix: u8) -> Option<&str> {
        if self.client_ip.is_none() {
            let xff = if trusted_hops > 0 { self.header("x-forwarded-for") } else { None };
            let from_header = forwarded_client(xff, trusted_hops, ipv6_prefix);
            // The peer is read (a hostcall in Envoy) only when the header
            // does not name the client.
            let ip = from_header.or_else(|| {
                self.req
                    .property(&["source".to_string(), "address".to_string()])
                    .and_then(|b| String::from_utf8(b).ok())
                    .and_then(|a| peer_client(&a, ipv6_prefix))
            });
            self.client_ip = Some(ip);
        }
        self.client_ip.as_ref().and_then(Option::as_deref)
    }

    fn query(&self, name: &str) -> Option<String> {
        let query = self.raw_path.split_once('?')?.1;
        let query = query.split('#').next().unwrap_or("");
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
    }

    /// The value of one key part, as bytes to hash.
    pub(super) fn part(&mut self, policy: &Policy, part: &KeyPart, params: &Params) -> Option<Vec<u8>> {
        let text = match part {
            KeyPart::ClientIp => self.client_ip(policy.trusted_hops, policy.ipv6_prefix).map(str::to_string),
            KeyPart::Method => Some(self.method.clone()),
            KeyPart::Authority => self.req.authority(),
            KeyPart::Path => Some(self.path.clone()),
            KeyPart::Tenant => self.tenant(policy),
            KeyPart::Integration => self.integration(policy),
            KeyPart::Header(h) => self.header(h).map(str::to_string),
            KeyPart::Body(path) => match self.json_body().and_then(|json| path.iter().try_fold(json, |v, k| v.get(k))) {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                Some(serde_json::Value::Bool(b)) => Some(b.to_string()),
                // Absent, null, an object or a list: no value.
                _ => None,
            },
            KeyPart::PathParam(name) => params.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()),
            KeyPart::TemplateParam { name, template } => template.matches(&self.path).and_then(|ps| ps.into_iter().find(|(n, _)| n == name).map(|(_, v)| v)),
            KeyPart::Query(q) => self.query(q),
            KeyPart::Property(p) => return self.req.property(p).filter(|v| !v.is_empty()),
            KeyPart::Const(c) => Some(c.clone()),
            KeyPart::JsonRpcMethod => self.current_call().map(|c| c.method.clone()),
            KeyPart::Tool => self.current_call().and_then(|c| c.tool.clone()),
            KeyPart::Plan => super::plans::plan_name(self, policy),
        };
        text.filter(|t| !t.is_empty()).map(String::into_bytes)
    }

    /// Units this request costs under `rule`: its cost (see
    /// `policy::Cost`) for each JSON-RPC call the rule counts.
    pub(super) fn cost(&mut self, rule: &Rule) -> u64 {
        // The body is read as JSON-RPC only for a JSON-RPC rule.
        let calls = match rule.jsonrpc.as_ref().map(|j| (j, self.rpc())) {
            Some((j, Rpc::Message(m))) => m.calls.iter().filter(|c| j.matches(c)).count() as u64,
            _ => 1,
        };
        self.unit_cost(rule).saturating_mul(calls)
    }

    /// The body as JSON-RPC, parsed on first use.
    fn rpc(&mut self) -> &Rpc {
        if self.rpc.is_none() {
            let rpc = match self.req.body().map(jsonrpc::parse) {
                Some(m) => m.map_or(Rpc::Not, Rpc::Message),
                None if self.req.body_too_large() => Rpc::TooLarge,
                None => Rpc::Not,
            };
            self.rpc = Some(rpc);
        }
        self.rpc.as_ref().unwrap_or(&Rpc::Not)
    }

    fn current_call(&mut self) -> Option<&Call> {
        let at = self.call;
        match self.rpc() {
            Rpc::Message(m) => m.calls.get(at),
            _ => None,
        }
    }

    /// The body's JSON-RPC message, for the answer to a refused request.
    pub(super) fn message(&mut self) -> Option<Message> {
        match self.rpc() {
            Rpc::Message(m) => Some(m.clone()),
            _ => None,
        }
    }

    /// `Mcp-Method`/`Mcp-Name` disagree with a body already read as
    /// JSON-RPC (the body is what counts).
    pub(super) fn mcp_headers_disagree(&mut self) -> bool {
        if !matches!(self.rpc, Some(Rpc::Message(_))) {
            return false;
        }
        let method = self.header("mcp-method").map(str::to_string);
        let name = self.header("mcp-name").map(str::to_string);
        match &self.rpc {
            Some(Rpc::Message(m)) => jsonrpc::headers_disagree(m, method.as_deref(), name.as_deref()),
            _ => false,
        }
    }

    /// Units this request costs under `rule`, per call (see `policy::Cost`).
    fn unit_cost(&mut self, rule: &Rule) -> u64 {
        let Some(cost) = rule.cost.as_ref() else { return 1 };
        let value = match &cost.source {
            // The estimate, settled when the response tells.
            CostSource::ResponseHeader(_) | CostSource::ResponseBody(_) => return cost.default,
            CostSource::Header(h) => self.header(h).map(|v| serde_json::Value::String(v.trim().to_string())),
            CostSource::Body(path) => {
                match self.json_body() {
                    // No JSON body: none sent, too large to read, or not JSON.
                    None => return cost.max,
                    Some(json) => path.iter().try_fold(json, |v, k| v.get(k)).cloned(),
                }
            }
        };
        let n = match value {
            None => return cost.default,
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.parse::<u64>().ok(),
            Some(_) => None,
        };
        n.filter(|n| *n <= cost.max).unwrap_or(cost.max)
    }

    /// The request body as JSON, when it was read and is JSON.
    fn json_body(&mut self) -> Option<&serde_json::Value> {
        if self.body.is_none() {
            self.body = Some(self.req.body().and_then(|b| serde_json::from_slice(b).ok()));
        }
        self.body.as_ref().and_then(Option::as_ref)
    }

    /// The request's integration (lower case), from the policy's sources.
    pub(super) fn integration(&mut self, policy: &Policy) -> Option<String> {
        self.integration_ref(policy).map(str::to_string)
    }

    /// The request's integration, resolved once and borrowed (every rule
    /// that matches integrations asks).
    fn integration_ref(&mut self, policy: &Policy) -> Option<&str> {
        if self.integration.is_none() {
            let found = self.first_value(policy, &policy.integration).map(|mut v| {
                if v.trim().len() != v.len() {
                    v = v.trim().to_string();
                }
                v.make_ascii_lowercase();
                v
            });
            self.integration = Some(found);
        }
        self.integration.as_ref().and_then(Option::as_deref)
    }

    pub(super) fn tenant(&mut self, policy: &Policy) -> Option<String> {
        self.tenant_ref(policy).map(str::to_string)
    }

    /// The request's tenant (lower case), resolved once and borrowed.
    fn tenant_ref(&mut self, policy: &Policy) -> Option<&str> {
        if self.tenant.is_none() {
            let found = self.first_value(policy, &policy.tenant).map(|mut v| {
                v.make_ascii_lowercase();
                v
            });
            self.tenant = Some(found);
        }
        self.tenant.as_ref().and_then(Option::as_deref)
    }

    /// The value of the first of `sources` that has one, as text.
    pub(super) fn first_value(&mut self, policy: &Policy, sources: &[KeyPart]) -> Option<String> {
        let v = sources.iter().find_map(|s| self.part(policy, s, &Vec::new()))?;
        // Text already, unless a property held other bytes.
        Some(String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    /// The path parameters when `rule` applies to this request.
    pub(super) fn applies(&mut self, policy: &Policy, rule: &Rule, exempt: bool) -> Option<Params> {
        if !rule.methods.is_empty() && !rule.methods.contains(&self.method) {
            return None;
        }
        if !rule.integrations.is_empty() {
            let integration = self.integration_ref(policy)?;
            if !rule.integrations.iter().any(|n| n == integration) {
                return None;
            }
        }
        let params = if rule.paths.is_empty() {
            if exempt {
                return None;
            }
            Vec::new()
        } else {
            let path = &self.path;
            rule.paths.iter().filter(|m| !exempt || m.names_exactly(path)).find_map(|m| m.matches(path))?
        };
        for h in &rule.headers {
            let value = self.header(&h.name);
            let ok = match (&h.test, value) {
                (HeaderTest::Present(want), v) => v.is_some() == *want,
                (HeaderTest::Exact(want), Some(v)) => v.eq_ignore_ascii_case(want),
                (HeaderTest::Prefix(want), Some(v)) => starts_with_ignore_case(v, want),
                (_, None) => false,
            };
            if !ok {
                return None;
            }
        }
        self.call = match &rule.jsonrpc {
            None => 0,
            Some(j) => match self.rpc() {
                Rpc::Not => return None,
                Rpc::TooLarge => 0,
                Rpc::Message(m) => m.calls.iter().position(|c| j.matches(c))?,
            },
        };
        // A rule with plans or overrides: only the variant the request is on.
        if let Some(c) = &rule.choice {
            if !super::plans::takes(self, policy, rule, c, &params) {
                return None;
            }
        }
        Some(params)
    }

    /// The rule's key hash, or `None` when a part is missing and the rule
    /// skips such requests.
    /// For global rules also the key as text, parts joined by `:`, for
    /// the counter service.
    pub(super) fn key(&mut self, policy: &Policy, rule: &Rule, params: &Params) -> Option<(u64, Option<String>)> {
        let mut h = Keyed::new(&policy.slot_secret);
        h.field(&rule.identity.to_le_bytes());
        let mut text = (rule.scope == Scope::Global).then(String::new);
        for (i, part) in rule.key.iter().enumerate() {
            let owned;
            let found: Option<&[u8]> = match (part, rule.integrations.first()) {
                // Every name the rule matches is one integration. Both it
                // and the tenant are lower case already: borrowed, not copied.
                (KeyPart::Integration, Some(own)) => Some(own.as_bytes()),
                (KeyPart::Tenant, _) => self.tenant_ref(policy).map(str::as_bytes),
                // Lower case already (an address, or its IPv6 prefix).
                (KeyPart::ClientIp, _) => self.client_ip(policy.trusted_hops, policy.ipv6_prefix).map(str::as_bytes),
                (KeyPart::Method, _) if rule.head_as_get && self.method == "HEAD" => Some(b"get".as_slice()),
                _ => {
                    owned = self.part(policy, part, params).map(|mut v| {
                        v.make_ascii_lowercase();
                        v
                    });
                    owned.as_deref()
                }
            };
            let value = match found {
                Some(v) => {
                    h.field(v);
                    Some(v)
                }
                None if rule.missing == Missing::Skip => return None,
                // 0xfe never occurs in UTF-8, nor as a whole property value.
                None => {
                    h.field(&[0xfe]);
                    None
                }
            };
            if let Some(t) = text.as_mut() {
                if i > 0 {
                    t.push(':');
                }
                match value {
                    Some(v) => t.push_str(&String::from_utf8_lossy(v)),
                    None => t.push('-'),
                }
            }
        }
        // 0 marks an empty slot; overflow buckets have the top fingerprints.
        Some((h.finish().clamp(1, crate::store::OVERFLOW_BASE.saturating_sub(1)), text.map(crate::counter_api::wire_id)))
    }
}

fn percent_decode(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        match (b, tail) {
            (b'%', [h, l, after @ ..]) if hex_byte(*h, *l).is_some() => {
                out.extend(hex_byte(*h, *l));
                rest = after;
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::MemoryRequest;

    #[test]
    fn a_tenant_and_an_integration_from_hostile_bytes_are_read_lossily_and_lowered() {
        let policy = Policy::from_json(
            r#"{"tenant": [{"property": ["metadata", "tenant"]}], "integration": [{"header": "x-integration"}],
                "rules": [{"name": "r", "limit": {"requests": 1, "per": "1s"}}]}"#,
        )
        .expect("policy");
        let mut req = MemoryRequest::new("GET", "/x").header("x-integration", "  NoTion ");
        // A property may hold any bytes: not UTF-8 here.
        req.properties.push((vec!["metadata".into(), "tenant".into()], b"Te\xffAm".to_vec()));
        let mut attrs = Attrs::new(&mut req);
        assert_eq!(attrs.tenant(&policy).as_deref(), Some("te\u{fffd}am"));
        assert_eq!(attrs.integration(&policy).as_deref(), Some("notion"));
        // The header is kept as sent, and lent again without another read.
        assert_eq!(attrs.header("x-integration"), Some("  NoTion "));
        assert_eq!(attrs.headers.len(), 1);
    }
}
