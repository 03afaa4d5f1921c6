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
