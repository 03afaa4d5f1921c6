//! Arbitrary bytes against the wire layer: framing, decoding, re-encoding, GGEP, extension
//! areas and a QRP receiver. Besides "no panic, no hang, bounded memory", it checks that what
//! decodes re-encodes to bytes that decode to the same value, and that the re-encoding is
//! stable: encode(decode(encode(x))) == encode(x).
//!
//! Run from the crate root, on stable: `RUSTC_BOOTSTRAP=1 cargo fuzz run wire`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use servent::wire::ext::Extensions;
use servent::wire::ggep::Ggep;
use servent::wire::header::MAX_BYE;
use servent::wire::qrp::QrpReceiver;
use servent::wire::{Descriptor, Framed, Frames, Payload, QrpMessage, frame};

fuzz_target!(|data: &[u8]| {
    descriptors(data);
    ggep(data);
    extensions(data);
    qrp(data);
});

/// Frames the bytes as a stream; every frame that decodes must round-trip.
fn descriptors(data: &[u8]) {
    // The single-frame entry point must agree with the iterator on the first frame.
    let first = frame(data);
    let mut frames = Frames::new(data);
    let mut n = 0usize;
    for f in frames.by_ref() {
        if n == 0 {
            assert_eq!(first, Ok(Framed::Frame(f)), "frame() and Frames disagree");
        }
        n += 1;
        let Ok(d1) = Descriptor::decode(&f) else {
            continue;
        };
        touch(&d1);
        let e1 = d1.to_vec();
        let f2 = match frame(&e1) {
            Ok(Framed::Frame(f2)) => f2,
            other => panic!("re-encoding of {d1:?} does not frame: {other:?}"),
        };
        assert_eq!(f2.len(), e1.len(), "re-encoding frames short");
        let d2 = Descriptor::decode(&f2)
            .unwrap_or_else(|e| panic!("re-encoding of {d1:?} does not decode: {e}"));
        match (d1.payload, d2.payload) {
            // A Bye at the cap without its NUL has its reason cut by one byte to fit again.
            (Payload::Bye(b1), Payload::Bye(b2)) if b1.reason.0.len() > MAX_BYE as usize - 3 => {
                assert!(b1.reason.0.starts_with(b2.reason.0));
            }
            _ => assert_eq!(d1, d2, "decode(encode(x)) != x"),
        }
        assert_eq!(d2.to_vec(), e1, "re-encoding is not stable");
    }
    assert!(frames.consumed() <= data.len());
    if n == 0 {
        assert!(!matches!(first, Ok(Framed::Frame(_))));
    }
}

/// Walks what a decoded value offers, so the "validated, cannot fail" iterators run too.
fn touch(d: &Descriptor<'_>) {
    let _ = format!("{d:?}");
    match d.payload {
        Payload::QueryHit(h) => {
            assert_eq!(h.results.iter().count(), h.results.len(), "results lost");
            for r in h.results.iter() {
                let _ = r.file_size();
                let _ = r.extensions.sha1();
            }
            let _ = h.flags();
            if let Some(q) = h.trailer.qhd() {
                let _ = q.ggep().map(|g| g.iter().count());
            }
        }
        Payload::Query(q) => {
            let _ = q.extensions.sha1();
            let _ = q.extensions.has_empty_items();
        }
        Payload::Ping(p) => ggep_values(p.ggep),
        Payload::Pong(p) => ggep_values(p.ggep),
        Payload::Push(p) => ggep_values(p.ggep),
        _ => {}
    }
}

/// A validated GGEP view yields values that decode.
fn ggep_values(g: Option<Ggep<'_>>) {
    for e in g.iter().flat_map(|g| g.iter()) {
        if let Err(err) = e.value() {
            panic!("validated GGEP extension {e:?} fails to decode: {err}");
        }
    }
}

fn ggep(data: &[u8]) {
    if let Ok(g) = Ggep::parse_all(data) {
        assert_eq!(g.as_bytes(), data);
        ggep_values(Some(g));
        let _ = format!("{g:?}");
    }
    if let Ok((g, rest)) = Ggep::parse_block(data) {
        assert_eq!(g.as_bytes().len() + rest.len(), data.len());
        ggep_values(Some(g));
    }
}

fn extensions(data: &[u8]) {
    if let Ok(e) = Extensions::parse(data) {
        assert_eq!(e.as_bytes(), data);
        let _ = e.iter().count();
        let _ = e.sha1();
        ggep_values(e.ggep());
        let _ = e.has_empty_items();
        let _ = format!("{e:?}");
    }
}

/// Splits the input into QRP payloads (a length byte, then that many bytes) and feeds those
/// that decode to one receiver, as a peer's stream would.
fn qrp(mut data: &[u8]) {
    let mut r = QrpReceiver::new();
    while let Some((&len, rest)) = data.split_first() {
        let (chunk, rest) = rest.split_at(usize::from(len).min(rest.len()));
        data = rest;
        let Ok(m) = QrpMessage::decode(chunk) else {
            continue;
        };
        let mut e = Vec::new();
        m.encode(&mut e);
        assert_eq!(
            QrpMessage::decode(&e),
            Ok(m),
            "QRP message does not round-trip"
        );
        match m {
            QrpMessage::Reset(x) => r.reset(&x),
            QrpMessage::Patch(x) => {
                let _ = r.patch(&x);
            }
        }
        if let Some(t) = r.table() {
            let _ = t.count();
        }
    }
}
