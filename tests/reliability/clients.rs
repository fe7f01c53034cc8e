//! Clients that several cases share: many at once on a tokio runtime, each
//! echoing bytes of its own, so that an echo delivered to the wrong
//! connection cannot pass, and closing cleanly once they have.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::common::admin::scrape_until;
use crate::common::{PATIENCE, random_bytes};

/// The runtime the clients run on: two threads, like the machine.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for the clients")
}

/// Sends client `index`'s own `size` bytes (its index, then random bytes)
/// and reads as many back; true if they are exactly what it sent. Panics,
/// naming the client, on an error or after `PATIENCE`.
pub async fn echo_own_bytes(stream: &mut TcpStream, index: usize, size: usize) -> bool {
    let mut message = random_bytes(size.max(8));
    message[..8].copy_from_slice(&(index as u64).to_le_bytes());
    let mut echoed = vec![0; message.len()];
    timeout(PATIENCE, async {
        stream.write_all(&message).await?;
        stream.read_exact(&mut echoed).await
    })
    .await
    .unwrap_or_else(|_| panic!("client {index}: no echo"))
    .unwrap_or_else(|err| panic!("client {index}: {err}"));
    echoed == message
}

/// Waits for every client task, each of which returns its stream, still
/// open, and whether its echo was exact. Returns the streams and how many
/// echoes were exact.
pub async fn gather(mut clients: JoinSet<(TcpStream, bool)>) -> (Vec<TcpStream>, usize) {
    let mut open = Vec::with_capacity(clients.len());
    let mut exact = 0;
    while let Some(client) = clients.join_next().await {
        let (stream, same) = client.expect("client task");
        open.push(stream);
        exact += usize::from(same);
    }
    (open, exact)
}

/// Asserts that `exact`, the clients that got exactly their own bytes back,
/// are all `count` of them.
pub fn assert_all_exact(layout: &str, exact: usize, count: usize) {
    assert_eq!(
        exact,
        count,
        "{layout}: {} of {count} clients got other bytes back",
        count - exact
    );
}

/// Closes `clients`, on the `runtime` their sockets belong to, and waits
/// until the server at `admin` has counted every one closed, none active.
/// Every client has read its echo, so each close is a clean one (`eof`).
pub fn close_cleanly(
    runtime: &tokio::runtime::Runtime,
    admin: SocketAddr,
    clients: Vec<TcpStream>,
) {
    let count = clients.len() as f64;
    runtime.block_on(async move { drop(clients) });
    scrape_until(
        admin,
        &[
            ("tandem_connections_active", 0.0),
            ("tandem_connections_closed_total{reason=\"eof\"}", count),
        ],
    );
}
