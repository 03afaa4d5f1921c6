//! Link compression (PROTOCOL.md §4, gtk-gnutella `tx_deflate.c`, `rx_inflate.c`): one zlib
//! stream per direction over all descriptors after the handshake, sync-flushed so a peer can
//! decode every batch as soon as it arrives.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Inflated bytes produced per step. The framer consumes them before the next step, so a
/// decompression bomb costs time in steps of this size, never memory.
pub const INFLATE_STEP: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("compressed stream is corrupt")]
    Corrupt,
    #[error("compressed stream ended")]
    Ended,
}

pub struct Inflater {
    z: Decompress,
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
        }
    }

    /// Inflates from `input` onto `out`, at most [`INFLATE_STEP`] bytes. Returns (bytes of
    /// input used, bytes produced); (0, 0) means `input` needs more bytes to go on.
    pub fn inflate(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(usize, usize), LinkError> {
        let start = out.len();
        out.resize(start + INFLATE_STEP, 0);
        let (in0, out0) = (self.z.total_in(), self.z.total_out());
        let status = self
            .z
            .decompress(input, &mut out[start..], FlushDecompress::Sync)
            .map_err(|_| LinkError::Corrupt);
        let used = (self.z.total_in() - in0) as usize;
        let made = (self.z.total_out() - out0) as usize;
        out.truncate(start + made);
        match status? {
            Status::StreamEnd => Err(LinkError::Ended),
            _ => Ok((used, made)),
        }
    }
}

pub struct Deflater {
    z: Compress,
}

impl Default for Deflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Deflater {
    pub fn new() -> Self {
        Deflater {
            z: Compress::new(Compression::default(), true),
        }
    }

    /// Compresses `data` onto `out` and sync-flushes, so the peer can inflate all of it now.
    pub fn compress(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let mut input = data;
        loop {
            out.reserve(input.len() / 2 + 64);
            let in0 = self.z.total_in();
            // Writing into a Vec with spare room cannot fail.
            self.z
                .compress_vec(input, out, FlushCompress::Sync)
                .expect("deflate into a Vec");
            let used = (self.z.total_in() - in0) as usize;
            input = &input[used..];
            // A sync flush is complete when everything is consumed and room was left over.
            if input.is_empty() && out.len() < out.capacity() {
                return;
            }
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
        let mut got = Vec::new();
        for batch in [&b"first batch"[..], b"second", &[0u8; 100_000][..]] {
            wire.clear();
            d.compress(batch, &mut wire);
            let start = got.len();
            let mut pos = 0;
            loop {
                let (used, made) = i.inflate(&wire[pos..], &mut got).unwrap();
                pos += used;
                if used == 0 && made == 0 {
                    break;
                }
            }
            assert_eq!(pos, wire.len());
            assert_eq!(&got[start..], batch);
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
    fn garbage_is_reported_not_panicked_on() {
        let mut i = Inflater::new();
        let mut out = Vec::new();
        assert!(i.inflate(b"this is not zlib at all", &mut out).is_err());
    }
}
