//! Dynamic querying (PROTOCOL.md §7, after gtk-gnutella's `dq.c`): an ultrapeer does not flood
//! its own queries or its leaves' queries. It probes a few ultrapeers with a low TTL, waits,
//! counts the results routed back, then widens one connection at a time with a TTL computed
//! from the results so far, until there are enough, the horizon or lifetime cap is reached, or
//! no connection is left. A leaf that marks its query "leaf guided" is asked how many hits it
//! kept (BEAR/11) and may stop the query (BEAR/12 with 0xFFFF).
//!
//! The widening steps follow gtk-gnutella's `dq_send_next`: TTL rounded down, 3.7 s between
//! steps (less for rare content), at most 50 ultrapeers. The probe is PROTOCOL.md §7's (TTL 1
//! to up to three ultrapeers whose last-hop table matches, else TTL 2 to three), where
//! gtk-gnutella probes those that can route it with the query's own TTL, one less per nine of
//! them (dq.c:1718-1751). We never requery a probed ultrapeer with a higher TTL, which
//! gtk-gnutella does only with peers announcing they handle it (dq.c:797-801): our routing
//! drops every duplicate. Send-queue sizes and pending-message waits (dq.c:1583, 1668-1673)
//! are not seen by this pure core. Beyond gtk-gnutella, an ultrapeer that relayed the query to
//! us is not sent it again.
//!
//! No clock here either: every step takes `now`, and [`Dqs::next_deadline`] says when the
//! next one is due.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::debug;

use super::{Action, ConnId, QueryKeys, Rng, raw_descriptor};
use crate::wire::qrp::QrpTable;
use crate::wire::vendor::selector;
use crate::wire::{Descriptor, Guid, Hops, Payload, PayloadType, Ttl, VendorBody, VendorMessage};

/// Ultrapeers probed first (gtk-gnutella `DQ_PROBE_UP`).
pub const PROBE_UPS: usize = 3;
/// TTL of a probe when no ultrapeer's last-hop table tells where the content is (PROTOCOL.md
/// §7; a TTL-1 probe goes to the ultrapeers whose table matches).
pub const PROBE_TTL: u8 = 2;
/// Wait for results after each query sent before widening (gtk-gnutella `DQ_QUERY_TIMEOUT`,
/// dq.c:81, whatever the TTL).
pub const QUERY_TIMEOUT: Duration = Duration::from_millis(3700);
/// Extra wait per ultrapeer probed, since the probe's results set the pace (gtk-gnutella
/// `DQ_PROBE_TIMEOUT`, dq.c:79; the probe waits this plus [`QUERY_TIMEOUT`] per probe sent).
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);
/// The wait shrinks by this at each query sent while results stay low... (gtk-gnutella
/// `DQ_TIMEOUT_ADJUST`, dq.c:82)
const TIMEOUT_ADJUST: Duration = Duration::from_millis(100);
/// ...down to this (`DQ_MIN_TIMEOUT`, dq.c:83).
pub const MIN_TIMEOUT: Duration = Duration::from_millis(1500);
/// Results are low when fewer than `LOW_RESULTS` per `MIN_HORIZON` ultrapeers reached, once
/// the horizon is past `MIN_HORIZON` (`DQ_MIN_HORIZON`, `DQ_LOW_RESULTS`, dq.c:95-96).
const MIN_HORIZON: u32 = 3000;
const LOW_RESULTS: u32 = 10;
/// Ultrapeers queried at most: gtk-gnutella stops at `max_connections − normal_connections`
/// (dq.c:1536-1538), 50 − 0 by default (gnet_props.ag).
pub const MAX_UPS_QUERIED: u32 = 50;
/// A dynamic query ends after this whatever happens (gtk-gnutella `DQ_MAX_LIFETIME`).
pub const MAX_LIFETIME: Duration = Duration::from_secs(600);
/// Ultrapeers (theoretically) reached before we stop (gtk-gnutella `DQ_MAX_HORIZON`).
pub const MAX_HORIZON: u32 = 500_000;
/// Loss per hop from flow control and cycles (gtk-gnutella `DQ_FUZZY_FACTOR`).
const FUZZY_FACTOR: f64 = 0.8;
/// Degree assumed of a peer that sent no `X-Degree` (gtk-gnutella `NODE_LEGACY_DEGREE`).
pub const LEGACY_DEGREE: u32 = 6;
/// Horizon computations clamp degree and TTL like gtk-gnutella's precomputed table.
const MAX_DEGREE: u32 = 50;
const MAX_TTL: u8 = 5;
/// Ask a guiding leaf for its kept count every this many ultrapeers queried...
const STATUS_EVERY: u32 = 3;
/// ...once this many new results came since its last answer (gtk-gnutella).
const MIN_FOR_GUIDANCE: u32 = 20;
/// How long we wait for a leaf's BEAR/12 before going on without it.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(40);
/// Unanswered status requests before we stop treating the leaf as guiding.
const MAX_STATUS_TIMEOUTS: u8 = 2;
/// A leaf's kept count covers the hits from all its ultrapeers, about three.
const AVG_ULTRAPEERS: u32 = 3;
/// A query by SHA-1 wants this many times fewer results.
const SHA1_DECIMATOR: u32 = 25;
/// A guided query stops when the raw results exceed the target as if only 5 % were kept.
const PERCENT_KEPT: u32 = 5;

/// UPs a query of this TTL reaches through a peer of this degree:
/// Σ_{i<ttl}(degree−1)^i, less 20 % per extra hop (gtk-gnutella `dq_get_horizon`).
pub fn horizon(degree: u32, ttl: u8) -> u32 {
    let d = u64::from(degree.clamp(1, MAX_DEGREE) - 1);
    let t = ttl.clamp(1, MAX_TTL);
    let (mut sum, mut p) = (0u64, 1u64);
    for _ in 0..t {
        sum += p;
        p *= d;
    }
    (sum as f64 * FUZZY_FACTOR.powi(i32::from(t) - 1)) as u32
}

/// An ultrapeer link as a dynamic query sees it.
pub(super) struct UpLink<'a> {
    pub id: ConnId,
    pub degree: u32,
    pub max_ttl: u8,
    /// Its Hops Flow lets the query through.
    pub writable: bool,
    /// Its last-hop QRP table, when it sent one.
    pub table: Option<&'a QrpTable>,
}

/// Whose query it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Local,
    Leaf(ConnId),
}

/// Why a dynamic query ended, for the logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Enough,
    Horizon,
    Lifetime,
    NoUltrapeerLeft,
    /// [`MAX_UPS_QUERIED`] ultrapeers were queried.
    MaxQueried,
    /// The leaf (or our own searcher) said stop.
    Stopped,
    /// A guided query got far more raw results than its leaf keeps.
    TooManyResults,
}

/// What starts a dynamic query.
pub(super) struct Start {
    pub muid: Guid,
    pub origin: Origin,
    /// The encoded Query payload.
    pub payload: Arc<[u8]>,
    pub keys: QueryKeys,
    /// Highest TTL we may use.
    pub ttl: u8,
    /// Hops to send with: 0 for ours, 1 for a leaf's (we relay it).
    pub hops: u8,
    pub target: u32,
    pub leaf_guided: bool,
    pub by_sha1: bool,
}

struct Dq {
    origin: Origin,
    payload: Arc<[u8]>,
    keys: QueryKeys,
    ttl: u8,
    hops: u8,
    target: u32,
    fin: u32,
    results: u32,
    new_results: u32,
    kept: Option<u32>,
    leaf_guided: bool,
    got_guidance: bool,
    waiting: bool,
    status_timeouts: u8,
    horizon: u32,
    up_sent: u32,
    last_status: u32,
    queried: Vec<ConnId>,
    /// Ultrapeer links that sent us this query themselves: they drop another copy as a
    /// duplicate, so querying them would be a descriptor wasted.
    has_it: Vec<ConnId>,
    /// The current wait after a query sent (gtk-gnutella `result_timeout`).
    result_timeout: Duration,
    started: Instant,
    next: Instant,
}

/// The dynamic queries of one node, at most `capacity` at once.
pub(super) struct Dqs {
    active: HashMap<Guid, Dq>,
    capacity: usize,
    /// Ended queries, by reason, for status displays and tests.
    pub ended: Vec<(Guid, End)>,
}

/// Ended-query records kept for inspection.
const ENDED_KEPT: usize = 64;

impl Dqs {
    pub fn new(capacity: usize) -> Self {
        Dqs {
            active: HashMap::new(),
            capacity,
            ended: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.active.len()
    }

    pub fn is_full(&self) -> bool {
        self.active.len() >= self.capacity
    }

    /// When the earliest query wants its next step.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.active.values().map(|d| d.next).min()
    }

    /// Starts a query with its probe. Returns false when the table is full (nothing sent).
    pub fn start(
        &mut self,
        s: Start,
        links: &[UpLink<'_>],
        rng: &mut Rng,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> bool {
        if self.is_full() || self.active.contains_key(&s.muid) {
            return false;
        }
        let mut target = s.target.max(1);
        if s.by_sha1 {
            target = (target / SHA1_DECIMATOR).max(1);
        }
        let mut dq = Dq {
            origin: s.origin,
            payload: s.payload,
            keys: s.keys,
            ttl: s.ttl.max(1),
            hops: s.hops,
            target,
            fin: target.saturating_mul(100 / PERCENT_KEPT),
            results: 0,
            new_results: 0,
            kept: None,
            leaf_guided: s.leaf_guided,
            got_guidance: false,
            waiting: false,
            status_timeouts: 0,
            horizon: 0,
            up_sent: 0,
            last_status: 0,
            queried: Vec::new(),
            has_it: Vec::new(),
            result_timeout: QUERY_TIMEOUT,
            started: now,
            next: now,
        };
        let muid = s.muid;
        let mut open: Vec<&UpLink<'_>> = links.iter().filter(|l| l.writable).collect();
        shuffle(&mut open, rng);
        let matching: Vec<&UpLink<'_>> = open
            .iter()
            .copied()
            .filter(|l| l.table.is_some_and(|t| dq.keys.matches(t)))
            .collect();
        let (probe, ttl) = if matching.is_empty() {
            (open, PROBE_TTL)
        } else {
            (matching, 1)
        };
        for l in probe.iter().take(PROBE_UPS) {
            let ttl = ttl.min(dq.cap(l));
            dq.send(muid, l, ttl, out);
        }
        debug!(
            "DQ {muid}: probed {} ultrapeers, target {target}",
            dq.up_sent
        );
        // gtk-gnutella dq.c:1758-1759: per probe sent, the probe allowance plus the usual wait.
        dq.next = now + (PROBE_TIMEOUT + dq.result_timeout) * dq.up_sent.min(PROBE_UPS as u32);
        if dq.up_sent == 0 {
            // No one to probe: nothing more will come of it.
            self.finish(muid, End::NoUltrapeerLeft);
            return true;
        }
        self.active.insert(muid, dq);
        true
    }

    /// Counts results routed back for `muid` (to a leaf, or delivered to us).
    pub fn on_results(&mut self, muid: &Guid, count: u32) {
        if let Some(dq) = self.active.get_mut(muid) {
            dq.results = dq.results.saturating_add(count);
            dq.new_results = dq.new_results.saturating_add(count);
        }
    }

    /// Ultrapeer link `from` sent us `muid` again: it has the query, so the query's next
    /// steps skip it.
    pub fn on_duplicate(&mut self, muid: &Guid, from: ConnId) {
        if let Some(dq) = self.active.get_mut(muid)
            && !dq.has_it.contains(&from)
        {
            dq.has_it.push(from);
        }
    }

    /// Our searcher kept `kept` of the results of our own query `muid`.
    pub fn set_kept(&mut self, muid: &Guid, kept: u32) {
        if let Some(dq) = self.active.get_mut(muid)
            && dq.origin == Origin::Local
        {
            dq.kept = Some(kept);
        }
    }

    /// Ends our own query `muid` or any query from a leaf that is gone.
    pub fn stop(&mut self, muid: &Guid) {
        if self.active.remove(muid).is_some() {
            self.record(*muid, End::Stopped);
        }
    }

    /// A leaf's link closed: its queries end.
    pub fn forget_conn(&mut self, id: ConnId) {
        let gone: Vec<Guid> = self
            .active
            .iter()
            .filter(|(_, d)| d.origin == Origin::Leaf(id))
            .map(|(m, _)| *m)
            .collect();
        for m in gone {
            self.stop(&m);
        }
    }

    /// A BEAR/12 from leaf `from` about `muid`: it kept `kept` hits, 0xFFFF = stop.
    pub fn on_status(
        &mut self,
        (from, muid, kept): (ConnId, &Guid, u16),
        links: &[UpLink<'_>],
        rng: &mut Rng,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(dq) = self.active.get_mut(muid) else {
            return;
        };
        if dq.origin != Origin::Leaf(from) {
            return;
        }
        if kept == 0xFFFF {
            self.finish(*muid, End::Stopped);
            return;
        }
        dq.kept = Some(u32::from(kept));
        dq.got_guidance = true;
        dq.leaf_guided = true;
        dq.last_status = dq.up_sent;
        dq.new_results = 0;
        if dq.waiting {
            dq.waiting = false;
            if let Some(end) = dq.send_next(*muid, links, rng, now, out) {
                self.finish(*muid, end);
            }
        }
    }

    /// Takes every step that is due at `now`.
    pub fn advance(
        &mut self,
        links: &[UpLink<'_>],
        rng: &mut Rng,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let due: Vec<Guid> = self
            .active
            .iter()
            .filter(|(_, d)| d.next <= now)
            .map(|(m, _)| *m)
            .collect();
        for muid in due {
            let dq = self.active.get_mut(&muid).expect("listed above");
            if let Some(end) = dq.step(muid, links, rng, now, out) {
                self.finish(muid, end);
            }
        }
    }

    fn finish(&mut self, muid: Guid, end: End) {
        if let Some(dq) = self.active.remove(&muid) {
            debug!(
                "DQ {muid} ended ({end:?}): {} results, {} UPs queried, horizon {}",
                dq.results, dq.up_sent, dq.horizon
            );
        }
        self.record(muid, end);
    }

    fn record(&mut self, muid: Guid, end: End) {
        if self.ended.len() >= ENDED_KEPT {
            self.ended.remove(0);
        }
        self.ended.push((muid, end));
    }
}

impl Dq {
    /// The highest TTL for this link: ours, the peer's `X-Max-TTL` less the hops already made.
    fn cap(&self, l: &UpLink<'_>) -> u8 {
        self.ttl
            .min(l.max_ttl.saturating_sub(self.hops))
            .clamp(1, MAX_TTL)
    }

    fn send(&mut self, muid: Guid, l: &UpLink<'_>, ttl: u8, out: &mut Vec<Action>) {
        let msg = raw_descriptor(muid, PayloadType::Query, ttl, self.hops, &self.payload);
        out.push(Action::Send { to: l.id, msg });
        self.queried.push(l.id);
        self.up_sent = self.up_sent.saturating_add(1);
        self.horizon = self.horizon.saturating_add(horizon(l.degree, ttl));
    }

    /// The results that count against the target: what the searcher kept when it told us
    /// (a leaf's count is shared among its ultrapeers), else what we routed.
    fn kept_results(&self) -> u32 {
        match self.origin {
            Origin::Local => self.kept.unwrap_or(self.results),
            Origin::Leaf(_) if self.got_guidance => {
                (self.kept.unwrap_or(0) / AVG_ULTRAPEERS).saturating_add(self.new_results)
            }
            Origin::Leaf(_) => self.results,
        }
    }

    /// The largest TTL whose horizon does not exceed this link's share of the ultrapeers
    /// still to reach, "rounded to the lowest TTL to be conservative" (gtk-gnutella
    /// `dq_select_ttl`, dq.c:355-397).
    ///
    /// Two places where we keep gtk-gnutella's intent rather than its letter: it divides
    /// results by horizon in integers (dq.c:372), so results per ultrapeer is 0 until there
    /// are as many results as ultrapeers reached and every TTL is the largest; and when even
    /// TTL 1 reaches more than needed it falls back to the largest TTL (dq.c:386-387), the
    /// widest query exactly when the fewest results are missing. We divide in floats and take
    /// TTL 1 then.
    fn select_ttl(&self, l: &UpLink<'_>, links_left: usize) -> u8 {
        let needed = self.target.saturating_sub(self.kept_results()).max(1);
        let per_up = f64::from(self.results) / f64::from(self.horizon.max(1));
        let hosts = f64::from(needed) / per_up.max(1e-6) / links_left.max(1) as f64;
        let cap = self.cap(l);
        (1..=cap)
            .rev()
            .find(|&t| f64::from(horizon(l.degree, t)) <= hosts)
            .unwrap_or(1)
    }

    fn step(
        &mut self,
        muid: Guid,
        links: &[UpLink<'_>],
        rng: &mut Rng,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Option<End> {
        if now.saturating_duration_since(self.started) >= MAX_LIFETIME {
            return Some(End::Lifetime);
        }
        let was_waiting = self.waiting;
        if self.waiting {
            self.waiting = false;
            self.status_timeouts = self.status_timeouts.saturating_add(1);
            if !self.got_guidance && self.status_timeouts >= MAX_STATUS_TIMEOUTS {
                self.leaf_guided = false;
            }
        }
        if let Origin::Leaf(leaf) = self.origin
            && !was_waiting
            && self.leaf_guided
            && self.up_sent - self.last_status >= STATUS_EVERY
            && self.new_results >= MIN_FOR_GUIDANCE
            && self.kept_results() < self.target
        {
            out.push(Action::Send {
                to: leaf,
                msg: status_request(muid).into(),
            });
            self.waiting = true;
            self.next = now + STATUS_TIMEOUT;
            return None;
        }
        self.send_next(muid, links, rng, now, out)
    }

    /// Widens by one connection, or says why the query is over.
    fn send_next(
        &mut self,
        muid: Guid,
        links: &[UpLink<'_>],
        rng: &mut Rng,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Option<End> {
        if self.kept_results() >= self.target {
            return Some(End::Enough);
        }
        if self.horizon >= MAX_HORIZON {
            return Some(End::Horizon);
        }
        // gtk-gnutella checks this whether or not the query is guided (dq.c:1520): unguided,
        // the target stops it first.
        if self.results > self.fin {
            return Some(End::TooManyResults);
        }
        if self.up_sent >= MAX_UPS_QUERIED {
            return Some(End::MaxQueried);
        }
        let mut open: Vec<&UpLink<'_>> = links
            .iter()
            .filter(|l| l.writable && !self.queried.contains(&l.id) && !self.has_it.contains(&l.id))
            .collect();
        shuffle(&mut open, rng);
        // Links that can route it first: a matching table or none at all (gtk-gnutella
        // `node_mq_qrp_cmp` with `qrp_node_can_route`; queue sizes we do not know).
        open.sort_by_key(|l| !l.table.is_none_or(|t| self.keys.matches(t)));
        let left = open.len();
        for l in open {
            let ttl = self.select_ttl(l, left);
            if ttl == 1 && l.table.is_some_and(|t| !self.keys.matches(t)) {
                // On its last hop the query would go nowhere.
                continue;
            }
            self.send(muid, l, ttl, out);
            // Rare content: little comes back from a wide horizon, so wait less (dq.c:1653-1660).
            if self.horizon > MIN_HORIZON
                && u64::from(self.kept_results())
                    < u64::from(LOW_RESULTS) * u64::from(self.horizon) / u64::from(MIN_HORIZON)
            {
                self.result_timeout = self
                    .result_timeout
                    .saturating_sub(TIMEOUT_ADJUST)
                    .max(MIN_TIMEOUT);
            }
            self.next = now + self.result_timeout;
            return None;
        }
        Some(End::NoUltrapeerLeft)
    }
}

/// BEAR/11 for `muid`: how many hits did you keep?
pub fn status_request(muid: Guid) -> Vec<u8> {
    vendor(
        muid,
        selector::QUERY_STATUS_REQUEST,
        VendorBody::QueryStatusRequest,
    )
}

/// BEAR/12 for `muid`: we kept `kept` hits (0xFFFF: stop).
pub fn status_response(muid: Guid, kept: u16) -> Vec<u8> {
    vendor(
        muid,
        selector::QUERY_STATUS_RESPONSE,
        VendorBody::QueryStatusResponse { kept },
    )
}

fn vendor(muid: Guid, triple: (crate::wire::VendorCode, u16, u16), body: VendorBody) -> Vec<u8> {
    Descriptor {
        muid,
        ttl: Ttl(1),
        hops: Hops(0),
        payload: Payload::Vendor(VendorMessage::new(triple, body)),
    }
    .to_vec()
}

/// Fisher–Yates with the core's generator, so runs repeat.
fn shuffle<T>(v: &mut [T], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i + 1));
    }
}

#[cfg(test)]
#[path = "dq_tests.rs"]
mod tests;
