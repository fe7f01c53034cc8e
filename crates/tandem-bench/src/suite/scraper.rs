//! A scraper in the manner of a Prometheus server: fetches a tandem
//! server's `/metrics` at a fixed interval, on a thread of its own, until
//! stopped. The `admin` section loads a server while this watches it, to
//! measure what being watched costs.

use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

use super::error::SuiteError;
use crate::bench::server_metrics::{self, MetricsUrl, ScrapeError};

/// A running scraper.
#[derive(Debug)]
pub struct Scraper {
    stop: oneshot::Sender<()>,
    thread: JoinHandle<Result<u64, ScrapeError>>,
}

impl Scraper {
    /// Scrapes `url` now and then every `interval`.
    pub fn start(url: MetricsUrl, interval: Duration) -> Result<Scraper, SuiteError> {
        let unable = |err: std::io::Error| {
            SuiteError::Setup(format!("cannot start a scraper of {url}: {err}"))
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(unable)?;
        let (stop, mut stopped) = oneshot::channel::<()>();
        let scrape_url = url.clone();
        let thread = std::thread::Builder::new()
            .name("suite-scraper".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut ticks = tokio::time::interval(interval);
                    // A slow scrape delays the next one, as Prometheus does,
                    // rather than bunching them up.
                    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let mut scrapes = 0;
                    loop {
                        tokio::select! {
                            biased;
                            _ = &mut stopped => return Ok(scrapes),
                            _ = ticks.tick() => {
                                server_metrics::scrape(&scrape_url).await?;
                                scrapes += 1;
                            }
                        }
                    }
                })
            })
            .map_err(unable)?;
        Ok(Scraper { stop, thread })
    }

    /// Stops scraping; returns how many scrapes were made, or the first
    /// that failed, as a failure of `server`.
    pub fn stop(self, server: &str) -> Result<u64, SuiteError> {
        // The scraper may have ended already, on a failed scrape.
        let _ = self.stop.send(());
        match self.thread.join() {
            Ok(Ok(scrapes)) => Ok(scrapes),
            Ok(Err(cause)) => Err(SuiteError::Scrape {
                server: server.to_owned(),
                cause,
            }),
            Err(_) => Err(SuiteError::Panicked {
                thread: format!("the scraper of {server}"),
            }),
        }
    }
}
