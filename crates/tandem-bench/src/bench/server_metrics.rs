//! The server's side of a run (`tandem bench --server-metrics URL`): what
//! a tandem server's admin endpoint says about the load the bench put on it.
//!
//! This module owns fetching `/metrics` (a minimal HTTP/1 GET with a
//! deadline), reading the exposition into a [`Snapshot`], and turning
//! snapshots into [`ServerFigures`]. It never decides when to scrape: the
//! bench's run does, through [`ServerWatch`].
//!
//! The figures come from scrapes at four moments, each figure spanning
//! what it can be measured over:
//! - before the first connection: the run's connection events (accepted,
//!   closed by reason, accept errors, hand-off waits) count from here, so
//!   that a closed loop, whose connections open before the warm-up, still
//!   shows every one of them;
//! - just before the measured window, answered before it opens: busy ratios
//!   and bytes count from here;
//! - as soon as the load has stopped: busy ratios end here;
//! - once the server has seen every connection of the run close (see
//!   [`ServerWatch::finish`]): connection events and bytes end here.
//!
//! The server adds up its runtimes' busy time once a second, so the busy
//! ratio of a short window is coarse: over a window of W seconds it may be
//! off by up to 1/W of the true figure either way.

use std::collections::BTreeMap;
use std::fmt;
use std::pin::pin;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::HOST;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Longest a whole scrape may take, connect to last byte: an admin
/// endpoint answers in a millisecond, and a run must not hang on one that
/// does not.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// How far ahead of the measured window its first scrape starts, so that
/// the answer is in before the window opens.
pub(crate) const WINDOW_LEAD: Duration = Duration::from_millis(100);
/// How often the server is polled after the run until it has seen every
/// connection close...
const SETTLE_POLL: Duration = Duration::from_millis(50);
/// ...and for how long at most.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);

const ACCEPTED: &str = "tandem_connections_accepted_total";
const REJECTED: &str = "tandem_connections_rejected_total";
const CLOSED: &str = "tandem_connections_closed_total";
const ACCEPT_ERRORS: &str = "tandem_accept_errors_total";
const UDP_DATAGRAMS: &str = "tandem_udp_datagrams_total";
const TLS_HANDSHAKE_ERRORS: &str = "tandem_tls_handshake_errors_total";
const BYTES_RECEIVED: &str = "tandem_bytes_received_total";
const BYTES_SENT: &str = "tandem_bytes_sent_total";
const ACTIVE: &str = "tandem_connections_active";
const BUSY_SECONDS: &str = "tandem_runtime_busy_seconds_total";
const WORKERS: &str = "tandem_runtime_workers";
const HANDOFF_WAIT: &str = "tandem_handoff_wait_seconds";

/// A plain `http://host[:port]/path` URL of a metrics endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsUrl {
    text: String,
    /// Host name or address, without the brackets of an IPv6 literal.
    host: String,
    port: u16,
    /// The `Host` header: host and port as written.
    authority: String,
    path_and_query: String,
}

/// Why a metrics URL was refused.
#[derive(Debug, Error)]
#[error("must be a plain http://host:port/path URL ({why})")]
pub struct UrlError {
    why: String,
}

impl MetricsUrl {
    /// The `/metrics` route of the admin endpoint at `admin`.
    pub fn for_admin(admin: std::net::SocketAddr) -> MetricsUrl {
        let authority = admin.to_string();
        MetricsUrl {
            text: format!("http://{authority}/metrics"),
            host: admin.ip().to_string(),
            port: admin.port(),
            authority,
            path_and_query: "/metrics".to_owned(),
        }
    }
}

impl FromStr for MetricsUrl {
    type Err = UrlError;

    fn from_str(text: &str) -> Result<MetricsUrl, UrlError> {
        let refuse = |why: &str| UrlError {
            why: why.to_owned(),
        };
        let uri: Uri = text.parse().map_err(|err| UrlError {
            why: format!("not a URL: {err}"),
        })?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(refuse("https is not supported")),
            Some(other) => return Err(refuse(&format!("scheme {other} is not http"))),
            None => return Err(refuse("no http:// scheme")),
        }
        let authority = uri.authority().ok_or_else(|| refuse("no host"))?;
        let host = authority.host();
        if host.is_empty() {
            return Err(refuse("no host"));
        }
        let port = authority.port_u16();
        // What is left once host and port are accounted for is either a
        // port that is not a number or credentials: neither makes sense here.
        let expected = match port {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        if authority.as_str() != expected {
            return Err(refuse("the authority must be host or host:port"));
        }
        // The admin endpoint's metrics, where no path is given: its root
        // serves nothing.
        let (text, path_and_query) = match uri.path_and_query().map(|path| path.as_str()) {
            None | Some("" | "/") => (
                format!("{}/metrics", text.trim_end_matches('/')),
                "/metrics".to_owned(),
            ),
            Some(path) => (text.to_owned(), path.to_owned()),
        };
        Ok(MetricsUrl {
            text,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: port.unwrap_or(80),
            authority: authority.as_str().to_owned(),
            path_and_query,
        })
    }
}

impl fmt::Display for MetricsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A scrape that failed, and where.
#[derive(Debug, Error)]
#[error("cannot scrape {url}: {cause}")]
pub struct ScrapeError {
    pub url: String,
    pub cause: ScrapeFailure,
}

/// What went wrong with a scrape.
#[derive(Debug, Error)]
pub enum ScrapeFailure {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("HTTP exchange failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("cannot build the request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("the server answered {status}{hint}", status = .0, hint = status_hint(*.0))]
    Status(StatusCode),
    #[error("no complete answer within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("the answer is not UTF-8 text")]
    NotText,
    #[error("cannot read the exposition: {0}")]
    Parse(std::io::Error),
    #[error("no {0} series: is this the /metrics of a tandem server?")]
    Missing(&'static str),
    #[error("{0} went down between two scrapes: did the server restart?")]
    WentBackwards(String),
}

/// What to try after an answer other than 200.
fn status_hint(status: StatusCode) -> &'static str {
    if status == StatusCode::NOT_FOUND {
        " (a tandem admin endpoint serves its metrics at /metrics)"
    } else {
        ""
    }
}

/// One bucket of a Prometheus histogram: observations at most `le`,
/// cumulative.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub le: f64,
    pub count: f64,
}

/// The `q` quantile of a histogram given as cumulative `buckets`, as
/// Prometheus's `histogram_quantile` computes it: the rank's bucket is
/// found and the value interpolated linearly within it, from 0 for the
/// first bucket; a rank in the `+Inf` bucket gives the highest finite
/// bound. `None` without observations, without a `+Inf` bucket, with fewer
/// than two buckets, or for `q` outside 0..=1.
pub fn histogram_quantile(q: f64, buckets: &[Bucket]) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) {
        return None;
    }
    let mut buckets = buckets.to_vec();
    buckets.sort_by(|a, b| a.le.total_cmp(&b.le));
    if buckets.len() < 2 || buckets.last()?.le != f64::INFINITY {
        return None;
    }
    // Counts scraped while observations land may be a little out of step;
    // Prometheus makes them monotonic the same way.
    let mut highest = 0.0_f64;
    for bucket in &mut buckets {
        highest = highest.max(bucket.count);
        bucket.count = highest;
    }
    let observations = buckets.last()?.count;
    if observations <= 0.0 {
        return None;
    }
    let rank = q * observations;
    let finite = buckets.len() - 1;
    let index = buckets[..finite]
        .iter()
        .position(|bucket| bucket.count >= rank)
        .unwrap_or(finite);
    if index == finite {
        return Some(buckets[finite - 1].le);
    }
    let bucket = buckets[index];
    if index == 0 && bucket.le <= 0.0 {
        return Some(bucket.le);
    }
    let (start, below) = match index {
        0 => (0.0, 0.0),
        _ => (buckets[index - 1].le, buckets[index - 1].count),
    };
    Some(start + (bucket.le - start) * (rank - below) / (bucket.count - below))
}

/// What one scrape of a tandem server's `/metrics` said.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When the answer arrived.
    at: Instant,
    accepted: f64,
    rejected: f64,
    closed: BTreeMap<String, f64>,
    accept_errors: f64,
    /// By outcome; empty from a server without the series.
    udp_datagrams: BTreeMap<String, f64>,
    /// By kind; empty from a server without the series.
    tls_handshake_errors: BTreeMap<String, f64>,
    bytes_received: f64,
    bytes_sent: f64,
    active: f64,
    busy_seconds: BTreeMap<String, f64>,
    workers: BTreeMap<String, f64>,
    handoff_wait: Vec<Bucket>,
}

impl Snapshot {
    /// Reads a Prometheus text exposition received at `at`.
    pub fn parse(text: &str, at: Instant) -> Result<Snapshot, ScrapeFailure> {
        use prometheus_parse::Value;
        let lines = text.lines().map(|line| Ok(line.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).map_err(ScrapeFailure::Parse)?;
        let mut snapshot = Snapshot {
            at,
            accepted: f64::NAN,
            rejected: f64::NAN,
            closed: BTreeMap::new(),
            accept_errors: 0.0,
            udp_datagrams: BTreeMap::new(),
            tls_handshake_errors: BTreeMap::new(),
            bytes_received: f64::NAN,
            bytes_sent: f64::NAN,
            active: f64::NAN,
            busy_seconds: BTreeMap::new(),
            workers: BTreeMap::new(),
            handoff_wait: Vec::new(),
        };
        for sample in scrape.samples {
            let value = match &sample.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                Value::Histogram(buckets) => {
                    if sample.metric == HANDOFF_WAIT {
                        snapshot.handoff_wait = buckets
                            .iter()
                            .map(|b| Bucket {
                                le: b.less_than,
                                count: b.count,
                            })
                            .collect();
                    }
                    continue;
                }
                Value::Summary(_) => continue,
            };
            let label = |name: &str| sample.labels.get(name).unwrap_or("").to_owned();
            match sample.metric.as_str() {
                ACCEPTED => snapshot.accepted = value,
                REJECTED => snapshot.rejected = value,
                CLOSED => {
                    snapshot.closed.insert(label("reason"), value);
                }
                ACCEPT_ERRORS => snapshot.accept_errors += value,
                UDP_DATAGRAMS => {
                    snapshot.udp_datagrams.insert(label("outcome"), value);
                }
                TLS_HANDSHAKE_ERRORS => {
                    snapshot.tls_handshake_errors.insert(label("kind"), value);
                }
                BYTES_RECEIVED => snapshot.bytes_received = value,
                BYTES_SENT => snapshot.bytes_sent = value,
                ACTIVE => snapshot.active = value,
                BUSY_SECONDS => {
                    snapshot.busy_seconds.insert(label("runtime"), value);
                }
                WORKERS => {
                    snapshot.workers.insert(label("runtime"), value);
                }
                _ => {}
            }
        }
        for (name, value) in [
            (ACCEPTED, snapshot.accepted),
            (REJECTED, snapshot.rejected),
            (BYTES_RECEIVED, snapshot.bytes_received),
            (BYTES_SENT, snapshot.bytes_sent),
            (ACTIVE, snapshot.active),
        ] {
            if value.is_nan() {
                return Err(ScrapeFailure::Missing(name));
            }
        }
        for (name, empty) in [
            (CLOSED, snapshot.closed.is_empty()),
            (BUSY_SECONDS, snapshot.busy_seconds.is_empty()),
            (WORKERS, snapshot.workers.is_empty()),
            (HANDOFF_WAIT, snapshot.handoff_wait.is_empty()),
        ] {
            if empty {
                return Err(ScrapeFailure::Missing(name));
            }
        }
        Ok(snapshot)
    }

    /// True once every connection the server accepted is either still
    /// open, rejected, or counted closed, and no more are open than
    /// `active_before`: the server has seen the run's connections close and
    /// counted why. (It releases a connection's place in the active count a
    /// moment before it counts the close.)
    fn settled(&self, active_before: f64) -> bool {
        let closed: f64 = self.closed.values().sum();
        self.active <= active_before && self.accepted - self.rejected - closed == self.active
    }
}

/// Fetches and reads `url`.
pub async fn scrape(url: &MetricsUrl) -> Result<Snapshot, ScrapeError> {
    let fetched = tokio::time::timeout(SCRAPE_TIMEOUT, fetch(url)).await;
    let failed = |cause| ScrapeError {
        url: url.to_string(),
        cause,
    };
    let text = match fetched {
        Ok(Ok(text)) => text,
        Ok(Err(cause)) => return Err(failed(cause)),
        Err(_) => return Err(failed(ScrapeFailure::Timeout(SCRAPE_TIMEOUT))),
    };
    Snapshot::parse(&text, Instant::now()).map_err(failed)
}

async fn fetch(url: &MetricsUrl) -> Result<String, ScrapeFailure> {
    let stream = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(ScrapeFailure::Connect)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let request = Request::get(url.path_and_query.as_str())
        .header(HOST, url.authority.as_str())
        .body(Empty::<Bytes>::new())?;
    let exchange = async move {
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, ScrapeFailure>((status, body))
    };
    // The connection has to be driven for the exchange to progress; it
    // ends on its own once the exchange is over (or the server closes).
    let mut exchange = pin!(exchange);
    let mut connection = pin!(connection);
    let (status, body) = tokio::select! {
        biased;
        exchanged = &mut exchange => exchanged?,
        ended = &mut connection => {
            ended?;
            exchange.await?
        }
    };
    if !status.is_success() {
        return Err(ScrapeFailure::Status(status));
    }
    String::from_utf8(body.to_vec()).map_err(|_| ScrapeFailure::NotText)
}

/// Quantiles of the hand-off wait, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WaitQuantiles {
    pub p50: f64,
    pub p99: f64,
}

/// Figures over the measured window: from the scrape answered just before
/// it opened to the first scrape after the load stopped (bytes: to the one
/// after every connection closed, so that none are missing).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowFigures {
    /// Seconds between the two scrapes the busy ratios span.
    pub secs: f64,
    /// Per runtime (`acceptor`, `worker`, `shard-N`, `admin`): busy time
    /// over the window divided by the window times the runtime's workers,
    /// 0 to 1.
    pub busy_ratio: BTreeMap<String, f64>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

/// Connection events of the whole run: from before its first connect to
/// after its last close.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunFigures {
    pub connections_accepted: u64,
    pub connections_rejected: u64,
    /// By reason: `eof`, `reset`, `idle_timeout`, `shed`, `shutdown`,
    /// `error`.
    pub connections_closed: BTreeMap<String, u64>,
    /// Accept errors of every kind.
    pub accept_errors: u64,
    /// UDP datagrams by outcome: `echoed`, `rate_limited`, `reflection`,
    /// `error` (`serve --udp`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub udp_datagrams: BTreeMap<String, u64>,
    /// Failed TLS handshakes by kind: `closed`, `protocol`, `timeout`,
    /// `error` (`serve --tls-cert`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tls_handshake_errors: BTreeMap<String, u64>,
    /// Connections handed from accept to serving.
    pub handoffs: u64,
    /// Time from accept to the start of serving, from the server's
    /// histogram; absent when nothing was handed off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handoff_wait_us: Option<WaitQuantiles>,
}

/// What the server's metrics say about a run: the report's `server` key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerFigures {
    /// The metrics URL scraped.
    pub url: String,
    pub window: WindowFigures,
    pub run: RunFigures,
    /// Caveats about these figures, if any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl ServerFigures {
    /// The figures between the scrapes `run_start` (before the first
    /// connect), `window_start`, `window_end` and `settled` (after every
    /// close).
    pub fn between(
        url: &MetricsUrl,
        run_start: &Snapshot,
        window_start: &Snapshot,
        window_end: &Snapshot,
        settled: &Snapshot,
    ) -> Result<ServerFigures, ScrapeFailure> {
        let mut notes = Vec::new();
        let secs = window_end
            .at
            .saturating_duration_since(window_start.at)
            .as_secs_f64();
        let mut busy_ratio = BTreeMap::new();
        for (runtime, &end) in &window_end.busy_seconds {
            let start = window_start
                .busy_seconds
                .get(runtime)
                .copied()
                .unwrap_or(0.0);
            let busy = increase(&format!("{BUSY_SECONDS}{{runtime={runtime}}}"), start, end)?;
            let workers = window_end.workers.get(runtime).copied().unwrap_or(0.0);
            if workers <= 0.0 || secs <= 0.0 {
                continue;
            }
            let ratio = busy / (secs * workers);
            if ratio > 1.0 {
                // Possible only through the once-a-second busy total.
                notes.push(format!(
                    "{runtime} busy ratio {ratio:.2} shown as 1: the server adds up busy \
                     time once a second, which a {secs:.1} s window resolves coarsely"
                ));
            }
            busy_ratio.insert(runtime.clone(), ratio.min(1.0));
        }
        let count = |name: &str, start: f64, end: f64| -> Result<u64, ScrapeFailure> {
            Ok(increase(name, start, end)?.round() as u64)
        };
        // The increase of each series of a labelled counter over the run.
        let by_label = |name: &str,
                        label: &str,
                        start: &BTreeMap<String, f64>,
                        end: &BTreeMap<String, f64>|
         -> Result<BTreeMap<String, u64>, ScrapeFailure> {
            end.iter()
                .map(|(value, &last)| {
                    let first = start.get(value).copied().unwrap_or(0.0);
                    let series = format!("{name}{{{label}={value}}}");
                    Ok((value.clone(), count(&series, first, last)?))
                })
                .collect()
        };
        let connections_closed = by_label(CLOSED, "reason", &run_start.closed, &settled.closed)?;
        let handoff_wait = bucket_increase(&run_start.handoff_wait, &settled.handoff_wait)?;
        let handoffs = handoff_wait.last().map_or(0.0, |bucket| bucket.count);
        let quantile = |q| histogram_quantile(q, &handoff_wait).map(|seconds| seconds * 1e6);
        Ok(ServerFigures {
            url: url.to_string(),
            window: WindowFigures {
                secs,
                busy_ratio,
                bytes_received: count(
                    BYTES_RECEIVED,
                    window_start.bytes_received,
                    settled.bytes_received,
                )?,
                bytes_sent: count(BYTES_SENT, window_start.bytes_sent, settled.bytes_sent)?,
            },
            run: RunFigures {
                connections_accepted: count(ACCEPTED, run_start.accepted, settled.accepted)?,
                connections_rejected: count(REJECTED, run_start.rejected, settled.rejected)?,
                connections_closed,
                accept_errors: count(
                    ACCEPT_ERRORS,
                    run_start.accept_errors,
                    settled.accept_errors,
                )?,
                udp_datagrams: by_label(
                    UDP_DATAGRAMS,
                    "outcome",
                    &run_start.udp_datagrams,
                    &settled.udp_datagrams,
                )?,
                tls_handshake_errors: by_label(
                    TLS_HANDSHAKE_ERRORS,
                    "kind",
                    &run_start.tls_handshake_errors,
                    &settled.tls_handshake_errors,
                )?,
                handoffs: handoffs.round() as u64,
                handoff_wait_us: quantile(0.5)
                    .zip(quantile(0.99))
                    .map(|(p50, p99)| WaitQuantiles { p50, p99 }),
            },
            notes,
        })
    }

    /// Connections closed for `reason` during the run.
    pub fn closed(&self, reason: &str) -> u64 {
        self.run
            .connections_closed
            .get(reason)
            .copied()
            .unwrap_or(0)
    }
}

/// How much a counter grew; an error if it went down.
fn increase(name: &str, start: f64, end: f64) -> Result<f64, ScrapeFailure> {
    if end < start {
        return Err(ScrapeFailure::WentBackwards(name.to_owned()));
    }
    Ok(end - start)
}

/// The histogram of the observations made between two scrapes.
fn bucket_increase(start: &[Bucket], end: &[Bucket]) -> Result<Vec<Bucket>, ScrapeFailure> {
    end.iter()
        .map(|bucket| {
            let before = start
                .iter()
                .find(|b| b.le == bucket.le)
                .map_or(0.0, |b| b.count);
            let name = format!("{HANDOFF_WAIT}_bucket{{le={}}}", bucket.le);
            Ok(Bucket {
                le: bucket.le,
                count: increase(&name, before, bucket.count)?,
            })
        })
        .collect()
}

/// The scrapes of one run, taken when the run says.
#[derive(Debug)]
pub struct ServerWatch {
    url: MetricsUrl,
    run_start: Snapshot,
    window_start: Option<Snapshot>,
    notes: Vec<String>,
}

impl ServerWatch {
    /// Scrapes `url` before the run's first connection. A URL that does
    /// not answer fails here, before any load.
    pub async fn begin(url: MetricsUrl) -> Result<ServerWatch, ScrapeError> {
        let run_start = scrape(&url).await?;
        Ok(ServerWatch {
            url,
            run_start,
            window_start: None,
            notes: Vec::new(),
        })
    }

    /// The metrics URL.
    pub fn url(&self) -> &MetricsUrl {
        &self.url
    }

    /// Records the scrape that opens the window, which was to open at
    /// `opened` and was held shut until this scrape was answered.
    pub fn window_opened(&mut self, snapshot: Snapshot, opened: Instant) {
        if snapshot.at > opened {
            let late = snapshot.at - opened;
            self.notes.push(format!(
                "the scrape before the window was answered {:.1} ms after the window was to \
                 open: the window opened then, and is that much shorter",
                late.as_secs_f64() * 1e3
            ));
        }
        self.window_start = Some(snapshot);
    }

    /// Scrapes once the load has stopped, then polls until the server has
    /// seen every connection of the run close (for 2 s at most, after which
    /// it notes that it gave up), and once more after that:
    /// the threads that served the last connections flush their byte counts
    /// when they go idle, a moment after the closes are counted.
    pub async fn finish(mut self) -> Result<ServerFigures, ScrapeError> {
        let window_end = scrape(&self.url).await?;
        let window_start = self
            .window_start
            .take()
            .unwrap_or_else(|| self.run_start.clone());
        let active_before = self.run_start.active;
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut latest = window_end.clone();
        while !latest.settled(active_before) && Instant::now() < deadline {
            tokio::time::sleep(SETTLE_POLL).await;
            latest = scrape(&self.url).await?;
        }
        if latest.settled(active_before) {
            tokio::time::sleep(SETTLE_POLL).await;
            latest = scrape(&self.url).await?;
        } else {
            self.notes.push(format!(
                "{} s after the run the server still had {} connections open (before it: {}) \
                 or closes not yet counted; connection figures may be incomplete",
                SETTLE_TIMEOUT.as_secs(),
                latest.active,
                active_before
            ));
        }
        let mut figures = ServerFigures::between(
            &self.url,
            &self.run_start,
            &window_start,
            &window_end,
            &latest,
        )
        .map_err(|cause| ScrapeError {
            url: self.url.to_string(),
            cause,
        })?;
        figures.notes.splice(0..0, self.notes);
        Ok(figures)
    }
}

impl fmt::Display for ServerFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  server, from {}", self.url)?;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, value: String| {
            writeln!(f, "    {name:<20} {value}")
        };
        let busy: Vec<String> = runtimes_in_order(&self.window.busy_ratio)
            .map(|(runtime, ratio)| format!("{runtime} {ratio:.2}"))
            .collect();
        row(
            f,
            "busy (window)",
            format!("{}  over {:.1} s", busy.join("  "), self.window.secs),
        )?;
        row(
            f,
            "bytes (window)",
            format!(
                "received {}  sent {}",
                self.window.bytes_received, self.window.bytes_sent
            ),
        )?;
        let run = &self.run;
        let closed = nonzero(&run.connections_closed);
        row(
            f,
            "connections (run)",
            format!(
                "accepted {}  rejected {}  closed: {}",
                run.connections_accepted,
                run.connections_rejected,
                if closed.is_empty() {
                    "none".to_owned()
                } else {
                    closed.join("  ")
                }
            ),
        )?;
        row(
            f,
            "hand-off wait (run)",
            match run.handoff_wait_us {
                Some(wait) => format!(
                    "p50 {:.1} µs  p99 {:.1} µs  over {} connections",
                    wait.p50, wait.p99, run.handoffs
                ),
                None => "no connection handed off".to_owned(),
            },
        )?;
        row(f, "accept errors (run)", run.accept_errors.to_string())?;
        // Only what happened: a plain TCP run has no datagram and no
        // handshake to speak of.
        for (name, counts) in [
            ("datagrams (run)", &run.udp_datagrams),
            ("tls handshakes failed (run)", &run.tls_handshake_errors),
        ] {
            let counted = nonzero(counts);
            if !counted.is_empty() {
                row(f, name, counted.join("  "))?;
            }
        }
        for note in &self.notes {
            writeln!(f, "    note: {note}")?;
        }
        Ok(())
    }
}

/// `<label> <count>` for each count above 0.
fn nonzero(counts: &BTreeMap<String, u64>) -> Vec<String> {
    counts
        .iter()
        .filter(|&(_, &count)| count > 0)
        .map(|(label, count)| format!("{label} {count}"))
        .collect()
}

/// Runtimes in the order of the data path: acceptor, worker, shards by
/// number, admin, then anything else.
fn runtimes_in_order(ratios: &BTreeMap<String, f64>) -> impl Iterator<Item = (&str, f64)> {
    let mut ordered: Vec<(&str, f64)> = ratios
        .iter()
        .map(|(runtime, &ratio)| (runtime.as_str(), ratio))
        .collect();
    ordered.sort_by_key(|&(runtime, _)| {
        let shard = runtime
            .strip_prefix("shard-")
            .and_then(|n| n.parse::<u64>().ok());
        match (runtime, shard) {
            ("acceptor", _) => (0, 0, String::new()),
            ("worker", _) => (1, 0, String::new()),
            (_, Some(n)) => (2, n, String::new()),
            ("admin", _) => (3, 0, String::new()),
            (other, None) => (4, 0, other.to_owned()),
        }
    });
    ordered.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(pairs: &[(f64, f64)]) -> Vec<Bucket> {
        pairs
            .iter()
            .map(|&(le, count)| Bucket { le, count })
            .collect()
    }

    #[test]
    fn a_quantile_is_interpolated_linearly_within_its_bucket() {
        // 10 observations up to 1, 20 in (1, 2], 10 in (2, 4].
        let histogram = buckets(&[(1.0, 10.0), (2.0, 30.0), (4.0, 40.0), (f64::INFINITY, 40.0)]);
        // Rank 20 is halfway through the (1, 2] bucket's 20.
        assert_eq!(histogram_quantile(0.5, &histogram), Some(1.5));
        // Rank 39.6 is 9.6 of the (2, 4] bucket's 10.
        let p99 = histogram_quantile(0.99, &histogram).unwrap();
        assert!((p99 - 3.92).abs() < 1e-9, "{p99}");
    }

    #[test]
    fn the_first_bucket_is_interpolated_from_zero() {
        let histogram = buckets(&[(0.001, 4.0), (0.01, 4.0), (f64::INFINITY, 4.0)]);
        assert_eq!(histogram_quantile(0.25, &histogram), Some(0.000_25));
    }

    #[test]
    fn a_rank_in_the_infinite_bucket_is_the_highest_finite_bound() {
        let histogram = buckets(&[(1.0, 1.0), (10.0, 2.0), (f64::INFINITY, 100.0)]);
        assert_eq!(histogram_quantile(0.99, &histogram), Some(10.0));
    }

    #[test]
    fn buckets_are_taken_in_order_of_their_bounds_whatever_the_input_order() {
        let histogram = buckets(&[(f64::INFINITY, 40.0), (2.0, 30.0), (4.0, 40.0), (1.0, 10.0)]);
        assert_eq!(histogram_quantile(0.5, &histogram), Some(1.5));
    }

    #[test]
    fn an_empty_or_malformed_histogram_has_no_quantile() {
        let empty = buckets(&[(1.0, 0.0), (f64::INFINITY, 0.0)]);
        assert_eq!(histogram_quantile(0.5, &empty), None);
        let no_infinity = buckets(&[(1.0, 5.0), (2.0, 10.0)]);
        assert_eq!(histogram_quantile(0.5, &no_infinity), None);
        let full = buckets(&[(1.0, 5.0), (f64::INFINITY, 10.0)]);
        assert_eq!(histogram_quantile(1.5, &full), None);
    }

    /// An exposition as a tandem server renders it, with `counts` for the
    /// counters and `busy` seconds for the worker runtime (2 workers).
    fn exposition(
        accepted: u64,
        eof: u64,
        active: u64,
        bytes: u64,
        busy: f64,
        waits: [u64; 3],
    ) -> String {
        format!(
            "# TYPE tandem_connections_accepted_total counter\n\
             tandem_connections_accepted_total {accepted}\n\
             # TYPE tandem_connections_rejected_total counter\n\
             tandem_connections_rejected_total 0\n\
             # TYPE tandem_connections_closed_total counter\n\
             tandem_connections_closed_total{{reason=\"eof\"}} {eof}\n\
             tandem_connections_closed_total{{reason=\"reset\"}} 0\n\
             # TYPE tandem_accept_errors_total counter\n\
             tandem_accept_errors_total{{kind=\"emfile\"}} 1\n\
             tandem_accept_errors_total{{kind=\"aborted\"}} 2\n\
             # TYPE tandem_bytes_received_total counter\n\
             tandem_bytes_received_total {bytes}\n\
             # TYPE tandem_bytes_sent_total counter\n\
             tandem_bytes_sent_total {bytes}\n\
             # TYPE tandem_connections_active gauge\n\
             tandem_connections_active {active}\n\
             # TYPE tandem_runtime_workers gauge\n\
             tandem_runtime_workers{{runtime=\"worker\"}} 2\n\
             tandem_runtime_workers{{runtime=\"admin\"}} 1\n\
             # TYPE tandem_handoff_wait_seconds histogram\n\
             tandem_handoff_wait_seconds_bucket{{le=\"0.00001\"}} {}\n\
             tandem_handoff_wait_seconds_bucket{{le=\"0.0001\"}} {}\n\
             tandem_handoff_wait_seconds_bucket{{le=\"+Inf\"}} {}\n\
             tandem_handoff_wait_seconds_sum 0.001\n\
             tandem_handoff_wait_seconds_count {}\n\
             # TYPE tandem_runtime_busy_seconds_total counter\n\
             tandem_runtime_busy_seconds_total{{runtime=\"worker\"}} {busy}\n\
             tandem_runtime_busy_seconds_total{{runtime=\"admin\"}} 0.5\n",
            waits[0], waits[1], waits[2], waits[2]
        )
    }

    fn snapshot(text: &str, at: Instant) -> Snapshot {
        Snapshot::parse(text, at).unwrap()
    }

    /// `exposition` plus UDP and TLS handshake counters.
    fn with_transports(echoed: u64, rate_limited: u64, timeouts: u64) -> String {
        exposition(10, 10, 0, 1000, 5.0, [0, 0, 0])
            + &format!(
                "# TYPE tandem_udp_datagrams_total counter\n\
                 tandem_udp_datagrams_total{{outcome=\"echoed\"}} {echoed}\n\
                 tandem_udp_datagrams_total{{outcome=\"rate_limited\"}} {rate_limited}\n\
                 # TYPE tandem_tls_handshake_errors_total counter\n\
                 tandem_tls_handshake_errors_total{{kind=\"timeout\"}} {timeouts}\n\
                 tandem_tls_handshake_errors_total{{kind=\"protocol\"}} 0\n"
            )
    }

    #[test]
    fn datagrams_and_failed_handshakes_are_counted_over_the_run_by_label() {
        let t0 = Instant::now();
        let url = MetricsUrl::from_str("http://127.0.0.1:9/metrics").unwrap();
        let start = snapshot(&with_transports(100, 5, 1), t0);
        let end = snapshot(&with_transports(1100, 25, 3), t0 + Duration::from_secs(1));
        let figures = ServerFigures::between(&url, &start, &start, &end, &end).unwrap();
        assert_eq!(figures.run.udp_datagrams["echoed"], 1000);
        assert_eq!(figures.run.udp_datagrams["rate_limited"], 20);
        assert_eq!(figures.run.tls_handshake_errors["timeout"], 2);
        assert_eq!(figures.run.tls_handshake_errors["protocol"], 0);
        let table = figures.to_string();
        assert!(table.contains("echoed 1000  rate_limited 20"), "{table}");
        assert!(table.contains("timeout 2"), "{table}");
        assert!(!table.contains("protocol"), "{table}");
        // A counter that goes down is a restarted server, not a figure.
        assert!(ServerFigures::between(&url, &end, &end, &start, &start).is_err());
    }

    #[test]
    fn figures_are_the_increases_between_the_scrapes_that_cover_them() {
        let t0 = Instant::now();
        let url = MetricsUrl::from_str("http://127.0.0.1:9/metrics").unwrap();
        let run_start = snapshot(&exposition(10, 10, 0, 1000, 5.0, [0, 0, 0]), t0);
        let window_start = snapshot(&exposition(14, 10, 4, 3000, 6.0, [2, 4, 4]), t0);
        let window_end = snapshot(
            &exposition(14, 10, 4, 9000, 8.0, [2, 4, 4]),
            t0 + Duration::from_secs(2),
        );
        let settled = snapshot(
            &exposition(14, 14, 0, 10_000, 8.5, [2, 4, 4]),
            t0 + Duration::from_secs(3),
        );
        let figures =
            ServerFigures::between(&url, &run_start, &window_start, &window_end, &settled).unwrap();
        assert_eq!(figures.window.secs, 2.0);
        // 2 busy seconds over 2 s of 2 workers.
        assert_eq!(figures.window.busy_ratio["worker"], 0.5);
        assert_eq!(figures.window.busy_ratio["admin"], 0.0);
        assert_eq!(figures.window.bytes_received, 7000);
        assert_eq!(figures.run.connections_accepted, 4);
        assert_eq!(figures.closed("eof"), 4);
        assert_eq!(figures.closed("reset"), 0);
        // The same accept errors before and after: none during the run.
        assert_eq!(figures.run.accept_errors, 0);
        assert_eq!(figures.run.handoffs, 4);
        // Two waits up to 10 µs, two in (10, 100] µs: the median is the
        // top of the first bucket.
        let wait = figures.run.handoff_wait_us.unwrap();
        assert!((wait.p50 - 10.0).abs() < 1e-6, "{wait:?}");
        assert!(figures.notes.is_empty(), "{:?}", figures.notes);
    }

    #[test]
    fn a_counter_that_goes_down_means_the_server_restarted() {
        let t0 = Instant::now();
        let url = MetricsUrl::from_str("http://127.0.0.1:9/metrics").unwrap();
        let before = snapshot(&exposition(10, 10, 0, 1000, 5.0, [0, 0, 0]), t0);
        let after = snapshot(&exposition(0, 0, 0, 0, 0.0, [0, 0, 0]), t0);
        let result = ServerFigures::between(&url, &before, &before, &after, &after);
        assert!(
            matches!(result, Err(ScrapeFailure::WentBackwards(_))),
            "{result:?}"
        );
    }

    #[test]
    fn an_exposition_without_tandem_series_is_refused_by_name() {
        let result = Snapshot::parse("# TYPE up gauge\nup 1\n", Instant::now());
        assert!(
            matches!(result, Err(ScrapeFailure::Missing(ACCEPTED))),
            "{result:?}"
        );
    }

    #[test]
    fn the_server_has_settled_once_every_accepted_connection_is_open_or_counted() {
        let t0 = Instant::now();
        // 14 accepted, 10 closed, 4 open: settled if 4 were open before.
        let open = snapshot(&exposition(14, 10, 4, 0, 0.0, [0, 0, 0]), t0);
        assert!(open.settled(4.0));
        assert!(!open.settled(0.0));
        // 14 accepted, 13 closed, none open: one close not yet counted.
        let counting = snapshot(&exposition(14, 13, 0, 0, 0.0, [0, 0, 0]), t0);
        assert!(!counting.settled(0.0));
    }

    #[test]
    fn only_plain_http_urls_with_a_host_are_accepted() {
        for good in [
            "http://127.0.0.1:9000/metrics",
            "http://[::1]:9000/metrics",
            "http://localhost/metrics?x=1",
        ] {
            assert!(MetricsUrl::from_str(good).is_ok(), "{good}");
        }
        for bad in [
            "nonsense",
            "ftp://x/metrics",
            "https://127.0.0.1/metrics",
            "http://",
            "http://127.0.0.1:99999/metrics",
            "http://user@127.0.0.1/metrics",
            "127.0.0.1:9000/metrics",
        ] {
            assert!(MetricsUrl::from_str(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_url_keeps_its_host_port_and_path() {
        let url = MetricsUrl::from_str("http://[::1]:9000/metrics?x=1").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.authority.as_str()),
            ("::1", 9000, "[::1]:9000")
        );
        assert_eq!(url.path_and_query, "/metrics?x=1");
        let admin = MetricsUrl::for_admin("127.0.0.1:9001".parse().unwrap());
        assert_eq!(admin.to_string(), "http://127.0.0.1:9001/metrics");
    }
}
