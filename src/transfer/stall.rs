//! When an upload's reader is too slow to keep its slot.
//!
//! A downloader that reads a byte a second holds an upload slot as long as it likes, and four
//! of them shut out everyone else. gtk-gnutella drops an upload that sends nothing for its
//! data timeout and reallocates the bandwidth of stalling ones (`uploads.c`); we drop one that
//! moved less than a minimum rate over a window while it had bytes to send. Pure: `now` and
//! the byte count come in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The window over which the rate is judged.
pub const WINDOW: Duration = Duration::from_secs(20);
/// Below this the reader loses its slot (gtk-gnutella will not upload below `BW_OUT_MIN`,
/// 256 B/s; a reader four times that slow is not a downloader but a squatter).
pub const MIN_RATE: u64 = 1024;
/// How often the watchdog looks.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The bytes one connection wrote, sampled while it was sending a body.
#[derive(Debug)]
pub struct Stall {
    window: Duration,
    samples: VecDeque<(Instant, u64)>,
}

impl Stall {
    pub fn new(window: Duration) -> Self {
        Stall {
            window: window.max(CHECK_EVERY),
            samples: VecDeque::new(),
        }
    }

    /// A sample at `now`: `written` bytes so far on the connection, `sending` whether a body is
    /// waiting to go out, `min_rate` the least it must have moved per second (0: no floor,
    /// as when our own upload limit is what holds it back). True when it is to be dropped.
    pub fn stalled(&mut self, now: Instant, written: u64, sending: bool, min_rate: u64) -> bool {
        if !sending || min_rate == 0 {
            // Between requests the keep-alive deadline rules, not this.
            self.samples.clear();
            return false;
        }
        self.samples.push_back((now, written));
        while self
            .samples
            .get(1)
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= self.window)
        {
            self.samples.pop_front();
        }
        let Some(&(t0, w0)) = self.samples.front() else {
            return false;
        };
        let span = now.saturating_duration_since(t0);
        if span < self.window {
            return false;
        }
        let need = min_rate.saturating_mul(span.as_secs());
        written.saturating_sub(w0) < need
    }
}

/// The floor for one upload: MIN_RATE, or less when our own limit shared among the slots gives
/// each less than twice that (then half its share; none when that is nothing).
pub fn floor(limit: u64, slots: usize) -> u64 {
    if limit == 0 {
        return MIN_RATE;
    }
    let share = limit / slots.max(1) as u64;
    MIN_RATE.min(share / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn a_reader_below_the_floor_for_a_whole_window_is_dropped_and_not_before() {
        let t0 = Instant::now();
        let mut s = Stall::new(WINDOW);
        let mut written = 0;
        for sec in 0..WINDOW.as_secs() {
            written += 10;
            assert!(
                !s.stalled(at(t0, sec), written, true, MIN_RATE),
                "at {sec} s"
            );
        }
        assert!(s.stalled(at(t0, WINDOW.as_secs()), written + 10, true, MIN_RATE));
    }

    #[test]
    fn a_reader_at_the_floor_keeps_its_slot_and_a_burst_counts_over_the_window() {
        let t0 = Instant::now();
        let mut s = Stall::new(WINDOW);
        let mut written = 0;
        for sec in 0..120 {
            written += MIN_RATE;
            assert!(
                !s.stalled(at(t0, sec), written, true, MIN_RATE),
                "at {sec} s"
            );
        }
        // Nothing for 19 s after a big burst: the window still holds the burst.
        let mut s = Stall::new(WINDOW);
        assert!(!s.stalled(t0, 0, true, MIN_RATE));
        assert!(!s.stalled(at(t0, 1), 1 << 20, true, MIN_RATE));
        for sec in 2..20 {
            assert!(
                !s.stalled(at(t0, sec), 1 << 20, true, MIN_RATE),
                "at {sec} s"
            );
        }
        // A window after the burst, with nothing since, it is dropped.
        assert!(s.stalled(at(t0, 22), 1 << 20, true, MIN_RATE));
    }

    #[test]
    fn between_requests_or_under_our_own_limit_nothing_is_judged() {
        let t0 = Instant::now();
        let mut s = Stall::new(WINDOW);
        for sec in 0..60 {
            assert!(!s.stalled(at(t0, sec), 0, false, MIN_RATE));
            assert!(!s.stalled(at(t0, sec), 0, true, 0));
        }
        // Idle time before a body does not count against it.
        for sec in 60..79 {
            assert!(!s.stalled(at(t0, sec), 0, true, MIN_RATE), "at {sec} s");
        }
    }

    #[test]
    fn the_floor_follows_our_own_limit() {
        assert_eq!(floor(0, 4), MIN_RATE);
        assert_eq!(floor(4 << 20, 4), MIN_RATE);
        assert_eq!(floor(4096, 4), 512);
        assert_eq!(floor(1, 4), 0);
    }
}
