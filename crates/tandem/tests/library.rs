//! The library's machinery, seen through a probe handler that reports where
//! and how it runs: runtime threads named by role, sockets configured by the
//! server, shards dealt by load.

mod common;

use std::io::{self, Read};
use std::net::TcpStream;
use std::time::Duration;

use common::per_layout;
use tandem::range::OutOfRange;
use tandem::{
    Close, Connection, Event, Handler, Layout, Metrics, Server, ServerConfig, ServerError,
};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

/// Writes `<thread name> nodelay=<bool>\n`, then waits for the peer to
/// close, so that the connection counts as live until then.
struct Probe;

impl Handler for Probe {
    async fn serve(&self, conn: &mut Connection) -> io::Result<Close> {
        let thread = std::thread::current().name().unwrap_or("").to_owned();
        let report = format!("{thread} nodelay={}\n", conn.socket().nodelay()?);
        conn.write_all(report.as_bytes()).await?;
        loop {
            conn.ready().await?;
            let mut byte = [0u8; 1];
            match conn.try_read(&mut byte) {
                Ok(0) => break,
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(err),
            }
        }
        conn.stream_mut().shutdown().await?;
        Ok(Close::Eof)
    }
}

/// A server on a thread of its own, stopped when dropped: the probe, or any
/// handler a test brings.
struct ProbeServer {
    addr: std::net::SocketAddr,
    metrics: Metrics,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<Result<tandem::ShutdownReport, ServerError>>>,
}

impl ProbeServer {
    fn start(config: ServerConfig) -> ProbeServer {
        ProbeServer::start_server(Server::new(config), Probe)
    }

    fn start_server(server: Server, handler: impl Handler) -> ProbeServer {
        let listener = tandem::server::bind("127.0.0.1:0".parse().unwrap(), 128).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let running = server.start(listener, handler).unwrap();
        let metrics = running.metrics().clone();
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || running.wait(stop.cancelled_owned())
        });
        ProbeServer {
            addr,
            metrics,
            stop,
            thread: Some(thread),
        }
    }

    /// A client with the tests' read timeout.
    fn connect(&self) -> TcpStream {
        let client = TcpStream::connect(self.addr).unwrap();
        client.set_read_timeout(Some(common::PATIENCE)).unwrap();
        client
    }

    /// Stops the server and returns how its shutdown went.
    fn finish(mut self) -> tandem::ShutdownReport {
        self.stop.cancel();
        let thread = self.thread.take().expect("not finished yet");
        thread.join().unwrap().unwrap()
    }

    /// Connects and returns the probe's line and the open connection.
    fn probe(&self) -> (String, TcpStream) {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while byte != *b"\n" {
            stream.read_exact(&mut byte).unwrap();
            line.push(byte[0]);
        }
        (String::from_utf8(line).unwrap().trim().to_owned(), stream)
    }
}

impl Drop for ProbeServer {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn config(layout: Layout) -> ServerConfig {
    ServerConfig::default().layout(layout).workers(2)
}

/// Names of this process's threads.
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.unwrap().path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

#[test]
fn split_serves_on_worker_threads_and_accepts_on_its_own_thread() {
    let server = ProbeServer::start(config(Layout::Split));
    let (line, _conn) = server.probe();
    assert!(line.starts_with("tandem-worker "), "{line}");
    assert!(thread_names().iter().any(|name| name == "tandem-accept"));
}

#[test]
fn single_accepts_and_serves_on_the_same_worker_threads() {
    let server = ProbeServer::start(config(Layout::Single));
    let (line, _conn) = server.probe();
    assert!(line.starts_with("tandem-worker "), "{line}");
}

#[test]
fn sharded_deals_each_connection_to_the_least_loaded_shard() {
    let server = ProbeServer::start(config(Layout::Sharded));
    let mut shards = Vec::new();
    let mut open = Vec::new();
    for _ in 0..4 {
        let (line, conn) = server.probe();
        shards.push(line.split(' ').next().unwrap().to_owned());
        open.push(conn);
    }
    assert_eq!(
        shards,
        [
            "tandem-shard-0",
            "tandem-shard-1",
            "tandem-shard-0",
            "tandem-shard-1"
        ]
    );
    // Closing both of shard 0's connections makes it the least loaded.
    drop(open.remove(2));
    drop(open.remove(0));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (line, _conn) = server.probe();
        if line.starts_with("tandem-shard-0 ") {
            break;
        }
        // The closes may not have been seen yet.
        assert!(
            std::time::Instant::now() < deadline,
            "never dealt to shard 0"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn accepted_sockets_get_tcp_nodelay_unless_disabled() {
    let on = ProbeServer::start(config(Layout::Split));
    assert!(on.probe().0.ends_with("nodelay=true"));
    let off = ProbeServer::start(config(Layout::Split).nodelay(false));
    assert!(off.probe().0.ends_with("nodelay=false"));
}

#[test]
fn starting_inside_a_tokio_runtime_is_an_error_not_a_panic() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let listener = tandem::server::bind("127.0.0.1:0".parse().unwrap(), 16).unwrap();
    let result =
        runtime.block_on(async { Server::new(config(Layout::Split)).start(listener, Probe) });
    assert!(matches!(result, Err(ServerError::InsideRuntime)));
}

/// As `#[tokio::main]` would: the program's own runtime, on which the
/// server is only awaited.
#[test]
fn a_server_started_inside_a_tokio_runtime_serves_on_its_own_threads() {
    let program = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("program")
        .enable_all()
        .build()
        .unwrap();
    let report = program.block_on(async {
        let listener = tandem::server::bind("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server =
            tokio::spawn(
                Server::new(config(Layout::Split)).serve(listener, Probe, async move {
                    let _ = stopped.await;
                }),
            );
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while line.last() != Some(&b'\n') {
            use tokio::io::AsyncReadExt;
            assert_eq!(client.read(&mut byte).await.unwrap(), 1, "{line:?}");
            line.push(byte[0]);
        }
        let line = String::from_utf8(line).unwrap();
        // Served by the server's worker runtime, not the program's.
        assert!(line.starts_with("tandem-worker"), "{line}");
        drop(client);
        stop.send(()).unwrap();
        server.await.unwrap()
    });
    let report = report.unwrap();
    assert_eq!(report.cut, 0, "{report:?}");
}

#[test]
fn a_config_out_of_range_is_an_error_not_a_panic() {
    let listener = tandem::server::bind("127.0.0.1:0".parse().unwrap(), 16).unwrap();
    let zero_queue = config(Layout::Split).handoff_capacity(0);
    let result = Server::new(zero_queue).start(listener, Probe);
    assert!(matches!(
        result,
        Err(ServerError::InvalidConfig(OutOfRange {
            field: "handoff_capacity",
            ..
        }))
    ));
}

#[test]
fn waiting_inside_a_tokio_runtime_is_an_error_not_a_panic() {
    let listener = tandem::server::bind("127.0.0.1:0".parse().unwrap(), 16).unwrap();
    let running = Server::new(config(Layout::Split))
        .start(listener, Probe)
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let result = runtime.block_on(async { running.wait(std::future::ready(())) });
    assert!(matches!(result, Err(ServerError::InsideRuntime)));
}

/// The value of an unlabelled series in a rendered exposition.
fn sample(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let (series, value) = line.split_once(' ')?;
        (series == name).then(|| value.parse().ok())?
    })
}

/// Polls `metrics` until `name` reads `want`: byte counts reach the shared
/// totals when the serving thread next goes idle.
fn wait_for_sample(metrics: &Metrics, name: &str, want: f64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = sample(&metrics.render(), name);
        if got == Some(want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} stayed at {got:?}, expected {want}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

per_layout!(two_servers_in_one_process_keep_their_metrics_apart);
fn two_servers_in_one_process_keep_their_metrics_apart(layout: Layout) {
    let busy = ProbeServer::start(config(layout));
    let quiet = ProbeServer::start(config(layout));
    let mut sent = 0;
    for _ in 0..3 {
        let (line, _conn) = busy.probe();
        sent += line.len() + 1;
    }
    let (quiet_line, _conn) = quiet.probe();
    let busy_metrics = &busy.metrics;
    let quiet_metrics = &quiet.metrics;
    wait_for_sample(busy_metrics, "tandem_connections_accepted_total", 3.0);
    wait_for_sample(quiet_metrics, "tandem_connections_accepted_total", 1.0);
    // What the probe writes through `Connection::write_all` is counted,
    // on whichever runtime thread served it, for its own server only.
    wait_for_sample(busy_metrics, "tandem_bytes_sent_total", sent as f64);
    let quiet_sent = quiet_line.len() + 1;
    wait_for_sample(quiet_metrics, "tandem_bytes_sent_total", quiet_sent as f64);
}

#[test]
fn a_server_without_an_admin_endpoint_still_keeps_its_metrics() {
    // Metrics are always on: the admin endpoint only serves them.
    let server = ProbeServer::start(config(Layout::Split));
    let (line, _conn) = server.probe();
    wait_for_sample(&server.metrics, "tandem_connections_accepted_total", 1.0);
    let sent = (line.len() + 1) as f64;
    wait_for_sample(&server.metrics, "tandem_bytes_sent_total", sent);
    // The once-a-second tick runs without the endpoint too: it samples the
    // runtimes (the workers gauge is set by it alone), and folds the
    // hand-off waits into their histogram, which would otherwise keep
    // every connection's sample.
    wait_for_sample(
        &server.metrics,
        "tandem_runtime_workers{runtime=\"worker\"}",
        2.0,
    );
}

/// Over TLS, a handler that uses tokio's I/O helpers on
/// `Connection::stream_mut()` and reads the session through
/// `Connection::tls()`: one line in, the TLS version and the line out.
struct TlsLine;

impl Handler for TlsLine {
    async fn serve(&self, conn: &mut Connection) -> io::Result<Close> {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let version = conn
            .tls()
            .and_then(|session| session.protocol_version())
            .map_or("none".to_owned(), |v| format!("{v:?}"));
        let mut line = String::new();
        BufReader::new(conn.stream_mut())
            .read_line(&mut line)
            .await?;
        let reply = format!("{version} {line}");
        conn.stream_mut().write_all(reply.as_bytes()).await?;
        conn.record(line.len(), reply.len());
        conn.shutdown().await?;
        Ok(Close::Eof)
    }
}

#[test]
fn a_library_handler_serves_tls_through_the_same_connection() {
    let identity = common::tls::Identity::new();
    let tls = tandem::ServerTls::from_pem_files(&identity.cert, &identity.key).unwrap();
    let listener = tandem::server::bind("127.0.0.1:0".parse().unwrap(), 128).unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let running = Server::new(ServerConfig::default())
        .tls(tls)
        .start(listener, TlsLine)
        .unwrap();
    let mut client = identity.connect(addr);
    std::io::Write::write_all(&mut client, b"hello\n").unwrap();
    let back = common::tls::read_to_close_notify(&mut client).expect("a close_notify");
    assert_eq!(String::from_utf8(back).unwrap(), "TLSv1_3 hello\n");
    stop.cancel();
    let report = running.wait(stop.cancelled_owned()).unwrap();
    assert_eq!(report.cut, 0);
}

/// Uppercases what it reads, moving bytes only through the connection's
/// own calls (`ready`, `try_read`, `write_all`), as a first handler would.
struct Upper;

impl Handler for Upper {
    async fn serve(&self, conn: &mut Connection) -> io::Result<Close> {
        let mut buf = [0u8; 256];
        loop {
            match conn.ready().await? {
                Event::Readable => {}
                Event::IdleTimeout => return Ok(Close::IdleTimeout),
                Event::Cut => {
                    conn.shutdown().await?;
                    return Ok(Close::Cut);
                }
            }
            let read = match conn.try_read(&mut buf) {
                Ok(0) => {
                    conn.shutdown().await?;
                    return Ok(Close::Eof);
                }
                Ok(read) => read,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                Err(err) => return Err(err),
            };
            buf[..read].make_ascii_uppercase();
            conn.write_all(&buf[..read]).await?;
        }
    }
}

#[test]
fn a_handler_that_moves_bytes_through_the_connection_stays_open_while_its_peer_talks() {
    use std::io::Write;
    let idle_timeout = Duration::from_secs(1);
    let config = config(Layout::Split).idle_timeout(Some(idle_timeout));
    let server = ProbeServer::start_server(Server::new(config), Upper);
    let mut client = server.connect();
    // Three idle timeouts of steady traffic, a message every 100 ms: the
    // handler never records activity itself, and must not need to.
    let mut last_sent = std::time::Instant::now();
    for _ in 0..30 {
        // Before the write: the server's last activity comes after it,
        // however the two sides are scheduled.
        last_sent = std::time::Instant::now();
        client.write_all(b"still here").unwrap();
        let mut echoed = [0u8; 10];
        client.read_exact(&mut echoed).unwrap();
        assert_eq!(&echoed, b"STILL HERE");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Silent now: closed by the idle rule, not before its timeout.
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    assert!(last_sent.elapsed() >= idle_timeout);
    server.finish();
}

/// The handler of `examples/uppercase`, which uppercases what it reads with
/// the connection's awaitable `read`: no readiness loop.
#[path = "../examples/uppercase/upper.rs"]
mod upper;
use upper::Upper as UpperRead;

#[test]
fn a_handler_built_on_the_awaitable_read_echoes_and_is_held_to_the_idle_rule() {
    use std::io::Write;
    let idle_timeout = Duration::from_millis(300);
    let config = config(Layout::Sharded).idle_timeout(Some(idle_timeout));
    let server = ProbeServer::start_server(Server::new(config), UpperRead);
    let mut client = server.connect();
    let sent = std::time::Instant::now();
    client.write_all(b"quiet after this").unwrap();
    let mut echoed = [0u8; 16];
    client.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"QUIET AFTER THIS");
    // Silent now: the read ends at the idle rule, and the server closes.
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    assert!(sent.elapsed() >= idle_timeout);
    server.finish();
}

/// Echoes with tokio's own `copy`, through the connection's `AsyncRead`
/// and `AsyncWrite`.
struct TokioCopy;

impl Handler for TokioCopy {
    async fn serve(&self, conn: &mut Connection) -> io::Result<Close> {
        let (mut reader, mut writer) = tokio::io::split(conn);
        tokio::io::copy(&mut reader, &mut writer).await?;
        writer.shutdown().await?;
        Ok(Close::Eof)
    }
}

/// A `TokioCopy` server, and its metrics.
fn start_tokio_copy(config: ServerConfig) -> (ProbeServer, Metrics) {
    let server = ProbeServer::start_server(Server::new(config), TokioCopy);
    let metrics = server.metrics.clone();
    (server, metrics)
}

#[test]
fn tokios_io_helpers_on_the_connection_are_counted_like_its_own_calls() {
    use std::io::Write;
    let (server, metrics) = start_tokio_copy(config(Layout::Split));
    let mut client = server.connect();
    let payload = common::random_bytes(100_000);
    client.write_all(&payload).unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut echoed = Vec::new();
    client.read_to_end(&mut echoed).unwrap();
    assert!(echoed == payload, "echo differs");
    wait_for_sample(&metrics, "tandem_bytes_received_total", 100_000.0);
    wait_for_sample(&metrics, "tandem_bytes_sent_total", 100_000.0);
    wait_for_sample(
        &metrics,
        "tandem_connections_closed_total{reason=\"eof\"}",
        1.0,
    );
    server.finish();
}

#[test]
fn a_read_through_asyncread_ends_at_the_idle_rule() {
    use std::io::Write;
    let idle_timeout = Duration::from_millis(300);
    let (server, metrics) =
        start_tokio_copy(config(Layout::Split).idle_timeout(Some(idle_timeout)));
    let mut client = server.connect();
    let sent = std::time::Instant::now();
    client.write_all(b"x").unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"x");
    assert!(sent.elapsed() >= idle_timeout);
    wait_for_sample(
        &metrics,
        "tandem_connections_closed_total{reason=\"idle_timeout\"}",
        1.0,
    );
    server.finish();
}

#[test]
fn a_read_through_asyncread_ends_at_the_cut_with_a_clean_close() {
    use std::io::Write;
    let (server, metrics) =
        start_tokio_copy(config(Layout::Split).shutdown_timeout(Duration::from_millis(200)));
    let mut client = server.connect();
    client.write_all(b"before").unwrap();
    let mut echoed = [0u8; 6];
    client.read_exact(&mut echoed).unwrap();
    server.stop.cancel();
    // The cut: a FIN after everything echoed, not a reset.
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    wait_for_sample(
        &metrics,
        "tandem_connections_closed_total{reason=\"shutdown\"}",
        1.0,
    );
    drop(client);
    assert_eq!(server.finish().cut, 1);
}

#[test]
fn a_shutdown_timer_built_outside_any_runtime_stops_the_server() {
    // Plain thread, no runtime: the async block creates tokio's sleep at
    // its first poll, on the server's own runtime.
    let listener = tandem::server::bind("127.0.0.1:0".parse().unwrap(), 128).unwrap();
    let shutdown = async { tokio::time::sleep(Duration::from_millis(200)).await };
    let report = Server::new(config(Layout::Split))
        .run(listener, Probe, shutdown)
        .unwrap();
    assert_eq!(report.cut, 0);
}

per_layout!(a_service_runs_on_the_serving_runtime_until_the_shutdown_begins);
fn a_service_runs_on_the_serving_runtime_until_the_shutdown_begins(layout: Layout) {
    use std::sync::{Arc, Mutex};
    // The thread the service's task ran on, and whether it saw the stop.
    let seen: Arc<Mutex<(String, bool)>> = Arc::default();
    let record = seen.clone();
    let server = Server::new(config(layout)).service("probe", move |context| {
        // Set up inside the serving runtime: a socket registered here
        // belongs to its reactor.
        let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
        socket.set_nonblocking(true)?;
        let socket = tokio::net::UdpSocket::from_std(socket)?;
        Ok(async move {
            let thread = std::thread::current().name().unwrap_or("").to_owned();
            context.stop().cancelled().await;
            drop(socket);
            *record.lock().unwrap() = (thread, true);
        })
    });
    let listener = tandem::server::bind("127.0.0.1:0".parse().unwrap(), 16).unwrap();
    let running = server.start(listener, Probe).unwrap();
    let report = running.wait(async {}).unwrap();
    assert_eq!(report.live, 0);
    let (thread, stopped) = seen.lock().unwrap().clone();
    assert!(stopped, "{layout}: the service never saw the stop");
    let serving = if layout == Layout::Sharded {
        "tandem-shard-0"
    } else {
        "tandem-worker"
    };
    assert!(thread.starts_with(serving), "{layout}: ran on {thread:?}");
}

#[test]
fn a_service_that_cannot_start_fails_the_server_with_its_name() {
    let server = Server::new(config(Layout::Split)).service("broken", |_context| {
        Err::<std::future::Ready<()>, _>(io::Error::other("no such device"))
    });
    let listener = tandem::server::bind("127.0.0.1:0".parse().unwrap(), 16).unwrap();
    let err = match server.start(listener, Probe) {
        Ok(_) => panic!("a server whose service failed to start started"),
        Err(err) => err,
    };
    assert!(
        matches!(err, ServerError::Service { name: "broken", .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "cannot start the broken service: no such device"
    );
}

/// Reads one line, hands it to the compute runtime, and writes back the
/// name of the thread that did the work; a line `panic` makes the work
/// panic. The handle is given to the handler, a clone to the server.
struct Offloading(tandem::Compute);

impl Handler for Offloading {
    async fn serve(&self, conn: &mut Connection) -> io::Result<Close> {
        use tokio::io::AsyncBufReadExt;
        let mut line = String::new();
        tokio::io::BufReader::new(&mut *conn)
            .read_line(&mut line)
            .await?;
        let worked_on = self
            .0
            .run(move || {
                assert_ne!(line.trim(), "panic", "the work was told to panic");
                std::thread::current().name().unwrap_or("").to_owned()
            })
            .await?;
        conn.write_all(format!("{worked_on}\n").as_bytes()).await?;
        conn.shutdown().await?;
        Ok(Close::Eof)
    }
}

#[test]
fn a_panicking_compute_job_ends_its_connection_with_an_error_and_the_pool_lives_on() {
    use std::io::Write;
    let compute =
        tandem::Compute::start(&tandem::ComputeConfig::default().threads(1)).expect("compute");
    let server = ProbeServer::start_server(
        Server::new(config(Layout::Split)).compute(compute.clone()),
        Offloading(compute),
    );
    let ask = |line: &[u8]| {
        let mut client = server.connect();
        client.write_all(line).unwrap();
        let mut answer = String::new();
        // A connection ended by an error may be reset rather than closed.
        let _ = client.read_to_string(&mut answer);
        answer
    };
    assert_eq!(ask(b"work\n"), "tandem-compute\n");
    assert_eq!(
        ask(b"panic\n"),
        "",
        "the panicking job's connection got an answer"
    );
    wait_for_sample(
        &server.metrics,
        "tandem_compute_jobs_total{outcome=\"panicked\"}",
        1.0,
    );
    wait_for_sample(
        &server.metrics,
        "tandem_connections_closed_total{reason=\"error\"}",
        1.0,
    );
    // The one compute thread serves the next job.
    assert_eq!(ask(b"work again\n"), "tandem-compute\n");
    wait_for_sample(
        &server.metrics,
        "tandem_compute_jobs_total{outcome=\"done\"}",
        2.0,
    );
    let report = server.finish();
    assert_eq!(report.cut, 0);
}

per_layout!(the_largest_shutdown_timeout_and_grace_do_not_overflow_the_clock);
/// A library caller may mean "wait for ever" by the largest duration: the
/// shutdown's clock saturates instead of overflowing, and a server with
/// nothing to drain stops at once.
fn the_largest_shutdown_timeout_and_grace_do_not_overflow_the_clock(layout: Layout) {
    let server = ProbeServer::start(
        config(layout)
            .shutdown_timeout(Duration::MAX)
            .shutdown_grace(Duration::MAX),
    );
    let report = server.finish();
    assert_eq!(report.live, 0, "{layout}");
}
