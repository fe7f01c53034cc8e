//! Why a run of `tandem bench` could not be made: the one error its
//! options, its set-up, its connections and the server's scrapes report.

use std::net::SocketAddr;

use thiserror::Error;

use super::server_metrics::ScrapeError;

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
