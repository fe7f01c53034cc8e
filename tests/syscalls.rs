//! What an echoed message costs in system calls, counted by strace around
//! a real server: one read and one write.
//!
//! tokio's `try_read` clears a socket's readiness only when a read returns
//! `WouldBlock`, so a server built on it reads twice per message, the
//! second read returning EAGAIN. tandem reads through `poll_read`, which
//! clears the readiness after a read that does not fill its buffer (on
//! epoll a short read shows the socket drained): the next read waits for
//! the reactor's next event instead.
//!
//! Large messages cost no more calls: the read size grows while reads fill
//! their buffer, so a 16 KiB message, four pages, still takes one read.
//!
//! The client sends a message, waits for its echo, and pauses before the
//! next, so the server's socket is empty each time it could read again:
//! the count below is then what the server does with an empty socket, not
//! how the two processes happen to interleave. A read that found the next
//! message already waiting could only lower it.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{PATIENCE, TestServer, per_layout, round_trip};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const MESSAGES: u64 = 300;
const PAUSE: Duration = Duration::from_millis(2);

/// `tandem serve` in `layout` under `strace -f -c`, counting the server's
/// socket reads and writes into `summary`.
fn traced(layout: &str, summary: &Path) -> TestServer {
    let mut command: Command = common::external::command("strace");
    command
        .env_clear()
        .env("RUST_LOG", "info")
        .args(["-f", "-qq", "-c", "-e", "trace=recvfrom,sendto", "-o"])
        .arg(summary)
        .arg(env!("CARGO_BIN_EXE_tandem"))
        .args(["serve", "--listen", "127.0.0.1:0", "--layout", layout]);
    TestServer::spawn(command)
}

/// The calls of `syscall` in a `strace -c` summary.
fn calls(summary: &str, syscall: &str) -> u64 {
    summary
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // % time, seconds, usecs/call, calls, [errors,] syscall
            (fields.last() == Some(&syscall)).then(|| fields[3].parse().ok())?
        })
        .unwrap_or(0)
}

/// Stops the server strace runs (strace exits with it, writing its
/// summary) and returns the summary.
fn stop(mut server: TestServer, summary: &Path) -> String {
    let strace = server.pid();
    let children = std::fs::read_to_string(format!("/proc/{strace}/task/{strace}/children"))
        .unwrap_or_else(|err| panic!("strace's children: {err}"));
    let tandem: i32 = children
        .split_whitespace()
        .next()
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("strace runs no tandem: {children:?}"));
    kill(Pid::from_raw(tandem), Signal::SIGTERM).expect("signal tandem");
    assert!(server.wait().success(), "{}", server.stderr());
    std::fs::read_to_string(summary).expect("read strace's summary")
}

/// Echoes `MESSAGES` messages of `size` bytes through a traced server in
/// `layout`; checks that they cost one read and one write each.
fn one_read_and_one_write_per_message(layout: &str, size: usize) {
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary");
    let server = traced(layout, &summary);
    let mut client = server.connect();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    for n in 0..MESSAGES {
        let message = vec![n as u8; size];
        assert!(
            round_trip(&mut client, &message) == message,
            "{layout}: echo differs"
        );
        std::thread::sleep(PAUSE);
    }
    drop(client);
    let summary = stop(server, &summary);
    let (reads, writes) = (calls(&summary, "recvfrom"), calls(&summary, "sendto"));
    // One each per message, and a tenth more for the end of the stream (a
    // read that returns 0), the first large messages' extra reads while the
    // read size grows (three, from 4 to 32 KiB), and whatever else the
    // connection's end costs; two reads per message would be twice the
    // messages, and 4 KiB reads of 16 KiB messages four times.
    let most = MESSAGES + MESSAGES / 10;
    assert!(
        reads <= most && writes <= most,
        "{layout}, {size} B: {reads} reads and {writes} writes for {MESSAGES} messages:\n{summary}"
    );
    assert!(
        reads >= MESSAGES && writes >= MESSAGES,
        "{layout}:\n{summary}"
    );
}

per_layout!(an_echoed_message_costs_one_read_and_one_write_in_every_layout);
fn an_echoed_message_costs_one_read_and_one_write_in_every_layout(layout: &str) {
    one_read_and_one_write_per_message(layout, 64);
}

#[test]
fn a_16_kib_message_costs_one_read_and_one_write_too() {
    one_read_and_one_write_per_message("split", 16 * 1024);
}
