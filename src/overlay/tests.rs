use super::testkit::{self, feed, tick};
use super::*;
use crate::wire::{Framed, Query, QueryFlags, QueryHit, Text, Trailer, frame};

fn now0() -> Instant {
    Instant::now()
}

/// Ultrapeers here speak UP-QRP.
fn info(port: u16, role: Role) -> ConnInfo {
    ConnInfo {
        up_qrp: role == Role::Ultrapeer,
        ..testkit::info(port, role)
    }
}

/// An ultrapeer with `n` ultrapeer links (ids 1..=n) and, after them, `leaves` leaf links.
fn node(role: Role, n: u64, leaves: u64, now: Instant) -> Overlay {
    let mut cfg = Config::new(role, ServentId([0xAA; 16]));
    cfg.accept_private = true;
    cfg.advertise = Some("127.0.0.1:6346".parse().unwrap());
    let mut o = Overlay::new(cfg, now);
    testkit::link_all(&mut o, n, leaves, now, info);
    o
}

fn query(muid: u8, ttl: u8, hops: u8) -> Vec<u8> {
    Descriptor {
        muid: Guid([muid; 16]),
        ttl: Ttl(ttl),
        hops: Hops(hops),
        payload: Payload::Query(Query {
            flags: QueryFlags(0x8000),
            criteria: Text(b"free music"),
            extensions: Default::default(),
        }),
    }
    .to_vec()
}

fn hit(muid: u8, servent: u8) -> Vec<u8> {
    Descriptor {
        muid: Guid([muid; 16]),
        ttl: Ttl(3),
        hops: Hops(0),
        payload: Payload::QueryHit(QueryHit {
            addr: "127.0.0.1:7000".parse().unwrap(),
            speed: 100,
            results: crate::wire::Results::from_bytes(&[], 0).unwrap(),
            trailer: Trailer::None,
            servent: ServentId([servent; 16]),
        }),
    }
    .to_vec()
}

fn sent(out: &[Action]) -> Vec<(ConnId, u8, u8, u8)> {
    out.iter()
        .filter_map(|a| match a {
            Action::Send { to, msg } => Some((*to, msg[16], msg[17], msg[18])),
            _ => None,
        })
        .collect()
}

fn closes(out: &[Action]) -> Vec<(ConnId, Option<u16>)> {
    out.iter()
        .filter_map(|a| match a {
            Action::Close { id, bye } => Some((*id, bye.as_ref().map(|b| b.0))),
            _ => None,
        })
        .collect()
}

#[test]
fn query_is_flooded_to_every_other_ultrapeer_with_ttl_down_and_hops_up() {
    let now = now0();
    let mut o = node(Role::Ultrapeer, 3, 0, now);
    let out = feed(&mut o, 1, &query(1, 3, 0), now);
    let mut s = sent(&out);
    s.sort();
    assert_eq!(s, vec![(2, 0x80, 2, 1), (3, 0x80, 2, 1)]);
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Deliver(Delivery::Query { from: 1, .. })))
    );
}

#[test]
fn duplicate_query_is_dropped_even_from_another_link() {
    let now = now0();
    let mut o = node(Role::Ultrapeer, 3, 0, now);
    feed(&mut o, 1, &query(1, 3, 0), now);
    let out = feed(&mut o, 2, &query(1, 3, 0), now);
    assert!(out.is_empty());
    assert_eq!(o.stats().duplicates, 1);
}

#[test]
fn ttl_is_trimmed_to_max_ttl_minus_hops_and_ttl_one_is_not_forwarded() {
    let now = now0();
    let mut o = node(Role::Ultrapeer, 2, 0, now);
    // hops 2 + ttl 7 > 4: trimmed to 2, forwarded with 1.
    let out = feed(&mut o, 1, &query(1, 7, 2), now);
    assert_eq!(sent(&out), vec![(2, 0x80, 1, 3)]);
    let out = feed(&mut o, 1, &query(2, 1, 0), now);
    assert!(sent(&out).is_empty());
    assert_eq!(out.len(), 1, "delivered locally only");
    // Over the hard limit: not even delivered.
    let out = feed(&mut o, 1, &query(3, 14, 2), now);
    assert!(out.is_empty());
    assert_eq!(o.stats().dropped_ttl, 1);
}

#[test]
fn ttl_zero_is_dropped_by_an_ultrapeer_but_a_leaf_takes_it_from_its_ultrapeer() {
    let now = now0();
    let mut up = node(Role::Ultrapeer, 2, 0, now);
    assert!(feed(&mut up, 1, &query(1, 0, 1), now).is_empty());
    let mut leaf = node(Role::Leaf, 1, 0, now);
    let out = feed(&mut leaf, 1, &query(1, 0, 1), now);
    assert!(matches!(out[..], [Action::Deliver(Delivery::Query { .. })]));
}

#[test]
fn a_leaf_never_forwards_and_a_leaf_relaying_is_dropped_with_414() {
    let now = now0();
    let mut leaf = node(Role::Leaf, 2, 0, now);
    let out = feed(&mut leaf, 1, &query(1, 3, 1), now);
    assert!(sent(&out).is_empty());
    let mut up = node(Role::Ultrapeer, 1, 1, now);
    let out = feed(&mut up, 2, &query(2, 3, 1), now);
    assert_eq!(closes(&out), vec![(2, Some(414))]);
    // A leaf's own query (hops 0) is fine; queries are not flooded to leaves before QRP.
    let out = feed(&mut up, 2, &query(3, 3, 0), now);
    assert_eq!(sent(&out), vec![(1, 0x80, 2, 1)]);
}

#[test]
fn hit_goes_back_only_along_the_reverse_path_and_unknown_ones_are_dropped() {
    let now = now0();
    let mut o = node(Role::Ultrapeer, 3, 0, now);
    feed(&mut o, 1, &query(7, 3, 0), now);
    let out = feed(&mut o, 3, &hit(7, 0x55), now);
    assert_eq!(sent(&out), vec![(1, 0x81, 2, 1)]);
    let out = feed(&mut o, 3, &hit(8, 0x55), now);
    assert!(out.is_empty());
    assert_eq!(o.stats().unroutable, 1);
}

#[test]
fn push_follows_the_servent_guid_learnt_from_hits() {
    let now = now0();
    let mut o = node(Role::Ultrapeer, 3, 0, now);
    feed(&mut o, 1, &query(7, 3, 0), now);
    feed(&mut o, 3, &hit(7, 0x55), now);
    let push = Descriptor {
        muid: Guid([9; 16]),
        ttl: Ttl(3),
        hops: Hops(0),
        payload: Payload::Push(Push {
            target: ServentId([0x55; 16]),
            index: crate::wire::FileIndex(1),
            addr: "127.0.0.1:5555".parse().unwrap(),
            ggep: None,
        }),
    }
    .to_vec();
    let out = feed(&mut o, 1, &push, now);
    assert_eq!(sent(&out), vec![(3, 0x40, 2, 1)]);
    // To an unknown servent: dropped.
    let mut other = push.clone();
    other[0] = 10;
    other[HEADER_LEN] = 0x66;
    let out = feed(&mut o, 1, &other, now);
    assert!(out.is_empty());
}

#[test]
fn a_closed_link_takes_its_routes_with_it() {
    let now = now0();
    let mut o = node(Role::Ultrapeer, 3, 0, now);
    feed(&mut o, 1, &query(7, 3, 0), now);
    let mut out = Vec::new();
    o.handle(Event::Closed { id: 1 }, now, &mut out);
    let out = feed(&mut o, 3, &hit(7, 0x55), now);
    assert!(out.is_empty());
    assert_eq!(o.stats().unroutable, 1);
}

#[test]
fn silent_peers_get_alive_pings_then_406_and_idle_ones_405() {
    let now = now0();
    let mut o = node(Role::Ultrapeer, 1, 0, now);
    let mut closed = None;
    for i in 1..=10 {
        let t = now + Duration::from_secs(20 * i);
        // Keep traffic flowing but never answer the alive pings.
        feed(&mut o, 1, &query(100 + i as u8, 1, 0), t);
        let mut out = Vec::new();
        o.handle(Event::Tick, t, &mut out);
        if let Some(c) = closes(&out).first() {
            closed = Some((i, c.1));
            break;
        }
    }
    assert_eq!(closed, Some((7, Some(406))));
    let mut o = node(Role::Ultrapeer, 1, 0, now);
    let mut out = Vec::new();
    o.handle(Event::Tick, now + Duration::from_secs(181), &mut out);
    assert_eq!(closes(&out), vec![(1, Some(405))]);
}

#[test]
fn pings_are_answered_and_a_ping_flood_is_dropped() {
    let now = now0();
    let mut o = node(Role::Ultrapeer, 1, 0, now);
    let ping = |n: u8| {
        Descriptor {
            muid: Guid([n; 16]),
            ttl: Ttl(1),
            hops: Hops(0),
            payload: Payload::Ping(Ping::default()),
        }
        .to_vec()
    };
    let out = feed(&mut o, 1, &ping(1), now);
    assert_eq!(sent(&out), vec![(1, 0x01, 1, 0)]);
    let mut dropped = false;
    for n in 2..60 {
        let out = feed(&mut o, 1, &ping(n), now);
        if closes(&out) == vec![(1, Some(409))] {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "a peer pinging without pause is dropped");
}

#[test]
fn malformed_descriptors_are_counted_then_the_peer_is_dropped() {
    let now = now0();
    let mut o = node(Role::Ultrapeer, 1, 0, now);
    let mut bad = query(1, 3, 0);
    let n = bad.len();
    bad[n - 1] = b'x'; // criteria lose their NUL
    let mut last = Vec::new();
    for i in 0..=MAX_ERRORS {
        bad[0] = i as u8;
        last = feed(&mut o, 1, &bad, now);
    }
    assert_eq!(closes(&last), vec![(1, Some(409))]);
    assert_eq!(o.stats().malformed, u64::from(MAX_ERRORS) + 1);
}

#[test]
fn hops_flow_stops_queries_at_the_asked_hop_count() {
    let now = now0();
    let mut o = node(Role::Ultrapeer, 3, 0, now);
    let hf = Descriptor {
        muid: Guid([0; 16]),
        ttl: Ttl(1),
        hops: Hops(0),
        payload: Payload::Vendor(VendorMessage::new(
            selector::HOPS_FLOW,
            VendorBody::HopsFlow { max_hops: 1 },
        )),
    }
    .to_vec();
    feed(&mut o, 2, &hf, now);
    let out = feed(&mut o, 1, &query(1, 3, 0), now);
    assert_eq!(sent(&out), vec![(3, 0x80, 2, 1)]);
}

#[test]
fn dialling_fills_ultrapeer_slots_from_the_host_cache_and_backs_off() {
    let now = now0();
    let mut cfg = Config::new(Role::Leaf, ServentId([1; 16]));
    cfg.accept_private = true;
    let mut o = Overlay::new(cfg, now);
    let mut out = Vec::new();
    let hosts: Vec<SocketAddrV4> = (1..=5)
        .map(|p| format!("127.0.0.1:{p}").parse().unwrap())
        .collect();
    o.handle(
        Event::Hosts {
            addrs: hosts.clone(),
            ultrapeer: true,
            pinned: false,
        },
        now,
        &mut out,
    );
    o.handle(Event::Tick, now, &mut out);
    let dials: Vec<_> = out
        .iter()
        .filter_map(|a| match a {
            Action::Dial(a) => Some(*a),
            _ => None,
        })
        .collect();
    assert_eq!(dials.len(), 3, "a leaf wants 3 ultrapeers");
    let mut out = Vec::new();
    for a in &dials {
        o.handle(
            Event::DialFailed {
                addr: *a,
                try_hosts: vec![],
            },
            now,
            &mut out,
        );
    }
    o.handle(Event::Tick, now, &mut out);
    let again: Vec<_> = out
        .iter()
        .filter_map(|a| match a {
            Action::Dial(a) => Some(*a),
            _ => None,
        })
        .collect();
    assert_eq!(again.len(), 2, "only the two untried hosts");
    assert!(again.iter().all(|a| !dials.contains(a)));
}

#[test]
fn messages_supported_lists_only_what_we_act_on() {
    let now = now0();
    let mut o = Overlay::new(Config::new(Role::Ultrapeer, ServentId([1; 16])), now);
    let mut out = Vec::new();
    o.handle(
        Event::Connected {
            id: 1,
            info: info(2000, Role::Ultrapeer),
        },
        now,
        &mut out,
    );
    let listed: Vec<(crate::wire::VendorCode, u16)> = out
        .iter()
        .find_map(|a| match a {
            Action::Send { msg, .. } if msg[16] == 0x31 => {
                let Ok(Framed::Frame(f)) = frame(msg) else {
                    return None;
                };
                match Descriptor::decode(&f).ok()?.payload {
                    Payload::Vendor(VendorMessage {
                        body: VendorBody::MessagesSupported { messages },
                        ..
                    }) => Some(messages.iter().map(|m| (m.vendor, m.selector)).collect()),
                    _ => None,
                }
            }
            _ => None,
        })
        .expect("Messages Supported is sent on connect");
    assert_eq!(
        listed,
        vec![
            (crate::wire::VendorCode::BEAR, 4),
            (crate::wire::VendorCode::BEAR, 7),
            (crate::wire::VendorCode::BEAR, 11),
            (crate::wire::VendorCode::BEAR, 12),
            (crate::wire::VendorCode::LIME, 21),
            (crate::wire::VendorCode::LIME, 22)
        ]
    );
}

/// A leaf under `--role auto` with three ultrapeer links and one leaf-side peer of nothing;
/// links never time out, so only the role logic acts.
fn auto_leaf(now: Instant) -> Overlay {
    let mut cfg = Config::new(Role::Leaf, ServentId([0xAB; 16]));
    cfg.accept_private = true;
    cfg.auto_role = true;
    cfg.idle_timeout = Duration::from_secs(1 << 30);
    cfg.alive_interval = Duration::from_secs(1 << 30);
    let mut o = Overlay::new(cfg, now);
    testkit::link_all(&mut o, 3, 0, now, info);
    o
}

fn role_changes(out: &[Action]) -> Vec<Role> {
    out.iter()
        .filter_map(|a| match a {
            Action::RoleChanged { role, .. } => Some(*role),
            _ => None,
        })
        .collect()
}

#[test]
fn an_auto_leaf_promotes_after_an_hour_of_proven_service_and_leaves_its_ultrapeers() {
    let t0 = now0();
    let min = Duration::from_secs(60);
    let mut o = auto_leaf(t0);
    let mut out = Vec::new();
    for (o_, at) in [
        (Observation::Reachable, t0),
        (
            Observation::Uploads {
                bytes: 0,
                completed: 0,
            },
            t0 + min,
        ),
        (
            Observation::Uploads {
                bytes: 600 * 1024,
                completed: 3,
            },
            t0 + 2 * min,
        ),
        (Observation::UltrapeerNeeded(true), t0 + 50 * min),
    ] {
        o.handle(Event::Observed(o_), at, &mut out);
    }
    assert!(out.is_empty(), "observations send nothing: {out:?}");
    for m in 0..60 {
        let out = tick(&mut o, t0 + m * min);
        assert!(role_changes(&out).is_empty(), "minute {m}");
    }
    assert_eq!(o.role(), Role::Leaf);
    let out = tick(&mut o, t0 + 60 * min);
    assert_eq!(role_changes(&out), vec![Role::Ultrapeer]);
    assert_eq!(o.role(), Role::Ultrapeer);
    // gtk-gnutella's switch: Bye 203 to each ultrapeer that held us as a leaf.
    let mut byes: Vec<ConnId> = out
        .iter()
        .filter_map(|a| match a {
            Action::Close {
                id,
                bye: Some((203, r)),
            } if r == "Becoming an ultra node" => Some(*id),
            _ => None,
        })
        .collect();
    byes.sort();
    assert_eq!(byes, vec![1, 2, 3]);
    let rep = o.reputation(t0 + 60 * min);
    assert!(rep.score >= rep.threshold, "{rep:?}");
    // As an ultrapeer it now accepts leaves and keeps more ultrapeer links.
    assert_eq!(o.free_slots().0, 30);
    assert_eq!(o.config().want_ultrapeers, 8);
}

#[test]
fn an_auto_leaf_that_is_not_reachable_stays_a_leaf() {
    let t0 = now0();
    let min = Duration::from_secs(60);
    let mut o = auto_leaf(t0);
    let mut out = Vec::new();
    o.handle(Event::Observed(Observation::Firewalled(true)), t0, &mut out);
    o.handle(
        Event::Observed(Observation::UltrapeerNeeded(true)),
        t0,
        &mut out,
    );
    for m in 0..600 {
        assert!(role_changes(&tick(&mut o, t0 + m * min)).is_empty());
    }
    assert_eq!(o.role(), Role::Leaf);
    assert!(
        o.reputation(t0 + 600 * min)
            .summary
            .contains("not reachable")
    );
}

#[test]
fn an_auto_ultrapeer_without_leaves_demotes_and_says_goodbye_to_all() {
    let t0 = now0();
    let min = Duration::from_secs(60);
    let mut cfg = Config::new(Role::Ultrapeer, ServentId([0xAC; 16]));
    cfg.auto_role = true;
    // A reachable node that qualifies from the start: only the missing leaves can demote it.
    cfg.thresholds.min_uptime = Duration::ZERO;
    cfg.thresholds.score = 25;
    cfg.leaf_ultrapeers = 5;
    cfg.accept_private = true;
    cfg.idle_timeout = Duration::from_secs(1 << 30);
    cfg.alive_interval = Duration::from_secs(1 << 30);
    let mut o = Overlay::new(cfg, t0);
    let mut out = Vec::new();
    o.handle(Event::Observed(Observation::Reachable), t0, &mut out);
    for id in 1..=2 {
        o.handle(
            Event::Connected {
                id,
                info: info(id as u16 + 2000, Role::Ultrapeer),
            },
            t0,
            &mut out,
        );
    }
    let mut demoted = None;
    for m in 0..=120 {
        let out = tick(&mut o, t0 + m * min);
        if !role_changes(&out).is_empty() {
            demoted = Some((m, out));
            break;
        }
    }
    let (m, out) = demoted.expect("demotes");
    assert_eq!(
        m, 60,
        "an hour without leaves (gtk-gnutella NODE_UP_NO_LEAF_MAX)"
    );
    assert_eq!(role_changes(&out), vec![Role::Leaf]);
    let byes = out
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::Close {
                    bye: Some((203, _)),
                    ..
                }
            )
        })
        .count();
    assert_eq!(byes, 2);
    assert_eq!(o.role(), Role::Leaf);
    // As a leaf it keeps the configured number of ultrapeer links.
    assert_eq!(o.config().want_ultrapeers, 5);
}

#[test]
fn a_fixed_role_never_switches() {
    let t0 = now0();
    let min = Duration::from_secs(60);
    let mut o = node(Role::Ultrapeer, 2, 0, t0);
    for m in 0..300 {
        assert!(role_changes(&tick(&mut o, t0 + m * min)).is_empty());
    }
    assert_eq!(o.role(), Role::Ultrapeer);
}

fn pong_with_up(hops: u8, port: u16, slots: [u8; 3]) -> Vec<u8> {
    let mut g = crate::wire::ggep::GgepBuilder::new();
    g.push("UP", &slots, crate::wire::ggep::Encoding::default())
        .unwrap();
    let block = g.finish();
    Descriptor {
        muid: Guid([0x51; 16]),
        ttl: Ttl(1),
        hops: Hops(hops),
        payload: Payload::Pong(Pong {
            addr: SocketAddrV4::new(std::net::Ipv4Addr::new(100, 64, 9, 9), port),
            files: 0,
            kbytes: 0,
            ggep: Some(crate::wire::ggep::Ggep::parse_all(&block).unwrap()),
        }),
    }
    .to_vec()
}

#[test]
fn a_leaf_says_it_is_a_leaf_in_its_pong_and_an_ultrapeer_says_its_slots() {
    let now = now0();
    let ping = Descriptor {
        muid: Guid([7; 16]),
        ttl: Ttl(1),
        hops: Hops(0),
        payload: Payload::Ping(Ping::default()),
    }
    .to_vec();
    let up_of = |role: Role| {
        let mut o = node(role, 1, 0, now);
        let out = feed(&mut o, 1, &ping, now);
        let pong = out
            .iter()
            .find_map(|a| match a {
                Action::Send { msg, .. } if msg[16] == 0x01 => Some(msg.to_vec()),
                _ => None,
            })
            .expect("a pong");
        let Ok(Framed::Frame(f)) = frame(&pong) else {
            panic!("pong frames")
        };
        let Ok(Payload::Pong(p)) = Descriptor::decode(&f).map(|d| d.payload) else {
            panic!("a pong")
        };
        p.ggep.and_then(|g| g.value("UP")).map(|v| v.to_vec())
    };
    assert_eq!(up_of(Role::Leaf), None);
    let up = up_of(Role::Ultrapeer).expect("UP in an ultrapeer's pong");
    assert_eq!(up.len(), 3);
    assert!(up[1] > 0, "free leaf slots: {up:?}");
}

#[test]
fn a_pong_names_an_ultrapeer_only_when_it_proves_it() {
    let now = now0();
    // An ultrapeer with an ultrapeer link (1) and a leaf link (2).
    let mut o = node(Role::Ultrapeer, 1, 1, now);
    let is_up = |o: &Overlay, port: u16| {
        o.hosts()
            .entries()
            .iter()
            .find(|e| e.addr.port() == port)
            .map(|e| e.ultrapeer)
    };
    // Relayed, with UP but no slots: what other servents' leaves sent. A host, not an ultrapeer.
    feed(&mut o, 1, &pong_with_up(2, 7001, [0, 0, 0]), now);
    assert_eq!(is_up(&o, 7001), Some(false));
    // Relayed, offering leaf slots: only an ultrapeer has them.
    feed(&mut o, 1, &pong_with_up(2, 7002, [0, 5, 1]), now);
    assert_eq!(is_up(&o, 7002), Some(true));
    // An ultrapeer link's own pong, full as it may be.
    feed(&mut o, 1, &pong_with_up(0, 7003, [0, 0, 0]), now);
    assert_eq!(is_up(&o, 7003), Some(true));
    // A leaf link's own pong with UP and no slots: a leaf.
    feed(&mut o, 2, &pong_with_up(0, 7004, [0, 0, 0]), now);
    assert_eq!(is_up(&o, 7004), Some(false));
}

fn dials(out: &[Action]) -> Vec<SocketAddrV4> {
    out.iter()
        .filter_map(|a| match a {
            Action::Dial(a) => Some(*a),
            _ => None,
        })
        .collect()
}

fn fail(o: &mut Overlay, addr: SocketAddrV4, try_hosts: Vec<SocketAddrV4>, now: Instant) {
    o.handle(Event::DialFailed { addr, try_hosts }, now, &mut Vec::new());
}

/// A leaf linked to one ultrapeer (id 1, port 1001) whose two other ultrapeers refused it as
/// full, long ago: their back-offs are long.
fn leaf_with_full_ultrapeers(bootstrap: bool, now: Instant) -> (Overlay, [SocketAddrV4; 2]) {
    let mut cfg = Config::new(Role::Leaf, ServentId([0xAB; 16]));
    cfg.accept_private = true;
    cfg.bootstrap = bootstrap;
    let mut o = Overlay::new(cfg, now);
    testkit::connect(&mut o, 1, info(1001, Role::Ultrapeer), now);
    let full: [SocketAddrV4; 2] = [
        "127.0.0.1:2001".parse().unwrap(),
        "127.0.0.1:2002".parse().unwrap(),
    ];
    // The first one refused us and named the second in X-Try-Ultrapeers.
    o.handle(
        Event::Hosts {
            addrs: vec![full[0]],
            ultrapeer: true,
            pinned: false,
        },
        now,
        &mut Vec::new(),
    );
    assert_eq!(dials(&tick(&mut o, now)), vec![full[0]]);
    fail(&mut o, full[0], vec![full[1]], now);
    assert_eq!(dials(&tick(&mut o, now)), vec![full[1]]);
    fail(&mut o, full[1], vec![], now);
    // Refused again and again over ten minutes: the back-offs are at 4 minutes now.
    let mut t = now;
    for _ in 0..4 {
        t += Duration::from_secs(200);
        for a in dials(&tick(&mut o, t)) {
            fail(&mut o, a, vec![], t);
        }
    }
    (o, full)
}

#[test]
fn a_leaf_left_without_an_ultrapeer_tries_every_known_host_again_at_once() {
    let now = now0();
    let (mut o, full) = leaf_with_full_ultrapeers(false, now);
    let t = now + Duration::from_secs(801);
    assert!(dials(&tick(&mut o, t)).is_empty(), "still backing off");
    // Its ultrapeer dies; it may be back at once, so it is dialled first.
    o.handle(Event::Closed { id: 1 }, t, &mut Vec::new());
    let dead: SocketAddrV4 = "127.0.0.1:1001".parse().unwrap();
    assert_eq!(dials(&tick(&mut o, t)), vec![dead]);
    fail(&mut o, dead, vec![], t);
    // Nobody left: every known host, at once, without waiting out their back-offs.
    let round = tick(&mut o, t);
    let mut got = dials(&round);
    got.sort();
    assert_eq!(
        got,
        vec![dead, full[0], full[1]],
        "every known host, at once"
    );
    assert!(!round.contains(&Action::Bootstrap), "no services to ask");
    // One of them has room now.
    testkit::connect(&mut o, 2, info(2001, Role::Ultrapeer), t);
    fail(&mut o, dead, vec![], t);
    fail(&mut o, full[1], vec![], t);
    assert!(dials(&tick(&mut o, t + Duration::from_secs(5))).is_empty());
    assert_eq!(o.connection_count(Role::Ultrapeer), 1);
}

#[test]
fn a_leaf_with_nobody_to_dial_retries_at_growing_intervals_and_asks_the_bootstrap_services() {
    let now = now0();
    let (mut o, _) = leaf_with_full_ultrapeers(true, now);
    let t0 = now + Duration::from_secs(801);
    o.handle(Event::Closed { id: 1 }, t0, &mut Vec::new());
    for a in dials(&tick(&mut o, t0)) {
        fail(&mut o, a, vec![], t0);
    }
    // Every host stays down or full: the rounds come at once, then after 2 s, 4 s, 8 s, …
    // up to a minute; the bootstrap services are asked at most once a minute.
    let mut rounds = Vec::new();
    let mut asked = Vec::new();
    let mut t = t0;
    while t < t0 + Duration::from_secs(300) {
        let out = tick(&mut o, t);
        if out.contains(&Action::Bootstrap) {
            asked.push(t.duration_since(t0).as_secs());
        }
        let d = dials(&out);
        if !d.is_empty() {
            rounds.push(t.duration_since(t0).as_secs());
        }
        for a in d {
            fail(&mut o, a, vec![], t);
        }
        t += Duration::from_secs(1);
    }
    assert_eq!(rounds, vec![0, 2, 6, 14, 30, 62, 122, 182, 242]);
    assert_eq!(asked, vec![0, 62, 122, 182, 242]);
    // Once linked, the rounds stop and start over from the shortest wait when alone again.
    testkit::connect(&mut o, 2, info(2001, Role::Ultrapeer), t);
    tick(&mut o, t);
    o.handle(Event::Closed { id: 2 }, t, &mut Vec::new());
    let back: SocketAddrV4 = "127.0.0.1:2001".parse().unwrap();
    assert_eq!(dials(&tick(&mut o, t)), vec![back]);
    fail(&mut o, back, vec![], t);
    assert_eq!(dials(&tick(&mut o, t)).len(), 3, "a round at once");
}

#[test]
fn a_leaf_that_still_has_an_ultrapeer_keeps_its_back_offs() {
    let now = now0();
    let (mut o, _) = leaf_with_full_ultrapeers(true, now);
    let out = tick(&mut o, now + Duration::from_secs(801));
    assert!(dials(&out).is_empty());
    assert!(!out.contains(&Action::Bootstrap));
}
