//! Data buffers lent to connections only while data is in flight, within
//! the process's memory budget.
//!
//! An idle connection must hold no data buffer (invariant 5), and the hot
//! path must not allocate per message. Both follow from lending: a handler
//! takes a [`Buffer`] once the socket is readable and gives it back (by
//! dropping it) as soon as the chunk has been written. Free buffers wait in a
//! small per-thread cache, so a lease is a `Vec::pop` on the worker thread
//! and no lock is shared between threads. A connection blocked on a slow
//! reader keeps its lease, which is the one buffer the invariant allows.
//!
//! Every buffer's bytes come from one budget ([`budget`]): a lease that
//! would go past it is smaller, or waits ([`Buffer::poll_lease`]), so that
//! memory stays bounded whatever the clients do.
//!
//! Buffers above 128 KiB (only a `--buffer-size` above that makes them)
//! are mapped from the system, kept free for a second in case the next
//! chunk needs one of that size (`mapped`), then unmapped: they go back
//! to the system from whichever thread frees them. Through the
//! allocator they would not: a worker thread of a work-stealing runtime
//! often frees a buffer another one allocated, and the allocator keeps such
//! blocks in the allocating thread's heap until that thread allocates
//! again, so streams of multi-MiB chunks left the process holding gigabytes
//! that no connection used.
//!
//! How much to lend is [`ReadSize`]'s call: small while messages are small,
//! growing while reads fill their buffer, shrinking back when they stop,
//! up to a cap. The cache keeps buffers of every size it is given back, so
//! that connections at different sizes do not make each other allocate.

pub mod budget;
mod mapped;

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use self::budget::GLOBAL;
pub use self::budget::{BufferMemory, default_budget, set_budget};

/// Buffers larger than this are mapped from the system, not allocated,
/// and never cached: glibc's threshold for the same choice.
const MAPPED_ABOVE: usize = 128 * 1024;

/// A thread's free buffers, and their bytes.
struct Free {
    buffers: Vec<Box<[u8]>>,
    bytes: usize,
    /// `bytes`, for the metrics of other threads; made at the first buffer
    /// cached, and written with a plain store by this thread only.
    shown: Option<Arc<AtomicUsize>>,
}

thread_local! {
    static FREE: RefCell<Free> = const {
        RefCell::new(Free {
            buffers: Vec::new(),
            bytes: 0,
            shown: None,
        })
    };
}

/// Every thread's cached bytes, read by [`cached_bytes`].
static CACHES: Mutex<Vec<Weak<AtomicUsize>>> = Mutex::new(Vec::new());

impl Free {
    /// Takes a cached buffer of `len` bytes, the latest returned first: at
    /// a steady size it is the one, and the search ends at once.
    fn take(&mut self, len: usize) -> Option<Box<[u8]>> {
        let found = self.buffers.iter().rposition(|bytes| bytes.len() == len)?;
        Some(self.remove(found))
    }

    /// Takes the largest cached buffer of `least..=want` bytes.
    fn take_within(&mut self, least: usize, want: usize) -> Option<Box<[u8]>> {
        let found = (0..self.buffers.len())
            .filter(|&at| (least..=want).contains(&self.buffers[at].len()))
            .max_by_key(|&at| self.buffers[at].len())?;
        Some(self.remove(found))
    }

    fn remove(&mut self, at: usize) -> Box<[u8]> {
        let bytes = self.buffers.swap_remove(at);
        self.bytes -= bytes.len();
        self.show();
        bytes
    }

    /// Keeps `bytes` if the cache has room for them; else gives them back.
    fn keep(&mut self, bytes: Box<[u8]>) -> Option<Box<[u8]>> {
        if self.bytes + bytes.len() > GLOBAL.cache_limit() {
            return Some(bytes);
        }
        self.bytes += bytes.len();
        self.buffers.push(bytes);
        if self.shown.is_none() {
            let shown = Arc::new(AtomicUsize::new(0));
            CACHES
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Arc::downgrade(&shown));
            self.shown = Some(shown);
        }
        self.show();
        None
    }

    /// Takes every cached buffer out, to be freed once the cache is no
    /// longer borrowed: giving their bytes back wakes waiting tasks, and a
    /// waker may drop a buffer of its own, which comes back here.
    fn take_all(&mut self) -> Vec<Box<[u8]>> {
        self.bytes = 0;
        self.show();
        std::mem::take(&mut self.buffers)
    }

    fn show(&self) {
        if let Some(shown) = &self.shown {
            shown.store(self.bytes, Ordering::Relaxed);
        }
    }
}

impl Drop for Free {
    /// A thread that ends frees its cache, and the budget has the bytes
    /// back.
    fn drop(&mut self) {
        give_back_all(self.take_all());
    }
}

/// Frees `buffers` and gives their bytes back to the budget.
fn give_back_all(buffers: Vec<Box<[u8]>>) {
    for bytes in buffers {
        GLOBAL.give_back(bytes.len());
    }
}

/// Gives back to the system the free mapped buffers unused for a second:
/// the once-a-second upkeep of every server calls it.
pub(crate) fn trim() {
    mapped::trim(mapped::KEEP_FOR);
}

/// The budget in force and what is taken from it.
pub fn memory() -> BufferMemory {
    GLOBAL.memory(cached_bytes())
}

/// Bytes of free buffers now: in every thread's cache, and kept mapped.
pub(crate) fn cached_bytes() -> usize {
    let mut caches = CACHES.lock().unwrap_or_else(PoisonError::into_inner);
    caches.retain(|shown| shown.strong_count() > 0);
    caches
        .iter()
        .filter_map(Weak::upgrade)
        .map(|shown| shown.load(Ordering::Relaxed))
        .sum::<usize>()
        + mapped::bytes()
}

/// A zero-initialised byte buffer, on loan from the current thread's cache
/// or made within the budget. Dropping it returns it.
#[derive(Debug)]
pub struct Buffer {
    bytes: Bytes,
}

/// Where a buffer's bytes live.
#[derive(Debug)]
enum Bytes {
    /// On the heap, cached when free.
    Heap(Box<[u8]>),
    /// Mapped from the system, unmapped when free.
    Mapped(memmap2::MmapMut),
}

impl Buffer {
    /// Lends a buffer of exactly `len` bytes at once, from the thread's
    /// cache or made anew, even past the budget: for small scratch
    /// buffers that must not wait. A handler reading what a client sends
    /// uses [`poll_lease`](Self::poll_lease), which keeps to the budget.
    pub fn lease(len: usize) -> Buffer {
        if let Some(buffer) = Buffer::reuse(len) {
            return buffer;
        }
        GLOBAL.take_anyway(len);
        Buffer::make(len)
    }

    /// Lends a buffer of at most `want` bytes and at least `least` (or
    /// `want`, if smaller) within the budget: exactly `want` when the
    /// thread has one cached or the budget has room, else as much as the
    /// budget has room for. Without room for `least`, it waits: the task
    /// is woken when buffers are freed.
    pub fn poll_lease(cx: &mut Context<'_>, want: usize, least: usize) -> Poll<Buffer> {
        let least = least.min(want);
        if let Some(buffer) = Buffer::reuse(want) {
            return Poll::Ready(buffer);
        }
        loop {
            if let Some(len) = GLOBAL.take_up_to(want, least) {
                return Poll::Ready(Buffer::make(len));
            }
            // No room: a cached buffer of another size that will do...
            if let Some(bytes) = cached(|free| free.take_within(least, want)) {
                return Poll::Ready(Buffer::heap(bytes));
            }
            // ...or the free buffers' bytes given back, and another try;
            // then a wait.
            if mapped::bytes() > 0 {
                mapped::trim(Duration::ZERO);
                continue;
            }
            match cached(|free| (free.bytes > 0).then(|| free.take_all())) {
                Some(buffers) => give_back_all(buffers),
                None => break,
            }
        }
        let len = std::task::ready!(GLOBAL.poll_take(cx, want, least));
        Poll::Ready(Buffer::make(len))
    }

    /// [`poll_lease`](Self::poll_lease) as a future.
    pub async fn lease_within(want: usize, least: usize) -> Buffer {
        std::future::poll_fn(|cx| Buffer::poll_lease(cx, want, least)).await
    }

    /// A free buffer of exactly `len` bytes, already the budget's: from the
    /// thread's cache, or above [`MAPPED_ABOVE`], one kept mapped.
    fn reuse(len: usize) -> Option<Buffer> {
        if len > MAPPED_ABOVE {
            return mapped::take(len).map(|mapped| Buffer {
                bytes: Bytes::Mapped(mapped),
            });
        }
        cached(|free| free.take(len)).map(Buffer::heap)
    }

    /// A new zeroed buffer of `len` bytes on the heap.
    fn zeroed(len: usize) -> Buffer {
        Buffer::heap(vec![0; len].into_boxed_slice())
    }

    fn heap(bytes: Box<[u8]>) -> Buffer {
        Buffer {
            bytes: Bytes::Heap(bytes),
        }
    }

    /// A new buffer of `len` bytes, already taken from the budget: mapped
    /// above [`MAPPED_ABOVE`], on the heap otherwise, or if the system
    /// would not map it.
    fn make(len: usize) -> Buffer {
        if len > MAPPED_ABOVE
            && let Ok(mapped) = memmap2::MmapMut::map_anon(len)
        {
            return Buffer {
                bytes: Bytes::Mapped(mapped),
            };
        }
        Buffer::zeroed(len)
    }
}

/// Runs `with` on the thread's cache; `None` during thread teardown, when
/// the cache may be gone.
fn cached<T>(with: impl FnOnce(&mut Free) -> Option<T>) -> Option<T> {
    FREE.try_with(|free| with(&mut free.borrow_mut()))
        .ok()
        .flatten()
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let bytes = std::mem::replace(&mut self.bytes, Bytes::Heap(Box::default()));
        let len = match bytes {
            // Kept for the next chunk of its size, or unmapped as it
            // drops: the memory is the system's again.
            Bytes::Mapped(mapped) => match mapped::keep(mapped) {
                None => return,
                Some(unkept) => unkept.len(),
            },
            Bytes::Heap(bytes) => {
                let len = bytes.len();
                // Kept in the cache if it has room. During thread teardown
                // the cache may be gone: the closure is dropped unrun, and
                // the buffer with it.
                let kept = FREE
                    .try_with(|free| free.borrow_mut().keep(bytes).is_none())
                    .unwrap_or(false);
                if kept {
                    return;
                }
                len
            }
        };
        GLOBAL.give_back(len);
    }
}

impl Deref for Buffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Heap(bytes) => bytes,
            Bytes::Mapped(mapped) => mapped,
        }
    }
}

impl DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.bytes {
            Bytes::Heap(bytes) => bytes,
            Bytes::Mapped(mapped) => mapped,
        }
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

    /// Frees this thread's cache.
    fn clear_cache() {
        give_back_all(cached(|free| Some(free.take_all())).unwrap_or_default());
    }

    /// Bytes in this thread's cache.
    fn cached_here() -> usize {
        cached(|free| Some(free.bytes)).unwrap_or_default()
    }

    #[test]
    fn the_cache_keeps_buffers_up_to_its_bytes_and_frees_the_rest() {
        clear_cache();
        let len = MAPPED_ABOVE;
        let buffers: Vec<Buffer> = (0..3).map(|_| Buffer::lease(len)).collect();
        let kept: Vec<*const u8> = buffers.iter().map(|buffer| buffer.as_ptr()).collect();
        // Two of 128 KiB fill the 256 KiB cache; the third is freed.
        drop(buffers);
        assert_eq!(cached_here(), 2 * len);
        let (again, and_again) = (Buffer::lease(len), Buffer::lease(len));
        assert_eq!([and_again.as_ptr(), again.as_ptr()], [kept[0], kept[1]]);
        assert_eq!(cached_here(), 0);
    }

    #[test]
    fn buffers_above_128_kib_are_mapped_kept_for_a_moment_then_unmapped() {
        clear_cache();
        // A size of its own, which no other test leases.
        let len = MAPPED_ABOVE + 3;
        let mut large = Buffer::lease(len);
        assert!(matches!(large.bytes, Bytes::Mapped(_)));
        assert!(large.iter().all(|&byte| byte == 0), "mapped zeroed");
        large[MAPPED_ABOVE] = 1;
        let at = large.as_ptr();
        drop(large);
        assert_eq!(cached_here(), 0, "not in the thread's cache");
        // Kept for the next lease of its size...
        let again = Buffer::lease(len);
        assert_eq!(again.as_ptr(), at);
        drop(again);
        // ...and given back once unused for the keeping time.
        mapped::trim(Duration::ZERO);
        assert!(mapped::take(len).is_none());
    }

    #[test]
    fn a_lease_gets_what_it_asks_for_while_the_budget_has_room() {
        clear_cache();
        drop(Buffer::lease(8192));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        // 16 KiB asked, 4 KiB at least: the budget has room, so exactly
        // what was asked.
        let Poll::Ready(asked) = Buffer::poll_lease(&mut cx, 16_384, 4096) else {
            panic!("the default budget has room for 16 KiB");
        };
        assert_eq!(asked.len(), 16_384);
        assert_eq!(cached_here(), 8192, "the cached 8 KiB buffer stays");
    }

    #[test]
    fn a_lease_has_the_requested_length() {
        drop(Buffer::lease(8));
        assert_eq!(Buffer::lease(16).len(), 16);
    }
}
