//! The memory budget of data buffers: one for the process, as the caches
//! of free buffers are per thread and shared by every server in it.
//!
//! Every byte of every data buffer, lent to a connection or cached free,
//! is taken from the budget when the buffer is allocated and given back
//! when it is freed. A read that would go past it reads less, or, with no
//! room even for a page, waits until a buffer is freed: the connection
//! stops reading meanwhile, and TCP pushes back on its client. So however
//! many clients stream at once, and however large `--buffer-size` is,
//! data buffers never hold more than the budget.
//!
//! A lease from a thread's cache takes nothing from the budget (its bytes
//! were taken when the buffer was made), so the hot path touches no shared
//! counter. The budget moves only when a buffer is allocated or freed.
//!
//! While a lease waits, every buffer given back is freed rather than
//! cached, so that the waiter gets its bytes; what the caches already hold
//! is bounded per thread ([`set_budget`]) to a quarter of the budget in
//! all, so a waiter always gets room once lent buffers come back.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};

/// The default budget: 256 MiB, lowered to a quarter of the memory the
/// process may use (the machine's, or its cgroup's limit if lower), so
/// that a small container keeps room for everything else.
pub const DEFAULT_BUDGET: usize = 256 * 1024 * 1024;

/// The smallest budget [`set_budget`] accepts: a few buffers of the
/// largest size that is cached, and room for the caches.
pub const MIN_BUDGET: usize = 1024 * 1024;

/// Bytes of free buffers one thread keeps at most: 64 of 4 KiB, enough for
/// every connection a thread serves in one burst of readiness events, or
/// four of 64 KiB. Lowered when the budget is small ([`set_budget`]).
pub(super) const CACHE_PER_THREAD: usize = 256 * 1024;

/// A budget: its limit, the bytes taken from it, and the leases waiting
/// for room. The process has one, [`GLOBAL`]; tests make their own.
pub(super) struct Pool {
    /// The limit; 0 until [`Pool::set`] or the first use sets it.
    limit: AtomicUsize,
    /// Bytes of every data buffer in existence, lent or cached.
    allocated: AtomicUsize,
    /// Bytes one thread's cache may hold.
    cache_limit: AtomicUsize,
    /// True while a lease waits: given-back buffers are freed, not cached.
    waiting: AtomicBool,
    /// The tasks of the leases that wait, woken all at once when bytes
    /// come back: waits happen only when the budget is spent, so the crowd
    /// is rare.
    waiters: Mutex<Vec<Waker>>,
    /// Waits so far, for the metrics.
    waits: AtomicUsize,
}

/// The process's budget.
pub(super) static GLOBAL: Pool = Pool::new();

/// What the data buffers of the process hold now, against the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BufferMemory {
    /// The budget in force.
    pub limit: usize,
    /// Bytes of buffers lent to connections.
    pub lent: usize,
    /// Bytes of free buffers in the threads' caches.
    pub free: usize,
    /// Leases that have had to wait for room, so far.
    pub waits: usize,
}

/// Sets the process's budget for data buffers to `bytes` (at least
/// [`MIN_BUDGET`]), with `threads` threads that may cache free buffers:
/// each caches at most a quarter of the budget shared among them, and
/// never more than 256 KiB. The server calls it as it starts
/// ([`ServerConfig::buffer_memory`](crate::ServerConfig::buffer_memory)),
/// with its serving threads. A budget lowered below what is lent now
/// holds as the buffers come back.
pub fn set_budget(bytes: usize, threads: usize) {
    GLOBAL.set(bytes, threads);
}

/// The budget in force and what is taken from it.
pub fn memory() -> BufferMemory {
    // Read apart, so the two may disagree by a buffer in flight.
    let allocated = GLOBAL.allocated.load(Ordering::Relaxed);
    let free = super::cached_bytes().min(allocated);
    BufferMemory {
        limit: GLOBAL.limit(),
        lent: allocated - free,
        free,
        waits: GLOBAL.waits.load(Ordering::Relaxed),
    }
}

/// The default budget for this machine: [`DEFAULT_BUDGET`], or a quarter
/// of the memory the process may use, whichever is less.
pub fn default_budget() -> usize {
    static DEFAULT: OnceLock<usize> = OnceLock::new();
    *DEFAULT.get_or_init(|| {
        usable_memory()
            .map_or(DEFAULT_BUDGET, |memory| (memory / 4).min(DEFAULT_BUDGET))
            .max(MIN_BUDGET)
    })
}

/// The memory this process may use: the machine's, or its cgroup's
/// limit where that is lower (a container's).
fn usable_memory() -> Option<usize> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| meminfo_total(&text));
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|text| text.trim().parse::<usize>().ok());
    match (total, cgroup) {
        (Some(total), Some(cgroup)) => Some(total.min(cgroup)),
        (total, cgroup) => total.or(cgroup),
    }
}

/// `MemTotal` of /proc/meminfo, in bytes.
fn meminfo_total(meminfo: &str) -> Option<usize> {
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

impl Pool {
    pub(super) const fn new() -> Pool {
        Pool {
            limit: AtomicUsize::new(0),
            allocated: AtomicUsize::new(0),
            cache_limit: AtomicUsize::new(CACHE_PER_THREAD),
            waiting: AtomicBool::new(false),
            waiters: Mutex::new(Vec::new()),
            waits: AtomicUsize::new(0),
        }
    }

    fn set(&self, bytes: usize, threads: usize) {
        let bytes = bytes.max(MIN_BUDGET);
        self.limit.store(bytes, Ordering::SeqCst);
        let per_thread = bytes / 4 / threads.max(1);
        self.cache_limit
            .store(per_thread.min(CACHE_PER_THREAD), Ordering::Relaxed);
        // A raised budget has room for those that wait.
        self.wake_waiters();
    }

    /// The limit in force: as set, or the default for this machine.
    fn limit(&self) -> usize {
        match self.limit.load(Ordering::SeqCst) {
            0 => {
                // Set once, unless `set` came first.
                let _ = self.limit.compare_exchange(
                    0,
                    default_budget(),
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
                self.limit.load(Ordering::SeqCst)
            }
            limit => limit,
        }
    }

    /// Bytes one thread's cache may hold now: nothing while a lease waits,
    /// so that every buffer given back goes to it.
    pub(super) fn cache_limit(&self) -> usize {
        if self.waiting.load(Ordering::Relaxed) {
            0
        } else {
            self.cache_limit.load(Ordering::Relaxed)
        }
    }

    /// Takes as many bytes as the budget has room for, up to `want` and at
    /// least `least` (and at least 1); how many it took, if it could.
    pub(super) fn take_up_to(&self, want: usize, least: usize) -> Option<usize> {
        let limit = self.limit();
        let least = least.max(1);
        let mut took = 0;
        self.allocated
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |allocated| {
                took = want.min(limit.saturating_sub(allocated));
                (took >= least).then_some(allocated + took)
            })
            .ok()
            .map(|_| took)
    }

    /// Takes bytes that may go past the budget: for small scratch buffers
    /// that must not wait.
    pub(super) fn take_anyway(&self, len: usize) {
        self.allocated.fetch_add(len, Ordering::SeqCst);
    }

    /// Gives `len` bytes back, and wakes the leases waiting for room.
    pub(super) fn give_back(&self, len: usize) {
        self.allocated.fetch_sub(len, Ordering::SeqCst);
        // SeqCst with the waiter's store and retry in `poll_take`: either
        // the waiter sees these bytes, or this sees the waiter.
        if self.waiting.load(Ordering::SeqCst) {
            self.wake_waiters();
        }
    }

    fn wake_waiters(&self) {
        let wakers = {
            let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
            self.waiting.store(false, Ordering::SeqCst);
            std::mem::take(&mut *waiters)
        };
        for waker in wakers {
            waker.wake();
        }
    }

    /// [`take_up_to`](Self::take_up_to), or, without room for `least`,
    /// waits for bytes to come back: the task is woken when a buffer is
    /// freed.
    pub(super) fn poll_take(&self, cx: &mut Context<'_>, want: usize, least: usize) -> Poll<usize> {
        if let Some(took) = self.take_up_to(want, least) {
            return Poll::Ready(took);
        }
        {
            let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
            if !waiters.iter().any(|waiter| waiter.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            self.waiting.store(true, Ordering::SeqCst);
        }
        // Bytes given back between the first try and the waker's
        // registration woke nobody: try again now that any later give-back
        // will.
        match self.take_up_to(want, least) {
            Some(took) => Poll::Ready(took),
            None => {
                self.waits.fetch_add(1, Ordering::Relaxed);
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use super::*;

    /// A waker that counts its wakes.
    struct Counting(AtomicUsize);

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_lease_takes_what_room_there_is_and_at_least_its_least() {
        let pool = Pool::new();
        pool.set(MIN_BUDGET, 1);
        assert_eq!(
            pool.take_up_to(MIN_BUDGET - 4096, 1),
            Some(MIN_BUDGET - 4096)
        );
        assert_eq!(pool.take_up_to(65_536, 1024), Some(4096), "what is left");
        assert_eq!(pool.take_up_to(65_536, 1), None, "nothing is left");
        pool.give_back(MIN_BUDGET);
        assert_eq!(pool.take_up_to(4096, 4096), Some(4096));
    }

    #[test]
    fn a_lease_without_room_waits_until_bytes_come_back() {
        let pool = Pool::new();
        pool.set(MIN_BUDGET, 1);
        assert_eq!(pool.take_up_to(MIN_BUDGET, MIN_BUDGET), Some(MIN_BUDGET));
        let counting = Arc::new(Counting(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(counting.clone());
        let mut cx = Context::from_waker(&waker);
        assert_eq!(pool.poll_take(&mut cx, 8192, 4096), Poll::Pending);
        assert_eq!(
            pool.cache_limit(),
            0,
            "while a lease waits, nothing is cached"
        );
        pool.give_back(4096);
        assert_eq!(
            counting.0.load(Ordering::SeqCst),
            1,
            "woken by the give-back"
        );
        assert_eq!(pool.poll_take(&mut cx, 8192, 4096), Poll::Ready(4096));
        assert_eq!(pool.cache_limit(), CACHE_PER_THREAD);
        assert_eq!(pool.waits.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_small_budget_lowers_the_cache_of_each_thread() {
        let pool = Pool::new();
        pool.set(MIN_BUDGET, 8);
        assert_eq!(pool.cache_limit(), MIN_BUDGET / 4 / 8);
        pool.set(DEFAULT_BUDGET, 8);
        assert_eq!(pool.cache_limit(), CACHE_PER_THREAD);
        pool.set(0, 1);
        assert_eq!(pool.limit(), MIN_BUDGET, "raised to the least");
    }

    #[test]
    fn the_default_is_a_quarter_of_memory_at_most_256_mib() {
        assert_eq!(
            meminfo_total("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            Some(24_576_000 * 1024)
        );
        assert_eq!(meminfo_total("MemFree: 1 kB\n"), None);
        let budget = default_budget();
        assert!((MIN_BUDGET..=DEFAULT_BUDGET).contains(&budget), "{budget}");
        if let Some(memory) = usable_memory() {
            assert!(
                budget <= (memory / 4).max(MIN_BUDGET),
                "{budget} of {memory}"
            );
        }
    }
}
