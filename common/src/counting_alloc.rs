//! A global allocator that counts the heap bytes in use, for tests that
//! measure what a structure keeps (a WebSocket's buffers, a socket's
//! channel, a TLS connection, a node's mailboxes). Deterministic, unlike
//! RSS: a test binary installs it with
//! `#[global_allocator] static A: Counting = Counting;` and reads
//! [`live`] before and after.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

/// Bytes allocated through [`Counting`] and not yet freed.
static LIVE: AtomicIsize = AtomicIsize::new(0);

/// The system allocator, counting.
pub struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::SeqCst);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::SeqCst);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Heap bytes in use, as counted by [`Counting`] (0 where it is not the
/// global allocator).
pub fn live() -> isize {
    LIVE.load(Ordering::SeqCst)
}
