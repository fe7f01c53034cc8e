//! Formatting: the server's figures as rows of the bench's text report.
//! This module owns only their wording and order.

use std::collections::BTreeMap;
use std::fmt;

use super::ServerFigures;

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
