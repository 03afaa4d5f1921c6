//! Distribution time of one file to N downloaders (the swarm issue's benchmark), against the
//! bounds of SWARM.md §7: client-server `max(N·F/u_s, F/d_min)` and P2P
//! `max(F/u_s, F/d_min, N·F/(u_s + N·u))`.
//!
//! Every node is its own `servent run` process on 127.0.0.1, driven through its API as a
//! person's would be: one seed sharing the file with upload limit `u_s`, N downloaders with
//! upload limit `u` each (downloads unlimited, so `F/d_min` ≈ 0). All downloads are started
//! together, from a magnet link that names the seed (`xs=`), and the time is until the last
//! one holds the verified file. Both modes run in the same invocation: `--no-share-partial`
//! (client-server) and the default (swarm).
//!
//! `cargo bench --bench swarm -- [MiB] [u_s MiB/s] [u MiB/s] [N…]` (default 16 4 1 and
//! N = 1 2 4 8 16 32). Prints a Markdown table and writes `target/swarm-bench.svg`.
//! `SWARM_TRACE=1` adds, each second, what the seed and the downloaders upload;
//! `SWARM_ONLY=1` skips the client-server runs (for tuning the swarm); `SWARM_POLICY=fifo`
//! runs them under that upload policy.
//!
//! `SWARM_FAIR=1` runs the fair-slots benchmark instead (`-- [MiB] [u_s] [u] [N]`, default
//! 64 4 1 16): N downloaders of which one is a free rider (upload limit 1 B/s, shares nothing)
//! and one generous (twice the others' limit), under `--upload-policy tit-for-tat` and `fifo`
//! in the same run, and a newcomer that joins the busy swarm: the table gives each one's time
//! against the median downloader's, the swarm's against its P2P bound, and the newcomer's wait
//! for its first bytes.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use servent::transfer::magnet::Magnet;
use servent::wire::Sha1Urn;

const SERVENT: &str = env!("CARGO_BIN_EXE_servent");
/// Longest a node may take to start answering its API.
const START: Duration = Duration::from_secs(20);
/// Longest one run may take: far above the slowest mode at the default sizes.
const RUN: Duration = Duration::from_secs(900);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// One `servent run` process and how to reach its API; killed when dropped.
struct Node {
    child: Child,
    listen: u16,
    api: String,
    data: PathBuf,
    token: String,
}

impl Node {
    fn start(dir: &Path, share: Option<&Path>, up_limit: &str, partial: bool) -> Node {
        Self::start_with(dir, share, up_limit, partial, &[])
    }

    fn start_with(
        dir: &Path,
        share: Option<&Path>,
        up_limit: &str,
        partial: bool,
        extra: &[&str],
    ) -> Node {
        let (listen, api) = (free_port(), free_port());
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("data folder");
        std::fs::create_dir_all(dir.join("empty-share")).expect("share folder");
        let mut cmd = Command::new(SERVENT);
        cmd.arg("run")
            .args(["--listen", &format!("127.0.0.1:{listen}")])
            .args(["--api", &format!("127.0.0.1:{api}")])
            .arg("--data-dir")
            .arg(&data)
            .arg("--download-dir")
            .arg(dir.join("downloads"))
            .args(["--no-bootstrap", "--allow-private", "--role", "leaf"])
            .args(["--upload-limit", up_limit])
            .args(extra);
        // SWARM_POLICY=fifo: the distribution runs under another upload policy.
        if let Some(p) = std::env::var_os("SWARM_POLICY")
            && !extra.contains(&"--upload-policy")
        {
            cmd.arg("--upload-policy").arg(p);
        }
        match share {
            Some(s) => cmd.arg("--share").arg(s),
            None => cmd.arg("--share").arg(dir.join("empty-share")),
        };
        if !partial {
            cmd.arg("--no-share-partial");
        }
        let child = cmd
            .env("RUST_LOG", "error")
            // Reachable, as a home node with its port forwarded: with nobody to connect back,
            // it could not observe it, and a firewalled node does not offer itself as a source.
            .env("SERVENT_FIREWALLED", "false")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("servent runs");
        let mut n = Node {
            child,
            listen,
            api: format!("http://127.0.0.1:{api}"),
            data,
            token: String::new(),
        };
        let end = Instant::now() + START;
        while Instant::now() < end {
            if let Ok(t) = std::fs::read_to_string(servent::control::token::path(&n.data))
                && !t.trim().is_empty()
            {
                n.token = t.trim().to_string();
                if n.get("/api/status").is_some() {
                    return n;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("servent on port {listen} did not start");
    }

    fn get(&self, path: &str) -> Option<serde_json::Value> {
        let mut r = agent()
            .get(format!("{}{path}", self.api))
            .header("Authorization", format!("Bearer {}", self.token))
            .call()
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()
    }

    fn post(&self, path: &str, body: &str) -> Result<(), String> {
        let mut r = agent()
            .post(format!("{}{path}", self.api))
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Content-Type", "application/json")
            .send(body)
            .map_err(|e| e.to_string())?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(r.body_mut().read_to_string().unwrap_or_default())
        }
    }

    fn uploaded(&self) -> u64 {
        self.get("/api/status")
            .and_then(|v| v["transfers"]["bytes_uploaded"].as_u64())
            .unwrap_or(0)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(data: &[u8], n: usize, partial: bool, us: &str, u: &str) -> Duration {
    let base = std::env::temp_dir().join(format!(
        "servent-swarm-bench-{}-{}-{n}",
        std::process::id(),
        if partial { "p2p" } else { "cs" }
    ));
    let _ = std::fs::remove_dir_all(&base);
    let (seed, link) = seed_node(&base, data, us, partial, &[]);
    let peers: Vec<Node> = (0..n)
        .map(|i| Node::start(&base.join(format!("peer{i}")), None, u, partial))
        .collect();
    let body = serde_json::json!({ "magnet": link }).to_string();
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for p in &peers {
            s.spawn(|| p.post("/api/downloads", &body).expect("download starts"));
        }
    });
    let trace = std::env::var_os("SWARM_TRACE").is_some();
    let (mut last, mut prev, mut done) = (Instant::now(), (0u64, 0u64), vec![None; n]);
    let mut prev_each = vec![0u64; n];
    let u_bps = u.trim_end_matches('K').parse::<f64>().unwrap_or(0.0) * 1024.0;
    while done.iter().any(Option::is_none) {
        assert!(t0.elapsed() < RUN, "the downloads did not end");
        std::thread::sleep(Duration::from_millis(100));
        let mut known = Vec::new();
        for (i, p) in peers.iter().enumerate() {
            if done[i].is_some() {
                continue;
            }
            let list = p.get("/api/downloads").unwrap_or_default();
            known.push(list[0]["swarm"].as_array().map_or(0, |a| a.len()));
            let state = list[0]["state"].as_str().unwrap_or("");
            assert!(state != "failed", "peer {i}: {}", list[0]["error"]);
            if state == "done" {
                done[i] = Some(t0.elapsed());
            }
        }
        if trace && last.elapsed() >= Duration::from_secs(1) {
            let s = seed.uploaded();
            let each: Vec<u64> = peers.iter().map(Node::uploaded).collect();
            let q: u64 = each.iter().sum();
            let dt = last.elapsed().as_secs_f64();
            // Peers that uploaded under half their share this second: capacity left unused.
            let slow = each
                .iter()
                .zip(&prev_each)
                .filter(|(a, b)| ((**a - **b) as f64 / dt) < 0.5 * u_bps)
                .count();
            eprintln!(
                "t={:>5.1} seed {:>5.2} MiB/s  peers {:>6.2} MiB/s ({slow} under half)  done {}/{n}  sources min {} max {}",
                t0.elapsed().as_secs_f64(),
                (s - prev.0) as f64 / dt / 1048576.0,
                (q - prev.1) as f64 / dt / 1048576.0,
                done.iter().filter(|d| d.is_some()).count(),
                known.iter().min().unwrap_or(&0),
                known.iter().max().unwrap_or(&0),
            );
            (last, prev, prev_each) = (Instant::now(), (s, q), each);
        }
    }
    // Every copy is the file, byte for byte.
    for (i, p) in peers.iter().enumerate() {
        let list = p.get("/api/downloads").unwrap_or_default();
        let path = list[0]["path"].as_str().expect("a saved path");
        let got = std::fs::read(path).expect("the saved file");
        assert!(got == data, "peer {i} saved another file");
    }
    let t = done.into_iter().flatten().max().unwrap_or_default();
    drop(peers);
    drop(seed);
    let _ = std::fs::remove_dir_all(&base);
    t
}

/// The seed of a run, sharing `data`, and the magnet link naming it.
fn seed_node(base: &Path, data: &[u8], us: &str, partial: bool, extra: &[&str]) -> (Node, String) {
    let share = base.join("seed-share");
    std::fs::create_dir_all(&share).expect("share folder");
    std::fs::write(share.join("bench.bin"), data).expect("the file");
    let seed = Node::start_with(&base.join("seed"), Some(&share), us, partial, extra);
    let urn = Sha1Urn::digest(data);
    let end = Instant::now() + START;
    let tth = loop {
        let files = seed.get("/api/shares").unwrap_or_default();
        // The seed hashes its share at start; the link carries its Tiger root as a hit would.
        if let Some(f) = files["files"].as_array().and_then(|a| a.first()) {
            assert_eq!(f["urn"].as_str(), Some(urn.to_string().as_str()));
            break f["tth"].as_str().and_then(servent::thex::Tth::from_base32);
        }
        assert!(Instant::now() < end, "the seed never shared the file");
        std::thread::sleep(Duration::from_millis(50));
    };
    let link = Magnet {
        urn,
        name: Some("bench.bin".into()),
        size: Some(data.len() as u64),
        tth,
        sources: vec![
            format!("127.0.0.1:{}", seed.listen)
                .parse()
                .expect("address"),
        ],
    }
    .to_link();
    (seed, link)
}

/// One fairness run: when each downloader finished (free rider first, generous second, then
/// the rest), and the newcomer's wait for its first bytes and its finish.
struct Fair {
    times: Vec<f64>,
    newcomer_first: f64,
}

fn fair_run(data: &[u8], n: usize, us: &str, u: &str, policy: &str) -> Fair {
    let base = std::env::temp_dir().join(format!(
        "servent-swarm-fair-{}-{policy}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&base);
    let pol = ["--upload-policy", policy];
    let (seed, link) = seed_node(&base, data, us, true, &pol);
    let u_k: u64 = u.trim_end_matches('K').parse().expect("K rate");
    let generous = format!("{}K", 2 * u_k);
    let peers: Vec<Node> = (0..n)
        .map(|i| {
            let dir = base.join(format!("peer{i}"));
            match i {
                // The free rider: gives nothing, keeps nothing on offer.
                0 => Node::start_with(&dir, None, "1", false, &pol),
                1 => Node::start_with(&dir, None, &generous, true, &pol),
                _ => Node::start_with(&dir, None, u, true, &pol),
            }
        })
        .collect();
    let body = serde_json::json!({ "magnet": link }).to_string();
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for p in &peers {
            s.spawn(|| p.post("/api/downloads", &body).expect("download starts"));
        }
    });
    let mut done = vec![None; n];
    let mut newcomer: Option<(Node, Instant)> = None;
    let mut newcomer_first = None;
    let mut rider_sources = serde_json::Value::Null;
    while done.iter().any(Option::is_none) || newcomer_first.is_none() {
        assert!(t0.elapsed() < RUN, "the downloads did not end");
        std::thread::sleep(Duration::from_millis(100));
        for (i, p) in peers.iter().enumerate() {
            if done[i].is_some() {
                continue;
            }
            let list = p.get("/api/downloads").unwrap_or_default();
            let state = list[0]["state"].as_str().unwrap_or("");
            assert!(state != "failed", "peer {i}: {}", list[0]["error"]);
            if i == 0 && list[0]["swarm"].as_array().is_some_and(|a| !a.is_empty()) {
                rider_sources = list[0]["swarm"].clone();
            }
            if state == "done" {
                done[i] = Some(t0.elapsed().as_secs_f64());
            }
        }
        // A newcomer joins once the swarm is busy: a quarter of the way to the P2P bound.
        let busy = t0.elapsed().as_secs_f64() > 0.25 * bound(data.len(), n, us, u);
        if newcomer.is_none() && busy {
            let node = Node::start_with(&base.join("newcomer"), None, u, true, &pol);
            node.post("/api/downloads", &body).expect("download starts");
            newcomer = Some((node, Instant::now()));
        }
        if let Some((node, at)) = &newcomer
            && newcomer_first.is_none()
        {
            let list = node.get("/api/downloads").unwrap_or_default();
            if list[0]["bytes"].as_u64().unwrap_or(0) > 0 {
                newcomer_first = Some(at.elapsed().as_secs_f64());
            }
        }
    }
    if std::env::var_os("SWARM_TRACE").is_some() {
        // Where the free rider's bytes came from: the seed, or the other downloaders.
        let seed_addr = format!("127.0.0.1:{}", seed.listen);
        let (mut from_seed, mut from_peers) = (0u64, 0u64);
        for src in rider_sources.as_array().into_iter().flatten() {
            let b = src["bytes"].as_u64().unwrap_or(0);
            if src["addr"].as_str() == Some(seed_addr.as_str()) {
                from_seed += b;
            } else {
                from_peers += b;
            }
        }
        eprintln!(
            "{policy}: the free rider had {from_seed} bytes from the seed, {from_peers} from peers"
        );
    }
    drop(newcomer);
    drop(peers);
    drop(seed);
    let _ = std::fs::remove_dir_all(&base);
    Fair {
        times: done.into_iter().flatten().collect(),
        newcomer_first: newcomer_first.unwrap_or(f64::NAN),
    }
}

/// The P2P bound of a fairness run: the free rider adds no capacity, the generous one twice.
fn bound(size: usize, n: usize, us: &str, u: &str) -> f64 {
    let k = |r: &str| r.trim_end_matches('K').parse::<f64>().expect("K rate") * 1024.0;
    let (us, u) = (k(us), k(u));
    let f = size as f64;
    let capacity = us + (n as f64 - 2.0) * u + 2.0 * u;
    (f / us).max(n as f64 * f / capacity)
}

fn fair_main(mib: f64, us_mib: f64, u_mib: f64, n: usize) {
    let size = (mib * 1048576.0) as usize;
    let data = servent::cli::demo::sample(43, size);
    let rate = |m: f64| format!("{}K", (m * 1024.0).round() as u64);
    let (us, u) = (rate(us_mib), rate(u_mib));
    let b = bound(size, n, &us, &u);
    println!(
        "F = {mib} MiB, u_s = {us_mib} MiB/s, u = {u_mib} MiB/s, N = {n} (peer 0 a free rider, peer 1 generous at 2u); P2P bound {b:.1} s"
    );
    println!(
        "| policy | median (s) | free rider (s) | free rider / median | generous (s) | generous / median | last but the free rider (s) | that / P2P bound | last (s) | newcomer's first bytes (s) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for policy in ["tit-for-tat", "fifo"] {
        let r = fair_run(&data, n, &us, &u, policy);
        let mut sorted = r.times.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        let last = sorted[sorted.len() - 1];
        let (free, generous) = (r.times[0], r.times[1]);
        let others = r.times[1..].iter().copied().fold(0.0, f64::max);
        println!(
            "| {policy} | {median:.1} | {free:.1} | {:.2} | {generous:.1} | {:.2} | {others:.1} | {:.2} | {last:.1} | {:.1} |",
            free / median,
            generous / median,
            others / b,
            r.newcomer_first
        );
    }
}

/// N, client-server time, swarm time, client-server bound, P2P bound.
type Row = (usize, f64, f64, f64, f64);

fn svg(rows: &[Row], title: &str) -> String {
    let (w, h, m) = (640.0, 400.0, 56.0);
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
        let dots: String = rows
            .iter()
            .map(|r| {
                format!(
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>",
                    x(r.0 as f64),
                    y(f(r))
                )
            })
            .collect();
        format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\" points=\"{}\"/>{}",
            pts.join(" "),
            if dash.is_empty() { dots } else { String::new() }
        )
    };
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <text x=\"{m}\" y=\"18\" font-weight=\"bold\">{title}</text>\
         <line x1=\"{m}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/>\
         <line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{b}\" stroke=\"black\"/>\
         <text x=\"{cx}\" y=\"{lx}\" text-anchor=\"middle\">downloaders N</text>\
         <text x=\"14\" y=\"{cy}\" transform=\"rotate(-90 14 {cy})\" text-anchor=\"middle\">seconds until the last has the file</text>",
        b = h - m,
        r = w - m,
        cx = w / 2.0,
        lx = h - 14.0,
        cy = h / 2.0,
    );
    for k in 0..=4 {
        let t = maxt * k as f64 / 4.0;
        s += &format!(
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{t:.0}</text>",
            m - 6.0,
            y(t) + 4.0
        );
    }
    for r in rows {
        s += &format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x(r.0 as f64),
            h - m + 16.0,
            r.0
        );
    }
    s += &line(&|r| r.1, "#c0392b", "");
    s += &line(&|r| r.3, "#c0392b", "6 4");
    s += &line(&|r| r.2, "#2471a3", "");
    s += &line(&|r| r.4, "#2471a3", "6 4");
    s += &format!(
        "<text x=\"{l}\" y=\"{a}\" fill=\"#c0392b\">client-server (--no-share-partial): measured, bound N·F/u_s (dashed)</text>\
         <text x=\"{l}\" y=\"{b}\" fill=\"#2471a3\">swarm (default): measured, P2P bound (dashed)</text></svg>",
        l = m + 10.0,
        a = m + 4.0,
        b = m + 20.0,
    );
    s
}

fn main() {
    // cargo bench passes --bench; only numbers are ours.
    let args: Vec<f64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let num = |i: usize, d: f64| args.get(i).copied().unwrap_or(d);
    if std::env::var_os("SWARM_FAIR").is_some() {
        let (mib, us, u, n) = (num(0, 64.0), num(1, 4.0), num(2, 1.0), num(3, 16.0));
        return fair_main(mib, us, u, n as usize);
    }
    let (mib, us_mib, u_mib) = (num(0, 16.0), num(1, 4.0), num(2, 1.0));
    let ns: Vec<usize> = if args.len() > 3 {
        args[3..].iter().map(|&n| n as usize).collect()
    } else {
        vec![1, 2, 4, 8, 16, 32]
    };
    let size = (mib * 1048576.0) as usize;
    let data = servent::cli::demo::sample(42, size);
    let rate = |m: f64| format!("{}K", (m * 1024.0).round() as u64);
    let (us, u) = (rate(us_mib), rate(u_mib));
    println!(
        "F = {mib} MiB, u_s = {us_mib} MiB/s, u = {u_mib} MiB/s, downloads unlimited; one servent process per node"
    );
    println!(
        "| N | client-server (s) | bound N·F/u_s | swarm (s) | P2P bound | swarm / P2P bound | cs / swarm |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for &n in &ns {
        let cs = if std::env::var_os("SWARM_ONLY").is_some() {
            f64::NAN
        } else {
            run(&data, n, false, &us, &u).as_secs_f64()
        };
        let p2p = run(&data, n, true, &us, &u).as_secs_f64();
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
    let title =
        format!("One {mib} MiB file to N downloaders (u_s = {us_mib} MiB/s, u = {u_mib} MiB/s)");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/swarm-bench.svg");
    let _ = std::fs::write(&out, svg(&rows, &title));
    println!("chart: {}", out.display());
}
