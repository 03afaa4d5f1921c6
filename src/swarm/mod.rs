//! The swarming layer's pure parts (SWARM.md §1.3, §2): byte-range sets and the
//! `X-Available-Ranges` header (`ranges`), alternate-location headers `X-Alt`, `X-Nalt`,
//! `X-Falt` and the legacy `Alternate-MeshEntry` (`altloc`), and the download mesh with its bans
//! and per-peer diff log (`mesh`). No I/O and no clock: time and randomness are parameters, so
//! the transfer layer drives these types and tests run hours of mesh life in virtual time.
//!
//! gtk-gnutella (tag v1.2.3) is the reference; each bound names its source beside it.

pub mod altloc;
pub mod choke;
pub mod mesh;
pub mod parq;
pub mod queue;
pub mod ranges;

pub use altloc::{AltError, AltLoc, DatedAltLoc, FwAltLoc};
pub use mesh::{AddOutcome, Lifetime, Mesh, MeshEntry, NegativeOutcome, SelectFilter, SentLog};
pub use ranges::{AvailableHeaders, RangeSet, RangesError};

/// A uniform index in `0..n` from a caller-supplied 64-bit random source (`n > 0`).
///
/// Multiply-shift keeps the bias below 2^-64 × n, which is nothing for n ≤ a few thousand, and
/// needs no rejection loop (so a constant `rng` in tests cannot hang it).
pub(crate) fn random_below(rng: &mut impl FnMut() -> u64, n: usize) -> usize {
    debug_assert!(n > 0);
    // The product of a u64 and a usize (≤ 64 bits) fits u128; after `>> 64` it is < n.
    ((u128::from(rng()) * n as u128) >> 64) as usize
}

/// Fisher–Yates shuffle driven by the caller's random source (gtkg `SHUFFLE_ARRAY_N`).
pub(crate) fn shuffle<T>(items: &mut [T], rng: &mut impl FnMut() -> u64) {
    for i in (1..items.len()).rev() {
        let j = random_below(rng, i + 1);
        items.swap(i, j);
    }
}

/// Length of a whole header line `Name: value\r\n`: the unit of every byte budget here, as in
/// gtkg's `header_fmt` (`src/lib/header.c`), which counts the name, `": "` and the CRLF.
pub(crate) fn header_line_len(name: &str, value_len: usize) -> usize {
    name.len() + 2 + value_len + 2
}

/// ASCII blanks, including CR and LF: header values may reach us with obs-fold line breaks
/// left inside them (SWARM.md §8.1), and those must read as spaces.
pub(crate) fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c)
}

/// `s` without leading and trailing [`is_blank`] bytes.
pub(crate) fn trim_blanks(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii() && is_blank(c as u8))
}

/// Whether `s` starts with the ASCII `prefix`, ignoring ASCII case.
pub(crate) fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

#[cfg(test)]
pub(crate) mod testutil {
    /// A small xorshift64* generator for tests: deterministic, no RNG crate.
    pub(crate) struct XorShift(pub u64);

    impl XorShift {
        pub(crate) fn next_u64(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        /// Pseudo-random bytes drawn from `alphabet` (or any byte when it is empty).
        pub(crate) fn bytes(&mut self, len: usize, alphabet: &[u8]) -> Vec<u8> {
            (0..len)
                .map(|_| {
                    let r = self.next_u64();
                    if alphabet.is_empty() {
                        r as u8
                    } else {
                        alphabet[(r % alphabet.len() as u64) as usize]
                    }
                })
                .collect()
        }
    }

    /// A random source closure over an [`XorShift`] seeded with `seed`.
    pub(crate) fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut x = XorShift(seed | 1);
        move || x.next_u64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_is_a_permutation_and_random_below_stays_in_range() {
        let mut rng = testutil::rng(7);
        let mut v: Vec<u32> = (0..50).collect();
        shuffle(&mut v, &mut rng);
        let mut sorted = v.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(v, sorted, "50 items shuffled into identity order is ~1/50!");
        for n in 1..100 {
            assert!(random_below(&mut rng, n) < n);
        }
        let mut max = || u64::MAX;
        assert_eq!(random_below(&mut max, 10), 9);
    }

    #[test]
    fn blanks_include_folding_bytes() {
        assert_eq!(trim_blanks("\r\n\t x \t\r\n"), "x");
        assert!(starts_with_ci("TLS=8", "tls="));
        assert!(!starts_with_ci("tl", "tls="));
        assert_eq!(header_line_len("X-Alt", 7), 5 + 2 + 7 + 2);
    }
}
