//! A `tandem serve` process for integration tests: started on a free
//! loopback port, talked to over real sockets, stopped with real signals.
#![allow(dead_code)] // each test file uses its own part of this harness

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Longest any single step of a test may wait before it counts as a hang.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The `tandem` binary with an empty environment, so that no `TANDEM_*`
/// variable of the machine leaks into a test.
pub fn tandem() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tandem"));
    command.env_clear().env("RUST_LOG", "info");
    command
}

/// A running server and what it has written to stderr so far.
pub struct TestServer {
    child: Child,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl TestServer {
    /// `tandem serve --listen 127.0.0.1:0` plus `args`.
    pub fn start(args: &[&str]) -> TestServer {
        let mut command = tandem();
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args);
        TestServer::spawn(command)
    }

    /// Starts `command` and waits for its `listening on` line.
    pub fn spawn(mut command: Command) -> TestServer {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tandem");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr piped");
        let sink = stderr.clone();
        std::thread::spawn(move || {
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
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout piped"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read stdout");
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let _ = child.wait();
            panic!(
                "expected `listening on <addr>`, got {line:?}; stderr:\n{}",
                stderr.lock().unwrap()
            );
        };
        let addr = addr.parse().expect("a socket address");
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        TestServer {
            child,
            addr,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A client connected to the server, with read and write timeouts so
    /// that a test fails instead of hanging.
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect to tandem");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_write_timeout(Some(PATIENCE)).unwrap();
        stream
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("send signal");
    }

    /// Waits for the process to exit, failing the test after `PATIENCE`.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
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

    /// SIGTERM, then the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until stderr contains `needle`; panics with the log if it never does.
    pub fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.stderr().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `payload`, reads exactly as many bytes back, returns them.
pub fn round_trip(stream: &mut TcpStream, payload: &[u8]) -> Vec<u8> {
    stream.write_all(payload).expect("write");
    let mut echoed = vec![0; payload.len()];
    stream.read_exact(&mut echoed).expect("read echo");
    echoed
}

/// Random bytes.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    rand::fill(&mut bytes[..]);
    bytes
}

/// The three layouts, for tests that must hold in each.
pub const LAYOUTS: [&str; 3] = ["split", "single", "sharded"];
