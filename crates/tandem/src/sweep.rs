//! The idle rule, the shutdown cut and shedding, enforced for every
//! connection of a server by one periodic sweep instead of by each
//! connection.
//!
//! A connection that waited on its own idle timer and on the cut would
//! register three waiters every time its socket ran dry: the socket's
//! readiness, the timer and the cut's channel. Here it registers one, the
//! socket's. Its task's waker sits in its [`Watched`] record, put there
//! without a lock, and the sweep, one task per server, wakes exactly the
//! connections it concerns: those it finds idle or sheds at a tick, and
//! every one at the cut. A message costs the connection no clock read
//! either: it raises an activity flag and counts its bytes, in and out, in
//! plain counters, and the sweep reads them.
//!
//! The price is precision. The sweep sees activity at its ticks, so it
//! counts a connection's silence from the first tick after its last
//! activity: a silent connection is closed between one and one plus two
//! ticks of the idle timeout after its last byte, never before. A tick is
//! an eighth of the idle timeout, from 10 ms to 1 s: the default 300 s
//! timeout is judged every second, to within 2 s. The minimum rate is
//! judged over windows that run from one tick to the first tick at least
//! an idle timeout later, so no window is ever shorter than the timeout.
//! A window counts the larger of the bytes the peer sent and the bytes it
//! took, not their sum: an echo does not double a slow client's rate.
//!
//! Shedding makes room for new clients when there is none. When every
//! `--max-connections` slot is taken (an accept task waits for a permit:
//! the acceptor accepts as long as one is free, so this is the only time
//! a new connection waits) and connections wait in the listen backlog,
//! each tick closes the connections with the lowest recent rate, one for
//! each connection waiting, at most one in [`SHED_SHARE`] of those
//! watched (and at least one). The rate is the larger of the bytes in and
//! out over the current window and the last closed one, per tick; a
//! connection is measured, and can be shed, once it has been watched for
//! [`MEASURED_AFTER`] ticks (2 s at the default tick, a quarter of the
//! idle timeout for timeouts up to 8 s). A new client is served within
//! about a tick of its arrival once the slots are held by measured
//! connections, and within about three of the slots being taken; while a
//! slot is free, no connection is shed, whatever its rate. Shed connections
//! close as idle ones do, and are counted as `shed`.
//!
//! A connection whose handler is busy for it (a compute job queued or
//! running) is not idle, whatever its peer does: the sweep counts it active
//! at each tick it sees it busy, so its silence and its rate window count
//! afresh from when it stops being busy, and it is never shed.

use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::Waker;
use std::time::Duration;

use atomic_waker::AtomicWaker;
use tokio::io::unix::AsyncFd;
use tokio::time::MissedTickBehavior;

/// When a connection counts as idle: silent for `timeout`, or, when
/// `quota` is not 0, fewer than `quota` bytes moved in a window of
/// `timeout` (the larger of those received and those sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdleRule {
    pub(crate) timeout: Duration,
    pub(crate) quota: u64,
}

impl IdleRule {
    /// The rule for an idle timeout and a minimum rate in bytes per second
    /// (0: silence is the only rule).
    pub(crate) fn new(timeout: Duration, min_rate: u64) -> IdleRule {
        // rate x timeout, rounded up, in integers; an absurd rate over a
        // year-long window saturates to "never enough", not an overflow.
        let quota = (u128::from(min_rate) * timeout.as_nanos()).div_ceil(1_000_000_000);
        IdleRule {
            timeout,
            quota: u64::try_from(quota).unwrap_or(u64::MAX),
        }
    }

    /// How often the sweep judges connections under this rule.
    fn tick(&self) -> Duration {
        (self.timeout / 8).clamp(MIN_TICK, MAX_TICK)
    }
}

/// The finest and coarsest ticks: finer would spin for little, coarser
/// would make long timeouts late by more than a couple of seconds.
const MIN_TICK: Duration = Duration::from_millis(10);
const MAX_TICK: Duration = Duration::from_secs(1);

/// Ticks a connection is watched before its rate counts for shedding: a
/// client just admitted, perhaps the one shedding made room for, has had
/// the time to send its first message and take its answer, and a client
/// arriving while slowloris connections take the slots waits about this
/// long. 2 s at the default 1 s tick.
const MEASURED_AFTER: Tick = 2;

/// At most one in this many watched connections is shed per tick (and at
/// least one): a flood of new clients turns a full server over gradually,
/// 156 connections a second out of 10,000 at the default tick, instead of
/// closing all its slow clients at once for clients that may be no better.
const SHED_SHARE: usize = 64;

/// What a connection and the sweep share. Only the connection's task
/// writes the counters, so it updates them with a plain load and store:
/// no locked instruction per message.
///
/// One allocation per connection, 48 bytes behind the `Arc`'s two counts:
/// the waker (24), the two byte counts, the flags (the busy flag among
/// them) and the last window's count. 64 bytes in all, mimalloc's 64-byte size class, the chunk the
/// record took when it was 40 bytes with one count of bytes in and out
/// together: counting them apart costs an idle connection nothing.
#[derive(Debug, Default)]
pub(crate) struct Watched {
    /// The connection task's waker, as of its latest wait.
    waker: AtomicWaker,
    /// Bytes read from the peer so far.
    received: AtomicU64,
    /// Bytes the peer's socket took so far (with TLS, plaintext bytes the
    /// session took).
    sent: AtomicU64,
    /// Raised by the connection at every read and write, and at every
    /// flush of what TLS held; lowered by the sweep when it sees it.
    active: AtomicBool,
    /// Set by the sweep, never cleared: [`IDLE`] when the rule says idle
    /// (with [`SHED`] when it was shed to make room), [`CUT`] when the
    /// server cuts its connections.
    verdicts: AtomicU8,
    /// The sweep's own: 1 + the count of the last rate window that closed
    /// (saturated), 0 before one has. Kept here, in room the record has
    /// anyway, because the sweep's entry is full.
    last_window: AtomicU32,
    /// The handler is working or waiting for the connection, not for its
    /// peer: set and cleared by the connection's task only.
    busy: AtomicBool,
}

/// The rule says the connection is idle.
const IDLE: u8 = 1;
/// The server has cut its connections.
const CUT: u8 = 2;
/// The connection was idle by the sweep's judgement, shed to make room.
const SHED: u8 = 4;

impl Watched {
    /// Records a read that moved `bytes` (0: the end of the stream).
    pub(crate) fn received(&self, bytes: usize) {
        self.active.store(true, Ordering::Relaxed);
        add(&self.received, bytes);
    }

    /// Records a write the socket took `bytes` of.
    pub(crate) fn sent(&self, bytes: usize) {
        self.active.store(true, Ordering::Relaxed);
        add(&self.sent, bytes);
    }

    /// Records activity that moved no counted byte: the peer took some of
    /// what TLS held.
    pub(crate) fn touched(&self) {
        self.active.store(true, Ordering::Relaxed);
    }

    /// Marks the connection busy, or no longer. Counted as activity too,
    /// so that a busy spell between two ticks, which the sweep never sees,
    /// still ends a silence.
    pub(crate) fn set_busy(&self, busy: bool) {
        self.touched();
        self.busy.store(busy, Ordering::Release);
    }

    /// Makes `waker` the one the sweep wakes. Cheap when it is the same
    /// as last time, which for a task's own waker it always is.
    pub(crate) fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }

    /// True once the sweep has found the connection idle, or shed it.
    pub(crate) fn is_idle(&self) -> bool {
        self.verdicts.load(Ordering::Acquire) & IDLE != 0
    }

    /// True once the sweep has shed the connection to make room.
    pub(crate) fn is_shed(&self) -> bool {
        self.verdicts.load(Ordering::Acquire) & SHED != 0
    }

    /// True once the server has cut its connections.
    pub(crate) fn is_cut(&self) -> bool {
        self.verdicts.load(Ordering::Acquire) & CUT != 0
    }

    /// Gives `verdict` and wakes the connection to act on it.
    fn rule(&self, verdict: u8) {
        self.verdicts.fetch_or(verdict, Ordering::Release);
        self.waker.wake();
    }

    /// True if the connection was active since the sweep last asked. A
    /// swap, not a store, so that activity raised between the sweep's
    /// load and its lowering is not lost; only when there was some.
    fn take_activity(&self) -> bool {
        self.active.load(Ordering::Relaxed) && self.active.swap(false, Ordering::Relaxed)
    }
}

/// Adds `bytes` to a count only its connection's task writes: a plain
/// load and store.
fn add(count: &AtomicU64, bytes: usize) {
    if bytes > 0 {
        let moved = count.load(Ordering::Relaxed);
        count.store(moved.saturating_add(bytes as u64), Ordering::Relaxed);
    }
}

/// What the sweep learns from the accept side to shed: whether every
/// connection slot is taken, and how many connections wait to be accepted.
#[derive(Debug, Default)]
pub(crate) struct Pressure {
    /// Accept tasks waiting for a `--max-connections` permit.
    starved: AtomicUsize,
    /// The listening socket, to count the connections in its backlog.
    /// Weak: the sweep must not hold the listener open once the server
    /// stops accepting, or new clients would queue instead of being
    /// refused.
    listener: OnceLock<Weak<AsyncFd<TcpListener>>>,
}

/// An accept task waiting for a permit, for as long as this lives.
pub(crate) struct Starved<'a>(&'a Pressure);

impl Drop for Starved<'_> {
    fn drop(&mut self) {
        self.0.starved.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pressure {
    /// The listener whose backlog is counted.
    pub(crate) fn watch_backlog(&self, listener: &Arc<AsyncFd<TcpListener>>) {
        let _ = self.listener.set(Arc::downgrade(listener));
    }

    /// Marks an accept task as waiting for a permit until the guard drops.
    pub(crate) fn starved(&self) -> Starved<'_> {
        self.starved.fetch_add(1, Ordering::Relaxed);
        Starved(self)
    }

    /// Connections waiting in the backlog while every slot is taken: 0
    /// unless an accept task waits for a permit, so a server with room
    /// makes no system call here.
    fn waiting(&self) -> usize {
        if self.starved.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        let Some(listener) = self.listener.get().and_then(Weak::upgrade) else {
            return 0;
        };
        // Unknown is none: shedding is for a known queue only.
        backlog(listener.get_ref()).unwrap_or(0)
    }
}

/// The connections in a listening socket's accept queue: Linux reports
/// its length as a listener's `tcpi_unacked`.
fn backlog(listener: &TcpListener) -> io::Result<usize> {
    // SAFETY: all zeroes is a valid tcp_info (integers only).
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the descriptor is the listener's, open while it is
    // borrowed; `info` and `len` are valid for writes of `len` bytes.
    let status = unsafe {
        libc::getsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            std::ptr::from_mut(&mut info).cast(),
            &mut len,
        )
    };
    if status != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info.tcpi_unacked as usize)
}

/// The sweep of one server: every live connection's record, the cut, and
/// what it needs to shed.
#[derive(Debug)]
pub(crate) struct Sweep {
    rule: Option<IdleRule>,
    entries: Mutex<Entries>,
    pressure: Arc<Pressure>,
}

/// Every live connection's entry, the sweep's clock, and the cut.
#[derive(Debug, Default)]
struct Entries {
    list: Vec<Entry>,
    /// Under the same lock as the list, so that a connection watched after
    /// the cut is cut as it arrives.
    cut: bool,
    /// Ticks since the sweep started: the entries' times are counted in
    /// ticks, 4 bytes where an `Instant` takes 16, for every connection.
    now: Tick,
    /// Connections ruled idle or shed that have not closed yet: each is a
    /// slot on its way back, so a waiting client is not shed for twice.
    closing: Vec<Arc<Watched>>,
}

/// A point on the sweep's clock, in ticks.
type Tick = u32;

/// The sweep's view of one connection, 32 bytes.
#[derive(Debug)]
struct Entry {
    watched: Arc<Watched>,
    /// The tick that last saw the connection active.
    active_at: Tick,
    /// The current rate window: the tick it opened at, and the byte
    /// counts then.
    window_from: Tick,
    window_received: u64,
    window_sent: u64,
}

/// A recent rate: `bytes` over `ticks`.
#[derive(Debug, Clone, Copy)]
struct Rate {
    bytes: u64,
    ticks: u64,
}

impl Rate {
    /// Compares two rates as fractions, without dividing.
    fn cmp(&self, other: &Rate) -> std::cmp::Ordering {
        let this = u128::from(self.bytes) * u128::from(other.ticks.max(1));
        let that = u128::from(other.bytes) * u128::from(self.ticks.max(1));
        this.cmp(&that)
    }
}

impl Sweep {
    /// A sweep for connections under `rule` (none: only the cut, and
    /// shedding).
    pub(crate) fn new(rule: Option<IdleRule>) -> Sweep {
        Sweep {
            rule,
            entries: Mutex::new(Entries::default()),
            pressure: Arc::default(),
        }
    }

    /// What the accept side tells the sweep, to shed.
    pub(crate) fn pressure(&self) -> &Arc<Pressure> {
        &self.pressure
    }

    /// Watches a new connection, from now.
    pub(crate) fn watch(&self) -> Arc<Watched> {
        let watched = Arc::new(Watched::default());
        let mut entries = self.lock();
        if entries.cut {
            watched.rule(CUT);
        }
        // Counted from the next tick, the first to see it, as activity is
        // counted from the tick that sees it: the next judgement finds the
        // entry 0 ticks old.
        let next = entries.now.wrapping_add(1);
        entries.list.push(Entry {
            watched: watched.clone(),
            active_at: next,
            window_from: next,
            window_received: 0,
            window_sent: 0,
        });
        watched
    }

    /// Cuts every connection: each is woken, and from now on every wait
    /// of a connection ends with the cut.
    pub(crate) fn cut(&self) {
        let mut entries = self.lock();
        entries.cut = true;
        for entry in &entries.list {
            entry.watched.rule(CUT);
        }
    }

    /// Judges every connection at ticks of the rule until the task is
    /// dropped with its runtime. Without a rule there is nothing to judge
    /// but shedding; closed connections are still forgotten, once a
    /// second.
    ///
    /// Missed ticks are delayed, never caught up in a burst, so a tick
    /// never comes sooner than its period after the one before: a
    /// connection silent for the rule's count of ticks has been silent for
    /// at least the timeout, however late the ticks ran.
    pub(crate) async fn run(self: Arc<Self>) {
        let tick = self.rule.map_or(MAX_TICK, |rule| rule.tick());
        let mut ticks = tokio::time::interval(tick);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.judge(self.pressure.waiting());
        }
    }

    /// One tick, with `waiting` connections in the backlog while every
    /// slot is taken: forgets closed connections, marks and wakes those
    /// the rule says are idle now, then sheds the slowest to make room.
    fn judge(&self, waiting: usize) {
        let rule = self.rule.map(|rule| (rule.quota, rule.ticks()));
        let mut entries = self.lock();
        entries.now = entries.now.wrapping_add(1);
        let now = entries.now;
        let entries = &mut *entries;
        entries
            .closing
            .retain(|watched| Arc::strong_count(watched) > 1);
        let closing = &mut entries.closing;
        entries.list.retain_mut(|entry| {
            // The connection dropped its record: it has closed.
            if Arc::strong_count(&entry.watched) == 1 {
                return false;
            }
            let Some((quota, ticks)) = rule else {
                return true;
            };
            if entry.verdict(quota, ticks, now) {
                entry.watched.rule(IDLE);
                // Judged once: the connection closes on its own now, and
                // its slot comes back.
                closing.push(entry.watched.clone());
                return false;
            }
            true
        });
        // Those already closing make room for as many waiting clients.
        let waiting = waiting.saturating_sub(entries.closing.len());
        if waiting > 0 && !entries.cut {
            let window = rule.map_or(0, |(_, ticks)| ticks);
            let shed = shed(&mut entries.list, waiting, now, window);
            entries.closing.extend(shed);
        }
        // Room for twice the connections there are, at most: a burst of
        // connections does not leave its peak's memory behind.
        let live = entries.list.len();
        if entries.list.capacity() > 2 * live.max(MIN_ENTRIES) {
            entries.list.shrink_to(live + live / 2);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic under the lock leaves the list as it was: still usable.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Closes the slowest measured connections of `list` to make room for
/// `waiting` ones: as many as wait, at most one in [`SHED_SHARE`] (at least
/// one). Runs only under pressure, so its allocation costs a server with
/// room nothing.
fn shed(list: &mut Vec<Entry>, waiting: usize, now: Tick, window: Tick) -> Vec<Arc<Watched>> {
    let mut measured: Vec<(Rate, usize)> = list
        .iter()
        .enumerate()
        .filter_map(|(index, entry)| entry.rate(now, window).map(|rate| (rate, index)))
        .collect();
    let most = waiting
        .min((list.len() / SHED_SHARE).max(1))
        .min(measured.len());
    if most == 0 {
        return Vec::new();
    }
    measured.select_nth_unstable_by(most - 1, |a, b| a.0.cmp(&b.0));
    let mut slowest: Vec<usize> = measured[..most].iter().map(|&(_, index)| index).collect();
    // From the end, so that each removal leaves the other indices valid.
    slowest.sort_unstable_by(|a, b| b.cmp(a));
    slowest
        .into_iter()
        .map(|index| {
            let entry = list.swap_remove(index);
            entry.watched.rule(IDLE | SHED);
            entry.watched
        })
        .collect()
}

/// Below this many entries the list keeps its room.
const MIN_ENTRIES: usize = 64;

impl IdleRule {
    /// The timeout in ticks, rounded up, so that a connection is never
    /// judged silent sooner than the timeout.
    fn ticks(&self) -> Tick {
        let ticks = self.timeout.as_nanos().div_ceil(self.tick().as_nanos());
        Tick::try_from(ticks).unwrap_or(Tick::MAX)
    }
}

impl Entry {
    /// True if the connection is idle at tick `now`: silent for the whole
    /// timeout (`ticks`) since the sweep first saw its latest activity, or
    /// short of the `quota` over a window that has closed. A window that
    /// met its quota is followed by the next, from `now`. A connection busy
    /// for its handler is active at `now`. Tick counts are compared as
    /// distances, so the clock may wrap.
    fn verdict(&mut self, quota: u64, ticks: Tick, now: Tick) -> bool {
        // Busy for its handler: active, its silence and its rate window
        // counted from the next tick, the first that may find it no longer
        // busy. Only a later tick reads them: this one returns here.
        if self.watched.busy.load(Ordering::Acquire) {
            self.active_at = now.wrapping_add(1);
            self.window_from = now.wrapping_add(1);
            self.window_received = self.watched.received.load(Ordering::Relaxed);
            self.window_sent = self.watched.sent.load(Ordering::Relaxed);
            return false;
        }
        if self.watched.take_activity() {
            self.active_at = now;
        }
        if now.wrapping_sub(self.active_at) >= ticks {
            return true;
        }
        if now.wrapping_sub(self.window_from) < ticks {
            return false;
        }
        let (moved, received, sent) = self.moved();
        if moved < quota {
            return true;
        }
        // Windows roll without a quota too: their counts are shedding's.
        let last = u32::try_from(moved).unwrap_or(u32::MAX - 1);
        self.watched
            .last_window
            .store(last.saturating_add(1), Ordering::Relaxed);
        self.window_from = now;
        self.window_received = received;
        self.window_sent = sent;
        false
    }

    /// The bytes moved in the current window, the larger of those received
    /// and those sent, and the counts now.
    fn moved(&self) -> (u64, u64, u64) {
        let received = self.watched.received.load(Ordering::Relaxed);
        let sent = self.watched.sent.load(Ordering::Relaxed);
        let moved = received
            .saturating_sub(self.window_received)
            .max(sent.saturating_sub(self.window_sent));
        (moved, received, sent)
    }

    /// The connection's recent rate at tick `now`, over the current window
    /// and the last closed one (`window` ticks long) when there is one;
    /// `None` while it is too young to have one.
    fn rate(&self, now: Tick, window: Tick) -> Option<Rate> {
        // Busy for its handler: its peer's rate says nothing now, and its
        // window restarts when it stops.
        if self.watched.busy.load(Ordering::Acquire) {
            return None;
        }
        let elapsed = u64::from(now.wrapping_sub(self.window_from));
        let (moved, _, _) = self.moved();
        match self.watched.last_window.load(Ordering::Relaxed) {
            0 if elapsed < u64::from(MEASURED_AFTER) => None,
            0 => Some(Rate {
                bytes: moved,
                ticks: elapsed,
            }),
            last => Some(Rate {
                bytes: u64::from(last - 1).saturating_add(moved),
                ticks: u64::from(window) + elapsed,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;
    use crate::ServerConfig;

    /// The server's default idle timeout.
    fn default_idle_timeout() -> Duration {
        ServerConfig::default().idle_timeout.unwrap_or_default()
    }

    /// Runs a sweep and a client that, every `interval`, moves `bytes` in
    /// and as many out, in paused time; returns when the sweep found it
    /// idle, or `None` if it had not after `limit`.
    async fn closed_after(
        rule: IdleRule,
        interval: Duration,
        bytes: usize,
        limit: Duration,
    ) -> Option<Duration> {
        let start = Instant::now();
        let sweep = Arc::new(Sweep::new(Some(rule)));
        let watched = sweep.watch();
        let running = tokio::spawn(sweep.clone().run());
        let mut next = start + interval;
        let outcome = loop {
            tokio::select! {
                () = found_idle(&watched) => break Some(start.elapsed()),
                () = tokio::time::sleep_until(next), if bytes > 0 => {
                    watched.received(bytes);
                    watched.sent(bytes);
                    next += interval;
                }
                () = tokio::time::sleep_until(start + limit) => break None,
            }
        };
        running.abort();
        outcome
    }

    /// Completes when the sweep marks `watched` idle, woken by the sweep as
    /// a connection is.
    async fn found_idle(watched: &Watched) {
        std::future::poll_fn(|cx| {
            watched.register(cx.waker());
            if watched.is_idle() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
    }

    /// Within the sweep's precision of `expected`: never before it, at most
    /// two ticks after.
    fn around(closed: Option<Duration>, expected: Duration, rule: IdleRule) {
        let closed = closed.expect("closed");
        assert!(
            closed >= expected && closed <= expected + 2 * rule.tick(),
            "closed after {closed:?}, expected {expected:?} (tick {:?})",
            rule.tick()
        );
    }

    #[test]
    fn the_default_quota_is_300_bytes_per_5_minutes() {
        let rule = IdleRule::new(default_idle_timeout(), ServerConfig::default().min_rate);
        assert_eq!(rule.quota, 300);
        assert_eq!(IdleRule::new(Duration::from_millis(1500), 3).quota, 5);
        assert_eq!(
            IdleRule::new(Duration::from_secs(365 * 86400), u64::MAX).quota,
            u64::MAX
        );
    }

    #[test]
    fn a_tick_is_an_eighth_of_the_timeout_from_10_ms_to_1_s() {
        assert_eq!(IdleRule::new(default_idle_timeout(), 1).tick(), MAX_TICK);
        assert_eq!(
            IdleRule::new(Duration::from_millis(800), 1).tick(),
            Duration::from_millis(100)
        );
        assert_eq!(IdleRule::new(Duration::from_millis(20), 1).tick(), MIN_TICK);
    }

    #[tokio::test(start_paused = true)]
    async fn with_the_defaults_a_silent_client_is_closed_after_5_minutes() {
        let rule = IdleRule::new(default_idle_timeout(), ServerConfig::default().min_rate);
        let closed = closed_after(rule, Duration::from_secs(1), 0, Duration::from_secs(3600));
        around(closed.await, Duration::from_secs(300), rule);
    }

    #[tokio::test(start_paused = true)]
    async fn with_the_defaults_a_byte_every_3_seconds_is_closed_after_one_window() {
        // Never silent for more than 3 s, yet 200 bytes moved in 300 s.
        let rule = IdleRule::new(default_idle_timeout(), ServerConfig::default().min_rate);
        let closed = closed_after(rule, Duration::from_secs(3), 1, Duration::from_secs(3600));
        around(closed.await, Duration::from_secs(300), rule);
    }

    #[tokio::test(start_paused = true)]
    async fn with_the_defaults_a_byte_a_second_keeps_its_connection() {
        let rule = IdleRule::new(default_idle_timeout(), ServerConfig::default().min_rate);
        let closed = closed_after(rule, Duration::from_secs(1), 1, Duration::from_secs(3600));
        assert_eq!(closed.await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_minimum_rate_only_silence_closes() {
        let rule = IdleRule::new(default_idle_timeout(), 0);
        let trickle = closed_after(rule, Duration::from_secs(3), 1, Duration::from_secs(3600));
        assert_eq!(trickle.await, None);
        let silent = closed_after(rule, Duration::from_secs(3), 0, Duration::from_secs(3600));
        around(silent.await, Duration::from_secs(300), rule);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_counts_the_larger_of_bytes_in_and_out_so_an_echo_does_not_double_it() {
        // 10 bytes per 10 s window. A byte every 2 s, echoed, is 5 in and
        // 5 out a window: 10 together, which met the quota when the two
        // were added up.
        let rule = IdleRule::new(Duration::from_secs(10), 1);
        let closed = closed_after(rule, Duration::from_secs(2), 1, Duration::from_secs(3600));
        around(closed.await, Duration::from_secs(10), rule);
    }

    #[test]
    fn bytes_in_alone_or_out_alone_meet_the_rate() {
        // 8 bytes per window of 8 ticks; 2 bytes a tick is twice that,
        // whichever way they go.
        let rule = IdleRule::new(Duration::from_millis(800), 10);
        assert_eq!((rule.quota, rule.ticks()), (8, 8));
        let sweep = Sweep::new(Some(rule));
        let (upload, download) = (sweep.watch(), sweep.watch());
        for _ in 0..40 {
            upload.received(2);
            download.sent(2);
            sweep.judge(0);
        }
        assert!(!upload.is_idle() && !download.is_idle());
    }

    /// A sweep of 100 ms ticks, 8 to the idle timeout, and no minimum
    /// rate: only silence and shedding close.
    fn shedding_sweep() -> Sweep {
        Sweep::new(Some(IdleRule::new(Duration::from_millis(800), 0)))
    }

    #[test]
    fn under_pressure_the_slowest_measured_connection_is_shed_first_one_a_tick() {
        let sweep = shedding_sweep();
        let (fast, slow, slower) = (sweep.watch(), sweep.watch(), sweep.watch());
        // Never silent for a whole timeout, all measured by the end; with
        // nobody waiting, nobody is shed, however slow.
        for tick in 0..3 * MEASURED_AFTER {
            fast.received(100);
            fast.sent(100);
            if tick % 2 == 0 {
                slow.received(2);
            }
            if tick % 4 == 0 {
                slower.received(1);
            }
            sweep.judge(0);
        }
        assert!(!fast.is_idle() && !slow.is_idle() && !slower.is_idle());
        // A client just admitted, silent: too young to be measured.
        let newcomer = sweep.watch();
        // Two waiting, but 4 connections make one a tick.
        sweep.judge(2);
        assert!(slower.is_shed() && slower.is_idle());
        assert!(!slow.is_idle() && !fast.is_idle() && !newcomer.is_idle());
        // Still closing, the shed one is the waiting client's slot on its
        // way: nobody else goes for it.
        sweep.judge(1);
        assert!(!slow.is_idle(), "shed twice for one waiting client");
        // Closed, and still one waiting: the next slowest goes (the
        // newcomer, measured by now, has sent its first request).
        newcomer.received(50);
        drop(slower);
        sweep.judge(1);
        assert!(slow.is_shed());
        assert!(!fast.is_idle() && !newcomer.is_idle());
    }

    #[test]
    fn a_connection_is_shed_only_once_watched_long_enough_to_be_measured() {
        let sweep = shedding_sweep();
        let young = sweep.watch();
        // Active, so never silent, and moving nothing: the slowest there is.
        for _ in 0..MEASURED_AFTER {
            young.touched();
            sweep.judge(1);
        }
        assert!(!young.is_idle(), "shed before it was measured");
        young.touched();
        sweep.judge(1);
        assert!(young.is_shed());
    }

    #[test]
    fn at_most_one_in_64_connections_is_shed_a_tick() {
        let sweep = shedding_sweep();
        let watched: Vec<_> = (0..130).map(|_| sweep.watch()).collect();
        for _ in 0..MEASURED_AFTER + 1 {
            for one in &watched {
                one.received(1);
            }
            sweep.judge(0);
        }
        for one in &watched {
            one.received(1);
        }
        sweep.judge(100);
        let shed = watched.iter().filter(|one| one.is_shed()).count();
        assert_eq!(shed, 130 / SHED_SHARE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_falls_silent_is_closed_one_timeout_after_its_last_byte() {
        // Active for a minute at a good rate, then silent: the silence
        // rule, counted from the last byte, closes it.
        let rule = IdleRule::new(Duration::from_secs(10), 1);
        let start = Instant::now();
        let sweep = Arc::new(Sweep::new(Some(rule)));
        let watched = sweep.watch();
        let running = tokio::spawn(sweep.clone().run());
        for _ in 0..60 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            watched.received(100);
        }
        found_idle(&watched).await;
        running.abort();
        let last_byte = Duration::from_secs(60);
        let closed = start.elapsed();
        assert!(
            closed >= last_byte + rule.timeout
                && closed <= last_byte + rule.timeout + 2 * rule.tick(),
            "closed after {closed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_is_never_idle_and_counts_afresh_from_when_it_stops() {
        // Busy for a minute, five timeouts, moving nothing, then silent:
        // closed one timeout after it stopped being busy, by the silence
        // rule, neither during the minute nor at once by a rate window
        // that spanned it.
        let rule = IdleRule::new(Duration::from_secs(10), 1);
        let start = Instant::now();
        let sweep = Arc::new(Sweep::new(Some(rule)));
        let watched = sweep.watch();
        let running = tokio::spawn(sweep.clone().run());
        watched.set_busy(true);
        let busy_for = Duration::from_secs(60);
        tokio::select! {
            () = found_idle(&watched) => panic!("closed while busy, after {:?}", start.elapsed()),
            () = tokio::time::sleep(busy_for) => {}
        }
        watched.set_busy(false);
        found_idle(&watched).await;
        running.abort();
        let closed = start.elapsed();
        assert!(
            closed >= busy_for + rule.timeout
                && closed <= busy_for + rule.timeout + 2 * rule.tick(),
            "closed after {closed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_cut_wakes_every_connection_and_the_sweep_forgets_closed_ones() {
        let sweep = Sweep::new(None);
        let (first, second) = (sweep.watch(), sweep.watch());
        let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for watched in [&first, &second] {
            watched.register(&counting_waker(woken.clone()));
        }
        drop(second);
        sweep.judge(0);
        assert_eq!(
            sweep.lock().list.len(),
            1,
            "a closed connection is forgotten"
        );
        assert!(!first.is_cut());
        sweep.cut();
        assert!(first.is_cut());
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        assert!(
            sweep.watch().is_cut(),
            "a connection watched after the cut is cut"
        );
    }

    #[test]
    fn an_entry_is_32_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 32);
    }

    #[test]
    fn a_watched_record_fills_a_64_byte_chunk_with_its_arc_counts() {
        // 48 bytes and the Arc's two counts: mimalloc's 64-byte class.
        assert_eq!(std::mem::size_of::<Watched>() + 16, 64);
    }

    #[test]
    fn the_sweep_clock_may_wrap() {
        // A 10 ms tick wraps a u32 after 497 days: distances still hold.
        let rule = IdleRule::new(Duration::from_millis(80), 0);
        assert_eq!(rule.ticks(), 8);
        let sweep = Sweep::new(Some(rule));
        sweep.lock().now = Tick::MAX - 3;
        let (silent, busy) = (sweep.watch(), sweep.watch());
        // The first tick sees both, and counts from itself: 8 ticks later
        // the silent one has been silent for the whole timeout.
        for _ in 0..8 {
            busy.received(1);
            sweep.judge(0);
        }
        assert!(!silent.is_idle(), "judged 7 ticks after the first saw it");
        busy.received(1);
        sweep.judge(0);
        assert!(silent.is_idle() && !busy.is_idle());
    }

    #[test]
    fn the_list_gives_back_a_bursts_room() {
        let sweep = Sweep::new(None);
        let burst: Vec<_> = (0..1000).map(|_| sweep.watch()).collect();
        let peak = sweep.lock().list.capacity();
        drop(burst);
        let kept = sweep.watch();
        sweep.judge(0);
        let list = &sweep.lock().list;
        assert_eq!(list.len(), 1);
        assert!(list.capacity() < peak / 4, "{} of {peak}", list.capacity());
        drop(kept);
    }

    fn counting_waker(count: Arc<std::sync::atomic::AtomicUsize>) -> Waker {
        struct Counting(Arc<std::sync::atomic::AtomicUsize>);
        impl std::task::Wake for Counting {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        Waker::from(Arc::new(Counting(count)))
    }
}
