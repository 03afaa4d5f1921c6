//! Many nodes over the same routing core as the real servent, joined by in-memory links, with
//! virtual time. Messages are delivered in the order they were sent, so every link has the same
//! latency and a flood reaches each node first along a shortest path.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::handshake::Role;
use crate::overlay::{Action, Config, ConnId, ConnInfo, Delivery, Event, Overlay};
use crate::wire::{Framed, ServentId, frame};

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
    next_conn: Vec<ConnId>,
    queue: VecDeque<(NodeId, ConnId, Arc<[u8]>)>,
    pub now: Instant,
    /// Queries delivered to each node (MUID bytes → count).
    pub queries_seen: Vec<HashMap<[u8; 16], u32>>,
    /// Hits delivered to each node for its own searches.
    pub hits: Vec<Vec<Arc<[u8]>>>,
    /// Descriptors carried over links in total.
    pub messages: u64,
    responder: Option<Responder>,
}

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
            next_conn: vec![1; n],
            queue: VecDeque::new(),
            now,
            queries_seen: vec![HashMap::new(); n],
            hits: vec![Vec::new(); n],
            messages: 0,
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
        self.links.iter().any(|(&(x, _), &(y, _))| x == a && y == b)
    }

    /// Links `a` (dialling) and `b`, as after a successful handshake.
    pub fn connect(&mut self, a: NodeId, b: NodeId) {
        let (ca, cb) = (self.next_conn[a], self.next_conn[b]);
        self.next_conn[a] += 1;
        self.next_conn[b] += 1;
        self.links.insert((a, ca), (b, cb));
        self.links.insert((b, cb), (a, ca));
        let info = |peer: NodeId, outbound: bool, role: Role| ConnInfo {
            addr: addr_of(peer),
            role,
            outbound,
            listen: Some(addr_of(peer)),
            guid: Some(servent_of(peer)),
            max_ttl: Some(4),
            ggep: true,
            user_agent: "sim".into(),
            up_qrp: role == Role::Ultrapeer,
        };
        let (ra, rb) = (self.nodes[a].role(), self.nodes[b].role());
        let now = self.now;
        let mut out = Vec::new();
        self.nodes[a].handle(
            Event::Connected {
                id: ca,
                info: info(b, true, rb),
            },
            now,
            &mut out,
        );
        self.apply(a, out);
        let mut out = Vec::new();
        self.nodes[b].handle(
            Event::Connected {
                id: cb,
                info: info(a, false, ra),
            },
            now,
            &mut out,
        );
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

    fn apply(&mut self, n: NodeId, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send { to, msg } => {
                    if let Some(&(peer, pc)) = self.links.get(&(n, to)) {
                        self.queue.push_back((peer, pc, msg));
                    }
                }
                Action::Close { id, .. } => {
                    if let Some((peer, pc)) = self.links.remove(&(n, id)) {
                        self.links.remove(&(peer, pc));
                        let mut out = Vec::new();
                        self.nodes[peer].handle(Event::Closed { id: pc }, self.now, &mut out);
                        self.apply(peer, out);
                    }
                    let mut out = Vec::new();
                    self.nodes[n].handle(Event::Closed { id }, self.now, &mut out);
                    self.apply(n, out);
                }
                Action::Dial(_) | Action::RoleChanged { .. } => {}
                Action::Deliver(Delivery::Query { from, msg }) => {
                    let mut muid = [0u8; 16];
                    muid.copy_from_slice(&msg[..16]);
                    *self.queries_seen[n].entry(muid).or_default() += 1;
                    let answer = self.responder.as_mut().and_then(|r| r(n, &msg));
                    if let Some(payload) = answer {
                        let mut out = Vec::new();
                        self.nodes[n].reply(from, &msg, &payload, &mut out);
                        self.apply(n, out);
                    }
                }
                Action::Deliver(Delivery::Hit { msg }) => self.hits[n].push(msg),
                Action::Deliver(_) => {}
            }
        }
    }

    /// Delivers queued messages until none are left (or `limit` were delivered).
    pub fn run(&mut self, limit: u64) -> u64 {
        let mut delivered = 0;
        while let Some((n, conn, msg)) = self.queue.pop_front() {
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
