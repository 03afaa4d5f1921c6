//! Searches started through the API: each runs until stopped or [`SEARCH_LIFETIME`] passes,
//! groups its hits by SHA-1 (one source per servent) and tells stream readers about every new
//! or updated group as it happens.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_std::channel::{Receiver, Sender, bounded};
use serde::Serialize;

use crate::servent::{Servent, add_found, found_in_hit};
use crate::transfer::download::Spec;
use crate::wire::{ServentId, Sha1Urn};

/// Searches kept (running or finished) at once: each costs a route-table entry on the
/// network and up to [`MAX_RESULTS`] groups here. A person follows a handful at most.
pub const MAX_SEARCHES: usize = 16;
/// Files (SHA-1 groups) kept per search; later new files are ignored. Popular words on the
/// real network give a few hundred distinct files in a minute.
pub const MAX_RESULTS: usize = 500;
/// Sources kept per file: more than a swarming download uses at once.
pub const MAX_SOURCES: usize = 100;
/// A search left running stops by itself after this: hits for old queries stop coming within
/// minutes anyway (routes expire after about 10 minutes, PROTOCOL.md §5).
pub const SEARCH_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Readers of one search's stream at once.
pub const MAX_READERS: usize = 8;
/// Updates buffered per stream reader; a reader further behind is cut off (it can reopen).
const READER_QUEUE: usize = 1024;
/// Longest query accepted: gtk-gnutella drops query descriptors over 1024 bytes, and search
/// words are a small part of one.
pub const MAX_QUERY: usize = 256;

/// A source as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SourceView {
    pub addr: std::net::SocketAddrV4,
    pub servent: ServentId,
    pub push: bool,
}

/// One file found, with its sources.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub urn: Sha1Urn,
    pub name: String,
    pub size: u64,
    pub sources: Vec<SourceView>,
}

impl From<&Spec> for Group {
    fn from(s: &Spec) -> Self {
        Group {
            urn: s.urn,
            name: s.name.clone(),
            size: s.size,
            sources: s
                .sources
                .iter()
                .map(|x| SourceView {
                    addr: x.addr,
                    servent: x.servent,
                    push: x.push,
                })
                .collect(),
        }
    }
}

/// A search in the list.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub id: u64,
    pub query: String,
    pub running: bool,
    pub files: usize,
    pub sources: usize,
}

/// A search with its results.
#[derive(Debug, Clone, Serialize)]
pub struct Detail {
    pub id: u64,
    pub query: String,
    pub running: bool,
    pub results: Vec<Group>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SearchError {
    #[error("the query is empty: give some words to search for")]
    EmptyQuery,
    #[error("the query is {0} bytes long; at most {MAX_QUERY} are sent")]
    QueryTooLong(usize),
    #[error("{MAX_SEARCHES} searches are running; stop one (DELETE /api/searches/ID) first")]
    TooMany,
    #[error("no search {0}")]
    NotFound(u64),
    #[error("{MAX_READERS} readers already follow search {0}")]
    TooManyReaders(u64),
}

struct Live {
    id: u64,
    query: String,
    muid: crate::wire::Guid,
    running: bool,
    groups: Vec<Spec>,
    readers: Vec<Sender<Arc<Group>>>,
}

impl Live {
    fn stop(&mut self, servent: &Servent) {
        if self.running {
            self.running = false;
            servent.stop_search(&self.muid);
        }
        // Closing the channels ends every stream.
        self.readers.clear();
    }
}

/// The searches of the API.
pub struct Searches {
    servent: Servent,
    live: Mutex<Vec<Live>>,
    next: AtomicU64,
}

impl Searches {
    pub fn new(servent: Servent) -> Arc<Self> {
        Arc::new(Searches {
            servent,
            live: Mutex::new(Vec::new()),
            next: AtomicU64::new(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a search for `query`; returns its id.
    pub fn start(self: &Arc<Self>, query: &str) -> Result<u64, SearchError> {
        let query = query.trim();
        if query.is_empty() {
            return Err(SearchError::EmptyQuery);
        }
        if query.len() > MAX_QUERY {
            return Err(SearchError::QueryTooLong(query.len()));
        }
        let mut live = self.lock();
        if live.iter().filter(|l| l.running).count() >= MAX_SEARCHES {
            return Err(SearchError::TooMany);
        }
        if live.len() >= MAX_SEARCHES
            && let Some(oldest) = live.iter().position(|l| !l.running)
        {
            live.remove(oldest);
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let search = self.servent.search(query);
        live.push(Live {
            id,
            query: query.to_string(),
            muid: search.muid,
            running: true,
            groups: Vec::new(),
            readers: Vec::new(),
        });
        drop(live);
        log::info!("search {id}: {query:?}");
        let me = self.clone();
        async_std::task::spawn(async move { me.collect(id, search.hits).await });
        Ok(id)
    }

    async fn collect(&self, id: u64, hits: Receiver<Arc<[u8]>>) {
        let end = Instant::now() + SEARCH_LIFETIME;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            let Ok(Ok(msg)) = async_std::future::timeout(left, hits.recv()).await else {
                break;
            };
            let mut live = self.lock();
            let Some(l) = live.iter_mut().find(|l| l.id == id && l.running) else {
                return;
            };
            for f in found_in_hit(&msg) {
                let at = l.groups.iter().position(|g| g.urn == f.urn);
                let changed = match at {
                    None if l.groups.len() >= MAX_RESULTS => None,
                    None => {
                        add_found(&mut l.groups, f);
                        Some(l.groups.len() - 1)
                    }
                    Some(i) if l.groups[i].sources.len() >= MAX_SOURCES => None,
                    Some(i) => {
                        let before = l.groups[i].sources.len();
                        add_found(&mut l.groups, f);
                        (l.groups[i].sources.len() > before).then_some(i)
                    }
                };
                if let Some(i) = changed {
                    let g = Arc::new(Group::from(&l.groups[i]));
                    // A reader that is gone or too far behind is dropped.
                    l.readers.retain(|r| r.try_send(g.clone()).is_ok());
                }
            }
        }
        if let Some(l) = self.lock().iter_mut().find(|l| l.id == id) {
            l.stop(&self.servent);
        }
    }

    pub fn list(&self) -> Vec<Summary> {
        self.lock()
            .iter()
            .map(|l| Summary {
                id: l.id,
                query: l.query.clone(),
                running: l.running,
                files: l.groups.len(),
                sources: l.groups.iter().map(|g| g.sources.len()).sum(),
            })
            .collect()
    }

    pub fn detail(&self, id: u64) -> Result<Detail, SearchError> {
        let live = self.lock();
        let l = live
            .iter()
            .find(|l| l.id == id)
            .ok_or(SearchError::NotFound(id))?;
        let mut results: Vec<Group> = l.groups.iter().map(Group::from).collect();
        results.sort_by(|a, b| {
            b.sources
                .len()
                .cmp(&a.sources.len())
                .then(a.name.cmp(&b.name))
        });
        Ok(Detail {
            id,
            query: l.query.clone(),
            running: l.running,
            results,
        })
    }

    /// The download spec of a file this search found.
    pub fn spec(&self, id: u64, urn: &Sha1Urn) -> Result<Option<Spec>, SearchError> {
        let live = self.lock();
        let l = live
            .iter()
            .find(|l| l.id == id)
            .ok_or(SearchError::NotFound(id))?;
        Ok(l.groups.iter().find(|g| &g.urn == urn).cloned())
    }

    /// The groups known so far, and a channel of updates until the search stops (closed when
    /// it does; an already stopped search gives a closed channel).
    pub fn follow(&self, id: u64) -> Result<(Vec<Group>, Receiver<Arc<Group>>), SearchError> {
        let mut live = self.lock();
        let l = live
            .iter_mut()
            .find(|l| l.id == id)
            .ok_or(SearchError::NotFound(id))?;
        let now = l.groups.iter().map(Group::from).collect();
        let (tx, rx) = bounded(READER_QUEUE);
        if l.running {
            l.readers.retain(|r| !r.is_closed());
            if l.readers.len() >= MAX_READERS {
                return Err(SearchError::TooManyReaders(id));
            }
            l.readers.push(tx);
        }
        Ok((now, rx))
    }

    /// Stops a search; its results stay until newer searches push it out.
    pub fn stop(&self, id: u64) -> Result<(), SearchError> {
        let mut live = self.lock();
        let l = live
            .iter_mut()
            .find(|l| l.id == id)
            .ok_or(SearchError::NotFound(id))?;
        l.stop(&self.servent);
        Ok(())
    }

    pub fn running(&self) -> usize {
        self.lock().iter().filter(|l| l.running).count()
    }
}
