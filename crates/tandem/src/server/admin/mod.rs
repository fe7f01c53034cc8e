//! The admin endpoint: metrics, health and readiness over HTTP, served by a
//! runtime of its own.
//!
//! The admin runtime has one thread and serves nothing else, so a scrape or
//! a health check is answered while the workers are saturated, and it lives
//! until the serving runtimes are gone, so the drain after a shutdown
//! signal stays observable. It also samples every runtime's metrics once a
//! second (see [`crate::metrics`]).
//!
//! It answers while broken or hostile clients hold its port: every
//! connection is accepted at once and room made for it in the [`Pool`]
//! (see there), a request's headers must arrive within [`HEADER_TIMEOUT`],
//! and a response write that stalls for [`WRITE_TIMEOUT`] ends the
//! connection.
//!
//! Routes (`GET` or `HEAD`):
//! - `/metrics`: the Prometheus text exposition of [`Metrics`];
//! - `/healthz`: 200 while the process runs;
//! - `/readyz`: 200 while the server accepts, 503 before that and from the
//!   moment shutdown begins, so a load balancer stops sending new clients
//!   while live connections drain.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::time::Instant;
use tokio_io_timeout::TimeoutStream;
use tracing::{debug, warn};

use self::pool::{Held, Pool};
use super::acceptor::{AcceptErrorAction, classify};
use super::error::ServerError;
use super::stop_times::RUNTIME_STOP_TIMEOUT;
use crate::metrics::Metrics;

mod pool;

/// A client has this long to send a request's headers, counted from the
/// connection's start or the previous response: scrapers and probes send
/// theirs at once, and a kept-alive connection idle for longer is closed.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// A response write that makes no progress for this long closes the
/// connection: its client stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes of requests read ahead, or of responses queued, on one admin
/// connection (hyper's minimum is 8 KiB).
const MAX_BUFFERED: usize = 16 * 1024;
/// The send buffer of an admin connection, in bytes (the kernel doubles
/// it for its bookkeeping).
const SEND_BUFFER: usize = 64 * 1024;
/// Longest life of one admin connection, keep-alive included: a scraper
/// reconnects, a client that keeps a connection busy for ever is let go.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Pause after an accept error that is not about one connection.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The media type of the Prometheus text exposition format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether the server accepts new connections, as `/readyz` reports it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Readiness(Arc<AtomicU8>);

const STARTING: u8 = 0;
const ACCEPTING: u8 = 1;
const STOPPING: u8 = 2;

impl Readiness {
    /// The server accepts connections.
    pub(crate) fn accepting(&self) {
        // Never back from stopping to accepting.
        let _ = self
            .0
            .compare_exchange(STARTING, ACCEPTING, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Shutdown has begun: no new connections from now on.
    pub(crate) fn stopping(&self) {
        self.0.store(STOPPING, Ordering::Release);
    }

    /// `None` when ready, otherwise why not.
    fn not_ready(&self) -> Option<&'static str> {
        match self.0.load(Ordering::Acquire) {
            ACCEPTING => None,
            STARTING => Some("starting"),
            _ => Some("shutting down"),
        }
    }
}

/// A running admin endpoint.
pub(crate) struct Admin {
    runtime: Option<Runtime>,
    addr: SocketAddr,
}

impl Admin {
    /// Starts the admin runtime and serves `listener` on it.
    pub(crate) fn start(
        listener: std::net::TcpListener,
        metrics: Metrics,
        readiness: Readiness,
    ) -> Result<Admin, ServerError> {
        let runtime_error = |cause| ServerError::Runtime {
            role: "tandem-admin".to_owned(),
            cause,
        };
        let addr = listener.local_addr().map_err(runtime_error)?;
        super::threads::ensure_available(1, "tandem-admin").map_err(runtime_error)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tandem-admin")
            .enable_all()
            .build()
            .map_err(runtime_error)?;
        metrics.watch_runtime("admin", runtime.handle());
        listener.set_nonblocking(true).map_err(runtime_error)?;
        let listener = {
            let _entered = runtime.enter();
            TcpListener::from_std(listener).map_err(runtime_error)?
        };
        runtime.spawn(metrics.clone().tick_every_second());
        runtime.spawn(serve(listener, Arc::new(Routes { metrics, readiness })));
        Ok(Admin {
            runtime: Some(runtime),
            addr,
        })
    }

    /// The address the endpoint is bound to.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(RUNTIME_STOP_TIMEOUT);
        }
    }
}

/// Accepts admin connections for ever. Every connection is accepted at
/// once and room made for it in the [`Pool`], so a health check never
/// waits behind the clients that hold the slots.
async fn serve(listener: TcpListener, routes: Arc<Routes>) {
    let pool = Pool::new(pool::CAPACITY, pool::PER_CLIENT);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                if classify(&err).0 == AcceptErrorAction::BackOff {
                    warn!(cause = %err, "admin accept failed; pausing");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                continue;
            }
        };
        let held = pool.admit(peer.ip(), Instant::now());
        tokio::spawn(serve_connection(stream, peer, routes.clone(), held));
        // Lets the new connection read its request before the next accept,
        // so that a burst of newer connections cannot crowd it out first.
        tokio::task::yield_now().await;
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, routes: Arc<Routes>, held: Held) {
    // A fixed send buffer instead of one the kernel grows to megabytes:
    // a client that stops reading pins that much kernel memory, and the
    // write timeout starts only once it is full. A scrape fits many times.
    if let Err(err) = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER) {
        debug!(%peer, cause = %err, "cannot set the admin connection's send buffer");
    }
    let mut stream = TimeoutStream::new(stream);
    stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let service = hyper::service::service_fn(|request| {
        held.active(Instant::now());
        let response = routes.respond(&request);
        async move { Ok::<_, Infallible>(response) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        // A client that pipelines requests and reads no responses gets
        // this much queued before the server stops reading its requests:
        // a few renders of /metrics, not hyper's default of ~400 KB worth.
        .max_buf_size(MAX_BUFFERED)
        .serve_connection(TokioIo::new(Box::pin(stream)), service);
    tokio::select! {
        served = tokio::time::timeout(CONNECTION_LIFETIME, connection) => match served {
            Ok(Ok(())) => {}
            Ok(Err(err)) => debug!(%peer, cause = %err, "admin connection failed"),
            Err(_) => debug!(%peer, "admin connection reached its lifetime; closed"),
        },
        () = held.let_go() => {
            debug!(%peer, "admin connections full; closed the least recently active one");
        }
    }
}

struct Routes {
    metrics: Metrics,
    readiness: Readiness,
}

impl Routes {
    fn respond(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path();
        if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
            return text(
                StatusCode::NOT_FOUND,
                "not found; routes: /metrics /healthz /readyz\n".to_owned(),
            );
        }
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            let mut response = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed; use GET or HEAD\n".to_owned(),
            );
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        match path {
            "/metrics" => {
                let mut response = text(StatusCode::OK, self.metrics.render());
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
                response
            }
            "/readyz" => match self.readiness.not_ready() {
                None => text(StatusCode::OK, "ready\n".to_owned()),
                Some(why) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {why}\n"),
                ),
            },
            _ => text(StatusCode::OK, "ok\n".to_owned()),
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
