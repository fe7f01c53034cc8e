//! The server machinery, generic over the [`Handler`](crate::Handler) it runs.
//!
//! One file per concept. What a server is given, and how it starts and
//! stops:
//! - `config`: [`ServerConfig`] and [`Layout`], with their defaults and
//!   ranges; `error`: [`ServerError`]; `report`: [`ShutdownReport`];
//! - `builder`: [`Server`], what it serves beside the connections, and
//!   [`Server::run`];
//! - `start`: [`Server::start`], the start sequence, and [`Running`];
//! - `shutdown`: [`Running::wait`], the shutdown sequence in named phases;
//! - `stop_times`: every time limit of a stop, in the order they run;
//! - `layout`: the runtimes of `split`, `single` and `sharded`, and
//!   `runtimes`: those runtimes, typed (an acceptor runtime where the
//!   layout has one; a pool or a set of shards that serves).
//!
//! Then in the order a connection meets them:
//! - [`listener`]: the listening socket (backlog, address family);
//! - `limits`: `--max-connections` reconciled with RLIMIT_NOFILE;
//! - `acceptor`: the accept loop, its backpressure and its error policy;
//! - `per_ip`: `--max-connections-per-ip`, the connections each client holds;
//! - `proxy_header`: `--proxy-protocol`, the header naming the real client,
//!   read only from trusted balancers and checked as HAProxy checks it;
//! - `admission`: what an accepted connection carries, and its claim on
//!   the server's capacity;
//! - `handoff`: how it crosses from the acceptor to the serving runtime;
//! - `worker`: the connection task on the serving side;
//! - `tracker`: the connection tasks the shutdown waits for;
//! - `threads`: whether the OS will start a runtime's threads, asked
//!   before tokio, which hangs when it cannot;
//! - `service`: what else runs on the serving runtime ([`Server::service`]),
//!   UDP echo (`service::udp`) among it;
//! - `admin`: the admin endpoint (`/metrics`, `/healthz`, `/readyz`) on a
//!   one-thread runtime of its own, which [`Server::admin`] turns on;
//!   `admin::pool` makes room for each new admin connection.
//!
//! [`Server::run`] ties them together: [`Server::start`], then
//! [`Running::wait`], which owns the shutdown sequence (invariant 8): stop
//! accepting and shut the acceptor runtime down, serve live connections
//! until they close or the shutdown timeout passes, cut the rest, then shut
//! the serving runtimes down.
//!
//! # Invariants
//!
//! The parts that are easy to get wrong, numbered so that the code that
//! upholds each can cite it.
//!
//! 1. **A socket is registered with the reactor of the runtime that serves
//!    it.** A tokio `TcpStream` stays bound to the I/O driver of the runtime
//!    that created it, and stops working once that runtime is gone. The
//!    acceptor hands over a `std::net::TcpStream`, and the serving runtime
//!    registers it from inside itself (`handoff`, `worker`).
//! 2. **Backpressure reaches the kernel.** The acceptor reserves a hand-off
//!    slot and a connection permit before it calls accept, so that when the
//!    workers are saturated or the limit is reached, new connections wait
//!    in the listen backlog instead of being accepted and dropped
//!    (`acceptor`, `handoff`).
//! 3. **Accept errors never stop the server and never spin.** Aborted and
//!    reset connections are skipped; running out of descriptors or memory
//!    is logged (rate-limited) and retried after a capped exponential
//!    back-off (`acceptor`).
//! 4. **No panic on network input.** A client that resets, half-closes or
//!    vanishes ends its own connection and nothing else.
//! 5. **Memory per connection is bounded and small.** A connection holds at
//!    most one data buffer, and an idle one none; a client that sends
//!    without reading meets TCP backpressure ([`crate::buffer`]).
//! 6. **Echo is byte-exact** (RFC 862). When the client half-closes, the
//!    server writes back everything it has read, then shuts its own write
//!    side down ([`crate::echo`]).
//! 7. **`append_newline` writes a `\n` after each chunk read**, never a
//!    stale byte ([`crate::echo`]).
//! 8. **Graceful shutdown.** Accepting stops at once; live connections are
//!    served until they close or the shutdown timeout passes, then the rest
//!    are cut, each after writing back what it has already read. The
//!    acceptor stops first, the serving runtimes last ([`Server::run`]).

mod acceptor;
#[cfg(feature = "admin")]
mod admin;
mod admission;
mod builder;
mod config;
mod error;
mod handoff;
mod layout;
mod limits;
pub mod listener;
mod per_ip;
#[cfg(feature = "proxy-protocol")]
mod proxy_header;
mod report;
mod runtimes;
mod service;
mod shutdown;
mod start;
mod stop_times;
pub(crate) mod threads;
mod tracker;
mod worker;

pub use self::builder::Server;
pub use self::config::{
    DEFAULT_PROXY_HEADER_TIMEOUT, Layout, MAX_BUFFER_MEMORY, MAX_QUEUE, MAX_THREADS, ServerConfig,
    UnknownLayout,
};
pub use self::error::ServerError;
#[cfg(feature = "systemd")]
pub use self::listener::inherited;
pub use self::listener::{ListenOptions, bind, bind_udp, bind_with};
pub use self::report::ShutdownReport;
pub use self::service::ServiceContext;
pub use self::start::Running;
pub use crate::ip_ranges::{InvalidIpRange, IpRanges};
