//! Supernodes with dynamic querying against flooding, at 600 nodes (the README's figures come
//! from `examples/supernode_sim.rs` at 10,000): same files, shares and queries for both; the
//! supernode design must find about as much while sending far fewer query descriptors. Smaller
//! than the example so it runs in seconds in a debug build: 60 ultrapeers of degree about 16.

use std::sync::Arc;

use servent::sim::supernode::{Params, Workload, markdown, run_flooding, run_supernodes};

#[test]
fn dynamic_querying_finds_as_much_as_flooding_for_far_fewer_messages() {
    let mut p = Params::full();
    p.nodes = 600;
    p.max_ultrapeers = 16;
    p.up_links_opened = 8;
    p.queries = 60;
    let w = Arc::new(Workload::new(&p));
    let dq = run_supernodes(&p, &w);
    let fl = run_flooding(&p, &w);
    println!("{}", markdown(&[&dq, &fl]));
    assert_eq!(dq.queries, 60);
    assert!(
        fl.succeeded > 20,
        "the workload has answerable queries: {}",
        fl.succeeded
    );
    assert!(
        dq.success_rate() >= fl.success_rate() - 0.05,
        "success {:.3} against flooding's {:.3}",
        dq.success_rate(),
        fl.success_rate()
    );
    let (dq_q, fl_q) = (
        dq.per_query(dq.query_messages),
        fl.per_query(fl.query_messages),
    );
    assert!(
        dq_q * 2.5 < fl_q,
        "query messages per query: {dq_q:.0} against flooding's {fl_q:.0}"
    );
    // Every query descriptor a dynamic query sends is counted: the searcher's, the probes,
    // each widening step and each copy relayed to ultrapeers and leaves.
    assert!(dq.query_messages > 3 * 60);
    // Nobody answers a query that cannot be answered.
    assert!(dq.succeeded <= dq.answerable && fl.succeeded <= fl.answerable);
}
