//! `sluicectl`: operator tools for Sluice policies, running the filter's own
//! core natively. `sluicectl check FILE` validates a policy exactly as the
//! filter will when Envoy loads it.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice_core::policy::Policy;

#[derive(Parser)]
#[command(name = "sluicectl", about = "Operator tools for Sluice rate-limit policies")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a policy file: prints OK, or every problem with its JSON path.
    Check {
        /// The policy JSON file (`-` for standard input).
        policy: String,
    },
}

fn read(path: &str) -> Result<String, String> {
    if path == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("cannot read standard input: {e}"))
    } else {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Check { policy } => {
            let text = match read(&policy) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            match Policy::from_json(&text) {
                Ok(p) => {
                    println!("OK: {} rules, {} slots", p.rules.len(), p.slots);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{policy}: policy refused:");
                    for problem in &e.problems {
                        eprintln!("  {problem}");
                    }
                    ExitCode::FAILURE
                }
            }
        }
    }
}
