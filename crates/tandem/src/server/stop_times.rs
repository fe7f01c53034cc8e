//! Every time limit of a stop, in one place, in the order a shutdown meets
//! them (invariant 8):
//!
//! 1. the **drain**: live connections are served until they close, for up
//!    to `shutdown_timeout`;
//! 2. the **grace**, from the drain's end, `shutdown_grace` long, split
//!    between
//!    - the **linger** of each cut connection, which keeps reading after
//!      its FIN so that its peer can take the last echo before the close,
//!    - then the **runtime stops**, which wait only for work that blocks a
//!      thread (compute jobs), kept at the grace's end;
//! 3. the runtimes that hold no connection (the acceptor's, the admin
//!    endpoint's) stop within [`RUNTIME_STOP_TIMEOUT`] each.
//!
//! The linger and the runtime stops together stay inside the grace, so
//! that a peer that takes its echo is closed cleanly well before its
//! connection would be dropped with its runtime; the tests below hold
//! that order for every grace.

use std::time::{Duration, Instant};

/// How long a runtime that holds no connection (the acceptor's, the admin
/// endpoint's) waits, as it stops, for its blocking threads; also a shard's
/// wait when it is stopped other than by a shutdown.
pub(crate) const RUNTIME_STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest linger, whatever the grace: a peer that reads takes a last
/// echo in far less.
const MAX_LINGER: Duration = Duration::from_secs(1);

/// The longest part of the grace kept for the serving runtimes' stops.
const MAX_RUNTIME_STOPS: Duration = Duration::from_secs(1);

/// The stop times of one server, from its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StopTimes {
    /// How long live connections are served once accepting stops.
    pub(crate) drain: Duration,
    /// From the drain's end, how long cut connections and the runtimes
    /// have to stop.
    pub(crate) grace: Duration,
}

impl StopTimes {
    /// How long a connection cut at the drain's end keeps reading (and
    /// discarding) after its FIN: half the grace, at most [`MAX_LINGER`].
    pub(crate) fn linger(self) -> Duration {
        (self.grace / 2).min(MAX_LINGER)
    }

    /// The part of the grace kept, at its end, for the serving runtimes and
    /// the compute threads to stop: a quarter, at most
    /// [`MAX_RUNTIME_STOPS`].
    pub(crate) fn runtime_stops(self) -> Duration {
        (self.grace / 4).min(MAX_RUNTIME_STOPS)
    }

    /// The longest a shutdown may take, from its start.
    pub(crate) fn at_most(self) -> Duration {
        self.drain.saturating_add(self.grace)
    }
}

/// The instant `after` from now; `None` past what the clock can hold (a
/// library caller's `Duration::MAX`, meaning "wait for ever").
pub(crate) fn deadline(after: Duration) -> Option<Instant> {
    Instant::now().checked_add(after)
}

/// What is left until `deadline`; without one, a century, which tokio's
/// timers and runtime stops can add to the clock, where `Duration::MAX`
/// would overflow it.
pub(crate) fn left_until(deadline: Option<Instant>) -> Duration {
    const FOR_EVER: Duration = Duration::from_secs(100 * 365 * 86_400);
    deadline.map_or(FOR_EVER, |at| at.saturating_duration_since(Instant::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_grace(grace: Duration) -> StopTimes {
        StopTimes {
            drain: Duration::from_secs(30),
            grace,
        }
    }

    #[test]
    fn the_linger_and_the_runtime_stops_fit_inside_every_grace() {
        let graces = (0..=200)
            .map(|tenths| Duration::from_millis(tenths * 100))
            .chain([Duration::from_nanos(3), Duration::MAX]);
        for grace in graces {
            let times = with_grace(grace);
            assert!(
                times.linger() + times.runtime_stops() <= grace,
                "grace {grace:?}: linger {:?} + stops {:?}",
                times.linger(),
                times.runtime_stops()
            );
        }
    }

    #[test]
    fn a_cut_connection_lingers_longer_than_the_runtimes_wait_to_stop() {
        // The linger is what lets a peer take its last echo; the stops
        // only wait for blocked threads.
        for grace in [Duration::from_millis(400), Duration::from_secs(2)] {
            let times = with_grace(grace);
            assert!(times.linger() > times.runtime_stops(), "{times:?}");
        }
        assert_eq!(with_grace(Duration::from_secs(2)).linger(), MAX_LINGER);
    }

    #[test]
    fn a_shutdown_without_end_does_not_overflow_the_clock() {
        let times = StopTimes {
            drain: Duration::MAX,
            grace: Duration::MAX,
        };
        assert_eq!(times.at_most(), Duration::MAX);
        assert_eq!(deadline(Duration::MAX), None);
        assert!(left_until(None) > Duration::from_secs(86_400 * 365));
    }
}
