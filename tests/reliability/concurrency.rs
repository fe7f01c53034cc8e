//! Case 3, concurrency: 5000 connections open at the same time are all
//! served. Each client echoes bytes of its own (its index, then random
//! bytes) while the other 4999 are open, and gets exactly those bytes back;
//! the server counts 5000 active connections, then none once they close,
//! each closed cleanly (`eof`). In every layout, with the default limits
//! (`--max-connections 10000`, `--backlog 1024`).

use std::net::SocketAddr;

use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::clients::{assert_all_exact, close_cleanly, echo_own_bytes, gather, runtime};
use crate::common::admin::scrape_until;
use crate::common::{PATIENCE, TestServer, per_layout};

/// Connections open at once.
const CLIENTS: usize = 5000;
/// Connections opened together. Each wave is accepted before the next
/// starts, so that a wave never meets a full listen backlog (1024 by
/// default): the kernel would drop SYNs and the clients would retry a
/// second later, which is slow but not what this case is about.
const WAVE: usize = 500;
/// Bytes each client echoes: its index, then random bytes.
const MESSAGE: usize = 64;

/// Raises this process's soft RLIMIT_NOFILE so that it can hold `needed`
/// descriptors; the server inherits it (and raises its own to the hard
/// limit).
fn allow_descriptors(needed: u64) {
    let soft = rlimit::increase_nofile_limit(needed).expect("raise RLIMIT_NOFILE");
    assert!(
        soft >= needed,
        "RLIMIT_NOFILE allows {soft} descriptors; this case needs {needed}"
    );
}

/// Opens `count` connections to `addr` at once.
async fn connect_wave(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut connecting = JoinSet::new();
    for _ in 0..count {
        connecting.spawn(async move {
            timeout(PATIENCE, TcpStream::connect(addr))
                .await
                .expect("connect timed out")
                .expect("connect")
        });
    }
    let mut streams = Vec::with_capacity(count);
    while let Some(stream) = connecting.join_next().await {
        streams.push(stream.expect("connect task"));
    }
    streams
}

/// Every client sends its own message, then reads as many bytes back; all
/// at once. Returns the clients, still open, and how many got back exactly
/// what they sent.
async fn echo_all(clients: Vec<TcpStream>) -> (Vec<TcpStream>, usize) {
    let mut echoing = JoinSet::new();
    for (index, mut stream) in clients.into_iter().enumerate() {
        echoing.spawn(async move {
            let same = echo_own_bytes(&mut stream, index, MESSAGE).await;
            (stream, same)
        });
    }
    gather(echoing).await
}

// In turn: each layout's 5000 clients are descriptors of this process,
// which may hold 20,000 in all beside the other cases, and each of its
// waves is given its patience on a machine that serves no other 5000.
per_layout!(
    five_thousand_simultaneous_connections_all_echo_their_own_bytes_in_every_layout,
    in_turn
);
fn five_thousand_simultaneous_connections_all_echo_their_own_bytes_in_every_layout(layout: &str) {
    // The clients' descriptors, with room for the other cases that run
    // beside this one in the same process.
    allow_descriptors(CLIENTS as u64 + 2048);
    let runtime = runtime();
    let mut server = TestServer::start_with_admin(&["--layout", layout]);
    let admin = server.admin_addr();

    let mut clients = Vec::with_capacity(CLIENTS);
    while clients.len() < CLIENTS {
        let wave = WAVE.min(CLIENTS - clients.len());
        clients.extend(runtime.block_on(connect_wave(server.addr, wave)));
        scrape_until(
            admin,
            &[("tandem_connections_accepted_total", clients.len() as f64)],
        );
    }

    // No client has closed: all 5000 are served at the same time.
    let (clients, exact) = runtime.block_on(echo_all(clients));
    assert_all_exact(layout, exact, CLIENTS);
    scrape_until(
        admin,
        &[
            ("tandem_connections_active", CLIENTS as f64),
            ("tandem_connections_accepted_total", CLIENTS as f64),
        ],
    );

    close_cleanly(&runtime, admin, clients);
    assert!(server.stop().success(), "{layout}: {}", server.stderr());
}
