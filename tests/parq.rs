//! The upload queue over real sockets: PARQ's `X-Queued` as gtk-gnutella reads it, places kept
//! by ID, turns in arrival order under fifo, and the `QUEUE` callback to a downloader that
//! went away.

mod common;

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_std::net::{TcpListener, TcpStream};
use common::*;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use servent::handshake::Role;
use servent::net::NodeConfig;
use servent::servent::{Servent, ServentConfig};
use servent::swarm::parq::{QueueId, Queued};
use servent::swarm::queue::Policy;
use servent::wire::Sha1Urn;

const SIZE: usize = 16 * 1024 * 1024;

async fn uploader(tag: &str, policy: Policy, data: &[u8]) -> Servent {
    let dir = temp_dir(&format!("{tag}-share"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("movie.mkv"), data).unwrap();
    let mut n = NodeConfig::new("127.0.0.1:0".parse().unwrap(), temp_dir(tag));
    n.role = Role::Ultrapeer;
    let mut cfg = ServentConfig::new(n);
    cfg.shares = vec![dir];
    cfg.upload_slots = 1;
    cfg.firewalled = Some(false);
    cfg.upload_policy = policy;
    Servent::start(cfg).await.unwrap()
}

/// A client that takes the only slot and holds it: asks for the whole file, reads a little.
async fn hold_slot(addr: SocketAddrV4, urn: &Sha1Urn) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET /uri-res/N2R?{urn} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut first = [0u8; 64];
    s.read_exact(&mut first).await.unwrap();
    assert!(first.starts_with(b"HTTP/1.1 200"));
    s
}

/// The head of an answer, read to its blank line.
async fn head(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while !out.ends_with(b"\r\n\r\n") {
        match async_std::future::timeout(Duration::from_secs(5), s.read(&mut b)).await {
            Ok(Ok(1)) => out.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// One request on a new connection; the answer's head.
async fn ask(addr: SocketAddrV4, urn: &Sha1Urn, extra: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /uri-res/N2R?{urn} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n{extra}Connection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    head(&mut s).await
}

fn queued(head: &str) -> Queued {
    Queued::parse(header(head, "X-Queued").unwrap_or_else(|| panic!("no X-Queued: {head}")))
        .unwrap()
}

#[async_std::test]
async fn a_queued_downloader_is_told_its_place_as_gtk_gnutella_reads_it_and_keeps_it() {
    let data = servent::cli::demo::sample(21, SIZE);
    // First come, first served: the places are the arrival order (under tit-for-tat a round
    // may unchoke one of those waiting).
    let up = uploader("parq-place", Policy::Fifo, &data).await;
    let addr = up.node().listen_addr();
    let urn = Sha1Urn::digest(&data);
    let _holder = hold_slot(addr, &urn).await;
    let b = ask(addr, &urn, "X-Queue: 1.1\r\nX-Node: 127.0.0.1:40001\r\n").await;
    assert!(b.starts_with("HTTP/1.1 503 Queued (slot 1, ETA: "), "{b}");
    let qb = queued(&b);
    let retry: u32 = header(&b, "Retry-After").unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry), "{b}");
    assert_eq!((qb.position, qb.length), (Some(1), Some(1)), "{b}");
    assert_eq!(qb.lifetime, Some(retry + 60), "{b}");
    // gtk-gnutella's form: ID first, 32 lowercase hex digits, `; ` between fields.
    let raw = header(&b, "X-Queued").unwrap();
    let id = qb.id.expect("an ID");
    assert!(
        raw.starts_with(&format!("ID={id}; position=1; lifetime=")),
        "{raw}"
    );
    assert_eq!(id.to_string(), id.to_string().to_lowercase());
    // A second one stands behind it.
    let c = ask(addr, &urn, "X-Queue: 1.1\r\nX-Node: 127.0.0.1:40002\r\n").await;
    let qc = queued(&c);
    assert_eq!((qc.position, qc.length), (Some(2), Some(2)), "{c}");
    assert_ne!(qc.id, qb.id);
    // The first comes back naming its ID as gtk-gnutella does (position first): its place.
    let again = ask(
        addr,
        &urn,
        &format!("X-Queue: 1.1\r\nX-Queued: position=1; ID={id}\r\nX-Node: 127.0.0.1:40001\r\n"),
    )
    .await;
    let qa = queued(&again);
    assert_eq!((qa.id, qa.position), (Some(id), Some(1)), "{again}");
    // Queued answers have no body (gtk-gnutella reads none and asks again on the same
    // connection): two requests on one connection, two clean answers.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /uri-res/N2R?{urn} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\nX-Queue: 1.1\r\nX-Node: 127.0.0.1:40003\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let first = head(&mut s).await;
    assert_eq!(header(&first, "Content-Length"), Some("0"), "{first}");
    assert_eq!(header(&first, "X-Features"), Some("queue/1.1"), "{first}");
    s.write_all(req.as_bytes()).await.unwrap();
    let second = head(&mut s).await;
    assert!(second.starts_with("HTTP/1.1 503 Queued"), "{second}");
    assert!(header(&second, "X-Features").is_none(), "{second}");
    // A client that speaks no PARQ is told when to come back, no more.
    let legacy = ask(addr, &urn, "").await;
    assert!(legacy.starts_with("HTTP/1.1 503"), "{legacy}");
    assert!(header(&legacy, "Retry-After").is_some());
    assert!(header(&legacy, "X-Queued").is_none(), "{legacy}");
}

#[async_std::test]
async fn under_fifo_the_first_in_line_gets_the_freed_slot_and_a_later_one_waits() {
    let data = servent::cli::demo::sample(22, SIZE);
    let up = uploader("parq-fifo", Policy::Fifo, &data).await;
    let addr = up.node().listen_addr();
    let urn = Sha1Urn::digest(&data);
    let holder = hold_slot(addr, &urn).await;
    let b = ask(addr, &urn, "X-Queue: 1.1\r\nX-Node: 127.0.0.1:40011\r\n").await;
    let c = ask(addr, &urn, "X-Queue: 1.1\r\nX-Node: 127.0.0.1:40012\r\n").await;
    let (qb, qc) = (queued(&b), queued(&c));
    assert_eq!((qb.position, qc.position), (Some(1), Some(2)));
    drop(holder);
    while up.uploads().slots.in_use() > 0 {
        async_std::task::sleep(Duration::from_millis(20)).await;
    }
    // C asks first: the free slot is B's, so C waits its hold out and is told it is second.
    let c = ask(
        addr,
        &urn,
        &format!(
            "X-Queued: ID={}\r\nX-Node: 127.0.0.1:40012\r\n",
            qc.id.unwrap()
        ),
    )
    .await;
    assert_eq!(queued(&c).position, Some(2), "{c}");
    let b = ask(
        addr,
        &urn,
        &format!(
            "X-Queued: ID={}\r\nX-Node: 127.0.0.1:40011\r\n",
            qb.id.unwrap()
        ),
    )
    .await;
    assert!(b.starts_with("HTTP/1.1 206"), "{b}");
    // Served, it is told its ID, so that it keeps its entry across connections.
    assert_eq!(queued(&b).id, qb.id, "{b}");
}

#[async_std::test]
async fn a_downloader_that_went_away_is_called_back_with_queue_and_served_on_that_connection() {
    let data = servent::cli::demo::sample(23, SIZE);
    let up = uploader("parq-callback", Policy::Fifo, &data).await;
    let addr = up.node().listen_addr();
    let urn = Sha1Urn::digest(&data);
    let holder = hold_slot(addr, &urn).await;
    // Those near the front of the line ask again every second; they stop asking (they went
    // elsewhere).
    let near = servent::swarm::queue::NEAR;
    let asks: Vec<_> = (0..near)
        .map(|i| {
            async_std::task::spawn(async move {
                let extra = format!("X-Queue: 1.1\r\nX-Node: 127.0.0.1:{}\r\n", 41000 + i);
                ask(addr, &urn, &extra).await
            })
        })
        .collect();
    while servent::transfer::turns::lock(&up.uploads().queue)
        .parq()
        .len()
        < near + 1
    {
        async_std::task::sleep(Duration::from_millis(10)).await;
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let me = match listener.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        _ => unreachable!(),
    };
    let b = ask(addr, &urn, &format!("X-Queue: 1.1\r\nX-Node: {me}\r\n")).await;
    for a in asks {
        assert!(a.await.starts_with("HTTP/1.1 503"));
    }
    let qb = queued(&b);
    // Deep in the line: told to come back later, and called back when its turn comes first.
    assert_eq!(qb.position, Some(near as u32 + 1), "{b}");
    let retry: u64 = header(&b, "Retry-After").unwrap().parse().unwrap();
    assert_eq!(retry, servent::swarm::queue::DEEP_RETRY.as_secs(), "{b}");
    // It went away (its connection is closed); the slot frees.
    let freed = Instant::now();
    drop(holder);
    let (mut s, _) = async_std::future::timeout(Duration::from_secs(retry), listener.accept())
        .await
        .expect("a QUEUE callback before its retry")
        .unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") && line.len() < 200 {
        s.read_exact(&mut byte).await.unwrap();
        line.push(byte[0]);
    }
    let line = String::from_utf8(line).unwrap();
    let id: QueueId = qb.id.unwrap();
    assert_eq!(
        line,
        format!("QUEUE {id} {}\r\n", up.node().advertised_addr())
    );
    assert!(freed.elapsed() < Duration::from_secs(retry));
    // Its request on that connection is served.
    s.write_all(
        format!(
            "GET /uri-res/N2R?{urn} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\nX-Queue: 1.1\r\nX-Queued: position=1; ID={id}\r\nX-Node: {me}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let h = head(&mut s).await;
    assert!(h.starts_with("HTTP/1.1 206"), "{h}");
    let mut body = [0u8; 10];
    s.read_exact(&mut body).await.unwrap();
    assert_eq!(&body, &data[..10]);
}

#[async_std::test]
async fn a_servent_queued_by_another_keeps_its_id_and_is_served_when_its_turn_comes() {
    let data = servent::cli::demo::sample(24, SIZE);
    let up = uploader("parq-dl-up", Policy::TitForTat, &data).await;
    let addr = up.node().listen_addr();
    let urn = Sha1Urn::digest(&data);
    let holder = hold_slot(addr, &urn).await;
    let mut n = NodeConfig::new("127.0.0.1:0".parse().unwrap(), temp_dir("parq-dl"));
    n.accept_private = true;
    let mut cfg = ServentConfig::new(n);
    cfg.firewalled = Some(false);
    let down = Servent::start(cfg).await.unwrap();
    let spec = servent::transfer::download::Spec {
        urn,
        size: data.len() as u64,
        name: "movie.mkv".into(),
        sources: vec![servent::transfer::download::Source {
            addr,
            index: servent::wire::FileIndex(0),
            name: "movie.mkv".into(),
            servent: servent::wire::ServentId([0; 16]),
            push: false,
            proxies: Vec::new(),
        }],
        tth: None,
    };
    let dir: PathBuf = temp_dir("parq-dl-files");
    let progress = servent::transfer::download::Progress::default();
    let (d, _) = futures_lite::future::zip(down.download(spec, &dir, &progress), async {
        // Queued: one entry for it, whatever number of requests it makes while it waits.
        async_std::task::sleep(Duration::from_secs(3)).await;
        let entries = servent::transfer::turns::lock(&up.uploads().queue)
            .parq()
            .len();
        assert_eq!(entries, 2, "the holder and the downloader, once each");
        assert_eq!(progress.done.load(std::sync::atomic::Ordering::Relaxed), 0);
        drop(holder);
    })
    .await;
    let path = d.expect("the download ends once its turn came");
    assert_eq!(std::fs::read(path).unwrap(), data);
}
