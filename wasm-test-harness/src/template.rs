//! Rendering of the Envoy bootstrap template (`envoy.yaml`).
//!
//! Placeholders look like `{{NAME}}`. Whole-line YAML comments are left as they
//! are (they document the placeholders), but any placeholder left anywhere else
//! after substitution is an error, so a typo never reaches Envoy.

use anyhow::bail;

/// Replaces every `{{NAME}}` for each `(NAME, value)` in `vars`; fails if a
/// placeholder outside whole-line comments is left unreplaced.
pub fn render_template(template: &str, vars: &[(&str, &str)]) -> anyhow::Result<String> {
    let mut out = template.to_string();
    for (name, value) in vars {
        out = out.replace(&format!("{{{{{name}}}}}"), value);
    }
    let leftovers: Vec<String> = out
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim_start().starts_with('#') && line.contains("{{"))
        .map(|(i, line)| format!("  line {}: {}", i + 1, line.trim()))
        .collect();
    if !leftovers.is_empty() {
        bail!(
            "unreplaced placeholders in template:\n{}",
            leftovers.join("\n")
        );
    }
    Ok(out)
}
