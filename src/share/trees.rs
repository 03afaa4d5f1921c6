//! The Tiger trees of shared files, one small file per root under `<data dir>/trees/`, as
//! gtk-gnutella keeps its `tth_cache`: a tree is needed only when a downloader asks for it
//! (`/uri-res/N2X`), so it stays on disk, not in memory.
//!
//! A stored tree is the file size (8 bytes LE) and the nodes of the level served (THEX depth,
//! SWARM.md §3.3), 24 bytes each; the upper levels are recomputed when it is loaded, which also
//! checks it against its name.

use std::io;
use std::path::{Path, PathBuf};

use crate::thex::{HashTree, Tth};

/// A stored tree has at most 2^11 nodes on its level (SWARM.md §3.3, gtk-gnutella
/// `TTH_MAX_DEPTH`): anything longer is not ours.
const MAX_STORED: usize = 8 + 24 * 2048;

#[derive(Debug, Clone)]
pub struct TreeStore {
    dir: PathBuf,
}

impl TreeStore {
    pub fn new(data_dir: &Path) -> Self {
        TreeStore {
            dir: data_dir.join("trees"),
        }
    }

    fn path(&self, root: &Tth) -> PathBuf {
        self.dir.join(root.to_string())
    }

    pub fn has(&self, root: &Tth) -> bool {
        self.path(root).is_file()
    }

    pub fn save(&self, tree: &HashTree) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let mut b = Vec::with_capacity(8 + 24 * tree.lowest().len());
        b.extend_from_slice(&tree.size().to_le_bytes());
        for n in tree.lowest() {
            b.extend_from_slice(&n.0);
        }
        crate::store::write_atomic(&self.path(&tree.root()), &b)
    }

    /// The tree of `root`, if it is stored and hashes up to `root`.
    pub fn load(&self, root: &Tth) -> Option<HashTree> {
        let b = std::fs::read(self.path(root)).ok()?;
        if b.len() < 8 + 24 || b.len() > MAX_STORED || (b.len() - 8) % 24 != 0 {
            return None;
        }
        let size = u64::from_le_bytes(b[..8].try_into().ok()?);
        let nodes: Vec<Tth> = b[8..]
            .chunks_exact(24)
            .map(|c| Tth(c.try_into().expect("chunks of 24")))
            .collect();
        let tree = HashTree::from_lowest(size, nodes)?;
        (tree.root() == *root).then_some(tree)
    }
}

/// JSON for an optional root: its base32 form.
pub fn ser_tth<S: serde::Serializer>(t: &Option<Tth>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_some(&t.to_string()),
        None => s.serialize_none(),
    }
}
