//! [`TaskTracker`]: every connection task and hand-off receiver of a
//! server, so that the shutdown can wait for them wherever they run.
//!
//! tokio-util has one of the same name, but it comes with that crate's `rt`
//! feature, which builds futures-util and its proc-macro into every server
//! on the library. This one is the part the server uses: spawn, close,
//! wait. A task costs what tokio-util's costs: one counter increment at
//! its spawn, one decrement at its end, and a pointer in its future.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::runtime::Handle;
use tokio::sync::Notify;

/// The tasks spawned through it; [`wait`](Self::wait) ends once it is
/// closed and they have all ended. Cheap to clone; every clone is the same
/// tracker.
#[derive(Clone, Default)]
pub(crate) struct TaskTracker {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Bit 0: closed; above it, the tasks alive.
    state: AtomicUsize,
    /// Woken when the last task ends after the close, or at a close that
    /// finds none.
    done: Notify,
}

const CLOSED: usize = 1;
const TASK: usize = 2;

impl TaskTracker {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// No more tasks are expected: [`wait`](Self::wait) may end.
    pub(crate) fn close(&self) {
        if self.inner.state.fetch_or(CLOSED, Ordering::AcqRel) == 0 {
            self.inner.done.notify_waiters();
        }
    }

    /// Waits until the tracker is closed and every task it spawned has
    /// ended (or was dropped with its runtime).
    pub(crate) async fn wait(&self) {
        loop {
            // Registered before the check, so that a task ending between
            // the two still wakes this wait.
            let mut notified = pin!(self.inner.done.notified());
            notified.as_mut().enable();
            if self.inner.state.load(Ordering::Acquire) == CLOSED {
                return;
            }
            notified.await;
        }
    }

    /// Spawns `task` on the current runtime, tracked.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        tokio::spawn(self.track(task));
    }

    /// Spawns `task` on `handle`'s runtime, tracked.
    pub(crate) fn spawn_on<F>(&self, task: F, handle: &Handle)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        handle.spawn(self.track(task));
    }

    fn track<F>(&self, task: F) -> Tracked<F> {
        self.inner.state.fetch_add(TASK, Ordering::Relaxed);
        Tracked {
            task,
            _token: Token(self.inner.clone()),
        }
    }
}

/// A task's place in the count, given back when its future is dropped:
/// at its end, or with its runtime.
struct Token(Arc<Inner>);

impl Drop for Token {
    fn drop(&mut self) {
        if self.0.state.fetch_sub(TASK, Ordering::AcqRel) == CLOSED | TASK {
            self.0.done.notify_waiters();
        }
    }
}

pin_project_lite::pin_project! {
    /// A tracked task's future: the task and its token, nothing else.
    struct Tracked<F> {
        #[pin]
        task: F,
        _token: Token,
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().task.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn the_wait_ends_once_closed_and_every_task_has_ended() {
        let tracker = TaskTracker::new();
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        tracker.spawn(async move {
            let _ = finished.await;
        });
        tracker.close();
        let waited = tokio::time::timeout(Duration::from_millis(50), tracker.wait()).await;
        assert!(waited.is_err(), "the wait ended with a task alive");
        finish.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), tracker.wait())
            .await
            .expect("the wait did not end after the last task");
    }

    #[tokio::test]
    async fn an_open_tracker_keeps_the_wait_going_with_no_task() {
        let tracker = TaskTracker::new();
        let waited = tokio::time::timeout(Duration::from_millis(50), tracker.wait()).await;
        assert!(waited.is_err(), "the wait ended before the close");
        tracker.close();
        tokio::time::timeout(Duration::from_secs(10), tracker.wait())
            .await
            .expect("the wait did not end at the close");
    }
}
