//! [`ServerConfig`]: how a server runs, with its defaults and the ranges
//! its counts must lie in. A leaf: the layouts, the compute runtime and the
//! command line read it, and it reads none of them.

use std::time::Duration;

use crate::ip_ranges::IpRanges;
use crate::range::{OutOfRange, in_range};

/// Largest buffer budget: 1 TiB, beyond any machine's memory this runs on.
#[doc(hidden)]
pub const MAX_BUFFER_MEMORY: usize = 1 << 40;

/// Most threads a runtime may be given: far beyond any useful number, low
/// enough that a typo does not exhaust the process's thread limit.
#[doc(hidden)]
pub const MAX_THREADS: usize = 1024;
/// Largest hand-off capacity and connection limit: tokio's channels and
/// semaphores have hard limits well above it.
#[doc(hidden)]
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
    pub fn validate(&self) -> Result<(), OutOfRange> {
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

label_set! {
    /// How accepting and serving are spread over runtimes. It parses from
    /// and prints as its name: `split`, `single`, `sharded`.
    #[derive(Default)]
    pub enum Layout {
        /// Acceptor runtime -> bounded hand-off queue -> multi-thread worker runtime.
        #[default]
        Split => "split",
        /// One multi-thread runtime accepts and serves.
        Single => "single",
        /// Acceptor runtime -> one queue per shard -> single-thread runtimes.
        Sharded => "sharded",
    }
    parse as UnknownLayout "layout"
}

impl Layout {
    /// What it runs, in a line (for a command line's help).
    pub fn summary(self) -> &'static str {
        match self {
            Layout::Split => {
                "Acceptor runtime -> bounded hand-off queue -> multi-thread worker runtime"
            }
            Layout::Single => "One multi-thread runtime accepts and serves",
            Layout::Sharded => "Acceptor runtime -> one queue per shard -> single-thread runtimes",
        }
    }
}
