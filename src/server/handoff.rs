//! The hand-off between the acceptor and the runtimes that serve.
//!
//! What crosses is a plain `std::net::TcpStream`, never a tokio one: a tokio
//! socket stays bound to the reactor of the runtime that created it, so the
//! serving runtime registers the socket itself (invariant 1). With it travel
//! the instant of the accept and the connection's [`Admission`], which holds
//! the `--max-connections` permit for as long as the connection lives.
//!
//! The acceptor reserves a place here before it calls accept (invariant 2):
//! [`Dispatch::reserve`] waits while the queue is full, so a saturated
//! server leaves new connections in the kernel's listen backlog.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::worker::{Serving, serve_connection};
use crate::handler::Handler;

/// An accepted connection on its way to the runtime that will serve it.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub(crate) stream: std::net::TcpStream,
    pub(crate) peer: SocketAddr,
    pub(crate) accepted_at: Instant,
    pub(crate) admission: Admission,
}

/// A connection's claim on the server's capacity, released when it drops:
/// the `--max-connections` permit, the active-connection count and, in the
/// sharded layout, the load of the shard that serves it.
#[derive(Debug)]
pub(crate) struct Admission {
    _permit: OwnedSemaphorePermit,
    active: Arc<AtomicUsize>,
    shard_load: Option<Arc<AtomicUsize>>,
}

impl Admission {
    pub(crate) fn new(permit: OwnedSemaphorePermit, active: Arc<AtomicUsize>) -> Self {
        active.fetch_add(1, Ordering::Relaxed);
        Admission {
            _permit: permit,
            active,
            shard_load: None,
        }
    }

    fn assign_to_shard(&mut self, load: Arc<AtomicUsize>) {
        load.fetch_add(1, Ordering::Relaxed);
        self.shard_load = Some(load);
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        if let Some(load) = &self.shard_load {
            load.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// One shard's end of the hand-off.
pub(crate) struct ShardQueue {
    pub(crate) sender: mpsc::Sender<Accepted>,
    /// Connections the shard serves now (queued ones included).
    pub(crate) load: Arc<AtomicUsize>,
}

/// Where the acceptor sends what it accepts, one variant per layout.
pub(crate) enum Dispatch<H> {
    /// `single`: the acceptor shares the serving runtime and spawns there.
    Spawn(Arc<Serving<H>>),
    /// `split`: one queue to the worker runtime.
    Queue(mpsc::Sender<Accepted>),
    /// `sharded`: one queue per single-thread runtime.
    Shards(Vec<ShardQueue>),
}

/// A reserved place for one connection, obtained before accepting it.
pub(crate) enum Slot<'a, H> {
    Spawn(&'a Arc<Serving<H>>),
    Queue(mpsc::Permit<'a, Accepted>),
    Shard(mpsc::Permit<'a, Accepted>, &'a Arc<AtomicUsize>),
}

impl<H: Handler> Dispatch<H> {
    /// Waits for room for one more connection. `None` when the serving side
    /// has gone away, which only happens while the server stops.
    pub(crate) async fn reserve(&self) -> Option<Slot<'_, H>> {
        match self {
            Dispatch::Spawn(serving) => Some(Slot::Spawn(serving)),
            Dispatch::Queue(sender) => sender.reserve().await.ok().map(Slot::Queue),
            Dispatch::Shards(shards) => {
                // The least-loaded shard that has room now; if every queue is
                // full, wait for the least-loaded one.
                let load = |shard: &&ShardQueue| shard.load.load(Ordering::Relaxed);
                let with_room = shards
                    .iter()
                    .filter(|shard| shard.sender.capacity() > 0)
                    .min_by_key(load);
                if let Some(shard) = with_room
                    && let Ok(permit) = shard.sender.try_reserve()
                {
                    return Some(Slot::Shard(permit, &shard.load));
                }
                let shard = shards.iter().min_by_key(load)?;
                let permit = shard.sender.reserve().await.ok()?;
                Some(Slot::Shard(permit, &shard.load))
            }
        }
    }
}

impl<H: Handler> Slot<'_, H> {
    /// Hands `accepted` to the runtime that will serve it.
    pub(crate) fn deliver(self, mut accepted: Accepted) {
        match self {
            Slot::Spawn(serving) => {
                serving
                    .tracker
                    .spawn(serve_connection(serving.clone(), accepted));
            }
            Slot::Queue(permit) => permit.send(accepted),
            Slot::Shard(permit, load) => {
                accepted.admission.assign_to_shard(load.clone());
                permit.send(accepted);
            }
        }
    }
}
