//! Upload slots and the turns they go in.
//!
//! A slot is held for one request (one chunk). Without turns, the downloaders that got a slot
//! first ask again on the same connection the instant their chunk ends and keep the slots for
//! the whole file, while the ones told "busy" wait out their `Retry-After` and find the slots
//! taken again. In a swarm that is the worst case: a seed feeds four peers, the rest hold
//! nothing to trade, and their upload capacity goes unused (the swarm benchmark showed the
//! seed's four slots held by the same four peers for ten seconds at a time). So a request
//! that finds every slot taken waits, in a first-come queue, for a slot to be handed over to
//! it as one frees, up to a few seconds; only then, or when the queue is full, is it told
//! `503 Busy`. The holder asking again joins the back of the queue, so the seed's data spreads
//! over the crowd one chunk at a time, as BitTorrent's seeds rotate their unchokes; the slot
//! passes straight from one request to the next, so none sits idle while a waiter sleeps out
//! a `Retry-After`. The tit-for-tat order and PARQ's headers build on this queue.

use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_std::channel::{Receiver, Sender, bounded};

/// Requests waiting at once, and per IP address (one host may run a few servents behind one
/// NAT, but never takes more than a quarter of the queue).
pub const MAX_WAITING: usize = 256;
pub const MAX_WAITING_PER_IP: usize = 64;
/// How long a request waits for a slot before it is told to come back.
pub const HOLD: Duration = Duration::from_secs(1);
/// Retry hints: a request that waited its turn out comes back soon; one that found the queue
/// full, later.
const RETRY_AFTER_WAIT: Duration = Duration::from_secs(1);
const RETRY_WHEN_FULL: Duration = Duration::from_secs(10);

/// Upload slots: a bounded number of transfers at once, given in turn.
#[derive(Debug)]
pub struct Slots {
    /// Changeable at run time (the API, the page).
    max: std::sync::atomic::AtomicUsize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    used: usize,
    queue: VecDeque<Waiter>,
    next_id: u64,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    who: SocketAddrV4,
    priority: u64,
    /// Rings once: the slot is this waiter's now.
    handed: Sender<()>,
}

/// When a request may take a free slot rather than wait for one handed over.
#[derive(Debug, Clone, Copy)]
enum Take {
    Always,
    IfNoneWaits,
    Never,
}

/// A held slot and the priority it was asked at; dropping it hands it to the first waiter,
/// or frees it.
pub struct Slot(Arc<Slots>, u64);

/// The priority whose slots are kept for their rank a moment after each request.
pub const KEPT: u64 = 0;
/// How long: a downloader's next request follows its last within a round trip.
pub const KEEP_FOR: Duration = Duration::from_secs(2);

/// No slot: ask again after `retry`. `position` is where the request stood in the queue when
/// it gave up (1 = next), or none when the queue was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    pub retry: Duration,
    pub position: Option<usize>,
}

impl Slots {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Slots {
            max: std::sync::atomic::AtomicUsize::new(max.max(1)),
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for downloader `who` (its IP and the port it listens on): at once if one is
    /// free and nobody waits, else after those ahead (a lower `priority` first, then in
    /// arrival order), waiting at most `hold`.
    pub async fn acquire(
        self: &Arc<Self>,
        who: SocketAddrV4,
        priority: u64,
        hold: Duration,
    ) -> Result<Slot, Busy> {
        self.get(who, priority, hold, Take::IfNoneWaits).await
    }

    /// As [`Slots::acquire`] for a request whose queue says it is served now: a free slot is
    /// its even while others wait for a handover (the queue keeps free slots for those ahead
    /// of them).
    pub async fn acquire_now(
        self: &Arc<Self>,
        who: SocketAddrV4,
        priority: u64,
        hold: Duration,
    ) -> Result<Slot, Busy> {
        self.get(who, priority, hold, Take::Always).await
    }

    /// Only a slot handed over by a request that ends, within `hold`: a free one is kept for
    /// those ahead in the queue.
    pub async fn handover(
        self: &Arc<Self>,
        who: SocketAddrV4,
        priority: u64,
        hold: Duration,
    ) -> Result<Slot, Busy> {
        self.get(who, priority, hold, Take::Never).await
    }

    async fn get(
        self: &Arc<Self>,
        who: SocketAddrV4,
        priority: u64,
        hold: Duration,
        take: Take,
    ) -> Result<Slot, Busy> {
        let (id, rx) = {
            let mut st = self.state();
            let free = st.used < self.max();
            let take = match take {
                Take::Always => free,
                Take::IfNoneWaits => free && st.queue.is_empty(),
                Take::Never => false,
            };
            if take {
                st.used += 1;
                return Ok(Slot(self.clone(), priority));
            }
            let same_ip = st.queue.iter().filter(|w| w.who.ip() == who.ip()).count();
            if st.queue.len() >= MAX_WAITING || same_ip >= MAX_WAITING_PER_IP {
                return Err(Busy {
                    retry: RETRY_WHEN_FULL,
                    position: None,
                });
            }
            let (handed, rx) = bounded(1);
            let id = st.next_id;
            st.next_id += 1;
            let at = st
                .queue
                .iter()
                .position(|w| w.priority > priority)
                .unwrap_or(st.queue.len());
            st.queue.insert(
                at,
                Waiter {
                    id,
                    who,
                    priority,
                    handed,
                },
            );
            (id, rx)
        };
        let mut wait = Wait {
            slots: self,
            id,
            rx,
            settled: false,
        };
        let rang = async_std::future::timeout(hold, wait.rx.recv()).await;
        wait.settled = true;
        if matches!(rang, Ok(Ok(()))) {
            return Ok(Slot(self.clone(), priority));
        }
        let mut st = self.state();
        match st.queue.iter().position(|w| w.id == id) {
            Some(i) => {
                st.queue.remove(i);
                Err(Busy {
                    retry: RETRY_AFTER_WAIT,
                    position: Some(i + 1),
                })
            }
            // Handed over as the wait ran out: the slot is ours after all.
            None => {
                let _ = wait.rx.try_recv();
                Ok(Slot(self.clone(), priority))
            }
        }
    }

    /// Gives a freed slot to the first waiter still there, or returns it to the pool. A slot
    /// of the first rank ([`KEPT`]: an unchoked peer's) goes to another of that rank only, for
    /// [`KEEP_FOR`]: its holder asks again within a round trip, and a waiter of a lower rank
    /// standing in line would otherwise take every other turn of the slot it earned. If
    /// nobody of that rank came for it by then, the line has it.
    fn release(self: &Arc<Self>, holder: u64) {
        let mut st = self.state();
        // Fewer slots since it was taken: this one goes.
        if st.used > self.max() {
            st.used -= 1;
            return;
        }
        while let Some(w) = st.queue.front() {
            if holder == KEPT && w.priority != KEPT {
                break;
            }
            let w = st.queue.pop_front().expect("looked at");
            if w.handed.try_send(()).is_ok() {
                return;
            }
        }
        st.used -= 1;
        if holder == KEPT && !st.queue.is_empty() {
            let slots = self.clone();
            async_std::task::spawn(async move {
                async_std::task::sleep(KEEP_FOR).await;
                slots.hand_free();
            });
        }
    }

    /// A free slot to the first waiter, if any waits.
    fn hand_free(&self) {
        let mut st = self.state();
        while st.used < self.max()
            && let Some(w) = st.queue.pop_front()
        {
            if w.handed.try_send(()).is_ok() {
                st.used += 1;
            }
        }
    }

    pub fn busy(&self) -> bool {
        self.state().used >= self.max()
    }

    pub fn max(&self) -> usize {
        self.max.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// From now on `max` slots (at least 1): more are handed to those waiting at once; with
    /// fewer, transfers running finish and the slots they free are not given again.
    pub fn set_max(&self, max: usize) {
        self.max
            .store(max.max(1), std::sync::atomic::Ordering::Relaxed);
        self.hand_free();
    }

    /// Slots free now.
    pub fn free(&self) -> usize {
        self.max().saturating_sub(self.state().used)
    }

    pub fn in_use(&self) -> usize {
        self.state().used
    }

    /// Requests waiting for a slot.
    pub fn waiting(&self) -> usize {
        self.state().queue.len()
    }
}

/// A request in the queue. If it is dropped while waiting (its connection closed), it leaves
/// the queue, and a slot handed to it in that instant goes on to the next.
struct Wait<'a> {
    slots: &'a Arc<Slots>,
    id: u64,
    rx: Receiver<()>,
    settled: bool,
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut st = self.slots.state();
        if let Some(i) = st.queue.iter().position(|w| w.id == self.id) {
            st.queue.remove(i);
        } else if self.rx.try_recv().is_ok() {
            drop(st);
            self.slots.release(u64::MAX);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: u8, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new([10, 0, 0, ip].into(), port)
    }

    const NOW: Duration = Duration::ZERO;

    #[async_std::test]
    async fn slots_are_bounded_and_freed_on_drop() {
        let s = Slots::new(2);
        let a = s.acquire(peer(1, 1), 0, NOW).await.unwrap();
        let _b = s.acquire(peer(2, 1), 0, NOW).await.unwrap();
        assert!(s.busy());
        let refused = s.acquire(peer(3, 1), 0, NOW).await.err().unwrap();
        assert_eq!(refused.position, Some(1));
        assert_eq!(refused.retry, RETRY_AFTER_WAIT);
        assert_eq!(s.waiting(), 0);
        drop(a);
        let c = s.acquire(peer(3, 1), 0, NOW).await;
        assert!(c.is_ok());
        assert_eq!(s.in_use(), 2);
    }

    #[async_std::test]
    async fn a_freed_slot_goes_to_the_first_waiting_not_to_its_last_holder() {
        let s = Slots::new(1);
        let held = s.acquire(peer(1, 1), 0, NOW).await.unwrap();
        let hold = Duration::from_secs(5);
        let (s2, s3) = (s.clone(), s.clone());
        // Each waiter keeps the slot it gets until the test drops it.
        let second =
            async_std::task::spawn(async move { s2.acquire(peer(2, 1), 0, hold).await.ok() });
        while s.waiting() < 1 {
            async_std::task::yield_now().await;
        }
        let third =
            async_std::task::spawn(async move { s3.acquire(peer(3, 1), 0, hold).await.ok() });
        while s.waiting() < 2 {
            async_std::task::yield_now().await;
        }
        // The holder's next request on its kept-alive connection queues behind the third.
        drop(held);
        let again = s.acquire(peer(1, 1), 0, NOW).await.err().unwrap();
        assert_eq!(again.position, Some(2));
        let second = second.await.expect("the second got the freed slot");
        assert_eq!(s.in_use(), 1);
        drop(second);
        let third = third.await.expect("then the third");
        drop(third);
        assert_eq!(s.in_use(), 0);
    }

    #[async_std::test]
    async fn a_freed_slot_goes_to_the_best_priority_waiting() {
        let s = Slots::new(1);
        let held = s.acquire(peer(1, 1), 0, NOW).await.unwrap();
        let hold = Duration::from_secs(5);
        let (s2, s3) = (s.clone(), s.clone());
        let late =
            async_std::task::spawn(async move { s2.acquire(peer(2, 1), 9, hold).await.ok() });
        while s.waiting() < 1 {
            async_std::task::yield_now().await;
        }
        let first =
            async_std::task::spawn(async move { s3.acquire(peer(3, 1), 2, hold).await.ok() });
        while s.waiting() < 2 {
            async_std::task::yield_now().await;
        }
        drop(held);
        let first = first
            .await
            .expect("the better priority, though it came second");
        assert_eq!(s.waiting(), 1);
        drop(first);
        assert!(late.await.is_some());
    }

    #[async_std::test]
    async fn a_waiter_that_goes_away_passes_its_turn_on() {
        let s = Slots::new(1);
        let held = s.acquire(peer(1, 1), 0, NOW).await.unwrap();
        let s2 = s.clone();
        let gone = async_std::task::spawn(async move {
            let _ = s2.acquire(peer(2, 1), 0, Duration::from_secs(60)).await;
        });
        while s.waiting() < 1 {
            async_std::task::yield_now().await;
        }
        gone.cancel().await;
        assert_eq!(s.waiting(), 0);
        drop(held);
        assert_eq!(s.in_use(), 0);
        assert!(s.acquire(peer(3, 1), 0, NOW).await.is_ok());
    }

    #[async_std::test]
    async fn the_queue_is_bounded_in_total_and_per_address() {
        let s = Slots::new(1);
        let _held = s.acquire(peer(0, 1), 0, NOW).await.unwrap();
        let hold = Duration::from_secs(60);
        let mut waiting = Vec::new();
        for port in 0..MAX_WAITING_PER_IP as u16 {
            let s = s.clone();
            waiting.push(async_std::task::spawn(async move {
                s.acquire(peer(1, port), 0, hold).await.is_ok()
            }));
        }
        while s.waiting() < MAX_WAITING_PER_IP {
            async_std::task::yield_now().await;
        }
        let full = s.acquire(peer(1, 9999), 0, hold).await.err().unwrap();
        assert_eq!(
            full,
            Busy {
                retry: RETRY_WHEN_FULL,
                position: None
            }
        );
        for i in 2..=255u8 {
            for port in 0..2 {
                let s = s.clone();
                waiting.push(async_std::task::spawn(async move {
                    s.acquire(peer(i, port), 0, hold).await.is_ok()
                }));
            }
        }
        while s.waiting() < MAX_WAITING {
            async_std::task::yield_now().await;
        }
        assert_eq!(
            s.acquire(peer(9, 77), 0, hold)
                .await
                .err()
                .unwrap()
                .position,
            None
        );
        for w in waiting {
            w.cancel().await;
        }
        assert_eq!(s.waiting(), 0);
    }
}
