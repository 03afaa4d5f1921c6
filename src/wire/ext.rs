//! Extension areas (HUGE §4, GGEP app. B, PROTOCOL.md §2.3–2.4): the items after a Query's
//! criteria and after each QueryHit result's name, separated by 0x1C. An item starting with
//! 0xC3 is GGEP (and ends where its structure ends, so its data may hold NULs), `urn:` is
//! HUGE, `<` is XML. Like gtk-gnutella (`extensions.c`), a NUL outside GGEP separates items
//! too; in a hit result the area ends at its NUL, so there it never occurs.
//!
//! [`Extensions`] is a validated view: parsing checks every GGEP item once, iteration then
//! cannot fail. Nothing is allocated.

use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};

use super::error::WireError;
use super::ggep::{Ggep, MAGIC};
use super::scan;
use super::types::Text;
use super::urn::Sha1Urn;

pub const SEPARATOR: u8 = 0x1C;

/// One item of an extension area.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExtItem<'a> {
    /// `urn:sha1:<base32>` (or a bitprint, which starts with the SHA-1).
    Sha1(Sha1Urn),
    /// `urn:` or `urn:sha1:` with nothing after it: "please put URNs in your hits".
    UrnRequest(Text<'a>),
    /// Any other `urn:` (tree:tiger, ed2k…), kept as text.
    Urn(Text<'a>),
    Xml(Text<'a>),
    Ggep(Ggep<'a>),
    Other(Text<'a>),
}

/// A validated extension area. Holds the bytes exactly as received, so re-encoding is exact.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Extensions<'a> {
    raw: &'a [u8],
}

fn classify(item: &[u8]) -> ExtItem<'_> {
    let starts = |p: &[u8]| item.len() >= p.len() && item[..p.len()].eq_ignore_ascii_case(p);
    if starts(b"urn:") {
        if item.len() == 4 || item.eq_ignore_ascii_case(b"urn:sha1:") {
            ExtItem::UrnRequest(Text(item))
        } else {
            match Sha1Urn::parse(item) {
                Ok(u) => ExtItem::Sha1(u),
                Err(_) => ExtItem::Urn(Text(item)),
            }
        }
    } else if item.first() == Some(&b'<') {
        ExtItem::Xml(Text(item))
    } else {
        ExtItem::Other(Text(item))
    }
}

/// Splits the next item off `rest` (which starts past any separator). Returns the item and
/// the bytes after it, or an error if a GGEP item is malformed.
fn next_item(rest: &[u8]) -> Result<(ExtItem<'_>, &[u8]), WireError> {
    if rest[0] == MAGIC {
        let (g, after) = Ggep::parse_block(rest)?;
        return Ok((ExtItem::Ggep(g), after));
    }
    let end = memchr::memchr2(SEPARATOR, 0, rest).unwrap_or(rest.len());
    Ok((classify(&rest[..end]), &rest[end..]))
}

impl<'a> Extensions<'a> {
    /// Validates an extension area: every GGEP item must be well formed. Only GGEP items can
    /// be malformed, so the others are skipped here, not classified (that would decode every
    /// `urn:sha1` for nothing); [`Extensions::iter`] classifies them when asked.
    pub fn parse(raw: &'a [u8]) -> Result<Self, WireError> {
        let mut rest = raw;
        loop {
            while let Some((&(SEPARATOR | 0), r)) = rest.split_first() {
                rest = r;
            }
            rest = match rest.first() {
                None => return Ok(Extensions { raw }),
                Some(&MAGIC) => Ggep::parse_block(rest)?.1,
                Some(_) => &rest[scan::either(rest, SEPARATOR, 0).unwrap_or(rest.len())..],
            };
        }
    }

    pub const EMPTY: Extensions<'static> = Extensions { raw: &[] };

    /// An area known to hold no 0xC3 byte, hence no GGEP item, hence nothing to validate.
    pub(crate) fn without_ggep(raw: &'a [u8]) -> Self {
        debug_assert!(!raw.contains(&MAGIC));
        Extensions { raw }
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    pub fn iter(&self) -> ExtIter<'a> {
        ExtIter(ItemWalk { rest: self.raw })
    }

    /// The file's SHA-1 if the area names one, as HUGE text or as GGEP `H`.
    pub fn sha1(&self) -> Option<Sha1Urn> {
        self.iter().find_map(|item| match item {
            ExtItem::Sha1(u) => Some(u),
            ExtItem::Ggep(g) => g.value("H").and_then(|v| {
                let d: [u8; 20] = v.get(1..21)?.try_into().ok()?;
                matches!(v[0], 1 | 2).then_some(Sha1Urn(d))
            }),
            _ => None,
        })
    }

    /// The GGEP block of the area, if any.
    pub fn ggep(&self) -> Option<Ggep<'a>> {
        self.iter().find_map(|item| match item {
            ExtItem::Ggep(g) => Some(g),
            _ => None,
        })
    }

    /// Two separators in a row, or a leading one. gtk-gnutella drops queries with such runs
    /// as "overhead" (PROTOCOL.md §2.3); one trailing NUL is fine (LimeWire always adds it).
    /// The overlay decides what to do with them. Only bytes between items count: GGEP data may
    /// hold NUL and 0x1C bytes that separate nothing.
    pub fn has_empty_items(&self) -> bool {
        let mut rest = self.raw;
        let mut first = true;
        loop {
            let run = rest
                .iter()
                .take_while(|&&b| b == SEPARATOR || b == 0)
                .count();
            let (seps, after) = rest.split_at(run);
            if after.is_empty() {
                return !(seps.is_empty() || seps == [0]);
            }
            if run > 1 || (first && run > 0) {
                return true;
            }
            first = false;
            rest = match after[0] {
                // Validated at parse time, so this cannot fail.
                MAGIC => match Ggep::parse_block(after) {
                    Ok((_, r)) => r,
                    Err(_) => return false,
                },
                _ => &after[memchr::memchr2(SEPARATOR, 0, after).unwrap_or(after.len())..],
            };
        }
    }
}

struct ItemWalk<'a> {
    rest: &'a [u8],
}

impl<'a> ItemWalk<'a> {
    fn step(&mut self) -> Option<Result<ExtItem<'a>, WireError>> {
        while let Some((&(SEPARATOR | 0), r)) = self.rest.split_first() {
            self.rest = r;
        }
        if self.rest.is_empty() {
            return None;
        }
        Some(next_item(self.rest).map(|(item, after)| {
            self.rest = after;
            item
        }))
    }
}

/// Iterates over a validated [`Extensions`].
pub struct ExtIter<'a>(ItemWalk<'a>);

impl<'a> Iterator for ExtIter<'a> {
    type Item = ExtItem<'a>;

    fn next(&mut self) -> Option<ExtItem<'a>> {
        // Validated at parse time, so an error cannot occur; stopping is the safe answer.
        self.0.step()?.ok()
    }
}

impl std::fmt::Debug for Extensions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for Extensions<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for item in self.iter() {
            seq.serialize_element(&item)?;
        }
        seq.end()
    }
}

/// Writes an extension area, putting 0x1C between items.
#[derive(Default)]
pub struct ExtBuilder {
    buf: Vec<u8>,
}

impl ExtBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    fn sep(&mut self) {
        if !self.buf.is_empty() {
            self.buf.push(SEPARATOR);
        }
    }

    pub fn urn(&mut self, u: &Sha1Urn) -> &mut Self {
        self.sep();
        self.buf.extend_from_slice(u.to_string().as_bytes());
        self
    }

    /// A text item (`urn:`, XML…). 0x1C and NUL would split it, so they are left out. An item
    /// left empty (a separator run) or starting with 0xC3 (read as GGEP, PROTOCOL.md §3)
    /// cannot be carried and is not written.
    pub fn text(&mut self, t: &str) -> &mut Self {
        let mut bytes = t.bytes().filter(|&b| b != SEPARATOR && b != 0).peekable();
        if bytes.peek().is_none_or(|&b| b == MAGIC) {
            return self;
        }
        self.sep();
        self.buf.extend(bytes);
        self
    }

    /// A GGEP block from [`super::ggep::GgepBuilder`], written with `cobs_if_nul` so it holds no
    /// NUL. An empty block is skipped.
    pub fn ggep(&mut self, block: &[u8]) -> &mut Self {
        if !block.is_empty() {
            self.sep();
            self.buf.extend_from_slice(block);
        }
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ggep::{Encoding, GgepBuilder};

    #[test]
    fn items_are_classified_and_a_trailing_nul_is_accepted() {
        let raw = b"urn:\x1c\xc3\x81\x4d\x41\x04\x00";
        let e = Extensions::parse(raw).unwrap();
        let items: Vec<_> = e.iter().collect();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0], ExtItem::UrnRequest(Text(b"urn:")));
        match items[1] {
            ExtItem::Ggep(g) => assert_eq!(g.int("M"), Some(4)),
            other => panic!("expected GGEP, got {other:?}"),
        }
        assert!(!e.has_empty_items());
    }

    #[test]
    fn sha1_is_found_as_text_or_as_ggep_h() {
        let u = Sha1Urn::digest(b"abc");
        let mut b = ExtBuilder::new();
        b.urn(&u);
        let raw = b.finish();
        assert_eq!(Extensions::parse(&raw).unwrap().sha1(), Some(u));

        let mut h = vec![1u8];
        h.extend_from_slice(&u.0);
        let mut g = GgepBuilder::new();
        g.push(
            "H",
            &h,
            Encoding {
                deflate: false,
                cobs_if_nul: true,
            },
        )
        .unwrap();
        let mut b = ExtBuilder::new();
        b.text("<?xml version=\"1.0\"?>").ggep(&g.finish());
        let raw = b.finish();
        let e = Extensions::parse(&raw).unwrap();
        assert_eq!(e.sha1(), Some(u));
        assert!(matches!(e.iter().next(), Some(ExtItem::Xml(_))));
    }

    #[test]
    fn nul_separates_items_like_gtk_gnutella_and_bad_ggep_is_an_error() {
        let e = Extensions::parse(b"urn:\x00<x/>").unwrap();
        assert_eq!(e.iter().count(), 2);
        assert!(!e.has_empty_items());
        assert!(matches!(
            Extensions::parse(b"\xc3\x81\x4d\x45\x04"),
            Err(WireError::Ggep(_))
        ));
    }

    #[test]
    fn text_items_that_cannot_be_carried_are_left_out() {
        // "" and "\x1c" would leave a separator run; "Émile" starts with 0xC3, the GGEP magic.
        let u = Sha1Urn::digest(b"abc");
        let mut b = ExtBuilder::new();
        b.text("").text("\x1c\0").text("Émile").urn(&u).text("");
        let raw = b.finish();
        let e = Extensions::parse(&raw).unwrap();
        assert_eq!(e.iter().collect::<Vec<_>>(), [ExtItem::Sha1(u)]);
        assert!(!e.has_empty_items());
    }

    #[test]
    fn nul_and_separator_bytes_inside_ggep_are_not_empty_items() {
        let mut g = GgepBuilder::new();
        g.push("X", &[0x1c, 0x1c], Encoding::default()).unwrap();
        g.push("Y", &[1, 0], Encoding::default()).unwrap();
        let mut b = ExtBuilder::new();
        b.text("urn:").ggep(&g.finish());
        let raw = b.finish();
        let e = Extensions::parse(&raw).unwrap();
        assert_eq!(e.iter().count(), 2);
        assert!(!e.has_empty_items());
        let mut with_nul = raw.clone();
        with_nul.push(0);
        assert!(!Extensions::parse(&with_nul).unwrap().has_empty_items());
        with_nul.push(0);
        assert!(Extensions::parse(&with_nul).unwrap().has_empty_items());
        for bad in [&b"\x1curn:"[..], b"urn:\x1c", b"urn:\x1c\x00", b"\x00"] {
            assert_eq!(
                Extensions::parse(bad).unwrap().has_empty_items(),
                bad != b"\x00",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn separator_runs_are_reported_but_parse() {
        let e = Extensions::parse(b"urn:\x1c\x1curn:").unwrap();
        assert!(e.has_empty_items());
        assert_eq!(e.iter().count(), 2);
    }
}
