//! [`Server`]: the builder of a server, and [`Server::run`], its one call
//! from start to shutdown report. What a server is given before it starts
//! lives here; `start` starts it, `shutdown` stops it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use super::config::ServerConfig;
use super::error::ServerError;
use super::report::ShutdownReport;
use super::service::{self, ServiceContext};
use crate::compute::Compute;
use crate::handler::Handler;
#[cfg(feature = "tls")]
use crate::tls::ServerTls;

/// A server: the layout's runtimes, the limits and the shutdown sequence
/// around a [`Handler`].
#[derive(Debug)]
pub struct Server {
    pub(super) config: ServerConfig,
    #[cfg(feature = "admin")]
    pub(super) admin: Option<std::net::TcpListener>,
    /// Services to start on the serving runtime, in order.
    pub(super) services: Vec<service::Pending>,
    /// Where the UDP echo answers, when it is one of them.
    pub(super) udp_addr: Option<SocketAddr>,
    #[cfg(feature = "tls")]
    pub(super) tls: Option<ServerTls>,
    pub(super) compute: Compute,
}

impl Server {
    /// A server with the given configuration.
    pub fn new(config: ServerConfig) -> Self {
        Server {
            config,
            #[cfg(feature = "admin")]
            admin: None,
            services: Vec::new(),
            udp_addr: None,
            #[cfg(feature = "tls")]
            tls: None,
            compute: Compute::inline(),
        }
    }

    /// Reports `compute`, the handler's compute runtime (give the handler
    /// a clone), in the metrics: its runtime under `runtime="compute"`,
    /// its queue, the waits for a slot and the jobs' outcomes. Its threads
    /// are stopped after the serving runtimes, whose connections use them.
    pub fn compute(mut self, compute: Compute) -> Self {
        self.compute = compute;
        self
    }

    /// Speaks TLS on every connection: the handshake runs on the serving
    /// runtime (after the PROXY header, with `proxy_protocol`), within
    /// `tls`'s handshake timeout; a connection whose handshake fails is
    /// closed unserved and counted in `tandem_tls_handshake_errors_total`
    /// and as rejected. The handler then reads and writes plaintext
    /// through its [`Connection`](crate::Connection).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Runs a service on the serving runtime (the worker runtime, or the
    /// first shard) beside the connections. `start` is called there once
    /// the runtime is up, inside it, so that the sockets it registers
    /// belong to that runtime's reactor; it sets the service up, returning
    /// an error to fail [`Server::start`] with, or the task to run. The
    /// task should end when [`ServiceContext::stop`] is cancelled, at the
    /// start of the shutdown; the shutdown waits for it as for a
    /// connection, up to the shutdown timeout.
    ///
    /// ```
    /// use tandem::{Server, ServerConfig};
    ///
    /// // Logs once a second until the server stops.
    /// let server = Server::new(ServerConfig::default()).service("heartbeat", |context| {
    ///     let stop = context.stop().clone();
    ///     Ok(async move {
    ///         while tokio::time::timeout(std::time::Duration::from_secs(1), stop.cancelled())
    ///             .await
    ///             .is_err()
    ///         {
    ///             println!("alive");
    ///         }
    ///     })
    /// });
    /// ```
    pub fn service<F, Fut>(mut self, name: &'static str, start: F) -> Self
    where
        F: FnOnce(ServiceContext) -> io::Result<Fut> + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.services.push(service::Pending {
            name,
            start: Box::new(move |context| {
                start(context).map(|task| Box::pin(task) as service::Task)
            }),
        });
        self
    }

    /// Also echoes UDP datagrams (RFC 862) on `socket`, as a service on the
    /// serving runtime ([`Server::service`], named `udp`). Datagrams from
    /// the ports of reflecting services (7, 13, 17, 19, 37, and 0) and from
    /// the socket's own port are never answered, and each source address is
    /// answered at most `rate_limit` times a second. It stops when the
    /// shutdown begins.
    pub fn udp(mut self, socket: std::net::UdpSocket, rate_limit: u32) -> Self {
        self.udp_addr = socket.local_addr().ok();
        let rate_limit = rate_limit.max(1);
        self.service("udp", move |context| {
            service::udp::start(socket, rate_limit, context)
        })
    }

    /// Serves the server's [`Metrics`](crate::Metrics) and its health and readiness on
    /// `listener`, from a one-thread runtime of its own, so that it answers
    /// while the workers are saturated (and samples the runtimes there):
    /// - `GET /metrics`: the Prometheus text exposition of the metrics;
    /// - `GET /healthz`: 200 while the process runs;
    /// - `GET /readyz`: 200 while accepting, 503 from the moment
    ///   [`Running::wait`](super::Running::wait) begins the shutdown.
    ///
    /// The admin runtime stops last, after the serving runtimes.
    #[cfg(feature = "admin")]
    pub fn admin(mut self, listener: std::net::TcpListener) -> Self {
        self.admin = Some(listener);
        self
    }

    /// Serves `listener` (from [`bind`](super::bind)) with `handler` until `shutdown`
    /// completes, then shuts down gracefully and reports how it went:
    /// [`start`](Server::start) followed by [`wait`](super::Running::wait).
    ///
    /// `shutdown` is first polled on the server's own runtime, so it may
    /// use tokio's timers, signals and I/O, but it is built where `run` is
    /// called, outside any runtime: tokio's `sleep(d)` or `signal(..)`,
    /// which need one when they are created, go inside an async block,
    /// which creates them at its first poll:
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use tandem::{Echo, EchoConfig, Server, ServerConfig};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let listener = tandem::server::bind("127.0.0.1:7000".parse()?, 1024)?;
    /// let for_a_minute = async { tokio::time::sleep(Duration::from_secs(60)).await };
    /// Server::new(ServerConfig::default()).run(listener, Echo::new(EchoConfig::default()), for_a_minute)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn run<H: Handler>(
        self,
        listener: std::net::TcpListener,
        handler: H,
        shutdown: impl Future<Output = ()>,
    ) -> Result<ShutdownReport, ServerError> {
        self.start(listener, handler)?.wait(shutdown)
    }

    /// [`run`](Server::run) for a program that already has a tokio runtime
    /// (inside `#[tokio::main]`, or a service that runs other work): serves
    /// `listener` with `handler` until `shutdown` completes, then shuts
    /// down gracefully and reports how it went.
    ///
    /// What it needs from the caller: `shutdown` is polled on the caller's
    /// runtime, so it may use that runtime's timers, signals and channels,
    /// and it must be `Send` and `'static`. The server's own runtimes
    /// (acceptor, workers or shards, admin) are its own threads, as with
    /// [`run`](Server::run): the caller's runtime serves no connection. One
    /// more thread of the server's, `tandem-control`, starts them and waits
    /// on their shutdown, which blocks, so that no thread of the caller's
    /// runtime ever does. Dropping the returned future starts the same
    /// graceful shutdown, and lets it finish on that thread.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use tandem::{Echo, EchoConfig, Server, ServerConfig};
    /// #[tokio::main]
    /// async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     let listener = tandem::server::bind("127.0.0.1:7000".parse()?, 1024)?;
    ///     let for_a_minute = tokio::time::sleep(Duration::from_secs(60));
    ///     let echo = Echo::new(EchoConfig::default());
    ///     let report = Server::new(ServerConfig::default()).serve(listener, echo, for_a_minute).await?;
    ///     println!("drained {}, cut {}", report.drained, report.cut);
    ///     Ok(())
    /// }
    /// ```
    pub async fn serve<H: Handler>(
        self,
        listener: std::net::TcpListener,
        handler: H,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<ShutdownReport, ServerError> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (report, reported) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("tandem-control".to_owned())
            .spawn(move || {
                // The caller's sender dropped (its future dropped) stops
                // the server as its signal does.
                let stopping = async move {
                    let _ = stopped.await;
                };
                let _ = report.send(self.run(listener, handler, stopping));
            })
            .map_err(|cause| ServerError::Runtime {
                role: "tandem-control".to_owned(),
                cause,
            })?;
        let mut reported = std::pin::pin!(reported);
        let shutdown = std::pin::pin!(shutdown);
        // A server that fails to start, or whose acceptor fails, reports
        // before any shutdown.
        tokio::select! {
            ended = &mut reported => return control_ended(ended),
            () = shutdown => {}
        }
        let _ = stop.send(());
        control_ended(reported.await)
    }
}

/// The report sent by the `tandem-control` thread; an error if it ended
/// without one, which only a panic in it would do.
fn control_ended(
    ended: Result<Result<ShutdownReport, ServerError>, tokio::sync::oneshot::error::RecvError>,
) -> Result<ShutdownReport, ServerError> {
    ended.unwrap_or_else(|_| {
        Err(ServerError::Runtime {
            role: "tandem-control".to_owned(),
            cause: io::Error::other("the server's control thread ended without a report"),
        })
    })
}
