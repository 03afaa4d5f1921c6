//! `servent search` and `servent get` as a person runs them, against a real ultrapeer on
//! 127.0.0.1 that shares a folder.

mod common;

use std::process::Command;
use std::time::Duration;

use common::temp_dir;
use servent::handshake::Role;
use servent::net::NodeConfig;
use servent::servent::{Servent, ServentConfig};
use servent::wire::Sha1Urn;

async fn sharing_ultrapeer(files: &[(&str, &[u8])]) -> Servent {
    let share = temp_dir("cli-share");
    std::fs::create_dir_all(&share).unwrap();
    for (n, d) in files {
        std::fs::write(share.join(n), d).unwrap();
    }
    let mut n = NodeConfig::new("127.0.0.1:0".parse().unwrap(), temp_dir("cli-up"));
    n.role = Role::Ultrapeer;
    let mut cfg = ServentConfig::new(n);
    cfg.shares = vec![share];
    Servent::start(cfg).await.unwrap()
}

fn servent(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_servent"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("servent runs")
}

#[async_std::test]
async fn search_prints_files_grouped_with_their_urns_and_get_fetches_one() {
    let data: Vec<u8> = (0..400_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let up = sharing_ultrapeer(&[("Night Train.ogg", &data), ("unrelated.txt", b"x")]).await;
    let peer = up.node().listen_addr().to_string();
    let data_dir = temp_dir("cli-data");
    let dd = data_dir.to_str().unwrap().to_string();
    let out = async_std::task::spawn_blocking({
        let (peer, dd) = (peer.clone(), dd.clone());
        move || {
            servent(&[
                "search",
                "night train",
                "--peer",
                &peer,
                "--wait",
                "2",
                "--json",
                "--data-dir",
                &dd,
            ])
        }
    })
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let groups = v.as_array().unwrap();
    assert_eq!(groups.len(), 1, "{v}");
    assert_eq!(groups[0]["name"], "Night Train.ogg");
    assert_eq!(groups[0]["size"], data.len());
    assert_eq!(groups[0]["sources"].as_array().unwrap().len(), 1);
    let urn = Sha1Urn::digest(&data).to_string();
    assert_eq!(groups[0]["urn"], urn.as_str());

    let dl = temp_dir("cli-dl");
    let dl_s = dl.to_str().unwrap().to_string();
    let magnet = format!("magnet:?xt={urn}&dn=train.ogg");
    let out = async_std::task::spawn_blocking(move || {
        servent(&[
            "get",
            &magnet,
            "--peer",
            &peer,
            "--wait",
            "1",
            "--out",
            &dl_s,
            "--data-dir",
            &dd,
        ])
    })
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(printed.trim(), dl.join("train.ogg").to_str().unwrap());
    assert_eq!(std::fs::read(dl.join("train.ogg")).unwrap(), data);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("100%"), "progress shown: {err}");
    async_std::task::sleep(Duration::from_millis(10)).await;
}

#[test]
fn get_explains_a_bad_target() {
    let out = servent(&["get", "not-a-urn", "--peer", "127.0.0.1:9"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expected urn:sha1:"), "{err}");
}

#[async_std::test]
async fn get_of_a_magnet_with_a_source_fetches_from_it_without_a_search_with_or_without_its_size() {
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let seed = sharing_ultrapeer(&[("handed over.bin", &data)]).await;
    let f = seed.library().read().unwrap().files()[0].clone();
    let link = servent::transfer::magnet::Magnet {
        urn: f.sha1,
        name: Some("handed over.bin".into()),
        size: Some(f.size),
        tth: f.tth,
        sources: vec![seed.node().listen_addr()],
    }
    .to_link();
    let dl = temp_dir("cli-magnet-dl");
    let dd = temp_dir("cli-magnet-data");
    let (dl_s, dd_s) = (
        dl.to_str().unwrap().to_string(),
        dd.to_str().unwrap().to_string(),
    );
    // No --peer: the link's source is all it needs, and nothing outside is asked.
    let out = async_std::task::spawn_blocking(move || {
        servent(&["get", &link, "--out", &dl_s, "--data-dir", &dd_s])
    })
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("looking for sources"), "{err}");
    assert_eq!(std::fs::read(dl.join("handed over.bin")).unwrap(), data);
    assert!(
        seed.uploads()
            .bytes_sent
            .load(std::sync::atomic::Ordering::Relaxed)
            >= data.len() as u64
    );
    // Without xl= the source is asked for the size (HEAD), and the download still needs no
    // search.
    let unsized_link = servent::transfer::magnet::Magnet {
        urn: f.sha1,
        name: Some("asked size.bin".into()),
        size: None,
        tth: None,
        sources: vec![seed.node().listen_addr()],
    }
    .to_link();
    assert!(!unsized_link.contains("xl="));
    let dl2 = temp_dir("cli-magnet-dl2");
    let dl2_s = dl2.to_str().unwrap().to_string();
    let dd2 = temp_dir("cli-magnet-data2");
    let dd2_s = dd2.to_str().unwrap().to_string();
    let out = async_std::task::spawn_blocking(move || {
        servent(&["get", &unsized_link, "--out", &dl2_s, "--data-dir", &dd2_s])
    })
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("looking for sources"), "{err}");
    assert_eq!(std::fs::read(dl2.join("asked size.bin")).unwrap(), data);
}

/// `servent` with `args`, off the async executor.
async fn run(args: Vec<String>) -> std::process::Output {
    async_std::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        servent(&a)
    })
    .await
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[async_std::test]
async fn words_unquoted_a_urn_and_an_escaped_name_work_as_typed() {
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 11 % 251) as u8).collect();
    let up =
        sharing_ultrapeer(&[("Midnight Train.ogg", &data), ("Midnight Sun.txt", b"sun")]).await;
    let peer = up.node().listen_addr().to_string();
    let dd = temp_dir("cli-words-data").to_str().unwrap().to_string();
    let urn = Sha1Urn::digest(&data).to_string();
    let common = ["--peer", &peer, "--wait", "2", "--json", "--data-dir", &dd];

    // Two words, unquoted: both are searched for (argh refused the second before).
    let mut a = strings(&["search", "midnight", "train"]);
    a.extend(strings(&common));
    let out = run(a).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Midnight Train.ogg"]);

    // A urn is a search for that file, as `get` does.
    let mut a = strings(&["search", &urn]);
    a.extend(strings(&common));
    let out = run(a).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v[0]["urn"], urn.as_str());

    // A magnet's escaped name is saved decoded; asked again, the file is found where it is.
    let dl = temp_dir("cli-words-dl");
    let dl_s = dl.to_str().unwrap().to_string();
    let magnet = format!("magnet:?xt={urn}&dn=Copper%20Lantern+Recipe.ogg");
    let get = strings(&[
        "get",
        &magnet,
        "--peer",
        &peer,
        "--wait",
        "1",
        "--out",
        &dl_s,
        "--data-dir",
        &dd,
    ]);
    let out = run(get.clone()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let saved = dl.join("Copper Lantern Recipe.ogg");
    assert_eq!(std::fs::read(&saved).unwrap(), data);
    let out = run(get).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("already downloaded"), "{err}");
    assert!(!err.contains("looking for sources"), "{err}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        saved.to_str().unwrap()
    );
    assert_eq!(std::fs::read_dir(&dl).unwrap().count(), 1, "no second copy");

    // With --json, a failure is JSON too.
    let out = run(strings(&["get", "not-a-urn", "--json", "--peer", &peer])).await;
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert!(
        v["error"].as_str().unwrap().contains("expected urn:sha1:"),
        "{v}"
    );
}
