//! Case 12, the soak: a minute of mixed load per layout, with the server's
//! resident memory and open descriptors sampled every second. After the
//! warm-up neither grows, and once the load stops every connection is
//! gone, in the server's count and in its descriptor table.
//!
//! Too long for every CI run, so it is ignored by default. Run it with
//!
//! ```sh
//! cargo test --release --test reliability soak -- --ignored --nocapture
//! ```
//!
//! `TANDEM_SOAK_SECS` changes the length (default 60).
//!
//! The load, all at once: `tandem bench` closed loop (50 connections, every
//! byte checked), `tandem bench --churn` (a new connection per request) and
//! a thread that opens connections, sends, and resets them (SO_LINGER 0)
//! mid-echo.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::common::admin::scrape_until;
use crate::common::process::{open_descriptors, rss_bytes};
use crate::common::{TestServer, per_layout};

/// Warm-up: allocator pools, runtime queues and buffer caches reach their
/// working size in the first seconds; growth is judged after it.
const WARMUP: Duration = Duration::from_secs(10);
/// What the last quarter's memory may exceed the first quarter's by after
/// the warm-up: allocator noise, not a leak, which grows with every
/// connection and every second.
const RSS_SLACK: u64 = 4 * 1024 * 1024;

fn soak_length() -> Duration {
    let secs = std::env::var("TANDEM_SOAK_SECS")
        .ok()
        .and_then(|secs| secs.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// `tandem bench` against `server` for `secs`, with `args`.
fn bench(server: &TestServer, secs: u64, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_tandem"))
        .env_clear()
        .args(["bench", "--target", &server.addr.to_string()])
        .args(["--duration", &format!("{secs}s"), "--warmup", "0s"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tandem bench")
}

/// Opens connections, sends 64 KiB on each (so echo is in flight) and
/// resets it, until `stop`; returns how many it reset.
fn resetter(server: std::net::SocketAddr, stop: Arc<AtomicBool>, resets: Arc<AtomicU64>) {
    let payload = vec![0x5a; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = TcpStream::connect(server) else {
            // Not a busy loop if the server stops answering.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let _ = stream.write_all(&payload);
        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        drop(stream);
        resets.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}

// In turn: each layout's minute of load has the machine to itself, so that
// what its samples show is its own server's growth.
per_layout!(
    #[ignore = "a minute per layout: run by hand (see the module docs)"]
    soak_under_mixed_load_leaves_no_growth_in_memory_or_descriptors,
    in_turn
);
fn soak_under_mixed_load_leaves_no_growth_in_memory_or_descriptors(layout: &str) {
    let length = soak_length();
    let mut server = TestServer::start_with_admin(&["--layout", layout]);
    let pid = server.pid();
    let idle_descriptors = open_descriptors(pid).len();

    let secs = length.as_secs();
    let closed = bench(&server, secs, &["--connections", "50"]);
    let churn = bench(&server, secs, &["--churn", "--connections", "4"]);
    let stop = Arc::new(AtomicBool::new(false));
    let resets = Arc::new(AtomicU64::new(0));
    let reset_thread = {
        let (addr, stop, resets) = (server.addr, stop.clone(), resets.clone());
        std::thread::spawn(move || resetter(addr, stop, resets))
    };

    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < length {
        std::thread::sleep(Duration::from_secs(1));
        samples.push((
            started.elapsed(),
            rss_bytes(pid),
            open_descriptors(pid).len(),
        ));
    }
    stop.store(true, Ordering::Relaxed);
    reset_thread.join().unwrap();
    for (name, child) in [("closed loop", closed), ("churn", churn)] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{layout}: bench {name} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let measured: Vec<_> = samples.iter().filter(|(at, _, _)| *at >= WARMUP).collect();
    assert!(measured.len() >= 8, "{layout}: too short a soak to judge");
    let quarter = measured.len() / 4;
    let rss = |part: &[&(Duration, u64, usize)]| median(part.iter().map(|s| s.1).collect());
    let fds = |part: &[&(Duration, u64, usize)]| median(part.iter().map(|s| s.2 as u64).collect());
    let (first, last) = (
        &measured[..quarter.max(1)],
        &measured[measured.len() - quarter.max(1)..],
    );
    let (rss_first, rss_last) = (rss(first), rss(last));
    let (fds_first, fds_last) = (fds(first), fds(last));
    println!(
        "{layout}: RSS after warm-up {:.1} MiB, at the end {:.1} MiB; descriptors {fds_first} -> {fds_last}; \
         {} resets; peak RSS {:.1} MiB",
        rss_first as f64 / 1048576.0,
        rss_last as f64 / 1048576.0,
        resets.load(Ordering::Relaxed),
        samples.iter().map(|s| s.1).max().unwrap_or(0) as f64 / 1048576.0,
    );
    assert!(
        rss_last <= rss_first + RSS_SLACK,
        "{layout}: RSS grew from {rss_first} to {rss_last} bytes under steady load"
    );
    // The load holds about 55 connections at any moment; churn and
    // resets come and go. A leak of descriptors would climb steadily.
    assert!(
        fds_last <= fds_first + 20,
        "{layout}: descriptors grew from {fds_first} to {fds_last} under steady load"
    );

    // Load over: every connection gone.
    scrape_until(server.admin_addr(), &[("tandem_connections_active", 0.0)]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_descriptors(pid).len() > idle_descriptors && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        open_descriptors(pid).len(),
        idle_descriptors,
        "{layout}: descriptors left open after the load"
    );
    assert!(!server.stderr().contains("panicked"), "{layout}");
    assert!(server.stop().success(), "{layout}");
}
