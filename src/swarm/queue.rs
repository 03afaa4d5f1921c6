//! Who gets an upload slot now, and what the others are told: the choker's decisions and
//! the PARQ queue together (SWARM.md §6.3–6.4), under one of two policies. A pure core: the
//! upload server asks it with `now` and the slots free, and holds the slot it grants.
//!
//! - `tit-for-tat`: for a file we are downloading, an unchoked peer is served; a choked one is
//!   queued, its position its rank among the choked by what they give us. A slot its unchoked
//!   peers leave unused goes, for one request, to the choked peer first in line (BitTorrent
//!   unchokes a peer that is interested when one of the best is not; here a slot is lent
//!   request by request), and a slot freed goes to the unchoked waiting first, then to the
//!   choked in their order. A file we hold complete goes round in turns, those who pass it on
//!   before those who keep it (libtorrent's default seed choker is round robin): ranking its
//!   takers by rate, as the 2003 paper's seed mode does, kept the seed on the few peers that
//!   asked first for round after round, and the rest of a new swarm waited for them (the swarm
//!   bench at N = 32: 22 s, against 19 s in turns).
//! - `fifo`: gtk-gnutella's order: the first in line as they arrived, a served request going
//!   to the back, so the slots go round.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use super::choke::{self, Choker, Decision, PeerId, Reason};
use super::parq::{Parq, ParqError, QueueId};

/// How long an unchoked peer between two requests keeps its slot from being lent: a
/// downloader asks its next range within a round trip of the last one's end.
pub const LEND_GUARD: Duration = Duration::from_secs(2);
/// A peer new to us may borrow a spare slot for its first round (it has nothing to give yet);
/// after that, only the optimistic slot is its without giving.
pub const LEND_NEWCOMER: Duration = choke::ROUND;

/// Retry hints. Near the front of the line (within [`NEAR`] turns of the slots) a refused
/// request comes back in a second: slots turn over request by request, and a choked peer must
/// be there when one is lent, as BitTorrent's choked peers stay connected to hear UNCHOKE (a
/// `Retry-After` of a whole round left the swarm benchmark's peers idle: 30 s instead of 15 at
/// N = 16). Deeper in the line it comes back later, and a `QUEUE` callback brings it back when
/// its turn comes first.
pub const NEAR_RETRY: Duration = Duration::from_secs(1);
pub const DEEP_RETRY: Duration = Duration::from_secs(10);
pub const NEAR: usize = 8;

/// When a request at `position` is to ask again, `slots` serving.
pub fn retry_for(position: u32, slots: usize) -> Duration {
    if position as usize <= NEAR * slots {
        NEAR_RETRY
    } else {
        DEEP_RETRY
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    #[default]
    TitForTat,
    Fifo,
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tit-for-tat" => Ok(Policy::TitForTat),
            "fifo" => Ok(Policy::Fifo),
            _ => Err(format!("unknown upload policy {s:?} (tit-for-tat or fifo)")),
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Policy::TitForTat => "tit-for-tat",
            Policy::Fifo => "fifo",
        })
    }
}

/// Why a request is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    Unchoked(Reason),
    /// A slot nobody unchoked is using, for this request.
    Lent,
    /// Its turn (fifo).
    Turn,
}

/// A request, as the queue needs it.
#[derive(Debug, Clone)]
pub struct Ask<F> {
    pub who: PeerId,
    pub file: F,
    /// We hold the file complete.
    pub seeding: bool,
    /// The ID its `X-Queued` named.
    pub named: Option<QueueId>,
    /// `X-Node`: where a `QUEUE` can reach it.
    pub callback: Option<SocketAddrV4>,
    /// A fresh random ID, taken if it needs a new entry.
    pub fresh: QueueId,
    /// It offers others what it holds (`X-Available-Ranges` in its request).
    pub spreads: bool,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// Serve it; the slot is the upload server's to hold. `priority` orders it among requests
    /// waiting for a slot to be handed over (lower first).
    Serve {
        id: QueueId,
        grant: Grant,
        priority: u64,
    },
    /// Not now: it may wait for a slot handed over by a request that ends (at `priority`),
    /// and else is told `Queued` with these.
    Queue(Place),
    Refuse(ParqError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub id: QueueId,
    pub position: u32,
    pub length: u32,
    pub retry: Duration,
    pub lifetime: u32,
    pub eta: Duration,
    /// May wait a moment for a slot handed over, at this priority (lower first).
    pub hold: Option<u64>,
}

/// A peer's place in the line under tit-for-tat: those who give or spread first, then by
/// rate, faster first.
type LineKey = (bool, Reverse<u64>);
const LAST: LineKey = (true, Reverse(0));

/// One peer as displays show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PeerView {
    pub peer: PeerId,
    pub choked: bool,
    /// Why it holds a slot, when unchoked.
    pub reason: Option<Reason>,
    /// Bytes per second over the choker's window: what it gave us, what it took.
    pub rate_in: u64,
    pub rate_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Its place in the queue, while it waits.
    pub position: Option<u32>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    bytes_in: u64,
    bytes_out: u64,
}

/// Totals kept per peer, for displays.
const MAX_TOTALS: usize = choke::MAX_PEERS;

/// The upload queue of one server.
#[derive(Debug)]
pub struct UploadQueue<F> {
    pub policy: Policy,
    slots: usize,
    choker: Choker,
    parq: Parq<F>,
    totals: HashMap<PeerId, Totals>,
    /// Unchoked peers between two requests, and when their last one ended.
    idle_since: HashMap<PeerId, Instant>,
}

impl<F: Clone + PartialEq> UploadQueue<F> {
    pub fn new(policy: Policy, slots: usize, now: Instant) -> Self {
        UploadQueue {
            policy,
            slots: slots.max(1),
            choker: Choker::new(slots, now),
            parq: Parq::new(),
            totals: HashMap::new(),
            idle_since: HashMap::new(),
        }
    }

    /// Upload slots from now on (the choker unchokes one fewer than that, plus the optimistic
    /// one, at its next round).
    pub fn set_slots(&mut self, slots: usize) {
        self.slots = slots.max(1);
        self.choker.set_slots(self.slots);
    }

    pub fn parq(&self) -> &Parq<F> {
        &self.parq
    }

    fn total(&mut self, id: PeerId) -> &mut Totals {
        if !self.totals.contains_key(&id) && self.totals.len() >= MAX_TOTALS {
            // The one the choker no longer knows, else any.
            let drop = self
                .totals
                .keys()
                .find(|k| self.choker.decision(k) == Decision::Choked)
                .copied();
            if let Some(k) = drop {
                self.totals.remove(&k);
            }
        }
        self.totals.entry(id).or_default()
    }

    /// We received `bytes` from `id`, a source of ours.
    pub fn received(&mut self, id: PeerId, bytes: u64, now: Instant) {
        self.choker.received(id, bytes, now);
        self.total(id).bytes_in += bytes;
    }

    /// We sent `bytes` to `id`.
    pub fn sent(&mut self, id: PeerId, bytes: u64, now: Instant) {
        self.choker.sent(id, bytes, now);
        self.total(id).bytes_out += bytes;
    }

    /// We are (or stopped) asking `id` for data.
    pub fn asking(&mut self, id: PeerId, on: bool, now: Instant) {
        self.choker.asking(id, on, now);
    }

    /// The order of the line: by what they give (or take), then arrival. `asking` is the peer
    /// whose request is being decided: its entry is not waiting yet, but it is ranked too.
    fn order_keys(&mut self, asking: Option<PeerId>, now: Instant) -> HashMap<PeerId, LineKey> {
        let waiting: Vec<PeerId> = self
            .parq
            .entries()
            .filter(|e| e.waiting(now))
            .map(|e| e.who)
            .chain(asking)
            .collect();
        let mut keys = HashMap::new();
        for who in waiting {
            let (rin, rout) = self.choker.rates(&who, now).unwrap_or((0, 0));
            // Those who give us, or spread what they take, before those who only take.
            let spreads = rin > 0 || self.choker.spreading(&who);
            keys.insert(who, (!spreads, Reverse(if rin > 0 { rin } else { rout })));
        }
        keys
    }

    /// A request arrives; `free` slots are free now.
    pub fn admit(&mut self, ask: &Ask<F>, free: usize, now: Instant) -> Admit {
        let id = match self
            .parq
            .arrive(ask.who, &ask.file, ask.named, ask.callback, ask.fresh, now)
        {
            Ok(id) => id,
            Err(e) => return Admit::Refuse(e),
        };
        match self.policy {
            Policy::Fifo => {
                let place = self.parq.position(&id, now, |_| 0u8, |_| false);
                self.in_turn(id, place, free, now)
            }
            Policy::TitForTat if ask.seeding => self.admit_seeding(ask, id, free, now),
            Policy::TitForTat => {
                self.choker.spreads(ask.who, ask.spreads, now);
                let gives = self.choker.rates(&ask.who, now).is_some_and(|r| r.0 > 0);
                let decision = self.choker.wants(ask.who, false, now);
                if let Decision::Unchoked(r) = decision {
                    self.idle_since.remove(&ask.who);
                    return Admit::Serve {
                        id,
                        grant: Grant::Unchoked(r),
                        priority: 0,
                    };
                }
                let keys = self.order_keys(Some(ask.who), now);
                let choker = &self.choker;
                let (position, length) = self.parq.position(
                    &id,
                    now,
                    |e| keys.get(&e.who).copied().unwrap_or(LAST),
                    |e| choker.decision(&e.who) != Decision::Choked,
                );
                // A spare slot goes only to a peer that gives us something, or is new (it may
                // have nothing yet): one that takes and never gives has the optimistic slot, no
                // more.
                let new = self
                    .choker
                    .first_seen(&ask.who)
                    .is_some_and(|t| now < t + LEND_NEWCOMER);
                let deserves = gives || new;
                let lendable = free.saturating_sub(self.kept(now));
                if deserves && position as usize <= lendable {
                    return Admit::Serve {
                        id,
                        grant: Grant::Lent,
                        priority: 1 + u64::from(position),
                    };
                }
                // Waits a moment for a slot handed over, behind the unchoked.
                let retry = retry_for(position, self.slots);
                let hold = deserves.then_some(1 + u64::from(position));
                Admit::Queue(self.place(id, position, length, retry, now, hold))
            }
        }
    }

    /// A request for a file we seed, under tit-for-tat: served in its turn, the peers that
    /// offer what they hold (`X-Available-Ranges`) before those that keep it, so a free rider
    /// waits while any sharer waits. Slots kept for unchoked peers between two requests are
    /// not taken.
    fn admit_seeding(&mut self, ask: &Ask<F>, id: QueueId, free: usize, now: Instant) -> Admit {
        self.choker.spreads(ask.who, ask.spreads, now);
        let choker = &self.choker;
        let place = self
            .parq
            .position(&id, now, |e| !choker.spreading(&e.who), |_| false);
        let free = free.saturating_sub(self.kept(now));
        self.in_turn(id, place, free, now)
    }

    /// A request served in its turn: now when its `(position, length)` in the line is within
    /// the `free` slots, else queued there, waiting for a handover in arrival order.
    fn in_turn(&mut self, id: QueueId, place: (u32, u32), free: usize, now: Instant) -> Admit {
        let (position, length) = place;
        // Never 0: that rank's slots are kept for it between requests (unchoked).
        let seq = 1 + self.parq.get(&id).map_or(0, |e| e.seq);
        if position as usize <= free {
            return Admit::Serve {
                id,
                grant: Grant::Turn,
                priority: seq,
            };
        }
        let retry = retry_for(position, self.slots);
        Admit::Queue(self.place(id, position, length, retry, now, Some(seq)))
    }

    /// Slots the unchoked may come back for in a moment, not lent.
    fn kept(&mut self, now: Instant) -> usize {
        self.idle_since
            .retain(|_, t| now.saturating_duration_since(*t) < LEND_GUARD);
        self.idle_since
            .keys()
            .filter(|p| self.choker.decision(p) != Decision::Choked)
            .count()
    }

    fn place(
        &mut self,
        id: QueueId,
        position: u32,
        length: u32,
        retry: Duration,
        now: Instant,
        hold: Option<u64>,
    ) -> Place {
        self.parq.refused(&id, retry, now);
        let lifetime = self.parq.get(&id).map_or(0, |e| e.lifetime(now));
        // Each slot turns over about once a retry period; those ahead share the slots.
        let eta = retry * (position.saturating_sub(1) / self.slots as u32 + 1);
        Place {
            id,
            position,
            length,
            retry,
            lifetime,
            eta,
            hold,
        }
    }

    /// The request of `id` got its slot (at once or handed over).
    pub fn started(&mut self, id: &QueueId, now: Instant) {
        self.parq.started(id, now);
        if let Some(e) = self.parq.get(id) {
            self.idle_since.remove(&e.who);
        }
    }

    /// The request of `id` was given up while waiting for a handover: it is queued after all.
    pub fn gave_up(&mut self, place: &Place, now: Instant) {
        self.parq.refused(&place.id, place.retry, now);
    }

    /// A served request of `id` ended.
    pub fn ended(&mut self, id: &QueueId, now: Instant) {
        self.parq.ended(id, now);
        if let Some(e) = self.parq.get(id)
            && e.serving == 0
        {
            self.idle_since.insert(e.who, now);
        }
    }

    /// Runs what is due: a choking round, expiry. Returns the `QUEUE` callbacks to send now,
    /// `free` slots being free.
    pub fn tick(
        &mut self,
        free: usize,
        now: Instant,
        rng: &mut impl FnMut() -> u64,
    ) -> Vec<(QueueId, SocketAddrV4)> {
        self.choker.tick(now, rng);
        self.parq.expire(now);
        if self.idle_since.len() > choke::MAX_PEERS {
            self.idle_since.clear();
        }
        let keys = self.order_keys(None, now);
        let policy = self.policy;
        // Only as many as would be served: slots kept for unchoked peers between two requests
        // are not free for a callback.
        let free = match policy {
            Policy::Fifo => free,
            Policy::TitForTat => free.saturating_sub(self.kept(now)),
        };
        let choker = &self.choker;
        // The unchoked first (their slots wait for them), then the line's order.
        self.parq.callbacks(free, now, |e| match policy {
            Policy::Fifo => (false, LAST),
            Policy::TitForTat => (
                choker.decision(&e.who) == Decision::Choked,
                keys.get(&e.who).copied().unwrap_or(LAST),
            ),
        })
    }

    /// A `QUEUE` to `id` could not be delivered.
    pub fn queue_refused(&mut self, id: &QueueId) {
        self.parq.queue_refused(id);
    }

    /// Every peer the queue knows, for displays.
    pub fn peers(&mut self, now: Instant) -> Vec<PeerView> {
        let mut ids: Vec<PeerId> = self.totals.keys().copied().collect();
        for e in self.parq.entries() {
            if !ids.contains(&e.who) {
                ids.push(e.who);
            }
        }
        let keys = self.order_keys(None, now);
        let mut out = Vec::new();
        for who in ids {
            let (rate_in, rate_out) = self.choker.rates(&who, now).unwrap_or((0, 0));
            let t = self.totals.get(&who).copied().unwrap_or_default();
            let decision = self.choker.decision(&who);
            let position = match self.policy {
                Policy::Fifo => self
                    .parq
                    .entries()
                    .find(|e| e.who == who && e.waiting(now))
                    .map(|e| self.parq.position(&e.id, now, |_| 0u8, |_| false).0),
                Policy::TitForTat => {
                    let choker = &self.choker;
                    self.parq
                        .entries()
                        .find(|e| e.who == who && e.waiting(now))
                        .map(|e| {
                            self.parq
                                .position(
                                    &e.id,
                                    now,
                                    |x| keys.get(&x.who).copied().unwrap_or(LAST),
                                    |x| choker.decision(&x.who) != Decision::Choked,
                                )
                                .0
                        })
                }
            };
            out.push(PeerView {
                peer: who,
                choked: decision == Decision::Choked,
                reason: match decision {
                    Decision::Unchoked(r) => Some(r),
                    Decision::Choked => None,
                },
                rate_in,
                rate_out,
                bytes_in: t.bytes_in,
                bytes_out: t.bytes_out,
                position,
            });
        }
        out.sort_by_key(|v| (v.choked, v.position, v.peer));
        out
    }
}

#[cfg(test)]
mod tests;
