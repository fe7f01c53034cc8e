//! tandem: a TCP echo server built on the split-runtime pattern, made
//! correct, fast and operable, and a library that makes the pattern reusable
//! for any connection handler.
//!
//! # Quick start
//!
//! A protocol is a [`Handler`]; the [`Server`] accepts on one runtime and
//! runs the handler for each connection on another.
//!
//! ```no_run
//! use tandem::{Close, Connection, Handler, Server, ServerConfig};
//! use tokio_util::sync::CancellationToken;
//!
//! /// Writes back every chunk it reads, in upper case.
//! struct Upper;
//!
//! impl Handler for Upper {
//!     async fn serve(&self, conn: &mut Connection) -> std::io::Result<Close> {
//!         let mut buf = [0; 4096];
//!         loop {
//!             let n = conn.read(&mut buf).await?;
//!             if n == 0 {
//!                 conn.shutdown().await?; // the client closed: so do we
//!                 return Ok(Close::Eof);
//!             }
//!             buf[..n].make_ascii_uppercase();
//!             conn.write_all(&buf[..n]).await?;
//!         }
//!     }
//! }
//!
//! let listener = tandem::server::bind("127.0.0.1:7000".parse()?, 1024)?;
//! let stop = CancellationToken::new(); // stop.cancel() from a signal handler
//! let report = Server::new(ServerConfig::default()).run(listener, Upper, stop.cancelled_owned())?;
//! println!("drained {} connections, cut {}", report.drained, report.cut);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `examples/uppercase/` is the same server with Ctrl-C wired, to try
//! with `nc`.
//!
//! [`Server::run`] blocks its thread and runs the server's runtimes on
//! threads of their own. A program that already has a tokio runtime
//! (`#[tokio::main]`) awaits [`Server::serve`] instead, which does the same
//! from a thread of the server's.
//!
//! # Logs
//!
//! The library logs only through [`tracing`](https://docs.rs/tracing):
//! warnings and errors (a listener out of descriptors, an accept task
//! that failed, a handler that panicked) and, at debug level, each
//! connection's close. It installs no subscriber; a program that installs
//! one (`tracing-subscriber`) sees them, under targets that start with
//! `tandem`.
//!
//! # What a handler author uses
//!
//! At the crate's root, the items of the quick start and what they take:
//!
//! - [`Handler`], the trait a protocol implements (and what a panic in it
//!   does), and [`Close`], how a connection ended, each way counted under
//!   its own reason: the peer's close, the idle rule, the cut, the peer
//!   breaking the protocol, or a reason of the handler's own;
//! - [`Connection`], what a handler is given: the socket, registered with
//!   the runtime that serves it, under the idle rule and the shutdown cut,
//!   and [`Event`], what a wait on it returns;
//! - [`Server`], its [`ServerConfig`] and [`Layout`]; [`Running`], a
//!   started server, and the [`ShutdownReport`] its shutdown returns;
//!   [`ServerError`] and [`OutOfRange`], why it would not start;
//! - [`Compute`] and [`ComputeConfig`]: the runtime for CPU-heavy work;
//! - [`ServerTls`]: TLS on every connection;
//! - [`Metrics`]: the server's Prometheus series;
//! - [`Echo`] and [`EchoConfig`]: the echo handler, a full handler to read.
//!
//! The details each of those brings sit in its module: [`server`]
//! (binding, listener options, services, the PROXY protocol's trusted
//! ranges), [`connection`] (socket options, the byte stream under a
//! connection, the idle rule's and the cut's errors,
//! [`IdleTimeout`](connection::IdleTimeout) and [`Cut`](connection::Cut)), [`compute`] (where the work runs, its errors), [`tls`],
//! [`buffer`] (data buffers within one memory budget) and [`echo`].
//!
//! # Features
//!
//! All on by default; a server that needs less says
//! `default-features = false` and names what it needs, and builds on tokio
//! and a few small crates alone:
//!
//! - `tls`: [`Server::tls`], [`ServerTls`] and [`Connection::tls`], on
//!   rustls with ring;
//! - `proxy-protocol`: [`ServerConfig::proxy_protocol`], the PROXY header a
//!   load balancer sends (v1 and v2). Without it the field stays, and a
//!   server that sets it refuses to start ([`ServerError::FeatureOff`]);
//! - `admin`: [`Server::admin`] (`/metrics`, `/healthz`, `/readyz`) on
//!   hyper, and the Prometheus exposition it serves,
//!   [`Metrics::render`]. Without it the metrics are not kept;
//! - `systemd`: [`server::inherited`], the listener systemd passes.
//!
//! Every server gets the layouts, the limits, the idle rule, the graceful
//! shutdown, the compute runtime and the echo handler.
//!
//! # Layout of the crate
//!
//! - [`server`]: the machinery, generic over a [`Handler`]: listener,
//!   acceptor, hand-off queue, runtime layouts, connection limits and the
//!   graceful-shutdown sequence. [`Server::run`] is the entry point.
//! - `handler`: the [`Handler`] trait a protocol implements, and [`Close`].
//! - [`connection`]: [`Connection`], what a handler is given: the socket,
//!   registered with the runtime that serves it, with its idle timeout and
//!   the shutdown cut.
//! - `sweep`: the idle rule and the cut, enforced for every connection of a
//!   server by one periodic task that wakes only the connections it
//!   concerns, so that a message costs a connection one waiter, its
//!   socket's.
//! - `transport`: [`connection::Transport`], the byte stream under a
//!   connection, plain TCP or TLS, driven by readiness either way.
//! - [`tls`]: [`ServerTls`], the server's certificate and key for rustls,
//!   and the handshake on the serving runtime; [`Server::tls`] turns it on.
//! - [`buffer`]: [`Buffer`](buffer::Buffer), data buffers lent per chunk so
//!   that idle connections hold none and the hot path does not allocate,
//!   all within one memory budget ([`ServerConfig::buffer_memory`]).
//! - `file`: the configuration and PEM files, read as small regular files
//!   only.
//! - [`echo`]: the echo handler (RFC 862, plus `--append-newline`), written
//!   as a future of its own on the connection's poll methods, so that an
//!   idle connection's task stays at tokio's smallest cell.
//! - [`compute`]: the compute runtime, its fair queue and its threads.
//! - `metrics`: [`Metrics`], the server's Prometheus series, fed without
//!   an atomic operation per read, and sampled per runtime.
//! - `server::admin`: the admin endpoint (`/metrics`, `/healthz`,
//!   `/readyz`) on a one-thread runtime of its own, which answers while
//!   hostile clients hold its port; [`Server::admin`] turns it on.
//! - `ip_ranges`: [`server::IpRanges`], the CIDR lists an operator trusts,
//!   such as the load balancers allowed to send a PROXY header.
//! - `range`: [`OutOfRange`], the one range check of every configuration;
//!   `names`: the enums named by fixed words (layouts, label sets).
//!
//! The `tandem` binary (`tandem-cli`, the workspace's root package) parses
//! the command line, sets up logging and signals, binds, and calls
//! [`Server::run`]; the load generator and the comparison suite are the
//! `tandem-bench` crate. Neither is a dependency of this one; the few items
//! they share with it and a handler author does not need are hidden from
//! these pages.
//!
//! # The data path
//!
//! ```text
//!  clients ──► listen backlog ──► acceptor runtime ──► hand-off queue ──► worker runtime
//!              (kernel,            reserves a permit    bounded; carries    registers the
//!               --backlog)         and a slot, then     std TcpStream +     socket, runs
//!                                  accepts              accept instant      the handler
//! ```

#[macro_use]
mod names;
#[macro_use]
mod setters;

pub mod buffer;
pub mod compute;
pub mod connection;
pub mod echo;
pub mod server;
#[cfg(feature = "tls")]
pub mod tls;

#[doc(hidden)]
pub mod duration;
#[doc(hidden)]
pub mod file;
mod handler;
mod ip_ranges;
mod metrics;
#[doc(hidden)]
pub mod range;
mod sweep;
#[doc(hidden)]
pub mod transport;

pub use compute::{Compute, ComputeConfig};
pub use connection::{Connection, Event};
pub use echo::{Echo, EchoConfig};
pub use handler::{Close, Handler};
pub use metrics::Metrics;
pub use range::OutOfRange;
pub use server::{Layout, Running, Server, ServerConfig, ServerError, ShutdownReport};
#[cfg(feature = "tls")]
pub use tls::ServerTls;
