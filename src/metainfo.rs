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
mod tests {
    use super::*;
    use crate::rng::Rng;

    // ---- A tiny bencode writer that keeps key order as given, so tests can build any torrent ----

    #[derive(Clone, Debug)]
    enum B {
        Int(i64),
        Str(Vec<u8>),
        List(Vec<B>),
        Dict(Vec<(Vec<u8>, B)>),
    }

    fn s(text: impl AsRef<[u8]>) -> B {
        B::Str(text.as_ref().to_vec())
    }

    fn list(items: impl IntoIterator<Item = B>) -> B {
        B::List(items.into_iter().collect())
    }

    fn dict<'a>(entries: impl IntoIterator<Item = (&'a str, B)>) -> B {
        B::Dict(entries.into_iter().map(|(k, v)| (k.as_bytes().to_vec(), v)).collect())
    }

    impl B {
        fn encode_into(&self, out: &mut Vec<u8>) {
            match self {
                B::Int(n) => out.extend(format!("i{n}e").bytes()),
                B::Str(bytes) => {
                    out.extend(format!("{}:", bytes.len()).bytes());
                    out.extend(bytes);
                }
                B::List(items) => {
                    out.push(b'l');
                    items.iter().for_each(|item| item.encode_into(out));
                    out.push(b'e');
                }
                B::Dict(entries) => {
                    out.push(b'd');
                    for (key, value) in entries {
                        B::Str(key.clone()).encode_into(out);
                        value.encode_into(out);
                    }
                    out.push(b'e');
                }
            }
        }

        fn encode(&self) -> Vec<u8> {
            let mut out = Vec::new();
            self.encode_into(&mut out);
            out
        }

        /// Replaces (or appends) `key` in a dictionary.
        fn with(mut self, key: &str, value: B) -> B {
            if let B::Dict(entries) = &mut self {
                match entries.iter_mut().find(|(k, _)| k == key.as_bytes()) {
                    Some(entry) => entry.1 = value,
                    None => entries.push((key.as_bytes().to_vec(), value)),
                }
            }
            self
        }

        fn without(mut self, key: &str) -> B {
            if let B::Dict(entries) = &mut self {
                entries.retain(|(k, _)| k != key.as_bytes());
            }
            self
        }
    }

    const PIECE: i64 = 16384;

    fn pieces_for(total: i64) -> B {
        let count = (total + PIECE - 1) / PIECE;
        B::Str((0..count * 20).map(|i| i as u8).collect())
    }

    /// A valid single-file info dictionary: 40,000 bytes in three pieces.
    fn single_info() -> B {
        dict([
            ("length", B::Int(40_000)),
            ("name", s("single.bin")),
            ("piece length", B::Int(PIECE)),
            ("pieces", pieces_for(40_000)),
        ])
    }

    fn file(length: i64, path: &[&str]) -> B {
        dict([("length", B::Int(length)), ("path", list(path.iter().map(s)))])
    }

    /// A valid multi-file info dictionary: 1,000 + 0 + 20,000 bytes, nested folders.
    fn multi_info() -> B {
        dict([
            (
                "files",
                list([file(1000, &["readme.txt"]), file(0, &["empty.dat"]), file(20_000, &["a", "b", "one.bin"])]),
            ),
            ("name", s("multi")),
            ("piece length", B::Int(PIECE)),
            ("pieces", pieces_for(21_000)),
        ])
    }

    fn torrent(info: B) -> Vec<u8> {
        dict([("announce", s("http://127.0.0.1:6969/announce")), ("info", info)]).encode()
    }

    #[track_caller]
    fn parse(info: B) -> Metainfo {
        match Metainfo::from_bytes(&torrent(info)) {
            Ok(m) => m,
            Err(e) => panic!("rejected: {e}"),
        }
    }

    #[track_caller]
    fn rejection(info: B) -> MetainfoError {
        match Metainfo::from_bytes(&torrent(info)) {
            Ok(m) => panic!("accepted: {m:?}"),
            Err(e) => e,
        }
    }

    fn sha1(bytes: &[u8]) -> [u8; 20] {
        Sha1::digest(bytes).into()
    }

    // ---- Valid torrents ----

    #[test]
    fn single_file_layout_and_fields() {
        let info = single_info().with("private", B::Int(1));
        let bytes = dict([
            ("announce", s("http://t/a")),
            ("comment", s("hello")),
            ("created by", s("rill test")),
            ("info", info.clone()),
        ])
        .encode();
        let m = Metainfo::from_bytes(&bytes).unwrap();
        assert_eq!(m.info_hash, InfoHash(sha1(&info.encode())));
        assert_eq!(m.name, "single.bin");
        assert_eq!(m.piece_length, 16384);
        assert_eq!(m.piece_count(), 3);
        assert_eq!(m.piece_hashes[1][0], 20);
        assert_eq!(m.total_length, 40_000);
        assert_eq!(
            m.files,
            [FileEntry {
                path: PathBuf::from("single.bin"),
                display_path: "single.bin".into(),
                length: 40_000,
                offset: 0,
                padding: false,
            }]
        );
        assert_eq!(m.trackers, [["http://t/a"]]);
        assert!(m.private);
        assert_eq!(m.comment.as_deref(), Some("hello"));
        assert_eq!(m.created_by.as_deref(), Some("rill test"));
    }

    #[test]
    fn multi_file_layout_has_name_first_and_contiguous_offsets() {
        let m = parse(multi_info());
        let layout: Vec<_> = m.files.iter().map(|f| (f.display_path.as_str(), f.length, f.offset)).collect();
        assert_eq!(
            layout,
            [("multi/readme.txt", 1000, 0), ("multi/empty.dat", 0, 1000), ("multi/a/b/one.bin", 20_000, 1000)]
        );
        assert_eq!(m.files[2].path, Path::new("multi").join("a").join("b").join("one.bin"));
        assert_eq!(m.total_length, 21_000);
        assert!(!m.private);
    }

    #[test]
    fn info_hash_covers_unknown_keys_in_info_as_written() {
        // Unsorted keys and keys nobody decodes: a re-serialised struct would hash differently.
        let info = single_info()
            .with("x-unknown", dict([("nested", list([B::Int(1), s("two")]))]))
            .with("source", s("tracker.example"));
        let mut raw_info = info.encode();
        let m = parse(info);
        assert_eq!(m.info_hash, InfoHash(sha1(&raw_info)));
        let reserialised = single_info().encode();
        assert_ne!(m.info_hash, InfoHash(sha1(&reserialised)));
        raw_info.push(b'!');
        assert_ne!(m.info_hash, InfoHash(sha1(&raw_info)));
    }

    #[test]
    fn trailing_bytes_after_the_torrent_are_ignored() {
        let mut bytes = torrent(single_info());
        let clean = Metainfo::from_bytes(&bytes).unwrap();
        bytes.extend_from_slice(b"\ngarbage");
        assert_eq!(Metainfo::from_bytes(&bytes).unwrap().info_hash, clean.info_hash);
    }

    #[test]
    fn utf8_keys_are_preferred_and_other_bytes_decode_lossily() {
        let info = multi_info()
            .with("name", s(b"caf\xe9"))
            .with("files", list([dict([("length", B::Int(21_000)), ("path", list([s(b"\xff.bin")]))])]));
        let m = parse(info.clone());
        assert_eq!(m.name, "caf\u{fffd}");
        assert_eq!(m.files[0].display_path, "caf\u{fffd}/\u{fffd}.bin");
        assert_eq!(m.files[0].path, Path::new("caf\u{fffd}").join("\u{fffd}.bin"));

        let info = info.with("name.utf-8", s("café")).with(
            "files",
            list([dict([
                ("length", B::Int(21_000)),
                ("path", list([s(b"\xff.bin")])),
                ("path.utf-8", list([s("ÿ.bin")])),
            ])]),
        );
        let m = parse(info);
        assert_eq!(m.name, "café");
        assert_eq!(m.files[0].display_path, "café/ÿ.bin");
    }

    #[test]
    fn invalid_utf8_key_falls_back_to_the_plain_key() {
        let m = parse(single_info().with("name.utf-8", s(b"\xff")));
        assert_eq!(m.name, "single.bin");
    }

    #[test]
    fn padding_files_count_in_the_layout_but_not_in_the_selection() {
        let pad = |len: i64| {
            dict([("attr", s("p")), ("length", B::Int(len)), ("path", list([s(".pad"), s(len.to_string())]))])
        };
        let info = multi_info()
            .with(
                "files",
                list([
                    file(1000, &["a.txt"]),
                    pad(15_384),
                    file(20_000, &["b.bin"]),
                    pad(12_768),
                    dict([("attr", s("x")), ("length", B::Int(5)), ("path", list([s("run.sh")]))]),
                    file(0, &["_____padding_file_0_bitcomet"]),
                ]),
            )
            .with("pieces", pieces_for(49_157));
        let m = parse(info);
        let padding: Vec<bool> = m.files.iter().map(|f| f.padding).collect();
        assert_eq!(padding, [false, true, false, true, false, true]);
        assert_eq!(m.files[2].offset, 16_384);
        assert_eq!(m.total_length, 49_157);
        let selectable: Vec<(usize, &str)> = m.selectable_files().map(|(i, f)| (i, f.display_path.as_str())).collect();
        assert_eq!(selectable, [(0, "multi/a.txt"), (1, "multi/b.bin"), (2, "multi/run.sh")]);
    }

    #[test]
    fn repeated_padding_paths_are_allowed() {
        let pad = dict([("attr", s("p")), ("length", B::Int(100)), ("path", list([s(".pad"), s("100")]))]);
        let info = multi_info()
            .with("files", list([file(1000, &["a"]), pad.clone(), file(1000, &["b"]), pad]))
            .with("pieces", pieces_for(2200));
        assert_eq!(parse(info).files.len(), 4);
    }

    #[test]
    fn hybrid_torrent_uses_its_v1_side() {
        let file_tree =
            dict([("single.bin", dict([("", dict([("length", B::Int(40_000)), ("pieces root", s([7u8; 32]))]))]))]);
        let info = single_info().with("file tree", file_tree).with("meta version", B::Int(2));
        let raw_info = info.encode();
        let bytes =
            dict([("announce", s("http://t/a")), ("info", info), ("piece layers", dict([("\u{7}", s([1u8; 96]))]))])
                .encode();
        let m = Metainfo::from_bytes(&bytes).unwrap();
        assert_eq!(m.info_hash, InfoHash(sha1(&raw_info)));
        assert_eq!(m.piece_count(), 3);
        assert_eq!(m.files.len(), 1);
    }

    #[test]
    fn v2_only_torrent_is_rejected_clearly() {
        let info = single_info()
            .without("pieces")
            .without("length")
            .with("file tree", dict([("single.bin", dict([("", dict([("length", B::Int(40_000))]))]))]))
            .with("meta version", B::Int(2));
        let e = rejection(info);
        assert_eq!(e, MetainfoError::V2Only);
        assert_eq!(e.to_string(), "v2-only torrents are not supported");
    }

    // ---- Trackers (BEP 12) ----

    #[test]
    fn announce_list_tiers_replace_announce() {
        let bytes = dict([
            ("announce", s("http://ignored/")),
            (
                "announce-list",
                list([
                    list([s("http://a/1"), s("udp://a/2")]),
                    list([]),
                    list([s(""), s("  ")]),
                    list([s("http://b/1"), s("http://a/1"), s(b"\xff")]),
                ]),
            ),
            ("info", single_info()),
        ])
        .encode();
        let m = Metainfo::from_bytes(&bytes).unwrap();
        assert_eq!(m.trackers, [vec!["http://a/1", "udp://a/2"], vec!["http://b/1"]]);
    }

    #[test]
    fn empty_announce_list_falls_back_to_announce() {
        let bytes =
            dict([("announce", s("http://a/")), ("announce-list", list([list([])])), ("info", single_info())]).encode();
        assert_eq!(Metainfo::from_bytes(&bytes).unwrap().trackers, [["http://a/"]]);
    }

    #[test]
    fn no_trackers_is_allowed() {
        let bytes = dict([("info", single_info())]).encode();
        assert!(Metainfo::from_bytes(&bytes).unwrap().trackers.is_empty());
        let bytes = dict([("announce", s("")), ("info", single_info())]).encode();
        assert!(Metainfo::from_bytes(&bytes).unwrap().trackers.is_empty());
    }

    #[test]
    fn wrongly_typed_optional_fields_are_ignored() {
        let bytes = dict([
            ("announce", B::Int(3)),
            ("announce-list", list([s("http://not-a-tier/")])),
            ("comment", list([])),
            ("created by", B::Int(1)),
            ("info", single_info().with("private", s("1"))),
        ])
        .encode();
        let m = Metainfo::from_bytes(&bytes).unwrap();
        assert!(m.trackers.is_empty());
        assert_eq!((m.comment, m.created_by, m.private), (None, None, false));
    }

    // ---- Rejections: not a torrent ----

    #[test]
    fn not_bencode_is_rejected() {
        for bytes in [&b""[..], b"hello", b"d8:announce", b"<html>", b"i42e", b"le"] {
            let e = Metainfo::from_bytes(bytes).unwrap_err();
            assert!(matches!(e, MetainfoError::NotBencode(_)), "{bytes:?}: {e}");
        }
    }

    #[test]
    fn missing_info_is_rejected() {
        let bytes = dict([("announce", s("http://a/"))]).encode();
        assert_eq!(Metainfo::from_bytes(&bytes).unwrap_err(), MetainfoError::MissingInfo);
    }

    #[test]
    fn info_that_is_not_a_dictionary_is_rejected() {
        assert_eq!(rejection(list([])), MetainfoError::InfoNotADictionary);
        assert_eq!(rejection(s("info")), MetainfoError::InfoNotADictionary);
    }

    #[test]
    fn duplicate_info_keys_are_rejected() {
        let mut bytes = b"d4:info".to_vec();
        bytes.extend(single_info().encode());
        bytes.extend(b"4:info");
        bytes.extend(single_info().with("name", s("other")).encode());
        bytes.push(b'e');
        assert!(matches!(
            Metainfo::from_bytes(&bytes),
            Err(MetainfoError::NotBencode(BencodeError::DuplicateKey { .. }))
        ));
    }

    #[test]
    fn wrongly_typed_field_is_malformed() {
        let e = rejection(single_info().with("piece length", s("16384")));
        assert!(matches!(e, MetainfoError::Malformed { part: "info dictionary", .. }), "{e}");
        let e = rejection(single_info().with("files", s("x")).without("length"));
        assert!(matches!(e, MetainfoError::Malformed { .. }), "{e}");
    }

    // ---- Rejections: piece geometry ----

    #[test]
    fn piece_length_zero_is_rejected() {
        assert_eq!(rejection(single_info().with("piece length", B::Int(0))), MetainfoError::PieceLengthZero);
    }

    #[test]
    fn negative_piece_length_is_rejected() {
        assert_eq!(
            rejection(single_info().with("piece length", B::Int(-16384))),
            MetainfoError::PieceLengthOutOfRange(-16384)
        );
    }

    #[test]
    fn absurd_piece_length_is_rejected() {
        let too_big = i64::from(MAX_PIECE_LENGTH) + 1;
        assert_eq!(
            rejection(single_info().with("piece length", B::Int(too_big))),
            MetainfoError::PieceLengthOutOfRange(too_big)
        );
        let not_u32 = 1 << 40;
        assert_eq!(
            rejection(single_info().with("piece length", B::Int(not_u32))),
            MetainfoError::PieceLengthOutOfRange(not_u32)
        );
    }

    #[test]
    fn largest_piece_length_is_accepted() {
        let info = single_info().with("piece length", B::Int(MAX_PIECE_LENGTH.into())).with("pieces", s([0u8; 20]));
        assert_eq!(parse(info).piece_length, MAX_PIECE_LENGTH);
    }

    #[test]
    fn missing_piece_length_is_rejected() {
        assert_eq!(rejection(single_info().without("piece length")), MetainfoError::MissingField("piece length"));
    }

    #[test]
    fn missing_pieces_without_meta_version_2_is_rejected() {
        assert_eq!(rejection(single_info().without("pieces")), MetainfoError::MissingField("pieces"));
    }

    #[test]
    fn pieces_not_a_multiple_of_20_is_rejected() {
        assert_eq!(
            rejection(single_info().with("pieces", s([0u8; 59]))),
            MetainfoError::PiecesNotMultipleOf20 { len: 59 }
        );
    }

    #[test]
    fn too_few_piece_hashes_for_the_total_length_is_rejected() {
        assert_eq!(
            rejection(single_info().with("pieces", s([0u8; 40]))),
            MetainfoError::PieceCountMismatch { have: 2, want: 3 }
        );
    }

    #[test]
    fn too_many_piece_hashes_for_the_total_length_is_rejected() {
        assert_eq!(
            rejection(single_info().with("pieces", s([0u8; 80]))),
            MetainfoError::PieceCountMismatch { have: 4, want: 3 }
        );
    }

    #[test]
    fn exact_multiple_of_piece_length_needs_no_extra_piece() {
        let info = single_info().with("length", B::Int(2 * PIECE)).with("pieces", s([0u8; 40]));
        assert_eq!(parse(info).piece_count(), 2);
    }

    // ---- Rejections: lengths ----

    #[test]
    fn negative_single_file_length_is_rejected() {
        assert_eq!(rejection(single_info().with("length", B::Int(-1))), MetainfoError::NegativeLength(-1));
    }

    #[test]
    fn negative_file_length_in_a_list_is_rejected() {
        let info = multi_info().with("files", list([file(1000, &["a"]), file(-1000, &["b"])]));
        assert_eq!(rejection(info), MetainfoError::NegativeLength(-1000));
    }

    #[test]
    fn file_lengths_overflowing_the_total_are_rejected() {
        let info = multi_info().with("files", list([file(i64::MAX, &["a"]), file(i64::MAX, &["b"]), file(2, &["c"])]));
        assert_eq!(rejection(info), MetainfoError::TotalTooLarge);
    }

    #[test]
    fn absurd_total_length_is_rejected_by_the_piece_count() {
        let e = rejection(single_info().with("length", B::Int(i64::MAX)));
        assert!(matches!(e, MetainfoError::PieceCountMismatch { have: 3, .. }), "{e}");
    }

    #[test]
    fn zero_total_length_is_rejected() {
        let info = single_info().with("length", B::Int(0)).with("pieces", s(""));
        assert_eq!(rejection(info), MetainfoError::EmptyTorrent);
        let info = multi_info().with("files", list([file(0, &["a"]), file(0, &["b"])])).with("pieces", s(""));
        assert_eq!(rejection(info), MetainfoError::EmptyTorrent);
    }

    #[test]
    fn missing_file_length_is_rejected() {
        let info = multi_info().with("files", list([dict([("path", list([s("a")]))])]));
        assert_eq!(rejection(info), MetainfoError::MissingField("length"));
    }

    // ---- Rejections: layout ----

    #[test]
    fn both_length_and_files_is_rejected() {
        assert_eq!(rejection(multi_info().with("length", B::Int(21_000))), MetainfoError::LengthAndFiles);
    }

    #[test]
    fn neither_length_nor_files_is_rejected() {
        assert_eq!(rejection(single_info().without("length")), MetainfoError::NoLayout);
    }

    #[test]
    fn empty_files_list_is_rejected() {
        assert_eq!(rejection(multi_info().with("files", list([]))), MetainfoError::NoFiles);
    }

    // ---- Rejections: names and paths ----

    #[track_caller]
    fn path_rejection(components: &[&str]) -> MetainfoError {
        let bad = dict([("length", B::Int(20_000)), ("path", list(components.iter().map(s)))]);
        rejection(multi_info().with("files", list([file(1000, &["ok"]), bad])))
    }

    #[test]
    fn empty_path_component_is_rejected() {
        assert_eq!(
            path_rejection(&["a", "", "b"]),
            MetainfoError::UnsafePath { path: "multi/a//b".into(), problem: PathProblem::Empty }
        );
    }

    #[test]
    fn dot_path_component_is_rejected() {
        assert_eq!(
            path_rejection(&[".", "b"]),
            MetainfoError::UnsafePath { path: "multi/./b".into(), problem: PathProblem::Dot }
        );
    }

    #[test]
    fn dot_dot_path_component_is_rejected() {
        assert_eq!(
            path_rejection(&["..", "..", "etc", "passwd"]),
            MetainfoError::UnsafePath { path: "multi/../../etc/passwd".into(), problem: PathProblem::DotDot }
        );
    }

    #[test]
    fn absolute_path_component_is_rejected() {
        assert_eq!(
            path_rejection(&["/etc", "passwd"]),
            MetainfoError::UnsafePath { path: "multi//etc/passwd".into(), problem: PathProblem::Absolute }
        );
        assert_eq!(
            path_rejection(&["\\windows"]),
            MetainfoError::UnsafePath { path: "multi/\\windows".into(), problem: PathProblem::Absolute }
        );
    }

    #[test]
    fn slash_inside_a_component_is_rejected() {
        assert_eq!(
            path_rejection(&["a/../../b"]),
            MetainfoError::UnsafePath { path: "multi/a/../../b".into(), problem: PathProblem::Separator }
        );
    }

    #[test]
    fn backslash_inside_a_component_is_rejected() {
        assert_eq!(
            path_rejection(&["a\\..\\b"]),
            MetainfoError::UnsafePath { path: "multi/a\\..\\b".into(), problem: PathProblem::Separator }
        );
    }

    #[test]
    fn nul_in_a_component_is_rejected() {
        assert_eq!(
            path_rejection(&["a\0b"]),
            MetainfoError::UnsafePath { path: "multi/a\0b".into(), problem: PathProblem::Nul }
        );
    }

    #[test]
    fn unsafe_utf8_path_is_rejected_even_when_the_raw_path_is_fine() {
        let bad =
            dict([("length", B::Int(20_000)), ("path", list([s("fine")])), ("path.utf-8", list([s(".."), s("evil")]))]);
        let e = rejection(multi_info().with("files", list([file(1000, &["ok"]), bad])));
        assert_eq!(e, MetainfoError::UnsafePath { path: "multi/../evil".into(), problem: PathProblem::DotDot });
    }

    #[test]
    fn empty_path_list_is_rejected() {
        assert_eq!(path_rejection(&[]), MetainfoError::EmptyPath { index: 1 });
    }

    #[test]
    fn missing_path_is_rejected() {
        let info = multi_info().with("files", list([dict([("length", B::Int(21_000))])]));
        assert_eq!(rejection(info), MetainfoError::MissingField("path"));
    }

    #[test]
    fn unsafe_names_are_rejected() {
        for (name, problem) in [
            ("", PathProblem::Empty),
            (".", PathProblem::Dot),
            ("..", PathProblem::DotDot),
            ("/etc/passwd", PathProblem::Absolute),
            ("a/b", PathProblem::Separator),
            ("a\\b", PathProblem::Separator),
            ("a\0", PathProblem::Nul),
        ] {
            let expected = MetainfoError::UnsafeName { name: name.into(), problem };
            assert_eq!(rejection(single_info().with("name", s(name))), expected);
            assert_eq!(rejection(multi_info().with("name", s(name))), expected);
        }
    }

    #[test]
    fn unsafe_utf8_name_is_rejected() {
        let e = rejection(single_info().with("name.utf-8", s("../x")));
        assert_eq!(e, MetainfoError::UnsafeName { name: "../x".into(), problem: PathProblem::Separator });
    }

    #[test]
    fn missing_name_is_rejected() {
        assert_eq!(rejection(single_info().without("name")), MetainfoError::MissingField("name"));
    }

    #[test]
    fn duplicate_file_paths_are_rejected() {
        let info = multi_info().with("files", list([file(1000, &["a", "b"]), file(20_000, &["a", "b"])]));
        assert_eq!(rejection(info), MetainfoError::DuplicatePath("multi/a/b".into()));
    }

    #[test]
    fn file_that_is_also_a_folder_is_rejected() {
        let info = multi_info().with("files", list([file(1000, &["a"]), file(20_000, &["a", "b"])]));
        assert_eq!(rejection(info), MetainfoError::FileIsFolder("multi/a".into()));
    }

    // ---- Messages ----

    #[test]
    fn every_error_is_one_lower_case_line() {
        let errors = [
            MetainfoError::NotBencode(BencodeError::UnexpectedEnd { at: 0 }),
            MetainfoError::MissingInfo,
            MetainfoError::InfoNotADictionary,
            rejection(single_info().with("piece length", s("x"))),
            MetainfoError::MissingField("name"),
            MetainfoError::V2Only,
            MetainfoError::PieceLengthZero,
            MetainfoError::PieceLengthOutOfRange(-1),
            MetainfoError::PiecesNotMultipleOf20 { len: 3 },
            MetainfoError::PieceCountMismatch { have: 1, want: 2 },
            MetainfoError::TooManyPieces(1 << 33),
            MetainfoError::LengthAndFiles,
            MetainfoError::NoLayout,
            MetainfoError::NoFiles,
            MetainfoError::NegativeLength(-1),
            MetainfoError::TotalTooLarge,
            MetainfoError::EmptyTorrent,
            MetainfoError::UnsafeName { name: "a\nb".into(), problem: PathProblem::Separator },
            MetainfoError::EmptyPath { index: 1 },
            MetainfoError::UnsafePath { path: "x/\n".into(), problem: PathProblem::Nul },
            MetainfoError::DuplicatePath("x".into()),
            MetainfoError::FileIsFolder("x".into()),
        ];
        for e in errors {
            let text = e.to_string();
            assert!(!text.contains('\n') && !text.ends_with('.'), "{text}");
            let first = text.chars().next().unwrap();
            assert!(first.is_lowercase() || first.is_ascii_digit() || first == '"', "{text}");
        }
        assert_eq!(
            MetainfoError::NotBencode(BencodeError::UnexpectedEnd { at: 0 }).to_string(),
            "not a bencoded torrent file: unexpected end of input at byte 0"
        );
    }

    // ---- Mutation ----

    /// No input panics, and whatever is accepted keeps the layout invariants.
    #[test]
    fn mutated_torrents_never_panic() {
        let base = dict([
            ("announce-list", list([list([s("http://a/")])])),
            ("info", multi_info().with("private", B::Int(1))),
        ])
        .encode();
        let mut rng = Rng::seeded(0x70_22e47);
        let mut accepted = 0;
        for round in 0..20_000u32 {
            let mut input = base.clone();
            match round % 4 {
                0 => {
                    for _ in 0..=rng.below(3) {
                        let bit = rng.below(input.len() as u64 * 8) as usize;
                        input[bit / 8] ^= 1 << (bit % 8);
                    }
                }
                1 => input.truncate(rng.below(input.len() as u64) as usize),
                2 => {
                    let at = rng.below(input.len() as u64) as usize;
                    input[at] = b"deil0123456789:-./\\\0"[rng.below(20) as usize];
                }
                _ => {
                    input.truncate(rng.below(256) as usize);
                    rng.fill(&mut input);
                }
            }
            if let Ok(m) = Metainfo::from_bytes(&input) {
                accepted += 1;
                let mut offset = 0;
                for f in &m.files {
                    assert_eq!(f.offset, offset);
                    offset += f.length;
                    assert!(f.path.components().all(|c| matches!(c, std::path::Component::Normal(_))));
                }
                assert_eq!(offset, m.total_length);
                assert_eq!(u64::from(m.piece_count()), m.total_length.div_ceil(m.piece_length.into()));
            }
        }
        // Flips inside piece hashes and the like keep the torrent valid: the mutations reach the validator.
        assert!(accepted > 100, "only {accepted} mutants parsed");
    }
}
