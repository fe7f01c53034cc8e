//! `tandem bench` against servers whose behaviour is known: a correct echo,
//! one that corrupts bytes, one that answers after a fixed delay, and one
//! that stalls for a second. The generator must say which is which. And
//! with `--server-metrics`, what a real server's admin endpoint says about
//! the run.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::tls::Identity;
use common::{LAYOUTS, Proc, TestServer, per_layout};
use serde_json::Value;

/// A blocking echo server on its own threads, one per connection, with
/// `respond` deciding what to send back for each chunk read. Lives as long
/// as the test process.
fn fake_server(respond: impl Fn(&mut Vec<u8>) + Send + Sync + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let respond = Arc::new(respond);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let respond = respond.clone();
            std::thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                let mut chunk = vec![0u8; 64 * 1024];
                loop {
                    let n = match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let mut reply = chunk[..n].to_vec();
                    respond(&mut reply);
                    if stream.write_all(&reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Runs `tandem bench --json` with `args` and returns its exit success and
/// its report.
fn bench(target: SocketAddr, args: &[&str]) -> (bool, Value) {
    common::bench_json(target, args)
}

/// Runs every mode (closed loop with a pipeline, open loop, churn) with
/// `common` against `target`; each must pass, echo something, and say it
/// went over `transport`.
fn every_mode_passes(target: SocketAddr, common: &[&str], transport: &str) {
    for mode in [
        &["--pipeline", "8"][..],
        &["--rate", "2000"],
        &["--churn", "--connections", "4"],
    ] {
        let (ok, report) = bench(target, &[common, mode].concat());
        assert!(ok, "{mode:?}: {report}");
        assert_eq!(report["transport"], transport, "{report}");
        assert!(
            report["messages"].as_u64().unwrap() > 0,
            "{mode:?}: {report}"
        );
    }
}

fn latency(report: &Value, key: &str) -> u64 {
    report["latency_us"][key].as_u64().unwrap()
}

#[test]
fn a_correct_echo_gives_a_clean_report_with_the_stable_keys() {
    let mut server = TestServer::start(&[]);
    let (ok, report) = bench(server.addr, &["--duration", "1s", "--warmup", "200ms"]);
    assert!(ok, "{report}");
    assert_eq!(report["errors"], 0);
    assert!(report["messages"].as_u64().unwrap() > 100, "{report}");
    for key in [
        "messages",
        "errors",
        "duration_secs",
        "msgs_per_sec",
        "bytes_per_sec",
    ] {
        assert!(report[key].is_number(), "{key} missing: {report}");
    }
    for key in ["p50", "p90", "p99", "p999", "max"] {
        assert!(
            report["latency_us"][key].is_u64(),
            "latency_us.{key} missing"
        );
    }
    assert!(server.stop().success());
}

#[test]
fn every_mode_verifies_against_a_real_server_including_appended_newlines() {
    let mut server = TestServer::start(&["--append-newline"]);
    let short = [
        "--duration",
        "500ms",
        "--warmup",
        "100ms",
        "--expect-newline",
    ];
    every_mode_passes(server.addr, &short, "tcp");
    assert!(server.stop().success());
}

#[test]
fn corrupted_bytes_are_errors_and_a_non_zero_exit() {
    let server = fake_server(|reply| {
        let last = reply.len() - 1;
        reply[last] ^= 0x20;
    });
    let (ok, report) = bench(server, &["--duration", "500ms", "--warmup", "0s"]);
    assert!(!ok);
    assert!(report["errors"].as_u64().unwrap() > 0, "{report}");
    assert!(
        report["first_error"].as_str().unwrap().contains("differs"),
        "{report}"
    );
}

#[test]
fn a_missing_newline_is_an_error_when_one_is_expected() {
    let server = fake_server(|_| {});
    let (ok, _) = bench(
        server,
        &[
            "--duration",
            "300ms",
            "--warmup",
            "0s",
            "--message-size",
            "5",
        ],
    );
    assert!(ok, "a plain echo passes without --expect-newline");
    let server = fake_server(|reply| reply.push(b'x'));
    let (ok, report) = bench(
        server,
        &["--duration", "300ms", "--warmup", "0s", "--expect-newline"],
    );
    assert!(!ok && report["errors"].as_u64().unwrap() > 0, "{report}");
}

#[test]
fn expect_newline_against_a_server_that_appends_none_is_an_error() {
    // A real plain echo: every byte right, but no newline after a message.
    let mut server = TestServer::start(&[]);
    for mode in [&[][..], &["--churn", "--connections", "4"]] {
        let args = [
            &["--duration", "300ms", "--warmup", "0s", "--expect-newline"][..],
            mode,
        ]
        .concat();
        let (ok, report) = bench(server.addr, &args);
        assert!(!ok, "{mode:?}: {report}");
        assert!(report["errors"].as_u64().unwrap() > 0, "{mode:?}: {report}");
        assert!(
            report["first_error"]
                .as_str()
                .is_some_and(|error| error.contains("--append-newline")),
            "{mode:?}: {report}"
        );
    }
    assert!(server.stop().success());
}

#[test]
fn a_fixed_reply_delay_is_the_median_latency() {
    let delay = Duration::from_millis(100);
    let server = fake_server(move |_| std::thread::sleep(delay));
    let (ok, report) = bench(
        server,
        &[
            "--connections",
            "4",
            "--duration",
            "2s",
            "--warmup",
            "200ms",
        ],
    );
    assert!(ok, "{report}");
    let p50 = latency(&report, "p50") as f64;
    let expected = delay.as_micros() as f64;
    // Every reply is held at least the delay: the median cannot be less,
    // but for the histogram's 3 significant digits. A loaded machine only
    // adds to it; to reach twice the delay it would have to hold up the
    // median message by a whole 100 ms, while a clock read at the wrong
    // place (before the queue, or twice per message) misses by that much.
    assert!(
        p50 >= 0.999 * expected && p50 < 2.0 * expected,
        "p50 {p50} µs, expected at least {expected} µs and less than twice that"
    );
}

/// A server that echoes at once, except that every reply due during one
/// second, starting `after` its first connection, waits until that second
/// is over.
fn stalling_server(after: Duration) -> SocketAddr {
    let stall: Arc<std::sync::OnceLock<(Instant, Instant)>> = Arc::default();
    fake_server(move |_| {
        let (from, until) = *stall.get_or_init(|| {
            let from = Instant::now() + after;
            (from, from + Duration::from_secs(1))
        });
        let now = Instant::now();
        if now >= from && now < until {
            std::thread::sleep(until - now);
        }
    })
}

#[test]
fn a_one_second_stall_shows_in_the_open_loop_tail_and_hides_in_the_closed_loop() {
    let window = [
        "--connections",
        "10",
        "--duration",
        "3s",
        "--warmup",
        "300ms",
    ];

    let (ok, open) = bench(
        stalling_server(Duration::from_millis(1300)),
        &[&window[..], &["--rate", "1000"]].concat(),
    );
    assert!(ok, "{open}");
    // A third of the window's messages were due during the stall.
    assert!(latency(&open, "p90") >= 500_000, "open loop: {open}");

    let (ok, closed) = bench(stalling_server(Duration::from_millis(1300)), &window);
    assert!(ok, "{closed}");
    // Each connection had one message waiting through the stall...
    assert!(latency(&closed, "max") >= 900_000, "closed loop: {closed}");
    // ...among the rest, answered at once: the same percentile that shows
    // the stall in the open loop does not show it here. It would take over
    // a tenth of the window's messages held half a second, where the stall
    // holds 10; even a slow machine echoes more than 100 in 2 s.
    assert!(latency(&closed, "p90") < 500_000, "closed loop: {closed}");
}

#[test]
fn invalid_options_exit_2_naming_the_option() {
    let cases: [(&str, &[&str]); 10] = [
        ("--connections", &["--connections", "0"]),
        ("--message-size", &["--message-size", "0"]),
        ("--rate", &["--rate=-5"]),
        ("--rate", &["--rate=1e-300"]),
        ("--duration", &["--duration", "0s"]),
        ("--duration", &["--duration", "400000000000y"]),
        ("--message-size", &["--churn", "--message-size", "1048576"]),
        ("--server-metrics", &["--server-metrics", "ftp://x"]),
        ("--server-metrics", &["--server-metrics", "nonsense"]),
        ("--server-metrics", &["--server-metrics", "http://"]),
    ];
    for (option, args) in cases {
        let mut all = vec!["bench", "--target", "127.0.0.1:9"];
        all.extend_from_slice(args);
        let out = Proc::run(&all, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(option), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{args:?}: {}", out.stderr);
    }
}

#[test]
fn an_unreachable_target_is_a_run_time_failure_naming_it() {
    // Bind then drop: a port with nothing listening.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = Proc::run(
        &["bench", "--target", &addr.to_string(), "--duration", "1s"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains(&format!("cannot connect to {addr}")),
        "{}",
        out.stderr
    );
    let _ = TcpStream::connect(addr).unwrap_err();
}

#[test]
fn simulated_work_on_the_server_shows_as_latency() {
    let mut server = TestServer::start(&["--simulate-work", "20ms"]);
    let (ok, report) = bench(
        server.addr,
        &[
            "--connections",
            "1",
            "--duration",
            "1s",
            "--warmup",
            "100ms",
        ],
    );
    assert!(ok, "{report}");
    let p50 = latency(&report, "p50");
    // At least the work; a loaded machine may stretch it, never shorten
    // it. The upper bound only catches the work done many times over: five
    // times the work is beyond what scheduling adds to a median echo.
    assert!(
        (20_000..100_000).contains(&p50),
        "p50 {p50} µs with 20 ms of work per echo"
    );
    assert!(server.stop().success());
}

/// A server that accepts and reads, and never answers.
fn silent_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut sink = [0u8; 4096];
                while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

#[test]
fn a_server_that_never_answers_ends_every_mode_with_errors_not_a_hang() {
    let server = silent_server();
    let window = [
        "--duration",
        "300ms",
        "--warmup",
        "0s",
        "--connections",
        "2",
    ];
    for mode in [&[][..], &["--rate", "100"], &["--churn"]] {
        let (ok, report) = bench(server, &[&window[..], mode].concat());
        assert!(!ok, "{mode:?}: {report}");
        assert!(report["errors"].as_u64().unwrap() > 0, "{mode:?}: {report}");
    }
}

/// Connections of each `--server-metrics` run.
const SCRAPED_CONNECTIONS: u64 = 4;

/// One `tandem bench --server-metrics` run against a real server in each
/// layout (two workers, so the shards are known), made once and read by
/// the tests below: `(layout, report)`.
fn scraped_runs() -> &'static [(&'static str, Value)] {
    static RUNS: OnceLock<Vec<(&'static str, Value)>> = OnceLock::new();
    RUNS.get_or_init(|| {
        LAYOUTS
            .iter()
            .map(|&layout| {
                let mut server =
                    TestServer::start_with_admin(&["--layout", layout, "--workers", "2"]);
                let url = server.metrics_url();
                let connections = SCRAPED_CONNECTIONS.to_string();
                let (ok, report) = bench(
                    server.addr,
                    &[
                        "--connections",
                        &connections,
                        "--duration",
                        "1s",
                        "--warmup",
                        "300ms",
                        "--server-metrics",
                        &url,
                    ],
                );
                assert!(ok, "{layout}: {report}");
                assert!(report["server"].is_object(), "{layout}: {report}");
                assert!(server.stop().success());
                (layout, report)
            })
            .collect()
    })
}

#[test]
fn the_server_counts_every_connection_of_the_run_accepted_then_closed_by_eof() {
    // The run's connection figures count from before the first connect,
    // so the closed loop's connections, opened before the warm-up, are in.
    for (layout, report) in scraped_runs() {
        let run = &report["server"]["run"];
        assert_eq!(
            run["connections_accepted"], SCRAPED_CONNECTIONS,
            "{layout}: {run}"
        );
        assert_eq!(run["handoffs"], SCRAPED_CONNECTIONS, "{layout}: {run}");
        let closed = run["connections_closed"].as_object().unwrap();
        for (reason, count) in closed {
            let expected = if reason == "eof" {
                SCRAPED_CONNECTIONS
            } else {
                0
            };
            assert_eq!(count, expected, "{layout}: closed by {reason}: {run}");
        }
        assert_eq!(run["connections_rejected"], 0, "{layout}: {run}");
        assert_eq!(run["accept_errors"], 0, "{layout}: {run}");
        assert!(run["handoff_wait_us"]["p99"].is_number(), "{layout}: {run}");
    }
}

#[test]
fn the_server_receives_and_echoes_at_least_every_byte_the_client_counts_in_the_window() {
    // The window stays shut until its first scrape is answered, however
    // late, and its last scrape comes after every close, so every message
    // the client counts is in the server's bytes; so may be the last of the
    // warm-up's.
    for (layout, report) in scraped_runs() {
        let counted =
            report["messages"].as_u64().unwrap() * report["message_size"].as_u64().unwrap();
        assert!(counted > 0, "{layout}: {report}");
        let window = &report["server"]["window"];
        for key in ["bytes_received", "bytes_sent"] {
            let server = window[key].as_u64().unwrap();
            assert!(
                server >= counted,
                "{layout}: {key} {server} < {counted} counted by the client"
            );
        }
    }
}

#[test]
fn the_server_reports_a_busy_ratio_between_0_and_1_for_each_runtime_of_its_layout() {
    for (layout, report) in scraped_runs() {
        let busy = report["server"]["window"]["busy_ratio"]
            .as_object()
            .unwrap();
        let mut runtimes: Vec<&str> = busy.keys().map(String::as_str).collect();
        runtimes.sort_unstable();
        let expected: &[&str] = match *layout {
            "split" => &["acceptor", "admin", "worker"],
            "sharded" => &["acceptor", "admin", "shard-0", "shard-1"],
            _ => &["admin", "worker"],
        };
        assert_eq!(runtimes, expected, "{layout}");
        for (runtime, ratio) in busy {
            let ratio = ratio.as_f64().unwrap();
            assert!(
                (0.0..=1.0).contains(&ratio),
                "{layout}: {runtime} busy {ratio}"
            );
        }
    }
}

#[test]
fn an_unreachable_metrics_url_is_a_run_time_failure_naming_it() {
    let mut server = TestServer::start(&[]);
    // Bind then drop: a port with nothing listening.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{closed}/metrics");
    let target = server.addr.to_string();
    let out = Proc::run(
        &[
            "bench",
            "--target",
            &target,
            "--duration",
            "1s",
            "--server-metrics",
            &url,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("cannot scrape {url}")),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert!(server.stop().success());
}

// ---------------------------------------------------------------------------
// --tls
// ---------------------------------------------------------------------------

/// A TLS server in `layout` with the test identity.
fn tls_server(identity: &Identity, layout: &str) -> TestServer {
    let mut args = identity.args();
    args.extend_from_slice(&["--layout", layout]);
    TestServer::start(&args)
}

per_layout!(every_mode_runs_over_tls_against_every_layout);
fn every_mode_runs_over_tls_against_every_layout(layout: &str) {
    let identity = Identity::new();
    let ca = identity.cert.to_str().unwrap();
    // Messages larger than a TLS record.
    let tls = [
        "--tls",
        "--tls-ca",
        ca,
        "--duration",
        "500ms",
        "--warmup",
        "100ms",
        "--message-size",
        "20000",
    ];
    let mut server = tls_server(&identity, layout);
    every_mode_passes(server.addr, &tls, "tls");
    assert!(server.stop().success());
}

#[test]
fn a_certificate_the_generator_does_not_trust_fails_the_run_unless_told_to_accept_any() {
    let identity = Identity::new();
    let stranger = Identity::new();
    let mut server = tls_server(&identity, "split");
    let short = [
        "--tls",
        "--duration",
        "300ms",
        "--warmup",
        "0s",
        "--connections",
        "2",
    ];
    let target = server.addr.to_string();
    let run = |extra: &[&str]| {
        let command = [&["bench", "--target", &target][..], &short, extra].concat();
        Proc::run(&command, &[])
    };
    let out = run(&["--tls-ca", stranger.cert.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("certificate"), "{}", out.stderr);

    let (ok, report) = bench(server.addr, &[&short[..], &["--tls-insecure"]].concat());
    assert!(ok, "{report}");
    // The name checked is the one asked for: the certificate names
    // localhost, not example.com.
    let ca = identity.cert.to_str().unwrap();
    let out = run(&["--tls-ca", ca, "--tls-server-name", "example.com"]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(server.stop().success());
}

#[test]
fn tls_against_a_plain_server_fails_and_tls_options_need_tls() {
    let mut server = TestServer::start(&[]);
    let target = server.addr.to_string();
    let out = Proc::run(
        &[
            "bench",
            "--target",
            &target,
            "--tls",
            "--tls-insecure",
            "--duration",
            "300ms",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    // The echo server sends the ClientHello back: said in plain words.
    assert!(
        out.stderr.contains("it does not seem to speak TLS"),
        "{}",
        out.stderr
    );
    for option in [
        &["--tls-insecure"][..],
        &["--tls-server-name", "localhost"],
        &["--tls-resume"],
    ] {
        let out = Proc::run(&[&["bench", "--target", &target][..], option].concat(), &[]);
        assert_eq!(out.status.code(), Some(2), "{option:?}: {}", out.stderr);
        assert!(out.stderr.contains("needs --tls"), "{}", out.stderr);
    }
    assert!(server.stop().success());
}

#[test]
fn tls_handshakes_are_full_unless_the_generator_may_resume() {
    let identity = Identity::new();
    let mut server = tls_server(&identity, "split");
    let ca = identity.cert.to_str().unwrap();
    let churn = [
        "--tls",
        "--tls-ca",
        ca,
        "--churn",
        "--connections",
        "2",
        "--duration",
        "500ms",
        "--warmup",
        "100ms",
    ];
    let handshakes = |report: &Value, kind: &str| report["tls_handshakes"][kind].as_u64().unwrap();

    let (ok, report) = bench(server.addr, &churn);
    assert!(ok, "{report}");
    // Each churner's second connection is the first that could resume: at
    // least two each in 600 ms, where a handshake takes milliseconds, and
    // none resumed.
    assert!(handshakes(&report, "full") >= 4, "{report}");
    assert_eq!(handshakes(&report, "resumed"), 0, "{report}");

    // With a session cache, every connection after each churner's first
    // may resume the session the server offered.
    let (ok, report) = bench(server.addr, &[&churn[..], &["--tls-resume"]].concat());
    assert!(ok, "{report}");
    assert!(
        handshakes(&report, "resumed") > handshakes(&report, "full"),
        "{report}"
    );

    // The closed loop: one full handshake per connection, before the window.
    let (ok, report) = bench(
        server.addr,
        &[
            "--tls",
            "--tls-ca",
            ca,
            "--connections",
            "3",
            "--duration",
            "300ms",
        ],
    );
    assert!(ok, "{report}");
    assert_eq!(handshakes(&report, "full"), 3, "{report}");
    assert!(server.stop().success());
}

#[test]
fn every_bench_flag_reads_a_variable_named_after_it() {
    let command = tandem_cli::config::bench_command();
    let mut flags = 0;
    for arg in command.get_arguments() {
        let Some(flag) = arg.get_long() else {
            continue;
        };
        let want = format!("TANDEM_BENCH_{}", flag.replace('-', "_").to_uppercase());
        assert_eq!(
            arg.get_env().and_then(|env| env.to_str()),
            Some(want.as_str()),
            "--{flag}"
        );
        flags += 1;
    }
    assert!(flags >= 19, "only {flags} flags");

    // And the variables are read.
    let server = TestServer::start(&[]);
    let target = server.addr.to_string();
    let out = Proc::run(
        &["bench"],
        &[
            ("TANDEM_BENCH_TARGET", target.as_str()),
            ("TANDEM_BENCH_CONNECTIONS", "3"),
            ("TANDEM_BENCH_MESSAGE_SIZE", "100"),
            ("TANDEM_BENCH_DURATION", "200ms"),
            ("TANDEM_BENCH_WARMUP", "0s"),
            ("TANDEM_BENCH_JSON", "true"),
        ],
    );
    assert!(out.status.success(), "{}", out.stderr);
    let report: Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|err| panic!("no JSON report ({err}): {}", out.stdout));
    assert_eq!(report["connections"], 3, "{report}");
    assert_eq!(report["message_size"], 100, "{report}");
}

// ---------------------------------------------------------------------------
// What a new user meets
// ---------------------------------------------------------------------------

/// `tandem bench --target <target>` for a short run, plus `args`.
fn short_run(target: &str, args: &[&str]) -> common::Finished {
    let short = [
        "bench",
        "--target",
        target,
        "--duration",
        "300ms",
        "--warmup",
        "0s",
        "--connections",
        "2",
    ];
    Proc::run(&[&short[..], args].concat(), &[])
}

#[test]
fn a_plain_run_against_a_tls_server_says_to_try_tls() {
    let identity = Identity::new();
    let mut server = tls_server(&identity, "split");
    let target = server.addr.to_string();
    for mode in [&[][..], &["--churn"]] {
        let out = short_run(&target, mode);
        assert_eq!(out.status.code(), Some(1), "{mode:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("echo differs from what was sent")
                && out.stderr.contains("is it serving TLS? try --tls"),
            "{mode:?}: {}",
            out.stderr
        );
    }
    assert!(server.stop().success());
}

#[test]
fn a_certificate_the_system_does_not_trust_is_refused_in_words() {
    let identity = Identity::new();
    let mut server = tls_server(&identity, "split");
    let out = short_run(&server.addr.to_string(), &["--tls"]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    // No system roots at all is refused before connecting, in words too.
    assert!(
        out.stderr
            .contains("the server's certificate is not trusted")
            || out.stderr.contains("no system root certificate found"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--tls-ca FILE"), "{}", out.stderr);
    // rustls's debug text of the reason (`...Context { ... }`) stays out.
    assert!(!out.stderr.contains(" { "), "{}", out.stderr);
    assert!(server.stop().success());
}

#[test]
fn a_target_may_be_a_host_name_as_serve_listen_may() {
    let mut command = common::tandem();
    command.args(["serve", "--listen", "localhost:0"]);
    let mut server = TestServer::spawn(command);
    let target = format!("localhost:{}", server.addr.port());
    let out = short_run(&target, &["--json"]);
    assert!(out.status.success(), "{}", out.stderr);
    let report: Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|err| panic!("no JSON report ({err}): {}", out.stdout));
    assert!(report["messages"].as_u64().unwrap() > 0, "{report}");

    let out = short_run("no-such-host.invalid:8000", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("--target"), "{}", out.stderr);
    assert!(server.stop().success());
}

#[test]
fn server_metrics_without_a_path_scrape_metrics_and_a_wrong_path_says_where_they_are() {
    let mut server = TestServer::start_with_admin(&[]);
    let target = server.addr.to_string();
    let admin = server.admin_addr();
    for url in [format!("http://{admin}"), format!("http://{admin}/")] {
        let out = short_run(&target, &["--json", "--server-metrics", &url]);
        assert!(out.status.success(), "{url}: {}", out.stderr);
        let report: Value = serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|err| panic!("no JSON report ({err}): {}", out.stdout));
        assert!(report["server"].is_object(), "{url}: {report}");
    }
    let url = format!("http://{admin}/stats");
    let out = short_run(&target, &["--server-metrics", &url]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("answered 404")
            && out.stderr.contains("serves its metrics at /metrics"),
        "{}",
        out.stderr
    );
    assert!(server.stop().success());
}
