//! Path normalisation and matching: any raw `:path` against any template,
//! prefix and exact matcher. Normalising is idempotent and gives an
//! absolute path without query, fragment, empty, `.` or `..` segments; a
//! template match captures only its own, non-empty parameters.
//!
//! Input: the raw path, then optionally a NUL byte and a matcher source.
#![no_main]

extern crate sluice_fuzz;

use libfuzzer_sys::fuzz_target;
use sluice_core::path::{normalize, PathMatcher, Template};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (raw, source) = text
        .split_once('\0')
        .unwrap_or((text, "/api/v1/tenants/{tenantId}/**"));
    let path = normalize(raw);
    assert_eq!(normalize(&path), path, "normalising is idempotent");
    assert!(
        path.starts_with('/') && !path.contains(['?', '#']),
        "{path:?}"
    );
    if path != "/" {
        assert!(
            path[1..]
                .split('/')
                .all(|s| !s.is_empty() && s != "." && s != ".."),
            "{path:?}"
        );
    }
    for m in [
        PathMatcher::Exact(source.to_string()),
        PathMatcher::Prefix(source.to_string()),
    ] {
        let _ = m.matches(&path);
        let _ = m.names_exactly(&path);
    }
    if let Ok(t) = Template::parse(source) {
        assert_eq!(t.source(), source);
        let names: Vec<&str> = t.params().collect();
        if let Some(params) = t.matches(&path) {
            assert!(params.len() <= names.len());
            assert!(
                params
                    .iter()
                    .all(|(n, v)| names.contains(&n.as_str()) && !v.is_empty()),
                "{params:?}"
            );
        }
        let _ = PathMatcher::Template(t).matches(&path);
    }
});
