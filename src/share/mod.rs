//! The shared library: the files under `--share` folders, their SHA-1s (cached in the data
//! directory by path, size and modification time, so a restart does not rehash), a keyword
//! index, and the answers to queries.
//!
//! Only files found by a scan can ever be served: uploads resolve a request through
//! [`Library::by_index`] or [`Library::by_urn`], never through a path built from the request.

pub mod hits;
pub mod partial;
pub mod trees;
pub mod words;

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use log::{info, warn};
use serde::{Deserialize, Serialize};

use crate::thex::{HashTree, TreeHasher, Tth};
use crate::wire::qrp::QrpTable;
use crate::wire::{ExtItem, FileIndex, Query, Sha1Urn};

/// Suffix of our own partial downloads; never shared.
pub const PARTIAL_SUFFIX: &str = ".servent-part";
/// Results per query at most, whatever matches (gtk-gnutella caps its hits similarly).
pub const MAX_RESULTS: usize = 64;
const CACHE_FILE: &str = "sha1-cache.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SharedFile {
    pub index: FileIndex,
    #[serde(skip)]
    pub path: PathBuf,
    /// The file name as shared (no folders).
    pub name: String,
    pub size: u64,
    #[serde(skip)]
    pub mtime: u64,
    pub sha1: Sha1Urn,
    /// Tiger tree root; its tree is in the data directory's tree store.
    #[serde(serialize_with = "trees::ser_tth")]
    pub tth: Option<Tth>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheEntry {
    size: u64,
    mtime: u64,
    sha1: String,
    /// Absent in caches written before trees were computed: such files are hashed once more.
    #[serde(default)]
    tth: Option<String>,
}

/// SHA-1s by path, valid while size and modification time are unchanged.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct HashCache {
    entries: HashMap<PathBuf, CacheEntry>,
    /// Where the trees of hashed files are kept; none: trees are not kept (tests).
    #[serde(skip)]
    trees: Option<trees::TreeStore>,
}

impl HashCache {
    pub fn load(data_dir: &Path) -> Self {
        let mut c: HashCache = std::fs::read(data_dir.join(CACHE_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        c.trees = Some(trees::TreeStore::new(data_dir));
        c
    }

    pub fn save(&self, data_dir: &Path) -> io::Result<()> {
        let json = serde_json::to_vec(self).map_err(io::Error::other)?;
        crate::store::write_atomic(&data_dir.join(CACHE_FILE), &json)
    }

    /// The cached SHA-1 and TTH, if the file is unchanged and its tree is still stored.
    fn get(&self, path: &Path, size: u64, mtime: u64) -> Option<(Sha1Urn, Tth)> {
        let e = self.entries.get(path)?;
        if e.size != size || e.mtime != mtime {
            return None;
        }
        let tth = Tth::from_base32(e.tth.as_deref()?)?;
        if let Some(t) = &self.trees
            && !t.has(&tth)
        {
            return None;
        }
        Some((Sha1Urn::from_base32(e.sha1.as_bytes()).ok()?, tth))
    }

    fn put(&mut self, path: PathBuf, size: u64, mtime: u64, sha1: Sha1Urn, tree: &HashTree) {
        if let Some(t) = &self.trees
            && let Err(e) = t.save(tree)
        {
            warn!("cannot keep the Tiger tree of {}: {e}", path.display());
        }
        self.entries.insert(
            path,
            CacheEntry {
                size,
                mtime,
                sha1: sha1.base32(),
                tth: Some(tree.root().to_string()),
            },
        );
    }
}

/// SHA-1 and Tiger tree of a file, computed in the same read, 256 KiB at a time.
pub fn hash_file(path: &Path) -> io::Result<(Sha1Urn, HashTree)> {
    use sha1::Digest;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha1::Sha1::new();
    let mut t = TreeHasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        t.update(&buf[..n]);
    }
    Ok((Sha1Urn(h.finalize().into()), t.finish()))
}

fn shareable(name: &str) -> bool {
    !name.starts_with('.') && !name.ends_with(PARTIAL_SUFFIX) && !name.ends_with(".part")
}

/// How far a scan is, for the log, the status and the page while the shares are hashed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ScanProgress {
    /// A scan is running.
    pub running: bool,
    /// Files found, and those looked at so far (hashed, or known from the cache).
    pub files_total: usize,
    pub files_done: usize,
    /// Bytes still to hash.
    pub bytes_left: u64,
}

impl std::fmt::Display for ScanProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "hashing {} of {} files, {} left",
            (self.files_done + 1).min(self.files_total),
            self.files_total,
            crate::text::human(self.bytes_left)
        )
    }
}

/// A scan's result: what it found, what it left out as private, and the first error that
/// made it incomplete (a caller with an older library keeps that one instead).
#[derive(Debug, Default)]
pub struct Scanned {
    pub library: Library,
    /// Private folders (the data directory) found inside a share and left out.
    pub private: Vec<PathBuf>,
    pub failed: Option<ScanError>,
}

/// An I/O error that left a scan incomplete: not a file that is unreadable or gone, which is
/// simply not shared, but a folder that cannot be listed or a read that failed (out of file
/// descriptors, a disk error).
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}: {source}", path.display())]
pub struct ScanError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Whether an error only means this one entry is not ours to share.
fn entry_only(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
    )
}

struct Walk<'a> {
    out: Vec<(PathBuf, String, u64, u64)>,
    private: &'a [PathBuf],
    skipped: Vec<PathBuf>,
    failed: Option<ScanError>,
}

impl Walk<'_> {
    fn fail(&mut self, path: &Path, source: io::Error) {
        if self.failed.is_none() {
            self.failed = Some(ScanError {
                path: path.to_path_buf(),
                source,
            });
        }
    }
}

/// Regular files under `dir`, recursively; hidden and partial files, private folders and
/// symbolic links (which could lead outside the share) are left out.
fn walk(dir: &Path, w: &mut Walk<'_>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            warn!("cannot read shared folder {}: {e}", dir.display());
            if !entry_only(&e) {
                w.fail(dir, e);
            }
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                w.fail(dir, e);
                return;
            }
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        if !shareable(&name) {
            continue;
        }
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            let path = entry.path();
            if w.private.contains(&path) {
                w.skipped.push(path);
                continue;
            }
            walk(&path, w);
        } else if ft.is_file()
            && let Ok(meta) = entry.metadata()
        {
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            w.out.push((entry.path(), name, meta.len(), mtime));
        }
    }
}

/// The shared files and their index.
#[derive(Debug, Default, Clone)]
pub struct Library {
    files: Vec<SharedFile>,
    by_index: HashMap<FileIndex, usize>,
    by_urn: HashMap<Sha1Urn, usize>,
    /// Normalised word → files whose name has it.
    words: BTreeMap<String, Vec<usize>>,
    next_index: u32,
}

impl Library {
    /// Scans `dirs`, hashing what the cache does not know, never entering a folder of
    /// `private` (the data directory: our GUID, host cache, API token, hash cache) whatever
    /// the share settings. Indexes of files present in `prev` are kept, so links handed out
    /// before a rescan stay valid. Blocking: run it off the async threads.
    pub fn scan(
        dirs: &[PathBuf],
        private: &[PathBuf],
        cache: &mut HashCache,
        prev: Option<&Library>,
    ) -> Scanned {
        Self::scan_reporting(dirs, private, cache, prev, &mut |_, _| {})
    }

    /// [`Library::scan`], telling `report` how far it is and what it has so far before and
    /// after each file (a caller may share those already while the next one is hashed).
    pub fn scan_reporting(
        dirs: &[PathBuf],
        private: &[PathBuf],
        cache: &mut HashCache,
        prev: Option<&Library>,
        report: &mut dyn FnMut(&ScanProgress, &Library),
    ) -> Scanned {
        let private: Vec<PathBuf> = private
            .iter()
            .filter_map(|p| p.canonicalize().ok())
            .collect();
        let mut w = Walk {
            out: Vec::new(),
            private: &private,
            skipped: Vec::new(),
            failed: None,
        };
        for d in dirs {
            // Walked from its real path, so that private folders compare equal.
            match d.canonicalize() {
                Ok(root) if private.contains(&root) => w.skipped.push(root),
                Ok(root) => walk(&root, &mut w),
                Err(e) => {
                    warn!("cannot read shared folder {}: {e}", d.display());
                    if !entry_only(&e) {
                        w.fail(d, e);
                    }
                }
            }
        }
        let mut found = std::mem::take(&mut w.out);
        found.sort();
        let old: HashMap<&Path, FileIndex> = prev
            .map(|p| {
                p.files
                    .iter()
                    .map(|f| (f.path.as_path(), f.index))
                    .collect()
            })
            .unwrap_or_default();
        let mut next_index = prev.map_or(1, |p| p.next_index);
        let mut lib = Library::default();
        let mut hashed = 0usize;
        let mut progress = ScanProgress {
            running: true,
            files_total: found.len(),
            files_done: 0,
            bytes_left: found
                .iter()
                .filter(|(path, _, size, mtime)| cache.get(path, *size, *mtime).is_none())
                .map(|(_, _, size, _)| size)
                .sum(),
        };
        report(&progress, &lib);
        for (path, name, size, mtime) in found {
            progress.files_done += 1;
            let known = cache.get(&path, size, mtime);
            if known.is_none() {
                // What is known so far may be shared while this file is hashed.
                report(&progress, &lib);
            }
            let (sha1, tth) = match known {
                Some(s) => s,
                None => match hash_file(&path) {
                    Ok((s, tree)) => {
                        hashed += 1;
                        progress.bytes_left = progress.bytes_left.saturating_sub(size);
                        cache.put(path.clone(), size, mtime, s, &tree);
                        (s, tree.root())
                    }
                    Err(e) => {
                        warn!("cannot read {}: {e}; not shared", path.display());
                        progress.bytes_left = progress.bytes_left.saturating_sub(size);
                        if !entry_only(&e) {
                            w.fail(&path, e);
                        }
                        continue;
                    }
                },
            };
            let index = match old.get(path.as_path()) {
                Some(i) => *i,
                None => {
                    let i = FileIndex(next_index);
                    next_index += 1;
                    i
                }
            };
            lib.add(SharedFile {
                index,
                path,
                name,
                size,
                mtime,
                sha1,
                tth: Some(tth),
            });
            lib.next_index = next_index;
            report(&progress, &lib);
        }
        lib.next_index = next_index;
        if hashed > 0 {
            info!("hashed {hashed} new or changed files");
        }
        Scanned {
            library: lib,
            private: w.skipped,
            failed: w.failed,
        }
    }

    fn add(&mut self, f: SharedFile) {
        let pos = self.files.len();
        for w in words::words(&f.name) {
            let v = self.words.entry(w).or_default();
            if v.last() != Some(&pos) {
                v.push(pos);
            }
        }
        self.by_index.insert(f.index, pos);
        self.by_urn.insert(f.sha1, pos);
        self.files.push(f);
    }

    pub fn files(&self) -> &[SharedFile] {
        &self.files
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Total size in KiB, for our pong.
    pub fn kbytes(&self) -> u32 {
        (self.files.iter().map(|f| f.size).sum::<u64>() / 1024).min(u64::from(u32::MAX)) as u32
    }

    pub fn by_index(&self, i: FileIndex) -> Option<&SharedFile> {
        self.by_index.get(&i).map(|&p| &self.files[p])
    }

    pub fn by_urn(&self, u: &Sha1Urn) -> Option<&SharedFile> {
        self.by_urn.get(u).map(|&p| &self.files[p])
    }

    /// Files with a name word starting with `prefix`.
    fn with_prefix(&self, prefix: &str) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .words
            .range(prefix.to_string()..)
            .take_while(|(w, _)| w.starts_with(prefix))
            .flat_map(|(_, files)| files.iter().copied())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Files whose names hold every word of `text` (each as the start of a word of the name).
    pub fn search_words(&self, text: &str) -> Vec<&SharedFile> {
        let ws = words::words(text);
        if ws.is_empty() {
            return Vec::new();
        }
        let mut sets: Vec<Vec<usize>> = ws.iter().map(|w| self.with_prefix(w)).collect();
        sets.sort_by_key(Vec::len);
        let mut hits = sets[0].clone();
        for s in &sets[1..] {
            hits.retain(|p| s.binary_search(p).is_ok());
        }
        hits.into_iter()
            .take(MAX_RESULTS)
            .map(|p| &self.files[p])
            .collect()
    }

    /// The files a query asks for: by any `urn:sha1` it names, else by its words.
    pub fn search(&self, q: &Query<'_>) -> Vec<&SharedFile> {
        let urns: Vec<&SharedFile> = q
            .extensions
            .iter()
            .filter_map(|i| match i {
                ExtItem::Sha1(u) => self.by_urn(&u),
                _ => None,
            })
            .collect();
        if !urns.is_empty() {
            return urns;
        }
        self.search_words(&q.criteria.to_string_lossy())
    }

    /// Our QRP table at 2^`bits` slots: every word of every name and its prefixes, and each
    /// file's `urn:sha1` (as LimeWire once did; it lets URN queries reach us as a leaf).
    pub fn qrp_table(&self, bits: u8) -> QrpTable {
        let mut t = QrpTable::new(bits);
        for f in &self.files {
            for w in words::qrp_words(&f.name) {
                t.insert_word(&w);
            }
            t.insert_word(&f.sha1.to_string());
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Extensions, QueryFlags, Text};

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("servent-share-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("sub")).unwrap();
        d
    }

    #[test]
    fn scan_shares_regular_files_recursively_but_not_hidden_or_partial_ones() {
        let d = dir("scan");
        std::fs::write(d.join("Café Music.ogg"), b"abc").unwrap();
        std::fs::write(d.join("sub/notes.txt"), b"hello").unwrap();
        std::fs::write(d.join(".hidden.txt"), b"x").unwrap();
        std::fs::write(d.join(format!("movie.avi{PARTIAL_SUFFIX}")), b"x").unwrap();
        let mut cache = HashCache::default();
        let lib = Library::scan(std::slice::from_ref(&d), &[], &mut cache, None).library;
        let mut names: Vec<&str> = lib.files().iter().map(|f| f.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["Café Music.ogg", "notes.txt"]);
        let ogg = lib.search_words("cafe").pop().unwrap();
        assert_eq!(ogg.sha1, Sha1Urn::digest(b"abc"));
        assert_eq!(
            lib.by_urn(&Sha1Urn::digest(b"hello")).unwrap().name,
            "notes.txt"
        );
        assert_eq!(lib.by_index(ogg.index).unwrap().name, "Café Music.ogg");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_data_folder_inside_a_share_is_never_shared_nor_a_share_that_is_it() {
        let d = dir("private");
        let data = d.join("sub/servent-data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("api-token"), b"secret").unwrap();
        std::fs::write(data.join("servent-guid"), b"guid").unwrap();
        std::fs::write(d.join("sub/song.ogg"), b"la").unwrap();
        let mut cache = HashCache::default();
        let s = Library::scan(
            std::slice::from_ref(&d),
            std::slice::from_ref(&data),
            &mut cache,
            None,
        );
        let names: Vec<&str> = s.library.files().iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["song.ogg"]);
        assert_eq!(s.private, [data.canonicalize().unwrap()]);
        assert!(s.failed.is_none());
        // Sharing the data folder itself shares nothing.
        let s = Library::scan(
            std::slice::from_ref(&data),
            std::slice::from_ref(&data),
            &mut cache,
            None,
        );
        assert!(s.library.is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_folder_that_cannot_be_listed_makes_the_scan_incomplete_and_says_where() {
        let d = dir("incomplete");
        std::fs::write(d.join("a.txt"), b"one").unwrap();
        // A share that is not a folder: listing it fails, as it would out of descriptors.
        let not_dir = d.join("a.txt");
        let mut cache = HashCache::default();
        let s = Library::scan(&[d.clone(), not_dir.clone()], &[], &mut cache, None);
        assert_eq!(s.library.len(), 1);
        let e = s.failed.expect("incomplete");
        assert_eq!(e.path, not_dir.canonicalize().unwrap());
        // A folder that is gone is only unshared.
        let gone = d.join("gone");
        let s = Library::scan(&[d.clone(), gone], &[], &mut cache, None);
        assert!(s.failed.is_none());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_rescan_keeps_indexes_uses_the_cache_and_sees_changes() {
        let d = dir("rescan");
        std::fs::write(d.join("a.txt"), b"one").unwrap();
        std::fs::write(d.join("b.txt"), b"two").unwrap();
        let mut cache = HashCache::default();
        let first = Library::scan(std::slice::from_ref(&d), &[], &mut cache, None).library;
        let a_index = first.search_words("a").pop().unwrap().index;
        // Poison the cache entry of a.txt: if it is used, the SHA-1 shows it.
        let a_path = d.join("a.txt");
        let e = cache.entries.get_mut(&a_path).unwrap();
        e.sha1 = Sha1Urn::digest(b"cached").base32();
        std::fs::remove_file(d.join("b.txt")).unwrap();
        std::fs::write(d.join("c.txt"), b"three").unwrap();
        let second = Library::scan(std::slice::from_ref(&d), &[], &mut cache, Some(&first)).library;
        let a = second.search_words("a").pop().unwrap();
        assert_eq!(a.index, a_index, "index kept");
        assert_eq!(a.sha1, Sha1Urn::digest(b"cached"), "cache used, no rehash");
        assert!(second.search_words("b").is_empty(), "removed file gone");
        let c = second.search_words("c").pop().unwrap();
        assert!(c.index.0 > a_index.0, "new files get new indexes");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn queries_match_all_words_as_prefixes_or_a_urn() {
        let d = dir("query");
        std::fs::write(d.join("Gnutella Protocol Spec.pdf"), b"spec").unwrap();
        std::fs::write(d.join("gnutella logo.png"), b"logo").unwrap();
        let mut cache = HashCache::default();
        let lib = Library::scan(std::slice::from_ref(&d), &[], &mut cache, None).library;
        let q = |text: &'static str| Query {
            flags: QueryFlags(0x8000),
            criteria: Text(text.as_bytes()),
            extensions: Extensions::EMPTY,
        };
        assert_eq!(lib.search(&q("gnutella")).len(), 2);
        assert_eq!(lib.search(&q("GNUT prot")).len(), 1);
        assert_eq!(lib.search(&q("gnutella video")).len(), 0);
        assert_eq!(lib.search(&q("")).len(), 0);
        let urn = format!("urn:sha1:{}", Sha1Urn::digest(b"logo").base32());
        let ext = Extensions::parse(urn.as_bytes()).unwrap();
        let by_urn = Query {
            flags: QueryFlags(0x8000),
            criteria: Text(b"\\"),
            extensions: ext,
        };
        assert_eq!(lib.search(&by_urn)[0].name, "gnutella logo.png");
        let t = lib.qrp_table(16);
        assert!(t.contains_word("gnut") && t.contains_word("protocol") && t.contains_word("pdf"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
