//! What a rule matches: methods (with HEAD for GET), paths, integrations,
//! JSON-RPC methods and tools, and headers with their names.

use super::Compiler;
use crate::path::{normalize, PathMatcher, Template};
use crate::policy::raw::{HeadMethod, RawHeader, RawJsonRpc, RawPath};
use crate::policy::{HeaderMatch, HeaderTest, JsonRpcMatch};

impl Compiler {
    /// The methods matched, upper case, and whether `HEAD` was added for
    /// `GET`: a server answers HEAD with its GET handler, so unless the
    /// rule says otherwise, a limit on GET is one on HEAD too.
    pub(super) fn methods(&mut self, at: &str, raw: &[String], head: HeadMethod) -> (Vec<String>, bool) {
        let mut methods: Vec<String> = raw
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                if !m.is_empty() && m.chars().all(|c| c.is_ascii_alphabetic()) {
                    Some(m.to_ascii_uppercase())
                } else {
                    self.problem(format!("{at}.match.methods[{i}]"), format!("{m:?} is not an HTTP method"));
                    None
                }
            })
            .collect();
        let head_as_get = head == HeadMethod::WithGet && methods.iter().any(|m| m == "GET") && !methods.iter().any(|m| m == "HEAD");
        if head_as_get {
            methods.push("HEAD".to_string());
        }
        (methods, head_as_get)
    }

    /// The paths matched: exact ones normalised, templates parsed.
    pub(super) fn paths(&mut self, at: &str, raw: Vec<RawPath>) -> Vec<PathMatcher> {
        let mut paths = Vec::new();
        for (i, p) in raw.into_iter().enumerate() {
            let here = format!("{at}.match.paths[{i}]");
            match p {
                RawPath::Exact(s) | RawPath::Prefix(s) if !s.starts_with('/') => {
                    self.problem(here, format!("path {s:?} must start with '/'"));
                }
                RawPath::Exact(s) => paths.push(PathMatcher::Exact(normalize(&s))),
                RawPath::Prefix(s) => paths.push(PathMatcher::Prefix(s)),
                RawPath::Template(t) => match Template::parse(&t) {
                    Ok(t) => paths.push(PathMatcher::Template(t)),
                    Err(e) => self.problem(format!("{here}.template"), e),
                },
            }
        }
        paths
    }

    /// The integrations matched, trimmed and lower case.
    pub(super) fn integrations(&mut self, at: &str, raw: &[String]) -> Vec<String> {
        let integrations: Vec<String> = raw.iter().map(|n| n.trim().to_ascii_lowercase()).collect();
        for (i, n) in integrations.iter().enumerate() {
            if n.is_empty() {
                self.problem(format!("{at}.match.integration[{i}]"), "must not be empty");
            }
        }
        integrations
    }

    /// A rule's JSON-RPC condition; a `tools` list alone means `tools/call`.
    pub(super) fn jsonrpc(&mut self, at: &str, j: &RawJsonRpc) -> JsonRpcMatch {
        let here = format!("{at}.match.jsonrpc");
        let mut globs = |what: &str, list: &[String]| -> Vec<String> {
            for (i, g) in list.iter().enumerate() {
                if g.is_empty() || g.len() > 256 || !g.bytes().all(|b| (0x21..0x7f).contains(&b)) {
                    self.problem(format!("{here}.{what}[{i}]"), format!("{g:?} must be 1-256 printable ASCII characters without spaces (`*` for any run)"));
                }
            }
            list.to_vec()
        };
        let mut methods = globs("methods", &j.methods);
        let tools = globs("tools", &j.tools);
        if !tools.is_empty() {
            if methods.is_empty() {
                methods.push("tools/call".to_string());
            } else if !methods.iter().any(|m| crate::jsonrpc::glob(m, "tools/call")) {
                self.problem(format!("{here}.tools"), "only a tools/call names a tool: add \"tools/call\" to `methods`, or leave `methods` out");
            }
        }
        JsonRpcMatch { methods, tools }
    }

    pub(super) fn header(&mut self, at: &str, h: RawHeader) -> Option<HeaderMatch> {
        let name = self.header_name(&format!("{at}.name"), &h.name)?;
        let test = match (h.exact, h.prefix, h.present) {
            (Some(v), None, None) => HeaderTest::Exact(v),
            (None, Some(v), None) => HeaderTest::Prefix(v),
            (None, None, Some(p)) => HeaderTest::Present(p),
            (None, None, None) => HeaderTest::Present(true),
            _ => {
                self.problem(at, "give at most one of `exact`, `prefix`, `present`");
                return None;
            }
        };
        Some(HeaderMatch { name, test })
    }

    pub(super) fn header_name(&mut self, at: &str, name: &str) -> Option<String> {
        let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if ok {
            Some(name.to_ascii_lowercase())
        } else {
            self.problem(at, format!("{name:?} is not a valid header name"));
            None
        }
    }
}
