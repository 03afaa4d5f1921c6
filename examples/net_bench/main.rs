//! Figures for issue 3: what one ultrapeer costs on loopback, with link compression on and off.
//!
//! ```text
//! cargo run --release --example net_bench            # everything, then a table
//! cargo run --release --example net_bench -- quick   # shorter runs
//! ```
//!
//! Every measurement runs in two fresh processes: `net_bench node …` starts the node
//! (`Node::start`, an ultrapeer) and spawns `net_bench peers …`, the scripted peers (real
//! handshake, zlib links from flate2 with its default settings, raw descriptors on blocking
//! sockets, one thread each). So the node process's CPU time and RSS are the node's alone, and
//! no measurement inherits memory freed by an earlier one. The top level only collects the
//! `RESULT` line each node process prints.
//!
//! 1. Routing: S senders and R receivers, all ultrapeer links. Senders first send Hops Flow 0 so
//!    the node forwards nothing to them, then send fresh queries (distinct MUIDs, TTL 3, hops
//!    0, 60-byte payload) in writes of 32: "blast" as fast as the node reads, "window" with at
//!    most [`WINDOW`] queries not yet at every receiver. The node forwards each to the R
//!    receivers, which count what arrives. "Routed" = query copies delivered to receivers, so
//!    1 query in = R routed. Every loop is bounded by a count and a time.
//! 2. Memory: 50, 100, 200 ultrapeer links, RSS (/proc/self/statm) and live heap (a counting
//!    allocator) of the node after each step; the slope is a least-squares fit. "idle" links
//!    handshook and sent one ping (the node answers with a pong); "warm" links have each
//!    carried ≥ 32 KiB both ways (TTL-1 queries in, forwarded queries out), so zlib windows and
//!    buffers are as touched as on a busy link. "leaf" links handshake as leaves, ping, and
//!    send a full 2^16-slot QRP table (RESET + zlib PATCH sequence, as servent's leaves encode
//!    it, [`LEAF_TABLE_SET`] slots present); the node is measured once every table is live.
//! 3. Latency: one peer asks (query TTL 2), another answers every query at once with a hit;
//!    time from the write of the query to the read of the hit, one in flight.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddrV4;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use servent::handshake::Role;
use servent::net::{Node, NodeConfig};
use servent::overlay::Rng;
use servent::wire::vendor::selector;
use servent::wire::{
    Descriptor, FileIndex, Guid, Hops, Payload, Query, QueryFlags, QueryHit, Results,
    ResultsBuilder, ServentId, Text, Trailer, Ttl, VendorBody, VendorMessage,
};

mod memory;
mod peer;

use memory::{LEAF_TABLE_SET, MemKind, peers_memory};
use peer::Peer;

// ---------------------------------------------------------------------------------------------
// Live-heap counter: off unless a memory run turns it on, so it costs one relaxed load per
// allocation elsewhere.

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);

fn count(delta: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE.fetch_add(delta, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            count(l.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            count(l.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        count(-(l.size() as isize));
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            count(new as isize - l.size() as isize);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

// ---------------------------------------------------------------------------------------------
// Process figures.

/// User + system CPU seconds of this process, all threads, from /proc/self/stat.
fn cpu_secs() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the ")" that closes the command name: state is field 3, utime 14, stime 15.
    let rest = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|x| x.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(14) + ticks(15)) as f64 / clock_ticks()
}

fn clock_ticks() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Resident set in KiB, from /proc/self/statm.
fn rss_kib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    (pages * 4096) as f64 / 1024.0
}

/// Least-squares slope of y over x.
fn slope(pts: &[(f64, f64)]) -> f64 {
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    sxy / sxx
}

type Fields = HashMap<String, String>;

fn parse_fields(line: &str) -> Fields {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn num(f: &Fields, k: &str) -> f64 {
    f.get(k)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number {k} in {f:?}"))
}

// ---------------------------------------------------------------------------------------------
// Descriptors the peers send.

const WORDS: [&str; 16] = [
    "music  ", "live   ", "album  ", "remix  ", "concert", "acoustc", "version", "mp3    ",
    "ogg    ", "flac   ", "video  ", "trailer", "jazz   ", "piano  ", "guitar ", "drums  ",
];

/// A query whose search text is `words` 8-byte words plus a 9-digit serial: with 6 words the
/// payload is 60 bytes (2 flags + 57 text + NUL).
struct QueryMaker {
    template: Vec<u8>,
    text_at: usize,
    words: usize,
    rng: Rng,
    serial: u64,
}

impl QueryMaker {
    fn new(seed: u64, words: usize, ttl: u8) -> Self {
        let text = vec![b'x'; words * 8 + 9];
        let template = Descriptor {
            muid: Guid([0; 16]),
            ttl: Ttl(ttl),
            hops: Hops(0),
            payload: Payload::Query(Query {
                flags: QueryFlags(QueryFlags::MARKED),
                criteria: Text(&text),
                extensions: Default::default(),
            }),
        }
        .to_vec();
        QueryMaker {
            template,
            text_at: 23 + 2,
            words,
            rng: Rng::new(seed),
            serial: 0,
        }
    }

    /// Appends a fresh query to `out` and returns its MUID.
    fn push(&mut self, out: &mut Vec<u8>) -> Guid {
        let muid = self.rng.guid();
        let at = out.len();
        out.extend_from_slice(&self.template);
        out[at..at + 16].copy_from_slice(&muid.0);
        let mut p = at + self.text_at;
        let mut r = self.rng.next_u64();
        for _ in 0..self.words {
            out[p..p + 7].copy_from_slice(WORDS[(r & 15) as usize].as_bytes());
            out[p + 7] = b' ';
            r = r.rotate_right(4);
            p += 8;
        }
        self.serial += 1;
        let digits = format!("{:09}", self.serial % 1_000_000_000);
        out[p..p + 9].copy_from_slice(digits.as_bytes());
        muid
    }
}

fn hops_flow_zero() -> Vec<u8> {
    Descriptor {
        muid: Guid::random(),
        ttl: Ttl(1),
        hops: Hops(0),
        payload: Payload::Vendor(VendorMessage::new(
            selector::HOPS_FLOW,
            VendorBody::HopsFlow { max_hops: 0 },
        )),
    }
    .to_vec()
}

/// A QueryHit header and payload for `servent`; the MUID is patched per answer.
fn hit_template(servent: ServentId) -> Vec<u8> {
    let mut r = ResultsBuilder::new();
    r.push(FileIndex(3), 4_321_000, "some artist - some song.ogg", b"");
    Descriptor {
        muid: Guid([0; 16]),
        ttl: Ttl(3),
        hops: Hops(0),
        payload: Payload::QueryHit(QueryHit {
            addr: "127.0.0.1:9999".parse().expect("address"),
            speed: 500,
            results: Results::from_bytes(r.bytes(), r.count()).expect("built"),
            trailer: Trailer::None,
            servent,
        }),
    }
    .to_vec()
}

// ---------------------------------------------------------------------------------------------
// The node process.

fn node_main(args: &[String]) {
    let exp = args[0].as_str();
    let compress = args[1] == "1";
    let dir = std::env::temp_dir().join(format!("servent-net-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = NodeConfig::new("127.0.0.1:0".parse().expect("address"), dir.clone());
    cfg.role = Role::Ultrapeer;
    cfg.compress = compress;
    cfg.max_ultrapeers = 256;
    cfg.max_leaves = 256;
    cfg.want_ultrapeers = Some(0);
    cfg.accept_private = true;
    let node = async_std::task::block_on(Node::start(cfg)).expect("node starts");
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .arg("peers")
        .arg(exp)
        .arg(node.listen_addr().to_string())
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("peers process");
    let mut to = child.stdin.take().expect("piped");
    let mut from = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut expect = |prefix: &str| -> Fields {
        loop {
            let line = from
                .next()
                .unwrap_or_else(|| panic!("peers exited before {prefix}"))
                .expect("peers output");
            if let Some(rest) = line.strip_prefix(prefix) {
                return parse_fields(rest);
            }
            eprintln!("peers: {line}");
        }
    };
    let say = |to: &mut ChildStdin, s: &str| {
        writeln!(to, "{s}").expect("to peers");
        to.flush().expect("to peers");
    };
    let result = match exp {
        "route" => {
            expect("ready");
            let (s0, c0) = (node.stats(), cpu_secs());
            say(&mut to, "go");
            let f = expect("done");
            let (s1, c1) = (node.stats(), cpu_secs());
            format!(
                "node_cpu={} node_in={} node_fwd={} dup={} {}",
                c1 - c0,
                s1.received - s0.received,
                s1.queries_forwarded - s0.queries_forwarded,
                s1.duplicates - s0.duplicates,
                fields_line(&f),
            )
        }
        "lat" => {
            expect("ready");
            say(&mut to, "go");
            fields_line(&expect("done"))
        }
        "mem" => {
            let mut out = String::new();
            std::thread::sleep(Duration::from_millis(200));
            out += &format!("base_rss={:.0} ", rss_kib());
            LIVE.store(0, Ordering::SeqCst);
            COUNTING.store(true, Ordering::SeqCst);
            for n in MEM_STEPS {
                say(&mut to, &format!("open {n}"));
                expect("opened");
                // Leaves count once their table is live: the node then holds all it keeps.
                let ready = |c: &servent::overlay::ConnSummary| {
                    c.role != Role::Leaf || c.qrp_slots_set.is_some()
                };
                wait_until(
                    || node.connections().iter().filter(|c| ready(c)).count() >= n,
                    Duration::from_secs(10),
                );
                // Let writers drain and the links settle.
                std::thread::sleep(Duration::from_millis(300));
                let links = node.connections().len();
                out += &format!(
                    "links{n}={links} rss{n}={:.0} heap{n}={:.0} ",
                    rss_kib(),
                    LIVE.load(Ordering::SeqCst) as f64 / 1024.0
                );
            }
            say(&mut to, "quit");
            out
        }
        _ => panic!("unknown experiment {exp}"),
    };
    let _ = writeln!(to, "quit");
    drop(to);
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    println!("RESULT {result}");
    // Not waiting for the node's tasks: the process ends here.
    std::process::exit(0);
}

const MEM_STEPS: [usize; 3] = [50, 100, 200];

fn wait_until(mut f: impl FnMut() -> bool, limit: Duration) {
    let end = Instant::now() + limit;
    while !f() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn fields_line(f: &Fields) -> String {
    let mut v: Vec<String> = f.iter().map(|(k, v)| format!("{k}={v}")).collect();
    v.sort();
    v.join(" ")
}

// ---------------------------------------------------------------------------------------------
// The peers process.

fn peers_main(args: &[String]) {
    let exp = args[0].as_str();
    let addr: SocketAddrV4 = args[1].parse().expect("node address");
    let compress = args[2] == "1";
    let rest = &args[3..];
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut wait_for = |want: &str| -> String {
        for l in lines.by_ref() {
            let l = l.expect("stdin");
            if l.starts_with(want) || l == "quit" {
                return l;
            }
        }
        "quit".into()
    };
    match exp {
        "route" => {
            let senders: usize = rest[0].parse().expect("senders");
            let receivers: usize = rest[1].parse().expect("receivers");
            let secs: f64 = rest[2].parse().expect("seconds");
            let max: u64 = rest[3].parse().expect("max per sender");
            let window: u64 = rest[4].parse().expect("window");
            let shape = Shape {
                senders,
                receivers,
                secs,
                max,
                window,
            };
            peers_route(addr, compress, &shape, &mut wait_for);
        }
        "lat" => {
            let n: usize = rest[0].parse().expect("round trips");
            peers_latency(addr, compress, n, &mut wait_for);
        }
        "mem" => {
            let kind = MemKind::parse(&rest[0]);
            peers_memory(addr, compress, kind, &mut wait_for);
        }
        _ => panic!("unknown experiment {exp}"),
    }
}

/// How a routing run is driven.
struct Shape {
    senders: usize,
    receivers: usize,
    /// Senders stop after this long or `max` queries each.
    secs: f64,
    max: u64,
    /// 0: send as fast as the node reads. Otherwise at most this many queries may be sent and
    /// not yet delivered to every receiver (closed loop: the rate the node routes without
    /// shedding anything).
    window: u64,
}

fn peers_route(
    addr: SocketAddrV4,
    compress: bool,
    shape: &Shape,
    wait_for: &mut dyn FnMut(&str) -> String,
) {
    let &Shape {
        senders,
        receivers,
        secs,
        max,
        window,
    } = shape;
    let delivered = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let last_rx_us = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(std::sync::OnceLock::<Instant>::new());
    let mut rx_threads = Vec::new();
    for _ in 0..receivers {
        let mut p = Peer::connect(addr, compress).expect("receiver connects");
        p.stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let (delivered, bytes, last_rx_us, stop, started) = (
            delivered.clone(),
            bytes.clone(),
            last_rx_us.clone(),
            stop.clone(),
            started.clone(),
        );
        rx_threads.push(std::thread::spawn(move || {
            let mut quiet_since = Instant::now();
            let (w0, p0) = (p.wire_in, p.plain_in);
            let count = |p: &Peer| {
                bytes.0.fetch_add(p.wire_in - w0, Ordering::Relaxed);
                bytes.1.fetch_add(p.plain_in - p0, Ordering::Relaxed);
            };
            let hard_end = Instant::now() + Duration::from_secs_f64(secs + 60.0);
            loop {
                match p.read_some() {
                    Ok(true) => {
                        let mut n = 0;
                        p.frames(|kind, _| n += u64::from(kind == 0x80));
                        if n > 0 {
                            delivered.fetch_add(n, Ordering::Relaxed);
                            if let Some(t0) = started.get() {
                                last_rx_us
                                    .fetch_max(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
                            }
                            quiet_since = Instant::now();
                        }
                    }
                    Ok(false) => {}
                    Err(e) => {
                        eprintln!("receiver: {e}");
                        return count(&p);
                    }
                }
                let now = Instant::now();
                if (stop.load(Ordering::Relaxed)
                    && now.duration_since(quiet_since) > Duration::from_millis(500))
                    || now > hard_end
                {
                    return count(&p);
                }
            }
        }));
    }
    let go = Arc::new(Barrier::new(senders + 1));
    let sent = Arc::new(AtomicU64::new(0));
    let mut tx_threads = Vec::new();
    for i in 0..senders {
        let mut p = Peer::connect(addr, compress).expect("sender connects");
        p.send(&hops_flow_zero()).expect("hops flow");
        p.stream
            .set_read_timeout(Some(Duration::from_millis(1)))
            .expect("timeout");
        let (go, sent, delivered) = (go.clone(), sent.clone(), delivered.clone());
        tx_threads.push(std::thread::spawn(move || {
            let mut q = QueryMaker::new(0x5EED + i as u64 * 7919, 6, 3);
            let mut batch = Vec::with_capacity(32 * 83);
            go.wait();
            let t0 = Instant::now();
            let mut n = 0u64;
            while n < max && t0.elapsed().as_secs_f64() < secs {
                if window > 0 {
                    let in_flight = |sent: u64| {
                        sent.saturating_sub(delivered.load(Ordering::Relaxed) / receivers as u64)
                    };
                    while in_flight(sent.load(Ordering::Relaxed)) + 32 > window
                        && t0.elapsed().as_secs_f64() < secs
                    {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                }
                batch.clear();
                for _ in 0..32 {
                    q.push(&mut batch);
                }
                if let Err(e) = p.send(&batch) {
                    eprintln!("sender: {e}");
                    break;
                }
                n += 32;
                sent.fetch_add(32, Ordering::Relaxed);
                // Alive pings from the node: read now and then so nothing backs up.
                if n.is_multiple_of(4096) {
                    let _ = p.read_some();
                    p.plain.clear();
                }
            }
        }));
    }
    // Let the node register every link and send its greetings.
    std::thread::sleep(Duration::from_millis(300));
    println!("ready");
    if wait_for("go") == "quit" {
        std::process::exit(0);
    }
    let c0 = cpu_secs();
    started.set(Instant::now()).expect("once");
    go.wait();
    for t in tx_threads {
        t.join().expect("sender");
    }
    let send_secs = started.get().expect("set").elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in rx_threads {
        t.join().expect("receiver");
    }
    let c1 = cpu_secs();
    println!(
        "done sent={} delivered={} wire={} plain={} secs={} send_secs={send_secs} peers_cpu={}",
        sent.load(Ordering::Relaxed),
        delivered.load(Ordering::Relaxed),
        bytes.0.load(Ordering::Relaxed),
        bytes.1.load(Ordering::Relaxed),
        last_rx_us.load(Ordering::Relaxed) as f64 / 1e6,
        c1 - c0
    );
    wait_for("quit");
}

fn peers_latency(
    addr: SocketAddrV4,
    compress: bool,
    n: usize,
    wait_for: &mut dyn FnMut(&str) -> String,
) {
    const WARMUP: usize = 50;
    let mut asker = Peer::connect(addr, compress).expect("asker connects");
    let mut answerer = Peer::connect(addr, compress).expect("answerer connects");
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    answerer
        .stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let responder = {
        let (stop, answered) = (stop.clone(), answered.clone());
        std::thread::spawn(move || {
            let mut hit = hit_template(answerer.guid);
            let mut out = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match answerer.read_some() {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(_) => return,
                }
                out.clear();
                answerer.frames(|kind, d| {
                    if kind == 0x80 {
                        hit[..16].copy_from_slice(&d[..16]);
                        out.extend_from_slice(&hit);
                    }
                });
                if !out.is_empty() {
                    let k = (out.len() / hit.len()) as u64;
                    if answerer.send(&out).is_err() {
                        return;
                    }
                    answered.fetch_add(k, Ordering::Relaxed);
                }
            }
        })
    };
    asker
        .stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    std::thread::sleep(Duration::from_millis(300));
    // The node's greetings.
    while asker.read_some().unwrap_or(false) {}
    asker.plain.clear();
    println!("ready");
    if wait_for("go") == "quit" {
        std::process::exit(0);
    }
    let mut q = QueryMaker::new(0x1A7, 6, 2);
    let mut times = Vec::with_capacity(n);
    let mut lost = 0;
    let mut buf = Vec::new();
    for i in 0..n + WARMUP {
        buf.clear();
        let muid = q.push(&mut buf);
        let t0 = Instant::now();
        asker.send(&buf).expect("asker sends");
        let deadline = t0 + Duration::from_secs(1);
        let mut got = None;
        while got.is_none() && Instant::now() < deadline {
            let mut done = false;
            asker.frames(|kind, d| done |= kind == 0x81 && d[..16] == muid.0);
            if done {
                got = Some(t0.elapsed());
                break;
            }
            if asker.read_some().is_err() {
                break;
            }
        }
        match got {
            Some(t) if i >= WARMUP => times.push(t.as_secs_f64() * 1e3),
            Some(_) => {}
            None => lost += 1,
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = responder.join();
    times.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        times
            .get(((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "done n={} lost={lost} median_ms={} p99_ms={} max_ms={} answered={}",
        times.len(),
        pct(0.5),
        pct(0.99),
        times.last().copied().unwrap_or(f64::NAN),
        answered.load(Ordering::Relaxed)
    );
    wait_for("quit");
}

// ---------------------------------------------------------------------------------------------
// The top level: run each measurement in fresh processes, then print the table.

fn run_node(args: &[&str]) -> Fields {
    eprintln!("running: net_bench node {}", args.join(" "));
    let out = Command::new(std::env::current_exe().expect("own path"))
        .arg("node")
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("node process");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT from node {args:?}: {text}"));
    parse_fields(line)
}

struct RouteFig {
    routed_per_s: f64,
    in_per_s: f64,
    node_cpu_ms: f64,
    peers_cpu_ms: f64,
    loss: f64,
    /// Node output on the wire ÷ its descriptors.
    wire_ratio: f64,
}

/// Queries in flight (sent, not yet at every receiver) in the closed-loop runs: 512 x 83 B is
/// below the node's flow-control watermark, so nothing needs shedding.
const WINDOW: u64 = 512;

fn route(compress: bool, s: usize, r: usize, secs: f64, window: u64) -> RouteFig {
    let c = if compress { "1" } else { "0" };
    let f = run_node(&[
        "route",
        c,
        &s.to_string(),
        &r.to_string(),
        &secs.to_string(),
        "50000000",
        &window.to_string(),
    ]);
    let delivered = num(&f, "delivered");
    // Sending time, or until the last delivery if that came later.
    let t = num(&f, "secs").max(num(&f, "send_secs"));
    let k = delivered / 1000.0;
    let fig = RouteFig {
        routed_per_s: delivered / t,
        in_per_s: num(&f, "node_in") / t,
        node_cpu_ms: num(&f, "node_cpu") / k * 1e3,
        peers_cpu_ms: num(&f, "peers_cpu") / k * 1e3,
        loss: 1.0 - delivered / (num(&f, "sent") * r as f64),
        wire_ratio: num(&f, "wire") / num(&f, "plain"),
    };
    eprintln!("  {f:?}");
    fig
}

struct MemFig {
    rss: Vec<(f64, f64)>,
    heap: Vec<(f64, f64)>,
    base: f64,
}

fn memory(compress: bool, kind: MemKind) -> MemFig {
    let f = run_node(&["mem", if compress { "1" } else { "0" }, kind.arg()]);
    let mut fig = MemFig {
        rss: Vec::new(),
        heap: Vec::new(),
        base: num(&f, "base_rss"),
    };
    for n in MEM_STEPS {
        let links = num(&f, &format!("links{n}"));
        fig.rss.push((links, num(&f, &format!("rss{n}"))));
        fig.heap.push((links, num(&f, &format!("heap{n}"))));
    }
    eprintln!("  {f:?}");
    fig
}

fn latency(compress: bool, n: usize) -> Fields {
    let f = run_node(&["lat", if compress { "1" } else { "0" }, &n.to_string()]);
    eprintln!("  {f:?}");
    f
}

fn top(quick: bool) {
    let secs = if quick { 1.0 } else { 3.0 };
    let trips = if quick { 1000 } else { 3000 };
    let mem: Vec<((bool, MemKind), MemFig)> = [MemKind::Idle, MemKind::Warm, MemKind::Leaf]
        .into_iter()
        .flat_map(|k| [(true, k), (false, k)])
        .map(|(c, k)| ((c, k), memory(c, k)))
        .collect();
    let mut routes = Vec::new();
    for window in [WINDOW, 0] {
        for (s, r) in [(1, 1), (4, 4)] {
            for c in [true, false] {
                routes.push(((window, s, r, c), route(c, s, r, secs, window)));
            }
        }
    }
    let lats: Vec<(bool, Fields)> = [true, false]
        .into_iter()
        .map(|c| (c, latency(c, trips)))
        .collect();

    let onoff = |c: bool| if c { "on " } else { "off" };
    println!();
    println!(
        "net_bench: one ultrapeer (Node::start) on 127.0.0.1, {} cores; peers in a separate process",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    print!(
        "\
1. Routing: S senders -> node -> R receivers, fresh queries (TTL 3, 60-byte payload), {secs} s.
   routed = query copies delivered to receivers per second of sending; in = queries the node
   read per second; node ms, peers ms = user+sys CPU ms per 1000 routed, of the whole node
   process (all its threads) and of the whole peers process; lost = 1 - routed/(sent x R),
   shed by the node's output queues; wire/plain = node output bytes on the wire / descriptor
   bytes; vs off = routed/s relative to the same run without compression.
   window {WINDOW}: at most {WINDOW} queries sent and not yet at every receiver (closed loop: what
   the node routes without shedding). blast: senders write as fast as the node reads.
"
    );
    println!(
        "   {:<10} {:<4} {:<4} {:>9} {:>9} {:>8} {:>9} {:>10} {:>6} {:>10}",
        "mode",
        "S->R",
        "zlib",
        "routed/s",
        "in/s",
        "vs off",
        "node ms",
        "peers ms",
        "lost",
        "wire/plain"
    );
    for &((w, s, r, c), ref f) in &routes {
        let off = &routes
            .iter()
            .find(|((w2, s2, r2, c2), _)| *w2 == w && *s2 == s && *r2 == r && !*c2)
            .expect("baseline")
            .1;
        println!(
            "   {:<10} {:<4} {:<4} {:>9.0} {:>9.0} {:>8.2} {:>9.3} {:>10.3} {:>5.1}% {:>10.3}",
            if w > 0 {
                format!("window {w}")
            } else {
                "blast".into()
            },
            format!("{s}->{r}"),
            onoff(c),
            f.routed_per_s,
            f.in_per_s,
            f.routed_per_s / off.routed_per_s,
            f.node_cpu_ms,
            f.peers_cpu_ms,
            f.loss * 100.0,
            f.wire_ratio
        );
    }
    println!();
    print!(
        "\
2. Memory of the node process per ultrapeer link: least-squares slope over 50, 100, 200 links.
   RSS from /proc/self/statm; heap = live bytes allocated (counting allocator). idle: handshake
   and one ping/pong; warm: each link has also carried >= 32 KiB each way; leaf: a leaf link
   that has also sent a 2^16-slot QRP table ({LEAF_TABLE_SET} slots set, RESET + zlib PATCH).
   zlib cost = RSS slope with compression minus without.
"
    );
    println!(
        "   {:<5} {:<5} {:>10} {:>12} {:>12} {:>12} {:>14}",
        "links",
        "zlib",
        "base RSS",
        "RSS@200 KiB",
        "RSS KiB/link",
        "heap KiB/link",
        "zlib cost/link"
    );
    for &((c, k), ref f) in &mem {
        let off = &mem
            .iter()
            .find(|((c2, k2), _)| !*c2 && *k2 == k)
            .expect("baseline")
            .1;
        let extra = if c {
            format!("{:+.1}", slope(&f.rss) - slope(&off.rss))
        } else {
            "-".into()
        };
        println!(
            "   {:<5} {:<5} {:>10.0} {:>12.0} {:>12.1} {:>12.1} {:>14}",
            k.arg(),
            onoff(c),
            f.base,
            f.rss.last().map_or(0.0, |p| p.1),
            slope(&f.rss),
            slope(&f.heap),
            extra
        );
    }
    println!("   target: <= 48 KiB per compressed link (gtk-gnutella: 62-163 KiB)");
    println!("   target: <= 40 KiB per compressed leaf with a table (gtk-gnutella: 62.3 KiB)");
    println!();
    println!(
        "3. Query -> QueryHit round trip through the node, one in flight, after 50 warm-up trips"
    );
    println!(
        "   {:<5} {:>6} {:>10} {:>10} {:>10} {:>5}",
        "zlib", "n", "median ms", "p99 ms", "max ms", "lost"
    );
    for (c, f) in &lats {
        println!(
            "   {:<5} {:>6.0} {:>10.3} {:>10.3} {:>10.3} {:>5.0}",
            onoff(*c),
            num(f, "n"),
            num(f, "median_ms"),
            num(f, "p99_ms"),
            num(f, "max_ms"),
            num(f, "lost")
        );
    }
    println!(
        "   target: median <= 0.3 ms both ways (gtk-gnutella: 504 ms, it buffers up to 500 ms)"
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Spawns `getconf` once, before any thread could see the signal of its exit.
    clock_ticks();
    match args.first().map(String::as_str) {
        None => top(false),
        Some("quick") => top(true),
        Some("node") => node_main(&args[1..]),
        Some("peers") => peers_main(&args[1..]),
        Some(other) => {
            eprintln!("usage: net_bench [quick]  (unknown argument {other})");
            std::process::exit(2);
        }
    }
}
