//! The root context: parses and validates the policy on every
//! (re)configuration and hands it to each new HTTP context. A refused policy
//! makes `on_configure` return false, which makes Envoy keep the previous
//! configuration.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use sluice_core::policy::Policy;
use sluice_core::store::ensure_slots;

use crate::filter::SluiceFilter;
use crate::host::{HostStore, Jitter};

#[derive(Default)]
pub struct SluiceRoot {
    policy: Option<Rc<Policy>>,
}

impl Context for SluiceRoot {}

impl RootContext for SluiceRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let text = match std::str::from_utf8(&bytes) {
            Ok(t) => t,
            Err(e) => {
                log::error!("policy refused: not UTF-8 text: {e}");
                return false;
            }
        };
        let policy = match Policy::from_json(text) {
            Ok(p) => p,
            Err(e) => {
                log::error!("policy refused: {}", e.one_line());
                return false;
            }
        };
        if let Err(e) = ensure_slots(&HostStore, policy.slots) {
            log::error!("policy refused: cannot create {} state slots: {e}", policy.slots);
            return false;
        }
        log::info!("policy loaded: {} rules, {} slots", policy.rules.len(), policy.slots);
        self.policy = Some(Rc::new(policy));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(SluiceFilter::new(self.policy.clone(), Jitter::seeded())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
