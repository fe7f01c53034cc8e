//! Case 13, slow clients shed under pressure: when every connection slot
//! is taken and a new client waits, the slowest connections make room.
//!
//! Slowloris at its cheapest: clients that send a byte every 2 s, never
//! silent for long, hold every slot of a server whose minimum rate they
//! pass (here `--min-rate 0`, so that only shedding can free a slot; at
//! the default 1 byte/s, these clients are closed by the rate itself,
//! once their echo no longer doubles it). The server sheds the slowest
//! measured connection at the sweep's next tick, so the waiting client is
//! served; while a slot is free, nobody is shed, however slow.
//!
//! The idle timeout is 4 s so that the sweep ticks every 500 ms and
//! measures a connection after 2 ticks, 1 s. Each case runs its three
//! layouts at once, since each mostly waits on the clock.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::admin::{scrape, scrape_until};
use crate::common::{PATIENCE, TestServer, per_layout, round_trip};

/// The server's slots.
const SLOTS: usize = 20;
/// A slow client's byte interval: 0.5 B/s, half the default minimum rate,
/// and half the idle timeout, so never silent for long enough to close.
const SLOW_INTERVAL: Duration = Duration::from_secs(2);
/// How long a connection is watched before its rate counts: 2 ticks of
/// 500 ms, plus 2 ticks of margin.
const MEASURED: Duration = Duration::from_secs(2);
/// The longest a new client may wait for its echo. The sweep sheds at its
/// first tick after the client queues, at most 500 ms later, and the
/// slot is free as soon as the shed connection has closed: 2 s is four
/// ticks, the rest being room for a loaded 2-core machine.
const SERVED_WITHIN: Duration = Duration::from_secs(2);

fn start(layout: &str) -> TestServer {
    TestServer::start_with_admin(&[
        "--layout",
        layout,
        "--max-connections",
        &SLOTS.to_string(),
        "--idle-timeout",
        "4s",
        "--min-rate",
        "0",
    ])
}

/// Clients sending one byte every [`SLOW_INTERVAL`] from one thread until
/// dropped; a write that fails (the server closed it) is not retried.
struct Slow {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Slow {
    fn start(mut streams: Vec<TcpStream>) -> Slow {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = thread::spawn(move || {
            let mut open = vec![true; streams.len()];
            while !stopping.load(Ordering::Relaxed) {
                for (stream, open) in streams.iter_mut().zip(&mut open) {
                    *open = *open && stream.write_all(b".").is_ok();
                }
                let next = Instant::now() + SLOW_INTERVAL;
                while Instant::now() < next && !stopping.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(50));
                }
            }
        });
        Slow {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Slow {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Waits until the server has admitted `count` connections.
fn admitted(server: &TestServer, count: usize) {
    scrape_until(
        server.admin_addr(),
        &[("tandem_connections_active", count as f64)],
    );
}

/// Connects a new client, sends a message and returns how long its echo
/// took; fails if it took longer than [`PATIENCE`].
fn new_client_waits(server: &TestServer) -> Duration {
    let started = Instant::now();
    let mut client = server.connect();
    client.write_all(b"let me in").unwrap();
    let mut echoed = [0u8; 9];
    client
        .read_exact(&mut echoed)
        .unwrap_or_else(|err| panic!("no echo after {:?}: {err}", started.elapsed()));
    assert_eq!(&echoed, b"let me in");
    started.elapsed()
}

/// True once the server has closed `stream` (end-of-file or a reset,
/// after whatever echo was on its way); false if it is still open after
/// `limit`.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(err) if err.kind() == ErrorKind::ConnectionReset => return true,
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(err) => panic!("reading a slow client: {err}"),
        }
    }
}

fn shed_count(server: &TestServer) -> f64 {
    scrape(server.admin_addr())
        .get("tandem_connections_closed_total{reason=\"shed\"}")
        .unwrap_or_default()
}

per_layout!(
    twenty_slow_clients_in_twenty_slots_make_room_for_a_new_client_within_2_s,
    at_once
);
fn twenty_slow_clients_in_twenty_slots_make_room_for_a_new_client_within_2_s(layout: &str) {
    let mut server = start(layout);
    let slow = Slow::start((0..SLOTS).map(|_| server.connect()).collect());
    admitted(&server, SLOTS);
    thread::sleep(MEASURED);
    let waited = new_client_waits(&server);
    eprintln!("{layout}: the new client waited {waited:?}");
    assert!(
        waited < SERVED_WITHIN,
        "{layout}: the new client waited {waited:?} for its echo"
    );
    assert!(shed_count(&server) >= 1.0, "{layout}");
    drop(slow);
    assert!(server.stop().success(), "{layout}");
}

per_layout!(
    clients_that_keep_up_keep_their_slots_and_the_slowest_goes_first_when_none_is_free,
    at_once
);
/// 19 heartbeat clients, 8 bytes every 500 ms each way, hold 95% of the
/// slots while clients come and go through the last one: nobody is shed.
/// Then a slow client takes the last slot and a new client arrives: the
/// slow client is shed, every heartbeat client keeps its connection.
fn clients_that_keep_up_keep_their_slots_and_the_slowest_goes_first_when_none_is_free(
    layout: &str,
) {
    let mut server = start(layout);
    let mut heartbeats: Vec<TcpStream> = (0..SLOTS - 1).map(|_| server.connect()).collect();
    let beat = |heartbeats: &mut Vec<TcpStream>| {
        for (i, client) in heartbeats.iter_mut().enumerate() {
            let echoed = round_trip(client, b"heartbeat");
            assert_eq!(echoed, b"heartbeat", "{layout}: heartbeat client {i}");
        }
    };
    // Two windows and more, with a client through the free slot every
    // 500 ms; the heartbeats are measured after the first 2 s.
    let until = Instant::now() + Duration::from_secs(9);
    while Instant::now() < until {
        beat(&mut heartbeats);
        let mut passing = server.connect();
        assert_eq!(round_trip(&mut passing, b"just passing"), b"just passing");
        drop(passing);
        thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(shed_count(&server), 0.0, "{layout}: shed with a slot free");

    let slow_client = server.connect();
    let mut slow_reader = slow_client.try_clone().unwrap();
    let slow = Slow::start(vec![slow_client]);
    admitted(&server, SLOTS);
    let measured = Instant::now() + MEASURED;
    while Instant::now() < measured {
        beat(&mut heartbeats);
        thread::sleep(Duration::from_millis(500));
    }
    // The new client's wait, beside which the heartbeats keep beating.
    let waited = thread::scope(|inner| {
        let newcomer = inner.spawn(|| new_client_waits(&server));
        while !newcomer.is_finished() {
            beat(&mut heartbeats);
            thread::sleep(Duration::from_millis(100));
        }
        newcomer.join().unwrap()
    });
    assert!(
        waited < SERVED_WITHIN,
        "{layout}: the new client waited {waited:?}"
    );
    assert!(
        closed_within(&mut slow_reader, PATIENCE),
        "{layout}: the slow client was not the one shed"
    );
    beat(&mut heartbeats);
    assert_eq!(shed_count(&server), 1.0, "{layout}");
    drop(slow);
    assert!(server.stop().success(), "{layout}");
}
