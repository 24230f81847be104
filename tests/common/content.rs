//! Test content: deterministic pseudo-random bytes from a seed, file trees with nested folders, a zero-length file
//! and sizes that leave the last piece short; and a byte-for-byte comparison of two trees.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * 1024;

/// What was written: `parent/name` is the file (single-file) or the top folder (multi-file).
#[derive(Clone, Debug)]
pub struct Content {
    pub parent: PathBuf,
    pub name: String,
    /// Relative to `parent/name` for a tree; empty for a single file.
    pub files: Vec<(PathBuf, u64)>,
    pub total: u64,
}

impl Content {
    /// `parent/name`.
    pub fn path(&self) -> PathBuf {
        self.parent.join(&self.name)
    }
}

/// splitmix64: small, fast, and good enough that no two blocks of test data look alike.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Writes `len` pseudo-random bytes determined by `seed` to `path` (creating parent folders).
pub fn write_pseudo_random(path: &Path, len: u64, seed: u64) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    }
    let f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut w = BufWriter::with_capacity(256 * 1024, f);
    let mut rng = SplitMix(seed ^ 0x005E_ED0F_7E57);
    let mut left = len;
    let mut chunk = [0u8; 64 * 1024];
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        for word in chunk[..n].chunks_mut(8) {
            let v = rng.next().to_le_bytes();
            word.copy_from_slice(&v[..word.len()]);
        }
        w.write_all(&chunk[..n]).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        left -= n as u64;
    }
    w.flush().unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A tree `parent/name/…` with the given (relative path, size) files, each with its own seed derived from `seed`.
pub fn write_tree(parent: &Path, name: &str, files: &[(&str, u64)], seed: u64) -> Content {
    let root = parent.join(name);
    fs::create_dir_all(&root).unwrap_or_else(|e| panic!("create {}: {e}", root.display()));
    let mut out = Vec::new();
    for (i, (rel, len)) in files.iter().enumerate() {
        write_pseudo_random(&root.join(rel), *len, seed.wrapping_mul(1000).wrapping_add(i as u64));
        out.push((PathBuf::from(rel), *len));
    }
    Content { parent: parent.to_path_buf(), name: name.to_string(), total: out.iter().map(|f| f.1).sum(), files: out }
}

/// A single file `parent/name`.
pub fn write_single(parent: &Path, name: &str, len: u64, seed: u64) -> Content {
    write_pseudo_random(&parent.join(name), len, seed);
    Content { parent: parent.to_path_buf(), name: name.to_string(), files: Vec::new(), total: len }
}

/// The standard multi-file tree (about 11 MiB): nested folders four deep, a zero-length file, a tiny file, and a
/// total that is not a multiple of 256 KiB (or of 16 KiB), so the last piece and its last block are short.
pub fn standard_tree(parent: &Path, name: &str, seed: u64) -> Content {
    let files: &[(&str, u64)] = &[
        ("README.txt", 1_234),
        ("empty.dat", 0),
        ("media/album/track01.flac", 3 * MIB + 77_777),
        ("media/album/track02.flac", 2 * MIB + 5),
        ("media/video.raw", 4 * MIB + 131_073),
        ("deep/a/b/c/leaf.bin", MIB + 999),
        ("deep/a/sibling.bin", 16 * KIB),
        ("z-last.bin", 300_001),
    ];
    let c = write_tree(parent, name, files, seed);
    assert!(c.total % (256 * KIB) != 0 && c.total % (16 * KIB) != 0);
    c
}

/// A smaller tree (about 3 MiB) for single-seeder tests.
pub fn small_tree(parent: &Path, name: &str, seed: u64) -> Content {
    let files: &[(&str, u64)] =
        &[("one.bin", MIB + 12_345), ("sub/two.bin", 700_001), ("sub/deeper/three.bin", MIB + 3), ("zero-length", 0)];
    write_tree(parent, name, files, seed)
}

/// Every regular file under `root` (recursively), relative to it, with its size, sorted.
pub fn list_files(root: &Path) -> Vec<(PathBuf, u64)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, u64)>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(md) = fs::symlink_metadata(&p) else {
                continue;
            };
            if md.is_dir() {
                walk(root, &p, out);
            } else {
                out.push((p.strip_prefix(root).unwrap_or(&p).to_path_buf(), md.len()));
            }
        }
    }
    let mut out = Vec::new();
    if root.is_file() {
        let len = fs::metadata(root).map(|m| m.len()).unwrap_or(0);
        out.push((PathBuf::new(), len));
    } else {
        walk(root, root, &mut out);
    }
    out.sort();
    out
}

/// The first offset at which two files differ, or `None` when they are identical.
pub fn first_difference(a: &Path, b: &Path) -> Result<Option<u64>, String> {
    let mut fa = File::open(a).map_err(|e| format!("open {}: {e}", a.display()))?;
    let mut fb = File::open(b).map_err(|e| format!("open {}: {e}", b.display()))?;
    let (mut ba, mut bb) = (vec![0u8; 256 * 1024], vec![0u8; 256 * 1024]);
    let mut off = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(|e| format!("read {}: {e}", a.display()))?;
        let nb = read_full(&mut fb, &mut bb).map_err(|e| format!("read {}: {e}", b.display()))?;
        let n = na.min(nb);
        if let Some(i) = ba[..n].iter().zip(&bb[..n]).position(|(x, y)| x != y) {
            return Ok(Some(off + i as u64));
        }
        if na != nb {
            return Ok(Some(off + n as u64));
        }
        if na == 0 {
            return Ok(None);
        }
        off += na as u64;
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Asserts that `actual` holds exactly the files of `expected` (same relative paths, same sizes, same bytes),
/// zero-length files included, and nothing else.
#[track_caller]
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    assert!(actual.exists(), "output {} does not exist", actual.display());
    let want = list_files(expected);
    let got = list_files(actual);
    let want_names: Vec<_> = want.iter().map(|f| &f.0).collect();
    let got_names: Vec<_> = got.iter().map(|f| &f.0).collect();
    assert_eq!(
        got_names,
        want_names,
        "the file lists differ:\n  expected {}: {want:?}\n  got      {}: {got:?}",
        expected.display(),
        actual.display()
    );
    for ((rel, want_len), (_, got_len)) in want.iter().zip(&got) {
        let join = |root: &Path| {
            if rel.as_os_str().is_empty() {
                root.to_path_buf()
            } else {
                root.join(rel)
            }
        };
        let (e, a) = (join(expected), join(actual));
        assert_eq!(got_len, want_len, "{}: size {got_len}, expected {want_len}", a.display());
        match first_difference(&e, &a) {
            Ok(None) => {}
            Ok(Some(off)) => panic!("{} differs from {} at byte {off}", a.display(), e.display()),
            Err(err) => panic!("{err}"),
        }
    }
}

/// Whether `dir` holds no entry at all (or does not exist).
pub fn is_empty_dir(dir: &Path) -> bool {
    fs::read_dir(dir).map(|mut rd| rd.next().is_none()).unwrap_or(true)
}

/// Copies `src` (a file or a tree) to `dst`, e.g. to give each seeder its own copy of the data while the original
/// stays pristine for the comparison.
pub fn copy_tree(src: &Path, dst: &Path) {
    let md = fs::metadata(src).unwrap_or_else(|e| panic!("stat {}: {e}", src.display()));
    if md.is_dir() {
        fs::create_dir_all(dst).unwrap_or_else(|e| panic!("create {}: {e}", dst.display()));
        for e in fs::read_dir(src).unwrap_or_else(|e| panic!("read {}: {e}", src.display())).flatten() {
            copy_tree(&e.path(), &dst.join(e.file_name()));
        }
    } else {
        if let Some(dir) = dst.parent() {
            fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        }
        fs::copy(src, dst).unwrap_or_else(|e| panic!("copy {} to {}: {e}", src.display(), dst.display()));
    }
}

impl Content {
    /// A copy of this content under `parent` (as `parent/<name>`); returns `parent`, the dir to hand a seeder.
    pub fn copy_to(&self, parent: &Path) -> PathBuf {
        copy_tree(&self.path(), &parent.join(&self.name));
        parent.to_path_buf()
    }
}
