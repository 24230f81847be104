//! Message Stream Encryption with RC4 (issue 13, "Encryption") against real software on loopback: rill downloads
//! from a python3-libtorrent seeder that takes RC4-encrypted connections only, with default options (its plaintext
//! handshake is refused, it dials again with MSE) and with `--encryption require` (MSE at once); aria2c that
//! requires encryption downloads from `rill seed --encryption require`; a libtorrent leecher that offers RC4 only
//! downloads from `rill seed` with default options; `rill seed --encryption require` refuses a plaintext-only
//! libtorrent leecher while serving an RC4 one; and `rill download --encryption off` completes in plaintext from a
//! libtorrent seeder with default settings but gets nothing from an RC4-only one.
//!
//! Judged by exit codes, byte-identical trees, the peers' own counters and their own view of each connection
//! (`lt_peer.py` reports libtorrent's `rc4_encrypted` / `plaintext_encrypted` flags per peer), aria2c's log, and
//! rill's debug log (`ADDR: encrypted handshake done, RC4 selected`, `ADDR: handshake refused (…); trying with
//! encryption`, `ADDR: dropped: refused by --encryption`). Every process is bounded in time and killed by PID; the
//! tools are installed by `scripts/test`.

mod common;

use std::path::Path;
use std::time::Instant;

use common::content::{self, assert_same_tree, Content, KIB, MIB};
use common::peers::{wait_with_peers, Aria2, LibtorrentPeer, LtOptions, Peer};
use common::rill_checks::{lines_with, spawn_rill, stop_rill, wait_download_done};
use common::seeding::{LtEncryption, LtLeechOptions, LtLeecher, RillPeer, Snapshot};
use common::torrent::{self, Torrent};
use common::tracker::{announce_url, Opentracker};
use common::{deadline_in, deadline_within, describe, free_port, wait_for, wait_until, TempDir};

// ---------------------------------------------------------------------------------------------------------------
// Helpers

/// What rill's debug log says when an MSE handshake (either side) selected RC4, after `ADDR: `.
const RC4_SELECTED: &str = "encrypted handshake done, RC4 selected";
/// The same, when it selected plaintext.
const PLAINTEXT_SELECTED: &str = "encrypted handshake done, plaintext selected";
/// aria2c's debug log line when the MSE responder selected RC4 (`MSEHandshake.cc`).
const ARIA2_ARC4: &str = "peer prefers ARC4";
/// rill dropped a connection whose way of connecting `--encryption` does not allow.
const REFUSED_BY_POLICY: &str = "dropped: refused by --encryption";

/// A URL on which nothing listens: no peer here is found through a tracker unless the test starts one.
fn dead_announce_url() -> String {
    announce_url(free_port())
}

/// A 5 MiB file (not a multiple of the piece or block size) and a v1 torrent of it with 64 KiB pieces.
fn content_and_torrent(dir: &TempDir, announce: &str, seed: u64, deadline: Instant) -> (Content, Torrent) {
    let c = content::write_single(&dir.mkdir("content"), "mse.bin", 5 * MIB + 4_321, seed);
    let t = torrent::libtorrent_create(&c, announce, 64 * KIB, true, &dir.join("t.torrent"), deadline);
    (c, t)
}

/// Bytes per second at which the libtorrent peers send or receive where the test reads their per-peer view: the
/// 5 MiB then take about 2.5 s, many of `lt_peer.py`'s 0.2 s status writes (unthrottled over loopback, a
/// connection can come and go between two of them, and its record with it).
const LT_RATE: u64 = 2 * MIB;

/// A libtorrent seeder of `t` from a copy of `c` with encryption policy `encryption`, uploading at `LT_RATE`,
/// never announcing (its only peers are those that dial it); waits until it has checked the data and seeds.
#[track_caller]
fn lt_seeder(
    dir: &Path,
    name: &str,
    t: &Torrent,
    c: &Content,
    encryption: LtEncryption,
    deadline: Instant,
) -> LibtorrentPeer {
    let data = c.copy_to(&dir.join(format!("{name}-data")));
    let opts = LtOptions { seed: true, no_tracker: true, encryption, upload_limit: LT_RATE, ..LtOptions::default() };
    let seeder = LibtorrentPeer::start(dir, name, t, &data, &opts, deadline);
    seeder.wait_seeding(deadline);
    seeder
}

/// A libtorrent leecher whose only peer is rill (it dials rill and never announces), with `encryption`,
/// downloading at `LT_RATE`.
fn only_rill(rill: &RillPeer, encryption: LtEncryption) -> LtLeechOptions {
    LtLeechOptions {
        peers: vec![rill.addr()],
        no_tracker: true,
        encryption,
        download_limit: LT_RATE,
        ..LtLeechOptions::default()
    }
}

/// The seeder's own view once its counters have caught up: it uploaded at least `total` bytes, every byte of it
/// to rill over connections that libtorrent itself says were RC4-encrypted.
#[track_caller]
fn assert_seeder_sent_all_over_rc4(seeder: &LibtorrentPeer, total: u64, deadline: Instant) -> Snapshot {
    let what = format!("{} to count {total} B uploaded", seeder.name());
    let view = wait_for(deadline_within(deadline, 10), &what, || {
        seeder.snapshot().filter(|s| seeder.uploaded_bytes() >= total && s.seen.iter().any(|p| p.is_rill()))
    });
    let served: Vec<_> = view.seen.iter().filter(|p| p.uploaded > 0).collect();
    assert!(
        served.iter().all(|p| p.is_rill() && p.rc4),
        "every connection the seeder sent payload over should be rill's and RC4-encrypted: {}",
        view.describe()
    );
    view
}

// ---------------------------------------------------------------------------------------------------------------
// 1. rill downloads from a libtorrent seeder that takes RC4 connections only

/// A libtorrent seeder with `--encryption rc4` (in and out policy forced, RC4 the only allowed level, prefer RC4)
/// is rill's only peer (`--peer`); `rill download` with `mode` (extra options) must complete byte-identical, its
/// log must show the MSE handshake with that seeder selecting RC4, and the seeder must have sent everything over
/// RC4. Returns rill's log.
fn download_from_rc4_seeder(label: &str, mode: &[&str], seed: u64) -> String {
    let deadline = deadline_in(60);
    let dir = TempDir::new(label);
    let (c, t) = content_and_torrent(&dir, &dead_announce_url(), seed, deadline);
    let seeder = lt_seeder(dir.path(), "libtorrent-rc4", &t, &c, LtEncryption::Rc4, deadline);

    let out = dir.join("out");
    let peer = seeder.addr();
    let extra: Vec<&str> = ["--peer", peer.as_str()].into_iter().chain(mode.iter().copied()).collect();
    let started = Instant::now();
    let rill = spawn_rill(dir.path(), "rill", "download", &t, &out, &extra, deadline);
    wait_download_done(&rill, &[&seeder], deadline);
    let took = started.elapsed();
    assert_same_tree(&c.path(), &out.join(&t.name));

    let log = rill.proc.stderr();
    let selected = format!("{}: {RC4_SELECTED}", seeder.addr());
    assert!(log.contains(&selected), "rill's log should show `{selected}`:\n{log}");
    assert!(lines_with(&log, PLAINTEXT_SELECTED).is_empty(), "an MSE handshake selected plaintext:\n{log}");
    let view = assert_seeder_sent_all_over_rc4(&seeder, c.total, deadline);
    println!("rill download {mode:?} from an RC4-only libtorrent seeder: {} B in {:.1} s", c.total, took.as_secs_f64());
    println!("  the seeder's view: {}", view.describe());
    log
}

/// Default options (`--encryption prefer`): rill opens in plaintext, the seeder drops that handshake, rill dials it
/// again at once with MSE, which selects RC4.
#[test]
fn download_with_default_options_from_an_rc4_only_seeder() {
    let log = download_from_rc4_seeder("enc-download-prefer", &[], 0xE4C_0001);
    let retried: Vec<&str> =
        lines_with(&log, "handshake refused").into_iter().filter(|l| l.contains("trying with encryption")).collect();
    assert_eq!(
        retried.len(),
        1,
        "rill should have retried with encryption exactly once after its plaintext handshake was refused:\n{log}"
    );
    // The retry came before the RC4 handshake: the first connection was the plaintext one.
    let retry_at = log.find(retried[0]).unwrap_or(usize::MAX);
    let rc4_at = log.find(RC4_SELECTED).unwrap_or(0);
    assert!(retry_at < rc4_at, "the RC4 handshake should follow the refused plaintext one:\n{log}");
}

/// `--encryption require`: rill opens with MSE offering RC4 only; no plaintext handshake, no retry.
#[test]
fn download_with_encryption_require_from_an_rc4_only_seeder() {
    let log = download_from_rc4_seeder("enc-download-require", &["--encryption", "require"], 0xE4C_0002);
    let retried = lines_with(&log, "handshake refused");
    assert!(retried.is_empty(), "with --encryption require rill should open with MSE at once: {retried:#?}\n{log}");
}

// ---------------------------------------------------------------------------------------------------------------
// 2. aria2c that requires encryption downloads from `rill seed --encryption require`

/// `rill seed --encryption require` announcing to opentracker, the only seeder there; aria2c with
/// `--bt-require-crypto=true --bt-min-crypto-level=arc4` finds it through the tracker and downloads everything
/// (exit 0, byte-identical). rill's log shows RC4 selected and never plaintext, and aria2c's log that the
/// responder (rill) chose ARC4.
#[test]
fn aria2c_requiring_rc4_downloads_from_rill_seed_encryption_require() {
    let deadline = deadline_in(60);
    let dir = TempDir::new("enc-aria2c");
    let port = Opentracker::reserve_port();
    let (c, t) = content_and_torrent(&dir, &announce_url(port), 0xE4C_0003, deadline);
    let tracker = Opentracker::start(dir.path(), port, &[t.info_hash], deadline);
    let data = c.copy_to(&dir.mkdir("rill-data"));
    let rill = spawn_rill(dir.path(), "rill", "seed", &t, &data, &["--encryption", "require"], deadline);
    tracker.wait_seeders(&t.info_hash, 1, deadline);

    let out = dir.mkdir("aria2c-out");
    let started = Instant::now();
    // At debug level aria2c logs the method the MSE responder selected (info level does not).
    let crypto = ["--bt-require-crypto=true", "--bt-min-crypto-level=arc4", "--log-level=debug"];
    let aria = Aria2::leech_with(dir.path(), "aria2c-leecher", &t, &out, &crypto, deadline);
    let status = wait_for(deadline, "aria2c to finish its download from rill (it exits when done)", || {
        rill.proc.assert_running();
        aria.proc().exited()
    });
    assert!(status.success(), "aria2c requiring RC4 failed: {}", describe(status));
    let took = started.elapsed();
    assert_same_tree(&c.path(), &out.join(&t.name));

    stop_rill(&rill, deadline);
    let log = rill.proc.stderr();
    let rc4 = lines_with(&log, RC4_SELECTED);
    assert!(!rc4.is_empty(), "rill's log should show an MSE handshake selecting RC4:\n{log}");
    assert!(lines_with(&log, PLAINTEXT_SELECTED).is_empty(), "an MSE handshake selected plaintext:\n{log}");
    // aria2c replaces 20 or more pending `have`s with a bitfield, or with `have all` once complete (BEP 6 allows
    // both only first): neither is misbehaviour to rill.
    let misbehaved = lines_with(&log, "misbehaved");
    assert!(misbehaved.is_empty(), "rill took aria2c for a misbehaving peer: {misbehaved:#?}");
    // aria2c's own account (its debug log) of the crypto method rill's MSE reply selected.
    let aria_log = aria.log();
    let arc4 = lines_with(&aria_log, ARIA2_ARC4);
    assert!(
        !arc4.is_empty(),
        "aria2c's log should say `{ARIA2_ARC4}`; its MSE lines: {:#?}",
        lines_with(&aria_log, "MSE")
    );
    println!(
        "aria2c (--bt-require-crypto, arc4) downloaded {} B from rill seed --encryption require in {:.1} s; rill: {}; \
         aria2c: {}",
        c.total,
        took.as_secs_f64(),
        rc4.join(" | "),
        arc4.join(" | ")
    );
}

// ---------------------------------------------------------------------------------------------------------------
// 3. `rill seed` (default options) answers an RC4-only libtorrent leecher

/// A libtorrent leecher with `--encryption rc4` whose only peer is `rill seed` (default options): it opens with
/// MSE offering RC4 only, so rill selects RC4. Complete, byte-identical, everything from rill, over connections
/// that libtorrent says are RC4-encrypted.
#[test]
fn rc4_only_libtorrent_leecher_downloads_from_rill_seed_default_options() {
    let deadline = deadline_in(60);
    let dir = TempDir::new("enc-seed-prefer");
    let (c, t) = content_and_torrent(&dir, &dead_announce_url(), 0xE4C_0004, deadline);
    let data = c.copy_to(&dir.mkdir("rill-data"));
    let rill = spawn_rill(dir.path(), "rill", "seed", &t, &data, &[], deadline);

    let out = dir.mkdir("out");
    let started = Instant::now();
    let lt = LtLeecher::start(dir.path(), "libtorrent-rc4", &t, &out, &only_rill(&rill, LtEncryption::Rc4), deadline);
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
        !with_rill.is_empty() && with_rill.iter().all(|p| p.rc4),
        "the leecher's connections with rill should be RC4-encrypted by its own account: {}",
        done.describe()
    );

    stop_rill(&rill, deadline);
    let log = rill.proc.stderr();
    assert!(log.contains(RC4_SELECTED), "rill's log should show it selected RC4:\n{log}");
    assert!(lines_with(&log, PLAINTEXT_SELECTED).is_empty(), "an MSE handshake selected plaintext:\n{log}");
    println!(
        "RC4-only libtorrent leecher from rill seed: {} B in {:.1} s; {}",
        c.total,
        took.as_secs_f64(),
        done.describe()
    );
}

// ---------------------------------------------------------------------------------------------------------------
// 4. `rill seed --encryption require` refuses plaintext and serves RC4

/// `rill seed --encryption require`, two libtorrent leechers started together whose only peer is rill: one with
/// encryption disabled (plain BitTorrent only), one with `--encryption rc4`. The RC4 one completes; rill refuses
/// the plain one's handshake ("refused by --encryption"; the plain leecher's own log shows rill closing that
/// connection) and it gets no payload and no handshake from rill. (libtorrent does not redial a peer that failed
/// before `min_reconnect_time`, 60 s, so there is one refusal to see.)
#[test]
fn rill_seed_encryption_require_refuses_plaintext_and_serves_rc4() {
    let deadline = deadline_in(60);
    let dir = TempDir::new("enc-seed-require");
    let (c, t) = content_and_torrent(&dir, &dead_announce_url(), 0xE4C_0005, deadline);
    let data = c.copy_to(&dir.mkdir("rill-data"));
    let rill = spawn_rill(dir.path(), "rill", "seed", &t, &data, &["--encryption", "require"], deadline);

    let (plain_out, rc4_out) = (dir.mkdir("out-plain"), dir.mkdir("out-rc4"));
    let plain = LtLeecher::start(
        dir.path(),
        "libtorrent-plain",
        &t,
        &plain_out,
        &only_rill(&rill, LtEncryption::Disabled),
        deadline,
    );
    let rc4 =
        LtLeecher::start(dir.path(), "libtorrent-rc4", &t, &rc4_out, &only_rill(&rill, LtEncryption::Rc4), deadline);

    let done = rc4.wait_complete(&[&rill.proc, plain.proc()], deadline);
    assert_same_tree(&c.path(), &rc4_out.join(&t.name));
    assert!(
        done.had_only_rill() && done.downloaded >= c.total && done.seen.iter().filter(|p| p.is_rill()).all(|p| p.rc4),
        "the RC4 leecher should have had everything from rill, over RC4: {}",
        done.describe()
    );

    let refused = wait_for(deadline_within(deadline, 30), &format!("rill to log `{REFUSED_BY_POLICY}`"), || {
        rill.proc.assert_running();
        plain.proc().assert_running();
        if let Some(s) = plain.snapshot().filter(|s| s.downloaded > 0 || !s.peer_ids.is_empty()) {
            panic!("the plaintext-only leecher got past a handshake with rill: {}", s.describe());
        }
        let log = rill.proc.stderr();
        let n = lines_with(&log, REFUSED_BY_POLICY).len();
        (n >= 1).then_some(n)
    });
    // The plaintext leecher saw its connection to rill end without a handshake: closed from rill's side.
    let closed_by_rill = format!("peer [ {} client: Unknown ] disconnecting", rill.addr());
    let plain_log = plain.proc().stdout();
    assert!(
        plain_log.contains(&closed_by_rill),
        "the plaintext leecher's log should show rill closing its connection (`{closed_by_rill}`):\n{plain_log}"
    );
    let plain_view = plain.snapshot().expect("the plaintext leecher's status");
    assert!(
        plain_view.downloaded == 0
            && plain_view.peer_ids.is_empty()
            && plain_view.seen.iter().all(|p| p.downloaded == 0),
        "the plaintext-only leecher should have got no handshake and no payload from rill: {}",
        plain_view.describe()
    );
    assert!(!plain_view.complete, "the plaintext-only leecher completed: {}", plain_view.describe());

    stop_rill(&rill, deadline);
    let log = rill.proc.stderr();
    assert!(log.contains(RC4_SELECTED), "rill's log should show RC4 selected for the RC4 leecher:\n{log}");
    println!(
        "rill seed --encryption require: {refused} plaintext handshakes refused; plaintext leecher {}; RC4 leecher {}",
        plain_view.describe(),
        done.describe()
    );
}

// ---------------------------------------------------------------------------------------------------------------
// 5. `rill download --encryption off`

/// From a libtorrent seeder with default settings (which accepts plaintext handshakes): complete, byte-identical,
/// and no MSE at all, by rill's log and by the seeder's own view of the connection.
#[test]
fn download_encryption_off_from_a_default_seeder_is_plaintext() {
    let deadline = deadline_in(60);
    let dir = TempDir::new("enc-off-default");
    let (c, t) = content_and_torrent(&dir, &dead_announce_url(), 0xE4C_0006, deadline);
    let seeder = lt_seeder(dir.path(), "libtorrent-default", &t, &c, LtEncryption::Default, deadline);
    let out = dir.join("out");
    let rill = spawn_rill(
        dir.path(),
        "rill",
        "download",
        &t,
        &out,
        &["--peer", &seeder.addr(), "--encryption", "off"],
        deadline,
    );
    wait_download_done(&rill, &[&seeder], deadline);
    assert_same_tree(&c.path(), &out.join(&t.name));

    let log = rill.proc.stderr();
    let mse = lines_with(&log, "encrypted handshake");
    assert!(mse.is_empty(), "--encryption off made or answered an MSE handshake: {mse:#?}");
    let retried = lines_with(&log, "handshake refused");
    assert!(retried.is_empty(), "--encryption off retried a connection another way: {retried:#?}");
    let view = wait_for(deadline_within(deadline, 10), "the seeder to count its upload", || {
        seeder.snapshot().filter(|_| seeder.uploaded_bytes() >= c.total)
    });
    let served: Vec<_> = view.seen.iter().filter(|p| p.uploaded > 0).collect();
    assert!(
        !served.is_empty() && served.iter().all(|p| p.is_rill() && !p.rc4 && !p.plaintext_encrypted),
        "the seeder should have served rill over a plain BitTorrent connection only: {}",
        view.describe()
    );
    println!("rill download --encryption off from a default libtorrent seeder; the seeder's view: {}", view.describe());
}

/// How many refused connections to the RC4-only seeder rill must have logged before its lack of progress counts:
/// the first dial and the redial after the back-off (5 s).
const OFF_ATTEMPTS: usize = 2;

/// From a libtorrent seeder with `--encryption rc4` (plaintext handshakes refused): rill's plaintext handshakes
/// are closed by the seeder, at least twice (each an incoming connection in the seeder's log), rill never tries
/// MSE, and nothing is downloaded: the seeder sent no payload and never got past a handshake with rill, by its own
/// account; rill is still running, incomplete.
#[test]
fn download_encryption_off_gets_nothing_from_an_rc4_only_seeder() {
    let deadline = deadline_in(60);
    let dir = TempDir::new("enc-off-rc4");
    let (c, t) = content_and_torrent(&dir, &dead_announce_url(), 0xE4C_0007, deadline);
    let seeder = lt_seeder(dir.path(), "libtorrent-rc4", &t, &c, LtEncryption::Rc4, deadline);
    let out = dir.join("out");
    let rill = spawn_rill(
        dir.path(),
        "rill",
        "download",
        &t,
        &out,
        // The seeder speaks TCP only: without `--no-utp` rill's next way after a refused plaintext TCP handshake
        // is plaintext uTP, whose connect times out (never reaching the seeder). This test is about TCP handshakes.
        &["--peer", &seeder.addr(), "--encryption", "off", "--no-utp"],
        deadline,
    );

    let dropped = format!("{}: dropped: ", seeder.addr());
    let drops: Vec<String> = wait_with_peers(
        &[&seeder],
        deadline_within(deadline, 30),
        &format!("rill to log {OFF_ATTEMPTS} dropped connections to the seeder (`{dropped}…`)"),
        || {
            rill.proc.assert_running();
            let log = rill.proc.stderr();
            let drops: Vec<String> = lines_with(&log, &dropped).into_iter().map(String::from).collect();
            (drops.len() >= OFF_ATTEMPTS).then_some(drops)
        },
    );
    // Each was the seeder hanging up on our plaintext handshake, not a failed connect or our own doing.
    for d in &drops {
        assert!(
            d.contains("closed by peer") || d.contains("i/o error"),
            "a connection to the RC4-only seeder ended otherwise than by the seeder closing it: {d}"
        );
    }
    // They reached the seeder (one incoming connection each, by its own log) and ended there, before any
    // handshake: the seeder refused them.
    // (Its log lags by up to one 0.2 s loop turn.)
    wait_until(deadline_within(deadline, 5), "the seeder to log an incoming connection per rill attempt", || {
        lines_with(&seeder.proc().stdout(), "incoming_connection_alert").len() >= drops.len()
    });
    let view = seeder.snapshot().expect("the seeder's status");
    assert_eq!(seeder.uploaded_bytes(), 0, "the RC4-only seeder sent payload to a plaintext rill: {}", view.describe());
    assert!(
        view.peer_ids.is_empty() && view.seen.iter().all(|p| !p.is_rill()),
        "the RC4-only seeder should never have got past a handshake with rill: {}",
        view.describe()
    );
    rill.proc.assert_running();
    let log = rill.proc.stderr();
    let mse = lines_with(&log, "encrypted handshake");
    assert!(mse.is_empty(), "--encryption off made an MSE handshake: {mse:#?}");
    let retried = lines_with(&log, "trying with encryption");
    assert!(retried.is_empty(), "--encryption off retried with encryption: {retried:#?}");
    stop_rill(&rill, deadline);
    println!("rill download --encryption off vs an RC4-only seeder: {drops:?}; the seeder's view: {}", view.describe());
}
