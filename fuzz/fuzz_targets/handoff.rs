//! The refill message workers hand their leader (`decode_needs`) on any
//! bytes, binary or JSON: never a panic, and whatever decodes encodes back
//! to a message that decodes the same.
#![no_main]

extern crate sluice_fuzz;

use libfuzzer_sys::fuzz_target;
use sluice_core::limiter::{decode_needs, encode_needs};

fuzz_target!(|data: &[u8]| {
    let needs = decode_needs(data);
    if let Some(bytes) = encode_needs(&needs) {
        assert_eq!(decode_needs(&bytes), needs, "round trip");
    } else {
        // Only names longer than their u16 length can fail to encode.
        assert!(needs
            .iter()
            .any(|n| n.ask.rule.len() > usize::from(u16::MAX)
                || n.ask.id.len() > usize::from(u16::MAX)));
    }
});
