//! `servent demo`: a small Gnutella network on this machine, made of real servents on
//! 127.0.0.1, that shows the whole product working with no network and no setup: an
//! ultrapeer, a leaf sharing files, a firewalled leaf sharing files, and a leaf that searches
//! and downloads from both (the firewalled one through Push).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::handshake::Role;
use crate::net::NodeConfig;
use crate::servent::{Found, Servent, ServentConfig, found_in_hit, specs};
use crate::transfer::download::Progress;
use crate::wire::Sha1Urn;

/// Everything the demo waits for must happen within this.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// Reproducible pseudo-random bytes (a linear congruential generator), for sample files.
pub fn sample(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

struct Demo<'w, W: Write> {
    out: &'w mut W,
    root: PathBuf,
    started: Instant,
}

impl<W: Write> Demo<'_, W> {
    fn say(&mut self, msg: &str) {
        let t = self.started.elapsed().as_secs_f32();
        let _ = writeln!(self.out, "[{t:5.2}s] {msg}");
        let _ = self.out.flush();
    }

    async fn servent(
        &self,
        name: &str,
        role: Role,
        peers: &[std::net::SocketAddrV4],
        share: Option<PathBuf>,
        firewalled: bool,
    ) -> Result<Servent, String> {
        let mut n = NodeConfig::new("127.0.0.1:0".parse().expect("valid"), self.root.join(name));
        n.role = role;
        n.peers = peers.to_vec();
        n.want_ultrapeers = Some(peers.len());
        n.accept_private = true;
        n.tick = Duration::from_millis(100);
        if firewalled {
            // Its advertised address refuses connections, as behind a NAT: only Push works.
            n.advertise = Some("127.0.0.1:1".parse().expect("valid"));
        }
        let mut cfg = ServentConfig::new(n);
        cfg.shares = share.into_iter().collect();
        cfg.firewalled = Some(firewalled);
        Servent::start(cfg)
            .await
            .map_err(|e| format!("cannot start {name}: {e}"))
    }
}

async fn until<F: FnMut() -> bool>(mut f: F, what: &str) -> Result<(), String> {
    let end = Instant::now() + STEP_TIMEOUT;
    while !f() {
        if Instant::now() > end {
            return Err(format!("timed out waiting for {what}"));
        }
        async_std::task::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn search(s: &Servent, words: &str) -> Vec<Found> {
    let search = s.search(words);
    let mut found = Vec::new();
    let end = Instant::now() + Duration::from_secs(2);
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match async_std::future::timeout(left, search.hits.recv()).await {
            Ok(Ok(msg)) => found.extend(found_in_hit(&msg)),
            _ => break,
        }
    }
    s.stop_search(&search.muid);
    found
}

fn write_samples(dir: &Path, files: &[(&str, u64, usize)]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (name, seed, len) in files {
        std::fs::write(dir.join(name), sample(*seed, *len))
            .map_err(|e| format!("{}: {e}", dir.join(name).display()))?;
    }
    Ok(())
}

/// Runs the demo, telling `out` each step. `Ok` only if every step worked.
pub async fn run<W: Write>(out: &mut W) -> Result<(), String> {
    let root = std::env::temp_dir().join(format!("servent-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let mut d = Demo {
        out,
        root: root.clone(),
        started: Instant::now(),
    };
    let result = steps(&mut d).await;
    let _ = std::fs::remove_dir_all(&root);
    result
}

async fn steps<W: Write>(d: &mut Demo<'_, W>) -> Result<(), String> {
    d.say("Making sample files to share.");
    let alice_dir = d.root.join("alice-share");
    let bob_dir = d.root.join("bob-share");
    write_samples(
        &alice_dir,
        &[
            ("Demo Song - Open Road.ogg", 1, 3 * 1024 * 1024),
            ("demo notes.txt", 2, 4 * 1024),
        ],
    )?;
    write_samples(
        &bob_dir,
        &[("Demo Video - Night Sky.mkv", 3, 2 * 1024 * 1024)],
    )?;

    let up = d
        .servent("ultrapeer", Role::Ultrapeer, &[], None, false)
        .await?;
    let up_addr = up.node().listen_addr();
    d.say(&format!("Started an ultrapeer on {up_addr}."));
    let alice = d
        .servent("alice", Role::Leaf, &[up_addr], Some(alice_dir), false)
        .await?;
    d.say(&format!(
        "Started leaf alice on {}, sharing 2 files.",
        alice.node().listen_addr()
    ));
    let bob = d
        .servent("bob", Role::Leaf, &[up_addr], Some(bob_dir), true)
        .await?;
    d.say(&format!(
        "Started leaf bob on {}, firewalled: nobody can connect to it, it shares 1 file.",
        bob.node().listen_addr()
    ));
    let carol = d
        .servent("carol", Role::Leaf, &[up_addr], None, false)
        .await?;
    d.say(&format!(
        "Started leaf carol on {}, who will search and download.",
        carol.node().listen_addr()
    ));

    until(
        || {
            [&alice, &bob, &carol]
                .iter()
                .all(|s| !s.node().connections().is_empty())
        },
        "the leaves to connect to the ultrapeer",
    )
    .await?;
    until(
        || {
            up.node()
                .connections()
                .iter()
                .filter(|c| c.qrp_slots_set.is_some_and(|n| n > 0))
                .count()
                >= 2
        },
        "the sharing leaves' query routing tables",
    )
    .await?;
    d.say("The three leaves are connected; alice and bob sent their query routing tables.");

    for (words, from, firewalled) in [("demo song", "alice", false), ("night sky", "bob", true)] {
        d.say(&format!("carol searches for \"{words}\"."));
        let found = search(&carol, words).await;
        let Some(f) = found.first() else {
            return Err(format!("no result for \"{words}\""));
        };
        d.say(&format!(
            "  found \"{}\" ({} bytes, {}) from {}{}",
            f.name,
            f.size,
            f.urn,
            from,
            if f.source.push {
                ", which asks for a Push"
            } else {
                ""
            }
        ));
        if f.source.push != firewalled {
            return Err(format!("{from}'s hit has the wrong push flag"));
        }
        let spec = specs(&found).remove(0);
        let how = if firewalled {
            "through Push: carol sends a Push via the ultrapeer, bob connects back with GIV"
        } else {
            "directly over HTTP"
        };
        d.say(&format!("carol downloads it {how}."));
        let dest = d.root.join("carol-downloads");
        let progress = Progress::default();
        let path = async_std::future::timeout(
            STEP_TIMEOUT,
            carol.download(spec.clone(), &dest, &progress),
        )
        .await
        .map_err(|_| format!("downloading {} timed out", spec.name))?
        .map_err(|e| format!("downloading {} failed: {e}", spec.name))?;
        let data = std::fs::read(&path).map_err(|e| e.to_string())?;
        let urn = Sha1Urn::digest(&data);
        if urn != spec.urn {
            return Err(format!("{} does not match its SHA-1", path.display()));
        }
        d.say(&format!(
            "  saved {} ({} bytes); its SHA-1 matches the search result.",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
            data.len()
        ));
    }
    for s in [&carol, &bob, &alice, &up] {
        s.shutdown().await;
    }
    d.say("All done: search, a direct download and a pushed download, both verified.");
    Ok(())
}
