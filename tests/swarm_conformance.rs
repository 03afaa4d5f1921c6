//! Runs the swarm vectors of `conformance/swarm/` (format: conformance/swarm/README.md) against
//! `swarm::ranges` and `swarm::altloc`: every value must parse to the expected entries or fail
//! with the expected error code, and where a format exists, formatting the result and parsing
//! it again must give the same entries.

use std::fs;
use std::net::SocketAddrV4;

use serde_json::Value;
use servent::swarm::altloc::{
    AltLoc, FwAltLoc, format_x_alt, format_x_falt, format_x_nalt, parse_alternate_location,
    parse_x_alt_for, parse_x_falt, parse_x_nalt,
};
use servent::swarm::ranges::{RangeSet, parse_available};

const RANGES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/conformance/swarm/available_ranges.json"
);
const ALTLOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/conformance/swarm/altloc.json");

/// Fewer cases than this means a file was truncated or emptied.
const MIN_RANGE_CASES: usize = 35;
const MIN_ALTLOC_CASES: usize = 45;

fn load(path: &str) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    doc["cases"]
        .as_array()
        .unwrap_or_else(|| panic!("{path}: no `cases` array"))
        .clone()
}

/// The case's header value: `value`, or `value_repeat` = prefix + unit × count.
fn value_of(case: &Value) -> String {
    if let Some(v) = case["value"].as_str() {
        return v.to_string();
    }
    let r = &case["value_repeat"];
    let prefix = r["prefix"].as_str().expect("value_repeat.prefix");
    let unit = r["unit"].as_str().expect("value_repeat.unit");
    let count = r["count"].as_u64().expect("value_repeat.count") as usize;
    format!("{prefix}{}", unit.repeat(count))
}

fn name(case: &Value) -> String {
    case["description"].as_str().unwrap_or("?").to_string()
}

fn ranges_of(s: &RangeSet) -> Vec<(u64, u64)> {
    s.iter().map(|r| (r.start, r.end)).collect()
}

#[test]
fn available_ranges_vectors() {
    let cases = load(RANGES);
    assert!(cases.len() >= MIN_RANGE_CASES, "{} cases", cases.len());
    for case in &cases {
        let d = name(case);
        let value = value_of(case);
        let size = case["file_size"].as_u64().expect("file_size");
        let got = parse_available(&value, size);
        if let Some(code) = case["error"].as_str() {
            match got {
                Err(e) => assert_eq!(e.code(), code, "{d}"),
                Ok(s) => panic!("{d}: expected {code}, got {s:?}"),
            }
            continue;
        }
        let set = got.unwrap_or_else(|e| panic!("{d}: {e}"));
        let want: Vec<(u64, u64)> = case["ranges"]
            .as_array()
            .expect("ranges")
            .iter()
            .map(|r| (r[0].as_u64().expect("start"), r[1].as_u64().expect("end")))
            .collect();
        assert_eq!(ranges_of(&set), want, "{d}");
        let text = set.format_available();
        if let Some(f) = case["format"].as_str() {
            assert_eq!(text, f, "{d}");
        }
        assert_eq!(
            parse_available(&text, size).as_ref(),
            Ok(&set),
            "{d}: {text}"
        );
    }
}

fn alts_of(case: &Value) -> Option<Vec<(SocketAddrV4, bool, Option<u64>)>> {
    let arr = case["alts"].as_array()?;
    Some(
        arr.iter()
            .map(|a| {
                (
                    a["addr"].as_str().expect("addr").parse().expect("addr"),
                    a["tls"].as_bool().unwrap_or(false),
                    a["time"].as_u64(),
                )
            })
            .collect(),
    )
}

fn check_alts(d: &str, case: &Value, got: &[AltLoc]) {
    if let Some(want) = alts_of(case) {
        let got: Vec<(SocketAddrV4, bool)> = got.iter().map(|a| (a.addr, a.tls)).collect();
        let want: Vec<(SocketAddrV4, bool)> = want.iter().map(|w| (w.0, w.1)).collect();
        assert_eq!(got, want, "{d}");
    }
    if let Some(n) = case["alts_count"].as_u64() {
        assert_eq!(got.len() as u64, n, "{d}");
    }
}

fn falts_of(case: &Value) -> Vec<(String, Option<SocketAddrV4>, Vec<SocketAddrV4>)> {
    case["falts"]
        .as_array()
        .expect("falts")
        .iter()
        .map(|f| {
            (
                f["guid"].as_str().expect("guid").to_string(),
                f["addr"].as_str().map(|a| a.parse().expect("addr")),
                f["proxies"]
                    .as_array()
                    .expect("proxies")
                    .iter()
                    .map(|p| p.as_str().expect("proxy").parse().expect("proxy"))
                    .collect(),
            )
        })
        .collect()
}

fn falt_view(v: &[FwAltLoc]) -> Vec<(String, Option<SocketAddrV4>, Vec<SocketAddrV4>)> {
    v.iter()
        .map(|f| (f.guid.to_hex(), f.addr, f.proxies().to_vec()))
        .collect()
}

#[test]
fn altloc_vectors() {
    let cases = load(ALTLOC);
    assert!(cases.len() >= MIN_ALTLOC_CASES, "{} cases", cases.len());
    let budget = usize::MAX;
    for case in &cases {
        let d = name(case);
        let value = value_of(case);
        let header = case["header"].as_str().expect("header");
        let sha1 = case["sha1"].as_str();
        let error = case["error"].as_str();
        let format = case["format"].as_str();
        match header {
            "X-Alt" | "X-Nalt" => {
                let got = if header == "X-Alt" {
                    parse_x_alt_for(&value, sha1)
                } else {
                    parse_x_nalt(&value)
                };
                if let Some(code) = error {
                    assert_eq!(got.map_err(|e| e.code()).err(), Some(code), "{d}");
                    continue;
                }
                let got = got.unwrap_or_else(|e| panic!("{d}: {e}"));
                check_alts(&d, case, &got);
                let text = if header == "X-Alt" {
                    format_x_alt(&got, budget)
                } else {
                    format_x_nalt(&got.iter().map(|a| a.addr).collect::<Vec<_>>(), budget)
                };
                if let Some(f) = format {
                    assert_eq!(text, f, "{d}");
                }
                let back = if header == "X-Alt" {
                    parse_x_alt_for(&text, None)
                } else {
                    parse_x_nalt(&text)
                };
                assert_eq!(back.as_ref(), Ok(&got), "{d}: {text}");
            }
            "Alternate-Location" => {
                let got = parse_alternate_location(&value, sha1);
                if let Some(code) = error {
                    assert_eq!(got.map_err(|e| e.code()).err(), Some(code), "{d}");
                    continue;
                }
                let got = got.unwrap_or_else(|e| panic!("{d}: {e}"));
                let want = alts_of(case).expect("alts");
                let got: Vec<(SocketAddrV4, bool, Option<u64>)> = got
                    .iter()
                    .map(|x| (x.loc.addr, x.loc.tls, x.unix_time))
                    .collect();
                assert_eq!(got, want, "{d}");
            }
            "X-Falt" => {
                let allow_private = case["allow_private"].as_bool().unwrap_or(false);
                let got = parse_x_falt(&value, allow_private);
                if let Some(code) = error {
                    assert_eq!(got.map_err(|e| e.code()).err(), Some(code), "{d}");
                    continue;
                }
                let got = got.unwrap_or_else(|e| panic!("{d}: {e}"));
                assert_eq!(falt_view(&got), falts_of(case), "{d}");
                let text = format_x_falt(&got, budget);
                if let Some(f) = format {
                    assert_eq!(text, f, "{d}");
                }
                let back =
                    parse_x_falt(&text, allow_private).unwrap_or_else(|e| panic!("{d}: {e}"));
                assert_eq!(back, got, "{d}: {text}");
            }
            other => panic!("{d}: unknown header {other}"),
        }
    }
}

const PUSH_PROXY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/conformance/swarm/push_proxy.json"
);

#[test]
fn push_proxy_vectors() {
    use servent::overlay::Proxied;
    use servent::transfer::pushproxy::{answer, is_proxy_path, parse};
    use servent::wire::ServentId;
    let text = fs::read_to_string(PUSH_PROXY).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let cases = load(PUSH_PROXY);
    assert!(cases.len() >= 13, "{} cases", cases.len());
    for case in &cases {
        let d = name(case);
        let path = case["path"].as_str().unwrap();
        assert!(is_proxy_path(path), "{d}");
        let got = parse(path, case["query"].as_str(), case["x_node"].as_str());
        match (&case["want"], case["error"].as_str()) {
            (want, None) => {
                let r = got.unwrap_or_else(|e| panic!("{d}: {e}"));
                assert_eq!(r.target.to_hex(), want["guid"].as_str().unwrap(), "{d}");
                assert_eq!(u64::from(r.index.0), want["index"].as_u64().unwrap(), "{d}");
                assert_eq!(r.to.to_string(), want["to"].as_str().unwrap(), "{d}");
            }
            (_, Some(code)) => {
                let e = got.expect_err(&d);
                assert_eq!(e.code(), code, "{d}: {e}");
            }
        }
    }
    let g = ServentId::from_hex("8f3a9c1e5b7d2f4aff61d0c2e4b6a801").unwrap();
    let line = |how| {
        let (code, reason) = answer(how, &g);
        format!("{code} {reason}")
    };
    let a = &doc["answers"];
    assert_eq!(line(Proxied::Neighbour), a["neighbour"].as_str().unwrap());
    assert_eq!(line(Proxied::Routed(3)), a["routed-3"].as_str().unwrap());
    assert_eq!(line(Proxied::NoRoute), a["no-route"].as_str().unwrap());
}
