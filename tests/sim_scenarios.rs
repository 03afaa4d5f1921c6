//! Runs the multi-node scenarios of `conformance/scenarios/` in the simulator: the routing core
//! of the real servent over in-memory links.

use std::path::PathBuf;

use serde_json::Value;
use servent::handshake::Role;
use servent::sim::Sim;
use servent::wire::{
    FileIndex, QrpTable, Query, QueryFlags, QueryHit, Results, ResultsBuilder, Text, Trailer,
};

fn nums(v: &Value) -> Vec<usize> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|n| n.as_u64().expect("node numbers") as usize)
        .collect()
}

fn hit_payload(node: usize) -> Vec<u8> {
    let mut r = ResultsBuilder::new();
    r.push(FileIndex(1), 10, &format!("from {node}"), b"");
    let mut p = Vec::new();
    QueryHit {
        addr: "10.0.0.1:6346".parse().unwrap(),
        speed: 1,
        results: Results::from_bytes(r.bytes(), r.count()).unwrap(),
        trailer: Trailer::None,
        servent: servent::sim::servent_of(node),
    }
    .encode(&mut p);
    p
}

fn run(name: &str, s: &Value) {
    let n = s["nodes"].as_u64().unwrap() as usize;
    let leaves = nums(&s["leaves"]);
    let mut sim = Sim::new(n, |i| {
        // The origin's own search floods here: these pin how ultrapeers forward a query at
        // each hop. Dynamic querying at the origin has its own tests (sim_dq.rs, overlay::dq).
        let role = if leaves.contains(&i) {
            Role::Leaf
        } else {
            Role::Ultrapeer
        };
        let mut c = Sim::config(i, role);
        c.dynamic_query = false;
        c
    });
    // With `words`, every node has a QRP table (empty unless given): leaves send theirs to
    // their ultrapeers, ultrapeers exchange merged ones (last-hop QRP).
    if let Some(words) = s["words"].as_object() {
        for i in 0..n {
            let mut t = QrpTable::new(16);
            for w in words
                .get(&i.to_string())
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                t.insert_word(w.as_str().expect("words are strings"));
            }
            let mut out = Vec::new();
            sim.nodes[i].set_local_table(t, &mut out);
            sim.apply_actions(i, out);
        }
    }
    for l in s["links"].as_array().unwrap() {
        let l = nums(l);
        sim.connect(l[0], l[1]);
    }
    sim.run(u64::MAX);
    if s["words"].is_object() {
        // Ultrapeers re-check their merged tables once a minute: let the leaves' arrive.
        sim.advance(std::time::Duration::from_secs(61));
        sim.run(u64::MAX);
    }
    for k in nums(&s["kill"]) {
        sim.kill(k);
    }
    sim.run(u64::MAX);
    let answer = nums(&s["answer"]);
    sim.set_responder(Box::new(move |node, _q| {
        answer.contains(&node).then(|| hit_payload(node))
    }));
    let origin = s["origin"].as_u64().unwrap() as usize;
    let mut q = Vec::new();
    Query {
        flags: QueryFlags(0x8000),
        criteria: Text(s["query"].as_str().unwrap_or("scenario").as_bytes()),
        extensions: Default::default(),
    }
    .encode(&mut q);
    let muid = sim.search(origin, &q, s["ttl"].as_u64().unwrap() as u8);
    sim.run(u64::MAX);
    let seen = |node: usize| sim.queries_seen[node].get(&muid).copied().unwrap_or(0);
    let e = &s["expect"];
    for node in nums(&e["seen_once"]) {
        assert_eq!(
            seen(node),
            1,
            "{name}: node {node} should see the query once"
        );
    }
    for node in nums(&e["not_seen"]) {
        assert_eq!(
            seen(node),
            0,
            "{name}: node {node} should not see the query"
        );
    }
    if let Some(h) = e["hits_at_origin"].as_u64() {
        assert_eq!(
            sim.hits[origin].len() as u64,
            h,
            "{name}: hits at the origin"
        );
    }
    if let Some(h) = e["hits_elsewhere"].as_u64() {
        let others: usize = (0..n)
            .filter(|&i| i != origin)
            .map(|i| sim.hits[i].len())
            .sum();
        assert_eq!(others as u64, h, "{name}: hits elsewhere");
    }
}

#[test]
fn every_scenario_holds() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conformance/scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 9, "scenarios missing: {}", files.len());
    for f in files {
        let s: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        run(&f.file_stem().unwrap().to_string_lossy(), &s);
    }
}
