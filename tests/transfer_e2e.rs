//! Sharing, searching and downloading between real servents on 127.0.0.1: direct downloads,
//! downloads through Push and GIV from a firewalled source, several sources, a source that
//! sends wrong bytes, and requests that try to leave the share.

mod common;

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_std::net::{TcpListener, TcpStream};
use common::*;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use servent::handshake::Role;
use servent::net::NodeConfig;
use servent::servent::{Found, Servent, ServentConfig, found_in_hit, specs};
use servent::transfer::download::{Progress, Source, Spec};
use servent::wire::{FileIndex, ServentId, Sha1Urn};

fn bytes(seed: u64, len: usize) -> Vec<u8> {
    servent::cli::demo::sample(seed, len)
}

fn share_dir(tag: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let d = temp_dir(tag);
    std::fs::create_dir_all(&d).unwrap();
    for (name, data) in files {
        std::fs::write(d.join(name), data).unwrap();
    }
    d
}

async fn servent(
    role: Role,
    peers: &[SocketAddrV4],
    shares: Vec<PathBuf>,
    fw: Option<bool>,
) -> Servent {
    let mut n = NodeConfig::new("127.0.0.1:0".parse().unwrap(), temp_dir("servent"));
    n.role = role;
    n.peers = peers.to_vec();
    n.want_ultrapeers = Some(peers.len());
    n.accept_private = true;
    n.tick = Duration::from_millis(100);
    if fw == Some(true) {
        // Its advertised address refuses connections: only Push can reach it.
        n.advertise = Some("127.0.0.1:1".parse().unwrap());
    }
    let mut cfg = ServentConfig::new(n);
    cfg.shares = shares;
    cfg.firewalled = fw;
    Servent::start(cfg).await.unwrap()
}

async fn find(s: &Servent, words: &str, want: usize) -> Vec<Found> {
    let search = s.search(words);
    let mut found = Vec::new();
    let end = std::time::Instant::now() + Duration::from_secs(3);
    while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
        match async_std::future::timeout(left, search.hits.recv()).await {
            Ok(Ok(msg)) => {
                found.extend(found_in_hit(&msg));
                if found.len() >= want {
                    break;
                }
            }
            _ => break,
        }
    }
    found
}

async fn linked(s: &Servent, n: usize) {
    wait_links(s.node(), n).await;
}

fn sha1_of(p: &Path) -> Sha1Urn {
    Sha1Urn::digest(&std::fs::read(p).unwrap())
}

#[async_std::test]
async fn a_shared_file_is_found_by_keyword_and_by_urn_and_downloaded_intact() {
    let data = bytes(1, 3 * 1024 * 1024 + 17);
    let up = servent(Role::Ultrapeer, &[], vec![], None).await;
    let dir = share_dir(
        "share1",
        &[("Free Jazz Session.ogg", &data), ("notes.txt", b"hi")],
    );
    let sharer = servent(
        Role::Leaf,
        &[up.node().listen_addr()],
        vec![dir],
        Some(false),
    )
    .await;
    let getter = servent(Role::Leaf, &[up.node().listen_addr()], vec![], Some(false)).await;
    linked(&sharer, 1).await;
    linked(&getter, 1).await;
    wait_tables(up.node(), 1).await;

    let found = find(&getter, "jazz session", 1).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].name, "Free Jazz Session.ogg");
    assert_eq!(found[0].size, data.len() as u64);
    assert_eq!(found[0].urn, Sha1Urn::digest(&data));
    assert!(!found[0].source.push);

    let by_urn = {
        let search = getter.search_urn(&Sha1Urn::digest(&data));
        let msg = async_std::future::timeout(Duration::from_secs(3), search.hits.recv())
            .await
            .expect("urn search answered")
            .unwrap();
        found_in_hit(&msg)
    };
    assert_eq!(by_urn.len(), 1);
    assert_eq!(by_urn[0].urn, found[0].urn);

    let out = temp_dir("dl1");
    let progress = Progress::default();
    let spec = specs(&found).remove(0);
    let path = getter.download(spec, &out, &progress).await.unwrap();
    assert_eq!(path.file_name().unwrap(), "Free Jazz Session.ogg");
    assert_eq!(std::fs::read(&path).unwrap(), data);
    // The sharer now counts an upload, and its hits say so (QHD "uploaded" flag).
    assert!(
        sharer
            .uploads()
            .completed
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    let again = getter.search("jazz session");
    let msg = async_std::future::timeout(Duration::from_secs(3), again.hits.recv())
        .await
        .expect("answered again")
        .unwrap();
    let Ok(servent::wire::Framed::Frame(f)) = servent::wire::frame(&msg) else {
        panic!("hit does not frame")
    };
    let d = servent::wire::Descriptor::decode(&f).unwrap();
    let servent::wire::Payload::QueryHit(h) = d.payload else {
        panic!("not a hit")
    };
    assert!(h.flags().unwrap().uploaded, "{h:?}");
    assert!(
        !sharer.summary().contains(" 0 uploads done"),
        "{}",
        sharer.summary()
    );
    // Nothing partial is left behind.
    let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert_eq!(left.len(), 1);
}

#[async_std::test]
async fn a_firewalled_source_serves_through_push_and_giv_via_the_ultrapeer() {
    let data = bytes(2, 700_000);
    let up = servent(Role::Ultrapeer, &[], vec![], None).await;
    let dir = share_dir("share2", &[("behind the wall.bin", &data)]);
    let fw = servent(
        Role::Leaf,
        &[up.node().listen_addr()],
        vec![dir],
        Some(true),
    )
    .await;
    let getter = servent(Role::Leaf, &[up.node().listen_addr()], vec![], Some(false)).await;
    linked(&fw, 1).await;
    linked(&getter, 1).await;
    wait_tables(up.node(), 1).await;
    let found = find(&getter, "wall", 1).await;
    assert_eq!(found.len(), 1);
    assert!(found[0].source.push, "the hit carries the push flag");
    assert_eq!(
        found[0].source.addr.port(),
        1,
        "its advertised address refuses"
    );
    let out = temp_dir("dl2");
    let path = getter
        .download(specs(&found).remove(0), &out, &Progress::default())
        .await
        .unwrap();
    assert_eq!(sha1_of(&path), Sha1Urn::digest(&data));
    assert!(
        up.node().stats().pushes_routed >= 1,
        "the push went via the ultrapeer"
    );
}

#[async_std::test]
async fn two_sources_share_the_work_and_one_dying_does_not_stop_the_download() {
    let data = bytes(3, 6 * 1024 * 1024);
    let up = servent(Role::Ultrapeer, &[], vec![], None).await;
    let a = servent(
        Role::Leaf,
        &[up.node().listen_addr()],
        vec![share_dir("a", &[("big.iso", &data)])],
        Some(false),
    )
    .await;
    let b = servent(
        Role::Leaf,
        &[up.node().listen_addr()],
        vec![share_dir("b", &[("big.iso", &data)])],
        Some(false),
    )
    .await;
    let getter = servent(Role::Leaf, &[up.node().listen_addr()], vec![], Some(false)).await;
    for s in [&a, &b, &getter] {
        linked(s, 1).await;
    }
    wait_tables(up.node(), 2).await;
    let found = find(&getter, "big iso", 2).await;
    let spec = specs(&found).remove(0);
    assert_eq!(spec.sources.len(), 2, "one file, two sources");
    let progress = Progress::default();
    let out = temp_dir("dl3");
    let dl = getter.download(spec, &out, &progress);
    let kill = async {
        // Kill one source once the download is under way.
        while progress.done.load(std::sync::atomic::Ordering::Relaxed) < 512 * 1024 {
            async_std::task::sleep(Duration::from_millis(2)).await;
        }
        a.node().abort();
        std::future::pending::<()>().await
    };
    let path = futures_lite::future::or(dl, async {
        kill.await;
        unreachable!()
    })
    .await
    .unwrap();
    assert_eq!(sha1_of(&path), Sha1Urn::digest(&data));
}

/// Reads one request's head for the stand-in sources below: `None` when the client went
/// away, else the inclusive byte range of its `Range` header, if it sent one.
async fn read_range(s: &mut TcpStream, buf: &mut [u8]) -> Option<Option<(u64, u64)>> {
    let mut req = Vec::new();
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(buf).await {
            Ok(n) if n > 0 => req.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
    let text = String::from_utf8_lossy(&req).to_string();
    Some(
        text.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("range")
                    .then(|| v.trim().strip_prefix("bytes="))?
            })
            .and_then(|r| r.split_once('-'))
            .map(|(a, b)| (a.parse().unwrap(), b.trim().parse().unwrap())),
    )
}

/// A listener on a free loopback port, and its address.
async fn listen() -> (TcpListener, SocketAddrV4) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    match l.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => (l, a),
        _ => unreachable!("bound to 127.0.0.1"),
    }
}

/// Serves wrong bytes for any request, like a broken or malicious source.
async fn liar(len: u64) -> SocketAddrV4 {
    let (l, addr) = listen().await;
    async_std::task::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            async_std::task::spawn(async move {
                let mut buf = vec![0u8; 8192];
                loop {
                    let Some(range) = read_range(&mut s, &mut buf).await else {
                        return;
                    };
                    let range = range.unwrap_or((0, len - 1));
                    let body = vec![0xEEu8; (range.1 - range.0 + 1) as usize];
                    let head = format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {}-{}/{len}\r\n\r\n",
                        body.len(),
                        range.0,
                        range.1
                    );
                    if s.write_all(head.as_bytes()).await.is_err()
                        || s.write_all(&body).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Serves `data` with no tree, honestly but (with `flip`) for one byte of its first answer,
/// flipped; counts the requests it answers.
async fn raw_source(data: Arc<Vec<u8>>, answered: Arc<AtomicUsize>, flip: bool) -> SocketAddrV4 {
    let (l, addr) = listen().await;
    let flipped = Arc::new(AtomicBool::new(!flip));
    async_std::task::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (data, answered, flipped) = (data.clone(), answered.clone(), flipped.clone());
            async_std::task::spawn(async move {
                let len = data.len() as u64;
                let mut buf = vec![0u8; 8192];
                while let Some(range) = read_range(&mut s, &mut buf).await {
                    let (a, b) = range.unwrap_or((0, len - 1));
                    let mut body = data[a as usize..=b as usize].to_vec();
                    if !flipped.swap(true, Ordering::SeqCst) {
                        body[0] ^= 0xFF;
                    }
                    answered.fetch_add(1, Ordering::SeqCst);
                    let head = format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {a}-{b}/{len}\r\n\r\n",
                        body.len()
                    );
                    if s.write_all(head.as_bytes()).await.is_err()
                        || s.write_all(&body).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[async_std::test]
async fn one_corrupt_chunk_is_caught_by_the_tree_at_that_chunk_and_fetched_again_elsewhere() {
    let data = Arc::new(bytes(5, 4 * 1024 * 1024));
    let urn = Sha1Urn::digest(&data);
    let good = servent(
        Role::Ultrapeer,
        &[],
        vec![share_dir("onebad-good", &[("album.flac", &data)])],
        Some(false),
    )
    .await;
    // Slowed, so that the flaky source surely serves more than its first answer.
    good.set_limits(Some(2 << 20), None);
    let f = good.library().read().unwrap().files()[0].clone();
    let answered = Arc::new(AtomicUsize::new(0));
    let flaky = raw_source(data.clone(), answered.clone(), true).await;
    let getter = servent(Role::Leaf, &[], vec![], Some(false)).await;
    let source = |addr, index, servent| Source {
        addr,
        index,
        name: "album.flac".into(),
        servent,
        push: false,
        proxies: Vec::new(),
    };
    let spec = Spec {
        urn,
        size: data.len() as u64,
        name: "album.flac".into(),
        sources: vec![
            source(flaky, FileIndex(1), ServentId([2; 16])),
            source(good.node().listen_addr(), f.index, good.node().servent()),
        ],
        // The root from the hit; the tree itself comes from the good source's X-Thex-URI.
        tth: f.tth,
    };
    let progress = Progress::default();
    let path = getter
        .download(spec, &temp_dir("onebad-dl"), &progress)
        .await
        .expect("the download completes without a whole-file failure");
    assert_eq!(std::fs::read(&path).unwrap(), *data);
    // Exactly the one slice with the flipped byte failed; nothing else was thrown away.
    assert_eq!(progress.bad_slices.load(Ordering::Relaxed), 1);
    // One bad slice is a strike, not a ban: the source went on serving.
    assert!(
        answered.load(Ordering::SeqCst) >= 2,
        "the flaky source was dropped at once"
    );
    let (sources, _) = progress.detail();
    let flaky_view = sources.iter().find(|s| s.addr == flaky).unwrap();
    assert_ne!(flaky_view.state, servent::transfer::plan::SourceState::Bad);
}

#[async_std::test]
async fn a_download_no_source_offers_a_tree_for_gets_its_own_from_the_slices_it_hashed() {
    let data = Arc::new(bytes(6, 3 * 1024 * 1024 + 4321));
    let urn = Sha1Urn::digest(&data);
    let plain = raw_source(data.clone(), Arc::new(AtomicUsize::new(0)), false).await;
    let getter = servent(Role::Leaf, &[], vec![], Some(false)).await;
    let spec = Spec {
        urn,
        size: data.len() as u64,
        name: "no tree.bin".into(),
        sources: vec![Source {
            addr: plain,
            index: FileIndex(1),
            name: "no tree.bin".into(),
            servent: ServentId([3; 16]),
            push: false,
            proxies: Vec::new(),
        }],
        tth: None,
    };
    let path = getter
        .download(spec, &temp_dir("notree-dl"), &Progress::default())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), *data);
    // The tree it now serves the file with is the file's, though no second pass read it.
    let tree = getter
        .uploads()
        .partials
        .read()
        .unwrap()
        .get(&urn)
        .unwrap()
        .tree
        .clone();
    assert_eq!(
        tree.expect("a tree of its own").root(),
        servent::thex::HashTree::of(&data).root()
    );
}

/// Serves `data` one slow answer per connection (`Connection: close`), keeping every request
/// head it was sent.
async fn recording_source(
    data: Arc<Vec<u8>>,
    heads: Arc<std::sync::Mutex<Vec<String>>>,
) -> SocketAddrV4 {
    let (l, addr) = listen().await;
    async_std::task::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (data, heads) = (data.clone(), heads.clone());
            async_std::task::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let text = String::from_utf8_lossy(&head).to_lowercase();
                heads.lock().unwrap().push(text.clone());
                let len = data.len() as u64;
                let (a, b) = text
                    .lines()
                    .find_map(|l| l.strip_prefix("range: bytes="))
                    .and_then(|r| r.split_once('-'))
                    .map(|(a, b)| (a.parse::<u64>().unwrap(), b.trim().parse::<u64>().unwrap()))
                    .unwrap_or((0, len - 1));
                async_std::task::sleep(Duration::from_millis(150)).await;
                let body = &data[a as usize..=b as usize];
                let reply = format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {a}-{b}/{len}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.write_all(body).await;
            });
        }
    });
    addr
}

#[async_std::test]
async fn a_dead_source_is_named_in_x_nalt_to_the_others() {
    let data = Arc::new(bytes(7, 2 * 1024 * 1024));
    let urn = Sha1Urn::digest(&data);
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let live = recording_source(data.clone(), heads.clone()).await;
    // An address nobody listens on any more.
    let dead = listen().await.1;
    let getter = servent(Role::Leaf, &[], vec![], Some(false)).await;
    let source = |addr, n: u8| Source {
        addr,
        index: FileIndex(1),
        name: "nalt.bin".into(),
        servent: ServentId([n; 16]),
        push: false,
        proxies: Vec::new(),
    };
    let spec = Spec {
        urn,
        size: data.len() as u64,
        name: "nalt.bin".into(),
        sources: vec![source(dead, 4), source(live, 5)],
        tth: None,
    };
    let path = getter
        .download(spec, &temp_dir("nalt-dl"), &Progress::default())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), *data);
    let heads = heads.lock().unwrap();
    let named = format!("x-nalt: {dead}");
    assert!(
        heads.iter().any(|h| h.contains(&named)),
        "no request named the dead source: {heads:?}"
    );
}

#[async_std::test]
async fn a_source_sending_wrong_bytes_is_detected_and_dropped() {
    let data = bytes(4, 2 * 1024 * 1024);
    let urn = Sha1Urn::digest(&data);
    let good = servent(
        Role::Ultrapeer,
        &[],
        vec![share_dir("good", &[("song.flac", &data)])],
        Some(false),
    )
    .await;
    let getter = servent(Role::Leaf, &[], vec![], Some(false)).await;
    let bad_addr = liar(data.len() as u64).await;
    let good_index = good.library().read().unwrap().files()[0].index;
    let spec = Spec {
        urn,
        size: data.len() as u64,
        name: "song.flac".into(),
        sources: vec![
            Source {
                addr: bad_addr,
                index: FileIndex(1),
                name: "song.flac".into(),
                servent: ServentId([1; 16]),
                push: false,
                proxies: Vec::new(),
            },
            Source {
                addr: good.node().listen_addr(),
                index: good_index,
                name: "song.flac".into(),
                servent: good.node().servent(),
                push: false,
                proxies: Vec::new(),
            },
        ],
        tth: None,
    };
    let progress = Progress::default();
    let path = getter
        .download(spec, &temp_dir("dl4"), &progress)
        .await
        .unwrap();
    assert_eq!(sha1_of(&path), urn);
    // The good source offers a Tiger tree: the liar's slices fail it as they land and are
    // fetched again from the good one, with no whole-file failure.
    let bad = progress
        .bad_slices
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(bad >= 1, "no slice failed the tree check");
}

/// One raw HTTP exchange: the request as given, the whole answer as text.
async fn raw_http(addr: SocketAddrV4, request: &str) -> String {
    String::from_utf8_lossy(&raw_http_for(addr, request, Duration::from_secs(2)).await).into_owned()
}

/// The raw answer, read until the peer closes or `wait` is over.
async fn raw_http_for(addr: SocketAddrV4, request: &str, wait: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = async_std::future::timeout(wait, s.read_to_end(&mut out)).await;
    out
}

#[async_std::test]
async fn get_names_with_a_plus_and_other_methods_are_answered() {
    let dir = share_dir(
        "plus",
        &[("c++ notes+.txt", b"plus plus"), ("my song.txt", b"la la")],
    );
    let s = servent(Role::Ultrapeer, &[], vec![dir], Some(false)).await;
    let addr = s.node().listen_addr();
    let index = |name: &str| {
        s.library()
            .read()
            .unwrap()
            .files()
            .iter()
            .find(|f| f.name == name)
            .unwrap()
            .index
            .0
    };
    let get = |path: String| format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    // A literal `+` is the name's own; `%2B` too; `+` for a space as some clients write it.
    let plus = index("c++ notes+.txt");
    for path in [
        format!("/get/{plus}/c++%20notes+.txt"),
        format!("/get/{plus}/c%2B%2B%20notes%2B.txt"),
    ] {
        let a = raw_http(addr, &get(path.clone())).await;
        assert!(
            a.starts_with("HTTP/1.1 200") && a.ends_with("plus plus"),
            "{path}: {a}"
        );
    }
    let song = index("my song.txt");
    let a = raw_http(addr, &get(format!("/get/{song}/my+song.txt"))).await;
    assert!(a.starts_with("HTTP/1.1 200") && a.ends_with("la la"), "{a}");
    // Other methods get a status, not a silent close.
    for (line, want) in [
        (
            format!("POST /get/{song}/my%20song.txt HTTP/1.1"),
            "HTTP/1.1 405",
        ),
        (
            "CONNECT example.com:443 HTTP/1.1".to_string(),
            "HTTP/1.1 405",
        ),
        (
            format!("get /get/{song}/my%20song.txt HTTP/1.1"),
            "HTTP/1.1 400",
        ),
    ] {
        let a = raw_http(
            addr,
            &format!("{line}\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(a.starts_with(want), "{line}: {a}");
        if want.ends_with("405") {
            assert!(a.to_lowercase().contains("allow: get, head"), "{a}");
        }
    }
    // A client that half-closes after its request still gets the answer.
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(get(format!("/get/{song}/my%20song.txt")).as_bytes())
        .await
        .unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = Vec::new();
    let _ = async_std::future::timeout(Duration::from_secs(2), c.read_to_end(&mut out)).await;
    let a = String::from_utf8_lossy(&out);
    assert!(a.starts_with("HTTP/1.1 200") && a.ends_with("la la"), "{a}");
}

#[async_std::test]
async fn requests_cannot_leave_the_share_and_ranges_behave() {
    let secret = temp_dir("secret");
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(secret.join("passwords.txt"), b"TOP-SECRET-CONTENT").unwrap();
    let dir = share_dir("share5", &[("public.txt", b"0123456789")]);
    let s = servent(Role::Ultrapeer, &[], vec![dir.clone()], Some(false)).await;
    let addr = s.node().listen_addr();
    let idx = s.library().read().unwrap().files()[0].index.0;
    let secret_path = secret.join("passwords.txt");
    let attempts = [
        format!("/get/{idx}/../../{}", secret_path.display()),
        format!("/get/{idx}/..%2F..%2Fsecret%2Fpasswords.txt"),
        format!("/get/{idx}/%2e%2e/%2e%2e/passwords.txt"),
        secret_path.display().to_string(),
        format!("/get/{idx}/passwords.txt"),
        format!("/get/{}/public.txt", idx + 1),
        format!("/uri-res/N2R?{}", Sha1Urn::digest(b"TOP-SECRET-CONTENT")),
        "/get/0/../../../../etc/passwd".to_string(),
    ];
    for a in &attempts {
        let resp = raw_http(
            addr,
            &format!("GET {a} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(
            resp.starts_with("HTTP/1.1 404") || resp.starts_with("HTTP/1.1 400"),
            "{a}: {resp}"
        );
        assert!(
            !resp.contains("TOP-SECRET") && !resp.contains("root:"),
            "{a} leaked: {resp}"
        );
    }
    let wrong = raw_http(
        addr,
        &format!("GET /get/{idx}/other.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(wrong.contains("File index/name mismatch"), "{wrong}");

    let ok = raw_http(addr, &format!("GET /get/{idx}/public.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=2-5\r\nConnection: close\r\n\r\n")).await;
    assert!(ok.starts_with("HTTP/1.1 206"), "{ok}");
    assert!(ok.contains("content-range: bytes 2-5/10"), "{ok}");
    assert!(
        ok.contains(&format!(
            "x-gnutella-content-urn: {}",
            Sha1Urn::digest(b"0123456789")
        )),
        "{ok}"
    );
    assert!(ok.ends_with("2345"), "{ok}");
    // Raw spaces, as legacy servents send them, and a whole-file answer.
    let spaced = share_dir("share6", &[("my song.txt", b"la la")]);
    let s2 = servent(Role::Ultrapeer, &[], vec![spaced], Some(false)).await;
    let i2 = s2.library().read().unwrap().files()[0].index.0;
    let r = raw_http(
        s2.node().listen_addr(),
        &format!("GET /get/{i2}/my song.txt HTTP/1.0\r\n\r\n"),
    )
    .await;
    assert!(r.starts_with("HTTP/1.0 200") && r.ends_with("la la"), "{r}");
    let past = raw_http(addr, &format!("GET /get/{idx}/public.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=10-\r\nConnection: close\r\n\r\n")).await;
    assert!(
        past.starts_with("HTTP/1.1 416") && past.contains("content-range: bytes */10"),
        "{past}"
    );
    let head = raw_http(
        addr,
        &format!(
            "HEAD /uri-res/N2R?{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Sha1Urn::digest(b"0123456789")
        ),
    )
    .await;
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("content-length: 10"),
        "{head}"
    );
    assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head}");
}

#[async_std::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let dir = share_dir("share7", &[("a.txt", b"AAAA"), ("b.txt", b"BBBB")]);
    let s = servent(Role::Ultrapeer, &[], vec![dir], Some(false)).await;
    let lib = s.library();
    let (ia, ib) = {
        let l = lib.read().unwrap();
        let f = l.files();
        let a = f.iter().find(|f| f.name == "a.txt").unwrap().index.0;
        let b = f.iter().find(|f| f.name == "b.txt").unwrap().index.0;
        (a, b)
    };
    let req = format!(
        "GET /get/{ia}/a.txt HTTP/1.1\r\nHost: x\r\n\r\nGET /get/{ib}/b.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let resp = raw_http(s.node().listen_addr(), &req).await;
    assert_eq!(resp.matches("HTTP/1.1 200").count(), 2, "{resp}");
    assert!(resp.contains("AAAA") && resp.ends_with("BBBB"), "{resp}");
}

#[async_std::test]
async fn a_leaf_learns_it_is_reachable_when_its_ultrapeer_connects_back() {
    let up = servent(Role::Ultrapeer, &[], vec![], None).await;
    let leaf = servent(Role::Leaf, &[up.node().listen_addr()], vec![], None).await;
    linked(&leaf, 1).await;
    // The leaf asked (BEAR/7); the ultrapeer's "\n\n" connection is the proof.
    for _ in 0..150 {
        if !leaf.firewalled() {
            return;
        }
        async_std::task::sleep(Duration::from_millis(20)).await;
    }
    panic!("the leaf still thinks it is firewalled");
}

#[async_std::test]
async fn an_interrupted_download_resumes_from_its_saved_state() {
    let data = bytes(6, 8 * 1024 * 1024);
    let up = servent(
        Role::Ultrapeer,
        &[],
        vec![share_dir("resume", &[("long.mkv", &data)])],
        Some(false),
    )
    .await;
    let idx = up.library().read().unwrap().files()[0].index;
    let spec = Spec {
        urn: Sha1Urn::digest(&data),
        size: data.len() as u64,
        name: "long.mkv".into(),
        sources: vec![Source {
            addr: up.node().listen_addr(),
            index: idx,
            name: "long.mkv".into(),
            servent: up.node().servent(),
            push: false,
            proxies: Vec::new(),
        }],
        tth: None,
    };
    let out = temp_dir("dl-resume");
    // First run: stopped once at least 1 MiB is on disk, as a crash or Ctrl-C would.
    {
        let getter = servent(Role::Leaf, &[], vec![], Some(false)).await;
        let progress = Progress::default();
        let dl = getter.download(spec.clone(), &out, &progress);
        let stop = async {
            while progress.done.load(std::sync::atomic::Ordering::Relaxed) < 1 << 20 {
                async_std::task::sleep(Duration::from_millis(1)).await;
            }
            // Let the chunk in flight settle into the saved state.
            async_std::task::sleep(Duration::from_millis(50)).await;
            None
        };
        let r = futures_lite::future::or(async { Some(dl.await) }, stop).await;
        assert!(
            r.is_none(),
            "the download finished before it could be interrupted"
        );
        getter.shutdown().await;
    }
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with(".servent-state")),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n == "long.mkv"),
        "not finished yet: {names:?}"
    );
    // Second run, a new servent: it starts from what is already there.
    let getter = servent(Role::Leaf, &[], vec![], Some(false)).await;
    let progress = Progress::default();
    let started_with = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let watch = {
        let started_with = started_with.clone();
        let p = &progress;
        async move {
            loop {
                if p.total.load(std::sync::atomic::Ordering::Relaxed) > 0 {
                    started_with.store(
                        p.done.load(std::sync::atomic::Ordering::Relaxed),
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    break;
                }
                async_std::task::sleep(Duration::from_millis(1)).await;
            }
            std::future::pending::<()>().await
        }
    };
    let path = futures_lite::future::or(getter.download(spec, &out, &progress), async {
        watch.await;
        unreachable!()
    })
    .await
    .unwrap();
    assert_eq!(sha1_of(&path), Sha1Urn::digest(&data));
    let resumed_at = started_with.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        resumed_at >= 256 * 1024 && resumed_at < data.len() as u64,
        "resumed at {resumed_at}"
    );
}

/// A source that has only `[0, have)` of `data`, like a servent sharing a file it is still
/// downloading: other ranges get 416 with X-Available-Ranges. Counts the bytes it served.
async fn partial_source(
    data: Vec<u8>,
    have: u64,
) -> (SocketAddrV4, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let served = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (l, addr) = listen().await;
    let counter = served.clone();
    async_std::task::spawn(async move {
        let data = std::sync::Arc::new(data);
        while let Ok((mut s, _)) = l.accept().await {
            let (data, counter) = (data.clone(), counter.clone());
            async_std::task::spawn(async move {
                let mut buf = vec![0u8; 8192];
                loop {
                    let Some(Some((a, b))) = read_range(&mut s, &mut buf).await else {
                        return;
                    };
                    let avail = format!("X-Available-Ranges: bytes 0-{}\r\n", have - 1);
                    let ok = if b < have {
                        let body = &data[a as usize..=b as usize];
                        counter.fetch_add(body.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        let head = format!(
                            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {a}-{b}/{}\r\n{avail}\r\n",
                            body.len(),
                            data.len()
                        );
                        s.write_all(head.as_bytes()).await.is_ok()
                            && s.write_all(body).await.is_ok()
                    } else {
                        let head = format!(
                            "HTTP/1.1 416 Requested Range Not Satisfiable\r\nContent-Length: 0\r\nContent-Range: bytes */{}\r\n{avail}\r\n",
                            data.len()
                        );
                        s.write_all(head.as_bytes()).await.is_ok()
                    };
                    if !ok {
                        return;
                    }
                }
            });
        }
    });
    (addr, served)
}

#[async_std::test]
async fn a_partial_source_is_asked_only_for_the_ranges_it_has() {
    let data = bytes(7, 4 * 1024 * 1024);
    let half = data.len() as u64 / 2;
    let full = servent(
        Role::Ultrapeer,
        &[],
        vec![share_dir("full", &[("album.zip", &data)])],
        Some(false),
    )
    .await;
    let (partial, served) = partial_source(data.clone(), half).await;
    let getter = servent(Role::Leaf, &[], vec![], Some(false)).await;
    let idx = full.library().read().unwrap().files()[0].index;
    let spec = Spec {
        urn: Sha1Urn::digest(&data),
        size: data.len() as u64,
        name: "album.zip".into(),
        sources: vec![
            Source {
                addr: partial,
                index: FileIndex(1),
                name: "album.zip".into(),
                servent: ServentId([3; 16]),
                push: false,
                proxies: Vec::new(),
            },
            Source {
                addr: full.node().listen_addr(),
                index: idx,
                name: "album.zip".into(),
                servent: full.node().servent(),
                push: false,
                proxies: Vec::new(),
            },
        ],
        tth: None,
    };
    let progress = Progress::default();
    let path = getter
        .download(spec, &temp_dir("dl-partial"), &progress)
        .await
        .unwrap();
    assert_eq!(sha1_of(&path), Sha1Urn::digest(&data));
    let from_partial = served.load(std::sync::atomic::Ordering::Relaxed);
    assert!(from_partial > 0, "the partial source was used");
    assert!(
        from_partial <= half,
        "served {from_partial} of its {half} bytes"
    );
    assert_eq!(
        progress
            .bad_sources
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[async_std::test]
async fn when_every_upload_slot_is_taken_a_request_waits_its_turn_or_gets_503_with_retry_after() {
    let data = bytes(8, 16 * 1024 * 1024);
    let dir = share_dir("slots", &[("movie.mkv", &data)]);
    let mut n = NodeConfig::new("127.0.0.1:0".parse().unwrap(), temp_dir("slots-node"));
    n.role = Role::Ultrapeer;
    let mut cfg = ServentConfig::new(n);
    cfg.shares = vec![dir];
    cfg.upload_slots = 1;
    cfg.firewalled = Some(false);
    // First come, first served: the turns as gtk-gnutella gives them.
    cfg.upload_policy = servent::swarm::queue::Policy::Fifo;
    let s = Servent::start(cfg).await.unwrap();
    let addr = s.node().listen_addr();
    let urn = Sha1Urn::digest(&data);
    // A slow client: asks for the whole file and reads only its first bytes.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(format!("GET /uri-res/N2R?{urn} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut first = [0u8; 64];
    slow.read_exact(&mut first).await.unwrap();
    assert!(first.starts_with(b"HTTP/1.1 200"));
    assert_eq!(s.uploads().slots.in_use(), 1);
    // The next request waits in the queue for the slot, and is told to come back when the
    // slot has not freed within the hold.
    let busy = raw_http_for(
        addr,
        &format!("GET /uri-res/N2R?{urn} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        servent::transfer::slots::HOLD * 3,
    )
    .await;
    let busy = String::from_utf8_lossy(&busy);
    assert!(busy.starts_with("HTTP/1.1 503"), "{busy}");
    assert!(busy.contains("retry-after: 1"), "{busy}");
    assert_eq!(s.uploads().slots.waiting(), 0);
    // A request queued when the slot frees gets it at once: it is served, not refused.
    let ranged = format!(
        "GET /uri-res/N2R?{urn} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\nConnection: close\r\n\r\n"
    );
    let queued = async_std::task::spawn(async move {
        raw_http_for(addr, &ranged, servent::transfer::slots::HOLD * 3).await
    });
    for _ in 0..100 {
        if s.uploads().slots.waiting() == 1 {
            break;
        }
        async_std::task::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.uploads().slots.waiting(), 1);
    drop(slow);
    let served = queued.await;
    assert!(
        served.starts_with(b"HTTP/1.1 206"),
        "{}",
        String::from_utf8_lossy(&served)
    );
    assert!(served.ends_with(&data[..10]));
    for _ in 0..100 {
        if s.uploads().slots.in_use() == 0 {
            break;
        }
        async_std::task::sleep(Duration::from_millis(20)).await;
    }
    let again = raw_http(
        addr,
        &format!("HEAD /uri-res/N2R?{urn} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
    assert_eq!(s.uploads().slots.in_use(), 0);
}

#[async_std::test]
async fn files_added_to_a_share_are_found_after_the_periodic_rescan() {
    let up = servent(Role::Ultrapeer, &[], vec![], None).await;
    let dir = share_dir("rescan", &[("first.txt", b"one")]);
    let mut n = NodeConfig::new("127.0.0.1:0".parse().unwrap(), temp_dir("rescan-node"));
    n.peers = vec![up.node().listen_addr()];
    n.want_ultrapeers = Some(1);
    n.accept_private = true;
    let mut cfg = ServentConfig::new(n);
    cfg.shares = vec![dir.clone()];
    cfg.firewalled = Some(false);
    cfg.rescan_every = Some(Duration::from_millis(200));
    let leaf = Servent::start(cfg).await.unwrap();
    let getter = servent(Role::Leaf, &[up.node().listen_addr()], vec![], Some(false)).await;
    linked(&leaf, 1).await;
    linked(&getter, 1).await;
    wait_tables(up.node(), 1).await;
    assert!(find(&getter, "second", 1).await.is_empty());
    std::fs::write(dir.join("second song.ogg"), b"two").unwrap();
    std::fs::remove_file(dir.join("first.txt")).unwrap();
    // The rescan sees both changes and the new table reaches the ultrapeer.
    let mut found = Vec::new();
    for _ in 0..20 {
        found = find(&getter, "second song", 1).await;
        if !found.is_empty() {
            break;
        }
    }
    assert_eq!(found.len(), 1, "the new file is found");
    assert_eq!(found[0].urn, Sha1Urn::digest(b"two"));
    assert!(
        find(&getter, "first", 1).await.is_empty(),
        "the removed file is not"
    );
}

/// gtk-gnutella 1.2.3 reads only the first 4 KiB of a THEX reply: it is served a tree cut to
/// fit, anyone else the whole tree.
#[async_std::test]
async fn gtk_gnutella_is_served_a_tree_that_fits_its_first_read() {
    let data = bytes(61, 16 << 20);
    let up = servent(
        Role::Ultrapeer,
        &[],
        vec![share_dir("thex-gtkg", &[("disc.iso", &data)])],
        Some(false),
    )
    .await;
    let addr = up.node().listen_addr();
    let urn = Sha1Urn::digest(&data);
    let root = servent::thex::HashTree::of(&data).root();
    let tree_for = |agent: &'static str| async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET /uri-res/N2X?{urn} HTTP/1.1\r\nHost: x\r\nUser-Agent: {agent}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.unwrap();
        assert!(all.starts_with(b"HTTP/1.1 200"), "{agent}");
        let at = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        all.split_off(at)
    };
    let body = tree_for("gtk-gnutella/1.2.3 (2024-03-03; Topless; Linux x86_64)").await;
    assert!(
        body.len() <= servent::transfer::upload::GTKG_THEX_READ,
        "{}",
        body.len()
    );
    let cut = servent::thex::parse_thex(&body, data.len() as u64, &root).expect("a good tree");
    let full_body = tree_for("servent/0.1.0").await;
    let full = servent::thex::parse_thex(&full_body, data.len() as u64, &root).unwrap();
    assert_eq!(full.depth(), servent::thex::good_depth(data.len() as u64));
    assert!(full_body.len() > servent::transfer::upload::GTKG_THEX_READ);
    assert!(cut.depth() < full.depth());
    assert_eq!(cut, full.truncated(cut.depth()));
}

/// A push-proxy request to `up` (SWARM.md §5.3): the status line of its answer.
async fn push_proxy_request(
    up: SocketAddrV4,
    path_query: &str,
    x_node: Option<SocketAddrV4>,
) -> String {
    let node = x_node.map_or(String::new(), |a| format!("X-Node: {a}\r\n"));
    let req = format!("GET {path_query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{node}\r\n");
    let answer = raw_http(up, &req).await;
    answer.lines().next().unwrap_or("").to_string()
}

#[async_std::test]
async fn an_ultrapeer_is_push_proxy_for_its_firewalled_leaf() {
    let up = servent(Role::Ultrapeer, &[], vec![], Some(false)).await;
    let at = up.node().listen_addr();
    let dir = share_dir("proxied", &[("behind the wall.txt", b"pushed to you")]);
    let leaf = servent(Role::Leaf, &[at], vec![dir], Some(true)).await;
    wait_links(leaf.node(), 1).await;
    let guid = leaf.node().servent();
    // The leaf asked its ultrapeer to be its push proxy (LIME/21) and it agreed (LIME/22).
    let mut proxies = Vec::new();
    for _ in 0..100 {
        proxies = leaf.node().push_proxies();
        if !proxies.is_empty() {
            break;
        }
        async_std::task::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(proxies, vec![up.node().advertised_addr()]);
    // Every answer of the firewalled leaf says how to push to it, errors too; the reachable
    // ultrapeer's do not.
    let get = "GET /get/99/none HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let a = raw_http(leaf.node().listen_addr(), get)
        .await
        .to_lowercase();
    let me = leaf.node().advertised_addr();
    let info = format!(
        "x-fw-node-info: {}; {}:{}",
        guid.to_hex(),
        me.port(),
        me.ip()
    );
    assert!(a.starts_with("http/1.1 404") && a.contains(&info), "{a}");
    assert!(
        a.contains(&format!("x-push-proxies: {}", proxies[0])),
        "{a}"
    );
    let a = raw_http(at, get).await.to_lowercase();
    assert!(
        !a.contains("x-fw-node-info") && !a.contains("x-push-proxies"),
        "{a}"
    );
    // The downloader listens where the leaf is to connect back.
    let me = async_std::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap();
    let back = match me.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        _ => unreachable!(),
    };
    let b32 = data_encoding::BASE32_NOPAD.encode(&guid.0);
    let line = push_proxy_request(
        at,
        &format!("/gnutella/push-proxy?ServerId={b32}"),
        Some(back),
    )
    .await;
    assert_eq!(line, "HTTP/1.1 202 Push-proxy: message sent to node");
    let (mut giv, _) = async_std::future::timeout(Duration::from_secs(5), me.accept())
        .await
        .expect("the leaf connects back")
        .unwrap();
    let mut got = [0u8; 64];
    let n = async_std::future::timeout(Duration::from_secs(5), giv.read(&mut got))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&got[..n]);
    assert!(
        text.starts_with(&format!("GIV 0:{}/", guid.to_hex())),
        "{text}"
    );

    // gtk-gnutella's other form, by hex; a servent nobody routes to; no X-Node.
    let line = push_proxy_request(
        at,
        &format!("/gnet/push-proxy?guid={}", guid.to_hex()),
        Some(back),
    )
    .await;
    assert!(line.starts_with("HTTP/1.1 202"), "{line}");
    let stranger = servent::wire::ServentId([7; 16]);
    let line = push_proxy_request(
        at,
        &format!("/gnet/push-proxy?guid={}", stranger.to_hex()),
        Some(back),
    )
    .await;
    assert!(
        line.starts_with("HTTP/1.1 410 Push proxy: no route"),
        "{line}"
    );
    let line = push_proxy_request(at, &format!("/gnutella/push-proxy?ServerId={b32}"), None).await;
    assert!(
        line.starts_with("HTTP/1.1 400 Malformed push-proxy request"),
        "{line}"
    );

    // A downloader linked to nobody (no overlay path at all) gets the file through the push
    // proxy its hit named.
    let getter = servent(Role::Leaf, &[], vec![], Some(false)).await;
    let f = leaf.library().read().unwrap().files()[0].clone();
    let spec = Spec {
        urn: f.sha1,
        size: f.size,
        name: f.name.clone(),
        sources: vec![Source {
            addr: leaf.node().advertised_addr(),
            index: f.index,
            name: f.name.clone(),
            servent: guid,
            push: true,
            proxies: proxies.clone(),
        }],
        tth: None,
    };
    let out = temp_dir("proxied-out");
    std::fs::create_dir_all(&out).unwrap();
    let path = async_std::future::timeout(
        Duration::from_secs(20),
        getter.download(spec, &out, &Progress::default()),
    )
    .await
    .expect("in time")
    .expect("downloaded through the push proxy");
    assert_eq!(std::fs::read(path).unwrap(), b"pushed to you");
}
