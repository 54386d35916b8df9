//! What every fuzz target shares: an allocator that turns any single
//! allocation above [`MAX_ALLOC`] into a finding. libFuzzer's own
//! `-malloc_limit_mb` needs a sanitizer's malloc hooks, which a build
//! without a sanitizer (the stable toolchain's) lacks; `-rss_limit_mb`
//! still bounds the whole process.
//!
//! Each target links this crate with `extern crate sluice_fuzz;`.

use std::alloc::{GlobalAlloc, Layout, System};

/// Largest single allocation any input may cause: 1 MiB, sixteen times the
/// largest body the counter service reads (targets get at most 64 KiB).
pub const MAX_ALLOC: usize = 1 << 20;

struct Bounded;

fn check(size: usize) {
    // Not while a panic is reported: printing a backtrace reads the debug
    // information in large buffers.
    if size > MAX_ALLOC && !std::thread::panicking() {
        // libfuzzer-sys's panic hook aborts before anything unwinds, so
        // the input is saved as a crash.
        panic!("allocation of {size} bytes, above the fuzzing bound of {MAX_ALLOC}");
    }
}

// SAFETY: every call is passed to the system allocator unchanged.
unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Bounded = Bounded;
