//! Serving shared files over HTTP/1.1 with hyper (PROTOCOL.md §8): `GET`/`HEAD` on
//! `/get/<index>/<name>` and `/uri-res/N2R?urn:sha1:<base32>`, single byte ranges, keep-alive,
//! upload slots.
//!
//! A request is resolved through the library's index (by file index or SHA-1), never through a
//! path built from the request, so nothing outside the share can be named.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddrV4;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use log::{debug, info};

use super::altlocs as mesh;
use super::limit::Limiter;
use super::slots::Slots;
use super::stall::{self, Stall};
use super::turns::{self, Held, Queue};
use crate::net::hyper_io::{AsyncIoTimer, HyperIo};
use crate::share::partial::{PartialFile, Partials};
use crate::share::trees::TreeStore;
use crate::share::{Library, SharedFile};
use crate::swarm::mesh::Mesh;
use crate::swarm::queue::{Policy, UploadQueue};
use crate::swarm::ranges::RangeSet;
use crate::thex::Tth;
use crate::wire::{FileIndex, Sha1Urn};

/// Bytes read from disk per body chunk (one blocking task each). RUNTIME.md measured 64 KiB
/// chunks at twice the CPU of 256 KiB; 1 MiB cut the thread hand-offs again (transfer_bench:
/// 0.37 instead of 0.55 CPU s/GiB, +30% MB/s, peak RSS +2.4 MiB).
pub const CHUNK: usize = 1024 * 1024;
/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// The first request line may need mending (raw spaces); it is read up to this long.
const MAX_REQUEST_LINE: usize = 8 * 1024;

pub type Body = BoxBody<Bytes, io::Error>;

fn empty() -> Body {
    Empty::new().map_err(|n: Infallible| match n {}).boxed()
}

fn text(s: &'static str) -> Body {
    Full::new(Bytes::from_static(s.as_bytes()))
        .map_err(|n: Infallible| match n {})
        .boxed()
}

/// What the upload side needs to know and counts.
pub struct Uploads {
    pub library: Arc<RwLock<Library>>,
    /// Files downloading (their verified ranges) and the ones finished this run.
    pub partials: Arc<RwLock<Partials>>,
    /// Offer the verified ranges of files still downloading (`share_partial`).
    pub share_partial: AtomicBool,
    pub slots: Arc<Slots>,
    /// Who gets the slots, and the PARQ queue of the rest (`upload_policy`).
    pub queue: Queue,
    /// All uploads together go through this limit (`upload_limit`).
    pub limit: Arc<Limiter>,
    /// Alternate locations of the files we serve and download (the download mesh).
    pub mesh: Arc<Mutex<Mesh<Sha1Urn>>>,
    /// Our own addresses, never handed out as alt-locs for ourselves.
    pub me: RwLock<Vec<SocketAddrV4>>,
    pub trees: Option<TreeStore>,
    /// Uploads finished: files every byte of which went to one downloader, over however many
    /// requests; once non-zero, hits say so.
    pub completed: Arc<AtomicU64>,
    pub bytes_sent: Arc<AtomicU64>,
    /// Of `bytes_sent`, the bytes sent from files we were still downloading.
    pub partial_bytes_sent: Arc<AtomicU64>,
    /// Uploads in progress and the last ones finished, for status displays.
    pub tracker: Arc<Tracker>,
    /// What downloaders of files we are downloading too said they hold, in their requests'
    /// `X-Available-Ranges` (keyed by file and the address they listen on): our download of
    /// the file reads it, so a peer's new pieces are known without asking it.
    pub peer_ranges: Mutex<lru::LruCache<(Sha1Urn, SocketAddrV4), RangeSet>>,
    /// The window over which a reader must keep up `stall::MIN_RATE` (shortened by tests).
    pub stall_window_ms: AtomicU64,
    /// Sends a Push for a push-proxy request (the overlay's); none: we proxy for nobody.
    pub proxy: RwLock<Option<PushProxy>>,
    /// Who we are when firewalled (GUID, address, push proxies), for every answer's
    /// `X-FW-Node-Info` and `X-Push-Proxies`; none while reachable.
    pub fw_node: RwLock<Option<FwNode>>,
}

/// Our firewalled identity now, if we are firewalled.
pub type FwNode = Arc<
    dyn Fn() -> Option<(crate::wire::ServentId, SocketAddrV4, Vec<SocketAddrV4>)> + Send + Sync,
>;

/// How the upload server hands a push-proxy request's Push to the overlay.
pub type PushProxy = Arc<dyn Fn(&crate::wire::Push<'_>) -> crate::overlay::Proxied + Send + Sync>;

/// Peers' ranges kept at once (in all: an address can only fill the entries of its own IP,
/// and the oldest go first).
pub const PEER_RANGES: usize = 1024;

impl Uploads {
    pub fn new(library: Arc<RwLock<Library>>, max_slots: usize) -> Arc<Self> {
        Arc::new(Self::build(
            library,
            max_slots,
            None,
            true,
            0,
            Policy::default(),
        ))
    }

    /// As [`Uploads::new`], with trees kept in `data_dir` and the given limits.
    pub fn with(
        library: Arc<RwLock<Library>>,
        max_slots: usize,
        data_dir: &std::path::Path,
        share_partial: bool,
        limit: u64,
        policy: Policy,
    ) -> Arc<Self> {
        let trees = Some(TreeStore::new(data_dir));
        Arc::new(Self::build(
            library,
            max_slots,
            trees,
            share_partial,
            limit,
            policy,
        ))
    }

    fn build(
        library: Arc<RwLock<Library>>,
        max_slots: usize,
        trees: Option<TreeStore>,
        share_partial: bool,
        limit: u64,
        policy: Policy,
    ) -> Self {
        Uploads {
            queue: Arc::new(Mutex::new(UploadQueue::new(
                policy,
                max_slots,
                std::time::Instant::now(),
            ))),
            library,
            partials: Arc::new(RwLock::new(Partials::default())),
            share_partial: AtomicBool::new(share_partial),
            slots: Slots::new(max_slots),
            limit: Arc::new(Limiter::new(limit)),
            mesh: Arc::new(Mutex::new(Mesh::new())),
            me: RwLock::new(Vec::new()),
            trees,
            completed: Arc::new(AtomicU64::new(0)),
            bytes_sent: Arc::new(AtomicU64::new(0)),
            partial_bytes_sent: Arc::new(AtomicU64::new(0)),
            tracker: Arc::new(Tracker::default()),
            peer_ranges: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(PEER_RANGES).expect("> 0"),
            )),
            stall_window_ms: AtomicU64::new(stall::WINDOW.as_millis() as u64),
            proxy: RwLock::new(None),
            fw_node: RwLock::new(None),
        }
    }

    pub fn shares_partials(&self) -> bool {
        self.share_partial.load(Ordering::Relaxed)
    }
}

pub use super::records::{RECENT_UPLOADS, Tracker, UploadView};

/// A stream that first replays bytes already read from it.
/// It counts the bytes written to it, for the stall watchdog.
pub struct Rewind<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
    written: Arc<AtomicU64>,
}

impl<S> Rewind<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self::metered(prefix, inner, Arc::default())
    }

    pub fn metered(prefix: Vec<u8>, inner: S, written: Arc<AtomicU64>) -> Self {
        Rewind {
            prefix,
            pos: 0,
            inner,
            written,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if self.pos < self.prefix.len() {
            let n = buf.len().min(self.prefix.len() - self.pos);
            buf[..n].copy_from_slice(&self.prefix[self.pos..self.pos + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// Legacy servents put raw spaces (and other bytes hyper refuses) in `/get/<index>/<name>`:
/// percent-encode the request target of the first line, which ends at the last space before
/// the version.
pub fn mend_request_line(head: &mut Vec<u8>) {
    let Some(eol) = memchr::memchr(b'\n', head) else {
        return;
    };
    let line = head[..eol].strip_suffix(b"\r").unwrap_or(&head[..eol]);
    let (Some(first), Some(last)) = (memchr::memchr(b' ', line), memchr::memrchr(b' ', line))
    else {
        return;
    };
    if first >= last {
        return;
    }
    let target = &line[first + 1..last];
    if target.iter().all(|&b| b > b' ' && b < 0x7f) {
        return;
    }
    let mut fixed = Vec::with_capacity(head.len() + 16);
    fixed.extend_from_slice(&line[..=first]);
    for &b in target {
        if b <= b' ' || b >= 0x7f {
            fixed.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            fixed.push(b);
        }
    }
    fixed.extend_from_slice(&head[last..]);
    *head = fixed;
}

/// Serves HTTP on `stream` (whose first bytes are `initial`) until the client is done.
pub async fn serve<S>(uploads: Arc<Uploads>, mut stream: S, initial: Vec<u8>, peer: SocketAddrV4)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut head = initial;
    let mut chunk = [0u8; 1024];
    // The dispatcher has usually read the whole head; a caller that has not gets the same
    // deadline for the request line as hyper gives the rest of it.
    let line = async {
        while memchr::memchr(b'\n', &head).is_none() && head.len() < MAX_REQUEST_LINE {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
        true
    };
    if !async_std::future::timeout(HEADER_TIMEOUT, line)
        .await
        .unwrap_or(false)
    {
        return;
    }
    mend_request_line(&mut head);
    let conn_state = Arc::new(ConnState::default());
    let io = HyperIo(Rewind::metered(head, stream, conn_state.written.clone()));
    let watched = conn_state.clone();
    let up = uploads.clone();
    let service = hyper::service::service_fn(move |req| {
        let uploads = uploads.clone();
        let conn_state = conn_state.clone();
        async move { Ok::<_, Infallible>(respond(&uploads, req, peer, &conn_state).await) }
    });
    let conn = async {
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(AsyncIoTimer)
            .header_read_timeout(HEADER_TIMEOUT)
            .keep_alive(true)
            // A client may shut its side after the request and still wait for the answer.
            .half_close(true)
            .serve_connection(io, service);
        if let Err(e) = conn.await {
            debug!("HTTP connection from {peer} ended: {e}");
        }
    };
    // Dropping the connection closes it and frees its slot.
    let watchdog = async {
        let window = Duration::from_millis(up.stall_window_ms.load(Ordering::Relaxed));
        let mut stall = Stall::new(window);
        loop {
            async_std::task::sleep(stall::CHECK_EVERY).await;
            let floor = stall::floor(up.limit.rate(), up.slots.max());
            let sending = watched.sending.load(Ordering::Relaxed) > 0;
            let written = watched.written.load(Ordering::Relaxed);
            if stall.stalled(std::time::Instant::now(), written, sending, floor) {
                info!(
                    "dropping the upload to {peer}: it read under {floor} B/s for {} s",
                    window.as_secs()
                );
                return;
            }
        }
    };
    futures_lite::future::or(conn, watchdog).await;
}

/// A parsed `Range: bytes=…` header, first range only (gtk-gnutella serves only the first of
/// several, PROTOCOL.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// `a-b` or `a-`.
    From(u64, Option<u64>),
    /// `-n`: the last n bytes.
    Last(u64),
}

pub fn parse_range(v: &str) -> Option<Range> {
    let spec = v.trim().strip_prefix("bytes=")?;
    let first = spec.split(',').next()?.trim();
    let (a, b) = first.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        return b.parse().ok().map(Range::Last);
    }
    let start = a.parse().ok()?;
    let end = if b.is_empty() {
        None
    } else {
        Some(b.parse().ok()?)
    };
    Some(Range::From(start, end))
}

/// The inclusive byte span a range selects in a file of `size` bytes, or None if it is not
/// satisfiable.
pub fn resolve_range(r: Range, size: u64) -> Option<(u64, u64)> {
    match r {
        Range::From(a, _) if a >= size => None,
        Range::From(a, b) => {
            let end = b.unwrap_or(size - 1).min(size - 1);
            (a <= end).then_some((a, end))
        }
        Range::Last(0) => None,
        Range::Last(_) if size == 0 => None,
        Range::Last(n) => Some((size.saturating_sub(n), size - 1)),
    }
}

/// Whether a `/get/` path's name is `name`: percent-decoded with `+` literal (a path is not a
/// query string, RFC 3986), or, as some clients write spaces, with `+` for a space.
fn name_matches(raw: &str, name: &str) -> bool {
    use percent_encoding::percent_decode_str;
    let decoded = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .ok()
            .map(|c| c.into_owned())
    };
    decoded(raw).as_deref() == Some(name)
        || raw.contains('+') && decoded(&raw.replace('+', " ")).as_deref() == Some(name)
}

/// A file as the upload side serves it: a shared one, or one we are downloading (or finished
/// this run).
#[derive(Debug, Clone)]
struct Served {
    path: std::path::PathBuf,
    name: String,
    size: u64,
    sha1: Sha1Urn,
    tth: Option<Tth>,
    mtime: std::time::SystemTime,
    /// `Some`: still downloading, only these verified ranges can be served.
    partial: Option<RangeSet>,
}

impl Served {
    fn shared(f: &SharedFile) -> Self {
        Served {
            path: f.path.clone(),
            name: f.name.clone(),
            size: f.size,
            sha1: f.sha1,
            tth: f.tth,
            mtime: std::time::UNIX_EPOCH + Duration::from_secs(f.mtime),
            partial: None,
        }
    }

    fn from_partial(p: &PartialFile) -> Self {
        Served {
            path: p.path.clone(),
            name: p.name.clone(),
            size: p.size,
            sha1: p.urn,
            tth: p.tth(),
            mtime: p.last_write,
            partial: (!p.complete).then(|| p.verified.clone()),
        }
    }
}

/// Why a request names no shared file.
enum Lookup {
    Found(Served),
    NotFound(&'static str),
}

/// The file a `/uri-res/` query names: `urn:sha1:…` or `urn:bitprint:…` (its SHA-1 half).
fn urn_of_query(q: Option<&str>) -> Option<Sha1Urn> {
    let q = q?;
    q.parse::<Sha1Urn>()
        .ok()
        .or_else(|| crate::thex::parse_bitprint(q).ok().map(|(s, _)| Sha1Urn(s)))
}

/// The file `urn` names: a shared file first, then a download's verified ranges (when we
/// share partials) or a download finished this run.
fn by_urn(up: &Uploads, urn: &Sha1Urn) -> Option<Served> {
    if let Some(f) = up
        .library
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .by_urn(urn)
    {
        return Some(Served::shared(f));
    }
    let partials = up.partials.read().unwrap_or_else(|e| e.into_inner());
    let p = partials.offered(urn)?;
    (p.complete || up.shares_partials()).then(|| Served::from_partial(p))
}

fn lookup(up: &Uploads, req: &Request<Incoming>) -> Lookup {
    let path = req.uri().path();
    if path == "/uri-res/N2R" {
        let Some(urn) = urn_of_query(req.uri().query()) else {
            return Lookup::NotFound("Malformed URN");
        };
        return match by_urn(up, &urn) {
            Some(f) => Lookup::Found(f),
            None => Lookup::NotFound("Not Found"),
        };
    }
    let Some(rest) = path.strip_prefix("/get/") else {
        return Lookup::NotFound("Not Found");
    };
    let Some((index, name)) = rest.split_once('/') else {
        return Lookup::NotFound("Not Found");
    };
    let Ok(index) = index.parse::<u32>() else {
        return Lookup::NotFound("Not Found");
    };
    let lib = up.library.read().unwrap_or_else(|e| e.into_inner());
    let Some(f) = lib.by_index(FileIndex(index)) else {
        return Lookup::NotFound("Not Found");
    };
    if !name_matches(name, &f.name) {
        return Lookup::NotFound("File index/name mismatch");
    }
    // With /get/, a URN that does not match is a mismatch too (PROTOCOL.md §8).
    if let Some(u) = req.headers().get("X-Gnutella-Content-URN")
        && let Ok(u) = u.to_str()
        && u.parse::<Sha1Urn>().is_ok_and(|u| u != f.sha1)
    {
        return Lookup::NotFound("URN mismatch");
    }
    Lookup::Found(Served::shared(f))
}

/// An answer after which the downloader asks again on the same connection (busy, queued, a
/// range not there yet): no body, as gtk-gnutella sends them. It reads none, and would take one
/// for the start of the next answer.
fn bodyless(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = code;
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    r
}

fn status(code: StatusCode, reason: &'static str) -> Response<Body> {
    let mut r = Response::new(text(reason));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A push-proxy request: the Push sent (or not) and gtk-gnutella's answer; the connection
/// closes after it, as gtk-gnutella's does.
fn push_proxy(up: &Uploads, req: &Request<Incoming>, peer: SocketAddrV4) -> Response<Body> {
    use super::pushproxy;
    let x_node = req.headers().get("X-Node").and_then(|v| v.to_str().ok());
    let (code, reason) = match pushproxy::parse(req.uri().path(), req.uri().query(), x_node) {
        Err(e) => (400, format!("Malformed push-proxy request: {e}")),
        Ok(r) => {
            let push = crate::wire::Push {
                target: r.target,
                index: r.index,
                addr: r.to,
                ggep: None,
            };
            let proxy = up.proxy.read().unwrap_or_else(|e| e.into_inner()).clone();
            let how = proxy.map_or(crate::overlay::Proxied::NoRoute, |f| f(&push));
            debug!(
                "push-proxy request from {peer} for {}: {how:?}",
                r.target.to_hex()
            );
            pushproxy::answer(how, &r.target)
        }
    };
    let mut resp = bodyless(StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST));
    if let Ok(r) = hyper::ext::ReasonPhrase::try_from(reason.into_bytes()) {
        resp.extensions_mut().insert(r);
    }
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn server_header() -> HeaderValue {
    HeaderValue::from_static(crate::handshake::USER_AGENT)
}

/// What one HTTP connection remembers between its requests.
#[derive(Default)]
struct ConnState {
    /// `X-Thex-URI` goes on the first reply of a connection only, as gtk-gnutella sends it.
    thex_sent: std::sync::atomic::AtomicBool,
    /// `X-Features` likewise: the connection's first answer.
    features_sent: std::sync::atomic::AtomicBool,
    /// Bytes written to the connection.
    written: Arc<AtomicU64>,
    /// Bodies of ours not yet sent in full (one, or none between requests).
    sending: Arc<std::sync::atomic::AtomicUsize>,
}

/// A body on its way: the watchdog judges the reader while one is.
struct Sending(Arc<std::sync::atomic::AtomicUsize>);

impl Sending {
    fn new(n: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Sending(n.clone())
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn respond(
    up: &Uploads,
    req: Request<Incoming>,
    peer: SocketAddrV4,
    conn: &ConnState,
) -> Response<Body> {
    let mut resp = respond_inner(up, &req, peer, conn).await;
    resp.headers_mut().insert(header::SERVER, server_header());
    // Firewalled, every answer says how to push to us, errors too (gtk-gnutella's
    // node_http_proxies_add): `X-FW-Node-Info` without proxies, `X-Push-Proxies` with them.
    let fw = up.fw_node.read().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some((guid, me, proxies)) = fw.and_then(|f| f()) {
        let h = resp.headers_mut();
        insert(
            h,
            "X-FW-Node-Info",
            &format!("{}; {}:{}", guid.to_hex(), me.port(), me.ip()),
        );
        if !proxies.is_empty() {
            let list: Vec<String> = proxies.iter().map(ToString::to_string).collect();
            insert(h, "X-Push-Proxies", &list.join(", "));
        }
    }
    // What we speak, as gtk-gnutella says it on a connection's first answer: PARQ 1.1.
    if !conn.features_sent.swap(true, Ordering::Relaxed) {
        resp.headers_mut()
            .insert("X-Features", HeaderValue::from_static("queue/1.1"));
    }
    resp
}

fn insert(h: &mut hyper::HeaderMap, name: &'static str, v: &str) {
    if let Ok(v) = HeaderValue::from_str(v) {
        h.insert(name, v);
    }
}

/// `Retry-After` for a range not available yet: half the time since the file last grew,
/// capped at a day, and none when it grew in the last minute (gtk-gnutella
/// `upload_retry_after`, SWARM.md §1.2).
fn not_yet_retry(last_write: std::time::SystemTime) -> Option<u64> {
    let age = last_write.elapsed().ok()?.as_secs();
    (age >= 60).then(|| (age / 2).min(86_400))
}

async fn respond_inner(
    up: &Uploads,
    req: &Request<Incoming>,
    peer: SocketAddrV4,
    conn: &ConnState,
) -> Response<Body> {
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        // A method HTTP knows: not allowed here, and which are. Anything else (a lower-case
        // `get`, a made-up word) is a malformed request.
        Method::POST
        | Method::PUT
        | Method::DELETE
        | Method::PATCH
        | Method::OPTIONS
        | Method::CONNECT
        | Method::TRACE => {
            let mut resp = status(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed");
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
        _ => return status(StatusCode::BAD_REQUEST, "Unknown method"),
    };
    if req.uri().path() == "/uri-res/N2X" {
        return thex_reply(up, req, peer, head);
    }
    if super::pushproxy::is_proxy_path(req.uri().path()) {
        return push_proxy(up, req, peer);
    }
    let file = match lookup(up, req) {
        Lookup::Found(f) => f,
        Lookup::NotFound(why) => {
            debug!("{peer} asked for {}: {why}", req.uri());
            return status(StatusCode::NOT_FOUND, why);
        }
    };
    let downloader = mesh::learn(up, req, peer, &file.sha1);
    let size = file.size;
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_range);
    let span = match range {
        None if size == 0 => None,
        None => Some((0, size - 1)),
        Some(r) => match resolve_range(r, size) {
            Some(s) => Some(s),
            None => {
                let mut resp = status(StatusCode::RANGE_NOT_SATISFIABLE, "Range not satisfiable");
                insert(
                    resp.headers_mut(),
                    "Content-Range",
                    &format!("bytes */{size}"),
                );
                return resp;
            }
        },
    };
    // A file still downloading: the start must lie in a verified range, and the answer ends
    // where that range ends (gtk-gnutella `file_info_restrict_range`, SWARM.md §1.2).
    let span = match (&file.partial, span) {
        (Some(have), Some((a, b))) => match have.iter().find(|r| r.contains(&a)) {
            Some(r) => Some((a, b.min(r.end - 1))),
            None => {
                let mut resp = bodyless(StatusCode::RANGE_NOT_SATISFIABLE);
                // gtk-gnutella's wording, which tells this 416 from the out-of-bounds one.
                resp.extensions_mut()
                    .insert(hyper::ext::ReasonPhrase::from_static(
                        b"Requested range not available yet",
                    ));
                let h = resp.headers_mut();
                insert(h, "X-Gnutella-Content-URN", &file.sha1.to_string());
                insert(h, "X-Available-Ranges", &have.format_available());
                if let Some(r) = not_yet_retry(file.mtime) {
                    h.insert(header::RETRY_AFTER, HeaderValue::from(r));
                }
                mesh::reply_headers(up, h, &file.sha1, file.partial.is_some(), peer, downloader);
                return resp;
            }
        },
        (_, s) => s,
    };
    let speaks = turns::read_request(req);
    let held = if head {
        None
    } else {
        // The turn is the downloader's host and the port it listens on: one servent, however
        // many connections it opens.
        let who = SocketAddrV4::new(*peer.ip(), downloader.map_or(peer.port(), |d| d.port()));
        let seeding = file.partial.is_none();
        match turns::admit(
            &up.queue, &up.slots, who, file.sha1, seeding, downloader, speaks,
        )
        .await
        {
            Ok(h) => Some(h),
            Err(no) => {
                let mut resp = bodyless(no.code);
                if let Ok(r) = hyper::ext::ReasonPhrase::try_from(no.reason.into_bytes()) {
                    resp.extensions_mut().insert(r);
                }
                let h = resp.headers_mut();
                h.extend(no.headers);
                if let Some(have) = &file.partial {
                    // On a 503 only the count: by the retry, ranges would be stale (SWARM.md
                    // §1.3).
                    insert(h, "X-Available", &format!("bytes {}", have.covered_len()));
                }
                // Alt-locs on a busy answer too (gtk-gnutella sizes them into a 503's 1 KiB):
                // a downloader we cannot serve now learns who else can.
                mesh::reply_headers(up, h, &file.sha1, file.partial.is_some(), peer, downloader);
                return resp;
            }
        }
    };
    let queued_id = held
        .as_ref()
        .filter(|_| speaks.parq)
        .map(turns::served_header);
    let (code, (start, len)) = match (range, span) {
        (Some(_), Some((a, b))) => (StatusCode::PARTIAL_CONTENT, (a, b - a + 1)),
        // A partial file is always answered with its range, so the downloader sees it is one.
        (None, Some((a, b))) if file.partial.is_some() => {
            (StatusCode::PARTIAL_CONTENT, (a, b - a + 1))
        }
        (_, Some((a, b))) => (StatusCode::OK, (a, b - a + 1)),
        (_, None) => (StatusCode::OK, (0, 0)),
    };
    let body = if head || len == 0 {
        empty()
    } else {
        match file_body(
            &file,
            start,
            len,
            held,
            up,
            peer,
            Sending::new(&conn.sending),
        ) {
            Ok(b) => b,
            Err(e) => {
                info!("cannot open {} for {peer}: {e}", file.path.display());
                return status(StatusCode::INTERNAL_SERVER_ERROR, "Cannot read file");
            }
        }
    };
    if !head {
        debug!(
            "uploading {} to {peer} ({} bytes from {start}{})",
            file.name,
            len,
            if file.partial.is_some() {
                ", partial file"
            } else {
                ""
            }
        );
    }
    let mut resp = Response::new(body);
    *resp.status_mut() = code;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if code == StatusCode::PARTIAL_CONTENT {
        insert(
            h,
            "Content-Range",
            &format!("bytes {start}-{}/{size}", start + len - 1),
        );
    }
    let mime = mime_guess::from_path(&file.name).first_or_octet_stream();
    insert(h, "Content-Type", mime.essence_str());
    insert(h, "X-Gnutella-Content-URN", &file.sha1.to_string());
    if let Some(have) = &file.partial {
        insert(h, "X-Available-Ranges", &have.format_available());
    }
    // A file still downloading points at its tree only once it holds one (N2X serves it then);
    // the connection's first such reply carries it.
    if let Some(tth) = file.tth
        && !conn.thex_sent.swap(true, Ordering::Relaxed)
    {
        insert(
            h,
            "X-Thex-URI",
            &crate::thex::thex_uri(&file.sha1.base32(), &tth),
        );
    }
    if let Some(v) = queued_id {
        h.insert("X-Queued", v);
    }
    mesh::reply_headers(up, h, &file.sha1, file.partial.is_some(), peer, downloader);
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(file.mtime)) {
        h.insert(header::LAST_MODIFIED, v);
    }
    // RFC 6266: an ASCII fallback and the UTF-8 name, percent-encoded.
    let ascii: String = file
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = file
        .name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    insert(
        h,
        "Content-Disposition",
        &format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"),
    );
    resp
}

/// `/uri-res/N2X?urn:sha1:…`: the file's Tiger tree as a THEX DIME message, `200` with its
/// length, never in ranges (SWARM.md §3.4). gtk-gnutella serves trees of complete files only;
/// we serve a partial file's too once it holds one: the taker checks it against its root.
fn thex_reply(
    up: &Uploads,
    req: &Request<Incoming>,
    peer: SocketAddrV4,
    head: bool,
) -> Response<Body> {
    let Some(urn) = urn_of_query(req.uri().query()) else {
        return status(
            StatusCode::BAD_REQUEST,
            "Malformed URN in /uri-res/N2X request",
        );
    };
    // A file still downloading has its tree once one came and matched the root it trusts:
    // the same tree a complete source serves, and checked against the root by whoever takes
    // it. Serving it lets a swarm whose seed is busy check its slices all the same.
    let tree = match by_urn(up, &urn) {
        Some(f) => {
            let tree = f.tth.and_then(|t| {
                let from_partial = up
                    .partials
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&urn)
                    .and_then(|p| p.tree.clone());
                from_partial
                    .map(|a| (*a).clone())
                    .or_else(|| up.trees.as_ref()?.load(&t))
            });
            match tree {
                Some(t) if t.size() == f.size => t,
                _ => return status(StatusCode::NOT_FOUND, "No tree for this file"),
            }
        }
        None => return status(StatusCode::NOT_FOUND, "Not Found"),
    };
    let gtkg = req
        .headers()
        .get(header::USER_AGENT)
        .is_some_and(|v| v.as_bytes().starts_with(b"gtk-gnutella"));
    let msg = if gtkg {
        thex_for_gtkg(&tree)
    } else {
        crate::thex::encode_thex(&tree)
    };
    debug!("serving the Tiger tree of {urn} to {peer}");
    let len = msg.len();
    let mut resp = Response::new(if head {
        empty()
    } else {
        Full::new(Bytes::from(msg))
            .map_err(|n: Infallible| match n {})
            .boxed()
    });
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/dime"),
    );
    insert(h, "X-Gnutella-Content-URN", &urn.to_string());
    resp
}

/// What gtk-gnutella 1.2.3 reads of a THEX reply: only its first read, 4 KiB (more when the
/// head and body come in one segment). A deeper tree is cut short there and thrown away ("Bad
/// THEX data"), its own 32 MiB trees included; one shallow enough to fit is taken ("tree depth
/// (6) is below the good depth", then every slice checked), seen in the interop run.
pub const GTKG_THEX_READ: usize = 4096;

/// The deepest cut of `tree` whose THEX reply fits in [`GTKG_THEX_READ`].
fn thex_for_gtkg(tree: &crate::thex::HashTree) -> Vec<u8> {
    let mut depth = tree.depth();
    loop {
        let msg = crate::thex::encode_thex(&tree.truncated(depth));
        if msg.len() <= GTKG_THEX_READ || depth == 0 {
            return msg;
        }
        depth -= 1;
    }
}

/// The file's bytes `start..start+len`, read off the async threads in [`CHUNK`] steps (smaller
/// under an upload limit, whose bucket they pass). The slot is held until the body is dropped
/// (sent or abandoned).
fn file_body(
    file: &Served,
    start: u64,
    len: u64,
    slot: Option<Held>,
    up: &Uploads,
    peer: SocketAddrV4,
    sending: Sending,
) -> io::Result<Body> {
    use std::os::unix::fs::FileExt;
    let f = Arc::new(std::fs::File::open(&file.path)?);
    let who = slot.as_ref().map_or(peer, |h| h.who);
    let tracking = up.tracker.start(who, file.sha1, &file.name, file.size);
    let slot = (slot, tracking, sending);
    let partial = file
        .partial
        .is_some()
        .then(|| up.partial_bytes_sent.clone());
    let sent = (up.bytes_sent.clone(), up.completed.clone(), partial);
    let limit = up.limit.clone();
    let state = (f, start, start + len, slot, sent);
    let stream = futures_lite::stream::unfold(state, move |(f, pos, end, slot, sent)| {
        let limit = limit.clone();
        async move {
            if pos >= end {
                return None;
            }
            let want = limit.quantum((end - pos).min(CHUNK as u64) as usize);
            limit.take(want).await;
            let file = f.clone();
            let read = async_std::task::spawn_blocking(move || {
                let mut buf = vec![0u8; want];
                let mut got = 0;
                while got < want {
                    match file.read_at(&mut buf[got..], pos + got as u64) {
                        Ok(0) => {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "shared file shrank while being sent",
                            ));
                        }
                        Ok(n) => got += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(Bytes::from(buf))
            })
            .await;
            match read {
                Ok(b) => {
                    let n = b.len() as u64;
                    if let Some(h) = &slot.0 {
                        h.sent(n);
                    }
                    sent.0.fetch_add(n, Ordering::Relaxed);
                    if let Some(p) = &sent.2 {
                        p.fetch_add(n, Ordering::Relaxed);
                    }
                    let next = pos + n;
                    // An upload served is a whole file gone to a downloader, not a request.
                    if slot.1.sent(pos, next) {
                        sent.1.fetch_add(1, Ordering::Relaxed);
                    }
                    Some((Ok(Frame::data(b)), (f, next, end, slot, sent)))
                }
                // End the stream after an error: hyper aborts the connection.
                Err(e) => Some((Err(e), (f, end, end, slot, sent))),
            }
        }
    });
    Ok(StreamBody::new(stream).boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_resolve_like_http() {
        assert_eq!(parse_range("bytes=0-99"), Some(Range::From(0, Some(99))));
        assert_eq!(parse_range("bytes=100-"), Some(Range::From(100, None)));
        assert_eq!(parse_range("bytes=-5"), Some(Range::Last(5)));
        assert_eq!(parse_range("bytes=1-2, 5-6"), Some(Range::From(1, Some(2))));
        assert_eq!(parse_range("items=1-2"), None);
        assert_eq!(parse_range("bytes=x-2"), None);
        assert_eq!(resolve_range(Range::From(0, Some(99)), 50), Some((0, 49)));
        assert_eq!(resolve_range(Range::From(50, None), 50), None);
        assert_eq!(resolve_range(Range::From(5, Some(2)), 50), None);
        assert_eq!(resolve_range(Range::Last(10), 50), Some((40, 49)));
        assert_eq!(resolve_range(Range::Last(100), 50), Some((0, 49)));
        assert_eq!(resolve_range(Range::Last(0), 50), None);
    }

    #[test]
    fn raw_spaces_in_the_request_target_are_percent_encoded() {
        let mut h = b"GET /get/3/my song.mp3 HTTP/1.1\r\nHost: x\r\n".to_vec();
        mend_request_line(&mut h);
        assert_eq!(&h[..], b"GET /get/3/my%20song.mp3 HTTP/1.1\r\nHost: x\r\n");
        let mut ok = b"GET /uri-res/N2R?urn:sha1:ABC HTTP/1.1\r\n".to_vec();
        let before = ok.clone();
        mend_request_line(&mut ok);
        assert_eq!(ok, before);
    }
}
