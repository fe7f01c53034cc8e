//! The three runtime layouts, and the runtimes each one starts.
//!
//! - `split`: an acceptor runtime (`--acceptor-threads`) hands connections
//!   through one bounded queue to a multi-thread worker runtime.
//! - `single`: one multi-thread runtime accepts and serves: the baseline.
//! - `sharded`: the acceptor runtime deals connections, through one queue
//!   each, to single-thread runtimes, each connection to the shard serving
//!   the fewest.
//!
//! This module builds and starts them; [`super::Server::run`] stops them, the
//! acceptor first and the serving runtimes last.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::runtime::{Builder, Runtime};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::acceptor::Acceptor;
use super::handoff::{Dispatch, ShardQueue};
use super::worker::{Serving, receive_handoffs};
use super::{ServerConfig, ServerError};
use crate::handler::Handler;
use crate::metrics::{Load, Metrics, tally};

/// How long a stopping runtime waits for its blocking threads.
const RUNTIME_STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// How accepting and serving are spread over runtimes. It parses from and
/// prints as its name: `split`, `single`, `sharded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// Acceptor runtime -> bounded hand-off queue -> multi-thread worker runtime.
    #[default]
    Split,
    /// One multi-thread runtime accepts and serves.
    Single,
    /// Acceptor runtime -> one queue per shard -> single-thread runtimes.
    Sharded,
}

impl Layout {
    /// Every layout, the default first.
    pub const ALL: [Layout; 3] = [Layout::Split, Layout::Single, Layout::Sharded];

    /// Its name, as it parses and prints.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Split => "split",
            Layout::Single => "single",
            Layout::Sharded => "sharded",
        }
    }

    /// What it runs, in a line (for a command line's help).
    pub fn summary(self) -> &'static str {
        match self {
            Layout::Split => {
                "Acceptor runtime -> bounded hand-off queue -> multi-thread worker runtime"
            }
            Layout::Single => "One multi-thread runtime accepts and serves",
            Layout::Sharded => "Acceptor runtime -> one queue per shard -> single-thread runtimes",
        }
    }
}

/// A name that is not a layout's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown layout {0:?}: expected split, single or sharded")]
pub struct UnknownLayout(pub String);

impl std::str::FromStr for Layout {
    type Err = UnknownLayout;

    fn from_str(name: &str) -> Result<Layout, UnknownLayout> {
        Layout::ALL
            .into_iter()
            .find(|layout| layout.name() == name)
            .ok_or_else(|| UnknownLayout(name.to_owned()))
    }
}

/// The runtimes of a started server.
pub(crate) struct Started {
    /// Runs the acceptor tasks; `None` in `single`, where they share the
    /// worker runtime.
    acceptor: Option<Runtime>,
    /// Serves connections in `split` and `single`.
    workers: Option<Runtime>,
    /// One thread per shard, each running its own runtime until `shards_stop`.
    shards: Vec<JoinHandle<()>>,
    shards_stop: CancellationToken,
    /// How long each shard's runtime waits, as it stops, for tasks that
    /// block its thread (nanoseconds): set to what is left of the shutdown
    /// grace before `shards_stop` is cancelled.
    shards_stop_within: Arc<AtomicU64>,
    /// Where work of the serving side is spawned: the worker runtime, or
    /// the first shard.
    serving_handle: tokio::runtime::Handle,
    /// The accept tasks; they end when `accept_stop` is cancelled.
    accept_tasks: JoinSet<()>,
    accept_stop: CancellationToken,
}

/// Builds a runtime whose threads tally bytes into the metrics, watched
/// under `label`.
fn build(
    mut builder: Builder,
    name: &str,
    label: &str,
    metrics: &Metrics,
) -> Result<Runtime, ServerError> {
    builder.thread_name(name).enable_all();
    let totals = metrics.totals().clone();
    builder
        .on_thread_start(move || tally::attach(totals.clone()))
        // An idle thread owes the totals nothing: a scrape of a quiet
        // server sees every byte.
        .on_thread_park(tally::flush)
        .on_thread_stop(tally::detach);
    let runtime = builder.build().map_err(|cause| ServerError::Runtime {
        role: name.to_owned(),
        cause,
    })?;
    metrics.watch_runtime(label, runtime.handle());
    Ok(runtime)
}

fn multi_thread(
    name: &str,
    label: &str,
    threads: usize,
    metrics: &Metrics,
) -> Result<Runtime, ServerError> {
    // tokio hangs rather than fail when it cannot start a worker.
    super::threads::ensure_available(threads, name)?;
    let mut builder = Builder::new_multi_thread();
    builder.worker_threads(threads);
    build(builder, name, label, metrics)
}

/// The runtimes one layout built, and how its acceptors reach them.
struct Built<H> {
    /// `None` in `single`, where accepting shares the worker runtime.
    acceptor: Option<Runtime>,
    /// `None` in `sharded`.
    workers: Option<Runtime>,
    /// The shard threads, and the first shard's runtime (`sharded` only).
    shards: Vec<JoinHandle<()>>,
    first_shard: Option<tokio::runtime::Handle>,
    dispatch: Dispatch<H>,
    /// Accept tasks to run.
    accept_tasks: usize,
    /// Places in the hand-off queues, for the load gauge.
    queue_capacity: usize,
}

/// The runtime of the accept tasks, in `split` and `sharded`.
fn acceptor_runtime(config: &ServerConfig, metrics: &Metrics) -> Result<Runtime, ServerError> {
    multi_thread(
        "tandem-accept",
        "acceptor",
        config.acceptor_threads,
        metrics,
    )
}

/// `single`: one multi-thread runtime; the accept task spawns each
/// connection's task on it directly.
fn single<H: Handler>(
    config: &ServerConfig,
    serving: &Arc<Serving<H>>,
) -> Result<Built<H>, ServerError> {
    let workers = multi_thread("tandem-worker", "worker", config.workers, &serving.metrics)?;
    Ok(Built {
        acceptor: None,
        workers: Some(workers),
        shards: Vec::new(),
        first_shard: None,
        dispatch: Dispatch::Spawn(serving.clone()),
        accept_tasks: 1,
        queue_capacity: 0,
    })
}

/// `split`: the acceptor runtime, and one bounded queue to a multi-thread
/// worker runtime, drained there by one task.
fn split<H: Handler>(
    config: &ServerConfig,
    serving: &Arc<Serving<H>>,
) -> Result<Built<H>, ServerError> {
    let metrics = &serving.metrics;
    let acceptor = acceptor_runtime(config, metrics)?;
    let workers = multi_thread("tandem-worker", "worker", config.workers, metrics)?;
    let (sender, queue) = mpsc::channel(config.handoff_capacity);
    serving
        .tracker
        .spawn_on(receive_handoffs(queue, serving.clone()), workers.handle());
    Ok(Built {
        acceptor: Some(acceptor),
        workers: Some(workers),
        shards: Vec::new(),
        first_shard: None,
        dispatch: Dispatch::Queue {
            sender,
            queued: serving.queued.clone(),
        },
        accept_tasks: config.acceptor_threads,
        queue_capacity: config.handoff_capacity,
    })
}

/// `sharded`: the acceptor runtime, and a queue to each single-thread
/// runtime, each on a thread of its own until `stop`.
fn sharded<H: Handler>(
    config: &ServerConfig,
    serving: &Arc<Serving<H>>,
    stop: &CancellationToken,
    stop_within: &Arc<AtomicU64>,
) -> Result<Built<H>, ServerError> {
    let metrics = &serving.metrics;
    let acceptor = acceptor_runtime(config, metrics)?;
    let mut total_capacity = 0;
    let mut first_shard = None;
    let mut queues = Vec::with_capacity(config.workers);
    let mut threads = Vec::with_capacity(config.workers);
    for index in 0..config.workers {
        let name = format!("tandem-shard-{index}");
        let runtime = build(
            Builder::new_current_thread(),
            &name,
            &format!("shard-{index}"),
            metrics,
        )?;
        if index == 0 {
            first_shard = Some(runtime.handle().clone());
        }
        let capacity = shard_capacity(config.handoff_capacity, config.workers, index);
        total_capacity += capacity;
        let (sender, queue) = mpsc::channel(capacity);
        serving
            .tracker
            .spawn_on(receive_handoffs(queue, serving.clone()), runtime.handle());
        let stop = stop.clone();
        let stop_within = stop_within.clone();
        // A current-thread runtime starts no thread of its own, so the
        // thread that lends itself to it attaches its tally.
        let totals = metrics.totals().clone();
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                tally::attach(totals);
                // A current-thread runtime runs its tasks only inside
                // block_on; this thread lends itself until stopped.
                runtime.block_on(stop.cancelled_owned());
                runtime.shutdown_timeout(Duration::from_nanos(stop_within.load(Ordering::Acquire)));
                tally::detach();
            })
            .map_err(|cause| ServerError::Runtime { role: name, cause })?;
        threads.push(thread);
        queues.push(ShardQueue {
            sender,
            load: Default::default(),
        });
    }
    Ok(Built {
        acceptor: Some(acceptor),
        workers: None,
        shards: threads,
        first_shard,
        dispatch: Dispatch::Shards {
            shards: queues,
            queued: serving.queued.clone(),
        },
        accept_tasks: config.acceptor_threads,
        queue_capacity: total_capacity,
    })
}

/// Builds the runtimes of `config.layout` and starts accepting.
pub(crate) fn start<H: Handler>(
    config: &ServerConfig,
    listener: TcpListener,
    serving: Arc<Serving<H>>,
    limit: Arc<Semaphore>,
) -> Result<Started, ServerError> {
    let accept_stop = CancellationToken::new();
    let shards_stop = CancellationToken::new();
    let shards_stop_within = Arc::new(AtomicU64::new(nanos(RUNTIME_STOP_TIMEOUT)));
    // Shard threads started before a failure further down must not be left
    // waiting forever.
    let stop_shards_on_error = shards_stop.clone().drop_guard();
    let built = match config.layout {
        Layout::Single => single(config, &serving)?,
        Layout::Split => split(config, &serving)?,
        Layout::Sharded => sharded(config, &serving, &shards_stop, &shards_stop_within)?,
    };
    serving.metrics.watch_load(Load {
        active: serving.active.clone(),
        queued: serving.queued.clone(),
        capacity: built.queue_capacity,
    });

    let accept_runtime = built
        .acceptor
        .as_ref()
        .or(built.workers.as_ref())
        .ok_or_else(|| ServerError::Runtime {
            role: "tandem-accept".to_owned(),
            cause: std::io::Error::other("layout has no runtime to accept on"),
        })?;
    let listener = {
        // AsyncFd registers with the reactor of the runtime entered here.
        let _entered = accept_runtime.enter();
        // SAFETY: the std listener owns its descriptor, and the AsyncFd owns
        // the listener until it is dropped, so the descriptor stays open and
        // the same for the AsyncFd's whole life.
        unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) }.map_err(|err| {
            ServerError::Runtime {
                role: "tandem-accept".to_owned(),
                cause: err.into(),
            }
        })?
    };
    let listener = Arc::new(listener);
    // The sweep counts the backlog to shed when every slot is taken.
    serving.sweep.pressure().watch_backlog(&listener);
    let dispatch = Arc::new(built.dispatch);
    // One count per server, shared by every accept task. Behind a PROXY
    // protocol load balancer every connection comes from the balancer: the
    // serving side counts clients once it has read their headers.
    let per_ip = serving
        .per_ip
        .clone()
        .filter(|_| serving.proxy_protocol.is_none());
    let mut accept_tasks = JoinSet::new();
    for _ in 0..built.accept_tasks {
        let acceptor = Acceptor {
            listener: listener.clone(),
            limit: limit.clone(),
            active: serving.active.clone(),
            dispatch: dispatch.clone(),
            stop: accept_stop.clone(),
            metrics: serving.metrics.clone(),
            per_ip: per_ip.clone(),
            pressure: serving.sweep.pressure().clone(),
        };
        accept_tasks.spawn_on(acceptor.run(), accept_runtime.handle());
    }

    stop_shards_on_error.disarm();
    let serving_handle = built
        .workers
        .as_ref()
        .map(|workers| workers.handle().clone())
        .or(built.first_shard)
        .ok_or_else(|| ServerError::Runtime {
            role: "tandem-worker".to_owned(),
            cause: std::io::Error::other("layout has no serving runtime"),
        })?;
    Ok(Started {
        acceptor: built.acceptor,
        workers: built.workers,
        serving_handle,
        shards: built.shards,
        shards_stop,
        shards_stop_within,
        accept_tasks,
        accept_stop,
    })
}

/// Shard `index`'s share of the hand-off capacity: the shares add up to
/// exactly `total`, unless there are more shards than places, when each
/// shard still gets the one place a queue needs.
fn shard_capacity(total: usize, shards: usize, index: usize) -> usize {
    let share = total / shards + usize::from(index < total % shards);
    share.max(1)
}

/// `duration` in nanoseconds, saturated: a shard's stop wait.
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl Drop for Started {
    // A server dropped without a shutdown still stops its threads.
    fn drop(&mut self) {
        self.accept_stop.cancel();
        self.shards_stop.cancel();
    }
}

impl Started {
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
    /// connects are refused from here on), and the acceptor runtime is shut
    /// down. Connections already accepted stay with the serving runtimes.
    pub(crate) async fn stop_accepting(&mut self) {
        self.accept_stop.cancel();
        self.acceptors_ended().await;
    }

    /// Where work of the serving side is spawned.
    pub(crate) fn serving_handle(&self) -> &tokio::runtime::Handle {
        &self.serving_handle
    }

    /// Shuts the acceptor runtime down. Must not be called from async code.
    pub(crate) fn shut_down_acceptor(&mut self) {
        if let Some(acceptor) = self.acceptor.take() {
            acceptor.shutdown_timeout(RUNTIME_STOP_TIMEOUT);
        }
    }

    /// Shuts the serving runtimes down, dropping any task still running.
    /// Must not be called from async code.
    /// Waits up to `timeout` for tasks that block a thread.
    pub(crate) fn shut_down_serving(mut self, timeout: Duration) {
        if let Some(workers) = self.workers.take() {
            workers.shutdown_timeout(timeout);
        }
        self.shards_stop_within
            .store(nanos(timeout), Ordering::Release);
        self.shards_stop.cancel();
        for shard in self.shards.drain(..) {
            if shard.join().is_err() {
                warn!("a shard thread panicked");
            }
        }
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::{Layout, UnknownLayout, shard_capacity};

    #[test]
    fn a_layout_parses_from_the_name_it_prints() {
        for layout in Layout::ALL {
            assert_eq!(layout.to_string().parse::<Layout>(), Ok(layout));
        }
        assert_eq!(Layout::ALL[0], Layout::default());
        assert_eq!(
            "Split".parse::<Layout>(),
            Err(UnknownLayout("Split".to_owned()))
        );
    }

    fn shares(total: usize, shards: usize) -> Vec<usize> {
        (0..shards)
            .map(|index| shard_capacity(total, shards, index))
            .collect()
    }

    #[test]
    fn shard_queues_share_out_exactly_the_configured_capacity() {
        assert_eq!(shares(10, 3), [4, 3, 3]);
        assert_eq!(shares(4000, 2), [2000, 2000]);
        assert_eq!(shares(7, 7), [1; 7]);
    }

    #[test]
    fn every_shard_queue_has_room_for_one_even_when_places_are_fewer() {
        assert_eq!(shares(2, 3), [1, 1, 1]);
    }
}
