//! What was uploaded to whom: one record per downloader and file, across all the range
//! requests it takes the file in (a 2 GB file is hundreds of requests, one upload). A record
//! is complete when the ranges sent to that downloader cover the file: that, not a request,
//! is an upload served (the count hits and the reputation use).

use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::swarm::ranges::RangeSet;
use crate::wire::Sha1Urn;

/// Finished uploads remembered for status displays; older ones are forgotten. A page shows
/// about a screenful.
pub const RECENT_UPLOADS: usize = 50;

/// One upload (a file to a downloader) as a status display shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UploadView {
    pub peer: SocketAddrV4,
    pub name: String,
    /// Bytes sent so far, over all its requests.
    pub bytes: u64,
    /// The file's size.
    pub size: u64,
    /// Range requests served.
    pub requests: u32,
    /// Seconds since its first request.
    pub started_secs: u64,
    /// A request of it is being served.
    pub active: bool,
    /// Every byte of the file has gone to this downloader.
    pub complete: bool,
}

struct Record {
    peer: SocketAddrV4,
    urn: Sha1Urn,
    name: String,
    size: u64,
    started: Instant,
    last: Instant,
    bytes: u64,
    sent: RangeSet,
    active: u32,
    requests: u32,
    complete: bool,
}

impl Record {
    fn view(&self) -> UploadView {
        UploadView {
            peer: self.peer,
            name: self.name.clone(),
            bytes: self.bytes,
            size: self.size,
            requests: self.requests,
            started_secs: self.started.elapsed().as_secs(),
            active: self.active > 0,
            complete: self.complete,
        }
    }
}

/// The records: those with a request running (bounded by the slots) and the last
/// [`RECENT_UPLOADS`] others.
#[derive(Default)]
pub struct Tracker {
    records: Mutex<VecDeque<Record>>,
}

impl Tracker {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Record>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request of `peer` (its IP and listening port) for `urn` starts being served.
    pub fn start(
        self: &Arc<Self>,
        peer: SocketAddrV4,
        urn: Sha1Urn,
        name: &str,
        size: u64,
    ) -> Tracking {
        let mut r = self.lock();
        let now = Instant::now();
        match r.iter_mut().find(|x| x.peer == peer && x.urn == urn) {
            Some(x) => {
                x.active += 1;
                x.requests += 1;
                x.last = now;
            }
            None => {
                // One line per upload, however many range requests it takes.
                log::info!("uploading {name} to {peer}");
                let idle = r.iter().filter(|x| x.active == 0).count();
                if idle >= RECENT_UPLOADS
                    && let Some(i) = r
                        .iter()
                        .enumerate()
                        .filter(|(_, x)| x.active == 0)
                        .min_by_key(|(_, x)| x.last)
                        .map(|(i, _)| i)
                {
                    r.remove(i);
                }
                r.push_back(Record {
                    peer,
                    urn,
                    name: name.to_string(),
                    size,
                    started: now,
                    last: now,
                    bytes: 0,
                    sent: RangeSet::new(),
                    active: 1,
                    requests: 1,
                    complete: size == 0,
                });
            }
        }
        Tracking {
            tracker: self.clone(),
            peer,
            urn,
        }
    }

    /// Records in order for displays: those running first, then the latest.
    pub fn list(&self) -> Vec<UploadView> {
        let r = self.lock();
        let mut v: Vec<(&Record, UploadView)> = r.iter().map(|x| (x, x.view())).collect();
        v.sort_by_key(|(x, _)| (x.active == 0, std::cmp::Reverse(x.last)));
        v.into_iter().map(|(_, view)| view).collect()
    }

    /// Uploads with a request being served.
    pub fn active(&self) -> usize {
        self.lock().iter().filter(|x| x.active > 0).count()
    }
}

/// Held by a request's body: books the bytes it sends; dropping it (sent or abandoned) ends
/// the request.
pub struct Tracking {
    tracker: Arc<Tracker>,
    peer: SocketAddrV4,
    urn: Sha1Urn,
}

impl Tracking {
    /// [a, b) of the file went out. True when that made the upload complete.
    pub fn sent(&self, a: u64, b: u64) -> bool {
        let mut r = self.tracker.lock();
        let Some(x) = r
            .iter_mut()
            .find(|x| x.peer == self.peer && x.urn == self.urn)
        else {
            return false;
        };
        x.bytes += b.saturating_sub(a);
        x.last = Instant::now();
        x.sent.insert(a, b);
        if !x.complete && x.sent.covered_len() >= x.size {
            x.complete = true;
            log::info!(
                "uploaded {} to {}: {} in {} s ({})",
                x.name,
                x.peer,
                crate::text::human(x.bytes),
                x.started.elapsed().as_secs(),
                crate::text::count(u64::from(x.requests), "request", "requests")
            );
            return true;
        }
        false
    }
}

impl Drop for Tracking {
    fn drop(&mut self) {
        let mut r = self.tracker.lock();
        if let Some(x) = r
            .iter_mut()
            .find(|x| x.peer == self.peer && x.urn == self.urn)
        {
            x.active = x.active.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urn(n: u8) -> Sha1Urn {
        Sha1Urn::digest(&[n])
    }

    #[test]
    fn a_file_in_many_requests_is_one_upload_complete_once_every_byte_went() {
        let t = Arc::new(Tracker::default());
        let peer: SocketAddrV4 = "100.64.0.9:6346".parse().unwrap();
        let mut completions = 0;
        for k in 0..10u64 {
            let tr = t.start(peer, urn(1), "big.bin", 1000);
            completions += u32::from(tr.sent(k * 100, k * 100 + 100));
            // The same range again completes nothing.
            completions += u32::from(tr.sent(0, 100));
            assert_eq!(t.active(), 1);
        }
        assert_eq!(completions, 1);
        assert_eq!(t.active(), 0);
        let v = t.list();
        assert_eq!(v.len(), 1);
        assert_eq!((v[0].requests, v[0].bytes, v[0].complete), (10, 2000, true));
        // Another file, and another downloader, are other uploads.
        drop(t.start(peer, urn(2), "other", 10));
        drop(t.start("100.64.0.8:6346".parse().unwrap(), urn(1), "big.bin", 1000));
        assert_eq!(t.list().len(), 3);
    }

    #[test]
    fn finished_records_are_bounded() {
        let t = Arc::new(Tracker::default());
        for i in 0..(RECENT_UPLOADS as u16 + 20) {
            let peer = SocketAddrV4::new([100, 64, 1, 1].into(), 1000 + i);
            drop(t.start(peer, urn(1), "f", 5));
        }
        let running = t.start("100.64.2.2:1".parse().unwrap(), urn(1), "f", 5);
        assert_eq!(t.list().len(), RECENT_UPLOADS);
        assert!(t.list()[0].active);
        drop(running);
    }
}
