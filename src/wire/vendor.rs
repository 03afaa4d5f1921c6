//! Vendor messages (PROTOCOL.md §2.8): vendor code, selector, version, then data. The ones the
//! servent speaks are decoded; any other, or a known one at another version, is kept as bytes.

use std::net::SocketAddrV4;

use nom::Parser;
use nom::bytes::complete::take;
use nom::number::complete::le_u16;
use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};

use super::error::WireError;
use super::simple::fixed;
use super::types::{VendorCode, addr_ip_port, put_addr_ip_port, ser_hex};

/// 0x31 or 0x32: both carry the same format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VendorKind {
    Vendor,
    Standard,
}

/// One entry of Messages Supported: a message we (or the peer) accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SupportedMessage {
    pub vendor: VendorCode,
    pub selector: u16,
    pub version: u16,
}

/// One entry of Features Supported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SupportedFeature {
    pub name: VendorCode,
    pub version: u16,
}

/// A counted list of fixed-size entries, validated and read in place.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct List<'a, const N: usize> {
    raw: &'a [u8],
}

impl<'a, const N: usize> List<'a, N> {
    /// `count` (u16 LE) and that many entries. Bytes after them are ignored on receipt, as
    /// gtk-gnutella does, and not kept.
    fn parse(data: &'a [u8], what: &'static str) -> Result<Self, &'static str> {
        let (rest, count) = le_u16::<_, nom::error::Error<&[u8]>>(data).map_err(|_| what)?;
        let len = count as usize * N;
        if rest.len() < len {
            return Err(what);
        }
        Ok(List { raw: &rest[..len] })
    }

    /// Builds the entry bytes of a list from `entries`, for encoding.
    pub fn from_entries(raw: &'a [u8]) -> Option<Self> {
        (raw.len().is_multiple_of(N) && raw.len() / N <= usize::from(u16::MAX))
            .then_some(List { raw })
    }

    pub fn len(&self) -> usize {
        self.raw.len() / N
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    fn entries(&self) -> impl Iterator<Item = &'a [u8; N]> + 'a {
        self.raw
            .chunks_exact(N)
            .map(|c| c.try_into().expect("chunks of N"))
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.len() as u16).to_le_bytes());
        out.extend_from_slice(self.raw);
    }
}

impl<'a> List<'a, 8> {
    pub fn iter(&self) -> impl Iterator<Item = SupportedMessage> + 'a {
        self.entries().map(|e| SupportedMessage {
            vendor: VendorCode([e[0], e[1], e[2], e[3]]),
            selector: u16::from_le_bytes([e[4], e[5]]),
            version: u16::from_le_bytes([e[6], e[7]]),
        })
    }
}

impl<'a> List<'a, 6> {
    pub fn iter(&self) -> impl Iterator<Item = SupportedFeature> + 'a {
        self.entries().map(|e| SupportedFeature {
            name: VendorCode([e[0], e[1], e[2], e[3]]),
            version: u16::from_le_bytes([e[4], e[5]]),
        })
    }
}

/// Writes list entries for [`List::from_entries`].
pub fn supported_entries(items: &[SupportedMessage]) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.len() * 8);
    for m in items {
        out.extend_from_slice(&m.vendor.0);
        out.extend_from_slice(&m.selector.to_le_bytes());
        out.extend_from_slice(&m.version.to_le_bytes());
    }
    out
}

impl std::fmt::Debug for List<'_, 8> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl std::fmt::Debug for List<'_, 6> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for List<'_, 8> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for e in self.iter() {
            seq.serialize_element(&e)?;
        }
        seq.end()
    }
}

impl Serialize for List<'_, 6> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for e in self.iter() {
            seq.serialize_element(&e)?;
        }
        seq.end()
    }
}

/// The messages we decode, by (vendor, selector, version).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "name")]
pub enum VendorBody<'a> {
    /// `\0\0\0\0`/0 v0: what the sender accepts.
    MessagesSupported { messages: List<'a, 8> },
    /// `\0\0\0\0`/10 v0.
    FeaturesSupported { features: List<'a, 6> },
    /// BEAR/4 v1: send me only queries with hops below this (0 = none).
    HopsFlow { max_hops: u8 },
    /// BEAR/7 v1: connect to my address at this port.
    TcpConnectBack { port: u16 },
    /// GTKG/7 v2: UDP-ping this port with this message's MUID.
    UdpConnectBack { port: u16 },
    /// BEAR/11 v1: how many hits did you keep for the query with this MUID?
    QueryStatusRequest,
    /// BEAR/12 v1: hits kept; 0xFFFF = stop.
    QueryStatusResponse { kept: u16 },
    /// LIME/21 v1: be my push proxy (MUID = my servent GUID).
    PushProxyRequest,
    /// LIME/22 v2: I am your push proxy, at this address.
    PushProxyAck { proxy: SocketAddrV4 },
    /// Anything else.
    Other {
        #[serde(serialize_with = "ser_hex")]
        data: &'a [u8],
    },
}

pub mod selector {
    use super::VendorCode;
    pub const MESSAGES_SUPPORTED: (VendorCode, u16, u16) = (VendorCode::ZERO, 0, 0);
    pub const FEATURES_SUPPORTED: (VendorCode, u16, u16) = (VendorCode::ZERO, 10, 0);
    pub const HOPS_FLOW: (VendorCode, u16, u16) = (VendorCode::BEAR, 4, 1);
    pub const TCP_CONNECT_BACK: (VendorCode, u16, u16) = (VendorCode::BEAR, 7, 1);
    pub const UDP_CONNECT_BACK: (VendorCode, u16, u16) = (VendorCode::GTKG, 7, 2);
    pub const QUERY_STATUS_REQUEST: (VendorCode, u16, u16) = (VendorCode::BEAR, 11, 1);
    pub const QUERY_STATUS_RESPONSE: (VendorCode, u16, u16) = (VendorCode::BEAR, 12, 1);
    pub const PUSH_PROXY_REQUEST: (VendorCode, u16, u16) = (VendorCode::LIME, 21, 1);
    pub const PUSH_PROXY_ACK: (VendorCode, u16, u16) = (VendorCode::LIME, 22, 2);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct VendorMessage<'a> {
    pub kind: VendorKind,
    pub vendor: VendorCode,
    pub selector: u16,
    pub version: u16,
    pub body: VendorBody<'a>,
}

fn exact<const N: usize>(d: &[u8]) -> Result<[u8; N], &'static str> {
    d.try_into().map_err(|_| "data has the wrong length")
}

impl<'a> VendorMessage<'a> {
    /// A message of ours: the triple is one of [`selector`]'s.
    pub fn new(triple: (VendorCode, u16, u16), body: VendorBody<'a>) -> Self {
        VendorMessage {
            kind: VendorKind::Vendor,
            vendor: triple.0,
            selector: triple.1,
            version: triple.2,
            body,
        }
    }

    pub fn decode(kind: VendorKind, p: &'a [u8]) -> Result<Self, WireError> {
        let (data, (vendor, selector, version)) =
            fixed((take(4usize), le_u16, le_u16).parse(p), "vendor message")?;
        let vendor = VendorCode(vendor.try_into().expect("took 4"));
        use selector::*;
        let body = match (vendor, selector, version) {
            MESSAGES_SUPPORTED => List::parse(data, "list is shorter than its count")
                .map(|messages| VendorBody::MessagesSupported { messages }),
            FEATURES_SUPPORTED => List::parse(data, "list is shorter than its count")
                .map(|features| VendorBody::FeaturesSupported { features }),
            HOPS_FLOW => exact::<1>(data).map(|[max_hops]| VendorBody::HopsFlow { max_hops }),
            TCP_CONNECT_BACK => exact::<2>(data).map(|p| VendorBody::TcpConnectBack {
                port: u16::from_le_bytes(p),
            }),
            UDP_CONNECT_BACK => exact::<2>(data).map(|p| VendorBody::UdpConnectBack {
                port: u16::from_le_bytes(p),
            }),
            QUERY_STATUS_REQUEST => exact::<0>(data).map(|_| VendorBody::QueryStatusRequest),
            QUERY_STATUS_RESPONSE => exact::<2>(data).map(|k| VendorBody::QueryStatusResponse {
                kept: u16::from_le_bytes(k),
            }),
            PUSH_PROXY_REQUEST => exact::<0>(data).map(|_| VendorBody::PushProxyRequest),
            PUSH_PROXY_ACK => exact::<6>(data).map(|a| VendorBody::PushProxyAck {
                proxy: addr_ip_port(&a),
            }),
            _ => Ok(VendorBody::Other { data }),
        }
        .map_err(|why| WireError::Vendor {
            vendor,
            selector,
            version,
            why,
        })?;
        Ok(VendorMessage {
            kind,
            vendor,
            selector,
            version,
            body,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.vendor.0);
        out.extend_from_slice(&self.selector.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        match &self.body {
            VendorBody::MessagesSupported { messages } => messages.encode(out),
            VendorBody::FeaturesSupported { features } => features.encode(out),
            VendorBody::HopsFlow { max_hops } => out.push(*max_hops),
            VendorBody::TcpConnectBack { port } | VendorBody::UdpConnectBack { port } => {
                out.extend_from_slice(&port.to_le_bytes())
            }
            VendorBody::QueryStatusResponse { kept } => out.extend_from_slice(&kept.to_le_bytes()),
            VendorBody::QueryStatusRequest | VendorBody::PushProxyRequest => {}
            VendorBody::PushProxyAck { proxy } => put_addr_ip_port(out, proxy),
            VendorBody::Other { data } => out.extend_from_slice(data),
        }
    }
}
