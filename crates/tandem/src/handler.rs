//! The contract between the server machinery and a protocol.
//!
//! The machinery (acceptor, hand-off, runtimes, limits, shutdown) is generic
//! over a [`Handler`]; echo is one implementation. A handler owns nothing but
//! its protocol: it is given a [`Connection`] already registered with the
//! runtime that serves it, and returns why the connection ended. This
//! module also owns the guard the server polls a handler through, which
//! turns a panic into that connection's end.
//!
//! ```
//! use std::io;
//! use std::time::Duration;
//! use tandem::{Close, Connection, Handler, Server, ServerConfig};
//!
//! /// RFC 864-style greeting: writes one line, then closes.
//! struct Greeting;
//!
//! impl Handler for Greeting {
//!     async fn serve(&self, conn: &mut Connection) -> io::Result<Close> {
//!         conn.write_all(b"hello from tandem\r\n").await?;
//!         conn.shutdown().await?;
//!         Ok(Close::Eof)
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tandem::server::bind("127.0.0.1:0".parse()?, 128)?;
//! let addr = listener.local_addr()?;
//! let stop = tokio_util::sync::CancellationToken::new();
//! let server = std::thread::spawn({
//!     let stop = stop.clone();
//!     move || Server::new(ServerConfig::default()).run(listener, Greeting, stop.cancelled_owned())
//! });
//!
//! let mut client = std::net::TcpStream::connect(addr)?;
//! let mut line = String::new();
//! std::io::Read::read_to_string(&mut client, &mut line)?;
//! assert_eq!(line, "hello from tandem\r\n");
//!
//! stop.cancel();
//! let report = server.join().expect("server thread")?;
//! assert_eq!(report.cut, 0);
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::compute::panic_message;
use crate::connection::Connection;

/// Serves one connection of a protocol.
///
/// One handler value serves every connection of a server, concurrently and
/// from several threads, so it is `Sync`; per-connection state lives in the
/// future that [`serve`](Handler::serve) returns. That future should hold no
/// data buffer while it waits for the peer (see [`crate::buffer::Buffer`]), return
/// [`Close::IdleTimeout`] or [`Close::Cut`] when
/// [`Connection::ready`] says so, and never panic on anything the peer sends.
///
/// # Panics
///
/// A panic in `serve` ends that connection and no other: the server
/// catches it where it polls the handler's future, drops the future, and
/// closes the connection as it closes one that ended with an error (the
/// socket closed, its place under the connection limits given back),
/// counted as `reason="panic"` in `tandem_connections_closed_total` and
/// logged at error level with the peer and the panic's message. Every other
/// connection, and the server, go on; the process's panic hook still runs
/// first (by default, a message on stderr). The handler value is shared by
/// every connection: a lock it held when it panicked stays poisoned for
/// the others. Under `panic = "abort"` nothing is caught: the process ends.
pub trait Handler: Send + Sync + 'static {
    /// Serves `conn` until it ends. An `Err` is the peer's or the network's
    /// fault (reset, broken pipe, timeout): the server logs it at debug level
    /// and counts it, nothing more. The idle rule's error
    /// ([`IdleTimeout`](crate::connection::IdleTimeout)) counts as
    /// `idle_timeout` and the cut's ([`Cut`](crate::connection::Cut)) as
    /// `shutdown`, passed on as they came; any other error, a `TimedOut`
    /// of the handler's own included, counts as `error` (or `reset`, for a
    /// peer that reset or vanished).
    fn serve(&self, conn: &mut Connection) -> impl Future<Output = io::Result<Close>> + Send;
}

/// Why a connection ended without error: the `reason` it is counted under
/// in `tandem_connections_closed_total`.
///
/// When the handler ends the connection itself ([`Eof`](Close::Eof),
/// [`Protocol`](Close::Protocol), [`Handler`](Close::Handler)), it writes
/// what it owes the peer (an error line) and half-closes
/// ([`Connection::shutdown`]) before it returns, if it wants the peer to
/// see a clean end; the server then closes the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Close {
    /// The peer closed its side and everything owed to it was sent:
    /// `reason="eof"`.
    Eof,
    /// The peer stayed silent past the idle timeout: `reason="idle_timeout"`.
    IdleTimeout,
    /// The cut: the server was shutting down and the shutdown timeout
    /// passed: `reason="shutdown"`.
    Cut,
    /// The handler ended the connection because the peer broke the
    /// protocol: a line too long, a request it cannot parse.
    /// `reason="protocol"`, apart from the peer's own close.
    Protocol,
    /// The handler ended the connection for a reason of its own, named
    /// here: `Ok(Close::Handler(&"quota exceeded"))`. Counted as
    /// `reason="handler"`, one series for every name (a label value per
    /// name could grow without bound), and the name is in the close's log
    /// line (debug level). A reference to the name, not the name itself,
    /// so that a `Close` stays two words, and with it every connection's
    /// task (the server keeps a `Close` across the connection's close).
    Handler(&'static &'static str),
}

pin_project_lite::pin_project! {
    /// A handler's future, with a panic in one of its polls caught and turned
    /// into its connection's end: the error [`Panicked`], so that the server
    /// closes the connection, and counts it, as it does every other. The
    /// future by value and nothing else, so the connection's task does not
    /// grow, and no allocation unless it panics.
    pub(crate) struct Caught<F> {
        #[pin]
        serve: F,
    }
}

impl<F> Caught<F> {
    pub(crate) fn new(serve: F) -> Self {
        Caught { serve }
    }
}

impl<F: Future<Output = io::Result<Close>>> Future for Caught<F> {
    type Output = io::Result<Close>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let serve = self.project().serve;
        // Unwind safe enough: after a panic the future is never polled
        // again, only dropped, and the connection it borrowed only closed.
        catch_unwind(AssertUnwindSafe(|| serve.poll(cx))).unwrap_or_else(|payload| {
            let panicked = Panicked(panic_message(&*payload));
            Poll::Ready(Err(io::Error::other(panicked)))
        })
    }
}

/// How a handler that panicked ended its connection, with the panic's
/// message.
#[derive(Debug, thiserror::Error)]
#[error("the handler panicked: {0}")]
pub(crate) struct Panicked(String);

impl Panicked {
    /// True if `err` is a caught panic's.
    pub(crate) fn is(err: &io::Error) -> bool {
        err.get_ref().is_some_and(|inner| inner.is::<Panicked>())
    }
}
