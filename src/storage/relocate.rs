//! Moving a stopped torrent's files to another directory (the daemon's `torrent-set-location` with `move`),
//! on a short-lived helper thread, `rill-move`, so a slow card never stalls the loop.
//!
//! Owns: checking a move before touching anything (plain relative paths, no symbolic link on the way, nothing
//! in the way at the target), moving each file by rename, or by copy and sync where the target is on another
//! file system, and putting back what was moved when a later file fails, so the data is whole in one place or
//! the other. Must not: run while the engine holds the torrent's files (the caller waits until it let go), or
//! decide where a torrent may go (the daemon keeps it under its download root).

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::thread::JoinHandle;

/// A move in progress.
pub struct Relocation(JoinHandle<Result<usize, String>>);

impl Relocation {
    /// Moves the files `rel` (relative to `from`; a file that does not exist is skipped) to the same places
    /// under `to`, then removes the folders left empty under `from`.
    pub fn start(from: PathBuf, to: PathBuf, rel: Vec<PathBuf>) -> io::Result<Relocation> {
        std::thread::Builder::new().name("rill-move".into()).spawn(move || relocate(&from, &to, &rel)).map(Relocation)
    }

    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    /// How many files were moved, or why nothing was (everything moved is back in place then).
    pub fn wait(self) -> Result<usize, String> {
        self.0.join().unwrap_or_else(|_| Err("the move thread panicked".into()))
    }
}

/// Linux's EXDEV: a rename across file systems.
const CROSS_DEVICE: i32 = 18;

/// What one file's move did, to undo it.
enum Moved {
    Renamed,
    /// Copied; the source stays until every file is across.
    Copied,
}

pub fn relocate(from: &Path, to: &Path, rel: &[PathBuf]) -> Result<usize, String> {
    let mut todo = Vec::new();
    for r in rel {
        if r.as_os_str().is_empty() || r.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(format!("{}: not a plain relative path", r.display()));
        }
        let (src, dst) = (from.join(r), to.join(r));
        no_link_on_the_way(from, r)?;
        no_link_on_the_way(to, r)?;
        match fs::symlink_metadata(&src) {
            Ok(m) if m.file_type().is_file() => {}
            Ok(_) => return Err(format!("{}: not a regular file", src.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{}: {e}", src.display())),
        }
        if fs::symlink_metadata(&dst).is_ok() {
            return Err(format!("{} is in the way", dst.display()));
        }
        todo.push((src, dst));
    }
    let mut done: Vec<(&Path, &Path, Moved)> = Vec::with_capacity(todo.len());
    for (src, dst) in &todo {
        match move_one(src, dst) {
            Ok(how) => done.push((src, dst, how)),
            Err(e) => {
                for (src, dst, how) in done.iter().rev() {
                    let undone = match how {
                        Moved::Renamed => fs::rename(dst, src),
                        Moved::Copied => fs::remove_file(dst),
                    };
                    if let Err(u) = undone {
                        log::error!("cannot put {} back after a failed move: {u}", src.display());
                    }
                }
                return Err(format!("{} to {}: {e}", src.display(), dst.display()));
            }
        }
    }
    for (src, _, how) in &done {
        if matches!(how, Moved::Copied) {
            if let Err(e) = fs::remove_file(src) {
                log::warn!("moved, but cannot remove {}: {e}", src.display());
            }
        }
    }
    super::files::remove_empty_folders(from, rel);
    Ok(done.len())
}

fn move_one(src: &Path, dst: &Path) -> io::Result<Moved> {
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent)?;
    }
    match fs::rename(src, dst) {
        Ok(()) => Ok(Moved::Renamed),
        Err(e) if e.raw_os_error() == Some(CROSS_DEVICE) => {
            let copied = fs::copy(src, dst).and_then(|_| fs::File::open(dst)?.sync_all());
            if let Err(e) = copied {
                let _ = fs::remove_file(dst);
                return Err(e);
            }
            Ok(Moved::Copied)
        }
        Err(e) => Err(e),
    }
}

/// Refuses a symbolic link at any folder between `base` and the file `rel` names (a link could lead the move
/// out of the download root).
fn no_link_on_the_way(base: &Path, rel: &Path) -> Result<(), String> {
    let mut at = base.to_path_buf();
    let folders = rel.parent().into_iter().flat_map(Path::components);
    for part in std::iter::once(None).chain(folders.map(Some)) {
        if let Some(part) = part {
            at.push(part);
        }
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => return Err(format!("{} is a symbolic link", at.display())),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rill-relocate-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn files_move_with_their_folders_and_missing_ones_are_skipped() {
        let root = scratch("move");
        let (from, to) = (root.join("a"), root.join("b/c"));
        fs::create_dir_all(from.join("t/sub")).unwrap();
        fs::write(from.join("t/sub/one"), b"1").unwrap();
        fs::write(from.join("t/two"), b"22").unwrap();
        fs::write(from.join(".resume"), b"r").unwrap();
        let rel: Vec<PathBuf> = ["t/sub/one", "t/two", "t/never-made", ".resume"].iter().map(PathBuf::from).collect();
        assert_eq!(relocate(&from, &to, &rel), Ok(3));
        assert_eq!(fs::read(to.join("t/sub/one")).unwrap(), b"1");
        assert_eq!(fs::read(to.join("t/two")).unwrap(), b"22");
        assert_eq!(fs::read(to.join(".resume")).unwrap(), b"r");
        assert!(!from.join("t").exists(), "emptied folders go");
        assert!(from.exists(), "the old download folder stays");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn anything_in_the_way_or_a_link_refuses_the_move_before_a_file_moves() {
        let root = scratch("refuse");
        let (from, to) = (root.join("a"), root.join("b"));
        fs::create_dir_all(from.join("t")).unwrap();
        fs::create_dir_all(to.join("t")).unwrap();
        fs::write(from.join("t/one"), b"1").unwrap();
        fs::write(from.join("t/two"), b"2").unwrap();
        fs::write(to.join("t/two"), b"other").unwrap();
        let rel: Vec<PathBuf> = ["t/one", "t/two"].iter().map(PathBuf::from).collect();
        let err = relocate(&from, &to, &rel).unwrap_err();
        assert!(err.contains("is in the way"), "{err}");
        assert_eq!(fs::read(from.join("t/one")).unwrap(), b"1", "nothing moved");
        assert!(!to.join("t/one").exists());
        fs::remove_file(to.join("t/two")).unwrap();
        fs::remove_dir(to.join("t")).unwrap();
        std::os::unix::fs::symlink(root.join("elsewhere"), to.join("t")).unwrap();
        let err = relocate(&from, &to, &rel).unwrap_err();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(from.join("t/one").exists() && from.join("t/two").exists());
        assert!(relocate(&from, &to, &[PathBuf::from("../x")]).unwrap_err().contains("plain relative"));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_failure_half_way_puts_back_what_moved() {
        let root = scratch("undo");
        let (from, to) = (root.join("a"), root.join("b"));
        fs::create_dir_all(from.join("t")).unwrap();
        fs::write(from.join("t/one"), b"1").unwrap();
        fs::write(from.join("t/two"), b"2").unwrap();
        // A file where `t/two`'s folder must be made fails the second move only.
        fs::create_dir_all(&to).unwrap();
        let rel: Vec<PathBuf> = ["t/one", "u/two"].iter().map(PathBuf::from).collect();
        fs::create_dir_all(from.join("u")).unwrap();
        fs::rename(from.join("t/two"), from.join("u/two")).unwrap();
        fs::write(to.join("u"), b"a file, not a folder").unwrap();
        let err = relocate(&from, &to, &rel).unwrap_err();
        assert!(err.contains("u/two"), "{err}");
        assert_eq!(fs::read(from.join("t/one")).unwrap(), b"1", "the first file is back");
        assert_eq!(fs::read(from.join("u/two")).unwrap(), b"2");
        assert!(!to.join("t/one").exists());
        fs::remove_dir_all(&root).unwrap();
    }
}
