//! Byte-range sets of a file and the PFSP headers that carry them (SWARM.md §1.3):
//! `X-Available-Ranges: bytes 0-1048575, 2097152-3145727` (which bytes a partial source holds)
//! and `X-Available: bytes 2621440` (how many, when the list did not fit). A [`RangeSet`] is
//! what we hold of a file, what a source says it holds, and what is left to fetch.
//!
//! Ranges are half-open `[start, end)` in memory and inclusive `a-b` on the wire, as in HTTP.

use std::ops::Range;

use super::{header_line_len, is_blank, shuffle, starts_with_ci};

/// Most ranges a parsed `X-Available-Ranges` may list; more and the value is refused.
///
/// Why 1024: gtkg caps a whole 2xx/416 reply header at 3072 bytes (`http.c`), and the shortest
/// range token (`0-0, `) takes 5, so no gtkg reply can carry more than ~600 ranges; 1024 leaves
/// room for other servents while bounding what one header makes us allocate and merge
/// (1024 × 16 B, and at most 1024 insertions). Sets we build ourselves from our own chunks are
/// not capped: they are bounded by the file size over our chunk size instead.
pub const MAX_RANGES: usize = 1024;

/// Longest `X-Available-Ranges` / `X-Available` value we parse (64 KiB, ours): 20 times the
/// largest reply header gtkg sends (3072 B, `http.c`), so no honest value comes near it.
pub const MAX_RANGES_VALUE_LEN: usize = 64 * 1024;

/// Budget gtkg gives the ranges in "only mandatory fields" replies (`uploads.c RANGES_SIZE`).
pub const RANGES_SIZE: usize = 120;

/// Header name for the range list.
pub const X_AVAILABLE_RANGES: &str = "X-Available-Ranges";

/// Header name for the byte count sent when the list does not fit (gtkg
/// `fileinfo.c file_info_available_ranges`).
pub const X_AVAILABLE: &str = "X-Available";

/// Why an `X-Available-Ranges` or `X-Available` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangesError {
    /// The value does not start with the `bytes` unit (the only unit PFSP knows).
    #[error("no `bytes` unit")]
    NoUnit,
    /// A range whose first byte comes after its last (`a-b` with a > b).
    #[error("inverted range {start}-{end}")]
    Inverted {
        /// First byte as written.
        start: u64,
        /// Last byte as written.
        end: u64,
    },
    /// A character that cannot stand where a byte offset is expected.
    #[error("not a number at byte {offset}")]
    NotNumeric {
        /// Byte offset of the character in the value.
        offset: usize,
    },
    /// A number that does not fit 64 bits.
    #[error("number at byte {offset} overflows 64 bits")]
    Overflow {
        /// Byte offset of the number's first digit.
        offset: usize,
    },
    /// A range with no `-` (`bytes 100`), or a suffix range (`-500`) in a list of held bytes.
    #[error("malformed range at byte {offset}")]
    Malformed {
        /// Byte offset where the range starts.
        offset: usize,
    },
    /// More than [`MAX_RANGES`] range tokens: refused before allocating for them.
    #[error("more than {max} ranges")]
    TooManyRanges {
        /// The bound, [`MAX_RANGES`].
        max: usize,
    },
    /// The value is longer than [`MAX_RANGES_VALUE_LEN`].
    #[error("value is {len} bytes, more than {max}")]
    TooLong {
        /// Length of the value.
        len: usize,
        /// The bound.
        max: usize,
    },
}

impl RangesError {
    /// Stable identifier of the variant, for logs, counters and conformance files.
    pub fn code(&self) -> &'static str {
        match self {
            RangesError::NoUnit => "no_unit",
            RangesError::Inverted { .. } => "inverted",
            RangesError::NotNumeric { .. } => "not_numeric",
            RangesError::Overflow { .. } => "overflow",
            RangesError::Malformed { .. } => "malformed",
            RangesError::TooManyRanges { .. } => "too_many_ranges",
            RangesError::TooLong { .. } => "too_long",
        }
    }
}

/// A set of byte ranges of one file: sorted, merged, half-open.
///
/// Invariant: every stored `(start, end)` has `start < end`, and each range ends strictly
/// before the next one starts (touching ranges are merged), so equal sets have equal vectors
/// and "covered" means "inside one stored range".
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RangeSet {
    ranges: Vec<(u64, u64)>,
}

/// What to put in a reply for the bytes we hold, within a byte budget
/// ([`RangeSet::format_available_within`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AvailableHeaders {
    /// Value of `X-Available-Ranges`, if any range fitted.
    pub ranges: Option<String>,
    /// Value to send as `X-Available: bytes <n>` when `ranges` is only a subset (or absent for
    /// lack of room), so that the peer knows how much we really hold.
    pub x_available: Option<u64>,
}

impl RangeSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The whole file `[0, size)` (empty when `size` is 0).
    pub fn full(size: u64) -> Self {
        let mut s = Self::new();
        s.insert(0, size);
        s
    }

    /// Whether no byte is covered.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Number of disjoint ranges.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// The ranges in file order.
    pub fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.ranges.iter().map(|&(s, e)| s..e)
    }

    /// Adds `[start, end)`, merging with every range it overlaps or touches. Empty or
    /// inverted input is ignored.
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        // First stored range that ends at or after `start` (it may touch or overlap).
        let lo = self.ranges.partition_point(|&(_, e)| e < start);
        // First stored range that starts strictly after `end` (it cannot merge).
        let hi = self.ranges.partition_point(|&(s, _)| s <= end);
        if lo == hi {
            self.ranges.insert(lo, (start, end));
            return;
        }
        let new_start = start.min(self.ranges[lo].0);
        let new_end = end.max(self.ranges[hi - 1].1);
        self.ranges[lo] = (new_start, new_end);
        self.ranges.drain(lo + 1..hi);
    }

    /// Removes `[start, end)`, splitting a range that contains it.
    pub fn remove(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let lo = self.ranges.partition_point(|&(_, e)| e <= start);
        let hi = self.ranges.partition_point(|&(s, _)| s < end);
        if lo >= hi {
            return;
        }
        let mut keep = Vec::with_capacity(2);
        let (first_start, _) = self.ranges[lo];
        let (_, last_end) = self.ranges[hi - 1];
        if first_start < start {
            keep.push((first_start, start));
        }
        if last_end > end {
            keep.push((end, last_end));
        }
        self.ranges.splice(lo..hi, keep);
    }

    /// Whether every byte of `[start, end)` is in the set (an empty range is always covered).
    pub fn contains_range(&self, start: u64, end: u64) -> bool {
        if start >= end {
            return true;
        }
        let i = self.ranges.partition_point(|&(_, e)| e <= start);
        self.ranges
            .get(i)
            .is_some_and(|&(s, e)| s <= start && end <= e)
    }

    /// Whether byte `offset` is in the set.
    pub fn contains(&self, offset: u64) -> bool {
        offset < u64::MAX && self.contains_range(offset, offset + 1)
    }

    /// Number of bytes covered (what `X-Available: bytes <n>` carries).
    pub fn covered_len(&self) -> u64 {
        self.ranges.iter().map(|&(s, e)| e - s).sum()
    }

    /// The first run of bytes at or after `from` and below `size` that is *not* in the set:
    /// where a downloader's next request can start.
    pub fn first_gap_from(&self, from: u64, size: u64) -> Option<Range<u64>> {
        let mut pos = from;
        let i = self.ranges.partition_point(|&(_, e)| e <= pos);
        for &(s, e) in &self.ranges[i..] {
            if pos >= size {
                return None;
            }
            if s > pos {
                return Some(pos..s.min(size));
            }
            pos = pos.max(e);
        }
        (pos < size).then_some(pos..size)
    }

    /// Bytes in both sets (e.g. what a source holds of what we still miss).
    pub fn intersect(&self, other: &RangeSet) -> RangeSet {
        let mut out = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < self.ranges.len() && j < other.ranges.len() {
            let (a0, a1) = self.ranges[i];
            let (b0, b1) = other.ranges[j];
            let s = a0.max(b0);
            let e = a1.min(b1);
            if s < e {
                out.push((s, e));
            }
            if a1 < b1 {
                i += 1;
            } else {
                j += 1;
            }
        }
        // Pieces of two merged sets are disjoint and ordered, and cannot touch: a gap of
        // either set separates them.
        RangeSet { ranges: out }
    }

    /// Adds every range of `other` (how a downloader merges the random subsets a source sends,
    /// gtkg `downloads.c update_available_ranges`).
    pub fn union_with(&mut self, other: &RangeSet) {
        for &(s, e) in &other.ranges {
            self.insert(s, e);
        }
    }

    /// The complement within `[0, size)`: what is still missing of a file of `size` bytes.
    pub fn missing(&self, size: u64) -> RangeSet {
        let mut out = Vec::new();
        let mut pos = 0;
        for &(s, e) in &self.ranges {
            if s >= size {
                break;
            }
            if s > pos {
                out.push((pos, s));
            }
            pos = e;
        }
        if pos < size {
            out.push((pos, size));
        }
        RangeSet { ranges: out }
    }

    /// The `X-Available-Ranges` value as gtkg writes it: `bytes 0-1048575, 2097152-3145727`,
    /// inclusive ends, file order, `", "` between ranges, never folded (SWARM.md §8.1). An
    /// empty set gives `bytes` alone, LimeWire's "partial, nothing yet" (§8.19).
    pub fn format_available(&self) -> String {
        let mut s = String::from("bytes");
        for (i, &(a, b)) in self.ranges.iter().enumerate() {
            s.push_str(if i == 0 { " " } else { ", " });
            push_range(&mut s, a, b);
        }
        s
    }

    /// The ranges headers within `budget_bytes` for the whole header lines (`Name: value\r\n`
    /// each), as gtkg's `fileinfo.c file_info_available_ranges` does: the full list when it
    /// fits; otherwise `X-Available: bytes <covered>` first, then, in what remains, ranges
    /// taken in random order (`rng`) and kept when they fit, so that a peer merging several
    /// replies ends up with all of them. Kept ranges are written in file order (gtkg writes
    /// them in the random order; the peer merges either way).
    pub fn format_available_within(
        &self,
        budget_bytes: usize,
        rng: &mut impl FnMut() -> u64,
    ) -> AvailableHeaders {
        let full = self.format_available();
        if header_line_len(X_AVAILABLE_RANGES, full.len()) <= budget_bytes {
            return AvailableHeaders {
                ranges: Some(full),
                x_available: None,
            };
        }
        if self.ranges.is_empty() {
            return AvailableHeaders::default();
        }
        let done = self.covered_len();
        let xa_len = header_line_len(X_AVAILABLE, "bytes ".len() + decimal_len(done));
        if xa_len > budget_bytes {
            return AvailableHeaders::default();
        }
        let room = budget_bytes - xa_len;
        let mut order: Vec<usize> = (0..self.ranges.len()).collect();
        shuffle(&mut order, rng);
        let mut chosen = Vec::new();
        // Length of "bytes " + ranges + ", " separators: independent of the order written.
        let mut value_len = "bytes".len();
        for i in order {
            let (a, b) = self.ranges[i];
            let piece = decimal_len(a) + 1 + decimal_len(b - 1);
            let sep = if chosen.is_empty() { 1 } else { 2 };
            if header_line_len(X_AVAILABLE_RANGES, value_len + sep + piece) <= room {
                value_len += sep + piece;
                chosen.push(i);
            }
        }
        let ranges = if chosen.is_empty() {
            None
        } else {
            chosen.sort_unstable();
            let mut s = String::with_capacity(value_len);
            s.push_str("bytes");
            for (k, &i) in chosen.iter().enumerate() {
                s.push_str(if k == 0 { " " } else { ", " });
                let (a, b) = self.ranges[i];
                push_range(&mut s, a, b);
            }
            Some(s)
        };
        AvailableHeaders {
            ranges,
            x_available: Some(done),
        }
    }
}

/// Appends `a-(b-1)`: the inclusive wire form of the half-open `[a, b)`.
fn push_range(s: &mut String, a: u64, b: u64) {
    use std::fmt::Write;
    // Writing to a String cannot fail.
    let _ = write!(s, "{a}-{}", b - 1);
}

fn decimal_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 10 {
        v /= 10;
        n += 1;
    }
    n
}

/// Parses an `X-Available-Ranges` value for a file of `file_size` bytes.
///
/// Accepts `bytes a-b, c-d` (what gtkg sends), `bytes=a-b` (request style), `bytes` alone
/// (LimeWire: partial, nothing yet: the empty set), `a-` (up to the end of the file), blanks
/// anywhere including CR/LF/TAB left by unfolding, empty tokens (`, ,`), and overlapping or
/// unordered ranges, which are merged. Ranges are clamped to the file: a last byte past the end
/// is lowered to `file_size − 1` (gtkg `http_range_parser`), and a range starting at or past
/// the end is dropped. Anything else is a typed error (gtkg skips a bad range and keeps the
/// others; we refuse the value, which the caller may treat as "no ranges given").
pub fn parse_available(value: &str, file_size: u64) -> Result<RangeSet, RangesError> {
    if value.len() > MAX_RANGES_VALUE_LEN {
        return Err(RangesError::TooLong {
            len: value.len(),
            max: MAX_RANGES_VALUE_LEN,
        });
    }
    let b = value.as_bytes();
    let mut p = skip_blanks(b, 0);
    if !starts_with_ci(&value[p..], "bytes") {
        return Err(RangesError::NoUnit);
    }
    p += "bytes".len();
    match b.get(p) {
        None => return Ok(RangeSet::new()),
        Some(&c) if is_blank(c) || c == b'=' => {}
        Some(_) => return Err(RangesError::NoUnit),
    }
    p = skip_blanks(b, p);
    if b.get(p) == Some(&b'=') {
        p = skip_blanks(b, p + 1);
    }
    let mut set = RangeSet::new();
    let mut tokens = 0usize;
    while p < b.len() {
        p = skip_blanks(b, p);
        if p >= b.len() {
            break;
        }
        if b[p] == b',' {
            p += 1; // empty token
            continue;
        }
        tokens += 1;
        if tokens > MAX_RANGES {
            return Err(RangesError::TooManyRanges { max: MAX_RANGES });
        }
        let token_start = p;
        let (start, q) = parse_u64(b, p)?.ok_or(if b[p] == b'-' {
            RangesError::Malformed { offset: p }
        } else {
            RangesError::NotNumeric { offset: p }
        })?;
        p = skip_blanks(b, q);
        if b.get(p) != Some(&b'-') {
            return Err(match b.get(p) {
                None | Some(b',') => RangesError::Malformed {
                    offset: token_start,
                },
                Some(_) => RangesError::NotNumeric { offset: p },
            });
        }
        p = skip_blanks(b, p + 1);
        let last = match b.get(p) {
            None | Some(b',') => None, // `a-`: to the end of the file
            Some(_) => {
                let (v, q) = parse_u64(b, p)?.ok_or(RangesError::NotNumeric { offset: p })?;
                p = skip_blanks(b, q);
                Some(v)
            }
        };
        match b.get(p) {
            None => {}
            Some(b',') => p += 1,
            Some(_) => return Err(RangesError::NotNumeric { offset: p }),
        }
        if let Some(last) = last
            && start > last
        {
            return Err(RangesError::Inverted { start, end: last });
        }
        if start >= file_size {
            continue; // wholly past the end: nothing of it exists
        }
        let last = last.unwrap_or(u64::MAX).min(file_size - 1);
        // last < file_size ≤ u64::MAX, so last + 1 cannot overflow.
        set.insert(start, last + 1);
    }
    Ok(set)
}

/// Parses `X-Available: bytes <n>` (gtkg `downloads.c update_available_ranges`): the number of
/// bytes a partial source holds. The caller clamps it to the file size, as gtkg does.
pub fn parse_x_available(value: &str) -> Result<u64, RangesError> {
    if value.len() > MAX_RANGES_VALUE_LEN {
        return Err(RangesError::TooLong {
            len: value.len(),
            max: MAX_RANGES_VALUE_LEN,
        });
    }
    let b = value.as_bytes();
    let p = skip_blanks(b, 0);
    if !starts_with_ci(&value[p..], "bytes") {
        return Err(RangesError::NoUnit);
    }
    let p = skip_blanks(b, p + "bytes".len());
    let (n, q) = parse_u64(b, p)?.ok_or(RangesError::NotNumeric { offset: p })?;
    let q = skip_blanks(b, q);
    if q < b.len() {
        return Err(RangesError::NotNumeric { offset: q });
    }
    Ok(n)
}

fn skip_blanks(b: &[u8], mut p: usize) -> usize {
    while p < b.len() && is_blank(b[p]) {
        p += 1;
    }
    p
}

/// Decimal digits at `p`: `Ok(None)` when there are none, the value and the end otherwise.
fn parse_u64(b: &[u8], p: usize) -> Result<Option<(u64, usize)>, RangesError> {
    let mut v: u64 = 0;
    let mut q = p;
    while q < b.len() && b[q].is_ascii_digit() {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b[q] - b'0')))
            .ok_or(RangesError::Overflow { offset: p })?;
        q += 1;
    }
    Ok((q > p).then_some((v, q)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm::testutil::{XorShift, rng};

    fn set(r: &[(u64, u64)]) -> RangeSet {
        let mut s = RangeSet::new();
        for &(a, b) in r {
            s.insert(a, b);
        }
        s
    }

    fn v(s: &RangeSet) -> Vec<(u64, u64)> {
        s.iter().map(|r| (r.start, r.end)).collect()
    }

    #[test]
    fn insert_merges_overlapping_and_touching_ranges() {
        let mut s = set(&[(10, 20), (30, 40), (50, 60)]);
        s.insert(20, 30); // touches both neighbours
        assert_eq!(v(&s), [(10, 40), (50, 60)]);
        s.insert(0, 5);
        s.insert(45, 70);
        assert_eq!(v(&s), [(0, 5), (10, 40), (45, 70)]);
        s.insert(3, 100);
        assert_eq!(v(&s), [(0, 100)]);
        s.insert(7, 7); // empty
        s.insert(9, 3); // inverted
        assert_eq!(v(&s), [(0, 100)]);
    }

    #[test]
    fn remove_splits_and_trims() {
        let mut s = set(&[(0, 100)]);
        s.remove(10, 20);
        assert_eq!(v(&s), [(0, 10), (20, 100)]);
        s.remove(5, 30);
        assert_eq!(v(&s), [(0, 5), (30, 100)]);
        s.remove(0, 5);
        s.remove(90, 200);
        assert_eq!(v(&s), [(30, 90)]);
        s.remove(0, 1000);
        assert!(s.is_empty());
    }

    #[test]
    fn queries_cover_gaps_intersections_and_complement() {
        let s = set(&[(0, 10), (20, 30)]);
        assert!(s.contains_range(0, 10));
        assert!(!s.contains_range(5, 25));
        assert!(s.contains_range(25, 25));
        assert!(s.contains(29) && !s.contains(30) && !s.contains(u64::MAX));
        assert_eq!(s.covered_len(), 20);
        assert_eq!(s.first_gap_from(0, 40), Some(10..20));
        assert_eq!(s.first_gap_from(12, 40), Some(12..20));
        assert_eq!(s.first_gap_from(20, 40), Some(30..40));
        assert_eq!(s.first_gap_from(20, 30), None);
        assert_eq!(s.first_gap_from(5, 8), None);
        assert_eq!(RangeSet::new().first_gap_from(3, 8), Some(3..8));
        let t = set(&[(5, 25)]);
        assert_eq!(v(&s.intersect(&t)), [(5, 10), (20, 25)]);
        assert_eq!(v(&s.missing(40)), [(10, 20), (30, 40)]);
        assert_eq!(v(&s.missing(25)), [(10, 20)]);
        assert_eq!(v(&RangeSet::new().missing(5)), [(0, 5)]);
        assert!(RangeSet::full(0).is_empty());
        let mut u = s.clone();
        u.union_with(&t);
        assert_eq!(v(&u), [(0, 30)]);
    }

    #[test]
    fn format_is_gtkg_inclusive_form() {
        let s = set(&[(0, 1048576), (2097152, 3145728), (3670016, 4194304)]);
        assert_eq!(
            s.format_available(),
            "bytes 0-1048575, 2097152-3145727, 3670016-4194303"
        );
        assert_eq!(RangeSet::new().format_available(), "bytes");
    }

    #[test]
    fn swarm_md_sample_parses() {
        let s =
            parse_available("bytes 0-1048575, 2097152-3145727, 3670016-4194303", 4194304).unwrap();
        assert_eq!(
            v(&s),
            [(0, 1048576), (2097152, 3145728), (3670016, 4194304)]
        );
        assert_eq!(parse_x_available("bytes 2621440"), Ok(2621440));
    }

    #[test]
    fn parse_accepts_every_deployed_form() {
        let size = 1000;
        assert_eq!(v(&parse_available("bytes=0-99", size).unwrap()), [(0, 100)]);
        assert_eq!(
            v(&parse_available("bytes = 0-99", size).unwrap()),
            [(0, 100)]
        );
        assert!(parse_available("bytes", size).unwrap().is_empty());
        assert!(parse_available("  BYTES  ", size).unwrap().is_empty());
        assert_eq!(
            v(&parse_available("bytes 0-9,\r\n\t20-29", size).unwrap()),
            [(0, 10), (20, 30)]
        );
        assert_eq!(
            v(&parse_available("bytes 50-99, 0-60, 10 - 20 ,,", size).unwrap()),
            [(0, 100)]
        );
        assert_eq!(
            v(&parse_available("bytes 900-", size).unwrap()),
            [(900, 1000)]
        );
        assert_eq!(
            v(&parse_available("bytes 900-5000", size).unwrap()),
            [(900, 1000)]
        );
        assert!(parse_available("bytes 1000-2000", size).unwrap().is_empty());
        assert!(parse_available("bytes 0-10", 0).unwrap().is_empty());
        assert_eq!(
            v(&parse_available("bytes 0-18446744073709551615", u64::MAX).unwrap()),
            [(0, u64::MAX)]
        );
    }

    #[test]
    fn parse_refuses_with_typed_errors() {
        let e = |s: &str| parse_available(s, 1000).unwrap_err().code();
        assert_eq!(e(""), "no_unit");
        assert_eq!(e("0-99"), "no_unit");
        assert_eq!(e("bits 0-99"), "no_unit");
        assert_eq!(e("bytesx 0-99"), "no_unit");
        assert_eq!(e("bytes 99-0"), "inverted");
        assert_eq!(e("bytes a-b"), "not_numeric");
        assert_eq!(e("bytes 0-x"), "not_numeric");
        assert_eq!(e("bytes 0-1 2"), "not_numeric");
        assert_eq!(e("bytes 0-1\0"), "not_numeric");
        assert_eq!(e("bytes 999999999999999999999-1"), "overflow");
        assert_eq!(e("bytes 1-999999999999999999999"), "overflow");
        assert_eq!(e("bytes 100"), "malformed");
        assert_eq!(e("bytes -500"), "malformed");
        assert_eq!(e("bytes 1-2=3"), "not_numeric");
        let many: Vec<String> = (0..=MAX_RANGES as u64)
            .map(|i| format!("{}-{}", i * 2, i * 2))
            .collect();
        assert_eq!(e(&format!("bytes {}", many.join(", "))), "too_many_ranges");
        assert_eq!(e(&"bytes 0-1, ".repeat(7000)), "too_long");
        assert_eq!(
            parse_x_available("bytes").unwrap_err().code(),
            "not_numeric"
        );
        assert_eq!(parse_x_available("2621440").unwrap_err().code(), "no_unit");
        assert_eq!(
            parse_x_available("bytes 1 2").unwrap_err().code(),
            "not_numeric"
        );
        assert_eq!(
            parse_x_available("bytes 99999999999999999999")
                .unwrap_err()
                .code(),
            "overflow"
        );
    }

    #[test]
    fn exactly_max_ranges_is_accepted() {
        let many: Vec<String> = (0..MAX_RANGES as u64)
            .map(|i| format!("{}-{}", i * 2, i * 2))
            .collect();
        let s = parse_available(&format!("bytes {}", many.join(", ")), u64::MAX).unwrap();
        assert_eq!(s.len(), MAX_RANGES);
        assert_eq!(s.covered_len(), MAX_RANGES as u64);
    }

    #[test]
    fn hostile_values_fail_fast_and_bounded() {
        // 100k ranges in well under the length limit is impossible; 1 MB is refused by length.
        let big = "bytes ".to_string() + &"1-2, ".repeat(200_000);
        assert_eq!(parse_available(&big, 10).unwrap_err().code(), "too_long");
        let lossy = String::from_utf8_lossy(b"bytes 0-\xff\xfe9");
        assert_eq!(
            parse_available(&lossy, 10).unwrap_err().code(),
            "not_numeric"
        );
    }

    #[test]
    fn round_trip_random_sets() {
        let mut x = XorShift(99);
        for _ in 0..200 {
            let mut s = RangeSet::new();
            for _ in 0..(x.next_u64() % 20) {
                let a = x.next_u64() % 10_000;
                let l = 1 + x.next_u64() % 500;
                s.insert(a, a + l);
            }
            let text = s.format_available();
            assert_eq!(parse_available(&text, 20_000).unwrap(), s, "{text}");
        }
    }

    #[test]
    fn within_budget_gives_full_list_when_it_fits() {
        let s = set(&[(0, 1048576), (2097152, 3145728)]);
        let full = s.format_available();
        let line = header_line_len(X_AVAILABLE_RANGES, full.len());
        let h = s.format_available_within(line, &mut rng(1));
        assert_eq!(h.ranges.as_deref(), Some(full.as_str()));
        assert_eq!(h.x_available, None);
    }

    #[test]
    fn within_budget_gives_random_fitting_subset_plus_x_available() {
        let s = set(&(0..200u64)
            .map(|i| (i * 1000, i * 1000 + 500))
            .collect::<Vec<_>>());
        let budget = RANGES_SIZE + 40;
        let mut seen = RangeSet::new();
        // ~8 of 200 ranges per reply: 1000 replies cover all with overwhelming odds.
        for seed in 1..1000 {
            let h = s.format_available_within(budget, &mut rng(seed));
            assert_eq!(h.x_available, Some(s.covered_len()));
            let value = h.ranges.expect("some ranges fit in 160 bytes");
            let xa = header_line_len(X_AVAILABLE, format!("bytes {}", s.covered_len()).len());
            assert!(xa + header_line_len(X_AVAILABLE_RANGES, value.len()) <= budget);
            let sub = parse_available(&value, u64::MAX).unwrap();
            assert_eq!(sub.intersect(&s), sub, "subset only");
            seen.union_with(&sub);
        }
        assert_eq!(seen, s, "merging random subsets recovers every range");
        let tiny = s.format_available_within(10, &mut rng(3));
        assert_eq!(tiny, AvailableHeaders::default());
        assert_eq!(
            RangeSet::new()
                .format_available_within(200, &mut rng(3))
                .ranges
                .as_deref(),
            Some("bytes")
        );
    }

    #[test]
    fn fuzz_parsers_never_panic() {
        let mut x = XorShift(0x5eed);
        let alphabet = b"bytes=0123456789-, \r\n\t;:x\0\xff";
        for i in 0..20_000 {
            let len = (x.next_u64() % 80) as usize;
            let raw = if i % 3 == 0 {
                x.bytes(len, &[])
            } else {
                let mut r = b"bytes ".to_vec();
                r.extend(x.bytes(len, alphabet));
                r
            };
            let text = String::from_utf8_lossy(&raw);
            let size = x.next_u64() >> (x.next_u64() % 64);
            if let Ok(s) = parse_available(&text, size) {
                assert!(s.len() <= MAX_RANGES);
                assert!(s.iter().all(|r| r.start < r.end && r.end <= size));
                let _ = s.format_available_within((x.next_u64() % 300) as usize, &mut rng(i));
            }
            let _ = parse_x_available(&text);
        }
    }
}
