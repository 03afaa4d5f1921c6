//! What a node keeps between runs in its data directory: its servent GUID (which must be
//! persistent, PROTOCOL.md §1) and its host cache.

use std::io;
use std::path::{Path, PathBuf};

use log::warn;

use crate::overlay::HostEntry;
use crate::wire::ServentId;

const GUID_FILE: &str = "servent-guid";
const HOSTS_FILE: &str = "hosts.json";

/// The platform's data directory for servent (`~/.local/share/servent` on Linux).
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("servent")
}

/// Creates the data directory readable by its owner only (it names every shared path, holds
/// the API token and the GUID), and closes an existing one that others could read.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let meta = std::fs::metadata(dir)?;
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// Writes `data` to `path` through a temporary file and a rename, so a crash never leaves a
/// half-written file.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

/// Our servent GUID: read from the data directory, or made and saved on first run.
pub fn servent_id(dir: &Path) -> io::Result<ServentId> {
    let path = dir.join(GUID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => match ServentId::from_hex(s.trim()) {
            Some(g) => return Ok(g),
            None => warn!("{} is not a GUID; making a new one", path.display()),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let g = ServentId::random();
    write_atomic(&path, format!("{}\n", g.to_hex()).as_bytes())?;
    Ok(g)
}

/// The saved host cache; an unreadable file is reported and ignored.
pub fn load_hosts(dir: &Path) -> Vec<HostEntry> {
    let path = dir.join(HOSTS_FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            warn!("ignoring unreadable host cache {}: {e}", path.display());
            Vec::new()
        }),
        Err(_) => Vec::new(),
    }
}

pub fn save_hosts(dir: &Path, hosts: &[HostEntry]) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(hosts).map_err(io::Error::other)?;
    write_atomic(&dir.join(HOSTS_FILE), &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn the_data_folder_is_made_private_and_an_open_one_is_closed() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("servent-private-{}", std::process::id()));
        let dir = base.join("a/b");
        create_private_dir(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn guid_is_made_once_and_then_kept() {
        let dir = std::env::temp_dir().join(format!("servent-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = servent_id(&dir).unwrap();
        let b = servent_id(&dir).unwrap();
        assert_eq!(a, b);
        let hosts = vec![HostEntry {
            addr: "1.2.3.4:6346".parse().unwrap(),
            ultrapeer: true,
            pinned: false,
            failures: 3,
        }];
        save_hosts(&dir, &hosts).unwrap();
        let back = load_hosts(&dir);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].addr, hosts[0].addr);
        assert_eq!(back[0].failures, 0, "back-off state is not persisted");
        std::fs::write(dir.join(HOSTS_FILE), b"{not json").unwrap();
        assert!(load_hosts(&dir).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
