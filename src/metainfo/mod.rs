//! `.torrent` files: bytes in, a validated `Metainfo` out.
//!
//! Owns: decoding and validating metainfo (BEP 3, 12, 27, 47, 52-hybrid), the info-hash (SHA-1 of the raw
//! byte span of `info`, never of a re-serialised struct), and safe relative paths for every file.
//! Must not: open files or touch the network; it is handed `&[u8]`.
//!
//! Parsing runs in three steps:
//! 1. [`bencode::value_span`] checks the whole top-level value (bounded depth, checked lengths) and
//!    [`bencode::dict_value_span`] finds the raw `info` span, which is hashed as it stands. Only then does
//!    serde_bencode see the bytes, so its recursion is bounded by [`bencode::MAX_DEPTH`].
//! 2. serde_bencode decodes the typed fields; unknown keys are ignored (they still count in the hash). The
//!    `info` struct is decoded from the very span that was hashed. Fields that do not affect the data
//!    (`announce`, `announce-list`, `comment`, `created by`, `private`) are read leniently: a wrong type is
//!    treated as absent rather than rejecting the torrent, as libtorrent does.
//! 3. Validation: piece geometry, lengths, and path safety. Each failure is one [`MetainfoError`] variant.
//!
//! Bytes after the top-level dictionary are ignored: libtorrent 2.0.8 and Transmission 3.00 both load such
//! files, and the trailing bytes cannot change the info-hash.
//!
//! Names and paths: `name.utf-8` / `path.utf-8` win when present and valid UTF-8; otherwise bytes are decoded
//! lossily (invalid sequences become U+FFFD). The lossy text is both the display form and the on-disk name,
//! and the component checks run on it, so no byte sequence can smuggle a separator, NUL or `..` past them.

pub mod create;

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_bencode::value::Value;
use serde_bytes::ByteBuf;
use sha1::{Digest, Sha1};

use crate::bencode::{self, BencodeError};

/// Largest accepted piece length: 256 MiB. mktorrent and libtorrent top out at 2²⁴–2²⁸ for real content;
/// anything bigger is a corrupt or hostile file.
pub const MAX_PIECE_LENGTH: u32 = 256 * 1024 * 1024;

/// Bytes per SHA-1 piece hash in `pieces` (BEP 3).
const PIECE_HASH_LEN: usize = 20;

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
    /// BEP 47 symlink entry (`attr` `l`): the link's target, relative to the torrent's top directory and
    /// checked to stay inside it. Such an entry has length 0 and is created as a symlink, never written.
    pub symlink_target: Option<PathBuf>,
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

/// What is wrong with one path component (or a torrent name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathProblem {
    Empty,
    Dot,
    DotDot,
    /// Starts with `/` or `\`.
    Absolute,
    /// Holds `/` or `\` after its first byte.
    Separator,
    Nul,
}

impl fmt::Display for PathProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathProblem::Empty => "an empty component",
            PathProblem::Dot => "a `.` component",
            PathProblem::DotDot => "a `..` component",
            PathProblem::Absolute => "an absolute component",
            PathProblem::Separator => "a path separator inside a component",
            PathProblem::Nul => "a nul byte",
        })
    }
}

/// Why a `.torrent` was rejected. Each variant displays as one lower-case line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetainfoError {
    /// Not bencode, or its top-level value is not a dictionary.
    NotBencode(BencodeError),
    MissingInfo,
    InfoNotADictionary,
    /// Well-formed bencode whose fields have the wrong types (serde_bencode's message).
    Malformed {
        part: &'static str,
        detail: String,
    },
    MissingField(&'static str),
    /// `meta version` 2 and no v1 `pieces` (BEP 52).
    V2Only,
    PieceLengthZero,
    PieceLengthOutOfRange(i64),
    PiecesNotMultipleOf20 {
        len: usize,
    },
    PieceCountMismatch {
        have: u64,
        want: u64,
    },
    TooManyPieces(u64),
    /// Both `length` (single-file) and `files` (multi-file).
    LengthAndFiles,
    /// Neither `length` nor `files`.
    NoLayout,
    /// A multi-file torrent with an empty `files` list.
    NoFiles,
    NegativeLength(i64),
    /// The sum of the file lengths does not fit in 64 bits.
    TotalTooLarge,
    /// Every file is empty: there is nothing to download.
    EmptyTorrent,
    UnsafeName {
        name: String,
        problem: PathProblem,
    },
    /// A file whose `path` list is empty.
    EmptyPath {
        index: usize,
    },
    UnsafePath {
        path: String,
        problem: PathProblem,
    },
    DuplicatePath(String),
    /// A file's path is also another file's folder.
    FileIsFolder(String),
}

impl fmt::Display for MetainfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetainfoError::NotBencode(e) => write!(f, "not a bencoded torrent file: {e}"),
            MetainfoError::MissingInfo => write!(f, "no info dictionary"),
            MetainfoError::InfoNotADictionary => write!(f, "info is not a dictionary"),
            MetainfoError::Malformed { part, detail } => write!(f, "malformed {part}: {detail}"),
            MetainfoError::MissingField(field) => write!(f, "missing field `{field}`"),
            MetainfoError::V2Only => write!(f, "v2-only torrents are not supported"),
            MetainfoError::PieceLengthZero => write!(f, "piece length is 0"),
            MetainfoError::PieceLengthOutOfRange(n) => {
                write!(f, "piece length {n} is outside 1..={MAX_PIECE_LENGTH}")
            }
            MetainfoError::PiecesNotMultipleOf20 { len } => {
                write!(f, "pieces holds {len} bytes, not a multiple of 20")
            }
            MetainfoError::PieceCountMismatch { have, want } => {
                write!(f, "pieces holds {have} hashes but the total length needs {want}")
            }
            MetainfoError::TooManyPieces(n) => write!(f, "{n} pieces is more than rill can count"),
            MetainfoError::LengthAndFiles => {
                write!(f, "info has both `length` and `files`")
            }
            MetainfoError::NoLayout => write!(f, "info has neither `length` nor `files`"),
            MetainfoError::NoFiles => write!(f, "the files list is empty"),
            MetainfoError::NegativeLength(n) => write!(f, "negative file length {n}"),
            MetainfoError::TotalTooLarge => write!(f, "total length overflows 64 bits"),
            MetainfoError::EmptyTorrent => write!(f, "torrent holds no data (total length is 0)"),
            MetainfoError::UnsafeName { name, problem } => {
                write!(f, "unsafe torrent name {name:?}: {problem}")
            }
            MetainfoError::EmptyPath { index } => write!(f, "file {index} has an empty path"),
            MetainfoError::UnsafePath { path, problem } => {
                write!(f, "unsafe file path {path:?}: {problem}")
            }
            MetainfoError::DuplicatePath(path) => {
                write!(f, "two files share the path {path:?}")
            }
            MetainfoError::FileIsFolder(path) => {
                write!(f, "{path:?} is both a file and a folder")
            }
        }
    }
}

impl std::error::Error for MetainfoError {}

/// The top-level keys rill reads; `info` is decoded separately from its raw span.
#[derive(Deserialize)]
struct RawTorrent {
    announce: Option<Value>,
    #[serde(rename = "announce-list")]
    announce_list: Option<Value>,
    comment: Option<Value>,
    #[serde(rename = "comment.utf-8")]
    comment_utf8: Option<Value>,
    #[serde(rename = "created by")]
    created_by: Option<Value>,
}

#[derive(Deserialize)]
struct RawInfo {
    #[serde(rename = "piece length")]
    piece_length: Option<i64>,
    pieces: Option<ByteBuf>,
    name: Option<ByteBuf>,
    #[serde(rename = "name.utf-8")]
    name_utf8: Option<ByteBuf>,
    length: Option<i64>,
    files: Option<Vec<RawFile>>,
    private: Option<Value>,
    #[serde(rename = "meta version")]
    meta_version: Option<Value>,
}

#[derive(Deserialize)]
struct RawFile {
    length: Option<i64>,
    path: Option<Vec<ByteBuf>>,
    #[serde(rename = "path.utf-8")]
    path_utf8: Option<Vec<ByteBuf>>,
    attr: Option<ByteBuf>,
}

impl Metainfo {
    /// Parses and validates a `.torrent` file's bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Metainfo, MetainfoError> {
        // 1. Structure, and the info-hash over the raw span.
        let outer = bencode::value_span(bytes, 0).map_err(MetainfoError::NotBencode)?;
        let outer = &bytes[outer];
        let info_span = bencode::dict_value_span(outer, b"info")
            .map_err(MetainfoError::NotBencode)?
            .ok_or(MetainfoError::MissingInfo)?;
        let info_bytes = &outer[info_span];
        if info_bytes.first() != Some(&b'd') {
            return Err(MetainfoError::InfoNotADictionary);
        }
        let info_hash = InfoHash(Sha1::digest(info_bytes).into());

        // 2. Typed fields.
        let top: RawTorrent = serde_bencode::from_bytes(outer).map_err(|e| malformed("torrent", e))?;
        let info: RawInfo = serde_bencode::from_bytes(info_bytes).map_err(|e| malformed("info dictionary", e))?;

        // 3. Validation. v2-only first: such a torrent lacks `pieces`, and that is the better message.
        let meta_version = info.meta_version.as_ref().and_then(as_int);
        let pieces = match info.pieces {
            Some(pieces) => pieces,
            None if meta_version.is_some_and(|v| v >= 2) => return Err(MetainfoError::V2Only),
            None => return Err(MetainfoError::MissingField("pieces")),
        };
        let piece_length = match info.piece_length {
            None => return Err(MetainfoError::MissingField("piece length")),
            Some(0) => return Err(MetainfoError::PieceLengthZero),
            Some(n) => u32::try_from(n)
                .ok()
                .filter(|&n| n <= MAX_PIECE_LENGTH)
                .ok_or(MetainfoError::PieceLengthOutOfRange(n))?,
        };
        if pieces.len() % PIECE_HASH_LEN != 0 {
            return Err(MetainfoError::PiecesNotMultipleOf20 { len: pieces.len() });
        }

        let raw_name = info.name.ok_or(MetainfoError::MissingField("name"))?;
        let name = prefer_utf8(info.name_utf8.as_ref().map(|n| n.as_slice()), &raw_name);
        if let Err(problem) = check_component(&name) {
            return Err(MetainfoError::UnsafeName { name, problem });
        }

        let files = match (info.length, info.files) {
            (Some(_), Some(_)) => return Err(MetainfoError::LengthAndFiles),
            (None, None) => return Err(MetainfoError::NoLayout),
            (Some(length), None) => vec![FileEntry {
                path: PathBuf::from(&name),
                display_path: name.clone(),
                length: file_length(length)?,
                offset: 0,
                padding: false,
                symlink_target: None,
            }],
            (None, Some(raw_files)) => multi_file_layout(&name, raw_files)?,
        };
        let total_length = files
            .iter()
            .try_fold(0u64, |sum, file| sum.checked_add(file.length))
            .ok_or(MetainfoError::TotalTooLarge)?;
        if total_length == 0 {
            return Err(MetainfoError::EmptyTorrent);
        }
        check_unique_paths(&files)?;

        let have = (pieces.len() / PIECE_HASH_LEN) as u64;
        let want = total_length.div_ceil(u64::from(piece_length));
        if have != want {
            return Err(MetainfoError::PieceCountMismatch { have, want });
        }
        if u32::try_from(have).is_err() {
            return Err(MetainfoError::TooManyPieces(have));
        }
        let piece_hashes = pieces
            .chunks_exact(PIECE_HASH_LEN)
            .map(|chunk| {
                let mut hash = [0; PIECE_HASH_LEN];
                hash.copy_from_slice(chunk);
                hash
            })
            .collect();

        Ok(Metainfo {
            info_hash,
            name,
            piece_length,
            piece_hashes,
            total_length,
            files,
            trackers: tracker_tiers(top.announce_list.as_ref(), top.announce.as_ref()),
            private: info.private.as_ref().and_then(as_int) == Some(1),
            comment: top.comment_utf8.or(top.comment).as_ref().and_then(as_text),
            created_by: top.created_by.as_ref().and_then(as_text),
        })
    }

    pub fn piece_count(&self) -> u32 {
        self.piece_hashes.len() as u32
    }

    /// The files a user can pick, numbered 0, 1, 2, … in layout order: every file except padding. This
    /// numbering is what `rill info` prints and what `--files` takes.
    pub fn selectable_files(&self) -> impl Iterator<Item = (usize, &FileEntry)> + '_ {
        self.files.iter().filter(|file| !file.padding).enumerate()
    }
}

fn malformed(part: &'static str, error: serde_bencode::Error) -> MetainfoError {
    // serde_bencode's messages start with a capital ("Invalid Type: …"); ours are lower case.
    let text = error.to_string().replace(['\n', '\r'], " ");
    let mut chars = text.chars();
    let detail = match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    };
    MetainfoError::Malformed { part, detail }
}

/// BEP 3 multi-file layout: `name` is the folder, each entry's `path` the components below it.
fn multi_file_layout(name: &str, raw_files: Vec<RawFile>) -> Result<Vec<FileEntry>, MetainfoError> {
    if raw_files.is_empty() {
        return Err(MetainfoError::NoFiles);
    }
    let mut files = Vec::with_capacity(raw_files.len());
    let mut offset: u64 = 0;
    for (index, raw) in raw_files.into_iter().enumerate() {
        let length = file_length(raw.length.ok_or(MetainfoError::MissingField("length"))?)?;
        let raw_path = raw.path.ok_or(MetainfoError::MissingField("path"))?;
        let components: Vec<String> = match raw.path_utf8 {
            Some(utf8) if utf8.iter().all(|c| std::str::from_utf8(c).is_ok()) => {
                utf8.iter().map(|c| String::from_utf8_lossy(c).into_owned()).collect()
            }
            _ => raw_path.iter().map(|c| String::from_utf8_lossy(c).into_owned()).collect(),
        };
        if components.is_empty() {
            return Err(MetainfoError::EmptyPath { index });
        }
        let mut path = PathBuf::from(name);
        let mut display_path = name.to_owned();
        for component in &components {
            path.push(component);
            display_path.push('/');
            display_path.push_str(component);
        }
        for component in &components {
            if let Err(problem) = check_component(component) {
                return Err(MetainfoError::UnsafePath { path: display_path, problem });
            }
        }
        files.push(FileEntry {
            path,
            display_path,
            length,
            offset,
            padding: is_padding(raw.attr.as_ref().map(|a| a.as_slice()), &components),
            symlink_target: None,
        });
        offset = offset.checked_add(length).ok_or(MetainfoError::TotalTooLarge)?;
    }
    Ok(files)
}

/// BEP 47: `attr` holds `p` for a padding file. BitComet's older padding files carry no `attr` but a
/// `_____padding_file_` name; libtorrent treats those as padding too.
fn is_padding(attr: Option<&[u8]>, components: &[String]) -> bool {
    attr.is_some_and(|attr| attr.contains(&b'p'))
        || components.last().is_some_and(|last| last.starts_with("_____padding_file_"))
}

fn file_length(length: i64) -> Result<u64, MetainfoError> {
    u64::try_from(length).map_err(|_| MetainfoError::NegativeLength(length))
}

/// A path component (or torrent name) that is safe to join under the download directory.
fn check_component(component: &str) -> Result<(), PathProblem> {
    match component {
        "" => Err(PathProblem::Empty),
        "." => Err(PathProblem::Dot),
        ".." => Err(PathProblem::DotDot),
        _ if component.starts_with(['/', '\\']) => Err(PathProblem::Absolute),
        _ if component.contains(['/', '\\']) => Err(PathProblem::Separator),
        _ if component.contains('\0') => Err(PathProblem::Nul),
        _ => Ok(()),
    }
}

/// Files that storage would create must not collide: no two share a path and none is another's folder.
/// Padding files are never created, so they may repeat (libtorrent names them `.pad/<size>`).
fn check_unique_paths(files: &[FileEntry]) -> Result<(), MetainfoError> {
    let real = || files.iter().filter(|file| !file.padding);
    let mut paths: HashSet<&Path> = HashSet::with_capacity(files.len());
    for file in real() {
        if !paths.insert(&file.path) {
            return Err(MetainfoError::DuplicatePath(file.display_path.clone()));
        }
    }
    for file in real() {
        if let Some(folder) = file.path.ancestors().skip(1).find(|folder| paths.contains(folder)) {
            return Err(MetainfoError::FileIsFolder(folder.to_string_lossy().into_owned()));
        }
    }
    Ok(())
}

/// `preferred` (a `.utf-8` key) when it is valid UTF-8, else `raw` decoded lossily.
fn prefer_utf8(preferred: Option<&[u8]>, raw: &[u8]) -> String {
    match preferred.map(std::str::from_utf8) {
        Some(Ok(text)) => text.to_owned(),
        _ => String::from_utf8_lossy(raw).into_owned(),
    }
}

fn as_int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        _ => None,
    }
}

fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::Bytes(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        _ => None,
    }
}

/// BEP 12 (<https://www.bittorrent.org/beps/bep_0012.html>): `announce-list` when it names at least one
/// tracker, else `announce`. URLs that are not UTF-8 or are blank are dropped, as are repeats and the tiers
/// left empty; entries of the wrong type are skipped. Shuffling within tiers is the tracker module's job.
fn tracker_tiers(announce_list: Option<&Value>, announce: Option<&Value>) -> Vec<Vec<String>> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut url = |value: &Value| match value {
        Value::Bytes(bytes) => match std::str::from_utf8(bytes).map(str::trim) {
            Ok(url) if !url.is_empty() && seen.insert(url.to_owned()) => Some(url.to_owned()),
            _ => None,
        },
        _ => None,
    };
    let mut tiers = Vec::new();
    if let Some(Value::List(list)) = announce_list {
        for tier in list {
            if let Value::List(urls) = tier {
                let tier: Vec<String> = urls.iter().filter_map(&mut url).collect();
                if !tier.is_empty() {
                    tiers.push(tier);
                }
            }
        }
    }
    if tiers.is_empty() {
        if let Some(url) = announce.and_then(url) {
            tiers.push(vec![url]);
        }
    }
    tiers
}

#[cfg(test)]
mod tests;
