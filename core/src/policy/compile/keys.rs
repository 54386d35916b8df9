//! Keys: each key part of a rule (headers, body fields, path and template
//! parameters, query parameters, properties, metadata, constants), and the
//! sources the policy's tenant and integration come from.

use super::Compiler;
use crate::path::{PathMatcher, Template};
use crate::policy::raw::{RawKeyPart, RawPathParam};
use crate::policy::KeyPart;

impl Compiler {
    /// Where the tenant (or the integration) of a request comes from: key
    /// parts other than itself and `other`, path parameters with their
    /// own template.
    pub(super) fn sources(&mut self, field: &str, other: &str, parts: Vec<RawKeyPart>) -> Vec<KeyPart> {
        let mut out = Vec::new();
        for (i, part) in parts.into_iter().enumerate() {
            let at = format!("{field}[{i}]");
            match part {
                RawKeyPart::Tenant | RawKeyPart::Integration => self.problem(at, format!("the {field} cannot be defined by itself or by the {other}")),
                RawKeyPart::PathParam(RawPathParam::Name(n)) => self.problem(
                    at,
                    format!("path_param {n:?} needs its own template here: {{\"path_param\": {{\"name\": {n:?}, \"template\": \"/.../{{{n}}}/**\"}}}}"),
                ),
                part => {
                    if let Some(p) = self.key_part(&at, part, &[]) {
                        out.push(p);
                    }
                }
            }
        }
        out
    }

    /// `params`: the path parameters the rule's templates all provide.
    pub(super) fn key_part(&mut self, at: &str, part: RawKeyPart, params: &[String]) -> Option<KeyPart> {
        Some(match part {
            RawKeyPart::ClientIp => KeyPart::ClientIp,
            RawKeyPart::Method => KeyPart::Method,
            RawKeyPart::Authority => KeyPart::Authority,
            RawKeyPart::Path => KeyPart::Path,
            RawKeyPart::Tenant => KeyPart::Tenant,
            RawKeyPart::Integration => KeyPart::Integration,
            RawKeyPart::Header(h) => KeyPart::Header(self.header_name(&format!("{at}.header"), &h)?),
            RawKeyPart::Body(b) if b.is_empty() || b.split('.').any(str::is_empty) => {
                self.problem(format!("{at}.body"), format!("{b:?} must be a dotted path of JSON object keys, like \"integration\" or \"params.tool\""));
                return None;
            }
            RawKeyPart::Body(b) => KeyPart::Body(b.split('.').map(str::to_string).collect()),
            RawKeyPart::PathParam(RawPathParam::Name(n)) => {
                if !params.contains(&n) {
                    self.problem(
                        format!("{at}.path_param"),
                        format!("{{{n}}} is not a parameter of every template in this rule's match.paths (they provide: {params:?}); give a template of its own with {{\"name\": .., \"template\": ..}}"),
                    );
                    return None;
                }
                KeyPart::PathParam(n)
            }
            RawKeyPart::PathParam(RawPathParam::WithTemplate(t)) => {
                let template = match Template::parse(&t.template) {
                    Ok(tpl) => tpl,
                    Err(e) => {
                        self.problem(format!("{at}.path_param.template"), e);
                        return None;
                    }
                };
                if !template.params().any(|p| p == t.name) {
                    self.problem(format!("{at}.path_param.name"), format!("{{{}}} does not occur in template {:?}", t.name, t.template));
                    return None;
                }
                KeyPart::TemplateParam { name: t.name, template }
            }
            RawKeyPart::Query(q) if q.is_empty() => {
                self.problem(format!("{at}.query"), "query parameter name must not be empty");
                return None;
            }
            RawKeyPart::Query(q) => KeyPart::Query(q),
            RawKeyPart::Property(p) if p.is_empty() || p.iter().any(String::is_empty) => {
                self.problem(format!("{at}.property"), "property path must be a non-empty list of non-empty names, e.g. [\"source\", \"principal\"]");
                return None;
            }
            RawKeyPart::Property(p) => KeyPart::Property(p),
            RawKeyPart::Metadata(m) if m.filter.is_empty() || m.path.is_empty() || m.path.iter().any(String::is_empty) => {
                self.problem(format!("{at}.metadata"), "metadata needs a filter name and a non-empty path, e.g. {\"filter\": \"envoy.filters.http.jwt_authn\", \"path\": [\"jwt_payload\", \"sub\"]}");
                return None;
            }
            RawKeyPart::Metadata(m) => {
                let mut path = vec!["metadata".to_string(), "filter_metadata".to_string(), m.filter];
                path.extend(m.path);
                KeyPart::Property(path)
            }
            RawKeyPart::Const(c) => KeyPart::Const(c),
            RawKeyPart::JsonrpcMethod => KeyPart::JsonRpcMethod,
            RawKeyPart::Tool => KeyPart::Tool,
            RawKeyPart::McpSession => KeyPart::Header("mcp-session-id".to_string()),
        })
    }
}

/// Parameters every template among `paths` is sure to provide (none unless
/// every path is a template).
pub(super) fn template_params(paths: &[PathMatcher]) -> Vec<String> {
    let templates: Vec<&Template> = paths
        .iter()
        .filter_map(|p| match p {
            PathMatcher::Template(t) => Some(t),
            _ => None,
        })
        .collect();
    if paths.is_empty() || templates.len() != paths.len() {
        return Vec::new();
    }
    templates.first().into_iter().flat_map(|t| t.params()).filter(|n| templates.iter().all(|t| t.params().any(|m| m == *n))).map(str::to_string).collect()
}
