//! [`ServerError`]: why a server could not start or run. A leaf, as the
//! configuration is.

use std::io;
use std::net::SocketAddr;

use thiserror::Error;

use crate::range::OutOfRange;

/// Why the server could not start or run.
#[derive(Debug, Error)]
pub enum ServerError {
    /// Binding or listening failed.
    // The OS reason is part of the message rather than a `source`, so that
    // it is printed once however the error chain is rendered.
    #[error("cannot listen on {addr}: {cause}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS reason.
        cause: io::Error,
    },
    /// The socket passed by a service manager (`LISTEN_FDS`) is unusable.
    #[error("cannot use the socket passed by the service manager (LISTEN_FDS): {cause}")]
    Inherited {
        /// What is wrong with it.
        cause: io::Error,
    },
    /// A service could not be set up on the serving runtime.
    #[error("cannot start the {name} service: {cause}")]
    Service {
        /// The service's name (`udp` for the UDP echo).
        name: &'static str,
        /// The OS reason.
        cause: io::Error,
    },
    /// A runtime or one of its threads could not be started.
    #[error("cannot start the {role} runtime: {cause}")]
    Runtime {
        /// The runtime's role (its thread name).
        role: String,
        /// The OS reason.
        cause: io::Error,
    },
    /// [`Server::run`](super::Server::run) and
    /// [`Server::start`](super::Server::start) block their thread and start
    /// runtimes of their own, so they cannot be called from inside a tokio
    /// runtime; [`Server::serve`](super::Server::serve) can.
    #[error("Server::run must be called outside any tokio runtime; inside one, use Server::serve")]
    InsideRuntime,
    /// A [`ServerConfig`](super::ServerConfig) field is out of range.
    #[error("invalid server configuration: {0}")]
    InvalidConfig(#[from] OutOfRange),
    /// A [`ServerConfig`](super::ServerConfig) field asks for what this
    /// build of the library leaves out: its cargo feature is off.
    #[error(
        "invalid server configuration: {field} needs the `{feature}` feature of the tandem library, which this build leaves out"
    )]
    FeatureOff {
        /// The field that was set.
        field: &'static str,
        /// The cargo feature that brings it.
        feature: &'static str,
    },
    /// Every accept task ended without being asked to.
    #[error("the acceptor stopped unexpectedly; see the log for the cause")]
    AcceptorFailed,
}
