//! Case 5, shutdown under load. SIGTERM arrives while 100 clients stream.
//! New connects are refused at once, but the live connections are served to
//! their end: every client keeps streaming for a while, half-closes, and
//! gets back every byte it sent (same count, same SHA-256), then the
//! server's FIN. All 100 are drained, none cut, and the exit status is 0.
//!
//! "While 100 clients stream" is checked too: before the signal every
//! client has had echo back, and none may have had 128 MiB back while
//! another has had nothing (a server whose busy connections keep their
//! worker thread starves the rest).

use std::io::ErrorKind;
use std::net::TcpStream;
use std::sync::atomic::Ordering;

use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::common::streamer::stream_together;
use crate::common::{ACCEPTOR_GONE, PATIENCE, TestServer, per_layout};

const CLIENTS: usize = 100;
/// How long the clients keep streaming after the signal: the server is
/// shutting down, and still serving them.
const AFTER_SIGNAL: Duration = Duration::from_millis(400);

/// Most echo one client may get before every client has had some: a
/// server that lets one busy connection keep a worker thread starves the
/// others, which then never stream at all.
const STARVATION: u64 = 128 * 1024 * 1024;

per_layout!(sigterm_while_100_clients_stream_returns_every_byte_and_exits_0);
fn sigterm_while_100_clients_stream_returns_every_byte_and_exits_0(layout: &str) {
    let mut server = TestServer::start(&["--layout", layout]);
    let (streamers, progress) = stream_together(CLIENTS, || server.connect());

    // Mid-stream: every client has had echo back and is still sending.
    // A server that let busy connections keep their worker thread would
    // starve the others here, before the signal.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let echoing = progress.echoing.load(Ordering::Relaxed);
        if echoing == CLIENTS {
            break;
        }
        let most = progress.most_echoed.load(Ordering::Relaxed);
        assert!(
            most < STARVATION,
            "{layout}: a client had {} MiB back while {} of {CLIENTS} clients \
             had not had a byte: busy connections starve the others",
            most >> 20,
            CLIENTS - echoing,
        );
        assert!(
            Instant::now() < deadline,
            "{layout}: after {PATIENCE:?} of streaming, only {echoing} of {CLIENTS} \
             clients had any echo back"
        );
        thread::sleep(Duration::from_millis(1));
    }

    server.signal(Signal::SIGTERM);
    let signalled = Instant::now();
    // The listener closes at once: a new client is refused, not queued
    // behind the drain.
    server.wait_for_log(ACCEPTOR_GONE);
    let refused = TcpStream::connect(server.addr).expect_err("a connect after SIGTERM");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{layout}");

    // The live clients go on streaming into the shutdown, then stop.
    thread::sleep(AFTER_SIGNAL.saturating_sub(signalled.elapsed()));
    progress.stop.store(true, Ordering::Relaxed);

    for (i, streamer) in streamers.into_iter().enumerate() {
        let sent = streamer
            .writer
            .join()
            .unwrap()
            .unwrap_or_else(|err| panic!("{layout}: client {i} could not send: {err}"));
        let echoed = streamer
            .reader
            .join()
            .unwrap()
            .unwrap_or_else(|err| panic!("{layout}: client {i} could not read: {err}"));
        assert_eq!(
            echoed.bytes, sent.bytes,
            "{layout}: client {i} got {} bytes back of {} sent",
            echoed.bytes, sent.bytes
        );
        assert_eq!(
            echoed, sent,
            "{layout}: client {i} got as many bytes back as it sent, but different ones"
        );
    }

    let status = server.wait();
    assert!(status.success(), "{layout}: {status:?}");
    let log = server.stderr();
    assert!(
        log.contains(&format!("live={CLIENTS} drained={CLIENTS} cut=0")),
        "{layout}: {log}"
    );
}
