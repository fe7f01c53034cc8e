//! The runtimes of a started server, typed by what they are: the acceptor
//! runtime, where the layout has one, and the serving runtime, a pool of
//! threads or a set of shards. [`Started`] holds them with the accept tasks
//! and stops them in the shutdown's order: accepting first, serving last.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinSet;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::warn;

use super::stop_times::RUNTIME_STOP_TIMEOUT;

/// The runtime that serves connections.
pub(crate) enum ServingRuntime {
    /// `split` and `single`: one multi-thread runtime.
    Pool(Runtime),
    /// `sharded`: single-thread runtimes, each on a thread of its own.
    Shards(Shards),
}

/// The shards of `sharded`: each thread runs its runtime until `stop`.
pub(crate) struct Shards {
    /// Where work of the serving side that is not a connection (the sweep,
    /// services) is spawned.
    first: Handle,
    threads: Vec<JoinHandle<()>>,
    stop: CancellationToken,
    /// How long each shard's runtime waits, as it stops, for tasks that
    /// block its thread (nanoseconds): set to what is left of the shutdown
    /// grace before `stop` is cancelled.
    stop_within: Arc<AtomicU64>,
}

impl Shards {
    /// No shard yet; [`Shards::start`] adds them, the first one first.
    pub(crate) fn new(first: Handle) -> Self {
        Shards {
            first,
            threads: Vec::new(),
            stop: CancellationToken::new(),
            stop_within: Arc::new(AtomicU64::new(nanos(RUNTIME_STOP_TIMEOUT))),
        }
    }

    /// Runs `runtime` on a thread of its own, named `name`, until the
    /// shards stop. `attach` and `detach` run on that thread first and last.
    pub(crate) fn start(
        &mut self,
        name: String,
        runtime: Runtime,
        attach: impl FnOnce() + Send + 'static,
        detach: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<()> {
        let stop = self.stop.clone();
        let stop_within = self.stop_within.clone();
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            attach();
            // A current-thread runtime runs its tasks only inside
            // block_on; this thread lends itself until stopped.
            runtime.block_on(stop.cancelled_owned());
            runtime.shutdown_timeout(Duration::from_nanos(stop_within.load(Ordering::Acquire)));
            detach();
        })?;
        self.threads.push(thread);
        Ok(())
    }

    /// Stops every shard, each waiting up to `timeout` for tasks that block
    /// its thread, and joins their threads.
    fn shut_down(mut self, timeout: Duration) {
        self.stop_within.store(nanos(timeout), Ordering::Release);
        self.stop.cancel();
        for shard in self.threads.drain(..) {
            if shard.join().is_err() {
                warn!("a shard thread panicked");
            }
        }
    }
}

impl Drop for Shards {
    // Shards dropped without a shutdown (a server that failed to start, or
    // was dropped) still stop their threads.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl ServingRuntime {
    /// Where work of the serving side is spawned: the pool, or the first
    /// shard.
    pub(crate) fn handle(&self) -> &Handle {
        match self {
            ServingRuntime::Pool(runtime) => runtime.handle(),
            ServingRuntime::Shards(shards) => &shards.first,
        }
    }

    /// Shuts the runtime down, dropping any task still running, after
    /// waiting up to `timeout` for tasks that block a thread. Must not be
    /// called from async code.
    fn shut_down(self, timeout: Duration) {
        match self {
            ServingRuntime::Pool(runtime) => runtime.shutdown_timeout(timeout),
            ServingRuntime::Shards(shards) => shards.shut_down(timeout),
        }
    }
}

/// `duration` in nanoseconds, saturated: a shard's stop wait.
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The runtimes of a started server, and its accept tasks.
pub(crate) struct Started {
    /// Cancels `accept_stop` when dropped, first: a server dropped without
    /// a shutdown still stops accepting.
    _stop_accepting_on_drop: DropGuard,
    /// Runs the accept tasks; `None` in `single`, where they share the
    /// serving runtime.
    acceptor: Option<Runtime>,
    serving: ServingRuntime,
    /// The accept tasks; they end when `accept_stop` is cancelled.
    accept_tasks: JoinSet<()>,
    accept_stop: CancellationToken,
}

impl Started {
    /// `acceptor`'s and `serving`'s accept tasks, stopped by `accept_stop`.
    pub(crate) fn new(
        acceptor: Option<Runtime>,
        serving: ServingRuntime,
        accept_tasks: JoinSet<()>,
        accept_stop: CancellationToken,
    ) -> Self {
        Started {
            _stop_accepting_on_drop: accept_stop.clone().drop_guard(),
            acceptor,
            serving,
            accept_tasks,
            accept_stop,
        }
    }

    /// Completes if every accept task has ended, which without a stop means
    /// one failed.
    pub(crate) async fn acceptors_ended(&mut self) {
        while let Some(ended) = self.accept_tasks.join_next().await {
            if let Err(err) = ended {
                warn!(cause = %err, "an accept task failed");
            }
        }
    }

    /// Stops accepting: the accept tasks end, closing the listener (new
    /// connects are refused from here on). Connections already accepted
    /// stay with the serving runtime.
    pub(crate) async fn stop_accepting(&mut self) {
        self.accept_stop.cancel();
        self.acceptors_ended().await;
    }

    /// Where work of the serving side is spawned.
    pub(crate) fn serving_handle(&self) -> &Handle {
        self.serving.handle()
    }

    /// Shuts the acceptor runtime down, if the layout has one of its own;
    /// says whether it had. Must not be called from async code.
    pub(crate) fn shut_down_acceptor(&mut self) -> bool {
        let Some(acceptor) = self.acceptor.take() else {
            return false;
        };
        acceptor.shutdown_timeout(RUNTIME_STOP_TIMEOUT);
        true
    }

    /// Shuts the serving runtime down, dropping any task still running.
    /// Waits up to `timeout` for tasks that block a thread. Must not be
    /// called from async code.
    pub(crate) fn shut_down_serving(self, timeout: Duration) {
        self.serving.shut_down(timeout);
    }
}
