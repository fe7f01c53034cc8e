//! The servers a suite compares: `tandem serve` in each layout, the
//! hand-written epoll reference, and the peers of `bench/peers/`. Each
//! measurement starts its server afresh on a free loopback port and stops
//! it with SIGTERM afterwards.
//!
//! tandem servers run with their admin endpoint on a free loopback port as
//! well, so that every sample can scrape the server's own figures; the
//! `admin` section measures what that costs.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sched::CpuSet;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::error::SuiteError;
use crate::bench::server_metrics::MetricsUrl;

/// Exit status of a peer that cannot run on this machine (the monoio peer
/// where io_uring is unavailable): the suite skips it, saying why.
pub const EXIT_UNAVAILABLE: i32 = 3;

/// How long a stopped server may take to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A server to measure: a name for the tables, and how to start it.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// Name in tables and plots.
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    /// Whether it is a tandem layout (and so takes tandem's flags).
    pub is_tandem: bool,
    /// Whether it serves tandem's admin endpoint (`--admin-listen`).
    pub admin: bool,
    /// The CPUs it is pinned to (`--client-cpus`); `None`: any.
    cpus: Option<CpuSet>,
}

impl ServerSpec {
    /// `tandem serve` with `args`, run from `tandem`.
    pub fn tandem(name: &str, tandem: &std::path::Path, args: &[&str]) -> ServerSpec {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        ServerSpec {
            name: name.to_owned(),
            program: tandem.to_owned(),
            args: all.iter().map(|arg| (*arg).to_owned()).collect(),
            is_tandem: true,
            admin: true,
            cpus: None,
        }
    }

    /// The epoll reference server at `program`.
    pub fn reference(program: PathBuf, threads: usize) -> ServerSpec {
        ServerSpec::peer("epoll", program, threads)
    }

    /// A peer server at `program`, named `name`: one that takes the epoll
    /// reference's command line (`--listen`, `--threads`), as the servers
    /// of `bench/peers/` do.
    pub fn peer(name: &str, program: PathBuf, threads: usize) -> ServerSpec {
        ServerSpec {
            name: name.to_owned(),
            program,
            args: vec![
                "--listen".to_owned(),
                "127.0.0.1:0".to_owned(),
                "--threads".to_owned(),
                threads.to_string(),
            ],
            is_tandem: false,
            admin: false,
            cpus: None,
        }
    }

    /// This server with `extra` arguments appended.
    pub fn with_args(&self, extra: &[&str]) -> ServerSpec {
        let mut spec = self.clone();
        spec.args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        spec
    }

    /// This server under another name.
    pub fn named(&self, name: &str) -> ServerSpec {
        ServerSpec {
            name: name.to_owned(),
            ..self.clone()
        }
    }

    /// This server pinned to `cpus`.
    pub fn on_cpus(self, cpus: CpuSet) -> ServerSpec {
        ServerSpec {
            cpus: Some(cpus),
            ..self
        }
    }

    /// The command that starts it, pinned to its CPUs if it has any.
    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        if let Some(cpus) = self.cpus {
            super::cpus::pin(&mut command, cpus);
        }
        command
    }

    /// This tandem server named `name`, with its admin endpoint on or off.
    pub fn with_admin(&self, name: &str, admin: bool) -> ServerSpec {
        ServerSpec {
            name: name.to_owned(),
            admin: admin && self.is_tandem,
            ..self.clone()
        }
    }

    /// Starts the server and waits for its `listening on` line (and, with
    /// the admin endpoint, its `admin listening on` line).
    pub fn start(&self) -> Result<RunningServer, SuiteError> {
        let failed = |why: String| SuiteError::Server {
            name: self.name.clone(),
            why,
        };
        let admin_args: &[&str] = if self.admin {
            &["--admin-listen", "127.0.0.1:0"]
        } else {
            &[]
        };
        let mut child = self
            .command()
            .args(admin_args)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|err| failed(format!("cannot run {}: {err}", self.program.display())))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| failed("no stdout".to_owned()))?;
        let mut stdout = BufReader::new(stdout);
        let mut addresses = || {
            let addr = read_address(&mut stdout, "listening on ")?;
            let admin = if self.admin {
                Some(read_address(&mut stdout, "admin listening on ")?)
            } else {
                None
            };
            Ok((addr, admin))
        };
        let (addr, admin) = match addresses() {
            Ok(addresses) => addresses,
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(why));
            }
        };
        // Keep the pipe drained so the server never blocks writing to it.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        Ok(RunningServer { child, addr, admin })
    }
}

impl ServerSpec {
    /// Starts the server once, to see whether it can run on this machine:
    /// `Ok(None)` if it starts (it is stopped again at once), `Ok(Some(why))`
    /// if it exits with [`EXIT_UNAVAILABLE`] before listening, `why` being
    /// what it said on stderr. Any other failure to start is an error.
    pub fn probe(&self) -> Result<Option<String>, SuiteError> {
        let failed = |why: String| SuiteError::Server {
            name: self.name.clone(),
            why,
        };
        let mut child = self
            .command()
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| failed(format!("cannot run {}: {err}", self.program.display())))?;
        let mut first = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut first);
        }
        if first.starts_with("listening on ") {
            RunningServer::stop_child(&mut child);
            return Ok(None);
        }
        // stdout closed without an address: the server is exiting. Its
        // stderr is read to the end before the wait, so that a long
        // message cannot block it.
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        let status = child
            .wait()
            .map_err(|err| failed(format!("cannot wait for it: {err}")))?;
        let said = last_words(&stderr, &self.program);
        match status.code() {
            Some(EXIT_UNAVAILABLE) => Ok(Some(said)),
            _ => Err(failed(format!(
                "it ended ({status}) before listening: {said:?}"
            ))),
        }
    }
}

/// The last line `program` wrote to stderr, without its name in front.
fn last_words(stderr: &str, program: &std::path::Path) -> String {
    let line = stderr
        .lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty())
        .unwrap_or("");
    program
        .file_name()
        .and_then(|name| line.strip_prefix(&format!("{}: ", name.to_string_lossy())))
        .unwrap_or(line)
        .to_owned()
}

/// Reads the next line of `stdout`, which must be `<prefix><addr>`.
fn read_address(stdout: &mut impl BufRead, prefix: &str) -> Result<SocketAddr, String> {
    let mut line = String::new();
    let read = stdout.read_line(&mut line);
    read.ok()
        .and_then(|_| line.trim().strip_prefix(prefix)?.parse().ok())
        .ok_or_else(|| format!("expected `{prefix}<addr>`, got {line:?}"))
}

/// A started server, stopped when dropped.
#[derive(Debug)]
pub struct RunningServer {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its admin endpoint, if it serves one.
    pub admin: Option<SocketAddr>,
}

impl RunningServer {
    /// Its `/metrics` URL, if it serves an admin endpoint.
    pub fn metrics_url(&self) -> Option<MetricsUrl> {
        self.admin.map(MetricsUrl::for_admin)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory, from /proc.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// SIGTERM, then waits for the exit; kills it if it takes too long.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        RunningServer::stop_child(&mut self.child);
    }

    fn stop_child(child: &mut Child) {
        let pid = Pid::from_raw(child.id() as i32);
        if kill(pid, Signal::SIGTERM).is_err() {
            let _ = child.kill();
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}
