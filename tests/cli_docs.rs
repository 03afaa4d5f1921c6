//! Completions and the man page list every subcommand and flag that `--help` lists, and each
//! is valid for the program that reads it (checked with that program where it is installed).

use std::process::{Command, Stdio};

fn servent(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_servent"))
        .args(args)
        .output()
        .expect("servent runs");
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// The first words of the lines of `section` in a `--help` text.
fn listed(help: &str, section: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != section)
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("    "))
        .filter_map(|l| l.split_whitespace().next())
        .map(|w| w.trim_end_matches(',').to_string())
        .collect()
}

/// Every subcommand, with the flags its `--help` lists.
fn commands() -> Vec<(String, Vec<String>)> {
    let subs = listed(&servent(&["--help"]), "Commands:");
    assert!(subs.len() >= 10, "{subs:?}");
    subs.into_iter()
        .map(|s| {
            let flags = listed(&servent(&[&s, "--help"]), "Options:");
            assert!(flags.contains(&"--help".to_string()), "{s}: {flags:?}");
            (s, flags)
        })
        .collect()
}

fn available(program: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("{program} is not installed: its syntax check is skipped");
    }
    ok
}

/// Runs `program args… file` on `text` written to a file; its stderr when it complains.
fn check_with(program: &str, args: &[&str], text: &str, ext: &str) -> String {
    let f = std::env::temp_dir().join(format!("servent-docs-{}.{ext}", std::process::id()));
    std::fs::write(&f, text).unwrap();
    let out = Command::new(program).args(args).arg(&f).output().unwrap();
    let _ = std::fs::remove_file(&f);
    assert!(out.status.success(), "{program}: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn completions_list_every_subcommand_and_flag_and_parse() {
    let cmds = commands();
    for shell in ["bash", "zsh", "fish"] {
        let script = servent(&["completions", shell]);
        for (sub, flags) in &cmds {
            assert!(script.contains(sub.as_str()), "{shell}: {sub}");
            for f in flags.iter().filter(|f| f.as_str() != "--help") {
                let name = if shell == "fish" {
                    format!("-l {}", f.trim_start_matches("--"))
                } else {
                    f.clone()
                };
                assert!(script.contains(&name), "{shell}: {sub} {f}");
            }
        }
        if available(shell) {
            let err = check_with(shell, &["-n"], &script, shell);
            assert!(err.is_empty(), "{shell}: {err}");
        }
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_servent"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bash, zsh or fish"));
}

#[test]
fn the_bash_completion_completes_subcommands_and_flags() {
    if !available("bash") {
        return;
    }
    let script = servent(&["completions", "bash"]);
    let run = |words: &str, cword: usize| {
        let prog = format!(
            "{script}\nCOMP_WORDS=({words}); COMP_CWORD={cword}; _servent; echo \"${{COMPREPLY[*]}}\""
        );
        let out = Command::new("bash").args(["-c", &prog]).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    assert_eq!(run("servent ge", 1), "get");
    assert_eq!(run("servent run --source-p", 2), "--source-patience");
    assert_eq!(run("servent downloads --cl", 2), "--clear");
}

#[test]
fn the_man_page_documents_every_subcommand_and_flag() {
    let page = servent(&["man"]);
    assert!(page.starts_with(".TH SERVENT 1"), "{}", &page[..80]);
    // roff writes a dash as \-.
    let plain = page.replace("\\-", "-");
    for (sub, flags) in commands() {
        assert!(plain.contains(&format!(".SS \"servent {sub}\"")), "{sub}");
        for f in flags {
            assert!(plain.contains(&format!(".B {f}")), "{sub} {f}");
        }
    }
    assert!(
        page.is_ascii(),
        "troff reads bytes: other characters are escaped"
    );
    if available("groff") {
        let warnings = check_with("groff", &["-man", "-Tutf8", "-ww", "-z"], &page, "1");
        assert!(warnings.is_empty(), "groff: {warnings}");
    }
}

#[test]
fn the_systemd_unit_verifies_and_stops_the_servent_with_sigterm() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/servent.service"
    ))
    .expect("contrib/servent.service");
    assert!(
        unit.contains("ExecStart=%h/.cargo/bin/servent run"),
        "{unit}"
    );
    assert!(
        unit.contains("KillSignal=SIGTERM"),
        "servent stops cleanly on SIGTERM"
    );
    if !available("systemd-analyze") {
        return;
    }
    // Verified with the binary under test in place of the installed one.
    let here = unit.replace("%h/.cargo/bin/servent", env!("CARGO_BIN_EXE_servent"));
    let dir = std::env::temp_dir().join(format!("servent-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("servent.service");
    std::fs::write(&f, here).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&f)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{out:?}");
}
