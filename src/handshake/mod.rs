//! The Gnutella 0.6 handshake (PROTOCOL.md §4, §12): three header blocks, then binary
//! descriptors, compressed per direction when both sides agreed.
//!
//! This module is pure: it parses and formats blocks, reads a peer's capabilities from its
//! headers, and decides whether to accept. [`driver`] runs the exchange over a socket.

pub mod driver;
pub mod headers;

use std::net::{Ipv4Addr, SocketAddrV4};

pub use headers::{Block, HeaderError, Headers, StartLine};

use crate::wire::ServentId;

/// What a node is in the two-tier overlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Leaf,
    Ultrapeer,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Leaf => "leaf",
            Role::Ultrapeer => "ultrapeer",
        })
    }
}

/// Refusal codes we send, with gtk-gnutella's wording where it has one (PROTOCOL.md §4, §12).
pub mod refusal {
    pub const SHIELDED_LEAF: (u16, &str) = (204, "Shielded leaf node");
    pub const NORMAL_NODES: (u16, &str) = (403, "Normal nodes refused");
    pub const ALREADY_CONNECTED: (u16, &str) = (409, "Already connected");
    pub const SELF: (u16, &str) = (409, "Connected to self");
    pub const FULL: (u16, &str) = (503, "Too many connections");
    pub const NO_LEAF_SLOTS: (u16, &str) = (503, "Too many leaves");
    pub const VERSION: (u16, &str) = (505, "Protocol not supported");
}

/// A peer as its headers describe it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerInfo {
    pub user_agent: Option<String>,
    /// `X-Ultrapeer`; `None` when absent (gtk-gnutella refuses such peers).
    pub ultrapeer: Option<bool>,
    pub ultrapeer_needed: Option<bool>,
    pub query_routing: bool,
    pub ultrapeer_query_routing: bool,
    pub dynamic_querying: bool,
    pub degree: Option<u32>,
    pub max_ttl: Option<u8>,
    /// Where the peer listens: `Listen-IP`, `Node`, `X-My-Address` or `X-Node`.
    pub listen: Option<SocketAddrV4>,
    /// Where the peer sees us: `Remote-IP`.
    pub remote_ip: Option<Ipv4Addr>,
    /// `Accept-Encoding: deflate`: it can inflate what we send.
    pub accepts_deflate: bool,
    /// `Content-Encoding: deflate`: it will deflate what it sends.
    pub sends_deflate: bool,
    pub try_ultrapeers: Vec<SocketAddrV4>,
    pub guid: Option<ServentId>,
    pub ggep: bool,
    pub vendor_messages: bool,
    pub pong_caching: bool,
    pub bye_packet: bool,
}

fn truthy(v: &str) -> bool {
    v.trim().eq_ignore_ascii_case("true")
}

fn has_token(v: &str, token: &str) -> bool {
    v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Parses `ip:port` lists as sent in `X-Try-Ultrapeers`, skipping what does not parse. The port
/// defaults to 6346 when missing, as in alt-locs.
pub fn parse_addr_list(v: &str) -> Vec<SocketAddrV4> {
    v.split(',').filter_map(|s| parse_addr(s.trim())).collect()
}

pub fn parse_addr(s: &str) -> Option<SocketAddrV4> {
    s.parse().ok().or_else(|| {
        s.parse::<Ipv4Addr>()
            .ok()
            .map(|ip| SocketAddrV4::new(ip, 6346))
    })
}

impl PeerInfo {
    pub fn from_headers(h: &Headers) -> Self {
        let listen = ["Listen-IP", "Node", "X-My-Address", "X-Node"]
            .iter()
            .find_map(|n| {
                h.get(n)
                    .and_then(|v| parse_addr(v.split(',').next()?.trim()))
            });
        PeerInfo {
            user_agent: h.get("User-Agent"),
            ultrapeer: h.get("X-Ultrapeer").map(|v| truthy(&v)),
            ultrapeer_needed: h.get("X-Ultrapeer-Needed").map(|v| truthy(&v)),
            query_routing: h.has("X-Query-Routing"),
            ultrapeer_query_routing: h.has("X-Ultrapeer-Query-Routing"),
            dynamic_querying: h.has("X-Dynamic-Querying"),
            degree: h.get("X-Degree").and_then(|v| v.trim().parse().ok()),
            max_ttl: h.get("X-Max-TTL").and_then(|v| v.trim().parse().ok()),
            listen,
            remote_ip: h.get("Remote-IP").and_then(|v| v.trim().parse().ok()),
            accepts_deflate: h
                .get("Accept-Encoding")
                .is_some_and(|v| has_token(&v, "deflate")),
            sends_deflate: h
                .get("Content-Encoding")
                .is_some_and(|v| has_token(&v, "deflate")),
            try_ultrapeers: h
                .get("X-Try-Ultrapeers")
                .map(|v| parse_addr_list(&v))
                .unwrap_or_default(),
            guid: h.get("GUID").and_then(|v| ServentId::from_hex(v.trim())),
            ggep: h.has("GGEP"),
            vendor_messages: h.has("Vendor-Message"),
            pong_caching: h.has("Pong-Caching"),
            bye_packet: h.has("Bye-Packet"),
        }
    }

    pub fn role(&self) -> Role {
        if self.ultrapeer == Some(true) {
            Role::Ultrapeer
        } else {
            Role::Leaf
        }
    }
}

/// What we say about ourselves in every block we send.
#[derive(Debug, Clone)]
pub struct LocalInfo {
    pub user_agent: String,
    pub role: Role,
    pub guid: ServentId,
    /// Our advertised listening address, when we know one worth advertising.
    pub listen: Option<SocketAddrV4>,
    pub compress: bool,
    /// Ultrapeer degree we keep (`X-Degree`); ≥ 16 is what gtk-gnutella requires of
    /// ultrapeers and ≥ 15 what LimeWire requires of good leaves (PROTOCOL.md §4).
    pub degree: u32,
    /// `X-Max-TTL`: the TTL we accept on fresh queries (PROTOCOL.md §1, gtk-gnutella 4).
    pub max_ttl: u8,
}

pub const USER_AGENT: &str = concat!("servent/", env!("CARGO_PKG_VERSION"));

impl LocalInfo {
    /// The capability headers, in the order gtk-gnutella sends them. `remote` is the peer's
    /// address as we see it (for `Remote-IP`).
    pub fn headers(&self, remote: Option<Ipv4Addr>) -> Headers {
        let mut h = Headers::new();
        h.push("User-Agent", &self.user_agent);
        if let Some(a) = self.listen {
            h.push("Listen-IP", a.to_string());
        }
        if let Some(ip) = remote {
            h.push("Remote-IP", ip.to_string());
        }
        h.push("GUID", self.guid.to_hex());
        h.push(
            "X-Ultrapeer",
            if self.role == Role::Ultrapeer {
                "True"
            } else {
                "False"
            },
        );
        // LimeWire's "good leaf" set and gtk-gnutella's ultrapeer requirements both want
        // these (PROTOCOL.md §4, admission filters).
        h.push("X-Query-Routing", "0.1");
        h.push("X-Ultrapeer-Query-Routing", "0.1");
        h.push("X-Dynamic-Querying", "0.1");
        h.push("X-Degree", self.degree.to_string());
        h.push("X-Max-TTL", self.max_ttl.to_string());
        h.push("X-Requeries", "False");
        h.push("Pong-Caching", "0.1");
        h.push("GGEP", "0.5");
        h.push("Vendor-Message", "0.2");
        h.push("Bye-Packet", "0.1");
        if self.compress {
            h.push("Accept-Encoding", "deflate");
        }
        h
    }

    /// The outgoing first block.
    pub fn connect_block(&self, remote: Option<Ipv4Addr>) -> Block {
        Block::new(
            StartLine::Connect { major: 0, minor: 6 },
            self.headers(remote),
        )
    }
}

/// The server's view when an incoming handshake arrives.
#[derive(Debug, Clone)]
pub struct Admission {
    pub free_leaf_slots: usize,
    pub free_ultrapeer_slots: usize,
    /// The peer's GUID or listening address matches a connection we have.
    pub already_connected: bool,
    /// Hosts offered in refusals (`X-Try-Ultrapeers`).
    pub try_ultrapeers: Vec<SocketAddrV4>,
}

/// What to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Accept { peer_role: Role },
    Refuse { code: u16, reason: &'static str },
}

/// Decides on an incoming `GNUTELLA CONNECT` (PROTOCOL.md §4 roles and refusals).
pub fn admit(local: &LocalInfo, adm: &Admission, start: &StartLine, peer: &PeerInfo) -> Decision {
    let refuse = |(code, reason): (u16, &'static str)| Decision::Refuse { code, reason };
    match start {
        StartLine::Connect { major: 0, minor } if *minor >= 6 => {}
        _ => return refuse(refusal::VERSION),
    }
    if peer.ultrapeer.is_none() {
        return refuse(refusal::NORMAL_NODES);
    }
    if peer.guid == Some(local.guid) {
        return refuse(refusal::SELF);
    }
    if adm.already_connected {
        return refuse(refusal::ALREADY_CONNECTED);
    }
    match (local.role, peer.role()) {
        (Role::Leaf, _) => refuse(refusal::SHIELDED_LEAF),
        (Role::Ultrapeer, Role::Leaf) if adm.free_leaf_slots == 0 => refuse(refusal::NO_LEAF_SLOTS),
        (Role::Ultrapeer, Role::Ultrapeer) if adm.free_ultrapeer_slots == 0 => {
            refuse(refusal::FULL)
        }
        (Role::Ultrapeer, peer_role) => Decision::Accept { peer_role },
    }
}

/// The server's answer block for `decision`.
pub fn answer_block(
    local: &LocalInfo,
    adm: &Admission,
    decision: &Decision,
    peer: &PeerInfo,
    remote: Option<Ipv4Addr>,
) -> Block {
    match decision {
        Decision::Accept { .. } => {
            let mut h = local.headers(remote);
            if local.compress && peer.accepts_deflate {
                h.push("Content-Encoding", "deflate");
            }
            // Guidance (PROTOCOL.md §4): "False" asks an ultrapeer to become our leaf, which
            // gtk-gnutella in ultrapeer mode refuses with 403 "Not becoming a leaf node". So an
            // ultrapeer we have room for is told we need it; a leaf hears whether leaves are
            // still wanted.
            if local.role == Role::Ultrapeer {
                let needed = match peer.role() {
                    Role::Ultrapeer => adm.free_ultrapeer_slots > 0,
                    Role::Leaf => adm.free_leaf_slots == 0,
                };
                h.push("X-Ultrapeer-Needed", if needed { "True" } else { "False" });
            }
            Block::new(
                StartLine::Status {
                    code: 200,
                    reason: "OK".into(),
                },
                h,
            )
        }
        Decision::Refuse { code, reason } => {
            let mut h = Headers::new();
            h.push("User-Agent", &local.user_agent);
            if let Some(ip) = remote {
                h.push("Remote-IP", ip.to_string());
            }
            if !adm.try_ultrapeers.is_empty() {
                let list: Vec<String> = adm.try_ultrapeers.iter().map(|a| a.to_string()).collect();
                h.push("X-Try-Ultrapeers", list.join(","));
            }
            Block::new(
                StartLine::Status {
                    code: *code,
                    reason: (*reason).into(),
                },
                h,
            )
        }
    }
}

/// The client's final block after a 200 from the server: it confirms, and switches its own
/// output to deflate if the server accepts it.
pub fn confirm_block(local: &LocalInfo, server: &PeerInfo) -> Block {
    let mut h = Headers::new();
    if local.compress && server.accepts_deflate {
        h.push("Content-Encoding", "deflate");
    }
    Block::new(
        StartLine::Status {
            code: 200,
            reason: "OK".into(),
        },
        h,
    )
}

/// Which directions of a link are compressed once the handshake is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Compression {
    /// We deflate what we send.
    pub outgoing: bool,
    /// We inflate what we receive.
    pub incoming: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(role: Role) -> LocalInfo {
        LocalInfo {
            user_agent: USER_AGENT.into(),
            role,
            guid: ServentId([1; 16]),
            listen: Some("127.0.0.1:6346".parse().unwrap()),
            compress: true,
            degree: 32,
            max_ttl: 4,
        }
    }

    fn adm() -> Admission {
        Admission {
            free_leaf_slots: 1,
            free_ultrapeer_slots: 1,
            already_connected: false,
            try_ultrapeers: vec!["127.0.0.2:6346".parse().unwrap()],
        }
    }

    fn peer(h: &[(&str, &str)]) -> PeerInfo {
        let mut hs = Headers::new();
        for (n, v) in h {
            hs.push(n, *v);
        }
        PeerInfo::from_headers(&hs)
    }

    const CONNECT: StartLine = StartLine::Connect { major: 0, minor: 6 };

    #[test]
    fn gtk_gnutella_ultrapeer_answer_is_understood() {
        let p = peer(&[
            ("User-Agent", "gtk-gnutella/1.2.3"),
            ("Node", "127.0.0.1:16346"),
            ("GUID", "8F3A9C1E5B7D2F4AFF61D0C2E4B6A801"),
            ("X-Ultrapeer", "True"),
            ("X-Degree", "46"),
            ("X-Max-TTL", "4"),
            ("Accept-Encoding", "deflate"),
            ("Content-Encoding", "deflate"),
            ("X-Try-Ultrapeers", "10.0.0.1:6346,bogus,10.0.0.2"),
            ("Remote-IP", "127.0.0.9"),
        ]);
        assert_eq!(p.role(), Role::Ultrapeer);
        assert_eq!(p.listen, Some("127.0.0.1:16346".parse().unwrap()));
        assert_eq!(p.degree, Some(46));
        assert!(p.accepts_deflate && p.sends_deflate);
        assert_eq!(p.try_ultrapeers.len(), 2);
        assert_eq!(p.try_ultrapeers[1].port(), 6346);
        assert_eq!(p.remote_ip, Some("127.0.0.9".parse().unwrap()));
        assert_eq!(p.guid.unwrap().to_hex(), "8f3a9c1e5b7d2f4aff61d0c2e4b6a801");
    }

    #[test]
    fn admission_follows_roles_slots_and_identity() {
        let up = local(Role::Ultrapeer);
        let leaf_peer = peer(&[("X-Ultrapeer", "False")]);
        let up_peer = peer(&[("X-Ultrapeer", "true")]);
        assert_eq!(
            admit(&up, &adm(), &CONNECT, &leaf_peer),
            Decision::Accept {
                peer_role: Role::Leaf
            }
        );
        assert_eq!(
            admit(&up, &adm(), &CONNECT, &up_peer),
            Decision::Accept {
                peer_role: Role::Ultrapeer
            }
        );
        let full = Admission {
            free_leaf_slots: 0,
            free_ultrapeer_slots: 0,
            ..adm()
        };
        assert_eq!(
            admit(&up, &full, &CONNECT, &leaf_peer),
            Decision::Refuse {
                code: 503,
                reason: "Too many leaves"
            }
        );
        assert_eq!(
            admit(&up, &full, &CONNECT, &up_peer),
            Decision::Refuse {
                code: 503,
                reason: "Too many connections"
            }
        );
        assert_eq!(
            admit(&local(Role::Leaf), &adm(), &CONNECT, &up_peer),
            Decision::Refuse {
                code: 204,
                reason: "Shielded leaf node"
            }
        );
        assert_eq!(
            admit(&up, &adm(), &CONNECT, &peer(&[("User-Agent", "x")])),
            Decision::Refuse {
                code: 403,
                reason: "Normal nodes refused"
            }
        );
        let me = peer(&[("X-Ultrapeer", "True"), ("GUID", &up.guid.to_hex())]);
        assert_eq!(
            admit(&up, &adm(), &CONNECT, &me).clone(),
            Decision::Refuse {
                code: 409,
                reason: "Connected to self"
            }
        );
        let dup = Admission {
            already_connected: true,
            ..adm()
        };
        assert!(matches!(
            admit(&up, &dup, &CONNECT, &up_peer),
            Decision::Refuse { code: 409, .. }
        ));
        let old = StartLine::Connect { major: 0, minor: 4 };
        assert!(matches!(
            admit(&up, &adm(), &old, &up_peer),
            Decision::Refuse { code: 505, .. }
        ));
    }

    #[test]
    fn refusals_carry_try_ultrapeers_and_acceptance_compresses_only_if_offered() {
        let up = local(Role::Ultrapeer);
        let d = Decision::Refuse {
            code: 503,
            reason: "Too many connections",
        };
        let b = answer_block(&up, &adm(), &d, &PeerInfo::default(), None);
        assert_eq!(
            b.headers.get("X-Try-Ultrapeers").as_deref(),
            Some("127.0.0.2:6346")
        );
        let acc = Decision::Accept {
            peer_role: Role::Leaf,
        };
        let plain = answer_block(&up, &adm(), &acc, &peer(&[("X-Ultrapeer", "False")]), None);
        assert!(!plain.headers.has("Content-Encoding"));
        let z = answer_block(
            &up,
            &adm(),
            &acc,
            &peer(&[("X-Ultrapeer", "False"), ("Accept-Encoding", "deflate")]),
            None,
        );
        assert_eq!(
            z.headers.get("Content-Encoding").as_deref(),
            Some("deflate")
        );
        assert_eq!(
            z.headers.get("X-Ultrapeer-Needed").as_deref(),
            Some("False")
        );
    }
}
