//! The accept loop. It owns the listening socket and the order of
//! operations that makes backpressure reach the kernel: a connection permit
//! and a hand-off slot are reserved *before* accept is called (invariant 2).
//!
//! It never does connection I/O and never registers an accepted socket with
//! its own reactor: it accepts through the std listener (wrapped in
//! `AsyncFd` only to learn readiness) and hands the std socket over.
//!
//! Accept errors are sorted here, in one place (invariant 3): errors that
//! belong to one connection are skipped; errors that say the process or the
//! system is out of descriptors or memory back the listener off
//! exponentially, capped at [`MAX_BACKOFF`], with a rate-limited log.
//! Nothing makes it exit but the stop token.
//!
//! While it waits for a `--max-connections` permit, it says so to the
//! sweep (`crate::sweep::Pressure`), which then sheds the slowest
//! connections for the clients waiting in the backlog.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::admission::{Accepted, Admission, Counted};
use super::handoff::Dispatch;
use super::per_ip::{self, PerIpLimit};
use crate::handler::Handler;
use crate::metrics::{AcceptError, Metrics};
use crate::sweep::Pressure;

/// First pause after a resource error: long enough for a few connections to
/// close, short enough to be invisible when it was a blip.
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
/// Longest pause: an exhausted server looks again about once a second.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// At most one warning per this interval while errors persist.
const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// What to do about an accept error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AcceptErrorAction {
    /// The error belongs to one connection (it was aborted or reset before
    /// accept returned, or a network error pending on it): accept the next.
    Skip,
    /// The process or the system is out of a resource: pause the listener,
    /// because retrying at once would spin.
    BackOff,
}

/// Sorts an accept error, and names its kind for logs and metrics.
pub(crate) fn classify(err: &io::Error) -> (AcceptErrorAction, AcceptError) {
    use AcceptErrorAction::{BackOff, Skip};
    match err.raw_os_error() {
        Some(libc::EMFILE) => (BackOff, AcceptError::Emfile),
        Some(libc::ENFILE) => (BackOff, AcceptError::Enfile),
        Some(libc::ENOBUFS) => (BackOff, AcceptError::Enobufs),
        Some(libc::ENOMEM) => (BackOff, AcceptError::Enomem),
        Some(libc::ECONNABORTED) => (Skip, AcceptError::Aborted),
        Some(libc::ECONNRESET) => (Skip, AcceptError::Reset),
        Some(libc::EINTR) => (Skip, AcceptError::Interrupted),
        // accept(2) on Linux: errors already pending on the new socket are
        // reported by accept and "should be treated like EAGAIN".
        Some(
            libc::ENETDOWN
            | libc::EPROTO
            | libc::ENOPROTOOPT
            | libc::EHOSTDOWN
            | libc::ENONET
            | libc::EHOSTUNREACH
            | libc::EOPNOTSUPP
            | libc::ENETUNREACH
            | libc::ETIMEDOUT,
        ) => (Skip, AcceptError::Network),
        // A firewall rule refused the connection.
        Some(libc::EPERM) => (Skip, AcceptError::Denied),
        // Anything unexpected is treated as a resource problem: pausing is
        // always safe, spinning never is.
        _ => (BackOff, AcceptError::Other),
    }
}

/// Exponential pause between retries after resource errors.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            next: FIRST_BACKOFF,
        }
    }

    fn reset(&mut self) {
        self.next = FIRST_BACKOFF;
    }

    fn step(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        pause
    }
}

/// Logs the first error of a run at once, then at most one line per
/// [`LOG_INTERVAL`] with the number of errors in between.
#[derive(Debug, Default)]
struct RateLimitedLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    fn error(&mut self, err: &io::Error, kind: AcceptError, pause: Duration) {
        let now = Instant::now();
        if self.last.is_some_and(|last| now - last < LOG_INTERVAL) {
            self.suppressed += 1;
            return;
        }
        warn!(
            cause = %err,
            %kind,
            pause_ms = pause.as_millis() as u64,
            suppressed = self.suppressed,
            "accept failed; pausing the listener"
        );
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// One accept task. Several may share a listener (`--acceptor-threads`).
pub(crate) struct Acceptor<H> {
    pub(crate) listener: Arc<AsyncFd<TcpListener>>,
    pub(crate) limit: Arc<Semaphore>,
    pub(crate) active: Arc<AtomicUsize>,
    pub(crate) dispatch: Arc<Dispatch<H>>,
    pub(crate) stop: CancellationToken,
    pub(crate) metrics: Metrics,
    /// `--max-connections-per-ip`, when set.
    pub(crate) per_ip: Option<Arc<PerIpLimit>>,
    /// Told when this task waits for a permit, so that the sweep sheds.
    pub(crate) pressure: Arc<Pressure>,
}

impl<H: Handler> Acceptor<H> {
    /// Accepts until the stop token is cancelled.
    pub(crate) async fn run(self) {
        let mut backoff = Backoff::new();
        let mut log = RateLimitedLog::default();
        loop {
            let Some(permit) = self.permit().await else {
                return;
            };
            let slot = tokio::select! {
                biased;
                () = self.stop.cancelled() => return,
                slot = self.dispatch.reserve() => match slot {
                    Some(slot) => slot,
                    None => return,
                },
            };
            let Some((stream, peer)) = self.accept_next(&mut backoff, &mut log).await else {
                return;
            };
            self.metrics.connection_accepted();
            // Refused before it costs anything more: no task, no
            // registration with a reactor, no hand-off.
            let Ok(per_ip) = per_ip::admit(self.per_ip.as_ref(), peer, &self.metrics) else {
                drop(stream);
                continue;
            };
            if let Err(err) = stream.set_nonblocking(true) {
                debug!(%peer, cause = %err, "cannot make accepted socket non-blocking; dropping it");
                self.metrics.connection_rejected();
                continue;
            }
            slot.deliver(Accepted {
                stream,
                peer,
                accepted_at: Instant::now(),
                admission: Admission {
                    permit,
                    active: Counted::new(&self.active),
                    per_ip,
                    shard_load: None,
                },
            });
        }
    }

    /// A `--max-connections` permit, waited for if every slot is taken;
    /// `None` once stopped.
    async fn permit(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.limit.clone().try_acquire_owned() {
            return Some(permit);
        }
        // Every slot is taken: while this task waits, the sweep sheds the
        // slowest connections for whoever waits in the backlog.
        let _starved = self.pressure.starved();
        tokio::select! {
            biased;
            () = self.stop.cancelled() => None,
            // The semaphore is never closed; if it were, nothing more could
            // be admitted.
            permit = self.limit.clone().acquire_owned() => permit.ok(),
        }
    }

    /// The next connection, skipping errors that belong to one connection
    /// and backing off from those that say a resource ran out (invariant
    /// 3); `None` once stopped.
    async fn accept_next(
        &self,
        backoff: &mut Backoff,
        log: &mut RateLimitedLog,
    ) -> Option<(TcpStream, SocketAddr)> {
        loop {
            let accepted = tokio::select! {
                biased;
                () = self.stop.cancelled() => return None,
                accepted = accept(&self.listener) => accepted,
            };
            let err = match accepted {
                Ok(accepted) => {
                    backoff.reset();
                    return Some(accepted);
                }
                Err(err) => err,
            };
            let (action, kind) = classify(&err);
            self.metrics.accept_error(kind);
            match action {
                AcceptErrorAction::Skip => {
                    debug!(cause = %err, %kind, "accept failed for one connection; skipping it");
                }
                AcceptErrorAction::BackOff => {
                    let pause = backoff.step();
                    log.error(&err, kind, pause);
                    tokio::select! {
                        biased;
                        () = self.stop.cancelled() => return None,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }
}

/// Accepts one connection without registering it with this runtime.
async fn accept(listener: &AsyncFd<TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    loop {
        let mut ready = listener.readable().await?;
        // `try_io` clears readiness only on WouldBlock; after EMFILE the
        // listener stays ready, and the backoff is what keeps this from
        // spinning.
        if let Ok(result) = ready.try_io(|listener| listener.get_ref().accept()) {
            return result;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_exhaustion_backs_off() {
        let err = io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(
            classify(&err),
            (AcceptErrorAction::BackOff, AcceptError::Emfile)
        );
    }

    #[test]
    fn an_aborted_connection_is_skipped() {
        let err = io::Error::from_raw_os_error(libc::ECONNABORTED);
        assert_eq!(classify(&err).0, AcceptErrorAction::Skip);
    }

    #[test]
    fn an_unknown_error_backs_off_rather_than_spin() {
        let err = io::Error::from_raw_os_error(libc::EINVAL);
        assert_eq!(classify(&err).0, AcceptErrorAction::BackOff);
    }

    #[test]
    fn backoff_doubles_up_to_about_a_second() {
        let mut backoff = Backoff::new();
        let pauses: Vec<_> = (0..12).map(|_| backoff.step()).collect();
        assert_eq!(pauses[0], FIRST_BACKOFF);
        assert_eq!(pauses[1], FIRST_BACKOFF * 2);
        assert_eq!(*pauses.last().unwrap(), MAX_BACKOFF);
        backoff.reset();
        assert_eq!(backoff.step(), FIRST_BACKOFF);
    }
}
