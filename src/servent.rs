//! The whole servent: a node on the network, the shared library answering its queries, the
//! upload server on the same port, searches, and Push callbacks.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_std::channel::{Receiver, Sender, bounded};
use async_std::net::TcpStream;
use async_std::task;
use futures_lite::AsyncWriteExt;
use log::{info, warn};

use crate::net::{Incoming, Node, NodeConfig};
use crate::overlay::{Delivery, Observation};
use crate::share::hits::{Offer, Responder, query_hits};
use crate::share::{HashCache, Library, ScanProgress, Scanned};
use crate::swarm::parq::{QueueId, queue_line};
use crate::thex::Tth;
use crate::transfer::download::{self, PushWaiters, Source, Spec};
use crate::transfer::limit::Limiter;
use crate::transfer::turns;
use crate::transfer::upload::{self, Uploads};
use crate::wire::{
    Descriptor, Extensions, Framed, Guid, Payload, Query, QueryFlags, Sha1Urn, Text, frame,
};

/// A result of a hit, as a downloader sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Found {
    pub urn: Sha1Urn,
    pub size: u64,
    pub name: String,
    pub source: Source,
    /// The Tiger tree root the hit gave (GGEP `TT`, or GGEP `H` type 2).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::share::trees::ser_tth"
    )]
    pub tth: Option<Tth>,
    /// The source has only part of the file (GGEP `PRU`, or LimeWire's `PR0`–`PR4`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

/// The Tiger root and partial mark a result's GGEP block carries.
fn tth_and_partial(ext: &crate::wire::Extensions<'_>) -> (Option<Tth>, bool) {
    let Some(g) = ext.ggep() else {
        return (None, false);
    };
    let tth = g
        .value("TT")
        .and_then(|v| v.get(..24).and_then(|b| b.try_into().ok()))
        .or_else(|| {
            g.value("H")
                .filter(|v| v.first() == Some(&2))
                .and_then(|v| v.get(21..45).and_then(|b| b.try_into().ok()))
        })
        .map(Tth);
    let partial = ["PRU", "PR0", "PR1", "PR2", "PR3", "PR4"]
        .iter()
        .any(|id| g.get(id).is_some());
    (tth, partial)
}

/// The QueryHit in `msg`, if it is one.
fn hit_of(msg: &[u8]) -> Option<crate::wire::QueryHit<'_>> {
    match decode(msg)?.payload {
        Payload::QueryHit(h) => Some(h),
        _ => None,
    }
}

/// How many results of a QueryHit descriptor [`found_in_hit`] offers, without building them:
/// what a search counts as kept.
pub fn kept_in_hit(msg: &[u8]) -> u32 {
    hit_of(msg).map_or(0, |h| {
        h.results
            .iter()
            .filter(|r| r.extensions.sha1().is_some())
            .count() as u32
    })
}

/// The results of a QueryHit descriptor that carry a `urn:sha1` (others cannot be verified,
/// so they are not offered).
pub fn found_in_hit(msg: &[u8]) -> Vec<Found> {
    let Some(h) = hit_of(msg) else {
        return Vec::new();
    };
    // Hits from private or loopback addresses are treated as firewalled by gtk-gnutella; we
    // still try them directly first and push when that fails.
    let push = h.flags().is_some_and(|f| f.push);
    let proxies = push_proxies_of(&h);
    h.results
        .iter()
        .filter_map(|r| {
            let (tth, partial) = tth_and_partial(&r.extensions);
            Some(Found {
                tth,
                partial,
                urn: r.extensions.sha1()?,
                size: r.file_size(),
                name: r.name.to_string_lossy().into_owned(),
                source: Source {
                    addr: h.addr,
                    index: r.index,
                    name: r.name.to_string_lossy().into_owned(),
                    servent: h.servent,
                    push,
                    proxies: proxies.clone(),
                },
            })
        })
        .collect()
}

/// The push proxies a hit's QHD names (GGEP `PUSH` in its private area: IPv4 big-endian,
/// port little-endian, 6 bytes each), at most [`crate::overlay::pushproxy::MAX_PROXIES`]; a
/// malformed block names none.
fn push_proxies_of(h: &crate::wire::QueryHit<'_>) -> Vec<SocketAddrV4> {
    let Some(qhd) = h.trailer.qhd() else {
        return Vec::new();
    };
    let Ok(g) = crate::wire::ggep::Ggep::parse_all(qhd.private) else {
        return Vec::new();
    };
    let Some(v) = g.value("PUSH") else {
        return Vec::new();
    };
    if !v.len().is_multiple_of(6) {
        return Vec::new();
    }
    v.chunks_exact(6)
        .map(|c| {
            SocketAddrV4::new(
                std::net::Ipv4Addr::new(c[0], c[1], c[2], c[3]),
                u16::from_le_bytes([c[4], c[5]]),
            )
        })
        .filter(|a| a.port() != 0 && !a.ip().is_unspecified())
        .take(crate::overlay::pushproxy::MAX_PROXIES)
        .collect()
}

/// Adds a found result to `specs`, grouped by SHA-1 with one source per servent. Returns true
/// when it is a file not seen before.
pub fn add_found(specs: &mut Vec<Spec>, f: Found) -> bool {
    if let Some(s) = specs.iter_mut().find(|s| s.urn == f.urn) {
        if !s.sources.iter().any(|x| x.servent == f.source.servent) {
            s.sources.push(f.source);
        }
        if s.tth.is_none() {
            s.tth = f.tth;
        }
        return false;
    }
    specs.push(Spec {
        urn: f.urn,
        size: f.size,
        name: f.name,
        sources: vec![f.source],
        tth: f.tth,
    });
    true
}

/// Groups found results by SHA-1 into download specs, one source per servent.
pub fn specs(found: &[Found]) -> Vec<Spec> {
    let mut by = Vec::new();
    for f in found {
        add_found(&mut by, f.clone());
    }
    by
}

/// Our leaf QRP table has 2^16 slots, the size UPQRP recommends (PROTOCOL.md §6).
const QRP_BITS: u8 = 16;
/// Hits buffered per search before the searcher reads them; more are dropped.
const SEARCH_QUEUE: usize = 1024;
/// Upload counters are given to the reputation this often; its bandwidth is the best rate
/// over such a window.
const UPLOAD_SAMPLE: Duration = Duration::from_secs(5);
/// Most upload slots a user may set at run time: each is a transfer at once, and past this the
/// rate per slot is too thin to be worth a downloader's while.
pub const MAX_UPLOAD_SLOTS: usize = 64;
/// A Push callback must connect within this.
const PUSH_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// While the first scan hashes, what it has so far is shared this often, and the log says how
/// far it is this often.
const PUBLISH_EVERY: Duration = Duration::from_secs(2);
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct ServentConfig {
    pub node: NodeConfig,
    pub shares: Vec<PathBuf>,
    pub upload_slots: usize,
    /// `Some(true)`: say we are firewalled whatever we observe (`--firewalled`); `Some(false)`:
    /// say we are not; `None`: firewalled until a connection from outside reaches us.
    pub firewalled: Option<bool>,
    /// Announced upload speed in kbit/s.
    pub speed_kbps: u32,
    /// How often the share folders are rescanned for added, changed and removed files.
    /// Unchanged files cost a `stat` each (their SHA-1s are cached).
    pub rescan_every: Option<Duration>,
    /// Offer the verified parts of files still downloading.
    pub share_partial: bool,
    /// Bytes per second for all uploads together, and for all downloads; 0: none.
    pub upload_limit: u64,
    /// Who gets the upload slots (`upload_policy`).
    pub upload_policy: crate::swarm::queue::Policy,
    pub download_limit: u64,
    /// The window over which an upload's reader must keep up the minimum rate
    /// (`transfer::stall`); shortened by tests.
    pub upload_stall_window: Duration,
    /// How long a download tries a source it cannot reach before giving it up
    /// (`source_patience`).
    pub source_patience: Duration,
    /// `start` returns once the port is bound, and the shares are hashed behind it, each
    /// file shared as soon as its hash is known (the daemon); otherwise `start` returns with
    /// the shares ready.
    pub hash_in_background: bool,
}

impl ServentConfig {
    pub fn new(node: NodeConfig) -> Self {
        ServentConfig {
            node,
            shares: Vec::new(),
            upload_slots: 4,
            firewalled: None,
            speed_kbps: 1000,
            rescan_every: Some(Duration::from_secs(60)),
            share_partial: true,
            upload_limit: 0,
            upload_policy: crate::swarm::queue::Policy::default(),
            upload_stall_window: crate::transfer::stall::WINDOW,
            source_patience: crate::transfer::download::SOURCE_PATIENCE,
            download_limit: 0,
            hash_in_background: false,
        }
    }
}

/// A search's hit queue and how many results it kept (the ones with a `urn:sha1`, as
/// [`found_in_hit`] offers them).
type SearchSink = (Sender<Arc<[u8]>>, u32);

struct Shared {
    node: Node,
    uploads: Arc<Uploads>,
    waiters: Arc<PushWaiters>,
    searches: Mutex<HashMap<Guid, SearchSink>>,
    firewalled: Option<bool>,
    speed_kbps: u32,
    shares: Vec<PathBuf>,
    data_dir: PathBuf,
    download_limit: Arc<Limiter>,
    accept_private: bool,
    source_patience: Duration,
    /// How far the running scan is.
    scan: Mutex<ScanProgress>,
    /// A scan runs: a rescan asked meanwhile is not started twice.
    scanning: std::sync::atomic::AtomicBool,
}

/// A running servent.
#[derive(Clone)]
pub struct Servent {
    shared: Arc<Shared>,
}

/// A search in progress: its hits arrive as whole QueryHit descriptors.
pub struct Search {
    pub muid: Guid,
    pub hits: Receiver<Arc<[u8]>>,
}

/// The words of a file name a query can carry: letters and digits, lower case, at most 8 and
/// 120 bytes (the longest queries gtk-gnutella forwards are far longer).
fn name_words(name: &str) -> String {
    let mut out = String::new();
    for w in name
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 2)
        .take(8)
    {
        if out.len() + w.len() + 1 > 120 {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&w.to_lowercase());
    }
    out
}

/// Feeds the upload counters to the node's reputation (bandwidth, uploads served).
async fn sample_uploads(node: Node, uploads: Arc<Uploads>) {
    use std::sync::atomic::Ordering;
    loop {
        node.observe(Observation::Uploads {
            bytes: uploads.bytes_sent.load(Ordering::Relaxed),
            completed: uploads.completed.load(Ordering::Relaxed),
        });
        task::sleep(UPLOAD_SAMPLE).await;
    }
}

struct Handler(Arc<Shared>);

impl Incoming for Handler {
    fn http(
        &self,
        stream: TcpStream,
        initial: Vec<u8>,
        peer: SocketAddrV4,
    ) -> futures_lite::future::Boxed<()> {
        let up = self.0.uploads.clone();
        Box::pin(upload::serve(up, stream, initial, peer))
    }

    fn giv(
        &self,
        stream: TcpStream,
        initial: Vec<u8>,
        peer: SocketAddrV4,
    ) -> futures_lite::future::Boxed<()> {
        let waiters = self.0.waiters.clone();
        Box::pin(async move { waiters.giv(stream, initial, peer).await })
    }
}

impl Servent {
    pub async fn start(cfg: ServentConfig) -> io::Result<Servent> {
        let data_dir = cfg.node.data_dir.clone();
        crate::store::create_private_dir(&data_dir)?;
        let accept_private = cfg.node.accept_private;
        // The port first: a port in use fails at once, not after hashing the shares.
        let node = Node::start(cfg.node).await?;
        let library = Library::default();
        let uploads = Uploads::with(
            Arc::new(RwLock::new(library)),
            cfg.upload_slots,
            &data_dir,
            cfg.share_partial,
            cfg.upload_limit,
            cfg.upload_policy,
        );
        *uploads.me.write().unwrap_or_else(|e| e.into_inner()) =
            vec![node.listen_addr(), node.advertised_addr()];
        uploads.stall_window_ms.store(
            cfg.upload_stall_window.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let shared = Arc::new(Shared {
            source_patience: cfg.source_patience,
            download_limit: Arc::new(Limiter::new(cfg.download_limit)),
            accept_private,
            node: node.clone(),
            uploads,
            waiters: PushWaiters::new(),
            searches: Mutex::new(HashMap::new()),
            firewalled: cfg.firewalled,
            speed_kbps: cfg.speed_kbps,
            shares: cfg.shares,
            data_dir,
            scan: Mutex::new(ScanProgress::default()),
            scanning: Default::default(),
        });
        node.set_incoming(Arc::new(Handler(shared.clone())));
        let fw = Arc::downgrade(&shared);
        *shared
            .uploads
            .fw_node
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(move || {
            let s = fw.upgrade()?;
            s.is_firewalled().then(|| {
                (
                    s.node.servent(),
                    s.node.advertised_addr(),
                    s.node.push_proxies(),
                )
            })
        }));
        let proxy_node = node.clone();
        *shared
            .uploads
            .proxy
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(move |p| proxy_node.proxy_push(p)));
        if let Some(f) = cfg.firewalled {
            node.observe(Observation::Firewalled(f));
        }
        task::spawn(deliveries(shared.clone()));
        task::spawn(sample_uploads(node.clone(), shared.uploads.clone()));
        task::spawn(upload_turns(shared.clone()));
        let servent = Servent { shared };
        if cfg.hash_in_background {
            let s = servent.clone();
            task::spawn(async move { s.first_scan().await });
        } else {
            servent.first_scan().await;
        }
        if let Some(every) = cfg.rescan_every {
            let s = servent.clone();
            task::spawn(async move {
                loop {
                    task::sleep(every).await;
                    s.rescan().await;
                }
            });
        }
        Ok(servent)
    }

    pub fn node(&self) -> &Node {
        &self.shared.node
    }

    pub fn library(&self) -> Arc<RwLock<Library>> {
        self.shared.uploads.library.clone()
    }

    pub fn uploads(&self) -> &Arc<Uploads> {
        &self.shared.uploads
    }

    /// Whether we tell others to push to us.
    pub fn firewalled(&self) -> bool {
        self.shared.is_firewalled()
    }

    /// Whether we tell others to push to us, and why, in words.
    pub fn firewall_reason(&self) -> (bool, &'static str) {
        match self.shared.firewalled {
            Some(true) => (
                true,
                "set to firewalled by the settings (firewalled = true)",
            ),
            Some(false) => (
                false,
                "set to reachable by the settings (firewalled = false)",
            ),
            None if self.shared.node.reachable() => {
                (false, "a connection from outside reached our port")
            }
            None => (
                true,
                "no connection from outside has reached our port yet (as a leaf we ask our \
                 ultrapeer to connect back; forward the port or listen on a public address)",
            ),
        }
    }

    /// Where the GUID, caches and the API token live.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.shared.data_dir
    }

    /// The shared folders.
    pub fn share_folders(&self) -> &[PathBuf] {
        &self.shared.shares
    }

    /// Rescans the share folders; new, changed and removed files show from now on. The old
    /// library keeps answering until the new one is ready.
    pub async fn rescan(&self) {
        if self
            .shared
            .scanning
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            info!("a scan of the shares is running already");
            return;
        }
        let old = self
            .shared
            .uploads
            .library
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let s = self.clone();
        let scanned = task::spawn_blocking(move || s.scan_blocking(Some(old))).await;
        // A scan cut short (no file descriptors left, a disk error) would unshare what it
        // did not reach: the library it would replace is the better one.
        if let Some(e) = scanned.failed {
            warn!("rescan failed, the shares stay as they were: {e}");
            return;
        }
        let lib = scanned.library;
        let changed = {
            let old = self
                .shared
                .uploads
                .library
                .read()
                .unwrap_or_else(|e| e.into_inner());
            old.files() != lib.files()
        };
        if !changed {
            return;
        }
        info!(
            "shares changed: now {}",
            crate::text::count(lib.len() as u64, "file", "files")
        );
        self.publish(lib);
    }

    /// The first scan: what it finds is shared as it goes (every [`PUBLISH_EVERY`]).
    async fn first_scan(&self) {
        let s = self.clone();
        let scanned = task::spawn_blocking(move || s.scan_blocking(None)).await;
        for p in &scanned.private {
            warn!(
                "{} is servent's data folder, inside a share: it is never shared",
                p.display()
            );
        }
        if let Some(e) = &scanned.failed {
            warn!("the first scan of the shares is incomplete: {e}");
        }
        let library = scanned.library;
        info!(
            "sharing {} ({})",
            crate::text::count(library.len() as u64, "file", "files"),
            crate::text::human(u64::from(library.kbytes()) * 1024)
        );
        self.publish(library);
    }

    /// Scans the shares (a blocking call), keeping [`Servent::scan_progress`] up to date; a
    /// first scan (no `prev`) shares what it has hashed so far as it goes.
    fn scan_blocking(&self, prev: Option<Library>) -> Scanned {
        use std::sync::atomic::Ordering;
        let sh = &self.shared;
        sh.scanning.store(true, Ordering::Relaxed);
        let mut cache = HashCache::load(&sh.data_dir);
        let progressive = prev.is_none();
        let now = std::time::Instant::now();
        // The first files found are shared at once; then every PUBLISH_EVERY.
        let mut published = now.checked_sub(PUBLISH_EVERY).unwrap_or(now);
        let (mut told, mut shared_len) = (now, 0);
        let scanned = Library::scan_reporting(
            &sh.shares,
            std::slice::from_ref(&sh.data_dir),
            &mut cache,
            prev.as_ref(),
            &mut |p, lib| {
                *sh.scan.lock().unwrap_or_else(|e| e.into_inner()) = p.clone();
                if p.bytes_left > 0 && told.elapsed() >= PROGRESS_EVERY {
                    info!("{p}");
                    told = std::time::Instant::now();
                }
                if progressive && lib.len() != shared_len && published.elapsed() >= PUBLISH_EVERY {
                    self.publish(lib.clone());
                    shared_len = lib.len();
                    published = std::time::Instant::now();
                }
            },
        );
        if let Err(e) = cache.save(&sh.data_dir) {
            warn!("cannot save the SHA-1 cache: {e}");
        }
        sh.scan.lock().unwrap_or_else(|e| e.into_inner()).running = false;
        sh.scanning.store(false, Ordering::Relaxed);
        scanned
    }

    /// How far the running scan of the shares is (`running` false when none runs).
    pub fn scan_progress(&self) -> ScanProgress {
        self.shared
            .scan
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Shares `lib` from now on, and tells the network.
    fn publish(&self, lib: Library) {
        self.shared.node.set_shared(lib.len() as u32, lib.kbytes());
        *self
            .shared
            .uploads
            .library
            .write()
            .unwrap_or_else(|e| e.into_inner()) = lib;
        self.refresh_table();
    }

    /// Sends a keyword search (and asks for `urn:sha1` in the hits).
    /// A search for `words`; a `urn:sha1:…` alone looks for that file, as `get` does.
    pub fn search(&self, words: &str) -> Search {
        if let Ok(urn) = words.trim().parse::<crate::wire::Sha1Urn>() {
            return self.search_urn(&urn);
        }
        let mut ext = crate::wire::ExtBuilder::new();
        ext.text("urn:").ggep(&partials_wanted());
        self.search_payload(words.as_bytes(), &ext.finish())
    }

    /// Sends a search for a file by its SHA-1 (criteria `\`, as LimeWire and gtk-gnutella do).
    pub fn search_urn(&self, urn: &crate::wire::Sha1Urn) -> Search {
        self.search_urn_named(urn, None)
    }

    /// A search for `urn` that also carries the words of its `name` when one is known (a
    /// magnet's `dn`): gtk-gnutella routes queries to its leaves by words only, so a bare urn
    /// query never reaches the leaves that hold the file.
    pub fn search_urn_named(&self, urn: &crate::wire::Sha1Urn, name: Option<&str>) -> Search {
        let mut ext = crate::wire::ExtBuilder::new();
        ext.urn(urn).ggep(&partials_wanted());
        let words = name.map(name_words).unwrap_or_default();
        let criteria = if words.is_empty() {
            b"\\".to_vec()
        } else {
            words.into_bytes()
        };
        self.search_payload(&criteria, &ext.finish())
    }

    fn search_payload(&self, criteria: &[u8], ext: &[u8]) -> Search {
        let mut flags = QueryFlags::MARKED | QueryFlags::GGEP_H;
        if self.firewalled() {
            flags |= QueryFlags::FIREWALLED;
        }
        let mut p = Vec::new();
        Query {
            flags: QueryFlags(flags),
            criteria: Text(criteria),
            extensions: Extensions::parse(ext).unwrap_or_default(),
        }
        .encode(&mut p);
        let (tx, rx) = bounded(SEARCH_QUEUE);
        // Register before sending, so no early hit is lost.
        let mut searches = self
            .shared
            .searches
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // PROTOCOL.md §1: fresh queries go out with TTL ≤ 3.
        let muid = self.shared.node.search(&p, 3);
        searches.insert(muid, (tx, 0));
        Search { muid, hits: rx }
    }

    /// Stops delivering hits for a search.
    pub fn stop_search(&self, muid: &Guid) {
        self.shared.node.stop_search(*muid);
        self.shared
            .searches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(muid);
    }

    /// Downloads a file into `dir`, from the given sources, resuming a saved partial download
    /// of the same file. Returns the verified file's path.
    pub async fn download(
        &self,
        spec: Spec,
        dir: &std::path::Path,
        progress: &download::Progress,
    ) -> Result<PathBuf, download::DownloadError> {
        let shared = self.shared.clone();
        let announce = move || (!shared.is_firewalled()).then(|| shared.node.advertised_addr());
        let ctx = download::Context {
            node: self.shared.node.clone(),
            waiters: self.shared.waiters.clone(),
            uploads: self.shared.uploads.clone(),
            limit: self.shared.download_limit.clone(),
            announce: Arc::new(announce),
            accept_private: self.shared.accept_private,
            patience: self.shared.source_patience,
        };
        let urn = spec.urn;
        // The file's words and urn go into our QRP table while it downloads, so queries for it
        // reach us once we have something to offer; the download registers it as it starts.
        let s = self.clone();
        task::spawn(async move {
            task::sleep(Duration::from_millis(100)).await;
            s.refresh_table();
        });
        let r = download::download(&ctx, spec, dir, progress).await;
        if r.is_err() {
            // A failed download offers nothing; its data stays for a resume.
            let mut partials = self
                .shared
                .uploads
                .partials
                .write()
                .unwrap_or_else(|e| e.into_inner());
            if partials.get(&urn).is_some_and(|p| !p.complete) {
                partials.remove(&urn);
            }
        }
        self.refresh_table();
        r
    }

    /// Our QRP table and shared counts from the library and the files downloading.
    pub fn refresh_table(&self) {
        let up = &self.shared.uploads;
        let lib = up.library.read().unwrap_or_else(|e| e.into_inner());
        let mut t = lib.qrp_table(QRP_BITS);
        if up.shares_partials() {
            for p in up.partials.read().unwrap_or_else(|e| e.into_inner()).iter() {
                for w in crate::share::words::qrp_words(&p.name) {
                    t.insert_word(&w);
                }
                t.insert_word(&p.urn.to_string());
            }
        }
        self.shared.node.set_qrp_table(t);
    }

    /// The upload and download limits in bytes per second (0: none).
    pub fn limits(&self) -> (u64, u64) {
        (
            self.shared.uploads.limit.rate(),
            self.shared.download_limit.rate(),
        )
    }

    /// Changes the limits from now on; `None` leaves one as it is.
    pub fn set_limits(&self, upload: Option<u64>, download: Option<u64>) {
        if let Some(u) = upload {
            self.shared.uploads.limit.set_rate(u);
        }
        if let Some(d) = download {
            self.shared.download_limit.set_rate(d);
        }
    }

    /// Upload slots from now on (at least 1; at most [`MAX_UPLOAD_SLOTS`]).
    pub fn set_upload_slots(&self, n: usize) {
        let n = n.clamp(1, MAX_UPLOAD_SLOTS);
        let up = &self.shared.uploads;
        up.slots.set_max(n);
        up.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_slots(n);
    }

    /// Bytes received by all downloads.
    pub fn downloaded_bytes(&self) -> u64 {
        self.shared.download_limit.total()
    }

    /// One line on how the servent is doing, for the log.
    pub fn summary(&self) -> String {
        let links = self.shared.node.connections();
        let ups = links
            .iter()
            .filter(|c| c.role == crate::handshake::Role::Ultrapeer)
            .count();
        let files = self
            .shared
            .uploads
            .library
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        let stats = self.shared.node.stats();
        let rep = self.shared.node.reputation();
        use crate::text::{count, human};
        let n = |v: usize| v as u64;
        format!(
            "{}; reputation {}/{}: {}; {} ({}, {}), sharing {}, {} done, {} sent, {} routed, {}",
            self.shared.node.role(),
            rep.score,
            rep.threshold,
            rep.summary,
            count(n(links.len()), "link", "links"),
            count(n(ups), "ultrapeer", "ultrapeers"),
            count(n(links.len() - ups), "leaf", "leaves"),
            count(n(files), "file", "files"),
            count(
                self.shared
                    .uploads
                    .completed
                    .load(std::sync::atomic::Ordering::Relaxed),
                "upload",
                "uploads"
            ),
            human(
                self.shared
                    .uploads
                    .bytes_sent
                    .load(std::sync::atomic::Ordering::Relaxed)
            ),
            count(stats.queries_forwarded, "query", "queries"),
            if self.firewalled() {
                "firewalled"
            } else {
                "reachable"
            }
        )
    }

    pub async fn shutdown(&self) {
        self.shared.node.shutdown().await;
    }
}

impl Shared {
    fn is_firewalled(&self) -> bool {
        self.firewalled.unwrap_or_else(|| !self.node.reachable())
    }

    fn responder(&self) -> Responder {
        let firewalled = self.is_firewalled();
        Responder {
            addr: self.node.advertised_addr(),
            speed_kbps: self.speed_kbps,
            servent: self.node.servent(),
            firewalled,
            push_proxies: if firewalled {
                self.node.push_proxies()
            } else {
                Vec::new()
            },
            busy: self.uploads.slots.busy(),
            uploaded: self
                .uploads
                .completed
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0,
        }
    }
}

/// A GGEP block with `PR`: this query wants partial results too (SWARM.md §1.4).
fn partials_wanted() -> Vec<u8> {
    let mut g = crate::wire::ggep::GgepBuilder::new();
    g.push(
        "PR",
        &[],
        crate::wire::ggep::Encoding {
            deflate: false,
            cobs_if_nul: true,
        },
    )
    .expect("valid id");
    g.finish()
}

fn decode(msg: &[u8]) -> Option<Descriptor<'_>> {
    let Ok(Framed::Frame(f)) = frame(msg) else {
        return None;
    };
    Descriptor::decode(&f).ok()
}

async fn deliveries(shared: Arc<Shared>) {
    let rx = shared.node.deliveries();
    while let Ok(d) = rx.recv().await {
        match d {
            Delivery::Query { from, msg } => answer(&shared, from, &msg),
            Delivery::Hit { msg } => {
                let mut muid = [0u8; 16];
                muid.copy_from_slice(&msg[..16]);
                let mut searches = shared.searches.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((tx, kept)) = searches.get_mut(&Guid(muid)) {
                    let _ = tx.try_send(msg.clone());
                    // What the dynamic query counts (ours as an ultrapeer, our ultrapeer's
                    // through BEAR/12 as a leaf): results that pass our filter, not all.
                    *kept = kept.saturating_add(kept_in_hit(&msg));
                    shared.node.set_search_kept(Guid(muid), *kept);
                }
            }
            Delivery::Push { msg } => {
                let Some(Descriptor {
                    payload: Payload::Push(p),
                    ..
                }) = decode(&msg)
                else {
                    continue;
                };
                task::spawn(push_upload(shared.clone(), p.addr, p.index.0));
            }
            Delivery::ConnectBack { .. } => {}
        }
    }
}

fn answer(shared: &Shared, from: crate::overlay::ConnId, msg: &[u8]) {
    let Some(Descriptor {
        payload: Payload::Query(q),
        ..
    }) = decode(msg)
    else {
        return;
    };
    // A firewalled querier cannot reach a firewalled responder (PROTOCOL.md §8).
    if q.flags.firewalled() && shared.is_firewalled() {
        return;
    }
    let payloads = {
        let up = &shared.uploads;
        let lib = up.library.read().unwrap_or_else(|e| e.into_inner());
        let partials = up.partials.read().unwrap_or_else(|e| e.into_inner());
        let mut offers: Vec<Offer<'_>> = lib.search(&q).into_iter().map(Offer::from).collect();
        // Files downloading are offered only to queries that ask for partial results (GGEP
        // `PR`), as gtk-gnutella does; the ones finished this run to every query.
        let wants_partials =
            up.shares_partials() && q.extensions.ggep().is_some_and(|g| g.get("PR").is_some());
        let urns: Vec<crate::wire::Sha1Urn> = q
            .extensions
            .iter()
            .filter_map(|i| match i {
                crate::wire::ExtItem::Sha1(u) => Some(u),
                _ => None,
            })
            .collect();
        let extra: Vec<&crate::share::partial::PartialFile> = if urns.is_empty() {
            partials.search_words(&q.criteria.to_string_lossy())
        } else {
            urns.iter().filter_map(|u| partials.offered(u)).collect()
        };
        for p in extra {
            if (p.complete || wants_partials) && !offers.iter().any(|o| o.sha1 == p.urn) {
                offers.push(Offer::from(p));
            }
        }
        if offers.is_empty() {
            return;
        }
        query_hits(&offers, &shared.responder())
    };
    for p in payloads {
        shared.node.reply(from, msg, &p);
    }
}

/// Answers a Push: connect to the downloader, say `GIV <index>:<guid>/file`, then serve HTTP
/// on that connection as if it had come in (PROTOCOL.md §8, push flow).
/// Drives the upload queue: its choking rounds and expiry every second, and the `QUEUE`
/// callbacks it asks for.
async fn upload_turns(shared: Arc<Shared>) {
    let mut seed = u64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().expect("8"));
    let mut rng = move || {
        // xorshift64*: the choker's picks need no more than this.
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    loop {
        task::sleep(TURNS_TICK).await;
        let up = &shared.uploads;
        let calls =
            turns::lock(&up.queue).tick(up.slots.free(), std::time::Instant::now(), &mut rng);
        for (id, addr) in calls {
            task::spawn(queue_callback(shared.clone(), id, addr));
        }
    }
}

/// How often the upload queue is looked at.
const TURNS_TICK: Duration = Duration::from_secs(1);

/// Calls a queued downloader back: `QUEUE <ID> <our address>`, then serves the request it
/// sends on this connection (SWARM.md §4.2).
async fn queue_callback(shared: Arc<Shared>, id: QueueId, addr: SocketAddrV4) {
    let connect = async_std::future::timeout(PUSH_CONNECT_TIMEOUT, TcpStream::connect(addr)).await;
    let mut stream = match connect {
        Ok(Ok(s)) => s,
        _ => {
            log::debug!("QUEUE: cannot reach {addr}");
            turns::lock(&shared.uploads.queue).queue_refused(&id);
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let line = queue_line(id, shared.node.advertised_addr());
    if stream.write_all(line.as_bytes()).await.is_err() {
        turns::lock(&shared.uploads.queue).queue_refused(&id);
        return;
    }
    log::debug!("QUEUE: called {addr} back for {id}");
    upload::serve(shared.uploads.clone(), stream, Vec::new(), addr).await;
}

async fn push_upload(shared: Arc<Shared>, addr: SocketAddrV4, index: u32) {
    let connect = async_std::future::timeout(PUSH_CONNECT_TIMEOUT, TcpStream::connect(addr)).await;
    let mut stream = match connect {
        Ok(Ok(s)) => s,
        _ => {
            info!("push: cannot reach {addr}");
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let giv = format!("GIV {index}:{}/file\n\n", shared.node.servent().to_hex());
    if stream.write_all(giv.as_bytes()).await.is_err() {
        return;
    }
    info!("push: connected to {addr}, serving over the callback");
    upload::serve(shared.uploads.clone(), stream, Vec::new(), addr).await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_hits_push_proxies_become_its_sources_proxies() {
        use crate::share::hits::{Offer, Responder, query_hits};
        let f = crate::share::SharedFile {
            index: crate::wire::FileIndex(3),
            path: "x".into(),
            name: "behind.txt".into(),
            size: 5,
            mtime: 0,
            sha1: crate::wire::Sha1Urn::digest(b"hello"),
            tth: None,
        };
        let proxy: std::net::SocketAddrV4 = "100.64.0.1:6346".parse().unwrap();
        let me = Responder {
            addr: "192.168.77.2:6346".parse().unwrap(),
            speed_kbps: 1000,
            servent: crate::wire::ServentId([7; 16]),
            firewalled: true,
            busy: false,
            uploaded: false,
            push_proxies: vec![proxy],
        };
        let payload = &query_hits(&[Offer::from(&f)], &me)[0];
        let msg = crate::overlay::raw_descriptor(
            crate::wire::Guid([1; 16]),
            crate::wire::PayloadType::QueryHit,
            3,
            1,
            payload,
        );
        let found = super::found_in_hit(&msg);
        assert_eq!(found.len(), 1);
        assert!(found[0].source.push);
        assert_eq!(found[0].source.proxies, vec![proxy]);
    }

    #[test]
    fn a_name_gives_the_words_a_query_carries() {
        assert_eq!(
            super::name_words("Interop Beta_sample (2024).BIN"),
            "interop beta sample 2024 bin"
        );
        assert_eq!(super::name_words("a - b"), "");
        let long = "word ".repeat(50);
        assert_eq!(super::name_words(&long).split(' ').count(), 8);
    }
}
