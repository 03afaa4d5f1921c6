//! Wire-layer benchmark: decode and encode throughput on a mixed descriptor stream, against a
//! plain memcpy of the same bytes, plus heap allocations per descriptor type during decode.
//!
//! `cargo bench --bench wire`. No harness: a plain `main` that prints a table. Each round runs
//! the three measurements back to back (decode, encode, memcpy) so that machine noise hits all
//! three alike; the medians over the rounds are reported.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use servent::wire::ggep::{Encoding, int_bytes};
use servent::wire::{
    Descriptor, ExtBuilder, FileIndex, Frames, GgepBuilder, Guid, Hops, Payload, PayloadType, Ping,
    Pong, Push, Qhd, QhdFlags, Query, QueryFlags, QueryHit, Results, ResultsBuilder, ServentId,
    Sha1Urn, Text, Trailer, Ttl, VendorCode, ext::Extensions, ggep::Ggep,
};

// ---------------------------------------------------------------------------------------------
// Allocation counting

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------------------
// A deterministic stream

/// xorshift64*: reproducible, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        for c in b.chunks_mut(8) {
            let r = self.next().to_le_bytes();
            c.copy_from_slice(&r[..c.len()]);
        }
        b
    }
    fn addr(&mut self) -> SocketAddrV4 {
        let b = self.bytes::<4>();
        SocketAddrV4::new(Ipv4Addr::from(b), 1024 + self.below(60000) as u16)
    }
}

const WORDS: &[&str] = &[
    "live",
    "remix",
    "album",
    "mozart",
    "piano",
    "sonata",
    "linux",
    "debian",
    "iso",
    "ubuntu",
    "beatles",
    "abbey",
    "road",
    "jazz",
    "blues",
    "concert",
    "symphony",
    "guitar",
    "lesson",
    "podcast",
    "episode",
    "audiobook",
    "chapter",
    "ogg",
    "flac",
    "mp3",
    "video",
    "trailer",
    "documentary",
    "nature",
    "ocean",
    "mountain",
    "python",
    "tutorial",
    "recipe",
    "garden",
];
const EXTS: &[&str] = &[".mp3", ".ogg", ".flac", ".avi", ".iso", ".pdf", ".mkv"];

fn word(r: &mut Rng) -> &'static str {
    WORDS[r.below(WORDS.len() as u64) as usize]
}

/// A file name of 20–40 bytes: words joined by `_`, then an extension.
fn file_name(r: &mut Rng) -> String {
    let target = r.range(20, 40) as usize;
    let ext = EXTS[r.below(EXTS.len() as u64) as usize];
    let mut s = String::new();
    while s.len() + ext.len() < target {
        if !s.is_empty() {
            s.push('_');
        }
        s.push_str(word(r));
    }
    s.truncate(target - ext.len());
    s.push_str(ext);
    s
}

const NUL_SAFE: Encoding = Encoding {
    deflate: false,
    cobs_if_nul: true,
};

/// A random MUID with the 0.6 marks, TTL `ttl`, hops drawn from `hops`.
fn header(r: &mut Rng, ttl: u8, hops: (u64, u64)) -> (Guid, Ttl, Hops) {
    let hops = r.range(hops.0, hops.1) as u8;
    let mut g = r.bytes::<16>();
    g[8] = 0xff;
    g[15] = 0;
    (Guid(g), Ttl(ttl), Hops(hops))
}

fn put(out: &mut Vec<u8>, (muid, ttl, hops): (Guid, Ttl, Hops), payload: Payload<'_>) {
    Descriptor {
        muid,
        ttl,
        hops,
        payload,
    }
    .encode(out);
}

fn gen_query(r: &mut Rng, out: &mut Vec<u8>) {
    let n = r.range(2, 4);
    let criteria = (0..n).map(|_| word(r)).collect::<Vec<_>>().join(" ");
    let mut g = GgepBuilder::new();
    let media = [0x04u64, 0x08, 0x10, 0x20][r.below(4) as usize];
    let (b, len) = int_bytes(media);
    g.push("M", &b[..len], NUL_SAFE).unwrap();
    let mut e = ExtBuilder::new();
    e.text("urn:").ggep(&g.finish());
    let ext = e.finish();
    let q = Query {
        flags: QueryFlags(QueryFlags::MARKED | QueryFlags::GGEP_H | QueryFlags::OOB),
        criteria: Text(criteria.as_bytes()),
        extensions: Extensions::parse(&ext).unwrap(),
    };
    put(out, header(r, 3, (0, 3)), Payload::Query(q));
}

fn gen_hit(r: &mut Rng, out: &mut Vec<u8>) {
    let mut rb = ResultsBuilder::new();
    for _ in 0..10 {
        let name = file_name(r);
        let sha1 = Sha1Urn(r.bytes::<20>());
        let mut e = ExtBuilder::new();
        e.urn(&sha1);
        let ext = e.finish();
        rb.push(
            FileIndex(r.below(100_000) as u32),
            r.range(100_000, 800_000_000) as u32,
            &name,
            &ext,
        );
    }
    let results = Results::from_bytes(rb.bytes(), rb.count()).unwrap();
    let flags = QhdFlags {
        push: r.below(3) == 0,
        uploaded: r.below(2) == 0,
        ggep: true,
        ..Default::default()
    };
    let open = flags.to_ab();
    let mut g = GgepBuilder::new();
    // gtk-gnutella's private block: its version, and browse-host support.
    g.push(
        "GTKGV",
        &[1, 1, 2, 0, 0x75, 0x4f, 0x95, 0x6a, 0],
        Encoding::default(),
    )
    .unwrap();
    g.push("BH", &[], Encoding::default()).unwrap();
    let private = g.finish();
    let hit = QueryHit {
        addr: r.addr(),
        speed: 1000,
        results,
        trailer: Trailer::Qhd(Qhd {
            vendor: VendorCode::GTKG,
            open_data: &open,
            private: &private,
        }),
        servent: ServentId(r.bytes::<16>()),
    };
    put(out, header(r, 5, (1, 4)), Payload::QueryHit(hit));
}

fn gen_ping(r: &mut Rng, out: &mut Vec<u8>) {
    let block;
    let ping = if r.below(2) == 0 {
        let mut g = GgepBuilder::new();
        g.push("SCP", &[1], Encoding::default()).unwrap();
        block = g.finish();
        Ping {
            ggep: Some(Ggep::parse_all(&block).unwrap()),
        }
    } else {
        Ping::default()
    };
    put(out, header(r, 1, (0, 0)), Payload::Ping(ping));
}

fn gen_pong(r: &mut Rng, out: &mut Vec<u8>) {
    let mut g = GgepBuilder::new();
    let (b, len) = int_bytes(r.range(600, 86_400));
    g.push("DU", &b[..len], Encoding::default()).unwrap();
    g.push(
        "UP",
        &[0, r.below(30) as u8, r.below(10) as u8],
        Encoding::default(),
    )
    .unwrap();
    let block = g.finish();
    let pong = Pong {
        addr: r.addr(),
        files: r.below(5000) as u32,
        kbytes: r.below(50_000_000) as u32,
        ggep: Some(Ggep::parse_all(&block).unwrap()),
    };
    put(out, header(r, 1, (0, 2)), Payload::Pong(pong));
}

fn gen_push(r: &mut Rng, out: &mut Vec<u8>) {
    let push = Push {
        target: ServentId(r.bytes::<16>()),
        index: FileIndex(r.below(100_000) as u32),
        addr: r.addr(),
        ggep: None,
    };
    put(out, header(r, 4, (1, 3)), Payload::Push(push));
}

/// Descriptor mix by count, as on a busy ultrapeer link.
const MIX: &[(PayloadType, u32)] = &[
    (PayloadType::Query, 40),
    (PayloadType::QueryHit, 10),
    (PayloadType::Ping, 20),
    (PayloadType::Pong, 20),
    (PayloadType::Push, 10),
];

fn generate(kind: PayloadType, r: &mut Rng, out: &mut Vec<u8>) {
    match kind {
        PayloadType::Query => gen_query(r, out),
        PayloadType::QueryHit => gen_hit(r, out),
        PayloadType::Ping => gen_ping(r, out),
        PayloadType::Pong => gen_pong(r, out),
        PayloadType::Push => gen_push(r, out),
        _ => unreachable!(),
    }
}

/// About `target` bytes of descriptors in the proportions of [`MIX`], in shuffled order.
fn mixed_stream(target: usize, r: &mut Rng) -> (Vec<u8>, usize) {
    let mut kinds = Vec::new();
    let mut out = Vec::with_capacity(target + 4096);
    let mut n = 0;
    while out.len() < target {
        if kinds.is_empty() {
            for &(k, pct) in MIX {
                kinds.extend(std::iter::repeat_n(k, pct as usize));
            }
            // Fisher–Yates over each block of 100 so the mix holds locally too.
            for i in (1..kinds.len()).rev() {
                kinds.swap(i, r.below(i as u64 + 1) as usize);
            }
        }
        generate(kinds.pop().unwrap(), r, &mut out);
        n += 1;
    }
    (out, n)
}

/// The descriptors of type `k` in `buf`, in order.
fn only_kind(buf: &[u8], k: PayloadType) -> Vec<u8> {
    let mut only = Vec::new();
    for f in Frames::new(buf).filter(|f| f.header.kind == k) {
        only.extend_from_slice(&f.header.to_bytes());
        only.extend_from_slice(f.payload);
    }
    only
}

// ---------------------------------------------------------------------------------------------
// Measurements

#[inline(never)]
fn decode_all(buf: &[u8]) -> usize {
    let mut n = 0;
    for f in Frames::new(buf) {
        let d = Descriptor::decode(&f);
        black_box(&d);
        n += usize::from(d.is_ok());
    }
    n
}

fn encode_all(ds: &[Descriptor<'_>], out: &mut Vec<u8>) {
    out.clear();
    for d in ds {
        d.encode(out);
    }
    black_box(&out[..]);
}

fn memcpy(src: &[u8], dst: &mut [u8]) {
    dst.copy_from_slice(black_box(src));
    black_box(&dst[..]);
}

fn timed(iters: u32, mut f: impl FnMut()) -> Duration {
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed()
}

/// Iterations of `f` to fill about `budget`.
fn calibrate(budget: Duration, mut f: impl FnMut()) -> u32 {
    f();
    let one = timed(1, &mut f).max(Duration::from_micros(1));
    ((budget.as_secs_f64() / one.as_secs_f64()).ceil() as u32).max(1)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

const ROUNDS: usize = 11;
const BUDGET: Duration = Duration::from_millis(250);

fn main() {
    let mut rng = Rng(0x5EED_6E75_7465_6C6C);
    let (buf, n) = mixed_stream(4 << 20, &mut rng);
    let bytes = buf.len();

    // Sanity: the stream frames and decodes whole, and re-encodes to the same bytes.
    let mut frames = Frames::new(&buf);
    let decoded: Vec<Descriptor<'_>> = frames
        .by_ref()
        .map(|f| Descriptor::decode(&f).expect("generated descriptor decodes"))
        .collect();
    assert!(frames.error().is_none() && frames.consumed() == bytes);
    assert_eq!(decoded.len(), n);
    let mut out = Vec::with_capacity(bytes);
    encode_all(&decoded, &mut out);
    assert_eq!(out, buf, "re-encoding is not byte-exact");
    let mut dst = vec![0u8; bytes];

    println!(
        "wire benchmark: mixed stream of {n} descriptors, {bytes} bytes ({:.1} MiB, {:.0} B/descriptor avg)",
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / n as f64
    );
    print!("mix by count (of bytes):");
    for &(k, _) in MIX {
        let of_kind = || decoded.iter().filter(|d| d.payload.kind() == k);
        let b: usize = of_kind().map(|d| d.to_vec().len()).sum();
        print!(
            " {} {:.0}% ({:.0}%)",
            k.name(),
            100.0 * of_kind().count() as f64 / n as f64,
            100.0 * b as f64 / bytes as f64
        );
    }
    println!();
    println!(
        "query: 2-4 words + urn: + GGEP M; hit: 10 results (20-40 B names, urn:sha1), QHD GTKG + \
         flags + private GGEP, servent GUID; ping: half with GGEP SCP; pong: GGEP DU+UP; push: plain"
    );

    // `WIRE_BENCH_PROFILE=decode|encode|<type>` (a type name as printed below, e.g. `pong`)
    // loops on that one measurement for about 10 s (or `WIRE_BENCH_PROFILE_SECS`), for a
    // profiler (perf, valgrind --tool=callgrind) to look at it alone.
    if let Ok(what) = std::env::var("WIRE_BENCH_PROFILE") {
        let only = MIX
            .iter()
            .find(|(k, _)| k.name() == what)
            .map(|&(k, _)| only_kind(&buf, k));
        let secs = std::env::var("WIRE_BENCH_PROFILE_SECS").map_or(10.0, |s| s.parse().unwrap());
        let t = Instant::now();
        let mut done = 0;
        loop {
            done += match (what.as_str(), &only) {
                ("encode", _) => {
                    encode_all(&decoded, &mut out);
                    decoded.len()
                }
                (_, Some(only)) => decode_all(black_box(only)),
                _ => decode_all(black_box(&buf)),
            };
            if t.elapsed() >= Duration::from_secs_f64(secs) {
                break;
            }
        }
        println!("profiled {what}: {done} descriptors");
        return;
    }

    let it_dec = calibrate(BUDGET, || {
        black_box(decode_all(&buf));
    });
    let it_enc = calibrate(BUDGET, || encode_all(&decoded, &mut out));
    let it_cpy = calibrate(BUDGET, || memcpy(&buf, &mut dst));

    let (mut dec, mut enc, mut cpy) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Rotate the order too, so none of the three always runs first.
        for k in 0..3 {
            match (round + k) % 3 {
                0 => {
                    let t = timed(it_dec, || {
                        black_box(decode_all(black_box(&buf)));
                    });
                    dec.push(t.as_secs_f64() / it_dec as f64);
                }
                1 => {
                    let t = timed(it_enc, || encode_all(black_box(&decoded), &mut out));
                    enc.push(t.as_secs_f64() / it_enc as f64);
                }
                _ => {
                    let t = timed(it_cpy, || memcpy(&buf, &mut dst));
                    cpy.push(t.as_secs_f64() / it_cpy as f64);
                }
            }
        }
    }
    let (d, e, c) = (median(&mut dec), median(&mut enc), median(&mut cpy));
    println!();
    println!(
        "median of {ROUNDS} interleaved rounds (~{} ms each measurement; MB = 10^6 bytes)",
        BUDGET.as_millis()
    );
    println!(
        "{:<8} {:>12} {:>14} {:>10} {:>12} {:>10}",
        "", "ns/pass", "descriptors/s", "MB/s", "ns/descr.", "vs memcpy"
    );
    for (name, t) in [("decode", d), ("encode", e), ("memcpy", c)] {
        println!(
            "{:<8} {:>12.0} {:>12.2} M {:>10.0} {:>12.1} {:>9.3}x",
            name,
            t * 1e9,
            n as f64 / t / 1e6,
            bytes as f64 / t / 1e6,
            t * 1e9 / n as f64,
            c / t
        );
    }
    let spread = |v: &[f64]| {
        let lo = v.first().unwrap();
        let hi = v.last().unwrap();
        (hi - lo) / lo * 100.0
    };
    println!(
        "spread (max-min)/min over rounds: decode {:.0}%, encode {:.0}%, memcpy {:.0}%",
        spread(&dec),
        spread(&enc),
        spread(&cpy)
    );
    println!(
        "best round: decode {:.2} M/s, encode {:.2} M/s, memcpy {:.0} MB/s",
        n as f64 / dec[0] / 1e6,
        n as f64 / enc[0] / 1e6,
        bytes as f64 / cpy[0] / 1e6
    );
    let target = 20e6;
    let rate = n as f64 / d;
    println!(
        "decode target >= 20 M descriptors/s: {} ({:.1} M/s)",
        if rate >= target { "MET" } else { "NOT MET" },
        rate / 1e6
    );

    // Per type: decode time on a stream of that type alone, and heap allocations.
    println!();
    println!(
        "{:<10} {:>8} {:>10} {:>12} {:>14} {:>8}",
        "type", "count", "ns/decode", "allocs", "allocs/descr.", "target"
    );
    for &(k, _) in MIX {
        let only = only_kind(&buf, k);
        let count = Frames::new(&only).count();
        let frames: Vec<_> = Frames::new(&only).collect();
        let mut total = 0u64;
        let mut worst = 0u64;
        for f in &frames {
            let before = allocs();
            let d = Descriptor::decode(f);
            black_box(&d);
            let a = allocs() - before;
            total += a;
            worst = worst.max(a);
        }
        let it = calibrate(Duration::from_millis(100), || {
            black_box(decode_all(&only));
        });
        let mut ts: Vec<f64> = (0..5)
            .map(|_| {
                timed(it, || {
                    black_box(decode_all(black_box(&only)));
                })
                .as_secs_f64()
                    / it as f64
            })
            .collect();
        let t = median(&mut ts);
        let target = if k == PayloadType::Query { 1 } else { 0 };
        println!(
            "{:<10} {:>8} {:>10.1} {:>12} {:>14.2} {:>8}{}",
            k.name(),
            count,
            t * 1e9 / count as f64,
            total,
            total as f64 / count as f64,
            format!("<= {target}"),
            if worst > target { "  OVER" } else { "" }
        );
    }
    let before = allocs();
    black_box(decode_all(&buf));
    println!(
        "whole mixed stream: {} allocations over {n} decodes",
        allocs() - before
    );
}
