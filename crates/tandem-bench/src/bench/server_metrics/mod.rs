//! The server's side of a run (`tandem bench --server-metrics URL`): what
//! a tandem server's admin endpoint says about the load the bench put on it.
//!
//! This module owns the types of that side (the [`Snapshot`] of one
//! scrape, the [`ServerFigures`] of a run, the errors) and [`ServerWatch`],
//! which takes the scrapes when the bench's run says; it never decides when
//! to scrape. Its parts:
//! - `scrape.rs`: where the endpoint is, and one GET of it with a deadline;
//! - `parse.rs`: the exposition into a [`Snapshot`];
//! - `derive.rs`: the figures between snapshots;
//! - `format.rs`: the figures as rows of the text report.
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

mod derive;
mod format;
mod parse;
mod scrape;

use std::collections::BTreeMap;
use std::time::Duration;

use hyper::StatusCode;
use serde::Serialize;
use thiserror::Error;
use tokio::time::Instant;

pub use self::derive::histogram_quantile;
pub use self::scrape::{MetricsUrl, UrlError, scrape};

/// How far ahead of the measured window its first scrape starts, so that
/// the answer is in before the window opens.
pub(crate) const WINDOW_LEAD: Duration = Duration::from_millis(100);
/// How often the server is polled after the run until it has seen every
/// connection close...
const SETTLE_POLL: Duration = Duration::from_millis(50);
/// ...and for how long at most.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// Connections closed for `reason` during the run.
    pub fn closed(&self, reason: &str) -> u64 {
        self.run
            .connections_closed
            .get(reason)
            .copied()
            .unwrap_or(0)
    }
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
