//! Downloads started through the API: each looks for sources (unless a search already found
//! them), then downloads in its own task. Pause drops that task (the downloader saves its
//! state after every chunk, so nothing is lost but the chunks in flight); resume starts a new
//! one that picks up the saved state; cancel also removes the partial file and its state.
//!
//! The list itself is kept in the data directory (`downloads.json`, rewritten whole at every
//! change): after a restart each running download resumes from its saved ranges and sources,
//! paused ones stay paused, and finished ones stay listed until cleared. A partial file in the
//! download folder that no entry names is adopted, paused, and said so in the log.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_std::channel::{Sender, bounded};
use serde::{Deserialize, Serialize};

use crate::servent::{Servent, add_found, found_in_hit};
use crate::transfer::download::{self, Progress, Spec};
use crate::wire::Sha1Urn;

/// Downloads listed at once; finished ones are forgotten oldest first to make room.
pub const MAX_DOWNLOADS: usize = 100;
/// How long a download by SHA-1 alone waits for its first source.
pub const SOURCE_WAIT: Duration = Duration::from_secs(20);
/// After the first source answers, more are gathered for this long before starting.
pub const MORE_SOURCES: Duration = Duration::from_secs(1);
/// The list's file in the data directory.
pub const LIST_FILE: &str = "downloads.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Searching,
    Downloading,
    Paused,
    Done,
    Failed,
    Cancelled,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Searching,
        State::Downloading,
        State::Paused,
        State::Done,
        State::Failed,
        State::Cancelled,
    ];

    fn finished(self) -> bool {
        matches!(self, State::Done | State::Failed | State::Cancelled)
    }

    /// The name the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Searching => "searching",
            State::Downloading => "downloading",
            State::Paused => "paused",
            State::Done => "done",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }
}

/// Stops a search when dropped, so a paused or cancelled source search stops too.
struct SearchGuard<'a>(&'a Servent, crate::wire::Guid);

impl Drop for SearchGuard<'_> {
    fn drop(&mut self) {
        self.0.stop_search(&self.1);
    }
}

/// A download as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct View {
    pub id: u64,
    pub urn: Sha1Urn,
    pub name: String,
    pub size: u64,
    pub state: State,
    pub bytes: u64,
    pub rate_bps: u64,
    pub eta_secs: Option<u64>,
    pub sources: usize,
    pub path: Option<PathBuf>,
    pub error: Option<String>,
    /// The sources in use: bytes each gave, which are partial, which came from the mesh.
    pub swarm: Vec<download::SourceView>,
    /// The chunk map: `#` held, `>` in flight, `.` missing.
    pub chunks: String,
    /// Bytes checked against a Tiger tree, and bytes received from partial sources.
    pub verified: u64,
    pub from_partial: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DownloadError {
    #[error("no download {0}")]
    NotFound(u64),
    #[error("download {0} is {1:?}: only a running download can be paused")]
    NotRunning(u64, State),
    #[error("download {0} is {1:?}: only a paused or failed download can be resumed")]
    NotPaused(u64, State),
    #[error("{MAX_DOWNLOADS} downloads are in progress; wait for one or cancel one")]
    TooMany,
    #[error("{0} is already being downloaded (download {1})")]
    Duplicate(Sha1Urn, u64),
    #[error("you already share {0}: {path}", path = .1.display())]
    Shared(Sha1Urn, PathBuf),
    #[error("{0} is already downloaded: {path} (download {2})", path = .1.display())]
    Have(Sha1Urn, PathBuf, u64),
    #[error("download {0} is {1:?}: only a finished download can be cleared")]
    NotFinished(u64, State),
}

/// An entry as the list's file keeps it.
#[derive(Serialize, Deserialize)]
struct Saved {
    id: u64,
    urn: Sha1Urn,
    name: Option<String>,
    spec: Option<Spec>,
    state: State,
    path: Option<PathBuf>,
    error: Option<String>,
}

struct Entry {
    id: u64,
    urn: Sha1Urn,
    /// Name to save as (from the magnet link or the first source), and the size once known.
    name: Option<String>,
    spec: Option<Spec>,
    state: State,
    progress: Arc<Progress>,
    /// When the current run started and the bytes there were then, for the rate.
    run: (Instant, u64),
    path: Option<PathBuf>,
    error: Option<String>,
    stop: Option<Sender<()>>,
    /// Counts runs, so a stopped run finishing late does not touch the run after it.
    generation: u64,
    /// Its task runs (until [`Downloads::finish`]).
    task: bool,
}

impl Entry {
    /// An entry with no task running yet, from what the list's file keeps; `done` bytes of it
    /// are saved already.
    fn idle(s: Saved, done: u64) -> Entry {
        let progress = Arc::new(Progress::default());
        if let Some(spec) = &s.spec {
            progress.total.store(spec.size, Ordering::Relaxed);
        }
        progress.done.store(done, Ordering::Relaxed);
        Entry {
            id: s.id,
            urn: s.urn,
            name: s.name,
            spec: s.spec,
            state: s.state,
            progress,
            run: (Instant::now(), 0),
            path: s.path,
            error: s.error,
            stop: None,
            generation: 0,
            task: false,
        }
    }

    /// What the list's file keeps of it.
    fn saved(&self) -> Saved {
        Saved {
            id: self.id,
            urn: self.urn,
            name: self.name.clone(),
            spec: self.spec.clone(),
            state: self.state,
            path: self.path.clone(),
            error: self.error.clone(),
        }
    }

    fn view(&self) -> View {
        let (swarm, chunks) = self.progress.detail();
        let bytes = self.progress.done.load(Ordering::Relaxed);
        let size = self.spec.as_ref().map_or(0, |s| s.size);
        let secs = self.run.0.elapsed().as_secs_f64();
        let rate = if self.state == State::Downloading && secs > 0.0 {
            (bytes.saturating_sub(self.run.1) as f64 / secs) as u64
        } else {
            0
        };
        View {
            id: self.id,
            urn: self.urn,
            name: self.name.clone().unwrap_or_else(|| self.urn.to_string()),
            size,
            state: self.state,
            bytes,
            rate_bps: rate,
            eta_secs: (rate > 0).then(|| size.saturating_sub(bytes) / rate),
            sources: self.spec.as_ref().map_or(0, |s| s.sources.len()),
            path: self.path.clone(),
            error: self.error.clone(),
            swarm,
            chunks,
            verified: self.progress.verified.load(Ordering::Relaxed),
            from_partial: self.progress.from_partial.load(Ordering::Relaxed),
        }
    }
}

/// The downloads of the API.
pub struct Downloads {
    servent: Servent,
    dir: PathBuf,
    list: Mutex<Vec<Entry>>,
    next: AtomicU64,
    /// Where the list is kept.
    file: PathBuf,
    /// The last save failed (said once in the log, not at every change).
    save_failed: std::sync::atomic::AtomicBool,
}

impl Downloads {
    /// The downloads kept in the data directory, running ones resumed, and partial files of
    /// the download folder that no entry names adopted as paused downloads.
    pub fn open(servent: Servent, dir: PathBuf) -> Arc<Self> {
        let file = servent.data_dir().join(LIST_FILE);
        let saved: Vec<Saved> = match std::fs::read(&file) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                log::warn!(
                    "{} is unreadable ({e}): starting an empty list",
                    file.display()
                );
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        let me = Arc::new(Downloads {
            servent,
            dir,
            list: Mutex::new(Vec::new()),
            next: AtomicU64::new(1),
            file,
            save_failed: Default::default(),
        });
        let mut list = me.lock();
        for s in saved.into_iter().take(MAX_DOWNLOADS) {
            let done = s.spec.as_ref().map_or(0, |spec| {
                if s.state == State::Done {
                    spec.size
                } else {
                    download::saved_bytes(&me.dir, &spec.name, &spec.urn)
                }
            });
            me.next.fetch_max(s.id + 1, Ordering::Relaxed);
            list.push(Entry::idle(s, done));
        }
        me.adopt(&mut list);
        let mut resumed = 0;
        for e in list.iter_mut() {
            if matches!(e.state, State::Searching | State::Downloading) {
                me.launch(e);
                resumed += 1;
            }
        }
        if !list.is_empty() {
            log::info!(
                "{} kept from the last run, {resumed} resumed",
                crate::text::count(list.len() as u64, "download", "downloads")
            );
        }
        me.save(&list);
        drop(list);
        me
    }

    /// Partial downloads in the folder that no entry names become paused entries: never left
    /// there unseen.
    fn adopt(&self, list: &mut Vec<Entry>) {
        for (spec, have) in download::saved_downloads(&self.dir) {
            if list.len() >= MAX_DOWNLOADS {
                log::warn!(
                    "a partial download of {} in {} is not listed: the list is full",
                    spec.name,
                    self.dir.display()
                );
                continue;
            }
            if list
                .iter()
                .any(|e| e.urn == spec.urn && !matches!(e.state, State::Done | State::Cancelled))
            {
                continue;
            }
            let id = self.next.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "found a partial download of {} in {} ({} of {}): listed as paused download \
                 {id}; resume it or cancel it",
                spec.name,
                self.dir.display(),
                crate::text::human(have),
                crate::text::human(spec.size)
            );
            let saved = Saved {
                id,
                urn: spec.urn,
                name: Some(spec.name.clone()),
                spec: Some(spec),
                state: State::Paused,
                path: None,
                error: None,
            };
            list.push(Entry::idle(saved, have));
        }
    }

    /// Removes what `e` left in the download folder (its partial file and state).
    fn discard_partial(&self, e: &Entry) {
        if let Some(s) = &e.spec
            && let Err(err) = download::discard(&self.dir, &s.name)
        {
            log::warn!("cannot remove the partial download of {}: {err}", s.name);
        }
    }

    /// Writes the list (atomically: a crash leaves the old one or the new one).
    fn save(&self, list: &[Entry]) {
        let saved: Vec<Saved> = list.iter().map(Entry::saved).collect();
        let r = serde_json::to_vec_pretty(&saved)
            .map_err(std::io::Error::other)
            .and_then(|b| crate::store::write_atomic(&self.file, &b));
        match r {
            Ok(()) => self.save_failed.store(false, Ordering::Relaxed),
            Err(e) => {
                if !self.save_failed.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "cannot save the download list to {}: {e}",
                        self.file.display()
                    );
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Adds a download of `urn`. With `spec` (sources from a search) it starts at once;
    /// otherwise it first searches the network for sources.
    pub fn add(
        self: &Arc<Self>,
        urn: Sha1Urn,
        name: Option<String>,
        spec: Option<Spec>,
    ) -> Result<View, DownloadError> {
        let shared = self
            .servent
            .library()
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_urn(&urn)
            .map(|f| f.path.clone());
        if let Some(path) = shared {
            return Err(DownloadError::Shared(urn, path));
        }
        let mut list = self.lock();
        if let Some(e) = list.iter().find(|e| e.urn == urn && !e.state.finished()) {
            return Err(DownloadError::Duplicate(urn, e.id));
        }
        if let Some(e) = list.iter().find(|e| {
            e.urn == urn && e.state == State::Done && e.path.as_ref().is_some_and(|p| p.exists())
        }) {
            let path = e.path.clone().unwrap_or_default();
            return Err(DownloadError::Have(urn, path, e.id));
        }
        if list.len() >= MAX_DOWNLOADS {
            match list.iter().position(|e| e.state.finished()) {
                Some(i) => {
                    list.remove(i);
                }
                None => return Err(DownloadError::TooMany),
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut spec = spec;
        if let (Some(s), Some(n)) = (spec.as_mut(), name.as_ref()) {
            s.name = n.clone();
        }
        let entry = Entry::idle(
            Saved {
                id,
                urn,
                name: name.or_else(|| spec.as_ref().map(|s| s.name.clone())),
                spec,
                state: State::Searching,
                path: None,
                error: None,
            },
            0,
        );
        list.push(entry);
        let view = self.launch(list.last_mut().expect("just pushed"));
        self.save(&list);
        Ok(view)
    }

    /// Starts (or restarts) the task of `e`.
    fn launch(self: &Arc<Self>, e: &mut Entry) -> View {
        let (tx, rx) = bounded::<()>(1);
        e.stop = Some(tx);
        e.error = None;
        e.generation += 1;
        e.task = true;
        let generation = e.generation;
        e.state = if e.spec.is_some() {
            State::Downloading
        } else {
            State::Searching
        };
        let id = e.id;
        let me = self.clone();
        async_std::task::spawn(async move {
            let work = me.work(id);
            let stopped = async {
                let _ = rx.recv().await;
                None
            };
            let outcome = futures_lite::future::or(async { Some(work.await) }, stopped).await;
            me.finish(id, generation, outcome);
        });
        e.view()
    }

    /// Finds sources if needed, then downloads. The result is the saved file's path.
    async fn work(&self, id: u64) -> Result<PathBuf, String> {
        let Some((urn, spec, progress, name)) = self
            .lock()
            .iter()
            .find(|e| e.id == id)
            .map(|e| (e.urn, e.spec.clone(), e.progress.clone(), e.name.clone()))
        else {
            return Err("forgotten".into());
        };
        let spec = match spec {
            Some(s) => s,
            None => {
                let s = self.find_sources(&urn, name.as_deref()).await?;
                let mut list = self.lock();
                let e = list.iter_mut().find(|e| e.id == id).ok_or("forgotten")?;
                let mut s = s;
                if let Some(n) = &e.name {
                    s.name = n.clone();
                }
                e.name = Some(s.name.clone());
                e.spec = Some(s.clone());
                e.state = State::Downloading;
                e.progress.total.store(s.size, Ordering::Relaxed);
                // Its sources are kept: a restart resumes without searching again.
                self.save(&list);
                s
            }
        };
        let have = download::saved_bytes(&self.dir, &spec.name, &spec.urn);
        if let Some(e) = self.lock().iter_mut().find(|e| e.id == id) {
            e.run = (Instant::now(), have);
            e.progress.done.store(have, Ordering::Relaxed);
        }
        self.servent
            .download(spec, &self.dir, &progress)
            .await
            .map_err(|e| e.to_string())
    }

    async fn find_sources(&self, urn: &Sha1Urn, name: Option<&str>) -> Result<Spec, String> {
        // A search sent before we have a link goes nowhere (a download added at start, or
        // resumed after a restart): wait for one first.
        let linking = Instant::now() + SOURCE_WAIT;
        while self.servent.node().connections().is_empty() && Instant::now() < linking {
            async_std::task::sleep(Duration::from_millis(100)).await;
        }
        let search = self.servent.search_urn_named(urn, name);
        let _stop = SearchGuard(&self.servent, search.muid);
        let mut specs = Vec::new();
        let mut end = Instant::now() + SOURCE_WAIT;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            let Ok(Ok(msg)) = async_std::future::timeout(left, search.hits.recv()).await else {
                break;
            };
            for f in found_in_hit(&msg).into_iter().filter(|f| &f.urn == urn) {
                if specs.is_empty() {
                    end = end.min(Instant::now() + MORE_SOURCES);
                }
                add_found(&mut specs, f);
            }
        }
        specs.pop().ok_or_else(|| {
            format!(
                "no source answered within {} s; try again later or add it from a search",
                SOURCE_WAIT.as_secs()
            )
        })
    }

    fn finish(&self, id: u64, generation: u64, outcome: Option<Result<PathBuf, String>>) {
        let mut list = self.lock();
        let Some(e) = list
            .iter_mut()
            .find(|e| e.id == id && e.generation == generation)
        else {
            return;
        };
        e.stop = None;
        e.task = false;
        match outcome {
            Some(Ok(path)) => {
                e.state = State::Done;
                if let Some(s) = &e.spec {
                    e.progress.done.store(s.size, Ordering::Relaxed);
                }
                e.path = Some(path);
            }
            Some(Err(why)) => {
                log::info!("download {id} failed: {why}");
                e.state = State::Failed;
                e.error = Some(why);
            }
            // Stopped by pause or cancel, which set the state already.
            None => {}
        }
        if e.state == State::Cancelled {
            self.discard_partial(e);
        }
        self.save(&list);
    }

    pub fn list(&self) -> Vec<View> {
        self.lock().iter().map(Entry::view).collect()
    }

    pub fn get(&self, id: u64) -> Result<View, DownloadError> {
        self.lock()
            .iter()
            .find(|e| e.id == id)
            .map(Entry::view)
            .ok_or(DownloadError::NotFound(id))
    }

    pub fn pause(&self, id: u64) -> Result<View, DownloadError> {
        let mut list = self.lock();
        let e = list
            .iter_mut()
            .find(|e| e.id == id)
            .ok_or(DownloadError::NotFound(id))?;
        if !matches!(e.state, State::Searching | State::Downloading) {
            return Err(DownloadError::NotRunning(id, e.state));
        }
        e.state = State::Paused;
        if let Some(stop) = e.stop.take() {
            let _ = stop.try_send(());
        }
        let view = e.view();
        self.save(&list);
        Ok(view)
    }

    pub fn resume(self: &Arc<Self>, id: u64) -> Result<View, DownloadError> {
        let mut list = self.lock();
        let e = list
            .iter_mut()
            .find(|e| e.id == id)
            .ok_or(DownloadError::NotFound(id))?;
        if !matches!(e.state, State::Paused | State::Failed) {
            return Err(DownloadError::NotPaused(id, e.state));
        }
        let view = self.launch(e);
        self.save(&list);
        Ok(view)
    }

    pub fn cancel(&self, id: u64) -> Result<View, DownloadError> {
        let mut list = self.lock();
        let e = list
            .iter_mut()
            .find(|e| e.id == id)
            .ok_or(DownloadError::NotFound(id))?;
        if e.state == State::Done {
            // The file is complete and in place: cancelling it now would delete a good file.
            return Ok(e.view());
        }
        let was = e.state;
        e.state = State::Cancelled;
        match e.stop.take() {
            // The task removes the partial files once it has stopped writing.
            Some(stop) => {
                let _ = stop.try_send(());
            }
            None if was != State::Cancelled => self.discard_partial(e),
            None => {}
        }
        let view = e.view();
        self.save(&list);
        Ok(view)
    }

    /// Forgets a finished download (the file, when done, stays where it is); a failed one's
    /// partial file goes too, or the next start would adopt it again.
    pub fn clear(&self, id: u64) -> Result<View, DownloadError> {
        let mut list = self.lock();
        let at = list
            .iter()
            .position(|e| e.id == id)
            .ok_or(DownloadError::NotFound(id))?;
        let e = &list[at];
        // A cancelled one still stopping removes its partial file when it has stopped.
        if !e.state.finished() || e.task {
            return Err(DownloadError::NotFinished(id, e.state));
        }
        if matches!(e.state, State::Failed | State::Cancelled) {
            self.discard_partial(e);
        }
        let view = list.remove(at).view();
        self.save(&list);
        Ok(view)
    }

    /// Forgets every finished download; how many.
    pub fn clear_finished(&self) -> usize {
        let ids: Vec<u64> = self
            .lock()
            .iter()
            .filter(|e| e.state.finished())
            .map(|e| e.id)
            .collect();
        ids.into_iter().filter(|&id| self.clear(id).is_ok()).count()
    }

    pub fn active(&self) -> usize {
        self.lock()
            .iter()
            .filter(|e| matches!(e.state, State::Searching | State::Downloading))
            .count()
    }
}
