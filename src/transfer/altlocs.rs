//! The download mesh on HTTP (SWARM.md §2): what an upload learns from a downloader's request
//! (its `X-Node`, its `X-Alt`, its `X-Nalt`) and hands to the next downloaders, and what a
//! download sends and learns. One mesh serves both sides, so the sources our downloads found
//! good are handed to those who download from us, and the downloaders who share partial data
//! are handed to everyone after them: the first sources act as the tracker.

use std::net::SocketAddrV4;
use std::time::Instant;

use hyper::HeaderMap;
use hyper::header::HeaderValue;
use log::debug;

use super::upload::Uploads;
use crate::swarm::altloc::{AltLoc, format_x_alt, parse_x_alt, parse_x_nalt};
use crate::swarm::mesh::{MeshEntry, SelectFilter};
use crate::swarm::ranges::{RangeSet, parse_available};
use crate::wire::Sha1Urn;

/// Bytes of `X-Alt` in one reply: gtk-gnutella sizes mesh headers to what is left of a 3072-byte
/// reply header; 1 KiB (about 40 entries) leaves room for the rest.
const REPLY_ALT_BUDGET: usize = 1024;
/// Bytes of `X-Alt` in one request (gtk-gnutella `DOWNLOAD_ALT_LOC_SIZE`: at most 1024).
const REQUEST_ALT_BUDGET: usize = 1024;
/// Entries handed out per reply at most, whatever the budget.
const REPLY_ALTS: usize = 40;

fn seed() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

fn rng() -> impl FnMut() -> u64 {
    let mut x = seed() | 1;
    move || {
        // xorshift64: shuffling alt-locs needs no more.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

fn header<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn ours(up: &Uploads, a: &SocketAddrV4) -> bool {
    up.me.read().unwrap_or_else(|e| e.into_inner()).contains(a)
}

/// Learns from a download request for `urn`. Returns the downloader's listening address when
/// it gave one (`X-Node`): the key its mesh diffs are kept under, and never handed to itself.
pub fn learn(
    up: &Uploads,
    req: &hyper::Request<hyper::body::Incoming>,
    peer: SocketAddrV4,
    urn: &Sha1Urn,
) -> Option<SocketAddrV4> {
    let h = req.headers();
    let node = header(h, "X-Node")
        .or_else(|| header(h, "X-Listen-IP"))
        .and_then(|v| v.trim().parse::<SocketAddrV4>().ok());
    let now = Instant::now();
    let mut mesh = up.mesh.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(alts) = header(h, "X-Alt").and_then(|v| parse_x_alt(v).ok()) {
        for a in alts {
            if ours(up, &a.addr) {
                continue;
            }
            // A downloader listing its own address shares what it has (gtk-gnutella marks
            // such an entry good, SWARM.md §2.3).
            if Some(a.addr) == node {
                debug!("{peer} shares {urn} from {}", a.addr);
            }
            mesh.add(*urn, MeshEntry::Direct(a), node, now);
        }
    }
    // A downloader's own ranges (sent by servents on every request): kept while we download
    // the file too, under the address it listens on, on the IP it really came from.
    if let Some(n) = node
        && let Some(size) = downloading(up, urn)
        && let Some(r) = header(h, "X-Available-Ranges").and_then(|v| parse_available(v, size).ok())
    {
        let who = SocketAddrV4::new(*peer.ip(), n.port());
        up.peer_ranges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put((*urn, who), r);
    }
    if let Some(bad) = header(h, "X-Nalt").and_then(|v| parse_x_nalt(v).ok()) {
        for a in bad {
            mesh.negative(*urn, a.addr, *peer.ip(), now);
        }
    }
    node
}

/// `X-Alt` on a reply for `urn`: what is new since this downloader last heard of the mesh
/// (gtk-gnutella sends diffs), never itself nor us. For a file still downloading, only the
/// entries known good.
pub fn reply_headers(
    up: &Uploads,
    h: &mut HeaderMap,
    urn: &Sha1Urn,
    partial: bool,
    peer: SocketAddrV4,
    downloader: Option<SocketAddrV4>,
) {
    // A random choice each time rather than gtk-gnutella's per-IP diff: on one address (a
    // LAN, loopback) several downloaders would share one diff and most would learn nothing.
    let not_to: Vec<SocketAddrV4> = downloader.into_iter().chain([peer]).collect();
    let alts = select_direct(up, urn, &not_to, partial, None, REPLY_ALTS);
    if alts.is_empty() {
        return;
    }
    let v = format_x_alt(&alts, REPLY_ALT_BUDGET);
    if let Ok(v) = HeaderValue::from_str(&v) {
        h.insert("X-Alt", v);
    }
}

/// The size of `urn` when we are downloading it.
fn downloading(up: &Uploads, urn: &Sha1Urn) -> Option<u64> {
    let parts = up.partials.read().unwrap_or_else(|e| e.into_inner());
    parts.get(urn).filter(|f| !f.complete).map(|f| f.size)
}

/// What downloaders of `urn` last said they hold, and where they listen.
pub fn peer_ranges(up: &Uploads, urn: &Sha1Urn) -> Vec<(SocketAddrV4, RangeSet)> {
    up.peer_ranges
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|((u, _), _)| u == urn)
        .map(|((_, a), r)| (*a, r.clone()))
        .collect()
}

/// `X-Available-Ranges` of a request: what we verified of the file, when we offer it; at
/// most this long (a subset is still true).
const REQUEST_RANGES_BUDGET: usize = 2048;

pub fn request_ranges(verified: &RangeSet) -> Option<String> {
    if verified.is_empty() {
        return None;
    }
    let mut v = verified.format_available();
    if v.len() > REQUEST_RANGES_BUDGET {
        let cut = v[..REQUEST_RANGES_BUDGET].rfind(',')?;
        v.truncate(cut);
    }
    Some(v)
}

/// Most sources a running download takes from the mesh at one look.
const MESH_LOOK: usize = 32;

/// Sources of `urn` in the mesh, new since `since`: what downloaders of the file told us in
/// their requests' `X-Alt` as much as what sources told us, so that our own running download
/// of it uses them too (gtk-gnutella swarms with both).
pub fn mesh_sources(up: &Uploads, urn: &Sha1Urn, since: Option<Instant>) -> Vec<SocketAddrV4> {
    select_direct(up, urn, &[], false, since, MESH_LOOK)
        .into_iter()
        .map(|a| a.addr)
        .collect()
}

/// Direct entries of `urn`'s mesh, never ours nor those of `not_to`: only good ones when
/// `only_good`, only those inserted after `since`, at most `max`, in random order.
fn select_direct(
    up: &Uploads,
    urn: &Sha1Urn,
    not_to: &[SocketAddrV4],
    only_good: bool,
    since: Option<Instant>,
    max: usize,
) -> Vec<AltLoc> {
    let mut exclude: Vec<SocketAddrV4> = up.me.read().unwrap_or_else(|e| e.into_inner()).clone();
    exclude.extend_from_slice(not_to);
    let filter = SelectFilter {
        for_peer: std::net::Ipv4Addr::UNSPECIFIED,
        exclude: &exclude,
        exclude_guids: &[],
        only_good,
        since,
        max,
        max_fw: 0,
    };
    up.mesh
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .select(*urn, &filter, &mut rng(), Instant::now())
        .0
}

/// The `X-Alt` of a download request: ourselves first when we share what we have (as
/// gtk-gnutella does on every request), then, on a connection's first request, the sources
/// that served us.
pub fn request_alt(
    up: &Uploads,
    urn: &Sha1Urn,
    me: Option<SocketAddrV4>,
    verified_any: bool,
    to: SocketAddrV4,
    first: bool,
) -> Option<String> {
    let mut alts = Vec::new();
    if let Some(me) = me
        && verified_any
        && up.shares_partials()
    {
        alts.push(AltLoc::new(me));
    }
    if first {
        let exclude = [to];
        let filter = SelectFilter {
            for_peer: std::net::Ipv4Addr::UNSPECIFIED,
            exclude: &exclude,
            exclude_guids: &[],
            only_good: true,
            since: None,
            max: REPLY_ALTS,
            max_fw: 0,
        };
        let (good, _) = up.mesh.lock().unwrap_or_else(|e| e.into_inner()).select(
            *urn,
            &filter,
            &mut rng(),
            Instant::now(),
        );
        alts.extend(good.into_iter().filter(|a| Some(a.addr) != me));
    }
    (!alts.is_empty()).then(|| format_x_alt(&alts, REQUEST_ALT_BUDGET))
}

/// The alt-locs a reply from `from` names for `urn` (added to the mesh too); `X-Nalt` ones
/// are reported against it.
pub fn response_alts(
    up: &Uploads,
    urn: &Sha1Urn,
    h: &HeaderMap,
    from: SocketAddrV4,
) -> Vec<SocketAddrV4> {
    let now = Instant::now();
    let mut mesh = up.mesh.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(bad) = header(h, "X-Nalt").and_then(|v| parse_x_nalt(v).ok()) {
        for a in bad {
            mesh.negative(*urn, a.addr, *from.ip(), now);
        }
    }
    let Some(alts) = header(h, "X-Alt").and_then(|v| parse_x_alt(v).ok()) else {
        return Vec::new();
    };
    alts.into_iter()
        .filter(|a| a.addr != from && !ours(up, &a.addr))
        .inspect(|a| {
            mesh.add(*urn, MeshEntry::Direct(*a), Some(from), now);
        })
        .map(|a| a.addr)
        .collect()
}

/// A source served us: it is good, and propagated again.
pub fn source_good(up: &Uploads, urn: &Sha1Urn, addr: SocketAddrV4) {
    let now = Instant::now();
    let mut mesh = up.mesh.lock().unwrap_or_else(|e| e.into_inner());
    mesh.add(*urn, MeshEntry::Direct(AltLoc::new(addr)), None, now);
    mesh.mark_good(*urn, addr, now);
}

/// A source failed us for good: out of the mesh, and banned from it for a while.
pub fn source_failed(up: &Uploads, urn: &Sha1Urn, addr: SocketAddrV4) {
    up.mesh
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove_and_ban(*urn, addr, Instant::now());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_ranges_in_a_request_are_bounded_and_still_true() {
        assert_eq!(request_ranges(&RangeSet::new()), None);
        let mut few = RangeSet::new();
        few.insert(0, 1024);
        few.insert(4096, 8192);
        assert_eq!(
            request_ranges(&few).as_deref(),
            Some("bytes 0-1023, 4096-8191")
        );
        // Thousands of pieces: cut at a range boundary, every range kept one we hold.
        let mut many = RangeSet::new();
        for i in 0..5000u64 {
            many.insert(i * 1_000_000, i * 1_000_000 + 1000);
        }
        let v = request_ranges(&many).unwrap();
        assert!(v.len() <= REQUEST_RANGES_BUDGET, "{}", v.len());
        let back = parse_available(&v, 5_000_000_000).unwrap();
        assert!(back.covered_len() > 0);
        for r in back.iter() {
            assert!(many.contains_range(r.start, r.end), "{r:?}");
        }
    }
}
