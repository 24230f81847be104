//! rill downloads from real BitTorrent software on loopback (issue 3): Debian's opentracker, transmission-daemon,
//! python3-libtorrent, aria2c and qbittorrent-nox as seeders, torrents made by transmission-create and libtorrent.
//! Every process is bounded in time and killed by PID; on failure every process's log tail is printed.
//! Tools are installed by `scripts/test`; a missing one fails the test loudly.

mod common;

use common::content::{self, assert_same_tree, KIB};
use common::leecher::{download, Leecher};
use common::peers::{describe_peers, wait_with_peers, Aria2, LibtorrentPeer, Peer, Qbittorrent, TransmissionDaemon};
use common::torrent;
use common::tracker::Opentracker;
use common::{deadline_in, deadline_within, TempDir};

/// Who downloads in these tests. Only ever `Leecher::Rill` in a commit; another leecher here checks the rig itself.
const LEECHER: Leecher = Leecher::Rill;

/// Each seeder of the two-seeder test is throttled to this (kB/s = 1000 B/s), so that neither alone could serve the
/// ~11 MiB torrent quickly (22 s): both must take part. Transmission 3.00 unchokes a new peer only at its next
/// rechoke, up to 10 s after it said `interested`; at this rate the download is still running by then.
const THROTTLE_KB: u32 = 500;

/// Waits (briefly) until every seeder's own counters show that it uploaded payload; the counters of some clients
/// lag a little behind the wire.
#[track_caller]
fn assert_every_seeder_uploaded(seeders: &[&dyn Peer], deadline: std::time::Instant) {
    let short = deadline_within(deadline, 10);
    for s in seeders {
        wait_with_peers(
            &[],
            short,
            &format!("{} to report uploaded payload ({})", s.name(), describe_peers(seeders)),
            || (s.uploaded_bytes() > 0).then_some(()),
        );
    }
}

/// (a) A multi-file torrent (nested folders, a zero-length file, a short last piece) made by libtorrent, tracked by
/// opentracker, seeded at once by transmission-daemon and a python3-libtorrent session, each throttled.
#[test]
fn multi_file_from_two_throttled_seeders() {
    let deadline = deadline_in(150);
    let dir = TempDir::new("interop-multi");
    let content = content::standard_tree(&dir.mkdir("content"), "rill-interop", 0xA11CE);
    let (t, tracker) = Opentracker::with_torrent(dir.path(), deadline, |announce| {
        torrent::libtorrent_create(&content, announce, 256 * KIB, true, &dir.join("multi.torrent"), deadline)
    });
    assert!(t.last_piece_length() < t.piece_length, "the last piece must be short");
    assert!(!t.has_padding);

    let tr_data = content.copy_to(&dir.mkdir("transmission-data"));
    let lt_data = content.copy_to(&dir.mkdir("libtorrent-data"));
    let tr = TransmissionDaemon::seed(dir.path(), "transmission", &t, &tr_data, Some(THROTTLE_KB), deadline);
    let lt = LibtorrentPeer::seed(dir.path(), "libtorrent", &t, &lt_data, THROTTLE_KB as u64 * 1000, deadline);
    tracker.wait_seeders(&t.info_hash, 2, deadline);

    let out = dir.mkdir("out");
    let seeders: [&dyn Peer; 2] = [&tr, &lt];
    let took = download(LEECHER, dir.path(), &t, &out, &[], &seeders, deadline);

    assert_same_tree(&content.path(), &out.join(&t.name));
    let empty = out.join(&t.name).join("empty.dat");
    assert!(empty.is_file() && empty.metadata().unwrap().len() == 0, "{} missing", empty.display());
    assert_every_seeder_uploaded(&seeders, deadline);
    println!(
        "multi-file, 2 throttled seeders: {} bytes in {:.1} s; {}",
        t.total_length,
        took.as_secs_f64(),
        describe_peers(&seeders)
    );
}

/// (b) A single-file torrent made by transmission-create (64 KiB pieces, odd size) seeded by aria2c alone.
#[test]
fn single_file_from_aria2_seeder() {
    let deadline = deadline_in(120);
    let dir = TempDir::new("interop-single");
    let content = content::write_single(&dir.mkdir("content"), "single.bin", 5 * content::MIB + 12_345, 0xB0B);
    let (t, tracker) = Opentracker::with_torrent(dir.path(), deadline, |announce| {
        torrent::transmission_create(&content, announce, 64, &dir.join("single.torrent"), deadline)
    });
    assert!(t.last_piece_length() < t.piece_length);

    let data = content.copy_to(&dir.mkdir("aria2-data"));
    let aria = Aria2::seed(dir.path(), "aria2c", &t, &data, None, deadline);
    tracker.wait_seeders(&t.info_hash, 1, deadline);

    let out = dir.mkdir("out");
    let seeders: [&dyn Peer; 1] = [&aria];
    let took = download(LEECHER, dir.path(), &t, &out, &[], &seeders, deadline);

    assert_same_tree(&content.path(), &out.join(&t.name));
    assert_every_seeder_uploaded(&seeders, deadline);
    println!("single file from aria2c: {} bytes in {:.1} s", t.total_length, took.as_secs_f64());
}

/// (b2) A hybrid v1+v2 torrent made by libtorrent, with BEP 47 padding files between its files (which must count in
/// the piece layout but not be created), seeded by qbittorrent-nox alone.
#[test]
fn hybrid_torrent_with_padding_files_from_qbittorrent() {
    let deadline = deadline_in(120);
    let dir = TempDir::new("interop-hybrid");
    let content = content::small_tree(&dir.mkdir("content"), "hybrid-tree", 0xC0FFEE);
    let (t, tracker) = Opentracker::with_torrent(dir.path(), deadline, |announce| {
        torrent::libtorrent_create(&content, announce, 128 * KIB, false, &dir.join("hybrid.torrent"), deadline)
    });
    assert!(t.hybrid && t.has_padding, "libtorrent should have made a hybrid torrent with padding files");

    let data = content.copy_to(&dir.mkdir("qbittorrent-data"));
    let qb = Qbittorrent::seed(dir.path(), "qbittorrent", &t, &data, None, deadline);
    tracker.wait_seeders(&t.info_hash, 1, deadline);

    let out = dir.mkdir("out");
    let seeders: [&dyn Peer; 1] = [&qb];
    let took = download(LEECHER, dir.path(), &t, &out, &[], &seeders, deadline);

    // No `.pad` folder: the comparison also fails on any file that is not in the content.
    assert_same_tree(&content.path(), &out.join(&t.name));
    assert_every_seeder_uploaded(&seeders, deadline);
    println!(
        "hybrid torrent with padding from qbittorrent-nox: {} bytes in {:.1} s",
        content.total,
        took.as_secs_f64()
    );
}
