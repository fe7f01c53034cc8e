//! A minimal hand-written closed-loop epoll echo client on `mio`: the
//! yardstick that `tandem bench` is held to. Client and server share the
//! machine, so whatever CPU the load generator burns per message is taken
//! from the server; this client shows how little that can be.
//!
//! T event-loop threads, each with its own `mio::Poll` and its share of the
//! connections, nothing shared between them. Each connection sends one
//! message, waits for its whole echo, checks it byte for byte, and sends the
//! next. A message is written with one `write`, and its echo is read with
//! one `read` per readiness edge until a short read shows the socket
//! drained. No allocation, no clock read and no shared counter per message.
//!
//! Run it against any echo server:
//!
//! ```text
//! cargo run --release --example epoll_echo -- --listen 127.0.0.1:0 --threads 1
//! cargo run --release --example epoll_client -- --connect 127.0.0.1:PORT \
//!     --connections 50 --message-size 64 --duration 3s
//! ```
//!
//! It prints one line, `messages 123456 in 3.000s: 41152 msgs/s, 11.9 us cpu/msg`
//! (with `--json`, one object with the keys `messages`, `duration_secs`,
//! `msgs_per_sec` and `cpu_us_per_msg`): messages echoed and verified in the
//! window, and the client's own CPU time (user and system, every thread)
//! per message. A wrong byte, an early close or an I/O error ends it with
//! exit status 1.
//!
//! Options: `--connect ADDR` (required), `--connections N` (default 50),
//! `--message-size B` (default 64), `--duration D` (default 10s),
//! `--warmup D` (load before the window, not counted; default 1s),
//! `--threads T` (default 1), `--json`.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// How long the last echoes may take once the window has closed.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of each message that carry its connection and sequence number, so
/// that a repeated, lost or crossed echo does not match.
const STAMP: usize = 8;

struct Options {
    connect: SocketAddr,
    connections: usize,
    message_size: usize,
    duration: Duration,
    warmup: Duration,
    threads: usize,
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let options = parse_args()?;
    let threads = options.threads.min(options.connections);
    // Connection i goes to thread i % T: an even share per thread. All are
    // opened before any load, so that a refused connect fails at once.
    let mut shares: Vec<Vec<(usize, std::net::TcpStream)>> =
        (0..threads).map(|_| Vec::new()).collect();
    for id in 0..options.connections {
        let stream = std::net::TcpStream::connect(options.connect)
            .with_context(|| format!("connecting to {}", options.connect))?;
        // Messages are written whole; Nagle would only delay them.
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        shares[id % threads].push((id, stream));
    }
    // The warm-up starts when every thread has registered its connections.
    let ready = Barrier::new(threads + 1);
    // Set by a thread that fails, so that the others and the timing below
    // stop at once instead of running the window out.
    let failed = AtomicBool::new(false);
    let (messages, cpu) = std::thread::scope(|scope| -> anyhow::Result<_> {
        let mut handles = Vec::with_capacity(threads);
        for (t, share) in shares.into_iter().enumerate() {
            let (options, ready, failed) = (&options, &ready, &failed);
            let handle = std::thread::Builder::new()
                .name(format!("client-{t}"))
                .spawn_scoped(scope, move || {
                    let counted = load(options, share, ready, failed);
                    if counted.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    counted
                })?;
            handles.push(handle);
        }
        ready.wait();
        // Each loop times its own window from here; this thread only reads
        // the process's CPU time around it, and sleeps meanwhile.
        let start = Instant::now();
        sleep_until(start + options.warmup, &failed);
        let cpu_before = cpu_time();
        sleep_until(start + options.warmup + options.duration, &failed);
        let cpu = cpu_time().saturating_sub(cpu_before);
        let mut messages = 0;
        for handle in handles {
            match handle.join() {
                Ok(counted) => messages += counted?,
                Err(_) => bail!("a client thread panicked"),
            }
        }
        Ok((messages, cpu))
    })?;
    let seconds = options.duration.as_secs_f64();
    let rate = messages as f64 / seconds;
    let cpu_us = if messages == 0 {
        0.0
    } else {
        cpu.as_secs_f64() * 1e6 / messages as f64
    };
    if options.json {
        let report = serde_json::json!({
            "messages": messages,
            "duration_secs": seconds,
            "msgs_per_sec": rate,
            "cpu_us_per_msg": cpu_us,
        });
        println!("{report}");
    } else {
        println!("messages {messages} in {seconds:.3}s: {rate:.0} msgs/s, {cpu_us:.2} us cpu/msg");
    }
    Ok(())
}

fn parse_args() -> anyhow::Result<Options> {
    let mut connect = None;
    let mut options = Options {
        connect: SocketAddr::from(([127, 0, 0, 1], 0)),
        connections: 50,
        message_size: 64,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(1),
        threads: 1,
        json: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--connect" => connect = Some(value()?.parse().context("--connect: bad address")?),
            "--connections" => {
                options.connections = value()?.parse().context("--connections: bad number")?;
            }
            "--message-size" => {
                options.message_size = value()?.parse().context("--message-size: bad number")?;
            }
            "--duration" => {
                options.duration =
                    humantime::parse_duration(&value()?).context("--duration: bad duration")?;
            }
            "--warmup" => {
                options.warmup =
                    humantime::parse_duration(&value()?).context("--warmup: bad duration")?;
            }
            "--threads" => options.threads = value()?.parse().context("--threads: bad number")?,
            "--json" => options.json = true,
            _ => bail!(
                "unknown argument {arg:?} (expected --connect ADDR, --connections N, \
                 --message-size B, --duration D, --warmup D, --threads T, --json)"
            ),
        }
    }
    options.connect = connect.context("--connect ADDR is required")?;
    for (name, value) in [
        ("--connections", options.connections),
        ("--message-size", options.message_size),
        ("--threads", options.threads),
    ] {
        if value == 0 {
            bail!("{name} must be at least 1");
        }
    }
    if options.duration.is_zero() {
        bail!("--duration must be more than 0");
    }
    Ok(options)
}

/// One connection: the message in flight, and as much of its echo as came.
struct Conn {
    stream: TcpStream,
    /// The message in flight, rewritten in place for the next one.
    message: Vec<u8>,
    echo: Vec<u8>,
    /// Bytes of `echo` received.
    got: usize,
    /// Bytes of `message` written; short only when the socket was full.
    written: usize,
    /// Stamp of this connection, mixed into each sequence number.
    key: u64,
    sequence: u64,
    /// False once the window has closed and its last echo came back.
    in_flight: bool,
}

impl Conn {
    fn new(stream: TcpStream, id: usize, size: usize) -> Conn {
        let key = (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // A body that differs between connections and along the message.
        let message = (0..size)
            .map(|i| (key >> (8 * (i % 8))) as u8 ^ i as u8)
            .collect();
        Conn {
            stream,
            message,
            echo: vec![0; size],
            got: 0,
            written: 0,
            key,
            sequence: 0,
            in_flight: false,
        }
    }

    /// Stamps the next message and writes as much of it as the socket takes.
    fn send_next(&mut self) -> io::Result<()> {
        let stamp = (self.sequence ^ self.key).to_le_bytes();
        let head = STAMP.min(self.message.len());
        self.message[..head].copy_from_slice(&stamp[..head]);
        self.sequence += 1;
        self.got = 0;
        self.written = 0;
        self.in_flight = true;
        self.write_rest()
    }

    fn write_rest(&mut self) -> io::Result<()> {
        while self.written < self.message.len() {
            match self.stream.write(&self.message[self.written..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads what has come of the echo. Ok(true) when it is complete and
    /// checked. Stops at a short read: on an edge-triggered socket that shows
    /// it drained, and the next byte to arrive raises a new event, so reading
    /// again would only return EAGAIN.
    fn read_echo(&mut self) -> io::Result<bool> {
        loop {
            let want = self.echo.len() - self.got;
            match self.stream.read(&mut self.echo[self.got..]) {
                Ok(0) => return Err(io::Error::other("server closed the connection")),
                Ok(n) => {
                    self.got += n;
                    if n < want {
                        return Ok(false);
                    }
                    if self.echo != self.message {
                        return Err(io::Error::other(format!(
                            "echo of message {} differs from what was sent",
                            self.sequence - 1
                        )));
                    }
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits for writability too while part of the message is unsent.
    fn interest(&self) -> Interest {
        if self.written < self.message.len() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        }
    }
}

/// Runs `share` (each connection with its number) through the warm-up and
/// the window; returns the messages echoed inside the window.
fn load(
    options: &Options,
    share: Vec<(usize, std::net::TcpStream)>,
    ready: &Barrier,
    failed: &AtomicBool,
) -> anyhow::Result<u64> {
    let setup = || -> io::Result<(Poll, Vec<Conn>)> {
        let poll = Poll::new()?;
        let mut conns = Vec::with_capacity(share.len());
        for (id, stream) in share {
            let mut stream = TcpStream::from_std(stream);
            poll.registry()
                .register(&mut stream, Token(conns.len()), Interest::READABLE)?;
            conns.push(Conn::new(stream, id, options.message_size));
        }
        Ok((poll, conns))
    };
    let set_up = setup();
    // Reached even after a failure, so that main is never left waiting.
    ready.wait();
    let (poll, mut conns) = set_up?;
    run(poll, &mut conns, options.warmup, options.duration, failed)
}

fn run(
    mut poll: Poll,
    conns: &mut [Conn],
    warmup: Duration,
    duration: Duration,
    failed: &AtomicBool,
) -> anyhow::Result<u64> {
    let start = Instant::now();
    let (from, until) = (start + warmup, start + warmup + duration);
    let mut events = Events::with_capacity(conns.len().max(1));
    for conn in conns.iter_mut() {
        conn.send_next()?;
    }
    let mut interests: Vec<Interest> = conns.iter().map(Conn::interest).collect();
    let mut messages = 0u64;
    let mut live = conns.len();
    let mut now = start;
    while live > 0 {
        let timeout = if now < until {
            until - now
        } else {
            DRAIN_TIMEOUT
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        if failed.load(Ordering::Relaxed) {
            // Another thread's error ends the run; it is the one reported.
            return Ok(messages);
        }
        // One clock read per wake-up, not per message: a wake-up takes one
        // echo or a batch of them, and that is as fine as the window needs.
        now = Instant::now();
        if events.is_empty() && now >= until + DRAIN_TIMEOUT {
            bail!("{live} echoes still missing {DRAIN_TIMEOUT:?} after the window");
        }
        let sending = now < until;
        let counting = now >= from && sending;
        for event in &events {
            let key = event.token().0;
            let conn = &mut conns[key];
            if !conn.in_flight {
                continue;
            }
            if conn.written < conn.message.len() {
                conn.write_rest()?;
            }
            if conn.read_echo()? {
                messages += u64::from(counting);
                conn.in_flight = false;
                if sending {
                    conn.send_next()?;
                }
            }
            let want = conn.interest();
            if want != interests[key] {
                poll.registry()
                    .reregister(&mut conn.stream, event.token(), want)?;
                interests[key] = want;
            }
        }
        if !sending {
            // Only after the window, so not a cost per message.
            live = conns.iter().filter(|conn| conn.in_flight).count();
        }
    }
    for conn in conns.iter() {
        // A clean end of stream for the server: nothing is left unread.
        let _ = conn.stream.shutdown(Shutdown::Write);
    }
    Ok(messages)
}

/// Sleeps until `deadline`, or not much longer than a thread's failure.
fn sleep_until(deadline: Instant, failed: &AtomicBool) {
    const STEP: Duration = Duration::from_millis(10);
    while !failed.load(Ordering::Relaxed) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(STEP));
    }
}

/// User plus system CPU time of this process so far.
fn cpu_time() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(Duration::ZERO, |usage| {
        let to_duration = |t: nix::sys::time::TimeVal| {
            Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000)
        };
        to_duration(usage.user_time()) + to_duration(usage.system_time())
    })
}
