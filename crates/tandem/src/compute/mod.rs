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
//! Admitted jobs are served fairly, not first come, first served: a job
//! belongs to a key, the caller it works for (a connection; by default the
//! job is a caller of its own), and the threads take turns between keys by
//! the compute time each has used (the queue's `Turns` says exactly how).
//! A key that has used a lot waits behind one that has used little, so a
//! light connection's job does not queue behind a heavy one's backlog. A job given
//! in slices ([`Compute::run_sliced_for`]) goes back in line after each
//! slice: a long job holds a thread for one slice at a time, and a light job
//! waits for a slice, not for the whole of it.
//!
//! A job whose caller stops waiting (its connection has gone) is taken out
//! of the queue at once, unrun, its slot freed, and counted as `cancelled`;
//! a job in slices is dropped at the end of the slice it is in. A closure
//! already running runs to its end, and its result is dropped unread.
//!
//! With 0 threads (the default), [`Compute::run`] runs the work inline, on
//! the calling thread, with the same result and the same panic handling.
//!
//! Here, [`Compute`], the handle, and its threads; beside it, `config`
//! ([`ComputeConfig`], [`ComputeVia`]), `error`, `job` (an admitted job,
//! its slices and its slot) and `turns` (the fair queue).

mod config;
mod error;
mod job;
mod turns;

use std::fmt;
use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, Runtime};
use tokio::sync::{Semaphore, oneshot};

use self::error::panicked;
use self::job::{Admitted, Job, Slices, once};
use self::turns::{Place, Turns, lock, take_turn};
use crate::metrics::{ComputeOutcome, Metrics};

pub use self::config::{ComputeConfig, ComputeVia, UnknownComputeVia};
pub(crate) use self::error::panic_message;
pub use self::error::{ComputeError, ComputeStartError};

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
    /// The admitted jobs waiting for a thread, shared with the threads that
    /// take turns at them.
    turns: Arc<Mutex<Turns>>,
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
    /// with [`ComputeStartError::Runtime`] when the OS refuses them, or
    /// [`ComputeStartError::InvalidConfig`] for a count out of range.
    pub fn start(config: &ComputeConfig) -> Result<Compute, ComputeStartError> {
        config.validate()?;
        if config.threads == 0 {
            return Ok(Compute::inline());
        }
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        // At the serving threads' priority: a lower one (a nice value)
        // shaved a third off the light clients' p99 beside heavy ones, but
        // left the work a tenth of a core whenever anything else on the
        // host wanted the CPU.
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
        crate::server::threads::ensure_available(threads, "tandem-compute")
            .map_err(ComputeStartError::Runtime)?;
        builder.worker_threads(workers);
        if config.via == ComputeVia::SpawnBlocking {
            builder.max_blocking_threads(config.threads);
        }
        let runtime = builder.build().map_err(ComputeStartError::Runtime)?;
        Ok(Compute(Some(Arc::new(Pool {
            via: config.via,
            threads: config.threads,
            queue: config.queue,
            handle: runtime.handle().clone(),
            runtime: Mutex::new(Some(runtime)),
            slots: Arc::new(Semaphore::new(config.queue)),
            turns: Arc::new(Mutex::new(Turns::new(config.threads))),
            metrics: OnceLock::new(),
        }))))
    }

    /// True when work runs inline.
    pub fn is_inline(&self) -> bool {
        self.0.is_none()
    }

    /// Runs `work` on the compute threads and returns its result, waiting
    /// first for a slot if [`ComputeConfig::queue`] jobs are already in.
    /// The job is a caller of its own: it takes its turn as a key that has
    /// used nothing yet. A panic in `work` is [`ComputeError::Panicked`].
    /// Inline, it runs `work` at the first poll.
    pub fn run<T, F>(
        &self,
        work: F,
    ) -> impl Future<Output = Result<T, ComputeError>> + Send + 'static
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.submit(None, once(work))
    }

    /// [`run`](Self::run), for the caller named by `key` (a connection's
    /// id, say): the threads take turns between keys by the compute time
    /// each has used, and the jobs of one key run one at a time, in the
    /// order given.
    pub fn run_for<T, F>(
        &self,
        key: u64,
        work: F,
    ) -> impl Future<Output = Result<T, ComputeError>> + Send + 'static
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.submit(Some(key), once(work))
    }

    /// [`run_for`](Self::run_for), with the work in slices: each call of
    /// `work` does one, and says `ControlFlow::Continue(())` while there
    /// is more to do, `ControlFlow::Break(result)` at the end. Between
    /// slices the job goes back in line, so it holds a thread for one slice
    /// at a time while other keys' jobs take their turns: keep a slice
    /// short (the echo's are at most 500 µs). If the caller stops waiting,
    /// the job ends with the slice it is in.
    ///
    /// ```
    /// use std::ops::ControlFlow;
    /// use tandem::{Compute, ComputeConfig};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let compute = Compute::start(&ComputeConfig::default().threads(1))?;
    /// let serving = tokio::runtime::Runtime::new()?;
    /// // 1 + 2 + ... + 1000, a hundred numbers a slice.
    /// let (mut next, mut sum) = (1u64, 0u64);
    /// let connection = 7;
    /// let summed = compute.run_sliced_for(connection, move || {
    ///     let end = (next + 100).min(1001);
    ///     sum += (next..end).sum::<u64>();
    ///     next = end;
    ///     if next > 1000 {
    ///         ControlFlow::Break(sum)
    ///     } else {
    ///         ControlFlow::Continue(())
    ///     }
    /// });
    /// assert_eq!(serving.block_on(summed)?, 500_500);
    /// # Ok(())
    /// # }
    /// ```
    pub fn run_sliced_for<T, F>(
        &self,
        key: u64,
        work: F,
    ) -> impl Future<Output = Result<T, ComputeError>> + Send + 'static
    where
        F: FnMut() -> ControlFlow<T> + Send + 'static,
        T: Send + 'static,
    {
        self.submit(Some(key), work)
    }

    /// Every way of running work ends here: `work` in slices, for `key`
    /// (none: a key of its own).
    fn submit<T, F>(
        &self,
        key: Option<u64>,
        mut work: F,
    ) -> impl Future<Output = Result<T, ComputeError>> + Send + 'static
    where
        F: FnMut() -> ControlFlow<T> + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.0.clone();
        async move {
            let Some(pool) = pool else {
                return loop {
                    match catch_unwind(AssertUnwindSafe(&mut work)) {
                        Ok(ControlFlow::Continue(())) => {}
                        Ok(ControlFlow::Break(value)) => break Ok(value),
                        Err(payload) => break Err(panicked(payload)),
                    }
                };
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
            // waiting (a connection cut, a timeout) leaves a job that has
            // started to end with its slot, so the queue's bound holds for
            // running work.
            let (reply, result) = oneshot::channel();
            let job = Box::new(Job {
                work,
                reply: Some(reply),
                admitted: Some(Admitted {
                    _slot: slot,
                    metrics,
                    outcome: ComputeOutcome::Stopped,
                }),
            });
            let place = pool.push(key, job)?;
            let mut waiting = Waiting {
                turns: &pool.turns,
                place: Some(place),
                result,
            };
            let result = (&mut waiting.result).await;
            // Over: there is nothing left in the queue to take out.
            waiting.place = None;
            // A job dropped unrun, with the runtime.
            result.unwrap_or(Err(ComputeError::Stopped))
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

    /// Stops the threads, waiting up to `timeout` for running work;
    /// waiting and later jobs fail with [`ComputeError::Stopped`]. Call it
    /// outside any runtime, as the server does once its serving runtimes
    /// are gone, with what is left of its shutdown grace.
    pub(crate) fn stop(&self, timeout: Duration) {
        if let Some(pool) = &self.0 {
            pool.slots.close();
            // Dropped outside the lock: each counts itself and frees its
            // slot, and its caller gets `Stopped`.
            let waiting = lock(&pool.turns).stop();
            drop(waiting);
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

impl Pool {
    /// Queues an admitted job for `key`, and starts a thread taking turns
    /// if one is free. Fails, dropping the job, once the runtime has
    /// stopped.
    fn push(&self, key: Option<u64>, job: Box<dyn Slices>) -> Result<Place, ComputeError> {
        let pushed = lock(&self.turns).push(key, job);
        match pushed {
            Ok((place, start)) => {
                if start {
                    self.start_turns();
                }
                Ok(place)
            }
            Err(job) => {
                drop(job);
                Err(ComputeError::Stopped)
            }
        }
    }

    /// Starts a thread taking turns until no job waits. Its handle is let
    /// go: each job's result goes back on a channel of its own.
    fn start_turns(&self) {
        let turns = self.turns.clone();
        match self.via {
            ComputeVia::Runtime => drop(self.handle.spawn(async move {
                while take_turn(&turns) {
                    // Back to the scheduler between slices, so that the
                    // runtime's busy time, in the metrics, stays current.
                    tokio::task::yield_now().await;
                }
            })),
            ComputeVia::SpawnBlocking => {
                drop(
                    self.handle
                        .spawn_blocking(move || while take_turn(&turns) {}),
                );
            }
        }
    }
}

/// A caller's wait for its job's result. Dropped before the result came
/// (the caller has gone), it closes the channel and takes the job out of
/// the queue: a job that has not run never will, and one running a slice
/// ends with it.
struct Waiting<'t, T> {
    turns: &'t Mutex<Turns>,
    /// Where the job is, until it is over.
    place: Option<Place>,
    result: oneshot::Receiver<Result<T, ComputeError>>,
}

impl<T> Drop for Waiting<'_, T> {
    fn drop(&mut self) {
        let Some(place) = self.place.take() else {
            return;
        };
        // Closed first: a thread that ends a slice of the job from now on
        // finds it abandoned, and does not put it back in line.
        self.result.close();
        let cancelled = lock(self.turns).cancel(place);
        // Outside the lock: it counts itself, and frees its slot.
        drop(cancelled);
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

#[cfg(test)]
mod tests {
    #[cfg(feature = "admin")] // used by the tests that count
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::turns::Key;
    use super::*;
    use crate::range::OutOfRange;
    use crate::server::MAX_THREADS;

    fn serving() -> Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or_default().to_owned()
    }

    /// Starts a job on `compute`, for `key` (none: its own), that holds its
    /// slot and its thread until the returned sender is used (or dropped),
    /// and returns once it runs.
    async fn held_job(
        compute: &Compute,
        key: Option<u64>,
    ) -> (
        tokio::task::JoinHandle<Result<(), ComputeError>>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (job, release, started) = holding(compute, key);
        runs(started).await;
        (job, release)
    }

    /// A job as `held_job`'s, not yet running: and what says it runs.
    fn holding(
        compute: &Compute,
        key: Option<u64>,
    ) -> (
        tokio::task::JoinHandle<Result<(), ComputeError>>,
        std::sync::mpsc::Sender<()>,
        std::sync::mpsc::Receiver<()>,
    ) {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = std::sync::mpsc::channel::<()>();
        let work = move || {
            let _ = started_tx.send(());
            let _ = held.recv();
        };
        let job = match key {
            Some(key) => tokio::spawn(compute.run_for(key, work)),
            None => tokio::spawn(compute.run(work)),
        };
        (job, release, started)
    }

    /// Waits until a job of `holding` runs.
    async fn runs(started: std::sync::mpsc::Receiver<()>) {
        tokio::task::spawn_blocking(move || started.recv())
            .await
            .expect("the wait for the job")
            .expect("the job started");
    }

    /// Jobs waiting in `compute`'s queue for a turn.
    fn waiting(compute: &Compute) -> usize {
        compute.0.as_ref().map_or(0, |pool| {
            lock(&pool.turns)
                .keys
                .values()
                .map(|key| key.waiting.len())
                .sum()
        })
    }

    /// Waits until `jobs` jobs wait in `compute`'s queue: the callers
    /// spawned before have reached it. A state waited for, not a time.
    async fn until_waiting(compute: &Compute, jobs: usize) {
        let wait = async {
            while waiting(compute) != jobs {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .unwrap_or_else(|_| panic!("{} jobs waiting, not {jobs}", waiting(compute)));
    }

    /// Work that writes `name` in `log` when it runs.
    fn logs(log: &Arc<Mutex<Vec<&'static str>>>, name: &'static str) -> impl FnOnce() + use<> {
        let log = log.clone();
        move || log.lock().unwrap().push(name)
    }

    #[test]
    fn work_runs_on_tandem_compute_threads_in_both_kinds() {
        for &via in ComputeVia::ALL {
            let compute = Compute::start(&ComputeConfig::default().threads(2).via(via)).unwrap();
            let name = serving().block_on(compute.run(thread_name)).unwrap();
            assert_eq!(name, "tandem-compute", "{via}");
            let sliced = serving()
                .block_on(compute.run_sliced_for(1, || ControlFlow::Break(thread_name())))
                .unwrap();
            assert_eq!(sliced, "tandem-compute", "{via}");
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
        let mut slices = 0;
        let sliced = compute.run_sliced_for(1, move || {
            slices += 1;
            if slices == 3 {
                ControlFlow::Break(slices)
            } else {
                ControlFlow::Continue(())
            }
        });
        assert_eq!(serving().block_on(sliced).unwrap(), 3);
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
            let (first, release) = held_job(&compute, None).await;
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

    #[test]
    fn a_key_that_has_used_less_goes_before_one_that_has_used_more() {
        for &via in ComputeVia::ALL {
            let compute = Compute::start(&ComputeConfig::default().threads(1).via(via)).unwrap();
            let log = Arc::new(Mutex::new(Vec::new()));
            serving().block_on(async {
                // Key 1 has the only thread, its next job waits, and so
                // does a held job of key 3.
                let (first, release_first) = held_job(&compute, Some(1)).await;
                let again = tokio::spawn(compute.run_for(1, logs(&log, "1 again")));
                until_waiting(&compute, 1).await;
                let (third, release_third, started) = holding(&compute, Some(3));
                until_waiting(&compute, 2).await;
                // Key 1's turn ends, having used time, and key 3's starts:
                // key 1's next job is in line while key 2's first comes.
                release_first.send(()).unwrap();
                runs(started).await;
                let other = tokio::spawn(compute.run_for(2, logs(&log, "2")));
                until_waiting(&compute, 2).await;
                release_third.send(()).unwrap();
                for job in [first, again, third, other] {
                    job.await.unwrap().unwrap();
                }
            });
            // Key 2 starts level with the virtual clock, which key 1's
            // used time put its next turn beyond: first come, first served
            // would run "1 again" first, in line before key 2 came.
            assert_eq!(*log.lock().unwrap(), ["2", "1 again"], "{via}");
            compute.stop(Duration::from_secs(1));
        }
    }

    #[test]
    fn a_job_in_slices_lets_each_other_key_take_a_turn_between_its_slices() {
        for &via in ComputeVia::ALL {
            let compute = Compute::start(&ComputeConfig::default().threads(1).via(via)).unwrap();
            let log = Arc::new(Mutex::new(Vec::new()));
            serving().block_on(async {
                // Key 1's long job: four slices, the first held until the
                // other keys' jobs wait.
                let (release, held) = std::sync::mpsc::channel::<()>();
                let (started_tx, started) = std::sync::mpsc::channel::<()>();
                let mut slices = 0;
                let heavy_log = log.clone();
                let heavy = tokio::spawn(compute.run_sliced_for(1, move || {
                    if slices == 0 {
                        let _ = started_tx.send(());
                        let _ = held.recv();
                    }
                    slices += 1;
                    heavy_log.lock().unwrap().push("heavy");
                    if slices == 4 {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                }));
                tokio::task::spawn_blocking(move || started.recv())
                    .await
                    .unwrap()
                    .unwrap();
                let light = tokio::spawn(compute.run_for(2, logs(&log, "light")));
                until_waiting(&compute, 1).await;
                let other = tokio::spawn(compute.run_for(3, logs(&log, "other")));
                until_waiting(&compute, 2).await;
                release.send(()).unwrap();
                for job in [heavy, light, other] {
                    job.await.unwrap().unwrap();
                }
            });
            // One slice, then each light key once, then the rest: a whole
            // job first would put both last.
            assert_eq!(
                *log.lock().unwrap(),
                ["heavy", "light", "other", "heavy", "heavy", "heavy"],
                "{via}"
            );
            compute.stop(Duration::from_secs(1));
        }
    }

    #[cfg(feature = "admin")] // read through the exposition
    /// The value of series `name` in `metrics`' exposition.
    fn sample(metrics: &Metrics, name: &str) -> Option<f64> {
        metrics.render().lines().find_map(|line| {
            let (series, value) = line.split_once(' ')?;
            (series == name).then(|| value.parse().ok())?
        })
    }

    #[cfg(feature = "admin")] // read through the exposition
    fn jobs(metrics: &Metrics, outcome: &str) -> Option<f64> {
        sample(
            metrics,
            &format!("tandem_compute_jobs_total{{outcome=\"{outcome}\"}}"),
        )
    }

    #[cfg(feature = "admin")] // read through the exposition
    #[test]
    fn a_queued_job_whose_caller_goes_never_runs_and_frees_its_slot_at_once() {
        let metrics = Metrics::new();
        let compute = Compute::start(&ComputeConfig::default().threads(1).queue(2)).unwrap();
        compute.report_to(&metrics);
        let ran = Arc::new(AtomicBool::new(false));
        serving().block_on(async {
            let (first, release) = held_job(&compute, None).await;
            let runs = ran.clone();
            let queued = tokio::spawn(compute.run(move || runs.store(true, Ordering::SeqCst)));
            until_waiting(&compute, 1).await;
            // Its connection goes.
            queued.abort();
            let _ = queued.await;
            assert_eq!(waiting(&compute), 0, "still in the queue");
            let pool = compute.0.as_ref().unwrap();
            assert_eq!(pool.slots.available_permits(), 1, "its slot is not back");
            assert_eq!(jobs(&metrics, "cancelled"), Some(1.0));
            release.send(()).unwrap();
            first.await.unwrap().unwrap();
        });
        compute.stop(Duration::from_secs(1));
        assert!(!ran.load(Ordering::SeqCst), "the cancelled job ran");
        assert_eq!(jobs(&metrics, "done"), Some(1.0));
        assert_eq!(sample(&metrics, "tandem_compute_queue_depth"), Some(0.0));
    }

    #[cfg(feature = "admin")] // read through the exposition
    #[test]
    fn a_job_in_slices_whose_caller_goes_ends_with_the_slice_it_is_in() {
        let metrics = Metrics::new();
        let compute = Compute::start(&ComputeConfig::default().threads(1)).unwrap();
        compute.report_to(&metrics);
        let slices = Arc::new(AtomicUsize::new(0));
        serving().block_on(async {
            let (release, held) = std::sync::mpsc::channel::<()>();
            let (started_tx, started) = std::sync::mpsc::channel::<()>();
            let counted = slices.clone();
            let job = tokio::spawn(compute.run_sliced_for(1, move || {
                if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                    let _ = started_tx.send(());
                    let _ = held.recv();
                }
                ControlFlow::<()>::Continue(())
            }));
            tokio::task::spawn_blocking(move || started.recv())
                .await
                .unwrap()
                .unwrap();
            // Its connection goes during its first slice, which then ends.
            job.abort();
            let _ = job.await;
            release.send(()).unwrap();
            // Its slot back: the job is gone. A state waited for.
            let pool = compute.0.as_ref().unwrap();
            let gone = async {
                while pool.slots.available_permits() < pool.queue {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(30), gone)
                .await
                .expect("the abandoned job still holds its slot");
        });
        compute.stop(Duration::from_secs(1));
        assert_eq!(slices.load(Ordering::SeqCst), 1, "slices run");
        assert_eq!(jobs(&metrics, "cancelled"), Some(1.0));
    }

    #[cfg(feature = "admin")] // read through the exposition
    #[test]
    fn a_job_whose_caller_stops_waiting_keeps_its_slot_until_it_ends() {
        let metrics = Metrics::new();
        let compute = Compute::start(&ComputeConfig::default().threads(2).queue(1)).unwrap();
        compute.report_to(&metrics);
        serving().block_on(async {
            let (caller, release) = held_job(&compute, None).await;
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
        assert_eq!(jobs(&metrics, "done"), Some(2.0));
        assert_eq!(sample(&metrics, "tandem_compute_queue_depth"), Some(0.0));
        compute.stop(Duration::from_secs(1));
    }

    #[cfg(feature = "admin")] // read through the exposition
    #[test]
    fn a_job_counts_as_done_panicked_cancelled_or_stopped_by_how_far_it_got() {
        let metrics = Metrics::new();
        let slots = Arc::new(Semaphore::new(4));
        let job = |work: fn() -> u8| {
            metrics.compute_admitted(Duration::ZERO);
            let (reply, _) = oneshot::channel();
            Job {
                work: once(work),
                reply: Some(reply),
                admitted: Some(Admitted {
                    _slot: slots.clone().try_acquire_owned().expect("a free slot"),
                    metrics: Some(metrics.clone()),
                    outcome: ComputeOutcome::Stopped,
                }),
            }
        };
        let mut done = job(|| 1);
        assert!(done.run_slice());
        let mut failed = job(|| panic!("bad input"));
        assert!(failed.run_slice());
        let mut cancelled = job(|| 1);
        cancelled.cancel();
        let stopped = job(|| 1);
        drop((done, failed, cancelled, stopped));
        for outcome in ["done", "panicked", "cancelled", "stopped"] {
            assert_eq!(jobs(&metrics, outcome), Some(1.0), "{outcome}");
        }
        assert_eq!(sample(&metrics, "tandem_compute_queue_depth"), Some(0.0));
        assert_eq!(slots.available_permits(), 4, "every slot went back");
    }

    #[cfg(feature = "admin")] // read through the exposition
    #[test]
    fn stopping_fails_the_waiting_jobs_as_stopped() {
        let metrics = Metrics::new();
        let compute = Compute::start(&ComputeConfig::default().threads(1)).unwrap();
        compute.report_to(&metrics);
        let serving = serving();
        let (first, release, queued) = serving.block_on(async {
            let (first, release) = held_job(&compute, None).await;
            let queued = tokio::spawn(compute.run(|| 2));
            until_waiting(&compute, 1).await;
            (first, release, queued)
        });
        // Waits its second for the held job, then lets its thread go.
        compute.stop(Duration::from_secs(1));
        let result = serving.block_on(queued).unwrap();
        assert!(matches!(result, Err(ComputeError::Stopped)), "{result:?}");
        assert_eq!(jobs(&metrics, "stopped"), Some(1.0));
        release.send(()).unwrap();
        drop(first);
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
            Err(OutOfRange { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(refused(ComputeConfig::default().queue(0)), "compute_queue");
        assert_eq!(
            refused(ComputeConfig::default().threads(MAX_THREADS + 1)),
            "compute_threads"
        );
    }

    /// A job of the queue's own tests, which run no work: each test gives
    /// the turns itself, saying how long each took and whether it was the
    /// job's last.
    struct Slice;

    impl Slices for Slice {
        fn run_slice(&mut self) -> bool {
            true
        }

        fn is_abandoned(&self) -> bool {
            false
        }

        fn cancel(&mut self) {}
    }

    /// Queues a job for `key`.
    fn queue(turns: &mut Turns, key: u64) {
        assert!(turns.push(Some(key), Box::new(Slice)).is_ok());
    }

    /// Gives the next turn, which must be `key`'s, as taking `used`; the
    /// job ends with it if `over`.
    fn take(turns: &mut Turns, key: u64, used: Duration, over: bool) {
        let turn = turns.next().expect("a job waits");
        assert_eq!(turn.place.0, Key::Caller(key), "whose turn");
        let _ = turns.end(turn, used, over);
    }

    /// The key of the heavy job in the starvation tests.
    const HEAVY: u64 = 0;
    /// The heavy job's slices and the light jobs, on the clock.
    const SLICE: Duration = Duration::from_micros(500);
    const LIGHT: Duration = Duration::from_micros(20);
    /// The light jobs in line at any time, besides the heavy one.
    const LIGHTS: u64 = 3;
    /// The most light turns between two of the heavy job's slices. With
    /// fresh keys, each light turn is tagged from the clock and moves it by
    /// its share: 20 µs among itself and the 3 keys in line (two lights,
    /// the heavy one), 5 µs. The heavy key is tagged at most 500 µs ahead
    /// of the clock as its slice ends, so after 100 light turns the clock
    /// is there, and every light job queued since goes after it: 100, and
    /// the 3 light jobs in line before. With recurring keys, each key's
    /// tags go up by its 20 µs each turn: at most 500 / 20 + 1 = 26 turns
    /// each of the 3 keys, 78. Counted in turns given, not in time: the
    /// times are the test's own.
    const MOST_LIGHT_TURNS: usize = 103;

    /// One thread's turns between a heavy job of endless slices and a
    /// stream of light jobs that keeps the line full: each light job is
    /// followed by one of a fresh key, or by the next of the same key (a
    /// connection's next chunk). Checks the heavy job gets a slice at least
    /// every `MOST_LIGHT_TURNS` light ones, and that the queue's state
    /// stays bounded; returns the most light turns seen between slices.
    fn heavy_among_lights(fresh: bool) -> usize {
        let mut turns = Turns::new(1);
        queue(&mut turns, HEAVY);
        for key in 1..=LIGHTS {
            queue(&mut turns, key);
        }
        let mut next_key = LIGHTS + 1;
        let (mut since, mut most, mut slices) = (0, 0, 0);
        for _ in 0..5_000 {
            let turn = turns.next().expect("the line is never empty");
            let Key::Caller(key) = turn.place.0 else {
                panic!("a job of its own");
            };
            if key == HEAVY {
                let _ = turns.end(turn, SLICE, false);
                most = most.max(since);
                since = 0;
                slices += 1;
                continue;
            }
            let _ = turns.end(turn, LIGHT, true);
            since += 1;
            assert!(
                since <= MOST_LIGHT_TURNS,
                "{since} light turns since the heavy job's slice number \
                 {slices} (fresh keys: {fresh})"
            );
            if fresh {
                queue(&mut turns, next_key);
                next_key += 1;
            } else {
                queue(&mut turns, key);
            }
            // The keys in line, and those remembered: a fresh key only
            // until the clock passes its end, 20 µs on, at least 5 µs a
            // light turn: 4 keys in line, 4 remembered, at most.
            assert!(turns.keys.len() <= 8, "{} keys kept", turns.keys.len());
        }
        assert!(slices >= 5_000 / (MOST_LIGHT_TURNS + 1));
        most
    }

    #[test]
    fn a_heavy_job_gets_its_slices_among_a_stream_of_light_jobs_of_fresh_keys() {
        let most = heavy_among_lights(true);
        // Not first come, first served either: the light keys take
        // their turns between the heavy job's slices.
        assert!(most >= usize::try_from(LIGHTS).unwrap(), "{most}");
    }

    #[test]
    fn a_heavy_job_gets_its_slices_among_a_stream_of_light_jobs_of_recurring_keys() {
        let most = heavy_among_lights(false);
        assert!(most >= usize::try_from(LIGHTS).unwrap(), "{most}");
    }

    #[test]
    fn a_key_back_from_a_long_job_waits_behind_one_that_used_little_until_the_clock_passes_it() {
        let (long, little, other) = (1, 2, 3);
        let mut turns = Turns::new(1);
        queue(&mut turns, long);
        queue(&mut turns, little);
        // A long job of three slices; the other key's one light job
        // takes its turn after the first.
        take(&mut turns, long, SLICE, false);
        take(&mut turns, little, LIGHT, true);
        take(&mut turns, long, SLICE, false);
        take(&mut turns, long, SLICE, true);
        // Nothing of either waits, but the long job's end, a slice ahead
        // of the clock, is remembered; the light key's is behind it.
        assert_eq!(turns.remembered.len(), 1);
        assert!(turns.keys.contains_key(&Key::Caller(long)));
        // Both come back, the long key first: it goes second.
        queue(&mut turns, long);
        queue(&mut turns, little);
        take(&mut turns, little, LIGHT, true);
        take(&mut turns, long, SLICE, true);
        // A third key's long turn takes the clock past the long key's
        // end: it is forgotten, and nothing is kept.
        assert_eq!(turns.remembered.len(), 1);
        queue(&mut turns, other);
        take(&mut turns, other, 3 * SLICE, true);
        assert!(turns.keys.is_empty(), "{} keys kept", turns.keys.len());
        assert!(turns.remembered.is_empty());
    }

    #[test]
    fn via_parses_its_names() {
        for &via in ComputeVia::ALL {
            assert_eq!(via.as_str().parse::<ComputeVia>(), Ok(via));
        }
        assert!("blocking".parse::<ComputeVia>().is_err());
    }
}
