//! `servent demo` as a newcomer runs it: it must finish, say what it did, and exit 0.

use std::process::Command;

#[test]
fn the_demo_searches_and_downloads_directly_and_through_push() {
    let out = Command::new(env!("CARGO_BIN_EXE_servent"))
        .arg("demo")
        .env("RUST_LOG", "warn")
        .output()
        .expect("servent runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("carol downloads it directly over HTTP."),
        "{text}"
    );
    assert!(text.contains("which asks for a Push"), "{text}");
    assert_eq!(
        text.matches("its SHA-1 matches the search result").count(),
        2,
        "{text}"
    );
    assert!(text.contains("All done"), "{text}");
}
