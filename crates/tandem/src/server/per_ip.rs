//! `--max-connections-per-ip`: how many connections one client may hold at
//! once, so that a single host cannot take every connection slot.
//!
//! A client is an IPv4 address, or an IPv6 /64: one host is routinely given
//! a whole /64, and counting its addresses one by one would let it open as
//! many connections as it likes. IPv4-mapped IPv6 addresses count as the
//! IPv4 address they carry.
//!
//! The counts live in one map behind a mutex, touched once when a
//! connection is accepted and once when it closes, never per message. The
//! map holds only clients with a live connection, so it is bounded by
//! `--max-connections`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use tracing::debug;

use crate::metrics::Metrics;

/// The per-client limit and the live counts.
#[derive(Debug)]
pub(crate) struct PerIpLimit {
    max: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in its client's count, given back on drop.
#[derive(Debug)]
pub(crate) struct PerIpClaim {
    limit: Arc<PerIpLimit>,
    client: IpAddr,
}

impl PerIpLimit {
    pub(crate) fn new(max: usize) -> Arc<PerIpLimit> {
        Arc::new(PerIpLimit {
            max,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// A place for one more connection from `ip`, or `None` if its client
    /// already holds the maximum.
    pub(crate) fn try_claim(self: &Arc<Self>, ip: IpAddr) -> Option<PerIpClaim> {
        let client = client_of(ip);
        // A panic cannot happen while the lock is held (only map updates
        // run under it), so a poisoned lock still holds consistent counts.
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(client).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(PerIpClaim {
            limit: self.clone(),
            client,
        })
    }

    /// Clients with at least one live connection.
    #[cfg(test)]
    fn clients(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for PerIpClaim {
    fn drop(&mut self) {
        let mut held = self
            .limit
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.client);
            }
        }
    }
}

/// Admits a connection from `peer` under `limit`, if there is one: its
/// place in the client's count, or `Err` when the client already holds the
/// maximum, in which case the refusal is logged and counted and the caller
/// closes the connection unserved.
pub(crate) fn admit(
    limit: Option<&Arc<PerIpLimit>>,
    peer: SocketAddr,
    metrics: &Metrics,
) -> Result<Option<Box<PerIpClaim>>, ()> {
    let Some(limit) = limit else {
        return Ok(None);
    };
    match limit.try_claim(peer.ip()) {
        // Boxed: every connection's admission has room for a claim, and
        // without the limit, the default, it is a null pointer.
        Some(claim) => Ok(Some(Box::new(claim))),
        None => {
            debug!(%peer, "client over --max-connections-per-ip; closing");
            metrics.connection_rejected();
            Err(())
        }
    }
}

/// The client `ip` belongs to: the IPv4 address, or the IPv6 /64.
fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_client_gets_at_most_max_places_and_gets_them_back_on_close() {
        let limit = PerIpLimit::new(2);
        let first = limit.try_claim(ip("192.0.2.1"));
        let second = limit.try_claim(ip("192.0.2.1"));
        assert!(first.is_some() && second.is_some());
        assert!(limit.try_claim(ip("192.0.2.1")).is_none());
        // Another client is not affected.
        assert!(limit.try_claim(ip("192.0.2.2")).is_some());
        drop(first);
        assert!(limit.try_claim(ip("192.0.2.1")).is_some());
    }

    #[test]
    fn clients_without_connections_leave_the_map() {
        let limit = PerIpLimit::new(3);
        let claims: Vec<_> = (0..50)
            .filter_map(|i| limit.try_claim(IpAddr::from([198, 51, 100, i])))
            .collect();
        assert_eq!(limit.clients(), 50);
        drop(claims);
        assert_eq!(limit.clients(), 0);
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let limit = PerIpLimit::new(1);
        let _held = limit.try_claim(ip("2001:db8:1:2::1")).unwrap();
        assert!(limit.try_claim(ip("2001:db8:1:2:ffff::9")).is_none());
        assert!(limit.try_claim(ip("2001:db8:1:3::1")).is_some());
    }

    #[test]
    fn an_ipv4_mapped_address_is_the_ipv4_client() {
        let limit = PerIpLimit::new(1);
        let _held = limit.try_claim(ip("192.0.2.7")).unwrap();
        assert!(limit.try_claim(ip("::ffff:192.0.2.7")).is_none());
    }
}
