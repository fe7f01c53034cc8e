//! Case 1, descriptor exhaustion, with the limits it leans on (invariants
//! 2 and 3). What is promised:
//!
//! - limits hold connections in the kernel's listen backlog: a client beyond
//!   `--max-connections` (or beyond what RLIMIT_NOFILE leaves room for)
//!   waits, and is served as soon as another leaves;
//! - a server that runs out of descriptors under a low RLIMIT_NOFILE with
//!   more clients than descriptors neither exits nor spins: its CPU time over
//!   2 s stays under 15% of a core, it logs the first accept error at once
//!   and then at most one line per second, and once the clients leave it
//!   gives every descriptor back and serves new clients normally, as the
//!   same process.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::process::{cpu_time, open_descriptors};
use crate::common::{self, PATIENCE, TestServer, per_layout, random_bytes, round_trip};
use rlimit::Resource;

/// How long the CPU time of a server out of descriptors is measured.
const CPU_WINDOW: Duration = Duration::from_secs(2);

/// The warning a server logs when an accept error pauses its listener.
const PAUSE_WARNING: &str = "accept failed; pausing the listener";

/// When the process `pid` started (in clock ticks since boot): with the pid,
/// what tells one process from a later one that reused its pid. Fails if the
/// process has exited, even if it has not been reaped yet.
fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|err| panic!("process {pid} is gone: {err}"));
    // Fields after the command name, which is in parentheses and may hold
    // spaces: the state is field 3 of proc_pid_stat(5), the start time 22.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    assert!(
        !matches!(fields[0], "Z" | "X"),
        "process {pid} has exited (state {})",
        fields[0]
    );
    fields[19].parse().unwrap()
}

/// True if `stream` receives `expected` within `wait`; false on a timeout.
fn echoed_within(stream: &mut TcpStream, expected: &[u8], wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut got = vec![0; expected.len()];
    let result = match stream.read_exact(&mut got) {
        Ok(()) => {
            assert_eq!(got, expected);
            true
        }
        Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(err) => panic!("read failed: {err}"),
    };
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    result
}

per_layout!(a_fifth_client_waits_until_one_of_four_closes);
fn a_fifth_client_waits_until_one_of_four_closes(layout: &str) {
    let mut server = TestServer::start(&["--layout", layout, "--max-connections", "4"]);
    let mut served: Vec<_> = (0..4).map(|_| server.connect()).collect();
    for client in &mut served {
        assert_eq!(round_trip(client, b"in"), b"in");
    }

    // The kernel completes the handshake from the backlog, but the
    // server does not accept: no echo.
    let mut fifth = server.connect();
    fifth.write_all(b"waiting").unwrap();
    assert!(
        !echoed_within(&mut fifth, b"waiting", Duration::from_millis(500)),
        "{layout}: a fifth connection was served with --max-connections 4"
    );

    drop(served.remove(0));
    assert!(
        echoed_within(&mut fifth, b"waiting", PATIENCE),
        "{layout}: the fifth client was not served after one of four closed"
    );
    drop(served);
    drop(fifth);
    assert!(server.stop().success());
}

per_layout!(out_of_descriptors_the_server_pauses_without_spinning_logs_once_a_second_and_recovers);
fn out_of_descriptors_the_server_pauses_without_spinning_logs_once_a_second_and_recovers(
    layout: &str,
) {
    let mut server = TestServer::start(&["--layout", layout]);
    let pid = server.pid();
    let born = start_time(pid);
    // Leave room for exactly three connections. The server fitted
    // --max-connections to the limit it started with; lowering the limit
    // under it is how descriptors run out in production too (other
    // files, other sockets).
    let open = open_descriptors(pid);
    let limit = open.len() as u64 + 3;
    rlimit::prlimit(pid as i32, Resource::NOFILE, Some((limit, limit)), None).unwrap();
    // New descriptors take free numbers below the limit; inherited ones
    // above it (a jobserver pipe, say) leave more room.
    let fits = (limit - open.iter().filter(|&&fd| fd < limit).count() as u64) as usize;

    // No warning can come before the first client: the window in which
    // warnings are counted opens here.
    let window = Instant::now();
    let mut clients: Vec<_> = (0..fits + 5)
        .map(|i| {
            let mut client = server.connect();
            client.write_all(format!("client {i}").as_bytes()).unwrap();
            client
        })
        .collect();
    let warning = server.wait_for_line(PAUSE_WARNING);
    assert!(
        warning.contains("emfile"),
        "{layout}: the warning does not name EMFILE: {warning}"
    );

    // Paused, not spinning: a retry loop without backoff burns a whole
    // core. 15% of one core over 2 s is 300 ms.
    let before = cpu_time(pid);
    std::thread::sleep(CPU_WINDOW);
    let used = cpu_time(pid) - before;
    assert!(
        used < CPU_WINDOW * 15 / 100,
        "{layout}: {used:?} of CPU in {CPU_WINDOW:?} while out of descriptors"
    );

    // Rate-limited: the first error is logged at once, then at most one
    // line per second, however often the listener retries. Every warning
    // read so far was written inside the window, which closes after the
    // read.
    let warnings = server.stderr().matches(PAUSE_WARNING).count();
    let elapsed = window.elapsed();
    let allowed = 1 + elapsed.as_secs() as usize;
    assert!(
        (1..=allowed).contains(&warnings),
        "{layout}: {warnings} warnings in {elapsed:?}, at most {allowed} allowed:\n{}",
        server.stderr()
    );

    // Exactly the clients that fit were served: the accept queue is
    // first in, first out, so they are the first ones to connect. The
    // rest wait in the backlog, unharmed.
    let mut waiting = clients.split_off(fits);
    for (i, client) in clients.iter_mut().enumerate() {
        let expected = format!("client {i}");
        assert!(
            echoed_within(client, expected.as_bytes(), PATIENCE),
            "{layout}: client {i} of the {fits} that fit was not served"
        );
    }
    for (i, client) in waiting.iter_mut().enumerate() {
        let i = fits + i;
        let expected = format!("client {i}");
        assert!(
            !echoed_within(client, expected.as_bytes(), Duration::from_millis(100)),
            "{layout}: client {i} was served although only {fits} descriptors were free"
        );
    }

    // Once the served clients leave, the waiting ones are served, a few
    // at a time, under the same limit.
    drop(clients);
    let mut waiting: Vec<_> = waiting
        .into_iter()
        .enumerate()
        .map(|(i, client)| (fits + i, client))
        .collect();
    let deadline = Instant::now() + PATIENCE;
    while !waiting.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{layout}: clients {:?} never served",
            waiting.iter().map(|(i, _)| i).collect::<Vec<_>>()
        );
        let (i, mut client) = waiting.remove(0);
        let expected = format!("client {i}");
        if echoed_within(&mut client, expected.as_bytes(), Duration::from_millis(100)) {
            drop(client);
        } else {
            waiting.push((i, client));
        }
    }

    // Everyone has left: every descriptor a connection took is given
    // back, so the server is as it was before the limit was lowered...
    let deadline = Instant::now() + PATIENCE;
    while open_descriptors(pid).len() > open.len() {
        assert!(
            Instant::now() < deadline,
            "{layout}: {} descriptors open after every client left, {} before",
            open_descriptors(pid).len(),
            open.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...and serves normally: as many new clients at the same time as
    // fit, each echoed in full, by the same process as at the start.
    let mut fresh: Vec<_> = (0..fits).map(|_| server.connect()).collect();
    for (i, client) in fresh.iter_mut().enumerate() {
        let payload = random_bytes(1024 + i);
        assert!(
            round_trip(client, &payload) == payload,
            "{layout}: echo differs"
        );
    }
    drop(fresh);
    assert_eq!(
        start_time(pid),
        born,
        "{layout}: pid {pid} is no longer the server"
    );
    assert!(server.stop().success(), "{layout}: {}", server.stderr());
}

#[test]
fn max_connections_is_lowered_to_fit_the_descriptor_limit_and_the_rest_wait() {
    let mut command = common::tandem();
    command.args(["serve", "--listen", "127.0.0.1:0"]);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child
    // between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            rlimit::setrlimit(Resource::NOFILE, 64, 64)
        });
    }
    let mut server = TestServer::spawn(command);
    server.wait_for_log("--max-connections lowered to fit RLIMIT_NOFILE");
    let log = server.stderr();
    let lowered_to: usize = log
        .split("lowered_to=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no lowered_to in:\n{log}"));
    assert!(lowered_to > 0 && lowered_to < 64, "{lowered_to}");

    // More clients than fit: the extra ones wait in the backlog instead of
    // running the server out of descriptors. The backlog is first in,
    // first out, so the first `lowered_to` are the ones served: each must
    // echo, however long a loaded machine takes; the rest must not, and
    // for them a second of silence is enough to tell.
    let mut clients: Vec<_> = (0..lowered_to + 5).map(|_| server.connect()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        let message = format!("client {i}");
        client.write_all(message.as_bytes()).unwrap();
        let patience = if i < lowered_to {
            PATIENCE
        } else {
            Duration::from_secs(1)
        };
        assert_eq!(
            echoed_within(client, message.as_bytes(), patience),
            i < lowered_to,
            "client {i} of {} with {lowered_to} served at once",
            lowered_to + 5
        );
    }
    assert!(
        !server.stderr().contains("accept failed"),
        "{}",
        server.stderr()
    );
    drop(clients);
    assert!(server.stop().success());
}
