//! `--udp`: datagrams echoed on the TCP listener's address and port (RFC
//! 862), in every layout, with the reflection guard (no answer to the
//! ports of reflecting services) and the per-source rate limit.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::admin::scrape_until;
use common::{LAYOUTS, TestServer, random_bytes, round_trip};

/// A client socket on 127.0.0.1, bound to `port` (0: any).
fn client(port: u16) -> UdpSocket {
    let socket = UdpSocket::bind(("127.0.0.1", port))
        .unwrap_or_else(|err| panic!("bind 127.0.0.1:{port} for the test's client: {err}"));
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    socket
}

/// The reply to `datagram` sent from `socket` to `to`, if one comes within
/// the socket's read timeout.
fn ask(socket: &UdpSocket, to: SocketAddr, datagram: &[u8]) -> Option<Vec<u8>> {
    socket.send_to(datagram, to).unwrap();
    let mut buf = vec![0u8; 65_536];
    match socket.recv_from(&mut buf) {
        Ok((n, from)) => {
            assert_eq!(from, to, "a reply from elsewhere");
            Some(buf[..n].to_vec())
        }
        Err(_) => None,
    }
}

#[test]
fn datagrams_are_echoed_on_the_tcp_port_in_every_layout() {
    for layout in LAYOUTS {
        let mut server = TestServer::start_with_admin(&["--layout", layout, "--udp"]);
        let socket = client(0);
        for size in [1, 512, 9000, 65_507] {
            let datagram = random_bytes(size);
            let reply = ask(&socket, server.addr, &datagram);
            assert!(
                reply.as_deref() == Some(&datagram[..]),
                "{layout}: {size} B"
            );
        }
        // TCP is served on the same port as before.
        let mut stream = server.connect();
        assert_eq!(round_trip(&mut stream, b"tcp too"), b"tcp too");
        drop(stream);
        scrape_until(
            server.admin_addr(),
            &[("tandem_udp_datagrams_total{outcome=\"echoed\"}", 4.0)],
        );
        assert!(server.stop().success(), "{layout}");
    }
}

#[test]
fn datagrams_from_reflecting_services_ports_are_never_answered() {
    let mut server = TestServer::start_with_admin(&["--udp"]);
    // chargen (19) and echo (7): answering them could start a loop.
    for port in [19, 7] {
        let socket = client(port);
        assert_eq!(
            ask(&socket, server.addr, b"reflect me"),
            None,
            "port {port}"
        );
    }
    scrape_until(
        server.admin_addr(),
        &[
            ("tandem_udp_datagrams_total{outcome=\"reflection\"}", 2.0),
            ("tandem_udp_datagrams_total{outcome=\"echoed\"}", 0.0),
        ],
    );
    assert!(server.stop().success());
}

#[test]
fn each_source_is_answered_at_most_the_rate_limit_per_second() {
    let mut server = TestServer::start_with_admin(&["--udp", "--udp-rate-limit", "5"]);
    let socket = client(0);
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    for n in 0..40u8 {
        socket.send_to(&[n], server.addr).unwrap();
    }
    let mut answered = 0;
    let mut buf = [0u8; 16];
    while socket.recv_from(&mut buf).is_ok() {
        answered += 1;
    }
    // A second's worth at once, and at most a little refill meanwhile.
    assert!((5..=7).contains(&answered), "{answered} of 40 answered");
    let exposition = scrape_until(
        server.admin_addr(),
        &[(
            "tandem_udp_datagrams_total{outcome=\"echoed\"}",
            f64::from(answered),
        )],
    );
    let limited = exposition
        .get("tandem_udp_datagrams_total{outcome=\"rate_limited\"}")
        .unwrap();
    assert_eq!(limited, f64::from(40 - answered));
    assert!(server.stop().success());
}

#[test]
fn without_udp_nothing_answers_datagrams() {
    let mut server = TestServer::start(&[]);
    assert_eq!(ask(&client(0), server.addr, b"anyone?"), None);
    assert!(server.stop().success());
}
