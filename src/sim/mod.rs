//! Many nodes over the same routing core as the real servent, joined by in-memory links, with
//! virtual time. Every link has the same latency (zero unless set) and messages sent at the same
//! time are delivered in the order they were sent, so a flood reaches each node first along a
//! shortest path.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::handshake::Role;
use crate::overlay::{Action, Config, ConnId, ConnInfo, Delivery, Event, Overlay};
use crate::wire::{Framed, ServentId, frame};

pub mod supernode;

/// The generator for topologies and workloads: the core's, so one seed reproduces a run.
pub use crate::overlay::Rng as SimRng;

pub type NodeId = usize;

/// What the simulated servent does with a query delivered to it: `Some(payload)` answers
/// with that QueryHit payload.
pub type Responder = Box<dyn FnMut(NodeId, &[u8]) -> Option<Vec<u8>>>;

pub struct Sim {
    pub nodes: Vec<Overlay>,
    /// (node, its link id) → (peer node, the peer's id for the same link).
    links: HashMap<(NodeId, ConnId), (NodeId, ConnId)>,
    /// Linked pairs, both ways round, so `connected` is cheap on big graphs.
    adjacent: HashSet<(NodeId, NodeId)>,
    next_conn: Vec<ConnId>,
    /// (delivery time, sequence, to node, on its link, message).
    queue: BinaryHeap<Reverse<Queued>>,
    seq: u64,
    /// Delay of every link.
    pub latency: Duration,
    pub now: Instant,
    /// Queries delivered to each node (MUID bytes → count), unless `record_queries` is off.
    pub queries_seen: Vec<HashMap<[u8; 16], u32>>,
    pub record_queries: bool,
    /// Hits delivered to each node for its own searches, and when each arrived.
    pub hits: Vec<Vec<Arc<[u8]>>>,
    pub hit_at: Vec<Vec<Instant>>,
    /// Descriptors carried over links in total.
    pub messages: u64,
    /// Descriptors put on links, by payload type byte.
    pub sent_by_kind: [u64; 256],
    /// Query descriptors put on links towards each node.
    pub queries_received: Vec<u64>,
    /// When set, every query descriptor put on a link: (from, to, TTL it carries).
    pub query_log: Option<Vec<(NodeId, NodeId, u8)>>,
    responder: Option<Responder>,
}

type Queued = (Instant, u64, NodeId, ConnId, Arc<[u8]>);

fn addr_of(n: NodeId) -> SocketAddrV4 {
    SocketAddrV4::new(
        std::net::Ipv4Addr::from(0x0A00_0000u32 + n as u32 + 1),
        6346,
    )
}

pub fn servent_of(n: NodeId) -> ServentId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&(n as u64 + 1).to_le_bytes());
    ServentId::from_random(b)
}

impl Sim {
    /// `n` nodes, each made from its config by `configure`.
    pub fn new(n: usize, mut configure: impl FnMut(NodeId) -> Config) -> Self {
        let now = Instant::now();
        Sim {
            nodes: (0..n).map(|i| Overlay::new(configure(i), now)).collect(),
            links: HashMap::new(),
            adjacent: HashSet::new(),
            next_conn: vec![1; n],
            queue: BinaryHeap::new(),
            seq: 0,
            latency: Duration::ZERO,
            now,
            queries_seen: vec![HashMap::new(); n],
            record_queries: true,
            hits: vec![Vec::new(); n],
            hit_at: vec![Vec::new(); n],
            messages: 0,
            sent_by_kind: [0; 256],
            queries_received: vec![0; n],
            query_log: None,
            responder: None,
        }
    }

    /// A config for node `n` with the simulator's addressing.
    pub fn config(n: NodeId, role: Role) -> Config {
        let mut c = Config::new(role, servent_of(n));
        c.accept_private = true;
        c.advertise = Some(addr_of(n));
        c.seed = n as u64 * 7919 + 1;
        c
    }

    pub fn set_responder(&mut self, r: Responder) {
        self.responder = Some(r);
    }

    pub fn connected(&self, a: NodeId, b: NodeId) -> bool {
        self.adjacent.contains(&(a, b))
    }

    /// Links `a` (dialling) and `b`, as after a successful handshake.
    pub fn connect(&mut self, a: NodeId, b: NodeId) {
        let (ca, cb) = (self.next_conn[a], self.next_conn[b]);
        self.next_conn[a] += 1;
        self.next_conn[b] += 1;
        self.links.insert((a, ca), (b, cb));
        self.links.insert((b, cb), (a, ca));
        self.adjacent.insert((a, b));
        self.adjacent.insert((b, a));
        let nodes = &self.nodes;
        let info = |peer: NodeId, outbound: bool| ConnInfo {
            addr: addr_of(peer),
            role: nodes[peer].role(),
            outbound,
            listen: Some(addr_of(peer)),
            guid: Some(servent_of(peer)),
            max_ttl: Some(nodes[peer].config().max_ttl),
            degree: Some(nodes[peer].config().max_ultrapeers as u32),
            ggep: true,
            user_agent: "sim".into(),
            up_qrp: nodes[peer].role() == Role::Ultrapeer,
        };
        let (ia, ib) = (info(b, true), info(a, false));
        let now = self.now;
        let mut out = Vec::new();
        self.nodes[a].handle(Event::Connected { id: ca, info: ia }, now, &mut out);
        self.apply(a, out);
        let mut out = Vec::new();
        self.nodes[b].handle(Event::Connected { id: cb, info: ib }, now, &mut out);
        self.apply(b, out);
    }

    /// Cuts every link of `n`, as if it had been killed.
    pub fn kill(&mut self, n: NodeId) {
        let mine: Vec<((NodeId, ConnId), (NodeId, ConnId))> = self
            .links
            .iter()
            .filter(|(k, _)| k.0 == n)
            .map(|(k, v)| (*k, *v))
            .collect();
        for (k, (peer, pc)) in mine {
            self.links.remove(&k);
            self.links.remove(&(peer, pc));
            self.adjacent.remove(&(n, peer));
            self.adjacent.remove(&(peer, n));
            let mut out = Vec::new();
            self.nodes[peer].handle(Event::Closed { id: pc }, self.now, &mut out);
            self.apply(peer, out);
        }
    }

    /// Starts a search at `n` and returns its MUID.
    pub fn search(&mut self, n: NodeId, payload: &[u8], ttl: u8) -> [u8; 16] {
        let mut out = Vec::new();
        let muid = self.nodes[n].search(payload, ttl, self.now, &mut out);
        self.apply(n, out);
        muid.0
    }

    /// Carries out actions node `n`'s core wrote outside [`Sim`]'s own calls.
    pub fn apply_actions(&mut self, n: NodeId, actions: Vec<Action>) {
        self.apply(n, actions);
    }

    /// The nodes linked to `n`.
    pub fn neighbours(&self, n: NodeId) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self
            .links
            .iter()
            .filter(|(k, _)| k.0 == n)
            .map(|(_, v)| v.0)
            .collect();
        v.sort();
        v
    }

    fn apply(&mut self, n: NodeId, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send { to, msg } => {
                    if let Some(&(peer, pc)) = self.links.get(&(n, to)) {
                        let kind = msg.get(16).copied().unwrap_or(0);
                        self.sent_by_kind[usize::from(kind)] += 1;
                        if kind == crate::wire::PayloadType::Query.to_byte() {
                            self.queries_received[peer] += 1;
                            if let Some(log) = self.query_log.as_mut() {
                                log.push((n, peer, msg.get(17).copied().unwrap_or(0)));
                            }
                        }
                        self.seq += 1;
                        self.queue.push(Reverse((
                            self.now + self.latency,
                            self.seq,
                            peer,
                            pc,
                            msg,
                        )));
                    }
                }
                Action::Close { id, .. } => {
                    if let Some((peer, pc)) = self.links.remove(&(n, id)) {
                        self.links.remove(&(peer, pc));
                        self.adjacent.remove(&(n, peer));
                        self.adjacent.remove(&(peer, n));
                        let mut out = Vec::new();
                        self.nodes[peer].handle(Event::Closed { id: pc }, self.now, &mut out);
                        self.apply(peer, out);
                    }
                    let mut out = Vec::new();
                    self.nodes[n].handle(Event::Closed { id }, self.now, &mut out);
                    self.apply(n, out);
                }
                Action::Dial(_) | Action::RoleChanged { .. } | Action::Bootstrap => {}
                Action::Deliver(Delivery::Query { from, msg }) => {
                    let mut muid = [0u8; 16];
                    muid.copy_from_slice(&msg[..16]);
                    if self.record_queries {
                        *self.queries_seen[n].entry(muid).or_default() += 1;
                    }
                    let answer = self.responder.as_mut().and_then(|r| r(n, &msg));
                    if let Some(payload) = answer {
                        let mut out = Vec::new();
                        self.nodes[n].reply(from, &msg, &payload, &mut out);
                        self.apply(n, out);
                    }
                }
                Action::Deliver(Delivery::Hit { msg }) => {
                    self.hits[n].push(msg);
                    self.hit_at[n].push(self.now);
                }
                Action::Deliver(_) => {}
            }
        }
    }

    /// Delivers queued messages until none are left (or `limit` were delivered), moving
    /// virtual time on to each delivery.
    pub fn run(&mut self, limit: u64) -> u64 {
        self.deliver(None, limit)
    }

    /// Delivers what is due by `t`, then sets the time to `t`.
    pub fn run_until(&mut self, t: Instant) -> u64 {
        let n = self.deliver(Some(t), u64::MAX);
        self.now = self.now.max(t);
        n
    }

    /// When the next queued message arrives.
    pub fn next_delivery(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse(q)| q.0)
    }

    fn deliver(&mut self, until: Option<Instant>, limit: u64) -> u64 {
        let mut delivered = 0;
        while let Some(Reverse(q)) = self.queue.peek() {
            if until.is_some_and(|t| q.0 > t) {
                break;
            }
            let Some(Reverse((at, _, n, conn, msg))) = self.queue.pop() else {
                break;
            };
            self.now = self.now.max(at);
            delivered += 1;
            self.messages += 1;
            let Ok(Framed::Frame(f)) = frame(&msg) else {
                continue;
            };
            let mut out = Vec::new();
            self.nodes[n].handle(Event::Frame { id: conn, frame: f }, self.now, &mut out);
            self.apply(n, out);
            if delivered >= limit {
                break;
            }
        }
        delivered
    }

    /// Lets node `n`'s timers fire now.
    pub fn tick(&mut self, n: NodeId) {
        let mut out = Vec::new();
        self.nodes[n].handle(Event::Tick, self.now, &mut out);
        self.apply(n, out);
    }

    /// Moves virtual time on and lets every node's timers fire.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        for n in 0..self.nodes.len() {
            let mut out = Vec::new();
            self.nodes[n].handle(Event::Tick, self.now, &mut out);
            self.apply(n, out);
        }
    }

    /// Hop distances from `from` over the current links (breadth-first).
    pub fn distances(&self, from: NodeId) -> Vec<Option<u32>> {
        let mut adj: Vec<Vec<NodeId>> = vec![Vec::new(); self.nodes.len()];
        for (&(a, _), &(b, _)) in &self.links {
            adj[a].push(b);
        }
        let mut dist = vec![None; self.nodes.len()];
        dist[from] = Some(0);
        let mut q = VecDeque::from([from]);
        while let Some(x) = q.pop_front() {
            let d = dist[x].expect("queued nodes have a distance");
            for &y in &adj[x] {
                if dist[y].is_none() {
                    dist[y] = Some(d + 1);
                    q.push_back(y);
                }
            }
        }
        dist
    }
}
