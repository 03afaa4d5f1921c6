//! A connection's output queue (PROTOCOL.md §5, gtk-gnutella `mq.c`): bounded in bytes, sent
//! in order, and under pressure it sheds what matters least (pings and queries first, never
//! Bye or QRP) instead of growing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::wire::{HEADER_LEN, PayloadType};

/// gtk-gnutella's `node_sendqueue_size`.
pub const QUEUE_BYTES: usize = 98_304;
/// Above half full the link is flow-controlled: fresh queries and pings are refused.
pub const HIGH_WATERMARK: usize = QUEUE_BYTES / 2;
/// Flow control ends below a quarter.
pub const LOW_WATERMARK: usize = QUEUE_BYTES / 4;
/// A peer that stays flow-controlled this long is not reading: drop it (Bye 502).
pub const FLOW_CONTROL_LIMIT: Duration = Duration::from_secs(180);

/// Priority by type, gtk-gnutella's order: Bye 9 > QRP 8 > vendor 7 > Push 5 > QueryHit 4 >
/// Pong 3 > Query 2 > Ping 1.
fn priority(kind: PayloadType) -> u8 {
    match kind {
        PayloadType::Bye => 9,
        PayloadType::Qrp => 8,
        PayloadType::Vendor | PayloadType::StandardVendor => 7,
        PayloadType::Push => 5,
        PayloadType::QueryHit => 4,
        PayloadType::Pong => 3,
        PayloadType::Query => 2,
        PayloadType::Ping => 1,
        PayloadType::Other(_) => 0,
    }
}

/// Lower sorts first when something must go: by priority, then for same-type queries and pings
/// the one with more hops, for hits and pushes the one with fewer hops.
fn shed_key(msg: &[u8]) -> (u8, i16) {
    let kind = PayloadType::from_byte(msg[16]);
    let hops = i16::from(msg[18]);
    let tie = match kind {
        PayloadType::QueryHit | PayloadType::Push => hops,
        _ => -hops,
    };
    (priority(kind), tie)
}

/// What happened to a message offered to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Queued,
    /// Dropped: flow-controlled and the message is a query or ping, or nothing less important
    /// could make room.
    Dropped,
    /// Full of messages that must not be dropped: the peer must go (Bye 502).
    Overflow,
}

#[derive(Default)]
pub struct OutQueue {
    items: VecDeque<Arc<[u8]>>,
    bytes: usize,
    flow_since: Option<Instant>,
    pub dropped: u64,
}

impl OutQueue {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn flow_controlled(&self) -> bool {
        self.flow_since.is_some()
    }

    /// Fill as a fraction of the capacity, for status displays.
    pub fn fill(&self) -> f32 {
        self.bytes as f32 / QUEUE_BYTES as f32
    }

    /// Offers a whole descriptor (header included).
    pub fn push(&mut self, msg: Arc<[u8]>, now: Instant) -> Enqueued {
        debug_assert!(msg.len() >= HEADER_LEN);
        if msg.len() < HEADER_LEN {
            return Enqueued::Dropped;
        }
        let key = shed_key(&msg);
        // Hysteresis: once over the high watermark, stay flow-controlled until below the low.
        if self.flow_since.is_some() || self.bytes + msg.len() > HIGH_WATERMARK {
            self.flow_since.get_or_insert(now);
            if key.0 <= priority(PayloadType::Query) {
                self.dropped += 1;
                return Enqueued::Dropped;
            }
        }
        while self.bytes + msg.len() > QUEUE_BYTES {
            // Shed the least important queued message that ranks below this one.
            let victim = self
                .items
                .iter()
                .enumerate()
                .filter(|(_, m)| {
                    let k = shed_key(m);
                    k.0 < priority(PayloadType::Qrp) && k < key
                })
                .min_by_key(|(_, m)| shed_key(m))
                .map(|(i, _)| i);
            match victim {
                Some(i) => {
                    let m = self.items.remove(i).expect("index from enumerate");
                    self.bytes -= m.len();
                    self.dropped += 1;
                }
                None if key.0 >= priority(PayloadType::Qrp) => return Enqueued::Overflow,
                None => {
                    self.dropped += 1;
                    return Enqueued::Dropped;
                }
            }
        }
        self.bytes += msg.len();
        self.items.push_back(msg);
        Enqueued::Queued
    }

    /// Takes the next message to write, in order.
    pub fn pop(&mut self) -> Option<Arc<[u8]>> {
        let m = self.items.pop_front()?;
        self.bytes -= m.len();
        if self.bytes < LOW_WATERMARK {
            self.flow_since = None;
        }
        Some(m)
    }

    /// True when the peer has been flow-controlled for longer than [`FLOW_CONTROL_LIMIT`].
    pub fn stalled(&self, now: Instant) -> bool {
        self.flow_since
            .is_some_and(|t| now.saturating_duration_since(t) > FLOW_CONTROL_LIMIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: PayloadType, hops: u8, len: usize) -> Arc<[u8]> {
        let mut m = vec![0u8; HEADER_LEN + len];
        m[16] = kind.to_byte();
        m[18] = hops;
        m.into()
    }

    #[test]
    fn queries_are_refused_above_the_high_watermark_but_hits_still_pass() {
        let mut q = OutQueue::new();
        let now = Instant::now();
        while q.push(msg(PayloadType::Query, 1, 1000), now) == Enqueued::Queued {}
        assert!(q.flow_controlled());
        assert!(q.bytes() <= HIGH_WATERMARK);
        assert_eq!(q.push(msg(PayloadType::Ping, 0, 0), now), Enqueued::Dropped);
        assert_eq!(
            q.push(msg(PayloadType::QueryHit, 2, 1000), now),
            Enqueued::Queued
        );
        // Draining below the low watermark ends flow control.
        while q.bytes() >= LOW_WATERMARK {
            q.pop();
        }
        assert!(!q.flow_controlled());
    }

    #[test]
    fn a_full_queue_sheds_lower_priority_and_never_qrp_or_bye() {
        let mut q = OutQueue::new();
        let now = Instant::now();
        for _ in 0..40 {
            q.push(msg(PayloadType::Pong, 0, 2000), now);
        }
        for _ in 0..20 {
            assert_eq!(
                q.push(msg(PayloadType::Qrp, 0, 4000), now),
                Enqueued::Queued
            );
        }
        assert!(q.bytes() <= QUEUE_BYTES);
        // Only QRP left that cannot be shed: a Bye still cannot fit without dropping QRP.
        while q.push(msg(PayloadType::Qrp, 0, 4000), now) == Enqueued::Queued {}
        assert_eq!(
            q.push(msg(PayloadType::Bye, 0, 4000), now),
            Enqueued::Overflow
        );
        assert!(q.dropped > 0);
        assert!(q.stalled(now + FLOW_CONTROL_LIMIT + Duration::from_secs(1)));
    }

    #[test]
    fn order_is_kept_for_what_is_queued() {
        let mut q = OutQueue::new();
        let now = Instant::now();
        for h in 0..5 {
            q.push(msg(PayloadType::Query, h, 10), now);
        }
        let hops: Vec<u8> = std::iter::from_fn(|| q.pop()).map(|m| m[18]).collect();
        assert_eq!(hops, vec![0, 1, 2, 3, 4]);
        assert_eq!(q.bytes(), 0);
    }
}
