//! Transfer figures: a 1 GiB shared file served by a `Servent` against nginx (sendfile), and
//! `Servent::download` of it, with peak memory of each side.
//!
//! ```text
//! cargo run --release --example transfer_bench              # 9 upload, 5 download rounds
//! cargo run --release --example transfer_bench -- 3 2       # fewer rounds
//! ```
//!
//! Every side runs in its own process so its VmHWM is its own: `transfer_bench serve` is the
//! sharing servent (an ultrapeer on 127.0.0.1:0), `transfer_bench download` is one downloading
//! servent per round (a fresh process each time). nginx (installed with apt, started here with
//! a config in the temp dir: one process, sendfile on, access_log off) serves the same file.
//! The top level runs curl and the rounds, interleaved, and prints medians.
//!
//! 1. Upload: curl to /dev/null from the servent and from nginx, alternating which goes first.
//! 2. Download: `Servent::download` from the serving servent into a fresh folder, against curl
//!    writing the same file from the servent into the same folder. "transfer" is first request
//!    to last byte written (page cache); "total" adds what `download` does after: fsync and the
//!    SHA-1 check of the whole file before the rename.
//! 3. Peak RSS (VmHWM) of the serving process after all upload rounds and of each downloading
//!    process.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use servent::handshake::Role;
use servent::net::NodeConfig;
use servent::servent::{Servent, ServentConfig};
use servent::transfer::download::{Progress, Source, Spec};
use servent::wire::{FileIndex, ServentId, Sha1Urn};

const SIZE: u64 = 1 << 30;
const NAME: &str = "bench.bin";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(Path::new(&args[1]), Path::new(&args[2])),
        Some("download") => download_child(&args[1..]),
        _ => {
            let up = args.first().and_then(|a| a.parse().ok()).unwrap_or(9);
            let down = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
            top(up, down);
        }
    }
}

fn vm_hwm_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn node_config(data: PathBuf, role: Role) -> NodeConfig {
    let mut n = NodeConfig::new("127.0.0.1:0".parse().expect("address"), data);
    n.role = role;
    n.accept_private = true;
    n
}

// ---------------------------------------------------------------------------------------------
// Child: the sharing servent.

fn serve(share: &Path, data: &Path) {
    async_std::task::block_on(async {
        let mut cfg = ServentConfig::new(node_config(data.to_path_buf(), Role::Ultrapeer));
        cfg.shares = vec![share.to_path_buf()];
        cfg.rescan_every = None;
        let s = Servent::start(cfg).await.expect("servent starts");
        let (urn, index) = {
            let lib = s.library();
            let lib = lib.read().expect("library");
            let f = lib.files().first().expect("the file is shared");
            (f.sha1, f.index.0)
        };
        println!("READY {} {urn} {index}", s.node().listen_addr().port());
        let stdin = std::io::stdin();
        let mut line = String::new();
        loop {
            line.clear();
            // Blocking here is fine: the runtime's other threads serve.
            if stdin.lock().read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            if line.trim() == "hwm" {
                println!("HWM {}", vm_hwm_kib());
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Child: one download.

fn download_child(a: &[String]) {
    let port: u16 = a[0].parse().expect("port");
    let urn: Sha1Urn = a[1].parse().expect("urn");
    let index: u32 = a[2].parse().expect("index");
    let out = PathBuf::from(&a[3]);
    let data = PathBuf::from(&a[4]);
    async_std::task::block_on(async {
        let mut cfg = ServentConfig::new(node_config(data, Role::Leaf));
        cfg.rescan_every = None;
        let s = Servent::start(cfg).await.expect("servent starts");
        let spec = Spec {
            urn,
            size: SIZE,
            name: NAME.into(),
            sources: vec![Source {
                addr: SocketAddrV4::new([127, 0, 0, 1].into(), port),
                index: FileIndex(index),
                name: NAME.into(),
                servent: ServentId::random(),
                push: false,
                proxies: Vec::new(),
            }],
            tth: None,
        };
        let progress = Arc::new(Progress::default());
        let start = Instant::now();
        let watch = {
            let p = progress.clone();
            std::thread::spawn(move || {
                while p.done.load(Ordering::Relaxed) < SIZE {
                    std::thread::sleep(Duration::from_micros(500));
                }
                start.elapsed()
            })
        };
        let path = s
            .download(spec, &out, &progress)
            .await
            .expect("download succeeds");
        let total = start.elapsed();
        let transfer = watch.join().expect("watcher");
        assert_eq!(std::fs::metadata(&path).expect("file").len(), SIZE);
        println!(
            "RESULT {} {} {}",
            transfer.as_secs_f64(),
            total.as_secs_f64(),
            vm_hwm_kib()
        );
    });
}

// ---------------------------------------------------------------------------------------------
// Top level.

fn make_file(path: &Path) {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..SIZE / buf.len() as u64 {
        for c in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&buf).unwrap();
    }
    f.flush().unwrap();
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// curl's speed (bytes/s) fetching `url` into `out`; checks status and size.
fn curl(url: &str, out: &str) -> f64 {
    let o = Command::new("curl")
        .args([
            "-s",
            "-o",
            out,
            "-w",
            "%{speed_download} %{size_download} %{http_code}",
        ])
        .arg(url)
        .output()
        .expect("curl runs (apt-get install -y curl)");
    let s = String::from_utf8_lossy(&o.stdout);
    let f: Vec<&str> = s.split_whitespace().collect();
    assert_eq!(f.get(2), Some(&"200"), "curl {url}: {s}");
    assert_eq!(f.get(1).and_then(|v| v.parse::<u64>().ok()), Some(SIZE));
    f[0].parse().expect("speed")
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn mb(bytes_per_s: f64) -> f64 {
    bytes_per_s / 1e6
}

struct Nginx(Child);

impl Nginx {
    fn start(dir: &Path, root: &Path, port: u16) -> Nginx {
        let conf = dir.join("nginx.conf");
        let d = dir.display();
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\nuser root;\n\
                 pid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{\n  access_log off;\n  sendfile on;\n  default_type application/octet-stream;\n\
                 \x20 client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
                 \x20 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
                 \x20 scgi_temp_path {d}/scgi;\n\
                 \x20 server {{ listen 127.0.0.1:{port}; root {}; }}\n}}\n",
                root.display()
            ),
        )
        .unwrap();
        let bin = ["/usr/sbin/nginx", "nginx"]
            .into_iter()
            .find(|b| Path::new(b).exists())
            .unwrap_or("nginx");
        let mut child = Command::new(bin)
            .args(["-e", &format!("{d}/error.log"), "-p"])
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .spawn()
            .expect("nginx starts (apt-get install -y nginx)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Nginx(child);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("nginx does not listen; see {d}/error.log");
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Server {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Server {
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.stdout.read_line(&mut l).expect("serve child answers");
        l
    }

    fn hwm(&mut self) -> u64 {
        writeln!(self.stdin, "hwm").unwrap();
        let l = self.line();
        l.trim()
            .strip_prefix("HWM ")
            .and_then(|v| v.parse().ok())
            .expect("HWM line")
    }
}

fn top(up_rounds: usize, down_rounds: usize) {
    let exe = std::env::current_exe().expect("own path");
    let tmp = std::env::temp_dir().join(format!("transfer_bench-{}", std::process::id()));
    let share = tmp.join("share");
    let out = tmp.join("out");
    for d in [&share, &out] {
        std::fs::create_dir_all(d).unwrap();
    }
    let file = share.join(NAME);
    eprintln!("writing 1 GiB to {}", file.display());
    make_file(&file);

    eprintln!("starting the servent (it hashes the file)");
    let mut child = Command::new(&exe)
        .arg("serve")
        .arg(&share)
        .arg(tmp.join("serve-data"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("serve child");
    let mut srv = Server {
        stdin: child.stdin.take().unwrap(),
        stdout: BufReader::new(child.stdout.take().unwrap()),
        child,
    };
    let ready = srv.line();
    let f: Vec<&str> = ready.split_whitespace().collect();
    assert_eq!(f.first(), Some(&"READY"), "serve child: {ready}");
    let (port, urn, index) = (f[1].to_string(), f[2].to_string(), f[3].to_string());
    let servent_url = format!("http://127.0.0.1:{port}/uri-res/N2R?{urn}");

    let nport = free_port();
    let nginx = Nginx::start(&tmp, &share, nport);
    let nginx_url = format!("http://127.0.0.1:{nport}/{NAME}");

    // Warm up both (and the page cache).
    curl(&servent_url, "/dev/null");
    curl(&nginx_url, "/dev/null");

    eprintln!("upload: {up_rounds} interleaved rounds");
    let (mut s_up, mut n_up, mut s_cpu, mut n_cpu) = (vec![], vec![], 0.0, 0.0);
    for r in 0..up_rounds {
        let mut servent_round = || {
            let c0 = cpu_secs(srv.child.id());
            s_up.push(curl(&servent_url, "/dev/null"));
            s_cpu += cpu_secs(srv.child.id()) - c0;
        };
        let mut nginx_round = || {
            let c0 = cpu_secs(nginx.0.id());
            n_up.push(curl(&nginx_url, "/dev/null"));
            n_cpu += cpu_secs(nginx.0.id()) - c0;
        };
        if r % 2 == 0 {
            servent_round();
            nginx_round();
        } else {
            nginx_round();
            servent_round();
        }
    }
    let upload_hwm = srv.hwm();

    eprintln!("download: {down_rounds} interleaved rounds");
    let (mut d_transfer, mut d_total, mut d_hwm, mut c_down) = (vec![], vec![], vec![], vec![]);
    for r in 0..down_rounds {
        let round_dir = out.join(format!("r{r}"));
        std::fs::create_dir_all(&round_dir).unwrap();
        let mut dl = || {
            let o = Command::new(&exe)
                .arg("download")
                .args([&port, &urn, &index])
                .arg(&round_dir)
                .arg(tmp.join(format!("dl-data-{r}")))
                .output()
                .expect("download child");
            let s = String::from_utf8_lossy(&o.stdout);
            let line = s
                .lines()
                .find(|l| l.starts_with("RESULT "))
                .unwrap_or_else(|| {
                    panic!("download failed: {}", String::from_utf8_lossy(&o.stderr))
                });
            let v: Vec<f64> = line[7..]
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            d_transfer.push(SIZE as f64 / v[0]);
            d_total.push(SIZE as f64 / v[1]);
            d_hwm.push(v[2]);
        };
        let curl_out = round_dir.join("curl.bin");
        let mut cr = || c_down.push(curl(&servent_url, curl_out.to_str().unwrap()));
        if r % 2 == 0 {
            dl();
            cr();
        } else {
            cr();
            dl();
        }
        let _ = std::fs::remove_dir_all(&round_dir);
    }
    let serve_hwm_after = srv.hwm();
    drop(nginx);
    drop(srv.stdin);
    let _ = srv.child.wait();
    let _ = std::fs::remove_dir_all(&tmp);

    let (s, n) = (median(&s_up), median(&n_up));
    let gib = (up_rounds as f64) * SIZE as f64 / (1u64 << 30) as f64;
    println!();
    println!(
        "transfer_bench: 1 GiB file, 127.0.0.1, {} cores, medians of interleaved rounds",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| measurement | rounds | median MB/s | min–max MB/s | ratio | CPU s/GiB |");
    println!("|---|---|---|---|---|---|");
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        format!("{:.0}–{:.0}", mb(lo), mb(hi))
    };
    println!(
        "| upload: nginx sendfile → curl /dev/null | {up_rounds} | {:.0} | {} | 1.00 | {:.2} |",
        mb(n),
        range(&n_up),
        n_cpu / gib
    );
    println!(
        "| upload: servent → curl /dev/null | {up_rounds} | {:.0} | {} | {:.2} × nginx | {:.2} |",
        mb(s),
        range(&s_up),
        s / n,
        s_cpu / gib
    );
    let (c, t, tt) = (median(&c_down), median(&d_transfer), median(&d_total));
    println!(
        "| download: curl → file (baseline) | {down_rounds} | {:.0} | {} | 1.00 | |",
        mb(c),
        range(&c_down)
    );
    println!(
        "| download: Servent::download, transfer | {down_rounds} | {:.0} | {} | {:.2} × curl | |",
        mb(t),
        range(&d_transfer),
        t / c
    );
    println!(
        "| download: Servent::download, with fsync + SHA-1 | {down_rounds} | {:.0} | {} | {:.2} × curl | |",
        mb(tt),
        range(&d_total),
        tt / c
    );
    println!();
    println!("| peak RSS (VmHWM) | MiB |");
    println!("|---|---|");
    println!(
        "| serving process, after upload rounds | {:.1} |",
        upload_hwm as f64 / 1024.0
    );
    println!(
        "| serving process, after download rounds too | {:.1} |",
        serve_hwm_after as f64 / 1024.0
    );
    println!(
        "| downloading process (median / max of rounds) | {:.1} / {:.1} |",
        median(&d_hwm) / 1024.0,
        d_hwm.iter().copied().fold(0.0, f64::max) / 1024.0
    );
}
