//! `sluicectl check` (behind `make check`) run as a process: a valid policy
//! prints OK and exits 0, a policy that trusts proxy hops also warns who
//! then picks the client IP, a refused one lists its problems and exits 1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

const DEFAULT_POLICY: &str = include_str!("../../policies/mcp-gateway.json");

fn check(policy: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluicectl"))
        .args(["check", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sluicectl");
    child.stdin.take().expect("stdin").write_all(policy.as_bytes()).expect("write stdin");
    child.wait_with_output().expect("wait for sluicectl")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[test]
fn the_default_policy_passes_without_a_warning() {
    let out = check(DEFAULT_POLICY);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("OK: "), "{}", text(&out.stdout));
    assert_eq!(text(&out.stderr), "", "trusted_hops 0 needs no warning");
}

#[test]
fn trusting_hops_warns_who_sets_the_client_ip() {
    for hops in [1, 3] {
        let policy = DEFAULT_POLICY.replacen(r#""trusted_hops": 0"#, &format!(r#""trusted_hops": {hops}"#), 1);
        assert_ne!(policy, DEFAULT_POLICY);
        let out = check(&policy);
        // A warning, not a refusal: behind a load balancer it is right.
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(text(&out.stdout).starts_with("OK: "));
        let stderr = text(&out.stderr);
        assert!(stderr.starts_with("-: warning: trusted_hops is "), "{stderr}");
        assert!(stderr.contains(&format!("X-Forwarded-For entry {hops} from the right")), "{stderr}");
        assert!(stderr.contains("whoever sets that header decides every per-IP key"), "{stderr}");
        assert!(stderr.contains("Envoy must not be the edge"), "{stderr}");
        assert!(stderr.contains("use trusted_hops 0"), "{stderr}");
    }
}

#[test]
fn a_refused_policy_exits_1_with_its_problems() {
    let out = check(r#"{"trusted_hops": 2, "ipv6_prefix": 0, "rules": []}"#);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("ipv6_prefix: must be between 1 and 128"), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
}
