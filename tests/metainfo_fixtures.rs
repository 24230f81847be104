//! Torrents made by real tools (transmission-create 3.00, libtorrent 2.0) parse to what those tools say.
//!
//! The fixtures and their `.expected` sidecars are written by `tests/data/make_fixtures.sh`; a sidecar holds
//! the creating tool's own v1 info-hash and libtorrent's file list (`file <length> <pad 0|1> <path>`).

use std::fs;
use std::path::{Path, PathBuf};

use rill::metainfo::{Metainfo, MetainfoError};
use rill::rng::Rng;

struct Expected {
    info_hash_v1: Option<String>,
    /// (length, padding, path) in layout order.
    files: Vec<(u64, bool, String)>,
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("data")
}

#[track_caller]
fn read_fixture(name: &str) -> (Vec<u8>, Expected) {
    let torrent = data_dir().join(name);
    let bytes = fs::read(&torrent).unwrap_or_else(|e| panic!("{}: {e}", torrent.display()));
    let sidecar = data_dir().join(format!("{name}.expected"));
    let text = fs::read_to_string(&sidecar).unwrap_or_else(|e| panic!("{}: {e}", sidecar.display()));
    let mut expected = Expected { info_hash_v1: None, files: Vec::new() };
    for line in text.lines() {
        let mut words = line.splitn(4, ' ');
        match words.next() {
            Some("info_hash_v1") => expected.info_hash_v1 = words.next().map(str::to_owned),
            Some("file") => {
                let length = words.next().and_then(|w| w.parse().ok()).expect("file length");
                let pad = words.next() == Some("1");
                let path = words.next().expect("file path").to_owned();
                expected.files.push((length, pad, path));
            }
            _ => {}
        }
    }
    (bytes, expected)
}

#[track_caller]
fn check_matches_tool(name: &str) -> Metainfo {
    let (bytes, expected) = read_fixture(name);
    let m = Metainfo::from_bytes(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    let want_hash = expected.info_hash_v1.as_deref().expect("sidecar has a v1 info-hash");
    assert_eq!(m.info_hash.to_string(), want_hash, "{name}: info-hash");

    let ours: Vec<(u64, bool, String)> =
        m.files.iter().map(|f| (f.length, f.padding, f.display_path().into_owned())).collect();
    assert_eq!(ours, expected.files, "{name}: file list");
    for f in &m.files {
        assert_eq!(f.path, Path::new(f.display_path().as_ref()), "{name}: on-disk path of {}", f.display_path());
    }
    let total: u64 = expected.files.iter().map(|f| f.0).sum();
    assert_eq!(m.total_length, total, "{name}: total length");
    assert_eq!(u64::from(m.piece_count()), total.div_ceil(16384), "{name}: piece count");
    assert_eq!(m.piece_length, 16384);
    m
}

#[test]
fn transmission_multi_file_matches_transmission_show() {
    let m = check_matches_tool("transmission-multi.torrent");
    assert_eq!(m.name, "multi");
    assert_eq!(m.trackers, [["http://127.0.0.1:6969/announce"], ["http://127.0.0.1:6970/announce"]]);
    assert_eq!(m.comment.as_deref(), Some("made by transmission-create"));
    assert!(m.created_by.as_deref().is_some_and(|c| c.starts_with("Transmission/")));
    assert!(!m.private);
    // Nested folders and a non-ASCII name.
    assert!(m.files.iter().any(|f| f.display_path() == "multi/a/b/c/na\u{ef}ve.txt"));
}

#[test]
fn libtorrent_v1_single_file_matches_libtorrent() {
    let m = check_matches_tool("libtorrent-v1-single.torrent");
    assert_eq!(m.files.len(), 1);
    assert_eq!(m.files[0].display_path(), "single.bin");
    // 40,000 bytes: a short last piece.
    assert_eq!(m.piece_count(), 3);
}

#[test]
fn libtorrent_v1_multi_file_with_empty_file_matches_libtorrent() {
    let m = check_matches_tool("libtorrent-v1-multi.torrent");
    assert!(m.files.iter().any(|f| f.length == 0 && f.display_path() == "multi/empty.dat"));
    assert!(m.files.iter().all(|f| !f.padding));
}

#[test]
fn libtorrent_hybrid_uses_the_v1_side_with_padding_files() {
    let m = check_matches_tool("libtorrent-hybrid.torrent");
    assert!(m.files.iter().filter(|f| f.padding).count() >= 2);
    // Padding is left out of the user's numbering, which stays dense.
    let selectable: Vec<(usize, String)> =
        m.selectable_files().map(|(i, f)| (i, f.display_path().into_owned())).collect();
    let selectable: Vec<(usize, &str)> = selectable.iter().map(|(i, p)| (*i, p.as_str())).collect();
    assert_eq!(
        selectable,
        [
            (0, "multi/a/b/c/na\u{ef}ve.txt"),
            (1, "multi/a/b/two.bin"),
            (2, "multi/a/one.bin"),
            (3, "multi/empty.dat"),
            (4, "multi/readme.txt"),
        ]
    );
    // Every real file starts on a piece boundary: that is what the padding is for.
    for f in m.files.iter().filter(|f| !f.padding && f.length > 0) {
        assert_eq!(f.offset % u64::from(m.piece_length), 0, "{}", f.display_path());
    }
}

#[test]
fn libtorrent_v2_only_is_rejected_with_a_clear_error() {
    let (bytes, expected) = read_fixture("libtorrent-v2-only.torrent");
    assert_eq!(expected.info_hash_v1, None, "the v2-only fixture has no v1 info-hash");
    let e = Metainfo::from_bytes(&bytes).expect_err("v2-only must be rejected");
    assert_eq!(e, MetainfoError::V2Only);
    assert_eq!(e.to_string(), "v2-only torrents are not supported");
}

const ALL: [&str; 5] = [
    "transmission-multi.torrent",
    "libtorrent-v1-single.torrent",
    "libtorrent-v1-multi.torrent",
    "libtorrent-hybrid.torrent",
    "libtorrent-v2-only.torrent",
];

#[test]
fn truncated_fixtures_are_rejected_not_panicked_on() {
    for name in ALL {
        let (bytes, _) = read_fixture(name);
        for len in 0..bytes.len() {
            assert!(Metainfo::from_bytes(&bytes[..len]).is_err(), "{name} cut at {len}");
        }
    }
}

#[test]
fn bit_flipped_fixtures_never_panic_and_keep_invariants() {
    let mut rng = Rng::seeded(0xf1_7572e5);
    for name in ALL {
        let (original, _) = read_fixture(name);
        for _ in 0..2000 {
            let mut bytes = original.clone();
            for _ in 0..=rng.below(2) {
                let bit = rng.below(bytes.len() as u64 * 8) as usize;
                bytes[bit / 8] ^= 1 << (bit % 8);
            }
            if let Ok(m) = Metainfo::from_bytes(&bytes) {
                let sum: u64 = m.files.iter().map(|f| f.length).sum();
                assert_eq!(sum, m.total_length, "{name}");
                assert_eq!(u64::from(m.piece_count()), m.total_length.div_ceil(m.piece_length.into()));
            }
        }
    }
}
