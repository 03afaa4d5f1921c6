//! Link compression (PROTOCOL.md §4, gtk-gnutella `tx_deflate.c`, `rx_inflate.c`): one zlib
//! stream per direction over all descriptors after the handshake, sync-flushed so a peer can
//! decode every batch as soon as it arrives.
//!
//! Memory per link is what limits how many links a node holds, and a zlib compressor is big
//! (zlib-rs: ~200 KiB whatever the window, most of it a 64 Ki-entry hash table). So links do not
//! own one: each thread keeps a single raw-deflate compressor, and a link keeps only the last
//! [`DEFLATE_WINDOW`] bytes it sent. Before a batch the compressor is reset and primed with
//! that history (`deflateSetDictionary`), unless it still holds this very link's state from
//! the link's previous batch on this thread. After a sync flush a deflate stream is at a block
//! boundary, so either way the bytes continue the link's one zlib stream, whose header
//! declares the small window (any inflater accepts one). Inflating keeps a full window per
//! link: peers choose their window, gtk-gnutella's is 32 KiB.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Inflated bytes produced per step at most. The framer consumes them before the next step,
/// so a decompression bomb costs time in steps of this size, never memory.
pub const INFLATE_STEP: usize = 16 * 1024;
/// Room given per step for each byte of input (Gnutella traffic inflates about 3x), at least
/// [`INFLATE_MIN_ROOM`]: the room is zeroed first, and a quiet link should not touch
/// [`INFLATE_STEP`] bytes of memory for a 30-byte ping.
const INFLATE_ROOM_PER_BYTE: usize = 8;
const INFLATE_MIN_ROOM: usize = 1024;

/// log2 of our deflate window. On query traffic 4 KiB puts about 2 % more bytes on the wire
/// than a 32 KiB window (`examples/net_bench`), and it is all a link keeps.
pub const DEFLATE_WINDOW_BITS: u8 = 12;
pub const DEFLATE_WINDOW: usize = 1 << DEFLATE_WINDOW_BITS;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("compressed stream is corrupt")]
    Corrupt,
    #[error("compressed stream ended")]
    Ended,
}

pub struct Inflater {
    z: Decompress,
    /// The last step filled its room: zlib may hold more output without more input.
    full: bool,
}

impl Default for Inflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Inflater {
    pub fn new() -> Self {
        Inflater {
            z: Decompress::new(true),
            full: false,
        }
    }

    /// Inflates from `input` onto `out`, at most [`INFLATE_STEP`] bytes. Returns (bytes of
    /// input used, bytes produced); (0, 0) means `input` needs more bytes to go on.
    pub fn inflate(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(usize, usize), LinkError> {
        if input.is_empty() && !self.full {
            // Nothing to do: leave `out` (and its untouched pages) alone.
            return Ok((0, 0));
        }
        let room = input
            .len()
            .saturating_mul(INFLATE_ROOM_PER_BYTE)
            .clamp(INFLATE_MIN_ROOM, INFLATE_STEP);
        let start = out.len();
        out.resize(start + room, 0);
        let (in0, out0) = (self.z.total_in(), self.z.total_out());
        let status = self
            .z
            .decompress(input, &mut out[start..], FlushDecompress::Sync)
            .map_err(|_| LinkError::Corrupt);
        let used = (self.z.total_in() - in0) as usize;
        let made = (self.z.total_out() - out0) as usize;
        out.truncate(start + made);
        self.full = made == room;
        match status? {
            Status::StreamEnd => Err(LinkError::Ended),
            _ => Ok((used, made)),
        }
    }
}

pub struct Deflater {
    /// Identifies this stream's state in a thread's compressor: (link, batches compressed).
    id: u64,
    seq: u64,
    /// The last bytes sent, at most [`DEFLATE_WINDOW`]: what the peer's window holds that we
    /// may refer to.
    history: Vec<u8>,
}

impl Default for Deflater {
    fn default() -> Self {
        Self::new()
    }
}

static NEXT_STREAM: AtomicU64 = AtomicU64::new(1);

/// A thread's compressor, and whose state it holds: (stream id, batches done).
struct Shared {
    z: Compress,
    holds: Option<(u64, u64)>,
}

thread_local! {
    static SHARED: RefCell<Option<Shared>> = const { RefCell::new(None) };
}

/// The two-byte zlib header for a deflate stream with a `2^bits` window (RFC 1950 §2.2).
fn zlib_header(bits: u8) -> [u8; 2] {
    let cmf = ((bits - 8) << 4) | 8;
    // FLEVEL 2 (default), no preset dictionary, FCHECK makes the pair a multiple of 31.
    let flg = 2 << 6;
    let check = 31 - ((u16::from(cmf) << 8) | flg) % 31;
    [cmf, (flg + check % 31) as u8]
}

impl Deflater {
    pub fn new() -> Self {
        Deflater {
            id: NEXT_STREAM.fetch_add(1, Ordering::Relaxed),
            seq: 0,
            history: Vec::new(),
        }
    }

    /// Compresses `data` onto `out` and sync-flushes, so the peer can inflate all of it now.
    pub fn compress(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.seq == 0 {
            out.extend_from_slice(&zlib_header(DEFLATE_WINDOW_BITS));
        }
        SHARED.with(|cell| {
            let mut cell = cell.borrow_mut();
            let shared = cell.get_or_insert_with(|| Shared {
                z: Compress::new_with_window_bits(
                    Compression::default(),
                    false,
                    DEFLATE_WINDOW_BITS,
                ),
                holds: None,
            });
            if shared.holds != Some((self.id, self.seq)) {
                shared.z.reset();
                if !self.history.is_empty() {
                    shared
                        .z
                        .set_dictionary(&self.history)
                        .expect("a dictionary right after a reset");
                }
            }
            shared.holds = None;
            deflate_sync(&mut shared.z, data, out);
            self.seq += 1;
            shared.holds = Some((self.id, self.seq));
        });
        self.remember(data);
    }

    /// Keeps the last [`DEFLATE_WINDOW`] bytes of everything compressed.
    fn remember(&mut self, data: &[u8]) {
        let data = &data[data.len().saturating_sub(DEFLATE_WINDOW)..];
        let excess = (self.history.len() + data.len()).saturating_sub(DEFLATE_WINDOW);
        self.history.drain(..excess);
        // Grown in steps up to the window, no further: a quiet link keeps a few hundred bytes.
        let need = self.history.len() + data.len();
        if need > self.history.capacity() {
            let cap = (self.history.capacity() * 2).clamp(need, DEFLATE_WINDOW);
            self.history.reserve_exact(cap - self.history.len());
        }
        self.history.extend_from_slice(data);
    }
}

/// Compresses all of `data` onto `out` with a sync flush.
fn deflate_sync(z: &mut Compress, data: &[u8], out: &mut Vec<u8>) {
    let mut input = data;
    loop {
        out.reserve(input.len() / 2 + 64);
        let in0 = z.total_in();
        // Writing into a Vec with spare room cannot fail.
        z.compress_vec(input, out, FlushCompress::Sync)
            .expect("deflate into a Vec");
        let used = (z.total_in() - in0) as usize;
        input = &input[used..];
        // A sync flush is complete when everything is consumed and room was left over.
        if input.is_empty() && out.len() < out.capacity() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_inflate_as_soon_as_they_are_flushed() {
        let mut d = Deflater::new();
        let mut i = Inflater::new();
        let mut wire = Vec::new();
        for batch in [&b"first batch"[..], b"second", &[0u8; 100_000][..]] {
            wire.clear();
            d.compress(batch, &mut wire);
            assert_eq!(inflate_all(&mut i, &wire), batch);
        }
    }

    #[test]
    fn a_bomb_inflates_one_bounded_step_at_a_time() {
        let mut d = Deflater::new();
        let mut wire = Vec::new();
        d.compress(&vec![0u8; 10 << 20], &mut wire);
        assert!(wire.len() < 20_000);
        let mut i = Inflater::new();
        let mut out = Vec::new();
        let (used, made) = i.inflate(&wire, &mut out).unwrap();
        assert!(made == INFLATE_STEP && used < wire.len(), "{used} {made}");
        assert_eq!(out.len(), INFLATE_STEP);
    }

    #[test]
    fn output_held_back_by_a_full_step_comes_out_without_more_input() {
        // Long runs, arriving a few bytes at a time as TCP may cut them: a read can end right
        // after a match that stands for more than the step has room for, so zlib has taken
        // all the input and still owes output. The caller's loop (as in `read_loop`) must get
        // it with an empty input.
        let len = 3 * INFLATE_STEP + 100;
        let mut wire = Vec::new();
        Deflater::new().compress(&vec![7u8; len], &mut wire);
        for piece in (1..12).chain(80..200) {
            let mut i = Inflater::new();
            let mut out = Vec::new();
            // Inflates each prefix with room to spare: what `out` must hold after each piece.
            let mut reference = Decompress::new(true);
            let mut all = vec![0u8; len];
            for chunk in wire.chunks(piece) {
                let done = reference.total_out() as usize;
                reference
                    .decompress(chunk, &mut all[done..], FlushDecompress::Sync)
                    .unwrap();
                let mut pos = 0;
                loop {
                    let (used, made) = i.inflate(&chunk[pos..], &mut out).unwrap();
                    assert!(made <= INFLATE_STEP);
                    pos += used;
                    if used == 0 && made == 0 {
                        break;
                    }
                }
                assert_eq!(pos, chunk.len());
                assert_eq!(out.len() as u64, reference.total_out(), "pieces of {piece}");
            }
            assert_eq!(out.len(), len, "pieces of {piece}");
            // Nothing held back: an empty input leaves `out` alone.
            let cap = out.capacity();
            assert_eq!(i.inflate(&[], &mut out).unwrap(), (0, 0));
            assert_eq!(out.capacity(), cap);
        }
    }

    /// Inflates all of `wire` with a fresh standard zlib inflater (window 15).
    fn inflate_all(i: &mut Inflater, wire: &[u8]) -> Vec<u8> {
        let mut got = Vec::new();
        let mut pos = 0;
        loop {
            let (used, made) = i.inflate(&wire[pos..], &mut got).unwrap();
            pos += used;
            if used == 0 && made == 0 {
                break;
            }
        }
        assert_eq!(pos, wire.len());
        got
    }

    #[test]
    fn the_header_declares_the_window_and_passes_its_check() {
        assert_eq!(zlib_header(15), [0x78, 0x9c]);
        for bits in 8..=15 {
            let [cmf, flg] = zlib_header(bits);
            assert_eq!(((u16::from(cmf) << 8) | u16::from(flg)) % 31, 0, "{bits}");
            assert_eq!(cmf >> 4, bits - 8);
            assert_eq!(flg & 0x20, 0, "no preset dictionary");
        }
    }

    #[test]
    fn links_sharing_a_thread_and_moving_between_threads_stay_decodable() {
        // Three links interleaved on one thread, then carried on by other threads: every
        // batch after the first must refer back into that link's own history only.
        let mut links: Vec<(Deflater, Inflater)> =
            (0..3).map(|_| (Deflater::new(), Inflater::new())).collect();
        let text = |l: usize, n: usize| format!("link {l} says: free music {n} ").repeat(20);
        let mut sizes = Vec::new();
        for n in 0..20 {
            for (l, (d, i)) in links.iter_mut().enumerate() {
                let batch = text(l, n % 4);
                let mut wire = Vec::new();
                d.compress(batch.as_bytes(), &mut wire);
                assert_eq!(inflate_all(i, &wire), batch.as_bytes());
                sizes.push(wire.len());
            }
        }
        // A batch seen before (n % 4) compresses to a few bytes from the history, even after
        // another link used the thread's compressor in between.
        assert!(sizes[3 * 5..].iter().all(|&s| s < 40), "{sizes:?}");
        for round in 0..4 {
            links = std::thread::spawn(move || {
                for (l, (d, i)) in links.iter_mut().enumerate() {
                    let batch = text(l, round);
                    let mut wire = Vec::new();
                    d.compress(batch.as_bytes(), &mut wire);
                    assert!(wire.len() < 40);
                    assert_eq!(inflate_all(i, &wire), batch.as_bytes());
                }
                links
            })
            .join()
            .unwrap();
        }
    }

    #[test]
    fn a_peer_stream_with_a_32_kib_window_inflates() {
        // gtk-gnutella deflates with window bits 15: matches reach back up to 32 KiB.
        let mut z = Compress::new(Compression::default(), true);
        // Incompressible bytes, so only the repeat 30 000 bytes back can shrink the second copy.
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let block: Vec<u8> = (0..30_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut wire = Vec::new();
        for _ in 0..2 {
            let mut input = &block[..];
            while !input.is_empty() || wire.len() == wire.capacity() {
                wire.reserve(64 * 1024);
                let before = z.total_in();
                z.compress_vec(input, &mut wire, FlushCompress::Sync)
                    .unwrap();
                input = &input[(z.total_in() - before) as usize..];
            }
        }
        assert!(
            wire.len() < block.len() + 1000,
            "the repeat refers 30 KB back"
        );
        let got = inflate_all(&mut Inflater::new(), &wire);
        assert_eq!(got.len(), 2 * block.len());
        assert!(got[..block.len()] == block[..] && got[block.len()..] == block[..]);
    }

    #[test]
    fn garbage_is_reported_not_panicked_on() {
        let mut i = Inflater::new();
        let mut out = Vec::new();
        assert!(i.inflate(b"this is not zlib at all", &mut out).is_err());
    }
}
