//! QueryHit payloads for matching files (PROTOCOL.md §2.4): results with their `urn:sha1`, a
//! QHD with our vendor code and flags, and our servent GUID.

use std::net::SocketAddrV4;

use crate::wire::ggep::{Encoding, GgepBuilder, int_bytes};
use crate::wire::{
    ExtBuilder, Qhd, QhdFlags, QueryHit, Results, ResultsBuilder, ServentId, Trailer, VendorCode,
};

use super::SharedFile;
use super::partial::PartialFile;
use crate::thex::Tth;
use crate::wire::{FileIndex, Sha1Urn};

/// A file as a hit offers it: shared, or downloading with verified ranges.
#[derive(Debug, Clone)]
pub struct Offer<'a> {
    pub index: FileIndex,
    pub name: &'a str,
    pub size: u64,
    pub sha1: Sha1Urn,
    pub tth: Option<Tth>,
    /// A partial file: the UNIX time its verified part last grew and the verified bytes,
    /// sent as GGEP `PRU` (SWARM.md §1.4).
    pub partial: Option<(u32, u64)>,
}

impl<'a> From<&'a SharedFile> for Offer<'a> {
    fn from(f: &'a SharedFile) -> Self {
        Offer {
            index: f.index,
            name: &f.name,
            size: f.size,
            sha1: f.sha1,
            tth: f.tth,
            partial: None,
        }
    }
}

impl<'a> From<&'a PartialFile> for Offer<'a> {
    fn from(p: &'a PartialFile) -> Self {
        let when = p
            .last_write
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs().min(u64::from(u32::MAX)) as u32);
        Offer {
            index: p.index,
            name: &p.name,
            size: p.size,
            sha1: p.urn,
            tth: p.tth(),
            partial: (!p.complete).then(|| (when, p.verified_bytes())),
        }
    }
}

/// Results per hit: gtk-gnutella sends at most 10 (PROTOCOL.md §1).
pub const RESULTS_PER_HIT: usize = 10;
/// A hit is closed once its results pass this many bytes; gtk-gnutella flushes at ~2 KB, and
/// hits stay well under the 4 KB that every servent forwards.
pub const HIT_BYTES: usize = 2048;

/// What a hit says about us.
#[derive(Debug, Clone)]
pub struct Responder {
    pub addr: SocketAddrV4,
    pub speed_kbps: u32,
    pub servent: ServentId,
    /// We cannot accept connections: downloaders must push.
    pub firewalled: bool,
    /// No upload slot free.
    pub busy: bool,
    /// We have completed an upload.
    pub uploaded: bool,
    /// Our push proxies, listed in GGEP `PUSH` when we are firewalled.
    pub push_proxies: Vec<SocketAddrV4>,
}

fn result_ext(f: &Offer<'_>) -> Vec<u8> {
    let mut ext = ExtBuilder::new();
    ext.urn(&f.sha1);
    let enc = Encoding {
        deflate: false,
        cobs_if_nul: true,
    };
    let mut g = GgepBuilder::new();
    if f.size >= u64::from(u32::MAX) {
        // Files of 4 GiB and more: the 32-bit field says 0xFFFFFFFF, GGEP LF the real size.
        let (b, n) = int_bytes(f.size);
        g.push("LF", &b[..n], enc).expect("valid id");
    }
    if let Some(t) = &f.tth {
        // The Tiger tree root beside the ASCII urn:sha1, as gtk-gnutella does when it does not
        // use GGEP H (SWARM.md §1.4).
        g.push("TT", &t.0, enc).expect("valid id");
    }
    if let Some((when, avail)) = f.partial {
        // gtk-gnutella `ggept_stamp_filesize_encode`: BE time, then the bytes available as an
        // LE integer without its trailing zero bytes.
        let mut v = when.to_be_bytes().to_vec();
        let (b, n) = int_bytes(avail);
        v.extend_from_slice(&b[..n]);
        g.push("PRU", &v, enc).expect("valid id");
    }
    let block = g.finish();
    if !block.is_empty() {
        ext.ggep(&block);
    }
    ext.finish()
}

/// QueryHit payloads listing `files`, split so no hit has more than [`RESULTS_PER_HIT`] results
/// or much more than [`HIT_BYTES`].
pub fn query_hits(files: &[Offer<'_>], me: &Responder) -> Vec<Vec<u8>> {
    // A firewalled servent's push proxies, in the private area's GGEP block (gtk-gnutella's
    // `PUSH`: IPv4 big-endian and port little-endian, 6 bytes each).
    let private = if me.firewalled && !me.push_proxies.is_empty() {
        let mut v = Vec::with_capacity(6 * me.push_proxies.len());
        for p in &me.push_proxies {
            v.extend_from_slice(&p.ip().octets());
            v.extend_from_slice(&p.port().to_le_bytes());
        }
        let mut g = crate::wire::ggep::GgepBuilder::new();
        g.push("PUSH", &v, crate::wire::ggep::Encoding::default())
            .expect("valid id");
        g.finish()
    } else {
        Vec::new()
    };
    let flags = QhdFlags {
        push: me.firewalled,
        busy: me.busy,
        uploaded: me.uploaded,
        measured_speed: false,
        ggep: !private.is_empty(),
    }
    .to_ab();
    let mut out = Vec::new();
    let mut finish = |r: &ResultsBuilder| {
        let hit = QueryHit {
            addr: me.addr,
            speed: me.speed_kbps,
            results: Results::from_bytes(r.bytes(), r.count()).expect("built valid"),
            trailer: Trailer::Qhd(Qhd {
                vendor: VendorCode::SRVT,
                open_data: &flags,
                private: &private,
            }),
            servent: me.servent,
        };
        let mut p = Vec::new();
        hit.encode(&mut p);
        out.push(p);
    };
    let mut r = ResultsBuilder::new();
    for f in files {
        let size = u32::try_from(f.size).unwrap_or(u32::MAX);
        r.push(f.index, size, f.name, &result_ext(f));
        if usize::from(r.count()) >= RESULTS_PER_HIT || r.len() >= HIT_BYTES {
            finish(&r);
            r = ResultsBuilder::new();
        }
    }
    if !r.is_empty() {
        finish(&r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(i: u32, name: &str, size: u64) -> SharedFile {
        SharedFile {
            index: FileIndex(i),
            path: name.into(),
            name: name.into(),
            size,
            mtime: 0,
            sha1: Sha1Urn::digest(name.as_bytes()),
            tth: None,
        }
    }

    #[test]
    fn hits_carry_urns_flags_and_our_guid_and_split_at_ten_results() {
        let files: Vec<SharedFile> = (1..=23)
            .map(|i| file(i, &format!("file {i}.txt"), 1000))
            .chain([file(99, "huge.iso", 5 << 30)])
            .collect();
        let refs: Vec<Offer<'_>> = files.iter().map(Offer::from).collect();
        let me = Responder {
            addr: "127.0.0.1:6346".parse().unwrap(),
            speed_kbps: 1000,
            servent: ServentId([7; 16]),
            firewalled: true,
            busy: false,
            uploaded: true,
            push_proxies: Vec::new(),
        };
        let hits = query_hits(&refs, &me);
        assert_eq!(hits.len(), 3);
        let mut seen = 0;
        for p in &hits {
            let h = QueryHit::decode(p).unwrap();
            assert!(h.results.len() <= RESULTS_PER_HIT);
            assert_eq!(h.servent, me.servent);
            let f = h.flags().unwrap();
            assert!(f.push && f.uploaded && !f.busy);
            assert_eq!(h.trailer.qhd().unwrap().vendor, VendorCode::SRVT);
            for r in h.results.iter() {
                let want = files.iter().find(|f| f.index == r.index).unwrap();
                assert_eq!(r.extensions.sha1(), Some(want.sha1));
                assert_eq!(r.file_size(), want.size);
                seen += 1;
            }
        }
        assert_eq!(seen, 24);
    }

    #[test]
    fn a_firewalled_servent_lists_its_push_proxies_in_ggep_push() {
        let files = [file(1, "behind.txt", 10)];
        let refs: Vec<Offer<'_>> = files.iter().map(Offer::from).collect();
        let proxies: Vec<SocketAddrV4> = vec![
            "100.64.0.1:6346".parse().unwrap(),
            "100.64.0.2:6347".parse().unwrap(),
        ];
        let mut me = Responder {
            addr: "192.168.77.2:6346".parse().unwrap(),
            speed_kbps: 1000,
            servent: ServentId([7; 16]),
            firewalled: true,
            busy: false,
            uploaded: false,
            push_proxies: proxies.clone(),
        };
        let hit = &query_hits(&refs, &me)[0];
        let h = QueryHit::decode(hit).unwrap();
        assert!(h.flags().unwrap().push);
        let qhd = h.trailer.qhd().unwrap();
        let g = crate::wire::ggep::Ggep::parse_all(qhd.private).unwrap();
        // IPv4 big-endian, port little-endian (SWARM.md §5.2).
        assert_eq!(
            g.value("PUSH").unwrap().as_ref(),
            [100, 64, 0, 1, 0xCA, 0x18, 100, 64, 0, 2, 0xCB, 0x18]
        );
        // Reachable, it lists none (and sets no GGEP flag).
        me.firewalled = false;
        let h2 = query_hits(&refs, &me);
        let h = QueryHit::decode(&h2[0]).unwrap();
        assert!(h.trailer.qhd().unwrap().private.is_empty());
    }
}
