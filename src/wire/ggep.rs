//! GGEP blocks (PROTOCOL.md §3): a 0xC3 magic byte, then extensions of flags, ID, a 1–3 byte
//! length, and data that may be deflated (zlib) and then COBS-encoded.
//!
//! A parsed [`Ggep`] is a validated view over the bytes: parsing walks every extension once,
//! checks lengths, IDs, COBS and inflated sizes, and allocates nothing unless a value is
//! deflated. Iterating afterwards cannot fail.

use std::borrow::Cow;
use std::net::SocketAddrV4;

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use super::error::GgepError;
use super::types::addr_ip_port;
use super::urn::Sha1Urn;

pub const MAGIC: u8 = 0xC3;
const FLAG_LAST: u8 = 0x80;
const FLAG_COBS: u8 = 0x40;
const FLAG_DEFLATE: u8 = 0x20;
const FLAG_RESERVED: u8 = 0x10;
const ID_LEN_MASK: u8 = 0x0F;

/// The largest value the 3-byte length encoding can express.
pub const MAX_VALUE_LEN: usize = 262_143;
/// Most extensions accepted across the GGEP of one descriptor: gtk-gnutella drops
/// Ping/Pong/Push carrying 32 or more (PROTOCOL.md §1).
pub const MAX_EXTENSIONS: usize = 31;
/// Largest inflated size of one deflated value, gtk-gnutella's `GGEP_MAXLEN`
/// (`extensions.c`). A deflate bomb stops here, not in memory.
pub const MAX_INFLATED: usize = 65_535;

/// One or more GGEP blocks back to back, already validated.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Ggep<'a> {
    raw: &'a [u8],
}

/// One extension as it stands on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GgepExt<'a> {
    pub id: &'a str,
    pub cobs: bool,
    pub deflate: bool,
    /// The data as carried, before COBS decoding and inflation.
    pub data: &'a [u8],
}

/// One extension split off the bytes. Its ID is checked (printable ASCII) but left as bytes:
/// validating a block needs no `str`, so the UTF-8 check is paid only when iterating.
struct RawExt<'a> {
    flags: u8,
    id: &'a [u8],
    data: &'a [u8],
    rest: &'a [u8],
}

impl<'a> RawExt<'a> {
    fn last(&self) -> bool {
        self.flags & FLAG_LAST != 0
    }

    /// The extension as the public view. The ID is ASCII, so this does not fail.
    fn ext(&self) -> Option<GgepExt<'a>> {
        Some(GgepExt {
            id: std::str::from_utf8(self.id).ok()?,
            cobs: self.flags & FLAG_COBS != 0,
            deflate: self.flags & FLAG_DEFLATE != 0,
            data: self.data,
        })
    }

    /// COBS framing must be sound, and a deflated value must inflate within the cap. Only
    /// called for values that are COBS-encoded or deflated; a plain value has nothing to check.
    #[cold]
    fn validate(&self) -> Result<(), GgepError> {
        let cobs = self.flags & FLAG_COBS != 0;
        if self.flags & FLAG_DEFLATE != 0 {
            let v = if cobs {
                Cow::Owned(cobs_decode(self.data)?)
            } else {
                Cow::Borrowed(self.data)
            };
            inflate_capped(&v, MAX_INFLATED).map(drop)
        } else if cobs && (self.data.is_empty() || !cobs_valid(self.data)) {
            Err(GgepError::Cobs)
        } else {
            Ok(())
        }
    }
}

#[inline]
fn split_ext(input: &[u8]) -> Result<RawExt<'_>, GgepError> {
    let (&flags, rest) = input.split_first().ok_or(GgepError::Unterminated)?;
    let id_len = (flags & ID_LEN_MASK) as usize;
    if id_len == 0 {
        return Err(GgepError::EmptyId);
    }
    if flags & FLAG_RESERVED != 0 {
        return Err(GgepError::ReservedFlag);
    }
    let (id, rest) = rest
        .split_at_checked(id_len)
        .ok_or(GgepError::Unterminated)?;
    if !id.iter().all(|b| is_id_byte(*b)) {
        return Err(GgepError::BadId);
    }
    let (len, rest) = match rest.split_first() {
        // One length byte (values under 64) is by far the most common: flags `last`, no `more`.
        Some((&b, r)) if b & 0xC0 == 0x40 => ((b & 0x3F) as usize, r),
        _ => long_len(rest)?,
    };
    let (data, rest) = rest.split_at_checked(len).ok_or(GgepError::LengthPastEnd {
        len,
        available: rest.len(),
    })?;
    Ok(RawExt {
        flags,
        id,
        data,
        rest,
    })
}

/// The 1–3 byte length field in general: each byte has exactly one of `more` (0x80) and
/// `last` (0x40), and the field ends at `last`.
fn long_len(mut rest: &[u8]) -> Result<(usize, &[u8]), GgepError> {
    let mut len = 0usize;
    for i in 0.. {
        if i == 3 {
            return Err(GgepError::LengthTooLong);
        }
        let (&b, r) = rest.split_first().ok_or(GgepError::Unterminated)?;
        rest = r;
        let more = b & 0x80 != 0;
        let last = b & 0x40 != 0;
        if more == last {
            return Err(GgepError::BadLengthByte(b));
        }
        len = (len << 6) | (b & 0x3F) as usize;
        if last {
            break;
        }
    }
    Ok((len, rest))
}

/// gtk-gnutella refuses NUL, control and non-ASCII bytes in IDs; space through `~` pass
/// (`extensions.c`, `ext_ggep_parse`).
fn is_id_byte(b: u8) -> bool {
    (0x20..0x7f).contains(&b)
}

/// Checks COBS framing without decoding: no zero bytes, no run past the end.
fn cobs_valid(data: &[u8]) -> bool {
    let mut i = 0;
    while i < data.len() {
        let code = data[i] as usize;
        if code == 0 || i + code > data.len() {
            return false;
        }
        if data[i + 1..i + code].contains(&0) {
            return false;
        }
        i += code;
    }
    true
}

fn cobs_decode(data: &[u8]) -> Result<Vec<u8>, GgepError> {
    if data.is_empty() || !cobs_valid(data) {
        return Err(GgepError::Cobs);
    }
    let mut out = vec![0u8; data.len()];
    let n = cobs::decode(data, &mut out)
        .map_err(|_| GgepError::Cobs)?
        .frame_size();
    out.truncate(n);
    Ok(out)
}

/// Inflates a zlib stream, stopping with an error as soon as the output would pass `cap`.
pub(crate) fn inflate_capped(data: &[u8], cap: usize) -> Result<Vec<u8>, GgepError> {
    use flate2::{Decompress, FlushDecompress, Status};
    let mut z = Decompress::new(true);
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let (in_before, out_before) = (z.total_in() as usize, z.total_out());
        let status = z
            .decompress(&data[in_before..], &mut chunk, FlushDecompress::None)
            .map_err(|_| GgepError::Inflate)?;
        let produced = (z.total_out() - out_before) as usize;
        if out.len() + produced > cap {
            return Err(GgepError::InflatedTooLarge { cap });
        }
        out.extend_from_slice(&chunk[..produced]);
        match status {
            Status::StreamEnd => return Ok(out),
            // No progress on either side: the stream is cut short.
            _ if produced == 0 && z.total_in() as usize == in_before => {
                return Err(GgepError::Inflate);
            }
            _ => {}
        }
    }
}

impl<'a> GgepExt<'a> {
    /// The value after COBS decoding and inflation. Borrowed when neither applies.
    pub fn value(&self) -> Result<Cow<'a, [u8]>, GgepError> {
        let mut v: Cow<'a, [u8]> = Cow::Borrowed(self.data);
        if self.cobs {
            v = Cow::Owned(cobs_decode(&v)?);
        }
        if self.deflate {
            v = Cow::Owned(inflate_capped(&v, MAX_INFLATED)?);
        }
        Ok(v)
    }
}

impl<'a> Ggep<'a> {
    /// Parses one block at the start of `input`; returns it and the bytes after it.
    pub fn parse_block(input: &'a [u8]) -> Result<(Ggep<'a>, &'a [u8]), GgepError> {
        let mut count = 0;
        let rest = Self::walk_block(input, &mut count)?;
        let used = input.len() - rest.len();
        Ok((
            Ggep {
                raw: &input[..used],
            },
            rest,
        ))
    }

    /// Parses bytes that must be nothing but GGEP blocks (the tail of a Ping, Pong or Push).
    pub fn parse_all(input: &'a [u8]) -> Result<Ggep<'a>, GgepError> {
        let mut count = 0;
        let mut rest = input;
        while !rest.is_empty() {
            rest = Self::walk_block(rest, &mut count)?;
        }
        Ok(Ggep { raw: input })
    }

    #[inline]
    fn walk_block(input: &'a [u8], count: &mut usize) -> Result<&'a [u8], GgepError> {
        let mut rest = match input.split_first() {
            Some((&MAGIC, r)) => r,
            _ => return Err(GgepError::NoMagic),
        };
        loop {
            let raw = split_ext(rest)?;
            *count += 1;
            if *count > MAX_EXTENSIONS {
                return Err(GgepError::TooManyExtensions {
                    max: MAX_EXTENSIONS,
                });
            }
            if raw.flags & (FLAG_COBS | FLAG_DEFLATE) != 0 {
                raw.validate()?;
            }
            rest = raw.rest;
            if raw.last() {
                return Ok(rest);
            }
        }
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    pub fn iter(&self) -> GgepIter<'a> {
        GgepIter {
            rest: self.raw,
            block_start: true,
        }
    }

    pub fn get(&self, id: &str) -> Option<GgepExt<'a>> {
        self.iter().find(|e| e.id == id)
    }

    /// The value of `id`, decoded. `None` when absent.
    pub fn value(&self, id: &str) -> Option<Cow<'a, [u8]>> {
        self.get(id).and_then(|e| e.value().ok())
    }

    /// A GGEP integer (`DU`, `M`, `LF`…): little-endian, trailing zero bytes stripped.
    pub fn int(&self, id: &str) -> Option<u64> {
        self.value(id).and_then(|v| le_int(&v))
    }
}

/// Reads a GGEP integer: little-endian, at most 8 bytes, trailing zeros stripped by the sender.
pub fn le_int(v: &[u8]) -> Option<u64> {
    if v.len() > 8 {
        return None;
    }
    Some(
        v.iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)),
    )
}

/// Encodes an integer the GGEP way: little-endian with trailing zero bytes stripped (0 → one
/// zero byte, as gtk-gnutella writes it).
pub fn int_bytes(v: u64) -> ([u8; 8], usize) {
    let b = v.to_le_bytes();
    let n = (8 - (v.leading_zeros() / 8) as usize).max(1);
    (b, n)
}

/// Iterates over the extensions of a validated [`Ggep`].
pub struct GgepIter<'a> {
    rest: &'a [u8],
    /// Only where a block starts is 0xC3 the magic byte. Elsewhere it is a flags byte (last,
    /// COBS, 3-byte ID, like `ALT` in PROTOCOL.md §11) and must not be skipped.
    block_start: bool,
}

impl<'a> Iterator for GgepIter<'a> {
    type Item = GgepExt<'a>;

    fn next(&mut self) -> Option<GgepExt<'a>> {
        if self.block_start {
            let (&MAGIC, r) = self.rest.split_first()? else {
                return None;
            };
            self.rest = r;
        }
        // The bytes were validated when the Ggep was made; an error here cannot happen, and
        // ending the iteration is the safe answer if it did.
        let raw = split_ext(self.rest).ok()?;
        self.rest = raw.rest;
        self.block_start = raw.last();
        raw.ext()
    }
}

impl std::fmt::Debug for Ggep<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

fn addrs(v: &[u8]) -> Option<Vec<SocketAddrV4>> {
    if !v.len().is_multiple_of(6) {
        return None;
    }
    Some(
        v.chunks_exact(6)
            .map(|c| addr_ip_port(c.try_into().expect("chunks of 6")))
            .collect(),
    )
}

/// A readable form of the values whose meaning PROTOCOL.md gives; others stay hex.
#[derive(Serialize)]
#[serde(untagged)]
enum Known {
    Int(u64),
    Addrs(Vec<SocketAddrV4>),
    Urn(Sha1Urn),
    Up {
        version: u8,
        free_leaf_slots: u8,
        free_ultrapeer_slots: u8,
    },
    Vendor {
        vendor: String,
        version: u8,
    },
}

fn interpret(id: &str, v: &[u8]) -> Option<Known> {
    match id {
        "DU" | "M" | "LF" | "SCP" | "GUE" | "WH" => le_int(v).map(Known::Int),
        "IPP" | "PUSH" | "ALT" => addrs(v).map(Known::Addrs),
        "H" if v.len() >= 21 && (v[0] == 1 || v[0] == 2) => {
            let mut d = [0u8; 20];
            d.copy_from_slice(&v[1..21]);
            Some(Known::Urn(Sha1Urn(d)))
        }
        "UP" if v.len() == 3 => Some(Known::Up {
            version: v[0],
            free_leaf_slots: v[1],
            free_ultrapeer_slots: v[2],
        }),
        "VC" if v.len() == 5 => Some(Known::Vendor {
            vendor: String::from_utf8_lossy(&v[..4]).into_owned(),
            version: v[4],
        }),
        _ => None,
    }
}

impl Serialize for GgepExt<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let value = self.value().map_err(serde::ser::Error::custom)?;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("id", self.id)?;
        m.serialize_entry("cobs", &self.cobs)?;
        m.serialize_entry("deflate", &self.deflate)?;
        m.serialize_entry("value", &data_encoding::HEXLOWER.encode(&value))?;
        if let Some(k) = interpret(self.id, &value) {
            m.serialize_entry("decoded", &k)?;
        }
        m.end()
    }
}

impl Serialize for Ggep<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for e in self.iter() {
            seq.serialize_element(&e)?;
        }
        seq.end()
    }
}

/// How a value is to be written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Encoding {
    pub deflate: bool,
    /// COBS-encode when the (possibly deflated) value holds a NUL. Needed in NUL-delimited
    /// areas (Query, QueryHit results); Ping, Pong and Push carry NULs as they are.
    pub cobs_if_nul: bool,
}

/// Writes a GGEP block. Values are encoded as asked; the last extension gets its flag at
/// [`GgepBuilder::finish`].
#[derive(Default)]
pub struct GgepBuilder {
    buf: Vec<u8>,
    last_flags: Option<usize>,
}

/// Appends the 1–3 byte GGEP length encoding of `len` (≤ [`MAX_VALUE_LEN`]).
fn put_len(out: &mut Vec<u8>, len: usize) {
    debug_assert!(len <= MAX_VALUE_LEN);
    let len = len.min(MAX_VALUE_LEN);
    if len < 1 << 6 {
        out.push(0x40 | len as u8);
    } else if len < 1 << 12 {
        out.extend_from_slice(&[0x80 | (len >> 6) as u8, 0x40 | (len & 0x3F) as u8]);
    } else {
        out.extend_from_slice(&[
            0x80 | (len >> 12) as u8,
            0x80 | ((len >> 6) & 0x3F) as u8,
            0x40 | (len & 0x3F) as u8,
        ]);
    }
}

/// Why a value could not be added to a GGEP block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GgepBuildError {
    #[error("GGEP ID must be 1 to 15 printable ASCII characters")]
    BadId,
    #[error("GGEP value of {0} bytes is over the 262143-byte limit")]
    TooLong(usize),
}

impl GgepBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, id: &str, value: &[u8], enc: Encoding) -> Result<(), GgepBuildError> {
        if id.is_empty() || id.len() > 15 || !id.bytes().all(is_id_byte) {
            return Err(GgepBuildError::BadId);
        }
        let deflated;
        let mut data: &[u8] = value;
        if enc.deflate {
            use std::io::Write;
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            // Writing into a Vec cannot fail.
            z.write_all(value).expect("write to Vec");
            deflated = z.finish().expect("finish into Vec");
            data = &deflated;
        }
        let cobs = enc.cobs_if_nul && data.contains(&0);
        let stuffed;
        if cobs {
            stuffed = cobs::encode_vec(data);
            data = &stuffed;
        }
        if data.len() > MAX_VALUE_LEN {
            return Err(GgepBuildError::TooLong(data.len()));
        }
        if self.buf.is_empty() {
            self.buf.push(MAGIC);
        }
        self.last_flags = Some(self.buf.len());
        let mut flags = id.len() as u8;
        if cobs {
            flags |= FLAG_COBS;
        }
        if enc.deflate {
            flags |= FLAG_DEFLATE;
        }
        self.buf.push(flags);
        self.buf.extend_from_slice(id.as_bytes());
        put_len(&mut self.buf, data.len());
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// The block's bytes; empty when nothing was pushed (no block is written at all then).
    pub fn finish(mut self) -> Vec<u8> {
        if let Some(i) = self.last_flags {
            self.buf[i] |= FLAG_LAST;
        }
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        data_encoding::HEXLOWER
            .decode(s.replace(' ', "").as_bytes())
            .unwrap()
    }

    #[test]
    fn length_encoding_matches_the_table_of_protocol_section_3() {
        for (len, bytes) in [
            (0, "40"),
            (63, "7f"),
            (64, "8140"),
            (70, "8146"),
            (4095, "bf7f"),
            (4096, "818040"),
            (262143, "bfbf7f"),
        ] {
            let mut out = Vec::new();
            put_len(&mut out, len);
            assert_eq!(out, hex(bytes), "encoding {len}");
            let mut block = vec![MAGIC, FLAG_LAST | 1, b'X'];
            block.extend_from_slice(&out);
            block.extend(std::iter::repeat_n(7u8, len));
            let (g, rest) = Ggep::parse_block(&block).unwrap();
            assert!(rest.is_empty());
            assert_eq!(g.get("X").unwrap().data.len(), len);
        }
    }

    #[test]
    fn cobs_alt_vector_decodes_to_the_address_with_a_zero_port_byte() {
        let block = hex("c3 c3 41 4c 54 47 05 c6 33 64 07 02 19");
        let (g, rest) = Ggep::parse_block(&block).unwrap();
        assert!(rest.is_empty());
        let e = g.get("ALT").unwrap();
        assert!(e.cobs && !e.deflate);
        assert_eq!(&*e.value().unwrap(), &hex("c6 33 64 07 00 19")[..]);

        let mut b = GgepBuilder::new();
        b.push(
            "ALT",
            &hex("c6 33 64 07 00 19"),
            Encoding {
                deflate: false,
                cobs_if_nul: true,
            },
        )
        .unwrap();
        assert_eq!(b.finish(), block);
    }

    #[test]
    fn a_flags_byte_equal_to_the_magic_is_not_skipped_mid_block() {
        // SCP (not last), then ALT whose flags (last | COBS | 3) are 0xC3; then a second block.
        let bytes =
            hex("c3 03 53 43 50 41 01 c3 41 4c 54 47 05 c6 33 64 07 02 19 c3 82 44 55 41 00");
        let g = Ggep::parse_all(&bytes).unwrap();
        let ids: Vec<_> = g.iter().map(|e| e.id).collect();
        assert_eq!(ids, ["SCP", "ALT", "DU"]);
        assert_eq!(&*g.value("ALT").unwrap(), &hex("c6 33 64 07 00 19")[..]);
    }

    #[test]
    fn malformed_blocks_map_to_named_errors() {
        let cases: &[(&str, GgepError)] = &[
            ("", GgepError::NoMagic),
            ("c3", GgepError::Unterminated),
            ("c3 80", GgepError::EmptyId),
            ("c3 91 41 40", GgepError::ReservedFlag),
            ("c3 81 0a 40", GgepError::BadId),
            ("c3 81 80 40", GgepError::BadId),
            ("c3 c1 41 40", GgepError::Cobs),
            ("c3 81 41 c1", GgepError::BadLengthByte(0xc1)),
            ("c3 81 41 01", GgepError::BadLengthByte(0x01)),
            ("c3 81 41 81 81 81 40", GgepError::LengthTooLong),
            (
                "c3 81 41 45 01",
                GgepError::LengthPastEnd {
                    len: 5,
                    available: 1,
                },
            ),
            ("c3 01 41 40", GgepError::Unterminated),
            ("c3 c1 41 42 05 01", GgepError::Cobs),
            ("c3 c1 41 42 00 01", GgepError::Cobs),
            ("c3 a1 41 42 01 02", GgepError::Inflate),
        ];
        for (h, want) in cases {
            assert_eq!(
                Ggep::parse_block(&hex(h)).map(|_| ()),
                Err(want.clone()),
                "{h}"
            );
        }
    }

    #[test]
    fn deflate_bomb_is_stopped_at_the_cap() {
        let mut b = GgepBuilder::new();
        b.push(
            "B",
            &vec![0u8; 10 * MAX_INFLATED],
            Encoding {
                deflate: true,
                cobs_if_nul: false,
            },
        )
        .unwrap();
        let block = b.finish();
        assert!(block.len() < 2000, "a bomb is small: {}", block.len());
        assert_eq!(
            Ggep::parse_block(&block).map(|_| ()),
            Err(GgepError::InflatedTooLarge { cap: MAX_INFLATED })
        );
    }

    #[test]
    fn deflated_and_cobs_values_round_trip() {
        let value: Vec<u8> = (0..3000u32).map(|i| (i % 7) as u8).collect();
        let mut b = GgepBuilder::new();
        let enc = Encoding {
            deflate: true,
            cobs_if_nul: true,
        };
        b.push("Z", &value, enc).unwrap();
        b.push("DU", &int_bytes(3600).0[..int_bytes(3600).1], enc)
            .unwrap();
        let block = b.finish();
        let g = Ggep::parse_all(&block).unwrap();
        assert_eq!(&*g.value("Z").unwrap(), &value[..]);
        assert_eq!(g.int("DU"), Some(3600));
        assert_eq!(g.iter().count(), 2);
    }

    #[test]
    fn too_many_extensions_are_refused() {
        let mut b = GgepBuilder::new();
        for _ in 0..=MAX_EXTENSIONS {
            b.push("X", &[], Encoding::default()).unwrap();
        }
        assert_eq!(
            Ggep::parse_all(&b.finish()).map(|_| ()),
            Err(GgepError::TooManyExtensions {
                max: MAX_EXTENSIONS
            })
        );
    }

    #[test]
    fn ggep_integers_strip_trailing_zero_bytes() {
        assert_eq!(int_bytes(0), ([0; 8], 1));
        let (b, n) = int_bytes(3600);
        assert_eq!(&b[..n], &[0x10, 0x0e]);
        assert_eq!(le_int(&[0x10, 0x0e]), Some(3600));
    }
}
