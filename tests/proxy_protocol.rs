//! `--proxy-protocol`: behind a load balancer, every connection starts with
//! a PROXY header (v1 text or v2 binary) naming the real client. The server
//! strips it, echoes only what follows, and takes the client's address from
//! it for its logs and for `--max-connections-per-ip`. A connection whose
//! header is malformed, or that sends none within the timeout, is closed
//! without an echo and counted. With `--proxy-protocol-from`, only the
//! balancers named there may send a header; anyone else is closed before a
//! byte is read. v2 TLVs are checked as HAProxy checks them.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::admin::scrape_until;
use common::{PATIENCE, TestServer, per_layout, random_bytes};
use ppp::v2::{Builder, Command, IPv4, IPv6, Protocol, Version};

/// A v1 header naming `client` (an IPv4 `address:port`).
fn v1(client: &str) -> Vec<u8> {
    let (address, port) = client.split_once(':').unwrap();
    format!("PROXY TCP4 {address} 127.0.0.1 {port} 8000\r\n").into_bytes()
}

/// A v2 `PROXY` header naming `client`.
fn v2(client: std::net::SocketAddr) -> Vec<u8> {
    v2_builder(client).build().unwrap()
}

/// The builder of [`v2`]'s header, for TLVs to be added.
fn v2_builder(client: std::net::SocketAddr) -> Builder {
    match client {
        std::net::SocketAddr::V4(v4) => Builder::with_addresses(
            Version::Two | Command::Proxy,
            Protocol::Stream,
            IPv4::new(*v4.ip(), [127, 0, 0, 1].into(), v4.port(), 8000),
        ),
        std::net::SocketAddr::V6(v6) => Builder::with_addresses(
            Version::Two | Command::Proxy,
            Protocol::Stream,
            IPv6::new(*v6.ip(), std::net::Ipv6Addr::LOCALHOST, v6.port(), 8000),
        ),
    }
}

/// Sends `header` and `payload` in one write, half-closes, and returns
/// everything the server sent back before its FIN (or reset).
fn exchange(server: &TestServer, header: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut stream = server.connect();
    let mut first = header.to_vec();
    first.extend_from_slice(payload);
    // The write may fail if the server already refused the connection.
    let _ = stream.write_all(&first);
    let _ = stream.shutdown(Shutdown::Write);
    read_until_closed(&mut stream)
}

fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut back = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return back,
            Ok(n) => back.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == ErrorKind::ConnectionReset => return back,
            Err(err) => panic!("neither echo nor close: {err}"),
        }
    }
}

per_layout!(a_v1_header_is_stripped_and_its_client_appears_in_the_log_in_every_layout);
fn a_v1_header_is_stripped_and_its_client_appears_in_the_log_in_every_layout(layout: &str) {
    let mut server = TestServer::start_with_env(
        &[("RUST_LOG", "tandem=debug")],
        &["--layout", layout, "--proxy-protocol"],
    );
    let payload = random_bytes(100_000);
    let back = exchange(&server, &v1("192.0.2.1:5555"), &payload);
    assert!(back == payload, "{layout}: the echo is not the payload");
    server.wait_for_log("peer=192.0.2.1:5555");
    assert!(server.stop().success(), "{layout}");
}

per_layout!(a_v2_header_is_stripped_in_every_layout_for_ipv4_and_ipv6_clients);
fn a_v2_header_is_stripped_in_every_layout_for_ipv4_and_ipv6_clients(layout: &str) {
    let mut server = TestServer::start(&["--layout", layout, "--proxy-protocol"]);
    for client in ["192.0.2.7:40000", "[2001:db8::7]:40001"] {
        let payload = random_bytes(70_000);
        let back = exchange(&server, &v2(client.parse().unwrap()), &payload);
        assert!(
            back == payload,
            "{layout}, {client}: the echo is not the payload"
        );
    }
    assert!(server.stop().success(), "{layout}");
}

#[test]
fn a_v2_local_header_from_a_health_check_is_served() {
    let mut server = TestServer::start(&["--proxy-protocol"]);
    let local = Builder::with_addresses(
        Version::Two | Command::Local,
        Protocol::Stream,
        IPv4::new([127, 0, 0, 1], [127, 0, 0, 1], 1, 8000),
    )
    .build()
    .unwrap();
    assert_eq!(exchange(&server, &local, b"alive?"), b"alive?");
    assert!(server.stop().success());
}

per_layout!(a_malformed_header_closes_the_connection_unechoed_and_is_counted_in_every_layout);
fn a_malformed_header_closes_the_connection_unechoed_and_is_counted_in_every_layout(layout: &str) {
    let mut server = TestServer::start_with_admin(&["--layout", layout, "--proxy-protocol"]);
    let cases: [&[u8]; 3] = [
        b"GET / HTTP/1.1\r\nHost: tandem\r\n\r\n",
        b"PROXY TCP4 not-an-address 127.0.0.1 1 2\r\n",
        &[b'P'; 200],
    ];
    for header in cases {
        let back = exchange(&server, header, b"must not come back");
        assert!(back.is_empty(), "{layout}: echoed {back:?}");
    }
    scrape_until(
        server.admin_addr(),
        &[
            ("tandem_proxy_header_errors_total{kind=\"malformed\"}", 3.0),
            ("tandem_connections_rejected_total", 3.0),
            ("tandem_connections_active", 0.0),
        ],
    );
    assert!(server.stop().success(), "{layout}");
}

#[test]
fn a_connection_without_a_header_is_closed_after_the_timeout_and_counted() {
    let mut server =
        TestServer::start_with_admin(&["--proxy-protocol", "--proxy-protocol-timeout", "300ms"]);
    let started = Instant::now();
    // Silent, and the start of a header that never ends.
    let mut silent = server.connect();
    let mut short = server.connect();
    short.write_all(b"PROXY TC").unwrap();
    for stream in [&mut silent, &mut short] {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        assert!(read_until_closed(stream).is_empty());
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
    scrape_until(
        server.admin_addr(),
        &[("tandem_proxy_header_errors_total{kind=\"timeout\"}", 2.0)],
    );
    assert!(server.stop().success());
}

#[test]
fn bytes_that_cannot_begin_a_header_are_refused_at_once_not_at_the_timeout() {
    // A timeout far past the test's patience: only a refusal on arrival
    // closes these in time.
    let mut server =
        TestServer::start_with_admin(&["--proxy-protocol", "--proxy-protocol-timeout", "10m"]);
    for garbage in [&b"hello world"[..], b"G", b"\r\n\r\nX"] {
        let mut stream = server.connect();
        stream.write_all(garbage).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        assert!(
            read_until_closed(&mut stream).is_empty(),
            "{garbage:?} was echoed"
        );
    }
    scrape_until(
        server.admin_addr(),
        &[("tandem_proxy_header_errors_total{kind=\"malformed\"}", 3.0)],
    );
    assert!(server.stop().success());
}

per_layout!(the_per_client_limit_counts_the_client_the_header_names);
fn the_per_client_limit_counts_the_client_the_header_names(layout: &str) {
    let mut server = TestServer::start_with_admin(&[
        "--layout",
        layout,
        "--proxy-protocol",
        "--max-connections-per-ip",
        "1",
    ]);
    // Every connection comes from 127.0.0.1, the balancer; the headers
    // name two clients.
    let mut first = server.connect();
    first.write_all(&v1("192.0.2.1:1000")).unwrap();
    first.write_all(b"one").unwrap();
    let mut echoed = [0u8; 3];
    first.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"one");

    let same_client = exchange(&server, &v1("192.0.2.1:1001"), b"two");
    assert!(
        same_client.is_empty(),
        "{layout}: a second connection of 192.0.2.1 was served"
    );
    let other_client = exchange(&server, &v1("192.0.2.2:1000"), b"three");
    assert_eq!(other_client, b"three", "{layout}");
    scrape_until(
        server.admin_addr(),
        &[("tandem_connections_rejected_total", 1.0)],
    );
    drop(first);
    assert!(server.stop().success(), "{layout}");
}

// ---------------------------------------------------------------------------
// Who may send a header: --proxy-protocol-from
// ---------------------------------------------------------------------------

/// Ranges that hold no loopback address: every test client is untrusted.
const ELSEWHERE: &str = "192.0.2.0/24,2001:db8::/32";

per_layout!(
    a_peer_outside_proxy_protocol_from_cannot_name_a_client_and_is_counted_as_untrusted_in_every_layout
);
fn a_peer_outside_proxy_protocol_from_cannot_name_a_client_and_is_counted_as_untrusted_in_every_layout(
    layout: &str,
) {
    let mut server = TestServer::start_with_admin(&[
        "--layout",
        layout,
        "--proxy-protocol",
        "--proxy-protocol-from",
        ELSEWHERE,
        "--max-connections-per-ip",
        "2",
    ]);
    // The probe that got 6 of 6 served against a limit of 2: each
    // connection names another client. None is served now, whatever
    // it claims, in either header version.
    for n in 0..6u8 {
        let header = if n % 2 == 0 {
            v1(&format!("198.51.100.{n}:1000"))
        } else {
            v2(std::net::SocketAddr::from(([198, 51, 100, n], 1000)))
        };
        let back = exchange(&server, &header, b"must not come back");
        assert!(back.is_empty(), "{layout}: connection {n} echoed {back:?}");
    }
    scrape_until(
        server.admin_addr(),
        &[
            ("tandem_proxy_header_errors_total{kind=\"untrusted\"}", 6.0),
            ("tandem_connections_rejected_total", 6.0),
            ("tandem_connections_active", 0.0),
        ],
    );
    assert!(server.stop().success(), "{layout}");
}

#[test]
fn a_balancer_inside_proxy_protocol_from_is_served_over_ipv4_and_ipv6() {
    for (listen, balancer) in [("127.0.0.1:0", "127.0.0.0/8"), ("[::1]:0", "::1")] {
        let trusted = format!("{ELSEWHERE},{balancer}");
        let mut command = common::tandem();
        command.args(["serve", "--listen", listen]);
        command.args(["--proxy-protocol", "--proxy-protocol-from", &trusted]);
        let mut server = TestServer::spawn(command);
        let mut stream = server.connect();
        stream.write_all(&v1("192.0.2.1:1000")).unwrap();
        assert_eq!(
            common::round_trip(&mut stream, b"served"),
            b"served",
            "{listen}"
        );
        drop(stream);
        assert!(server.stop().success(), "{listen}");
    }
}

#[test]
fn the_start_up_log_warns_when_any_peer_may_send_a_header() {
    const WARNING: &str = "any client may set its own address";
    let mut open = TestServer::start(&["--proxy-protocol"]);
    open.wait_for_log(WARNING);
    assert!(open.stop().success());

    let mut named = TestServer::start(&["--proxy-protocol", "--proxy-protocol-from", "127.0.0.1"]);
    assert!(named.stop().success());
    let stderr = named.stderr();
    assert!(!stderr.contains(WARNING), "{stderr}");
}

#[test]
fn proxy_protocol_from_is_read_from_the_environment_and_as_a_list_in_the_config_file() {
    let file = common::ConfigFile::new(
        "proxy_protocol = true\nproxy_protocol_from = [\"192.0.2.0/24\", \"2001:db8::/32\"]\n",
    );
    let from_env = TestServer::start_with_env(
        &[
            ("TANDEM_PROXY_PROTOCOL", "true"),
            ("TANDEM_PROXY_PROTOCOL_FROM", ELSEWHERE),
        ],
        &[],
    );
    let from_file = TestServer::start(&["--config", file.path()]);
    for mut server in [from_env, from_file] {
        let back = exchange(&server, &v1("198.51.100.1:1"), b"x");
        assert!(back.is_empty(), "an untrusted peer was served");
        assert!(server.stop().success());
    }
}

// ---------------------------------------------------------------------------
// v2 TLVs
// ---------------------------------------------------------------------------

/// A v2 header naming 192.0.2.9:1234 with a CRC32C TLV, its checksum right
/// unless `corrupt`.
fn v2_with_crc32c(corrupt: bool) -> Vec<u8> {
    let mut header = v2_builder(std::net::SocketAddr::from(([192, 0, 2, 9], 1234)))
        .write_tlv(0x03u8, &[0; 4])
        .unwrap()
        .build()
        .unwrap();
    // The checksum of the whole header with its own value zeroed, as
    // HAProxy's `proxy-v2-options crc32c` writes it.
    let crc = crc32c(&header) ^ u32::from(corrupt);
    let end = header.len();
    header[end - 4..].copy_from_slice(&crc.to_be_bytes());
    header
}

/// CRC-32C (Castagnoli), bit by bit: the test's own, independent of the
/// server's.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn v2_tlvs_are_checked_a_wrong_crc32c_or_a_tlv_past_the_end_is_refused() {
    let mut server = TestServer::start_with_admin(&["--proxy-protocol"]);
    assert_eq!(
        exchange(&server, &v2_with_crc32c(false), b"intact"),
        b"intact"
    );

    let wrong_crc = v2_with_crc32c(true);
    // The ALPN TLV claims 200 bytes; 2 follow, and the header ends.
    let mut past_the_end = v2_builder(std::net::SocketAddr::from(([192, 0, 2, 9], 1234)))
        .write_tlv(0x01u8, b"h2")
        .unwrap()
        .build()
        .unwrap();
    let tlv = past_the_end.len() - 5;
    past_the_end[tlv + 1..tlv + 3].copy_from_slice(&200u16.to_be_bytes());
    for header in [wrong_crc, past_the_end] {
        let back = exchange(&server, &header, b"must not come back");
        assert!(back.is_empty(), "echoed {back:?}");
    }
    scrape_until(
        server.admin_addr(),
        &[("tandem_proxy_header_errors_total{kind=\"malformed\"}", 2.0)],
    );
    assert!(server.stop().success());
}

#[test]
fn without_the_option_a_header_is_echoed_like_any_bytes() {
    let mut server = TestServer::start(&[]);
    let header = v1("192.0.2.1:5555");
    assert_eq!(
        exchange(&server, &header, b"x"),
        [&header[..], b"x"].concat()
    );
    assert!(server.stop().success());
}
