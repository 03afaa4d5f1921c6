//! Byte searches tuned for the short fields of descriptors: a query's criteria and its
//! extension items are a few to a few dozen bytes. There `memchr`'s dispatch and set-up cost
//! more than the search itself, so the first [`SHORT`] bytes are scanned a word (8 bytes) at a
//! time; anything longer goes on with `memchr`, which wins once the haystack is long.
//!
//! Hit results, twenty such fields back to back, get [`Marks`] instead: a bitmask of the NUL
//! and 0xC3 bytes of the whole results area, 64 bytes at a time. (The word search was slower
//! there than `memchr`: names and `urn:sha1` areas run past [`SHORT`] and pay for both.)
//!
//! A word `w` holds the needle in a byte exactly where `w ^ needle×8` has a zero byte. The
//! classic test `(x - 0x01…) & !x & 0x80…` sets the high bit of every zero byte, and may also
//! set it in bytes *above* a zero byte (the borrow runs upwards), never below one; so its
//! lowest set bit, read little-endian, is exactly the first match. Or-ing the masks of two
//! needles keeps that true.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Bytes scanned a word at a time before handing over to `memchr`.
const SHORT: usize = 32;

/// High bit set in (at least) the lowest byte of `w` equal to the byte in `rep` (`b × LO`).
#[inline(always)]
fn matches(w: u64, rep: u64) -> u64 {
    let x = w ^ rep;
    x.wrapping_sub(LO) & !x & HI
}

#[inline(always)]
fn word(c: &[u8; 8]) -> u64 {
    u64::from_le_bytes(*c)
}

/// The first `a` or `b` in `hay` (pass `a == b` for one needle).
#[inline(always)]
fn find_with(hay: &[u8], a: u8, b: u8, long: impl FnOnce(&[u8]) -> Option<usize>) -> Option<usize> {
    let (ra, rb) = (LO * u64::from(a), LO * u64::from(b));
    let found = |w: u64| matches(w, ra) | matches(w, rb);
    if hay.len() < 8 {
        return hay.iter().position(|&c| c == a || c == b);
    }
    let head = &hay[..hay.len().min(SHORT)];
    let mut at = 0;
    while let Some(c) = head.get(at..at + 8) {
        let m = found(word(c.try_into().expect("8 bytes")));
        if m != 0 {
            return Some(at + (m.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    if at < head.len() {
        // The last word of `head`, overlapping bytes already known not to match.
        let last = head.len() - 8;
        let m = found(word(head[last..].try_into().expect("8 bytes")));
        if m != 0 {
            return Some(last + (m.trailing_zeros() / 8) as usize);
        }
    }
    let done = head.len();
    long(&hay[done..]).map(|n| done + n)
}

/// The first NUL in `hay`.
#[inline]
pub(crate) fn nul(hay: &[u8]) -> Option<usize> {
    find_with(hay, 0, 0, |h| memchr::memchr(0, h))
}

/// The first `a` or `b` in `hay`.
#[inline]
pub(crate) fn either(hay: &[u8], a: u8, b: u8) -> Option<usize> {
    find_with(hay, a, b, |h| memchr::memchr2(a, b, h))
}

/// Where the NUL and 0xC3 (GGEP magic) bytes of a buffer are, 64 bytes at a time, for a walk
/// that moves forward: a hit's results. A hit of ten results is ~800 bytes with twenty
/// NUL-terminated fields; one pass of 16-byte compares over the whole buffer, then a bit
/// scan per field, costs much less than twenty searches that each pay their own set-up.
/// Both bytes share one mask (the caller reads the byte found to tell them apart): 0xC3 is
/// rare outside GGEP, and one mask is cheaper to build than two.
pub(crate) struct Marks<'a> {
    hay: &'a [u8],
    /// Offset of the 64-byte block `marks` describes; a multiple of 64.
    base: usize,
    /// Bit `i` set when `hay[base + i]` is NUL or 0xC3. Past the end of `hay`, clear.
    marks: u64,
}

impl<'a> Marks<'a> {
    pub(crate) fn new(hay: &'a [u8]) -> Self {
        let mut m = Marks {
            hay,
            base: 0,
            marks: 0,
        };
        m.load(0);
        m
    }

    fn load(&mut self, base: usize) {
        self.base = base;
        self.marks = match self.hay.get(base..base + 64) {
            Some(block) => marks(block.try_into().expect("64 bytes")),
            None => {
                // The last, partial block, padded with a byte that is neither NUL nor 0xC3.
                let tail = &self.hay[base.min(self.hay.len())..];
                let mut padded = [1u8; 64];
                padded[..tail.len()].copy_from_slice(tail);
                marks(&padded)
            }
        };
    }

    /// The first NUL or 0xC3 at or after `from`. Cheapest when `from` stays in or after the
    /// block of the previous answer; any `from` is right.
    #[inline]
    pub(crate) fn first(&mut self, mut from: usize) -> Option<usize> {
        loop {
            // Wraps when `from` is before the block, so one comparison catches both sides.
            let mut off = from.wrapping_sub(self.base);
            if off >= 64 {
                if from >= self.hay.len() {
                    return None;
                }
                self.load(from & !63);
                off = from & 63;
            }
            let m = self.marks >> off;
            if m != 0 {
                return Some(from + m.trailing_zeros() as usize);
            }
            from = self.base + 64;
        }
    }

    /// The first NUL at or after `from`, stepping over 0xC3 bytes.
    #[inline]
    pub(crate) fn nul(&mut self, mut from: usize) -> Option<usize> {
        loop {
            let n = self.first(from)?;
            if self.hay[n] == 0 {
                return Some(n);
            }
            from = n + 1;
        }
    }
}

/// Bit `i` set when `block[i]` is NUL or 0xC3.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
fn marks(block: &[u8; 64]) -> u64 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
        _mm_setzero_si128,
    };
    let mut marks = 0u64;
    for (k, q) in block.chunks_exact(16).enumerate() {
        // SAFETY: `q` is 16 readable bytes and `_mm_loadu_si128` accepts any alignment; the
        // SSE2 intrinsics need SSE2, which the `cfg` above guarantees at compile time (it is
        // part of the x86_64 baseline).
        let m = unsafe {
            let v = _mm_loadu_si128(q.as_ptr().cast());
            _mm_movemask_epi8(_mm_or_si128(
                _mm_cmpeq_epi8(v, _mm_setzero_si128()),
                _mm_cmpeq_epi8(v, _mm_set1_epi8(0xC3u8 as i8)),
            ))
        };
        marks |= u64::from(m as u16) << (16 * k);
    }
    marks
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline]
fn marks(block: &[u8; 64]) -> u64 {
    marks_swar(block)
}

/// [`marks`] a word at a time, for targets without SSE2.
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
fn marks_swar(block: &[u8; 64]) -> u64 {
    const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    // 0x80 in exactly the zero bytes of `x` (no borrow, so no false positives).
    let zeros = |x: u64| !(((x & LOW7).wrapping_add(LOW7)) | x | LOW7);
    let mut marks = 0u64;
    for (k, c) in block.chunks_exact(8).enumerate() {
        let w = word(c.try_into().expect("8 bytes"));
        let hi = zeros(w) | zeros(w ^ (LO * 0xC3));
        // Those eight high bits gathered into one byte, bit `i` for byte `i`.
        marks |= ((hi >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) << (8 * k);
    }
    marks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_a_plain_search_at_every_length_and_position() {
        for len in 0..100 {
            for at in 0..=len {
                let mut hay: Vec<u8> = (0..len).map(|i| 0x41 + (i % 26) as u8).collect();
                // A byte that only the borrow of the word test could mistake for a match.
                if at + 1 < len {
                    hay[at + 1] = 0x01;
                }
                let want = (at < len).then_some(at);
                if at < len {
                    hay[at] = 0;
                }
                assert_eq!(nul(&hay), want, "nul, len {len} at {at}");
                if at < len {
                    hay[at] = 0xC3;
                }
                assert_eq!(either(&hay, 0x1C, 0xC3), want, "either, len {len} at {at}");
                hay.push(0x1C);
                assert_eq!(
                    either(&hay, 0x1C, 0xC3),
                    Some(want.unwrap_or(len)),
                    "either with a later 0x1C, len {len} at {at}"
                );
            }
        }
    }

    fn marks_by_hand(block: &[u8; 64]) -> u64 {
        block
            .iter()
            .enumerate()
            .filter(|&(_, &c)| c == 0 || c == 0xC3)
            .fold(0u64, |m, (i, _)| m | 1 << i)
    }

    #[test]
    fn block_marks_are_exactly_the_nul_and_magic_bytes() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for round in 0..2000 {
            let mut block = [0u8; 64];
            for b in block.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Mostly the bytes around the ones searched for, where a borrow could leak.
                *b = match x % 8 {
                    0 => 0,
                    1 => 0xC3,
                    2 => 0x01,
                    3 => 0xC2,
                    4 => 0xC4,
                    5 => 0x80,
                    _ => (x >> 8) as u8,
                };
            }
            if round == 0 {
                block = [0; 64];
            }
            assert_eq!(marks(&block), marks_by_hand(&block));
            assert_eq!(marks_swar(&block), marks_by_hand(&block));
        }
    }

    #[test]
    fn marks_find_what_a_plain_search_finds() {
        for len in [0, 1, 63, 64, 65, 127, 128, 200] {
            let hay: Vec<u8> = (0..len)
                .map(|i| match (i * 7) % 11 {
                    0 => 0,
                    1 => 0xC3,
                    _ => b'a',
                })
                .collect();
            let mut walk = Marks::new(&hay);
            for from in 0..=len {
                let want_nul = hay[from..].iter().position(|&b| b == 0).map(|n| from + n);
                let want_any = hay[from..]
                    .iter()
                    .position(|&b| b == 0 || b == 0xC3)
                    .map(|n| from + n);
                assert_eq!(
                    Marks::new(&hay).nul(from),
                    want_nul,
                    "len {len} from {from}"
                );
                assert_eq!(
                    Marks::new(&hay).first(from),
                    want_any,
                    "len {len} from {from}"
                );
                assert_eq!(
                    walk.first(from),
                    want_any,
                    "one walk, len {len} from {from}"
                );
                assert_eq!(walk.nul(from), want_nul, "one walk, len {len} from {from}");
            }
        }
    }

    #[test]
    fn finds_every_byte_value() {
        for b in 0..=255u8 {
            let mut hay = [if b == 0x55 { 0xAA } else { 0x55 }; 40];
            for at in [0, 7, 8, 15, 31, 32, 33, 39] {
                let mut h = hay;
                h[at] = b;
                assert_eq!(either(&h, b, b), Some(at));
                if b == 0 {
                    assert_eq!(nul(&h), Some(at));
                }
            }
            hay[39] = b;
            assert_eq!(either(&hay, b, b), Some(39));
        }
    }
}
