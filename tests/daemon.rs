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

/// The binary with a clean environment: no settings file or `SERVENT_` variables of the person
/// running the tests.
fn bin(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_servent"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SERVENT_") {
            c.env_remove(k);
        }
    }
    c.env("XDG_CONFIG_HOME", home)
        .env("HOME", home)
        .env("RUST_LOG", "warn");
    c
}

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
