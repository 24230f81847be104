//! Storage against a real temporary directory: layout creation, positioned writes and reads across file
//! boundaries and BEP 47 padding, piece verification, and errors that name their path.

use std::fs;
use std::path::{Path, PathBuf};

use sha1::{Digest, Sha1};

use super::verify::{check_piece, finish_piece};
use super::*;
use crate::geometry::{Geometry, BLOCK_LEN};
use crate::metainfo::{FileEntry, Metainfo};
use crate::rng::Rng;
use crate::sim::TempDir;

// ---- fixtures ---------------------------------------------------------------------------------

const PIECE_LEN: u32 = 2 * BLOCK_LEN;

/// `(path, length, padding)` in layout order:
///
/// ```text
/// piece:  |0                |1                |2                |3 (short) |
/// files:  |a.bin|sub/deeper/b.bin |.pad/25536 |sub/c.bin                 |d.txt|
///               ^ sub/empty.txt (zero length) at 10_000
/// ```
const LAYOUT: &[(&str, u64, bool)] = &[
    ("multi/a.bin", 10_000, false),
    ("multi/sub/empty.txt", 0, false),
    ("multi/sub/deeper/b.bin", 30_000, false),
    ("multi/.pad/25536", 25_536, true),
    ("multi/sub/c.bin", 50_000, false),
    ("multi/d.txt", 7, false),
];

const A: usize = 0;
const EMPTY: usize = 1;
const B: usize = 2;
const PAD: usize = 3;
const C: usize = 4;
const D: usize = 5;

/// Builds a metainfo from `(path, length, padding)` entries; padding bytes are zero, the rest seeded
/// pseudo-random. Returns the layout's content too.
fn torrent(layout: &[(&str, u64, bool)], piece_length: u32) -> (Metainfo, Vec<u8>) {
    let mut rng = Rng::seeded(47);
    let mut files = vec![];
    let mut content = vec![];
    for &(path, length, padding) in layout {
        let offset = content.len() as u64;
        let start = content.len();
        content.resize(start + length as usize, 0);
        if !padding {
            rng.fill(&mut content[start..]);
        }
        files.push(FileEntry { path: PathBuf::from(path), length, offset, padding, symlink_target: None });
    }
    let meta = crate::sim::metainfo_for("multi", files, piece_length, &content);
    (meta, content)
}

fn multi() -> (Metainfo, Vec<u8>) {
    torrent(LAYOUT, PIECE_LEN)
}

fn geometry(meta: &Metainfo) -> Geometry {
    Geometry::new(meta.piece_length, meta.total_length)
}

/// The layout range of file `i`.
fn span(meta: &Metainfo, i: usize) -> std::ops::Range<usize> {
    let f = &meta.files[i];
    f.offset as usize..(f.offset + f.length) as usize
}

fn piece_range(meta: &Metainfo, piece: u32) -> std::ops::Range<usize> {
    let g = geometry(meta);
    let start = g.piece_offset(piece) as usize;
    start..start + g.piece_len(piece) as usize
}

#[track_caller]
fn open_all(dir: &TempDir, meta: &Metainfo) -> Storage {
    Storage::open(dir.path(), meta, |_| true).expect("open storage")
}

/// Writes the whole layout in 16 KiB blocks, as blocks arrive from peers.
#[track_caller]
fn write_all(storage: &mut Storage, content: &[u8]) {
    for (i, block) in content.chunks(BLOCK_LEN as usize).enumerate() {
        storage.write((i * BLOCK_LEN as usize) as u64, block).expect("write block");
    }
}

/// Reads `len` bytes at `offset` into a buffer pre-filled with `0xA5`, so untouched bytes show.
#[track_caller]
fn read(storage: &mut Storage, offset: usize, len: usize) -> Vec<u8> {
    let mut out = vec![0xA5; len];
    storage.read(offset as u64, &mut out).expect("read");
    out
}

#[track_caller]
fn on_disk(dir: &TempDir, rel: &str) -> Vec<u8> {
    fs::read(dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

// ---- opening the layout -----------------------------------------------------------------------

#[test]
fn open_creates_zero_length_files_and_their_directories() {
    let dir = TempDir::new("open");
    let (meta, _) = multi();
    let _storage = open_all(&dir, &meta);
    let empty = fs::metadata(dir.join(LAYOUT[EMPTY].0)).expect("zero-length file created");
    assert!(empty.is_file());
    assert_eq!(empty.len(), 0);
    assert!(dir.join("multi/sub").is_dir());
}

#[test]
fn open_creates_no_data_file_and_never_the_padding_file() {
    let dir = TempDir::new("open-lazy");
    let (meta, _) = multi();
    let _storage = open_all(&dir, &meta);
    for i in [A, B, C, D] {
        assert!(!dir.join(LAYOUT[i].0).exists(), "{} created before any write", LAYOUT[i].0);
    }
    assert!(!dir.join("multi/.pad").exists(), "padding directory created");
}

#[test]
fn open_skips_zero_length_files_that_are_not_wanted() {
    let dir = TempDir::new("open-unwanted");
    let (meta, _) = multi();
    let _storage = Storage::open(dir.path(), &meta, |i| i != EMPTY).unwrap();
    assert!(!dir.join(LAYOUT[EMPTY].0).exists());
}

#[test]
fn open_truncates_nothing() {
    let dir = TempDir::new("open-keep");
    let (meta, content) = multi();
    fs::create_dir_all(dir.join("multi")).unwrap();
    fs::write(dir.join(LAYOUT[A].0), &content[span(&meta, A)]).unwrap();
    let mut storage = open_all(&dir, &meta);
    assert_eq!(on_disk(&dir, LAYOUT[A].0), &content[span(&meta, A)]);
    assert_eq!(read(&mut storage, 0, 10_000), &content[span(&meta, A)]);
}

// ---- writes -------------------------------------------------------------------------------------

#[test]
fn a_piece_spanning_files_lands_in_each_at_the_right_offset() {
    let dir = TempDir::new("write-span");
    let (meta, content) = multi();
    let mut storage = open_all(&dir, &meta);
    // Piece 0 covers all of a.bin, the zero-length file, and the first 22,768 bytes of b.bin.
    storage.write(0, &content[piece_range(&meta, 0)]).unwrap();
    assert_eq!(on_disk(&dir, LAYOUT[A].0), &content[span(&meta, A)]);
    assert_eq!(on_disk(&dir, LAYOUT[EMPTY].0), b"");
    let b = on_disk(&dir, LAYOUT[B].0);
    assert_eq!(b.len(), 32_768 - 10_000);
    assert_eq!(b, &content[10_000..32_768]);
}

#[test]
fn a_block_straddling_a_boundary_is_split_between_the_files() {
    let dir = TempDir::new("write-straddle");
    let (meta, content) = multi();
    let mut storage = open_all(&dir, &meta);
    storage.write(9_000, &content[9_000..11_000]).unwrap();
    let a = on_disk(&dir, LAYOUT[A].0);
    assert_eq!(a.len(), 10_000, "a.bin extended to the written end");
    assert_eq!(&a[9_000..], &content[9_000..10_000]);
    assert!(a[..9_000].iter().all(|&x| x == 0), "a hole before the write");
    assert_eq!(on_disk(&dir, LAYOUT[B].0), &content[10_000..11_000]);
}

#[test]
fn padding_is_skipped_on_write_and_never_created() {
    let dir = TempDir::new("write-pad");
    let (meta, content) = multi();
    let mut storage = open_all(&dir, &meta);
    // Piece 1: the end of b.bin, then padding to the piece boundary.
    storage.write(32_768, &content[piece_range(&meta, 1)]).unwrap();
    let b = on_disk(&dir, LAYOUT[B].0);
    assert_eq!(b.len(), 30_000);
    assert_eq!(&b[22_768..], &content[32_768..40_000]);
    // A write lying wholly in the padding does nothing at all.
    storage.write(50_000, &[0xFF; 100]).unwrap();
    assert!(!dir.join("multi/.pad").exists());
}

#[test]
fn the_whole_layout_written_in_blocks_gives_every_file_its_bytes() {
    let dir = TempDir::new("write-all");
    let (meta, content) = multi();
    let mut storage = open_all(&dir, &meta);
    write_all(&mut storage, &content);
    for i in [A, EMPTY, B, C, D] {
        assert_eq!(on_disk(&dir, LAYOUT[i].0), &content[span(&meta, i)], "{}", LAYOUT[i].0);
    }
    assert!(dir.join("multi/sub/deeper").is_dir());
    assert!(!dir.join("multi/.pad").exists());
    storage.sync().expect("sync");
}

#[test]
fn sync_with_no_open_file_is_fine() {
    let dir = TempDir::new("sync");
    let (meta, _) = multi();
    let mut storage = open_all(&dir, &meta);
    storage.sync().expect("sync of nothing");
}

#[test]
fn more_files_than_open_handles_are_written_and_read_back() {
    // More files than MAX_OPEN_FILES, written twice over so closed handles are reopened.
    let names: Vec<String> = (0..MAX_OPEN_FILES + 9).map(|i| format!("many/f{i:03}")).collect();
    let layout: Vec<(&str, u64, bool)> = names.iter().map(|n| (n.as_str(), 700, false)).collect();
    let (meta, content) = torrent(&layout, BLOCK_LEN);
    let dir = TempDir::new("many");
    let mut storage = open_all(&dir, &meta);
    for _ in 0..2 {
        write_all(&mut storage, &content);
    }
    assert_eq!(read(&mut storage, 0, content.len()), content);
    for (i, name) in names.iter().enumerate() {
        assert_eq!(on_disk(&dir, name), &content[span(&meta, i)]);
    }
}

// ---- reads --------------------------------------------------------------------------------------

#[test]
fn reads_across_boundaries_return_the_layout_bytes() {
    let dir = TempDir::new("read");
    let (meta, content) = multi();
    let mut storage = open_all(&dir, &meta);
    write_all(&mut storage, &content);
    assert_eq!(read(&mut storage, 0, content.len()), content);
    for (offset, len) in [(9_990, 20), (39_990, 30), (65_530, 12), (115_530, 13), (1, BLOCK_LEN as usize)] {
        assert_eq!(read(&mut storage, offset, len), &content[offset..offset + len], "{len} at {offset}");
    }
}

#[test]
fn padding_reads_as_zeros() {
    let dir = TempDir::new("read-pad");
    let (meta, content) = multi();
    let mut storage = open_all(&dir, &meta);
    write_all(&mut storage, &content);
    let pad = span(&meta, PAD);
    assert!(read(&mut storage, pad.start, pad.len()).iter().all(|&x| x == 0));
    let mixed = read(&mut storage, pad.start - 5, 10);
    assert_eq!(&mixed[..5], &content[pad.start - 5..pad.start]);
    assert_eq!(&mixed[5..], &[0; 5]);
}

#[test]
fn a_missing_file_reads_as_zeros_and_is_not_created() {
    let dir = TempDir::new("read-missing");
    let (meta, _) = multi();
    let mut storage = open_all(&dir, &meta);
    let c = span(&meta, C);
    assert_eq!(read(&mut storage, c.start + 100, 1_000), vec![0; 1_000]);
    assert!(!dir.join(LAYOUT[C].0).exists(), "reading must not create the file");
}

#[test]
fn bytes_past_the_end_of_a_short_file_read_as_zeros() {
    let dir = TempDir::new("read-short");
    let (meta, content) = multi();
    let mut storage = open_all(&dir, &meta);
    let c = span(&meta, C);
    storage.write(c.start as u64, &content[c.start..c.start + 100]).unwrap();
    let got = read(&mut storage, c.start + 50, 200);
    assert_eq!(&got[..50], &content[c.start + 50..c.start + 100]);
    assert_eq!(&got[50..], &[0; 150][..]);
}

// ---- verification -------------------------------------------------------------------------------

fn expected(meta: &Metainfo, piece: u32) -> [u8; 20] {
    meta.piece_hashes[piece as usize]
}

#[test]
fn check_piece_accepts_every_correct_piece() {
    let dir = TempDir::new("verify");
    let (meta, content) = multi();
    let g = geometry(&meta);
    assert_eq!(g.piece_count(), 4);
    assert!(g.piece_len(3) < PIECE_LEN, "the last piece is short");
    let mut storage = open_all(&dir, &meta);
    write_all(&mut storage, &content);
    for piece in 0..g.piece_count() {
        let verified = check_piece(&mut storage, &g, piece, &expected(&meta, piece)).unwrap();
        assert_eq!(verified.map(|v| v.piece()), Some(piece), "piece {piece}");
    }
}

#[test]
fn check_piece_rejects_a_corrupted_byte_on_disk() {
    let dir = TempDir::new("verify-corrupt");
    let (meta, content) = multi();
    let g = geometry(&meta);
    let mut storage = open_all(&dir, &meta);
    write_all(&mut storage, &content);
    // One bit of b.bin, in piece 0.
    let mut wrong = content[20_000..20_001].to_vec();
    wrong[0] ^= 1;
    storage.write(20_000, &wrong).unwrap();
    assert_eq!(check_piece(&mut storage, &g, 0, &expected(&meta, 0)).unwrap(), None);
    assert!(check_piece(&mut storage, &g, 1, &expected(&meta, 1)).unwrap().is_some(), "other pieces stay good");
}

#[test]
fn check_piece_rejects_a_piece_never_written() {
    let dir = TempDir::new("verify-missing");
    let (meta, _) = multi();
    let g = geometry(&meta);
    let mut storage = open_all(&dir, &meta);
    assert_eq!(check_piece(&mut storage, &g, 2, &expected(&meta, 2)).unwrap(), None);
}

#[test]
fn finish_piece_reads_back_only_the_blocks_the_running_hash_lacks() {
    let dir = TempDir::new("finish");
    let (meta, content) = multi();
    let g = geometry(&meta);
    let mut storage = open_all(&dir, &meta);
    write_all(&mut storage, &content);
    for piece in 0..g.piece_count() {
        let bytes = &content[piece_range(&meta, piece)];
        for k in 0..=g.blocks_in_piece(piece) {
            let hashed = bytes.len().min(k as usize * BLOCK_LEN as usize);
            let mut hasher = Sha1::new();
            hasher.update(&bytes[..hashed]);
            let verified = finish_piece(&mut storage, &g, piece, hasher, k, &expected(&meta, piece)).unwrap();
            assert_eq!(verified.map(|v| v.piece()), Some(piece), "piece {piece} with {k} blocks hashed");
        }
    }
    // Proof that the hashed blocks are not read again: corrupt block 0 of piece 0 on disk; a running
    // hash over the true block 0 still verifies.
    storage.write(0, &[!content[0]]).unwrap();
    let mut hasher = Sha1::new();
    hasher.update(&content[..BLOCK_LEN as usize]);
    assert!(finish_piece(&mut storage, &g, 0, hasher, 1, &expected(&meta, 0)).unwrap().is_some());
    assert_eq!(check_piece(&mut storage, &g, 0, &expected(&meta, 0)).unwrap(), None);
}

#[test]
fn finish_piece_rejects_a_wrong_running_hash_or_corrupt_tail() {
    let dir = TempDir::new("finish-bad");
    let (meta, content) = multi();
    let g = geometry(&meta);
    let mut storage = open_all(&dir, &meta);
    write_all(&mut storage, &content);
    let mut hasher = Sha1::new();
    hasher.update([0u8; BLOCK_LEN as usize]);
    assert_eq!(finish_piece(&mut storage, &g, 0, hasher, 1, &expected(&meta, 0)).unwrap(), None);
    // The block read back (the last, short one of the last piece) is corrupt.
    let last = piece_range(&meta, 3);
    storage.write(last.end as u64 - 1, &[!content[last.end - 1]]).unwrap();
    let mut hasher = Sha1::new();
    hasher.update(&content[last.start..last.start + BLOCK_LEN as usize]);
    assert_eq!(finish_piece(&mut storage, &g, 3, hasher, 1, &expected(&meta, 3)).unwrap(), None);
}

// ---- errors -------------------------------------------------------------------------------------

#[track_caller]
fn assert_names_path(err: &StorageError, path: &Path, op: StorageOp) {
    assert_eq!(err.op, op, "{err}");
    assert_eq!(err.path, path, "{err}");
    let shown = err.to_string();
    assert!(shown.contains(&path.display().to_string()), "{shown:?} does not name {}", path.display());
    assert!(!shown.ends_with('.'), "{shown:?}: no trailing period");
}

#[test]
fn a_file_where_a_directory_belongs_fails_open_naming_it() {
    let dir = TempDir::new("err-file-as-dir");
    let (meta, _) = multi();
    fs::create_dir_all(dir.join("multi")).unwrap();
    fs::write(dir.join("multi/sub"), b"in the way").unwrap();
    let err = match Storage::open(dir.path(), &meta, |_| true) {
        Err(e) => e,
        Ok(_) => panic!("open succeeded with a file in place of multi/sub"),
    };
    assert_names_path(&err, &dir.join("multi/sub"), StorageOp::CreateDir);
}

#[test]
fn a_file_where_a_directory_belongs_fails_the_write_naming_it() {
    let dir = TempDir::new("err-write-dir");
    let (meta, content) = multi();
    let mut storage = open_all(&dir, &meta);
    fs::write(dir.join("multi/sub/deeper"), b"in the way").unwrap();
    let err = storage.write(10_000, &content[10_000..10_100]).unwrap_err();
    assert_names_path(&err, &dir.join("multi/sub/deeper"), StorageOp::CreateDir);
}

#[test]
fn a_directory_where_a_data_file_belongs_fails_the_write_naming_it() {
    let dir = TempDir::new("err-dir-as-file");
    let (meta, content) = multi();
    fs::create_dir_all(dir.join(LAYOUT[A].0)).unwrap();
    let mut storage = open_all(&dir, &meta);
    let err = storage.write(0, &content[..100]).unwrap_err();
    assert_names_path(&err, &dir.join(LAYOUT[A].0), StorageOp::Open);
}

#[test]
fn a_directory_where_a_zero_length_file_belongs_fails_open_naming_it() {
    let dir = TempDir::new("err-empty-dir");
    let (meta, _) = multi();
    fs::create_dir_all(dir.join(LAYOUT[EMPTY].0)).unwrap();
    let err = match Storage::open(dir.path(), &meta, |_| true) {
        Err(e) => e,
        Ok(_) => panic!("open succeeded with a directory in place of a zero-length file"),
    };
    assert_names_path(&err, &dir.join(LAYOUT[EMPTY].0), StorageOp::Open);
}
