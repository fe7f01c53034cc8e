//! Parsing: a Prometheus text exposition, read with `prometheus-parse`,
//! into the [`Snapshot`] of the series a tandem server exports. This module
//! owns the series' names and refuses an exposition that lacks one the
//! figures need; it never compares two scrapes (that is `derive.rs`).

use std::collections::BTreeMap;

use prometheus_parse::{Sample, Value};
use tokio::time::Instant;

use super::{Bucket, ScrapeFailure, Snapshot};

pub(super) const ACCEPTED: &str = "tandem_connections_accepted_total";
pub(super) const REJECTED: &str = "tandem_connections_rejected_total";
pub(super) const CLOSED: &str = "tandem_connections_closed_total";
pub(super) const ACCEPT_ERRORS: &str = "tandem_accept_errors_total";
pub(super) const UDP_DATAGRAMS: &str = "tandem_udp_datagrams_total";
pub(super) const TLS_HANDSHAKE_ERRORS: &str = "tandem_tls_handshake_errors_total";
pub(super) const BYTES_RECEIVED: &str = "tandem_bytes_received_total";
pub(super) const BYTES_SENT: &str = "tandem_bytes_sent_total";
pub(super) const ACTIVE: &str = "tandem_connections_active";
pub(super) const BUSY_SECONDS: &str = "tandem_runtime_busy_seconds_total";
pub(super) const WORKERS: &str = "tandem_runtime_workers";
pub(super) const HANDOFF_WAIT: &str = "tandem_handoff_wait_seconds";

impl Snapshot {
    /// Reads a Prometheus text exposition received at `at`.
    pub fn parse(text: &str, at: Instant) -> Result<Snapshot, ScrapeFailure> {
        let lines = text.lines().map(|line| Ok(line.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).map_err(ScrapeFailure::Parse)?;
        let mut snapshot = Snapshot::empty(at);
        for sample in &scrape.samples {
            snapshot.take(sample);
        }
        snapshot.check_complete()?;
        Ok(snapshot)
    }

    /// A snapshot that has read nothing yet: a series that must be there
    /// is NaN (or empty) until it is read.
    fn empty(at: Instant) -> Snapshot {
        Snapshot {
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
        }
    }

    /// Records `sample` if it is one of the series the figures use.
    fn take(&mut self, sample: &Sample) {
        let value = match &sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => {
                if sample.metric == HANDOFF_WAIT {
                    self.handoff_wait = buckets
                        .iter()
                        .map(|b| Bucket {
                            le: b.less_than,
                            count: b.count,
                        })
                        .collect();
                }
                return;
            }
            Value::Summary(_) => return,
        };
        let label = |name: &str| sample.labels.get(name).unwrap_or("").to_owned();
        match sample.metric.as_str() {
            ACCEPTED => self.accepted = value,
            REJECTED => self.rejected = value,
            CLOSED => {
                self.closed.insert(label("reason"), value);
            }
            ACCEPT_ERRORS => self.accept_errors += value,
            UDP_DATAGRAMS => {
                self.udp_datagrams.insert(label("outcome"), value);
            }
            TLS_HANDSHAKE_ERRORS => {
                self.tls_handshake_errors.insert(label("kind"), value);
            }
            BYTES_RECEIVED => self.bytes_received = value,
            BYTES_SENT => self.bytes_sent = value,
            ACTIVE => self.active = value,
            BUSY_SECONDS => {
                self.busy_seconds.insert(label("runtime"), value);
            }
            WORKERS => {
                self.workers.insert(label("runtime"), value);
            }
            _ => {}
        }
    }

    /// Names the first series the figures need that the exposition lacked.
    fn check_complete(&self) -> Result<(), ScrapeFailure> {
        for (name, value) in [
            (ACCEPTED, self.accepted),
            (REJECTED, self.rejected),
            (BYTES_RECEIVED, self.bytes_received),
            (BYTES_SENT, self.bytes_sent),
            (ACTIVE, self.active),
        ] {
            if value.is_nan() {
                return Err(ScrapeFailure::Missing(name));
            }
        }
        for (name, empty) in [
            (CLOSED, self.closed.is_empty()),
            (BUSY_SECONDS, self.busy_seconds.is_empty()),
            (WORKERS, self.workers.is_empty()),
            (HANDOFF_WAIT, self.handoff_wait.is_empty()),
        ] {
            if empty {
                return Err(ScrapeFailure::Missing(name));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exposition_without_tandem_series_is_refused_by_name() {
        let result = Snapshot::parse("# TYPE up gauge\nup 1\n", Instant::now());
        assert!(
            matches!(result, Err(ScrapeFailure::Missing(ACCEPTED))),
            "{result:?}"
        );
    }
}
