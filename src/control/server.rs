//! The API's HTTP server: an accept loop with a connection cap, the Host check (DNS rebinding
//! guard), the bearer-token check, and the routes. Every answer is JSON except the page's
//! static files, `/metrics` (Prometheus text) and search streams (NDJSON).
// A route's early exit is the error response itself, sent as it is; boxing it would only add
// an allocation per error.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_std::net::{TcpListener, TcpStream};
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use log::{debug, info};
use serde::Deserialize;
use serde::Serialize;

use super::Control;
use super::door::{Door, Entry, MAX_API_CONNECTIONS};
use super::downloads::DownloadError;
use super::searches::SearchError;
use crate::net::hyper_io::{AsyncIoTimer, HyperIo};
use crate::transfer::upload::Body;
use crate::wire::Sha1Urn;

/// Largest request body: the biggest legitimate one is a magnet link of a few hundred bytes.
pub const MAX_BODY: usize = 64 * 1024;
/// How long a client may take to send its request headers (a local client sends them at once).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// One endpoint, for `GET /api`.
#[derive(Serialize)]
struct Endpoint {
    method: &'static str,
    path: &'static str,
    description: &'static str,
}

const ENDPOINTS: &[(&str, &str, &str)] = &[
    ("GET", "/api", "this list"),
    (
        "GET",
        "/api/status",
        "version, GUID, role, uptime, addresses, firewall state, shares, transfers, counters",
    ),
    (
        "GET",
        "/api/connections",
        "the Gnutella links: peer, role, user agent, compression, queue fill, bytes",
    ),
    (
        "POST",
        "/api/peers",
        "{\"addr\":\"host:port\"}: dial a peer and keep it connected",
    ),
    (
        "DELETE",
        "/api/peers/{id}",
        "say Bye to a link and close it",
    ),
    (
        "POST",
        "/api/searches",
        "{\"query\":\"words\"}: start a search",
    ),
    (
        "GET",
        "/api/searches",
        "the searches and their result counts",
    ),
    (
        "GET",
        "/api/searches/{id}",
        "a search's results, grouped by SHA-1",
    ),
    (
        "GET",
        "/api/searches/{id}/stream",
        "NDJSON: the results so far, then each new or updated file as hits arrive",
    ),
    ("DELETE", "/api/searches/{id}", "stop a search"),
    (
        "POST",
        "/api/downloads",
        "{\"urn\"}, {\"magnet\"} or {\"search\":id,\"urn\"}: start a download",
    ),
    ("GET", "/api/downloads", "the downloads and their progress"),
    (
        "GET",
        "/api/downloads/{id}",
        "one download and its progress",
    ),
    ("POST", "/api/downloads/{id}/pause", "pause a download"),
    (
        "POST",
        "/api/downloads/{id}/resume",
        "resume a paused or failed download",
    ),
    (
        "DELETE",
        "/api/downloads/{id}",
        "cancel a download and remove its partial file; a finished one is cleared from the \
         list (a done file stays)",
    ),
    (
        "POST",
        "/api/downloads/clear",
        "clear every finished download from the list",
    ),
    (
        "GET",
        "/api/uploads",
        "the upload policy, each file upload (running and the last finished) and each \
         downloader: choked or unchoked and why, its place in the queue, rates both ways",
    ),
    ("GET", "/api/shares", "the shared folders and files"),
    (
        "POST",
        "/api/shares/rescan",
        "rescan the shared folders now",
    ),
    (
        "GET",
        "/api/settings",
        "the rate limits and partial sharing in effect",
    ),
    (
        "PATCH",
        "/api/settings",
        "change upload_limit / download_limit (\"512K\", \"4M\", \"off\") at run time",
    ),
    ("GET", "/metrics", "Prometheus text format"),
];

/// What `PATCH /api/settings` may change.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsPatch {
    upload_limit: Option<String>,
    download_limit: Option<String>,
    upload_slots: Option<usize>,
}

/// Run-time settings as the API shows them.
#[derive(Serialize)]
struct RunSettings {
    upload_limit: String,
    download_limit: String,
    upload_limit_bps: u64,
    download_limit_bps: u64,
    share_partial: bool,
    upload_slots: usize,
}

/// `GET /api/uploads`.
#[derive(serde::Serialize)]
struct UploadsView {
    policy: crate::swarm::queue::Policy,
    slots: usize,
    slots_in_use: usize,
    /// Requests waiting this moment for a slot to be handed over.
    waiting: usize,
    /// Entries in the PARQ queue.
    queued: usize,
    uploads: Vec<crate::transfer::upload::UploadView>,
    peers: Vec<crate::swarm::queue::PeerView>,
}

fn uploads_view(ctl: &Control) -> UploadsView {
    let up = ctl.servent.uploads();
    let mut q = crate::transfer::turns::lock(&up.queue);
    UploadsView {
        policy: q.policy,
        slots: up.slots.max(),
        slots_in_use: up.slots.in_use(),
        waiting: up.slots.waiting(),
        queued: q.parq().len(),
        uploads: up.tracker.list(),
        peers: q.peers(std::time::Instant::now()),
    }
}

fn run_settings(ctl: &Control) -> RunSettings {
    use crate::transfer::limit::format_rate;
    let (u, d) = ctl.servent.limits();
    RunSettings {
        upload_limit: format_rate(u),
        download_limit: format_rate(d),
        upload_limit_bps: u,
        download_limit_bps: d,
        share_partial: ctl.servent.uploads().shares_partials(),
        upload_slots: ctl.servent.uploads().slots.max(),
    }
}

pub(super) async fn accept_loop(ctl: Arc<Control>, listener: TcpListener) {
    let door = Door::new();
    loop {
        let stop = async {
            let _ = ctl.stop.1.recv().await;
            None
        };
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, stop);
        let (stream, peer) = match accepted.await {
            None => return,
            Some(Ok(x)) => x,
            Some(Err(e)) => {
                debug!("API accept: {e}");
                async_std::task::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(entry) = door.enter(Instant::now()) else {
            debug!("API: refusing {peer}, {MAX_API_CONNECTIONS} connections busy");
            continue;
        };
        let ctl = ctl.clone();
        let door = door.clone();
        async_std::task::spawn(async move {
            let entry = Arc::new(entry);
            let shed = async {
                entry.shed().await;
                debug!("API: {peer} shed, idle longest when the door was full");
            };
            futures_lite::future::or(serve(ctl, door, entry.clone(), stream, peer), shed).await;
        });
    }
}

async fn serve(
    ctl: Arc<Control>,
    door: Arc<Door>,
    entry: Arc<Entry>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let local = stream.local_addr().ok();
    let service = hyper::service::service_fn(move |req| {
        let ctl = ctl.clone();
        let door = door.clone();
        let entry = entry.clone();
        async move {
            entry.busy();
            let r = respond(&ctl, &door, req, local, peer.ip()).await;
            // Idle again once the answer's body is sent (a search stream is long).
            Ok::<_, Infallible>(r.map(|b| Answering { body: b, entry }.boxed()))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(AsyncIoTimer)
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true)
        .serve_connection(HyperIo(stream), service);
    if let Err(e) = conn.await {
        debug!("API connection from {peer} ended: {e}");
    }
}

/// An answer's body; its connection counts as idle again when it is gone.
struct Answering {
    body: Body,
    entry: Arc<Entry>,
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.entry.idle(Instant::now());
    }
}

impl hyper::body::Body for Answering {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|n: Infallible| match n {})
        .boxed()
}

fn with_type(mut r: Response<Body>, ty: &'static str) -> Response<Body> {
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ty));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "X-Content-Type-Options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn json<T: Serialize>(code: StatusCode, v: &T) -> Response<Body> {
    let body = match serde_json::to_vec(v) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let mut r = Response::new(full(body));
    *r.status_mut() = code;
    with_type(r, "application/json")
}

fn ok<T: Serialize>(v: &T) -> Response<Body> {
    json(StatusCode::OK, v)
}

fn error(code: StatusCode, msg: &str) -> Response<Body> {
    #[derive(Serialize)]
    struct E<'a> {
        error: &'a str,
    }
    let body = serde_json::to_vec(&E { error: msg }).unwrap_or_default();
    let mut r = Response::new(full(body));
    *r.status_mut() = code;
    with_type(r, "application/json")
}

/// The Host values a browser sends when it really means this server.
fn host_allowed(host: &str, bound: SocketAddr, local: Option<SocketAddr>) -> bool {
    let port = bound.port();
    let host = host.trim().to_ascii_lowercase();
    let mut ok = vec![format!("localhost:{port}")];
    let mut add_ip = |ip: IpAddr| match ip {
        IpAddr::V4(a) => ok.push(format!("{a}:{port}")),
        IpAddr::V6(a) => ok.push(format!("[{a}]:{port}")),
    };
    // Bound to a loopback address, either loopback name is this host (no page elsewhere
    // can make a browser send one).
    if bound.ip().is_unspecified() || bound.ip().is_loopback() {
        add_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        add_ip(IpAddr::V6(Ipv6Addr::LOCALHOST));
        // The address this connection reached is one of the host's own.
        if let Some(l) = local {
            add_ip(l.ip());
            if let IpAddr::V6(a) = l.ip()
                && let Some(v4) = a.to_ipv4_mapped()
            {
                add_ip(IpAddr::V4(v4));
            }
        }
    } else {
        add_ip(bound.ip());
    }
    ok.contains(&host)
}

fn authorized(ctl: &Control, req: &Request<Incoming>) -> bool {
    let Some(v) = req.headers().get(header::AUTHORIZATION) else {
        return false;
    };
    let Some(t) = v.as_bytes().strip_prefix(b"Bearer ") else {
        return false;
    };
    super::token::same(t.trim_ascii(), ctl.token.as_bytes())
}

async fn respond(
    ctl: &Arc<Control>,
    door: &Door,
    req: Request<Incoming>,
    local: Option<SocketAddr>,
    ip: IpAddr,
) -> Response<Body> {
    // Two Host headers are ambiguous: which one did the guard below check?
    if req.headers().get_all(header::HOST).iter().count() > 1 {
        return error(StatusCode::BAD_REQUEST, "more than one Host header");
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !host_allowed(host, ctl.addr, local) {
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            &format!(
                "Host {host:?} is not this server's address (DNS rebinding guard): use \
                 http://{}/",
                display_addr(ctl.addr)
            ),
        );
    }
    let path = req.uri().path().to_string();
    let api = path == "/api" || path.starts_with("/api/") || path == "/metrics";
    if !api {
        return page(&req, &path);
    }
    if !authorized(ctl, &req) {
        // Wrong tokens in a row wait longer and longer for their answer.
        let wait = door.failed(ip, Instant::now());
        if !wait.is_zero() {
            async_std::task::sleep(wait).await;
        }
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            &format!(
                "missing or wrong token: send the header 'Authorization: Bearer <token>' with \
                 the token from {}",
                super::token::path(ctl.servent.data_dir()).display()
            ),
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    route(ctl, req, &path).await
}

/// `127.0.0.1` for an address bound to all interfaces, as a person would type it.
pub(super) fn display_addr(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), a.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), a.port())
        }
        _ => a,
    }
}

fn page(req: &Request<Incoming>, path: &str) -> Response<Body> {
    let (body, ty): (&'static str, &'static str) = match path {
        "/" | "/index.html" => (include_str!("page/index.html"), "text/html; charset=utf-8"),
        "/app.js" => (
            include_str!("page/app.js"),
            "text/javascript; charset=utf-8",
        ),
        "/style.css" => (include_str!("page/style.css"), "text/css; charset=utf-8"),
        "/favicon.svg" => (include_str!("page/favicon.svg"), "image/svg+xml"),
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                &format!("no page {path}; the API is under /api"),
            );
        }
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{path} is only for GET"),
        );
    }
    let mut r = with_type(Response::new(full(body)), ty);
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"),
    );
    r.headers_mut()
        .insert("X-Frame-Options", HeaderValue::from_static("DENY"));
    r
}

/// Reads a JSON body of at most [`MAX_BODY`] bytes.
async fn body<T: for<'de> Deserialize<'de>>(
    req: Request<Incoming>,
    example: &str,
) -> Result<T, Response<Body>> {
    let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Err(if e.is::<http_body_util::LengthLimitError>() {
                error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("the body is over {MAX_BODY} bytes"),
                )
            } else {
                error(
                    StatusCode::BAD_REQUEST,
                    &format!("cannot read the body: {e}"),
                )
            });
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            &format!("the body must be JSON like {example}: {e}"),
        )
    })
}

fn search_error(e: SearchError) -> Response<Body> {
    let code = match e {
        SearchError::NotFound(_) => StatusCode::NOT_FOUND,
        SearchError::TooMany | SearchError::TooManyReaders(_) => StatusCode::TOO_MANY_REQUESTS,
        SearchError::EmptyQuery | SearchError::QueryTooLong(_) => StatusCode::BAD_REQUEST,
    };
    error(code, &e.to_string())
}

fn download_error(e: DownloadError) -> Response<Body> {
    let code = match e {
        DownloadError::NotFound(_) => StatusCode::NOT_FOUND,
        DownloadError::TooMany => StatusCode::TOO_MANY_REQUESTS,
        DownloadError::NotRunning(..)
        | DownloadError::NotPaused(..)
        | DownloadError::Duplicate(..)
        | DownloadError::Shared(..)
        | DownloadError::Have(..)
        | DownloadError::NotFinished(..) => StatusCode::CONFLICT,
    };
    error(code, &e.to_string())
}

fn not_found(method: &Method, path: &str) -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        &format!("no endpoint {method} {path}; GET /api lists them"),
    )
}

fn parse_id(s: &str) -> Result<u64, Response<Body>> {
    s.parse().map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            &format!("{s:?} is not an id (a number)"),
        )
    })
}

async fn route(ctl: &Arc<Control>, req: Request<Incoming>, path: &str) -> Response<Body> {
    let method = req.method().clone();
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let r = match (&method, segs.as_slice()) {
        (&Method::GET, ["api"]) => Ok(ok(&serde_json::json!({
            "endpoints": ENDPOINTS
                .iter()
                .map(|(m, p, d)| Endpoint { method: m, path: p, description: d })
                .collect::<Vec<_>>()
        }))),
        (&Method::GET, ["metrics"]) => {
            let text = super::metrics::render(ctl);
            Ok(with_type(
                Response::new(full(text)),
                "text/plain; version=0.0.4; charset=utf-8",
            ))
        }
        (&Method::GET, ["api", "status"]) => Ok(ok(&status(ctl))),
        (&Method::GET, ["api", "connections"]) => Ok(ok(&connections(ctl))),
        (&Method::POST, ["api", "peers"]) => add_peer(ctl, req).await,
        (&Method::DELETE, ["api", "peers", id]) => parse_id(id).map(|id| {
            if ctl.servent.node().disconnect(id) {
                ok(&serde_json::json!({ "id": id, "disconnected": true }))
            } else {
                error(StatusCode::NOT_FOUND, &format!("no connection {id}"))
            }
        }),
        (&Method::POST, ["api", "searches"]) => {
            #[derive(Deserialize)]
            struct Q {
                query: String,
            }
            match body::<Q>(req, r#"{"query":"free jazz"}"#).await {
                Err(r) => Ok(r),
                Ok(q) => Ok(match ctl.searches.start(&q.query) {
                    Ok(id) => json(
                        StatusCode::CREATED,
                        &serde_json::json!({ "id": id, "query": q.query.trim() }),
                    ),
                    Err(e) => search_error(e),
                }),
            }
        }
        (&Method::GET, ["api", "searches"]) => Ok(ok(&ctl.searches.list())),
        (&Method::GET, ["api", "searches", id]) => parse_id(id).map(|id| {
            ctl.searches
                .detail(id)
                .map_or_else(search_error, |d| ok(&d))
        }),
        (&Method::GET, ["api", "searches", id, "stream"]) => parse_id(id).map(|id| stream(ctl, id)),
        (&Method::DELETE, ["api", "searches", id]) => parse_id(id).map(|id| {
            ctl.searches.stop(id).map_or_else(search_error, |()| {
                ok(&serde_json::json!({ "id": id, "running": false }))
            })
        }),
        (&Method::POST, ["api", "downloads"]) => add_download(ctl, req).await,
        (&Method::GET, ["api", "downloads"]) => Ok(ok(&ctl.downloads.list())),
        (&Method::GET, ["api", "downloads", id]) => parse_id(id).map(|id| {
            ctl.downloads
                .get(id)
                .map_or_else(download_error, |v| ok(&v))
        }),
        (&Method::POST, ["api", "downloads", id, "pause"]) => parse_id(id).map(|id| {
            ctl.downloads
                .pause(id)
                .map_or_else(download_error, |v| ok(&v))
        }),
        (&Method::POST, ["api", "downloads", id, "resume"]) => parse_id(id).map(|id| {
            ctl.downloads
                .resume(id)
                .map_or_else(download_error, |v| ok(&v))
        }),
        (&Method::POST, ["api", "downloads", "clear"]) => Ok(ok(
            &serde_json::json!({ "cleared": ctl.downloads.clear_finished() }),
        )),
        (&Method::DELETE, ["api", "downloads", id]) => parse_id(id).map(|id| {
            match ctl.downloads.clear(id) {
                Err(DownloadError::NotFinished(..)) => ctl.downloads.cancel(id),
                r => r,
            }
            .map_or_else(download_error, |v| ok(&v))
        }),
        (&Method::GET, ["api", "uploads"]) => Ok(ok(&uploads_view(ctl))),
        (&Method::GET, ["api", "settings"]) => Ok(ok(&run_settings(ctl))),
        (&Method::PATCH, ["api", "settings"]) => {
            match body::<SettingsPatch>(req, r#"{"upload_limit": "512K"}"#).await {
                Err(e) => Err(e),
                Ok(p) => {
                    let parse = |v: Option<String>| -> Result<Option<u64>, String> {
                        v.map(|v| crate::transfer::limit::parse_rate(&v))
                            .transpose()
                    };
                    let max = crate::servent::MAX_UPLOAD_SLOTS;
                    match (
                        parse(p.upload_limit),
                        parse(p.download_limit),
                        p.upload_slots,
                    ) {
                        (_, _, Some(n)) if n == 0 || n > max => Err(error(
                            StatusCode::BAD_REQUEST,
                            &format!("upload_slots {n}: give 1 to {max}"),
                        )),
                        (Ok(u), Ok(d), slots) => {
                            ctl.servent.set_limits(u, d);
                            if let Some(n) = slots {
                                ctl.servent.set_upload_slots(n);
                            }
                            let now = run_settings(ctl);
                            log::info!(
                                "limits now: upload {}, download {}, {}",
                                now.upload_limit,
                                now.download_limit,
                                crate::text::count(now.upload_slots as u64, "slot", "slots")
                            );
                            Ok(ok(&now))
                        }
                        (Err(e), _, _) | (_, Err(e), _) => Err(error(StatusCode::BAD_REQUEST, &e)),
                    }
                }
            }
        }
        (&Method::GET, ["api", "shares"]) => Ok(ok(&shares(ctl))),
        (&Method::POST, ["api", "shares", "rescan"]) => {
            ctl.servent.rescan().await;
            Ok(ok(&shares(ctl)))
        }
        _ => Ok(not_found(&method, path)),
    };
    r.unwrap_or_else(|e| e)
}

#[derive(Serialize)]
struct Firewall {
    firewalled: bool,
    reason: &'static str,
    /// Our address as the peers see it, and how many of them say so.
    external: Option<std::net::Ipv4Addr>,
    external_votes: usize,
    /// The connection from outside that proved us reachable.
    reached_by: Option<SocketAddrV4>,
}

#[derive(Serialize)]
struct ShareCount {
    files: usize,
    bytes: u64,
    /// The scan of the shares, while one runs (the files hashed so far are shared already).
    #[serde(skip_serializing_if = "Option::is_none")]
    hashing: Option<crate::share::ScanProgress>,
}

#[derive(Serialize)]
struct TransferCount {
    uploads_active: usize,
    downloads_active: usize,
    bytes_uploaded: u64,
    /// Of those, bytes sent from files we were still downloading (the swarm at work).
    bytes_uploaded_partial: u64,
    bytes_downloaded: u64,
    upload_limit_bps: u64,
    download_limit_bps: u64,
}

#[derive(Serialize)]
struct Status {
    version: &'static str,
    servent_guid: String,
    role: crate::handshake::Role,
    uptime_secs: u64,
    listen: SocketAddrV4,
    api: SocketAddr,
    firewalled: Firewall,
    reputation: crate::overlay::Score,
    shares: ShareCount,
    transfers: TransferCount,
    stats: crate::overlay::Stats,
}

pub(super) fn share_count(ctl: &Control) -> (usize, u64) {
    let lib = ctl.servent.library();
    let lib = lib.read().unwrap_or_else(|e| e.into_inner());
    (lib.len(), lib.files().iter().map(|f| f.size).sum())
}

fn status(ctl: &Control) -> Status {
    let node = ctl.servent.node();
    let (firewalled, reason) = ctl.servent.firewall_reason();
    let (files, bytes) = share_count(ctl);
    Status {
        version: env!("CARGO_PKG_VERSION"),
        servent_guid: node.servent().to_hex(),
        role: node.role(),
        uptime_secs: ctl.started.elapsed().as_secs(),
        listen: node.listen_addr(),
        api: ctl.addr,
        firewalled: Firewall {
            firewalled,
            reason,
            external: node.external().map(|(ip, _)| ip),
            external_votes: node.external().map_or(0, |(_, n)| n),
            reached_by: node.reached_by(),
        },
        reputation: node.reputation(),
        shares: ShareCount {
            files,
            bytes,
            hashing: Some(ctl.servent.scan_progress()).filter(|p| p.running),
        },
        transfers: {
            let up = ctl.servent.uploads();
            let (ul, dl) = ctl.servent.limits();
            TransferCount {
                uploads_active: up.tracker.active(),
                downloads_active: ctl.downloads.active(),
                bytes_uploaded: up.bytes_sent.load(std::sync::atomic::Ordering::Relaxed),
                bytes_uploaded_partial: up
                    .partial_bytes_sent
                    .load(std::sync::atomic::Ordering::Relaxed),
                bytes_downloaded: ctl.servent.downloaded_bytes(),
                upload_limit_bps: ul,
                download_limit_bps: dl,
            }
        },
        stats: node.stats(),
    }
}

#[derive(Serialize)]
struct Compressed {
    #[serde(rename = "in")]
    incoming: bool,
    out: bool,
}

#[derive(Serialize)]
struct Connection {
    id: u64,
    peer: SocketAddrV4,
    role: crate::handshake::Role,
    user_agent: String,
    outbound: bool,
    compressed: Compressed,
    queue_fill: f32,
    bytes_in: u64,
    bytes_out: u64,
    connected_secs: u64,
}

fn connections(ctl: &Control) -> Vec<Connection> {
    let node = ctl.servent.node();
    let links = node.link_stats();
    let mut v: Vec<Connection> = node
        .connections()
        .into_iter()
        .map(|c| {
            let l = links.iter().find(|l| l.id == c.id);
            Connection {
                id: c.id,
                peer: c.addr,
                role: c.role,
                user_agent: c.user_agent,
                outbound: c.outbound,
                compressed: Compressed {
                    incoming: l.is_some_and(|l| l.compressed_in),
                    out: l.is_some_and(|l| l.compressed_out),
                },
                queue_fill: l.map_or(0.0, |l| l.queue_fill),
                bytes_in: l.map_or(0, |l| l.bytes_in),
                bytes_out: l.map_or(0, |l| l.bytes_out),
                connected_secs: c.connected_secs,
            }
        })
        .collect();
    v.sort_by_key(|c| c.id);
    v
}

async fn add_peer(ctl: &Control, req: Request<Incoming>) -> Result<Response<Body>, Response<Body>> {
    #[derive(Deserialize)]
    struct P {
        addr: String,
    }
    let p = body::<P>(req, r#"{"addr":"203.0.113.5:6346"}"#).await?;
    let name = p.addr.clone();
    let resolved = async_std::task::spawn_blocking(move || {
        name.to_socket_addrs().map(|a| {
            a.filter_map(|a| match a {
                SocketAddr::V4(a) => Some(a),
                SocketAddr::V6(_) => None,
            })
            .collect::<Vec<_>>()
        })
    })
    .await
    .map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            &format!("{}: {e} (expected HOST:PORT)", p.addr),
        )
    })?;
    if resolved.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            &format!("{}: no IPv4 address", p.addr),
        ));
    }
    let node = ctl.servent.node();
    let resolved: Vec<_> = resolved.into_iter().filter(|a| node.accepts(a)).collect();
    if resolved.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            &format!(
                "{}: a loopback or private address, which this servent does not use as a peer; \
                 start it with allow_private = true (--allow-private) to allow them",
                p.addr
            ),
        ));
    }
    info!("API: dialling {} and keeping it", p.addr);
    ctl.servent.node().add_hosts(resolved.clone(), true);
    Ok(json(
        StatusCode::ACCEPTED,
        &serde_json::json!({ "addr": p.addr, "dialing": resolved }),
    ))
}

async fn add_download(
    ctl: &Control,
    req: Request<Incoming>,
) -> Result<Response<Body>, Response<Body>> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct D {
        urn: Option<String>,
        magnet: Option<String>,
        search: Option<u64>,
    }
    let d = body::<D>(
        req,
        r#"{"urn":"urn:sha1:…"} or {"magnet":"magnet:?xt=urn:sha1:…"}"#,
    )
    .await?;
    let bad = |m: String| error(StatusCode::BAD_REQUEST, &m);
    // A magnet link with a source and its size (xl=, or the source's answer to a HEAD)
    // starts without a search.
    let mut direct = None;
    let (urn, name): (Sha1Urn, Option<String>) = match (&d.urn, &d.magnet) {
        (Some(u), None) => (
            u.trim()
                .parse()
                .map_err(|_| bad(format!("{u:?} is not urn:sha1:<32 base32 characters>")))?,
            None,
        ),
        (None, Some(m)) if d.search.is_none() => {
            let link = crate::cli::search::parse_link(m).map_err(bad)?;
            direct = link.resolve().await;
            (link.urn, link.name)
        }
        _ => {
            return Err(bad(
                "give one of {\"urn\"}, {\"magnet\"} or {\"search\":ID,\"urn\"}".into(),
            ));
        }
    };
    let spec = match d.search {
        None => direct,
        Some(id) => match ctl.searches.spec(id, &urn) {
            Err(e) => return Err(search_error(e)),
            Ok(None) => {
                return Err(error(
                    StatusCode::NOT_FOUND,
                    &format!("search {id} has found no file {urn}"),
                ));
            }
            Ok(Some(s)) => Some(s),
        },
    };
    ctl.downloads
        .add(urn, name, spec)
        .map(|v| json(StatusCode::CREATED, &v))
        .map_err(download_error)
}

#[derive(Serialize)]
struct SharedView {
    name: String,
    size: u64,
    urn: Sha1Urn,
    /// The Tiger tree root, for magnet links (`xt=urn:tree:tiger:…`).
    tth: Option<crate::thex::Tth>,
}

#[derive(Serialize)]
struct Shares {
    /// The scan of the shares, while one runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    hashing: Option<crate::share::ScanProgress>,
    folders: Vec<std::path::PathBuf>,
    files: Vec<SharedView>,
}

fn shares(ctl: &Control) -> Shares {
    let lib = ctl.servent.library();
    let lib = lib.read().unwrap_or_else(|e| e.into_inner());
    Shares {
        hashing: Some(ctl.servent.scan_progress()).filter(|p| p.running),
        folders: ctl.servent.share_folders().to_vec(),
        files: lib
            .files()
            .iter()
            .map(|f| SharedView {
                name: f.name.clone(),
                size: f.size,
                urn: f.sha1,
                tth: f.tth,
            })
            .collect(),
    }
}

/// NDJSON: the groups known now, then one line per new or updated group until the search
/// stops or the client goes away (hyper drops the body, which closes our receiver).
fn stream(ctl: &Control, id: u64) -> Response<Body> {
    let (now, rx) = match ctl.searches.follow(id) {
        Ok(x) => x,
        Err(e) => return search_error(e),
    };
    let line = |g: &super::searches::Group| -> Bytes {
        let mut v = serde_json::to_vec(g).unwrap_or_default();
        v.push(b'\n');
        Bytes::from(v)
    };
    let first: std::collections::VecDeque<Bytes> = now.iter().map(line).collect();
    let s = futures_lite::stream::unfold((first, rx), move |(mut first, rx)| async move {
        if let Some(b) = first.pop_front() {
            return Some((Ok::<_, io::Error>(Frame::data(b)), (first, rx)));
        }
        let g = rx.recv().await.ok()?;
        Some((Ok(Frame::data(line(&g))), (first, rx)))
    });
    let r = Response::new(StreamBody::new(s).boxed());
    with_type(r, "application/x-ndjson")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_names_pass_the_host_check() {
        let b: SocketAddr = "127.0.0.1:6347".parse().unwrap();
        assert!(host_allowed("127.0.0.1:6347", b, None));
        assert!(host_allowed("localhost:6347", b, None));
        assert!(host_allowed("LOCALHOST:6347", b, None));
        assert!(!host_allowed("evil.example:6347", b, None));
        assert!(!host_allowed("127.0.0.1:80", b, None));
        assert!(!host_allowed("", b, None));
        let any: SocketAddr = "0.0.0.0:6347".parse().unwrap();
        let local: SocketAddr = "192.0.2.7:6347".parse().unwrap();
        assert!(host_allowed("192.0.2.7:6347", any, Some(local)));
        assert!(host_allowed("[::1]:6347", any, Some(local)));
        assert!(!host_allowed("192.0.2.8:6347", any, Some(local)));
        let v6: SocketAddr = "[::1]:6347".parse().unwrap();
        // Bound to loopback, either loopback name is ours.
        assert!(host_allowed("[::1]:6347", v6, None));
        assert!(host_allowed("127.0.0.1:6347", v6, None));
        assert!(host_allowed("[::1]:6347", b, None));
        assert!(!host_allowed("[::2]:6347", b, None));
    }
}
