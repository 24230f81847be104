//! Odd but harmless paths are mapped to safe names, not refused (issue 9): `rill info` on such torrents exits 0
//! and shows what each name was mapped from; a torrent with duplicate paths, `..` and empty components downloads
//! byte for byte from a real python3-libtorrent seeder into the mapped names; the `.torrent` read is bounded; and
//! `rill info` on a 200,000-file torrent stays under 32 MiB of peak memory.
//!
//! The torrents are built here with the tests' own bencode writer (the cases are modelled on libtorrent's
//! `test/test_torrents`, none of which is copied).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sha1::{Digest, Sha1};

use common::bencode::{self, Value};
use common::content::assert_same_tree;
use common::leecher::{download, Leecher};
use common::peers::LibtorrentPeer;
use common::torrent::Torrent;
use common::{deadline_in, rill_bin, rill_command, Proc, TempDir, PYTHON};

const PIECE: usize = 16 * 1024;

/// Deterministic pseudo-random bytes.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn path_list(components: &[&str]) -> Value {
    Value::List(components.iter().map(|c| Value::str(c)).collect())
}

/// One `files` entry: (path components, length), or a raw dictionary for BEP 47 entries.
enum Entry<'a> {
    File(&'a [&'a str], usize),
    Raw(Value),
}

/// A multi-file torrent named `name` over `entries`, with the piece hashes of `content` (the concatenation of
/// the files, pseudo-random, in layout order). Returns the torrent's bytes and the content.
fn multi_torrent(name: &str, entries: &[Entry]) -> (Vec<u8>, Vec<u8>) {
    let mut content = Vec::new();
    let mut files = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        match entry {
            Entry::File(path, len) => {
                content.extend(bytes(*len, i as u64 + 1));
                files.push(Value::dict(vec![("length", Value::int(*len as i64)), ("path", path_list(path))]));
            }
            Entry::Raw(v) => {
                // Padding is zeros; a symlink takes no room.
                let symlink = v.get("attr").and_then(Value::as_str).is_some_and(|a| a.contains('l'));
                if let (Some(len), false) = (v.get("length").and_then(Value::as_int), symlink) {
                    content.resize(content.len() + len as usize, 0);
                }
                files.push(v.clone());
            }
        }
    }
    let pieces: Vec<u8> = content.chunks(PIECE).flat_map(|c| <[u8; 20]>::from(Sha1::digest(c))).collect();
    let info = Value::dict(vec![
        ("files", Value::List(files)),
        ("name", Value::str(name)),
        ("piece length", Value::int(PIECE as i64)),
        ("pieces", Value::Bytes(pieces)),
    ]);
    (Value::dict(vec![("announce", Value::str("http://127.0.0.1:1/announce")), ("info", info)]).encode(), content)
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `rill ARGS…` (or `bash -c SCRIPT` when `shell`), to completion within 30 s.
fn run(dir: &Path, label: &str, cmd: &Command) -> Run {
    let p = Proc::spawn(label, cmd, &dir.join("logs"), Duration::from_secs(40));
    let status = p.wait_exit(deadline_in(30));
    Run { code: status.code(), stdout: p.stdout(), stderr: p.stderr() }
}

fn rill_info(dir: &Path, label: &str, torrent: &Path) -> Run {
    let mut cmd = rill_command();
    cmd.arg("info").arg(torrent).env_remove("RUST_LOG");
    run(dir, label, &cmd)
}

#[track_caller]
fn assert_one_line_exit_2(run: &Run, what: &str) {
    assert_eq!(run.code, Some(2), "{what}: exit {:?}, stderr {:?}", run.code, run.stderr);
    let lines: Vec<&str> = run.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{what}: expected one line on stderr, got {:?}", run.stderr);
}

fn raw_entry(pairs: Vec<(&str, Value)>) -> Entry<'static> {
    Entry::Raw(Value::dict(pairs))
}

/// Each case: a torrent libtorrent loads, and lines `rill info` must print for it.
fn cases() -> Vec<(&'static str, Vec<u8>, Vec<&'static str>)> {
    let mut cases = Vec::new();
    let (t, _) = multi_torrent("temp", &[Entry::File(&["a", "", "b"], 400), Entry::File(&["c", ""], 10)]);
    cases.push((
        "empty components",
        t,
        vec!["temp/a/_/b  (mapped from \"temp/a//b\")", "temp/c/_  (mapped from \"temp/c/\")"],
    ));
    let (t, _) = multi_torrent("temp", &[Entry::File(&["..", "..", "bar"], 400), Entry::File(&[".", "x"], 10)]);
    cases.push((
        "dot and dot-dot components",
        t,
        vec!["temp/_/_/bar  (mapped from \"temp/../../bar\")", "temp/_/x  (mapped from \"temp/./x\")"],
    ));
    let (t, _) = multi_torrent(
        "temp",
        &[
            Entry::File(&["/", "/", "bar"], 400),
            Entry::File(&["foo/../../../bar", "baz"], 10),
            Entry::File(&["\\", "w"], 10),
            Entry::File(&["/abs"], 10),
        ],
    );
    cases.push((
        "separators in components",
        t,
        vec![
            "temp/_/_/bar  (mapped from \"temp/////bar\")",
            "temp/foo......bar/baz  (mapped from \"temp/foo/../../../bar/baz\")",
            "temp/_/w  (mapped from \"temp/\\/w\")",
            "temp/abs  (mapped from \"temp//abs\")",
        ],
    ));
    let (t, _) = multi_torrent("..", &[Entry::File(&["foo", "bar.txt"], 400)]);
    let hash = bencode::hex(&bencode::info_hash(&t));
    let name_line: &'static str = Box::leak(format!("name:       {hash}  (mapped from \"..\")").into_boxed_str());
    let file_line: &'static str = Box::leak(format!("{hash}/foo/bar.txt").into_boxed_str());
    cases.push(("a name that cleans to nothing", t, vec![name_line, file_line]));
    let (t, _) = multi_torrent(
        "temp",
        &[Entry::File(&["foo", "bar.txt"], 400), Entry::File(&["foo", "bar.txt"], 10), Entry::File(&["foo"], 10)],
    );
    cases.push((
        "duplicate paths and a file in a folder's way",
        t,
        vec![
            "temp/foo/bar.txt\n",
            "temp/foo/bar.1.txt  (mapped from \"temp/foo/bar.txt\")",
            "temp/foo.1  (mapped from \"temp/foo\")",
        ],
    ));
    let (t, _) = multi_torrent(
        "temp",
        &[
            Entry::File(&["a", "b", "bar"], 400),
            raw_entry(vec![
                ("attr", Value::str("l")),
                ("path", path_list(&["a", "b", "foo"])),
                ("symlink path", path_list(&["a", "b", "bar"])),
            ]),
            raw_entry(vec![
                ("attr", Value::str("l")),
                ("path", path_list(&["evil"])),
                ("symlink path", path_list(&["..", "..", "etc", "passwd"])),
            ]),
        ],
    );
    cases.push((
        "symlinks inside and outside",
        t,
        vec![
            "temp/a/b/foo -> a/b/bar",
            "skipped:\n  temp/evil  (symlink to \"../../etc/passwd\", which is not in the torrent: not created)",
        ],
    ));
    let (t, _) = multi_torrent(
        "temp",
        &[
            Entry::File(&["foo", "bar.txt"], 45),
            raw_entry(vec![("attr", Value::str("p")), ("length", Value::int(PIECE as i64 - 45))]),
            Entry::File(&["x"], 100),
        ],
    );
    cases.push((
        "a pad file with no path",
        t,
        vec!["files:      2 (and 1 padding file, 16.0 KiB, not written to disk)"],
    ));
    let long: &'static str = Box::leak(format!("{}.mkv", "n".repeat(300)).into_boxed_str());
    let (t, _) = multi_torrent("temp", &[Entry::File(&[long], 400)]);
    let cut: &'static str =
        Box::leak(format!("temp/{}.mkv  (mapped from \"temp/{long}\")", "n".repeat(240)).into_boxed_str());
    cases.push(("a component too long for a file name", t, vec![cut]));
    let big = Value::dict(vec![(
        "info",
        Value::dict(vec![
            ("length", Value::int(425)),
            ("name", Value::str("big-pieces")),
            ("piece length", Value::int(512 * 1024 * 1024)),
            ("pieces", Value::Bytes(Sha1::digest(bytes(425, 9)).to_vec())),
        ]),
    )])
    .encode();
    cases.push(("a 512 MiB piece length", big, vec!["piece size: 512 MiB (536870912 bytes)"]));
    cases
}

#[test]
fn info_maps_odd_paths_and_exits_0() {
    let dir = TempDir::new("sanitise-info");
    let mut failures = Vec::new();
    for (i, (what, torrent, lines)) in cases().into_iter().enumerate() {
        let path = dir.join(format!("odd{i}.torrent"));
        std::fs::write(&path, &torrent).unwrap();
        let run = rill_info(dir.path(), &format!("info{i}"), &path);
        if run.code != Some(0) {
            failures.push(format!("{what}: exit {:?}, stderr {:?}", run.code, run.stderr));
            continue;
        }
        for line in lines {
            if !run.stdout.contains(line) {
                failures.push(format!("{what}: no {line:?} in\n{}", run.stdout));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `rill info <(cat x.torrent)` reads a pipe; a directory, or a file over the 64 MiB cap, is refused with one line
/// and exit 2 (the big one without reading past the cap).
#[test]
fn torrent_read_takes_pipes_and_refuses_directories_and_huge_files() {
    let dir = TempDir::new("sanitise-read");
    let (torrent, _) = multi_torrent("piped", &[Entry::File(&["a.bin"], 1000)]);
    let path = dir.join("piped.torrent");
    std::fs::write(&path, &torrent).unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(format!("exec '{}' info <(cat '{}')", rill_bin().display(), path.display()));
    let piped = run(dir.path(), "piped", &cmd);
    assert_eq!(piped.code, Some(0), "rill info <(cat x): stderr {:?}", piped.stderr);
    assert!(piped.stdout.contains("piped/a.bin"), "{}", piped.stdout);

    let folder = dir.mkdir("a-folder.torrent");
    assert_one_line_exit_2(&rill_info(dir.path(), "folder", &folder), "a directory");

    // A sparse file just over the cap, that starts like a torrent.
    let huge = dir.join("huge.torrent");
    let file = std::fs::File::create(&huge).unwrap();
    file.set_len(64 * 1024 * 1024 + 1).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &torrent, 0).unwrap();
    let run = rill_info(dir.path(), "huge", &huge);
    assert_one_line_exit_2(&run, "a 64 MiB + 1 byte file");
    assert!(run.stderr.contains("64 MiB"), "{}", run.stderr);
    // Exactly at the cap is read (the bytes after the torrent are ignored, so it loads).
    file.set_len(64 * 1024 * 1024).unwrap();
    let run = rill_info(dir.path(), "at-cap", &huge);
    assert_eq!(run.code, Some(0), "a torrent of exactly 64 MiB: {:?}", run.stderr);
}

/// A torrent with 200,000 files: `rill info` lists them all with at most 32 MiB of peak RSS (measured by a python
/// parent with `getrusage(RUSAGE_CHILDREN)`).
#[test]
fn info_on_200k_files_stays_under_32_mib() {
    const FILES: usize = 200_000;
    let dir = TempDir::new("sanitise-200k");
    let mut files = Vec::with_capacity(FILES);
    let mut total = 0i64;
    for i in 0..FILES {
        let length = 1000 + (i % 7) as i64;
        total += length;
        let path = vec![Value::str(&format!("folder{:03}", i / 1000)), Value::str(&format!("file-{i:06}.dat"))];
        files.push(Value::dict(vec![("length", Value::int(length)), ("path", Value::List(path))]));
    }
    let piece_length = 1i64 << 20;
    let pieces = (total + piece_length - 1) / piece_length;
    let info = Value::dict(vec![
        ("files", Value::List(files)),
        ("name", Value::str("many")),
        ("piece length", Value::int(piece_length)),
        ("pieces", Value::Bytes(vec![1; 20 * pieces as usize])),
    ]);
    let torrent = Value::dict(vec![("info", info)]).encode();
    assert!(torrent.len() > 10_000_000, "the torrent should be about 10 MB, is {}", torrent.len());
    let path = dir.join("many.torrent");
    std::fs::write(&path, &torrent).unwrap();

    let listing = dir.join("listing.txt");
    let script = "import resource, subprocess, sys\n\
                  with open(sys.argv[2], 'wb') as out:\n\
                  \x20   code = subprocess.run([sys.argv[1], 'info', sys.argv[3]], stdout=out, timeout=60).returncode\n\
                  print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n";
    let mut cmd = Command::new(PYTHON);
    cmd.arg("-c").arg(script).arg(rill_bin()).arg(&listing).arg(&path).env_remove("RUST_LOG");
    let measured = run(dir.path(), "measure", &cmd);
    assert_eq!(measured.code, Some(0), "measuring failed: {:?}", measured.stderr);
    let words: Vec<u64> = measured.stdout.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    let [code, max_rss_kib] = words[..] else { panic!("unexpected measurement {:?}", measured.stdout) };
    assert_eq!(code, 0, "rill info exited {code}");
    let text = std::fs::read_to_string(&listing).unwrap();
    assert!(text.contains("\nfiles:      200000\n"), "{}", &text[..text.len().min(2000)]);
    assert!(text.contains("  199999  1002 B  many/folder199/file-199999.dat\n"));
    println!("rill info on {FILES} files: peak RSS {:.1} MiB", max_rss_kib as f64 / 1024.0);
    assert!(max_rss_kib < 32 * 1024, "peak RSS {max_rss_kib} KiB is over 32 MiB");
}

/// Duplicate paths, `..` and empty components: rill maps them to `a/x.1.bin`, `_/evil.bin`, `b/_/c.bin` and
/// downloads every byte from a python3-libtorrent 2.0 seeder. libtorrent maps `..` its own way (2.0.8 drops the
/// component), so the seeder's data is laid out under its own mapping.
#[test]
fn sanitised_torrent_downloads_from_libtorrent_into_the_mapped_names() {
    let deadline = deadline_in(120);
    let dir = TempDir::new("sanitise-download");
    let entries = [
        Entry::File(&["a", "x.bin"], 70_000),
        Entry::File(&["a", "x.bin"], 50_000),
        Entry::File(&["..", "evil.bin"], 40_000),
        Entry::File(&["b", "", "c.bin"], 33_333),
        Entry::File(&["a", "X.BIN"], 1_000),
    ];
    let (torrent, content) = multi_torrent("odd", &entries);
    let path = dir.join("odd.torrent");
    std::fs::write(&path, &torrent).unwrap();
    let t = Torrent::load(&path);

    // What each side names the files (in layout order) and the data of each.
    let rill_names = ["a/x.bin", "a/x.1.bin", "_/evil.bin", "b/_/c.bin", "a/X.2.BIN"];
    let libtorrent_names = ["a/x.bin", "a/x.1.bin", "evil.bin", "b/_/c.bin", "a/X.2.BIN"];
    let mut offset = 0;
    let expected = dir.mkdir("expected");
    let seed_data = dir.mkdir("seed-data");
    for (entry, (ours, theirs)) in entries.iter().zip(rill_names.iter().zip(libtorrent_names)) {
        let Entry::File(_, len) = entry else { unreachable!() };
        let data = &content[offset..offset + len];
        offset += len;
        for (root, rel) in [(&expected, ours), (&seed_data, &theirs)] {
            let file = root.join("odd").join(rel);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, data).unwrap();
        }
    }

    let seeder = LibtorrentPeer::seed(dir.path(), "libtorrent", &t, &seed_data, 0, deadline);
    let out = dir.mkdir("out");
    download(Leecher::Rill, dir.path(), &t, &out, &[format!("127.0.0.1:{}", seeder.port)], &[&seeder], deadline);
    assert_same_tree(&expected.join("odd"), &out.join("odd"));
}
