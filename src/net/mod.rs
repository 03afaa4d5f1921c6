//! The async-std shell around the routing core: one listening port whose dispatcher reads the
//! first line and hands the stream on (Gnutella handshake; HTTP and GIV come with transfers),
//! outbound dials, a reader and a writer task per link, a one-second tick, and the data
//! directory (servent GUID, host cache).
//!
//! Data flows one way: socket → (inflate) → framer → core → output queues → (deflate) →
//! socket. The core sits behind a mutex that is only held for synchronous calls, never across
//! an await.

pub mod bootstrap;
pub mod gate;
pub mod hyper_io;
pub mod link;
mod pump;

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_std::channel::{Receiver, Sender, bounded};
use async_std::future::timeout;
use async_std::net::{TcpListener, TcpStream, UdpSocket};
use async_std::task;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use log::{debug, info, warn};

use crate::handshake::driver::{self, Established};
use crate::handshake::{Admission, LocalInfo, Role, USER_AGENT};
use crate::overlay::queue::{Enqueued, OutQueue};
use crate::overlay::{self, Action, ConnId, ConnInfo, Delivery, Event, Overlay};
use crate::store;
use crate::wire::{Guid, ServentId};

/// A handshake must finish within this (gtk-gnutella allows about as long).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The first line of an incoming connection must arrive within this.
const FIRST_LINE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read before the dispatcher must know what a connection is.
const MAX_FIRST_BYTES: usize = 4096;
/// An HTTP request head longer than this is handed over unfinished (the upload server refuses
/// it); gtk-gnutella's requests with their alt-locs stay well below.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Deliveries waiting for the local servent; more are dropped (and counted in the log).
const DELIVERY_QUEUE: usize = 4096;
/// After our Bye, the peer has this long to read it before the socket closes.
const BYE_LINGER: Duration = Duration::from_millis(500);
/// Bytes written per batch; the queue is drained in batches of this size.
const WRITE_BATCH: usize = 16 * 1024;
/// The host cache is saved this often and on shutdown.
const SAVE_EVERY: Duration = Duration::from_secs(300);
/// Largest UDP datagram read.
const MAX_DATAGRAM: usize = 64 * 1024;

/// How to run a node. [`NodeConfig::new`] gives defaults that work with no flags.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub listen: SocketAddrV4,
    /// Peers to keep dialling (`--peer`).
    pub peers: Vec<SocketAddrV4>,
    pub data_dir: PathBuf,
    pub role: Role,
    /// Switch between leaf and ultrapeer by reputation, starting from `role`.
    pub auto_role: bool,
    /// When `auto_role` promotes and demotes (eased by tests).
    pub thresholds: overlay::Thresholds,
    pub max_ultrapeers: usize,
    pub max_leaves: usize,
    /// Ultrapeer links to dial for; `None` for the role's default.
    pub want_ultrapeers: Option<usize>,
    /// Ultrapeer links to keep as a leaf (3).
    pub leaf_ultrapeers: usize,
    pub compress: bool,
    /// Accept loopback and private addresses as peers (on by default when listening on one).
    pub accept_private: bool,
    /// The address to advertise; by default the listening one when it is specific.
    pub advertise: Option<SocketAddrV4>,
    pub tick: Duration,
    /// Where to look for hosts when none answer; empty by default, the CLI adds the built-in
    /// list.
    pub bootstrap: Vec<bootstrap::Service>,
    /// Alive-ping interval and idle timeout, shortened by tests.
    pub alive_interval: Duration,
    pub idle_timeout: Duration,
    /// How often an ultrapeer re-checks the QRP table it sends neighbour ultrapeers (about a
    /// minute, PROTOCOL.md §6); shortened by tests.
    pub up_qrp_interval: Duration,
}

impl NodeConfig {
    pub fn new(listen: SocketAddrV4, data_dir: PathBuf) -> Self {
        let ip = listen.ip();
        NodeConfig {
            listen,
            peers: Vec::new(),
            data_dir,
            role: Role::Leaf,
            auto_role: false,
            thresholds: overlay::Thresholds::default(),
            max_ultrapeers: 32,
            max_leaves: 30,
            want_ultrapeers: None,
            leaf_ultrapeers: 3,
            compress: true,
            accept_private: ip.is_loopback() || ip.is_private(),
            advertise: None,
            tick: Duration::from_secs(1),
            bootstrap: Vec::new(),
            alive_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(180),
            up_qrp_interval: overlay::upqrp::UP_QRP_INTERVAL,
        }
    }
}

struct Link {
    addr: SocketAddrV4,
    queue: Mutex<OutQueue>,
    wake: Sender<()>,
    /// Set once the link is to close: the Bye to send last, if any.
    closing: Mutex<Option<Option<(u16, String)>>>,
    stream: TcpStream,
    /// Deflate on the link, incoming and outgoing.
    compressed: (bool, bool),
    /// Bytes read from and written to the socket (compressed, as on the wire).
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

/// One link as the shell sees it, for status displays.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LinkStats {
    pub id: ConnId,
    pub compressed_in: bool,
    pub compressed_out: bool,
    /// Output queue fill, 0 to 1.
    pub queue_fill: f32,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

struct Inner {
    core: Mutex<Overlay>,
    links: Mutex<HashMap<ConnId, Arc<Link>>>,
    next_id: AtomicU64,
    /// Incoming connections in their first exchange.
    gate: Arc<gate::Gate>,
    local: Mutex<LocalInfo>,
    listen: SocketAddrV4,
    deliveries: (Sender<Delivery>, Receiver<Delivery>),
    stopping: AtomicBool,
    stop: (Sender<()>, Receiver<()>),
    data_dir: PathBuf,
    udp: Option<UdpSocket>,
    incoming: Mutex<Option<Arc<dyn Incoming>>>,
    /// An incoming connection from outside proves we are reachable (PROTOCOL.md §9).
    reachable: AtomicBool,
    /// Our address as the peers' `Remote-IP` give it, voted.
    external: Mutex<overlay::external::ExternalAddr>,
    /// The connection that proved us reachable.
    reached_by: Mutex<Option<SocketAddrV4>>,
    accept_private: bool,
    bootstrap: Vec<bootstrap::Service>,
    /// Which GWebCache is asked next.
    next_gwc: AtomicU64,
    /// Bootstrap rounds since the last link: past the first, the services found us nobody.
    dry_rounds: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock would be a bug; the data is still consistent enough to
    // shut down cleanly, so carry on rather than cascade.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn v4(a: SocketAddr) -> Option<SocketAddrV4> {
    match a {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(a) => a
            .ip()
            .to_ipv4_mapped()
            .map(|ip| SocketAddrV4::new(ip, a.port())),
    }
}

/// Takes over connections that are not Gnutella links: HTTP requests and GIV callbacks. The
/// stream comes with the bytes the dispatcher already read from it.
pub trait Incoming: Send + Sync + 'static {
    fn http(
        &self,
        stream: TcpStream,
        initial: Vec<u8>,
        peer: SocketAddrV4,
    ) -> futures_lite::future::Boxed<()>;
    fn giv(
        &self,
        stream: TcpStream,
        initial: Vec<u8>,
        peer: SocketAddrV4,
    ) -> futures_lite::future::Boxed<()>;
}

/// A running servent.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl Node {
    /// Binds the port, loads the data directory and starts accepting and dialling.
    pub async fn start(cfg: NodeConfig) -> io::Result<Node> {
        store::create_private_dir(&cfg.data_dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot create data directory {}: {e}",
                    cfg.data_dir.display()
                ),
            )
        })?;
        let servent = store::servent_id(&cfg.data_dir)?;
        let listener = TcpListener::bind(cfg.listen).await.map_err(|e| {
            let hint = if e.kind() == io::ErrorKind::AddrInUse {
                " (is another servent running? give this one --listen ADDR:PORT)"
            } else {
                ""
            };
            io::Error::new(
                e.kind(),
                format!("cannot listen on {}: {e}{hint}", cfg.listen),
            )
        })?;
        let listen = v4(listener.local_addr()?).expect("bound to an IPv4 address");
        // The same port carries UDP (host-cache pongs). Without it the node still works.
        let udp = match UdpSocket::bind(listen).await {
            Ok(u) => Some(u),
            Err(e) => {
                warn!("no UDP on {listen}: {e}; UDP host caches will not be used");
                None
            }
        };
        let advertise = cfg
            .advertise
            .or_else(|| (!listen.ip().is_unspecified()).then_some(listen));
        let mut ocfg = overlay::Config::new(cfg.role, servent);
        ocfg.max_ultrapeers = cfg.max_ultrapeers;
        ocfg.max_leaves = cfg.max_leaves;
        ocfg.leaf_ultrapeers = cfg.leaf_ultrapeers.max(1);
        if cfg.role == Role::Leaf {
            ocfg.want_ultrapeers = ocfg.leaf_ultrapeers;
        }
        if let Some(w) = cfg.want_ultrapeers {
            ocfg.want_ultrapeers = w;
        }
        ocfg.accept_private = cfg.accept_private;
        ocfg.advertise = advertise;
        ocfg.alive_interval = cfg.alive_interval;
        ocfg.idle_timeout = cfg.idle_timeout;
        ocfg.up_qrp_interval = cfg.up_qrp_interval;
        ocfg.auto_role = cfg.auto_role;
        ocfg.thresholds = cfg.thresholds.clone();
        ocfg.bootstrap = !cfg.bootstrap.is_empty();
        // MUIDs must differ from one run to the next: peers remember them for up to an hour
        // and would drop a restarted node's queries as duplicates.
        ocfg.seed = u64::from_le_bytes(Guid::random().0[..8].try_into().expect("16 bytes"));
        let now = Instant::now();
        let mut core = Overlay::new(ocfg, now);
        let mut ignored = Vec::new();
        let hosts = store::load_hosts(&cfg.data_dir);
        let known = hosts.len();
        for h in hosts {
            core.handle(
                Event::Hosts {
                    addrs: vec![h.addr],
                    ultrapeer: h.ultrapeer,
                    pinned: false,
                },
                now,
                &mut ignored,
            );
        }
        core.handle(
            Event::Hosts {
                addrs: cfg.peers.clone(),
                ultrapeer: true,
                pinned: true,
            },
            now,
            &mut ignored,
        );
        let local = LocalInfo {
            user_agent: USER_AGENT.to_string(),
            role: cfg.role,
            guid: servent,
            listen: advertise,
            compress: cfg.compress,
            degree: cfg.max_ultrapeers as u32,
            max_ttl: core.config().max_ttl,
        };
        let inner = Arc::new(Inner {
            core: Mutex::new(core),
            links: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            gate: gate::Gate::new(gate::raise_fd_limit()),
            local: Mutex::new(local),
            listen,
            deliveries: bounded(DELIVERY_QUEUE),
            stopping: AtomicBool::new(false),
            stop: bounded(1),
            data_dir: cfg.data_dir.clone(),
            udp,
            incoming: Mutex::new(None),
            reachable: AtomicBool::new(false),
            external: Mutex::new(Default::default()),
            reached_by: Mutex::new(None),
            accept_private: cfg.accept_private,
            bootstrap: cfg.bootstrap.clone(),
            next_gwc: AtomicU64::new(0),
            dry_rounds: AtomicU64::new(0),
        });
        info!(
            "listening on {listen} as {} {} ({} known hosts, servent GUID {servent})",
            if cfg.role == Role::Ultrapeer {
                "an"
            } else {
                "a"
            },
            cfg.role,
            known,
        );
        task::spawn(accept_loop(inner.clone(), listener));
        if inner.udp.is_some() {
            task::spawn(udp_loop(inner.clone()));
        }
        task::spawn(ticker(inner.clone(), cfg.tick));
        Ok(Node { inner })
    }

    pub fn listen_addr(&self) -> SocketAddrV4 {
        self.inner.listen
    }

    /// The address we give in hits and pushes: the advertised one, else the listening one.
    pub fn advertised_addr(&self) -> SocketAddrV4 {
        lock(&self.inner.local).listen.unwrap_or(self.inner.listen)
    }

    /// Our QRP table; a leaf sends it to its ultrapeers now and on every link from now on.
    pub fn set_qrp_table(&self, t: crate::wire::QrpTable) {
        let mut out = Vec::new();
        lock(&self.inner.core).set_local_table(t, &mut out);
        dispatch(&self.inner, out);
    }

    /// What our pongs say we share.
    pub fn set_shared(&self, files: u32, kbytes: u32) {
        lock(&self.inner.core).set_shared(files, kbytes);
    }

    /// Hands HTTP requests and GIV callbacks to `h` from now on.
    pub fn set_incoming(&self, h: Arc<dyn Incoming>) {
        *lock(&self.inner.incoming) = Some(h);
    }

    /// Whether a connection from outside this host has reached us.
    pub fn reachable(&self) -> bool {
        self.inner.reachable.load(Ordering::SeqCst)
    }

    /// Our address as the peers see it (voted over their `Remote-IP`), and how many say so.
    pub fn external(&self) -> Option<(std::net::Ipv4Addr, usize)> {
        lock(&self.inner.external).get()
    }

    /// The incoming connection that proved us reachable, while we are.
    pub fn reached_by(&self) -> Option<SocketAddrV4> {
        *lock(&self.inner.reached_by)
    }

    /// Sends a Push towards `p.target` along the routes learnt from its hits.
    pub fn push(&self, p: &crate::wire::Push<'_>) -> bool {
        let mut out = Vec::new();
        let sent = lock(&self.inner.core).push(p, Instant::now(), &mut out);
        dispatch(&self.inner, out);
        sent
    }

    /// The ultrapeers that agreed to be our push proxies (a firewalled leaf's).
    pub fn push_proxies(&self) -> Vec<SocketAddrV4> {
        lock(&self.inner.core).push_proxies()
    }

    /// Sends `p` as a push proxy for a downloader's HTTP request (SWARM.md §5.4).
    pub fn proxy_push(&self, p: &crate::wire::Push<'_>) -> overlay::Proxied {
        let mut out = Vec::new();
        let how = lock(&self.inner.core).proxy_push(p, Instant::now(), &mut out);
        dispatch(&self.inner, out);
        how
    }

    /// Tells the core something bearing on our reputation.
    pub fn observe(&self, o: overlay::Observation) {
        observe(&self.inner, o);
    }

    /// Our reputation and its parts, in words.
    pub fn reputation(&self) -> overlay::Score {
        lock(&self.inner.core).reputation(Instant::now())
    }

    /// Our current role (it changes under `--role auto`).
    pub fn role(&self) -> Role {
        lock(&self.inner.core).role()
    }

    /// Switches role now, as `--role auto` would (tests, and a user's command).
    pub fn switch_role(&self, to: Role, reason: &str) {
        let mut out = Vec::new();
        lock(&self.inner.core).switch_role(to, reason.to_string(), Instant::now(), &mut out);
        dispatch(&self.inner, out);
    }

    pub fn servent(&self) -> ServentId {
        lock(&self.inner.core).servent()
    }

    /// What the routing core hands to the local servent: queries to answer, hits for our
    /// searches, pushes for us.
    pub fn deliveries(&self) -> Receiver<Delivery> {
        self.inner.deliveries.1.clone()
    }

    pub fn stats(&self) -> overlay::Stats {
        lock(&self.inner.core).stats()
    }

    pub fn connections(&self) -> Vec<overlay::ConnSummary> {
        lock(&self.inner.core).connections(Instant::now())
    }

    /// Output queue fill of each link, for status displays.
    pub fn queue_fill(&self) -> Vec<(ConnId, f32)> {
        lock(&self.inner.links)
            .iter()
            .map(|(id, l)| (*id, lock(&l.queue).fill()))
            .collect()
    }

    /// Socket-level figures of each link, for status displays.
    pub fn link_stats(&self) -> Vec<LinkStats> {
        lock(&self.inner.links)
            .iter()
            .map(|(id, l)| LinkStats {
                id: *id,
                compressed_in: l.compressed.0,
                compressed_out: l.compressed.1,
                queue_fill: lock(&l.queue).fill(),
                bytes_in: l.bytes_in.load(Ordering::Relaxed),
                bytes_out: l.bytes_out.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Says Bye 201 to one peer and closes the link; its host is no longer kept nor
    /// redialled for a while. False when there is no such link.
    pub fn disconnect(&self, id: ConnId) -> bool {
        let mut out = Vec::new();
        let done = lock(&self.inner.core).disconnect(id, Instant::now(), &mut out);
        dispatch(&self.inner, out);
        done
    }

    /// Whether `addr` may be a peer: loopback and private addresses only with `accept_private`.
    pub fn accepts(&self, addr: &SocketAddrV4) -> bool {
        overlay::hosts::usable(addr, self.inner.accept_private)
    }

    /// Adds hosts and dials them as needed (`pinned` ones are kept and redialled).
    pub fn add_hosts(&self, addrs: Vec<SocketAddrV4>, pinned: bool) {
        add_hosts(&self.inner, addrs, pinned);
    }

    /// Starts a search; hits arrive as [`Delivery::Hit`] with the returned MUID.
    pub fn search(&self, query_payload: &[u8], ttl: u8) -> Guid {
        let mut out = Vec::new();
        let muid = lock(&self.inner.core).search(query_payload, ttl, Instant::now(), &mut out);
        dispatch(&self.inner, out);
        muid
    }

    /// No more results are wanted for `muid`: our dynamic query for it ends, and a leaf
    /// tells its ultrapeers so when they ask.
    pub fn stop_search(&self, muid: Guid) {
        lock(&self.inner.core).stop_search(muid);
    }

    /// Our searcher kept `kept` results of `muid` after its filters: what our dynamic query
    /// counts, and what a leaf reports to its ultrapeers (BEAR/12).
    pub fn set_search_kept(&self, muid: Guid, kept: u32) {
        lock(&self.inner.core).set_search_kept(muid, kept);
    }

    /// Answers a delivered query with a QueryHit payload.
    pub fn reply(&self, from: ConnId, query: &[u8], hit_payload: &[u8]) {
        let mut out = Vec::new();
        lock(&self.inner.core).reply(from, query, hit_payload, &mut out);
        dispatch(&self.inner, out);
    }

    /// Sends raw descriptor bytes on a link, as a test peer or a tool would.
    pub fn send_raw(&self, to: ConnId, msg: Arc<[u8]>) {
        dispatch(&self.inner, vec![Action::Send { to, msg }]);
    }

    /// Says Bye 200 to every peer, waits briefly for the Byes to go out, saves the host cache.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.stopping.store(true, Ordering::SeqCst);
        let _ = inner.stop.0.try_send(());
        let mut out = Vec::new();
        lock(&inner.core).shutdown(&mut out);
        let n = out.len();
        dispatch(inner, out);
        let deadline = Instant::now() + BYE_LINGER * 4;
        while !lock(&inner.links).is_empty() && Instant::now() < deadline {
            task::sleep(Duration::from_millis(20)).await;
        }
        save_hosts(inner);
        info!("shut down ({n} peers told)");
    }

    /// Stops at once without a word to anyone, as a crash would: every socket is cut.
    pub fn abort(&self) {
        let inner = &self.inner;
        inner.stopping.store(true, Ordering::SeqCst);
        let _ = inner.stop.0.try_send(());
        for l in lock(&inner.links).values() {
            let _ = l.stream.shutdown(Shutdown::Both);
        }
    }
}

fn observe(inner: &Arc<Inner>, o: overlay::Observation) {
    let mut out = Vec::new();
    lock(&inner.core).handle(Event::Observed(o), Instant::now(), &mut out);
    dispatch(inner, out);
}

fn save_hosts(inner: &Inner) {
    let entries = lock(&inner.core).hosts().to_save();
    if let Err(e) = store::save_hosts(&inner.data_dir, &entries) {
        warn!("could not save the host cache: {e}");
    }
}

/// Gives the core ultrapeer addresses to remember and dial as needed.
fn add_hosts(inner: &Arc<Inner>, addrs: Vec<SocketAddrV4>, pinned: bool) {
    let mut out = Vec::new();
    lock(&inner.core).handle(
        Event::Hosts {
            addrs,
            ultrapeer: true,
            pinned,
        },
        Instant::now(),
        &mut out,
    );
    dispatch(inner, out);
}

/// Reads datagrams: pongs from host caches feed the host cache; anything else is ignored.
async fn udp_loop(inner: Arc<Inner>) {
    let Some(udp) = inner.udp.as_ref() else {
        return;
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while !inner.stopping.load(Ordering::SeqCst) {
        let stop = async {
            let _ = inner.stop.1.recv().await;
            None
        };
        let got =
            futures_lite::future::or(async { Some(udp.recv_from(&mut buf).await) }, stop).await;
        let Some(Ok((n, from))) = got else {
            if got.is_none() {
                return;
            }
            continue;
        };
        let hosts = bootstrap::hosts_from_pong(&buf[..n]);
        if hosts.is_empty() {
            continue;
        }
        debug!("{} hosts by UDP from {from}", hosts.len());
        add_hosts(&inner, hosts, false);
    }
}

/// How long the bootstrap services have to find us a peer before we say they did not.
const BOOTSTRAP_PATIENCE: Duration = Duration::from_secs(10);

/// Asks the bootstrap services for hosts; the core decides when (it has no ultrapeer and
/// nobody left to dial, at most once a minute).
fn bootstrap_round(inner: &Arc<Inner>) {
    if inner.bootstrap.is_empty() {
        return;
    }
    // Said once a dry spell, with what to do, rather than a resolver error every minute.
    if inner.dry_rounds.fetch_add(1, Ordering::Relaxed) == 0 {
        let inner = inner.clone();
        task::spawn(async move {
            task::sleep(BOOTSTRAP_PATIENCE).await;
            let alone = lock(&inner.core).connections(Instant::now()).is_empty();
            if alone && inner.dry_rounds.load(Ordering::Relaxed) > 0 {
                warn!(
                    "the bootstrap services found no peer that answers: give one with --peer \
                     HOST:PORT (or POST /api/peers), or check that this machine reaches the \
                     Internet; still asking once a minute"
                );
            }
        });
    }
    // Every UDP host cache at once (cheap), and one GWebCache per round, in turn.
    let gwcs: Vec<&bootstrap::Service> = inner
        .bootstrap
        .iter()
        .filter(|s| matches!(s, bootstrap::Service::Gwc(_)))
        .collect();
    let turn = inner.next_gwc.fetch_add(1, Ordering::Relaxed) as usize;
    let gwc = (!gwcs.is_empty()).then(|| gwcs[turn % gwcs.len()].clone());
    for s in &inner.bootstrap {
        if let bootstrap::Service::Uhc(h) = s {
            let inner = inner.clone();
            let h = h.clone();
            task::spawn(async move {
                if let Some(udp) = inner.udp.as_ref() {
                    bootstrap::ping_uhc(udp, &h).await;
                }
            });
        }
    }
    if let Some(bootstrap::Service::Gwc(url)) = gwc {
        let inner = inner.clone();
        task::spawn(async move {
            match bootstrap::fetch_gwc(&url).await {
                Ok(hosts) => add_hosts(&inner, hosts, false),
                Err(e) => debug!("GWebCache {url} failed: {e}"),
            }
        });
    }
}

async fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    loop {
        let stop = async {
            let _ = inner.stop.1.recv().await;
            None
        };
        let accepted =
            futures_lite::future::or(async { Some(listener.accept().await) }, stop).await;
        let Some(accepted) = accepted else {
            return;
        };
        if inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            Ok((stream, peer)) => {
                let door = inner.gate.open(peer.ip()).and_then(|open| {
                    let t = inner.gate.enter(peer.ip(), Instant::now())?;
                    Ok((open, t))
                });
                let (open, ticket) = match door {
                    Ok(x) => x,
                    Err(why) => {
                        debug!("closing {peer}: {why}");
                        continue;
                    }
                };
                let inner = inner.clone();
                task::spawn(async move {
                    incoming(&inner, stream, peer, ticket).await;
                    drop(open);
                });
            }
            Err(e) => {
                warn!("accept failed: {e}");
                task::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What an incoming connection turned out to be, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gnutella,
    Http,
    Giv,
    /// A connect-back probe (`\n\n` from gtk-gnutella, `CONNECT BACK` from LimeWire).
    ConnectBack,
    Unknown,
}

fn classify(b: &[u8]) -> Option<Kind> {
    const PREFIXES: &[(&[u8], Kind)] = &[
        (b"GNUTELLA CONNECT/", Kind::Gnutella),
        (b"GET ", Kind::Http),
        (b"HEAD ", Kind::Http),
        (b"GIV ", Kind::Giv),
        // PARQ's callback: like GIV, a stream a download of ours waits for.
        (b"QUEUE ", Kind::Giv),
        (b"CONNECT BACK", Kind::ConnectBack),
        (b"\n\n", Kind::ConnectBack),
        (b"\r\n\r\n", Kind::ConnectBack),
    ];
    for (p, k) in PREFIXES {
        let n = b.len().min(p.len());
        if b[..n] == p[..n] {
            // Only a prefix of a known start so far: wait for more.
            return (b.len() >= p.len()).then_some(*k);
        }
    }
    // Any other HTTP request line (`POST /…`, `get /…`, `CONNECT host:port`, `OPTIONS *`):
    // the upload server answers it with a status instead of a silent close.
    const MAX_METHOD: usize = 16;
    let token = b.iter().take_while(|c| c.is_ascii_alphabetic()).count();
    match b.get(token) {
        None if token == b.len() && token <= MAX_METHOD => None,
        Some(b' ') if (1..=MAX_METHOD).contains(&token) => match b.get(token + 1) {
            None => None,
            Some(b'/' | b'*') => Some(Kind::Http),
            Some(_) if b[..token].eq_ignore_ascii_case(b"CONNECT") => Some(Kind::Http),
            Some(_) => Some(Kind::Unknown),
        },
        _ => Some(Kind::Unknown),
    }
}

/// Reads what a connection is, and for HTTP its whole request head, for a GIV or QUEUE its
/// first line: the first exchange, which the door's deadline covers.
async fn read_first(stream: &mut TcpStream) -> io::Result<(Kind, Vec<u8>)> {
    let mut first = Vec::new();
    let mut chunk = [0u8; 1024];
    let mut kind = None;
    loop {
        if kind.is_none() {
            kind = classify(&first);
            if kind.is_none() && first.len() >= MAX_FIRST_BYTES {
                kind = Some(Kind::Unknown);
            }
        }
        match kind {
            Some(Kind::Http)
                if first.len() < MAX_HEAD_BYTES
                    && memchr::memmem::find(&first, b"\r\n\r\n").is_none()
                    && memchr::memmem::find(&first, b"\n\n").is_none() => {}
            Some(Kind::Giv) if first.len() < MAX_FIRST_BYTES && !first.contains(&b'\n') => {}
            Some(k) => return Ok((k, first)),
            None => {}
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        first.extend_from_slice(&chunk[..n]);
    }
}

async fn incoming(
    inner: &Arc<Inner>,
    mut stream: TcpStream,
    peer: SocketAddr,
    ticket: gate::Ticket,
) {
    let _ = stream.set_nodelay(true);
    let shed = async {
        ticket.shed().await;
        None
    };
    let read = async {
        timeout(FIRST_LINE_TIMEOUT, read_first(&mut stream))
            .await
            .ok()
    };
    // The first exchange and the handshake are boxed, and freed when they end: a task keeps
    // the size of its largest state for its whole life, and theirs (5.5 KiB) were most of a
    // link's task, held as long as the link.
    let (kind, first) = match futures_lite::future::or(Box::pin(read), shed).await {
        Some(Ok(x)) => x,
        Some(Err(e)) => {
            debug!("{peer} went before saying what it is: {e}");
            return;
        }
        None => {
            debug!("{peer} shed or timed out in its first exchange");
            return;
        }
    };
    debug!("incoming {kind:?} from {peer}");
    // An incoming connection proves we are reachable when it comes from where our peers see
    // us (PROTOCOL.md §9; `proves_reachable`).
    let external = lock(&inner.external).get().map(|(ip, _)| ip);
    if let Some(p) = v4(peer)
        && overlay::hosts::proves_reachable(*p.ip(), *inner.listen.ip(), external)
        && !inner.reachable.swap(true, Ordering::SeqCst)
    {
        *lock(&inner.reached_by) = Some(p);
        info!("{peer} reached us: we are not firewalled");
        observe(inner, overlay::Observation::Reachable);
    }
    let handler = lock(&inner.incoming).clone();
    match kind {
        Kind::Gnutella => {
            let local = lock(&inner.local).clone();
            let remote = v4(peer).map(|a| *a.ip());
            let hs = async {
                Some(
                    timeout(
                        HANDSHAKE_TIMEOUT,
                        driver::accept(&mut stream, &local, first, remote, |p| {
                            let core = lock(&inner.core);
                            let (free_leaf_slots, free_ultrapeer_slots) = core.free_slots();
                            Admission {
                                free_leaf_slots,
                                free_ultrapeer_slots,
                                already_connected: core.is_connected(p.guid, p.listen),
                                try_ultrapeers: core.try_hosts(p.listen),
                            }
                        }),
                    )
                    .await,
                )
            };
            let shed = async {
                ticket.shed().await;
                None
            };
            let hs = futures_lite::future::or(Box::pin(hs), shed).await;
            drop(ticket);
            match hs {
                Some(Ok(Ok(est))) => run_link(inner.clone(), stream, est, peer, None).await,
                Some(Ok(Err(e))) => info!("handshake with {peer} failed: {e}"),
                Some(Err(_)) => info!("handshake with {peer} timed out"),
                None => info!("handshake with {peer} shed to make room"),
            }
        }
        Kind::Http | Kind::Giv if handler.is_some() => {
            drop(ticket);
            let (Some(h), Some(p)) = (handler, v4(peer)) else {
                return;
            };
            if kind == Kind::Http {
                h.http(stream, first, p).await;
            } else {
                h.giv(stream, first, p).await;
            }
        }
        Kind::Http => {
            // Nothing serves files on this node: say so in HTTP rather than hang up.
            let _ = stream
                .write_all(
                    b"HTTP/1.1 501 Not Implemented\r\nServer: servent\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            let _ = stream.shutdown(Shutdown::Both);
        }
        Kind::ConnectBack => {
            info!("connect-back from {peer}: we are reachable from outside");
            let _ = stream.shutdown(Shutdown::Both);
        }
        Kind::Giv | Kind::Unknown => {
            debug!("closing {peer}: {kind:?} not handled");
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

async fn dial(inner: Arc<Inner>, addr: SocketAddrV4) {
    // Boxed for the reason given in `incoming`.
    let result = Box::pin(async {
        let mut stream = timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| driver::HandshakeError::Io(io::ErrorKind::TimedOut.into()))??;
        let _ = stream.set_nodelay(true);
        let local = lock(&inner.local).clone();
        let est = timeout(
            HANDSHAKE_TIMEOUT,
            driver::connect(&mut stream, &local, Some(*addr.ip())),
        )
        .await
        .map_err(|_| driver::HandshakeError::Io(io::ErrorKind::TimedOut.into()))??;
        Ok::<_, driver::HandshakeError>((stream, est))
    })
    .await;
    match result {
        Ok((stream, est)) => {
            let peer = SocketAddr::V4(addr);
            run_link(inner, stream, est, peer, Some(addr)).await;
        }
        Err(e) => {
            match &e {
                driver::HandshakeError::Refused { .. } => info!("{addr} refused us: {e}"),
                _ => debug!("could not connect to {addr}: {e}"),
            }
            let mut out = Vec::new();
            lock(&inner.core).handle(
                Event::DialFailed {
                    addr,
                    try_hosts: e.try_ultrapeers().to_vec(),
                },
                Instant::now(),
                &mut out,
            );
            dispatch(&inner, out);
        }
    }
}

async fn run_link(
    inner: Arc<Inner>,
    stream: TcpStream,
    est: Established,
    peer: SocketAddr,
    dialled: Option<SocketAddrV4>,
) {
    let Some(addr) = v4(peer) else {
        return;
    };
    if inner.stopping.load(Ordering::SeqCst) {
        return;
    }
    // Learn our public address from the first peer that tells us, if we had none.
    if let Some(ip) = est.peer.remote_ip {
        let moved = {
            let mut ext = lock(&inner.external);
            let was = ext.get().map(|(ip, _)| ip);
            ext.report(*addr.ip(), ip, Instant::now()).zip(was)
        };
        if let Some((now_seen, was)) = moved {
            // Reachable at the old address says nothing of the new one: proven again.
            info!("peers now see us at {now_seen} (was {was}): reachability is checked again");
            inner.reachable.store(false, Ordering::SeqCst);
            *lock(&inner.reached_by) = None;
        }
        let mut local = lock(&inner.local);
        if local.listen.is_none() && !ip.is_unspecified() {
            let me = SocketAddrV4::new(ip, inner.listen.port());
            local.listen = Some(me);
            lock(&inner.core).set_advertise(Some(me));
            info!("peers see us at {ip}");
        }
    }
    let id = inner.next_id.fetch_add(1, Ordering::SeqCst);
    let (wake_tx, wake_rx) = bounded(1);
    let link = Arc::new(Link {
        addr,
        queue: Mutex::new(OutQueue::new()),
        wake: wake_tx,
        closing: Mutex::new(None),
        stream: stream.clone(),
        compressed: (est.compression.incoming, est.compression.outgoing),
        bytes_in: AtomicU64::new(est.leftover.len() as u64),
        bytes_out: AtomicU64::new(0),
    });
    lock(&inner.links).insert(id, link.clone());
    let info = ConnInfo {
        addr,
        role: est.peer_role,
        outbound: dialled.is_some(),
        listen: est.peer.listen.or(dialled),
        guid: est.peer.guid,
        max_ttl: est.peer.max_ttl,
        degree: est.peer.degree,
        ggep: est.peer.ggep,
        user_agent: est.peer.user_agent.clone().unwrap_or_default(),
        up_qrp: est.peer_role == Role::Ultrapeer && est.peer.ultrapeer_query_routing,
    };
    debug!(
        "link {id} to {addr}: compression out {} in {}",
        est.compression.outgoing, est.compression.incoming
    );
    let mut out = Vec::new();
    if est.peer_role == Role::Ultrapeer
        && let Some(needed) = est.peer.ultrapeer_needed
    {
        observe(&inner, overlay::Observation::UltrapeerNeeded(needed));
    }
    inner.dry_rounds.store(0, Ordering::Relaxed);
    lock(&inner.core).handle(Event::Connected { id, info }, Instant::now(), &mut out);
    // Not yet proven reachable: ask the ultrapeer we dialled to connect back to our port
    // (BEAR/7, PROTOCOL.md §9). Its connection, when it comes, is the proof.
    if dialled.is_some()
        && est.peer_role == Role::Ultrapeer
        && !inner.reachable.load(Ordering::SeqCst)
    {
        let cb = crate::wire::Descriptor {
            muid: Guid([0; 16]),
            ttl: crate::wire::Ttl(1),
            hops: crate::wire::Hops(0),
            payload: crate::wire::Payload::Vendor(crate::wire::VendorMessage::new(
                crate::wire::vendor::selector::TCP_CONNECT_BACK,
                crate::wire::VendorBody::TcpConnectBack {
                    port: inner.listen.port(),
                },
            )),
        };
        out.push(Action::Send {
            to: id,
            msg: cb.to_vec().into(),
        });
    }
    dispatch(&inner, out);
    let writer = task::spawn(pump::write_loop(
        link.clone(),
        stream.clone(),
        wake_rx,
        est.compression.outgoing,
    ));
    let why = pump::read_loop(
        &inner,
        id,
        stream,
        est.leftover,
        est.compression.incoming,
        &link.bytes_in,
    )
    .await;
    match &why {
        Ok(()) => debug!("link {id} to {addr} closed"),
        Err(e) => debug!("link {id} to {addr} ended: {e}"),
    }
    lock(&inner.links).remove(&id);
    let mut out = Vec::new();
    lock(&inner.core).handle(Event::Closed { id }, Instant::now(), &mut out);
    dispatch(&inner, out);
    // Let the writer finish its Bye, then make sure the socket is gone.
    let _ = link.wake.try_send(());
    let _ = timeout(BYE_LINGER * 2, writer).await;
    let _ = link.stream.shutdown(Shutdown::Both);
}

fn dispatch(inner: &Arc<Inner>, actions: Vec<Action>) {
    if actions.is_empty() {
        return;
    }
    let now = Instant::now();
    for a in actions {
        match a {
            Action::Send { to, msg } => {
                let Some(link) = lock(&inner.links).get(&to).cloned() else {
                    continue;
                };
                let r = lock(&link.queue).push(msg, now);
                if r == Enqueued::Overflow {
                    info!("dropping {}: send queue full", link.addr);
                    close(&link, Some((502, "Send queue full".into())));
                }
                let _ = link.wake.try_send(());
            }
            Action::Close { id, bye } => {
                if let Some(link) = lock(&inner.links).get(&id).cloned() {
                    close(&link, bye);
                }
            }
            Action::Dial(addr) => {
                if !inner.stopping.load(Ordering::SeqCst) {
                    task::spawn(dial(inner.clone(), addr));
                }
            }
            Action::RoleChanged { role, .. } => {
                lock(&inner.local).role = role;
            }
            Action::Bootstrap => {
                if !inner.stopping.load(Ordering::SeqCst) {
                    bootstrap_round(inner);
                }
            }
            Action::Deliver(Delivery::ConnectBack { addr }) => {
                task::spawn(connect_back(addr));
            }
            Action::Deliver(d) => {
                if inner.deliveries.0.try_send(d).is_err() {
                    debug!("local servent is not keeping up: delivery dropped");
                }
            }
        }
    }
}

fn close(link: &Link, bye: Option<(u16, String)>) {
    let mut c = lock(&link.closing);
    if c.is_none() {
        *c = Some(bye.clone());
    }
    drop(c);
    if bye.is_none() {
        let _ = link.stream.shutdown(Shutdown::Both);
    }
    let _ = link.wake.try_send(());
}

/// Answers a TCP Connect Back request: connect, say `\n\n` as gtk-gnutella does, close.
async fn connect_back(addr: SocketAddrV4) {
    if let Ok(Ok(mut s)) = timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        let _ = s.write_all(b"\n\n").await;
        let _ = s.shutdown(Shutdown::Both);
    }
}

async fn ticker(inner: Arc<Inner>, every: Duration) {
    let mut last_save = Instant::now();
    let mut first = true;
    while !inner.stopping.load(Ordering::SeqCst) {
        // The first tick runs at once, so known hosts are dialled at start.
        if !std::mem::take(&mut first) {
            task::sleep(every).await;
        }
        let now = Instant::now();
        let mut out = Vec::new();
        lock(&inner.core).handle(Event::Tick, now, &mut out);
        // A peer that has not read for minutes is not coming back (PROTOCOL.md §5).
        for (id, l) in lock(&inner.links).iter() {
            if lock(&l.queue).stalled(now) {
                out.push(Action::Close {
                    id: *id,
                    bye: Some((502, "Flow control timeout".into())),
                });
            }
        }
        dispatch(&inner, out);
        if now.saturating_duration_since(last_save) > SAVE_EVERY {
            save_hosts(&inner);
            last_save = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_are_classified_once_unambiguous() {
        assert_eq!(classify(b"GNUTELLA CONN"), None);
        assert_eq!(classify(b"GNUTELLA CONNECT/0.6\r\n"), Some(Kind::Gnutella));
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"GET /get/1/a HTTP/1.1"), Some(Kind::Http));
        assert_eq!(classify(b"POST /api HTTP/1.1"), Some(Kind::Http));
        assert_eq!(classify(b"get /uri-res/N2R?x HTTP/1.1"), Some(Kind::Http));
        assert_eq!(classify(b"CONNECT example:443 HTTP/1.1"), Some(Kind::Http));
        assert_eq!(classify(b"CONNECT BACK"), Some(Kind::ConnectBack));
        assert_eq!(classify(b"PO"), None);
        assert_eq!(classify(b"POST "), None);
        assert_eq!(classify(b"HELLO world"), Some(Kind::Unknown));
        assert_eq!(classify(b"\x16\x03\x01"), Some(Kind::Unknown));
        assert_eq!(classify(b"GIV 7:8f3a/file\n\n"), Some(Kind::Giv));
        assert_eq!(
            classify(b"QUEUE 0123456789abcdef0123456789abcdef 1.2.3.4:6346\r\n"),
            Some(Kind::Giv)
        );
        assert_eq!(classify(b"\n\n"), Some(Kind::ConnectBack));
        assert_eq!(classify(b"\n"), None);
        assert_eq!(classify(b"SSH-2.0"), Some(Kind::Unknown));
        assert_eq!(classify(b""), None);
    }
}
