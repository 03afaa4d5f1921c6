//! PARQ, the upload queue as gtk-gnutella speaks it (SWARM.md §4; gtk-gnutella `parq.c`): a
//! downloader refused a slot gets an ID and a place, told in `X-Queued`, keeps them by naming
//! the ID when it comes back, and may be called back with `QUEUE` when its turn comes. A pure
//! core: `now` is a parameter, the upload server drives it, and the order inside the queue is
//! the caller's (arrival, or the choker's rank).

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::choke::PeerId;

/// Entries at once, in all and per IP address (gtk-gnutella holds 4000 a queue,
/// `MAX_UPLOAD_QSIZE`; ours are per downloader and file, which a host multiplies less).
pub const MAX_ENTRIES: usize = 4096;
pub const MAX_ENTRIES_PER_IP: usize = 64;
/// What a queued entry is told it has past its `Retry-After` before it is forgotten, as
/// gtk-gnutella announces it (`lifetime` = Retry-After + 60: its `MIN_LIFE_TIME` less the 40 s
/// `PARQ_RETRY_SAFETY` it keeps for itself).
pub const LIFE_AFTER_RETRY: Duration = Duration::from_secs(60);
/// How late past its `Retry-After` an entry may come and still count in the positions of the
/// others: one that misses it is passed over (it keeps its ID and, on its return, its place,
/// as gtk-gnutella's dead entries do). Short: a downloader that no longer needs this source
/// (it finished, or got the range elsewhere) says nothing, and while it counts it keeps a
/// free slot from those present (the swarm benchmark's tail stretched by seconds with 10 s).
/// gtk-gnutella asks again within a second of its `Retry-After`.
pub const RETRY_WINDOW: Duration = Duration::from_secs(2);
/// A retry this much earlier than announced is counted (gtk-gnutella tolerates 10 s); the
/// [`BAN_AFTER`]th within [`BAN_WINDOW`] bans the address for [`BAN_FOR`] (`parq_ban_bad_*`).
pub const EARLY_TOLERANCE: Duration = Duration::from_secs(10);
pub const BAN_AFTER: u32 = 10;
pub const BAN_WINDOW: Duration = Duration::from_secs(600);
pub const BAN_FOR: Duration = Duration::from_secs(600);
/// `QUEUE` callbacks: at most one per address in this time (gtk-gnutella `QUEUE_HOST_DELAY`,
/// which it counts per IP: we allow a few servents behind one IP, [`MAX_CALLS_PER_IP`]), and
/// an entry is given up after this many refused in a row (`MAX_QUEUE_REFUSED`).
pub const QUEUE_HOST_DELAY: Duration = Duration::from_secs(12);
pub const MAX_CALLS_PER_IP: usize = 8;
pub const MAX_QUEUE_REFUSED: u32 = 2;
/// Bans remembered at once.
pub const MAX_BANS: usize = 1024;

/// A queue entry's ID: 16 random bytes, 32 lowercase hex digits on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(pub [u8; 16]);

impl QueueId {
    pub fn parse(hex: &str) -> Option<Self> {
        let hex = hex.trim();
        if hex.len() != 32 || !hex.is_ascii() {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(QueueId(out))
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The fields of an `X-Queued` header. On the wire: `ID=<hex>; position=N; lifetime=S;
/// length=N; ETA=S`, ID first, as gtk-gnutella writes it (`parq_upload_add_headers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Queued {
    pub id: Option<QueueId>,
    /// 1 = next.
    pub position: Option<u32>,
    pub length: Option<u32>,
    /// Seconds the entry lives unless asked again.
    pub lifetime: Option<u32>,
    pub eta: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueuedError {
    #[error("X-Queued is too long")]
    TooLong,
}

/// Longest `X-Queued` value read.
const MAX_HEADER: usize = 512;

/// Where field `name` starts in `v` as gtk-gnutella finds it (`get_header_value`): the first
/// match, in any case, at the start or after `;`, `,`, `:` or a space, followed by spaces and
/// `=`. Returns the text after the `=`.
fn field<'a>(v: &'a str, name: &str) -> Option<&'a str> {
    let lower = v.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find(name) {
        let at = from + i;
        from = at + name.len();
        let before_ok = at == 0 || matches!(v.as_bytes()[at - 1], b';' | b',' | b':' | b' ');
        let rest = v[from..].trim_start_matches(' ');
        if before_ok && let Some(value) = rest.strip_prefix('=') {
            return Some(value);
        }
    }
    None
}

/// gtk-gnutella's `get_integer`: leading spaces, then the digits up to the first other
/// character; none is 0, too many saturate at `i32::MAX`.
fn integer(v: &str) -> u32 {
    let digits: &str = {
        let t = v.trim_start_matches(' ');
        &t[..t.bytes().take_while(u8::is_ascii_digit).count()]
    };
    let max = i32::MAX as u64;
    digits
        .bytes()
        .try_fold(0u64, |n, d| {
            let n = n * 10 + u64::from(d - b'0');
            (n <= max).then_some(n)
        })
        .unwrap_or(max) as u32
}

impl Queued {
    /// gtk-gnutella's reader (`parq_download_parse_queue_status`): fields by name in any
    /// case and order, the first of each winning, unknown ones ignored, numbers read as far as
    /// they go. The ID runs to the next `;` (or `,` when there is none); one that is not 32 hex
    /// digits is not one we can name back, and is left out.
    pub fn parse(v: &str) -> Result<Queued, QueuedError> {
        if v.len() > MAX_HEADER {
            return Err(QueuedError::TooLong);
        }
        let id = field(v, "id").and_then(|rest| {
            let end = rest
                .find(';')
                .or_else(|| rest.find(','))
                .unwrap_or(rest.len());
            QueueId::parse(&rest[..end])
        });
        let num = |name| field(v, name).map(integer);
        Ok(Queued {
            id,
            position: num("position"),
            length: num("length"),
            lifetime: num("lifetime"),
            eta: num("eta"),
        })
    }

    /// The lifetime gtk-gnutella counts on, given the answer's `Retry-After`: a missing one is
    /// `Retry-After + 1`, one below `Retry-After` is at least 300.
    pub fn lifetime_given(&self, retry_after: u32) -> u32 {
        match self.lifetime {
            None => retry_after.saturating_add(1),
            Some(l) if l < retry_after => retry_after.max(300),
            Some(l) => l,
        }
    }
}

impl fmt::Display for Queued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        let mut field = |f: &mut fmt::Formatter<'_>, name: &str, v: &dyn fmt::Display| {
            let r = write!(f, "{sep}{name}={v}");
            sep = "; ";
            r
        };
        if let Some(id) = &self.id {
            field(f, "ID", id)?;
        }
        if let Some(p) = self.position {
            field(f, "position", &p)?;
        }
        if let Some(l) = self.lifetime {
            field(f, "lifetime", &l)?;
        }
        if let Some(l) = self.length {
            field(f, "length", &l)?;
        }
        if let Some(e) = self.eta {
            field(f, "ETA", &e)?;
        }
        Ok(())
    }
}

/// The status line's reason for a queued answer, gtk-gnutella's `Queued (slot N, ETA: …)`.
pub fn queued_reason(position: u32, eta: Duration) -> String {
    format!("Queued (slot {position}, ETA: {})", short_time(eta))
}

/// gtk-gnutella's `short_time_ascii`: `45s`, `3m 5s`, `2h 7m`, `1d 4h`.
pub fn short_time(d: Duration) -> String {
    let s = d.as_secs();
    // Its thresholds are inclusive: 60 s is `60s`, 3600 s is `60m 0s`.
    match s {
        0..=60 => format!("{s}s"),
        61..=3600 => format!("{}m {}s", s / 60, s % 60),
        3601..=86_400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// `QUEUE <ID> <ip>:<port>\r\n`: the uploader calls a queued downloader back on a new
/// connection, and the downloader sends its request on it.
pub fn queue_line(id: QueueId, me: SocketAddrV4) -> String {
    format!("QUEUE {id} {me}\r\n")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueLineError {
    #[error("not a QUEUE line")]
    NotQueue,
    #[error("QUEUE line has a malformed ID")]
    BadId,
}

/// Reads a `QUEUE` line (with or without its line end) as gtk-gnutella does
/// (`parq_download_queue_ack`): the ID after any spaces, then, after one space, the caller's
/// address, which only helps (a missing or unusable one is `None`, not an error).
pub fn parse_queue_line(line: &str) -> Result<(QueueId, Option<SocketAddrV4>), QueueLineError> {
    let rest = line
        .trim_end_matches(['\r', '\n'])
        .strip_prefix("QUEUE ")
        .ok_or(QueueLineError::NotQueue)?
        .trim_start_matches(' ');
    let (id, after) = rest.split_once(' ').unwrap_or((rest, ""));
    let id = QueueId::parse(id).ok_or(QueueLineError::BadId)?;
    let addr = after
        .split(' ')
        .next()
        .and_then(|a| a.parse::<SocketAddrV4>().ok())
        .filter(|a| a.port() != 0 && !a.ip().is_unspecified());
    Ok((id, addr))
}

/// One downloader's place for one file.
#[derive(Debug, Clone)]
pub struct Entry<F> {
    pub id: QueueId,
    pub who: PeerId,
    pub file: F,
    /// Arrival order; a served request sends its entry to the back (slots go in turn).
    pub seq: u64,
    pub last_seen: Instant,
    /// When it was told to come back, while it waits; `None` while it is served or idle.
    pub retry_at: Option<Instant>,
    /// Where to call it back (`X-Node`), when it gave one.
    pub callback: Option<SocketAddrV4>,
    /// Transfers of it running now.
    pub serving: u32,
    early: Vec<Instant>,
    pub queue_sent: Option<Instant>,
    pub queue_refused: u32,
}

impl<F> Entry<F> {
    /// It waits for a slot and is within its retry window: it counts in others' positions.
    pub fn waiting(&self, now: Instant) -> bool {
        self.serving == 0 && self.retry_at.is_some_and(|r| now <= r + RETRY_WINDOW)
    }

    /// Seconds of life it is told it has.
    pub fn lifetime(&self, now: Instant) -> u32 {
        self.retry_at
            .map_or(LIFE_AFTER_RETRY.as_secs() as u32, |r| {
                (r.saturating_duration_since(now) + LIFE_AFTER_RETRY).as_secs() as u32
            })
    }

    fn expires(&self) -> Instant {
        self.retry_at.unwrap_or(self.last_seen) + LIFE_AFTER_RETRY + RETRY_WINDOW
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParqError {
    #[error("Queue full")]
    Full,
    /// Too many early retries: come back after this long.
    #[error("Retry-After not honoured; removed from PARQ queue")]
    Banned(Duration),
}

/// The queue of one upload server. `F` names a file.
#[derive(Debug)]
pub struct Parq<F> {
    entries: HashMap<QueueId, Entry<F>>,
    next_seq: u64,
    bans: HashMap<Ipv4Addr, Instant>,
    /// Last `QUEUE` sent to each address.
    called: HashMap<SocketAddrV4, Instant>,
}

impl<F: Clone + PartialEq> Default for Parq<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: Clone + PartialEq> Parq<F> {
    pub fn new() -> Self {
        Parq {
            entries: HashMap::new(),
            next_seq: 0,
            bans: HashMap::new(),
            called: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, id: &QueueId) -> Option<&Entry<F>> {
        self.entries.get(id)
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry<F>> {
        self.entries.values()
    }

    /// Drops entries past their life, and bans that ran out.
    pub fn expire(&mut self, now: Instant) {
        self.entries
            .retain(|_, e| e.serving > 0 || now < e.expires());
        self.bans.retain(|_, until| now < *until);
        self.called
            .retain(|_, at| now.saturating_duration_since(*at) < QUEUE_HOST_DELAY);
    }

    /// A request from `who` for `file`, naming the ID it holds, if any: its entry, found by the
    /// ID, else by downloader and file, else made (gtk-gnutella `parq_upload_get`). `id` is a
    /// fresh random ID for a new entry.
    pub fn arrive(
        &mut self,
        who: PeerId,
        file: &F,
        named: Option<QueueId>,
        callback: Option<SocketAddrV4>,
        fresh: QueueId,
        now: Instant,
    ) -> Result<QueueId, ParqError> {
        if let Some(&until) = self.bans.get(who.ip()) {
            if now < until {
                return Err(ParqError::Banned(until - now));
            }
            self.bans.remove(who.ip());
        }
        let found = named
            .filter(|id| self.entries.get(id).is_some_and(|e| e.who.ip() == who.ip()))
            .or_else(|| {
                self.entries
                    .values()
                    .find(|e| e.who == who && e.file == *file)
                    .map(|e| e.id)
            });
        let id = match found {
            Some(id) => id,
            None => {
                self.expire(now);
                let same_ip = self.entries.values().filter(|e| e.who.ip() == who.ip());
                if same_ip.count() >= MAX_ENTRIES_PER_IP || self.entries.len() >= MAX_ENTRIES {
                    // Make room from the entries nobody is waiting on, the oldest first.
                    let victim = self
                        .entries
                        .values()
                        .filter(|e| e.serving == 0 && !e.waiting(now))
                        .filter(|e| self.entries.len() >= MAX_ENTRIES || e.who.ip() == who.ip())
                        .min_by_key(|e| e.last_seen)
                        .map(|e| e.id);
                    match victim {
                        Some(v) => {
                            self.entries.remove(&v);
                        }
                        None => return Err(ParqError::Full),
                    }
                }
                let seq = self.next_seq;
                self.next_seq += 1;
                self.entries.insert(
                    fresh,
                    Entry {
                        id: fresh,
                        who,
                        file: file.clone(),
                        seq,
                        last_seen: now,
                        retry_at: None,
                        callback,
                        serving: 0,
                        early: Vec::new(),
                        queue_sent: None,
                        queue_refused: 0,
                    },
                );
                return Ok(fresh);
            }
        };
        let e = self.entries.get_mut(&id).expect("found above");
        e.last_seen = now;
        e.file = file.clone();
        e.who = who;
        if callback.is_some() {
            e.callback = callback;
        }
        e.queue_refused = 0;
        // Early by more than the tolerance, and not called back: counted.
        if let Some(r) = e.retry_at
            && now + EARLY_TOLERANCE < r
            && e.queue_sent.is_none_or(|q| q + QUEUE_HOST_DELAY < now)
        {
            e.early
                .retain(|t| now.saturating_duration_since(*t) < BAN_WINDOW);
            e.early.push(now);
            if e.early.len() as u32 >= BAN_AFTER {
                let ip = *who.ip();
                self.entries.remove(&id);
                if self.bans.len() < MAX_BANS {
                    self.bans.insert(ip, now + BAN_FOR);
                }
                return Err(ParqError::Banned(BAN_FOR));
            }
        }
        Ok(id)
    }

    /// Where `id` stands among the waiting entries in the caller's `order` (lower first), 1 =
    /// next; it counts itself as waiting. Entries for which `skip` holds (served otherwise:
    /// unchoked peers) are not in line.
    pub fn position<K: Ord>(
        &self,
        id: &QueueId,
        now: Instant,
        order: impl Fn(&Entry<F>) -> K,
        skip: impl Fn(&Entry<F>) -> bool,
    ) -> (u32, u32) {
        let Some(me) = self.entries.get(id) else {
            return (1, 1);
        };
        let mine = (order(me), me.seq);
        let mut ahead = 0u32;
        let mut length = 1u32;
        for e in self.entries.values() {
            if e.id == *id || !e.waiting(now) || skip(e) {
                continue;
            }
            length += 1;
            if (order(e), e.seq) < mine {
                ahead += 1;
            }
        }
        (ahead + 1, length)
    }

    /// `id` was refused: it is to come back after `retry`.
    pub fn refused(&mut self, id: &QueueId, retry: Duration, now: Instant) {
        if let Some(e) = self.entries.get_mut(id) {
            e.retry_at = Some(now + retry);
        }
    }

    /// `id` got a slot.
    pub fn started(&mut self, id: &QueueId, now: Instant) {
        if let Some(e) = self.entries.get_mut(id) {
            e.serving += 1;
            e.retry_at = None;
            e.queue_sent = None;
            e.last_seen = now;
        }
    }

    /// A transfer of `id` ended: it goes to the back of the line.
    pub fn ended(&mut self, id: &QueueId, now: Instant) {
        let seq = self.next_seq;
        if let Some(e) = self.entries.get_mut(id) {
            e.serving = e.serving.saturating_sub(1);
            e.last_seen = now;
            if e.serving == 0 {
                e.seq = seq;
                self.next_seq += 1;
            }
        }
    }

    /// Entries to call back with `QUEUE` now: the first `free` waiting ones in `order` that
    /// are not here (their retry is more than a second away), gave an address, and whose IP
    /// was not called within [`QUEUE_HOST_DELAY`]. They are marked called.
    pub fn callbacks<K: Ord>(
        &mut self,
        free: usize,
        now: Instant,
        order: impl Fn(&Entry<F>) -> K,
    ) -> Vec<(QueueId, SocketAddrV4)> {
        if free == 0 {
            return Vec::new();
        }
        let mut line: Vec<&Entry<F>> = self.entries.values().filter(|e| e.waiting(now)).collect();
        line.sort_by_key(|e| (order(e), e.seq));
        let mut out = Vec::new();
        for e in line.into_iter().take(free) {
            let away = e.retry_at.is_some_and(|r| r > now + Duration::from_secs(1));
            let Some(cb) = e.callback else {
                continue;
            };
            let recent = |t: &Instant| now.saturating_duration_since(*t) < QUEUE_HOST_DELAY;
            let called = self.called.get(&cb).is_some_and(recent);
            let same_ip = self
                .called
                .iter()
                .filter(|(a, t)| a.ip() == cb.ip() && recent(t))
                .count()
                + out
                    .iter()
                    .filter(|(_, a): &&(QueueId, SocketAddrV4)| a.ip() == cb.ip())
                    .count();
            if away && !called && e.queue_sent.is_none() && same_ip < MAX_CALLS_PER_IP {
                out.push((e.id, cb));
            }
        }
        for (id, cb) in &out {
            if let Some(e) = self.entries.get_mut(id) {
                e.queue_sent = Some(now);
            }
            if self.called.len() < MAX_ENTRIES {
                self.called.insert(*cb, now);
            }
        }
        out
    }

    /// A `QUEUE` callback to `id` could not be delivered; the second in a row drops it.
    pub fn queue_refused(&mut self, id: &QueueId) {
        if let Some(e) = self.entries.get_mut(id) {
            e.queue_refused += 1;
            if e.queue_refused >= MAX_QUEUE_REFUSED {
                self.entries.remove(id);
            }
        }
    }
}

#[cfg(test)]
mod tests;
