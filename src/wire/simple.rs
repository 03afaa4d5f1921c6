//! The small fixed-layout descriptors: Ping, Pong, Push and Bye (PROTOCOL.md §2.1, 2.2, 2.5,
//! 2.6). None of them allocates when decoded.

use std::net::SocketAddrV4;

use nom::Parser;
use nom::bytes::complete::take;
use nom::number::complete::{be_u32, le_u16, le_u32};
use serde::Serialize;

use super::error::WireError;
use super::ggep::{Ggep, MAGIC};
use super::header::MAX_BYE;
use super::types::{FileIndex, ServentId, Text, put_addr_ip_port};

/// How far a Ping, Pong or Push may run past its fixed part: gtk-gnutella drops longer ones
/// (PROTOCOL.md §1).
pub const MAX_GGEP_TAIL: usize = 1536;

/// Maps nom's "ran out of input" to our error for `what`.
pub(crate) fn fixed<'a, O>(
    r: nom::IResult<&'a [u8], O>,
    what: &'static str,
) -> Result<(&'a [u8], O), WireError> {
    r.map_err(|_| WireError::Truncated { what })
}

/// Splits a NUL-terminated string off `i`.
#[inline]
pub(crate) fn cstr<'a>(i: &'a [u8], what: &'static str) -> Result<(&'a [u8], Text<'a>), WireError> {
    let n = super::scan::nul(i).ok_or(WireError::MissingNul { what })?;
    Ok((&i[n + 1..], Text(&i[..n])))
}

/// The tail after a fixed part: nothing, or GGEP blocks only.
#[inline]
fn ggep_tail<'a>(tail: &'a [u8], what: &'static str) -> Result<Option<Ggep<'a>>, WireError> {
    if tail.is_empty() {
        return Ok(None);
    }
    if tail.len() > MAX_GGEP_TAIL {
        return Err(WireError::TailTooLarge {
            what,
            len: tail.len(),
            cap: MAX_GGEP_TAIL,
        });
    }
    if tail[0] != MAGIC {
        return Err(WireError::TailNotGgep { what });
    }
    Ok(Some(Ggep::parse_all(tail)?))
}

fn put_ggep(out: &mut Vec<u8>, g: &Option<Ggep<'_>>) {
    if let Some(g) = g {
        out.extend_from_slice(g.as_bytes());
    }
}

/// Ping: empty, or GGEP (`SCP` asks for packed hosts in the pong).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
pub struct Ping<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ggep: Option<Ggep<'a>>,
}

impl<'a> Ping<'a> {
    #[inline]
    pub fn decode(p: &'a [u8]) -> Result<Self, WireError> {
        Ok(Ping {
            ggep: ggep_tail(p, "ping")?,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_ggep(out, &self.ggep);
    }
}

/// Pong: who is out there, and how much it shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Pong<'a> {
    pub addr: SocketAddrV4,
    pub files: u32,
    pub kbytes: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ggep: Option<Ggep<'a>>,
}

impl<'a> Pong<'a> {
    #[inline]
    pub fn decode(p: &'a [u8]) -> Result<Self, WireError> {
        let (tail, (port, ip, files, kbytes)) =
            fixed((le_u16, be_u32, le_u32, le_u32).parse(p), "pong")?;
        Ok(Pong {
            addr: SocketAddrV4::new(ip.into(), port),
            files,
            kbytes,
            ggep: ggep_tail(tail, "pong")?,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.addr.port().to_le_bytes());
        out.extend_from_slice(&self.addr.ip().octets());
        out.extend_from_slice(&self.files.to_le_bytes());
        out.extend_from_slice(&self.kbytes.to_le_bytes());
        put_ggep(out, &self.ggep);
    }
}

/// Push: asks the servent `target` to connect out to `addr` and offer file `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Push<'a> {
    pub target: ServentId,
    pub index: FileIndex,
    pub addr: SocketAddrV4,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ggep: Option<Ggep<'a>>,
}

impl<'a> Push<'a> {
    #[inline]
    pub fn decode(p: &'a [u8]) -> Result<Self, WireError> {
        let (tail, (target, index, ip, port)) =
            fixed((take(16usize), le_u32, be_u32, le_u16).parse(p), "push")?;
        Ok(Push {
            target: ServentId(target.try_into().expect("took 16")),
            index: FileIndex(index),
            addr: SocketAddrV4::new(ip.into(), port),
            ggep: ggep_tail(tail, "push")?,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.target.0);
        out.extend_from_slice(&self.index.0.to_le_bytes());
        put_addr_ip_port(out, &self.addr);
        put_ggep(out, &self.ggep);
    }
}

/// Bye codes of PROTOCOL.md §2.6 that we send.
pub mod bye_code {
    pub const SHUTDOWN: u16 = 200;
    pub const USER: u16 = 201;
    /// gtk-gnutella on a switch between leaf and ultrapeer (`node_set_current_peermode`).
    pub const ROLE_CHANGE: u16 = 203;
    pub const TOO_LARGE: u16 = 400;
    pub const DUPLICATES: u16 = 401;
    pub const HIGH_TTL: u16 = 403;
    pub const TIMEOUT: u16 = 405;
    pub const NO_ALIVE_REPLY: u16 = 406;
    pub const TOO_MANY_ERRORS: u16 = 409;
    pub const BAD_QRP: u16 = 413;
    pub const LEAF_RELAYING: u16 = 414;
    pub const INTERNAL: u16 = 500;
    pub const QUEUE_FULL: u16 = 502;
}

/// Bye: the peer is leaving, with a code and a reason. A missing NUL is tolerated on receipt,
/// since the connection is closing anyway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Bye<'a> {
    pub code: u16,
    pub reason: Text<'a>,
}

impl<'a> Bye<'a> {
    #[inline]
    pub fn decode(p: &'a [u8]) -> Result<Self, WireError> {
        let (rest, code) = fixed(le_u16.parse(p), "bye")?;
        let end = memchr::memchr(0, rest).unwrap_or(rest.len());
        Ok(Bye {
            code,
            reason: Text(&rest[..end]),
        })
    }

    /// The reason is cut to fit [`MAX_BYE`] with its code and NUL: a received Bye at the cap
    /// without a NUL would otherwise grow past it, and peers (and [`super::frame`]) refuse that.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.code.to_le_bytes());
        let room = MAX_BYE as usize - 3;
        out.extend(self.reason.0.iter().filter(|&&b| b != 0).take(room));
        out.push(0);
    }
}
