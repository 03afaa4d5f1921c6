//! Who may hold the API's connections, and the brake on wrong tokens.
//!
//! Every local user shares 127.0.0.1, so a bound per address is no defence here: 32 idle
//! sockets from anyone took the API down. Instead a full door sheds the connection that has
//! been idle longest (one waiting for its request, or between requests) and refuses a
//! newcomer only when every connection is busy answering. A client that sends wrong tokens
//! gets each further answer later, up to a few seconds: guessing a 256-bit token was never
//! possible, but 10,000 tries in 0.3 s should not be either.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_std::channel::{Receiver, Sender, bounded};

/// API connections open at once. A page holds a few (one per stream it follows), a script one
/// or two.
pub const MAX_API_CONNECTIONS: usize = 32;
/// Wrong tokens are remembered this long, per address.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// This many wrong tokens in the window cost nothing (a person mistyping, a stale page).
pub const FREE_FAILURES: usize = 3;
/// Each wrong token past those adds this to the wait before its answer…
pub const FAILURE_STEP: Duration = Duration::from_millis(250);
/// …up to this.
pub const MAX_DELAY: Duration = Duration::from_secs(5);
/// Addresses remembered (a bound for the table).
const MAX_ADDRESSES: usize = 1024;

#[derive(Debug)]
struct Conn {
    /// Since when it waits for a request; None while it answers one.
    idle_since: Option<Instant>,
    /// Dropped to shed it.
    _shed: Sender<()>,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    conns: HashMap<u64, Conn>,
    failures: HashMap<IpAddr, VecDeque<Instant>>,
    shed: u64,
}

#[derive(Debug, Default)]
pub struct Door {
    state: Mutex<State>,
}

/// A connection's place; given back when dropped.
#[derive(Debug)]
pub struct Entry {
    door: Arc<Door>,
    id: u64,
    shed: Receiver<()>,
}

impl Entry {
    /// It started answering a request.
    pub fn busy(&self) {
        if let Some(c) = self.door.lock().conns.get_mut(&self.id) {
            c.idle_since = None;
        }
    }

    /// It finished answering and waits for the next request.
    pub fn idle(&self, now: Instant) {
        if let Some(c) = self.door.lock().conns.get_mut(&self.id) {
            c.idle_since = Some(now);
        }
    }

    /// Resolves when the door sheds this connection for a newcomer.
    pub async fn shed(&self) {
        let _ = self.shed.recv().await;
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.door.lock().conns.remove(&self.id);
    }
}

impl Door {
    pub fn new() -> Arc<Self> {
        Arc::new(Door::default())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection arrives; None when every place is busy answering.
    pub fn enter(self: &Arc<Self>, now: Instant) -> Option<Entry> {
        let mut s = self.lock();
        if s.conns.len() >= MAX_API_CONNECTIONS {
            let victim = s
                .conns
                .iter()
                .filter_map(|(id, c)| c.idle_since.map(|t| (t, *id)))
                .min()?;
            s.conns.remove(&victim.1);
            s.shed += 1;
        }
        let id = s.next;
        s.next += 1;
        let (tx, rx) = bounded(1);
        s.conns.insert(
            id,
            Conn {
                idle_since: Some(now),
                _shed: tx,
            },
        );
        Some(Entry {
            door: self.clone(),
            id,
            shed: rx,
        })
    }

    /// `ip` sent a wrong token at `now`: how long its answer waits.
    pub fn failed(&self, ip: IpAddr, now: Instant) -> Duration {
        let mut s = self.lock();
        if s.failures.len() >= MAX_ADDRESSES && !s.failures.contains_key(&ip) {
            s.failures
                .retain(|_, v| v.back().is_some_and(|t| now < *t + FAILURE_WINDOW));
            if s.failures.len() >= MAX_ADDRESSES {
                s.failures.clear();
            }
        }
        let v = s.failures.entry(ip).or_default();
        while v.front().is_some_and(|t| now >= *t + FAILURE_WINDOW) {
            v.pop_front();
        }
        v.push_back(now);
        // Enough to reach the longest wait; older ones add nothing.
        let cap = FREE_FAILURES + (MAX_DELAY.as_millis() / FAILURE_STEP.as_millis()) as usize;
        while v.len() > cap {
            v.pop_front();
        }
        let over = v.len().saturating_sub(FREE_FAILURES) as u32;
        (FAILURE_STEP * over).min(MAX_DELAY)
    }

    #[cfg(test)]
    pub fn shed_count(&self) -> u64 {
        self.lock().shed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn a_full_door_sheds_the_longest_idle_and_refuses_only_when_all_are_busy() {
        let d = Door::new();
        let t0 = Instant::now();
        let entries: Vec<Entry> = (0..MAX_API_CONNECTIONS)
            .map(|i| d.enter(t0 + Duration::from_millis(i as u64)).expect("room"))
            .collect();
        // Entry 0 answers a long request; entry 1 is now the one idle longest.
        entries[0].busy();
        let newcomer = d.enter(t0 + Duration::from_secs(1)).expect("sheds one");
        assert!(entries[1].shed.is_closed());
        assert!(!entries[0].shed.is_closed());
        assert_eq!(d.shed_count(), 1);
        // All busy: the newcomer is refused.
        for e in &entries {
            e.busy();
        }
        newcomer.busy();
        assert!(d.enter(t0 + Duration::from_secs(2)).is_none());
        // One goes idle again: it is the one shed next.
        entries[5].idle(t0 + Duration::from_secs(3));
        assert!(d.enter(t0 + Duration::from_secs(4)).is_some());
        assert!(entries[5].shed.is_closed());
    }

    #[test]
    fn wrong_tokens_cost_more_and_more_up_to_a_cap_and_are_forgotten() {
        let d = Door::new();
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert_eq!(d.failed(ip, t0), Duration::ZERO);
        }
        assert_eq!(d.failed(ip, t0), FAILURE_STEP);
        assert_eq!(d.failed(ip, t0), FAILURE_STEP * 2);
        for _ in 0..100 {
            d.failed(ip, t0);
        }
        assert_eq!(d.failed(ip, t0), MAX_DELAY);
        assert_eq!(d.failed(other, t0), Duration::ZERO);
        assert_eq!(d.failed(ip, t0 + FAILURE_WINDOW), Duration::ZERO);
    }

    #[test]
    fn the_failure_table_is_bounded() {
        let d = Door::new();
        let t0 = Instant::now();
        for i in 0..(MAX_ADDRESSES as u32 * 3) {
            d.failed(IpAddr::V4(Ipv4Addr::from(0x7f00_0000 + i)), t0);
        }
        assert!(d.lock().failures.len() <= MAX_ADDRESSES);
    }
}
