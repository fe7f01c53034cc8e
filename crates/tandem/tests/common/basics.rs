//! What every test harness shares, the binary's too (`tests/common` at the
//! root includes this file): how long a step may wait, and random payloads.

use std::time::Duration;

/// Longest any single step of a test may wait before it counts as a hang.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Random bytes.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    rand::fill(&mut bytes[..]);
    bytes
}
