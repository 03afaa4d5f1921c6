//! Helpers shared by the core's unit tests: a plausible peer's link info, links brought up in
//! bulk, frames fed in and ticks, each returning the actions that followed.

use std::net::SocketAddrV4;
use std::time::Instant;

use super::{Action, ConnId, ConnInfo, Event, Overlay};
use crate::handshake::Role;
use crate::wire::{Framed, ServentId, frame};

/// A peer on 127.0.0.1:`port` with GUID bytes `port as u8`, X-Max-TTL 4 and X-Degree 32,
/// without UP-QRP (tests that want it set `up_qrp`).
pub(crate) fn info(port: u16, role: Role) -> ConnInfo {
    let addr: SocketAddrV4 = format!("127.0.0.1:{port}").parse().unwrap();
    ConnInfo {
        addr,
        role,
        outbound: false,
        listen: Some(addr),
        guid: Some(ServentId([port as u8; 16])),
        max_ttl: Some(4),
        degree: Some(32),
        ggep: true,
        user_agent: "test".into(),
        up_qrp: false,
    }
}

pub(crate) fn connect(o: &mut Overlay, id: ConnId, info: ConnInfo, now: Instant) -> Vec<Action> {
    let mut out = Vec::new();
    o.handle(Event::Connected { id, info }, now, &mut out);
    out
}

/// Links ids 1..=`ups` to ultrapeers, then the next `leaves` ids to leaves, each on port
/// id + 1000, described by `info`.
pub(crate) fn link_all(
    o: &mut Overlay,
    ups: u64,
    leaves: u64,
    now: Instant,
    info: impl Fn(u16, Role) -> ConnInfo,
) {
    for id in 1..=ups + leaves {
        let role = if id <= ups {
            Role::Ultrapeer
        } else {
            Role::Leaf
        };
        connect(o, id, info(id as u16 + 1000, role), now);
    }
}

pub(crate) fn feed(o: &mut Overlay, id: ConnId, bytes: &[u8], now: Instant) -> Vec<Action> {
    let Ok(Framed::Frame(f)) = frame(bytes) else {
        panic!("test descriptor does not frame")
    };
    let mut out = Vec::new();
    o.handle(Event::Frame { id, frame: f }, now, &mut out);
    out
}

pub(crate) fn tick(o: &mut Overlay, now: Instant) -> Vec<Action> {
    let mut out = Vec::new();
    o.handle(Event::Tick, now, &mut out);
    out
}
