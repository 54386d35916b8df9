//! Service metrics and their Prometheus text exposition (format 0.0.4), kept
//! by hand: a few atomic counters, responses by status, and one fixed-bucket
//! histogram of store call latency.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the store latency buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Counters shared by every request.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<u16, u64>>,
    leases: AtomicU64,
    granted: AtomicU64,
    released: AtomicU64,
    leases_blocked: AtomicU64,
    block_requests: AtomicU64,
    blocks: AtomicU64,
    store_errors: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_ns: AtomicU64,
}

impl Metrics {
    /// Counts one answered `/v1/*` request.
    pub fn request(&self, status: u16) {
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *requests.entry(status).or_default() += 1;
    }

    /// Counts `leases` applied leases that granted `units` in total, of
    /// which `blocked` were answered while their key was blocked.
    pub fn leases(&self, leases: u64, units: u64, blocked: u64) {
        self.leases.fetch_add(leases, Ordering::Relaxed);
        self.granted.fetch_add(units, Ordering::Relaxed);
        self.leases_blocked.fetch_add(blocked, Ordering::Relaxed);
    }

    /// Counts `units` asked back by releases (per window, summed over the
    /// windows each covers).
    pub fn released(&self, units: u64) {
        self.released.fetch_add(units, Ordering::Relaxed);
    }

    /// Counts one applied `/v1/block` request recording `blocks` blocks.
    pub fn blocks(&self, blocks: u64) {
        self.block_requests.fetch_add(1, Ordering::Relaxed);
        self.blocks.fetch_add(blocks, Ordering::Relaxed);
    }

    /// Records one store call taking `elapsed`, failed or not.
    pub fn store_call(&self, elapsed: Duration, failed: bool) {
        if failed {
            self.store_errors.fetch_add(1, Ordering::Relaxed);
        }
        let secs = elapsed.as_secs_f64();
        for (bucket, bound) in self.latency_buckets.iter().zip(BUCKETS) {
            if secs <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.latency_sum_ns.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.push_str(
            "# HELP sluice_counter_requests_total Answered /v1 requests by HTTP status.\n",
        );
        out.push_str("# TYPE sluice_counter_requests_total counter\n");
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (status, count) in requests {
            let _ = writeln!(
                out,
                "sluice_counter_requests_total{{status=\"{status}\"}} {count}"
            );
        }
        let simple = [
            (
                "sluice_counter_leases_total",
                "Leases applied.",
                load(&self.leases),
            ),
            (
                "sluice_counter_units_granted_total",
                "Units granted (per window, summed over the windows each lease covers).",
                load(&self.granted),
            ),
            (
                "sluice_counter_units_released_total",
                "Units asked back by releases (per window, summed over the windows each covers; counts never drop below 0).",
                load(&self.released),
            ),
            (
                "sluice_counter_leases_blocked_total",
                "Leases answered while their key was blocked (granting nothing).",
                load(&self.leases_blocked),
            ),
            (
                "sluice_counter_block_requests_total",
                "Block requests applied.",
                load(&self.block_requests),
            ),
            (
                "sluice_counter_blocks_total",
                "Blocks applied.",
                load(&self.blocks),
            ),
            (
                "sluice_counter_store_errors_total",
                "Failed store calls.",
                load(&self.store_errors),
            ),
        ];
        for (name, help, value) in simple {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let name = "sluice_counter_store_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Store call latency.\n# TYPE {name} histogram"
        );
        for (bucket, bound) in self.latency_buckets.iter().zip(BUCKETS) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", load(bucket));
        }
        let count = load(&self.latency_count);
        let sum = load(&self.latency_sum_ns) as f64 / 1e9;
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.request(200);
        m.request(200);
        m.request(503);
        m.leases(3, 42, 1);
        m.released(8);
        m.blocks(2);
        m.blocks(1);
        m.store_call(Duration::from_millis(3), false);
        m.store_call(Duration::from_millis(45), true);
        let text = m.render();
        for line in [
            "sluice_counter_requests_total{status=\"200\"} 2",
            "sluice_counter_requests_total{status=\"503\"} 1",
            "sluice_counter_leases_total 3",
            "sluice_counter_units_granted_total 42",
            "sluice_counter_units_released_total 8",
            "sluice_counter_leases_blocked_total 1",
            "sluice_counter_block_requests_total 2",
            "sluice_counter_blocks_total 3",
            "sluice_counter_store_errors_total 1",
            "sluice_counter_store_seconds_bucket{le=\"0.005\"} 1",
            "sluice_counter_store_seconds_bucket{le=\"0.05\"} 2",
            "sluice_counter_store_seconds_bucket{le=\"+Inf\"} 2",
            "sluice_counter_store_seconds_count 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
