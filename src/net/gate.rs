//! The door: how many incoming connections may be in their first exchange at once, in total,
//! per address and per IPv4 /24, and which one gives way when the door is full.
//!
//! One address (or one /24) may hold only a small part of the door, so that slow or silent
//! sockets from one peer never shut out everyone else (gtk-gnutella bounds connections per IP
//! and bans floods, `ban.c`, `nodes.c`). When the door is full anyway (many addresses), the
//! address holding the most loses its oldest connection, and a newcomer from that very address
//! is the one refused.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use async_std::channel::{Receiver, Sender, bounded};

/// First exchanges in progress at once, from everyone.
pub const MAX_PENDING: usize = 64;
/// Of those, from one address.
pub const MAX_PENDING_PER_IP: usize = 8;
/// Of those, from one IPv4 /24 (an IPv6 address counts as its own network).
pub const MAX_PENDING_PER_NET: usize = 16;
/// Incoming connections open at once from one address, past their first exchange too
/// (gtk-gnutella lets one address hold a few uploads and one link; a NAT hides several users).
pub const MAX_OPEN_PER_IP: usize = 32;
/// File descriptors kept out of the connection budget, at least: files being served and
/// written, rescans, the API, outgoing dials.
pub const FD_RESERVE: usize = 32;
/// The budget never goes below this, however low the limit.
pub const MIN_BUDGET: usize = 8;

/// How many incoming connections the process can hold, from its file descriptor limit:
/// a quarter (at least FD_RESERVE) is kept for everything else.
pub fn budget_for(fd_limit: u64) -> usize {
    let limit = usize::try_from(fd_limit).unwrap_or(usize::MAX).min(1 << 20);
    let reserve = (limit / 4).clamp(FD_RESERVE, 4096);
    limit.saturating_sub(reserve).max(MIN_BUDGET)
}

/// Raises the soft file descriptor limit to the hard one and returns the connection budget
/// it allows.
pub fn raise_fd_limit() -> usize {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => {
            let b = budget_for(n);
            log::info!("file descriptors: limit {n}, room for {b} incoming connections");
            b
        }
        Err(e) => {
            log::warn!("cannot read or raise the file descriptor limit: {e}");
            budget_for(1024)
        }
    }
}

/// Why a newcomer was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("its address has {MAX_PENDING_PER_IP} connections in their first exchange")]
    Address,
    #[error("its /24 has {MAX_PENDING_PER_NET} connections in their first exchange")]
    Network,
    #[error("the door is full and its address holds the most")]
    Full,
    #[error("its address has {MAX_OPEN_PER_IP} connections open")]
    AddressOpen,
    #[error("the process has as many connections as its file descriptors allow")]
    Budget,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Net {
    V4([u8; 3]),
    V6(IpAddr),
}

fn net_of(ip: IpAddr) -> Net {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            Net::V4([o[0], o[1], o[2]])
        }
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => net_of(IpAddr::V4(v4)),
            None => Net::V6(ip),
        },
    }
}

#[derive(Debug)]
struct Pending {
    ip: IpAddr,
    since: Instant,
    /// Dropped to tell the connection it has been shed.
    _shed: Sender<()>,
}

#[derive(Debug, Default)]
struct State {
    /// Connections open, first exchange or not, and per address.
    open_total: usize,
    open_per_ip: HashMap<IpAddr, usize>,
    next: u64,
    open: HashMap<u64, Pending>,
    per_ip: HashMap<IpAddr, usize>,
    per_net: HashMap<Net, usize>,
    shed: u64,
    refused: u64,
}

impl State {
    fn remove(&mut self, id: u64) -> Option<Pending> {
        let p = self.open.remove(&id)?;
        let ip = p.ip;
        dec(&mut self.per_ip, ip);
        dec(&mut self.per_net, net_of(ip));
        Some(p)
    }
}

fn dec<K: std::hash::Hash + Eq>(m: &mut HashMap<K, usize>, k: K) {
    if let Some(n) = m.get_mut(&k) {
        *n -= 1;
        if *n == 0 {
            m.remove(&k);
        }
    }
}

/// The counts, for the log and the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GateStats {
    pub open: usize,
    pub budget: usize,
    pub pending: usize,
    pub shed: u64,
    pub refused: u64,
}

#[derive(Debug)]
pub struct Gate {
    state: Mutex<State>,
    budget: usize,
}

/// A connection's place in the door, given back when dropped.
#[derive(Debug)]
pub struct Ticket {
    gate: Arc<Gate>,
    id: u64,
    shed: Receiver<()>,
}

/// An open incoming connection's share of the budget, given back when dropped.
#[derive(Debug)]
pub struct Open {
    gate: Arc<Gate>,
    ip: IpAddr,
}

impl Drop for Open {
    fn drop(&mut self) {
        let mut s = self.gate.lock();
        s.open_total -= 1;
        dec(&mut s.open_per_ip, self.ip);
    }
}

impl Ticket {
    /// Resolves when the door sheds this connection to make room.
    pub async fn shed(&self) {
        // Nothing is ever sent: the sender is dropped when shed (or the gate goes).
        let _ = self.shed.recv().await;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.gate.lock().remove(self.id);
    }
}

impl Gate {
    /// A door for at most `budget` open incoming connections.
    pub fn new(budget: usize) -> Arc<Self> {
        Arc::new(Gate {
            state: Mutex::default(),
            budget: budget.max(MIN_BUDGET),
        })
    }

    /// A connection from `ip` is accepted: it counts until the `Open` is dropped.
    pub fn open(self: &Arc<Self>, ip: IpAddr) -> Result<Open, Refused> {
        let mut s = self.lock();
        if s.open_total >= self.budget {
            s.refused += 1;
            return Err(Refused::Budget);
        }
        if s.open_per_ip.get(&ip).copied().unwrap_or(0) >= MAX_OPEN_PER_IP {
            s.refused += 1;
            return Err(Refused::AddressOpen);
        }
        s.open_total += 1;
        *s.open_per_ip.entry(ip).or_insert(0) += 1;
        Ok(Open {
            gate: self.clone(),
            ip,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection from `ip` arrives at `now`.
    pub fn enter(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Ticket, Refused> {
        let mut s = self.lock();
        let refuse = |s: &mut State, why| {
            s.refused += 1;
            Err(why)
        };
        let mine = s.per_ip.get(&ip).copied().unwrap_or(0);
        if mine >= MAX_PENDING_PER_IP {
            return refuse(&mut s, Refused::Address);
        }
        if s.per_net.get(&net_of(ip)).copied().unwrap_or(0) >= MAX_PENDING_PER_NET {
            return refuse(&mut s, Refused::Network);
        }
        if s.open.len() >= MAX_PENDING {
            // The address holding the most gives way; ties go to the one whose oldest waited
            // longest. A newcomer whose own address holds as many is refused instead.
            let (top, most) = s
                .per_ip
                .iter()
                .map(|(ip, n)| (*ip, *n))
                .max_by_key(|(ip, n)| {
                    let oldest = s
                        .open
                        .values()
                        .filter(|p| p.ip == *ip)
                        .map(|p| p.since)
                        .min();
                    (*n, std::cmp::Reverse(oldest))
                })
                .expect("a full door has addresses");
            if mine + 1 >= most {
                return refuse(&mut s, Refused::Full);
            }
            let victim = s
                .open
                .iter()
                .filter(|(_, p)| p.ip == top)
                .min_by_key(|(id, p)| (p.since, **id))
                .map(|(id, _)| *id)
                .expect("the top address has a connection");
            s.remove(victim);
            s.shed += 1;
        }
        let id = s.next;
        s.next += 1;
        let (tx, rx) = bounded(1);
        s.open.insert(
            id,
            Pending {
                ip,
                since: now,
                _shed: tx,
            },
        );
        *s.per_ip.entry(ip).or_insert(0) += 1;
        *s.per_net.entry(net_of(ip)).or_insert(0) += 1;
        Ok(Ticket {
            gate: self.clone(),
            id,
            shed: rx,
        })
    }

    pub fn stats(&self) -> GateStats {
        let s = self.lock();
        GateStats {
            open: s.open_total,
            budget: self.budget,
            pending: s.open.len(),
            shed: s.shed,
            refused: s.refused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn ip(a: u8, b: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(100, 64, a, b))
    }

    fn is_shed(t: &Ticket) -> bool {
        t.shed.is_closed()
    }

    #[test]
    fn one_address_holds_at_most_its_share_and_gets_it_back_when_done() {
        let g = Gate::new(1000);
        let t0 = Instant::now();
        let mut held: Vec<Ticket> = (0..MAX_PENDING_PER_IP)
            .map(|_| g.enter(ip(0, 1), t0).expect("room"))
            .collect();
        assert_eq!(g.enter(ip(0, 1), t0).err(), Some(Refused::Address));
        // Another address is let in.
        let other = g.enter(ip(1, 1), t0).expect("another address");
        held.pop();
        assert!(g.enter(ip(0, 1), t0).is_ok());
        drop(other);
        assert_eq!(g.stats().refused, 1);
    }

    #[test]
    fn one_network_holds_at_most_its_share() {
        let g = Gate::new(1000);
        let t0 = Instant::now();
        let _held: Vec<Ticket> = (0..MAX_PENDING_PER_NET)
            .map(|i| g.enter(ip(0, (i / 4) as u8), t0).expect("room"))
            .collect();
        assert_eq!(g.enter(ip(0, 200), t0).err(), Some(Refused::Network));
        assert!(g.enter(ip(1, 200), t0).is_ok());
    }

    #[test]
    fn a_full_door_sheds_the_oldest_of_the_address_holding_the_most() {
        let g = Gate::new(1000);
        let t0 = Instant::now();
        let mut tickets = Vec::new();
        // Fill the door from many networks: one address holds 8, the rest 4 each.
        for i in 0..MAX_PENDING_PER_IP {
            let at = t0 + Duration::from_millis(i as u64);
            tickets.push((ip(0, 1), g.enter(ip(0, 1), at).expect("room")));
        }
        let mut net = 1u8;
        while g.stats().pending < MAX_PENDING {
            for _ in 0..4 {
                if g.stats().pending < MAX_PENDING {
                    tickets.push((ip(net, 1), g.enter(ip(net, 1), t0).expect("room")));
                }
            }
            net += 1;
        }
        // A newcomer from a new address gets in; the top address loses its oldest.
        let newcomer = g.enter(ip(200, 1), t0 + Duration::from_secs(1));
        assert!(newcomer.is_ok());
        let shed: Vec<_> = tickets.iter().filter(|(_, t)| is_shed(t)).collect();
        assert_eq!(shed.len(), 1);
        assert_eq!(shed[0].0, ip(0, 1));
        assert_eq!(shed[0].1.id, tickets[0].1.id, "the oldest of that address");
        assert_eq!(g.stats().pending, MAX_PENDING);
        // A newcomer from the address that holds the most is the one refused.
        assert_eq!(g.enter(ip(0, 1), t0).err(), Some(Refused::Full));
        assert!(tickets.iter().filter(|(_, t)| is_shed(t)).count() == 1);
        // Dropping a shed ticket gives back nothing twice.
        let before = g.stats().pending;
        tickets.remove(0);
        assert_eq!(g.stats().pending, before);
    }

    #[test]
    fn open_connections_stay_within_the_budget_and_a_share_per_address() {
        let g = Gate::new(40);
        let mut held = Vec::new();
        for _ in 0..MAX_OPEN_PER_IP {
            held.push(g.open(ip(0, 1)).expect("room"));
        }
        assert_eq!(g.open(ip(0, 1)).err(), Some(Refused::AddressOpen));
        for i in 0..(40 - MAX_OPEN_PER_IP) {
            held.push(g.open(ip(1, i as u8)).expect("room"));
        }
        assert_eq!(g.open(ip(2, 1)).err(), Some(Refused::Budget));
        held.pop();
        assert!(g.open(ip(2, 1)).is_ok());
        assert_eq!(g.stats().open, 39);
    }

    #[test]
    fn the_budget_keeps_a_reserve_of_descriptors() {
        assert_eq!(budget_for(1024), 768);
        assert_eq!(budget_for(64), 32);
        assert_eq!(budget_for(16), MIN_BUDGET);
        assert_eq!(budget_for(1 << 20), (1 << 20) - 4096);
        assert_eq!(budget_for(u64::MAX), (1 << 20) - 4096);
    }

    #[test]
    fn a_shed_ticket_wakes_its_connection() {
        let g = Gate::new(1000);
        let t0 = Instant::now();
        let mut tickets = Vec::new();
        for i in 0..MAX_PENDING {
            // One address holds two; the others one each.
            let a = ip((i / 4) as u8, (i % 4).min(2) as u8);
            tickets.push(g.enter(a, t0).expect("room"));
        }
        // Every address holding one, a newcomer would churn them for nothing: it is the
        // address with two that gives way.
        let _n = g.enter(ip(250, 1), t0).expect("sheds one");
        let woke = tickets.iter().filter(|t| is_shed(t)).count();
        assert_eq!(woke, 1);
        let t = tickets.iter().find(|t| is_shed(t)).expect("one");
        // The future completes at once.
        async_std::task::block_on(t.shed());
    }
}
