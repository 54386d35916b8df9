//! Sluice's core: everything the filter decides, with no proxy-wasm, clock or
//! I/O inside. Time, request data and stored bytes come in as arguments;
//! decisions come back as values. The proxy-wasm adapter in `src/` only
//! translates between Envoy and these types.
//!
//! Everything here may meet hostile values (request data, upstream and
//! counter answers, policies), so arithmetic and indexing that could
//! overflow or panic are refused outside tests: use `checked_*`,
//! `saturating_*`, `NonZero*` divisors and `get`.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects, clippy::indexing_slicing))]
pub mod adaptive;
pub mod allowance;
pub mod bucket;
pub mod calendar;
pub mod civil;
pub mod client_ip;
pub mod concurrency;
pub mod coordination;
pub mod counter_api;
pub mod duration;
pub mod flow;
pub mod hash;
pub mod jsonrpc;
pub mod lease;
pub mod limiter;
mod little_endian;
pub mod memory_counter;
pub mod path;
pub mod policy;
pub mod request;
pub mod response;
pub mod simulate;
pub mod slot;
pub mod store;
#[cfg(test)]
mod testing;
pub mod upstream;
