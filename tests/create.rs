//! `rill create` (issue 10) against real software on loopback: the torrent it makes of a folder with nested
//! files and an empty file has the info-hash python3-libtorrent computes for the same files and piece size, and a
//! libtorrent leecher and a Transmission daemon both download it byte-identical from `rill seed`.
//! Every process is bounded in time and killed by PID; tools are installed by `scripts/test`.

mod common;

use std::path::Path;
use std::process::Command;

use common::content::{self, assert_same_tree, KIB};
use common::peers::TransmissionDaemon;
use common::seeding::{LtLeechOptions, LtLeecher, RillPeer, SIGINT};
use common::torrent::Torrent;
use common::tracker::Opentracker;
use common::{deadline_in, deadline_within, describe, peer_script, require_python_libtorrent, rill_command, run_tool};
use common::{TempDir, PYTHON};

/// `rill create ARGS…`, which must exit 0; returns its stdout.
#[track_caller]
fn rill_create(dir: &Path, args: &[&str], deadline: std::time::Instant) -> String {
    let mut cmd = rill_command();
    cmd.arg("create").args(args);
    run_tool("rill-create", &cmd, &dir.join("logs"), deadline)
}

#[test]
fn created_torrent_has_libtorrents_info_hash_and_real_clients_fetch_it_from_rill_seed() {
    let deadline = deadline_in(90);
    let dir = TempDir::new("create-interop");
    let files: &[(&str, u64)] = &[
        ("top.txt", 5_000),
        ("a/one.bin", 300_001),
        ("a/b/two.bin", 70_000),
        ("a/b/c/three.bin", 131_072),
        ("empty.dat", 0),
        ("z/last.bin", 17),
    ];
    let content = content::write_tree(&dir.mkdir("content"), "made-by-rill", files, 0xC4EA7E);
    let out = dir.join("made.torrent");
    let (t, tracker) = Opentracker::with_torrent(dir.path(), deadline, |announce| {
        let printed = rill_create(
            dir.path(),
            &[
                &content.path().to_string_lossy(),
                "-o",
                &out.to_string_lossy(),
                "--tracker",
                announce,
                "--piece-size",
                "32k",
            ],
            deadline,
        );
        assert!(printed.contains("6 files"), "rill create printed: {printed}");
        Torrent::load(&out)
    });
    assert_eq!(t.piece_length, 32 * KIB);
    assert_eq!(t.total_length, content.total);

    // 1. The same info-hash as libtorrent's, for the files in the order rill lays them out (byte order of the
    //    path components).
    require_python_libtorrent();
    let mut order: Vec<(Vec<String>, u64)> =
        files.iter().map(|(p, len)| (p.split('/').map(String::from).collect(), *len)).collect();
    order.sort();
    let mut lt = Command::new(PYTHON);
    lt.arg(peer_script("lt_infohash.py")).arg(&content.parent).arg(&content.name).arg((32 * KIB).to_string());
    lt.args(order.iter().map(|(components, len)| format!("{}:{len}", components.join("/"))));
    let lt_hash = run_tool("lt-infohash", &lt, &dir.join("logs"), deadline);
    let ours: String = t.info_hash.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(lt_hash.trim(), ours, "libtorrent computes another info-hash for the same files and piece size");

    // 2. Transmission (which never dials 127.x peers, so rill dials it) and libtorrent leech from `rill seed`.
    let transmission = TransmissionDaemon::start(dir.path(), "transmission-leecher", None, deadline);
    let tr_out = dir.mkdir("transmission-out");
    transmission.add_torrent(&t, &tr_out);
    let tr_peer = format!("127.0.0.1:{}", transmission.peer_port);
    let rill = RillPeer::seed(dir.path(), "rill", &t, &content.parent, &["--peer", &tr_peer], deadline);
    tracker.wait_seeders(&t.info_hash, 1, deadline);
    let lt_out = dir.mkdir("libtorrent-out");
    let only_rill = LtLeechOptions { peers: vec![rill.addr()], no_tracker: true, ..LtLeechOptions::default() };
    let leecher = LtLeecher::start(dir.path(), "libtorrent-leecher", &t, &lt_out, &only_rill, deadline);

    leecher.wait_complete(&[&rill.proc], deadline);
    transmission.wait_seeding(deadline);
    assert_same_tree(&content.path(), &lt_out.join(&t.name));
    // Transmission 3.00 never creates zero-length files; every other file must be identical.
    for (rel, len) in content.files.iter().filter(|(_, len)| *len > 0) {
        let got = tr_out.join(&t.name).join(rel);
        let same = content::first_difference(&content.path().join(rel), &got);
        assert_eq!(same, Ok(None), "Transmission's copy of {} ({len} bytes) differs", rel.display());
    }

    let status = rill.interrupt(deadline_within(deadline, 15));
    assert!(status.success(), "rill seed did not exit 0 after SIGINT ({SIGINT}): {}", describe(status));
}

#[test]
fn create_refuses_bad_input_with_one_line() {
    let deadline = deadline_in(20);
    let dir = TempDir::new("create-errors");
    let empty = dir.mkdir("nothing-here");
    let out = dir.join("x.torrent");
    for (args, want) in [
        (vec![empty.to_string_lossy().into_owned(), "-o".into(), out.to_string_lossy().into_owned()], "holds no files"),
        (
            vec![dir.join("missing").to_string_lossy().into_owned(), "-o".into(), out.to_string_lossy().into_owned()],
            "cannot",
        ),
        (
            vec!["/dev/null".into(), "-o".into(), out.to_string_lossy().into_owned()],
            "neither a regular file nor a folder",
        ),
    ] {
        let o = rill_command().arg("create").args(&args).output().expect("run rill");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line expected: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert!(!out.exists());
    // An existing output is kept unless --force.
    let src = content::write_single(dir.path(), "one.bin", 40_000, 7);
    std::fs::write(&out, b"keep me").unwrap();
    let o = rill_command().arg("create").arg(src.path()).arg("-o").arg(&out).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    let o = rill_command().arg("create").arg(src.path()).arg("-o").arg(&out).arg("--force").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = Torrent::load(&out);
    assert_eq!((t.name.as_str(), t.total_length, t.piece_length), ("one.bin", 40_000, 16 * KIB));
    assert!(std::time::Instant::now() < deadline);
}
