//! A torrent with thousands of trackers (issue 9): rill keeps at most a handful of tracker exchanges in flight, so
//! 3,000 unreachable trackers cost a bounded number of file descriptors, and the one real tracker (Debian's
//! opentracker), which sits in the middle of the list, is still reached and the download from the real seeder
//! behind it (python3-libtorrent) completes.
//!
//! The dead trackers, one per tier (the layout that used to make rill announce to all of them at once), cycle
//! through: closed loopback TCP ports (refused at once), a loopback UDP socket that never answers, a closed UDP
//! port (as silent: Linux reports no ICMP error on an unconnected socket), and a TCP listener that accepts and
//! reads but never answers. Each silent one holds one of rill's 8 slots for 2 s (`tracker::FIRST_ANSWER_PATIENCE`)
//! before giving way, so the 300 silent ones ahead of the real tracker cost about 300 / 8 × 2 s = 75 s.
//!
//! `RILL_FANOUT_DEAD=N` runs the same test with N dead trackers instead of 3,000 (0 for the real tracker alone),
//! to compare timings by hand.

mod common;

use std::io::Read;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::bencode::{self, Value};
use common::content::{self, assert_same_tree, KIB};
use common::leecher::spawn_rill_download;
use common::peers::LibtorrentPeer;
use common::torrent::{self, Torrent};
use common::tracker::Opentracker;
use common::{deadline_in, describe, free_port, wait_for, TempDir};

const DEAD_TRACKERS: usize = 3000;
/// rill's descriptors stay under this whatever the number of trackers: stdio, the poller, the waker, the signal
/// pipe, listeners, two UDP sockets, data files, a few peers, and at most 8 tracker connections.
const MAX_OPEN_FDS: usize = 64;

/// A TCP listener on loopback that accepts every connection, reads whatever comes, and never answers.
struct TcpBlackHole {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpBlackHole {
    fn start() -> TcpBlackHole {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the black-hole listener");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let port = listener.local_addr().expect("local addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            let mut buf = [0u8; 4096];
            while !flag.load(Ordering::Relaxed) {
                while let Ok((s, _)) = listener.accept() {
                    let _ = s.set_nonblocking(true);
                    held.push(s);
                }
                // Read and drop; forget the connections the other side closed.
                held.retain_mut(|s| match s.read(&mut buf) {
                    Ok(0) => false,
                    Ok(_) => true,
                    Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                });
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        TcpBlackHole { port, stop, thread: Some(thread) }
    }
}

impl Drop for TcpBlackHole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Open descriptors of process `pid` now.
fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// `torrent` with `announce-list` replaced by one tier per URL (the info-hash does not change).
fn with_tiers(torrent: &Torrent, urls: &[String], out: &std::path::Path) -> Torrent {
    let mut meta = bencode::decode(&torrent.bytes).expect("the torrent decodes");
    let tiers = urls.iter().map(|u| Value::List(vec![Value::str(u)])).collect();
    meta.set("announce-list", Value::List(tiers));
    std::fs::write(out, meta.encode()).expect("write the torrent");
    let t = Torrent::load(out);
    assert_eq!(t.info_hash, torrent.info_hash, "rewriting the tracker list must keep the info-hash");
    t
}

#[test]
fn thousands_of_dead_trackers_cost_few_descriptors_and_the_real_one_is_reached() {
    let dead: usize = std::env::var("RILL_FANOUT_DEAD").ok().and_then(|v| v.parse().ok()).unwrap_or(DEAD_TRACKERS);
    let deadline = deadline_in(300);
    let dir = TempDir::new("tracker-fanout");
    let content = content::small_tree(&dir.mkdir("content"), "fanout-tree", 0xFA17);
    let (t, tracker) = Opentracker::with_torrent(dir.path(), deadline, |announce| {
        torrent::libtorrent_create(&content, announce, 64 * KIB, true, &dir.join("real.torrent"), deadline)
    });
    let seed_data = content.copy_to(&dir.mkdir("seed-data"));
    let _seeder = LibtorrentPeer::seed(dir.path(), "libtorrent-seeder", &t, &seed_data, 0, deadline);
    tracker.wait_seeders(&t.info_hash, 1, deadline);

    // The dead trackers, and the real one in the middle of them.
    let udp_hole = UdpSocket::bind("127.0.0.1:0").expect("bind the black-hole UDP socket");
    let udp_hole_port = udp_hole.local_addr().expect("local addr").port();
    let tcp_hole = TcpBlackHole::start();
    let closed_tcp: Vec<u16> = (0..8).map(|_| free_port()).collect();
    let closed_udp = free_port();
    let mut urls: Vec<String> = (0..dead)
        .map(|i| match i % 10 {
            0 if i % 20 == 0 => format!("udp://127.0.0.1:{udp_hole_port}/announce/{i}"),
            0 => format!("udp://127.0.0.1:{closed_udp}/announce/{i}"),
            5 => format!("http://127.0.0.1:{}/announce/{i}", tcp_hole.port),
            _ => format!("http://127.0.0.1:{}/announce/{i}", closed_tcp[i % closed_tcp.len()]),
        })
        .collect();
    urls.insert(dead / 2, tracker.announce_url());
    let many = with_tiers(&t, &urls, &dir.join("many-trackers.torrent"));

    let out = dir.mkdir("out");
    let started = Instant::now();
    let rill = spawn_rill_download(dir.path(), &many, &out, &[], &[], deadline);
    let mut most_fds = 0;
    let status = wait_for(deadline, "rill to finish its download (it exits when done)", || {
        if let Some(n) = rill.program_pid().and_then(open_fds) {
            most_fds = most_fds.max(n);
        }
        rill.exited()
    });
    let took = started.elapsed();
    assert!(status.success(), "rill failed: {}", describe(status));
    assert_same_tree(&content.path(), &out.join(&t.name));
    println!("{dead} dead trackers + 1 real: complete in {:.1} s, at most {most_fds} descriptors", took.as_secs_f64());
    // With the real tracker alone the download can end before the first sample.
    assert!(most_fds > 0 || dead == 0, "rill's descriptors were never seen");
    assert!(most_fds <= MAX_OPEN_FDS, "rill had up to {most_fds} descriptors open with {dead} dead trackers");
    drop(udp_hole);
}
