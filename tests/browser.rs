//! The web page in a real browser: headless Chromium, driven through ChromeDriver's WebDriver
//! HTTP protocol, against servents on 127.0.0.1. A person's path through the page is replayed:
//! open the link with the token, search, see results arrive, click Download, watch the
//! progress reach 100 %, and the file's bytes on disk are compared with the shared file's.
//! Screenshots at phone and desktop widths go to `$CARGO_TARGET_TMPDIR/browser/`.
//!
//! Without /usr/bin/chromedriver the test says it skips, unless `BROWSER_TEST=require`
//! (set by CI), where a missing browser is a failure.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use servent::control::{Control, ControlConfig};
use servent::handshake::Role;
use servent::net::NodeConfig;
use servent::servent::{Servent, ServentConfig};
use servent::wire::Sha1Urn;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// Every wait in this test polls until this much time has passed; it is a bound on a broken
/// run, not a speed requirement (a loaded 2-core CI machine may be slow to start Chromium).
const DEADLINE: Duration = Duration::from_secs(90);
/// The W3C WebDriver element key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where this test's screenshots and the ChromeDriver log go.
fn out_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&d).expect("output folder");
    d
}

/// True when the browser is there; otherwise skips (false) or fails when CI requires it.
fn browser_available() -> bool {
    if Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists() {
        return true;
    }
    let required = std::env::var("BROWSER_TEST").is_ok_and(|v| v == "require");
    assert!(
        !required,
        "BROWSER_TEST=require but {CHROMEDRIVER} or {CHROMIUM} is missing: \
         install them with `apt-get install -y chromium chromium-driver`"
    );
    eprintln!(
        "skipping the browser test: {CHROMEDRIVER} or {CHROMIUM} is missing \
         (apt-get install -y chromium chromium-driver; BROWSER_TEST=require makes this a failure)"
    );
    false
}

// --- WebDriver over HTTP ----------------------------------------------------------------

/// A ChromeDriver process and one browser session. Dropping it ends the session (Chromium
/// quits), kills ChromeDriver and any Chromium left behind, and removes the profile folder,
/// also when the test fails half-way.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    profile: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Browser {
    fn start() -> Browser {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            // WebDriver errors come as JSON with 4xx/5xx; we read them rather than lose them.
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let profile = common::temp_dir("chromium-profile");
        std::fs::create_dir_all(&profile).expect("profile folder");
        // The port is free when asked; if another process takes it first, ChromeDriver exits
        // and we try another.
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let log = out_dir().join(format!("chromedriver-{port}.log"));
            let driver = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver starts");
            let base = format!("http://127.0.0.1:{port}");
            let mut b = Browser {
                driver,
                base,
                session: String::new(),
                agent: agent.clone(),
                profile: profile.clone(),
            };
            if !b.driver_ready() {
                last = format!("chromedriver on port {port} never became ready");
                continue; // Drop kills it.
            }
            match b.new_session() {
                Ok(id) => {
                    b.session = id;
                    return b;
                }
                Err(e) => last = e,
            }
        }
        panic!("could not start a browser session: {last}");
    }

    fn driver_ready(&mut self) -> bool {
        let end = Instant::now() + DEADLINE;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.driver.try_wait() {
                return false;
            }
            if let Ok(v) = self.raw("GET", "/status", None)
                && v["value"]["ready"] == json!(true)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn new_session(&self) -> Result<String, String> {
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1440,1000",
            &format!("--user-data-dir={}", self.profile.display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let v = self.raw("POST", "/session", Some(caps))?;
        v["value"]["sessionId"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no session: {v}"))
    }

    /// One WebDriver request; the JSON answer, or the error it carries in words.
    fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let resp = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, body) => self
                .agent
                .post(&url)
                .content_type("application/json")
                .send(body.unwrap_or_else(|| json!({})).to_string()),
        };
        let mut resp = resp.map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| format!("{method} {path}: {e}: {text}"))?;
        if !status.is_success() {
            return Err(format!("{method} {path}: {status}: {}", v["value"]));
        }
        Ok(v)
    }

    /// A command in this session; panics with WebDriver's words on failure.
    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        match self.raw(method, &path, body) {
            Ok(mut v) => v["value"].take(),
            Err(e) => panic!("WebDriver: {e}"),
        }
    }

    fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    fn resize(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }

    /// The elements matching a CSS selector now (maybe none).
    fn find_all(&self, css: &str) -> Vec<String> {
        let v = self.cmd(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        );
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits for the first element matching `css`.
    fn find(&self, css: &str) -> String {
        wait_for(&format!("an element matching {css}"), || {
            self.find_all(css).into_iter().next()
        })
    }

    fn click(&self, el: &str) {
        self.cmd("POST", &format!("/element/{el}/click"), Some(json!({})));
    }

    fn type_into(&self, el: &str, text: &str) {
        self.cmd(
            "POST",
            &format!("/element/{el}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn text(&self, el: &str) -> String {
        self.cmd("GET", &format!("/element/{el}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn displayed(&self, el: &str) -> bool {
        self.cmd("GET", &format!("/element/{el}/displayed"), None) == json!(true)
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page, returns its value.
    fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// Saves a PNG of the viewport to the output folder; returns its path.
    fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.cmd("GET", "/screenshot", None);
        let png = data_encoding::BASE64
            .decode(b64.as_str().expect("base64 screenshot").as_bytes())
            .expect("valid base64");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
        let p = out_dir().join(format!("{name}.png"));
        std::fs::write(&p, png).expect("screenshot written");
        eprintln!("screenshot: {}", p.display());
        p
    }

    /// Sets the window to `width` and tall enough for the whole page, then takes a screenshot.
    fn full_screenshot(&self, name: &str, width: u32) -> PathBuf {
        self.resize(width, 900);
        let v = self.js(
            "const d = document.documentElement; \
             return [d.scrollHeight, window.outerHeight - window.innerHeight, window.innerWidth];",
            json!([]),
        );
        assert_eq!(v[2], json!(width), "the window took the width asked for");
        let page = v[0].as_u64().unwrap_or(900).clamp(600, 4000);
        let frame = v[1].as_u64().unwrap_or(0).min(400);
        self.resize(width, (page + frame) as u32);
        self.screenshot(name)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = self.raw("DELETE", &path, None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        kill_left_behind(&self.profile);
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Kills, by process id, any Chromium process still using our own profile folder (one that
/// outlived its ChromeDriver because the session could not be ended).
fn kill_left_behind(profile: &Path) {
    let marker = format!("--user-data-dir={}", profile.display());
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
            continue;
        };
        if cmdline
            .split(|&b| b == 0)
            .any(|arg| arg == marker.as_bytes())
        {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    }
}

/// Polls `f` until it gives a value, within [`DEADLINE`].
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

// --- the page served alone (the harness's own check) -------------------------------------

/// Serves the three page files on 127.0.0.1 from a thread, for the sign-in check, which needs
/// no API.
fn serve_page_files() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = answer_static(stream);
        }
    });
    format!("http://{addr}")
}

fn answer_static(mut s: TcpStream) -> std::io::Result<()> {
    let mut line = String::new();
    BufReader::new(&mut s).read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/");
    let (status, kind, body) = match path {
        "/" => (
            "200 OK",
            "text/html; charset=utf-8",
            include_str!("../src/control/page/index.html"),
        ),
        "/app.js" => (
            "200 OK",
            "text/javascript; charset=utf-8",
            include_str!("../src/control/page/app.js"),
        ),
        "/style.css" => (
            "200 OK",
            "text/css; charset=utf-8",
            include_str!("../src/control/page/style.css"),
        ),
        _ => (
            "401 Unauthorized",
            "application/json",
            r#"{"error":"no API here"}"#,
        ),
    };
    let mut rest = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_millis(50)))?;
    let _ = s.read(&mut rest);
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn without_a_token_the_page_asks_for_one_and_says_where_it_is() {
    if !browser_available() {
        return;
    }
    let base = serve_page_files();
    let b = Browser::start();
    b.goto(&format!("{base}/"));
    let form = b.find("#login");
    wait_for("the sign-in form to show", || {
        b.displayed(&form).then_some(())
    });
    let text = b.text(&form);
    assert!(
        text.contains("api-token"),
        "the form says where the token is: {text}"
    );
    assert!(!b.displayed(&b.find("#app")), "the app stays hidden");
    b.screenshot("login-1440");
}

// --- the whole path, against real servents and the API ----------------------------------

/// A servent on 127.0.0.1 linked to `peers`, sharing `shares`.
async fn servent(role: Role, peers: &[SocketAddrV4], shares: Vec<PathBuf>) -> Servent {
    let mut n = NodeConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        common::temp_dir("servent"),
    );
    n.role = role;
    n.peers = peers.to_vec();
    n.want_ultrapeers = Some(peers.len());
    n.accept_private = true;
    n.tick = Duration::from_millis(100);
    let mut cfg = ServentConfig::new(n);
    cfg.shares = shares;
    cfg.firewalled = Some(false);
    Servent::start(cfg).await.expect("servent starts")
}

fn share_dir(tag: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let d = common::temp_dir(tag);
    std::fs::create_dir_all(&d).expect("share folder");
    for (name, data) in files {
        std::fs::write(d.join(name), data).expect("shared file");
    }
    d
}

/// An ultrapeer, two leaves sharing files, and the daemon: a leaf with the API.
struct Net {
    _up: Servent,
    _sharers: Vec<Servent>,
    daemon: Servent,
    control: Arc<Control>,
    downloads: PathBuf,
}

/// The file two leaves share (so it shows 2 sources), and a name a peer chose with markup in it,
/// which the page must show as text.
const BIG_NAME: &str = "Aurora Borealis Timelapse.ogv";
const ODD_NAME: &str = "aurora <img src=x onerror=alert(1)> & <b>notes.txt";

fn start_net(big: &[u8]) -> Net {
    async_std::task::block_on(async {
        let up = servent(Role::Ultrapeer, &[], vec![]).await;
        let at = [up.node().listen_addr()];
        let one = servent(
            Role::Leaf,
            &at,
            vec![share_dir(
                "share-a",
                &[(BIG_NAME, big), (ODD_NAME, b"a peer's name with markup")],
            )],
        )
        .await;
        let two = servent(
            Role::Leaf,
            &at,
            vec![share_dir("share-b", &[(BIG_NAME, big)])],
        )
        .await;
        let daemon = servent(Role::Leaf, &at, vec![]).await;
        let downloads = common::temp_dir("downloads");
        std::fs::create_dir_all(&downloads).expect("download folder");
        let control = Control::start(
            daemon.clone(),
            ControlConfig {
                api: "127.0.0.1:0".parse().expect("addr"),
                download_dir: downloads.clone(),
                token_file: None,
            },
        )
        .await
        .expect("API starts");
        // The ultrapeer passes queries only to leaves whose routing tables it holds.
        let end = Instant::now() + DEADLINE;
        loop {
            let tables = up
                .node()
                .connections()
                .iter()
                .filter(|c| c.qrp_slots_set.is_some_and(|s| s > 0))
                .count();
            if tables >= 2 && !daemon.node().connections().is_empty() {
                break;
            }
            assert!(
                Instant::now() < end,
                "the leaves never joined the ultrapeer"
            );
            async_std::task::sleep(Duration::from_millis(50)).await;
        }
        Net {
            _up: up,
            _sharers: vec![one, two],
            daemon,
            control,
            downloads,
        }
    })
}

/// The page's full width and the window's: wider means horizontal scrolling.
fn fits_width(b: &Browser) -> Value {
    b.js(
        "const d = document.documentElement; \
         return {scroll: d.scrollWidth, client: d.clientWidth, inner: window.innerWidth};",
        json!([]),
    )
}

#[test]
fn a_person_searches_downloads_and_gets_the_file_intact_in_the_browser() {
    if !browser_available() {
        return;
    }
    let big = servent::cli::demo::sample(42, 600 * 1024 + 123);
    let net = start_net(&big);
    let b = Browser::start();

    // The link the daemon prints; the page keeps the token and takes it out of the address.
    let url = net.control.page_url();
    assert!(url.contains("#token="), "{url}");
    b.goto(&url);
    let app = b.find("#app");
    wait_for("the page to sign in", || b.displayed(&app).then_some(()));
    let hash = b.js("return location.hash;", json!([]));
    assert_eq!(hash, json!(""), "the token left the address bar");
    wait_for("the status to show the leaf role", || {
        let role = b.text(&b.find("#status-role"));
        (role == "leaf").then_some(())
    });
    // The reputation and each of its parts, as the node computes them.
    let parts: Vec<String> = net
        .daemon
        .node()
        .reputation()
        .parts
        .iter()
        .map(|p| p.name.to_string())
        .collect();
    assert!(!parts.is_empty());
    wait_for("the reputation parts", || {
        let shown = b.js(
            "return [...document.querySelectorAll('#reputation-parts li')].map(l => l.dataset.part);",
            json!([]),
        );
        (shown == json!(parts)).then_some(())
    });
    let score = b.text(&b.find("#reputation-score"));
    assert!(score.contains(" / "), "score and threshold: {score}");
    wait_for("a connection in the table", || {
        (!b.find_all("#connections .conn-row").is_empty()).then_some(())
    });
    // The uploads card names the policy and the slots.
    wait_for("the upload policy and slots", || {
        let policy = b.text(&b.find("#uploads-policy"));
        let summary = b.text(&b.find("#uploads-summary"));
        (policy == "tit-for-tat" && summary.contains("slots in use")).then_some(())
    });

    // Search: both files arrive, the one with two sources first.
    b.type_into(&b.find("#search-input"), "aurora");
    b.click(&b.find("#search-button"));
    let rows = wait_for("two result rows, the first with 2 sources", || {
        let rows = b.find_all(".result-row");
        let sources = b.js(
            "return [...document.querySelectorAll('.result-row')].map(r => r.dataset.sources);",
            json!([]),
        );
        (rows.len() == 2 && sources == json!(["2", "1"])).then_some(rows)
    });
    let first = b.text(&rows[0]);
    assert!(first.contains(BIG_NAME), "{first}");
    assert!(first.contains("2 sources"), "{first}");
    // The peer's markup is text on the page, not elements.
    let odd = b.text(&rows[1]);
    assert!(odd.contains(ODD_NAME), "{odd}");
    let injected = b.js(
        "return document.querySelectorAll('#results img, #results b').length;",
        json!([]),
    );
    assert_eq!(injected, json!(0));

    // The rate limits are set from the page; a slowed download shows its chunk map and the
    // sources it uses while it runs.
    let set_limit = |v: &str| {
        b.type_into(&b.find("#download-limit"), v);
        b.click(&b.find("#limits-button"));
    };
    set_limit("64K");
    wait_for("the download limit to be 64K", || {
        (net.daemon.limits().1 == 64 * 1024).then_some(())
    });

    // One click downloads; the row's progress reaches 100 % and the state says done.
    let button = b.find(&format!(
        ".download-button[data-urn=\"{}\"]",
        Sha1Urn::digest(&big)
    ));
    b.click(&button);
    let row = b.find(".download-row");
    let swarm = wait_for("the chunk map and the sources in use", || {
        let v = b.js(
            "const r = arguments[0], m = r.querySelector('.chunk-map'); \
             return {shown: !m.hidden, cells: m.children.length, \
                     held: m.querySelectorAll('.held').length, \
                     sources: r.querySelectorAll('.swarm-source').length, \
                     summary: r.querySelector('.swarm-summary').textContent};",
            json!([{ ELEMENT: row }]),
        );
        (v["shown"] == json!(true)
            && v["cells"].as_u64() == Some(64)
            && v["sources"].as_u64() >= Some(1))
        .then_some(v)
    });
    assert!(
        swarm["summary"].as_str().unwrap_or("").contains("in use"),
        "{swarm}"
    );
    b.screenshot("page-downloading");
    set_limit("off");
    wait_for("the download limit to be off", || {
        (net.daemon.limits().1 == 0).then_some(())
    });
    wait_for("the download to finish", || {
        let v = b.js(
            "const r = arguments[0], p = r.querySelector('progress'); \
             return {state: r.dataset.state, percent: r.dataset.percent, \
                     value: p.value, max: p.max};",
            json!([{ ELEMENT: row }]),
        );
        match v["state"].as_str() {
            Some("done") => Some(v),
            Some("failed" | "cancelled") => panic!("the download did not finish: {v}"),
            _ => None,
        }
    });
    let shown = b.js(
        "const r = arguments[0], p = r.querySelector('progress'); \
         return [r.dataset.percent, p.value === p.max, r.querySelector('.percent').textContent];",
        json!([{ ELEMENT: row }]),
    );
    assert_eq!(shown, json!(["100", true, "100%"]));
    let saved = net.downloads.join(BIG_NAME);
    assert_eq!(std::fs::read(&saved).expect("downloaded file"), big);
    assert!(
        b.text(&row).contains(&saved.display().to_string()),
        "the row says where the file is: {}",
        b.text(&row)
    );

    // Shares panel of the daemon: nothing shared, said in words.
    let empty = b.find("#shares-empty");
    wait_for("the empty-shares note", || {
        b.displayed(&empty).then_some(())
    });

    // Tidy at desktop and phone widths: no horizontal scrolling, screenshots to look at.
    for (width, name) in [(1440, "page-1440"), (390, "page-390")] {
        b.full_screenshot(name, width);
        let fit = fits_width(&b);
        let (Some(scroll), Some(client)) = (fit["scroll"].as_u64(), fit["client"].as_u64()) else {
            panic!("no widths from the page: {fit}");
        };
        assert!(
            scroll <= client,
            "the page scrolls sideways at {width} px: {fit}"
        );
    }

    // A magnet link pasted in the search box downloads at once. Nobody has this file, so the
    // download keeps looking for sources (the API's SOURCE_WAIT is 20 s), long enough to pause
    // it, resume it and cancel it with the row's buttons.
    let missing = Sha1Urn::digest(b"a file nobody shares");
    let input = b.find("#search-input");
    b.cmd("POST", &format!("/element/{input}/clear"), Some(json!({})));
    b.type_into(&input, &format!("magnet:?xt={missing}&dn=missing.bin"));
    b.click(&b.find("#search-button"));
    let row = b.find(&format!(".download-row[data-urn=\"{missing}\"]"));
    let state = |want: &str| {
        wait_for(&format!("the magnet download to be {want}"), || {
            let v = b.js(
                "return arguments[0].dataset.state;",
                json!([{ ELEMENT: row }]),
            );
            (v == json!(want)).then_some(())
        })
    };
    let button = |class: &str| {
        b.js(
            "return arguments[0].querySelector(arguments[1]);",
            json!([{ ELEMENT: row }, class]),
        )[ELEMENT]
            .as_str()
            .expect("the row's button")
            .to_owned()
    };
    state("searching");
    let pause = button(".pause-button");
    wait_for("the Pause button", || b.displayed(&pause).then_some(()));
    b.click(&pause);
    state("paused");
    let resume = button(".resume-button");
    assert!(b.displayed(&resume) && !b.displayed(&pause));
    b.click(&resume);
    state("searching");
    // Cancel deletes data: the row asks first, and "Keep it" keeps it.
    b.click(&button(".cancel-button"));
    let sure = button(".confirm-cancel");
    wait_for("the cancel to be confirmed", || {
        b.displayed(&sure).then_some(())
    });
    b.click(&button(".keep-button"));
    assert!(!b.displayed(&sure), "the question goes away");
    state("searching");
    b.click(&button(".cancel-button"));
    wait_for("the cancel to be confirmed", || {
        b.displayed(&sure).then_some(())
    });
    b.click(&sure);
    state("cancelled");
    assert!(
        !b.displayed(&button(".cancel-button")),
        "nothing left to cancel"
    );
    assert!(!net.downloads.join("missing.bin").exists());

    // A refused token brings the sign-in form back, saying so; the right one pasted there
    // opens the page again.
    b.js(
        "sessionStorage.setItem('servent-api-token', 'not-the-token'); location.reload();",
        json!([]),
    );
    let form = b.find("#login");
    wait_for("the sign-in form after a refused token", || {
        b.displayed(&form).then_some(())
    });
    let said = b.text(&b.find("#login-message"));
    assert!(said.contains("refused"), "{said}");
    b.type_into(&b.find("#token-input"), net.control.token());
    b.click(&b.find("#login-button"));
    let app = b.find("#app");
    wait_for("the page after signing in", || {
        b.displayed(&app).then_some(())
    });
    wait_for("the finished download listed again", || {
        let done = b.find_all(".download-row[data-state=\"done\"]");
        (!done.is_empty()).then_some(())
    });

    // "Clear finished" empties the list; the downloaded file stays.
    let clear = b.find("#downloads-clear");
    assert!(b.displayed(&clear));
    b.click(&clear);
    wait_for("the finished downloads cleared", || {
        b.find_all(".download-row").is_empty().then_some(())
    });
    assert!(b.displayed(&b.find("#downloads-empty")));
    assert_eq!(std::fs::read(net.downloads.join(BIG_NAME)).unwrap(), big);

    // A search nobody answers says so instead of "Searching…" forever.
    let input = b.find("#search-input");
    b.cmd("POST", &format!("/element/{input}/clear"), Some(json!({})));
    b.type_into(&input, "zyxwvut nothing");
    b.click(&b.find("#search-button"));
    let status = b.find("#search-status");
    let quiet = wait_for("the search to say it found nothing", || {
        let v = b.js(
            "return arguments[0].dataset.state;",
            json!([{ ELEMENT: status }]),
        );
        (v == json!("empty")).then(|| b.text(&status))
    });
    assert!(quiet.contains("No results yet"), "{quiet}");
    b.click(&b.find("#search-clear"));
    assert!(b.find_all("#results .row").is_empty());

    // The settings in effect, the upload slots changed from the page, and the page's icon.
    assert_eq!(b.text(&b.find("#settings-slots")), "4");
    b.type_into(&b.find("#upload-slots"), "6");
    b.click(&b.find("#limits-button"));
    wait_for("six upload slots", || {
        (net.daemon.uploads().slots.max() == 6 && b.text(&b.find("#settings-slots")) == "6")
            .then_some(())
    });
    let icon = b.js(
        "return document.querySelector('link[rel=icon]').getAttribute('href');",
        json!([]),
    );
    assert_eq!(icon, json!("/favicon.svg"));
    let svg = ureq::get(&format!("http://{}/favicon.svg", net.control.addr()))
        .call()
        .expect("the icon is served");
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");

    // With no connection left, the page warns; linked again, the warning goes.
    let offline = b.find("#offline");
    assert!(!b.displayed(&offline));
    let node = net.daemon.node();
    let peers: Vec<SocketAddrV4> = node.connections().iter().map(|c| c.addr).collect();
    for c in node.connections() {
        node.disconnect(c.id);
    }
    wait_for("the no-connection warning", || {
        b.displayed(&offline).then_some(())
    });
    node.add_hosts(peers, true);
    wait_for("the warning to go once linked", || {
        (!b.displayed(&offline)).then_some(())
    });
}
