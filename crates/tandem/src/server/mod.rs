//! The server machinery, generic over the [`Handler`] it runs.
//!
//! One file per concept, in the order a connection meets them:
//! - [`listener`]: the listening socket (backlog, address family);
//! - `limits`: `--max-connections` reconciled with RLIMIT_NOFILE;
//! - `acceptor`: the accept loop, its backpressure and its error policy;
//! - `per_ip`: `--max-connections-per-ip`, the connections each client holds;
//! - `proxy_header`: `--proxy-protocol`, the header naming the real client,
//!   read only from trusted balancers and checked as HAProxy checks it;
//! - `handoff`: what crosses from the acceptor to the serving runtime;
//! - `layout`: the runtimes of `split`, `single` and `sharded`;
//! - `worker`: the connection task on the serving side;
//! - `threads`: whether the OS will start a runtime's threads, asked
//!   before tokio, which hangs when it cannot;
//! - `service`: what else runs on the serving runtime ([`Server::service`]),
//!   UDP echo among it;
//! - `admin`: the admin endpoint (`/metrics`, `/healthz`, `/readyz`) on a
//!   one-thread runtime of its own, which [`Server::admin`] turns on;
//!   `admin::pool` makes room for each new admin connection.
//!
//! [`Server::run`] ties them together and owns the shutdown sequence
//! (invariant 8): stop accepting and shut the acceptor runtime down, serve
//! live connections until they close or the shutdown timeout passes, cut the
//! rest, then shut the serving runtimes down.
//!
//! # Invariants
//!
//! The parts that are easy to get wrong, numbered so that the code that
//! upholds each can cite it.
//!
//! 1. **A socket is registered with the reactor of the runtime that serves
//!    it.** A tokio `TcpStream` stays bound to the I/O driver of the runtime
//!    that created it, and stops working once that runtime is gone. The
//!    acceptor hands over a `std::net::TcpStream`, and the serving runtime
//!    registers it from inside itself (`handoff`, `worker`).
//! 2. **Backpressure reaches the kernel.** The acceptor reserves a hand-off
//!    slot and a connection permit before it calls accept, so that when the
//!    workers are saturated or the limit is reached, new connections wait
//!    in the listen backlog instead of being accepted and dropped
//!    (`acceptor`, `handoff`).
//! 3. **Accept errors never stop the server and never spin.** Aborted and
//!    reset connections are skipped; running out of descriptors or memory
//!    is logged (rate-limited) and retried after a capped exponential
//!    back-off (`acceptor`).
//! 4. **No panic on network input.** A client that resets, half-closes or
//!    vanishes ends its own connection and nothing else.
//! 5. **Memory per connection is bounded and small.** A connection holds at
//!    most one data buffer, and an idle one none; a client that sends
//!    without reading meets TCP backpressure ([`crate::buffer`]).
//! 6. **Echo is byte-exact** (RFC 862). When the client half-closes, the
//!    server writes back everything it has read, then shuts its own write
//!    side down ([`crate::echo`]).
//! 7. **`append_newline` writes a `\n` after each chunk read**, never a
//!    stale byte ([`crate::echo`]).
//! 8. **Graceful shutdown.** Accepting stops at once; live connections are
//!    served until they close or the shutdown timeout passes, then the rest
//!    are cut, each after writing back what it has already read. The
//!    acceptor stops first, the serving runtimes last ([`Server::run`]).

mod acceptor;
mod admin;
mod handoff;
mod layout;
mod limits;
pub mod listener;
mod per_ip;
mod proxy_header;
mod service;
pub(crate) mod threads;
mod worker;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use self::admin::{Admin, Readiness};
pub use self::layout::{Layout, UnknownLayout};
pub use self::listener::{ListenOptions, bind, bind_udp, bind_with, inherited};
use self::per_ip::PerIpLimit;
pub use self::service::ServiceContext;
use self::worker::Serving;
use crate::compute::Compute;
use crate::handler::Handler;
use crate::ip_ranges::IpRanges;
use crate::metrics::{CloseReason, Metrics};
use crate::range::{OutOfRange, in_range};
use crate::sweep::{IdleRule, Sweep};
use crate::tls::ServerTls;

/// Largest buffer budget: 1 TiB, beyond any machine's memory this runs on.
pub const MAX_BUFFER_MEMORY: usize = 1 << 40;

/// Most threads a runtime may be given: far beyond any useful number, low
/// enough that a typo does not exhaust the process's thread limit.
pub const MAX_THREADS: usize = 1024;
/// Largest hand-off capacity and connection limit: tokio's channels and
/// semaphores have hard limits well above it.
pub const MAX_QUEUE: usize = 10_000_000;

/// How the server runs. [`Default`] gives the defaults each field states;
/// a setter per field returns the configuration for the next:
///
/// ```
/// use std::time::Duration;
/// use tandem::{Layout, ServerConfig};
///
/// let config = ServerConfig::default()
///     .layout(Layout::Sharded)
///     .workers(4)
///     .shutdown_timeout(Duration::from_secs(5));
/// assert_eq!(config.workers, 4);
/// ```
///
/// The fields stay readable; new ones may come, so the configuration is
/// built from [`Default`] rather than written out field by field.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Runtime layout. Default: `split`.
    pub layout: Layout,
    /// Threads of the acceptor runtime, and accept tasks (`split`,
    /// `sharded`). Default: 1.
    pub acceptor_threads: usize,
    /// Worker threads (`split`, `single`) or shards (`sharded`).
    /// Default: available parallelism.
    pub workers: usize,
    /// Capacity of the hand-off queue (shared out among shards in
    /// `sharded`). Default: 4000.
    pub handoff_capacity: usize,
    /// Connections served at once, lowered to fit RLIMIT_NOFILE.
    /// Default: 10000.
    pub max_connections: usize,
    /// Connections served at once from one client address (IPv4), or one
    /// /64 (IPv6); beyond it, new connections are closed as soon as they
    /// are accepted and counted as rejected. Default: `None`, no limit.
    pub max_connections_per_ip: Option<usize>,
    /// Close connections silent for this long; `None` never does.
    /// Default: 300 s.
    pub idle_timeout: Option<Duration>,
    /// Bytes per second that a connection must move on average over each
    /// window of `idle_timeout`, counting the larger of the bytes it sent
    /// and the bytes it took (an echo does not double it), or be closed as
    /// idle:
    /// what keeps a client that trickles a byte now and then from holding a
    /// connection forever. 0 leaves silence as the only rule; without an
    /// idle timeout it does nothing. Default: 1 (300 bytes per 5 minutes).
    pub min_rate: u64,
    /// How long live connections are served after shutdown begins.
    /// Default: 30 s.
    pub shutdown_timeout: Duration,
    /// After the shutdown timeout, how long the connections still open get
    /// to write back what they have read and close, and the runtimes to
    /// stop: a shutdown takes at most `shutdown_timeout` plus this. A peer
    /// that does not read at all is what it bounds. Default: 2 s.
    pub shutdown_grace: Duration,
    /// Bytes that data buffers may hold in all, lent or cached: a read
    /// that would go past it reads less or waits, and TCP pushes back.
    /// The budget is the process's, shared by every server in it; the one
    /// started last sets it. Default: `None`, 256 MiB lowered to a quarter
    /// of the memory the process may use ([`crate::buffer::default_budget`]).
    pub buffer_memory: Option<usize>,
    /// Set TCP_NODELAY on accepted sockets. Default: true.
    pub nodelay: bool,
    /// Require a PROXY protocol header (v1 or v2) at the start of every
    /// connection, arriving within this long; the client it names stands
    /// for the connection's peer (logs, `--max-connections-per-ip`). A
    /// connection without a valid header is closed unserved and counted.
    /// Default: `None`, no header expected.
    pub proxy_protocol: Option<Duration>,
    /// With `proxy_protocol`: the peers (load balancers) whose headers are
    /// trusted. A connection from any other address is closed unserved and
    /// counted as `untrusted`, so that no client can name an address of
    /// its choosing. Without `proxy_protocol` it has no effect. Default:
    /// `None`, every peer is trusted, and the server warns at start-up.
    pub proxy_protocol_from: Option<IpRanges>,
}

impl ServerConfig {
    /// Checks every count against its range.
    pub fn validate(&self) -> Result<(), ServerError> {
        let checks = [
            ("acceptor_threads", self.acceptor_threads, MAX_THREADS),
            ("workers", self.workers, MAX_THREADS),
            ("handoff_capacity", self.handoff_capacity, MAX_QUEUE),
            ("max_connections", self.max_connections, MAX_QUEUE),
            (
                "max_connections_per_ip",
                self.max_connections_per_ip.unwrap_or(1),
                MAX_QUEUE,
            ),
        ];
        if let Some(bytes) = self.buffer_memory {
            in_range(
                "buffer_memory",
                bytes,
                crate::buffer::budget::MIN_BUDGET..=MAX_BUFFER_MEMORY,
            )?;
        }
        for (field, value, max) in checks {
            in_range(field, value, 1..=max)?;
        }
        Ok(())
    }
}

impl Default for ServerConfig {
    /// The defaults, which every user of the library and `tandem serve`
    /// share: the command line fills what it is not told from here.
    fn default() -> Self {
        ServerConfig {
            layout: Layout::default(),
            // One acceptor thread keeps up with far more connects per
            // second than a small machine can serve; more only helps with
            // several listeners' worth of churn.
            acceptor_threads: 1,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            // The channel capacity of the article's server.
            handoff_capacity: 4000,
            // Comfortable for an echo endpoint; lowered further when
            // RLIMIT_NOFILE would not allow it.
            max_connections: 10_000,
            max_connections_per_ip: None,
            idle_timeout: Some(Duration::from_secs(300)),
            // 300 bytes per 5 minutes: enough to recycle a client that
            // trickles a byte every few seconds, too little to trouble
            // anyone who uses the connection.
            min_rate: 1,
            proxy_protocol: None,
            proxy_protocol_from: None,
            shutdown_timeout: Duration::from_secs(30),
            // Enough for a peer that reads to take a last 16 MiB echo over
            // a slow link, and for the runtimes to stop.
            shutdown_grace: Duration::from_secs(2),
            buffer_memory: None,
            nodelay: true,
        }
    }
}

setters!(ServerConfig {
    layout: Layout,
    acceptor_threads: usize,
    workers: usize,
    handoff_capacity: usize,
    max_connections: usize,
    max_connections_per_ip: Option<usize>,
    idle_timeout: Option<Duration>,
    min_rate: u64,
    shutdown_timeout: Duration,
    shutdown_grace: Duration,
    buffer_memory: Option<usize>,
    nodelay: bool,
    proxy_protocol: Option<Duration>,
    proxy_protocol_from: Option<IpRanges>,
});

/// How long a load balancer may take to send the PROXY header, where one
/// is required and no other time is given: it sends it at once, so this
/// only bounds connections that will never send one.
pub const DEFAULT_PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the server could not start or run.
#[derive(Debug, Error)]
pub enum ServerError {
    /// Binding or listening failed.
    // The OS reason is part of the message rather than a `source`, so that
    // it is printed once however the error chain is rendered.
    #[error("cannot listen on {addr}: {cause}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS reason.
        cause: io::Error,
    },
    /// The socket passed by a service manager (`LISTEN_FDS`) is unusable.
    #[error("cannot use the socket passed by the service manager (LISTEN_FDS): {cause}")]
    Inherited {
        /// What is wrong with it.
        cause: io::Error,
    },
    /// A service could not be set up on the serving runtime.
    #[error("cannot start the {name} service: {cause}")]
    Service {
        /// The service's name (`udp` for the UDP echo).
        name: &'static str,
        /// The OS reason.
        cause: io::Error,
    },
    /// A runtime or one of its threads could not be started.
    #[error("cannot start the {role} runtime: {cause}")]
    Runtime {
        /// The runtime's role (its thread name).
        role: String,
        /// The OS reason.
        cause: io::Error,
    },
    /// [`Server::run`] blocks its thread and starts runtimes of its own, so it
    /// cannot be called from inside a tokio runtime.
    #[error("Server::run must be called outside any tokio runtime")]
    InsideRuntime,
    /// A [`ServerConfig`] field is out of range.
    #[error("invalid server configuration: {0}")]
    InvalidConfig(#[from] OutOfRange),
    /// Every accept task ended without being asked to.
    #[error("the acceptor stopped unexpectedly; see the log for the cause")]
    AcceptorFailed,
}

/// The instant `after` from now; `None` past what the clock can hold (a
/// library caller's `Duration::MAX`, meaning "wait for ever").
fn deadline(after: Duration) -> Option<Instant> {
    Instant::now().checked_add(after)
}

/// What is left until `deadline`; without one, a century, which tokio's
/// timers and runtime stops can add to the clock, where `Duration::MAX`
/// would overflow it.
fn left_until(deadline: Option<Instant>) -> Duration {
    const FOR_EVER: Duration = Duration::from_secs(100 * 365 * 86_400);
    deadline.map_or(FOR_EVER, |at| at.saturating_duration_since(Instant::now()))
}

/// How a shutdown went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections live (served or queued) when accepting stopped.
    pub live: usize,
    /// Of those, connections that closed before the shutdown timeout.
    pub drained: usize,
    /// Of those, connections still open at the timeout and closed by the
    /// server: after writing back what they had read, or, for the few still
    /// stuck writing to a peer that does not read, dropped.
    pub cut: usize,
}

/// A server: the layout's runtimes, the limits and the shutdown sequence
/// around a [`Handler`].
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    admin: Option<std::net::TcpListener>,
    /// Services to start on the serving runtime, in order.
    services: Vec<service::Pending>,
    /// Where the UDP echo answers, when it is one of them.
    udp_addr: Option<SocketAddr>,
    tls: Option<ServerTls>,
    compute: Compute,
}

/// A started server: accepting and serving until [`Running::wait`] sees its
/// shutdown future complete.
#[must_use = "a server that is not waited on is stopped at once when dropped"]
pub struct Running<H> {
    config: ServerConfig,
    control: tokio::runtime::Runtime,
    started: layout::Started,
    serving: Arc<Serving<H>>,
    readiness: Readiness,
    /// Dropped after the serving runtimes, so that the drain stays
    /// observable.
    admin: Option<Admin>,
    /// The UDP echo's address, if it runs.
    udp_addr: Option<SocketAddr>,
    /// Cancelled when the shutdown begins: it stops the services.
    services_stop: CancellationToken,
    /// Stopped after the serving runtimes, whose connections use it.
    compute: Compute,
}

impl Server {
    /// A server with the given configuration.
    pub fn new(config: ServerConfig) -> Self {
        Server {
            config,
            admin: None,
            services: Vec::new(),
            udp_addr: None,
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
            crate::udp::start(socket, rate_limit, context)
        })
    }

    /// Serves the server's [`Metrics`] and its health and readiness on
    /// `listener`, from a one-thread runtime of its own, so that it answers
    /// while the workers are saturated (and samples the runtimes there):
    /// - `GET /metrics`: the Prometheus text exposition of the metrics;
    /// - `GET /healthz`: 200 while the process runs;
    /// - `GET /readyz`: 200 while accepting, 503 from the moment
    ///   [`Running::wait`] begins the shutdown.
    ///
    /// The admin runtime stops last, after the serving runtimes.
    pub fn admin(mut self, listener: std::net::TcpListener) -> Self {
        self.admin = Some(listener);
        self
    }

    /// Serves `listener` (from [`bind`]) with `handler` until `shutdown`
    /// completes, then shuts down gracefully and reports how it went:
    /// [`start`](Server::start) followed by [`wait`](Running::wait).
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

    /// Builds the layout's runtimes and starts accepting on `listener`.
    /// When this returns, connections are being served.
    ///
    /// Must not be called from inside a tokio runtime: the server's runtimes
    /// run on threads of their own, and the calling thread later waits in
    /// [`Running::wait`].
    pub fn start<H: Handler>(
        self,
        listener: std::net::TcpListener,
        handler: H,
    ) -> Result<Running<H>, ServerError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(ServerError::InsideRuntime);
        }
        let Server {
            config,
            admin,
            services,
            udp_addr,
            tls,
            compute,
        } = self;
        config.validate()?;
        if config.proxy_protocol.is_some() && config.proxy_protocol_from.is_none() {
            warn!(
                "PROXY headers are read from any peer, so any client may set its own address; \
                 name the load balancers with proxy_protocol_from (--proxy-protocol-from)"
            );
        }
        // The caller's thread waits on this runtime; it has no threads of
        // its own and serves no connection.
        let control = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|cause| ServerError::Runtime {
                role: "control".to_owned(),
                cause,
            })?;
        let serving = Arc::new(Serving {
            handler,
            sweep: Arc::new(Sweep::new(
                config
                    .idle_timeout
                    .map(|timeout| IdleRule::new(timeout, config.min_rate)),
            )),
            nodelay: config.nodelay,
            proxy_protocol: config.proxy_protocol,
            proxy_protocol_from: config.proxy_protocol_from.clone(),
            tls,
            per_ip: config.max_connections_per_ip.map(PerIpLimit::new),
            tracker: TaskTracker::new(),
            active: Arc::new(AtomicUsize::new(0)),
            cut_count: AtomicUsize::new(0),
            linger: worker::linger_within(config.shutdown_grace),
            queued: Arc::new(AtomicUsize::new(0)),
            metrics: Metrics::new(),
        });
        compute.report_to(&serving.metrics);
        crate::buffer::set_budget(
            config
                .buffer_memory
                .unwrap_or_else(crate::buffer::default_budget),
            config.workers,
        );
        // No permits until the layout has started: the limit is fitted to
        // the descriptors left once the runtimes have opened theirs.
        let limit = Arc::new(Semaphore::new(0));
        let started = layout::start(&config, listener, serving.clone(), limit.clone())?;
        // Untracked: it runs for as long as the serving runtimes do, and the
        // shutdown waits for connections, not for it.
        started.serving_handle().spawn(serving.sweep.clone().run());
        let services_stop = CancellationToken::new();
        {
            let handle = started.serving_handle().clone();
            // Inside the serving runtime: what a service registers belongs
            // to its reactor.
            let _entered = handle.enter();
            for service in services {
                let context = ServiceContext::new(services_stop.clone(), serving.metrics.clone());
                let task = (service.start)(context).map_err(|cause| ServerError::Service {
                    name: service.name,
                    cause,
                })?;
                // Tracked: the drain waits for it as for a connection.
                serving.tracker.spawn_on(task, &handle);
            }
        }
        let readiness = Readiness::default();
        let admin = match admin {
            Some(listener) => Some(Admin::start(
                listener,
                serving.metrics.clone(),
                readiness.clone(),
            )?),
            None => None,
        };
        // The once-a-second sampling of the runtimes, which also folds the
        // hand-off waits into their histogram: on the admin runtime when
        // there is one, so that it keeps time while the workers are
        // saturated, else on the serving runtime. Untracked, as the sweep.
        if admin.is_none() {
            started
                .serving_handle()
                .spawn(serving.metrics.clone().tick_every_second());
        }
        // Permits last: until now no connection could be accepted, so a
        // service or the admin endpoint that fails to start refuses none.
        let max_connections = limits::fit_connection_limit(config.max_connections);
        limit.add_permits(max_connections);
        serving.metrics.connection_limit(max_connections);
        readiness.accepting();
        Ok(Running {
            config,
            control,
            started,
            serving,
            readiness,
            admin,
            udp_addr,
            services_stop,
            compute,
        })
    }
}

impl<H> Running<H> {
    /// The admin endpoint's address, if the server has one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(Admin::local_addr)
    }

    /// The address the UDP echo answers on, if it runs.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }

    /// The server's metrics, kept whether or not an admin endpoint serves
    /// them: what [`Metrics::render`] prints is what `/metrics` would.
    pub fn metrics(&self) -> &Metrics {
        &self.serving.metrics
    }
}

impl<H: Handler> Running<H> {
    /// Serves until `shutdown` completes, then shuts down gracefully
    /// (invariant 8) and reports how it went. Blocks the calling thread;
    /// `shutdown` is polled on a small current-thread runtime, so it may use
    /// tokio's timers, signals and I/O.
    pub fn wait(self, shutdown: impl Future<Output = ()>) -> Result<ShutdownReport, ServerError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            // Dropping runtimes in async code panics: stop the server from a
            // thread of its own instead.
            std::thread::spawn(move || drop(self));
            return Err(ServerError::InsideRuntime);
        }
        let Running {
            config,
            control,
            mut started,
            serving,
            readiness,
            admin,
            udp_addr: _,
            services_stop,
            compute,
        } = self;
        let acceptor_failed = control.block_on(async {
            tokio::select! {
                () = shutdown => false,
                () = started.acceptors_ended() => true,
            }
        });
        // The shutdown's clock: the drain ends at most `shutdown_timeout`
        // from here, and everything stops at most `shutdown_grace` later.
        let drain_until = deadline(config.shutdown_timeout);
        // Before anything stops: a load balancer polling `/readyz` moves
        // new clients elsewhere while the live ones drain.
        readiness.stopping();
        // Services have no connections to drain (datagrams have none): they
        // stop here.
        services_stop.cancel();
        if acceptor_failed {
            warn!("every accept task has ended; shutting down");
        }

        // The acceptor first...
        control.block_on(started.stop_accepting());
        started.shut_down_acceptor();
        let live = worker::active(&serving);
        let timeout = humantime::format_duration(config.shutdown_timeout);
        let grace = humantime::format_duration(config.shutdown_grace);
        let at_most = humantime::format_duration(
            config
                .shutdown_timeout
                .saturating_add(config.shutdown_grace),
        );
        // In `single`, accepting shares the worker runtime: none to stop.
        let stopped = if config.layout == Layout::Single {
            "stopped accepting"
        } else {
            "stopped accepting and shut the acceptor runtime down"
        };
        info!(live, %timeout, %grace, %at_most, "{stopped}; draining live connections");

        // ...then the live connections, for up to the shutdown timeout...
        serving.tracker.close();
        let drained_in_time = control
            .block_on(async {
                tokio::time::timeout(left_until(drain_until), serving.tracker.wait()).await
            })
            .is_ok();
        // From the drain's end, the grace: for cut connections to write
        // back what they owe, then for the runtimes to stop. A quarter of
        // it, up to a second, is kept for the stops, which wait only for
        // work that blocks a thread (compute jobs).
        let stop_by = deadline(config.shutdown_grace);
        let stops = (config.shutdown_grace / 4).min(Duration::from_secs(1));
        let mut dropped = 0;
        if !drained_in_time {
            info!(
                connections = worker::active(&serving),
                "shutdown timeout passed; closing the remaining connections"
            );
            serving.sweep.cut();
            let closed = control
                .block_on(async {
                    let cut_for = left_until(stop_by).saturating_sub(stops);
                    tokio::time::timeout(cut_for, serving.tracker.wait()).await
                })
                .is_ok();
            if !closed {
                dropped = worker::active(&serving);
                // Their tasks end with the runtime, without accounting for
                // themselves.
                serving
                    .metrics
                    .connections_closed(CloseReason::Shutdown, dropped);
                warn!(
                    connections = dropped,
                    "connections still writing after the cut; dropping them"
                );
            }
        }
        // ...and the serving runtimes last, then the compute threads their
        // connections used, then the admin endpoint.
        let left = || left_until(stop_by);
        started.shut_down_serving(left());
        compute.stop(left());
        drop(admin);
        if acceptor_failed {
            return Err(ServerError::AcceptorFailed);
        }
        let cut = serving.cut_count.load(Ordering::Relaxed) + dropped;
        Ok(ShutdownReport {
            live,
            drained: live.saturating_sub(cut),
            cut,
        })
    }
}
