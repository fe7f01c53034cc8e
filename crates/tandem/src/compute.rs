//! The compute runtime: the article's "runtime for resource-intensive
//! operations", beside the runtimes that accept and serve.
//!
//! A handler that must do CPU-heavy work for a connection (hash, compress,
//! transform what it read) would hold its serving thread for that long, and
//! every other connection on the thread would wait. [`Compute::run`] sends
//! the work to threads of its own and awaits the result, so the serving
//! threads stay free for light connections.
//!
//! ```
//! use tandem::{Compute, ComputeConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let compute = Compute::start(&ComputeConfig::default().threads(2))?;
//! let serving = tokio::runtime::Runtime::new()?;
//! let sum = serving.block_on(compute.run(|| (1..=1000u64).sum::<u64>()))?;
//! assert_eq!(sum, 500_500);
//! // A panic in the work is the caller's error; the threads live on.
//! let failed = serving.block_on(compute.run(|| -> u64 { panic!("bad input") }));
//! assert!(failed.is_err());
//! assert_eq!(serving.block_on(compute.run(|| 7))?, 7);
//! # Ok(())
//! # }
//! ```
//!
//! The work runs on one of two kinds of thread ([`ComputeVia`]): the worker
//! threads of a dedicated multi-thread runtime (the default), or tokio's
//! blocking pool (`spawn_blocking`), capped at the same number of threads,
//! kept as a variant to measure against. Both are named `tandem-compute`.
//!
//! At most [`ComputeConfig::queue`] jobs are admitted at once, queued or
//! running. A job beyond that waits for a slot in [`Compute::run`], which
//! holds its connection's handler, which stops reading, so that TCP pushes
//! back on the client: memory does not grow with the backlog.
//!
//! With 0 threads (the default), [`Compute::run`] runs the work inline, on
//! the calling thread, with the same result and the same panic handling.

use std::any::Any;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::{ComputeOutcome, Metrics};
use crate::server::{MAX_QUEUE, MAX_THREADS, ServerError, in_range};

/// Which threads run the work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ComputeVia {
    /// The worker threads of a dedicated multi-thread runtime.
    #[default]
    Runtime,
    /// `spawn_blocking` on a blocking pool capped at the same number of
    /// threads.
    SpawnBlocking,
}

impl ComputeVia {
    /// Every value, in the order of [`ComputeVia::name`]'s documentation.
    pub const ALL: [ComputeVia; 2] = [ComputeVia::Runtime, ComputeVia::SpawnBlocking];

    /// `runtime` or `spawn-blocking`.
    pub fn name(self) -> &'static str {
        match self {
            ComputeVia::Runtime => "runtime",
            ComputeVia::SpawnBlocking => "spawn-blocking",
        }
    }
}

impl fmt::Display for ComputeVia {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is no [`ComputeVia`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown compute-via {0:?}: expected runtime or spawn-blocking")]
pub struct UnknownComputeVia(pub String);

impl std::str::FromStr for ComputeVia {
    type Err = UnknownComputeVia;

    fn from_str(name: &str) -> Result<Self, UnknownComputeVia> {
        ComputeVia::ALL
            .into_iter()
            .find(|via| via.name() == name)
            .ok_or_else(|| UnknownComputeVia(name.to_owned()))
    }
}

/// How the compute runtime runs: [`Default`], then a setter per field;
/// each field says its own default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ComputeConfig {
    /// Threads that run the work; 0 runs it inline. Default: 0.
    pub threads: usize,
    /// Jobs admitted at once, queued or running; beyond it,
    /// [`Compute::run`] waits. Default: 128.
    pub queue: usize,
    /// Which threads run the work. Default: [`ComputeVia::Runtime`].
    pub via: ComputeVia,
}

impl Default for ComputeConfig {
    fn default() -> Self {
        ComputeConfig {
            threads: 0,
            // Enough to keep a few threads busy behind many connections,
            // few enough that what waits is a connection, not memory.
            queue: 128,
            via: ComputeVia::Runtime,
        }
    }
}

setters!(ComputeConfig {
    threads: usize,
    queue: usize,
    via: ComputeVia,
});

impl ComputeConfig {
    /// Checks the counts against their ranges.
    pub fn validate(&self) -> Result<(), ServerError> {
        in_range("compute_threads", self.threads, 0, MAX_THREADS)?;
        in_range("compute_queue", self.queue, 1, MAX_QUEUE)
    }
}

/// Why a job gave no result.
#[derive(Debug, Error)]
pub enum ComputeError {
    /// The work panicked; the message is the panic's, when it is text.
    #[error("the compute job panicked: {0}")]
    Panicked(String),
    /// The compute runtime has stopped (the server is shutting down).
    #[error("the compute runtime has stopped")]
    Stopped,
}

impl From<ComputeError> for std::io::Error {
    /// A job's failure as its connection's error.
    fn from(err: ComputeError) -> Self {
        std::io::Error::other(err)
    }
}

/// Where CPU-heavy work goes: threads of its own, or inline. Cloning is
/// cheap, and every clone sends to the same threads. A compute runtime
/// belongs to one server: the first given it with
/// [`Server::compute`](crate::Server::compute) reports it and stops it.
#[derive(Clone, Default)]
pub struct Compute(Option<Arc<Pool>>);

struct Pool {
    via: ComputeVia,
    threads: usize,
    queue: usize,
    handle: Handle,
    /// Taken when the server stops it.
    runtime: Mutex<Option<Runtime>>,
    slots: Arc<Semaphore>,
    /// The server's, once it is given to one.
    metrics: OnceLock<Metrics>,
}

impl fmt::Debug for Compute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("Compute(inline)"),
            Some(pool) => f
                .debug_struct("Compute")
                .field("via", &pool.via)
                .field("threads", &pool.threads)
                .field("queue", &pool.queue)
                .finish(),
        }
    }
}

impl Compute {
    /// Work runs inline, on the caller's thread.
    pub fn inline() -> Compute {
        Compute(None)
    }

    /// Starts the threads `config` asks for (none with 0 threads). Fails
    /// with [`ServerError::Runtime`] when the OS refuses them, or
    /// [`ServerError::InvalidConfig`] for a count out of range.
    pub fn start(config: &ComputeConfig) -> Result<Compute, ServerError> {
        config.validate()?;
        if config.threads == 0 {
            return Ok(Compute::inline());
        }
        let runtime_error = |cause| ServerError::Runtime {
            role: "tandem-compute".to_owned(),
            cause,
        };
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.thread_name("tandem-compute");
        // Its workers, and every thread it may start, the pool's included:
        // tokio would quietly run the jobs on fewer threads than asked for
        // if the OS refused some later.
        let (workers, threads) = match config.via {
            ComputeVia::Runtime => (config.threads, config.threads),
            // One worker thread to drive the pool, which starts its own
            // threads as work arrives.
            ComputeVia::SpawnBlocking => (1, config.threads + 1),
        };
        crate::server::threads::ensure_available(threads, "tandem-compute")?;
        builder.worker_threads(workers);
        if config.via == ComputeVia::SpawnBlocking {
            builder.max_blocking_threads(config.threads);
        }
        let runtime = builder.build().map_err(runtime_error)?;
        Ok(Compute(Some(Arc::new(Pool {
            via: config.via,
            threads: config.threads,
            queue: config.queue,
            handle: runtime.handle().clone(),
            runtime: Mutex::new(Some(runtime)),
            slots: Arc::new(Semaphore::new(config.queue)),
            metrics: OnceLock::new(),
        }))))
    }

    /// True when work runs inline.
    pub fn is_inline(&self) -> bool {
        self.0.is_none()
    }

    /// Runs `work` on the compute threads and returns its result, waiting
    /// first for a slot if [`ComputeConfig::queue`] jobs are already in.
    /// A panic in `work` is [`ComputeError::Panicked`]. Inline, it runs
    /// `work` at the first poll.
    pub fn run<T, F>(
        &self,
        work: F,
    ) -> impl Future<Output = Result<T, ComputeError>> + Send + 'static
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.0.clone();
        async move {
            let Some(pool) = pool else {
                return catch_unwind(AssertUnwindSafe(work)).map_err(panicked);
            };
            let asked = Instant::now();
            let slot = pool
                .slots
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| ComputeError::Stopped)?;
            let metrics = pool.metrics.get().cloned();
            if let Some(metrics) = &metrics {
                metrics.compute_admitted(asked.elapsed());
            }
            // The job holds the slot, not this future: a caller that stops
            // waiting (a connection cut, a timeout) leaves the job to end
            // with its slot, so the queue's bound holds for running work.
            let mut admitted = Admitted {
                _slot: slot,
                metrics,
                stage: Stage::Queued,
            };
            let job = move || {
                admitted.stage = Stage::Running;
                let result = work();
                admitted.stage = Stage::Done;
                drop(admitted);
                result
            };
            let joined = match pool.via {
                ComputeVia::Runtime => pool.handle.spawn(async move { job() }).await,
                ComputeVia::SpawnBlocking => pool.handle.spawn_blocking(job).await,
            };
            joined.map_err(|err| match err.try_into_panic() {
                Ok(payload) => panicked(payload),
                Err(_) => ComputeError::Stopped,
            })
        }
    }

    /// Reports into `metrics` from now on: the runtime's series under
    /// `runtime="compute"`, the queue and the wait for a slot.
    pub(crate) fn report_to(&self, metrics: &Metrics) {
        if let Some(pool) = &self.0 {
            metrics.compute_capacity(pool.queue);
            if pool.metrics.set(metrics.clone()).is_ok() {
                metrics.watch_runtime("compute", &pool.handle);
            }
        }
    }

    /// Stops the threads, waiting up to `timeout` for running work; later
    /// jobs fail with [`ComputeError::Stopped`]. Call it outside any
    /// runtime, as the server does once its serving runtimes are gone,
    /// with what is left of its shutdown grace.
    pub(crate) fn stop(&self, timeout: Duration) {
        if let Some(pool) = &self.0 {
            pool.slots.close();
            let runtime = pool
                .runtime
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(runtime) = runtime {
                runtime.shutdown_timeout(timeout);
            }
        }
    }
}

/// An admitted job's slot and its place in the metrics, released when the
/// job ends, however it ends: run, panicked (dropped while its work
/// unwinds), or dropped unrun by a stopping runtime.
struct Admitted {
    _slot: OwnedSemaphorePermit,
    metrics: Option<Metrics>,
    stage: Stage,
}

/// How far an admitted job got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Queued,
    Running,
    Done,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(metrics) = &self.metrics {
            metrics.compute_finished(match self.stage {
                Stage::Done => ComputeOutcome::Done,
                // Left while its work ran: only a panic leaves that way.
                Stage::Running => ComputeOutcome::Panicked,
                Stage::Queued => ComputeOutcome::Stopped,
            });
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // The last clone may go inside a runtime, where a blocking
        // shutdown would panic: the threads are let go without waiting.
        if let Some(runtime) = self
            .runtime
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            runtime.shutdown_background();
        }
    }
}

/// A panic's payload as the job's error.
fn panicked(payload: Box<dyn Any + Send>) -> ComputeError {
    let message = payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text payload".to_owned());
    ComputeError::Panicked(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serving() -> Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or_default().to_owned()
    }

    /// Starts a job on `compute` that holds its slot and its thread until
    /// the returned sender is used (or dropped), and returns once it runs.
    async fn held_job(
        compute: &Compute,
    ) -> (
        tokio::task::JoinHandle<Result<(), ComputeError>>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = std::sync::mpsc::channel::<()>();
        let job = tokio::spawn(compute.run(move || {
            let _ = started_tx.send(());
            let _ = held.recv();
        }));
        tokio::task::spawn_blocking(move || started.recv())
            .await
            .expect("the wait for the job")
            .expect("the job started");
        (job, release)
    }

    #[test]
    fn work_runs_on_tandem_compute_threads_in_both_kinds() {
        for via in ComputeVia::ALL {
            let compute = Compute::start(&ComputeConfig::default().threads(2).via(via)).unwrap();
            let name = serving().block_on(compute.run(thread_name)).unwrap();
            assert_eq!(name, "tandem-compute", "{via}");
            compute.stop(Duration::from_secs(1));
        }
    }

    #[test]
    fn with_no_threads_work_runs_inline() {
        let compute = Compute::start(&ComputeConfig::default()).unwrap();
        assert!(compute.is_inline());
        let caller = thread_name();
        assert_eq!(
            serving().block_on(compute.run(thread_name)).unwrap(),
            caller
        );
    }

    #[test]
    fn a_panic_is_the_jobs_error_and_the_threads_live_on() {
        for compute in [
            Compute::inline(),
            Compute::start(&ComputeConfig::default().threads(1)).unwrap(),
            Compute::start(
                &ComputeConfig::default()
                    .threads(1)
                    .via(ComputeVia::SpawnBlocking),
            )
            .unwrap(),
        ] {
            let serving = serving();
            let failed = serving.block_on(compute.run(|| -> u8 { panic!("bad input") }));
            assert!(
                matches!(&failed, Err(ComputeError::Panicked(message)) if message == "bad input"),
                "{compute:?}: {failed:?}"
            );
            assert_eq!(
                serving.block_on(compute.run(|| 7)).unwrap(),
                7,
                "{compute:?}"
            );
            compute.stop(Duration::from_secs(1));
        }
    }

    #[test]
    fn a_full_queue_makes_the_next_job_wait_for_a_slot() {
        let compute = Compute::start(&ComputeConfig::default().threads(1).queue(1)).unwrap();
        serving().block_on(async {
            // The only slot, held until released.
            let (first, release) = held_job(&compute).await;
            let mut second = Box::pin(compute.run(|| 2));
            // Not admitted while the first holds the slot.
            for _ in 0..3 {
                tokio::select! {
                    biased;
                    _ = &mut second => panic!("admitted past a full queue"),
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
            release.send(()).unwrap();
            first.await.unwrap().unwrap();
            assert_eq!(second.await.unwrap(), 2);
        });
        compute.stop(Duration::from_secs(1));
    }

    /// The value of series `name` in `metrics`' exposition.
    fn sample(metrics: &Metrics, name: &str) -> Option<f64> {
        metrics.render().lines().find_map(|line| {
            let (series, value) = line.split_once(' ')?;
            (series == name).then(|| value.parse().ok())?
        })
    }

    #[test]
    fn a_job_whose_caller_stops_waiting_keeps_its_slot_until_it_ends() {
        let metrics = Metrics::new();
        let compute = Compute::start(&ComputeConfig::default().threads(2).queue(1)).unwrap();
        compute.report_to(&metrics);
        serving().block_on(async {
            let (caller, release) = held_job(&compute).await;
            // The caller goes (a connection cut, a timeout); its job runs on.
            caller.abort();
            let _ = caller.await;
            let mut next = Box::pin(compute.run(|| 2));
            tokio::select! {
                biased;
                _ = &mut next => panic!("admitted while the abandoned job holds the slot"),
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            release.send(()).unwrap();
            assert_eq!(next.await.unwrap(), 2);
        });
        assert_eq!(
            sample(&metrics, "tandem_compute_jobs_total{outcome=\"done\"}"),
            Some(2.0)
        );
        assert_eq!(sample(&metrics, "tandem_compute_queue_depth"), Some(0.0));
        compute.stop(Duration::from_secs(1));
    }

    #[test]
    fn a_job_counts_as_done_panicked_or_stopped_by_how_far_it_got() {
        let metrics = Metrics::new();
        let slots = Arc::new(Semaphore::new(3));
        for stage in [Stage::Done, Stage::Running, Stage::Queued] {
            let admitted = Admitted {
                _slot: slots.clone().try_acquire_owned().expect("a free slot"),
                metrics: Some(metrics.clone()),
                stage,
            };
            metrics.compute_admitted(Duration::ZERO);
            drop(admitted);
        }
        for outcome in ["done", "panicked", "stopped"] {
            let series = format!("tandem_compute_jobs_total{{outcome=\"{outcome}\"}}");
            assert_eq!(sample(&metrics, &series), Some(1.0), "{series}");
        }
        assert_eq!(sample(&metrics, "tandem_compute_queue_depth"), Some(0.0));
        assert_eq!(slots.available_permits(), 3, "every slot went back");
    }

    #[test]
    fn after_stop_jobs_fail_as_stopped() {
        let compute = Compute::start(&ComputeConfig::default().threads(1)).unwrap();
        compute.stop(Duration::from_secs(1));
        let result = serving().block_on(compute.run(|| 1));
        assert!(matches!(result, Err(ComputeError::Stopped)), "{result:?}");
    }

    #[test]
    fn counts_out_of_range_are_refused_naming_the_field() {
        let refused = |config: ComputeConfig| match config.validate() {
            Err(ServerError::InvalidConfig { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(refused(ComputeConfig::default().queue(0)), "compute_queue");
        assert_eq!(
            refused(ComputeConfig::default().threads(MAX_THREADS + 1)),
            "compute_threads"
        );
    }

    #[test]
    fn via_parses_its_names() {
        for via in ComputeVia::ALL {
            assert_eq!(via.name().parse::<ComputeVia>(), Ok(via));
        }
        assert!("blocking".parse::<ComputeVia>().is_err());
    }
}
