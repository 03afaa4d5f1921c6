//! Settings: one TOML file (`<config dir>/servent/config.toml`, or `--config FILE`), every key
//! overridable by a `SERVENT_<KEY>` environment variable and by its flag. Precedence: flag >
//! environment > file > default. Unknown keys are errors, so a typo does not pass silently.
//!
//! Each source is read into a [`Layer`] (every key optional); the layers are merged key by key,
//! remembering where each value came from, and the result is checked once into [`Settings`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::overlay::RoleMode;

/// The default API address: the Gnutella port's neighbour, on loopback only.
pub const DEFAULT_API: &str = "127.0.0.1:6347";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:6346";

/// One source's settings; absent keys are left to the sources below it.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shares: Option<Vec<PathBuf>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_peers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_leaves: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ultrapeers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_slots: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firewalled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compress: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_private: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uhc: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gwc: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share_partial: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_limit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_limit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_policy: Option<String>,
    pub source_patience: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_token_file: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    List,
    Number,
    Bool,
}

/// Every key, its kind (for reading environment variables) and its default in words.
const KEYS: &[(&str, Kind, &str)] = &[
    ("listen", Kind::Text, DEFAULT_LISTEN),
    ("api", Kind::Text, DEFAULT_API),
    ("data_dir", Kind::Text, "the platform data directory"),
    ("shares", Kind::List, "<data_dir>/shared"),
    ("peers", Kind::List, "none"),
    ("role", Kind::Text, "auto"),
    ("max_peers", Kind::Number, "32"),
    ("max_leaves", Kind::Number, "30"),
    ("ultrapeers", Kind::Number, "3"),
    ("upload_slots", Kind::Number, "4"),
    ("firewalled", Kind::Bool, "observed"),
    ("compress", Kind::Bool, "true"),
    ("allow_private", Kind::Bool, "false"),
    ("bootstrap", Kind::Bool, "true"),
    ("uhc", Kind::List, "built-in list"),
    ("gwc", Kind::List, "built-in list"),
    ("download_dir", Kind::Text, "the platform download folder"),
    ("share_partial", Kind::Bool, "true"),
    ("upload_limit", Kind::Text, "off"),
    ("download_limit", Kind::Text, "off"),
    ("upload_policy", Kind::Text, "tit-for-tat"),
    ("source_patience", Kind::Number, "300"),
    (
        "api_token_file",
        Kind::Text,
        "none: a new token at every start",
    ),
];

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
    Env(String),
    Flag,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(p) => write!(f, "file {}", p.display()),
            Origin::Env(v) => write!(f, "environment {v}"),
            Origin::Flag => f.write_str("flag"),
        }
    }
}

/// The effective settings of `servent run` (and where the CLI finds the API).
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddrV4,
    /// `None` when the API is off.
    pub api: Option<SocketAddr>,
    pub data_dir: PathBuf,
    /// Empty: the data directory's `shared` folder.
    pub shares: Vec<PathBuf>,
    pub peers: Vec<String>,
    /// auto (by reputation), leaf or ultrapeer.
    pub role: RoleMode,
    pub max_peers: usize,
    pub max_leaves: usize,
    /// Ultrapeer links kept as a leaf.
    pub ultrapeers: usize,
    pub upload_slots: usize,
    /// `None`: observed (firewalled until a connection from outside arrives).
    pub firewalled: Option<bool>,
    pub compress: bool,
    pub allow_private: bool,
    pub bootstrap: bool,
    pub uhc: Vec<String>,
    pub gwc: Vec<String>,
    pub download_dir: PathBuf,
    /// Offer the verified parts of files still downloading (the swarm).
    pub share_partial: bool,
    /// Bytes per second for all uploads together; 0: no limit.
    pub upload_limit: u64,
    /// Bytes per second for all downloads together; 0: no limit.
    pub download_limit: u64,
    /// Who gets the upload slots: those who give most (`tit-for-tat`) or the first come.
    pub upload_policy: crate::swarm::queue::Policy,
    /// Seconds a download keeps trying a source it cannot reach.
    pub source_patience: u64,
    /// Keep the API token in this file across restarts (a bookmarked page keeps working).
    pub api_token_file: Option<PathBuf>,
    /// Each key's value as TOML and its origin, in key order.
    pub origins: Vec<(&'static str, String, Origin)>,
}

/// The default settings file.
pub fn default_path() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("servent").join("config.toml"))
}

pub fn parse_role(s: &str) -> Result<RoleMode, String> {
    s.parse()
}

/// `off` or an address.
pub fn parse_api(s: &str) -> Result<Option<SocketAddr>, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| format!("{s:?} is not an address like {DEFAULT_API} (or off)"))
}

/// Reads the settings file: `explicit` must exist; the default one may be missing.
pub fn read_file(explicit: Option<&Path>) -> Result<Option<(PathBuf, String, Layer)>, String> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => match default_path() {
            Some(p) if p.exists() => p,
            _ => return Ok(None),
        },
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read the settings file {}: {e}", path.display()))?;
    let layer: Layer = toml::from_str(&text)
        .map_err(|e| format!("{}: {}", path.display(), e.to_string().trim_end()))?;
    Ok(Some((path, text, layer)))
}

/// The `SERVENT_<KEY>` variables among `vars`. Lists are comma-separated. A `SERVENT_` variable
/// that names no key is an error, like an unknown key in the file.
pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Result<Layer, String> {
    let mut table = toml::Table::new();
    for (name, value) in vars {
        let Some(key) = name.strip_prefix("SERVENT_") else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        let Some(&(k, kind, _)) = KEYS.iter().find(|(k, _, _)| *k == key) else {
            return Err(format!(
                "{name}: no such setting (the settings are {})",
                KEYS.iter().map(|k| k.0).collect::<Vec<_>>().join(", ")
            ));
        };
        let v = match kind {
            Kind::Text => toml::Value::String(value),
            Kind::List => toml::Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_string()))
                    .collect(),
            ),
            Kind::Number => toml::Value::Integer(
                value
                    .trim()
                    .parse()
                    .map_err(|_| format!("{name}: {value:?} is not a whole number"))?,
            ),
            Kind::Bool => toml::Value::Boolean(match value.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => return Err(format!("{name}: {value:?} is not true or false")),
            }),
        };
        table.insert(k.to_string(), v);
    }
    toml::Value::Table(table)
        .try_into()
        .map_err(|e| format!("environment: {e}"))
}

fn to_table(l: &Layer) -> toml::Table {
    toml::Table::try_from(l).unwrap_or_default()
}

/// The line of `key = …` in a settings file, for error messages.
fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

impl Settings {
    /// Merges the file (if any), the environment and the flags over the defaults.
    pub fn load(
        explicit: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Layer,
    ) -> Result<Settings, String> {
        let file = read_file(explicit)?;
        let env = from_env(env)?;
        let mut merged = toml::Table::new();
        let mut origin: BTreeMap<String, Origin> = BTreeMap::new();
        if let Some((path, _, layer)) = &file {
            for (k, v) in to_table(layer) {
                origin.insert(k.clone(), Origin::File(path.clone()));
                merged.insert(k, v);
            }
        }
        for (k, v) in to_table(&env) {
            origin.insert(
                k.clone(),
                Origin::Env(format!("SERVENT_{}", k.to_uppercase())),
            );
            merged.insert(k, v);
        }
        for (k, v) in to_table(flags) {
            origin.insert(k.clone(), Origin::Flag);
            merged.insert(k, v);
        }
        let layer: Layer = toml::Value::Table(merged)
            .try_into()
            .map_err(|e| e.to_string())?;
        // Names the source of a bad value: the file with its line, the variable or the flag.
        let place = |key: &str| -> String {
            match origin.get(key) {
                Some(Origin::File(p)) => {
                    let text = file.as_ref().map(|f| f.1.as_str()).unwrap_or("");
                    match line_of(text, key) {
                        Some(n) => format!("{}:{n}: {key}", p.display()),
                        None => format!("{}: {key}", p.display()),
                    }
                }
                Some(Origin::Env(v)) => v.clone(),
                Some(Origin::Flag) => format!("--{}", key.replace('_', "-")),
                _ => key.to_string(),
            }
        };
        let listen = match &layer.listen {
            None => DEFAULT_LISTEN.parse().expect("valid default"),
            Some(s) => s.parse::<SocketAddrV4>().map_err(|_| {
                format!(
                    "{}: {s:?} is not an IPv4 address and port like {DEFAULT_LISTEN}",
                    place("listen")
                )
            })?,
        };
        let api = match &layer.api {
            None => parse_api(DEFAULT_API).expect("valid default"),
            Some(s) => parse_api(s).map_err(|e| format!("{}: {e}", place("api")))?,
        };
        let role = match &layer.role {
            None => RoleMode::Auto,
            Some(s) => parse_role(s).map_err(|e| format!("{}: {e}", place("role")))?,
        };
        let data_dir = layer
            .data_dir
            .clone()
            .unwrap_or_else(crate::store::default_data_dir);
        let download_dir = layer
            .download_dir
            .clone()
            .unwrap_or_else(|| dirs::download_dir().unwrap_or_else(|| data_dir.join("downloads")));
        let ultrapeers = layer.ultrapeers.unwrap_or(3);
        if ultrapeers == 0 {
            return Err(format!(
                "{}: a leaf needs at least 1 ultrapeer link (3 is usual)",
                place("ultrapeers")
            ));
        }
        let upload_slots = layer.upload_slots.unwrap_or(4);
        if upload_slots == 0 {
            return Err(format!(
                "{}: 0 upload slots would serve nobody; give 1 or more",
                place("upload_slots")
            ));
        }
        let source_patience = layer.source_patience.unwrap_or(300);
        let rate = |key: &str, v: &Option<String>| -> Result<u64, String> {
            v.as_deref()
                .map_or(Ok(0), crate::transfer::limit::parse_rate)
                .map_err(|e| format!("{}: {e}", place(key)))
        };
        let upload_limit = rate("upload_limit", &layer.upload_limit)?;
        let download_limit = rate("download_limit", &layer.download_limit)?;
        let upload_policy = layer
            .upload_policy
            .as_deref()
            .map_or(Ok(Default::default()), str::parse)
            .map_err(|e| format!("{}: {e}", place("upload_policy")))?;
        let s = Settings {
            listen,
            api,
            data_dir,
            shares: layer.shares.clone().unwrap_or_default(),
            peers: layer.peers.clone().unwrap_or_default(),
            role,
            max_peers: layer.max_peers.unwrap_or(32),
            max_leaves: layer.max_leaves.unwrap_or(30),
            ultrapeers,
            upload_slots,
            firewalled: layer.firewalled,
            compress: layer.compress.unwrap_or(true),
            allow_private: layer.allow_private.unwrap_or(false),
            bootstrap: layer.bootstrap.unwrap_or(true),
            uhc: layer.uhc.clone().unwrap_or_default(),
            gwc: layer.gwc.clone().unwrap_or_default(),
            download_dir,
            share_partial: layer.share_partial.unwrap_or(true),
            upload_limit,
            download_limit,
            upload_policy,
            source_patience,
            api_token_file: layer.api_token_file.clone(),
            origins: Vec::new(),
        };
        let effective = to_table(&s.as_layer());
        let origins = KEYS
            .iter()
            .map(|(k, _, default)| {
                let o = origin.get(*k).cloned().unwrap_or(Origin::Default);
                let v = match effective.get(*k) {
                    Some(v) => v.to_string(),
                    None => format!("# {default}"),
                };
                (*k, v, o)
            })
            .collect();
        Ok(Settings { origins, ..s })
    }

    /// The settings as a layer, every key that has a value set.
    pub fn as_layer(&self) -> Layer {
        Layer {
            listen: Some(self.listen.to_string()),
            api: Some(
                self.api
                    .map_or_else(|| "off".to_string(), |a| a.to_string()),
            ),
            data_dir: Some(self.data_dir.clone()),
            shares: (!self.shares.is_empty()).then(|| self.shares.clone()),
            peers: Some(self.peers.clone()),
            role: Some(self.role.to_string()),
            max_peers: Some(self.max_peers),
            max_leaves: Some(self.max_leaves),
            ultrapeers: Some(self.ultrapeers),
            upload_slots: Some(self.upload_slots),
            firewalled: self.firewalled,
            compress: Some(self.compress),
            allow_private: Some(self.allow_private),
            bootstrap: Some(self.bootstrap),
            uhc: (!self.uhc.is_empty()).then(|| self.uhc.clone()),
            gwc: (!self.gwc.is_empty()).then(|| self.gwc.clone()),
            download_dir: Some(self.download_dir.clone()),
            share_partial: Some(self.share_partial),
            upload_limit: Some(crate::transfer::limit::format_rate(self.upload_limit)),
            download_limit: Some(crate::transfer::limit::format_rate(self.download_limit)),
            upload_policy: Some(self.upload_policy.to_string()),
            source_patience: Some(self.source_patience),
            api_token_file: self.api_token_file.clone(),
        }
    }

    /// The effective settings as TOML, each key with its origin in a comment. Keys left to a
    /// computed default show it in the comment.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (k, v, o) in &self.origins {
            if let Some(d) = v.strip_prefix("# ") {
                out.push_str(&format!("# {k}: {d} ({o})\n"));
            } else {
                out.push_str(&format!("{k} = {v}  # {o}\n"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn environment_values_are_typed_by_key() {
        let l = from_env(env(&[
            ("SERVENT_MAX_PEERS", "7"),
            ("SERVENT_PEERS", "a:1, b:2"),
            ("SERVENT_COMPRESS", "no"),
            ("HOME", "/root"),
        ]))
        .unwrap();
        assert_eq!(l.max_peers, Some(7));
        assert_eq!(l.peers, Some(vec!["a:1".into(), "b:2".into()]));
        assert_eq!(l.compress, Some(false));
        assert!(
            from_env(env(&[("SERVENT_LISEN", "x")]))
                .unwrap_err()
                .contains("no such setting")
        );
        assert!(
            from_env(env(&[("SERVENT_MAX_PEERS", "many")]))
                .unwrap_err()
                .contains("whole number")
        );
    }

    #[test]
    fn file_lines_are_found_for_messages() {
        let t = "# c\nlisten = \"x\"\n  role=\"leaf\"\n";
        assert_eq!(line_of(t, "listen"), Some(2));
        assert_eq!(line_of(t, "role"), Some(3));
        assert_eq!(line_of(t, "api"), None);
    }

    #[test]
    fn every_key_is_a_layer_field() {
        let full = Layer {
            listen: Some(String::new()),
            api: Some(String::new()),
            data_dir: Some(PathBuf::new()),
            shares: Some(vec![]),
            peers: Some(vec![]),
            role: Some(String::new()),
            max_peers: Some(0),
            max_leaves: Some(0),
            ultrapeers: Some(0),
            upload_slots: Some(0),
            firewalled: Some(false),
            compress: Some(false),
            allow_private: Some(false),
            bootstrap: Some(false),
            uhc: Some(vec![]),
            gwc: Some(vec![]),
            download_dir: Some(PathBuf::new()),
            share_partial: Some(true),
            upload_limit: Some(String::new()),
            download_limit: Some(String::new()),
            upload_policy: Some(String::new()),
            source_patience: Some(0),
            api_token_file: Some(PathBuf::new()),
        };
        let t = to_table(&full);
        let mut names: Vec<&str> = t.keys().map(String::as_str).collect();
        let mut keys: Vec<&str> = KEYS.iter().map(|k| k.0).collect();
        names.sort_unstable();
        keys.sort_unstable();
        assert_eq!(names, keys);
    }
}
