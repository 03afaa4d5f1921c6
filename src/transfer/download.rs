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
use std::time::Duration;

use async_std::channel::{Sender, bounded};
use async_std::future::timeout;
use async_std::net::TcpStream;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use log::{debug, info, warn};
use serde::{Deserialize, Serialize};

use crate::net::hyper_io::HyperIo;
use crate::net::{Node, store};
use crate::share::PARTIAL_SUFFIX;
use crate::wire::{FileIndex, Push, ServentId, Sha1Urn};

/// Smallest chunk handed to a source: big enough that request overhead does not matter.
pub const MIN_CHUNK: u64 = 256 * 1024;
/// Largest chunk, so several sources share even a big file.
pub const MAX_CHUNK: u64 = 8 * 1024 * 1024;
/// Received bytes are written to the file in batches of about this much (two at most held).
const WRITE_BATCH: usize = 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a pushed source has to call back with GIV.
const GIV_TIMEOUT: Duration = Duration::from_secs(20);
/// No byte for this long: the source is stalled.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Failures before a source is given up.
const MAX_SOURCE_FAILURES: u32 = 3;
/// A GIV line longer than this is not one.
const MAX_GIV: usize = 512;

/// Where a file can be had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub addr: SocketAddrV4,
    pub index: FileIndex,
    pub name: String,
    pub servent: ServentId,
    /// Its hit said it is firewalled: go through Push.
    pub push: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub urn: Sha1Urn,
    pub size: u64,
    pub name: String,
    pub sources: Vec<Source>,
}

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("no source could deliver the file ({0})")]
    NoSource(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Downloads waiting for GIV callbacks, by the servent GUID that is to call.
#[derive(Default)]
pub struct PushWaiters {
    waiting: Mutex<HashMap<ServentId, Vec<Sender<TcpStream>>>>,
}

impl PushWaiters {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn wait(&self, servent: ServentId) -> async_std::channel::Receiver<TcpStream> {
        let (tx, rx) = bounded(1);
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(servent)
            .or_default()
            .push(tx);
        rx
    }

    /// Takes an incoming `GIV` connection: reads the line, and hands the stream to a download
    /// waiting for that servent. Index and name are ignored (gtk-gnutella sends the literal
    /// name `file`); the GUID matches in any case (PROTOCOL.md §8).
    pub async fn giv(&self, mut stream: TcpStream, initial: Vec<u8>, peer: SocketAddrV4) {
        let mut buf = initial;
        let mut chunk = [0u8; 256];
        let end = loop {
            if let Some(p) = buf.windows(2).position(|w| w == b"\n\n") {
                break p;
            }
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            if buf.len() > MAX_GIV {
                debug!("GIV from {peer} is too long");
                return;
            }
            match timeout(CONNECT_TIMEOUT, stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        };
        let line = String::from_utf8_lossy(&buf[..end]).to_string();
        let Some(guid) = parse_giv(&line) else {
            debug!("malformed GIV from {peer}: {line:?}");
            return;
        };
        let tx = {
            let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            let list = w.get_mut(&guid);
            let tx = list.and_then(|l| {
                if l.is_empty() {
                    None
                } else {
                    Some(l.remove(0))
                }
            });
            w.retain(|_, l| !l.is_empty());
            tx
        };
        match tx {
            Some(tx) => {
                debug!("GIV from {peer} for {guid}");
                let _ = tx.send(stream).await;
            }
            None => debug!("GIV from {peer} for {guid}: nobody is waiting"),
        }
    }
}

/// `GIV <index>:<32 hex GUID>/<name>` → the GUID.
pub fn parse_giv(line: &str) -> Option<ServentId> {
    let rest = line.trim().strip_prefix("GIV ")?;
    let (_, after) = rest.split_once(':')?;
    let hex = after.split('/').next()?;
    ServentId::from_hex(hex.trim())
}

/// The download state saved beside the partial file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    spec: Spec,
    /// Byte ranges [start, end) written and flushed.
    done: Vec<(u64, u64)>,
}

fn add_range(done: &mut Vec<(u64, u64)>, r: (u64, u64)) {
    done.push(r);
    done.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(done.len());
    for (a, b) in done.drain(..) {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    *done = merged;
}

/// Chunks of [0, size) not covered by `done`, each at most `chunk` long.
fn missing(done: &[(u64, u64)], size: u64, chunk: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut push_gap = |a: u64, b: u64| {
        let mut s = a;
        while s < b {
            let e = (s + chunk).min(b);
            out.push((s, e));
            s = e;
        }
    };
    for &(a, b) in done {
        if a > pos {
            push_gap(pos, a);
        }
        pos = pos.max(b);
    }
    if pos < size {
        push_gap(pos, size);
    }
    out
}

/// Progress a person can watch.
#[derive(Debug, Default)]
pub struct Progress {
    pub done: AtomicU64,
    pub total: AtomicU64,
    pub sources: AtomicU64,
    /// Sources dropped for sending bytes that failed verification.
    pub bad_sources: AtomicU64,
}

/// What a download needs of the running servent.
pub struct Context {
    pub node: Node,
    pub waiters: Arc<PushWaiters>,
}

fn file_names(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    // Never let a name from the network reach outside the download folder.
    let safe: String = name
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c == '\0' {
                '_'
            } else {
                c
            }
        })
        .collect();
    let safe = safe.trim_start_matches('.').to_string();
    let safe = if safe.is_empty() {
        "download".into()
    } else {
        safe
    };
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
    let mut n = 1;
    while p.exists() {
        p = dir.join(format!("{base} ({n})"));
        n += 1;
    }
    p
}

/// Opens a stream to `src`: directly unless it wants a Push, then through Push and GIV.
async fn open(ctx: &Context, src: &Source) -> io::Result<TcpStream> {
    if !src.push {
        match timeout(CONNECT_TIMEOUT, TcpStream::connect(src.addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => debug!("direct connection to {} failed: {e}", src.addr),
            Err(_) => debug!("direct connection to {} timed out", src.addr),
        }
    }
    let rx = ctx.waiters.wait(src.servent);
    let me = ctx.node.advertised_addr();
    let sent = ctx.node.push(&Push {
        target: src.servent,
        index: src.index,
        addr: me,
        ggep: None,
    });
    if !sent {
        return Err(io::Error::new(
            io::ErrorKind::NotConnected,
            format!("no route to push to {}", src.servent),
        ));
    }
    info!("asked {} to push to us at {me}", src.servent);
    match timeout(GIV_TIMEOUT, rx.recv()).await {
        Ok(Ok(s)) => Ok(s),
        _ => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{} did not call back", src.servent),
        )),
    }
}

/// Parses `X-Available-Ranges: bytes a-b, c-d` (inclusive ends) into [start, end) ranges.
pub fn parse_available(v: &str) -> Vec<(u64, u64)> {
    let v = v.trim();
    let v = v
        .strip_prefix("bytes")
        .unwrap_or(v)
        .trim_start_matches([' ', '=']);
    v.split(',')
        .filter_map(|r| {
            let (a, b) = r.trim().split_once('-')?;
            let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            (a <= b).then_some((a, b + 1))
        })
        .collect()
}

/// Why a chunk did not come.
enum FetchError {
    /// The source has only these ranges (a partial source, PROTOCOL.md §8: 416 or 503 with
    /// `X-Available-Ranges`); try it with a chunk it has.
    Unavailable(Vec<(u64, u64)>),
    Failed(io::Error),
}

impl From<io::Error> for FetchError {
    fn from(e: io::Error) -> Self {
        FetchError::Failed(e)
    }
}

/// `bytes FROM-TO/TOTAL` → (FROM, TOTAL).
fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (from, to) = range.split_once('-')?;
    let (from, to, total) = (
        from.trim().parse::<u64>().ok()?,
        to.trim().parse::<u64>().ok()?,
        total.trim().parse::<u64>().ok()?,
    );
    (from <= to && to < total).then_some((from, total))
}

/// Writes `buf` at `at` off the async threads; hands the buffer back for reuse.
fn write_at(
    file: &Arc<std::fs::File>,
    buf: Vec<u8>,
    at: u64,
) -> async_std::task::JoinHandle<io::Result<Vec<u8>>> {
    let f = file.clone();
    async_std::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt;
        f.write_all_at(&buf, at).map(|()| buf)
    })
}

/// Fetches [start, end) of the file from an open connection, writing into `file`.
async fn fetch(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    spec: &Spec,
    src: &Source,
    (start, end): (u64, u64),
    file: &Arc<std::fs::File>,
    progress: &Progress,
    bufs: &mut Vec<Vec<u8>>,
) -> Result<Option<Vec<(u64, u64)>>, FetchError> {
    let err = |m: String| FetchError::Failed(io::Error::other(m));
    sender
        .ready()
        .await
        .map_err(|e| err(format!("{}: {e}", src.addr)))?;
    let req = hyper::Request::get(format!("/uri-res/N2R?{}", spec.urn))
        .header(hyper::header::HOST, src.addr.to_string())
        .header(hyper::header::USER_AGENT, crate::handshake::USER_AGENT)
        .header(hyper::header::RANGE, format!("bytes={start}-{}", end - 1))
        .header("X-Gnutella-Content-URN", spec.urn.to_string())
        .body(Empty::new())
        .map_err(|e| err(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| err(format!("{}: {e}", src.addr)))?;
    let status = resp.status();
    let available = resp
        .headers()
        .get("X-Available-Ranges")
        .and_then(|v| v.to_str().ok())
        .map(parse_available);
    let offset = match status.as_u16() {
        // Trust the range the source says it sends, not the one we asked for: a source that
        // answers another range would otherwise put its bytes at the wrong offsets.
        206 => match resp
            .headers()
            .get(hyper::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_content_range)
        {
            Some((from, total)) if from <= start && total == spec.size => from,
            Some(_) => {
                return Err(err(format!(
                    "{} sent a range other than the one asked for",
                    src.addr
                )));
            }
            None => {
                return Err(err(format!(
                    "{} answered 206 without a valid Content-Range",
                    src.addr
                )));
            }
        },
        // A whole-file answer to a range request: skip to our part.
        200 => 0,
        416 | 503 if available.as_ref().is_some_and(|a| !a.is_empty()) => {
            return Err(FetchError::Unavailable(available.unwrap_or_default()));
        }
        code => return Err(err(format!("{} answered {code}", src.addr))),
    };
    if let Some(u) = resp.headers().get("X-Gnutella-Content-URN")
        && let Ok(u) = u.to_str()
        && u.parse::<Sha1Urn>().is_ok_and(|u| u != spec.urn)
    {
        return Err(err(format!("{} serves another file", src.addr)));
    }
    let mut body = resp.into_body();
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
    // The write in flight and its length.
    let mut writing: Option<(async_std::task::JoinHandle<io::Result<Vec<u8>>>, u64)> = None;
    let received = async {
        while pos < end {
            let frame = match timeout(STALL_TIMEOUT, body.frame()).await {
                Err(_) => return Err(err(format!("{} stalled", src.addr))),
                Ok(None) => break,
                Ok(Some(f)) => f.map_err(|e| err(format!("{}: {e}", src.addr)))?,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            // Only the part of the data that falls in [start, end) is ours; parts follow each
            // other, so a batch is one contiguous range.
            let at = pos;
            pos += data.len() as u64;
            let (lo, hi) = (start.max(at), end.min(pos));
            if lo >= hi {
                continue;
            }
            let part = &data[(lo - at) as usize..(hi - at) as usize];
            if !batch.is_empty() && batch.len() + part.len() > WRITE_BATCH {
                if let Some((w, n)) = writing.take() {
                    spare = Some(w.await?);
                    progress.done.fetch_add(n, Ordering::Relaxed);
                }
                let mut next = spare
                    .take()
                    .unwrap_or_else(|| Vec::with_capacity(WRITE_BATCH));
                next.clear();
                let full = std::mem::replace(&mut batch, next);
                let n = full.len() as u64;
                writing = Some((write_at(file, full, batch_at), n));
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
    if let Some((w, n)) = writing.take() {
        bufs.push(w.await?);
        progress.done.fetch_add(n, Ordering::Relaxed);
    }
    received?;
    if !batch.is_empty() {
        let n = batch.len() as u64;
        batch = write_at(file, batch, batch_at).await?;
        progress.done.fetch_add(n, Ordering::Relaxed);
    }
    bufs.push(batch);
    bufs.extend(spare);
    if pos < end {
        return Err(err(format!("{} closed early", src.addr)));
    }
    Ok(available)
}

/// Who does what: the chunks left, the saved state, which source delivered each chunk, the
/// chunks in flight, and what partial sources said they have (absent: the whole file).
struct Plan {
    todo: Vec<(u64, u64)>,
    state: State,
    by_chunk: HashMap<(u64, u64), usize>,
    in_flight: usize,
    available: HashMap<usize, Vec<(u64, u64)>>,
    sources: usize,
}

fn covers(ranges: &[(u64, u64)], (a, b): (u64, u64)) -> bool {
    ranges.iter().any(|&(x, y)| x <= a && b <= y)
}

impl Plan {
    fn has(&self, si: usize, c: (u64, u64)) -> bool {
        self.available.get(&si).is_none_or(|r| covers(r, c))
    }

    /// The next chunk for source `si`: one it has, held by the fewest sources (rarest first),
    /// earliest among equals.
    fn take(&mut self, si: usize) -> Option<(u64, u64)> {
        let pick = (0..self.todo.len())
            .filter(|&i| self.has(si, self.todo[i]))
            .min_by_key(|&i| {
                let c = self.todo[i];
                let holders = (0..self.sources).filter(|&s| self.has(s, c)).count();
                (holders, c.0)
            })?;
        self.in_flight += 1;
        Some(self.todo.remove(pick))
    }
}

type Work = Arc<Mutex<Plan>>;

fn plan(work: &Work) -> std::sync::MutexGuard<'_, Plan> {
    work.lock().unwrap_or_else(|e| e.into_inner())
}

/// One source's worker: takes chunks until none are left or the source fails too often.
#[allow(clippy::too_many_arguments)]
async fn worker(
    ctx: &Context,
    spec: &Spec,
    si: usize,
    src: Source,
    work: Work,
    file: Arc<std::fs::File>,
    state_path: PathBuf,
    progress: &Progress,
) -> Result<(), String> {
    let mut failures = 0;
    // Write buffers, reused from chunk to chunk.
    let mut bufs: Vec<Vec<u8>> = Vec::new();
    'connect: loop {
        if failures >= MAX_SOURCE_FAILURES {
            return Err(format!("{} failed {failures} times", src.addr));
        }
        let stream = match open(ctx, &src).await {
            Ok(s) => s,
            Err(e) => {
                failures += 1;
                if failures >= MAX_SOURCE_FAILURES {
                    return Err(e.to_string());
                }
                async_std::task::sleep(Duration::from_millis(200 * u64::from(failures))).await;
                continue;
            }
        };
        let (mut sender, conn) = match hyper::client::conn::http1::handshake(HyperIo(stream)).await
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
        let run = async {
            loop {
                let chunk = loop {
                    let (next, busy, left) = {
                        let mut p = plan(&work);
                        (p.take(si), p.in_flight, p.todo.len())
                    };
                    match next {
                        Some(c) => break c,
                        // Nothing left and nothing in flight: done.
                        None if busy == 0 && left == 0 => return Ok::<bool, io::Error>(true),
                        // What is left, this source does not have, and nobody else is working
                        // on anything that could change that.
                        None if busy == 0 => {
                            return Err(io::Error::other(format!(
                                "{} has none of the {left} missing chunks",
                                src.addr
                            )));
                        }
                        // Another source may still hand its chunk back.
                        None => async_std::task::sleep(Duration::from_millis(20)).await,
                    }
                };
                let fetched =
                    fetch(&mut sender, spec, &src, chunk, &file, progress, &mut bufs).await;
                let mut p = plan(&work);
                p.in_flight -= 1;
                match fetched {
                    Ok(avail) => {
                        if let Some(a) = avail {
                            p.available.insert(si, a);
                        }
                        add_range(&mut p.state.done, chunk);
                        p.by_chunk.insert(chunk, si);
                        let json = serde_json::to_vec(&p.state).map_err(io::Error::other)?;
                        drop(p);
                        store::write_atomic(&state_path, &json)?;
                    }
                    Err(FetchError::Unavailable(a)) => {
                        debug!("{} has only {a:?}", src.addr);
                        p.available.insert(si, a);
                        p.todo.push(chunk);
                    }
                    Err(FetchError::Failed(e)) => {
                        p.todo.push(chunk);
                        return Err(e);
                    }
                }
            }
        };
        let result = futures_lite::future::or(run, async {
            conn.await;
            Ok(false)
        })
        .await;
        match result {
            Ok(true) => return Ok(()),
            Ok(false) => continue 'connect,
            Err(e) => {
                failures += 1;
                info!("source {} failed: {e}", src.addr);
                async_std::task::sleep(Duration::from_millis(200 * u64::from(failures))).await;
            }
        }
    }
}

/// Downloads `spec` into `dir`; returns the final path. Resumes from a saved state when there
/// is one for the same file.
pub async fn download(
    ctx: &Context,
    spec: Spec,
    dir: &Path,
    progress: &Progress,
) -> Result<PathBuf, DownloadError> {
    std::fs::create_dir_all(dir)?;
    let (part_path, state_path) = file_names(dir, &spec.name);
    let mut state = State {
        spec: spec.clone(),
        done: Vec::new(),
    };
    if let Ok(b) = std::fs::read(&state_path)
        && let Ok(saved) = serde_json::from_slice::<State>(&b)
        && saved.spec.urn == spec.urn
        && saved.spec.size == spec.size
        && part_path.exists()
    {
        state.done = saved.done;
        for s in saved.spec.sources {
            if !state.spec.sources.contains(&s) {
                state.spec.sources.push(s);
            }
        }
        let have: u64 = state.done.iter().map(|(a, b)| b - a).sum();
        info!(
            "resuming {}: {have} of {} bytes already here",
            spec.name, spec.size
        );
    }
    let file = Arc::new(
        std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&part_path)?,
    );
    file.set_len(spec.size)?;
    let mut banned: Vec<Source> = Vec::new();
    // After a mismatch with several sources, go on one source at a time, so the next
    // mismatch names its culprit.
    let mut solo = false;
    loop {
        let mut sources: Vec<Source> = state
            .spec
            .sources
            .iter()
            .filter(|s| !banned.contains(s))
            .cloned()
            .collect();
        if solo {
            sources.truncate(1);
        }
        if sources.is_empty() {
            return Err(DownloadError::NoSource(if banned.is_empty() {
                "no sources".into()
            } else {
                format!("{} sources sent bad data", banned.len())
            }));
        }
        let chunk = (spec.size / (sources.len() as u64 * 4)).clamp(MIN_CHUNK, MAX_CHUNK);
        let todo = missing(&state.done, spec.size, chunk);
        let have: u64 = state.done.iter().map(|(a, b)| b - a).sum();
        progress.total.store(spec.size, Ordering::Relaxed);
        progress.done.store(have, Ordering::Relaxed);
        progress
            .sources
            .store(sources.len() as u64, Ordering::Relaxed);
        let work: Work = Arc::new(Mutex::new(Plan {
            todo,
            state: state.clone(),
            by_chunk: HashMap::new(),
            in_flight: 0,
            available: HashMap::new(),
            sources: sources.len(),
        }));
        let mut tasks = Vec::new();
        for (si, src) in sources.iter().enumerate() {
            tasks.push(worker(
                ctx,
                &spec,
                si,
                src.clone(),
                work.clone(),
                file.clone(),
                state_path.clone(),
                progress,
            ));
        }
        let outcomes = join_all(tasks).await;
        let (by_chunk, left) = {
            let p = plan(&work);
            state = p.state.clone();
            (p.by_chunk.clone(), p.todo.len())
        };
        if left > 0 || !missing(&state.done, spec.size, u64::MAX).is_empty() {
            let why: Vec<String> = outcomes.into_iter().filter_map(Result::err).collect();
            return Err(DownloadError::NoSource(why.join("; ")));
        }
        file.sync_all()?;
        let path = part_path.clone();
        let urn = async_std::task::spawn_blocking(move || crate::share::hash_file(&path)).await?;
        if urn == spec.urn {
            let dest = final_path(dir, &spec.name);
            std::fs::rename(&part_path, &dest)?;
            let _ = std::fs::remove_file(&state_path);
            info!(
                "downloaded {} ({} bytes), SHA-1 verified",
                dest.display(),
                spec.size
            );
            return Ok(dest);
        }
        // The bytes are wrong. Without per-chunk hashes the culprit is found by elimination:
        // a source that alone delivered the whole file is judged by the result; with several,
        // the download starts over one source at a time.
        let mut contributors: Vec<usize> = by_chunk.values().copied().collect();
        contributors.sort_unstable();
        contributors.dedup();
        warn!(
            "{}: SHA-1 mismatch ({urn} instead of {}); discarding what was received",
            spec.name, spec.urn
        );
        if let [only] = contributors[..] {
            let bad = sources[only].clone();
            warn!("source {} sent bad data: dropped", bad.addr);
            banned.push(bad);
            progress.bad_sources.fetch_add(1, Ordering::Relaxed);
        }
        solo = true;
        state.done.clear();
    }
}

async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (i, f) in pinned.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("all ready")).collect()
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
    fn content_ranges_parse_and_nonsense_is_refused() {
        assert_eq!(parse_content_range("bytes 0-99/100"), Some((0, 100)));
        assert_eq!(
            parse_content_range("bytes 1048576-2097151/5000000"),
            Some((1048576, 5000000))
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
    fn available_ranges_parse_and_rarest_chunks_go_first() {
        assert_eq!(
            parse_available("bytes 0-99, 200-299"),
            vec![(0, 100), (200, 300)]
        );
        assert_eq!(parse_available("bytes=5-5"), vec![(5, 6)]);
        assert_eq!(parse_available("bytes 9-1, x"), vec![]);
        let mut p = Plan {
            todo: vec![(0, 100), (100, 200), (200, 300)],
            state: State {
                spec: Spec {
                    urn: Sha1Urn([0; 20]),
                    size: 300,
                    name: "x".into(),
                    sources: vec![],
                },
                done: vec![],
            },
            by_chunk: HashMap::new(),
            in_flight: 0,
            available: HashMap::from([(1, vec![(0, 100), (200, 300)])]),
            sources: 2,
        };
        // Source 0 has everything: (100, 200) is the only chunk source 1 lacks, so it is the
        // rarest and goes first.
        assert_eq!(p.take(0), Some((100, 200)));
        // Source 1 only gets chunks it has.
        assert_eq!(p.take(1), Some((0, 100)));
        assert_eq!(p.take(1), Some((200, 300)));
        assert_eq!(p.take(1), None);
        assert_eq!(p.in_flight, 3);
    }

    #[test]
    fn ranges_merge_and_gaps_are_cut_into_chunks() {
        let mut d = Vec::new();
        add_range(&mut d, (10, 20));
        add_range(&mut d, (0, 5));
        add_range(&mut d, (5, 10));
        add_range(&mut d, (30, 40));
        assert_eq!(d, vec![(0, 20), (30, 40)]);
        assert_eq!(
            missing(&d, 50, 4),
            vec![(20, 24), (24, 28), (28, 30), (40, 44), (44, 48), (48, 50)]
        );
        assert_eq!(missing(&[], 0, 4), vec![]);
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
