//! QueryHit (PROTOCOL.md §2.4): a head, N results, an optional QHD trailer, and the responder's
//! servent GUID in the last 16 bytes. Decoding validates every result once and allocates
//! nothing; results are then iterated from the bytes.

use std::net::SocketAddrV4;

use nom::Parser;
use nom::bytes::complete::take;
use nom::number::complete::{be_u32, le_u16, le_u32, u8 as byte};

use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};

use super::error::WireError;
use super::ext::Extensions;
use super::ggep::{Ggep, MAGIC};
use super::scan::Marks;
use super::simple::{cstr, fixed};
use super::types::{FileIndex, ServentId, Text, VendorCode, ser_hex};

/// One shared file in a hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct HitResult<'a> {
    pub index: FileIndex,
    /// 0xFFFFFFFF when the file is 4 GiB or more; see [`HitResult::file_size`].
    pub size: u32,
    pub name: Text<'a>,
    pub extensions: Extensions<'a>,
}

impl HitResult<'_> {
    /// The real size: GGEP `LF` overrides the 32-bit field for large files.
    pub fn file_size(&self) -> u64 {
        self.extensions
            .ggep()
            .and_then(|g| g.int("LF"))
            .unwrap_or(u64::from(self.size))
    }
}

fn split_result(i: &[u8]) -> Result<(&[u8], HitResult<'_>), WireError> {
    // Sliced by hand rather than with nom: this runs for every result, and nom's `take_from`
    // was not inlined here.
    let (&[a0, a1, a2, a3, b0, b1, b2, b3], i) =
        i.split_first_chunk::<8>().ok_or(WireError::Truncated {
            what: "query hit result",
        })?;
    let (index, size) = (
        u32::from_le_bytes([a0, a1, a2, a3]),
        u32::from_le_bytes([b0, b1, b2, b3]),
    );
    let (i, name) = cstr(i, "query hit file name")?;
    // Only a GGEP item can be malformed, and one starts with 0xC3. When the area's NUL comes
    // before any 0xC3, one scan both ends the area and proves it valid; otherwise walk it.
    let (i, extensions) = match memchr::memchr2(0, MAGIC, i) {
        Some(n) if i[n] == 0 => (&i[n + 1..], Extensions::without_ggep(&i[..n])),
        _ => {
            let (i, ext) = cstr(i, "query hit result extensions")?;
            (i, Extensions::parse(ext.0)?)
        }
    };
    Ok((
        i,
        HitResult {
            index: FileIndex(index),
            size,
            name,
            extensions,
        },
    ))
}

/// The results of a hit: validated bytes and their count.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Results<'a> {
    raw: &'a [u8],
    count: u8,
}

impl<'a> Results<'a> {
    /// Validates `count` results at the start of `i`; returns them and the bytes after.
    ///
    /// The same checks as [`split_result`] on each result in turn, with the same errors, but
    /// the NULs that end names and extension areas are found in one [`Marks`] walk over the
    /// area rather than by a search per field.
    fn parse(i: &'a [u8], count: u8) -> Result<(Self, &'a [u8]), WireError> {
        let overrun = |parsed| WireError::HitCountOverrun { count, parsed };
        let mut marks = Marks::new(i);
        let mut at = 0;
        for parsed in 0..count {
            // Index and size, then the name's NUL.
            let name_at = at + 8;
            if name_at > i.len() {
                return Err(overrun(parsed));
            }
            let name_end = marks.nul(name_at).ok_or(overrun(parsed))?;
            // Only a GGEP item can be malformed, and one starts with 0xC3. When the area's NUL
            // comes before any 0xC3, finding it both ends the area and proves it valid;
            // otherwise the area is walked item by item.
            let ext_at = name_end + 1;
            at = match marks.first(ext_at) {
                Some(n) if i[n] == 0 => n + 1,
                _ => {
                    let area = &i[ext_at..];
                    let n = super::scan::nul(area).ok_or(overrun(parsed))?;
                    Extensions::parse(&area[..n])?;
                    ext_at + n + 1
                }
            };
        }
        let (raw, rest) = i.split_at(at);
        Ok((Results { raw, count }, rest))
    }

    /// Results written by [`ResultsBuilder`], or any bytes holding exactly `count` results.
    pub fn from_bytes(raw: &'a [u8], count: u8) -> Result<Self, WireError> {
        let (r, rest) = Self::parse(raw, count)?;
        if !rest.is_empty() {
            return Err(WireError::TrailingBytes {
                what: "results",
                len: rest.len(),
            });
        }
        Ok(r)
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    pub fn iter(&self) -> impl Iterator<Item = HitResult<'a>> + 'a {
        let mut rest = self.raw;
        // Validated when parsed, so split_result cannot fail here; stopping is the safe answer.
        (0..self.count).map_while(move |_| {
            let (r, res) = split_result(rest).ok()?;
            rest = r;
            Some(res)
        })
    }
}

impl std::fmt::Debug for Results<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for Results<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for r in self.iter() {
            seq.serialize_element(&r)?;
        }
        seq.end()
    }
}

/// Writes the results of a hit.
#[derive(Default)]
pub struct ResultsBuilder {
    buf: Vec<u8>,
    count: u8,
}

impl ResultsBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a result; `extensions` comes from [`super::ext::ExtBuilder`] and must hold no NUL.
    /// Returns false, adding nothing, once 255 results are in.
    pub fn push(&mut self, index: FileIndex, size: u32, name: &str, extensions: &[u8]) -> bool {
        if self.count == u8::MAX {
            return false;
        }
        self.buf.extend_from_slice(&index.0.to_le_bytes());
        self.buf.extend_from_slice(&size.to_le_bytes());
        self.buf.extend(name.bytes().filter(|&b| b != 0));
        self.buf.push(0);
        self.buf.extend(extensions.iter().filter(|&&b| b != 0));
        self.buf.push(0);
        self.count += 1;
        true
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn count(&self) -> u8 {
        self.count
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// The QHD flag bits; each is set when `A & B` has it (PROTOCOL.md §2.4: A marks which bits
/// mean something and B holds them, except for push where it is the other way round, so the
/// conjunction is right for all).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
pub struct QhdFlags {
    pub push: bool,
    pub busy: bool,
    pub uploaded: bool,
    pub measured_speed: bool,
    pub ggep: bool,
}

impl QhdFlags {
    const PUSH: u8 = 0x01;
    const BUSY: u8 = 0x04;
    const UPLOADED: u8 = 0x08;
    const SPEED: u8 = 0x10;
    const GGEP: u8 = 0x20;

    fn from_ab(a: u8, b: u8) -> Self {
        let v = a & b;
        QhdFlags {
            push: v & Self::PUSH != 0,
            busy: v & Self::BUSY != 0,
            uploaded: v & Self::UPLOADED != 0,
            measured_speed: v & Self::SPEED != 0,
            ggep: v & Self::GGEP != 0,
        }
    }

    /// Bytes A and B the way gtk-gnutella writes them: A = 0x2C|push (bits 2, 3, 5 are
    /// meaningful, plus push as a value), B = 0x01 (push meaningful) | busy | uploaded | GGEP.
    /// Speed is marked meaningful only when measured.
    pub fn to_ab(self) -> [u8; 2] {
        let mut a = Self::BUSY | Self::UPLOADED | Self::GGEP;
        let mut b = Self::PUSH;
        if self.push {
            a |= Self::PUSH;
        }
        if self.measured_speed {
            a |= Self::SPEED;
            b |= Self::SPEED;
        }
        for (on, bit) in [
            (self.busy, Self::BUSY),
            (self.uploaded, Self::UPLOADED),
            (self.ggep, Self::GGEP),
        ] {
            if on {
                b |= bit;
            }
        }
        [a, b]
    }
}

/// The QHD ("query hit descriptor") trailer: vendor, open data, private area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Qhd<'a> {
    pub vendor: VendorCode,
    pub open_data: &'a [u8],
    pub private: &'a [u8],
}

/// The raw fields, plus what [`Qhd::flags`] and [`Qhd::ggep`] read from them when present, so
/// the JSON view (`servent decode --json`, conformance vectors) shows the `A & B` flags and the
/// private GGEP block.
impl Serialize for Qhd<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let hex = |b: &[u8]| data_encoding::HEXLOWER.encode(b);
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("vendor", &self.vendor)?;
        m.serialize_entry("open_data", &hex(self.open_data))?;
        m.serialize_entry("private", &hex(self.private))?;
        if let Some(f) = self.flags() {
            m.serialize_entry("flags", &f)?;
        }
        if let Some(g) = self.ggep() {
            m.serialize_entry("ggep", &g)?;
        }
        m.end()
    }
}

impl<'a> Qhd<'a> {
    /// Flags as gtk-gnutella reads them (`search.c`): open data of 2 or 4 bytes carries A and B
    /// (the XML length of LimeWire's 4 is not a flag); NapShare's single byte is the flags;
    /// anything else carries none.
    pub fn flags(&self) -> Option<QhdFlags> {
        match self.open_data {
            [a, b] | [a, b, _, _] => Some(QhdFlags::from_ab(*a, *b)),
            [f] if self.vendor.0 == *b"NAPS" => Some(QhdFlags::from_ab(*f, *f)),
            _ => None,
        }
    }

    /// The private area's GGEP block, when the flags announce one. Like gtk-gnutella, it may
    /// start anywhere in the area (LimeWire puts a byte before it), and a malformed one is
    /// ignored rather than costing the hit.
    pub fn ggep(&self) -> Option<Ggep<'a>> {
        if !self.flags()?.ggep {
            return None;
        }
        let start = memchr::memchr(MAGIC, self.private)?;
        Ggep::parse_block(&self.private[start..])
            .ok()
            .map(|(g, _)| g)
    }
}

/// What sits between the last result and the servent GUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trailer<'a> {
    None,
    Qhd(Qhd<'a>),
    /// Too short for a QHD, or an open-data size past its end. gtk-gnutella keeps such hits
    /// (PROTOCOL.md §2.4: be lenient), and so do we.
    Unknown(#[serde(serialize_with = "ser_hex")] &'a [u8]),
}

impl<'a> Trailer<'a> {
    fn parse(t: &'a [u8]) -> Self {
        if t.is_empty() {
            return Trailer::None;
        }
        let parsed = (take::<_, _, nom::error::Error<&[u8]>>(4usize), byte)
            .parse(t)
            .ok()
            .and_then(|(rest, (vendor, open))| {
                let (open_data, private) = rest.split_at_checked(open as usize)?;
                Some(Trailer::Qhd(Qhd {
                    vendor: VendorCode(vendor.try_into().expect("took 4")),
                    open_data,
                    private,
                }))
            });
        parsed.unwrap_or(Trailer::Unknown(t))
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Trailer::None => {}
            Trailer::Qhd(q) => {
                out.extend_from_slice(&q.vendor.0);
                out.push(q.open_data.len() as u8);
                out.extend_from_slice(q.open_data);
                out.extend_from_slice(q.private);
            }
            Trailer::Unknown(b) => out.extend_from_slice(b),
        }
    }

    pub fn qhd(&self) -> Option<&Qhd<'a>> {
        match self {
            Trailer::Qhd(q) => Some(q),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct QueryHit<'a> {
    pub addr: SocketAddrV4,
    /// Announced speed in kbit/s.
    pub speed: u32,
    pub results: Results<'a>,
    pub trailer: Trailer<'a>,
    pub servent: ServentId,
}

impl<'a> QueryHit<'a> {
    pub fn decode(p: &'a [u8]) -> Result<Self, WireError> {
        let (rest, (count, port, ip, speed)) =
            fixed((byte, le_u16, be_u32, le_u32).parse(p), "query hit")?;
        let (results, rest) = Results::parse(rest, count)?;
        let Some(split) = rest.len().checked_sub(16) else {
            return Err(WireError::HitTrailerTruncated { len: rest.len() });
        };
        let (trailer, guid) = rest.split_at(split);
        Ok(QueryHit {
            addr: SocketAddrV4::new(ip.into(), port),
            speed,
            results,
            trailer: Trailer::parse(trailer),
            servent: ServentId(guid.try_into().expect("split at len-16")),
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.results.count);
        out.extend_from_slice(&self.addr.port().to_le_bytes());
        out.extend_from_slice(&self.addr.ip().octets());
        out.extend_from_slice(&self.speed.to_le_bytes());
        out.extend_from_slice(self.results.raw);
        self.trailer.encode(out);
        out.extend_from_slice(&self.servent.0);
    }

    /// The flags of the QHD, when there is one that carries flags.
    pub fn flags(&self) -> Option<QhdFlags> {
        self.trailer.qhd().and_then(Qhd::flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtkg_flag_bytes_read_back_as_written() {
        // PROTOCOL.md §12: gtk-gnutella sends 2C 21 (not firewalled, GGEP), 2D 21 (push),
        // 2C 29 (uploaded).
        assert_eq!(
            QhdFlags::from_ab(0x2c, 0x21),
            QhdFlags {
                ggep: true,
                ..Default::default()
            }
        );
        assert!(QhdFlags::from_ab(0x2d, 0x21).push);
        assert!(QhdFlags::from_ab(0x2c, 0x29).uploaded);
        let f = QhdFlags {
            push: true,
            uploaded: true,
            ggep: true,
            ..Default::default()
        };
        assert_eq!(f.to_ab(), [0x2d, 0x29]);
        let [a, b] = f.to_ab();
        assert_eq!(QhdFlags::from_ab(a, b), f);
    }

    /// The field-by-field walk `Results::parse` replaced: `split_result` per result.
    fn parse_by_fields(i: &[u8], count: u8) -> Result<(&[u8], &[u8]), WireError> {
        let mut rest = i;
        for parsed in 0..count {
            rest = match split_result(rest) {
                Ok((r, _)) => r,
                Err(WireError::Truncated { .. } | WireError::MissingNul { .. }) => {
                    return Err(WireError::HitCountOverrun { count, parsed });
                }
                Err(e) => return Err(e),
            };
        }
        Ok(i.split_at(i.len() - rest.len()))
    }

    #[test]
    fn the_bitmask_walk_agrees_with_the_field_by_field_walk() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        // Extension areas: none, text, valid GGEP, malformed GGEP, 0xC3 inside text.
        let areas: [&[u8]; 7] = [
            b"",
            b"urn:sha1:VGMT4NSHA2AWVOR6EVYXQUGCNSONBWE5",
            b"\xc3\x81M\x41\x04",
            b"urn:\x1c\xc3\x82LF\x41\x05",
            b"\xc3\x81M\x45\x04",
            b"<a>\xc3\xa9</a>",
            b"\xc3\x90A\x40",
        ];
        for _ in 0..5000 {
            let mut buf = Vec::new();
            for _ in 0..next(8) {
                buf.extend_from_slice(&(next(1 << 20) as u64).to_le_bytes());
                for _ in 0..next(90) {
                    buf.push([b'a', b'_', 0xC3, 0xA9, 0x1C][next(5)]);
                }
                buf.push(0);
                buf.extend_from_slice(areas[next(areas.len())]);
                buf.push(0);
            }
            buf.extend_from_slice(&[0x01; 16][..next(17)]);
            if next(3) == 0 {
                let cut = next(buf.len() + 1);
                buf.truncate(cut);
            }
            if next(4) == 0 && !buf.is_empty() {
                let at = next(buf.len());
                buf[at] = [0, 0xC3, 0x1C, 0x41][next(4)];
            }
            let count = next(10) as u8;
            let fast = Results::parse(&buf, count).map(|(r, rest)| (r.raw, rest));
            assert_eq!(
                fast,
                parse_by_fields(&buf, count),
                "{count} results in {buf:02x?}"
            );
        }
    }

    #[test]
    fn short_trailers_are_kept_as_unknown() {
        assert_eq!(Trailer::parse(b"GTK"), Trailer::Unknown(b"GTK"));
        assert_eq!(
            Trailer::parse(b"GTKG\x05ab"),
            Trailer::Unknown(b"GTKG\x05ab")
        );
        assert!(matches!(Trailer::parse(b"GTKG\x00"), Trailer::Qhd(_)));
    }
}
