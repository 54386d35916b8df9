//! The Sluice filter: a proxy-wasm HTTP filter for Envoy. Everything it
//! decides comes from `sluice-core`; this crate only translates between the
//! proxy-wasm ABI and the core (policy bytes in, shared data, request
//! attributes, clock, local replies and headers out). It compiles to a
//! module only for wasm32-wasip1; elsewhere it is an empty library so that
//! native `cargo test` covers the workspace.
//!
//! A panic here traps the VM, and with the plugin's `FAIL_CLOSED` its
//! worker answers 503 until the next configuration: arithmetic and
//! indexing that could panic are refused, as in the core.
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

pub use sluice_core as core;

#[cfg(target_os = "wasi")]
mod callout;
#[cfg(target_os = "wasi")]
mod drive;
#[cfg(target_os = "wasi")]
mod filter;
#[cfg(target_os = "wasi")]
mod global;
#[cfg(target_os = "wasi")]
mod host;
#[cfg(target_os = "wasi")]
mod logs;
#[cfg(target_os = "wasi")]
mod metrics;
#[cfg(target_os = "wasi")]
mod queue;
#[cfg(target_os = "wasi")]
mod root;

#[cfg(target_os = "wasi")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::SluiceRoot::new(context_id))
    });
}}
