//! Latency and throughput figures of a run.
//!
//! Latencies are recorded in microseconds into one HdrHistogram per run.
//! Connections record into a small local batch and merge it under the lock
//! every [`BATCH`] samples, so thousands of connections neither contend per
//! message nor each carry a histogram of their own. Nothing shared is
//! written per message: the counters go with the batch, and the progress
//! count at most every [`PROGRESS_EVERY`]. With several threads, a shared
//! line written per message would bounce between their caches, at a cost
//! per message comparable to the generator's own work.
//!
//! The window can be held shut past its planned opening until the server's
//! figures that it is compared with have been read (`Stats::held`,
//! `Stats::open_at`): a message then counts only if it was sent after that
//! read, however late the answer came, and the window is that much shorter.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Samples a connection keeps before merging them into the run's histogram.
const BATCH: usize = 256;
/// How stale a connection's share of `Stats::progress` may get: the
/// progress bar redraws every 250 ms.
const PROGRESS_EVERY: Duration = Duration::from_millis(50);
/// Largest latency recorded exactly; longer ones are clamped to it.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// `Stats::delay` while the window is held shut.
const HELD: u64 = u64::MAX;

/// The window whose messages count, and the run's shared figures.
#[derive(Debug)]
pub struct Stats {
    /// Messages sent at or after this instant count...
    planned_from: Instant,
    /// ...or this many nanoseconds after it, when the window opened late;
    /// `HELD` while it is held shut...
    delay: AtomicU64,
    /// ...and before this one.
    pub measure_until: Instant,
    histogram: Mutex<Histogram<u64>>,
    /// Messages echoed and verified within the window.
    pub messages: AtomicU64,
    /// Payload bytes echoed within the window.
    pub bytes: AtomicU64,
    /// Messages echoed and verified so far, window or not: for the progress
    /// bar, up to [`PROGRESS_EVERY`] late.
    pub progress: AtomicU64,
    /// Connections that failed: I/O error, wrong bytes, early close.
    pub errors: AtomicU64,
    /// Connections opened within the window (churn).
    pub connects: AtomicU64,
    /// Messages due within the window and sent (open loop).
    pub sent: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Stats {
    /// Figures for a run measured from `from` for `duration`.
    pub fn new(from: Instant, duration: Duration) -> Stats {
        Stats::with_delay(from, duration, 0)
    }

    /// Figures for a run measured until `from + duration`, from `from` or
    /// from whenever `open_at` is called, the later; nothing counts before.
    pub fn held(from: Instant, duration: Duration) -> Stats {
        Stats::with_delay(from, duration, HELD)
    }

    fn with_delay(from: Instant, duration: Duration, delay: u64) -> Stats {
        // Constant bounds that hdrhistogram accepts: 1 µs to an hour, 3 digits.
        let histogram =
            Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds");
        Stats {
            planned_from: from,
            delay: AtomicU64::new(delay),
            measure_until: from + duration,
            histogram: Mutex::new(histogram),
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            progress: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            first_error: Mutex::new(None),
        }
    }

    /// Opens a held window at `at`, or as planned if that is later. Called
    /// once: a window, once open, does not move (recorders keep its
    /// opening).
    pub fn open_at(&self, at: Instant) {
        let late = at.saturating_duration_since(self.planned_from).as_nanos();
        let late = u64::try_from(late).unwrap_or(HELD - 1).min(HELD - 1);
        self.delay.store(late, Ordering::Release);
    }

    /// When the window was planned to open.
    pub fn planned_from(&self) -> Instant {
        self.planned_from
    }

    /// When the window opened; `None` while it is held shut.
    pub fn measure_from(&self) -> Option<Instant> {
        match self.delay.load(Ordering::Acquire) {
            HELD => None,
            nanos => Some(self.planned_from + Duration::from_nanos(nanos)),
        }
    }

    /// How long the window was open: the planned duration, less how late
    /// it opened.
    pub fn window(&self) -> Duration {
        let from = self.measure_from().unwrap_or(self.measure_until);
        self.measure_until.saturating_duration_since(from)
    }

    /// True if a message started at `start` counts.
    pub fn in_window(&self, start: Instant) -> bool {
        self.measure_from()
            .is_some_and(|from| start >= from && start < self.measure_until)
    }

    /// Counts one failed connection, keeping the first description.
    pub fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert(what);
        }
    }

    /// The first error's description, if any.
    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|first| first.clone())
    }

    /// A copy of the latency histogram.
    pub fn histogram(&self) -> Histogram<u64> {
        match self.histogram.lock() {
            Ok(histogram) => histogram.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// A connection's latency samples on their way to the run's histogram.
#[derive(Debug)]
pub struct Recorder<'a> {
    stats: &'a Stats,
    /// The window's opening, once it has opened: it does not move after,
    /// so the shared one is read only until then.
    from: Option<Instant>,
    until: Instant,
    batch: Vec<u64>,
    messages: u64,
    bytes: u64,
    /// Echoes not yet added to `stats.progress`...
    progress: u64,
    /// ...and when they are added, at the first echo from then.
    publish_at: Option<Instant>,
}

impl<'a> Recorder<'a> {
    pub fn new(stats: &'a Stats) -> Recorder<'a> {
        Recorder {
            stats,
            from: None,
            until: stats.measure_until,
            batch: Vec::with_capacity(BATCH),
            messages: 0,
            bytes: 0,
            progress: 0,
            publish_at: None,
        }
    }

    /// Records one message of `bytes` that started at `start` (its send, or
    /// in the open loop its intended send) and was echoed whole at `done`.
    pub fn record(&mut self, start: Instant, done: Instant, bytes: usize) {
        self.progress += 1;
        if self.publish_at.is_none_or(|at| done >= at) {
            self.stats
                .progress
                .fetch_add(self.progress, Ordering::Relaxed);
            self.progress = 0;
            self.publish_at = Some(done + PROGRESS_EVERY);
        }
        if !self.in_window(start) {
            return;
        }
        let micros = done.saturating_duration_since(start).as_micros();
        self.batch.push(
            u64::try_from(micros)
                .unwrap_or(MAX_LATENCY_US)
                .clamp(1, MAX_LATENCY_US),
        );
        self.messages += 1;
        self.bytes += bytes as u64;
        if self.batch.len() == BATCH {
            self.flush();
        }
    }

    /// [`Stats::in_window`], from the opening kept once known.
    fn in_window(&mut self, start: Instant) -> bool {
        let from = match self.from {
            Some(from) => from,
            None => match self.stats.measure_from() {
                Some(from) => *self.from.insert(from),
                None => return false,
            },
        };
        start >= from && start < self.until
    }

    /// Merges what this recorder holds into the run's figures.
    pub fn flush(&mut self) {
        if !self.batch.is_empty()
            && let Ok(mut histogram) = self.stats.histogram.lock()
        {
            for &micros in &self.batch {
                // In bounds by the clamp above.
                let _ = histogram.record(micros);
            }
        }
        self.batch.clear();
        self.stats
            .messages
            .fetch_add(self.messages, Ordering::Relaxed);
        self.stats.bytes.fetch_add(self.bytes, Ordering::Relaxed);
        self.stats
            .progress
            .fetch_add(self.progress, Ordering::Relaxed);
        self.messages = 0;
        self.bytes = 0;
        self.progress = 0;
    }
}

impl Drop for Recorder<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_window_counts_messages_sent_from_its_opening_until_its_end() {
        let from = Instant::now();
        let stats = Stats::new(from, SECOND);
        assert!(!stats.in_window(from - Duration::from_millis(1)));
        assert!(stats.in_window(from));
        assert!(!stats.in_window(from + SECOND));
        assert_eq!(stats.window(), SECOND);
    }

    #[test]
    fn a_held_window_counts_nothing_until_it_is_opened() {
        let from = Instant::now();
        let stats = Stats::held(from, SECOND);
        assert!(!stats.in_window(from + Duration::from_millis(500)));
        assert_eq!(stats.measure_from(), None);
        assert_eq!(stats.window(), Duration::ZERO);
    }

    #[test]
    fn a_window_opened_late_counts_only_what_was_sent_after_and_is_shorter() {
        let from = Instant::now();
        let stats = Stats::held(from, SECOND);
        let late = from + Duration::from_millis(300);
        stats.open_at(late);
        assert!(!stats.in_window(late - Duration::from_nanos(1)));
        assert!(stats.in_window(late));
        assert_eq!(stats.window(), Duration::from_millis(700));
    }

    #[test]
    fn a_recorder_counts_what_was_sent_once_a_held_window_opened_and_every_echo_as_progress() {
        let from = Instant::now();
        let stats = Stats::held(from, SECOND);
        let mut recorder = Recorder::new(&stats);
        let early = from + Duration::from_millis(100);
        recorder.record(early, early + Duration::from_micros(50), 64);
        let opened = from + Duration::from_millis(200);
        stats.open_at(opened);
        recorder.record(early, opened + Duration::from_micros(50), 64);
        recorder.record(opened, opened + Duration::from_micros(70), 64);
        recorder.record(from + SECOND, from + SECOND + Duration::from_micros(90), 64);
        drop(recorder);
        assert_eq!(stats.messages.load(Ordering::Relaxed), 1);
        assert_eq!(stats.bytes.load(Ordering::Relaxed), 64);
        assert_eq!(stats.progress.load(Ordering::Relaxed), 4);
        assert_eq!(stats.histogram().len(), 1);
        assert_eq!(stats.histogram().max(), 70);
    }

    #[test]
    fn progress_is_published_at_the_first_echo_and_then_at_most_every_interval() {
        let from = Instant::now();
        let stats = Stats::new(from, SECOND);
        let mut recorder = Recorder::new(&stats);
        let progress = || stats.progress.load(Ordering::Relaxed);
        recorder.record(from, from, 1);
        assert_eq!(progress(), 1);
        recorder.record(from, from + PROGRESS_EVERY / 2, 1);
        assert_eq!(progress(), 1);
        recorder.record(from, from + PROGRESS_EVERY, 1);
        assert_eq!(progress(), 3);
    }

    #[test]
    fn a_window_opened_before_its_plan_opens_as_planned() {
        let from = Instant::now() + SECOND;
        let stats = Stats::held(from, SECOND);
        stats.open_at(from - Duration::from_millis(300));
        assert_eq!(stats.measure_from(), Some(from));
        assert!(!stats.in_window(from - Duration::from_millis(1)));
        assert_eq!(stats.window(), SECOND);
    }
}
