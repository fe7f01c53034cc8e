//! The connection limit, reconciled with the file-descriptor limit.
//!
//! Each connection costs one descriptor. Admitting more connections than
//! RLIMIT_NOFILE allows would turn the limit into a stream of EMFILE errors
//! at accept time; lowering `--max-connections` up front keeps the excess
//! waiting in the listen backlog instead, where backpressure belongs.

use tracing::warn;

/// Descriptors kept free for everything that is not a connection: the
/// listener, the admin endpoint, log files, and runtimes started later.
const FD_HEADROOM: u64 = 32;

/// Raises the soft RLIMIT_NOFILE to the hard limit (as Go's runtime and most
/// servers do) and returns how many connections fit in it, at most
/// `requested`. Warns when that is fewer than requested.
pub(crate) fn fit_connection_limit(requested: usize) -> usize {
    let soft = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(soft) => soft,
        Err(err) => {
            warn!(cause = %err, "cannot read RLIMIT_NOFILE; keeping --max-connections as given");
            return requested;
        }
    };
    let open = open_descriptors();
    let fits = soft.saturating_sub(open).saturating_sub(FD_HEADROOM).max(1);
    let fits = usize::try_from(fits).unwrap_or(usize::MAX);
    if fits < requested {
        warn!(
            requested,
            lowered_to = fits,
            rlimit_nofile = soft,
            open_descriptors = open,
            "--max-connections lowered to fit RLIMIT_NOFILE"
        );
        return fits;
    }
    requested
}

/// Descriptors this process has open now; 0 where /proc is not available.
fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count() as u64)
}
