//! Who holds the admin endpoint's connection slots, and whom to let go
//! when a new client arrives.
//!
//! The endpoint is for a scraper and a few probes, so it keeps few
//! connections; but a health check must be answered even while hostile
//! or broken clients hold every slot, or a load balancer marks a healthy
//! instance down. So a new connection is always accepted, and room is
//! made for it:
//! - a client (an IP address) holds at most [`PER_CLIENT`] slots: its
//!   next connection closes its own least recently active one, so one
//!   client can only crowd out itself;
//! - the pool holds at most [`CAPACITY`]: when full, the least recently
//!   active connection of all is closed.
//!
//! "Active" means accepted, or a request received. A connection that sends
//! nothing, trickles a header or stopped reading its responses falls
//! behind every client that is being served, and goes first; a scraper's
//! kept-alive connection between two scrapes goes before one with a
//! request in hand.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Admin connections held at once.
pub(super) const CAPACITY: usize = 32;
/// Admin connections one client address holds at once: a scraper and a few
/// probes need far fewer.
pub(super) const PER_CLIENT: usize = 8;

/// The admin endpoint's connections, shared by the accept loop (which
/// admits) and the connections (which report activity and leave).
#[derive(Clone)]
pub(super) struct Pool(Arc<Mutex<Slots>>);

struct Slots {
    capacity: usize,
    per_client: usize,
    next_id: u64,
    held: Vec<Slot>,
}

struct Slot {
    id: u64,
    client: IpAddr,
    active: Instant,
    /// Cancelled when the connection is let go.
    let_go: CancellationToken,
}

/// A connection's slot: report activity through it, and stop when it is
/// let go; dropping it frees the slot.
pub(super) struct Held {
    pool: Pool,
    id: u64,
    let_go: CancellationToken,
}

impl Pool {
    pub(super) fn new(capacity: usize, per_client: usize) -> Pool {
        Pool(Arc::new(Mutex::new(Slots {
            capacity: capacity.max(1),
            per_client: per_client.max(1),
            next_id: 0,
            held: Vec::new(),
        })))
    }

    /// Admits a connection from `client`, accepted `now`, and returns its
    /// slot. The connections let go to make room see
    /// [`Held::let_go`] complete.
    pub(super) fn admit(&self, client: IpAddr, now: Instant) -> Held {
        // One client whether it comes over IPv4 or IPv4-mapped on a
        // dual-stack socket.
        let client = client.to_canonical();
        let mut slots = self.lock();
        let let_go = |slots: &mut Slots, index: usize| {
            slots.held.swap_remove(index).let_go.cancel();
        };
        let of_client = slots.held.iter().filter(|s| s.client == client).count();
        if of_client >= slots.per_client
            && let Some(index) = slots.least_recently_active(|s| s.client == client)
        {
            let_go(&mut slots, index);
        }
        if slots.held.len() >= slots.capacity
            && let Some(index) = slots.least_recently_active(|_| true)
        {
            let_go(&mut slots, index);
        }
        let id = slots.next_id;
        slots.next_id += 1;
        let token = CancellationToken::new();
        slots.held.push(Slot {
            id,
            client,
            active: now,
            let_go: token.clone(),
        });
        Held {
            pool: self.clone(),
            id,
            let_go: token,
        }
    }

    /// Connections held now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().held.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        // A panic while holding the lock leaves the slots consistent: every
        // change is one push or one swap_remove.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Slots {
    fn least_recently_active(&self, of: impl Fn(&Slot) -> bool) -> Option<usize> {
        self.held
            .iter()
            .enumerate()
            .filter(|(_, slot)| of(slot))
            .min_by_key(|(_, slot)| (slot.active, slot.id))
            .map(|(index, _)| index)
    }
}

impl Held {
    /// A request arrived on this connection at `now`.
    pub(super) fn active(&self, now: Instant) {
        if let Some(slot) = self.pool.lock().held.iter_mut().find(|s| s.id == self.id) {
            slot.active = now;
        }
    }

    /// Completes when the pool lets this connection go to make room.
    pub(super) async fn let_go(&self) {
        self.let_go.cancelled().await;
    }

    #[cfg(test)]
    fn is_let_go(&self) -> bool {
        self.let_go.is_cancelled()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut slots = self.pool.lock();
        if let Some(index) = slots.held.iter().position(|s| s.id == self.id) {
            slots.held.swap_remove(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use super::*;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
    const C: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 3));

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn a_client_at_its_cap_lets_go_of_its_own_least_recently_active_connection() {
        let pool = Pool::new(10, 2);
        let start = Instant::now();
        let first = pool.admit(A, at(start, 0));
        let second = pool.admit(A, at(start, 1));
        // The first connection sent a request after the second arrived: the
        // second is now the least recently active.
        first.active(at(start, 2));
        let other = pool.admit(B, at(start, 3));
        assert!(!first.is_let_go() && !second.is_let_go(), "B is not A");
        let third = pool.admit(A, at(start, 4));
        assert!(second.is_let_go(), "the least recently active goes");
        assert!(!first.is_let_go() && !other.is_let_go() && !third.is_let_go());
        assert_eq!(pool.len(), 3);
    }

    #[test]
    fn a_full_pool_lets_go_of_the_least_recently_active_connection_of_all() {
        let pool = Pool::new(2, 2);
        let start = Instant::now();
        let a = pool.admit(A, at(start, 0));
        let b = pool.admit(B, at(start, 1));
        let c = pool.admit(C, at(start, 2));
        assert!(a.is_let_go());
        assert!(!b.is_let_go() && !c.is_let_go());
        assert_eq!(pool.len(), 2);
    }

    #[test]
    fn a_connection_that_ends_frees_its_slot() {
        let pool = Pool::new(1, 1);
        drop(pool.admit(A, Instant::now()));
        assert_eq!(pool.len(), 0);
        let next = pool.admit(A, Instant::now());
        assert!(!next.is_let_go());
    }

    #[test]
    fn an_ipv4_mapped_address_is_the_same_client() {
        let pool = Pool::new(10, 1);
        let v4 = pool.admit(A, Instant::now());
        let IpAddr::V4(a) = A else { unreachable!() };
        let _v6 = pool.admit(IpAddr::V6(a.to_ipv6_mapped()), Instant::now());
        assert!(v4.is_let_go());
        assert_eq!(pool.len(), 1);
    }
}
