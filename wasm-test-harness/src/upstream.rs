//! The service Envoy's ingress listener routes to: the echo server by
//! default, or the user's own (`make run UPSTREAM=host:port`).
//!
//! Accepted forms: `host:port` and `http://host:port` (HTTP/1.1),
//! `h2c://host:port` (HTTP/2 over cleartext), where host is an IPv4
//! address, a bracketed IPv6 address (`[::1]:8080`) or a DNS name. Anything
//! else (a path, a user, TLS, no port) is refused with the reason, so a
//! typo never reaches Envoy's configuration.

use std::fmt;
use std::net::IpAddr;

use anyhow::{bail, Context};

/// The protocol Envoy speaks to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge, without TLS.
    H2c,
}

/// Where Envoy's `upstream` cluster points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// An IP address (without brackets) or a DNS name.
    pub host: String,
    pub port: u16,
    pub protocol: UpstreamProtocol,
}

impl Upstream {
    /// The echo server (or any HTTP/1.1 service) on 127.0.0.1.
    pub fn local(port: u16) -> Upstream {
        Upstream {
            host: "127.0.0.1".to_string(),
            port,
            protocol: UpstreamProtocol::Http1,
        }
    }

    /// Parses `host:port`, `http://host:port` or `h2c://host:port`.
    pub fn parse(text: &str) -> anyhow::Result<Upstream> {
        let text = text.trim();
        let (protocol, rest) = if let Some(rest) = text.strip_prefix("h2c://") {
            (UpstreamProtocol::H2c, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (UpstreamProtocol::Http1, rest)
        } else if text.contains("://") {
            bail!("upstream {text:?}: only http:// and h2c:// are supported (TLS upstreams need an Envoy cluster of your own)");
        } else {
            (UpstreamProtocol::Http1, text)
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '@', '?', '#']) || rest.chars().any(char::is_whitespace) {
            bail!("upstream {text:?}: give host:port only (no path, user or query)");
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (addr, port) = v6.split_once("]:").with_context(|| {
                format!("upstream {text:?}: an IPv6 address is written [addr]:port")
            })?;
            match addr.parse::<IpAddr>() {
                Ok(IpAddr::V6(_)) => (addr, port),
                _ => bail!("upstream {text:?}: {addr:?} is not an IPv6 address"),
            }
        } else {
            let (host, port) = rest
                .rsplit_once(':')
                .with_context(|| format!("upstream {text:?}: missing :port"))?;
            if host.contains(':') {
                bail!("upstream {text:?}: IPv6 addresses go in brackets, [addr]:port");
            }
            (host, port)
        };
        if host.is_empty() {
            bail!("upstream {text:?}: missing host");
        }
        if host.parse::<IpAddr>().is_err()
            && !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            bail!("upstream {text:?}: {host:?} is neither an IP address nor a DNS name");
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .with_context(|| format!("upstream {text:?}: port must be 1..=65535"))?;
        Ok(Upstream {
            host: host.to_string(),
            port,
            protocol,
        })
    }

    /// The bootstrap template's `{{UPSTREAM_*}}` values.
    pub fn template_vars(&self) -> Vec<(String, String)> {
        let kind = if self.host.parse::<IpAddr>().is_ok() {
            "STATIC"
        } else {
            "STRICT_DNS"
        };
        let http = match self.protocol {
            UpstreamProtocol::Http1 => "http_protocol_options",
            UpstreamProtocol::H2c => "http2_protocol_options",
        };
        vec![
            ("UPSTREAM_HOST".to_string(), self.host.clone()),
            ("UPSTREAM_PORT".to_string(), self.port.to_string()),
            ("UPSTREAM_TYPE".to_string(), kind.to_string()),
            ("UPSTREAM_HTTP".to_string(), http.to_string()),
        ]
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.protocol {
            UpstreamProtocol::Http1 => "http",
            UpstreamProtocol::H2c => "h2c",
        };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn accepted_forms() {
        let cases = [
            (
                "127.0.0.1:8000",
                "127.0.0.1",
                8000,
                UpstreamProtocol::Http1,
                "STATIC",
            ),
            (
                "http://127.0.0.1:8000/",
                "127.0.0.1",
                8000,
                UpstreamProtocol::Http1,
                "STATIC",
            ),
            (
                "h2c://localhost:50051",
                "localhost",
                50051,
                UpstreamProtocol::H2c,
                "STRICT_DNS",
            ),
            ("[::1]:9000", "::1", 9000, UpstreamProtocol::Http1, "STATIC"),
            (
                " api.internal:80 ",
                "api.internal",
                80,
                UpstreamProtocol::Http1,
                "STRICT_DNS",
            ),
        ];
        for (text, host, port, protocol, kind) in cases {
            let u = Upstream::parse(text).unwrap();
            assert_eq!(
                (u.host.as_str(), u.port, u.protocol),
                (host, port, protocol),
                "{text}"
            );
            let vars = u.template_vars();
            assert!(
                vars.contains(&("UPSTREAM_TYPE".to_string(), kind.to_string())),
                "{text}: {vars:?}"
            );
            assert_eq!(
                Upstream::parse(&u.to_string()).unwrap(),
                u,
                "{text} round-trips"
            );
        }
    }

    #[test]
    fn refused_forms_say_why() {
        let cases = [
            ("", "missing"),
            ("127.0.0.1", "missing :port"),
            ("127.0.0.1:0", "1..=65535"),
            ("127.0.0.1:70000", "1..=65535"),
            ("127.0.0.1:http", "1..=65535"),
            (":8000", "missing host"),
            ("::1:8000", "brackets"),
            ("[1.2.3.4]:80", "not an IPv6"),
            ("[::1]8000", "[addr]:port"),
            ("https://example.com:443", "only http:// and h2c://"),
            ("127.0.0.1:8000/api", "host:port only"),
            ("user@host:80", "host:port only"),
            ("ho st:80", "host:port only"),
            ("h\u{e9}:80", "neither an IP address nor a DNS name"),
            ("a\"b:80", "neither an IP address nor a DNS name"),
        ];
        for (text, why) in cases {
            let e = Upstream::parse(text).unwrap_err().to_string();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }
}
