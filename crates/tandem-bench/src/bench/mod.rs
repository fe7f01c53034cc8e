//! `tandem bench`: a load generator whose numbers can be trusted.
//!
//! - `options`: [`BenchOptions`], their defaults and their checks;
//! - `error`: [`BenchError`], why a run could not be made;
//! - `measure`: what every run does whatever it goes over: the warm-up, the
//!   window, the pacing, the progress bar, the server's scrapes and the
//!   report;
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
//!
//! This file holds the run itself: it checks the options, opens the
//! connections (or leaves them to the churners, or to `udp`) and starts the
//! load. The children import nothing from it.

mod churn;
mod client;
mod error;
mod measure;
mod options;
pub mod pattern;
pub mod report;
pub mod server_metrics;
mod stats;
mod tls;
mod udp;

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use self::client::{connect, drive};
pub use self::error::BenchError;
use self::measure::{Load, measure, pacing};
pub use self::options::BenchOptions;
pub use self::report::{Latency, Report};
use self::tls::ClientTls;
use tandem::transport::Transport;

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
