//! The control plane: a local HTTP API (JSON) served by the daemon on its own port, guarded by
//! a bearer token kept in the data directory and by a Host check against DNS rebinding; the
//! web page's static files; Prometheus metrics; the settings file; and the client the CLI uses
//! to talk to a running daemon.

pub mod client;
pub mod config;
mod door;
pub mod downloads;
mod metrics;
pub mod searches;
mod server;
pub mod token;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use async_std::channel::{Receiver, Sender, bounded};

use crate::servent::Servent;
use downloads::Downloads;
use searches::Searches;

/// The address to reach an API bound to `bound` (loopback when bound to all interfaces).
pub fn server_addr(bound: SocketAddr) -> SocketAddr {
    server::display_addr(bound)
}

/// What the API needs besides the servent.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Where the API listens; port 0 picks a free one.
    pub api: SocketAddr,
    /// Where downloads started through the API are saved.
    pub download_dir: PathBuf,
    /// A file that keeps the token across restarts (`api_token_file`); none: a new token.
    pub token_file: Option<PathBuf>,
}

/// The running API.
pub struct Control {
    servent: Servent,
    started: Instant,
    token: String,
    addr: SocketAddr,
    searches: Arc<Searches>,
    downloads: Arc<Downloads>,
    stop: (Sender<()>, Receiver<()>),
}

impl Control {
    /// Writes a fresh token, binds the API port and serves it.
    pub async fn start(servent: Servent, cfg: ControlConfig) -> io::Result<Arc<Control>> {
        let listener = async_std::net::TcpListener::bind(cfg.api)
            .await
            .map_err(|e| {
                let hint = if e.kind() == io::ErrorKind::AddrInUse {
                    " (is another servent running? `servent status` asks it; or give this one \
                     --api ADDR:PORT, or --api off)"
                } else {
                    ""
                };
                io::Error::new(
                    e.kind(),
                    format!("cannot listen for the API on {}: {e}{hint}", cfg.api),
                )
            })?;
        let addr = listener.local_addr()?;
        let token = match &cfg.token_file {
            None => token::generate()?,
            Some(f) => token::kept(f).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot keep the API token in {}: {e}", f.display()),
                )
            })?,
        };
        token::write(servent.data_dir(), &token).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot write the API token to {}: {e}",
                    token::path(servent.data_dir()).display()
                ),
            )
        })?;
        let ctl = Arc::new(Control {
            searches: Searches::new(servent.clone()),
            downloads: Downloads::open(servent.clone(), cfg.download_dir),
            servent,
            started: Instant::now(),
            token,
            addr,
            stop: bounded(1),
        });
        async_std::task::spawn(server::accept_loop(ctl.clone(), listener));
        Ok(ctl)
    }

    /// The address the API listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// The page's address, with the token in the fragment (which browsers never send).
    pub fn page_url(&self) -> String {
        format!(
            "http://{}/#token={}",
            server::display_addr(self.addr),
            self.token
        )
    }

    /// Where downloads started through the API are saved.
    pub fn download_dir(&self) -> &std::path::Path {
        self.downloads.dir()
    }

    pub fn servent(&self) -> &Servent {
        &self.servent
    }

    /// Stops accepting API connections.
    pub fn stop(&self) {
        let _ = self.stop.0.try_send(());
    }
}
