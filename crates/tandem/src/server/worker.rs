//! The serving side: what runs on the worker runtime or a shard.
//!
//! It owns the connection task: registering the handed-off socket with the
//! reactor of the runtime it runs on, setting socket options, reading the
//! PROXY header and running the TLS handshake when they are asked for,
//! running the handler and accounting for how the connection ended. The acceptor never
//! does any of this; it only accepts and hands over.
//!
//! Whatever the client does (resets, half-closes, vanishes, sends a bad
//! header or handshake), the errors end this one task and are counted by
//! reason; nothing here unwraps network input (invariant 4). A handler
//! that panics ends its own connection the same way, counted as `panic`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, error, trace, warn};

use super::admission::{Accepted, Admission};
use super::config::ServerConfig;
#[cfg(feature = "proxy-protocol")]
use super::per_ip;
use super::per_ip::PerIpLimit;
#[cfg(feature = "proxy-protocol")]
use super::proxy_header;
use super::stop_times::StopTimes;
use super::tracker::TaskTracker;
use crate::connection::{Connection, Cut, IdleTimeout};
use crate::handler::{Caught, Close, Handler, Panicked};
#[cfg(feature = "proxy-protocol")]
use crate::ip_ranges::IpRanges;
#[cfg(feature = "proxy-protocol")]
use crate::metrics::ProxyHeaderError;
use crate::metrics::{CloseReason, Metrics};
use crate::sweep::{IdleRule, Sweep};
#[cfg(feature = "tls")]
use crate::tls::ServerTls;
use crate::transport::Transport;

/// State shared by every connection task of one server.
pub(crate) struct Serving<H> {
    pub(crate) handler: H,
    /// The idle rule and the cut, for every connection.
    pub(crate) sweep: Arc<Sweep>,
    pub(crate) nodelay: bool,
    /// `--proxy-protocol`: the header timeout, when a header is required.
    pub(crate) proxy_protocol: Option<Duration>,
    /// `--proxy-protocol-from`: the peers allowed to send a header.
    #[cfg(feature = "proxy-protocol")]
    pub(crate) proxy_protocol_from: Option<IpRanges>,
    /// `--tls-cert`/`--tls-key`: the handshake, after the PROXY header.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<ServerTls>,
    /// `--max-connections-per-ip`: counted by the acceptor, or here once
    /// the PROXY header has named the client.
    pub(crate) per_ip: Option<Arc<PerIpLimit>>,
    /// Every connection task and hand-off receiver, so that shutdown can
    /// wait for them wherever they run.
    pub(crate) tracker: TaskTracker,
    /// Connections admitted and not yet closed, queued ones included.
    pub(crate) active: Arc<AtomicUsize>,
    /// Connections closed by the server at the end of the shutdown timeout.
    pub(crate) cut_count: AtomicUsize,
    /// Connections handed off and not yet taken off their queue.
    pub(crate) queued: Arc<AtomicUsize>,
    /// Where connections are counted.
    pub(crate) metrics: Metrics,
    /// How long a connection cut at shutdown keeps reading (and
    /// discarding) after its FIN, so that the peer can take the last echo
    /// before the close (`StopTimes::linger`).
    pub(crate) linger: Duration,
}

impl<H> Serving<H> {
    /// The serving side of a server configured by `config`, running
    /// `handler`, with `tls` if it speaks TLS.
    pub(crate) fn new(
        config: &ServerConfig,
        handler: H,
        #[cfg(feature = "tls")] tls: Option<ServerTls>,
    ) -> Self {
        let stop_times = StopTimes {
            drain: config.shutdown_timeout,
            grace: config.shutdown_grace,
        };
        Serving {
            handler,
            sweep: Arc::new(Sweep::new(
                config
                    .idle_timeout
                    .map(|timeout| IdleRule::new(timeout, config.min_rate)),
            )),
            nodelay: config.nodelay,
            proxy_protocol: config.proxy_protocol,
            #[cfg(feature = "proxy-protocol")]
            proxy_protocol_from: config.proxy_protocol_from.clone(),
            #[cfg(feature = "tls")]
            tls,
            per_ip: config.max_connections_per_ip.map(PerIpLimit::new),
            tracker: TaskTracker::new(),
            active: Arc::new(AtomicUsize::new(0)),
            cut_count: AtomicUsize::new(0),
            linger: stop_times.linger(),
            queued: Arc::new(AtomicUsize::new(0)),
            metrics: Metrics::new(),
        }
    }
}

/// Takes connections off a hand-off queue and spawns a task for each on the
/// current runtime, until the acceptor side is gone and the queue is empty.
pub(crate) async fn receive_handoffs<H: Handler>(
    mut queue: mpsc::Receiver<Box<Accepted>>,
    serving: Arc<Serving<H>>,
) {
    while let Some(accepted) = queue.recv().await {
        serving.queued.fetch_sub(1, Ordering::Relaxed);
        serving
            .tracker
            .spawn(serve_connection(serving.clone(), accepted));
    }
}

/// What a connection task keeps on the heap while its handler runs: the
/// connection, and its claim on the server's capacity, released after the
/// connection closes (fields drop in order). One allocation beside the
/// task, so that the task itself holds a pointer and the handler's state.
struct Served {
    conn: Connection,
    #[expect(dead_code, reason = "held for its Drop")]
    admission: Admission,
}

/// Serves one connection on the current runtime, from registration to close.
///
/// An idle connection costs the process what this task holds while its
/// handler waits, and it is written to hold little (see the size test
/// below). The floor, from tokio: a task is a cell of this future with
/// tokio's header and trailer, padded to a multiple of 128 bytes, so any
/// future past about 32 bytes takes 256, and one past about 160 takes
/// 384; and every registered socket has a 256-byte `ScheduledIo` in the
/// reactor. Above the floor: the `Served` box, and the connection's record
/// in the sweep.
pub(crate) async fn serve_connection<H: Handler>(
    serving: Arc<Serving<H>>,
    accepted: Box<Accepted>,
) {
    // Boxed, as the linger at the end: a task is as large as the largest
    // state its future passes through, for its whole life, and an idle
    // connection should not carry room for the PROXY header and the TLS
    // handshake it went through once, or never does.
    let Some(mut served) = Box::pin(prepare(&serving, accepted)).await else {
        return;
    };
    let outcome = Caught::new(serving.handler.serve(&mut served.conn)).await;
    finish(&serving, served, outcome).await;
}

/// Ends a served connection: the FIN (and close_notify) the handler did not
/// send when a rule closed it, the linger of a cut connection, then the
/// close itself, its count and its log line.
///
/// A connection a rule closes (idle, shed, or cut after its linger) while
/// its peer has not taken all it was sent closes with a reset instead of
/// a FIN: the kernel would otherwise keep the socket as an orphan, with
/// its send queue, up to megabytes of echo, behind a FIN the peer never
/// reads up to, for minutes. A clean close (the peer's EOF, all echo taken)
/// stays a FIN.
async fn finish<H: Handler>(
    serving: &Serving<H>,
    mut served: Box<Served>,
    outcome: std::io::Result<Close>,
) {
    let conn = &mut served.conn;
    let mut reason = close_reason(&outcome);
    if reason == CloseReason::IdleTimeout && conn.was_shed() {
        reason = CloseReason::Shed;
    }
    // Closed by a rule the handler did not close on itself: an idle
    // timeout, or a cut met as an error by a handler on tokio's I/O
    // helpers. The FIN, with TLS a close_notify ahead of it, so that the
    // client sees a clean end; best effort, never waiting on a peer that
    // may not be reading. Unless the peer has not taken all it was sent:
    // then a reset (above), and no FIN.
    let fin_owed = matches!(outcome, Ok(Close::IdleTimeout))
        || (outcome.is_err() && reason == CloseReason::Cut);
    let mut abort = matches!(reason, CloseReason::IdleTimeout | CloseReason::Shed) && conn.owes();
    if !abort && fin_owed {
        let _ = conn.stream_mut().try_shutdown();
    }
    if reason == CloseReason::Cut {
        // Boxed: only cut connections pay for this state, instead of every
        // connection's task carrying it.
        Box::pin(conn.linger(serving.linger)).await;
        // Its peer had the linger to take the last echo; one that has not
        // is not reading it.
        abort = conn.owes();
        // Counted once the linger is over: a connection still lingering
        // when the server's grace runs out is counted among those dropped
        // instead, not twice.
        serving.cut_count.fetch_add(1, Ordering::Relaxed);
    }
    if abort {
        match conn.abort_on_close() {
            Ok(()) => serving.metrics.connection_aborted(),
            Err(err) => {
                debug!(peer = %conn.peer_addr(), cause = %err, "cannot set SO_LINGER 0; closing with a FIN")
            }
        }
    }
    let peer = conn.peer_addr();
    // The connection closes, then its claim goes.
    drop(served);
    serving.metrics.connection_closed(reason);
    log_close(peer, &outcome, reason, abort);
}

/// Registers the socket with the current runtime's reactor, reads the PROXY
/// header and runs the TLS handshake where the server asks for them, and
/// returns the connection ready for its handler, holding the place its
/// client takes under `--max-connections-per-ip` once the header has named
/// it; `None` if the connection was closed unserved (and counted so).
/// The client a load balancer's PROXY header names (`peer` itself for a
/// `LOCAL` header), or why there is none to trust.
#[cfg(feature = "proxy-protocol")]
async fn read_proxy_header<H>(
    serving: &Serving<H>,
    stream: &mut TcpStream,
    peer: SocketAddr,
    header_timeout: Duration,
) -> Result<SocketAddr, (ProxyHeaderError, String)> {
    // Only a trusted balancer may name the client: anyone else could pick
    // an address to dodge its own limit or use up another's, so its header
    // is never read.
    let trusted = serving
        .proxy_protocol_from
        .as_ref()
        .is_none_or(|trusted| trusted.contains(peer.ip()));
    if !trusted {
        return Err((
            ProxyHeaderError::Untrusted,
            "the peer is not trusted to send one".to_owned(),
        ));
    }
    let header = Box::pin(tokio::time::timeout(
        header_timeout,
        proxy_header::read(stream),
    ))
    .await;
    match header {
        Ok(Ok(client)) => {
            trace!(balancer = %peer, ?client, "PROXY header read");
            Ok(client.unwrap_or(peer))
        }
        Ok(Err(err)) => Err((err.kind(), err.to_string())),
        Err(_) => Err((
            ProxyHeaderError::Timeout,
            "no PROXY header within the timeout".to_owned(),
        )),
    }
}

// Without the PROXY header there is no other peer to take its place.
#[cfg_attr(not(feature = "proxy-protocol"), allow(unused_mut))]
async fn prepare<H: Handler>(serving: &Serving<H>, accepted: Box<Accepted>) -> Option<Box<Served>> {
    let Accepted {
        stream,
        mut peer,
        accepted_at,
        mut admission,
    } = *accepted;
    // Registering here, not in the acceptor, binds the socket to this
    // runtime's reactor (invariant 1).
    let mut stream = match TcpStream::from_std(stream) {
        Ok(stream) => stream,
        Err(err) => {
            warn!(%peer, cause = %err, "cannot register connection with the serving runtime");
            serving.metrics.connection_rejected();
            return None;
        }
    };
    let waited = accepted_at.elapsed();
    trace!(%peer, waited_us = waited.as_micros(), "connection handed off");
    serving.metrics.handoff_waited(waited);
    if serving.nodelay
        && let Err(err) = stream.set_nodelay(true)
    {
        debug!(%peer, cause = %err, "cannot set TCP_NODELAY");
    }
    // Behind a load balancer: the header first, then the client it names
    // is the peer, and is counted against its limit.
    #[cfg(feature = "proxy-protocol")]
    if let Some(header_timeout) = serving.proxy_protocol {
        peer = match read_proxy_header(serving, &mut stream, peer, header_timeout).await {
            Ok(client) => client,
            Err((kind, why)) => {
                debug!(%peer, %kind, why, "closing a connection without a valid PROXY header");
                serving.metrics.proxy_header_error(kind);
                serving.metrics.connection_rejected();
                return None;
            }
        };
        match per_ip::admit(serving.per_ip.as_ref(), peer, &serving.metrics) {
            Ok(place) => admission.per_ip = place,
            Err(()) => return None,
        }
    }
    // The PROXY header travels in the clear, ahead of the TLS handshake,
    // as a load balancer passing TLS through sends it.
    #[cfg(feature = "tls")]
    let transport = match &serving.tls {
        None => Transport::Tcp(stream),
        Some(tls) => match tls.accept(stream).await {
            Ok(transport) => transport,
            Err(err) => {
                debug!(%peer, kind = %err.kind(), cause = %err, "closing a connection whose TLS handshake failed");
                serving.metrics.tls_handshake_error(err.kind());
                serving.metrics.connection_rejected();
                return None;
            }
        },
    };
    #[cfg(not(feature = "tls"))]
    let transport = Transport::Tcp(stream);
    let conn = Connection::new(transport, peer, &serving.sweep);
    Some(Box::new(Served { conn, admission }))
}

/// How an outcome is counted in `tandem_connections_closed_total`: the
/// server's own errors (the idle rule's, the cut's, a panic) by their
/// type, whatever their kind, so that a handler's own `TimedOut` is not
/// taken for the idle rule.
fn close_reason(outcome: &std::io::Result<Close>) -> CloseReason {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    match outcome {
        Ok(Close::Eof) => CloseReason::Eof,
        Ok(Close::IdleTimeout) => CloseReason::IdleTimeout,
        // A read or write whose peer broke the idle rule.
        Err(err) if IdleTimeout::is(err) => CloseReason::IdleTimeout,
        Ok(Close::Cut) => CloseReason::Cut,
        // The cut, met by a handler reading through `AsyncRead`.
        Err(err) if Cut::is(err) => CloseReason::Cut,
        Ok(Close::Protocol) => CloseReason::Protocol,
        Ok(Close::Handler(_)) => CloseReason::Handler,
        Err(err) if Panicked::is(err) => CloseReason::Panic,
        // UnexpectedEof: a TLS peer that closed its TCP connection without
        // a close_notify, gone as abruptly as one that resets.
        Err(err)
            if matches!(
                err.kind(),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
            ) =>
        {
            CloseReason::Reset
        }
        Err(_) => CloseReason::Error,
    }
}

fn log_close(peer: SocketAddr, outcome: &std::io::Result<Close>, reason: CloseReason, reset: bool) {
    match outcome {
        Ok(Close::Eof) => debug!(%peer, "connection closed by peer"),
        _ if reason == CloseReason::Shed => {
            debug!(%peer, reset, "connection shed to make room for a waiting client");
        }
        Ok(Close::IdleTimeout) => debug!(%peer, reset, "connection closed after idle timeout"),
        Ok(Close::Cut) => debug!(%peer, reset, "connection cut at shutdown"),
        Ok(Close::Protocol) => debug!(%peer, "connection closed by the handler: protocol error"),
        Ok(Close::Handler(why)) => debug!(%peer, why, "connection closed by the handler"),
        // A bug in the handler, not the peer's doing: error level.
        Err(err) if reason == CloseReason::Panic => {
            error!(%peer, panic = %err, "handler panicked; its connection closed");
        }
        Err(err) => debug!(%peer, reset, cause = %err, "connection ended with error"),
    }
}

/// Connections admitted and not yet closed.
pub(crate) fn active(serving: &Serving<impl Handler>) -> usize {
    serving.active.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Echo;

    /// The size of the future an async fn returns, from the fn alone.
    fn size_of_future<F, Fut>(_: F) -> usize
    where
        F: FnOnce(Arc<Serving<Echo>>, Box<Accepted>) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// What an idle echo connection costs the process, and so what these
    /// bounds guard, byte by byte (about 750 bytes measured, BENCHMARKS.md):
    ///
    /// - its task, 256 bytes: a cell of this future with tokio's header
    ///   and trailer (about 96 bytes), padded to a multiple of 128. The
    ///   future is 120 bytes: 1,928 before the PROXY header, the TLS
    ///   handshake and the linger were boxed, 528 before the connection
    ///   and its admission moved to the heap (`Served`) and the echo was
    ///   written out as a future of its own (64 bytes, where the `async`
    ///   version took 176). Past about 160 bytes the cell takes 384.
    /// - the socket's `ScheduledIo` in the reactor, 256 bytes aligned to
    ///   128: tokio's, the floor of any registered socket;
    /// - `Served`, 128 bytes: the `Connection` (the stream, 40; the peer's
    ///   address, 32; its sweep record) and the
    ///   `Admission` (its permit, its place in the counts);
    /// - its sweep record (`Watched`), 64 bytes with the `Arc`'s counts
    ///   (48 and 16: its bytes in and out counted apart, in the 64-byte
    ///   chunk that held the 40-byte record with one count), and the
    ///   sweep's 32-byte entry, in a list with room to grow.
    #[test]
    fn an_idle_echo_connection_holds_a_256_byte_task_and_two_small_records() {
        let future = size_of_future(serve_connection::<Echo>);
        assert!(
            future <= 128,
            "serve_connection::<Echo> is {future} bytes: every connection's task grows with it"
        );
        let served = std::mem::size_of::<Served>();
        assert!(served <= 128, "Served is {served} bytes");
        let watched = std::mem::size_of::<crate::sweep::Watched>();
        assert!(watched <= 48, "Watched is {watched} bytes");
    }
}
