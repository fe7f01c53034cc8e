//! Latency and throughput figures of a run.
//!
//! Latencies are recorded in microseconds into one HdrHistogram per run.
//! Connections record into a small local batch and merge it under the lock
//! every [`BATCH`] samples, so thousands of connections neither contend per
//! message nor each carry a histogram of their own.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Samples a connection keeps before merging them into the run's histogram.
const BATCH: usize = 256;
/// Largest latency recorded exactly; longer ones are clamped to it.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// The window whose messages count, and the run's shared figures.
#[derive(Debug)]
pub struct Stats {
    /// Messages sent at or after this instant count...
    pub measure_from: Instant,
    /// ...and before this one.
    pub measure_until: Instant,
    histogram: Mutex<Histogram<u64>>,
    /// Messages echoed and verified within the window.
    pub messages: AtomicU64,
    /// Payload bytes echoed within the window.
    pub bytes: AtomicU64,
    /// Messages echoed and verified so far, window or not: for the progress bar.
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
        // Constant bounds that hdrhistogram accepts: 1 µs to an hour, 3 digits.
        let histogram =
            Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds");
        Stats {
            measure_from: from,
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

    /// True if a message started at `start` counts.
    pub fn in_window(&self, start: Instant) -> bool {
        start >= self.measure_from && start < self.measure_until
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
    batch: Vec<u64>,
    messages: u64,
    bytes: u64,
}

impl<'a> Recorder<'a> {
    pub fn new(stats: &'a Stats) -> Recorder<'a> {
        Recorder {
            stats,
            batch: Vec::with_capacity(BATCH),
            messages: 0,
            bytes: 0,
        }
    }

    /// Records one message of `bytes` that started at `start` (its send, or
    /// in the open loop its intended send) and was echoed whole at `done`.
    pub fn record(&mut self, start: Instant, done: Instant, bytes: usize) {
        if !self.stats.in_window(start) {
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

    /// Merges what this recorder holds into the run's figures.
    pub fn flush(&mut self) {
        if let Ok(mut histogram) = self.stats.histogram.lock() {
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
        self.messages = 0;
        self.bytes = 0;
    }
}

impl Drop for Recorder<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}
