//! The peers: echo servers on other runtimes that the `peers` section sets
//! beside tandem's layouts, built by the suite before it measures.
//!
//! They live in `bench/peers/`, a cargo workspace of their own (see its
//! README), so that the crate's own `cargo build` and `cargo test` never
//! build them. The suite runs `cargo build --release --locked` on it, into
//! `peers/` under the cargo target directory (`$CARGO_TARGET_DIR`, else
//! `./target`, as for results), then starts each peer once: one that cannot
//! run on this machine (monoio without io_uring) exits with
//! [`EXIT_UNAVAILABLE`](super::servers::EXIT_UNAVAILABLE) and is skipped,
//! with its reason in the report. The epoll peer is the `--reference`
//! server, built with the crate's examples.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

use super::error::SuiteError;
use super::servers::ServerSpec;

/// The peers workspace of the source tree this binary was built from: the
/// default of `--peers`.
pub const DEFAULT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/peers");

/// The peers built from the workspace: (name in tables, binary).
const PEERS: [(&str, &str); 3] = [
    ("article", "peer-article"),
    ("actix", "peer-actix"),
    ("monoio", "peer-monoio"),
];

/// Lines of cargo's stderr quoted when a build fails: the error and its
/// context, not the list of crates compiled before it.
const STDERR_TAIL: usize = 25;

/// A peer that cannot run here, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub server: String,
    pub reason: String,
}

/// The peers ready to measure, and those skipped.
#[derive(Debug, Clone)]
pub struct Peers {
    pub servers: Vec<ServerSpec>,
    pub skipped: Vec<Skipped>,
}

/// Where the peers are built: `peers/` beside the suite's results, under
/// the cargo target directory.
pub fn default_target_dir(cargo_target_dir: Option<&Path>) -> PathBuf {
    cargo_target_dir
        .unwrap_or(Path::new("target"))
        .join("peers")
}

/// Builds the peers of the workspace `dir` into `target_dir`, and returns
/// them, each to run with `threads` threads, those that cannot run here
/// set aside.
pub fn build(dir: &Path, target_dir: &Path, threads: usize) -> Result<Peers, SuiteError> {
    let failed = |why: String| SuiteError::Peers {
        dir: dir.to_owned(),
        why,
    };
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(failed(format!(
            "no {} (pass --peers with the bench/peers folder of tandem's source)",
            manifest.display()
        )));
    }
    // `cargo run` sets CARGO to the cargo that runs it; else the one on PATH.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(&cargo)
        .args(["build", "--release", "--locked", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|err| match err.kind() {
            ErrorKind::NotFound => failed(format!(
                "cargo is needed to build them and {} was not found",
                Path::new(&cargo).display()
            )),
            _ => failed(format!("cannot run {}: {err}", Path::new(&cargo).display())),
        })?;
    if !output.status.success() {
        return Err(failed(format!(
            "cargo build failed ({}):\n{}",
            output.status,
            tail(&String::from_utf8_lossy(&output.stderr), STDERR_TAIL)
        )));
    }
    let release = target_dir.join("release");
    let mut peers = Peers {
        servers: Vec::new(),
        skipped: Vec::new(),
    };
    for (name, binary) in PEERS {
        let spec = ServerSpec::peer(name, release.join(binary), threads);
        match spec.probe()? {
            None => peers.servers.push(spec),
            Some(reason) => peers.skipped.push(Skipped {
                server: name.to_owned(),
                reason,
            }),
        }
    }
    Ok(peers)
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peers_build_beside_the_suites_results() {
        assert_eq!(
            default_target_dir(Some(Path::new("/work/t"))),
            Path::new("/work/t/peers")
        );
        assert_eq!(default_target_dir(None), Path::new("target/peers"));
    }

    #[test]
    fn the_default_workspace_is_the_source_trees() {
        assert!(Path::new(DEFAULT_DIR).join("Cargo.toml").is_file());
    }

    #[test]
    fn a_missing_workspace_is_refused_before_cargo_runs() {
        let err = build(Path::new("/nonexistent/peers"), Path::new("/tmp/x"), 1).unwrap_err();
        assert!(err.to_string().contains("pass --peers"), "{err}");
    }

    #[test]
    fn a_failed_build_quotes_the_end_of_cargos_stderr() {
        let text = (1..=30).map(|n| format!("line {n}\n")).collect::<String>();
        let quoted = tail(&text, 3);
        assert_eq!(quoted, "line 28\nline 29\nline 30");
    }
}
