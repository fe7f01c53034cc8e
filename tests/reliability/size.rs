//! Case 6, size: a long stream is echoed byte-exact. 256 MiB of
//! pseudo-random bytes go through one connection, in every layout, and the
//! SHA-256 of what comes back equals the SHA-256 of what was sent, byte
//! count included. Nothing is kept in memory but the two running hashes.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

use crate::common::{TestServer, per_layout};

/// The length of the stream: far beyond every buffer on the way (socket
/// buffers, the server's 4 KiB chunks), so the stream wraps every counter
/// and reuses every buffer many thousands of times.
const STREAM_LEN: u64 = 256 * 1024 * 1024;

/// Bytes generated, written and hashed at a time.
const CHUNK: usize = 64 * 1024;

per_layout!(a_256_mib_random_stream_comes_back_byte_exact);
fn a_256_mib_random_stream_comes_back_byte_exact(layout: &str) {
    let mut server = TestServer::start(&["--layout", layout]);
    let mut reader = server.connect();
    let mut writer = reader.try_clone().unwrap();

    // The writer runs on a thread of its own while this one reads:
    // a client that wrote 256 MiB before reading would stall as soon as
    // the echo filled the socket buffers.
    let sender = thread::spawn(move || {
        // A fast generator seeded afresh each run: the test binary is
        // unoptimised, and a cryptographic generator would dominate the
        // run time.
        let mut rng = SmallRng::seed_from_u64(rand::random());
        let mut chunk = vec![0u8; CHUNK];
        let mut hash = Sha256::new();
        let mut sent = 0u64;
        while sent < STREAM_LEN {
            rng.fill_bytes(&mut chunk);
            writer.write_all(&chunk).expect("write");
            hash.update(&chunk);
            sent += CHUNK as u64;
        }
        // The half-close asks for everything back, then the server's FIN.
        writer.shutdown(Shutdown::Write).unwrap();
        (sent, hash.finalize())
    });

    let mut chunk = vec![0u8; CHUNK];
    let mut hash = Sha256::new();
    let mut received = 0u64;
    loop {
        let n = reader
            .read(&mut chunk)
            .unwrap_or_else(|err| panic!("{layout}: read after {received} bytes: {err}"));
        if n == 0 {
            break;
        }
        hash.update(&chunk[..n]);
        received += n as u64;
    }
    let (sent, sent_hash) = sender.join().expect("sender");

    assert_eq!(sent, STREAM_LEN);
    assert_eq!(
        received, sent,
        "{layout}: {received} bytes came back of {sent} sent"
    );
    assert_eq!(
        hash.finalize(),
        sent_hash,
        "{layout}: the echo has the right length but different bytes"
    );
    assert!(server.stop().success(), "{layout}");
}
