//! The counter service's request parser and checks (`POST /v1/reserve` and
//! `POST /v1/block` bodies) on any bytes; a body that passes is reserved,
//! twice, by the service's window arithmetic at a few clock readings, and
//! a reservation never grants more than wanted nor reserves more than the
//! limit in a window.
#![no_main]

extern crate sluice_fuzz;

use libfuzzer_sys::fuzz_target;
use sluice_counter::api::{block_list, reserve_leases, MAX_BODY_BYTES};
use sluice_counter::window::{block_until, blocked_ms, expires_at_ms, reserve, timing, Ask};

/// 2025-11-17T12:34:45Z and 2199-12-31, in ms.
const NOWS: [u64; 3] = [0, 1_763_382_885_000, 7_258_118_399_999];

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_BODY_BYTES {
        return;
    }
    if let Ok(blocks) = block_list(data, "rl:") {
        for b in &blocks {
            assert!(b.key.starts_with("rl:") && b.key.ends_with(":block"));
            for now in NOWS {
                let until = block_until(None, now, b.for_ms);
                assert!(blocked_ms(Some(until), now) <= b.for_ms);
            }
        }
    }
    let Ok(leases) = reserve_leases(data, "rl:") else {
        return;
    };
    for lease in &leases {
        assert!(lease.want <= lease.limit);
        for now_ms in NOWS {
            let ask = |next| Ask {
                now_ms,
                window_ms: lease.window_ms,
                calendar: lease.calendar,
                limit: lease.limit,
                want: lease.want,
                next,
            };
            let mut slot = None;
            for next in [false, true, false, true] {
                let (changed, o) = reserve(slot, &ask(next));
                assert!(o.granted <= lease.want && o.used <= lease.limit, "{o:?}");
                if let Some(s) = changed {
                    let _ = expires_at_ms(&s, lease.window_ms, lease.calendar);
                    slot = Some(s);
                }
                let _ = timing(o.window, lease.window_ms, lease.calendar, now_ms);
            }
        }
    }
});
