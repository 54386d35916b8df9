//! The simulate log reader (`Record::parse`, one Envoy access-log line
//! each) on any text, and a short replay of what it reads through the
//! default gateway policy.
#![no_main]

extern crate sluice_fuzz;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sluice_core::policy::Policy;
use sluice_core::simulate::{format_time, replay, Record};

const GATEWAY: &str = include_str!("../../policies/mcp-gateway.json");
/// Records replayed per input: enough for a bucket to fill and a lease to
/// be asked for, few enough for the replay not to dwarf the reading.
const MAX_RECORDS: usize = 8;

fn gateway() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        Policy::from_json(GATEWAY).unwrap_or_else(|e| panic!("gateway policy: {e}"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut records: Vec<Record> = text.lines().filter_map(|l| Record::parse(l).ok()).collect();
    for r in &records {
        let _ = format_time(r.time_ns);
    }
    records.truncate(MAX_RECORDS);
    let n = records.len() as u64;
    let report = replay(gateway(), records);
    assert_eq!(report.requests, n);
    assert_eq!(report.admitted + report.denied, n);
});
