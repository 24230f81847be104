//! rill gives back (issue 4), to real BitTorrent software on loopback: it seeds two different real leechers, serves a
//! real leecher while it is itself still downloading from a throttled real seeder, and holds `--up-limit`.
//! Every process is bounded in time and killed by PID; on failure every process's log tail is printed.
//! Tools are installed by `scripts/test`; a missing one fails the test loudly.
//!
//! Where the payload came from is read from the leechers' own counters: the python3-libtorrent leecher
//! (`tests/peers/lt_peer.py`) reports per-peer totals and recognises rill by its peer id, and is run with
//! `--no-tracker` so that its only peer is rill.

mod common;

use std::time::Instant;

use common::content::{self, assert_same_tree, KIB, MIB};
use common::peers::{Aria2, Peer};
use common::seeding::{LtLeechOptions, LtLeecher, RillPeer, Snapshot};
use common::torrent;
use common::tracker::Opentracker;
use common::{deadline_in, deadline_within, describe, wait_for, TempDir};

/// A leecher tied to rill alone: it dials rill and never announces, so nobody else can reach it.
fn only_rill(rill: &RillPeer) -> LtLeechOptions {
    LtLeechOptions { peers: vec![rill.addr()], no_tracker: true, ..LtLeechOptions::default() }
}

/// Ctrl-C to rill; it must stop cleanly (exit 0) and must not have panicked.
#[track_caller]
fn stop_rill(rill: &RillPeer, deadline: Instant) {
    let status = rill.interrupt(deadline_within(deadline, 15));
    assert!(status.success(), "rill did not exit 0 after SIGINT: {}", describe(status));
    let err = rill.proc.stderr();
    assert!(!err.contains("panicked"), "rill panicked:\n{err}");
}

/// (1) `rill seed` alone; aria2c (which finds rill through opentracker only, so rill must announce the port it
/// really listens on) and a python3-libtorrent leecher (which dials rill directly) download at the same time, from
/// rill only, and both end up with byte-identical copies of a multi-file torrent.
#[test]
fn seeds_two_different_real_leechers() {
    let deadline = deadline_in(60);
    let dir = TempDir::new("seed-two-leechers");
    let content = content::small_tree(&dir.mkdir("content"), "seeded-tree", 0x5EED);
    let (t, tracker) = Opentracker::with_torrent(dir.path(), deadline, |announce| {
        torrent::libtorrent_create(&content, announce, 64 * KIB, true, &dir.join("t.torrent"), deadline)
    });
    assert!(!t.has_padding);

    let data = content.copy_to(&dir.mkdir("rill-data"));
    let rill = RillPeer::seed(dir.path(), "rill", &t, &data, &[], deadline);
    tracker.wait_seeders(&t.info_hash, 1, deadline);

    let aria_out = dir.mkdir("aria2c-out");
    let lt_out = dir.mkdir("libtorrent-out");
    let started = Instant::now();
    let aria = Aria2::leech(dir.path(), "aria2c-leecher", &t, &aria_out, deadline);
    let lt = LtLeecher::start(dir.path(), "libtorrent-leecher", &t, &lt_out, &only_rill(&rill), deadline);

    // Both run at once; they are awaited one after the other, so that a failure names the one that is stuck.
    lt.wait_complete(&[&rill.proc], deadline);
    let status = wait_for(deadline, "aria2c to finish its download from rill (it exits when done)", || {
        rill.proc.assert_running();
        aria.proc().exited()
    });
    assert!(status.success(), "aria2c leecher failed: {}", describe(status));
    let took = started.elapsed();

    assert_same_tree(&content.path(), &aria_out.join(&t.name));
    assert_same_tree(&content.path(), &lt_out.join(&t.name));
    let lt_view = lt.snapshot().expect("libtorrent leecher status");
    assert!(
        lt_view.had_only_rill() && lt_view.downloaded >= content.total,
        "the libtorrent leecher should have had every byte from rill and none from anyone else: {}",
        lt_view.describe()
    );

    stop_rill(&rill, deadline);
    let out = rill.proc.stdout();
    let n = t.num_pieces;
    assert!(out.contains(&format!("{n} of {n} pieces present; seeding")), "rill seed's output:\n{out}");
    let last = out.lines().last().unwrap_or("");
    assert!(last.contains("uploaded"), "rill seed should end with what it uploaded; its output:\n{out}");
    // libtorrent (default settings) opens with an encrypted handshake; rill answers it rather than making it
    // retry in plaintext.
    let log = rill.proc.stderr();
    assert!(
        log.contains("encrypted handshake done"),
        "the libtorrent leecher's MSE handshake should have been answered; rill's log:\n{log}"
    );
    println!(
        "rill seeded {} bytes to aria2c and libtorrent in {:.1} s ({last}); libtorrent's view: {}",
        content.total,
        took.as_secs_f64(),
        lt_view.describe()
    );
}

/// (2) rill downloads from aria2c, throttled hard, while a python3-libtorrent leecher whose only peer is rill
/// fetches the same torrent. In one status snapshot the leecher must show payload received from rill while rill, by
/// the leecher's own account, still lacked a quarter of the pieces: at the seeder's rate those take seconds to
/// arrive, far longer than a `have` takes over loopback, so rill was still downloading. Then, with `--seed`, rill
/// finishes the leecher's download too, and both copies are byte-identical.
#[test]
fn serves_a_real_leecher_while_downloading() {
    let deadline = deadline_in(80);
    let dir = TempDir::new("seed-while-downloading");
    let content = content::write_single(&dir.mkdir("content"), "while.bin", 3 * MIB + 4_321, 0xD0_0D);
    let (t, tracker) = Opentracker::with_torrent(dir.path(), deadline, |announce| {
        torrent::transmission_create(&content, announce, 64, &dir.join("t.torrent"), deadline)
    });

    let seeder_data = content.copy_to(&dir.mkdir("aria2c-data"));
    let seeder = Aria2::seed(dir.path(), "aria2c-seeder", &t, &seeder_data, Some(SEEDER_LIMIT), deadline);
    tracker.wait_seeders(&t.info_hash, 1, deadline);

    let rill_out = dir.mkdir("rill-out");
    let rill = RillPeer::download(dir.path(), "rill", &t, &rill_out, &["--seed"], deadline);
    let lt_out = dir.mkdir("libtorrent-out");
    let lt = LtLeecher::start(dir.path(), "libtorrent-leecher", &t, &lt_out, &only_rill(&rill), deadline);

    let n = t.num_pieces;
    let procs = [&rill.proc, seeder.proc()];
    let during =
        lt.wait_snapshot(&procs, deadline, "a piece from rill while rill lacks a quarter of the pieces", |s| {
            let served =
                s.peers.iter().any(|p| p.is_rill() && p.downloaded >= t.piece_length && p.num_pieces * 4 <= n * 3);
            if !served && s.peers.iter().any(|p| p.is_rill() && p.num_pieces == n) {
                panic!("rill completed its download before it served the leecher a piece: {}", s.describe());
            }
            served
        });

    let done = lt.wait_complete(&procs, deadline);
    assert_same_tree(&content.path(), &lt_out.join(&t.name));
    assert_same_tree(&content.path(), &rill_out.join(&t.name));
    assert!(
        done.had_only_rill() && done.downloaded >= content.total,
        "the leecher's only peer should have been rill: {}",
        done.describe()
    );
    stop_rill(&rill, deadline);
    println!("mid-download, the leecher had {}; at the end {}", describe_rill(&during), done.describe());
}

/// aria2c's upload cap in test (2), bytes per second: ~12 s for the 3 MiB torrent.
const SEEDER_LIMIT: u64 = 256 * 1024;

fn describe_rill(s: &Snapshot) -> String {
    let rill = s.peers.iter().find(|p| p.is_rill());
    match rill {
        Some(p) => {
            format!("{} B from rill at {:.1} s, rill then having {} pieces", p.downloaded, s.elapsed, p.num_pieces)
        }
        None => s.describe(),
    }
}

/// The up-limit in test (3), as given to rill and in bytes per second (`1M` = 1024 × 1024).
const UP_LIMIT: &str = "1M";
const UP_LIMIT_BPS: f64 = MIB as f64;
/// Received before the window opens (token-bucket burst, connection start-up).
const WARM_UP_BYTES: u64 = 3 * MIB;
const WINDOW_SECS: f64 = 20.0;

/// (3) `rill seed --up-limit 1M` with one fast python3-libtorrent leecher (no limit of its own, only rill as a
/// peer): after a warm-up, the payload the leecher receives over 20 s — its own counter, timed by its own clock —
/// is within 10% of 1 MiB/s. 32 MiB, so that the leecher cannot finish inside the window at the limit.
#[test]
fn up_limit_holds_within_ten_percent() {
    let deadline = deadline_in(85);
    let dir = TempDir::new("seed-up-limit");
    let data = dir.mkdir("rill-data");
    let content = content::write_single(&data, "limited.bin", 32 * MIB, 0x11_1117);
    let (t, _tracker) = Opentracker::with_torrent(dir.path(), deadline, |announce| {
        torrent::transmission_create(&content, announce, 256, &dir.join("t.torrent"), deadline)
    });

    let rill = RillPeer::seed(dir.path(), "rill", &t, &data, &["--up-limit", UP_LIMIT], deadline);
    let lt = LtLeecher::start(dir.path(), "libtorrent-leecher", &t, &dir.mkdir("out"), &only_rill(&rill), deadline);
    let procs = [&rill.proc];

    let t0 = lt.wait_snapshot(&procs, deadline, "the warm-up bytes from rill", |s| s.downloaded >= WARM_UP_BYTES);
    let t1 = lt.wait_snapshot(&procs, deadline, "the end of the 20 s window", |s| {
        s.complete || s.elapsed >= t0.elapsed + WINDOW_SECS
    });
    let secs = t1.elapsed - t0.elapsed;
    let rate = (t1.downloaded - t0.downloaded) as f64 / secs;
    let ratio = rate / UP_LIMIT_BPS;
    let report = format!(
        "the leecher received {} B in {secs:.2} s = {rate:.0} B/s, {:.1}% of --up-limit {UP_LIMIT} ({UP_LIMIT_BPS} \
         B/s); window from {} to {}",
        t1.downloaded - t0.downloaded,
        ratio * 100.0,
        t0.describe(),
        t1.describe()
    );
    assert!(!t1.complete || t1.elapsed >= t0.elapsed + WINDOW_SECS, "it finished early: {report}");
    assert!((0.9..=1.1).contains(&ratio), "upload rate outside ±10% of the limit: {report}");
    assert!(t1.had_only_rill(), "the leecher had another peer than rill: {report}");
    stop_rill(&rill, deadline);
    println!("{report}");
}
