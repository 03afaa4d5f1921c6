//! The upload server's side of the queue: asks the pure [`UploadQueue`] who is served, holds
//! the slot for the served request, and writes the PARQ answer for the others (SWARM.md §4.1,
//! §6.3): `503 Queued (slot N, ETA: …)` with `X-Queued` and `Retry-After`. A transfer in
//! progress is never cut: a choke applies at the peer's next request.

use std::net::SocketAddrV4;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, StatusCode};

use super::slots::{HOLD, Slot, Slots};
use crate::swarm::choke::PeerId;
use crate::swarm::parq::{ParqError, QueueId, Queued, queued_reason};
use crate::swarm::queue::{Admit, Ask, Grant, Place, UploadQueue};
use crate::wire::Sha1Urn;

pub type Queue = Arc<Mutex<UploadQueue<Sha1Urn>>>;

pub fn lock(q: &Queue) -> MutexGuard<'_, UploadQueue<Sha1Urn>> {
    q.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a request says of the queue: whether it speaks PARQ (`X-Queue`, or an `X-Queued` it
/// echoes) and the ID it holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Speaks {
    pub parq: bool,
    pub id: Option<QueueId>,
    /// It says which ranges it holds: it offers them.
    pub spreads: bool,
}

pub fn read_request<B>(req: &Request<B>) -> Speaks {
    let h = req.headers();
    let queued = h
        .get("X-Queued")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Queued::parse(v).ok());
    Speaks {
        parq: h.contains_key("X-Queue") || queued.is_some(),
        id: queued.and_then(|q| q.id),
        spreads: h.contains_key("X-Available-Ranges"),
    }
}

/// A served request's slot, its queue entry and its peer. Dropping it (body sent or
/// abandoned) frees the slot and sends the entry to the back of the line.
pub struct Held {
    _slot: Slot,
    queue: Queue,
    pub id: QueueId,
    pub who: PeerId,
    pub grant: Grant,
}

impl Held {
    /// `bytes` of the body went out.
    pub fn sent(&self, bytes: u64) {
        lock(&self.queue).sent(self.who, bytes, Instant::now());
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        lock(&self.queue).ended(&self.id, Instant::now());
    }
}

/// No slot: the answer's status, reason and headers.
pub struct Refusal {
    pub code: StatusCode,
    pub reason: String,
    pub headers: HeaderMap,
}

fn fresh_id() -> QueueId {
    QueueId(*uuid::Uuid::new_v4().as_bytes())
}

/// Asks for a slot for `who`'s request of `file`.
pub async fn admit(
    queue: &Queue,
    slots: &Arc<Slots>,
    who: PeerId,
    file: Sha1Urn,
    seeding: bool,
    callback: Option<SocketAddrV4>,
    speaks: Speaks,
) -> Result<Held, Refusal> {
    let ask = Ask {
        who,
        file,
        seeding,
        named: speaks.id,
        callback,
        fresh: fresh_id(),
        spreads: speaks.spreads,
    };
    let admitted = lock(queue).admit(&ask, slots.free(), Instant::now());
    let held = |slot, id, grant| {
        lock(queue).started(&id, Instant::now());
        Held {
            _slot: slot,
            queue: queue.clone(),
            id,
            who,
            grant,
        }
    };
    match admitted {
        Admit::Serve {
            id,
            grant,
            priority,
        } => match slots.acquire_now(who, priority, HOLD).await {
            Ok(slot) => Ok(held(slot, id, grant)),
            Err(_) => {
                // Its slot is still held by the request lent it; it is next.
                let place = Place {
                    id,
                    position: 1,
                    length: 1,
                    retry: Duration::from_secs(1),
                    lifetime: crate::swarm::parq::LIFE_AFTER_RETRY.as_secs() as u32,
                    eta: Duration::from_secs(1),
                    hold: None,
                };
                lock(queue).gave_up(&place, Instant::now());
                Err(queued(&place, speaks))
            }
        },
        Admit::Queue(place) => {
            if let Some(priority) = place.hold
                && let Ok(slot) = slots.handover(who, priority, HOLD).await
            {
                return Ok(held(slot, place.id, Grant::Turn));
            }
            if place.hold.is_some() {
                lock(queue).gave_up(&place, Instant::now());
            }
            Err(queued(&place, speaks))
        }
        Admit::Refuse(ParqError::Full) => {
            let mut headers = HeaderMap::new();
            headers.insert(header::RETRY_AFTER, HeaderValue::from(60u64));
            Err(Refusal {
                code: StatusCode::SERVICE_UNAVAILABLE,
                reason: "Queue full".into(),
                headers,
            })
        }
        Admit::Refuse(ParqError::Banned(left)) => {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(left.as_secs().max(1)),
            );
            Err(Refusal {
                code: StatusCode::TOO_MANY_REQUESTS,
                reason: ParqError::Banned(left).to_string(),
                headers,
            })
        }
    }
}

/// `503 Queued` with where it stands. A client that speaks no PARQ gets `Retry-After` only.
fn queued(place: &Place, speaks: Speaks) -> Refusal {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::RETRY_AFTER,
        HeaderValue::from(place.retry.as_secs().max(1)),
    );
    if speaks.parq {
        let q = Queued {
            id: Some(place.id),
            position: Some(place.position),
            lifetime: Some(place.lifetime),
            length: Some(place.length),
            eta: Some(place.eta.as_secs() as u32),
        };
        if let Ok(v) = HeaderValue::from_str(&q.to_string()) {
            headers.insert("X-Queued", v);
        }
    }
    Refusal {
        code: StatusCode::SERVICE_UNAVAILABLE,
        reason: queued_reason(place.position, place.eta),
        headers,
    }
}

/// The `X-Queued: ID=…` a served PARQ client gets, so that it keeps its entry across a broken
/// connection (gtk-gnutella `parq_upload_add_header_id`).
pub fn served_header(held: &Held) -> HeaderValue {
    let q = Queued {
        id: Some(held.id),
        ..Queued::default()
    };
    HeaderValue::from_str(&q.to_string()).expect("hex and ASCII")
}
