//! The figures of a run, as a table for people and as JSON with stable keys
//! for scripts.

use std::fmt;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::server_metrics::ServerFigures;

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    /// Percentiles of `histogram` (all 0 when it is empty).
    pub fn of(histogram: &Histogram<u64>) -> Latency {
        Latency {
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }
}

/// The TLS handshakes of a run (warm-up included): how many, and how many
/// of them resumed an earlier session (`--tls-resume`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Handshakes {
    pub full: u64,
    pub resumed: u64,
}

/// What a run measured. The field names are the JSON keys and stay stable.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `closed`, `open` or `churn`.
    pub mode: &'static str,
    /// What the load went over: `tcp`, `tls` or `udp`.
    pub transport: &'static str,
    /// The server measured.
    pub target: String,
    pub connections: usize,
    pub message_size: usize,
    pub pipeline: usize,
    /// Messages echoed and verified within the measured window.
    pub messages: u64,
    /// Connections (UDP: sockets) that failed: I/O errors, wrong bytes,
    /// early closes; over UDP, also a window whose every datagram was lost.
    pub errors: u64,
    /// Length of the measured window (warm-up excluded).
    pub duration_secs: f64,
    pub msgs_per_sec: f64,
    /// Echoed payload bytes per second.
    pub bytes_per_sec: f64,
    /// Round-trip latency; from the intended send time in the open loop,
    /// from the start of the connect in churn.
    pub latency_us: Latency,
    /// Open loop: messages per second asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_rate: Option<f64>,
    /// Open loop: messages per second actually sent on schedule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_rate: Option<f64>,
    /// Open loop: false when sends fell more than 5% behind the schedule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_up: Option<bool>,
    /// Churn: connections opened, used and closed per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connects_per_sec: Option<f64>,
    /// UDP: datagrams sent within the window and never echoed within the
    /// loss timeout. Loss is not an error: UDP may drop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
    /// UDP: `lost` over the datagrams sent within the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_ratio: Option<f64>,
    /// TLS: the run's handshakes, full and resumed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_handshakes: Option<Handshakes>,
    /// CPU time (user + system) the generator used per message.
    pub generator_cpu_us_per_msg: f64,
    /// The first error, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// With `--server-metrics`: what the server's own metrics say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerFigures>,
}

#[cfg(test)]
impl Report {
    /// A closed-loop run's report with these figures and nothing else, for
    /// the tests of what reads reports.
    pub(crate) fn fixture(latency_us: Latency, msgs_per_sec: f64, bytes_per_sec: f64) -> Report {
        Report {
            mode: "closed",
            transport: "tcp",
            target: "127.0.0.1:9".to_owned(),
            connections: 1,
            message_size: 64,
            pipeline: 1,
            messages: 1,
            errors: 0,
            duration_secs: 1.0,
            msgs_per_sec,
            bytes_per_sec,
            latency_us,
            target_rate: None,
            sent_rate: None,
            kept_up: None,
            connects_per_sec: None,
            lost: None,
            loss_ratio: None,
            tls_handshakes: None,
            generator_cpu_us_per_msg: 1.0,
            first_error: None,
            server: None,
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sockets = if self.transport == "udp" {
            "sockets"
        } else {
            "connections"
        };
        writeln!(
            f,
            "{} loop against {} over {}: {} {sockets}, {} B messages, pipeline {}, {:.1} s measured",
            self.mode,
            self.target,
            self.transport,
            self.connections,
            self.message_size,
            self.pipeline,
            self.duration_secs
        )?;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, value: String| {
            writeln!(f, "  {name:<22} {value}")
        };
        if let Some(rate) = self.connects_per_sec {
            row(f, "connects/s", format!("{rate:.0}"))?;
        }
        row(f, "messages/s", format!("{:.0}", self.msgs_per_sec))?;
        row(f, "bytes/s", format!("{:.0}", self.bytes_per_sec))?;
        if let (Some(target), Some(sent)) = (self.target_rate, self.sent_rate) {
            row(
                f,
                "target rate",
                format!("{target:.0} msg/s, sent {sent:.0} msg/s"),
            )?;
        }
        let l = self.latency_us;
        row(
            f,
            "latency (µs)",
            format!(
                "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                l.p50, l.p90, l.p99, l.p999, l.max
            ),
        )?;
        row(f, "messages", self.messages.to_string())?;
        if let Some(handshakes) = self.tls_handshakes {
            row(
                f,
                "tls handshakes",
                format!("{} full  {} resumed", handshakes.full, handshakes.resumed),
            )?;
        }
        if let (Some(lost), Some(ratio)) = (self.lost, self.loss_ratio) {
            row(
                f,
                "lost",
                format!("{lost} ({:.2}% of the window's datagrams)", ratio * 100.0),
            )?;
        }
        row(f, "errors", self.errors.to_string())?;
        row(
            f,
            "generator CPU",
            format!("{:.2} µs per message", self.generator_cpu_us_per_msg),
        )?;
        if self.kept_up == Some(false) {
            writeln!(
                f,
                "  warning: sends fell behind the schedule: the generator (or the server's \
                 backpressure) could not keep the target rate"
            )?;
        }
        if let Some(error) = &self.first_error {
            writeln!(f, "  first error: {error}")?;
        }
        if let Some(server) = &self.server {
            write!(f, "{server}")?;
        }
        Ok(())
    }
}
