//! Leaf guidance over a real socket: a leaf tells its ultrapeer (BEAR/12) how many results of
//! its search it kept after its own filter, so the ultrapeer's dynamic query stops on what the
//! user can use rather than on everything that came back.

mod common;

use std::time::Duration;

use async_std::future::timeout;
use async_std::net::TcpListener;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use servent::handshake::driver;
use servent::handshake::{Admission, LocalInfo, Role};
use servent::net::NodeConfig;
use servent::overlay::dq::status_request;
use servent::servent::{Servent, ServentConfig};
use servent::wire::urn::Sha1Urn;
use servent::wire::vendor::VendorBody;
use servent::wire::{
    Descriptor, ExtBuilder, FileIndex, Framed, Guid, Hops, Payload, QueryHit, Results,
    ResultsBuilder, ServentId, Trailer, Ttl, frame,
};

use common::temp_dir;

/// Reads descriptors from `s` until one satisfies `want`, within 10 s.
async fn read_until<S: futures_lite::AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    mut want: impl FnMut(&Descriptor<'_>) -> bool,
) -> Vec<u8> {
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        while let Ok(Framed::Frame(f)) = frame(buf) {
            let n = f.len();
            let msg: Vec<u8> = buf.drain(..n).collect();
            let Ok(Framed::Frame(f)) = frame(&msg) else {
                unreachable!("framed just above")
            };
            if Descriptor::decode(&f).is_ok_and(|d| want(&d)) {
                return msg;
            }
        }
        let left = end
            .checked_duration_since(std::time::Instant::now())
            .expect("the descriptor came in time");
        let mut chunk = [0u8; 8192];
        match timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            other => panic!("link ended: {other:?}"),
        }
    }
}

/// The leaf's next vendor message about `muid` (its BEAR/12), as a value.
async fn status_answer<S: futures_lite::AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    muid: Guid,
) -> VendorBody<'static> {
    let answer = read_until(s, buf, |d| {
        d.muid == muid && matches!(&d.payload, Payload::Vendor(_))
    })
    .await;
    let Ok(Framed::Frame(f)) = frame(&answer) else {
        unreachable!("framed by read_until")
    };
    match Descriptor::decode(&f).unwrap().payload {
        Payload::Vendor(v) => match v.body {
            VendorBody::QueryStatusResponse { kept } => VendorBody::QueryStatusResponse { kept },
            other => panic!("not a query status response: {other:?}"),
        },
        _ => unreachable!("matched a vendor message"),
    }
}

#[async_std::test]
async fn a_leaf_reports_only_the_results_that_pass_its_filter() {
    let _ = env_logger::builder().is_test(true).try_init();
    // A scripted ultrapeer the leaf dials.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = match listener.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        _ => unreachable!(),
    };
    let mut n = NodeConfig::new("127.0.0.1:0".parse().unwrap(), temp_dir("guided-leaf"));
    n.peers = vec![up_addr];
    n.tick = Duration::from_millis(100);
    let mut cfg = ServentConfig::new(n);
    cfg.firewalled = Some(false);
    let leaf = Servent::start(cfg).await.unwrap();

    let (mut s, _) = timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("the leaf dials")
        .unwrap();
    let local = LocalInfo {
        user_agent: "test-ultrapeer/1".into(),
        role: Role::Ultrapeer,
        guid: ServentId::random(),
        listen: Some(up_addr),
        compress: false,
        degree: 32,
        max_ttl: 4,
    };
    let est = driver::accept(&mut s, &local, Vec::new(), None, |_| Admission {
        free_leaf_slots: 30,
        free_ultrapeer_slots: 32,
        already_connected: false,
        try_ultrapeers: Vec::new(),
    })
    .await
    .expect("handshake");
    assert_eq!(est.peer_role, Role::Leaf);
    let mut buf = est.leftover;

    let search = leaf.search("aurora borealis");
    // The leaf's query reaches us marked leaf-guided.
    let q = read_until(&mut s, &mut buf, |d| d.muid == search.muid).await;
    let Ok(Framed::Frame(f)) = frame(&q) else {
        unreachable!()
    };
    let Payload::Query(query) = Descriptor::decode(&f).unwrap().payload else {
        panic!("a query")
    };
    assert!(query.flags.0 & 0x1000 != 0, "leaf-guided flag set");

    // A hit with three results, only one of which carries a urn:sha1 (the leaf offers only
    // those: others cannot be verified).
    let mut ext = ExtBuilder::new();
    ext.urn(&Sha1Urn::digest(b"aurora"));
    let ext = ext.finish();
    let mut rb = ResultsBuilder::new();
    rb.push(FileIndex(1), 6, "aurora borealis.ogv", &ext);
    rb.push(FileIndex(2), 7, "aurora borealis.txt", &[]);
    rb.push(FileIndex(3), 8, "aurora borealis.jpg", &[]);
    let hit = Descriptor {
        muid: search.muid,
        ttl: Ttl(3),
        hops: Hops(0),
        payload: Payload::QueryHit(QueryHit {
            addr: "127.0.0.1:7000".parse().unwrap(),
            speed: 100,
            results: Results::from_bytes(rb.bytes(), rb.count()).unwrap(),
            trailer: Trailer::None,
            servent: ServentId::random(),
        }),
    }
    .to_vec();
    s.write_all(&hit).await.unwrap();
    let got = timeout(Duration::from_secs(10), search.hits.recv())
        .await
        .expect("the hit reaches the searcher")
        .unwrap();
    assert_eq!(&got[..], &hit[..]);

    // Asked how many it kept, the leaf says 1, not the 3 that came back.
    s.write_all(&status_request(search.muid)).await.unwrap();
    let muid: Guid = search.muid;
    assert_eq!(
        status_answer(&mut s, &mut buf, muid).await,
        VendorBody::QueryStatusResponse { kept: 1 }
    );

    // Once the user stops the search, the leaf says "stop" (0xFFFF).
    leaf.stop_search(&search.muid);
    s.write_all(&status_request(search.muid)).await.unwrap();
    assert_eq!(
        status_answer(&mut s, &mut buf, muid).await,
        VendorBody::QueryStatusResponse { kept: 0xFFFF }
    );
}
