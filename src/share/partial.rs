//! Files we are downloading, shared while they download (partial file sharing, SWARM.md §1),
//! and the ones we finished this run, which we keep serving as seeds.
//!
//! Our rule is stricter than gtk-gnutella's: a range of a file still downloading is offered only
//! once every byte of it lies in a slice checked against a Tiger tree whose root we trust
//! (SWARM.md §1.1, "Our rule"). A download without a tree offers nothing until its whole-file
//! SHA-1 has been checked. Downloads add and update their entry; uploads and query answers only
//! read.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::SystemTime;

use crate::swarm::ranges::RangeSet;
use crate::thex::{HashTree, Tth};
use crate::wire::{FileIndex, Sha1Urn};

use super::words;

/// Entries kept at once: the API's 100 downloads, plus seeds. When full, the oldest seed goes.
pub const MAX_PARTIALS: usize = 256;

#[derive(Debug, Clone)]
pub struct PartialFile {
    pub urn: Sha1Urn,
    pub name: String,
    pub size: u64,
    /// Where the bytes are: the hidden partial file, or the finished one.
    pub path: PathBuf,
    /// The index our hits give it: random, as gtk-gnutella's (`qhit.c qhit_random_index`), since
    /// a partial file is fetched only through `/uri-res/N2R`.
    pub index: FileIndex,
    /// Bytes checked against `tree` (or the whole file once its SHA-1 matched).
    pub verified: RangeSet,
    pub tree: Option<std::sync::Arc<HashTree>>,
    /// When `verified` last grew: hits carry it in GGEP `PRU`, 416 answers derive
    /// `Retry-After` from it.
    pub last_write: SystemTime,
    /// The file is whole and verified: served as any shared file.
    pub complete: bool,
}

impl PartialFile {
    pub fn tth(&self) -> Option<Tth> {
        self.tree.as_ref().map(|t| t.root())
    }

    pub fn verified_bytes(&self) -> u64 {
        self.verified.covered_len()
    }
}

#[derive(Debug, Default)]
pub struct Partials {
    files: HashMap<Sha1Urn, PartialFile>,
}

impl Partials {
    /// Adds or replaces the entry of `f.urn`. When full, the oldest complete entry makes room;
    /// when none is complete, the new entry is not kept (the download still runs, unshared).
    pub fn put(&mut self, f: PartialFile) -> bool {
        if !self.files.contains_key(&f.urn) && self.files.len() >= MAX_PARTIALS {
            let oldest = self
                .files
                .values()
                .filter(|p| p.complete)
                .min_by_key(|p| p.last_write)
                .map(|p| p.urn);
            match oldest {
                Some(u) => {
                    self.files.remove(&u);
                }
                None => return false,
            }
        }
        self.files.insert(f.urn, f);
        true
    }

    pub fn get(&self, urn: &Sha1Urn) -> Option<&PartialFile> {
        self.files.get(urn)
    }

    pub fn update(&mut self, urn: &Sha1Urn, f: impl FnOnce(&mut PartialFile)) {
        if let Some(p) = self.files.get_mut(urn) {
            f(p);
        }
    }

    pub fn remove(&mut self, urn: &Sha1Urn) {
        self.files.remove(urn);
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Entries with something to offer whose names hold every word of `text`.
    pub fn search_words(&self, text: &str) -> Vec<&PartialFile> {
        let ws = words::words(text);
        if ws.is_empty() {
            return Vec::new();
        }
        self.files
            .values()
            .filter(|p| !p.verified.is_empty())
            .filter(|p| {
                let name = words::words(&p.name);
                ws.iter()
                    .all(|w| name.iter().any(|n| n.starts_with(w.as_str())))
            })
            .take(super::MAX_RESULTS)
            .collect()
    }

    /// The entry of `urn` if it has something to offer.
    pub fn offered(&self, urn: &Sha1Urn) -> Option<&PartialFile> {
        self.files.get(urn).filter(|p| !p.verified.is_empty())
    }

    pub fn iter(&self) -> impl Iterator<Item = &PartialFile> {
        self.files.values()
    }
}
