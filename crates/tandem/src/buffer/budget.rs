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

use std::collections::VecDeque;
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

/// The part of the budget, an eighth, that only a lease's first page may
/// take: connections stuck writing to peers that do not read hold their
/// large buffers until the idle rule closes them, and must not leave every
/// other connection without a page to read into.
const RESERVE_SHARE: usize = 8;

/// The largest `least` that may take from the reserve: a page, with room
/// for a newline after it.
const SMALL_LEASE: usize = 8 * 1024;

/// A lease waiting for room: its task, and the least it would take.
struct Waiter {
    waker: Waker,
    least: usize,
}

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
    /// The leases that wait, in the order they came: a give-back wakes as
    /// many from the front as the room there is then could serve.
    waiters: Mutex<VecDeque<Waiter>>,
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

/// The memory this process may use: the machine's, or the lowest limit
/// of its cgroup and the cgroups above it where that is lower (a
/// container's, or a systemd unit's `MemoryMax=`).
fn usable_memory() -> Option<usize> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| meminfo_total(&text));
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|text| cgroup_limit(&text, |path| std::fs::read_to_string(path).ok()));
    match (total, cgroup) {
        (Some(total), Some(cgroup)) => Some(total.min(cgroup)),
        (total, cgroup) => total.or(cgroup),
    }
}

/// The lowest memory limit on the way from the process's cgroup (its
/// `/proc/self/cgroup`) up to the root: cgroup v2's `memory.max`, or
/// v1's `memory.limit_in_bytes`, each read with `read`.
fn cgroup_limit(own: &str, read: impl Fn(&str) -> Option<String>) -> Option<usize> {
    own.lines()
        .filter_map(|line| {
            // `hierarchy:controllers:path`: v2's line is `0::path`, v1's
            // memory line names the `memory` controller.
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            let (root, file) = if controllers.is_empty() {
                ("/sys/fs/cgroup", "memory.max")
            } else if controllers.split(',').any(|name| name == "memory") {
                ("/sys/fs/cgroup/memory", "memory.limit_in_bytes")
            } else {
                return None;
            };
            let mut lowest: Option<usize> = None;
            let mut dir = path.trim_end_matches('/').to_owned();
            loop {
                let limit = read(&format!("{root}{dir}/{file}"))
                    .and_then(|text| text.trim().parse::<usize>().ok());
                lowest = match (lowest, limit) {
                    (Some(lowest), Some(limit)) => Some(lowest.min(limit)),
                    (lowest, limit) => lowest.or(limit),
                };
                match dir.rfind('/') {
                    Some(parent) => dir.truncate(parent),
                    None => return lowest,
                }
            }
        })
        .min()
}

/// `MemTotal` of /proc/meminfo, in bytes.
fn meminfo_total(meminfo: &str) -> Option<usize> {
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

impl Pool {
    /// The budget and what is taken from it, of which `cached` bytes are
    /// free buffers kept for reuse.
    pub(crate) fn memory(&self, cached: usize) -> BufferMemory {
        // Read apart, so the two may disagree by a buffer in flight.
        let allocated = self.allocated.load(Ordering::Relaxed);
        let free = cached.min(allocated);
        BufferMemory {
            limit: self.limit(),
            lent: allocated - free,
            free,
            waits: self.waits.load(Ordering::Relaxed),
        }
    }

    pub(super) const fn new() -> Pool {
        Pool {
            limit: AtomicUsize::new(0),
            allocated: AtomicUsize::new(0),
            cache_limit: AtomicUsize::new(CACHE_PER_THREAD),
            waiting: AtomicBool::new(false),
            waiters: Mutex::new(VecDeque::new()),
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
    pub(super) fn limit(&self) -> usize {
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

    /// True while a lease waits for room: every buffer given back then
    /// goes to it, none to a cache.
    pub(super) fn is_waiting(&self) -> bool {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Bytes one thread's cache may hold now: nothing while a lease waits.
    pub(super) fn cache_limit(&self) -> usize {
        if self.is_waiting() {
            0
        } else {
            self.cache_limit.load(Ordering::Relaxed)
        }
    }

    /// Takes as many bytes as the budget has room for, up to `want` and at
    /// least `least` (and at least 1); how many it took, if it could. Only
    /// `least`, when it is a page or so, may take from the reserve.
    pub(super) fn take_up_to(&self, want: usize, least: usize) -> Option<usize> {
        let limit = self.limit();
        let reserve = limit / RESERVE_SHARE;
        let least = least.max(1);
        let mut took = 0;
        self.allocated
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |allocated| {
                let room = limit.saturating_sub(allocated);
                let outside_reserve = room.saturating_sub(reserve);
                took = if outside_reserve >= least {
                    want.min(outside_reserve)
                } else if least <= SMALL_LEASE && room >= least {
                    least
                } else {
                    return None;
                };
                Some(allocated + took)
            })
            .ok()
            .map(|_| took)
    }

    /// Takes bytes that may go past the budget: for small scratch buffers
    /// that must not wait.
    pub(super) fn take_anyway(&self, len: usize) {
        self.allocated.fetch_add(len, Ordering::SeqCst);
    }

    /// Gives `len` bytes back, and wakes leases waiting for room.
    pub(super) fn give_back(&self, len: usize) {
        self.allocated.fetch_sub(len, Ordering::SeqCst);
        // SeqCst with the waiter's store and retry in `poll_take`: either
        // the waiter sees these bytes, or this sees the waiter.
        if self.waiting.load(Ordering::SeqCst) {
            self.wake_waiters();
        }
    }

    /// Wakes the leases at the front of the line, as many as the room
    /// there is now could serve at their least, and at least one: waking
    /// every waiter for each freed buffer would have thousands of tasks
    /// race for one page, each queueing again under the lock.
    fn wake_waiters(&self) {
        let mut room = self
            .limit()
            .saturating_sub(self.allocated.load(Ordering::SeqCst));
        let mut woken = Vec::new();
        {
            let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
            while let Some(front) = waiters.front() {
                if !woken.is_empty() && front.least > room {
                    break;
                }
                room = room.saturating_sub(front.least);
                if let Some(waiter) = waiters.pop_front() {
                    woken.push(waiter.waker);
                }
            }
            self.waiting.store(!waiters.is_empty(), Ordering::SeqCst);
        }
        for waker in woken {
            waker.wake();
        }
    }

    /// [`take_up_to`](Self::take_up_to), or, without room for `least`,
    /// waits in line for bytes to come back: the task is woken when a
    /// buffer is freed and its turn has room.
    pub(super) fn poll_take(&self, cx: &mut Context<'_>, want: usize, least: usize) -> Poll<usize> {
        if let Some(took) = self.take_up_to(want, least) {
            self.pass_on();
            return Poll::Ready(took);
        }
        let queued = {
            let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
            let queued = !waiters
                .iter()
                .any(|waiter| waiter.waker.will_wake(cx.waker()));
            if queued {
                waiters.push_back(Waiter {
                    waker: cx.waker().clone(),
                    least,
                });
            }
            self.waiting.store(true, Ordering::SeqCst);
            queued
        };
        // Bytes given back between the first try and the waker's
        // registration woke nobody: try again now that any later give-back
        // will.
        match self.take_up_to(want, least) {
            Some(took) => {
                self.pass_on();
                Poll::Ready(took)
            }
            None => {
                if queued {
                    self.waits.fetch_add(1, Ordering::Relaxed);
                }
                Poll::Pending
            }
        }
    }

    /// After a lease has taken its bytes: the next in line may find room
    /// too, and a waker whose task has gone would otherwise hold the line.
    fn pass_on(&self) {
        if self.waiting.load(Ordering::SeqCst) {
            self.wake_waiters();
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
        let reserve = MIN_BUDGET / RESERVE_SHARE;
        let outside = MIN_BUDGET - reserve;
        assert_eq!(pool.take_up_to(outside - 8192, 1), Some(outside - 8192));
        assert_eq!(
            pool.take_up_to(65_536, 16_384),
            None,
            "16 KiB at least does not fit outside the reserve"
        );
        assert_eq!(pool.take_up_to(65_536, 1024), Some(8192), "what is left");
        pool.give_back(outside);
        assert_eq!(pool.take_up_to(4096, 4096), Some(4096));
    }

    #[test]
    fn large_leases_leave_the_reserve_to_leases_of_a_page() {
        let pool = Pool::new();
        pool.set(MIN_BUDGET, 1);
        let reserve = MIN_BUDGET / RESERVE_SHARE;
        // Stuck writers' large buffers: they stop short of the reserve...
        let mut large = 0;
        while let Some(took) = pool.take_up_to(65_536, 65_536) {
            large += took;
        }
        assert_eq!(large, MIN_BUDGET - reserve);
        // ...and every other connection still gets a page to read into,
        // until the reserve too is spent.
        let mut pages = 0;
        while pool.take_up_to(65_536, 4096) == Some(4096) {
            pages += 1;
        }
        assert_eq!(pages, reserve / 4096);
    }

    #[test]
    fn a_lease_without_room_waits_until_bytes_come_back() {
        let pool = Pool::new();
        pool.set(MIN_BUDGET, 1);
        pool.take_anyway(MIN_BUDGET);
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
    fn a_give_back_wakes_as_many_in_line_as_it_has_room_for() {
        let pool = Pool::new();
        pool.set(MIN_BUDGET, 1);
        pool.take_anyway(MIN_BUDGET);
        let counters: Vec<Arc<Counting>> = (0..4)
            .map(|_| Arc::new(Counting(AtomicUsize::new(0))))
            .collect();
        for counter in &counters {
            let waker = std::task::Waker::from(counter.clone());
            let mut cx = Context::from_waker(&waker);
            assert_eq!(pool.poll_take(&mut cx, 4096, 4096), Poll::Pending);
            // Polled again while in line: still one place, one wait.
            assert_eq!(pool.poll_take(&mut cx, 4096, 4096), Poll::Pending);
        }
        assert_eq!(pool.waits.load(Ordering::SeqCst), 4);
        // Room for two at their least: the first two in line, not all.
        pool.give_back(8192);
        let woken: Vec<usize> = counters
            .iter()
            .map(|counter| counter.0.load(Ordering::SeqCst))
            .collect();
        assert_eq!(woken, [1, 1, 0, 0]);
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
    fn the_cgroup_limit_is_the_lowest_on_the_way_to_the_root() {
        let files = [
            ("/sys/fs/cgroup/system.slice/memory.max", "max\n"),
            (
                "/sys/fs/cgroup/system.slice/tandem.service/memory.max",
                "536870912\n",
            ),
            ("/sys/fs/cgroup/memory.max", "max\n"),
        ];
        let read = |path: &str| {
            files
                .iter()
                .find(|(name, _)| *name == path)
                .map(|(_, text)| (*text).to_owned())
        };
        assert_eq!(
            cgroup_limit("0::/system.slice/tandem.service\n", read),
            Some(536_870_912)
        );
        assert_eq!(cgroup_limit("0::/\n", read), None, "no limit: max");
        let v1 = |path: &str| {
            (path == "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes")
                .then(|| "1073741824".to_owned())
        };
        assert_eq!(
            cgroup_limit("12:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n", v1),
            Some(1_073_741_824)
        );
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
