//! The figures from expositions as a tandem server renders them: parsed,
//! compared between scrapes, and shown.

use std::str::FromStr;
use std::time::Duration;

use tokio::time::Instant;

use super::parse::ACCEPTED;
use super::{MetricsUrl, ScrapeFailure, ServerFigures, Snapshot};

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
