//! Distribution time of one file to N downloaders (the swarm benchmark), against the
//! bounds of SWARM.md §7: client-server `max(N·F/u_s, F/d_min)` and P2P
//! `max(F/u_s, F/d_min, N·F/(u_s + N·u))`.
//!
//! One seed with upload limit `u_s`, N downloaders with upload limit `u` each (downloads
//! unlimited, so `F/d_min` ≈ 0), all servents on 127.0.0.1 in this process, all started
//! together; the time is until the last one holds the verified file. Both modes run in the same
//! invocation: `share_partial` off (client-server) and on (swarm).
//!
//! `cargo run --release --example swarm_bench -- [MiB] [u_s MiB/s] [u MiB/s] [N…]`
//! (default 16 4 1 and N = 1 2 4 8 16 32). Writes `target/swarm-bench.svg`.

use std::time::{Duration, Instant};

use servent::net::NodeConfig;
use servent::servent::{Servent, ServentConfig};
use servent::transfer::download::{Progress, Source, Spec};
use servent::wire::Sha1Urn;

fn dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("servent-swarm-bench-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn node(tag: &str, share: Option<&[u8]>, partial: bool, up: u64) -> Servent {
    let mut n = NodeConfig::new("127.0.0.1:0".parse().unwrap(), dir(tag));
    n.accept_private = true;
    n.bootstrap = Vec::new();
    let mut cfg = ServentConfig::new(n);
    if let Some(data) = share {
        let d = dir(&format!("{tag}-share"));
        std::fs::write(d.join("bench.bin"), data).unwrap();
        cfg.shares = vec![d];
    }
    cfg.firewalled = Some(false);
    cfg.share_partial = partial;
    cfg.upload_limit = up;
    cfg.rescan_every = None;
    Servent::start(cfg).await.unwrap()
}

async fn run(data: &[u8], n: usize, partial: bool, us: u64, u: u64) -> Duration {
    let mode = if partial { "p2p" } else { "cs" };
    let seed = node(&format!("{mode}{n}-seed"), Some(data), true, us).await;
    let f = seed.library().read().unwrap().files()[0].clone();
    let spec = Spec {
        urn: Sha1Urn::digest(data),
        size: data.len() as u64,
        name: "bench.bin".into(),
        sources: vec![Source {
            addr: seed.node().listen_addr(),
            index: f.index,
            name: "bench.bin".into(),
            servent: seed.node().servent(),
            push: false,
        }],
        tth: f.tth,
    };
    let mut peers = Vec::new();
    for i in 0..n {
        peers.push(node(&format!("{mode}{n}-{i}"), None, partial, u).await);
    }
    let t0 = Instant::now();
    let tasks: Vec<_> = peers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (p, spec, out) = (p.clone(), spec.clone(), dir(&format!("{mode}{n}-out{i}")));
            async_std::task::spawn(async move {
                p.download(spec, &out, &Progress::default()).await.unwrap();
                t0.elapsed()
            })
        })
        .collect();
    // SWARM_TRACE=1: each second, what the seed and the downloaders upload and how many
    // uploads run, to see where capacity goes unused.
    let trace = std::env::var_os("SWARM_TRACE").is_some().then(|| {
        let (seed, peers) = (seed.clone(), peers.clone());
        async_std::task::spawn(async move {
            use std::sync::atomic::Ordering::Relaxed;
            let mut prev = (0u64, 0u64);
            loop {
                async_std::task::sleep(Duration::from_secs(1)).await;
                let s = seed.uploads().bytes_sent.load(Relaxed);
                let p: u64 = peers.iter().map(|p| p.uploads().bytes_sent.load(Relaxed)).sum();
                let act: usize = peers.iter().map(|p| p.uploads().tracker.active()).sum();
                let got: u64 = peers.iter().map(|p| p.downloaded_bytes()).sum();
                eprintln!(
                    "t={:>5.1} seed {:>5.2} MiB/s ({} up)  peers {:>6.2} MiB/s ({act} up)  got {:>6.1} MiB",
                    t0.elapsed().as_secs_f64(),
                    (s - prev.0) as f64 / 1048576.0,
                    seed.uploads().tracker.active(),
                    (p - prev.1) as f64 / 1048576.0,
                    got as f64 / 1048576.0,
                );
                prev = (s, p);
            }
        })
    });
    let mut last = Duration::ZERO;
    for t in tasks {
        last = last.max(t.await);
    }
    if let Some(t) = trace {
        t.cancel().await;
    }
    for p in peers {
        p.shutdown().await;
    }
    seed.shutdown().await;
    last
}

/// N, client-server time, swarm time, client-server bound, P2P bound.
type Row = (usize, f64, f64, f64, f64);

fn svg(rows: &[Row]) -> String {
    let (w, h, m) = (640.0, 400.0, 50.0);
    let maxn = rows.iter().map(|r| r.0).max().unwrap_or(1) as f64;
    let maxt = rows
        .iter()
        .map(|r| r.1.max(r.2).max(r.3).max(r.4))
        .fold(1.0, f64::max);
    let x = |n: f64| m + (n / maxn) * (w - 2.0 * m);
    let y = |t: f64| h - m - (t / maxt) * (h - 2.0 * m);
    let line = |f: &dyn Fn(&Row) -> f64, color: &str, dash: &str| {
        let pts: Vec<String> = rows
            .iter()
            .map(|r| format!("{:.1},{:.1}", x(r.0 as f64), y(f(r))))
            .collect();
        format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\" points=\"{}\"/>",
            pts.join(" ")
        )
    };
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <line x1=\"{m}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\
         <line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{}\" stroke=\"black\"/>\
         <text x=\"{}\" y=\"{}\">downloaders N</text><text x=\"5\" y=\"{}\">s</text>",
        h - m,
        w - m,
        h - m,
        h - m,
        w / 2.0,
        h - 15.0,
        m - 10.0
    );
    s += &line(&|r| r.1, "#c0392b", "");
    s += &line(&|r| r.3, "#c0392b", "6 4");
    s += &line(&|r| r.2, "#2471a3", "");
    s += &line(&|r| r.4, "#2471a3", "6 4");
    for r in rows {
        s += &format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x(r.0 as f64),
            h - m + 15.0,
            r.0
        );
    }
    s += &format!(
        "<text x=\"{m}\" y=\"{}\" text-anchor=\"end\">{maxt:.0}</text>\
         <text x=\"{}\" y=\"20\" fill=\"#c0392b\">client-server: measured (solid), bound (dashed)</text>\
         <text x=\"{}\" y=\"36\" fill=\"#2471a3\">swarm: measured (solid), P2P bound (dashed)</text></svg>",
        m + 4.0,
        m + 10.0,
        m + 10.0
    );
    s
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: f64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (mib, us_mib, u_mib) = (num(0, 16.0), num(1, 4.0), num(2, 1.0));
    let ns: Vec<usize> = if args.len() > 3 {
        args[3..].iter().filter_map(|a| a.parse().ok()).collect()
    } else {
        vec![1, 2, 4, 8, 16, 32]
    };
    let size = (mib * 1024.0 * 1024.0) as usize;
    let data = servent::cli::demo::sample(42, size);
    let (us, u) = ((us_mib * 1048576.0) as u64, (u_mib * 1048576.0) as u64);
    println!("F = {mib} MiB, u_s = {us_mib} MiB/s, u = {u_mib} MiB/s, downloads unlimited");
    println!(
        "| N | client-server (s) | bound N·F/u_s | swarm (s) | P2P bound | swarm / P2P bound | cs / swarm |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for &n in &ns {
        let cs = async_std::task::block_on(run(&data, n, false, us, u)).as_secs_f64();
        let p2p = async_std::task::block_on(run(&data, n, true, us, u)).as_secs_f64();
        let nf = n as f64 * mib;
        let bound_cs = nf / us_mib;
        let bound_p2p = (mib / us_mib).max(nf / (us_mib + n as f64 * u_mib));
        println!(
            "| {n} | {cs:.1} | {bound_cs:.1} | {p2p:.1} | {bound_p2p:.1} | {:.2} | {:.2} |",
            p2p / bound_p2p,
            cs / p2p
        );
        rows.push((n, cs, p2p, bound_cs, bound_p2p));
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/swarm-bench.svg");
    let _ = std::fs::write(&out, svg(&rows));
    println!("chart: {}", out.display());
}
