//! A global allocator that refuses any single allocation above [`LIMIT`]. The inputs here are
//! a few kilobytes, so a bigger request can only come from a size read out of the file and
//! trusted: the very bug this test binary hunts. The refusal aborts the process (Rust's
//! allocation-failure path), after one line on stderr naming the parser and the case.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Far above what parsing a few-kilobyte file needs, far below what a header count can ask.
pub const LIMIT: usize = 256 << 20;

/// What is running now, for the report: an index into `harness::TARGETS` and a case number.
pub static TARGET: AtomicUsize = AtomicUsize::new(usize::MAX);
pub static CASE: AtomicUsize = AtomicUsize::new(0);

pub struct Capped;

fn report(size: usize) {
    // No allocation here: format into a stack buffer, write it unbuffered.
    let mut buf = [0u8; 200];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = writeln!(
        cursor,
        "hostile-file tests: refused an allocation of {size} bytes (limit {LIMIT}) in target #{} case {}",
        TARGET.load(Ordering::Relaxed) as isize,
        CASE.load(Ordering::Relaxed)
    );
    let n = cursor.position() as usize;
    let _ = std::io::stderr().write_all(&buf[..n]);
}

// SAFETY: every call is forwarded to the system allocator unchanged, or refused with a null
// pointer, which the GlobalAlloc contract allows.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > LIMIT {
            report(layout.size());
            return std::ptr::null_mut();
        }
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > LIMIT {
            report(layout.size());
            return std::ptr::null_mut();
        }
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > LIMIT {
            report(new_size);
            return std::ptr::null_mut();
        }
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}
