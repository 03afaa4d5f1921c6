//! Runs the THEX vectors of `conformance/thex/` (format: conformance/thex/README.md) against
//! `servent::thex`: Tiger tree roots and the levels kept (`tiger_tree.json`), DIME framing
//! (`dime.json`), whole THEX replies (`thex_message.json`) and the text forms of a root
//! (`urns.json`). Every failure names its case; all failures of a file are reported together.

use std::collections::BTreeSet;
use std::fs;

use serde_json::Value;
use servent::thex::dime::{self, Record, TypeT};
use servent::thex::{
    HashTree, TreeHasher, Tth, UrnError, encode_thex, good_depth, node_count_at_depth,
    parse_bitprint, parse_thex, parse_thex_uri, parse_tree_urn, slice_root, slice_size, thex_uri,
};
use sha1::{Digest, Sha1};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/conformance/thex/");

/// Fewer cases than this means a file was truncated or emptied.
const MIN_TREE_CASES: usize = 40;
const MIN_DIME_CASES: usize = 35;
const MIN_MESSAGE_CASES: usize = 38;
const MIN_URN_CASES: usize = 45;

/// Error codes the DIME and THEX vectors must cover between them.
const DIME_CODES: &[&str] = &[
    "dime-truncated",
    "dime-past-end",
    "dime-version",
    "dime-no-begin",
    "dime-no-end",
    "dime-chunked",
    "dime-too-many",
    "dime-too-large",
];
const THEX_CODES: &[&str] = &[
    "thex-no-xml",
    "thex-no-tree",
    "thex-bad-xml",
    "thex-wrong-size",
    "thex-unsupported",
    "thex-too-deep",
    "thex-bad-data",
    "thex-wrong-root",
    "thex-inconsistent",
];

fn load(file: &str) -> Vec<Value> {
    let path = format!("{DIR}{file}");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(doc["description"].is_string(), "{path}: no description");
    assert!(doc["source"].is_string(), "{path}: no source");
    doc["cases"]
        .as_array()
        .unwrap_or_else(|| panic!("{path}: no `cases` array"))
        .clone()
}

type Check = Result<(), String>;

/// Runs `check` on every case, then panics with every failure. A case marked `known_bug` holds
/// the right expectation for a defect not fixed yet: it must still fail, so that the mark is
/// removed once the code is fixed.
fn run(file: &str, min: usize, check: impl Fn(&Value) -> Check) -> Vec<Value> {
    let cases = load(file);
    assert!(
        cases.len() >= min,
        "{file}: {} cases, fewer than {min}",
        cases.len()
    );
    let failures: Vec<String> = cases
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let d = c["description"].as_str().unwrap_or("?");
            match (check(c), c["known_bug"].as_str()) {
                (Ok(()), None) | (Err(_), Some(_)) => None,
                (Err(e), None) => Some(format!("{file} #{i} ({d}): {e}")),
                (Ok(()), Some(bug)) => Some(format!(
                    "{file} #{i} ({d}): passes now; remove its `known_bug` mark ({bug})"
                )),
            }
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    cases
}

fn covers(cases: &[Value], codes: &[&str]) {
    let seen: BTreeSet<&str> = cases.iter().filter_map(|c| c["error"].as_str()).collect();
    let missing: Vec<&&str> = codes.iter().filter(|c| !seen.contains(**c)).collect();
    assert!(missing.is_empty(), "no vector covers {missing:?}");
}

fn s<'a>(c: &'a Value, k: &str) -> Result<&'a str, String> {
    c[k].as_str().ok_or_else(|| format!("no string `{k}`"))
}

fn u(c: &Value, k: &str) -> Result<u64, String> {
    c[k].as_u64().ok_or_else(|| format!("no integer `{k}`"))
}

fn hex(s: &str) -> Result<Vec<u8>, String> {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    data_encoding::HEXLOWER
        .decode(compact.as_bytes())
        .map_err(|e| format!("bad hex: {e}"))
}

fn show(b: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(b)
}

fn tth(c: &Value, k: &str) -> Result<Tth, String> {
    let t = s(c, k)?;
    Tth::from_base32(t).ok_or_else(|| format!("`{k}` {t} is not a base32 root"))
}

fn eq<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Check {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, expected {want:?}"))
    }
}

/// `hex`, then zero bytes up to `zeros_to` if given.
fn message(c: &Value) -> Result<Vec<u8>, String> {
    let mut b = hex(s(c, "hex")?)?;
    if let Some(n) = c["zeros_to"].as_u64() {
        if (n as usize) < b.len() {
            return Err("`zeros_to` is shorter than `hex`".into());
        }
        b.resize(n as usize, 0);
    }
    Ok(b)
}

// ----------------------------------------------------------------------------- tiger_tree.json

/// The bytes an `input` rule describes: `hex`, `fill` (one byte, `len` times) or `mod`
/// (byte j = j mod m).
fn input(spec: &Value) -> Result<Vec<u8>, String> {
    if let Some(h) = spec["hex"].as_str() {
        return hex(h);
    }
    let len = u(spec, "len")? as usize;
    if let Some(f) = spec["fill"].as_str() {
        let b = hex(f)?;
        return match b.as_slice() {
            [x] => Ok(vec![*x; len]),
            _ => Err("`fill` must be one byte".into()),
        };
    }
    let m = u(spec, "mod")?;
    Ok((0..len as u64).map(|j| (j % m) as u8).collect())
}

fn sha1_hex(b: &[u8]) -> String {
    show(&Sha1::digest(b))
}

fn lowest_matches(c: &Value, low: &[Tth], count_key: &str) -> Check {
    eq("lowest level count", low.len() as u64, u(c, count_key)?)?;
    eq(
        "first lowest node",
        low.first().map(|t| t.to_string()),
        Some(s(c, "lowest_first")?.to_string()),
    )?;
    eq(
        "last lowest node",
        low.last().map(|t| t.to_string()),
        Some(s(c, "lowest_last")?.to_string()),
    )?;
    if let Some(all) = c["lowest"].as_array() {
        let want: Vec<&str> = all.iter().filter_map(Value::as_str).collect();
        let got: Vec<String> = low.iter().map(ToString::to_string).collect();
        eq(
            "lowest level",
            got.iter().map(String::as_str).collect(),
            want,
        )?;
    }
    Ok(())
}

fn check_tree_shape(c: &Value, tree: &HashTree, data: &[u8], what: &str) -> Check {
    let at = |e: String| format!("{what}: {e}");
    eq("root", tree.root().to_string(), s(c, "root")?.to_string()).map_err(at)?;
    eq("size", tree.size(), data.len() as u64).map_err(at)?;
    eq("depth", u64::from(tree.depth()), u(c, "depth")?).map_err(at)?;
    let counts: Vec<u64> = c["level_counts"]
        .as_array()
        .ok_or("no `level_counts`")?
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    let bf = tree.breadth_first();
    eq(
        "breadth-first length",
        bf.len() as u64,
        24 * counts.iter().sum::<u64>(),
    )
    .map_err(at)?;
    eq(
        "breadth-first SHA-1",
        sha1_hex(&bf),
        s(c, "breadth_first_sha1")?.to_string(),
    )
    .map_err(at)?;
    let low = tree.lowest();
    eq(
        "lowest count",
        Some(low.len() as u64),
        counts.last().copied(),
    )
    .map_err(at)?;
    lowest_matches(c, low, "lowest_count").map_err(at)?;
    eq("slice", tree.slice(), u(c, "slice_size")?).map_err(at)?;
    Ok(())
}

fn check_tree_case(c: &Value) -> Check {
    s(c, "source")?;
    if c.get("input").is_none() {
        // Depth rules alone.
        let size = u(c, "size")?;
        let d = good_depth(size);
        eq("good_depth", u64::from(d), u(c, "good_depth")?)?;
        let n = node_count_at_depth(size, d);
        eq("node_count_at_depth", n, u(c, "lowest_count")?)?;
        eq("slice_size", slice_size(size), u(c, "slice_size")?)?;
        let mut sent = 0;
        let mut m = n;
        loop {
            sent += m;
            if m <= 1 {
                break;
            }
            m = m.div_ceil(2);
        }
        return eq("nodes sent", sent, u(c, "nodes_sent")?);
    }
    let data = input(&c["input"])?;
    let size = data.len() as u64;
    let root = tth(c, "root")?;
    eq("root hex", root.to_hex(), s(c, "root_hex")?.to_string())?;
    eq(
        "good_depth",
        u64::from(good_depth(size)),
        u(c, "good_depth")?,
    )?;
    eq("slice_size", slice_size(size), u(c, "slice_size")?)?;
    let depth = u(c, "depth")? as u32;
    let counts = c["level_counts"].as_array().ok_or("no `level_counts`")?;
    eq(
        "node_count_at_depth",
        Some(node_count_at_depth(size, depth)),
        counts.last().and_then(Value::as_u64),
    )?;
    eq("slice_root", slice_root(&data), root)?;

    let tree = HashTree::of(&data);
    check_tree_shape(c, &tree, &data, "HashTree::of")?;

    // The same tree whatever the pieces it is fed in.
    let mut pieces = vec![4099usize];
    if data.len() <= 2 << 20 {
        pieces.extend([7, 1000, 1024, 1025, 65537]);
    }
    if data.len() <= 70_000 {
        pieces.push(1);
    }
    for p in pieces {
        let mut h = TreeHasher::new();
        for chunk in data.chunks(p) {
            h.update(chunk);
        }
        let t = h.finish();
        if t != tree {
            return Err(format!("TreeHasher fed {p}-byte pieces gives another tree"));
        }
    }

    // The upper levels rebuilt from the lowest alone.
    let back = HashTree::from_lowest(size, tree.lowest().to_vec())
        .ok_or("from_lowest refuses the lowest level")?;
    check_tree_shape(c, &back, &data, "HashTree::from_lowest")?;

    // The slices tile the file and each verifies against its node.
    let slice = u(c, "slice_size")?;
    let n = tree.lowest().len() as u64;
    for i in 0..n {
        let (a, b) = tree.slice_range(i);
        eq(
            &format!("slice_range({i})"),
            (a, b),
            (i * slice, ((i + 1) * slice).min(size)),
        )?;
        let bytes = &data[a as usize..b as usize];
        if !tree.verify_slice(i, bytes) {
            return Err(format!("slice {i} does not verify"));
        }
        if !bytes.is_empty() {
            let mut bad = bytes.to_vec();
            bad[bytes.len() / 2] ^= 0x80;
            if tree.verify_slice(i, &bad) {
                return Err(format!("slice {i} verifies with a byte changed"));
            }
        }
    }
    if n > 0 && size > 0 && tree.verify_slice(n, &data[..1]) {
        return Err("a slice past the last one verifies".into());
    }
    Ok(())
}

#[test]
fn tiger_tree_vectors() {
    run("tiger_tree.json", MIN_TREE_CASES, check_tree_case);
}

// ----------------------------------------------------------------------------------- dime.json

fn type_t_number(t: TypeT) -> u64 {
    match t {
        TypeT::Media => 1,
        TypeT::Uri => 2,
        TypeT::Other(b) => u64::from(b),
    }
}

fn check_dime_case(c: &Value) -> Check {
    s(c, "source")?;
    let bytes = message(c)?;
    let got = dime::parse(&bytes);
    if let Some(code) = c["error"].as_str() {
        return match got {
            Err(e) => eq("error", e.code(), code),
            Ok(r) => Err(format!("expected {code}, parsed {} records", r.len())),
        };
    }
    let records = got.map_err(|e| format!("refused: {e} [{}]", e.code()))?;
    let want = c["records"].as_array().ok_or("no `records`")?;
    eq("record count", records.len(), want.len())?;
    for (i, (r, w)) in records.iter().zip(want).enumerate() {
        let at = |e: String| format!("record {i}: {e}");
        eq("TYPE_T", type_t_number(r.type_t), u(w, "type_t")?).map_err(at)?;
        eq("ID", show(r.id), s(w, "id")?.to_string()).map_err(at)?;
        eq("TYPE", show(r.kind), s(w, "type")?.to_string()).map_err(at)?;
        if let Some(n) = w["data_len"].as_u64() {
            eq("DATA length", r.data.len() as u64, n).map_err(at)?;
            if r.data.iter().any(|&b| b != 0) {
                return Err(at("DATA is not all zero".into()));
            }
        } else {
            eq("DATA", show(r.data), s(w, "data")?.to_string()).map_err(at)?;
        }
    }
    let canonical = c["canonical"].as_bool().ok_or("no boolean `canonical`")?;
    let again = dime::encode(&records);
    if canonical && again != bytes {
        return Err(format!(
            "dime::encode gives\n  {}\nnot\n  {}",
            show(&again),
            show(&bytes)
        ));
    }
    // Whatever the input, what we write must read back the same.
    let back: Vec<Record<'_>> =
        dime::parse(&again).map_err(|e| format!("re-encoded message refused: {e}"))?;
    eq("re-encoded records", back, records)
}

#[test]
fn dime_vectors() {
    let cases = run("dime.json", MIN_DIME_CASES, check_dime_case);
    covers(&cases, DIME_CODES);
}

// --------------------------------------------------------------------------- thex_message.json

fn check_message_case(c: &Value) -> Check {
    s(c, "source")?;
    let msg = message(c)?;
    let size = u(c, "size")?;
    let root = tth(c, "root")?;
    let got = parse_thex(&msg, size, &root);
    if let Some(code) = c["error"].as_str() {
        return match got {
            Err(e) => eq("error", e.code(), code),
            Ok(t) => Err(format!(
                "expected {code}, accepted a tree of depth {}",
                t.depth()
            )),
        };
    }
    let tree = got.map_err(|e| format!("refused: {e} [{}]", e.code()))?;
    let e = &c["expect"];
    eq("root", tree.root(), root)?;
    eq("size", tree.size(), size)?;
    eq("depth", u64::from(tree.depth()), u(e, "depth")?)?;
    lowest_matches(e, tree.lowest(), "lowest_count")?;
    eq("slice", tree.slice(), u(e, "slice")?)?;
    let rebuilt = HashTree::from_lowest(size, tree.lowest().to_vec())
        .ok_or("from_lowest refuses the received level")?;
    eq("tree rebuilt from its lowest level", &rebuilt, &tree)?;
    if c["reencode"].as_bool().ok_or("no boolean `reencode`")? {
        let again = encode_thex(&tree);
        if again != msg {
            return Err(format!(
                "encode_thex gives\n  {}\nnot\n  {}",
                show(&again),
                show(&msg)
            ));
        }
    }
    Ok(())
}

#[test]
fn thex_message_vectors() {
    let cases = run("thex_message.json", MIN_MESSAGE_CASES, check_message_case);
    covers(&cases, THEX_CODES);
}

// ----------------------------------------------------------------------------------- urns.json

fn urn_code(e: &UrnError) -> &'static str {
    match e {
        UrnError::Form => "urn-form",
        UrnError::Digest => "urn-digest",
    }
}

fn check_urn_case(c: &Value) -> Check {
    s(c, "source")?;
    let text = s(c, "text")?;
    let error = c["error"].as_str();
    match s(c, "kind")? {
        "bitprint" => match (parse_bitprint(text), error) {
            (Err(e), Some(code)) => eq("error", urn_code(&e), code),
            (Ok(v), Some(code)) => Err(format!("expected {code}, parsed {v:?}")),
            (Err(e), None) => Err(format!("refused: {}", urn_code(&e))),
            (Ok((sha1, root)), None) => {
                eq(
                    "SHA-1",
                    data_encoding::BASE32_NOPAD.encode(&sha1),
                    s(c, "sha1")?.to_string(),
                )?;
                eq("TTH", root, tth(c, "tth")?)
            }
        },
        "tree" => match (parse_tree_urn(text), error) {
            (Err(e), Some(code)) => eq("error", urn_code(&e), code),
            (Ok(v), Some(code)) => Err(format!("expected {code}, parsed {v}")),
            (Err(e), None) => Err(format!("refused: {}", urn_code(&e))),
            (Ok(root), None) => eq("TTH", root, tth(c, "tth")?),
        },
        "thex_uri" => match (parse_thex_uri(text), error) {
            (None, Some(_)) => Ok(()),
            (Some(v), Some(code)) => Err(format!("expected {code}, parsed {v:?}")),
            (None, None) => Err("refused".into()),
            (Some((path, root)), None) => {
                eq("path", path.as_str(), s(c, "path")?)?;
                eq("TTH", root, tth(c, "tth")?)?;
                if let Some(sha1) = c["format_sha1"].as_str() {
                    eq("thex_uri", thex_uri(sha1, &root).as_str(), text)?;
                }
                Ok(())
            }
        },
        "tth" => match (Tth::from_base32(text), error) {
            (None, Some(_)) => Ok(()),
            (Some(v), Some(code)) => Err(format!("expected {code}, parsed {v}")),
            (None, None) => Err("refused".into()),
            (Some(root), None) => {
                eq("TTH", root.to_string(), s(c, "tth")?.to_string())?;
                eq(
                    "Display round trip",
                    Tth::from_base32(&root.to_string()),
                    Some(root),
                )
            }
        },
        k => Err(format!("unknown kind {k}")),
    }
}

#[test]
fn urn_vectors() {
    run("urns.json", MIN_URN_CASES, check_urn_case);
}
