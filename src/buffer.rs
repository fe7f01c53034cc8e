//! Data buffers lent to connections only while data is in flight.
//!
//! An idle connection must hold no data buffer (invariant 5), and the hot
//! path must not allocate per message. Both follow from lending: a handler
//! takes a [`Buffer`] once the socket is readable and gives it back (by
//! dropping it) as soon as the chunk has been written. Free buffers wait in a
//! small per-thread cache, so a lease is a `Vec::pop` on the worker thread
//! and no lock is shared between threads. A connection blocked on a slow
//! reader keeps its lease, which is the one buffer the invariant allows.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Bytes of free buffers kept per thread: 64 of the default 4 KiB, enough for
/// every connection a thread serves in one burst of readiness events. Beyond
/// it a returned buffer is freed, so that a past spike of slow readers does
/// not pin memory for good. One buffer is always kept, whatever its size.
const CACHED_BYTES_PER_THREAD: usize = 256 * 1024;

thread_local! {
    static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A zero-initialised byte buffer on loan from the current thread's cache.
/// Dropping it returns it.
#[derive(Debug)]
pub struct Buffer {
    bytes: Box<[u8]>,
}

impl Buffer {
    /// Lends a buffer of exactly `len` bytes, reusing a cached one when the
    /// thread has one of that size.
    pub fn lease(len: usize) -> Buffer {
        let cached = FREE
            .try_with(|free| {
                let mut free = free.borrow_mut();
                match free.pop() {
                    Some(bytes) if bytes.len() == len => Some(bytes),
                    // A different size belongs to another server in this
                    // process; it is cheaper to drop it than to search.
                    _ => None,
                }
            })
            .ok()
            .flatten();
        Buffer {
            bytes: cached.unwrap_or_else(|| vec![0; len].into_boxed_slice()),
        }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let bytes = std::mem::take(&mut self.bytes);
        // During thread teardown the cache may be gone; the buffer is then
        // simply freed.
        let _ = FREE.try_with(|free| {
            let mut free = free.borrow_mut();
            let room = (CACHED_BYTES_PER_THREAD / bytes.len().max(1)).max(1);
            if free.len() < room {
                free.push(bytes);
            }
        });
    }
}

impl Deref for Buffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_returned_buffer_is_lent_again_without_allocating() {
        let first = Buffer::lease(100);
        let address = first.as_ptr();
        drop(first);
        let second = Buffer::lease(100);
        assert_eq!(second.as_ptr(), address);
    }

    #[test]
    fn large_buffers_are_cached_one_at_a_time() {
        let len = CACHED_BYTES_PER_THREAD;
        let (first, second) = (Buffer::lease(len), Buffer::lease(len));
        let kept = first.as_ptr();
        drop(first);
        drop(second); // over the byte budget: freed, not cached
        let reused = Buffer::lease(len);
        assert_eq!(reused.as_ptr(), kept);
        // The cache is empty now: the second buffer was not kept.
        let fresh = Buffer::lease(len);
        assert_ne!(fresh.as_ptr(), kept);
    }

    #[test]
    fn a_lease_has_the_requested_length() {
        drop(Buffer::lease(8));
        assert_eq!(Buffer::lease(16).len(), 16);
    }
}
