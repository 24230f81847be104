//! Several torrents in one rill process (issue 10), against real software on loopback: one `rill download A B`
//! fetching two torrents from two python3-libtorrent seeders behind one opentracker; one `rill seed A B` serving a
//! plain-BitTorrent libtorrent leecher and an MSE-only one, each routed to its torrent by info-hash; bad input
//! (a malformed torrent among good ones, two torrents whose files overlap on disk) refused with exit 2 before any
//! network traffic, which listeners this test owns would have seen; the same torrent given twice loaded once; and a
//! torrent whose storage fails stopping alone while the other completes (exit 1, naming it).
//!
//! Judged by exit codes, files on disk, rill's `rill: …` stderr lines and what the real peers report, never by
//! progress lines. Every process is bounded in time and killed by PID; tools are installed by `scripts/test`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::bencode::{self, Value};
use common::content::{self, assert_same_tree, is_empty_dir, KIB, MIB};
use common::leecher::spawn_rill_download_many;
use common::listeners::Listeners;
use common::peers::{describe_peers, wait_with_peers, LibtorrentPeer, Peer};
use common::seeding::{LtEncryption, LtLeechOptions, LtLeecher, RillPeer};
use common::torrent::{self, Torrent};
use common::tracker::{announce_url, Opentracker};
use common::{deadline_in, deadline_within, describe, rill_command, Proc, TempDir};

// ---------------------------------------------------------------------------------------------------------------
// Helpers

/// The `rill: …` lines of rill's stderr: its own messages (log records, when logging is on, look otherwise).
fn rill_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("rill: ")).collect()
}

/// Panics unless rill's stderr is free of panics and `rill: …` error lines.
#[track_caller]
fn assert_no_rill_errors(rill: &Proc) {
    let err = rill.stderr();
    assert!(!err.contains("panicked"), "rill panicked:\n{err}");
    let lines = rill_lines(&err);
    assert!(lines.is_empty(), "rill reported errors: {lines:#?}");
}

/// Waits (briefly: their counters lag the wire) until `seeder`'s own counters show it uploaded at least `bytes`.
#[track_caller]
fn assert_uploaded(seeder: &dyn Peer, bytes: u64, deadline: Instant) {
    wait_with_peers(
        &[],
        deadline_within(deadline, 10),
        &format!("{} to report {bytes} B uploaded ({})", seeder.name(), describe_peers(&[seeder])),
        || (seeder.uploaded_bytes() >= bytes).then_some(()),
    );
}

/// A copy of `t` at `path` with a `comment` added outside `info`: other bytes, the same info-hash.
fn same_info_other_file(t: &Torrent, path: &Path) -> Torrent {
    let mut meta = bencode::decode(&t.bytes).expect("the rig's torrent decodes");
    meta.set("comment", Value::str("the same torrent under another file name"));
    fs::write(path, meta.encode()).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    let copy = Torrent::load(path);
    assert_ne!(copy.bytes, t.bytes);
    assert_eq!(copy.info_hash, t.info_hash, "re-encoding changed the info dictionary");
    copy
}

// ---------------------------------------------------------------------------------------------------------------
// 1. One `rill download` fetches two torrents, each from its own seeder, both found through one tracker

/// A multi-file tree (made by libtorrent) and a single file (made by transmission-create), each seeded by its own
/// python3-libtorrent session; both announce to one opentracker, which is the only way rill learns of the seeders.
/// One `rill download A B` must fetch both (exit 0), byte-identical, each seeder having served its whole torrent.
#[test]
fn one_download_fetches_two_torrents_from_two_seeders_behind_one_tracker() {
    let deadline = deadline_in(60);
    let dir = TempDir::new("multi-download");
    let a = content::small_tree(&dir.mkdir("content"), "multi-tree", 0xA_0001);
    let b = content::write_single(&dir.join("content"), "multi-single.bin", 2 * MIB + 4_321, 0xB_0002);
    let port = Opentracker::reserve_port();
    let ta = torrent::libtorrent_create(&a, &announce_url(port), 64 * KIB, true, &dir.join("a.torrent"), deadline);
    let tb = torrent::transmission_create(&b, &announce_url(port), 64, &dir.join("b.torrent"), deadline);
    let tracker = Opentracker::start(dir.path(), port, &[ta.info_hash, tb.info_hash], deadline);

    let sa = LibtorrentPeer::seed(dir.path(), "seeder-a", &ta, &a.copy_to(&dir.mkdir("seed-a")), 0, deadline);
    let sb = LibtorrentPeer::seed(dir.path(), "seeder-b", &tb, &b.copy_to(&dir.mkdir("seed-b")), 0, deadline);
    tracker.wait_seeders(&ta.info_hash, 1, deadline);
    tracker.wait_seeders(&tb.info_hash, 1, deadline);

    let out = dir.mkdir("out");
    let started = Instant::now();
    let rill = spawn_rill_download_many(dir.path(), &[&ta, &tb], &out, &[], &[], deadline);
    let seeders: [&dyn Peer; 2] = [&sa, &sb];
    let status = wait_with_peers(&seeders, deadline, "rill download A B to exit", || rill.exited());
    let took = started.elapsed();
    assert!(status.success(), "rill download A B failed: {}", describe(status));

    assert_same_tree(&a.path(), &out.join(&ta.name));
    assert_same_tree(&b.path(), &out.join(&tb.name));
    assert_uploaded(&sa, a.total, deadline);
    assert_uploaded(&sb, b.total, deadline);
    assert_no_rill_errors(&rill);
    println!(
        "one rill download fetched {} + {} bytes from two seeders in {:.1} s; {}",
        a.total,
        b.total,
        took.as_secs_f64(),
        describe_peers(&seeders)
    );
}

// ---------------------------------------------------------------------------------------------------------------
// 2. One `rill seed` serves two torrents, the incoming handshakes routed by info-hash, plain and MSE

/// `rill seed B A` on one port; a libtorrent leecher with encryption disabled fetches B (plain BitTorrent
/// handshake), another that forces the MSE handshake fetches A (rill must find A among its torrents from the
/// obfuscated info-hash; a forced libtorrent gets nothing from a peer that answers only in plaintext). Neither
/// announces: rill is their only peer. Both copies byte-identical.
#[test]
fn one_seed_serves_two_torrents_to_a_plain_and_an_encrypted_leecher() {
    let deadline = deadline_in(60);
    let dir = TempDir::new("multi-seed");
    let data = dir.mkdir("rill-data");
    let a = content::small_tree(&data, "served-tree", 0x5EEDA);
    let b = content::write_single(&data, "served-single.bin", 2 * MIB + 777, 0x5EEDB);
    let port = Opentracker::reserve_port();
    let ta = torrent::libtorrent_create(&a, &announce_url(port), 64 * KIB, true, &dir.join("a.torrent"), deadline);
    let tb = torrent::transmission_create(&b, &announce_url(port), 64, &dir.join("b.torrent"), deadline);
    let _tracker = Opentracker::start(dir.path(), port, &[ta.info_hash, tb.info_hash], deadline);

    // B first: the MSE leecher's torrent is not the first one, so rill must try more than one info-hash against
    // the obfuscated one in the MSE handshake.
    let rill = RillPeer::seed_many(dir.path(), "rill", &[&tb, &ta], &data, &[], deadline);
    let only_rill = |encryption| LtLeechOptions {
        peers: vec![rill.addr()],
        no_tracker: true,
        encryption,
        ..LtLeechOptions::default()
    };
    let (out_a, out_b) = (dir.mkdir("out-a"), dir.mkdir("out-b"));
    let plain =
        LtLeecher::start(dir.path(), "leecher-b-plain", &tb, &out_b, &only_rill(LtEncryption::Disabled), deadline);
    let mse = LtLeecher::start(dir.path(), "leecher-a-mse", &ta, &out_a, &only_rill(LtEncryption::Forced), deadline);

    // Both run at once; awaited one after the other, so that a failure names the one that is stuck.
    let done_b = plain.wait_complete(&[&rill.proc], deadline);
    let done_a = mse.wait_complete(&[&rill.proc], deadline);
    assert_same_tree(&b.path(), &out_b.join(&tb.name));
    assert_same_tree(&a.path(), &out_a.join(&ta.name));
    for (who, s, total) in [("plain leecher of B", &done_b, b.total), ("MSE leecher of A", &done_a, a.total)] {
        assert!(
            s.had_only_rill() && s.downloaded >= total,
            "the {who} should have had every byte from rill and none from anyone else: {}",
            s.describe()
        );
    }

    let status = rill.interrupt(deadline_within(deadline, 15));
    assert!(status.success(), "rill seed B A did not exit 0 after SIGINT: {}", describe(status));
    assert_no_rill_errors(&rill.proc);
    println!("rill seed B A: plain leecher {}; MSE leecher {}", done_b.describe(), done_a.describe());
}

// ---------------------------------------------------------------------------------------------------------------
// 3. Bad input: exit 2, one line naming the file, nothing written, no network traffic

/// Pieces of 16 KiB with made-up hashes: enough for rill to load the torrent, never to verify a byte.
const PIECE: u64 = 16 * KIB;

/// A torrent whose content is `name` alone (a single file of `Err(len)` bytes) or the folder `name` holding
/// `Ok(files)`, announcing to `trackers` (one tier each).
fn made_up_torrent(name: &str, layout: Result<&[(&str, u64)], u64>, trackers: &[String]) -> Vec<u8> {
    let total = match layout {
        Ok(files) => files.iter().map(|f| f.1).sum(),
        Err(len) => len,
    };
    let pieces = total.div_ceil(PIECE) as usize;
    let hashes: Vec<u8> = (0..pieces * 20).map(|i| (i as u8).wrapping_mul(31) ^ name.len() as u8).collect();
    let mut info = Value::dict(vec![
        ("name", Value::str(name)),
        ("piece length", Value::int(PIECE as i64)),
        ("pieces", Value::Bytes(hashes)),
    ]);
    match layout {
        Ok(files) => info.set(
            "files",
            Value::List(
                files
                    .iter()
                    .map(|(path, len)| {
                        Value::dict(vec![
                            ("length", Value::int(*len as i64)),
                            ("path", Value::List(path.split('/').map(Value::str).collect())),
                        ])
                    })
                    .collect(),
            ),
        ),
        Err(len) => info.set("length", Value::int(len as i64)),
    }
    Value::dict(vec![
        ("announce", Value::str(&trackers[0])),
        ("announce-list", Value::List(trackers.iter().map(|t| Value::List(vec![Value::str(t)])).collect())),
        ("info", info),
    ])
    .encode()
}

/// Writes `bytes` to `dir/file` and returns the path.
fn write_torrent(dir: &Path, file: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(file);
    fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// Runs `rill SUB TORRENTS… -d OUT --no-ui --port 0 --peer LISTENER` (logging off: stderr holds only rill's own
/// messages) and asserts it refused the input: exit 2, one stderr line `rill: …` naming every one of `names`, `out`
/// still empty, and nothing reached the listeners.
#[track_caller]
fn assert_refused(dir: &Path, label: &str, sub: &str, torrents: &[&Path], names: &[&str], net: &Listeners) {
    let out = dir.join(format!("out-{label}"));
    fs::create_dir_all(&out).expect("create out");
    let mut cmd = rill_command();
    cmd.arg(sub).args(torrents).arg("-d").arg(&out).args(["--no-ui", "--port", "0", "--peer"]);
    cmd.arg(net.peer_addr()).env_remove("RUST_LOG");
    let rill = Proc::spawn(label, &cmd, &dir.join("logs"), Duration::from_secs(25));
    let status = rill.wait_exit(deadline_in(20));
    let err = rill.stderr();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    let context = format!("{label}: rill {sub} {torrents:?}");
    assert_eq!(status.code(), Some(2), "{context}: expected exit 2, got {}; stderr: {err:?}", describe(status));
    assert_eq!(lines.len(), 1, "{context}: expected one line on stderr, got {err:?}");
    assert!(lines[0].starts_with("rill: "), "{context}: the line should start with `rill: `: {err:?}");
    for name in names {
        assert!(lines[0].contains(name), "{context}: the error should name {name}: {err:?}");
    }
    assert!(is_empty_dir(&out), "{context}: wrote into {}: {:?}", out.display(), content::list_files(&out));
    let traffic = net.traffic();
    assert!(traffic.is_empty(), "{context}: network traffic before refusing the input: {traffic:#?}");
}

/// A truncated torrent given before, between and after two good ones, to `rill download` and to `rill seed` (whose
/// DIR holds no data, so checking a good torrent before reading the bad one would fail differently): refused
/// before anything else happens.
#[test]
fn a_malformed_torrent_among_good_ones_is_refused_before_any_traffic() {
    let deadline = deadline_in(50);
    let dir = TempDir::new("multi-malformed");
    let net = Listeners::start();
    let trackers = net.announce_list();
    let tree: &[(&str, u64)] = &[("one.bin", 40_000), ("sub/two.bin", 9_000)];
    let good_a = write_torrent(dir.path(), "good-a.torrent", &made_up_torrent("good-tree", Ok(tree), &trackers));
    let good_b =
        write_torrent(dir.path(), "good-b.torrent", &made_up_torrent("good-single.bin", Err(70_001), &trackers));
    let whole = fs::read(&good_b).expect("read good-b");
    let bad = write_torrent(dir.path(), "broken.torrent", &whole[..whole.len() / 2]);

    for (label, order) in
        [("first", [&bad, &good_a, &good_b]), ("middle", [&good_a, &bad, &good_b]), ("last", [&good_a, &good_b, &bad])]
    {
        let order: Vec<&Path> = order.iter().map(|p| p.as_path()).collect();
        for sub in ["download", "seed"] {
            assert_refused(dir.path(), &format!("malformed-{label}-{sub}"), sub, &order, &["broken.torrent"], &net);
        }
    }
    net.assert_rill_would_be_seen(dir.path(), &good_a, deadline);
}

/// Two different torrents that would write the same file under DIR (two single files of one name; two trees of one
/// name sharing one file path), with a third, harmless torrent between them: refused, naming both files.
#[test]
fn torrents_whose_files_overlap_on_disk_are_refused_before_any_traffic() {
    let deadline = deadline_in(50);
    let dir = TempDir::new("multi-overlap");
    let net = Listeners::start();
    let trackers = net.announce_list();
    let bystander =
        write_torrent(dir.path(), "bystander.torrent", &made_up_torrent("bystander.bin", Err(20_000), &trackers));

    // The same single file name, other sizes (so other info-hashes).
    let single_a = write_torrent(dir.path(), "single-a.torrent", &made_up_torrent("same.bin", Err(40_000), &trackers));
    let single_b = write_torrent(dir.path(), "single-b.torrent", &made_up_torrent("same.bin", Err(50_000), &trackers));
    // One folder name; `shared/x.bin` is in both, every other file in one only.
    let tree_a: &[(&str, u64)] = &[("only-a.bin", 10_000), ("x.bin", 30_000)];
    let tree_b: &[(&str, u64)] = &[("sub/only-b.bin", 5_000), ("x.bin", 20_000)];
    let trees_a = write_torrent(dir.path(), "tree-a.torrent", &made_up_torrent("shared", Ok(tree_a), &trackers));
    let trees_b = write_torrent(dir.path(), "tree-b.torrent", &made_up_torrent("shared", Ok(tree_b), &trackers));

    for (label, a, b) in [("single", &single_a, &single_b), ("tree", &trees_a, &trees_b)] {
        let names = [a, b].map(|p| p.file_name().and_then(|n| n.to_str()).expect("a file name"));
        let order = [a.as_path(), bystander.as_path(), b.as_path()];
        assert_refused(dir.path(), &format!("overlap-{label}-download"), "download", &order, &names, &net);
        assert_refused(dir.path(), &format!("overlap-{label}-seed"), "seed", &order, &names, &net);
    }
    net.assert_rill_would_be_seen(dir.path(), &single_a, deadline);
}

/// A single-file torrent named `thing` and a multi-file one whose folder is `thing`: DIR/thing cannot be both a
/// file and a folder, so these overlap on disk too.
#[test]
fn a_file_and_a_folder_at_the_same_path_overlap() {
    let deadline = deadline_in(40);
    let dir = TempDir::new("multi-overlap-kind");
    let net = Listeners::start();
    let trackers = net.announce_list();
    let file = write_torrent(dir.path(), "as-file.torrent", &made_up_torrent("thing", Err(30_000), &trackers));
    let inner: &[(&str, u64)] = &[("inner.bin", 30_000)];
    let folder = write_torrent(dir.path(), "as-folder.torrent", &made_up_torrent("thing", Ok(inner), &trackers));
    let names = ["as-file.torrent", "as-folder.torrent"];
    assert_refused(dir.path(), "kind-download", "download", &[&file, &folder], &names, &net);
    assert_refused(dir.path(), "kind-seed", "seed", &[&folder, &file], &names, &net);
    net.assert_rill_would_be_seen(dir.path(), &file, deadline);
}

// ---------------------------------------------------------------------------------------------------------------
// 4. The same torrent twice

/// `first.torrent` and `again.torrent` hold the same info dictionary (the second has a comment added): rill loads
/// it once, says so in one `rill: …` line naming both files, and completes the download (exit 0).
#[test]
fn the_same_torrent_given_twice_is_loaded_once_and_completes() {
    let deadline = deadline_in(50);
    let dir = TempDir::new("multi-twice");
    let c = content::write_single(&dir.mkdir("content"), "twice.bin", 2 * MIB + 99, 0x7_1CE);
    let (t, tracker) = Opentracker::with_torrent(dir.path(), deadline, |announce| {
        torrent::transmission_create(&c, announce, 64, &dir.join("first.torrent"), deadline)
    });
    let again = same_info_other_file(&t, &dir.join("again.torrent"));
    let seeder = LibtorrentPeer::seed(dir.path(), "seeder", &t, &c.copy_to(&dir.mkdir("seed")), 0, deadline);
    tracker.wait_seeders(&t.info_hash, 1, deadline);

    let out = dir.mkdir("out");
    let rill = spawn_rill_download_many(dir.path(), &[&t, &again], &out, &[], &[], deadline);
    let status = wait_with_peers(&[&seeder], deadline, "rill download T T' to exit", || rill.exited());
    let err = rill.stderr();
    assert!(status.success(), "rill download with the same torrent twice failed: {}", describe(status));
    assert!(!err.contains("panicked"), "rill panicked:\n{err}");
    assert_same_tree(&c.path(), &out.join(&t.name));

    let notes = rill_lines(&err);
    assert_eq!(notes.len(), 1, "expected one `rill: …` note about the duplicate, got {notes:#?}");
    for name in ["first.torrent", "again.torrent"] {
        assert!(notes[0].contains(name), "the note should name {name}: {:?}", notes[0]);
    }
    println!("the same torrent twice: {:?}", notes[0]);
}

// ---------------------------------------------------------------------------------------------------------------
// 5. One torrent's storage fails; the other completes

/// Two torrents, each with its own libtorrent seeder behind one opentracker. A regular file already sits where the
/// first one's folder (DIR/<name>) must go, so its storage fails; the second, from a seeder throttled so that it
/// is still running when the first fails, must complete byte-identical. rill exits 1 and names the failed torrent,
/// whose blocking file it leaves alone.
#[test]
fn a_torrent_whose_storage_fails_leaves_the_other_running() {
    let deadline = deadline_in(60);
    let dir = TempDir::new("multi-storage-fails");
    let a = content::small_tree(&dir.mkdir("content"), "blocked-tree", 0xB10C);
    let b = content::write_single(&dir.join("content"), "keeps-going.bin", 3 * MIB + 5, 0x60_60);
    let port = Opentracker::reserve_port();
    let ta = torrent::libtorrent_create(&a, &announce_url(port), 64 * KIB, true, &dir.join("a.torrent"), deadline);
    let tb = torrent::transmission_create(&b, &announce_url(port), 64, &dir.join("b.torrent"), deadline);
    let tracker = Opentracker::start(dir.path(), port, &[ta.info_hash, tb.info_hash], deadline);

    let sa = LibtorrentPeer::seed(dir.path(), "seeder-a", &ta, &a.copy_to(&dir.mkdir("seed-a")), 0, deadline);
    let sb = LibtorrentPeer::seed(dir.path(), "seeder-b", &tb, &b.copy_to(&dir.mkdir("seed-b")), MIB, deadline);
    tracker.wait_seeders(&ta.info_hash, 1, deadline);
    tracker.wait_seeders(&tb.info_hash, 1, deadline);

    let out = dir.mkdir("out");
    let blocker = out.join(&ta.name);
    fs::write(&blocker, b"a regular file where a folder must go\n").expect("write the blocking file");

    let rill = spawn_rill_download_many(dir.path(), &[&ta, &tb], &out, &[], &[], deadline);
    let seeders: [&dyn Peer; 2] = [&sa, &sb];
    let status = wait_with_peers(&seeders, deadline, "rill download A B to exit", || rill.exited());
    let err = rill.stderr();
    assert!(!err.contains("panicked"), "rill panicked:\n{err}");
    assert_eq!(status.code(), Some(1), "expected exit 1 (one torrent failed), got {}", describe(status));

    assert_same_tree(&b.path(), &out.join(&tb.name));
    assert_uploaded(&sb, b.total, deadline);
    assert_eq!(fs::read(&blocker).ok().as_deref(), Some(&b"a regular file where a folder must go\n"[..]));
    let errors = rill_lines(&err);
    assert!(
        errors.iter().any(|l| l.contains(&ta.name)),
        "stderr should name the failed torrent {:?} in a `rill: …` line; got {errors:#?}",
        ta.name
    );
    assert!(
        !errors.iter().any(|l| l.contains(&tb.name)),
        "the torrent that completed ({:?}) should not be reported as failed: {errors:#?}",
        tb.name
    );
    println!("one torrent's storage failed ({errors:?}); the other completed: {}", describe_peers(&seeders));
}
