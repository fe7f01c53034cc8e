//! The contract between the server machinery and a protocol.
//!
//! The machinery (acceptor, hand-off, runtimes, limits, shutdown) is generic
//! over a [`Handler`]; echo is one implementation. A handler owns nothing but
//! its protocol: it is given a [`Connection`] already registered with the
//! runtime that serves it, and returns why the connection ended.
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

use crate::connection::Connection;

/// Serves one connection of a protocol.
///
/// One handler value serves every connection of a server, concurrently and
/// from several threads, so it is `Sync`; per-connection state lives in the
/// future that [`serve`](Handler::serve) returns. That future should hold no
/// data buffer while it waits for the peer (see [`crate::buffer::Buffer`]), return
/// [`Close::IdleTimeout`] or [`Close::Cut`] when
/// [`Connection::ready`] says so, and never panic on anything the peer sends.
pub trait Handler: Send + Sync + 'static {
    /// Serves `conn` until it ends. An `Err` is the peer's or the network's
    /// fault (reset, broken pipe, timeout): the server logs it at debug level
    /// and counts it, nothing more.
    fn serve(&self, conn: &mut Connection) -> impl Future<Output = io::Result<Close>> + Send;
}

/// Why a connection ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// The peer closed its side and everything owed to it was sent.
    Eof,
    /// The peer stayed silent past the idle timeout.
    IdleTimeout,
    /// The cut: the server was shutting down and the shutdown timeout
    /// passed.
    Cut,
}
