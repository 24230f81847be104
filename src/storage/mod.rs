//! Storage: the only module that opens data files.
//!
//! Owns: the on-disk layout of a torrent (directories, files, zero-length files, BEP 47 padding that is
//! never created), positioned reads and writes that span file boundaries, the scratch buffer used to hash
//! pieces back from disk, and `fdatasync`. Resume saves while downloading run on a short-lived helper
//! thread (flush, stamp, atomic write) so the event loop never waits on the device; the save on exit runs
//! in place.
//! Must not: know about peers or protocol state. It takes byte offsets in the torrent's layout and slices.

pub mod resume;
pub mod scan;
pub mod verify;

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha1::{Digest, Sha1};

use crate::bitfield::Bitfield;
use resume::{FileStamp, ResumeData};

use crate::geometry::BLOCK_LEN;
use crate::metainfo::Metainfo;

/// What storage was doing when the OS said no.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageOp {
    CreateDir,
    Open,
    /// The file was deleted or replaced while rill had it open.
    Vanished,
    Write,
    Read,
    Sync,
}

/// A failed file operation, with the path it concerned.
#[derive(Debug)]
pub struct StorageError {
    pub path: PathBuf,
    pub op: StorageOp,
    pub error: io::Error,
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self.op {
            StorageOp::CreateDir => "cannot create directory",
            StorageOp::Open => "cannot open",
            StorageOp::Vanished => "file vanished:",
            StorageOp::Write => "cannot write",
            StorageOp::Read => "cannot read",
            StorageOp::Sync => "cannot flush",
        };
        write!(f, "{verb} {}: {}", self.path.display(), self.error)
    }
}

impl std::error::Error for StorageError {}

struct DataFile {
    path: PathBuf,
    offset: u64,
    length: u64,
    padding: bool,
    handle: Option<File>,
}

/// At most this many data files are open at once; the least recently opened is closed first.
const MAX_OPEN_FILES: usize = 64;

pub struct Storage {
    files: Vec<DataFile>,
    open_order: Vec<usize>,
    scratch: Box<[u8]>,
    /// `DIR/.<name>.rill-resume`, beside the data.
    resume_path: PathBuf,
    /// A resume save running on a helper thread.
    saving: Option<std::thread::JoinHandle<Result<(), StorageError>>>,
}

/// One resume save: flush, check, stamp, write. Runs on the loop's thread at exit, on a helper thread
/// while downloading.
struct SaveJob {
    open: Vec<(PathBuf, File)>,
    /// Per layout file; `None` for padding.
    stamp_paths: Vec<Option<PathBuf>>,
    resume_path: PathBuf,
    info_hash: [u8; 20],
    pieces: Vec<u8>,
}

impl SaveJob {
    /// 1. Flush every data file (so no piece is ever claimed that is not on the device).
    /// 2. Fail if a file was deleted or replaced while open (writes to it went nowhere).
    /// 3. Stamp each file's size and mtime.
    /// 4. Write the resume file to a temporary name, fsync it, rename it over the old one, fsync the
    ///    directory.
    fn run(self) -> Result<(), StorageError> {
        for (path, file) in &self.open {
            file.sync_data().map_err(|error| StorageError { path: path.clone(), op: StorageOp::Sync, error })?;
            let vanished = || StorageError {
                path: path.clone(),
                op: StorageOp::Vanished,
                error: io::Error::new(io::ErrorKind::NotFound, "deleted or replaced while downloading"),
            };
            let open = file.metadata().map_err(|_| vanished())?;
            match fs::metadata(path) {
                Ok(now) if now.ino() == open.ino() && now.dev() == open.dev() => {}
                _ => return Err(vanished()),
            }
        }
        let files = self.stamp_paths.iter().map(|p| p.as_deref().map_or(FileStamp::MISSING, stamp)).collect();
        let bytes = resume::encode(&ResumeData { info_hash: self.info_hash, pieces: self.pieces, files });
        let path = self.resume_path;
        let tmp = path.with_extension("rill-resume.tmp");
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|error| StorageError { path: path.clone(), op: StorageOp::Write, error })
    }
}

/// A data file's size and mtime now (`MISSING` if it is not there).
fn stamp(path: &Path) -> FileStamp {
    match fs::metadata(path) {
        Ok(m) => FileStamp {
            size: i64::try_from(m.len()).unwrap_or(i64::MAX),
            mtime_secs: m.mtime(),
            mtime_nanos: m.mtime_nsec(),
        },
        Err(_) => FileStamp::MISSING,
    }
}

impl Storage {
    /// Prepares `dir/<layout>`: makes directories and creates zero-length files. Data files are created
    /// when first written. Nothing is truncated: existing bytes stay until verified or overwritten.
    pub fn open(dir: &Path, meta: &Metainfo, wanted_file: impl Fn(usize) -> bool) -> Result<Self, StorageError> {
        let mut files = Vec::with_capacity(meta.files.len());
        for (i, f) in meta.files.iter().enumerate() {
            let path = dir.join(&f.path);
            if !f.padding && f.length == 0 && wanted_file(i) {
                create_parent(&path)?;
                OpenOptions::new().create(true).append(true).open(&path).map_err(|error| StorageError {
                    path: path.clone(),
                    op: StorageOp::Open,
                    error,
                })?;
            }
            files.push(DataFile { path, offset: f.offset, length: f.length, padding: f.padding, handle: None });
        }
        let top = meta.files.first().and_then(|f| f.path.components().next());
        let name = top.map(|c| c.as_os_str().to_string_lossy().into_owned()).unwrap_or_default();
        Ok(Storage {
            resume_path: dir.join(format!(".{name}.rill-resume")),
            saving: None,
            files,
            open_order: Vec::new(),
            scratch: vec![0; BLOCK_LEN as usize].into_boxed_slice(),
        })
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

    fn handle(&mut self, i: usize) -> Result<&File, StorageError> {
        if self.files[i].handle.is_none() {
            if self.open_order.len() >= MAX_OPEN_FILES {
                let oldest = self.open_order.remove(0);
                self.files[oldest].handle = None;
            }
            let path = self.files[i].path.clone();
            create_parent(&path)?;
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|error| StorageError { path, op: StorageOp::Open, error })?;
            self.files[i].handle = Some(file);
            self.open_order.push(i);
        }
        // Just opened or already open.
        Ok(self.files[i].handle.as_ref().expect("handle set above"))
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
        if self.files[i].padding {
            return Ok(());
        }
        let file = self.handle(i)?;
        file.write_all_at(data, at).map_err(|error| StorageError {
            path: self.files[i].path.clone(),
            op: StorageOp::Write,
            error,
        })
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
        if self.files[i].padding {
            out.fill(0);
            return Ok(());
        }
        if self.files[i].handle.is_none() && !self.files[i].path.exists() {
            out.fill(0);
            return Ok(());
        }
        let file = self.handle(i)?;
        let mut done = 0;
        while done < out.len() {
            match file.read_at(&mut out[done..], at + done as u64) {
                Ok(0) => {
                    out[done..].fill(0);
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    return Err(StorageError { path: self.files[i].path.clone(), op: StorageOp::Read, error })
                }
            }
        }
        Ok(())
    }

    /// Feeds `len` bytes at `offset` into `hasher`, read in 16 KiB steps into one scratch buffer.
    pub fn hash_range(&mut self, offset: u64, len: u64, hasher: &mut Sha1) -> Result<(), StorageError> {
        let mut scratch = std::mem::take(&mut self.scratch);
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
        for df in &self.files {
            if let Some(file) = &df.handle {
                file.sync_data().map_err(|error| StorageError { path: df.path.clone(), op: StorageOp::Sync, error })?;
            }
        }
        Ok(())
    }

    /// The paths of the data files (for resume checks and summaries).
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|f| f.path.as_path())
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
    pub fn resume_path(&self) -> &Path {
        &self.resume_path
    }

    /// The size and modification time of every data file now (padding and missing files: `MISSING`).
    pub fn file_stamps(&self) -> Vec<FileStamp> {
        self.files.iter().map(|f| if f.padding { FileStamp::MISSING } else { stamp(&f.path) }).collect()
    }

    /// Layout of the data files: (offset, length, padding), in order.
    pub fn layout(&self) -> impl Iterator<Item = (u64, u64, bool)> + '_ {
        self.files.iter().map(|f| (f.offset, f.length, f.padding))
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
        for f in &self.files {
            if let Some(handle) = &f.handle {
                let dup = handle.try_clone().map_err(|error| StorageError {
                    path: f.path.clone(),
                    op: StorageOp::Sync,
                    error,
                })?;
                open.push((f.path.clone(), dup));
            }
        }
        Ok(SaveJob {
            open,
            stamp_paths: self.files.iter().map(|f| (!f.padding).then(|| f.path.clone())).collect(),
            resume_path: self.resume_path.clone(),
            info_hash: *info_hash,
            pieces: have.as_bytes().to_vec(),
        })
    }

    /// The resume file, if there is one for this torrent; anything unusable is reported and ignored.
    pub fn load_resume(&self, info_hash: &[u8; 20], piece_count: u32) -> Option<ResumeData> {
        let bytes = fs::read(&self.resume_path).ok()?;
        match resume::decode(&bytes, info_hash, Bitfield::byte_len(piece_count), self.files.len()) {
            Ok(data) => Some(data),
            Err(e) => {
                log::warn!("{}: {e}; checking the data instead", self.resume_path.display());
                None
            }
        }
    }
}

fn create_parent(path: &Path) -> Result<(), StorageError> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            fs::create_dir_all(parent).map_err(|error| StorageError {
                path: parent.to_path_buf(),
                op: StorageOp::CreateDir,
                error,
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
