//! Behind a real NAT: network namespaces for a "public" side (an ultrapeer at 100.64.0.1), a
//! home router doing masquerade with nftables, and a home LAN (the leaf at 192.168.77.2, the
//! router's LAN side at 192.168.77.1 as its neighbour). Addresses exist only inside the
//! namespaces, which are removed at the end, also on failure. Skipped, saying so, where
//! namespaces cannot be made (not root, no `ip` or `nft`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERVENT: &str = env!("CARGO_BIN_EXE_servent");

/// The namespaces and the processes in them; dropping it kills the processes and removes
/// the namespaces (their interfaces go with them).
struct Nat {
    prefix: String,
    children: Vec<Child>,
    dir: PathBuf,
}

impl Drop for Nat {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in ["pub", "rtr", "lan"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(n)])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Nat {
    fn ns(&self, n: &str) -> String {
        format!("{}{n}", self.prefix)
    }

    /// A command run inside namespace `n`.
    fn in_ns(&self, n: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(n), program]);
        c
    }

    /// The three namespaces wired and the router masquerading; `Err` says why not.
    fn build() -> Result<Nat, String> {
        let prefix = format!("sv{}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("servent-nat-{}", std::process::id()));
        let nat = Nat {
            prefix: prefix.clone(),
            children: Vec::new(),
            dir,
        };
        std::fs::create_dir_all(&nat.dir).map_err(|e| e.to_string())?;
        let (pubn, rtr, lan) = (nat.ns("pub"), nat.ns("rtr"), nat.ns("lan"));
        for n in [&pubn, &rtr, &lan] {
            run(&["ip", "netns", "add", n])?;
            run(&["ip", "-n", n, "link", "set", "lo", "up"])?;
        }
        let (a, b, c, d) = (
            format!("{prefix}a"),
            format!("{prefix}b"),
            format!("{prefix}c"),
            format!("{prefix}d"),
        );
        run(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b])?;
        run(&["ip", "link", "set", &a, "netns", &pubn])?;
        run(&["ip", "link", "set", &b, "netns", &rtr])?;
        run(&["ip", "link", "add", &c, "type", "veth", "peer", "name", &d])?;
        run(&["ip", "link", "set", &c, "netns", &rtr])?;
        run(&["ip", "link", "set", &d, "netns", &lan])?;
        for (n, dev, addr) in [
            (&pubn, &a, "100.64.0.1/24"),
            (&rtr, &b, "100.64.0.254/24"),
            (&rtr, &c, "192.168.77.1/24"),
            (&lan, &d, "192.168.77.2/24"),
        ] {
            run(&["ip", "-n", n, "addr", "add", addr, "dev", dev])?;
            run(&["ip", "-n", n, "link", "set", dev, "up"])?;
        }
        run(&[
            "ip",
            "-n",
            &lan,
            "route",
            "add",
            "default",
            "via",
            "192.168.77.1",
        ])?;
        run(&[
            "ip",
            "netns",
            "exec",
            &rtr,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])?;
        let rules = format!(
            "table ip nat {{\n chain post {{\n  type nat hook postrouting priority 100;\n  \
             oifname \"{b}\" masquerade\n }}\n chain pre {{\n  type nat hook prerouting \
             priority -100;\n }}\n}}\n"
        );
        let f = nat.dir.join("nat.nft");
        std::fs::write(&f, rules).map_err(|e| e.to_string())?;
        run(&[
            "ip",
            "netns",
            "exec",
            &rtr,
            "nft",
            "-f",
            f.to_str().unwrap(),
        ])?;
        Ok(nat)
    }

    /// `servent run` in namespace `n`, its stderr in `<dir>/<tag>.log`.
    fn servent(&mut self, n: &str, tag: &str, args: &[&str]) {
        let log = std::fs::File::create(self.dir.join(format!("{tag}.log"))).unwrap();
        let child = self
            .in_ns(n, SERVENT)
            .arg("run")
            .args(args)
            .arg("--data-dir")
            .arg(self.dir.join(tag))
            .env("RUST_LOG", "servent=info")
            .env("HOME", &self.dir)
            .env("XDG_CONFIG_HOME", &self.dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push(child);
    }

    /// `servent status --json` of the leaf, run inside its namespace.
    fn leaf_status(&self) -> Option<serde_json::Value> {
        let out = self
            .in_ns("lan", SERVENT)
            .args(["status", "--json", "--api", "127.0.0.1:6347", "--data-dir"])
            .arg(self.dir.join("leaf"))
            .env("HOME", &self.dir)
            .env("XDG_CONFIG_HOME", &self.dir)
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    fn log(&self, tag: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{tag}.log"))).unwrap_or_default()
    }

    /// A TCP connection from namespace `n` to `to` (ip and port), sending an HTTP request
    /// and reading the answer (bash's /dev/tcp: nothing else needs installing).
    fn connect_from(&self, n: &str, ip: &str, port: u16) {
        let script = format!(
            "exec 3<>/dev/tcp/{ip}/{port} && printf 'HEAD / HTTP/1.1\\r\\nHost: x\\r\\n\
             Connection: close\\r\\n\\r\\n' >&3 && timeout 3 cat <&3 >/dev/null"
        );
        let _ = self
            .in_ns(n, "bash")
            .args(["-c", &script])
            .stderr(Stdio::null())
            .status();
    }
}

fn available(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Waits up to `wait` for `f` to hold.
fn until(wait: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + wait;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    f()
}

fn firewalled(s: &serde_json::Value) -> Option<bool> {
    s["status"]["firewalled"]["firewalled"].as_bool()
}

#[test]
fn a_leaf_behind_a_home_router_stays_firewalled_when_its_lan_neighbour_connects() {
    let missing: Vec<&str> = ["ip", "nft", "bash"]
        .into_iter()
        .filter(|p| !available(p))
        .collect();
    if !missing.is_empty() {
        eprintln!("skipped: {missing:?} not installed (apt-get install iproute2 nftables)");
        return;
    }
    let mut nat = match Nat::build() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("skipped: network namespaces cannot be made here ({e})");
            return;
        }
    };
    nat.servent(
        "pub",
        "up",
        &[
            "--role",
            "ultrapeer",
            "--listen",
            "100.64.0.1:6346",
            "--api",
            "off",
        ],
    );
    nat.servent(
        "lan",
        "leaf",
        &[
            "--role",
            "leaf",
            "--listen",
            "192.168.77.2:6346",
            "--api",
            "127.0.0.1:6347",
            "--peer",
            "100.64.0.1:6346",
            "--no-bootstrap",
        ],
    );
    // The leaf links through the router; its ultrapeer sees it at the router's address and
    // says so (Remote-IP), and its connect-back to that address finds no port open.
    let linked = until(Duration::from_secs(20), || {
        nat.leaf_status()
            .is_some_and(|s| s["connections"].as_array().is_some_and(|c| c.len() == 1))
    });
    assert!(linked, "the leaf linked: {}", nat.log("leaf"));
    std::thread::sleep(Duration::from_secs(2));
    let s = nat.leaf_status().expect("status");
    assert_eq!(firewalled(&s), Some(true), "firewalled by itself: {s}");
    assert_eq!(
        s["status"]["firewalled"]["external"], "100.64.0.254",
        "the router's address, as the ultrapeer sees it: {s}"
    );

    // A neighbour on the home LAN reaches it: that proves nothing about the Internet.
    nat.connect_from("rtr", "192.168.77.2", 6346);
    std::thread::sleep(Duration::from_secs(1));
    let s = nat.leaf_status().expect("status");
    assert_eq!(
        firewalled(&s),
        Some(true),
        "still firewalled after a LAN connection: {s}\n{}",
        nat.log("leaf")
    );

    // The user forwards the port on the router: a connection from outside now proves it.
    let rtr = nat.ns("rtr");
    let b = format!("{}b", nat.prefix);
    run(&[
        "ip",
        "netns",
        "exec",
        &rtr,
        "nft",
        "add",
        "rule",
        "ip",
        "nat",
        "pre",
        "iifname",
        &b,
        "tcp",
        "dport",
        "6346",
        "dnat",
        "to",
        "192.168.77.2:6346",
    ])
    .expect("port forward");
    nat.connect_from("pub", "100.64.0.254", 6346);
    let reachable = until(Duration::from_secs(5), || {
        nat.leaf_status().and_then(|s| firewalled(&s)) == Some(false)
    });
    assert!(
        reachable,
        "reachable once the Internet reached it: {}",
        nat.log("leaf")
    );
    let s = nat.leaf_status().expect("status");
    let by = s["status"]["firewalled"]["reached_by"]
        .as_str()
        .unwrap_or("");
    assert!(by.starts_with("100.64.0.1:"), "proven from outside: {s}");
}
