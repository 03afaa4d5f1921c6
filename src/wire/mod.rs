//! Bytes ⇄ protocol values, with no I/O. Every descriptor of Gnutella 0.6 (PROTOCOL.md §1–3,
//! §6), GGEP, HUGE and the QRP hash.
//!
//! Decoding is in two steps. [`frame`] finds one whole descriptor in a socket buffer, checking
//! the header's length against the type's cap before any payload needs buffering. Then
//! [`Descriptor::decode`] turns the frame into a borrowed view: Ping, Pong, Push and Query
//! decode without any heap allocation. Encoders write bytes directly into a `Vec`.
//!
//! Received values are checked once, here; what passes can be used above without re-checking.

pub mod error;
pub mod ext;
pub mod ggep;
pub mod header;
pub mod hit;
pub mod qrp;
pub mod query;
mod scan;
pub mod simple;
pub mod types;
pub mod urn;
pub mod vendor;

use serde::Serialize;

pub use error::{GgepError, WireError};
pub use ext::{ExtBuilder, ExtItem, Extensions};
pub use ggep::{Ggep, GgepBuilder, GgepExt};
pub use header::{HEADER_LEN, Header, PayloadType};
pub use hit::{HitResult, Qhd, QhdFlags, QueryHit, Results, ResultsBuilder, Trailer};
pub use qrp::{QrpMessage, QrpPatch, QrpReset, QrpTable, qrp_hash};
pub use query::{Query, QueryFlags};
pub use simple::{Bye, Ping, Pong, Push};
pub use types::{FileIndex, Guid, Hops, ServentId, Text, Ttl, VendorCode};
pub use urn::Sha1Urn;
pub use vendor::{VendorBody, VendorKind, VendorMessage};

/// A descriptor's payload, by type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Payload<'a> {
    Ping(Ping<'a>),
    Pong(Pong<'a>),
    Bye(Bye<'a>),
    Query(Query<'a>),
    QueryHit(QueryHit<'a>),
    Push(Push<'a>),
    Qrp(QrpMessage<'a>),
    Vendor(VendorMessage<'a>),
}

impl<'a> Payload<'a> {
    pub fn kind(&self) -> PayloadType {
        match self {
            Payload::Ping(_) => PayloadType::Ping,
            Payload::Pong(_) => PayloadType::Pong,
            Payload::Bye(_) => PayloadType::Bye,
            Payload::Query(_) => PayloadType::Query,
            Payload::QueryHit(_) => PayloadType::QueryHit,
            Payload::Push(_) => PayloadType::Push,
            Payload::Qrp(_) => PayloadType::Qrp,
            Payload::Vendor(v) => match v.kind {
                VendorKind::Vendor => PayloadType::Vendor,
                VendorKind::Standard => PayloadType::StandardVendor,
            },
        }
    }

    #[inline(always)]
    pub fn decode(kind: PayloadType, p: &'a [u8]) -> Result<Self, WireError> {
        Ok(match kind {
            PayloadType::Ping => Payload::Ping(Ping::decode(p)?),
            PayloadType::Pong => Payload::Pong(Pong::decode(p)?),
            PayloadType::Bye => Payload::Bye(Bye::decode(p)?),
            PayloadType::Query => Payload::Query(Query::decode(p)?),
            PayloadType::QueryHit => Payload::QueryHit(QueryHit::decode(p)?),
            PayloadType::Push => Payload::Push(Push::decode(p)?),
            PayloadType::Qrp => Payload::Qrp(QrpMessage::decode(p)?),
            PayloadType::Vendor => Payload::Vendor(VendorMessage::decode(VendorKind::Vendor, p)?),
            PayloadType::StandardVendor => {
                Payload::Vendor(VendorMessage::decode(VendorKind::Standard, p)?)
            }
            PayloadType::Other(b) => return Err(WireError::UnknownType(b)),
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Payload::Ping(x) => x.encode(out),
            Payload::Pong(x) => x.encode(out),
            Payload::Bye(x) => x.encode(out),
            Payload::Query(x) => x.encode(out),
            Payload::QueryHit(x) => x.encode(out),
            Payload::Push(x) => x.encode(out),
            Payload::Qrp(x) => x.encode(out),
            Payload::Vendor(x) => x.encode(out),
        }
    }
}

/// A whole descriptor. The header's type and length follow from the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Descriptor<'a> {
    pub muid: Guid,
    pub ttl: Ttl,
    pub hops: Hops,
    pub payload: Payload<'a>,
}

impl<'a> Descriptor<'a> {
    #[inline(always)]
    pub fn decode(frame: &Frame<'a>) -> Result<Self, WireError> {
        Ok(Descriptor {
            muid: frame.header.muid,
            ttl: frame.header.ttl,
            hops: frame.header.hops,
            payload: Payload::decode(frame.header.kind, frame.payload)?,
        })
    }

    /// Appends header and payload to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER_LEN]);
        self.payload.encode(out);
        let header = Header {
            muid: self.muid,
            kind: self.payload.kind(),
            ttl: self.ttl,
            hops: self.hops,
            len: (out.len() - start - HEADER_LEN) as u32,
        };
        out[start..start + HEADER_LEN].copy_from_slice(&header.to_bytes());
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

/// One whole descriptor found in a buffer, not yet decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub header: Header,
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// Header and payload bytes together.
    pub fn len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// What [`frame`] found at the start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framed<'a> {
    /// A whole descriptor, `frame.len()` bytes long.
    Frame(Frame<'a>),
    /// Not enough bytes yet; `needed` more will complete the header or the descriptor.
    Incomplete { needed: usize },
}

/// Finds the descriptor at the start of `buf`. A length over the type's cap is an error as
/// soon as the header is complete, so a peer cannot make us buffer more than the cap.
#[inline]
pub fn frame(buf: &[u8]) -> Result<Framed<'_>, WireError> {
    let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(Framed::Incomplete {
            needed: HEADER_LEN - buf.len(),
        });
    };
    let header = Header::parse(head)?;
    let total = HEADER_LEN + header.len as usize;
    if buf.len() < total {
        return Ok(Framed::Incomplete {
            needed: total - buf.len(),
        });
    }
    Ok(Framed::Frame(Frame {
        header,
        payload: &buf[HEADER_LEN..total],
    }))
}

/// Iterates over the whole descriptors at the start of a buffer. After it ends,
/// [`Frames::consumed`] says how many bytes were used and [`Frames::error`] whether it stopped
/// on an error (the stream cannot be resynchronised past one: drop the peer).
pub struct Frames<'a> {
    buf: &'a [u8],
    consumed: usize,
    error: Option<WireError>,
}

impl<'a> Frames<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Frames {
            buf,
            consumed: 0,
            error: None,
        }
    }

    pub fn consumed(&self) -> usize {
        self.consumed
    }

    pub fn error(&self) -> Option<&WireError> {
        self.error.as_ref()
    }

    pub fn remaining(&self) -> &'a [u8] {
        &self.buf[self.consumed..]
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Frame<'a>;

    #[inline]
    fn next(&mut self) -> Option<Frame<'a>> {
        if self.error.is_some() {
            return None;
        }
        match frame(&self.buf[self.consumed..]) {
            Ok(Framed::Frame(f)) => {
                self.consumed += f.len();
                Some(f)
            }
            Ok(Framed::Incomplete { .. }) => None,
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framer_waits_for_header_then_payload_then_yields() {
        let ping = Descriptor {
            muid: Guid([1; 16]),
            ttl: Ttl(1),
            hops: Hops(0),
            payload: Payload::Bye(Bye {
                code: 200,
                reason: Text(b"bye"),
            }),
        }
        .to_vec();
        assert_eq!(
            frame(&ping[..5]),
            Ok(Framed::Incomplete {
                needed: HEADER_LEN - 5
            })
        );
        assert_eq!(
            frame(&ping[..HEADER_LEN + 1]),
            Ok(Framed::Incomplete {
                needed: ping.len() - HEADER_LEN - 1
            })
        );
        let Ok(Framed::Frame(f)) = frame(&ping) else {
            panic!("whole descriptor not framed")
        };
        assert_eq!(f.len(), ping.len());
        let d = Descriptor::decode(&f).unwrap();
        assert_eq!(d.to_vec(), ping);
    }

    #[test]
    fn frames_stops_at_a_partial_tail_and_reports_what_it_used() {
        let p = Descriptor {
            muid: Guid([2; 16]),
            ttl: Ttl(1),
            hops: Hops(0),
            payload: Payload::Ping(Ping::default()),
        }
        .to_vec();
        let mut buf = p.repeat(3);
        buf.extend_from_slice(&p[..10]);
        let mut frames = Frames::new(&buf);
        assert_eq!(frames.by_ref().count(), 3);
        assert_eq!(frames.consumed(), 3 * p.len());
        assert_eq!(frames.remaining(), &p[..10]);
        assert!(frames.error().is_none());
    }

    #[test]
    fn a_bye_at_the_cap_without_nul_re_encodes_within_the_cap() {
        let mut b = Header {
            muid: Guid([3; 16]),
            kind: PayloadType::Bye,
            ttl: Ttl(1),
            hops: Hops(0),
            len: header::MAX_BYE,
        }
        .to_bytes()
        .to_vec();
        b.extend_from_slice(&400u16.to_le_bytes());
        b.resize(HEADER_LEN + header::MAX_BYE as usize, b'x');
        let Ok(Framed::Frame(f)) = frame(&b) else {
            panic!("not framed")
        };
        let again = Descriptor::decode(&f).unwrap().to_vec();
        assert_eq!(again.len(), b.len(), "code, reason cut by one, NUL");
        let Ok(Framed::Frame(f2)) = frame(&again) else {
            panic!("our own Bye is refused by the framer")
        };
        assert_eq!(Descriptor::decode(&f2).unwrap().to_vec(), again);
    }

    #[test]
    fn unknown_types_frame_but_do_not_decode() {
        let mut b = vec![0u8; HEADER_LEN + 2];
        b[16] = 0xcd;
        b[19] = 2;
        let Ok(Framed::Frame(f)) = frame(&b) else {
            panic!("not framed")
        };
        assert_eq!(Descriptor::decode(&f), Err(WireError::UnknownType(0xcd)));
    }
}
