//! Request paths: normalisation and the matchers rules use (`exact`,
//! `prefix`, `template`).
//!
//! A rule must not be escaped by spelling a path differently from the way the
//! upstream reads it. Before matching, the path loses its query, gets
//! percent-encoded unreserved characters decoded, repeated slashes merged,
//! `.`/`..` segments resolved and a trailing slash dropped; literals compare
//! without regard to ASCII case (Express, the gateway's framework, routes
//! that way by default). Parameter values keep their original spelling.
//!
//! Template syntax: segments split on `/`; a segment is a literal, `{name}`
//! (one non-empty segment, captured), `*` (one segment) or, last only, `**`
//! (any number of segments, including none).

/// Normalises a raw `:path` for matching (see the module docs).
pub fn normalize(raw: &str) -> String {
    let path = raw.split(['?', '#']).next().unwrap_or("");
    if is_normal(path) {
        return path.to_string();
    }
    rebuild(path)
}

/// `normalize` the long way: decode, then drop empty and dot segments.
fn rebuild(path: &str) -> String {
    let decoded = decode_unreserved(path);
    let mut out: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut normalized = String::with_capacity(decoded.len().saturating_add(1));
    for s in &out {
        normalized.push('/');
        normalized.push_str(s);
    }
    if normalized.is_empty() {
        normalized.push('/');
    }
    normalized
}

/// True when `normalize` would give `path` back as is (the common case,
/// which then costs one scan instead of a decode and a rebuild).
fn is_normal(path: &str) -> bool {
    match path.strip_prefix('/') {
        Some("") => true,
        Some(rest) => !rest.contains('%') && rest.split('/').all(|s| !s.is_empty() && s != "." && s != ".."),
        None => false,
    }
}

/// Decodes `%XX` only where XX is an unreserved character (RFC 3986 2.3), so
/// `/tools/%6Cist` is `/tools/list` while `%2F` stays an encoded slash.
fn decode_unreserved(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = rest.find('%') {
        let (before, from) = rest.split_at(at);
        out.push_str(before);
        // A hex digit after a literal '%' (and maybe one more digit) stays
        // encoded: decoded, it would complete an escape that the next pass
        // decodes ("%%32d" read as "%2d", then as "-"), and normalising
        // must give a normal path back as it is.
        let opens_escape = ends_in_open_escape(&out);
        let unreserved = match from.as_bytes() {
            [_, h, l, ..] => {
                hex_byte(*h, *l).filter(|c| (c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')) && !(opens_escape && c.is_ascii_hexdigit()))
            }
            _ => None,
        };
        match (unreserved, from.get(3..)) {
            (Some(c), Some(after)) => {
                out.push(char::from(c));
                rest = after;
            }
            _ => {
                out.push('%');
                rest = from.get(1..).unwrap_or("");
            }
        }
    }
    out.push_str(rest);
    out
}

/// True when `text` ends with `%`, or with `%` and one hex digit.
fn ends_in_open_escape(text: &str) -> bool {
    match text.as_bytes() {
        [.., b'%'] => true,
        [.., b'%', d] => d.is_ascii_hexdigit(),
        _ => false,
    }
}

/// The byte two hex digits spell, if they are hex digits.
pub(crate) fn hex_byte(high: u8, low: u8) -> Option<u8> {
    let digit = |b: u8| char::from(b).to_digit(16);
    u8::try_from(digit(high)?.checked_mul(16)?.checked_add(digit(low)?)?).ok()
}

pub(crate) fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.as_bytes().get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Any,
    Rest,
}

/// A compiled path template such as
/// `/api/v1/tenants/{tenantId}/integrations/{integration}/oauth-config`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    source: String,
    segments: Vec<Segment>,
}

/// Captured template parameters: (name, value) in template order.
pub type Params = Vec<(String, String)>;

impl Template {
    pub fn parse(source: &str) -> Result<Template, String> {
        let body = source.strip_prefix('/').ok_or_else(|| format!("template {source:?} must start with '/'"))?;
        let mut segments = Vec::new();
        let parts: Vec<&str> = if body.is_empty() { vec![] } else { body.split('/').collect() };
        for (i, part) in parts.iter().enumerate() {
            let seg = if *part == "**" {
                if i.saturating_add(1) != parts.len() {
                    return Err(format!("template {source:?}: '**' may only be the last segment"));
                }
                Segment::Rest
            } else if *part == "*" {
                Segment::Any
            } else if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!("template {source:?}: parameter {{{name}}} must be a non-empty name of letters, digits and '_'"));
                }
                if segments.contains(&Segment::Param(name.to_string())) {
                    return Err(format!("template {source:?}: parameter {{{name}}} appears twice"));
                }
                Segment::Param(name.to_string())
            } else if part.is_empty() {
                return Err(format!("template {source:?}: empty segment"));
            } else if part.contains(['{', '}', '*']) {
                return Err(format!("template {source:?}: segment {part:?} mixes a literal with '{{', '}}' or '*'; a parameter must be a whole segment"));
            } else {
                Segment::Literal(normalize(&format!("/{part}"))[1..].to_string())
            };
            segments.push(seg);
        }
        Ok(Template { source: source.to_string(), segments })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Names of the parameters the template captures.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(n) => Some(n.as_str()),
            _ => None,
        })
    }

    /// Matches a normalised path; returns the captured parameters.
    pub fn matches(&self, path: &str) -> Option<Params> {
        let mut parts = path.strip_prefix('/').unwrap_or(path).split('/').filter(|s| !s.is_empty());
        let mut params = Vec::new();
        for seg in &self.segments {
            match seg {
                Segment::Rest => return Some(params),
                Segment::Any => {
                    parts.next()?;
                }
                Segment::Literal(lit) => {
                    if !parts.next()?.eq_ignore_ascii_case(lit) {
                        return None;
                    }
                }
                Segment::Param(name) => params.push((name.clone(), parts.next()?.to_string())),
            }
        }
        parts.next().is_none().then_some(params)
    }
}

/// One entry of a rule's `match.paths`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatcher {
    Exact(String),
    Prefix(String),
    Template(Template),
}

impl PathMatcher {
    /// Matches a normalised path; template parameters come back on success.
    pub fn matches(&self, path: &str) -> Option<Params> {
        match self {
            PathMatcher::Exact(p) => path.eq_ignore_ascii_case(p).then(Vec::new),
            PathMatcher::Prefix(p) => starts_with_ignore_case(path, p).then(Vec::new),
            PathMatcher::Template(t) => t.matches(path),
        }
    }

    /// True when this matcher names `path` exactly (used for exempt paths).
    pub fn names_exactly(&self, path: &str) -> bool {
        matches!(self, PathMatcher::Exact(p) if p.eq_ignore_ascii_case(path))
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn normalizes_spellings_of_one_path() {
        for (raw, want) in [
            ("/api/v1/tools/list", "/api/v1/tools/list"),
            ("/api/v1/tools/list?page=2", "/api/v1/tools/list"),
            ("/api/v1/tools/list/", "/api/v1/tools/list"),
            ("//api///v1/tools/list", "/api/v1/tools/list"),
            ("/api/v1/./x/../tools/list", "/api/v1/tools/list"),
            ("/api/v1/tools/%6Cist", "/api/v1/tools/list"),
            ("/api/v1/tools/%6cist#frag", "/api/v1/tools/list"),
            ("/a%2Fb", "/a%2Fb"),
            ("/../..", "/"),
            ("", "/"),
            ("/caf\u{e9}/%", "/caf\u{e9}/%"),
            ("/x%4", "/x%4"),
        ] {
            assert_eq!(normalize(raw), want, "{raw}");
        }
    }

    #[test]
    fn paths_taken_as_they_are_are_already_normal() {
        // The shortcut never changes an answer: a path it keeps as is
        // is one that normalising leaves alone.
        let parts = ["", "/", "a", "b", ".", "..", "%41", "%2F", "x.y", "~"];
        let mut count = 0;
        for a in parts {
            for b in parts {
                for c in parts {
                    let path = format!("/{a}/{b}{c}");
                    let normalized = normalize(&path);
                    assert_eq!(normalize(&normalized), normalized, "{path}");
                    assert_eq!(normalized, rebuild(&path), "{path}");
                    if is_normal(&path) {
                        count += 1;
                        assert_eq!(rebuild(&path), path);
                    }
                }
            }
        }
        assert!(count > 100, "{count}");
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        // A literal '%' followed by a decoded hex digit must not become an
        // escape the next pass decodes ("%%32d" once read as "%2d").
        for raw in ["/%%32d", "%%32d", "/%%32%64", "/%4%31", "/a%/%32e", "/%%2e%2e/x", "/%2%32e"] {
            let once = normalize(raw);
            assert_eq!(normalize(&once), once, "{raw}");
        }
        assert_eq!(normalize("/%%32d"), "/%%32d");
        assert_eq!(normalize("/%%%36%43ist"), "/%%%36Cist");
    }

    #[test]
    fn template_captures_parameters() {
        let t = Template::parse("/api/v1/tenants/{tenantId}/integrations/{integration}/oauth-config").expect("valid");
        let got = t.matches(&normalize("/API/v1/tenants/Acme/integrations/notion/oauth-config/"));
        assert_eq!(got, Some(vec![("tenantId".to_string(), "Acme".to_string()), ("integration".to_string(), "notion".to_string())]));
        assert_eq!(t.matches("/api/v1/tenants/acme/integrations/oauth-config"), None);
        assert_eq!(t.matches("/api/v1/tenants/acme/integrations/notion/oauth-config/x"), None);
        assert_eq!(t.params().collect::<Vec<_>>(), ["tenantId", "integration"]);
    }

    #[test]
    fn wildcards() {
        let rest = Template::parse("/api/v1/tenants/{tenantId}/**").expect("valid");
        assert!(rest.matches("/api/v1/tenants/t1").is_some());
        assert!(rest.matches("/api/v1/tenants/t1/a/b").is_some());
        assert!(rest.matches("/api/v1/tenants").is_none());
        let any = Template::parse("/a/*/c").expect("valid");
        assert!(any.matches("/a/b/c").is_some());
        assert!(any.matches("/a/c").is_none());
        assert_eq!(Template::parse("/").map(|t| t.matches("/")), Ok(Some(vec![])));
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in ["api", "/a/{}", "/a/{x}/{x}", "/a/**/b", "/a/b{x}", "/a//b", "/a/{x-y}", "/a/*b"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matchers_ignore_case_of_literals() {
        assert!(PathMatcher::Exact("/health".into()).matches("/HEALTH").is_some());
        assert!(PathMatcher::Prefix("/api/".into()).matches("/Api/x").is_some());
        assert!(PathMatcher::Prefix("/api/".into()).matches("/ap").is_none());
        assert!(PathMatcher::Exact("/health".into()).names_exactly("/Health"));
        assert!(!PathMatcher::Prefix("/health".into()).names_exactly("/health"));
    }
}
