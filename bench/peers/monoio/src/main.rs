//! An echo server on monoio: a thread per core, each with its own io_uring
//! runtime and its own listener bound to the same address with
//! SO_REUSEPORT (as the epoll example does), so that nothing is shared
//! between threads. Reads and writes are io_uring operations on buffers
//! the connection owns, so there is no readiness step and no syscall per
//! read: the ring is entered once per batch.
//!
//! Where io_uring cannot be set up (an old kernel, `kernel.io_uring_disabled`,
//! a seccomp filter in a container) it says why on stderr and exits with
//! status 3 ([`EXIT_UNAVAILABLE`]) before printing its address, which the
//! suite records as a skipped peer.
//!
//! ```text
//! cargo run --release --manifest-path bench/peers/Cargo.toml -p peer-monoio -- --listen 127.0.0.1:0
//! ```
//!
//! It prints `listening on 127.0.0.1:PORT`; `nc 127.0.0.1 PORT` echoes what
//! is typed. SIGTERM or SIGINT stops it with exit status 0.

use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use monoio::{IoUringDriver, RuntimeBuilder};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use socket2::{Domain, Protocol, Socket, Type};

/// Exit status when io_uring is unavailable here: the suite's sign to skip
/// this peer rather than fail.
const EXIT_UNAVAILABLE: u8 = 3;
/// Listen backlog of each thread's listener, as the epoll example's.
const BACKLOG: i32 = 1024;
/// Pause before accepting again after a failed accept: EMFILE and the like
/// would fail again at once, and the loop would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

fn main() -> ExitCode {
    let args = match peer_args::parse_or_exit("peer-monoio") {
        Ok(args) => args,
        Err(status) => return status,
    };
    // Registered before the address is printed, so that a signal sent as
    // soon as it is read still ends the process cleanly.
    let mut signals = match Signals::new([SIGTERM, SIGINT]) {
        Ok(signals) => signals,
        Err(err) => {
            eprintln!("peer-monoio: cannot handle signals: {err}");
            return ExitCode::FAILURE;
        }
    };
    // With port 0 the first bind picks the port; the others then join it.
    let mut addr = args.listen;
    let mut listeners = Vec::with_capacity(args.threads);
    for _ in 0..args.threads {
        match bind(addr).and_then(|listener| Ok((listener.local_addr()?, listener))) {
            Ok((bound, listener)) => {
                addr = bound;
                listeners.push(listener);
            }
            Err(err) => {
                eprintln!("peer-monoio: cannot listen on {addr}: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    // Each thread sets up its ring and says whether it could: the address
    // is printed only once every one runs, and the first failure is the
    // probe's verdict.
    let (started, verdicts) = mpsc::channel();
    for (index, listener) in listeners.into_iter().enumerate() {
        let started = started.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("monoio-{index}"))
            .spawn(move || serve_thread(listener, &started));
        if let Err(err) = spawned {
            eprintln!("peer-monoio: cannot start a thread: {err}");
            return ExitCode::FAILURE;
        }
    }
    drop(started);
    let mut running = 0;
    for verdict in verdicts.iter().take(args.threads) {
        if let Err(why) = verdict {
            eprintln!("peer-monoio: io_uring unavailable: {why}");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
        running += 1;
    }
    if running < args.threads {
        // A thread ended without a verdict: it panicked, and said why.
        return ExitCode::FAILURE;
    }
    if let Err(err) = peer_args::announce(addr) {
        eprintln!("peer-monoio: cannot write to stdout: {err}");
        return ExitCode::FAILURE;
    }
    // The runtimes wait in io_uring with no way to be woken from here;
    // returning from main ends the process and closes every socket, and a
    // peer promises no drain.
    let _ = signals.forever().next();
    ExitCode::SUCCESS
}

/// A listener sharing `addr` with its siblings through SO_REUSEPORT.
fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// One thread's runtime: reports whether its ring could be set up, then
/// accepts and serves on it for good.
fn serve_thread(listener: std::net::TcpListener, started: &mpsc::Sender<Result<(), String>>) {
    let runtime = RuntimeBuilder::<IoUringDriver>::new()
        .enable_timer()
        .build();
    let mut runtime = match runtime {
        Ok(runtime) => runtime,
        Err(err) => {
            let _ = started.send(Err(format!("cannot set up a ring: {err}")));
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(err) => {
                let _ = started.send(Err(format!("cannot register the listener: {err}")));
                return;
            }
        };
        let _ = started.send(Ok(()));
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    monoio::spawn(echo(stream));
                }
                Err(err) => {
                    eprintln!("peer-monoio: accept: {err}");
                    monoio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    });
}

/// Echoes until the client's EOF, then closes our side; an I/O error ends
/// the connection silently, as the client has gone. The buffer goes to the
/// kernel with each operation and comes back with its result.
async fn echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(peer_args::BUFFER_SIZE);
    loop {
        let (read, returned) = stream.read(buf).await;
        buf = returned;
        match read {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => return,
        }
        let (written, returned) = stream.write_all(buf).await;
        buf = returned;
        if written.is_err() {
            return;
        }
        buf.clear();
    }
    let _ = stream.shutdown().await;
}
