//! The peers' side of a memory run (see the top of `main.rs`).

use std::net::SocketAddrV4;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use servent::handshake::Role;
use servent::overlay::Rng;
use servent::wire::qrp::{QrpTable, encode_table};
use servent::wire::{Descriptor, Guid, Hops, Payload, Ttl};

use crate::QueryMaker;
use crate::peer::Peer;

/// Reads and drops everything the node sends on `p` until told to stop.
fn drain(mut p: Peer, stop: Arc<AtomicBool>) {
    p.stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    while !stop.load(Ordering::Relaxed) {
        match p.read_some() {
            Ok(_) => p.frames(|_, _| {}),
            Err(_) => return,
        }
    }
}

/// What the links of a memory run do (see the top of `main.rs`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum MemKind {
    Idle,
    Warm,
    Leaf,
}

impl MemKind {
    pub fn arg(self) -> &'static str {
        match self {
            MemKind::Idle => "idle",
            MemKind::Warm => "warm",
            MemKind::Leaf => "leaf",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "warm" => MemKind::Warm,
            "leaf" => MemKind::Leaf,
            _ => MemKind::Idle,
        }
    }
}

/// Slots present in each bench leaf's 2^16-slot table: about what a leaf sharing a few hundred
/// files announces (2 % fill; gtk-gnutella aims at no more than 1 % on its own tables).
pub const LEAF_TABLE_SET: usize = 1300;

/// RESET + PATCH descriptors for a leaf table of [`LEAF_TABLE_SET`] random slots, encoded as
/// servent's leaves send theirs (4-bit entries, infinity 7, zlib).
fn leaf_table_descriptors(rng: &mut Rng) -> Vec<u8> {
    let mut t = QrpTable::new(16);
    while t.count() < LEAF_TABLE_SET {
        t.set(rng.below(t.slots()));
    }
    let mut out = Vec::new();
    for payload in encode_table(None, &t, 7, 4, true) {
        let mut head = Vec::with_capacity(23);
        head.extend_from_slice(&Guid::random().0);
        head.extend_from_slice(&[0x30, 1, 0]);
        head.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&head);
        out.extend_from_slice(&payload);
    }
    out
}

pub fn peers_memory(
    addr: SocketAddrV4,
    compress: bool,
    kind: MemKind,
    wait_for: &mut dyn FnMut(&str) -> String,
) {
    const WARM_BYTES: usize = 32 * 1024;
    let warm = kind == MemKind::Warm;
    let role = if kind == MemKind::Leaf {
        Role::Leaf
    } else {
        Role::Ultrapeer
    };
    let stop = Arc::new(AtomicBool::new(false));
    // Idle links keep their socket here; warm links hand reading to a drain thread and keep
    // a writing half.
    let mut idle: Vec<Peer> = Vec::new();
    let mut writers: Vec<Peer> = Vec::new();
    let mut drains = Vec::new();
    let mut rng = Rng::new(0xC0FFEE);
    let ping = Descriptor {
        muid: Guid::random(),
        ttl: Ttl(1),
        hops: Hops(0),
        payload: Payload::Ping(Default::default()),
    }
    .to_vec();
    loop {
        let cmd = wait_for("open");
        let Some(n) = cmd
            .strip_prefix("open ")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            break;
        };
        let mut fresh = Vec::new();
        while idle.len() + writers.len() + fresh.len() < n {
            match Peer::connect_as(addr, compress, role) {
                Ok(mut p) => {
                    // What any servent does on connecting; the node answers with a pong.
                    p.send(&ping).expect("ping");
                    if kind == MemKind::Leaf {
                        p.send(&leaf_table_descriptors(&mut rng)).expect("table");
                    }
                    fresh.push(p)
                }
                Err(e) => {
                    eprintln!("peer {}: {e}", idle.len() + writers.len() + fresh.len());
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        if !warm {
            idle.extend(fresh);
        } else {
            // Read the node's side on threads; the Peer kept for writing owns the deflater.
            for p in fresh.iter_mut() {
                let reader = Peer {
                    stream: p.stream.try_clone().expect("clone"),
                    deflate: None,
                    inflate: p.inflate.take(),
                    plain: std::mem::take(&mut p.plain),
                    wire: Vec::new(),
                    chunk: vec![0; 64 * 1024],
                    guid: p.guid,
                    wire_in: 0,
                    plain_in: 0,
                };
                let stop = stop.clone();
                drains.push(
                    std::thread::Builder::new()
                        .stack_size(128 * 1024)
                        .spawn(move || drain(reader, stop))
                        .expect("thread"),
                );
            }
            // Into the node: 32 KiB of TTL-1 queries, one MUID per link so that the route
            // table grows by one entry per link, not per query (the rest are duplicates).
            for p in fresh.iter_mut() {
                let mut q = QueryMaker::new(rng.next_u64(), 60, 1);
                let mut buf = Vec::new();
                let mut first = None;
                while buf.len() < WARM_BYTES {
                    let at = buf.len();
                    let muid = q.push(&mut buf);
                    let muid = *first.get_or_insert(muid);
                    buf[at..at + 16].copy_from_slice(&muid.0);
                }
                p.send(&buf).expect("warm in");
            }
            // Out of the node: two new links each send 32 KiB of distinct TTL-2 queries,
            // which the node forwards to every other link.
            for p in fresh.iter_mut().take(2) {
                let mut q = QueryMaker::new(rng.next_u64(), 60, 2);
                let mut sent = 0;
                while sent < WARM_BYTES {
                    let mut buf = Vec::new();
                    for _ in 0..8 {
                        q.push(&mut buf);
                    }
                    sent += buf.len();
                    p.send(&buf).expect("warm out");
                    // Below the node's flow-control watermark on every link.
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            std::thread::sleep(Duration::from_millis(500));
            writers.extend(fresh);
        }
        println!("opened {}", idle.len() + writers.len());
    }
    stop.store(true, Ordering::Relaxed);
    drop(idle);
    drop(writers);
    for d in drains {
        let _ = d.join();
    }
}
