//! The client address a rule keys on, worked out from `X-Forwarded-For` and
//! the TCP peer the way Envoy's `xff_num_trusted_hops` does it.
//!
//! With `trusted_hops = N` the chain is every `X-Forwarded-For` entry followed
//! by the peer; the client is the entry N places from the right. When the
//! chain is shorter than N + 1 (no header, or a client that connected past
//! the trusted proxies), the peer itself is used: an untrusted client can
//! never choose its own key by sending a made-up header.

use std::net::IpAddr;

/// Strips the port from Envoy's `source.address` (`1.2.3.4:5678`,
/// `[::1]:5678`) and returns the canonical address text.
pub fn peer_ip(source_address: &str) -> Option<String> {
    let host = if let Some(rest) = source_address.strip_prefix('[') {
        rest.split(']').next()?
    } else if source_address.matches(':').count() == 1 {
        source_address.split(':').next()?
    } else {
        source_address
    };
    host.parse::<IpAddr>().ok().map(|ip| ip.to_string())
}

/// The client IP for `trusted_hops`, given the raw `X-Forwarded-For` header
/// (if any) and the peer IP. Unparseable entries in the trusted part of the
/// chain end the walk at the peer: a garbled header never yields a made-up
/// key, and canonical text means `::ffff:1.2.3.4`-style aliases of one
/// address share a key only when they are the same address.
pub fn client_ip(xff: Option<&str>, peer: &str, trusted_hops: u32) -> String {
    if trusted_hops == 0 {
        return peer.to_string();
    }
    let Some(xff) = xff else {
        return peer.to_string();
    };
    let entries: Vec<&str> = xff.split(',').map(str::trim).collect();
    let hops = trusted_hops as usize;
    // chain = entries ++ [peer]; the client sits at chain[len - 1 - hops].
    if entries.len() < hops {
        return peer.to_string();
    }
    let candidate = entries[entries.len() - hops];
    match candidate.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => peer.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn peer_addresses() {
        assert_eq!(peer_ip("10.0.0.1:443").as_deref(), Some("10.0.0.1"));
        assert_eq!(peer_ip("[::1]:8080").as_deref(), Some("::1"));
        assert_eq!(peer_ip("::1").as_deref(), Some("::1"));
        assert_eq!(peer_ip("garbage"), None);
        assert_eq!(peer_ip(""), None);
    }

    #[test]
    fn picks_the_entry_trusted_hops_from_the_right() {
        let peer = "10.0.0.9";
        for (xff, hops, want) in [
            (None, 1, "10.0.0.9"),
            (Some("203.0.113.42"), 1, "203.0.113.42"),
            (Some("1.1.1.1, 203.0.113.42"), 1, "203.0.113.42"),
            (Some("1.1.1.1, 203.0.113.42"), 2, "1.1.1.1"),
            (Some("1.1.1.1, 203.0.113.42"), 3, "10.0.0.9"),
            (Some("203.0.113.42"), 0, "10.0.0.9"),
            (Some("not-an-ip"), 1, "10.0.0.9"),
            (Some(""), 1, "10.0.0.9"),
            (Some("2001:DB8::1"), 1, "2001:db8::1"),
        ] {
            assert_eq!(client_ip(xff, peer, hops), want, "{xff:?} hops={hops}");
        }
    }
}
