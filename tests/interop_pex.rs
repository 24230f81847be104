//! Peer exchange (BEP 11, `ut_pex`) against real software on loopback (issue 11).
//!
//! The swarm: a python3-libtorrent seeder S that dials no one (no tracker, no PEX), and a peer P that rill is told
//! about with `--peer` and that knows S. rill is given P only, so the only way it can reach S is an address
//! learned through PEX.
//! - [`pex_learned_seeder_is_dialled_and_sends_most_of_the_data`]: P is python3-libtorrent with `ut_pex` on (it
//!   sends its first PEX message about a second after the extended handshake, not after a minute), a leecher of S
//!   throttled to a trickle both ways, so rill must fetch from S: S's and P's own counters must show that S sent
//!   rill at least half the torrent.
//! - [`private_torrent_never_dials_a_pex_learned_peer`]: with `private` = 1 (BEP 27) rill must never connect to
//!   S, and still completes from P (a throttled libtorrent seeder). libtorrent never sends PEX for a private
//!   torrent, so the PEX message comes from a scripted peer X (`tests/peers/pex_peer.py`) that sends it anyway.
//! - [`scripted_pex_is_followed_in_a_public_torrent`]: the same rig with a public torrent, where rill must dial
//!   S: it shows that X's message is one rill can act on, so the private test can fail.
//! - [`rill_tells_a_libtorrent_peer_about_its_other_peers`]: the sending side. rill is given S only; a libtorrent
//!   leecher L given only rill's address must learn S from rill's PEX message and connect to it.
//!
//! [`DOWNLOADER`] is `Rill` in every commit; `Libtorrent` (a python3-libtorrent leecher with PEX on, in rill's
//! place) checks the rig itself: with it, every test here passes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::content::{self, assert_same_tree, Content, KIB, MIB};
use common::json::{self, Json};
use common::peers::{describe_peers, LibtorrentPeer, LtOptions, Peer};
use common::seeding::{RillPeer, RILL_PEER_ID_HEX_PREFIX};
use common::torrent::{self, Torrent};
use common::{deadline_in, deadline_within, free_port, lifetime_until, peer_script, wait_for, Proc, TempDir, PYTHON};

/// Who downloads. Only ever `Downloader::Rill` in a commit; `Libtorrent` checks the rig.
const DOWNLOADER: Downloader = Downloader::Rill;

#[allow(dead_code)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Downloader {
    Rill,
    Libtorrent,
}

/// A tracker URL nobody listens on: every peer comes from `--peer` or PEX.
const NO_TRACKER: &str = "http://127.0.0.1:1/announce";

/// P's upload and download rate (bytes/s): at this rate P alone would need minutes, so S must serve rill.
const P_TRICKLE: u64 = 16_000;

/// P's upload rate in the private test: slow enough that the download lasts several seconds (time for a PEX
/// message to arrive and be acted on), fast enough to finish well within the deadline.
const P_PRIVATE_RATE: u64 = 400_000;

/// How long after the downloader starts it must have connected to S in the public tests. PEX from libtorrent
/// and from X arrives within a couple of seconds of the extended handshake.
const CONNECT_TO_S_WITHIN_SECS: u64 = 30;

fn make_torrent(dir: &TempDir, content: &Content, private: bool, deadline: Instant) -> Torrent {
    let name = if private { "private.torrent" } else { "public.torrent" };
    let t = torrent::libtorrent_create_with(content, NO_TRACKER, 256 * KIB, true, private, &dir.join(name), deadline);
    let flag = common::bencode::decode(&t.bytes).ok().and_then(|m| m.get("info")?.get("private")?.as_int());
    assert_eq!(flag == Some(1), private, "the torrent's private flag");
    t
}

/// A libtorrent seeder of `content` that dials no one (no tracker, no PEX): only incoming connections.
fn start_seeder(dir: &TempDir, t: &Torrent, content: &Content, deadline: Instant) -> LibtorrentPeer {
    start_seeder_limited(dir, t, content, 0, deadline)
}

/// As [`start_seeder`], uploading at most `upload_limit` bytes/s (0: no limit).
fn start_seeder_limited(
    dir: &TempDir,
    t: &Torrent,
    content: &Content,
    upload_limit: u64,
    deadline: Instant,
) -> LibtorrentPeer {
    let data = content.copy_to(&dir.mkdir("s-data"));
    let opts = LtOptions { seed: true, no_tracker: true, upload_limit, ..LtOptions::default() };
    let s = LibtorrentPeer::start(dir.path(), "S", t, &data, &opts, deadline);
    s.wait_seeding(deadline);
    s
}

/// The downloader under test, given `peers` only.
enum Downloading {
    Rill(RillPeer),
    Libtorrent(LibtorrentPeer),
}

impl Downloading {
    fn start(dir: &TempDir, t: &Torrent, out: &Path, peers: &[String], deadline: Instant) -> Downloading {
        match DOWNLOADER {
            Downloader::Rill => {
                let mut extra: Vec<&str> = Vec::new();
                for p in peers {
                    extra.extend(["--peer", p]);
                }
                Downloading::Rill(RillPeer::download(dir.path(), "rill", t, out, &extra, deadline))
            }
            Downloader::Libtorrent => {
                let opts = LtOptions {
                    peers: peers.to_vec(),
                    pex: true,
                    no_tracker: true,
                    exit_when_done: true,
                    ..LtOptions::default()
                };
                Downloading::Libtorrent(LibtorrentPeer::start(dir.path(), "downloader", t, out, &opts, deadline))
            }
        }
    }

    /// `127.0.0.1:PORT`, where it listens.
    fn addr(&self) -> String {
        match self {
            Downloading::Rill(r) => r.addr(),
            Downloading::Libtorrent(l) => l.addr(),
        }
    }

    /// Whether the download is complete; panics if the downloader failed.
    fn is_complete(&self) -> bool {
        match self {
            Downloading::Rill(r) => match r.proc.exited() {
                Some(status) => {
                    assert!(status.success(), "rill download failed: {}", common::describe(status));
                    true
                }
                None => false,
            },
            Downloading::Libtorrent(l) => {
                let done = l.is_complete();
                if !done {
                    l.proc().assert_running();
                }
                done
            }
        }
    }

    /// Whether it has ever had a connection with S past the handshake, even one that opened and closed between
    /// two status writes: from S's record of peer ids for rill, from the downloader's for libtorrent (S cannot tell
    /// it from P by peer id).
    fn ever_connected_to(&self, s: &LibtorrentPeer) -> bool {
        match self {
            Downloading::Rill(_) => rill_ids_seen_by(s) > 0,
            Downloading::Libtorrent(l) => l
                .status()
                .and_then(|st| Some(st.get("peer_ids")?.as_object()?.iter().any(|(addr, _)| *addr == s.addr())))
                .unwrap_or(false),
        }
    }
}

/// A lower bound of the payload S sent the downloader, from S's and P's own counters: S sends only to P and the
/// downloader (it dials no one, and no one else knows it), and P gets no more from S than it downloaded in all.
fn sent_by_s_to_downloader(s: &LibtorrentPeer, p: &LibtorrentPeer) -> u64 {
    s.uploaded_bytes().saturating_sub(p.downloaded_bytes())
}

fn is_rill_id(id: &str) -> bool {
    id.starts_with(RILL_PEER_ID_HEX_PREFIX)
}

/// How many of the connections S ever had (past the handshake, even short ones) were rill's.
fn rill_ids_seen_by(s: &LibtorrentPeer) -> usize {
    let Some(st) = s.status() else { return 0 };
    st.get("peer_ids")
        .and_then(Json::as_object)
        .map(|ids| ids.iter().filter(|(_, id)| id.as_str().is_some_and(is_rill_id)).count())
        .unwrap_or(0)
}

#[track_caller]
fn wait_connected_to_s(d: &Downloading, s: &LibtorrentPeer, others: &[&dyn Peer], deadline: Instant) {
    let within = deadline_within(deadline, CONNECT_TO_S_WITHIN_SECS);
    wait_for(within, "the downloader to connect to S, whose address it can only have learned through PEX", || {
        for p in others {
            p.proc().assert_running();
        }
        (d.ever_connected_to(s) || d.is_complete()).then_some(())
    });
    // A fast download from S can open and close its connection between two of S's status writes (every
    // 0.2 s; `peer_ids` keeps connections that are gone): give S's status a few more writes to show it.
    let settle = deadline_within(deadline, 5);
    while !d.ever_connected_to(s) && Instant::now() < settle {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(d.ever_connected_to(s), "the downloader completed without ever connecting to S");
}

#[track_caller]
fn wait_complete(d: &Downloading, others: &[&dyn Peer], deadline: Instant) {
    wait_for(deadline, "the download to complete", || {
        for p in others {
            p.proc().assert_running();
        }
        d.is_complete().then_some(())
    });
}

/// P: a libtorrent leecher with PEX on that dials S, throttled to a trickle both ways so that it stays a leecher
/// (connected to S, which it then tells its other peers about) and serves rill little.
#[test]
fn pex_learned_seeder_is_dialled_and_sends_most_of_the_data() {
    let deadline = deadline_in(120);
    let dir = TempDir::new("pex-public");
    let content = content::write_single(&dir.mkdir("content"), "pex.bin", 8 * MIB + 4321, 0x9E7);
    let t = make_torrent(&dir, &content, false, deadline);
    let s = start_seeder(&dir, &t, &content, deadline);

    let p_opts = LtOptions {
        peers: vec![s.addr()],
        pex: true,
        no_tracker: true,
        upload_limit: P_TRICKLE,
        download_limit: P_TRICKLE,
        ..LtOptions::default()
    };
    let p = LibtorrentPeer::start(dir.path(), "P", &t, &dir.mkdir("p-data"), &p_opts, deadline);
    // P's first PEX message to a new peer lists the peers it is connected to then: S must be one of them.
    wait_for(deadline_within(deadline, 30), "P to connect to S", || {
        p.proc().assert_running();
        p.peers_seen().iter().any(|(addr, ..)| *addr == s.addr()).then_some(())
    });

    let out = dir.mkdir("out");
    let started = Instant::now();
    let d = Downloading::start(&dir, &t, &out, &[p.addr()], deadline);
    let others: [&dyn Peer; 2] = [&s, &p];
    wait_connected_to_s(&d, &s, &others, deadline);
    let connected_after = started.elapsed();
    wait_complete(&d, &others, deadline);
    let took = started.elapsed();

    assert_same_tree(&content.path(), &out.join(&t.name));
    let from_s = wait_for(deadline_within(deadline, 10), "S's counters to show most of the torrent", || {
        let n = sent_by_s_to_downloader(&s, &p);
        (n >= t.total_length / 2).then_some(n)
    });
    println!(
        "PEX: connected to S after {:.1} s, complete after {:.1} s; S sent {from_s} of {} bytes; {}",
        connected_after.as_secs_f64(),
        took.as_secs_f64(),
        t.total_length,
        describe_peers(&others)
    );
}

/// The other direction: rill tells its peers about each other. rill (given S only, a seeder throttled so that
/// rill stays a leecher connected to it) is then dialled by L, a python3-libtorrent leecher with PEX on that is
/// given rill's address only: L must learn S from rill's first PEX message and connect to it.
#[test]
fn rill_tells_a_libtorrent_peer_about_its_other_peers() {
    let deadline = deadline_in(90);
    let dir = TempDir::new("pex-send");
    let content = content::write_single(&dir.mkdir("content"), "pex.bin", 4 * MIB + 77, 0x9E9);
    let t = make_torrent(&dir, &content, false, deadline);
    let s = start_seeder_limited(&dir, &t, &content, P_TRICKLE, deadline);

    let middle = Downloading::start(&dir, &t, &dir.mkdir("out"), &[s.addr()], deadline);
    wait_for(deadline_within(deadline, 30), "the downloader to connect to S", || {
        s.proc().assert_running();
        (middle.ever_connected_to(&s) || middle.is_complete()).then_some(())
    });
    assert!(middle.ever_connected_to(&s), "the downloader completed without connecting to S");

    let l_opts = LtOptions { peers: vec![middle.addr()], pex: true, no_tracker: true, ..LtOptions::default() };
    let started = Instant::now();
    let l = LibtorrentPeer::start(dir.path(), "L", &t, &dir.mkdir("l-data"), &l_opts, deadline);
    let connected = |l: &LibtorrentPeer, addr: &str| {
        l.status().and_then(|st| Some(st.get("peer_ids")?.as_object()?.iter().any(|(a, _)| a == addr))).unwrap_or(false)
    };
    wait_for(deadline_within(deadline, 20), "L to connect to the downloader", || {
        l.proc().assert_running();
        connected(&l, &middle.addr()).then_some(())
    });
    wait_for(
        deadline_within(deadline, CONNECT_TO_S_WITHIN_SECS),
        "L to connect to S, whose address only the downloader's PEX message can have given it",
        || {
            for p in [&s, &l] {
                p.proc().assert_running();
            }
            assert!(!middle.is_complete(), "the downloader completed: S's throttle did not hold it");
            connected(&l, &s.addr()).then_some(())
        },
    );
    println!("PEX sent: L connected to S {:.1} s after it started", started.elapsed().as_secs_f64());
}

/// X: `tests/peers/pex_peer.py`, which tells whoever connects about `tell` in a `ut_pex` message as soon as the
/// other side's extended handshake gives `ut_pex` an id.
struct ScriptedPex {
    proc: Proc,
    port: u16,
    status: PathBuf,
}

impl ScriptedPex {
    fn start(dir: &TempDir, t: &Torrent, tell: &[String], deadline: Instant) -> ScriptedPex {
        common::require_python_libtorrent();
        let port = free_port();
        let status = dir.join("x-status.json");
        let mut cmd = Command::new(PYTHON);
        cmd.arg("-u")
            .arg(peer_script("pex_peer.py"))
            .arg("--torrent")
            .arg(&t.path)
            .arg("--port")
            .arg(port.to_string())
            .arg("--status")
            .arg(&status)
            .arg("--max-life")
            .arg(lifetime_until(deadline).as_secs().to_string());
        for a in tell {
            cmd.arg("--tell").arg(a);
        }
        let proc = Proc::spawn("X", &cmd, &dir.join("logs"), lifetime_until(deadline));
        common::wait_port_open(port, deadline, "X");
        ScriptedPex { proc, port, status }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn connections(&self) -> Vec<Json> {
        let Some(doc) = std::fs::read_to_string(&self.status).ok().and_then(|s| json::parse(&s).ok()) else {
            return Vec::new();
        };
        doc.get("connections").and_then(Json::as_array).map(|c| c.to_vec()).unwrap_or_default()
    }

    /// (connections that sent an extended handshake, of them those that gave `ut_pex` an id, PEX messages sent).
    fn summary(&self) -> (usize, usize, u64) {
        let conns = self.connections();
        let extended: Vec<&Json> =
            conns.iter().filter(|c| c.get("their_m").is_some_and(|m| m.as_object().is_some())).collect();
        let with_pex = extended
            .iter()
            .filter(|c| c.at(&["their_m", "ut_pex"]).and_then(Json::as_u64).is_some_and(|id| id > 0))
            .count();
        let sent = conns.iter().filter_map(|c| c.get("pex_sent").and_then(Json::as_u64)).sum();
        (extended.len(), with_pex, sent)
    }
}

/// rill is given P (a throttled libtorrent seeder) and X (which sends PEX about S whatever the torrent); S is a
/// seeder nobody else names.
fn scripted_pex_run(private: bool) {
    let deadline = deadline_in(120);
    let dir = TempDir::new(if private { "pex-private" } else { "pex-scripted" });
    let content = content::write_single(&dir.mkdir("content"), "pex.bin", 4 * MIB + 999, 0x9E8);
    let t = make_torrent(&dir, &content, private, deadline);
    let s = start_seeder(&dir, &t, &content, deadline);
    let p_data = content.copy_to(&dir.mkdir("p-data"));
    let p_opts = LtOptions {
        seed: true,
        no_tracker: true,
        pex: true,
        upload_limit: if private { P_PRIVATE_RATE } else { P_TRICKLE },
        ..LtOptions::default()
    };
    let p = LibtorrentPeer::start(dir.path(), "P", &t, &p_data, &p_opts, deadline);
    p.wait_seeding(deadline);
    let x = ScriptedPex::start(&dir, &t, &[s.addr()], deadline);

    let out = dir.mkdir("out");
    let started = Instant::now();
    let d = Downloading::start(&dir, &t, &out, &[p.addr(), x.addr()], deadline);
    let others: [&dyn Peer; 2] = [&s, &p];
    if !private {
        wait_connected_to_s(&d, &s, &others, deadline);
    }
    wait_complete(&d, &others, deadline);
    let took = started.elapsed();
    x.proc.assert_running();
    assert_same_tree(&content.path(), &out.join(&t.name));

    let (extended, with_pex, sent) = x.summary();
    assert!(extended > 0, "the downloader never sent X an extended handshake (BEP 10): {:?}", x.connections());
    if private {
        assert!(
            !d.ever_connected_to(&s),
            "private torrent: the downloader connected to S, which it can only have learned through PEX; S saw: {:?}",
            s.status().and_then(|st| st.get("peer_ids").cloned())
        );
        assert_eq!(s.uploaded_bytes(), 0, "S uploaded to someone in a private torrent nobody told about it");
    } else {
        assert!(sent > 0, "X never sent its PEX message (the downloader never gave ut_pex an id)");
        wait_for(deadline_within(deadline, 10), "S's counters to show most of the torrent", || {
            (sent_by_s_to_downloader(&s, &p) >= t.total_length / 2).then_some(())
        });
    }
    println!(
        "{} torrent, PEX from X: complete in {:.1} s; X: {extended} extended handshake(s), {with_pex} with ut_pex, \
         {sent} PEX message(s) sent; {}",
        if private { "private" } else { "public" },
        took.as_secs_f64(),
        describe_peers(&others)
    );
}

#[test]
fn private_torrent_never_dials_a_pex_learned_peer() {
    scripted_pex_run(true);
}

#[test]
fn scripted_pex_is_followed_in_a_public_torrent() {
    scripted_pex_run(false);
}
