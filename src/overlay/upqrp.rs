//! Last-hop QRP between ultrapeers (PROTOCOL.md §6, UPQRP; gtk-gnutella `qrp.c`
//! `qrt_build_query_target`). An ultrapeer sends each neighbour ultrapeer that announced
//! `X-Ultrapeer-Query-Routing` one table, its own words OR every leaf's table, and keeps
//! theirs. A query on its last hop (TTL 1 once forwarded) goes to such a neighbour only when
//! that table matches; neighbours without UP-QRP or without a table yet get everything.
//!
//! Invariants: `sent` holds only live UP-QRP links (entries leave with their link), and a
//! neighbour's copy of our table is exactly `sent[link]`, so a later update is a PATCH of the
//! difference against it (a RESET first only when the size changed).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use log::debug;

use super::{Action, ConnId, Overlay, QueryKeys, raw_descriptor};
use crate::handshake::Role;
use crate::wire::qrp::{QrpReceiver, QrpTable, encode_table};
use crate::wire::{PayloadType, Query};

/// Largest merged table: gtk-gnutella's `MAX_UP_TABLE_SIZE` (128 K slots, `qrp.c`); larger
/// leaf tables are folded down to it. 2^17 bits = 16 KiB per neighbour copy in `sent`.
pub const MAX_UP_TABLE_BITS: u8 = 17;
/// How often the merged table is recomputed and, when it changed, sent: "about every minute"
/// (UPQRP, PROTOCOL.md §6).
pub const UP_QRP_INTERVAL: Duration = Duration::from_secs(60);
/// What we send has LimeWire's infinity 7 in 4-bit entries, as our leaf tables do.
const INFINITY: u8 = 7;
const ENTRY_BITS: u8 = 4;

/// The ultrapeer side of last-hop QRP: our merged table and what each neighbour holds of it.
#[derive(Default)]
pub(super) struct UpQrp {
    /// The table neighbours get. `None` until our own table is known: before the servent has
    /// read its library we have nothing true to say, and neighbours flood us meanwhile.
    merged: Option<QrpTable>,
    /// Our own table or a leaf's changed since `merged` was computed.
    dirty: bool,
    /// When the merged table is next checked; `None` checks at the next tick.
    next_check: Option<Instant>,
    /// The table last sent on each UP-QRP link; at most one entry per ultrapeer link.
    sent: HashMap<ConnId, QrpTable>,
}

/// Our table OR every leaf table, at the largest of their sizes but at most
/// [`MAX_UP_TABLE_BITS`] (gtk-gnutella merges at the largest leaf size, then shrinks to its
/// cap). Tables of other sizes are folded or spread by [`QrpTable::merge`].
pub fn merged_table(own: &QrpTable, leaves: &[&QrpTable]) -> QrpTable {
    let bits = leaves
        .iter()
        .map(|t| t.bits())
        .fold(own.bits(), u8::max)
        .min(MAX_UP_TABLE_BITS);
    let mut t = QrpTable::new(bits);
    t.merge(own);
    for l in leaves {
        t.merge(l);
    }
    t
}

impl Overlay {
    /// The table we last computed for neighbour ultrapeers, if any.
    pub fn merged_table(&self) -> Option<&QrpTable> {
        self.upqrp.merged.as_ref()
    }

    /// Whether link `c` is an ultrapeer that takes and sends last-hop QRP tables with us.
    fn is_up_qrp_link(&self, c: &super::Conn) -> bool {
        self.cfg.role == Role::Ultrapeer && c.info.role == Role::Ultrapeer && c.info.up_qrp
    }

    /// Whether we keep a QRP receiver for a new link: a leaf's table as an ultrapeer, and an
    /// UP-QRP neighbour's.
    pub(super) fn wants_table_from(&self, info: &super::ConnInfo) -> bool {
        self.cfg.role == Role::Ultrapeer
            && (info.role == Role::Leaf || (info.role == Role::Ultrapeer && info.up_qrp))
    }

    /// A leaf's table arrived or went away, or ours changed: recompute at the next check.
    pub(super) fn up_qrp_changed(&mut self) {
        if self.cfg.role == Role::Ultrapeer {
            self.upqrp.dirty = true;
        }
    }

    /// A new link: an UP-QRP neighbour gets our table at once, as gtk-gnutella does.
    pub(super) fn up_qrp_connected(&mut self, id: ConnId, out: &mut Vec<Action>) {
        if self.conns.get(&id).is_some_and(|c| self.is_up_qrp_link(c)) {
            self.refresh_merged();
            self.send_merged(id, out);
        }
    }

    /// A new role: whatever we merged before is stale (the links it was sent on are closing),
    /// so an ultrapeer starts over from its current table and leaves.
    pub(super) fn up_qrp_role_changed(&mut self) {
        self.upqrp = UpQrp {
            dirty: true,
            ..UpQrp::default()
        };
    }

    pub(super) fn up_qrp_closed(&mut self, id: ConnId, was_leaf_with_table: bool) {
        self.upqrp.sent.remove(&id);
        if was_leaf_with_table {
            self.up_qrp_changed();
        }
    }

    /// Every [`Config::up_qrp_interval`](super::Config): recompute the merged table if
    /// something changed, and send each neighbour whose copy differs the patch that brings it
    /// up to date. An unchanged table is never resent.
    pub(super) fn up_qrp_tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.cfg.role != Role::Ultrapeer || self.upqrp.next_check.is_some_and(|t| now < t) {
            return;
        }
        self.upqrp.next_check = Some(now + self.cfg.up_qrp_interval);
        self.refresh_merged();
        let Some(merged) = &self.upqrp.merged else {
            return;
        };
        let stale: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(id, c)| self.is_up_qrp_link(c) && self.upqrp.sent.get(id) != Some(merged))
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.send_merged(id, out);
        }
    }

    fn refresh_merged(&mut self) {
        if !self.upqrp.dirty && self.upqrp.merged.is_some() {
            return;
        }
        let Some(own) = &self.local_table else {
            return;
        };
        let leaves: Vec<&QrpTable> = self
            .conns
            .values()
            .filter(|c| c.info.role == Role::Leaf)
            .filter_map(|c| c.qrp.as_ref().and_then(QrpReceiver::table))
            .collect();
        let t = merged_table(own, &leaves);
        debug!(
            "merged QRP table: {} of {} slots from {} leaf tables",
            t.count(),
            t.slots(),
            leaves.len()
        );
        self.upqrp.merged = Some(t);
        self.upqrp.dirty = false;
    }

    /// Sends `id` what moves its copy of our table to the merged one: a PATCH of the
    /// difference, or RESET + PATCH the first time and whenever the size changed.
    fn send_merged(&mut self, id: ConnId, out: &mut Vec<Action>) {
        let Some(merged) = &self.upqrp.merged else {
            return;
        };
        let prev = self.upqrp.sent.get(&id);
        if prev == Some(merged) {
            return;
        }
        for payload in encode_table(prev, merged, INFINITY, ENTRY_BITS, true) {
            let msg = raw_descriptor(self.rng.guid(), PayloadType::Qrp, 1, 0, &payload);
            out.push(Action::Send { to: id, msg });
        }
        self.upqrp.sent.insert(id, merged.clone());
    }

    /// Whether a query on its last hop may go to ultrapeer link `c`: yes unless it is an UP-QRP
    /// neighbour whose table we hold and which does not match (the same rule as for leaves).
    /// `keys` is filled on first need, since extracting them costs Unicode normalisation.
    pub(super) fn last_hop_passes(
        &self,
        c: &super::Conn,
        q: &Query<'_>,
        keys: &mut Option<QueryKeys>,
    ) -> bool {
        if !self.is_up_qrp_link(c) {
            return true;
        }
        let Some(t) = c.qrp.as_ref().and_then(QrpReceiver::table) else {
            return true;
        };
        keys.get_or_insert_with(|| QueryKeys::of(q)).matches(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::testkit::{self, connect, feed, tick};
    use crate::overlay::{Config, ConnInfo, Event};
    use crate::wire::qrp::QrpMessage;
    use crate::wire::{Guid, HEADER_LEN, ServentId};

    const MINUTE: Duration = Duration::from_secs(60);

    fn info(port: u16, role: Role, up_qrp: bool) -> ConnInfo {
        ConnInfo {
            up_qrp,
            degree: None,
            ..testkit::info(port, role)
        }
    }

    fn table(bits: u8, words: &[&str]) -> QrpTable {
        let mut t = QrpTable::new(bits);
        for w in words {
            t.insert_word(w);
        }
        t
    }

    /// An ultrapeer sharing `own` (when given), with no links yet.
    fn ultrapeer(own: Option<&[&str]>, now: Instant) -> Overlay {
        let mut cfg = Config::new(Role::Ultrapeer, ServentId([0xAA; 16]));
        cfg.accept_private = true;
        let mut o = Overlay::new(cfg, now);
        if let Some(words) = own {
            o.set_local_table(table(16, words), &mut Vec::new());
        }
        o
    }

    /// Link `id` sends us `t` as RESET + PATCH, as a peer would.
    fn send_table(o: &mut Overlay, id: ConnId, t: &QrpTable, now: Instant) {
        for p in encode_table(None, t, 7, 4, true) {
            let msg = raw_descriptor(Guid([id as u8; 16]), PayloadType::Qrp, 1, 0, &p);
            let out = feed(o, id, &msg, now);
            assert!(
                !out.iter().any(|a| matches!(a, Action::Close { .. })),
                "table refused: {out:?}"
            );
        }
    }

    /// The QRP payloads sent to `to`, in order.
    fn qrp_to(out: &[Action], to: ConnId) -> Vec<Vec<u8>> {
        out.iter()
            .filter_map(|a| match a {
                Action::Send { to: t, msg } if *t == to && msg[16] == 0x30 => {
                    Some(msg[HEADER_LEN..].to_vec())
                }
                _ => None,
            })
            .collect()
    }

    /// Feeds QRP payloads to a receiver as the neighbour would; true when a table completed.
    fn apply(rx: &mut QrpReceiver, payloads: &[Vec<u8>]) -> bool {
        let mut done = false;
        for p in payloads {
            match QrpMessage::decode(p).expect("our QRP decodes") {
                QrpMessage::Reset(r) => rx.reset(&r),
                QrpMessage::Patch(p) => done = rx.patch(&p).expect("our patch applies"),
            }
        }
        done
    }

    fn query(muid: u8, ttl: u8, criteria: &str) -> Vec<u8> {
        let mut p = vec![0x00, 0x80];
        p.extend_from_slice(criteria.as_bytes());
        p.push(0);
        raw_descriptor(Guid([muid; 16]), PayloadType::Query, ttl, 0, &p).to_vec()
    }

    /// (link, TTL) of every query sent.
    fn queries_sent(out: &[Action]) -> Vec<(ConnId, u8)> {
        let mut v: Vec<(ConnId, u8)> = out
            .iter()
            .filter_map(|a| match a {
                Action::Send { to, msg } if msg[16] == 0x80 => Some((*to, msg[17])),
                _ => None,
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn leaf_tables_of_any_size_are_merged_with_ours_up_to_the_cap() {
        let own = table(16, &["alpha"]);
        let small = table(14, &["bravo"]);
        let large = table(20, &["charlie"]);
        let t = merged_table(&own, &[&small, &large]);
        assert_eq!(t.bits(), MAX_UP_TABLE_BITS, "largest size, capped");
        for w in ["alpha", "bravo", "charlie"] {
            assert!(t.contains_word(w), "{w} lost in the merge");
        }
        assert!(!t.contains_word("zulu"));
        // A 2^16 slot spreads over 2 slots of 2^17, a 2^14 slot over 8; a 2^20 slot folds
        // into one.
        assert_eq!(t.count(), 2 + 8 + 1);
        let same = merged_table(&own, &[&table(16, &["delta"])]);
        assert_eq!(same.bits(), 16);
        assert_eq!(same.count(), 2);
    }

    #[test]
    fn our_table_goes_to_an_up_qrp_neighbour_on_connect_and_nowhere_else() {
        let now = Instant::now();
        let mut o = ultrapeer(Some(&["alpha"]), now);
        let out = connect(&mut o, 1, info(1001, Role::Ultrapeer, true), now);
        let sent = qrp_to(&out, 1);
        assert_eq!(sent[0][0], 0, "RESET first");
        let mut rx = QrpReceiver::new();
        assert!(apply(&mut rx, &sent));
        let got = rx.table().unwrap();
        assert!(got.contains_word("alpha") && !got.contains_word("bravo"));
        assert_eq!(Some(got), o.merged_table());
        let out = connect(&mut o, 2, info(1002, Role::Ultrapeer, false), now);
        assert!(qrp_to(&out, 2).is_empty(), "no UP-QRP, no table");
        let out = connect(&mut o, 3, info(1003, Role::Leaf, true), now);
        assert!(qrp_to(&out, 3).is_empty(), "leaves get no table from us");
    }

    #[test]
    fn before_our_library_is_known_no_table_is_sent() {
        let now = Instant::now();
        let mut o = ultrapeer(None, now);
        let out = connect(&mut o, 1, info(1001, Role::Ultrapeer, true), now);
        assert!(qrp_to(&out, 1).is_empty());
        assert!(qrp_to(&tick(&mut o, now + MINUTE), 1).is_empty());
    }

    #[test]
    fn a_changed_table_is_patched_at_the_next_check_and_an_unchanged_one_never_resent() {
        let t0 = Instant::now();
        let mut o = ultrapeer(Some(&["alpha"]), t0);
        let mut rx = QrpReceiver::new();
        assert!(apply(
            &mut rx,
            &qrp_to(
                &connect(&mut o, 1, info(1001, Role::Ultrapeer, true), t0),
                1
            )
        ));
        connect(&mut o, 2, info(1002, Role::Leaf, false), t0);
        // The first tick checks at once: nothing changed, nothing sent.
        assert!(qrp_to(&tick(&mut o, t0), 1).is_empty());
        send_table(&mut o, 2, &table(16, &["bravo"]), t0);
        // Not before the interval is over…
        assert!(qrp_to(&tick(&mut o, t0 + MINUTE / 2), 1).is_empty());
        // …then a PATCH of the difference, without a RESET.
        let patch = qrp_to(&tick(&mut o, t0 + MINUTE), 1);
        assert!(
            !patch.is_empty() && patch.iter().all(|p| p[0] == 1),
            "{patch:?}"
        );
        assert!(apply(&mut rx, &patch));
        let got = rx.table().unwrap();
        assert!(got.contains_word("alpha") && got.contains_word("bravo"));
        // Unchanged: never resent, however many checks pass.
        for k in 2..5 {
            assert!(qrp_to(&tick(&mut o, t0 + MINUTE * k), 1).is_empty());
        }
        // The leaf leaves: its words leave our table at the next check.
        o.handle(Event::Closed { id: 2 }, t0 + MINUTE * 5, &mut Vec::new());
        let patch = qrp_to(&tick(&mut o, t0 + MINUTE * 6), 1);
        assert!(apply(&mut rx, &patch));
        let got = rx.table().unwrap();
        assert!(got.contains_word("alpha") && !got.contains_word("bravo"));
    }

    #[test]
    fn our_own_new_words_reach_neighbours_at_the_next_check() {
        let t0 = Instant::now();
        let mut o = ultrapeer(Some(&["alpha"]), t0);
        let mut rx = QrpReceiver::new();
        apply(
            &mut rx,
            &qrp_to(
                &connect(&mut o, 1, info(1001, Role::Ultrapeer, true), t0),
                1,
            ),
        );
        tick(&mut o, t0);
        o.set_local_table(table(16, &["alpha", "echo"]), &mut Vec::new());
        assert!(apply(&mut rx, &qrp_to(&tick(&mut o, t0 + MINUTE), 1)));
        assert!(rx.table().unwrap().contains_word("echo"));
    }

    /// An ultrapeer with source link 1 and ultrapeer links 2 (table: "free music"), 3 (table:
    /// "other words"), 4 (UP-QRP, no table yet) and 5 (no UP-QRP).
    fn routing_node(now: Instant) -> Overlay {
        let mut o = ultrapeer(Some(&[]), now);
        connect(&mut o, 1, info(1001, Role::Ultrapeer, true), now);
        connect(&mut o, 2, info(1002, Role::Ultrapeer, true), now);
        connect(&mut o, 3, info(1003, Role::Ultrapeer, true), now);
        connect(&mut o, 4, info(1004, Role::Ultrapeer, true), now);
        connect(&mut o, 5, info(1005, Role::Ultrapeer, false), now);
        send_table(&mut o, 2, &table(16, &["free", "music"]), now);
        send_table(&mut o, 3, &table(16, &["other", "words"]), now);
        o
    }

    #[test]
    fn a_last_hop_query_goes_only_to_matching_tables_and_to_ups_without_one() {
        let now = Instant::now();
        let mut o = routing_node(now);
        let out = feed(&mut o, 1, &query(1, 2, "free music"), now);
        assert_eq!(queries_sent(&out), vec![(2, 1), (4, 1), (5, 1)]);
        let out = feed(&mut o, 1, &query(2, 2, "other words"), now);
        assert_eq!(queries_sent(&out), vec![(3, 1), (4, 1), (5, 1)]);
        let out = feed(&mut o, 1, &query(3, 2, "nothing matches"), now);
        assert_eq!(queries_sent(&out), vec![(4, 1), (5, 1)]);
    }

    #[test]
    fn a_query_with_hops_left_after_the_next_is_flooded_whatever_the_tables() {
        let now = Instant::now();
        let mut o = routing_node(now);
        let out = feed(&mut o, 1, &query(1, 3, "nothing matches"), now);
        assert_eq!(queries_sent(&out), vec![(2, 2), (3, 2), (4, 2), (5, 2)]);
    }

    #[test]
    fn a_last_hop_sha1_query_passes_a_table_holding_its_urn() {
        let now = Instant::now();
        let mut o = routing_node(now);
        let urn = "urn:sha1:E7VDKBCPNJOGKNBVDKX2EWJI4EHY7BKI";
        send_table(&mut o, 3, &table(16, &["other", urn]), now);
        let mut p = vec![0x00, 0x80, b'\\', 0];
        p.extend_from_slice(urn.as_bytes());
        p.push(0);
        let q = raw_descriptor(Guid([9; 16]), PayloadType::Query, 2, 0, &p);
        let out = feed(&mut o, 1, &q, now);
        assert_eq!(queries_sent(&out), vec![(3, 1), (4, 1), (5, 1)]);
    }

    #[test]
    fn our_own_ttl_1_search_is_routed_by_the_neighbours_tables() {
        let now = Instant::now();
        let mut o = routing_node(now);
        // Flooded, as when dynamic querying is off or its table is full (the dynamic query's
        // probe is the next test).
        o.cfg.dynamic_query = false;
        let mut out = Vec::new();
        o.search(b"\x00\x80other words\x00", 1, now, &mut out);
        assert_eq!(queries_sent(&out), vec![(1, 1), (3, 1), (4, 1), (5, 1)]);
        let mut out = Vec::new();
        o.search(b"\x00\x80other words\x00", 2, now, &mut out);
        assert_eq!(queries_sent(&out).len(), 5, "TTL 2 goes to every ultrapeer");
    }

    #[test]
    fn a_dynamic_query_probes_with_ttl_1_only_the_ultrapeers_whose_tables_match() {
        let now = Instant::now();
        let mut o = routing_node(now);
        let mut out = Vec::new();
        o.search(b"\x00\x80other words\x00", 3, now, &mut out);
        assert_eq!(queries_sent(&out), vec![(3, 1)]);
        let mut out = Vec::new();
        o.search(b"\x00\x80nothing matches\x00", 3, now, &mut out);
        let probe = queries_sent(&out);
        assert_eq!(
            probe.len(),
            3,
            "no table matches: TTL 2 to three ultrapeers"
        );
        assert!(probe.iter().all(|&(_, ttl)| ttl == 2));
    }

    #[test]
    fn a_leaf_promoted_to_ultrapeer_sends_its_table_to_up_qrp_neighbours() {
        let now = Instant::now();
        let mut cfg = Config::new(Role::Leaf, ServentId([0xAA; 16]));
        cfg.accept_private = true;
        let mut o = Overlay::new(cfg, now);
        o.set_local_table(table(16, &["alpha"]), &mut Vec::new());
        assert!(o.merged_table().is_none(), "a leaf merges nothing");
        o.switch_role(Role::Ultrapeer, "test".into(), now, &mut Vec::new());
        let out = connect(&mut o, 1, info(1001, Role::Ultrapeer, true), now);
        let mut rx = QrpReceiver::new();
        assert!(apply(&mut rx, &qrp_to(&out, 1)));
        assert!(rx.table().unwrap().contains_word("alpha"));
    }

    #[test]
    fn a_leaf_never_filters_by_its_ultrapeers_tables() {
        let now = Instant::now();
        let mut cfg = Config::new(Role::Leaf, ServentId([0xAA; 16]));
        cfg.accept_private = true;
        let mut o = Overlay::new(cfg, now);
        o.set_local_table(table(16, &["alpha"]), &mut Vec::new());
        let out = connect(&mut o, 1, info(1001, Role::Ultrapeer, true), now);
        assert_eq!(qrp_to(&out, 1)[0][0], 0, "a leaf sends its own table");
        // An ultrapeer's table sent to a leaf is ignored, and the search still goes out.
        send_table(&mut o, 1, &table(16, &["other"]), now);
        let mut out = Vec::new();
        o.search(b"\x00\x80alpha\x00", 1, now, &mut out);
        assert_eq!(queries_sent(&out), vec![(1, 1)]);
        assert!(o.merged_table().is_none());
    }
}
