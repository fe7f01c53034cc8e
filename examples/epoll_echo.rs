//! A minimal hand-written epoll echo server on `mio`: the "practical ceiling"
//! that benchmarks compare tandem's layouts against.
//!
//! N event-loop threads, each with its own `mio::Poll` and its own listener
//! bound to the same address with `SO_REUSEPORT`, so the kernel spreads
//! incoming connections across threads and nothing is shared between them.
//!
//! Run it:
//!
//! ```text
//! cargo run --release --example epoll_echo -- --listen 127.0.0.1:0 --threads 2
//! ```
//!
//! It prints `listening on 127.0.0.1:PORT`. In another terminal, run
//! `nc 127.0.0.1 PORT`, type a line and it comes straight back; Ctrl-D
//! half-closes and the server closes its side once everything is echoed.
//! SIGTERM or SIGINT (Ctrl-C) stops it with exit status 0.
//!
//! Options: `--listen ADDR` (default 127.0.0.1:8001), `--threads N`
//! (default: available parallelism).

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};

/// Token of each thread's listener; connections use their slab index.
const LISTENER: Token = Token(usize::MAX);
/// How often every loop wakes up to check the stop flag.
const TICK: Duration = Duration::from_millis(100);
/// Pause before retrying accept after running out of fds or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

fn main() -> anyhow::Result<()> {
    let (mut addr, threads) = parse_args()?;

    // Register before printing the address, so a script that signals us as
    // soon as it has read the port still gets a clean exit.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }

    // With port 0 the first bind picks the port; the others then join it.
    let mut listeners = Vec::with_capacity(threads);
    for _ in 0..threads {
        let listener = bind(addr).with_context(|| format!("binding {addr}"))?;
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    println!("listening on {addr}");
    io::stdout().flush()?;

    let mut handles = Vec::with_capacity(threads);
    for (i, listener) in listeners.into_iter().enumerate() {
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let stop = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name(format!("epoll-{i}"))
            .spawn(move || event_loop(poll, listener, &stop))?;
        handles.push(handle);
    }
    for handle in handles {
        if handle.join().is_err() {
            bail!("an event-loop thread panicked");
        }
    }
    Ok(())
}

fn parse_args() -> anyhow::Result<(SocketAddr, usize)> {
    let mut addr: SocketAddr = "127.0.0.1:8001".parse()?;
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => addr = value()?.parse().context("--listen: bad address")?,
            "--threads" => threads = value()?.parse().context("--threads: bad number")?,
            _ => bail!("unknown argument {arg:?} (expected --listen ADDR, --threads N)"),
        }
    }
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    Ok((addr, threads))
}

/// A non-blocking listener sharing `addr` with its siblings via SO_REUSEPORT.
fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

struct Conn {
    stream: TcpStream,
    /// Echo bytes the socket would not take yet. While non-empty we wait for
    /// WRITABLE only and stop reading, so a client that sends but never reads
    /// costs at most one scratch buffer's worth of memory.
    pending: Vec<u8>,
    interest: Interest,
}

fn event_loop(mut poll: Poll, listener: TcpListener, stop: &AtomicBool) {
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 64 * 1024];
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    // Set while accept is backing off; mio is edge-triggered, so connections
    // left in the backlog would otherwise wait for the next arrival.
    let mut retry_accept: Option<Instant> = None;

    while !stop.load(Ordering::Relaxed) {
        let timeout = retry_accept.map_or(TICK, |at| {
            at.saturating_duration_since(Instant::now()).min(TICK)
        });
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != ErrorKind::Interrupted {
                eprintln!("poll: {e}");
                std::thread::sleep(ACCEPT_BACKOFF);
            }
            continue;
        }

        let mut accept_now = retry_accept.is_some_and(|at| Instant::now() >= at);
        for event in &events {
            if event.token() == LISTENER {
                accept_now = true;
                continue;
            }
            let key = event.token().0;
            // Events for a connection closed earlier in this batch are stale.
            let Some(conn) = conns.get_mut(key).and_then(Option::as_mut) else {
                continue;
            };
            if !serve(&poll, conn, event.token(), &mut scratch) {
                if let Some(mut conn) = conns[key].take() {
                    let _ = poll.registry().deregister(&mut conn.stream);
                }
                free.push(key);
            }
        }

        if accept_now {
            retry_accept = accept_all(&poll, &listener, &mut conns, &mut free);
        }
    }
}

/// Accepts until WouldBlock. Returns when to retry if it had to back off.
fn accept_all(
    poll: &Poll,
    listener: &TcpListener,
    conns: &mut Vec<Option<Conn>>,
    free: &mut Vec<usize>,
) -> Option<Instant> {
    loop {
        let mut stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
            // The peer gave up while queued, or a signal arrived: next one.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionAborted
                        | ErrorKind::ConnectionReset
                        | ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS/ENOMEM: retrying at once would spin.
                let resource = matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                );
                if !resource {
                    eprintln!("accept: {e}");
                }
                return Some(Instant::now() + ACCEPT_BACKOFF);
            }
        };
        // Echo latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        let key = free.pop().unwrap_or_else(|| {
            conns.push(None);
            conns.len() - 1
        });
        match poll
            .registry()
            .register(&mut stream, Token(key), Interest::READABLE)
        {
            Ok(()) => {
                conns[key] = Some(Conn {
                    stream,
                    pending: Vec::new(),
                    interest: Interest::READABLE,
                })
            }
            Err(_) => free.push(key), // dropping `stream` closes it
        }
    }
}

/// Drives one connection as far as it will go. Returns false to close it.
fn serve(poll: &Poll, conn: &mut Conn, token: Token, scratch: &mut [u8]) -> bool {
    match echo(conn, scratch) {
        Ok(true) => {}
        Ok(false) | Err(_) => return false,
    }
    let want = if conn.pending.is_empty() {
        Interest::READABLE
    } else {
        Interest::WRITABLE
    };
    if want != conn.interest {
        if poll
            .registry()
            .reregister(&mut conn.stream, token, want)
            .is_err()
        {
            return false;
        }
        conn.interest = want;
    }
    true
}

/// Flushes the backlog, then reads and echoes until the socket runs dry or
/// the peer's buffer fills. Ok(false) means the echo is complete.
fn echo(conn: &mut Conn, scratch: &mut [u8]) -> io::Result<bool> {
    let sent = write_some(&mut conn.stream, &conn.pending)?;
    conn.pending.drain(..sent);
    if !conn.pending.is_empty() {
        return Ok(true); // still backpressured: don't read more
    }
    loop {
        match conn.stream.read(scratch) {
            // Half-close: everything owed has been written (pending is
            // empty), so send our FIN and let the caller close.
            Ok(0) => {
                conn.stream.shutdown(Shutdown::Write)?;
                return Ok(false);
            }
            Ok(n) => {
                let sent = write_some(&mut conn.stream, &scratch[..n])?;
                conn.pending.extend_from_slice(&scratch[sent..n]);
                if !conn.pending.is_empty() {
                    return Ok(true);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes as much of `data` as the socket takes right now.
fn write_some(stream: &mut TcpStream, data: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < data.len() {
        match stream.write(&data[done..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
