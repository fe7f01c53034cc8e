//! Graceful shutdown (invariant 8) and sockets that belong to the runtime
//! serving them (invariant 1), over real sockets and real signals.

mod common;

use std::io::{ErrorKind, Read};
use std::net::{Shutdown, TcpStream};
use std::os::unix::process::ExitStatusExt;

use common::{ACCEPTOR_GONE, TestServer, per_layout, round_trip};
use nix::sys::signal::Signal;

per_layout!(live_connections_keep_echoing_after_the_acceptor_runtime_stops);
fn live_connections_keep_echoing_after_the_acceptor_runtime_stops(layout: &str) {
    let mut server = TestServer::start(&["--layout", layout]);
    let mut live = server.connect();
    assert_eq!(round_trip(&mut live, b"before"), b"before");

    server.signal(Signal::SIGTERM);
    server.wait_for_log(ACCEPTOR_GONE);

    // The acceptor runtime, and its reactor, are gone: a socket still
    // registered there (as in the article's sketch) would never be woken again.
    for round in 0..10 {
        let message = format!("after {round}");
        assert_eq!(
            round_trip(&mut live, message.as_bytes()),
            message.as_bytes()
        );
    }
    live.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    live.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{layout}");
    assert!(server.wait().success(), "{layout}");
}

per_layout!(the_shutdown_log_names_the_acceptor_runtime_only_where_there_is_one);
fn the_shutdown_log_names_the_acceptor_runtime_only_where_there_is_one(layout: &str) {
    let mut server = TestServer::start(&["--layout", layout]);
    server.signal(Signal::SIGTERM);
    let line = server.wait_for_line(ACCEPTOR_GONE);
    assert_eq!(
        line.contains("acceptor runtime"),
        layout != "single",
        "{layout}: {line}"
    );
    assert!(server.wait().success(), "{layout}");
}

per_layout!(sigterm_refuses_new_connections_at_once);
fn sigterm_refuses_new_connections_at_once(layout: &str) {
    let mut server = TestServer::start(&["--layout", layout]);
    let live = server.connect();
    server.signal(Signal::SIGTERM);
    server.wait_for_log(ACCEPTOR_GONE);
    let refused = TcpStream::connect(server.addr).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{layout}");
    drop(live);
    assert!(server.wait().success(), "{layout}");
}

#[test]
fn drained_connections_are_counted_and_the_exit_status_is_0() {
    let mut server = TestServer::start(&[]);
    let mut clients: Vec<_> = (0..3).map(|_| server.connect()).collect();
    for client in &mut clients {
        assert_eq!(round_trip(client, b"hi"), b"hi");
    }
    server.signal(Signal::SIGTERM);
    server.wait_for_log(ACCEPTOR_GONE);
    drop(clients);
    let status = server.wait();
    assert!(status.success());
    assert!(
        server.stderr().contains("live=3 drained=3 cut=0"),
        "{}",
        server.stderr()
    );
}

per_layout!(shutdown_timeout_cuts_the_rest_and_still_exits_0);
fn shutdown_timeout_cuts_the_rest_and_still_exits_0(layout: &str) {
    let mut server = TestServer::start(&["--layout", layout, "--shutdown-timeout", "300ms"]);
    let mut silent = server.connect();
    assert_eq!(round_trip(&mut silent, b"hi"), b"hi");
    server.signal(Signal::SIGTERM);
    // The server closes it (EOF), the client never did.
    let mut rest = Vec::new();
    silent.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    // Closed at once, so that the server's linger after its FIN ends
    // now, not at its limit, however slowly a loaded machine gets there.
    drop(silent);
    assert!(server.wait().success(), "{layout}");
    assert!(
        server.stderr().contains("live=1 drained=0 cut=1"),
        "{layout}: {}",
        server.stderr()
    );
}

#[test]
fn sigint_shuts_down_gracefully_too() {
    let mut server = TestServer::start(&[]);
    server.signal(Signal::SIGINT);
    assert!(server.wait().success());
    assert!(server.stderr().contains("SIGINT"));
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut server = TestServer::start(&["--shutdown-timeout", "1h"]);
    let mut live = server.connect();
    assert_eq!(round_trip(&mut live, b"hi"), b"hi");
    server.signal(Signal::SIGTERM);
    server.wait_for_log(ACCEPTOR_GONE);
    server.signal(Signal::SIGTERM);
    let status = server.wait();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status:?}");
    assert_eq!(status.signal(), None, "exited, not killed");
}

#[test]
fn a_client_that_never_stops_sending_is_still_cut_at_the_timeout() {
    use std::io::Write;
    use std::time::{Duration, Instant};

    let mut server = TestServer::start(&["--shutdown-timeout", "300ms"]);
    let mut reader = server.connect();
    let mut writer = reader.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(15);
        // As fast as it can, so that the socket is always readable, until
        // the server closes the connection (the write then fails).
        let chunk = vec![7u8; 64 * 1024];
        while Instant::now() < deadline && writer.write_all(&chunk).is_ok() {}
    });
    let mut echoed = [0u8; 1024];
    reader.read_exact(&mut echoed).unwrap();
    server.signal(Signal::SIGTERM);
    // Read until the server's FIN (or a reset, once it closes with our
    // latest bytes unread).
    let mut sink = [0u8; 64 * 1024];
    loop {
        match reader.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(err) if err.kind() == ErrorKind::ConnectionReset => break,
            Err(err) => panic!("{err}"),
        }
    }
    assert!(server.wait().success());
    sender.join().unwrap();
    let log = server.stderr();
    assert!(log.contains("live=1 drained=0 cut=1"), "{log}");
    assert!(!log.contains("dropping them"), "{log}");
}

#[test]
fn a_cut_client_gets_its_echo_then_a_clean_eof_not_a_reset() {
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    let mut server = TestServer::start(&["--shutdown-timeout", "300ms"]);
    let mut reader = server.connect();
    let mut writer = reader.try_clone().unwrap();
    let saw_eof = Arc::new(AtomicBool::new(false));
    let sender = std::thread::spawn({
        let saw_eof = saw_eof.clone();
        move || {
            let mut sent = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(15);
            let mut chunk = 0u8;
            // Sends until the client has read the server's FIN. Nobody reads
            // at first, so the server blocks on its echo and unread data
            // piles up in its receive buffer: what it has at the cut.
            while !saw_eof.load(Ordering::Relaxed) && Instant::now() < deadline {
                let data = vec![chunk; 16 * 1024];
                // Kept before the write: one cut short by the reader's
                // half-close may have sent, and had echoed, part of it.
                sent.extend_from_slice(&data);
                if let Err(err) = writer.write_all(&data) {
                    // After the reader's half-close, a write fails as it
                    // should; before it, a failure is the server's doing.
                    if saw_eof.load(Ordering::Relaxed) {
                        break;
                    }
                    return Err(err);
                }
                chunk = chunk.wrapping_add(1);
            }
            // The reader may have half-closed already.
            let _ = writer.shutdown(std::net::Shutdown::Write);
            Ok::<_, std::io::Error>(sent)
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    server.signal(Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(500));
    let mut echoed = Vec::new();
    let read = reader.read_to_end(&mut echoed);
    saw_eof.store(true, Ordering::Relaxed);
    // The client's FIN goes out at once, from this thread: the server
    // drains what arrives after its own FIN only for a while, and the
    // sender thread may be slow to see the flag on a loaded machine.
    let _ = reader.shutdown(std::net::Shutdown::Write);
    read.expect("a clean EOF, not a reset");
    let sent = sender
        .join()
        .unwrap()
        .expect("the server reset the connection while we were sending");
    assert!(
        sent.starts_with(&echoed),
        "the echo is not a prefix of what was sent"
    );
    assert!(server.wait().success());
}

#[test]
fn sighup_without_tls_and_sigusr1_are_logged_and_the_server_goes_on() {
    let mut server = TestServer::start(&[]);
    let mut client = server.connect();
    server.signal(Signal::SIGHUP);
    server.wait_for_line("no TLS identity to reload; going on");
    server.signal(Signal::SIGUSR1);
    server.wait_for_line("no log file to reopen");
    assert_eq!(round_trip(&mut client, b"still here"), b"still here");
    assert!(TcpStream::connect(server.addr).is_ok(), "still accepting");
    drop(client);
    assert!(server.stop().success());
}

#[test]
fn sigquit_shuts_down_gracefully_as_sigterm_does() {
    let mut server = TestServer::start(&[]);
    let mut live = server.connect();
    assert_eq!(round_trip(&mut live, b"before"), b"before");
    server.signal(Signal::SIGQUIT);
    server.wait_for_log(ACCEPTOR_GONE);
    // Still served while it drains.
    assert_eq!(round_trip(&mut live, b"draining"), b"draining");
    drop(live);
    let status = server.wait();
    assert!(status.success(), "{status:?}");
}

/// Writes to `client` without ever reading until its writes stall: the
/// server's echo is then stuck too, with the client's window full, and the
/// server has stopped reading from it.
fn stall_echo(client: &mut TcpStream) {
    use std::io::Write;
    client.set_nonblocking(true).unwrap();
    let chunk = [b'x'; 64 * 1024];
    let mut quiet_since = std::time::Instant::now();
    // Stalled: no byte taken for half a second.
    while quiet_since.elapsed() < std::time::Duration::from_millis(500) {
        match client.write(&chunk) {
            Ok(_) => quiet_since = std::time::Instant::now(),
            Err(err) if err.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(err) => panic!("write: {err}"),
        }
    }
}

#[test]
fn a_shutdown_takes_the_timeout_and_the_grace_at_most_and_says_so() {
    use std::time::{Duration, Instant};
    let mut server = TestServer::start(&["--shutdown-timeout", "1s", "--shutdown-grace", "3s"]);
    let mut stuck = server.connect_with_buffers(4096);
    stall_echo(&mut stuck);
    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);
    let line = server.wait_for_line(ACCEPTOR_GONE);
    assert!(
        line.contains("timeout=1s") && line.contains("grace=3s") && line.contains("at_most=4s"),
        "{line}"
    );
    assert!(server.wait().success());
    let took = signalled.elapsed();
    // The client never reads, so its echo is written back until the grace
    // is spent, less the part of it kept for the runtimes to stop (a
    // quarter of it, at most 1 s): timers never fire early, so this is a
    // floor. A fixed grace of 2 s would have ended it near 3 s.
    let floor = Duration::from_secs(1) + Duration::from_secs(3) * 3 / 4;
    assert!(took >= floor, "exited {took:?} after SIGTERM");
    // And the grace ends it: at most the timeout and the grace, 4 s, with
    // 6 s for a loaded machine to schedule the exit and this test to see
    // it. Without a bound the stuck write would hold it for ever.
    assert!(
        took < Duration::from_secs(10),
        "exited {took:?} after SIGTERM"
    );
    assert!(
        server
            .stderr()
            .contains("connections still writing after the cut; dropping them"),
        "{}",
        server.stderr()
    );
    drop(stuck);
}
