//! [`ShutdownReport`]: how a shutdown went, in connections.

/// How a shutdown went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections live (served or queued) when accepting stopped.
    pub live: usize,
    /// Of those, connections that closed before the shutdown timeout.
    pub drained: usize,
    /// Of those, connections still open at the timeout and closed by the
    /// server: after writing back what they had read, or, for the few still
    /// stuck writing to a peer that does not read, dropped.
    pub cut: usize,
}
