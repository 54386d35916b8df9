//! The filter's parser of the counter service's answers (`parse_reply`) on
//! any body for any asks: what it accepts never grants more than asked,
//! more than the limit, or times outside the window; plus the instance
//! name derived from any node id.
//!
//! Input: `limit`, `window_ms` (u32 each, little endian), `want` (u16) and
//! the number of asks (u8), then the body (also read as a node id).
#![no_main]

extern crate sluice_fuzz;

use libfuzzer_sys::fuzz_target;
use sluice_core::counter_api::{instance_name, parse_reply, Ask, MAX_BLOCK_MS, MAX_INSTANCE};

const MS: u64 = 1_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((head, body)) = data.split_first_chunk::<11>() else {
        return;
    };
    let word = |at: usize| {
        u64::from(u32::from_le_bytes([
            head[at],
            head[at + 1],
            head[at + 2],
            head[at + 3],
        ]))
    };
    let (limit, window_ms, want) = (
        word(0),
        word(4),
        u32::from(u16::from_le_bytes([head[8], head[9]])),
    );
    let asks: Vec<Ask> = (0..head[10])
        .map(|i| Ask {
            // Spans of 1 to 4 windows, as the leader asks them.
            windows: u32::from(i % 4) + 1,
            ..Ask::new(format!("r{i}"), "tenant-1".into(), limit, window_ms, want, i % 2 == 1)
        })
        .collect();
    let name = instance_name(&String::from_utf8_lossy(body));
    assert!(!name.is_empty() && name.len() <= MAX_INSTANCE, "{name:?}");
    let refs: Vec<&Ask> = asks.iter().collect();
    let Ok(answers) = parse_reply(body, &refs) else {
        return;
    };
    assert_eq!(answers.len(), asks.len());
    for (a, ask) in answers.iter().zip(&asks) {
        assert!(
            a.granted <= ask.want && u64::from(a.granted) <= ask.limit && a.granted <= a.used,
            "{a:?} for {ask:?}"
        );
        assert!(
            u64::from(a.used) <= ask.limit && a.window > 0,
            "{a:?} for {ask:?}"
        );
        assert!(
            a.starts_in_ns <= ask.window_ms * MS && a.ends_in_ns <= 2 * ask.window_ms * MS,
            "{a:?} for {ask:?}"
        );
        assert!(a.blocked_ns <= MAX_BLOCK_MS * MS);
    }
});
