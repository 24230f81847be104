//! uTP (BEP 29; issue 13, "uTP") against python3-libtorrent on loopback. Every libtorrent peer here runs with
//! `--utp-only` (uTP on, TCP off both ways: it still accepts a TCP connect but closes it at once, so rill sees its
//! TCP handshakes refused and walks on to uTP). `rill download` with default options completes from a uTP-only
//! seeder announced on opentracker; a uTP-only leecher downloads from `rill seed`, in plaintext and with MSE/RC4;
//! `rill download --no-utp` gets nothing from a uTP-only seeder; and a 64 MiB transfer over uTP completes (a soak
//! of the congestion control and buffers; its rate is printed, not asserted).
//!
//! Judged by exit codes, byte-identical trees, libtorrent's own view of each connection (`lt_peer.py` reports
//! its `utp_socket` and `rc4_encrypted` flags per peer) and rill's debug log (`ADDR: connecting over uTP`,
//! `ADDR: accepted over uTP`, `ADDR: handshake refused (…); trying … over uTP`). Every process is bounded in time
//! and killed by PID.

mod common;

use std::path::Path;
use std::time::Instant;

use common::content::{self, assert_same_tree, Content, KIB, MIB};
use common::peers::{LibtorrentPeer, LtOptions, Peer};
use common::rill_checks::{lines_with, spawn_rill, stop_rill, wait_download_done};
use common::seeding::{LtEncryption, LtLeechOptions, LtLeecher, RillPeer, Snapshot};
use common::torrent::{self, Torrent};
use common::tracker::{announce_url, Opentracker};
use common::{deadline_in, deadline_within, free_port, wait_for, TempDir};

// ---------------------------------------------------------------------------------------------------------------
// Helpers

/// Part of every rill log line saying a connection is carried over uTP (`connecting over uTP`, `accepted over
/// uTP`, `trying … over uTP`).
const OVER_UTP: &str = "over uTP";
/// What rill's debug log says when an MSE handshake selected RC4, after `ADDR: `.
const RC4_SELECTED: &str = "encrypted handshake done, RC4 selected";

/// Bytes per second at which the libtorrent peers send or receive in the small tests: the 5 MiB then take about
/// 2.5 s, many of `lt_peer.py`'s 0.2 s status writes, so its per-peer records catch every connection.
const LT_RATE: u64 = 2 * MIB;

/// A URL on which nothing listens: no peer here is found through a tracker unless the test starts one.
fn dead_announce_url() -> String {
    announce_url(free_port())
}

/// A file of `len` bytes and a v1 torrent of it with `piece` pieces announcing to `announce`.
fn content_and_torrent(
    dir: &TempDir,
    announce: &str,
    len: u64,
    piece: u64,
    seed: u64,
    deadline: Instant,
) -> (Content, Torrent) {
    let c = content::write_single(&dir.mkdir("content"), "utp.bin", len, seed);
    let t = torrent::libtorrent_create(&c, announce, piece, true, &dir.join("t.torrent"), deadline);
    (c, t)
}

/// A uTP-only libtorrent seeder of `t` from a copy of `c`, uploading at `rate` (0: unlimited); it announces to the
/// torrent's tracker when `announce`, else never (its only peers are those that dial it). Waits until it seeds.
#[track_caller]
fn utp_seeder(
    dir: &Path,
    name: &str,
    t: &Torrent,
    c: &Content,
    rate: u64,
    announce: bool,
    deadline: Instant,
) -> LibtorrentPeer {
    let data = c.copy_to(&dir.join(format!("{name}-data")));
    let opts = LtOptions { seed: true, no_tracker: !announce, upload_limit: rate, utp: true, ..LtOptions::default() };
    let seeder = LibtorrentPeer::start(dir, name, t, &data, &opts, deadline);
    seeder.wait_seeding(deadline);
    seeder
}

/// A uTP-only libtorrent leecher whose only peer is rill (it dials rill and never announces), with `encryption`,
/// downloading at `LT_RATE`.
fn utp_only_rill(rill: &RillPeer, encryption: LtEncryption) -> LtLeechOptions {
    LtLeechOptions {
        peers: vec![rill.addr()],
        no_tracker: true,
        encryption,
        download_limit: LT_RATE,
        utp: true,
        ..LtLeechOptions::default()
    }
}

/// The seeder's own view once its counters have caught up: it uploaded at least `total` bytes, and every
/// connection it sent payload over was rill's and uTP by libtorrent's own flags (and there was one).
#[track_caller]
fn assert_seeder_sent_all_over_utp(seeder: &LibtorrentPeer, total: u64, deadline: Instant) -> Snapshot {
    let what = format!("{} to count {total} B uploaded", seeder.name());
    let view = wait_for(deadline_within(deadline, 10), &what, || {
        seeder.snapshot().filter(|s| seeder.uploaded_bytes() >= total && s.seen.iter().any(|p| p.is_rill()))
    });
    let served: Vec<_> = view.seen.iter().filter(|p| p.uploaded > 0).collect();
    assert!(
        !served.is_empty() && served.iter().all(|p| p.is_rill() && p.utp),
        "every connection the seeder sent payload over should be rill's and over uTP: {}",
        view.describe()
    );
    view
}

/// rill's log shows at least one connection with `peer` carried over uTP (it dialled it, or accepted its dial).
#[track_caller]
fn assert_rill_used_utp_with(log: &str, peer: &str) -> Vec<String> {
    let utp: Vec<String> = lines_with(log, OVER_UTP)
        .into_iter()
        .filter(|l| {
            l.contains(&format!("{peer}: connecting over uTP")) || l.contains(&format!("{peer}: accepted over uTP"))
        })
        .map(str::to_string)
        .collect();
    assert!(!utp.is_empty(), "rill's log should show a uTP connection with {peer}:\n{log}");
    utp
}

// ---------------------------------------------------------------------------------------------------------------
// 1. rill downloads (default options) from a uTP-only libtorrent seeder found through opentracker

/// A uTP-only libtorrent seeder announces to opentracker; `rill download` with default options finds it there,
/// its TCP handshakes are refused, it walks on to uTP and completes byte-identical. The seeder sent every byte
/// over uTP by its own account, and rill's log shows the uTP connection.
#[test]
fn download_with_default_options_from_a_utp_only_seeder_via_opentracker() {
    let deadline = deadline_in(90);
    let dir = TempDir::new("utp-download");
    let port = Opentracker::reserve_port();
    let (c, t) = content_and_torrent(&dir, &announce_url(port), 5 * MIB + 4_321, 64 * KIB, 0x07F_0001, deadline);
    let tracker = Opentracker::start(dir.path(), port, &[t.info_hash], deadline);
    let seeder = utp_seeder(dir.path(), "libtorrent-utp", &t, &c, LT_RATE, true, deadline);
    tracker.wait_seeders(&t.info_hash, 1, deadline);

    let out = dir.join("out");
    let started = Instant::now();
    let rill = spawn_rill(dir.path(), "rill", "download", &t, &out, &[], deadline);
    wait_download_done(&rill, &[&seeder], deadline);
    let took = started.elapsed();
    assert_same_tree(&c.path(), &out.join(&t.name));

    let view = assert_seeder_sent_all_over_utp(&seeder, c.total, deadline);
    let log = rill.proc.stderr();
    let utp = assert_rill_used_utp_with(&log, &seeder.addr());
    println!(
        "rill download from a uTP-only libtorrent seeder (via opentracker): {} B in {:.1} s",
        c.total,
        took.as_secs_f64()
    );
    println!("  rill: {}", utp.join(" | "));
    println!("  refusals: {:?}", lines_with(&log, "handshake refused"));
    println!("  the seeder's view: {}", view.describe());
}

// ---------------------------------------------------------------------------------------------------------------
// 2 and 4. a uTP-only libtorrent leecher downloads from `rill seed`

/// `rill seed` (default options) and a uTP-only libtorrent leecher with `encryption` whose only peer is rill: it
/// completes byte-identical, every byte from rill, over connections libtorrent says are uTP. Returns its final
/// view and rill's log.
fn utp_leecher_from_rill_seed(label: &str, encryption: LtEncryption, seed: u64) -> (Snapshot, String) {
    let deadline = deadline_in(60);
    let dir = TempDir::new(label);
    let (c, t) = content_and_torrent(&dir, &dead_announce_url(), 5 * MIB + 4_321, 64 * KIB, seed, deadline);
    let data = c.copy_to(&dir.mkdir("rill-data"));
    let rill = spawn_rill(dir.path(), "rill", "seed", &t, &data, &[], deadline);

    let out = dir.mkdir("out");
    let started = Instant::now();
    let lt = LtLeecher::start(dir.path(), "libtorrent-utp", &t, &out, &utp_only_rill(&rill, encryption), deadline);
    let done = lt.wait_complete(&[&rill.proc], deadline);
    let took = started.elapsed();
    assert_same_tree(&c.path(), &out.join(&t.name));
    assert!(
        done.had_only_rill() && done.downloaded >= c.total,
        "the leecher should have had every byte from rill and none from anyone else: {}",
        done.describe()
    );
    let with_rill: Vec<_> = done.seen.iter().filter(|p| p.is_rill()).collect();
    assert!(
        !with_rill.is_empty() && with_rill.iter().all(|p| p.utp),
        "the leecher's connections with rill should be uTP by its own account: {}",
        done.describe()
    );
    assert!(
        done.seen.iter().filter(|p| p.downloaded > 0).all(|p| p.utp),
        "a connection that carried payload was not uTP: {}",
        done.describe()
    );

    stop_rill(&rill, deadline);
    let log = rill.proc.stderr();
    let accepted = lines_with(&log, "accepted over uTP");
    assert!(!accepted.is_empty(), "rill's log should show it accepted a uTP connection:\n{log}");
    println!(
        "uTP-only libtorrent leecher ({}) from rill seed: {} B in {:.1} s; {}",
        encryption.arg(),
        c.total,
        took.as_secs_f64(),
        done.describe()
    );
    (done, log)
}

/// The leecher's default encryption settings (it opens with MSE offering both methods; rill's responder selects
/// plaintext, which libtorrent reports as `plaintext_encrypted`).
#[test]
fn utp_only_libtorrent_leecher_downloads_from_rill_seed() {
    utp_leecher_from_rill_seed("utp-seed", LtEncryption::Default, 0x07F_0002);
}

/// MSE over uTP: the leecher forces the MSE handshake with RC4 only, so rill's responder selects RC4.
#[test]
fn utp_only_rc4_libtorrent_leecher_downloads_from_rill_seed() {
    let (done, log) = utp_leecher_from_rill_seed("utp-seed-rc4", LtEncryption::Rc4, 0x07F_0004);
    assert!(
        done.seen.iter().filter(|p| p.is_rill()).all(|p| p.rc4 && p.utp),
        "the leecher's connections with rill should be RC4-encrypted uTP by its own account: {}",
        done.describe()
    );
    assert!(log.contains(RC4_SELECTED), "rill's log should show it selected RC4:\n{log}");
}

// ---------------------------------------------------------------------------------------------------------------
// 3. `rill download --no-utp` from a uTP-only seeder

/// With `--no-utp` rill has only TCP ways: both are refused by the uTP-only seeder, and it never tries uTP. It
/// gets no payload, never logs a uTP connection, and keeps running (nothing to complete).
#[test]
fn download_with_no_utp_gets_nothing_from_a_utp_only_seeder() {
    let deadline = deadline_in(60);
    let dir = TempDir::new("utp-download-no-utp");
    let (c, t) = content_and_torrent(&dir, &dead_announce_url(), 5 * MIB + 4_321, 64 * KIB, 0x07F_0003, deadline);
    let seeder = utp_seeder(dir.path(), "libtorrent-utp", &t, &c, LT_RATE, false, deadline);

    let out = dir.join("out");
    let peer = seeder.addr();
    let started = Instant::now();
    let rill = spawn_rill(dir.path(), "rill", "download", &t, &out, &["--peer", peer.as_str(), "--no-utp"], deadline);

    // Both TCP ways (plaintext, then MSE) refused: rill logged the retry with encryption, then dialled again.
    let retry = format!("{peer}: handshake refused");
    let dials = format!("{peer}: connecting");
    wait_for(deadline_within(deadline, 20), "rill to have had both its TCP handshakes refused", || {
        rill.proc.assert_running();
        seeder.proc().assert_running();
        let log = rill.proc.stderr();
        (!lines_with(&log, &retry).is_empty() && lines_with(&log, &dials).len() >= 2).then_some(())
    });
    // Then a bounded watch: no payload, no uTP, rill still running.
    let watch_until = deadline_within(deadline, 5);
    while Instant::now() < watch_until {
        rill.proc.assert_running();
        seeder.proc().assert_running();
        assert_eq!(seeder.uploaded_bytes(), 0, "the uTP-only seeder sent payload to rill --no-utp");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let log = rill.proc.stderr();
    let utp = lines_with(&log, OVER_UTP);
    assert!(utp.is_empty(), "rill --no-utp spoke of uTP: {utp:#?}\n{log}");
    let view = seeder.snapshot().expect("the seeder's status");
    assert!(
        view.seen.iter().all(|p| p.uploaded == 0 && !p.utp),
        "the seeder should have no uTP connection and have sent nothing: {}",
        view.describe()
    );
    let watched = started.elapsed().as_secs_f64();
    stop_rill(&rill, deadline);
    println!(
        "rill download --no-utp from a uTP-only seeder: no payload in {watched:.1} s; refusals: {:?}; seeder: {}",
        lines_with(&log, "handshake refused"),
        view.describe()
    );
}

// ---------------------------------------------------------------------------------------------------------------
// 5. a bigger transfer over uTP

/// 64 MiB from an unthrottled uTP-only seeder (`--peer`): a soak of uTP's congestion control, windows and
/// buffers on loopback. Byte-identical, every byte over uTP by the seeder's account; the rate is printed only.
#[test]
fn download_64_mib_over_utp() {
    let deadline = deadline_in(240);
    let dir = TempDir::new("utp-soak");
    let (c, t) = content_and_torrent(&dir, &dead_announce_url(), 64 * MIB + 12_345, 256 * KIB, 0x07F_0005, deadline);
    let seeder = utp_seeder(dir.path(), "libtorrent-utp", &t, &c, 0, false, deadline);

    let out = dir.join("out");
    let peer = seeder.addr();
    let started = Instant::now();
    let rill = spawn_rill(dir.path(), "rill", "download", &t, &out, &["--peer", peer.as_str()], deadline);
    wait_download_done(&rill, &[&seeder], deadline);
    let took = started.elapsed();
    assert_same_tree(&c.path(), &out.join(&t.name));

    let view = assert_seeder_sent_all_over_utp(&seeder, c.total, deadline);
    let log = rill.proc.stderr();
    assert_rill_used_utp_with(&log, &peer);
    let secs = took.as_secs_f64();
    println!(
        "rill download of {} B over uTP from an unthrottled libtorrent seeder: {secs:.1} s, {:.1} MB/s ({:.1} MiB/s)",
        c.total,
        c.total as f64 / secs / 1e6,
        c.total as f64 / secs / MIB as f64
    );
    println!("  the seeder's view: {}", view.describe());
}
