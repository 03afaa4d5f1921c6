//! Query Routing Protocol (PROTOCOL.md §2.7, §6): RESET and PATCH messages, the keyword hash,
//! a presence table, the patch encoder, and a receiver that applies a patch sequence as it
//! streams in, inflating into a bounded buffer.

use nom::Parser;
use nom::number::complete::{le_u32, u8 as byte};
use serde::{Serialize, Serializer};

use super::error::WireError;
use super::simple::fixed;
use super::types::ser_hex;

/// Largest table kept: gtk-gnutella's `MAX_TABLE_SIZE` (2^21 slots); larger tables from peers
/// are folded down by OR-ing neighbouring slots, as it does (`qrp.c`). 2^21 bits = 256 KiB.
pub const MAX_KEPT_BITS: u8 = 21;
/// Data per PATCH message when we send: gtk-gnutella's 512 bytes, well under every cap.
pub const PATCH_CHUNK: usize = 512;
/// Inflate step of the receiver: gtk-gnutella's `QRT_RECEIVE_BUFSIZE`.
const RECEIVE_CHUNK: usize = 4096;

/// Hashes a keyword the QRP way: lower-cased, the low byte of each UTF-16 unit XORed into
/// 32-bit little-endian words, times 0x4F1BBCDC, top `bits` bits.
pub fn qrp_hash(word: &str, bits: u8) -> u32 {
    let mut x = 0u32;
    let mut j = 0u32;
    let mut units = [0u16; 2];
    for c in word.chars().flat_map(char::to_lowercase) {
        for u in c.encode_utf16(&mut units) {
            x ^= u32::from(*u & 0xFF) << (8 * (j % 4));
            j += 1;
        }
    }
    hash_fold(x, bits)
}

fn hash_fold(x: u32, bits: u8) -> u32 {
    if bits == 0 {
        return 0;
    }
    x.wrapping_mul(0x4F1B_BCDC) >> (32 - u32::from(bits.min(32)))
}

/// RESET: every slot becomes absent, the table takes `table_len` slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct QrpReset {
    pub table_len: u32,
    pub infinity: u8,
}

/// One PATCH message of a sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct QrpPatch<'a> {
    pub seq_no: u8,
    pub seq_size: u8,
    /// 1 = zlib; gtk-gnutella treats any other value as uncompressed, and so do we.
    pub compressor: u8,
    pub entry_bits: u8,
    #[serde(serialize_with = "ser_hex")]
    pub data: &'a [u8],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "variant")]
pub enum QrpMessage<'a> {
    Reset(QrpReset),
    Patch(QrpPatch<'a>),
}

impl<'a> QrpMessage<'a> {
    pub fn decode(p: &'a [u8]) -> Result<Self, WireError> {
        let (rest, variant) = fixed(byte.parse(p), "qrp")?;
        match variant {
            0 => {
                let (rest, (table_len, infinity)) = fixed((le_u32, byte).parse(rest), "qrp reset")?;
                if !rest.is_empty() {
                    return Err(WireError::TrailingBytes {
                        what: "qrp reset",
                        len: rest.len(),
                    });
                }
                if !table_len.is_power_of_two() {
                    return Err(WireError::QrpTableLength(table_len));
                }
                if infinity < 1 {
                    return Err(WireError::QrpInfinity);
                }
                Ok(QrpMessage::Reset(QrpReset {
                    table_len,
                    infinity,
                }))
            }
            1 => {
                let (data, (seq_no, seq_size, compressor, entry_bits)) =
                    fixed((byte, byte, byte, byte).parse(rest), "qrp patch")?;
                if seq_no == 0 || seq_no > seq_size {
                    return Err(WireError::QrpSequence { seq_no, seq_size });
                }
                if !matches!(entry_bits, 1 | 2 | 4 | 8) {
                    return Err(WireError::QrpEntryBits(entry_bits));
                }
                Ok(QrpMessage::Patch(QrpPatch {
                    seq_no,
                    seq_size,
                    compressor,
                    entry_bits,
                    data,
                }))
            }
            v => Err(WireError::QrpVariant(v)),
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            QrpMessage::Reset(r) => {
                out.push(0);
                out.extend_from_slice(&r.table_len.to_le_bytes());
                out.push(r.infinity);
            }
            QrpMessage::Patch(p) => {
                out.extend_from_slice(&[1, p.seq_no, p.seq_size, p.compressor, p.entry_bits]);
                out.extend_from_slice(p.data);
            }
        }
    }
}

/// Which slots are present. Only presence matters in QRP (PROTOCOL.md §6).
///
/// A table is a bitset while it is built or patched. A received table that is done changing
/// is [`compact`](Self::compact)ed: a leaf's 2^16-slot table (8 KiB as bits) has a few
/// hundred to a few thousand slots set, and an ultrapeer holds one per leaf, so it keeps the
/// sorted slot numbers instead when they take less room. Both answer every question alike.
#[derive(Clone)]
pub struct QrpTable {
    bits: u8,
    slots: Slots,
}

#[derive(Clone)]
enum Slots {
    Bits(Vec<u64>),
    /// The set slots, sorted, each once; only for tables of at most 2^16 slots.
    Sparse(Box<[u16]>),
}

impl QrpTable {
    /// An empty table of 2^`bits` slots (`bits` ≤ 32; 0 gives one slot).
    pub fn new(bits: u8) -> Self {
        let bits = bits.min(32);
        let slots = 1usize << bits;
        QrpTable {
            bits,
            slots: Slots::Bits(vec![0; slots.div_ceil(64)]),
        }
    }

    pub fn bits(&self) -> u8 {
        self.bits
    }

    pub fn slots(&self) -> usize {
        1 << self.bits
    }

    /// The bitset, made one again if the table was compacted (only tests and merges into a
    /// compacted table change one).
    fn words_mut(&mut self) -> &mut Vec<u64> {
        if let Slots::Sparse(set) = &self.slots {
            let mut words = vec![0u64; self.slots().div_ceil(64)];
            for &s in set.iter() {
                words[usize::from(s) / 64] |= 1 << (s % 64);
            }
            self.slots = Slots::Bits(words);
        }
        match &mut self.slots {
            Slots::Bits(w) => w,
            Slots::Sparse(_) => unreachable!("made a bitset above"),
        }
    }

    pub fn set(&mut self, slot: usize) {
        if slot < self.slots() {
            self.words_mut()[slot / 64] |= 1 << (slot % 64);
        }
    }

    pub fn clear(&mut self, slot: usize) {
        if slot < self.slots() {
            self.words_mut()[slot / 64] &= !(1 << (slot % 64));
        }
    }

    pub fn is_set(&self, slot: usize) -> bool {
        if slot >= self.slots() {
            return false;
        }
        match &self.slots {
            Slots::Bits(w) => w[slot / 64] & (1 << (slot % 64)) != 0,
            // slot < 2^16 here: sparse tables have at most 2^16 slots.
            Slots::Sparse(set) => set.binary_search(&(slot as u16)).is_ok(),
        }
    }

    pub fn insert_word(&mut self, word: &str) {
        self.set(qrp_hash(word, self.bits) as usize);
    }

    pub fn contains_word(&self, word: &str) -> bool {
        self.is_set(qrp_hash(word, self.bits) as usize)
    }

    pub fn count(&self) -> usize {
        match &self.slots {
            Slots::Bits(w) => w.iter().map(|w| w.count_ones() as usize).sum(),
            Slots::Sparse(set) => set.len(),
        }
    }

    /// The set slots, in increasing order.
    fn ones(&self) -> Box<dyn Iterator<Item = usize> + '_> {
        match &self.slots {
            Slots::Bits(words) => Box::new(words.iter().enumerate().flat_map(|(i, &word)| {
                let mut w = word;
                std::iter::from_fn(move || {
                    (w != 0).then(|| {
                        let slot = i * 64 + w.trailing_zeros() as usize;
                        w &= w - 1;
                        slot
                    })
                })
            })),
            Slots::Sparse(set) => Box::new(set.iter().map(|&s| usize::from(s))),
        }
    }

    /// Keeps the set slots as a sorted list when that is smaller than the bitset: for a
    /// table that is done changing (a peer's, once its patch sequence is complete).
    pub fn compact(&mut self) {
        let Slots::Bits(words) = &self.slots else {
            return;
        };
        let bitset_bytes = words.len() * 8;
        if self.bits > 16 || self.count() * 2 >= bitset_bytes {
            return;
        }
        let set: Box<[u16]> = self.ones().map(|s| s as u16).collect();
        self.slots = Slots::Sparse(set);
    }

    /// ORs `other` into this table, folding or spreading slots when the sizes differ (used to
    /// merge leaf tables into an ultrapeer's).
    ///
    /// The hash keeps the top bits of one 32-bit product (see [`qrp_hash`]), so a word's slot
    /// in a table of 2^b slots is its slot in a larger one shifted right: folding loses no
    /// word, and spreading marks every larger slot a word could have hashed to.
    pub fn merge(&mut self, other: &QrpTable) {
        if other.bits == self.bits
            && let Slots::Bits(theirs) = &other.slots
        {
            for (a, b) in self.words_mut().iter_mut().zip(theirs) {
                *a |= b;
            }
            return;
        }
        // Walk only the set slots: leaf tables are sparse (gtk-gnutella aims at ≤ 1 % fill).
        let (bits, theirs) = (self.bits, other.bits);
        let words = self.words_mut();
        let mut set = |s: usize| words[s / 64] |= 1 << (s % 64);
        for slot in other.ones() {
            if theirs >= bits {
                set(slot >> (theirs - bits));
            } else {
                let shift = bits - theirs;
                for s in (slot << shift)..((slot + 1) << shift) {
                    set(s);
                }
            }
        }
    }
}

impl PartialEq for QrpTable {
    fn eq(&self, other: &Self) -> bool {
        self.bits == other.bits
            && match (&self.slots, &other.slots) {
                (Slots::Bits(a), Slots::Bits(b)) => a == b,
                (Slots::Sparse(a), Slots::Sparse(b)) => a == b,
                _ => self.count() == other.count() && self.ones().eq(other.ones()),
            }
    }
}

impl Eq for QrpTable {}

impl std::fmt::Debug for QrpTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QrpTable({} slots, {} set)", self.slots(), self.count())
    }
}

impl Serialize for QrpTable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("slots", &self.slots())?;
        m.serialize_entry("set", &self.count())?;
        m.end()
    }
}

/// The payloads (RESET first, then the PATCH sequence) that move a peer from `prev` (or from an
/// empty table after the RESET, when `prev` is `None`) to `table`.
///
/// `entry_bits` is 4 or 8 (1 and 2 exist only towards peers that announced them); `infinity`
/// ≥ 2 as every servent sends (gtk-gnutella 2, LimeWire 7).
pub fn encode_table(
    prev: Option<&QrpTable>,
    table: &QrpTable,
    infinity: u8,
    entry_bits: u8,
    compress: bool,
) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let prev = match prev {
        Some(p) if p.bits == table.bits => Some(p),
        _ => {
            let mut reset = Vec::with_capacity(6);
            QrpMessage::Reset(QrpReset {
                table_len: table.slots() as u32,
                infinity,
            })
            .encode(&mut reset);
            out.push(reset);
            None
        }
    };
    let entry_bits = if entry_bits == 8 { 8 } else { 4 };
    let add = (1 - i16::from(infinity)).max(if entry_bits == 8 { -128 } else { -8 });
    let remove = (i16::from(infinity) - 1).min(if entry_bits == 8 { 127 } else { 7 });
    let delta = |slot: usize| -> i16 {
        let was = prev.is_some_and(|p| p.is_set(slot));
        match (was, table.is_set(slot)) {
            (false, true) => add,
            (true, false) => remove,
            _ => 0,
        }
    };
    let mut raw = Vec::with_capacity(table.slots() * entry_bits as usize / 8);
    if entry_bits == 8 {
        raw.extend((0..table.slots()).map(|s| delta(s) as i8 as u8));
    } else {
        for s in (0..table.slots()).step_by(2) {
            let hi = (delta(s) as u8) & 0x0F;
            let lo = if s + 1 < table.slots() {
                (delta(s + 1) as u8) & 0x0F
            } else {
                0
            };
            raw.push(hi << 4 | lo);
        }
    }
    let data = if compress {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&raw).expect("write to Vec");
        z.finish().expect("finish into Vec")
    } else {
        raw
    };
    let chunks: Vec<&[u8]> = data.chunks(PATCH_CHUNK).collect();
    // 2^21 slots at 8 bits compress far below 255 × 512 bytes; an incompressible table that
    // did not fit would need a larger chunk, which every peer accepts up to its 40960 cap.
    let chunk_len = data.len().div_ceil(255).max(PATCH_CHUNK);
    let chunks: Vec<&[u8]> = if chunks.len() > 255 {
        data.chunks(chunk_len).collect()
    } else {
        chunks
    };
    let n = chunks.len() as u8;
    for (i, c) in chunks.iter().enumerate() {
        let mut p = Vec::with_capacity(5 + c.len());
        QrpMessage::Patch(QrpPatch {
            seq_no: i as u8 + 1,
            seq_size: n,
            compressor: u8::from(compress),
            entry_bits,
            data: c,
        })
        .encode(&mut p);
        out.push(p);
    }
    out
}

/// Why a peer's QRP sequence was refused. Each earns Bye 413 (PROTOCOL.md §6).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QrpError {
    #[error("QRP patch before any RESET")]
    NoReset,
    #[error("QRP patch {got} where {expected} was expected")]
    OutOfSequence { expected: u8, got: u8 },
    #[error("QRP patch changed its sequence size or entry bits mid-sequence")]
    ChangedParameters,
    #[error("QRP patch data does not inflate")]
    Inflate,
    #[error("QRP patch overflows the table")]
    Overflow,
    #[error("QRP patch sequence covered {covered} of {slots} slots")]
    Incomplete { covered: usize, slots: usize },
}

struct Pending {
    table: QrpTable,
    seq_size: u8,
    entry_bits: u8,
    next_seq: u8,
    zlib: Option<flate2::Decompress>,
    /// Next slot of the peer's (unfolded) table that the patch data addresses.
    slot: u64,
}

/// Patch inflaters kept for the next sequence. One is ~46 KiB (zlib-rs always allocates a
/// 32 KiB window), all of it touched by a 2^16-slot table. Handed back to malloc after each
/// sequence, it was reused by the next link's buffers, whose untouched pages then counted in
/// full: each leaf link's RSS grew by a whole inflater (`examples/net_bench`, leaf row).
/// Kept here, one or a few stay resident for every leaf that connects.
static SPARE_INFLATERS: std::sync::Mutex<Vec<flate2::Decompress>> =
    std::sync::Mutex::new(Vec::new());
/// At most this many kept: sequences received at once past this allocate their own.
const MAX_SPARE_INFLATERS: usize = 4;

fn spare_inflaters() -> std::sync::MutexGuard<'static, Vec<flate2::Decompress>> {
    SPARE_INFLATERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn take_inflater() -> flate2::Decompress {
    let spare = spare_inflaters().pop();
    match spare {
        Some(mut z) => {
            z.reset(true);
            z
        }
        None => flate2::Decompress::new(true),
    }
}

impl Drop for Pending {
    /// Every end of a sequence (complete, refused, replaced by a RESET, link closed) hands
    /// its inflater back.
    fn drop(&mut self) {
        if let Some(z) = self.zlib.take() {
            let mut spare = spare_inflaters();
            if spare.len() < MAX_SPARE_INFLATERS {
                spare.push(z);
            }
        }
    }
}

/// Applies a peer's RESET/PATCH sequences. Memory is bounded by [`MAX_KEPT_BITS`] whatever the
/// peer announces, and patch data is inflated in [`RECEIVE_CHUNK`] steps, never all at once.
#[derive(Default)]
pub struct QrpReceiver {
    /// The last complete table; queries are routed against it.
    current: Option<QrpTable>,
    /// log2 of the peer's announced size.
    peer_bits: u8,
    pending: Option<Pending>,
    reset_seen: bool,
}

impl QrpReceiver {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn table(&self) -> Option<&QrpTable> {
        self.current.as_ref()
    }

    pub fn reset(&mut self, r: &QrpReset) {
        self.peer_bits = r.table_len.trailing_zeros() as u8;
        self.current = Some(QrpTable::new(self.peer_bits.min(MAX_KEPT_BITS)));
        self.pending = None;
        self.reset_seen = true;
    }

    /// Feeds one PATCH. Returns true when it completed a sequence and the new table is live.
    pub fn patch(&mut self, p: &QrpPatch<'_>) -> Result<bool, QrpError> {
        if !self.reset_seen {
            return Err(QrpError::NoReset);
        }
        let base = self.current.as_ref().ok_or(QrpError::NoReset)?;
        let pending = match self.pending.as_mut() {
            None if p.seq_no == 1 => self.pending.insert(Pending {
                table: base.clone(),
                seq_size: p.seq_size,
                entry_bits: p.entry_bits,
                next_seq: 1,
                zlib: (p.compressor == 1).then(take_inflater),
                slot: 0,
            }),
            None => {
                return Err(QrpError::OutOfSequence {
                    expected: 1,
                    got: p.seq_no,
                });
            }
            Some(pe) => pe,
        };
        if p.seq_no != pending.next_seq {
            return Err(QrpError::OutOfSequence {
                expected: pending.next_seq,
                got: p.seq_no,
            });
        }
        if p.seq_size != pending.seq_size || p.entry_bits != pending.entry_bits {
            return Err(QrpError::ChangedParameters);
        }
        let peer_slots = 1u64 << self.peer_bits;
        let shift = self.peer_bits.saturating_sub(MAX_KEPT_BITS);
        let last = p.seq_no == p.seq_size;
        match pending.zlib.as_mut() {
            None => apply(pending_parts(pending), p.data, peer_slots, shift)?,
            Some(z) => {
                let mut buf = [0u8; RECEIVE_CHUNK];
                let mut input = p.data;
                loop {
                    let (before_in, before_out) = (z.total_in(), z.total_out());
                    let status = z
                        .decompress(input, &mut buf, flate2::FlushDecompress::None)
                        .map_err(|_| QrpError::Inflate)?;
                    let used = (z.total_in() - before_in) as usize;
                    let made = (z.total_out() - before_out) as usize;
                    input = &input[used..];
                    let parts = (&mut pending.table, pending.entry_bits, &mut pending.slot);
                    apply(parts, &buf[..made], peer_slots, shift)?;
                    if status == flate2::Status::StreamEnd {
                        if !last || !input.is_empty() {
                            return Err(QrpError::Inflate);
                        }
                        break;
                    }
                    if used == 0 && made == 0 {
                        break;
                    }
                }
            }
        }
        if !last {
            // seq_no < seq_size ≤ 255 here, so this cannot overflow.
            pending.next_seq += 1;
            return Ok(false);
        }
        let mut done = self.pending.take().expect("pending set above");
        if done.slot < peer_slots {
            return Err(QrpError::Incomplete {
                covered: done.slot as usize,
                slots: peer_slots as usize,
            });
        }
        // `Pending` hands its inflater back when dropped, so the table is taken, not moved.
        let mut table = std::mem::replace(&mut done.table, QrpTable::new(0));
        table.compact();
        self.current = Some(table);
        Ok(true)
    }
}

fn pending_parts(p: &mut Pending) -> (&mut QrpTable, u8, &mut u64) {
    (&mut p.table, p.entry_bits, &mut p.slot)
}

/// Applies raw patch bytes from slot `*slot` on. Entries are packed most significant bits
/// first; a negative entry makes the slot present, a positive one absent, 0 leaves it; 1-bit
/// entries toggle (PROTOCOL.md §6, gtk-gnutella `qrp.c`).
fn apply(
    (table, bits, slot): (&mut QrpTable, u8, &mut u64),
    data: &[u8],
    peer_slots: u64,
    shift: u8,
) -> Result<(), QrpError> {
    let per_byte = 8 / u64::from(bits);
    if *slot + data.len() as u64 * per_byte > peer_slots {
        return Err(QrpError::Overflow);
    }
    let mask = ((1u16 << bits) - 1) as u8;
    let sign = 1u8 << (bits - 1);
    for &b in data {
        for k in 0..per_byte {
            let v = (b >> (8 - bits as u64 * (k + 1))) & mask;
            let kept = (*slot >> shift) as usize;
            if bits == 1 {
                if v == 1 {
                    if table.is_set(kept) {
                        table.clear(kept);
                    } else {
                        table.set(kept);
                    }
                }
            } else if v & sign != 0 {
                table.set(kept);
            } else if v != 0 && shift == 0 {
                // With folding, one kept slot stands for several of the peer's; a removal of
                // one must not hide the others, so only unfolded tables clear.
                table.clear(kept);
            }
            *slot += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_every_official_vector() {
        let cases: &[(&str, u8, u32)] = &[
            ("", 13, 0),
            ("eb", 13, 6791),
            ("ebc", 13, 7082),
            ("ebck", 13, 6698),
            ("ebckl", 13, 3179),
            ("ebcklm", 13, 3235),
            ("ebcklme", 13, 6438),
            ("ebcklmen", 13, 1062),
            ("ebcklmenq", 13, 3527),
            ("", 16, 0),
            ("n", 16, 65003),
            ("nd", 16, 54193),
            ("ndf", 16, 4953),
            ("ndfl", 16, 58201),
            ("ndfla", 16, 34830),
            ("ndflal", 16, 36910),
            ("ndflale", 16, 34586),
            ("ndflalem", 16, 37658),
            ("ndflaleme", 16, 45559),
            ("ol2j34lj", 10, 318),
            ("asdfas23", 10, 503),
            ("9um3o34fd", 10, 758),
            ("a234d", 10, 281),
            ("a3f", 10, 767),
            ("3nja9", 10, 581),
            ("3NJA9", 10, 581),
            ("3nJa9", 10, 581),
            ("2459345938032343", 10, 146),
            ("7777a88a8a8a8", 10, 342),
            ("asdfjklkj3k", 10, 861),
            ("adfk32l", 10, 1011),
            ("zzzzzzzzzzz", 10, 944),
            ("gnutella", 16, 21293),
            ("gnutella", 17, 42586),
            ("protocol", 16, 3046),
            ("protocol", 17, 6092),
            ("pdf", 16, 45456),
            ("pdf", 17, 90913),
            ("test", 3, 2),
            ("qrp", 3, 7),
        ];
        for &(s, bits, h) in cases {
            assert_eq!(qrp_hash(s, bits), h, "{s:?} at {bits} bits");
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        data_encoding::HEXLOWER
            .decode(s.replace(' ', "").as_bytes())
            .unwrap()
    }

    #[test]
    fn appendix_b_examples_encode_byte_for_byte() {
        let mut t = QrpTable::new(3);
        t.insert_word("test");
        assert!(t.is_set(2));
        let plain4 = encode_table(None, &t, 7, 4, false);
        assert_eq!(plain4[0], hex("00 08 00 00 00 07"));
        assert_eq!(plain4[1], hex("01 01 01 00 04 00 a0 00 00"));
        let plain8 = encode_table(None, &t, 7, 8, false);
        assert_eq!(plain8[1], hex("01 01 01 00 08 00 00 fa 00 00 00 00 00"));
        let zlib4 = encode_table(None, &t, 7, 4, true);
        assert_eq!(
            zlib4[1],
            hex("01 01 01 01 04 78 9c 63 58 c0 c0 00 00 01 e4 00 a1")
        );
    }

    fn receive(payloads: &[Vec<u8>]) -> Result<QrpReceiver, QrpError> {
        let mut r = QrpReceiver::new();
        for p in payloads {
            match QrpMessage::decode(p).unwrap() {
                QrpMessage::Reset(x) => r.reset(&x),
                QrpMessage::Patch(x) => {
                    r.patch(&x)?;
                }
            }
        }
        Ok(r)
    }

    #[test]
    fn received_tables_equal_the_sent_ones_for_every_packing() {
        let mut t = QrpTable::new(16);
        for w in ["gnutella", "protocol", "pdf", "music", "ogg"] {
            t.insert_word(w);
        }
        for bits in [4, 8] {
            for compress in [false, true] {
                let r = receive(&encode_table(None, &t, 2, bits, compress)).unwrap();
                assert_eq!(r.table(), Some(&t), "{bits} bits, zlib {compress}");
            }
        }
        // A second patch against the first removes and adds.
        let mut t2 = t.clone();
        t2.clear(qrp_hash("pdf", 16) as usize);
        t2.insert_word("flac");
        let mut msgs = encode_table(None, &t, 7, 4, true);
        msgs.extend(encode_table(Some(&t), &t2, 7, 4, true));
        let r = receive(&msgs).unwrap();
        assert_eq!(r.table(), Some(&t2));
        assert!(!r.table().unwrap().contains_word("pdf"));
        assert!(r.table().unwrap().contains_word("flac"));
    }

    #[test]
    fn a_sequence_of_255_patches_completes() {
        // 2^17 slots at 8 bits, uncompressed: 131072 bytes, the most chunks a sequence holds.
        let mut t = QrpTable::new(17);
        t.insert_word("gnutella");
        let msgs = encode_table(None, &t, 2, 8, false);
        assert_eq!(msgs.len(), 1 + 255);
        let r = receive(&msgs).unwrap();
        assert_eq!(r.table(), Some(&t));
    }

    #[test]
    fn one_and_two_bit_patches_are_read_msb_first() {
        let mut r = QrpReceiver::new();
        r.reset(&QrpReset {
            table_len: 8,
            infinity: 2,
        });
        // 1-bit: toggles slots 0 and 7.
        let p = QrpPatch {
            seq_no: 1,
            seq_size: 1,
            compressor: 0,
            entry_bits: 1,
            data: &[0b1000_0001],
        };
        assert_eq!(r.patch(&p), Ok(true));
        let t = r.table().unwrap();
        assert!(t.is_set(0) && t.is_set(7) && t.count() == 2);
        // 2-bit: slot 0 "-1" present, slot 1 "+1" absent, slot 2 unchanged, slot 3 "-2".
        let p = QrpPatch {
            entry_bits: 2,
            data: &[0b11_01_00_10, 0],
            ..p
        };
        assert_eq!(r.patch(&p), Ok(true));
        let t = r.table().unwrap();
        assert!(t.is_set(0) && !t.is_set(1) && t.is_set(3) && t.is_set(7));
    }

    #[test]
    fn bad_sequences_are_refused() {
        let mut r = QrpReceiver::new();
        let p = QrpPatch {
            seq_no: 1,
            seq_size: 2,
            compressor: 0,
            entry_bits: 8,
            data: &[0; 4],
        };
        assert_eq!(r.patch(&p), Err(QrpError::NoReset));
        r.reset(&QrpReset {
            table_len: 8,
            infinity: 7,
        });
        assert_eq!(
            r.patch(&QrpPatch { seq_no: 2, ..p }),
            Err(QrpError::OutOfSequence {
                expected: 1,
                got: 2
            })
        );
        assert_eq!(r.patch(&p), Ok(false));
        assert_eq!(
            r.patch(&QrpPatch {
                seq_no: 2,
                entry_bits: 4,
                ..p
            }),
            Err(QrpError::ChangedParameters)
        );
        let mut r = QrpReceiver::new();
        r.reset(&QrpReset {
            table_len: 8,
            infinity: 7,
        });
        assert_eq!(
            r.patch(&QrpPatch {
                seq_size: 1,
                data: &[0; 9],
                ..p
            }),
            Err(QrpError::Overflow)
        );
        assert_eq!(
            r.patch(&QrpPatch {
                seq_size: 1,
                data: &[0; 7],
                ..p
            }),
            Err(QrpError::Incomplete {
                covered: 7,
                slots: 8
            })
        );
    }

    #[test]
    fn huge_announced_tables_are_folded_to_the_kept_size() {
        let mut r = QrpReceiver::new();
        r.reset(&QrpReset {
            table_len: 1 << 24,
            infinity: 2,
        });
        assert_eq!(r.table().unwrap().bits(), MAX_KEPT_BITS);
        let mut big = QrpTable::new(24);
        big.insert_word("gnutella");
        let msgs = encode_table(None, &big, 2, 4, true);
        let r = receive(&msgs).unwrap();
        let kept = r.table().unwrap();
        assert_eq!(kept.bits(), MAX_KEPT_BITS);
        assert!(kept.contains_word("gnutella"));
        assert_eq!(kept.count(), 1);
    }

    #[test]
    fn a_zlib_bomb_overflows_instead_of_growing() {
        let mut r = QrpReceiver::new();
        r.reset(&QrpReset {
            table_len: 64,
            infinity: 2,
        });
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&vec![0u8; 1 << 20]).unwrap();
        let bomb = z.finish().unwrap();
        let p = QrpPatch {
            seq_no: 1,
            seq_size: 1,
            compressor: 1,
            entry_bits: 4,
            data: &bomb,
        };
        assert_eq!(r.patch(&p), Err(QrpError::Overflow));
    }

    #[test]
    fn a_compacted_table_answers_as_its_bitset_does() {
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for (bits, n) in [(16, 1300), (16, 0), (16, 5000), (13, 40), (17, 100)] {
            let mut t = QrpTable::new(bits);
            for _ in 0..n {
                t.set(next() as usize % t.slots());
            }
            let mut c = t.clone();
            c.compact();
            // Sparse only where it is smaller and the slots fit in 16 bits.
            let sparse = matches!(c.slots, Slots::Sparse(_));
            assert_eq!(
                sparse,
                bits <= 16 && t.count() * 2 < t.slots() / 8,
                "{bits} {n}"
            );
            assert_eq!(c, t);
            assert_eq!(c.count(), t.count());
            assert!((0..t.slots() + 3).all(|s| c.is_set(s) == t.is_set(s)));
            for into in [12, 16, 18] {
                let (mut a, mut b) = (QrpTable::new(into), QrpTable::new(into));
                a.merge(&t);
                b.merge(&c);
                assert_eq!(a, b, "{bits} into {into}");
            }
            // A patch on a compacted table (a later sequence) changes it as it would the bits.
            let (mut t2, mut c2) = (t.clone(), c.clone());
            for s in [0, 1, 77, t.slots() - 1] {
                t2.set(s);
                c2.set(s);
            }
            t2.clear(77);
            c2.clear(77);
            assert_eq!(c2, t2);
            assert!(matches!(c2.slots, Slots::Bits(_)));
        }
    }
}
