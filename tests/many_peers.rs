//! Hundreds of peers against one `rill seed` (issue 16, memory per connection): 198 scripted peers in one python
//! process (`tests/peers/many_peers.py`: handshake, `interested`, two pieces each checked against their SHA-1, then
//! idle) plus two real clients (aria2c and a python3-libtorrent leecher, each downloading the whole torrent) make 200
//! concurrent connections; every one is served, rill's peak RSS stays within the aim, and once they leave rill holds
//! no more descriptors than before. And a listener flood (500 connects that never send a byte, 100 that stop in the
//! middle of a handshake, 20 MSE openings dribbled a byte a second; 640 connects a second) while a libtorrent
//! leecher downloads: the leecher completes, RSS stays bounded, at most `MAX_HANDSHAKING` flood connections are
//! held at once and rill closes every one within its handshake timeout.
//!
//! Everything runs on 127.0.0.1; every process is bounded in time and killed by PID; waits are on conditions with
//! deadlines.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::content::{self, assert_same_tree, Content, KIB};
use common::json::{self, Json};
use common::peers::{Aria2, Peer};
use common::seeding::{LtLeechOptions, LtLeecher, RillPeer};
use common::torrent::{self, Torrent};
use common::tracker::Opentracker;
use common::{deadline_in, describe, lifetime_until, peer_script, wait_for, wait_until, Proc, TempDir};

/// Scripted peers, plus aria2c and the libtorrent leecher: 200 at once.
const SCRIPTED: u64 = 198;
const CONCURRENT: u64 = SCRIPTED + 2;
/// rill seed's peak RSS with 200 peers. Before sized buffers each connection held an 80 KiB read buffer and
/// up to 256 KiB of queued blocks (200 such peers: 46 MiB peak, 21 MiB once idle). Now an idle connection costs
/// about 2 KiB and one being served about 20 KiB (one block on its way: the serving budget spread over 200
/// unchoked peers leaves each `SERVE_AHEAD_MIN`) until it has been quiet for 30 s. With the disk threads the
/// peak measured 17.2–17.3 MiB (three runs): the send-ahead was sized once a second, so the 198 peers unchoked
/// in the second after a sample with none each queued up to `SERVE_AHEAD_MAX` of blocks, and their send queues
/// doubled to 64–128 KiB and stayed so while busy. Sized at each unchoke, the peak measured 7.8–7.9 MiB (three
/// runs; 10.4 MiB before the disk threads, when each busy peer queued two blocks): 12 MiB (issue 16's aim)
/// bounds it with a margin for the allocator and the machine, and fails if many peers get the most again.
const RSS_BOUND_KIB: u64 = 12 * 1024;
/// The flood with one leecher: the process, one served peer, and at most `MAX_HANDSHAKING` connections of a few
/// hundred bytes each.
const FLOOD_RSS_BOUND_KIB: u64 = 10 * 1024;
/// `swarm::slots::MAX_HANDSHAKING`.
const MAX_HANDSHAKING: u64 = 64;
/// `peer::session::HANDSHAKE_TIMEOUT`, counted by rill from its accept; the flooder counts from its connect, which
/// in a burst can precede the accept by a few SYN-ACK retransmissions (1 + 2 + 4 s), plus a loaded machine.
const HANDSHAKE_TIMEOUT_SECS: f64 = 20.0 + 10.0;

/// `tests/peers/many_peers.py`, with its status file.
struct ManyPeers {
    proc: Proc,
    status_path: PathBuf,
}

impl ManyPeers {
    fn start(dir: &Path, name: &str, torrent: &Torrent, rill_port: u16, args: &[&str], deadline: Instant) -> Self {
        let status_path = dir.join(format!("{name}-status.json"));
        let mut cmd = Command::new(common::PYTHON);
        cmd.arg("-u")
            .arg(peer_script("many_peers.py"))
            .arg("--port")
            .arg(rill_port.to_string())
            .arg("--torrent")
            .arg(&torrent.path)
            .arg("--status")
            .arg(&status_path)
            .arg("--max-life")
            .arg(lifetime_until(deadline).as_secs().to_string())
            .args(args);
        let proc = Proc::spawn(name, &cmd, &dir.join("logs"), lifetime_until(deadline));
        ManyPeers { proc, status_path }
    }

    fn status(&self) -> Option<Json> {
        json::parse(&fs::read_to_string(&self.status_path).ok()?).ok()
    }

    fn num(&self, group: &str, key: &str) -> u64 {
        self.status().and_then(|s| s.at(&[group, key]).and_then(Json::as_u64)).unwrap_or(0)
    }

    fn float(&self, group: &str, key: &str) -> Option<f64> {
        self.status()?.at(&[group, key])?.as_f64()
    }

    fn describe(&self) -> String {
        self.status().map(|s| format!("{s:?}")).unwrap_or_else(|| "no status".into())
    }
}

/// Descriptors process `pid` has open.
/// The fewest descriptors rill holds over about a second: a resume save's short-lived duplicates of the
/// data files (on its helper thread) are not part of the baseline.
fn settled_fd_count(pid: u32) -> u64 {
    (0..10)
        .map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            fd_count(pid)
        })
        .min()
        .unwrap_or(0)
}

fn fd_count(pid: u32) -> u64 {
    fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0)
}

/// VmHWM (peak resident set) of process `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap_or("");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Eight files, 8 MiB in all, in 64 KiB pieces (128 pieces).
fn content_tree(dir: &TempDir, name: &str) -> Content {
    let files: Vec<(String, u64)> = (0..8).map(|i| (format!("part-{i}.bin"), 1024 * KIB + 777 * i)).collect();
    let files: Vec<(&str, u64)> = files.iter().map(|(n, l)| (n.as_str(), *l)).collect();
    content::write_tree(&dir.mkdir("content"), name, &files, 0x3A7E)
}

#[test]
fn seed_serves_200_concurrent_peers_in_bounded_memory_and_frees_every_descriptor() {
    let deadline = deadline_in(240);
    let dir = TempDir::new("many-peers-200");
    let content = content_tree(&dir, "many");
    let (t, tracker) = Opentracker::with_torrent(dir.path(), deadline, |announce| {
        torrent::libtorrent_create(&content, announce, 64 * KIB, true, &dir.join("t.torrent"), deadline)
    });
    let data = content.copy_to(&dir.mkdir("rill-data"));
    // Every peer may be unchoked at once: 200 peers are served together, the worst case for memory.
    let rill =
        RillPeer::seed(dir.path(), "rill", &t, &data, &["--max-peers", "250", "--max-upload-slots", "250"], deadline);
    tracker.wait_seeders(&t.info_hash, 1, deadline);
    let pid = wait_for(deadline, "rill to be forked", || rill.proc.program_pid());
    let fds_before = settled_fd_count(pid);

    // 1. The scripted peers connect (at most 32 handshakes in flight, as a client's half-open limit), are served
    //    two pieces each and stay connected.
    let scripted = ManyPeers::start(
        dir.path(),
        "many-peers",
        &t,
        rill.port,
        &["--count", &SCRIPTED.to_string(), "--pieces-each", "2", "--pending", "32"],
        deadline,
    );
    wait_until(deadline, "every scripted peer to be connected and served", || {
        rill.proc.assert_running();
        scripted.proc.assert_running();
        scripted.num("peers", "handshaken") == SCRIPTED && scripted.num("peers", "served") == SCRIPTED
    });

    // 2. Two real clients download the whole torrent beside them (throttled to 2 MB/s so that the 200
    //    connections are seen together).
    let aria_out = dir.mkdir("aria2c-out");
    let lt_out = dir.mkdir("libtorrent-out");
    let aria = Aria2::leech_with(dir.path(), "aria2c-leecher", &t, &aria_out, &["--max-download-limit=2M"], deadline);
    let lt_opts =
        LtLeechOptions { peers: vec![rill.addr()], no_tracker: true, download_limit: 2_000_000, ..Default::default() };
    let lt = LtLeecher::start(dir.path(), "libtorrent-leecher", &t, &lt_out, &lt_opts, deadline);
    wait_until(deadline, "200 peers connected to rill at once", || {
        rill.proc.assert_running();
        scripted.proc.assert_running();
        fd_count(pid) >= fds_before + CONCURRENT && scripted.num("peers", "handshaken") == SCRIPTED
    });
    lt.wait_complete(&[&rill.proc, &scripted.proc], deadline);
    let status = wait_for(deadline, "aria2c to finish its download from rill (it exits when done)", || {
        rill.proc.assert_running();
        aria.proc().exited()
    });
    assert!(status.success(), "aria2c leecher failed: {}", describe(status));
    assert_same_tree(&content.path(), &aria_out.join(&t.name));
    assert_same_tree(&content.path(), &lt_out.join(&t.name));

    // 3. Every scripted peer was served good data and none was dropped.
    assert_eq!(scripted.num("peers", "pieces_ok"), 2 * SCRIPTED, "{}", scripted.describe());
    assert_eq!(scripted.num("peers", "pieces_bad"), 0, "{}", scripted.describe());
    assert_eq!(
        scripted.num("peers", "closed_after_handshake"),
        0,
        "rill dropped working peers: {}",
        scripted.describe()
    );
    let peak = peak_rss_kib(pid);
    println!(
        "rill seed with {CONCURRENT} peers: peak RSS {peak} KiB ({:.1} KiB a peer over the whole process), \
         descriptors {fds_before} before",
        peak as f64 / CONCURRENT as f64
    );
    assert!(peak > 0 && peak <= RSS_BOUND_KIB, "rill seed's peak RSS with {CONCURRENT} peers: {peak} KiB");

    // 4. They all leave: rill closes every connection and holds what it held before.
    drop(scripted);
    drop(lt);
    wait_until(deadline, "rill's descriptors to return to what they were before the peers came", || {
        rill.proc.assert_running();
        fd_count(pid) == fds_before
    });
    drop(tracker);
}

#[test]
fn listener_flood_is_capped_and_timed_out_while_a_leecher_downloads() {
    let deadline = deadline_in(180);
    let dir = TempDir::new("many-peers-flood");
    let content = content_tree(&dir, "flood");
    let t = torrent::libtorrent_create(
        &content,
        "http://127.0.0.1:1/announce",
        64 * KIB,
        true,
        &dir.join("t.torrent"),
        deadline,
    );
    let data = content.copy_to(&dir.mkdir("rill-data"));
    let rill = RillPeer::seed(dir.path(), "rill", &t, &data, &["--max-peers", "250"], deadline);
    let pid = wait_for(deadline, "rill to be forked", || rill.proc.program_pid());
    let fds_before = settled_fd_count(pid);

    // 1. The flood: all at once, and held open by the flooder.
    let flood = ManyPeers::start(
        dir.path(),
        "flood",
        &t,
        rill.port,
        &["--count", "0", "--silent", "500", "--partial", "100", "--dribble", "20"],
        deadline,
    );
    let opened = 620;
    wait_until(deadline, "every flood connection to be made (or refused by the kernel)", || {
        rill.proc.assert_running();
        flood.proc.assert_running();
        flood.num("flood", "opened") + flood.num("flood", "refused") == opened
            && flood.num("flood", "connected") + flood.num("flood", "refused") == opened
    });
    // rill's own descriptors: what the flooder counts as open includes connections whose final ACK the kernel
    // has not taken yet (they reach rill's accept queue a SYN-ACK retransmission later).
    let soon = (Instant::now() + Duration::from_secs(10)).min(deadline);
    let held = loop {
        let held = fd_count(pid).saturating_sub(fds_before);
        if held <= MAX_HANDSHAKING || Instant::now() >= soon {
            break held;
        }
        rill.proc.assert_running();
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(held <= MAX_HANDSHAKING, "rill holds {held} connections that never handshook: {}", flood.describe());

    // 2. A real leecher arrives while the flood is held: it gets in and is served.
    let lt_out = dir.mkdir("libtorrent-out");
    let lt_opts = LtLeechOptions { peers: vec![rill.addr()], no_tracker: true, ..Default::default() };
    let lt = LtLeecher::start(dir.path(), "libtorrent-leecher", &t, &lt_out, &lt_opts, deadline);
    lt.wait_complete(&[&rill.proc, &flood.proc], deadline);
    assert_same_tree(&content.path(), &lt_out.join(&t.name));

    // 3. rill closes every flood connection by itself, within its handshake timeout of the connect.
    wait_until(deadline, "rill to close every flood connection", || {
        rill.proc.assert_running();
        flood.proc.assert_running();
        flood.num("flood", "open") == 0
    });
    let connected = flood.num("flood", "connected");
    assert_eq!(flood.num("flood", "closed_by_remote"), connected, "{}", flood.describe());
    let longest = flood.float("flood", "max_held").unwrap_or(f64::MAX);
    assert!(longest <= HANDSHAKE_TIMEOUT_SECS, "a flood connection was held {longest:.1} s: {}", flood.describe());
    let peak = peak_rss_kib(pid);
    println!("rill seed under a {opened}-connection flood with one leecher: peak RSS {peak} KiB");
    assert!(peak > 0 && peak <= FLOOD_RSS_BOUND_KIB, "rill seed's peak RSS under the flood: {peak} KiB");
    drop(lt);
    wait_until(deadline, "rill's descriptors to return to what they were before the flood", || {
        rill.proc.assert_running();
        fd_count(pid) == fds_before
    });
}
