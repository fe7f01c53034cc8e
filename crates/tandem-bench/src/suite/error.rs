//! Why a suite could not run, sorted by what the caller does about it: a
//! bad option exits 2, as bad flags do; anything else exits 1.

use std::path::PathBuf;

use thiserror::Error;

/// Why a suite could not run.
#[derive(Debug, Error)]
pub enum SuiteError {
    /// A server would not start.
    #[error("cannot start server {name}: {why}")]
    Server { name: String, why: String },
    /// The load generator failed outright.
    #[error("load generator failed against {server}: {cause}")]
    Bench {
        server: String,
        cause: crate::bench::BenchError,
    },
    /// A server's metrics could not be scraped.
    #[error("{server}: {cause}")]
    Scrape {
        server: String,
        cause: crate::bench::server_metrics::ScrapeError,
    },
    /// The peer servers could not be built.
    #[error("cannot build the peer servers of {dir}: {why}")]
    Peers { dir: PathBuf, why: String },
    /// What a server spends per message could not be counted.
    #[error("cannot count what {server} spends per message: {why}")]
    Cost { server: String, why: String },
    /// Results could not be written.
    #[error("cannot write {path}: {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// An option is out of range, or a needed file is missing: refused
    /// before anything ran, as bad flags are.
    #[error("{0}")]
    Invalid(String),
    /// The suite could not set itself up on this machine: its own binary,
    /// the CPU split, a certificate, a scraper.
    #[error("{0}")]
    Setup(String),
    /// A thread of the suite panicked.
    #[error("{thread} panicked")]
    Panicked { thread: String },
}
