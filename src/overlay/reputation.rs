//! Reputation and role: what the node has shown (uptime, reachability, upload bandwidth,
//! uploads served, link stability) scored out of 100, and the FastTrack-style decision to
//! promote a leaf to ultrapeer or demote an ultrapeer, with gtk-gnutella's guards against
//! flapping (PROTOCOL.md §7; gtk-gnutella `nodes.c`: `can_become_ultra`, `node_slow_timer`).
//!
//! Pure like the rest of the core: observations and `now` in, a score and a decision out.
//!
//! Invariants: a node whose reachability is not proven (or that is forced firewalled) never
//! promotes; two switches are at least `switch_min` apart, and that wait doubles after each
//! demotion up to `switch_max`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::handshake::Role;

/// What the thresholds are, with where each number comes from.
#[derive(Debug, Clone)]
pub struct Thresholds {
    /// Points (of 100) needed to promote.
    pub score: u32,
    /// Uptime below this never promotes (gtk-gnutella `NODE_MIN_UPTIME`, 3600 s).
    pub min_uptime: Duration,
    /// Uptime that earns every uptime point (LimeWire: current uptime ≥ 7200 s).
    pub full_uptime: Duration,
    /// Upload rate that earns every bandwidth point (UP proposal and LimeWire: ≥ 10 KB/s up).
    pub full_upload_rate: u64,
    /// Uploads completed that earn every upload point.
    pub full_uploads: u64,
    /// Mean link lifetime that earns every stability point.
    pub full_link_lifetime: Duration,
    /// Least time between two switches (gtk-gnutella `NODE_AUTO_SWITCH_MIN`, 1800 s) and the
    /// most it doubles to after demotions (`NODE_AUTO_SWITCH_MAX`, 17 h).
    pub switch_min: Duration,
    pub switch_max: Duration,
    /// An ultrapeer without leaves this long demotes (gtk-gnutella `NODE_UP_NO_LEAF_MAX`).
    pub no_leaf_max: Duration,
    /// A leaf short of ultrapeer links this long takes it as a sign ultrapeers are needed.
    pub short_of_ultrapeers: Duration,
    /// How long an ultrapeer's `X-Ultrapeer-Needed` is believed.
    pub needed_memory: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            score: 75,
            min_uptime: Duration::from_secs(3600),
            full_uptime: Duration::from_secs(7200),
            full_upload_rate: 10 * 1024,
            full_uploads: 3,
            full_link_lifetime: Duration::from_secs(1800),
            switch_min: Duration::from_secs(1800),
            switch_max: Duration::from_secs(61_200),
            no_leaf_max: Duration::from_secs(3600),
            short_of_ultrapeers: Duration::from_secs(600),
            needed_memory: Duration::from_secs(1800),
        }
    }
}

/// How the role is chosen: by reputation, or fixed by the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleMode {
    /// Start as a leaf; promote and demote by reputation (the default).
    Auto,
    Leaf,
    Ultrapeer,
}

impl RoleMode {
    /// The role a node starts in.
    pub fn initial(self) -> Role {
        match self {
            RoleMode::Ultrapeer => Role::Ultrapeer,
            RoleMode::Auto | RoleMode::Leaf => Role::Leaf,
        }
    }

    pub fn is_auto(self) -> bool {
        self == RoleMode::Auto
    }
}

impl std::str::FromStr for RoleMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(RoleMode::Auto),
            "leaf" => Ok(RoleMode::Leaf),
            "ultrapeer" | "up" => Ok(RoleMode::Ultrapeer),
            _ => Err(format!("unknown role {s:?}: use auto, leaf or ultrapeer")),
        }
    }
}

impl std::fmt::Display for RoleMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RoleMode::Auto => "auto",
            RoleMode::Leaf => "leaf",
            RoleMode::Ultrapeer => "ultrapeer",
        })
    }
}

/// Points per part; they add up to 100.
const UPTIME_POINTS: f64 = 35.0;
const REACHABLE_POINTS: f64 = 25.0;
const BANDWIDTH_POINTS: f64 = 20.0;
const UPLOADS_POINTS: f64 = 10.0;
const STABILITY_POINTS: f64 = 10.0;
/// Ended links remembered for the stability part.
const LINK_HISTORY: usize = 32;
/// Upload samples closer together than this are merged, so a burst over a few milliseconds
/// does not read as a huge rate.
const MIN_SAMPLE: Duration = Duration::from_secs(2);

/// Something the shell saw that bears on reputation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// A connection from outside reached us (an incoming link, HTTP request or connect-back).
    Reachable,
    /// The user says we are firewalled (`true`) or not (`false`), whatever we observe.
    Firewalled(bool),
    /// Cumulative upload counters (bytes sent, uploads completed), sampled every few seconds.
    Uploads { bytes: u64, completed: u64 },
    /// An ultrapeer said in its handshake whether it needs more ultrapeers.
    UltrapeerNeeded(bool),
}

/// One part of the score, in words.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Part {
    pub name: &'static str,
    pub value: u32,
    pub max: u32,
    pub detail: String,
}

/// The score and what it is made of, for `servent status`, the API and the logs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Score {
    pub score: u32,
    pub threshold: u32,
    /// Whether the node could be an ultrapeer now (score and hard requirements).
    pub eligible: bool,
    pub parts: Vec<Part>,
    /// Why the overlay needs more ultrapeers, when it does.
    pub needed: Option<String>,
    /// One sentence: where the node stands.
    pub summary: String,
}

/// A role change the core decided on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    pub to: Role,
    pub reason: String,
}

pub struct Reputation {
    th: Thresholds,
    started: Instant,
    reachable: bool,
    /// `Some` when the user decided (`--firewalled` or its opposite).
    forced_firewalled: Option<bool>,
    last_sample: Option<(Instant, u64)>,
    best_upload_rate: u64,
    uploads_completed: u64,
    ended_links: VecDeque<Duration>,
    /// The latest `X-Ultrapeer-Needed` and when it was said.
    needed_said: Option<(Instant, bool)>,
    short_since: Option<Instant>,
    no_leaves_since: Option<Instant>,
    last_switch: Instant,
    switch_wait: Duration,
}

/// "1 h 5 min", "12 min", "40 s".
pub fn words_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        _ if s % 3600 < 60 => format!("{} h", s / 3600),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

fn fraction(have: f64, full: f64) -> f64 {
    if full <= 0.0 {
        1.0
    } else {
        (have / full).clamp(0.0, 1.0)
    }
}

fn points(p: f64, of: f64) -> u32 {
    (p * of).round() as u32
}

impl Reputation {
    pub fn new(th: Thresholds, now: Instant) -> Self {
        let switch_wait = th.switch_min;
        Reputation {
            th,
            started: now,
            reachable: false,
            forced_firewalled: None,
            last_sample: None,
            best_upload_rate: 0,
            uploads_completed: 0,
            ended_links: VecDeque::new(),
            needed_said: None,
            short_since: None,
            no_leaves_since: None,
            last_switch: now,
            switch_wait,
        }
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.th
    }

    pub fn observe(&mut self, o: Observation, now: Instant) {
        match o {
            Observation::Reachable => self.reachable = true,
            Observation::Firewalled(f) => self.forced_firewalled = Some(f),
            Observation::UltrapeerNeeded(n) => self.needed_said = Some((now, n)),
            Observation::Uploads { bytes, completed } => {
                self.uploads_completed = self.uploads_completed.max(completed);
                match self.last_sample {
                    None => self.last_sample = Some((now, bytes)),
                    Some((at, before)) => {
                        let dt = now.saturating_duration_since(at);
                        if dt < MIN_SAMPLE {
                            return;
                        }
                        let rate = (bytes.saturating_sub(before) as f64 / dt.as_secs_f64()) as u64;
                        self.best_upload_rate = self.best_upload_rate.max(rate);
                        self.last_sample = Some((now, bytes));
                    }
                }
            }
        }
    }

    /// A link ended after `lifetime`.
    pub fn link_ended(&mut self, lifetime: Duration) {
        if self.ended_links.len() == LINK_HISTORY {
            self.ended_links.pop_front();
        }
        self.ended_links.push_back(lifetime);
    }

    pub fn is_reachable(&self) -> bool {
        match self.forced_firewalled {
            Some(f) => !f,
            None => self.reachable,
        }
    }

    /// The score now; `links` are the ages of the current links.
    pub fn score(&self, now: Instant, links: &[Duration], role: Role) -> Score {
        let th = &self.th;
        let uptime = now.saturating_duration_since(self.started);
        let mut parts = Vec::with_capacity(5);
        let up = fraction(uptime.as_secs_f64(), th.full_uptime.as_secs_f64());
        parts.push(Part {
            name: "uptime",
            value: points(up, UPTIME_POINTS),
            max: UPTIME_POINTS as u32,
            detail: format!(
                "up {} (full marks at {}, at least {} to promote)",
                words_duration(uptime),
                words_duration(th.full_uptime),
                words_duration(th.min_uptime)
            ),
        });
        let reachable = self.is_reachable();
        parts.push(Part {
            name: "reachability",
            value: if reachable {
                REACHABLE_POINTS as u32
            } else {
                0
            },
            max: REACHABLE_POINTS as u32,
            detail: match (self.forced_firewalled, self.reachable) {
                (Some(true), _) => "firewalled, as configured: cannot promote".into(),
                (Some(false), _) => "reachable, as configured".into(),
                (None, true) => "reachable: a connection from outside reached us".into(),
                (None, false) => {
                    "not proven reachable: no connection from outside yet (firewalled or NATed?)"
                        .into()
                }
            },
        });
        let bw = fraction(self.best_upload_rate as f64, th.full_upload_rate as f64);
        parts.push(Part {
            name: "upload bandwidth",
            value: points(bw, BANDWIDTH_POINTS),
            max: BANDWIDTH_POINTS as u32,
            detail: if self.best_upload_rate == 0 {
                format!(
                    "not measured yet: nothing uploaded (full marks at {} KB/s)",
                    th.full_upload_rate / 1024
                )
            } else {
                format!(
                    "best measured {:.1} KB/s (full marks at {} KB/s)",
                    self.best_upload_rate as f64 / 1024.0,
                    th.full_upload_rate / 1024
                )
            },
        });
        let ups = fraction(self.uploads_completed as f64, th.full_uploads as f64);
        parts.push(Part {
            name: "uploads served",
            value: points(ups, UPLOADS_POINTS),
            max: UPLOADS_POINTS as u32,
            detail: format!(
                "{} completed (full marks at {})",
                self.uploads_completed, th.full_uploads
            ),
        });
        let (sum, n) = links
            .iter()
            .chain(self.ended_links.iter())
            .fold((Duration::ZERO, 0u32), |(s, n), d| (s + *d, n + 1));
        let mean = if n == 0 { Duration::ZERO } else { sum / n };
        let st = fraction(mean.as_secs_f64(), th.full_link_lifetime.as_secs_f64());
        parts.push(Part {
            name: "stability",
            value: points(st, STABILITY_POINTS),
            max: STABILITY_POINTS as u32,
            detail: if n == 0 {
                "no links yet".into()
            } else {
                format!(
                    "links last {} on average over {n} (full marks at {})",
                    words_duration(mean),
                    words_duration(th.full_link_lifetime)
                )
            },
        });
        let score: u32 = parts.iter().map(|p| p.value).sum();
        let mut missing = Vec::new();
        if !reachable {
            missing.push("not reachable from outside".to_string());
        }
        if uptime < th.min_uptime {
            missing.push(format!(
                "up {} of the {} needed",
                words_duration(uptime),
                words_duration(th.min_uptime)
            ));
        }
        if score < th.score {
            missing.push(format!("score {score} below {}", th.score));
        }
        let eligible = missing.is_empty();
        let needed = self.needed(now, role);
        let summary = match (role, eligible) {
            (Role::Ultrapeer, true) => format!("a good ultrapeer: {score}/100"),
            (Role::Ultrapeer, false) => format!(
                "an ultrapeer that would not qualify now: {}",
                missing.join("; ")
            ),
            (Role::Leaf, true) => match &needed {
                Some(why) => format!("ready to be an ultrapeer ({score}/100), and {why}"),
                None => format!(
                    "could be an ultrapeer ({score}/100); waiting until the network needs one"
                ),
            },
            (Role::Leaf, false) => format!("a leaf: {}", missing.join("; ")),
        };
        Score {
            score,
            threshold: th.score,
            eligible,
            parts,
            needed,
            summary,
        }
    }

    /// Why the overlay needs another ultrapeer, seen from here.
    fn needed(&self, now: Instant, role: Role) -> Option<String> {
        if role != Role::Leaf {
            return None;
        }
        if let Some((at, said)) = self.needed_said
            && now.saturating_duration_since(at) <= self.th.needed_memory
        {
            // The latest word wins: an ultrapeer saying False cancels an older True.
            return said.then(|| "an ultrapeer said ultrapeers are needed".to_string());
        }
        self.short_since
            .filter(|s| now.saturating_duration_since(*s) >= self.th.short_of_ultrapeers)
            .map(|s| {
                format!(
                    "too few ultrapeers reachable for {}",
                    words_duration(now.saturating_duration_since(s))
                )
            })
    }

    /// Called every tick with the node's links: decides whether to switch role. `auto` is
    /// false when the user fixed the role.
    pub fn decide(
        &mut self,
        now: Instant,
        role: Role,
        links: &[Duration],
        ultrapeers: usize,
        want_ultrapeers: usize,
        leaves: usize,
    ) -> Option<Switch> {
        // Track the signals even when not deciding, so status shows them.
        if role == Role::Leaf && ultrapeers < want_ultrapeers {
            self.short_since.get_or_insert(now);
        } else {
            self.short_since = None;
        }
        if role == Role::Ultrapeer && leaves == 0 {
            self.no_leaves_since.get_or_insert(now);
        } else {
            self.no_leaves_since = None;
        }
        let since_switch = now.saturating_duration_since(self.last_switch);
        let score = self.score(now, links, role);
        let switch = match role {
            Role::Leaf => {
                if since_switch < self.switch_wait || !score.eligible {
                    return None;
                }
                let why = score.needed?;
                Switch {
                    to: Role::Ultrapeer,
                    reason: format!("reputation {}/100 and {why}", score.score),
                }
            }
            Role::Ultrapeer => {
                let reason = if self.forced_firewalled == Some(true) {
                    "firewalled".to_string()
                } else if let Some(s) = self.no_leaves_since
                    && now.saturating_duration_since(s) >= self.th.no_leaf_max
                {
                    format!(
                        "no leaf connected for {}",
                        words_duration(now.saturating_duration_since(s))
                    )
                } else if since_switch >= self.th.switch_min && !score.eligible {
                    format!("no longer qualifies: {}", score.summary)
                } else {
                    return None;
                };
                // gtk-gnutella doubles the wait before the next promotion on each demotion.
                self.switch_wait = (self.switch_wait * 2).min(self.th.switch_max);
                Switch {
                    to: Role::Leaf,
                    reason,
                }
            }
        };
        self.last_switch = now;
        self.short_since = None;
        self.no_leaves_since = None;
        Some(switch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    /// Drives a leaf minute by minute, with `links` ultrapeer links as old as the node.
    fn run_leaf(
        r: &mut Reputation,
        t0: Instant,
        from: u64,
        to: u64,
        ups: usize,
    ) -> Option<(u64, Switch)> {
        for m in from..=to {
            let now = t0 + MIN * m as u32;
            let links = vec![MIN * m as u32; ups];
            if let Some(s) = r.decide(now, Role::Leaf, &links, ups, 3, 0) {
                return Some((m, s));
            }
        }
        None
    }

    /// Uploads at ~40 KB/s for `secs` seconds starting at `at`, `n` of them completed.
    fn upload(r: &mut Reputation, at: Instant, secs: u64, n: u64) {
        r.observe(
            Observation::Uploads {
                bytes: 0,
                completed: 0,
            },
            at,
        );
        r.observe(
            Observation::Uploads {
                bytes: 40 * 1024 * secs,
                completed: n,
            },
            at + Duration::from_secs(secs),
        );
    }

    #[test]
    fn a_reachable_leaf_with_uploads_promotes_after_an_hour_when_needed() {
        let t0 = Instant::now();
        let mut r = Reputation::new(Thresholds::default(), t0);
        r.observe(Observation::Reachable, t0 + MIN);
        upload(&mut r, t0 + 5 * MIN, 10, 3);
        r.observe(Observation::UltrapeerNeeded(true), t0 + 50 * MIN);
        let (minute, s) = run_leaf(&mut r, t0, 0, 240, 3).expect("promotes");
        // Uptime is the gate: 60 min (NODE_MIN_UPTIME), not before.
        assert_eq!(minute, 60);
        assert_eq!(s.to, Role::Ultrapeer);
        assert!(s.reason.contains("an ultrapeer said"), "{}", s.reason);
        let sc = r.score(t0 + 60 * MIN, &[60 * MIN; 3], Role::Ultrapeer);
        assert!(sc.score >= 75, "{sc:?}");
        assert_eq!(sc.parts.iter().map(|p| p.max).sum::<u32>(), 100);
        let bw = sc
            .parts
            .iter()
            .find(|p| p.name == "upload bandwidth")
            .unwrap();
        assert_eq!(bw.value, 20, "{bw:?}");
    }

    #[test]
    fn without_upload_history_a_leaf_stays_a_leaf() {
        let t0 = Instant::now();
        let mut r = Reputation::new(Thresholds::default(), t0);
        r.observe(Observation::Reachable, t0);
        r.observe(Observation::UltrapeerNeeded(true), t0 + 100 * MIN);
        assert_eq!(run_leaf(&mut r, t0, 0, 240, 3), None);
        let sc = r.score(t0 + 240 * MIN, &[240 * MIN; 3], Role::Leaf);
        // Full uptime, reachability and stability: 70 of the 75 needed.
        assert_eq!(sc.score, 70, "{sc:?}");
        assert!(!sc.eligible);
        assert!(sc.summary.contains("score 70 below 75"), "{}", sc.summary);
    }

    #[test]
    fn a_firewalled_leaf_never_promotes() {
        let t0 = Instant::now();
        let mut r = Reputation::new(Thresholds::default(), t0);
        upload(&mut r, t0, 10, 10);
        r.observe(Observation::UltrapeerNeeded(true), t0 + 60 * MIN);
        // Never reached from outside.
        assert_eq!(run_leaf(&mut r, t0, 0, 600, 3), None);
        // Forced firewalled, even after a connection from outside.
        r.observe(Observation::Reachable, t0);
        r.observe(Observation::Firewalled(true), t0);
        assert_eq!(run_leaf(&mut r, t0, 600, 900, 3), None);
        let sc = r.score(t0 + 900 * MIN, &[], Role::Leaf);
        assert!(sc.summary.contains("not reachable"), "{}", sc.summary);
    }

    #[test]
    fn a_qualified_leaf_waits_until_ultrapeers_are_needed() {
        let t0 = Instant::now();
        let mut r = Reputation::new(Thresholds::default(), t0);
        r.observe(Observation::Reachable, t0);
        upload(&mut r, t0, 10, 3);
        // Three ultrapeer links, nobody asking: no promotion.
        assert_eq!(run_leaf(&mut r, t0, 0, 120, 3), None);
        // An ultrapeer says no more are needed; then only one link is left for 10 minutes.
        r.observe(Observation::UltrapeerNeeded(false), t0 + 121 * MIN);
        assert_eq!(
            run_leaf(&mut r, t0, 121, 151, 1),
            None,
            "False is believed 30 min"
        );
        // Then being short of ultrapeers since minute 121 is the sign.
        let (m, s) = run_leaf(&mut r, t0, 152, 200, 1).expect("short of ultrapeers");
        assert!(s.reason.contains("too few ultrapeers"), "{}", s.reason);
        assert_eq!(m, 152);
    }

    #[test]
    fn an_ultrapeer_without_leaves_demotes_and_waits_longer_to_promote_again() {
        let t0 = Instant::now();
        let mut r = Reputation::new(Thresholds::default(), t0);
        r.observe(Observation::Reachable, t0);
        upload(&mut r, t0, 10, 3);
        r.observe(Observation::UltrapeerNeeded(true), t0 + 59 * MIN);
        let (m, _) = run_leaf(&mut r, t0, 0, 120, 3).expect("promotes");
        // As an ultrapeer with no leaves: demoted an hour later.
        let mut demoted = None;
        for k in m..m + 120 {
            let now = t0 + MIN * k as u32;
            if let Some(s) = r.decide(now, Role::Ultrapeer, &[MIN * 30; 8], 8, 8, 0) {
                demoted = Some((k, s));
                break;
            }
        }
        let (k, s) = demoted.expect("demotes");
        assert_eq!(k, m + 60);
        assert_eq!(s.to, Role::Leaf);
        assert!(
            s.reason.contains("no leaf connected for 1 h"),
            "{}",
            s.reason
        );
        // The next promotion waits twice gtk-gnutella's minimum (1 h), even when needed.
        r.observe(
            Observation::UltrapeerNeeded(true),
            t0 + MIN * (k + 50) as u32,
        );
        let (again, _) = run_leaf(&mut r, t0, k, k + 120, 3).expect("promotes again");
        assert_eq!(again, k + 60);
    }

    #[test]
    fn an_ultrapeer_with_leaves_stays() {
        let t0 = Instant::now();
        let mut r = Reputation::new(Thresholds::default(), t0);
        r.observe(Observation::Reachable, t0);
        upload(&mut r, t0, 10, 3);
        // Promoted after its first hour, it keeps qualifying and keeps leaves.
        for k in 60..600 {
            let now = t0 + MIN * k;
            assert_eq!(
                r.decide(now, Role::Ultrapeer, &[MIN * k; 8], 8, 8, 5),
                None,
                "minute {k}"
            );
        }
    }

    #[test]
    fn upload_bursts_shorter_than_a_sample_are_not_taken_as_bandwidth() {
        let t0 = Instant::now();
        let mut r = Reputation::new(Thresholds::default(), t0);
        r.observe(
            Observation::Uploads {
                bytes: 0,
                completed: 0,
            },
            t0,
        );
        // 1 MB within 10 ms is merged into the next sample, 5 s later.
        r.observe(
            Observation::Uploads {
                bytes: 1 << 20,
                completed: 1,
            },
            t0 + Duration::from_millis(10),
        );
        r.observe(
            Observation::Uploads {
                bytes: 1 << 20,
                completed: 1,
            },
            t0 + Duration::from_secs(5),
        );
        assert_eq!(r.best_upload_rate, (1 << 20) / 5);
        assert_eq!(r.uploads_completed, 1);
    }

    #[test]
    fn durations_read_as_words() {
        assert_eq!(words_duration(Duration::from_secs(40)), "40 s");
        assert_eq!(words_duration(Duration::from_secs(720)), "12 min");
        assert_eq!(words_duration(Duration::from_secs(3600)), "1 h");
        assert_eq!(words_duration(Duration::from_secs(3900)), "1 h 5 min");
    }
}
