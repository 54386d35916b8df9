//! `sluice-stack`: run a local Sluice stack (echo upstream plus Envoy
//! instances) in the foreground, and hot-apply policies to it via ECDS.

mod apply;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sluice-stack",
    about = "Run a local Sluice stack and apply policies to it"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the echo upstream and Envoy instance(s); stop on Ctrl-C or SIGTERM.
    Run(run::RunArgs),
    /// Validate a policy and hot-apply it to a running stack.
    Apply(apply::ApplyArgs),
}

/// Reads and validates a policy file; on failure prints why and gives exit code 2.
pub(crate) fn load_policy(path: &PathBuf) -> Result<String, ExitCode> {
    let json = match std::fs::read_to_string(path) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: cannot read policy {}: {e}", path.display());
            return Err(ExitCode::from(2));
        }
    };
    if let Err(e) = sluice_core::policy::check(&json) {
        eprintln!("error: invalid policy {}:\n{e}", path.display());
        return Err(ExitCode::from(2));
    }
    // The stack's counter service requires a secret, which Envoy holds in
    // its environment (see run.rs).
    wasm_test_harness::policy_with_secret_env(&json).map_err(|e| {
        eprintln!("error: policy {}: {e}", path.display());
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Run(args) => run::run(args),
        Cmd::Apply(args) => apply::apply(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
