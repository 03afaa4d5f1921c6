//! PARQ as gtk-gnutella 1.2.3 speaks it (conformance/parq, taken from its parq.c): what it
//! writes we read, what we write it reads, the same QUEUE lines and ETA texts.

use std::net::SocketAddrV4;
use std::time::Duration;

use serde_json::Value;
use servent::swarm::parq::{
    QueueId, Queued, parse_queue_line, queue_line, queued_reason, short_time,
};

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/conformance/parq/x_queued.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("vectors")).expect("JSON")
}

fn num(v: &Value) -> Option<u32> {
    v.as_u64().map(|n| n as u32)
}

/// gtk-gnutella's ID when it is one we can hold: 32 hex digits.
fn hex_id(v: &Value) -> Option<QueueId> {
    v.as_str().and_then(QueueId::parse)
}

#[test]
fn x_queued_values_gtk_gnutella_reads_are_read_alike() {
    let v = vectors();
    let cases = v["parse"].as_array().expect("parse cases");
    assert!(cases.len() >= 30);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let header = c["header"].as_str().unwrap();
        let e = &c["expect"];
        let q = Queued::parse(header).unwrap_or_else(|err| panic!("{name}: {err}"));
        // An ID gtk-gnutella keeps that is not 32 hex digits is one we leave out; an empty
        // one it ignores, as we do.
        let want_id = hex_id(&e["id"]).filter(|_| {
            // gtk-gnutella keeps the spaces around it; we trim them, the same ID.
            !e["id"].as_str().unwrap_or("").contains(['|', ':', ','])
        });
        assert_eq!(q.id, want_id, "{name}: id");
        // gtk-gnutella reads an absent number as 0.
        assert_eq!(
            q.position.unwrap_or(0),
            num(&e["position"]).unwrap(),
            "{name}: position"
        );
        assert_eq!(
            q.length.unwrap_or(0),
            num(&e["length"]).unwrap_or(0),
            "{name}: length"
        );
        assert_eq!(
            q.eta.unwrap_or(0),
            num(&e["eta"]).unwrap_or(0),
            "{name}: eta"
        );
        let retry = c["retry_after"].as_u64().unwrap_or(0) as u32;
        if let Some(l) = num(&e["lifetime"]) {
            assert_eq!(q.lifetime_given(retry), l, "{name}: lifetime");
        }
    }
}

#[test]
fn x_queued_lines_and_reasons_are_written_as_gtk_gnutella_writes_them() {
    let v = vectors();
    let cases = v["emit"].as_array().expect("emit cases");
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let i = &c["inputs"];
        let small = i["small"].as_bool().unwrap_or(false);
        let q = Queued {
            id: hex_id(&i["id"]),
            position: num(&i["position"]),
            lifetime: (!small).then(|| num(&c["lifetime"])).flatten(),
            length: (!small).then(|| num(&i["length"])).flatten(),
            eta: (!small).then(|| num(&i["eta"])).flatten(),
        };
        assert_eq!(
            format!("X-Queued: {q}"),
            c["x_queued"].as_str().unwrap(),
            "{name}"
        );
        let eta = Duration::from_secs(i["eta"].as_u64().unwrap());
        let reason = queued_reason(num(&i["position"]).unwrap(), eta);
        assert_eq!(
            format!("HTTP/1.1 503 {reason}"),
            c["status_line"].as_str().unwrap(),
            "{name}"
        );
        // And what we write, we read back.
        assert_eq!(Queued::parse(&q.to_string()), Ok(q), "{name}");
    }
    let on_2xx = v["emit_other"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "x_queued_on_2xx")
        .expect("the 2xx form");
    let q = Queued {
        id: hex_id(&on_2xx["inputs"]["id"]),
        ..Queued::default()
    };
    assert_eq!(format!("X-Queued: {q}"), on_2xx["line"].as_str().unwrap());
}

#[test]
fn eta_texts_match_short_time_ascii() {
    let v = vectors();
    let ex = v["eta_text"]["examples"].as_array().expect("examples");
    assert!(ex.len() >= 10);
    for e in ex {
        let s = e["eta"].as_u64().unwrap();
        assert_eq!(
            short_time(Duration::from_secs(s)),
            e["text"].as_str().unwrap(),
            "{s}s"
        );
    }
}

#[test]
fn queue_lines_are_written_and_read_as_gtk_gnutella_does() {
    let v = vectors();
    for c in v["queue_line"]["emit_examples"].as_array().unwrap() {
        let id = hex_id(&c["inputs"]["id"]).unwrap();
        let me: SocketAddrV4 = c["inputs"]["listen"].as_str().unwrap().parse().unwrap();
        assert_eq!(queue_line(id, me), c["line"].as_str().unwrap());
    }
    let cases = v["queue_line"]["parse"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for c in cases {
        let line = c["line"].as_str().unwrap();
        let e = &c["expect"];
        let got = parse_queue_line(line);
        if e["error"].as_bool() == Some(true) {
            assert!(got.is_err(), "{line:?}");
            continue;
        }
        match hex_id(&e["id"]) {
            // An ID that is not ours to hold: gtk-gnutella finds no download for it either.
            None => assert!(got.is_err(), "{line:?}"),
            Some(id) => {
                let (got_id, got_addr) = got.unwrap_or_else(|err| panic!("{line:?}: {err}"));
                assert_eq!(got_id, id, "{line:?}");
                // IPv6 callers are not ours (servent speaks IPv4); the rest alike.
                let want: Option<SocketAddrV4> = e["addr"].as_str().and_then(|a| a.parse().ok());
                assert_eq!(got_addr, want, "{line:?}");
            }
        }
    }
}
