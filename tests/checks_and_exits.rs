//! Issue 9, seeding checks and exits, against real files, real processes and a real leecher on loopback:
//! - data changed under an unchanged size and mtime (bit rot keeps the mtime) is never served by `rill seed`, never
//!   reported complete by `rill download` (which fetches it again from a real seeder, byte-identical), and found by
//!   `rill seed --recheck`;
//! - SIGTERM during the data check exits 0 and records what was checked, so the next start does not hash it again;
//! - `rill info` into a pipe closed by its reader ends quietly with exit 0, not a panic (SIGABRT).
//!
//! Every process is bounded in time and killed by PID (the rig's `Proc`); waits are on conditions with deadlines.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use sha1::{Digest, Sha1};

use common::bencode::Value;
use common::content::{self, assert_same_tree, KIB, MIB};
use common::leecher::spawn_rill_download;
use common::peers::{LibtorrentPeer, Peer};
use common::resume::{already_here, error_lines};
use common::seeding::{LtLeechOptions, LtLeecher, RillPeer};
use common::torrent::{self, Torrent};
use common::{
    deadline_in, deadline_within, describe, free_port, lifetime_until, rill_bin, rill_command, wait_for, Proc, TempDir,
};

const SIGTERM: i32 = 15;

/// A torrent nobody announces to: the port is on loopback and closed.
const DEAD_ANNOUNCE: &str = "http://127.0.0.1:9/announce";

/// Flips one byte at `offset` of `path`, then puts the file's mtime back as it was: the size and the mtime say
/// nothing changed (as with bit rot on an SD card). Returns the changed byte.
#[track_caller]
fn change_byte_keeping_mtime(path: &Path, offset: u64) -> u8 {
    let mtime = fs::metadata(path).and_then(|m| m.modified()).expect("mtime");
    let mut f = OpenOptions::new().read(true).write(true).open(path).expect("open the data file");
    let mut byte = [0u8];
    f.seek(SeekFrom::Start(offset)).and_then(|_| f.read_exact(&mut byte)).expect("read the byte");
    byte[0] ^= 0x5A;
    f.seek(SeekFrom::Start(offset)).and_then(|_| f.write_all(&byte)).expect("write the byte");
    f.sync_all().expect("sync");
    f.set_modified(mtime).expect("restore the mtime");
    drop(f);
    assert_eq!(fs::metadata(path).and_then(|m| m.modified()).expect("mtime"), mtime, "the mtime was not restored");
    byte[0]
}

#[track_caller]
fn piece_of(path: &Path, t: &Torrent, piece: u64) -> Vec<u8> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let start = (piece * t.piece_length) as usize;
    bytes.get(start..start + t.piece_length as usize).map(<[u8]>::to_vec).unwrap_or_default()
}

#[track_caller]
fn assert_no_panic(proc: &Proc) {
    let err = proc.stderr();
    assert!(!err.contains("panicked"), "{} panicked:\n{err}", proc.name());
}

/// One piece of a single-file torrent changes on disk under the same size and mtime, after the resume file
/// recorded every piece as verified.
/// 1. `rill download` with that directory re-fetches the piece from a real libtorrent seeder before it reports
///    complete: the file ends byte-identical, and rill names the piece.
/// 2. The piece changes again (same mtime). `rill seed --recheck` refuses: one piece is damaged.
/// 3. `rill seed` (trusting the resume file) serves a real libtorrent leecher every other piece, never the changed
///    one: the leecher gets exactly the torrent less that piece, and never completes.
#[test]
fn changed_data_under_the_same_mtime_is_never_served_nor_reported_complete() {
    let deadline = deadline_in(90);
    let dir = TempDir::new("checks-changed-data");
    let content = content::write_single(&dir.mkdir("content"), "rot.bin", 2 * MIB + 1_234, 0xB17_0707);
    let t = torrent::transmission_create(&content, DEAD_ANNOUNCE, 64, &dir.join("rot.torrent"), deadline);
    let n = t.num_pieces;
    let changed: u64 = 7;
    let offset = changed * t.piece_length + 4_321;

    // 0. rill's resume file vouches for every piece: `rill seed` hashes the data in full at its first start, and
    //    records it on a clean stop.
    let data_dir = content.copy_to(&dir.mkdir("rill-data"));
    let data = data_dir.join(&t.name);
    let first = RillPeer::seed(dir.path(), "rill-seed-0", &t, &data_dir, &[], deadline);
    // It listens before its data check ends (the check runs on the disk thread): stop it only once checked.
    let checked = format!("{n} of {n} pieces present; seeding");
    wait_for(deadline, "rill seed to finish its data check", || {
        first.proc.assert_running();
        first.proc.stdout().contains(&checked).then_some(())
    });
    let status = first.interrupt(deadline_within(deadline, 15));
    assert!(status.success(), "rill seed did not exit 0 after SIGINT: {}", describe(status));

    // 1. A download with the changed piece: fetched again from the real seeder, never reported complete before.
    let original = piece_of(&data, &t, changed);
    change_byte_keeping_mtime(&data, offset);
    let seeder_data = content.copy_to(&dir.mkdir("seeder-data"));
    let seeder = LibtorrentPeer::seed(dir.path(), "libtorrent-seeder", &t, &seeder_data, 0, deadline);
    let rill = spawn_rill_download(dir.path(), &t, &data_dir, &[format!("127.0.0.1:{}", seeder.port())], &[], deadline);
    let status = wait_for(deadline, "rill download to finish", || {
        seeder.proc().assert_running();
        rill.exited()
    });
    assert!(status.success(), "rill download failed: {}", describe(status));
    assert_no_panic(&rill);
    let out = rill.stdout();
    let here = already_here(&out).unwrap_or_else(|| panic!("no `already here` line:\n{out}"));
    assert_eq!((here.trusted, here.checked), (n, 0), "every piece should have been trusted at start: {here:?}");
    assert!(
        out.contains(&format!("piece {changed}: data changed on disk")),
        "rill should name the changed piece; its output:\n{out}"
    );
    assert_same_tree(&content.path(), &data);
    assert_eq!(piece_of(&data, &t, changed), original);

    // 2. The same piece rots again, mtime kept (the resume file now records the repaired file's stamp).
    let changed_byte = change_byte_keeping_mtime(&data, offset);
    let mut rotten = original.clone();
    rotten[4_321] = changed_byte;
    let mut cmd = rill_command();
    cmd.arg("seed").arg(&t.path).arg("-d").arg(&data_dir).args(["--no-ui", "--recheck", "--port"]);
    cmd.arg(free_port().to_string());
    let recheck = Proc::spawn("rill-seed-recheck", &cmd, &dir.join("logs"), lifetime_until(deadline));
    let status = recheck.wait_exit(deadline_within(deadline, 30));
    assert_eq!(status.code(), Some(1), "rill seed --recheck should refuse damaged data: {}", describe(status));
    let err = recheck.stderr();
    let lines = error_lines(&err);
    assert!(
        lines.len() == 1 && lines[0].contains(&format!("1 of {n} pieces are missing or damaged")),
        "rill seed --recheck should say in one line that one piece is damaged:\n{err}"
    );

    // 3. `rill seed` trusts the resume file at start, but serves no piece it has not hashed in this run.
    let rill = RillPeer::seed(dir.path(), "rill-seed", &t, &data_dir, &[], deadline);
    let lt_out = dir.mkdir("leecher-out");
    let opts = LtLeechOptions { peers: vec![rill.addr()], no_tracker: true, ..LtLeechOptions::default() };
    let leecher = LtLeecher::start(dir.path(), "libtorrent-leecher", &t, &lt_out, &opts, deadline);
    let all_but_one = t.total_length - t.piece_length;
    leecher.wait_snapshot(&[&rill.proc], deadline, "every piece but the changed one", |s| s.downloaded >= all_but_one);
    let out = rill.proc.stdout();
    assert!(out.contains(&format!("{n} of {n} pieces present; seeding")), "rill seed's output:\n{out}");
    assert!(
        out.contains(&format!("piece {changed}: data changed on disk since it was checked; not serving it")),
        "rill seed should name the changed piece; its output:\n{out}"
    );
    let status = rill.interrupt(deadline_within(deadline, 15));
    assert!(status.success(), "rill seed did not exit 0 after SIGINT: {}", describe(status));
    assert_no_panic(&rill.proc);
    let last = leecher.snapshot().expect("the leecher's status");
    assert!(
        last.had_only_rill() && last.downloaded == all_but_one && !last.complete,
        "the leecher should have had exactly the torrent less piece {changed}, from rill only: {}",
        last.describe()
    );
    let got = lt_out.join(&t.name);
    for p in (0..n).filter(|&p| p != changed) {
        assert_eq!(piece_of(&got, &t, p), piece_of(&content.path(), &t, p), "piece {p} as the leecher got it");
    }
    assert_ne!(piece_of(&got, &t, changed), rotten, "the leecher has the changed bytes");
    println!("changed piece {changed} of {n}: re-fetched by rill download, refused by --recheck, never served");
}

/// A single-file torrent of `len` zero bytes in `piece_len` pieces (every piece hash is the same: building it is
/// cheap), and its data as a sparse file: hashing it is real work for rill, creating it is not.
fn zero_torrent(dir: &Path, name: &str, len: u64, piece_len: u64) -> std::path::PathBuf {
    let full = Sha1::digest(vec![0u8; piece_len as usize]);
    let last_len = len - (len.div_ceil(piece_len) - 1) * piece_len;
    let last = Sha1::digest(vec![0u8; last_len as usize]);
    let mut pieces = Vec::new();
    for _ in 1..len.div_ceil(piece_len) {
        pieces.extend_from_slice(&full);
    }
    pieces.extend_from_slice(&last);
    let info = Value::dict(vec![
        ("length", Value::int(len as i64)),
        ("name", Value::str(name)),
        ("piece length", Value::int(piece_len as i64)),
        ("pieces", Value::Bytes(pieces)),
    ]);
    let torrent = Value::dict(vec![("announce", Value::str(DEAD_ANNOUNCE)), ("info", info)]);
    let path = dir.join(format!("{name}.torrent"));
    fs::write(&path, torrent.encode()).expect("write the torrent");
    let data = dir.join("data");
    fs::create_dir_all(&data).expect("data dir");
    File::create(data.join(name)).and_then(|f| f.set_len(len)).expect("sparse data file");
    path
}

/// `stopped during the data check: C pieces checked, K of N known good` → (C, K, N).
fn stopped_during_check(stdout: &str) -> Option<(u64, u64, u64)> {
    let line = stdout.lines().find(|l| l.starts_with("stopped during the data check:"))?;
    let nums: Vec<u64> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|s| s.parse().ok()).collect();
    match nums[..] {
        [checked, known, total] => Some((checked, known, total)),
        _ => None,
    }
}

/// SIGTERM while rill hashes existing data: exit 0 (not death by the signal), a line saying what was checked, and
/// the resume file records it: a second start trusts those pieces and hashes only the others.
#[test]
fn sigterm_during_the_data_check_exits_0_and_keeps_what_was_checked() {
    let deadline = deadline_in(120);
    let dir = TempDir::new("checks-sigterm");
    // 4 GiB of zeros in 4 MiB pieces: seconds of hashing, at no cost in disk space.
    let torrent = zero_torrent(dir.path(), "zeros.bin", 4 * 1024 * MIB, 4 * MIB);
    let data = dir.join("data");
    let run = |name: &str, wait_line: &str| {
        let mut cmd = rill_command();
        cmd.arg("download").arg(&torrent).arg("-d").arg(&data).arg("--no-ui");
        cmd.arg("--port").arg(free_port().to_string());
        let rill = Proc::spawn(name, &cmd, &dir.join("logs"), lifetime_until(deadline));
        wait_for(deadline, &format!("{name} to print `{wait_line}`"), || {
            rill.assert_running();
            rill.stdout().contains(wait_line).then_some(())
        });
        rill.signal(SIGTERM);
        let status = rill.wait_exit(deadline_within(deadline, 20));
        assert!(status.success(), "{name} should exit 0 on SIGTERM during the check, not {}", describe(status));
        assert_no_panic(&rill);
        let out = rill.stdout();
        stopped_during_check(&out).unwrap_or_else(|| panic!("{name}: no `stopped during the data check` line:\n{out}"))
    };

    let (checked_1, known_1, n) = run("rill-1", "checking existing data 10%");
    assert_eq!(n, 1024);
    assert!(known_1 >= n / 10 && known_1 < n, "the first run should have checked part of the data: {known_1} of {n}");
    assert_eq!(checked_1, known_1, "every zero piece hashes right");

    // The second start trusts what the first one checked, hashes only the rest (and is stopped again).
    let (checked_2, known_2, _) = run("rill-2", "checking existing data 0%");
    assert!(checked_2 > 0 && checked_2 <= n - known_1, "the second run hashed {checked_2} pieces");
    assert_eq!(
        known_2,
        known_1 + checked_2,
        "the second run should trust the {known_1} pieces checked before and hash only others ({checked_2})"
    );
    println!("SIGTERM during the check: {known_1} of {n} pieces kept, then {known_2} after a second stop");
}

/// `rill info` of a torrent with 5,000 files writes far more than a pipe holds; the reader (`true`) exits without
/// reading. rill's write fails with EPIPE: it must end quietly with exit 0, not abort on a panic.
#[test]
fn info_into_a_closed_pipe_exits_0_quietly() {
    let deadline = deadline_in(30);
    let dir = TempDir::new("checks-closed-pipe");
    let files: Vec<Value> = (0..5_000)
        .map(|i| {
            Value::dict(vec![
                ("length", Value::int(1)),
                ("path", Value::List(vec![Value::str("folder"), Value::str(&format!("file-{i:05}.bin"))])),
            ])
        })
        .collect();
    let info = Value::dict(vec![
        ("files", Value::List(files)),
        ("name", Value::str("many")),
        ("piece length", Value::int(16 * KIB as i64)),
        ("pieces", Value::Bytes(vec![0xAB; 20])),
    ]);
    let path = dir.join("many.torrent");
    fs::write(&path, Value::dict(vec![("info", info)]).encode()).expect("write the torrent");
    // Sanity: the listing is bigger than a pipe's buffer (64 KiB), so rill must meet the closed pipe.
    let mut full = rill_command();
    full.arg("info").arg(&path);
    let listing = Proc::spawn("rill-info-full", &full, &dir.join("logs"), lifetime_until(deadline));
    assert!(listing.wait_exit(deadline).success(), "rill info failed: {}", listing.stderr());
    assert!(listing.stdout().len() > 128 * 1024, "the listing is only {} bytes", listing.stdout().len());

    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(r#""$0" info "$1" | true; echo "rill exit ${PIPESTATUS[0]}""#).arg(rill_bin()).arg(&path);
    let shell = Proc::spawn("rill-info-pipe", &cmd, &dir.join("logs"), lifetime_until(deadline));
    assert!(shell.wait_exit(deadline).success());
    let err = shell.stderr();
    assert_eq!(shell.stdout().trim(), "rill exit 0", "rill info into a closed pipe; its stderr:\n{err}");
    assert!(error_lines(&err).iter().all(|l| l.starts_with('$')), "rill should say nothing; its stderr:\n{err}");
}
