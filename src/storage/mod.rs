//! Storage: the only module that opens data files.
//!
//! Owns: the on-disk layout of a torrent (directories, files, zero-length files, BEP 47 padding that is
//! never created, BEP 47 symbolic links that are created but never opened), positioned reads and writes
//! that span file boundaries, the scratch buffer used to hash pieces back from disk, and `fdatasync`.
//! Everything below the download directory is opened through `nofollow` (relative to one directory
//! handle, never through a symbolic link; a link, FIFO, device or socket in the layout is an error naming
//! it). Storage remembers which file (device, inode) each data file was when it first saw it, so one
//! deleted or replaced under it is an error (`Vanished`) within `CHECK_FILES_EVERY`, not at the end.
//! Resume saves while downloading run on a short-lived helper thread (flush, stamp, atomic write) so the
//! event loop never waits on the device; the save on exit runs in place.
//! Must not: know about peers or protocol state. It takes byte offsets in the torrent's layout and slices.

pub mod disk;
pub mod files;
pub mod nofollow;
pub mod relocate;
pub mod resume;
pub mod scan;
pub mod verify;
pub mod worker;

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha1::{Digest, Sha1};

use crate::bitfield::Bitfield;
use nofollow::{Bounded, FileId, Found, Root, Walker};
use resume::{FileStamp, ResumeData};

use crate::geometry::BLOCK_LEN;
use crate::metainfo::Metainfo;
use crate::time::Timestamp;

/// What storage was doing when the OS said no.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageOp {
    CreateDir,
    Open,
    /// Something other than what the layout puts there (a symbolic link, FIFO, device or socket where a
    /// file or folder belongs; another link where a BEP 47 link belongs): never followed nor opened. The
    /// error is a `nofollow::Unexpected`.
    Refused,
    /// Making a BEP 47 symbolic link.
    Link,
    /// The file was deleted or replaced while rill had it open.
    Vanished,
    Write,
    Read,
    /// Cutting a data file longer than the torrent says down to its length.
    Truncate,
    Sync,
}

/// A failed file operation, with the path it concerned.
#[derive(Debug)]
pub struct StorageError {
    pub path: PathBuf,
    pub op: StorageOp,
    pub error: io::Error,
}

impl StorageError {
    /// What was found, for a `Refused` error.
    pub fn found(&self) -> Option<Found> {
        let inner = self.error.get_ref()?.downcast_ref::<nofollow::Unexpected>()?;
        Some(inner.found)
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self.op {
            StorageOp::CreateDir => "cannot create directory",
            StorageOp::Open => "cannot open",
            StorageOp::Refused => "refusing",
            StorageOp::Link => "cannot create link",
            StorageOp::Vanished => "file vanished:",
            StorageOp::Write => "cannot write",
            StorageOp::Read => "cannot read",
            StorageOp::Truncate => "cannot truncate",
            StorageOp::Sync => "cannot flush",
        };
        write!(f, "{verb} {}: {}", self.path.display(), self.error)
    }
}

impl std::error::Error for StorageError {}

struct DataFile {
    /// Relative to the download directory (the torrent's name first for multi-file torrents).
    rel: PathBuf,
    offset: u64,
    length: u64,
    padding: bool,
    /// A BEP 47 symbolic link: made once, never opened, read as zeros if it claims a length.
    link: bool,
    handle: Option<File>,
    /// Which file this was when storage first saw it; a different one (or none) at the path since means
    /// it was deleted or replaced.
    id: Option<FileId>,
}

impl DataFile {
    /// Whether the file holds torrent data on disk (not padding, not a link).
    fn holds_data(&self) -> bool {
        !self.padding && !self.link
    }
}

/// The most slices one `write_run` takes.
pub const MAX_WRITE_PARTS: usize = 64;

/// `pwritev` until every byte of `slices` is at `at`; a short write finishes slice by slice.
fn write_all_vectored_at(file: &File, slices: &[io::IoSlice<'_>], at: u64) -> io::Result<()> {
    let total: usize = slices.iter().map(|s| s.len()).sum();
    let written = loop {
        match rustix::io::pwritev(file, slices, at) {
            Ok(n) => break n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    };
    if written == total {
        return Ok(());
    }
    let mut pos = 0;
    for slice in slices {
        let (start, end) = (pos, pos + slice.len());
        pos = end;
        if end > written {
            let skip = written.saturating_sub(start);
            file.write_all_at(&slice[skip..], at + (start + skip) as u64)?;
        }
    }
    Ok(())
}

/// At most this many data files are open at once; the least recently opened is closed first.
const MAX_OPEN_FILES: usize = 64;

/// How often `check_files` looks whether the open data files are still at their paths.
pub const CHECK_FILES_EVERY: Duration = Duration::from_secs(2);

pub struct Storage {
    files: Vec<DataFile>,
    open_order: Vec<usize>,
    scratch: Box<[u8]>,
    walker: Walker,
    /// `DIR/.rill-<info-hash>.resume`, beside the data (relative to DIR), and its temporary.
    resume_name: PathBuf,
    resume_tmp: PathBuf,
    /// `.<name>.rill-resume`, the name older versions used, read once if the new one is missing.
    legacy_resume: Option<PathBuf>,
    /// Full path of the resume file, for messages.
    resume_path: PathBuf,
    /// A resume save running on a helper thread.
    saving: Option<std::thread::JoinHandle<Result<(), StorageError>>>,
    /// When `check_files` next looks.
    next_file_check: Timestamp,
}

/// One resume save: flush, check, stamp, write. Runs on the loop's thread at exit, on a helper thread
/// while downloading.
struct SaveJob {
    root: Root,
    /// Duplicates of the open data files: (relative path, handle, identity).
    open: Vec<(PathBuf, File, Option<FileId>)>,
    /// Per layout file; `None` for padding and links.
    stamp_paths: Vec<Option<PathBuf>>,
    resume_name: PathBuf,
    resume_tmp: PathBuf,
    info_hash: [u8; 20],
    pieces: Vec<u8>,
}

impl SaveJob {
    /// 1. Flush every data file (so no piece is ever claimed that is not on the device).
    /// 2. Fail if a file was deleted or replaced while open (writes to it went nowhere).
    /// 3. Stamp each file's size and mtime.
    /// 4. Write the resume file to a temporary name (made with `O_EXCL`), fsync it, rename it over the
    ///    old one, fsync the directory.
    fn run(self) -> Result<(), StorageError> {
        let mut walker = Walker::new(self.root.clone());
        for (rel, file, id) in &self.open {
            let path = self.root.join(rel);
            file.sync_data().map_err(|error| StorageError { path: path.clone(), op: StorageOp::Sync, error })?;
            if !still_there(&mut walker, rel, *id) {
                return Err(vanished(path));
            }
        }
        let files = self
            .stamp_paths
            .iter()
            .map(|p| p.as_deref().map_or(FileStamp::MISSING, |p| stamp(&mut walker, p)))
            .collect();
        let bytes = resume::encode(&ResumeData { info_hash: self.info_hash, pieces: self.pieces, files });
        walker.replace(&self.resume_name, &self.resume_tmp, &bytes)
    }
}

/// Whether `rel` is still the regular file `id` (walked from the top, no link followed).
fn still_there(walker: &mut Walker, rel: &Path, id: Option<FileId>) -> bool {
    matches!(walker.lstat(rel), Ok(Some(m)) if m.found == Found::RegularFile && Some(m.id) == id)
}

fn vanished(path: PathBuf) -> StorageError {
    StorageError {
        path,
        op: StorageOp::Vanished,
        error: io::Error::new(io::ErrorKind::NotFound, "deleted or replaced while rill had it open"),
    }
}

/// A data file's size and mtime now (`MISSING` if it is not there or not a regular file).
fn stamp(walker: &mut Walker, rel: &Path) -> FileStamp {
    match walker.lstat(rel) {
        Ok(Some(m)) if m.found == Found::RegularFile => FileStamp {
            size: i64::try_from(m.size).unwrap_or(i64::MAX),
            mtime_secs: m.mtime_secs,
            mtime_nanos: m.mtime_nanos,
        },
        _ => FileStamp::MISSING,
    }
}

impl Storage {
    /// Prepares `dir/<layout>`: makes directories, creates zero-length files and BEP 47 links of wanted
    /// entries. Data files are created when first written. Every existing data file is looked at (never
    /// through a link): a link, FIFO, device or socket in the layout or at the resume file's names is an
    /// error naming it. A wanted data file longer than the torrent says is truncated to its length, with a
    /// note; an unwanted one (`rill seed` wants none) is only reported. Nothing else is truncated:
    /// existing bytes stay until verified or overwritten.
    pub fn open(dir: &Path, meta: &Metainfo, wanted_file: impl Fn(usize) -> bool) -> Result<Self, StorageError> {
        let root = Root::open(dir)?;
        let mut walker = Walker::new(root);
        let hash = &meta.info_hash.0;
        let resume_name = PathBuf::from(resume::file_name(hash));
        let resume_tmp = PathBuf::from(resume::temp_name(hash));
        walker.refuse_special(&resume_name)?;
        walker.refuse_special(&resume_tmp)?;
        let top = meta.files.first().and_then(|f| f.path.iter().next()).unwrap_or(OsStr::new(""));
        let legacy_resume = resume::legacy_name(top).map(PathBuf::from);
        let mut files = Vec::with_capacity(meta.files.len());
        for (i, f) in meta.files.iter().enumerate() {
            let mut df = DataFile {
                rel: f.path.clone(),
                offset: f.offset,
                length: f.length,
                padding: f.padding,
                link: f.symlink_target.is_some(),
                handle: None,
                id: None,
            };
            if let Some(target) = &f.symlink_target {
                if wanted_file(i) && !f.padding {
                    let Some(text) = nofollow::relative_link_target(&f.path, target) else {
                        return Err(StorageError {
                            path: dir.join(&f.path),
                            op: StorageOp::Link,
                            error: io::Error::new(io::ErrorKind::InvalidInput, "the link's target leaves the torrent"),
                        });
                    };
                    walker.make_link(&f.path, &text)?;
                }
            } else if !f.padding {
                df.id = prepare_file(&mut walker, &f.path, f.length, wanted_file(i))?;
            }
            files.push(df);
        }
        Ok(Storage {
            resume_path: dir.join(&resume_name),
            resume_name,
            resume_tmp,
            legacy_resume,
            walker,
            saving: None,
            files,
            open_order: Vec::new(),
            scratch: vec![0; BLOCK_LEN as usize].into_boxed_slice(),
            next_file_check: Timestamp::ZERO,
        })
    }

    /// A second view of the same files for reads only (uploads), with handles of its own: the disk
    /// queue's reader thread reads through it while the writer may be stalled in a write. It never
    /// creates a file (a missing one reads as zeros), saves nothing and checks nothing.
    pub fn reader(&self) -> Storage {
        Storage {
            files: self
                .files
                .iter()
                .map(|f| DataFile {
                    rel: f.rel.clone(),
                    offset: f.offset,
                    length: f.length,
                    padding: f.padding,
                    link: f.link,
                    handle: None,
                    id: f.id,
                })
                .collect(),
            open_order: Vec::new(),
            scratch: vec![0; BLOCK_LEN as usize].into_boxed_slice(),
            walker: Walker::new(self.walker.root().clone()),
            resume_name: self.resume_name.clone(),
            resume_tmp: self.resume_tmp.clone(),
            legacy_resume: None,
            resume_path: self.resume_path.clone(),
            saving: None,
            next_file_check: Timestamp::ZERO,
        }
    }

    /// The next file span of the layout range `[offset, end)` at or after `cursor`: (file index, offset in
    /// that file, range relative to `offset`). Zero-length files are skipped.
    fn next_span(&self, cursor: &mut Cursor, offset: u64, end: u64) -> Option<(usize, u64, std::ops::Range<usize>)> {
        if cursor.file == usize::MAX {
            // First file whose end is past `offset`.
            cursor.file = self.files.partition_point(|df| df.offset + df.length <= offset);
            cursor.pos = offset;
        }
        while cursor.pos < end && cursor.file < self.files.len() {
            let i = cursor.file;
            let df = &self.files[i];
            cursor.file += 1;
            if df.length > 0 {
                let stop = end.min(df.offset + df.length);
                let span = (i, cursor.pos - df.offset, (cursor.pos - offset) as usize..(stop - offset) as usize);
                cursor.pos = stop;
                return Some(span);
            }
        }
        None
    }

    /// The open handle of data file `i`, opening it if needed (least recently opened closed first). A
    /// file seen before must still be the same file; one never seen is created when `create`, else `None`
    /// while it is missing.
    fn handle(&mut self, i: usize, create: bool) -> Result<Option<&File>, StorageError> {
        if self.files[i].handle.is_none() {
            let known = self.files[i].id;
            let Some(opened) = self.walker.open_file(&self.files[i].rel, create && known.is_none())? else {
                return match known {
                    Some(_) => Err(vanished(self.path(i))),
                    None => Ok(None),
                };
            };
            if known.is_some_and(|id| id != opened.id) {
                return Err(vanished(self.path(i)));
            }
            if self.open_order.len() >= MAX_OPEN_FILES {
                let oldest = self.open_order.remove(0);
                self.files[oldest].handle = None;
            }
            self.files[i].id = Some(opened.id);
            self.files[i].handle = Some(opened.file);
            self.open_order.push(i);
        }
        Ok(self.files[i].handle.as_ref())
    }

    /// The full path of data file `i`, for messages.
    fn path(&self, i: usize) -> PathBuf {
        self.walker.root().join(&self.files[i].rel)
    }

    /// Writes `data` at `offset` of the torrent's layout, across file boundaries. Padding is skipped.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        let mut cursor = Cursor::default();
        while let Some((i, at, range)) = self.next_span(&mut cursor, offset, offset + data.len() as u64) {
            self.write_span(i, at, &data[range])?;
        }
        Ok(())
    }

    fn write_span(&mut self, i: usize, at: u64, data: &[u8]) -> Result<(), StorageError> {
        if !self.files[i].holds_data() {
            return Ok(());
        }
        let Some(file) = self.handle(i, true)? else {
            return Err(vanished(self.path(i)));
        };
        file.write_all_at(data, at).map_err(|error| StorageError { path: self.path(i), op: StorageOp::Write, error })
    }

    /// Writes the concatenation of `parts` (at most `MAX_WRITE_PARTS`) at `offset` of the layout: one
    /// `pwritev` per file the range touches. Padding is skipped.
    pub fn write_run(&mut self, offset: u64, parts: &[&[u8]]) -> Result<(), StorageError> {
        let total: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let mut cursor = Cursor::default();
        while let Some((i, at, range)) = self.next_span(&mut cursor, offset, offset + total) {
            if !self.files[i].holds_data() {
                continue;
            }
            let mut slices = [io::IoSlice::new(&[]); MAX_WRITE_PARTS];
            let mut n = 0;
            let mut pos = 0;
            for part in parts {
                let (start, end) = (pos, pos + part.len());
                pos = end;
                let (lo, hi) = (start.max(range.start), end.min(range.end));
                if lo < hi && n < MAX_WRITE_PARTS {
                    slices[n] = io::IoSlice::new(&part[lo - start..hi - start]);
                    n += 1;
                }
            }
            let Some(file) = self.handle(i, true)? else {
                return Err(vanished(self.path(i)));
            };
            write_all_vectored_at(file, &slices[..n], at).map_err(|error| StorageError {
                path: self.path(i),
                op: StorageOp::Write,
                error,
            })?;
        }
        Ok(())
    }

    /// Done with `len` bytes at `offset` for now (a verified piece): `POSIX_FADV_DONTNEED` on each open
    /// file of the range. Linux starts write-back of its dirty pages and drops the clean ones, so the
    /// first call after writing sends the piece to the device early and a later one frees the memory.
    /// Advice only: a failure changes nothing and is not reported.
    pub fn advise_done_with(&mut self, offset: u64, len: u64) {
        let mut cursor = Cursor::default();
        while let Some((i, at, range)) = self.next_span(&mut cursor, offset, offset + len) {
            if let Some(file) = self.files[i].handle.as_ref() {
                let len = std::num::NonZeroU64::new((range.end - range.start) as u64);
                let _ = rustix::fs::fadvise(file, at, len, rustix::fs::Advice::DontNeed);
            }
        }
    }

    /// Reads `out.len()` bytes at `offset` of the layout. Padding reads as zeros; bytes past the end of a
    /// short or missing file read as zeros too (they will fail verification, never pass it).
    pub fn read(&mut self, offset: u64, out: &mut [u8]) -> Result<(), StorageError> {
        let mut cursor = Cursor::default();
        while let Some((i, at, range)) = self.next_span(&mut cursor, offset, offset + out.len() as u64) {
            self.read_span(i, at, &mut out[range])?;
        }
        Ok(())
    }

    fn read_span(&mut self, i: usize, at: u64, out: &mut [u8]) -> Result<(), StorageError> {
        if !self.files[i].holds_data() {
            out.fill(0);
            return Ok(());
        }
        let Some(file) = self.handle(i, false)? else {
            out.fill(0);
            return Ok(());
        };
        let mut done = 0;
        while done < out.len() {
            match file.read_at(&mut out[done..], at + done as u64) {
                Ok(0) => {
                    out[done..].fill(0);
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(StorageError { path: self.path(i), op: StorageOp::Read, error }),
            }
        }
        Ok(())
    }

    /// Feeds `len` bytes at `offset` into `hasher`, read in 16 KiB steps into one scratch buffer.
    pub fn hash_range(&mut self, offset: u64, len: u64, hasher: &mut Sha1) -> Result<(), StorageError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        if scratch.is_empty() {
            // Never so today (every constructor sizes it), but an empty scratch would never advance.
            scratch = vec![0; BLOCK_LEN as usize].into_boxed_slice();
        }
        let mut pos = 0;
        let result = loop {
            if pos >= len {
                break Ok(());
            }
            let n = (len - pos).min(scratch.len() as u64) as usize;
            if let Err(e) = self.read(offset + pos, &mut scratch[..n]) {
                break Err(e);
            }
            hasher.update(&scratch[..n]);
            pos += n as u64;
        };
        self.scratch = scratch;
        result
    }

    /// Flushes every open data file to the device (before a resume file may claim its pieces).
    pub fn sync(&mut self) -> Result<(), StorageError> {
        for (i, df) in self.files.iter().enumerate() {
            if let Some(file) = &df.handle {
                file.sync_data().map_err(|error| StorageError { path: self.path(i), op: StorageOp::Sync, error })?;
            }
        }
        Ok(())
    }

    /// Whether every open data file is still at its path: each is looked up again from the download
    /// directory (no link followed) and compared with the open handle. One deleted or replaced (or a
    /// folder above it swapped) is a `Vanished` error naming it. Looks at most every `CHECK_FILES_EVERY`
    /// and only at open files (at most `MAX_OPEN_FILES`); the loop calls it from its 1 s timer.
    pub fn check_files(&mut self, now: Timestamp) -> Result<(), StorageError> {
        if now < self.next_file_check {
            return Ok(());
        }
        self.next_file_check = now + CHECK_FILES_EVERY;
        self.walker.forget_dirs();
        for k in 0..self.open_order.len() {
            let i = self.open_order[k];
            if !still_there(&mut self.walker, &self.files[i].rel, self.files[i].id) {
                return Err(vanished(self.path(i)));
            }
        }
        Ok(())
    }
}

/// Position of a walk over file spans.
struct Cursor {
    file: usize,
    pos: u64,
}

impl Default for Cursor {
    fn default() -> Self {
        Cursor { file: usize::MAX, pos: 0 }
    }
}

impl Storage {
    /// `DIR/.rill-<info-hash>.resume`.
    /// Every real file's path, relative to the download directory (padding files left out).
    pub fn paths(&self) -> impl Iterator<Item = &Path> + '_ {
        self.files.iter().filter(|f| !f.padding).map(|f| f.rel.as_path())
    }

    pub fn resume_path(&self) -> &Path {
        &self.resume_path
    }

    /// The size and modification time of every data file now (padding, links and missing files:
    /// `MISSING`).
    pub fn file_stamps(&self) -> Vec<FileStamp> {
        let mut walker = Walker::new(self.walker.root().clone());
        self.files
            .iter()
            .map(|f| if f.holds_data() { stamp(&mut walker, &f.rel) } else { FileStamp::MISSING })
            .collect()
    }

    /// Every file of the torrent in layout order, padding too: (path relative to the download directory,
    /// offset, length, padding). The files a user picks are the ones that are not padding.
    pub fn files(&self) -> impl Iterator<Item = (&Path, u64, u64, bool)> + '_ {
        self.files.iter().map(|f| (f.rel.as_path(), f.offset, f.length, f.padding))
    }

    /// Layout of the data files: (offset, length, padding), in order. Links count as padding: no data.
    pub fn layout(&self) -> impl Iterator<Item = (u64, u64, bool)> + '_ {
        self.files.iter().map(|f| (f.offset, f.length, !f.holds_data()))
    }

    /// Records `have` durably, now: see `SaveJob::run`. Waits for a background save still running first.
    pub fn save_resume(&mut self, info_hash: &[u8; 20], have: &Bitfield) -> Result<(), StorageError> {
        self.finish_background_save()?;
        self.save_job(info_hash, have)?.run()
    }

    /// Starts recording `have` on a helper thread, so the loop never waits on `fdatasync`. Returns false
    /// (and does nothing) while the previous save is still running; an error of a finished save is
    /// returned here.
    pub fn start_background_save(&mut self, info_hash: &[u8; 20], have: &Bitfield) -> Result<bool, StorageError> {
        if self.saving.as_ref().is_some_and(|h| !h.is_finished()) {
            return Ok(false);
        }
        self.finish_background_save()?;
        let job = self.save_job(info_hash, have)?;
        self.saving = Some(std::thread::spawn(move || job.run()));
        Ok(true)
    }

    /// The outcome of a background save that has finished; nothing while one is still running.
    pub fn poll_background_save(&mut self) -> Result<(), StorageError> {
        if self.saving.as_ref().is_some_and(|h| h.is_finished()) {
            self.finish_background_save()?;
        }
        Ok(())
    }

    fn finish_background_save(&mut self) -> Result<(), StorageError> {
        match self.saving.take().map(|h| h.join()) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(StorageError {
                path: self.resume_path.clone(),
                op: StorageOp::Write,
                error: io::Error::other("the resume writer thread failed"),
            }),
        }
    }

    /// Everything a save needs, taken now: duplicates of the open data files (the pieces in `have` were
    /// written through them before this moment), the paths to stamp, and the bitfield.
    fn save_job(&self, info_hash: &[u8; 20], have: &Bitfield) -> Result<SaveJob, StorageError> {
        let mut open = Vec::new();
        for (i, f) in self.files.iter().enumerate() {
            if let Some(handle) = &f.handle {
                let dup = handle.try_clone().map_err(|error| StorageError {
                    path: self.path(i),
                    op: StorageOp::Sync,
                    error,
                })?;
                open.push((f.rel.clone(), dup, f.id));
            }
        }
        Ok(SaveJob {
            root: self.walker.root().clone(),
            open,
            stamp_paths: self.files.iter().map(|f| f.holds_data().then(|| f.rel.clone())).collect(),
            resume_name: self.resume_name.clone(),
            resume_tmp: self.resume_tmp.clone(),
            info_hash: *info_hash,
            pieces: have.as_bytes().to_vec(),
        })
    }

    /// The resume file, if there is a usable one for this torrent. It is read only if it is a regular
    /// file of at most `resume::max_encoded_len` bytes, opened without following a link or blocking:
    /// - a link, FIFO, device or socket at its name is an error (someone is tampering with the
    ///   directory; nothing is read through it);
    /// - one too big, malformed, or another torrent's gets a one-line warning, and the data is checked.
    ///
    /// A file under the old name `.<name>.rill-resume` is read (by the same rules) only when the new one
    /// is missing, and moved to the new name when it is this torrent's.
    pub fn load_resume(&mut self, info_hash: &[u8; 20], piece_count: u32) -> Result<Option<ResumeData>, StorageError> {
        let piece_bytes = Bitfield::byte_len(piece_count);
        let bound = resume::max_encoded_len(piece_bytes, self.files.len());
        let mut read = self.walker.read_bounded(&self.resume_name, bound)?;
        let mut shown = self.resume_path.clone();
        if let (Bounded::Missing, Some(legacy)) = (&read, self.legacy_resume.clone()) {
            read = self.walker.read_bounded(&legacy, bound)?;
            // Moved only when it is this torrent's: two torrents of one name shared the old name.
            if let Bounded::Bytes(bytes) = &read {
                if resume::decode(bytes, info_hash, piece_bytes, self.files.len()).is_ok() {
                    let moved = self.walker.replace(&self.resume_name, &self.resume_tmp, bytes);
                    match moved.and_then(|()| self.walker.remove_file(&legacy)) {
                        Ok(()) => log::info!("moved {} to {}", legacy.display(), self.resume_name.display()),
                        Err(e) => log::warn!("{e}; the old resume file stays"),
                    }
                }
            }
            if !matches!(read, Bounded::Missing) {
                shown = self.walker.root().join(&legacy);
            }
        }
        let bytes = match read {
            Bounded::Missing => return Ok(None),
            Bounded::TooBig(size) => {
                log::warn!(
                    "{}: {size} bytes, more than a resume file for this torrent can be ({bound}); checking the data \
                     instead",
                    shown.display()
                );
                return Ok(None);
            }
            Bounded::Bytes(bytes) => bytes,
        };
        match resume::decode(&bytes, info_hash, piece_bytes, self.files.len()) {
            Ok(data) => Ok(Some(data)),
            Err(e) => {
                log::warn!("{}: {e}; checking the data instead", shown.display());
                Ok(None)
            }
        }
    }
}

/// Looks at data file `rel` as the layout is opened: a link, FIFO, device or socket there (or on the way)
/// is refused; a regular file longer than `length` is truncated when `wanted`, else reported. Returns the
/// file's identity, if it exists.
fn prepare_file(walker: &mut Walker, rel: &Path, length: u64, wanted: bool) -> Result<Option<FileId>, StorageError> {
    if length == 0 && wanted {
        // Zero-length files are created now; nothing else would ever make them.
        return Ok(walker.open_file(rel, true)?.map(|o| o.id));
    }
    let meta = match walker.lstat(rel)? {
        None => return Ok(None),
        Some(m) if m.found == Found::Directory => return Ok(None), // the first write names it
        Some(m) if m.found != Found::RegularFile => {
            return Err(StorageError {
                path: walker.root().join(rel),
                op: StorageOp::Refused,
                error: io::Error::other(nofollow::Unexpected { found: m.found, wanted: nofollow::Wanted::File }),
            })
        }
        Some(m) => m,
    };
    if meta.size <= length {
        return Ok(Some(meta.id));
    }
    let path = walker.root().join(rel);
    if !wanted {
        log::warn!(
            "{}: {} bytes, longer than the torrent's {length}; the extra bytes are ignored",
            path.display(),
            meta.size
        );
        return Ok(Some(meta.id));
    }
    let opened = walker.open_file(rel, false)?.ok_or_else(|| vanished(path.clone()))?;
    opened.file.set_len(length).map_err(|error| StorageError { path: path.clone(), op: StorageOp::Truncate, error })?;
    log::warn!("{}: {} bytes, longer than the torrent's {length}; truncated to {length}", path.display(), opened.size);
    Ok(Some(opened.id))
}

#[cfg(test)]
mod tests;
