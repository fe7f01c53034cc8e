//! One accepted connection as a handler sees it: its byte stream (plain
//! TCP, or TLS with the handshake done), the socket already registered with
//! the reactor of the runtime that serves it, plus the two things that may
//! end it from outside, the idle rule and the shutdown cut.
//!
//! The idle rule closes a connection that stays silent for the idle
//! timeout, or that moves fewer bytes than the minimum rate asks for over a
//! window of that length: a client trickling a byte every few seconds is
//! never silent for long, yet holds its connection slot for nothing.
//!
//! Both are watched without work per message. The idle timer is armed once
//! and only re-armed when it fires (activity merely records an instant, and
//! bytes a count), and the cut is a `watch` channel whose waiters are spread
//! over several locks, so thousands of connections waiting on it do not
//! contend.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::buffer::Buffer;
use crate::metrics::tally;
use crate::transport::Transport;

/// What [`Connection::ready`] woke up for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The socket has data, an end-of-file or an error to read.
    Readable,
    /// Nothing happened for the idle timeout, or too little: fewer bytes
    /// than the minimum rate over a window of the idle timeout.
    IdleTimeout,
    /// The server is shutting down and the shutdown timeout has passed: write
    /// back what is owed, then close.
    Shutdown,
}

/// An accepted connection and the limits it is served under.
#[derive(Debug)]
pub struct Connection {
    transport: Transport,
    peer: SocketAddr,
    idle: Option<IdleTimer>,
    cut: watch::Receiver<bool>,
    cut_seen: bool,
    /// Whether bytes read and written are counted in the server's metrics.
    metered: bool,
}

/// When a connection counts as idle: silent for `timeout`, or, when
/// `quota` is not 0, fewer than `quota` bytes moved (in and out together) in
/// a window of `timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdleRule {
    pub(crate) timeout: Duration,
    pub(crate) quota: u64,
}

impl IdleRule {
    /// The rule for an idle timeout and a minimum rate in bytes per second
    /// (0: silence is the only rule).
    pub(crate) fn new(timeout: Duration, min_rate: u64) -> IdleRule {
        // rate x timeout, rounded up, in integers; an absurd rate over a
        // year-long window saturates to "never enough", not an overflow.
        let quota = (u128::from(min_rate) * timeout.as_nanos()).div_ceil(1_000_000_000);
        IdleRule {
            timeout,
            quota: u64::try_from(quota).unwrap_or(u64::MAX),
        }
    }
}

/// What the idle rule says at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The connection is idle: close it.
    Idle,
    /// Nothing to do before this instant.
    Until(Instant),
    /// Never: the deadlines lie beyond what an `Instant` can hold.
    Never,
}

#[derive(Debug)]
struct IdleTimer {
    rule: IdleRule,
    last_activity: Instant,
    /// The current rate window and the bytes moved in it.
    window_start: Instant,
    window_bytes: u64,
    /// The deadlines overflowed: the rule can never fire.
    never: bool,
    // Boxed so that the connection can move; allocated once per connection.
    sleep: Pin<Box<Sleep>>,
}

impl IdleTimer {
    fn new(rule: IdleRule) -> Self {
        let now = Instant::now();
        IdleTimer {
            rule,
            last_activity: now,
            window_start: now,
            window_bytes: 0,
            never: false,
            sleep: Box::pin(tokio::time::sleep(rule.timeout)),
        }
    }

    /// Judges the connection at `now`: idle if a whole timeout has passed
    /// without activity, or a window has closed short of its quota. A
    /// window that met its quota is followed by the next, from `now`.
    fn judge(&mut self, now: Instant) -> Verdict {
        let timeout = self.rule.timeout;
        let Some(idle_deadline) = self.last_activity.checked_add(timeout) else {
            return Verdict::Never;
        };
        if now >= idle_deadline {
            return Verdict::Idle;
        }
        if self.rule.quota == 0 {
            return Verdict::Until(idle_deadline);
        }
        let Some(window_end) = self.window_start.checked_add(timeout) else {
            return Verdict::Never;
        };
        if now < window_end {
            return Verdict::Until(idle_deadline.min(window_end));
        }
        if self.window_bytes < self.rule.quota {
            return Verdict::Idle;
        }
        self.window_start = now;
        self.window_bytes = 0;
        match now.checked_add(timeout) {
            Some(window_end) => Verdict::Until(idle_deadline.min(window_end)),
            None => Verdict::Never,
        }
    }

    /// Re-arms the timer for `verdict`; true if the connection is idle.
    fn rearm(&mut self, verdict: Verdict) -> bool {
        match verdict {
            Verdict::Idle => true,
            // The only place the timer wheel is touched after the first
            // arming: once per timeout at most.
            Verdict::Until(next) => {
                self.sleep.as_mut().reset(next);
                false
            }
            Verdict::Never => {
                self.never = true;
                false
            }
        }
    }

    /// True if the rule's next deadline has passed and it says idle. One
    /// clock read: for a connection so busy that its timer is never
    /// polled, which would otherwise never be judged.
    fn idle_now(&mut self) -> bool {
        let now = Instant::now();
        if self.never || now < self.sleep.deadline() {
            return false;
        }
        let verdict = self.judge(now);
        self.rearm(verdict)
    }

    /// Completes once the rule says idle.
    async fn expired(&mut self) {
        loop {
            if self.never {
                std::future::pending::<()>().await;
            }
            self.sleep.as_mut().await;
            let verdict = self.judge(Instant::now());
            if self.rearm(verdict) {
                return;
            }
        }
    }
}

impl Connection {
    /// Wraps a socket registered with the current runtime. Must be called
    /// from inside that runtime (the idle timer registers with it too).
    pub(crate) fn new(
        transport: Transport,
        peer: SocketAddr,
        idle: Option<IdleRule>,
        cut: watch::Receiver<bool>,
        metered: bool,
    ) -> Self {
        Connection {
            transport,
            peer,
            idle: idle.map(IdleTimer::new),
            cut,
            cut_seen: false,
            metered,
        }
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The TCP socket, for its options. With TLS, bytes read or written on
    /// it directly bypass the encryption: use
    /// [`stream_mut`](Self::stream_mut) for data.
    pub fn stream(&self) -> &TcpStream {
        self.transport.tcp()
    }

    /// The TLS session (version, cipher suite, ALPN protocol), when the
    /// server speaks TLS.
    pub fn tls(&self) -> Option<&rustls::CommonState> {
        self.transport.tls()
    }

    /// Reads what the stream has without waiting, as
    /// [`TcpStream::try_read`]: `Ok(0)` is end-of-file (with TLS, the peer's
    /// close_notify), `WouldBlock` means the readiness was stale. Counted
    /// in the metrics and towards the minimum rate.
    pub fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.transport.try_read(buf)?;
        self.moved(read);
        if self.metered {
            tally::received(read);
        }
        Ok(read)
    }

    /// Counts `bytes` towards the current rate window.
    fn moved(&mut self, bytes: usize) {
        if let Some(idle) = &mut self.idle {
            idle.window_bytes = idle.window_bytes.saturating_add(bytes as u64);
        }
    }

    /// The byte stream, plain or TLS, for tokio's `AsyncRead`/`AsyncWrite`
    /// helpers. Bytes moved through it directly rather than through
    /// [`try_read`](Self::try_read) and [`write_all`](Self::write_all) are
    /// counted neither in the metrics nor towards the minimum rate unless
    /// the handler reports them with [`record`](Self::record): a handler
    /// that moves data this way and does not would be closed as idle after
    /// one window.
    pub fn stream_mut(&mut self) -> &mut Transport {
        &mut self.transport
    }

    /// Reports bytes moved through [`stream_mut`](Self::stream_mut):
    /// counted in the metrics and towards the minimum rate, as those of
    /// `try_read` and `write_all` are.
    pub fn record(&mut self, received: usize, sent: usize) {
        self.moved(received.saturating_add(sent));
        if self.metered {
            tally::received(received);
            tally::sent(sent);
        }
    }

    /// Records activity, so that the idle timeout counts from now. Counts
    /// no bytes towards the minimum rate: see [`record`](Self::record).
    pub fn touch(&mut self) {
        if let Some(idle) = &mut self.idle {
            idle.last_activity = Instant::now();
        }
    }

    /// Waits until the socket is readable, the idle timeout has passed, or
    /// the server cuts the connection at the end of a shutdown. Holds no data
    /// buffer while it waits.
    pub async fn ready(&mut self) -> io::Result<Event> {
        // `readable()`, `try_read` and `try_write` never spend tokio's
        // cooperative budget, so a peer that keeps its socket readable and
        // writable would keep this task running, and its worker thread (a
        // whole shard, or the accept loop in `single`) from everything
        // else, for as long as it streams. One budget unit per chunk makes
        // the task yield every 128 chunks, as tokio's own I/O does.
        tokio::task::coop::consume_budget().await;
        // Checked before the socket, so that a peer that never stops sending
        // is still cut. `has_changed` is one atomic load; an error means the
        // sender is gone, which only happens when the server is torn down.
        if self.cut_seen || self.cut.has_changed().unwrap_or(true) {
            self.cut_seen = true;
            return Ok(Event::Shutdown);
        }
        // A connection whose socket is always readable never gets to the
        // timer below, so its rule is judged here, against the clock.
        if let Some(idle) = &mut self.idle
            && idle.idle_now()
        {
            return Ok(Event::IdleTimeout);
        }
        let idle = self.idle.as_mut();
        let has_idle = idle.is_some();
        tokio::select! {
            // Data first: a connection with bytes to echo is served before
            // its timers are looked at.
            biased;
            readable = self.transport.readable() => {
                readable?;
                Ok(Event::Readable)
            }
            _ = self.cut.changed() => {
                self.cut_seen = true;
                Ok(Event::Shutdown)
            }
            () = async { if let Some(idle) = idle { idle.expired().await } }, if has_idle => {
                Ok(Event::IdleTimeout)
            }
        }
    }

    /// Writes all of `buf` (with TLS, all the way to the socket). The
    /// common case, a socket with room in its send buffer, costs no timer.
    /// A peer that stops reading is held to the idle rule while the write
    /// waits: the idle timeout counts from the last byte the socket took,
    /// and the minimum rate still applies. When the rule says idle, the
    /// write fails with `TimedOut`.
    /// Every byte the stream takes is counted in the metrics and towards
    /// the minimum rate.
    pub async fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        let mut waited = false;
        while !buf.is_empty() {
            match self.transport.try_write(buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.moved(n);
                    if self.metered {
                        tally::sent(n);
                    }
                    buf = &buf[n..];
                    // Progress after a wait is activity; on the fast path
                    // the handler's `touch` records it, without a clock
                    // read per write.
                    if waited {
                        self.touch();
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    waited = true;
                    self.writable().await?;
                }
                Err(err) => return Err(err),
            }
        }
        // TLS: what rustls still holds, encrypted. Each wait that ends is
        // the peer taking bytes, so it counts as activity.
        while let Err(err) = self.transport.try_flush() {
            if err.kind() != io::ErrorKind::WouldBlock {
                return Err(err);
            }
            self.writable().await?;
            self.touch();
        }
        Ok(())
    }

    /// Half-closes the connection: everything written so far, then (with
    /// TLS) a close_notify, then the FIN. The peer may go on sending; the
    /// handler may go on reading. Waits, under the idle rule as
    /// [`write_all`](Self::write_all) does, only if the socket is full.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        while let Err(err) = self.transport.try_shutdown() {
            if err.kind() != io::ErrorKind::WouldBlock {
                return Err(err);
            }
            self.writable().await?;
        }
        Ok(())
    }

    /// Waits until the socket has room, or the idle rule says the peer has
    /// stopped reading (`TimedOut`).
    async fn writable(&mut self) -> io::Result<()> {
        let Some(idle) = self.idle.as_mut() else {
            return self.transport.writable().await;
        };
        if idle.idle_now() {
            return Err(not_reading());
        }
        tokio::select! {
            writable = self.transport.writable() => writable,
            () = idle.expired() => Err(not_reading()),
        }
    }

    /// Reads and discards what the peer still sends, until it closes or
    /// `limit` passes. Called after the server's FIN on a connection it
    /// closes first: closing a socket with unread data makes the kernel send
    /// a reset, which can destroy echo bytes still on their way to the peer.
    pub(crate) async fn linger(&mut self, limit: Duration) {
        let mut scratch = Buffer::lease(LINGER_SCRATCH);
        let drain = async {
            loop {
                // The raw socket, even under TLS: these bytes are thrown
                // away, and the session is over.
                let tcp = self.transport.tcp();
                if tcp.readable().await.is_err() {
                    return;
                }
                match tcp.try_read(&mut scratch) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        };
        let _ = tokio::time::timeout(limit, drain).await;
    }
}

/// The error of a write whose peer broke the idle rule.
fn not_reading() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "peer did not read its echo within the idle rule (--idle-timeout, --min-rate)",
    )
}

/// Size of the buffer that lingering reads discard into.
const LINGER_SCRATCH: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_IDLE_TIMEOUT, DEFAULT_MIN_RATE};

    /// Runs a client that, every `interval`, sends `bytes` and has them
    /// echoed, against the idle rule, in paused time; returns when the rule
    /// closed the connection, or `None` if it had not after `limit`.
    async fn closed_after(
        rule: IdleRule,
        interval: Duration,
        bytes: u64,
        limit: Duration,
    ) -> Option<Duration> {
        let start = Instant::now();
        let mut timer = IdleTimer::new(rule);
        let mut next = start + interval;
        loop {
            tokio::select! {
                () = timer.expired() => return Some(start.elapsed()),
                () = tokio::time::sleep_until(next), if bytes > 0 => {
                    // In and echoed out: twice the bytes moved.
                    timer.window_bytes += 2 * bytes;
                    timer.last_activity = Instant::now();
                    next += interval;
                }
                () = tokio::time::sleep_until(start + limit) => return None,
            }
        }
    }

    #[test]
    fn the_default_quota_is_300_bytes_per_5_minutes() {
        let rule = IdleRule::new(DEFAULT_IDLE_TIMEOUT, DEFAULT_MIN_RATE);
        assert_eq!(rule.quota, 300);
        assert_eq!(IdleRule::new(Duration::from_millis(1500), 3).quota, 5);
        assert_eq!(
            IdleRule::new(Duration::from_secs(365 * 86400), u64::MAX).quota,
            u64::MAX
        );
    }

    #[tokio::test(start_paused = true)]
    async fn with_the_defaults_a_silent_client_is_closed_after_5_minutes() {
        let rule = IdleRule::new(DEFAULT_IDLE_TIMEOUT, DEFAULT_MIN_RATE);
        let closed = closed_after(rule, Duration::from_secs(1), 0, Duration::from_secs(3600));
        assert_eq!(closed.await, Some(Duration::from_secs(300)));
    }

    #[tokio::test(start_paused = true)]
    async fn with_the_defaults_a_byte_every_3_seconds_is_closed_after_one_window() {
        // Never silent for more than 3 s, yet 200 bytes moved in 300 s.
        let rule = IdleRule::new(DEFAULT_IDLE_TIMEOUT, DEFAULT_MIN_RATE);
        let closed = closed_after(rule, Duration::from_secs(3), 1, Duration::from_secs(3600));
        assert_eq!(closed.await, Some(Duration::from_secs(300)));
    }

    #[tokio::test(start_paused = true)]
    async fn with_the_defaults_a_byte_a_second_keeps_its_connection() {
        let rule = IdleRule::new(DEFAULT_IDLE_TIMEOUT, DEFAULT_MIN_RATE);
        let closed = closed_after(rule, Duration::from_secs(1), 1, Duration::from_secs(3600));
        assert_eq!(closed.await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_minimum_rate_only_silence_closes() {
        let rule = IdleRule::new(DEFAULT_IDLE_TIMEOUT, 0);
        let trickle = closed_after(rule, Duration::from_secs(3), 1, Duration::from_secs(3600));
        assert_eq!(trickle.await, None);
        let silent = closed_after(rule, Duration::from_secs(3), 0, Duration::from_secs(3600));
        assert_eq!(silent.await, Some(Duration::from_secs(300)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_falls_silent_is_closed_one_timeout_after_its_last_byte() {
        // Active for a minute at a good rate, then silent: the silence
        // rule, counted from the last byte, closes it.
        let rule = IdleRule::new(Duration::from_secs(10), 1);
        let start = Instant::now();
        let mut timer = IdleTimer::new(rule);
        for _ in 0..60 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            timer.window_bytes += 100;
            timer.last_activity = Instant::now();
        }
        timer.expired().await;
        assert_eq!(start.elapsed(), Duration::from_secs(70));
    }
}
