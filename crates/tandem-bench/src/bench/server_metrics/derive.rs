//! Deriving: the figures of a run from the snapshots that bound it. This
//! module owns the arithmetic between two scrapes (increases, busy ratios,
//! the hand-off wait's quantiles) and the test for a server that has seen
//! the run end; it never fetches or parses.

use std::collections::BTreeMap;

use super::parse::{
    ACCEPT_ERRORS, ACCEPTED, BUSY_SECONDS, BYTES_RECEIVED, BYTES_SENT, CLOSED, HANDOFF_WAIT,
    REJECTED, TLS_HANDSHAKE_ERRORS, UDP_DATAGRAMS,
};
use super::{
    Bucket, MetricsUrl, RunFigures, ScrapeFailure, ServerFigures, Snapshot, WaitQuantiles,
    WindowFigures,
};

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

impl ServerFigures {
    /// The figures between the scrapes `run_start` (before the first
    /// connect), `window_start`, `window_end` and `settled` (after every
    /// close). Counters are compared in a fixed order, so that a restarted
    /// server is always named by the same series.
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
        let busy_ratio = busy_ratios(window_start, window_end, secs, &mut notes)?;
        let connections_closed = by_label(CLOSED, "reason", &run_start.closed, &settled.closed)?;
        let handoff_wait = bucket_increase(&run_start.handoff_wait, &settled.handoff_wait)?;
        let handoffs = handoff_wait.last().map_or(0.0, |bucket| bucket.count);
        let window = WindowFigures {
            secs,
            busy_ratio,
            bytes_received: count(
                BYTES_RECEIVED,
                window_start.bytes_received,
                settled.bytes_received,
            )?,
            bytes_sent: count(BYTES_SENT, window_start.bytes_sent, settled.bytes_sent)?,
        };
        let run = RunFigures {
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
            handoff_wait_us: wait_quantiles(&handoff_wait),
        };
        Ok(ServerFigures {
            url: url.to_string(),
            window,
            run,
            notes,
        })
    }
}

/// Per runtime, busy time over `secs` times its workers, capped at 1 (with
/// a note when the cap was needed).
fn busy_ratios(
    window_start: &Snapshot,
    window_end: &Snapshot,
    secs: f64,
    notes: &mut Vec<String>,
) -> Result<BTreeMap<String, f64>, ScrapeFailure> {
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
    Ok(busy_ratio)
}

/// The p50 and p99 of the hand-off waits in `histogram`, in microseconds;
/// `None` when nothing was handed off.
fn wait_quantiles(histogram: &[Bucket]) -> Option<WaitQuantiles> {
    let quantile = |q| histogram_quantile(q, histogram).map(|seconds| seconds * 1e6);
    quantile(0.5)
        .zip(quantile(0.99))
        .map(|(p50, p99)| WaitQuantiles { p50, p99 })
}

/// How many times the counter `name` ticked: its increase, rounded.
fn count(name: &str, start: f64, end: f64) -> Result<u64, ScrapeFailure> {
    Ok(increase(name, start, end)?.round() as u64)
}

/// The increase of each series of a labelled counter over the run.
fn by_label(
    name: &str,
    label: &str,
    start: &BTreeMap<String, f64>,
    end: &BTreeMap<String, f64>,
) -> Result<BTreeMap<String, u64>, ScrapeFailure> {
    end.iter()
        .map(|(value, &last)| {
            let first = start.get(value).copied().unwrap_or(0.0);
            let series = format!("{name}{{{label}={value}}}");
            Ok((value.clone(), count(&series, first, last)?))
        })
        .collect()
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

impl Snapshot {
    /// True once every connection the server accepted is either still
    /// open, rejected, or counted closed, and no more are open than
    /// `active_before`: the server has seen the run's connections close and
    /// counted why. (It releases a connection's place in the active count a
    /// moment before it counts the close.)
    pub(super) fn settled(&self, active_before: f64) -> bool {
        let closed: f64 = self.closed.values().sum();
        self.active <= active_before && self.accepted - self.rejected - closed == self.active
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;
    use std::time::Duration;

    use tokio::time::Instant;

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

    /// The URL the figures name: none of them depends on it.
    fn any_url() -> MetricsUrl {
        MetricsUrl::from_str("http://127.0.0.1:9/metrics").unwrap()
    }

    #[test]
    fn datagrams_and_failed_handshakes_are_counted_over_the_run_by_label() {
        let t0 = Instant::now();
        let url = any_url();
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
        let url = any_url();
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
        let url = any_url();
        let before = snapshot(&exposition(10, 10, 0, 1000, 5.0, [0, 0, 0]), t0);
        let after = snapshot(&exposition(0, 0, 0, 0, 0.0, [0, 0, 0]), t0);
        let result = ServerFigures::between(&url, &before, &before, &after, &after);
        assert!(
            matches!(result, Err(ScrapeFailure::WentBackwards(_))),
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
}
