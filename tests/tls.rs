//! `--tls-cert`/`--tls-key`: echo over TLS (rustls). The handshake runs
//! on the serving runtime under `--tls-handshake-timeout`; a connection
//! whose handshake fails is closed unserved and counted; a half-close is
//! answered with everything owed and then a close_notify. Checked with
//! `openssl s_client` as the real client, and with a rustls client where
//! the test must see the close_notify itself.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::admin::{scrape, scrape_until};
use common::tls::{Identity, echo, half_close, read_to_close_notify};
use common::{PATIENCE, TestServer, per_layout, random_bytes};
use nix::sys::signal::Signal;

/// Runs the shell `command` in a fresh folder, where it must write
/// `cert.pem` and `key.pem`; serves TLS with them, and returns how a short
/// `tandem bench --tls --tls-ca cert.pem` against that server went.
fn bench_with_certificate_made_by(command: &str) -> common::Finished {
    // The recipes run openssl.
    common::external::require("openssl");
    let dir = tempfile::tempdir().unwrap();
    let made = Command::new("sh")
        .args(["-c", command])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let mut server = TestServer::start(&["--tls-cert", cert, "--tls-key", key]);
    let target = server.addr.to_string();
    let out = common::Proc::run(
        &[
            "bench",
            "--target",
            &target,
            "--tls",
            "--tls-ca",
            cert,
            "--connections",
            "2",
            "--duration",
            "300ms",
        ],
        &[],
    );
    assert!(server.stop().success());
    out
}

#[test]
fn the_readmes_openssl_recipe_makes_a_certificate_the_bench_accepts() {
    // The command of the README's "Serving TLS", as written there.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let recipe = readme
        .split("```sh\n")
        .find(|block| block.starts_with("openssl req -x509"))
        .expect("the README's certificate recipe");
    let command = recipe[..recipe.find("\ntandem serve").unwrap()].replace("\\\n", " ");
    let out = bench_with_certificate_made_by(&command);
    assert!(out.status.success(), "{}", out.stderr);
}

#[test]
fn a_certificate_marked_as_a_ca_is_refused_by_the_bench_with_what_to_do() {
    // What `openssl req -x509` makes without basicConstraints CA:FALSE.
    let out = bench_with_certificate_made_by(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
         -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
         -addext basicConstraints=critical,CA:TRUE -keyout key.pem -out cert.pem",
    );
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("CaUsedAsEndEntity"), "{}", out.stderr);
    assert!(out.stderr.contains("CA:FALSE"), "{}", out.stderr);
}

/// A case of a refused start: name, arguments, environment, and what
/// stderr must say.
type Refusal<'a> = (
    &'a str,
    &'a [&'a str],
    &'a [(&'a str, &'a str)],
    &'a [&'a str],
);

/// Runs `tandem serve` with `args` and `env`; returns what is wrong with
/// the outcome if it is not an exit 2 whose stderr holds every `expect`.
fn refusal_problems(args: &[&str], env: &[(&str, &str)], expect: &[&str]) -> Option<String> {
    let mut all = vec!["serve"];
    all.extend_from_slice(args);
    let mut env = env.to_vec();
    env.push(("TANDEM_LISTEN", "127.0.0.1:0"));
    let out = common::Proc::run(&all, &env);
    let problems = out.refusal_problems(expect);
    (!problems.is_empty()).then(|| {
        format!(
            "{}\n  stderr: {}",
            problems.join("; "),
            out.stderr.trim_end()
        )
    })
}

#[test]
fn unusable_certificates_and_keys_exit_2_naming_the_file_and_the_problem() {
    let identity = Identity::new();
    let other = Identity::new();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "hello, not PEM\n").unwrap();
    let [cert, key, other_key, missing, garbage] = [
        &identity.cert,
        &identity.key,
        &other.key,
        &missing,
        &garbage,
    ]
    .map(|p| p.to_str().unwrap());
    let cases: [Refusal; 7] = [
        (
            "a certificate without its key",
            &["--tls-cert", cert],
            &[],
            &["--tls-cert", "needs --tls-key"],
        ),
        (
            "a key without its certificate, from the environment",
            &[],
            &[("TANDEM_TLS_KEY", key)],
            &["--tls-key", "needs --tls-cert"],
        ),
        (
            "a certificate file that does not exist",
            &["--tls-cert", missing, "--tls-key", key],
            &[],
            &[missing, "No such file"],
        ),
        (
            "a certificate file that is not PEM",
            &["--tls-cert", garbage, "--tls-key", key],
            &[],
            &[garbage, "no CERTIFICATE section"],
        ),
        (
            "a key file that holds a certificate",
            &["--tls-cert", cert, "--tls-key", cert],
            &[],
            &[cert, "no PEM section of the expected kind"],
        ),
        (
            "the key of another certificate",
            &["--tls-cert", cert, "--tls-key", other_key],
            &[],
            &["unusable together", other_key],
        ),
        (
            "a handshake timeout of zero",
            &[
                "--tls-cert",
                cert,
                "--tls-key",
                key,
                "--tls-handshake-timeout",
                "0s",
            ],
            &[],
            &["--tls-handshake-timeout", "must be more than 0"],
        ),
    ];
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(name, args, env, expect)| {
            refusal_problems(args, env, expect).map(|problems| format!("{name}: {problems}"))
        })
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn the_certificate_and_key_may_come_from_the_config_file() {
    let identity = Identity::new();
    let file = common::ConfigFile::new(&format!(
        "tls_cert = {:?}\ntls_key = {:?}\ntls_handshake_timeout = \"2s\"\n",
        identity.cert, identity.key
    ));
    let mut server = TestServer::start(&["--config", file.path()]);
    let mut client = identity.connect(server.addr);
    assert_eq!(echo(&mut client, b"from the file", 13), b"from the file");
    assert!(half_close(&mut client).is_ok());
    assert!(server.stop().success());
}

/// Starts a TLS server with `identity` in `layout`, with an admin
/// endpoint, plus `args`.
fn tls_server(identity: &Identity, layout: &str, args: &[&str]) -> TestServer {
    let mut all = identity.args();
    all.extend_from_slice(&["--layout", layout]);
    all.extend_from_slice(args);
    TestServer::start_with_admin(&all)
}

/// Runs `openssl s_client` against `server` with `version` (`-tls1_2`,
/// `-tls1_3`), verifying the certificate; sends `line`, returns the line
/// that came back, then closes stdin and expects a clean exit.
fn s_client_round_trip(
    identity: &Identity,
    server: &TestServer,
    version: &str,
    line: &str,
) -> String {
    let connect = server.addr.to_string();
    let mut client = common::external::command("openssl")
        .args([
            "s_client",
            "-connect",
            &connect,
            version,
            "-quiet",
            "-no_ign_eof",
        ])
        .args([
            "-verify_return_error",
            "-verify_hostname",
            "localhost",
            "-CAfile",
        ])
        .arg(&identity.cert)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run openssl s_client: {err}"));
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(line.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let mut stdout = BufReader::new(client.stdout.take().unwrap());
    let mut back = String::new();
    // A server that does not answer leaves s_client waiting: kill it after
    // the patience, which ends this read.
    let pid = client.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(PATIENCE);
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
    });
    stdout.read_line(&mut back).unwrap();
    // End of input: s_client sends its close_notify and exits.
    drop(stdin);
    let status = client.wait().unwrap();
    let mut stderr = String::new();
    client
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "s_client failed ({status}):\n{stderr}");
    assert!(
        stderr.contains("verify return:1"),
        "s_client did not verify the certificate:\n{stderr}"
    );
    drop(watchdog);
    back
}

per_layout!(openssl_s_client_gets_its_line_back_over_tls_1_2_and_1_3_in_every_layout);
fn openssl_s_client_gets_its_line_back_over_tls_1_2_and_1_3_in_every_layout(layout: &str) {
    let identity = Identity::new();
    let mut server = tls_server(&identity, layout, &[]);
    for version in ["-tls1_3", "-tls1_2"] {
        let line = format!("hello over {version} from {layout}\n");
        assert_eq!(
            s_client_round_trip(&identity, &server, version, &line),
            line,
            "{layout} {version}"
        );
    }
    scrape_until(
        server.admin_addr(),
        &[
            ("tandem_connections_accepted_total", 2.0),
            ("tandem_connections_closed_total{reason=\"eof\"}", 2.0),
        ],
    );
    assert!(server.stop().success());
}

per_layout!(a_large_stream_comes_back_exactly_and_a_half_close_is_answered_with_close_notify);
fn a_large_stream_comes_back_exactly_and_a_half_close_is_answered_with_close_notify(layout: &str) {
    let identity = Identity::new();
    let payload = random_bytes(4 * 1024 * 1024);
    let mut server = tls_server(&identity, layout, &[]);
    let mut client = identity.connect(server.addr);
    // Chunks larger than a TLS record and than the server's buffer.
    let back = echo(&mut client, &payload, 100_000);
    assert!(
        back == payload,
        "{layout}: the echo differs from what was sent"
    );
    // Ok only if the server sent its close_notify before its FIN.
    let rest = half_close(&mut client)
        .unwrap_or_else(|err| panic!("{layout}: no close_notify after the half-close: {err}"));
    assert!(rest.is_empty(), "{layout}: bytes after the echo");
    // The metrics count the plaintext, not the TLS records.
    let len = payload.len() as f64;
    scrape_until(
        server.admin_addr(),
        &[
            ("tandem_bytes_received_total", len),
            ("tandem_bytes_sent_total", len),
            ("tandem_connections_closed_total{reason=\"eof\"}", 1.0),
        ],
    );
    assert!(server.stop().success());
}

#[test]
fn the_client_may_keep_reading_after_its_close_notify() {
    // TLS 1.3 closes each direction on its own: bytes sent just before the
    // client's close_notify are still echoed after it.
    let identity = Identity::new();
    let mut server = tls_server(&identity, "split", &[]);
    let mut client = identity.connect(server.addr);
    let payload = random_bytes(256 * 1024);
    client.write_all(&payload).unwrap();
    let back = half_close(&mut client).expect("the echo, then a close_notify");
    assert!(back == payload, "the echo differs from what was sent");
    assert!(server.stop().success());
}

#[test]
fn a_client_gone_without_close_notify_is_counted_as_reset() {
    let identity = Identity::new();
    let mut server = tls_server(&identity, "split", &[]);
    let mut client = identity.connect(server.addr);
    assert_eq!(echo(&mut client, b"bye", 3), b"bye");
    // The TCP connection ends, the TLS session never does.
    client.sock.shutdown(Shutdown::Both).unwrap();
    drop(client);
    scrape_until(
        server.admin_addr(),
        &[
            ("tandem_connections_closed_total{reason=\"reset\"}", 1.0),
            ("tandem_connections_closed_total{reason=\"error\"}", 0.0),
            ("tandem_connections_active", 0.0),
        ],
    );
    assert!(server.stop().success());
}

per_layout!(failed_handshakes_are_closed_unserved_and_counted_by_kind);
fn failed_handshakes_are_closed_unserved_and_counted_by_kind(layout: &str) {
    let identity = Identity::new();
    let mut server = tls_server(&identity, layout, &["--tls-handshake-timeout", "300ms"]);
    let admin = server.admin_addr();

    // Plain text on the TLS port: no echo, the connection closed.
    let mut plain = server.connect();
    plain.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut back = Vec::new();
    let _ = plain.read_to_end(&mut back);
    assert!(
        !back.windows(3).any(|w| w == b"GET"),
        "{layout}: plain text was echoed"
    );

    // Silent past the handshake timeout: closed.
    let mut silent = server.connect();
    let started = Instant::now();
    let mut byte = [0u8; 1];
    match silent.read(&mut byte) {
        Ok(0) => {}
        Err(err) if err.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("{layout}: a silent client got {other:?}"),
    }
    assert!(started.elapsed() < PATIENCE);

    // Half a ClientHello, then gone.
    let mut quitter = server.connect();
    quitter
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    quitter.shutdown(Shutdown::Both).unwrap();
    drop(quitter);

    scrape_until(
        admin,
        &[
            ("tandem_tls_handshake_errors_total{kind=\"protocol\"}", 1.0),
            ("tandem_tls_handshake_errors_total{kind=\"timeout\"}", 1.0),
            ("tandem_tls_handshake_errors_total{kind=\"closed\"}", 1.0),
            ("tandem_connections_rejected_total", 3.0),
            ("tandem_connections_active", 0.0),
        ],
    );
    // And the server still serves.
    let mut client = identity.connect(server.addr);
    assert_eq!(echo(&mut client, b"still here", 10), b"still here");
    assert!(half_close(&mut client).is_ok());
    assert!(server.stop().success());
}

per_layout!(the_shutdown_cut_ends_a_tls_connection_with_close_notify);
fn the_shutdown_cut_ends_a_tls_connection_with_close_notify(layout: &str) {
    let identity = Identity::new();
    let mut server = tls_server(&identity, layout, &["--shutdown-timeout", "300ms"]);
    let mut client = identity.connect(server.addr);
    assert_eq!(echo(&mut client, b"before", 6), b"before");
    server.signal(Signal::SIGTERM);
    // The client keeps its side open: the cut ends it, politely.
    let rest = read_to_close_notify(&mut client)
        .unwrap_or_else(|err| panic!("{layout}: no close_notify at the cut: {err}"));
    assert!(rest.is_empty());
    // Closed at once, so that the server's linger after its FIN ends
    // now, not at its limit, however slowly a loaded machine gets there.
    drop(client);
    assert!(server.wait().success(), "{layout}: {}", server.stderr());
    let log = server.stderr();
    assert!(log.contains("live=1 drained=0 cut=1"), "{layout}: {log}");
}

#[test]
fn an_idle_tls_connection_is_closed_with_close_notify() {
    let identity = Identity::new();
    let mut server = tls_server(&identity, "split", &["--idle-timeout", "300ms"]);
    let mut client = identity.connect(server.addr);
    assert_eq!(echo(&mut client, b"then silence", 12), b"then silence");
    let rest = read_to_close_notify(&mut client).expect("a close_notify at the idle timeout");
    assert!(rest.is_empty());
    scrape_until(
        server.admin_addr(),
        &[(
            "tandem_connections_closed_total{reason=\"idle_timeout\"}",
            1.0,
        )],
    );
    assert!(server.stop().success());
}

per_layout!(a_proxy_header_comes_in_the_clear_before_the_handshake);
fn a_proxy_header_comes_in_the_clear_before_the_handshake(layout: &str) {
    let identity = Identity::new();
    let mut server = tls_server(&identity, layout, &["--proxy-protocol"]);
    let mut socket = server.connect();
    socket
        .write_all(b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 8000\r\n")
        .unwrap();
    let mut client = identity.handshake(socket);
    assert_eq!(
        echo(&mut client, b"behind a balancer", 17),
        b"behind a balancer"
    );
    assert!(half_close(&mut client).is_ok());
    let metrics = scrape(server.admin_addr());
    assert_eq!(
        metrics.get("tandem_proxy_header_errors_total{kind=\"malformed\"}"),
        Some(0.0)
    );
    assert!(server.stop().success());
}

#[test]
fn handshakes_run_on_the_serving_runtime_not_the_acceptor() {
    // Handshakes are the CPU-heavy part of a TLS connection: if the
    // acceptor ran them, its runtime would be as busy as the workers'.
    let identity = Identity::new();
    for layout in ["split", "sharded"] {
        let mut server = tls_server(&identity, layout, &["--workers", "1"]);
        let admin = server.admin_addr();
        let serving = if layout == "split" {
            "tandem-worker"
        } else {
            "tandem-shard-0"
        };
        // CPU time, not the runtimes' busy time: busy time is wall time
        // unparked, which grows for whichever thread the machine's load
        // happens to hold up; the CPU a thread used does not.
        let cpu = |thread: &str| common::process::thread_cpu_time(server.pid(), thread);
        let before = (cpu("tandem-accept"), cpu(serving));
        let handshakes = 100;
        for _ in 0..handshakes {
            let mut client = identity.connect(server.addr);
            assert_eq!(echo(&mut client, b"x", 1), b"x");
            assert!(half_close(&mut client).is_ok());
        }
        scrape_until(
            admin,
            &[(
                "tandem_connections_closed_total{reason=\"eof\"}",
                handshakes as f64,
            )],
        );
        let acceptor = cpu("tandem-accept") - before.0;
        let serving = cpu(serving) - before.1;
        // An accept and a hand-off are a few system calls; a handshake is
        // public-key cryptography: a debug build measured 7 ms against
        // 135 ms (split) and 17 ms against 166 ms (sharded) for the 100.
        // A third leaves room for the acceptor's wake-ups costing more on a
        // busy machine; an acceptor that ran the handshakes would use more
        // than the serving runtime.
        assert!(
            acceptor * 3 < serving,
            "{layout}: acceptor threads used {acceptor:?} of CPU, the serving runtime {serving:?}"
        );
        assert!(server.stop().success());
    }
}

/// Whether a TLS handshake with `server`, trusting `identity` only, works.
fn handshake_trusting(identity: &Identity, server: &TestServer) -> bool {
    let mut socket = std::net::TcpStream::connect(server.addr).unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn =
        rustls::ClientConnection::new(identity.client_config(rustls::ALL_VERSIONS), name).unwrap();
    while conn.is_handshaking() {
        if conn.complete_io(&mut socket).is_err() {
            return false;
        }
    }
    true
}

#[test]
fn sighup_serves_new_handshakes_the_new_certificate_and_live_connections_keep_theirs() {
    let old = Identity::new();
    let mut server = tls_server(&old, "split", &[]);
    let mut live = old.connect(server.addr);
    assert_eq!(echo(&mut live, b"before", 6), b"before");

    // The files are replaced in place, as certbot or a secret mount does.
    let new = Identity::new();
    std::fs::copy(&new.cert, &old.cert).unwrap();
    std::fs::copy(&new.key, &old.key).unwrap();
    server.signal(Signal::SIGHUP);
    server.wait_for_line("reloaded the TLS certificate and key");

    assert!(handshake_trusting(&new, &server), "the new certificate");
    assert!(!handshake_trusting(&old, &server), "the old one is gone");
    assert_eq!(echo(&mut live, b"after", 5), b"after");
    assert!(half_close(&mut live).is_ok());

    // Files that do not load leave the new identity in place.
    std::fs::write(&old.cert, "not a certificate").unwrap();
    server.signal(Signal::SIGHUP);
    let line = server.wait_for_line("cannot reload the TLS certificate and key");
    assert!(line.contains("keeping the current ones"), "{line}");
    assert!(
        handshake_trusting(&new, &server),
        "still the new certificate"
    );
    assert!(server.stop().success());
}
