//! Helpers for end-to-end tests: real nodes on 127.0.0.1 with OS-chosen ports, and a scripted
//! peer that speaks the handshake and raw descriptors.
#![allow(dead_code)]

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_std::future::timeout;
use async_std::net::TcpStream;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use servent::handshake::driver::{self, Established};
use servent::handshake::{LocalInfo, Role};
use servent::net::link::{Deflater, Inflater};
use servent::net::{Node, NodeConfig};
use servent::overlay::Delivery;
use servent::wire::{Descriptor, Framed, Guid, Hops, Payload, ServentId, Ttl, frame};

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// A fresh data directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    let n = DIRS.fetch_add(1, Ordering::SeqCst);
    let d = std::env::temp_dir().join(format!("servent-test-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The binary with a clean environment: no settings file of the person running the tests, no
/// `SERVENT_` variables of theirs.
pub fn bin(home: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_servent"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SERVENT_") {
            c.env_remove(k);
        }
    }
    c.env("XDG_CONFIG_HOME", home)
        .env("HOME", home)
        .env("RUST_LOG", "warn");
    c
}

/// An ultrapeer on 127.0.0.1:0 that dials `peers` and nothing else.
pub async fn ultrapeer(peers: &[SocketAddrV4]) -> Node {
    ultrapeer_wanting(peers, peers.len()).await
}

/// An ultrapeer that keeps dialling until it has `want` ultrapeer links.
pub async fn ultrapeer_wanting(peers: &[SocketAddrV4], want: usize) -> Node {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut cfg = NodeConfig::new("127.0.0.1:0".parse().unwrap(), temp_dir("node"));
    cfg.role = Role::Ultrapeer;
    cfg.peers = peers.to_vec();
    cfg.want_ultrapeers = Some(want);
    cfg.accept_private = true;
    cfg.tick = Duration::from_millis(100);
    Node::start(cfg).await.expect("node starts")
}

/// Waits until `node` has `n` links.
pub async fn wait_links(node: &Node, n: usize) {
    for _ in 0..200 {
        if node.connections().len() >= n {
            return;
        }
        async_std::task::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "node {} has {} links, wanted {n}",
        node.listen_addr(),
        node.connections().len()
    );
}

/// Waits until the ultrapeer `up` holds the QRP tables of `n` leaves: before that it forwards
/// them nothing.
pub async fn wait_tables(up: &Node, n: usize) {
    for _ in 0..200 {
        let have = up
            .connections()
            .iter()
            .filter(|c| c.qrp_slots_set.is_some_and(|s| s > 0))
            .count();
        if have >= n {
            return;
        }
        async_std::task::sleep(Duration::from_millis(20)).await;
    }
    panic!("ultrapeer never got {n} leaf tables");
}

/// Collects the deliveries of `node` for `wait`.
pub async fn deliveries(node: &Node, wait: Duration) -> Vec<Delivery> {
    let rx = node.deliveries();
    let mut got = Vec::new();
    let end = std::time::Instant::now() + wait;
    while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
        match timeout(left, rx.recv()).await {
            Ok(Ok(d)) => got.push(d),
            _ => break,
        }
    }
    got
}

pub fn queries_with(ds: &[Delivery], muid: &[u8; 16]) -> usize {
    ds.iter()
        .filter(|d| matches!(d, Delivery::Query { msg, .. } if &msg[..16] == muid))
        .count()
}

/// A scripted peer: real handshake, then raw descriptors.
pub struct Peer {
    pub stream: TcpStream,
    pub est: Established,
    pub guid: ServentId,
    inflater: Option<Inflater>,
    deflater: Option<Deflater>,
    plain: Vec<u8>,
}

impl Peer {
    pub async fn connect(addr: SocketAddrV4, role: Role, compress: bool) -> Peer {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let guid = ServentId::random();
        let local = LocalInfo {
            user_agent: "test-peer/1".into(),
            role,
            guid,
            listen: None,
            compress,
            degree: 32,
            max_ttl: 4,
        };
        let est = driver::connect(&mut stream, &local, Some(*addr.ip()))
            .await
            .expect("handshake");
        let inflater = est.compression.incoming.then(Inflater::new);
        let deflater = est.compression.outgoing.then(Deflater::new);
        let plain = Vec::new();
        let mut p = Peer {
            stream,
            inflater,
            deflater,
            plain,
            guid,
            est,
        };
        let left = std::mem::take(&mut p.est.leftover);
        p.absorb(&left);
        p
    }

    fn absorb(&mut self, raw: &[u8]) {
        match self.inflater.as_mut() {
            None => self.plain.extend_from_slice(raw),
            Some(z) => {
                let mut pos = 0;
                loop {
                    let (used, made) = z.inflate(&raw[pos..], &mut self.plain).expect("inflate");
                    pos += used;
                    if used == 0 && made == 0 {
                        break;
                    }
                }
            }
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        let data = match self.deflater.as_mut() {
            None => bytes.to_vec(),
            Some(z) => {
                let mut out = Vec::new();
                z.compress(bytes, &mut out);
                out
            }
        };
        self.stream.write_all(&data).await.expect("send");
    }

    /// Like `send`, but written `piece` bytes at a time with a pause between, so that the
    /// node's reads end anywhere: inside a header, a payload, a deflate block.
    pub async fn send_in_pieces(&mut self, bytes: &[u8], piece: usize) {
        let data = match self.deflater.as_mut() {
            None => bytes.to_vec(),
            Some(z) => {
                let mut out = Vec::new();
                z.compress(bytes, &mut out);
                out
            }
        };
        for chunk in data.chunks(piece.max(1)) {
            self.stream.write_all(chunk).await.expect("send");
            self.stream.flush().await.expect("flush");
            async_std::task::sleep(Duration::from_millis(1)).await;
        }
    }

    /// The next descriptor, or None after `wait` (or when the node closed the link).
    pub async fn recv(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let end = std::time::Instant::now() + wait;
        loop {
            if let Ok(Framed::Frame(f)) = frame(&self.plain) {
                let n = f.len();
                return Some(self.plain.drain(..n).collect());
            }
            let left = end.checked_duration_since(std::time::Instant::now())?;
            let mut chunk = [0u8; 8192];
            match timeout(left, self.stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.absorb(&chunk[..n]),
                _ => return None,
            }
        }
    }

    /// Descriptors of type `kind` received within `wait`, answering nothing.
    pub async fn collect(&mut self, kind: u8, wait: Duration) -> Vec<Vec<u8>> {
        let end = std::time::Instant::now() + wait;
        let mut got = Vec::new();
        while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
            match self.recv(left).await {
                Some(m) if m[16] == kind => got.push(m),
                Some(_) => {}
                None => break,
            }
        }
        got
    }

    /// True when the node closed the link (EOF) within `wait`, after reading what was left.
    pub async fn closed(&mut self, wait: Duration) -> bool {
        let end = std::time::Instant::now() + wait;
        let mut chunk = [0u8; 8192];
        while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
            match timeout(left, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(n)) => self.absorb(&chunk[..n]),
                Err(_) => return false,
            }
        }
        false
    }

    /// The Bye code among what was received, if any.
    pub fn bye_code(&self) -> Option<u16> {
        let mut rest = &self.plain[..];
        while let Ok(Framed::Frame(f)) = frame(rest) {
            if f.header.kind == servent::wire::PayloadType::Bye {
                return Some(u16::from_le_bytes([f.payload[0], f.payload[1]]));
            }
            rest = &rest[f.len()..];
        }
        None
    }
}

pub fn encode(muid: Guid, ttl: u8, hops: u8, payload: Payload<'_>) -> Vec<u8> {
    Descriptor {
        muid,
        ttl: Ttl(ttl),
        hops: Hops(hops),
        payload,
    }
    .to_vec()
}
