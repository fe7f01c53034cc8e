//! The byte stream under a connection: plain TCP, or TLS over TCP.
//!
//! The echo path is driven by readiness: wait until the socket is readable,
//! read what it has without waiting, write back without waiting, and wait
//! for writability only when the socket is full. [`Transport`] gives both
//! kinds of stream that shape, so that everything built on it (the idle
//! rule, the shutdown cut, the cooperative budget, the metrics) is the same
//! code for both.
//!
//! The `try_` operations poll the stream's `poll_read`/`poll_write` once,
//! with a waker that does nothing, outside tokio's cooperative budget (as
//! tokio's own `try_read` is), and turn `Pending` into `WouldBlock`; the
//! waiting is then done on the TCP socket's readiness. For plain TCP that
//! is tokio's `poll_read`, not its `try_read`, for one system call a
//! message: after a read that does not fill the buffer, `poll_read` clears
//! the socket's readiness (on epoll a short read shows the socket drained),
//! so the next wait goes straight to the reactor, where `try_read` clears
//! it only on `WouldBlock` and so costs a second read, returning EAGAIN,
//! per message. `poll_write` does the same after a short write. TLS is
//! tokio-rustls, which offers only poll-based I/O anyway. A TLS stream can
//! be readable with a quiet socket, when rustls holds decrypted bytes or
//! the peer's close_notify that an earlier read left behind:
//! [`Transport::readable`] asks rustls first.
//!
//! Both kinds also implement `AsyncRead` and `AsyncWrite`, for handlers
//! that prefer tokio's I/O helpers.

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
#[cfg(feature = "tls")]
use tokio_rustls::TlsStream;

/// A connection's byte stream.
#[derive(Debug)]
pub enum Transport {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP, its handshake done. Boxed: the TLS state is large, and
    /// plain connections should not carry room for it.
    #[cfg(feature = "tls")]
    Tls(Box<TlsStream<TcpStream>>),
}

impl Transport {
    /// The TCP socket underneath. With TLS, bytes read or written on it
    /// directly bypass the encryption: inside the crate only, for the
    /// readiness waits, the linger and socket options.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Tcp(tcp) => tcp,
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.get_ref().0,
        }
    }

    /// The TLS session's state (version, cipher suite, ALPN protocol), if
    /// the stream is TLS.
    #[cfg(feature = "tls")]
    pub fn tls(&self) -> Option<&rustls::CommonState> {
        match self {
            Transport::Tcp(_) => None,
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => Some(tls.get_ref().1),
        }
    }

    /// Waits until a read may make progress: the socket is readable, or
    /// rustls already holds decrypted bytes or the peer's close_notify.
    pub async fn readable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_readable(cx)).await
    }

    /// Waits until the socket has room to write.
    pub async fn writable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_writable(cx)).await
    }

    /// [`readable`](Self::readable) as a poll: the waker goes to the
    /// socket's own reader slot, so that waiting takes no future state at
    /// all, where tokio's `readable()` future takes 152 bytes in every
    /// waiting connection's task. One task polls a connection, as the slot
    /// requires.
    pub(crate) fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Transport::Tcp(tcp) => tcp.poll_read_ready(cx),
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => {
                let (tcp, session) = tls.get_ref();
                // After the handshake, rustls wants to read exactly when it
                // holds neither plaintext nor a close_notify.
                if !session.wants_read() {
                    return Poll::Ready(Ok(()));
                }
                tcp.poll_read_ready(cx)
            }
        }
    }

    /// [`writable`](Self::writable) as a poll, as `poll_readable` is.
    pub(crate) fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp().poll_write_ready(cx)
    }

    /// Reads what is available without waiting: `Ok(0)` is the end of the
    /// stream (with TLS, the peer's close_notify), `WouldBlock` means
    /// nothing is available yet. With TLS, a peer that closes the TCP
    /// connection without a close_notify is an error (`UnexpectedEof`): the
    /// data may have been truncated.
    pub fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(buf);
        poll_now(|cx| Pin::new(&mut *self).poll_read(cx, &mut buf))?;
        Ok(buf.filled().len())
    }

    /// Writes what the stream takes without waiting; `WouldBlock` if it
    /// takes nothing. With TLS, bytes taken may still sit encrypted in
    /// rustls's buffer (at most 64 KiB): [`try_flush`](Self::try_flush)
    /// pushes them to the socket.
    pub fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        poll_now(|cx| Pin::new(&mut *self).poll_write(cx, buf))
    }

    /// Pushes what rustls holds to the socket without waiting;
    /// `WouldBlock` if the socket cannot take all of it. Plain TCP holds
    /// nothing back.
    pub fn try_flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Tcp(_) => Ok(()),
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => poll_now(|cx| Pin::new(&mut **tls).poll_flush(cx)),
        }
    }

    /// Closes the sending side without waiting: with TLS, a close_notify
    /// and what rustls holds, then the FIN. `WouldBlock` if the socket
    /// cannot take them yet; call again when it is writable.
    pub fn try_shutdown(&mut self) -> io::Result<()> {
        match self {
            Transport::Tcp(tcp) => shut_write(tcp),
            // tokio-rustls queues the close_notify once; later calls only
            // push what is left.
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => poll_now(|cx| Pin::new(&mut **tls).poll_shutdown(cx)),
        }
    }
}

/// Half-closes a TCP socket: the FIN, which never waits.
fn shut_write(tcp: &TcpStream) -> io::Result<()> {
    socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Write)
}

/// Polls `op` once, as a `try_` operation: with a waker that does nothing
/// (the caller waits on the socket's readiness instead), and outside the
/// cooperative budget, so that an exhausted budget is never mistaken for a
/// full or empty socket.
fn poll_now<T>(op: impl FnMut(&mut Context<'_>) -> Poll<io::Result<T>>) -> io::Result<T> {
    let once = pin!(tokio::task::coop::unconstrained(std::future::poll_fn(op)));
    match once.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result,
        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(tcp) => Pin::new(tcp).poll_read(cx, buf),
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => Pin::new(&mut **tls).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(tcp) => Pin::new(tcp).poll_write(cx, buf),
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => Pin::new(&mut **tls).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(tcp) => Pin::new(tcp).poll_flush(cx),
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => Pin::new(&mut **tls).poll_flush(cx),
        }
    }

    /// With TLS, sends a close_notify before the FIN.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(tcp) => Pin::new(tcp).poll_shutdown(cx),
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => Pin::new(&mut **tls).poll_shutdown(cx),
        }
    }
}
