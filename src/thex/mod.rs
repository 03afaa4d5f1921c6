//! THEX: the Tiger tree hash of a file and its exchange format (SWARM.md §3), as gtk-gnutella
//! computes and serves it (`src/lib/tigertree.c`, `src/core/thex_upload.c`, `dime.c`).
//!
//! Leaves are Tiger(0x00 ‖ 1024-byte block), inner nodes Tiger(0x01 ‖ left ‖ right), an odd
//! node is promoted unchanged. A tree is kept from its root down to gtk-gnutella's "good
//! depth" (at most 2^11 nodes on the lowest level), which is also the finest level anyone can
//! verify against. Pure: bytes in, values out.

pub mod dime;

use std::fmt;

use tiger::{Digest, Tiger};

/// Bytes per leaf (gtk-gnutella `TTH_BLOCKSIZE`).
pub const BLOCK: u64 = 1024;
/// Deepest level kept and served (gtk-gnutella `TTH_MAX_DEPTH`).
pub const MAX_DEPTH: u32 = 11;
/// A received THEX message is read up to this (gtk-gnutella `THEX_DOWNLOAD_MAX_SIZE`).
pub const MAX_MESSAGE: usize = 260 * 1024;
/// Nodes a [`TreeHasher`] keeps before it pairs them: twice the lowest level of the deepest
/// tree, so the level served can always be rebuilt from them.
const MAX_KEPT: usize = 4096;

const XML_TYPE: &str = "text/xml";
const TREE_TYPE: &str = "http://open-content.net/spec/thex/breadthfirst";
const TIGER_URI: &str = "http://open-content.net/spec/digest/tiger";

/// A Tiger tree node or root: 24 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tth(pub [u8; 24]);

impl Tth {
    /// RFC 4648 base32, any case, 39 characters.
    pub fn from_base32(s: &str) -> Option<Tth> {
        let s = s.trim();
        if s.len() != 39 {
            return None;
        }
        let up = s.to_ascii_uppercase();
        let v = data_encoding::BASE32_NOPAD.decode(up.as_bytes()).ok()?;
        v.try_into().ok().map(Tth)
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for Tth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&data_encoding::BASE32_NOPAD.encode(&self.0))
    }
}

impl fmt::Debug for Tth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tth({self})")
    }
}

impl serde::Serialize for Tth {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Tth {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Tth::from_base32(&s).ok_or_else(|| serde::de::Error::custom("not a base32 Tiger root"))
    }
}

fn leaf(block: &[u8]) -> Tth {
    let mut h = Tiger::new();
    h.update([0u8]);
    h.update(block);
    Tth(h.finalize().into())
}

fn node(l: &Tth, r: &Tth) -> Tth {
    let mut h = Tiger::new();
    h.update([1u8]);
    h.update(l.0);
    h.update(r.0);
    Tth(h.finalize().into())
}

/// The level above `level`: pairs left to right, an odd last node promoted.
fn up(level: &[Tth]) -> Vec<Tth> {
    level
        .chunks(2)
        .map(|p| match p {
            [l, r] => node(l, r),
            [one] => *one,
            _ => unreachable!("chunks(2)"),
        })
        .collect()
}

fn blocks(size: u64) -> u64 {
    size.div_ceil(BLOCK).max(1)
}

/// The depth gtk-gnutella keeps for a file of `size` bytes (`tt_good_depth`).
pub fn good_depth(size: u64) -> u32 {
    const KI: u64 = 1024;
    const MI: u64 = 1024 * KI;
    const STEPS: [u64; 11] = [
        256 * KI,
        512 * KI,
        MI,
        2 * MI,
        4 * MI,
        8 * MI,
        16 * MI,
        32 * MI,
        64 * MI,
        256 * MI,
        1024 * MI,
    ];
    STEPS
        .iter()
        .position(|&t| size < t)
        .map_or(MAX_DEPTH, |i| i as u32)
}

/// Halvings of the leaf count until the level fits 2^depth nodes.
fn halvings(size: u64, depth: u32) -> u32 {
    let mut n = blocks(size);
    let mut h = 0;
    while n > 1u64 << depth {
        n = n.div_ceil(2);
        h += 1;
    }
    h
}

/// Nodes on the level at `depth` (gtk-gnutella `tt_node_count_at_depth`).
pub fn node_count_at_depth(size: u64, depth: u32) -> u64 {
    blocks(size).div_ceil(1 << halvings(size, depth))
}

/// Bytes covered by one node of the level served (gtk-gnutella `tt_slice_size`).
pub fn slice_size(size: u64) -> u64 {
    BLOCK << halvings(size, good_depth(size))
}

/// A Tiger tree from its root down to the level it was built or received with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashTree {
    size: u64,
    /// Root first; the last level is the lowest kept.
    levels: Vec<Vec<Tth>>,
}

impl HashTree {
    /// The tree of `data`, at its good depth.
    pub fn of(data: &[u8]) -> HashTree {
        let mut h = TreeHasher::new();
        h.update(data);
        h.finish()
    }

    /// Builds the upper levels over `lowest`; `None` if it cannot be a level of a file of
    /// `size` bytes at any depth up to [`MAX_DEPTH`].
    pub fn from_lowest(size: u64, lowest: Vec<Tth>) -> Option<HashTree> {
        let ok = (0..=MAX_DEPTH).any(|d| node_count_at_depth(size, d) == lowest.len() as u64);
        if !ok || lowest.is_empty() {
            return None;
        }
        let mut levels = vec![lowest];
        while levels.last().is_some_and(|l| l.len() > 1) {
            let next = up(levels.last().expect("non-empty"));
            levels.push(next);
        }
        levels.reverse();
        Some(HashTree { size, levels })
    }

    pub fn root(&self) -> Tth {
        self.levels[0][0]
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn depth(&self) -> u32 {
        (self.levels.len() - 1) as u32
    }

    pub fn lowest(&self) -> &[Tth] {
        self.levels.last().expect("a tree has a root")
    }

    /// Bytes covered by one node of the lowest level.
    pub fn slice(&self) -> u64 {
        BLOCK << halvings(self.size, self.depth())
    }

    /// The byte range [start, end) of node `i` of the lowest level.
    pub fn slice_range(&self, i: u64) -> (u64, u64) {
        let s = self.slice();
        (i * s, ((i + 1) * s).min(self.size))
    }

    /// Whether `bytes` are those of slice `i`.
    pub fn verify_slice(&self, i: u64, bytes: &[u8]) -> bool {
        self.lowest().get(i as usize) == Some(&slice_root(bytes))
    }

    /// The same tree kept only down to `depth` (its whole self if it is no deeper).
    pub fn truncated(&self, depth: u32) -> HashTree {
        let keep = (depth as usize + 1).min(self.levels.len());
        HashTree {
            size: self.size,
            levels: self.levels[..keep].to_vec(),
        }
    }

    /// Every level from the root down, promoted nodes repeated (THEX breadth-first order).
    pub fn breadth_first(&self) -> Vec<u8> {
        self.levels.iter().flatten().flat_map(|n| n.0).collect()
    }
}

/// The root of a run of bytes cut into 1024-byte blocks: a slice's node, or a file's TTH.
pub fn slice_root(bytes: &[u8]) -> Tth {
    let mut h = TreeHasher::new();
    h.update(bytes);
    h.finish().root()
}

/// Builds a tree from bytes fed in pieces of any size, in bounded memory: whole runs of 2^k
/// blocks are kept as one node each (at most [`MAX_KEPT`], pairing them when full), the run
/// in progress as a stack of perfect subtrees.
#[derive(Debug, Clone)]
pub struct TreeHasher {
    size: u64,
    /// Bytes of the block in progress.
    block: Vec<u8>,
    /// Perfect subtrees of the run in progress: (height, node), heights decreasing.
    stack: Vec<(u32, Tth)>,
    /// Height of a kept run.
    k: u32,
    kept: Vec<Tth>,
}

impl Default for TreeHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl TreeHasher {
    pub fn new() -> Self {
        TreeHasher {
            size: 0,
            block: Vec::with_capacity(BLOCK as usize),
            stack: Vec::new(),
            k: 0,
            kept: Vec::new(),
        }
    }

    fn push_leaf(&mut self, l: Tth) {
        let mut cur = (0u32, l);
        while let Some(&(h, n)) = self.stack.last() {
            if h != cur.0 {
                break;
            }
            self.stack.pop();
            cur = (h + 1, node(&n, &cur.1));
        }
        if cur.0 == self.k {
            self.kept.push(cur.1);
            if self.kept.len() >= MAX_KEPT {
                self.kept = up(&self.kept);
                self.k += 1;
            }
        } else {
            self.stack.push(cur);
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.size += data.len() as u64;
        if !self.block.is_empty() {
            let n = (BLOCK as usize - self.block.len()).min(data.len());
            self.block.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.block.len() == BLOCK as usize {
                let l = leaf(&self.block);
                self.block.clear();
                self.push_leaf(l);
            }
        }
        while data.len() >= BLOCK as usize {
            let (b, rest) = data.split_at(BLOCK as usize);
            self.push_leaf(leaf(b));
            data = rest;
        }
        self.block.extend_from_slice(data);
    }

    pub fn finish(mut self) -> HashTree {
        if !self.block.is_empty() || self.size == 0 {
            let l = leaf(&self.block);
            self.block.clear();
            self.push_leaf(l);
        }
        // The short last run: its subtrees folded right to left give the node promotion gives.
        if let Some(mut r) = self.stack.pop().map(|s| s.1) {
            while let Some((_, l)) = self.stack.pop() {
                r = node(&l, &r);
            }
            self.kept.push(r);
        }
        let mut level = self.kept;
        let want = node_count_at_depth(self.size, good_depth(self.size)) as usize;
        while level.len() > want {
            level = up(&level);
        }
        HashTree::from_lowest(self.size, level).expect("a level of the right count")
    }
}

/// `X-Thex-URI` value: where the tree of a file is, and its root.
pub fn thex_uri(sha1_base32: &str, root: &Tth) -> String {
    format!("/uri-res/N2X?urn:sha1:{sha1_base32};{root}")
}

/// Reads an `X-Thex-URI`: the path (which must start with `/`, as gtk-gnutella requires) and
/// the root after `;`.
pub fn parse_thex_uri(v: &str) -> Option<(String, Tth)> {
    let (path, root) = v.trim().split_once(';')?;
    let path = path.trim();
    if !path.starts_with('/') || path.len() > 1024 {
        return None;
    }
    Some((path.to_string(), Tth::from_base32(root)?))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThexError {
    #[error("DIME: {0}")]
    Dime(#[from] dime::DimeError),
    #[error("no text/xml record")]
    NoXml,
    #[error("no breadth-first tree record")]
    NoTree,
    #[error("XML attribute {0} missing or malformed")]
    BadXml(&'static str),
    #[error("the tree is for {got} bytes, the file has {want}")]
    WrongSize { got: u64, want: u64 },
    #[error("unsupported digest, segment size or tree type")]
    Unsupported,
    #[error("depth {0} is deeper than the file allows")]
    TooDeep(u32),
    #[error("tree data of {0} bytes is not whole nodes or too short for its depth")]
    BadData(usize),
    #[error("the tree's root is not the one we trust")]
    WrongRoot,
    #[error("the tree's levels do not hash up to its root")]
    Inconsistent,
}

impl ThexError {
    /// A stable name for vectors and counters.
    pub fn code(&self) -> &'static str {
        match self {
            ThexError::Dime(e) => e.code(),
            ThexError::NoXml => "thex-no-xml",
            ThexError::NoTree => "thex-no-tree",
            ThexError::BadXml(_) => "thex-bad-xml",
            ThexError::WrongSize { .. } => "thex-wrong-size",
            ThexError::Unsupported => "thex-unsupported",
            ThexError::TooDeep(_) => "thex-too-deep",
            ThexError::BadData(_) => "thex-bad-data",
            ThexError::WrongRoot => "thex-wrong-root",
            ThexError::Inconsistent => "thex-inconsistent",
        }
    }
}

/// The `uuid:` gtk-gnutella derives from a root (SWARM.md §3.4).
fn uuid_of(root: &Tth) -> String {
    let b = &root.0;
    let le32 = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let le16 = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    format!(
        "uuid:{:08x}-{:04x}-{:04x}-{:04x}-{:08x}{:04x}",
        le32(0),
        le16(4),
        le16(6),
        le16(8),
        le32(10),
        le16(14)
    )
}

/// The THEX message for `tree`, byte for byte what gtk-gnutella serves: a `text/xml` record
/// and the breadth-first tree record.
pub fn encode_thex(tree: &HashTree) -> Vec<u8> {
    let uuid = uuid_of(&tree.root());
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
         <!DOCTYPE hashtree SYSTEM \"http://open-content.net/spec/thex/thex.dtd\">\r\n\
         <hashtree>\r\n\
         <file size=\"{}\" segmentsize=\"1024\"/>\r\n\
         <digest algorithm=\"{TIGER_URI}\" outputsize=\"24\"/>\r\n\
         <serializedtree depth=\"{}\" type=\"{TREE_TYPE}\" uri=\"{uuid}\"/>\r\n\
         </hashtree>\r\n",
        tree.size(),
        tree.depth()
    );
    let data = tree.breadth_first();
    dime::encode(&[
        dime::Record {
            type_t: dime::TypeT::Media,
            id: b"",
            kind: XML_TYPE.as_bytes(),
            data: xml.as_bytes(),
        },
        dime::Record {
            type_t: dime::TypeT::Uri,
            id: uuid.as_bytes(),
            kind: TREE_TYPE.as_bytes(),
            data: &data,
        },
    ])
}

/// The value of attribute `name` in the first element `tag` of `xml`.
fn attr<'a>(xml: &'a str, tag: &str, name: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{tag}"))?;
    let end = start + xml[start..].find('>')?;
    let el = &xml[start..end];
    let mut rest = el;
    while let Some(i) = rest.find(name) {
        let after = rest[i + name.len()..].trim_start();
        let before_ok = i == 0 || rest.as_bytes()[i - 1].is_ascii_whitespace();
        if let Some(v) = after.strip_prefix('=')
            && before_ok
        {
            let v = v.trim_start();
            let q = v.chars().next()?;
            if q == '"' || q == '\'' {
                let v = &v[1..];
                return v.find(q).map(|j| &v[..j]);
            }
            return v.split(|c: char| c.is_whitespace() || c == '/').next();
        }
        rest = &rest[i + name.len()..];
    }
    None
}

/// Reads a THEX message for a file of `size` bytes whose root we trust, with gtk-gnutella's
/// checks (SWARM.md §3.4): exact size, Tiger, 1024-byte segments, breadth-first; the tree
/// record by type and ID, else by type alone; whole nodes, enough for the depth; the levels
/// hash up to `root`. A shallower tree than ours is fine.
pub fn parse_thex(msg: &[u8], size: u64, root: &Tth) -> Result<HashTree, ThexError> {
    let records = dime::parse(msg)?;
    let xml = records
        .iter()
        // Media types are case-blind (RFC 2045), and gtk-gnutella reads them so.
        .find(|r| r.kind.eq_ignore_ascii_case(XML_TYPE.as_bytes()))
        .ok_or(ThexError::NoXml)?;
    let xml = std::str::from_utf8(xml.data).map_err(|_| ThexError::BadXml("utf-8"))?;
    let num = |tag: &str, name: &'static str| -> Result<u64, ThexError> {
        attr(xml, tag, name)
            .and_then(|v| v.trim().parse().ok())
            .ok_or(ThexError::BadXml(name))
    };
    let got = num("file", "size")?;
    if got != size {
        return Err(ThexError::WrongSize { got, want: size });
    }
    if num("file", "segmentsize")? != BLOCK
        || num("digest", "outputsize")? != 24
        || attr(xml, "digest", "algorithm") != Some(TIGER_URI)
        || attr(xml, "serializedtree", "type") != Some(TREE_TYPE)
    {
        return Err(ThexError::Unsupported);
    }
    let depth = num("serializedtree", "depth")?;
    // The full depth: levels above the leaves.
    let max = 64 - (blocks(size) - 1).leading_zeros();
    if depth > u64::from(max.min(MAX_DEPTH)) {
        return Err(ThexError::TooDeep(depth as u32));
    }
    let depth = depth as u32;
    let uri = attr(xml, "serializedtree", "uri").unwrap_or("");
    let tree = records
        .iter()
        .find(|r| r.kind == TREE_TYPE.as_bytes() && r.id == uri.as_bytes())
        .or_else(|| records.iter().find(|r| r.kind == TREE_TYPE.as_bytes()))
        .ok_or(ThexError::NoTree)?;
    let data = tree.data;
    if data.len() % 24 != 0 {
        return Err(ThexError::BadData(data.len()));
    }
    // Level sizes from the lowest up.
    let mut counts = vec![node_count_at_depth(size, depth) as usize];
    while counts.last().is_some_and(|&c| c > 1) {
        let c = counts.last().expect("non-empty").div_ceil(2);
        counts.push(c);
    }
    let total: usize = counts.iter().sum();
    if data.len() < total * 24 {
        return Err(ThexError::BadData(data.len()));
    }
    let nodes: Vec<Tth> = data[..total * 24]
        .chunks_exact(24)
        .map(|c| Tth(c.try_into().expect("chunks of 24")))
        .collect();
    if nodes[0] != *root {
        return Err(ThexError::WrongRoot);
    }
    let lowest = nodes[total - counts[0]..].to_vec();
    let built = HashTree::from_lowest(size, lowest).ok_or(ThexError::BadData(data.len()))?;
    if built.breadth_first() != data[..total * 24] {
        return Err(ThexError::Inconsistent);
    }
    Ok(built)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrnError {
    #[error("not a bitprint, tree or ttroot URN")]
    Form,
    #[error("bad base32 or hex digest")]
    Digest,
}

/// `urn:bitprint:<32 b32 SHA-1>.<39 b32 TTH>` (either half may also be hex, as magnets in the
/// wild have it): the SHA-1 and the root.
pub fn parse_bitprint(s: &str) -> Result<([u8; 20], Tth), UrnError> {
    let s = s.trim();
    let rest = s
        .get(..13)
        .filter(|p| p.eq_ignore_ascii_case("urn:bitprint:"))
        .map(|_| &s[13..])
        .ok_or(UrnError::Form)?;
    let (a, b) = rest.split_once('.').ok_or(UrnError::Form)?;
    let sha1: [u8; 20] = decode_digest(a, 20)?
        .try_into()
        .map_err(|_| UrnError::Digest)?;
    let tth: [u8; 24] = decode_digest(b, 24)?
        .try_into()
        .map_err(|_| UrnError::Digest)?;
    Ok((sha1, Tth(tth)))
}

/// `urn:tree:tiger:…`, `urn:tree:tiger/:…` or `urn:ttroot:…`: the root.
pub fn parse_tree_urn(s: &str) -> Result<Tth, UrnError> {
    let s = s.trim();
    let lower = s.to_ascii_lowercase();
    let rest = ["urn:tree:tiger:", "urn:tree:tiger/:", "urn:ttroot:"]
        .iter()
        .find_map(|p| lower.strip_prefix(p).map(|_| &s[p.len()..]))
        .ok_or(UrnError::Form)?;
    Tth::from_base32(rest).ok_or(UrnError::Digest)
}

fn decode_digest(s: &str, len: usize) -> Result<Vec<u8>, UrnError> {
    let up = s.to_ascii_uppercase();
    if up.len() == len * 2 {
        return data_encoding::HEXUPPER
            .decode(up.as_bytes())
            .map_err(|_| UrnError::Digest);
    }
    data_encoding::BASE32_NOPAD
        .decode(up.as_bytes())
        .ok()
        .filter(|v| v.len() == len)
        .ok_or(UrnError::Digest)
}

#[cfg(test)]
mod tests;
