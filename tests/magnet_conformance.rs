//! Runs the magnet link vectors of `conformance/magnet/` (format: its README.md) against
//! `transfer::magnet`: every link parses to what it names or fails with its error code, and a
//! parsed link written back with `to_link` parses the same.

use serde_json::Value;
use servent::transfer::magnet::parse;

const LINKS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/conformance/magnet/links.json");
/// Fewer cases than this means the file was truncated or emptied.
const MIN_CASES: usize = 10;

fn link_of(case: &Value) -> String {
    if let Some(l) = case["link"].as_str() {
        return l.to_string();
    }
    let r = &case["link_repeat"];
    let unit = r["unit"].as_str().expect("link_repeat.unit");
    let count = r["count"].as_u64().expect("link_repeat.count") as usize;
    format!(
        "{}{}",
        r["prefix"].as_str().expect("link_repeat.prefix"),
        unit.repeat(count)
    )
}

#[test]
fn magnet_link_vectors() {
    let text = std::fs::read_to_string(LINKS).expect("the vectors");
    let doc: Value = serde_json::from_str(&text).expect("JSON");
    let cases = doc["cases"].as_array().expect("cases");
    assert!(cases.len() >= MIN_CASES, "{} cases", cases.len());
    for case in cases {
        let d = case["description"].as_str().unwrap_or("?");
        let got = parse(&link_of(case));
        if let Some(code) = case["error"].as_str() {
            assert_eq!(got.map_err(|e| e.code()), Err(code), "{d}");
            continue;
        }
        let m = got.unwrap_or_else(|e| panic!("{d}: {e}"));
        assert_eq!(Some(m.urn.base32().as_str()), case["sha1"].as_str(), "{d}");
        assert_eq!(
            m.tth.map(|t| t.to_string()),
            case["tth"].as_str().map(String::from),
            "{d}"
        );
        assert_eq!(m.name.as_deref(), case["name"].as_str(), "{d}");
        assert_eq!(m.size, case["size"].as_u64(), "{d}");
        let sources: Vec<String> = m.sources.iter().map(|a| a.to_string()).collect();
        let want: Vec<String> = case["sources"]
            .as_array()
            .expect("sources")
            .iter()
            .map(|v| v.as_str().expect("an address").to_string())
            .collect();
        assert_eq!(sources, want, "{d}");
        assert_eq!(parse(&m.to_link()).as_ref(), Ok(&m), "{d}: written back");
    }
}
