//! The API token: 32 random bytes, hex, written at start to `<data dir>/api-token` with mode
//! 0600 from the moment the file exists, and compared in constant time.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The token file's name in the data directory.
pub const TOKEN_FILE: &str = "api-token";

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_FILE)
}

/// A fresh token from the operating system's random source.
pub fn generate() -> io::Result<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| io::Error::other(format!("no random bytes: {e}")))?;
    Ok(data_encoding::HEXLOWER.encode(&b))
}

/// Writes `token` to the token file. The file is created afresh with mode 0600 under a
/// temporary name and renamed over the old one, so no reader ever sees it readable by others
/// or half-written.
pub fn write(data_dir: &Path, token: &str) -> io::Result<PathBuf> {
    let dest = path(data_dir);
    let tmp = data_dir.join(format!(".{TOKEN_FILE}.{}", std::process::id()));
    write_private(&tmp, token)?;
    std::fs::rename(&tmp, &dest)?;
    Ok(dest)
}

/// `token` in a new file `tmp` readable by its owner only from the start.
fn write_private(tmp: &Path, token: &str) -> io::Result<()> {
    let _ = std::fs::remove_file(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)?;
    f.write_all(token.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

/// The token kept in `file`: read when it holds one, else made and written there (0600).
/// A file others may read is refused rather than trusted.
pub fn kept(file: &Path) -> io::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::read_to_string(file) {
        Ok(t) => {
            let mode = std::fs::metadata(file)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("others may read it (mode {:o}): chmod 600 it", mode & 0o777),
                ));
            }
            let t = t.trim();
            if t.len() < 32 || !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "it holds no token (32 or more printable characters); remove it to get one",
                ));
            }
            Ok(t.to_string())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let t = generate()?;
            let dir = file.parent().filter(|p| !p.as_os_str().is_empty());
            let dir = dir.unwrap_or(Path::new("."));
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or(TOKEN_FILE);
            let tmp = dir.join(format!(".{name}.{}", std::process::id()));
            write_private(&tmp, &t)?;
            std::fs::rename(&tmp, file)?;
            Ok(t)
        }
        Err(e) => Err(e),
    }
}

/// Reads the token a running daemon wrote.
pub fn read(data_dir: &Path) -> io::Result<String> {
    Ok(std::fs::read_to_string(path(data_dir))?.trim().to_string())
}

/// Equal in time independent of where the first difference is.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_64_hex_digits_and_differ() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(same(a.as_bytes(), a.as_bytes()));
        assert!(!same(a.as_bytes(), b.as_bytes()));
        assert!(!same(b"abc", b"ab"));
    }
}
