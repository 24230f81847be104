//! The fast extension (BEP 6, issue 11) against python3-libtorrent on loopback.
//!
//! (1) A libtorrent seeder that keeps rill choked for 0.8 s after it connects, then unchokes and chokes it in turn
//! every 0.8 s (`lt_peer.py --choke-cycle`), throttled so that rill's requests queue up there: with BEP 6, each choke makes libtorrent reject the queued
//! requests (its log shows `==> REJECT_PIECE`), rill puts exactly those back and asks again, and the download
//! completes byte-identical with no request ever timing out. Before the seeder first unchokes rill, rill
//! asks for the seeder's allowed-fast pieces only, and gets them. rill's counters come from the line it logs at info
//! level when a connection closes (`peer N: closed; fast extension on, R requests rejected by the peer, …, T
//! requests timed out`).
//! (2) rill seeds to a libtorrent leecher, which sees `have all` from rill in place of a bitfield.
//!
//! Every process is bounded in time and killed by PID; on failure every log tail is printed.

mod common;

use std::path::Path;
use std::time::Instant;

use common::content::{self, assert_same_tree, KIB, MIB};
use common::json::{self, Json};
use common::leecher::spawn_rill_download;
use common::peers::LtPeerLaunch;
use common::seeding::RillPeer;
use common::torrent::{self, Torrent};
use common::{deadline_in, deadline_within, describe, wait_for, Proc, TempDir};

/// A tracker that refuses connections: the peers meet through `--peer` only.
const NO_TRACKER: &str = "http://127.0.0.1:1/announce";

/// A python3-libtorrent peer with the options this file needs, and its status file.
struct Lt {
    proc: Proc,
    port: u16,
    status_path: std::path::PathBuf,
}

impl Lt {
    #[track_caller]
    fn start(dir: &Path, name: &str, t: &Torrent, save: &Path, args: &[&str], deadline: Instant) -> Lt {
        let LtPeerLaunch { mut cmd, port, status_path, lifetime } = LtPeerLaunch::new(dir, name, t, save, deadline);
        cmd.args(["--no-tracker", "--log-peer-messages"]).args(args);
        let proc = Proc::spawn(name, &cmd, &dir.join("logs"), lifetime);
        Lt { proc, port, status_path }
    }

    fn status(&self) -> Option<Json> {
        json::parse(&std::fs::read_to_string(&self.status_path).ok()?).ok()
    }

    fn is_seeding(&self) -> bool {
        self.status().and_then(|s| s.get("is_seeding").and_then(Json::as_bool)) == Some(true)
    }

    #[track_caller]
    fn wait_seeding(&self, deadline: Instant, what: &str) {
        wait_for(deadline, what, || {
            self.proc.assert_running();
            self.is_seeding().then_some(())
        });
    }
}

/// One connection's counters from rill's closing line.
#[derive(Debug)]
struct Closed {
    fast: bool,
    rejects_received: u64,
    timed_out: u64,
}

/// Every `peer N: closed; fast extension on|off, R requests rejected by the peer, S rejected by us, T requests
/// timed out` line of rill's log.
fn closed_lines(log: &str) -> Vec<Closed> {
    log.lines()
        .filter_map(|line| {
            let rest = &line[line.find(": closed; fast extension ")? + ": closed; fast extension ".len()..];
            let fast = rest.starts_with("on");
            let number_before = |label: &str| -> Option<u64> {
                let end = rest.find(label)?;
                rest[..end].trim_end().rsplit(' ').next()?.parse().ok()
            };
            Some(Closed {
                fast,
                rejects_received: number_before(" requests rejected by the peer")?,
                timed_out: number_before(" requests timed out")?,
            })
        })
        .collect()
}

/// The piece number after `marker` in a line of libtorrent's peer log (`==> ALLOWED_FAST [ 40 ]`,
/// `<== REQUEST [ piece: 40 s: 0 l: 4000 ]`).
fn piece_of(line: &str, marker: &str) -> Option<u64> {
    let rest = &line[line.find(marker)? + marker.len()..];
    rest.split(' ').next()?.parse().ok()
}

#[test]
fn closing_line_parses() {
    let line = "[2026-12-02T21:04:34Z INFO  rill::peer::session] peer 1: closed; fast extension on, 378 requests \
                rejected by the peer, 2 rejected by us, 0 requests timed out";
    let c = closed_lines(line);
    assert_eq!(c.len(), 1);
    assert!(c[0].fast);
    assert_eq!((c[0].rejects_received, c[0].timed_out), (378, 0));
}

/// (1) A seeder whose choker really chokes rill mid-transfer, over and over (and first of all at the start).
#[test]
fn choked_by_a_rejecting_seeder_mid_transfer_rill_completes_without_time_outs() {
    let deadline = deadline_in(120);
    let dir = TempDir::new("fast-choke-cycle");
    let content = content::write_single(&dir.mkdir("content"), "cycled.bin", 8 * MIB + 1_234, 0xFA57);
    let t = torrent::libtorrent_create(&content, NO_TRACKER, 64 * KIB, true, &dir.join("t.torrent"), deadline);

    let seed_data = content.copy_to(&dir.mkdir("seed-data"));
    // 1.5 MB/s: about six seconds for the whole file, so the seeder chokes rill several times meanwhile.
    let seeder = Lt::start(
        dir.path(),
        "libtorrent-seeder",
        &t,
        &seed_data,
        &["--seed", "--upload-limit", "1500000", "--choke-cycle", "0.8"],
        deadline,
    );
    seeder.wait_seeding(deadline, "the libtorrent seeder to check its data");

    let out = dir.mkdir("rill-out");
    let peer = format!("127.0.0.1:{}", seeder.port);
    let rill = spawn_rill_download(dir.path(), &t, &out, &[peer], &[], deadline);
    let status = wait_for(deadline, "rill to finish its download and exit", || {
        seeder.proc.assert_running();
        rill.exited()
    });
    assert!(status.success(), "rill download failed: {}", describe(status));
    assert_same_tree(&content.path(), &out.join(&t.name));

    // libtorrent choked rill mid-transfer and rejected requests it had queued.
    let lt_log = seeder.proc.stdout();
    let chokes = lt_log.lines().filter(|l| l.contains("==> CHOKE")).count();
    let rejects_sent = lt_log.lines().filter(|l| l.contains("==> REJECT_PIECE")).count();
    assert!(lt_log.contains("<== EXTENSIONS") && lt_log.contains("FAST extension"), "rill's handshake lacks BEP 6");
    assert!(chokes >= 1 && rejects_sent > 0, "libtorrent choked rill {chokes} times and sent {rejects_sent} rejects");

    // The seeder starts with rill choked and offers its allowed-fast set when rill says it is interested: until
    // its first unchoke, rill asks for those pieces only (anything else would be rejected, and asked for more
    // than 2 s after a choke, get rill dropped), and libtorrent serves them.
    let offered: Vec<u64> = lt_log.lines().filter_map(|l| piece_of(l, "==> ALLOWED_FAST [ ")).collect();
    assert!(!offered.is_empty(), "libtorrent offered no allowed-fast set");
    let before_unchoke: Vec<&str> = lt_log.lines().take_while(|l| !l.contains("==> UNCHOKE")).collect();
    let asked: Vec<u64> = before_unchoke.iter().filter_map(|l| piece_of(l, "<== REQUEST [ piece: ")).collect();
    let served = before_unchoke.iter().filter_map(|l| piece_of(l, "==> PIECE [ piece: ")).count();
    assert!(
        !asked.is_empty() && asked.iter().all(|p| offered.contains(p)),
        "while choked at the start rill should ask for allowed-fast pieces {offered:?} only; it asked for {asked:?}"
    );
    assert!(served > 0, "libtorrent served none of rill's allowed-fast requests before unchoking it");

    // rill took those rejects as answers, and no request of its ever went unanswered for its time-out.
    let log = rill.stderr();
    let closed = closed_lines(&log);
    assert!(!closed.is_empty(), "rill logged no closing counters (RUST_LOG must include rill=info):\n{log}");
    assert!(closed.iter().all(|c| c.fast), "the connection to libtorrent should use the fast extension: {closed:?}");
    assert_eq!(closed.len(), 1, "one connection from start to end (libtorrent never dropped rill): {closed:?}");
    let received: u64 = closed.iter().map(|c| c.rejects_received).sum();
    let timed_out: u64 = closed.iter().map(|c| c.timed_out).sum();
    assert!(received > 0, "rill counted no rejects of its open requests: {closed:?}");
    assert_eq!(timed_out, 0, "requests timed out: {closed:?}");
    println!(
        "libtorrent choked rill {chokes} times and rejected {rejects_sent} requests; rill took back {received} \
         open requests from rejects, 0 time-outs; before its first unchoke rill asked for {} allowed-fast blocks \
         and got {served}",
        asked.len()
    );
}

/// (2) rill seeds to a libtorrent leecher: `have all` replaces the bitfield.
#[test]
fn a_libtorrent_leecher_sees_have_all_from_a_rill_seed() {
    let deadline = deadline_in(60);
    let dir = TempDir::new("fast-have-all");
    let content = content::write_single(&dir.mkdir("content"), "whole.bin", 2 * MIB + 77, 0xA11);
    let t = torrent::libtorrent_create(&content, NO_TRACKER, 64 * KIB, true, &dir.join("t.torrent"), deadline);
    let data = content.copy_to(&dir.mkdir("rill-data"));
    let rill = RillPeer::seed(dir.path(), "rill", &t, &data, &[], deadline);

    let out = dir.mkdir("libtorrent-out");
    let leecher = Lt::start(dir.path(), "libtorrent-leecher", &t, &out, &["--peer", &rill.addr()], deadline);
    leecher.wait_seeding(deadline, "the libtorrent leecher to complete its download from rill");
    assert_same_tree(&content.path(), &out.join(&t.name));
    let lt_log = leecher.proc.stdout();
    assert!(lt_log.contains("<== HAVE_ALL"), "libtorrent never saw `have all` from rill");
    assert!(!lt_log.contains("<== BITFIELD"), "rill sent a bitfield to a fast peer");

    let status = rill.interrupt(deadline_within(deadline, 15));
    assert!(status.success(), "rill seed did not exit 0 after SIGINT: {}", describe(status));
}
