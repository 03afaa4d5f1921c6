//! Who gets the upload slots: BitTorrent's choking algorithm (Cohen, "Incentives Build
//! Robustness in BitTorrent", 2003, §3.3; the mainline client's choker) mapped onto Gnutella's
//! HTTP uploads as SWARM.md §6 does. A pure core like the routing one: events and `now` in,
//! decisions out; the upload server drives it.
//!
//! Every [`ROUND`] the peers that want data from us are ranked: by the rate they gave us data
//! over the last [`WINDOW`] when they want a file we are still downloading (they are our sources
//! too: tit-for-tat), by the rate they take from us for a file we hold complete (seed mode, which
//! favours those who spread it fastest). The best `slots − 1` are unchoked. One more slot is the
//! optimistic unchoke, moved every [`OPTIMISTIC_EVERY`] to a choked peer, the one that has
//! waited longest for it, newcomers three times as likely among equals, so that a peer with
//! nothing to give yet can start. A peer that has sent us nothing for [`SNUB`] while we asked
//! loses its reciprocal rank (anti-snubbing). Reciprocal slots that nobody earns go to more
//! optimistic picks: at a swarm's start nobody has given anything yet.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// BitTorrent rechokes every ten seconds (Cohen §3.3: "once every ten seconds").
pub const ROUND: Duration = Duration::from_secs(10);
/// The optimistic unchoke rotates every 30 seconds (Cohen §3.4: "every 30 seconds").
pub const OPTIMISTIC_EVERY: Duration = Duration::from_secs(30);
/// Newly seen peers are three times as likely to be the optimistic pick (mainline's choker:
/// "newly connected peers are three times as likely to start as the current optimistic
/// unchoke"), for as long as one optimistic period.
pub const NEWCOMER_WEIGHT: u64 = 3;
pub const NEWCOMER_FOR: Duration = OPTIMISTIC_EVERY;
/// A peer we asked for data that sent none for a minute snubs us (Cohen §3.5: "more than a
/// minute").
pub const SNUB: Duration = Duration::from_secs(60);
/// Rates are measured over a sliding 20 s window (mainline's rate estimate).
pub const WINDOW: Duration = Duration::from_secs(20);
/// A peer that asked for nothing this long no longer wants data (two rounds).
pub const INTEREST: Duration = Duration::from_secs(20);
/// A peer not heard from this long is forgotten.
pub const FORGET: Duration = Duration::from_secs(300);
/// Peers tracked at once, and per IP address.
pub const MAX_PEERS: usize = 1024;
pub const MAX_PEERS_PER_IP: usize = 64;

/// A downloader as transfers know it across connections: its IP and the port it listens on
/// (`X-Node`), or the connection's port when it names none.
pub type PeerId = SocketAddrV4;

/// Why a peer holds a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// It gives us data of a file we are downloading, among the best.
    Reciprocal,
    /// It takes a file we hold complete, among the fastest.
    Seed,
    /// The random slot, so that newcomers can start.
    Optimistic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Unchoked(Reason),
    Choked,
}

/// Bytes over the last [`WINDOW`], in one-second buckets.
#[derive(Debug, Clone)]
struct Window {
    /// Second (since the choker's epoch) of the newest bucket.
    head: u64,
    buckets: [u64; WINDOW.as_secs() as usize],
}

impl Window {
    fn new() -> Self {
        Window {
            head: 0,
            buckets: [0; WINDOW.as_secs() as usize],
        }
    }

    fn advance(&mut self, sec: u64) {
        let n = self.buckets.len() as u64;
        if sec > self.head {
            for s in (self.head + 1)..=sec.min(self.head + n) {
                self.buckets[(s % n) as usize] = 0;
            }
            self.head = sec;
        }
    }

    fn add(&mut self, sec: u64, bytes: u64) {
        self.advance(sec);
        let n = self.buckets.len() as u64;
        if sec + n > self.head {
            let b = &mut self.buckets[(sec % n) as usize];
            *b = b.saturating_add(bytes);
        }
    }

    /// Bytes per second over the window ending at `sec`.
    fn rate(&mut self, sec: u64) -> u64 {
        self.advance(sec);
        self.buckets.iter().sum::<u64>() / WINDOW.as_secs()
    }
}

#[derive(Debug, Clone)]
struct Peer {
    first_seen: Instant,
    last_seen: Instant,
    /// Its last request, and whether for a file we hold complete.
    wanted: Option<(Instant, bool)>,
    received: Window,
    sent: Window,
    /// Since when we have been asking it for data without getting any.
    asking_since: Option<Instant>,
    last_optimistic: Option<Instant>,
    decision: Decision,
    /// It offers what it holds to others (its requests say which ranges it has).
    spreads: bool,
}

/// The choking state of one upload server.
#[derive(Debug)]
pub struct Choker {
    slots: usize,
    epoch: Instant,
    peers: HashMap<PeerId, Peer>,
    optimistic: Option<PeerId>,
    next_round: Instant,
    next_optimistic: Instant,
}

impl Choker {
    pub fn new(slots: usize, now: Instant) -> Self {
        Choker {
            slots: slots.max(1),
            epoch: now,
            peers: HashMap::new(),
            optimistic: None,
            next_round: now,
            next_optimistic: now,
        }
    }

    /// Slots from the next round on (at least 1).
    pub fn set_slots(&mut self, slots: usize) {
        self.slots = slots.max(1);
    }

    fn sec(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    /// The peer's entry, made room for within the bounds (the longest silent goes first, of
    /// its own IP when that IP is at its bound).
    fn peer(&mut self, id: PeerId, now: Instant) -> &mut Peer {
        if !self.peers.contains_key(&id) {
            let same_ip = |ip: Ipv4Addr| move |(p, _): &(&PeerId, &Peer)| *p.ip() == ip;
            let evict = if self.peers.iter().filter(same_ip(*id.ip())).count() >= MAX_PEERS_PER_IP {
                self.peers
                    .iter()
                    .filter(same_ip(*id.ip()))
                    .min_by_key(|(_, p)| p.last_seen)
                    .map(|(k, _)| *k)
            } else if self.peers.len() >= MAX_PEERS {
                self.peers
                    .iter()
                    .min_by_key(|(_, p)| p.last_seen)
                    .map(|(k, _)| *k)
            } else {
                None
            };
            if let Some(k) = evict {
                self.forget(k);
            }
            self.peers.insert(
                id,
                Peer {
                    first_seen: now,
                    last_seen: now,
                    wanted: None,
                    received: Window::new(),
                    sent: Window::new(),
                    asking_since: None,
                    last_optimistic: None,
                    spreads: false,
                    decision: Decision::Choked,
                },
            );
        }
        let p = self.peers.get_mut(&id).expect("inserted above");
        p.last_seen = p.last_seen.max(now);
        p
    }

    fn forget(&mut self, id: PeerId) {
        self.peers.remove(&id);
        if self.optimistic == Some(id) {
            self.optimistic = None;
        }
    }

    fn unchoked(&self) -> usize {
        self.peers
            .values()
            .filter(|p| p.decision != Decision::Choked)
            .count()
    }

    /// `id` asks us for data of a file, which we hold complete (`seeding`) or are still
    /// downloading. May it have it now? A peer new to us takes a free slot at once.
    pub fn wants(&mut self, id: PeerId, seeding: bool, now: Instant) -> Decision {
        let free = self.unchoked() < self.slots;
        let p = self.peer(id, now);
        p.wanted = Some((now, seeding));
        if p.decision == Decision::Choked && free {
            p.decision = Decision::Unchoked(Reason::Optimistic);
            p.last_optimistic = Some(now);
        }
        p.decision
    }

    pub fn spreading(&self, id: &PeerId) -> bool {
        self.peers.get(id).is_some_and(|p| p.spreads)
    }

    /// Whether `id` offers others what it holds (as its requests show).
    pub fn spreads(&mut self, id: PeerId, on: bool, now: Instant) {
        self.peer(id, now).spreads = on;
    }

    /// We received `bytes` from `id` (it is one of our sources).
    pub fn received(&mut self, id: PeerId, bytes: u64, now: Instant) {
        let sec = self.sec(now);
        let p = self.peer(id, now);
        p.received.add(sec, bytes);
        if bytes > 0 {
            p.asking_since = None;
        }
    }

    /// We sent `bytes` to `id`.
    pub fn sent(&mut self, id: PeerId, bytes: u64, now: Instant) {
        let sec = self.sec(now);
        self.peer(id, now).sent.add(sec, bytes);
    }

    /// We are asking `id` for data (a request of ours is waiting on it); `false` when we stop.
    pub fn asking(&mut self, id: PeerId, on: bool, now: Instant) {
        let p = self.peer(id, now);
        p.asking_since = if on {
            p.asking_since.or(Some(now))
        } else {
            None
        };
    }

    /// When `id` was first seen.
    pub fn first_seen(&self, id: &PeerId) -> Option<Instant> {
        self.peers.get(id).map(|p| p.first_seen)
    }

    /// When the next round is due.
    pub fn next_round(&self) -> Instant {
        self.next_round
    }

    pub fn decision(&self, id: &PeerId) -> Decision {
        self.peers.get(id).map_or(Decision::Choked, |p| p.decision)
    }

    /// Rates of `id` over the window: what it gave us and what it took, bytes per second.
    pub fn rates(&mut self, id: &PeerId, now: Instant) -> Option<(u64, u64)> {
        let sec = self.sec(now);
        let p = self.peers.get_mut(id)?;
        Some((p.received.rate(sec), p.sent.rate(sec)))
    }

    /// Runs a round when one is due: returns whether any decision changed.
    pub fn tick(&mut self, now: Instant, rng: &mut impl FnMut() -> u64) -> bool {
        if now < self.next_round {
            return false;
        }
        self.next_round = now + ROUND;
        let sec = self.sec(now);
        self.peers
            .retain(|_, p| now.saturating_duration_since(p.last_seen) < FORGET);
        if self
            .optimistic
            .is_some_and(|o| !self.peers.contains_key(&o))
        {
            self.optimistic = None;
        }
        let before: Vec<(PeerId, Decision)> =
            self.peers.iter().map(|(k, p)| (*k, p.decision)).collect();
        // Who wants data, and the rate that ranks them.
        let mut ranked: Vec<(PeerId, bool, u64, Reason)> = Vec::new();
        let mut wanting: Vec<PeerId> = Vec::new();
        for (id, p) in self.peers.iter_mut() {
            let Some((at, seeding)) = p.wanted else {
                continue;
            };
            if now.saturating_duration_since(at) >= INTEREST {
                continue;
            }
            wanting.push(*id);
            let snubbing = p
                .asking_since
                .is_some_and(|s| now.saturating_duration_since(s) >= SNUB);
            let (rate, reason) = if seeding {
                (p.sent.rate(sec), Reason::Seed)
            } else {
                (p.received.rate(sec), Reason::Reciprocal)
            };
            // A snub costs a reciprocal rank only: a seed asks nobody for anything.
            // A seed favours those who spread the file fastest (BEP 3): a taker that offers
            // nothing of what it took spreads nothing, and ranks after those who do.
            let first = !seeding || p.spreads;
            if rate > 0 && (seeding || !snubbing) {
                ranked.push((*id, first, rate, reason));
            }
        }
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.cmp(&a.2)).then(a.0.cmp(&b.0)));
        ranked.truncate(self.slots - 1);
        for p in self.peers.values_mut() {
            p.decision = Decision::Choked;
        }
        for &(id, _, _, reason) in &ranked {
            if let Some(p) = self.peers.get_mut(&id) {
                p.decision = Decision::Unchoked(reason);
            }
        }
        // The optimistic slot: kept for its period unless its peer lost interest or earned a
        // rank; then the choked peer that has waited longest for one, newcomers weighted.
        let keep = self.optimistic.filter(|o| {
            now < self.next_optimistic
                && wanting.contains(o)
                && self.decision(o) == Decision::Choked
        });
        let mut optimistic = Vec::new();
        if let Some(o) = keep {
            optimistic.push(o);
        } else {
            self.next_optimistic = now + OPTIMISTIC_EVERY;
        }
        // One optimistic slot, and every reciprocal slot nobody earned.
        let want = self.slots - ranked.len();
        while optimistic.len() < want {
            let Some(pick) = self.pick_optimistic(&wanting, &optimistic, now, rng) else {
                break;
            };
            optimistic.push(pick);
        }
        self.optimistic = optimistic.first().copied();
        for id in optimistic {
            if let Some(p) = self.peers.get_mut(&id) {
                if p.decision == Decision::Choked && keep != Some(id) {
                    p.last_optimistic = Some(now);
                }
                p.decision = Decision::Unchoked(Reason::Optimistic);
            }
        }
        before
            .into_iter()
            .any(|(k, d)| self.peers.get(&k).is_some_and(|p| p.decision != d))
    }

    /// Among the choked peers that want data, one of those that waited longest for an
    /// optimistic slot (never first), newcomers [`NEWCOMER_WEIGHT`] times as likely.
    fn pick_optimistic(
        &self,
        wanting: &[PeerId],
        taken: &[PeerId],
        now: Instant,
        rng: &mut impl FnMut() -> u64,
    ) -> Option<PeerId> {
        let choked: Vec<(&PeerId, &Peer)> = wanting
            .iter()
            .filter(|id| !taken.contains(id))
            .filter_map(|id| self.peers.get_key_value(id))
            .filter(|(_, p)| p.decision == Decision::Choked)
            .collect();
        let oldest = choked.iter().map(|(_, p)| p.last_optimistic).min()?;
        let mut tied: Vec<(PeerId, u64)> = choked
            .iter()
            .filter(|(_, p)| p.last_optimistic == oldest)
            .map(|(id, p)| {
                let new = now.saturating_duration_since(p.first_seen) < NEWCOMER_FOR;
                (**id, if new { NEWCOMER_WEIGHT } else { 1 })
            })
            .collect();
        // A stable order, so that the pick depends on the random number only.
        tied.sort();
        let total: u64 = tied.iter().map(|t| t.1).sum();
        let mut r = rng() % total.max(1);
        for (id, w) in tied {
            if r < w {
                return Some(id);
            }
            r -= w;
        }
        None
    }
}

#[cfg(test)]
mod tests;
