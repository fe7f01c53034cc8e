//! Case 5, shutdown under load. SIGTERM arrives while 100 clients stream.
//! New connects are refused at once, but the live connections are served to
//! their end: every client keeps streaming for a while, half-closes, and
//! gets back every byte it sent (same count, same SHA-256), then the
//! server's FIN. All 100 are drained, none cut, and the exit status is 0.
//!
//! "While 100 clients stream" is checked too: before the signal every
//! client has had echo back, and none may have had 128 MiB back while
//! another has had nothing (a server whose busy connections keep their
//! worker thread starves the rest).

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use sha2::{Digest, Sha256};

use crate::common::{LAYOUTS, PATIENCE, TestServer};

const CLIENTS: usize = 100;
/// How long the clients keep streaming after the signal: the server is
/// shutting down, and still serving them.
const AFTER_SIGNAL: Duration = Duration::from_millis(400);
/// Printed once the listener is closed and the acceptor runtime is gone.
const ACCEPTOR_GONE: &str = "stopped accepting and shut the acceptor runtime down";

/// Random bytes that the clients send windows of: every write is a fresh
/// random slice, without generating bytes one by one in an unoptimised
/// test binary.
const POOL_LEN: usize = 1024 * 1024;
/// Largest single write.
const MAX_WRITE: usize = 32 * 1024;

/// Most echo one client may get before every client has had some: a
/// server that lets one busy connection keep a worker thread starves the
/// others, which then never stream at all.
const STARVATION: u64 = 128 * 1024 * 1024;

/// What the clients share: when to start and stop, and how far the echo
/// has got.
#[derive(Default)]
struct Progress {
    /// Clients that have had at least one byte back.
    echoing: AtomicUsize,
    /// The most bytes any one client has had back.
    most_echoed: AtomicU64,
    /// Tells the writers to half-close.
    stop: AtomicBool,
}

/// Bytes moved one way, and their SHA-256.
#[derive(Debug, PartialEq, Eq)]
struct Tally {
    bytes: u64,
    sha256: Vec<u8>,
}

/// One streaming client: a thread that writes until told to stop, then
/// half-closes, and a thread that reads the echo until the server's FIN.
struct Streamer {
    writer: JoinHandle<io::Result<Tally>>,
    reader: JoinHandle<io::Result<Tally>>,
}

impl Streamer {
    fn start(
        stream: TcpStream,
        pool: Arc<Vec<u8>>,
        start: Arc<Barrier>,
        progress: Arc<Progress>,
    ) -> Streamer {
        let mut writer = stream.try_clone().unwrap();
        let shared = progress.clone();
        let writer = thread::spawn(move || {
            let mut rng = SmallRng::seed_from_u64(rand::random());
            let mut hash = Sha256::new();
            let mut bytes = 0u64;
            start.wait();
            while !shared.stop.load(Ordering::Relaxed) {
                let len = rng.random_range(1..=MAX_WRITE);
                let offset = rng.random_range(0..=POOL_LEN - len);
                let chunk = &pool[offset..offset + len];
                writer.write_all(chunk)?;
                hash.update(chunk);
                bytes += len as u64;
            }
            // Done: everything owed comes back, then the server's FIN.
            writer.shutdown(Shutdown::Write)?;
            Ok(Tally {
                bytes,
                sha256: hash.finalize().to_vec(),
            })
        });
        let mut reader = stream;
        let reader = thread::spawn(move || {
            let mut chunk = vec![0u8; 64 * 1024];
            let mut hash = Sha256::new();
            let mut bytes = 0u64;
            loop {
                let n = reader.read(&mut chunk)?;
                if n == 0 {
                    break;
                }
                if bytes == 0 {
                    progress.echoing.fetch_add(1, Ordering::Relaxed);
                }
                hash.update(&chunk[..n]);
                bytes += n as u64;
                progress.most_echoed.fetch_max(bytes, Ordering::Relaxed);
            }
            Ok(Tally {
                bytes,
                sha256: hash.finalize().to_vec(),
            })
        });
        Streamer { writer, reader }
    }
}

#[test]
fn sigterm_while_100_clients_stream_returns_every_byte_and_exits_0() {
    let mut pool = vec![0u8; POOL_LEN];
    rand::fill(&mut pool[..]);
    let pool = Arc::new(pool);
    for layout in LAYOUTS {
        let mut server = TestServer::start(&["--layout", layout]);
        // Every client is connected before any starts streaming, so that
        // they start even.
        let progress = Arc::new(Progress::default());
        let start = Arc::new(Barrier::new(CLIENTS + 1));
        let streamers: Vec<_> = (0..CLIENTS)
            .map(|_| {
                Streamer::start(
                    server.connect(),
                    pool.clone(),
                    start.clone(),
                    progress.clone(),
                )
            })
            .collect();
        start.wait();

        // Mid-stream: every client has had echo back and is still sending.
        // A server that let busy connections keep their worker thread would
        // starve the others here, before the signal.
        let deadline = Instant::now() + PATIENCE;
        loop {
            let echoing = progress.echoing.load(Ordering::Relaxed);
            if echoing == CLIENTS {
                break;
            }
            let most = progress.most_echoed.load(Ordering::Relaxed);
            assert!(
                most < STARVATION,
                "{layout}: a client had {} MiB back while {} of {CLIENTS} clients \
                 had not had a byte: busy connections starve the others",
                most >> 20,
                CLIENTS - echoing,
            );
            assert!(
                Instant::now() < deadline,
                "{layout}: after {PATIENCE:?} of streaming, only {echoing} of {CLIENTS} \
                 clients had any echo back"
            );
            thread::sleep(Duration::from_millis(1));
        }

        server.signal(Signal::SIGTERM);
        let signalled = Instant::now();
        // The listener closes at once: a new client is refused, not queued
        // behind the drain.
        server.wait_for_log(ACCEPTOR_GONE);
        let refused = TcpStream::connect(server.addr).expect_err("a connect after SIGTERM");
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{layout}");

        // The live clients go on streaming into the shutdown, then stop.
        thread::sleep(AFTER_SIGNAL.saturating_sub(signalled.elapsed()));
        progress.stop.store(true, Ordering::Relaxed);

        for (i, streamer) in streamers.into_iter().enumerate() {
            let sent = streamer
                .writer
                .join()
                .unwrap()
                .unwrap_or_else(|err| panic!("{layout}: client {i} could not send: {err}"));
            let echoed = streamer
                .reader
                .join()
                .unwrap()
                .unwrap_or_else(|err| panic!("{layout}: client {i} could not read: {err}"));
            assert_eq!(
                echoed.bytes, sent.bytes,
                "{layout}: client {i} got {} bytes back of {} sent",
                echoed.bytes, sent.bytes
            );
            assert_eq!(
                echoed, sent,
                "{layout}: client {i} got as many bytes back as it sent, but different ones"
            );
        }

        let status = server.wait();
        assert!(status.success(), "{layout}: {status:?}");
        let log = server.stderr();
        assert!(
            log.contains(&format!("live={CLIENTS} drained={CLIENTS} cut=0")),
            "{layout}: {log}"
        );
    }
}
