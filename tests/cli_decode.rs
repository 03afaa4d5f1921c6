//! `servent decode` as a person or a script uses it: hex in, JSON or a clear error out.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn decode(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_servent"))
        .arg("decode")
        .args(args)
        .env("RUST_LOG", "off")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("servent runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// PROTOCOL.md §11: Query "gnutella protocol", flags 0xB800, `urn:`, GGEP `M`=04.
const QUERY: &str = "5a 1f 0e 3c 8b 27 d4 e9 ff 1c 6a 2b 7d 3e 9f 00 | 80 03 00 1e 00 00 00 | b8 00
67 6e 75 74 65 6c 6c 61 20 70 72 6f 74 6f 63 6f 6c 00 | 75 72 6e 3a | 1c | c3 81 4d 41 04";
/// PROTOCOL.md §11: Bye 200 "Servent Shutdown".
const BYE: &str = "5a1f0e3c8b27d4e9ff1c6a2b7d3e9f00 02 01 00 13 00 00 00 c8 00 53 65 72 76 65 6e 74 20 53 68 75 74 64 6f 77 6e 00";

#[test]
fn query_hex_on_stdin_prints_its_fields_as_json() {
    let out = decode(&[], QUERY);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["muid"], "5a1f0e3c8b27d4e9ff1c6a2b7d3e9f00");
    assert_eq!(v["ttl"], 3);
    assert_eq!(v["payload"]["type"], "query");
    assert_eq!(v["payload"]["criteria"], "gnutella protocol");
    assert_eq!(v["payload"]["flags"]["raw"], "0xb800");
    assert_eq!(v["payload"]["extensions"][0]["urn_request"], "urn:");
    assert_eq!(v["payload"]["extensions"][1]["ggep"][0]["id"], "M");
    assert_eq!(v["payload"]["extensions"][1]["ggep"][0]["decoded"], 4);
}

#[test]
fn several_descriptors_in_one_argument_print_one_line_each_when_compact() {
    let both = format!("{QUERY}\n{BYE}");
    let out = decode(&["--compact", &both], "");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["payload"]["type"], "bye");
    assert_eq!(lines[1]["payload"]["code"], 200);
    assert_eq!(lines[1]["payload"]["reason"], "Servent Shutdown");
}

#[test]
fn bad_hex_says_where_and_exits_non_zero() {
    let out = decode(&["5a1g"], "");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("not hex: 'g' at hex digit 4"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn malformed_descriptor_names_the_error_and_exits_non_zero() {
    // A query hit announcing 3 results whose payload holds none.
    let hit = "5a1f0e3c8b27d4e9ff1c6a2b7d3e9f00 81 03 00 1b 00 00 00 03 ca 18 c0 00 02 0a e8 03 00 00 8f3a9c1e5b7d2f4aff61d0c2e4b6a801";
    let out = decode(&[hit], "");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("announces 3 results") && err.contains("[hit-count-overrun]"),
        "{err}"
    );
}

#[test]
fn a_cut_descriptor_says_how_many_bytes_are_missing() {
    let out = decode(&[&BYE[..BYE.len() - 6]], "");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("2 bytes short"), "{err}");
}
