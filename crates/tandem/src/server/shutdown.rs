//! [`Running::wait`]: the shutdown sequence (invariant 8), in its named
//! phases, each a method below:
//!
//! 1. **serve** until the shutdown future completes (or every accept task
//!    has ended on its own);
//! 2. **stop accepting**: `/readyz` turns to 503, the services stop, the
//!    listener closes and the acceptor runtime shuts down;
//! 3. **drain**: live connections are served until they close, for up to
//!    the shutdown timeout;
//! 4. **cut**: the rest are told to close, and have what is left of the
//!    grace, less the runtime stops, to write back what they owe;
//! 5. **stop the runtimes**: the serving runtime, then the compute threads
//!    its connections used, then the admin endpoint.
//!
//! Every time limit comes from [`StopTimes`](super::stop_times).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::error::ServerError;
use super::report::ShutdownReport;
use super::start::Running;
use super::stop_times::{StopTimes, deadline, left_until};
use super::worker;
use crate::handler::Handler;
use crate::metrics::CloseReason;

impl<H: Handler> Running<H> {
    /// Serves until `shutdown` completes, then shuts down gracefully
    /// (invariant 8) and reports how it went. Blocks the calling thread;
    /// `shutdown` is polled on a small current-thread runtime, so it may use
    /// tokio's timers, signals and I/O.
    pub fn wait(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<ShutdownReport, ServerError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            // Dropping runtimes in async code panics: stop the server from a
            // thread of its own instead.
            std::thread::spawn(move || drop(self));
            return Err(ServerError::InsideRuntime);
        }
        let acceptor_failed = self.serve(shutdown);
        let times = StopTimes {
            drain: self.config.shutdown_timeout,
            grace: self.config.shutdown_grace,
        };
        // The shutdown's clock: the drain ends at most `drain` from here,
        // and everything stops at most `grace` later.
        let drain_until = deadline(times.drain);
        if acceptor_failed {
            warn!("every accept task has ended; shutting down");
        }
        let live = self.stop_accepting(times);
        let drained = self.drain(drain_until);
        // From the drain's end, the grace: for cut connections to write
        // back what they owe, then for the runtimes to stop.
        let stop_by = deadline(times.grace);
        let dropped = if drained { 0 } else { self.cut(stop_by, times) };
        let serving = self.serving.clone();
        self.stop_runtimes(stop_by);
        // Counted once the runtimes have stopped: a connection may end its
        // cut while they do.
        let cut = serving.cut_count.load(Ordering::Relaxed) + dropped;
        if acceptor_failed {
            return Err(ServerError::AcceptorFailed);
        }
        Ok(ShutdownReport {
            live,
            drained: live.saturating_sub(cut),
            cut,
        })
    }

    /// Serves until `shutdown` completes; true if every accept task ended
    /// first, on its own.
    fn serve(&mut self, shutdown: impl Future<Output = ()>) -> bool {
        let started = &mut self.started;
        self.control.block_on(async {
            tokio::select! {
                () = shutdown => false,
                () = started.acceptors_ended() => true,
            }
        })
    }

    /// Stops accepting, the services and the acceptor runtime; returns the
    /// connections live at that moment.
    fn stop_accepting(&mut self, times: StopTimes) -> usize {
        // Before anything stops: a load balancer polling `/readyz` moves
        // new clients elsewhere while the live ones drain.
        #[cfg(feature = "admin")]
        self.readiness.stopping();
        // Services have no connections to drain (datagrams have none): they
        // stop here.
        self.services_stop.cancel();
        self.control.block_on(self.started.stop_accepting());
        let had_acceptor_runtime = self.started.shut_down_acceptor();
        let live = worker::active(&self.serving);
        let timeout = humantime::format_duration(times.drain);
        let grace = humantime::format_duration(times.grace);
        let at_most = humantime::format_duration(times.at_most());
        // In `single`, accepting shares the serving runtime: none to stop.
        let stopped = if had_acceptor_runtime {
            "stopped accepting and shut the acceptor runtime down"
        } else {
            "stopped accepting"
        };
        info!(live, %timeout, %grace, %at_most, "{stopped}; draining live connections");
        live
    }

    /// Serves the live connections until they have all closed (true), or
    /// until `drain_until` (false).
    fn drain(&self, drain_until: Option<Instant>) -> bool {
        self.serving.tracker.close();
        self.control
            .block_on(async {
                tokio::time::timeout(left_until(drain_until), self.serving.tracker.wait()).await
            })
            .is_ok()
    }

    /// Cuts the connections still open, and gives them until `stop_by`,
    /// less the runtime stops, to write back what they owe; returns those
    /// still writing then, which are dropped with their runtime.
    fn cut(&self, stop_by: Option<Instant>, times: StopTimes) -> usize {
        let serving = &self.serving;
        info!(
            connections = worker::active(serving),
            "shutdown timeout passed; closing the remaining connections"
        );
        serving.sweep.cut();
        let cut_for = left_until(stop_by).saturating_sub(times.runtime_stops());
        let closed = self
            .control
            .block_on(async { tokio::time::timeout(cut_for, serving.tracker.wait()).await })
            .is_ok();
        if closed {
            return 0;
        }
        let dropped = worker::active(serving);
        // Their tasks end with the runtime, without accounting for
        // themselves.
        serving
            .metrics
            .connections_closed(CloseReason::Cut, dropped);
        warn!(
            connections = dropped,
            "connections still writing after the cut; dropping them"
        );
        dropped
    }

    /// Stops the serving runtime, then the compute threads its connections
    /// used, each within what is left until `stop_by`, then the admin
    /// endpoint.
    fn stop_runtimes(self, stop_by: Option<Instant>) {
        let left = || -> Duration { left_until(stop_by) };
        let Running {
            started,
            #[cfg(feature = "admin")]
            admin,
            compute,
            ..
        } = self;
        started.shut_down_serving(left());
        compute.stop(left());
        #[cfg(feature = "admin")]
        drop(admin);
    }
}
