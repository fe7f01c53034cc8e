//! Byte counts on the hot path.
//!
//! A read or a write adds to plain integers in a thread-local tally: no
//! atomic operation, no shared cache line. The tally reaches the server's
//! shared [`Totals`] in batches: every [`FLUSH_EVERY`] counted operations,
//! and whenever the thread runs out of work (tokio's park hook) or stops.
//! A busy thread is therefore at most a few hundred operations behind, and an
//! idle one not at all, which is what a scrape needs.
//!
//! Each thread of the server's runtimes is attached to its server's totals
//! when it starts (a runtime hook; by hand for shard threads), so several
//! servers in one process keep their counts apart.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counted operations between two flushes of a busy thread's tally.
const FLUSH_EVERY: u32 = 256;

/// A server's byte totals, the sum of its threads' flushed tallies.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    received: AtomicU64,
    sent: AtomicU64,
}

impl Totals {
    /// Bytes received and sent, as flushed so far.
    #[cfg(any(feature = "admin", test))]
    pub(crate) fn read(&self) -> (u64, u64) {
        (
            self.received.load(Ordering::Relaxed),
            self.sent.load(Ordering::Relaxed),
        )
    }
}

struct Tally {
    received: Cell<u64>,
    sent: Cell<u64>,
    pending: Cell<u32>,
    sink: RefCell<Option<Arc<Totals>>>,
}

thread_local! {
    static TALLY: Tally = const {
        Tally {
            received: Cell::new(0),
            sent: Cell::new(0),
            pending: Cell::new(0),
            sink: RefCell::new(None),
        }
    };
}

impl Tally {
    fn add(&self, counter: &Cell<u64>, bytes: usize) {
        counter.set(counter.get() + bytes as u64);
        let pending = self.pending.get() + 1;
        if pending >= FLUSH_EVERY {
            self.flush();
        } else {
            self.pending.set(pending);
        }
    }

    fn flush(&self) {
        self.pending.set(0);
        let received = self.received.replace(0);
        let sent = self.sent.replace(0);
        if let Ok(sink) = self.sink.try_borrow()
            && let Some(totals) = sink.as_ref()
        {
            if received > 0 {
                totals.received.fetch_add(received, Ordering::Relaxed);
            }
            if sent > 0 {
                totals.sent.fetch_add(sent, Ordering::Relaxed);
            }
        }
    }
}

/// Counts `bytes` read from a client on this thread.
pub(crate) fn received(bytes: usize) {
    // `try_with`: a count made while the thread is being torn down is
    // dropped rather than panicking.
    let _ = TALLY.try_with(|tally| tally.add(&tally.received, bytes));
}

/// Counts `bytes` written to a client on this thread.
pub(crate) fn sent(bytes: usize) {
    let _ = TALLY.try_with(|tally| tally.add(&tally.sent, bytes));
}

/// Makes this thread's tally flush into `totals`.
pub(crate) fn attach(totals: Arc<Totals>) {
    let _ = TALLY.try_with(|tally| {
        tally.flush();
        if let Ok(mut sink) = tally.sink.try_borrow_mut() {
            *sink = Some(totals);
        }
    });
}

/// Moves this thread's counts to its totals now.
pub(crate) fn flush() {
    let _ = TALLY.try_with(Tally::flush);
}

/// Flushes and detaches this thread's tally: for a thread about to stop.
pub(crate) fn detach() {
    let _ = TALLY.try_with(|tally| {
        tally.flush();
        if let Ok(mut sink) = tally.sink.try_borrow_mut() {
            *sink = None;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reach_the_totals_in_batches_and_on_flush() {
        let totals = Arc::new(Totals::default());
        let thread_totals = totals.clone();
        let seen = std::thread::spawn(move || {
            attach(thread_totals.clone());
            received(10);
            sent(7);
            // Below the batch size nothing has been shared yet...
            let before_flush = thread_totals.read();
            // ...the operation that completes a batch shares it...
            for _ in 2..FLUSH_EVERY {
                received(1);
            }
            let after_batch = thread_totals.read();
            received(1);
            sent(5);
            detach();
            (before_flush, after_batch)
        })
        .join()
        .unwrap();
        assert_eq!(seen.0, (0, 0));
        let batch = u64::from(FLUSH_EVERY);
        assert_eq!(seen.1, (10 + batch - 2, 7));
        // ...and the rest goes when the thread stops.
        assert_eq!(totals.read(), (10 + batch - 1, 12));
    }

    #[test]
    fn a_thread_without_totals_counts_nothing_anywhere() {
        let totals = Arc::new(Totals::default());
        std::thread::spawn(|| {
            received(100);
            flush();
        })
        .join()
        .unwrap();
        assert_eq!(totals.read(), (0, 0));
    }
}
