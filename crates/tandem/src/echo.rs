//! The echo protocol (RFC 862), and the article's newline variant done right.
//!
//! Every byte read is written back, in order, before the next read; a
//! half-close from the client is answered with everything owed and then a
//! FIN (invariant 6 of [`crate::server`]). The connection borrows a buffer
//! only between a readable socket and the end of the write, so an idle
//! connection holds none, and a client that sends without reading stalls on
//! the write, which stops the reads and lets TCP push back on it. The
//! buffer's size follows the traffic ([`ReadSize`]), up to `buffer_size`,
//! and the buffer budget: with no room left, a read is smaller, or waits
//! for a buffer to be freed.
//!
//! `simulate_work` models a handler that does CPU work per chunk, a fixed
//! cost or one that follows the chunk's size ([`SimulatedWork`]). Given a
//! [`Compute`] with threads, the echo sends a chunk's work there when it
//! exceeds `offload_above`, and awaits it holding the chunk; lighter work
//! stays inline, where a trip to another thread would cost more than it.
//! Offloaded work goes in slices of at most [`WORK_SLICE`], under the
//! connection's key, so that the compute threads take turns between
//! connections; meanwhile the connection is busy, not idle, and a peer that
//! resets takes its job out of the queue.

use std::fmt;
use std::future::Future;
use std::io;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWrite, ReadBuf};

use crate::buffer::{Buffer, ReadSize};
use crate::compute::{Compute, ComputeError};
use crate::connection::{Connection, Event};
use crate::handler::{Close, Handler};
use crate::range::{OutOfRange, in_range};

/// How the echo handler behaves: [`Default`], then a setter per field;
/// each field says its own default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EchoConfig {
    /// Largest chunk read, and so echoed, at once: the cap of the read
    /// size, which starts at 4 KiB (or this, if smaller) and grows while
    /// reads fill it. Default: 64 KiB.
    pub buffer_size: usize,
    /// Write a `\n` after each chunk read (the behaviour of the article's
    /// server). Default: false.
    pub append_newline: bool,
    /// CPU time burnt per chunk before it is written back: a benchmarking
    /// knob that models handlers doing real work. Default: none, as in
    /// production.
    pub simulate_work: SimulatedWork,
    /// With a [`Compute`] that has threads, a chunk's work goes there only
    /// if it takes longer than this; shorter work runs inline. Default:
    /// 50 µs.
    pub offload_above: Duration,
}

/// CPU work per chunk, as `--simulate-work` writes it: `200us` per chunk,
/// or `200us/KiB`, in proportion to the chunk's size, as a handler that
/// hashes or compresses what it reads.
///
/// ```
/// use std::time::Duration;
/// use tandem::echo::SimulatedWork;
///
/// let per_kib: SimulatedWork = "200us/KiB".parse().unwrap();
/// assert_eq!(per_kib.for_chunk(64 * 1024), Duration::from_micros(12_800));
/// assert_eq!(per_kib.to_string(), "200us/KiB");
/// let per_chunk: SimulatedWork = "1ms".parse().unwrap();
/// assert_eq!(per_chunk.for_chunk(1), Duration::from_millis(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimulatedWork {
    /// The same for every chunk.
    PerChunk(Duration),
    /// This much per KiB of the chunk.
    PerKib(Duration),
}

impl Default for SimulatedWork {
    fn default() -> Self {
        SimulatedWork::PerChunk(Duration::ZERO)
    }
}

impl SimulatedWork {
    /// The work for a chunk of `bytes`.
    pub fn for_chunk(self, bytes: usize) -> Duration {
        match self {
            SimulatedWork::PerChunk(work) => work,
            SimulatedWork::PerKib(per_kib) => {
                let nanos = per_kib.as_nanos().saturating_mul(bytes as u128) / 1024;
                Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
            }
        }
    }

    /// The duration it is written with, per chunk or per KiB.
    pub fn duration(self) -> Duration {
        match self {
            SimulatedWork::PerChunk(work) | SimulatedWork::PerKib(work) => work,
        }
    }
}

/// The per-KiB suffix of [`SimulatedWork`]'s text.
const PER_KIB: &str = "/KiB";

/// Text that is no [`SimulatedWork`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a duration, or a duration per KiB (200us, 200us/KiB): {cause}")]
pub struct InvalidSimulatedWork {
    /// The text as given.
    pub text: String,
    /// Why its duration did not parse.
    pub cause: String,
}

impl FromStr for SimulatedWork {
    type Err = InvalidSimulatedWork;

    /// A duration (`200us`, `1ms`, `0`), or one followed by `/KiB`.
    fn from_str(text: &str) -> Result<Self, InvalidSimulatedWork> {
        let (duration, per_kib) = match text.len().checked_sub(PER_KIB.len()) {
            Some(cut)
                if text.is_char_boundary(cut) && text[cut..].eq_ignore_ascii_case(PER_KIB) =>
            {
                (&text[..cut], true)
            }
            _ => (text, false),
        };
        let duration = match duration.trim() {
            "0" => Duration::ZERO,
            written => humantime::parse_duration(written).map_err(|err| InvalidSimulatedWork {
                text: text.to_owned(),
                cause: err.to_string(),
            })?,
        };
        Ok(if per_kib {
            SimulatedWork::PerKib(duration)
        } else {
            SimulatedWork::PerChunk(duration)
        })
    }
}

impl fmt::Display for SimulatedWork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.duration()))?;
        if matches!(self, SimulatedWork::PerKib(_)) {
            f.write_str(PER_KIB)?;
        }
        Ok(())
    }
}

impl Default for EchoConfig {
    fn default() -> Self {
        EchoConfig {
            // Reads start at a page and grow only while they fill it: 64 KiB
            // messages then echo in one read and one write, while small
            // ones still lend a page.
            buffer_size: 64 * 1024,
            append_newline: false,
            simulate_work: SimulatedWork::default(),
            // About what handing work to another thread and back costs on
            // a busy machine, with room: below it, offloading loses.
            offload_above: Duration::from_micros(50),
        }
    }
}

impl EchoConfig {
    /// The largest [`buffer_size`](Self::buffer_size): 16 MiB, a read far
    /// past what one socket read returns, and what one connection may hold.
    pub const MAX_BUFFER_SIZE: usize = 16 * 1024 * 1024;

    /// Checks the buffer size against its range, `1..=`[`MAX_BUFFER_SIZE`](Self::MAX_BUFFER_SIZE).
    pub fn validate(&self) -> Result<(), OutOfRange> {
        in_range("buffer_size", self.buffer_size, 1..=Self::MAX_BUFFER_SIZE)?;
        Ok(())
    }
}

setters!(EchoConfig {
    buffer_size: usize,
    append_newline: bool,
    simulate_work: SimulatedWork,
    offload_above: Duration,
});

/// The echo handler.
#[derive(Debug, Clone)]
pub struct Echo {
    config: EchoConfig,
    compute: Compute,
}

impl Echo {
    /// An echo handler with the given behaviour, its work inline. A
    /// `buffer_size` outside its range ([`EchoConfig::validate`] says so)
    /// is taken as the nearest bound: 0 as 1, since a read into an empty
    /// buffer could not tell data from EOF, and more than
    /// [`EchoConfig::MAX_BUFFER_SIZE`] as that, so that no connection's
    /// chunk exceeds it.
    pub fn new(mut config: EchoConfig) -> Self {
        config.buffer_size = config.buffer_size.clamp(1, EchoConfig::MAX_BUFFER_SIZE);
        Echo {
            config,
            compute: Compute::inline(),
        }
    }

    /// Sends a chunk's simulated work above `offload_above` to `compute`
    /// (give the server a clone too, with [`Server::compute`](crate::Server::compute)).
    pub fn compute(mut self, compute: Compute) -> Self {
        self.compute = compute;
        self
    }

    /// Bytes lent for a read of `read` bytes: room for the newline after a
    /// full read, which is exactly where the article's code wrote past its
    /// data.
    fn lease_len(&self, read: usize) -> usize {
        read + usize::from(self.config.append_newline)
    }
}

impl Handler for Echo {
    fn serve(&self, conn: &mut Connection) -> impl Future<Output = io::Result<Close>> + Send {
        Session {
            echo: self,
            conn,
            size: ReadSize::new(self.config.buffer_size),
            step: Step::Wait,
        }
    }
}

/// One connection's echo, written out as a future rather than an `async`
/// block: this state is in every connection's task for its whole life, and
/// by hand it is what the protocol needs (two references, the read size
/// and where the current chunk is), where the compiler's would keep room
/// for the futures of every wait at once, over three times the size.
struct Session<'e, 'c> {
    echo: &'e Echo,
    conn: &'c mut Connection,
    size: ReadSize,
    step: Step,
}

/// Where a session is.
enum Step {
    /// Waiting for the socket, holding no buffer.
    Wait,
    /// The socket is readable, but the buffer budget has no room even for
    /// a page: waiting for a buffer to be freed, the connection busy, as
    /// the wait is the server's, not the peer's.
    Budget,
    /// Writing back a chunk: `written` of its `len` bytes so far.
    Write { buf: Buffer, len: u32, written: u32 },
    /// Waiting for a chunk's work on the compute threads, the connection
    /// busy meanwhile, and while `watching`, for the peer to reset. Boxed:
    /// a step no larger than `Write` keeps every connection's task as
    /// small.
    Compute { job: Offloaded, watching: bool },
    /// Sending the FIN, then ending with this.
    Close(Close),
}

impl Future for Session<'_, '_> {
    type Output = io::Result<Close>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // No field is pinned: a session is `Unpin`.
        let this = self.get_mut();
        loop {
            match &mut this.step {
                Step::Wait | Step::Budget => match ready!(this.conn.poll_ready(cx))? {
                    Event::Readable => {
                        // Pending while the buffer budget is spent: the
                        // socket stays readable, and the budget wakes the
                        // task when a buffer is freed.
                        let Poll::Ready(read) = this.read(cx) else {
                            if matches!(this.step, Step::Wait) {
                                this.conn.set_busy(true);
                                this.step = Step::Budget;
                            }
                            return Poll::Pending;
                        };
                        if matches!(this.step, Step::Budget) {
                            this.conn.set_busy(false);
                            this.step = Step::Wait;
                        }
                        if let Some(step) = read? {
                            this.step = step;
                        }
                    }
                    Event::IdleTimeout => return Poll::Ready(Ok(Close::IdleTimeout)),
                    // Everything read so far has been written back (the
                    // write finishes before the next read), so all that is
                    // owed is the FIN.
                    Event::Cut => this.step = Step::Close(Close::Cut),
                },
                Step::Write { buf, len, written } => {
                    let mut done = *written as usize;
                    let polled = this
                        .conn
                        .poll_write_all(cx, &buf[..*len as usize], &mut done);
                    // Below `len`, which fits in a u32.
                    *written = done as u32;
                    ready!(polled)?;
                    // The lease goes back before the next wait.
                    this.step = Step::Wait;
                }
                Step::Compute { job, watching } => {
                    let Poll::Ready(worked) = job.as_mut().poll(cx) else {
                        if *watching {
                            match peer_gone(this.conn, cx) {
                                Watch::Waiting => {}
                                Watch::Alive => *watching = false,
                                Watch::Gone(err) => {
                                    // The job goes now, out of the queue.
                                    this.step = Step::Wait;
                                    this.conn.set_busy(false);
                                    return Poll::Ready(Err(err));
                                }
                            }
                        }
                        return Poll::Pending;
                    };
                    this.conn.set_busy(false);
                    let (buf, len) = worked.map_err(io::Error::from)?;
                    this.step = Step::Write {
                        buf,
                        len,
                        written: 0,
                    };
                }
                Step::Close(close) => {
                    let close = *close;
                    ready!(AsyncWrite::poll_shutdown(Pin::new(&mut *this.conn), cx))?;
                    return Poll::Ready(Ok(close));
                }
            }
        }
    }
}

impl Session<'_, '_> {
    /// Reads what the readable socket has into a leased buffer: the chunk
    /// to write back, the close at end-of-file, or `None` when the
    /// readiness was stale and the session waits again. Pending while the
    /// buffer budget has no room even for a page.
    fn read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Step>>> {
        let echo = self.echo;
        let asked = self.size.next();
        // The budget may lend less than asked, down to a page: the read is
        // then smaller, and the size adapts to it as to any short read.
        let least = asked.min(ReadSize::INITIAL);
        let buf = ready!(Buffer::poll_lease(
            cx,
            echo.lease_len(asked),
            echo.lease_len(least)
        ));
        let room = buf.len() - usize::from(echo.config.append_newline);
        Poll::Ready(self.echo_chunk(buf, room))
    }

    /// Reads into `buf`'s first `room` bytes and says what comes next.
    fn echo_chunk(&mut self, mut buf: Buffer, room: usize) -> io::Result<Option<Step>> {
        let read = match self.conn.try_read(&mut buf[..room]) {
            Ok(0) => return Ok(Some(Step::Close(Close::Eof))),
            Ok(read) => read,
            // The lease goes back before waiting.
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(err) => return Err(err),
        };
        self.size.record(read);
        let config = &self.echo.config;
        // The read left a byte of room for it: the newline goes after the
        // chunk, never over a byte past it (invariant 7).
        let len = if config.append_newline {
            buf[read] = b'\n';
            read + 1
        } else {
            read
        };
        // At most `buffer_size` + 1, and `--buffer-size` is capped far
        // below 4 GiB.
        let len = u32::try_from(len).map_err(io::Error::other)?;
        let work = config.simulate_work.for_chunk(read);
        if !work.is_zero() {
            if work > config.offload_above && !self.echo.compute.is_inline() {
                // The connection's address names it to the compute queue:
                // unique among live connections, and fixed while it is served.
                let key = std::ptr::from_ref::<Connection>(self.conn).addr() as u64;
                let worked = self.echo.compute.run_sliced_for(key, sliced(work));
                // The chunk rides with its work: one allocation per trip.
                let job = async move { worked.await.map(|()| (buf, len)) };
                self.conn.set_busy(true);
                return Ok(Some(Step::Compute {
                    job: Box::pin(job),
                    watching: true,
                }));
            }
            burn_cpu(work);
        }
        Ok(Some(Step::Write {
            buf,
            len,
            written: 0,
        }))
    }
}

impl Drop for Session<'_, '_> {
    /// A session dropped while its work is out or it waits for the buffer
    /// budget (a library caller's timeout, say, or the cut) leaves its
    /// connection to the idle rule again.
    fn drop(&mut self) {
        if matches!(self.step, Step::Compute { .. } | Step::Budget) {
            self.conn.set_busy(false);
        }
    }
}

/// A chunk's work on the compute threads, giving the chunk back.
type Offloaded = Pin<Box<dyn Future<Output = Result<(Buffer, u32), ComputeError>> + Send>>;

/// The longest slice of a chunk's work on the compute threads: how long a
/// light connection's job may wait for a thread that a heavy one holds.
/// A turn costs a few microseconds of queueing, well under 1% of this.
pub const WORK_SLICE: Duration = Duration::from_micros(500);

/// `work`, as slices of at most [`WORK_SLICE`] of CPU time.
fn sliced(work: Duration) -> impl FnMut() -> ControlFlow<()> + Send + 'static {
    let mut left = work;
    move || {
        let slice = left.min(WORK_SLICE);
        burn_cpu(slice);
        left -= slice;
        if left.is_zero() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

/// What the socket says of the peer while its chunk's work is out.
enum Watch {
    /// Nothing yet: woken when something comes.
    Waiting,
    /// It sent more, or half-closed, which still wants its echo: alive.
    /// The socket stays readable until the session reads again, so it is
    /// not watched further; a reset after that is met when the job ends.
    Alive,
    /// It reset, or the socket failed: no one is left to echo to.
    Gone(io::Error),
}

/// Peeks at the TCP socket, taking no data, for a peer that has reset
/// during its job: a reset socket is readable, and reading it fails.
fn peer_gone(conn: &mut Connection, cx: &mut Context<'_>) -> Watch {
    let mut byte = [0u8; 1];
    let mut peek = ReadBuf::new(&mut byte);
    match conn.stream_mut().tcp().poll_peek(cx, &mut peek) {
        Poll::Pending => Watch::Waiting,
        Poll::Ready(Ok(_)) => Watch::Alive,
        Poll::Ready(Err(err)) => Watch::Gone(err),
    }
}

/// Keeps the current thread busy until it has used `work` of CPU time, as
/// a CPU-bound handler would: the thread can do nothing else meanwhile,
/// which is the point. CPU time, not time on the clock: on a busy machine a
/// hash of the same bytes takes the same CPU and longer on the clock.
/// Without a per-thread clock that works and moves, it falls back to time
/// on the clock, so that it always ends.
fn burn_cpu(work: Duration) {
    let started = Instant::now();
    let Some(cpu_start) = thread_cpu_time() else {
        spin_until(started + work);
        return;
    };
    loop {
        let left = match thread_cpu_time() {
            Some(now) => work.saturating_sub(now.saturating_sub(cpu_start)),
            // The clock failed midway: the rest on the wall clock.
            None => return spin_until(started + work),
        };
        if left.is_zero() {
            return;
        }
        // A thread clock that has not moved in all the time the work should
        // take is not measuring this thread: that time on the wall clock is
        // the work.
        if left == work && started.elapsed() >= work {
            return;
        }
        // The per-thread clock is a system call away: spin on the cheap
        // clock for a while between readings of it.
        spin_until(Instant::now() + left.min(CPU_CLOCK_EVERY));
    }
}

/// Spins until `until`.
fn spin_until(until: Instant) {
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// How long [`burn_cpu`] spins between readings of the thread's CPU clock.
const CPU_CLOCK_EVERY: Duration = Duration::from_micros(20);

/// The CPU time the calling thread has used.
fn thread_cpu_time() -> Option<Duration> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write to.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if status != 0 {
        return None;
    }
    let secs = u64::try_from(now.tv_sec).ok()?;
    let nanos = u32::try_from(now.tv_nsec).ok()?;
    Some(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_size_out_of_range_is_refused_and_clamped_by_the_handler() {
        assert!(EchoConfig::default().validate().is_ok());
        for size in [0, EchoConfig::MAX_BUFFER_SIZE + 1] {
            let config = EchoConfig::default().buffer_size(size);
            assert_eq!(
                config.validate().map_err(|err| err.field),
                Err("buffer_size")
            );
        }
        let huge = Echo::new(EchoConfig::default().buffer_size(usize::MAX));
        assert_eq!(huge.config.buffer_size, EchoConfig::MAX_BUFFER_SIZE);
        assert_eq!(
            Echo::new(EchoConfig::default().buffer_size(0))
                .config
                .buffer_size,
            1
        );
    }

    #[test]
    fn burnt_work_is_cpu_time_of_the_calling_thread() {
        let Some(before) = thread_cpu_time() else {
            return;
        };
        burn_cpu(Duration::from_millis(30));
        let used = thread_cpu_time().map(|after| after.saturating_sub(before));
        // A lower bound: preemption stretches the burn on the clock, never
        // shortens its CPU time.
        assert!(used >= Some(Duration::from_millis(30)), "{used:?}");
    }

    #[test]
    fn per_kib_work_follows_the_chunk_and_saturates() {
        let work = SimulatedWork::PerKib(Duration::from_micros(200));
        assert_eq!(work.for_chunk(64), Duration::from_nanos(12_500));
        assert_eq!(
            SimulatedWork::PerKib(Duration::MAX).for_chunk(usize::MAX),
            Duration::from_nanos(u64::MAX)
        );
        assert!("fast/KiB".parse::<SimulatedWork>().is_err());
        assert_eq!("0".parse(), Ok(SimulatedWork::PerChunk(Duration::ZERO)));
        assert_eq!(
            "1ms/kib".parse(),
            Ok(SimulatedWork::PerKib(Duration::from_millis(1)))
        );
    }
}
