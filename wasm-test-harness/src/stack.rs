//! `stack.json`: what `sluice-stack run` started, so `sluice-stack apply` and
//! other tools can find the running Envoy instances.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// File name of the stack description inside a run directory.
pub const STACK_FILE: &str = "stack.json";

/// One running Envoy of a stack.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StackInstance {
    pub port: u16,
    pub admin_port: u16,
    pub ecds_dir: PathBuf,
}

/// The whole stack: its Envoy instances and the filter module they load.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StackFile {
    pub instances: Vec<StackInstance>,
    pub wasm: PathBuf,
}

impl StackFile {
    /// Reads `<run_dir>/stack.json`.
    pub fn read(run_dir: &Path) -> anyhow::Result<StackFile> {
        let path = run_dir.join(STACK_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no stack is running in {} (missing {}); start one with `sluice-stack run`",
                run_dir.display(),
                path.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Writes `<run_dir>/stack.json`.
    pub fn write(&self, run_dir: &Path) -> anyhow::Result<()> {
        let path = run_dir.join(STACK_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("writing {}", path.display()))
    }
}
