//! The upload queue's policies in virtual time.

use super::*;
use std::net::Ipv4Addr;

fn peer(i: u8) -> PeerId {
    SocketAddrV4::new(Ipv4Addr::new(100, 64, 0, i), 6346)
}

fn ask(i: u8, seeding: bool) -> Ask<u32> {
    Ask {
        who: peer(i),
        file: 7,
        seeding,
        named: None,
        callback: Some(peer(i)),
        fresh: QueueId([i; 16]),
        spreads: true,
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn rng() -> impl FnMut() -> u64 {
    let mut x = 1u64;
    move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        x
    }
}

fn served(a: &Admit) -> Option<Grant> {
    match a {
        Admit::Serve { grant, .. } => Some(*grant),
        _ => None,
    }
}

fn place(a: &Admit) -> Place {
    match a {
        Admit::Queue(p) => *p,
        other => panic!("not queued: {other:?}"),
    }
}

#[test]
fn fifo_serves_in_arrival_order_and_a_served_request_goes_to_the_back() {
    let t0 = Instant::now();
    let mut q: UploadQueue<u32> = UploadQueue::new(Policy::Fifo, 1, t0);
    let a = q.admit(&ask(1, true), 1, t0);
    assert_eq!(served(&a), Some(Grant::Turn));
    q.started(&QueueId([1; 16]), t0);
    let b = place(&q.admit(&ask(2, true), 0, t0));
    let c = place(&q.admit(&ask(3, true), 0, t0));
    assert_eq!((b.position, b.length), (1, 1));
    assert_eq!((c.position, c.length), (2, 2));
    assert_eq!(b.retry, NEAR_RETRY);
    assert!(b.hold.unwrap() < c.hold.unwrap());
    // A's request ends; C asks first but the free slot is B's.
    q.ended(&QueueId([1; 16]), t0 + secs(1));
    let c = q.admit(&ask(3, true), 1, t0 + secs(1));
    assert_eq!(place(&c).position, 2);
    let b = q.admit(&ask(2, true), 1, t0 + secs(1));
    assert_eq!(served(&b), Some(Grant::Turn));
    q.started(&QueueId([2; 16]), t0 + secs(1));
    // A asking again is behind C.
    let a = place(&q.admit(&ask(1, true), 0, t0 + secs(1)));
    assert_eq!(a.position, 2);
}

#[test]
fn a_free_rider_waits_behind_the_peers_that_give_and_gets_the_optimistic_slot_in_turn() {
    let t0 = Instant::now();
    let mut q: UploadQueue<u32> = UploadQueue::new(Policy::TitForTat, 4, t0);
    let mut r = rng();
    // Peers 1..=5 give us data of a file we are downloading; peer 9 gives nothing.
    let mut now = t0;
    q.tick(4, now, &mut r);
    for s in 0..10 {
        now = t0 + secs(s);
        for i in 1..=5u8 {
            q.received(peer(i), u64::from(i) * 100_000, now);
        }
    }
    // Everyone asks; the first four take the free slots at once (a round has not ranked
    // them yet).
    for i in [9u8, 1, 2, 3, 4, 5] {
        let a = q.admit(&ask(i, false), 0, now);
        if let Admit::Serve { id, .. } = a {
            q.started(&id, now);
            q.ended(&id, now);
        }
    }
    now = t0 + ROUND_AT;
    q.tick(0, now, &mut r);
    // The three best givers are unchoked for what they give; one slot is optimistic.
    for i in [3u8, 4, 5] {
        assert_eq!(
            served(&q.admit(&ask(i, false), 0, now)),
            Some(Grant::Unchoked(Reason::Reciprocal)),
            "peer {i}"
        );
    }
    let optimistic: Vec<u8> = [1u8, 2, 9]
        .into_iter()
        .filter(|&i| q.choker.decision(&peer(i)) == Decision::Unchoked(Reason::Optimistic))
        .collect();
    assert_eq!(optimistic.len(), 1, "{optimistic:?}");
    // A choked free rider stands behind a choked giver, and comes back at the next round.
    if optimistic != [9] {
        let giver = if optimistic == [1] { 2 } else { 1 };
        let g = place(&q.admit(&ask(giver, false), 0, now));
        let f = place(&q.admit(&ask(9, false), 0, now));
        assert!(f.position > g.position, "{f:?} {g:?}");
        assert!(f.hold.unwrap() > g.hold.unwrap());
    }
    // Over enough rounds the free rider does get the optimistic slot.
    let mut got = false;
    for k in 1..=12u64 {
        now = t0 + ROUND_AT + ROUND * k as u32;
        for s in 0..10 {
            for i in 1..=5u8 {
                q.received(peer(i), u64::from(i) * 100_000, now - secs(10 - s));
            }
        }
        for i in [9u8, 1, 2, 3, 4, 5] {
            let _ = q.admit(&ask(i, false), 0, now);
        }
        q.tick(0, now, &mut r);
        got |= q.choker.decision(&peer(9)) == Decision::Unchoked(Reason::Optimistic);
    }
    assert!(got, "the free rider never had the optimistic slot");
}

const ROUND_AT: Duration = Duration::from_secs(10);
const ROUND: Duration = crate::swarm::choke::ROUND;

#[test]
fn a_slot_no_unchoked_peer_uses_is_lent_to_the_first_choked_but_not_in_its_guard() {
    let t0 = Instant::now();
    let mut q: UploadQueue<u32> = UploadQueue::new(Policy::TitForTat, 1, t0);
    let mut r = rng();
    q.tick(1, t0, &mut r);
    let a = q.admit(&ask(1, false), 1, t0);
    assert_eq!(served(&a), Some(Grant::Unchoked(Reason::Optimistic)));
    q.started(&QueueId([1; 16]), t0);
    // Peer 2 is choked: all slots are taken.
    let b = place(&q.admit(&ask(2, false), 0, t0));
    assert_eq!(b.position, 1);
    // It may wait for a slot handed over, behind any unchoked peer (priority 0).
    assert_eq!(b.hold, Some(2));
    // Peer 1's request ends: for a moment its slot waits for its next request.
    q.ended(&QueueId([1; 16]), t0 + secs(1));
    let b = q.admit(&ask(2, false), 1, t0 + secs(1));
    assert!(matches!(b, Admit::Queue(_)), "{b:?}");
    // Past the guard, it is lent.
    let b = q.admit(&ask(2, false), 1, t0 + secs(1) + LEND_GUARD);
    assert_eq!(served(&b), Some(Grant::Lent));
}

#[test]
fn a_peer_deep_in_line_comes_back_later_and_is_called_back_when_a_slot_is_free_for_it() {
    let t0 = Instant::now();
    let mut q: UploadQueue<u32> = UploadQueue::new(Policy::TitForTat, 1, t0);
    let mut r = rng();
    q.tick(1, t0, &mut r);
    q.admit(&ask(1, true), 1, t0);
    q.started(&QueueId([1; 16]), t0);
    // Those near the front poll every second; the next is deep and told ten.
    for i in 0..NEAR as u8 {
        assert_eq!(place(&q.admit(&ask(10 + i, true), 0, t0)).retry, NEAR_RETRY);
    }
    let d = place(&q.admit(&ask(4, true), 0, t0 + secs(1)));
    assert_eq!((d.position, d.retry), (NEAR as u32 + 1, DEEP_RETRY));
    assert!(q.tick(0, t0 + secs(2), &mut r).is_empty());
    q.ended(&QueueId([1; 16]), t0 + secs(2));
    // Not while the slot's holder may come back for it, nor while those ahead still count.
    assert!(q.tick(1, t0 + secs(3), &mut r).is_empty());
    // Those ahead stopped asking: past their window, peer 4 is first, and away.
    let later = t0 + NEAR_RETRY + crate::swarm::parq::RETRY_WINDOW + secs(2);
    assert_eq!(q.tick(1, later, &mut r), vec![(QueueId([4; 16]), peer(4))]);
}

#[test]
fn the_peer_list_shows_decisions_places_and_both_ways() {
    let t0 = Instant::now();
    let mut q: UploadQueue<u32> = UploadQueue::new(Policy::TitForTat, 1, t0);
    q.admit(&ask(1, false), 1, t0);
    q.started(&QueueId([1; 16]), t0);
    q.sent(peer(1), 4000, t0);
    q.received(peer(1), 2000, t0);
    q.admit(&ask(2, false), 0, t0);
    let v = q.peers(t0);
    assert_eq!(v.len(), 2);
    assert_eq!(v[0].peer, peer(1));
    assert_eq!(
        (v[0].choked, v[0].reason),
        (false, Some(Reason::Optimistic))
    );
    assert_eq!((v[0].bytes_out, v[0].bytes_in), (4000, 2000));
    assert_eq!(v[0].position, None);
    assert_eq!((v[1].choked, v[1].reason), (true, None));
    assert_eq!(v[1].position, Some(1));
}

#[test]
fn a_seed_serves_in_turns_and_a_taker_that_keeps_the_file_waits_behind_the_sharers() {
    let t0 = Instant::now();
    let mut q: UploadQueue<u32> = UploadQueue::new(Policy::TitForTat, 1, t0);
    let mut r = rng();
    q.tick(1, t0, &mut r);
    let keeper = |i: u8| Ask {
        spreads: false,
        ..ask(i, true)
    };
    // Peer 1 takes the slot; a keeper and another sharer wait.
    assert_eq!(served(&q.admit(&ask(1, true), 1, t0)), Some(Grant::Turn));
    q.started(&QueueId([1; 16]), t0);
    let k = place(&q.admit(&keeper(2), 0, t0));
    assert_eq!(k.position, 1);
    let s3 = place(&q.admit(&ask(3, true), 0, t0));
    assert_eq!(s3.position, 1, "the sharer goes before the keeper");
    q.ended(&QueueId([1; 16]), t0);
    // The slot frees: the keeper asking first still waits for the sharer.
    let t1 = t0 + NEAR_RETRY;
    assert_eq!(place(&q.admit(&keeper(2), 1, t1)).position, 2);
    assert_eq!(served(&q.admit(&ask(3, true), 1, t1)), Some(Grant::Turn));
    q.started(&QueueId([3; 16]), t1);
    // Peer 1, served before, goes behind in its turn; with no sharer waiting, the keeper
    // comes next.
    assert_eq!(place(&q.admit(&ask(1, true), 0, t1)).position, 1);
    q.ended(&QueueId([3; 16]), t1);
    let t2 = t1 + NEAR_RETRY;
    assert_eq!(served(&q.admit(&ask(1, true), 1, t2)), Some(Grant::Turn));
    q.started(&QueueId([1; 16]), t2);
    q.ended(&QueueId([1; 16]), t2);
    let t3 = t2 + NEAR_RETRY;
    assert_eq!(served(&q.admit(&keeper(2), 1, t3)), Some(Grant::Turn));
}
