//! The commands that talk to a running daemon through its API: `status`, `downloads`, `peers`,
//! and `search`/`get` when a daemon is running.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::search::human;
use crate::control::client::{Client, ClientError};
use crate::control::config::Settings;
use crate::control::token;

/// How often `get` redraws its progress line.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// A client for the daemon the settings point at.
pub fn client(s: &Settings) -> Result<Client, String> {
    let Some(api) = s.api else {
        return Err(
            "the local API is off in the settings (api = off), so there is no running \
                    servent to ask; set api to an address such as 127.0.0.1:6347"
                .into(),
        );
    };
    let addr = crate::control::server_addr(api);
    Ok(Client::new(addr, token::read(&s.data_dir).ok()))
}

/// Words for a failed call, naming the token file when the daemon refused ours.
pub fn explain(e: ClientError, s: &Settings) -> String {
    match e {
        ClientError::Api { status: 401, .. } => format!(
            "the servent refused our token from {}: is it running with another data directory \
             (--data-dir)?",
            token::path(&s.data_dir).display()
        ),
        e => e.to_string(),
    }
}

fn print_json(v: &Value) -> Result<(), String> {
    println!(
        "{}",
        serde_json::to_string_pretty(v).map_err(|e| e.to_string())?
    );
    Ok(())
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{}h {}m", s / 3600, s % 3600 / 60),
    }
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

pub async fn status(s: &Settings, json_out: bool) -> Result<(), String> {
    let c = client(s)?;
    let st = c.get("/api/status").await.map_err(|e| explain(e, s))?;
    let conns = c.get("/api/connections").await.map_err(|e| explain(e, s))?;
    if json_out {
        return print_json(&json!({"status": st, "connections": conns}));
    }
    let mut o = std::io::stdout();
    let _ = writeln!(
        o,
        "servent {} on {} as {}, up {}",
        str_of(&st["version"]),
        str_of(&st["listen"]),
        crate::text::a(str_of(&st["role"])),
        duration(num(&st["uptime_secs"]))
    );
    let _ = writeln!(o, "servent GUID  {}", str_of(&st["servent_guid"]));
    let fw = &st["firewalled"];
    let _ = writeln!(
        o,
        "firewalled    {}: {}",
        if fw["firewalled"].as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        },
        str_of(&fw["reason"])
    );
    if let Some(by) = fw["reached_by"].as_str() {
        let _ = writeln!(o, "              proven by a connection from {by}");
    }
    if let Some(ext) = fw["external"].as_str() {
        let _ = writeln!(
            o,
            "seen at       {ext} (by {})",
            crate::text::count(num(&fw["external_votes"]), "peer", "peers")
        );
    }
    if let Some(r) = st.get("reputation") {
        let _ = writeln!(
            o,
            "reputation    {}/{}: {}",
            num(&r["score"]),
            num(&r["threshold"]),
            str_of(&r["summary"])
        );
        for p in r["parts"].as_array().into_iter().flatten() {
            let _ = writeln!(
                o,
                "  {:<17} {:>3}/{:<3} {}",
                str_of(&p["name"]),
                num(&p["value"]),
                num(&p["max"]),
                str_of(&p["detail"])
            );
        }
    }
    let _ = writeln!(
        o,
        "sharing       {}, {}",
        crate::text::count(num(&st["shares"]["files"]), "file", "files"),
        human(num(&st["shares"]["bytes"]))
    );
    if let Some(h) = st["shares"]["hashing"].as_object() {
        let n = |k: &str| h.get(k).and_then(Value::as_u64).unwrap_or(0);
        let _ = writeln!(
            o,
            "              hashing {} of {} files, {} left (the others are shared already)",
            (n("files_done") + 1).min(n("files_total")),
            n("files_total"),
            human(n("bytes_left"))
        );
    }
    let _ = writeln!(
        o,
        "transfers     {} uploads, {} downloads",
        num(&st["transfers"]["uploads_active"]),
        num(&st["transfers"]["downloads_active"])
    );
    let _ = writeln!(
        o,
        "routed        {} queries forwarded, {} hits, {} pushes; {} received",
        num(&st["stats"]["queries_forwarded"]),
        num(&st["stats"]["hits_routed"]),
        num(&st["stats"]["pushes_routed"]),
        num(&st["stats"]["received"])
    );
    print_peers(&conns, &mut o);
    Ok(())
}

fn print_peers(conns: &Value, o: &mut impl Write) {
    let list = conns.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        let _ = writeln!(o, "no peers connected");
        return;
    }
    let _ = writeln!(
        o,
        "{:>4}  {:<21}  {:<9}  {:>3}  {:>9}  {:>9}  {:>6}  agent",
        "id", "peer", "role", "dir", "in", "out", "for"
    );
    for c in list {
        let _ = writeln!(
            o,
            "{:>4}  {:<21}  {:<9}  {:>3}  {:>9}  {:>9}  {:>6}  {}",
            num(&c["id"]),
            str_of(&c["peer"]),
            str_of(&c["role"]),
            if c["outbound"].as_bool() == Some(true) {
                "out"
            } else {
                "in"
            },
            human(num(&c["bytes_in"])),
            human(num(&c["bytes_out"])),
            duration(num(&c["connected_secs"])),
            str_of(&c["user_agent"])
        );
    }
}

/// What `servent peers` does.
pub enum PeersAction {
    List,
    Connect(String),
    Disconnect(u64),
}

pub async fn peers(s: &Settings, action: PeersAction, json_out: bool) -> Result<(), String> {
    let c = client(s)?;
    let v = match action {
        PeersAction::List => c.get("/api/connections").await,
        PeersAction::Connect(addr) => c.post("/api/peers", &json!({ "addr": addr })).await,
        PeersAction::Disconnect(id) => c.delete(&format!("/api/peers/{id}")).await,
    }
    .map_err(|e| explain(e, s))?;
    if json_out {
        return print_json(&v);
    }
    if v.is_array() {
        print_peers(&v, &mut std::io::stdout());
    } else if v.get("disconnected").is_some() {
        println!("disconnected {}", num(&v["id"]));
    } else {
        println!("dialling {} and keeping it connected", str_of(&v["addr"]));
    }
    Ok(())
}

/// `servent uploads`: the policy, each file upload, and each downloader with where it stands.
pub async fn uploads(s: &Settings, json_out: bool) -> Result<(), String> {
    let c = client(s)?;
    let v = c.get("/api/uploads").await.map_err(|e| explain(e, s))?;
    if json_out {
        return print_json(&v);
    }
    print_uploads(&v, &mut std::io::stdout());
    Ok(())
}

fn print_uploads(v: &Value, o: &mut impl Write) {
    let _ = writeln!(
        o,
        "policy {}: {} of {} slots in use, {} waiting for one, {} in the queue",
        str_of(&v["policy"]),
        num(&v["slots_in_use"]),
        num(&v["slots"]),
        num(&v["waiting"]),
        num(&v["queued"])
    );
    let ups = v["uploads"].as_array().cloned().unwrap_or_default();
    if ups.is_empty() {
        let _ = writeln!(o, "no uploads yet");
    } else {
        let _ = writeln!(
            o,
            "{:<21}  {:>9}  {:>9}  {:>5}  {:<8}  name",
            "peer", "sent", "size", "reqs", "state"
        );
        for u in ups {
            let state = if u["active"].as_bool() == Some(true) {
                "sending"
            } else if u["complete"].as_bool() == Some(true) {
                "complete"
            } else {
                "partial"
            };
            let _ = writeln!(
                o,
                "{:<21}  {:>9}  {:>9}  {:>5}  {:<8}  {}",
                str_of(&u["peer"]),
                human(num(&u["bytes"])),
                human(num(&u["size"])),
                num(&u["requests"]),
                state,
                str_of(&u["name"])
            );
        }
    }
    let peers = v["peers"].as_array().cloned().unwrap_or_default();
    if peers.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "{:<21}  {:<24}  {:>5}  {:>10}  {:>10}  {:>9}  {:>9}",
        "downloader", "slot", "place", "gives us", "takes", "given", "taken"
    );
    for p in peers {
        let slot = if p["choked"].as_bool() == Some(true) {
            "choked".to_string()
        } else {
            match p["reason"].as_str() {
                Some("reciprocal") => "unchoked: gives us most".into(),
                Some("seed") => "unchoked: takes fastest".into(),
                Some("optimistic") => "unchoked: optimistic".into(),
                _ => "unchoked".into(),
            }
        };
        let place = p["position"].as_u64().map_or("-".into(), |n| n.to_string());
        let _ = writeln!(
            o,
            "{:<21}  {:<24}  {:>5}  {:>10}  {:>10}  {:>9}  {:>9}",
            str_of(&p["peer"]),
            slot,
            place,
            format!("{}/s", human(num(&p["rate_in"]))),
            format!("{}/s", human(num(&p["rate_out"]))),
            human(num(&p["bytes_in"])),
            human(num(&p["bytes_out"]))
        );
    }
}

/// What `servent downloads` does.
pub enum DownloadsAction {
    List,
    Pause(u64),
    Resume(u64),
    Cancel(u64),
    Clear,
}

pub async fn downloads(
    s: &Settings,
    action: DownloadsAction,
    json_out: bool,
) -> Result<(), String> {
    let c = client(s)?;
    let v = match action {
        DownloadsAction::List => c.get("/api/downloads").await,
        DownloadsAction::Pause(id) => {
            c.post(&format!("/api/downloads/{id}/pause"), &json!({}))
                .await
        }
        DownloadsAction::Resume(id) => {
            c.post(&format!("/api/downloads/{id}/resume"), &json!({}))
                .await
        }
        DownloadsAction::Cancel(id) => c.delete(&format!("/api/downloads/{id}")).await,
        DownloadsAction::Clear => {
            let v = c
                .post("/api/downloads/clear", &json!({}))
                .await
                .map_err(|e| explain(e, s))?;
            if json_out {
                return print_json(&v);
            }
            let n = num(&v["cleared"]);
            println!(
                "cleared {} from the list",
                crate::text::count(n, "finished download", "finished downloads")
            );
            return Ok(());
        }
    }
    .map_err(|e| explain(e, s))?;
    if json_out {
        return print_json(&v);
    }
    let list = match v {
        Value::Array(a) => a,
        one => vec![one],
    };
    if list.is_empty() {
        println!("no downloads");
        return Ok(());
    }
    println!(
        "{:>4}  {:<11}  {:>4}  {:>9}  {:>9}  {:>6}  name",
        "id", "state", "done", "size", "rate", "eta"
    );
    for d in list {
        let size = num(&d["size"]);
        let pct = (num(&d["bytes"]) * 100)
            .checked_div(size)
            .map_or("-".into(), |p| format!("{p}%"));
        let eta = d["eta_secs"].as_u64().map_or("-".into(), duration);
        let mut name = str_of(&d["name"]).to_string();
        if let Some(e) = d["error"].as_str() {
            name.push_str(&format!("  ({e})"));
        }
        println!(
            "{:>4}  {:<11}  {:>4}  {:>9}  {:>9}  {:>6}  {name}",
            num(&d["id"]),
            str_of(&d["state"]),
            pct,
            human(size),
            format!("{}/s", human(num(&d["rate_bps"]))),
            eta
        );
        // The swarm at work: the chunk map, then each source with what it gave.
        let chunks = str_of(&d["chunks"]);
        let state = str_of(&d["state"]);
        if !chunks.is_empty() && (state == "downloading" || state == "paused") {
            println!("      [{chunks}]  # held  > in flight  . missing");
            for src in d["swarm"].as_array().into_iter().flatten() {
                let mut kind = Vec::new();
                if src["partial"].as_bool() == Some(true) {
                    kind.push("partial");
                }
                if src["from_mesh"].as_bool() == Some(true) {
                    kind.push("from the mesh");
                }
                println!(
                    "      {:<21}  {:>9}  {:<7}  {}",
                    str_of(&src["addr"]),
                    human(num(&src["bytes"])),
                    str_of(&src["state"]),
                    kind.join(", ")
                );
            }
        }
    }
    Ok(())
}

/// A daemon to use for `search` and `get`, if one answers with our token.
pub async fn running(s: &Settings) -> Option<Client> {
    let c = client(s).ok()?;
    c.token.as_ref()?;
    c.get("/api").await.ok().map(|_| c)
}

/// `servent search` through the daemon: start, stream for `wait`, print like the one-shot.
/// Follows a search in the daemon for `wait`, or until `stop` receives (then the search is
/// stopped in the daemon, and what it found so far printed).
pub async fn search(
    c: &Client,
    words: &str,
    wait: Duration,
    stop: async_std::channel::Receiver<()>,
    json_out: bool,
) -> Result<(), String> {
    let started = c
        .post("/api/searches", &json!({ "query": words }))
        .await
        .map_err(|e| e.to_string())?;
    let id = num(&started["id"]);
    eprintln!("searching through the running servent at {}…", c.addr);
    let mut seen = std::collections::HashSet::new();
    let path = format!("/api/searches/{id}/stream");
    let follow = c.stream(&path, |g| {
        let urn = str_of(&g["urn"]).to_string();
        if seen.insert(urn.clone()) && !json_out {
            println!(
                "+ {}  ({}, {urn})",
                str_of(&g["name"]),
                human(num(&g["size"]))
            );
        }
        true
    });
    // The stream runs until the search stops; we stop reading after `wait`.
    let stopped = futures_lite::future::or(
        async {
            let _ = async_std::future::timeout(wait, follow).await;
            false
        },
        async {
            let _ = stop.recv().await;
            true
        },
    )
    .await;
    if stopped {
        eprintln!("\nstopped");
    }
    let detail = c
        .get(&format!("/api/searches/{id}"))
        .await
        .map_err(|e| e.to_string())?;
    let _ = c.delete(&format!("/api/searches/{id}")).await;
    let results = detail["results"].as_array().cloned().unwrap_or_default();
    if json_out {
        return print_json(&Value::Array(results));
    }
    println!();
    if results.is_empty() {
        println!("no results");
        return Ok(());
    }
    println!("{:>7}  {:>9}  {:<50}  urn", "sources", "size", "name");
    for r in results {
        println!(
            "{:>7}  {:>9}  {:<50}  {}",
            r["sources"].as_array().map_or(0, Vec::len),
            human(num(&r["size"])),
            str_of(&r["name"]),
            str_of(&r["urn"])
        );
    }
    Ok(())
}

/// `servent get` through the daemon: add the download and follow it to the end.
pub async fn get(c: &Client, target: &str, json_out: bool) -> Result<(), String> {
    let body = if target.trim().starts_with("magnet:") {
        json!({ "magnet": target })
    } else {
        json!({ "urn": target })
    };
    // A download of this file already running: follow it rather than refuse.
    let urn = crate::cli::search::parse_link(target).map(|l| l.urn.to_string());
    let list = c.get("/api/downloads").await.map_err(|e| e.to_string())?;
    let running = list.as_array().and_then(|a| {
        a.iter().find(|d| {
            Ok(str_of(&d["urn"]).to_string()) == urn
                && !matches!(str_of(&d["state"]), "done" | "failed" | "cancelled")
        })
    });
    let id = match running {
        Some(d) => {
            let id = num(&d["id"]);
            eprintln!(
                "{} is already downloading in the running servent at {} (download {id}); \
                 following it (Ctrl-C stops watching, not the download)",
                str_of(&d["name"]),
                c.addr
            );
            id
        }
        None => {
            let added = c
                .post("/api/downloads", &body)
                .await
                .map_err(|e| e.to_string())?;
            let id = num(&added["id"]);
            eprintln!(
                "download {id} added to the running servent at {} (Ctrl-C stops watching, \
                 not the download)",
                c.addr
            );
            id
        }
    };
    let mut err = std::io::stderr();
    let started = Instant::now();
    loop {
        let d = c
            .get(&format!("/api/downloads/{id}"))
            .await
            .map_err(|e| e.to_string())?;
        let size = num(&d["size"]);
        let bytes = num(&d["bytes"]);
        let state = str_of(&d["state"]).to_string();
        if !json_out {
            let _ = write!(
                err,
                "\r{}: {state} {:>3}%  {} of {}  {}/s  ETA {}  {}   ",
                str_of(&d["name"]),
                (bytes * 100).checked_div(size).unwrap_or(0),
                human(bytes),
                human(size),
                human(num(&d["rate_bps"])),
                d["eta_secs"].as_u64().map_or("?".into(), duration),
                crate::text::count(num(&d["sources"]), "source", "sources"),
            );
            let _ = err.flush();
        }
        match state.as_str() {
            "done" => {
                if json_out {
                    return print_json(&d);
                }
                let _ = writeln!(err);
                println!("{}", str_of(&d["path"]));
                return Ok(());
            }
            "failed" | "cancelled" => {
                let _ = writeln!(err);
                if json_out {
                    print_json(&d)?;
                }
                return Err(format!(
                    "download {id} {state}: {} (after {})",
                    d["error"].as_str().unwrap_or("stopped"),
                    duration(started.elapsed().as_secs())
                ));
            }
            _ => async_std::task::sleep(PROGRESS_EVERY).await,
        }
    }
}
