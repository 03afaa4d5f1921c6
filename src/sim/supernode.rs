//! Ultrapeers with dynamic querying against plain flooding, on the same files, shares and
//! queries (`examples/supernode_sim.rs`, `tests/sim_dq.rs`).
//!
//! The model: a catalogue of files whose popularity follows Zipf's law; every leaf shares a few
//! files drawn by popularity; searchers are random leaves looking for a file drawn the same way.
//! Design (a) is Gnutella 0.6 with supernodes: about a tenth of the nodes are ultrapeers meshed
//! among themselves, every other node is a leaf of three of them and has sent each its QRP
//! table (built with the servent's own `share::words` and `QrpTable`); a leaf's query goes to
//! its ultrapeers, which run dynamic queries. Design (b) is flat Gnutella 0.4-style flooding: the
//! same nodes on a random graph, every node forwards with TTL 7 and answers from its own files.
//! Queries run one after another, each until the network is quiet.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::handshake::Role;
use crate::overlay::{Config, Rng};
use crate::share::words;
use crate::wire::qrp::QrpTable;
use crate::wire::{
    Descriptor, FileIndex, Framed, Payload, PayloadType, Query, QueryFlags, QueryHit, Results,
    ResultsBuilder, Text, Trailer, frame,
};

use super::{NodeId, Sim};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Params {
    pub nodes: usize,
    /// Share of ultrapeers in design (a).
    pub ultrapeer_share: f64,
    /// Ultrapeer links each ultrapeer opens in the mesh; with the ones it accepts it ends near
    /// twice this, capped by `max_ultrapeers`.
    pub up_links_opened: usize,
    /// Its `X-Degree` and the cap of its ultrapeer links.
    pub max_ultrapeers: usize,
    pub ultrapeers_per_leaf: usize,
    pub files: usize,
    pub zipf_s: f64,
    pub files_per_leaf: usize,
    pub queries: usize,
    /// Random-graph degree of design (b), drawn uniformly per node.
    pub flood_degree: (usize, usize),
    pub flood_ttl: u8,
    /// TTL a leaf gives its query (the servent's 3).
    pub leaf_ttl: u8,
    pub latency: Duration,
    pub seed: u64,
}

impl Params {
    /// The README's run: 10,000 nodes.
    pub fn full() -> Self {
        Params {
            nodes: 10_000,
            ultrapeer_share: 0.1,
            up_links_opened: 15,
            max_ultrapeers: 32,
            ultrapeers_per_leaf: 3,
            files: 10_000,
            zipf_s: 1.0,
            files_per_leaf: 20,
            queries: 1000,
            flood_degree: (4, 6),
            flood_ttl: 7,
            leaf_ttl: 3,
            latency: Duration::from_millis(100),
            seed: 2026,
        }
    }
}

/// QRP table size of a leaf (the servent's `QRP_BITS`).
const QRP_BITS: u8 = 16;
/// Routes kept per simulated node. Queries run one at a time, so a node needs routes for the
/// current one and the few pings of the set-up; the production 2^17 would take ~13 MB per
/// core, 130 GB for 10,000.
const SIM_ROUTES: usize = 512;
const SIM_PUSH_ROUTES: usize = 64;

/// The files, what each node shares and the queries, shared by both designs.
pub struct Workload {
    /// Each file's name: three made-up words and an extension.
    pub names: Vec<String>,
    /// Each file's keywords, normalised.
    words: Vec<Vec<String>>,
    /// Files shared by each node (empty for the ultrapeers of design (a)).
    pub shares: Vec<Vec<u32>>,
    pub ultrapeer: Vec<bool>,
    /// (searching node, file looked for).
    pub queries: Vec<(NodeId, u32)>,
}

/// Made-up words from syllables: distinct, pronounceable, 6 letters.
fn word(mut k: usize) -> String {
    const SYL: [&str; 16] = [
        "ka", "lo", "mi", "ne", "ru", "so", "ta", "vi", "be", "do", "fu", "ga", "hi", "jo", "pe",
        "zu",
    ];
    let mut w = String::new();
    for _ in 0..3 {
        w.push_str(SYL[k % 16]);
        k /= 16;
    }
    w
}

/// A uniform float in [0, 1).
fn unit(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Zipf's law over `n` ranks: draw by binary search in the cumulative weights.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let cdf: Vec<f64> = (1..=n)
            .map(|k| {
                acc += 1.0 / (k as f64).powf(s);
                acc
            })
            .collect();
        Zipf(cdf)
    }

    fn draw(&self, rng: &mut Rng) -> u32 {
        let total = *self.0.last().expect("n > 0");
        let x = unit(rng) * total;
        self.0.partition_point(|&c| c <= x).min(self.0.len() - 1) as u32
    }
}

impl Workload {
    pub fn new(p: &Params) -> Self {
        let mut rng = Rng::new(p.seed);
        let vocabulary = 4096;
        let names: Vec<String> = (0..p.files)
            .map(|_| {
                let w: Vec<String> = (0..3).map(|_| word(rng.below(vocabulary))).collect();
                format!("{} {} {}.ogg", w[0], w[1], w[2])
            })
            .collect();
        let file_words = names.iter().map(|n| words::words(n)).collect();
        let ups = ((p.nodes as f64) * p.ultrapeer_share).round() as usize;
        let mut ultrapeer = vec![false; p.nodes];
        let mut order: Vec<NodeId> = (0..p.nodes).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        for &n in &order[..ups.min(p.nodes)] {
            ultrapeer[n] = true;
        }
        let zipf = Zipf::new(p.files, p.zipf_s);
        let shares: Vec<Vec<u32>> = (0..p.nodes)
            .map(|n| {
                let mut mine = Vec::new();
                if ultrapeer[n] {
                    return mine;
                }
                let want = p.files_per_leaf.min(p.files);
                while mine.len() < want {
                    let f = zipf.draw(&mut rng);
                    if !mine.contains(&f) {
                        mine.push(f);
                    }
                }
                mine
            })
            .collect();
        let leaves: Vec<NodeId> = (0..p.nodes).filter(|&n| !ultrapeer[n]).collect();
        let queries = (0..p.queries)
            .map(|_| (leaves[rng.below(leaves.len())], zipf.draw(&mut rng)))
            .collect();
        Workload {
            names,
            words: file_words,
            shares,
            ultrapeer,
            queries,
        }
    }

    /// The query for file `f`: its three words, as a user would type them.
    pub fn query_payload(&self, f: u32) -> Vec<u8> {
        let w = &self.words[f as usize];
        let text = format!("{} {} {}", w[0], w[1], w[2]);
        let mut p = Vec::new();
        Query {
            flags: QueryFlags(QueryFlags::MARKED),
            criteria: Text(text.as_bytes()),
            extensions: Default::default(),
        }
        .encode(&mut p);
        p
    }

    /// Node `n`'s QRP table, as the servent builds one.
    fn qrp_table(&self, n: NodeId) -> QrpTable {
        let mut t = QrpTable::new(QRP_BITS);
        for &f in &self.shares[n] {
            for w in words::qrp_words(&self.names[f as usize]) {
                t.insert_word(&w);
            }
        }
        t
    }

    /// Files of node `n` whose names hold every word of `query`.
    fn matches(&self, n: NodeId, query: &[String]) -> Vec<u32> {
        self.shares[n]
            .iter()
            .copied()
            .filter(|&f| {
                let fw = &self.words[f as usize];
                !query.is_empty() && query.iter().all(|q| fw.contains(q))
            })
            .collect()
    }

    /// A responder for the simulator: node `n` answers a query with the files it shares whose
    /// names hold every word. Queries run one at a time, so the last one's words are kept.
    fn responder(self: Arc<Self>) -> super::Responder {
        let mut last: Option<([u8; 16], Vec<String>)> = None;
        Box::new(move |n, msg| {
            if self.shares[n].is_empty() || msg.len() < 16 {
                return None;
            }
            if last.as_ref().is_none_or(|(m, _)| m[..] != msg[..16]) {
                let Ok(Framed::Frame(f)) = frame(msg) else {
                    return None;
                };
                let Payload::Query(q) = Descriptor::decode(&f).ok()?.payload else {
                    return None;
                };
                let mut m = [0u8; 16];
                m.copy_from_slice(&msg[..16]);
                last = Some((m, words::words(&q.criteria.to_string_lossy())));
            }
            self.answer(n, &last.as_ref().expect("set above").1)
        })
    }

    /// The QueryHit payload node `n` answers a query for `query` with, if it has anything.
    fn answer(&self, n: NodeId, query: &[String]) -> Option<Vec<u8>> {
        let found = self.matches(n, query);
        if found.is_empty() {
            return None;
        }
        let mut r = ResultsBuilder::new();
        for f in found.iter().take(255) {
            r.push(FileIndex(*f), 4_000_000, &self.names[*f as usize], b"");
        }
        let mut p = Vec::new();
        QueryHit {
            addr: "10.200.0.1:6346".parse().expect("literal"),
            speed: 1000,
            results: Results::from_bytes(r.bytes(), r.count()).ok()?,
            trailer: Trailer::None,
            servent: super::servent_of(n),
        }
        .encode(&mut p);
        Some(p)
    }
}

/// What one design did over all the queries.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub design: String,
    pub queries: usize,
    /// Queries with at least one result.
    pub succeeded: usize,
    /// Queries where some node other than the searcher shares the file.
    pub answerable: usize,
    /// Query descriptors put on links (every copy on every link, duplicates included).
    pub query_messages: u64,
    pub hit_messages: u64,
    /// Everything else sent during the queries (BEAR/11 and BEAR/12 here).
    pub other_messages: u64,
    pub results: u64,
    /// Links the first hit travelled, per successful query.
    pub hops_to_first: Vec<u32>,
    /// Of `query_messages`, those received by a leaf.
    pub query_messages_to_leaves: u64,
    /// Virtual seconds from the search to its first hit, per successful query.
    pub secs_to_first: Vec<f64>,
    /// Peak live dynamic queries on any node, and links per ultrapeer (min, mean, max).
    pub up_degree: (usize, f64, usize),
    pub wall: Duration,
    /// Of `wall`, building the overlay (links, QRP tables).
    pub setup: Duration,
    /// QRP descriptors sent while building it (leaves' tables, ultrapeers' merged tables):
    /// a cost paid once per link, not per query.
    pub setup_qrp_messages: u64,
    /// Query descriptors sent for each query.
    pub query_messages_each: Vec<u64>,
    /// Where the query descriptors went, by how many other nodes share the file (design (a)).
    pub breakdown: Vec<Breakdown>,
}

/// Popularity classes of [`Breakdown`]: most holders (other than the searcher) of each.
pub const HOLDER_CLASSES: [u32; 5] = [0, 3, 30, 300, u32::MAX];

/// Where the query descriptors of one popularity class went, summed over its queries.
#[derive(Debug, Clone, Default)]
pub struct Breakdown {
    /// Most holders in this class (see [`HOLDER_CLASSES`]).
    pub max_holders: u32,
    pub queries: u64,
    pub succeeded: u64,
    /// The searching leaf to its ultrapeers.
    pub leaf_to_up: u64,
    /// Sent by the searcher's ultrapeers to ultrapeers (their dynamic queries), by TTL.
    pub dq_by_ttl: [u64; 8],
    /// Of those, to an ultrapeer that had already been sent the query.
    pub dq_dup: u64,
    /// Forwarded by other ultrapeers to ultrapeers with TTL ≥ 2, and on the last hop (TTL 1).
    pub forwarded: u64,
    pub last_hop: u64,
    /// Of the forwarded and last-hop ones, to an ultrapeer that had already been sent it.
    pub forwarded_dup: u64,
    /// To leaves, from the searcher's ultrapeers and from others; and of all those, to a
    /// leaf that had already been sent it (by another of its ultrapeers).
    pub to_leaves_own: u64,
    pub to_leaves_other: u64,
    pub leaf_dup: u64,
    /// Summed over the queries: the share of ultrapeers whose leaves' files hold at least two
    /// of the query's three words, so that a last-hop table passes it (a lower bound: hash
    /// collisions in the tables let more through).
    pub ups_passing: f64,
}

impl Breakdown {
    pub fn total(&self) -> u64 {
        self.leaf_to_up
            + self.dq_by_ttl.iter().sum::<u64>()
            + self.forwarded
            + self.last_hop
            + self.to_leaves_own
            + self.to_leaves_other
    }
}

/// The breakdown table, per query of each class.
pub fn breakdown_markdown(bs: &[Breakdown]) -> String {
    let mut s = String::from(
        "| Other holders | Queries | Success | All / query | Leaf→UPs | DQ sends (TTL 1/2/3) | DQ to an UP already sent it | Forwarded TTL≥2 | Last hop | Fwd to an UP already sent it | To leaves (own UPs / others) | Leaf copies beyond the first | UPs a last hop passes |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut lo = 0u32;
    for b in bs {
        let q = b.queries.max(1) as f64;
        let per = |n: u64| n as f64 / q;
        let class = if b.max_holders == u32::MAX {
            format!("> {}", lo.saturating_sub(1))
        } else if lo == b.max_holders {
            format!("{lo}")
        } else {
            format!("{lo}–{}", b.max_holders)
        };
        s.push_str(&format!(
            "| {class} | {} | {:.1} % | {:.0} | {:.1} | {:.1} / {:.1} / {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} / {:.0} | {:.0} | ≥ {:.0} % |\n",
            b.queries,
            100.0 * b.succeeded as f64 / q,
            per(b.total()),
            per(b.leaf_to_up),
            per(b.dq_by_ttl[1]),
            per(b.dq_by_ttl[2]),
            per(b.dq_by_ttl[3..].iter().sum()),
            per(b.dq_dup),
            per(b.forwarded),
            per(b.last_hop),
            per(b.forwarded_dup),
            per(b.to_leaves_own),
            per(b.to_leaves_other),
            per(b.leaf_dup),
            100.0 * b.ups_passing / q,
        ));
        lo = b.max_holders.saturating_add(1);
    }
    s
}

impl Report {
    pub fn per_query(&self, n: u64) -> f64 {
        n as f64 / self.queries.max(1) as f64
    }

    pub fn success_rate(&self) -> f64 {
        self.succeeded as f64 / self.queries.max(1) as f64
    }

    pub fn median_hops(&self) -> f64 {
        median(self.hops_to_first.iter().map(|&h| f64::from(h)).collect())
    }

    pub fn mean_hops(&self) -> f64 {
        mean(self.hops_to_first.iter().map(|&h| f64::from(h)))
    }

    pub fn median_query_messages(&self) -> f64 {
        median(self.query_messages_each.iter().map(|&m| m as f64).collect())
    }

    pub fn median_secs(&self) -> f64 {
        median(self.secs_to_first.clone())
    }

    pub fn mean_secs(&self) -> f64 {
        mean(self.secs_to_first.iter().copied())
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (mut s, mut n) = (0.0, 0usize);
    for x in v {
        s += x;
        n += 1;
    }
    if n == 0 { f64::NAN } else { s / n as f64 }
}

/// A config for the simulator's cores: tables sized for one query at a time, and no alive
/// pings or idle timeouts, since only the nodes running a dynamic query get ticks.
fn sim_config(n: NodeId, role: Role) -> Config {
    let mut c = Sim::config(n, role);
    c.route_capacity = SIM_ROUTES;
    c.push_route_capacity = SIM_PUSH_ROUTES;
    let year = Duration::from_secs(365 * 24 * 3600);
    c.alive_interval = year;
    c.idle_timeout = year;
    c
}

fn links_per_node(sim: &Sim, of: impl Fn(NodeId) -> bool, role: Role) -> (usize, f64, usize) {
    let counts: Vec<usize> = (0..sim.nodes.len())
        .filter(|&n| of(n))
        .map(|n| sim.nodes[n].connection_count(role))
        .collect();
    let sum: usize = counts.iter().sum();
    (
        counts.iter().copied().min().unwrap_or(0),
        sum as f64 / counts.len().max(1) as f64,
        counts.iter().copied().max().unwrap_or(0),
    )
}

/// Design (a): ultrapeers with QRP and dynamic querying.
pub fn run_supernodes(p: &Params, w: &Arc<Workload>) -> Report {
    let started = Instant::now();
    let mut rng = Rng::new(p.seed ^ 0xA);
    let mut sim = Sim::new(p.nodes, |n| {
        if w.ultrapeer[n] {
            let mut c = sim_config(n, Role::Ultrapeer);
            c.max_ultrapeers = p.max_ultrapeers;
            // Leaves pick ultrapeers at random, so some get more than the 30 average.
            c.max_leaves = 100;
            c
        } else {
            sim_config(n, Role::Leaf)
        }
    });
    sim.record_queries = false;
    sim.latency = p.latency;
    let ups: Vec<NodeId> = (0..p.nodes).filter(|&n| w.ultrapeer[n]).collect();
    for &u in &ups {
        // An ultrapeer sharing nothing still has a table, which its leaves' are merged into
        // for its neighbours (last-hop QRP).
        let mut out = Vec::new();
        sim.nodes[u].set_local_table(QrpTable::new(QRP_BITS), &mut out);
        sim.apply_actions(u, out);
    }
    for n in (0..p.nodes).filter(|&n| !w.ultrapeer[n]) {
        let mut mine = 0;
        while mine < p.ultrapeers_per_leaf.min(ups.len()) {
            let u = ups[rng.below(ups.len())];
            if !sim.connected(n, u) {
                sim.connect(n, u);
                mine += 1;
            }
        }
        let mut out = Vec::new();
        sim.nodes[n].set_local_table(w.qrp_table(n), &mut out);
        sim.apply_actions(n, out);
    }
    // Leaves' tables first, so each ultrapeer sends its neighbours its merged table once, as
    // the mesh links come up (an unchanged table is never resent).
    sim.run(u64::MAX);
    let mut degree = vec![0usize; p.nodes];
    for &u in &ups {
        let mut opened = 0;
        let mut tries = 0;
        while opened < p.up_links_opened && tries < 20 * p.up_links_opened {
            tries += 1;
            let v = ups[rng.below(ups.len())];
            if v == u
                || sim.connected(u, v)
                || degree[u] >= p.max_ultrapeers
                || degree[v] >= p.max_ultrapeers
            {
                continue;
            }
            sim.connect(u, v);
            degree[u] += 1;
            degree[v] += 1;
            opened += 1;
        }
    }
    sim.run(u64::MAX);
    let setup = started.elapsed();
    let qrp_sent = sim.sent_by_kind[PayloadType::Qrp.to_byte() as usize];
    let up_degree = links_per_node(&sim, |n| w.ultrapeer[n], Role::Ultrapeer);
    sim.set_responder(w.clone().responder());
    let mut r = run_queries(&mut sim, w, p.leaf_ttl, true);
    ups_passing(&sim, w, &ups, &mut r);
    r.design = "Ultrapeers + QRP + dynamic querying".into();
    r.up_degree = up_degree;
    r.setup = setup;
    r.setup_qrp_messages = qrp_sent;
    r.wall = started.elapsed();
    r
}

/// Fills [`Breakdown::ups_passing`]: how many ultrapeers' last-hop tables a query's words get
/// through, from the words of their leaves' files.
fn ups_passing(sim: &Sim, w: &Workload, ups: &[NodeId], r: &mut Report) {
    let words: Vec<std::collections::HashSet<&str>> = ups
        .iter()
        .map(|&u| {
            sim.neighbours(u)
                .into_iter()
                .filter(|&n| !w.ultrapeer[n])
                .flat_map(|n| w.shares[n].iter())
                .flat_map(|&f| w.words[f as usize].iter().map(String::as_str))
                .collect()
        })
        .collect();
    let mut holders = vec![0u32; w.names.len()];
    for sh in &w.shares {
        for &f in sh {
            holders[f as usize] += 1;
        }
    }
    for &(n, f) in &w.queries {
        let others = holders[f as usize] - u32::from(w.shares[n].contains(&f));
        let class = HOLDER_CLASSES
            .iter()
            .position(|&m| others <= m)
            .expect("last class is unbounded");
        let q = &w.words[f as usize];
        let passing = words
            .iter()
            .filter(|set| {
                let hits = q.iter().filter(|x| set.contains(x.as_str())).count();
                if q.len() < 3 {
                    hits == q.len()
                } else {
                    hits * 3 >= q.len() * 2
                }
            })
            .count();
        r.breakdown[class].ups_passing += passing as f64 / ups.len().max(1) as f64;
    }
}

/// Design (b): every node a peer on a random graph, flooding with TTL `flood_ttl`.
pub fn run_flooding(p: &Params, w: &Arc<Workload>) -> Report {
    let started = Instant::now();
    let mut rng = Rng::new(p.seed ^ 0xB);
    let mut sim = Sim::new(p.nodes, |n| {
        let mut c = sim_config(n, Role::Ultrapeer);
        c.dynamic_query = false;
        c.max_ttl = p.flood_ttl;
        c.max_ultrapeers = p.flood_degree.1;
        c
    });
    sim.record_queries = false;
    sim.latency = p.latency;
    let (lo, hi) = p.flood_degree;
    let want: Vec<usize> = (0..p.nodes).map(|_| lo + rng.below(hi - lo + 1)).collect();
    let mut degree = vec![0usize; p.nodes];
    for n in 0..p.nodes {
        let mut tries = 0;
        while degree[n] < want[n] && tries < 200 {
            tries += 1;
            let m = rng.below(p.nodes);
            if m == n || sim.connected(n, m) || degree[m] >= want[m] {
                continue;
            }
            sim.connect(n, m);
            degree[n] += 1;
            degree[m] += 1;
        }
    }
    sim.run(u64::MAX);
    let setup = started.elapsed();
    let qrp_sent = sim.sent_by_kind[PayloadType::Qrp.to_byte() as usize];
    let up_degree = links_per_node(&sim, |_| true, Role::Ultrapeer);
    sim.set_responder(w.clone().responder());
    let mut r = run_queries(&mut sim, w, p.flood_ttl, false);
    r.design = format!("Flooding, TTL {}", p.flood_ttl);
    r.up_degree = up_degree;
    r.setup = setup;
    r.setup_qrp_messages = qrp_sent;
    r.wall = started.elapsed();
    r
}

fn run_queries(sim: &mut Sim, w: &Workload, ttl: u8, leaf: bool) -> Report {
    let mut r = Report {
        queries: w.queries.len(),
        ..Report::default()
    };
    let kinds = |sim: &Sim| {
        let q = sim.sent_by_kind[PayloadType::Query.to_byte() as usize];
        let h = sim.sent_by_kind[PayloadType::QueryHit.to_byte() as usize];
        let all: u64 = sim.sent_by_kind.iter().sum();
        (q, h, all - q - h)
    };
    let before = kinds(sim);
    let leaves_before: u64 = (0..sim.nodes.len())
        .filter(|&n| sim.nodes[n].role() == Role::Leaf)
        .map(|n| sim.queries_received[n])
        .sum();
    let mut holders = vec![0u32; w.names.len()];
    for s in &w.shares {
        for &f in s {
            holders[f as usize] += 1;
        }
    }
    if leaf {
        sim.query_log = Some(Vec::new());
        r.breakdown = HOLDER_CLASSES
            .iter()
            .map(|&max_holders| Breakdown {
                max_holders,
                ..Breakdown::default()
            })
            .collect();
    }
    let mut sent_to = vec![false; sim.nodes.len()];
    for &(n, f) in &w.queries {
        let others = holders[f as usize] - u32::from(w.shares[n].contains(&f));
        if others > 0 {
            r.answerable += 1;
        }
        if let Some(log) = sim.query_log.as_mut() {
            log.clear();
        }
        sim.hits[n].clear();
        sim.hit_at[n].clear();
        let t0 = sim.now;
        let sent_before = kinds(sim).0;
        sim.search(n, &w.query_payload(f), ttl);
        // The ultrapeers of the searching leaf run its dynamic queries: tick them when due.
        let runners: Vec<NodeId> = if leaf { sim.neighbours(n) } else { vec![n] };
        loop {
            let msg = sim.next_delivery();
            let dq = runners
                .iter()
                .filter_map(|&u| sim.nodes[u].next_deadline())
                .min();
            let t = match (msg, dq) {
                (None, None) => break,
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).expect("one is some"),
            };
            sim.run_until(t);
            if dq.is_some_and(|d| d <= t) {
                for &u in &runners {
                    if sim.nodes[u].next_deadline().is_some_and(|d| d <= t) {
                        sim.tick(u);
                    }
                }
            }
        }
        r.query_messages_each.push(kinds(sim).0 - sent_before);
        let mut first: Option<(Instant, u32)> = None;
        for (m, &at) in sim.hits[n].iter().zip(&sim.hit_at[n]) {
            let Ok(Framed::Frame(fr)) = frame(m) else {
                continue;
            };
            let Ok(d) = Descriptor::decode(&fr) else {
                continue;
            };
            if let Payload::QueryHit(h) = d.payload {
                r.results += h.results.len() as u64;
                // Hops counts the relays; the links travelled are one more.
                let hops = u32::from(d.hops.0) + 1;
                if first.is_none_or(|(t, _)| at < t) {
                    first = Some((at, hops));
                }
            }
        }
        if let Some(log) = sim.query_log.as_ref() {
            let class = HOLDER_CLASSES
                .iter()
                .position(|&m| others <= m)
                .expect("last class is unbounded");
            let b = &mut r.breakdown[class];
            b.queries += 1;
            b.succeeded += u64::from(first.is_some());
            for &(from, to, ttl) in log {
                let dup = std::mem::replace(&mut sent_to[to], true);
                let to_up = sim.nodes[to].role() == Role::Ultrapeer;
                if from == n {
                    b.leaf_to_up += 1;
                } else if !to_up {
                    if runners.contains(&from) {
                        b.to_leaves_own += 1;
                    } else {
                        b.to_leaves_other += 1;
                    }
                    b.leaf_dup += u64::from(dup);
                } else if runners.contains(&from) {
                    b.dq_by_ttl[usize::from(ttl).min(7)] += 1;
                    b.dq_dup += u64::from(dup);
                } else {
                    if ttl >= 2 {
                        b.forwarded += 1;
                    } else {
                        b.last_hop += 1;
                    }
                    b.forwarded_dup += u64::from(dup);
                }
            }
            for &(_, to, _) in log {
                sent_to[to] = false;
            }
        }
        if let Some((at, hops)) = first {
            r.succeeded += 1;
            r.hops_to_first.push(hops);
            r.secs_to_first
                .push(at.saturating_duration_since(t0).as_secs_f64());
        }
    }
    let after = kinds(sim);
    r.query_messages_to_leaves = (0..sim.nodes.len())
        .filter(|&n| sim.nodes[n].role() == Role::Leaf)
        .map(|n| sim.queries_received[n])
        .sum::<u64>()
        - leaves_before;
    r.query_messages = after.0 - before.0;
    r.hit_messages = after.1 - before.1;
    r.other_messages = after.2 - before.2;
    r
}

/// The Markdown table of both runs.
pub fn markdown(rs: &[&Report]) -> String {
    let mut s = String::from(
        "| Design | Query msgs / query | Hit msgs / query | Other msgs / query | Success | Hops to 1st result (median / mean) | Secs to 1st result (median / mean) | Results / query |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rs {
        s.push_str(&format!(
            "| {} | {:.0} | {:.1} | {:.1} | {:.1} % ({}/{}) | {:.0} / {:.2} | {:.1} / {:.1} | {:.1} |\n",
            r.design,
            r.per_query(r.query_messages),
            r.per_query(r.hit_messages),
            r.per_query(r.other_messages),
            100.0 * r.success_rate(),
            r.succeeded,
            r.queries,
            r.median_hops(),
            r.mean_hops(),
            r.median_secs(),
            r.mean_secs(),
            r.per_query(r.results),
        ));
    }
    s
}
