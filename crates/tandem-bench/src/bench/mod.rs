//! `tandem bench`: a load generator whose numbers can be trusted.
//!
//! - [`pattern`]: what is sent, and the byte-for-byte check of the echo;
//! - `client`: one connection of the closed or open loop;
//! - `churn`: a new connection per request;
//! - `udp`: `--udp`, the closed and open loops over datagrams, and loss;
//! - `tls`: `--tls`, whom the generator trusts and the handshake;
//! - `stats`: latency histogram and counters of a run;
//! - [`server_metrics`]: with `--server-metrics`, the server's own figures
//!   of the run, from its admin endpoint;
//! - [`report`]: the figures, as a table or JSON.
//!
//! A run connects first (at `--connect-rate` if given), then warms up, then
//! measures for `--duration`: only messages sent inside that window count.
//! Every byte of every echo is checked; any failure counts as an error and
//! makes the command exit non-zero.

mod churn;
mod client;
pub mod pattern;
pub mod report;
pub mod server_metrics;
mod stats;
mod tls;
mod udp;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use thiserror::Error;
use tokio::task::JoinSet;
use tokio::time::Instant;

use self::client::{Pacing, connect, drive};
use self::pattern::Block;
pub use self::report::{Latency, Report};
use self::server_metrics::{
    MetricsUrl, ScrapeError, ServerFigures, ServerWatch, Snapshot, WINDOW_LEAD,
};
use self::stats::Stats;
use self::tls::{ClientTls, Trust};
use tandem::duration::HumanDuration;
use tandem::transport::Transport;

/// Largest message: more would only measure memory bandwidth.
const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;
/// Most bytes in flight per connection in the closed loop; the reads and
/// writes of one connection share one task, so this bounds its buffers.
const MAX_IN_FLIGHT_BYTES: usize = 16 * 1024 * 1024;

/// Largest churn message: it must fit in the socket buffers, since each
/// request is written whole before its echo is read.
const MAX_CHURN_MESSAGE: usize = 64 * 1024;
/// Longest window or warm-up.
const MAX_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
/// Rates outside this range are typos, and make schedules of zero or
/// infinite intervals.
const MIN_RATE: f64 = 0.001;
const MAX_RATE: f64 = 1e9;
const DEFAULT_CONNECTIONS: usize = 50;
const DEFAULT_MESSAGE_SIZE: usize = 64;
const DEFAULT_DURATION: HumanDuration = HumanDuration(Duration::from_secs(10));
const DEFAULT_WARMUP: HumanDuration = HumanDuration(Duration::from_secs(2));

/// The options of `tandem bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchOptions {
    /// Echo server to load: an address and port, or a host name and port
    /// (`localhost:8000`), resolved at start: its first address that this
    /// host can reach is used.
    #[arg(long, value_name = "ADDR", value_parser = target_address)]
    pub target: SocketAddr,
    /// Connections (closed and open loop) or concurrent churners (--churn).
    #[arg(long, default_value_t = DEFAULT_CONNECTIONS, value_name = "N")]
    pub connections: usize,
    /// Bytes per message.
    #[arg(long, default_value_t = DEFAULT_MESSAGE_SIZE, value_name = "B")]
    pub message_size: usize,
    /// Messages in flight per connection (closed loop).
    #[arg(long, default_value_t = 1, value_name = "D")]
    pub pipeline: usize,
    /// Length of the measured window.
    #[arg(long, default_value_t = DEFAULT_DURATION, value_name = "DURATION")]
    pub duration: HumanDuration,
    /// Load before the window, not counted.
    #[arg(long, default_value_t = DEFAULT_WARMUP, value_name = "DURATION")]
    pub warmup: HumanDuration,
    /// Threads of the generator's runtime.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub threads: usize,
    /// Open connections at this many per second instead of all at once.
    #[arg(long, value_name = "PER_SEC")]
    pub connect_rate: Option<f64>,
    /// Open loop: send this many messages per second in total, spread over
    /// the connections; latency counts from each message's intended send.
    #[arg(long, value_name = "PER_SEC", conflicts_with = "churn")]
    pub rate: Option<f64>,
    /// Churn: every request on a new connection.
    #[arg(long)]
    pub churn: bool,
    /// UDP: datagrams of --message-size bytes (8 to 65507: each starts with
    /// its sequence number) from --connections sockets, in the closed or
    /// open loop; a datagram not echoed within 1 s counts as lost.
    #[arg(
        long,
        conflicts_with_all = ["churn", "expect_newline", "connect_rate", "tls"]
    )]
    pub udp: bool,
    /// The server appends `\n` to each chunk (`serve --append-newline`).
    #[arg(long)]
    pub expect_newline: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// A tandem server's metrics (`http://ADMIN/metrics`, from `serve
    /// --admin-listen`; without a path, `/metrics`): scraped around the
    /// run, to report the server's busy ratios, hand-off waits,
    /// connections and bytes beside the client's figures.
    #[arg(long, value_name = "URL")]
    pub server_metrics: Option<MetricsUrl>,
    /// Speak TLS (a server run with `serve --tls-cert`): every connection
    /// makes a handshake before its first message, and the echo is
    /// encrypted both ways.
    #[arg(long)]
    pub tls: bool,
    /// With --tls: trust the certificates of this PEM file instead of the
    /// system's roots (for a server with a private or self-signed
    /// certificate).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// With --tls: accept any certificate (only the handshake's signature
    /// is checked). For test servers only.
    #[arg(long, conflicts_with = "tls_ca")]
    pub tls_insecure: bool,
    /// With --tls: the name asked for (SNI) and checked in the certificate
    /// [default: the target's IP address].
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// With --tls: resume sessions the server offers to resume, as a
    /// client with a session cache does; without it, every handshake is a
    /// full one.
    #[arg(long)]
    pub tls_resume: bool,
}

/// `--target`: an address, or a host name resolved now. Of a name's
/// addresses, the first this host has a route to (a UDP socket can be
/// connected to it, which sends nothing), as `serve --listen` binds the
/// first it can: `localhost` may stand for `::1` on a host without IPv6.
fn target_address(text: &str) -> Result<SocketAddr, String> {
    use std::net::{ToSocketAddrs, UdpSocket};
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let resolved: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|err| {
            format!(
                "{text:?} is neither an address and port (127.0.0.1:8000, [::1]:8000) nor a \
                 host name and port that resolves: {err}"
            )
        })?
        .collect();
    let reachable = |addr: &&SocketAddr| {
        let local: SocketAddr = match addr {
            SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        UdpSocket::bind(local)
            .and_then(|socket| socket.connect(addr))
            .is_ok()
    };
    resolved
        .iter()
        .find(reachable)
        .or(resolved.first())
        .copied()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

/// Why a run could not be made.
#[derive(Debug, Error)]
pub enum BenchError {
    /// An option is out of range.
    #[error("invalid --{option}: {rule}, got {value}")]
    Invalid {
        option: &'static str,
        rule: String,
        value: String,
    },
    /// The generator's runtime could not start.
    #[error("cannot start the load generator: {0}")]
    Runtime(std::io::Error),
    /// Not every connection could be opened before the run.
    #[error("cannot connect to {target}: {cause} ({opened} of {wanted} connections opened)")]
    Connect {
        target: SocketAddr,
        cause: std::io::Error,
        opened: usize,
        wanted: usize,
    },
    /// The TLS client could not be set up (`--tls`).
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    /// The server's metrics could not be scraped (`--server-metrics`).
    #[error(transparent)]
    ServerMetrics(#[from] ScrapeError),
}

impl BenchOptions {
    /// A closed loop against `target` with the command line's defaults.
    pub fn new(target: SocketAddr) -> BenchOptions {
        BenchOptions {
            target,
            connections: DEFAULT_CONNECTIONS,
            message_size: DEFAULT_MESSAGE_SIZE,
            pipeline: 1,
            duration: DEFAULT_DURATION,
            warmup: DEFAULT_WARMUP,
            threads: 1,
            connect_rate: None,
            rate: None,
            churn: false,
            udp: false,
            expect_newline: false,
            json: false,
            server_metrics: None,
            tls: false,
            tls_ca: None,
            tls_insecure: false,
            tls_server_name: None,
            tls_resume: false,
        }
    }

    /// Checks the options against their ranges.
    pub fn validate(&self) -> Result<(), BenchError> {
        self.validate_sizes()?;
        self.validate_times()?;
        if self.udp {
            self.validate_udp()?;
        }
        self.validate_tls()
    }

    /// The counts, and the bytes they put in flight.
    fn validate_sizes(&self) -> Result<(), BenchError> {
        let count = |option, value: usize, max: usize| {
            tandem::range::in_range(option, value, 1..=max).map_err(|out| BenchError::Invalid {
                option: out.field,
                rule: out.rule(),
                value: out.value,
            })
        };
        count("connections", self.connections, 100_000)?;
        count("message-size", self.message_size, MAX_MESSAGE_SIZE)?;
        count("pipeline", self.pipeline, 65_536)?;
        count("threads", self.threads, tandem::server::MAX_THREADS)?;
        if self.pipeline * self.message_size > MAX_IN_FLIGHT_BYTES {
            return Err(invalid(
                "pipeline",
                "times --message-size must be at most 16 MiB",
                self.pipeline.to_string(),
            ));
        }
        if self.churn && self.message_size > MAX_CHURN_MESSAGE {
            // A churn request is written whole before its echo is read.
            return Err(invalid(
                "message-size",
                "must be at most 65536 with --churn",
                self.message_size.to_string(),
            ));
        }
        Ok(())
    }

    /// The window, the warm-up and the rates.
    fn validate_times(&self) -> Result<(), BenchError> {
        for (option, value) in [("duration", self.duration), ("warmup", self.warmup)] {
            if value.0 > MAX_WINDOW {
                return Err(invalid(option, "must be at most a day", value.to_string()));
            }
        }
        if self.duration.0.is_zero() {
            return Err(invalid(
                "duration",
                "must be more than 0",
                self.duration.to_string(),
            ));
        }
        for (option, rate) in [("rate", self.rate), ("connect-rate", self.connect_rate)] {
            if let Some(rate) = rate
                && !(MIN_RATE..=MAX_RATE).contains(&rate)
            {
                return Err(invalid(
                    option,
                    &format!("must be between {MIN_RATE} and {MAX_RATE} per second"),
                    rate.to_string(),
                ));
            }
        }
        Ok(())
    }

    /// What `--udp` allows.
    fn validate_udp(&self) -> Result<(), BenchError> {
        // The sequence number heads each datagram, and a datagram is at
        // most what one IPv4 UDP payload holds.
        let (min, max) = (udp::MIN_DATAGRAM, udp::MAX_DATAGRAM);
        if !(min..=max).contains(&self.message_size) {
            return Err(invalid(
                "message-size",
                &format!("must be between {min} and {max} with --udp"),
                self.message_size.to_string(),
            ));
        }
        // The command line refuses these already; a library caller could
        // still ask.
        if self.churn || self.expect_newline || self.connect_rate.is_some() || self.tls {
            return Err(invalid(
                "udp",
                "cannot be combined with --churn, --expect-newline, --connect-rate or --tls",
                "true".to_owned(),
            ));
        }
        Ok(())
    }

    /// The TLS options, each of which needs `--tls`.
    fn validate_tls(&self) -> Result<(), BenchError> {
        let tls_options = [
            ("tls-ca", self.tls_ca.is_some()),
            ("tls-insecure", self.tls_insecure),
            ("tls-server-name", self.tls_server_name.is_some()),
            ("tls-resume", self.tls_resume),
        ];
        if let Some((option, _)) = tls_options.iter().find(|(_, set)| *set && !self.tls) {
            return Err(invalid(option, "needs --tls", "set without it".to_owned()));
        }
        Ok(())
    }

    /// The TLS client of `--tls`, or `None`.
    fn client_tls(&self) -> Result<Option<ClientTls>, BenchError> {
        if !self.tls {
            return Ok(None);
        }
        let trust = match (&self.tls_ca, self.tls_insecure) {
            (_, true) => Trust::Anyone,
            (Some(path), false) => Trust::File(path),
            (None, false) => Trust::System,
        };
        let name = self.tls_server_name.as_deref();
        ClientTls::new(trust, name, self.target, self.tls_resume).map(Some)
    }

    fn mode(&self) -> &'static str {
        match (self.churn, self.rate) {
            (true, _) => "churn",
            (false, Some(_)) => "open",
            (false, None) => "closed",
        }
    }

    /// What the load goes over: the report's `transport`.
    fn transport(&self) -> &'static str {
        match (self.udp, self.tls) {
            (true, _) => "udp",
            (false, true) => "tls",
            (false, false) => "tcp",
        }
    }
}

/// An option refused: `value` breaks `rule`.
fn invalid(option: &'static str, rule: &str, value: String) -> BenchError {
    BenchError::Invalid {
        option,
        rule: rule.to_owned(),
        value,
    }
}

/// Runs the load described by `options` and reports what it measured.
/// `progress` shows a live bar on stderr when stderr is a terminal.
pub fn run(options: &BenchOptions, progress: bool) -> Result<Report, BenchError> {
    options.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.threads)
        .thread_name("tandem-bench")
        .enable_all()
        .build()
        .map_err(BenchError::Runtime)?;
    runtime.block_on(run_async(
        options,
        progress && std::io::stderr().is_terminal(),
    ))
}

async fn run_async(options: &BenchOptions, show_progress: bool) -> Result<Report, BenchError> {
    if options.udp {
        return udp::run(options, show_progress).await;
    }
    let tls = options.client_tls()?;
    let open = async {
        if options.churn {
            Ok(Vec::new())
        } else {
            connect_all(options, tls.as_ref()).await
        }
    };
    let report = measure(options, show_progress, open, |streams, load| {
        let Load {
            block,
            start,
            stats,
            tasks,
        } = load;
        if options.churn {
            let ids = Arc::new(AtomicU64::new(0));
            for _ in 0..options.connections {
                let (block, stats, ids, tls) =
                    (block.clone(), stats.clone(), ids.clone(), tls.clone());
                let (target, size, newline) =
                    (options.target, options.message_size, options.expect_newline);
                tasks.spawn(async move {
                    churn::churn(target, tls.as_ref(), &block, size, &stats, &ids, newline).await;
                });
            }
        } else {
            let count = streams.len();
            for (id, stream) in streams.into_iter().enumerate() {
                let pacing = pacing(options, start, id, count);
                let pattern = block.pattern(id as u64, options.message_size);
                let (stats, newline) = (stats.clone(), options.expect_newline);
                tasks.spawn(async move {
                    if let Err(what) = drive(stream, pattern, pacing, &stats, newline).await {
                        stats.error(what);
                    }
                });
            }
        }
    })
    .await?;
    Ok(Report {
        tls_handshakes: tls.as_ref().map(ClientTls::handshakes),
        ..report
    })
}

/// What a run's load starts its tasks with (see [`measure`]).
struct Load<'a> {
    /// The random bytes every connection's pattern is cut from.
    block: &'a Block,
    /// When the load starts: the warm-up, then the window.
    start: Instant,
    stats: &'a Arc<Stats>,
    /// Every task of the load, one per connection (or socket, or churner).
    tasks: &'a mut JoinSet<()>,
}

/// What a run does whatever it goes over: it starts watching the server
/// before the first connection opens (`open`), runs the load `spawn`
/// starts through the warm-up and the window with the progress bar and the
/// server's scrapes around the window, and reports.
async fn measure<T>(
    options: &BenchOptions,
    show_progress: bool,
    open: impl Future<Output = Result<T, BenchError>>,
    spawn: impl FnOnce(T, Load<'_>),
) -> Result<Report, BenchError> {
    let block = pattern_block(options);
    // Before the first connection: the server's figures then count every
    // connection of the run, and a wrong URL fails before any load.
    let mut watch = match &options.server_metrics {
        Some(url) => Some(ServerWatch::begin(url.clone()).await?),
        None => None,
    };
    let opened = open.await?;

    // The window's first scrape must be answered before the window opens:
    // it starts a little ahead of it, or, when the warm-up is too short for
    // that, before the load starts.
    let scrape_before_load = watch.is_some() && options.warmup.0 < WINDOW_LEAD;
    let early_scrape = match (&watch, scrape_before_load) {
        (Some(watch), true) => Some(server_metrics::scrape(watch.url()).await?),
        _ => None,
    };
    let start = Instant::now();
    let opens = start + options.warmup.0;
    if let (Some(watch), Some(snapshot)) = (watch.as_mut(), early_scrape) {
        watch.window_opened(snapshot, opens);
    }
    // Otherwise the window stays shut until the scrape before it is
    // answered, so that the server's count holds every byte the client
    // counts however late the answer comes.
    let hold = watch.is_some() && !scrape_before_load;
    let stats = Arc::new(if hold {
        Stats::held(opens.into_std(), options.duration.0)
    } else {
        Stats::new(opens.into_std(), options.duration.0)
    });
    let mut tasks = JoinSet::new();
    spawn(
        opened,
        Load {
            block: &block,
            start,
            stats: &stats,
            tasks: &mut tasks,
        },
    );

    let bar = show_progress.then(|| progress_bar(options));
    let window_scrape = async {
        let url = watch.as_ref().filter(|_| hold)?.url();
        tokio::time::sleep_until(opens.checked_sub(WINDOW_LEAD).unwrap_or(start)).await;
        let scraped = server_metrics::scrape(url).await;
        stats.open_at(std::time::Instant::now());
        Some(scraped)
    };
    let (cpu_at_start, window_scrape) = tokio::join!(
        watch_window(&stats, &mut tasks, bar.as_ref(), start),
        window_scrape
    );
    let cpu_used = cpu_time().saturating_sub(cpu_at_start);
    while tasks.join_next().await.is_some() {}
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let server = match watch {
        Some(watch) => Some(server_figures(watch, window_scrape, opens).await?),
        None => None,
    };
    Ok(Report {
        server,
        ..report(options, &stats, cpu_used)
    })
}

/// The random bytes every connection's pattern of the run is cut from,
/// seeded from the clock so that no two runs send the same bytes.
fn pattern_block(options: &BenchOptions) -> Block {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x5EED, |since| since.as_nanos() as u64);
    Block::new(options.message_size, seed, options.expect_newline)
}

/// The server's figures once the load is over: `window_scrape`, if the
/// window waited for one, opened the window at `opens`.
async fn server_figures(
    mut watch: ServerWatch,
    window_scrape: Option<Result<Snapshot, ScrapeError>>,
    opens: Instant,
) -> Result<ServerFigures, BenchError> {
    if let Some(snapshot) = window_scrape.transpose()? {
        watch.window_opened(snapshot, opens);
    }
    Ok(watch.finish().await?)
}

/// When connection (or socket) `id` of `count` sends: in the open loop on
/// a schedule, every count/rate seconds, the connections spread evenly
/// over that interval; in the closed loop, whenever fewer than
/// `--pipeline` messages are in flight.
fn pacing(options: &BenchOptions, start: Instant, id: usize, count: usize) -> Pacing {
    match options.rate {
        Some(rate) => Pacing::Open {
            first: start + Duration::from_secs_f64(id as f64 / rate),
            interval: Duration::from_secs_f64(count as f64 / rate),
        },
        None => Pacing::Closed {
            pipeline: options.pipeline,
        },
    }
}

/// Opens every connection (with `tls`, through its handshake), at
/// `--connect-rate` if given.
async fn connect_all(
    options: &BenchOptions,
    tls: Option<&ClientTls>,
) -> Result<Vec<Transport>, BenchError> {
    let started = Instant::now();
    let mut connecting = JoinSet::new();
    for index in 0..options.connections {
        let (target, tls) = (options.target, tls.cloned());
        let at = options
            .connect_rate
            .map(|rate| started + Duration::from_secs_f64(index as f64 / rate));
        connecting.spawn(async move {
            if let Some(at) = at {
                tokio::time::sleep_until(at).await;
            }
            connect(target, tls.as_ref()).await
        });
    }
    let mut streams = Vec::with_capacity(options.connections);
    let mut failure = None;
    while let Some(joined) = connecting.join_next().await {
        match joined {
            Ok(Ok(stream)) => streams.push(stream),
            Ok(Err(err)) => failure = failure.or(Some(err)),
            Err(join) => failure = failure.or(Some(std::io::Error::other(join.to_string()))),
        }
    }
    match failure {
        None => Ok(streams),
        Some(cause) => Err(BenchError::Connect {
            target: options.target,
            cause,
            opened: streams.len(),
            wanted: options.connections,
        }),
    }
}

/// Waits through warm-up and window, updating the progress bar; returns
/// the process's CPU time at the start of the window.
async fn watch_window(
    stats: &Stats,
    tasks: &mut JoinSet<()>,
    bar: Option<&ProgressBar>,
    start: Instant,
) -> Duration {
    let from = Instant::from_std(stats.planned_from());
    let until = Instant::from_std(stats.measure_until);
    let mut cpu_at_start = None;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last = (Instant::now(), 0u64);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = tokio::time::sleep_until(from), if cpu_at_start.is_none() => {
                cpu_at_start = Some(cpu_time());
            }
            () = tokio::time::sleep_until(until) => break,
            // Every task has ended early (each failed): nothing to wait for.
            joined = tasks.join_next() => if joined.is_none() { break },
        }
        if let Some(bar) = bar {
            let now = Instant::now();
            let done = stats.progress.load(Ordering::Relaxed);
            let rate = (done - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-3);
            last = (now, done);
            bar.set_position((now - start).as_millis() as u64);
            bar.set_message(format!("{rate:.0} msg/s"));
        }
    }
    cpu_at_start.unwrap_or_else(cpu_time)
}

fn progress_bar(options: &BenchOptions) -> ProgressBar {
    let total = options.warmup.0 + options.duration.0;
    let bar = ProgressBar::new(total.as_millis() as u64);
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed}] {wide_bar} {msg}") {
        bar.set_style(style);
    }
    bar
}

/// User plus system CPU time of this process so far.
fn cpu_time() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(Duration::ZERO, |usage| {
        let to_duration = |t: nix::sys::time::TimeVal| {
            Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000)
        };
        to_duration(usage.user_time()) + to_duration(usage.system_time())
    })
}

fn report(options: &BenchOptions, stats: &Stats, cpu: Duration) -> Report {
    // The window as it was open: shorter than --duration if it opened late.
    // An empty one (it never opened) counted nothing: its rates are 0.
    let seconds = stats.window().as_secs_f64().max(f64::MIN_POSITIVE);
    let messages = stats.messages.load(Ordering::Relaxed);
    let sent_rate = options
        .rate
        .map(|_| stats.sent.load(Ordering::Relaxed) as f64 / seconds);
    Report {
        mode: options.mode(),
        transport: options.transport(),
        target: options.target.to_string(),
        connections: options.connections,
        message_size: options.message_size,
        pipeline: if options.rate.is_some() || options.churn {
            1
        } else {
            options.pipeline
        },
        messages,
        errors: stats.errors.load(Ordering::Relaxed),
        duration_secs: seconds,
        msgs_per_sec: messages as f64 / seconds,
        bytes_per_sec: stats.bytes.load(Ordering::Relaxed) as f64 / seconds,
        latency_us: Latency::of(&stats.histogram()),
        target_rate: options.rate,
        sent_rate,
        kept_up: options
            .rate
            .zip(sent_rate)
            .map(|(target, sent)| sent >= 0.95 * target),
        connects_per_sec: options
            .churn
            .then(|| stats.connects.load(Ordering::Relaxed) as f64 / seconds),
        // Over UDP, filled in by the UDP run; over TLS, by the TLS run.
        lost: None,
        loss_ratio: None,
        tls_handshakes: None,
        generator_cpu_us_per_msg: if messages == 0 {
            0.0
        } else {
            cpu.as_secs_f64() * 1e6 / messages as f64
        },
        first_error: stats.first_error(),
        server: None,
    }
}
