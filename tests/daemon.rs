//! The daemon as people run it: signals, the version and help flags, and the user's own
//! connect after their own disconnect.

mod common;

use std::io::BufRead;
use std::net::SocketAddrV4;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use servent::handshake::Role;
use servent::net::{Node, NodeConfig};

/// Kills the child if the test ends before it does.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(ok.success());
}

/// Waits for the child's exit, up to `wait`.
fn exit_within(child: &mut Child, wait: Duration) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + wait;
    while Instant::now() < end {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[async_std::test]
async fn sigterm_says_bye_200_to_peers_and_exits_0() {
    let home = temp_dir("sigterm-home");
    std::fs::create_dir_all(&home).unwrap();
    let data = home.join("data");
    let mut child = bin(&home)
        .args(["run", "--role", "ultrapeer", "--listen", "127.0.0.1:0"])
        .args(["--api", "127.0.0.1:0", "--no-bootstrap", "--allow-private"])
        .args(["--data-dir", data.to_str().unwrap()])
        .args(["--download-dir", home.join("dl").to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut child = Reaped(child);
    let first = async_std::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        line
    })
    .await;
    let api = first
        .trim()
        .strip_prefix("open http://")
        .and_then(|u| u.split_once('/'))
        .map(|(a, _)| a.to_string())
        .unwrap_or_else(|| panic!("the page address first: {first:?}"));
    let status = bin(&home)
        .args(["status", "--json", "--api", &api])
        .args(["--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let listen: SocketAddrV4 = v["status"]["listen"].as_str().unwrap().parse().unwrap();

    let mut leaf = Peer::connect(listen, Role::Leaf, false).await;
    signal(&child.0, "-TERM");
    assert!(
        leaf.closed(Duration::from_secs(5)).await,
        "the link closed after SIGTERM"
    );
    assert_eq!(leaf.bye_code(), Some(200), "a Bye 200 first, as for Ctrl-C");
    let st = exit_within(&mut child.0, Duration::from_secs(5)).expect("servent exited");
    assert!(st.success(), "exit 0 after SIGTERM: {st:?}");
}

#[test]
fn version_and_short_help_are_understood() {
    let home = temp_dir("version-home");
    std::fs::create_dir_all(&home).unwrap();
    for flag in ["--version", "-V"] {
        let out = bin(&home).arg(flag).output().unwrap();
        assert!(out.status.success(), "{flag}: {out:?}");
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("servent {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
    let out = bin(&home).arg("-h").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("Usage: servent"), "{text}");
    for sub in ["run", "search", "get", "downloads", "peers"] {
        assert!(text.contains(sub), "{sub} in {text}");
    }
    let out = bin(&home).args(["get", "-h"]).output().unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with("Usage: servent get")
    );
}

#[async_std::test]
async fn a_users_connect_after_their_own_disconnect_links_at_once() {
    let up = ultrapeer(&[]).await;
    let addr = up.listen_addr();
    let mut cfg = NodeConfig::new("127.0.0.1:0".parse().unwrap(), temp_dir("held-leaf"));
    cfg.role = Role::Leaf;
    cfg.peers = vec![addr];
    cfg.accept_private = true;
    cfg.tick = Duration::from_millis(100);
    let leaf = Node::start(cfg).await.unwrap();
    wait_links(&leaf, 1).await;
    let id = leaf.connections()[0].id;
    assert!(leaf.disconnect(id));
    // Held for half an hour against redials of its own...
    async_std::task::sleep(Duration::from_millis(1500)).await;
    assert!(leaf.connections().is_empty(), "not redialled by itself");
    // ...but the user's own connect is not.
    leaf.add_hosts(vec![addr], true);
    let end = Instant::now() + Duration::from_secs(5);
    while leaf.connections().is_empty() && Instant::now() < end {
        async_std::task::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(leaf.connections().len(), 1, "linked again within 5 s");
}

/// A running `servent run` and what a test needs to talk to it.
struct Daemon {
    child: Reaped,
    api: String,
    token: String,
}

impl Daemon {
    /// Starts the daemon on `home`'s folders, linked to `peer`, and waits for its page line.
    async fn start(home: &Path, peer: SocketAddrV4) -> Daemon {
        Daemon::start_with(home, &["--peer", &peer.to_string()]).await
    }

    async fn start_with(home: &Path, args: &[&str]) -> Daemon {
        let mut child = bin(home)
            .args(["run", "--role", "leaf", "--listen", "127.0.0.1:0"])
            .args(["--api", "127.0.0.1:0", "--no-bootstrap", "--allow-private"])
            .args(args)
            .arg("--data-dir")
            .arg(home.join("data"))
            .arg("--download-dir")
            .arg(home.join("dl"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let child = Reaped(child);
        let first = async_std::future::timeout(
            Duration::from_secs(20),
            async_std::task::spawn_blocking(move || {
                let mut line = String::new();
                std::io::BufReader::new(stdout)
                    .read_line(&mut line)
                    .unwrap();
                line
            }),
        )
        .await
        .expect("the page line within 20 s");
        let url = first
            .trim()
            .strip_prefix("open http://")
            .unwrap_or_else(|| panic!("the page address first: {first:?}"));
        let (api, token) = url.split_once("/#token=").unwrap();
        Daemon {
            child,
            api: api.to_string(),
            token: token.to_string(),
        }
    }

    async fn call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let url = format!("http://{}{path}", self.api);
        let auth = format!("Bearer {}", self.token);
        async_std::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let mut r = match (method, body) {
                ("POST", Some(b)) => agent
                    .post(&url)
                    .header("Authorization", &auth)
                    .header("Content-Type", "application/json")
                    .send(b.to_string())
                    .unwrap(),
                ("GET", _) => agent
                    .get(&url)
                    .header("Authorization", &auth)
                    .call()
                    .unwrap(),
                _ => unreachable!("{method}"),
            };
            serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap()
        })
        .await
    }

    /// Waits until the daemon has a link, up to 20 s.
    async fn linked(&self) {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let conns = self.call("GET", "/api/connections", None).await;
            if conns.as_array().is_some_and(|a| !a.is_empty()) {
                return;
            }
            assert!(Instant::now() < end, "the daemon never linked");
            async_std::task::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn downloads(&self) -> Vec<serde_json::Value> {
        self.call("GET", "/api/downloads", None)
            .await
            .as_array()
            .cloned()
            .unwrap()
    }

    /// Polls the list until `ok` holds for the entry of `urn`, up to 30 s.
    async fn until(&self, urn: &str, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let list = self.downloads().await;
            let d = list.iter().find(|d| d["urn"] == urn).cloned();
            match d {
                Some(d) if ok(&d) => return d,
                d if Instant::now() > end => panic!("waited for {urn}: {d:?}"),
                _ => async_std::task::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

#[async_std::test]
async fn downloads_outlive_a_restart_and_a_stray_partial_is_adopted() {
    use servent::servent::{Servent, ServentConfig};
    use servent::wire::Sha1Urn;
    let share = temp_dir("restart-share");
    std::fs::create_dir_all(&share).unwrap();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("small done.txt", servent::cli::demo::sample(1, 50_000)),
        ("long running.bin", servent::cli::demo::sample(2, 1_500_000)),
        ("paused one.bin", servent::cli::demo::sample(3, 1_500_000)),
        ("stray.bin", servent::cli::demo::sample(4, 1_500_000)),
    ];
    for (n, d) in &files {
        std::fs::write(share.join(n), d).unwrap();
    }
    let urn = |i: usize| Sha1Urn::digest(&files[i].1).to_string();
    let mut n = NodeConfig::new("127.0.0.1:0".parse().unwrap(), temp_dir("restart-up"));
    n.role = Role::Ultrapeer;
    n.accept_private = true;
    let mut cfg = ServentConfig::new(n);
    cfg.shares = vec![share];
    cfg.firewalled = Some(false);
    // 1.5 MB takes about 6 s: long enough to stop in the middle.
    cfg.upload_limit = 256 * 1024;
    let up = Servent::start(cfg).await.unwrap();
    let peer = up.node().listen_addr();

    let home = temp_dir("restart-home");
    std::fs::create_dir_all(&home).unwrap();
    let d1 = Daemon::start(&home, peer).await;
    d1.linked().await;
    let add = |i: usize| serde_json::json!({ "urn": urn(i) });
    d1.call("POST", "/api/downloads", Some(add(0))).await;
    d1.until(&urn(0), |d| d["state"] == "done").await;
    d1.call("POST", "/api/downloads", Some(add(1))).await;
    let paused = d1.call("POST", "/api/downloads", Some(add(2))).await;
    let pid = paused["id"].as_u64().unwrap();
    d1.until(&urn(2), |d| d["bytes"].as_u64() > Some(0)).await;
    d1.call(
        "POST",
        &format!("/api/downloads/{pid}/pause"),
        Some(serde_json::json!({})),
    )
    .await;
    d1.until(&urn(1), |d| d["bytes"].as_u64() > Some(200_000))
        .await;
    let Daemon { mut child, .. } = d1;
    signal(&child.0, "-KILL");
    let _ = child.0.wait();

    // A standalone get into the same folder, killed too: its partial file has no entry.
    let dl = home.join("dl");
    let mut stray = Reaped(
        bin(&home)
            .args(["get", &urn(3), "--wait", "1", "--peer", &peer.to_string()])
            .arg("--out")
            .arg(&dl)
            .arg("--data-dir")
            .arg(home.join("get-data"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let end = Instant::now() + Duration::from_secs(20);
    while !dl.join(".stray.bin.servent-state").exists() {
        assert!(Instant::now() < end, "the standalone get saved a chunk");
        async_std::task::sleep(Duration::from_millis(50)).await;
    }
    signal(&stray.0, "-KILL");
    let _ = stray.0.wait();

    let sent_before = up
        .uploads()
        .bytes_sent
        .load(std::sync::atomic::Ordering::Relaxed);
    let d2 = Daemon::start(&home, peer).await;
    let list = d2.downloads().await;
    let state = |i: usize| {
        list.iter()
            .find(|d| d["urn"] == urn(i).as_str())
            .map(|d| d["state"].as_str().unwrap().to_string())
    };
    assert_eq!(state(0).as_deref(), Some("done"), "{list:?}");
    assert_eq!(
        state(1).as_deref(),
        Some("downloading"),
        "resumed, no search first: {list:?}"
    );
    assert_eq!(state(2).as_deref(), Some("paused"), "{list:?}");
    assert_eq!(
        state(3).as_deref(),
        Some("paused"),
        "the stray partial is adopted: {list:?}"
    );
    let done = d2.until(&urn(1), |d| d["state"] == "done").await;
    assert_eq!(
        std::fs::read(done["path"].as_str().unwrap()).unwrap(),
        files[1].1,
        "verified and whole"
    );
    let resent = up
        .uploads()
        .bytes_sent
        .load(std::sync::atomic::Ordering::Relaxed)
        - sent_before;
    assert!(
        resent < files[1].1.len() as u64,
        "resumed from its saved ranges: {resent} bytes sent after the restart"
    );
    // Cleared from the list, the done file stays.
    let cleared = d2
        .call("POST", "/api/downloads/clear", Some(serde_json::json!({})))
        .await;
    assert_eq!(cleared["cleared"], 2);
    let left: Vec<String> = d2
        .downloads()
        .await
        .iter()
        .map(|d| d["state"].to_string())
        .collect();
    assert_eq!(left, ["\"paused\"", "\"paused\""]);
    assert!(dl.join("small done.txt").exists());
}

#[async_std::test]
async fn the_api_answers_and_shares_while_a_big_share_is_still_hashing() {
    let home = temp_dir("hashing-home");
    let share = home.join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("a small one.txt"), b"shared at once").unwrap();
    // 4 GB of holes: minutes of hashing, no disk.
    let big = std::fs::File::create(share.join("big image.iso")).unwrap();
    big.set_len(4 << 30).unwrap();
    drop(big);
    let share_s = share.to_str().unwrap().to_string();

    // A port in use is said at once, not after the hashing.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let mut busy = Reaped(
        bin(&home)
            .args(["run", "--listen", &port, "--api", "off", "--no-bootstrap"])
            .args(["--share", &share_s])
            .arg("--data-dir")
            .arg(home.join("busy-data"))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let st = exit_within(&mut busy.0, Duration::from_secs(10)).expect("gave up at once");
    assert!(!st.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut busy.0.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains(&port), "names the port: {err}");

    let d = Daemon::start_with(&home, &["--share", &share_s]).await;
    let end = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let st = d.call("GET", "/api/status", None).await;
        if st["shares"]["files"] == 1 && st["shares"]["hashing"]["running"] == true {
            break st;
        }
        assert!(
            Instant::now() < end,
            "the small file shared while hashing: {st}"
        );
        async_std::task::sleep(Duration::from_millis(100)).await;
    };
    let h = &status["shares"]["hashing"];
    assert_eq!(h["files_total"], 2);
    assert!(h["bytes_left"].as_u64().unwrap() > 0, "{h}");
    let shares = d.call("GET", "/api/shares", None).await;
    assert_eq!(shares["files"][0]["name"], "a small one.txt");
    let text = bin(&home)
        .args(["status", "--api", &d.api])
        .arg("--data-dir")
        .arg(home.join("data"))
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("hashing 2 of 2 files"), "{text}");
}

#[async_std::test]
async fn a_kept_api_token_survives_a_restart_and_a_readable_one_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let home = temp_dir("token-home");
    std::fs::create_dir_all(&home).unwrap();
    let file = home.join("kept-token");
    let f = file.to_str().unwrap().to_string();
    let first = Daemon::start_with(&home, &["--api-token-file", &f]).await;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), first.token);
    let token = first.token.clone();
    drop(first);
    let again = Daemon::start_with(&home, &["--api-token-file", &f]).await;
    assert_eq!(again.token, token, "the bookmarked page keeps working");
    drop(again);
    // Without the setting, a new one at every start.
    let fresh = Daemon::start_with(&home, &[]).await;
    assert_ne!(fresh.token, token);
    drop(fresh);

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = bin(&home)
        .args(["run", "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0"])
        .args(["--no-bootstrap", "--api-token-file", &f])
        .arg("--data-dir")
        .arg(home.join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chmod 600"), "{err}");
}

/// An ultrapeer sharing `files` with its uploads limited to `limit` bytes per second.
async fn slow_source(tag: &str, files: &[(&str, &[u8])], limit: u64) -> servent::servent::Servent {
    use servent::servent::{Servent, ServentConfig};
    let share = temp_dir(tag);
    std::fs::create_dir_all(&share).unwrap();
    for (n, d) in files {
        std::fs::write(share.join(n), d).unwrap();
    }
    let mut n = NodeConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        temp_dir(&format!("{tag}-up")),
    );
    n.role = Role::Ultrapeer;
    n.accept_private = true;
    let mut cfg = ServentConfig::new(n);
    cfg.shares = vec![share];
    cfg.firewalled = Some(false);
    cfg.upload_limit = limit;
    Servent::start(cfg).await.unwrap()
}

#[async_std::test]
async fn a_get_of_a_running_download_follows_it_and_ctrl_c_stops_a_daemons_search() {
    use servent::wire::Sha1Urn;
    let data = servent::cli::demo::sample(9, 1_000_000);
    let urn = Sha1Urn::digest(&data).to_string();
    let up = slow_source("attach", &[("lecture.ogg", &data)], 256 * 1024).await;
    let home = temp_dir("attach-home");
    std::fs::create_dir_all(&home).unwrap();
    let d = Daemon::start(&home, up.node().listen_addr()).await;
    d.linked().await;
    let cli = |args: &[&str]| {
        let mut c = bin(&home);
        c.args(args)
            .args(["--api", &d.api])
            .arg("--data-dir")
            .arg(home.join("data"));
        c
    };
    let added = d
        .call(
            "POST",
            "/api/downloads",
            Some(serde_json::json!({ "urn": urn })),
        )
        .await;
    let id = added["id"].as_u64().unwrap();
    // The same file asked again through the CLI: followed to its end, not refused.
    let mut get = cli(&["get", &urn]);
    let out = async_std::task::spawn_blocking(move || get.output().unwrap()).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("(download {id})")), "{err}");
    assert!(err.contains("following it"), "{err}");
    let path = String::from_utf8(out.stdout).unwrap();
    assert_eq!(std::fs::read(path.trim()).unwrap(), data);
    assert_eq!(d.downloads().await.len(), 1, "no second download");

    // Ctrl-C on a search through the daemon stops it there too.
    let mut search = Reaped(
        cli(&["search", "nothing", "matches", "--wait", "60"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let running = || async {
        let list = d.call("GET", "/api/searches", None).await;
        list.as_array()
            .unwrap()
            .iter()
            .any(|s| s["query"] == "nothing matches" && s["running"] == true)
    };
    let end = Instant::now() + Duration::from_secs(10);
    while !running().await {
        assert!(Instant::now() < end, "the search started in the daemon");
        async_std::task::sleep(Duration::from_millis(50)).await;
    }
    signal(&search.0, "-INT");
    let st = exit_within(&mut search.0, Duration::from_secs(5)).expect("search stopped");
    assert!(st.success(), "{st:?}");
    assert!(!running().await, "the daemon's search stopped with it");
}

#[async_std::test]
async fn a_standalone_get_stops_on_sigterm_keeping_what_it_has_and_resumes() {
    use servent::wire::Sha1Urn;
    let data = servent::cli::demo::sample(10, 1_500_000);
    let urn = Sha1Urn::digest(&data).to_string();
    let up = slow_source("sigterm-get", &[("talk.ogg", &data)], 256 * 1024).await;
    let peer = up.node().listen_addr().to_string();
    let home = temp_dir("sigterm-get-home");
    let dl = home.join("dl");
    std::fs::create_dir_all(&dl).unwrap();
    let get = || {
        let mut c = bin(&home);
        c.args(["get", &urn, "--wait", "1", "--peer", &peer])
            .arg("--out")
            .arg(&dl)
            .arg("--data-dir")
            .arg(home.join("data"));
        c
    };
    let mut first = Reaped(get().stderr(Stdio::piped()).spawn().unwrap());
    let end = Instant::now() + Duration::from_secs(20);
    while !dl.join(".talk.ogg.servent-state").exists() {
        assert!(Instant::now() < end, "a chunk saved");
        async_std::task::sleep(Duration::from_millis(50)).await;
    }
    signal(&first.0, "-TERM");
    let st = exit_within(&mut first.0, Duration::from_secs(5)).expect("get stopped");
    assert_eq!(st.code(), Some(1), "an exit, not a kill: {st:?}");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut first.0.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("the same command resumes it"), "{err}");
    assert!(
        dl.join(".talk.ogg.servent-state").exists(),
        "its state kept"
    );
    let mut again = get();
    let out = async_std::task::spawn_blocking(move || again.output().unwrap()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(dl.join("talk.ogg")).unwrap(), data);
}

#[async_std::test]
async fn when_bootstrap_finds_nobody_the_log_says_so_once_with_what_to_do() {
    let home = temp_dir("dry-home");
    std::fs::create_dir_all(&home).unwrap();
    // A UDP host cache that never answers and a GWebCache nobody listens on, both local.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gwc = format!("http://{}/", closed.local_addr().unwrap());
    drop(closed);
    let log = home.join("stderr.log");
    let mut child = Reaped(
        bin(&home)
            .args(["run", "--listen", "127.0.0.1:0", "--api", "off"])
            .args(["--uhc", &silent.local_addr().unwrap().to_string()])
            .args(["--gwc", &gwc])
            .arg("--data-dir")
            .arg(home.join("data"))
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let said = |text: &str| text.matches("found no peer that answers").count();
    let end = Instant::now() + Duration::from_secs(30);
    let mut text = String::new();
    while said(&text) == 0 {
        assert!(Instant::now() < end, "no word about it: {text}");
        async_std::task::sleep(Duration::from_millis(200)).await;
        text = std::fs::read_to_string(&log).unwrap_or_default();
    }
    assert!(text.contains("--peer HOST:PORT"), "{text}");
    // Said once, and the GWebCache's failure is not an error line of its own (it was one a
    // minute).
    async_std::task::sleep(Duration::from_secs(3)).await;
    let _ = child.0.kill();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(said(&text), 1, "{text}");
    assert!(!text.contains("GWebCache"), "{text}");
}
