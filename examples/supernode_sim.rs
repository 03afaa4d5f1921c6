//! Supernodes with dynamic querying against flooding, 10,000 simulated nodes running the
//! servent's own routing core (src/sim/supernode.rs has the model).
//!
//! `cargo run --release --example supernode_sim [-- NODES QUERIES [SVG-PATH]]`
//! prints a Markdown table and writes the chart (default docs/supernode-sim.svg).

use std::sync::Arc;
use std::time::Instant;

use servent::sim::supernode::{
    Params, Report, Workload, breakdown_markdown, markdown, run_flooding, run_supernodes,
};

/// glibc raises its mmap threshold after the first zlib state (~256 KiB, one per QRP table
/// sent) is freed; later ones then come from the heap, where the small messages and tables
/// allocated in between fragment it, and 10,000 nodes took ~6 GB instead of ~0.6 GB. A fixed
/// threshold keeps those states in mmap.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn fix_malloc() {
    unsafe extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    const M_MMAP_THRESHOLD: i32 = -3;
    // SAFETY: mallopt only changes allocator tuning; called before any threads exist.
    unsafe {
        mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn fix_malloc() {}

fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Two panels: query descriptors per query on a log scale, and success rate.
fn svg(dq: &Report, fl: &Report, p: &Params) -> String {
    let (w, h) = (720.0, 360.0);
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="13">
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="{cx}" y="22" text-anchor="middle" font-size="15" font-weight="bold">Supernodes + dynamic querying vs flooding ({n} nodes, {q} queries, simulated)</text>
"##,
        cx = w / 2.0,
        n = p.nodes,
        q = p.queries
    );
    let colours = ["#2b7bba", "#d95f02"];
    let designs = [dq, fl];
    // Left panel: log10 of query messages per query, 10 … 10^6.
    let (x0, y0, ph) = (70.0, 300.0, 230.0);
    let (lo, hi) = (1.0f64, 6.0f64);
    let y_of = |v: f64| y0 - (v.max(10.0).log10() - lo) / (hi - lo) * ph;
    s.push_str(&format!(
        "<text x=\"{}\" y=\"50\" text-anchor=\"middle\">Query messages per query (log scale)</text>\n",
        x0 + 120.0
    ));
    for e in 1..=6 {
        let y = y_of(10f64.powi(e));
        s.push_str(&format!(
            "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{x2}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{tx}\" y=\"{ty:.1}\" text-anchor=\"end\">10^{e}</text>\n",
            x2 = x0 + 240.0,
            tx = x0 - 6.0,
            ty = y + 4.0
        ));
    }
    for (i, r) in designs.iter().enumerate() {
        let v = r.per_query(r.query_messages);
        let x = x0 + 30.0 + i as f64 * 110.0;
        let y = y_of(v);
        s.push_str(&format!(
            "<rect x=\"{x}\" y=\"{y:.1}\" width=\"70\" height=\"{bh:.1}\" fill=\"{c}\"/><text x=\"{tx}\" y=\"{vy:.1}\" text-anchor=\"middle\">{v:.0}</text>\n",
            bh = y0 - y,
            c = colours[i],
            tx = x + 35.0,
            vy = y - 6.0
        ));
    }
    // Right panel: success rate, 0 … 100 %.
    let x1 = 420.0;
    s.push_str(&format!(
        "<text x=\"{}\" y=\"50\" text-anchor=\"middle\">Queries with at least one result</text>\n",
        x1 + 120.0
    ));
    for pct in [0, 25, 50, 75, 100] {
        let y = y0 - f64::from(pct) / 100.0 * ph;
        s.push_str(&format!(
            "<line x1=\"{x1}\" y1=\"{y:.1}\" x2=\"{x2}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{tx}\" y=\"{ty:.1}\" text-anchor=\"end\">{pct} %</text>\n",
            x2 = x1 + 240.0,
            tx = x1 - 6.0,
            ty = y + 4.0
        ));
    }
    for (i, r) in designs.iter().enumerate() {
        let v = 100.0 * r.success_rate();
        let x = x1 + 30.0 + i as f64 * 110.0;
        let y = y0 - v / 100.0 * ph;
        s.push_str(&format!(
            "<rect x=\"{x}\" y=\"{y:.1}\" width=\"70\" height=\"{bh:.1}\" fill=\"{c}\"/><text x=\"{tx}\" y=\"{vy:.1}\" text-anchor=\"middle\">{v:.1} %</text>\n",
            bh = y0 - y,
            c = colours[i],
            tx = x + 35.0,
            vy = y - 6.0
        ));
    }
    for (i, r) in designs.iter().enumerate() {
        let x = 70.0 + i as f64 * 330.0;
        s.push_str(&format!(
            "<rect x=\"{x}\" y=\"325\" width=\"14\" height=\"14\" fill=\"{c}\"/><text x=\"{tx}\" y=\"337\">{d}</text>\n",
            c = colours[i],
            tx = x + 20.0,
            d = r.design
        ));
    }
    s.push_str("</svg>\n");
    s
}

fn main() {
    fix_malloc();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut p = Params::full();
    if let Some(n) = args.first().and_then(|a| a.parse().ok()) {
        p.nodes = n;
    }
    if let Some(q) = args.get(1).and_then(|a| a.parse().ok()) {
        p.queries = q;
    }
    let svg_path = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "docs/supernode-sim.svg".into());
    let t = Instant::now();
    let w = Arc::new(Workload::new(&p));
    eprintln!("workload: {:.1} s", t.elapsed().as_secs_f64());
    let dq = run_supernodes(&p, &w);
    eprintln!(
        "supernodes: {:.1} s, peak RSS so far {:.0} MiB",
        dq.wall.as_secs_f64(),
        peak_rss_mib().unwrap_or(f64::NAN)
    );
    println!(
        "Where design a's query descriptors went, per query, by how many nodes other than the searcher share the file:\n\n{}",
        breakdown_markdown(&dq.breakdown)
    );
    let fl = run_flooding(&p, &w);
    eprintln!("flooding: {:.1} s", fl.wall.as_secs_f64());
    println!(
        "{} nodes ({} ultrapeers in design a), {} files (Zipf s = {}), {} shared per leaf, {} queries, {} ms per link\n",
        p.nodes,
        w.ultrapeer.iter().filter(|&&u| u).count(),
        p.files,
        p.zipf_s,
        p.files_per_leaf,
        p.queries,
        p.latency.as_millis()
    );
    print!("{}", markdown(&[&dq, &fl]));
    println!(
        "\nAnswerable (someone else shares the file): {} of {} queries.",
        dq.answerable, dq.queries
    );
    println!(
        "Ultrapeer links per ultrapeer (min / mean / max): {} / {:.1} / {}; flooding graph degree: {} / {:.1} / {}.",
        dq.up_degree.0,
        dq.up_degree.1,
        dq.up_degree.2,
        fl.up_degree.0,
        fl.up_degree.1,
        fl.up_degree.2
    );
    for r in [&dq, &fl] {
        println!(
            "{}: {:.0} query messages per query to ultrapeers/peers, {:.0} to leaves; median {:.0} per query; built in {:.1} s, queries in {:.1} s.",
            r.design,
            r.per_query(r.query_messages - r.query_messages_to_leaves),
            r.per_query(r.query_messages_to_leaves),
            r.median_query_messages(),
            r.setup.as_secs_f64(),
            (r.wall - r.setup).as_secs_f64()
        );
    }
    println!(
        "Set-up (not in the per-query figures): {} QRP descriptors for design a, {} for b.",
        dq.setup_qrp_messages, fl.setup_qrp_messages
    );
    let ratio = fl.per_query(fl.query_messages) / dq.per_query(dq.query_messages).max(1e-9);
    let all = |r: &Report| r.per_query(r.query_messages + r.hit_messages + r.other_messages);
    println!(
        "Flooding sends {ratio:.1}× the query messages of dynamic querying ({:.1}× counting every message).",
        all(&fl) / all(&dq).max(1e-9)
    );
    println!(
        "Wall time {:.1} s; peak RSS {:.0} MiB.",
        t.elapsed().as_secs_f64(),
        peak_rss_mib().unwrap_or(f64::NAN)
    );
    if let Err(e) = std::fs::write(&svg_path, svg(&dq, &fl, &p)) {
        eprintln!("cannot write {svg_path}: {e}");
    } else {
        eprintln!("chart written to {svg_path}");
    }
}
