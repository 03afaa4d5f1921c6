//! Query (PROTOCOL.md §2.3): a big-endian flags word, NUL-terminated criteria, then an
//! extension area. Decoding allocates nothing.

use nom::Parser;
use nom::number::complete::be_u16;
use serde::Serialize;

use super::error::WireError;
use super::ext::Extensions;
use super::simple::{cstr, fixed};
use super::types::Text;

/// The flags word (old "minimum speed"). Big-endian on the wire: `b8 00` is 0xB800.
/// The named bits mean something only when [`QueryFlags::MARKED`] is set; gtk-gnutella drops
/// queries without it as "ancient".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct QueryFlags(pub u16);

impl QueryFlags {
    pub const MARKED: u16 = 0x8000;
    pub const FIREWALLED: u16 = 0x4000;
    pub const WANTS_XML: u16 = 0x2000;
    pub const LEAF_GUIDED: u16 = 0x1000;
    pub const GGEP_H: u16 = 0x0800;
    pub const OOB: u16 = 0x0400;
    pub const FW_TO_FW: u16 = 0x0200;
    /// gtk-gnutella: semi-reliable UDP.
    pub const SR_UDP: u16 = 0x0100;
    pub const MAX_HITS_MASK: u16 = 0x00FF;

    fn bit(self, b: u16) -> bool {
        self.0 & Self::MARKED != 0 && self.0 & b != 0
    }

    pub fn is_marked(self) -> bool {
        self.0 & Self::MARKED != 0
    }
    pub fn firewalled(self) -> bool {
        self.bit(Self::FIREWALLED)
    }
    pub fn wants_xml(self) -> bool {
        self.bit(Self::WANTS_XML)
    }
    pub fn leaf_guided(self) -> bool {
        self.bit(Self::LEAF_GUIDED)
    }
    pub fn ggep_h(self) -> bool {
        self.bit(Self::GGEP_H)
    }
    pub fn oob(self) -> bool {
        self.bit(Self::OOB)
    }
    pub fn fw_to_fw(self) -> bool {
        self.bit(Self::FW_TO_FW)
    }
    /// Hits wanted (gtk-gnutella); 0 = any.
    pub fn max_hits(self) -> u8 {
        if self.is_marked() {
            (self.0 & Self::MAX_HITS_MASK) as u8
        } else {
            0
        }
    }
}

impl Serialize for QueryFlags {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("raw", &format!("0x{:04x}", self.0))?;
        m.serialize_entry("marked", &self.is_marked())?;
        m.serialize_entry("firewalled", &self.firewalled())?;
        m.serialize_entry("wants_xml", &self.wants_xml())?;
        m.serialize_entry("leaf_guided", &self.leaf_guided())?;
        m.serialize_entry("ggep_h", &self.ggep_h())?;
        m.serialize_entry("oob", &self.oob())?;
        m.serialize_entry("fw_to_fw", &self.fw_to_fw())?;
        m.serialize_entry("max_hits", &self.max_hits())?;
        m.end()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Query<'a> {
    pub flags: QueryFlags,
    pub criteria: Text<'a>,
    pub extensions: Extensions<'a>,
}

impl<'a> Query<'a> {
    #[inline]
    pub fn decode(p: &'a [u8]) -> Result<Self, WireError> {
        let (rest, flags) = fixed(be_u16.parse(p), "query")?;
        let (rest, criteria) = cstr(rest, "query criteria")?;
        Ok(Query {
            flags: QueryFlags(flags),
            criteria,
            extensions: Extensions::parse(rest)?,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.flags.0.to_be_bytes());
        out.extend(self.criteria.0.iter().filter(|&&b| b != 0));
        out.push(0);
        out.extend_from_slice(self.extensions.as_bytes());
    }
}
