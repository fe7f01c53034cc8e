//! `tandem bench --udp` against UDP echoes whose behaviour is known: the
//! real one in every layout, one that corrupts a byte, one that drops every
//! other datagram, the real one held to its default rate limit, and none at
//! all. The generator must tell loss (counted, not an error) from a wrong
//! echo (an error), and must not pass a target that answers nothing.

mod common;

use std::net::{SocketAddr, UdpSocket};

use common::{Proc, TestServer, per_layout};
use serde_json::Value;

/// A UDP echo on its own thread, on 127.0.0.1: `respond` may change each
/// datagram, and says whether to answer it. Lives as long as the test
/// process.
fn fake_udp_echo(mut respond: impl FnMut(&mut Vec<u8>) -> bool + Send + 'static) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        loop {
            let Ok((len, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let mut datagram = buf[..len].to_vec();
            if respond(&mut datagram) {
                let _ = socket.send_to(&datagram, from);
            }
        }
    });
    addr
}

/// Runs `tandem bench --udp --json` with `args` and returns its exit
/// success and its report.
fn bench(target: SocketAddr, args: &[&str]) -> (bool, Value) {
    common::bench_json(target, &[&["--udp"], args].concat())
}

fn count(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing: {report}"))
}

fn loss_ratio(report: &Value) -> f64 {
    report["loss_ratio"]
        .as_f64()
        .unwrap_or_else(|| panic!("loss_ratio missing: {report}"))
}

per_layout!(the_real_udp_echo_loses_nothing_on_loopback_in_every_layout);
fn the_real_udp_echo_loses_nothing_on_loopback_in_every_layout(layout: &str) {
    let mut server =
        TestServer::start_with_admin(&["--layout", layout, "--udp", "--udp-rate-limit", "1000000"]);
    let url = server.metrics_url();
    let (ok, report) = bench(
        server.addr,
        &[
            "--connections",
            "4",
            "--pipeline",
            "2",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--server-metrics",
            &url,
        ],
    );
    assert!(ok, "{layout}: {report}");
    assert_eq!(report["transport"], "udp", "{layout}: {report}");
    assert_eq!(report["mode"], "closed", "{layout}: {report}");
    assert!(count(&report, "messages") > 0, "{layout}: {report}");
    assert_eq!(count(&report, "errors"), 0, "{layout}: {report}");
    assert_eq!(count(&report, "lost"), 0, "{layout}: {report}");
    assert_eq!(loss_ratio(&report), 0.0, "{layout}: {report}");
    // The server's own count: every datagram of the run echoed (the
    // warm-up's too, so at least the window's), none refused.
    let datagrams = &report["server"]["run"]["udp_datagrams"];
    assert!(
        datagrams["echoed"].as_u64().unwrap() >= count(&report, "messages"),
        "{layout}: {report}"
    );
    for refused in ["rate_limited", "reflection", "error"] {
        assert_eq!(datagrams[refused], 0, "{layout}: {report}");
    }
    assert!(server.stop().success(), "{layout}");
}

#[test]
fn a_corrupted_byte_is_an_error_naming_the_mismatch() {
    let server = fake_udp_echo(|datagram| {
        let last = datagram.len() - 1;
        datagram[last] ^= 0x20;
        true
    });
    let (ok, report) = bench(server, &["--duration", "500ms", "--warmup", "0s"]);
    assert!(!ok, "{report}");
    assert!(count(&report, "errors") > 0, "{report}");
    let error = report["first_error"].as_str().unwrap();
    assert!(
        error.contains("echo differs from what was sent") && error.contains("byte 63"),
        "{report}"
    );
}

#[test]
fn dropped_datagrams_are_lost_not_errors() {
    let mut seen = 0u64;
    let server = fake_udp_echo(move |_| {
        seen += 1;
        seen.is_multiple_of(2)
    });
    let (ok, report) = bench(
        server,
        &["--rate", "1000", "--duration", "1s", "--warmup", "200ms"],
    );
    assert!(ok, "{report}");
    assert_eq!(count(&report, "errors"), 0, "{report}");
    assert!(count(&report, "lost") > 0, "{report}");
    assert!(count(&report, "messages") > 0, "{report}");
    let ratio = loss_ratio(&report);
    assert!(
        (0.35..=0.65).contains(&ratio),
        "loss ratio {ratio}: {report}"
    );
}

#[test]
fn the_default_rate_limit_drops_most_of_a_thousand_datagrams_a_second() {
    // Every socket of the bench is 127.0.0.1: one bucket of 100 a second
    // for all of them. This is why the tests above raise the limit.
    let mut server = TestServer::start_with_admin(&["--udp"]);
    let url = server.metrics_url();
    let (ok, report) = bench(
        server.addr,
        &[
            "--rate",
            "1000",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--server-metrics",
            &url,
        ],
    );
    assert!(ok, "{report}");
    assert_eq!(count(&report, "errors"), 0, "{report}");
    let ratio = loss_ratio(&report);
    assert!(ratio > 0.5, "loss ratio {ratio}: {report}");
    // The server says why: its limiter dropped them.
    let dropped = report["server"]["run"]["udp_datagrams"]["rate_limited"]
        .as_u64()
        .unwrap();
    assert!(dropped >= count(&report, "lost"), "{report}");
    assert!(server.stop().success());
}

#[test]
fn a_target_that_echoes_nothing_fails_the_run() {
    // Bind then drop: a port with nothing listening.
    let addr = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (ok, report) = bench(
        addr,
        &[
            "--connections",
            "2",
            "--duration",
            "300ms",
            "--warmup",
            "0s",
        ],
    );
    assert!(!ok, "{report}");
    assert!(count(&report, "errors") > 0, "{report}");
    assert_eq!(loss_ratio(&report), 1.0, "{report}");
    assert!(
        report["first_error"]
            .as_str()
            .unwrap()
            .contains("no datagram was echoed"),
        "{report}"
    );
}

#[test]
fn options_that_do_not_fit_udp_exit_2_naming_the_rule() {
    let cases: [(&str, &[&str]); 5] = [
        (
            "must be between 8 and 65507 with --udp",
            &["--message-size", "4"],
        ),
        (
            "must be between 8 and 65507 with --udp",
            &["--message-size", "65508"],
        ),
        ("--churn", &["--churn"]),
        ("--expect-newline", &["--expect-newline"]),
        ("--connect-rate", &["--connect-rate", "10"]),
    ];
    for (needle, args) in cases {
        let mut all = vec!["bench", "--udp", "--target", "127.0.0.1:9"];
        all.extend_from_slice(args);
        let out = Proc::run(&all, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{args:?}: {}", out.stderr);
    }
}
