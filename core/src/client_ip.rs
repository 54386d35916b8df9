//! The client address a rule keys on, worked out from `X-Forwarded-For` and
//! the TCP peer the way Envoy's `xff_num_trusted_hops` does it.
//!
//! With `trusted_hops = N` the chain is every `X-Forwarded-For` entry followed
//! by the peer; the client is the entry N places from the right. When the
//! chain is shorter than N + 1 (no header, or a client that connected past
//! the trusted proxies), the peer itself is used: an untrusted client can
//! never choose its own key by sending a made-up header.
//!
//! One client, one key: an IPv4 address is its own key, and so is its
//! IPv4-mapped IPv6 form (`::ffff:a.b.c.d` keys as `a.b.c.d`). An IPv6
//! address keys as its network of `ipv6_prefix` bits (`2001:db8:1:2::/64`
//! by default), because a single host is routinely given a whole /64 and
//! could otherwise take a fresh bucket per request.

use std::net::{IpAddr, Ipv6Addr};

/// Bits of an IPv6 address that name one client unless the policy says
/// otherwise: the /64 a single subscriber or host is usually given.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// Strips the port from Envoy's `source.address` (`1.2.3.4:5678`,
/// `[::1]:5678`) and parses the address.
fn parse_peer(source_address: &str) -> Option<IpAddr> {
    let host = if let Some(rest) = source_address.strip_prefix('[') {
        rest.split(']').next()?
    } else if source_address.matches(':').count() == 1 {
        source_address.split(':').next()?
    } else {
        source_address
    };
    host.parse::<IpAddr>().ok()
}

/// The peer's address as canonical text (IPv4-mapped IPv6 written as
/// IPv4), without any prefix applied: `None` when it is not an address.
pub fn peer_ip(source_address: &str) -> Option<String> {
    parse_peer(source_address).map(|ip| key(ip, 128))
}

/// The peer as a client key (see the module's `//!`).
pub fn peer_client(source_address: &str, ipv6_prefix: u8) -> Option<String> {
    parse_peer(source_address).map(|ip| key(ip, ipv6_prefix))
}

/// The key of one address: IPv4 (also when mapped into IPv6) as its dotted
/// text, IPv6 as its first `ipv6_prefix` bits (`addr/prefix`), or the
/// plain address when the prefix is 128.
fn key(ip: IpAddr, ipv6_prefix: u8) -> String {
    match ip {
        IpAddr::V4(v4) => ipv4_text(v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => ipv4_text(v4.octets()),
            None if ipv6_prefix >= 128 => v6.to_string(),
            None => {
                let bits = u128::from(v6);
                // ipv6_prefix is 1..=127 here: the shift is in range.
                let mask = u128::MAX.checked_shl(128u32.saturating_sub(u32::from(ipv6_prefix))).unwrap_or(0);
                format!("{}/{ipv6_prefix}", Ipv6Addr::from(bits & mask))
            }
        },
    }
}

/// IPv4 as text without the formatting machinery (every decision keyed on
/// the client formats one).
fn ipv4_text(octets: [u8; 4]) -> String {
    let mut s = String::with_capacity(15);
    for (i, octet) in octets.into_iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        // A decimal digit fits in the low bits of b'0' (0x30).
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

/// The client key that `X-Forwarded-For` names for `trusted_hops`, or
/// `None` when the peer itself is the client: no trusted hops, no header,
/// a chain too short, or an unparseable entry where the client should be.
/// Decided without the peer, so that it is read only when needed.
pub fn forwarded_client(xff: Option<&str>, trusted_hops: u32, ipv6_prefix: u8) -> Option<String> {
    let hops = usize::try_from(trusted_hops).ok().filter(|h| *h > 0)?;
    // chain = entries ++ [peer]; the client sits at chain[len - 1 - hops],
    // the hops-th entry from the right.
    let candidate = xff?.rsplit(',').nth(hops.checked_sub(1)?)?.trim();
    candidate.parse::<IpAddr>().ok().map(|ip| key(ip, ipv6_prefix))
}

/// The client key for `trusted_hops`, given the raw `X-Forwarded-For`
/// header (if any) and Envoy's `source.address`. Unparseable entries in the
/// trusted part of the chain end the walk at the peer: a garbled header
/// never yields a made-up key.
pub fn client_ip(xff: Option<&str>, source_address: &str, trusted_hops: u32, ipv6_prefix: u8) -> Option<String> {
    forwarded_client(xff, trusted_hops, ipv6_prefix).or_else(|| peer_client(source_address, ipv6_prefix))
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
        assert_eq!(peer_ip("[::ffff:10.0.0.1]:443").as_deref(), Some("10.0.0.1"));
        assert_eq!(peer_ip("garbage"), None);
        assert_eq!(peer_ip(""), None);
    }

    #[test]
    fn picks_the_entry_trusted_hops_from_the_right() {
        let peer = "10.0.0.9:1234";
        for (xff, hops, want) in [
            (None, 1, "10.0.0.9"),
            (Some("203.0.113.42"), 1, "203.0.113.42"),
            (Some("1.1.1.1, 203.0.113.42"), 1, "203.0.113.42"),
            (Some("1.1.1.1, 203.0.113.42"), 2, "1.1.1.1"),
            (Some("1.1.1.1, 203.0.113.42"), 3, "10.0.0.9"),
            (Some("203.0.113.42"), 0, "10.0.0.9"),
            (Some("not-an-ip"), 1, "10.0.0.9"),
            (Some(""), 1, "10.0.0.9"),
            (Some("2001:DB8::1"), 1, "2001:db8::/64"),
        ] {
            assert_eq!(client_ip(xff, peer, hops, 64).as_deref(), Some(want), "{xff:?} hops={hops}");
        }
        assert_eq!(client_ip(None, "nowhere", 1, 64), None);
    }

    #[test]
    fn ipv6_clients_are_their_prefix() {
        for (addr, prefix, want) in [
            // One /64: one client, whatever the interface bits.
            ("2001:db8:1:2::1", 64, "2001:db8:1:2::/64"),
            ("2001:db8:1:2:ffff:ffff:ffff:ffff", 64, "2001:db8:1:2::/64"),
            ("2001:db8:1:3::1", 64, "2001:db8:1:3::/64"),
            // The prefix is the policy's: /48 folds whole sites, /128 none.
            ("2001:db8:1:3::1", 48, "2001:db8:1::/48"),
            ("2001:db8:1:2::1", 128, "2001:db8:1:2::1"),
            ("2001:db8:1:2::1", 127, "2001:db8:1:2::/127"),
            ("ffff::1", 1, "8000::/1"),
            ("::1", 64, "::/64"),
            // IPv4-mapped: the IPv4 client, with any prefix.
            ("::ffff:192.0.2.7", 64, "192.0.2.7"),
            ("::FFFF:c000:0207", 128, "192.0.2.7"),
        ] {
            assert_eq!(forwarded_client(Some(addr), 1, prefix).as_deref(), Some(want), "{addr} /{prefix}");
            assert_eq!(peer_client(&format!("[{addr}]:80"), prefix).as_deref(), Some(want), "peer {addr} /{prefix}");
        }
        // The mapped form and the plain address are one client.
        assert_eq!(peer_client("[::ffff:198.51.100.1]:9", 64), peer_client("198.51.100.1:9", 64));
        // A prefix outside 1..=128 (refused by the policy) does not panic.
        assert_eq!(key("2001:db8::1".parse().unwrap_or(IpAddr::V4([0; 4].into())), 0), "::/0");
        assert_eq!(key("2001:db8::1".parse().unwrap_or(IpAddr::V4([0; 4].into())), 200), "2001:db8::1");
    }

    #[test]
    fn ipv4_text_is_canonical() {
        for (raw, want) in [("0.0.0.0", "0.0.0.0"), ("10.9.99.100", "10.9.99.100"), ("255.255.255.255", "255.255.255.255")] {
            assert_eq!(forwarded_client(Some(raw), 1, 64).as_deref(), Some(want));
        }
        for octets in [[1, 20, 199, 250], [0, 5, 10, 255], [100, 101, 9, 99]] {
            let ip = std::net::Ipv4Addr::from(octets);
            assert_eq!(key(IpAddr::V4(ip), 64), ip.to_string());
        }
        // What the parser refuses never becomes a key.
        assert_eq!(forwarded_client(Some("010.1.1.1"), 1, 64), None);
        assert_eq!(forwarded_client(Some("1.1.1.1"), 0, 64), None);
        assert_eq!(forwarded_client(None, 1, 64), None);
    }
}
