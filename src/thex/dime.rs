//! DIME, the record framing a THEX tree travels in (draft-nielsen-dime-02, gtk-gnutella
//! `dime.c`): a 12-byte header per record, then OPTIONS, ID, TYPE and DATA, each zero-padded to
//! a multiple of 4. Parsing borrows from the input and never allocates beyond the record list.

/// Records in one message at most: a THEX message has two.
pub const MAX_RECORDS: usize = 16;
const VERSION: u8 = 1;
const MB: u8 = 0x04;
const ME: u8 = 0x02;
const CF: u8 = 0x01;
const HEADER: usize = 12;

/// How a record's TYPE is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeT {
    /// A media type such as `text/xml`.
    Media,
    /// An absolute URI.
    Uri,
    Other(u8),
}

impl TypeT {
    fn bits(self) -> u8 {
        match self {
            TypeT::Media => 1,
            TypeT::Uri => 2,
            TypeT::Other(b) => b & 0x0f,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub type_t: TypeT,
    pub id: &'a [u8],
    pub kind: &'a [u8],
    pub data: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DimeError {
    #[error("record header cut short at byte {0}")]
    Truncated(usize),
    #[error("a record's fields run past the end of the message")]
    PastEnd,
    #[error("DIME version {0} is not 1")]
    Version(u8),
    #[error("the first record lacks the message-begin flag")]
    NoBegin,
    #[error("the last record lacks the message-end flag")]
    NoEnd,
    #[error("chunked records are not used by THEX")]
    Chunked,
    #[error("more than {MAX_RECORDS} records")]
    TooMany,
    #[error("message of {0} bytes is larger than a tree can be")]
    TooLarge(usize),
}

impl DimeError {
    pub fn code(&self) -> &'static str {
        match self {
            DimeError::Truncated(_) => "dime-truncated",
            DimeError::PastEnd => "dime-past-end",
            DimeError::Version(_) => "dime-version",
            DimeError::NoBegin => "dime-no-begin",
            DimeError::NoEnd => "dime-no-end",
            DimeError::Chunked => "dime-chunked",
            DimeError::TooMany => "dime-too-many",
            DimeError::TooLarge(_) => "dime-too-large",
        }
    }
}

fn pad4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

pub fn encode(records: &[Record<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let mut flags = VERSION << 3;
        if i == 0 {
            flags |= MB;
        }
        if i + 1 == records.len() {
            flags |= ME;
        }
        out.push(flags);
        out.push(r.type_t.bits() << 4);
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&(r.id.len() as u16).to_be_bytes());
        out.extend_from_slice(&(r.kind.len() as u16).to_be_bytes());
        out.extend_from_slice(&(r.data.len() as u32).to_be_bytes());
        for f in [r.id, r.kind, r.data] {
            out.extend_from_slice(f);
            out.resize(out.len() + pad4(f.len()) - f.len(), 0);
        }
    }
    out
}

pub fn parse(msg: &[u8]) -> Result<Vec<Record<'_>>, DimeError> {
    if msg.len() > super::MAX_MESSAGE {
        return Err(DimeError::TooLarge(msg.len()));
    }
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let h = msg
            .get(pos..pos + HEADER)
            .ok_or(DimeError::Truncated(pos))?;
        if h[0] >> 3 != VERSION {
            return Err(DimeError::Version(h[0] >> 3));
        }
        if out.is_empty() && h[0] & MB == 0 {
            return Err(DimeError::NoBegin);
        }
        if h[0] & CF != 0 {
            return Err(DimeError::Chunked);
        }
        let type_t = match h[1] >> 4 {
            1 => TypeT::Media,
            2 => TypeT::Uri,
            b => TypeT::Other(b),
        };
        let opt = usize::from(u16::from_be_bytes([h[2], h[3]]));
        let id = usize::from(u16::from_be_bytes([h[4], h[5]]));
        let kind = usize::from(u16::from_be_bytes([h[6], h[7]]));
        let data = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
        pos += HEADER;
        let mut field = |n: usize| -> Result<&[u8], DimeError> {
            let end = pos.checked_add(n).ok_or(DimeError::PastEnd)?;
            let f = msg.get(pos..end).ok_or(DimeError::PastEnd)?;
            pos = pos
                .checked_add(pad4(n))
                .filter(|&p| p <= msg.len())
                .ok_or(DimeError::PastEnd)?;
            Ok(f)
        };
        field(opt)?;
        let id = field(id)?;
        let kind = field(kind)?;
        let data = field(data)?;
        if out.len() >= MAX_RECORDS {
            return Err(DimeError::TooMany);
        }
        out.push(Record {
            type_t,
            id,
            kind,
            data,
        });
        if h[0] & ME != 0 {
            return Ok(out);
        }
        if pos >= msg.len() {
            return Err(DimeError::NoEnd);
        }
    }
}
