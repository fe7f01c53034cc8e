//! `--udp`: datagrams echoed on the TCP listener's address and port (RFC
//! 862), in every layout, with the reflection guard (no answer to the
//! ports of reflecting services) and the per-source rate limit.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::admin::{scrape, scrape_until};
use common::{PATIENCE, TestServer, per_layout, random_bytes, round_trip};

/// A client socket on 127.0.0.1, bound to `port` (0: any), that waits half
/// a second for a reply: long enough to see one that should not come.
/// Where a reply must come, the test waits for it with `PATIENCE`.
fn client(port: u16) -> UdpSocket {
    let socket = UdpSocket::bind(("127.0.0.1", port)).unwrap_or_else(|err| {
        panic!(
            "bind 127.0.0.1:{port} for the test's client: {err}{}",
            if err.kind() == std::io::ErrorKind::PermissionDenied {
                " (a port below net.ipv4.ip_unprivileged_port_start needs root or \
                 CAP_NET_BIND_SERVICE: run the tests as root)"
            } else {
                ""
            }
        )
    });
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

per_layout!(datagrams_are_echoed_on_the_tcp_port_in_every_layout);
fn datagrams_are_echoed_on_the_tcp_port_in_every_layout(layout: &str) {
    let mut server = TestServer::start_with_admin(&["--layout", layout, "--udp"]);
    let socket = client(0);
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
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
fn datagrams_from_the_servers_own_port_are_never_answered() {
    // Another instance on another address, with the same port: one forged
    // datagram between the two must not start an echo loop.
    let mut server = TestServer::start_with_admin(&["--udp"]);
    let twin = UdpSocket::bind(("127.0.0.2", server.addr.port())).unwrap();
    twin.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert_eq!(ask(&twin, server.addr, b"echo me back"), None);
    // The same datagram from any other port is answered.
    let other = client(0);
    other.set_read_timeout(Some(PATIENCE)).unwrap();
    assert_eq!(
        ask(&other, server.addr, b"echo me back").as_deref(),
        Some(&b"echo me back"[..])
    );
    scrape_until(
        server.admin_addr(),
        &[
            ("tandem_udp_datagrams_total{outcome=\"reflection\"}", 1.0),
            ("tandem_udp_datagrams_total{outcome=\"echoed\"}", 1.0),
        ],
    );
    assert!(server.stop().success());
}

#[test]
fn each_source_is_answered_at_most_the_rate_limit_per_second() {
    const RATE: u64 = 5;
    const SENT: u64 = 40;
    let mut server = TestServer::start_with_admin(&["--udp", "--udp-rate-limit", "5"]);
    let socket = client(0);
    let started = Instant::now();
    for n in 0..SENT as u8 {
        socket.send_to(&[n], server.addr).unwrap();
    }
    // Wait until the server has judged every datagram, however long a
    // loaded machine takes, and count from its figures, not from a timeout.
    let deadline = Instant::now() + PATIENCE;
    let (echoed, limited) = loop {
        let exposition = scrape(server.admin_addr());
        let count = |outcome: &str| {
            let series = format!("tandem_udp_datagrams_total{{outcome=\"{outcome}\"}}");
            exposition.get(&series).unwrap_or(0.0) as u64
        };
        let (echoed, limited) = (count("echoed"), count("rate_limited"));
        if echoed + limited == SENT {
            break (echoed, limited);
        }
        assert!(Instant::now() < deadline, "{}", exposition.text);
        std::thread::sleep(Duration::from_millis(50));
    };
    // A second's worth at once, and then the bucket's refill over the time
    // the server took, which bounds what it can have allowed.
    let refill = (RATE as f64 * started.elapsed().as_secs_f64()).ceil() as u64;
    assert!(
        (RATE..=RATE + refill).contains(&echoed),
        "{echoed} of {SENT} echoed ({limited} rate-limited) within {:?}",
        started.elapsed()
    );
    // Every echo the server counts reaches the client.
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 16];
    for _ in 0..echoed {
        socket.recv_from(&mut buf).unwrap();
    }
    assert!(server.stop().success());
}

#[test]
fn without_udp_nothing_answers_datagrams() {
    let mut server = TestServer::start(&[]);
    assert_eq!(ask(&client(0), server.addr, b"anyone?"), None);
    assert!(server.stop().success());
}
