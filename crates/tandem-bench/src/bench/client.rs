//! One load connection of the closed or open loop, plain or TLS.
//!
//! A single task drives both directions from readiness (`try_read`,
//! `try_write`, through [`Transport`] for both kinds of stream), so a
//! connection never blocks its reads behind its writes: whatever the server
//! does, the generator keeps taking its echo.
//!
//! Closed loop: up to `pipeline` messages in flight, each timed from its
//! send. Open loop: messages are due on a fixed schedule and each is timed
//! from the instant it was due, not from when it could be sent, so a server
//! that stalls shows its stall in every message that should have gone out
//! meanwhile (no coordinated omission).

use std::collections::VecDeque;
use std::io;
use std::pin::pin;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::pattern::{APPEND_NEWLINE_HINT, Mismatch, Newlines, Pattern, Verifier};
use super::stats::{Recorder, Stats};
use super::tls::{self, ClientTls, SPEAKS_TLS_HINT};
use tandem::transport::Transport;

/// Most bytes a connection queues for sending: an open loop against a
/// stalled server stops queueing here, and the late messages go out (still
/// timed from when they were due) once the server moves again.
const MAX_QUEUED_BYTES: usize = 4 * 1024 * 1024;
/// Most messages a connection keeps unanswered in the open loop: against a
/// server that reads but never replies, the loop stops here instead of
/// growing without bound.
const MAX_UNANSWERED: usize = 1 << 20;
/// How long after the end of the window the last echoes may take.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest read at once.
const READ_CHUNK: usize = 64 * 1024;
/// Lateness of an open-loop send that is put down to the generator's timer
/// (tokio's has millisecond resolution) rather than to the server: a message
/// sent this late or less is timed from its actual send. Anything later, as
/// when a server stops reading and the socket fills, counts in full.
pub(super) const TIMER_SLACK: Duration = Duration::from_millis(2);

/// When a connection may send its next message.
#[derive(Debug, Clone, Copy)]
pub enum Pacing {
    /// Keep this many messages in flight.
    Closed { pipeline: usize },
    /// One message every `interval`, the first due at `first`.
    Open { first: Instant, interval: Duration },
}

/// Opens one load connection: TCP with TCP_NODELAY (messages are written
/// whole; Nagle would only add delay), then the handshake with `tls`.
pub async fn connect(
    target: std::net::SocketAddr,
    tls: Option<&ClientTls>,
) -> io::Result<Transport> {
    let stream = TcpStream::connect(target).await?;
    stream.set_nodelay(true)?;
    match tls {
        None => Ok(Transport::Tcp(stream)),
        Some(tls) => tls.handshake(stream).await,
    }
}

/// Drives one connection until the window ends and its echoes are in.
/// Returns a description of what went wrong, if anything did.
pub async fn drive(
    stream: Transport,
    pattern: Pattern,
    pacing: Pacing,
    stats: &Stats,
    skip_newlines: bool,
) -> Result<(), String> {
    let mut connection = Connection::new(stream, pattern, pacing, stats, skip_newlines);
    let end = connection.end;
    let mut timer = pin!(tokio::time::sleep_until(connection.due));
    let mut give_up = pin!(tokio::time::sleep_until(end + DRAIN_TIMEOUT));
    loop {
        let now = connection.arrival.take().unwrap_or_else(Instant::now);
        // Checked here as well as in the select below: a server that keeps
        // sending must not keep a connection from giving up.
        if now >= end + DRAIN_TIMEOUT {
            return Err(connection.missing());
        }
        connection.queue_due(now);
        if let Pacing::Open { .. } = pacing {
            let wake = connection.due.min(end);
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
        }
        let flush_pending = connection.send_queued()?;
        if connection.finished(now) && !flush_pending {
            break;
        }
        let pending_write = !connection.queued.is_empty() || flush_pending;
        // With a full queue the next due message cannot go anyway: wait for
        // the socket (or the echoes) rather than for the timer.
        let open_loop_waiting =
            matches!(pacing, Pacing::Open { .. }) && connection.due < end && !connection.full();
        tokio::select! {
            biased;
            readable = connection.stream.readable() => {
                readable.map_err(|err| format!("read failed: {err}"))?;
                connection.take_echoes()?;
            }
            writable = connection.stream.writable(), if pending_write => {
                writable.map_err(|err| format!("write failed: {err}"))?;
            }
            () = timer.as_mut(), if open_loop_waiting => {}
            () = give_up.as_mut() => return Err(connection.missing()),
        }
    }
    let Connection {
        stream,
        mut verifier,
        mut inbound,
        ..
    } = connection;
    close(stream, &mut verifier, &mut inbound).await
}

/// The state of one connection that [`drive`] steps through: what is
/// queued to send, what is in flight, and what has come back.
struct Connection<'a> {
    stream: Transport,
    pattern: Pattern,
    pacing: Pacing,
    stats: &'a Stats,
    /// Bytes of one message.
    size: usize,
    /// The end of the window.
    end: Instant,
    verifier: Verifier,
    recorder: Recorder<'a>,
    /// Messages queued to send, of which `written` bytes are sent.
    queued: Vec<u8>,
    written: usize,
    inbound: Vec<u8>,
    /// Start instant of every message sent and not yet echoed, in order.
    starts: VecDeque<Instant>,
    /// Messages queued so far: the next one's number.
    sent: u64,
    /// Open loop: when the next message is due (closed loop: the end).
    due: Instant,
    /// When the echo just taken arrived, if nothing has been awaited since:
    /// the messages it makes room for start from it. They go out within the
    /// same poll, a few hundred nanoseconds later, and a second clock read
    /// per message would cost more than that error.
    arrival: Option<Instant>,
}

impl<'a> Connection<'a> {
    fn new(
        stream: Transport,
        pattern: Pattern,
        pacing: Pacing,
        stats: &'a Stats,
        skip_newlines: bool,
    ) -> Connection<'a> {
        let size = pattern.message_size();
        let end = Instant::from_std(stats.measure_until);
        // One message in flight: the server's last chunk of it ends where it
        // does, so its newline must follow it. With more, a chunk may hold
        // several, and newlines can only be skipped.
        let newlines = match (skip_newlines, pacing) {
            (false, _) => Newlines::None,
            (true, Pacing::Closed { pipeline: 1 }) => Newlines::AfterEach,
            (true, _) => Newlines::Between,
        };
        Connection {
            stream,
            verifier: Verifier::new(pattern.clone(), newlines),
            pattern,
            pacing,
            stats,
            size,
            end,
            recorder: Recorder::new(stats),
            queued: Vec::with_capacity(match pacing {
                Pacing::Closed { pipeline } => pipeline * size,
                Pacing::Open { .. } => size * 16,
            }),
            written: 0,
            inbound: vec![0u8; READ_CHUNK.min(size.max(4096) * 4)],
            starts: VecDeque::new(),
            sent: 0,
            due: match pacing {
                Pacing::Open { first, .. } => first,
                Pacing::Closed { .. } => end,
            },
            arrival: None,
        }
    }

    /// Queues the messages that may go at `now`: in the closed loop, up to
    /// the pipeline until the window ends; in the open loop, those due.
    fn queue_due(&mut self, now: Instant) {
        match self.pacing {
            Pacing::Closed { pipeline } if now < self.end => {
                while self.starts.len() < pipeline {
                    queue(&self.pattern, self.sent, &mut self.queued);
                    self.starts.push_back(now);
                    self.sent += 1;
                }
            }
            Pacing::Closed { .. } => {}
            // Every message due inside the window is sent, even when the
            // window has closed by the time there is room for it: the late
            // ones are the slow ones, and dropping them would hide them.
            Pacing::Open { interval, .. } => {
                let mut on_schedule = 0;
                while self.due <= now && self.due < self.end && !self.full() {
                    queue(&self.pattern, self.sent, &mut self.queued);
                    let due = self.due;
                    self.starts.push_back(due + (now - due).min(TIMER_SLACK));
                    on_schedule += u64::from(self.stats.in_window(due.into_std()));
                    self.sent += 1;
                    self.due += interval;
                }
                self.stats
                    .sent
                    .fetch_add(on_schedule, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// Sends what is queued, as far as the socket takes it; true if TLS
    /// still holds bytes the socket would not take.
    fn send_queued(&mut self) -> Result<bool, String> {
        while self.written < self.queued.len() {
            match self.stream.try_write(&self.queued[self.written..]) {
                Ok(n) => self.written += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => return Err(format!("write failed: {err}")),
            }
        }
        // TLS: push what rustls holds encrypted to the socket too.
        let flush_pending = match self.stream.try_flush() {
            Ok(()) => false,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => true,
            Err(err) => return Err(format!("write failed: {err}")),
        };
        if self.written == self.queued.len() {
            self.queued.clear();
            self.written = 0;
        } else if self.written > MAX_QUEUED_BYTES {
            // A socket that keeps taking only part: drop the sent prefix so
            // the buffer stays bounded.
            self.queued.drain(..self.written);
            self.written = 0;
        }
        Ok(flush_pending)
    }

    /// True once every message due is sent and echoed, and nothing is left
    /// to write.
    fn finished(&self, now: Instant) -> bool {
        let all_due_sent = match self.pacing {
            Pacing::Open { .. } => self.due >= self.end,
            Pacing::Closed { .. } => now >= self.end,
        };
        all_due_sent && self.starts.is_empty() && self.queued.is_empty()
    }

    /// Reads what the socket holds, checks it, and records the latency of
    /// every message it completes.
    fn take_echoes(&mut self) -> Result<(), String> {
        let read = match self.stream.try_read(&mut self.inbound) {
            Ok(0) => {
                return Err(format!(
                    "server closed the connection with {} messages unanswered",
                    self.starts.len()
                ));
            }
            Ok(read) => read,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(err) => return Err(format!("read failed: {err}")),
        };
        let received = &self.inbound[..read];
        let done = self
            .verifier
            .check(received)
            .map_err(|mismatch| differs(&mismatch, self.size, received))?;
        let arrived = Instant::now();
        for _ in 0..done {
            let Some(start) = self.starts.pop_front() else {
                return Err("server echoed more than was sent".to_owned());
            };
            self.recorder
                .record(start.into_std(), arrived.into_std(), self.size);
        }
        self.arrival = Some(arrived);
        Ok(())
    }

    /// True when an open-loop connection may queue nothing more: too many
    /// bytes unsent, or too many messages unanswered.
    fn full(&self) -> bool {
        self.queued.len() - self.written >= MAX_QUEUED_BYTES || self.starts.len() >= MAX_UNANSWERED
    }

    fn missing(&self) -> String {
        missing(self.starts.len(), &self.verifier)
    }
}

/// What to say of an echo that differs from what was sent, with a hint when
/// the difference is a missing newline or a server that speaks TLS.
fn differs(mismatch: &Mismatch, size: usize, received: &[u8]) -> String {
    format!(
        "echo differs from what was sent: message {}, byte {}{}",
        mismatch.message,
        mismatch.offset,
        if mismatch.offset == size {
            format!(" (the newline owed after it: {APPEND_NEWLINE_HINT})")
        } else if mismatch.message == 0 && mismatch.offset == 0 && tls::looks_like_tls(received) {
            format!(" ({SPEAKS_TLS_HINT})")
        } else {
            String::new()
        }
    )
}

fn missing(echoes: usize, verifier: &Verifier) -> String {
    let owed = if verifier.owes_newline() {
        format!(
            " (every byte came back, but not the newline owed after the last \
             message: {APPEND_NEWLINE_HINT})"
        )
    } else {
        String::new()
    };
    format!(
        "{echoes} echoes still missing {} s after the end{owed}",
        DRAIN_TIMEOUT.as_secs()
    )
}

fn queue(pattern: &Pattern, message: u64, queued: &mut Vec<u8>) {
    let from = queued.len();
    queued.resize(from + pattern.message_size(), 0);
    pattern.write(message, &mut queued[from..]);
}

/// Half-closes (with TLS, a close_notify first) and expects nothing more
/// than the server's end of the stream back: with TLS, its close_notify; a
/// TCP close without one is an error.
pub async fn close(
    mut stream: Transport,
    verifier: &mut Verifier,
    inbound: &mut [u8],
) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .shutdown()
        .await
        .map_err(|err| format!("half-close failed: {err}"))?;
    let finish = async {
        loop {
            let extra = "server sent bytes that were never sent to it";
            match stream.read(inbound).await {
                Ok(0) if verifier.at_boundary() => return Ok(()),
                Ok(0) => return Err(extra.to_owned()),
                // Only newlines a server appends may follow the last echo.
                Ok(read) => {
                    if verifier.check(&inbound[..read]) != Ok(0) {
                        return Err(extra.to_owned());
                    }
                }
                Err(err) => return Err(format!("read after half-close failed: {err}")),
            }
        }
    };
    match tokio::time::timeout(DRAIN_TIMEOUT, finish).await {
        Ok(result) => result,
        Err(_) => Err("server did not close after the client's half-close".to_owned()),
    }
}
