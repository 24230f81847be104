//! Metainfo parsing and validation: the info-hash from the original bytes, every rejected input, padding,
//! hybrid and v2-only torrents, announce lists, and seeded mutations.

use std::path::Path;

use super::*;
use crate::rng::Rng;

// ---- A tiny bencode writer that keeps key order as given, so tests can build any torrent ----

#[derive(Clone, Debug)]
enum B {
    Int(i64),
    Str(Vec<u8>),
    List(Vec<B>),
    Dict(Vec<(Vec<u8>, B)>),
}

fn s(text: impl AsRef<[u8]>) -> B {
    B::Str(text.as_ref().to_vec())
}

fn list(items: impl IntoIterator<Item = B>) -> B {
    B::List(items.into_iter().collect())
}

fn dict<'a>(entries: impl IntoIterator<Item = (&'a str, B)>) -> B {
    B::Dict(entries.into_iter().map(|(k, v)| (k.as_bytes().to_vec(), v)).collect())
}

impl B {
    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            B::Int(n) => out.extend(format!("i{n}e").bytes()),
            B::Str(bytes) => {
                out.extend(format!("{}:", bytes.len()).bytes());
                out.extend(bytes);
            }
            B::List(items) => {
                out.push(b'l');
                items.iter().for_each(|item| item.encode_into(out));
                out.push(b'e');
            }
            B::Dict(entries) => {
                out.push(b'd');
                for (key, value) in entries {
                    B::Str(key.clone()).encode_into(out);
                    value.encode_into(out);
                }
                out.push(b'e');
            }
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Replaces (or appends) `key` in a dictionary.
    fn with(mut self, key: &str, value: B) -> B {
        if let B::Dict(entries) = &mut self {
            match entries.iter_mut().find(|(k, _)| k == key.as_bytes()) {
                Some(entry) => entry.1 = value,
                None => entries.push((key.as_bytes().to_vec(), value)),
            }
        }
        self
    }

    fn without(mut self, key: &str) -> B {
        if let B::Dict(entries) = &mut self {
            entries.retain(|(k, _)| k != key.as_bytes());
        }
        self
    }
}

const PIECE: i64 = 16384;

fn pieces_for(total: i64) -> B {
    let count = (total + PIECE - 1) / PIECE;
    B::Str((0..count * 20).map(|i| i as u8).collect())
}

/// A valid single-file info dictionary: 40,000 bytes in three pieces.
fn single_info() -> B {
    dict([
        ("length", B::Int(40_000)),
        ("name", s("single.bin")),
        ("piece length", B::Int(PIECE)),
        ("pieces", pieces_for(40_000)),
    ])
}

fn file(length: i64, path: &[&str]) -> B {
    dict([("length", B::Int(length)), ("path", list(path.iter().map(s)))])
}

/// A valid multi-file info dictionary: 1,000 + 0 + 20,000 bytes, nested folders.
fn multi_info() -> B {
    dict([
        ("files", list([file(1000, &["readme.txt"]), file(0, &["empty.dat"]), file(20_000, &["a", "b", "one.bin"])])),
        ("name", s("multi")),
        ("piece length", B::Int(PIECE)),
        ("pieces", pieces_for(21_000)),
    ])
}

fn torrent(info: B) -> Vec<u8> {
    dict([("announce", s("http://127.0.0.1:6969/announce")), ("info", info)]).encode()
}

#[track_caller]
fn parse(info: B) -> Metainfo {
    match Metainfo::from_bytes(&torrent(info)) {
        Ok(m) => m,
        Err(e) => panic!("rejected: {e}"),
    }
}

#[track_caller]
fn rejection(info: B) -> MetainfoError {
    match Metainfo::from_bytes(&torrent(info)) {
        Ok(m) => panic!("accepted: {m:?}"),
        Err(e) => e,
    }
}

fn sha1(bytes: &[u8]) -> [u8; 20] {
    Sha1::digest(bytes).into()
}

// ---- Valid torrents ----

#[test]
fn single_file_layout_and_fields() {
    let info = single_info().with("private", B::Int(1));
    let bytes = dict([
        ("announce", s("http://t/a")),
        ("comment", s("hello")),
        ("created by", s("rill test")),
        ("info", info.clone()),
    ])
    .encode();
    let m = Metainfo::from_bytes(&bytes).unwrap();
    assert_eq!(m.info_hash, InfoHash(sha1(&info.encode())));
    assert_eq!(m.name, "single.bin");
    assert_eq!(m.piece_length, 16384);
    assert_eq!(m.piece_count(), 3);
    assert_eq!(m.piece_hashes[1][0], 20);
    assert_eq!(m.total_length, 40_000);
    assert_eq!(
        m.files,
        [FileEntry {
            path: PathBuf::from("single.bin"),
            length: 40_000,
            offset: 0,
            padding: false,
            symlink_target: None,
        }]
    );
    assert_eq!(m.trackers, [["http://t/a"]]);
    assert!(m.private);
    assert_eq!(m.comment.as_deref(), Some("hello"));
    assert_eq!(m.created_by.as_deref(), Some("rill test"));
}

#[test]
fn multi_file_layout_has_name_first_and_contiguous_offsets() {
    let m = parse(multi_info());
    let layout: Vec<_> = m.files.iter().map(|f| (f.path.to_str().unwrap(), f.length, f.offset)).collect();
    assert_eq!(
        layout,
        [("multi/readme.txt", 1000, 0), ("multi/empty.dat", 0, 1000), ("multi/a/b/one.bin", 20_000, 1000)]
    );
    assert_eq!(m.files[2].path, Path::new("multi").join("a").join("b").join("one.bin"));
    assert_eq!(m.total_length, 21_000);
    assert!(!m.private);
}

#[test]
fn info_hash_covers_unknown_keys_in_info_as_written() {
    // Unsorted keys and keys nobody decodes: a re-serialised struct would hash differently.
    let info = single_info()
        .with("x-unknown", dict([("nested", list([B::Int(1), s("two")]))]))
        .with("source", s("tracker.example"));
    let mut raw_info = info.encode();
    let m = parse(info);
    assert_eq!(m.info_hash, InfoHash(sha1(&raw_info)));
    let reserialised = single_info().encode();
    assert_ne!(m.info_hash, InfoHash(sha1(&reserialised)));
    raw_info.push(b'!');
    assert_ne!(m.info_hash, InfoHash(sha1(&raw_info)));
}

#[test]
fn trailing_bytes_after_the_torrent_are_ignored() {
    let mut bytes = torrent(single_info());
    let clean = Metainfo::from_bytes(&bytes).unwrap();
    bytes.extend_from_slice(b"\ngarbage");
    assert_eq!(Metainfo::from_bytes(&bytes).unwrap().info_hash, clean.info_hash);
}

#[test]
fn utf8_keys_are_preferred_and_other_bytes_decode_lossily() {
    let info = multi_info()
        .with("name", s(b"caf\xe9"))
        .with("files", list([dict([("length", B::Int(21_000)), ("path", list([s(b"\xff.bin")]))])]));
    let m = parse(info.clone());
    assert_eq!(m.name, "caf\u{fffd}");
    assert_eq!(m.files[0].display_path(), "caf\u{fffd}/\u{fffd}.bin");
    assert_eq!(m.files[0].path, Path::new("caf\u{fffd}").join("\u{fffd}.bin"));

    let info = info.with("name.utf-8", s("café")).with(
        "files",
        list([dict([
            ("length", B::Int(21_000)),
            ("path", list([s(b"\xff.bin")])),
            ("path.utf-8", list([s("ÿ.bin")])),
        ])]),
    );
    let m = parse(info);
    assert_eq!(m.name, "café");
    assert_eq!(m.files[0].display_path(), "café/ÿ.bin");
}

#[test]
fn invalid_utf8_key_falls_back_to_the_plain_key() {
    let m = parse(single_info().with("name.utf-8", s(b"\xff")));
    assert_eq!(m.name, "single.bin");
}

#[test]
fn padding_files_count_in_the_layout_but_not_in_the_selection() {
    let pad =
        |len: i64| dict([("attr", s("p")), ("length", B::Int(len)), ("path", list([s(".pad"), s(len.to_string())]))]);
    let info = multi_info()
        .with(
            "files",
            list([
                file(1000, &["a.txt"]),
                pad(15_384),
                file(20_000, &["b.bin"]),
                pad(12_768),
                dict([("attr", s("x")), ("length", B::Int(5)), ("path", list([s("run.sh")]))]),
                file(0, &["_____padding_file_0_bitcomet"]),
            ]),
        )
        .with("pieces", pieces_for(49_157));
    let m = parse(info);
    let padding: Vec<bool> = m.files.iter().map(|f| f.padding).collect();
    assert_eq!(padding, [false, true, false, true, false, true]);
    assert_eq!(m.files[2].offset, 16_384);
    assert_eq!(m.total_length, 49_157);
    let selectable: Vec<(usize, String)> =
        m.selectable_files().map(|(i, f)| (i, f.display_path().into_owned())).collect();
    assert_eq!(selectable, [(0, "multi/a.txt".into()), (1, "multi/b.bin".into()), (2, "multi/run.sh".into())]);
}

#[test]
fn repeated_padding_paths_are_allowed() {
    let pad = dict([("attr", s("p")), ("length", B::Int(100)), ("path", list([s(".pad"), s("100")]))]);
    let info = multi_info()
        .with("files", list([file(1000, &["a"]), pad.clone(), file(1000, &["b"]), pad]))
        .with("pieces", pieces_for(2200));
    assert_eq!(parse(info).files.len(), 4);
}

#[test]
fn hybrid_torrent_uses_its_v1_side() {
    let file_tree =
        dict([("single.bin", dict([("", dict([("length", B::Int(40_000)), ("pieces root", s([7u8; 32]))]))]))]);
    let info = single_info().with("file tree", file_tree).with("meta version", B::Int(2));
    let raw_info = info.encode();
    let bytes =
        dict([("announce", s("http://t/a")), ("info", info), ("piece layers", dict([("\u{7}", s([1u8; 96]))]))])
            .encode();
    let m = Metainfo::from_bytes(&bytes).unwrap();
    assert_eq!(m.info_hash, InfoHash(sha1(&raw_info)));
    assert_eq!(m.piece_count(), 3);
    assert_eq!(m.files.len(), 1);
}

#[test]
fn v2_only_torrent_is_rejected_clearly() {
    let info = single_info()
        .without("pieces")
        .without("length")
        .with("file tree", dict([("single.bin", dict([("", dict([("length", B::Int(40_000))]))]))]))
        .with("meta version", B::Int(2));
    let e = rejection(info);
    assert_eq!(e, MetainfoError::V2Only);
    assert_eq!(e.to_string(), "v2-only torrents are not supported");
}

// ---- Trackers (BEP 12) ----

#[test]
fn announce_list_tiers_replace_announce() {
    let bytes = dict([
        ("announce", s("http://ignored/")),
        (
            "announce-list",
            list([
                list([s("http://a/1"), s("udp://a/2")]),
                list([]),
                list([s(""), s("  ")]),
                list([s("http://b/1"), s("http://a/1"), s(b"\xff")]),
            ]),
        ),
        ("info", single_info()),
    ])
    .encode();
    let m = Metainfo::from_bytes(&bytes).unwrap();
    assert_eq!(m.trackers, [vec!["http://a/1", "udp://a/2"], vec!["http://b/1"]]);
}

#[test]
fn empty_announce_list_falls_back_to_announce() {
    let bytes =
        dict([("announce", s("http://a/")), ("announce-list", list([list([])])), ("info", single_info())]).encode();
    assert_eq!(Metainfo::from_bytes(&bytes).unwrap().trackers, [["http://a/"]]);
}

#[test]
fn no_trackers_is_allowed() {
    let bytes = dict([("info", single_info())]).encode();
    assert!(Metainfo::from_bytes(&bytes).unwrap().trackers.is_empty());
    let bytes = dict([("announce", s("")), ("info", single_info())]).encode();
    assert!(Metainfo::from_bytes(&bytes).unwrap().trackers.is_empty());
}

#[test]
fn wrongly_typed_optional_fields_are_ignored() {
    let bytes = dict([
        ("announce", B::Int(3)),
        ("announce-list", list([s("http://not-a-tier/")])),
        ("comment", list([])),
        ("created by", B::Int(1)),
        ("info", single_info().with("private", s("1"))),
    ])
    .encode();
    let m = Metainfo::from_bytes(&bytes).unwrap();
    assert!(m.trackers.is_empty());
    assert_eq!((m.comment, m.created_by, m.private), (None, None, false));
}

// ---- Rejections: not a torrent ----

#[test]
fn not_bencode_is_rejected() {
    for bytes in [&b""[..], b"hello", b"d8:announce", b"<html>", b"i42e", b"le"] {
        let e = Metainfo::from_bytes(bytes).unwrap_err();
        assert!(matches!(e, MetainfoError::NotBencode(_)), "{bytes:?}: {e}");
    }
}

#[test]
fn missing_info_is_rejected() {
    let bytes = dict([("announce", s("http://a/"))]).encode();
    assert_eq!(Metainfo::from_bytes(&bytes).unwrap_err(), MetainfoError::MissingInfo);
}

#[test]
fn info_that_is_not_a_dictionary_is_rejected() {
    assert_eq!(rejection(list([])), MetainfoError::InfoNotADictionary);
    assert_eq!(rejection(s("info")), MetainfoError::InfoNotADictionary);
}

#[test]
fn duplicate_info_keys_are_rejected() {
    let mut bytes = b"d4:info".to_vec();
    bytes.extend(single_info().encode());
    bytes.extend(b"4:info");
    bytes.extend(single_info().with("name", s("other")).encode());
    bytes.push(b'e');
    assert!(matches!(Metainfo::from_bytes(&bytes), Err(MetainfoError::NotBencode(BencodeError::DuplicateKey { .. }))));
}

#[test]
fn wrongly_typed_field_is_malformed() {
    let e = rejection(single_info().with("piece length", s("16384")));
    assert!(matches!(e, MetainfoError::Malformed { part: "info dictionary", .. }), "{e}");
    let e = rejection(single_info().with("files", s("x")).without("length"));
    assert!(matches!(e, MetainfoError::Malformed { .. }), "{e}");
}

// ---- Rejections: piece geometry ----

#[test]
fn piece_length_zero_is_rejected() {
    assert_eq!(rejection(single_info().with("piece length", B::Int(0))), MetainfoError::PieceLengthZero);
}

#[test]
fn negative_piece_length_is_rejected() {
    assert_eq!(
        rejection(single_info().with("piece length", B::Int(-16384))),
        MetainfoError::PieceLengthOutOfRange(-16384)
    );
}

#[test]
fn absurd_piece_length_is_rejected() {
    let too_big = i64::from(MAX_PIECE_LENGTH) + 1;
    assert_eq!(
        rejection(single_info().with("piece length", B::Int(too_big))),
        MetainfoError::PieceLengthOutOfRange(too_big)
    );
    let not_u32 = 1 << 40;
    assert_eq!(
        rejection(single_info().with("piece length", B::Int(not_u32))),
        MetainfoError::PieceLengthOutOfRange(not_u32)
    );
}

#[test]
fn largest_piece_length_is_accepted() {
    let info = single_info().with("piece length", B::Int(MAX_PIECE_LENGTH.into())).with("pieces", s([0u8; 20]));
    assert_eq!(parse(info).piece_length, MAX_PIECE_LENGTH);
}

#[test]
fn missing_piece_length_is_rejected() {
    assert_eq!(rejection(single_info().without("piece length")), MetainfoError::MissingField("piece length"));
}

#[test]
fn missing_pieces_without_meta_version_2_is_rejected() {
    assert_eq!(rejection(single_info().without("pieces")), MetainfoError::MissingField("pieces"));
}

#[test]
fn pieces_not_a_multiple_of_20_is_rejected() {
    assert_eq!(rejection(single_info().with("pieces", s([0u8; 59]))), MetainfoError::PiecesNotMultipleOf20 { len: 59 });
}

#[test]
fn too_few_piece_hashes_for_the_total_length_is_rejected() {
    assert_eq!(
        rejection(single_info().with("pieces", s([0u8; 40]))),
        MetainfoError::PieceCountMismatch { have: 2, want: 3 }
    );
}

#[test]
fn too_many_piece_hashes_for_the_total_length_is_rejected() {
    assert_eq!(
        rejection(single_info().with("pieces", s([0u8; 80]))),
        MetainfoError::PieceCountMismatch { have: 4, want: 3 }
    );
}

#[test]
fn exact_multiple_of_piece_length_needs_no_extra_piece() {
    let info = single_info().with("length", B::Int(2 * PIECE)).with("pieces", s([0u8; 40]));
    assert_eq!(parse(info).piece_count(), 2);
}

// ---- Rejections: lengths ----

#[test]
fn negative_single_file_length_is_rejected() {
    assert_eq!(rejection(single_info().with("length", B::Int(-1))), MetainfoError::NegativeLength(-1));
}

#[test]
fn negative_file_length_in_a_list_is_rejected() {
    let info = multi_info().with("files", list([file(1000, &["a"]), file(-1000, &["b"])]));
    assert_eq!(rejection(info), MetainfoError::NegativeLength(-1000));
}

#[test]
fn file_lengths_overflowing_the_total_are_rejected() {
    let info = multi_info().with("files", list([file(i64::MAX, &["a"]), file(i64::MAX, &["b"]), file(2, &["c"])]));
    assert_eq!(rejection(info), MetainfoError::TotalTooLarge);
}

#[test]
fn absurd_total_length_is_rejected_by_the_piece_count() {
    let e = rejection(single_info().with("length", B::Int(i64::MAX)));
    assert!(matches!(e, MetainfoError::PieceCountMismatch { have: 3, .. }), "{e}");
}

#[test]
fn zero_total_length_is_rejected() {
    let info = single_info().with("length", B::Int(0)).with("pieces", s(""));
    assert_eq!(rejection(info), MetainfoError::EmptyTorrent);
    let info = multi_info().with("files", list([file(0, &["a"]), file(0, &["b"])])).with("pieces", s(""));
    assert_eq!(rejection(info), MetainfoError::EmptyTorrent);
}

#[test]
fn missing_file_length_is_rejected() {
    let info = multi_info().with("files", list([dict([("path", list([s("a")]))])]));
    assert_eq!(rejection(info), MetainfoError::MissingField("length"));
}

// ---- Rejections: layout ----

#[test]
fn both_length_and_files_is_rejected() {
    assert_eq!(rejection(multi_info().with("length", B::Int(21_000))), MetainfoError::LengthAndFiles);
}

#[test]
fn neither_length_nor_files_is_rejected() {
    assert_eq!(rejection(single_info().without("length")), MetainfoError::NoLayout);
}

#[test]
fn empty_files_list_is_rejected() {
    assert_eq!(rejection(multi_info().with("files", list([]))), MetainfoError::NoFiles);
}

// ---- Paths: odd but harmless names are mapped, never refused ----

fn paths_of(m: &Metainfo) -> Vec<String> {
    m.files.iter().map(|f| f.display_path().into_owned()).collect()
}

/// `multi` with one good file and one file at `components`, mapped.
#[track_caller]
fn mapped(components: &[&str]) -> Metainfo {
    let odd = dict([("length", B::Int(20_000)), ("path", list(components.iter().map(s)))]);
    parse(multi_info().with("files", list([file(1000, &["ok"]), odd])))
}

#[track_caller]
fn assert_mapped(components: &[&str], to: &str, from: &str) {
    let m = mapped(components);
    assert_eq!(m.files[1].display_path(), to, "{components:?}");
    assert_eq!(m.files[1].path, Path::new(to));
    assert_eq!(m.mapped.files, [PathNote { file: 1, original: from.into(), reason: NoteReason::Sanitised }]);
    assert_eq!(m.mapped.note(1).map(|n| n.original.as_str()), Some(from));
    assert_eq!(m.mapped.note(0), None);
}

#[test]
fn empty_components_become_underscores() {
    assert_mapped(&["a", "", "b"], "multi/a/_/b", "multi/a//b");
    assert_mapped(&["a", ""], "multi/a/_", "multi/a/");
    assert_mapped(&["", ""], "multi/_/_", "multi//");
}

#[test]
fn dot_and_dot_dot_components_become_underscores() {
    assert_mapped(&[".", "b"], "multi/_/b", "multi/./b");
    assert_mapped(&["..", "..", "etc", "passwd"], "multi/_/_/etc/passwd", "multi/../../etc/passwd");
    assert_mapped(&["a", ".."], "multi/a/_", "multi/a/..");
}

#[test]
fn separators_are_removed_from_components() {
    assert_mapped(&["/etc", "passwd"], "multi/etc/passwd", "multi//etc/passwd");
    assert_mapped(&["/", "x"], "multi/_/x", "multi///x");
    assert_mapped(&["\\", "x"], "multi/_/x", "multi/\\/x");
    assert_mapped(&["\\windows"], "multi/windows", "multi/\\windows");
    assert_mapped(&["a/../../b"], "multi/a....b", "multi/a/../../b");
    assert_mapped(&["a\\..\\b"], "multi/a..b", "multi/a\\..\\b");
    // What is left after the separators go is checked again: `/..` is `..`.
    assert_mapped(&["/..", "x"], "multi/_/x", "multi//../x");
}

#[test]
fn nul_is_removed_from_components() {
    assert_mapped(&["a\0b"], "multi/ab", "multi/a\0b");
    assert_mapped(&["\0", "c"], "multi/_/c", "multi/\0/c");
}

#[test]
fn unsafe_utf8_path_is_mapped_even_when_the_raw_path_is_fine() {
    let odd =
        dict([("length", B::Int(20_000)), ("path", list([s("fine")])), ("path.utf-8", list([s(".."), s("evil")]))]);
    let m = parse(multi_info().with("files", list([file(1000, &["ok"]), odd])));
    assert_eq!(m.files[1].display_path(), "multi/_/evil");
    assert_eq!(m.mapped.files[0].original, "multi/../evil");
}

#[test]
fn plain_paths_are_not_noted() {
    let m = parse(multi_info());
    assert_eq!(m.mapped, Mapping::default());
}

#[test]
fn names_are_cleaned_like_components() {
    let m = parse(multi_info().with("name", s("a/b")));
    assert_eq!(m.name, "ab");
    assert_eq!(m.mapped.name_from.as_deref(), Some("a/b"));
    assert_eq!(paths_of(&m)[0], "ab/readme.txt");
    let m = parse(single_info().with("name", s("/etc/passwd\0")));
    assert_eq!(m.name, "etcpasswd");
    assert_eq!(m.files[0].path, Path::new("etcpasswd"));
    let m = parse(single_info().with("name.utf-8", s("../x")));
    assert_eq!(m.name, "..x");
}

#[test]
fn a_multi_file_name_that_cleans_to_nothing_is_the_info_hash() {
    for name in ["", ".", "..", "/", "\\\\", "\0", "/.."] {
        let m = parse(multi_info().with("name", s(name)));
        let hex = m.info_hash.to_string();
        assert_eq!(m.name, hex, "{name:?}");
        assert_eq!(m.mapped.name_from.as_deref(), Some(name));
        assert!(m.files.iter().all(|f| f.path.starts_with(&hex)), "{name:?}: {:?}", paths_of(&m));
    }
}

#[test]
fn a_single_file_name_that_cleans_to_nothing_is_refused() {
    // libtorrent refuses these too: there is no file name to give the data.
    for name in ["", "..", "\0\0\0\0", "/"] {
        assert_eq!(rejection(single_info().with("name", s(name))), MetainfoError::UnusableName(name.into()));
    }
}

#[test]
fn a_second_file_with_the_same_path_gets_a_suffix_before_its_extension() {
    let info = multi_info().with(
        "files",
        list([file(1000, &["a", "x.txt"]), file(10_000, &["a", "x.txt"]), file(10_000, &["a", "x.txt"])]),
    );
    let m = parse(info);
    assert_eq!(paths_of(&m), ["multi/a/x.txt", "multi/a/x.1.txt", "multi/a/x.2.txt"]);
    let notes: Vec<(usize, &str, NoteReason)> =
        m.mapped.files.iter().map(|n| (n.file, n.original.as_str(), n.reason)).collect();
    assert_eq!(notes, [(1, "multi/a/x.txt", NoteReason::Duplicate), (2, "multi/a/x.txt", NoteReason::Duplicate)]);
}

#[test]
fn duplicates_ignore_ascii_case_and_extensionless_names_get_a_plain_suffix() {
    let info =
        multi_info().with("files", list([file(1000, &["README"]), file(10_000, &["readme"]), file(10_000, &[".cfg"])]));
    assert_eq!(paths_of(&parse(info)), ["multi/README", "multi/readme.1", "multi/.cfg"]);
}

#[test]
fn a_suffix_never_takes_a_name_the_torrent_uses() {
    let info = multi_info()
        .with("files", list([file(1000, &["x.txt"]), file(10_000, &["x.txt"]), file(10_000, &["x.1.txt"])]));
    assert_eq!(paths_of(&parse(info)), ["multi/x.txt", "multi/x.2.txt", "multi/x.1.txt"]);
}

#[test]
fn names_made_equal_by_cleaning_are_told_apart() {
    let info = multi_info().with("files", list([file(1000, &[""]), file(10_000, &["_"]), file(10_000, &[".."])]));
    let m = parse(info);
    assert_eq!(paths_of(&m), ["multi/_", "multi/_.1", "multi/_.2"]);
    let reasons: Vec<NoteReason> = m.mapped.files.iter().map(|n| n.reason).collect();
    assert_eq!(reasons, [NoteReason::Sanitised, NoteReason::Duplicate, NoteReason::Duplicate]);
    assert_eq!(m.mapped.files[2].original, "multi/..");
}

#[test]
fn a_file_in_the_way_of_a_folder_is_renamed() {
    let info = multi_info().with("files", list([file(1000, &["a"]), file(20_000, &["a", "b"])]));
    let m = parse(info);
    assert_eq!(paths_of(&m), ["multi/a.1", "multi/a/b"]);
    assert_eq!(m.mapped.files, [PathNote { file: 0, original: "multi/a".into(), reason: NoteReason::Duplicate }]);
    // Later in the layout, and case folded, too.
    let info = multi_info().with("files", list([file(1000, &["D", "b"]), file(20_000, &["d"])]));
    assert_eq!(paths_of(&parse(info)), ["multi/D/b", "multi/d.1"]);
}

#[test]
fn padding_takes_no_part_in_collisions() {
    let pad = dict([("attr", s("p")), ("length", B::Int(100)), ("path", list([s("a"), s("x")]))]);
    let info = multi_info()
        .with("files", list([file(1000, &["a"]), pad.clone(), file(1000, &["b"]), pad]))
        .with("pieces", pieces_for(2200));
    assert_eq!(paths_of(&parse(info)), ["multi/a", "multi/a/x", "multi/b", "multi/a/x"]);
}

#[test]
fn padding_without_a_path_is_named_by_its_length() {
    let pad = dict([("attr", s("p")), ("length", B::Int(15_384))]);
    let empty_pad = dict([("attr", s("p")), ("length", B::Int(2)), ("path", list([]))]);
    let info = multi_info()
        .with("files", list([file(1000, &["a"]), pad, file(20_000, &["b"]), empty_pad]))
        .with("pieces", pieces_for(36_386));
    let m = parse(info);
    assert_eq!(paths_of(&m), ["multi/a", "multi/.pad/15384", "multi/b", "multi/.pad/2"]);
    assert_eq!(m.files.iter().map(|f| f.padding).collect::<Vec<_>>(), [false, true, false, true]);
    assert_eq!(m.files[2].offset, 16_384);
    assert_eq!(m.mapped, Mapping::default());
}

fn link(path: &[&str], target: &[&str]) -> B {
    dict([("attr", s("l")), ("path", list(path.iter().map(s))), ("symlink path", list(target.iter().map(s)))])
}

#[test]
fn symlink_to_a_file_of_the_torrent_keeps_its_target() {
    // A `length` on a symlink is ignored: it takes no room in the layout (as in libtorrent).
    let with_length = link(&["a", "b", "foo"], &["a", "b", "bar"]).with("length", B::Int(5000));
    let info = multi_info().with(
        "files",
        list([file(20_000, &["a", "b", "bar"]), with_length, link(&["to-folder"], &["a"]), file(1000, &["z"])]),
    );
    let m = parse(info);
    assert_eq!(paths_of(&m), ["multi/a/b/bar", "multi/a/b/foo", "multi/to-folder", "multi/z"]);
    assert_eq!(m.files[1].symlink_target.as_deref(), Some(Path::new("a/b/bar")));
    assert_eq!(m.files[2].symlink_target.as_deref(), Some(Path::new("a")));
    assert_eq!((m.files[1].length, m.files[1].padding, m.files[3].offset), (0, false, 20_000));
    assert_eq!(m.total_length, 21_000);
    assert_eq!(m.selectable_files().count(), 4);
    assert_eq!(m.mapped, Mapping::default());
}

#[test]
fn symlink_through_other_symlinks_keeps_its_target() {
    // A macOS framework: Headers -> Versions/Current/Headers, Versions/Current -> A.
    let info = multi_info().with(
        "files",
        list([
            link(&["Headers"], &["Versions", "Current", "Headers"]),
            file(21_000, &["Versions", "A", "Headers", "x.h"]),
            link(&["Versions", "Current"], &["Versions", "A"]),
        ]),
    );
    let m = parse(info);
    assert_eq!(m.files[0].symlink_target.as_deref(), Some(Path::new("Versions/Current/Headers")));
    assert_eq!(m.files[2].symlink_target.as_deref(), Some(Path::new("Versions/A")));
}

#[test]
fn symlink_dot_dot_components_are_dropped() {
    let info =
        multi_info().with("files", list([file(21_000, &["a", "bar"]), link(&["a", "l"], &["..", "a", ".", "bar"])]));
    assert_eq!(parse(info).files[1].symlink_target.as_deref(), Some(Path::new("a/bar")));
}

#[test]
fn symlink_to_anything_not_in_the_torrent_is_skipped_with_a_note() {
    for target in [&["..", "..", "etc", "passwd"][..], &["/etc", "passwd"], &["a", "missing"], &[], &[".."]] {
        let info = multi_info().with("files", list([file(21_000, &["a", "bar"]), link(&["a", "l"], target)]));
        let m = parse(info);
        let skipped = &m.files[1];
        assert_eq!((skipped.padding, skipped.length, &skipped.symlink_target), (true, 0, &None), "{target:?}");
        assert_eq!(
            m.mapped.files,
            [PathNote { file: 1, original: target.join("/"), reason: NoteReason::SymlinkSkipped }],
            "{target:?}"
        );
        // Not offered for selection: there is nothing to download or create.
        assert_eq!(m.selectable_files().count(), 1);
    }
}

#[test]
fn symlink_loops_are_skipped() {
    let info = multi_info().with(
        "files",
        list([file(21_000, &["f"]), link(&["l1"], &["l2", "x"]), link(&["l2"], &["l1", "x"]), link(&["l3"], &["l3"])]),
    );
    let m = parse(info);
    // `l3 -> l3` names a symlink of the torrent: harmless (the OS reports a loop), kept as libtorrent does.
    let skipped: Vec<usize> =
        m.mapped.files.iter().filter(|n| n.reason == NoteReason::SymlinkSkipped).map(|n| n.file).collect();
    assert_eq!(skipped, [1, 2]);
}

#[test]
fn symlink_attr_without_a_symlink_path_is_a_plain_file() {
    let plain = dict([("attr", s("l")), ("length", B::Int(20_000)), ("path", list([s("x")]))]);
    let m = parse(multi_info().with("files", list([file(1000, &["a"]), plain])));
    assert_eq!((m.files[1].length, &m.files[1].symlink_target), (20_000, &None));
}

#[test]
fn symlink_path_of_the_wrong_type_is_malformed() {
    let bad = dict([("attr", s("l")), ("path", list([s("x")])), ("symlink path", list([B::Int(1)]))]);
    let e = rejection(multi_info().with("files", list([file(21_000, &["a"]), bad])));
    assert!(matches!(e, MetainfoError::Malformed { part: "file list", .. }), "{e}");
}

#[test]
fn piece_length_of_512_mib_is_accepted() {
    let info = single_info().with("piece length", B::Int(512 << 20)).with("pieces", s([0u8; 20]));
    assert_eq!(parse(info).piece_length, 512 << 20);
}

#[test]
fn mapping_is_deterministic() {
    let info = multi_info().with(
        "files",
        list([file(1000, &["..", "x"]), file(10_000, &["_", "x"]), file(10_000, &["", "x"]), link(&["l"], &["_"])]),
    );
    let first = parse(info.clone());
    let second = parse(info);
    assert_eq!(first.files, second.files);
    assert_eq!(first.mapped, second.mapped);
    assert_eq!(paths_of(&first), ["multi/_/x", "multi/_/x.1", "multi/_/x.2", "multi/l"]);
}

// ---- Still refused ----

#[test]
fn empty_path_list_is_rejected() {
    let bad = dict([("length", B::Int(20_000)), ("path", list([]))]);
    assert_eq!(
        rejection(multi_info().with("files", list([file(1000, &["ok"]), bad]))),
        MetainfoError::EmptyPath { index: 1 }
    );
}

#[test]
fn missing_path_is_rejected() {
    let info = multi_info().with("files", list([dict([("length", B::Int(21_000))])]));
    assert_eq!(rejection(info), MetainfoError::MissingField("path"));
}

#[test]
fn path_that_is_not_a_list_of_strings_is_malformed() {
    for path in [s("a"), list([B::Int(1)]), list([list([])])] {
        let info = multi_info().with("files", list([dict([("length", B::Int(21_000)), ("path", path)])]));
        let e = rejection(info);
        assert!(matches!(e, MetainfoError::Malformed { part: "file list", .. }), "{e}");
        assert!(e.to_string().starts_with("malformed file list: file 0: "), "{e}");
    }
}

#[test]
fn file_entry_that_is_not_a_dictionary_is_malformed() {
    let e = rejection(multi_info().with("files", list([s("x")])));
    assert!(matches!(e, MetainfoError::Malformed { part: "file list", .. }), "{e}");
}

#[test]
fn missing_name_is_rejected() {
    assert_eq!(rejection(single_info().without("name")), MetainfoError::MissingField("name"));
}

#[test]
fn name_of_the_wrong_type_is_malformed() {
    let e = rejection(single_info().with("name", B::Int(3)));
    assert!(matches!(e, MetainfoError::Malformed { part: "info dictionary", .. }), "{e}");
}

#[test]
fn a_key_twice_in_info_is_malformed() {
    let mut raw = b"d6:lengthi40000e6:lengthi40000e".to_vec();
    raw.extend(&single_info().without("length").encode()[1..]);
    let mut bytes = b"d4:info".to_vec();
    bytes.extend(raw);
    bytes.push(b'e');
    let e = Metainfo::from_bytes(&bytes).unwrap_err();
    assert!(matches!(e, MetainfoError::Malformed { part: "info dictionary", .. }), "{e}");
}

#[test]
fn from_vec_matches_from_bytes() {
    let bytes = torrent(multi_info().with("files", list([file(1000, &["a"]), file(20_000, &["a", "b"])])));
    let a = Metainfo::from_bytes(&bytes).unwrap();
    let b = Metainfo::from_vec(bytes).unwrap();
    assert_eq!((a.info_hash, &a.files, &a.mapped), (b.info_hash, &b.files, &b.mapped));
}

/// Many files whose paths straddle the packing blocks unpack to the right paths and offsets.
#[test]
fn thousands_of_files_unpack_in_order() {
    let long = "x".repeat(200);
    let files: Vec<B> = (0..2000).map(|i| file(10, &[&format!("d{}", i % 7), &format!("{long}{i}")])).collect();
    let m = parse(multi_info().with("files", list(files)).with("pieces", pieces_for(20_000)));
    for (i, f) in m.files.iter().enumerate() {
        assert_eq!(f.display_path(), format!("multi/d{}/{long}{i}", i % 7));
        assert_eq!(f.offset, 10 * i as u64);
    }
}

// ---- Messages ----

#[test]
fn every_error_is_one_lower_case_line() {
    let errors = [
        MetainfoError::NotBencode(BencodeError::UnexpectedEnd { at: 0 }),
        MetainfoError::MissingInfo,
        MetainfoError::InfoNotADictionary,
        rejection(single_info().with("piece length", s("x"))),
        MetainfoError::MissingField("name"),
        MetainfoError::V2Only,
        MetainfoError::PieceLengthZero,
        MetainfoError::PieceLengthOutOfRange(-1),
        MetainfoError::PiecesNotMultipleOf20 { len: 3 },
        MetainfoError::PieceCountMismatch { have: 1, want: 2 },
        MetainfoError::TooManyPieces(1 << 33),
        MetainfoError::LengthAndFiles,
        MetainfoError::NoLayout,
        MetainfoError::NoFiles,
        MetainfoError::NegativeLength(-1),
        MetainfoError::TotalTooLarge,
        MetainfoError::EmptyTorrent,
        MetainfoError::UnusableName("a\nb".into()),
        MetainfoError::EmptyPath { index: 1 },
        rejection(multi_info().with("files", list([dict([("length", s("x")), ("path", list([s("a")]))])]))),
    ];
    for e in errors {
        let text = e.to_string();
        assert!(!text.contains('\n') && !text.ends_with('.'), "{text}");
        let first = text.chars().next().unwrap();
        assert!(first.is_lowercase() || first.is_ascii_digit() || first == '"', "{text}");
        assert!(!text.contains('\n'), "{text}");
    }
    assert_eq!(
        MetainfoError::NotBencode(BencodeError::UnexpectedEnd { at: 0 }).to_string(),
        "not a bencoded torrent file: unexpected end of input at byte 0"
    );
}

// ---- Mutation ----

/// No input panics, and whatever is accepted keeps the layout invariants.
#[test]
fn mutated_torrents_never_panic() {
    let base =
        dict([("announce-list", list([list([s("http://a/")])])), ("info", multi_info().with("private", B::Int(1)))])
            .encode();
    let mut rng = Rng::seeded(0x70_22e47);
    let mut accepted = 0;
    for _ in 0..20_000u32 {
        let input = rng.mutate(&[&base], b"deil0123456789:-./\\\0");
        if let Ok(m) = Metainfo::from_bytes(&input) {
            accepted += 1;
            let mut offset = 0;
            for f in &m.files {
                assert_eq!(f.offset, offset);
                offset += f.length;
                assert!(f.path.components().all(|c| matches!(c, std::path::Component::Normal(_))));
                if let Some(target) = &f.symlink_target {
                    assert!(target.components().all(|c| matches!(c, std::path::Component::Normal(_))));
                }
            }
            let mut created: Vec<String> =
                m.files.iter().filter(|f| !f.padding).map(|f| f.display_path().to_ascii_lowercase()).collect();
            created.sort();
            for pair in created.windows(2) {
                assert!(pair[0] != pair[1] && !pair[1].starts_with(&format!("{}/", pair[0])), "{pair:?}");
            }
            assert_eq!(offset, m.total_length);
            assert_eq!(u64::from(m.piece_count()), m.total_length.div_ceil(m.piece_length.into()));
        }
    }
    // Flips inside piece hashes and the like keep the torrent valid: the mutations reach the validator.
    assert!(accepted > 100, "only {accepted} mutants parsed");
}

/// Thousands of equal names and a long chain of symlinks are settled in about linear time (a quadratic pass
/// would take minutes here), every name unique and every over-long chain skipped.
#[test]
fn many_duplicates_and_long_symlink_chains_stay_cheap() {
    let mut files: Vec<B> = (0..30_000).map(|_| file(1, &["x.bin"])).collect();
    // d0 -> d1 -> … -> d3000 (a real folder), and p_i -> d_i/x for each i.
    files.extend((0..3000).map(|i| link(&[&format!("d{i}")], &[&format!("d{}", i + 1)])));
    files.push(file(0, &["d3000", "x"]));
    files.extend((0..3000).map(|i| link(&[&format!("p{i}")], &[&format!("d{i}"), "x"])));
    let m = parse(multi_info().with("files", list(files)).with("pieces", pieces_for(30_000)));
    let mut names: Vec<String> = paths_of(&m)[..30_000].to_vec();
    assert_eq!(names[29_999], "multi/x.29999.bin");
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 30_000);
    assert!(m.files[30_000..33_000].iter().all(|f| f.symlink_target.is_some()));
    // A probe resolves only within 40 links of the real folder.
    let kept: Vec<usize> = (0..3000).filter(|i| m.files[33_001 + i].symlink_target.is_some()).collect();
    assert_eq!(kept, (2960..3000).collect::<Vec<_>>());
}

#[test]
fn long_components_are_cut_keeping_a_short_extension() {
    let long = "n".repeat(300);
    let m = mapped(&[&format!("{long}.mkv"), &long]);
    let expected = format!("multi/{}.mkv/{}", "n".repeat(240), "n".repeat(240));
    assert_eq!(m.files[1].display_path(), expected);
    assert_eq!(m.mapped.files[0].original, format!("multi/{long}.mkv/{long}"));
    // 240 bytes stays whole; a cut never splits a character; an extension longer than 9 bytes is not kept.
    let whole = "w".repeat(240);
    assert_eq!(mapped(&[&whole]).files[1].display_path(), format!("multi/{whole}"));
    let accents = format!("a{}", "é".repeat(200));
    assert_eq!(mapped(&[&accents]).files[1].display_path(), format!("multi/a{}", "é".repeat(120)));
    let m = mapped(&[&format!("{long}.verylongext")]);
    assert_eq!(m.files[1].display_path(), format!("multi/{}", "n".repeat(240)));
    let m = parse(single_info().with("name", s(format!("{long}.iso"))));
    assert_eq!(m.name, format!("{}.iso", "n".repeat(240)));
}
