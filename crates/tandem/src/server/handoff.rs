//! The hand-off between the acceptor and the runtimes that serve.
//!
//! What crosses is a plain `std::net::TcpStream`, never a tokio one: a tokio
//! socket stays bound to the reactor of the runtime that created it, so the
//! serving runtime registers the socket itself (invariant 1). With it travel
//! the instant of the accept and the connection's `Admission`, which holds
//! the `--max-connections` permit for as long as the connection lives.
//!
//! The acceptor reserves a place here before it calls accept (invariant 2):
//! [`Dispatch::reserve`] waits while the queue is full, so a saturated
//! server leaves new connections in the kernel's listen backlog.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

use super::admission::{Accepted, Counted};
use super::worker::{Serving, serve_connection};
use crate::handler::Handler;

/// One shard's end of the hand-off.
pub(crate) struct ShardQueue {
    pub(crate) sender: mpsc::Sender<Box<Accepted>>,
    /// Connections the shard serves now (queued ones included).
    pub(crate) load: Arc<AtomicUsize>,
}

/// Where the acceptor sends what it accepts, one variant per layout.
pub(crate) enum Dispatch<H> {
    /// `single`: the acceptor shares the serving runtime and spawns there.
    Spawn(Arc<Serving<H>>),
    /// `split`: one queue to the worker runtime.
    Queue {
        sender: mpsc::Sender<Box<Accepted>>,
        /// Connections in the queue(s), for the queue-depth gauge.
        queued: Arc<AtomicUsize>,
    },
    /// `sharded`: one queue per single-thread runtime.
    Shards {
        shards: Vec<ShardQueue>,
        queued: Arc<AtomicUsize>,
    },
}

/// A reserved place for one connection, obtained before accepting it.
pub(crate) enum Slot<'a, H> {
    Spawn(&'a Arc<Serving<H>>),
    Queue(mpsc::Permit<'a, Box<Accepted>>, &'a AtomicUsize),
    /// The shard's load counts the connection from the reservation on, so
    /// that concurrent acceptors spread out.
    Shard(mpsc::Permit<'a, Box<Accepted>>, &'a AtomicUsize, Counted),
}

impl<H: Handler> Dispatch<H> {
    /// Waits for room for one more connection. `None` when the serving side
    /// has gone away, which only happens while the server stops.
    pub(crate) async fn reserve(&self) -> Option<Slot<'_, H>> {
        match self {
            Dispatch::Spawn(serving) => Some(Slot::Spawn(serving)),
            Dispatch::Queue { sender, queued } => sender
                .reserve()
                .await
                .ok()
                .map(|permit| Slot::Queue(permit, queued)),
            Dispatch::Shards { shards, queued } => {
                // The least-loaded live shard that has room now; if every
                // queue is full, wait for the least-loaded one.
                let load = |shard: &&ShardQueue| shard.load.load(Ordering::Relaxed);
                let live = || shards.iter().filter(|shard| !shard.sender.is_closed());
                let with_room = live()
                    .filter(|shard| shard.sender.capacity() > 0)
                    .min_by_key(load);
                if let Some(shard) = with_room
                    && let Ok(permit) = shard.sender.try_reserve()
                {
                    return Some(Slot::Shard(permit, queued, Counted::new(&shard.load)));
                }
                let shard = live().min_by_key(load)?;
                let permit = shard.sender.reserve().await.ok()?;
                Some(Slot::Shard(permit, queued, Counted::new(&shard.load)))
            }
        }
    }
}

impl<H: Handler> Slot<'_, H> {
    /// Hands `accepted` to the runtime that will serve it. Boxed here, once:
    /// the connection task keeps its argument for its whole life, and
    /// would otherwise carry the whole `Accepted` long after the setup
    /// took it apart; a hand-off slot is a pointer, too.
    pub(crate) fn deliver(self, accepted: Accepted) {
        let mut accepted = Box::new(accepted);
        match self {
            Slot::Spawn(serving) => {
                serving
                    .tracker
                    .spawn(serve_connection(serving.clone(), accepted));
            }
            // Counted before the send, so that the receiver's decrement
            // never comes first.
            Slot::Queue(permit, queued) => {
                queued.fetch_add(1, Ordering::Relaxed);
                permit.send(accepted);
            }
            Slot::Shard(permit, queued, load) => {
                accepted.admission.shard_load = Some(load);
                queued.fetch_add(1, Ordering::Relaxed);
                permit.send(accepted);
            }
        }
    }
}
