//! Sluice's counter service: Envoy instances reserve leases of rate-limit
//! units for fixed time windows over HTTP, and the service keeps the counts in
//! Redis (single node or Cluster) or in memory, never granting more than a
//! limit per window however many instances ask at once.
//!
//! [`app`] builds the HTTP router over a [`CounterStore`]; the binary in
//! `main.rs` parses flags ([`config`]) and serves it.

pub mod api;
pub mod config;
pub mod keys;
pub mod metrics;
pub mod server;
pub mod store;
pub mod window;

pub use api::{app, AppState};
pub use store::{
    Block, Blocked, CounterStore, Lease, MemoryStore, RedisStore, RedisTarget, Reserved, StoreError,
};
