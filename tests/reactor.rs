//! Which runtime's reactor serves the sockets, seen from outside.
//!
//! Built with `--cfg tokio_unstable`, the server exports
//! `tandem_runtime_io_driver_ready_total{runtime}`, the readiness events each
//! runtime's I/O driver delivered.
//!
//! The bounds below hold however the client and the server interleave on
//! the machine's cores, because they count what tokio must do, not what it
//! happens to do:
//!
//! - **The reactor a socket is registered with delivers at least one event
//!   for it before anything can be read.** A tokio socket starts with no
//!   readiness, and `try_read` answers `WouldBlock` without a system call
//!   until the reactor has delivered an event for it (`Registration::try_io`);
//!   epoll reports a socket that is already writable or readable as soon as
//!   it is registered. So every connection that echoes costs its serving
//!   reactor at least one event. How many more the traffic costs depends on
//!   whether a reader finds the next message already waiting, which is down
//!   to scheduling, so no bound counts on them.
//! - **A listener's reactor delivers at most one event per connect.** An
//!   edge-triggered listener is reported only after a new connection arrived
//!   since the last report.
//!
//! If accepted sockets stayed registered with the acceptor's reactor (the
//! defect of the article's sketch), the serving runtimes would deliver no
//! event at all, and the acceptor one per connection on top of its own.
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

/// Round trips on the first connection, then connections that each echo
/// one message, per server.
const ROUND_TRIPS: usize = 400;
const CONNECTS: usize = 20;

/// Every connection the traffic opens, each of which echoes.
const CONNECTIONS: u64 = CONNECTS as u64 + 1;

/// The most the acceptor's reactor may deliver: at most one event per
/// connect (see the module's page), with room for twice that and four more,
/// so that nothing about how tokio reports a listener is assumed to the
/// event; still far below the one event per connection *and* per listener
/// report that sockets left on the acceptor's reactor would add up to.
const ACCEPTOR_AT_MOST: u64 = 2 * CONNECTIONS + 4;

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

/// Echo traffic on one connection, then connections that echo one message
/// each: `CONNECTIONS` connections, every one of which echoed.
fn traffic(server: &TestServer) {
    let mut conn = server.connect();
    let payload = random_bytes(16);
    for _ in 0..ROUND_TRIPS {
        assert_eq!(round_trip(&mut conn, &payload), payload);
    }
    drop(conn);
    for _ in 0..CONNECTS {
        let mut conn = server.connect();
        assert_eq!(round_trip(&mut conn, &payload), payload);
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

/// Sends `traffic` through `server`: the reactors of its serving runtimes
/// (`serving` picks their labels) deliver the connections' events, and
/// the acceptor's no more than `ACCEPTOR_AT_MOST`.
fn assert_the_serving_reactors_carry_the_traffic(
    server: &TestServer,
    serving: impl Fn(&str) -> bool,
) {
    traffic(server);
    let events = wait_for_serving_events(server.admin_addr(), serving, CONNECTIONS);
    let acceptor = acceptor_events(&events);
    assert!(
        acceptor <= ACCEPTOR_AT_MOST,
        "the acceptor's reactor delivered {acceptor} events for {CONNECTIONS} connects: {events:?}"
    );
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
    assert_the_serving_reactors_carry_the_traffic(&server, |runtime| runtime == "worker");
    assert!(server.stop().success());
}

#[test]
fn in_sharded_the_shard_reactors_serve_the_sockets() {
    let mut server = start("sharded");
    assert_the_serving_reactors_carry_the_traffic(&server, |runtime| runtime.starts_with("shard-"));
    assert!(server.stop().success());
}

#[test]
fn a_stable_build_has_no_io_driver_series() {
    let mut server = TestServer::start_with_admin(&[]);
    assert!(driver_events(&scrape(server.admin_addr())).is_empty());
    assert!(server.stop().success());
}
