//! `servent search` and `servent get` as one-shot servents: join, search or fetch, print, leave.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::servent::{Found, Search, Servent, add_found, found_in_hit};
use crate::transfer::download::{Progress, Spec};
use crate::transfer::magnet::{self, Magnet};
use crate::wire::Sha1Urn;

/// How long a one-shot servent waits for its first ultrapeer.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long it then waits for the ultrapeer's connect-back that proves it reachable.
pub const CONNECT_BACK_WAIT: Duration = Duration::from_secs(3);

/// Results grouped by file: one download spec per SHA-1, one source per servent.
#[derive(Default)]
pub struct Groups(pub Vec<Spec>);

impl Groups {
    /// Adds a result; returns true when it is a file not seen before.
    pub fn add(&mut self, f: Found) -> bool {
        add_found(&mut self.0, f)
    }

    /// Most sources first, then by name.
    pub fn sorted(&self) -> Vec<&Spec> {
        let mut v: Vec<&Spec> = self.0.iter().collect();
        v.sort_by(|a, b| {
            b.sources
                .len()
                .cmp(&a.sources.len())
                .then(a.name.cmp(&b.name))
        });
        v
    }
}

pub use crate::text::human;

/// Waits until the servent has an ultrapeer, telling `err` once.
pub async fn joined(s: &Servent, err: &mut impl Write) -> Result<(), String> {
    let end = Instant::now() + JOIN_TIMEOUT;
    let mut told = false;
    while s.node().connections().is_empty() {
        if !told {
            let _ = writeln!(err, "connecting to the network…");
            told = true;
        }
        if Instant::now() > end {
            return Err(format!(
                "could not join the network within {} s: no peer answered (give one with \
                 --peer HOST:PORT, or check that UDP and outgoing TCP are allowed)",
                JOIN_TIMEOUT.as_secs()
            ));
        }
        async_std::task::sleep(Duration::from_millis(100)).await;
    }
    // Give our ultrapeer a moment to connect back: until it does, our queries say we are
    // firewalled and firewalled sources cannot answer them.
    let end = Instant::now() + CONNECT_BACK_WAIT;
    while s.firewalled() && Instant::now() < end {
        async_std::task::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Collects the results of `search` for `wait`, calling `each` for every new file.
pub async fn collect(
    s: &Servent,
    search: Search,
    wait: Duration,
    mut each: impl FnMut(&Spec),
) -> Groups {
    let mut groups = Groups::default();
    let end = Instant::now() + wait;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match async_std::future::timeout(left, search.hits.recv()).await {
            Ok(Ok(msg)) => {
                for f in found_in_hit(&msg) {
                    if groups.add(f) {
                        each(groups.0.last().expect("just added"));
                    }
                }
            }
            _ => break,
        }
    }
    s.stop_search(&search.muid);
    groups
}

/// Prints the final table.
pub fn print_table(groups: &Groups, out: &mut impl Write) {
    let g = groups.sorted();
    if g.is_empty() {
        let _ = writeln!(out, "no results");
        return;
    }
    let _ = writeln!(out, "{:>7}  {:>9}  {:<50}  urn", "sources", "size", "name");
    for r in g {
        let _ = writeln!(
            out,
            "{:>7}  {:>9}  {:<50}  {}",
            r.sources.len(),
            human(r.size),
            r.name,
            r.urn
        );
    }
}

/// Reads `urn:sha1:…` or a magnet link (`magnet:?xt=urn:sha1:…&dn=name`): the SHA-1 and the
/// name, when the link gives one.
pub fn parse_target(s: &str) -> Result<(Sha1Urn, Option<String>), String> {
    let m = parse_link(s)?;
    Ok((m.urn, m.name))
}

/// Reads `urn:sha1:…` or a magnet link, with everything the link says (size, Tiger root,
/// direct sources).
pub fn parse_link(s: &str) -> Result<Magnet, String> {
    let s = s.trim();
    if s.starts_with("magnet:") {
        return magnet::parse(s).map_err(|e| format!("{s}: {e}"));
    }
    s.parse::<Sha1Urn>()
        .map(|urn| Magnet {
            urn,
            name: None,
            size: None,
            tth: None,
            sources: Vec::new(),
        })
        .map_err(|_| format!("{s}: expected urn:sha1:<32 base32 characters> or a magnet link"))
}

/// Downloads with a progress line on `err`, redrawn every 200 ms.
pub async fn download_with_progress(
    s: &Servent,
    spec: Spec,
    dir: &Path,
    err: &mut impl Write,
) -> Result<PathBuf, String> {
    let progress = Progress::default();
    let started = Instant::now();
    let name = spec.name.clone();
    let dl = s.download(spec, dir, &progress);
    futures_lite::pin!(dl);
    loop {
        let tick = async {
            async_std::task::sleep(Duration::from_millis(200)).await;
            None
        };
        let done = futures_lite::future::or(async { Some((&mut dl).await) }, tick).await;
        let have = progress.done.load(Ordering::Relaxed);
        let total = progress.total.load(Ordering::Relaxed).max(1);
        let secs = started.elapsed().as_secs_f64().max(0.001);
        let rate = have as f64 / secs;
        let eta = if rate > 0.0 {
            format!("{:.0}s", (total.saturating_sub(have)) as f64 / rate)
        } else {
            "?".into()
        };
        let _ = write!(
            err,
            "\r{name}: {:>3}%  {} of {}  {}/s  ETA {eta}  {}   ",
            have * 100 / total,
            human(have),
            human(total),
            human(rate as u64),
            crate::text::count(
                progress.sources.load(Ordering::Relaxed),
                "source",
                "sources"
            ),
        );
        let _ = err.flush();
        if let Some(r) = done {
            let _ = writeln!(err);
            return r.map_err(|e| e.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_urns_or_magnet_links() {
        let u = Sha1Urn::digest(b"abc");
        assert_eq!(parse_target(&u.to_string()), Ok((u, None)));
        let m = format!("magnet:?xt={u}&dn=My+Song.ogg&xl=3");
        assert_eq!(parse_target(&m), Ok((u, Some("My Song.ogg".into()))));
        assert!(
            parse_target("magnet:?dn=x")
                .unwrap_err()
                .contains("no xt=urn:sha1")
        );
        assert!(
            parse_target("hello")
                .unwrap_err()
                .contains("expected urn:sha1")
        );
    }

    #[test]
    fn sizes_read_like_a_person_writes_them() {
        assert_eq!(human(17), "17 B");
        assert_eq!(human(1_500_000), "1.5 MB");
        assert_eq!(human(312_000), "312.0 KB");
    }
}
