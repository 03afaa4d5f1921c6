//! The routing core (PROTOCOL.md §1, §5): no sockets and no clock. It takes events (a link came
//! up or went down, a descriptor arrived, a timer fired) with the time `now`, and writes the
//! actions that follow (send these bytes on link C, close C with a Bye, dial an address, hand
//! something to the local servent). The network shell drives one; the simulator drives
//! thousands.
//!
//! Invariants: a link is known from `Connected` to `Closed` and never after (ids are not
//! reused); every table is bounded; a descriptor is forwarded at most once per link and never
//! back to where it came from.

pub mod dq;
pub mod external;
pub mod hosts;
pub mod pushproxy;
pub mod queue;
pub mod reputation;
pub mod routes;
pub mod upqrp;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, trace};

use crate::handshake::Role;
use crate::wire::ggep::{Encoding, GgepBuilder};
use crate::wire::qrp::{QrpError, QrpReceiver, QrpTable, encode_table};
use crate::wire::vendor::{SupportedMessage, selector, supported_entries};
use crate::wire::{
    Bye, Descriptor, Frame, Ggep, Guid, HEADER_LEN, Hops, Payload, PayloadType, Ping, Pong, Push,
    QrpMessage, ServentId, Ttl, VendorBody, VendorMessage, simple::bye_code,
};

pub use hosts::{HostCache, HostEntry};
pub use pushproxy::Proxied;
pub use reputation::{Observation, RoleMode, Score, Thresholds};
pub use routes::{PushRoutes, RouteTable, Source};

/// A link's identity. Never reused within a run, so a stale route cannot reach a new link.
pub type ConnId = u64;

/// gtk-gnutella's `hard_ttl_limit`: hops + TTL above this is dropped (PROTOCOL.md §1).
pub const HARD_TTL_LIMIT: u8 = 15;
/// Pings answered per link: a burst of 5, then one per 3 s (gtk-gnutella throttles to one per
/// 3 s per peer, PROTOCOL.md §5).
const PING_BURST: u32 = 5;
const PING_REFILL: Duration = Duration::from_secs(3);
/// Pings refused within a minute before the peer is dropped as a flooder.
const PING_FLOOD_LIMIT: u32 = 30;
/// Malformed descriptors tolerated from one link before Bye 409.
const MAX_ERRORS: u32 = 20;
/// Cached pongs given per ping (PROTOCOL.md §5: ≤ 10).
const PONGS_PER_PING: usize = 10;
/// A host whose link the user closed is not dialled again for this long.
const USER_CLOSE_HOLD: Duration = Duration::from_secs(30 * 60);
/// A dial the shell never reported on is forgotten after this.
const DIAL_TIMEOUT: Duration = Duration::from_secs(30);
/// With no ultrapeer link and nobody left to dial, every known host is tried again at once,
/// then after this, doubling up to [`STARVING_MAX_WAIT`]: slots free up on full ultrapeers
/// and dead ones come back, but nobody is hammered.
pub const STARVING_FIRST_WAIT: Duration = Duration::from_secs(2);
pub const STARVING_MAX_WAIT: Duration = Duration::from_secs(60);
/// Bootstrap services are asked at most this often (gtk-gnutella waits 180 s per UDP host
/// cache; the shell rotates through several).
pub const BOOTSTRAP_EVERY: Duration = Duration::from_secs(60);

/// How the node behaves; defaults follow PROTOCOL.md §4–§5 and gtk-gnutella.
#[derive(Debug, Clone)]
pub struct Config {
    pub role: Role,
    pub servent: ServentId,
    /// Our `X-Max-TTL`: fresh queries are trimmed to this (gtk-gnutella 4).
    pub max_ttl: u8,
    /// Ultrapeer links we try to keep by dialling (a leaf keeps 3, PROTOCOL.md §7).
    pub want_ultrapeers: usize,
    /// Ultrapeer links a leaf keeps (PROTOCOL.md §7: 3), also after a demotion.
    pub leaf_ultrapeers: usize,
    /// Ultrapeer links we accept at most (our degree).
    pub max_ultrapeers: usize,
    pub max_leaves: usize,
    /// Allow loopback and private addresses in the host cache (tests, LANs).
    pub accept_private: bool,
    /// Our listening address as others should dial it, for our own pong.
    pub advertise: Option<SocketAddrV4>,
    /// Alive pings every 20 s (gtk-gnutella, PROTOCOL.md §5).
    pub alive_interval: Duration,
    /// Unanswered alive pings before Bye 406: 6 for an ultrapeer, 4 for a leaf.
    pub alive_unanswered: u32,
    /// No traffic this long: Bye 405 (gtk-gnutella 180 s).
    pub idle_timeout: Duration,
    /// Shared files and kilobytes, for our pong.
    pub shared: (u32, u32),
    /// Seed of the generator for MUIDs. Fixed in the simulator so runs repeat; random in the
    /// network shell, since a restarted node must not reuse the MUIDs of its last run.
    pub seed: u64,
    /// As an ultrapeer, send our queries and our leaves' by dynamic querying (PROTOCOL.md §7)
    /// rather than flooding them.
    pub dynamic_query: bool,
    /// Results a dynamic query of ours aims for (gtk-gnutella and the spec: 150).
    pub dq_own_results: u32,
    /// Results a dynamic query for a leaf aims for (gtk-gnutella and the spec: 50).
    pub dq_leaf_results: u32,
    /// Dynamic queries running at once; beyond, queries are flooded as before.
    pub max_dqs: usize,
    /// Seen-descriptor routes kept; the simulator runs thousands of cores and keeps fewer.
    pub route_capacity: usize,
    /// Servent GUIDs kept for Push routing.
    pub push_route_capacity: usize,
    /// How often an ultrapeer re-checks its merged QRP table for neighbour ultrapeers.
    pub up_qrp_interval: Duration,
    /// Switch between leaf and ultrapeer by reputation (`--role auto`); off when the user
    /// fixed the role.
    pub auto_role: bool,
    pub thresholds: Thresholds,
    /// The shell has bootstrap services to ask for hosts ([`Action::Bootstrap`]).
    pub bootstrap: bool,
}

impl Config {
    pub fn new(role: Role, servent: ServentId) -> Self {
        Config {
            role,
            servent,
            max_ttl: 4,
            want_ultrapeers: if role == Role::Leaf { 3 } else { 8 },
            leaf_ultrapeers: 3,
            max_ultrapeers: 32,
            max_leaves: 30,
            accept_private: false,
            advertise: None,
            alive_interval: Duration::from_secs(20),
            alive_unanswered: if role == Role::Leaf { 4 } else { 6 },
            idle_timeout: Duration::from_secs(180),
            shared: (0, 0),
            seed: u64::from_le_bytes(servent.0[..8].try_into().expect("16 bytes")),
            dynamic_query: true,
            dq_own_results: 150,
            dq_leaf_results: 50,
            // gtk-gnutella has no fixed cap; 64 covers 30 leaves' searches with room to spare.
            max_dqs: 64,
            route_capacity: routes::ROUTE_CAPACITY,
            push_route_capacity: routes::PUSH_ROUTE_CAPACITY,
            up_qrp_interval: upqrp::UP_QRP_INTERVAL,
            auto_role: false,
            thresholds: Thresholds::default(),
            bootstrap: false,
        }
    }
}

/// What the shell knows of a new link after the handshake.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The socket's remote address.
    pub addr: SocketAddrV4,
    pub role: Role,
    /// We dialled it.
    pub outbound: bool,
    /// Where it listens (its `Listen-IP`/`Node` header, or the dialled address).
    pub listen: Option<SocketAddrV4>,
    pub guid: Option<ServentId>,
    pub max_ttl: Option<u8>,
    /// Its `X-Degree`: ultrapeer links it keeps, for dynamic querying's horizon.
    pub degree: Option<u32>,
    pub ggep: bool,
    pub user_agent: String,
    /// An ultrapeer that sent `X-Ultrapeer-Query-Routing`: it takes our merged table and may
    /// send its own (last-hop QRP, PROTOCOL.md §6).
    pub up_qrp: bool,
}

pub enum Event<'a> {
    Connected {
        id: ConnId,
        info: ConnInfo,
    },
    Closed {
        id: ConnId,
    },
    Frame {
        id: ConnId,
        frame: Frame<'a>,
    },
    /// A dial failed; the peer may have offered other hosts.
    DialFailed {
        addr: SocketAddrV4,
        try_hosts: Vec<SocketAddrV4>,
    },
    /// Hosts from a bootstrap service or the user; `pinned` ones are kept and redialled.
    Hosts {
        addrs: Vec<SocketAddrV4>,
        ultrapeer: bool,
        pinned: bool,
    },
    /// Something bearing on our reputation (reachability, uploads, the overlay's needs).
    Observed(Observation),
    Tick,
}

/// Something for the local servent (answering, searching, pushing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A query to answer from our shares. `msg` is the whole descriptor as received.
    Query { from: ConnId, msg: Arc<[u8]> },
    /// A hit for one of our searches.
    Hit { msg: Arc<[u8]> },
    /// A Push for us: connect out and offer the file.
    Push { msg: Arc<[u8]> },
    /// A peer asked us to connect back to it (BEAR/7), proving we are reachable.
    ConnectBack { addr: SocketAddrV4 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Queue a whole descriptor on a link.
    Send {
        to: ConnId,
        msg: Arc<[u8]>,
    },
    /// Close a link, with a Bye first when given.
    Close {
        id: ConnId,
        bye: Option<(u16, String)>,
    },
    Dial(SocketAddrV4),
    Deliver(Delivery),
    /// We switched role; the shell announces the new one in later handshakes.
    RoleChanged {
        role: Role,
        reason: String,
    },
    /// Ask the bootstrap services for hosts: we have no ultrapeer and nobody left to dial.
    Bootstrap,
}

/// Counters a person can read in `servent status` and the logs.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Stats {
    pub received: u64,
    /// Queries handed to the local servent to answer (a leaf sees here what its table let
    /// through).
    pub queries_delivered: u64,
    pub queries_forwarded: u64,
    pub duplicates: u64,
    pub dropped_ttl: u64,
    pub unroutable: u64,
    pub malformed: u64,
    pub hits_routed: u64,
    pub pushes_routed: u64,
}

struct Conn {
    info: ConnInfo,
    connected_at: Instant,
    last_rx: Instant,
    last_alive: Instant,
    alive_muid: Option<Guid>,
    alive_unanswered: u32,
    ping_tokens: u32,
    ping_refill: Instant,
    flood_window: Instant,
    flood_count: u32,
    errors: u32,
    /// Hops Flow: send only queries whose hops (after increment) are below this.
    hops_flow: u8,
    connect_back_done: bool,
    qrp: Option<QrpReceiver>,
    received: u64,
    /// We asked this ultrapeer to be our push proxy, and what it answered.
    proxy_asked: bool,
    push_proxy: Option<SocketAddrV4>,
}

/// One connection as status displays see it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnSummary {
    pub id: ConnId,
    pub addr: SocketAddrV4,
    pub role: Role,
    pub outbound: bool,
    pub user_agent: String,
    pub received: u64,
    pub connected_secs: u64,
    /// Slots set in the peer's QRP table (a leaf's, or an UP-QRP neighbour's), once one has
    /// arrived.
    pub qrp_slots_set: Option<usize>,
}

/// A small deterministic generator (splitmix64): MUIDs without a system call each, and
/// reproducible runs in the simulator and benchmarks when seeded the same.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A MUID with the 0.6 marks.
    pub fn guid(&mut self) -> Guid {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        b[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        Guid::from_random(b)
    }
}

pub struct Overlay {
    cfg: Config,
    /// Our QRP table, sent to our ultrapeers when we are a leaf (PROTOCOL.md §6).
    local_table: Option<QrpTable>,
    upqrp: upqrp::UpQrp,
    conns: HashMap<ConnId, Conn>,
    routes: RouteTable,
    push_routes: PushRoutes,
    hosts: HostCache,
    dialing: HashMap<SocketAddrV4, Instant>,
    rng: Rng,
    stats: Stats,
    started: Instant,
    reputation: reputation::Reputation,
    dqs: dq::Dqs,
    /// Our recent searches and the results kept for each, for a leaf's BEAR/12.
    own: lru::LruCache<Guid, OwnSearch>,
    /// Set while we have no ultrapeer link and have run out of hosts to dial.
    starving: Option<Starving>,
    last_bootstrap: Option<Instant>,
}

/// Rounds of asking every source again while no ultrapeer is linked.
#[derive(Debug, Clone, Copy)]
struct Starving {
    since: Instant,
    rounds: u32,
    next_round: Instant,
    /// The wait after the next round.
    wait: Duration,
}

/// Our searches remembered for query status (gtk-gnutella keeps as many as the user opens).
const OWN_SEARCHES: usize = 64;

#[derive(Debug, Clone, Copy, Default)]
struct OwnSearch {
    results: u32,
    kept: Option<u32>,
    stopped: bool,
}

/// A copy of `frame` with new TTL and hops, ready to share between links.
fn reframe(frame: &Frame<'_>, ttl: u8, hops: u8) -> Arc<[u8]> {
    let mut header = frame.header;
    header.ttl = Ttl(ttl);
    header.hops = Hops(hops);
    let mut v = Vec::with_capacity(frame.len());
    v.extend_from_slice(&header.to_bytes());
    v.extend_from_slice(frame.payload);
    v.into()
}

fn whole(frame: &Frame<'_>) -> Arc<[u8]> {
    reframe(frame, frame.header.ttl.0, frame.header.hops.0)
}

fn bye(code: u16, reason: &str) -> Option<(u16, String)> {
    Some((code, reason.to_string()))
}

impl Overlay {
    pub fn new(cfg: Config, now: Instant) -> Self {
        let hosts = HostCache::new(hosts::HOST_CAPACITY, cfg.accept_private);
        let rng = Rng(cfg.seed);
        let reputation = reputation::Reputation::new(cfg.thresholds.clone(), now);
        Overlay {
            local_table: None,
            upqrp: upqrp::UpQrp::default(),
            conns: HashMap::new(),
            routes: RouteTable::new(cfg.route_capacity, routes::ROUTE_LIFETIME),
            push_routes: PushRoutes::new(cfg.push_route_capacity),
            hosts,
            dialing: HashMap::new(),
            rng,
            stats: Stats::default(),
            started: now,
            reputation,
            dqs: dq::Dqs::new(cfg.max_dqs),
            own: lru::LruCache::new(std::num::NonZeroUsize::new(OWN_SEARCHES).expect("> 0")),
            starving: None,
            last_bootstrap: None,
            cfg,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn hosts(&self) -> &HostCache {
        &self.hosts
    }

    pub fn role(&self) -> Role {
        self.cfg.role
    }

    pub fn servent(&self) -> ServentId {
        self.cfg.servent
    }

    pub fn set_shared(&mut self, files: u32, kbytes: u32) {
        self.cfg.shared = (files, kbytes);
    }

    pub fn set_advertise(&mut self, addr: Option<SocketAddrV4>) {
        self.cfg.advertise = addr;
    }

    pub fn connection_count(&self, role: Role) -> usize {
        self.conns.values().filter(|c| c.info.role == role).count()
    }

    /// Slots still open, for the handshake's admission.
    pub fn free_slots(&self) -> (usize, usize) {
        let leaves = self
            .cfg
            .max_leaves
            .saturating_sub(self.connection_count(Role::Leaf));
        let ups = self
            .cfg
            .max_ultrapeers
            .saturating_sub(self.connection_count(Role::Ultrapeer));
        (leaves, ups)
    }

    /// Whether a peer with this GUID or listening address is already linked (409).
    pub fn is_connected(&self, guid: Option<ServentId>, listen: Option<SocketAddrV4>) -> bool {
        self.conns.values().any(|c| {
            (guid.is_some() && c.info.guid == guid) || (listen.is_some() && c.info.listen == listen)
        })
    }

    /// Hosts to offer in `X-Try-Ultrapeers`.
    pub fn try_hosts(&self, exclude: Option<SocketAddrV4>) -> Vec<SocketAddrV4> {
        self.hosts.freshest(10, exclude)
    }

    pub fn connections(&self, now: Instant) -> Vec<ConnSummary> {
        let mut v: Vec<ConnSummary> = self
            .conns
            .iter()
            .map(|(id, c)| ConnSummary {
                id: *id,
                addr: c.info.addr,
                role: c.info.role,
                outbound: c.info.outbound,
                user_agent: c.info.user_agent.clone(),
                received: c.received,
                connected_secs: now.saturating_duration_since(c.connected_at).as_secs(),
                qrp_slots_set: c
                    .qrp
                    .as_ref()
                    .and_then(QrpReceiver::table)
                    .map(QrpTable::count),
            })
            .collect();
        v.sort_by_key(|c| c.id);
        v
    }

    pub fn handle(&mut self, ev: Event<'_>, now: Instant, out: &mut Vec<Action>) {
        match ev {
            Event::Connected { id, info } => self.on_connected(id, info, now, out),
            Event::Closed { id } => self.on_closed(id, now),
            Event::Frame { id, frame } => {
                self.on_frame(id, &frame, now, out);
                self.advance_dqs(now, out);
            }
            Event::DialFailed { addr, try_hosts } => {
                self.dialing.remove(&addr);
                self.hosts.failed(&addr, now);
                for a in try_hosts {
                    self.hosts.add(a, true, false, now);
                }
            }
            Event::Hosts {
                addrs,
                ultrapeer,
                pinned,
            } => {
                for a in addrs {
                    self.hosts.add(a, ultrapeer, pinned, now);
                }
            }
            Event::Observed(o) => self.reputation.observe(o, now),
            Event::Tick => self.on_tick(now, out),
        }
    }

    fn on_connected(&mut self, id: ConnId, info: ConnInfo, now: Instant, out: &mut Vec<Action>) {
        if let Some(l) = info.listen {
            self.dialing.remove(&l);
            self.hosts.add(l, info.role == Role::Ultrapeer, false, now);
            self.hosts.succeeded(&l, now);
        }
        info!(
            "connected to {} ({}, {}, {})",
            info.listen.unwrap_or(info.addr),
            info.role,
            if info.outbound {
                "outgoing"
            } else {
                "incoming"
            },
            info.user_agent
        );
        // What we act on, and nothing more: a peer relies on what is listed (a push-proxy or
        // query-status request to us would otherwise go unanswered).
        let supported = supported_entries(&[
            triple(selector::HOPS_FLOW),
            triple(selector::TCP_CONNECT_BACK),
            triple(selector::QUERY_STATUS_REQUEST),
            triple(selector::QUERY_STATUS_RESPONSE),
            triple(selector::PUSH_PROXY_REQUEST),
            triple(selector::PUSH_PROXY_ACK),
        ]);
        let ms = Descriptor {
            muid: Guid([0; 16]),
            ttl: Ttl(1),
            hops: Hops(0),
            payload: Payload::Vendor(VendorMessage::new(
                selector::MESSAGES_SUPPORTED,
                VendorBody::MessagesSupported {
                    messages: crate::wire::vendor::List::from_entries(&supported)
                        .expect("whole entries"),
                },
            )),
        };
        out.push(Action::Send {
            to: id,
            msg: ms.to_vec().into(),
        });
        let ggep = info.ggep;
        let qrp = self.wants_table_from(&info).then(QrpReceiver::new);
        self.conns.insert(
            id,
            Conn {
                info,
                connected_at: now,
                last_rx: now,
                last_alive: now,
                alive_muid: None,
                alive_unanswered: 0,
                ping_tokens: PING_BURST,
                ping_refill: now,
                flood_window: now,
                flood_count: 0,
                errors: 0,
                hops_flow: u8::MAX,
                connect_back_done: false,
                qrp,
                received: 0,
                proxy_asked: false,
                push_proxy: None,
            },
        );
        self.ask_push_proxy(id, out);
        // A first ping learns hosts; with GGEP we ask for packed ultrapeers (SCP).
        let muid = self.rng.guid();
        let mut g = GgepBuilder::new();
        if ggep {
            g.push("SCP", &[1], Encoding::default()).expect("valid id");
        }
        let g = g.finish();
        let ping = Descriptor {
            muid,
            ttl: Ttl(1),
            hops: Hops(0),
            payload: Payload::Ping(Ping {
                ggep: (!g.is_empty()).then(|| Ggep::parse_all(&g).expect("built valid")),
            }),
        };
        if let Some(c) = self.conns.get_mut(&id) {
            c.alive_muid = Some(muid);
        }
        out.push(Action::Send {
            to: id,
            msg: ping.to_vec().into(),
        });
        // A leaf's ultrapeer forwards nothing before the leaf's table arrives: send it now.
        if self.cfg.role == Role::Leaf
            && let Some(c) = self.conns.get(&id)
            && c.info.role == Role::Ultrapeer
        {
            self.send_table(id, out);
        }
        self.up_qrp_connected(id, out);
    }

    /// Sets our QRP table and, as a leaf, sends it to every ultrapeer. An ultrapeer merges it
    /// into the table its neighbours get at the next check.
    pub fn set_local_table(&mut self, table: QrpTable, out: &mut Vec<Action>) {
        self.local_table = Some(table);
        self.up_qrp_changed();
        if self.cfg.role != Role::Leaf {
            return;
        }
        let ups: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.info.role == Role::Ultrapeer)
            .map(|(id, _)| *id)
            .collect();
        for id in ups {
            self.send_table(id, out);
        }
    }

    /// RESET and a compressed 4-bit PATCH sequence with LimeWire's infinity 7 (QRP TTL=1).
    fn send_table(&mut self, id: ConnId, out: &mut Vec<Action>) {
        let Some(t) = &self.local_table else {
            return;
        };
        for payload in encode_table(None, t, 7, 4, true) {
            let msg = raw_descriptor(self.rng.guid(), PayloadType::Qrp, 1, 0, &payload);
            out.push(Action::Send { to: id, msg });
        }
    }

    fn on_closed(&mut self, id: ConnId, now: Instant) {
        if let Some(c) = self.conns.remove(&id) {
            info!("disconnected from {} ({})", c.info.addr, c.info.role);
            let leaf_table =
                c.info.role == Role::Leaf && c.qrp.as_ref().and_then(QrpReceiver::table).is_some();
            self.up_qrp_closed(id, leaf_table);
            self.reputation
                .link_ended(now.saturating_duration_since(c.connected_at));
        }
        self.routes.forget_conn(id);
        self.push_routes.forget_conn(id);
        self.dqs.forget_conn(id);
    }

    /// The user closes a link: Bye 201, and its host is neither kept nor redialled for a
    /// while (a pinned `--peer` would otherwise be back within a second). False when there is
    /// no such link.
    pub fn disconnect(&mut self, id: ConnId, now: Instant, out: &mut Vec<Action>) -> bool {
        let Some(c) = self.conns.get(&id) else {
            return false;
        };
        for a in [Some(c.info.addr), c.info.listen].into_iter().flatten() {
            self.hosts.set_aside(&a, now + USER_CLOSE_HOLD);
        }
        self.close(id, bye_code::USER, "Closed by the user", out);
        true
    }

    fn close(&mut self, id: ConnId, code: u16, reason: &str, out: &mut Vec<Action>) {
        if let Some(c) = self.conns.get(&id) {
            info!("dropping {}: {code} {reason}", c.info.addr);
        }
        out.push(Action::Close {
            id,
            bye: bye(code, reason),
        });
    }

    fn on_frame(&mut self, id: ConnId, frame: &Frame<'_>, now: Instant, out: &mut Vec<Action>) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.last_rx = now;
        conn.received += 1;
        self.stats.received += 1;
        let d = match Descriptor::decode(frame) {
            Ok(d) => d,
            Err(e) => {
                self.stats.malformed += 1;
                conn.errors += 1;
                debug!(
                    "malformed {} from {}: {e}",
                    frame.header.kind, conn.info.addr
                );
                if conn.errors > MAX_ERRORS {
                    self.close(id, bye_code::TOO_MANY_ERRORS, "Too many errors", out);
                }
                return;
            }
        };
        trace!(
            "{} from {} ttl {} hops {}",
            frame.header.kind, id, d.ttl.0, d.hops.0
        );
        if d.hops.0 == u8::MAX {
            self.stats.dropped_ttl += 1;
            return;
        }
        match d.payload {
            Payload::Ping(p) => self.on_ping(id, &d, p, now, out),
            Payload::Pong(p) => self.on_pong(id, &d, p, now),
            Payload::Bye(b) => {
                info!(
                    "{} said goodbye: {} {}",
                    conn.info.addr,
                    b.code,
                    b.reason.to_string_lossy()
                );
                out.push(Action::Close { id, bye: None });
            }
            Payload::Query(q) => self.on_query(id, frame, &q, now, out),
            Payload::QueryHit(h) => {
                self.on_hit(id, frame, h.servent, h.results.len() as u32, now, out)
            }
            Payload::Push(p) => self.on_push(id, frame, &p, now, out),
            Payload::Qrp(m) => self.on_qrp(id, m, out),
            Payload::Vendor(v) => self.on_vendor(id, d.muid, v, now, out),
        }
    }

    fn on_ping(
        &mut self,
        id: ConnId,
        d: &Descriptor<'_>,
        p: Ping<'_>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let conn = self.conns.get_mut(&id).expect("checked by on_frame");
        let refills = (now.saturating_duration_since(conn.ping_refill).as_secs()
            / PING_REFILL.as_secs()) as u32;
        if refills > 0 {
            conn.ping_tokens = (conn.ping_tokens + refills).min(PING_BURST);
            conn.ping_refill = now;
        }
        if conn.ping_tokens == 0 {
            if now.saturating_duration_since(conn.flood_window) > Duration::from_secs(60) {
                conn.flood_window = now;
                conn.flood_count = 0;
            }
            conn.flood_count += 1;
            if conn.flood_count > PING_FLOOD_LIMIT {
                self.close(id, bye_code::TOO_MANY_ERRORS, "Ping flood", out);
            }
            return;
        }
        conn.ping_tokens -= 1;
        let peer_ggep = conn.info.ggep;
        let peer_listen = conn.info.listen;
        // Replies travel back one hop per hop the ping made, plus one.
        let ttl = Ttl(d.hops.0.saturating_add(1));
        if let Some(me) = self.cfg.advertise {
            let ggep = if peer_ggep {
                let wants_hosts = p.ggep.is_some_and(|g| g.get("SCP").is_some());
                self.own_pong_ggep(wants_hosts, peer_listen)
            } else {
                Vec::new()
            };
            let pong = Descriptor {
                muid: d.muid,
                ttl,
                hops: Hops(0),
                payload: Payload::Pong(Pong {
                    addr: me,
                    files: self.cfg.shared.0,
                    kbytes: self.cfg.shared.1,
                    ggep: (!ggep.is_empty()).then(|| Ggep::parse_all(&ggep).expect("built valid")),
                }),
            };
            out.push(Action::Send {
                to: id,
                msg: pong.to_vec().into(),
            });
        }
        // Beyond the alive ping, answer from the cache of known hosts (pong caching).
        if d.ttl.0 > 1 {
            for a in self.hosts.freshest(PONGS_PER_PING, peer_listen) {
                let pong = Descriptor {
                    muid: d.muid,
                    ttl,
                    hops: Hops(1),
                    payload: Payload::Pong(Pong {
                        addr: a,
                        files: 0,
                        kbytes: 0,
                        ggep: None,
                    }),
                };
                out.push(Action::Send {
                    to: id,
                    msg: pong.to_vec().into(),
                });
            }
        }
    }

    /// The GGEP of our own pong: free slots (`UP`), our vendor (`VC`), and packed ultrapeers
    /// (`IPP`) when the ping asked for them with `SCP`.
    fn own_pong_ggep(&self, wants_hosts: bool, exclude: Option<SocketAddrV4>) -> Vec<u8> {
        let mut ggep = GgepBuilder::new();
        // `UP` only in ultrapeer mode, as gtk-gnutella: a leaf that sent it was listed as an
        // ultrapeer in every host cache its pong reached.
        if self.cfg.role == Role::Ultrapeer {
            let (free_leaves, free_ups) = self.free_slots();
            let clamp = |n: usize| n.min(255) as u8;
            let slots = [0, clamp(free_leaves), clamp(free_ups)];
            ggep.push("UP", &slots, Encoding::default())
                .expect("valid id");
        }
        let mut vc = crate::wire::VendorCode::SRVT.0.to_vec();
        vc.push(env!("CARGO_PKG_VERSION_MINOR").parse().unwrap_or(0));
        ggep.push("VC", &vc, Encoding::default()).expect("valid id");
        if wants_hosts {
            let mut ipp = Vec::new();
            for a in self.hosts.freshest(PONGS_PER_PING, exclude) {
                crate::wire::types::put_addr_ip_port(&mut ipp, &a);
            }
            if !ipp.is_empty() {
                ggep.push("IPP", &ipp, Encoding::default())
                    .expect("valid id");
            }
        }
        ggep.finish()
    }

    fn on_pong(&mut self, id: ConnId, d: &Descriptor<'_>, p: Pong<'_>, now: Instant) {
        let conn = self.conns.get_mut(&id).expect("checked by on_frame");
        if conn.alive_muid == Some(d.muid) {
            conn.alive_unanswered = 0;
        }
        // `UP` says "ultrapeer" (gtk-gnutella's pong has it only in ultra mode), but leaves of
        // other servents sent it with no slots, and a cache that takes them for ultrapeers
        // strands leaves after churn. So it counts from an ultrapeer link's own pong, or when
        // it offers leaf slots, which only an ultrapeer has.
        let up = p.ggep.and_then(|g| g.value("UP")).filter(|v| v.len() == 3);
        let own_pong_of_an_ultrapeer = d.hops.0 == 0 && conn.info.role == Role::Ultrapeer;
        let ultrapeer = up.is_some_and(|v| own_pong_of_an_ultrapeer || v[1] > 0);
        self.hosts.add(p.addr, ultrapeer, false, now);
        if let Some(ipp) = p.ggep.and_then(|g| g.value("IPP")) {
            for c in ipp.chunks_exact(6) {
                let a = crate::wire::types::addr_ip_port(c.try_into().expect("chunks of 6"));
                self.hosts.add(a, true, false, now);
            }
        }
    }

    fn on_query(
        &mut self,
        id: ConnId,
        frame: &Frame<'_>,
        q: &crate::wire::Query<'_>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let h = frame.header;
        let from_leaf = self.conns[&id].info.role == Role::Leaf;
        if from_leaf && h.hops.0 != 0 {
            // A leaf relays nothing (PROTOCOL.md §1, gtk-gnutella Bye 414).
            self.close(id, bye_code::LEAF_RELAYING, "Leaf relaying queries", out);
            return;
        }
        let from_our_ultrapeer =
            self.cfg.role == Role::Leaf && self.conns[&id].info.role == Role::Ultrapeer;
        if h.ttl.0 == 0 && !from_our_ultrapeer {
            self.stats.dropped_ttl += 1;
            return;
        }
        if h.hops.0.saturating_add(h.ttl.0) > HARD_TTL_LIMIT {
            self.stats.dropped_ttl += 1;
            return;
        }
        if !self
            .routes
            .record(h.muid, PayloadType::Query, Source::Conn(id), now)
        {
            self.stats.duplicates += 1;
            if self.conns[&id].info.role == Role::Ultrapeer {
                // A dynamic query of ours for it need not send it back there.
                self.dqs.on_duplicate(&h.muid, id);
            }
            return;
        }
        self.stats.queries_delivered += 1;
        out.push(Action::Deliver(Delivery::Query {
            from: id,
            msg: whole(frame),
        }));
        if self.cfg.role == Role::Leaf {
            return;
        }
        self.pass_to_leaves(Some(id), frame, q, out);
        if from_leaf
            && self.start_dq(
                dq::Origin::Leaf(id),
                h.muid,
                frame.payload,
                q,
                h.ttl.0,
                now,
                out,
            )
        {
            return;
        }
        // Trim to our horizon, then spend one hop.
        let ttl = h.ttl.0.min(self.cfg.max_ttl.saturating_sub(h.hops.0));
        let Some(fwd_ttl) = ttl.checked_sub(1).filter(|t| *t > 0) else {
            return;
        };
        let hops = h.hops.0 + 1;
        let mut msg: Option<Arc<[u8]>> = None;
        let mut keys = None;
        for (&cid, c) in &self.conns {
            if cid == id || c.info.role != Role::Ultrapeer || hops >= c.hops_flow {
                continue;
            }
            if fwd_ttl == 1 && !self.last_hop_passes(c, q, &mut keys) {
                continue;
            }
            let m = msg.get_or_insert_with(|| reframe(frame, fwd_ttl, hops));
            out.push(Action::Send {
                to: cid,
                msg: m.clone(),
            });
            self.stats.queries_forwarded += 1;
        }
    }

    /// Passes a query to the leaves whose QRP tables match it, whatever its TTL (PROTOCOL.md §6:
    /// an ultrapeer delivers to its leaves after decrementing, even to 0). Never back to the
    /// leaf it came from, never to a leaf that has sent no table.
    fn pass_to_leaves(
        &mut self,
        from: Option<ConnId>,
        frame: &Frame<'_>,
        q: &crate::wire::Query<'_>,
        out: &mut Vec<Action>,
    ) {
        // Extracting keywords costs Unicode normalisation: skip it when no leaf could match.
        let any_table = self.conns.iter().any(|(&cid, c)| {
            Some(cid) != from && c.qrp.as_ref().and_then(QrpReceiver::table).is_some()
        });
        if !any_table {
            return;
        }
        let keys = QueryKeys::of(q);
        if keys.is_empty() {
            return;
        }
        let h = frame.header;
        let mut msg: Option<Arc<[u8]>> = None;
        for (&cid, c) in &self.conns {
            if Some(cid) == from || c.info.role != Role::Leaf {
                continue;
            }
            let Some(t) = c.qrp.as_ref().and_then(QrpReceiver::table) else {
                continue;
            };
            if !keys.matches(t) || h.hops.0.saturating_add(1) >= c.hops_flow {
                continue;
            }
            let m = msg.get_or_insert_with(|| {
                reframe(frame, h.ttl.0.saturating_sub(1), h.hops.0.saturating_add(1))
            });
            out.push(Action::Send {
                to: cid,
                msg: m.clone(),
            });
        }
    }

    fn on_hit(
        &mut self,
        id: ConnId,
        frame: &Frame<'_>,
        servent: ServentId,
        results: u32,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        self.push_routes.learn(servent, id, now);
        let h = frame.header;
        self.dqs.on_results(&h.muid, results);
        if let Some(s) = self.own.peek_mut(&h.muid) {
            s.results = s.results.saturating_add(results);
        }
        match self.routes.lookup(h.muid, PayloadType::Query, now) {
            Some(Source::Local) => out.push(Action::Deliver(Delivery::Hit { msg: whole(frame) })),
            Some(Source::Conn(back)) if back != id && self.conns.contains_key(&back) => {
                // Replies are trimmed rather than dropped, and never sent on with TTL 0
                // (gtk-gnutella, PROTOCOL.md §5).
                let ttl = h.ttl.0.saturating_sub(1).max(1);
                out.push(Action::Send {
                    to: back,
                    msg: reframe(frame, ttl, h.hops.0 + 1),
                });
                self.stats.hits_routed += 1;
            }
            _ => self.stats.unroutable += 1,
        }
    }

    fn on_push(
        &mut self,
        id: ConnId,
        frame: &Frame<'_>,
        p: &Push<'_>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let h = frame.header;
        if !self
            .routes
            .record(h.muid, PayloadType::Push, Source::Conn(id), now)
        {
            self.stats.duplicates += 1;
            return;
        }
        if p.target == self.cfg.servent {
            out.push(Action::Deliver(Delivery::Push { msg: whole(frame) }));
            return;
        }
        if self.cfg.role == Role::Leaf {
            self.stats.unroutable += 1;
            return;
        }
        let ttl = h.ttl.0.saturating_sub(1).max(1);
        let targets = self.push_targets(&p.target, Some(id), now);
        if targets.is_empty() {
            self.stats.unroutable += 1;
            return;
        }
        let msg = reframe(frame, ttl, h.hops.0 + 1);
        for to in targets {
            out.push(Action::Send {
                to,
                msg: msg.clone(),
            });
            self.stats.pushes_routed += 1;
        }
    }

    /// Where a Push for `target` goes (PROTOCOL.md §5): the servent itself when it is a
    /// neighbour, else every live link its hits came from, except `from`.
    fn push_targets(&self, target: &ServentId, from: Option<ConnId>, now: Instant) -> Vec<ConnId> {
        if let Some((&id, _)) = self
            .conns
            .iter()
            .find(|(_, c)| c.info.guid == Some(*target))
        {
            return vec![id];
        }
        self.push_routes
            .lookup(target, now)
            .filter(|c| Some(*c) != from && self.conns.contains_key(c))
            .collect()
    }

    fn on_qrp(&mut self, id: ConnId, m: QrpMessage<'_>, out: &mut Vec<Action>) {
        let conn = self.conns.get_mut(&id).expect("checked by on_frame");
        let from_leaf = conn.info.role == Role::Leaf;
        let Some(rx) = conn.qrp.as_mut() else {
            // Only leaves and UP-QRP ultrapeers send us tables; from anyone else QRP is ignored.
            return;
        };
        let res: Result<bool, QrpError> = match m {
            QrpMessage::Reset(r) => {
                rx.reset(&r);
                Ok(false)
            }
            QrpMessage::Patch(p) => rx.patch(&p),
        };
        match res {
            Ok(true) if from_leaf => self.up_qrp_changed(),
            Ok(_) => {}
            Err(e) => {
                let reason = e.to_string();
                self.close(id, bye_code::BAD_QRP, &reason, out);
            }
        }
    }

    fn on_vendor(
        &mut self,
        id: ConnId,
        muid: Guid,
        v: VendorMessage<'_>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let conn = self.conns.get_mut(&id).expect("checked by on_frame");
        match v.body {
            VendorBody::QueryStatusRequest
                if self.cfg.role == Role::Leaf && conn.info.role == Role::Ultrapeer =>
            {
                // gtk-gnutella answers 0xFFFF for a search it no longer has.
                let kept = match self.own.peek(&muid) {
                    Some(s) if !s.stopped => s.kept.unwrap_or(s.results).min(0xFFFE) as u16,
                    _ => 0xFFFF,
                };
                out.push(Action::Send {
                    to: id,
                    msg: dq::status_response(muid, kept).into(),
                });
            }
            VendorBody::QueryStatusResponse { kept } if conn.info.role == Role::Leaf => {
                let links = up_links(&self.conns, 1);
                self.dqs
                    .on_status((id, &muid, kept), &links, &mut self.rng, now, out);
            }
            VendorBody::HopsFlow { max_hops } => conn.hops_flow = max_hops,
            VendorBody::PushProxyRequest => self.on_push_proxy_request(id, muid, out),
            VendorBody::PushProxyAck { proxy } => self.on_push_proxy_ack(id, proxy),
            VendorBody::TcpConnectBack { port } if !conn.connect_back_done => {
                conn.connect_back_done = true;
                let addr = SocketAddrV4::new(*conn.info.addr.ip(), port);
                out.push(Action::Deliver(Delivery::ConnectBack { addr }));
            }
            _ => {}
        }
    }

    fn on_tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        let mut closing = Vec::new();
        let mut pings = Vec::new();
        for (&id, c) in self.conns.iter_mut() {
            if now.saturating_duration_since(c.last_rx) > self.cfg.idle_timeout {
                closing.push((id, bye_code::TIMEOUT, "Activity timeout"));
            } else if now.saturating_duration_since(c.last_alive) >= self.cfg.alive_interval {
                if c.alive_unanswered >= self.cfg.alive_unanswered {
                    closing.push((id, bye_code::NO_ALIVE_REPLY, "No reply to alive pings"));
                    continue;
                }
                let muid = self.rng.guid();
                c.alive_muid = Some(muid);
                c.alive_unanswered += 1;
                c.last_alive = now;
                pings.push((id, muid));
            }
        }
        for (id, code, reason) in closing {
            self.close(id, code, reason, out);
        }
        self.advance_dqs(now, out);
        for (id, muid) in pings {
            let ping = Descriptor {
                muid,
                ttl: Ttl(1),
                hops: Hops(0),
                payload: Payload::Ping(Ping::default()),
            };
            out.push(Action::Send {
                to: id,
                msg: ping.to_vec().into(),
            });
        }
        if self.cfg.auto_role {
            self.consider_role(now, out);
        }
        self.dial_more(now, out);
        self.up_qrp_tick(now, out);
    }

    fn link_ages(&self, now: Instant) -> Vec<Duration> {
        self.conns
            .values()
            .map(|c| now.saturating_duration_since(c.connected_at))
            .collect()
    }

    /// Our reputation and its parts, in words.
    pub fn reputation(&self, now: Instant) -> Score {
        self.reputation
            .score(now, &self.link_ages(now), self.cfg.role)
    }

    fn consider_role(&mut self, now: Instant, out: &mut Vec<Action>) {
        let links = self.link_ages(now);
        let ups = self.connection_count(Role::Ultrapeer);
        let leaves = self.connection_count(Role::Leaf);
        let want = match self.cfg.role {
            Role::Leaf => self.cfg.want_ultrapeers,
            Role::Ultrapeer => 0,
        };
        if let Some(s) = self
            .reputation
            .decide(now, self.cfg.role, &links, ups, want, leaves)
        {
            self.switch_role(s.to, s.reason, now, out);
        }
    }

    /// Takes a new role as gtk-gnutella does (`node_set_current_peermode`): a leaf becoming an
    /// ultrapeer leaves its ultrapeers (they hold it as a leaf) and dials again as an
    /// ultrapeer; an ultrapeer becoming a leaf leaves everyone. Bye 203 either way.
    pub fn switch_role(&mut self, to: Role, reason: String, now: Instant, out: &mut Vec<Action>) {
        if to == self.cfg.role {
            return;
        }
        let (close_all, why) = match to {
            Role::Ultrapeer => (false, "Becoming an ultra node"),
            Role::Leaf => (true, "Becoming a leaf node"),
        };
        let ids: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| close_all || c.info.role == Role::Ultrapeer)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            out.push(Action::Close {
                id,
                bye: bye(bye_code::ROLE_CHANGE, why),
            });
        }
        let fresh = Config::new(to, self.cfg.servent);
        self.hosts.retry_all(now);
        self.cfg.role = to;
        self.up_qrp_role_changed();
        self.cfg.want_ultrapeers = match to {
            Role::Leaf => self.cfg.leaf_ultrapeers,
            Role::Ultrapeer => fresh.want_ultrapeers,
        };
        self.cfg.alive_unanswered = fresh.alive_unanswered;
        match to {
            Role::Ultrapeer => info!("promoted to ultrapeer: {reason}"),
            Role::Leaf => info!("now a leaf: {reason}"),
        }
        out.push(Action::RoleChanged { role: to, reason });
    }

    fn dial_more(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.dialing
            .retain(|_, at| now.saturating_duration_since(*at) < DIAL_TIMEOUT);
        let ups = self.connection_count(Role::Ultrapeer);
        if ups > 0
            && let Some(s) = self.starving.take()
        {
            info!(
                "linked to an ultrapeer again, {} s after running out of hosts ({} retry rounds)",
                now.saturating_duration_since(s.since).as_secs(),
                s.rounds
            );
        }
        let have = ups + self.dialing.len();
        let want = self.cfg.want_ultrapeers.min(self.cfg.max_ultrapeers);
        if have >= want {
            return;
        }
        let mut picks = self.picks(now, want - have);
        if picks.is_empty() && have == 0 && self.starvation_round(now, out) {
            picks = self.picks(now, want);
        }
        for a in picks {
            debug!("dialling {a}");
            self.dialing.insert(a, now);
            out.push(Action::Dial(a));
        }
    }

    /// No ultrapeer, nothing being dialled and nobody left to dial: when a round is due,
    /// every host we know (those that failed, those `X-Try-Ultrapeers` named) may be dialled
    /// again, and the bootstrap services are asked, at most once a minute. The first round
    /// is at once, since the hosts may have been backing off for many minutes (a leaf whose
    /// only ultrapeer died stayed alone while full ultrapeers made room). True when a round
    /// ran.
    fn starvation_round(&mut self, now: Instant, out: &mut Vec<Action>) -> bool {
        let s = self.starving.get_or_insert(Starving {
            since: now,
            rounds: 0,
            next_round: now,
            wait: STARVING_FIRST_WAIT,
        });
        if now < s.next_round {
            return false;
        }
        s.rounds = s.rounds.saturating_add(1);
        s.next_round = now + s.wait;
        let (rounds, wait) = (s.rounds, s.wait);
        s.wait = (s.wait * 2).min(STARVING_MAX_WAIT);
        let known = self.hosts.retry_all(now);
        let ask = self.cfg.bootstrap
            && self
                .last_bootstrap
                .is_none_or(|t| now.saturating_duration_since(t) >= BOOTSTRAP_EVERY);
        if ask {
            self.last_bootstrap = Some(now);
            out.push(Action::Bootstrap);
        }
        info!(
            "no ultrapeer link and nobody left to dial (round {rounds}): retrying the {known} \
             known hosts{}; next round in {} s",
            if ask {
                " and asking the bootstrap services"
            } else {
                ""
            },
            wait.as_secs()
        );
        true
    }

    /// Up to `n` hosts to dial now: not linked, not being dialled, not ourselves.
    fn picks(&self, now: Instant, n: usize) -> Vec<SocketAddrV4> {
        let linked: HashSet<SocketAddrV4> = self
            .conns
            .values()
            .flat_map(|c| [Some(c.info.addr), c.info.listen])
            .flatten()
            .collect();
        self.hosts
            .candidates(now)
            .into_iter()
            .filter(|a| {
                !linked.contains(a)
                    && !self.dialing.contains_key(a)
                    && Some(*a) != self.cfg.advertise
            })
            .take(n)
            .collect()
    }

    /// Starts a search of our own: the query goes to every ultrapeer link with hops 0 (with
    /// TTL 1 it is on its last hop: UP-QRP neighbours get it only when their table matches).
    /// `payload` is an encoded Query payload. Returns its MUID, under which hits are delivered.
    pub fn search(&mut self, payload: &[u8], ttl: u8, now: Instant, out: &mut Vec<Action>) -> Guid {
        let muid = self.rng.guid();
        self.routes
            .record(muid, PayloadType::Query, Source::Local, now);
        self.own.put(muid, OwnSearch::default());
        let mut payload = std::borrow::Cow::Borrowed(payload);
        if self.cfg.role == Role::Leaf
            && let Ok(q) = crate::wire::Query::decode(&payload)
            && q.flags.is_marked()
        {
            // We answer BEAR/11, so our ultrapeers may let us guide the query.
            payload.to_mut()[0] |= (crate::wire::QueryFlags::LEAF_GUIDED >> 8) as u8;
        }
        if self.cfg.role == Role::Ultrapeer
            && let Ok(q) = crate::wire::Query::decode(&payload)
        {
            // Our own leaves first, whether the rest is a dynamic query or a flood (a full DQ
            // table, or DQ off, must not leave them out).
            let msg = raw_descriptor(muid, PayloadType::Query, 1, 0, &payload);
            if let Ok(crate::wire::Framed::Frame(f)) = crate::wire::frame(&msg) {
                self.pass_to_leaves(None, &f, &q, out);
            }
            if self.cfg.dynamic_query
                && self.start_dq(dq::Origin::Local, muid, &payload, &q, ttl, now, out)
            {
                return muid;
            }
        }
        let payload: &[u8] = &payload;
        let ttl = ttl.min(self.cfg.max_ttl);
        let msg = raw_descriptor(muid, PayloadType::Query, ttl, 0, payload);
        let last_hop = (ttl == 1)
            .then(|| crate::wire::Query::decode(payload).ok())
            .flatten();
        let mut keys = None;
        for (&cid, c) in &self.conns {
            if last_hop
                .as_ref()
                .is_some_and(|q| !self.last_hop_passes(c, q, &mut keys))
            {
                continue;
            }
            if c.info.role == Role::Ultrapeer {
                out.push(Action::Send {
                    to: cid,
                    msg: msg.clone(),
                });
            }
        }
        muid
    }

    /// Our searcher kept `kept` of the results for `muid` (after its filters): what a leaf
    /// reports in BEAR/12 and what our own dynamic query counts. Without it, every result
    /// delivered counts as kept.
    pub fn set_search_kept(&mut self, muid: Guid, kept: u32) {
        if let Some(s) = self.own.peek_mut(&muid) {
            s.kept = Some(kept);
        }
        self.dqs.set_kept(&muid, kept);
    }

    /// The searcher wants no more results for `muid`: our dynamic query ends, and as a leaf
    /// we tell our ultrapeers so when they ask (BEAR/12 0xFFFF).
    pub fn stop_search(&mut self, muid: Guid) {
        if let Some(s) = self.own.peek_mut(&muid) {
            s.stopped = true;
        }
        self.dqs.stop(&muid);
    }

    /// When the core next wants a Tick for its dynamic queries.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.dqs.next_deadline()
    }

    /// Dynamic queries running.
    pub fn dynamic_queries(&self) -> usize {
        self.dqs.len()
    }

    /// Why recent dynamic queries ended.
    pub fn dq_ended(&self) -> &[(Guid, dq::End)] {
        &self.dqs.ended
    }

    /// Starts a dynamic query when we are an ultrapeer doing them and have room; false when
    /// the query should be flooded instead.
    #[allow(clippy::too_many_arguments)]
    fn start_dq(
        &mut self,
        origin: dq::Origin,
        muid: Guid,
        payload: &[u8],
        q: &crate::wire::Query<'_>,
        ttl: u8,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> bool {
        if self.cfg.role != Role::Ultrapeer || !self.cfg.dynamic_query || self.dqs.is_full() {
            return false;
        }
        let (hops, target) = match origin {
            dq::Origin::Local => (0, self.cfg.dq_own_results),
            dq::Origin::Leaf(_) => (1, self.cfg.dq_leaf_results),
        };
        let keys = QueryKeys::of(q);
        let start = dq::Start {
            muid,
            origin,
            payload: payload.into(),
            by_sha1: !keys.urns.is_empty(),
            keys,
            ttl: ttl.min(self.cfg.max_ttl),
            hops,
            target,
            leaf_guided: q.flags.leaf_guided(),
        };
        let links = up_links(&self.conns, hops);
        self.dqs.start(start, &links, &mut self.rng, now, out)
    }

    fn advance_dqs(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.dqs.next_deadline().is_some_and(|t| t <= now) {
            // Hops differ between ours (0) and a leaf's (1); Hops Flow is rare enough that
            // the stricter view serves both.
            let links = up_links(&self.conns, 1);
            self.dqs.advance(&links, &mut self.rng, now, out);
        }
    }

    /// Answers a delivered query: `query` is the descriptor from [`Delivery::Query`], `payload`
    /// an encoded QueryHit payload. Sent back on the link the query came from.
    pub fn reply(&mut self, from: ConnId, query: &[u8], payload: &[u8], out: &mut Vec<Action>) {
        if query.len() < HEADER_LEN || !self.conns.contains_key(&from) {
            return;
        }
        let mut muid = [0u8; 16];
        muid.copy_from_slice(&query[..16]);
        // Enough TTL to walk back the query's hops, with one to spare.
        let ttl = query[18].saturating_add(2);
        let msg = raw_descriptor(Guid(muid), PayloadType::QueryHit, ttl, 0, payload);
        out.push(Action::Send { to: from, msg });
    }

    /// Sends a Push towards `target` along the links its hits came from. Returns false when
    /// no route is known.
    pub fn push(&mut self, p: &Push<'_>, now: Instant, out: &mut Vec<Action>) -> bool {
        let targets = self.push_targets(&p.target, None, now);
        if targets.is_empty() {
            return false;
        }
        let muid = self.rng.guid();
        self.routes
            .record(muid, PayloadType::Push, Source::Local, now);
        let mut payload = Vec::new();
        p.encode(&mut payload);
        let msg = raw_descriptor(muid, PayloadType::Push, self.cfg.max_ttl, 0, &payload);
        for to in targets {
            out.push(Action::Send {
                to,
                msg: msg.clone(),
            });
        }
        true
    }

    /// The Bye to send to every link on shutdown.
    pub fn shutdown(&mut self, out: &mut Vec<Action>) {
        for &id in self.conns.keys() {
            out.push(Action::Close {
                id,
                bye: bye(bye_code::SHUTDOWN, "Servent shutdown"),
            });
        }
    }

    pub fn uptime(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }
}

/// What a QRP table is checked for: a query's keywords (3 characters or more, as gtk-gnutella
/// looks up) and the SHA-1s it names.
struct QueryKeys {
    words: Vec<String>,
    urns: Vec<String>,
}

impl QueryKeys {
    fn of(q: &crate::wire::Query<'_>) -> Self {
        let words = crate::share::words::words(&q.criteria.to_string_lossy())
            .into_iter()
            .filter(|w| w.chars().count() >= 3)
            .collect();
        let urns = q
            .extensions
            .iter()
            .filter_map(|i| match i {
                crate::wire::ExtItem::Sha1(u) => Some(u.to_string()),
                _ => None,
            })
            .collect();
        QueryKeys { words, urns }
    }

    fn is_empty(&self) -> bool {
        self.words.is_empty() && self.urns.is_empty()
    }

    /// gtk-gnutella's rule: a present URN suffices; otherwise all words when fewer than 3,
    /// else at least two thirds of them (PROTOCOL.md §6).
    fn matches(&self, t: &QrpTable) -> bool {
        if self.urns.iter().any(|u| t.contains_word(u)) {
            return true;
        }
        if self.words.is_empty() {
            return false;
        }
        let hits = self.words.iter().filter(|w| t.contains_word(w)).count();
        if self.words.len() < 3 {
            hits == self.words.len()
        } else {
            hits * 3 >= self.words.len() * 2
        }
    }
}

/// Our ultrapeer links as dynamic querying sees them; `hops` is what the query will carry.
fn up_links(conns: &HashMap<ConnId, Conn>, hops: u8) -> Vec<dq::UpLink<'_>> {
    let mut v: Vec<dq::UpLink<'_>> = conns
        .iter()
        .filter(|(_, c)| c.info.role == Role::Ultrapeer)
        .map(|(&id, c)| dq::UpLink {
            id,
            degree: c.info.degree.unwrap_or(dq::LEGACY_DEGREE),
            max_ttl: c.info.max_ttl.unwrap_or(4),
            writable: hops < c.hops_flow,
            table: c.qrp.as_ref().and_then(QrpReceiver::table),
        })
        .collect();
    // HashMap order varies between runs; the shuffle that follows must not.
    v.sort_by_key(|l| l.id);
    v
}

fn triple(t: (crate::wire::VendorCode, u16, u16)) -> SupportedMessage {
    SupportedMessage {
        vendor: t.0,
        selector: t.1,
        version: t.2,
    }
}

/// Header plus an already-encoded payload.
pub fn raw_descriptor(
    muid: Guid,
    kind: PayloadType,
    ttl: u8,
    hops: u8,
    payload: &[u8],
) -> Arc<[u8]> {
    let header = crate::wire::Header {
        muid,
        kind,
        ttl: Ttl(ttl),
        hops: Hops(hops),
        len: payload.len() as u32,
    };
    let mut v = Vec::with_capacity(HEADER_LEN + payload.len());
    v.extend_from_slice(&header.to_bytes());
    v.extend_from_slice(payload);
    v.into()
}

/// Encodes a Bye descriptor (TTL 1, hops 0, PROTOCOL.md §2.6).
pub fn bye_descriptor(muid: Guid, code: u16, reason: &str) -> Vec<u8> {
    Descriptor {
        muid,
        ttl: Ttl(1),
        hops: Hops(0),
        payload: Payload::Bye(Bye {
            code,
            reason: reason.into(),
        }),
    }
    .to_vec()
}

#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;
