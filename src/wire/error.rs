//! The wire layer's errors. Each variant names what was wrong with the bytes, so the layer above
//! can decide between dropping one descriptor and dropping the peer.

use super::header::PayloadType;

/// Why a GGEP block (PROTOCOL.md §3) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GgepError {
    #[error("GGEP block does not start with the magic byte 0xC3")]
    NoMagic,
    #[error("GGEP block ends before its last extension")]
    Unterminated,
    #[error("GGEP extension has an ID length of 0")]
    EmptyId,
    #[error("GGEP extension sets the reserved flag 0x10")]
    ReservedFlag,
    #[error("GGEP extension ID contains a byte that is not printable ASCII")]
    BadId,
    #[error("GGEP length byte 0x{0:02x} has neither or both of the high bits set")]
    BadLengthByte(u8),
    #[error("GGEP length field runs past 3 bytes")]
    LengthTooLong,
    #[error("GGEP extension claims {len} bytes but only {available} remain")]
    LengthPastEnd { len: usize, available: usize },
    #[error("GGEP block holds more than {max} extensions")]
    TooManyExtensions { max: usize },
    #[error("GGEP value is not valid COBS")]
    Cobs,
    #[error("GGEP value does not inflate as a zlib stream")]
    Inflate,
    #[error("GGEP value inflates beyond {cap} bytes")]
    InflatedTooLarge { cap: usize },
}

/// Why bytes could not be framed or decoded as a descriptor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{kind} payload of {len} bytes exceeds the cap of {cap}")]
    PayloadTooLarge {
        kind: PayloadType,
        len: u32,
        cap: u32,
    },
    #[error("unknown payload type 0x{0:02x}")]
    UnknownType(u8),
    #[error("{what} is truncated")]
    Truncated { what: &'static str },
    #[error("{what} is not NUL-terminated")]
    MissingNul { what: &'static str },
    #[error("{what} has {len} unexpected trailing bytes")]
    TrailingBytes { what: &'static str, len: usize },
    #[error("{what} has a tail of {len} bytes, over the cap of {cap}")]
    TailTooLarge {
        what: &'static str,
        len: usize,
        cap: usize,
    },
    #[error("{what} tail is not a GGEP block")]
    TailNotGgep { what: &'static str },
    #[error("query hit announces {count} results but the payload ends after {parsed}")]
    HitCountOverrun { count: u8, parsed: u8 },
    #[error("query hit trailer has {len} bytes, fewer than the 16 of a servent GUID")]
    HitTrailerTruncated { len: usize },
    #[error("QRP message variant 0x{0:02x} is neither RESET (0) nor PATCH (1)")]
    QrpVariant(u8),
    #[error("QRP table length {0} is not a power of two")]
    QrpTableLength(u32),
    #[error("QRP infinity must be at least 1")]
    QrpInfinity,
    #[error("QRP patch uses {0} bits per entry; only 1, 2, 4 and 8 exist")]
    QrpEntryBits(u8),
    #[error("QRP patch sequence {seq_no} of {seq_size} is out of range")]
    QrpSequence { seq_no: u8, seq_size: u8 },
    #[error("vendor message {vendor}/{selector} v{version}: {why}")]
    Vendor {
        vendor: super::types::VendorCode,
        selector: u16,
        version: u16,
        why: &'static str,
    },
    #[error("{0}")]
    Ggep(#[from] GgepError),
}

impl GgepError {
    /// A stable name for the error, used by conformance vectors and `servent decode --json`.
    pub fn code(&self) -> &'static str {
        match self {
            GgepError::NoMagic => "ggep-no-magic",
            GgepError::Unterminated => "ggep-unterminated",
            GgepError::EmptyId => "ggep-empty-id",
            GgepError::ReservedFlag => "ggep-reserved-flag",
            GgepError::BadId => "ggep-bad-id",
            GgepError::BadLengthByte(_) => "ggep-bad-length-byte",
            GgepError::LengthTooLong => "ggep-length-too-long",
            GgepError::LengthPastEnd { .. } => "ggep-length-past-end",
            GgepError::TooManyExtensions { .. } => "ggep-too-many-extensions",
            GgepError::Cobs => "ggep-cobs",
            GgepError::Inflate => "ggep-inflate",
            GgepError::InflatedTooLarge { .. } => "ggep-inflated-too-large",
        }
    }
}

impl WireError {
    /// A stable name for the error, used by conformance vectors and `servent decode --json`.
    pub fn code(&self) -> &'static str {
        match self {
            WireError::PayloadTooLarge { .. } => "payload-too-large",
            WireError::UnknownType(_) => "unknown-type",
            WireError::Truncated { .. } => "truncated",
            WireError::MissingNul { .. } => "missing-nul",
            WireError::TrailingBytes { .. } => "trailing-bytes",
            WireError::TailTooLarge { .. } => "tail-too-large",
            WireError::TailNotGgep { .. } => "tail-not-ggep",
            WireError::HitCountOverrun { .. } => "hit-count-overrun",
            WireError::HitTrailerTruncated { .. } => "hit-trailer-truncated",
            WireError::QrpVariant(_) => "qrp-variant",
            WireError::QrpTableLength(_) => "qrp-table-length",
            WireError::QrpInfinity => "qrp-infinity",
            WireError::QrpEntryBits(_) => "qrp-entry-bits",
            WireError::QrpSequence { .. } => "qrp-sequence",
            WireError::Vendor { .. } => "vendor-bad-data",
            WireError::Ggep(g) => g.code(),
        }
    }
}
