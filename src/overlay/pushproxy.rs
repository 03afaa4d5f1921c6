//! The push-proxy side of the routing core (SWARM.md §5.4): a downloader's HTTP request asks
//! us to push to a servent; we send the Push to it when it is our neighbour (a leaf we carry),
//! or along the routes its hits came by.

use std::time::Instant;

use super::routes::Source;
use super::{Action, Overlay, raw_descriptor};
use crate::wire::{PayloadType, Push};

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
