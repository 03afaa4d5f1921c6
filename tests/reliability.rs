//! No one peer shuts the door: slow handshakes and silent request heads from a few loopback
//! addresses, while a normal peer connects, searches and downloads, from another.

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
    for i in 0..1000u32 {
        let from = Ipv4Addr::new(127, 0, 2, 3 + (i % 3) as u8);
        if let Ok(mut s) = connect_from(from, addr) {
            let _ = s.write_all(b"GET ").await;
            heads.push(s);
        }
    }
    assert!(
        silent.len() >= 150 && heads.len() >= 900,
        "could not open the sockets"
    );
    // A normal peer from 127.0.0.1 links, searches and downloads, each within 5 s.
    let t = Instant::now();
    let mut peer = async_std::future::timeout(
        Duration::from_secs(5),
        Peer::connect(addr, Role::Leaf, false),
    )
    .await
    .expect("a leaf's handshake within 5 s");
    let muid = servent::wire::Guid::random();
    let q = servent::wire::Payload::Query(servent::wire::Query {
        flags: servent::wire::QueryFlags(0x8000),
        criteria: servent::wire::Text(b"song"),
        extensions: Default::default(),
    });
    peer.send(&encode(muid, 2, 0, q)).await;
    let hits = peer.collect(0x81, Duration::from_secs(5)).await;
    assert!(
        hits.iter().any(|h| h[..16] == muid.0[..]),
        "the leaf's search is answered within 5 s"
    );
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
    api_with(port, token, method, path, "")
}

/// One request to the API with the token and a JSON body; status and body.
fn api_with(
    port: u16,
    token: &str,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
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
    // The API answers at once; the shares are hashed behind it.
    for _ in 0..200 {
        if let Ok(t) = std::fs::read_to_string(&token_file)
            && api(api_port, t.trim(), "GET", "/api/shares")
                .is_ok_and(|(c, b)| c == 200 && !b.contains("\"hashing\""))
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

/// One servent process of the churn test, its ports learnt from its log.
struct Proc {
    child: Option<std::process::Child>,
    log: std::path::PathBuf,
    data: std::path::PathBuf,
    listen: u16,
    api: u16,
    token: String,
}

impl Proc {
    /// `servent run` on OS-chosen ports with its own data dir under `root`, logging to a file.
    fn spawn(root: &std::path::Path, name: &str, args: &[String]) -> Proc {
        let data = root.join(name);
        std::fs::create_dir_all(&data).unwrap();
        let log = root.join(format!("{name}.log"));
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_servent"));
        for (k, _) in std::env::vars() {
            if k.starts_with("SERVENT_") {
                c.env_remove(k);
            }
        }
        let child = c
            .args(["run", "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&data)
            .args(["--no-bootstrap", "--allow-private"])
            .args(args)
            .env("RUST_LOG", "servent=info")
            .env("XDG_CONFIG_HOME", root)
            .env("HOME", root)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Proc {
            child: Some(child),
            log,
            data,
            listen: 0,
            api: 0,
            token: String::new(),
        }
    }

    /// Reads the ports the process logged and its API token; false until all are there.
    fn ready(&mut self) -> bool {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let port_after = |marker: &str| -> Option<u16> {
            let at = text.find(marker)? + marker.len();
            let digits: String = text[at..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        };
        if let (Some(l), Some(a)) = (
            port_after("listening on 127.0.0.1:"),
            port_after("local API on 127.0.0.1:"),
        ) {
            self.listen = l;
            self.api = a;
        }
        if let Ok(t) = std::fs::read_to_string(self.data.join("api-token")) {
            self.token = t.trim().to_string();
        }
        self.listen != 0 && self.api != 0 && !self.token.is_empty()
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.listen)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn get(&self, path: &str) -> Option<serde_json::Value> {
        let (code, body) = api(self.api, &self.token, "GET", path).ok()?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// Ultrapeer links, as the API lists them.
    fn ultrapeer_links(&self) -> Option<usize> {
        self.ultrapeer_links_but("")
    }

    /// Ultrapeer links to others than `dead`.
    fn ultrapeer_links_but(&self, dead: &str) -> Option<usize> {
        let v = self.get("/api/connections")?;
        Some(
            v.as_array()?
                .iter()
                .filter(|c| c["role"] == "ultrapeer" && c["peer"] != dead)
                .count(),
        )
    }

    /// Searches for `words` through the API and waits up to `wait` for a file named `name`.
    fn finds(&self, words: &str, name: &str, wait: Duration) -> bool {
        let body = format!(r#"{{"query":"{words}"}}"#);
        let Ok((201, created)) = api_with(self.api, &self.token, "POST", "/api/searches", &body)
        else {
            return false;
        };
        let Some(id) = serde_json::from_str::<serde_json::Value>(&created)
            .ok()
            .and_then(|v| v["id"].as_u64())
        else {
            return false;
        };
        let end = Instant::now() + wait;
        let mut found = false;
        while !found && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(200));
            found = self.get(&format!("/api/searches/{id}")).is_some_and(|v| {
                v["results"]
                    .as_array()
                    .is_some_and(|rs| rs.iter().any(|r| r["name"] == name))
            });
        }
        let _ = api(
            self.api,
            &self.token,
            "DELETE",
            &format!("/api/searches/{id}"),
        );
        found
    }
}

/// Kills every process of the churn test however it ends.
struct Procs(Vec<Proc>);
impl Drop for Procs {
    fn drop(&mut self) {
        for p in &mut self.0 {
            p.kill();
        }
    }
}

/// Waits until `ok` holds for every process in `which`, or `deadline`; the ones that never did.
fn wait_all(
    procs: &mut [Proc],
    which: &[usize],
    deadline: Instant,
    mut ok: impl FnMut(&mut Proc) -> bool,
) -> Vec<usize> {
    let mut left: Vec<usize> = which.to_vec();
    loop {
        left.retain(|&i| !ok(&mut procs[i]));
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `(searcher, target)` pairs searched in parallel; how many found their file.
fn search_round(procs: &[Proc], pairs: &[(usize, usize)], names: &[Option<String>]) -> usize {
    std::thread::scope(|s| {
        let handles: Vec<_> = pairs
            .iter()
            .map(|&(from, to)| {
                let name = names[to].clone().expect("a sharer");
                let words = name.trim_end_matches(".ogg").to_string();
                let p = &procs[from];
                s.spawn(move || p.finds(&words, &name, Duration::from_secs(8)))
            })
            .collect();
        let found: Vec<bool> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or(false))
            .collect();
        let missed: Vec<_> = pairs
            .iter()
            .zip(&found)
            .filter(|(_, f)| !**f)
            .map(|(p, _)| p)
            .collect();
        if !missed.is_empty() {
            eprintln!("not found (searcher, sharer): {missed:?}");
        }
        found.iter().filter(|f| **f).count()
    })
}

/// Leaf links of an ultrapeer, as its API lists them.
fn leaf_links(p: &Proc) -> Option<usize> {
    let v = p.get("/api/connections")?;
    Some(v.as_array()?.iter().filter(|c| c["role"] == "leaf").count())
}

/// The case seen in issue 16: three ultrapeers, two of them full of leaves; leaves that know
/// only the third are its leaves alone for 50 s, refused by the full ones and backing off.
/// Then the third dies with 30 % of the leaves: every surviving leaf links again within 30 s
/// and searches find what they found before. Before the fix, the lone leaves sat at no link
/// until their back-offs ran out (another minute), and after six refusals forgot the full
/// ultrapeers for good. Thirty processes of the binary on 127.0.0.1.
#[test]
fn leaves_whose_ultrapeer_dies_link_again_and_searches_still_find_files() {
    let started = Instant::now();
    let root = temp_dir("rel-churn");
    std::fs::create_dir_all(&root).unwrap();
    let mut procs = Procs(Vec::new());
    let up_args = |max_leaves: usize, peers: &[String]| -> Vec<String> {
        let mut a: Vec<String> = vec!["--role".into(), "ultrapeer".into()];
        a.extend(["--max-leaves".into(), max_leaves.to_string()]);
        for p in peers {
            a.extend(["--peer".to_string(), p.clone()]);
        }
        a
    };
    // 27 leaves: 0-5 know only A at first, 6-16 only B, 17-26 only C. Each wants three
    // ultrapeers. B and C have room for the 21 leaves of B and C (each links to both), A for
    // everyone. Every other leaf shares a file of its own.
    const LEAVES: usize = 27;
    let group = |i: usize| match i {
        0..=5 => 0,
        6..=16 => 1,
        _ => 2,
    };
    let boot = Instant::now() + Duration::from_secs(20);
    procs.0.push(Proc::spawn(&root, "up-a", &up_args(30, &[])));
    assert!(
        wait_all(&mut procs.0, &[0], boot, Proc::ready).is_empty(),
        "A did not start"
    );
    let a = procs.0[0].addr();
    procs.0.push(Proc::spawn(
        &root,
        "up-b",
        &up_args(21, std::slice::from_ref(&a)),
    ));
    assert!(
        wait_all(&mut procs.0, &[1], boot, Proc::ready).is_empty(),
        "B did not start"
    );
    let b = procs.0[1].addr();
    procs.0.push(Proc::spawn(
        &root,
        "up-c",
        &up_args(21, &[a.clone(), b.clone()]),
    ));
    let stuck = wait_all(&mut procs.0, &[0, 1, 2], boot, |p| {
        p.ready() && p.ultrapeer_links().is_some_and(|n| n >= 2)
    });
    assert!(stuck.is_empty(), "ultrapeers {stuck:?} did not mesh");
    let c = procs.0[2].addr();
    let nonce = std::process::id();
    let mut names: Vec<Option<String>> = Vec::new();
    let mut leaf_args = Vec::new();
    for i in 0..LEAVES {
        let share = root.join(format!("share-{i}"));
        std::fs::create_dir_all(&share).unwrap();
        let name = (i % 2 == 0).then(|| format!("churn{nonce}x{i}.ogg"));
        if let Some(n) = &name {
            std::fs::write(share.join(n), servent::cli::demo::sample(i as u64, 4096)).unwrap();
        }
        names.push(name);
        let peer = [&a, &b, &c][group(i)];
        leaf_args.push(vec![
            "--role".to_string(),
            "leaf".into(),
            "--peer".into(),
            peer.clone(),
            "--share".into(),
            share.display().to_string(),
        ]);
    }
    // The leaves of B and C first, until both are full. `slots[i]`: leaf i's place in `procs`.
    let mut slots = vec![0; LEAVES];
    let spawn_leaf = |procs: &mut Procs, slots: &mut Vec<usize>, i: usize| {
        slots[i] = procs.0.len();
        procs
            .0
            .push(Proc::spawn(&root, &format!("leaf-{i}"), &leaf_args[i]));
    };
    for i in (0..LEAVES).filter(|&i| group(i) != 0) {
        spawn_leaf(&mut procs, &mut slots, i);
    }
    let others: Vec<usize> = (0..LEAVES)
        .filter(|&i| group(i) != 0)
        .map(|i| slots[i])
        .collect();
    let boot = Instant::now() + Duration::from_secs(30);
    let stuck = wait_all(&mut procs.0, &others, boot, Proc::ready);
    assert!(stuck.is_empty(), "leaves {stuck:?} did not start");
    let stuck = wait_all(&mut procs.0, &[1, 2], boot, |p| {
        leaf_links(p).is_some_and(|n| n >= 21)
    });
    assert!(stuck.is_empty(), "ultrapeers {stuck:?} never filled up");
    // Then A's own leaves: A takes them, B and C refuse them.
    let lone_started = Instant::now();
    for i in (0..LEAVES).filter(|&i| group(i) == 0) {
        spawn_leaf(&mut procs, &mut slots, i);
    }
    let lone: Vec<usize> = (0..LEAVES)
        .filter(|&i| group(i) == 0)
        .map(|i| slots[i])
        .collect();
    let stuck = wait_all(
        &mut procs.0,
        &lone,
        lone_started + Duration::from_secs(20),
        |p| p.ready() && p.ultrapeer_links().is_some_and(|n| n >= 1),
    );
    assert!(stuck.is_empty(), "leaves {stuck:?} never linked");
    eprintln!("30 processes up and linked in {:?}", started.elapsed());
    // The shared file of each process, by its place in `procs`.
    let mut names_by_proc = vec![None; procs.0.len()];
    for i in 0..LEAVES {
        names_by_proc[slots[i]] = names[i].clone();
    }
    let names = names_by_proc;
    // Kill A and 8 leaves (30 %): three of A's alone, five that held slots on B and C. The
    // survivors each search for two files of surviving sharers, before and after.
    let killed: Vec<usize> = [1, 3, 5, 7, 9, 17, 19, 21].map(|i| slots[i]).to_vec();
    let survivors: Vec<usize> = slots
        .iter()
        .copied()
        .filter(|i| !killed.contains(i))
        .collect();
    let sharers: Vec<usize> = survivors
        .iter()
        .copied()
        .filter(|&i| names[i].is_some())
        .collect();
    let pairs: Vec<(usize, usize)> = survivors
        .iter()
        .enumerate()
        .flat_map(|(k, &s)| {
            let others: Vec<usize> = sharers.iter().copied().filter(|&t| t != s).collect();
            [
                (s, others[k % others.len()]),
                (s, others[(k + 5) % others.len()]),
            ]
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let before = search_round(&procs.0, &pairs, &names);
    eprintln!("before: {before}/{} searches found their file", pairs.len());
    assert!(
        before * 10 >= pairs.len() * 9,
        "searches fail before any churn"
    );
    // A's lone leaves have been refused by B and C for long enough that their back-offs
    // outlast the deadline below (15 s, then 30 s, then 60 s).
    for &i in &lone {
        assert_eq!(
            procs.0[i].ultrapeer_links(),
            Some(1),
            "a leaf of A is not A's alone: the case is not set up"
        );
    }
    std::thread::sleep(
        (lone_started + Duration::from_secs(50)).saturating_duration_since(Instant::now()),
    );
    procs.0[0].kill();
    for &k in &killed {
        procs.0[k].kill();
    }
    let t_kill = Instant::now();
    let stuck = wait_all(
        &mut procs.0,
        &survivors,
        t_kill + Duration::from_secs(30),
        |p| p.ultrapeer_links_but(&a).is_some_and(|n| n >= 1),
    );
    let tails: Vec<String> = stuck
        .iter()
        .map(|&i| {
            let log = std::fs::read_to_string(&procs.0[i].log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let leaf = slots.iter().position(|&s| s == i).unwrap_or(usize::MAX);
            format!(
                "leaf {leaf}:\n{}",
                lines[lines.len().saturating_sub(6)..].join("\n")
            )
        })
        .collect();
    assert!(
        stuck.is_empty(),
        "{} leaves still have no ultrapeer 30 s after the churn\n{}",
        stuck.len(),
        tails.join("\n")
    );
    eprintln!(
        "every surviving leaf linked again {:?} after the kill",
        t_kill.elapsed()
    );
    let after = search_round(&procs.0, &pairs, &names);
    eprintln!("after: {after}/{} searches found their file", pairs.len());
    assert!(
        after * 100 >= before * 95,
        "search success fell from {before} to {after}"
    );
    eprintln!("churn test took {:?}", started.elapsed());
    drop(procs);
    let _ = std::fs::remove_dir_all(&root);
}
