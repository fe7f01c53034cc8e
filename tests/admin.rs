//! Specifies the admin endpoint (`--admin-listen`) as its users meet it:
//! fetched with curl, checked by promtool and scraped by a real Prometheus
//! server. Every series exists from start-up; the counters follow real
//! traffic in every layout and say why each connection closed; `/readyz`
//! turns away new clients while live ones drain; the endpoint answers while
//! the workers are stalled. Every test runs the real binary over loopback.
//!
//! Byte counters reach the endpoint in batches, so every check of a value
//! polls until it arrives, within `PATIENCE`.

mod common;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::admin::{POLL_INTERVAL, Response, get, request, scrape, scrape_until};
use common::{
    ConfigFile, PATIENCE, Proc, TestServer, per_layout, random_bytes, round_trip, tandem,
};
use nix::sys::signal::Signal;
use serde_json::Value;

/// The media type of the Prometheus text exposition format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `reason` label values of `tandem_connections_closed_total`.
const CLOSE_REASONS: [&str; 9] = [
    "eof",
    "reset",
    "idle_timeout",
    "shed",
    "shutdown",
    "protocol",
    "handler",
    "panic",
    "error",
];

/// The `kind` label values of `tandem_accept_errors_total`.
const ACCEPT_ERROR_KINDS: [&str; 10] = [
    "emfile",
    "enfile",
    "enobufs",
    "enomem",
    "aborted",
    "reset",
    "interrupted",
    "network",
    "denied",
    "other",
];

/// The series every runtime has, under its `runtime` label.
const RUNTIME_SERIES: [&str; 5] = [
    "tandem_runtime_workers",
    "tandem_runtime_busy_ratio",
    "tandem_runtime_busy_seconds_total",
    "tandem_runtime_global_queue_depth",
    "tandem_runtime_alive_tasks",
];

/// How long the stall test gives each of its two requests to the admin
/// endpoint: together well under the 60 s the only worker is stalled for,
/// which is long only on paper: the server is killed once they are in.
const STALL_PATIENCE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Helpers: HTTP, the exposition, traffic
// ---------------------------------------------------------------------------

/// Runs `curl -sS -i` with `args` on `url` and parses the response it printed.
fn curl(args: &[&str], url: &str) -> Response {
    let out = common::external::command("curl")
        .args(["-sS", "-i", "--max-time", "20"])
        .args(args)
        .arg(url)
        .output()
        .unwrap_or_else(|err| panic!("cannot run curl: {err}"));
    assert!(
        out.status.success(),
        "curl {args:?} {url} exited with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Response::parse(&out.stdout)
}

/// The series of `tandem_connections_closed_total` for `reason`.
fn closed(reason: &str) -> String {
    format!("tandem_connections_closed_total{{reason=\"{reason}\"}}")
}

/// `clients` clients, one after another, each echo `bytes` random bytes,
/// half-close and read the server's FIN: each ends as a clean `eof` close.
fn echo_and_close(server: &TestServer, clients: usize, bytes: usize) {
    for _ in 0..clients {
        let mut stream = server.connect();
        let payload = random_bytes(bytes);
        assert!(round_trip(&mut stream, &payload) == payload, "echo differs");
        stream.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{} bytes after the echo", rest.len());
    }
}

/// The runtimes a server of `layout` with `workers` workers has.
fn runtimes_of(layout: &str, workers: usize) -> BTreeSet<String> {
    let serving: Vec<String> = match layout {
        "sharded" => (0..workers).map(|shard| format!("shard-{shard}")).collect(),
        _ => vec!["worker".to_owned()],
    };
    let acceptor = (layout != "single").then(|| "acceptor".to_owned());
    serving
        .into_iter()
        .chain(acceptor)
        .chain(["admin".to_owned()])
        .collect()
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

// ---------------------------------------------------------------------------
// 1. Every series from start-up
// ---------------------------------------------------------------------------

per_layout!(every_series_exists_from_start_up_with_counters_at_zero_in_every_layout);
fn every_series_exists_from_start_up_with_counters_at_zero_in_every_layout(layout: &str) {
    let mut zero = vec![
        "tandem_connections_accepted_total".to_owned(),
        "tandem_connections_rejected_total".to_owned(),
        "tandem_bytes_received_total".to_owned(),
        "tandem_bytes_sent_total".to_owned(),
        "tandem_handoff_wait_seconds_count".to_owned(),
        "tandem_handoff_wait_seconds_sum".to_owned(),
        "tandem_handoff_wait_seconds_bucket{le=\"+Inf\"}".to_owned(),
        "tandem_connections_active".to_owned(),
        "tandem_handoff_queue_depth".to_owned(),
        "tandem_connections_aborted_total".to_owned(),
        "tandem_buffer_waits_total".to_owned(),
        "tandem_buffer_memory_bytes{state=\"lent\"}".to_owned(),
    ];
    zero.extend(CLOSE_REASONS.map(closed));
    zero.extend(
        ACCEPT_ERROR_KINDS.map(|kind| format!("tandem_accept_errors_total{{kind=\"{kind}\"}}")),
    );
    let mut server = TestServer::start_with_admin(&["--layout", layout, "--workers", "2"]);

    let exposition = scrape(server.admin_addr());

    for series in &zero {
        assert_eq!(
            exposition.get(series),
            Some(0.0),
            "{layout}: {series}\n{}",
            exposition.text
        );
    }
    for gauge in ["tandem_handoff_queue_capacity", "tandem_connections_max"] {
        assert!(
            exposition.get(gauge).is_some(),
            "{layout}: {gauge}\n{}",
            exposition.text
        );
    }
    for name in RUNTIME_SERIES {
        assert_eq!(
            exposition.runtimes(name),
            runtimes_of(layout, 2),
            "{layout}: runtimes of {name}\n{}",
            exposition.text
        );
    }
    assert!(server.stop().success(), "{layout}: {}", server.stderr());
}

#[test]
fn runtime_workers_counts_the_threads_of_each_runtime() {
    let cases = [
        (
            "split",
            vec![("acceptor", 2.0), ("worker", 3.0), ("admin", 1.0)],
        ),
        ("single", vec![("worker", 3.0), ("admin", 1.0)]),
        (
            "sharded",
            vec![
                ("acceptor", 2.0),
                ("shard-0", 1.0),
                ("shard-1", 1.0),
                ("shard-2", 1.0),
                ("admin", 1.0),
            ],
        ),
    ];
    for (layout, expected) in cases {
        let server = TestServer::start_with_admin(&[
            "--layout",
            layout,
            "--acceptor-threads",
            "2",
            "--workers",
            "3",
        ]);

        let exposition = scrape(server.admin_addr());

        for (runtime, threads) in expected {
            let series = format!("tandem_runtime_workers{{runtime=\"{runtime}\"}}");
            assert_eq!(
                exposition.get(&series),
                Some(threads),
                "{layout}: {series}\n{}",
                exposition.text
            );
        }
    }
}

#[test]
fn handoff_queue_capacity_is_the_configured_capacity_and_0_in_single() {
    for (layout, capacity) in [("split", 10.0), ("single", 0.0), ("sharded", 10.0)] {
        let server = TestServer::start_with_admin(&[
            "--layout",
            layout,
            "--workers",
            "2",
            "--handoff-capacity",
            "10",
        ]);

        let exposition = scrape(server.admin_addr());

        assert_eq!(
            exposition.get("tandem_handoff_queue_capacity"),
            Some(capacity),
            "{layout}\n{}",
            exposition.text
        );
    }
}

// ---------------------------------------------------------------------------
// 2. Counters follow traffic
// ---------------------------------------------------------------------------

per_layout!(counters_follow_connections_and_bytes_in_every_layout);
fn counters_follow_connections_and_bytes_in_every_layout(layout: &str) {
    const CLIENTS: usize = 4;
    const BYTES: usize = 20_000;
    let mut server = TestServer::start_with_admin(&["--layout", layout, "--workers", "2"]);

    echo_and_close(&server, CLIENTS, BYTES);

    let clients = CLIENTS as f64;
    let bytes = (CLIENTS * BYTES) as f64;
    let eof = closed("eof");
    scrape_until(
        server.admin_addr(),
        &[
            ("tandem_connections_accepted_total", clients),
            (&eof, clients),
            ("tandem_bytes_received_total", bytes),
            ("tandem_bytes_sent_total", bytes),
            ("tandem_handoff_wait_seconds_count", clients),
            ("tandem_connections_active", 0.0),
        ],
    );
    assert!(server.stop().success(), "{layout}: {}", server.stderr());
}

// ---------------------------------------------------------------------------
// 3. Why connections closed
// ---------------------------------------------------------------------------

per_layout!(a_client_that_resets_mid_echo_is_counted_as_reset_in_every_layout);
fn a_client_that_resets_mid_echo_is_counted_as_reset_in_every_layout(layout: &str) {
    let mut server = TestServer::start_with_admin(&["--layout", layout]);
    let mut client = server.connect();
    // Far less than the socket buffers on the way hold: the write
    // completes although the client reads next to nothing.
    client.write_all(&random_bytes(64 * 1024)).unwrap();
    let mut first = [0u8; 1];
    client.read_exact(&mut first).unwrap();

    // With echo bytes still unread, and SO_LINGER 0, the close is a reset.
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);

    let reset = closed("reset");
    scrape_until(
        server.admin_addr(),
        &[(&reset, 1.0), ("tandem_connections_active", 0.0)],
    );
    assert!(server.stop().success(), "{layout}: {}", server.stderr());
}

per_layout!(a_silent_client_is_counted_as_idle_timeout_in_every_layout);
fn a_silent_client_is_counted_as_idle_timeout_in_every_layout(layout: &str) {
    let mut server = TestServer::start_with_admin(&["--layout", layout, "--idle-timeout", "300ms"]);
    let mut silent = server.connect();

    // The server's FIN, once the idle timeout has passed.
    let mut rest = Vec::new();
    silent.read_to_end(&mut rest).unwrap();
    drop(silent);

    let idle = closed("idle_timeout");
    scrape_until(
        server.admin_addr(),
        &[(&idle, 1.0), ("tandem_connections_active", 0.0)],
    );
    assert!(server.stop().success(), "{layout}: {}", server.stderr());
}

/// A client that sends as fast as it can and never reads. After a few
/// megabytes the server is stuck writing an echo nobody takes, so it does not
/// notice the shutdown cut, and drops the connection only when the cut's
/// grace period is over: the process, and its admin endpoint, outlive the
/// cut by that grace.
struct NeverReads {
    stream: TcpStream,
    sender: Option<std::thread::JoinHandle<()>>,
}

impl NeverReads {
    fn connect(server: &TestServer) -> NeverReads {
        let stream = server.connect();
        let mut writer = stream.try_clone().expect("clone the client socket");
        let sender = std::thread::spawn(move || {
            let chunk = vec![7u8; 64 * 1024];
            // Until the connection is gone, at either end.
            while writer.write_all(&chunk).is_ok() {}
        });
        NeverReads {
            stream,
            sender: Some(sender),
        }
    }
}

impl Drop for NeverReads {
    fn drop(&mut self) {
        // Wakes the sender from its blocked write.
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(sender) = self.sender.take() {
            let _ = sender.join();
        }
    }
}

per_layout!(a_connection_cut_at_the_shutdown_timeout_is_counted_as_shutdown_in_every_layout);
fn a_connection_cut_at_the_shutdown_timeout_is_counted_as_shutdown_in_every_layout(layout: &str) {
    let mut server = TestServer::start_with_admin(&[
        "--layout",
        layout,
        "--workers",
        "2",
        "--shutdown-timeout",
        "1s",
    ]);
    let admin = server.admin_addr();
    let mut cut = server.connect();
    assert_eq!(round_trip(&mut cut, b"hi"), b"hi");
    let stuck = NeverReads::connect(&server);
    scrape_until(admin, &[("tandem_connections_active", 2.0)]);

    server.signal(Signal::SIGTERM);
    // The cut: the server's FIN, then the server is done with it as soon
    // as the client closes too.
    let mut rest = Vec::new();
    cut.read_to_end(&mut rest).unwrap();
    drop(cut);

    let shutdown = closed("shutdown");
    scrape_until(admin, &[(&shutdown, 1.0)]);
    drop(stuck);
    assert!(server.wait().success(), "{layout}: {}", server.stderr());
}

// ---------------------------------------------------------------------------
// 4. Health and readiness
// ---------------------------------------------------------------------------

#[test]
fn healthz_and_readyz_answer_200_while_the_server_accepts() {
    let mut server = TestServer::start_with_admin(&[]);
    let admin = server.admin_addr();

    let health = curl(&[], &format!("http://{admin}/healthz"));
    let ready = curl(&[], &format!("http://{admin}/readyz"));

    assert_eq!((health.status, health.text().as_str()), (200, "ok\n"));
    assert_eq!((ready.status, ready.text().as_str()), (200, "ready\n"));
    assert!(server.stop().success(), "{}", server.stderr());
}

#[test]
fn readyz_turns_503_on_sigterm_while_a_live_connection_drains() {
    let mut server = TestServer::start_with_admin(&["--shutdown-timeout", "20s"]);
    let admin = server.admin_addr();
    let mut held = server.connect();
    assert_eq!(round_trip(&mut held, b"before"), b"before");

    server.signal(Signal::SIGTERM);
    let deadline = Instant::now() + PATIENCE;
    while get(admin, "/readyz").status != 503 {
        assert!(Instant::now() < deadline, "/readyz never turned 503");
        std::thread::sleep(POLL_INTERVAL);
    }

    let ready = curl(&[], &format!("http://{admin}/readyz"));
    assert_eq!(ready.status, 503);
    assert!(ready.text().contains("shutting down"), "{}", ready.text());
    let health = curl(&[], &format!("http://{admin}/healthz"));
    assert_eq!(health.status, 200, "/healthz during the drain");
    scrape_until(admin, &[("tandem_connections_active", 1.0)]);
    assert_eq!(round_trip(&mut held, b"draining"), b"draining");

    held.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    held.read_to_end(&mut rest).unwrap();
    assert!(server.wait().success(), "{}", server.stderr());
}

// ---------------------------------------------------------------------------
// 5. Real consumers: promtool and a Prometheus server
// ---------------------------------------------------------------------------

/// Runs `promtool check metrics` on `text`; returns its exit status and
/// everything it printed.
fn promtool_check_metrics(text: &str) -> (std::process::ExitStatus, String) {
    let mut promtool = common::external::command("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run promtool: {err}"));
    let mut stdin = promtool.stdin.take().expect("stdin piped");
    // promtool reads all of stdin before it prints anything, so writing
    // first cannot deadlock on its output pipes.
    stdin.write_all(text.as_bytes()).expect("write to promtool");
    drop(stdin);
    let out = promtool.wait_with_output().expect("wait for promtool");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, printed)
}

per_layout!(the_exposition_passes_promtool_check_metrics_after_traffic_in_every_layout);
fn the_exposition_passes_promtool_check_metrics_after_traffic_in_every_layout(layout: &str) {
    let mut server = TestServer::start_with_admin(&["--layout", layout, "--workers", "2"]);
    echo_and_close(&server, 2, 1000);
    let eof = closed("eof");
    let exposition = scrape_until(
        server.admin_addr(),
        &[("tandem_handoff_wait_seconds_count", 2.0), (&eof, 2.0)],
    );

    let (status, printed) = promtool_check_metrics(&exposition.text);

    assert!(
        status.success(),
        "{layout}: promtool exited with {status}:\n{printed}\nfor:\n{}",
        exposition.text
    );
    assert!(server.stop().success(), "{layout}: {}", server.stderr());
}
/// A `prometheus` server, from a temporary directory, scraping one target
/// every second. Killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus with job `tandem` scraping `target`, and waits
    /// until it is ready. If the port picked for it was taken meanwhile,
    /// tries another.
    fn start(target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: tandem\n    scrape_interval: 1s\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let mut failures = Vec::new();
        for attempt in 0..5 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let log = dir.path().join(format!("prometheus-{attempt}.log"));
            let mut child = Prometheus::spawn(&config, &dir.path().join("data"), addr, &log);
            match wait_until_ready(&mut child, addr, &log) {
                Ok(()) => {
                    return Prometheus {
                        child,
                        addr,
                        _dir: dir,
                    };
                }
                Err(failure) if failure.contains("address already in use") => {
                    failures.push(failure);
                }
                Err(failure) => panic!("prometheus did not start: {failure}"),
            }
        }
        panic!(
            "prometheus found no free port:\n{}",
            failures.join("\n---\n")
        );
    }

    fn spawn(config: &Path, data: &Path, addr: SocketAddr, log: &Path) -> Child {
        let log = File::create(log).expect("create prometheus log");
        common::external::command("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run prometheus: {err}"))
    }

    /// The value of the first series `promql` selects now, if any.
    fn query(&self, promql: &str) -> Option<f64> {
        let body = self.api(
            &["-G", "--data-urlencode", &format!("query={promql}")],
            "query",
        );
        let answer: Value = serde_json::from_str(&body).ok()?;
        answer["data"]["result"][0]["value"][1]
            .as_str()?
            .parse()
            .ok()
    }

    /// `GET /api/v1/<endpoint>` with curl; the body.
    fn api(&self, args: &[&str], endpoint: &str) -> String {
        let out = common::external::command("curl")
            .args(["-sS", "--max-time", "20"])
            .args(args)
            .arg(format!("http://{}/api/v1/{endpoint}", self.addr))
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the Prometheus at `addr` says it is ready; `Err` with its
/// log if it exits or is not ready within `PATIENCE`.
fn wait_until_ready(child: &mut Child, addr: SocketAddr, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait prometheus") {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!("prometheus exited with {status}:\n{log}"));
        }
        if let Ok(response) = request(addr, "GET", "/-/ready", PATIENCE)
            && response.status == 200
            && response.text().contains("Ready")
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!("prometheus not ready after {PATIENCE:?}:\n{log}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_prometheus_server_scrapes_the_endpoint_and_sees_the_accepted_connections() {
    const CLIENTS: usize = 3;
    let mut server = TestServer::start_with_admin(&[]);
    let prometheus = Prometheus::start(server.admin_addr());

    echo_and_close(&server, CLIENTS, 100);

    let deadline = Instant::now() + PATIENCE;
    loop {
        let up = prometheus.query("up{job=\"tandem\"}");
        let accepted = prometheus.query("tandem_connections_accepted_total{job=\"tandem\"}");
        if up == Some(1.0) && accepted == Some(CLIENTS as f64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus sees up={up:?} accepted={accepted:?}; its targets:\n{}",
            prometheus.api(&[], "targets")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(prometheus);
    assert!(server.stop().success(), "{}", server.stderr());
}

// ---------------------------------------------------------------------------
// 6. Answers while the workers are stalled
// ---------------------------------------------------------------------------

// In turn: each layout's stalled worker burns a core for as long as its
// server lives; two at once would take both cores of a 2-core machine
// from the admin endpoints under test.
per_layout!(
    admin_answers_while_the_only_worker_is_stalled_in_every_layout,
    in_turn
);
fn admin_answers_while_the_only_worker_is_stalled_in_every_layout(layout: &str) {
    let server = TestServer::start_with_admin(&[
        "--layout",
        layout,
        "--workers",
        "1",
        "--simulate-work",
        "60s",
    ]);
    let admin = server.admin_addr();
    let serving_thread = match layout {
        "sharded" => "tandem-shard-0",
        _ => "tandem-worker",
    };
    let mut client = server.connect();
    client.write_all(b"x").unwrap();
    // The byte has been read once the serving thread burns CPU: it
    // is stalled for 60 s from then on.
    let deadline = Instant::now() + PATIENCE;
    while common::process::thread_cpu_time(server.pid(), serving_thread)
        < Duration::from_millis(300)
    {
        assert!(
            Instant::now() < deadline,
            "{layout}: the worker never started its work"
        );
        std::thread::sleep(POLL_INTERVAL);
    }

    let health = request(admin, "GET", "/healthz", STALL_PATIENCE);
    let metrics = request(admin, "GET", "/metrics", STALL_PATIENCE);

    let health = health.unwrap_or_else(|err| panic!("{layout}: /healthz during the stall: {err}"));
    let metrics =
        metrics.unwrap_or_else(|err| panic!("{layout}: /metrics during the stall: {err}"));
    assert_eq!(health.status, 200, "{layout}");
    assert_eq!(metrics.status, 200, "{layout}");
    assert!(
        metrics.text().contains("\ntandem_connections_active 1\n"),
        "{layout}:\n{}",
        metrics.text()
    );
    // No echo yet: the answers came during the stall, not after it.
    client.set_nonblocking(true).unwrap();
    let echoed = client.read(&mut [0u8; 1]);
    assert!(
        matches!(&echoed, Err(err) if err.kind() == ErrorKind::WouldBlock),
        "{layout}: the stall was over before the admin endpoint answered: {echoed:?}"
    );
}

// ---------------------------------------------------------------------------
// 7. Answers while hostile clients hold the port
// ---------------------------------------------------------------------------

/// How long a health check may take while hostile clients hold the admin
/// port. The target is a second and the checks take milliseconds when the
/// endpoint makes room; 5 s is the margin for a busy 2-core machine. An
/// endpoint that makes a newcomer wait for a held slot answers only when
/// one frees: after 10 s for a client that sends nothing, and 60 s for one
/// that stopped reading.
const HOSTILE_PATIENCE: Duration = Duration::from_secs(5);

/// One request whose headers are never finished.
const HALF_SENT: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: a";

/// The hostile ways to hold an admin connection.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Hostile {
    /// Connects and sends nothing.
    Idle,
    /// Sends the start of a request and never the rest.
    HalfSent,
    /// Pipelines requests and never reads a response.
    SlowReader,
}

/// Opens a connection of `kind` to `admin`, doing its hostile part.
fn hold(admin: SocketAddr, kind: Hostile) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(admin),
        socket2::Type::STREAM,
        None,
    )?;
    if kind == Hostile::SlowReader {
        // A small window, as a slow client on a slow link advertises: the
        // server's writes stall after a few responses.
        socket.set_recv_buffer_size(4096)?;
    }
    socket.connect(&admin.into())?;
    let mut stream = TcpStream::from(socket);
    match kind {
        Hostile::Idle => {}
        Hostile::HalfSent => stream.write_all(HALF_SENT)?,
        Hostile::SlowReader => {
            // As many requests as the socket takes without blocking: the
            // responses, far larger, fill the window and the server's
            // send buffer.
            stream.set_nonblocking(true)?;
            let request = format!("GET /metrics HTTP/1.1\r\nHost: {admin}\r\n\r\n");
            for _ in 0..2000 {
                match stream.write(request.as_bytes()) {
                    Ok(_) => {}
                    Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                    Err(err) => return Err(err),
                }
            }
        }
    }
    stream.set_nonblocking(true)?;
    Ok(stream)
}

/// Whether the server closed `stream`. Only for kinds that receive nothing
/// while they hold: a slow reader's socket is full of responses.
fn closed_by_server(stream: &TcpStream) -> bool {
    match stream.peek(&mut [0u8; 1]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(err) => err.kind() != ErrorKind::WouldBlock,
    }
}

/// Hostile clients of every kind, 130 in all, holding the admin port. The
/// slow readers connect first, so they would be the ones holding the slots
/// of an endpoint that keeps its first comers. An idle or half-sent
/// connection that the server closed reconnects at each [`Horde::refill`],
/// as a misbehaving client in a loop does.
struct Horde {
    admin: SocketAddr,
    held: Vec<(Hostile, TcpStream)>,
}

impl Horde {
    fn start(admin: SocketAddr) -> Horde {
        let kinds = std::iter::repeat_n(Hostile::SlowReader, 40)
            .chain(std::iter::repeat_n(Hostile::Idle, 45))
            .chain(std::iter::repeat_n(Hostile::HalfSent, 45));
        let held = kinds
            .map(|kind| (kind, hold(admin, kind).expect("a hostile connection")))
            .collect();
        Horde { admin, held }
    }

    /// Reconnects every idle or half-sent client the server has closed;
    /// returns how many it reconnected.
    fn refill(&mut self) -> usize {
        let mut reconnected = 0;
        for (kind, stream) in &mut self.held {
            if *kind != Hostile::SlowReader && closed_by_server(stream) {
                *stream = hold(self.admin, *kind).expect("a hostile reconnection");
                reconnected += 1;
            }
        }
        reconnected
    }
}

#[test]
fn health_checks_and_a_scrape_are_answered_while_130_hostile_clients_hold_the_port() {
    let server = TestServer::start_with_admin(&[]);
    let admin = server.admin_addr();
    let mut horde = Horde::start(admin);

    // At most 8 of them hold a slot at once (one client address); the rest
    // were let go as they came, and come back at each refill.
    horde.refill();
    let mut slowest = Duration::ZERO;
    let mut reconnected = 0;
    for (check, path) in std::iter::repeat_n("/readyz", 12)
        .chain(["/metrics"])
        .enumerate()
    {
        // The horde takes its slots back before each check, and is still
        // while the check is made: all of them come from 127.0.0.1, as the
        // check does, and a client whose connections churn without pause
        // can crowd out a newcomer from its own address (README, Operating
        // tandem).
        reconnected += horde.refill();
        let started = Instant::now();
        let response = request(admin, "GET", path, HOSTILE_PATIENCE)
            .unwrap_or_else(|err| panic!("check {check}, {path}, among the hostile: {err}"));
        let took = started.elapsed();
        assert_eq!(response.status, 200, "check {check}, {path}");
        assert!(
            took < HOSTILE_PATIENCE,
            "check {check}, {path}: answered after {took:?}"
        );
        slowest = slowest.max(took);
    }
    // The checks took slots from the horde, whose clients came back.
    assert!(
        reconnected > 0,
        "no check ever took a hostile client's slot"
    );
    eprintln!("slowest check: {slowest:?}; hostile reconnects: {reconnected}");
}

#[test]
fn a_client_that_stops_reading_its_responses_is_closed() {
    let server = TestServer::start_with_admin(&[]);
    let slow = hold(server.admin_addr(), Hostile::SlowReader).unwrap();
    // Once the server's writes make no progress for the write timeout
    // (2 s), it closes the connection; its unread requests make the close
    // a reset, which the client sees without reading. An endpoint without
    // a write timeout holds it for the 60 s a connection may live.
    let deadline = Instant::now() + PATIENCE;
    loop {
        match slow.take_error() {
            Ok(None) => {}
            Ok(Some(err)) | Err(err) => {
                assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the slow reader still held its connection after {PATIENCE:?}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

#[test]
fn a_client_that_sends_no_whole_request_is_closed_after_the_header_timeout() {
    // The header timeout is 2 s; 4 s more is the margin for a busy
    // machine. An endpoint that waits 10 s, as this one did, fails.
    const CLOSED_WITHIN: Duration = Duration::from_secs(6);
    let server = TestServer::start_with_admin(&[]);
    for kind in [Hostile::Idle, Hostile::HalfSent] {
        let started = Instant::now();
        let mut stream = hold(server.admin_addr(), kind).unwrap();
        stream.set_nonblocking(false).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut raw = Vec::new();
        let read = stream.read_to_end(&mut raw);
        let took = started.elapsed();
        assert!(read.is_ok(), "{kind:?}: not closed: {read:?}");
        assert!(took < CLOSED_WITHIN, "{kind:?}: closed after {took:?}");
    }
}

// ---------------------------------------------------------------------------
// 8. HTTP
// ---------------------------------------------------------------------------

#[test]
fn metrics_answers_200_in_the_prometheus_text_format() {
    let server = TestServer::start_with_admin(&[]);

    let response = curl(&[], &server.metrics_url());

    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some(METRICS_CONTENT_TYPE));
    assert!(
        response
            .text()
            .contains("# TYPE tandem_connections_accepted_total counter\n"),
        "{}",
        response.text()
    );
}

/// The series of an exposition, in the order given: each line but its
/// value, which may move between scrapes.
fn series_order(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| match line.starts_with('#') {
            true => line.to_owned(),
            false => line
                .rsplit_once(' ')
                .map_or(line, |(series, _)| series)
                .to_owned(),
        })
        .collect()
}

#[test]
fn metrics_come_in_one_order_families_by_name_and_series_by_label() {
    let server = TestServer::start_with_admin(&["--compute-threads", "1"]);
    echo_and_close(&server, 3, 1000);
    let first = get(server.admin_addr(), "/metrics").text();
    let families: Vec<&str> = first
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|typed| typed.split(' ').next().unwrap_or(""))
        .collect();
    assert!(families.len() > 10, "{first}");
    assert!(families.is_sorted(), "{families:?}");
    let closed: Vec<&str> = first
        .lines()
        .filter(|line| line.starts_with("tandem_connections_closed_total{"))
        .collect();
    assert_eq!(closed.len(), CLOSE_REASONS.len(), "{first}");
    assert!(closed.is_sorted(), "{closed:?}");
    // The exporter's maps are made afresh for each scrape: five scrapes
    // in one order are not luck.
    for _ in 0..5 {
        let again = get(server.admin_addr(), "/metrics").text();
        assert_eq!(series_order(&again), series_order(&first), "{again}");
    }
}

#[test]
fn an_unknown_path_answers_404() {
    let server = TestServer::start_with_admin(&[]);

    let response = curl(&[], &format!("http://{}/metrics/nope", server.admin_addr()));

    assert_eq!(response.status, 404, "{}", response.text());
}

#[test]
fn post_answers_405_and_allows_get_and_head() {
    let server = TestServer::start_with_admin(&[]);
    for path in ["/metrics", "/healthz", "/readyz"] {
        let url = format!("http://{}{path}", server.admin_addr());

        let response = curl(&["--data", ""], &url);

        assert_eq!(response.status, 405, "{path}: {}", response.text());
        assert_eq!(response.header("allow"), Some("GET, HEAD"), "{path}");
    }
}

#[test]
fn head_metrics_answers_200_without_a_body() {
    let server = TestServer::start_with_admin(&[]);
    let admin = server.admin_addr();

    let headers = curl(&["--head"], &format!("http://{admin}/metrics"));
    let raw = request(admin, "HEAD", "/metrics", PATIENCE).expect("HEAD /metrics");

    assert_eq!(headers.status, 200);
    assert_eq!(headers.header("content-type"), Some(METRICS_CONTENT_TYPE));
    assert_eq!(raw.status, 200);
    assert!(raw.body.is_empty(), "a body after HEAD: {:?}", raw.text());
}

// ---------------------------------------------------------------------------
// 9. Configuration
// ---------------------------------------------------------------------------

#[test]
fn admin_listen_on_an_address_in_use_exits_1_naming_the_admin_listener_and_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = taken.local_addr().unwrap().to_string();

    let out = Proc::run(
        &["serve", "--listen", "127.0.0.1:0", "--admin-listen", &addr],
        &[],
    );

    assert_eq!(out.status.code(), Some(1), "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "cannot start the admin listener (--admin-listen): \
             cannot listen on {addr}: Address already in use"
        )),
        "{}",
        out.stderr
    );
    assert!(
        !out.stdout.contains("listening on"),
        "stdout: {}",
        out.stdout
    );
}

#[test]
fn admin_listen_that_is_not_an_address_exits_2_naming_the_flag() {
    let out = Proc::run(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "nonsense",
        ],
        &[],
    );

    assert_eq!(out.status.code(), Some(2), "stderr: {}", out.stderr);
    assert!(out.stderr.contains("--admin-listen"), "{}", out.stderr);
    assert!(out.stderr.contains("nonsense"), "{}", out.stderr);
}

#[test]
fn admin_listen_in_the_config_file_serves_the_endpoint() {
    let file = ConfigFile::new("admin_listen = \"127.0.0.1:0\"\n");
    let mut command = tandem();
    command.args(["serve", "--listen", "127.0.0.1:0", "--config", file.path()]);
    let mut proc = Proc::spawn(command);

    let first = proc.first_line();
    let second = proc.first_line();

    assert!(first.starts_with("listening on "), "{first:?}");
    let admin: SocketAddr = second
        .trim_end()
        .strip_prefix("admin listening on ")
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("expected `admin listening on <addr>`, got {second:?}"));
    assert_eq!(curl(&[], &format!("http://{admin}/healthz")).status, 200);
    proc.signal(Signal::SIGTERM);
    let out = proc.finish();
    assert!(out.status.success(), "{}", out.stderr);
}

#[test]
fn tandem_admin_listen_in_the_environment_serves_the_endpoint() {
    let mut server = TestServer::start_with_env(&[("TANDEM_ADMIN_LISTEN", "127.0.0.1:0")], &[]);

    let health = curl(&[], &format!("http://{}/healthz", server.admin_addr()));

    assert_eq!(health.status, 200);
    assert!(server.stop().success(), "{}", server.stderr());
}

#[test]
fn without_admin_listen_stdout_has_only_the_listening_line() {
    let mut command = tandem();
    command.args(["serve", "--listen", "127.0.0.1:0"]);
    let mut proc = Proc::spawn(command);
    let first = proc.first_line();
    assert!(first.starts_with("listening on "), "{first:?}");

    // Everything else the server prints to stdout, up to its exit.
    proc.signal(Signal::SIGTERM);
    let out = proc.finish();

    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout, "", "stdout after `listening on`");
}
