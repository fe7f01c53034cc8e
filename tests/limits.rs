//! Start-up under an operator's limits: a server that cannot start its
//! threads (RLIMIT_NPROC here, as a cgroup's `TasksMax` would) fails at
//! once with exit 1 and a message naming the runtime and the OS's reason,
//! in every layout, instead of hanging with its listener bound.
//!
//! Runs tandem under a uid of its own that no account uses (one per test,
//! since the limit counts every process of the uid), under `prlimit
//! --nproc`, through `setpriv`: it needs root, as tests/udp.rs does.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use common::{PATIENCE, Proc, external, per_layout};

/// A copy of the tandem binary that any uid may run: the build's own may
/// sit below a folder only root may enter.
fn binary_for_anyone() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = dir.path().join("tandem");
    std::fs::copy(env!("CARGO_BIN_EXE_tandem"), &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, binary)
}

/// `tandem serve` with `args` as `uid` (and as many a gid), allowed
/// `threads` threads in all.
fn serve_as_with_threads(
    uid: u32,
    binary: &PathBuf,
    threads: u32,
    args: &[&str],
) -> common::Finished {
    let prlimit = external::require("prlimit");
    let mut command = external::command("setpriv");
    command
        .env_clear()
        .env("RUST_LOG", "info")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg(prlimit)
        .arg(format!("--nproc={threads}"))
        .arg(binary)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args);
    // The patience only tells a hang, the failure this guards against,
    // from a slow start.
    Proc::spawn(command).finish_within(PATIENCE)
}

/// Asserts that `out` is a clean failed start: exit 1, a message that
/// begins to name the runtime with `named`, and no panic. `case` labels
/// the failures.
fn assert_failed_to_start(out: &common::Finished, named: &str, case: &str) {
    assert_eq!(out.status.code(), Some(1), "{case}: {}", out.stderr);
    assert!(
        out.stderr.contains(&format!("cannot start the {named}")),
        "{case}: {}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{case}: {}", out.stderr);
}

// In turn: every layout runs as uid 61001, whose thread limit counts the
// threads of all its processes: two layouts at once would share it.
per_layout!(
    a_runtime_whose_threads_the_os_refuses_fails_the_start_cleanly_in_every_layout,
    in_turn
);
fn a_runtime_whose_threads_the_os_refuses_fails_the_start_cleanly_in_every_layout(layout: &str) {
    let (_dir, binary) = binary_for_anyone();
    let out = serve_as_with_threads(61_001, &binary, 6, &["--workers", "32", "--layout", layout]);
    assert_failed_to_start(&out, "tandem-", layout);
    assert!(out.stderr.contains("os error"), "{layout}: {}", out.stderr);
    assert!(
        out.stdout.is_empty(),
        "{layout}: never listening: {}",
        out.stdout
    );
}

#[test]
fn an_admin_runtime_whose_thread_the_os_refuses_fails_the_start_cleanly() {
    let (_dir, binary) = binary_for_anyone();
    // The main thread, the signal thread and one worker: no room for the
    // admin runtime's thread.
    let out = serve_as_with_threads(
        61_002,
        &binary,
        3,
        &[
            "--workers",
            "1",
            "--layout",
            "single",
            "--admin-listen",
            "127.0.0.1:0",
        ],
    );
    assert_failed_to_start(&out, "tandem-admin runtime", "admin");
}

#[test]
fn a_compute_runtime_whose_threads_the_os_refuses_fails_the_start_cleanly() {
    let (_dir, binary) = binary_for_anyone();
    // The main thread and the signal thread, and room for one more: the
    // compute runtime's 32 threads cannot start, nor can the blocking
    // pool's, which would start them only as work came, too late to fail.
    for via in ["runtime", "spawn-blocking"] {
        let out = serve_as_with_threads(
            61_003,
            &binary,
            3,
            &["--compute-threads", "32", "--compute-via", via],
        );
        assert_failed_to_start(&out, "tandem-compute runtime", via);
        assert!(out.stderr.contains("os error"), "{via}: {}", out.stderr);
    }
}
