//! Runs every vector of `conformance/` (format: conformance/README.md) against the wire layer.
//!
//! Descriptor vectors must decode to a JSON view that contains their `expect`, and encode back
//! to the very same bytes. Hostile vectors must fail with their error code. GGEP, QRP, hash and
//! URN vectors are checked against the matching parts of `servent::wire`. Each failure names
//! its file; all failures of a test are reported together.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use servent::wire::ggep::Encoding;
use servent::wire::qrp::{QrpReceiver, QrpTable, encode_table, qrp_hash};
use servent::wire::{self, Descriptor, Framed, Ggep, GgepBuilder, Payload, QrpMessage, Sha1Urn};

/// Fewest vectors each directory must hold, so that deleting vectors cannot make a run pass.
const MIN_FILES: &[(&str, usize)] = &[
    ("wire/ping", 5),
    ("wire/pong", 4),
    ("wire/query", 7),
    ("wire/query-hit", 6),
    ("wire/push", 4),
    ("wire/bye", 3),
    ("wire/qrp", 8),
    ("wire/vendor", 12),
    ("ggep", 19),
    ("hostile", 50),
    ("urn", 3),
    // Run by tests/swarm_conformance.rs.
    ("swarm", 2),
    // Run by tests/thex_conformance.rs.
    ("thex", 4),
    // Run by tests/magnet_conformance.rs.
    ("magnet", 1),
    // Run by tests/parq_conformance.rs.
    ("parq", 1),
    // Run by tests/handshake_transcripts.rs.
    ("handshake", 10),
    // Run by tests/sim_scenarios.rs.
    ("scenarios", 5),
    // conformance/qrp-hash.json
    ("", 1),
];
/// Fewest cases in the files that hold lists of cases.
const MIN_HASH_CASES: usize = 45;
const MIN_URN_CASES: usize = 16;

/// Error codes the hostile vectors must cover between them.
const REQUIRED_CODES: &[&str] = &[
    "payload-too-large",
    "unknown-type",
    "truncated",
    "missing-nul",
    "tail-too-large",
    "tail-not-ggep",
    "hit-count-overrun",
    "hit-trailer-truncated",
    "qrp-variant",
    "qrp-table-length",
    "qrp-infinity",
    "qrp-entry-bits",
    "qrp-sequence",
    "vendor-bad-data",
    "ggep-no-magic",
    "ggep-unterminated",
    "ggep-empty-id",
    "ggep-reserved-flag",
    "ggep-bad-id",
    "ggep-bad-length-byte",
    "ggep-length-too-long",
    "ggep-length-past-end",
    "ggep-too-many-extensions",
    "ggep-cobs",
    "ggep-inflate",
    "ggep-inflated-too-large",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance")
}

/// Every file under `dir`, recursively, sorted.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
    out.sort();
}

/// A vector file: its path relative to `conformance/` and its JSON.
struct Vector {
    name: String,
    json: Value,
}

/// All JSON vectors under `conformance/<sub>` (`sub` may name a single file).
fn vectors(sub: &str) -> Vec<Vector> {
    let base = root();
    let start = base.join(sub);
    let mut files = Vec::new();
    if start.is_file() {
        files.push(start);
    } else {
        walk(&start, &mut files);
    }
    files
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let name = p
                .strip_prefix(&base)
                .expect("under conformance/")
                .to_string_lossy()
                .replace('\\', "/");
            let text = fs::read_to_string(&p).unwrap_or_else(|e| panic!("conformance/{name}: {e}"));
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("conformance/{name}: not JSON: {e}"));
            Vector { name, json }
        })
        .collect()
}

/// Runs `check` on every vector and panics with all failures, each naming its file.
fn run_all(vs: &[Vector], check: impl Fn(&Value) -> Result<(), String>) {
    let failures: Vec<String> = vs
        .iter()
        .filter_map(|v| {
            check(&v.json)
                .err()
                .map(|e| format!("conformance/{}: {e}", v.name))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} vectors failed:\n{}",
        failures.len(),
        vs.len(),
        failures.join("\n")
    );
}

fn field<'a>(v: &'a Value, key: &str) -> Result<&'a Value, String> {
    v.get(key).ok_or_else(|| format!("no \"{key}\" field"))
}

fn string<'a>(v: &'a Value, key: &str) -> Result<&'a str, String> {
    field(v, key)?
        .as_str()
        .ok_or_else(|| format!("\"{key}\" is not a string"))
}

/// Hex digits with any whitespace between them; lowercase only, as the format asks.
fn hex(s: &str) -> Result<Vec<u8>, String> {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    data_encoding::HEXLOWER
        .decode(compact.as_bytes())
        .map_err(|e| format!("bad hex: {e}"))
}

fn hex_field(v: &Value, key: &str) -> Result<Vec<u8>, String> {
    hex(string(v, key)?).map_err(|e| format!("\"{key}\": {e}"))
}

fn flag(v: &Value, key: &str, default: bool) -> Result<bool, String> {
    match v.get(key) {
        None => Ok(default),
        Some(b) => b
            .as_bool()
            .ok_or_else(|| format!("\"{key}\" is not a boolean")),
    }
}

/// `expect` is contained in `actual`: objects key by key (extra keys allowed), arrays element
/// by element with equal length, anything else equal.
fn subset(expect: &Value, actual: &Value, at: &str) -> Result<(), String> {
    match (expect, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let here = format!("{at}.{k}");
                let av = a.get(k).ok_or_else(|| {
                    format!(
                        "{here}: missing from the decoded value (its keys: {:?})",
                        a.keys().collect::<Vec<_>>()
                    )
                })?;
                subset(ev, av, &here)?;
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return Err(format!(
                    "{at}: expected {} elements, decoded {}: {actual}",
                    e.len(),
                    a.len()
                ));
            }
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                subset(ev, av, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        (Value::Object(_) | Value::Array(_), _) => {
            Err(format!("{at}: expected {expect}, decoded {actual}"))
        }
        _ if expect == actual => Ok(()),
        _ => Err(format!("{at}: expected {expect}, decoded {actual}")),
    }
}

fn show(b: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(b)
}

/// Frames and decodes a whole descriptor that must be the entire input.
fn frame_exact(bytes: &[u8]) -> Result<wire::Frame<'_>, String> {
    match wire::frame(bytes) {
        Ok(Framed::Frame(f)) if f.len() == bytes.len() => Ok(f),
        Ok(Framed::Frame(f)) => Err(format!(
            "the descriptor is {} bytes but the vector holds {}",
            f.len(),
            bytes.len()
        )),
        Ok(Framed::Incomplete { needed }) => Err(format!(
            "the vector ends {needed} bytes short of its descriptor"
        )),
        Err(e) => Err(format!("framing failed: {e} [{}]", e.code())),
    }
}

/// `wire/<dir>` ⇒ the `payload.type` its descriptors must decode to.
fn payload_type_of(dir: &str) -> Option<&'static str> {
    Some(match dir {
        "ping" => "ping",
        "pong" => "pong",
        "query" => "query",
        "query-hit" => "query_hit",
        "push" => "push",
        "bye" => "bye",
        "qrp" => "qrp",
        "vendor" => "vendor",
        _ => return None,
    })
}

fn check_descriptor(dir: &str, v: &Value) -> Result<(), String> {
    string(v, "description")?;
    string(v, "source")?;
    let bytes = hex_field(v, "hex")?;
    let frame = frame_exact(&bytes)?;
    let d = Descriptor::decode(&frame).map_err(|e| format!("decode failed: {e} [{}]", e.code()))?;
    let json = serde_json::to_value(d).map_err(|e| format!("cannot show as JSON: {e}"))?;
    let want_type = payload_type_of(dir).ok_or_else(|| format!("unknown directory wire/{dir}"))?;
    subset(
        &Value::from(want_type),
        &json["payload"]["type"],
        "$.payload.type",
    )
    .map_err(|e| format!("{e} (a wire/{dir} vector must decode as {want_type})"))?;
    subset(field(v, "expect")?, &json, "$")?;
    let again = d.to_vec();
    if again != bytes {
        return Err(format!(
            "re-encoding differs:\n  vector:  {}\n  encoded: {}",
            show(&bytes),
            show(&again)
        ));
    }
    if let Some(q) = v.get("qrp") {
        let Payload::Qrp(QrpMessage::Patch(patch)) = d.payload else {
            return Err("a \"qrp\" check needs a PATCH descriptor".into());
        };
        check_qrp_table(q, &patch, &bytes[wire::HEADER_LEN..]).map_err(|e| format!("qrp: {e}"))?;
    }
    Ok(())
}

/// Applies RESET then this PATCH through [`QrpReceiver`], compares the present slots, and
/// re-creates both payloads with [`encode_table`].
fn check_qrp_table(
    q: &Value,
    patch: &wire::QrpPatch<'_>,
    patch_bytes: &[u8],
) -> Result<(), String> {
    let reset_bytes = hex_field(q, "reset")?;
    let Ok(QrpMessage::Reset(reset)) = QrpMessage::decode(&reset_bytes) else {
        return Err("\"reset\" is not a valid RESET payload".into());
    };
    let want: BTreeSet<u64> = field(q, "slots_set")?
        .as_array()
        .ok_or("\"slots_set\" is not an array")?
        .iter()
        .map(|s| s.as_u64().ok_or("\"slots_set\" holds a non-integer"))
        .collect::<Result<_, _>>()?;
    let bits = reset.table_len.trailing_zeros() as u8;

    let mut rx = QrpReceiver::new();
    rx.reset(&reset);
    match rx.patch(patch) {
        Ok(true) => {}
        Ok(false) => return Err("the PATCH did not complete its sequence".into()),
        Err(e) => return Err(format!("the receiver refused the PATCH: {e}")),
    }
    let table = rx.table().ok_or("no table after the sequence")?;
    let got: BTreeSet<u64> = (0..table.slots())
        .filter(|&s| table.is_set(s))
        .map(|s| s as u64)
        .collect();
    if got != want {
        return Err(format!("slots set {got:?}, expected {want:?}"));
    }

    if let Some(words) = q.get("words") {
        let hashed: BTreeSet<u64> = words
            .as_array()
            .ok_or("\"words\" is not an array")?
            .iter()
            .map(|w| {
                w.as_str()
                    .map(|w| u64::from(qrp_hash(w, bits)))
                    .ok_or("\"words\" holds a non-string")
            })
            .collect::<Result<_, _>>()?;
        if hashed != want {
            return Err(format!("the words hash to {hashed:?}, not {want:?}"));
        }
    }

    if flag(q, "reencode", true)? {
        let mut t = QrpTable::new(bits);
        for &s in &want {
            t.set(s as usize);
        }
        let sent = encode_table(
            None,
            &t,
            reset.infinity,
            patch.entry_bits,
            patch.compressor == 1,
        );
        let expected = vec![reset_bytes.clone(), patch_bytes.to_vec()];
        if sent != expected {
            return Err(format!(
                "encode_table gives {:?}, expected {:?}",
                sent.iter().map(|p| show(p)).collect::<Vec<_>>(),
                expected.iter().map(|p| show(p)).collect::<Vec<_>>()
            ));
        }
    }
    Ok(())
}

/// The error code of a hostile vector: from framing, or else from decoding.
fn hostile_code(bytes: &[u8]) -> Result<&'static str, String> {
    let frame = match wire::frame(bytes) {
        Err(e) => return Ok(e.code()),
        Ok(Framed::Incomplete { needed }) => {
            return Err(format!(
                "framing wants {needed} more bytes instead of failing"
            ));
        }
        Ok(Framed::Frame(f)) if f.len() != bytes.len() => {
            return Err(format!(
                "the descriptor is {} bytes but the vector holds {}",
                f.len(),
                bytes.len()
            ));
        }
        Ok(Framed::Frame(f)) => f,
    };
    match Descriptor::decode(&frame) {
        Err(e) => Ok(e.code()),
        Ok(d) => Err(format!(
            "decoded without error: {}",
            serde_json::to_string(&d).unwrap_or_default()
        )),
    }
}

fn check_hostile(v: &Value) -> Result<(), String> {
    string(v, "description")?;
    let want = string(v, "error")?;
    let got = hostile_code(&hex_field(v, "hex")?)?;
    if got != want {
        return Err(format!("failed with {got}, expected {want}"));
    }
    Ok(())
}

fn check_ggep(v: &Value) -> Result<(), String> {
    string(v, "description")?;
    let bytes = hex_field(v, "hex")?;
    let (g, rest) =
        Ggep::parse_block(&bytes).map_err(|e| format!("parse failed: {e} [{}]", e.code()))?;
    if !rest.is_empty() {
        return Err(format!("{} bytes left after the block", rest.len()));
    }
    let json = serde_json::to_value(g).map_err(|e| format!("cannot show as JSON: {e}"))?;
    subset(field(v, "expect")?, &json, "$")?;
    if flag(v, "reencode", true)? {
        let mut b = GgepBuilder::new();
        for e in g.iter() {
            let value = e.value().map_err(|err| format!("{}: {err}", e.id))?;
            let enc = Encoding {
                deflate: e.deflate,
                cobs_if_nul: e.cobs,
            };
            b.push(e.id, &value, enc)
                .map_err(|err| format!("GgepBuilder refused {}: {err}", e.id))?;
        }
        let again = b.finish();
        if again != bytes {
            return Err(format!(
                "GgepBuilder gives\n  {}\nnot\n  {}",
                show(&again),
                show(&bytes)
            ));
        }
    }
    Ok(())
}

fn cases(v: &Value) -> Result<&Vec<Value>, String> {
    field(v, "cases")?
        .as_array()
        .ok_or_else(|| "\"cases\" is not an array".into())
}

fn check_hash(v: &Value) -> Result<(), String> {
    let mut errors = Vec::new();
    for c in cases(v)? {
        let word = string(c, "word")?;
        let bits = field(c, "bits")?
            .as_u64()
            .ok_or("\"bits\" is not an integer")? as u8;
        let want = field(c, "hash")?
            .as_u64()
            .ok_or("\"hash\" is not an integer")?;
        let got = u64::from(qrp_hash(word, bits));
        if got != want {
            errors.push(format!(
                "{word:?} at {bits} bits hashes to {got}, expected {want}"
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

fn check_urn_case(c: &Value) -> Result<(), String> {
    if let Some(b32) = c.get("base32") {
        let b32 = b32.as_str().ok_or("\"base32\" is not a string")?;
        let bytes = hex_field(c, "hex")?;
        let got = data_encoding::BASE32_NOPAD.encode(&bytes);
        if got != b32 {
            return Err(format!("{} encodes as {got}, expected {b32}", show(&bytes)));
        }
        let back = data_encoding::BASE32_NOPAD
            .decode(b32.as_bytes())
            .map_err(|e| format!("{b32} does not decode: {e}"))?;
        if back != bytes {
            return Err(format!("{b32} decodes to {}", show(&back)));
        }
        Ok(())
    } else if c.get("content").is_some() {
        let content = hex_field(c, "content")?;
        let want = string(c, "urn")?;
        let got = Sha1Urn::digest(&content).to_string();
        if got != want {
            return Err(format!(
                "content {} gives {got}, expected {want}",
                show(&content)
            ));
        }
        let parsed: Sha1Urn = got
            .parse()
            .map_err(|_| format!("{got} does not parse back"))?;
        if parsed != Sha1Urn::digest(&content) {
            return Err(format!("{got} parses to another SHA-1"));
        }
        Ok(())
    } else {
        let text = string(c, "text")?;
        let got = text.parse::<Sha1Urn>().ok().map(|u| u.to_string());
        let want = field(c, "urn")?.as_str().map(str::to_owned);
        if got != want {
            return Err(format!("{text:?} parses to {got:?}, expected {want:?}"));
        }
        Ok(())
    }
}

fn check_urn(v: &Value) -> Result<(), String> {
    string(v, "description")?;
    let errors: Vec<String> = cases(v)?
        .iter()
        .filter_map(|c| check_urn_case(c).err())
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

#[test]
fn wire_vectors_decode_to_their_expectation_and_encode_back_to_the_same_bytes() {
    let vs = vectors("wire");
    let failures: Vec<String> = vs
        .iter()
        .filter_map(|v| {
            let dir = v.name.split('/').nth(1).unwrap_or("");
            check_descriptor(dir, &v.json)
                .err()
                .map(|e| format!("conformance/{}: {e}", v.name))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} descriptor vectors failed:\n{}",
        failures.len(),
        vs.len(),
        failures.join("\n")
    );
}

#[test]
fn hostile_vectors_fail_with_their_error_code() {
    let vs = vectors("hostile");
    run_all(&vs, check_hostile);
    let covered: BTreeSet<&str> = vs
        .iter()
        .filter_map(|v| v.json.get("error").and_then(Value::as_str))
        .collect();
    let missing: Vec<&&str> = REQUIRED_CODES
        .iter()
        .filter(|c| !covered.contains(**c))
        .collect();
    assert!(missing.is_empty(), "no hostile vector covers {missing:?}");
}

#[test]
fn ggep_vectors_parse_and_rebuild() {
    run_all(&vectors("ggep"), check_ggep);
}

#[test]
fn qrp_hash_vectors() {
    let vs = vectors("qrp-hash.json");
    assert_eq!(vs.len(), 1, "conformance/qrp-hash.json is missing");
    run_all(&vs, check_hash);
    let n = cases(&vs[0].json).map_or(0, Vec::len);
    assert!(
        n >= MIN_HASH_CASES,
        "conformance/qrp-hash.json holds {n} cases, fewer than {MIN_HASH_CASES}"
    );
}

#[test]
fn urn_vectors() {
    let vs = vectors("urn");
    run_all(&vs, check_urn);
    let n: usize = vs.iter().map(|v| cases(&v.json).map_or(0, Vec::len)).sum();
    assert!(
        n >= MIN_URN_CASES,
        "conformance/urn holds {n} cases, fewer than {MIN_URN_CASES}"
    );
}

/// Every file is one the tests above run, and no directory has fewer vectors than its minimum.
#[test]
fn every_vector_is_run_and_no_directory_is_thin() {
    let base = root();
    let mut files = Vec::new();
    walk(&base, &mut files);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut stray = Vec::new();
    for p in &files {
        let rel = p.strip_prefix(&base).expect("under conformance/");
        let name = rel.to_string_lossy().replace('\\', "/");
        let dir = rel
            .parent()
            .map(|d| d.to_string_lossy().replace('\\', "/"))
            .unwrap_or_default();
        if name == "README.md" || name.ends_with("/README.md") {
            continue;
        }
        let known_dir = MIN_FILES.iter().any(|(d, _)| *d == dir);
        let json = p.extension().is_some_and(|e| e == "json");
        if !json || !known_dir || (dir.is_empty() && name != "qrp-hash.json") {
            stray.push(name);
            continue;
        }
        *counts.entry(dir).or_default() += 1;
    }
    assert!(
        stray.is_empty(),
        "files no test runs (wrong directory or not .json): {stray:?}"
    );
    let thin: Vec<String> = MIN_FILES
        .iter()
        .filter_map(|&(dir, min)| {
            let n = counts.get(dir).copied().unwrap_or(0);
            (n < min).then(|| format!("conformance/{dir}: {n} vectors, fewer than {min}"))
        })
        .collect();
    assert!(thin.is_empty(), "{}", thin.join("\n"));
    assert!(
        base.join("README.md").is_file(),
        "conformance/README.md is missing"
    );
}
