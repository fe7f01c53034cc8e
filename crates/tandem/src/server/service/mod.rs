//! Services: what a server runs on its serving runtime beside the
//! connections, plugged in with [`Server::service`](super::Server::service).
//! UDP echo ([`Server::udp`](super::Server::udp)) is one.
//!
//! A service starts once the serving runtime is up, inside it, so that a
//! socket it registers belongs to that runtime's reactor (invariant 1), as
//! the connections' do; a setup error fails [`Server::start`](super::Server::start).
//! Its task runs until the shutdown begins, when [`ServiceContext::stop`]
//! is cancelled: a service has no connections to drain, so it is told to
//! stop first, and the drain waits for its task as for a connection's.

use std::future::Future;
use std::io;
use std::pin::Pin;

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

pub(crate) mod udp;

/// What a service is given when it starts.
#[derive(Debug, Clone)]
pub struct ServiceContext {
    stop: CancellationToken,
    metrics: Metrics,
}

impl ServiceContext {
    pub(crate) fn new(stop: CancellationToken, metrics: Metrics) -> Self {
        ServiceContext { stop, metrics }
    }

    /// Cancelled when the server's shutdown begins: the service's task
    /// should end then.
    pub fn stop(&self) -> &CancellationToken {
        &self.stop
    }

    /// The server's metrics, for a service that reads or exports them
    /// ([`Metrics::render`]).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// A started service's task.
pub(crate) type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A service not started yet: its name, for errors, and what starts it.
pub(crate) struct Pending {
    pub(crate) name: &'static str,
    pub(crate) start: Box<dyn FnOnce(ServiceContext) -> io::Result<Task> + Send>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}
