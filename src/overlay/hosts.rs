//! The host cache: addresses of servents learnt from pongs, `X-Try-Ultrapeers`, `--peer` and
//! bootstrap services, with a back-off per address so a dead host is not hammered.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// Hosts remembered. gtk-gnutella keeps a few thousand per class; 4096 is plenty to rejoin.
pub const HOST_CAPACITY: usize = 4096;
/// First retry delay after a failed dial; doubles per failure up to [`MAX_BACKOFF`].
pub const BASE_BACKOFF: Duration = Duration::from_secs(15);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30 * 60);
/// Failures after which an unpinned host is not saved for the next run. Within a run it stays
/// (a node left with no ultrapeer tries it again), but failure counts are not saved, so a
/// saved dead host would come back as good as new.
pub const UNSAVED_AFTER_FAILURES: u32 = 6;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostEntry {
    pub addr: SocketAddrV4,
    /// Announced itself as an ultrapeer (X-Try-Ultrapeers, GGEP `UP` in its pong).
    pub ultrapeer: bool,
    /// Given by the user: never evicted.
    pub pinned: bool,
    #[serde(skip)]
    pub failures: u32,
}

#[derive(Debug, Clone)]
struct Slot {
    entry: HostEntry,
    seen: Instant,
    next_try: Instant,
    /// The user disconnected it: not dialled before this, whatever ends back-offs.
    held: Option<Instant>,
}

pub struct HostCache {
    hosts: HashMap<SocketAddrV4, Slot>,
    capacity: usize,
    accept_private: bool,
}

/// An address worth dialling: not unspecified, broadcast or multicast, port not 0; private and
/// loopback ranges only where they are allowed (tests, LANs).
pub fn usable(addr: &SocketAddrV4, accept_private: bool) -> bool {
    let ip: &Ipv4Addr = addr.ip();
    let local = ip.is_private() || ip.is_loopback() || ip.is_link_local();
    addr.port() != 0
        && !ip.is_unspecified()
        && !ip.is_broadcast()
        && !ip.is_multicast()
        && !ip.is_documentation()
        && (accept_private || !local)
}

/// Whether an incoming connection from `peer` proves that the peers who see our address can
/// reach us (PROTOCOL.md §9). One from outside does. One from this host does only when we
/// listen on loopback (a network of one host). One from our own LAN does only when the peers
/// see us at a LAN address too (`external`, what their `Remote-IP` said): a LAN-only network.
/// Behind a home router a neighbour on the LAN reaches us where the Internet cannot, and taking
/// its connection for proof dropped the push flag, so downloads from outside failed.
pub fn proves_reachable(peer: Ipv4Addr, listen: Ipv4Addr, external: Option<Ipv4Addr>) -> bool {
    let lan = |ip: Ipv4Addr| ip.is_private() || ip.is_link_local();
    if peer.is_loopback() {
        return listen.is_loopback();
    }
    if !lan(peer) {
        return true;
    }
    external.is_some_and(|e| lan(e) || e.is_loopback())
}

impl HostCache {
    pub fn new(capacity: usize, accept_private: bool) -> Self {
        HostCache {
            hosts: HashMap::new(),
            capacity: capacity.max(1),
            accept_private,
        }
    }

    /// Adds or refreshes a host. Returns false if the address is not usable.
    pub fn add(&mut self, addr: SocketAddrV4, ultrapeer: bool, pinned: bool, now: Instant) -> bool {
        if !usable(&addr, self.accept_private) {
            return false;
        }
        if let Some(s) = self.hosts.get_mut(&addr) {
            s.seen = now;
            s.entry.ultrapeer |= ultrapeer;
            s.entry.pinned |= pinned;
            if pinned {
                // The user asks for this host (a connect, a --peer): that overrides the hold
                // after their own disconnect and any back-off.
                s.entry.failures = 0;
                s.next_try = now;
                s.held = None;
            }
            return true;
        }
        if self.hosts.len() >= self.capacity {
            self.evict_one();
        }
        if self.hosts.len() >= self.capacity {
            return false;
        }
        self.hosts.insert(
            addr,
            Slot {
                entry: HostEntry {
                    addr,
                    ultrapeer,
                    pinned,
                    failures: 0,
                },
                seen: now,
                next_try: now,
                held: None,
            },
        );
        true
    }

    fn evict_one(&mut self) {
        let victim = self
            .hosts
            .values()
            .filter(|s| !s.entry.pinned)
            .min_by_key(|s| (std::cmp::Reverse(s.entry.failures), s.seen))
            .map(|s| s.entry.addr);
        if let Some(a) = victim {
            self.hosts.remove(&a);
        }
    }

    /// A dial failed: back off (15 s doubling to 30 min). The host stays: an ultrapeer that
    /// was full or down may be the only one left after churn, and a node that forgot it had
    /// nobody to ask. The capacity bounds the cache, and eviction takes the most failed first.
    pub fn failed(&mut self, addr: &SocketAddrV4, now: Instant) {
        let Some(s) = self.hosts.get_mut(addr) else {
            return;
        };
        s.entry.failures = s.entry.failures.saturating_add(1);
        let shift = s.entry.failures.min(8) - 1;
        let delay = (BASE_BACKOFF * (1 << shift)).min(MAX_BACKOFF);
        s.next_try = now + delay;
    }

    /// Every back-off ends now (failure counts stay, so the hosts that failed least come
    /// first): our role changed and hosts that refused the old one may take the new one, or
    /// we have no ultrapeer left and nobody else to dial. A host the user disconnected stays
    /// held. Returns how many hosts may be dialled now.
    pub fn retry_all(&mut self, now: Instant) -> usize {
        let mut free = 0;
        for s in self.hosts.values_mut() {
            match s.held {
                // The user's own disconnect is not undone by a retry round.
                Some(until) if until > now => {}
                _ => {
                    s.held = None;
                    s.next_try = s.next_try.min(now);
                    free += 1;
                }
            }
        }
        free
    }

    /// The user closed our link to this host: it is no longer kept, and not dialled again
    /// before `until`.
    pub fn set_aside(&mut self, addr: &SocketAddrV4, until: Instant) {
        if let Some(s) = self.hosts.get_mut(addr) {
            s.entry.pinned = false;
            s.next_try = s.next_try.max(until);
            s.held = Some(until);
        }
    }

    /// A connection worked: reset the back-off.
    pub fn succeeded(&mut self, addr: &SocketAddrV4, now: Instant) {
        if let Some(s) = self.hosts.get_mut(addr) {
            s.entry.failures = 0;
            s.seen = now;
            s.next_try = now;
        }
    }

    /// Hosts that may be dialled now, pinned first, then ultrapeers, then the freshest.
    pub fn candidates(&self, now: Instant) -> Vec<SocketAddrV4> {
        let mut c: Vec<&Slot> = self.hosts.values().filter(|s| s.next_try <= now).collect();
        c.sort_by_key(|s| {
            (
                !s.entry.pinned,
                !s.entry.ultrapeer,
                s.entry.failures,
                std::cmp::Reverse(s.seen),
            )
        });
        c.into_iter().map(|s| s.entry.addr).collect()
    }

    /// The freshest ultrapeers, for `X-Try-Ultrapeers` and pongs. Leaves are never offered:
    /// they refuse every connection (PROTOCOL.md §4), and whoever learns them from `IPP` or
    /// `X-Try-Ultrapeers` takes them for ultrapeers.
    pub fn freshest(&self, n: usize, exclude: Option<SocketAddrV4>) -> Vec<SocketAddrV4> {
        let mut c: Vec<&Slot> = self
            .hosts
            .values()
            .filter(|s| Some(s.entry.addr) != exclude && s.entry.failures == 0 && s.entry.ultrapeer)
            .collect();
        c.sort_by_key(|s| std::cmp::Reverse(s.seen));
        c.into_iter().take(n).map(|s| s.entry.addr).collect()
    }

    pub fn entries(&self) -> Vec<HostEntry> {
        self.hosts.values().map(|s| s.entry.clone()).collect()
    }

    /// The hosts worth saving for the next run: pinned ones and those that have not kept
    /// failing.
    pub fn to_save(&self) -> Vec<HostEntry> {
        self.hosts
            .values()
            .filter(|s| s.entry.pinned || s.entry.failures < UNSAVED_AFTER_FAILURES)
            .map(|s| s.entry.clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    #[test]
    fn only_a_connection_from_where_peers_see_us_proves_we_are_reachable() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let home = ip("192.168.1.10");
        let public = Some(ip("100.64.0.7"));
        // Behind a home router: the Internet proves it, a neighbour on the LAN does not.
        assert!(proves_reachable(ip("100.64.0.1"), home, public));
        assert!(!proves_reachable(ip("192.168.1.20"), home, public));
        assert!(!proves_reachable(ip("192.168.1.20"), home, None));
        assert!(!proves_reachable(ip("169.254.3.4"), ip("0.0.0.0"), public));
        // A LAN-only network: the peers see us at a LAN address.
        assert!(proves_reachable(ip("192.168.1.20"), home, Some(home)));
        // This host: only a node listening on loopback, whose whole network it is.
        assert!(proves_reachable(ip("127.0.0.1"), ip("127.0.0.1"), None));
        assert!(proves_reachable(ip("127.0.1.2"), ip("127.0.0.1"), None));
        assert!(!proves_reachable(ip("127.0.0.1"), ip("0.0.0.0"), public));
        assert!(!proves_reachable(ip("127.0.0.1"), home, public));
    }

    #[test]
    fn unusable_addresses_are_refused() {
        let mut h = HostCache::new(8, false);
        let now = Instant::now();
        assert!(!h.add(a("0.0.0.0:6346"), false, false, now));
        assert!(!h.add(a("127.0.0.1:6346"), false, false, now));
        assert!(!h.add(a("10.1.2.3:6346"), false, false, now));
        assert!(!h.add(a("224.0.0.1:6346"), false, false, now));
        assert!(!h.add(a("8.8.8.8:0"), false, false, now));
        assert!(h.add(a("8.8.8.8:6346"), false, false, now));
        let mut local = HostCache::new(8, true);
        assert!(local.add(a("127.0.0.1:6346"), false, false, now));
    }

    #[test]
    fn failing_hosts_are_kept_and_retried_after_their_back_off() {
        let mut h = HostCache::new(8, true);
        let now = Instant::now();
        h.add(a("127.0.0.1:1"), true, false, now);
        for _ in 0..20 {
            h.failed(&a("127.0.0.1:1"), now);
        }
        assert_eq!(h.len(), 1, "a failing host is not forgotten");
        assert!(h.candidates(now + MAX_BACKOFF / 2).is_empty());
        assert_eq!(h.candidates(now + MAX_BACKOFF), vec![a("127.0.0.1:1")]);
        assert_eq!(h.retry_all(now), 1);
        assert_eq!(h.candidates(now), vec![a("127.0.0.1:1")]);
        assert!(h.to_save().is_empty(), "but not saved for the next run");
        h.add(a("127.0.0.1:2"), true, true, now);
        h.add(a("127.0.0.1:3"), true, false, now);
        for _ in 0..UNSAVED_AFTER_FAILURES {
            h.failed(&a("127.0.0.1:2"), now);
        }
        h.failed(&a("127.0.0.1:3"), now);
        let mut saved: Vec<_> = h.to_save().into_iter().map(|e| e.addr).collect();
        saved.sort();
        assert_eq!(saved, vec![a("127.0.0.1:2"), a("127.0.0.1:3")]);
    }

    #[test]
    fn a_users_disconnect_holds_through_retry_rounds_until_they_connect_again() {
        let mut h = HostCache::new(8, true);
        let now = Instant::now();
        h.add(a("127.0.0.1:1"), true, true, now);
        h.add(a("127.0.0.1:2"), true, false, now);
        h.set_aside(&a("127.0.0.1:1"), now + Duration::from_secs(1800));
        assert_eq!(h.retry_all(now), 1, "only the host not held");
        assert_eq!(h.candidates(now), vec![a("127.0.0.1:2")]);
        h.add(a("127.0.0.1:1"), true, true, now);
        assert_eq!(
            h.candidates(now).len(),
            2,
            "the user's connect ends the hold"
        );
    }

    #[test]
    fn the_most_failed_host_is_evicted_first() {
        let mut h = HostCache::new(2, true);
        let now = Instant::now();
        h.add(a("127.0.0.1:1"), true, false, now);
        h.add(a("127.0.0.1:2"), true, false, now);
        h.failed(&a("127.0.0.1:1"), now);
        h.add(a("127.0.0.1:3"), true, false, now);
        let mut left: Vec<_> = h.entries().into_iter().map(|e| e.addr).collect();
        left.sort();
        assert_eq!(left, vec![a("127.0.0.1:2"), a("127.0.0.1:3")]);
    }

    #[test]
    fn failures_back_off_and_pinned_hosts_come_first_and_stay() {
        let mut h = HostCache::new(8, true);
        let now = Instant::now();
        h.add(a("127.0.0.1:1"), true, false, now);
        h.add(a("127.0.0.1:2"), false, true, now);
        assert_eq!(h.candidates(now), vec![a("127.0.0.1:2"), a("127.0.0.1:1")]);
        h.failed(&a("127.0.0.1:1"), now);
        assert_eq!(h.candidates(now), vec![a("127.0.0.1:2")]);
        assert_eq!(
            h.candidates(now + BASE_BACKOFF),
            vec![a("127.0.0.1:2"), a("127.0.0.1:1")]
        );
        for _ in 0..10 {
            h.failed(&a("127.0.0.1:2"), now);
            h.failed(&a("127.0.0.1:1"), now);
        }
        assert_eq!(h.len(), 2, "failing hosts stay");
        assert_eq!(
            h.candidates(now + MAX_BACKOFF),
            vec![a("127.0.0.1:2"), a("127.0.0.1:1")]
        );
    }

    #[test]
    fn only_ultrapeers_are_offered_freshest_first() {
        let t0 = Instant::now();
        let mut c = HostCache::new(10, true);
        c.add(a("10.0.0.1:1"), true, false, t0);
        c.add(a("10.0.0.2:1"), false, false, t0 + Duration::from_secs(1));
        c.add(a("10.0.0.3:1"), true, false, t0 + Duration::from_secs(2));
        assert_eq!(c.freshest(10, None), vec![a("10.0.0.3:1"), a("10.0.0.1:1")]);
        assert_eq!(c.freshest(10, Some(a("10.0.0.3:1"))), vec![a("10.0.0.1:1")]);
    }

    #[test]
    fn capacity_is_a_bound() {
        let mut h = HostCache::new(3, true);
        let now = Instant::now();
        for p in 1..=10u64 {
            h.add(
                a(&format!("127.0.0.1:{p}")),
                false,
                false,
                now + Duration::from_secs(p),
            );
        }
        assert_eq!(h.len(), 3);
        assert!(
            h.candidates(now + Duration::from_secs(20))
                .contains(&a("127.0.0.1:10"))
        );
    }
}
