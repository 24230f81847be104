//! `Metainfo::from_bytes`: `.torrent` bytes from anywhere.
//!
//! Invariants: never a panic; errors are one line; an accepted torrent has its info-hash equal to the SHA-1
//! of the raw `info` span, a contiguous layout from offset 0 summing to `total_length` (> 0), exactly
//! ⌈total / piece length⌉ piece hashes, relative paths of plain components only, and no two real files
//! sharing a path or one being another's folder. Bytes after the top-level value change nothing.
#![no_main]

use std::collections::HashSet;
use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use rill::bencode;
use rill::metainfo::{Metainfo, MAX_PIECE_LENGTH};
use sha1::{Digest, Sha1};

fuzz_target!(|data: &[u8]| {
    let meta = match Metainfo::from_bytes(data) {
        Ok(meta) => meta,
        Err(e) => {
            assert!(!e.to_string().contains('\n'), "error is one line: {e}");
            return;
        }
    };
    // The info-hash is the SHA-1 of the `info` value exactly as it stands in the file.
    let outer = bencode::value_span(data, 0).expect("accepted input scans");
    let outer = &data[outer];
    let info = bencode::dict_value_span(outer, b"info").expect("scans").expect("has info");
    let digest: [u8; 20] = Sha1::digest(&outer[info]).into();
    assert_eq!(meta.info_hash.0, digest);
    // Trailing bytes are ignored.
    let again = Metainfo::from_bytes(outer).expect("the value alone is accepted too");
    assert_eq!(again.info_hash, meta.info_hash);
    assert_eq!(again.files, meta.files);

    assert!(meta.piece_length >= 1 && meta.piece_length <= MAX_PIECE_LENGTH);
    assert!(meta.total_length > 0);
    assert!(!meta.files.is_empty());
    let mut offset = 0u64;
    for file in &meta.files {
        assert_eq!(file.offset, offset, "layout is contiguous");
        offset = offset.checked_add(file.length).expect("no overflow");
    }
    assert_eq!(offset, meta.total_length);
    let want = meta.total_length.div_ceil(u64::from(meta.piece_length));
    assert_eq!(meta.piece_hashes.len() as u64, want);
    assert_eq!(u64::from(meta.piece_count()), want);

    let mut real: HashSet<&Path> = HashSet::new();
    for file in &meta.files {
        assert!(file.path.is_relative(), "{:?}", file.path);
        assert!(file.path.components().count() >= 1);
        for c in file.path.components() {
            let Component::Normal(name) = c else { panic!("unsafe component {c:?} in {:?}", file.path) };
            assert!(!name.is_empty());
            assert!(!name.as_encoded_bytes().contains(&0), "nul in {:?}", file.path);
        }
        if !file.padding {
            assert!(real.insert(&file.path), "duplicate path {:?}", file.path);
        }
    }
    for file in meta.files.iter().filter(|f| !f.padding) {
        for folder in file.path.ancestors().skip(1) {
            assert!(!real.contains(folder), "{folder:?} is a file and a folder");
        }
    }
    assert!(meta.selectable_files().count() <= meta.files.len());
});
