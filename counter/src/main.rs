//! The `sluice-counter` binary: parse flags, serve, exit 0 after a graceful
//! stop or 1 with a message when the service cannot start.

use std::process::ExitCode;

use clap::Parser;
use sluice_counter::config::Args;
use sluice_counter::server;

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("sluice-counter: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server::run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sluice-counter: {err}");
            ExitCode::FAILURE
        }
    }
}
