//! An admitted job: its work in slices, where its result goes, and its
//! slot, counted as far as the job got when it is dropped.

use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};

use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::error::{ComputeError, panicked};
use crate::metrics::{ComputeOutcome, Metrics};

/// An admitted job, its types erased for the queue.
pub(super) trait Slices: Send {
    /// Runs the job's next slice: true when the job is over, its result
    /// sent (dropped unread if its caller has gone).
    fn run_slice(&mut self) -> bool;
    /// True once its caller no longer waits for the result.
    fn is_abandoned(&self) -> bool;
    /// Counts the job as cancelled when it is dropped.
    fn cancel(&mut self);
}

/// An admitted job: its work, where its result goes, and its slot.
pub(super) struct Job<T, F> {
    pub(super) work: F,
    /// Taken to send the result.
    pub(super) reply: Option<oneshot::Sender<Result<T, ComputeError>>>,
    /// Let go as the job ends, before its result goes: a caller that has
    /// its result finds the job counted and its slot free.
    pub(super) admitted: Option<Admitted>,
}

impl<T, F> Slices for Job<T, F>
where
    F: FnMut() -> ControlFlow<T> + Send,
    T: Send,
{
    fn run_slice(&mut self) -> bool {
        let (outcome, result) = match catch_unwind(AssertUnwindSafe(&mut self.work)) {
            Ok(ControlFlow::Continue(())) => return false,
            Ok(ControlFlow::Break(value)) => (ComputeOutcome::Done, Ok(value)),
            Err(payload) => (ComputeOutcome::Panicked, Err(panicked(payload))),
        };
        if let Some(mut admitted) = self.admitted.take() {
            admitted.outcome = outcome;
        }
        if let Some(reply) = self.reply.take() {
            // A caller that has gone drops the result unread.
            let _ = reply.send(result);
        }
        true
    }

    fn is_abandoned(&self) -> bool {
        self.reply.as_ref().is_none_or(oneshot::Sender::is_closed)
    }

    fn cancel(&mut self) {
        if let Some(admitted) = &mut self.admitted {
            admitted.outcome = ComputeOutcome::Cancelled;
        }
    }
}

/// A closure, as work of one slice.
pub(super) fn once<T>(work: impl FnOnce() -> T) -> impl FnMut() -> ControlFlow<T> {
    let mut work = Some(work);
    // Called once: a job ends at its first `Break`.
    move || {
        work.take()
            .map_or(ControlFlow::Continue(()), |work| ControlFlow::Break(work()))
    }
}

/// An admitted job's slot and its place in the metrics, released when the
/// job is dropped, however it ends, and counted as far as it got: done,
/// panicked, cancelled (its caller went first) or stopped (the runtime
/// stopped first).
pub(super) struct Admitted {
    pub(super) _slot: OwnedSemaphorePermit,
    pub(super) metrics: Option<Metrics>,
    pub(super) outcome: ComputeOutcome,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(metrics) = &self.metrics {
            metrics.compute_finished(self.outcome);
        }
    }
}
