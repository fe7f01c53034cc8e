//! Clients that stream: each writes random slices of a shared pool until
//! told to stop, then half-closes, while a second thread reads the echo to
//! the server's FIN; both sides count and hash what they moved, so that a
//! test can check every byte came back.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::{self, JoinHandle};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use sha2::{Digest, Sha256};

/// Random bytes that the clients send windows of: every write is a fresh
/// random slice, without generating bytes one by one in an unoptimised
/// test binary.
pub const POOL_LEN: usize = 1024 * 1024;
/// Largest single write.
pub const MAX_WRITE: usize = 32 * 1024;

/// A pool of random bytes for streamers to send slices of.
fn random_pool() -> Arc<Vec<u8>> {
    let mut pool = vec![0u8; POOL_LEN];
    rand::fill(&mut pool[..]);
    Arc::new(pool)
}

/// What the clients share: when to start and stop, and how far the echo
/// has got.
#[derive(Default)]
pub struct Progress {
    /// Clients that have had at least one byte back.
    pub echoing: AtomicUsize,
    /// The most bytes any one client has had back.
    pub most_echoed: AtomicU64,
    /// Tells the writers to half-close.
    pub stop: AtomicBool,
}

/// Bytes moved one way, and their SHA-256.
#[derive(Debug, PartialEq, Eq)]
pub struct Tally {
    pub bytes: u64,
    pub sha256: Vec<u8>,
}

/// One streaming client: a thread that writes until told to stop, then
/// half-closes, and a thread that reads the echo until the server's FIN.
pub struct Streamer {
    pub writer: JoinHandle<io::Result<Tally>>,
    pub reader: JoinHandle<io::Result<Tally>>,
}

/// `count` streaming clients on the connections `connect` opens, every one
/// connected before any starts streaming, so that they start even; and
/// the progress they share.
pub fn stream_together(
    count: usize,
    mut connect: impl FnMut() -> TcpStream,
) -> (Vec<Streamer>, Arc<Progress>) {
    let pool = random_pool();
    let progress = Arc::new(Progress::default());
    let start = Arc::new(Barrier::new(count + 1));
    let streamers = (0..count)
        .map(|_| Streamer::start(connect(), pool.clone(), start.clone(), progress.clone()))
        .collect();
    start.wait();
    (streamers, progress)
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
