//! The mainline DHT (issue 12) against python3-libtorrent on loopback: a private DHT whose first node is a
//! libtorrent session with no torrent (`lt_peer.py --dht-only-node`). rill downloads a trackerless magnet (only
//! `xt`) from a libtorrent seeder it can find only through the DHT; a libtorrent leecher given only that magnet
//! finds `rill seed` through the DHT; a second rill run with the same state directory starts its lookups from the
//! nodes the first one saved, the bootstrap node being gone; and a flood of malformed and valid KRPC queries from
//! one address leaves rill's peak RSS bounded while its download completes.
//!
//! Every rill run gets an explicit loopback `--dht-bootstrap` and a `--state-dir` in the test's own directory:
//! nothing here may reach the built-in routers. Judged by exit codes, byte-identical trees, the peers' own
//! counters, the bootstrap node's record of the `announce_peer`s it accepted, and /proc. Every process is bounded
//! in time and killed by PID.

mod common;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::content::{self, assert_same_tree, Content, KIB, MIB};
use common::dht::{
    peak_rss_kib, ping_answered, rill_dht_args, trackerless_magnet, FloodReport, KrpcFlooder, LtDht, LtDhtNode,
};
use common::peers::{describe_peers, wait_with_peers, LibtorrentPeer, LtOptions, LtSource, Peer};
use common::seeding::{LtLeechOptions, LtLeecher, RillPeer};
use common::torrent::{self, Torrent};
use common::tracker::announce_url;
use common::{
    deadline_in, deadline_within, describe, free_port, lifetime_until, mkdir, rill_command, wait_for, wait_until, Proc,
    TempDir,
};

/// Only ever `false` in a commit. `true` checks the rig itself before rill has a DHT: a python3-libtorrent peer
/// with the same DHT options stands in for rill (leecher in test 1, seeder in test 2, the flooded downloader in
/// test 4), and test 3 (rill's state file) is left out.
const RIG_CHECK: bool = false;

// ---------------------------------------------------------------------------------------------------------------
// Helpers

/// A URL on which nothing listens: the torrent's tracker, so that the DHT is the only way to find anyone.
fn dead_announce_url() -> String {
    announce_url(free_port())
}

/// A v1 torrent of `c` (64 KiB pieces) made by libtorrent, announcing to a dead tracker.
fn make_torrent(dir: &Path, c: &Content, deadline: Instant) -> Torrent {
    torrent::libtorrent_create(c, &dead_announce_url(), 64 * KIB, true, &dir.join("t.torrent"), deadline)
}

/// A libtorrent seeder of `t` from a copy of `c`, never announcing to a tracker, on the DHT through `bootstrap`
/// (announcing every 2 s while it has no peer); waits until it seeds and `bootstrap` has its announce, so that a
/// lookup can find it from then on.
#[track_caller]
fn dht_seeder(
    dir: &Path,
    name: &str,
    t: &Torrent,
    c: &Content,
    bootstrap: &LtDhtNode,
    upload_limit: u64,
    deadline: Instant,
) -> LibtorrentPeer {
    let data = c.copy_to(&dir.join(format!("{name}-data")));
    let opts = LtOptions {
        seed: true,
        no_tracker: true,
        upload_limit,
        dht: Some(LtDht::via(&bootstrap.addr())),
        ..LtOptions::default()
    };
    let s = LibtorrentPeer::start(dir, name, t, &data, &opts, deadline);
    s.wait_seeding(deadline);
    wait_until(deadline_within(deadline, 30), &format!("{} to have {name}'s announce", bootstrap.name()), || {
        s.proc().assert_running();
        bootstrap.proc.assert_running();
        bootstrap.dht().was_announced(&t.info_hash, s.port)
    });
    s
}

/// `rill download LINK -d OUT --no-ui --port PORT --dht-bootstrap BOOTSTRAP --state-dir STATE [extra…]`; with no
/// `bootstrap`, only `--state-dir STATE` (the built-in routers are forbidden to every rill the tests start, see
/// `rill_command`: the DHT then starts from the saved nodes alone).
#[allow(clippy::too_many_arguments)]
fn spawn_rill_download(
    dir: &Path,
    name: &str,
    link: &str,
    out: &Path,
    port: u16,
    bootstrap: Option<&str>,
    state: &Path,
    extra: &[&str],
    deadline: Instant,
) -> Proc {
    mkdir(out);
    let mut cmd = rill_command();
    cmd.arg("download").arg(link).arg("-d").arg(out).arg("--no-ui").arg("--port").arg(port.to_string());
    match bootstrap {
        Some(b) => cmd.args(rill_dht_args(b, state)),
        None => cmd.arg("--state-dir").arg(state),
    };
    cmd.args(extra);
    cmd.env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
    Proc::spawn(name, &cmd, &dir.join("logs"), lifetime_until(deadline))
}

/// From rill's last status line that has one, its `dht N nodes M peers` part: (nodes known, peers the DHT gave).
fn dht_counts(stdout: &str) -> Option<(u64, u64)> {
    stdout.lines().rev().find_map(|l| {
        let words: Vec<&str> = l[l.rfind("dht ")? + 4..].split_whitespace().collect();
        match words[..] {
            [n, "nodes", m, "peers", ..] => Some((n.parse().ok()?, m.parse().ok()?)),
            _ => None,
        }
    })
}

/// Panics unless rill's last status line says the DHT gave it at least one peer.
#[track_caller]
fn assert_found_through_the_dht(rill: &Proc) {
    let stdout = rill.stdout();
    let counts = dht_counts(&stdout);
    assert!(
        counts.is_some_and(|(_, peers)| peers >= 1),
        "{}'s status should say the DHT gave it a peer (`dht N nodes M peers`), got {counts:?}:\n{stdout}",
        rill.name()
    );
}

/// Panics unless rill's stderr is free of panics and `rill: …` error lines.
#[track_caller]
fn assert_no_rill_errors(rill: &Proc) {
    let err = rill.stderr();
    assert!(!err.contains("panicked"), "{} panicked:\n{err}", rill.name());
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("rill: ")).collect();
    assert!(lines.is_empty(), "{} reported errors: {lines:#?}", rill.name());
}

/// Waits (briefly: counters lag the wire) until `seeder`'s own counter shows at least `bytes` uploaded.
#[track_caller]
fn assert_uploaded(seeder: &dyn Peer, bytes: u64, deadline: Instant) {
    wait_for(
        deadline_within(deadline, 10),
        &format!("{} to report {bytes} B uploaded ({})", seeder.name(), describe_peers(&[seeder])),
        || (seeder.uploaded_bytes() >= bytes).then_some(()),
    );
}

/// A download that must complete: rill (exits 0 when done) or, in a rig check, a libtorrent leecher.
enum Downloader {
    Rill(Proc),
    Libtorrent(LtLeecher),
}

impl Downloader {
    /// Starts downloading `link` into `out`, finding peers through `bootstrap` only.
    #[allow(clippy::too_many_arguments)]
    fn start(
        dir: &Path,
        name: &str,
        link: &str,
        out: &Path,
        port: u16,
        bootstrap: &str,
        state: &Path,
        deadline: Instant,
    ) -> Downloader {
        if RIG_CHECK {
            let opts =
                LtLeechOptions { no_tracker: true, dht: Some(LtDht::via(bootstrap)), ..LtLeechOptions::default() };
            Downloader::Libtorrent(LtLeecher::start_from(
                dir,
                name,
                LtSource::Magnet(link),
                &mkdir(out),
                &opts,
                deadline,
            ))
        } else {
            Downloader::Rill(spawn_rill_download(dir, name, link, out, port, Some(bootstrap), state, &[], deadline))
        }
    }

    fn proc(&self) -> &Proc {
        match self {
            Downloader::Rill(p) => p,
            Downloader::Libtorrent(l) => l.proc(),
        }
    }

    /// The port its DHT node listens on (UDP).
    fn dht_port(&self, rill_port: u16) -> u16 {
        match self {
            Downloader::Rill(_) => rill_port,
            Downloader::Libtorrent(l) => l.port,
        }
    }

    /// Waits until it has everything: rill exits 0, libtorrent says it seeds.
    #[track_caller]
    fn wait_done(&self, others: &[&dyn Peer], deadline: Instant) {
        match self {
            Downloader::Rill(p) => {
                let status = wait_with_peers(others, deadline, &format!("{} to exit", p.name()), || p.exited());
                assert!(status.success(), "{} failed: {}", p.name(), describe(status));
                assert_no_rill_errors(p);
                assert_found_through_the_dht(p);
            }
            Downloader::Libtorrent(l) => {
                let procs: Vec<&Proc> = others.iter().map(|p| p.proc()).collect();
                l.wait_complete(&procs, deadline);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 1. rill downloads a trackerless magnet from a libtorrent seeder found through the DHT

/// A private DHT of two libtorrent sessions: B (a node only) and the seeder S (its first node is B; it announced
/// to B). rill is given `magnet:?xt=urn:btih:HEX` and nothing else, with `--dht-bootstrap B`: no tracker, no
/// `--peer`, no `x.pe`. It must look the info-hash up on the DHT, find S, fetch the metadata and the data from
/// it. Exit 0, byte-identical, S's own counter shows it sent everything.
#[test]
fn rill_downloads_a_trackerless_magnet_from_a_seeder_found_through_the_dht() {
    let deadline = deadline_in(90);
    let dir = TempDir::new("dht-download");
    let c = content::small_tree(&dir.mkdir("content"), "dht-tree", 0xD47_0001);
    let t = make_torrent(dir.path(), &c, deadline);
    let b = LtDhtNode::start(dir.path(), "bootstrap", &[], deadline);
    let s = dht_seeder(dir.path(), "seeder", &t, &c, &b, 0, deadline);

    let link = trackerless_magnet(&t.info_hash);
    let out = dir.join("out");
    let started = Instant::now();
    let rill = Downloader::start(dir.path(), "rill", &link, &out, free_port(), &b.addr(), &dir.join("state"), deadline);
    rill.wait_done(&[&s], deadline);
    let took = started.elapsed();

    assert_same_tree(&c.path(), &out.join(&t.name));
    assert_uploaded(&s, c.total, deadline);
    println!(
        "trackerless magnet over the DHT: {} bytes in {:.2} s from spawning the downloader; {}",
        c.total,
        took.as_secs_f64(),
        describe_peers(&[&s])
    );
}

// ---------------------------------------------------------------------------------------------------------------
// 2. A libtorrent leecher given only the magnet finds `rill seed` through the DHT

/// `rill seed X.torrent --dht-bootstrap B` must announce itself: B records an `announce_peer` for the torrent at
/// rill's port. A libtorrent leecher given only `magnet:?xt=…` and B as its first node (it never announces to a
/// tracker and dials nobody) then finds rill through the DHT and downloads the metadata and every byte from it.
#[test]
fn libtorrent_given_only_the_magnet_finds_rill_seed_through_the_dht() {
    let deadline = deadline_in(90);
    let dir = TempDir::new("dht-seed");
    let c = content::small_tree(&dir.mkdir("content"), "dht-served", 0xD47_0002);
    let t = make_torrent(dir.path(), &c, deadline);
    let b = LtDhtNode::start(dir.path(), "bootstrap", &[], deadline);

    let seeder = Seeder::start(dir.path(), &t, &c, &b, deadline);
    let (seeder_proc, seeder_port) = (seeder.proc(), seeder.port());
    let announced = Instant::now();
    wait_until(deadline_within(deadline, 30), "the bootstrap node to have the seeder's announce_peer", || {
        seeder_proc.assert_running();
        b.proc.assert_running();
        b.dht().was_announced(&t.info_hash, seeder_port)
    });
    let announce_took = announced.elapsed();

    let link = trackerless_magnet(&t.info_hash);
    let out = dir.mkdir("out");
    let opts = LtLeechOptions { no_tracker: true, dht: Some(LtDht::via(&b.addr())), ..LtLeechOptions::default() };
    let started = Instant::now();
    let lt = LtLeecher::start_from(dir.path(), "libtorrent-leecher", LtSource::Magnet(&link), &out, &opts, deadline);
    let done = lt.wait_complete(&[seeder_proc, &b.proc], deadline);
    let took = started.elapsed();

    assert_same_tree(&c.path(), &out.join(&t.name));
    assert!(done.downloaded >= c.total, "downloaded less than the content: {}", done.describe());
    if let Seeder::Rill(r) = &seeder {
        // Every handshake it made was with rill and it downloaded everything: all of it came from rill. (Its
        // per-peer totals lag behind: a connection closed at completion may leave them at 0.)
        assert!(done.had_only_rill(), "the leecher had peers other than rill: {}", done.describe());
        assert_no_rill_errors(&r.proc);
    }
    println!(
        "libtorrent found the seeder through the DHT: its announce reached the bootstrap node {:.2} s after it \
         started waiting; the leecher completed {} bytes {:.2} s after spawning ({})",
        announce_took.as_secs_f64(),
        c.total,
        took.as_secs_f64(),
        done.describe()
    );
}

/// The seeder under test: `rill seed X.torrent --dht-bootstrap B`, or (in a rig check) a libtorrent seeder on the
/// same DHT in its place.
enum Seeder {
    Rill(RillPeer),
    Libtorrent(LibtorrentPeer),
}

impl Seeder {
    #[track_caller]
    fn start(dir: &Path, t: &Torrent, c: &Content, bootstrap: &LtDhtNode, deadline: Instant) -> Seeder {
        if RIG_CHECK {
            Seeder::Libtorrent(dht_seeder(dir, "libtorrent-stand-in", t, c, bootstrap, 0, deadline))
        } else {
            let data = c.copy_to(&dir.join("rill-data"));
            let args = rill_dht_args(&bootstrap.addr(), &dir.join("rill-state"));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Seeder::Rill(RillPeer::seed(dir, "rill", t, &data, &args, deadline))
        }
    }

    fn proc(&self) -> &Proc {
        match self {
            Seeder::Rill(r) => &r.proc,
            Seeder::Libtorrent(l) => l.proc(),
        }
    }

    fn port(&self) -> u16 {
        match self {
            Seeder::Rill(r) => r.port,
            Seeder::Libtorrent(l) => l.port,
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 3. A second run starts from the nodes the first one saved

/// The state file rill keeps in `--state-dir`.
fn state_file(state: &Path) -> PathBuf {
    state.join("dht.dat")
}

/// The number of saved nodes rill says it started from: `dht: node …, N saved nodes, …` (info level).
fn saved_nodes_loaded(stderr: &str) -> Option<u64> {
    stderr.lines().filter(|l| l.contains("dht: node ")).find_map(|l| {
        let words: Vec<&str> = l.split(|c: char| c.is_whitespace() || c == ',').filter(|w| !w.is_empty()).collect();
        words.windows(3).find(|w| w[1] == "saved" && w[2] == "nodes").and_then(|w| w[0].parse().ok())
    })
}

/// A DHT of B, a second node N (first node B) and the seeder S (first node B; announced to B and N). A first
/// `rill download MAGNET --dht-bootstrap B --state-dir STATE` completes and leaves `STATE/dht.dat`. Then B is
/// killed, and the second run, with the same state dir, gets no `--dht-bootstrap` at all (and the built-in routers
/// are forbidden to every rill the tests start): it can reach the DHT only through the nodes it saved (N and S).
/// It must say it loaded them, find S, and complete again into a fresh directory.
#[test]
fn a_second_run_starts_from_the_saved_nodes_when_the_bootstrap_node_is_gone() {
    if RIG_CHECK {
        return;
    }
    let deadline = deadline_in(120);
    let dir = TempDir::new("dht-state");
    let c = content::small_tree(&dir.mkdir("content"), "dht-again", 0xD47_0003);
    let t = make_torrent(dir.path(), &c, deadline);
    let b = LtDhtNode::start(dir.path(), "bootstrap", &[], deadline);
    let n = LtDhtNode::start(dir.path(), "second-node", &[b.addr()], deadline);
    b.wait_nodes(1, deadline_within(deadline, 20));
    let s = dht_seeder(dir.path(), "seeder", &t, &c, &b, 0, deadline);
    wait_until(deadline_within(deadline, 30), "the second node to have the seeder's announce", || {
        n.proc.assert_running();
        s.proc().assert_running();
        n.dht().was_announced(&t.info_hash, s.port)
    });

    let link = trackerless_magnet(&t.info_hash);
    let state = dir.join("rill-state");
    let (out1, out2) = (dir.join("out-1"), dir.join("out-2"));
    let first =
        spawn_rill_download(dir.path(), "rill-1", &link, &out1, free_port(), Some(&b.addr()), &state, &[], deadline);
    let status = wait_with_peers(&[&s], deadline, "the first rill download to exit", || first.exited());
    assert!(status.success(), "the first rill download failed: {}", describe(status));
    assert_same_tree(&c.path(), &out1.join(&t.name));
    assert_no_rill_errors(&first);
    assert_found_through_the_dht(&first);
    assert_eq!(saved_nodes_loaded(&first.stderr()), Some(0), "the first run should start with no saved node");
    let saved = state_file(&state);
    let len = fs::metadata(&saved)
        .map(|m| m.len())
        .unwrap_or_else(|e| panic!("no {} after the first run: {e}", saved.display()));
    assert!(len > 0, "{} is empty", saved.display());

    b.proc.kill();
    assert!(b.proc.exited().is_some(), "the bootstrap node is still running");

    let started = Instant::now();
    let second = spawn_rill_download(dir.path(), "rill-2", &link, &out2, free_port(), None, &state, &[], deadline);
    let status = wait_with_peers(&[&s], deadline, "the second rill download to exit", || {
        n.proc.assert_running();
        second.exited()
    });
    let took = started.elapsed();
    assert!(status.success(), "the second rill download (no bootstrap, saved nodes only) failed: {}", describe(status));
    assert_same_tree(&c.path(), &out2.join(&t.name));
    assert_no_rill_errors(&second);
    assert_found_through_the_dht(&second);
    let loaded = saved_nodes_loaded(&second.stderr());
    assert!(loaded.is_some_and(|k| k >= 1), "the second run should start from saved nodes: {loaded:?}");
    assert_uploaded(&s, 2 * c.total, deadline);
    println!(
        "second run from {loaded:?} saved nodes ({len} bytes of state), no bootstrap: complete in {:.2} s",
        took.as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------------------------
// 4. A KRPC flood from one address: peak RSS bounded, the download completes

/// Datagrams a second from the flooder: far above any rate limit a node should grant one address, and a real
/// load for the loop (each must be decoded or dropped).
const FLOOD_RATE: u64 = 5_000;

/// Two downloads of the same content from the same libtorrent seeder (found through the DHT), side by side: a
/// quiet one, and one whose port gets a flood of malformed and valid KRPC queries from 127.0.0.2 (valid ones:
/// ping, find_node, get_peers for random info-hashes, and announce_peer for fresh info-hashes, with tokens it
/// handed out) for as long as it runs. Both complete, byte-identical. The flooded one's peak RSS stays within
/// [`FLOOD_RSS_MARGIN_KIB`] of the quiet one's; most of the flood's valid queries go unanswered (a per-source rate
/// limit) while a well-behaved stranger from 127.0.0.1 still gets its ping answered during the flood (the flood's
/// source is limited, not the loop).
#[test]
fn a_krpc_flood_leaves_rss_bounded_and_the_download_going() {
    let deadline = deadline_in(120);
    let dir = TempDir::new("dht-flood");
    let files: &[(&str, u64)] = &[("big.bin", 5 * MIB + 4_321), ("small.bin", 70_001)];
    let c = content::write_tree(&dir.mkdir("content"), "dht-flooded", files, 0xD47_0004);
    let t = make_torrent(dir.path(), &c, deadline);
    let b = LtDhtNode::start(dir.path(), "bootstrap", &[], deadline);
    // Throttled, so that the flood overlaps several seconds of transfer: 10 MB in all at 1 MB/s.
    let s = dht_seeder(dir.path(), "seeder", &t, &c, &b, 1_000_000, deadline);
    let link = trackerless_magnet(&t.info_hash);

    let (quiet_port, flooded_port) = (free_port(), free_port());
    let quiet = Downloader::start(
        dir.path(),
        "quiet",
        &link,
        &dir.join("out-quiet"),
        quiet_port,
        &b.addr(),
        &dir.join("state-quiet"),
        deadline,
    );
    let flooded = Downloader::start(
        dir.path(),
        "flooded",
        &link,
        &dir.join("out-flooded"),
        flooded_port,
        &b.addr(),
        &dir.join("state-flooded"),
        deadline,
    );
    let target = SocketAddr::from(([127, 0, 0, 1], flooded.dht_port(flooded_port)));
    let flooder = KrpcFlooder::start("127.0.0.2", target, FLOOD_RATE, Duration::from_secs(60), 0xF100D);

    // Peak RSS, polled while each runs (VmHWM only grows; the last reading before exit is kept).
    let (mut quiet_hwm, mut flooded_hwm) = (0u64, 0u64);
    let mut stranger_answered = None;
    let started = Instant::now();
    wait_until(deadline, "both downloads to complete", || {
        s.proc().assert_running();
        for (d, hwm) in [(&quiet, &mut quiet_hwm), (&flooded, &mut flooded_hwm)] {
            if let Some(pid) = d.proc().program_pid() {
                *hwm = (*hwm).max(peak_rss_kib(pid).unwrap_or(0));
            }
        }
        if stranger_answered.is_none() && started.elapsed() > Duration::from_secs(2) {
            stranger_answered = Some(ping_answered("127.0.0.1", target, Duration::from_secs(5)));
        }
        done(&quiet) && done(&flooded)
    });
    let report: FloodReport = flooder.stop();
    quiet.wait_done(&[&s], deadline);
    flooded.wait_done(&[&s], deadline);
    assert_same_tree(&c.path(), &dir.join("out-quiet").join(&t.name));
    assert_same_tree(&c.path(), &dir.join("out-flooded").join(&t.name));

    println!(
        "KRPC flood: {} datagrams in {:.1} s ({} valid queries, {} malformed, {} announces with a real token); {} \
         replies ({} answers); peak RSS quiet {} KiB, flooded {} KiB; stranger's ping answered: {:?}",
        report.sent,
        report.elapsed.as_secs_f64(),
        report.valid_queries,
        report.malformed,
        report.announces_with_token,
        report.replies,
        report.answers,
        quiet_hwm,
        flooded_hwm,
        stranger_answered
    );
    assert!(report.sent >= 5 * FLOOD_RATE, "the flood was too short to mean anything: {report:?}");
    assert!(report.answers > 0, "the flooded node answered none of the valid queries: {report:?}");
    if !RIG_CHECK {
        // The per-source rate limit: most of one address's queries go unanswered (the libtorrent stand-in of a
        // rig check has its blocker relaxed, and answers them all).
        assert!(
            report.answers * 2 < report.valid_queries,
            "rill answered {} of {} valid queries from one address: no rate limit",
            report.answers,
            report.valid_queries
        );
    }
    assert_eq!(stranger_answered, Some(true), "a ping from 127.0.0.1 went unanswered during the flood");
    assert!(quiet_hwm > 0 && flooded_hwm > 0, "no VmHWM reading: quiet {quiet_hwm}, flooded {flooded_hwm}");
    assert!(
        flooded_hwm <= quiet_hwm + FLOOD_RSS_MARGIN_KIB,
        "the flooded download peaked at {flooded_hwm} KiB, over the quiet one's {quiet_hwm} KiB + \
         {FLOOD_RSS_MARGIN_KIB} KiB"
    );
}

/// What a flood may add to peak RSS: everything the DHT machine can hold at its largest, by its own account
/// (`dht::Config`: two full routing tables ≤ 550 KB, a full peer store ≤ 1 MB, the rate-limit table ≈ 150 KB,
/// 256 queued datagrams ≤ 400 KB: ≈ 2.1 MB), plus 2 MiB of slack for the allocator and for two runs not peaking
/// at the same moment. A leak of even 100 bytes per datagram would show: the flood sends over 50,000.
const FLOOD_RSS_MARGIN_KIB: u64 = 4 * 1024;

/// Whether a downloader has finished (rill exited, or libtorrent seeds).
fn done(d: &Downloader) -> bool {
    match d {
        Downloader::Rill(p) => p.exited().is_some(),
        Downloader::Libtorrent(l) => l.snapshot().is_some_and(|s| s.complete),
    }
}
