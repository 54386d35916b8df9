//! The core's host traits implemented over proxy-wasm hostcalls: shared data
//! as the `SharedStore`, the current request as a `Request`, and the clock.

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, Status};
use sluice_core::request::Request;
use sluice_core::store::{SharedStore, StoreError};

/// Envoy's shared data: one map per VM id, shared by all workers.
pub struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(v), cas)) => Ok(Some((v, cas.unwrap_or(0)))),
            Ok((None, _)) => Ok(None),
            Err(s) => Err(StoreError::Host(format!("get {key}: {s:?}"))),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        let cas = (cas != 0).then_some(cas);
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(s) => Err(StoreError::Host(format!("set {key}: {s:?}"))),
        }
    }
}

/// Most request body read for a rule's cost; a larger body costs the
/// rule's `max`.
pub const MAX_BODY: usize = 64 * 1024;

/// The request being decided, read lazily through hostcalls. `body_size`
/// is the buffered body's size, when the decision waited for it.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostRequest {
    pub body_size: Option<usize>,
}

fn header(name: &str) -> Option<String> {
    hostcalls::get_map_value(MapType::HttpRequestHeaders, name).ok().flatten()
}

impl Request for HostRequest {
    fn method(&mut self) -> Option<String> {
        header(":method")
    }
    fn path(&mut self) -> Option<String> {
        header(":path")
    }
    fn authority(&mut self) -> Option<String> {
        header(":authority")
    }
    fn header(&mut self, name: &str) -> Option<String> {
        header(name)
    }
    fn property(&mut self, path: &[String]) -> Option<Vec<u8>> {
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        hostcalls::get_property(path).ok().flatten()
    }
    fn body(&mut self) -> Option<Vec<u8>> {
        let size = self.body_size.filter(|s| *s <= MAX_BODY)?;
        hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size).ok().flatten()
    }
}

/// Wall-clock nanoseconds since the epoch (0 if the host clock is broken).
pub fn now_ns() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A small xorshift generator for jitter, seeded once per context.
pub struct Jitter(u64);

impl Jitter {
    pub fn seeded() -> Jitter {
        let seed = getrandom::u64().unwrap_or_else(|_| now_ns());
        Jitter(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}
