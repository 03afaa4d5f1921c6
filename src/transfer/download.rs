//! Downloading a file by its SHA-1 from the sources hits named (PROTOCOL.md §8): the file is cut
//! into chunks handed to whichever source is free; bytes go straight to their place in a hidden
//! partial file whose state (ranges done, sources) is saved, so a restart resumes; the whole
//! file is checked against its `urn:sha1` before an atomic rename into the download folder.
//!
//! A source we cannot reach (or that asked for it in its hit) is sent a Push and comes back
//! with `GIV` on our listening port; the download then runs over that connection.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_std::channel::{Receiver, Sender, bounded};
use async_std::future::timeout;
use async_std::net::TcpStream;
use futures_lite::AsyncWriteExt;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use log::{debug, info, warn};
use serde::{Deserialize, Serialize};

use super::altlocs;
pub use super::callback::{PushWaiters, parse_giv};
use super::limit::Limiter;
use super::plan::{MAX_RETRY_WAIT, MAX_SOURCES, Plan, SliceVerdict, SourceState};
use super::turns;
use super::upload::Uploads;
use crate::net::Node;
use crate::net::hyper_io::HyperIo;
use crate::share::PARTIAL_SUFFIX;
use crate::share::partial::PartialFile;
use crate::store;
use crate::swarm::parq::Queued;
use crate::swarm::ranges::{RangeSet, parse_available};
use crate::thex::{HashTree, TreeHasher, Tth};
use crate::wire::{FileIndex, Push, ServentId, Sha1Urn};

/// Received bytes are written to the file in batches of about this much (two at most held).
const WRITE_BATCH: usize = 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a pushed source has to call back with GIV.
const GIV_TIMEOUT: Duration = Duration::from_secs(20);
/// No byte for this long: the source is stalled.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a file can be had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub addr: SocketAddrV4,
    pub index: FileIndex,
    pub name: String,
    pub servent: ServentId,
    /// Its hit said it is firewalled: go through Push.
    pub push: bool,
    /// Its push proxies (its hit's GGEP `PUSH`): asked over HTTP to push when we must.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxies: Vec<SocketAddrV4>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub urn: Sha1Urn,
    pub size: u64,
    pub name: String,
    pub sources: Vec<Source>,
    /// The Tiger tree root we trust, when a hit or a magnet named it; else the first tree a
    /// source offers is taken (gtk-gnutella's `tth_auto_discovery`).
    #[serde(default)]
    pub tth: Option<Tth>,
}

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("no source could deliver the file ({0})")]
    NoSource(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The download state saved beside the partial file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    spec: Spec,
    /// Byte ranges [start, end) written and flushed.
    done: Vec<(u64, u64)>,
}

/// One source as a person watching the download sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceView {
    pub addr: SocketAddrV4,
    /// Bytes it gave us.
    pub bytes: u64,
    /// It has only part of the file (another downloader).
    pub partial: bool,
    /// Learnt from the download mesh (`X-Alt`), not from a search.
    pub from_mesh: bool,
    pub state: SourceState,
}

/// Progress a person can watch.
#[derive(Debug, Default)]
pub struct Progress {
    pub done: AtomicU64,
    pub total: AtomicU64,
    pub sources: AtomicU64,
    /// Sources dropped for sending bytes that failed verification.
    pub bad_sources: AtomicU64,
    /// Slices that failed their Tiger tree check and were fetched again.
    pub bad_slices: AtomicU64,
    /// Bytes received from sources that had only part of the file.
    pub from_partial: AtomicU64,
    /// Bytes checked against a Tiger tree.
    pub verified: AtomicU64,
    detail: Mutex<(Vec<SourceView>, String)>,
}

impl Progress {
    /// The sources and the chunk map (`#` held, `>` in flight, `.` missing).
    pub fn detail(&self) -> (Vec<SourceView>, String) {
        self.detail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Cells in the chunk map a display shows.
pub const MAP_CELLS: usize = 64;

/// What a download needs of the running servent.
pub struct Context {
    pub node: Node,
    pub waiters: Arc<PushWaiters>,
    /// The upload side: where the partial file is offered and the mesh kept.
    pub uploads: Arc<Uploads>,
    /// All downloads together go through this limit.
    pub limit: Arc<Limiter>,
    /// The address downloaders can reach us at, when they can (not firewalled).
    pub announce: Arc<dyn Fn() -> Option<SocketAddrV4> + Send + Sync>,
    /// Alt-locs on loopback or private addresses are used (test networks, `allow_private`).
    pub accept_private: bool,
    /// How long a source we cannot reach is tried again before it is given up
    /// (`source_patience`).
    pub patience: Duration,
}

/// SHA-1 of the file's bytes, computed as the contiguous prefix grows: beside the write when
/// bytes arrive in order, from the file (the page cache) when a gap closes. (The Tiger tree
/// needs no second pass: the slice roots computed as responses land make it.)
struct Digest {
    pos: u64,
    sha1: sha1::Sha1,
}

impl Digest {
    fn new() -> Self {
        use sha1::Digest as _;
        Digest {
            pos: 0,
            sha1: sha1::Sha1::new(),
        }
    }

    fn feed(&mut self, at: u64, data: &[u8]) {
        use sha1::Digest as _;
        if at != self.pos {
            return;
        }
        self.sha1.update(data);
        self.pos += data.len() as u64;
    }
}

/// Roots of the slices a response covers whole, computed as its bytes are written.
struct SliceHashing {
    slice: u64,
    size: u64,
    /// The slice being hashed and where its next byte must come from.
    cur: Option<(u64, u64, TreeHasher)>,
}

impl SliceHashing {
    fn feed(&mut self, mut at: u64, mut data: &[u8], out: &mut Vec<(u64, Tth)>) {
        while !data.is_empty() {
            if self.cur.as_ref().is_some_and(|c| c.1 != at) {
                self.cur = None;
            }
            if self.cur.is_none() {
                if !at.is_multiple_of(self.slice) {
                    // Starts inside a slice: skip to the next boundary.
                    let skip = (self.slice - at % self.slice).min(data.len() as u64);
                    at += skip;
                    data = &data[skip as usize..];
                    continue;
                }
                self.cur = Some((at / self.slice, at, TreeHasher::new()));
            }
            let (i, pos, h) = self.cur.as_mut().expect("set above");
            let slice_end = ((*i + 1) * self.slice).min(self.size);
            let n = ((slice_end - *pos) as usize).min(data.len());
            h.update(&data[..n]);
            *pos += n as u64;
            at += n as u64;
            data = &data[n..];
            if *pos == slice_end {
                let (i, _, h) = self.cur.take().expect("set above");
                out.push((i, h.finish().root()));
            }
        }
    }
}

/// One download's shared state: its plan, the file, the digest and its watchers.
struct Dl<'a> {
    ctx: &'a Context,
    spec: Spec,
    plan: Mutex<Plan>,
    file: Arc<std::fs::File>,
    state_path: PathBuf,
    progress: &'a Progress,
    digest: Arc<Mutex<Digest>>,
    /// New sources to start a worker for.
    spawn: Sender<usize>,
    /// When bytes last landed (or the download started).
    last_bytes: Mutex<Instant>,
    /// Connections uploaders opened to call us back (`QUEUE`), by source, for its worker's
    /// next request.
    called: Mutex<HashMap<usize, TcpStream>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a request brought no bytes, or what it brought besides.
enum Fetched {
    /// Bytes [start, end) arrived; the source also said this.
    Got {
        available: Option<RangeSet>,
        thex: Option<(String, Tth)>,
        alts: Vec<SocketAddrV4>,
        /// Cut short: the connection holds the rest of the body and cannot be reused.
        cut: bool,
    },
    /// A partial source has only these ranges (416, or a 503 that says so: SWARM.md §1.3).
    /// It lacks the range; it has these, and may say when to ask again.
    Unavailable(RangeSet, Vec<SocketAddrV4>, Option<Duration>),
    /// Busy: ask again after this long; it named these other sources.
    Busy(Duration, Vec<SocketAddrV4>),
    /// It does not serve the file now (a PFSP alt-loc may say 404 while the file is not rare,
    /// SWARM.md §8.3).
    NotNow,
    Failed(io::Error),
}

impl<'a> Dl<'a> {
    /// Publishes the plan's state for displays and, when it grew, the verified ranges to the
    /// upload side.
    fn publish(&self, p: &Plan) {
        let views = p
            .sources
            .iter()
            .map(|s| SourceView {
                addr: s.src.addr,
                bytes: s.bytes,
                partial: s.partial(),
                from_mesh: s.from_mesh,
                state: s.state,
            })
            .collect();
        *lock(&self.progress.detail) = (views, p.map(MAP_CELLS));
        self.progress
            .sources
            .store(p.sources.len() as u64, Ordering::Relaxed);
        self.progress
            .verified
            .store(p.verified.covered_len(), Ordering::Relaxed);
    }

    fn share_verified(&self, p: &Plan) {
        let verified = p.verified.clone();
        let tree = p.tree.clone();
        lock_w(&self.ctx.uploads.partials).update(&self.spec.urn, |f| {
            if f.verified.covered_len() != verified.covered_len() {
                f.last_write = std::time::SystemTime::now();
            }
            f.verified = verified;
            f.tree = tree;
        });
    }

    fn add_alts(&self, alts: Vec<SocketAddrV4>) {
        let me = (self.ctx.announce)();
        let mut p = lock(&self.plan);
        for a in alts {
            if Some(a) == me || p.knows(&a) || !usable_addr(a, self.ctx.accept_private) {
                continue;
            }
            let src = Source {
                addr: a,
                index: FileIndex(0),
                name: self.spec.name.clone(),
                // An alt-loc carries no GUID: it is reached directly or not at all.
                servent: ServentId([0; 16]),
                push: false,
                proxies: Vec::new(),
            };
            if let Some(si) = p.add_source(src, true) {
                debug!("{}: new source {a} from the mesh", self.spec.name);
                let _ = self.spawn.try_send(si);
            }
        }
        self.publish(&p);
    }

    /// Takes in what peers downloading this file too said they hold, in their requests to
    /// us: a known partial source's ranges grow without a probe.
    fn peer_news(&self) {
        let news = altlocs::peer_ranges(&self.ctx.uploads, &self.spec.urn);
        if news.is_empty() {
            return;
        }
        let mut p = lock(&self.plan);
        for (addr, ranges) in news {
            if let Some(s) = p.sources.iter_mut().find(|s| s.src.addr == addr)
                && s.available.is_some()
                && ranges.covered_len() > s.held()
            {
                s.available = Some(ranges);
            }
        }
    }

    /// Judges slice roots that came in; a bad slice resets the digest if it had passed it.
    fn judge(&self, roots: Vec<(u64, Tth)>) {
        if roots.is_empty() {
            return;
        }
        let mut p = lock(&self.plan);
        let verdicts: Vec<SliceVerdict> =
            roots.into_iter().map(|(i, r)| p.slice_root(i, r)).collect();
        self.after_verdicts(&mut p, verdicts);
    }

    fn after_verdicts(&self, p: &mut Plan, verdicts: Vec<SliceVerdict>) {
        let mut grew = false;
        for v in verdicts {
            match v {
                SliceVerdict::Good(..) => grew = true,
                SliceVerdict::Bad(a, b, who) => {
                    self.progress.bad_slices.fetch_add(1, Ordering::Relaxed);
                    let names: Vec<String> = who
                        .iter()
                        .map(|&s| p.sources[s].src.addr.to_string())
                        .collect();
                    warn!(
                        "{}: bytes {a}-{} failed the Tiger tree check (from {}); fetching them again",
                        self.spec.name,
                        b - 1,
                        names.join(", ")
                    );
                    for &s in &who {
                        // Counted once, when its last strike makes it bad.
                        if p.sources[s].state == SourceState::Bad
                            && p.sources[s].strikes == super::plan::MAX_STRIKES
                        {
                            let addr = p.sources[s].src.addr;
                            warn!("source {addr} sent bad data too often: dropped");
                            self.progress.bad_sources.fetch_add(1, Ordering::Relaxed);
                            altlocs::source_failed(&self.ctx.uploads, &self.spec.urn, addr);
                        }
                    }
                    let mut d = lock(&self.digest);
                    if d.pos > a {
                        *d = Digest::new();
                    }
                    self.progress
                        .done
                        .store(p.done.covered_len(), Ordering::Relaxed);
                }
                SliceVerdict::Pending => {}
            }
        }
        if grew {
            self.share_verified(p);
        }
        self.publish(p);
    }

    /// Reads back and checks slices whose bytes came in several responses.
    async fn verify_from_disk(&self) -> io::Result<()> {
        let (slices, ranges) = {
            let p = lock(&self.plan);
            if p.tree.is_none() {
                return Ok(());
            }
            let s = p.unjudged_slices();
            let r: Vec<(u64, u64)> = s.iter().map(|&i| p.slice_range(i)).collect();
            (s, r)
        };
        if slices.is_empty() {
            return Ok(());
        }
        let file = self.file.clone();
        let roots = async_std::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            let mut out = Vec::new();
            for (i, (a, b)) in slices.into_iter().zip(ranges) {
                let mut buf = vec![0u8; (b - a) as usize];
                file.read_exact_at(&mut buf, a)?;
                out.push((i, crate::thex::slice_root(&buf)));
            }
            Ok::<_, io::Error>(out)
        })
        .await?;
        self.judge(roots);
        Ok(())
    }

    /// Hashes what the digest has not seen of the contiguous prefix, from the file.
    async fn catch_up(&self) -> io::Result<()> {
        let upto = {
            let p = lock(&self.plan);
            let pos = lock(&self.digest).pos;
            match p.done.first_gap_from(pos, p.size) {
                Some(g) => g.start,
                None => p.size,
            }
        };
        let (digest, file) = (self.digest.clone(), self.file.clone());
        async_std::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0u8; 1 << 20];
            let mut d = lock(&digest);
            while d.pos < upto {
                let n = ((upto - d.pos) as usize).min(buf.len());
                file.read_exact_at(&mut buf[..n], d.pos)?;
                let at = d.pos;
                d.feed(at, &buf[..n]);
            }
            Ok(())
        })
        .await
    }

    /// The file's Tiger tree from the slice roots known, hashing from the file the slices
    /// without one.
    async fn own_tree(&self) -> io::Result<Option<Arc<crate::thex::HashTree>>> {
        let (size, roots, ranges) = {
            let p = lock(&self.plan);
            let roots = p.own_roots();
            let ranges: Vec<(u64, u64)> =
                (0..roots.len() as u64).map(|i| p.slice_range(i)).collect();
            (p.size, roots, ranges)
        };
        let file = self.file.clone();
        async_std::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            let mut lowest = Vec::with_capacity(roots.len());
            for (root, (a, b)) in roots.into_iter().zip(ranges) {
                lowest.push(match root {
                    Some(r) => r,
                    None => {
                        let mut buf = vec![0u8; (b - a) as usize];
                        file.read_exact_at(&mut buf, a)?;
                        crate::thex::slice_root(&buf)
                    }
                });
            }
            Ok(crate::thex::HashTree::from_lowest(size, lowest).map(Arc::new))
        })
        .await
    }

    fn save_state(&self) -> io::Result<()> {
        let done = {
            let p = lock(&self.plan);
            p.done.iter().map(|r| (r.start, r.end)).collect()
        };
        let state = State {
            spec: self.spec.clone(),
            done,
        };
        let json = serde_json::to_vec(&state).map_err(io::Error::other)?;
        store::write_atomic(&self.state_path, &json)
    }

    /// No byte landed, and no source kept us a place in its queue, for [`NO_PROGRESS`]: the
    /// sources left are not going to deliver.
    /// Sleeps `d`, or less when the download ends meanwhile (a source that told us to come
    /// back in ten seconds must not hold up the end of a download other sources finished).
    async fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.finished() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            async_std::task::sleep(left.min(RANGES_LOOK_EVERY)).await;
        }
    }

    fn stalled(&self) -> bool {
        lock(&self.last_bytes).elapsed() > NO_PROGRESS
    }

    /// Written, and checked when there is a tree.
    fn finished(&self) -> bool {
        let p = lock(&self.plan);
        p.complete() && (p.tree.is_none() || p.verified.contains_range(0, p.size))
    }
}

fn lock_w<T>(m: &std::sync::RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

/// An address we may connect to for a download: a host at all, and a public one unless we
/// accept private and loopback addresses.
fn usable_addr(a: SocketAddrV4, accept_private: bool) -> bool {
    use crate::swarm::altloc::{is_public, is_routable};
    a.port() != 0 && is_routable(*a.ip()) && (accept_private || is_public(*a.ip()))
}

/// Bytes of the first response body we read when it is not the file (a tree, an error page).
const MAX_TREE: usize = 260 * 1024;
/// A partial source with nothing we need is asked again this often: it grows as it downloads.
const PARTIAL_POLL: Duration = Duration::from_millis(500);
/// How often a running download reads the ranges its peers sent in their requests to us.
const RANGES_LOOK_EVERY: Duration = Duration::from_millis(250);
/// Bad sources named in one request's `X-Nalt`, and the header line's byte budget.
const REQUEST_NALTS: usize = 16;
const REQUEST_NALT_BUDGET: usize = 512;
/// How often a running download looks in the mesh for sources it does not know.
const MESH_LOOK_EVERY: Duration = Duration::from_secs(2);
/// Longest wait between probes of a partial source that has nothing new.
const MAX_PROBE_WAIT: Duration = Duration::from_secs(16);
/// Sources that failed this many times in a row are given up.
const MAX_SOURCE_FAILURES: u32 = 3;
/// How long an unreachable source is tried again by default: a servent restarting, a home
/// router renewing its lease, take seconds to a minute or two.
pub const SOURCE_PATIENCE: Duration = Duration::from_secs(300);
/// Waits after a source said it does not serve the file now: doubling, up to the last.
const NOT_NOW_FIRST: Duration = Duration::from_secs(30);
const NOT_NOW_MAX: Duration = Duration::from_secs(600);
/// Waits between tries of an unreachable source: doubling from the first, up to the last.
const REACH_FIRST: Duration = Duration::from_secs(1);
const REACH_MAX: Duration = Duration::from_secs(30);
/// A download whose sources all wait or fail without a byte (or a queue place) for this long
/// ends as failed.
const NO_PROGRESS: Duration = Duration::from_secs(180);

/// Fetches [start, end) of the file (or the part the source sends) over `sender`.
async fn fetch(
    dl: &Dl<'_>,
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    si: usize,
    (start, end): (u64, u64),
    first: bool,
    bufs: &mut Vec<Vec<u8>>,
) -> Fetched {
    let spec = &dl.spec;
    let src = lock(&dl.plan).sources[si].src.clone();
    let err = |m: String| Fetched::Failed(io::Error::other(m));
    if let Err(e) = sender.ready().await {
        return err(format!("{}: {e}", src.addr));
    }
    let mut req = hyper::Request::get(format!("/uri-res/N2R?{}", spec.urn))
        .header(hyper::header::HOST, src.addr.to_string())
        .header(hyper::header::USER_AGENT, crate::handshake::USER_AGENT)
        .header(hyper::header::RANGE, format!("bytes={start}-{}", end - 1))
        .header("X-Gnutella-Content-URN", spec.urn.to_string());
    let me = (dl.ctx.announce)();
    if let Some(me) = me {
        req = req.header("X-Node", me.to_string());
    }
    // PARQ, as gtk-gnutella asks: the version, and the place we hold (position first).
    req = req.header("X-Queue", "1.1");
    if let Some(q) = lock(&dl.plan).sources[si].queued
        && let Some(id) = q.id
    {
        let pos = q
            .position
            .map(|p| format!("position={p}; "))
            .unwrap_or_default();
        req = req.header("X-Queued", format!("{pos}ID={id}"));
    }
    let verified_any = !lock(&dl.plan).verified.is_empty();
    // Our own pieces, so that a source downloading the file too knows what to ask us for
    // without probing (BitTorrent's HAVE; gtk-gnutella ignores the header in a request).
    if me.is_some()
        && verified_any
        && dl.ctx.uploads.shares_partials()
        && let Some(v) = altlocs::request_ranges(&lock(&dl.plan).verified)
    {
        req = req.header("X-Available-Ranges", v);
    }
    if let Some(alt) = altlocs::request_alt(
        &dl.ctx.uploads,
        &spec.urn,
        me,
        verified_any,
        src.addr,
        first,
    ) {
        req = req.header("X-Alt", alt);
    }
    // On a connection's first request, the sources this download found bad or dead, so that
    // the mesh the source hands on loses them (gtk-gnutella's X-Nalt).
    if first {
        let bad: Vec<SocketAddrV4> = lock(&dl.plan)
            .sources
            .iter()
            .filter(|s| s.unreachable || matches!(s.state, SourceState::Failed | SourceState::Bad))
            .map(|s| s.src.addr)
            .filter(|a| *a != src.addr)
            .take(REQUEST_NALTS)
            .collect();
        if !bad.is_empty() {
            let v = crate::swarm::altloc::format_x_nalt(&bad, REQUEST_NALT_BUDGET);
            if !v.is_empty() {
                req = req.header("X-Nalt", v);
            }
        }
    }
    let req = match req.body(Empty::new()) {
        Ok(r) => r,
        Err(e) => return err(e.to_string()),
    };
    let resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => return err(format!("{}: {e}", src.addr)),
    };
    // The body is timed from the answer, so time spent queued at a busy uploader does not
    // count against its rate.
    let answered = Instant::now();
    let status = resp.status();
    let h = resp.headers();
    let hv = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    let available = hv("X-Available-Ranges").and_then(|v| parse_available(v, spec.size).ok());
    let alts = altlocs::response_alts(&dl.ctx.uploads, &spec.urn, h, src.addr);
    let thex = hv("X-Thex-URI").and_then(crate::thex::parse_thex_uri);
    // Its queue's word on us: kept, so that our place holds across requests and a QUEUE
    // callback finds this source. A 2xx names the ID only.
    if let Some(q) = hv("X-Queued").and_then(|v| Queued::parse(v).ok())
        && q.id.is_some()
    {
        lock(&dl.plan).sources[si].queued = Some(q);
    }
    let retry_after = hv("Retry-After")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_WAIT));
    if let Some(u) = hv("X-Gnutella-Content-URN")
        && u.parse::<Sha1Urn>().is_ok_and(|u| u != spec.urn)
    {
        return err(format!("{} serves another file", src.addr));
    }
    let (offset, stop) = match status.as_u16() {
        // Trust the range the source says it sends, not the one we asked for: a source that
        // answers another range would otherwise put its bytes at the wrong offsets. It may
        // send less than asked (gtk-gnutella trims ranges, SWARM.md §8.2).
        206 => match hv("Content-Range").and_then(parse_content_range) {
            Some((from, to, total)) if from <= start && to >= start && total == spec.size => {
                (from, (to + 1).min(end))
            }
            Some(_) => {
                return err(format!(
                    "{} sent a range other than the one asked for",
                    src.addr
                ));
            }
            None => {
                return err(format!(
                    "{} answered 206 without a valid Content-Range",
                    src.addr
                ));
            }
        },
        // A whole-file answer to a range request: skip to our part.
        200 => (0, end),
        416 | 503 if available.as_ref().is_some_and(|a| !a.contains(start)) => {
            return Fetched::Unavailable(available.unwrap_or_default(), alts, retry_after);
        }
        503 => {
            let wait = retry_after.unwrap_or(Duration::from_secs(5));
            return Fetched::Busy(wait, alts);
        }
        404 | 410 => return Fetched::NotNow,
        code => return err(format!("{} answered {code}", src.addr)),
    };
    match receive(dl, resp.into_body(), si, offset, start, stop, bufs).await {
        Ok((cut, got)) => {
            lock(&dl.plan).rated(si, got, answered.elapsed());
            Fetched::Got {
                available,
                thex,
                alts,
                cut,
            }
        }
        Err(e) => Fetched::Failed(e),
    }
}

/// Writes the body's bytes that fall in [start, stop) into the file, hashing slices and the
/// digest on the way, through the download limit. Returns whether the end game cut the
/// request short (the rest of the body is still on the connection), and the bytes taken.
async fn receive(
    dl: &Dl<'_>,
    mut body: hyper::body::Incoming,
    si: usize,
    offset: u64,
    start: u64,
    mut stop: u64,
    bufs: &mut Vec<Vec<u8>>,
) -> io::Result<(bool, u64)> {
    let progress = dl.progress;
    let asked = stop;
    let partial_source = lock(&dl.plan).sources[si].partial();
    let addr = lock(&dl.plan).sources[si].src.addr;
    let err = |m: String| io::Error::other(m);
    let mut pos = offset;
    // Frames are copied into a batch of up to WRITE_BATCH bytes, written by one blocking
    // task while the next batch fills: a blocking task per frame cost a thread hand-off per
    // 100–400 KiB, and holding hyper's frames instead of copying them made it allocate (and
    // fault in) a fresh read buffer for every read. The two buffers live as long as the
    // worker (`bufs`): allocating them per chunk cost a page fault per 4 KiB again.
    let mut batch = bufs.pop().unwrap_or_default();
    batch.clear();
    batch.reserve(WRITE_BATCH);
    let mut batch_at = start;
    let mut spare = bufs.pop();
    let (slice, size) = {
        let p = lock(&dl.plan);
        (p.slice, p.size)
    };
    let mut hashing = Some(SliceHashing {
        slice,
        size,
        cur: None,
    });
    // The write in flight: its range.
    type Written = (Vec<u8>, SliceHashing, Vec<(u64, Tth)>);
    let mut writing: Option<(async_std::task::JoinHandle<io::Result<Written>>, u64, u64)> = None;
    let write = |buf: Vec<u8>, at: u64, mut hs: SliceHashing| {
        let f = dl.file.clone();
        let digest = dl.digest.clone();
        async_std::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            let mut roots = Vec::new();
            let mut write_and_slice = || {
                f.write_all_at(&buf, at)?;
                hs.feed(at, &buf, &mut roots);
                Ok::<_, io::Error>(())
            };
            // Bytes in order feed the SHA-1 on a second core while this one writes and hashes
            // slices: Tiger (~540 MB/s here) and SHA-1 (~1 GB/s) one after the other held a
            // download to a third of curl's speed.
            if lock(&digest).pos == at {
                std::thread::scope(|sc| {
                    let sha = sc.spawn(|| lock(&digest).feed(at, &buf));
                    let done = write_and_slice();
                    let _ = sha.join();
                    done
                })?;
            } else {
                write_and_slice()?;
            }
            Ok((buf, hs, roots))
        })
    };
    let landed = |dl: &Dl<'_>, a: u64, b: u64, roots: Vec<(u64, Tth)>| {
        *lock(&dl.last_bytes) = Instant::now();
        let mut p = lock(&dl.plan);
        p.wrote(si, a, b);
        progress.done.store(p.done.covered_len(), Ordering::Relaxed);
        if partial_source {
            progress.from_partial.fetch_add(b - a, Ordering::Relaxed);
        }
        drop(p);
        dl.judge(roots);
    };
    let received = async {
        while pos < stop {
            let frame = match timeout(STALL_TIMEOUT, body.frame()).await {
                Err(_) => return Err(err(format!("{addr} stalled"))),
                Ok(None) => break,
                Ok(Some(f)) => f.map_err(|e| err(format!("{addr}: {e}")))?,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            dl.ctx.limit.take(data.len()).await;
            // What this peer gives us ranks it at our upload queue (tit-for-tat).
            turns::lock(&dl.ctx.uploads.queue).received(addr, data.len() as u64, Instant::now());
            // The end game may have given our request's back half to a faster source.
            if let Some(end) = lock(&dl.plan).advance(si, pos + data.len() as u64) {
                stop = stop.min(end);
            }
            // Only the part of the data that falls in [start, stop) is ours; parts follow
            // each other, so a batch is one contiguous range.
            let at = pos;
            pos += data.len() as u64;
            let (lo, hi) = (start.max(at), stop.min(pos));
            if lo >= hi {
                continue;
            }
            let part = &data[(lo - at) as usize..(hi - at) as usize];
            if !batch.is_empty() && batch.len() + part.len() > WRITE_BATCH {
                if let Some((w, a, b)) = writing.take() {
                    let (buf, hs, roots) = w.await?;
                    spare = Some(buf);
                    hashing = Some(hs);
                    landed(dl, a, b, roots);
                }
                let mut next = spare
                    .take()
                    .unwrap_or_else(|| Vec::with_capacity(WRITE_BATCH));
                next.clear();
                let full = std::mem::replace(&mut batch, next);
                let n = full.len() as u64;
                let hs = hashing.take().expect("returned by the last write");
                writing = Some((write(full, batch_at, hs), batch_at, batch_at + n));
            }
            if batch.is_empty() {
                batch_at = lo;
            }
            batch.extend_from_slice(part);
        }
        Ok(())
    }
    .await;
    // Whatever happened, no write of ours is left running when this returns.
    if let Some((w, a, b)) = writing.take() {
        let (buf, hs, roots) = w.await?;
        bufs.push(buf);
        hashing = Some(hs);
        landed(dl, a, b, roots);
    }
    if !batch.is_empty() {
        let n = batch.len() as u64;
        let hs = hashing.take().expect("returned by the last write");
        let (buf, _, roots) = write(batch, batch_at, hs).await?;
        landed(dl, batch_at, batch_at + n, roots);
        batch = buf;
    }
    bufs.push(batch);
    bufs.extend(spare);
    received?;
    if pos < stop {
        return Err(err(format!("{addr} closed early")));
    }
    Ok((stop < asked, pos.min(stop).saturating_sub(start)))
}

/// Fetches the Tiger tree `uri` offers over `sender`, checked against `root`.
async fn fetch_tree(
    dl: &Dl<'_>,
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    addr: SocketAddrV4,
    uri: &str,
    root: &Tth,
) -> Result<HashTree, String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let req = hyper::Request::get(uri)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::USER_AGENT, crate::handshake::USER_AGENT)
        .header(hyper::header::ACCEPT, "application/dime")
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    if resp.status() != hyper::StatusCode::OK {
        return Err(format!("answered {}", resp.status().as_u16()));
    }
    let mut body = resp.into_body();
    let mut msg = Vec::new();
    while let Some(f) = timeout(STALL_TIMEOUT, body.frame())
        .await
        .map_err(|_| "stalled".to_string())?
    {
        let f = f.map_err(|e| e.to_string())?;
        if let Ok(d) = f.into_data() {
            if msg.len() + d.len() > MAX_TREE {
                return Err("tree too large".into());
            }
            msg.extend_from_slice(&d);
        }
    }
    crate::thex::parse_thex(&msg, dl.spec.size, root).map_err(|e| e.to_string())
}

/// One source's worker: takes ranges until the file is done or the source is given up.
async fn worker(dl: &Dl<'_>, si: usize) {
    /// However the worker ends, we no longer ask this source for anything.
    struct Asking<'a>(&'a Dl<'a>, SocketAddrV4);
    impl Drop for Asking<'_> {
        fn drop(&mut self) {
            turns::lock(&self.0.ctx.uploads.queue).asking(self.1, false, Instant::now());
        }
    }
    let _asking = Asking(dl, lock(&dl.plan).sources[si].src.addr);
    let mut failures = 0u32;
    // Since when, and how many times in a row, the source could not be reached.
    let mut unreachable: Option<(Instant, u32)> = None;
    // Write buffers, reused from chunk to chunk.
    let mut bufs: Vec<Vec<u8>> = Vec::new();
    let mut tried_tree = false;
    while !dl.finished() && !dl.stalled() {
        let (src, wait) = {
            let p = lock(&dl.plan);
            let s = &p.sources[si];
            if matches!(s.state, SourceState::Failed | SourceState::Bad) {
                return;
            }
            (s.src.clone(), s.retry_at)
        };
        if let Some(at) = wait
            && at > Instant::now()
        {
            dl.sleep(at - Instant::now()).await;
            continue;
        }
        let called = lock(&dl.called).remove(&si);
        let opened = match called {
            Some(s) => Ok(s),
            None => open(dl.ctx, &src).await,
        };
        let stream = match opened {
            Ok(s) => {
                lock(&dl.plan).sources[si].unreachable = false;
                if let Some((since, _)) = unreachable.take() {
                    info!(
                        "{}: source {} is back after {} s",
                        dl.spec.name,
                        src.addr,
                        since.elapsed().as_secs()
                    );
                }
                s
            }
            Err(e) => {
                // A source that went away may come back (a restart, a new lease): it is
                // tried again, less and less often, for the patience the user gave.
                let (since, tries) = unreachable.get_or_insert((Instant::now(), 0));
                *tries += 1;
                lock(&dl.plan).sources[si].unreachable = true;
                if since.elapsed() >= dl.ctx.patience {
                    info!(
                        "{}: giving up source {} after {} s unreachable: {e}",
                        dl.spec.name,
                        src.addr,
                        since.elapsed().as_secs()
                    );
                    give_up(dl, si);
                    return;
                }
                let wait = REACH_FIRST
                    .saturating_mul(1 << (*tries - 1).min(5))
                    .min(REACH_MAX);
                info!(
                    "{}: source {} unreachable ({e}); trying again in {} s",
                    dl.spec.name,
                    src.addr,
                    wait.as_secs()
                );
                dl.sleep(wait).await;
                continue;
            }
        };
        let (mut sender, conn) = match hyper::client::conn::http1::Builder::new()
            .allow_obsolete_multiline_headers_in_responses(true)
            .handshake(HyperIo(stream))
            .await
        {
            Ok(x) => x,
            Err(e) => {
                failures += 1;
                debug!("{}: {e}", src.addr);
                continue;
            }
        };
        // The connection future runs beside the requests in this task (RUNTIME.md).
        let conn = async {
            let _ = conn.await;
            futures_lite::future::pending::<()>().await;
        };
        let mut first = true;
        let mut probe_wait = PARTIAL_POLL;
        let run = async {
            loop {
                if dl.finished() || dl.stalled() {
                    return true;
                }
                let next = lock(&dl.plan).take(si);
                let probing = next.is_none();
                let range = match next {
                    Some(r) => r,
                    None => {
                        // Nothing for this source now. A partial source is asked again, now
                        // and then, for what lies just past what it has (it grows); a
                        // complete one waits for a range to come back.
                        let (partial, probe) = {
                            let p = lock(&dl.plan);
                            (p.sources[si].partial(), p.probe_target(si))
                        };
                        if partial {
                            // Woken early when the source's ranges grow by other news.
                            let (until, held) = (
                                Instant::now() + probe_wait,
                                lock(&dl.plan).sources[si].held(),
                            );
                            while Instant::now() < until
                                && lock(&dl.plan).sources[si].held() == held
                            {
                                async_std::task::sleep(
                                    RANGES_LOOK_EVERY
                                        .min(until.saturating_duration_since(Instant::now())),
                                )
                                .await;
                            }
                            if lock(&dl.plan).sources[si].held() > held {
                                probe_wait = PARTIAL_POLL;
                                continue;
                            }
                        } else {
                            async_std::task::sleep(PARTIAL_POLL).await;
                        }
                        let Some(probe) = probe.filter(|_| partial) else {
                            continue;
                        };
                        match lock(&dl.plan).probe(si, probe) {
                            Some(r) => r,
                            None => continue,
                        }
                    }
                };
                let held = lock(&dl.plan).sources[si].held();
                if !handle(
                    dl,
                    &mut sender,
                    si,
                    range,
                    &mut first,
                    &mut bufs,
                    &mut failures,
                    &mut tried_tree,
                )
                .await
                {
                    return false;
                }
                // A probe that found nothing new waits twice as long next time (gtk-gnutella
                // penalises early asks of a file that does not change), never less than the
                // source's own Retry-After; news brings it back to the start.
                let (grew, retry) = {
                    let p = lock(&dl.plan);
                    let s = &p.sources[si];
                    (s.held() > held, s.retry_at)
                };
                if grew {
                    probe_wait = PARTIAL_POLL;
                } else if probing {
                    probe_wait = (probe_wait * 2).min(MAX_PROBE_WAIT);
                }
                if let Some(at) = retry {
                    probe_wait = probe_wait.max(at.saturating_duration_since(Instant::now()));
                }
            }
        };
        let finished = futures_lite::future::or(run, async {
            conn.await;
            false
        })
        .await;
        if finished {
            return;
        }
        if failures >= MAX_SOURCE_FAILURES {
            info!("{}: giving up source {}", dl.spec.name, src.addr);
            give_up(dl, si);
            return;
        }
    }
}

fn give_up(dl: &Dl<'_>, si: usize) {
    let mut p = lock(&dl.plan);
    let addr = p.sources[si].src.addr;
    p.fail(si);
    dl.publish(&p);
    drop(p);
    altlocs::source_failed(&dl.ctx.uploads, &dl.spec.urn, addr);
}

/// Runs one request for `range` and books its outcome. False: the connection is no longer
/// usable (reconnect, or give up when `failures` says so).
#[allow(clippy::too_many_arguments)]
async fn handle(
    dl: &Dl<'_>,
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    si: usize,
    (a, b): (u64, u64),
    first: &mut bool,
    bufs: &mut Vec<Vec<u8>>,
    failures: &mut u32,
    tried_tree: &mut bool,
) -> bool {
    let src_addr = lock(&dl.plan).sources[si].src.addr;
    turns::lock(&dl.ctx.uploads.queue).asking(src_addr, true, Instant::now());
    let fetched = fetch(dl, sender, si, (a, b), *first, bufs).await;
    *first = false;
    let addr = {
        let mut p = lock(&dl.plan);
        p.finish(si);
        p.sources[si].src.addr
    };
    match fetched {
        Fetched::Got {
            available,
            thex,
            alts,
            cut,
        } => {
            *failures = 0;
            {
                let mut p = lock(&dl.plan);
                p.sources[si].not_now = 0;
                if let Some(av) = available {
                    p.sources[si].available = Some(av);
                } else if p.sources[si].available.is_some() {
                    // A 2xx without ranges: the source has the whole file now (PFSP 1.0a).
                    p.sources[si].available = None;
                }
                dl.publish(&p);
            }
            altlocs::source_good(&dl.ctx.uploads, &dl.spec.urn, addr);
            dl.add_alts(alts);
            if let Err(e) = dl.save_state() {
                warn!("{}: cannot save the download state: {e}", dl.spec.name);
            }
            if let Some((uri, root)) = thex
                && !*tried_tree
                && !cut
            {
                let go = {
                    let mut p = lock(&dl.plan);
                    let trusted = p.tth.is_none_or(|t| t == root);
                    let go = p.tree.is_none() && !p.tree_fetching && trusted;
                    if go {
                        p.tree_fetching = true;
                    }
                    go
                };
                if go {
                    *tried_tree = true;
                    match fetch_tree(dl, sender, addr, &uri, &root).await {
                        Ok(tree) => {
                            info!(
                                "{}: Tiger tree from {addr} (depth {}); every slice is checked as it lands",
                                dl.spec.name,
                                tree.depth()
                            );
                            let tree = Arc::new(tree);
                            let mut p = lock(&dl.plan);
                            let verdicts = p.set_tree(tree.clone());
                            dl.after_verdicts(&mut p, verdicts);
                            dl.share_verified(&p);
                        }
                        Err(e) => {
                            debug!("{}: no tree from {addr}: {e}", dl.spec.name);
                            lock(&dl.plan).tree_fetching = false;
                        }
                    }
                }
            }
            if let Err(e) = dl.verify_from_disk().await {
                warn!("{}: cannot read back the partial file: {e}", dl.spec.name);
            }
            if let Err(e) = dl.catch_up().await {
                warn!("{}: cannot read back the partial file: {e}", dl.spec.name);
            }
            // A cut request leaves the rest of its body unread: a new connection.
            !cut
        }
        Fetched::Unavailable(av, alts, retry) => {
            {
                let mut p = lock(&dl.plan);
                p.sources[si].available = Some(av);
                p.sources[si].retry_at = retry.map(|r| Instant::now() + r);
                dl.publish(&p);
            }
            dl.add_alts(alts);
            true
        }
        Fetched::Busy(wait, alts) => {
            debug!("{}: {addr} is busy; asking again in {wait:?}", dl.spec.name);
            dl.add_alts(alts);
            let queued = {
                let mut p = lock(&dl.plan);
                p.wait(si, Instant::now() + wait);
                p.sources[si].queued.and_then(|q| q.id)
            };
            // A place in a source's queue is progress of a kind: waiting our turn there is
            // not a download that stopped moving (gtk-gnutella's queues take minutes).
            if queued.is_some() {
                *lock(&dl.last_bytes) = Instant::now();
            }
            // Queued there: its QUEUE callback, when our turn comes first, ends the wait, and
            // the request goes on the connection it opened.
            let called = match queued.and_then(|id| dl.ctx.waiters.wait_queue(id)) {
                Some(rx) => {
                    futures_lite::future::or(async { rx.recv().await.ok() }, async {
                        dl.sleep(wait).await;
                        None
                    })
                    .await
                }
                None => {
                    dl.sleep(wait).await;
                    None
                }
            };
            lock(&dl.plan).sources[si].state = SourceState::Idle;
            match called {
                Some(stream) => {
                    debug!("{}: {addr} called us back: our turn", dl.spec.name);
                    lock(&dl.called).insert(si, stream);
                    false
                }
                None => true,
            }
        }
        Fetched::NotNow => {
            // "Not now", not "never": gtk-gnutella answers 404 for a partial file it holds
            // while the file is not rare (SWARM.md §8.3). Counted as a failure, three of them
            // had the source banned from the mesh for 2 h and named in X-Nalt within 15 s.
            let mut p = lock(&dl.plan);
            let s = &mut p.sources[si];
            s.not_now += 1;
            let wait = NOT_NOW_FIRST
                .saturating_mul(1 << (s.not_now - 1).min(5))
                .min(NOT_NOW_MAX);
            info!(
                "{}: {addr} does not serve it now; asking again in {} s",
                dl.spec.name,
                wait.as_secs()
            );
            p.wait(si, Instant::now() + wait);
            false
        }
        Fetched::Failed(e) => {
            *failures += 1;
            info!("{}: source {addr}: {e}", dl.spec.name);
            async_std::task::sleep(Duration::from_millis(200 * u64::from(*failures))).await;
            false
        }
    }
}

/// Runs worker futures, starting one for each source index `rx` brings, until all end.
async fn run_workers(dl: &Dl<'_>, initial: Vec<usize>, rx: Receiver<usize>) {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Poll;
    type W<'b> = Pin<Box<dyn Future<Output = ()> + Send + 'b>>;
    let mut running: Vec<W<'_>> = initial
        .into_iter()
        .map(|si| Box::pin(worker(dl, si)) as W<'_>)
        .collect();
    let next = |rx: Receiver<usize>| Box::pin(async move { (rx.recv().await.ok(), rx) });
    let mut recv = next(rx);
    std::future::poll_fn(|cx| {
        while let Poll::Ready((si, rx)) = recv.as_mut().poll(cx) {
            recv = next(rx);
            match si {
                Some(si) => running.push(Box::pin(worker(dl, si))),
                None => break,
            }
        }
        running.retain_mut(|w| w.as_mut().poll(cx).is_pending());
        if running.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

/// Downloads `spec` into `dir`; returns the final path. Resumes from a saved state when there
/// is one for the same file. While it runs, its verified ranges are offered to others (when
/// the upload side shares partials), and sources learnt from the mesh join at once.
pub async fn download(
    ctx: &Context,
    spec: Spec,
    dir: &Path,
    progress: &Progress,
) -> Result<PathBuf, DownloadError> {
    std::fs::create_dir_all(dir)?;
    let (part_path, state_path) = file_names(dir, &spec.name);
    let mut spec = spec;
    let mut done = RangeSet::new();
    if let Ok(b) = std::fs::read(&state_path)
        && let Ok(saved) = serde_json::from_slice::<State>(&b)
        && saved.spec.urn == spec.urn
        && saved.spec.size == spec.size
        && part_path.exists()
    {
        for (a, b) in saved.done {
            if a < b && b <= spec.size {
                done.insert(a, b);
            }
        }
        for s in saved.spec.sources {
            if !spec.sources.contains(&s) {
                spec.sources.push(s);
            }
        }
        if spec.tth.is_none() {
            spec.tth = saved.spec.tth;
        }
        info!(
            "resuming {}: {} of {} bytes already here",
            spec.name,
            done.covered_len(),
            spec.size
        );
    }
    let file = Arc::new(
        std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .read(true)
            .truncate(false)
            .open(&part_path)?,
    );
    file.set_len(spec.size)?;
    progress.total.store(spec.size, Ordering::Relaxed);
    let mut banned: Vec<SocketAddrV4> = Vec::new();
    // Without a tree, a mismatch with several sources is followed by one source at a time, so
    // the next mismatch names its culprit (the whole-file check is all there is).
    let mut solo = false;
    loop {
        let mut sources: Vec<Source> = spec
            .sources
            .iter()
            .filter(|s| !banned.contains(&s.addr))
            .cloned()
            .collect();
        if solo {
            sources.truncate(1);
        }
        if sources.is_empty() {
            return Err(DownloadError::NoSource(if banned.is_empty() {
                "no sources".into()
            } else {
                format!(
                    "{} sent bad data",
                    crate::text::count(banned.len() as u64, "source", "sources")
                )
            }));
        }
        let mut plan = Plan::new(spec.size, spec.tth, done.clone(), sources.len());
        plan.shuffle = (u64::from(random_index()) << 32) | u64::from(random_index());
        let initial: Vec<usize> = sources
            .iter()
            .filter_map(|s| plan.add_source(s.clone(), false))
            .collect();
        progress
            .done
            .store(plan.done.covered_len(), Ordering::Relaxed);
        lock_w(&ctx.uploads.partials).put(PartialFile {
            urn: spec.urn,
            name: spec.name.clone(),
            size: spec.size,
            path: part_path.clone(),
            index: FileIndex(random_index()),
            verified: RangeSet::new(),
            tree: None,
            last_write: std::time::SystemTime::now(),
            complete: false,
        });
        let (tx, rx) = bounded(MAX_SOURCES);
        let dl = Dl {
            ctx,
            spec: spec.clone(),
            plan: Mutex::new(plan),
            file: file.clone(),
            state_path: state_path.clone(),
            progress,
            digest: Arc::new(Mutex::new(Digest::new())),
            spawn: tx,
            last_bytes: Mutex::new(Instant::now()),
            called: Mutex::new(HashMap::new()),
        };
        dl.publish(&lock(&dl.plan));
        // A resumed file: check what is here as soon as a tree comes, hash it for the digest.
        dl.catch_up().await?;
        // Beside the workers: sources that reach the mesh by other ways than our replies (a
        // downloader naming itself in a request to us) join this download too.
        let look = async {
            let mut since = None;
            let mut last_mesh = Instant::now();
            loop {
                async_std::task::sleep(RANGES_LOOK_EVERY).await;
                dl.peer_news();
                if last_mesh.elapsed() >= MESH_LOOK_EVERY {
                    let now = Instant::now();
                    dl.add_alts(altlocs::mesh_sources(&dl.ctx.uploads, &dl.spec.urn, since));
                    (since, last_mesh) = (Some(now), now);
                }
            }
        };
        futures_lite::future::or(run_workers(&dl, initial, rx), look).await;
        let (complete, why, tree, mut contributors) = {
            let p = lock(&dl.plan);
            let why: Vec<String> = p
                .sources
                .iter()
                .filter(|s| matches!(s.state, SourceState::Failed | SourceState::Bad))
                .map(|s| {
                    format!(
                        "{} {}",
                        s.src.addr,
                        if s.state == SourceState::Bad {
                            "sent bad data"
                        } else {
                            "failed"
                        }
                    )
                })
                .collect();
            let contributors: Vec<SocketAddrV4> = p
                .sources
                .iter()
                .filter(|s| s.bytes > 0)
                .map(|s| s.src.addr)
                .collect();
            (p.complete(), why, p.tree.clone(), contributors)
        };
        if !complete || !dl.finished() {
            return Err(DownloadError::NoSource(if why.is_empty() {
                "every source stopped answering".into()
            } else {
                why.join("; ")
            }));
        }
        dl.catch_up().await?;
        file.sync_all()?;
        let urn = {
            use sha1::Digest as _;
            let mut d = lock(&dl.digest);
            let d = std::mem::replace(&mut *d, Digest::new());
            Sha1Urn(d.sha1.finalize().into())
        };
        // With no source's tree, ours: from the slice roots computed as bytes landed, and
        // the file for the slices that came in pieces or before a restart.
        let own_tree = if urn == spec.urn && tree.is_none() {
            dl.own_tree().await?
        } else {
            None
        };
        if urn == spec.urn {
            let dest = final_path(dir, &spec.name);
            std::fs::rename(&part_path, &dest)?;
            let _ = std::fs::remove_file(&state_path);
            let tree = tree.or(own_tree);
            lock_w(&ctx.uploads.partials).update(&spec.urn, |f| {
                f.path = dest.clone();
                f.verified = RangeSet::full(spec.size);
                f.tree = tree;
                f.complete = true;
                f.last_write = std::time::SystemTime::now();
            });
            info!(
                "downloaded {} ({} bytes), SHA-1 verified",
                dest.display(),
                spec.size
            );
            return Ok(dest);
        }
        lock_w(&ctx.uploads.partials).remove(&spec.urn);
        warn!(
            "{}: SHA-1 mismatch ({urn} instead of {}); discarding what was received",
            spec.name, spec.urn
        );
        // With a tree every slice matched it: the tree itself lied, and so did its source.
        // Without one, a source that alone delivered the whole file is judged by the result;
        // with several, the download starts over one source at a time.
        contributors.dedup();
        if let [only] = contributors[..] {
            warn!("source {only} sent bad data: dropped");
            banned.push(only);
            progress.bad_sources.fetch_add(1, Ordering::Relaxed);
        }
        spec.tth = None;
        solo = true;
        done = RangeSet::new();
    }
}

/// A random file index for a partial file's hits, never 0 nor gtk-gnutella's FW-FW index
/// 0x7FFFFFFD (SWARM.md §1.4).
fn random_index() -> u32 {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    match u32::from_le_bytes(b) & 0x7FFF_FFFF {
        0 | 0x7FFF_FFFD => 1,
        i => i,
    }
}

/// Longest file name we write, in bytes: most file systems take 255, and the partial file's
/// name adds a dot and a suffix.
const MAX_NAME_BYTES: usize = 200;

/// `name` from the network or a link, as a file name of the download folder: no path
/// separators or control characters, no leading dot (no hidden file, no `..`), not too long
/// (the extension kept).
fn safe_file_name(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let safe = safe.trim().trim_start_matches('.').trim();
    if safe.is_empty() {
        return "download".into();
    }
    if safe.len() <= MAX_NAME_BYTES {
        return safe.to_string();
    }
    let (stem, ext) = split_ext(safe);
    let ext = if ext.len() <= 16 { ext } else { "" };
    let mut end = MAX_NAME_BYTES - ext.len();
    while !stem.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ext}", &stem[..end])
}

/// `Song.ogg` → (`Song`, `.ogg`); a name without an extension, or only a leading dot, has none.
fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 => name.split_at(i),
        _ => (name, ""),
    }
}

fn file_names(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    // Never let a name from the network reach outside the download folder.
    let safe = safe_file_name(name);
    (
        dir.join(format!(".{safe}{PARTIAL_SUFFIX}")),
        dir.join(format!(".{safe}.servent-state")),
    )
}

/// Removes what a download of `name` into `dir` left behind (partial file and saved state), so
/// a cancelled download leaves nothing that a later one would resume from.
pub fn discard(dir: &Path, name: &str) -> io::Result<()> {
    let (part, state) = file_names(dir, name);
    for p in [part, state] {
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Bytes of `name` already saved in `dir` by an earlier, interrupted download of `urn`.
pub fn saved_bytes(dir: &Path, name: &str, urn: &Sha1Urn) -> u64 {
    let (_, state_path) = file_names(dir, name);
    std::fs::read(&state_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<State>(&b).ok())
        .filter(|s| &s.spec.urn == urn)
        .map(|s| s.done.iter().map(|(a, b)| b - a).sum())
        .unwrap_or(0)
}

/// Most interrupted downloads read back from one folder at start.
pub const MAX_SAVED: usize = 1000;

/// The interrupted downloads whose state is saved in `dir`: what each is, and its bytes saved.
/// A state file that does not parse is skipped (it is the downloader's own, rewritten whole).
pub fn saved_downloads(dir: &Path) -> Vec<(Spec, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for e in entries.flatten().take(100 * MAX_SAVED) {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with('.') && name.ends_with(".servent-state")) {
            continue;
        }
        let Ok(bytes) = std::fs::read(e.path()) else {
            continue;
        };
        if let Ok(st) = serde_json::from_slice::<State>(&bytes) {
            // Only a state with its partial file beside it, under the names it gives.
            let (part, state) = file_names(dir, &st.spec.name);
            if state != e.path() || !part.exists() {
                continue;
            }
            let have = st.done.iter().map(|(a, b)| b - a).sum();
            found.push((st.spec, have));
            if found.len() >= MAX_SAVED {
                break;
            }
        }
    }
    found
}

/// The file `name` would be saved as in `dir`, when it is already there with the SHA-1 `urn`:
/// a second download of it would only make a copy.
pub fn already_saved(dir: &Path, name: &str, urn: &Sha1Urn) -> Option<PathBuf> {
    let path = dir.join(safe_file_name(name));
    let (sha1, _) = crate::share::hash_file(&path).ok()?;
    (sha1 == *urn).then_some(path)
}

fn final_path(dir: &Path, name: &str) -> PathBuf {
    let (part, _) = file_names(dir, name);
    let base = part
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix('.'))
        .and_then(|n| n.strip_suffix(PARTIAL_SUFFIX))
        .unwrap_or("download")
        .to_string();
    let mut p = dir.join(&base);
    let (stem, ext) = split_ext(&base);
    let mut n = 1;
    while p.exists() {
        // `Song (1).ogg`, as browsers and file managers name a second copy.
        p = dir.join(format!("{stem} ({n}){ext}"));
        n += 1;
    }
    p
}

/// Opens a stream to `src`: directly unless it wants a Push, then through Push and GIV.
async fn open(ctx: &Context, src: &Source) -> io::Result<TcpStream> {
    // What went wrong directly, named in the error if Push does not help either: the user
    // wants to read "connection refused", not only that Push had no route.
    let mut direct = None;
    if !src.push {
        match timeout(CONNECT_TIMEOUT, TcpStream::connect(src.addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => {
                debug!("direct connection to {} failed: {e}", src.addr);
                direct = Some((e.kind(), format!("{}: {e}", src.addr)));
            }
            Err(_) => {
                debug!("direct connection to {} timed out", src.addr);
                direct = Some((
                    io::ErrorKind::TimedOut,
                    format!("{}: no answer in {} s", src.addr, CONNECT_TIMEOUT.as_secs()),
                ));
            }
        }
    }
    let fail = |kind: io::ErrorKind, push: String| match &direct {
        Some((k, d)) => io::Error::new(*k, format!("{d}; {push}")),
        None => io::Error::new(kind, push),
    };
    let rx = ctx.waiters.wait(src.servent);
    let me = ctx.node.advertised_addr();
    let sent = ctx.node.push(&Push {
        target: src.servent,
        index: src.index,
        addr: me,
        ggep: None,
    });
    // Its push proxies too: they reach it when the path its hit came by is gone.
    let mut proxied = false;
    for p in src
        .proxies
        .iter()
        .take(crate::overlay::pushproxy::MAX_PROXIES)
    {
        match super::pushproxy::ask(*p, src.servent, src.index, me).await {
            Ok(code) => {
                info!("push proxy {p} pushed to {} for us ({code})", src.servent);
                proxied = true;
                break;
            }
            Err(e) => debug!("push proxy {p} for {}: {e}", src.servent),
        }
    }
    let sent = sent || proxied;
    if !sent {
        return Err(fail(
            io::ErrorKind::NotConnected,
            format!("no route to push to {}", src.servent),
        ));
    }
    info!("asked {} to push to us at {me}", src.servent);
    match timeout(GIV_TIMEOUT, rx.recv()).await {
        Ok(Ok(s)) => Ok(s),
        _ => Err(fail(
            io::ErrorKind::TimedOut,
            format!("{} did not call back", src.servent),
        )),
    }
}

/// `bytes FROM-TO/TOTAL` → (FROM, TO, TOTAL).
fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (from, to) = range.split_once('-')?;
    let (from, to, total) = (
        from.trim().parse::<u64>().ok()?,
        to.trim().parse::<u64>().ok()?,
        total.trim().parse::<u64>().ok()?,
    );
    (from <= to && to < total).then_some((from, to, total))
}

/// Writes `GIV` for tests and tools that play a pushed servent.
pub async fn write_giv(s: &mut TcpStream, index: FileIndex, servent: ServentId) -> io::Result<()> {
    s.write_all(format!("GIV {}:{}/file\n\n", index.0, servent.to_hex()).as_bytes())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_the_network_become_safe_file_names() {
        assert_eq!(safe_file_name("Copper Lantern.txt"), "Copper Lantern.txt");
        assert_eq!(safe_file_name("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(safe_file_name(".hidden"), "hidden");
        assert_eq!(safe_file_name("a\nb\u{7}.ogg"), "a_b_.ogg");
        assert_eq!(safe_file_name(" .. "), "download");
        let long = format!("{}.flac", "é".repeat(300));
        let cut = safe_file_name(&long);
        assert!(
            cut.len() <= MAX_NAME_BYTES && cut.ends_with(".flac"),
            "{cut}"
        );
    }

    #[test]
    fn a_second_copy_is_numbered_before_its_extension() {
        let dir = std::env::temp_dir().join(format!("servent-names-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for n in ["Song.ogg", "Song (1).ogg", "README"] {
            std::fs::write(dir.join(n), b"x").unwrap();
        }
        assert_eq!(final_path(&dir, "Song.ogg"), dir.join("Song (2).ogg"));
        assert_eq!(final_path(&dir, "README"), dir.join("README (1)"));
        assert_eq!(final_path(&dir, "New.txt"), dir.join("New.txt"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn content_ranges_parse_and_nonsense_is_refused() {
        assert_eq!(parse_content_range("bytes 0-99/100"), Some((0, 99, 100)));
        assert_eq!(
            parse_content_range("bytes 1048576-2097151/5000000"),
            Some((1048576, 2097151, 5000000))
        );
        assert_eq!(parse_content_range("bytes 5-4/100"), None);
        assert_eq!(parse_content_range("bytes 0-100/100"), None);
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(parse_content_range(""), None);
    }

    #[test]
    fn giv_lines_of_gtk_gnutella_and_limewire_parse() {
        let g = ServentId::from_hex("8f3a9c1e5b7d2f4aff61d0c2e4b6a801").unwrap();
        assert_eq!(
            parse_giv("GIV 7:8f3a9c1e5b7d2f4aff61d0c2e4b6a801/file"),
            Some(g)
        );
        assert_eq!(
            parse_giv("GIV 0:8F3A9C1E5B7D2F4AFF61D0C2E4B6A801/My Song.mp3"),
            Some(g)
        );
        assert_eq!(parse_giv("GIV 7:nothex/file"), None);
        assert_eq!(parse_giv("GET / HTTP/1.1"), None);
    }

    #[test]
    fn slice_roots_come_from_whole_slices_only() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let mut h = SliceHashing {
            slice: 128 * 1024,
            size: data.len() as u64,
            cur: None,
        };
        let mut roots = Vec::new();
        // Starts inside slice 0: only slices 1 and 2 (the short last one) can be judged.
        let from = 1000;
        for piece in data[from..].chunks(7777) {
            let at = (piece.as_ptr() as usize - data.as_ptr() as usize) as u64;
            h.feed(at, piece, &mut roots);
        }
        let s = 128 * 1024;
        assert_eq!(
            roots,
            vec![
                (1, crate::thex::slice_root(&data[s..2 * s])),
                (2, crate::thex::slice_root(&data[2 * s..])),
            ]
        );
    }

    #[test]
    fn names_from_the_network_stay_inside_the_download_folder() {
        let dir = Path::new("/tmp/dl");
        let (part, state) = file_names(dir, "../../etc/passwd");
        assert_eq!(part.parent(), Some(dir));
        assert_eq!(state.parent(), Some(dir));
        assert!(final_path(dir, "/abs/olute").starts_with(dir));
        assert!(final_path(dir, "..").starts_with(dir));
    }
}
