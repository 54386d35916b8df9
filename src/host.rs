//! The core's host traits implemented over proxy-wasm hostcalls: shared data
//! as the `SharedStore`, the current request as a `Request`, and the clock.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, Status};
use sluice_core::allowance::Allowances;
use sluice_core::request::{HeaderPairs, Request};
use sluice_core::store::{SharedStore, StoreError};

/// Envoy's shared data: one map per VM id, shared by all workers; with
/// the worker's shares of busy keys (`sluice_core::allowance`).
pub struct HostStore;

thread_local! {
    /// This worker's shares: one per worker thread for the life of the
    /// process (leaked once, so that the store can lend them out).
    static SHARES: &'static RefCell<Allowances> = Box::leak(Box::new(RefCell::new(Allowances::default())));
}

impl SharedStore for HostStore {
    fn allowances(&self) -> Option<&RefCell<Allowances>> {
        Some(SHARES.with(|s| *s))
    }

    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        crate::metrics::slot_read();
        match hostcalls::get_shared_data(key) {
            Ok((Some(v), cas)) => Ok(Some((v, cas.unwrap_or(0)))),
            Ok((None, _)) => Ok(None),
            Err(s) => Err(StoreError::Host(format!("get {key}: {s:?}"))),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        let cas = (cas != 0).then_some(cas);
        crate::metrics::slot_written();
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(s) => Err(StoreError::Host(format!("set {key}: {s:?}"))),
        }
    }
}

/// Most request body read for a rule's cost; a larger body costs the
/// rule's `max`.
pub const MAX_BODY: usize = sluice_core::flow::MAX_BODY;

/// The request being decided, read lazily through hostcalls: all its
/// headers in one crossing, on the first one asked for, and its body in
/// one, on the first use. `body_size` is the buffered body's size, when
/// the decision waited for it. The headers are kept for the stream's next
/// decisions (after its body, a reserve call, a wait in a queue): see
/// [`forget_headers`].
#[derive(Debug, Default)]
pub struct HostRequest {
    context_id: u32,
    body_size: Option<usize>,
    headers: Option<Rc<HeaderPairs>>,
    /// The body, once fetched (`None` inside: none could be read).
    body: Option<Option<Vec<u8>>>,
}

mod abi {
    use proxy_wasm::types::{MapType, Status};

    extern "C" {
        /// The same import the SDK's `get_map` uses; called directly so
        /// that the map is parsed without a `String` per header, and a
        /// refusal is an empty map rather than the SDK's panic.
        pub fn proxy_get_header_map_pairs(map_type: MapType, return_map_data: *mut *mut u8, return_map_size: *mut usize) -> Status;
        /// The SDK's `done` panics when the host answers anything but Ok.
        pub fn proxy_done() -> Status;
    }
}

/// Tells the host that the current (root) context, which asked to finish
/// later, has finished. Whatever the host answers, there is nothing more
/// to do.
pub fn done() {
    // SAFETY: an import without arguments.
    let status = unsafe { abi::proxy_done() };
    if status != Status::Ok {
        log::debug!("proxy_done: {status:?}");
    }
}

/// The `:status` of a response header map (the upstream's, or a call's),
/// read as bytes: the SDK's `String` getter aborts the VM on a value that
/// is not UTF-8. `None` when absent or not a number.
pub fn status(map: MapType) -> Option<u32> {
    hostcalls::get_map_value_bytes(map, ":status").ok().flatten().and_then(|s| std::str::from_utf8(&s).ok()?.parse().ok())
}

/// One of the current stream's header maps, read as bytes in one crossing
/// (the SDK's getters turn each value into a `String` and abort the VM on
/// one that is not UTF-8, which any upstream may send).
pub fn header_map(map: MapType) -> HeaderPairs {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer to `size` bytes it allocated through
    // the SDK's `proxy_on_memory_allocate` (a `Vec<u8>` of that capacity),
    // which we take back as a `Vec` and so free once.
    let buf = unsafe {
        match abi::proxy_get_header_map_pairs(map, &mut data, &mut size) {
            Status::Ok if !data.is_null() => Vec::from_raw_parts(data, size, size),
            _ => Vec::new(),
        }
    };
    HeaderPairs::parse(buf)
}

/// Streams whose request headers a worker keeps between decisions, and the
/// largest map kept: a stream decided again (a JSON-RPC body, a reserve
/// call, a queue) reads its headers once. Bounded: past either, the map is
/// read again when needed.
const KEPT_STREAMS: usize = 64;
const KEPT_BYTES: usize = 16 * 1024;

thread_local! {
    static KEPT_HEADERS: RefCell<HashMap<u32, Rc<HeaderPairs>>> = RefCell::new(HashMap::new());
}

/// The stream ended: its kept headers go.
pub fn forget_headers(context_id: u32) {
    KEPT_HEADERS.with(|k| k.borrow_mut().remove(&context_id));
}

/// Stream `context_id`'s request headers: kept ones, else read in one
/// crossing.
fn request_headers(context_id: u32) -> Rc<HeaderPairs> {
    KEPT_HEADERS.with(|k| k.borrow().get(&context_id).cloned()).unwrap_or_else(|| Rc::new(header_map(MapType::HttpRequestHeaders)))
}

impl HostRequest {
    /// The request of stream `context_id` (the effective context).
    pub fn new(context_id: u32, body_size: Option<usize>) -> HostRequest {
        HostRequest { context_id, body_size, headers: None, body: None }
    }

    /// The stream waits to be decided again: keeps the headers read for
    /// its next decision (when small, and while there is room).
    pub fn keep(&self) {
        let Some(h) = self.headers.as_ref().filter(|h| h.size() <= KEPT_BYTES) else { return };
        KEPT_HEADERS.with(|k| {
            let mut k = k.borrow_mut();
            if k.len() < KEPT_STREAMS || k.contains_key(&self.context_id) {
                k.insert(self.context_id, h.clone());
            }
        });
    }

    fn get(&mut self, name: &str) -> Option<String> {
        let id = self.context_id;
        self.headers.get_or_insert_with(|| request_headers(id)).get(name).map(str::to_string)
    }
}

impl Request for HostRequest {
    fn method(&mut self) -> Option<String> {
        self.get(":method")
    }
    fn path(&mut self) -> Option<String> {
        self.get(":path")
    }
    fn authority(&mut self) -> Option<String> {
        self.get(":authority")
    }
    fn header(&mut self, name: &str) -> Option<String> {
        self.get(name)
    }
    fn property(&mut self, path: &[String]) -> Option<Vec<u8>> {
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        hostcalls::get_property(path).ok().flatten()
    }
    fn body(&mut self) -> Option<&[u8]> {
        let size = self.body_size.filter(|s| *s <= MAX_BODY)?;
        self.body.get_or_insert_with(|| hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size).ok().flatten()).as_deref()
    }
    fn body_too_large(&mut self) -> bool {
        self.body_size.is_some_and(|s| s > MAX_BODY)
    }
    fn body_buffered(&mut self, size: usize) {
        self.body_size = Some(size);
    }
}

/// Wall-clock nanoseconds since the epoch (0 if the host clock is broken).
pub fn now_ns() -> u64 {
    hostcalls::get_current_time().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

thread_local! {
    static WORKER_JITTER: std::cell::RefCell<Option<Jitter>> = const { std::cell::RefCell::new(None) };
}

/// A random number from the worker's generator (seeded once per worker,
/// not once per stream: seeding is a hostcall).
pub fn random() -> u64 {
    WORKER_JITTER.with(|j| j.borrow_mut().get_or_insert_with(Jitter::seeded).next())
}

/// A small xorshift generator for jitter, seeded once per worker.
struct Jitter(u64);

impl Jitter {
    fn seeded() -> Jitter {
        let seed = getrandom::u64().unwrap_or_else(|_| now_ns());
        Jitter(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}
