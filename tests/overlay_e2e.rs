//! Several real nodes on 127.0.0.1 (ports chosen by the OS), linked with compressed
//! connections, driven by scripted peers: flooding under TTL, duplicate suppression, the
//! reverse path of hits, push routing, failure detection, and hostile peers.

mod common;

use std::time::Duration;

use common::*;
use servent::handshake::Role;
use servent::net::Node;
use servent::overlay::Delivery;
use servent::wire::{
    FileIndex, Guid, Payload, Ping, Push, Query, QueryFlags, QueryHit, Results, ResultsBuilder,
    ServentId, Text, Trailer,
};

const SHORT: Duration = Duration::from_millis(600);

fn query(words: &'static str) -> Payload<'static> {
    Payload::Query(Query {
        flags: QueryFlags(0x8000),
        criteria: Text(words.as_bytes()),
        extensions: Default::default(),
    })
}

fn hit_payload(servent: ServentId) -> Vec<u8> {
    let mut r = ResultsBuilder::new();
    r.push(FileIndex(3), 1234, "song.ogg", b"");
    let mut p = Vec::new();
    QueryHit {
        addr: "127.0.0.1:9999".parse().unwrap(),
        speed: 500,
        results: Results::from_bytes(r.bytes(), r.count()).unwrap(),
        trailer: Trailer::None,
        servent,
    }
    .encode(&mut p);
    p
}

/// N1 ← N2 ← … ← Nn, each dialling the previous one.
async fn line(n: usize) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..n {
        let peers: Vec<_> = nodes.last().map(|p| p.listen_addr()).into_iter().collect();
        nodes.push(ultrapeer(&peers).await);
        if i > 0 {
            wait_links(&nodes[i], 1).await;
        }
    }
    nodes
}

#[async_std::test]
async fn a_query_with_ttl_3_reaches_exactly_three_hops_down_a_line() {
    let nodes = line(5).await;
    let mut p = Peer::connect(nodes[0].listen_addr(), Role::Ultrapeer, true).await;
    wait_links(&nodes[0], 2).await;
    let muid = Guid::random();
    p.send(&encode(muid, 3, 0, query("free music"))).await;
    for (i, n) in nodes.iter().enumerate() {
        let got = queries_with(&deliveries(n, SHORT).await, &muid.0);
        let want = usize::from(i < 3);
        assert_eq!(got, want, "node {} saw the query {got} times", i + 1);
    }
}

#[async_std::test]
async fn in_a_ring_each_node_sees_a_query_once_and_a_resent_guid_is_dropped() {
    // A ring of four: 0 ← 1 ← 2 ← 3 ← 0 (node 0 also dials 3 once it exists).
    let n0 = ultrapeer_wanting(&[], 2).await;
    let n1 = ultrapeer(&[n0.listen_addr()]).await;
    let n2 = ultrapeer(&[n1.listen_addr()]).await;
    let n3 = ultrapeer(&[n2.listen_addr()]).await;
    n0.add_hosts(vec![n3.listen_addr()], true);
    for n in [&n0, &n1, &n2, &n3] {
        wait_links(n, 2).await;
    }
    let mut p = Peer::connect(n0.listen_addr(), Role::Ultrapeer, false).await;
    let muid = Guid::random();
    let q = encode(muid, 4, 0, query("ring test"));
    p.send(&q).await;
    let nodes = [&n0, &n1, &n2, &n3];
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(
            queries_with(&deliveries(n, SHORT).await, &muid.0),
            1,
            "node {i}"
        );
    }
    // The very same descriptor again: every node has seen its GUID.
    p.send(&q).await;
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(
            queries_with(&deliveries(n, SHORT).await, &muid.0),
            0,
            "node {i} took a duplicate"
        );
    }
    assert!(n0.stats().duplicates >= 1);
}

#[async_std::test]
async fn hits_follow_the_reverse_path_only_and_pushes_follow_the_servent_guid() {
    let nodes = line(3).await;
    let mut asker = Peer::connect(nodes[0].listen_addr(), Role::Ultrapeer, true).await;
    let mut bystander = Peer::connect(nodes[1].listen_addr(), Role::Ultrapeer, true).await;
    let mut answerer = Peer::connect(nodes[2].listen_addr(), Role::Ultrapeer, true).await;
    wait_links(&nodes[2], 2).await;
    let muid = Guid::random();
    asker.send(&encode(muid, 4, 0, query("anything"))).await;
    let at_answerer = answerer.collect(0x80, SHORT).await;
    assert_eq!(at_answerer.len(), 1, "the query reaches the far end");
    assert_eq!(&at_answerer[0][..16], &muid.0);
    assert_eq!(at_answerer[0][18], 3, "three nodes forwarded it");
    // The far peer answers; only the asker may see the hit.
    let hit = servent::overlay::raw_descriptor(
        muid,
        servent::wire::PayloadType::QueryHit,
        5,
        0,
        &hit_payload(answerer.guid),
    );
    answerer.send(&hit).await;
    let hits = asker.collect(0x81, SHORT).await;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0][18], 3, "hops count the three nodes");
    assert!(bystander.collect(0x81, SHORT).await.is_empty());
    // A hit nobody asked for goes nowhere.
    let stray = servent::overlay::raw_descriptor(
        Guid::random(),
        servent::wire::PayloadType::QueryHit,
        5,
        0,
        &hit_payload(answerer.guid),
    );
    answerer.send(&stray).await;
    assert!(asker.collect(0x81, SHORT).await.is_empty());
    assert!(nodes[2].stats().unroutable >= 1);
    // A Push for the answerer's servent GUID travels the learnt route back to it.
    let push = Payload::Push(Push {
        target: answerer.guid,
        index: FileIndex(3),
        addr: "127.0.0.1:7777".parse().unwrap(),
        ggep: None,
    });
    asker.send(&encode(Guid::random(), 4, 0, push)).await;
    let pushes = answerer.collect(0x40, SHORT).await;
    assert_eq!(pushes.len(), 1);
    assert_eq!(&pushes[0][23..39], &answerer.guid.0);
    assert!(bystander.collect(0x40, SHORT).await.is_empty());
}

#[async_std::test]
async fn a_push_for_a_node_itself_is_delivered_to_it() {
    let nodes = line(2).await;
    let mut p = Peer::connect(nodes[0].listen_addr(), Role::Ultrapeer, true).await;
    // The node's own hit teaches the route; here the GUID is a direct neighbour's.
    let target = nodes[1].servent();
    let push = Payload::Push(Push {
        target,
        index: FileIndex(1),
        addr: "127.0.0.1:7777".parse().unwrap(),
        ggep: None,
    });
    p.send(&encode(Guid::random(), 3, 0, push)).await;
    let got = deliveries(&nodes[1], SHORT).await;
    assert!(
        got.iter()
            .any(|d| matches!(d, Delivery::Push { msg } if msg[23..39] == target.0)),
        "{got:?}"
    );
}

#[async_std::test]
async fn a_killed_node_is_detected_and_its_routes_cleared() {
    let nodes = line(3).await;
    let mut asker = Peer::connect(nodes[0].listen_addr(), Role::Ultrapeer, true).await;
    let mut answerer = Peer::connect(nodes[2].listen_addr(), Role::Ultrapeer, true).await;
    wait_links(&nodes[2], 2).await;
    let muid = Guid::random();
    asker.send(&encode(muid, 4, 0, query("anything"))).await;
    assert_eq!(answerer.collect(0x80, SHORT).await.len(), 1);
    let before = nodes[1].connections().len();
    nodes[0].abort();
    // The middle node notices at once (the socket closes) and forgets the link.
    for _ in 0..100 {
        if nodes[1].connections().len() < before {
            break;
        }
        async_std::task::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(nodes[1].connections().len(), before - 1);
    let unroutable = nodes[1].stats().unroutable;
    let hit = servent::overlay::raw_descriptor(
        muid,
        servent::wire::PayloadType::QueryHit,
        5,
        0,
        &hit_payload(answerer.guid),
    );
    answerer.send(&hit).await;
    async_std::task::sleep(SHORT).await;
    assert_eq!(
        nodes[1].stats().unroutable,
        unroutable + 1,
        "the hit's route died with the link"
    );
}

#[async_std::test]
async fn pings_are_answered_with_a_pong_carrying_the_same_guid() {
    let nodes = line(1).await;
    let mut p = Peer::connect(nodes[0].listen_addr(), Role::Ultrapeer, false).await;
    let muid = Guid::random();
    p.send(&encode(muid, 1, 0, Payload::Ping(Ping::default())))
        .await;
    let pongs = p.collect(0x01, SHORT).await;
    let mine: Vec<_> = pongs.iter().filter(|m| m[..16] == muid.0).collect();
    assert_eq!(mine.len(), 1);
    let port = u16::from_le_bytes([mine[0][23], mine[0][24]]);
    assert_eq!(port, nodes[0].listen_addr().port());
}

#[async_std::test]
async fn descriptors_arriving_in_pieces_are_read_whole_on_plain_and_compressed_links() {
    // A link keeps only an incomplete descriptor between reads (net::pump): pieces of every
    // size must still join up, and the link stay in step for what follows.
    let nodes = line(1).await;
    for compress in [false, true] {
        for piece in [1, 5, 23, 40] {
            let mut p = Peer::connect(nodes[0].listen_addr(), Role::Ultrapeer, compress).await;
            let muids: Vec<Guid> = (0..3).map(|_| Guid::random()).collect();
            let mut batch = Vec::new();
            for m in &muids {
                batch.extend(encode(*m, 1, 0, Payload::Ping(Ping::default())));
            }
            p.send_in_pieces(&batch, piece).await;
            let pongs = p.collect(0x01, SHORT).await;
            for m in &muids {
                let n = pongs.iter().filter(|x| x[..16] == m.0).count();
                assert_eq!(n, 1, "compress {compress}, pieces of {piece}");
            }
        }
    }
}

#[async_std::test]
async fn garbage_gets_a_peer_dropped_and_the_node_keeps_serving_others() {
    let nodes = line(1).await;
    let mut good = Peer::connect(nodes[0].listen_addr(), Role::Ultrapeer, false).await;
    let mut bad = Peer::connect(nodes[0].listen_addr(), Role::Ultrapeer, false).await;
    // A header announcing a 200 KB query.
    let mut huge = vec![0u8; 23];
    huge[16] = 0x80;
    huge[17] = 3;
    huge[19..23].copy_from_slice(&200_000u32.to_le_bytes());
    bad.send(&huge).await;
    assert!(
        bad.closed(Duration::from_secs(3)).await,
        "oversized peer closed"
    );
    assert_eq!(bad.bye_code(), Some(400));
    let muid = Guid::random();
    good.send(&encode(muid, 1, 0, Payload::Ping(Ping::default())))
        .await;
    assert!(
        good.collect(0x01, SHORT)
            .await
            .iter()
            .any(|m| m[..16] == muid.0)
    );
}

#[async_std::test]
async fn a_ping_flood_and_a_decompression_bomb_get_the_peer_dropped() {
    let nodes = line(1).await;
    let mut flooder = Peer::connect(nodes[0].listen_addr(), Role::Ultrapeer, false).await;
    let mut batch = Vec::new();
    for _ in 0..200 {
        batch.extend(encode(Guid::random(), 1, 0, Payload::Ping(Ping::default())));
    }
    flooder.send(&batch).await;
    assert!(flooder.closed(Duration::from_secs(3)).await);
    assert_eq!(flooder.bye_code(), Some(409));

    // 64 MiB of zeros deflate to ~64 KiB: they inflate to a stream of empty, TTL 0 pings.
    let mut bomber = Peer::connect(nodes[0].listen_addr(), Role::Ultrapeer, true).await;
    assert!(bomber.est.compression.outgoing);
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        bomber.send(&zeros).await;
        if bomber.closed(Duration::from_millis(1)).await {
            break;
        }
    }
    assert!(
        bomber.closed(Duration::from_secs(3)).await,
        "bomber dropped"
    );
    // Still serving.
    let mut good = Peer::connect(nodes[0].listen_addr(), Role::Ultrapeer, true).await;
    let muid = Guid::random();
    good.send(&encode(muid, 1, 0, Payload::Ping(Ping::default())))
        .await;
    assert!(
        good.collect(0x01, SHORT)
            .await
            .iter()
            .any(|m| m[..16] == muid.0)
    );
}

#[async_std::test]
async fn a_leaf_relaying_queries_gets_bye_414() {
    let nodes = line(1).await;
    let mut leaf = Peer::connect(nodes[0].listen_addr(), Role::Leaf, true).await;
    leaf.send(&encode(Guid::random(), 3, 2, query("relayed")))
        .await;
    assert!(leaf.closed(Duration::from_secs(3)).await);
    assert_eq!(leaf.bye_code(), Some(414));
}

#[async_std::test]
async fn a_restarted_node_does_not_reuse_its_muids() {
    let dir = temp_dir("restart");
    let start = || async {
        let mut cfg = servent::net::NodeConfig::new("127.0.0.1:0".parse().unwrap(), dir.clone());
        cfg.role = Role::Ultrapeer;
        Node::start(cfg).await.unwrap()
    };
    let a = start().await;
    let servent = a.servent();
    let first = a.search(b"\x80\x00x\x00", 2);
    a.shutdown().await;
    let b = start().await;
    assert_eq!(b.servent(), servent, "the servent GUID persists");
    assert_ne!(
        b.search(b"\x80\x00x\x00", 2),
        first,
        "peers would drop it as a duplicate"
    );
    b.shutdown().await;
}
