//! Push proxies in the routing core (SWARM.md §5): a firewalled leaf asks its ultrapeers to be
//! its push proxies (`LIME/21`, answered by `LIME/22`); as an ultrapeer we agree for our leaves,
//! and a downloader's push-proxy HTTP request has us push to a servent: to it when it is our
//! neighbour (a leaf we carry), or along the routes its hits came by.

use std::net::SocketAddrV4;
use std::time::Instant;

use super::routes::Source;
use super::{Action, Overlay, raw_descriptor};
use crate::handshake::Role;
use crate::wire::vendor::selector;
use crate::wire::{
    Descriptor, Guid, Hops, Payload, PayloadType, Push, ServentId, Ttl, VendorBody, VendorMessage,
};

/// How a push-proxy request went; the HTTP answer says it (gtk-gnutella's `pproxy.c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxied {
    /// Sent to the servent itself, our neighbour (202).
    Neighbour,
    /// Sent through the overlay, to this many links (203).
    Routed(usize),
    /// No route to it (410).
    NoRoute,
}

impl Overlay {
    /// Sends `p` as a push proxy: TTL one less than ours, hops 1, as gtk-gnutella builds it.
    pub fn proxy_push(&mut self, p: &Push<'_>, now: Instant, out: &mut Vec<Action>) -> Proxied {
        let neighbour = self.conns.values().any(|c| c.info.guid == Some(p.target));
        let targets = self.push_targets(&p.target, None, now);
        if targets.is_empty() {
            return Proxied::NoRoute;
        }
        let muid = self.rng.guid();
        self.routes
            .record(muid, PayloadType::Push, Source::Local, now);
        let mut payload = Vec::new();
        p.encode(&mut payload);
        let ttl = self.cfg.max_ttl.saturating_sub(1).max(1);
        let msg = raw_descriptor(muid, PayloadType::Push, ttl, 1, &payload);
        let n = targets.len();
        for to in targets {
            out.push(Action::Send {
                to,
                msg: msg.clone(),
            });
        }
        if neighbour {
            Proxied::Neighbour
        } else {
            Proxied::Routed(n)
        }
    }
}

/// Push proxies a firewalled leaf lists in its hits and transfer headers at most.
pub const MAX_PROXIES: usize = crate::swarm::altloc::FW_MAX_PROXIES;

impl Overlay {
    /// A firewalled leaf asks each ultrapeer it links to to be its push proxy (`LIME/21`, the
    /// MUID our servent GUID, as gtk-gnutella sends it on its post-handshake firewall check).
    pub(super) fn ask_push_proxy(&mut self, id: super::ConnId, out: &mut Vec<Action>) {
        if self.cfg.role != Role::Leaf || self.reputation.is_reachable() {
            return;
        }
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.info.role != Role::Ultrapeer || c.proxy_asked {
            return;
        }
        c.proxy_asked = true;
        let msg = Descriptor {
            muid: Guid(self.cfg.servent.0),
            ttl: Ttl(1),
            hops: Hops(0),
            payload: Payload::Vendor(VendorMessage::new(
                selector::PUSH_PROXY_REQUEST,
                VendorBody::PushProxyRequest,
            )),
        };
        out.push(Action::Send {
            to: id,
            msg: msg.to_vec().into(),
        });
    }

    /// A leaf asks us to be its push proxy: as an ultrapeer that is reachable and knows its
    /// address, we say yes (`LIME/22` v2, same MUID) and route pushes for its GUID to it.
    pub(super) fn on_push_proxy_request(
        &mut self,
        id: super::ConnId,
        muid: Guid,
        out: &mut Vec<Action>,
    ) {
        let Some(addr) = self.cfg.advertise else {
            return;
        };
        if self.cfg.role != Role::Ultrapeer || !self.reputation.is_reachable() {
            return;
        }
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.info.role != Role::Leaf {
            return;
        }
        // The GUID it asks for is the one pushes will name (gtk-gnutella's node_proxying_add).
        c.info.guid = Some(ServentId(muid.0));
        let msg = Descriptor {
            muid,
            ttl: Ttl(1),
            hops: Hops(0),
            payload: Payload::Vendor(VendorMessage::new(
                selector::PUSH_PROXY_ACK,
                VendorBody::PushProxyAck { proxy: addr },
            )),
        };
        out.push(Action::Send {
            to: id,
            msg: msg.to_vec().into(),
        });
    }

    /// An ultrapeer we asked agrees to be our push proxy at `proxy`.
    pub(super) fn on_push_proxy_ack(&mut self, id: super::ConnId, proxy: SocketAddrV4) {
        if let Some(c) = self.conns.get_mut(&id)
            && c.proxy_asked
            && c.info.role == Role::Ultrapeer
            && proxy.port() != 0
            && !proxy.ip().is_unspecified()
        {
            c.push_proxy = Some(proxy);
        }
    }

    /// Our push proxies now (the ultrapeers that agreed and are still linked).
    pub fn push_proxies(&self) -> Vec<SocketAddrV4> {
        let mut v: Vec<SocketAddrV4> = self.conns.values().filter_map(|c| c.push_proxy).collect();
        v.sort();
        v.truncate(MAX_PROXIES);
        v
    }
}
