//! The daemon's state file: which torrents it runs, from where, into which directory, stopped or not, and
//! which files are unwanted. Each `.torrent` added by bytes is kept beside it as `torrents/<hash>.torrent`.
//!
//! Owns: the file's JSON form (versioned) and its bounds on load. Must not: touch the engine or the disk
//! (the daemon reads and writes the bytes through `storage::files`).

use serde::{Deserialize, Serialize};

/// The format this build writes; an older or newer one is read if its fields parse.
pub const VERSION: u32 = 1;
/// Most torrents restored (a larger file is refused, not half-read).
pub const MAX_TORRENTS: usize = 10_000;
/// Largest state file read.
pub const MAX_STATE_BYTES: u64 = 16 << 20;
/// The file's name in the state directory.
pub const FILE_NAME: &str = "daemon.json";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedState {
    pub version: u32,
    pub torrents: Vec<SavedTorrent>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedTorrent {
    /// Info-hash, 40 hex digits.
    pub hash: String,
    /// The magnet link it was added by; `None` when added as a .torrent (kept in `torrents/`).
    #[serde(default)]
    pub magnet: Option<String>,
    pub name: String,
    pub dir: String,
    #[serde(default)]
    pub stopped: bool,
    /// File indices (as `rill info` and Transmission number them) not to download.
    #[serde(default)]
    pub unwanted: Vec<usize>,
    /// Unix seconds.
    #[serde(default)]
    pub added: u64,
    #[serde(default)]
    pub done: u64,
    /// Figures at the last save, shown while the torrent is stopped: verified bytes of what is wanted,
    /// bytes wanted, downloaded and uploaded.
    #[serde(default)]
    pub have: u64,
    #[serde(default)]
    pub wanted: u64,
    #[serde(default)]
    pub downloaded: u64,
    #[serde(default)]
    pub uploaded: u64,
    /// Transmission's `seedRatioMode`: 0 the session's seed ratio, 1 its own (`seed_ratio_limit`), 2 none.
    #[serde(default)]
    pub seed_ratio_mode: u8,
    #[serde(default = "default_seed_ratio")]
    pub seed_ratio_limit: f64,
    /// Time spent downloading and seeding over all runs, seconds.
    #[serde(default)]
    pub seconds_downloading: u64,
    #[serde(default)]
    pub seconds_seeding: u64,
    /// The user's tracker list (tiers of URLs), in place of the one the torrent came with; `None`: not edited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trackers: Option<Vec<Vec<String>>>,
    /// Its own rate limits, bytes/s (`None`: only the session's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_limit: Option<u64>,
}

/// Transmission's default seed ratio, shown for a torrent that never had its own.
pub const DEFAULT_SEED_RATIO: f64 = 2.0;

fn default_seed_ratio() -> f64 {
    DEFAULT_SEED_RATIO
}

#[derive(Debug)]
pub enum StateError {
    Parse(String),
    TooMany(usize),
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateError::Parse(e) => write!(f, "not a rill state file: {e}"),
            StateError::TooMany(n) => write!(f, "{n} torrents listed; at most {MAX_TORRENTS} are restored"),
        }
    }
}

impl SavedState {
    pub fn parse(bytes: &[u8]) -> Result<SavedState, StateError> {
        let state: SavedState = serde_json::from_slice(bytes).map_err(|e| StateError::Parse(e.to_string()))?;
        if state.torrents.len() > MAX_TORRENTS {
            return Err(StateError::TooMany(state.torrents.len()));
        }
        Ok(state)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }
}

/// Whether `s` is 40 hex digits (a hash from the state file becomes a file name).
pub fn is_hex_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_round_trips_and_garbage_is_an_error() {
        let state = SavedState {
            version: VERSION,
            torrents: vec![SavedTorrent {
                hash: "ab".repeat(20),
                magnet: Some("magnet:?xt=urn:btih:".to_string() + &"ab".repeat(20)),
                name: "x".into(),
                dir: "/data".into(),
                stopped: true,
                unwanted: vec![1, 3],
                added: 1_700_000_000,
                done: 0,
                have: 5,
                wanted: 10,
                downloaded: 7,
                uploaded: 1,
                seed_ratio_mode: 1,
                seed_ratio_limit: 0.5,
                seconds_downloading: 60,
                seconds_seeding: 3600,
                trackers: Some(vec![vec!["http://a/ann".into(), "udp://b:1".into()], vec![]]),
                download_limit: Some(100_000),
                upload_limit: None,
            }],
        };
        assert_eq!(SavedState::parse(&state.to_bytes()).unwrap(), state);
        assert!(SavedState::parse(b"{").is_err());
        // A file from before seed ratios: the session's ratio, Transmission's default shown.
        let old = format!(
            "{{\"version\":1,\"torrents\":[{{\"hash\":\"{}\",\"name\":\"x\",\"dir\":\"/d\"}}]}}",
            "ab".repeat(20)
        );
        let t = &SavedState::parse(old.as_bytes()).unwrap().torrents[0];
        assert_eq!((t.seed_ratio_mode, t.seed_ratio_limit), (0, DEFAULT_SEED_RATIO));
        assert!(SavedState::parse(b"{\"version\":1,\"torrents\":[{\"hash\":1}]}").is_err());
        assert!(is_hex_hash(&"0f".repeat(20)));
        assert!(!is_hex_hash("../../etc/passwd"));
    }
}
