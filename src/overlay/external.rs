//! Our address as the peers see it: what their `Remote-IP` headers say, voted over several
//! peers as gtk-gnutella does, so that one peer (mistaken, or lying) cannot move it. A pure
//! table: reports and `now` in, the address out.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Reporters remembered at once; the oldest report goes first.
pub const MAX_REPORTERS: usize = 32;
/// A report older than this no longer counts.
pub const REPORT_LIFE: Duration = Duration::from_secs(3600);
/// Distinct reporters it takes to move an address already established (the first one
/// heard sets it).
pub const TO_CHANGE: usize = 2;

#[derive(Debug, Default)]
pub struct ExternalAddr {
    /// Reporter's IP → what it said and when.
    reports: HashMap<Ipv4Addr, (Ipv4Addr, Instant)>,
    current: Option<Ipv4Addr>,
}

impl ExternalAddr {
    /// `reporter` says it sees us at `seen`. Returns the address when this changed it.
    pub fn report(&mut self, reporter: Ipv4Addr, seen: Ipv4Addr, now: Instant) -> Option<Ipv4Addr> {
        if seen.is_unspecified() || seen.is_broadcast() || seen.is_multicast() {
            return None;
        }
        self.reports
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < REPORT_LIFE);
        if !self.reports.contains_key(&reporter)
            && self.reports.len() >= MAX_REPORTERS
            && let Some(oldest) = self
                .reports
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| *k)
        {
            self.reports.remove(&oldest);
        }
        self.reports.insert(reporter, (seen, now));
        let votes = |ip: Ipv4Addr| self.reports.values().filter(|(s, _)| *s == ip).count();
        let best = self
            .reports
            .values()
            .map(|(s, _)| *s)
            .max_by_key(|ip| (votes(*ip), *ip == seen))?;
        let next = match self.current {
            None => Some(seen),
            Some(c) if c == best => Some(c),
            Some(c) if votes(best) >= TO_CHANGE && votes(best) > votes(c) => Some(best),
            keep => keep,
        };
        let changed = next != self.current;
        self.current = next;
        changed.then_some(next).flatten()
    }

    /// The address, and how many peers report it now.
    pub fn get(&self) -> Option<(Ipv4Addr, usize)> {
        let c = self.current?;
        Some((c, self.reports.values().filter(|(s, _)| *s == c).count()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn the_first_report_sets_it_and_one_peer_alone_cannot_move_it() {
        let now = Instant::now();
        let mut e = ExternalAddr::default();
        assert_eq!(
            e.report(ip("100.64.0.1"), ip("100.64.9.9"), now),
            Some(ip("100.64.9.9"))
        );
        assert_eq!(e.report(ip("100.64.0.2"), ip("100.64.9.9"), now), None);
        assert_eq!(e.get(), Some((ip("100.64.9.9"), 2)));
        // One liar says otherwise: nothing moves.
        assert_eq!(e.report(ip("100.64.0.3"), ip("100.64.6.6"), now), None);
        assert_eq!(e.get().map(|g| g.0), Some(ip("100.64.9.9")));
        // Our address really changed: once two peers say the new one, more than the old, it
        // moves.
        assert_eq!(
            e.report(ip("100.64.0.1"), ip("100.64.6.6"), now),
            Some(ip("100.64.6.6"))
        );
        assert_eq!(e.get(), Some((ip("100.64.6.6"), 2)));
        assert_eq!(e.report(ip("100.64.0.2"), ip("100.64.6.6"), now), None);
        assert_eq!(e.get(), Some((ip("100.64.6.6"), 3)));
    }

    #[test]
    fn reporters_are_bounded_and_old_reports_expire() {
        let now = Instant::now();
        let mut e = ExternalAddr::default();
        for i in 0..200u8 {
            e.report(Ipv4Addr::new(100, 64, 1, i), ip("100.64.9.9"), now);
        }
        assert_eq!(e.get(), Some((ip("100.64.9.9"), MAX_REPORTERS)));
        let later = now + REPORT_LIFE;
        e.report(ip("100.64.2.1"), ip("100.64.9.9"), later);
        assert_eq!(e.get(), Some((ip("100.64.9.9"), 1)));
        assert_eq!(e.report(ip("100.64.2.2"), ip("0.0.0.0"), later), None);
    }
}
