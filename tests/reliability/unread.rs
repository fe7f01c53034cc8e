//! Case 2, clients that send and never read. Each of 50 clients sends 4 MiB
//! without reading its echo. The server must not buffer what it cannot
//! write back: it stops reading a client whose echo is stuck, so TCP pushes
//! back on the sender and the bytes wait in kernel socket buffers, not in
//! the server's heap. Its resident memory grows by less than 32 MiB (the
//! clients send 200 MiB), and once the clients read, every byte comes back
//! in order and every sender finishes.
//!
//! On loopback the kernel holds most of a client's 4 MiB by itself: the
//! server's send buffer autotunes up to `net.ipv4.tcp_wmem`'s maximum
//! (4 MiB by default). The clients' own buffers are pinned small so that
//! as little as possible waits on their side, and a second test sends
//! 24 MiB per client, far more than the kernel holds: there the writers
//! must stall short of their total, which only TCP backpressure from a
//! server that stopped reading can do.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::common::process::rss_bytes;
use crate::common::{PATIENCE, TestServer, per_layout};

/// What the server's resident memory may grow by while the clients' echo
/// is stuck: a fraction of the 200 MiB they send.
const RSS_BUDGET: u64 = 32 * 1024 * 1024;
/// The clients' SO_RCVBUF and SO_SNDBUF (the kernel doubles them): small
/// and fixed, as a constrained client's would be, so that the echo it does
/// not read piles up on the server's side instead of in this client's
/// kernel buffers, which on loopback could otherwise absorb all 4 MiB.
const CLIENT_BUFFER: usize = 16 * 1024;
/// Bytes per write call.
const CHUNK: usize = 64 * 1024;
/// No byte taken by any client's socket for this long: TCP backpressure
/// holds every writer.
const QUIET: Duration = Duration::from_secs(1);

/// `per_client` random bytes for each of `clients`, different for every
/// client, so that an echo delivered to the wrong connection cannot pass.
fn payloads(clients: usize, per_client: usize) -> Vec<Arc<Vec<u8>>> {
    (0..clients)
        .map(|_| {
            // A fast generator: the test binary is unoptimised.
            let mut rng = SmallRng::seed_from_u64(rand::random());
            let mut payload = vec![0u8; per_client];
            rng.fill_bytes(&mut payload);
            Arc::new(payload)
        })
        .collect()
}

per_layout!(clients_that_never_read_grow_memory_by_less_than_32_mib_and_get_every_byte_back);
fn clients_that_never_read_grow_memory_by_less_than_32_mib_and_get_every_byte_back(layout: &str) {
    unread_clients(layout, 50, 4 * 1024 * 1024);
}

per_layout!(clients_sending_far_more_than_the_kernel_holds_are_stalled_by_backpressure);
fn clients_sending_far_more_than_the_kernel_holds_are_stalled_by_backpressure(layout: &str) {
    let (clients, per_client) = (8, 24 * 1024 * 1024);
    let stalled_at = unread_clients(layout, clients, per_client);
    assert!(
        stalled_at < (clients * per_client) as u64,
        "{layout}: all {clients} x {per_client} bytes were taken without anyone reading"
    );
}

/// `clients` clients each send `per_client` bytes and read nothing until
/// the writes stall (or finish); the server's RSS must have grown by less
/// than [`RSS_BUDGET`] by then. Then they read: every byte comes back.
/// Returns the bytes sent before the clients read.
fn unread_clients(layout: &str, count: usize, per_client: usize) -> u64 {
    let payloads = payloads(count, per_client);
    {
        let mut server = TestServer::start(&["--layout", layout]);
        let pid = server.pid();
        let before = rss_bytes(pid);

        // Every client writes its 4 MiB from a thread of its own, with
        // nobody reading: the writes stall once the echo has filled the
        // client's receive buffer, the server's send and receive buffers
        // and the client's send buffer.
        let written = Arc::new(AtomicU64::new(0));
        let clients: Vec<_> = payloads
            .iter()
            .map(|payload| {
                let stream = server.connect_with_buffers(CLIENT_BUFFER);
                let mut writer = stream.try_clone().unwrap();
                let payload = payload.clone();
                let written = written.clone();
                let sender: JoinHandle<()> = thread::spawn(move || {
                    for chunk in payload.chunks(CHUNK) {
                        writer.write_all(chunk).expect("write");
                        written.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    }
                });
                (stream, sender)
            })
            .collect();

        // Memory is measured once the clients have pushed all they can.
        let total = (count * per_client) as u64;
        let stalled_at = wait_until_stalled(&written, total);
        let grown = rss_bytes(pid).saturating_sub(before);
        assert!(
            grown < RSS_BUDGET,
            "{layout}: RSS grew by {} KiB (limit {} KiB) with {stalled_at} bytes \
             sent and not read by {count} clients",
            grown / 1024,
            RSS_BUDGET / 1024
        );

        // Now every client reads: each gets its own bytes, all of them, in
        // order, and nothing more, and its writer, unblocked, finishes.
        let readers: Vec<_> = clients
            .into_iter()
            .zip(&payloads)
            .enumerate()
            .map(|(i, ((mut stream, sender), payload))| {
                let payload = payload.clone();
                thread::spawn(move || {
                    let mut echoed = vec![0u8; per_client];
                    stream
                        .read_exact(&mut echoed)
                        .unwrap_or_else(|err| panic!("client {i}: reading the echo: {err}"));
                    if echoed != *payload {
                        let at = echoed.iter().zip(payload.iter()).position(|(a, b)| a != b);
                        panic!("client {i}: the echo differs from what it sent at offset {at:?}");
                    }
                    sender.join().expect("sender");
                    // Nothing more than what was sent: the half-close gets
                    // the server's FIN straight away.
                    stream.shutdown(Shutdown::Write).unwrap();
                    let mut extra = Vec::new();
                    stream
                        .read_to_end(&mut extra)
                        .unwrap_or_else(|err| panic!("client {i}: reading to EOF: {err}"));
                    assert!(
                        extra.is_empty(),
                        "client {i}: {} bytes too many",
                        extra.len()
                    );
                })
            })
            .collect();
        for reader in readers {
            reader
                .join()
                .unwrap_or_else(|_| panic!("{layout}: a client failed"));
        }
        eprintln!(
            "{layout}: {stalled_at} of {total} bytes sent before the clients read; \
             RSS grew by {} KiB",
            grown / 1024
        );
        assert!(server.stop().success(), "{layout}");
        stalled_at
    }
}

/// Waits until the writers have made no progress for `QUIET` (or have sent
/// everything), and returns how many bytes they had sent.
fn wait_until_stalled(written: &AtomicU64, total: u64) -> u64 {
    let deadline = Instant::now() + PATIENCE;
    let mut last = written.load(Ordering::Relaxed);
    let mut since = Instant::now();
    loop {
        thread::sleep(Duration::from_millis(50));
        let now = written.load(Ordering::Relaxed);
        if now == total {
            return now;
        }
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= QUIET {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the clients never stopped making progress ({now} bytes)"
        );
    }
}
