//! One accepted connection as a handler sees it: its byte stream (plain
//! TCP, or TLS with the handshake done), the socket already registered with
//! the reactor of the runtime that serves it, plus the two things that may
//! end it from outside, the idle rule and the shutdown cut.
//!
//! The idle rule closes a connection that stays silent for the idle
//! timeout, or that moves fewer bytes than the minimum rate asks for over a
//! window of that length: a client trickling a byte every few seconds is
//! never silent for long, yet holds its connection slot for nothing.
//!
//! Both are watched without work per message: the server's sweep
//! (`crate::sweep`) judges every connection at its ticks and wakes those it
//! concerns, so a connection whose socket runs dry registers one waiter,
//! the socket's, and reads no clock. It counts its activity and bytes in
//! its `Watched` record as it reads and writes. The same sweep sheds the
//! slowest connections when every slot is taken and new clients wait: a
//! shed connection sees the idle rule's event.
//!
//! A connection the server closes while its peer has not taken all it was
//! sent closes abortively, with a reset (`SO_LINGER` 0): closed with a
//! FIN, its socket would outlive it as an orphan in the kernel, holding
//! its unsent echo for minutes, behind a FIN the peer never reads up to.

pub use crate::transport::Transport;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::buffer::Buffer;
use crate::metrics::tally;
use crate::sweep::{Sweep, Watched};

/// What [`Connection::ready`] woke up for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The socket has data, an end-of-file or an error to read.
    Readable,
    /// Nothing happened for the idle timeout, or too little: fewer bytes
    /// than the minimum rate over a window of the idle timeout. Also the
    /// event of a connection shed to make room for new clients, when every
    /// slot is taken and it is among the slowest.
    IdleTimeout,
    /// The cut: the server is shutting down and the shutdown timeout has
    /// passed. Write back what is owed, then close.
    Cut,
}

/// An accepted connection and the limits it is served under.
#[derive(Debug)]
pub struct Connection {
    transport: Transport,
    peer: SocketAddr,
    /// What the sweep reads of this connection, where it wakes it, and
    /// its verdicts: idle, cut.
    watched: Arc<Watched>,
}

/// A connection's TCP socket, for its options and addresses only: no way
/// to read or write past TLS or the byte counts.
///
/// ```compile_fail
/// async fn bypass(conn: &mut tandem::Connection) {
///     let mut buf = [0u8; 16];
///     let _ = conn.socket().try_read(&mut buf);
/// }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct SocketOptions<'a>(&'a TcpStream);

impl SocketOptions<'_> {
    /// TCP_NODELAY (set by the server unless `--nodelay false`).
    pub fn nodelay(&self) -> io::Result<bool> {
        self.0.nodelay()
    }

    /// Sets TCP_NODELAY.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.0.set_nodelay(nodelay)
    }

    /// IP_TTL.
    pub fn ttl(&self) -> io::Result<u32> {
        self.0.ttl()
    }

    /// Sets IP_TTL.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.0.set_ttl(ttl)
    }

    /// The local address the connection was accepted on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    /// The TCP peer: the client, or, behind a load balancer that sends a
    /// PROXY header, the balancer ([`Connection::peer_addr`] is the client
    /// the header names).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.peer_addr()
    }
}

/// Why a wait ended without the socket: the sweep's two verdicts.
enum Interrupted {
    Idle,
    Cut,
}

impl Interrupted {
    /// The verdict as the error of an `AsyncRead` or `AsyncWrite` call,
    /// which the server counts as `idle_timeout` or `shutdown`.
    fn error(self) -> io::Error {
        match self {
            Interrupted::Idle => IdleTimeout.into(),
            Interrupted::Cut => Cut.into(),
        }
    }
}

/// The error a connection's `AsyncRead` returns once the server has cut
/// it at the end of the shutdown timeout, inside an [`io::Error`] of kind
/// `Other`. A handler on tokio's I/O helpers that meets it can pass it on
/// with `?` (the server counts the connection as cut), or recognise it
/// with [`Cut::is`] to write a last word first.
///
/// ```
/// use tandem::connection::Cut;
///
/// let err = std::io::Error::from(Cut);
/// assert!(Cut::is(&err));
/// assert!(err.get_ref().is_some_and(|inner| inner.is::<Cut>()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server is shutting down: connection cut at the end of the shutdown timeout")]
pub struct Cut;

impl Cut {
    /// True if `err` is the cut's, as the connection returned it.
    pub fn is(err: &io::Error) -> bool {
        err.get_ref().is_some_and(|inner| inner.is::<Cut>())
    }
}

impl From<Cut> for io::Error {
    fn from(cut: Cut) -> Self {
        io::Error::other(cut)
    }
}

/// The error a connection's reads and writes return when the idle rule
/// closes it, inside an [`io::Error`] of kind `TimedOut`: its peer was
/// silent for [`ServerConfig::idle_timeout`](crate::ServerConfig::idle_timeout),
/// moved fewer bytes than [`min_rate`](crate::ServerConfig::min_rate) asks for, or stopped reading what it was
/// sent; or the server shed it to make room. The server counts it as
/// `idle_timeout` (or `shed`); a `TimedOut` error of any other origin, a
/// handler's own backend timing out, counts as `error`.
///
/// ```
/// use tandem::connection::IdleTimeout;
///
/// let err = std::io::Error::from(IdleTimeout);
/// assert!(IdleTimeout::is(&err));
/// assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
/// let own = std::io::Error::from(std::io::ErrorKind::TimedOut);
/// assert!(!IdleTimeout::is(&own));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the peer broke the idle rule (ServerConfig::idle_timeout, min_rate): silent, too slow, or not reading what it was sent"
)]
pub struct IdleTimeout;

impl IdleTimeout {
    /// True if `err` is the idle rule's, as the connection returned it.
    pub fn is(err: &io::Error) -> bool {
        err.get_ref().is_some_and(|inner| inner.is::<IdleTimeout>())
    }
}

impl From<IdleTimeout> for io::Error {
    fn from(idle: IdleTimeout) -> Self {
        io::Error::new(io::ErrorKind::TimedOut, idle)
    }
}

impl Connection {
    /// Wraps a socket registered with the current runtime, watched by the
    /// server's `sweep` from now on.
    pub(crate) fn new(transport: Transport, peer: SocketAddr, sweep: &Arc<Sweep>) -> Self {
        Connection {
            transport,
            peer,
            watched: sweep.watch(),
        }
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The TCP socket's options and addresses. Only those: data goes
    /// through the connection, so that nothing reads or writes past TLS,
    /// or past the byte counts.
    pub fn socket(&self) -> SocketOptions<'_> {
        SocketOptions(self.transport.tcp())
    }

    /// The TLS session (version, cipher suite, ALPN protocol), when the
    /// server speaks TLS.
    #[cfg(feature = "tls")]
    pub fn tls(&self) -> Option<&rustls::CommonState> {
        self.transport.tls()
    }

    /// Reads what the stream has without waiting, as
    /// [`TcpStream::try_read`]: `Ok(0)` is end-of-file (with TLS, the peer's
    /// close_notify), `WouldBlock` means the readiness was stale. Counted
    /// in the metrics, as activity and towards the minimum rate.
    pub fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.transport.try_read(buf)?;
        self.received(read);
        Ok(read)
    }

    /// Counts `bytes` read: in the metrics, as activity and towards the
    /// minimum rate. Every read of the connection goes through here...
    fn received(&self, bytes: usize) {
        self.watched.received(bytes);
        tally::received(bytes);
    }

    /// ...and every write through here.
    fn sent(&self, bytes: usize) {
        self.watched.sent(bytes);
        tally::sent(bytes);
    }

    /// Waits for bytes and reads them into `buf`: `Ok(0)` is the end of the
    /// stream (with TLS, the peer's close_notify). A wait that the idle
    /// rule ends is an [`IdleTimeout`] error (of kind `TimedOut`), and one
    /// the shutdown cut ends a [`Cut`] error, which the server counts as
    /// such, so a handler can pass either on with `?`. Counted as [`try_read`](Self::try_read) counts. The simple
    /// way to read; [`ready`](Self::ready) and `try_read` are the way to
    /// hold no buffer while waiting.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        tokio::io::AsyncReadExt::read(self, buf).await
    }

    /// The byte stream, plain or TLS. Bytes moved through it directly are
    /// counted neither in the metrics nor as activity unless the handler
    /// reports them with [`record`](Self::record), and its waits do not end
    /// at the idle rule or the cut: for tokio's I/O helpers, use the
    /// connection itself, whose `AsyncRead` and `AsyncWrite` do both.
    pub fn stream_mut(&mut self) -> &mut Transport {
        &mut self.transport
    }

    /// Reports bytes moved through [`stream_mut`](Self::stream_mut):
    /// counted in the metrics, as activity and towards the minimum rate, as
    /// those of `try_read` and `write_all` are.
    pub fn record(&mut self, received: usize, sent: usize) {
        self.received(received);
        self.sent(sent);
    }

    /// Tells the idle rule that the handler is busy for this connection, or
    /// no longer: working or waiting on a backend (a compute job, a
    /// database, another service), not the peer being silent. While busy,
    /// the connection is not idle, however long the work takes: neither its
    /// silence nor its minimum rate is counted, and both count afresh from
    /// when it stops being busy. The shutdown cut still ends it.
    ///
    /// Set it back to `false` when the wait ends, or the idle rule never
    /// closes the connection; a handler that returns need not. The echo
    /// sets it while a chunk's work is queued or running on the compute
    /// runtime. It costs two plain stores: call it around a wait, not for
    /// every message.
    ///
    /// ```
    /// # async fn ask_backend() {}
    /// async fn answer(conn: &mut tandem::Connection) -> std::io::Result<()> {
    ///     conn.set_busy(true);
    ///     let answer = ask_backend().await;
    ///     conn.set_busy(false);
    ///     # let _ = answer;
    ///     conn.write_all(b"done\n").await
    /// }
    /// ```
    pub fn set_busy(&self, busy: bool) {
        self.watched.set_busy(busy);
    }

    /// Waits until the socket is readable, the idle rule says the
    /// connection is idle, or the server cuts the connection at the end of
    /// a shutdown. Holds no data buffer while it waits, and registers one
    /// waiter, the socket's: the sweep wakes the task for the other two.
    pub async fn ready(&mut self) -> io::Result<Event> {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await
    }

    /// [`ready`](Self::ready) as a poll, for handlers written as futures
    /// of their own: the wait takes no state at all.
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Event>> {
        // `poll_readable`, `try_read` and `try_write` never spend tokio's
        // cooperative budget, so a peer that keeps its socket readable and
        // writable would keep this task running, and its worker thread (a
        // whole shard, or the accept loop in `single`) from everything
        // else, for as long as it streams. One budget unit per chunk makes
        // the task yield every 128 chunks, as tokio's own I/O does; a wait
        // that stays pending gives its unit back.
        let budget = ready!(tokio::task::coop::poll_proceed(cx));
        // The verdicts first, so that a peer that never stops sending is
        // still cut, and still judged; data first after that.
        let (transport, watched) = (&self.transport, &*self.watched);
        let waited = ready!(interruptible(watched, cx, |cx| {
            transport.poll_readable(cx)
        }));
        budget.made_progress();
        Poll::Ready(match waited {
            Ok(readable) => readable.map(|()| Event::Readable),
            Err(Interrupted::Idle) => Ok(Event::IdleTimeout),
            Err(Interrupted::Cut) => Ok(Event::Cut),
        })
    }

    /// Writes all of `buf` (with TLS, all the way to the socket). A peer
    /// that stops reading is held to the idle rule while the write waits:
    /// the idle timeout counts from the last byte the socket took, and the
    /// minimum rate still applies. When the rule says idle, the write fails
    /// with `TimedOut`. Every byte the stream takes is counted in the
    /// metrics, as activity and towards the minimum rate.
    pub async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut written = 0;
        std::future::poll_fn(|cx| self.poll_write_all(cx, buf, &mut written)).await
    }

    /// [`write_all`](Self::write_all) as a poll, for handlers written as
    /// futures of their own: `written` counts the bytes of `buf` already
    /// taken, from 0, across the calls that write one `buf`.
    pub fn poll_write_all(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
        written: &mut usize,
    ) -> Poll<io::Result<()>> {
        while *written < buf.len() {
            match self.transport.try_write(&buf[*written..]) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.sent(n);
                    *written += n;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.poll_writable(cx))?;
                }
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
        // TLS: what rustls still holds, encrypted. Each wait that ends is
        // the peer taking bytes, so it counts as activity.
        while let Err(err) = self.transport.try_flush() {
            if err.kind() != io::ErrorKind::WouldBlock {
                return Poll::Ready(Err(err));
            }
            ready!(self.poll_writable(cx))?;
            self.watched.touched();
        }
        Poll::Ready(Ok(()))
    }

    /// Half-closes the connection: everything written so far, then (with
    /// TLS) a close_notify, then the FIN. The peer may go on sending; the
    /// handler may go on reading. Waits, under the idle rule as
    /// [`write_all`](Self::write_all) does, only if the socket is full.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        // tokio's `AsyncWrite::poll_shutdown`, below: a handler written as a
        // future of its own polls that.
        std::future::poll_fn(|cx| AsyncWrite::poll_shutdown(Pin::new(&mut *self), cx)).await
    }

    /// Polls for room in the socket, or for the idle rule to say the peer
    /// has stopped reading (`TimedOut`). The cut does not end this wait: a
    /// write in progress at the cut finishes, or is dropped with the
    /// runtime after the server's grace.
    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        unless_idle(&self.watched, cx, |cx| self.transport.poll_writable(cx))
    }

    /// True if the sweep shed the connection to make room, rather than
    /// finding it idle.
    pub(crate) fn was_shed(&self) -> bool {
        self.watched.is_shed()
    }

    /// True if the peer has not acknowledged all that was written to the
    /// socket: bytes it is not reading, or still on their way.
    pub(crate) fn owes(&self) -> bool {
        let mut queued: libc::c_int = 0;
        // SAFETY: SIOCOUTQ (TIOCOUTQ on Linux) writes one int, the bytes
        // in the socket's send queue not yet acknowledged, to `queued`;
        // the descriptor is the connection's, open while it is borrowed.
        let status = unsafe {
            libc::ioctl(
                self.transport.tcp().as_raw_fd(),
                libc::TIOCOUTQ,
                std::ptr::from_mut(&mut queued),
            )
        };
        status == 0 && queued > 0
    }

    /// Makes the coming close abortive: a reset, and the kernel drops the
    /// send queue at once, instead of a FIN queued behind bytes the peer
    /// is not taking, which keeps the socket, and its queue, orphaned.
    pub(crate) fn abort_on_close(&self) -> io::Result<()> {
        socket2::SockRef::from(self.transport.tcp()).set_linger(Some(Duration::ZERO))
    }

    /// Reads and discards what the peer still sends, until it closes or
    /// `limit` passes. Called after the server's FIN on a connection it
    /// closes first: closing a socket with unread data makes the kernel send
    /// a reset, which can destroy echo bytes still on their way to the peer.
    /// A peer that has still not taken everything after the linger is not
    /// reading it: the server then resets the connection after all.
    pub(crate) async fn linger(&mut self, limit: Duration) {
        let mut scratch = Buffer::lease(LINGER_SCRATCH);
        let drain = async {
            loop {
                // The raw socket, even under TLS: these bytes are thrown
                // away, and the session is over.
                let tcp = self.transport.tcp();
                if tcp.readable().await.is_err() {
                    return;
                }
                match tcp.try_read(&mut scratch) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        };
        let _ = tokio::time::timeout(limit, drain).await;
    }
}

/// Size of the buffer that lingering reads discard into.
const LINGER_SCRATCH: usize = 4096;

/// A connection still open when the shutdown grace runs out is dropped
/// with its runtime, in the middle of a write to a peer that is not
/// reading, and the server's own close path never runs for it: reset here
/// if the peer still owes, so that its echo does not stay in the kernel
/// as an orphan. Only cut connections are looked at (one `ioctl` each, at
/// shutdown); for the others the close path has decided already.
impl Drop for Connection {
    fn drop(&mut self) {
        if self.watched.is_cut() && self.owes() {
            let _ = self.abort_on_close();
        }
    }
}

/// tokio's `AsyncRead`, for its helpers (`copy`, `read_exact`, codecs):
/// bytes are counted as `try_read` counts them, and a read waiting for the
/// peer ends with an error when the idle rule says idle ([`IdleTimeout`]) or
/// the server cuts the connection ([`Cut`]); the server counts either as it
/// counts the events of [`Connection::ready`].
impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let (transport, watched) = (&mut this.transport, &*this.watched);
        let polled = interruptible(watched, cx, |cx| Pin::new(transport).poll_read(cx, buf));
        match polled {
            Poll::Ready(Ok(Ok(()))) => {
                this.received(buf.filled().len() - before);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(Err(err))) => Poll::Ready(Err(err)),
            Poll::Ready(Err(verdict)) => Poll::Ready(Err(verdict.error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// tokio's `AsyncWrite`, counted as [`Connection::write_all`] counts: a
/// write waiting for a peer that does not read ends with `TimedOut` when
/// the idle rule says so. The cut ends no write, as with `write_all`.
impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let (transport, watched) = (&mut this.transport, &*this.watched);
        let polled = unless_idle(watched, cx, |cx| Pin::new(transport).poll_write(cx, buf));
        if let Poll::Ready(Ok(written)) = polled {
            this.sent(written);
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let (transport, watched) = (&mut this.transport, &*this.watched);
        unless_idle(watched, cx, |cx| Pin::new(transport).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let (transport, watched) = (&mut this.transport, &*this.watched);
        unless_idle(watched, cx, |cx| Pin::new(transport).poll_shutdown(cx))
    }
}

/// Polls the socket with `poll` unless the sweep has ruled on the
/// connection, or rules meanwhile: the verdicts are read before the poll,
/// and again after the task's waker has gone to the sweep, so that a
/// verdict given between the two looks is never missed. The cut before
/// the idle rule, as the cut owes the peer a clean close. Every wait of a
/// read goes through here.
fn interruptible<T>(
    watched: &Watched,
    cx: &mut Context<'_>,
    poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
) -> Poll<Result<T, Interrupted>> {
    let verdict = || {
        if watched.is_cut() {
            Some(Interrupted::Cut)
        } else if watched.is_idle() {
            Some(Interrupted::Idle)
        } else {
            None
        }
    };
    if let Some(verdict) = verdict() {
        return Poll::Ready(Err(verdict));
    }
    if let Poll::Ready(ready) = poll(cx) {
        return Poll::Ready(Ok(ready));
    }
    watched.register(cx.waker());
    match verdict() {
        Some(verdict) => Poll::Ready(Err(verdict)),
        None => Poll::Pending,
    }
}

/// The write side of `interruptible`: only the idle rule ends a write's
/// wait (a peer that stops reading), and a socket with room is written to
/// whatever the rule says; the cut lets a write in progress finish. Every
/// wait of a write goes through here.
fn unless_idle<T>(
    watched: &Watched,
    cx: &mut Context<'_>,
    poll: impl FnOnce(&mut Context<'_>) -> Poll<io::Result<T>>,
) -> Poll<io::Result<T>> {
    let polled = poll(cx);
    if polled.is_pending() {
        watched.register(cx.waker());
        if watched.is_idle() {
            return Poll::Ready(Err(IdleTimeout.into()));
        }
    }
    polled
}
