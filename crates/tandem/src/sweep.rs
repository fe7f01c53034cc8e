//! The idle rule and the shutdown cut, enforced for every connection of a
//! server by one periodic sweep instead of by each connection.
//!
//! A connection that waited on its own idle timer and on the cut would
//! register three waiters every time its socket ran dry: the socket's
//! readiness, the timer and the cut's channel. Here it registers one, the
//! socket's. Its task's waker sits in its [`Watched`] record, put there
//! without a lock, and the sweep, one task per server, wakes exactly the
//! connections it concerns: those it finds idle at a tick, and every one at
//! the cut. A message costs the connection no clock read either: it counts
//! its activity and its bytes in two plain counters, and the sweep reads
//! them.
//!
//! The price is precision. The sweep sees activity at its ticks, so it
//! counts a connection's silence from the first tick after its last
//! activity: a silent connection is closed between one and one plus two
//! ticks of the idle timeout after its last byte, never before. A tick is
//! an eighth of the idle timeout, from 10 ms to 1 s: the default 300 s
//! timeout is judged every second, to within 2 s. The minimum rate is
//! judged over windows that run from one tick to the first tick at least
//! an idle timeout later, so no window is ever shorter than the timeout.
//!
//! A connection whose handler is busy for it (a compute job queued or
//! running) is not idle, whatever its peer does: the sweep counts it active
//! at each tick it sees it busy, so its silence and its rate window count
//! afresh from when it stops being busy.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::Duration;

use atomic_waker::AtomicWaker;
use tokio::time::MissedTickBehavior;

/// When a connection counts as idle: silent for `timeout`, or, when
/// `quota` is not 0, fewer than `quota` bytes moved (in and out together) in
/// a window of `timeout`.
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

/// What a connection and the sweep share. Only the connection's task
/// writes the counters, so it updates them with a plain load and store:
/// no locked instruction per message.
///
/// One allocation per connection, 40 bytes behind the `Arc`'s two counts
/// (a 64-byte heap chunk): the waker, two counters, the verdicts and the
/// busy flag, which fits in the padding.
#[derive(Debug, Default)]
pub(crate) struct Watched {
    /// The connection task's waker, as of its latest wait.
    waker: AtomicWaker,
    /// Reads and writes so far, and flushes of what TLS held: any change
    /// is activity. 32 bits: the sweep only asks whether it changed since
    /// its last tick, and it cannot wrap all the way round within one.
    activity: AtomicU32,
    /// Bytes moved so far, in and out together: the minimum rate's count.
    bytes: AtomicU64,
    /// Set by the sweep, never cleared: [`IDLE`] when the rule says idle,
    /// [`CUT`] when the server cuts its connections; both may be set.
    verdicts: AtomicU8,
    /// The handler is working or waiting for the connection, not for its
    /// peer: set and cleared by the connection's task only.
    busy: AtomicBool,
}

/// The rule says the connection is idle.
const IDLE: u8 = 1;
/// The server has cut its connections.
const CUT: u8 = 2;

impl Watched {
    /// Records activity that moved `bytes`.
    pub(crate) fn record(&self, bytes: usize) {
        let activity = self.activity.load(Ordering::Relaxed);
        self.activity
            .store(activity.wrapping_add(1), Ordering::Relaxed);
        if bytes > 0 {
            let moved = self.bytes.load(Ordering::Relaxed);
            self.bytes
                .store(moved.saturating_add(bytes as u64), Ordering::Relaxed);
        }
    }

    /// Marks the connection busy, or no longer. Counted as activity too,
    /// so that a busy spell between two ticks, which the sweep never sees,
    /// still ends a silence.
    pub(crate) fn set_busy(&self, busy: bool) {
        self.record(0);
        self.busy.store(busy, Ordering::Release);
    }

    /// Makes `waker` the one the sweep wakes. Cheap when it is the same
    /// as last time, which for a task's own waker it always is.
    pub(crate) fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }

    /// True once the sweep has found the connection idle.
    pub(crate) fn is_idle(&self) -> bool {
        self.verdicts.load(Ordering::Acquire) & IDLE != 0
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
}

/// The sweep of one server: every live connection's record, and the cut.
#[derive(Debug)]
pub(crate) struct Sweep {
    rule: Option<IdleRule>,
    entries: Mutex<Entries>,
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
}

/// A point on the sweep's clock, in ticks.
type Tick = u32;

/// The sweep's view of one connection, 32 bytes.
#[derive(Debug)]
struct Entry {
    watched: Arc<Watched>,
    /// The activity count the sweep last saw, and the tick it first saw
    /// it at.
    seen_activity: u32,
    active_at: Tick,
    /// The current rate window: the tick it opened at, and the byte count
    /// then.
    window_from: Tick,
    window_bytes: u64,
}

impl Sweep {
    /// A sweep for connections under `rule` (none: only the cut).
    pub(crate) fn new(rule: Option<IdleRule>) -> Sweep {
        Sweep {
            rule,
            entries: Mutex::new(Entries::default()),
        }
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
            seen_activity: 0,
            active_at: next,
            window_from: next,
            window_bytes: 0,
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
    /// dropped with its runtime. Without a rule there is nothing to judge;
    /// closed connections are still forgotten, once a second.
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
            self.judge();
        }
    }

    /// One tick: forgets closed connections, and marks and wakes those the
    /// rule says are idle now.
    fn judge(&self) {
        let rule = self.rule.map(|rule| (rule, rule.ticks()));
        let mut entries = self.lock();
        entries.now = entries.now.wrapping_add(1);
        let now = entries.now;
        entries.list.retain_mut(|entry| {
            // The connection dropped its record: it has closed.
            if Arc::strong_count(&entry.watched) == 1 {
                return false;
            }
            let Some((rule, ticks)) = rule else {
                return true;
            };
            if entry.verdict(rule.quota, ticks, now) {
                entry.watched.rule(IDLE);
                // Judged once: the connection closes on its own now.
                return false;
            }
            true
        });
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
            self.window_bytes = self.watched.bytes.load(Ordering::Relaxed);
            return false;
        }
        let activity = self.watched.activity.load(Ordering::Relaxed);
        if activity != self.seen_activity {
            self.seen_activity = activity;
            self.active_at = now;
        }
        if now.wrapping_sub(self.active_at) >= ticks {
            return true;
        }
        if quota == 0 || now.wrapping_sub(self.window_from) < ticks {
            return false;
        }
        let bytes = self.watched.bytes.load(Ordering::Relaxed);
        if bytes.saturating_sub(self.window_bytes) < quota {
            return true;
        }
        self.window_from = now;
        self.window_bytes = bytes;
        false
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
                    watched.record(bytes);
                    watched.record(bytes);
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
            watched.record(100);
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
        sweep.judge();
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
            busy.record(1);
            sweep.judge();
        }
        assert!(!silent.is_idle(), "judged 7 ticks after the first saw it");
        busy.record(1);
        sweep.judge();
        assert!(silent.is_idle() && !busy.is_idle());
    }

    #[test]
    fn the_list_gives_back_a_bursts_room() {
        let sweep = Sweep::new(None);
        let burst: Vec<_> = (0..1000).map(|_| sweep.watch()).collect();
        let peak = sweep.lock().list.capacity();
        drop(burst);
        let kept = sweep.watch();
        sweep.judge();
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
