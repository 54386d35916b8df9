//! `sluicectl`: operator tools for Sluice policies, running the filter's own
//! core natively. `sluicectl check FILE` validates a policy exactly as the
//! filter will when Envoy loads it.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice_core::policy::Policy;

mod env_policy;
mod explain;
mod simulate;

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
    /// Which rules match a request, with their keys and limits.
    Explain(explain::Args),
    /// Replay recorded traffic through a policy: admitted, queued, denied.
    Simulate(simulate::Args),
    /// The default policy with the gateway's environment variables applied.
    PolicyFromEnv(env_policy::Args),
}

fn read(path: &str) -> Result<String, String> {
    if path == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("cannot read standard input: {e}"))
    } else {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))
    }
}

/// Prints `message` on standard error: the exit code of unusable input.
fn fail(message: &str) -> ExitCode {
    eprintln!("{message}");
    ExitCode::from(2)
}

/// Validates the policy text read from `path`; a refused policy prints
/// every problem with its JSON path and gives `refused` as the exit code.
fn parse_policy(path: &str, text: &str, refused: ExitCode) -> Result<Policy, ExitCode> {
    Policy::from_json(text).map_err(|e| {
        eprintln!("{path}: policy refused:");
        for problem in &e.problems {
            eprintln!("  {problem}");
        }
        refused
    })
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Explain(args) => explain::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::PolicyFromEnv(args) => env_policy::run(args),
        Command::Check { policy } => {
            let text = match read(&policy) {
                Ok(t) => t,
                Err(e) => return fail(&e),
            };
            match parse_policy(&policy, &text, ExitCode::FAILURE) {
                Ok(p) => {
                    println!(
                        "OK: {} rules, {} slots",
                        p.rules.iter().filter(|r| r.choice.as_ref().is_none_or(|c| c.takes == sluice_core::policy::Takes::Written)).count(),
                        p.slots
                    );
                    if let Some(warning) = trust_warning(&p) {
                        eprintln!("{policy}: warning: {warning}");
                    }
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            }
        }
    }
}

/// What a policy that trusts proxy hops hands to whoever sets
/// `X-Forwarded-For`: a warning, not an error, since behind a load balancer
/// or ingress gateway that is the right setting.
fn trust_warning(policy: &Policy) -> Option<String> {
    let n = policy.trusted_hops;
    (n > 0).then(|| {
        format!(
            "trusted_hops is {n}: the client IP is the X-Forwarded-For entry {n} from the right, so whoever sets that \
             header decides every per-IP key. Only use it when exactly {n} proxy hop(s) you run (load balancer, ingress \
             gateway) sit in front of Envoy and write X-Forwarded-For; Envoy must not be the edge. Where clients connect \
             to Envoy directly, any client can send X-Forwarded-For to escape its per-IP limit or drain another \
             address's: use trusted_hops 0 there."
        )
    })
}
