//! Case 4, resets: 1000 clients that close with SO_LINGER 0, so that the
//! kernel sends a reset instead of a FIN, at every point of an echo: before
//! the server has read anything, with an echo on its way back, and with the
//! server stuck writing an echo the client will never read. What is
//! promised, in every layout:
//!
//! - nothing panics, and the process keeps serving: a new client is echoed
//!   afterwards, and SIGTERM ends the server with status 0;
//! - every connection is accounted for: the active-connection count returns
//!   to 0, every accepted connection is counted closed exactly once, and a
//!   reset is counted as a reset, never as an error or a clean close.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::admin::{Exposition, POLL_INTERVAL, scrape};
use crate::common::{PATIENCE, TestServer, per_layout, random_bytes, round_trip};

/// Clients that reset.
const CLIENTS: usize = 1000;
/// Clients open at once: each wave is driven to mid-echo, then reset
/// together.
const WAVE: usize = 100;
/// What a client that keeps the server writing sends at a time.
const CHUNK: usize = 64 * 1024;
/// More than the socket buffers between a client and the server can hold
/// (Linux grows a send buffer up to 4 MiB by default): a server still
/// reading after this much from a client that reads nothing is not pushing
/// back.
const FLOOD_LIMIT: usize = 256 * 1024 * 1024;

/// The series of `tandem_connections_closed_total` for `reason`.
fn closed(reason: &str) -> String {
    format!("tandem_connections_closed_total{{reason=\"{reason}\"}}")
}

/// Connections closed, whatever the reason.
fn closed_total(exposition: &Exposition) -> f64 {
    exposition
        .samples
        .iter()
        .filter(|(series, _)| series.starts_with("tandem_connections_closed_total{"))
        .map(|(_, value)| value)
        .sum()
}

/// How far into its echo client `index` gets before it resets.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// Connects and resets at once, sending nothing: the reset may reach
    /// the server before it accepts, or while the connection is queued.
    Connected,
    /// Sends 1 KiB and resets once the first byte is back: the rest of the
    /// echo is on its way.
    EchoUnderway,
    /// Sends until TCP pushes back, reads one byte, and resets while the
    /// server is blocked writing an echo the client does not read.
    ServerWriting,
    /// Completes one echo, sends another 4 KiB and resets at once, while
    /// the server reads or writes it.
    SecondMessage,
}

impl Stage {
    fn of(index: usize) -> Stage {
        [
            Stage::Connected,
            Stage::EchoUnderway,
            Stage::ServerWriting,
            Stage::SecondMessage,
        ][index % 4]
    }
}

/// Opens a client and takes it to `stage`; the caller resets it. `chunk`
/// is what a [`Stage::ServerWriting`] client sends at a time.
fn drive(server: &TestServer, stage: Stage, chunk: &[u8]) -> TcpStream {
    let mut client = server.connect();
    let mut first = [0u8; 1];
    match stage {
        Stage::Connected => {}
        Stage::EchoUnderway => {
            client.write_all(&random_bytes(1024)).unwrap();
            client.read_exact(&mut first).unwrap();
        }
        Stage::ServerWriting => {
            // The echo loop reads only once the last write is done, so once
            // the server has filled this client's receive buffer and its own
            // send buffer, it stops reading and TCP pushes back on the
            // client. Non-blocking, so that the client stops there.
            client.set_nonblocking(true).unwrap();
            let mut sent = 0;
            loop {
                match client.write(chunk) {
                    Ok(n) => sent += n,
                    Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                    Err(err) => panic!("write: {err}"),
                }
                assert!(
                    sent < FLOOD_LIMIT,
                    "the server read {sent} bytes from a client that reads nothing"
                );
            }
            client.set_nonblocking(false).unwrap();
            client.read_exact(&mut first).unwrap();
        }
        Stage::SecondMessage => {
            let message = random_bytes(64);
            assert!(round_trip(&mut client, &message) == message);
            client.write_all(&random_bytes(4096)).unwrap();
        }
    }
    client
}

/// Closes `client` with SO_LINGER 0: the kernel sends a reset and drops
/// whatever is unsent or unread.
fn reset(client: TcpStream) {
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
}

per_layout!(a_thousand_clients_resetting_mid_echo_are_all_counted_closed_and_nothing_panics);
fn a_thousand_clients_resetting_mid_echo_are_all_counted_closed_and_nothing_panics(layout: &str) {
    let mut server = TestServer::start_with_admin(&["--layout", layout]);
    let admin = server.admin_addr();

    // Made once: random bytes are slow to make in a debug build.
    let chunk = random_bytes(CHUNK);
    for wave in 0..CLIENTS / WAVE {
        let clients: Vec<_> = (wave * WAVE..(wave + 1) * WAVE)
            .map(|index| drive(&server, Stage::of(index), &chunk))
            .collect();
        clients.into_iter().for_each(reset);
    }

    // The server learns of each reset on its own schedule: wait until
    // it has let go of every connection and counted each one closed.
    let deadline = Instant::now() + PATIENCE;
    let exposition = loop {
        let exposition = scrape(admin);
        let accepted = exposition.get("tandem_connections_accepted_total");
        if exposition.get("tandem_connections_active") == Some(0.0)
            && accepted == Some(CLIENTS as f64)
            && closed_total(&exposition) == CLIENTS as f64
        {
            break exposition;
        }
        assert!(
            Instant::now() < deadline,
            "{layout}: connections not all accounted for; the last scrape was:\n{}",
            exposition.text
        );
        std::thread::sleep(POLL_INTERVAL);
    };
    // Reset clients are resets: not I/O errors, not clean closes.
    for (reason, expected) in [
        ("reset", CLIENTS),
        ("eof", 0),
        ("error", 0),
        ("idle_timeout", 0),
        ("shutdown", 0),
    ] {
        assert_eq!(
            exposition.get(&closed(reason)),
            Some(expected as f64),
            "{layout}: closed{{reason={reason:?}}}; the scrape was:\n{}",
            exposition.text
        );
    }
    assert_eq!(
        exposition.get("tandem_connections_rejected_total"),
        Some(0.0),
        "{layout}"
    );

    // Still serving, and still able to stop cleanly.
    let mut client = server.connect();
    let payload = random_bytes(64 * 1024);
    assert!(
        round_trip(&mut client, &payload) == payload,
        "{layout}: a new client's echo differs after the resets"
    );
    drop(client);
    assert!(server.stop().success(), "{layout}: {}", server.stderr());
    let log = server.stderr();
    assert!(!log.contains("panicked"), "{layout}: a panic:\n{log}");
}
