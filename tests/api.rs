//! The local HTTP API over real sockets on 127.0.0.1: the token and Host guards, the JSON shape
//! of every endpoint, a search that finds a file shared by another node, downloads that reach
//! `done` with the right bytes, pause, resume and cancel, and `/metrics`.

mod common;

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use hyper::Method;
use serde_json::{Value, json};
use servent::control::client::Client;
use servent::control::{Control, ControlConfig};
use servent::handshake::Role;
use servent::net::NodeConfig;
use servent::servent::{Servent, ServentConfig};
use servent::wire::Sha1Urn;

fn share_dir(tag: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let d = temp_dir(tag);
    std::fs::create_dir_all(&d).unwrap();
    for (name, data) in files {
        std::fs::write(d.join(name), data).unwrap();
    }
    d
}

async fn servent(role: Role, peers: &[SocketAddrV4], shares: Vec<PathBuf>) -> Servent {
    let mut n = NodeConfig::new("127.0.0.1:0".parse().unwrap(), temp_dir("api-node"));
    n.role = role;
    n.peers = peers.to_vec();
    // Room for one more than given, so a peer added through the API is dialled.
    n.want_ultrapeers = Some(peers.len() + 1);
    n.accept_private = true;
    n.tick = Duration::from_millis(100);
    let mut cfg = ServentConfig::new(n);
    cfg.shares = shares;
    cfg.firewalled = Some(false);
    Servent::start(cfg).await.unwrap()
}

/// The API of `s` on a free port, and a client holding its token.
async fn control(s: &Servent) -> (Arc<Control>, Client) {
    let ctl = Control::start(
        s.clone(),
        ControlConfig {
            api: "127.0.0.1:0".parse().unwrap(),
            download_dir: temp_dir("api-downloads"),
            token_file: None,
        },
    )
    .await
    .unwrap();
    let token = std::fs::read_to_string(s.data_dir().join("api-token")).unwrap();
    let client = Client::new(ctl.addr(), Some(token.trim().to_string()));
    (ctl, client)
}

/// The JSON with every leaf replaced by its type's name: pins field names and types.
fn shape(v: &Value) -> Value {
    match v {
        Value::Null => json!("null"),
        Value::Bool(_) => json!("bool"),
        Value::Number(_) => json!("number"),
        Value::String(_) => json!("string"),
        Value::Array(a) => Value::Array(a.iter().take(1).map(shape).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
    }
}

/// Polls download `id` until `pred` holds for it.
async fn download_until(c: &Client, id: u64, pred: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..400 {
        let all = c.get("/api/downloads").await.unwrap();
        if let Some(d) = all
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == json!(id))
        {
            last = d.clone();
            if pred(d) {
                return last;
            }
        }
        async_std::task::sleep(Duration::from_millis(50)).await;
    }
    panic!("download {id} never got there: {last}");
}

#[async_std::test]
async fn every_api_request_needs_the_token_and_the_page_does_not() {
    let s = servent(Role::Leaf, &[], vec![]).await;
    let (ctl, c) = control(&s).await;
    let none = Client::new(ctl.addr(), None);
    let wrong = Client::new(ctl.addr(), Some("0".repeat(64)));
    for path in ["/api", "/api/status", "/api/connections", "/metrics"] {
        for client in [&none, &wrong] {
            let r = client.send(Method::GET, path, None).await.unwrap();
            assert_eq!(r.status, 401, "{path}");
            assert!(
                r.json()["error"].as_str().unwrap().contains("Bearer"),
                "{}",
                r.text()
            );
        }
        assert_eq!(c.send(Method::GET, path, None).await.unwrap().status, 200);
    }
    // The page holds no data and needs no token.
    let page = none.send(Method::GET, "/", None).await.unwrap();
    assert_eq!(page.status, 200);
    assert!(
        page.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(page.headers["cache-control"], "no-store");
    assert!(page.text().contains("<html"));
    for (path, ty) in [("/app.js", "text/javascript"), ("/style.css", "text/css")] {
        let r = none.send(Method::GET, path, None).await.unwrap();
        assert_eq!(r.status, 200);
        assert!(r.headers["content-type"].to_str().unwrap().starts_with(ty));
    }
    let r = none.send(Method::GET, "/nothing", None).await.unwrap();
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].is_string());
}

#[async_std::test]
async fn state_changing_requests_without_the_token_change_nothing() {
    let up = servent(Role::Ultrapeer, &[], vec![]).await;
    let s = servent(Role::Leaf, &[up.node().listen_addr()], vec![]).await;
    wait_links(s.node(), 1).await;
    let (ctl, c) = control(&s).await;
    let none = Client::new(ctl.addr(), None);
    let urn = Sha1Urn::digest(b"x").to_string();
    let attempts: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::POST,
            "/api/searches".into(),
            Some(json!({"query": "jazz"})),
        ),
        (
            Method::POST,
            "/api/downloads".into(),
            Some(json!({"urn": urn})),
        ),
        (
            Method::POST,
            "/api/peers".into(),
            Some(json!({"addr": "127.0.0.1:9"})),
        ),
        (Method::DELETE, "/api/peers/1".into(), None),
        (Method::POST, "/api/shares/rescan".into(), None),
    ];
    for (m, path, body) in &attempts {
        let r = none.send(m.clone(), path, body.as_ref()).await.unwrap();
        assert_eq!(r.status, 401, "{m} {path}");
    }
    assert_eq!(c.get("/api/searches").await.unwrap(), json!([]));
    assert_eq!(c.get("/api/downloads").await.unwrap(), json!([]));
    assert_eq!(s.node().connections().len(), 1, "the link is still up");
}

#[async_std::test]
async fn a_foreign_host_header_is_refused_even_with_the_token() {
    let s = servent(Role::Leaf, &[], vec![]).await;
    let (ctl, c) = control(&s).await;
    let port = ctl.addr().port();
    for host in [
        format!("evil.example:{port}"),
        format!("127.0.0.1:{}", port.wrapping_add(1)),
        "localhost".to_string(),
    ] {
        let mut bad = c.clone();
        bad.host = Some(host.clone());
        for path in ["/api/status", "/"] {
            let r = bad.send(Method::GET, path, None).await.unwrap();
            assert_eq!(r.status, 421, "{host} {path}");
            assert!(
                r.json()["error"]
                    .as_str()
                    .unwrap()
                    .contains("DNS rebinding")
            );
        }
    }
    for name in [format!("localhost:{port}"), format!("[::1]:{port}")] {
        let mut local = c.clone();
        local.host = Some(name.clone());
        assert_eq!(
            local
                .send(Method::GET, "/api/status", None)
                .await
                .unwrap()
                .status,
            200,
            "{name}"
        );
    }
    // Two Host headers, one of them ours: refused, not guessed at.
    let mut raw = async_std::net::TcpStream::connect(ctl.addr())
        .await
        .unwrap();
    raw.write_all(
        format!(
            "GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: evil.example\r\n\
             Authorization: Bearer {}\r\nConnection: close\r\n\r\n",
            ctl.token()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    raw.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
}

#[async_std::test]
async fn the_token_file_is_fresh_private_and_matches() {
    use std::os::unix::fs::PermissionsExt;
    let s = servent(Role::Leaf, &[], vec![]).await;
    let (ctl, _) = control(&s).await;
    let path = s.data_dir().join("api-token");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let first = std::fs::read_to_string(&path).unwrap();
    assert_eq!(first.trim(), ctl.token());
    assert_eq!(first.trim().len(), 64);
    assert!(
        ctl.page_url()
            .ends_with(&format!("/#token={}", ctl.token()))
    );
    // A restart writes a new one; the old one no longer opens the API.
    let (ctl2, c2) = control(&s).await;
    assert_ne!(ctl2.token(), ctl.token());
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let old = Client::new(ctl2.addr(), Some(ctl.token().to_string()));
    assert_eq!(
        old.send(Method::GET, "/api", None).await.unwrap().status,
        401
    );
    assert_eq!(
        c2.send(Method::GET, "/api", None).await.unwrap().status,
        200
    );
}

#[async_std::test]
async fn status_connections_and_peers_have_their_documented_shape() {
    let up = servent(Role::Ultrapeer, &[], vec![]).await;
    let s = servent(Role::Leaf, &[up.node().listen_addr()], vec![]).await;
    wait_links(s.node(), 1).await;
    let (ctl, c) = control(&s).await;

    let endpoints = c.get("/api").await.unwrap();
    assert_eq!(
        shape(&endpoints),
        json!({"endpoints": [{"method": "string", "path": "string", "description": "string"}]})
    );
    let paths: Vec<&str> = endpoints["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    for p in ["/api/status", "/api/searches/{id}/stream", "/metrics"] {
        assert!(paths.contains(&p), "{p} listed");
    }

    let st = c.get("/api/status").await.unwrap();
    let mut want: Value = json!({
        "version": "string", "servent_guid": "string", "role": "string",
        "uptime_secs": "number", "listen": "string", "api": "string",
        // Its peer said where it sees us, and reached us.
        "firewalled": {"firewalled": "bool", "reason": "string", "external": "string",
                       "external_votes": "number", "reached_by": "string"},
        "shares": {"files": "number", "bytes": "number"},
        "transfers": {"uploads_active": "number", "downloads_active": "number",
                      "bytes_uploaded": "number", "bytes_uploaded_partial": "number",
                      "bytes_downloaded": "number", "upload_limit_bps": "number",
                      "download_limit_bps": "number"},
        // Exactly the overlay's counters, all numbers.
        "stats": shape(&serde_json::to_value(s.node().stats()).unwrap())
    });
    assert!(
        want["stats"]
            .as_object()
            .unwrap()
            .values()
            .all(|t| t == "number")
    );
    for k in [
        "received",
        "queries_forwarded",
        "hits_routed",
        "pushes_routed",
    ] {
        assert!(want["stats"].get(k).is_some(), "{k}");
    }
    // `needed` is words when the overlay wants more ultrapeers, else null.
    let needed = &st["reputation"]["needed"];
    assert!(needed.is_null() || needed.is_string(), "{needed}");
    want["reputation"] = json!({
        "score": "number", "threshold": "number", "eligible": "bool",
        "parts": [{"name": "string", "value": "number", "max": "number", "detail": "string"}],
        "needed": shape(needed), "summary": "string"
    });
    assert_eq!(shape(&st), want);
    assert!(!st["reputation"]["parts"].as_array().unwrap().is_empty());
    assert_eq!(st["role"], "leaf");
    assert_eq!(st["servent_guid"], s.node().servent().to_hex());
    assert_eq!(st["listen"], s.node().listen_addr().to_string());
    assert_eq!(st["api"], ctl.addr().to_string());
    assert_eq!(st["firewalled"]["firewalled"], false);
    assert_eq!(st["firewalled"]["external"], "127.0.0.1");
    assert!(st["firewalled"]["external_votes"].as_u64() >= Some(1));
    assert!(
        st["firewalled"]["reached_by"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));

    let conns = c.get("/api/connections").await.unwrap();
    assert_eq!(
        shape(&conns),
        json!([{
            "id": "number", "peer": "string", "role": "string", "user_agent": "string",
            "outbound": "bool", "compressed": {"in": "bool", "out": "bool"},
            "queue_fill": "number", "bytes_in": "number", "bytes_out": "number",
            "connected_secs": "number"
        }])
    );
    let link = &conns[0];
    assert_eq!(link["peer"], up.node().listen_addr().to_string());
    assert_eq!(link["role"], "ultrapeer");
    assert_eq!(link["outbound"], true);
    assert_eq!(link["compressed"], json!({"in": true, "out": true}));
    // The handshake's leftovers and the QRP table at least went over the link.
    assert!(link["bytes_out"].as_u64().unwrap() > 0, "{link}");

    // A second ultrapeer, added through the API, gets dialled and kept.
    let up2 = servent(Role::Ultrapeer, &[], vec![]).await;
    let added = c
        .send(
            Method::POST,
            "/api/peers",
            Some(&json!({"addr": up2.node().listen_addr().to_string()})),
        )
        .await
        .unwrap();
    assert_eq!(added.status, 202, "{}", added.text());
    wait_links(up2.node(), 1).await;
    let bad = c
        .send(
            Method::POST,
            "/api/peers",
            Some(&json!({"addr": "no port"})),
        )
        .await
        .unwrap();
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().unwrap().contains("HOST:PORT"));
    let not_json = c
        .send(Method::POST, "/api/peers", Some(&json!(["x"])))
        .await
        .unwrap();
    assert_eq!(not_json.status, 400);

    // Disconnecting says Bye: the ultrapeer loses its leaf.
    let id = link["id"].as_u64().unwrap();
    let gone = c.delete(&format!("/api/peers/{id}")).await.unwrap();
    assert_eq!(gone, json!({"id": id, "disconnected": true}));
    let mut still = true;
    for _ in 0..200 {
        let now = c.get("/api/connections").await.unwrap();
        still = now.as_array().unwrap().iter().any(|l| l["id"] == json!(id));
        if !still {
            break;
        }
        async_std::task::sleep(Duration::from_millis(20)).await;
    }
    assert!(!still, "link {id} is gone");
    // And stays gone: the user's disconnect unpins the peer, so it is not dialled again (a
    // pinned peer would be redialled at the next tick).
    async_std::task::sleep(Duration::from_millis(1500)).await;
    let now = c.get("/api/connections").await.unwrap();
    assert!(
        !now.as_array()
            .unwrap()
            .iter()
            .any(|l| l["peer"] == link["peer"]),
        "{} was dialled again: {now}",
        link["peer"]
    );
    let missing = c
        .send(Method::DELETE, "/api/peers/999999", None)
        .await
        .unwrap();
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].is_string());
}

#[async_std::test]
async fn a_search_streams_a_file_from_another_node_and_downloads_complete() {
    let data = servent::cli::demo::sample(7, 1_500_000);
    let notes = b"jazz notes, a small file".to_vec();
    let up = servent(Role::Ultrapeer, &[], vec![]).await;
    let dir = share_dir(
        "api-share",
        &[("Free Jazz Session.ogg", &data), ("jazz notes.txt", &notes)],
    );
    let sharer = servent(Role::Leaf, &[up.node().listen_addr()], vec![dir.clone()]).await;
    let getter = servent(Role::Leaf, &[up.node().listen_addr()], vec![]).await;
    wait_links(sharer.node(), 1).await;
    wait_links(getter.node(), 1).await;
    wait_tables(up.node(), 1).await;
    let (gctl, c) = control(&getter).await;
    let (_sctl, sc) = control(&sharer).await;

    let started = c
        .send(
            Method::POST,
            "/api/searches",
            Some(&json!({"query": " jazz "})),
        )
        .await
        .unwrap();
    assert_eq!(started.status, 201, "{}", started.text());
    let started = started.json();
    assert_eq!(shape(&started), json!({"id": "number", "query": "string"}));
    assert_eq!(started["query"], "jazz");
    let sid = started["id"].as_u64().unwrap();

    // The stream gives each file as its hits arrive.
    let mut seen: Vec<Value> = Vec::new();
    let stream_path = format!("/api/searches/{sid}/stream");
    let read = c.stream(&stream_path, |g| {
        seen.push(g);
        seen.len() < 2
    });
    async_std::future::timeout(Duration::from_secs(20), read)
        .await
        .expect("two files streamed")
        .unwrap();
    assert_eq!(
        shape(&seen[0]),
        json!({"urn": "string", "name": "string", "size": "number",
               "sources": [{"addr": "string", "servent": "string", "push": "bool"}]})
    );
    let ogg = seen
        .iter()
        .find(|g| g["name"] == "Free Jazz Session.ogg")
        .expect("the ogg streamed");
    let urn = Sha1Urn::digest(&data).to_string();
    assert_eq!(ogg["urn"], urn);
    assert_eq!(ogg["size"], data.len() as u64);
    assert_eq!(
        ogg["sources"][0]["servent"],
        sharer.node().servent().to_hex()
    );

    // Readers that go away free their place: more come and go than may read at once.
    for _ in 0..(servent::control::searches::MAX_READERS * 2) {
        let mut got = 0;
        let once = c.stream(&stream_path, |_| {
            got += 1;
            false
        });
        async_std::future::timeout(Duration::from_secs(10), once)
            .await
            .expect("the known files come at once")
            .unwrap();
        assert_eq!(got, 1);
    }

    let list = c.get("/api/searches").await.unwrap();
    assert_eq!(
        shape(&list),
        json!([{"id": "number", "query": "string", "running": "bool",
                "files": "number", "sources": "number"}])
    );
    assert_eq!(list[0]["files"], 2);
    assert_eq!(list[0]["running"], true);
    let detail = c.get(&format!("/api/searches/{sid}")).await.unwrap();
    assert_eq!(
        shape(&detail),
        json!({"id": "number", "query": "string", "running": "bool",
               "results": [{"urn": "string", "name": "string", "size": "number",
                            "sources": [{"addr": "string", "servent": "string",
                                         "push": "bool"}]}]})
    );
    assert_eq!(detail["results"].as_array().unwrap().len(), 2);

    // A download by URN alone looks for sources first, then completes.
    let added = c
        .send(Method::POST, "/api/downloads", Some(&json!({"urn": urn})))
        .await
        .unwrap();
    assert_eq!(added.status, 201, "{}", added.text());
    let added = added.json();
    let did = added["id"].as_u64().unwrap();
    assert_eq!(added["state"], "searching");
    let dup = c
        .send(Method::POST, "/api/downloads", Some(&json!({"urn": urn})))
        .await
        .unwrap();
    assert_eq!(dup.status, 409, "{}", dup.text());
    let done = download_until(&c, did, |d| {
        d["state"] != "searching" && d["state"] != "downloading"
    })
    .await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(
        shape(&done),
        json!({"id": "number", "urn": "string", "name": "string", "size": "number",
               "state": "string", "bytes": "number", "rate_bps": "number", "eta_secs": "null",
               "sources": "number", "path": "string", "error": "null",
               "swarm": [{"addr": "string", "bytes": "number", "partial": "bool",
                          "from_mesh": "bool", "state": "string"}],
               "chunks": "string", "verified": "number", "from_partial": "number"})
    );
    assert_eq!(done["bytes"], data.len() as u64);
    assert_eq!(done["name"], "Free Jazz Session.ogg");
    let path = PathBuf::from(done["path"].as_str().unwrap());
    assert_eq!(std::fs::read(&path).unwrap(), data);

    // A download from a search's results uses its sources at once.
    let nurn = Sha1Urn::digest(&notes).to_string();
    let from_search = c
        .post("/api/downloads", &json!({"search": sid, "urn": nurn}))
        .await
        .unwrap();
    assert_eq!(from_search["state"], "downloading");
    let nid = from_search["id"].as_u64().unwrap();
    let ndone = download_until(&c, nid, |d| d["state"] == "done" || d["state"] == "failed").await;
    assert_eq!(ndone["state"], "done", "{ndone}");
    assert_eq!(
        std::fs::read(ndone["path"].as_str().unwrap()).unwrap(),
        notes
    );
    let unknown = c
        .send(
            Method::POST,
            "/api/downloads",
            Some(&json!({"search": sid, "urn": Sha1Urn::digest(b"nothing").to_string()})),
        )
        .await
        .unwrap();
    assert_eq!(unknown.status, 404);
    let bad = c
        .send(
            Method::POST,
            "/api/downloads",
            Some(&json!({"urn": "sha1:x"})),
        )
        .await
        .unwrap();
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().unwrap().contains("urn:sha1"));

    // Stopping a search ends its stream and keeps its results.
    let stopped = c.delete(&format!("/api/searches/{sid}")).await.unwrap();
    assert_eq!(stopped, json!({"id": sid, "running": false}));
    let mut after = 0;
    async_std::future::timeout(
        Duration::from_secs(5),
        c.stream(&format!("/api/searches/{sid}/stream"), |_| {
            after += 1;
            true
        }),
    )
    .await
    .expect("a stopped search's stream ends")
    .unwrap();
    assert_eq!(after, 2, "the known files, then the end");
    assert_eq!(
        c.send(Method::GET, "/api/searches/424242", None)
            .await
            .unwrap()
            .status,
        404
    );

    // The sharer's side: its uploads and its shares.
    let ups = sc.get("/api/uploads").await.unwrap();
    assert_eq!(ups["policy"], "tit-for-tat");
    assert_eq!(
        shape(&ups["uploads"]),
        json!([{"peer": "string", "name": "string", "bytes": "number", "size": "number",
                "requests": "number", "started_secs": "number", "active": "bool",
                "complete": "bool"}])
    );
    // One upload per downloader and file, however many range requests it took.
    let jazz: Vec<&Value> = ups["uploads"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["name"] == "Free Jazz Session.ogg")
        .collect();
    assert_eq!(jazz.len(), 1, "{ups}");
    assert_eq!(jazz[0]["bytes"].as_u64().unwrap(), data.len() as u64);
    assert_eq!(jazz[0]["complete"], true);
    let peers = ups["peers"].as_array().unwrap();
    assert!(!peers.is_empty(), "{ups}");
    assert_eq!(
        shape(&ups["peers"][0])
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        [
            "bytes_in",
            "bytes_out",
            "choked",
            "peer",
            "position",
            "rate_in",
            "rate_out",
            "reason"
        ]
    );
    // What it took of all files.
    assert!(
        peers[0]["bytes_out"].as_u64().unwrap() >= data.len() as u64,
        "{ups}"
    );
    // The same, as `servent uploads` prints it.
    let home = temp_dir("cli-uploads");
    std::fs::create_dir_all(&home).unwrap();
    let out = bin(&home)
        .args(["uploads", "--api", &_sctl.addr().to_string(), "--data-dir"])
        .arg(sharer.data_dir())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(table.starts_with("policy tit-for-tat: "), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains("Free Jazz Session.ogg") && l.contains("complete")),
        "{table}"
    );
    assert!(
        table.contains("unchoked") || table.contains("choked"),
        "{table}"
    );
    let shares = sc.get("/api/shares").await.unwrap();
    assert_eq!(
        shape(&shares),
        json!({"folders": ["string"], "files": [{"name": "string", "size": "number",
                                                  "urn": "string", "tth": "string"}]})
    );
    assert_eq!(shares["files"].as_array().unwrap().len(), 2);
    std::fs::write(dir.join("more.txt"), b"more").unwrap();
    let rescanned = sc.post("/api/shares/rescan", &json!({})).await.unwrap();
    assert_eq!(rescanned["files"].as_array().unwrap().len(), 3);

    let st = c.get("/api/status").await.unwrap();
    assert_eq!(st["transfers"]["downloads_active"], 0);
    drop(gctl);
}

#[async_std::test]
async fn a_download_pauses_resumes_and_cancels() {
    let data = servent::cli::demo::sample(9, 600_000);
    let urn = Sha1Urn::digest(&data).to_string();
    let up = servent(Role::Ultrapeer, &[], vec![]).await;
    let getter = servent(Role::Leaf, &[up.node().listen_addr()], vec![]).await;
    wait_links(getter.node(), 1).await;
    let (ctl, c) = control(&getter).await;

    // Nobody shares the file yet, so the download is still looking for sources.
    let d = c
        .post("/api/downloads", &json!({"urn": urn}))
        .await
        .unwrap();
    let id = d["id"].as_u64().unwrap();
    assert_eq!(d["state"], "searching");
    let paused = c
        .post(&format!("/api/downloads/{id}/pause"), &json!({}))
        .await
        .unwrap();
    assert_eq!(paused["state"], "paused");
    let again = c
        .send(Method::POST, &format!("/api/downloads/{id}/pause"), None)
        .await
        .unwrap();
    assert_eq!(again.status, 409);
    assert!(again.json()["error"].as_str().unwrap().contains("paused"));

    // Now a node shares it; resuming finds it and completes.
    let dir = share_dir("api-share-late", &[("late.bin", &data)]);
    let sharer = servent(Role::Leaf, &[up.node().listen_addr()], vec![dir]).await;
    wait_links(sharer.node(), 1).await;
    wait_tables(up.node(), 1).await;
    let resumed = c
        .post(&format!("/api/downloads/{id}/resume"), &json!({}))
        .await
        .unwrap();
    assert_eq!(resumed["state"], "searching");
    let done = download_until(&c, id, |d| d["state"] == "done" || d["state"] == "failed").await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(std::fs::read(done["path"].as_str().unwrap()).unwrap(), data);

    // Cancel: of a download still looking, and what it leaves (nothing).
    let other = Sha1Urn::digest(b"nobody has this").to_string();
    let d2 = c
        .post("/api/downloads", &json!({"urn": other}))
        .await
        .unwrap();
    let id2 = d2["id"].as_u64().unwrap();
    let cancelled = c.delete(&format!("/api/downloads/{id2}")).await.unwrap();
    assert_eq!(cancelled["state"], "cancelled");
    let resume_cancelled = c
        .send(Method::POST, &format!("/api/downloads/{id2}/resume"), None)
        .await
        .unwrap();
    assert_eq!(resume_cancelled.status, 409);
    let mut files = names_in(ctl.download_dir());
    for _ in 0..200 {
        if files == ["late.bin"] {
            break;
        }
        async_std::task::sleep(Duration::from_millis(20)).await;
        files = names_in(ctl.download_dir());
    }
    assert_eq!(files, ["late.bin"], "only the finished file");
    assert_eq!(
        c.send(Method::DELETE, "/api/downloads/777", None)
            .await
            .unwrap()
            .status,
        404
    );
}

#[async_std::test]
async fn metrics_are_prometheus_text() {
    let up = servent(Role::Ultrapeer, &[], vec![]).await;
    let dir = share_dir("api-metrics", &[("a.txt", b"abc"), ("b.txt", b"defg")]);
    let s = servent(Role::Leaf, &[up.node().listen_addr()], vec![dir]).await;
    wait_links(s.node(), 1).await;
    let (_ctl, c) = control(&s).await;
    let r = c.send(Method::GET, "/metrics", None).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text();
    let mut samples = std::collections::HashMap::new();
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let name = it.next().unwrap();
            let kind = it.next().unwrap();
            assert!(["counter", "gauge"].contains(&kind), "{line}");
            assert!(
                typed.insert(name.to_string()),
                "one TYPE per family: {line}"
            );
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        // name{labels} value
        let (key, value) = line.rsplit_once(' ').expect("a sample is name and value");
        let family = key.split('{').next().unwrap();
        assert!(
            family
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_'),
            "{line}"
        );
        assert!(typed.contains(family), "TYPE before samples: {line}");
        let v: f64 = value.parse().expect("a number");
        samples.insert(key.to_string(), v);
    }
    assert_eq!(samples["servent_shared_files"], 2.0);
    assert_eq!(samples["servent_shared_bytes"], 7.0);
    assert_eq!(samples["servent_connections{role=\"ultrapeer\"}"], 1.0);
    assert_eq!(samples["servent_connections{role=\"leaf\"}"], 0.0);
    assert!(samples.contains_key("servent_uptime_seconds"));
    assert!(samples.contains_key("servent_messages_received_total"));
    assert!(samples.contains_key("servent_downloads{state=\"done\"}"));
    assert!(samples.contains_key("servent_uploads_active"));
}

fn line_for<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in:\n{out}"))
}

#[test]
fn settings_come_from_flag_then_environment_then_file_then_default() {
    let home = temp_dir("cfg-home");
    std::fs::create_dir_all(&home).unwrap();
    let file = home.join("servent.toml");
    std::fs::write(
        &file,
        "# a comment\nmax_peers = 10\nmax_leaves = 11\nrole = \"ultrapeer\"\nupload_slots = 2\n",
    )
    .unwrap();
    let run = |env: &[(&str, &str)], flags: &[&str]| {
        let mut c = bin(&home);
        c.args(["run", "--check-config", "--config", file.to_str().unwrap()]);
        c.args(flags);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let f = file.display().to_string();
    let only_file = run(&[], &[]);
    assert_eq!(
        line_for(&only_file, "max_peers"),
        format!("max_peers = 10  # file {f}")
    );
    assert_eq!(
        line_for(&only_file, "role"),
        format!("role = \"ultrapeer\"  # file {f}")
    );
    assert_eq!(
        line_for(&only_file, "compress"),
        "compress = true  # default"
    );
    assert_eq!(
        line_for(&only_file, "api"),
        "api = \"127.0.0.1:6347\"  # default"
    );
    let env = [("SERVENT_MAX_PEERS", "20"), ("SERVENT_COMPRESS", "false")];
    let with_env = run(&env, &[]);
    assert_eq!(
        line_for(&with_env, "max_peers"),
        "max_peers = 20  # environment SERVENT_MAX_PEERS"
    );
    assert_eq!(
        line_for(&with_env, "compress"),
        "compress = false  # environment SERVENT_COMPRESS"
    );
    assert_eq!(
        line_for(&with_env, "max_leaves"),
        format!("max_leaves = 11  # file {f}")
    );
    let with_flag = run(
        &env,
        &["--max-peers", "30", "--api", "off", "--role", "leaf"],
    );
    assert_eq!(line_for(&with_flag, "max_peers"), "max_peers = 30  # flag");
    assert_eq!(line_for(&with_flag, "api"), "api = \"off\"  # flag");
    assert_eq!(line_for(&with_flag, "role"), "role = \"leaf\"  # flag");
    assert_eq!(
        line_for(&with_flag, "compress"),
        "compress = false  # environment SERVENT_COMPRESS"
    );
    assert_eq!(
        line_for(&with_flag, "upload_slots"),
        format!("upload_slots = 2  # file {f}")
    );

    // The default file is read when present.
    let dir = home.join("servent");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.toml"), "max_leaves = 5\n").unwrap();
    let out = bin(&home).args(["run", "--check-config"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        line_for(&text, "max_leaves").starts_with("max_leaves = 5  # file "),
        "{text}"
    );
}

#[test]
fn bad_settings_are_refused_with_file_and_line() {
    let home = temp_dir("cfg-bad");
    std::fs::create_dir_all(&home).unwrap();
    let check = |text: &str, env: &[(&str, &str)]| {
        let file = home.join("bad.toml");
        std::fs::write(&file, text).unwrap();
        let mut c = bin(&home);
        c.args(["run", "--check-config", "--config", file.to_str().unwrap()]);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(out.stdout.is_empty());
        String::from_utf8(out.stderr).unwrap()
    };
    let typo = check("max_peers = 3\nlisen = \"127.0.0.1:1\"\n", &[]);
    assert!(typo.contains("bad.toml"), "{typo}");
    assert!(typo.contains("line 2"), "{typo}");
    assert!(typo.contains("unknown field `lisen`"), "{typo}");
    let value = check("\nlisten = \"nowhere\"\n", &[]);
    assert!(value.contains("bad.toml:2: listen"), "{value}");
    assert!(value.contains("not an IPv4 address"), "{value}");
    let kind = check("max_peers = \"many\"\n", &[]);
    assert!(kind.contains("line 1"), "{kind}");
    let env = check("", &[("SERVENT_UPLOAD_SLOTS", "0")]);
    assert!(env.contains("SERVENT_UPLOAD_SLOTS"), "{env}");
    let unknown_env = check("", &[("SERVENT_LISEN", "x")]);
    assert!(unknown_env.contains("no such setting"), "{unknown_env}");
    // A settings file that was asked for must exist.
    let out = bin(&home)
        .args([
            "run",
            "--check-config",
            "--config",
            "/nonexistent/servent.toml",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/servent.toml"));
}

#[test]
fn client_commands_say_when_no_servent_runs() {
    let home = temp_dir("cli-none");
    std::fs::create_dir_all(&home).unwrap();
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let api = format!("127.0.0.1:{port}");
    for cmd in [
        &["status"][..],
        &["downloads"],
        &["uploads"],
        &["peers"],
        &["peers", "--connect", "127.0.0.1:9"],
    ] {
        let out = bin(&home)
            .args(cmd)
            .args(["--api", &api, "--data-dir", home.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{cmd:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "no servent is running at {api}; start one with `servent run`"
            )),
            "{cmd:?}: {err}"
        );
    }
}

/// Stops the daemon child when the test ends, however it ends.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[async_std::test]
async fn the_cli_talks_to_a_running_daemon() {
    use std::io::BufRead;
    let data = servent::cli::demo::sample(11, 300_000);
    let urn = Sha1Urn::digest(&data).to_string();
    let share = share_dir("cli-api-share", &[("Blue Train.ogg", &data)]);
    let mut n = NodeConfig::new("127.0.0.1:0".parse().unwrap(), temp_dir("cli-api-up"));
    n.role = Role::Ultrapeer;
    n.accept_private = true;
    let mut cfg = ServentConfig::new(n);
    cfg.shares = vec![share];
    cfg.firewalled = Some(false);
    let up = Servent::start(cfg).await.unwrap();

    let home = temp_dir("cli-api-home");
    let data_dir = home.join("data");
    let dl = home.join("dl");
    std::fs::create_dir_all(&home).unwrap();
    let mut child = bin(&home)
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
            "--no-bootstrap",
            "--peer",
            &up.node().listen_addr().to_string(),
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--download-dir",
            dl.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _daemon = Daemon(child);
    let first = async_std::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        line
    })
    .await;
    let url = first
        .trim()
        .strip_prefix("open http://")
        .unwrap_or_else(|| panic!("the page address first: {first:?}"));
    let (api, token) = url.split_once("/#token=").unwrap();
    assert_eq!(
        std::fs::read_to_string(data_dir.join("api-token"))
            .unwrap()
            .trim(),
        token
    );
    let cli = |args: Vec<String>| {
        let home = home.clone();
        let api = api.to_string();
        let dd = data_dir.to_str().unwrap().to_string();
        async_std::task::spawn_blocking(move || {
            bin(&home)
                .args(&args)
                .args(["--api", &api, "--data-dir", &dd])
                .output()
                .unwrap()
        })
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    // Wait for the daemon to join the ultrapeer (which answers queries from its own share).
    let mut linked = false;
    for _ in 0..200 {
        let out = cli(args(&["peers", "--json"])).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        if v.as_array().is_some_and(|a| a.len() == 1) {
            assert_eq!(v[0]["peer"], up.node().listen_addr().to_string());
            linked = true;
            break;
        }
        async_std::task::sleep(Duration::from_millis(50)).await;
    }
    assert!(linked, "the daemon joined the ultrapeer");

    let out = cli(args(&["status", "--json"])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"]["role"], "leaf");
    assert_eq!(v["status"]["api"], api);
    assert_eq!(v["connections"].as_array().unwrap().len(), 1);
    let text = cli(args(&["status"])).await;
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("as a leaf"), "{text}");
    // The ultrapeer's Remote-IP, voted (one peer).
    assert!(
        text.contains("seen at       127.0.0.1 (by 1 peer)"),
        "{text}"
    );
    assert!(
        text.contains(&up.node().listen_addr().to_string()),
        "{text}"
    );

    // get through the daemon: the file lands in the daemon's download folder.
    let out = cli(args(&["get", &urn])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8(out.stdout).unwrap();
    assert_eq!(PathBuf::from(path.trim()), dl.join("Blue Train.ogg"));
    assert_eq!(std::fs::read(dl.join("Blue Train.ogg")).unwrap(), data);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("added to the running servent"), "{err}");

    let out = cli(args(&["downloads", "--json"])).await;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["state"], "done");
    assert_eq!(v[0]["urn"], urn);
    let table = String::from_utf8(cli(args(&["downloads"])).await.stdout).unwrap();
    assert!(
        table.contains("done") && table.contains("Blue Train.ogg"),
        "{table}"
    );

    // search through the daemon.
    let out = cli(args(&["search", "blue train", "--wait", "3", "--json"])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["urn"], urn, "{v}");
    assert_eq!(v[0]["name"], "Blue Train.ogg");

    // peers --disconnect says Bye to the link.
    let id = {
        let out = cli(args(&["peers", "--json"])).await;
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["id"].as_u64().unwrap()
    };
    let out = cli(args(&["peers", "--disconnect", &id.to_string()])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("disconnected {id}")
    );
}

/// What the stand-in source saw.
#[derive(Debug, PartialEq)]
enum Seen {
    /// A request for the file with this name.
    Asked(&'static str),
    /// A connection on which it stalled was closed by the downloader.
    Dropped(&'static str),
}

/// A source that serves `files` over HTTP. A file marked to stall sends half of the first
/// range asked for and then nothing, until the downloader hangs up; the first file stalls only
/// on its first connection.
async fn stalling_source(
    files: Vec<(&'static str, Vec<u8>, bool)>,
) -> (SocketAddrV4, async_std::channel::Receiver<Seen>) {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    let listener = async_std::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = match listener.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        _ => unreachable!("bound to IPv4"),
    };
    let (tx, rx) = async_std::channel::unbounded();
    let files = Arc::new(files);
    let stalled_once = Arc::new(std::sync::atomic::AtomicBool::new(false));
    async_std::task::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (tx, files, stalled_once) = (tx.clone(), files.clone(), stalled_once.clone());
            async_std::task::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let end = loop {
                        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break p + 4;
                        }
                        match s.read(&mut chunk).await {
                            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                            _ => return,
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    buf.drain(..end);
                    let Some((name, data, stalls)) = files
                        .iter()
                        .find(|(_, d, _)| head.contains(&Sha1Urn::digest(d).to_string()))
                    else {
                        return;
                    };
                    let range = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("range: bytes=")
                                .map(str::to_owned)
                        })
                        .and_then(|r| {
                            let (a, b) = r.trim().split_once('-')?;
                            Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?))
                        })
                        .unwrap_or((0, data.len() - 1));
                    let _ = tx.send(Seen::Asked(name)).await;
                    let body = &data[range.0..=range.1];
                    let resp = format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: \
                         bytes {}-{}/{}\r\nX-Gnutella-Content-URN: {}\r\n\r\n",
                        body.len(),
                        range.0,
                        range.1,
                        data.len(),
                        Sha1Urn::digest(data)
                    );
                    s.write_all(resp.as_bytes()).await.unwrap();
                    let first = std::ptr::eq(*name, files[0].0);
                    let stall = *stalls
                        && (!first
                            || !stalled_once.swap(true, std::sync::atomic::Ordering::SeqCst));
                    if stall {
                        let _ = s.write_all(&body[..body.len() / 2]).await;
                        // Nothing more: wait for the downloader to hang up.
                        while let Ok(n) = s.read(&mut chunk).await {
                            if n == 0 {
                                break;
                            }
                        }
                        let _ = tx.send(Seen::Dropped(name)).await;
                        return;
                    }
                    if s.write_all(body).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

async fn next_seen(rx: &async_std::channel::Receiver<Seen>) -> Seen {
    async_std::future::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("the source saw something")
        .unwrap()
}

#[async_std::test]
async fn pausing_stops_a_transfer_resuming_finishes_it_and_cancel_leaves_nothing() {
    use servent::share::SharedFile;
    use servent::share::hits::{Responder, query_hits};
    use servent::wire::FileIndex;
    let a = servent::cli::demo::sample(21, 400_000);
    let b = servent::cli::demo::sample(22, 300_000);
    let (source, seen) = stalling_source(vec![
        ("first.bin", a.clone(), true),
        ("second.bin", b.clone(), true),
    ])
    .await;
    let getter = servent(Role::Ultrapeer, &[], vec![]).await;
    let (ctl, c) = control(&getter).await;
    // A scripted ultrapeer answers the search with a hit naming the stand-in source.
    let mut peer = Peer::connect(getter.node().listen_addr(), Role::Ultrapeer, false).await;
    wait_links(getter.node(), 1).await;
    let sid = c
        .post("/api/searches", &json!({"query": "bin"}))
        .await
        .unwrap()["id"]
        .as_u64()
        .unwrap();
    let query = loop {
        let m = peer.recv(Duration::from_secs(10)).await.expect("the query");
        if m[16] == 0x80 {
            break m;
        }
    };
    let shared: Vec<SharedFile> = [("first.bin", &a), ("second.bin", &b)]
        .iter()
        .enumerate()
        .map(|(i, (name, data))| SharedFile {
            index: FileIndex(i as u32),
            path: PathBuf::new(),
            name: name.to_string(),
            size: data.len() as u64,
            mtime: 0,
            sha1: Sha1Urn::digest(data),
            tth: None,
        })
        .collect();
    let me = Responder {
        addr: source,
        speed_kbps: 1000,
        servent: servent::wire::ServentId::random(),
        firewalled: false,
        busy: false,
        uploaded: false,
        push_proxies: Vec::new(),
    };
    for payload in query_hits(
        &shared
            .iter()
            .map(servent::share::hits::Offer::from)
            .collect::<Vec<_>>(),
        &me,
    ) {
        let mut msg = query[..16].to_vec();
        msg.extend_from_slice(&[0x81, 3, 0]);
        msg.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        msg.extend_from_slice(&payload);
        peer.send(&msg).await;
    }
    let mut files = 0;
    for _ in 0..200 {
        files = c.get(&format!("/api/searches/{sid}")).await.unwrap()["results"]
            .as_array()
            .unwrap()
            .len();
        if files == 2 {
            break;
        }
        async_std::task::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(files, 2, "both files found");

    // The first file's source stalls; pausing hangs up on it.
    let urn_a = Sha1Urn::digest(&a).to_string();
    let d = c
        .post("/api/downloads", &json!({"search": sid, "urn": urn_a}))
        .await
        .unwrap();
    assert_eq!(d["state"], "downloading");
    assert_eq!(d["sources"], 1);
    let id = d["id"].as_u64().unwrap();
    assert_eq!(next_seen(&seen).await, Seen::Asked("first.bin"));
    let paused = c
        .post(&format!("/api/downloads/{id}/pause"), &json!({}))
        .await
        .unwrap();
    assert_eq!(paused["state"], "paused");
    assert_eq!(next_seen(&seen).await, Seen::Dropped("first.bin"));
    let dir = ctl.download_dir().to_path_buf();
    assert!(
        !dir.join("first.bin").exists(),
        "nothing paused is shown as done"
    );

    // Resuming asks again and finishes with the right bytes.
    let resumed = c
        .post(&format!("/api/downloads/{id}/resume"), &json!({}))
        .await
        .unwrap();
    assert_eq!(resumed["state"], "downloading");
    assert_eq!(next_seen(&seen).await, Seen::Asked("first.bin"));
    let done = download_until(&c, id, |d| d["state"] == "done" || d["state"] == "failed").await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["bytes"], a.len() as u64);
    assert_eq!(std::fs::read(dir.join("first.bin")).unwrap(), a);

    // The second file always stalls; cancelling it removes what it wrote.
    let urn_b = Sha1Urn::digest(&b).to_string();
    let d2 = c
        .post("/api/downloads", &json!({"search": sid, "urn": urn_b}))
        .await
        .unwrap();
    let id2 = d2["id"].as_u64().unwrap();
    loop {
        if next_seen(&seen).await == Seen::Asked("second.bin") {
            break;
        }
    }
    let partial: Vec<String> = names_in(&dir);
    assert!(
        partial.iter().any(|n| n.starts_with(".second.bin")),
        "a partial file while it runs: {partial:?}"
    );
    let cancelled = c.delete(&format!("/api/downloads/{id2}")).await.unwrap();
    assert_eq!(cancelled["state"], "cancelled");
    assert_eq!(next_seen(&seen).await, Seen::Dropped("second.bin"));
    let mut left = names_in(&dir);
    for _ in 0..200 {
        if left == ["first.bin"] {
            break;
        }
        async_std::task::sleep(Duration::from_millis(20)).await;
        left = names_in(&dir);
    }
    assert_eq!(left, ["first.bin"], "only the finished file is left");
}

fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[async_std::test]
async fn a_private_peer_is_refused_in_words_when_private_peers_are_off() {
    let mut n = NodeConfig::new("127.0.0.1:0".parse().unwrap(), temp_dir("api-private"));
    n.accept_private = false;
    let s = Servent::start(ServentConfig::new(n)).await.unwrap();
    let (_ctl, c) = control(&s).await;
    let r = c
        .send(
            Method::POST,
            "/api/peers",
            Some(&json!({"addr": "192.168.1.20:6346"})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("--allow-private"),
        "{}",
        r.text()
    );
    assert!(s.node().connections().is_empty());
}

/// `PATCH /api/settings` changes the rate limits at run time; nonsense is refused in words.
#[async_std::test]
async fn rate_limits_change_at_run_time() {
    let s = servent(Role::Leaf, &[], vec![]).await;
    let (_ctl, c) = control(&s).await;
    let r = c
        .send(
            Method::PATCH,
            "/api/settings",
            Some(&json!({"upload_limit": "512K", "download_limit": "4M"})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.limits(), (512 * 1024, 4 << 20));
    let now = c
        .send(Method::GET, "/api/settings", None)
        .await
        .unwrap()
        .json();
    assert_eq!(now["upload_limit"], "512K");
    assert_eq!(now["download_limit"], "4M");
    let st = c
        .send(Method::GET, "/api/status", None)
        .await
        .unwrap()
        .json();
    assert_eq!(st["transfers"]["upload_limit_bps"], 512 * 1024);
    let bad = c
        .send(
            Method::PATCH,
            "/api/settings",
            Some(&json!({"upload_limit": "fast"})),
        )
        .await
        .unwrap();
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("512K"), "{}", bad.text());
    assert_eq!(s.limits().0, 512 * 1024, "a refused change changes nothing");
    let off = c
        .send(
            Method::PATCH,
            "/api/settings",
            Some(&json!({"upload_limit": "off"})),
        )
        .await
        .unwrap();
    assert_eq!(off.status, 200);
    assert_eq!(s.limits().0, 0);
}

/// The first bytes of the answer to a whole-file GET of `urn` from `addr`, the connection kept.
async fn start_get(
    addr: SocketAddrV4,
    urn: &servent::wire::Sha1Urn,
) -> (async_std::net::TcpStream, String) {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    let mut s = async_std::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /uri-res/N2R?{urn} HTTP/1.1\r\nHost: x\r\nX-Node: 127.0.0.1:1\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut b = [0u8; 64];
    let n = async_std::future::timeout(Duration::from_secs(5), s.read(&mut b))
        .await
        .unwrap()
        .unwrap();
    (s, String::from_utf8_lossy(&b[..n]).into_owned())
}

/// Upload slots change at run time: fewer, and a second downloader waits; more, and it is
/// served.
#[async_std::test]
async fn upload_slots_change_at_run_time() {
    let data = servent::cli::demo::sample(3, 2_000_000);
    let urn = servent::wire::Sha1Urn::digest(&data);
    let s = servent(
        Role::Ultrapeer,
        &[],
        vec![share_dir("slots", &[("big.bin", &data)])],
    )
    .await;
    s.set_limits(Some(64 * 1024), None);
    let (_ctl, c) = control(&s).await;
    let patch = |v: Value| {
        let c = &c;
        async move {
            c.send(Method::PATCH, "/api/settings", Some(&v))
                .await
                .unwrap()
        }
    };
    let r = patch(json!({"upload_slots": 1})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["upload_slots"], 1);
    let addr = s.node().listen_addr();
    let (_first, head) = start_get(addr, &urn).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (_, head) = start_get(addr, &urn).await;
    assert!(head.starts_with("HTTP/1.1 503"), "one slot, taken: {head}");
    assert_eq!(patch(json!({"upload_slots": 2})).await.status, 200);
    let (_second, head) = start_get(addr, &urn).await;
    assert!(head.starts_with("HTTP/1.1 200"), "a second slot: {head}");
    let up = c
        .send(Method::GET, "/api/uploads", None)
        .await
        .unwrap()
        .json();
    assert_eq!(up["slots"], 2);
    let bad = patch(json!({"upload_slots": 0})).await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("1 to 64"), "{}", bad.text());
}
