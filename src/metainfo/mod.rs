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
//!    The `info` dictionary itself is read straight from its span ([`raw`]): a torrent with 200,000 files
//!    costs its `FileEntry`s and nothing else per file (no intermediate structures, no second copy of the
//!    piece hashes).
//! 3. Validation: piece geometry and lengths. Each failure is one [`MetainfoError`] variant.
//! 4. Paths ([`paths`]): odd but harmless names are mapped to safe ones, never refused, and each mapping is
//!    recorded in [`Metainfo::mapped`] so that `rill info` can show it.
//!
//! Bytes after the top-level dictionary are ignored: libtorrent 2.0.8 and Transmission 3.00 both load such
//! files, and the trailing bytes cannot change the info-hash.
//!
//! Names and paths: `name.utf-8` / `path.utf-8` win when present and valid UTF-8; otherwise bytes are decoded
//! lossily (invalid sequences become U+FFFD). The lossy text is then cleaned by [`paths`] and is both the
//! display form and the on-disk name, so no byte sequence can smuggle a separator, NUL or `..` past it.

pub mod create;

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use serde::Deserialize;
use serde_bencode::value::Value;
use sha1::{Digest, Sha1};

use crate::bencode::{self, BencodeError};

mod paths;
pub use paths::overlap;
mod raw;

/// Largest accepted piece length: 512 MiB, libtorrent's limit. Nothing allocates a piece's worth of memory
/// (storage hashes in 16 KiB steps, the swarm keeps two bytes of state per 16 KiB block), so a big piece costs
/// only time; anything bigger is a corrupt or hostile file.
pub const MAX_PIECE_LENGTH: u32 = 512 * 1024 * 1024;

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
    /// Every component is safe (see [`paths`]): not empty, not `.`/`..`, no separator, no NUL; no two
    /// created files share a path and none is another's folder. Always valid UTF-8.
    pub path: PathBuf,
    pub length: u64,
    /// Offset of the file's first byte in the torrent's layout.
    pub offset: u64,
    /// BEP 47 padding file: counts in the layout, is all zeros, is never created on disk. A symlink entry
    /// whose target is not in the torrent is skipped the same way (zero length, not created).
    pub padding: bool,
    /// BEP 47 symlink entry (`attr` `l`): the link's target, relative to the torrent's top directory and
    /// checked to name a file or folder of the torrent. Such an entry has length 0 and is created as a
    /// symlink, never written.
    pub symlink_target: Option<PathBuf>,
}

impl FileEntry {
    /// `path` as text, components joined by `/` (paths are built from UTF-8, so this never allocates).
    pub fn display_path(&self) -> Cow<'_, str> {
        self.path.to_string_lossy()
    }
}

/// What the torrent's names were mapped to: empty unless some name could not be used as it stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mapping {
    /// The torrent's own name, when [`Metainfo::name`] differs from it.
    pub name_from: Option<String>,
    /// One note per mapped or skipped file, in file order.
    pub files: Vec<PathNote>,
}

impl Mapping {
    /// The note on file `index` of `Metainfo::files`, if any.
    pub fn note(&self, index: usize) -> Option<&PathNote> {
        self.files.binary_search_by_key(&index, |note| note.file).ok().map(|at| &self.files[at])
    }
}

/// A file whose path on disk is not the torrent's own, or that is not created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathNote {
    /// Index in `Metainfo::files`.
    pub file: usize,
    /// The path as the torrent spells it (name first, components joined by `/`, lossy UTF-8); for
    /// [`NoteReason::SymlinkSkipped`], the link's target as the torrent spells it.
    pub original: String,
    pub reason: NoteReason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteReason {
    /// Empty, `.` or `..` components, separators or NUL were replaced or removed.
    Sanitised,
    /// The same path as an earlier file (ASCII case ignored), or a folder of another file: `.N` was added.
    Duplicate,
    /// A BEP 47 symlink whose target is not a file or folder of the torrent: not created.
    SymlinkSkipped,
}

/// A validated torrent.
#[derive(Clone, Debug)]
pub struct Metainfo {
    pub info_hash: InfoHash,
    /// The top folder (multi-file) or file name (single-file): `name.utf-8` or `name`, made safe; the
    /// info-hash in hex when nothing usable is left of a multi-file torrent's name.
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
    /// BEP 19 web seeds (`url-list`: one URL or a list), in order, without repeats; at most
    /// [`MAX_WEB_SEEDS`], each at most 2,048 bytes of UTF-8.
    pub web_seeds: Vec<String>,
    /// Names that were mapped to safe ones, and entries skipped.
    pub mapped: Mapping,
}

/// Most web seeds kept from a torrent or a magnet link.
pub const MAX_WEB_SEEDS: usize = 16;

/// Why a `.torrent` was rejected. Each variant displays as one lower-case line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetainfoError {
    /// Not bencode, or its top-level value is not a dictionary.
    NotBencode(BencodeError),
    MissingInfo,
    InfoNotADictionary,
    /// Well-formed bencode whose fields have the wrong types.
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
    /// A single-file torrent whose name is nothing once separators and NUL are removed (libtorrent refuses
    /// it too: there is no file name to give it).
    UnusableName(String),
    /// A file (not padding) whose `path` list is empty.
    EmptyPath {
        index: usize,
    },
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
            MetainfoError::UnusableName(name) => {
                write!(f, "torrent name {name:?} leaves no usable file name")
            }
            MetainfoError::EmptyPath { index } => write!(f, "file {index} has an empty path"),
        }
    }
}

impl std::error::Error for MetainfoError {}

/// The top-level keys rill reads; `info` is read from its raw span.
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
    #[serde(rename = "url-list")]
    url_list: Option<Value>,
}

/// The spans of the `info` keys rill reads (each key at most once).
#[derive(Default)]
struct InfoSpans {
    piece_length: Option<Range<usize>>,
    pieces: Option<Range<usize>>,
    name: Option<Range<usize>>,
    name_utf8: Option<Range<usize>>,
    length: Option<Range<usize>>,
    files: Option<Range<usize>>,
    private: Option<Range<usize>>,
    meta_version: Option<Range<usize>>,
}

impl InfoSpans {
    fn read(info: &[u8]) -> Result<InfoSpans, MetainfoError> {
        let mut spans = InfoSpans::default();
        let entries = raw::dict_entries(info, &(0..info.len())).ok_or(MetainfoError::InfoNotADictionary)?;
        for (key, value) in entries {
            let (slot, field) = match key {
                b"piece length" => (&mut spans.piece_length, "piece length"),
                b"pieces" => (&mut spans.pieces, "pieces"),
                b"name" => (&mut spans.name, "name"),
                b"name.utf-8" => (&mut spans.name_utf8, "name.utf-8"),
                b"length" => (&mut spans.length, "length"),
                b"files" => (&mut spans.files, "files"),
                b"private" => (&mut spans.private, "private"),
                b"meta version" => (&mut spans.meta_version, "meta version"),
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(malformed_info(format!("`{field}` appears twice")));
            }
        }
        Ok(spans)
    }
}

fn malformed_info(detail: String) -> MetainfoError {
    MetainfoError::Malformed { part: "info dictionary", detail }
}

fn malformed_file(index: usize, detail: &str) -> MetainfoError {
    MetainfoError::Malformed { part: "file list", detail: format!("file {index}: {detail}") }
}

/// An integer field of `info`: `None` when absent, an error when of another type.
fn info_int(info: &[u8], span: Option<&Range<usize>>, field: &str) -> Result<Option<i64>, MetainfoError> {
    span.map(|span| raw::int(info, span).ok_or_else(|| malformed_info(format!("`{field}` is not an integer"))))
        .transpose()
}

/// A byte-string field of `info`: `None` when absent, an error when of another type.
fn info_bytes<'a>(info: &'a [u8], span: Option<&Range<usize>>, field: &str) -> Result<Option<&'a [u8]>, MetainfoError> {
    span.map(|span| raw::string(info, span).ok_or_else(|| malformed_info(format!("`{field}` is not a string"))))
        .transpose()
}

/// A torrent parsed and checked, with its file paths still packed: everything `Metainfo` needs without
/// borrowing the file's bytes, so that they can be dropped before the `FileEntry`s are built.
struct Parsed {
    info_hash: InfoHash,
    name: String,
    piece_length: u32,
    piece_hashes: Vec<[u8; 20]>,
    total_length: u64,
    files: Packed,
    trackers: Vec<Vec<String>>,
    private: bool,
    comment: Option<String>,
    created_by: Option<String>,
    web_seeds: Vec<String>,
    mapped: Mapping,
}

/// The raw `info` dictionary of a `.torrent` file's bytes (what the info-hash is the SHA-1 of, and what a
/// seed serves to magnet users), if the file is bencode with one.
pub fn raw_info(torrent: &[u8]) -> Option<&[u8]> {
    let outer = bencode::value_span(torrent, 0).ok()?;
    let outer = &torrent[outer];
    let span = bencode::dict_value_span(outer, b"info").ok()??;
    Some(&outer[span])
}

impl Metainfo {
    /// Parses and validates a `.torrent` file's bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Metainfo, MetainfoError> {
        Ok(Metainfo::parse(bytes)?.finish())
    }

    /// As [`Metainfo::from_bytes`], but frees `bytes` before building the file list: peak memory is then
    /// the larger of the two, not their sum (it matters for torrents with hundreds of thousands of files).
    pub fn from_vec(bytes: Vec<u8>) -> Result<Metainfo, MetainfoError> {
        let parsed = Metainfo::parse(&bytes)?;
        drop(bytes);
        Ok(parsed.finish())
    }

    fn parse(bytes: &[u8]) -> Result<Parsed, MetainfoError> {
        // 1. Structure, and the info-hash over the raw span.
        let outer = bencode::value_span(bytes, 0).map_err(MetainfoError::NotBencode)?;
        let outer = &bytes[outer];
        let info_span = bencode::dict_value_span(outer, b"info")
            .map_err(MetainfoError::NotBencode)?
            .ok_or(MetainfoError::MissingInfo)?;
        let info = &outer[info_span];
        if info.first() != Some(&b'd') {
            return Err(MetainfoError::InfoNotADictionary);
        }
        let info_hash = InfoHash(Sha1::digest(info).into());

        // 2. Typed fields.
        let top: RawTorrent = serde_bencode::from_bytes(outer).map_err(|e| malformed("torrent", e))?;
        let spans = InfoSpans::read(info)?;

        // 3. Validation. v2-only first: such a torrent lacks `pieces`, and that is the better message.
        // `private` and `meta version` of the wrong type count as absent, as in libtorrent.
        let meta_version = spans.meta_version.as_ref().and_then(|span| raw::int(info, span));
        let pieces = match info_bytes(info, spans.pieces.as_ref(), "pieces")? {
            Some(pieces) => pieces,
            None if meta_version.is_some_and(|v| v >= 2) => return Err(MetainfoError::V2Only),
            None => return Err(MetainfoError::MissingField("pieces")),
        };
        let piece_length = match info_int(info, spans.piece_length.as_ref(), "piece length")? {
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

        let raw_name = info_bytes(info, spans.name.as_ref(), "name")?.ok_or(MetainfoError::MissingField("name"))?;
        let name_utf8 = spans.name_utf8.as_ref().and_then(|span| raw::string(info, span));
        let given_name = prefer_utf8(name_utf8, raw_name);
        let length = info_int(info, spans.length.as_ref(), "length")?;
        let mut mapped = Mapping::default();
        let name = match paths::name(&given_name) {
            Some(name) => name.into_owned(),
            None if length.is_some() => return Err(MetainfoError::UnusableName(given_name.into_owned())),
            None => info_hash.to_string(),
        };
        if name != given_name {
            mapped.name_from = Some(given_name.into_owned());
        }

        let files = match (length, spans.files) {
            (Some(_), Some(_)) => return Err(MetainfoError::LengthAndFiles),
            (None, None) => return Err(MetainfoError::NoLayout),
            (Some(length), None) => {
                let mut files = Packed::default();
                files.push(&name, file_length(length)?, false);
                files
            }
            (None, Some(files)) => multi_file_layout(info, &files, &name, &mut mapped)?,
        };
        let total_length = files.total_length;
        if total_length == 0 {
            return Err(MetainfoError::EmptyTorrent);
        }

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

        Ok(Parsed {
            info_hash,
            name,
            piece_length,
            piece_hashes,
            total_length,
            files,
            trackers: tracker_tiers(top.announce_list.as_ref(), top.announce.as_ref()),
            private: spans.private.as_ref().and_then(|span| raw::int(info, span)) == Some(1),
            comment: top.comment_utf8.or(top.comment).as_ref().and_then(as_text),
            created_by: top.created_by.as_ref().and_then(as_text),
            web_seeds: web_seeds(top.url_list.as_ref()),
            mapped,
        })
    }

    pub fn piece_count(&self) -> u32 {
        self.piece_hashes.len() as u32
    }

    /// The files a user can pick, numbered 0, 1, 2, … in layout order: every file except padding (and
    /// skipped symlinks). This numbering is what `rill info` prints and what `--files` takes.
    pub fn selectable_files(&self) -> impl Iterator<Item = (usize, &FileEntry)> + '_ {
        self.files.iter().filter(|file| !file.padding).enumerate()
    }
}

impl Parsed {
    /// Unpacks the file list into `FileEntry`s, freeing the packed paths as it goes, then settles
    /// collisions and symlinks.
    fn finish(self) -> Metainfo {
        let Parsed { info_hash, name, piece_length, piece_hashes, total_length, files: packed, .. } = self;
        let mut mapped = self.mapped;
        let Packed { mut blocks, entries, count, symlinks, .. } = packed;
        let mut files = Vec::with_capacity(count);
        let mut offset = 0;
        let mut at = 0;
        let mut symlinks = symlinks.into_iter().peekable();
        let mut targets = Vec::new();
        // Each chunk of entries is freed once unpacked.
        for (index, entry) in entries.into_iter().flatten().enumerate() {
            // Paths are never split between blocks: one that does not fit where we are is in the next.
            while blocks.front().is_some_and(|block| at + entry.path_len > block.len()) {
                blocks.pop_front();
                at = 0;
            }
            let path = blocks.front().and_then(|block| block.get(at..at + entry.path_len)).unwrap_or_default();
            at += entry.path_len;
            let symlink_target = match symlinks.next_if(|(i, _, _)| *i == index) {
                Some((_, target, given)) => {
                    targets.push((index, given));
                    Some(target)
                }
                None => None,
            };
            files.push(FileEntry {
                path: PathBuf::from(path.to_owned()),
                length: entry.length,
                offset,
                padding: entry.padding,
                symlink_target,
            });
            offset += entry.length;
        }
        drop(blocks);
        paths::resolve_collisions(&mut files, &mut mapped.files);
        paths::check_symlinks(&name, &mut files, targets, &mut mapped.files);
        Metainfo {
            info_hash,
            name,
            piece_length,
            piece_hashes,
            total_length,
            files,
            trackers: self.trackers,
            private: self.private,
            comment: self.comment,
            created_by: self.created_by,
            web_seeds: self.web_seeds,
            mapped,
        }
    }
}

/// Bytes per block of packed paths.
const PACK_BLOCK: usize = 64 * 1024;

/// Entries per chunk of packed entries.
const PACK_ENTRIES: usize = 4096;

/// The file list between parsing and `FileEntry`s: paths concatenated into blocks of [`PACK_BLOCK`] bytes
/// (freed one by one as they are unpacked), per file its length, path length and padding flag.
#[derive(Default)]
struct Packed {
    blocks: std::collections::VecDeque<String>,
    /// Chunks of [`PACK_ENTRIES`] entries.
    entries: Vec<Vec<PackedEntry>>,
    count: usize,
    /// How many entries the file list holds (sizes the last chunk).
    expected: usize,
    /// (file index, target, target as the torrent spells it) for symlink entries, in file order.
    symlinks: Vec<(usize, PathBuf, String)>,
    total_length: u64,
}

struct PackedEntry {
    length: u64,
    path_len: usize,
    padding: bool,
}

impl Packed {
    fn push(&mut self, path: &str, length: u64, padding: bool) {
        match self.blocks.back_mut() {
            Some(block) if block.len() + path.len() <= block.capacity() => block.push_str(path),
            _ => {
                let mut block = String::with_capacity(PACK_BLOCK.max(path.len()));
                block.push_str(path);
                self.blocks.push_back(block);
            }
        }
        let entry = PackedEntry { length, path_len: path.len(), padding };
        match self.entries.last_mut() {
            Some(chunk) if chunk.len() < PACK_ENTRIES => chunk.push(entry),
            _ => {
                let mut chunk = Vec::with_capacity(PACK_ENTRIES.min(self.expected.saturating_sub(self.count)).max(1));
                chunk.push(entry);
                self.entries.push(chunk);
            }
        }
        self.count += 1;
        // Checked by the caller (`multi_file_layout`) or a single length.
        self.total_length = self.total_length.saturating_add(length);
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

/// The components of a `path`-like list (`path`, `path.utf-8`, `symlink path`): `None` if it is not a list of
/// strings.
fn string_list<'a>(info: &'a [u8], span: &Range<usize>) -> Option<Vec<&'a [u8]>> {
    raw::list_items(info, span)?.map(|item| raw::string(info, &item)).collect()
}

/// The components to use: `path.utf-8` when it is a list of valid UTF-8 strings, else `path` decoded lossily.
fn components<'a>(utf8: Option<Vec<&'a [u8]>>, plain: Vec<&'a [u8]>) -> Vec<Cow<'a, str>> {
    match utf8 {
        Some(utf8) if utf8.iter().all(|c| std::str::from_utf8(c).is_ok()) => {
            utf8.into_iter().map(String::from_utf8_lossy).collect()
        }
        _ => plain.into_iter().map(String::from_utf8_lossy).collect(),
    }
}

/// BEP 3 multi-file layout: `name` is the folder, each entry's `path` the components below it, each
/// component made safe by [`paths::component`]. BEP 47 entries: padding (`attr` `p`; one without a `path`
/// becomes `.pad/<length>`), symlinks (`attr` `l` with `symlink path`: length 0, target checked after).
fn multi_file_layout(
    info: &[u8],
    files_span: &Range<usize>,
    name: &str,
    mapped: &mut Mapping,
) -> Result<Packed, MetainfoError> {
    let not_a_list = || malformed_info("`files` is not a list".into());
    let count = raw::list_items(info, files_span).ok_or_else(not_a_list)?.count();
    if count == 0 {
        return Err(MetainfoError::NoFiles);
    }
    let mut files = Packed { expected: count, ..Packed::default() };
    let mut offset: u64 = 0;
    for (index, span) in raw::list_items(info, files_span).ok_or_else(not_a_list)?.enumerate() {
        let entries = raw::dict_entries(info, &span).ok_or_else(|| malformed_file(index, "not a dictionary"))?;
        let (mut length, mut path, mut path_utf8, mut attr, mut symlink_path) = (None, None, None, None, None);
        for (key, value) in entries {
            match key {
                b"length" => length = Some(value),
                b"path" => path = Some(value),
                b"path.utf-8" => path_utf8 = Some(value),
                b"attr" => attr = raw::string(info, &value),
                b"symlink path" => symlink_path = Some(value),
                _ => {}
            }
        }
        let attr = attr.unwrap_or_default();
        let padding = attr.contains(&b'p');
        // An `l` without a `symlink path` is a plain file, as libtorrent reads it.
        let symlink = match symlink_path.filter(|_| attr.contains(&b'l')) {
            Some(span) => Some(string_list(info, &span).ok_or_else(|| malformed_file(index, "bad `symlink path`"))?),
            None => None,
        };
        // Symlinks take no room in the layout whatever their `length` says (libtorrent does the same).
        let length = match (&symlink, length) {
            (Some(_), _) => 0,
            (None, Some(span)) => {
                file_length(raw::int(info, &span).ok_or_else(|| malformed_file(index, "`length` is not an integer"))?)?
            }
            (None, None) => return Err(MetainfoError::MissingField("length")),
        };
        let plain = match path {
            Some(span) => string_list(info, &span).ok_or_else(|| malformed_file(index, "bad `path`"))?,
            None if padding => Vec::new(),
            None => return Err(MetainfoError::MissingField("path")),
        };
        let utf8 = path_utf8.and_then(|span| string_list(info, &span));
        let given = components(utf8, plain);

        let entry_path = if given.is_empty() {
            if !padding {
                return Err(MetainfoError::EmptyPath { index });
            }
            format!("{name}/.pad/{length}")
        } else {
            let safe: Vec<Cow<'_, str>> = given.iter().map(|c| paths::component(c)).collect();
            let size = name.len() + safe.iter().map(|c| c.len() + 1).sum::<usize>();
            let mut text = String::with_capacity(size);
            text.push_str(name);
            for part in &safe {
                text.push('/');
                text.push_str(part);
            }
            if !padding && safe.iter().zip(&given).any(|(safe, given)| safe != given) {
                let original = std::iter::once(name).chain(given.iter().map(|c| c.as_ref())).collect::<Vec<_>>();
                mapped.files.push(PathNote {
                    file: index,
                    original: original.join("/"),
                    reason: NoteReason::Sanitised,
                });
            }
            text
        };
        // BitComet's padding files have no `attr`, only a name; libtorrent treats them as padding too.
        let last = entry_path.rsplit('/').next().unwrap_or_default();
        let bitcomet_padding = last.starts_with("_____padding_file_");
        if let Some(target) = symlink {
            let target: Vec<Cow<'_, str>> = target.into_iter().map(String::from_utf8_lossy).collect();
            let safe: Vec<Cow<'_, str>> = target.iter().filter_map(|c| paths::target_component(c)).collect();
            files.symlinks.push((index, PathBuf::from(safe.join("/")), target.join("/")));
        }
        files.push(&entry_path, length, padding || bitcomet_padding);
        offset = offset.checked_add(length).ok_or(MetainfoError::TotalTooLarge)?;
    }
    Ok(files)
}

fn file_length(length: i64) -> Result<u64, MetainfoError> {
    u64::try_from(length).map_err(|_| MetainfoError::NegativeLength(length))
}

/// `preferred` (a `.utf-8` key) when it is valid UTF-8, else `raw` decoded lossily.
fn prefer_utf8<'a>(preferred: Option<&'a [u8]>, raw: &'a [u8]) -> Cow<'a, str> {
    match preferred.map(std::str::from_utf8) {
        Some(Ok(text)) => Cow::Borrowed(text),
        _ => String::from_utf8_lossy(raw),
    }
}

fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::Bytes(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        _ => None,
    }
}

/// BEP 19 `url-list`: a single URL or a list of them. Blank, non-UTF-8, over-long and repeated entries are
/// dropped; at most [`MAX_WEB_SEEDS`] are kept.
fn web_seeds(url_list: Option<&Value>) -> Vec<String> {
    let items: &[Value] = match url_list {
        Some(Value::List(list)) => list,
        Some(one @ Value::Bytes(_)) => std::slice::from_ref(one),
        _ => &[],
    };
    let mut out: Vec<String> = Vec::new();
    for item in items {
        if let Value::Bytes(bytes) = item {
            if let Ok(url) = std::str::from_utf8(bytes).map(str::trim) {
                if !url.is_empty() && url.len() <= 2048 && !out.iter().any(|u| u == url) {
                    out.push(url.to_owned());
                }
            }
        }
        if out.len() == MAX_WEB_SEEDS {
            break;
        }
    }
    out
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
