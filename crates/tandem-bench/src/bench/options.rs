//! The options of `tandem bench`: their defaults, their ranges and their
//! checks, and what they make of a run (its mode, its transport, its TLS
//! client).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use super::error::BenchError;
use super::server_metrics::MetricsUrl;
use super::tls::{ClientTls, Trust};
use tandem::duration::HumanDuration;

/// Largest message: more would only measure memory bandwidth.
const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;
/// Most bytes in flight per connection in the closed loop; the reads and
/// writes of one connection share one task, so this bounds its buffers.
const MAX_IN_FLIGHT_BYTES: usize = 16 * 1024 * 1024;

/// Largest churn message: it must fit in the socket buffers, since each
/// request is written whole before its echo is read.
const MAX_CHURN_MESSAGE: usize = 64 * 1024;
/// With `--udp`: bytes of the sequence number at the head of each datagram: the least a
/// datagram can be.
pub(super) const MIN_DATAGRAM: usize = 8;
/// With `--udp`: the largest UDP payload over IPv4.
pub(super) const MAX_DATAGRAM: usize = 65_507;
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
        let (min, max) = (MIN_DATAGRAM, MAX_DATAGRAM);
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
    pub(super) fn client_tls(&self) -> Result<Option<ClientTls>, BenchError> {
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

    pub(super) fn mode(&self) -> &'static str {
        match (self.churn, self.rate) {
            (true, _) => "churn",
            (false, Some(_)) => "open",
            (false, None) => "closed",
        }
    }

    /// What the load goes over: the report's `transport`.
    pub(super) fn transport(&self) -> &'static str {
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
