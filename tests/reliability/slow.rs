//! Case 8, slowloris and silence: a client that sends nothing, or trickles a
//! byte now and then, cannot hold a connection slot forever.
//!
//! Two rules do it, both on by default: `--idle-timeout` (300 s) closes a
//! connection silent that long, and `--min-rate` (1 byte per second, the
//! larger of the bytes in and the bytes out) closes one that moves fewer
//! than rate x idle-timeout bytes in a window of the idle timeout, however
//! regularly it sends. These tests run the same rules on a scale of
//! seconds; most run their three layouts at once, since each mostly waits
//! on the clock.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::admin::scrape_until;
use crate::common::{PATIENCE, TestServer, per_layout, round_trip};

/// Waits for the server to close `stream`: end-of-file or a reset, after
/// reading whatever echo was still on its way. Returns when that happened.
fn closed_by_server(stream: &mut TcpStream) -> Instant {
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Instant::now(),
            Ok(_) => {}
            Err(err) if matches!(err.kind(), ErrorKind::ConnectionReset) => {
                return Instant::now();
            }
            Err(err) => panic!("connection not closed by the server: {err}"),
        }
    }
}

/// Sends one byte every `interval` until the server closes the connection
/// (a write fails) or `limit` passes; returns the bytes sent.
fn trickle(mut stream: TcpStream, interval: Duration, limit: Duration) -> usize {
    let until = Instant::now() + limit;
    let mut sent = 0;
    while Instant::now() < until {
        std::thread::sleep(interval);
        if stream.write_all(b"x").is_err() {
            break;
        }
        sent += 1;
    }
    sent
}

per_layout!(tricklers_lose_their_slots_to_the_minimum_rate, at_once);
fn tricklers_lose_their_slots_to_the_minimum_rate(layout: &str) {
    // Two slots; each 2 s window must see 16 bytes moved. A byte every
    // 600 ms is at most 4 bytes in and 4 echoed per window, and never
    // 2 s of silence. Nobody waits for their slots: a waiting client
    // would have them shed sooner (`shedding`).
    let mut server = TestServer::start_with_admin(&[
        "--layout",
        layout,
        "--max-connections",
        "2",
        "--idle-timeout",
        "2s",
        "--min-rate",
        "8",
    ]);
    let started = Instant::now();
    let tricklers: Vec<TcpStream> = (0..2).map(|_| server.connect()).collect();
    let readers: Vec<TcpStream> = tricklers.iter().map(|s| s.try_clone().unwrap()).collect();
    let senders: Vec<_> = tricklers
        .into_iter()
        .map(|stream| {
            std::thread::spawn(move || {
                trickle(stream, Duration::from_millis(600), Duration::from_secs(10))
            })
        })
        .collect();

    // The rule closes the tricklers at the end of their first window, not
    // after the 10 s they would go on for.
    for mut reader in readers {
        let closed = closed_by_server(&mut reader);
        let held = closed - started;
        assert!(
            held >= Duration::from_secs(2) && held < Duration::from_secs(8),
            "{layout}: a trickler held its slot for {held:?}"
        );
    }
    for sender in senders {
        sender.join().unwrap();
    }
    scrape_until(
        server.admin_addr(),
        &[
            (
                "tandem_connections_closed_total{reason=\"idle_timeout\"}",
                2.0,
            ),
            ("tandem_connections_closed_total{reason=\"shed\"}", 0.0),
        ],
    );
    assert!(server.stop().success(), "{layout}");
}

per_layout!(
    a_client_at_half_the_minimum_rate_is_closed_though_its_echo_would_double_it,
    at_once
);
fn a_client_at_half_the_minimum_rate_is_closed_though_its_echo_would_double_it(layout: &str) {
    // 4 bytes per 4 s window. A byte every 2 s is 2 in and 2
    // echoed a window: 4 when in and out were added up, which
    // kept the client for as long as it went on.
    let mut server = TestServer::start(&[
        "--layout",
        layout,
        "--idle-timeout",
        "4s",
        "--min-rate",
        "1",
    ]);
    let started = Instant::now();
    let client = server.connect();
    let mut reader = client.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        trickle(client, Duration::from_secs(2), Duration::from_secs(20))
    });
    let held = closed_by_server(&mut reader) - started;
    // The first window closes at 4 s; a late tick or a late
    // byte may let one window pass, not four.
    assert!(
        held >= Duration::from_secs(4) && held < Duration::from_secs(16),
        "{layout}: closed after {held:?}"
    );
    sender.join().unwrap();
    assert!(server.stop().success(), "{layout}");
}

per_layout!(a_silent_client_is_closed_after_the_idle_timeout);
fn a_silent_client_is_closed_after_the_idle_timeout(layout: &str) {
    let mut server = TestServer::start(&["--layout", layout, "--idle-timeout", "1s"]);
    let started = Instant::now();
    let mut silent = server.connect();
    let held = closed_by_server(&mut silent) - started;
    assert!(
        held >= Duration::from_secs(1),
        "{layout}: closed after {held:?}"
    );
    assert!(server.stop().success(), "{layout}");
}

per_layout!(
    a_client_that_keeps_up_the_rate_outlives_many_windows,
    at_once
);
fn a_client_that_keeps_up_the_rate_outlives_many_windows(layout: &str) {
    // 2 s windows of 16 bytes: 16 bytes every 250 ms is far
    // above, and a loaded machine would have to hold this
    // client up for 1.75 s at once to close it.
    let mut server = TestServer::start(&[
        "--layout",
        layout,
        "--idle-timeout",
        "2s",
        "--min-rate",
        "8",
    ]);
    let mut client = server.connect();
    // Three windows and more.
    let until = Instant::now() + Duration::from_millis(6500);
    while Instant::now() < until {
        assert_eq!(
            round_trip(&mut client, b"still here, 16 B"),
            b"still here, 16 B"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(server.stop().success(), "{layout}");
}

per_layout!(
    a_client_that_keeps_the_server_busy_but_moves_too_little_is_still_held_to_the_rate,
    at_once
);
/// The client keeps the server's receive buffer full, so its socket is
/// always readable, and reads the echo at about 6 MB/s: never silent,
/// quick enough that the server's writes never wait long, yet far below a
/// minimum rate of 100 MB/s (200 MB per 2 s window). The rule must still
/// close it, whether the server is reading or waiting to write.
fn a_client_that_keeps_the_server_busy_but_moves_too_little_is_still_held_to_the_rate(
    layout: &str,
) {
    let mut server = TestServer::start(&[
        "--layout",
        layout,
        "--idle-timeout",
        "2s",
        "--min-rate",
        "100000000",
    ]);
    let started = Instant::now();
    let client = server.connect();
    let mut writer = client.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let chunk = [0x42u8; 64 * 1024];
        // Fails once the server closes the connection.
        while writer.write_all(&chunk).is_ok() {}
    });
    let mut reader = client;
    reader.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let closed = loop {
        match reader.read(&mut buf) {
            Ok(0) => break Instant::now(),
            Ok(_) => std::thread::sleep(Duration::from_millis(10)),
            Err(err) if err.kind() == ErrorKind::ConnectionReset => break Instant::now(),
            Err(err) => panic!("{layout}: connection not closed by the server: {err}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{layout}: a client moving 6 MB/s was not held to a 100 MB/s minimum"
        );
    };
    let held = closed - started;
    assert!(
        held >= Duration::from_secs(2),
        "{layout}: closed after {held:?}"
    );
    sender.join().unwrap();
    assert!(server.stop().success(), "{layout}");
}

per_layout!(
    a_client_that_never_reads_its_echo_is_closed_and_counted_as_idle,
    at_once
);
fn a_client_that_never_reads_its_echo_is_closed_and_counted_as_idle(layout: &str) {
    let mut server = TestServer::start_with_admin(&[
        "--layout",
        layout,
        "--idle-timeout",
        "1s",
        "--min-rate",
        "0",
    ]);
    let mut client = server.connect_with_buffers(16 * 1024);
    // Far more than the socket buffers hold: the server's write
    // of the echo waits on a peer that never reads.
    let chunk = [0x17u8; 64 * 1024];
    let sent_until = Instant::now() + PATIENCE;
    while client.write_all(&chunk).is_ok() && Instant::now() < sent_until {}
    scrape_until(
        server.admin_addr(),
        &[
            (
                "tandem_connections_closed_total{reason=\"idle_timeout\"}",
                1.0,
            ),
            ("tandem_connections_closed_total{reason=\"error\"}", 0.0),
        ],
    );
    assert!(server.stop().success(), "{layout}");
}
