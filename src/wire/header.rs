//! The 23-byte descriptor header and the per-type payload caps (PROTOCOL.md §1).

use std::fmt;

use serde::Serialize;

use super::error::WireError;
use super::types::{Guid, Hops, Ttl};

pub const HEADER_LEN: usize = 23;

/// Any payload whose length field exceeds this is refused before anything is buffered:
/// gtk-gnutella disconnects above 0xFFFF (the upper bits are flags only after `sflag`, which we
/// do not announce) and LimeWire above 65536 (PROTOCOL.md §1).
pub const MAX_PAYLOAD: u32 = 0xFFFF;
/// gtk-gnutella sends Bye 400 for a Query over 1024 bytes (PROTOCOL.md §1).
pub const MAX_QUERY: u32 = 1024;
/// gtk-gnutella disconnects on a Bye over 4096 bytes (PROTOCOL.md §1).
pub const MAX_BYE: u32 = 4096;
/// gtk-gnutella sends Bye 400 for any other descriptor over 40960 bytes (PROTOCOL.md §1).
pub const MAX_OTHER: u32 = 40960;

/// The payload type byte. Unknown values are kept so a stream stays framed past them.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadType {
    Ping,
    Pong,
    Bye,
    Qrp,
    Vendor,
    StandardVendor,
    Push,
    Query,
    QueryHit,
    Other(u8),
}

/// [`PayloadType::from_byte`] and [`PayloadType::cap`] of every type byte, looked up rather
/// than matched: the framer runs once per descriptor, and in a mixed stream a `match` on the
/// type byte is a jump that mispredicts about as often as the type changes.
static BY_BYTE: [(PayloadType, u32); 256] = {
    let mut t = [(PayloadType::Ping, 0); 256];
    let mut i = 0;
    while i < 256 {
        let kind = PayloadType::match_byte(i as u8);
        t[i] = (kind, kind.cap());
        i += 1;
    }
    t
};

impl PayloadType {
    #[inline]
    pub fn from_byte(b: u8) -> Self {
        BY_BYTE[b as usize].0
    }

    const fn match_byte(b: u8) -> Self {
        match b {
            0x00 => Self::Ping,
            0x01 => Self::Pong,
            0x02 => Self::Bye,
            0x30 => Self::Qrp,
            0x31 => Self::Vendor,
            0x32 => Self::StandardVendor,
            0x40 => Self::Push,
            0x80 => Self::Query,
            0x81 => Self::QueryHit,
            other => Self::Other(other),
        }
    }

    pub fn to_byte(self) -> u8 {
        match self {
            Self::Ping => 0x00,
            Self::Pong => 0x01,
            Self::Bye => 0x02,
            Self::Qrp => 0x30,
            Self::Vendor => 0x31,
            Self::StandardVendor => 0x32,
            Self::Push => 0x40,
            Self::Query => 0x80,
            Self::QueryHit => 0x81,
            Self::Other(b) => b,
        }
    }

    /// The largest payload accepted for this type; see the constants above.
    pub const fn cap(self) -> u32 {
        match self {
            Self::Query => MAX_QUERY,
            Self::QueryHit => MAX_PAYLOAD,
            Self::Bye => MAX_BYE,
            _ => MAX_OTHER,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::Pong => "pong",
            Self::Bye => "bye",
            Self::Qrp => "qrp",
            Self::Vendor => "vendor",
            Self::StandardVendor => "standard-vendor",
            Self::Push => "push",
            Self::Query => "query",
            Self::QueryHit => "query-hit",
            Self::Other(_) => "unknown",
        }
    }
}

impl fmt::Display for PayloadType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Other(b) => write!(f, "type 0x{b:02x}"),
            known => f.write_str(known.name()),
        }
    }
}

impl fmt::Debug for PayloadType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self} (0x{:02x})", self.to_byte())
    }
}

impl Serialize for PayloadType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// The fixed 23-byte header in front of every descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Header {
    pub muid: Guid,
    pub kind: PayloadType,
    pub ttl: Ttl,
    pub hops: Hops,
    pub len: u32,
}

impl Header {
    /// Reads a header and checks its length against the type's cap, so the caller can refuse a
    /// peer before buffering any of its payload.
    #[inline]
    pub fn parse(b: &[u8; HEADER_LEN]) -> Result<Header, WireError> {
        let mut muid = [0u8; 16];
        muid.copy_from_slice(&b[..16]);
        let (kind, cap) = BY_BYTE[b[16] as usize];
        let header = Header {
            muid: Guid(muid),
            kind,
            ttl: Ttl(b[17]),
            hops: Hops(b[18]),
            len: u32::from_le_bytes([b[19], b[20], b[21], b[22]]),
        };
        if header.len > cap {
            return Err(WireError::PayloadTooLarge {
                kind: header.kind,
                len: header.len,
                cap,
            });
        }
        Ok(header)
    }

    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..16].copy_from_slice(&self.muid.0);
        b[16] = self.kind.to_byte();
        b[17] = self.ttl.0;
        b[18] = self.hops.0;
        b[19..].copy_from_slice(&self.len.to_le_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_keeps_unknown_types() {
        let h = Header {
            muid: Guid([7; 16]),
            kind: PayloadType::Other(0xcd),
            ttl: Ttl(3),
            hops: Hops(1),
            len: 12,
        };
        assert_eq!(Header::parse(&h.to_bytes()), Ok(h));
    }

    #[test]
    fn query_longer_than_1024_is_refused_from_the_header_alone() {
        let mut b = [0u8; HEADER_LEN];
        b[16] = 0x80;
        b[19..].copy_from_slice(&1025u32.to_le_bytes());
        assert_eq!(
            Header::parse(&b),
            Err(WireError::PayloadTooLarge {
                kind: PayloadType::Query,
                len: 1025,
                cap: 1024
            })
        );
        b[19..].copy_from_slice(&1024u32.to_le_bytes());
        assert!(Header::parse(&b).is_ok());
    }

    #[test]
    fn hit_may_reach_0xffff_but_not_beyond() {
        let mut b = [0u8; HEADER_LEN];
        b[16] = 0x81;
        b[19..].copy_from_slice(&0xFFFFu32.to_le_bytes());
        assert!(Header::parse(&b).is_ok());
        b[19..].copy_from_slice(&0x1_0000u32.to_le_bytes());
        assert!(matches!(
            Header::parse(&b),
            Err(WireError::PayloadTooLarge { .. })
        ));
    }
}
