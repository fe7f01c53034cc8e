//! Whether the OS will start a runtime's threads, asked before tokio is.
//!
//! tokio's multi-thread builder panics when it cannot spawn a worker
//! thread (under RLIMIT_NPROC, a cgroup's `pids.max` such as systemd's
//! `TasksMax`, or an address-space limit), and while that panic unwinds,
//! dropping the half-built runtime waits for the workers already started,
//! which never stop: the process hangs with its listener bound. So before a
//! multi-thread runtime is built, as many threads as it will start are
//! started here, all alive at once, and then released; if one cannot be,
//! the server fails with the OS's reason instead. Another process of the
//! same user could take the room in between; the check makes the common
//! case (a limit the server does not fit in) fail cleanly.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long the checking threads may take to be released by the kernel.
const RELEASE_PATIENCE: Duration = Duration::from_secs(1);

/// Starts `threads` threads that wait until all are started (or one could
/// not be), then lets them end and joins them; the OS's reason if one could
/// not start. `role` names the threads.
pub(crate) fn ensure_available(threads: usize, role: &str) -> std::io::Result<()> {
    let release = Arc::new((Mutex::new(false), Condvar::new()));
    // Each checking thread's id, to see the kernel let it go.
    let ids = Arc::new(Mutex::new(Vec::with_capacity(threads)));
    let mut started = Vec::with_capacity(threads);
    let mut refused = None;
    for _ in 0..threads {
        let (release, ids) = (release.clone(), ids.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("{role}-check"))
            .spawn(move || {
                // SAFETY: gettid has no preconditions.
                let id = unsafe { libc::gettid() };
                ids.lock().unwrap_or_else(PoisonError::into_inner).push(id);
                let (released, wake) = &*release;
                let mut released = released.lock().unwrap_or_else(PoisonError::into_inner);
                while !*released {
                    released = wake.wait(released).unwrap_or_else(PoisonError::into_inner);
                }
            });
        match spawned {
            Ok(thread) => started.push(thread),
            Err(cause) => {
                refused = Some(cause);
                break;
            }
        }
    }
    let (released, wake) = &*release;
    *released.lock().unwrap_or_else(PoisonError::into_inner) = true;
    wake.notify_all();
    for thread in started {
        let _ = thread.join();
    }
    // A joined thread may still count against the limit for a moment: the
    // kernel releases it after the join returns. The room is the runtime's
    // only once each is gone from /proc.
    let deadline = Instant::now() + RELEASE_PATIENCE;
    for id in ids.lock().unwrap_or_else(PoisonError::into_inner).iter() {
        let task = format!("/proc/self/task/{id}");
        while std::path::Path::new(&task).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    match refused {
        None => Ok(()),
        Some(cause) => Err(cause),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_the_os_gives_are_started_and_all_end() {
        ensure_available(8, "tandem-test").unwrap();
        // Every checking thread has been joined: none is left named so.
        let task_names: Vec<String> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .collect();
        assert!(
            !task_names
                .iter()
                .any(|name| name.starts_with("tandem-test")),
            "{task_names:?}"
        );
    }
}
