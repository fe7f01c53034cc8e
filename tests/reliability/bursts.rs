//! Case 7, bursts beyond the hand-off: with a hand-off queue of one
//! connection and one worker (`--handoff-capacity 1 --workers 1`), 500
//! clients that connect in the same instant are all served. The queue
//! bounds what waits between accept and serve, not how many are served:
//! the acceptor reserves a place before each accept, so the burst waits in
//! the kernel's listen backlog and is taken off it one connection at a
//! time, none dropped, none refused. Each client echoes bytes of its own
//! and gets exactly those back while the other 499 are open; the server
//! counts 500 accepted. In every layout (`single` has no queue, and serves
//! the burst on its one worker).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::clients::{assert_all_exact, close_cleanly, echo_own_bytes, gather, runtime};
use crate::common::admin::scrape_until;
use crate::common::{PATIENCE, TestServer, per_layout};

/// Clients in the burst: half the default listen backlog, so that the
/// kernel holds the whole burst while the server takes it in.
const CLIENTS: usize = 500;
/// Bytes each client echoes: its index, then random bytes.
const MESSAGE: usize = 256;

/// `CLIENTS` clients released together by a barrier: each connects, sends
/// its own message and reads its echo. Returns the clients, still open, and
/// how many got back exactly what they sent.
async fn burst(addr: SocketAddr) -> (Vec<TcpStream>, usize) {
    let start = Arc::new(Barrier::new(CLIENTS));
    let mut clients = JoinSet::new();
    for index in 0..CLIENTS {
        let start = start.clone();
        clients.spawn(async move {
            start.wait().await;
            let mut stream = timeout(PATIENCE, TcpStream::connect(addr))
                .await
                .unwrap_or_else(|_| panic!("client {index}: connect timed out"))
                .unwrap_or_else(|err| panic!("client {index}: {err}"));
            let same = echo_own_bytes(&mut stream, index, MESSAGE).await;
            (stream, same)
        });
    }
    gather(clients).await
}

per_layout!(five_hundred_clients_at_once_through_a_hand_off_of_one_are_all_served_in_every_layout);
fn five_hundred_clients_at_once_through_a_hand_off_of_one_are_all_served_in_every_layout(
    layout: &str,
) {
    let runtime = runtime();
    let mut server = TestServer::start_with_admin(&[
        "--layout",
        layout,
        "--handoff-capacity",
        "1",
        "--workers",
        "1",
    ]);
    let admin = server.admin_addr();
    // The queue really is one connection deep (`single` has none).
    let capacity = if layout == "single" { 0.0 } else { 1.0 };
    scrape_until(admin, &[("tandem_handoff_queue_capacity", capacity)]);

    let (clients, exact) = runtime.block_on(burst(server.addr));
    assert_all_exact(layout, exact, CLIENTS);
    // Each client was accepted once, and all are still being served.
    scrape_until(
        admin,
        &[
            ("tandem_connections_accepted_total", CLIENTS as f64),
            ("tandem_connections_active", CLIENTS as f64),
            ("tandem_connections_rejected_total", 0.0),
        ],
    );

    close_cleanly(&runtime, admin, clients);
    assert!(server.stop().success(), "{layout}: {}", server.stderr());
}
