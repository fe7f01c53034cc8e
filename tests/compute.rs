//! Specifies the compute runtime (`--compute-threads`) as an operator meets
//! it: a chunk's simulated work above `--offload-above` runs on
//! `tandem-compute` threads, not on the serving ones; lighter work stays
//! inline; a full `--compute-queue` makes connections wait for a slot, and
//! a client that keeps sending meets TCP's pushback; a connection waiting
//! for its work is not idle; connections take turns on the threads, a light
//! one between the slices of heavy ones; a client that resets takes its
//! job out of the queue; the metrics show the runtime, the queue and the
//! waits; every option has its flag, variable and key. Every test runs the real binary over loopback. The panicking
//! job is specified in `crates/tandem/tests/library.rs`, with a handler
//! that panics.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::admin::{scrape, scrape_until};
use common::{ConfigFile, Proc, TestServer, round_trip, startup_fields};

#[test]
fn heavy_work_runs_on_tandem_compute_threads_and_not_on_the_serving_ones() {
    for via in ["runtime", "spawn-blocking"] {
        let server = TestServer::start(&[
            "--workers",
            "1",
            "--simulate-work",
            "1s",
            "--compute-threads",
            "1",
            "--compute-via",
            via,
        ]);
        let before = common::process::thread_cpu_time(server.pid(), "tandem-worker");
        let mut client = server.connect();
        assert_eq!(round_trip(&mut client, b"x"), b"x", "{via}");
        // The work burnt its second of CPU on a compute thread before the
        // echo came back (900 ms: the two clocks read it a little apart),
        // and the worker only read and wrote, well under 50 ms of CPU
        // however busy the machine.
        let compute = common::process::thread_cpu_time(server.pid(), "tandem-compute");
        let worker = common::process::thread_cpu_time(server.pid(), "tandem-worker") - before;
        assert!(
            compute >= Duration::from_millis(900),
            "{via}: compute {compute:?}"
        );
        assert!(
            worker < Duration::from_millis(50),
            "{via}: worker {worker:?}"
        );
    }
}

#[test]
fn work_at_or_below_offload_above_stays_on_the_serving_thread() {
    let server = TestServer::start(&[
        "--workers",
        "1",
        "--simulate-work",
        "1s",
        "--compute-threads",
        "1",
        "--offload-above",
        "1s",
    ]);
    let mut client = server.connect();
    assert_eq!(round_trip(&mut client, b"x"), b"x");
    // The bounds of the test above, the other way round.
    let compute = common::process::thread_cpu_time(server.pid(), "tandem-compute");
    let worker = common::process::thread_cpu_time(server.pid(), "tandem-worker");
    assert!(worker >= Duration::from_millis(900), "worker {worker:?}");
    assert!(compute < Duration::from_millis(50), "compute {compute:?}");
}

#[test]
fn per_kib_work_follows_the_chunk_size_and_only_large_chunks_are_offloaded() {
    // 10 ms per KiB: a 1-byte chunk costs 10 µs, under the 50 µs default
    // threshold, and stays inline; a 32 KiB chunk costs 320 ms, and goes.
    let server = TestServer::start_with_admin(&[
        "--workers",
        "1",
        "--simulate-work",
        "10ms/KiB",
        "--compute-threads",
        "1",
    ]);
    let admin = server.admin_addr();
    let done = "tandem_compute_jobs_total{outcome=\"done\"}";
    let mut client = server.connect();
    for _ in 0..10 {
        assert_eq!(round_trip(&mut client, b"y"), b"y");
    }
    assert_eq!(
        scrape(admin).get(done),
        Some(0.0),
        "a light chunk was offloaded"
    );
    let heavy = common::random_bytes(32 * 1024);
    client.write_all(&heavy).unwrap();
    let mut back = vec![0u8; heavy.len()];
    client.read_exact(&mut back).unwrap();
    assert_eq!(back, heavy);
    // However the 32 KiB were cut into reads, their work adds up to 320 ms
    // of CPU, burnt on the compute thread before the last byte came back
    // (but for the few bytes of a read small enough to stay inline).
    let jobs = scrape(admin).get(done).unwrap_or_default();
    assert!(jobs >= 1.0, "no heavy chunk was offloaded");
    let compute = common::process::thread_cpu_time(server.pid(), "tandem-compute");
    assert!(compute >= Duration::from_millis(250), "compute {compute:?}");
}

/// A server with two compute threads but one slot, and a first connection
/// whose chunk's `work` holds the slot: another connection's work then
/// waits for the slot, not for a thread.
fn one_slot_held_for(work: &str) -> (TestServer, std::net::TcpStream) {
    let server = TestServer::start_with_admin(&[
        "--simulate-work",
        work,
        "--compute-threads",
        "2",
        "--compute-queue",
        "1",
    ]);
    let mut holder = server.connect();
    holder.write_all(b"h").unwrap();
    scrape_until(
        server.admin_addr(),
        &[
            ("tandem_compute_wait_seconds_count", 1.0),
            ("tandem_compute_queue_depth", 1.0),
        ],
    );
    (server, holder)
}

#[test]
fn a_full_queue_makes_the_next_job_wait_for_a_slot() {
    let (server, mut first) = one_slot_held_for("3s");
    let admin = server.admin_addr();
    let mut second = server.connect();
    second.write_all(b"b").unwrap();
    let mut byte = [0u8; 1];
    first.read_exact(&mut byte).unwrap();
    second.read_exact(&mut byte).unwrap();
    let metrics = scrape_until(
        admin,
        &[
            ("tandem_compute_wait_seconds_count", 2.0),
            ("tandem_compute_queue_depth", 0.0),
        ],
    );
    // The second waited out the rest of the first's 3 s of CPU, all but a
    // scrape and a connect: a busy machine stretches those, and the 3 s
    // of CPU as much, so 1 s is a bound it keeps.
    let waited = metrics.get("tandem_compute_wait_seconds_sum").unwrap();
    assert!(
        waited >= 1.0,
        "the jobs waited {waited} s for a slot in all"
    );
}

#[test]
fn a_client_whose_work_waits_for_a_slot_is_pushed_back_by_tcp() {
    // A first connection's 10 s job holds the only slot, and a second
    // connection's first chunk waits for it, though a thread is free.
    // Meanwhile the second connection reads nothing more.
    const TOTAL: usize = 64 << 20;
    let (server, _holder) = one_slot_held_for("10s");
    let admin = server.admin_addr();

    let mut client = server.connect();
    client.set_nonblocking(true).unwrap();
    let chunk = vec![7u8; 1 << 16];
    let mut sent = 0;
    let mut stalled_since = None;
    // Sends until the socket has refused more for half a second.
    while sent < TOTAL {
        match client.write(&chunk) {
            Ok(n) => {
                sent += n;
                stalled_since = None;
            }
            Err(err) if err.kind() == ErrorKind::WouldBlock => {
                let since = *stalled_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(500) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(err) => panic!("send failed: {err}"),
        }
    }
    // The kernel's buffers hold a few megabytes on loopback; the server
    // itself holds the one chunk whose work waits.
    assert!(sent < TOTAL, "all {TOTAL} bytes were taken: no pushback");
    // Stalled on the slot, not on a thread: only the first job got in. (Its
    // 10 s of CPU outlast this test's sending by far, however slow.)
    let metrics = scrape(admin);
    assert_eq!(
        metrics.get("tandem_compute_wait_seconds_count"),
        Some(1.0),
        "{}",
        metrics.text
    );
}

/// `tandem_compute_jobs_total` for `outcome`.
fn jobs(outcome: &str) -> String {
    format!("tandem_compute_jobs_total{{outcome=\"{outcome}\"}}")
}

/// A client that resets when dropped: SO_LINGER 0.
fn resetting(server: &TestServer) -> TcpStream {
    let socket = socket2::Socket::from(server.connect());
    socket.set_linger(Some(Duration::ZERO)).unwrap();
    TcpStream::from(socket)
}

#[test]
fn a_connection_waiting_for_compute_is_not_idle_and_loses_no_message() {
    // One thread, four slots and eight clients, each sending a message
    // that costs 250 ms and reading its echo, twice. A round is 2 s of CPU
    // on the one thread: some client waits that long for its echo, longer
    // than the 1 s idle timeout plus the sweep's two ticks (250 ms), and
    // however busy the machine, as the work is CPU time. Silent meanwhile,
    // it would be closed as idle, and its next message lost.
    const CLIENTS: usize = 8;
    let server = TestServer::start_with_admin(&[
        "--compute-threads",
        "1",
        "--compute-queue",
        "4",
        "--simulate-work",
        "250ms",
        "--idle-timeout",
        "1s",
    ]);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let mut stream = server.connect();
            std::thread::spawn(move || {
                (0..2)
                    .try_for_each(|round| {
                        let message = format!("client {client} round {round}\n");
                        stream.write_all(message.as_bytes())?;
                        let mut echo = vec![0; message.len()];
                        stream.read_exact(&mut echo)?;
                        assert_eq!(echo, message.as_bytes());
                        Ok(())
                    })
                    .map_err(|err: std::io::Error| format!("client {client}: {err}"))
            })
        })
        .collect();
    let lost: Vec<_> = clients
        .into_iter()
        .filter_map(|client| client.join().unwrap().err())
        .collect();
    assert!(lost.is_empty(), "{lost:?}");
    let metrics = scrape(server.admin_addr());
    assert_eq!(
        metrics.get("tandem_connections_closed_total{reason=\"idle_timeout\"}"),
        Some(0.0)
    );
    assert_eq!(metrics.get(&jobs("done")), Some((2 * CLIENTS) as f64));
}

#[test]
fn a_light_connection_is_served_between_the_slices_of_heavy_ones() {
    // One thread; three heavy clients each send 1 KiB, 10 s of work in one
    // chunk (a read takes up to 4 KiB), and a light client sends 1 byte at
    // a time, 10 ms of work, ten times. Taking turns, each light slice
    // waits for at most one slice of each heavy connection, so the light
    // client's ten echoes cost the thread about 0.4 s of CPU, and no
    // heavy job can have had the 10 s it needs by then. First come, first
    // served, the light client would wait 30 s for its first echo.
    let server =
        TestServer::start_with_admin(&["--compute-threads", "1", "--simulate-work", "10s/KiB"]);
    let admin = server.admin_addr();
    let heavy: Vec<_> = (0..3)
        .map(|_| {
            let mut client = resetting(&server);
            client.write_all(&[b'h'; 1024]).unwrap();
            client
        })
        .collect();
    scrape_until(admin, &[("tandem_compute_queue_depth", 3.0)]);
    let mut light = server.connect();
    for _ in 0..10 {
        assert_eq!(round_trip(&mut light, b"l"), b"l");
    }
    // Counted by outcome, not timed: the ten done are the light ones.
    assert_eq!(scrape(admin).get(&jobs("done")), Some(10.0));
    // The heavy clients reset: their jobs end with the slice they are in.
    drop(heavy);
    scrape_until(
        admin,
        &[
            (&jobs("cancelled"), 3.0),
            (&jobs("done"), 10.0),
            ("tandem_compute_queue_depth", 0.0),
        ],
    );
}

#[test]
fn clients_that_reset_while_their_jobs_wait_cost_no_work_and_delay_no_one() {
    // One thread, and twenty clients that each send 1 KiB, 10 s of work,
    // then reset while their jobs wait (one of them running, in slices).
    const CLIENTS: usize = 20;
    let server = TestServer::start_with_admin(&[
        "--compute-threads",
        "1",
        "--compute-queue",
        "32",
        "--simulate-work",
        "10s/KiB",
    ]);
    let admin = server.admin_addr();
    let gone: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let mut client = resetting(&server);
            client.write_all(&[b'r'; 1024]).unwrap();
            client
        })
        .collect();
    scrape_until(admin, &[("tandem_compute_queue_depth", CLIENTS as f64)]);
    drop(gone);
    // Every job is out of the queue, none done: the queued never ran, the
    // running one ended with its slice. Every connection closed as reset.
    scrape_until(
        admin,
        &[
            (&jobs("cancelled"), CLIENTS as f64),
            (&jobs("done"), 0.0),
            ("tandem_compute_queue_depth", 0.0),
            (
                "tandem_connections_closed_total{reason=\"reset\"}",
                CLIENTS as f64,
            ),
        ],
    );
    // A new client's job is the only one to run (counted before its echo
    // goes back).
    let mut client = server.connect();
    assert_eq!(round_trip(&mut client, b"n"), b"n");
    assert_eq!(scrape(admin).get(&jobs("done")), Some(1.0));
}

#[test]
fn a_client_that_half_closes_while_its_job_waits_still_gets_its_echo() {
    // A FIN makes the socket readable, as a reset does; only the reset
    // means that no one is left to echo to.
    for via in ["runtime", "spawn-blocking"] {
        let server = TestServer::start(&[
            "--compute-threads",
            "1",
            "--compute-via",
            via,
            "--simulate-work",
            "300ms",
        ]);
        let mut client = server.connect();
        client.write_all(b"half").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut echo = Vec::new();
        client.read_to_end(&mut echo).unwrap();
        assert_eq!(echo, b"half", "{via}");
    }
}

#[test]
fn the_compute_runtime_has_its_series_and_its_queue_in_the_metrics() {
    let server = TestServer::start_with_admin(&[
        "--simulate-work",
        "1ms",
        "--compute-threads",
        "2",
        "--compute-queue",
        "7",
    ]);
    let admin = server.admin_addr();
    let mut client = server.connect();
    for _ in 0..3 {
        assert_eq!(round_trip(&mut client, b"m"), b"m");
    }
    let metrics = scrape_until(
        admin,
        &[
            ("tandem_runtime_workers{runtime=\"compute\"}", 2.0),
            ("tandem_compute_queue_capacity", 7.0),
            ("tandem_compute_jobs_total{outcome=\"done\"}", 3.0),
            ("tandem_compute_jobs_total{outcome=\"panicked\"}", 0.0),
            ("tandem_compute_wait_seconds_count", 3.0),
        ],
    );
    for series in [
        "tandem_runtime_busy_ratio",
        "tandem_runtime_busy_seconds_total",
        "tandem_runtime_global_queue_depth",
        "tandem_runtime_alive_tasks",
    ] {
        assert!(
            metrics.runtimes(series).contains("compute"),
            "{series} has no runtime=\"compute\""
        );
    }
}

#[test]
fn without_compute_threads_the_series_exist_with_a_capacity_of_0() {
    let server = TestServer::start_with_admin(&[]);
    let metrics = scrape(server.admin_addr());
    assert_eq!(metrics.get("tandem_compute_queue_capacity"), Some(0.0));
    assert_eq!(metrics.get("tandem_compute_queue_depth"), Some(0.0));
    assert_eq!(metrics.get("tandem_compute_wait_seconds_count"), Some(0.0));
    for outcome in ["done", "panicked", "stopped", "cancelled"] {
        let series = format!("tandem_compute_jobs_total{{outcome=\"{outcome}\"}}");
        assert_eq!(metrics.get(&series), Some(0.0), "{series}");
    }
    assert!(
        !metrics
            .runtimes("tandem_runtime_workers")
            .contains("compute")
    );
}

#[test]
fn every_compute_option_is_read_from_its_flag_variable_and_key() {
    let expect = |fields: &serde_json::Map<String, serde_json::Value>, how: &str| {
        assert_eq!(fields["compute_threads"], 3, "{how}");
        assert_eq!(fields["compute_queue"], 9, "{how}");
        assert_eq!(fields["compute_via"], "spawn-blocking", "{how}");
        assert_eq!(fields["offload_above"], "1ms", "{how}");
        assert_eq!(fields["simulate_work"], "20us/KiB", "{how}");
    };
    let flags = TestServer::start(&[
        "--log-format",
        "json",
        "--compute-threads",
        "3",
        "--compute-queue",
        "9",
        "--compute-via",
        "spawn-blocking",
        "--offload-above",
        "1ms",
        "--simulate-work",
        "20us/KiB",
    ]);
    expect(&startup_fields(&flags), "flags");
    let env = TestServer::start_with_env(
        &[
            ("TANDEM_COMPUTE_THREADS", "3"),
            ("TANDEM_COMPUTE_QUEUE", "9"),
            ("TANDEM_COMPUTE_VIA", "spawn-blocking"),
            ("TANDEM_OFFLOAD_ABOVE", "1ms"),
            ("TANDEM_SIMULATE_WORK", "20us/KiB"),
        ],
        &["--log-format", "json"],
    );
    expect(&startup_fields(&env), "environment");
    let file = ConfigFile::new(
        "compute_threads = 3\ncompute_queue = 9\ncompute_via = \"spawn-blocking\"\n\
         offload_above = \"1ms\"\nsimulate_work = \"20us/KiB\"\n",
    );
    let from_file = TestServer::start(&["--log-format", "json", "--config", file.path()]);
    expect(&startup_fields(&from_file), "file");
}

#[test]
fn bad_compute_options_exit_2_naming_the_option() {
    for (args, expect) in [
        (&["--compute-queue", "0"][..], "--compute-queue"),
        (&["--compute-threads", "100000"], "--compute-threads"),
        (&["--compute-via", "threads"], "--compute-via"),
        (&["--offload-above", "soon"], "--offload-above"),
        (&["--simulate-work", "fast/KiB"], "--simulate-work"),
    ] {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let out = Proc::run(&all, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(expect), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{args:?}: {}", out.stderr);
    }
}
