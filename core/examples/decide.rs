//! The decision alone, natively: the default policy made local (as
//! `sluice-bench`'s `sluice-local`) deciding the bench's overhead mix
//! (`GET /api/v1/items` from 1000 clients, each with its own IP and
//! tenant) against the in-memory shared store. For instruction counts:
//!
//! ```sh
//! cargo build --release -p sluice-core --example decide
//! valgrind --tool=callgrind target/release/examples/decide 20000
//! ```
//!
//! Prints the decisions made and the nanoseconds per decision.

mod common;

use sluice_core::limiter::{decide, Ctx};
use sluice_core::store::MemoryStore;

fn main() -> std::process::ExitCode {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let policy = match common::default_policy(false, None) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("decide: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let requests: Vec<_> = (0..1000u64).map(common::client).collect();
    let store = MemoryStore::default();
    let start = std::time::Instant::now();
    let t0 = 1_800_000_000_000_000_000u64;
    let mut allowed = 0u64;
    for i in 0..n {
        // 20,000 requests per second of simulated time.
        let mut req = requests[(i % 1000) as usize].clone();
        let d = decide(&policy, &mut req, &store, Ctx::at(t0 + i * 50_000));
        allowed += u64::from(d.allowed());
    }
    let elapsed = start.elapsed();
    println!("{n} decisions, {allowed} allowed, {:.0} ns per decision", elapsed.as_nanos() as f64 / n as f64);
    std::process::ExitCode::SUCCESS
}
