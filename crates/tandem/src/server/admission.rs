//! What an accepted connection carries from the acceptor to the connection
//! task that serves it: the socket, and its [`Admission`], its claim on the
//! server's capacity, held for as long as the connection lives. The
//! acceptor makes both, the hand-off carries them, the worker holds them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;

use super::per_ip::PerIpClaim;

/// An accepted connection on its way to the runtime that will serve it.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub(crate) stream: std::net::TcpStream,
    pub(crate) peer: SocketAddr,
    pub(crate) accepted_at: Instant,
    pub(crate) admission: Admission,
}

/// One unit of a shared count, held for as long as this value lives.
#[derive(Debug)]
pub(crate) struct Counted(Arc<AtomicUsize>);

impl Counted {
    pub(crate) fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Counted(count.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's claim on the server's capacity, released when it drops:
/// the `--max-connections` permit, its place in the active-connection count,
/// in its client's count under `--max-connections-per-ip` and, in the
/// sharded layout, in the load of the shard that serves it.
#[derive(Debug)]
pub(crate) struct Admission {
    // Held only for what their Drop releases, in this order: the client's
    // place first, so that once the connection no longer counts as active
    // (or its permit is free) the client may connect again.
    /// Set by the acceptor, or by the serving side once a PROXY header
    /// has named the client.
    #[cfg_attr(
        not(feature = "proxy-protocol"),
        expect(
            dead_code,
            reason = "written only once a PROXY header names the client, else held for its Drop"
        )
    )]
    pub(crate) per_ip: Option<Box<PerIpClaim>>,
    #[expect(dead_code, reason = "held for its Drop")]
    pub(crate) permit: OwnedSemaphorePermit,
    #[expect(dead_code, reason = "held for its Drop")]
    pub(crate) active: Counted,
    pub(crate) shard_load: Option<Counted>,
}
