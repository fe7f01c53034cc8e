//! Which runtime's reactor serves the sockets, seen from outside.
//!
//! Built with `--cfg tokio_unstable`, the server exports
//! `tandem_runtime_io_driver_ready_total{runtime}`, the readiness events each
//! runtime's I/O driver delivered. If accepted sockets stayed registered with
//! the acceptor's reactor (the defect of the article's sketch), the acceptor
//! would see an event per echo; with invariant 1 it sees about one per
//! connect, and the serving runtime sees the traffic.
//!
//! The test builds the binary with tokio's unstable API into a target
//! directory of its own, so it runs under a plain `cargo test`.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{PATIENCE, TestServer, random_bytes, round_trip};

/// Round trips on one connection, and extra connects, per server.
const ROUND_TRIPS: usize = 400;
const CONNECTS: usize = 5;

/// The `tandem` binary built with `--cfg tokio_unstable`, built once.
fn unstable_tandem() -> &'static PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tokio-unstable");
        let rustflags = match std::env::var("RUSTFLAGS") {
            Ok(flags) if !flags.trim().is_empty() => format!("{flags} --cfg tokio_unstable"),
            _ => "--cfg tokio_unstable".to_owned(),
        };
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--locked", "--bin", "tandem"])
            .arg("--target-dir")
            .arg(&target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("RUSTFLAGS", rustflags)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build with tokio_unstable failed");
        target.join("debug").join("tandem")
    })
}

fn start(layout: &str) -> TestServer {
    let mut command = Command::new(unstable_tandem());
    command.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--layout",
        layout,
        "--workers",
        "2",
    ]);
    TestServer::spawn(command)
}

/// `GET /metrics`, the body.
fn scrape(admin: SocketAddr) -> String {
    common::admin::scrape(admin).text
}

/// `tandem_runtime_io_driver_ready_total` per runtime label.
fn driver_events(exposition: &str) -> Vec<(String, u64)> {
    exposition
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("tandem_runtime_io_driver_ready_total{runtime=\"")?;
            let (runtime, value) = rest.split_once("\"} ")?;
            Some((runtime.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// Echo traffic on one connection, then a few connects that close at once.
fn traffic(server: &TestServer) {
    let mut conn = server.connect();
    let payload = random_bytes(16);
    for _ in 0..ROUND_TRIPS {
        assert_eq!(round_trip(&mut conn, &payload), payload);
    }
    drop(conn);
    for _ in 0..CONNECTS {
        drop(server.connect());
    }
}

/// Polls until the serving runtimes (`serving` picks their labels) have
/// delivered at least `at_least` events, then returns every runtime's count.
fn wait_for_serving_events(
    admin: SocketAddr,
    serving: impl Fn(&str) -> bool,
    at_least: u64,
) -> Vec<(String, u64)> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let events = driver_events(&scrape(admin));
        let served: u64 = events
            .iter()
            .filter(|(runtime, _)| serving(runtime))
            .map(|(_, count)| count)
            .sum();
        if served >= at_least {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "serving runtimes delivered {served} events, expected at least {at_least}: {events:?}"
        );
        // The per-runtime figures are sampled once a second.
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn acceptor_events(events: &[(String, u64)]) -> u64 {
    events
        .iter()
        .find(|(runtime, _)| runtime == "acceptor")
        .map(|(_, count)| *count)
        .expect("an acceptor runtime")
}

#[test]
fn in_split_the_worker_reactor_serves_the_sockets_and_the_acceptor_only_accepts() {
    let mut server = start("split");
    let before = driver_events(&scrape(server.admin_addr()));
    assert!(
        before.iter().any(|(runtime, _)| runtime == "worker"),
        "no io_driver series: {before:?}"
    );
    traffic(&server);
    // Readiness events coalesce, so fewer than one per round trip arrive,
    // but far more than a quarter.
    let events = wait_for_serving_events(
        server.admin_addr(),
        |runtime| runtime == "worker",
        (ROUND_TRIPS / 4) as u64,
    );
    let acceptor = acceptor_events(&events);
    assert!(
        acceptor <= (2 * (CONNECTS + 1) + 4) as u64,
        "the acceptor's reactor delivered {acceptor} events for {} connects: {events:?}",
        CONNECTS + 1
    );
    assert!(server.stop().success());
}

#[test]
fn in_sharded_the_shard_reactors_serve_the_sockets() {
    let mut server = start("sharded");
    traffic(&server);
    let events = wait_for_serving_events(
        server.admin_addr(),
        |runtime| runtime.starts_with("shard-"),
        (ROUND_TRIPS / 4) as u64,
    );
    let acceptor = acceptor_events(&events);
    assert!(
        acceptor <= (2 * (CONNECTS + 1) + 4) as u64,
        "the acceptor's reactor delivered {acceptor} events: {events:?}"
    );
    assert!(server.stop().success());
}

#[test]
fn a_stable_build_has_no_io_driver_series() {
    let mut server = TestServer::start_with_admin(&[]);
    assert!(driver_events(&scrape(server.admin_addr())).is_empty());
    assert!(server.stop().success());
}
