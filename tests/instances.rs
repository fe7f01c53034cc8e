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
