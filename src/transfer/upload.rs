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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use log::{debug, info};

use crate::net::hyper_io::{AsyncIoTimer, HyperIo};
use crate::share::{Library, SharedFile};
use crate::wire::{FileIndex, Sha1Urn};

/// Bytes read from disk per body chunk (one blocking task each). RUNTIME.md measured 64 KiB
/// chunks at twice the CPU of 256 KiB; 1 MiB cut the thread hand-offs again (transfer_bench:
/// 0.37 instead of 0.55 CPU s/GiB, +30% MB/s, peak RSS +2.4 MiB).
pub const CHUNK: usize = 1024 * 1024;
/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// The first request line may need mending (raw spaces); it is read up to this long.
const MAX_REQUEST_LINE: usize = 8 * 1024;
/// Retry hint when every slot is taken.
const RETRY_AFTER_SECS: u32 = 60;

pub type Body = BoxBody<Bytes, io::Error>;

fn empty() -> Body {
    Empty::new().map_err(|n: Infallible| match n {}).boxed()
}

fn text(s: &'static str) -> Body {
    Full::new(Bytes::from_static(s.as_bytes()))
        .map_err(|n: Infallible| match n {})
        .boxed()
}

/// Upload slots: a bounded number of transfers at once.
#[derive(Debug)]
pub struct Slots {
    max: usize,
    used: AtomicUsize,
}

/// A held slot; dropping it frees the slot.
pub struct Slot(Arc<Slots>);

impl Slots {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Slots {
            max,
            used: AtomicUsize::new(0),
        })
    }

    pub fn try_take(self: &Arc<Self>) -> Option<Slot> {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                (u < self.max).then_some(u + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }

    pub fn busy(&self) -> bool {
        self.used.load(Ordering::SeqCst) >= self.max
    }

    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the upload side needs to know and counts.
pub struct Uploads {
    pub library: Arc<RwLock<Library>>,
    pub slots: Arc<Slots>,
    /// Uploads finished (whole requested range sent); once non-zero, hits say so.
    pub completed: Arc<AtomicU64>,
    pub bytes_sent: Arc<AtomicU64>,
    /// Uploads in progress and the last ones finished, for status displays.
    pub tracker: Arc<Tracker>,
}

impl Uploads {
    pub fn new(library: Arc<RwLock<Library>>, max_slots: usize) -> Arc<Self> {
        Arc::new(Uploads {
            library,
            slots: Slots::new(max_slots),
            completed: Arc::new(AtomicU64::new(0)),
            bytes_sent: Arc::new(AtomicU64::new(0)),
            tracker: Arc::new(Tracker::default()),
        })
    }
}

/// Finished uploads remembered for status displays; older ones are forgotten. A page shows
/// about a screenful.
pub const RECENT_UPLOADS: usize = 50;

/// One upload (one request's range) as a status display shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UploadView {
    pub peer: SocketAddrV4,
    pub name: String,
    /// Bytes sent so far.
    pub bytes: u64,
    /// Bytes asked for in this request (the range's length).
    pub size: u64,
    /// Seconds since the upload started.
    pub started_secs: u64,
    pub active: bool,
}

struct Tracked {
    peer: SocketAddrV4,
    name: String,
    size: u64,
    started: std::time::Instant,
    bytes: Arc<AtomicU64>,
}

impl Tracked {
    fn view(&self, active: bool) -> UploadView {
        UploadView {
            peer: self.peer,
            name: self.name.clone(),
            bytes: self.bytes.load(Ordering::Relaxed),
            size: self.size,
            started_secs: self.started.elapsed().as_secs(),
            active,
        }
    }
}

/// Uploads in progress (bounded by the slots) and the last [`RECENT_UPLOADS`] finished.
#[derive(Default)]
pub struct Tracker {
    next: AtomicU64,
    active: std::sync::Mutex<std::collections::HashMap<u64, Tracked>>,
    recent: std::sync::Mutex<std::collections::VecDeque<Tracked>>,
}

impl Tracker {
    fn start(
        self: &Arc<Self>,
        peer: SocketAddrV4,
        name: &str,
        size: u64,
    ) -> (Tracking, Arc<AtomicU64>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let bytes = Arc::new(AtomicU64::new(0));
        let t = Tracked {
            peer,
            name: name.to_string(),
            size,
            started: std::time::Instant::now(),
            bytes: bytes.clone(),
        };
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, t);
        (Tracking(self.clone(), id), bytes)
    }

    /// Active uploads first (newest first), then finished ones (newest first).
    pub fn list(&self) -> Vec<UploadView> {
        let mut active: Vec<UploadView> = self
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|t| t.view(true))
            .collect();
        active.sort_by_key(|v| v.started_secs);
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        active.extend(recent.iter().rev().map(|t| t.view(false)));
        active
    }

    pub fn active(&self) -> usize {
        self.active.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Held by an upload's body; dropping it (sent or abandoned) moves the upload to the recent
/// list.
struct Tracking(Arc<Tracker>, u64);

impl Drop for Tracking {
    fn drop(&mut self) {
        let t = self
            .0
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
        if let Some(t) = t {
            let mut recent = self.0.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() >= RECENT_UPLOADS {
                recent.pop_front();
            }
            recent.push_back(t);
        }
    }
}

/// A stream that first replays bytes already read from it.
pub struct Rewind<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Rewind {
            prefix,
            pos: 0,
            inner,
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
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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
    while memchr::memchr(b'\n', &head).is_none() && head.len() < MAX_REQUEST_LINE {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    mend_request_line(&mut head);
    let io = HyperIo(Rewind::new(head, stream));
    let service = hyper::service::service_fn(move |req| {
        let uploads = uploads.clone();
        async move { Ok::<_, Infallible>(respond(&uploads, req, peer).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(AsyncIoTimer)
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true)
        .serve_connection(io, service);
    if let Err(e) = conn.await {
        debug!("HTTP connection from {peer} ended: {e}");
    }
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

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Why a request names no shared file.
enum Lookup {
    Found(SharedFile),
    NotFound(&'static str),
}

fn lookup(lib: &Library, req: &Request<Incoming>) -> Lookup {
    let path = req.uri().path();
    if path == "/uri-res/N2R" {
        let Some(urn) = req.uri().query().and_then(|q| q.parse::<Sha1Urn>().ok()) else {
            return Lookup::NotFound("Malformed URN");
        };
        return match lib.by_urn(&urn) {
            Some(f) => Lookup::Found(f.clone()),
            None => Lookup::NotFound("Not Found"),
        };
    }
    let Some(rest) = path.strip_prefix("/get/") else {
        return Lookup::NotFound("Not Found");
    };
    let Some((index, name)) = rest.split_once('/') else {
        return Lookup::NotFound("Not Found");
    };
    let (Ok(index), Some(name)) = (index.parse::<u32>(), percent_decode(name)) else {
        return Lookup::NotFound("Not Found");
    };
    let Some(f) = lib.by_index(FileIndex(index)) else {
        return Lookup::NotFound("Not Found");
    };
    if f.name != name {
        return Lookup::NotFound("File index/name mismatch");
    }
    // With /get/, a URN that does not match is a mismatch too (PROTOCOL.md §8).
    if let Some(u) = req.headers().get("X-Gnutella-Content-URN")
        && let Ok(u) = u.to_str()
        && u.parse::<Sha1Urn>().is_ok_and(|u| u != f.sha1)
    {
        return Lookup::NotFound("URN mismatch");
    }
    Lookup::Found(f.clone())
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

fn server_header() -> HeaderValue {
    HeaderValue::from_static(crate::handshake::USER_AGENT)
}

async fn respond(up: &Uploads, req: Request<Incoming>, peer: SocketAddrV4) -> Response<Body> {
    let mut resp = respond_inner(up, &req, peer).await;
    resp.headers_mut().insert(header::SERVER, server_header());
    resp
}

async fn respond_inner(
    up: &Uploads,
    req: &Request<Incoming>,
    peer: SocketAddrV4,
) -> Response<Body> {
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => return status(StatusCode::NOT_IMPLEMENTED, "Method not implemented"),
    };
    let found = {
        let lib = up.library.read().unwrap_or_else(|e| e.into_inner());
        lookup(&lib, req)
    };
    let file = match found {
        Lookup::Found(f) => f,
        Lookup::NotFound(why) => {
            debug!("{peer} asked for {}: {why}", req.uri());
            return status(StatusCode::NOT_FOUND, why);
        }
    };
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
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return resp;
            }
        },
    };
    let slot = if head {
        None
    } else {
        match up.slots.try_take() {
            Some(s) => Some(s),
            None => {
                let mut resp = status(StatusCode::SERVICE_UNAVAILABLE, "Busy");
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
                return resp;
            }
        }
    };
    let (code, (start, len)) = match (range, span) {
        (Some(_), Some((a, b))) => (StatusCode::PARTIAL_CONTENT, (a, b - a + 1)),
        (_, Some((a, b))) => (StatusCode::OK, (a, b - a + 1)),
        (_, None) => (StatusCode::OK, (0, 0)),
    };
    let body = if head || len == 0 {
        empty()
    } else {
        match file_body(&file, start, len, slot, up, peer) {
            Ok(b) => b,
            Err(e) => {
                info!("cannot open {} for {peer}: {e}", file.path.display());
                return status(StatusCode::INTERNAL_SERVER_ERROR, "Cannot read file");
            }
        }
    };
    if !head {
        info!(
            "uploading {} to {peer} ({} bytes from {start})",
            file.name, len
        );
    }
    let mut resp = Response::new(body);
    *resp.status_mut() = code;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if code == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", start + len - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    let mime = mime_guess::from_path(&file.name).first_or_octet_stream();
    if let Ok(v) = HeaderValue::from_str(mime.essence_str()) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&file.sha1.to_string()) {
        h.insert("X-Gnutella-Content-URN", v);
    }
    let mtime = std::time::UNIX_EPOCH + Duration::from_secs(file.mtime);
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(mtime)) {
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
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

/// The file's bytes `start..start+len`, read in [`CHUNK`] steps off the async threads. The slot
/// is held until the body is dropped (sent or abandoned).
fn file_body(
    file: &SharedFile,
    start: u64,
    len: u64,
    slot: Option<Slot>,
    up: &Uploads,
    peer: SocketAddrV4,
) -> io::Result<Body> {
    use std::os::unix::fs::FileExt;
    let f = Arc::new(std::fs::File::open(&file.path)?);
    let (tracking, mine) = up.tracker.start(peer, &file.name, len);
    let slot = (slot, tracking);
    let sent = (up.bytes_sent.clone(), up.completed.clone(), mine);
    let state = (f, start, start + len, slot, sent);
    let stream = futures_lite::stream::unfold(state, |(f, pos, end, slot, sent)| async move {
        if pos >= end {
            return None;
        }
        let want = (end - pos).min(CHUNK as u64) as usize;
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
                sent.0.fetch_add(b.len() as u64, Ordering::Relaxed);
                sent.2.fetch_add(b.len() as u64, Ordering::Relaxed);
                let next = pos + b.len() as u64;
                if next == end {
                    sent.1.fetch_add(1, Ordering::Relaxed);
                }
                Some((Ok(Frame::data(b)), (f, next, end, slot, sent)))
            }
            // End the stream after an error: hyper aborts the connection.
            Err(e) => Some((Err(e), (f, end, end, slot, sent))),
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

    #[test]
    fn slots_are_bounded_and_freed_on_drop() {
        let s = Slots::new(2);
        let a = s.try_take().unwrap();
        let _b = s.try_take().unwrap();
        assert!(s.try_take().is_none() && s.busy());
        drop(a);
        assert!(s.try_take().is_some());
    }
}
