//! Echo over real sockets, in every layout: byte-exact, half-close,
//! concurrency, the newline variant, idle timeout, misbehaving peers.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use common::{TestServer, per_layout, random_bytes, round_trip};

/// Sends `payload` from one thread while reading from another, half-closes,
/// and returns everything read until the server's FIN.
fn echo_with_half_close(server: &TestServer, payload: Vec<u8>) -> Vec<u8> {
    let mut stream = server.connect();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        writer.write_all(&payload).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut echoed = Vec::new();
    stream.read_to_end(&mut echoed).unwrap();
    sender.join().unwrap();
    echoed
}

per_layout!(random_payload_with_half_close_comes_back_byte_exact_then_eof);
fn random_payload_with_half_close_comes_back_byte_exact_then_eof(layout: &str) {
    let mut server = TestServer::start(&["--layout", layout]);
    let payload = random_bytes(3 * 1024 * 1024 + 17);
    let echoed = echo_with_half_close(&server, payload.clone());
    assert!(echoed == payload, "{layout}: echo differs from payload");
    assert!(server.stop().success());
}

per_layout!(hundred_concurrent_clients_each_get_their_own_bytes_back);
fn hundred_concurrent_clients_each_get_their_own_bytes_back(layout: &str) {
    let mut server = TestServer::start(&["--layout", layout]);
    let clients: Vec<_> = (0..100)
        .map(|i| {
            let mut stream = server.connect();
            std::thread::spawn(move || {
                for round in 0..20 {
                    let payload = random_bytes(1 + (i * 37 + round * 101) % 9000);
                    assert!(round_trip(&mut stream, &payload) == payload);
                }
                stream.shutdown(Shutdown::Write).unwrap();
                let mut rest = Vec::new();
                stream.read_to_end(&mut rest).unwrap();
                assert!(rest.is_empty());
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    assert!(server.stop().success(), "{layout}");
}

#[test]
fn append_newline_follows_each_chunk_with_a_newline() {
    let mut server = TestServer::start(&["--append-newline"]);
    let mut stream = server.connect();
    assert_eq!(round_trip(&mut stream, b"ping"), b"ping");
    let mut newline = [0u8; 1];
    stream.read_exact(&mut newline).unwrap();
    assert_eq!(&newline, b"\n");
    drop(stream);
    assert!(server.stop().success());
}

#[test]
fn append_newline_after_a_full_buffer_is_a_newline_not_a_stale_byte() {
    // The article's code pushed '\n' past the end of a full-length buffer and sent the
    // byte at that index instead. With a 4-byte buffer, 4 bytes fill it.
    let mut server = TestServer::start(&["--append-newline", "--buffer-size", "4"]);
    let mut stream = server.connect();
    stream.write_all(b"wxyz").unwrap();
    let mut echoed = [0u8; 5];
    stream.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"wxyz\n");
    drop(stream);
    assert!(server.stop().success());
}

per_layout!(idle_connection_is_closed_after_idle_timeout);
fn idle_connection_is_closed_after_idle_timeout(layout: &str) {
    let mut server = TestServer::start(&["--layout", layout, "--idle-timeout", "300ms"]);
    let mut stream = server.connect();
    assert_eq!(round_trip(&mut stream, b"hello"), b"hello");
    let mut rest = Vec::new();
    // EOF, not the harness's read timeout: the server closed it.
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    assert!(server.stop().success());
}

#[test]
fn a_connection_in_use_outlives_the_idle_timeout() {
    let mut server = TestServer::start(&["--idle-timeout", "1s"]);
    let mut stream = server.connect();
    // Three seconds of traffic, one message every 100 ms: three idle
    // timeouts' worth of time, never one of silence. A loaded machine would
    // have to hold this client up for 900 ms at once to close it.
    for _ in 0..30 {
        assert_eq!(round_trip(&mut stream, b"still here"), b"still here");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(stream);
    assert!(server.stop().success());
}

#[test]
fn zero_idle_timeout_keeps_silent_connections_open() {
    let mut server = TestServer::start(&["--idle-timeout", "0"]);
    let mut stream = server.connect();
    stream
        .set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let mut byte = [0u8; 1];
    let silence = stream.read(&mut byte).unwrap_err();
    assert!(matches!(
        silence.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));
    assert_eq!(round_trip(&mut stream, b"x"), b"x");
    drop(stream);
    assert!(server.stop().success());
}

per_layout!(a_client_that_resets_mid_echo_ends_only_its_own_connection);
fn a_client_that_resets_mid_echo_ends_only_its_own_connection(layout: &str) {
    let mut server = TestServer::start(&["--layout", layout]);
    let mut survivor = server.connect();
    for _ in 0..50 {
        let stream = server.connect();
        let socket = socket2::Socket::from(stream);
        socket.set_linger(Some(Duration::ZERO)).unwrap();
        let mut stream = std::net::TcpStream::from(socket);
        stream.write_all(&random_bytes(64 * 1024)).unwrap();
        drop(stream); // RST, with echo still in flight
    }
    let payload = random_bytes(100_000);
    assert!(round_trip(&mut survivor, &payload) == payload, "{layout}");
    drop(survivor);
    assert!(server.stop().success());
    assert!(!server.stderr().contains("panicked"), "{layout}");
}

#[test]
fn a_client_that_sends_without_reading_is_pushed_back_and_loses_nothing() {
    let mut server = TestServer::start(&[]);
    let mut stream = server.connect();
    let payload = random_bytes(16 * 1024 * 1024);
    let mut writer = stream.try_clone().unwrap();
    let sent = payload.clone();
    // The writer blocks once the server stops reading (its writes to us are
    // stuck); it can only finish because we start reading below.
    let sender = std::thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut echoed = Vec::new();
    stream.read_to_end(&mut echoed).unwrap();
    sender.join().unwrap();
    assert!(echoed == payload);
    assert!(server.stop().success());
}
