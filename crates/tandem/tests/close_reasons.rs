//! How a connection's end is counted: by what ended it, told apart by
//! type, never guessed from an error's kind. A handler's panic, its own
//! close reasons and its own timeouts each have their series; the idle
//! rule's and the cut's errors are public types a handler on tokio's I/O
//! helpers can recognise.
//!
//! One handler, `Reasons`, ends its connection the way the client's first
//! byte asks, so that every test here runs the same server code.

mod common;

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tandem::connection::{Cut, IdleTimeout};
use tandem::{Close, Connection, Handler, Layout, Metrics, Server, ServerConfig};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

/// Ends its connection as the first byte it reads says:
/// - `!`: panics;
/// - `p`: the peer broke the protocol, `Close::Protocol`;
/// - `n`: a reason of its own, `Close::Handler(&"quota exceeded")`;
/// - `t`: its own backend timed out, a `TimedOut` error of its own;
/// - `r`: reads on through tokio's `AsyncRead` until the read fails, then
///   writes `idle`, `cut` or `other` (what the error is, by the public
///   helpers) and its message, and passes the error on;
/// - anything else: echoes it, and every byte after, until the peer's EOF.
///
/// Every connection first gets `ready\n`, so that a client knows it is
/// being served.
struct Reasons;

impl Handler for Reasons {
    async fn serve(&self, conn: &mut Connection) -> io::Result<Close> {
        conn.write_all(b"ready\n").await?;
        let mut byte = [0u8; 1];
        if conn.read(&mut byte).await? == 0 {
            return Ok(Close::Eof);
        }
        match byte[0] {
            b'!' => panic!("the test handler panics on request"),
            b'p' => Ok(Close::Protocol),
            b'n' => Ok(Close::Handler(&"quota exceeded")),
            b't' => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the test's backend timed out",
            )),
            b'r' => read_until_it_fails(conn).await,
            _ => echo_until_eof(conn, byte[0]).await,
        }
    }
}

/// The `r` case: acknowledges, then reads through `AsyncRead` until the
/// read fails, and says what failed it.
async fn read_until_it_fails(conn: &mut Connection) -> io::Result<Close> {
    conn.write_all(b"reading\n").await?;
    let err = loop {
        if let Err(err) = conn.read_u8().await {
            break err;
        }
    };
    let what = if Cut::is(&err) {
        "cut"
    } else if IdleTimeout::is(&err) {
        "idle"
    } else {
        "other"
    };
    // Writes still go through after either verdict while the socket has
    // room: the last word.
    conn.write_all(format!("{what}: {err}\n").as_bytes())
        .await?;
    Err(err)
}

/// The default case: echoes `first`, then every byte, until EOF.
async fn echo_until_eof(conn: &mut Connection, first: u8) -> io::Result<Close> {
    conn.write_all(&[first]).await?;
    let mut buf = [0u8; 1024];
    loop {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            conn.shutdown().await?;
            return Ok(Close::Eof);
        }
        conn.write_all(&buf[..n]).await?;
    }
}

/// A `Reasons` server on a thread of its own, stopped when dropped.
struct Running {
    addr: SocketAddr,
    metrics: Metrics,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(config: ServerConfig) -> Running {
        let listener = tandem::server::bind("127.0.0.1:0".parse().unwrap(), 128).unwrap();
        let addr = listener.local_addr().unwrap();
        let running = Server::new(config).start(listener, Reasons).unwrap();
        let metrics = running.metrics().clone();
        let stop = CancellationToken::new();
        let wait = stop.clone().cancelled_owned();
        let thread = std::thread::spawn(move || {
            running.wait(wait).unwrap();
        });
        Running {
            addr,
            metrics,
            stop,
            thread: Some(thread),
        }
    }

    /// A client the server has started serving (it read `ready`).
    fn client(&self) -> TcpStream {
        let mut client = TcpStream::connect(self.addr).unwrap();
        client.set_read_timeout(Some(common::PATIENCE)).unwrap();
        assert_eq!(read_line(&mut client), "ready");
        client
    }

    /// Polls the metrics until `tandem_connections_closed_total{reason}`
    /// reads `want`.
    fn wait_for_closed(&self, reason: &str, want: u64) {
        let series = format!("tandem_connections_closed_total{{reason=\"{reason}\"}}");
        let deadline = Instant::now() + common::PATIENCE;
        loop {
            let got = closed(&self.metrics, &series);
            if got == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{series} stayed at {got:?}, not {want}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn closed(&self, reason: &str) -> Option<u64> {
        let series = format!("tandem_connections_closed_total{{reason=\"{reason}\"}}");
        closed(&self.metrics, &series)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The value of `series` in the server's exposition.
fn closed(metrics: &Metrics, series: &str) -> Option<u64> {
    metrics.render().lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.parse().ok()
    })
}

/// One line, without its newline, read a byte at a time.
fn read_line(client: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        client.read_exact(&mut byte).unwrap();
        if byte[0] == b'\n' {
            return String::from_utf8(line).unwrap();
        }
        line.push(byte[0]);
    }
}

/// Everything up to the server's close; a reset counts as the close.
fn read_to_close(client: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    match client.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::ConnectionReset => {}
        Err(err) => panic!("reading to the close: {err}"),
    }
    rest
}

/// Every event the library logs at debug level or above, one line each:
/// level, then `name=value` per field. Installed once for the whole test
/// binary, as the server logs from its own threads.
fn logged() -> &'static Mutex<Vec<String>> {
    static LINES: OnceLock<&'static Mutex<Vec<String>>> = OnceLock::new();
    LINES.get_or_init(|| {
        let lines: &'static Mutex<Vec<String>> = Box::leak(Box::default());
        tracing::subscriber::set_global_default(Capture(lines))
            .expect("no other subscriber in this test binary");
        lines
    })
}

/// Waits until a logged line holds every one of `parts`, and returns it.
fn wait_for_log(parts: &[&str]) -> String {
    let deadline = Instant::now() + common::PATIENCE;
    loop {
        let found = logged()
            .lock()
            .unwrap()
            .iter()
            .find(|line| parts.iter().all(|part| line.contains(part)))
            .cloned();
        if let Some(line) = found {
            return line;
        }
        assert!(Instant::now() < deadline, "no log line holds {parts:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A subscriber that keeps the library's events as text.
struct Capture(&'static Mutex<Vec<String>>);

impl tracing::Subscriber for Capture {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.target().starts_with("tandem") && *metadata.level() <= tracing::Level::DEBUG
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = format!("{}", event.metadata().level());
        event.record(&mut Fields(&mut line));
        self.0.lock().unwrap().push(line);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

fn config() -> ServerConfig {
    ServerConfig::default().layout(Layout::Split).workers(2)
}

#[test]
fn a_panicking_handler_closes_its_own_connection_counted_as_panic_and_logged() {
    logged();
    let server = Running::start(config());
    // Served before the panic, and served on after it.
    let mut bystander = server.client();
    bystander.write_all(b"a").unwrap();
    let mut echoed = [0u8; 1];
    bystander.read_exact(&mut echoed).unwrap();

    let mut panicking = server.client();
    let panicking_addr = panicking.local_addr().unwrap();
    panicking.write_all(b"!").unwrap();
    assert!(read_to_close(&mut panicking).is_empty());
    server.wait_for_closed("panic", 1);
    let line = wait_for_log(&[&format!("peer={panicking_addr}"), "panic"]);
    assert!(line.starts_with("ERROR"), "{line}");
    assert!(
        line.contains("the test handler panics on request"),
        "{line}"
    );

    bystander.write_all(b"bc").unwrap();
    let mut echoed = [0u8; 2];
    bystander.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"bc");
    // And new connections are served as before.
    let mut after = server.client();
    after.write_all(b"d").unwrap();
    after.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_to_close(&mut after), b"d");
    server.wait_for_closed("eof", 1);
    bystander.shutdown(std::net::Shutdown::Write).unwrap();
    read_to_close(&mut bystander);
    server.wait_for_closed("eof", 2);
    // Every connection accepted is closed, and counted once: three and
    // three (the panicking one was accepted and never closed, before).
    let exposition = server.metrics.render();
    let accepted = exposition
        .lines()
        .find_map(|line| line.strip_prefix("tandem_connections_accepted_total "));
    assert_eq!(accepted, Some("3"));
    let closed: u64 = exposition
        .lines()
        .filter(|line| line.starts_with("tandem_connections_closed_total{"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum();
    assert_eq!(closed, 3, "{exposition}");
    assert_eq!(server.closed("error"), Some(0));
}

#[test]
fn a_handler_that_ends_on_a_protocol_error_is_counted_apart_from_the_peers_close() {
    let server = Running::start(config());
    let mut client = server.client();
    client.write_all(b"p").unwrap();
    read_to_close(&mut client);
    server.wait_for_closed("protocol", 1);
    assert_eq!(server.closed("eof"), Some(0));
}

#[test]
fn a_handler_that_ends_for_a_named_reason_is_counted_under_one_label_and_logs_the_name() {
    logged();
    let server = Running::start(config());
    let mut client = server.client();
    let addr = client.local_addr().unwrap();
    client.write_all(b"n").unwrap();
    read_to_close(&mut client);
    server.wait_for_closed("handler", 1);
    assert_eq!(server.closed("eof"), Some(0));
    // One series for every name: the name is in the log, not the label.
    assert!(!server.metrics.render().contains("quota exceeded"));
    wait_for_log(&[&format!("peer={addr}"), "quota exceeded"]);
}

#[test]
fn a_handlers_own_timeout_is_counted_as_an_error_not_as_the_idle_rule() {
    let server = Running::start(config().idle_timeout(Some(Duration::from_secs(60))));
    let mut client = server.client();
    client.write_all(b"t").unwrap();
    read_to_close(&mut client);
    server.wait_for_closed("error", 1);
    assert_eq!(server.closed("idle_timeout"), Some(0));
}

#[test]
fn the_idle_rules_error_is_recognised_by_type_and_named_in_the_librarys_terms() {
    let idle_timeout = Duration::from_millis(300);
    let server = Running::start(config().idle_timeout(Some(idle_timeout)));
    let mut client = server.client();
    client.write_all(b"r").unwrap();
    assert_eq!(read_line(&mut client), "reading");
    // Silent now: the read through `AsyncRead` ends at the idle rule.
    let said = read_line(&mut client);
    assert!(said.starts_with("idle: "), "{said}");
    assert!(said.contains("ServerConfig::idle_timeout"), "{said}");
    assert!(!said.contains("--"), "names a command-line flag: {said}");
    read_to_close(&mut client);
    server.wait_for_closed("idle_timeout", 1);
}

#[test]
fn the_cut_is_recognised_by_type_by_a_handler_reading_through_asyncread() {
    let server = Running::start(config().shutdown_timeout(Duration::from_millis(200)));
    let mut client = server.client();
    client.write_all(b"r").unwrap();
    assert_eq!(read_line(&mut client), "reading");
    server.stop.cancel();
    let said = read_line(&mut client);
    assert!(said.starts_with("cut: "), "{said}");
    read_to_close(&mut client);
    server.wait_for_closed("shutdown", 1);
}
