//! The request mixes every load in the bench sends, built identically for
//! the harness's load generator (here) and for wrk (`bench/wrk/mix.lua`,
//! which must stay in step with [`Mix::spec`]).
//!
//! Client `k` sends `GET /api/v1/items` with `x-forwarded-for: 10.a.b.c`
//! (`k` in base 256) and `x-tenant-id: tenant-k`; request `n` comes from
//! client `offset + n mod keys`. With `hot`, every even request comes from
//! one hot client instead (`GET /api/v1/categories` from 192.0.2.10, a rule
//! of 100/s per client IP), so that about half of any load above a few
//! hundred requests a second is denied.

use std::sync::Arc;

use serde::Serialize;
use wasm_test_harness::{RequestFn, RequestSpec};

/// Path of the requests that only the per-client and per-tenant rules match.
pub const PATH: &str = "/api/v1/items";
/// Path of the hot client's requests (the `categories` rule, 100/s per IP).
pub const HOT_PATH: &str = "/api/v1/categories";
/// The hot client's address.
pub const HOT_IP: &str = "192.0.2.10";

/// Which requests a load sends; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Mix {
    /// Distinct clients (each with its own address and tenant).
    pub keys: u64,
    /// Number of the first client.
    pub offset: u64,
    /// Every even request comes from the hot client.
    pub hot: bool,
}

impl Mix {
    /// Request `n` of the mix.
    pub fn spec(&self, n: u64) -> RequestSpec {
        let keys = self.keys.max(1);
        if self.hot {
            let k = self.offset + (n / 2) % keys;
            if n.is_multiple_of(2) {
                return RequestSpec::get(HOT_PATH).header("x-forwarded-for", HOT_IP).header("x-tenant-id", &format!("tenant-{k}"));
            }
            return client(k);
        }
        client(self.offset + n % keys)
    }

    /// The mix as the harness load generator's request function.
    pub fn request_fn(self) -> RequestFn {
        Arc::new(move |n| self.spec(n))
    }

    /// The arguments `bench/wrk/mix.lua` takes after `--`.
    pub fn wrk_args(&self) -> Vec<String> {
        vec![self.keys.max(1).to_string(), self.offset.to_string(), u8::from(self.hot).to_string()]
    }

    /// One line for tables and logs.
    pub fn describe(&self) -> String {
        let clients = format!("{} clients (own IP and tenant each), GET {PATH}", self.keys);
        if self.hot {
            format!("half from one hot client (GET {HOT_PATH}, 100/s per IP), half from {clients}")
        } else {
            clients
        }
    }
}

fn client(k: u64) -> RequestSpec {
    RequestSpec::get(PATH).header("x-forwarded-for", &ip(k)).header("x-tenant-id", &format!("tenant-{k}"))
}

/// Client `k`'s address, 10.a.b.c (16.7 million distinct).
pub fn ip(k: u64) -> String {
    format!("10.{}.{}.{}", (k >> 16) & 255, (k >> 8) & 255, k & 255)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(spec: &'a RequestSpec, name: &str) -> &'a str {
        spec.headers.iter().find(|(n, _)| n == name).map_or("", |(_, v)| v.as_str())
    }

    #[test]
    fn clients_cycle_from_the_offset() {
        let mix = Mix { keys: 3, offset: 65_536 + 256 + 7, hot: false };
        let first = mix.spec(0);
        assert_eq!(first.path, PATH);
        assert_eq!(header(&first, "x-forwarded-for"), "10.1.1.7");
        assert_eq!(header(&first, "x-tenant-id"), "tenant-65799");
        assert_eq!(mix.spec(3), first);
        assert_ne!(mix.spec(1), first);
    }

    #[test]
    fn a_hot_mix_alternates_the_hot_client_and_the_cycle() {
        let mix = Mix { keys: 2, offset: 0, hot: true };
        let specs: Vec<_> = (0..4).map(|n| mix.spec(n)).collect();
        assert_eq!(specs[0].path, HOT_PATH);
        assert_eq!(header(&specs[0], "x-forwarded-for"), HOT_IP);
        assert_eq!(specs[1].path, PATH);
        assert_eq!(header(&specs[1], "x-forwarded-for"), "10.0.0.0");
        assert_eq!(specs[2].path, HOT_PATH);
        assert_eq!(header(&specs[3], "x-forwarded-for"), "10.0.0.1");
        assert_eq!(mix.wrk_args(), ["2", "0", "1"]);
    }
}
