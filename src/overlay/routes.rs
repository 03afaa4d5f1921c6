//! The routing tables: which connection a descriptor came from (for duplicates and the reverse
//! path of replies), and which connections lead to a servent (for Push). Both are LRUs with a
//! fixed capacity and an age limit, so a flood of fresh GUIDs only evicts old routes.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::wire::{Guid, PayloadType, ServentId};

use super::ConnId;

/// Seen (MUID, type) pairs kept. gtk-gnutella keeps up to ~1 M in 16384-entry chunks; 2^17
/// covers ten minutes at over 200 fresh queries a second in ~13 MB (PROTOCOL.md §5).
pub const ROUTE_CAPACITY: usize = 1 << 17;
/// Query routes live 10 minutes, the low end of PROTOCOL.md §5's 10–60 min: hits come back
/// within seconds, and a short life keeps the table small.
pub const ROUTE_LIFETIME: Duration = Duration::from_secs(600);
/// Servent GUIDs for Push, ≥ 1 h (PROTOCOL.md §5), refreshed on each hit.
pub const PUSH_ROUTE_CAPACITY: usize = 1 << 14;
pub const PUSH_ROUTE_LIFETIME: Duration = Duration::from_secs(3600);
/// Connections remembered per servent GUID: hits from one servent reach us by few paths.
pub const PUSH_PATHS: usize = 4;

/// Where a descriptor came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// We originated it.
    Local,
    Conn(ConnId),
}

#[derive(Debug, Clone, Copy)]
struct Route {
    source: Source,
    at: Instant,
}

/// (MUID, payload type) → where it came from.
pub struct RouteTable {
    map: LruCache<(Guid, u8), Route>,
    lifetime: Duration,
}

impl RouteTable {
    pub fn new(capacity: usize, lifetime: Duration) -> Self {
        RouteTable {
            map: LruCache::new(NonZeroUsize::new(capacity.max(1)).expect("max(1)")),
            lifetime,
        }
    }

    /// Records `source` for a descriptor not seen before. Returns false (and changes nothing)
    /// for a duplicate still within its lifetime.
    pub fn record(&mut self, muid: Guid, kind: PayloadType, source: Source, now: Instant) -> bool {
        let key = (muid, kind.to_byte());
        if let Some(r) = self.map.peek(&key)
            && now.saturating_duration_since(r.at) < self.lifetime
        {
            return false;
        }
        self.map.put(key, Route { source, at: now });
        true
    }

    /// Where the descriptor (MUID, type) came from, if that is still known.
    pub fn lookup(&self, muid: Guid, kind: PayloadType, now: Instant) -> Option<Source> {
        self.map
            .peek(&(muid, kind.to_byte()))
            .filter(|r| now.saturating_duration_since(r.at) < self.lifetime)
            .map(|r| r.source)
    }

    /// Forgets every route through a closed connection, so nothing is sent its way again.
    pub fn forget_conn(&mut self, id: ConnId) {
        let dead: Vec<(Guid, u8)> = self
            .map
            .iter()
            .filter(|(_, r)| r.source == Source::Conn(id))
            .map(|(k, _)| *k)
            .collect();
        for k in dead {
            self.map.pop(&k);
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[derive(Debug, Clone)]
struct PushPaths {
    conns: [Option<ConnId>; PUSH_PATHS],
    at: Instant,
}

/// Servent GUID → connections that delivered hits from it.
pub struct PushRoutes {
    map: LruCache<ServentId, PushPaths>,
}

impl PushRoutes {
    pub fn new(capacity: usize) -> Self {
        PushRoutes {
            map: LruCache::new(NonZeroUsize::new(capacity.max(1)).expect("max(1)")),
        }
    }

    /// Notes that a hit from `servent` arrived on `conn`.
    pub fn learn(&mut self, servent: ServentId, conn: ConnId, now: Instant) {
        let paths = self.map.get_or_insert_mut(servent, || PushPaths {
            conns: [None; PUSH_PATHS],
            at: now,
        });
        paths.at = now;
        if paths.conns.contains(&Some(conn)) {
            return;
        }
        // Newest first; the oldest path falls off the end.
        paths.conns.rotate_right(1);
        paths.conns[0] = Some(conn);
    }

    pub fn lookup(&self, servent: &ServentId, now: Instant) -> impl Iterator<Item = ConnId> + '_ {
        self.map
            .peek(servent)
            .filter(|p| now.saturating_duration_since(p.at) < PUSH_ROUTE_LIFETIME)
            .into_iter()
            .flat_map(|p| p.conns.iter().flatten().copied())
    }

    pub fn forget_conn(&mut self, id: ConnId) {
        let mut empty = Vec::new();
        for (guid, p) in self.map.iter_mut() {
            for c in p.conns.iter_mut() {
                if *c == Some(id) {
                    *c = None;
                }
            }
            if p.conns.iter().all(Option::is_none) {
                empty.push(*guid);
            }
        }
        for g in empty {
            self.map.pop(&g);
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_refused_until_the_route_expires() {
        let mut t = RouteTable::new(4, Duration::from_secs(10));
        let now = Instant::now();
        let g = Guid([1; 16]);
        assert!(t.record(g, PayloadType::Query, Source::Conn(1), now));
        assert!(!t.record(g, PayloadType::Query, Source::Conn(2), now));
        // The same MUID with another type is another descriptor.
        assert!(t.record(g, PayloadType::Ping, Source::Conn(2), now));
        assert_eq!(t.lookup(g, PayloadType::Query, now), Some(Source::Conn(1)));
        let later = now + Duration::from_secs(11);
        assert_eq!(t.lookup(g, PayloadType::Query, later), None);
        assert!(t.record(g, PayloadType::Query, Source::Conn(3), later));
    }

    #[test]
    fn capacity_evicts_the_oldest_and_closed_conns_are_forgotten() {
        let mut t = RouteTable::new(2, Duration::from_secs(10));
        let now = Instant::now();
        for i in 0..3u8 {
            t.record(
                Guid([i; 16]),
                PayloadType::Query,
                Source::Conn(i.into()),
                now,
            );
        }
        assert_eq!(t.len(), 2);
        assert_eq!(t.lookup(Guid([0; 16]), PayloadType::Query, now), None);
        t.forget_conn(2);
        assert_eq!(t.lookup(Guid([2; 16]), PayloadType::Query, now), None);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn push_routes_keep_a_few_paths_and_drop_closed_ones() {
        let mut p = PushRoutes::new(8);
        let now = Instant::now();
        let s = ServentId([9; 16]);
        for c in 1..=5 {
            p.learn(s, c, now);
        }
        p.learn(s, 5, now);
        let got: Vec<_> = p.lookup(&s, now).collect();
        assert_eq!(got, vec![5, 4, 3, 2]);
        for c in 2..=5 {
            p.forget_conn(c);
        }
        assert_eq!(p.lookup(&s, now).count(), 0);
        assert!(p.is_empty());
    }
}
