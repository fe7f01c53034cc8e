//! `tandem bench --udp`: the load of a run over UDP. This module owns the
//! sockets, what a datagram carries and the check of its echo, the closed
//! and open loops over datagrams, and the loss figures; the warm-up, the
//! window, the progress bar, the server's scrapes and the report are the
//! run's ([`super::measure`](super::measure::measure)), the same as over TCP.
//!
//! Each `--connections` is a UDP socket `connect`ed to the target, so the
//! kernel drops datagrams from anyone else. A datagram is its 8-byte
//! sequence number (little-endian) followed by the socket's pattern for
//! that sequence. Echoes are matched by sequence, not by order, since UDP
//! may reorder; each must equal its datagram byte for byte. A wrong length,
//! wrong bytes, or a sequence never sent or echoed twice is an error and
//! ends the socket, as a bad echo ends a TCP connection.
//!
//! UDP may also drop, so a datagram not echoed within [`LOSS_TIMEOUT`] is
//! lost, not an error: it frees its closed-loop slot and counts in `lost`
//! and `loss_ratio`. A run whose window had every datagram lost fails, so
//! that a target that is not there cannot pass for a lossy one.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::client::{DRAIN_TIMEOUT, Pacing, TIMER_SLACK};
use super::error::BenchError;
use super::measure::{Load, measure, pacing};
use super::options::{BenchOptions, MIN_DATAGRAM};
use super::pattern::Pattern;
use super::report::Report;
use super::stats::{Recorder, Stats};

/// How long an echo may take before its datagram counts as lost. Loopback
/// answers in microseconds and a loaded network in milliseconds: an echo
/// later than this is not coming, or comes too late to be a measurement.
pub const LOSS_TIMEOUT: Duration = Duration::from_secs(1);
/// Sequences just below the oldest one awaited whose fate (echoed or lost)
/// a socket remembers, to tell a duplicate echo from a late one. An echo
/// older than that is taken as late: UDP may delay, and no test of this
/// size can tell.
const HISTORY: usize = 4096;
/// Most datagrams from the oldest awaited to the newest sent, per socket:
/// with the oldest waiting out its loss timeout, this bounds the memory of
/// a loop that keeps sending behind it. The open loop stops sending here
/// (and the report says it fell behind); the closed loop waits.
const MAX_SPAN: usize = 1 << 18;
/// Echoes taken per readiness before sending again, so that a flood of
/// echoes cannot starve the socket's own schedule.
const RECV_BATCH: usize = 64;
/// Receive buffer asked for each socket (the kernel caps it at
/// `net.core.rmem_max`): a generator that falls behind for a moment should
/// not turn that into loss charged to the server.
const RECV_BUFFER: usize = 4 * 1024 * 1024;
/// Attempts at one send while the socket keeps reporting an earlier
/// datagram's ICMP port unreachable instead of sending.
const SEND_ATTEMPTS: usize = 4;

/// The datagram figures of a run, shared by its sockets.
#[derive(Debug, Default)]
struct Datagrams {
    /// Datagrams started (sent, or due, in the open loop) within the window.
    sent: AtomicU64,
    /// Of those, the ones never echoed within [`LOSS_TIMEOUT`].
    lost: AtomicU64,
    /// A send or receive reported ICMP port unreachable: nothing listens.
    refused: AtomicBool,
}

/// Runs the UDP load of `options`.
pub(super) async fn run(options: &BenchOptions, show_progress: bool) -> Result<Report, BenchError> {
    let datagrams = Arc::new(Datagrams::default());
    let open = async { open_all(options) };
    let report = measure(options, show_progress, open, |sockets, load: Load<'_>| {
        let count = sockets.len();
        for (id, socket) in sockets.into_iter().enumerate() {
            let pacing = pacing(options, load.start, id, count);
            let pattern = load.block.pattern(id as u64, options.message_size);
            let (stats, datagrams) = (load.stats.clone(), datagrams.clone());
            load.tasks.spawn(async move {
                if let Err(what) = drive(socket, pattern, pacing, &stats, &datagrams).await {
                    stats.error(what);
                }
            });
        }
    })
    .await?;
    Ok(with_losses(report, &datagrams))
}

/// Adds the loss figures to `report`, and fails a run whose window had
/// every datagram lost.
fn with_losses(mut report: Report, datagrams: &Datagrams) -> Report {
    let sent = datagrams.sent.load(Ordering::Relaxed);
    let lost = datagrams.lost.load(Ordering::Relaxed);
    report.lost = Some(lost);
    report.loss_ratio = Some(if sent == 0 {
        0.0
    } else {
        lost as f64 / sent as f64
    });
    if report.messages == 0 && lost > 0 {
        let why = if datagrams.refused.load(Ordering::Relaxed) {
            "; the target answered ICMP port unreachable: is it serving UDP?"
        } else {
            ""
        };
        report.errors += 1;
        report.first_error.get_or_insert(format!(
            "no datagram was echoed ({lost} sent in the window, all lost{why})"
        ));
    }
    report
}

/// Opens one socket per `--connections`, each connected to the target.
fn open_all(options: &BenchOptions) -> Result<Vec<UdpSocket>, BenchError> {
    let mut sockets = Vec::with_capacity(options.connections);
    for _ in 0..options.connections {
        match open(options.target) {
            Ok(socket) => sockets.push(socket),
            Err(cause) => {
                return Err(BenchError::Connect {
                    target: options.target,
                    cause,
                    opened: sockets.len(),
                    wanted: options.connections,
                });
            }
        }
    }
    Ok(sockets)
}

/// A socket on an ephemeral port, connected to `target`: on loopback when
/// the target is, so that the run's ports are not open beyond the machine;
/// otherwise on any address of the target's family, for the route to pick.
fn open(target: SocketAddr) -> io::Result<UdpSocket> {
    let local: IpAddr = match (target, target.ip().is_loopback()) {
        (SocketAddr::V4(_), true) => Ipv4Addr::LOCALHOST.into(),
        (SocketAddr::V4(_), false) => Ipv4Addr::UNSPECIFIED.into(),
        (SocketAddr::V6(_), true) => Ipv6Addr::LOCALHOST.into(),
        (SocketAddr::V6(_), false) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = Socket::new(
        Domain::for_address(target),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    socket.set_nonblocking(true)?;
    // Best effort: the kernel's cap applies, and the default still works.
    let _ = socket.set_recv_buffer_size(RECV_BUFFER);
    socket.bind(&SocketAddr::new(local, 0).into())?;
    socket.connect(&target.into())?;
    UdpSocket::from_std(socket.into())
}

/// What one socket counted, added to the run's [`Datagrams`] when it ends,
/// however it ends.
#[derive(Debug, Default)]
struct Counts {
    sent: u64,
    lost: u64,
    refused: bool,
}

/// Drives one socket until the window ends and every datagram of it is
/// echoed or lost. Returns a description of what went wrong, if anything
/// did.
async fn drive(
    socket: UdpSocket,
    pattern: Pattern,
    pacing: Pacing,
    stats: &Stats,
    datagrams: &Datagrams,
) -> Result<(), String> {
    let mut counts = Counts::default();
    let result = exchange(&socket, &pattern, pacing, stats, &mut counts).await;
    datagrams.sent.fetch_add(counts.sent, Ordering::Relaxed);
    datagrams.lost.fetch_add(counts.lost, Ordering::Relaxed);
    if counts.refused {
        datagrams.refused.store(true, Ordering::Relaxed);
    }
    result
}

/// The loop of [`drive`]: sends on `pacing`, takes echoes and settles
/// losses, counting into `counts`.
async fn exchange(
    socket: &UdpSocket,
    pattern: &Pattern,
    pacing: Pacing,
    stats: &Stats,
    counts: &mut Counts,
) -> Result<(), String> {
    let mut exchange = Exchange::new(socket, pattern, pacing, stats, counts);
    let end = exchange.end;
    let mut timer = pin!(tokio::time::sleep_until(end));
    loop {
        let now = Instant::now();
        exchange.settle_losses(now);
        exchange.send_due(now)?;
        if exchange.all_sent(now) && exchange.flight.waiting == 0 {
            return Ok(());
        }
        // Only a socket that never takes another datagram gets here: each
        // one sent is echoed or lost within the loss timeout.
        if now >= end + DRAIN_TIMEOUT {
            return Err(format!(
                "datagrams due in the window still unsent {} s after it",
                DRAIN_TIMEOUT.as_secs()
            ));
        }
        let wake = exchange.wake();
        if let Some(wake) = wake
            && timer.deadline() != wake
        {
            timer.as_mut().reset(wake);
        }
        tokio::select! {
            biased;
            readable = socket.readable() => {
                readable.map_err(|err| format!("receive failed: {err}"))?;
                exchange.receive()?;
            }
            writable = socket.writable(), if exchange.blocked => {
                writable.map_err(|err| format!("send failed: {err}"))?;
                exchange.blocked = false;
            }
            () = timer.as_mut(), if wake.is_some() => {}
        }
    }
}

/// The state of one socket that [`exchange`] steps through.
struct Exchange<'a> {
    socket: &'a UdpSocket,
    pattern: &'a Pattern,
    pacing: Pacing,
    stats: &'a Stats,
    counts: &'a mut Counts,
    /// Bytes of one datagram.
    size: usize,
    /// The end of the window.
    end: Instant,
    recorder: Recorder<'a>,
    flight: Flight,
    outbound: Vec<u8>,
    expected: Vec<u8>,
    inbound: Vec<u8>,
    /// Open loop: when the next datagram is due (closed loop: the end).
    due: Instant,
    /// The last send found the socket's buffer full: wait until it drains.
    blocked: bool,
}

impl<'a> Exchange<'a> {
    fn new(
        socket: &'a UdpSocket,
        pattern: &'a Pattern,
        pacing: Pacing,
        stats: &'a Stats,
        counts: &'a mut Counts,
    ) -> Exchange<'a> {
        let size = pattern.message_size();
        let end = Instant::from_std(stats.measure_until);
        Exchange {
            socket,
            pattern,
            pacing,
            stats,
            counts,
            size,
            end,
            recorder: Recorder::new(stats),
            flight: Flight::new(),
            outbound: vec![0u8; size],
            expected: vec![0u8; size],
            // One byte more than a datagram, so that a longer echo shows as
            // such.
            inbound: vec![0u8; size + 1],
            due: match pacing {
                Pacing::Open { first, .. } => first,
                Pacing::Closed { .. } => end,
            },
            blocked: false,
        }
    }

    /// Counts as lost every datagram whose loss timeout has passed by `now`.
    fn settle_losses(&mut self, now: Instant) {
        let mut any_lost = false;
        let (stats, counts) = (self.stats, &mut *self.counts);
        self.flight.expire(now, |start| {
            any_lost = true;
            if stats.in_window(start.into_std()) {
                counts.lost += 1;
            }
        });
        // A port unreachable wakes neither reads nor writes: it waits in
        // the socket's error until a send or receive. Look for it when
        // datagrams go missing, to say why.
        if any_lost
            && let Ok(Some(err)) = self.socket.take_error()
            && err.kind() == io::ErrorKind::ConnectionRefused
        {
            self.counts.refused = true;
        }
    }

    /// Sends what may go at `now`: in the closed loop, up to the pipeline
    /// until the window ends; in the open loop, what is due.
    fn send_due(&mut self, now: Instant) -> Result<(), String> {
        match self.pacing {
            Pacing::Closed { pipeline } => {
                while !self.blocked
                    && now < self.end
                    && self.flight.waiting < pipeline
                    && self.flight.has_room()
                {
                    self.blocked = !self.send_next(now)?;
                }
            }
            // As over TCP, every datagram due inside the window is sent,
            // late or not, and timed from when it was due.
            Pacing::Open { interval, .. } => {
                let mut on_schedule = 0;
                while !self.blocked
                    && self.due <= now
                    && self.due < self.end
                    && self.flight.has_room()
                {
                    let start = self.due + (now - self.due).min(TIMER_SLACK);
                    if !self.send_next(start)? {
                        self.blocked = true;
                        break;
                    }
                    on_schedule += u64::from(self.stats.in_window(self.due.into_std()));
                    self.due += interval;
                }
                self.stats.sent.fetch_add(on_schedule, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Sends the socket's next datagram, timed from `start`; false if the
    /// socket's buffer is full.
    fn send_next(&mut self, start: Instant) -> Result<bool, String> {
        write_datagram(self.pattern, self.flight.next(), &mut self.outbound);
        if !send_whole(self.socket, &self.outbound, &mut self.counts.refused)? {
            return Ok(false);
        }
        self.flight.sent(start, Instant::now());
        self.counts.sent += u64::from(self.stats.in_window(start.into_std()));
        Ok(true)
    }

    /// True once every datagram due has been sent.
    fn all_sent(&self, now: Instant) -> bool {
        match self.pacing {
            Pacing::Open { .. } => self.due >= self.end,
            Pacing::Closed { .. } => now >= self.end,
        }
    }

    /// When to wake without the socket: the next datagram due, or the next
    /// loss timeout, whichever comes first.
    fn wake(&self) -> Option<Instant> {
        let next_due = match self.pacing {
            Pacing::Open { .. }
                if self.due < self.end && !self.blocked && self.flight.has_room() =>
            {
                Some(self.due)
            }
            _ => None,
        };
        match (next_due, self.flight.expiry()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes up to [`RECV_BATCH`] echoes and records the latency of each
    /// that answers a datagram still awaited.
    fn receive(&mut self) -> Result<(), String> {
        for _ in 0..RECV_BATCH {
            let len = match self.socket.try_recv(&mut self.inbound) {
                Ok(len) => len,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                // An earlier datagram's ICMP port unreachable: that
                // datagram is lost, and its timeout will say so.
                Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
                    self.counts.refused = true;
                    continue;
                }
                Err(err) => return Err(format!("receive failed: {err}")),
            };
            let arrived = Instant::now();
            let echo = &self.inbound[..len];
            if let Some(start) = check(self.pattern, &mut self.flight, echo, &mut self.expected)? {
                self.recorder
                    .record(start.into_std(), arrived.into_std(), self.size);
            }
        }
        Ok(())
    }
}

/// Datagram number `sequence` of `pattern`: the sequence, then the
/// pattern's bytes.
fn write_datagram(pattern: &Pattern, sequence: u64, out: &mut [u8]) {
    pattern.write(sequence, out);
    out[..MIN_DATAGRAM].copy_from_slice(&sequence.to_le_bytes());
}

/// Sends `datagram` whole; false if the socket's buffer is full.
fn send_whole(socket: &UdpSocket, datagram: &[u8], refused: &mut bool) -> Result<bool, String> {
    for _ in 0..SEND_ATTEMPTS {
        match socket.try_send(datagram) {
            Ok(sent) if sent == datagram.len() => return Ok(true),
            Ok(sent) => {
                return Err(format!(
                    "send took {sent} of a {}-byte datagram",
                    datagram.len()
                ));
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            // The kernel reports an earlier datagram's ICMP port
            // unreachable on this send instead of sending: try again.
            Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => *refused = true,
            Err(err) => return Err(format!("send failed: {err}")),
        }
    }
    // Refused at every attempt: the target is not there, and this datagram
    // would be lost anyway. Counted as sent, its timeout makes it lost.
    Ok(true)
}

/// Checks `echo` against what was sent; returns the start of the datagram
/// it answers, or `None` for an echo of one already counted lost.
fn check(
    pattern: &Pattern,
    flight: &mut Flight,
    echo: &[u8],
    expected: &mut [u8],
) -> Result<Option<Instant>, String> {
    if echo.len() != expected.len() {
        return Err(format!(
            "echo length differs from what was sent: {} bytes for a {}-byte datagram",
            echo.len(),
            expected.len()
        ));
    }
    let mut head = [0u8; MIN_DATAGRAM];
    head.copy_from_slice(&echo[..MIN_DATAGRAM]);
    let sequence = u64::from_le_bytes(head);
    let start = flight.echoed(sequence)?;
    write_datagram(pattern, sequence, expected);
    if echo != expected {
        let offset = echo.iter().zip(expected.iter()).position(|(a, b)| a != b);
        return Err(format!(
            "echo differs from what was sent: datagram {sequence}, byte {}",
            offset.unwrap_or(0)
        ));
    }
    Ok(start)
}

/// A datagram sent and not yet echoed.
#[derive(Debug, Clone, Copy)]
struct Awaited {
    /// What its latency counts from: its send, or in the open loop when it
    /// was due.
    start: Instant,
    /// When it actually went: its loss timeout counts from here.
    sent: Instant,
}

/// One socket's datagrams in flight, by sequence, from the oldest still
/// awaited. Sends happen in sequence order, so the oldest awaited is always
/// the next to time out.
#[derive(Debug)]
struct Flight {
    /// Sequence of `slots[0]`.
    base: u64,
    /// `None`: echoed, kept only until every older one is settled.
    slots: VecDeque<Option<Awaited>>,
    /// Slots still awaited.
    waiting: usize,
    /// For the [`HISTORY`] sequences below `base`, indexed by sequence
    /// modulo `HISTORY`: set if echoed, clear if lost.
    history: [u64; HISTORY / 64],
}

impl Flight {
    fn new() -> Flight {
        Flight {
            base: 0,
            slots: VecDeque::new(),
            waiting: 0,
            history: [0; HISTORY / 64],
        }
    }

    /// The sequence of the next datagram to send.
    fn next(&self) -> u64 {
        self.base + self.slots.len() as u64
    }

    /// True if another datagram may be sent.
    fn has_room(&self) -> bool {
        self.slots.len() < MAX_SPAN
    }

    /// Notes datagram [`next`](Self::next) as sent.
    fn sent(&mut self, start: Instant, sent: Instant) {
        self.slots.push_back(Some(Awaited { start, sent }));
        self.waiting += 1;
    }

    /// When the oldest awaited datagram times out.
    fn expiry(&self) -> Option<Instant> {
        self.slots
            .front()
            .copied()
            .flatten()
            .map(|awaited| awaited.sent + LOSS_TIMEOUT)
    }

    /// Settles every datagram whose loss timeout has passed at `now` as
    /// lost, calling `lost` with its start.
    fn expire(&mut self, now: Instant, mut lost: impl FnMut(Instant)) {
        while let Some(Some(awaited)) = self.slots.front().copied() {
            if awaited.sent + LOSS_TIMEOUT > now {
                break;
            }
            self.slots.pop_front();
            self.settle(false);
            self.waiting -= 1;
            lost(awaited.start);
            self.trim();
        }
    }

    /// Takes the echo of datagram `sequence`: its start if it was awaited,
    /// `None` if it was already counted lost; an error if it was never
    /// sent or already echoed.
    fn echoed(&mut self, sequence: u64) -> Result<Option<Instant>, String> {
        let duplicate = || Err(format!("datagram {sequence} echoed twice"));
        if sequence >= self.next() {
            return Err(format!(
                "echo of datagram {sequence}, never sent (next is {})",
                self.next()
            ));
        }
        let Some(index) = sequence.checked_sub(self.base) else {
            let echoed_before = self.base - sequence <= HISTORY as u64 && self.was_echoed(sequence);
            return if echoed_before { duplicate() } else { Ok(None) };
        };
        let slot = &mut self.slots[index as usize];
        let Some(awaited) = slot.take() else {
            return duplicate();
        };
        self.waiting -= 1;
        self.trim();
        Ok(Some(awaited.start))
    }

    /// Drops the echoed slots at the front, so that the front is the
    /// oldest datagram still awaited.
    fn trim(&mut self) {
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.settle(true);
        }
    }

    /// Remembers the fate of sequence `base`, just taken off the front.
    fn settle(&mut self, echoed: bool) {
        let bit = self.base as usize % HISTORY;
        let (word, mask) = (bit / 64, 1u64 << (bit % 64));
        if echoed {
            self.history[word] |= mask;
        } else {
            self.history[word] &= !mask;
        }
        self.base += 1;
    }

    fn was_echoed(&self, sequence: u64) -> bool {
        let bit = sequence as usize % HISTORY;
        self.history[bit / 64] & (1u64 << (bit % 64)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::super::pattern::Block;
    use super::*;

    fn sent(flight: &mut Flight, at: Instant) -> u64 {
        let sequence = flight.next();
        flight.sent(at, at);
        sequence
    }

    #[test]
    fn echoes_are_taken_in_any_order_and_settle_the_front() {
        let at = Instant::now();
        let mut flight = Flight::new();
        let (a, b, c) = (
            sent(&mut flight, at),
            sent(&mut flight, at),
            sent(&mut flight, at),
        );
        assert_eq!(flight.echoed(b).unwrap(), Some(at));
        assert_eq!(flight.slots.len(), 3, "b waits for a to settle");
        assert_eq!(flight.echoed(a).unwrap(), Some(at));
        assert_eq!((flight.base, flight.waiting), (2, 1));
        assert_eq!(flight.echoed(c).unwrap(), Some(at));
        assert!(flight.slots.is_empty());
    }

    #[test]
    fn duplicates_and_unsent_sequences_are_errors_and_late_echoes_are_not() {
        let at = Instant::now();
        let mut flight = Flight::new();
        let (a, b) = (sent(&mut flight, at), sent(&mut flight, at));
        flight.echoed(b).unwrap();
        assert!(flight.echoed(b).unwrap_err().contains("twice"), "in flight");
        let mut lost = Vec::new();
        flight.expire(at + LOSS_TIMEOUT, |start| lost.push(start));
        assert_eq!(lost, [at]);
        assert!(flight.slots.is_empty());
        assert_eq!(flight.echoed(a).unwrap(), None, "late: lost already");
        assert!(flight.echoed(b).unwrap_err().contains("twice"), "settled");
        assert!(flight.echoed(7).unwrap_err().contains("never sent"));
    }

    #[test]
    fn only_datagrams_past_their_timeout_are_lost() {
        let at = Instant::now();
        let mut flight = Flight::new();
        sent(&mut flight, at);
        sent(&mut flight, at + Duration::from_millis(10));
        let mut lost = 0;
        flight.expire(at + LOSS_TIMEOUT, |_| lost += 1);
        assert_eq!((lost, flight.waiting), (1, 1));
        assert_eq!(
            flight.expiry(),
            Some(at + Duration::from_millis(10) + LOSS_TIMEOUT)
        );
    }

    #[test]
    fn an_exact_echo_passes_and_any_changed_byte_or_length_fails() {
        let pattern = Block::new(64, 7, false).pattern(0, 64);
        let at = Instant::now();
        let mut flight = Flight::new();
        let mut expected = vec![0u8; 64];
        let mut datagram = vec![0u8; 64];
        for sequence in 0..3 {
            sent(&mut flight, at);
            write_datagram(&pattern, sequence, &mut datagram);
            assert_eq!(datagram[..8], sequence.to_le_bytes());
        }
        write_datagram(&pattern, 0, &mut datagram);
        assert_eq!(
            check(&pattern, &mut flight, &datagram, &mut expected).unwrap(),
            Some(at)
        );
        write_datagram(&pattern, 1, &mut datagram);
        let short = check(&pattern, &mut flight, &datagram[..63], &mut expected);
        assert!(short.unwrap_err().contains("length"));
        write_datagram(&pattern, 2, &mut datagram);
        datagram[40] ^= 1;
        let err = check(&pattern, &mut flight, &datagram, &mut expected).unwrap_err();
        assert!(err.contains("datagram 2, byte 40"), "{err}");
    }

    #[test]
    fn a_datagram_with_another_ones_sequence_fails() {
        let pattern = Block::new(64, 7, false).pattern(0, 64);
        let at = Instant::now();
        let mut flight = Flight::new();
        sent(&mut flight, at);
        sent(&mut flight, at);
        let mut datagram = vec![0u8; 64];
        write_datagram(&pattern, 0, &mut datagram);
        datagram[..8].copy_from_slice(&1u64.to_le_bytes());
        let mut expected = vec![0u8; 64];
        let err = check(&pattern, &mut flight, &datagram, &mut expected).unwrap_err();
        assert!(err.contains("differs"), "{err}");
    }
}
