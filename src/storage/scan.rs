//! Reading content for `rill create`: a file or folder → a stable file list → piece hashes.
//!
//! Owns: walking the folder (entries sorted by their bytes, so the same tree always gives the same torrent;
//! hidden entries, symlinks and special files left out, each with a note), and hashing the files as one
//! stream in piece-sized steps through one 64 KiB buffer, so memory does not grow with the content.
//! Must not: know the `.torrent` format (that is `metainfo::create`) or print (progress goes to a callback).

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use sha1::{Digest, Sha1};

use crate::metainfo::create::NewFile;

/// Folders nested deeper than this are refused (a loop of bind mounts, or a hostile tree).
const MAX_DEPTH: usize = 64;
/// Bytes read per `read(2)` while hashing.
const READ_CHUNK: usize = 64 * 1024;

/// Why the content could not be read.
#[derive(Debug)]
pub enum ScanError {
    Io {
        path: PathBuf,
        what: &'static str,
        error: io::Error,
    },
    /// A file's size changed between the walk and the hashing.
    Changed {
        path: PathBuf,
    },
    /// Neither a regular file nor a folder.
    NotFileOrFolder {
        path: PathBuf,
    },
    /// A folder with no file to put in a torrent.
    NoFiles {
        path: PathBuf,
    },
    TooDeep {
        path: PathBuf,
    },
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScanError::Io { path, what, error } => write!(f, "cannot {what} {}: {error}", path.display()),
            ScanError::Changed { path } => write!(f, "{} changed while it was being hashed", path.display()),
            ScanError::NotFileOrFolder { path } => {
                write!(f, "{} is neither a regular file nor a folder", path.display())
            }
            ScanError::NoFiles { path } => write!(f, "{} holds no files to put in a torrent", path.display()),
            ScanError::TooDeep { path } => write!(f, "{} nests folders more than {MAX_DEPTH} deep", path.display()),
        }
    }
}

impl std::error::Error for ScanError {}

/// What the walk found.
#[derive(Debug)]
pub struct Scanned {
    /// The top folder's (or the single file's) own name.
    pub name: Vec<u8>,
    pub single_file: bool,
    /// In layout order; `sources[i]` is where `files[i]` is read from.
    pub files: Vec<NewFile>,
    pub sources: Vec<PathBuf>,
    /// Entries left out, with why.
    pub skipped: Vec<(PathBuf, &'static str)>,
}

/// Walks `path`: a regular file gives a single-file torrent, a folder a multi-file one.
pub fn scan(path: &Path, include_hidden: bool) -> Result<Scanned, ScanError> {
    let io_err = |what, error| ScanError::Io { path: path.to_path_buf(), what, error };
    let meta = fs::metadata(path).map_err(|e| io_err("read", e))?;
    let absolute = fs::canonicalize(path).map_err(|e| io_err("resolve", e))?;
    let name = absolute.file_name().map(|n| n.as_bytes().to_vec()).unwrap_or_default();
    if name.is_empty() {
        return Err(ScanError::NotFileOrFolder { path: path.to_path_buf() });
    }
    if meta.is_file() {
        return Ok(Scanned {
            name,
            single_file: true,
            files: vec![NewFile { components: vec![], length: meta.len() }],
            sources: vec![path.to_path_buf()],
            skipped: vec![],
        });
    }
    if !meta.is_dir() {
        return Err(ScanError::NotFileOrFolder { path: path.to_path_buf() });
    }
    let mut found: Vec<(Vec<Vec<u8>>, u64, PathBuf)> = Vec::new();
    let mut skipped = Vec::new();
    walk(path, &mut Vec::new(), include_hidden, &mut found, &mut skipped)?;
    if found.is_empty() {
        return Err(ScanError::NoFiles { path: path.to_path_buf() });
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let sources = found.iter().map(|f| f.2.clone()).collect();
    let files = found.into_iter().map(|(components, length, _)| NewFile { components, length }).collect();
    Ok(Scanned { name, single_file: false, files, sources, skipped })
}

fn walk(
    dir: &Path,
    prefix: &mut Vec<Vec<u8>>,
    include_hidden: bool,
    found: &mut Vec<(Vec<Vec<u8>>, u64, PathBuf)>,
    skipped: &mut Vec<(PathBuf, &'static str)>,
) -> Result<(), ScanError> {
    if prefix.len() >= MAX_DEPTH {
        return Err(ScanError::TooDeep { path: dir.to_path_buf() });
    }
    let entries = fs::read_dir(dir).map_err(|error| ScanError::Io { path: dir.to_path_buf(), what: "list", error })?;
    for entry in entries {
        let entry = entry.map_err(|error| ScanError::Io { path: dir.to_path_buf(), what: "list", error })?;
        let path = entry.path();
        let name = entry.file_name().as_bytes().to_vec();
        if name.first() == Some(&b'.') && !include_hidden {
            skipped.push((path, "hidden"));
            continue;
        }
        // `symlink_metadata`: a link is never followed, so a tree cannot loop or reach outside itself.
        let meta =
            fs::symlink_metadata(&path).map_err(|error| ScanError::Io { path: path.clone(), what: "read", error })?;
        let kind = meta.file_type();
        if kind.is_symlink() {
            skipped.push((path, "symbolic link"));
        } else if kind.is_dir() {
            prefix.push(name);
            walk(&path, prefix, include_hidden, found, skipped)?;
            prefix.pop();
        } else if kind.is_file() {
            let mut components = prefix.clone();
            components.push(name);
            found.push((components, meta.len(), path));
        } else {
            skipped.push((path, "not a regular file"));
        }
    }
    Ok(())
}

/// SHA-1 of every `piece_length` bytes of the files read back to back (the last piece may be short),
/// concatenated. `progress` gets the bytes hashed so far after every piece.
pub fn hash_pieces(
    sources: &[PathBuf],
    files: &[NewFile],
    piece_length: u32,
    mut progress: impl FnMut(u64),
) -> Result<Vec<u8>, ScanError> {
    let total: u64 = files.iter().map(|f| f.length).sum();
    let mut pieces = Vec::with_capacity((total.div_ceil(piece_length as u64) * 20) as usize);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut hasher = Sha1::new();
    let mut in_piece = 0u64;
    let mut done = 0u64;
    for (source, file) in sources.iter().zip(files) {
        let io_err = |what, error| ScanError::Io { path: source.clone(), what, error };
        let mut handle = File::open(source).map_err(|e| io_err("open", e))?;
        let len = handle.metadata().map_err(|e| io_err("read", e))?.len();
        if len != file.length {
            return Err(ScanError::Changed { path: source.clone() });
        }
        let mut left = file.length;
        while left > 0 {
            let room = (piece_length as u64 - in_piece).min(left).min(READ_CHUNK as u64) as usize;
            let n = match handle.read(&mut buf[..room]) {
                Ok(0) => return Err(ScanError::Changed { path: source.clone() }),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err("read", e)),
            };
            hasher.update(&buf[..n]);
            left -= n as u64;
            in_piece += n as u64;
            done += n as u64;
            if in_piece == piece_length as u64 {
                pieces.extend_from_slice(&hasher.finalize_reset());
                in_piece = 0;
                progress(done);
            }
        }
    }
    if in_piece > 0 {
        pieces.extend_from_slice(&hasher.finalize_reset());
        progress(done);
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rill-scan-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn folder_walk_is_sorted_skips_hidden_links_and_keeps_empty_files() {
        let root = tmp("walk").join("content");
        fs::create_dir_all(root.join("b/deep")).unwrap();
        fs::write(root.join("b/deep/x"), b"xx").unwrap();
        fs::write(root.join("a.txt"), b"aaa").unwrap();
        fs::write(root.join("empty"), b"").unwrap();
        fs::write(root.join(".hidden"), b"h").unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
        let s = scan(&root, false).unwrap();
        assert_eq!(s.name, b"content");
        assert!(!s.single_file);
        let names: Vec<String> = s
            .files
            .iter()
            .map(|f| f.components.iter().map(|c| String::from_utf8_lossy(c)).collect::<Vec<_>>().join("/"))
            .collect();
        assert_eq!(names, ["a.txt", "b/deep/x", "empty"]);
        assert_eq!(s.files.iter().map(|f| f.length).collect::<Vec<_>>(), [3, 2, 0]);
        let mut why: Vec<&str> = s.skipped.iter().map(|s| s.1).collect();
        why.sort();
        assert_eq!(why, ["hidden", "symbolic link"]);
        let with_hidden = scan(&root, true).unwrap();
        assert_eq!(with_hidden.files.len(), 4);
    }

    #[test]
    fn pieces_span_file_boundaries_and_match_a_flat_hash() {
        let root = tmp("hash");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        fs::write(root.join("1"), &data[..30_000]).unwrap();
        fs::write(root.join("2"), b"").unwrap();
        fs::write(root.join("3"), &data[30_000..]).unwrap();
        let s = scan(&root, false).unwrap();
        let mut seen = vec![];
        let pieces = hash_pieces(&s.sources, &s.files, 16_384, |d| seen.push(d)).unwrap();
        let want: Vec<u8> = data.chunks(16_384).flat_map(|c| Sha1::digest(c).to_vec()).collect();
        assert_eq!(pieces, want);
        assert_eq!(seen.last(), Some(&100_000));
        assert_eq!(seen.len(), 7);
    }

    #[test]
    fn a_file_that_shrinks_before_hashing_is_reported() {
        let root = tmp("shrink");
        fs::write(root.join("f"), vec![1u8; 5_000]).unwrap();
        let s = scan(&root, false).unwrap();
        fs::write(root.join("f"), vec![1u8; 10]).unwrap();
        let err = hash_pieces(&s.sources, &s.files, 16_384, |_| {}).unwrap_err();
        assert!(matches!(err, ScanError::Changed { .. }), "{err}");
    }

    #[test]
    fn an_empty_folder_or_a_fifo_is_refused() {
        let root = tmp("empty");
        assert!(matches!(scan(&root, false), Err(ScanError::NoFiles { .. })));
        assert!(matches!(scan(Path::new("/dev/null"), false), Err(ScanError::NotFileOrFolder { .. })));
    }
}
