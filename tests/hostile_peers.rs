//! Connection slots under pressure (issue 9): fifty peers that complete the handshake and then only send
//! keep-alives (`tests/peers/idle_peers.py`) must not keep rill from its real peers, with `--max-peers` at its
//! default (50). Incoming connections may take only 40 of the 50 slots (the rest are kept for connections rill
//! dials), and a peer that has stated no interest either way gives its slot to a newcomer after a few seconds.
//! Every process is bounded in time and killed by PID; on failure every process's log tail is printed.
//!
//! Everything runs on 127.0.0.1, which the one-connection-per-address cap exempts (see `swarm/slots.rs`), so
//! the fifty idle connections all count.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use common::content::{self, assert_same_tree, KIB};
use common::json::{self, Json};
use common::peers::LtPeerLaunch;
use common::seeding::{LtLeechOptions, LtLeecher, RillPeer};
use common::torrent::{self, Torrent};
use common::{
    deadline_in, deadline_within, describe, lifetime_until, peer_script, wait_for, wait_until, Proc, TempDir,
};

/// rill's default `--max-peers`, and how many of them incoming connections may take (a fifth is reserved).
const MAX_PEERS: u64 = 50;
const MAX_INCOMING: u64 = 40;
/// How many idle connections the script opens.
const IDLE_COUNT: u64 = 50;
/// `swarm::slots::INTEREST_GRACE`: how long a new peer has to state its interest before an idle one can be
/// replaced, plus a margin for the clocks of two processes.
const INTEREST_GRACE_SECS: f64 = 5.0 + 1.0;
/// A tracker nobody listens on: the peers in these tests are given directly.
const NO_TRACKER: &str = "http://127.0.0.1:1/announce";

/// `tests/peers/idle_peers.py`: IDLE_COUNT connections to rill that handshake and then idle.
struct IdlePeers {
    proc: Proc,
    status_path: PathBuf,
}

impl IdlePeers {
    fn start(dir: &Path, torrent: &Torrent, rill_port: u16, deadline: Instant) -> IdlePeers {
        let status_path = dir.join("idle-status.json");
        let mut cmd = Command::new(common::PYTHON);
        cmd.arg("-u")
            .arg(peer_script("idle_peers.py"))
            .arg("--port")
            .arg(rill_port.to_string())
            .arg("--info-hash")
            .arg(torrent.hex_hash())
            .arg("--count")
            .arg(IDLE_COUNT.to_string())
            .arg("--status")
            .arg(&status_path)
            .arg("--max-life")
            .arg(lifetime_until(deadline).as_secs().to_string());
        let proc = Proc::spawn("idle-peers", &cmd, &dir.join("logs"), lifetime_until(deadline));
        IdlePeers { proc, status_path }
    }

    fn status(&self) -> Option<Json> {
        json::parse(&std::fs::read_to_string(&self.status_path).ok()?).ok()
    }

    fn num(&self, key: &str) -> u64 {
        self.status().and_then(|s| s.get(key).and_then(Json::as_u64)).unwrap_or(0)
    }

    fn describe(&self) -> String {
        self.status().map(|s| format!("{s:?}")).unwrap_or_else(|| "no status".into())
    }

    /// Waits until every idle connection was either taken (handshaken) or refused: rill's incoming share is
    /// full of idle peers.
    #[track_caller]
    fn wait_holding_incoming_slots(&self, rill: &Proc, deadline: Instant) {
        wait_for(deadline, "the idle peers to hold rill's incoming slots", || {
            rill.assert_running();
            self.proc.assert_running();
            let (held, refused) = (self.num("handshaken"), self.num("closed_by_remote"));
            (held + refused == IDLE_COUNT && held >= MAX_INCOMING).then_some(())
        });
        assert_eq!(
            self.num("handshaken"),
            MAX_INCOMING,
            "incoming connections must take at most {MAX_INCOMING} of {MAX_PEERS} slots: {}",
            self.describe()
        );
    }

    /// Waits until every idle connection rill holds is past the grace period rill gives a new peer: from then on
    /// they are what the test is about, peers that hold a slot and are of no use. (A leecher refused before that
    /// is not lost, but libtorrent only dials a refusing peer again a minute later.)
    #[track_caller]
    fn wait_past_grace(&self, deadline: Instant) {
        wait_for(deadline, "the idle connections to be past rill's grace period", || {
            self.proc.assert_running();
            let last = self.status()?.get("last_handshake_at")?.as_f64()?;
            let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs_f64();
            (now - last >= INTEREST_GRACE_SECS).then_some(())
        });
    }
}

/// 50 idle peers connect to a downloading rill before its only seeder is up; rill still dials the seeder once it
/// is (into a slot incoming peers cannot take) and the download completes byte-identical.
#[test]
fn download_completes_while_idle_peers_hold_every_incoming_slot() {
    let deadline = deadline_in(120);
    let dir = TempDir::new("hostile-idle-download");
    let content = content::small_tree(&dir.mkdir("content"), "idle-download", 0x1D1E);
    let t = torrent::libtorrent_create(&content, NO_TRACKER, 64 * KIB, true, &dir.join("t.torrent"), deadline);

    // The seeder's port is known before it runs: rill is told to dial it, fails, and retries with back-off.
    let seed_data = content.copy_to(&dir.mkdir("seed-data"));
    let mut seeder_launch = LtPeerLaunch::new(dir.path(), "libtorrent-seeder", &t, &seed_data, deadline);
    let seeder_addr = format!("127.0.0.1:{}", seeder_launch.port);
    let out = dir.mkdir("out");
    let rill = RillPeer::download(dir.path(), "rill", &t, &out, &["--peer", &seeder_addr], deadline);

    let idle = IdlePeers::start(dir.path(), &t, rill.port, deadline);
    idle.wait_holding_incoming_slots(&rill.proc, deadline);

    seeder_launch.cmd.arg("--seed");
    let seeder = Proc::spawn("libtorrent-seeder", &seeder_launch.cmd, &dir.join("logs"), seeder_launch.lifetime);
    let status = wait_for(deadline, "rill to finish its download (it exits when done)", || {
        seeder.assert_running();
        rill.proc.exited()
    });
    assert!(status.success(), "rill failed: {}", describe(status));
    assert_same_tree(&content.path(), &out.join(&t.name));
    assert!(idle.proc.exited().is_none(), "the idle peers must have run all along");
}

/// 50 idle peers connect to `rill seed` first; a real leecher (python3-libtorrent, dialling rill only) arrives
/// afterwards, takes the slot of an idle peer, and is served the whole torrent.
#[test]
fn seeder_serves_a_real_leecher_while_idle_peers_hold_the_slots() {
    let deadline = deadline_in(120);
    let dir = TempDir::new("hostile-idle-seed");
    let content = content::small_tree(&dir.mkdir("content"), "idle-seed", 0x5EED1D);
    let t = torrent::libtorrent_create(&content, NO_TRACKER, 64 * KIB, true, &dir.join("t.torrent"), deadline);

    let data = content.copy_to(&dir.mkdir("rill-data"));
    let rill = RillPeer::seed(dir.path(), "rill", &t, &data, &[], deadline);
    let idle = IdlePeers::start(dir.path(), &t, rill.port, deadline);
    idle.wait_holding_incoming_slots(&rill.proc, deadline);
    idle.wait_past_grace(deadline);

    let lt_out = dir.mkdir("libtorrent-out");
    let opts = LtLeechOptions { peers: vec![rill.addr()], no_tracker: true, ..LtLeechOptions::default() };
    let lt = LtLeecher::start(dir.path(), "libtorrent-leecher", &t, &lt_out, &opts, deadline);
    let started = Instant::now();
    let snapshot = lt.wait_complete(&[&rill.proc, &idle.proc], deadline);
    let took = started.elapsed();
    assert_same_tree(&content.path(), &lt_out.join(&t.name));
    assert!(
        snapshot.had_only_rill() && snapshot.downloaded >= content.total,
        "the leecher should have had every byte from rill: {}",
        snapshot.describe()
    );
    // The idle peers' status file is rewritten every 0.2 s: wait for it to show the replaced peer's close.
    let replaced = || idle.num("closed_by_remote") > IDLE_COUNT - MAX_INCOMING;
    if !replaced() {
        wait_until(deadline_within(deadline, 5), "the idle peers to see one of theirs replaced", replaced);
    }
    assert!(replaced(), "the leecher got in by replacing an idle peer: {}", idle.describe());
    println!("served past {IDLE_COUNT} idle peers in {:.1} s", took.as_secs_f64());
}
