//! `.torrent` files: bytes in, a validated `Metainfo` out.
//!
//! Owns: decoding and validating metainfo (BEP 3, 12, 27, 47, 52-hybrid), the info-hash (SHA-1 of the raw
//! byte span of `info`, never of a re-serialised struct), and safe relative paths for every file.
//! Must not: open files or touch the network; it is handed `&[u8]`.

use std::fmt;
use std::path::PathBuf;

/// SHA-1 of the bencoded `info` dictionary exactly as it stands in the file.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct InfoHash(pub [u8; 20]);

impl fmt::Display for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InfoHash({self})")
    }
}

/// One file of the torrent's concatenated byte layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative path under the download directory, the torrent's name first for multi-file torrents.
    /// Every component has been checked: not empty, not `.`/`..`, no separator, no NUL.
    pub path: PathBuf,
    /// Lossy UTF-8 form of `path` for display.
    pub display_path: String,
    pub length: u64,
    /// Offset of the file's first byte in the torrent's layout.
    pub offset: u64,
    /// BEP 47 padding file: counts in the layout, is all zeros, is never created on disk.
    pub padding: bool,
}

/// A validated torrent.
#[derive(Clone, Debug)]
pub struct Metainfo {
    pub info_hash: InfoHash,
    /// Display name (from `name.utf-8` or `name`).
    pub name: String,
    pub piece_length: u32,
    pub piece_hashes: Vec<[u8; 20]>,
    pub total_length: u64,
    /// In layout order; offsets are contiguous and sum to `total_length`.
    pub files: Vec<FileEntry>,
    /// Tracker tiers (BEP 12): `announce-list` when present, else `[[announce]]`; may be empty.
    pub trackers: Vec<Vec<String>>,
    pub private: bool,
    pub comment: Option<String>,
    pub created_by: Option<String>,
}

/// Why a `.torrent` was rejected. Each variant displays as one lower-case line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetainfoError {
    NotBencode,
    MissingInfo,
    V2Only,
}

impl fmt::Display for MetainfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetainfoError::NotBencode => write!(f, "not a bencoded torrent file"),
            MetainfoError::MissingInfo => write!(f, "no info dictionary"),
            MetainfoError::V2Only => write!(f, "v2-only torrents are not supported"),
        }
    }
}

impl std::error::Error for MetainfoError {}

impl Metainfo {
    /// Parses and validates a `.torrent` file's bytes.
    pub fn from_bytes(_bytes: &[u8]) -> Result<Metainfo, MetainfoError> {
        Err(MetainfoError::NotBencode)
    }

    pub fn piece_count(&self) -> u32 {
        self.piece_hashes.len() as u32
    }
}
