//! Slot reads and writes per request, natively: the hostcalls into Envoy's
//! shared data that the filter would make for the bench's mixes, with the
//! default policy as is (global rules through leases, loans and the
//! leader's ticks, a counter that answers at once) and made local. One
//! instance with one worker, as `sluice-bench` runs Envoy; ticks every
//! 10 ms, within the filter's budgets; the first two seconds warm up, the
//! next four count.
//!
//! ```sh
//! cargo run --release -p sluice-core --example crossings [requests/s]
//! ```
//!
//! Prints, per mix and policy, the slot calls per request (the hot client's
//! refused requests apart, in the denial mix), those the ticks make
//! (settling shares, repaying loans, looking at spans, applying the
//! service's answers) per request, and the counter calls; and
//! the slot calls per refused request of a flood, one tenant sending
//! `tools-invoke` (20/s, global in the default policy) 1000 times a
//! second. A
//! deterministic count, where `make bench` measures time on a noisy
//! machine: the figure to compare when a change is meant to save
//! crossings.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use sluice_core::flow::TICK_NS;
use sluice_core::request::MemoryRequest;
use support::{FakeCounter, Instance};

const S: u64 = 1_000_000_000;
const T0: u64 = 1_763_382_885 * S;

/// The bench's mixes (`bench/src/mix.rs`): client `k` of 1000, or with
/// `hot` every even request from one client over its 100/s limit.
fn request(n: u64, hot: bool) -> (MemoryRequest, bool) {
    let k = if hot { (n / 2) % 1000 } else { n % 1000 };
    if hot && n.is_multiple_of(2) {
        let tenant = format!("tenant-{k}");
        return (MemoryRequest::new("GET", "/api/v1/categories").header("x-forwarded-for", "192.0.2.10").header("x-tenant-id", &tenant), true);
    }
    (common::client(k), false)
}

/// Slot calls per request of the 1000 clients, per hot request, and of
/// the ticks per request; counter calls.
struct Counts {
    clients: f64,
    hot: f64,
    ticks: f64,
    counter: u64,
}

fn run(policy: sluice_core::policy::Policy, hot: bool, rate: u64) -> Counts {
    let mut inst = Instance::new(policy);
    inst.paced = true;
    let mut counter = FakeCounter::default();
    let (gap, warm) = (S / rate.max(1), rate.saturating_mul(2));
    let (mut next_tick, mut sums, mut ticks) = (T0, [(0u64, 0u64); 2], 0);
    for n in 0..rate.saturating_mul(6) {
        let now = T0 + n * gap;
        if now >= next_tick {
            let before = inst.store.calls();
            inst.tick(&mut counter, now);
            if n >= warm {
                ticks += inst.store.calls() - before;
            }
            next_tick += TICK_NS;
        }
        if n == warm {
            counter.calls = 0;
        }
        let (req, is_hot) = request(n, hot);
        let before = inst.store.calls();
        inst.send(&mut counter, &req, now);
        if n >= warm {
            let sum = &mut sums[usize::from(is_hot)];
            *sum = (sum.0 + inst.store.calls() - before, sum.1 + 1);
        }
    }
    let per = |(calls, n): (u64, u64)| if n == 0 { 0.0 } else { calls as f64 / n as f64 };
    Counts { clients: per(sums[0]), hot: per(sums[1]), ticks: per((ticks, sums[0].1 + sums[1].1)), counter: counter.calls }
}

/// A flood: one tenant's `POST /api/v1/tools/invoke` at `rate` for 6 s,
/// the last 4 counted: (slot calls per refused request, refused, admitted).
fn flood(policy: sluice_core::policy::Policy, rate: u64) -> (f64, u64, u64) {
    let mut inst = Instance::new(policy);
    let mut counter = FakeCounter::default();
    let req = MemoryRequest::new("POST", "/api/v1/tools/invoke").header("x-forwarded-for", "192.0.2.10").header("x-tenant-id", "flood");
    let (gap, mut next_tick) = (S / rate.max(1), T0);
    let (mut calls, mut refused, mut admitted) = (0, 0, 0);
    for n in 0..rate.saturating_mul(6) {
        let now = T0 + n * gap;
        if now >= next_tick {
            inst.tick(&mut counter, now);
            next_tick += TICK_NS;
        }
        let before = inst.store.calls();
        let allowed = inst.send(&mut counter, &req, now).allowed();
        if n >= rate.saturating_mul(2) {
            if allowed {
                admitted += 1;
            } else {
                refused += 1;
                calls += inst.store.calls() - before;
            }
        }
    }
    (calls as f64 / refused.max(1) as f64, refused, admitted)
}

fn main() -> std::process::ExitCode {
    let rate: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(18_000);
    // The default policy made local, then as is: read once, for every run.
    let policies = match [false, true].map(|global| common::default_policy(global, Some(1))) {
        [Ok(local), Ok(global)] => [(false, local), (true, global)],
        [Err(e), _] | [_, Err(e)] => {
            eprintln!("crossings: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let kind = |global: bool| if global { "global" } else { "local " };
    println!("{rate} requests/s, 1000 clients, one worker; slot reads and writes per request");
    for hot in [false, true] {
        for (global, p) in &policies {
            let c = run(p.clone(), hot, rate);
            let mix = if hot { "denial  " } else { "overhead" };
            let hot_part = if hot { format!(", hot client's {:.2}", c.hot) } else { String::new() };
            println!("{mix} {}: clients' requests {:.2}{hot_part}; ticks {:.2}; counter calls in 4 s: {}", kind(*global), c.clients, c.ticks, c.counter);
        }
    }
    for (global, p) in &policies {
        let (per, refused, admitted) = flood(p.clone(), 1000);
        println!("flood    {}: refused requests {per:.2} ({refused} refused, {admitted} admitted in 4 s)", kind(*global));
    }
    std::process::ExitCode::SUCCESS
}
