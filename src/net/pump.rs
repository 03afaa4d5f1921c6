//! A link's reader and writer tasks: socket → (inflate) → framer → core, and output queue →
//! (deflate) → socket.
//!
//! Memory per link is what limits how many links a node holds, and most links are quiet most
//! of the time: a leaf sends a ping or a search now and then. So a link owns no read or write
//! buffer while it waits. Its reader waits for readability with a one-byte `peek`, then takes
//! the bytes into its thread's buffers ([`ReadScratch`]) and keeps only an incomplete
//! descriptor; its writer assembles and compresses a batch in its thread's buffers
//! ([`WriteScratch`]) and keeps only what the socket did not take at once. Those were
//! 8 + 4..16 + 16 KiB per link, more than a leaf's table and everything else it keeps
//! (`examples/net_bench`, memory table).

use std::cell::RefCell;
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use async_std::channel::Receiver;
use async_std::net::TcpStream;
use async_std::task;
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use log::info;

use super::link::{Deflater, Inflater};
use super::{BYE_LINGER, Inner, Link, WRITE_BATCH, dispatch, lock};
use crate::overlay::{Action, ConnId, Event, bye_descriptor};
use crate::wire::{Frames, Guid, WireError};

/// Bytes taken from the socket per read. Not more: the reader works through a whole read before
/// it yields, and with 16 KiB a flooding peer's reader crowded out the writers on its thread
/// (net_bench blast runs delivered a quarter less).
const READ_CHUNK: usize = 8 * 1024;

/// A thread's read buffers, lent to whichever link's reader runs on it between two awaits.
/// `read` takes the socket's bytes; `plain` what they inflate to. Their size is bounded by
/// [`READ_CHUNK`], and `plain` by an inflate step plus one incomplete descriptor (the
/// framer refuses larger ones).
#[derive(Default)]
struct ReadScratch {
    read: Vec<u8>,
    plain: Vec<u8>,
}

/// A thread's write buffers: the batch taken from a queue and its compressed form, at most
/// [`WRITE_BATCH`] plus one descriptor (and what that compresses to).
#[derive(Default)]
struct WriteScratch {
    batch: Vec<u8>,
    wire: Vec<u8>,
}

thread_local! {
    static READ_SCRATCH: RefCell<ReadScratch> = RefCell::default();
    static WRITE_SCRATCH: RefCell<WriteScratch> = RefCell::default();
}

/// One read that does not wait: `None` when the socket has nothing yet. The no-op waker is
/// fine: a reader that gets `None` awaits readability (`peek`), which registers a real one.
fn read_now(stream: &mut TcpStream, buf: &mut [u8]) -> Option<io::Result<usize>> {
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(stream).poll_read(&mut cx, buf) {
        Poll::Ready(r) => Some(r),
        Poll::Pending => None,
    }
}

/// Writes what the socket takes without waiting; returns how much that was. The writer awaits
/// the rest with a real waker.
fn write_now(stream: &mut TcpStream, mut buf: &[u8]) -> io::Result<usize> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut done = 0;
    while !buf.is_empty() {
        match Pin::new(&mut *stream).poll_write(&mut cx, buf) {
            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => {
                done += n;
                buf = &buf[n..];
            }
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => break,
        }
    }
    Ok(done)
}

/// What a link's reader keeps between reads.
struct Reader {
    inflater: Option<Inflater>,
    /// An incomplete descriptor (inflated), empty and without capacity when there is none.
    tail: Vec<u8>,
}

impl Reader {
    /// Inflates and frames `input`, handing whole descriptors to the core. False when the
    /// link must stop.
    fn absorb(
        &mut self,
        inner: &Arc<Inner>,
        id: ConnId,
        input: &[u8],
        scratch: &mut Vec<u8>,
    ) -> io::Result<bool> {
        // Frames go to the core from the thread's buffer, unless a descriptor is already
        // begun in `tail`: then from `tail`, so that one arriving in many small pieces is
        // not copied back and forth for each.
        let in_tail = !self.tail.is_empty();
        let out = if in_tail {
            &mut self.tail
        } else {
            scratch.clear();
            &mut *scratch
        };
        let go_on = match self.inflater.as_mut() {
            None => {
                out.extend_from_slice(input);
                frame(inner, id, out)
            }
            Some(z) => {
                let mut pos = 0;
                let mut go_on = true;
                loop {
                    let (used, made) = z
                        .inflate(&input[pos..], out)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    pos += used;
                    if made > 0 && !frame(inner, id, out) {
                        go_on = false;
                        break;
                    }
                    if used == 0 && made == 0 {
                        break;
                    }
                }
                go_on
            }
        };
        if !in_tail {
            self.tail.extend_from_slice(scratch);
        } else if self.tail.is_empty() {
            self.tail = Vec::new();
        }
        Ok(go_on)
    }
}

/// Hands every whole descriptor in `buf` to the core and drops them, keeping the incomplete
/// tail. False when the link must stop.
fn frame(inner: &Arc<Inner>, id: ConnId, buf: &mut Vec<u8>) -> bool {
    let mut out = Vec::new();
    let (used, err) = {
        let mut core = lock(&inner.core);
        let now = std::time::Instant::now();
        let mut frames = Frames::new(buf);
        for frame in frames.by_ref() {
            core.handle(Event::Frame { id, frame }, now, &mut out);
        }
        (frames.consumed(), frames.error().cloned())
    };
    buf.drain(..used);
    if let Some(e) = err {
        let reason = match &e {
            WireError::PayloadTooLarge { kind, len, .. } => {
                format!("Too large {kind} message ({len} bytes)")
            }
            other => other.to_string(),
        };
        info!("dropping link {id}: {reason}");
        out.push(Action::Close {
            id,
            bye: Some((400, reason)),
        });
        dispatch(inner, out);
        return false;
    }
    dispatch(inner, out);
    true
}

/// Reads descriptors until the peer or we close. A framing error drops the peer with Bye 400
/// (its stream cannot be followed past a bad length).
pub(super) async fn read_loop(
    inner: &Arc<Inner>,
    id: ConnId,
    mut stream: TcpStream,
    leftover: Vec<u8>,
    compressed: bool,
    counted: &AtomicU64,
) -> io::Result<()> {
    let mut r = Reader {
        inflater: compressed.then(Inflater::new),
        tail: Vec::new(),
    };
    let first = READ_SCRATCH.with(|cell| {
        let mut s = cell.borrow_mut();
        r.absorb(inner, id, &leftover, &mut s.plain)
    })?;
    drop(leftover);
    if !first {
        return Ok(());
    }
    loop {
        let got = READ_SCRATCH.with(|cell| -> io::Result<Option<bool>> {
            let mut s = cell.borrow_mut();
            let ReadScratch { read, plain } = &mut *s;
            read.resize(READ_CHUNK, 0);
            match read_now(&mut stream, read) {
                None => Ok(None),
                Some(Err(e)) => Err(e),
                Some(Ok(0)) => Ok(Some(false)),
                Some(Ok(n)) => {
                    counted.fetch_add(n as u64, Ordering::Relaxed);
                    r.absorb(inner, id, &read[..n], plain).map(Some)
                }
            }
        })?;
        match got {
            Some(false) => return Ok(()),
            // Let the writers run: a peer that keeps our socket full would otherwise keep
            // this task busy, starve every output queue on this thread and make us shed what
            // we route.
            Some(true) => task::yield_now().await,
            None => {
                if stream.peek(&mut [0u8; 1]).await? == 0 {
                    return Ok(());
                }
            }
        }
    }
}

/// One batch: the bytes the socket did not take at once, how many went in all, and the
/// closing state it was taken under.
type Written = (io::Result<Vec<u8>>, usize, Option<Option<(u16, String)>>);

pub(super) async fn write_loop(
    link: Arc<Link>,
    mut stream: TcpStream,
    wake: Receiver<()>,
    compressed: bool,
) {
    let mut deflater = compressed.then(Deflater::new);
    loop {
        let woke = wake.recv().await.is_ok();
        loop {
            let step = WRITE_SCRATCH.with(|cell| -> Option<Written> {
                let mut s = cell.borrow_mut();
                let WriteScratch { batch, wire } = &mut *s;
                batch.clear();
                {
                    let mut q = lock(&link.queue);
                    while batch.len() < WRITE_BATCH {
                        let Some(m) = q.pop() else { break };
                        batch.extend_from_slice(&m);
                    }
                }
                let closing = lock(&link.closing).clone();
                if let Some(Some((code, reason))) = &closing {
                    batch.extend_from_slice(&bye_descriptor(Guid::random(), *code, reason));
                }
                if batch.is_empty() && closing.is_none() {
                    return None;
                }
                let bytes: &[u8] = match deflater.as_mut() {
                    None => batch,
                    Some(z) => {
                        wire.clear();
                        z.compress(batch, wire);
                        wire
                    }
                };
                let rest = write_now(&mut stream, bytes).map(|n| bytes[n..].to_vec());
                Some((rest, bytes.len(), closing))
            });
            let Some((rest, total, closing)) = step else {
                break;
            };
            let sent = match rest {
                Ok(rest) => rest.is_empty() || stream.write_all(&rest).await.is_ok(),
                Err(_) => false,
            };
            if !sent {
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
            link.bytes_out.fetch_add(total as u64, Ordering::Relaxed);
            if let Some(bye) = closing {
                if bye.is_some() {
                    // Half-close, give the peer time to read the Bye, then close.
                    let _ = stream.flush().await;
                    let _ = stream.shutdown(Shutdown::Write);
                    task::sleep(BYE_LINGER).await;
                }
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
        }
        if !woke {
            return;
        }
    }
}
