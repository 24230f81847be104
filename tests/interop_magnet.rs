//! Magnet links (issue 11) against real software on loopback: rill starts from a magnet link alone and fetches the
//! info dictionary (BEP 9, ut_metadata) from real seeders found through the link's `tr` tracker (python3-libtorrent,
//! qbittorrent-nox and transmission-daemon at once) or through its `x.pe` peer address; real leechers (libtorrent,
//! aria2c) given only a magnet link fetch the metadata and the data from `rill seed` alone; `--save-torrent` writes a
//! .torrent with the original info bytes that libtorrent accepts; a restarted download finds the saved metadata
//! beside its resume file; malformed links are refused (exit 2, one line) before any network traffic; and the time
//! from start to metadata is measured for rill and for libtorrent on the same link.
//!
//! Judged by exit codes, files on disk (byte-identical trees), the peers' own counters and rill's `metadata:` and
//! `rill: …` lines. Every process is bounded in time and killed by PID; tools are installed by `scripts/test`.

mod common;

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::bencode::{self, Value};
use common::content::{self, assert_same_tree, is_empty_dir, Content, KIB, MIB};
use common::listeners::Listeners;
use common::peers::{describe_peers, wait_with_peers, LibtorrentPeer, LtSource, Peer, Qbittorrent, TransmissionDaemon};
use common::resume::already_here;
use common::seeding::{LtLeechOptions, LtLeecher, RillPeer};
use common::torrent::{self, Torrent};
use common::tracker::{announce_url, Opentracker};
use common::{
    deadline_in, deadline_within, describe, free_port, lifetime_until, mkdir, require_tool, rill_command, wait_for,
    Proc, TempDir,
};

/// Only ever `false` in a commit. `true` checks the rig itself with a rill that cannot read magnet links: rill is
/// given the .torrent (with the magnet's `x.pe` peers as `--peer`) instead of the link, a python3-libtorrent seeder
/// stands in for `rill seed`, the bad-input control runs a .torrent, and the checks of what only a magnet run
/// produces (the `metadata:` line, the saved metadata) are left out.
const RIG_CHECK: bool = false;

// ---------------------------------------------------------------------------------------------------------------
// Helpers

/// `magnet:?xt=urn:btih:HEX[&dn=NAME][&tr=URL]…[&x.pe=ADDR]…`, values percent-encoded.
fn magnet_link(info_hash: &[u8; 20], name: Option<&str>, trackers: &[String], peers: &[String]) -> String {
    let mut link = format!("magnet:?xt=urn:btih:{}", bencode::hex(info_hash));
    if let Some(name) = name {
        link.push_str(&format!("&dn={}", bencode::percent_encode(name.as_bytes())));
    }
    for t in trackers {
        link.push_str(&format!("&tr={}", bencode::percent_encode(t.as_bytes())));
    }
    for p in peers {
        link.push_str(&format!("&x.pe={p}"));
    }
    link
}

/// What rill is given on its command line for `link` (see [`RIG_CHECK`]).
fn given(link: &str, t: &Torrent, peers: &[String]) -> Vec<OsString> {
    if RIG_CHECK {
        let mut args = vec![t.path.clone().into_os_string()];
        for p in peers {
            args.push("--peer".into());
            args.push(p.into());
        }
        args
    } else {
        vec![link.into()]
    }
}

/// `rill download SOURCE… -d OUT --no-ui --port FREE [extra…]` as process `name`.
fn spawn_rill_download(
    dir: &Path,
    name: &str,
    source: &[OsString],
    out: &Path,
    extra: &[&OsStr],
    deadline: Instant,
) -> Proc {
    mkdir(out);
    let mut cmd = rill_command();
    cmd.arg("download").args(source).arg("-d").arg(out).arg("--no-ui");
    cmd.arg("--port").arg(free_port().to_string()).args(extra);
    cmd.env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
    Proc::spawn(name, &cmd, &dir.join("logs"), lifetime_until(deadline))
}

/// rill's `metadata: NAME, SIZE in N files, from K peers in T s` line.
fn metadata_line(stdout: &str) -> Option<&str> {
    stdout.lines().map(str::trim).find(|l| l.starts_with("metadata: "))
}

/// The number just before `word` in `line` (`"in 4 files"` → 4 for `files`).
fn number_before(line: &str, word: &str) -> Option<f64> {
    let words: Vec<&str> = line.split(|c: char| c.is_whitespace() || c == ',').filter(|w| !w.is_empty()).collect();
    words.windows(2).find(|w| w[1] == word).and_then(|w| w[0].parse().ok())
}

/// Files in a torrent's info dictionary, BEP 47 padding files left out (1 for a single-file torrent).
fn file_count(t: &Torrent) -> u64 {
    let meta = bencode::decode(&t.bytes).expect("the rig's torrent decodes");
    let info = meta.get("info").expect("info");
    match info.get("files").and_then(Value::as_list) {
        Some(files) => {
            files.iter().filter(|f| !f.get("attr").and_then(Value::as_str).is_some_and(|a| a.contains('p'))).count()
                as u64
        }
        None => 1,
    }
}

/// rill fetched the metadata of `t` and said so: a `metadata:` line naming the torrent, its file count and at least
/// one peer. Nothing to check in a rig check (rill had the .torrent).
#[track_caller]
fn assert_metadata_line(rill: &Proc, t: &Torrent) {
    if RIG_CHECK {
        return;
    }
    let stdout = rill.stdout();
    let line = metadata_line(&stdout).unwrap_or_else(|| panic!("no `metadata: …` line in rill's output:\n{stdout}"));
    assert!(line.contains(&t.name), "the metadata line should name {:?}: {line:?}", t.name);
    assert_eq!(number_before(line, "files"), Some(file_count(t) as f64), "file count in {line:?}");
    let peers = number_before(line, "peers").or_else(|| number_before(line, "peer"));
    assert!(peers.is_some_and(|k| k >= 1.0), "the metadata line should say from how many peers: {line:?}");
}

/// Panics unless rill's stderr is free of panics and `rill: …` error lines.
#[track_caller]
fn assert_no_rill_errors(rill: &Proc) {
    let err = rill.stderr();
    assert!(!err.contains("panicked"), "rill panicked:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("rill: ")).collect();
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

/// A tree of 400 small files with long names: its info dictionary is over 16 KiB, so the metadata travels in
/// several ut_metadata pieces.
fn many_files_tree(parent: &Path, name: &str, seed: u64) -> Content {
    let names: Vec<(String, u64)> = (0..400u64)
        .map(|i| (format!("folder-{:02}/a-file-with-a-rather-long-name-{i:03}.bin", i % 20), 1_000 + (i * 37) % 3_000))
        .collect();
    let files: Vec<(&str, u64)> = names.iter().map(|(n, l)| (n.as_str(), *l)).collect();
    content::write_tree(parent, name, &files, seed)
}

/// The `info` bytes of a .torrent, as they stand in the file.
fn info_bytes(torrent: &[u8]) -> &[u8] {
    &torrent[bencode::info_span(torrent).expect("an info dictionary")]
}

/// A port on which nothing listens: a tracker URL that fails, or a seeder that is gone.
fn dead_announce_url() -> String {
    announce_url(free_port())
}

/// A libtorrent seeder of `t` from a copy of `content`, which announces to `t`'s tracker (if anything listens there).
fn lt_seeder(dir: &Path, name: &str, t: &Torrent, content: &Content, limit: u64, deadline: Instant) -> LibtorrentPeer {
    LibtorrentPeer::seed(dir, name, t, &content.copy_to(&dir.join(format!("{name}-data"))), limit, deadline)
}

// ---------------------------------------------------------------------------------------------------------------
// 1. A magnet with a tracker, seeded by three different real clients

/// Each seeder of test 1 is throttled to this many bytes per second, so that no two of them could serve the
/// ~8 MiB quickly: libtorrent and qBittorrent together need about 17 s, and Transmission 3.00 (which unchokes a new
/// peer only at its next rechoke, up to 10 s after it said `interested`) is let in while the download still runs.
const THROTTLE: u64 = 250_000;

/// A multi-file torrent (made by libtorrent, v1) tracked by opentracker and seeded by python3-libtorrent,
/// qbittorrent-nox and transmission-daemon, each throttled. rill is given only `magnet:?xt=…&dn=…&tr=OPENTRACKER`:
/// it must find the seeders through the tracker, fetch the metadata from them, and download from all three. Exit 0,
/// byte-identical, every seeder's own counter shows payload sent.
#[test]
fn magnet_with_a_tracker_downloads_from_libtorrent_qbittorrent_and_transmission() {
    let deadline = deadline_in(100);
    let dir = TempDir::new("magnet-tracker");
    let files: &[(&str, u64)] = &[
        ("first.bin", 3 * MIB + 1_234),
        ("sub/second.bin", 2 * MIB + 77),
        ("sub/deeper/third.bin", 3 * MIB - 5_000),
        ("zero-length", 0),
    ];
    let c = content::write_tree(&dir.mkdir("content"), "magnet-tree", files, 0x3A6_0001);
    let (t, tracker) = Opentracker::with_torrent(dir.path(), deadline, |announce| {
        torrent::libtorrent_create(&c, announce, 64 * KIB, true, &dir.join("t.torrent"), deadline)
    });
    assert!(!t.has_padding);

    let lt = lt_seeder(dir.path(), "libtorrent", &t, &c, THROTTLE, deadline);
    let qb =
        Qbittorrent::seed(dir.path(), "qbittorrent", &t, &c.copy_to(&dir.mkdir("qb-data")), Some(THROTTLE), deadline);
    let kb = (THROTTLE / 1000) as u32;
    let tr =
        TransmissionDaemon::seed(dir.path(), "transmission", &t, &c.copy_to(&dir.mkdir("tr-data")), Some(kb), deadline);
    tracker.wait_seeders(&t.info_hash, 3, deadline);

    let link = magnet_link(&t.info_hash, Some(&t.name), &[tracker.announce_url()], &[]);
    let out = dir.join("out");
    let started = Instant::now();
    let rill = spawn_rill_download(dir.path(), "rill", &given(&link, &t, &[]), &out, &[], deadline);
    let seeders: [&dyn Peer; 3] = [&lt, &qb, &tr];
    let status = wait_with_peers(&seeders, deadline, "rill download MAGNET to exit", || rill.exited());
    let took = started.elapsed();
    assert!(status.success(), "rill download {link} failed: {}", describe(status));

    assert_same_tree(&c.path(), &out.join(&t.name));
    assert_metadata_line(&rill, &t);
    for s in seeders {
        assert_uploaded(s, 1, deadline);
    }
    assert_no_rill_errors(&rill);
    println!(
        "magnet with a tracker: {} bytes in {:.1} s from three seeders; {}; {:?}",
        c.total,
        took.as_secs_f64(),
        describe_peers(&seeders),
        metadata_line(&rill.stdout())
    );
}

// ---------------------------------------------------------------------------------------------------------------
// 2. A magnet with only a peer address

/// `magnet:?xt=…&x.pe=127.0.0.1:PORT` and nothing else: no tracker, no name. The one libtorrent seeder is reachable
/// only through that address. Its info dictionary is over 16 KiB (400 files), so the metadata comes in several
/// pieces. Exit 0, byte-identical, all of it from that seeder.
#[test]
fn magnet_with_only_a_peer_address() {
    let deadline = deadline_in(60);
    let dir = TempDir::new("magnet-xpe");
    let c = many_files_tree(&dir.mkdir("content"), "many-files", 0x3A6_0002);
    let t = torrent::libtorrent_create(&c, &dead_announce_url(), 16 * KIB, true, &dir.join("t.torrent"), deadline);
    assert!(info_bytes(&t.bytes).len() > 16 * KIB as usize, "the metadata should need several pieces");
    let seeder = lt_seeder(dir.path(), "libtorrent", &t, &c, 0, deadline);

    let link = magnet_link(&t.info_hash, None, &[], &[seeder.addr()]);
    assert!(!link.contains("tr=") && !link.contains("dn="));
    let out = dir.join("out");
    let rill = spawn_rill_download(dir.path(), "rill", &given(&link, &t, &[seeder.addr()]), &out, &[], deadline);
    let status = wait_with_peers(&[&seeder], deadline, "rill download MAGNET to exit", || rill.exited());
    assert!(status.success(), "rill download {link} failed: {}", describe(status));

    assert_same_tree(&c.path(), &out.join(&t.name));
    assert_metadata_line(&rill, &t);
    assert_uploaded(&seeder, c.total, deadline);
    assert_no_rill_errors(&rill);
    println!("magnet with only x.pe: {} files, {:?}", c.files.len(), metadata_line(&rill.stdout()));
}

// ---------------------------------------------------------------------------------------------------------------
// 3. Real leechers given only a magnet fetch everything from `rill seed`

/// The seeder under test: `rill seed X.torrent`, or (in a rig check) a libtorrent seeder in its place.
enum Seeder {
    Rill(RillPeer),
    Libtorrent(LibtorrentPeer),
}

impl Seeder {
    #[track_caller]
    fn start(dir: &Path, t: &Torrent, c: &Content, deadline: Instant) -> Seeder {
        if RIG_CHECK {
            Seeder::Libtorrent(lt_seeder(dir, "libtorrent-stand-in", t, c, 0, deadline))
        } else {
            let data = c.copy_to(&dir.join("rill-data"));
            Seeder::Rill(RillPeer::seed(dir, "rill", t, &data, &[], deadline))
        }
    }

    fn addr(&self) -> String {
        match self {
            Seeder::Rill(r) => r.addr(),
            Seeder::Libtorrent(l) => l.addr(),
        }
    }

    fn proc(&self) -> &Proc {
        match self {
            Seeder::Rill(r) => &r.proc,
            Seeder::Libtorrent(l) => l.proc(),
        }
    }
}

/// `rill seed X.torrent`; a python3-libtorrent leecher given only `magnet:?xt=…&dn=…&x.pe=RILL` (it never announces)
/// fetches the metadata and every byte from rill: every peer it ever exchanged handshakes with was rill.
#[test]
fn libtorrent_given_a_magnet_fetches_everything_from_rill_seed() {
    let deadline = deadline_in(60);
    let dir = TempDir::new("magnet-lt-from-rill");
    let c = many_files_tree(&dir.mkdir("content"), "served-many", 0x3A6_0003);
    let t = torrent::libtorrent_create(&c, &dead_announce_url(), 16 * KIB, true, &dir.join("t.torrent"), deadline);
    let seeder = Seeder::start(dir.path(), &t, &c, deadline);

    let link = magnet_link(&t.info_hash, Some(&t.name), &[], &[seeder.addr()]);
    let out = dir.mkdir("out");
    let opts = LtLeechOptions { no_tracker: true, ..LtLeechOptions::default() };
    let lt = LtLeecher::start_from(dir.path(), "libtorrent-leecher", LtSource::Magnet(&link), &out, &opts, deadline);
    let got = lt.wait_snapshot(&[seeder.proc()], deadline_within(deadline, 20), "the metadata", |s| s.has_metadata);
    let done = lt.wait_complete(&[seeder.proc()], deadline);

    assert_same_tree(&c.path(), &out.join(&t.name));
    assert!(done.has_metadata && done.metadata_at.is_some(), "{}", done.describe());
    assert!(done.downloaded >= c.total, "downloaded less than the content: {}", done.describe());
    if let Seeder::Rill(rill) = &seeder {
        assert!(done.had_only_rill(), "the leecher should have had everything from rill alone: {}", done.describe());
        assert_no_rill_errors(&rill.proc);
    }
    println!(
        "libtorrent given a magnet, from rill seed: metadata after {:?} s ({:.1} s after start); {}",
        done.metadata_at,
        got.elapsed,
        done.describe()
    );
}

/// `rill seed X.torrent` announcing to opentracker, the only seeder there; aria2c given only
/// `magnet:?xt=…&dn=…&tr=OPENTRACKER` (aria2c ignores `x.pe`, and has no DHT here) with `--bt-metadata-only=false`
/// fetches the metadata and the data from rill and exits 0 with a byte-identical copy.
#[test]
fn aria2c_given_a_magnet_fetches_everything_from_rill_seed() {
    let deadline = deadline_in(60);
    let dir = TempDir::new("magnet-aria2-from-rill");
    let c = content::small_tree(&dir.mkdir("content"), "served-tree", 0x3A6_0004);
    let (t, tracker) = Opentracker::with_torrent(dir.path(), deadline, |announce| {
        torrent::libtorrent_create(&c, announce, 64 * KIB, true, &dir.join("t.torrent"), deadline)
    });
    let seeder = Seeder::start(dir.path(), &t, &c, deadline);
    tracker.wait_seeders(&t.info_hash, 1, deadline);
    let seeding = tracker.scrape(&t.info_hash).map(|s| s.0);
    assert_eq!(seeding, Some(1), "the seeder under test should be the only one the tracker knows");

    let link = magnet_link(&t.info_hash, Some(&t.name), &[tracker.announce_url()], &[]);
    let out = dir.mkdir("out");
    let aria = aria2c_magnet_leecher(dir.path(), "aria2c-leecher", &link, &out, deadline);
    let status = wait_for(deadline, "aria2c to finish its download (it exits when done)", || {
        seeder.proc().assert_running();
        aria.exited()
    });
    assert!(status.success(), "aria2c given {link} failed: {}", describe(status));
    assert_same_tree(&c.path(), &out.join(&t.name));
    if let Seeder::Rill(rill) = &seeder {
        assert_no_rill_errors(&rill.proc);
    }
}

/// aria2c downloading `link` into `out` and exiting when done (`--seed-time=0`); HTTP trackers only (no DHT, LPD or
/// PEX), bound to 127.0.0.1.
fn aria2c_magnet_leecher(dir: &Path, name: &str, link: &str, out: &Path, deadline: Instant) -> Proc {
    require_tool("aria2c", "aria2");
    let home = mkdir(&dir.join(name));
    let mut cmd = Command::new("aria2c");
    cmd.current_dir(&home)
        .arg("--no-conf=true")
        .arg(format!("--dir={}", out.display()))
        .arg(format!("--listen-port={}", free_port()))
        .arg("--interface=127.0.0.1")
        .arg("--disable-ipv6=true")
        .arg("--enable-dht=false")
        .arg("--enable-dht6=false")
        .arg("--bt-enable-lpd=false")
        .arg("--enable-peer-exchange=false")
        .arg("--enable-rpc=false")
        .arg(format!("--stop-with-process={}", std::process::id()))
        .arg("--bt-metadata-only=false")
        .arg("--bt-save-metadata=false")
        .arg("--seed-time=0")
        .arg("--file-allocation=none")
        .arg("--allow-overwrite=false")
        .arg("--auto-file-renaming=false")
        .arg("--summary-interval=0")
        .arg("--show-console-readout=false")
        .arg("--console-log-level=notice")
        .arg("--log=aria2.log")
        .arg("--log-level=info")
        .arg(link);
    Proc::spawn(name, &cmd, &dir.join("logs"), lifetime_until(deadline))
}

// ---------------------------------------------------------------------------------------------------------------
// 4. --save-torrent

/// `rill download MAGNET --save-torrent FILE` (metadata over 16 KiB, two trackers in the link, one HTTP and one UDP,
/// where nothing answers, and the seeder's `x.pe`): FILE parses, its info bytes are the original torrent's verbatim
/// (so its info-hash is the magnet's), it carries the magnet's trackers in order, and libtorrent accepts it: given
/// FILE and rill's download, it checks the data and seeds.
#[test]
fn save_torrent_writes_the_original_info_and_libtorrent_accepts_it() {
    let deadline = deadline_in(60);
    let dir = TempDir::new("magnet-save-torrent");
    let c = many_files_tree(&dir.mkdir("content"), "saved-many", 0x3A6_0005);
    let t = torrent::libtorrent_create(&c, &dead_announce_url(), 16 * KIB, true, &dir.join("t.torrent"), deadline);
    assert!(info_bytes(&t.bytes).len() > 16 * KIB as usize, "the metadata should need several pieces");
    let seeder = lt_seeder(dir.path(), "libtorrent", &t, &c, 0, deadline);

    let trackers = [dead_announce_url(), format!("udp://127.0.0.1:{}/announce", free_port())];
    let link = magnet_link(&t.info_hash, Some(&t.name), &trackers, &[seeder.addr()]);
    let saved = dir.join("saved.torrent");
    let out = dir.join("out");
    let extra: Vec<&OsStr> = if RIG_CHECK { vec![] } else { vec!["--save-torrent".as_ref(), saved.as_os_str()] };
    let rill = spawn_rill_download(dir.path(), "rill", &given(&link, &t, &[seeder.addr()]), &out, &extra, deadline);
    let status = wait_with_peers(&[&seeder], deadline, "rill download MAGNET --save-torrent to exit", || rill.exited());
    assert!(status.success(), "rill download {link} --save-torrent failed: {}", describe(status));
    assert_same_tree(&c.path(), &out.join(&t.name));
    if RIG_CHECK {
        write_as_rill_should(&t, &trackers, &saved);
    }

    let bytes = fs::read(&saved).unwrap_or_else(|e| panic!("--save-torrent wrote no {}: {e}", saved.display()));
    let meta = bencode::decode(&bytes).unwrap_or_else(|e| panic!("{} is not bencode: {e}", saved.display()));
    assert_eq!(bencode::info_hash(&bytes), t.info_hash, "the saved torrent's info-hash is not the magnet's");
    assert!(info_bytes(&bytes) == info_bytes(&t.bytes), "the saved info bytes differ from the original's");
    let announce: Vec<String> = meta
        .get("announce-list")
        .and_then(Value::as_list)
        .unwrap_or_default()
        .iter()
        .flat_map(|tier| tier.as_list().unwrap_or_default().iter().filter_map(Value::as_str).map(String::from))
        .collect();
    assert_eq!(
        announce, trackers,
        "the saved torrent's announce-list should hold the magnet's trackers, each its own tier, in order"
    );

    // libtorrent loads it and finds rill's download complete and correct.
    let loaded = Torrent::load(&saved);
    let check = LibtorrentPeer::seed(dir.path(), "libtorrent-check", &loaded, &out, 0, deadline);
    check.proc().assert_running();
    assert_no_rill_errors(&rill);
}

/// The rig check's stand-in for `--save-torrent`: the original info bytes with the magnet's trackers.
fn write_as_rill_should(t: &Torrent, trackers: &[String], path: &Path) {
    let mut meta = bencode::decode(&t.bytes).expect("the rig's torrent decodes");
    meta.set("announce", Value::str(&trackers[0]));
    meta.set("announce-list", Value::List(trackers.iter().map(|u| Value::List(vec![Value::str(u)])).collect()));
    fs::write(path, meta.encode()).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

// ---------------------------------------------------------------------------------------------------------------
// 5. Resume from the saved metadata

/// A complete `rill download MAGNET -d DIR` from a libtorrent seeder (its only peer, through `x.pe`) leaves the
/// metadata beside the resume file (`DIR/.rill-<hash>.torrent`, the original info bytes). The seeder is then
/// stopped, so nothing can be fetched from anyone: the same command again must use the saved metadata, say that
/// every piece is already here, fetch no metadata, and exit 0 with the data unchanged.
#[test]
fn a_restarted_magnet_download_uses_the_saved_metadata() {
    let deadline = deadline_in(60);
    let dir = TempDir::new("magnet-resume");
    let c = content::small_tree(&dir.mkdir("content"), "resumed-tree", 0x3A6_0006);
    let t = torrent::libtorrent_create(&c, &dead_announce_url(), 64 * KIB, true, &dir.join("t.torrent"), deadline);
    let seeder = lt_seeder(dir.path(), "libtorrent", &t, &c, 0, deadline);
    let link = magnet_link(&t.info_hash, Some(&t.name), &[], &[seeder.addr()]);
    let source = given(&link, &t, &[seeder.addr()]);
    let out = dir.join("out");

    let first = spawn_rill_download(dir.path(), "rill-1", &source, &out, &[], deadline);
    let status = wait_with_peers(&[&seeder], deadline, "the first rill download to exit", || first.exited());
    assert!(status.success(), "the first rill download {link} failed: {}", describe(status));
    assert_same_tree(&c.path(), &out.join(&t.name));
    assert_metadata_line(&first, &t);
    let kept = out.join(format!(".rill-{}.torrent", t.hex_hash()));
    if !RIG_CHECK {
        let bytes = fs::read(&kept).unwrap_or_else(|e| panic!("no metadata kept at {}: {e}", kept.display()));
        assert!(info_bytes(&bytes) == info_bytes(&t.bytes), "{} holds other info bytes", kept.display());
    }
    seeder.proc().kill();

    let second = spawn_rill_download(dir.path(), "rill-2", &source, &out, &[], deadline);
    let status = second.wait_exit(deadline_within(deadline, 30));
    let stdout = second.stdout();
    assert!(status.success(), "the second rill download {link} failed: {}\n{stdout}", describe(status));
    assert!(!stdout.contains("fetching metadata"), "the second run fetched metadata again:\n{stdout}");
    let here = already_here(&stdout).unwrap_or_else(|| panic!("no `pieces already here` line:\n{stdout}"));
    assert_eq!(here.have, t.num_pieces, "every piece should be here on the second run: {here:?}");
    assert_same_tree(&c.path(), &out.join(&t.name));
    assert_no_rill_errors(&second);
    println!("restarted magnet download: {here:?}");
}

// ---------------------------------------------------------------------------------------------------------------
// 6. Malformed magnet links: exit 2, one line, nothing written, no network traffic

/// Runs `rill download ARGS… -d OUT --no-ui --port 0 --peer LISTENER` (logging off: stderr holds only rill's own
/// messages) and asserts it refused the input: exit 2, one stderr line `rill: …` containing `names` (what is
/// wrong; not a "cannot read" of a file named `magnet:…`), OUT still empty, nothing reached the listeners.
#[track_caller]
fn assert_refused(dir: &Path, label: &str, args: &[&OsStr], names: &str, net: &Listeners) {
    let out = dir.join(format!("out-{label}"));
    fs::create_dir_all(&out).expect("create out");
    let mut cmd = rill_command();
    cmd.arg("download").args(args).arg("-d").arg(&out).args(["--no-ui", "--port", "0", "--peer"]);
    cmd.arg(net.peer_addr()).env_remove("RUST_LOG");
    let rill = Proc::spawn(label, &cmd, &dir.join("logs"), Duration::from_secs(25));
    let status = rill.wait_exit(deadline_in(20));
    let err = rill.stderr();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    let context = format!("{label}: rill download {args:?}");
    assert_eq!(status.code(), Some(2), "{context}: expected exit 2, got {}; stderr: {err:?}", describe(status));
    assert_eq!(lines.len(), 1, "{context}: expected one line on stderr, got {err:?}");
    assert!(lines[0].starts_with("rill: "), "{context}: the line should start with `rill: `: {err:?}");
    assert!(!lines[0].contains("cannot read"), "{context}: the link was taken for a file name: {err:?}");
    assert!(lines[0].contains(names), "{context}: the error should say {names:?}: {err:?}");
    assert!(is_empty_dir(&out), "{context}: wrote into {}: {:?}", out.display(), content::list_files(&out));
    let traffic = net.traffic();
    assert!(traffic.is_empty(), "{context}: network traffic before refusing the input: {traffic:#?}");
}

/// A single-file torrent with made-up piece hashes announcing to `trackers`: enough to load, never to verify.
fn made_up_torrent(path: &Path, name: &str, len: u64, trackers: &[String]) -> Torrent {
    let piece = 16 * KIB;
    let pieces = len.div_ceil(piece) as usize;
    let hashes: Vec<u8> = (0..pieces * 20).map(|i| (i as u8).wrapping_mul(29)).collect();
    let info = Value::dict(vec![
        ("length", Value::int(len as i64)),
        ("name", Value::str(name)),
        ("piece length", Value::int(piece as i64)),
        ("pieces", Value::Bytes(hashes)),
    ]);
    let meta = Value::dict(vec![
        ("announce", Value::str(&trackers[0])),
        ("announce-list", Value::List(trackers.iter().map(|t| Value::List(vec![Value::str(t)])).collect())),
        ("info", info),
    ]);
    fs::write(path, meta.encode()).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    Torrent::load(path)
}

/// Malformed links, each also carrying `tr` (HTTP and UDP) and `x.pe` that point at listeners this test owns, are
/// refused before anything touches the network: a hash with non-hex digits, hex of the wrong length, base32 with
/// characters outside its alphabet, no `xt` at all, a v2-only `btmh` link, a bad `x.pe`, bad percent-encoding; a
/// bad link after a good .torrent; and `--save-torrent` with two links. The control: a good link to the same
/// listeners is seen there.
#[test]
fn malformed_magnets_are_refused_before_any_traffic() {
    let deadline = deadline_in(60);
    let dir = TempDir::new("magnet-malformed");
    let net = Listeners::start();
    let trackers = net.announce_list();
    let tail: String = trackers.iter().map(|t| format!("&tr={}", bencode::percent_encode(t.as_bytes()))).collect();
    let tail = format!("{tail}&x.pe={}", net.peer_addr());
    let hex = "0123456789abcdef0123456789abcdef01234567";
    let bad: Vec<(&str, String, &str)> = vec![
        ("not-hex", format!("magnet:?xt=urn:btih:{}zz&dn=x{tail}", &hex[..38]), "info-hash"),
        ("short-hex", format!("magnet:?xt=urn:btih:{}&dn=x{tail}", &hex[..39]), "info-hash"),
        ("long-hex", format!("magnet:?xt=urn:btih:{hex}0&dn=x{tail}"), "info-hash"),
        ("bad-base32", format!("magnet:?xt=urn:btih:{}&dn=x{tail}", "ABCDEFGH18ABCDEFGH18ABCDEFGH1890"), "info-hash"),
        ("no-xt", format!("magnet:?dn=nothing-to-fetch{tail}"), "info-hash"),
        (
            "btmh-only",
            format!("magnet:?xt=urn:btmh:1220{hex}{}&dn=x{tail}", &hex[..24]),
            "rill: v2-only magnet links are not supported",
        ),
        ("bad-x.pe", format!("magnet:?xt=urn:btih:{hex}{tail}&x.pe=127.0.0.1"), "127.0.0.1"),
        ("bad-percent", format!("magnet:?xt=urn:btih:{hex}&dn=a%zzb{tail}"), "percent"),
    ];
    for (label, link, names) in &bad {
        assert_refused(dir.path(), label, &[link.as_ref()], names, &net);
    }
    // The same v2-only line, exactly.
    let btmh = &bad.iter().find(|b| b.0 == "btmh-only").expect("btmh case").1;
    let out = dir.mkdir("out-btmh-exact");
    let mut cmd = rill_command();
    cmd.arg("download").arg(btmh).arg("-d").arg(&out).arg("--no-ui").env_remove("RUST_LOG");
    let rill = Proc::spawn("btmh-exact", &cmd, &dir.join("logs"), Duration::from_secs(25));
    rill.wait_exit(deadline_in(20));
    assert_eq!(rill.stderr().trim_end(), "rill: v2-only magnet links are not supported");

    // A bad link after a good .torrent: nothing of the good one starts either.
    let good = made_up_torrent(&dir.join("good.torrent"), "good.bin", 70_001, &trackers);
    let not_hex = &bad[0].1;
    assert_refused(dir.path(), "good-then-bad", &[good.path.as_os_str(), not_hex.as_ref()], "info-hash", &net);

    // --save-torrent takes exactly one magnet link.
    let good_link = format!("magnet:?xt=urn:btih:{hex}&dn=x{tail}");
    let other_link = format!("magnet:?xt=urn:btih:{}&dn=y{tail}", "fedcba9876543210fedcba9876543210fedcba98");
    let saved = dir.join("saved.torrent");
    let args: [&OsStr; 4] = ["--save-torrent".as_ref(), saved.as_os_str(), good_link.as_ref(), other_link.as_ref()];
    assert_refused(dir.path(), "save-torrent-two-links", &args, "save-torrent", &net);
    assert!(!saved.exists(), "--save-torrent with two links wrote {}", saved.display());

    if RIG_CHECK {
        net.assert_rill_would_be_seen(dir.path(), &good.path, deadline);
    } else {
        net.assert_rill_would_be_seen(dir.path(), &good_link, deadline);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 7. Time to metadata: rill and libtorrent, on the same link

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The time from start to complete metadata over loopback, three runs each, for rill (from spawning the process to
/// its `metadata:` line on stdout, polled every 5 ms; and the `T s` rill itself prints) and for a python3-libtorrent
/// leecher given the same link (from adding the magnet to its metadata_received alert). One libtorrent seeder,
/// reachable through `x.pe` only; metadata of over 16 KiB (several pieces). Printed, not asserted: a figure for the
/// issue's closing note. Each run must get the metadata before its deadline, and rill's line must name the torrent.
#[test]
fn time_to_metadata_rill_and_libtorrent() {
    let deadline = deadline_in(90);
    let dir = TempDir::new("magnet-timing");
    let c = many_files_tree(&dir.mkdir("content"), "timed-many", 0x3A6_0007);
    let t = torrent::libtorrent_create(&c, &dead_announce_url(), 16 * KIB, true, &dir.join("t.torrent"), deadline);
    let seeder = lt_seeder(dir.path(), "libtorrent", &t, &c, 0, deadline);
    let link = magnet_link(&t.info_hash, Some(&t.name), &[], &[seeder.addr()]);
    const RUNS: usize = 3;

    let (mut rill_wall, mut rill_own) = (Vec::new(), Vec::new());
    if !RIG_CHECK {
        for run in 0..RUNS {
            let out = dir.join(format!("rill-out-{run}"));
            let started = Instant::now();
            let rill =
                spawn_rill_download(dir.path(), &format!("rill-{run}"), &[link.clone().into()], &out, &[], deadline);
            let run_deadline = deadline_within(deadline, 20);
            let line = loop {
                if let Some(l) = metadata_line(&rill.stdout()) {
                    break l.to_string();
                }
                seeder.proc().assert_running();
                rill.assert_running();
                assert!(Instant::now() < run_deadline, "rill run {run} printed no `metadata:` line in time");
                std::thread::sleep(Duration::from_millis(5));
            };
            rill_wall.push(started.elapsed().as_secs_f64());
            assert!(line.contains(&t.name), "the metadata line should name {:?}: {line:?}", t.name);
            rill_own.push(number_before(&line, "s").unwrap_or(f64::NAN));
            rill.kill();
        }
    }

    let (mut lt_own, mut lt_wall) = (Vec::new(), Vec::new());
    for run in 0..RUNS {
        let out = dir.mkdir(format!("lt-out-{run}"));
        let opts = LtLeechOptions { no_tracker: true, ..LtLeechOptions::default() };
        let started = Instant::now();
        let lt =
            LtLeecher::start_from(dir.path(), &format!("lt-{run}"), LtSource::Magnet(&link), &out, &opts, deadline);
        let snap = lt.wait_snapshot(&[seeder.proc()], deadline_within(deadline, 20), "its metadata", |s| {
            s.metadata_at.is_some()
        });
        lt_wall.push(started.elapsed().as_secs_f64());
        lt_own.push(snap.metadata_at.unwrap_or(f64::NAN));
        lt.proc().kill();
    }

    let ms = |v: &[f64]| v.iter().map(|s| format!("{:.0}", s * 1000.0)).collect::<Vec<_>>().join(", ");
    println!(
        "time to metadata ({} bytes of info, {RUNS} runs each, loopback, one libtorrent seeder via x.pe):",
        info_bytes(&t.bytes).len()
    );
    if !RIG_CHECK {
        println!(
            "  rill: median {:.0} ms from spawn to its `metadata:` line [{}]; rill's own T: median {:.3} s [{}]",
            median(rill_wall.clone()) * 1000.0,
            ms(&rill_wall),
            median(rill_own.clone()),
            rill_own.iter().map(|s| format!("{s}")).collect::<Vec<_>>().join(", ")
        );
    }
    println!(
        "  libtorrent: median {:.0} ms from adding the magnet to its metadata_received alert [{}]; median {:.0} ms \
         from spawning python (with its start-up) to a status file that has the metadata [{}]",
        median(lt_own.clone()) * 1000.0,
        ms(&lt_own),
        median(lt_wall.clone()) * 1000.0,
        ms(&lt_wall)
    );
}
