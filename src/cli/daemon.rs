//! `servent run`: the long-running servent built from the effective settings, with the local
//! API beside it, until told to stop.

use std::net::{SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::time::Duration;

use async_std::channel::Receiver;

use crate::control::config::Settings;
use crate::control::{Control, ControlConfig};
use crate::net::NodeConfig;
use crate::net::bootstrap::Service;
use crate::servent::{Servent, ServentConfig};

/// How often `servent run` says how it is doing.
const STATUS_EVERY: Duration = Duration::from_secs(300);

/// Resolves HOST:PORT to its IPv4 addresses.
pub fn resolve(peer: &str) -> Result<Vec<SocketAddrV4>, String> {
    let addrs: Vec<SocketAddrV4> = peer
        .to_socket_addrs()
        .map_err(|e| format!("peer {peer}: {e} (expected HOST:PORT)"))?
        .filter_map(|a| match a {
            SocketAddr::V4(a) => Some(a),
            SocketAddr::V6(_) => None,
        })
        .collect();
    if addrs.is_empty() {
        return Err(format!("peer {peer}: no IPv4 address"));
    }
    Ok(addrs)
}

/// The servent's configuration from the settings; creates the default share folder.
pub fn servent_config(s: &Settings) -> Result<ServentConfig, String> {
    let mut peers = Vec::new();
    for p in &s.peers {
        peers.extend(resolve(p)?);
    }
    let mut cfg = NodeConfig::new(s.listen, s.data_dir.clone());
    cfg.accept_private = s.allow_private
        || peers
            .iter()
            .any(|p| p.ip().is_loopback() || p.ip().is_private());
    cfg.peers = peers;
    cfg.role = s.role.initial();
    cfg.auto_role = s.role.is_auto();
    cfg.max_ultrapeers = s.max_peers;
    cfg.max_leaves = s.max_leaves;
    cfg.leaf_ultrapeers = s.ultrapeers;
    cfg.compress = s.compress;
    cfg.bootstrap = if !s.bootstrap {
        Vec::new()
    } else if s.uhc.is_empty() && s.gwc.is_empty() {
        Service::builtin()
    } else {
        s.uhc
            .iter()
            .cloned()
            .map(Service::Uhc)
            .chain(s.gwc.iter().cloned().map(Service::Gwc))
            .collect()
    };
    let shares = if s.shares.is_empty() {
        let d = s.data_dir.join("shared");
        std::fs::create_dir_all(&d)
            .map_err(|e| format!("cannot create the share folder {}: {e}", d.display()))?;
        vec![d]
    } else {
        for d in &s.shares {
            if !d.is_dir() {
                return Err(format!("share {}: not a folder", d.display()));
            }
        }
        s.shares.clone()
    };
    let mut scfg = ServentConfig::new(cfg);
    scfg.shares = shares;
    scfg.upload_slots = s.upload_slots.max(1);
    scfg.firewalled = s.firewalled;
    scfg.share_partial = s.share_partial;
    scfg.upload_limit = s.upload_limit;
    scfg.upload_policy = s.upload_policy;
    scfg.source_patience = std::time::Duration::from_secs(s.source_patience);
    scfg.download_limit = s.download_limit;
    // The API and the overlay answer at once; the shares are hashed behind them.
    scfg.hash_in_background = true;
    Ok(scfg)
}

/// Runs until `stop` receives, then says goodbye to every peer.
pub async fn run(s: Settings, stop: Receiver<()>) -> Result<(), String> {
    let cfg = servent_config(&s)?;
    for d in &cfg.shares {
        log::info!("sharing {}", d.display());
    }
    let servent = Servent::start(cfg).await.map_err(|e| e.to_string())?;
    let control = match s.api {
        None => {
            log::info!("the local API is off (api = off)");
            None
        }
        Some(api) => {
            let ctl = Control::start(
                servent.clone(),
                ControlConfig {
                    api,
                    download_dir: s.download_dir.clone(),
                    token_file: s.api_token_file.clone(),
                },
            )
            .await
            .map_err(|e| e.to_string())?;
            log::info!(
                "local API on {} (token in {})",
                ctl.addr(),
                crate::control::token::path(&s.data_dir).display()
            );
            // On stdout, apart from the log: the one line a user needs to find at start. One
            // write, whose failure (stdout closed by whoever started us) is no reason to stop.
            use std::io::Write;
            let _ = write!(
                std::io::stdout(),
                "open {}\n  (the page in a browser; downloads go to {})\n",
                ctl.page_url(),
                s.download_dir.display()
            );
            Some(ctl)
        }
    };
    let status = servent.clone();
    async_std::task::spawn(async move {
        loop {
            async_std::task::sleep(STATUS_EVERY).await;
            log::info!("{}", status.summary());
        }
    });
    let _ = stop.recv().await;
    log::info!("stopping: saying goodbye to peers");
    if let Some(c) = control {
        c.stop();
    }
    servent.shutdown().await;
    Ok(())
}
