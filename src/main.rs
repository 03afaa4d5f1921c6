//! The `servent` command line: argh parses, env_logger logs, each subcommand does one thing.

use std::io::Read;
use std::process::ExitCode;

use std::net::SocketAddrV4;

use argh::{ArgsInfo, FromArgs};
use servent::cli::{self, remote};
use servent::control::config::{Layer, Settings};
use servent::handshake::Role;
use servent::net::NodeConfig;
use servent::net::bootstrap::Service;
use servent::servent::{Servent, ServentConfig};
use servent::wire::{self, Descriptor, Framed};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// servent: a Gnutella 0.6 servent.
///
/// Logging goes to stderr and is set with RUST_LOG (for example RUST_LOG=debug);
/// servent --version (or -V) prints the version.
#[derive(FromArgs, ArgsInfo)]
struct Cli {
    #[argh(subcommand)]
    command: Command,
}

// Parsed once per process: the size of its largest variant costs nothing worth a Box, which
// argh's ArgsInfo (completions, the man page) cannot see through.
#[allow(clippy::large_enum_variant)]
#[derive(FromArgs, ArgsInfo)]
#[argh(subcommand)]
enum Command {
    Demo(DemoArgs),
    Run(RunArgs),
    Status(StatusArgs),
    Downloads(DownloadsArgs),
    Uploads(UploadsArgs),
    Peers(PeersArgs),
    Search(SearchArgs),
    Get(GetArgs),
    Decode(DecodeArgs),
    Completions(CompletionsArgs),
    Man(ManArgs),
}

/// Print a shell completion script (bash, zsh or fish).
#[derive(FromArgs, ArgsInfo)]
#[argh(
    subcommand,
    name = "completions",
    note = "Written from the same definitions as --help, so every subcommand and flag is in it.",
    example = "servent completions bash > ~/.local/share/bash-completion/completions/servent
servent completions zsh > ~/.zfunc/_servent
servent completions fish > ~/.config/fish/completions/servent.fish"
)]
struct CompletionsArgs {
    /// bash, zsh or fish
    #[argh(positional)]
    shell: String,
}

/// Print the manual page (roff, section 1).
#[derive(FromArgs, ArgsInfo)]
#[argh(
    subcommand,
    name = "man",
    example = "servent man > ~/.local/share/man/man1/servent.1 && man servent"
)]
struct ManArgs {}

/// Search the network and print the results grouped by file.
#[derive(FromArgs, ArgsInfo)]
#[argh(
    subcommand,
    name = "search",
    note = "Starts a short-lived servent (on a free local port, with the data directory's GUID \
and host cache), joins, searches, prints each new file as it is found and a table at the end, \
most sources first.",
    example = "servent search \"free jazz\" --wait 20"
)]
struct SearchArgs {
    /// the words to search for (quoted or not: `servent search free jazz` looks for both), or
    /// a urn:sha1:… to find sources of one file
    #[argh(positional)]
    words: Vec<String>,

    /// seconds to wait for results (default 10)
    #[argh(option, default = "10")]
    wait: u64,

    /// print the results as JSON instead of a table
    #[argh(switch)]
    json: bool,

    #[argh(option)]
    /// a peer to connect to, as HOST:PORT; repeat for several
    peer: Vec<String>,

    /// where the GUID and host cache live (default: the platform data directory)
    #[argh(option)]
    data_dir: Option<std::path::PathBuf>,

    /// a running servent's API address (default from the settings, 127.0.0.1:6347)
    #[argh(option)]
    api: Option<String>,

    /// the settings file
    #[argh(option)]
    config: Option<PathBuf>,
}

/// Download a file by its SHA-1 (urn:sha1:… or a magnet link) and verify it.
#[derive(FromArgs, ArgsInfo)]
#[argh(
    subcommand,
    name = "get",
    note = "Searches for sources of the file, downloads from several at once (through Push \
for firewalled ones), checks the SHA-1 and moves the file into the download folder. An \
interrupted download resumes from where it stopped.",
    example = "servent get 'magnet:?xt=urn:sha1:3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBYJ&dn=empty.txt'"
)]
struct GetArgs {
    /// urn:sha1:<base32> or magnet:?xt=urn:sha1:… (a link with a source,
    /// xs=http://HOST:PORT/…, downloads from it at once, without a search; its size comes
    /// from xl= or from the source)
    #[argh(positional)]
    target: String,

    /// folder to save into (default: the platform download folder)
    #[argh(option)]
    out: Option<std::path::PathBuf>,

    /// seconds to look for sources before starting (default 5)
    #[argh(option, default = "5")]
    wait: u64,

    /// a peer to connect to, as HOST:PORT; repeat for several
    #[argh(option)]
    peer: Vec<String>,

    /// address to listen on for push callbacks (default 127.0.0.1 on a free port)
    #[argh(option, default = "\"127.0.0.1:0\".parse().expect(\"valid default\")")]
    listen: std::net::SocketAddrV4,

    /// where the GUID and host cache live (default: the platform data directory)
    #[argh(option)]
    data_dir: Option<std::path::PathBuf>,

    /// print the result as JSON
    #[argh(switch)]
    json: bool,

    /// a running servent's API address (default from the settings, 127.0.0.1:6347)
    #[argh(option)]
    api: Option<String>,

    /// the settings file
    #[argh(option)]
    config: Option<PathBuf>,
}

/// Run a small Gnutella network on this machine and show it working: search, a direct
/// download and one through Push from a firewalled servent.
#[derive(FromArgs, ArgsInfo)]
#[argh(
    subcommand,
    name = "demo",
    note = "Needs no network and no setup: every servent runs on 127.0.0.1 in this process, \
sharing sample files made for the demo in a temporary folder that is removed afterwards. \
Exits 0 only if every step worked."
)]
struct DemoArgs {}

/// Join the Gnutella network and route for it until Ctrl-C, with the local API and page.
#[derive(FromArgs, ArgsInfo)]
#[argh(
    subcommand,
    name = "run",
    note = "With no flags the node listens on 127.0.0.1:6346, keeps its GUID and host cache in \
the data directory, dials hosts it knows, and serves the local API and web page on \
127.0.0.1:6347 (the page's address, with a fresh token, is printed at start). Every option can \
also be set in the settings file (--config, default <config dir>/servent/config.toml) or as \
SERVENT_<KEY> in the environment; a flag wins over the environment, which wins over the file. \
Ctrl-C says goodbye (Bye 200) to every peer, saves the host cache and exits; a second Ctrl-C \
exits at once.",
    example = "servent run --listen 0.0.0.0:6346 --peer 203.0.113.5:6346"
)]
struct RunArgs {
    /// address and port to listen on for Gnutella, HTTP and push connections
    /// (default 127.0.0.1:6346)
    #[argh(option)]
    listen: Option<String>,

    /// address and port of the local API and web page, or off (default 127.0.0.1:6347)
    #[argh(option)]
    api: Option<String>,

    /// a peer to connect to and keep connected, as HOST:PORT; repeat for several
    #[argh(option)]
    peer: Vec<String>,

    /// where the GUID, host cache and API token live (default: the platform data directory,
    /// e.g. ~/.local/share/servent)
    #[argh(option)]
    data_dir: Option<PathBuf>,

    /// where downloads started through the API are saved (default: the platform download
    /// folder)
    #[argh(option)]
    download_dir: Option<PathBuf>,

    /// most ultrapeer connections to keep (default 32)
    #[argh(option)]
    max_peers: Option<usize>,

    /// most leaves to accept as an ultrapeer (default 30)
    #[argh(option)]
    max_leaves: Option<usize>,

    /// ultrapeer links to keep as a leaf (default 3)
    #[argh(option)]
    ultrapeers: Option<usize>,

    /// auto, leaf or ultrapeer (default auto: start as a leaf, become an ultrapeer once
    /// reachable, up for an hour and proven as an uploader, when the network needs one)
    #[argh(option)]
    role: Option<String>,

    /// do not offer deflate link compression
    #[argh(switch)]
    no_compress: bool,

    /// accept loopback and private addresses as peers (on when a --peer is one)
    #[argh(switch)]
    allow_private: bool,

    /// a UDP host cache to ask for hosts when none answer, as HOST:PORT; repeat for several
    /// (replaces the built-in list)
    #[argh(option)]
    uhc: Vec<String>,

    /// a GWebCache URL to ask for hosts when none answer; repeat for several (replaces the
    /// built-in list)
    #[argh(option)]
    gwc: Vec<String>,

    /// never ask bootstrap services (UDP host caches, GWebCaches) for hosts
    #[argh(switch)]
    no_bootstrap: bool,

    /// a folder to share, searched recursively; repeat for several (default: the "shared"
    /// folder in the data directory)
    #[argh(option)]
    share: Vec<PathBuf>,

    /// say we are firewalled (downloaders must push), whatever we observe
    #[argh(switch)]
    firewalled: bool,

    /// uploads served at once (default 4)
    #[argh(option)]
    upload_slots: Option<usize>,

    /// bytes per second for all uploads together, with K/M for powers of 1024 (512K, 4M;
    /// default: no limit); changeable at run time through the API and the page
    #[argh(option)]
    upload_limit: Option<String>,

    /// bytes per second for all downloads together (512K, 4M; default: no limit)
    #[argh(option)]
    download_limit: Option<String>,

    /// do not offer the verified parts of files still downloading (by default every
    /// downloader serves what it already has, so a crowd spreads a new file faster)
    #[argh(switch)]
    no_share_partial: bool,

    /// who gets the upload slots: "tit-for-tat" (default: the peers that give us most of a
    /// file we are downloading, or take a file we hold fastest, plus one slot that moves
    /// every 30 s so newcomers can start) or "fifo" (first come, first served, as
    /// gtk-gnutella); the rest wait in a PARQ queue and are told their place
    #[argh(option)]
    upload_policy: Option<String>,

    /// seconds a download keeps trying a source it cannot reach, less and less often (1 s
    /// doubling to 30 s), before giving it up (default 300: a servent restarting or a router
    /// renewing its lease comes back within that)
    #[argh(option)]
    source_patience: Option<u64>,

    /// keep the API token in this file (created 0600 with a new one if missing) so that a
    /// bookmarked page keeps working across restarts (default: a new token at every start)
    #[argh(option)]
    api_token_file: Option<PathBuf>,

    /// the settings file (default <config dir>/servent/config.toml; a missing default file
    /// is fine, a missing given one is an error)
    #[argh(option)]
    config: Option<PathBuf>,

    /// check the settings, print the effective ones and where each came from, and exit
    #[argh(switch)]
    check_config: bool,
}

impl RunArgs {
    /// The flags given, as a settings layer.
    fn layer(&self) -> Layer {
        let list = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        Layer {
            listen: self.listen.clone(),
            api: self.api.clone(),
            data_dir: self.data_dir.clone(),
            shares: (!self.share.is_empty()).then(|| self.share.clone()),
            peers: list(&self.peer),
            role: self.role.clone(),
            max_peers: self.max_peers,
            max_leaves: self.max_leaves,
            ultrapeers: self.ultrapeers,
            upload_slots: self.upload_slots,
            firewalled: self.firewalled.then_some(true),
            compress: self.no_compress.then_some(false),
            allow_private: self.allow_private.then_some(true),
            bootstrap: self.no_bootstrap.then_some(false),
            uhc: list(&self.uhc),
            gwc: list(&self.gwc),
            download_dir: self.download_dir.clone(),
            share_partial: self.no_share_partial.then_some(false),
            upload_limit: self.upload_limit.clone(),
            download_limit: self.download_limit.clone(),
            upload_policy: self.upload_policy.clone(),
            source_patience: self.source_patience,
            api_token_file: self.api_token_file.clone(),
        }
    }
}

/// Show how the running servent is doing: role, addresses, firewall, shares, transfers, peers.
#[derive(FromArgs, ArgsInfo)]
#[argh(subcommand, name = "status")]
struct StatusArgs {
    /// print JSON instead of text
    #[argh(switch)]
    json: bool,

    /// the running servent's API address (default from the settings, 127.0.0.1:6347)
    #[argh(option)]
    api: Option<String>,

    /// its data directory, where the API token is (default from the settings)
    #[argh(option)]
    data_dir: Option<PathBuf>,

    /// the settings file
    #[argh(option)]
    config: Option<PathBuf>,
}

/// List the running servent's downloads, or pause, resume or cancel one, or clear the
/// finished ones from the list.
#[derive(FromArgs, ArgsInfo)]
#[argh(
    subcommand,
    name = "downloads",
    note = "The list outlives restarts: downloads running when the servent stopped resume when \
it starts, paused ones stay paused, finished ones stay listed until cleared."
)]
struct DownloadsArgs {
    /// pause download ID
    #[argh(option)]
    pause: Option<u64>,

    /// resume download ID
    #[argh(option)]
    resume: Option<u64>,

    /// cancel download ID and remove its partial file (a finished one is cleared from the
    /// list; a done file stays)
    #[argh(option)]
    cancel: Option<u64>,

    /// clear every finished (done, failed or cancelled) download from the list
    #[argh(switch)]
    clear: bool,

    /// print JSON instead of a table
    #[argh(switch)]
    json: bool,

    /// the running servent's API address (default from the settings, 127.0.0.1:6347)
    #[argh(option)]
    api: Option<String>,

    /// its data directory, where the API token is (default from the settings)
    #[argh(option)]
    data_dir: Option<PathBuf>,

    /// the settings file
    #[argh(option)]
    config: Option<PathBuf>,
}

/// Show the running servent's uploads: each file going to each downloader, and every
/// downloader with its slot (unchoked and why, or choked), its place in the queue, and the
/// rates both ways.
#[derive(FromArgs, ArgsInfo)]
#[argh(
    subcommand,
    name = "uploads",
    note = "Under the default tit-for-tat policy the downloaders that give us most of a file we \
are downloading (or, for a file we hold complete, take it fastest) hold the slots, and one slot \
moves every 30 s to another so that newcomers can start; the rest wait in a PARQ queue."
)]
struct UploadsArgs {
    /// print JSON instead of tables
    #[argh(switch)]
    json: bool,

    /// the running servent's API address (default from the settings, 127.0.0.1:6347)
    #[argh(option)]
    api: Option<String>,

    /// its data directory, where the API token is (default from the settings)
    #[argh(option)]
    data_dir: Option<PathBuf>,

    /// the settings file
    #[argh(option)]
    config: Option<PathBuf>,
}

/// List the running servent's peers, or connect or disconnect one.
#[derive(FromArgs, ArgsInfo)]
#[argh(subcommand, name = "peers")]
struct PeersArgs {
    /// dial HOST:PORT and keep it connected
    #[argh(option)]
    connect: Option<String>,

    /// say Bye to link ID and close it
    #[argh(option)]
    disconnect: Option<u64>,

    /// print JSON instead of a table
    #[argh(switch)]
    json: bool,

    /// the running servent's API address (default from the settings, 127.0.0.1:6347)
    #[argh(option)]
    api: Option<String>,

    /// its data directory, where the API token is (default from the settings)
    #[argh(option)]
    data_dir: Option<PathBuf>,

    /// the settings file
    #[argh(option)]
    config: Option<PathBuf>,
}

/// The settings for a command that only needs the API address and the data directory.
fn client_settings(
    config: Option<&Path>,
    api: Option<String>,
    data_dir: Option<PathBuf>,
) -> Result<Settings, String> {
    let flags = Layer {
        api,
        data_dir,
        ..Layer::default()
    };
    Settings::load(config, std::env::vars(), &flags)
}

/// Decode Gnutella descriptors given as hex and print each as JSON.
#[derive(FromArgs, ArgsInfo)]
#[argh(
    subcommand,
    name = "decode",
    note = "The hex may hold several descriptors back to back, header included. Spaces, \
newlines and '|' are ignored, so bytes copied from a capture or from PROTOCOL.md paste as they \
are. Exits 1 if the input is not hex or a descriptor is malformed, saying why and giving a \
stable error code such as [hit-count-overrun].",
    example = "echo '5a1f0e3c8b27d4e9ff1c6a2b7d3e9f00 00 01 00 00 00 00 00' | servent decode"
)]
struct DecodeArgs {
    /// print one JSON object per line instead of pretty-printed JSON
    #[argh(switch)]
    compact: bool,

    /// the hex to decode; read from standard input when absent
    #[argh(positional)]
    hex: Option<String>,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let argv: Vec<String> = std::env::args().collect();
    // A script that asked for JSON reads errors as JSON too.
    let json = argv.iter().skip(1).any(|a| a == "--json");
    let cli = parse_args(argv);
    let result = match cli.command {
        Command::Demo(_) => {
            let mut out = std::io::stdout();
            async_std::task::block_on(servent::cli::demo::run(&mut out))
        }
        Command::Run(args) => run(args),
        Command::Status(a) => client_settings(a.config.as_deref(), a.api, a.data_dir)
            .and_then(|s| block_on(remote::status(&s, a.json))),
        Command::Downloads(a) => {
            let action = match (a.pause, a.resume, a.cancel, a.clear) {
                (None, None, None, false) => Ok(remote::DownloadsAction::List),
                (Some(id), None, None, false) => Ok(remote::DownloadsAction::Pause(id)),
                (None, Some(id), None, false) => Ok(remote::DownloadsAction::Resume(id)),
                (None, None, Some(id), false) => Ok(remote::DownloadsAction::Cancel(id)),
                (None, None, None, true) => Ok(remote::DownloadsAction::Clear),
                _ => Err("give at most one of --pause, --resume, --cancel, --clear".to_string()),
            };
            action.and_then(|action| {
                let s = client_settings(a.config.as_deref(), a.api, a.data_dir)?;
                block_on(remote::downloads(&s, action, a.json))
            })
        }
        Command::Uploads(a) => client_settings(a.config.as_deref(), a.api, a.data_dir)
            .and_then(|s| block_on(remote::uploads(&s, a.json))),
        Command::Peers(a) => {
            let action = match (a.connect, a.disconnect) {
                (None, None) => Ok(remote::PeersAction::List),
                (Some(addr), None) => Ok(remote::PeersAction::Connect(addr)),
                (None, Some(id)) => Ok(remote::PeersAction::Disconnect(id)),
                _ => Err("give --connect or --disconnect, not both".to_string()),
            };
            action.and_then(|action| {
                let s = client_settings(a.config.as_deref(), a.api, a.data_dir)?;
                block_on(remote::peers(&s, action, a.json))
            })
        }
        Command::Search(args) => search(args),
        Command::Get(args) => get(args),
        Command::Decode(args) => decode(args),
        Command::Completions(a) => a
            .shell
            .parse()
            .map(|sh| print!("{}", cli::docs::completions(&args_info(), sh))),
        Command::Man(_) => {
            let (version, summary) = (env!("CARGO_PKG_VERSION"), env!("CARGO_PKG_DESCRIPTION"));
            print!("{}", cli::docs::man(&args_info(), version, summary));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) if json => {
            println!("{}", serde_json::json!({ "error": msg }));
            ExitCode::FAILURE
        }
        Err(msg) => {
            eprintln!("servent: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// argh's parse, with what people type first: `--version`/`-V`, and `-h` for `--help`.
fn parse_args(argv: Vec<String>) -> Cli {
    let name = argv.first().map_or("servent", |s| s.as_str());
    let name = Path::new(name)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("servent");
    let rest: Vec<&str> = argv
        .iter()
        .skip(1)
        .map(|a| if a == "-h" { "--help" } else { a.as_str() })
        .collect();
    if matches!(rest.as_slice(), ["--version"] | ["-V"]) {
        println!("servent {}", env!("CARGO_PKG_VERSION"));
        std::process::exit(0);
    }
    match Cli::from_args(&[name], &rest) {
        Ok(cli) => cli,
        Err(argh::EarlyExit { output, status }) => match status {
            Ok(()) => {
                println!("{output}");
                std::process::exit(0);
            }
            Err(()) => {
                eprintln!("{output}\nRun {name} --help for more information.");
                std::process::exit(1);
            }
        },
    }
}

/// The command line's own description, for completions and the man page.
fn args_info() -> argh::CommandInfoWithArgs {
    let mut info = Cli::get_args_info();
    info.name = "servent";
    info
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    async_std::task::block_on(f)
}

fn run(args: RunArgs) -> Result<(), String> {
    let settings = Settings::load(args.config.as_deref(), std::env::vars(), &args.layer())?;
    if args.check_config {
        print!("{}", settings.describe());
        return Ok(());
    }
    let stop = stop_signal()?;
    block_on(cli::daemon::run(settings, stop))
}

/// Receives once on the first Ctrl-C, SIGTERM or SIGHUP (systemd and `docker stop` send
/// SIGTERM, and a job started in the background from a shell ignores SIGINT unless told
/// otherwise); a second one exits at once.
fn stop_signal() -> Result<async_std::channel::Receiver<()>, String> {
    let (stop_tx, stop_rx) = async_std::channel::bounded::<()>(1);
    let mut presses = 0;
    ctrlc::set_handler(move || {
        presses += 1;
        if presses > 1 {
            std::process::exit(130);
        }
        let _ = stop_tx.try_send(());
    })
    .map_err(|e| format!("cannot watch for Ctrl-C and SIGTERM: {e}"))?;
    Ok(stop_rx)
}

/// A short-lived leaf for `search` and `get`.
fn one_shot(
    peers: &[String],
    data_dir: PathBuf,
    listen: SocketAddrV4,
) -> Result<ServentConfig, String> {
    let mut addrs = Vec::new();
    for p in peers {
        addrs.extend(cli::daemon::resolve(p)?);
    }
    let mut cfg = NodeConfig::new(listen, data_dir);
    cfg.accept_private = addrs
        .iter()
        .any(|p| p.ip().is_loopback() || p.ip().is_private());
    cfg.bootstrap = if addrs.is_empty() {
        Service::builtin()
    } else {
        Vec::new()
    };
    cfg.want_ultrapeers = Some(addrs.len().clamp(1, 3));
    cfg.peers = addrs;
    cfg.role = Role::Leaf;
    Ok(ServentConfig::new(cfg))
}

fn search(args: SearchArgs) -> Result<(), String> {
    let words = args.words.join(" ");
    if words.trim().is_empty() {
        return Err("give the words to search for, for example: servent search free jazz".into());
    }
    let settings = client_settings(args.config.as_deref(), args.api, args.data_dir)?;
    // A --peer asks for a servent of our own on that peer; otherwise a running daemon does it.
    if args.peer.is_empty()
        && let Some(c) = block_on(remote::running(&settings))
    {
        // Ctrl-C stops the daemon's search too, or it would hold one of its slots for minutes.
        let stop = stop_signal()?;
        return block_on(remote::search(
            &c,
            &words,
            Duration::from_secs(args.wait),
            stop,
            args.json,
        ));
    }
    let cfg = one_shot(
        &args.peer,
        settings.data_dir.clone(),
        "127.0.0.1:0".parse().expect("valid"),
    )?;
    block_on(async {
        let s = Servent::start(cfg).await.map_err(|e| e.to_string())?;
        let mut err = std::io::stderr();
        cli::search::joined(&s, &mut err).await?;
        let search = s.search(&words);
        let json = args.json;
        let groups = cli::search::collect(&s, search, Duration::from_secs(args.wait), |g| {
            if !json {
                println!("+ {}  ({}, {})", g.name, cli::search::human(g.size), g.urn);
            }
        })
        .await;
        if json {
            let v = serde_json::to_string_pretty(&groups.sorted()).map_err(|e| e.to_string())?;
            println!("{v}");
        } else {
            println!();
            cli::search::print_table(&groups, &mut std::io::stdout());
        }
        s.shutdown().await;
        Ok(())
    })
}

fn get(args: GetArgs) -> Result<(), String> {
    let link = cli::search::parse_link(&args.target)?;
    let (urn, name) = (link.urn, link.name.clone());
    let settings = client_settings(args.config.as_deref(), args.api, args.data_dir)?;
    // The daemon saves into its own download folder: --out and --peer need our own servent.
    if args.peer.is_empty()
        && args.out.is_none()
        && let Some(c) = block_on(remote::running(&settings))
    {
        return block_on(remote::get(&c, &args.target, args.json));
    }
    let out = args.out.unwrap_or_else(|| settings.download_dir.clone());
    if let Some(path) = name
        .as_deref()
        .and_then(|n| servent::transfer::download::already_saved(&out, n, &urn))
    {
        eprintln!("already downloaded: {} has {urn}", path.display());
        if args.json {
            println!("{}", serde_json::json!({ "urn": urn, "path": path }));
        } else {
            println!("{}", path.display());
        }
        return Ok(());
    }
    let stop = stop_signal()?;
    let mut cfg = one_shot(&args.peer, settings.data_dir.clone(), args.listen)?;
    // A link with a source and its size (xl=, or the source's answer to a HEAD) needs no
    // search.
    let direct = block_on(link.resolve());
    if direct.is_some() {
        // The link names its sources: no need to join the network to find any, and the
        // mesh of a source the user chose on a private network is taken as such.
        if args.peer.is_empty() {
            cfg.node.bootstrap = Vec::new();
        }
        if link
            .sources
            .iter()
            .any(|a| a.ip().is_loopback() || a.ip().is_private())
        {
            cfg.node.accept_private = true;
        }
    }
    block_on(async {
        let s = Servent::start(cfg).await.map_err(|e| e.to_string())?;
        let mut err = std::io::stderr();
        let mut spec = match direct {
            Some(spec) => spec,
            None => {
                cli::search::joined(&s, &mut err).await?;
                eprintln!("looking for sources of {urn}…");
                let search = s.search_urn_named(&urn, link.name.as_deref());
                let wait = Duration::from_secs(args.wait);
                let groups = cli::search::collect(&s, search, wait, |_| {}).await;
                let Some(spec) = groups.0.into_iter().find(|g| g.urn == urn) else {
                    s.shutdown().await;
                    return Err(format!("no source found for {urn}"));
                };
                spec
            }
        };
        eprintln!(
            "{} for {} ({})",
            servent::text::count(spec.sources.len() as u64, "source", "sources"),
            spec.name,
            cli::search::human(spec.size)
        );
        if let Some(n) = name {
            spec.name = n;
        }
        let name = spec.name.clone();
        let r = futures_lite::future::or(
            async { Some(cli::search::download_with_progress(&s, spec, &out, &mut err).await) },
            async {
                let _ = stop.recv().await;
                None
            },
        )
        .await;
        s.shutdown().await;
        let Some(r) = r else {
            // Every verified chunk is already on disk with its record: nothing more to save.
            eprintln!();
            return Err(format!(
                "stopped; what {name} has so far is kept in {}: the same command resumes it",
                out.display()
            ));
        };
        let path = r?;
        if args.json {
            let v = serde_json::json!({ "urn": urn, "path": path });
            println!("{v}");
        } else {
            println!("{}", path.display());
        }
        Ok(())
    })
}

fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'|')
        .collect();
    if let Some(bad) = digits.iter().position(|b| !b.is_ascii_hexdigit()) {
        return Err(format!(
            "input is not hex: {:?} at hex digit {} (only 0-9, a-f, spaces and '|' may appear)",
            digits[bad] as char,
            bad + 1
        ));
    }
    if !digits.len().is_multiple_of(2) {
        return Err(format!(
            "input has an odd number of hex digits ({}): a byte is cut in half",
            digits.len()
        ));
    }
    data_encoding::HEXLOWER_PERMISSIVE
        .decode(&digits)
        .map_err(|e| format!("input is not hex: {e}"))
}

fn decode(args: DecodeArgs) -> Result<(), String> {
    let text = match args.hex {
        Some(h) => h,
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            s
        }
    };
    let bytes = parse_hex(&text)?;
    if bytes.is_empty() {
        return Err("no hex given: pass it as an argument or on standard input".into());
    }
    let mut offset = 0;
    let mut index = 1;
    while offset < bytes.len() {
        let here = format!("descriptor {index} (byte offset {offset})");
        let frame = match wire::frame(&bytes[offset..]) {
            Ok(Framed::Frame(f)) => f,
            Ok(Framed::Incomplete { needed }) => {
                return Err(format!(
                    "{here}: input ends {needed} bytes short of a whole descriptor"
                ));
            }
            Err(e) => return Err(format!("{here}: {e} [{}]", e.code())),
        };
        let d = Descriptor::decode(&frame).map_err(|e| format!("{here}: {e} [{}]", e.code()))?;
        let json = if args.compact {
            serde_json::to_string(&d)
        } else {
            serde_json::to_string_pretty(&d)
        }
        .map_err(|e| format!("{here}: cannot show as JSON: {e}"))?;
        println!("{json}");
        offset += frame.len();
        index += 1;
    }
    Ok(())
}
