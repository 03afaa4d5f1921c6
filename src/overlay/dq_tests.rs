//! Dynamic querying through the whole core: events in, descriptors out, time passed by hand.

use std::time::{Duration, Instant};

use super::super::testkit::{feed, info, link_all, tick};
use super::super::{Action, Config, ConnId, Event, Overlay};
use super::{
    End, MAX_UPS_QUERIED, PROBE_TIMEOUT, QUERY_TIMEOUT, STATUS_TIMEOUT, horizon, status_request,
    status_response,
};
use crate::handshake::Role;
use crate::wire::{
    Descriptor, FileIndex, Framed, Guid, Hops, Payload, Query, QueryFlags, QueryHit, Results,
    ResultsBuilder, ServentId, Text, Trailer, Ttl, VendorBody, frame,
};

/// What gtk-gnutella waits after probing three ultrapeers: 3 × (1.5 s + 3.7 s).
const PROBE_WAIT: Duration =
    Duration::from_millis(3 * (PROBE_TIMEOUT.as_millis() + QUERY_TIMEOUT.as_millis()) as u64);

/// A node of `role` with `ups` ultrapeer links (ids 1..=ups) then `leaves` leaf links.
fn node(role: Role, ups: u64, leaves: u64, now: Instant) -> Overlay {
    let mut cfg = Config::new(role, ServentId([0xAA; 16]));
    cfg.accept_private = true;
    cfg.max_ultrapeers = 200;
    let mut o = Overlay::new(cfg, now);
    link_all(&mut o, ups, leaves, now, info);
    o
}

/// Queries sent: (link, TTL, hops).
fn queries(out: &[Action]) -> Vec<(ConnId, u8, u8)> {
    let mut v: Vec<_> = out
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, msg } if msg[16] == 0x80 => Some((*to, msg[17], msg[18])),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn vendor_bodies(out: &[Action]) -> Vec<(ConnId, [u8; 16], VendorBody<'static>)> {
    out.iter()
        .filter_map(|a| match a {
            Action::Send { to, msg } if msg[16] == 0x31 => {
                let Ok(Framed::Frame(f)) = frame(msg) else {
                    return None;
                };
                let Payload::Vendor(v) = Descriptor::decode(&f).ok()?.payload else {
                    return None;
                };
                let body = match v.body {
                    VendorBody::QueryStatusRequest => VendorBody::QueryStatusRequest,
                    VendorBody::QueryStatusResponse { kept } => {
                        VendorBody::QueryStatusResponse { kept }
                    }
                    _ => return None,
                };
                let mut m = [0u8; 16];
                m.copy_from_slice(&msg[..16]);
                Some((*to, m, body))
            }
            _ => None,
        })
        .collect()
}

fn query_payload(flags: u16) -> Vec<u8> {
    let mut p = Vec::new();
    Query {
        flags: QueryFlags(flags),
        criteria: Text(b"free music"),
        extensions: Default::default(),
    }
    .encode(&mut p);
    p
}

fn leaf_query(muid: Guid, flags: u16, ttl: u8) -> Vec<u8> {
    Descriptor {
        muid,
        ttl: Ttl(ttl),
        hops: Hops(0),
        payload: Payload::Query(Query::decode(&query_payload(flags)).unwrap()),
    }
    .to_vec()
}

/// A hit for `muid` holding `n` results.
fn hit(muid: Guid, n: u8) -> Vec<u8> {
    let mut r = ResultsBuilder::new();
    for i in 0..n {
        r.push(
            FileIndex(u32::from(i)),
            10,
            &format!("free music {i}.ogg"),
            b"",
        );
    }
    Descriptor {
        muid,
        ttl: Ttl(5),
        hops: Hops(1),
        payload: Payload::QueryHit(QueryHit {
            addr: "10.1.1.1:6346".parse().unwrap(),
            speed: 100,
            results: Results::from_bytes(r.bytes(), r.count()).unwrap(),
            trailer: Trailer::None,
            servent: ServentId([0x55; 16]),
        }),
    }
    .to_vec()
}

#[test]
fn the_horizon_follows_the_degree_and_ttl_formula() {
    assert_eq!(horizon(32, 1), 1);
    // (1 + 31) × 0.8 = 25.6
    assert_eq!(horizon(32, 2), 25);
    // (1 + 31 + 961) × 0.64 = 635.5
    assert_eq!(horizon(32, 3), 635);
    assert_eq!(horizon(6, 4), ((1 + 5 + 25 + 125) as f64 * 0.512) as u32);
}

#[test]
fn a_probe_that_brings_enough_results_sends_nothing_more() {
    let t0 = Instant::now();
    let mut o = node(Role::Ultrapeer, 6, 0, t0);
    let mut out = Vec::new();
    let muid = o.search(&query_payload(0x8000), 4, t0, &mut out);
    let probe = queries(&out);
    assert_eq!(probe.len(), 3, "three ultrapeers probed, not all six");
    assert!(probe.iter().all(|&(_, ttl, hops)| ttl == 2 && hops == 0));
    for _ in 0..2 {
        feed(&mut o, probe[0].0, &hit(muid, 75), t0);
    }
    let mut t = t0;
    for _ in 0..100 {
        t += Duration::from_secs(5);
        assert!(
            queries(&tick(&mut o, t)).is_empty(),
            "nothing after the probe"
        );
    }
    assert_eq!(o.dynamic_queries(), 0);
    assert_eq!(o.dq_ended(), &[(muid, End::Enough)]);
}

#[test]
fn a_dynamic_query_widens_one_link_at_a_time_with_the_computed_ttl() {
    let t0 = Instant::now();
    let mut o = node(Role::Ultrapeer, 6, 0, t0);
    let mut out = Vec::new();
    let muid = o.search(&query_payload(0x8000), 4, t0, &mut out);
    let probe = queries(&out);
    assert_eq!(probe.len(), 3);
    // 30 results from a horizon of 3 × 25 ultrapeers: 0.4 per ultrapeer, so 120 more need
    // 300 ultrapeers, 100 through each of the 3 links left. TTL 2 reaches 25, TTL 3 635:
    // gtk-gnutella takes the largest TTL that does not overshoot, 2 (we used to take 3).
    feed(&mut o, probe[0].0, &hit(muid, 30), t0);
    assert!(queries(&tick(&mut o, t0 + PROBE_WAIT - Duration::from_millis(1))).is_empty());
    let t1 = t0 + PROBE_WAIT;
    let first = queries(&tick(&mut o, t1));
    assert_eq!(first.len(), 1, "one link at a time: {first:?}");
    assert_eq!((first[0].1, first[0].2), (2, 0));
    assert!(probe.iter().all(|p| p.0 != first[0].0), "a new link");
    // It waits 3.7 s whatever the TTL before the next one.
    assert!(queries(&tick(&mut o, t1 + QUERY_TIMEOUT - Duration::from_millis(1))).is_empty());
    let t2 = t1 + QUERY_TIMEOUT;
    let second = queries(&tick(&mut o, t2));
    assert_eq!(second.len(), 1);
    assert_ne!(second[0].0, first[0].0);
    // Results so far: 30 from 75 + 25 ultrapeers, 0.3 each; 120 more need 400, 200 per link.
    assert_eq!(second[0].1, 2);
    let t3 = t2 + QUERY_TIMEOUT;
    let third = queries(&tick(&mut o, t3));
    assert_eq!(third.len(), 1);
    // No link left after the sixth: the query ends.
    let end = queries(&tick(&mut o, t3 + QUERY_TIMEOUT));
    assert!(end.is_empty());
    assert_eq!(o.dynamic_queries(), 0);
    assert_eq!(o.dq_ended(), &[(muid, End::NoUltrapeerLeft)]);
}

#[test]
fn the_ttl_is_rounded_down_not_up() {
    let t0 = Instant::now();
    let mut o = node(Role::Ultrapeer, 6, 0, t0);
    let mut out = Vec::new();
    let muid = o.search(&query_payload(0x8000), 4, t0, &mut out);
    let probe = queries(&out);
    // 3 results from 75 ultrapeers: 147 more need 3675, 1225 per link left. TTL 3 reaches
    // 635, TTL 4 15,761: TTL 3, where the smallest sufficient TTL would be 4.
    feed(&mut o, probe[0].0, &hit(muid, 3), t0);
    let first = queries(&tick(&mut o, t0 + PROBE_WAIT));
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].1, 3);
}

#[test]
fn when_even_ttl_1_overshoots_the_query_goes_on_with_ttl_1() {
    let t0 = Instant::now();
    let mut o = node(Role::Ultrapeer, 6, 0, t0);
    let mut out = Vec::new();
    let muid = o.search(&query_payload(0x8000), 4, t0, &mut out);
    let probe = queries(&out);
    // 148 of 150 from 75 ultrapeers: the 2 missing need about one ultrapeer, a third of
    // one per link. gtk-gnutella would fall back to its largest TTL here (dq.c:386).
    feed(&mut o, probe[0].0, &hit(muid, 148), t0);
    let first = queries(&tick(&mut o, t0 + PROBE_WAIT));
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].1, 1);
}

#[test]
fn a_dynamic_query_skips_ultrapeers_that_sent_it_the_query() {
    let t0 = Instant::now();
    let mut o = node(Role::Ultrapeer, 4, 1, t0);
    let muid = Guid([0x46; 16]);
    let probe = queries(&feed(&mut o, 5, &leaf_query(muid, 0x8000, 3), t0));
    assert_eq!(probe.len(), 3);
    let rest = (1..=4).find(|l| probe.iter().all(|p| p.0 != *l)).unwrap();
    // The one ultrapeer not probed got the query another way and relays it to us.
    let mut dup = leaf_query(muid, 0x8000, 1);
    dup[18] = 3;
    assert!(queries(&feed(&mut o, rest, &dup, t0)).is_empty());
    assert!(queries(&tick(&mut o, t0 + PROBE_WAIT)).is_empty());
    assert_eq!(o.dq_ended(), &[(muid, End::NoUltrapeerLeft)]);
}

#[test]
fn a_dynamic_query_stops_after_50_ultrapeers() {
    let t0 = Instant::now();
    let mut o = node(Role::Ultrapeer, 60, 1, t0);
    let muid = Guid([0x47; 16]);
    let mut sent = queries(&feed(&mut o, 61, &leaf_query(muid, 0x8000, 3), t0)).len();
    let mut t = t0;
    while o.dynamic_queries() > 0 && t < t0 + super::MAX_LIFETIME {
        t += Duration::from_millis(500);
        sent += queries(&tick(&mut o, t)).len();
    }
    assert_eq!(sent, MAX_UPS_QUERIED as usize);
    assert_eq!(o.dq_ended(), &[(muid, End::MaxQueried)]);
}

#[test]
fn a_leaf_guided_query_stops_when_the_leaf_says_so() {
    let t0 = Instant::now();
    let mut o = node(Role::Ultrapeer, 8, 1, t0);
    let leaf = 9;
    let muid = Guid([0x42; 16]);
    let out = feed(&mut o, leaf, &leaf_query(muid, 0x8000 | 0x1000, 3), t0);
    let probe = queries(&out);
    assert_eq!(probe.len(), 3);
    assert!(
        probe.iter().all(|&(_, ttl, hops)| ttl == 2 && hops == 1),
        "relayed for the leaf: {probe:?}"
    );
    // 25 results routed back to the leaf: enough new ones to ask it what it kept.
    let back = feed(&mut o, probe[0].0, &hit(muid, 25), t0);
    assert!(
        back.iter()
            .any(|a| matches!(a, Action::Send { to, msg } if *to == leaf && msg[16] == 0x81))
    );
    let ask = tick(&mut o, t0 + PROBE_WAIT);
    assert!(queries(&ask).is_empty(), "asks before widening");
    assert_eq!(
        vendor_bodies(&ask),
        vec![(leaf, muid.0, VendorBody::QueryStatusRequest)]
    );
    let out = feed(
        &mut o,
        leaf,
        &status_response(muid, 0xFFFF),
        t0 + PROBE_WAIT,
    );
    assert!(queries(&out).is_empty());
    assert_eq!(o.dynamic_queries(), 0);
    assert_eq!(o.dq_ended(), &[(muid, End::Stopped)]);
    let mut t = t0 + PROBE_WAIT;
    for _ in 0..30 {
        t += Duration::from_secs(10);
        assert!(queries(&tick(&mut o, t)).is_empty());
    }
}

#[test]
fn an_unanswered_status_request_times_out_and_the_query_goes_on() {
    let t0 = Instant::now();
    let mut o = node(Role::Ultrapeer, 8, 1, t0);
    let muid = Guid([0x43; 16]);
    let probe = queries(&feed(&mut o, 9, &leaf_query(muid, 0x9000, 3), t0));
    feed(&mut o, probe[0].0, &hit(muid, 25), t0);
    assert_eq!(vendor_bodies(&tick(&mut o, t0 + PROBE_WAIT)).len(), 1);
    let t1 = t0 + PROBE_WAIT + STATUS_TIMEOUT;
    assert!(queries(&tick(&mut o, t1 - Duration::from_millis(1))).is_empty());
    assert_eq!(
        queries(&tick(&mut o, t1)).len(),
        1,
        "widens without the answer"
    );
}

#[test]
fn the_lifetime_cap_ends_a_query_that_is_still_going() {
    let t0 = Instant::now();
    // A guided query whose leaf answers each status request just before it times out,
    // keeping nothing: three ultrapeers per ~47 s, fewer than 50 in ten minutes.
    let mut o = node(Role::Ultrapeer, 60, 1, t0);
    let leaf = 61;
    let muid = Guid([0x44; 16]);
    let probe = queries(&feed(&mut o, leaf, &leaf_query(muid, 0x9000, 3), t0));
    let mut sent = probe.len();
    let mut t = t0;
    while t < t0 + Duration::from_secs(700) {
        t += Duration::from_millis(500);
        let out = tick(&mut o, t);
        let q = queries(&out);
        assert!(q.len() <= 1);
        assert!(
            q.is_empty() || t < t0 + super::MAX_LIFETIME,
            "nothing after ten minutes"
        );
        for s in &q {
            feed(&mut o, s.0, &hit(muid, 7), t);
        }
        sent += q.len();
        if !vendor_bodies(&out).is_empty() {
            t += STATUS_TIMEOUT - Duration::from_secs(1);
            let kept = status_response(muid, 0);
            sent += queries(&feed(&mut o, leaf, &kept, t)).len();
        }
    }
    assert!(sent < 50, "stopped before the 50-ultrapeer cap: {sent}");
    assert_eq!(o.dq_ended(), &[(muid, End::Lifetime)]);
}

#[test]
fn queries_from_other_ultrapeers_are_still_flooded() {
    let t0 = Instant::now();
    let mut o = node(Role::Ultrapeer, 5, 0, t0);
    let out = feed(&mut o, 1, &leaf_query(Guid([0x45; 16]), 0x8000, 3), t0);
    assert_eq!(
        queries(&out),
        vec![(2, 2, 1), (3, 2, 1), (4, 2, 1), (5, 2, 1)]
    );
    assert_eq!(o.dynamic_queries(), 0);
}

#[test]
fn beyond_the_cap_queries_are_flooded_as_before() {
    let t0 = Instant::now();
    let mut cfg = Config::new(Role::Ultrapeer, ServentId([0xAB; 16]));
    cfg.max_dqs = 1;
    let mut o = Overlay::new(cfg, t0);
    let mut out = Vec::new();
    for id in 1..=5 {
        let role = if id <= 4 { Role::Ultrapeer } else { Role::Leaf };
        o.handle(
            Event::Connected {
                id,
                info: info(id as u16 + 2000, role),
            },
            t0,
            &mut out,
        );
    }
    let first = feed(&mut o, 5, &leaf_query(Guid([1; 16]), 0x8000, 3), t0);
    assert_eq!(queries(&first).len(), 3);
    let second = feed(&mut o, 5, &leaf_query(Guid([2; 16]), 0x8000, 3), t0);
    assert_eq!(queries(&second).len(), 4);
    assert_eq!(o.dynamic_queries(), 1);
}

#[test]
fn a_leaf_marks_its_queries_guided_and_reports_what_it_kept() {
    let t0 = Instant::now();
    let mut o = node(Role::Leaf, 2, 0, t0);
    let mut out = Vec::new();
    let muid = o.search(&query_payload(0x8000), 3, t0, &mut out);
    let sent: Vec<&[u8]> = out
        .iter()
        .filter_map(|a| match a {
            Action::Send { msg, .. } if msg[16] == 0x80 => Some(&msg[..]),
            _ => None,
        })
        .collect();
    assert_eq!(sent.len(), 2, "to both ultrapeers at once, as before");
    let flags = u16::from_be_bytes([sent[0][23], sent[0][24]]);
    assert_eq!(flags, 0x8000 | QueryFlags::LEAF_GUIDED);
    feed(&mut o, 1, &hit(muid, 7), t0);
    feed(&mut o, 2, &hit(muid, 5), t0);
    let ask = status_request(muid);
    assert_eq!(
        vendor_bodies(&feed(&mut o, 1, &ask, t0)),
        vec![(1, muid.0, VendorBody::QueryStatusResponse { kept: 12 })]
    );
    o.set_search_kept(muid, 4);
    assert_eq!(
        vendor_bodies(&feed(&mut o, 2, &ask, t0)),
        vec![(2, muid.0, VendorBody::QueryStatusResponse { kept: 4 })]
    );
    o.stop_search(muid);
    assert_eq!(
        vendor_bodies(&feed(&mut o, 1, &ask, t0)),
        vec![(1, muid.0, VendorBody::QueryStatusResponse { kept: 0xFFFF })]
    );
    let unknown = status_request(Guid([9; 16]));
    assert_eq!(
        vendor_bodies(&feed(&mut o, 1, &unknown, t0)),
        vec![(1, [9; 16], VendorBody::QueryStatusResponse { kept: 0xFFFF })]
    );
}

#[test]
fn our_own_search_goes_at_once_to_the_leaves_whose_tables_match() {
    let t0 = Instant::now();
    let mut o = node(Role::Ultrapeer, 4, 2, t0);
    let mut t = crate::wire::qrp::QrpTable::new(16);
    for w in ["free", "music"] {
        t.insert_word(w);
    }
    for payload in crate::wire::qrp::encode_table(None, &t, 7, 4, true) {
        let d = super::super::raw_descriptor(
            Guid([7; 16]),
            crate::wire::PayloadType::Qrp,
            1,
            0,
            &payload,
        );
        feed(&mut o, 5, &d, t0);
    }
    let mut out = Vec::new();
    o.search(&query_payload(0x8000), 4, t0, &mut out);
    let sent = queries(&out);
    // Leaf 5 matches, leaf 6 sent no table; 3 of the 4 ultrapeers are probed.
    assert!(sent.contains(&(5, 0, 1)), "{sent:?}");
    assert!(sent.iter().all(|s| s.0 != 6));
    assert_eq!(sent.iter().filter(|s| s.0 <= 4).count(), 3);
}
