//! Case 9, per-client fairness: `--max-connections-per-ip N` caps how many
//! connections one client address holds at once. Beyond it, connections
//! are closed as soon as they are accepted, without an echo, and counted
//! in `tandem_connections_rejected_total`; once one of the client's
//! connections closes, it may open another.
//!
//! Every client here is 127.0.0.1, so these tests show the cap and its
//! release; that other clients are unaffected, and how IPv6 /64s and
//! IPv4-mapped addresses are counted, is in the unit tests of
//! `crates/tandem/src/server/per_ip.rs`.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;

use crate::common::admin::scrape_until;
use crate::common::{PATIENCE, TestServer, per_layout, round_trip};

/// True if the server closed `stream` without echoing anything.
fn refused_without_echo(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    // The write may land before the close, or fail after it.
    let _ = stream.write_all(b"anyone there?");
    let mut buf = [0; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Err(err) if err.kind() == ErrorKind::ConnectionReset => true,
        Ok(n) => panic!("echoed {n} bytes to a client over its limit"),
        Err(err) => panic!("neither closed nor echoed: {err}"),
    }
}

per_layout!(a_client_over_its_cap_is_closed_at_once_and_counted_in_every_layout);
fn a_client_over_its_cap_is_closed_at_once_and_counted_in_every_layout(layout: &str) {
    let mut server =
        TestServer::start_with_admin(&["--layout", layout, "--max-connections-per-ip", "3"]);
    let mut held: Vec<TcpStream> = (0..3).map(|_| server.connect()).collect();
    for client in &mut held {
        assert_eq!(round_trip(client, b"mine"), b"mine", "{layout}");
    }

    for _ in 0..2 {
        let mut extra = server.connect();
        assert!(refused_without_echo(&mut extra), "{layout}");
    }
    scrape_until(
        server.admin_addr(),
        &[
            ("tandem_connections_accepted_total", 5.0),
            ("tandem_connections_rejected_total", 2.0),
            ("tandem_connections_active", 3.0),
        ],
    );

    // The three admitted connections were not disturbed.
    for client in &mut held {
        assert_eq!(round_trip(client, b"still"), b"still", "{layout}");
    }

    // One leaves: its place is the client's again.
    drop(held.pop());
    scrape_until(server.admin_addr(), &[("tandem_connections_active", 2.0)]);
    let mut again = server.connect();
    assert_eq!(round_trip(&mut again, b"back"), b"back", "{layout}");

    drop(held);
    drop(again);
    assert!(server.stop().success(), "{layout}");
}

#[test]
fn without_the_option_one_client_may_hold_many_connections() {
    let mut server = TestServer::start_with_admin(&[]);
    let mut clients: Vec<TcpStream> = (0..50).map(|_| server.connect()).collect();
    for client in &mut clients {
        assert_eq!(round_trip(client, b"ok"), b"ok");
    }
    scrape_until(
        server.admin_addr(),
        &[("tandem_connections_rejected_total", 0.0)],
    );
    drop(clients);
    assert!(server.stop().success());
}
