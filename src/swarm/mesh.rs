//! The download mesh (SWARM.md §2.2–2.3): per file, the sources we know (direct and
//! firewalled), which of them proved good, the ones banned after failing us, and the /16
//! networks that reported an entry bad through `X-Nalt`; plus [`SentLog`], which remembers when
//! each peer last got mesh data for a file so that we send it only what is new.
//!
//! A pure data structure after gtk-gnutella's `dmesh.c`: the file key is generic, `now` is
//! passed to every method and the clock is never read, randomness comes from the caller, and
//! every collection has a named bound, so the whole mesh has a fixed ceiling in memory:
//! [`MAX_KEYS`] × ([`MAX_ENTRIES`] entries of ≤ 112 B + [`MAX_BANS_PER_KEY`] bans of 24 B),
//! about 130 MiB with the defaults if every slot of 4096 files were filled (the caller only
//! adds for files it downloads or shares, so real use is far below).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::altloc::{AltLoc, FwAltLoc, is_routable};
use super::shuffle;
use crate::wire::ServentId;

/// Lifetime of an entry not seen again, for a file we are downloading
/// (gtkg `dmesh.c MAX_LIFETIME` = 43200 s, "half a day").
pub const MAX_LIFETIME: Duration = Duration::from_secs(43_200);

/// Lifetime of an entry for a complete shared file (gtkg `dmesh.c MAX_LIBLIFETIME` = 3600 s):
/// such a file has no downloads to confirm its sources, so only fresh ones are kept.
pub const MAX_LIBLIFETIME: Duration = Duration::from_secs(3_600);

/// Entries kept per file; adding one more evicts the oldest inserted
/// (gtkg `dmesh.c MAX_ENTRIES`; gtkg evicts when the count *reaches* 256, so it holds 255).
pub const MAX_ENTRIES: usize = 256;

/// Distinct reporter networks (IPv4 /16) whose `X-Nalt` it takes to evict and ban an entry
/// (gtkg `dmesh.c MIN_BAD_REPORT`): one colluding network cannot poison the mesh.
pub const MIN_BAD_REPORT: usize = 3;

/// How long a failed source stays banned: it cannot re-enter the mesh and is listed in our
/// `X-Nalt` meanwhile (gtkg `dmesh.c BAN_LIFETIME` = 7200 s).
pub const BAN_LIFETIME: Duration = Duration::from_secs(7_200);

/// A good mark lifts a ban only when the ban is older than this (gtkg `dmesh.c DMESH_BAN_VETO`
/// = 300 s): a source that just failed is not trusted again on the next hearsay.
pub const DMESH_BAN_VETO: Duration = Duration::from_secs(300);

/// Bans kept per file (ours; gtkg has no bound). 256 matches [`MAX_ENTRIES`]: every entry the
/// mesh can hold can also be banned; beyond that the oldest ban goes first.
pub const MAX_BANS_PER_KEY: usize = 256;

/// Files the mesh keeps state for (ours; gtkg has no bound); past it the least recently used
/// file is forgotten (see the module note for the memory this bounds).
pub const MAX_KEYS: usize = 4096;

/// How long [`SentLog`] remembers that a peer got mesh data for a file (gtkg `uploads.c
/// MESH_INFO_TIMEOUT` = `PARQ_MAX_UL_RETRY_DELAY` 1200 s + `PARQ_GRACE_TIME` 90 s): a
/// downloader that comes back within its PARQ retry window gets only the diff.
pub const MESH_INFO_TIMEOUT: Duration = Duration::from_secs(1_290);

/// (peer IP, file) pairs [`SentLog`] keeps (ours; gtkg's aging table has no bound); past it the
/// least recently recorded pair is forgotten, which only makes that peer get a full list.
pub const MAX_SENT_LOG: usize = 16_384;

/// A mesh entry: a direct or a firewalled source.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MeshEntry {
    /// Reachable at its address (`X-Alt`).
    Direct(AltLoc),
    /// Reachable by Push only (`X-Falt`).
    Firewalled(FwAltLoc),
}

impl MeshEntry {
    fn same_source(&self, other: &MeshEntry) -> bool {
        match (self, other) {
            (MeshEntry::Direct(a), MeshEntry::Direct(b)) => a.addr == b.addr,
            (MeshEntry::Firewalled(a), MeshEntry::Firewalled(b)) => a.guid == b.guid,
            _ => false,
        }
    }
}

/// Which lifetime a file's entries get (gtkg `dmesh.c dm_lifetime`); the caller says, per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lifetime {
    /// We are downloading the file: [`MAX_LIFETIME`].
    #[default]
    Downloading,
    /// The file is complete and shared: [`MAX_LIBLIFETIME`].
    Shared,
}

impl Lifetime {
    /// How long an entry lives without being seen again.
    pub fn duration(self) -> Duration {
        match self {
            Lifetime::Downloading => MAX_LIFETIME,
            Lifetime::Shared => MAX_LIBLIFETIME,
        }
    }
}

/// What [`Mesh::add`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    /// A new entry: when downloading that file, it is a new source to try (gtkg
    /// `file_info_try_to_swarm_with`).
    Added,
    /// The entry was known; its last-seen time (and, for a firewalled one, its proxies) updated.
    Refreshed,
    /// The address is banned for this file.
    Banned,
    /// The entry was last seen longer ago than the file's lifetime.
    Stale,
    /// Port 0 or an address that cannot be a host.
    Invalid,
}

/// What [`Mesh::negative`] did with an `X-Nalt` report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NegativeOutcome {
    /// No such entry for that file: nothing to do (gtkg ignores it too).
    Unknown,
    /// That reporter's /16 already reported this entry.
    AlreadyCounted,
    /// Recorded; the entry now has this many distinct reporter networks.
    Counted(usize),
    /// The [`MIN_BAD_REPORT`]th network: the entry was evicted and banned.
    Banned,
}

/// Which entries [`Mesh::select`] returns.
#[derive(Debug, Clone, Copy)]
pub struct SelectFilter<'a> {
    /// The peer the data is for: its own entry is never sent back to it (by IP, like gtkg).
    pub for_peer: Ipv4Addr,
    /// Addresses never to send: ours, current and recent (gtkg rejects them on insert too).
    pub exclude: &'a [SocketAddrV4],
    /// GUIDs never to send in `X-Falt`: the peer's and ours.
    pub exclude_guids: &'a [ServentId],
    /// Only entries marked good (we downloaded from them): gtkg's rule while downloading. When
    /// false, every entry without a negative report: its rule for a complete shared file.
    pub only_good: bool,
    /// Only entries inserted strictly after this time (when this peer last got mesh data for
    /// this file): mesh data is a diff (gtkg `dmesh_alternate_location`).
    pub since: Option<Instant>,
    /// Most direct entries returned (the byte budget trims further when formatting).
    pub max: usize,
    /// Most firewalled entries returned; 0 for a peer without `fwalt` in `X-Features`.
    pub max_fw: usize,
}

/// One entry and its history.
#[derive(Debug, Clone)]
struct Entry {
    loc: MeshEntry,
    /// When it entered the mesh or was first marked good: what diffs compare against.
    inserted: Instant,
    /// When it was last heard of: what expiry compares against (gtkg `stamp`).
    seen: Instant,
    /// We downloaded from it, or it told us about itself.
    good: bool,
    /// Distinct /16 networks that reported it in `X-Nalt`: the first `bad_count` slots.
    /// Inline, since fewer than [`MIN_BAD_REPORT`] are ever held.
    bad_nets: [[u8; 2]; MIN_BAD_REPORT - 1],
    bad_count: u8,
}

impl Entry {
    /// gtkg `dmesh_good_mark(TRUE)`: negative reports are forgotten, the entry counts as seen
    /// now, and the first good mark makes it new again so that it propagates.
    fn mark_good(&mut self, now: Instant) {
        self.bad_count = 0;
        if !self.good {
            self.inserted = now;
        }
        self.seen = now;
        self.good = true;
    }
}

#[derive(Debug, Clone, Copy)]
struct Ban {
    addr: SocketAddrV4,
    created: Instant,
}

/// Everything the mesh knows about one file.
///
/// Invariants: `entries` is in insertion order (the head is evicted first) with at most one
/// entry per source, at most [`MAX_ENTRIES`]; `bans` has distinct addresses, oldest first, at
/// most [`MAX_BANS_PER_KEY`]; no banned address has an entry.
#[derive(Debug, Clone)]
struct KeyState {
    entries: Vec<Entry>,
    bans: Vec<Ban>,
    lifetime: Lifetime,
    /// Position in the mesh's LRU order.
    tick: u64,
}

impl KeyState {
    fn expire(&mut self, now: Instant) {
        let life = self.lifetime.duration();
        self.entries
            .retain(|e| now.saturating_duration_since(e.seen) <= life);
        self.bans
            .retain(|b| now.saturating_duration_since(b.created) < BAN_LIFETIME);
    }

    fn ban_index(&self, addr: SocketAddrV4) -> Option<usize> {
        self.bans.iter().position(|b| b.addr == addr)
    }

    /// gtkg `dmesh_ban_add`: a new ban, or a known one made as recent as `now`.
    fn ban(&mut self, addr: SocketAddrV4, now: Instant) {
        let created = match self.ban_index(addr) {
            Some(i) => self.bans.remove(i).created.max(now),
            None => now,
        };
        self.bans.push(Ban { addr, created });
        if self.bans.len() > MAX_BANS_PER_KEY {
            self.bans.remove(0);
        }
        self.entries
            .retain(|e| !matches!(&e.loc, MeshEntry::Direct(a) if a.addr == addr));
    }

    fn find(&self, loc: &MeshEntry) -> Option<usize> {
        self.entries.iter().position(|e| e.loc.same_source(loc))
    }

    fn find_alt(&self, addr: SocketAddrV4) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| matches!(&e.loc, MeshEntry::Direct(a) if a.addr == addr))
    }

    /// Appends a new entry, evicting the oldest past [`MAX_ENTRIES`]; returns its index.
    fn push(&mut self, loc: MeshEntry, seen: Instant, now: Instant) -> usize {
        self.entries.push(Entry {
            loc,
            inserted: now,
            seen,
            good: false,
            bad_nets: [[0; 2]; MIN_BAD_REPORT - 1],
            bad_count: 0,
        });
        if self.entries.len() > MAX_ENTRIES {
            self.entries.remove(0);
        }
        self.entries.len() - 1
    }

    fn is_idle(&self) -> bool {
        self.entries.is_empty() && self.bans.is_empty() && self.lifetime == Lifetime::default()
    }
}

/// The download mesh: sources, good marks, bans and negative reports for each file `K`.
#[derive(Debug, Clone)]
pub struct Mesh<K: Hash + Eq + Copy> {
    keys: HashMap<K, KeyState>,
    /// Keys by last use, oldest first; `tick` values are unique.
    lru: BTreeMap<u64, K>,
    tick: u64,
    max_keys: usize,
}

impl<K: Hash + Eq + Copy> Default for Mesh<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq + Copy> Mesh<K> {
    /// An empty mesh holding at most [`MAX_KEYS`] files.
    pub fn new() -> Self {
        Self::with_max_keys(MAX_KEYS)
    }

    /// An empty mesh holding at most `max_keys` files (at least 1).
    pub fn with_max_keys(max_keys: usize) -> Self {
        Self {
            keys: HashMap::new(),
            lru: BTreeMap::new(),
            tick: 0,
            max_keys: max_keys.max(1),
        }
    }

    /// Number of files with state.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Marks `key` as used now; creates its state if `create` (evicting the least recently
    /// used file at the bound). Returns the state, expired as of `now`.
    fn state(&mut self, key: K, create: bool, now: Instant) -> Option<&mut KeyState> {
        self.tick += 1;
        let t = self.tick;
        if let Some(st) = self.keys.get_mut(&key) {
            self.lru.remove(&st.tick);
            st.tick = t;
            self.lru.insert(t, key);
        } else {
            if !create {
                return None;
            }
            if self.keys.len() >= self.max_keys
                && let Some((_, old)) = self.lru.pop_first()
            {
                self.keys.remove(&old);
            }
            self.keys.insert(
                key,
                KeyState {
                    entries: Vec::new(),
                    bans: Vec::new(),
                    lifetime: Lifetime::default(),
                    tick: t,
                },
            );
            self.lru.insert(t, key);
        }
        let st = self.keys.get_mut(&key)?;
        st.expire(now);
        Some(st)
    }

    /// Drops the state of `key` if nothing is left in it (gtkg `dmesh_dispose`).
    fn tidy(&mut self, key: K) {
        if let Some(st) = self.keys.get(&key)
            && st.is_idle()
        {
            self.lru.remove(&st.tick);
            self.keys.remove(&key);
        }
    }

    /// Forgets everything about `key` (e.g. the file was removed).
    pub fn remove_key(&mut self, key: K) {
        if let Some(st) = self.keys.remove(&key) {
            self.lru.remove(&st.tick);
        }
    }

    /// Says which lifetime `key`'s entries get: [`Lifetime::Shared`] once the file is complete.
    pub fn set_lifetime(&mut self, key: K, lifetime: Lifetime, now: Instant) {
        if let Some(st) = self.state(key, lifetime != Lifetime::default(), now) {
            st.lifetime = lifetime;
        }
        self.tidy(key);
    }

    /// Live entries of `key` (gtkg `dmesh_count`).
    pub fn count(&mut self, key: K, now: Instant) -> usize {
        let n = self.state(key, false, now).map_or(0, |st| st.entries.len());
        self.tidy(key);
        n
    }

    /// Every live source of `key`, oldest first: what to start downloads from when swarming
    /// begins (gtkg `dmesh_multiple_downloads`).
    pub fn sources(&mut self, key: K, now: Instant) -> Vec<MeshEntry> {
        let v = self.state(key, false, now).map_or_else(Vec::new, |st| {
            st.entries.iter().map(|e| e.loc.clone()).collect()
        });
        self.tidy(key);
        v
    }

    /// Adds an entry heard of now (from `X-Alt`, `X-Falt`, a hit or its `ALT`).
    ///
    /// `origin` is the listening address of the host that sent it (the `X-Node` of a request,
    /// the server of a reply): an entry naming its own sender is marked good at once (gtkg
    /// "good self alt-loc").
    pub fn add(
        &mut self,
        key: K,
        loc: MeshEntry,
        origin: Option<SocketAddrV4>,
        now: Instant,
    ) -> AddOutcome {
        self.add_seen(key, loc, origin, Duration::ZERO, now)
    }

    /// [`Mesh::add`] for an entry last seen `age` ago (a legacy URL's date): refused when older
    /// than the file's lifetime (gtkg `dmesh_raw_add`). If the monotonic clock cannot go back by
    /// `age`, the entry counts as seen now.
    pub fn add_seen(
        &mut self,
        key: K,
        loc: MeshEntry,
        origin: Option<SocketAddrV4>,
        age: Duration,
        now: Instant,
    ) -> AddOutcome {
        if let MeshEntry::Direct(a) = &loc
            && (a.addr.port() == 0 || !is_routable(*a.addr.ip()))
        {
            return AddOutcome::Invalid;
        }
        let lifetime = self
            .keys
            .get(&key)
            .map_or_else(Lifetime::default, |s| s.lifetime);
        if age > lifetime.duration() {
            return AddOutcome::Stale;
        }
        let seen = now.checked_sub(age).unwrap_or(now);
        let Some(st) = self.state(key, true, now) else {
            return AddOutcome::Invalid; // unreachable: `create` is true
        };
        if let MeshEntry::Direct(a) = &loc
            && st.ban_index(a.addr).is_some()
        {
            self.tidy(key);
            return AddOutcome::Banned;
        }
        let self_entry = matches!((&loc, origin), (MeshEntry::Direct(a), Some(o)) if a.addr == o);
        let (i, outcome) = match st.find(&loc) {
            Some(i) => {
                let e = &mut st.entries[i];
                e.seen = e.seen.max(seen);
                match (&mut e.loc, loc) {
                    (MeshEntry::Direct(old), MeshEntry::Direct(new)) => old.tls |= new.tls,
                    (MeshEntry::Firewalled(old), MeshEntry::Firewalled(new)) => {
                        if !new.proxies().is_empty() {
                            old.set_proxies(new.proxies().iter().copied());
                            e.inserted = now; // new proxies: worth propagating again
                        }
                        if new.addr.is_some() {
                            old.addr = new.addr;
                        }
                        old.tls |= new.tls;
                    }
                    _ => {} // `find` matched the same kind
                }
                (i, AddOutcome::Refreshed)
            }
            None => (st.push(loc, seen, now), AddOutcome::Added),
        };
        if self_entry {
            st.entries[i].mark_good(now);
        }
        outcome
    }

    /// Records that `addr` served us (a transfer, or a proper `503` queued): the entry is added
    /// if needed and marked good (gtkg `dmesh_add_good_alternate`). The first good mark makes
    /// the entry new again, so that it is propagated. A banned address comes back only if its
    /// ban is older than [`DMESH_BAN_VETO`]. Returns whether the entry is now good.
    pub fn mark_good(&mut self, key: K, addr: SocketAddrV4, now: Instant) -> bool {
        if addr.port() == 0 || !is_routable(*addr.ip()) {
            return false;
        }
        let Some(st) = self.state(key, true, now) else {
            return false;
        };
        if let Some(b) = st.ban_index(addr) {
            if now.saturating_duration_since(st.bans[b].created) <= DMESH_BAN_VETO {
                self.tidy(key);
                return false;
            }
            st.bans.remove(b);
        }
        let i = match st.find_alt(addr) {
            Some(i) => i,
            None => st.push(MeshEntry::Direct(AltLoc::new(addr)), now, now),
        };
        st.entries[i].mark_good(now);
        true
    }

    /// Records that the firewalled servent `guid` served us (gtkg `dmesh_add_good_firewalled`).
    pub fn mark_good_fw(&mut self, key: K, guid: ServentId, now: Instant) {
        let Some(st) = self.state(key, true, now) else {
            return;
        };
        let loc = MeshEntry::Firewalled(FwAltLoc::new(guid));
        let i = match st.find(&loc) {
            Some(i) => i,
            None => st.push(loc, now, now),
        };
        st.entries[i].mark_good(now);
    }

    /// A download from `addr` failed (not connectable, 404, no resume…): the entry goes, and
    /// the address is banned for [`BAN_LIFETIME`] (gtkg `dmesh_remove`), which also puts it in
    /// our `X-Nalt` ([`Mesh::bans_since`]).
    ///
    /// A 404 from a partial source means "not now" (SWARM.md §8.3): do not call this for it.
    pub fn remove_and_ban(&mut self, key: K, addr: SocketAddrV4, now: Instant) {
        if let Some(st) = self.state(key, true, now) {
            st.ban(addr, now);
        }
        self.tidy(key);
    }

    /// Forgets a firewalled entry (e.g. its push failed). gtkg never bans firewalled entries.
    pub fn remove_fw(&mut self, key: K, guid: ServentId, now: Instant) {
        if let Some(st) = self.state(key, false, now) {
            st.entries
                .retain(|e| !matches!(&e.loc, MeshEntry::Firewalled(f) if f.guid == guid));
        }
        self.tidy(key);
    }

    /// An `X-Nalt` from `reporter` names `addr` (gtkg `dmesh_negative_alt`): reports count once
    /// per reporter /16, and the entry is evicted and banned at the [`MIN_BAD_REPORT`]th
    /// distinct network. A single reporter thus never removes anything (SWARM.md §8.18).
    pub fn negative(
        &mut self,
        key: K,
        addr: SocketAddrV4,
        reporter: Ipv4Addr,
        now: Instant,
    ) -> NegativeOutcome {
        let Some(st) = self.state(key, false, now) else {
            return NegativeOutcome::Unknown;
        };
        let outcome = match st.find_alt(addr) {
            None => NegativeOutcome::Unknown,
            Some(i) => {
                let o = reporter.octets();
                let net = [o[0], o[1]];
                let e = &mut st.entries[i];
                let n = usize::from(e.bad_count);
                if e.bad_nets[..n].contains(&net) {
                    NegativeOutcome::AlreadyCounted
                } else if n + 1 < MIN_BAD_REPORT {
                    // n + 1 < MIN_BAD_REPORT, so slot n exists and the count fits a u8.
                    e.bad_nets[n] = net;
                    e.bad_count += 1;
                    NegativeOutcome::Counted(n + 1)
                } else {
                    st.ban(addr, now);
                    NegativeOutcome::Banned
                }
            }
        };
        self.tidy(key);
        outcome
    }

    /// Whether `addr` is banned for `key` now.
    pub fn is_banned(&mut self, key: K, addr: SocketAddrV4, now: Instant) -> bool {
        let banned = self
            .state(key, false, now)
            .is_some_and(|st| st.ban_index(addr).is_some());
        self.tidy(key);
        banned
    }

    /// The entries to send to a peer (gtkg `dmesh_alternate_location`): live, inserted after
    /// `filter.since`, good (or without negative reports), never the peer itself nor an
    /// excluded address or GUID. Direct entries are shuffled with `rng` then cut to
    /// `filter.max`; firewalled ones stay in mesh order (gtkg's single pass), cut to
    /// `filter.max_fw`. Format them with `format_x_alt` / `format_x_falt`, which apply the byte
    /// budget.
    pub fn select(
        &mut self,
        key: K,
        filter: &SelectFilter<'_>,
        rng: &mut impl FnMut() -> u64,
        now: Instant,
    ) -> (Vec<AltLoc>, Vec<FwAltLoc>) {
        let Some(st) = self.state(key, false, now) else {
            return (Vec::new(), Vec::new());
        };
        let mut alts = Vec::new();
        let mut falts = Vec::new();
        for e in &st.entries {
            let eligible = if filter.only_good {
                e.good
            } else {
                e.bad_count == 0
            };
            if !eligible || filter.since.is_some_and(|s| e.inserted <= s) {
                continue;
            }
            match &e.loc {
                MeshEntry::Direct(a) => {
                    if *a.addr.ip() != filter.for_peer && !filter.exclude.contains(&a.addr) {
                        alts.push(*a);
                    }
                }
                MeshEntry::Firewalled(f) => {
                    if falts.len() < filter.max_fw && !filter.exclude_guids.contains(&f.guid) {
                        falts.push(f.clone());
                    }
                }
            }
        }
        shuffle(&mut alts, rng);
        alts.truncate(filter.max);
        self.tidy(key);
        (alts, falts)
    }

    /// Addresses banned for `key` strictly after `since` and still banned at `now`, oldest
    /// first: the `X-Nalt` diff for a peer (gtkg sends bans created after its `last_sent`).
    pub fn bans_since(
        &mut self,
        key: K,
        since: Option<Instant>,
        now: Instant,
    ) -> Vec<SocketAddrV4> {
        let v = self.state(key, false, now).map_or_else(Vec::new, |st| {
            st.bans
                .iter()
                .filter(|b| since.is_none_or(|s| b.created > s))
                .map(|b| b.addr)
                .collect()
        });
        self.tidy(key);
        v
    }
}

/// When each peer (by IP) last got mesh data for each file, kept [`MESH_INFO_TIMEOUT`] after
/// the last send (gtkg `uploads.c upload_mi_get_stamp`, an aging table): the uploader's side
/// of "mesh data is a diff". At most [`MAX_SENT_LOG`] pairs.
#[derive(Debug, Clone)]
pub struct SentLog<K: Hash + Eq + Copy> {
    map: HashMap<(Ipv4Addr, K), (Instant, u64)>,
    /// Pairs by last record, oldest first; `u64` ticks are unique.
    order: BTreeMap<u64, (Ipv4Addr, K)>,
    tick: u64,
    cap: usize,
}

impl<K: Hash + Eq + Copy> Default for SentLog<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq + Copy> SentLog<K> {
    /// An empty log of at most [`MAX_SENT_LOG`] pairs.
    pub fn new() -> Self {
        Self::with_capacity_bound(MAX_SENT_LOG)
    }

    /// An empty log of at most `cap` pairs (at least 1).
    pub fn with_capacity_bound(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            cap: cap.max(1),
        }
    }

    /// Number of pairs held (expired ones included until [`SentLog::purge`] or a record).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no pair is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// When `ip` last got mesh data for `key`, if within [`MESH_INFO_TIMEOUT`] of `now`.
    pub fn last_sent(&self, ip: Ipv4Addr, key: K, now: Instant) -> Option<Instant> {
        self.map
            .get(&(ip, key))
            .map(|&(t, _)| t)
            .filter(|&t| now.saturating_duration_since(t) < MESH_INFO_TIMEOUT)
    }

    /// Records that `ip` gets mesh data for `key` now.
    pub fn record(&mut self, ip: Ipv4Addr, key: K, now: Instant) {
        self.tick += 1;
        let t = self.tick;
        if let Some((_, old)) = self.map.insert((ip, key), (now, t)) {
            self.order.remove(&old);
        } else if self.map.len() > self.cap {
            self.purge(now);
            if self.map.len() > self.cap
                && let Some((_, k)) = self.order.pop_first()
            {
                self.map.remove(&k);
            }
        }
        self.order.insert(t, (ip, key));
    }

    /// [`SentLog::last_sent`], then [`SentLog::record`]: the `since` to select with, and the
    /// note that this send happened (gtkg returns 0, "send everything", for an unknown pair).
    pub fn swap(&mut self, ip: Ipv4Addr, key: K, now: Instant) -> Option<Instant> {
        let prev = self.last_sent(ip, key, now);
        self.record(ip, key, now);
        prev
    }

    /// Drops pairs older than [`MESH_INFO_TIMEOUT`].
    pub fn purge(&mut self, now: Instant) {
        while let Some((&t, &k)) = self.order.first_key_value() {
            let Some(&(at, _)) = self.map.get(&k) else {
                self.order.remove(&t); // cannot happen: both maps change together
                continue;
            };
            if now.saturating_duration_since(at) < MESH_INFO_TIMEOUT {
                break;
            }
            self.order.remove(&t);
            self.map.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm::testutil::{XorShift, rng};

    fn sa(s: &str) -> SocketAddrV4 {
        s.parse().expect("test address")
    }

    fn alt(s: &str) -> MeshEntry {
        MeshEntry::Direct(AltLoc::new(sa(s)))
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn all<'a>() -> SelectFilter<'a> {
        SelectFilter {
            for_peer: Ipv4Addr::new(9, 9, 9, 9),
            exclude: &[],
            exclude_guids: &[],
            only_good: false,
            since: None,
            max: usize::MAX,
            max_fw: usize::MAX,
        }
    }

    fn picked(m: &mut Mesh<u32>, key: u32, f: &SelectFilter<'_>, now: Instant) -> Vec<String> {
        let (a, _) = m.select(key, f, &mut rng(1), now);
        let mut v: Vec<String> = a.iter().map(|a| a.addr.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn added_entries_are_selected_until_they_expire() {
        let t0 = Instant::now();
        let mut m = Mesh::new();
        assert_eq!(m.add(1u32, alt("1.1.1.1:1"), None, t0), AddOutcome::Added);
        assert_eq!(m.add(1, alt("1.1.1.1:1"), None, t0), AddOutcome::Refreshed);
        assert_eq!(picked(&mut m, 1, &all(), t0), ["1.1.1.1:1"]);
        assert_eq!(m.count(1, t0 + MAX_LIFETIME), 1);
        assert_eq!(m.count(1, t0 + MAX_LIFETIME + secs(1)), 0);
        assert_eq!(m.key_count(), 0, "an empty file's state is dropped");
    }

    #[test]
    fn shared_files_keep_entries_one_hour_and_refresh_extends() {
        let t0 = Instant::now();
        let mut m = Mesh::new();
        m.set_lifetime(7u32, Lifetime::Shared, t0);
        m.add(7, alt("1.1.1.1:1"), None, t0);
        m.add(7, alt("2.2.2.2:2"), None, t0);
        m.add(7, alt("2.2.2.2:2"), None, t0 + secs(1800)); // seen again
        let late = t0 + MAX_LIBLIFETIME + secs(1);
        assert_eq!(picked(&mut m, 7, &all(), late), ["2.2.2.2:2"]);
        assert_eq!(m.key_count(), 1, "a Shared key keeps its state");
    }

    #[test]
    fn stale_invalid_and_dated_entries() {
        let t0 = Instant::now() + secs(100_000);
        let mut m = Mesh::new();
        assert_eq!(
            m.add_seen(1u32, alt("1.1.1.1:1"), None, MAX_LIFETIME + secs(1), t0),
            AddOutcome::Stale
        );
        assert_eq!(m.add(1, alt("0.0.0.0:1"), None, t0), AddOutcome::Invalid);
        assert_eq!(m.add(1, alt("224.0.0.1:1"), None, t0), AddOutcome::Invalid);
        assert_eq!(m.add(1, alt("1.1.1.1:0"), None, t0), AddOutcome::Invalid);
        assert_eq!(
            m.add_seen(1, alt("1.1.1.1:1"), None, secs(40_000), t0),
            AddOutcome::Added
        );
        assert_eq!(m.count(1, t0 + secs(3_000)), 1);
        assert_eq!(
            m.count(1, t0 + secs(3_201)),
            0,
            "expires 12 h after its date"
        );
    }

    #[test]
    fn only_good_selects_marked_entries_and_self_alt_is_good() {
        let t0 = Instant::now();
        let mut m = Mesh::new();
        m.add(1u32, alt("1.1.1.1:1"), None, t0);
        m.add(1, alt("2.2.2.2:2"), Some(sa("2.2.2.2:2")), t0);
        m.add(1, alt("3.3.3.3:3"), Some(sa("3.3.3.3:4")), t0); // other port: not itself
        let good = SelectFilter {
            only_good: true,
            ..all()
        };
        assert_eq!(picked(&mut m, 1, &good, t0), ["2.2.2.2:2"]);
        assert!(m.mark_good(1, sa("1.1.1.1:1"), t0));
        assert_eq!(picked(&mut m, 1, &good, t0), ["1.1.1.1:1", "2.2.2.2:2"]);
    }

    #[test]
    fn selection_is_a_diff_since_last_send() {
        let t0 = Instant::now();
        let mut m = Mesh::new();
        m.add(1u32, alt("1.1.1.1:1"), None, t0);
        m.add(1, alt("2.2.2.2:2"), None, t0 + secs(10));
        let since = SelectFilter {
            since: Some(t0 + secs(5)),
            ..all()
        };
        assert_eq!(picked(&mut m, 1, &since, t0 + secs(20)), ["2.2.2.2:2"]);
        // Seen again: not new. First good mark: new again.
        m.add(1, alt("1.1.1.1:1"), None, t0 + secs(30));
        assert_eq!(picked(&mut m, 1, &since, t0 + secs(30)), ["2.2.2.2:2"]);
        m.mark_good(1, sa("1.1.1.1:1"), t0 + secs(40));
        assert_eq!(
            picked(&mut m, 1, &since, t0 + secs(40)),
            ["1.1.1.1:1", "2.2.2.2:2"]
        );
        // A second good mark does not make it new again (gtkg: first time only).
        let later = SelectFilter {
            since: Some(t0 + secs(45)),
            ..all()
        };
        m.mark_good(1, sa("1.1.1.1:1"), t0 + secs(50));
        assert!(picked(&mut m, 1, &later, t0 + secs(50)).is_empty());
        // Strictly after: an entry inserted at `since` itself is not sent.
        let at = SelectFilter {
            since: Some(t0 + secs(10)),
            ..all()
        };
        assert_eq!(picked(&mut m, 1, &at, t0 + secs(50)), ["1.1.1.1:1"]);
    }

    #[test]
    fn never_the_peer_nor_our_own_addresses_and_max_applies() {
        let t0 = Instant::now();
        let mut m = Mesh::new();
        m.add(1u32, alt("9.9.9.9:7"), None, t0); // the peer, other port
        m.add(1, alt("5.5.5.5:5"), None, t0); // ours
        for i in 1..=20 {
            m.add(
                1,
                MeshEntry::Direct(AltLoc::new(SocketAddrV4::new(Ipv4Addr::new(1, 0, 0, i), 1))),
                None,
                t0,
            );
        }
        let ours = [sa("5.5.5.5:5")];
        let f = SelectFilter {
            exclude: &ours,
            ..all()
        };
        let v = picked(&mut m, 1, &f, t0);
        assert_eq!(v.len(), 20);
        assert!(
            !v.iter()
                .any(|a| a.starts_with("9.9.9.9") || a.starts_with("5.5.5.5"))
        );
        let capped = SelectFilter { max: 6, ..f };
        assert_eq!(m.select(1, &capped, &mut rng(3), t0).0.len(), 6);
    }

    #[test]
    fn selection_is_shuffled() {
        let t0 = Instant::now();
        let mut m = Mesh::new();
        for i in 1..=30 {
            m.add(
                1u32,
                MeshEntry::Direct(AltLoc::new(SocketAddrV4::new(Ipv4Addr::new(1, 0, 0, i), 1))),
                None,
                t0,
            );
        }
        let a = m.select(1, &all(), &mut rng(1), t0).0;
        let b = m.select(1, &all(), &mut rng(2), t0).0;
        assert_eq!(a.len(), 30);
        assert_ne!(a, b);
    }

    #[test]
    fn failed_source_is_banned_two_hours_and_feeds_x_nalt() {
        let t0 = Instant::now();
        let mut m = Mesh::new();
        m.add(1u32, alt("1.1.1.1:1"), None, t0);
        m.remove_and_ban(1, sa("1.1.1.1:1"), t0 + secs(10));
        assert_eq!(m.count(1, t0 + secs(10)), 0);
        assert_eq!(
            m.add(1, alt("1.1.1.1:1"), None, t0 + secs(20)),
            AddOutcome::Banned
        );
        assert_eq!(m.bans_since(1, None, t0 + secs(20)), [sa("1.1.1.1:1")]);
        assert_eq!(m.bans_since(1, Some(t0 + secs(10)), t0 + secs(20)), []);
        assert_eq!(
            m.bans_since(1, Some(t0 + secs(9)), t0 + secs(20)),
            [sa("1.1.1.1:1")]
        );
        let end = t0 + secs(10) + BAN_LIFETIME;
        assert!(m.is_banned(1, sa("1.1.1.1:1"), end - secs(1)));
        assert!(!m.is_banned(1, sa("1.1.1.1:1"), end));
        assert_eq!(m.add(1, alt("1.1.1.1:1"), None, end), AddOutcome::Added);
    }

    #[test]
    fn good_mark_lifts_a_ban_only_after_the_veto() {
        let t0 = Instant::now();
        let mut m = Mesh::new();
        m.remove_and_ban(1u32, sa("1.1.1.1:1"), t0);
        assert!(!m.mark_good(1, sa("1.1.1.1:1"), t0 + DMESH_BAN_VETO));
        assert!(m.is_banned(1, sa("1.1.1.1:1"), t0 + DMESH_BAN_VETO));
        assert!(m.mark_good(1, sa("1.1.1.1:1"), t0 + DMESH_BAN_VETO + secs(1)));
        assert!(!m.is_banned(1, sa("1.1.1.1:1"), t0 + secs(400)));
        let good = SelectFilter {
            only_good: true,
            ..all()
        };
        assert_eq!(picked(&mut m, 1, &good, t0 + secs(400)), ["1.1.1.1:1"]);
    }

    #[test]
    fn x_nalt_needs_three_distinct_slash_16_networks() {
        let t0 = Instant::now();
        let mut m = Mesh::new();
        let bad = sa("1.1.1.1:1");
        m.add(1u32, MeshEntry::Direct(AltLoc::new(bad)), None, t0);
        let r = |s: &str| s.parse::<Ipv4Addr>().expect("test ip");
        assert_eq!(
            m.negative(1, sa("8.8.8.8:8"), r("50.1.0.1"), t0),
            NegativeOutcome::Unknown
        );
        assert_eq!(
            m.negative(2, bad, r("50.1.0.1"), t0),
            NegativeOutcome::Unknown
        );
        assert_eq!(
            m.negative(1, bad, r("50.1.0.1"), t0),
            NegativeOutcome::Counted(1)
        );
        assert_eq!(
            m.negative(1, bad, r("50.1.200.7"), t0),
            NegativeOutcome::AlreadyCounted
        );
        assert_eq!(
            m.negative(1, bad, r("50.2.0.1"), t0),
            NegativeOutcome::Counted(2)
        );
        // Reported entries are not propagated for a complete file.
        assert!(picked(&mut m, 1, &all(), t0).is_empty());
        assert_eq!(
            m.negative(1, bad, r("60.2.0.1"), t0),
            NegativeOutcome::Banned
        );
        assert_eq!(m.count(1, t0), 0);
        assert!(m.is_banned(1, bad, t0));
        assert_eq!(m.bans_since(1, None, t0), [bad]);
    }

    #[test]
    fn good_mark_forgets_negative_reports() {
        let t0 = Instant::now();
        let mut m = Mesh::new();
        let a = sa("1.1.1.1:1");
        m.add(1u32, MeshEntry::Direct(AltLoc::new(a)), None, t0);
        m.negative(1, a, Ipv4Addr::new(50, 1, 0, 1), t0);
        m.negative(1, a, Ipv4Addr::new(50, 2, 0, 1), t0);
        m.mark_good(1, a, t0);
        assert_eq!(
            m.negative(1, a, Ipv4Addr::new(50, 3, 0, 1), t0),
            NegativeOutcome::Counted(1)
        );
    }

    #[test]
    fn at_most_max_entries_per_file_oldest_evicted() {
        let t0 = Instant::now();
        let mut m = Mesh::new();
        for i in 0..=MAX_ENTRIES as u32 {
            let ip = Ipv4Addr::from(0x0101_0000 + i);
            m.add(
                1u32,
                MeshEntry::Direct(AltLoc::new(SocketAddrV4::new(ip, 1))),
                None,
                t0,
            );
        }
        let v = m.sources(1, t0);
        assert_eq!(v.len(), MAX_ENTRIES);
        assert_eq!(v[0], alt("1.1.0.1:1"), "1.1.0.0 was the oldest");
    }

    #[test]
    fn bans_per_file_are_bounded() {
        let t0 = Instant::now();
        let mut m = Mesh::new();
        for i in 0..(MAX_BANS_PER_KEY as u32 + 10) {
            m.remove_and_ban(
                1u32,
                SocketAddrV4::new(Ipv4Addr::from(0x0202_0000 + i), 1),
                t0,
            );
        }
        assert_eq!(m.bans_since(1, None, t0).len(), MAX_BANS_PER_KEY);
    }

    #[test]
    fn least_recently_used_file_is_forgotten() {
        let t0 = Instant::now();
        let mut m = Mesh::with_max_keys(3);
        for k in 1..=3u32 {
            m.add(k, alt("1.1.1.1:1"), None, t0);
        }
        m.count(1, t0); // use key 1: key 2 is now the least recently used
        m.add(4, alt("1.1.1.1:1"), None, t0);
        assert_eq!(m.key_count(), 3);
        assert_eq!(m.count(2, t0), 0);
        assert_eq!(m.count(1, t0), 1);
        assert_eq!(m.count(3, t0), 1);
        assert_eq!(m.count(4, t0), 1);
    }

    #[test]
    fn firewalled_entries() {
        let t0 = Instant::now();
        let mut m = Mesh::new();
        let g1 = ServentId([1; 16]);
        let g2 = ServentId([2; 16]);
        let mut f1 = FwAltLoc::new(g1);
        f1.push_proxy(sa("3.3.3.3:3"));
        m.add(1u32, MeshEntry::Firewalled(f1.clone()), None, t0);
        m.add(
            1,
            MeshEntry::Firewalled(FwAltLoc::new(g2)),
            None,
            t0 + secs(5),
        );
        let (_, f) = m.select(1, &all(), &mut rng(1), t0 + secs(5));
        assert_eq!(
            f.iter().map(|f| f.guid).collect::<Vec<_>>(),
            [g1, g2],
            "mesh order"
        );
        let peer = [g1];
        let excl = SelectFilter {
            exclude_guids: &peer,
            ..all()
        };
        assert_eq!(m.select(1, &excl, &mut rng(1), t0 + secs(5)).1.len(), 1);
        let no_fw = SelectFilter { max_fw: 0, ..all() };
        assert!(m.select(1, &no_fw, &mut rng(1), t0).1.is_empty());
        // New proxies supersede the old list and make the entry new again.
        let mut f1b = FwAltLoc::new(g1);
        f1b.push_proxy(sa("4.4.4.4:4"));
        assert_eq!(
            m.add(1, MeshEntry::Firewalled(f1b), None, t0 + secs(10)),
            AddOutcome::Refreshed
        );
        let since = SelectFilter {
            since: Some(t0 + secs(6)),
            ..all()
        };
        let (_, f) = m.select(1, &since, &mut rng(1), t0 + secs(10));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].proxies(), [sa("4.4.4.4:4")]);
        // Without proxies the old list stays.
        m.add(
            1,
            MeshEntry::Firewalled(FwAltLoc::new(g1)),
            None,
            t0 + secs(11),
        );
        let (_, f) = m.select(1, &all(), &mut rng(1), t0 + secs(11));
        assert_eq!(f[0].proxies(), [sa("4.4.4.4:4")]);
        m.mark_good_fw(1, g2, t0 + secs(12));
        let good = SelectFilter {
            only_good: true,
            ..all()
        };
        let (_, f) = m.select(1, &good, &mut rng(1), t0 + secs(12));
        assert_eq!(f.iter().map(|f| f.guid).collect::<Vec<_>>(), [g2]);
        m.remove_fw(1, g2, t0 + secs(12));
        assert_eq!(m.count(1, t0 + secs(12)), 1);
    }

    #[test]
    fn hostile_floods_stay_bounded() {
        let t0 = Instant::now();
        let mut m = Mesh::with_max_keys(64);
        let mut x = XorShift(42);
        for i in 0..100_000u32 {
            let ip = Ipv4Addr::from((x.next_u64() as u32) | 0x0100_0000);
            let key = if i % 2 == 0 { 0 } else { i % 1000 };
            m.add(
                key,
                MeshEntry::Direct(AltLoc::new(SocketAddrV4::new(ip, 1 + i as u16 % 100))),
                None,
                t0,
            );
            m.negative(key, SocketAddrV4::new(ip, 1), Ipv4Addr::from(i), t0);
        }
        assert!(m.key_count() <= 64);
        assert!(m.count(0, t0) <= MAX_ENTRIES);
    }

    /// Random operations in virtual time: the invariants written on `KeyState` always hold.
    #[test]
    fn random_operations_keep_the_invariants() {
        let t0 = Instant::now();
        let mut m: Mesh<u8> = Mesh::with_max_keys(4);
        let mut x = XorShift(0xbeef);
        let mut now = t0;
        for _ in 0..50_000 {
            now += Duration::from_millis(x.next_u64() % 60_000);
            let key = (x.next_u64() % 6) as u8;
            let addr = SocketAddrV4::new(
                Ipv4Addr::new(1, 1, (x.next_u64() % 4) as u8, (x.next_u64() % 200) as u8),
                1,
            );
            let reporter = Ipv4Addr::from(x.next_u64() as u32);
            match x.next_u64() % 9 {
                0 | 1 => {
                    m.add(key, MeshEntry::Direct(AltLoc::new(addr)), Some(addr), now);
                }
                2 => {
                    m.mark_good(key, addr, now);
                }
                3 => m.remove_and_ban(key, addr, now),
                4 | 5 => {
                    m.negative(key, addr, reporter, now);
                }
                6 => {
                    let guid = ServentId([(x.next_u64() % 50) as u8; 16]);
                    m.add(key, MeshEntry::Firewalled(FwAltLoc::new(guid)), None, now);
                }
                7 => {
                    let life = if x.next_u64() & 1 == 0 {
                        Lifetime::Shared
                    } else {
                        Lifetime::Downloading
                    };
                    m.set_lifetime(key, life, now);
                }
                _ => {
                    let f = SelectFilter {
                        since: Some(now - Duration::from_secs(600)),
                        ..all()
                    };
                    let (a, _) = m.select(key, &f, &mut rng(x.next_u64()), now);
                    assert!(a.len() <= MAX_ENTRIES);
                }
            }
            assert!(m.keys.len() <= 4);
            assert_eq!(m.keys.len(), m.lru.len());
            for st in m.keys.values() {
                assert!(st.entries.len() <= MAX_ENTRIES);
                assert!(st.bans.len() <= MAX_BANS_PER_KEY);
                for (i, e) in st.entries.iter().enumerate() {
                    assert!(usize::from(e.bad_count) < MIN_BAD_REPORT);
                    assert!(!st.entries[..i].iter().any(|o| o.loc.same_source(&e.loc)));
                    if let MeshEntry::Direct(a) = &e.loc {
                        assert!(
                            st.ban_index(a.addr).is_none(),
                            "banned address has an entry"
                        );
                    }
                }
                for (i, b) in st.bans.iter().enumerate() {
                    assert!(!st.bans[..i].iter().any(|o| o.addr == b.addr));
                }
            }
        }
    }

    #[test]
    fn records_are_as_small_as_the_memory_note_says() {
        assert!(
            std::mem::size_of::<Entry>() <= 112,
            "{}",
            std::mem::size_of::<Entry>()
        );
        assert!(std::mem::size_of::<Ban>() <= 24);
    }

    #[test]
    fn sent_log_gives_the_last_send_within_timeout() {
        let t0 = Instant::now();
        let mut log = SentLog::new();
        let ip = Ipv4Addr::new(1, 2, 3, 4);
        assert_eq!(log.swap(ip, 1u32, t0), None);
        assert_eq!(log.swap(ip, 1, t0 + secs(100)), Some(t0));
        assert_eq!(log.swap(ip, 2, t0 + secs(100)), None, "per file");
        assert_eq!(
            log.last_sent(ip, 1, t0 + secs(100) + MESH_INFO_TIMEOUT),
            None
        );
        assert_eq!(
            log.last_sent(ip, 1, t0 + secs(99) + MESH_INFO_TIMEOUT),
            Some(t0 + secs(100))
        );
        log.purge(t0 + secs(100) + MESH_INFO_TIMEOUT);
        assert!(log.is_empty());
    }

    #[test]
    fn sent_log_is_bounded() {
        let t0 = Instant::now();
        let mut log = SentLog::with_capacity_bound(100);
        for i in 0..10_000u32 {
            log.record(
                Ipv4Addr::from(i),
                1u32,
                t0 + Duration::from_millis(u64::from(i)),
            );
        }
        assert_eq!(log.len(), 100);
        let last = Ipv4Addr::from(9_999);
        assert!(log.last_sent(last, 1, t0 + secs(10)).is_some());
        assert!(log.last_sent(Ipv4Addr::from(0), 1, t0 + secs(10)).is_none());
    }
}
