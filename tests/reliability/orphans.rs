//! Case 14, no orphaned echo: a connection the server closes while its
//! peer is not reading what it was sent is closed with a reset, so that
//! the kernel drops the queued echo at once.
//!
//! Closed with a FIN instead, the socket outlives the connection as an
//! orphan in FIN-WAIT-1: the FIN waits behind the echo the peer never
//! reads, and the kernel keeps both, for minutes, against the host's
//! `tcp_mem` (200 such clients left 488 MiB behind). Closed by the idle
//! rule or cut at shutdown (after the cut's linger), such a connection is
//! reset; a clean close, whose peer took all its echo, stays a FIN.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use crate::common::admin::scrape_until;
use crate::common::{TestServer, per_layout, round_trip};

/// Clients that send and never read.
const CLIENTS: usize = 8;
/// What each sends: far more than its own 1 KiB receive buffer holds, and
/// less than the server's send buffer takes on loopback, so that the
/// server reads it all, and its echo waits in the server's send queue.
const SENT: usize = 1024 * 1024;
/// The unread clients' SO_RCVBUF (and SO_SNDBUF).
const CLIENT_BUFFER: usize = 1024;

/// The server's sockets on `port` in FIN-WAIT-1 with echo still queued:
/// closed, with a FIN waiting behind bytes the peer has not taken, as an
/// orphan is. (A clean close passes through FIN-WAIT-1 too, with nothing
/// queued but its FIN, until the peer's delayed acknowledgement.)
fn orphans_holding_echo(port: u16) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .map(|text| {
            text.lines()
                .skip(1)
                .filter(|line| {
                    // sl, local address, remote address, state, tx:rx queues.
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let local_port = fields
                        .get(1)
                        .and_then(|local| local.rsplit(':').next())
                        .and_then(|hex| u16::from_str_radix(hex, 16).ok());
                    let queued = fields
                        .get(4)
                        .and_then(|queues| queues.split(':').next())
                        .and_then(|hex| u32::from_str_radix(hex, 16).ok());
                    // State 04 is TCP_FIN_WAIT1; a queue of 1 is the FIN.
                    local_port == Some(port)
                        && fields.get(3) == Some(&"04")
                        && queued.is_some_and(|queued| queued > 1)
                })
                .count()
        })
        .sum()
}

/// `count` clients with 1 KiB buffers, each sending [`SENT`] bytes from a
/// thread of its own and never reading; with their senders.
fn unread_clients(
    server: &TestServer,
    count: usize,
) -> (Vec<TcpStream>, Vec<thread::JoinHandle<()>>) {
    let unread: Vec<TcpStream> = (0..count)
        .map(|_| server.connect_with_buffers(CLIENT_BUFFER))
        .collect();
    let senders = unread
        .iter()
        .map(|stream| {
            let mut writer = stream.try_clone().unwrap();
            thread::spawn(move || {
                let chunk = vec![0x5au8; 64 * 1024];
                for _ in 0..SENT / chunk.len() {
                    // Ends at the server's reset, if the server stopped
                    // reading before it had all of it.
                    if writer.write_all(&chunk).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    (unread, senders)
}

per_layout!(a_client_cut_at_shutdown_while_its_echo_waits_unread_leaves_no_orphan);
fn a_client_cut_at_shutdown_while_its_echo_waits_unread_leaves_no_orphan(layout: &str) {
    let mut server = TestServer::start(&["--layout", layout, "--shutdown-timeout", "300ms"]);
    let port = server.addr.port();
    let (unread, senders) = unread_clients(&server, CLIENTS);
    // The clients have sent what the server takes; nobody reads.
    thread::sleep(Duration::from_secs(1));
    // Drained for 300 ms, cut, and reset after the cut's 1 s linger.
    assert!(server.stop().success(), "{layout}");
    let orphans = orphans_holding_echo(port);
    assert_eq!(orphans, 0, "{layout}: {orphans} orphaned sockets");
    drop(unread);
    for sender in senders {
        sender.join().unwrap();
    }
}

per_layout!(a_client_closed_while_its_echo_waits_unread_is_reset_and_leaves_no_orphan);
fn a_client_closed_while_its_echo_waits_unread_is_reset_and_leaves_no_orphan(layout: &str) {
    let mut server = TestServer::start_with_admin(&[
        "--layout",
        layout,
        "--idle-timeout",
        "1s",
        "--min-rate",
        "0",
    ]);
    // A client that took its echo, then fell silent: a clean close.
    let mut taken = server.connect();
    assert_eq!(round_trip(&mut taken, b"hello"), b"hello");
    let (unread, senders) = unread_clients(&server, CLIENTS);
    scrape_until(
        server.admin_addr(),
        &[(
            "tandem_connections_closed_total{reason=\"idle_timeout\"}",
            (CLIENTS + 1) as f64,
        )],
    );

    // Every connection is closed and counted: none is left in the kernel
    // with its FIN behind unread echo.
    let orphans = orphans_holding_echo(server.addr.port());
    assert_eq!(orphans, 0, "{layout}: {orphans} orphaned sockets");
    scrape_until(
        server.admin_addr(),
        &[("tandem_connections_aborted_total", CLIENTS as f64)],
    );
    // The client that took its echo gets the FIN...
    let mut buf = [0u8; 16];
    assert_eq!(
        taken.read(&mut buf).unwrap(),
        0,
        "{layout}: not a clean EOF"
    );
    // ...and those that did not, a reset, after at most what their own
    // receive buffer held.
    for (i, mut client) in unread.into_iter().enumerate() {
        let mut read = 0;
        let mut buf = vec![0u8; 64 * 1024];
        let end = loop {
            match client.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => read += n,
                Err(err) => break Err(err),
            }
        };
        assert!(
            end.as_ref()
                .is_err_and(|err| err.kind() == ErrorKind::ConnectionReset),
            "{layout}: client {i} got {end:?} after {read} bytes of echo, not a reset"
        );
    }
    for sender in senders {
        sender.join().unwrap();
    }
    assert!(server.stop().success(), "{layout}");
}
