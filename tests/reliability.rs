//! No one peer shuts the door: slow handshakes and silent request heads from a few loopback
//! addresses, while a normal peer connects, and downloads, from another.

mod common;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use async_std::net::TcpStream;
use common::*;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use servent::handshake::Role;
use servent::net::NodeConfig;
use servent::servent::{Servent, ServentConfig};
use servent::wire::Sha1Urn;

/// A connection to `to` from the loopback address `from` (any port).
fn connect_from(from: Ipv4Addr, to: SocketAddrV4) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::from((from, 0)).into())?;
    s.connect(&SocketAddr::V4(to).into())?;
    Ok(TcpStream::from(std::net::TcpStream::from(s)))
}

async fn servent_sharing(tag: &str, data: &[u8]) -> Servent {
    let dir = temp_dir(&format!("{tag}-share"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("song.ogg"), data).unwrap();
    let mut n = NodeConfig::new("127.0.0.1:0".parse().unwrap(), temp_dir(tag));
    n.role = Role::Ultrapeer;
    let mut cfg = ServentConfig::new(n);
    cfg.shares = vec![dir];
    cfg.firewalled = Some(false);
    Servent::start(cfg).await.unwrap()
}

/// Whether the server closes `s` within `wait` (EOF or reset), reading whatever it sends.
async fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let mut b = [0u8; 512];
    let end = Instant::now() + wait;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match async_std::future::timeout(left, s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// A whole download of `urn` from `addr`, from 127.0.0.1; the body.
async fn download(addr: SocketAddrV4, urn: &Sha1Urn) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /uri-res/N2R?{urn} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).await.unwrap();
    let at = memchr::memmem::find(&all, b"\r\n\r\n").expect("a head") + 4;
    assert!(all.starts_with(b"HTTP/1.1 200"), "{:?}", &all[..at]);
    all.split_off(at)
}

#[async_std::test]
async fn slow_handshakes_and_silent_heads_from_a_few_addresses_leave_the_door_open() {
    let data = servent::cli::demo::sample(41, 256 * 1024);
    let urn = Sha1Urn::digest(&data);
    let up = servent_sharing("rel-door", &data).await;
    let addr = up.node().listen_addr();
    if connect_from(Ipv4Addr::new(127, 0, 1, 2), addr).is_err() {
        eprintln!("skipped: 127.0.0.2 cannot be bound here");
        return;
    }
    // 200 connections that never say a word, from one address, and 300 that send `GET ` and
    // nothing more, from three others. Before the door had per-address shares, 64 silent
    // sockets from anyone shut out every newcomer.
    let mut silent = Vec::new();
    for _ in 0..200 {
        if let Ok(s) = connect_from(Ipv4Addr::new(127, 0, 1, 2), addr) {
            silent.push(s);
        }
    }
    let mut heads = Vec::new();
    for i in 0..300u32 {
        let from = Ipv4Addr::new(127, 0, 2, 3 + (i % 3) as u8);
        if let Ok(mut s) = connect_from(from, addr) {
            let _ = s.write_all(b"GET ").await;
            heads.push(s);
        }
    }
    assert!(
        silent.len() >= 150 && heads.len() >= 250,
        "could not open the sockets"
    );
    // A normal peer from 127.0.0.1 links and downloads, each within 5 s.
    let t = Instant::now();
    let peer = async_std::future::timeout(
        Duration::from_secs(5),
        Peer::connect(addr, Role::Leaf, false),
    )
    .await
    .expect("a leaf's handshake within 5 s");
    drop(peer);
    let got = async_std::future::timeout(Duration::from_secs(5), download(addr, &urn))
        .await
        .expect("a download within 5 s");
    assert_eq!(got, data);
    eprintln!("leaf linked and download done in {:?}", t.elapsed());
    // Every silent head is closed: at once (its address holds its share) or at its deadline.
    let mut open = 0;
    for s in heads.iter_mut() {
        if !closed_within(s, Duration::from_secs(12)).await {
            open += 1;
        }
    }
    assert_eq!(open, 0, "request heads that never end are held");
    for s in silent.iter_mut().take(20) {
        assert!(closed_within(s, Duration::from_secs(2)).await);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One request to the API with the token; status and body.
fn api(port: u16, token: &str, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let code = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((code, body))
}

/// Kills the child however the test ends.
struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[async_std::test]
async fn with_few_file_descriptors_a_connection_flood_leaves_the_shares_and_the_api_intact() {
    if connect_from(Ipv4Addr::new(127, 0, 1, 2), "127.0.0.1:9".parse().unwrap())
        .is_err_and(|e| e.kind() == std::io::ErrorKind::AddrNotAvailable)
    {
        eprintln!("skipped: other loopback addresses cannot be bound here");
        return;
    }
    let root = temp_dir("rel-fds");
    let share = root.join("share");
    let data = root.join("data");
    std::fs::create_dir_all(&share).unwrap();
    for i in 0..3u8 {
        let body = servent::cli::demo::sample(50 + u64::from(i), 4 << 20);
        std::fs::write(share.join(format!("track{i}.flac")), body).unwrap();
    }
    let (port, api_port) = (free_port(), free_port());
    let log = std::fs::File::create(root.join("stderr.log")).unwrap();
    // `ulimit -n` lowers both limits: the node cannot raise its own past 128.
    let cmd = format!(
        "ulimit -n 128 && exec {} run --listen 127.0.0.1:{port} --api 127.0.0.1:{api_port} \
         --data-dir {} --share {} --no-bootstrap --allow-private",
        env!("CARGO_BIN_EXE_servent"),
        data.display(),
        share.display()
    );
    let _child = Child(
        std::process::Command::new("sh")
            .args(["-c", &cmd])
            .env("RUST_LOG", "servent=info")
            .env("XDG_CONFIG_HOME", &root)
            .env("HOME", &root)
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let token_file = data.join("api-token");
    let mut token = String::new();
    for _ in 0..100 {
        if let Ok(t) = std::fs::read_to_string(&token_file)
            && api(api_port, t.trim(), "GET", "/api/shares").is_ok_and(|(c, _)| c == 200)
        {
            token = t.trim().to_string();
            break;
        }
        async_std::task::sleep(Duration::from_millis(100)).await;
    }
    assert!(!token.is_empty(), "the servent did not start");
    let shares = |body: &str| -> usize {
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        v["files"].as_array().map_or(0, |a| a.len())
    };
    let (_, body) = api(api_port, &token, "GET", "/api/shares").unwrap();
    assert_eq!(shares(&body), 3, "{body}");
    let urn = serde_json::from_str::<serde_json::Value>(&body).unwrap()["files"][0]["urn"]
        .as_str()
        .unwrap()
        .to_string();
    // 240 connections from 30 addresses in as many /24s, each asking about a file and then
    // keeping the connection open: more than the node has descriptors for.
    let to: SocketAddrV4 = format!("127.0.0.1:{port}").parse().unwrap();
    let mut flood = Vec::new();
    for i in 0..240u32 {
        let from = Ipv4Addr::new(127, 1 + (i % 30) as u8, 0, 7);
        if let Ok(mut s) = connect_from(from, to) {
            let req = format!("HEAD /uri-res/N2R?{urn} HTTP/1.1\r\nHost: x\r\n\r\n");
            let _ = s.write_all(req.as_bytes()).await;
            flood.push(s);
        }
    }
    async_std::task::sleep(Duration::from_secs(1)).await;
    // The API still answers, a rescan finds every file, and the shares are all there.
    let (code, _) = api(api_port, &token, "POST", "/api/shares/rescan").expect("the API answers");
    assert_eq!(code, 200);
    let (_, body) = api(api_port, &token, "GET", "/api/shares").expect("the API answers");
    assert_eq!(shares(&body), 3, "{body}");
    drop(flood);
    let log = std::fs::read_to_string(root.join("stderr.log")).unwrap();
    assert!(!log.contains("now 0 files"), "{log}");
    assert!(!log.contains("Too many open files"), "{log}");
}

/// A client that asks for the whole file on a 4 KiB receive buffer and reads a byte a second.
fn slow_reader(to: SocketAddrV4, urn: &Sha1Urn) -> std::net::TcpStream {
    use std::io::Write;
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&SocketAddr::V4(to).into()).unwrap();
    let mut s = std::net::TcpStream::from(s);
    write!(s, "GET /uri-res/N2R?{urn} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut r = s.try_clone().unwrap();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut b = [0u8; 1];
        while matches!(r.read(&mut b), Ok(1)) {
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    s
}

#[async_std::test]
async fn readers_that_take_a_byte_a_second_lose_their_slots_to_real_downloads() {
    let data = servent::cli::demo::sample(43, 16 << 20);
    let urn = Sha1Urn::digest(&data);
    let dir = temp_dir("rel-slow-share");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("album.zip"), &data).unwrap();
    let mut n = NodeConfig::new("127.0.0.1:0".parse().unwrap(), temp_dir("rel-slow"));
    n.role = Role::Ultrapeer;
    let mut cfg = ServentConfig::new(n);
    cfg.shares = vec![dir];
    cfg.firewalled = Some(false);
    cfg.upload_slots = 4;
    cfg.upload_stall_window = Duration::from_secs(3);
    let up = Servent::start(cfg).await.unwrap();
    let addr = up.node().listen_addr();
    let slow: Vec<_> = (0..4).map(|_| slow_reader(addr, &urn)).collect();
    async_std::task::sleep(Duration::from_millis(500)).await;
    // A real download of the first MiB, asking again while refused, gets served and whole.
    let t = Instant::now();
    let want = 1 << 20;
    let got = loop {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the slow readers kept every slot"
        );
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET /uri-res/N2R?{urn} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-{}\r\nConnection: close\r\n\r\n",
            want - 1
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut all = Vec::new();
        let _ = async_std::future::timeout(Duration::from_secs(10), s.read_to_end(&mut all)).await;
        if all.starts_with(b"HTTP/1.1 206") {
            let at = memchr::memmem::find(&all, b"\r\n\r\n").unwrap() + 4;
            break all.split_off(at);
        }
        async_std::task::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(got, data[..want]);
    eprintln!("served after {:?}", t.elapsed());
    // The slow readers were cut off: reading fast now, each meets the end of its connection
    // long before the file's.
    for s in slow {
        use std::io::Read;
        let mut s = s;
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut total = 0usize;
        let mut b = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut b) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("a slow reader's connection is still open: {e}"),
            }
        }
        assert!(total < data.len(), "a slow reader got the whole file");
    }
}

#[async_std::test]
async fn idle_sockets_do_not_shut_out_the_api_and_wrong_tokens_are_braked() {
    use hyper::Method;
    use servent::control::client::Client;
    use servent::control::{Control, ControlConfig};
    let s = servent_sharing("rel-api", b"x").await;
    let ctl = Control::start(
        s.clone(),
        ControlConfig {
            api: "127.0.0.1:0".parse().unwrap(),
            download_dir: temp_dir("rel-api-downloads"),
            token_file: None,
        },
    )
    .await
    .unwrap();
    let token = std::fs::read_to_string(s.data_dir().join("api-token")).unwrap();
    let good = Client::new(ctl.addr(), Some(token.trim().to_string()));
    let std::net::SocketAddr::V4(api) = ctl.addr() else {
        panic!("IPv4 API")
    };
    // 40 sockets that never send a request, from the same 127.0.0.1 as the user: the API used
    // to hold 32 of them for 30 s and close every newcomer meanwhile.
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(TcpStream::connect(api).await.unwrap());
    }
    async_std::task::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        let r = async_std::future::timeout(
            Duration::from_secs(3),
            good.send(Method::GET, "/api/status", None),
        )
        .await
        .expect("an answer within 3 s")
        .expect("the API answers");
        assert_eq!(r.status, 200);
    }
    drop(idle);
    // Wrong tokens: the first few answer at once, then each waits longer.
    let wrong = Client::new(ctl.addr(), Some("0".repeat(64)));
    let mut last = Duration::ZERO;
    for _ in 0..10 {
        let t = Instant::now();
        let r = wrong.send(Method::GET, "/api/status", None).await.unwrap();
        assert_eq!(r.status, 401);
        last = t.elapsed();
    }
    // The 10th is the 7th past the free ones: 7 × 250 ms.
    assert!(last >= Duration::from_millis(1500), "{last:?}");
    let r = good.send(Method::GET, "/api/status", None).await.unwrap();
    assert_eq!(r.status, 200);
}

/// The servent binary sharing `share` on `port`, with its upload limited: killed when dropped.
fn uploader_process(root: &std::path::Path, share: &std::path::Path, port: u16) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("uploader.log"))
        .unwrap();
    Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_servent"))
            .args([
                "run",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--api",
                "off",
            ])
            .arg("--data-dir")
            .arg(root.join("up-data"))
            .arg("--share")
            .arg(share)
            .args(["--no-bootstrap", "--allow-private", "--upload-limit", "1M"])
            .env("RUST_LOG", "servent=info")
            .env("XDG_CONFIG_HOME", root)
            .env("HOME", root)
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

#[async_std::test]
async fn a_download_waits_for_its_only_source_to_come_back_and_completes() {
    use servent::transfer::download::Progress;
    use std::sync::atomic::Ordering;
    let root = temp_dir("rel-restart");
    let share = root.join("share");
    std::fs::create_dir_all(&share).unwrap();
    let data = servent::cli::demo::sample(47, 6 << 20);
    let urn = Sha1Urn::digest(&data);
    std::fs::write(share.join("lecture.mp4"), &data).unwrap();
    let port = free_port();
    let mut up = uploader_process(&root, &share, port);
    // Wait until it serves.
    let to: SocketAddrV4 = format!("127.0.0.1:{port}").parse().unwrap();
    let mut ready = false;
    for _ in 0..100 {
        if TcpStream::connect(to).await.is_ok() {
            ready = true;
            break;
        }
        async_std::task::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the uploader did not start");
    let getter = {
        let n = NodeConfig::new("127.0.0.1:0".parse().unwrap(), root.join("get-data"));
        let mut cfg = ServentConfig::new(n);
        cfg.firewalled = Some(false);
        Servent::start(cfg).await.unwrap()
    };
    let link = format!(
        "magnet:?xt={urn}&dn=lecture.mp4&xl={}&xs=http://127.0.0.1:{port}/uri-res/N2R?{urn}",
        data.len()
    );
    let spec = servent::transfer::magnet::parse(&link)
        .unwrap()
        .spec()
        .unwrap();
    let progress = Progress::default();
    let out = root.join("got");
    let dl = getter.download(spec, &out, &progress);
    let churn = async {
        while progress.done.load(Ordering::Relaxed) < 1 << 20 {
            async_std::task::sleep(Duration::from_millis(20)).await;
        }
        // kill -9 mid-transfer; back 10 s later on the same port.
        let _ = up.0.kill();
        let _ = up.0.wait();
        let at_kill = progress.done.load(Ordering::Relaxed);
        async_std::task::sleep(Duration::from_secs(10)).await;
        up = uploader_process(&root, &share, port);
        at_kill
    };
    let (path, at_kill) = futures_lite::future::zip(
        async_std::future::timeout(Duration::from_secs(60), dl),
        churn,
    )
    .await;
    let path = path
        .expect("the download ended within 60 s")
        .expect("the download completed");
    assert!((at_kill as usize) < data.len(), "killed before the end");
    assert_eq!(std::fs::read(&path).unwrap(), data);
}
