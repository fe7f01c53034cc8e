//! Every label set of the server's metrics, as enums: the producers (the
//! worker, the acceptor, the PROXY header reader, the TLS handshake, the
//! UDP echo) name a variant, and the registry creates one series per
//! variant at start-up and counts by index. No label is looked up by
//! string, so a new kind cannot be counted under another by mistake.

label_set! {
    /// Why a served connection closed: the `reason` label of
    /// `tandem_connections_closed_total`.
    pub enum CloseReason {
        /// The peer closed its side, and got everything back.
        Eof => "eof",
        /// The peer reset the connection or went away mid-write.
        Reset => "reset",
        /// The idle rule closed it: silent, or below the minimum rate, for
        /// the idle timeout, or not reading its echo.
        IdleTimeout => "idle_timeout",
        /// Closed to make room: every slot was taken, clients waited, and
        /// it was among the slowest (`crate::sweep`).
        Shed => "shed",
        /// Cut at the end of the shutdown timeout.
        Cut => "shutdown",
        /// The handler closed it because the peer broke the protocol
        /// (`Close::Protocol`).
        Protocol => "protocol",
        /// The handler closed it for a reason of its own
        /// (`Close::Handler`, whatever its name).
        Handler => "handler",
        /// The handler panicked.
        Panic => "panic",
        /// Any other I/O error, a handler's own timeouts included.
        Error => "error",
    }
}

label_set! {
    /// What the accept-error policy sorts an accept error into: the `kind`
    /// label of `tandem_accept_errors_total`.
    pub enum AcceptError {
        /// Out of file descriptors in the process.
        Emfile => "emfile",
        /// Out of file descriptors in the system.
        Enfile => "enfile",
        /// Out of socket buffers.
        Enobufs => "enobufs",
        /// Out of memory.
        Enomem => "enomem",
        /// The client gave up before the accept.
        Aborted => "aborted",
        /// The client reset before the accept.
        Reset => "reset",
        /// A signal interrupted the call.
        Interrupted => "interrupted",
        /// A network error the kernel passes on to accept.
        Network => "network",
        /// A firewall rule refused the connection.
        Denied => "denied",
        /// Anything else.
        Other => "other",
    }
}

label_set! {
    /// Why a connection was closed for its PROXY protocol header: the
    /// `kind` label of `tandem_proxy_header_errors_total`.
    pub enum ProxyHeaderError {
        /// The peer closed before the header was complete.
        Closed => "closed",
        /// It sent something that is not a PROXY header.
        Malformed => "malformed",
        /// It sent none within the header timeout.
        Timeout => "timeout",
        /// The socket failed.
        Error => "error",
        /// The peer is not among the trusted (`--proxy-protocol-from`):
        /// closed before reading anything.
        Untrusted => "untrusted",
    }
}

label_set! {
    /// What became of a compute job: the `outcome` label of
    /// `tandem_compute_jobs_total`.
    pub enum ComputeOutcome {
        /// It ran to its end.
        Done => "done",
        /// It panicked; its connection ended with the error.
        Panicked => "panicked",
        /// The compute runtime stopped first (at shutdown).
        Stopped => "stopped",
        /// Its caller went first (its connection closed or reset): taken
        /// out of the queue unrun, or ended between two of its slices.
        Cancelled => "cancelled",
    }
}

label_set! {
    /// Why a TLS handshake did not complete: the `kind` label of
    /// `tandem_tls_handshake_errors_total`.
    pub enum TlsHandshakeError {
        /// The peer closed first.
        Closed => "closed",
        /// It broke the protocol, or spoke something else.
        Protocol => "protocol",
        /// It did not finish within the handshake timeout.
        Timeout => "timeout",
        /// The socket failed.
        Error => "error",
    }
}

label_set! {
    /// What became of a UDP datagram: the `outcome` label of
    /// `tandem_udp_datagrams_total`.
    pub enum UdpOutcome {
        /// Sent back.
        Echoed => "echoed",
        /// Dropped: its source was over the per-source rate.
        RateLimited => "rate_limited",
        /// Dropped: it came from a port of a reflecting service.
        Reflection => "reflection",
        /// Receiving or sending it failed.
        Error => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_set_lists_its_variants_in_declaration_order() {
        for (index, reason) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, index);
        }
        for (index, kind) in AcceptError::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, index);
        }
        for (index, kind) in ProxyHeaderError::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, index);
        }
        for (index, kind) in TlsHandshakeError::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, index);
        }
        for (index, outcome) in UdpOutcome::ALL.iter().enumerate() {
            assert_eq!(*outcome as usize, index);
        }
        for (index, outcome) in ComputeOutcome::ALL.iter().enumerate() {
            assert_eq!(*outcome as usize, index);
        }
        for (reason, label) in CloseReason::ALL.iter().zip(CloseReason::LABELS) {
            assert_eq!(reason.as_str(), *label);
        }
        assert_eq!(CloseReason::IdleTimeout.to_string(), "idle_timeout");
        assert_eq!(UdpOutcome::RateLimited.as_str(), "rate_limited");
    }
}
