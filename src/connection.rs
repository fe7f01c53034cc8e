//! One accepted connection as a handler sees it: the socket, already
//! registered with the reactor of the runtime that serves it, plus the two
//! things that may end it from outside, the idle timeout and the shutdown
//! cut.
//!
//! Both are watched without work per message. The idle timer is armed once
//! and only re-armed when it fires early (activity merely records an
//! instant), and the cut is a `watch` channel whose waiters are spread over
//! several locks, so thousands of connections waiting on it do not contend.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::buffer::Buffer;
use crate::metrics::tally;

/// What [`Connection::ready`] woke up for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The socket has data, an end-of-file or an error to read.
    Readable,
    /// Nothing happened for the idle timeout.
    IdleTimeout,
    /// The server is shutting down and the shutdown timeout has passed: write
    /// back what is owed, then close.
    Shutdown,
}

/// An accepted connection and the limits it is served under.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    idle: Option<IdleTimer>,
    cut: watch::Receiver<bool>,
    cut_seen: bool,
    /// Whether bytes read and written are counted in the server's metrics.
    metered: bool,
}

#[derive(Debug)]
struct IdleTimer {
    timeout: Duration,
    last_activity: Instant,
    // Boxed so that the connection can move; allocated once per connection.
    sleep: Pin<Box<Sleep>>,
}

impl IdleTimer {
    fn new(timeout: Duration) -> Self {
        let now = Instant::now();
        IdleTimer {
            timeout,
            last_activity: now,
            sleep: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    /// Completes once a whole timeout has passed without activity.
    async fn expired(&mut self) {
        loop {
            self.sleep.as_mut().await;
            // `sleep` saturates far-future deadlines; so does this.
            let Some(deadline) = self.last_activity.checked_add(self.timeout) else {
                std::future::pending::<()>().await;
                return;
            };
            if Instant::now() >= deadline {
                return;
            }
            // There was activity since the timer was armed: re-arm it for the
            // new deadline. This is the only place the timer wheel is touched
            // after the first arming.
            self.sleep.as_mut().reset(deadline);
        }
    }
}

impl Connection {
    /// Wraps a socket registered with the current runtime. Must be called
    /// from inside that runtime (the idle timer registers with it too).
    pub(crate) fn new(
        stream: TcpStream,
        peer: SocketAddr,
        idle_timeout: Option<Duration>,
        cut: watch::Receiver<bool>,
        metered: bool,
    ) -> Self {
        Connection {
            stream,
            peer,
            idle: idle_timeout.map(IdleTimer::new),
            cut,
            cut_seen: false,
            metered,
        }
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The socket itself. Bytes moved through it directly rather than
    /// through [`try_read`](Self::try_read) and
    /// [`write_all`](Self::write_all) are not counted in the metrics.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Reads what the socket has without waiting, as
    /// [`TcpStream::try_read`]: `Ok(0)` is end-of-file, `WouldBlock` means
    /// the readiness was stale. Counted in the metrics.
    pub fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.stream.try_read(buf)?;
        if self.metered {
            tally::received(read);
        }
        Ok(read)
    }

    /// The socket, for the `AsyncRead`/`AsyncWrite` helpers (uncounted, as
    /// [`stream`](Self::stream)).
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Records progress, so that the idle timeout counts from now.
    pub fn touch(&mut self) {
        if let Some(idle) = &mut self.idle {
            idle.last_activity = Instant::now();
        }
    }

    /// Waits until the socket is readable, the idle timeout has passed, or
    /// the server cuts the connection at the end of a shutdown. Holds no data
    /// buffer while it waits.
    pub async fn ready(&mut self) -> io::Result<Event> {
        // Checked before the socket, so that a peer that never stops sending
        // is still cut. `has_changed` is one atomic load; an error means the
        // sender is gone, which only happens when the server is torn down.
        if self.cut_seen || self.cut.has_changed().unwrap_or(true) {
            self.cut_seen = true;
            return Ok(Event::Shutdown);
        }
        let idle = self.idle.as_mut();
        let has_idle = idle.is_some();
        tokio::select! {
            // Data first: a connection with bytes to echo is served before
            // its timers are looked at.
            biased;
            readable = self.stream.readable() => {
                readable?;
                Ok(Event::Readable)
            }
            _ = self.cut.changed() => {
                self.cut_seen = true;
                Ok(Event::Shutdown)
            }
            () = async { if let Some(idle) = idle { idle.expired().await } }, if has_idle => {
                Ok(Event::IdleTimeout)
            }
        }
    }

    /// Writes all of `buf`. The common case, a socket with room in its send
    /// buffer, costs no timer. A peer that stops reading is given the idle
    /// timeout to make room, counted afresh after every byte it takes; then
    /// the write fails with `TimedOut`.
    /// Every byte the socket takes is counted in the metrics.
    pub async fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        let timeout = self.idle.as_ref().map(|idle| idle.timeout);
        while !buf.is_empty() {
            match self.stream.try_write(buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    if self.metered {
                        tally::sent(n);
                    }
                    buf = &buf[n..];
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    let writable = self.stream.writable();
                    match timeout {
                        Some(timeout) => {
                            tokio::time::timeout(timeout, writable)
                                .await
                                .map_err(|_| {
                                    io::Error::new(
                                        io::ErrorKind::TimedOut,
                                        "peer did not read its echo within the idle timeout",
                                    )
                                })??
                        }
                        None => writable.await?,
                    }
                }
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Reads and discards what the peer still sends, until it closes or
    /// `limit` passes. Called after the server's FIN on a connection it
    /// closes first: closing a socket with unread data makes the kernel send
    /// a reset, which can destroy echo bytes still on their way to the peer.
    pub(crate) async fn linger(&mut self, limit: Duration) {
        let mut scratch = Buffer::lease(LINGER_SCRATCH);
        let drain = async {
            loop {
                if self.stream.readable().await.is_err() {
                    return;
                }
                match self.stream.try_read(&mut scratch) {
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
