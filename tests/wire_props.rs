//! Property tests of the wire layer (src/wire).
//!
//! Round trips: every descriptor type is built from arbitrary values with the crate's own
//! builders, encoded as a whole descriptor, framed and decoded; the decoded value must equal the
//! original, re-encode to the same bytes, and (for GGEP and extension items) give back the very
//! values that went into the builders. QRP tables must survive `encode_table` → `QrpReceiver`.
//!
//! Robustness: arbitrary and mutated bytes go through every entry point; nothing may panic,
//! every error has a code, every successful decode serialises to JSON and re-encodes to bytes
//! that decode to an equal value.

use std::net::{Ipv4Addr, SocketAddrV4};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use servent::wire::ext::{ExtBuilder, ExtItem, Extensions};
use servent::wire::ggep::{Encoding, Ggep, GgepBuilder};
use servent::wire::header::{HEADER_LEN, Header, PayloadType};
use servent::wire::hit::{Qhd, QhdFlags, QueryHit, Results, ResultsBuilder, Trailer};
use servent::wire::qrp::{QrpMessage, QrpPatch, QrpReceiver, QrpReset, QrpTable, encode_table};
use servent::wire::query::{Query, QueryFlags};
use servent::wire::simple::{Bye, Ping, Pong, Push};
use servent::wire::types::{FileIndex, Guid, Hops, ServentId, Text, Ttl, VendorCode};
use servent::wire::urn::Sha1Urn;
use servent::wire::vendor::{
    List, SupportedMessage, VendorBody, VendorKind, VendorMessage, selector, supported_entries,
};
use servent::wire::{Descriptor, Frame, Framed, Frames, Payload, frame};

/// Cases for the round-trip and mutation properties.
const ROUND_TRIP_CASES: u32 = 1000;
/// Cases for the QRP table property, whose tables reach 2^16 slots.
const TABLE_CASES: u32 = 512;
/// Cases for the cheap no-panic properties.
const FUZZ_CASES: u32 = 2000;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        max_global_rejects: cases * 4,
        // Failures are reported with their minimal input; no regression files are written.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Models and strategies
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Head {
    muid: [u8; 16],
    ttl: u8,
    hops: u8,
}

fn head() -> impl Strategy<Value = Head> {
    (any::<[u8; 16]>(), any::<u8>(), any::<u8>()).prop_map(|(muid, ttl, hops)| Head {
        muid,
        ttl,
        hops,
    })
}

fn desc<'a>(h: &Head, payload: Payload<'a>) -> Descriptor<'a> {
    Descriptor {
        muid: Guid(h.muid),
        ttl: Ttl(h.ttl),
        hops: Hops(h.hops),
        payload,
    }
}

fn addr() -> impl Strategy<Value = SocketAddrV4> {
    (any::<[u8; 4]>(), any::<u16>())
        .prop_map(|(ip, port)| SocketAddrV4::new(Ipv4Addr::from(ip), port))
}

/// One GGEP extension as handed to the builder.
#[derive(Debug, Clone)]
struct GgepVal {
    id: String,
    value: Vec<u8>,
    enc: Encoding,
}

/// Values with the shapes that matter to GGEP: random, NUL-heavy (COBS), constant runs
/// (deflate), and long NUL-free runs (COBS 0xFF codes).
fn ggep_value(max: usize) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..=max),
        vec(prop_oneof![2 => Just(0u8), 1 => any::<u8>()], 0..=max),
        (any::<u8>(), 0..=max).prop_map(|(b, n)| vec![b; n]),
        vec(prop_oneof![200 => 1u8..=255, 1 => Just(0u8)], 0..=max),
    ]
    .boxed()
}

/// `cobs`: `Some(true)` where the block sits in a NUL-delimited area, `None` for any.
fn ggep_val(max: usize, cobs: Option<bool>) -> impl Strategy<Value = GgepVal> {
    ("[ -~]{1,15}", ggep_value(max), any::<bool>(), any::<bool>()).prop_map(
        move |(id, value, deflate, c)| GgepVal {
            id,
            value,
            enc: Encoding {
                deflate,
                cobs_if_nul: cobs.unwrap_or(c),
            },
        },
    )
}

fn ggep_block(n: usize, max: usize, cobs: Option<bool>) -> BoxedStrategy<Vec<GgepVal>> {
    vec(ggep_val(max, cobs), 1..=n).boxed()
}

fn build_ggep(vals: &[GgepVal]) -> Vec<u8> {
    let mut b = GgepBuilder::new();
    for v in vals {
        b.push(&v.id, &v.value, v.enc).expect("valid ID and length");
    }
    b.finish()
}

/// One item of an extension area as handed to [`ExtBuilder`].
#[derive(Debug, Clone)]
enum ItemSpec {
    Urn([u8; 20]),
    Text(String),
    Ggep(Vec<GgepVal>),
}

fn text_item() -> BoxedStrategy<String> {
    prop_oneof![
        Just("urn:".to_string()),
        Just("urn:sha1:".to_string()),
        Just("URN:SHA1:".to_string()),
        "[uU][rR][nN]:[ -~]{0,40}",
        any::<[u8; 20]>().prop_map(|d| Sha1Urn(d).to_string().to_lowercase()),
        any::<[u8; 20]>().prop_map(|d| format!(
            "urn:bitprint:{}.{}",
            Sha1Urn(d).base32(),
            "B".repeat(39)
        )),
        "<[^\x00]{0,40}",
        "(?s).{0,30}",
    ]
    .boxed()
}

fn item(n: usize, max: usize, cobs: Option<bool>) -> BoxedStrategy<ItemSpec> {
    prop_oneof![
        any::<[u8; 20]>().prop_map(ItemSpec::Urn),
        text_item().prop_map(ItemSpec::Text),
        ggep_block(n, max, cobs).prop_map(ItemSpec::Ggep),
    ]
    .boxed()
}

fn build_area(items: &[ItemSpec]) -> Vec<u8> {
    let mut b = ExtBuilder::new();
    for i in items {
        match i {
            ItemSpec::Urn(d) => b.urn(&Sha1Urn(*d)),
            ItemSpec::Text(t) => b.text(t),
            ItemSpec::Ggep(g) => b.ggep(&build_ggep(g)),
        };
    }
    b.finish()
}

#[derive(Debug, Clone)]
struct PingSpec {
    head: Head,
    ggep: Option<Vec<GgepVal>>,
}

fn ping() -> impl Strategy<Value = PingSpec> {
    (head(), proptest::option::of(ggep_block(4, 300, None)))
        .prop_map(|(head, ggep)| PingSpec { head, ggep })
}

#[derive(Debug, Clone)]
struct PongSpec {
    head: Head,
    addr: SocketAddrV4,
    files: u32,
    kbytes: u32,
    ggep: Option<Vec<GgepVal>>,
}

fn pong() -> impl Strategy<Value = PongSpec> {
    (
        head(),
        addr(),
        any::<u32>(),
        any::<u32>(),
        proptest::option::of(ggep_block(4, 300, None)),
    )
        .prop_map(|(head, addr, files, kbytes, ggep)| PongSpec {
            head,
            addr,
            files,
            kbytes,
            ggep,
        })
}

#[derive(Debug, Clone)]
struct PushSpec {
    head: Head,
    target: [u8; 16],
    index: u32,
    addr: SocketAddrV4,
    ggep: Option<Vec<GgepVal>>,
}

fn push() -> impl Strategy<Value = PushSpec> {
    (
        head(),
        any::<[u8; 16]>(),
        any::<u32>(),
        addr(),
        proptest::option::of(ggep_block(4, 300, None)),
    )
        .prop_map(|(head, target, index, addr, ggep)| PushSpec {
            head,
            target,
            index,
            addr,
            ggep,
        })
}

#[derive(Debug, Clone)]
struct ByeSpec {
    head: Head,
    code: u16,
    reason: Vec<u8>,
}

fn bye() -> impl Strategy<Value = ByeSpec> {
    (head(), any::<u16>(), vec(1u8..=255, 0..300)).prop_map(|(head, code, reason)| ByeSpec {
        head,
        code,
        reason,
    })
}

#[derive(Debug, Clone)]
struct QuerySpec {
    head: Head,
    flags: u16,
    criteria: Vec<u8>,
    items: Vec<ItemSpec>,
    /// LimeWire ends the area with one NUL.
    trailing_nul: bool,
}

fn query() -> impl Strategy<Value = QuerySpec> {
    (
        head(),
        any::<u16>(),
        vec(1u8..=255, 0..80),
        vec(item(3, 80, None), 0..4),
        any::<bool>(),
    )
        .prop_map(|(head, flags, criteria, items, trailing_nul)| QuerySpec {
            head,
            flags,
            criteria,
            items,
            trailing_nul,
        })
}

#[derive(Debug, Clone)]
struct ResultSpec {
    index: u32,
    size: u32,
    name: String,
    items: Vec<ItemSpec>,
}

#[derive(Debug, Clone)]
enum TrailerSpec {
    None,
    Qhd {
        vendor: [u8; 4],
        flags: QhdFlags,
        /// LimeWire's 4-byte open data, with the XML length.
        xml_len: Option<u16>,
        /// LimeWire puts a byte before the GGEP block.
        prefix: Option<u8>,
        ggep: Vec<GgepVal>,
        suffix: Vec<u8>,
    },
    Unknown(Vec<u8>),
}

fn qhd_flags() -> impl Strategy<Value = QhdFlags> {
    any::<[bool; 5]>().prop_map(|[push, busy, uploaded, measured_speed, ggep]| QhdFlags {
        push,
        busy,
        uploaded,
        measured_speed,
        ggep,
    })
}

fn trailer() -> impl Strategy<Value = TrailerSpec> {
    prop_oneof![
        Just(TrailerSpec::None),
        (
            any::<[u8; 4]>(),
            qhd_flags(),
            proptest::option::of(any::<u16>()),
            proptest::option::of(any::<u8>().prop_filter("not the GGEP magic", |&b| b != 0xC3)),
            ggep_block(3, 200, None),
            vec(any::<u8>(), 0..20),
        )
            .prop_map(
                |(vendor, flags, xml_len, prefix, ggep, suffix)| TrailerSpec::Qhd {
                    vendor,
                    flags,
                    xml_len,
                    prefix,
                    ggep,
                    suffix,
                }
            ),
        vec(any::<u8>(), 1..=4).prop_map(TrailerSpec::Unknown),
    ]
}

#[derive(Debug, Clone)]
struct HitSpec {
    head: Head,
    addr: SocketAddrV4,
    speed: u32,
    results: Vec<ResultSpec>,
    trailer: TrailerSpec,
    servent: [u8; 16],
}

fn hit() -> impl Strategy<Value = HitSpec> {
    let result = (
        any::<u32>(),
        any::<u32>(),
        "(?s).{0,40}",
        vec(item(2, 64, Some(true)), 0..3),
    )
        .prop_map(|(index, size, name, items)| ResultSpec {
            index,
            size,
            name,
            items,
        });
    (
        head(),
        addr(),
        any::<u32>(),
        vec(result, 0..20),
        trailer(),
        any::<[u8; 16]>(),
    )
        .prop_map(|(head, addr, speed, results, trailer, servent)| HitSpec {
            head,
            addr,
            speed,
            results,
            trailer,
            servent,
        })
}

#[derive(Debug, Clone)]
enum QrpSpec {
    Reset {
        log2: u8,
        infinity: u8,
    },
    Patch {
        seq_no: u8,
        seq_size: u8,
        compressor: u8,
        entry_bits: u8,
        data: Vec<u8>,
    },
}

fn qrp_msg() -> impl Strategy<Value = QrpSpec> {
    prop_oneof![
        (0u8..32, 1u8..=255).prop_map(|(log2, infinity)| QrpSpec::Reset { log2, infinity }),
        (
            (1u8..=255).prop_flat_map(|size| (1..=size, Just(size))),
            any::<u8>(),
            prop::sample::select(vec![1u8, 2, 4, 8]),
            vec(any::<u8>(), 0..600),
        )
            .prop_map(|((seq_no, seq_size), compressor, entry_bits, data)| {
                QrpSpec::Patch {
                    seq_no,
                    seq_size,
                    compressor,
                    entry_bits,
                    data,
                }
            }),
    ]
}

fn qrp_payload(s: &QrpSpec) -> QrpMessage<'_> {
    match s {
        QrpSpec::Reset { log2, infinity } => QrpMessage::Reset(QrpReset {
            table_len: 1 << log2,
            infinity: *infinity,
        }),
        QrpSpec::Patch {
            seq_no,
            seq_size,
            compressor,
            entry_bits,
            data,
        } => QrpMessage::Patch(QrpPatch {
            seq_no: *seq_no,
            seq_size: *seq_size,
            compressor: *compressor,
            entry_bits: *entry_bits,
            data,
        }),
    }
}

#[derive(Debug, Clone)]
enum VendorSpec {
    Messages(Vec<([u8; 4], u16, u16)>),
    Features(Vec<([u8; 4], u16)>),
    HopsFlow(u8),
    TcpConnectBack(u16),
    UdpConnectBack(u16),
    QueryStatusRequest,
    QueryStatusResponse(u16),
    PushProxyRequest,
    PushProxyAck(SocketAddrV4),
    Other([u8; 4], u16, u16, Vec<u8>),
}

const KNOWN: [(VendorCode, u16, u16); 9] = [
    selector::MESSAGES_SUPPORTED,
    selector::FEATURES_SUPPORTED,
    selector::HOPS_FLOW,
    selector::TCP_CONNECT_BACK,
    selector::UDP_CONNECT_BACK,
    selector::QUERY_STATUS_REQUEST,
    selector::QUERY_STATUS_RESPONSE,
    selector::PUSH_PROXY_REQUEST,
    selector::PUSH_PROXY_ACK,
];

fn vendor_spec() -> impl Strategy<Value = VendorSpec> {
    let code = || {
        prop_oneof![
            any::<[u8; 4]>(),
            Just([0; 4]),
            Just(*b"BEAR"),
            Just(*b"GTKG"),
            Just(*b"LIME")
        ]
    };
    prop_oneof![
        vec((code(), any::<u16>(), any::<u16>()), 0..40).prop_map(VendorSpec::Messages),
        vec((code(), any::<u16>()), 0..40).prop_map(VendorSpec::Features),
        any::<u8>().prop_map(VendorSpec::HopsFlow),
        any::<u16>().prop_map(VendorSpec::TcpConnectBack),
        any::<u16>().prop_map(VendorSpec::UdpConnectBack),
        Just(VendorSpec::QueryStatusRequest),
        any::<u16>().prop_map(VendorSpec::QueryStatusResponse),
        Just(VendorSpec::PushProxyRequest),
        addr().prop_map(VendorSpec::PushProxyAck),
        (code(), 0u16..30, 0u16..4, vec(any::<u8>(), 0..200))
            .prop_filter("not a decoded triple", |(v, s, ver, _)| {
                !KNOWN.contains(&(VendorCode(*v), *s, *ver))
            })
            .prop_map(|(v, s, ver, d)| VendorSpec::Other(v, s, ver, d)),
    ]
}

#[derive(Debug, Clone)]
struct VendorMsgSpec {
    head: Head,
    standard: bool,
    spec: VendorSpec,
}

fn vendor() -> impl Strategy<Value = VendorMsgSpec> {
    (head(), any::<bool>(), vendor_spec()).prop_map(|(head, standard, spec)| VendorMsgSpec {
        head,
        standard,
        spec,
    })
}

// ---------------------------------------------------------------------------------------------
// Building descriptors from the models
// ---------------------------------------------------------------------------------------------

fn parsed_ggep(block: &Option<Vec<u8>>) -> Option<Ggep<'_>> {
    block
        .as_deref()
        .map(|b| Ggep::parse_all(b).expect("a built GGEP block parses"))
}

fn with_ping<R>(s: &PingSpec, f: impl FnOnce(&Descriptor<'_>) -> R) -> R {
    let block = s.ggep.as_deref().map(build_ggep);
    f(&desc(
        &s.head,
        Payload::Ping(Ping {
            ggep: parsed_ggep(&block),
        }),
    ))
}

fn with_pong<R>(s: &PongSpec, f: impl FnOnce(&Descriptor<'_>) -> R) -> R {
    let block = s.ggep.as_deref().map(build_ggep);
    f(&desc(
        &s.head,
        Payload::Pong(Pong {
            addr: s.addr,
            files: s.files,
            kbytes: s.kbytes,
            ggep: parsed_ggep(&block),
        }),
    ))
}

fn with_push<R>(s: &PushSpec, f: impl FnOnce(&Descriptor<'_>) -> R) -> R {
    let block = s.ggep.as_deref().map(build_ggep);
    f(&desc(
        &s.head,
        Payload::Push(Push {
            target: ServentId(s.target),
            index: FileIndex(s.index),
            addr: s.addr,
            ggep: parsed_ggep(&block),
        }),
    ))
}

fn with_bye<R>(s: &ByeSpec, f: impl FnOnce(&Descriptor<'_>) -> R) -> R {
    f(&desc(
        &s.head,
        Payload::Bye(Bye {
            code: s.code,
            reason: Text(&s.reason),
        }),
    ))
}

fn query_area(s: &QuerySpec) -> Vec<u8> {
    let mut area = build_area(&s.items);
    if s.trailing_nul {
        area.push(0);
    }
    area
}

fn with_query<R>(s: &QuerySpec, f: impl FnOnce(&Descriptor<'_>) -> R) -> R {
    let area = query_area(s);
    let extensions = Extensions::parse(&area).expect("a built extension area parses");
    f(&desc(
        &s.head,
        Payload::Query(Query {
            flags: QueryFlags(s.flags),
            criteria: Text(&s.criteria),
            extensions,
        }),
    ))
}

/// Open data and private area of a QHD trailer.
fn qhd_parts(s: &TrailerSpec) -> (Vec<u8>, Vec<u8>) {
    match s {
        TrailerSpec::Qhd {
            flags,
            xml_len,
            prefix,
            ggep,
            suffix,
            ..
        } => {
            let mut open = flags.to_ab().to_vec();
            if let Some(x) = xml_len {
                open.extend_from_slice(&x.to_le_bytes());
            }
            let mut private: Vec<u8> = prefix.iter().copied().collect();
            private.extend_from_slice(&build_ggep(ggep));
            private.extend_from_slice(suffix);
            (open, private)
        }
        _ => (Vec::new(), Vec::new()),
    }
}

fn with_hit<R>(s: &HitSpec, f: impl FnOnce(&Descriptor<'_>) -> R) -> R {
    let mut rb = ResultsBuilder::new();
    for r in &s.results {
        assert!(rb.push(FileIndex(r.index), r.size, &r.name, &build_area(&r.items)));
    }
    let results = Results::from_bytes(rb.bytes(), rb.count()).expect("built results parse");
    let (open, private) = qhd_parts(&s.trailer);
    let trailer = match &s.trailer {
        TrailerSpec::None => Trailer::None,
        TrailerSpec::Qhd { vendor, .. } => Trailer::Qhd(Qhd {
            vendor: VendorCode(*vendor),
            open_data: &open,
            private: &private,
        }),
        TrailerSpec::Unknown(b) => Trailer::Unknown(b),
    };
    f(&desc(
        &s.head,
        Payload::QueryHit(QueryHit {
            addr: s.addr,
            speed: s.speed,
            results,
            trailer,
            servent: ServentId(s.servent),
        }),
    ))
}

fn with_vendor<R>(s: &VendorMsgSpec, f: impl FnOnce(&Descriptor<'_>) -> R) -> R {
    let raw: Vec<u8> = match &s.spec {
        VendorSpec::Messages(m) => supported_entries(
            &m.iter()
                .map(|&(v, selector, version)| SupportedMessage {
                    vendor: VendorCode(v),
                    selector,
                    version,
                })
                .collect::<Vec<_>>(),
        ),
        VendorSpec::Features(fs) => fs
            .iter()
            .flat_map(|(n, v)| n.iter().copied().chain(v.to_le_bytes()))
            .collect(),
        _ => Vec::new(),
    };
    let (triple, body) = match &s.spec {
        VendorSpec::Messages(_) => (
            selector::MESSAGES_SUPPORTED,
            VendorBody::MessagesSupported {
                messages: List::from_entries(&raw).expect("whole entries"),
            },
        ),
        VendorSpec::Features(_) => (
            selector::FEATURES_SUPPORTED,
            VendorBody::FeaturesSupported {
                features: List::from_entries(&raw).expect("whole entries"),
            },
        ),
        VendorSpec::HopsFlow(h) => (selector::HOPS_FLOW, VendorBody::HopsFlow { max_hops: *h }),
        VendorSpec::TcpConnectBack(p) => (
            selector::TCP_CONNECT_BACK,
            VendorBody::TcpConnectBack { port: *p },
        ),
        VendorSpec::UdpConnectBack(p) => (
            selector::UDP_CONNECT_BACK,
            VendorBody::UdpConnectBack { port: *p },
        ),
        VendorSpec::QueryStatusRequest => (
            selector::QUERY_STATUS_REQUEST,
            VendorBody::QueryStatusRequest,
        ),
        VendorSpec::QueryStatusResponse(k) => (
            selector::QUERY_STATUS_RESPONSE,
            VendorBody::QueryStatusResponse { kept: *k },
        ),
        VendorSpec::PushProxyRequest => {
            (selector::PUSH_PROXY_REQUEST, VendorBody::PushProxyRequest)
        }
        VendorSpec::PushProxyAck(a) => (
            selector::PUSH_PROXY_ACK,
            VendorBody::PushProxyAck { proxy: *a },
        ),
        VendorSpec::Other(v, sel, ver, d) => {
            ((VendorCode(*v), *sel, *ver), VendorBody::Other { data: d })
        }
    };
    let mut msg = VendorMessage::new(triple, body);
    if s.standard {
        msg.kind = VendorKind::Standard;
    }
    f(&desc(&s.head, Payload::Vendor(msg)))
}

fn with_qrp<R>(h: &Head, s: &QrpSpec, f: impl FnOnce(&Descriptor<'_>) -> R) -> R {
    f(&desc(h, Payload::Qrp(qrp_payload(s))))
}

/// Bytes of some valid descriptor of any type.
fn any_descriptor_bytes() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        ping().prop_map(|s| with_ping(&s, |d| d.to_vec())),
        pong().prop_map(|s| with_pong(&s, |d| d.to_vec())),
        push().prop_map(|s| with_push(&s, |d| d.to_vec())),
        bye().prop_map(|s| with_bye(&s, |d| d.to_vec())),
        query().prop_map(|s| with_query(&s, |d| d.to_vec())),
        hit().prop_map(|s| with_hit(&s, |d| d.to_vec())),
        vendor().prop_map(|s| with_vendor(&s, |d| d.to_vec())),
        (head(), qrp_msg()).prop_map(|(h, s)| with_qrp(&h, &s, |d| d.to_vec())),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

/// Encodes `d`, frames and decodes it: the decoded value must equal `d` and re-encode to the
/// same bytes. Payloads over their type's cap must be refused by the framer (then the case is
/// rejected).
fn round_trip<'b>(d: &Descriptor<'_>, bytes: &'b [u8]) -> Result<Descriptor<'b>, TestCaseError> {
    prop_assert_eq!(&d.to_vec()[..], bytes);
    let payload_len = (bytes.len() - HEADER_LEN) as u32;
    let kind = d.payload.kind();
    if payload_len > kind.cap() {
        let err = frame(bytes).expect_err("over the cap");
        prop_assert_eq!(err.code(), "payload-too-large");
        prop_assume!(false, "payload over the cap");
    }
    // A strict prefix is never a frame.
    for cut in [0, HEADER_LEN - 1, HEADER_LEN, bytes.len() - 1] {
        if cut < bytes.len() {
            prop_assert_eq!(
                frame(&bytes[..cut]),
                Ok(Framed::Incomplete {
                    needed: if cut < HEADER_LEN {
                        HEADER_LEN - cut
                    } else {
                        bytes.len() - cut
                    }
                })
            );
        }
    }
    let f = match frame(bytes) {
        Ok(Framed::Frame(f)) => f,
        other => return Err(TestCaseError::fail(format!("not framed: {other:?}"))),
    };
    prop_assert_eq!(f.len(), bytes.len());
    prop_assert_eq!(f.header.kind, kind);
    prop_assert_eq!(f.header.len, payload_len);
    let back = Descriptor::decode(&f)
        .map_err(|e| TestCaseError::fail(format!("decode failed: {e} ({})", e.code())))?;
    prop_assert_eq!(&back, d);
    prop_assert_eq!(back.to_vec(), bytes);
    prop_assert!(serde_json::to_string(&back).is_ok());
    Ok(back)
}

/// The GGEP block decoded from a built one holds the same IDs and values, with the encodings
/// asked for.
fn check_ggep(g: &Ggep<'_>, vals: &[GgepVal]) -> Result<(), TestCaseError> {
    let exts: Vec<_> = g.iter().collect();
    prop_assert_eq!(exts.len(), vals.len());
    for (e, v) in exts.iter().zip(vals) {
        prop_assert_eq!(e.id, v.id.as_str());
        prop_assert_eq!(e.deflate, v.enc.deflate);
        if e.cobs {
            prop_assert!(v.enc.cobs_if_nul, "COBS used though not asked for");
        }
        if v.enc.cobs_if_nul {
            prop_assert!(!e.data.contains(&0), "NUL left in a COBS-if-NUL value");
        }
        let value = e
            .value()
            .map_err(|err| TestCaseError::fail(format!("{} does not decode: {err}", e.id)))?;
        prop_assert_eq!(&*value, &v.value[..], "value of {}", e.id);
    }
    if let Some(first) = vals.first() {
        let got = g.get(&first.id).expect("first ID present");
        prop_assert_eq!(&*got.value().unwrap(), &first.value[..]);
    }
    Ok(())
}

#[derive(Debug)]
enum Expected<'s> {
    Sha1(Sha1Urn),
    /// Text bytes and the kind PROTOCOL.md §3 gives them.
    Text(Vec<u8>, &'static str),
    Ggep(&'s [GgepVal]),
}

fn text_kind(b: &[u8]) -> &'static str {
    if b.len() >= 4 && b[..4].eq_ignore_ascii_case(b"urn:") {
        if b.len() == 4 || b.eq_ignore_ascii_case(b"urn:sha1:") {
            "urn-request"
        } else if Sha1Urn::parse(b).is_ok() {
            "sha1"
        } else {
            "urn"
        }
    } else if b[0] == b'<' {
        "xml"
    } else {
        "other"
    }
}

/// What the area built from `items` must read back as. A text item that would be empty once
/// its NUL and 0x1C bytes are dropped, or that would start with the GGEP magic 0xC3, cannot be
/// carried and is left out by the builder.
fn expected_items(items: &[ItemSpec]) -> Vec<Expected<'_>> {
    items
        .iter()
        .filter_map(|i| match i {
            ItemSpec::Urn(d) => Some(Expected::Sha1(Sha1Urn(*d))),
            ItemSpec::Text(t) => {
                let b: Vec<u8> = t.bytes().filter(|&b| b != 0 && b != 0x1C).collect();
                if b.is_empty() || b[0] == 0xC3 {
                    None
                } else {
                    let kind = text_kind(&b);
                    Some(Expected::Text(b, kind))
                }
            }
            ItemSpec::Ggep(g) => (!g.is_empty()).then_some(Expected::Ggep(g)),
        })
        .collect()
}

fn check_area(e: &Extensions<'_>, items: &[ItemSpec]) -> Result<(), TestCaseError> {
    let got: Vec<_> = e.iter().collect();
    let want = expected_items(items);
    prop_assert_eq!(got.len(), want.len(), "items {:?} vs {:?}", got, want);
    for (g, w) in got.iter().zip(&want) {
        match (g, w) {
            (ExtItem::Sha1(u), Expected::Sha1(v)) => prop_assert_eq!(u, v),
            (ExtItem::Sha1(u), Expected::Text(b, "sha1")) => {
                prop_assert_eq!(Ok(*u), Sha1Urn::parse(b))
            }
            (ExtItem::UrnRequest(t), Expected::Text(b, "urn-request"))
            | (ExtItem::Urn(t), Expected::Text(b, "urn"))
            | (ExtItem::Xml(t), Expected::Text(b, "xml"))
            | (ExtItem::Other(t), Expected::Text(b, "other")) => prop_assert_eq!(t.0, &b[..]),
            (ExtItem::Ggep(g), Expected::Ggep(v)) => check_ggep(g, v)?,
            _ => return Err(TestCaseError::fail(format!("{g:?} read back for {w:?}"))),
        }
    }
    prop_assert_eq!(
        e.ggep(),
        got.iter().find_map(|i| match i {
            ExtItem::Ggep(g) => Some(*g),
            _ => None,
        })
    );
    prop_assert!(!e.has_empty_items(), "built area reports empty items");
    Ok(())
}

fn check_tail_ggep(g: Option<Ggep<'_>>, spec: &Option<Vec<GgepVal>>) -> Result<(), TestCaseError> {
    match (g, spec) {
        (None, None) => Ok(()),
        (Some(g), Some(v)) => check_ggep(&g, v),
        (g, v) => Err(TestCaseError::fail(format!("GGEP {g:?} for {v:?}"))),
    }
}

// ---------------------------------------------------------------------------------------------
// No-panic exercise of decoded values
// ---------------------------------------------------------------------------------------------

fn poke_ggep(g: &Ggep<'_>) -> Result<(), TestCaseError> {
    for e in g.iter() {
        prop_assert!(!e.id.is_empty() && e.id.len() <= 15);
        let v = e.value();
        prop_assert!(
            v.is_ok(),
            "validated extension {} does not decode: {:?}",
            e.id,
            v
        );
    }
    for id in ["DU", "H", "IPP", "UP", "VC", "LF"] {
        let _ = g.int(id);
        let _ = g.value(id);
    }
    prop_assert_eq!(Ggep::parse_all(g.as_bytes()), Ok(*g));
    prop_assert!(serde_json::to_string(g).is_ok());
    Ok(())
}

fn poke_ext(e: &Extensions<'_>) -> Result<(), TestCaseError> {
    for item in e.iter() {
        if let ExtItem::Ggep(g) = item {
            poke_ggep(&g)?;
        }
    }
    let _ = e.sha1();
    let _ = e.ggep();
    let _ = e.has_empty_items();
    prop_assert_eq!(Extensions::parse(e.as_bytes()), Ok(*e));
    prop_assert!(serde_json::to_string(e).is_ok());
    Ok(())
}

fn poke_qrp(m: &QrpMessage<'_>) -> Result<(), TestCaseError> {
    let mut r = QrpReceiver::new();
    match m {
        QrpMessage::Reset(x) => {
            r.reset(x);
            prop_assert!(
                r.table()
                    .is_some_and(|t| t.slots() as u64 <= x.table_len as u64)
            );
        }
        QrpMessage::Patch(p) => {
            r.reset(&QrpReset {
                table_len: 1 << 10,
                infinity: 7,
            });
            if let Err(e) = r.patch(p) {
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }
    Ok(())
}

fn poke(d: &Descriptor<'_>) -> Result<(), TestCaseError> {
    match d.payload {
        Payload::Ping(Ping { ggep })
        | Payload::Pong(Pong { ggep, .. })
        | Payload::Push(Push { ggep, .. }) => {
            if let Some(g) = ggep {
                poke_ggep(&g)?;
            }
        }
        Payload::Bye(b) => prop_assert!(!b.reason.0.contains(&0)),
        Payload::Query(q) => {
            poke_ext(&q.extensions)?;
            let _ = (
                q.flags.max_hits(),
                q.flags.oob(),
                q.criteria.to_string_lossy(),
            );
        }
        Payload::QueryHit(h) => {
            prop_assert_eq!(h.results.iter().count(), h.results.len());
            for r in h.results.iter() {
                poke_ext(&r.extensions)?;
                let _ = r.file_size();
            }
            let _ = h.flags();
            if let Some(q) = h.trailer.qhd()
                && let Some(g) = q.ggep()
            {
                poke_ggep(&g)?;
            }
        }
        Payload::Qrp(m) => poke_qrp(&m)?,
        Payload::Vendor(v) => match v.body {
            VendorBody::MessagesSupported { messages } => {
                prop_assert_eq!(messages.iter().count(), messages.len())
            }
            VendorBody::FeaturesSupported { features } => {
                prop_assert_eq!(features.iter().count(), features.len())
            }
            _ => {}
        },
    }
    Ok(())
}

/// Decodes one frame; an error must have a code, a success must serialise and re-encode to
/// bytes that decode to an equal value (and re-encode identically again).
fn exercise_decode(f: &Frame<'_>) -> Result<(), TestCaseError> {
    let d = match Descriptor::decode(f) {
        Err(e) => {
            prop_assert!(!e.code().is_empty());
            prop_assert!(!e.to_string().is_empty());
            return Ok(());
        }
        Ok(d) => d,
    };
    let json = serde_json::to_string(&d);
    prop_assert!(json.is_ok(), "serialisation failed: {:?}", json);
    poke(&d)?;
    let bytes = d.to_vec();
    // The cap is the framer's business; a tolerated Bye without NUL grows by one byte.
    let header = Header {
        muid: d.muid,
        kind: f.header.kind,
        ttl: d.ttl,
        hops: d.hops,
        len: (bytes.len() - HEADER_LEN) as u32,
    };
    prop_assert_eq!(&header.to_bytes()[..], &bytes[..HEADER_LEN]);
    let again = Descriptor::decode(&Frame {
        header,
        payload: &bytes[HEADER_LEN..],
    })
    .map_err(|e| TestCaseError::fail(format!("re-encoded {d:?} does not decode: {e}")))?;
    prop_assert_eq!(again, d);
    prop_assert_eq!(again.to_vec(), bytes);
    Ok(())
}

fn exercise_frames(buf: &[u8]) -> Result<(), TestCaseError> {
    match frame(buf) {
        Err(e) => prop_assert!(!e.code().is_empty()),
        Ok(Framed::Incomplete { needed }) => prop_assert!(needed > 0),
        Ok(Framed::Frame(f)) => {
            prop_assert!(f.len() <= buf.len());
            exercise_decode(&f)?;
        }
    }
    let mut frames = Frames::new(buf);
    let mut total = 0;
    for f in frames.by_ref() {
        total += f.len();
        exercise_decode(&f)?;
    }
    prop_assert_eq!(frames.consumed(), total);
    prop_assert_eq!(frames.remaining(), &buf[total..]);
    if let Some(e) = frames.error() {
        prop_assert!(!e.code().is_empty());
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Set(Index, u8),
    Truncate(Index),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    /// Overwrites the header's length field.
    Len(u32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        (any::<Index>(), interesting_byte()).prop_map(|(i, x)| Mutation::Set(i, x)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), vec(interesting_byte(), 1..8)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<Index>(), 1usize..8).prop_map(|(i, n)| Mutation::Remove(i, n)),
        prop_oneof![any::<u32>(), 0u32..2000].prop_map(Mutation::Len),
    ]
}

fn mutate(b: &mut Vec<u8>, ms: &[Mutation]) {
    for m in ms {
        match m {
            Mutation::Flip(i, x) if !b.is_empty() => {
                let at = i.index(b.len());
                b[at] ^= x;
            }
            Mutation::Set(i, x) if !b.is_empty() => {
                let at = i.index(b.len());
                b[at] = *x;
            }
            Mutation::Truncate(i) => b.truncate(i.index(b.len() + 1)),
            Mutation::Insert(i, x) => {
                let at = i.index(b.len() + 1);
                b.splice(at..at, x.iter().copied());
            }
            Mutation::Remove(i, n) if !b.is_empty() => {
                let at = i.index(b.len());
                b.drain(at..(at + n).min(b.len()));
            }
            Mutation::Len(l) if b.len() >= HEADER_LEN => {
                b[19..23].copy_from_slice(&l.to_le_bytes())
            }
            _ => {}
        }
    }
}

/// Bytes that steer parsers into their interesting branches: NUL, separator, GGEP magic and
/// flags, length bytes.
fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => any::<u8>(),
        1 => Just(0u8),
        1 => Just(0x1Cu8),
        1 => Just(0xC3u8),
        1 => 0x40u8..0x80,
        1 => 0x80u8..0xC0,
    ]
}

/// Random bytes of which about a third are NUL, 0x1C or 0xC3 (cheaper to draw than a
/// per-byte union).
fn noisy_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max).prop_map(|v| {
        v.into_iter()
            .map(|b| match b {
                0..=31 => 0,
                32..=63 => 0x1C,
                64..=95 => 0xC3,
                other => other,
            })
            .collect()
    })
}

fn mutated(base: BoxedStrategy<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (base, vec(mutation(), 1..4)).prop_map(|(mut b, ms)| {
        mutate(&mut b, &ms);
        b
    })
}

fn exercise_ggep(b: &[u8]) -> Result<(), TestCaseError> {
    match Ggep::parse_block(b) {
        Err(e) => prop_assert!(!e.code().is_empty()),
        Ok((g, rest)) => {
            prop_assert_eq!(g.as_bytes().len() + rest.len(), b.len());
            poke_ggep(&g)?;
        }
    }
    match Ggep::parse_all(b) {
        Err(e) => prop_assert!(!e.code().is_empty()),
        Ok(g) => {
            prop_assert_eq!(g.as_bytes(), b);
            poke_ggep(&g)?;
        }
    }
    Ok(())
}

fn exercise_ext(b: &[u8]) -> Result<(), TestCaseError> {
    match Extensions::parse(b) {
        Err(e) => prop_assert!(!e.code().is_empty()),
        Ok(e) => poke_ext(&e)?,
    }
    Ok(())
}

fn exercise_urn(b: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(u) = Sha1Urn::parse(b) {
        prop_assert_eq!(Sha1Urn::parse(u.to_string().as_bytes()), Ok(u));
        prop_assert!(serde_json::to_string(&u).is_ok());
    }
    let _ = Sha1Urn::from_base32(b);
    Ok(())
}

fn exercise_qrp(msgs: &[Vec<u8>]) -> Result<(), TestCaseError> {
    let mut r = QrpReceiver::new();
    for m in msgs {
        match QrpMessage::decode(m) {
            Err(e) => prop_assert!(!e.code().is_empty()),
            Ok(msg) => {
                let mut again = Vec::new();
                msg.encode(&mut again);
                prop_assert_eq!(&again, m);
                prop_assert!(serde_json::to_string(&msg).is_ok());
                match msg {
                    QrpMessage::Reset(x) => r.reset(&x),
                    QrpMessage::Patch(p) => {
                        if let Err(e) = r.patch(&p) {
                            prop_assert!(!e.to_string().is_empty());
                        }
                    }
                }
            }
        }
        if let Some(t) = r.table() {
            prop_assert!(t.bits() <= servent::wire::qrp::MAX_KEPT_BITS);
            prop_assert!(serde_json::to_string(t).is_ok());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// QRP tables
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct TableSpec {
    bits: u8,
    sparse: Vec<u32>,
    seed: u64,
    /// 0: no dense fill; 1..=3: about 1/64, 1/4, 1/2 of the slots; 4: all.
    density: u8,
}

fn table_spec(bits: impl Strategy<Value = u8>) -> impl Strategy<Value = TableSpec> {
    (bits, vec(any::<u32>(), 0..100), any::<u64>(), 0u8..=4).prop_map(
        |(bits, sparse, seed, density)| TableSpec {
            bits,
            sparse,
            seed,
            density,
        },
    )
}

fn table(s: &TableSpec) -> QrpTable {
    let mut t = QrpTable::new(s.bits);
    let slots = t.slots();
    for &i in &s.sparse {
        t.set(i as usize % slots);
    }
    let mut x = s.seed | 1;
    for slot in 0..slots {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let on = match s.density {
            0 => false,
            1 => x.is_multiple_of(64),
            2 => x.is_multiple_of(4),
            3 => x.is_multiple_of(2),
            _ => true,
        };
        if on {
            t.set(slot);
        }
    }
    t
}

/// Sends each payload as a whole descriptor through the round trip, then into the receiver.
/// Only the last PATCH may complete the sequence.
fn feed(r: &mut QrpReceiver, h: &Head, payloads: &[Vec<u8>]) -> Result<(), TestCaseError> {
    for (i, p) in payloads.iter().enumerate() {
        let msg = QrpMessage::decode(p)
            .map_err(|e| TestCaseError::fail(format!("encode_table payload {i}: {e}")))?;
        let d = desc(h, Payload::Qrp(msg));
        let bytes = d.to_vec();
        let back = round_trip(&d, &bytes)?;
        match back.payload {
            Payload::Qrp(QrpMessage::Reset(x)) => r.reset(&x),
            Payload::Qrp(QrpMessage::Patch(x)) => {
                let done = r
                    .patch(&x)
                    .map_err(|e| TestCaseError::fail(format!("patch {i} refused: {e}")))?;
                prop_assert_eq!(done, i + 1 == payloads.len());
            }
            other => return Err(TestCaseError::fail(format!("decoded as {other:?}"))),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Round-trip properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(ROUND_TRIP_CASES))]

    #[test]
    fn ping_round_trips(s in ping()) {
        with_ping(&s, |d| {
            let bytes = d.to_vec();
            let back = round_trip(d, &bytes)?;
            let Payload::Ping(p) = back.payload else { unreachable!() };
            check_tail_ggep(p.ggep, &s.ggep)
        })?;
    }

    #[test]
    fn pong_round_trips(s in pong()) {
        with_pong(&s, |d| {
            let bytes = d.to_vec();
            let back = round_trip(d, &bytes)?;
            let Payload::Pong(p) = back.payload else { unreachable!() };
            prop_assert_eq!((p.addr, p.files, p.kbytes), (s.addr, s.files, s.kbytes));
            check_tail_ggep(p.ggep, &s.ggep)
        })?;
    }

    #[test]
    fn push_round_trips(s in push()) {
        with_push(&s, |d| {
            let bytes = d.to_vec();
            let back = round_trip(d, &bytes)?;
            let Payload::Push(p) = back.payload else { unreachable!() };
            prop_assert_eq!(p.target, ServentId(s.target));
            prop_assert_eq!(p.index, FileIndex(s.index));
            prop_assert_eq!(p.addr, s.addr);
            check_tail_ggep(p.ggep, &s.ggep)
        })?;
    }

    #[test]
    fn bye_round_trips(s in bye()) {
        with_bye(&s, |d| {
            let bytes = d.to_vec();
            let back = round_trip(d, &bytes)?;
            let Payload::Bye(b) = back.payload else { unreachable!() };
            prop_assert_eq!(b.code, s.code);
            prop_assert_eq!(b.reason.0, &s.reason[..]);
            Ok(())
        })?;
    }

    #[test]
    fn query_round_trips(s in query()) {
        with_query(&s, |d| {
            let bytes = d.to_vec();
            let back = round_trip(d, &bytes)?;
            let Payload::Query(q) = back.payload else { unreachable!() };
            prop_assert_eq!(q.flags, QueryFlags(s.flags));
            prop_assert_eq!(q.criteria.0, &s.criteria[..]);
            check_area(&q.extensions, &s.items)
        })?;
    }

    #[test]
    fn query_hit_round_trips(s in hit()) {
        with_hit(&s, |d| {
            let bytes = d.to_vec();
            let back = round_trip(d, &bytes)?;
            let Payload::QueryHit(h) = back.payload else { unreachable!() };
            prop_assert_eq!(h.addr, s.addr);
            prop_assert_eq!(h.speed, s.speed);
            prop_assert_eq!(h.servent, ServentId(s.servent));
            prop_assert_eq!(h.results.len(), s.results.len());
            let got: Vec<_> = h.results.iter().collect();
            prop_assert_eq!(got.len(), s.results.len());
            for (r, w) in got.iter().zip(&s.results) {
                prop_assert_eq!(r.index, FileIndex(w.index));
                prop_assert_eq!(r.size, w.size);
                let name: Vec<u8> = w.name.bytes().filter(|&b| b != 0).collect();
                prop_assert_eq!(r.name.0, &name[..]);
                check_area(&r.extensions, &w.items)?;
            }
            match &s.trailer {
                TrailerSpec::None => prop_assert_eq!(h.trailer, Trailer::None),
                TrailerSpec::Unknown(b) => prop_assert_eq!(h.trailer, Trailer::Unknown(b)),
                TrailerSpec::Qhd { vendor, flags, ggep, .. } => {
                    let q = h.trailer.qhd().expect("a QHD");
                    prop_assert_eq!(q.vendor, VendorCode(*vendor));
                    prop_assert_eq!(h.flags(), Some(*flags));
                    match q.ggep() {
                        Some(g) => {
                            prop_assert!(flags.ggep);
                            check_ggep(&g, ggep)?;
                        }
                        None => prop_assert!(!flags.ggep),
                    }
                }
            }
            Ok(())
        })?;
    }

    #[test]
    fn vendor_messages_round_trip(s in vendor()) {
        with_vendor(&s, |d| {
            let bytes = d.to_vec();
            let back = round_trip(d, &bytes)?;
            let Payload::Vendor(v) = back.payload else { unreachable!() };
            prop_assert_eq!(v.kind, if s.standard { VendorKind::Standard } else { VendorKind::Vendor });
            match (&s.spec, v.body) {
                (VendorSpec::Messages(m), VendorBody::MessagesSupported { messages }) => {
                    let got: Vec<_> = messages.iter().map(|e| (e.vendor.0, e.selector, e.version)).collect();
                    prop_assert_eq!(&got, m);
                }
                (VendorSpec::Features(f), VendorBody::FeaturesSupported { features }) => {
                    let got: Vec<_> = features.iter().map(|e| (e.name.0, e.version)).collect();
                    prop_assert_eq!(&got, f);
                }
                (VendorSpec::Other(_, _, _, data), VendorBody::Other { data: got }) => {
                    prop_assert_eq!(got, &data[..]);
                }
                (VendorSpec::Messages(_) | VendorSpec::Features(_) | VendorSpec::Other(..), b) => {
                    return Err(TestCaseError::fail(format!("decoded as {b:?}")));
                }
                _ => {}
            }
            Ok(())
        })?;
    }

    #[test]
    fn qrp_messages_round_trip(h in head(), s in qrp_msg()) {
        with_qrp(&h, &s, |d| {
            let bytes = d.to_vec();
            round_trip(d, &bytes).map(drop)
        })?;
    }

    #[test]
    fn ggep_blocks_round_trip(
        vals in prop_oneof![
            9 => ggep_block(6, 300, None),
            1 => ggep_block(2, 5000, None),
        ],
        nul_delimited in any::<bool>(),
    ) {
        let vals: Vec<GgepVal> = vals
            .into_iter()
            .map(|mut v| {
                v.enc.cobs_if_nul |= nul_delimited;
                v
            })
            .collect();
        let block = build_ggep(&vals);
        if nul_delimited {
            prop_assert!(!block.contains(&0), "NUL in a block built for a NUL-delimited area");
        }
        let (g, rest) = Ggep::parse_block(&block)
            .map_err(|e| TestCaseError::fail(format!("built block refused: {e}")))?;
        prop_assert!(rest.is_empty());
        prop_assert_eq!(g.as_bytes(), &block[..]);
        check_ggep(&g, &vals)?;
        // Two blocks back to back, as Ping/Pong/Push tails may carry.
        let mut two = block.clone();
        two.extend_from_slice(&block);
        let g2 = Ggep::parse_all(&two)
            .map_err(|e| TestCaseError::fail(format!("two blocks refused: {e}")))?;
        let doubled: Vec<GgepVal> = vals.iter().chain(&vals).cloned().collect();
        check_ggep(&g2, &doubled)?;
        prop_assert!(serde_json::to_string(&g2).is_ok());
    }

    #[test]
    fn extension_areas_round_trip(items in vec(item(3, 120, Some(true)), 0..6)) {
        let area = build_area(&items);
        prop_assert!(!area.contains(&0));
        let e = Extensions::parse(&area)
            .map_err(|err| TestCaseError::fail(format!("built area refused: {err}")))?;
        prop_assert_eq!(e.as_bytes(), &area[..]);
        check_area(&e, &items)?;
        let want_sha1 = items.iter().find_map(|i| match i {
            ItemSpec::Urn(d) => Some(Sha1Urn(*d)),
            _ => None,
        });
        if let (Some(w), Some(got)) = (want_sha1, e.sha1()) {
            // Text items before the URN may name another SHA-1; the URN itself must be found
            // when nothing precedes it.
            if matches!(items.first(), Some(ItemSpec::Urn(_))) {
                prop_assert_eq!(got, w);
            }
        } else if want_sha1.is_some() {
            return Err(TestCaseError::fail("SHA-1 item not found"));
        }
    }

    #[test]
    fn headers_round_trip(muid in any::<[u8; 16]>(), kind in any::<u8>(), ttl in any::<u8>(), hops in any::<u8>(), len in prop_oneof![any::<u32>(), 0u32..70000]) {
        let kind = PayloadType::from_byte(kind);
        prop_assert_eq!(PayloadType::from_byte(kind.to_byte()), kind);
        let h = Header { muid: Guid(muid), kind, ttl: Ttl(ttl), hops: Hops(hops), len };
        let b = h.to_bytes();
        match Header::parse(&b) {
            Ok(back) => {
                prop_assert!(len <= kind.cap());
                prop_assert_eq!(back, h);
                prop_assert_eq!(back.to_bytes(), b);
            }
            Err(e) => {
                prop_assert!(len > kind.cap());
                prop_assert_eq!(e.code(), "payload-too-large");
            }
        }
    }
}

proptest! {
    #![proptest_config(config(FUZZ_CASES))]

    #[test]
    fn sha1_urn_text_round_trips(d in any::<[u8; 20]>(), tail in "[A-Z2-7]{39}") {
        let u = Sha1Urn(d);
        let s = u.to_string();
        prop_assert!(s.starts_with("urn:sha1:") && s.len() == 41);
        prop_assert_eq!(&s[9..], u.base32());
        prop_assert_eq!(s.parse::<Sha1Urn>(), Ok(u));
        prop_assert_eq!(s.to_lowercase().parse::<Sha1Urn>(), Ok(u));
        prop_assert_eq!(s.to_uppercase().parse::<Sha1Urn>(), Ok(u));
        prop_assert_eq!(Sha1Urn::from_base32(u.base32().as_bytes()), Ok(u));
        prop_assert_eq!(format!("urn:bitprint:{}.{tail}", u.base32()).parse::<Sha1Urn>(), Ok(u));
        prop_assert_eq!(serde_json::to_string(&u).unwrap(), format!("\"{s}\""));
    }

    #[test]
    fn guid_hex_round_trips(g in any::<[u8; 16]>(), junk in "(?s).{0,40}") {
        let id = Guid(g);
        let hex = id.to_hex();
        prop_assert_eq!(hex.len(), 32);
        prop_assert_eq!(&hex, &id.to_string());
        prop_assert_eq!(Guid::from_hex(&hex), Some(id));
        prop_assert_eq!(Guid::from_hex(&hex.to_uppercase()), Some(id));
        prop_assert_eq!(ServentId::from_hex(&hex), Some(ServentId(g)));
        prop_assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{hex}\""));
        if let Some(j) = Guid::from_hex(&junk) {
            prop_assert_eq!(j.to_hex(), junk.to_lowercase());
        }
    }

    // -----------------------------------------------------------------------------------------
    // No panic on arbitrary bytes
    // -----------------------------------------------------------------------------------------

    #[test]
    fn arbitrary_bytes_frame_and_decode_without_panic(buf in prop_oneof![vec(any::<u8>(), 0..200), noisy_bytes(2000)]) {
        exercise_frames(&buf)?;
    }

    #[test]
    fn every_payload_type_decodes_arbitrary_payloads_without_panic(
        h in head(),
        kind in prop_oneof![
            8 => prop::sample::select(vec![0x00u8, 0x01, 0x02, 0x30, 0x31, 0x32, 0x40, 0x80, 0x81]),
            1 => any::<u8>(),
        ],
        payload in prop_oneof![vec(any::<u8>(), 0..300), noisy_bytes(1500)],
    ) {
        let header = Header {
            muid: Guid(h.muid),
            kind: PayloadType::from_byte(kind),
            ttl: Ttl(h.ttl),
            hops: Hops(h.hops),
            len: payload.len() as u32,
        };
        let mut buf = header.to_bytes().to_vec();
        buf.extend_from_slice(&payload);
        exercise_frames(&buf)?;
        exercise_decode(&Frame { header, payload: &payload })?;
    }

    #[test]
    fn ggep_parsers_take_arbitrary_bytes(b in prop_oneof![
        noisy_bytes(400),
        noisy_bytes(400).prop_map(|mut b| { b.insert(0, 0xC3); b }),
    ]) {
        exercise_ggep(&b)?;
        exercise_ext(&b)?;
        exercise_urn(&b)?;
    }

    #[test]
    fn sha1_urn_parser_takes_arbitrary_text(s in prop_oneof![
        "(?s).{0,80}",
        "(?i)urn:(sha1|bitprint):[a-z2-7]{30,34}(\\.[A-Z2-7]{37,41})?",
    ]) {
        exercise_urn(s.as_bytes())?;
        let _ = s.parse::<Sha1Urn>();
    }

    #[test]
    fn qrp_receiver_takes_arbitrary_messages(msgs in vec(prop_oneof![
        vec(any::<u8>(), 0..40),
        noisy_bytes(600).prop_map(|mut b| { b.insert(0, 1); b }),
        qrp_msg().prop_map(|s| { let mut v = Vec::new(); qrp_payload(&s).encode(&mut v); v }),
    ], 0..8)) {
        exercise_qrp(&msgs)?;
    }
}

proptest! {
    #![proptest_config(config(ROUND_TRIP_CASES))]

    #[test]
    fn mutated_descriptors_do_not_panic(
        bufs in vec(mutated(any_descriptor_bytes()), 1..3),
        valid in any_descriptor_bytes(),
    ) {
        for b in &bufs {
            exercise_frames(b)?;
        }
        // A valid descriptor, then a damaged one, then the valid one again, as on a stream.
        let mut stream = valid.clone();
        stream.extend_from_slice(&bufs[0]);
        stream.extend_from_slice(&valid);
        exercise_frames(&stream)?;
        if let Ok(Framed::Frame(_)) = frame(&valid) {
            let mut frames = Frames::new(&stream);
            prop_assert_eq!(frames.next().map(|f| f.len()), Some(valid.len()));
        }
    }

    #[test]
    fn mutated_ggep_and_extension_areas_do_not_panic(
        b in mutated(prop_oneof![
            ggep_block(4, 100, None).prop_map(|v| build_ggep(&v)),
            vec(item(3, 100, None), 1..5).prop_map(|i| build_area(&i)),
        ].boxed()),
    ) {
        exercise_ggep(&b)?;
        exercise_ext(&b)?;
    }

    #[test]
    fn mutated_qrp_sequences_do_not_panic(
        t in table_spec(0u8..=12),
        infinity in 1u8..=255,
        bits in prop::sample::select(vec![1u8, 2, 4, 8]),
        compress in any::<bool>(),
        which in any::<Index>(),
        ms in vec(mutation(), 1..4),
    ) {
        let t = table(&t);
        let mut msgs = encode_table(None, &t, infinity, bits, compress);
        let i = which.index(msgs.len());
        mutate(&mut msgs[i], &ms);
        exercise_qrp(&msgs)?;
    }
}

proptest! {
    #![proptest_config(config(TABLE_CASES))]

    #[test]
    fn qrp_tables_survive_encode_and_receive(
        t in table_spec(3u8..=16),
        prev in table_spec(3u8..=16),
        prev_same_size in any::<bool>(),
        infinity in 2u8..=255,
        bits in prop::sample::select(vec![4u8, 8]),
        compress in any::<bool>(),
        h in head(),
    ) {
        let t = table(&t);
        let prev = table(&TableSpec { bits: if prev_same_size { t.bits() } else { prev.bits }, ..prev });
        let mut r = QrpReceiver::new();
        feed(&mut r, &h, &encode_table(None, &t, infinity, bits, compress))?;
        prop_assert_eq!(r.table(), Some(&t));

        let mut r = QrpReceiver::new();
        feed(&mut r, &h, &encode_table(None, &prev, infinity, bits, compress))?;
        prop_assert_eq!(r.table(), Some(&prev));
        feed(&mut r, &h, &encode_table(Some(&prev), &t, infinity, bits, compress))?;
        prop_assert_eq!(r.table(), Some(&t));
    }
}
