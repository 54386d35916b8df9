//! Where things live: the repository root, the Envoy binary, the built filter
//! module, and free TCP ports on 127.0.0.1.
//!
//! Paths honour environment overrides (`SLUICE_ENVOY`, `SLUICE_WASM`) so a
//! checkout can point at binaries built or installed elsewhere.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use anyhow::bail;

/// Root of the Sluice repository (the parent of this crate's directory).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The Envoy binary: `$SLUICE_ENVOY`, else `<repo>/.tools/envoy/envoy/_bin/envoy`.
pub fn envoy_binary() -> anyhow::Result<PathBuf> {
    let (path, from_env) = match std::env::var_os("SLUICE_ENVOY") {
        Some(p) if !p.is_empty() => (PathBuf::from(p), true),
        _ => (repo_root().join(".tools/envoy/envoy/_bin/envoy"), false),
    };
    if path.is_file() {
        return Ok(path);
    }
    if from_env {
        bail!(
            "SLUICE_ENVOY points at {}, which does not exist",
            path.display()
        );
    }
    bail!(
        "Envoy not found at {}; run `make envoy` to install it (or set SLUICE_ENVOY)",
        path.display()
    )
}

/// The filter module: `$SLUICE_WASM`, else `<repo>/target/wasm32-wasip1/release/sluice.wasm`.
pub fn wasm_module() -> PathBuf {
    match std::env::var_os("SLUICE_WASM") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => repo_root().join("target/wasm32-wasip1/release/sluice.wasm"),
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0 and
/// release), and never handed out before by this process: the kernel may
/// give a released port to the next bind(0), and two Envoys of parallel
/// tests given one port would both bind it (Envoy's listeners set
/// SO_REUSEPORT) and share each other's requests.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..100 {
        let port = TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(0);
        if port != 0 && !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    #[test]
    fn free_ports_are_never_handed_out_twice() {
        let mut ports: Vec<u16> = (0..300).map(|_| super::free_port()).collect();
        assert!(ports.iter().all(|p| *p != 0));
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 300);
    }
}
