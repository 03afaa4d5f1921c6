//! Connections peers open to us on a download's behalf: `GIV` (a firewalled source answers our
//! Push, PROTOCOL.md §8) and `QUEUE` (an uploader whose queue we waited in calls us back when
//! our turn comes, SWARM.md §4.2). Either way the stream goes to the download waiting for it,
//! which sends its request on it.

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_std::channel::{Receiver, Sender, bounded};
use async_std::future::timeout;
use async_std::net::TcpStream;
use futures_lite::AsyncReadExt;
use log::debug;

use crate::swarm::parq::{QueueId, parse_queue_line};
use crate::wire::ServentId;

/// A callback's first line longer than this is not one.
const MAX_GIV: usize = 512;
/// How long a caller has to send its line.
const LINE_TIMEOUT: Duration = Duration::from_secs(10);
/// Downloads waiting for a `QUEUE` at once (one per source they are queued at).
pub const MAX_QUEUE_WAITERS: usize = 4096;

/// Downloads waiting for callbacks: `GIV` by the servent GUID that is to call, `QUEUE` by the
/// queue ID the uploader gave us.
#[derive(Default)]
pub struct PushWaiters {
    waiting: Mutex<HashMap<ServentId, Vec<Sender<TcpStream>>>>,
    queued: Mutex<HashMap<QueueId, Sender<TcpStream>>>,
}

impl PushWaiters {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub(crate) fn wait(&self, servent: ServentId) -> async_std::channel::Receiver<TcpStream> {
        let (tx, rx) = bounded(1);
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(servent)
            .or_default()
            .push(tx);
        rx
    }

    /// A `QUEUE` for `id` will come on the returned channel, until it is dropped. `None` when
    /// too many wait already.
    pub(crate) fn wait_queue(&self, id: QueueId) -> Option<Receiver<TcpStream>> {
        let mut q = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        q.retain(|_, tx| !tx.is_closed());
        if q.len() >= MAX_QUEUE_WAITERS && !q.contains_key(&id) {
            return None;
        }
        let (tx, rx) = bounded(1);
        q.insert(id, tx);
        Some(rx)
    }

    /// Takes an incoming callback, `GIV` or `QUEUE`: reads its line, and hands the stream to
    /// the download waiting for it. A `GIV`'s index and name are ignored (gtk-gnutella sends
    /// the literal name `file`); the GUID matches in any case (PROTOCOL.md §8).
    pub async fn giv(&self, mut stream: TcpStream, initial: Vec<u8>, peer: SocketAddrV4) {
        let mut buf = initial;
        let mut chunk = [0u8; 256];
        let end = loop {
            // A QUEUE line ends at its line end; the request follows from us.
            if buf.starts_with(b"QUEUE ")
                && let Some(p) = memchr::memchr(b'\n', &buf)
            {
                return self.queue(stream, &buf[..p], peer).await;
            }
            if let Some(p) = buf.windows(2).position(|w| w == b"\n\n") {
                break p;
            }
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            if buf.len() > MAX_GIV {
                debug!("GIV from {peer} is too long");
                return;
            }
            match timeout(LINE_TIMEOUT, stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        };
        let line = String::from_utf8_lossy(&buf[..end]).to_string();
        let Some(guid) = parse_giv(&line) else {
            debug!("malformed GIV from {peer}: {line:?}");
            return;
        };
        let tx = {
            let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            let list = w.get_mut(&guid);
            let tx = list.and_then(|l| {
                if l.is_empty() {
                    None
                } else {
                    Some(l.remove(0))
                }
            });
            w.retain(|_, l| !l.is_empty());
            tx
        };
        match tx {
            Some(tx) => {
                debug!("GIV from {peer} for {guid}");
                let _ = tx.send(stream).await;
            }
            None => debug!("GIV from {peer} for {guid}: nobody is waiting"),
        }
    }

    async fn queue(&self, stream: TcpStream, line: &[u8], peer: SocketAddrV4) {
        let line = String::from_utf8_lossy(line);
        let id = match parse_queue_line(&line) {
            Ok((id, _)) => id,
            Err(e) => {
                debug!("{e} from {peer}: {line:?}");
                return;
            }
        };
        let tx = self
            .queued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        match tx {
            Some(tx) => {
                debug!("QUEUE from {peer} for {id}: our turn");
                let _ = tx.send(stream).await;
            }
            // gtk-gnutella closes too (it would look for another download from that host).
            None => debug!("QUEUE from {peer} for {id}: nobody is waiting"),
        }
    }
}

/// `GIV <index>:<32 hex GUID>/<name>` → the GUID.
pub fn parse_giv(line: &str) -> Option<ServentId> {
    let rest = line.trim().strip_prefix("GIV ")?;
    let (_, after) = rest.split_once(':')?;
    let hex = after.split('/').next()?;
    ServentId::from_hex(hex.trim())
}
