//! Running under systemd: socket activation (the listening socket passed in
//! as descriptor 3, `LISTEN_FDS`), with `systemd-socket-activate` as the
//! activator, and readiness notification (`READY=1`, `STOPPING=1` on
//! `NOTIFY_SOCKET`) as `Type=notify` expects.

mod common;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{PATIENCE, Proc, TestServer, random_bytes, round_trip};
use nix::sys::signal::Signal;

/// An address on 127.0.0.1 that was free a moment ago.
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0")
}

/// `systemd-socket-activate` listening on `addr` (`-d`: datagrams) and
/// starting `tandem serve` with `args` on the first connection.
fn activate(addr: SocketAddr, datagram: bool, args: &[&str]) -> Proc {
    let mut command = common::external::command("systemd-socket-activate");
    command
        .env_clear()
        .env("RUST_LOG", "info")
        .args(if datagram { &["-d"][..] } else { &[][..] })
        .args([
            "-l",
            &addr.to_string(),
            env!("CARGO_BIN_EXE_tandem"),
            "serve",
        ])
        .args(args);
    let proc = Proc::spawn(command);
    // The activator listens before it starts tandem.
    let deadline = Instant::now() + PATIENCE;
    while !proc.stderr().contains("Listening on") {
        assert!(
            Instant::now() < deadline,
            "systemd-socket-activate did not listen: {}",
            proc.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    proc
}

#[test]
fn socket_activation_serves_the_passed_socket_and_ignores_listen() {
    let addr = free_addr();
    // --listen names another port: the passed socket is what is served.
    let mut tandem = activate(addr, false, &["--listen", "127.0.0.1:1"]);
    let mut client = std::net::TcpStream::connect(addr).expect("connect");
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    let payload = random_bytes(64 * 1024);
    assert!(round_trip(&mut client, &payload) == payload);
    assert_eq!(tandem.first_line().trim(), format!("listening on {addr}"));
    drop(client);
    tandem.signal(Signal::SIGTERM);
    assert!(tandem.wait().success(), "{}", tandem.stderr());
    assert!(
        tandem
            .stderr()
            .contains("serving the socket passed by the service manager"),
        "{}",
        tandem.stderr()
    );
}

#[test]
fn a_passed_socket_that_is_not_a_tcp_listener_exits_1_naming_the_problem() {
    let addr = free_addr();
    let tandem = activate(addr, true, &[]);
    // A datagram makes the activator start tandem with a UDP socket.
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(b"wake up", addr)
        .unwrap();
    let out = tandem.finish();
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("cannot use the socket passed by the service manager (LISTEN_FDS)"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

/// The next notification on `socket`, as text.
fn notification(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn the_service_manager_hears_ready_once_serving_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut server = TestServer::start_with_env(&[("NOTIFY_SOCKET", path.to_str().unwrap())], &[]);

    let ready = notification(&socket);
    assert!(ready.lines().any(|line| line == "READY=1"), "{ready:?}");
    assert!(
        ready.contains(&format!("STATUS=serving on {}", server.addr)),
        "{ready:?}"
    );
    // Ready means serving.
    let mut client = server.connect();
    assert_eq!(round_trip(&mut client, b"ready?"), b"ready?");
    drop(client);

    server.signal(Signal::SIGTERM);
    let stopping = notification(&socket);
    assert!(
        stopping.lines().any(|line| line == "STOPPING=1"),
        "{stopping:?}"
    );
    assert!(server.wait().success());
}

/// The shipped unit gives a shutdown all the time it may take before
/// systemd's SIGKILL: `TimeoutStopSec` is at least the shutdown timeout
/// plus its grace, as the unit's command line sets them or the defaults
/// are, with 5 s to spare for the process to start exiting.
#[test]
fn the_units_stop_timeout_covers_the_shutdown_timeout_and_its_grace() {
    let unit = include_str!("../contrib/systemd/tandem.service");
    let setting = |key: &str| {
        unit.lines()
            .find_map(|line| line.trim().strip_prefix(key)?.strip_prefix('='))
            .map(str::trim)
    };
    let stop = setting("TimeoutStopSec").expect("the unit sets TimeoutStopSec");
    let stop = humantime::parse_duration(stop)
        .or_else(|_| stop.parse().map(Duration::from_secs))
        .expect("TimeoutStopSec is a duration");
    let command = setting("ExecStart").expect("the unit has ExecStart");
    let flag = |name: &str| {
        let mut words = command.split_whitespace();
        words.find(|word| *word == name)?;
        humantime::parse_duration(words.next()?).ok()
    };
    let defaults = tandem::ServerConfig::default();
    let timeout = flag("--shutdown-timeout").unwrap_or(defaults.shutdown_timeout);
    let grace = flag("--shutdown-grace").unwrap_or(defaults.shutdown_grace);
    assert!(
        stop >= timeout + grace + Duration::from_secs(5),
        "TimeoutStopSec={stop:?}, but a shutdown may take {timeout:?} + {grace:?}"
    );
}
