//! Header blocks of the 0.6 handshake (PROTOCOL.md §4): a start line, `Name: value` lines with
//! continuations, and an empty line. Parsing is bounded in line length, header count and block
//! size, so a peer cannot make us buffer an unbounded handshake.

use std::fmt;

/// gtk-gnutella answers 413 past 1024-byte lines; LimeWire uses the same bound.
pub const MAX_LINE: usize = 1024;
/// LimeWire allows 30 headers; gtk-gnutella sends about 25. Twice that leaves room for new ones.
pub const MAX_HEADERS: usize = 64;
/// A whole block, start line included; well above the 1.5–2 KB real servents send.
pub const MAX_BLOCK: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("handshake line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("handshake has more than {MAX_HEADERS} headers")]
    TooManyHeaders,
    #[error("handshake block larger than {MAX_BLOCK} bytes")]
    BlockTooLarge,
    #[error("handshake line is not \"Name: value\": {0:?}")]
    BadHeaderLine(String),
    #[error("handshake start line not understood: {0:?}")]
    BadStartLine(String),
    #[error("handshake is not valid UTF-8 text")]
    NotText,
}

/// The first line of a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// `GNUTELLA CONNECT/<major>.<minor>`
    Connect { major: u8, minor: u8 },
    /// `GNUTELLA/0.6 <code> <reason>`
    Status { code: u16, reason: String },
}

impl fmt::Display for StartLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartLine::Connect { major, minor } => write!(f, "GNUTELLA CONNECT/{major}.{minor}"),
            StartLine::Status { code, reason } => write!(f, "GNUTELLA/0.6 {code} {reason}"),
        }
    }
}

impl StartLine {
    fn parse(line: &str) -> Result<Self, HeaderError> {
        let bad = || HeaderError::BadStartLine(line.chars().take(80).collect());
        if let Some(v) = line.strip_prefix("GNUTELLA CONNECT/") {
            let (major, minor) = v.trim().split_once('.').ok_or_else(bad)?;
            return Ok(StartLine::Connect {
                major: major.parse().map_err(|_| bad())?,
                minor: minor.parse().map_err(|_| bad())?,
            });
        }
        let rest = line.strip_prefix("GNUTELLA/").ok_or_else(bad)?;
        let mut parts = rest.splitn(3, ' ');
        let _version = parts.next().ok_or_else(bad)?;
        let code = parts.next().and_then(|c| c.parse().ok()).ok_or_else(bad)?;
        let reason = parts.next().unwrap_or("").trim().to_string();
        Ok(StartLine::Status { code, reason })
    }
}

/// Headers in the order received. Names compare case-insensitively; a repeated header reads as
/// the comma-joined list of its values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.0.push((name.to_string(), value.into()));
        self
    }

    /// The value of `name`, repeated headers joined with ", ".
    pub fn get(&self, name: &str) -> Option<String> {
        let mut values = self
            .0
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str());
        let first = values.next()?;
        Some(values.fold(first.to_string(), |acc, v| acc + ", " + v))
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A whole header block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub start: StartLine,
    pub headers: Headers,
}

impl Block {
    pub fn new(start: StartLine, headers: Headers) -> Self {
        Block { start, headers }
    }

    /// The bytes on the wire, CRLF line ends.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!("{}\r\n", self.start);
        for (n, v) in self.headers.iter() {
            s.push_str(n);
            s.push_str(": ");
            s.push_str(v);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        s.into_bytes()
    }

    /// Parses a block at the start of `buf`. `Ok(None)` means more bytes are needed; the
    /// returned length is the block's, so bytes after it (binary messages) stay with the caller.
    pub fn parse(buf: &[u8]) -> Result<Option<(Block, usize)>, HeaderError> {
        let mut lines: Vec<&[u8]> = Vec::new();
        let mut pos = 0;
        let end = loop {
            let Some(nl) = memchr::memchr(b'\n', &buf[pos..]) else {
                if buf.len() - pos > MAX_LINE {
                    return Err(HeaderError::LineTooLong);
                }
                if buf.len() > MAX_BLOCK {
                    return Err(HeaderError::BlockTooLarge);
                }
                return Ok(None);
            };
            let mut line = &buf[pos..pos + nl];
            if let Some(l) = line.strip_suffix(b"\r") {
                line = l;
            }
            if line.len() > MAX_LINE {
                return Err(HeaderError::LineTooLong);
            }
            pos += nl + 1;
            if pos > MAX_BLOCK {
                return Err(HeaderError::BlockTooLarge);
            }
            if line.is_empty() {
                if lines.is_empty() {
                    // Stray blank lines before the start line are skipped.
                    continue;
                }
                break pos;
            }
            lines.push(line);
            if lines.len() > MAX_HEADERS + 1 {
                return Err(HeaderError::TooManyHeaders);
            }
        };
        fn text(b: &[u8]) -> Result<&str, HeaderError> {
            std::str::from_utf8(b).map_err(|_| HeaderError::NotText)
        }
        let start = StartLine::parse(text(lines[0])?.trim_end())?;
        let mut headers = Headers::new();
        for raw in &lines[1..] {
            let line = text(raw)?;
            if line.starts_with([' ', '\t']) {
                // A continuation line extends the previous value.
                let (_, v) = headers
                    .0
                    .last_mut()
                    .ok_or_else(|| HeaderError::BadHeaderLine(line.into()))?;
                v.push(' ');
                v.push_str(line.trim());
                continue;
            }
            let (name, value) = line
                .split_once(':')
                .filter(|(n, _)| !n.is_empty() && !n.contains(' '))
                .ok_or_else(|| HeaderError::BadHeaderLine(line.chars().take(80).collect()))?;
            headers.push(name.trim(), value.trim());
        }
        Ok(Some((Block { start, headers }, end)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_connect_with_continuations_repeats_and_leftover_bytes() {
        let raw = b"GNUTELLA CONNECT/0.6\r\nUser-Agent: gtk-gnutella/1.2.3\r\nX-Try-Ultrapeers: 1.2.3.4:6346\r\n  ,5.6.7.8:6346\r\nx-ultrapeer: True\r\nX-Try-Ultrapeers: 9.9.9.9:1\r\n\r\n\xc3binary";
        let (b, len) = Block::parse(raw).unwrap().unwrap();
        assert_eq!(b.start, StartLine::Connect { major: 0, minor: 6 });
        assert_eq!(&raw[len..], b"\xc3binary");
        assert_eq!(b.headers.get("X-ULTRAPEER").as_deref(), Some("True"));
        assert_eq!(
            b.headers.get("x-try-ultrapeers").as_deref(),
            Some("1.2.3.4:6346 ,5.6.7.8:6346, 9.9.9.9:1")
        );
    }

    #[test]
    fn waits_for_the_blank_line_and_accepts_bare_lf() {
        assert_eq!(Block::parse(b"GNUTELLA/0.6 200 OK\r\nA: b\r\n"), Ok(None));
        let (b, len) = Block::parse(b"GNUTELLA/0.6 503 Too many\nA: b\n\n")
            .unwrap()
            .unwrap();
        assert_eq!(len, 32);
        assert_eq!(
            b.start,
            StartLine::Status {
                code: 503,
                reason: "Too many".into()
            }
        );
    }

    #[test]
    fn bounds_are_enforced_before_the_block_ends() {
        let long = vec![b'a'; MAX_LINE + 2];
        assert_eq!(Block::parse(&long), Err(HeaderError::LineTooLong));
        let mut many = b"GNUTELLA CONNECT/0.6\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
        }
        assert_eq!(Block::parse(&many), Err(HeaderError::TooManyHeaders));
        assert!(matches!(
            Block::parse(b"HELLO THERE\r\n\r\n"),
            Err(HeaderError::BadStartLine(_))
        ));
        assert!(matches!(
            Block::parse(b"GNUTELLA CONNECT/0.6\r\nno colon here\r\n\r\n"),
            Err(HeaderError::BadHeaderLine(_))
        ));
    }

    #[test]
    fn formats_with_crlf_and_parses_back() {
        let mut h = Headers::new();
        h.push("User-Agent", "servent/0.1")
            .push("X-Ultrapeer", "False");
        let b = Block::new(StartLine::Connect { major: 0, minor: 6 }, h);
        let bytes = b.to_bytes();
        assert!(bytes.starts_with(b"GNUTELLA CONNECT/0.6\r\nUser-Agent: servent/0.1\r\n"));
        assert!(bytes.ends_with(b"\r\n\r\n"));
        assert_eq!(Block::parse(&bytes).unwrap().unwrap().0, b);
    }
}
