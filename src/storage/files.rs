//! Whole small files the command line reads and writes: a `.torrent` file in, a new `.torrent` out, and
//! the download directory.
//!
//! Owns: reading a bounded file (a regular file or a pipe) and writing one atomically (a temporary
//! beside it, then a rename). Must not: parse what it reads or hold anything open.

use std::fs;
use std::io::{self, Read};
use std::path::Path;

/// Why a small file could not be read.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    /// The path is a directory.
    Directory,
    /// Longer than the limit given.
    TooBig,
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Directory => write!(f, "is a directory"),
            ReadError::TooBig => write!(f, "too big"),
        }
    }
}

/// Reads `path` (a regular file or a pipe, as `<(cat x.torrent)` gives) whole, refusing more than `max`
/// bytes without reading them.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    let file = fs::File::open(path).map_err(ReadError::Io)?;
    let kind = file.metadata().map_err(ReadError::Io)?;
    if kind.is_dir() {
        return Err(ReadError::Directory);
    }
    // The size of a regular file sizes the buffer exactly; a pipe's is unknown (0).
    let hint = if kind.is_file() { kind.len().min(max) + 1 } else { 64 * 1024 };
    let mut bytes = Vec::with_capacity(hint as usize);
    file.take(max + 1).read_to_end(&mut bytes).map_err(ReadError::Io)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooBig);
    }
    Ok(bytes)
}

/// Writes `bytes` to `path` through a temporary beside it and a rename: a reader never sees half a file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_parts_atomically(path, std::iter::once(bytes))
}

/// The same for bytes held in parts (the stats document's chunks), written one after the other.
pub fn write_parts_atomically<'a>(path: &Path, mut parts: impl Iterator<Item = &'a [u8]>) -> io::Result<()> {
    use std::io::Write;
    let mut tmp_name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    tmp_name.push(".rill-tmp");
    let tmp = path.with_file_name(tmp_name);
    let written = fs::File::create(&tmp)
        .and_then(|mut file| parts.try_for_each(|part| file.write_all(part)))
        .and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// A small file written atomically (its directory created first) on a short-lived helper thread,
/// `rill-save`, so the loop does not wait on the disk.
pub struct BackgroundWrite(std::thread::JoinHandle<io::Result<()>>);

impl BackgroundWrite {
    pub fn start(path: std::path::PathBuf, bytes: Vec<u8>) -> io::Result<BackgroundWrite> {
        let write = move || ensure_parent(&path).and_then(|()| write_atomically(&path, &bytes));
        std::thread::Builder::new().name("rill-save".into()).spawn(write).map(BackgroundWrite)
    }

    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    /// Waits for the write and says how it went.
    pub fn wait(self) -> io::Result<()> {
        self.0.join().unwrap_or_else(|_| Err(io::Error::other("the writer thread failed")))
    }
}

/// Creates `path` empty (truncating it) for writing: the trace file, which `observe::trace` appends to with
/// positioned writes from its helper thread.
pub fn create_truncated(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new().write(true).create(true).truncate(true).open(path)
}

/// Creates the directory `path` goes in, and its parents, if they do not exist.
pub fn ensure_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => fs::create_dir_all(dir),
        _ => Ok(()),
    }
}

/// Creates `dir` and its parents if they do not exist.
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)
}

/// As [`write_atomically`], and durable: the temporary is synced before the rename and the directory
/// after it, so a power cut leaves the old file or the new one, never an empty one (the daemon's state).
pub fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    ensure_parent(path)?;
    let mut tmp_name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    tmp_name.push(".rill-tmp");
    let tmp = path.with_file_name(tmp_name);
    let written = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// A small file written durably ([`write_durably`]) on a short-lived helper thread, `rill-save`.
pub fn write_durably_in_background(path: std::path::PathBuf, bytes: Vec<u8>) -> io::Result<BackgroundWrite> {
    write_durably_in_background_after(Vec::new(), path, bytes)
}

/// As [`write_durably_in_background`], after syncing the files `first` (and their folders) that were
/// written without a sync: the state file that names them is durable only once they are. A file that is
/// gone (removed meanwhile) is skipped.
pub fn write_durably_in_background_after(
    first: Vec<std::path::PathBuf>,
    path: std::path::PathBuf,
    bytes: Vec<u8>,
) -> io::Result<BackgroundWrite> {
    let write = move || {
        let mut folders = std::collections::BTreeSet::new();
        for f in &first {
            match fs::File::open(f) {
                Ok(file) => file.sync_all()?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            if let Some(dir) = f.parent().filter(|d| !d.as_os_str().is_empty()) {
                folders.insert(dir.to_path_buf());
            }
        }
        for dir in folders {
            fs::File::open(dir)?.sync_all()?;
        }
        write_durably(&path, &bytes)
    };
    std::thread::Builder::new().name("rill-save".into()).spawn(write).map(BackgroundWrite)
}

/// Bytes free for an unprivileged user on the filesystem holding `path`.
pub fn free_space(path: &Path) -> io::Result<u64> {
    let s = rustix::fs::statvfs(path).map_err(io::Error::from)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Deletes a removed torrent's files (`rel`, relative to `dir`) and then the folders they leave empty,
/// up to `dir` itself (never `dir`), on a short-lived helper thread, `rill-delete`, so a slow disk does
/// not stall the loop. Paths come from a checked metainfo (no `..`, no absolute paths). Errors are
/// logged: a file already gone is not one.
pub fn delete_in_background(dir: std::path::PathBuf, rel: Vec<std::path::PathBuf>) -> io::Result<()> {
    let delete = move || {
        let mut plain = Vec::with_capacity(rel.len());
        for r in rel {
            if r.is_absolute() || r.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
                log::warn!("not deleting {}: not a plain relative path", r.display());
                continue;
            }
            match fs::remove_file(dir.join(&r)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("cannot delete {}: {e}", dir.join(&r).display()),
            }
            plain.push(r);
        }
        remove_empty_folders(&dir, &plain);
    };
    std::thread::Builder::new().name("rill-delete".into()).spawn(delete).map(|_| ())
}

/// Removes the folders of the files `rel` under `base` that are empty now, deepest first (never `base`; a
/// folder that is not empty stays).
pub fn remove_empty_folders(base: &Path, rel: &[std::path::PathBuf]) {
    let mut folders = std::collections::BTreeSet::new();
    for r in rel {
        let mut parent = r.parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            folders.insert(p.to_path_buf());
            parent = p.parent();
        }
    }
    for folder in folders.iter().rev() {
        let _ = fs::remove_dir(base.join(folder));
    }
}

/// The regular files directly in `dir` (the watch folder), by name.
pub fn list_files(dir: &Path) -> io::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Renames `from` to `to` (the watch folder marks a file taken or invalid).
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)
}
