//! Case 13, the buffer budget: clients that stream as fast as they can,
//! at the largest `--buffer-size`, in every layout. The server's resident
//! memory grows by no more than `--buffer-memory` and a margin, every byte
//! comes back, and once the clients leave the memory goes back to the
//! system: resident memory returns near where it started.
//!
//! A read that finds no room waits for it, and the wait is the server's:
//! the idle rule leaves that connection alone, however long it lasts
//! (`crates/tandem/tests/budget.rs`, where the test spends the budget
//! itself).
//!
//! Without the budget, reads of up to 16 MiB each, lent on one worker
//! thread and freed on another, grew a server to hundreds of MiB with four
//! such clients, and it kept them with none.

use std::sync::atomic::Ordering;

use std::thread;
use std::time::{Duration, Instant};

use crate::common::admin::scrape;
use crate::common::process::rss_bytes;
use crate::common::streamer::stream_together;
use crate::common::{TestServer, per_layout};

/// The budget under test: small, so that eight clients at 16 MiB reads
/// would spend it many times over.
const BUDGET: u64 = 8 * 1024 * 1024;
/// What the server may grow by beyond the budget while the clients stream:
/// each connection's task, socket record and hand-off (a few KiB), the
/// threads' stacks as they deepen, the metrics, and the allocator's own
/// rounding. Small beside what the clients could make it lend: 8 x 16 MiB.
const MARGIN: u64 = 16 * 1024 * 1024;
/// Where resident memory must come back to once the clients have gone:
/// within this of where it started, the caches of free buffers (256 KiB a
/// thread at most) and the allocator's retained pages included.
const SETTLED: u64 = 6 * 1024 * 1024;
const CLIENTS: usize = 8;
/// How long the clients stream: long enough for every connection's reads
/// to grow to their largest.
const STREAMING: Duration = Duration::from_secs(3);
/// How long the memory may take to go back after the clients leave.
const SETTLE_WITHIN: Duration = Duration::from_secs(10);

per_layout!(streaming_clients_stay_within_the_buffer_budget_and_the_memory_goes_back);
fn streaming_clients_stay_within_the_buffer_budget_and_the_memory_goes_back(layout: &str) {
    let server = TestServer::start_with_admin(&[
        "--layout",
        layout,
        "--buffer-size",
        "16777216",
        "--buffer-memory",
        &BUDGET.to_string(),
    ]);
    let pid = server.pid();
    let before = rss_bytes(pid);
    let (streamers, progress) = stream_together(CLIENTS, || server.connect());
    // Sampled while they stream: the peak is what the budget bounds.
    let mut peak = 0;
    let streamed_until = Instant::now() + STREAMING;
    while Instant::now() < streamed_until {
        peak = peak.max(rss_bytes(pid));
        let buffers = scrape(server.admin_addr());
        let held = buffers
            .get(r#"tandem_buffer_memory_bytes{state="lent"}"#)
            .unwrap_or_default()
            + buffers
                .get(r#"tandem_buffer_memory_bytes{state="free"}"#)
                .unwrap_or_default();
        // Read apart from each other, the two may be a buffer apart.
        assert!(
            held <= (BUDGET + BUDGET / 2) as f64,
            "{layout}: buffers hold {held} bytes of a {BUDGET}-byte budget"
        );
        thread::sleep(Duration::from_millis(50));
    }
    progress.stop.store(true, Ordering::Relaxed);
    for (client, streamer) in streamers.into_iter().enumerate() {
        let sent = streamer.writer.join().unwrap().unwrap();
        let echoed = streamer.reader.join().unwrap().unwrap();
        assert_eq!(sent, echoed, "{layout}: client {client}'s echo differs");
    }
    assert!(
        peak <= before + BUDGET + MARGIN,
        "{layout}: resident memory grew from {} to {} MiB with a {} MiB budget",
        before >> 20,
        peak >> 20,
        BUDGET >> 20
    );
    let settle_by = Instant::now() + SETTLE_WITHIN;
    let settled = loop {
        let now = rss_bytes(pid);
        if now <= before + SETTLED || Instant::now() >= settle_by {
            break now;
        }
        thread::sleep(Duration::from_millis(100));
    };
    assert!(
        settled <= before + SETTLED,
        "{layout}: {} MiB resident {SETTLE_WITHIN:?} after the clients left, {} MiB before they came",
        settled >> 20,
        before >> 20
    );
    let buffers = scrape(server.admin_addr());
    assert_eq!(
        buffers.get("tandem_buffer_memory_limit_bytes"),
        Some(BUDGET as f64)
    );
    assert_eq!(
        buffers.get(r#"tandem_buffer_memory_bytes{state="lent"}"#),
        Some(0.0),
        "{layout}: no connection is left, so no buffer is lent"
    );
    drop(server);
}
