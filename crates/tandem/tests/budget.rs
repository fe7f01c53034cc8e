//! The buffer budget as a connection meets it: a read that finds no room
//! waits for a buffer to be freed, and the wait is the server's, not the
//! peer's, so the idle rule leaves the connection alone however long it
//! lasts. A test binary of its own: the budget is the process's, and this
//! test spends all of it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tandem::buffer::{Buffer, budget::MIN_BUDGET};
use tandem::{Echo, EchoConfig, Server, ServerConfig};
use tokio_util::sync::CancellationToken;

/// Leases every byte the budget has left, in buffers of at most 64 KiB.
fn spend_the_budget() -> Vec<Buffer> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut held = Vec::new();
    while let Poll::Ready(buffer) = Buffer::poll_lease(&mut cx, 64 * 1024, 4096) {
        held.push(buffer);
    }
    held
}

#[test]
fn a_read_waiting_for_the_budget_is_not_idle_and_is_echoed_when_room_comes() {
    let idle_timeout = Duration::from_millis(500);
    let config = ServerConfig::default()
        .workers(1)
        .idle_timeout(Some(idle_timeout))
        .min_rate(0)
        .buffer_memory(Some(MIN_BUDGET));
    let listener = tandem::server::bind("127.0.0.1:0".parse().unwrap(), 128).unwrap();
    let addr = listener.local_addr().unwrap();
    let running = Server::new(config)
        .start(listener, Echo::new(EchoConfig::default()))
        .unwrap();
    let metrics = running.metrics().clone();
    let stop = CancellationToken::new();
    let server = std::thread::spawn({
        let stop = stop.clone();
        move || running.wait(stop.cancelled_owned())
    });

    let held = spend_the_budget();
    assert!(!held.is_empty());
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(common::PATIENCE)).unwrap();
    client.write_all(b"patience").unwrap();
    // Four idle timeouts (with the sweep's two ticks of lateness, 625 ms
    // at most) with no room: a connection judged by its silence would be
    // closed by now, its message unread.
    std::thread::sleep(4 * idle_timeout);
    let waits = rendered(&metrics, "tandem_buffer_waits_total");
    assert!(waits >= 1.0, "the read never waited for the budget");
    drop(held);
    let mut echo = [0u8; 8];
    client
        .read_exact(&mut echo)
        .expect("the waiting client's echo");
    assert_eq!(&echo, b"patience");
    assert_eq!(
        rendered(
            &metrics,
            "tandem_connections_closed_total{reason=\"idle_timeout\"}"
        ),
        0.0
    );
    drop(client);
    stop.cancel();
    server.join().unwrap().unwrap();
}

/// A series' value as `/metrics` would render it.
fn rendered(metrics: &tandem::Metrics, series: &str) -> f64 {
    metrics
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series}"))
}
