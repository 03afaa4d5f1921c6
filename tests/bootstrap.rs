//! A node with no hosts finds the network through bootstrap services. The services here are
//! local stand-ins on 127.0.0.1 speaking the real formats: a UDP host cache answering a Ping
//! with GGEP SCP by a Pong with packed IPP hosts, and a GWebCache answering a host file.

mod common;

use std::net::SocketAddrV4;
use std::time::Duration;

use async_std::net::{TcpListener, UdpSocket};
use common::*;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use servent::handshake::Role;
use servent::net::bootstrap::Service;
use servent::net::{Node, NodeConfig};
use servent::wire::ggep::{Encoding, GgepBuilder};
use servent::wire::{Descriptor, Framed, Ggep, Hops, Payload, Pong, Ttl, frame};

async fn starving_leaf(services: Vec<Service>) -> Node {
    let mut cfg = NodeConfig::new("127.0.0.1:0".parse().unwrap(), temp_dir("boot"));
    cfg.role = Role::Leaf;
    cfg.want_ultrapeers = Some(1);
    cfg.accept_private = true;
    cfg.tick = Duration::from_millis(100);
    cfg.bootstrap = services;
    Node::start(cfg).await.unwrap()
}

#[async_std::test]
async fn a_udp_host_cache_pong_with_ipp_leads_to_a_connection() {
    let up = ultrapeer(&[]).await;
    let uhc = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let uhc_addr = uhc.local_addr().unwrap();
    let leaf = starving_leaf(vec![Service::Uhc(uhc_addr.to_string())]).await;

    let mut buf = [0u8; 2048];
    let (n, from) = async_std::future::timeout(Duration::from_secs(5), uhc.recv_from(&mut buf))
        .await
        .expect("the starving node pings the host cache")
        .unwrap();
    assert_eq!(
        from.port(),
        leaf.listen_addr().port(),
        "UDP shares the TCP port"
    );
    let Ok(Framed::Frame(f)) = frame(&buf[..n]) else {
        panic!("not a descriptor")
    };
    let ping = Descriptor::decode(&f).unwrap();
    let Payload::Ping(p) = ping.payload else {
        panic!("not a ping: {ping:?}")
    };
    assert!(
        p.ggep.unwrap().get("SCP").is_some(),
        "asks for packed hosts"
    );

    // Answer like a host cache: our own address, and the ultrapeer packed in IPP.
    let mut ipp = Vec::new();
    servent::wire::types::put_addr_ip_port(&mut ipp, &up.listen_addr());
    let mut g = GgepBuilder::new();
    g.push("IPP", &ipp, Encoding::default()).unwrap();
    let g = g.finish();
    let pong = Descriptor {
        muid: ping.muid,
        ttl: Ttl(1),
        hops: Hops(0),
        payload: Payload::Pong(Pong {
            addr: "127.0.0.1:1".parse().unwrap(),
            files: 0,
            kbytes: 0,
            ggep: Some(Ggep::parse_all(&g).unwrap()),
        }),
    }
    .to_vec();
    uhc.send_to(&pong, from).await.unwrap();
    wait_links(&leaf, 1).await;
    let c = &leaf.connections()[0];
    assert_eq!(c.addr, up.listen_addr());
    assert_eq!(c.role, Role::Ultrapeer);
}

#[async_std::test]
async fn a_gwebcache_host_file_leads_to_a_connection() {
    let up = ultrapeer(&[]).await;
    let gwc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/gwc.php", gwc.local_addr().unwrap());
    let leaf = starving_leaf(vec![Service::Gwc(url)]).await;
    let up_addr: SocketAddrV4 = up.listen_addr();
    let (mut s, _) = async_std::future::timeout(Duration::from_secs(5), gwc.accept())
        .await
        .expect("the starving node asks the GWebCache")
        .unwrap();
    let mut req = Vec::new();
    let mut chunk = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        req.extend_from_slice(&chunk[..n]);
    }
    let req = String::from_utf8(req).unwrap();
    assert!(
        req.starts_with("GET /gwc.php?get=1&hostfile=1&net=gnutella"),
        "{req}"
    );
    let body = format!("{up_addr}\nH|10.255.255.1:1|10\n");
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(resp.as_bytes()).await.unwrap();
    wait_links(&leaf, 1).await;
    assert_eq!(leaf.connections()[0].addr, up_addr);
}
