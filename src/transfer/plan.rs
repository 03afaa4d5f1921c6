//! Who fetches what, for one download: the pure part of swarming (no sockets, no clock: `now`
//! is a parameter). It holds the bytes written and verified, the ranges in flight, the sources
//! with what each said it has, and the Tiger tree once one arrives; it picks the next chunk
//! for a source (rarest first, aligned to the tree's slices) and judges slices as their roots
//! come in.
//!
//! Invariants: `verified ⊆ done`; a byte is in flight for at most one source; a slice that
//! failed its check is taken out of `done` at once, so it is fetched again, and the source that
//! sent it is not asked for it again while another source has it.

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::swarm::ranges::RangeSet;
use crate::thex::{HashTree, Tth, slice_size};

use super::download::Source;

/// Largest request to a source, so several sources share even a big file and a slow one
/// does not hold much of it.
pub const MAX_CHUNK: u64 = 8 * 1024 * 1024;
/// Sources known for one download at most (alt-locs included); more are ignored.
pub const MAX_SOURCES: usize = 64;
/// Corrupt slices a source may send before it is dropped. The first costs it that slice (asked
/// elsewhere), the third its place: one bad slice can be a disk error, three are a pattern.
pub const MAX_STRIKES: u32 = 3;
/// Longest wait a source's `Retry-After` can impose on us; beyond it we retry anyway.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);
/// A request asks for about this much of the source's time. Short requests spread a swarm's
/// pieces fast (a peer can pass on a slice only once it holds it whole, and an uploader turns
/// its slots over per request), long ones keep the round trips between requests small next to
/// the transfer; at a second and a half, 100 ms of round trip costs under 7 %.
pub const REQUEST_TIME: Duration = Duration::from_millis(1500);
/// Slices asked of a source whose rate is not known yet.
const FIRST_REQUEST_SLICES: u64 = 2;

/// Where a source stands, as a person watching the download sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    /// Not asked yet, or between two requests.
    Idle,
    /// A request is running.
    Active,
    /// It said it is busy, or has nothing we need yet: asked again later.
    Waiting,
    /// Unreachable or broken too often: given up.
    Failed,
    /// Sent data that failed verification too often: dropped.
    Bad,
}

#[derive(Debug, Clone)]
pub struct SourceInfo {
    pub src: Source,
    /// What it said it has; `None`: the whole file.
    pub available: Option<RangeSet>,
    /// Bytes it gave us (verified or not).
    pub bytes: u64,
    pub state: SourceState,
    /// Learnt from another peer's `X-Alt`, not from a hit.
    pub from_mesh: bool,
    pub strikes: u32,
    /// Do not ask before this.
    pub retry_at: Option<Instant>,
    /// Bytes per second its bodies came at, smoothed; unknown before its first answer.
    pub rate: Option<f64>,
    /// Its PARQ queue's last word on us: our ID there and place (SWARM.md §4.1).
    pub queued: Option<crate::swarm::parq::Queued>,
    /// Its last connection attempt failed: it is tried again, and named dead meanwhile.
    pub unreachable: bool,
    /// Answers in a row that it does not serve the file now (404/410).
    pub not_now: u32,
}

impl SourceInfo {
    pub fn partial(&self) -> bool {
        self.available.is_some()
    }

    /// Bytes it says it holds (all of them for a complete source).
    pub fn held(&self) -> u64 {
        self.available
            .as_ref()
            .map_or(u64::MAX, RangeSet::covered_len)
    }

    fn has(&self, at: u64) -> bool {
        self.available.as_ref().is_none_or(|r| r.contains(at))
    }

    fn usable(&self) -> bool {
        !matches!(self.state, SourceState::Failed | SourceState::Bad)
    }
}

/// A request under way: [a, b) from source `si`, received up to `got`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flight {
    pub a: u64,
    pub b: u64,
    pub si: usize,
    pub got: u64,
}

/// What happened to a slice whose root came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SliceVerdict {
    /// Matches the tree: the range may be shared.
    Good(u64, u64),
    /// Does not match: thrown away; these sources sent bytes of it.
    Bad(u64, u64, Vec<usize>),
    /// No tree yet: kept until one comes.
    Pending,
}

#[derive(Debug)]
pub struct Plan {
    pub size: u64,
    /// Slice size of the tree we expect (SWARM.md §3.3); chunks are cut on its multiples, so
    /// each slice is whole in one response whenever possible.
    pub slice: u64,
    pub chunk: u64,
    /// Bytes written to the partial file.
    pub done: RangeSet,
    /// Bytes checked against the tree.
    pub verified: RangeSet,
    /// Ranges being fetched, one per source at most.
    pub in_flight: Vec<Flight>,
    pub sources: Vec<SourceInfo>,
    pub tree: Option<Arc<HashTree>>,
    /// Root we trust (from the hit, the magnet, or the first tree offered).
    pub tth: Option<Tth>,
    /// Someone is fetching the tree.
    pub tree_fetching: bool,
    /// Roots of slices computed before the tree came.
    pending_roots: HashMap<u64, Tth>,
    /// Sources that wrote into each slice not yet judged.
    writers: HashMap<u64, Vec<usize>>,
    /// A slice that failed, and the source it must not come from again.
    avoid: HashMap<u64, usize>,
    /// Orders chunks held by as many sources: each download picks its own order, so the
    /// downloaders of one seed fetch different chunks and have something to trade (BitTorrent
    /// picks at random among the rarest for the same reason).
    pub shuffle: u64,
}

impl Plan {
    pub fn new(size: u64, tth: Option<Tth>, done: RangeSet, sources: usize) -> Plan {
        // Slices below 64 KiB only come with tiny files (depth 0 is the whole file).
        let slice = slice_size(size).max(1);
        // Sixteen chunks per source at least: a swarm needs several pieces in the air to trade.
        let per = (size / (sources.max(1) as u64 * 16)).clamp(slice, MAX_CHUNK.max(slice));
        let chunk = (per / slice).max(1) * slice;
        Plan {
            size,
            slice,
            chunk,
            done,
            verified: RangeSet::new(),
            in_flight: Vec::new(),
            sources: Vec::new(),
            tree: None,
            tth,
            tree_fetching: false,
            pending_roots: HashMap::new(),
            writers: HashMap::new(),
            avoid: HashMap::new(),
            shuffle: 0,
        }
    }

    /// Adds a source unless it is known already or the list is full; returns its index.
    pub fn add_source(&mut self, src: Source, from_mesh: bool) -> Option<usize> {
        if self.sources.iter().any(|s| s.src.addr == src.addr) || self.sources.len() >= MAX_SOURCES
        {
            return None;
        }
        self.sources.push(SourceInfo {
            src,
            available: None,
            bytes: 0,
            state: SourceState::Idle,
            from_mesh,
            strikes: 0,
            retry_at: None,
            rate: None,
            queued: None,
            unreachable: false,
            not_now: 0,
        });
        Some(self.sources.len() - 1)
    }

    pub fn knows(&self, addr: &SocketAddrV4) -> bool {
        self.sources.iter().any(|s| &s.src.addr == addr)
    }

    fn busy(&self, a: u64, b: u64) -> bool {
        self.in_flight.iter().any(|f| f.a < b && a < f.b)
    }

    /// Every byte written.
    pub fn complete(&self) -> bool {
        self.done.contains_range(0, self.size) || self.size == 0
    }

    /// What is left and nobody is fetching.
    pub fn open_chunks(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut c = 0;
        while c < self.size {
            let end = (c + self.chunk).min(self.size);
            // The first missing byte of this chunk onwards, up to the chunk's end.
            if let Some(g) = self.done.first_gap_from(c, end)
                && g.start < end
            {
                let (a, b) = (g.start, g.end.min(end));
                if !self.busy(a, b) {
                    out.push((a, b));
                } else if let Some(y) = self
                    .in_flight
                    .iter()
                    .filter(|f| f.a < b && a < f.b)
                    .map(|f| f.b)
                    .max()
                    && y < b
                    && self.done.first_gap_from(y, b).is_some_and(|g| g.start < b)
                    && !self.busy(y, b)
                {
                    out.push((y, b));
                }
            }
            c = end;
        }
        out
    }

    /// The next range for source `si`: one it has, that the fewest usable sources have
    /// (rarest first), in this download's own order among equals. It is marked in flight.
    /// When nothing is left that nobody fetches, the end game: half of the largest rest of
    /// another source's request.
    pub fn take(&mut self, si: usize) -> Option<(u64, u64)> {
        let me = self.sources.get(si)?;
        if !me.usable() || self.in_flight.iter().any(|f| f.si == si) {
            return None;
        }
        let Some(pick) = self
            .open_chunks()
            .into_iter()
            .filter(|&(a, _)| me.has(a) && self.avoid.get(&(a / self.slice)) != Some(&si))
            .min_by_key(|&(a, _)| {
                let holders = self
                    .sources
                    .iter()
                    .filter(|s| s.usable() && s.has(a))
                    .count();
                (holders, mix((a / self.slice) ^ self.shuffle))
            })
        else {
            return self.steal(si);
        };
        // A partial source serves up to the end of the range it holds; ask no further.
        let end = match &me.available {
            Some(r) => r
                .iter()
                .find(|x| x.contains(&pick.0))
                .map_or(pick.1, |x| x.end.min(pick.1)),
            None => pick.1,
        };
        let end = end.min(pick.0 + self.request_len(si));
        Some(self.fly(si, pick.0, end))
    }

    /// How much to ask of `si` at once: [`REQUEST_TIME`] at its rate, in whole slices.
    fn request_len(&self, si: usize) -> u64 {
        let slices = match self.sources[si].rate {
            Some(r) => (r * REQUEST_TIME.as_secs_f64() / self.slice as f64) as u64,
            None => FIRST_REQUEST_SLICES,
        };
        slices.max(1) * self.slice
    }

    /// `si` sent `bytes` of a body in `took`.
    pub fn rated(&mut self, si: usize, bytes: u64, took: Duration) {
        // Bodies too short to time say nothing.
        if bytes < 16 * 1024 || took.is_zero() {
            return;
        }
        let r = bytes as f64 / took.as_secs_f64();
        if let Some(s) = self.sources.get_mut(si) {
            s.rate = Some(s.rate.map_or(r, |old| 0.5 * old + 0.5 * r));
        }
    }

    fn fly(&mut self, si: usize, a: u64, b: u64) -> (u64, u64) {
        self.in_flight.push(Flight { a, b, si, got: a });
        self.sources[si].state = SourceState::Active;
        (a, b)
    }

    /// The end game (BitTorrent's, where the last pieces are asked of every peer): the
    /// downloads of a swarm end with every missing byte in flight from a few slow sources
    /// while the fast ones idle. `si` takes the back half, on a slice boundary, of the
    /// largest rest still to come of another source's request; that request is cut short
    /// there (its worker sees the new end through [`Plan::advance`]).
    fn steal(&mut self, si: usize) -> Option<(u64, u64)> {
        let me = &self.sources[si];
        let slice = self.slice;
        let (i, mid, end) = self
            .in_flight
            .iter()
            .enumerate()
            .filter(|(_, f)| f.si != si)
            .filter_map(|(i, f)| {
                let from = f.got.max(f.a);
                // Its worker may have read past a cut already made.
                if from >= f.b {
                    return None;
                }
                let mid = (from + (f.b - from) / 2).div_ceil(slice) * slice;
                if mid >= f.b || !me.has(mid) || self.avoid.get(&(mid / slice)) == Some(&si) {
                    return None;
                }
                let end = match &me.available {
                    Some(r) => r
                        .iter()
                        .find(|x| x.contains(&mid))
                        .map_or(f.b, |x| x.end.min(f.b)),
                    None => f.b,
                };
                (end - mid >= slice).then_some((i, mid, end))
            })
            .max_by_key(|&(_, mid, end)| end - mid)?;
        self.in_flight[i].b = mid;
        Some(self.fly(si, mid, end))
    }

    /// What to ask a partial source that has nothing we need, to learn whether it grew: an
    /// open chunk that starts where one of its ranges ends (a download fills forward), else
    /// the first open one.
    pub fn probe_target(&self, si: usize) -> Option<(u64, u64)> {
        let open = self.open_chunks();
        let ends: Vec<u64> = self
            .sources
            .get(si)?
            .available
            .as_ref()?
            .iter()
            .map(|r| r.end)
            .collect();
        open.iter()
            .find(|c| ends.iter().any(|&e| c.0 <= e && e < c.1))
            .or(open.first())
            .map(|&(a, b)| {
                // From the range's end, when it falls inside the chunk: what we ask is what it
                // has not said it has.
                let a = ends.iter().copied().find(|&e| a <= e && e < b).unwrap_or(a);
                (a, b)
            })
    }

    /// Probes partial source `si` for `range` (it may have grown to hold it).
    pub fn probe(&mut self, si: usize, range: (u64, u64)) -> Option<(u64, u64)> {
        let open = self
            .open_chunks()
            .iter()
            .any(|&(a, b)| a <= range.0 && range.1 <= b && range.0 < range.1);
        (open && !self.in_flight.iter().any(|f| f.si == si)).then(|| self.fly(si, range.0, range.1))
    }

    /// The request of `si` has received up to `got`; returns where it must now stop (less
    /// than asked once the end game took its back half).
    pub fn advance(&mut self, si: usize, got: u64) -> Option<u64> {
        let f = self.in_flight.iter_mut().find(|f| f.si == si)?;
        // A frame may run past the request's end; what lies beyond is not this request's.
        f.got = f.got.max(got.min(f.b));
        Some(f.b)
    }

    /// The request of `si` ended; bytes that arrived were reported by [`Plan::wrote`].
    pub fn finish(&mut self, si: usize) {
        self.in_flight.retain(|f| f.si != si);
        if let Some(s) = self.sources.get_mut(si)
            && s.state == SourceState::Active
        {
            s.state = SourceState::Idle;
        }
    }

    /// `si` wrote [a, b) to the file.
    pub fn wrote(&mut self, si: usize, a: u64, b: u64) {
        if a >= b {
            return;
        }
        self.done.insert(a, b);
        if let Some(s) = self.sources.get_mut(si) {
            s.bytes += b - a;
        }
        let (first, last) = (a / self.slice, (b - 1) / self.slice);
        for i in first..=last {
            let w = self.writers.entry(i).or_default();
            if !w.contains(&si) {
                w.push(si);
            }
        }
    }

    /// Every slice's root computed so far while no tree is known, in order (`None` where a
    /// slice's bytes never came whole in one response).
    pub fn own_roots(&self) -> Vec<Option<Tth>> {
        let n = self.size.div_ceil(self.slice).max(1);
        (0..n)
            .map(|i| self.pending_roots.get(&i).copied())
            .collect()
    }

    pub fn slice_range(&self, i: u64) -> (u64, u64) {
        (i * self.slice, ((i + 1) * self.slice).min(self.size))
    }

    /// Slices whole in `done` but not verified and with no root waiting: they must be read
    /// back from the file to be checked (their bytes came in more than one response).
    pub fn unjudged_slices(&self) -> Vec<u64> {
        let n = self.size.div_ceil(self.slice);
        (0..n)
            .filter(|&i| {
                let (a, b) = self.slice_range(i);
                self.done.contains_range(a, b)
                    && !self.verified.contains_range(a, b)
                    && !self.pending_roots.contains_key(&i)
            })
            .collect()
    }

    /// The root of slice `i` as computed from its bytes.
    pub fn slice_root(&mut self, i: u64, root: Tth) -> SliceVerdict {
        let (a, b) = self.slice_range(i);
        let Some(tree) = &self.tree else {
            self.pending_roots.insert(i, root);
            return SliceVerdict::Pending;
        };
        if tree.lowest().get(i as usize) == Some(&root) {
            self.verified.insert(a, b);
            self.writers.remove(&i);
            self.avoid.remove(&i);
            return SliceVerdict::Good(a, b);
        }
        self.done.remove(a, b);
        self.verified.remove(a, b);
        let who = self.writers.remove(&i).unwrap_or_default();
        for &s in &who {
            let src = &mut self.sources[s];
            src.strikes += 1;
            if src.strikes >= MAX_STRIKES {
                src.state = SourceState::Bad;
            }
            self.avoid.insert(i, s);
        }
        SliceVerdict::Bad(a, b, who)
    }

    /// A tree arrived (already checked against `tth`): judge every root waiting for it.
    pub fn set_tree(&mut self, tree: Arc<HashTree>) -> Vec<SliceVerdict> {
        self.tth = Some(tree.root());
        self.tree = Some(tree);
        self.tree_fetching = false;
        let waiting: Vec<(u64, Tth)> = self.pending_roots.drain().collect();
        waiting
            .into_iter()
            .map(|(i, r)| self.slice_root(i, r))
            .collect()
    }

    /// `si` has nothing we need now, or is busy: ask it again at `at`.
    pub fn wait(&mut self, si: usize, at: Instant) {
        if let Some(s) = self.sources.get_mut(si) {
            s.state = SourceState::Waiting;
            s.retry_at = Some(at);
        }
    }

    pub fn fail(&mut self, si: usize) {
        if let Some(s) = self.sources.get_mut(si) {
            s.state = SourceState::Failed;
        }
        self.in_flight.retain(|f| f.si != si);
    }

    /// No usable source left.
    pub fn hopeless(&self) -> bool {
        !self.sources.iter().any(SourceInfo::usable)
    }

    /// A bar of `cells` characters: `#` held, `>` in flight, `.` missing.
    pub fn map(&self, cells: usize) -> String {
        if self.size == 0 || cells == 0 {
            return String::new();
        }
        (0..cells as u64)
            .map(|c| {
                let a = self.size * c / cells as u64;
                let b = (self.size * (c + 1) / cells as u64).max(a + 1);
                if self.done.contains_range(a, b) {
                    '#'
                } else if self.busy(a, b) {
                    '>'
                } else {
                    '.'
                }
            })
            .collect()
    }
}

/// A cheap bijective scramble (splitmix64's finaliser) of a chunk number.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{FileIndex, ServentId};

    fn src(port: u16) -> Source {
        Source {
            addr: SocketAddrV4::new([127, 0, 0, 1].into(), port),
            index: FileIndex(1),
            name: "f".into(),
            servent: ServentId([port as u8; 16]),
            push: false,
            proxies: Vec::new(),
        }
    }

    fn ranges(v: &[(u64, u64)]) -> RangeSet {
        let mut r = RangeSet::new();
        for &(a, b) in v {
            r.insert(a, b);
        }
        r
    }

    #[test]
    fn chunks_follow_slices_and_the_rarest_goes_first() {
        // 16 MiB: 128 KiB slices (SWARM.md §3.3).
        let size = 16 << 20;
        let mut p = Plan::new(size, None, RangeSet::new(), 32);
        assert_eq!(p.slice, 128 << 10);
        assert_eq!(p.chunk % p.slice, 0);
        let full = p.add_source(src(1), false).unwrap();
        let part = p.add_source(src(2), true).unwrap();
        assert_eq!(p.add_source(src(2), true), None, "known already");
        p.sources[part].available = Some(ranges(&[(0, p.chunk)]));
        // The full source takes what only it has; the partial one what it has.
        let a = p.take(full).unwrap();
        assert!(a.0 >= p.chunk, "{a:?}");
        let b = p.take(part).unwrap();
        assert_eq!(b, (0, p.chunk));
        assert_eq!(p.take(part), None, "nothing else it has");
        p.wrote(part, 0, 1000);
        p.finish(part);
        // The rest of that chunk is open again, from byte 1000.
        assert!(p.open_chunks().contains(&(1000, p.chunk)));
    }

    #[test]
    fn a_bad_slice_is_refetched_from_another_source_and_strikes_its_sender() {
        let size = 1 << 20;
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let tree = Arc::new(HashTree::of(&data));
        let mut p = Plan::new(size as u64, Some(tree.root()), RangeSet::new(), 2);
        let s0 = p.add_source(src(1), false).unwrap();
        let s1 = p.add_source(src(2), false).unwrap();
        let (a, b) = p.take(s0).unwrap();
        p.wrote(s0, a, b);
        p.finish(s0);
        // No tree yet: the roots wait.
        let i = a / p.slice;
        let bad = crate::thex::slice_root(&vec![0u8; p.slice as usize]);
        assert_eq!(p.slice_root(i, bad), SliceVerdict::Pending);
        let verdicts = p.set_tree(tree);
        let (x, y) = p.slice_range(i);
        assert_eq!(verdicts, vec![SliceVerdict::Bad(x, y, vec![s0])]);
        assert!(!p.done.contains_range(x, y));
        assert_eq!(p.sources[s0].strikes, 1);
        // s0 is not given that slice again, whatever else it fetches; s1 is.
        while let Some((c, d)) = p.take(s0) {
            assert_ne!(c, x);
            p.wrote(s0, c, d);
            p.finish(s0);
        }
        let r = p.take(s1).unwrap();
        assert_eq!(r.0, x);
        p.wrote(s1, x, y);
        let good = crate::thex::slice_root(&data[x as usize..y as usize]);
        assert_eq!(p.slice_root(i, good), SliceVerdict::Good(x, y));
        assert!(p.verified.contains_range(x, y));
    }

    #[test]
    fn a_source_with_three_bad_slices_is_dropped() {
        let size = 1 << 20;
        let data = vec![7u8; size];
        let mut p = Plan::new(size as u64, None, RangeSet::new(), 1);
        p.set_tree(Arc::new(HashTree::of(&data)));
        let s = p.add_source(src(1), false).unwrap();
        let junk = crate::thex::slice_root(b"junk");
        for i in 0..3 {
            let (a, b) = p.slice_range(i);
            p.wrote(s, a, b);
            assert!(matches!(p.slice_root(i, junk), SliceVerdict::Bad(..)));
        }
        assert_eq!(p.sources[s].state, SourceState::Bad);
        assert!(p.hopeless());
        assert_eq!(p.take(s), None);
    }

    #[test]
    fn the_end_game_takes_the_back_half_of_the_largest_rest() {
        let size = 16 << 20;
        let mut p = Plan::new(size, None, RangeSet::new(), 1);
        let (slow, fast) = (
            p.add_source(src(1), false).unwrap(),
            p.add_source(src(2), false).unwrap(),
        );
        let chunks = size / p.chunk;
        // Everything is held but the last chunk, which the slow source has begun (at a rate
        // that gets it the whole chunk in one request).
        p.wrote(slow, 0, size - p.chunk);
        p.sources[slow].rate = Some(1e9);
        let (a, b) = p.take(slow).unwrap();
        assert_eq!((a, b), (size - p.chunk, size));
        assert_eq!(p.advance(slow, a + p.slice), Some(b));
        let (c, d) = p.take(fast).unwrap();
        let mid = (a + p.slice + (b - a - p.slice) / 2).div_ceil(p.slice) * p.slice;
        assert_eq!((c, d), (mid, b));
        // The slow one's request now stops there; it learns so as it receives.
        assert_eq!(p.advance(slow, a + 2 * p.slice), Some(mid));
        assert!(p.open_chunks().is_empty() && chunks > 1);
        // Once the fast one has received most of it, nobody splits a slice's worth.
        assert_eq!(p.advance(fast, d - p.slice), Some(d));
        p.finish(slow);
        p.wrote(slow, a, mid);
        assert_eq!(p.take(slow), None);
    }

    #[test]
    fn a_request_that_ran_past_its_cut_is_not_split_again() {
        // A worker reads whole frames, so it may report bytes past the end a steal gave
        // its request; a third source looking for something to split must skip it.
        let size = 16 << 20;
        let mut p = Plan::new(size, None, RangeSet::new(), 1);
        let ids: Vec<usize> = (1..=3)
            .map(|i| p.add_source(src(i), false).unwrap())
            .collect();
        p.wrote(ids[0], 0, size - p.chunk);
        p.sources[ids[0]].rate = Some(1e9);
        let (a, b) = p.take(ids[0]).unwrap();
        let (mid, _) = p.take(ids[1]).unwrap();
        assert!(a < mid && mid < b);
        assert_eq!(p.advance(ids[0], mid + p.slice / 2), Some(mid));
        // The third may split the second's request, never the overrun first one.
        if let Some((c, d)) = p.take(ids[2]) {
            assert!(c > mid && d <= b, "{c}..{d}");
        }
    }

    #[test]
    fn requests_last_about_a_second_and_a_half_at_the_source_rate() {
        let size = 64 << 20;
        let mut p = Plan::new(size, None, RangeSet::new(), 1);
        let s = p.add_source(src(1), false).unwrap();
        let (a, b) = p.take(s).unwrap();
        assert_eq!(
            b - a,
            FIRST_REQUEST_SLICES * p.slice,
            "unknown rate: a short first ask"
        );
        p.wrote(s, a, b);
        p.finish(s);
        // 1 MiB/s: 1.5 MiB, in whole slices.
        p.rated(s, 1 << 20, Duration::from_secs(1));
        let (a, b) = p.take(s).unwrap();
        assert_eq!(b - a, (3 << 19) / p.slice * p.slice);
        p.finish(s);
        // Never more than a chunk, however fast.
        p.rated(s, 1 << 30, Duration::from_millis(10));
        let (a, b) = p.take(s).unwrap();
        assert!(b - a <= p.chunk && b - a > 2 * p.slice, "{}", b - a);
    }

    #[test]
    fn a_partial_source_is_probed_just_past_what_it_has() {
        let size = 16 << 20;
        let mut p = Plan::new(size, None, RangeSet::new(), 1);
        let s = p.add_source(src(1), true).unwrap();
        p.sources[s].available = Some(ranges(&[(0, 3 << 19)]));
        // Everything it has is held already.
        p.wrote(s, 0, 3 << 19);
        assert_eq!(p.take(s), None);
        let (a, b) = p.probe_target(s).unwrap();
        assert_eq!(a, 3 << 19, "from where its range ends");
        assert!(b > a && b <= a + p.chunk);
        assert_eq!(p.probe(s, (a, b)), Some((a, b)));
        // Not twice at once.
        assert_eq!(p.probe(s, (a, b)), None);
    }

    #[test]
    fn the_map_shows_held_in_flight_and_missing() {
        let mut p = Plan::new(1000, None, ranges(&[(0, 500)]), 1);
        p.in_flight.push(Flight {
            a: 500,
            b: 750,
            si: 0,
            got: 500,
        });
        assert_eq!(p.map(4), "##>.");
    }
}
