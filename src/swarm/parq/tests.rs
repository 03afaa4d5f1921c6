//! The PARQ queue in virtual time, and its header forms.

use super::*;

fn peer(i: u8, port: u16) -> PeerId {
    SocketAddrV4::new(Ipv4Addr::new(100, 64, 0, i), port)
}

fn id(n: u8) -> QueueId {
    QueueId([n; 16])
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn x_queued_is_written_id_first_and_read_in_any_order_and_case() {
    let q = Queued {
        id: Some(QueueId::parse("a293d2a9fbb5f8426e0ab64e8c9e1bda").unwrap()),
        position: Some(1),
        lifetime: Some(90),
        length: Some(2),
        eta: Some(0),
    };
    let line = q.to_string();
    assert_eq!(
        line,
        "ID=a293d2a9fbb5f8426e0ab64e8c9e1bda; position=1; lifetime=90; length=2; ETA=0"
    );
    assert_eq!(Queued::parse(&line), Ok(q));
    let shuffled =
        "Position=1 , eta=0;LENGTH=2; id=A293D2A9FBB5F8426E0AB64E8C9E1BDA; lifetime=90; x=y";
    assert_eq!(Queued::parse(shuffled), Ok(q));
    // An ID we could not name back is left out; numbers read as far as they go.
    let odd = Queued::parse("ID=12; position=3abc; length=x").unwrap();
    assert_eq!((odd.id, odd.position, odd.length), (None, Some(3), Some(0)));
    assert_eq!(Queued::parse(&"x".repeat(600)), Err(QueuedError::TooLong));
    assert_eq!(queued_reason(3, secs(65)), "Queued (slot 3, ETA: 1m 5s)");
}

#[test]
fn queue_lines_round_trip_and_nonsense_is_refused() {
    let me: SocketAddrV4 = "100.64.0.1:6346".parse().unwrap();
    let line = queue_line(id(0xab), me);
    assert_eq!(
        line,
        format!("QUEUE {} 100.64.0.1:6346\r\n", "ab".repeat(16))
    );
    assert_eq!(parse_queue_line(&line), Ok((id(0xab), Some(me))));
    assert_eq!(
        parse_queue_line("GIV 1:ab/x"),
        Err(QueueLineError::NotQueue)
    );
    assert_eq!(
        parse_queue_line("QUEUE 12 1.2.3.4:5"),
        Err(QueueLineError::BadId)
    );
    assert_eq!(
        parse_queue_line(&format!("QUEUE {} nowhere", "ab".repeat(16))),
        Ok((id(0xab), None))
    );
}

#[test]
fn an_entry_is_found_by_its_id_or_by_peer_and_file_and_keeps_its_place() {
    let t0 = Instant::now();
    let mut q: Parq<u32> = Parq::new();
    let a = q.arrive(peer(1, 1), &7, None, None, id(1), t0).unwrap();
    let b = q.arrive(peer(2, 1), &7, None, None, id(2), t0).unwrap();
    q.refused(&a, secs(5), t0);
    q.refused(&b, secs(5), t0);
    assert_eq!(q.position(&b, t0, |_| 0, |_| false), (2, 2));
    // B comes back naming its ID: the same entry, the same place.
    let again = q
        .arrive(peer(2, 1), &7, Some(b), None, id(9), t0 + secs(5))
        .unwrap();
    assert_eq!(again, b);
    assert_eq!(q.position(&b, t0 + secs(5), |_| 0, |_| false), (2, 2));
    // Without the ID, by peer and file.
    assert_eq!(q.arrive(peer(1, 1), &7, None, None, id(9), t0).unwrap(), a);
    // Another host naming A's ID does not get A's place.
    let thief = q.arrive(peer(3, 1), &7, Some(a), None, id(3), t0).unwrap();
    assert_eq!(thief, id(3));
    // A served entry goes to the back when its request ends.
    q.started(&a, t0 + secs(6));
    q.ended(&a, t0 + secs(7));
    q.refused(&a, secs(1), t0 + secs(7));
    assert_eq!(q.position(&a, t0 + secs(7), |_| 0, |_| false), (2, 2));
}

#[test]
fn an_absent_entry_stops_counting_after_its_window_and_is_forgotten_after_its_life() {
    let t0 = Instant::now();
    let mut q: Parq<u32> = Parq::new();
    let a = q.arrive(peer(1, 1), &7, None, None, id(1), t0).unwrap();
    let b = q.arrive(peer(2, 1), &7, None, None, id(2), t0).unwrap();
    q.refused(&a, secs(5), t0);
    q.refused(&b, secs(5), t0);
    let late = t0 + secs(5) + RETRY_WINDOW + secs(1);
    // B kept coming; A did not: B is next.
    q.arrive(peer(2, 1), &7, Some(b), None, id(9), late)
        .unwrap();
    q.refused(&b, secs(5), late);
    assert_eq!(q.position(&b, late, |_| 0, |_| false), (1, 1));
    assert_eq!(q.get(&a).unwrap().lifetime(t0), 65);
    q.expire(t0 + secs(5) + LIFE_AFTER_RETRY + RETRY_WINDOW + secs(1));
    assert!(q.get(&a).is_none());
    assert!(q.get(&b).is_some());
}

#[test]
fn early_retries_are_tolerated_up_to_ten_seconds_then_counted_and_banned() {
    let t0 = Instant::now();
    let mut q: Parq<u32> = Parq::new();
    let who = peer(1, 1);
    let a = q.arrive(who, &7, None, None, id(1), t0).unwrap();
    q.refused(&a, secs(30), t0);
    // A second after a 30 s Retry-After is 29 s early, past the 10 s tolerance: counted.
    let mut now = t0;
    for i in 0..BAN_AFTER - 1 {
        now += secs(1);
        assert!(
            q.arrive(who, &7, Some(a), None, id(9), now).is_ok(),
            "try {i}"
        );
        q.refused(&a, secs(30), now);
    }
    now += secs(1);
    assert_eq!(
        q.arrive(who, &7, Some(a), None, id(9), now),
        Err(ParqError::Banned(BAN_FOR))
    );
    assert!(q.get(&a).is_none());
    assert!(matches!(
        q.arrive(peer(1, 2), &8, None, None, id(2), now + secs(1)),
        Err(ParqError::Banned(_))
    ));
    // Another host is not affected; a retry within the tolerance is not counted.
    let b = q.arrive(peer(2, 1), &7, None, None, id(3), now).unwrap();
    for k in 0..2 * BAN_AFTER as u64 {
        q.refused(&b, secs(5), now + secs(5 * k));
        assert!(
            q.arrive(peer(2, 1), &7, Some(b), None, id(9), now + secs(5 * k + 1))
                .is_ok()
        );
    }
    assert!(
        q.arrive(who, &7, None, None, id(4), now + BAN_FOR + secs(1))
            .is_ok()
    );
}

#[test]
fn the_queue_is_bounded_per_address_and_makes_room_from_idle_entries() {
    let t0 = Instant::now();
    let mut q: Parq<u32> = Parq::new();
    let mut n = 0u32;
    let mut fresh = || {
        n += 1;
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&n.to_le_bytes());
        QueueId(b)
    };
    for port in 0..MAX_ENTRIES_PER_IP as u16 {
        let e = q
            .arrive(peer(1, port), &1, None, None, fresh(), t0)
            .unwrap();
        q.refused(&e, secs(30), t0);
    }
    // Every entry of that address waits: no room.
    assert_eq!(
        q.arrive(peer(1, 9999), &1, None, None, fresh(), t0),
        Err(ParqError::Full)
    );
    // Another address is not refused for it.
    assert!(q.arrive(peer(2, 1), &1, None, None, fresh(), t0).is_ok());
    // Once one of them has stopped waiting (past its window), it makes room.
    let later = t0 + secs(30) + RETRY_WINDOW + secs(1);
    assert!(
        q.arrive(peer(1, 9999), &1, None, None, fresh(), later)
            .is_ok()
    );
    assert!(q.len() <= MAX_ENTRIES_PER_IP + 1);
}

#[test]
fn callbacks_go_to_the_first_waiting_that_are_away_once_per_address() {
    let t0 = Instant::now();
    let mut q: Parq<u32> = Parq::new();
    let cb = |i: u8| Some(SocketAddrV4::new(Ipv4Addr::new(100, 64, 1, i), 6346));
    let a = q.arrive(peer(1, 1), &7, None, cb(1), id(1), t0).unwrap();
    let b = q.arrive(peer(2, 1), &7, None, cb(2), id(2), t0).unwrap();
    let c = q.arrive(peer(3, 1), &7, None, None, id(3), t0).unwrap();
    for e in [a, b, c] {
        q.refused(&e, secs(9), t0);
    }
    assert!(q.callbacks(0, t0, |_| 0).is_empty());
    assert_eq!(q.callbacks(1, t0, |_| 0), vec![(a, cb(1).unwrap())]);
    // Called already; the next has its turn only with a second slot.
    assert!(q.callbacks(1, t0, |_| 0).is_empty());
    assert_eq!(q.callbacks(2, t0, |_| 0), vec![(b, cb(2).unwrap())]);
    // C gave no address: never called. Refused twice in a row, an entry is dropped.
    assert!(q.callbacks(3, t0, |_| 0).is_empty());
    q.queue_refused(&a);
    assert!(q.get(&a).is_some());
    q.queue_refused(&a);
    assert!(q.get(&a).is_none());
}
