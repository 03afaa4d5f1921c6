//! Replays the handshake transcripts of `conformance/handshake/` over real loopback sockets:
//! a scripted peer sends its blocks byte for byte, our driver answers, and what we send and how
//! it ends are checked against the transcript.

use std::net::SocketAddrV4;
use std::path::PathBuf;

use async_std::net::{TcpListener, TcpStream};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use serde_json::Value;
use servent::handshake::driver::{self, Established, HandshakeError};
use servent::handshake::{Admission, Block, LocalInfo, Role};
use servent::wire::ServentId;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conformance/handshake")
}

fn local(role: Role) -> LocalInfo {
    LocalInfo {
        user_agent: "servent/test".into(),
        role,
        guid: ServentId([0x42; 16]),
        listen: Some("127.0.0.1:6346".parse().unwrap()),
        compress: true,
        degree: 32,
        max_ttl: 4,
    }
}

/// Reads one header block from the stream (the scripted side's view of what we sent).
async fn read_block(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Block> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((b, n)) = Block::parse(buf).expect("we send well-formed blocks") {
            buf.drain(..n);
            return Some(b);
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn check_block(name: &str, i: usize, got: &Block, want: &Value) {
    let start = got.start.to_string();
    let want_start = want["start"].as_str().unwrap();
    assert!(
        start.starts_with(want_start),
        "{name}: our block {i} starts {start:?}, expected {want_start:?}"
    );
    if let Some(h) = want["headers"].as_object() {
        for (k, v) in h {
            let have = got.headers.get(k);
            let v = v.as_str().unwrap();
            match have {
                None => panic!("{name}: our block {i} lacks {k}"),
                Some(have) if v != "*" => {
                    assert_eq!(have, v, "{name}: our block {i} header {k}")
                }
                Some(_) => {}
            }
        }
    }
    for k in want["absent"].as_array().into_iter().flatten() {
        let k = k.as_str().unwrap();
        assert!(
            !got.headers.has(k),
            "{name}: our block {i} must not carry {k}"
        );
    }
}

fn addrs(v: &Value) -> Vec<SocketAddrV4> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|a| a.as_str().unwrap().parse().unwrap())
        .collect()
}

fn check_outcome(name: &str, got: Result<Established, HandshakeError>, want: &Value) {
    if want["established"].as_bool() == Some(true) {
        let est = got.unwrap_or_else(|e| panic!("{name}: expected a link, got {e}"));
        let role = match est.peer_role {
            Role::Leaf => "leaf",
            Role::Ultrapeer => "ultrapeer",
        };
        assert_eq!(role, want["peer_role"], "{name}: peer role");
        let c = &want["compression"];
        assert_eq!(
            est.compression.outgoing,
            c["outgoing"].as_bool().unwrap(),
            "{name}: out"
        );
        assert_eq!(
            est.compression.incoming,
            c["incoming"].as_bool().unwrap(),
            "{name}: in"
        );
        if let Some(g) = want["peer_guid"].as_str() {
            assert_eq!(
                est.peer.guid.map(|g| g.to_hex()).as_deref(),
                Some(g),
                "{name}"
            );
        }
        if let Some(l) = want["peer_listen"].as_str() {
            assert_eq!(est.peer.listen, Some(l.parse().unwrap()), "{name}");
        }
    } else if let Some(code) = want["refused_by_us"].as_u64() {
        match got {
            Err(HandshakeError::WeRefused { code: c, .. }) => {
                assert_eq!(u64::from(c), code, "{name}")
            }
            other => panic!("{name}: expected our refusal {code}, got {other:?}"),
        }
    } else if let Some(code) = want["refused_by_peer"].as_u64() {
        match got {
            Err(e @ HandshakeError::Refused { .. }) => {
                let HandshakeError::Refused { code: c, .. } = &e else {
                    unreachable!()
                };
                assert_eq!(u64::from(*c), code, "{name}");
                assert_eq!(
                    e.try_ultrapeers(),
                    &addrs(&want["try_ultrapeers"])[..],
                    "{name}"
                );
            }
            other => panic!("{name}: expected the peer's refusal {code}, got {other:?}"),
        }
    } else {
        panic!("{name}: transcript has no outcome");
    }
}

async fn replay(name: &str, t: &Value) {
    let role = match t["our_role"].as_str().unwrap() {
        "leaf" => Role::Leaf,
        _ => Role::Ultrapeer,
    };
    let me = local(role);
    let peer_blocks: Vec<String> = t["peer"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap().to_string())
        .collect();
    let expect = &t["expect"];
    let ours = expect["our_blocks"].as_array().unwrap().clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (mut scripted, mut mine) = match t["we_are"].as_str().unwrap() {
        "server" => {
            let peer = TcpStream::connect(addr).await.unwrap();
            let (us, _) = listener.accept().await.unwrap();
            (peer, us)
        }
        _ => {
            let us = TcpStream::connect(addr).await.unwrap();
            let (peer, _) = listener.accept().await.unwrap();
            (peer, us)
        }
    };
    let slots = &t["slots"];
    let adm = Admission {
        free_leaf_slots: slots["leaves"].as_u64().unwrap_or(1) as usize,
        free_ultrapeer_slots: slots["ultrapeers"].as_u64().unwrap_or(1) as usize,
        already_connected: false,
        try_ultrapeers: addrs(&t["try"]),
    };
    let server = t["we_are"] == "server";
    let script = async {
        let mut buf = Vec::new();
        let mut seen = Vec::new();
        if server {
            // Peer speaks first; after our answer, it sends its remaining blocks.
            scripted.write_all(peer_blocks[0].as_bytes()).await.unwrap();
            if let Some(b) = read_block(&mut scripted, &mut buf).await {
                seen.push(b);
            }
            for b in &peer_blocks[1..] {
                let _ = scripted.write_all(b.as_bytes()).await;
            }
        } else {
            if let Some(b) = read_block(&mut scripted, &mut buf).await {
                seen.push(b);
            }
            scripted.write_all(peer_blocks[0].as_bytes()).await.unwrap();
            if let Some(b) = read_block(&mut scripted, &mut buf).await {
                seen.push(b);
            }
        }
        seen
    };
    let ours_run = async move {
        let r = if server {
            driver::accept(
                &mut mine,
                &me,
                Vec::new(),
                Some("127.0.0.1".parse().unwrap()),
                |_| adm.clone(),
            )
            .await
        } else {
            let r = driver::connect(&mut mine, &me, None).await;
            // Let the script read our last block before the socket goes.
            let _ = mine.flush().await;
            r
        };
        drop(mine);
        r
    };
    let (seen, outcome) = futures_lite::future::zip(script, ours_run).await;
    assert_eq!(seen.len(), ours.len(), "{name}: blocks we sent");
    for (i, (got, want)) in seen.iter().zip(&ours).enumerate() {
        check_block(name, i, got, want);
    }
    check_outcome(name, outcome, &expect["outcome"]);
}

#[async_std::test]
async fn every_handshake_transcript_replays() {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    names.sort();
    assert!(names.len() >= 10, "transcripts missing: {}", names.len());
    for p in names {
        let t: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        let name = p.file_stem().unwrap().to_string_lossy().to_string();
        replay(&name, &t).await;
    }
}
