//! An upstream's rate-limit answer (`Retry-After`, `RateLimit`,
//! `RateLimit-Reset`, `X-RateLimit-*`) with any values, read at several
//! times: never a panic or an overflow, never a block longer than
//! `MAX_BLOCK_NS`, and nothing at all for a status other than 429/503.
//!
//! Input: response headers as text, one `name: value` per line.
#![no_main]

extern crate sluice_fuzz;

use libfuzzer_sys::fuzz_target;
use sluice_core::upstream::{block_for, MAX_BLOCK_NS};

const S: u64 = 1_000_000_000;
/// The epoch, 2025-11-17T12:34:45Z, 2200-01-01 and the end of u64.
const NOWS: [u64; 4] = [0, 1_763_382_885 * S, 7_258_118_400 * S, u64::MAX];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let headers: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.to_string()))
        .collect();
    for now in NOWS {
        for status in [429, 503] {
            if let Some(wait) = block_for(status, &headers, now) {
                assert!(wait > 0 && wait <= MAX_BLOCK_NS, "{wait}");
            }
        }
        assert_eq!(block_for(200, &headers, now), None);
    }
});
