//! Magnet links as Gnutella servents write them (gtk-gnutella's `magnet.c`):
//! `magnet:?xt=urn:sha1:…&dn=name&xl=size&xs=http://host:port/uri-res/N2R?urn:sha1:…`, with
//! the Tiger root as another `xt` (`urn:tree:tiger:…`, or both hashes in one
//! `urn:bitprint:SHA1.TTH`). A link that names its size and a source can start at once,
//! without a search: that is how a file is handed from one person to another.

use std::net::SocketAddrV4;

use percent_encoding::percent_decode_str;

use super::download::{Source, Spec};
use crate::thex::{Tth, parse_bitprint, parse_tree_urn};
use crate::wire::{FileIndex, ServentId, Sha1Urn};

/// Sources kept from one link (as many as a download uses).
pub const MAX_SOURCES: usize = super::plan::MAX_SOURCES;
/// Sources asked for a file's size before giving up on a link without `xl=`.
const RESOLVE_TRIES: usize = 4;
/// Longest link read: far above any real one, and bounded because the API takes links too.
pub const MAX_LEN: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Magnet {
    pub urn: Sha1Urn,
    pub name: Option<String>,
    pub size: Option<u64>,
    pub tth: Option<Tth>,
    /// Direct sources from `xs` (and `as`) HTTP URLs; other kinds are skipped.
    pub sources: Vec<SocketAddrV4>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MagnetError {
    #[error("not a magnet link (it must start with magnet:?)")]
    NotMagnet,
    #[error("the magnet link is longer than {MAX_LEN} bytes")]
    TooLong,
    #[error("the magnet link has no xt=urn:sha1:… (nor urn:bitprint:…)")]
    NoSha1,
    #[error("the magnet link names two different files in its xt")]
    Conflict,
}

impl MagnetError {
    /// A stable name for the error, as the conformance vectors give it.
    pub fn code(&self) -> &'static str {
        match self {
            MagnetError::NotMagnet => "not_magnet",
            MagnetError::TooLong => "too_long",
            MagnetError::NoSha1 => "no_sha1",
            MagnetError::Conflict => "conflict",
        }
    }
}

impl Magnet {
    /// A download that can start without a search: the size and a source are known.
    pub fn spec(&self) -> Option<Spec> {
        let size = self.size?;
        if self.sources.is_empty() {
            return None;
        }
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| self.urn.base32().to_string());
        Some(Spec {
            urn: self.urn,
            size,
            name: name.clone(),
            sources: self
                .sources
                .iter()
                .map(|&addr| Source {
                    addr,
                    // Asked for by urn (`/uri-res/N2R`), which needs no index.
                    index: FileIndex(0),
                    name: name.clone(),
                    servent: ServentId([0; 16]),
                    push: false,
                    proxies: Vec::new(),
                })
                .collect(),
            tth: self.tth,
        })
    }

    /// [`Magnet::spec`], asking the link's sources for the size when the link does not give
    /// it (`xs=` without `xl=`): a `HEAD` to each in turn until one answers for this file.
    pub async fn resolve(&self) -> Option<Spec> {
        if let Some(s) = self.spec() {
            return Some(s);
        }
        for &addr in self.sources.iter().take(RESOLVE_TRIES) {
            match super::probe::size_of(addr, &self.urn).await {
                Ok(size) => {
                    let mut sized = self.clone();
                    sized.size = Some(size);
                    return sized.spec();
                }
                Err(e) => log::info!("{addr} did not give the size of {}: {e}", self.urn),
            }
        }
        None
    }

    /// The link back, with every field it holds.
    pub fn to_link(&self) -> String {
        let enc = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let mut out = format!("magnet:?xt={}", self.urn);
        if let Some(t) = &self.tth {
            out += &format!("&xt=urn:tree:tiger:{t}");
        }
        if let Some(n) = &self.name {
            out += &format!("&dn={}", enc(n));
        }
        if let Some(l) = self.size {
            out += &format!("&xl={l}");
        }
        for s in &self.sources {
            out += &format!(
                "&xs={}",
                enc(&format!("http://{s}/uri-res/N2R?{}", self.urn))
            );
        }
        out
    }
}

fn decode(v: &str) -> String {
    percent_decode_str(&v.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// `http://a.b.c.d:port/…`: the address (port 80 when none is written, as HTTP says).
fn http_source(url: &str) -> Option<SocketAddrV4> {
    let rest = url.strip_prefix("http://")?;
    let host = rest.split(['/', '?']).next()?;
    if let Ok(a) = host.parse::<SocketAddrV4>() {
        return Some(a);
    }
    host.parse().ok().map(|ip| SocketAddrV4::new(ip, 80))
}

pub fn parse(link: &str) -> Result<Magnet, MagnetError> {
    let link = link.trim();
    if link.len() > MAX_LEN {
        return Err(MagnetError::TooLong);
    }
    let q = link
        .strip_prefix("magnet:?")
        .ok_or(MagnetError::NotMagnet)?;
    let (mut urn, mut tth, mut name, mut size) = (None, None, None, None);
    let mut sources = Vec::new();
    let set = |slot: &mut Option<Sha1Urn>, u: Sha1Urn| match slot {
        Some(old) if *old != u => Err(MagnetError::Conflict),
        _ => {
            *slot = Some(u);
            Ok(())
        }
    };
    for kv in q.split('&') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        // `xs.1`, `xt.2`: numbered forms of the same field.
        let k = k.split('.').next().unwrap_or(k);
        let v = decode(v);
        match k {
            "xt" => {
                let lower = v.to_ascii_lowercase();
                if lower.starts_with("urn:sha1:") {
                    if let Ok(u) = v.parse::<Sha1Urn>() {
                        set(&mut urn, u)?;
                    }
                } else if lower.starts_with("urn:bitprint:") {
                    if let Ok((sha1, t)) = parse_bitprint(&v) {
                        set(&mut urn, Sha1Urn(sha1))?;
                        tth = Some(t);
                    }
                } else if let Ok(t) = parse_tree_urn(&v) {
                    tth = Some(t);
                }
            }
            "dn" if !v.is_empty() => name = Some(v),
            "xl" => size = v.trim().parse::<u64>().ok(),
            "xs" | "as" => {
                if let Some(a) = http_source(&v)
                    && sources.len() < MAX_SOURCES
                    && !sources.contains(&a)
                {
                    sources.push(a);
                }
            }
            _ => {}
        }
    }
    Ok(Magnet {
        urn: urn.ok_or(MagnetError::NoSha1)?,
        name,
        size,
        tth,
        sources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gtk_gnutella_link_gives_hashes_size_name_and_source() {
        // As gtk-gnutella's "Copy magnet" writes it.
        let link = "magnet:?xt=urn:sha1:GAYYG5DKMHNKR6SYVM4GADDFGQEKHFDG\
            &xt=urn:tree:tiger:UYUUGYFHAK4F7JLLIMIOWWU53PBDMSNY6LXT5QY\
            &dn=interop%20alpha%20sample.bin&xl=307200\
            &xs=http://100.64.1.2:16346/uri-res/N2R?urn:sha1:GAYYG5DKMHNKR6SYVM4GADDFGQEKHFDG";
        let m = parse(link).unwrap();
        assert_eq!(m.urn.base32(), "GAYYG5DKMHNKR6SYVM4GADDFGQEKHFDG");
        assert_eq!(
            m.tth.unwrap().to_string(),
            "UYUUGYFHAK4F7JLLIMIOWWU53PBDMSNY6LXT5QY"
        );
        assert_eq!(m.name.as_deref(), Some("interop alpha sample.bin"));
        assert_eq!(m.size, Some(307200));
        assert_eq!(m.sources, vec!["100.64.1.2:16346".parse().unwrap()]);
        let spec = m.spec().unwrap();
        assert_eq!(spec.sources[0].addr, m.sources[0]);
        assert_eq!((spec.size, spec.tth), (307200, m.tth));
        // What we write reads back the same.
        assert_eq!(parse(&m.to_link()), Ok(m));
    }

    #[test]
    fn bitprints_encoded_sources_and_numbered_fields_are_read() {
        let u = Sha1Urn::digest(b"abc");
        let t = "UYUUGYFHAK4F7JLLIMIOWWU53PBDMSNY6LXT5QY";
        let link = format!(
            "magnet:?xt.1=urn:bitprint:{}.{t}&xs.1=http%3A%2F%2F100.64.0.9%3A6346%2Furi-res%2FN2R%3F{u}\
             &xs.2=http://100.64.0.10/x&xs.3=urn:sha1:{}&dn=My+Song.ogg",
            u.base32(),
            u.base32()
        );
        let m = parse(&link).unwrap();
        assert_eq!(m.urn, u);
        assert_eq!(m.tth.unwrap().to_string(), t);
        assert_eq!(m.name.as_deref(), Some("My Song.ogg"));
        assert_eq!(
            m.sources,
            vec![
                "100.64.0.9:6346".parse().unwrap(),
                "100.64.0.10:80".parse().unwrap()
            ]
        );
        // No size: a search must find it first.
        assert!(m.spec().is_none());
    }

    #[test]
    fn bad_links_are_refused_with_a_reason() {
        let u = Sha1Urn::digest(b"abc");
        let v = Sha1Urn::digest(b"abd");
        assert_eq!(parse("magnet:?dn=x"), Err(MagnetError::NoSha1));
        assert_eq!(parse("urn:sha1:x"), Err(MagnetError::NotMagnet));
        assert_eq!(
            parse(&format!("magnet:?xt={u}&xt={v}")),
            Err(MagnetError::Conflict)
        );
        let huge = format!("magnet:?xt={u}&{}", "xs=http://1.2.3.4:5/&".repeat(4000));
        assert_eq!(parse(&huge), Err(MagnetError::TooLong));
        // Many sources: bounded, not refused.
        let many: String = (0..200)
            .map(|i| format!("&xs=http://100.64.{}.{}:6346/", i / 250, i % 250 + 1))
            .collect();
        assert_eq!(
            parse(&format!("magnet:?xt={u}{many}"))
                .unwrap()
                .sources
                .len(),
            MAX_SOURCES
        );
    }
}
