//! Data buffers lent to connections only while data is in flight.
//!
//! An idle connection must hold no data buffer (invariant 5), and the hot
//! path must not allocate per message. Both follow from lending: a handler
//! takes a [`Buffer`] once the socket is readable and gives it back (by
//! dropping it) as soon as the chunk has been written. Free buffers wait in a
//! small per-thread cache, so a lease is a `Vec::pop` on the worker thread
//! and no lock is shared between threads. A connection blocked on a slow
//! reader keeps its lease, which is the one buffer the invariant allows.
//!
//! How much to lend is [`ReadSize`]'s call: small while messages are small,
//! growing while reads fill their buffer, shrinking back when they stop,
//! up to a cap. The cache keeps buffers of every size it is given back, so
//! that connections at different sizes do not make each other allocate.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Bytes of free buffers kept per thread: 64 of 4 KiB, enough for every
/// connection a thread serves in one burst of readiness events, or four of
/// 64 KiB. Beyond it a returned buffer is freed, so that a past spike of
/// slow readers does not pin memory for good. One buffer is always kept,
/// whatever its size.
const CACHED_BYTES_PER_THREAD: usize = 256 * 1024;

/// A thread's free buffers, and their bytes.
struct Free {
    buffers: Vec<Box<[u8]>>,
    bytes: usize,
}

thread_local! {
    static FREE: RefCell<Free> = const {
        RefCell::new(Free {
            buffers: Vec::new(),
            bytes: 0,
        })
    };
}

/// A zero-initialised byte buffer on loan from the current thread's cache.
/// Dropping it returns it.
#[derive(Debug)]
pub struct Buffer {
    bytes: Box<[u8]>,
}

impl Buffer {
    /// Lends a buffer of exactly `len` bytes, reusing a cached one when the
    /// thread has one of that size. The latest returned is looked at first:
    /// at a steady size it is the one, and the search ends at once.
    pub fn lease(len: usize) -> Buffer {
        let cached = FREE
            .try_with(|free| {
                let mut free = free.borrow_mut();
                let found = free.buffers.iter().rposition(|bytes| bytes.len() == len)?;
                let bytes = free.buffers.swap_remove(found);
                free.bytes -= bytes.len();
                Some(bytes)
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
            if free.buffers.is_empty() || free.bytes + bytes.len() <= CACHED_BYTES_PER_THREAD {
                free.bytes += bytes.len();
                free.buffers.push(bytes);
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

/// The size of a connection's next read, adapted to its traffic as hyper
/// adapts its read buffer: it starts at [`ReadSize::INITIAL`] (or the cap,
/// if smaller), doubles after every read that fills the buffer, up to the
/// cap, and halves after two reads in a row of less than half, never below
/// where it started. Large messages then take a few
/// reads and writes each, not one per 4 KiB, and an idle connection,
/// which holds no buffer at all, pays nothing for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadSize {
    // u32: it lives in every connection's task, and sizes are capped far
    // below 4 GiB (`--buffer-size` at 16 MiB).
    next: u32,
    cap: u32,
    /// The previous read would have fitted in half: one more shrinks.
    shrinking: bool,
}

impl ReadSize {
    /// Where reads start: a page, as large as most messages need.
    pub const INITIAL: usize = 4096;

    /// Reads of at most `cap` bytes (at least 1, at most `u32::MAX`).
    pub fn new(cap: usize) -> ReadSize {
        let cap = u32::try_from(cap).unwrap_or(u32::MAX).max(1);
        ReadSize {
            next: ReadSize::floor(cap),
            cap,
            shrinking: false,
        }
    }

    /// Where reads under `cap` start, and the least they shrink to.
    fn floor(cap: u32) -> u32 {
        cap.min(ReadSize::INITIAL as u32)
    }

    /// How many bytes the next read should ask for.
    pub fn next(&self) -> usize {
        self.next as usize
    }

    /// Adapts to a read that returned `read` bytes.
    pub fn record(&mut self, read: usize) {
        let read = u32::try_from(read).unwrap_or(u32::MAX);
        if read >= self.next {
            self.next = self.next.saturating_mul(2).min(self.cap);
            self.shrinking = false;
            return;
        }
        let half = (self.next / 2).max(ReadSize::floor(self.cap));
        if read >= half || half == self.next {
            // Still needs this size (a read of exactly half would fill
            // the smaller buffer, and grow it back); or it is as small as
            // it goes.
            self.shrinking = false;
        } else if self.shrinking {
            self.next = half;
            self.shrinking = false;
        } else {
            self.shrinking = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_that_fill_the_buffer_double_it_up_to_the_cap() {
        let mut size = ReadSize::new(65_536);
        assert_eq!(size.next(), 4096);
        for expected in [8192, 16_384, 32_768, 65_536, 65_536] {
            size.record(size.next());
            assert_eq!(size.next(), expected);
        }
    }

    #[test]
    fn two_small_reads_in_a_row_halve_it_down_to_where_it_started() {
        let mut size = ReadSize::new(65_536);
        for _ in 0..4 {
            size.record(size.next());
        }
        assert_eq!(size.next(), 65_536);
        size.record(100);
        assert_eq!(size.next(), 65_536, "one small read is not a trend");
        size.record(100);
        assert_eq!(size.next(), 32_768);
        for _ in 0..20 {
            size.record(100);
        }
        assert_eq!(size.next(), 4096);
    }

    #[test]
    fn messages_of_exactly_half_the_size_do_not_make_it_swing() {
        let mut size = ReadSize::new(65_536);
        for _ in 0..10 {
            size.record(16_384.min(size.next()));
        }
        assert_eq!(size.next(), 32_768);
    }

    #[test]
    fn a_read_that_needs_the_size_keeps_it() {
        let mut size = ReadSize::new(65_536);
        size.record(4096);
        assert_eq!(size.next(), 8192);
        size.record(100);
        size.record(5000);
        size.record(100);
        assert_eq!(size.next(), 8192, "the 5000-byte read cancelled the shrink");
    }

    #[test]
    fn a_cap_below_a_page_is_the_only_size() {
        let mut size = ReadSize::new(4);
        assert_eq!(size.next(), 4);
        size.record(4);
        assert_eq!(size.next(), 4);
        size.record(1);
        size.record(1);
        assert_eq!(size.next(), 4);
        assert_eq!(ReadSize::new(0).next(), 1);
    }

    #[test]
    fn buffers_of_several_sizes_are_each_lent_again_without_allocating() {
        let (small, large) = (Buffer::lease(4096), Buffer::lease(65_536));
        let (small_at, large_at) = (small.as_ptr(), large.as_ptr());
        drop(small);
        drop(large);
        assert_eq!(Buffer::lease(4096).as_ptr(), small_at);
        assert_eq!(Buffer::lease(65_536).as_ptr(), large_at);
    }

    #[test]
    fn a_returned_buffer_is_lent_again_without_allocating() {
        let first = Buffer::lease(100);
        let address = first.as_ptr();
        drop(first);
        let second = Buffer::lease(100);
        assert_eq!(second.as_ptr(), address);
    }

    #[test]
    fn large_buffers_are_cached_within_the_byte_budget() {
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
