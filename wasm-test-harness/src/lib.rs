//! Harness for running and testing Sluice outside of a real deployment.
//!
//! It starts the pieces a Sluice stack needs on 127.0.0.1 — an echo upstream,
//! Envoy instances fed through ECDS, and Redis — and offers a small blocking
//! HTTP client plus a load generator for integration tests and benchmarks.
//! Every process it starts is stopped again when its handle is dropped.

mod counter;
mod ecds;
mod echo;
mod envoy;
mod http;
mod load;
mod paths;
mod process;
mod redis;
mod stack;
mod template;
mod upstream;

pub use counter::{counter_binary, policy_with_secret_env, random_secret, Counter, CounterOptions};
pub use ecds::{ecds_resource, write_ecds, COUNTER_SECRET_ENV, ECDS_FILE};
pub use echo::{serve_echo, EchoServer};
pub use envoy::{Envoy, EnvoyOptions, ENVOY_VERSION};
pub use http::{get, request, Response};
pub use load::{load, load_each, LoadOptions, LoadReport, RequestFn, RequestSpec};
pub use paths::{envoy_binary, free_port, repo_root, wasm_module};
pub use process::{stop_children_on_signal, ExitedAtStart};
pub use redis::Redis;
pub use stack::{StackFile, StackInstance, STACK_FILE};
pub use template::render_template;
pub use upstream::{Upstream, UpstreamProtocol};
