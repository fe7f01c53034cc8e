//! The admin endpoint: metrics, health and readiness over HTTP, served by a
//! runtime of its own.
//!
//! The admin runtime has one thread and serves nothing else, so a scrape or
//! a health check is answered while the workers are saturated, and it lives
//! until the serving runtimes are gone, so the drain after a shutdown
//! signal stays observable. It also samples every runtime's metrics once a
//! second (see [`crate::metrics`]).
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
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::ServerError;
use super::acceptor::{AcceptErrorAction, classify};
use crate::metrics::Metrics;

/// Admin connections served at once: scrapers and probes, a handful at
/// most. Beyond this, new ones wait in the listen backlog.
const MAX_CONNECTIONS: usize = 32;
/// A client has this long to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest life of one admin connection, keep-alive included: a scraper
/// reconnects, a client that trickles or never reads is let go.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Pause after an accept error that is not about one connection.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long the stopping admin runtime waits for its blocking threads.
const STOP_TIMEOUT: Duration = Duration::from_secs(1);

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
        super::threads::ensure_available(1, "tandem-admin")?;
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
            runtime.shutdown_timeout(STOP_TIMEOUT);
        }
    }
}

async fn serve(listener: TcpListener, routes: Arc<Routes>) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // The permit first, as for echo connections: a flood of admin
        // clients waits in the backlog instead of in memory.
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
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
        let routes = routes.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|request| {
                let response = routes.respond(&request);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => debug!(%peer, cause = %err, "admin connection failed"),
                Err(_) => debug!(%peer, "admin connection reached its lifetime; closed"),
            }
            drop(permit);
        });
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
