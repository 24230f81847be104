//! Paths below the download directory, opened without ever following a symbolic link.
//!
//! Owns: the download directory as one open directory handle (`Root`) and every walk from it. Each folder
//! is opened with `O_DIRECTORY | O_NOFOLLOW` (made with `mkdirat` when missing and asked for); a file with
//! `O_NOFOLLOW | O_NONBLOCK` (a FIFO cannot hang the open; a regular file ignores the flag) and then
//! checked with `fstat` to be a regular file; a temporary is made with `O_EXCL` after a stale regular one
//! is removed with `unlinkat` (which never follows); BEP 47 links are made with `symlinkat` and compared
//! with `readlinkat`, never opened.
//! The `-d` directory itself may be a link: that is the user's choice. Below it, a symbolic link (dangling
//! or not), FIFO, device or socket where a file or folder belongs is refused with an error naming it
//! (`StorageOp::Refused`), before anything is read or written there.
//! Must not: decide the layout or what a file holds (storage does), or follow anything.

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::{StorageError, StorageOp};

/// What was found at a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    RegularFile,
    Directory,
    Symlink,
    Fifo,
    Device,
    Socket,
    Unknown,
}

impl Found {
    fn of_mode(mode: u32) -> Found {
        match FileType::from_raw_mode(mode) {
            FileType::RegularFile => Found::RegularFile,
            FileType::Directory => Found::Directory,
            FileType::Symlink => Found::Symlink,
            FileType::Fifo => Found::Fifo,
            FileType::CharacterDevice | FileType::BlockDevice => Found::Device,
            FileType::Socket => Found::Socket,
            FileType::Unknown => Found::Unknown,
        }
    }

    fn of_metadata(m: &std::fs::Metadata) -> Found {
        let t = m.file_type();
        if t.is_file() {
            Found::RegularFile
        } else if t.is_dir() {
            Found::Directory
        } else if t.is_symlink() {
            Found::Symlink
        } else if t.is_fifo() {
            Found::Fifo
        } else if t.is_char_device() || t.is_block_device() {
            Found::Device
        } else if t.is_socket() {
            Found::Socket
        } else {
            Found::Unknown
        }
    }

    /// Whether nothing of this kind is ever opened or walked through (a link, FIFO, device, socket).
    fn is_hostile(self) -> bool {
        !matches!(self, Found::RegularFile | Found::Directory)
    }
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Found::RegularFile => "a regular file",
            Found::Directory => "a directory",
            Found::Symlink => "a symbolic link",
            Found::Fifo => "a FIFO",
            Found::Device => "a device",
            Found::Socket => "a socket",
            Found::Unknown => "an unknown kind of file",
        })
    }
}

/// What the layout puts at a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wanted {
    File,
    Directory,
    /// A BEP 47 symbolic link with a given target.
    Link,
}

/// The error inside a `StorageOp::Refused`: something other than what the layout puts there.
#[derive(Debug)]
pub struct Unexpected {
    pub found: Found,
    pub wanted: Wanted,
}

impl fmt::Display for Unexpected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.found, self.wanted) {
            (Found::Symlink, Wanted::Link) => write!(f, "a symbolic link to another target"),
            (Found::Symlink, _) => write!(f, "a symbolic link; rill follows no link below the download directory"),
            (found, Wanted::File) => write!(f, "{found}, not a regular file"),
            (found, Wanted::Directory) => write!(f, "{found}, not a directory"),
            (found, Wanted::Link) => write!(f, "{found} where the torrent puts a symbolic link"),
        }
    }
}

impl std::error::Error for Unexpected {}

/// Which file an open handle is: it stays the same while the path keeps naming that file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

/// `lstat` of a path: what it is, which file, its size and modification time.
#[derive(Clone, Copy, Debug)]
pub struct Meta {
    pub found: Found,
    pub id: FileId,
    pub size: u64,
    pub mtime_secs: i64,
    pub mtime_nanos: i64,
}

#[allow(clippy::unnecessary_cast, clippy::useless_conversion)] // the field types differ between targets
fn meta_of(st: &rustix::fs::Stat) -> Meta {
    Meta {
        found: Found::of_mode(st.st_mode as u32),
        id: FileId { dev: st.st_dev as u64, ino: st.st_ino as u64 },
        size: u64::try_from(st.st_size).unwrap_or(0),
        mtime_secs: st.st_mtime as i64,
        mtime_nanos: st.st_mtime_nsec as i64,
    }
}

/// A data file opened by `Walker::open_file`.
pub struct Opened {
    pub file: File,
    pub id: FileId,
    pub size: u64,
}

/// A state file read by `Walker::read_bounded`.
#[derive(Debug, PartialEq, Eq)]
pub enum Bounded {
    Missing,
    /// Larger than the bound (its size, or the bytes read when it grew while being read).
    TooBig(u64),
    Bytes(Vec<u8>),
}

/// The download directory, open. Cheap to clone (a helper thread takes one for a resume save).
#[derive(Clone)]
pub struct Root {
    fd: Arc<OwnedFd>,
    path: PathBuf,
}

impl Root {
    /// Opens `dir` itself (following it if it is a link: the user named it).
    pub fn open(dir: &Path) -> Result<Root, StorageError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(rustix::fs::CWD, dir, flags, Mode::empty()).map_err(|e| StorageError {
            path: dir.to_path_buf(),
            op: StorageOp::Open,
            error: e.into(),
        })?;
        Ok(Root { fd: Arc::new(fd), path: dir.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The full path of `rel`, for messages.
    pub fn join(&self, rel: &Path) -> PathBuf {
        self.path.join(rel)
    }
}

/// Walks from a `Root`, keeping the last folder it opened (files come in layout order, so neighbours
/// share it).
pub struct Walker {
    root: Root,
    /// The last folder opened: its path relative to the root, and its handle.
    cached: Option<(PathBuf, OwnedFd)>,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);
const FILE_FLAGS: OFlags = OFlags::NOFOLLOW.union(OFlags::NONBLOCK).union(OFlags::CLOEXEC).union(OFlags::NOCTTY);

fn name_of(rel: &Path) -> Option<&OsStr> {
    match rel.components().next_back() {
        Some(Component::Normal(name)) => Some(name),
        _ => None,
    }
}

impl Walker {
    pub fn new(root: Root) -> Walker {
        Walker { root, cached: None }
    }

    pub fn root(&self) -> &Root {
        &self.root
    }

    /// Drops the cached folder, so the next walk starts from the top (and sees a folder swapped since).
    pub fn forget_dirs(&mut self) {
        self.cached = None;
    }

    fn error(&self, rel: &Path, op: StorageOp, error: io::Error) -> StorageError {
        StorageError { path: self.root.join(rel), op, error }
    }

    fn refused(&self, rel: &Path, found: Found, wanted: Wanted) -> StorageError {
        self.error(rel, StorageOp::Refused, io::Error::other(Unexpected { found, wanted }))
    }

    fn not_plain(&self, rel: &Path) -> StorageError {
        self.error(rel, StorageOp::Open, io::Error::new(io::ErrorKind::InvalidInput, "not a plain relative path"))
    }

    /// The folder that holds `rel`'s last component, walked from the root without following links;
    /// missing folders are made when `create`, else `None`. A regular file in place of a folder: an error
    /// when creating, `None` (nothing can be below it) otherwise.
    fn dir_of(&mut self, rel: &Path, create: bool) -> Result<Option<BorrowedFd<'_>>, StorageError> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        if parent.as_os_str().is_empty() {
            return Ok(Some(self.root.fd.as_fd()));
        }
        let hit = matches!(&self.cached, Some((p, _)) if p == parent);
        if !hit {
            let mut fd: Option<OwnedFd> = None;
            let mut walked = PathBuf::new();
            for component in parent.components() {
                let Component::Normal(name) = component else {
                    return Err(self.not_plain(rel));
                };
                walked.push(name);
                let at = fd.as_ref().map_or(self.root.fd.as_fd(), |f| f.as_fd());
                let next = match rustix::fs::openat(at, name, DIR_FLAGS, Mode::empty()) {
                    Ok(next) => next,
                    Err(Errno::NOENT) if create => {
                        match rustix::fs::mkdirat(at, name, Mode::from_raw_mode(0o777)) {
                            Ok(()) | Err(Errno::EXIST) => {}
                            Err(e) => return Err(self.error(&walked, StorageOp::CreateDir, e.into())),
                        }
                        match rustix::fs::openat(at, name, DIR_FLAGS, Mode::empty()) {
                            Ok(next) => next,
                            Err(e) => return Err(self.classify(at, name, &walked, e, Wanted::Directory, true)),
                        }
                    }
                    Err(Errno::NOENT) => return Ok(None),
                    Err(e) => {
                        let err = self.classify(at, name, &walked, e, Wanted::Directory, create);
                        if !create && err.op != StorageOp::Refused && matches!(e, Errno::NOTDIR) {
                            return Ok(None);
                        }
                        return Err(err);
                    }
                };
                fd = Some(next);
            }
            match fd {
                Some(fd) => self.cached = Some((parent.to_path_buf(), fd)),
                None => return Ok(Some(self.root.fd.as_fd())),
            }
        }
        Ok(self.cached.as_ref().map(|(_, fd)| fd.as_fd()))
    }

    /// The error for `name` in `at` after `errno`: `Refused` when a link, FIFO, device or socket is there,
    /// else the OS error (as `CreateDir` or `Open`).
    fn classify(
        &self,
        at: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        errno: Errno,
        wanted: Wanted,
        create: bool,
    ) -> StorageError {
        let found = rustix::fs::statat(at, name, AtFlags::SYMLINK_NOFOLLOW).ok().map(|st| meta_of(&st).found);
        match found {
            Some(found) if found.is_hostile() => self.refused(rel, found, wanted),
            _ => {
                let op = if wanted == Wanted::Directory && create { StorageOp::CreateDir } else { StorageOp::Open };
                self.error(rel, op, errno.into())
            }
        }
    }

    /// `lstat` of `rel` (no link followed on the way or at the end); `None` when it or a folder above it is
    /// missing.
    pub fn lstat(&mut self, rel: &Path) -> Result<Option<Meta>, StorageError> {
        let Some(name) = name_of(rel) else {
            return Err(self.not_plain(rel));
        };
        let Some(dir) = self.dir_of(rel, false)? else {
            return Ok(None);
        };
        match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(meta_of(&st))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(self.error(rel, StorageOp::Open, e.into())),
        }
    }

    /// Opens the data file `rel` for reading and writing; when `create`, makes it (and its folders) if
    /// missing, else `None` when missing. Anything but a regular file is refused.
    pub fn open_file(&mut self, rel: &Path, create: bool) -> Result<Option<Opened>, StorageError> {
        let Some(name) = name_of(rel) else {
            return Err(self.not_plain(rel));
        };
        let flags = FILE_FLAGS | OFlags::RDWR | if create { OFlags::CREATE } else { OFlags::empty() };
        let opened = {
            let Some(dir) = self.dir_of(rel, create)? else {
                return Ok(None);
            };
            match rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o666)) {
                Ok(fd) => Ok(fd),
                Err(Errno::NOENT) if !create => return Ok(None),
                Err(e) => Err((rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok(), e)),
            }
        };
        let fd = match opened {
            Ok(fd) => fd,
            Err((Some(st), _)) if meta_of(&st).found.is_hostile() => {
                return Err(self.refused(rel, meta_of(&st).found, Wanted::File))
            }
            Err((_, e)) => return Err(self.error(rel, StorageOp::Open, e.into())),
        };
        let file = File::from(fd);
        let m = file.metadata().map_err(|e| self.error(rel, StorageOp::Open, e))?;
        let found = Found::of_metadata(&m);
        if found != Found::RegularFile {
            return Err(self.refused(rel, found, Wanted::File));
        }
        Ok(Some(Opened { file, id: FileId { dev: m.dev(), ino: m.ino() }, size: m.len() }))
    }

    /// Reads the state file `rel` if it is a regular file of at most `bound` bytes (opened without
    /// following a link and without blocking; at most `bound + 1` bytes are read). A link, FIFO, device or
    /// socket there is refused.
    pub fn read_bounded(&mut self, rel: &Path, bound: u64) -> Result<Bounded, StorageError> {
        let Some(name) = name_of(rel) else {
            return Err(self.not_plain(rel));
        };
        let opened = {
            let Some(dir) = self.dir_of(rel, false)? else {
                return Ok(Bounded::Missing);
            };
            match rustix::fs::openat(dir, name, FILE_FLAGS | OFlags::RDONLY, Mode::empty()) {
                Ok(fd) => Ok(fd),
                Err(Errno::NOENT) => return Ok(Bounded::Missing),
                Err(e) => Err((rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok(), e)),
            }
        };
        let fd = match opened {
            Ok(fd) => fd,
            Err((Some(st), _)) if meta_of(&st).found.is_hostile() => {
                return Err(self.refused(rel, meta_of(&st).found, Wanted::File))
            }
            Err((_, e)) => return Err(self.error(rel, StorageOp::Read, e.into())),
        };
        let file = File::from(fd);
        let m = file.metadata().map_err(|e| self.error(rel, StorageOp::Read, e))?;
        let found = Found::of_metadata(&m);
        if found != Found::RegularFile {
            return Err(self.refused(rel, found, Wanted::File));
        }
        if m.len() > bound {
            return Ok(Bounded::TooBig(m.len()));
        }
        let mut bytes = Vec::with_capacity(m.len() as usize);
        file.take(bound.saturating_add(1)).read_to_end(&mut bytes).map_err(|e| self.error(rel, StorageOp::Read, e))?;
        if bytes.len() as u64 > bound {
            return Ok(Bounded::TooBig(bytes.len() as u64));
        }
        Ok(Bounded::Bytes(bytes))
    }

    /// Refuses `rel` if something other than a regular file is there (a state file's name, checked before
    /// any data moves).
    pub fn refuse_special(&mut self, rel: &Path) -> Result<(), StorageError> {
        match self.lstat(rel)? {
            Some(m) if m.found != Found::RegularFile => Err(self.refused(rel, m.found, Wanted::File)),
            _ => Ok(()),
        }
    }

    /// Replaces the state file `rel` with `bytes` atomically: a stale regular `tmp` is removed, `tmp` is
    /// made with `O_EXCL`, written, fsynced, renamed over `rel`, and the folder fsynced. Both names are in
    /// the same folder. Errors name `rel` (or `tmp` when something other than a regular file is there).
    pub fn replace(&mut self, rel: &Path, tmp: &Path, bytes: &[u8]) -> Result<(), StorageError> {
        let (Some(name), Some(tmp_name)) = (name_of(rel), name_of(tmp)) else {
            return Err(self.not_plain(rel));
        };
        match self.lstat(tmp)? {
            None => {}
            Some(m) if m.found == Found::RegularFile => {
                let removed = match self.dir_of(tmp, false)? {
                    Some(dir) => rustix::fs::unlinkat(dir, tmp_name, AtFlags::empty()),
                    None => Ok(()),
                };
                match removed {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(self.error(tmp, StorageOp::Write, e.into())),
                }
            }
            Some(m) => return Err(self.refused(tmp, m.found, Wanted::File)),
        }
        let result = (|| -> io::Result<()> {
            let dir = self.dir_of(rel, true).map_err(|e| e.error)?.ok_or_else(|| io::Error::from(Errno::NOENT))?;
            let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | FILE_FLAGS;
            let mut f = File::from(rustix::fs::openat(dir, tmp_name, flags, Mode::from_raw_mode(0o644))?);
            f.write_all(bytes)?;
            f.sync_all()?;
            rustix::fs::renameat(dir, tmp_name, dir, name)?;
            rustix::fs::fsync(dir)?;
            Ok(())
        })();
        result.map_err(|e| self.error(rel, StorageOp::Write, e))
    }

    /// Removes the regular file `rel` (never following a link); nothing if it is missing.
    pub fn remove_file(&mut self, rel: &Path) -> Result<(), StorageError> {
        let Some(name) = name_of(rel) else {
            return Err(self.not_plain(rel));
        };
        match self.lstat(rel)? {
            None => return Ok(()),
            Some(m) if m.found != Found::RegularFile => return Err(self.refused(rel, m.found, Wanted::File)),
            Some(_) => {}
        }
        let removed = match self.dir_of(rel, false)? {
            Some(dir) => rustix::fs::unlinkat(dir, name, AtFlags::empty()),
            None => Ok(()),
        };
        match removed {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(self.error(rel, StorageOp::Write, e.into())),
        }
    }

    /// Makes `rel` a symbolic link to `target` (as written in the link); nothing if that exact link is
    /// already there. Anything else at `rel` is refused. The link is never opened or followed.
    pub fn make_link(&mut self, rel: &Path, target: &Path) -> Result<(), StorageError> {
        let Some(name) = name_of(rel) else {
            return Err(self.not_plain(rel));
        };
        let outcome = {
            let Some(dir) = self.dir_of(rel, true)? else {
                return Err(self.error(rel, StorageOp::Link, Errno::NOENT.into()));
            };
            match rustix::fs::readlinkat(dir, name, Vec::new()) {
                Ok(existing) if existing.as_bytes() == target.as_os_str().as_bytes() => Ok(()),
                Ok(_) => Err(Some(Found::Symlink)),
                Err(Errno::NOENT) => match rustix::fs::symlinkat(target, dir, name) {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        let found = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok();
                        match found.map(|st| meta_of(&st).found) {
                            Some(found) => Err(Some(found)),
                            None => return Err(self.error(rel, StorageOp::Link, e.into())),
                        }
                    }
                },
                Err(e) => match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => Err(Some(meta_of(&st).found)),
                    Err(_) => return Err(self.error(rel, StorageOp::Link, e.into())),
                },
            }
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(Some(found)) => Err(self.refused(rel, found, Wanted::Link)),
            Err(None) => Err(self.error(rel, StorageOp::Link, Errno::EXIST.into())),
        }
    }
}

/// The text of a BEP 47 link at layout path `link` whose target is `target`, relative to the torrent's
/// top folder (the first component of `link`; the download directory itself for a one-component path):
/// the target as seen from the link's own folder. Link `t/a/b` to target `x` (that is `t/x`) becomes
/// `../x`. `None` unless both are plain relative paths (no `..`, `.`, root or prefix).
pub fn relative_link_target(link: &Path, target: &Path) -> Option<PathBuf> {
    let plain = |p: &Path| p.components().all(|c| matches!(c, Component::Normal(_)));
    if !plain(link) || !plain(target) || target.as_os_str().is_empty() {
        return None;
    }
    let link: Vec<&OsStr> = link.iter().collect();
    let folder = &link[..link.len().checked_sub(1)?];
    let top = if link.len() > 1 { &link[..1] } else { &link[..0] };
    let full: Vec<&OsStr> = top.iter().copied().chain(target.iter()).collect();
    let common = folder.iter().zip(&full).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..folder.len() {
        out.push("..");
    }
    for part in &full[common..] {
        out.push(part);
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_file_is_named() {
        // S_IFMT values, as the kernel reports them.
        let kinds = [
            (0o100_644, Found::RegularFile, false),
            (0o040_755, Found::Directory, false),
            (0o120_777, Found::Symlink, true),
            (0o010_644, Found::Fifo, true),
            (0o020_666, Found::Device, true),
            (0o060_660, Found::Device, true),
            (0o140_755, Found::Socket, true),
        ];
        for (mode, found, hostile) in kinds {
            assert_eq!(Found::of_mode(mode), found, "{mode:o}");
            assert_eq!(found.is_hostile(), hostile, "{found}");
        }
        let device = Unexpected { found: Found::Device, wanted: Wanted::File };
        assert_eq!(device.to_string(), "a device, not a regular file");
    }
}
