//! One type per protocol concept, so that a MUID cannot be passed where a servent GUID is meant
//! and a TTL cannot be confused with a hop count.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use serde::{Serialize, Serializer};

macro_rules! guid_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; 16]);

        impl $name {
            /// A fresh random identifier: uuid v4 bytes with the 0.6 marks (byte 8 = 0xff,
            /// byte 15 = 0x00). Received identifiers are never checked for these marks, since
            /// deployed servents put other things there (PROTOCOL.md §1).
            pub fn random() -> Self {
                let mut b = *uuid::Uuid::new_v4().as_bytes();
                b[8] = 0xff;
                b[15] = 0x00;
                Self(b)
            }

            pub fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }

            /// Parses 32 hex digits, either case (GIV lines, `GUID:` headers).
            pub fn from_hex(s: &str) -> Option<Self> {
                if s.len() != 32 {
                    return None;
                }
                let mut out = [0u8; 16];
                data_encoding::HEXLOWER_PERMISSIVE
                    .decode_mut(s.as_bytes(), &mut out)
                    .ok()?;
                Some(Self(out))
            }

            pub fn to_hex(&self) -> String {
                data_encoding::HEXLOWER.encode(&self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for b in self.0 {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::from_hex(&s).ok_or_else(|| serde::de::Error::custom("expected 32 hex digits"))
            }
        }
    };
}

guid_type!(
    /// A descriptor's message ID (MUID). Queries and their hits share it; so do pings and pongs.
    Guid
);
guid_type!(
    /// A servent's own persistent identity: the QueryHit trailer, the target of a Push.
    ServentId
);

/// Hops a descriptor may still travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(transparent)]
pub struct Ttl(pub u8);

/// Hops a descriptor has travelled so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(transparent)]
pub struct Hops(pub u8);

/// Index of a shared file as the responder numbers it (QueryHit, Push, GIV, `/get/`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct FileIndex(pub u32);

/// A 4-character vendor code ("GTKG", "LIME", "BEAR"); case-sensitive on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct VendorCode(pub [u8; 4]);

impl VendorCode {
    pub const ZERO: VendorCode = VendorCode([0; 4]);
    pub const BEAR: VendorCode = VendorCode(*b"BEAR");
    pub const GTKG: VendorCode = VendorCode(*b"GTKG");
    pub const LIME: VendorCode = VendorCode(*b"LIME");
    /// Ours. Not registered anywhere; chosen not to collide with the codes in GTKG.lst.
    pub const SRVT: VendorCode = VendorCode(*b"SRVT");
}

impl fmt::Display for VendorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in &self.0 {
            if b.is_ascii_graphic() {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for VendorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VendorCode({self})")
    }
}

impl Serialize for VendorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Text as the peer sent it. Meant to be UTF-8, but old servents send Latin-1 and hostile ones
/// send anything, so the bytes are kept and only shown lossily.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Text<'a>(pub &'a [u8]);

impl<'a> Text<'a> {
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    pub fn to_string_lossy(&self) -> std::borrow::Cow<'a, str> {
        String::from_utf8_lossy(self.0)
    }
}

impl<'a> From<&'a str> for Text<'a> {
    fn from(s: &'a str) -> Self {
        Text(s.as_bytes())
    }
}

impl fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string_lossy(), f)
    }
}

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string_lossy())
    }
}

impl Serialize for Text<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string_lossy())
    }
}

/// Serialises bytes as lowercase hex, for JSON output of opaque fields.
pub(crate) fn ser_hex<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&data_encoding::HEXLOWER.encode(b))
}

/// An IPv4 address (network order) followed by a port (little-endian), the 6-byte form used by
/// Pong, Push, QueryHit, and GGEP `IPP`/`PUSH`/`ALT`.
pub(crate) fn addr_from_parts(ip: [u8; 4], port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(ip), port)
}

/// Writes the 6-byte address form: IPv4 in network order, then the port little-endian.
pub fn put_addr_ip_port(out: &mut Vec<u8>, a: &SocketAddrV4) {
    out.extend_from_slice(&a.ip().octets());
    out.extend_from_slice(&a.port().to_le_bytes());
}

/// Reads the 6-byte address form written by [`put_addr_ip_port`].
pub fn addr_ip_port(b: &[u8; 6]) -> SocketAddrV4 {
    addr_from_parts([b[0], b[1], b[2], b[3]], u16::from_le_bytes([b[4], b[5]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_guid_carries_the_0_6_marks_and_differs_each_time() {
        let a = Guid::random();
        let b = Guid::random();
        assert_eq!(a.0[8], 0xff);
        assert_eq!(a.0[15], 0x00);
        assert_ne!(a, b);
    }

    #[test]
    fn guid_hex_parses_either_case_and_prints_lowercase() {
        let g = ServentId::from_hex("8F3A9C1E5B7D2F4AFF61D0C2E4B6A801").unwrap();
        assert_eq!(g.to_string(), "8f3a9c1e5b7d2f4aff61d0c2e4b6a801");
        assert_eq!(ServentId::from_hex(&g.to_hex()), Some(g));
        assert_eq!(ServentId::from_hex("8f3a"), None);
        assert_eq!(
            ServentId::from_hex("zz3a9c1e5b7d2f4aff61d0c2e4b6a801"),
            None
        );
    }

    #[test]
    fn six_byte_address_is_ip_network_order_then_port_le() {
        let a = addr_ip_port(&[0xc6, 0x33, 0x64, 0x07, 0xca, 0x18]);
        assert_eq!(a.to_string(), "198.51.100.7:6346");
        let mut out = Vec::new();
        put_addr_ip_port(&mut out, &a);
        assert_eq!(out, [0xc6, 0x33, 0x64, 0x07, 0xca, 0x18]);
    }
}

macro_rules! guid_from_bytes {
    ($name:ident) => {
        impl $name {
            /// Random bytes from the caller's generator, with the 0.6 marks applied. Lets the
            /// pure core stay deterministic under a seeded generator.
            pub fn from_random(mut b: [u8; 16]) -> Self {
                b[8] = 0xff;
                b[15] = 0x00;
                Self(b)
            }
        }
    };
}
guid_from_bytes!(Guid);
guid_from_bytes!(ServentId);
