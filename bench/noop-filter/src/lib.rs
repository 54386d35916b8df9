//! A proxy-wasm HTTP filter that does nothing: every request and response
//! passes through the VM untouched. `sluice-bench` loads it exactly as it
//! loads Sluice (same ECDS resource, same V8 runtime, same build flags), so
//! the difference between Envoy with this filter and Envoy without one is
//! the cost of the proxy-wasm VM itself, the floor under any Wasm filter.
//! It compiles to a module only for wasm32-wasip1; elsewhere it is empty.

#[cfg(target_os = "wasi")]
mod noop {
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, ContextType};

    pub struct NoopRoot;

    impl Context for NoopRoot {}

    impl RootContext for NoopRoot {
        fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
            true
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }

        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Noop))
        }
    }

    /// The HTTP context: the SDK's defaults continue every callback.
    struct Noop;

    impl Context for Noop {}

    impl HttpContext for Noop {
        fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
            Action::Continue
        }
    }
}

#[cfg(target_os = "wasi")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Warn);
    proxy_wasm::set_root_context(|_context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(noop::NoopRoot)
    });
}}
