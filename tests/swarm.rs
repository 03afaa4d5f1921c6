//! The swarm over real sockets on 127.0.0.1: downloaders serve each other the verified parts
//! of what they hold, find each other through the seed's `X-Alt`, only verified ranges are
//! served, and rate limits hold.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::temp_dir;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use servent::handshake::Role;
use servent::net::NodeConfig;
use servent::servent::{Servent, ServentConfig};
use servent::transfer::download::{Progress, Source, Spec};
use servent::wire::Sha1Urn;

fn bytes(seed: u64, len: usize) -> Vec<u8> {
    servent::cli::demo::sample(seed, len)
}

async fn node(tag: &str, share: Option<(&str, &[u8])>, partial: bool, up_limit: u64) -> Servent {
    node_in(tag, share, partial, up_limit, &[], Role::Leaf).await
}

/// A node in an overlay: linked to `peers`, in `role`.
async fn node_in(
    tag: &str,
    share: Option<(&str, &[u8])>,
    partial: bool,
    up_limit: u64,
    peers: &[std::net::SocketAddrV4],
    role: Role,
) -> Servent {
    let mut n = NodeConfig::new("127.0.0.1:0".parse().unwrap(), temp_dir(tag));
    n.accept_private = true;
    n.bootstrap = Vec::new();
    n.peers = peers.to_vec();
    n.want_ultrapeers = Some(peers.len());
    n.role = role;
    n.tick = Duration::from_millis(100);
    let mut cfg = ServentConfig::new(n);
    if let Some((name, data)) = share {
        let d = temp_dir(&format!("{tag}-share"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), data).unwrap();
        cfg.shares = vec![d];
    }
    cfg.firewalled = Some(false);
    cfg.share_partial = partial;
    cfg.upload_limit = up_limit;
    cfg.rescan_every = None;
    Servent::start(cfg).await.unwrap()
}

fn spec_from(seed: &Servent, name: &str, data: &[u8]) -> Spec {
    let lib = seed.library();
    let f = lib.read().unwrap().files()[0].clone();
    Spec {
        urn: Sha1Urn::digest(data),
        size: data.len() as u64,
        name: name.into(),
        sources: vec![Source {
            addr: seed.node().listen_addr(),
            index: f.index,
            name: name.into(),
            servent: seed.node().servent(),
            push: false,
            proxies: Vec::new(),
        }],
        tth: f.tth,
    }
}

/// Three downloaders of one upload-limited seed, all started together; each gets the file
/// verified. Returns, per downloader, the bytes it received from other downloaders (in all, and
/// while they were partial sources), and how many of its sources it learnt from the mesh.
async fn three_downloaders(partial: bool) -> Vec<(u64, u64, usize)> {
    let tag = if partial { "swarm" } else { "cs" };
    let data = bytes(77, 4 * 1024 * 1024);
    let seed = node(
        &format!("{tag}-seed"),
        Some(("dawn chorus.flac", &data)),
        true,
        1 << 20,
    )
    .await;
    let spec = spec_from(&seed, "dawn chorus.flac", &data);
    let mut peers = Vec::new();
    for i in 0..3 {
        peers.push(node(&format!("{tag}-dl{i}"), None, partial, 0).await);
    }
    let runs: Vec<_> = peers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (p, spec, dir) = (p.clone(), spec.clone(), temp_dir(&format!("{tag}-out{i}")));
            async_std::task::spawn(async move {
                let progress = Progress::default();
                let path = p.download(spec, &dir, &progress).await.unwrap();
                (path, progress)
            })
        })
        .collect();
    let mut out = Vec::new();
    let mut results = Vec::new();
    for r in runs {
        results.push(r.await);
    }
    let downloaders: Vec<std::net::SocketAddrV4> =
        peers.iter().map(|p| p.node().listen_addr()).collect();
    for (path, progress) in results {
        assert_eq!(Sha1Urn::digest(&std::fs::read(&path).unwrap()), spec.urn);
        let (sources, _) = progress.detail();
        let from_peers: u64 = sources
            .iter()
            .filter(|s| downloaders.contains(&s.addr))
            .map(|s| s.bytes)
            .sum();
        let mesh = sources
            .iter()
            .filter(|s| s.from_mesh && s.bytes > 0)
            .count();
        // Bytes from peers while they were still partial; a peer that finished first serves
        // the rest as a complete source.
        let partial_bytes = progress.from_partial.load(Ordering::Relaxed);
        assert!(partial_bytes <= from_peers);
        out.push((from_peers, partial_bytes, mesh));
    }
    // What the downloaders sent from files they were still downloading is counted as such.
    let partial_sent: u64 = peers
        .iter()
        .map(|p| p.uploads().partial_bytes_sent.load(Ordering::Relaxed))
        .sum();
    if !partial {
        assert_eq!(partial_sent, 0);
    } else {
        assert!(partial_sent > 0);
    }
    out
}

#[async_std::test]
async fn downloaders_of_a_limited_seed_serve_each_other_what_they_verified() {
    let swarm = three_downloaders(true).await;
    for (i, (from_peers, _, mesh)) in swarm.iter().enumerate() {
        assert!(
            *from_peers > 0,
            "downloader {i} got nothing from the others: {swarm:?}"
        );
        // Each was given only the seed: the others came from the seed's X-Alt.
        assert!(*mesh > 0, "downloader {i} learnt no source from the mesh");
    }
    // And they traded while still downloading (one that finished first may have served the
    // last one as a complete source).
    assert!(
        swarm.iter().map(|s| s.1).sum::<u64>() > 0,
        "no bytes came from a partial file: {swarm:?}"
    );
    // The control: with partial sharing off, the same run is client-server.
    let cs = three_downloaders(false).await;
    assert!(
        cs.iter().all(|(_, b, _)| *b == 0),
        "share_partial off, yet downloaders served each other: {cs:?}"
    );
}

async fn raw(addr: std::net::SocketAddrV4, req: &str) -> String {
    let mut s = async_std::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = async_std::future::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).to_string()
}

/// The whole answer, read until the peer closes (`Connection: close`).
async fn raw_bytes(addr: std::net::SocketAddrV4, req: &str) -> Vec<u8> {
    let mut s = async_std::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    async_std::future::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

/// A file still downloading is served only in the ranges that passed the tree check: a 206
/// that stops where the verified range stops, a 416 with `X-Available-Ranges` elsewhere.
#[async_std::test]
async fn a_partial_file_is_found_by_a_search_and_served_only_in_its_verified_ranges() {
    let data = bytes(5, 4 * 1024 * 1024);
    // A slow seed, outside the overlay, keeps the download partial for a while; the holder
    // and a searcher are leaves of one ultrapeer.
    // 128 KiB/s: 32 s for the file, far longer than the search takes even on a loaded machine.
    let seed = node("pf-seed", Some(("slow river.ogg", &data)), true, 128 * 1024).await;
    let spec = spec_from(&seed, "slow river.ogg", &data);
    let up = node_in("pf-up", None, true, 0, &[], Role::Ultrapeer).await;
    let up_addr = [up.node().listen_addr()];
    let holder = node_in("pf-holder", None, true, 0, &up_addr, Role::Leaf).await;
    let searcher = node_in("pf-searcher", None, true, 0, &up_addr, Role::Leaf).await;
    common::wait_links(holder.node(), 1).await;
    common::wait_links(searcher.node(), 1).await;
    let progress = Arc::new(Progress::default());
    let h = holder.clone();
    let p = progress.clone();
    let s = spec.clone();
    let dl = async_std::task::spawn(async move {
        let _ = h.download(s, &temp_dir("pf-out"), &p).await;
    });
    let start = Instant::now();
    while progress.verified.load(Ordering::Relaxed) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "nothing verified"
        );
        async_std::task::sleep(Duration::from_millis(50)).await;
    }
    // Its words and its urn find it, in a hit that says it is partial (GGEP PRU) and gives
    // its Tiger root. The ultrapeer forwards the query only once the holder's routing table
    // has the name, so ask until a hit comes (or 30 s).
    let found = 'found: loop {
        for search in [
            searcher.search("slow river"),
            searcher.search_urn(&spec.urn),
        ] {
            let end = Instant::now() + Duration::from_secs(1);
            let mut hits = Vec::new();
            while let Some(left) = end.checked_duration_since(Instant::now()) {
                match async_std::future::timeout(left, search.hits.recv()).await {
                    Ok(Ok(msg)) => hits.extend(servent::servent::found_in_hit(&msg)),
                    _ => break,
                }
            }
            searcher.stop_search(&search.muid);
            if let Some(f) = hits.into_iter().find(|f| f.urn == spec.urn) {
                break 'found f;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no hit for the partial file"
        );
    };
    assert!(found.partial, "{found:?}");
    assert_eq!(found.source.addr, holder.node().listen_addr());
    assert_eq!((found.size, found.tth), (spec.size, spec.tth));
    // A verified range and a byte not verified yet, read after the search (which takes a
    // while): chunks come in a random order, so either may be anywhere in the file.
    let (have, missing, size) = {
        let parts = holder.uploads().partials.read().unwrap();
        let f = parts.get(&spec.urn).unwrap();
        let gap = f.verified.missing(f.size).iter().next();
        (
            f.verified.iter().next().unwrap(),
            gap.expect("the download is not partial any more").start,
            f.size,
        )
    };
    let addr = found.source.addr;
    let get = |range: String| {
        format!(
            "GET /uri-res/N2R?{} HTTP/1.1\r\nHost: x\r\nRange: bytes={range}\r\nConnection: close\r\n\r\n",
            spec.urn
        )
    };
    let ok = raw(addr, &get(format!("{}-{}", have.start, size - 1))).await;
    assert!(ok.starts_with("HTTP/1.1 206"), "{ok}");
    // The answer starts where asked and ends where that verified range ends (it may have
    // grown since we looked, never shrunk).
    let lower = ok.to_lowercase();
    let sent = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-range: bytes "))
        .and_then(|r| r.split_once('/'))
        .and_then(|(r, _)| r.split_once('-'))
        .map(|(a, b)| (a.parse::<u64>().unwrap(), b.trim().parse::<u64>().unwrap()))
        .expect("a content-range");
    assert_eq!(sent.0, have.start, "{ok}");
    assert!(sent.1 + 1 >= have.end, "{ok}");
    let verified = holder
        .uploads()
        .partials
        .read()
        .unwrap()
        .get(&spec.urn)
        .unwrap()
        .verified
        .clone();
    assert!(verified.contains_range(sent.0, sent.1 + 1), "{ok}");
    assert!(
        ok.to_lowercase().contains("x-available-ranges: bytes "),
        "{ok}"
    );
    // It got the tree from the seed, so it points at it, and serves it (below).
    assert!(
        ok.to_lowercase().contains("x-thex-uri: /uri-res/n2x?"),
        "{ok}"
    );
    let no = raw(addr, &get(format!("{missing}-{missing}"))).await;
    assert!(
        no.starts_with("HTTP/1.1 416 Requested range not available yet"),
        "{no}"
    );
    assert!(
        no.to_lowercase().contains("x-available-ranges: bytes "),
        "{no}"
    );
    // Its tree is served, as the seed's would be, and checks out against the file's root.
    let thex = raw_bytes(
        addr,
        &format!(
            "GET /uri-res/N2X?{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            spec.urn
        ),
    )
    .await;
    assert!(
        thex.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&thex)
    );
    let body = thex
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| &thex[i + 4..])
        .unwrap();
    let root = spec.tth.unwrap();
    let tree = servent::thex::parse_thex(body, spec.size, &root).expect("a good tree");
    assert_eq!(tree.root(), root);
    drop(dl);
}

/// Upload and download limits, each with several transfers at once, hold within 10 % over 10 s.
#[async_std::test]
async fn rate_limits_hold_across_transfers() {
    const RATE: u64 = 512 * 1024;
    let data = bytes(9, 16 * 1024 * 1024);
    let seed = node("rl-seed", Some(("big tape.wav", &data)), true, RATE).await;
    let spec = spec_from(&seed, "big tape.wav", &data);
    let other = bytes(10, 16 * 1024 * 1024);
    let free_seed = node("rl-free", Some(("long mix.wav", &other)), true, 0).await;
    let spec2 = spec_from(&free_seed, "long mix.wav", &other);
    // Three downloads from the limited seed; two at once by a download-limited node.
    let mut tasks = Vec::new();
    for i in 0..3 {
        let d = node(&format!("rl-dl{i}"), None, false, 0).await;
        let s = spec.clone();
        tasks.push(async_std::task::spawn(async move {
            let _ = d
                .download(s, &temp_dir(&format!("rl-out{i}")), &Progress::default())
                .await;
        }));
    }
    let limited = node("rl-limited", None, false, 0).await;
    limited.set_limits(None, Some(RATE));
    for (i, s) in [spec2.clone(), spec2.clone()].into_iter().enumerate() {
        let d = limited.clone();
        tasks.push(async_std::task::spawn(async move {
            let _ = d
                .download(s, &temp_dir(&format!("rl-lim{i}")), &Progress::default())
                .await;
        }));
    }
    // Let the transfers start, then measure over 10 s.
    async_std::task::sleep(Duration::from_secs(1)).await;
    let (up0, down0, t0) = (
        seed.uploads().bytes_sent.load(Ordering::Relaxed),
        limited.downloaded_bytes(),
        Instant::now(),
    );
    async_std::task::sleep(Duration::from_secs(10)).await;
    let secs = t0.elapsed().as_secs_f64();
    let up = (seed.uploads().bytes_sent.load(Ordering::Relaxed) - up0) as f64 / secs;
    let down = (limited.downloaded_bytes() - down0) as f64 / secs;
    for (what, r) in [("upload", up), ("download", down)] {
        let ratio = r / RATE as f64;
        assert!(
            (0.9..=1.1).contains(&ratio),
            "{what} ran at {r:.0} B/s against a limit of {RATE} ({ratio:.3}×)"
        );
    }
    drop(tasks);
}
