//! The choker in virtual time: a clock that only moves when the test says.

use super::*;

fn peer(i: u16) -> PeerId {
    SocketAddrV4::new(Ipv4Addr::new(100, 64, (i >> 8) as u8, i as u8), 6346)
}

/// A deterministic stream of "random" numbers (splitmix64).
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn the_best_reciprocators_are_unchoked_within_one_round() {
    let t0 = Instant::now();
    let mut c = Choker::new(4, t0);
    let mut r = rng(1);
    // Ten peers want a file we are downloading; peers 6, 7 and 8 give us the most.
    for i in 0..10 {
        c.wants(peer(i), false, t0);
    }
    for s in 0..10 {
        let now = t0 + secs(s);
        for i in 0..10u16 {
            c.wants(peer(i), false, now);
            c.received(
                peer(i),
                u64::from(i % 6) * 1000 + if (6..9).contains(&i) { 50_000 } else { 0 },
                now,
            );
        }
        c.tick(now, &mut r);
    }
    let now = t0 + ROUND;
    c.tick(now, &mut r);
    for i in 6..9 {
        assert_eq!(
            c.decision(&peer(i)),
            Decision::Unchoked(Reason::Reciprocal),
            "peer {i}"
        );
    }
    let optimistic: Vec<u16> = (0..10)
        .filter(|&i| c.decision(&peer(i)) == Decision::Unchoked(Reason::Optimistic))
        .collect();
    assert_eq!(optimistic.len(), 1, "{optimistic:?}");
    assert!(!(6..9).contains(&optimistic[0]));
}

#[test]
fn the_optimistic_slot_moves_every_30_s_and_reaches_every_choked_peer() {
    let t0 = Instant::now();
    let mut c = Choker::new(2, t0);
    let mut r = rng(2);
    let n = 6u16;
    let mut got: Vec<(u64, u16)> = Vec::new();
    let horizon = OPTIMISTIC_EVERY.as_secs() * u64::from(n) + ROUND.as_secs();
    for s in 0..=horizon {
        let now = t0 + secs(s);
        // Peer 0 gives us data all along; the others have nothing to give.
        c.wants(peer(0), false, now);
        c.received(peer(0), 100_000, now);
        for i in 1..=n {
            c.wants(peer(i), false, now);
        }
        c.tick(now, &mut r);
        assert_eq!(c.decision(&peer(0)), Decision::Unchoked(Reason::Reciprocal));
        for i in 1..=n {
            if c.decision(&peer(i)) == Decision::Unchoked(Reason::Optimistic)
                && got.last().is_none_or(|g| g.1 != i)
            {
                got.push((s, i));
            }
        }
    }
    // Every choked peer had the slot within peers × 30 s (and a round to start).
    let mut seen: Vec<u16> = got.iter().map(|g| g.1).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, (1..=n).collect::<Vec<_>>(), "{got:?}");
    // It moved no more often than every 30 s.
    for w in got.windows(2) {
        assert!(w[1].0 - w[0].0 >= OPTIMISTIC_EVERY.as_secs(), "{got:?}");
    }
}

/// One second of a busy swarm: peer 0 gives us data, peers 1–4 (and `extra`) want some.
fn busy_second(c: &mut Choker, now: Instant, extra: Option<u16>, r: &mut impl FnMut() -> u64) {
    c.wants(peer(0), false, now);
    c.received(peer(0), 100_000, now);
    for i in 1..=4 {
        c.wants(peer(i), false, now);
    }
    if let Some(e) = extra {
        c.wants(peer(e), false, now);
    }
    c.tick(now, r);
}

#[test]
fn a_newcomer_with_nothing_to_give_starts_within_an_optimistic_period() {
    let t0 = Instant::now();
    let mut c = Choker::new(2, t0);
    let mut r = rng(3);
    // Long enough for peers 1–4 to have all had their optimistic turn.
    for s in 0..200 {
        busy_second(&mut c, t0 + secs(s), None, &mut r);
    }
    let joined = 200;
    let mut first = None;
    for s in joined..joined + 60 {
        busy_second(&mut c, t0 + secs(s), Some(99), &mut r);
        if first.is_none() && c.decision(&peer(99)) != Decision::Choked {
            first = Some(s - joined);
        }
    }
    let waited = first.expect("the newcomer never got a slot");
    assert!(
        waited <= OPTIMISTIC_EVERY.as_secs() + ROUND.as_secs(),
        "waited {waited} s"
    );
}

#[test]
fn a_snubbing_peer_loses_its_reciprocal_slot() {
    let t0 = Instant::now();
    let mut c = Choker::new(3, t0);
    let mut r = rng(4);
    let mut at = 0;
    // Peer 1 gives the most at first, peers 2 and 3 a little all along.
    for s in 0..30 {
        let now = t0 + secs(s);
        for i in 1..=3 {
            c.wants(peer(i), false, now);
        }
        c.received(peer(1), 90_000, now);
        c.received(peer(2), 2_000, now);
        c.received(peer(3), 1_000, now);
        c.tick(now, &mut r);
        at = s;
    }
    assert_eq!(c.decision(&peer(1)), Decision::Unchoked(Reason::Reciprocal));
    // Then it stops sending while we keep asking it.
    c.asking(peer(1), true, t0 + secs(at));
    for s in at..at + SNUB.as_secs() + ROUND.as_secs() {
        let now = t0 + secs(s);
        for i in 1..=3 {
            c.wants(peer(i), false, now);
        }
        c.received(peer(2), 2_000, now);
        c.received(peer(3), 1_000, now);
        c.tick(now, &mut r);
    }
    assert_ne!(c.decision(&peer(1)), Decision::Unchoked(Reason::Reciprocal));
    assert_eq!(c.decision(&peer(2)), Decision::Unchoked(Reason::Reciprocal));
    assert_eq!(c.decision(&peer(3)), Decision::Unchoked(Reason::Reciprocal));
}

#[test]
fn a_seed_ranks_peers_by_the_rate_they_take() {
    let t0 = Instant::now();
    let mut c = Choker::new(3, t0);
    let mut r = rng(5);
    for s in 0..=ROUND.as_secs() {
        let now = t0 + secs(s);
        for i in 1..=5u16 {
            c.wants(peer(i), true, now);
            c.sent(peer(i), u64::from(i) * 10_000, now);
        }
        c.tick(now, &mut r);
    }
    // Nobody gives a seed anything; the two fastest takers keep their slots.
    assert_eq!(c.decision(&peer(5)), Decision::Unchoked(Reason::Seed));
    assert_eq!(c.decision(&peer(4)), Decision::Unchoked(Reason::Seed));
    let (got, took) = c.rates(&peer(5), t0 + ROUND).unwrap();
    assert_eq!(got, 0);
    assert_eq!(took, 50_000 * (ROUND.as_secs() + 1) / WINDOW.as_secs());
}

#[test]
fn peers_are_bounded_in_total_and_per_address() {
    let t0 = Instant::now();
    let mut c = Choker::new(4, t0);
    for port in 0..(MAX_PEERS_PER_IP as u16 + 10) {
        c.wants(
            SocketAddrV4::new(Ipv4Addr::new(100, 64, 0, 1), port),
            false,
            t0 + secs(u64::from(port)),
        );
    }
    let same = c
        .peers
        .keys()
        .filter(|p| *p.ip() == Ipv4Addr::new(100, 64, 0, 1))
        .count();
    assert_eq!(same, MAX_PEERS_PER_IP);
    for i in 0..(MAX_PEERS as u16 + 50) {
        c.wants(peer(i + 1000), false, t0 + secs(100));
    }
    assert_eq!(c.peers.len(), MAX_PEERS);
    // Peers gone quiet are forgotten at the next round.
    let mut r = rng(6);
    c.tick(t0 + secs(100) + FORGET, &mut r);
    assert!(c.peers.is_empty());
}

#[test]
fn rates_cover_the_last_20_seconds_only() {
    let t0 = Instant::now();
    let mut c = Choker::new(1, t0);
    c.received(peer(1), 20_000, t0);
    assert_eq!(c.rates(&peer(1), t0).unwrap().0, 1_000);
    assert_eq!(c.rates(&peer(1), t0 + secs(19)).unwrap().0, 1_000);
    assert_eq!(c.rates(&peer(1), t0 + WINDOW).unwrap().0, 0);
}

#[test]
fn a_seed_serves_the_takers_that_spread_the_file_before_one_that_keeps_it() {
    let t0 = Instant::now();
    let mut c = Choker::new(3, t0);
    let mut r = rng(6);
    for s in 0..=ROUND.as_secs() {
        let now = t0 + secs(s);
        for i in 1..=4u16 {
            c.wants(peer(i), true, now);
            // Peer 4 takes fastest and offers nothing; the others offer what they hold.
            c.spreads(peer(i), i != 4, now);
            c.sent(peer(i), u64::from(i) * 10_000, now);
        }
        c.tick(now, &mut r);
    }
    assert_eq!(c.decision(&peer(3)), Decision::Unchoked(Reason::Seed));
    assert_eq!(c.decision(&peer(2)), Decision::Unchoked(Reason::Seed));
    assert_ne!(c.decision(&peer(4)), Decision::Unchoked(Reason::Seed));
}
