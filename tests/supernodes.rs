//! Two ultrapeers and six leaves, all real servents on 127.0.0.1: queries reach exactly the
//! leaves whose QRP tables match, a leaf is answered by a leaf behind the other ultrapeer, a
//! leaf's changed shares are found by their new names only, a last-hop query crosses to the
//! other ultrapeer only when its merged table matches, and a leaf dialled as if it were an
//! ultrapeer sends the dialler on to its ultrapeer.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_std::net::TcpStream;
use common::*;
use servent::handshake::driver::{self, HandshakeError};
use servent::handshake::{LocalInfo, Role};
use servent::net::NodeConfig;
use servent::overlay::upqrp::merged_table;
use servent::servent::{Servent, ServentConfig, found_in_hit};
use servent::wire::{Guid, Payload, Query, QueryFlags, ServentId, Sha1Urn, Text};

/// How long any awaited event may take before the test fails: generous, since the machine may
/// be busy; a passing run takes milliseconds per event.
const DEADLINE: Duration = Duration::from_secs(10);
/// After the last expected event, how long stray deliveries are given to show up.
const SETTLE: Duration = Duration::from_millis(300);
/// The servent's table size (`servent.rs`, `QRP_BITS`).
const QRP_BITS: u8 = 16;

/// The files of leaves 0–2 (behind ultrapeer 0) and 3–5 (behind ultrapeer 1). "river" is
/// shared on both sides, "canyon" by leaves 3 and 5, every other word by one leaf.
const SHARES: [&[&str]; 6] = [
    &["alpha river.txt"],
    &["bravo mountain.txt"],
    &["charlie ocean.txt"],
    &["delta river.txt", "canyon delta.txt"],
    &["echo forest.txt"],
    &["foxtrot canyon.txt"],
];

struct Net {
    ups: Vec<Servent>,
    leaves: Vec<Servent>,
    dirs: Vec<PathBuf>,
}

impl Net {
    fn leaf_of(&self, servent: ServentId) -> Option<usize> {
        self.leaves
            .iter()
            .position(|l| l.node().servent() == servent)
    }

    fn delivered(&self) -> Vec<u64> {
        self.leaves
            .iter()
            .map(|l| l.node().stats().queries_delivered)
            .collect()
    }
}

async fn servent(role: Role, peers: &[SocketAddrV4], shares: Vec<PathBuf>) -> Servent {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut n = NodeConfig::new("127.0.0.1:0".parse().unwrap(), temp_dir("super"));
    n.role = role;
    n.peers = peers.to_vec();
    n.want_ultrapeers = Some(peers.len());
    n.accept_private = true;
    n.tick = Duration::from_millis(50);
    n.up_qrp_interval = Duration::from_millis(100);
    let mut cfg = ServentConfig::new(n);
    cfg.shares = shares;
    // Reachable, so firewalled searchers still get answers (PROTOCOL.md §8).
    cfg.firewalled = Some(false);
    cfg.rescan_every = None;
    Servent::start(cfg).await.unwrap()
}

/// Polls `cond` until it holds, failing after [`DEADLINE`].
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        async_std::task::sleep(Duration::from_millis(20)).await;
    }
}

/// Leaf QRP tables the ultrapeer holds.
fn leaf_tables(up: &Servent) -> usize {
    up.node()
        .connections()
        .iter()
        .filter(|c| c.role == Role::Leaf && c.qrp_slots_set.is_some_and(|s| s > 0))
        .count()
}

/// Ultrapeer 1 dials ultrapeer 0; three leaves dial each; returns once every table is in place.
async fn net() -> Net {
    let up0 = servent(Role::Ultrapeer, &[], vec![]).await;
    let up1 = servent(Role::Ultrapeer, &[up0.node().listen_addr()], vec![]).await;
    let mut leaves = Vec::new();
    let mut dirs = Vec::new();
    for (i, files) in SHARES.iter().enumerate() {
        let d = temp_dir("leafshare");
        std::fs::create_dir_all(&d).unwrap();
        for f in *files {
            std::fs::write(d.join(f), format!("{f} of leaf {i}")).unwrap();
        }
        let up = if i < 3 { &up0 } else { &up1 };
        leaves.push(servent(Role::Leaf, &[up.node().listen_addr()], vec![d.clone()]).await);
        dirs.push(d);
    }
    for up in [&up0, &up1] {
        until("the ultrapeers linked", || {
            up.node()
                .connections()
                .iter()
                .any(|c| c.role == Role::Ultrapeer)
        })
        .await;
    }
    for up in [&up0, &up1] {
        until("three leaf tables at each ultrapeer", || {
            leaf_tables(up) == 3
        })
        .await;
    }
    Net {
        ups: vec![up0, up1],
        leaves,
        dirs,
    }
}

/// Searches from `from` until hits from every leaf in `want` arrived, then for [`SETTLE`]
/// more; returns the leaves that answered and the names they gave.
async fn answered_by(
    net: &Net,
    search: servent::servent::Search,
    want: &BTreeSet<usize>,
) -> (BTreeSet<usize>, Vec<String>) {
    let mut got = BTreeSet::new();
    let mut names = Vec::new();
    let end = Instant::now() + DEADLINE;
    let mut settle_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if settle_at.is_none() && want.is_subset(&got) {
            settle_at = Some(now + SETTLE);
        }
        let stop = settle_at.unwrap_or(end).min(end);
        let Some(left) = stop.checked_duration_since(now) else {
            break;
        };
        match async_std::future::timeout(left, search.hits.recv()).await {
            Ok(Ok(msg)) => {
                for f in found_in_hit(&msg) {
                    got.extend(net.leaf_of(f.source.servent));
                    names.push(f.name);
                }
            }
            _ => break,
        }
    }
    names.sort();
    (got, names)
}

fn deltas(before: &[u64], after: &[u64]) -> Vec<u64> {
    before.iter().zip(after).map(|(b, a)| a - b).collect()
}

#[async_std::test]
async fn a_query_reaches_exactly_the_leaves_whose_tables_match() {
    let net = net().await;
    // Leaf 1 asks for "river": leaf 0 (same ultrapeer) and leaf 3 (the other) share it.
    let before = net.delivered();
    let want = BTreeSet::from([0, 3]);
    let (got, names) = answered_by(&net, net.leaves[1].search("river"), &want).await;
    assert_eq!(got, want);
    assert_eq!(names, vec!["alpha river.txt", "delta river.txt"]);
    assert_eq!(
        deltas(&before, &net.delivered()),
        vec![1, 0, 0, 1, 0, 0],
        "only the matching leaves were handed the query"
    );

    // By SHA-1: leaf 5's tables holds the URN of its file, nobody else's does.
    let urn = Sha1Urn::digest(b"foxtrot canyon.txt of leaf 5");
    let before = net.delivered();
    let want = BTreeSet::from([5]);
    let (got, names) = answered_by(&net, net.leaves[0].search_urn(&urn), &want).await;
    assert_eq!(got, want);
    assert_eq!(names, vec!["foxtrot canyon.txt"]);
    assert_eq!(deltas(&before, &net.delivered()), vec![0, 0, 0, 0, 0, 1]);
}

#[async_std::test]
async fn a_leaf_is_answered_by_a_leaf_behind_the_other_ultrapeer() {
    let net = net().await;
    let search = net.leaves[0].search("forest");
    let hit = async_std::future::timeout(DEADLINE, search.hits.recv())
        .await
        .expect("a hit reaches the querying leaf")
        .unwrap();
    let found = found_in_hit(&hit);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].name, "echo forest.txt");
    assert_eq!(found[0].source.servent, net.leaves[4].node().servent());
    assert_eq!(found[0].source.addr, net.leaves[4].node().advertised_addr());
    // The hit came back along the query's path: leaf 4 → ultrapeer 1 → ultrapeer 0 → leaf 0.
    assert_eq!(hit[18], 2, "relayed by both ultrapeers");
    assert!(net.ups.iter().all(|u| u.node().stats().hits_routed >= 1));
}

#[async_std::test]
async fn a_leaf_that_changes_its_shares_is_found_by_the_new_name_only() {
    let net = net().await;
    let (got, _) = answered_by(
        &net,
        net.leaves[0].search("canyon"),
        &BTreeSet::from([3, 5]),
    )
    .await;
    assert_eq!(got, BTreeSet::from([3, 5]));

    let dir = &net.dirs[5];
    std::fs::remove_file(dir.join("foxtrot canyon.txt")).unwrap();
    std::fs::write(dir.join("golf meadow.txt"), "a new file").unwrap();
    net.leaves[5].rescan().await;

    // The new table travels to ultrapeer 1 as soon as the rescan ends: wait until it holds
    // exactly the tables of leaves 3, 4 and the new 5.
    let mut want: Vec<usize> = net.leaves[3..]
        .iter()
        .map(|l| l.library().read().unwrap().qrp_table(QRP_BITS).count())
        .collect();
    want.sort();
    until("ultrapeer 1 holds leaf 5's new table", || {
        let mut have: Vec<usize> = net.ups[1]
            .node()
            .connections()
            .iter()
            .filter(|c| c.role == Role::Leaf)
            .filter_map(|c| c.qrp_slots_set)
            .collect();
        have.sort();
        have == want
    })
    .await;
    let (got, names) =
        answered_by(&net, net.leaves[0].search("meadow"), &BTreeSet::from([5])).await;
    assert_eq!(got, BTreeSet::from([5]));
    assert_eq!(names, vec!["golf meadow.txt"]);
    // "canyon" is now only leaf 3's: leaf 5 is not even handed the query (its table says
    // no), although leaf 3, behind the same ultrapeer, answers it.
    let before = net.delivered();
    let (got, names) =
        answered_by(&net, net.leaves[0].search("canyon"), &BTreeSet::from([3])).await;
    assert_eq!(got, BTreeSet::from([3]));
    assert_eq!(names, vec!["canyon delta.txt"]);
    assert_eq!(deltas(&before, &net.delivered()), vec![0, 0, 0, 1, 0, 0]);
}

fn query(words: &'static str) -> Payload<'static> {
    Payload::Query(Query {
        flags: QueryFlags(0x8000),
        criteria: Text(words.as_bytes()),
        extensions: Default::default(),
    })
}

/// The first QueryHit for `muid` the scripted peer receives.
async fn first_hit(p: &mut Peer, muid: Guid) -> Option<Vec<u8>> {
    let end = Instant::now() + DEADLINE;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match p.recv(left).await {
            Some(m) if m[16] == 0x81 && m[..16] == muid.0 => return Some(m),
            Some(_) => {}
            None => return None,
        }
    }
    None
}

#[async_std::test]
async fn a_last_hop_query_crosses_to_the_other_ultrapeer_only_when_its_leaves_match() {
    let net = net().await;
    let (up0, up1) = (&net.ups[0], &net.ups[1]);
    // Ultrapeer 1's merged table: its own (empty) shares OR its three leaves' tables.
    let own = up1.library().read().unwrap().qrp_table(QRP_BITS);
    let leaf_tables: Vec<_> = net.leaves[3..]
        .iter()
        .map(|l| l.library().read().unwrap().qrp_table(QRP_BITS))
        .collect();
    let want = merged_table(&own, &leaf_tables.iter().collect::<Vec<_>>()).count();
    until("ultrapeer 0 holds ultrapeer 1's merged table", || {
        up0.node()
            .connections()
            .iter()
            .any(|c| c.role == Role::Ultrapeer && c.qrp_slots_set == Some(want))
    })
    .await;

    let mut p = Peer::connect(up0.node().listen_addr(), Role::Ultrapeer, true).await;
    wait_links(up0.node(), 5).await;
    let received = |n: &Servent| n.node().stats().queries_delivered;

    // TTL 2 from the peer: ultrapeer 0 forwards it with TTL 1, its last hop.
    let muid = Guid::random();
    let before = received(up1);
    p.send(&encode(muid, 2, 0, query("forest"))).await;
    let hit = first_hit(&mut p, muid).await;
    assert!(hit.is_some(), "leaf 4 answers through ultrapeer 1");
    assert_eq!(received(up1), before + 1);

    // "alpha" is only behind ultrapeer 0: leaf 0 answers, ultrapeer 1 never sees it.
    let muid = Guid::random();
    let (before1, before_leaf0) = (received(up1), received(&net.leaves[0]));
    p.send(&encode(muid, 2, 0, query("alpha"))).await;
    assert!(first_hit(&mut p, muid).await.is_some(), "leaf 0 answers");
    assert_eq!(received(&net.leaves[0]), before_leaf0 + 1);
    async_std::task::sleep(SETTLE).await;
    assert_eq!(received(up1), before1, "withheld at the last hop");

    // With a hop to spare the same words are flooded to ultrapeer 1 as before.
    let muid = Guid::random();
    p.send(&encode(muid, 3, 0, query("alpha"))).await;
    until("ultrapeer 1 gets the TTL 3 query", || {
        received(up1) == before1 + 1
    })
    .await;
}

#[async_std::test]
async fn a_leaf_dialled_as_an_ultrapeer_refuses_and_points_the_dialler_at_its_ultrapeer() {
    let net = net().await;
    let leaf = net.leaves[0].node().listen_addr();
    let up0 = net.ups[0].node().listen_addr();

    // What the leaf answers an ultrapeer handshake: a refusal that names its ultrapeer.
    let mut s = TcpStream::connect(leaf).await.unwrap();
    let local = LocalInfo {
        user_agent: "test-peer/1".into(),
        role: Role::Ultrapeer,
        guid: ServentId::random(),
        listen: None,
        compress: true,
        degree: 32,
        max_ttl: 4,
    };
    match driver::connect(&mut s, &local, Some(*leaf.ip())).await {
        Err(HandshakeError::Refused {
            code,
            try_ultrapeers,
            ..
        }) => {
            assert!(code == 204 || code == 503, "refused with {code}");
            assert!(try_ultrapeers.contains(&up0), "{try_ultrapeers:?}");
        }
        other => panic!("the leaf accepted or failed otherwise: {other:?}"),
    }

    // A servent that knows only the leaf's address ends up linked to an ultrapeer (ultrapeer
    // 0, or ultrapeer 1 which the leaf learnt from ultrapeer 0's pong), never to a leaf.
    let dialler = servent(Role::Leaf, &[leaf], vec![]).await;
    let ups: Vec<SocketAddrV4> = net.ups.iter().map(|u| u.node().listen_addr()).collect();
    until("the dialler links to an ultrapeer", || {
        dialler
            .node()
            .connections()
            .iter()
            .any(|c| ups.contains(&c.addr) && c.role == Role::Ultrapeer)
    })
    .await;
    let leaves: Vec<SocketAddrV4> = net.leaves.iter().map(|l| l.node().listen_addr()).collect();
    let links = dialler.node().connections();
    assert!(links.iter().all(|c| !leaves.contains(&c.addr)), "{links:?}");
    assert!(
        net.leaves[0]
            .node()
            .connections()
            .iter()
            .all(|c| c.role == Role::Ultrapeer),
        "the leaf took no peer of its own"
    );
}
