//! The routing core at scale: hundreds of nodes on a random graph, in one process, with
//! virtual time. Every node within the query's horizon must see it exactly once, none beyond,
//! and every hit must find its way back to the searcher.

use std::time::Duration;

use servent::handshake::Role;
use servent::sim::{Sim, SimRng};
use servent::wire::{
    Descriptor, Framed, Payload, Query, QueryFlags, QueryHit, Results, ResultsBuilder, Text,
    Trailer, frame,
};

const NODES: usize = 400;

fn random_graph(seed: u64) -> Sim {
    let mut sim = Sim::new(NODES, |n| {
        // The origin's own search floods here: these pin how ultrapeers forward a query at
        // each hop. Dynamic querying at the origin has its own tests (sim_dq.rs, overlay::dq).
        let mut c = Sim::config(n, Role::Ultrapeer);
        c.dynamic_query = false;
        c
    });
    let mut rng = SimRng::new(seed);
    // A ring keeps the graph connected; three random chords per node make it a small world of
    // degree about 8.
    for n in 0..NODES {
        sim.connect(n, (n + 1) % NODES);
    }
    for n in 0..NODES {
        for _ in 0..3 {
            let m = rng.below(NODES);
            if m != n && !sim.connected(n, m) {
                sim.connect(n, m);
            }
        }
    }
    sim.run(u64::MAX);
    sim
}

fn query_payload(words: &str) -> Vec<u8> {
    let mut p = Vec::new();
    Query {
        flags: QueryFlags(0x8000),
        criteria: Text(words.as_bytes()),
        extensions: Default::default(),
    }
    .encode(&mut p);
    p
}

/// Every node answers with one result named after itself.
fn hit_payload(node: usize) -> Vec<u8> {
    let mut r = ResultsBuilder::new();
    r.push(
        servent::wire::FileIndex(1),
        1000,
        &format!("node {node}.txt"),
        b"",
    );
    let hit = QueryHit {
        addr: "10.9.9.9:6346".parse().unwrap(),
        speed: 1000,
        results: Results::from_bytes(r.bytes(), r.count()).unwrap(),
        trailer: Trailer::None,
        servent: servent::sim::servent_of(node),
    };
    let mut p = Vec::new();
    hit.encode(&mut p);
    p
}

#[test]
fn a_flooded_query_reaches_each_node_within_its_horizon_exactly_once() {
    for (seed, ttl) in [(1, 3), (2, 4), (3, 2)] {
        let mut sim = random_graph(seed);
        let origin = seed as usize * 17 % NODES;
        let muid = sim.search(origin, &query_payload("free music"), ttl);
        sim.run(u64::MAX);
        let dist = sim.distances(origin);
        let mut inside = 0;
        for (n, d) in dist.iter().enumerate() {
            let seen = sim.queries_seen[n].get(&muid).copied().unwrap_or(0);
            let d = d.expect("graph is connected");
            if n != origin && d <= u32::from(ttl) {
                assert_eq!(seen, 1, "node {n} at distance {d} with TTL {ttl}");
                inside += 1;
            } else {
                assert_eq!(seen, 0, "node {n} at distance {d} with TTL {ttl}");
            }
        }
        assert!(
            inside > 20,
            "the horizon holds a real share of the graph: {inside}"
        );
    }
}

#[test]
fn every_hit_returns_to_the_searcher_and_only_there() {
    let mut sim = random_graph(9);
    sim.set_responder(Box::new(|n, _q| Some(hit_payload(n))));
    let origin = 5;
    let muid = sim.search(origin, &query_payload("anything"), 3);
    sim.run(u64::MAX);
    let answered: usize = (0..NODES)
        .filter(|&n| sim.queries_seen[n].contains_key(&muid))
        .count();
    assert!(answered > 20);
    assert_eq!(sim.hits[origin].len(), answered);
    let mut from: Vec<String> = sim.hits[origin]
        .iter()
        .map(|m| {
            let Ok(Framed::Frame(f)) = frame(m) else {
                panic!("hit does not frame")
            };
            assert_eq!(&m[..16], &muid, "hit carries the query's MUID");
            let Payload::QueryHit(h) = Descriptor::decode(&f).unwrap().payload else {
                panic!("not a hit")
            };
            h.results.iter().next().unwrap().name.to_string()
        })
        .collect();
    from.sort();
    from.dedup();
    assert_eq!(from.len(), answered, "one distinct hit per answering node");
    for n in (0..NODES).filter(|&n| n != origin) {
        assert!(sim.hits[n].is_empty(), "node {n} got someone else's hit");
    }
}

#[test]
fn a_killed_node_is_routed_around_and_its_peers_forget_it() {
    let mut sim = random_graph(4);
    sim.kill(7);
    sim.advance(Duration::from_secs(1));
    sim.run(u64::MAX);
    sim.set_responder(Box::new(|n, _q| Some(hit_payload(n))));
    let muid = sim.search(3, &query_payload("anything"), 4);
    sim.run(u64::MAX);
    assert!(!sim.queries_seen[7].contains_key(&muid));
    let answered = (0..NODES)
        .filter(|&n| sim.queries_seen[n].contains_key(&muid))
        .count();
    assert_eq!(sim.hits[3].len(), answered);
}
