//! Free mapped buffers (those above 128 KiB), kept for a moment and then
//! given back to the system.
//!
//! A connection streaming at a large `--buffer-size` reads chunk after
//! chunk of the same size: kept, its buffer is lent again for the next one,
//! instead of being mapped, faulted in page by page and unmapped for each.
//! A buffer unused for [`KEEP_FOR`] is unmapped at the next trim (once a
//! second, with the metrics' upkeep), so memory goes back to the system
//! soon after the clients leave. One list for the process, unlike the
//! per-thread caches of small buffers: a mapped buffer goes back to the
//! system from whichever thread unmaps it, so any thread may reuse it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use memmap2::MmapMut;

use super::budget::GLOBAL;

/// How long a free mapped buffer is kept unused.
pub(super) const KEEP_FOR: Duration = Duration::from_secs(1);

/// Bytes of free mapped buffers kept at most: an eighth of the budget, and
/// never more than 64 MiB.
const KEPT_AT_MOST: usize = 64 * 1024 * 1024;

/// A free buffer and when it was given back.
struct Kept {
    map: MmapMut,
    since: Instant,
}

static KEPT: Mutex<Vec<Kept>> = Mutex::new(Vec::new());
/// The bytes of [`KEPT`], for the metrics.
static KEPT_BYTES: AtomicUsize = AtomicUsize::new(0);

fn kept() -> std::sync::MutexGuard<'static, Vec<Kept>> {
    KEPT.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A kept buffer of exactly `len` bytes, the latest given back first. Its
/// bytes are already the budget's.
pub(super) fn take(len: usize) -> Option<MmapMut> {
    let mut kept = kept();
    let found = kept.iter().rposition(|free| free.map.len() == len)?;
    let free = kept.swap_remove(found);
    KEPT_BYTES.fetch_sub(len, Ordering::Relaxed);
    Some(free.map)
}

/// Keeps `map` if there is room and no lease waits for the budget;
/// otherwise gives it back, to be unmapped.
pub(super) fn keep(map: MmapMut) -> Option<MmapMut> {
    let room = (GLOBAL.limit() / 8).min(KEPT_AT_MOST);
    if GLOBAL.is_waiting() || KEPT_BYTES.load(Ordering::Relaxed) + map.len() > room {
        return Some(map);
    }
    KEPT_BYTES.fetch_add(map.len(), Ordering::Relaxed);
    kept().push(Kept {
        map,
        since: Instant::now(),
    });
    None
}

/// Unmaps the kept buffers unused for `unused` or longer, and gives their
/// bytes back to the budget.
pub(super) fn trim(unused: Duration) {
    let gone: Vec<MmapMut> = {
        let mut kept = kept();
        let (old, fresh): (Vec<Kept>, Vec<Kept>) = kept
            .drain(..)
            .partition(|free| free.since.elapsed() >= unused);
        *kept = fresh;
        old.into_iter().map(|free| free.map).collect()
    };
    for map in gone {
        KEPT_BYTES.fetch_sub(map.len(), Ordering::Relaxed);
        let len = map.len();
        drop(map);
        GLOBAL.give_back(len);
    }
}

/// Bytes of free mapped buffers kept now.
pub(super) fn bytes() -> usize {
    KEPT_BYTES.load(Ordering::Relaxed)
}
