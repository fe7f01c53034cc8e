//! UDP echo (RFC 862): `--udp` answers each datagram on the TCP listener's
//! address and port with the same bytes, from a task on the serving
//! runtime (the worker runtime, or the first shard), never the acceptor.
//!
//! An echo service that answers anyone is a reflector: a forged source
//! address turns it against a victim, and two reflecting services aimed at
//! each other loop forever. So it never answers datagrams from the ports of
//! the classic reflecting services (echo 7, daytime 13, qotd 17, chargen
//! 19, time 37, and port 0), nor from its own port, where another instance
//! on another address would answer back; and it answers each source address at most
//! `--udp-rate-limit` times a second (a token bucket per address, refilled
//! continuously, holding at most one second's worth). The buckets are
//! bounded: past [`MAX_SOURCES`] addresses, buckets idle for a second are
//! swept, and if that frees none, new addresses go unanswered until it
//! does.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::ServiceContext;
use crate::metrics::{Metrics, UdpOutcome};

/// Source ports of services that answer whatever they receive: a datagram
/// from one is never answered.
pub const REFLECTING_PORTS: [u16; 6] = [0, 7, 13, 17, 19, 37];
/// Most source addresses with a rate-limit bucket at once.
pub const MAX_SOURCES: usize = 65_536;
/// The largest UDP payload over IPv4 (IPv6 jumbograms aside).
const MAX_DATAGRAM: usize = 65_507;
/// Pause after a failed receive, so that a socket error cannot spin.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// A token bucket per source address.
#[derive(Debug)]
struct SourceLimiter {
    /// Datagrams per second, and the most a bucket holds.
    rate: f64,
    buckets: HashMap<IpAddr, Bucket>,
    last_sweep: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl SourceLimiter {
    fn new(rate: u32, now: Instant) -> SourceLimiter {
        SourceLimiter {
            rate: f64::from(rate),
            buckets: HashMap::new(),
            last_sweep: now,
        }
    }

    /// True if `source` may be answered at `now`, spending one token.
    fn allow(&mut self, source: IpAddr, now: Instant) -> bool {
        if !self.buckets.contains_key(&source) && self.buckets.len() >= MAX_SOURCES {
            self.sweep(now);
            if self.buckets.len() >= MAX_SOURCES {
                return false;
            }
        }
        let rate = self.rate;
        let bucket = self.buckets.entry(source).or_insert(Bucket {
            tokens: rate,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets buckets idle for a second: they have refilled, and a new
    /// bucket is the same. At most once a second.
    fn sweep(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_sweep) < Duration::from_secs(1) {
            return;
        }
        self.last_sweep = now;
        self.buckets
            .retain(|_, bucket| now.saturating_duration_since(bucket.at) < Duration::from_secs(1));
    }
}

/// True if a datagram from `source` must not be answered: it comes from a
/// reflecting service's port, or from this server's own port, where another
/// echo server (another tandem instance, on another address) would answer
/// the answer, and so on, until a rate limit stopped the pair.
fn is_reflector(source: SocketAddr, own_port: u16) -> bool {
    REFLECTING_PORTS.contains(&source.port()) || source.port() == own_port
}

/// Sets the UDP echo up on the current runtime (the serving one), and
/// returns its task: [`serve`] until the server stops.
pub(crate) fn start(
    socket: std::net::UdpSocket,
    rate_limit: u32,
    context: ServiceContext,
) -> io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    // A socket without an address fails the start, as any setup error of
    // a service does.
    let own_port = socket.local_addr()?.port();
    socket.set_nonblocking(true)?;
    let socket = UdpSocket::from_std(socket)?;
    Ok(serve(
        socket,
        own_port,
        rate_limit,
        context.stop().clone(),
        context.metrics().clone(),
    ))
}

/// Echoes datagrams on `socket`, bound to `own_port`, until `stop` is
/// cancelled, answering each source at most `rate_limit` times a second.
async fn serve(
    socket: UdpSocket,
    own_port: u16,
    rate_limit: u32,
    stop: CancellationToken,
    metrics: Metrics,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut limiter = SourceLimiter::new(rate_limit, Instant::now());
    let count = |outcome: UdpOutcome| metrics.udp_datagram(outcome);
    loop {
        let received = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            received = socket.recv_from(&mut buf) => received,
        };
        let (len, source) = match received {
            Ok(received) => received,
            Err(err) => {
                debug!(cause = %err, "UDP receive failed");
                count(UdpOutcome::Error);
                tokio::time::sleep(ERROR_PAUSE).await;
                continue;
            }
        };
        if is_reflector(source, own_port) {
            debug!(%source, "UDP datagram from a reflecting service's port, or this server's; not answered");
            count(UdpOutcome::Reflection);
            continue;
        }
        if !limiter.allow(source.ip(), Instant::now()) {
            count(UdpOutcome::RateLimited);
            continue;
        }
        match send(&socket, &buf[..len], source).await {
            Ok(()) => count(UdpOutcome::Echoed),
            Err(err) => {
                debug!(%source, cause = %err, "UDP echo failed");
                count(UdpOutcome::Error);
            }
        }
    }
}

async fn send(socket: &UdpSocket, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
    let sent = socket.send_to(datagram, to).await?;
    if sent != datagram.len() {
        return Err(io::Error::other("datagram truncated"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn the_reflecting_services_ports_are_never_answered() {
        let own = 8000;
        for port in [0, 7, 13, 17, 19, 37, own] {
            assert!(is_reflector(SocketAddr::new(ip(1), port), own), "{port}");
        }
        for port in [8, 1024, 53000] {
            assert!(!is_reflector(SocketAddr::new(ip(1), port), own), "{port}");
        }
    }

    #[test]
    fn a_source_gets_a_seconds_worth_at_once_then_the_rate() {
        let start = Instant::now();
        let mut limiter = SourceLimiter::new(10, start);
        let burst = (0..50).filter(|_| limiter.allow(ip(1), start)).count();
        assert_eq!(burst, 10);
        // Another source has its own bucket.
        assert!(limiter.allow(ip(2), start));
        // Half a second refills half the bucket.
        let later = start + Duration::from_millis(500);
        let refilled = (0..50).filter(|_| limiter.allow(ip(1), later)).count();
        assert_eq!(refilled, 5);
    }

    #[test]
    fn the_buckets_are_bounded_and_idle_ones_are_swept() {
        let start = Instant::now();
        let mut limiter = SourceLimiter::new(1, start);
        for n in 0..MAX_SOURCES as u32 {
            assert!(limiter.allow(IpAddr::from(n.to_be_bytes()), start));
        }
        // Full, and nothing idle yet: a new source is not answered.
        let newcomer = IpAddr::from([203, 0, 113, 1]);
        assert!(!limiter.allow(newcomer, start));
        // A second later every bucket is idle: swept, and room is made.
        let later = start + Duration::from_secs(2);
        assert!(limiter.allow(newcomer, later));
        assert_eq!(limiter.buckets.len(), 1);
    }
}
