//! ECDS resource shape, atomic writes and template rendering.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use serde_json::json;
use wasm_test_harness::{ecds_resource, render_template, repo_root, write_ecds};

const POLICY: &str = r#"{"rules":[],"note":"quote \" and \\ backslash"}"#;

#[test]
fn ecds_resource_shape() {
    let got: serde_json::Value =
        serde_json::from_str(&ecds_resource(Path::new("/opt/sluice.wasm"), POLICY)).unwrap();
    let want = json!({"resources":[{
        "@type":"type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        "name":"sluice",
        "typed_config":{
            "@type":"type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config":{
                "name":"sluice","root_id":"sluice",
                "vm_config":{"vm_id":"sluice","runtime":"envoy.wasm.runtime.v8",
                    "code":{"local":{"filename":"/opt/sluice.wasm"}},
                    "environment_variables":{"host_env_keys":["SLUICE_COUNTER_SECRET"]}},
                "configuration":{"@type":"type.googleapis.com/google.protobuf.StringValue","value":POLICY},
                "failure_policy":"FAIL_CLOSED",
                "allow_on_headers_stop_iteration":true}}}]});
    assert_eq!(got, want);
}

#[test]
fn ecds_resource_makes_wasm_path_absolute() {
    let got: serde_json::Value =
        serde_json::from_str(&ecds_resource(Path::new("rel/x.wasm"), "{}")).unwrap();
    let name = got["resources"][0]["typed_config"]["config"]["vm_config"]["code"]["local"]
        ["filename"]
        .as_str()
        .unwrap();
    assert!(Path::new(name).is_absolute());
    assert!(name.ends_with("rel/x.wasm"));
}

#[test]
fn write_ecds_replaces_file_and_leaves_no_temporaries() {
    let dir = tempfile::tempdir().unwrap();
    write_ecds(dir.path(), Path::new("/a.wasm"), "{\"v\":1}").unwrap();
    write_ecds(dir.path(), Path::new("/a.wasm"), "{\"v\":2}").unwrap();
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["sluice.json"]);
    let text = std::fs::read_to_string(dir.path().join("sluice.json")).unwrap();
    assert_eq!(text, ecds_resource(Path::new("/a.wasm"), "{\"v\":2}"));
}

#[test]
fn write_ecds_fails_for_missing_dir() {
    assert!(write_ecds(
        Path::new("/nonexistent/dir/for/ecds"),
        Path::new("/a.wasm"),
        "{}"
    )
    .is_err());
}

#[test]
fn renders_placeholders() {
    let out = render_template("a: {{A}}\nb: {{B}}-{{A}}\n", &[("A", "1"), ("B", "two")]).unwrap();
    assert_eq!(out, "a: 1\nb: two-1\n");
}

#[test]
fn leftover_placeholder_is_an_error() {
    let err = render_template("a: {{A}}\nb: {{MISSING}}\n", &[("A", "1")]).unwrap_err();
    assert!(err.to_string().contains("{{MISSING}}"), "{err}");
    assert!(err.to_string().contains("line 2"), "{err}");
}

#[test]
fn placeholders_in_comment_lines_are_fine() {
    let out = render_template(
        "# replaces each {{NAME}}\nport: {{PORT}}\n",
        &[("PORT", "1")],
    )
    .unwrap();
    assert!(out.ends_with("port: 1\n"));
}

#[test]
fn repo_template_renders_with_the_standard_variables() {
    let text = std::fs::read_to_string(repo_root().join("envoy.yaml")).unwrap();
    let vars = [
        ("INSTANCE", "0"),
        ("PORT", "1"),
        ("ADMIN_PORT", "2"),
        ("UPSTREAM_HOST", "127.0.0.1"),
        ("UPSTREAM_PORT", "3"),
        ("UPSTREAM_TYPE", "STATIC"),
        ("UPSTREAM_HTTP", "http_protocol_options"),
        ("COUNTER_PORT", "4"),
        ("EGRESS_PORT", "5"),
        ("ACCESS_LOG", "/x/access.log"),
        ("ECDS_DIR", "/x"),
    ];
    let out = render_template(&text, &vars).unwrap();
    assert!(out.contains("/x/sluice.json"));
    assert!(out.contains("port_value: 4"));
    let missing = render_template(&text, &vars[..vars.len() - 1]).unwrap_err();
    assert!(missing.to_string().contains("{{ECDS_DIR}}"));
}
