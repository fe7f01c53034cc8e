//! Several tandem processes serving one address. With `--reuse-port`
//! (SO_REUSEPORT) they bind the same port and the kernel spreads new
//! connections among them; when one stops, the others take every new
//! connection.

mod common;

use std::net::TcpStream;

use common::admin::scrape;
use common::{Proc, TestServer, round_trip, tandem};

/// Connections made to show that both instances take a share: the kernel
/// picks a listener by a hash of each connection's ports, so with 64 the
/// chance that one instance gets none is 2^-63.
const CONNECTIONS: usize = 64;

/// `tandem serve --listen listen` plus `args`.
fn start_on(listen: &str, args: &[&str]) -> TestServer {
    let mut command = tandem();
    command.args(["serve", "--listen", listen]).args(args);
    TestServer::spawn(command)
}

/// `tandem_connections_accepted_total` of the server at `admin`.
fn accepted(server: &TestServer) -> f64 {
    scrape(server.admin_addr())
        .get("tandem_connections_accepted_total")
        .expect("the accepted counter")
}

#[test]
fn two_instances_with_reuse_port_share_one_port_and_the_survivor_takes_over() {
    let mut first = TestServer::start_with_admin(&["--reuse-port"]);
    let listen = first.addr.to_string();
    let mut second = start_on(&listen, &["--admin-listen", "127.0.0.1:0", "--reuse-port"]);
    assert_eq!(second.addr, first.addr);

    let mut clients: Vec<TcpStream> = (0..CONNECTIONS).map(|_| first.connect()).collect();
    for client in &mut clients {
        assert_eq!(round_trip(client, b"shared"), b"shared");
    }
    let (a, b) = (accepted(&first), accepted(&second));
    assert_eq!(a + b, CONNECTIONS as f64);
    assert!(
        a > 0.0 && b > 0.0,
        "one instance took every connection: {a} and {b}"
    );
    drop(clients);

    // The first stops: its listener leaves the group, and every new
    // connection goes to the second.
    assert!(first.stop().success());
    let before = accepted(&second);
    for _ in 0..16 {
        let mut client = second.connect();
        assert_eq!(round_trip(&mut client, b"still here"), b"still here");
    }
    assert_eq!(accepted(&second), before + 16.0);
    assert!(second.stop().success());
}

#[test]
fn without_reuse_port_a_second_instance_cannot_bind_the_port() {
    let mut first = TestServer::start(&["--reuse-port"]);
    let listen = first.addr.to_string();
    let out = Proc::run(&["serve", "--listen", &listen], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "cannot listen on {listen}: Address already in use"
        )),
        "{}",
        out.stderr
    );
    assert!(first.stop().success());
}

#[test]
fn reuse_port_is_read_from_the_environment_and_the_config_file() {
    let mut first = TestServer::start_with_env(&[("TANDEM_REUSE_PORT", "true")], &[]);
    let file = common::ConfigFile::new("reuse_port = true\n");
    let listen = first.addr.to_string();
    let mut second = start_on(&listen, &["--config", file.path()]);
    let mut client = second.connect();
    assert_eq!(round_trip(&mut client, b"ok"), b"ok");
    drop(client);
    assert!(first.stop().success());
    assert!(second.stop().success());
}

/// HAProxy from `contrib/haproxy/haproxy.cfg`, with the test's ports, in
/// the foreground. Killed on drop.
struct HaProxy {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl HaProxy {
    /// Starts HAProxy in front of `instances` (listen and admin addresses)
    /// on a free port, retrying if the port is taken meanwhile.
    fn start(instances: [(std::net::SocketAddr, std::net::SocketAddr); 2]) -> HaProxy {
        let recipe = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/contrib/haproxy/haproxy.cfg"
        ))
        .expect("read contrib/haproxy/haproxy.cfg");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut failures = Vec::new();
        for _ in 0..5 {
            let addr = free_addr();
            let mut config = recipe.replace("127.0.0.1:7000", &addr.to_string());
            for (n, (listen, admin)) in instances.iter().enumerate() {
                config = config
                    .replace(&format!("127.0.0.1:700{}", n + 1), &listen.to_string())
                    .replace(
                        &format!("port 900{}", n + 1),
                        &format!("port {}", admin.port()),
                    );
            }
            let path = dir.path().join("haproxy.cfg");
            std::fs::write(&path, config).expect("write haproxy.cfg");
            let mut child = common::external::command("haproxy")
                .arg("-db")
                .arg("-f")
                .arg(&path)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|err| panic!("cannot run haproxy: {err}"));
            let deadline = std::time::Instant::now() + common::PATIENCE;
            loop {
                if TcpStream::connect(addr).is_ok() {
                    return HaProxy {
                        child,
                        addr,
                        _dir: dir,
                    };
                }
                if let Ok(Some(status)) = child.try_wait() {
                    let mut stderr = String::new();
                    if let Some(mut pipe) = child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                    }
                    assert!(
                        stderr.contains("Address already in use"),
                        "haproxy exited with {status}: {stderr}"
                    );
                    failures.push(stderr);
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "haproxy did not listen on {addr}"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        panic!("haproxy did not start: {failures:?}");
    }

    /// A client connected through HAProxy.
    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect through haproxy");
        stream.set_read_timeout(Some(common::PATIENCE)).unwrap();
        stream.set_write_timeout(Some(common::PATIENCE)).unwrap();
        stream
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An address on 127.0.0.1 that was free a moment ago.
fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0")
}

#[test]
fn behind_haproxy_both_instances_serve_and_stopping_one_loses_no_byte() {
    use std::sync::atomic::Ordering;
    let args = [
        "--proxy-protocol",
        "--proxy-protocol-from",
        "127.0.0.1",
        "--admin-listen",
        "127.0.0.1:0",
    ];
    let mut first = TestServer::start(&args);
    let mut second = TestServer::start(&args);
    let haproxy = HaProxy::start([
        (first.addr, first.admin_addr()),
        (second.addr, second.admin_addr()),
    ]);

    // Round robin: both instances serve.
    for _ in 0..8 {
        let mut client = haproxy.connect();
        assert_eq!(round_trip(&mut client, b"which one?"), b"which one?");
    }
    let (a, b) = (accepted(&first), accepted(&second));
    assert!(a >= 2.0 && b >= 2.0, "connections split {a} / {b}");

    // Clients stream through both, and the first instance is stopped.
    let (streamers, progress) = common::streamer::stream_together(10, || haproxy.connect());
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while progress.echoing.load(Ordering::Relaxed) < 10 {
        assert!(
            std::time::Instant::now() < deadline,
            "not every client is echoing"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    first.signal(nix::sys::signal::Signal::SIGTERM);
    first.wait_for_log("draining live connections");

    // New connections all go to the second.
    let before = (accepted(&first), accepted(&second));
    for _ in 0..10 {
        let mut client = haproxy.connect();
        assert_eq!(round_trip(&mut client, b"after"), b"after");
    }
    assert_eq!(
        accepted(&first),
        before.0,
        "the stopping instance took a connection"
    );
    assert_eq!(accepted(&second), before.1 + 10.0);

    // The streaming clients, half of them on the stopping instance, finish:
    // every byte comes back.
    progress.stop.store(true, Ordering::Relaxed);
    for (i, streamer) in streamers.into_iter().enumerate() {
        let sent = streamer.writer.join().unwrap().expect("send");
        let echoed = streamer.reader.join().unwrap().expect("read");
        assert_eq!(echoed, sent, "client {i} lost bytes through haproxy");
    }
    assert!(first.wait().success(), "{}", first.stderr());
    drop(haproxy);
    assert!(second.stop().success());
}
