//! A `tandem` process for integration tests: started with an empty
//! environment, its stderr captured as it comes, stopped with real signals;
//! and, once it prints `listening on`, a server talked to over real sockets.
#![allow(dead_code)] // each test file uses its own part of this harness

pub mod admin;
#[path = "../../crates/tandem/tests/common/basics.rs"]
mod basics;
pub mod external;
pub mod process;
pub mod streamer;
#[path = "../../crates/tandem/tests/common/tls.rs"]
pub mod tls;

#[allow(unused_imports)] // not every test file has per-layout tests
pub(crate) use basics::per_layout;
#[allow(unused_imports)] // not every test file sends random payloads
pub use basics::{LAYOUTS, PATIENCE, at_once, in_turn, random_bytes};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The `tandem` binary with an empty environment, so that no `TANDEM_*`
/// variable of the machine leaks into a test.
pub fn tandem() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tandem"));
    command.env_clear().env("RUST_LOG", "info");
    command
}

/// A running `tandem` process. Killed on drop.
pub struct Proc {
    child: Child,
    stdout: Option<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<JoinHandle<()>>,
}

/// What a process that exited left behind.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Proc {
    pub fn spawn(mut command: Command) -> Proc {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run {:?}: {err}", command.get_program()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr piped");
        let sink = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        let stdout = BufReader::new(child.stdout.take().expect("stdout piped"));
        Proc {
            child,
            stdout: Some(stdout),
            stderr,
            stderr_reader: Some(stderr_reader),
        }
    }

    /// Runs `tandem` with `args`, and `env` in an otherwise empty
    /// environment, to its exit.
    pub fn run(args: &[&str], env: &[(&str, &str)]) -> Finished {
        let mut command = tandem();
        command.args(args).envs(env.iter().copied());
        Proc::spawn(command).finish()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first line of stdout, newline included; empty if the process
    /// closed stdout (exited) without writing one.
    pub fn first_line(&mut self) -> String {
        let mut line = String::new();
        self.stdout
            .as_mut()
            .expect("stdout not consumed yet")
            .read_line(&mut line)
            .expect("read stdout");
        line
    }

    /// Drains the rest of stdout in the background, so that the process
    /// never blocks on a full pipe.
    fn discard_stdout(&mut self) {
        if let Some(mut stdout) = self.stdout.take() {
            std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("send signal");
    }

    /// Waits for the process to exit, failing the test after `PATIENCE`.
    pub fn wait(&mut self) -> ExitStatus {
        self.wait_within(PATIENCE)
    }

    /// Waits for the process to exit, failing the test after `patience`.
    pub fn wait_within(&mut self, patience: Duration) -> ExitStatus {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "tandem did not exit; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit, then collects everything it wrote.
    pub fn finish(self) -> Finished {
        self.finish_within(PATIENCE)
    }

    /// `finish`, for a process whose whole run is longer than one step.
    pub fn finish_within(mut self, patience: Duration) -> Finished {
        let status = self.wait_within(patience);
        let mut stdout = String::new();
        if let Some(mut pipe) = self.stdout.take() {
            pipe.read_to_string(&mut stdout).expect("read stdout");
        }
        if let Some(reader) = self.stderr_reader.take() {
            reader.join().expect("stderr reader");
        }
        Finished {
            status,
            stdout,
            stderr: self.stderr(),
        }
    }

    /// Waits for a complete stderr line containing `needle` and returns it;
    /// fails the test, showing the log, if none comes.
    pub fn wait_for_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let stderr = self.stderr();
            // Only lines followed by a newline are complete.
            let complete = stderr.rfind('\n').map_or("", |end| &stderr[..end]);
            if let Some(line) = complete.lines().find(|line| line.contains(needle)) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no complete line with {needle:?} in stderr:\n{stderr}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Finished {
    /// What is wrong with this run as a refused configuration: it must
    /// exit 2 without a panic and without listening, its stderr holding
    /// every one of `expect`.
    pub fn refusal_problems(&self, expect: &[&str]) -> Vec<String> {
        let mut problems = Vec::new();
        if self.status.code() != Some(2) {
            problems.push(format!("exit status {}, want 2", self.status));
        }
        if self.stderr.contains("panicked") {
            problems.push("panicked".to_owned());
        }
        if self.stdout.contains("listening on") {
            problems.push("started listening".to_owned());
        }
        for needle in expect {
            if !self.stderr.contains(needle) {
                problems.push(format!("stderr lacks {needle:?}"));
            }
        }
        problems
    }
}

/// Runs `tandem bench --json --target <target>` with `args` and returns
/// its exit success and its report.
pub fn bench_json(target: SocketAddr, args: &[&str]) -> (bool, serde_json::Value) {
    let target = target.to_string();
    let mut all = vec!["bench", "--target", &target, "--json"];
    all.extend_from_slice(args);
    let out = Proc::run(&all, &[]);
    let report = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|err| panic!("no JSON report ({err}): {}\n{}", out.stdout, out.stderr));
    (out.status.success(), report)
}

/// A server that has printed `listening on <addr>`.
pub struct TestServer {
    proc: Proc,
    pub addr: SocketAddr,
    /// The admin endpoint, when the server was started with
    /// `--admin-listen` and printed `admin listening on <addr>`.
    pub admin: Option<SocketAddr>,
}

impl std::ops::Deref for TestServer {
    type Target = Proc;

    fn deref(&self) -> &Proc {
        &self.proc
    }
}

impl std::ops::DerefMut for TestServer {
    fn deref_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

impl TestServer {
    /// `tandem serve --listen 127.0.0.1:0` plus `args`.
    pub fn start(args: &[&str]) -> TestServer {
        TestServer::start_with_env(&[], args)
    }

    /// `tandem serve --listen 127.0.0.1:0` plus `args`, with `env` set.
    pub fn start_with_env(env: &[(&str, &str)], args: &[&str]) -> TestServer {
        let mut command = tandem();
        command
            .envs(env.iter().copied())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args);
        TestServer::spawn(command)
    }

    /// Starts `command` and waits for its `listening on` line.
    /// With an admin endpoint (flag or environment), also waits for its
    /// `admin listening on <addr>` line.
    pub fn spawn(command: Command) -> TestServer {
        let with_admin = command.get_args().any(|arg| {
            arg.to_str()
                .is_some_and(|a| a.starts_with("--admin-listen"))
        }) || command
            .get_envs()
            .any(|(key, value)| key == "TANDEM_ADMIN_LISTEN" && value.is_some());
        let mut proc = Proc::spawn(command);
        let line = proc.first_line();
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let out = proc.finish();
            panic!(
                "expected `listening on <addr>`, got {line:?}; stderr:\n{}",
                out.stderr
            );
        };
        let addr = addr.parse().expect("a socket address");
        let admin = with_admin.then(|| {
            let line = proc.first_line();
            line.trim()
                .strip_prefix("admin listening on ")
                .unwrap_or_else(|| panic!("expected `admin listening on <addr>`, got {line:?}"))
                .parse()
                .expect("a socket address")
        });
        proc.discard_stdout();
        TestServer { proc, addr, admin }
    }

    /// `tandem serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0` plus
    /// `args`.
    pub fn start_with_admin(args: &[&str]) -> TestServer {
        let mut all = vec!["--admin-listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        TestServer::start(&all)
    }

    /// The admin endpoint's address; panics if the server has none.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .expect("the server was started with --admin-listen")
    }

    /// The admin endpoint's `/metrics` URL, as `--server-metrics` takes it.
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.admin_addr())
    }

    /// A client connected to the server, with read and write timeouts so
    /// that a test fails instead of hanging.
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect to tandem");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_write_timeout(Some(PATIENCE)).unwrap();
        stream
    }

    /// A client whose SO_RCVBUF and SO_SNDBUF are `size` (the kernel
    /// doubles it), fixed before the handshake so that the window it offers
    /// reflects them and autotuning never grows them; with the timeouts of
    /// [`connect`](Self::connect).
    pub fn connect_with_buffers(&self, size: usize) -> TcpStream {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::for_address(self.addr), Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(size).unwrap();
        socket.set_send_buffer_size(size).unwrap();
        socket
            .connect(&self.addr.into())
            .expect("connect to tandem");
        let stream = TcpStream::from(socket);
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_write_timeout(Some(PATIENCE)).unwrap();
        stream
    }

    /// SIGTERM, then the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait()
    }

    /// Waits until stderr has a line containing `needle`.
    pub fn wait_for_log(&self, needle: &str) {
        self.wait_for_line(needle);
    }
}

/// Sends `payload`, reads exactly as many bytes back, returns them.
pub fn round_trip(stream: &mut TcpStream, payload: &[u8]) -> Vec<u8> {
    stream.write_all(payload).expect("write");
    let mut echoed = vec![0; payload.len()];
    stream.read_exact(&mut echoed).expect("read echo");
    echoed
}

/// Logged once accepting has stopped at a shutdown and, in `split` and
/// `sharded`, the acceptor runtime has been shut down.
pub const ACCEPTOR_GONE: &str = "stopped accepting";

/// What `per_layout!` passes the binary's tests: the layout's name, as
/// `--layout` takes it.
pub fn layout(name: &'static str) -> &'static str {
    name
}

/// A TOML config file in a fresh temporary directory.
pub struct ConfigFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl ConfigFile {
    pub fn new(text: &str) -> ConfigFile {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tandem.toml");
        std::fs::write(&path, text).expect("write config file");
        ConfigFile { _dir: dir, path }
    }

    pub fn path(&self) -> &str {
        self.path.to_str().expect("UTF-8 temp path")
    }
}

/// The `fields` of the JSON start-up line of a server run with
/// `--log-format json`.
pub fn startup_fields(server: &TestServer) -> serde_json::Map<String, serde_json::Value> {
    let line = server.wait_for_line("tandem serve starting");
    let event: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|err| panic!("start-up line is not JSON ({err}): {line}"));
    let fields = event
        .get("fields")
        .and_then(serde_json::Value::as_object)
        .unwrap_or_else(|| panic!("start-up line has no `fields` object: {line}"));
    assert_eq!(
        fields.get("message").and_then(serde_json::Value::as_str),
        Some("tandem serve starting"),
        "{line}"
    );
    fields.clone()
}
