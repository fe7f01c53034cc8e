//! The three runtime layouts: the runtimes each one builds, and the accept
//! tasks it starts on them.
//!
//! - `split`: an acceptor runtime (`--acceptor-threads`) hands connections
//!   through one bounded queue to a multi-thread worker runtime.
//! - `single`: one multi-thread runtime accepts and serves: the baseline.
//! - `sharded`: the acceptor runtime deals connections, through one queue
//!   each, to single-thread runtimes, each connection to the shard serving
//!   the fewest.
//!
//! This module builds and starts them ([`start`]); [`Started`] stops them,
//! in the shutdown's order (`super::shutdown`).

use std::net::TcpListener;
use std::sync::Arc;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::acceptor::Acceptor;
use super::config::{Layout, ServerConfig};
use super::error::ServerError;
use super::handoff::{Dispatch, ShardQueue};
use super::runtimes::{ServingRuntime, Shards, Started};
use super::worker::{Serving, receive_handoffs};
use crate::handler::Handler;
use crate::metrics::{Load, Metrics, tally};

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
    super::threads::ensure_available(threads, name).map_err(|cause| ServerError::Runtime {
        role: name.to_owned(),
        cause,
    })?;
    let mut builder = Builder::new_multi_thread();
    builder.worker_threads(threads);
    build(builder, name, label, metrics)
}

/// The runtimes one layout built, and how its acceptors reach them.
struct Built<H> {
    /// `None` in `single`, where accepting shares the serving runtime.
    acceptor: Option<Runtime>,
    serving: ServingRuntime,
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
        serving: ServingRuntime::Pool(workers),
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
        serving: ServingRuntime::Pool(workers),
        dispatch: Dispatch::Queue {
            sender,
            queued: serving.queued.clone(),
        },
        accept_tasks: config.acceptor_threads,
        queue_capacity: config.handoff_capacity,
    })
}

/// `sharded`: the acceptor runtime, and a queue to each single-thread
/// runtime, each on a thread of its own.
fn sharded<H: Handler>(
    config: &ServerConfig,
    serving: &Arc<Serving<H>>,
) -> Result<Built<H>, ServerError> {
    let metrics = &serving.metrics;
    let acceptor = acceptor_runtime(config, metrics)?;
    let shard_runtime = |index: usize| {
        build(
            Builder::new_current_thread(),
            &shard_name(index),
            &format!("shard-{index}"),
            metrics,
        )
    };
    // The first shard also runs what is not a connection (the sweep,
    // services); `validate` asks for at least one.
    let first = shard_runtime(0)?;
    let mut shards = Shards::new(first.handle().clone());
    let mut queues = Vec::with_capacity(config.workers);
    let mut total_capacity = 0;
    let runtimes = std::iter::once(Ok(first)).chain((1..config.workers).map(shard_runtime));
    for (index, runtime) in runtimes.enumerate() {
        let runtime = runtime?;
        let capacity = shard_capacity(config.handoff_capacity, config.workers, index);
        total_capacity += capacity;
        queues.push(start_shard(serving, &mut shards, index, runtime, capacity)?);
    }
    Ok(Built {
        acceptor: Some(acceptor),
        serving: ServingRuntime::Shards(shards),
        dispatch: Dispatch::Shards {
            shards: queues,
            queued: serving.queued.clone(),
        },
        accept_tasks: config.acceptor_threads,
        queue_capacity: total_capacity,
    })
}

fn shard_name(index: usize) -> String {
    format!("tandem-shard-{index}")
}

/// Starts shard `index` on `runtime`, draining a queue of `capacity`
/// places; returns the queue's sending end.
fn start_shard<H: Handler>(
    serving: &Arc<Serving<H>>,
    shards: &mut Shards,
    index: usize,
    runtime: Runtime,
    capacity: usize,
) -> Result<ShardQueue, ServerError> {
    let (sender, queue) = mpsc::channel(capacity);
    serving
        .tracker
        .spawn_on(receive_handoffs(queue, serving.clone()), runtime.handle());
    // A current-thread runtime starts no thread of its own, so the thread
    // that lends itself to it attaches its tally.
    let totals = serving.metrics.totals().clone();
    let name = shard_name(index);
    shards
        .start(
            name.clone(),
            runtime,
            move || tally::attach(totals),
            tally::detach,
        )
        .map_err(|cause| ServerError::Runtime { role: name, cause })?;
    Ok(ShardQueue {
        sender,
        load: Default::default(),
    })
}

/// Builds the runtimes of `config.layout` and starts accepting.
pub(crate) fn start<H: Handler>(
    config: &ServerConfig,
    listener: TcpListener,
    serving: Arc<Serving<H>>,
    limit: Arc<Semaphore>,
) -> Result<Started, ServerError> {
    // Shard threads started before a failure further down are stopped
    // when `built` drops.
    let built = match config.layout {
        Layout::Single => single(config, &serving)?,
        Layout::Split => split(config, &serving)?,
        Layout::Sharded => sharded(config, &serving)?,
    };
    serving.metrics.watch_load(Load {
        active: serving.active.clone(),
        queued: serving.queued.clone(),
        capacity: built.queue_capacity,
    });
    let accept_on = built
        .acceptor
        .as_ref()
        .map_or(built.serving.handle(), Runtime::handle)
        .clone();
    let listener = register(listener, &accept_on)?;
    // The sweep counts the backlog to shed when every slot is taken.
    serving.sweep.pressure().watch_backlog(&listener);
    let accept_stop = CancellationToken::new();
    let accept_tasks = spawn_acceptors(
        &serving,
        listener,
        limit,
        Arc::new(built.dispatch),
        &accept_stop,
        built.accept_tasks,
        &accept_on,
    );
    Ok(Started::new(
        built.acceptor,
        built.serving,
        accept_tasks,
        accept_stop,
    ))
}

/// `listener`, registered with the reactor of the runtime that accepts.
fn register(
    listener: TcpListener,
    accept_on: &Handle,
) -> Result<Arc<AsyncFd<TcpListener>>, ServerError> {
    // AsyncFd registers with the reactor of the runtime entered here.
    let _entered = accept_on.enter();
    // SAFETY: the std listener owns its descriptor, and the AsyncFd owns
    // the listener until it is dropped, so the descriptor stays open and
    // the same for the AsyncFd's whole life.
    let listener = unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) }
        .map_err(|err| ServerError::Runtime {
            role: "tandem-accept".to_owned(),
            cause: err.into(),
        })?;
    Ok(Arc::new(listener))
}

/// Starts `count` accept tasks on `accept_on`, all stopped by `stop`.
fn spawn_acceptors<H: Handler>(
    serving: &Serving<H>,
    listener: Arc<AsyncFd<TcpListener>>,
    limit: Arc<Semaphore>,
    dispatch: Arc<Dispatch<H>>,
    stop: &CancellationToken,
    count: usize,
    accept_on: &Handle,
) -> JoinSet<()> {
    // One count per server, shared by every accept task. Behind a PROXY
    // protocol load balancer every connection comes from the balancer: the
    // serving side counts clients once it has read their headers.
    let per_ip = serving
        .per_ip
        .clone()
        .filter(|_| serving.proxy_protocol.is_none());
    let mut accept_tasks = JoinSet::new();
    for _ in 0..count {
        let acceptor = Acceptor {
            listener: listener.clone(),
            limit: limit.clone(),
            active: serving.active.clone(),
            dispatch: dispatch.clone(),
            stop: stop.clone(),
            metrics: serving.metrics.clone(),
            per_ip: per_ip.clone(),
            pressure: serving.sweep.pressure().clone(),
        };
        accept_tasks.spawn_on(acceptor.run(), accept_on);
    }
    accept_tasks
}

/// Shard `index`'s share of the hand-off capacity: the shares add up to
/// exactly `total`, unless there are more shards than places, when each
/// shard still gets the one place a queue needs.
fn shard_capacity(total: usize, shards: usize, index: usize) -> usize {
    let share = total / shards + usize::from(index < total % shards);
    share.max(1)
}

#[cfg(test)]
mod tests {
    use super::shard_capacity;
    use crate::server::config::{Layout, UnknownLayout};

    #[test]
    fn a_layout_parses_from_the_name_it_prints() {
        for &layout in Layout::ALL {
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
