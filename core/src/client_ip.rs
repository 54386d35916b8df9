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
    host.parse::<IpAddr>().ok().map(canonical)
}

/// The address as text, IPv4 written without the formatting machinery
/// (every decision keyed on the client formats one).
fn canonical(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mut s = String::with_capacity(15);
            // A decimal digit fits in the low bits of b'0' (0x30).
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                if octet >= 100 {
                    s.push(char::from(b'0' | (octet / 100)));
                }
                if octet >= 10 {
                    s.push(char::from(b'0' | (octet / 10 % 10)));
                }
                s.push(char::from(b'0' | (octet % 10)));
            }
            s
        }
        IpAddr::V6(_) => ip.to_string(),
    }
}

/// The client IP that `X-Forwarded-For` names for `trusted_hops`, or
/// `None` when the peer itself is the client: no trusted hops, no header,
/// a chain too short, or an unparseable entry where the client should be.
/// Decided without the peer, so that it is read only when needed.
pub fn forwarded_client(xff: Option<&str>, trusted_hops: u32) -> Option<String> {
    let hops = usize::try_from(trusted_hops).ok().filter(|h| *h > 0)?;
    // chain = entries ++ [peer]; the client sits at chain[len - 1 - hops],
    // the hops-th entry from the right.
    let candidate = xff?.rsplit(',').nth(hops.checked_sub(1)?)?.trim();
    candidate.parse::<IpAddr>().ok().map(canonical)
}

/// The client IP for `trusted_hops`, given the raw `X-Forwarded-For` header
/// (if any) and the peer IP. Unparseable entries in the trusted part of the
/// chain end the walk at the peer: a garbled header never yields a made-up
/// key, and canonical text means `::ffff:1.2.3.4`-style aliases of one
/// address share a key only when they are the same address.
pub fn client_ip(xff: Option<&str>, peer: &str, trusted_hops: u32) -> String {
    forwarded_client(xff, trusted_hops).unwrap_or_else(|| peer.to_string())
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

    #[test]
    fn ipv4_text_is_canonical() {
        for (raw, want) in [("0.0.0.0", "0.0.0.0"), ("10.9.99.100", "10.9.99.100"), ("255.255.255.255", "255.255.255.255")] {
            assert_eq!(forwarded_client(Some(raw), 1).as_deref(), Some(want));
        }
        for octets in [[1, 20, 199, 250], [0, 5, 10, 255], [100, 101, 9, 99]] {
            let ip = std::net::Ipv4Addr::from(octets);
            assert_eq!(canonical(IpAddr::V4(ip)), ip.to_string());
        }
        // What the parser refuses never becomes a key.
        assert_eq!(forwarded_client(Some("010.1.1.1"), 1), None);
        assert_eq!(forwarded_client(Some("1.1.1.1"), 0), None);
        assert_eq!(forwarded_client(None, 1), None);
    }
}
