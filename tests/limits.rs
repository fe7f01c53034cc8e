//! Backpressure (invariant 2) and accept errors (invariant 3): limits hold
//! connections in the kernel's backlog, and running out of descriptors
//! pauses the listener without exiting or spinning.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{LAYOUTS, PATIENCE, TestServer, round_trip};
use rlimit::Resource;

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

#[test]
fn a_fifth_client_waits_until_one_of_four_closes() {
    for layout in LAYOUTS {
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
}

/// CPU time (user + system) the process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// The descriptor numbers the process has open.
fn open_descriptors(pid: u32) -> Vec<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|entry| {
            entry
                .unwrap()
                .file_name()
                .to_string_lossy()
                .parse()
                .unwrap()
        })
        .collect()
}

#[test]
fn descriptor_exhaustion_pauses_accepting_without_spinning_and_recovers() {
    for layout in LAYOUTS {
        let mut server = TestServer::start(&["--layout", layout]);
        let pid = server.pid();
        // Leave room for exactly three connections. The server fitted
        // --max-connections to the limit it started with; lowering the limit
        // under it is how descriptors run out in production too (other
        // files, other sockets).
        let open = open_descriptors(pid);
        let limit = open.len() as u64 + 3;
        rlimit::prlimit(pid as i32, Resource::NOFILE, Some((limit, limit)), None).unwrap();
        // New descriptors take free numbers below the limit; inherited ones
        // above it (a jobserver pipe, say) leave more room.
        let fits = limit - open.iter().filter(|&&fd| fd < limit).count() as u64;

        let mut clients: Vec<_> = (0..8)
            .map(|i| {
                let mut client = server.connect();
                client.write_all(format!("client {i}").as_bytes()).unwrap();
                client
            })
            .collect();
        server.wait_for_log("accept failed; pausing the listener");
        assert!(server.stderr().contains("emfile"), "{}", server.stderr());

        // Paused, not spinning: a retry loop without backoff burns a core.
        let before = cpu_time(pid);
        std::thread::sleep(Duration::from_secs(2));
        let used = cpu_time(pid) - before;
        assert!(
            used < Duration::from_millis(500),
            "{layout}: {used:?} of CPU in 2 s while out of descriptors"
        );
        // Rate-limited: about one warning per second, not one per retry.
        let warnings = server.stderr().matches("pausing the listener").count();
        assert!(warnings <= 5, "{layout}: {warnings} warnings in ~2 s");

        // Which clients got in? Exactly the ones that fit.
        let mut waiting = Vec::new();
        let mut served = Vec::new();
        for (i, mut client) in clients.drain(..).enumerate() {
            let expected = format!("client {i}");
            if echoed_within(&mut client, expected.as_bytes(), Duration::from_millis(200)) {
                served.push(client);
            } else {
                waiting.push((i, client));
            }
        }
        assert_eq!(served.len() as u64, fits, "{layout}");

        // Once the served clients leave, the waiting ones are served, a few at
        // a time, under the same limit.
        drop(served);
        let deadline = Instant::now() + PATIENCE;
        while !waiting.is_empty() {
            assert!(
                Instant::now() < deadline,
                "{layout}: waiting clients never served"
            );
            let (i, mut client) = waiting.remove(0);
            let expected = format!("client {i}");
            if echoed_within(&mut client, expected.as_bytes(), Duration::from_millis(100)) {
                drop(client);
            } else {
                waiting.push((i, client));
            }
        }
        assert!(server.stop().success(), "{layout}");
    }
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
    // running the server out of descriptors.
    let mut clients: Vec<_> = (0..lowered_to + 5).map(|_| server.connect()).collect();
    let mut served = 0;
    for (i, client) in clients.iter_mut().enumerate() {
        let message = format!("client {i}");
        client.write_all(message.as_bytes()).unwrap();
        if echoed_within(client, message.as_bytes(), Duration::from_millis(300)) {
            served += 1;
        }
    }
    assert_eq!(served, lowered_to);
    assert!(
        !server.stderr().contains("accept failed"),
        "{}",
        server.stderr()
    );
    drop(clients);
    assert!(server.stop().success());
}
