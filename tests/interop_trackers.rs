//! rill finds its peers through real trackers (issue 5), end to end on loopback: Debian's `opentracker` (HTTP and
//! UDP on one port, with an info-hash whitelist) and a python3-libtorrent seeder that announced to it over HTTP.
//! rill is never given a `--peer`: every byte it gets comes from a peer a tracker handed it.
//!
//! - a torrent whose only tracker is `udp://127.0.0.1:PORT/announce`;
//! - one whose only tracker is `http://localhost:PORT/announce` (a name, resolved off the loop);
//! - one whose first tier is dead (a UDP port nobody answers and an HTTP port that accepts and never replies) and
//!   whose second tier is the working opentracker: it must download promptly, not after a 15 s time-out;
//! - opentracker's own scrape counts show rill's `started`, `completed` and `stopped`, and `rill info --scrape`
//!   prints the same real counts.
//!
//! Torrents are made by `transmission-create`; rill's copies get other announce lists written here with the rig's
//! bencode writer (the `info` dictionary is untouched, so the info-hash, checked, stays the one opentracker
//! whitelists). Every wait has a deadline and polls a condition; every process is killed by PID on drop and dumps
//! its log tail when a test fails. rill runs with `RUST_LOG=rill=debug` unless `RUST_LOG` is set.

mod common;

use std::io::Read;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::bencode::{self, Value};
use common::content::{self, assert_same_tree, Content, MIB};
use common::peers::{LibtorrentPeer, Peer};
use common::torrent::{self, Torrent};
use common::tracker::Opentracker;
use common::{
    deadline_in, deadline_within, describe, free_port, http, lifetime_until, rill_command, run_tool, wait_for, Proc,
    TempDir,
};

/// Ctrl-C: rill stops, sends `stopped`, and exits 0.
const SIGINT: i32 = 2;

/// rill's tracker time-outs (HTTP request and the first UDP retransmission) are 15 s: a download through a second
/// tier that ends well before that cannot have waited for the first tier to time out.
const TRACKER_TIMEOUT: Duration = Duration::from_secs(15);

/// From starting rill to its first peer connection: libtorrent manages within a second; allow for a loaded CI box.
const FIRST_CONTACT_BOUND: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------------------------
// Scrape counts, as opentracker itself reports them

/// One torrent's line in a scrape: seeders (`complete`), leechers (`incomplete`), completed (`downloaded`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Counts {
    seeders: u64,
    leechers: u64,
    completed: u64,
}

const fn counts(seeders: u64, leechers: u64, completed: u64) -> Counts {
    Counts { seeders, leechers, completed }
}

/// opentracker's HTTP `/scrape` for `ih`; `None` when it cannot be asked or does not list the torrent.
fn scrape(port: u16, ih: &[u8; 20]) -> Option<Counts> {
    let r = http::get(port, &format!("/scrape?info_hash={}", bencode::percent_encode(ih))).ok()?;
    let v = bencode::decode(&r.body).ok()?;
    let Some(Value::Dict(files)) = v.get("files") else {
        return None;
    };
    let (_, stats) = files.iter().find(|(k, _)| k.as_slice() == ih)?;
    let n = |k| stats.get(k).and_then(Value::as_int).unwrap_or(0) as u64;
    Some(counts(n("complete"), n("incomplete"), n("downloaded")))
}

/// Polls `cond` every 20 ms until it holds (true) or `deadline` passes (false).
fn poll_until(deadline: Instant, mut cond: impl FnMut() -> bool) -> bool {
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20).min(deadline - now));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Dead trackers

/// An HTTP "tracker" that accepts every connection, reads the request, and never answers: the connections are held
/// open until it is dropped. Records the request line of each connection.
struct HangingHttp {
    port: u16,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl HangingHttp {
    fn start() -> HangingHttp {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (stop2, accepted2, requests2) = (Arc::clone(&stop), Arc::clone(&accepted), Arc::clone(&requests));
        let thread = std::thread::Builder::new()
            .name(format!("hanging-http-{port}"))
            .spawn(move || {
                let mut held: Vec<TcpStream> = Vec::new();
                for stream in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(mut stream) = stream else { continue };
                    accepted2.fetch_add(1, Ordering::SeqCst);
                    // The request comes right after the connect; read its first line, answer nothing.
                    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                    let mut buf = [0u8; 2048];
                    let n = stream.read(&mut buf).unwrap_or(0);
                    let text = String::from_utf8_lossy(&buf[..n]);
                    let line = text.lines().next().unwrap_or("(nothing read)").to_string();
                    requests2.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                    held.push(stream);
                }
                for s in held {
                    let _ = s.shutdown(Shutdown::Both);
                }
            })
            .expect("spawn the hanging HTTP listener");
        HangingHttp { port, stop, accepted, requests, thread: Some(thread) }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/announce", self.port)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for HangingHttp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with one last connection of our own.
        let _ = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], self.port)), Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A UDP "tracker" nobody answers: a bound socket that is never read until the test counts what reached it.
struct SilentUdp {
    socket: UdpSocket,
}

impl SilentUdp {
    fn start() -> SilentUdp {
        SilentUdp { socket: UdpSocket::bind("127.0.0.1:0").expect("bind udp 127.0.0.1:0") }
    }

    fn url(&self) -> String {
        format!("udp://127.0.0.1:{}/announce", self.socket.local_addr().expect("local_addr").port())
    }

    /// Datagrams received so far (drains them).
    fn datagrams(&self) -> usize {
        self.socket.set_nonblocking(true).expect("set_nonblocking");
        let mut buf = [0u8; 2048];
        let mut n = 0;
        while self.socket.recv_from(&mut buf).is_ok() {
            n += 1;
        }
        n
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The swarm: opentracker and one libtorrent seeder that announced to it over HTTP

/// Fields drop in order: the seeder and the tracker are killed (and dump their logs on failure) before the temp
/// dir is removed or kept.
struct Swarm {
    seeder: LibtorrentPeer,
    tracker: Opentracker,
    /// The torrent as transmission-create made it: `announce` is `http://127.0.0.1:PORT/announce`.
    base: Torrent,
    content: Content,
    deadline: Instant,
    dir: TempDir,
}

impl Swarm {
    /// A single file of a bit over `mib` MiB (64 KiB pieces, the last one short), its torrent, opentracker with
    /// its hash whitelisted, and a libtorrent seeder (`upload_limit` bytes/s, 0 for none) that it lists.
    #[track_caller]
    fn start(label: &str, mib: u64, upload_limit: u64, seed: u64, deadline: Instant) -> Swarm {
        let dir = TempDir::new(label);
        let content = content::write_single(&dir.mkdir("content"), &format!("{label}.bin"), mib * MIB + 4_321, seed);
        let (base, tracker) = Opentracker::with_torrent(dir.path(), deadline, |announce| {
            torrent::transmission_create(&content, announce, 64, &dir.join("base.torrent"), deadline)
        });
        let data = content.copy_to(&dir.mkdir("seeder-data"));
        let seeder = LibtorrentPeer::seed(dir.path(), "lt-seeder", &base, &data, upload_limit, deadline);
        tracker.wait_seeders(&base.info_hash, 1, deadline);
        Swarm { seeder, tracker, base, content, deadline, dir }
    }

    fn port(&self) -> u16 {
        self.tracker.port
    }

    fn counts(&self) -> Option<Counts> {
        scrape(self.port(), &self.base.info_hash)
    }

    /// Waits (at most `secs`) until opentracker's scrape shows `want`; panics with the last counts otherwise.
    #[track_caller]
    fn wait_counts(&self, want: Counts, secs: u64, what: &str) {
        let mut last = None;
        let ok = poll_until(deadline_within(self.deadline, secs), || {
            self.tracker.proc().assert_running();
            last = self.counts();
            last == Some(want)
        });
        assert!(ok, "{what}: opentracker's scrape shows {last:?}, expected {want:?} (within {secs} s)");
    }

    /// After rill exited: opentracker saw its `stopped` (rill, a seeder after `completed`, is no longer counted:
    /// the seeder alone remains) and, if `completed` is set, its `completed` (the completed count is 1: the seeder
    /// started complete and never sends one). Waits up to 3 s for a datagram still in flight.
    #[track_caller]
    fn assert_stopped_after(&self, completed: bool, via: &str) {
        let want = |c: &Counts| c.seeders == 1 && c.leechers == 0 && (!completed || c.completed == 1);
        let mut last = None;
        let ok = poll_until(deadline_within(self.deadline, 3), || {
            last = self.counts();
            last.as_ref().is_some_and(want)
        });
        if ok {
            return;
        }
        let Some(c) = last else {
            panic!("after rill exited: opentracker does not list the torrent any more");
        };
        assert!(
            !completed || c.completed == 1,
            "opentracker never saw rill's `completed` through {via}: its scrape shows {c:?} after rill exited \
             (expected completed = 1)"
        );
        panic!(
            "opentracker still counts rill after it exited: its `stopped` through {via} did not arrive; scrape \
             shows {c:?} (expected 1 seeder, 0 leechers)"
        );
    }

    /// A copy of the base torrent with other trackers: `announce` is the first URL, and `announce-list` holds
    /// `tiers` (BEP 12). The `info` dictionary, hence the info-hash, is unchanged.
    #[track_caller]
    fn retrack(&self, file: &str, tiers: &[&[&str]]) -> Torrent {
        let mut meta = bencode::decode(&self.base.bytes).expect("the base torrent decodes");
        meta.set("announce", Value::str(tiers[0][0]));
        let list = tiers.iter().map(|tier| Value::List(tier.iter().map(|u| Value::str(u)).collect())).collect();
        meta.set("announce-list", Value::List(list));
        let path = self.dir.join(file);
        std::fs::write(&path, meta.encode()).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        let t = Torrent::load(&path);
        assert_eq!(t.hex_hash(), self.base.hex_hash(), "rewriting the announce list changed the info-hash");
        t
    }

    /// Starts `rill download TORRENT -d DIR/OUT --no-ui --port FREE [extra…]`, no `--peer`; logs as `NAME`.
    fn spawn_rill(&self, name: &str, t: &Torrent, out: &str, extra: &[&str]) -> (Proc, PathBuf) {
        let out = self.dir.mkdir(out);
        let mut cmd = rill_command();
        cmd.arg("download").arg(&t.path).arg("-d").arg(&out).arg("--no-ui");
        cmd.arg("--port").arg(free_port().to_string()).args(extra);
        cmd.env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "rill=debug".into()));
        let p = Proc::spawn(name, &cmd, &self.dir.join("logs"), lifetime_until(self.deadline));
        (p, out)
    }

    /// How long after `since` the seeder first logged an incoming connection (only rill connects to it after
    /// `since`). lt_peer.py stamps each alert with the wall-clock time it handled it (within 0.2 s of the event).
    fn first_contact(&self, since: SystemTime) -> Option<Duration> {
        let since = since.duration_since(UNIX_EPOCH).ok()?.as_secs_f64();
        self.seeder.proc().stdout().lines().find_map(|line| {
            let (stamp, rest) = line.split_once(' ')?;
            let at: f64 = stamp.parse().ok()?;
            (rest.starts_with("incoming_connection_alert") && at >= since)
                .then(|| Duration::from_secs_f64((at - since).max(0.0)))
        })
    }

    /// [`Swarm::first_contact`], which must show once rill downloaded: the seeder logs its alerts every 0.2 s, so
    /// wait a little for the line.
    #[track_caller]
    fn rill_contact(&self, since: SystemTime) -> Duration {
        let mut found = None;
        let logged = poll_until(deadline_within(self.deadline, 3), || {
            found = self.first_contact(since);
            found.is_some()
        });
        assert!(
            logged,
            "the seeder logged no incoming connection after rill started:\n{}",
            self.seeder.proc().stdout()
        );
        found.unwrap_or_default()
    }

    /// Waits for rill to exit by itself, checking the seeder stays up; panics unless it exited 0.
    #[track_caller]
    fn wait_rill_success(&self, rill: &Proc, what: &str) {
        let status = wait_for(self.deadline, &format!("{what}: rill to exit"), || {
            self.seeder.proc().assert_running();
            rill.exited()
        });
        assert!(status.success(), "{what}: rill failed: {}", describe(status));
    }

    /// Asserts that the download in `out` is byte-identical to the content.
    #[track_caller]
    fn assert_downloaded(&self, out: &Path) {
        assert_same_tree(&self.content.path(), &out.join(&self.base.name));
    }

    /// `rill info --scrape TORRENT`: its `scrape:` lines, `URL: …` each.
    #[track_caller]
    fn info_scrape(&self, t: &Torrent, name: &str) -> Vec<String> {
        let mut cmd = rill_command();
        cmd.arg("info").arg(&t.path).arg("--scrape");
        cmd.env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "rill=debug".into()));
        let out = run_tool(name, &cmd, &self.dir.join("logs"), deadline_within(self.deadline, 20));
        let Some((_, lines)) = out.split_once("scrape:\n") else {
            panic!("`rill info --scrape` printed no `scrape:` section:\n{out}");
        };
        lines.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect()
    }
}

/// `URL: N seeders, M leechers, K completed`, as `rill info --scrape` prints it.
fn scrape_line(url: &str, c: Counts) -> String {
    format!("{url}: {} seeders, {} leechers, {} completed", c.seeders, c.leechers, c.completed)
}

/// One download through a single tracker URL (no `--peer`): byte-identical, prompt, and opentracker saw rill's
/// `completed` (its completed count is 1: the seeder started complete and never sends one) and `stopped` (rill,
/// a seeder after `completed`, is gone from the counts once it exited).
#[track_caller]
fn download_through(label: &str, seed: u64, announce: impl Fn(u16) -> String) {
    let s = Swarm::start(label, 2, 0, seed, deadline_in(60));
    let url = announce(s.port());
    let t = s.retrack("rill.torrent", &[&[&url]]);
    s.wait_counts(counts(1, 0, 0), 5, "before rill starts: the seeder alone");

    let (started, wall) = (Instant::now(), SystemTime::now());
    let (rill, out) = s.spawn_rill("rill", &t, "out", &[]);
    s.wait_rill_success(&rill, &format!("download through {url}"));
    let took = started.elapsed();
    let contact = s.rill_contact(wall);

    s.assert_downloaded(&out);
    assert!(contact < FIRST_CONTACT_BOUND, "rill reached the seeder through {url} only after {contact:?}");
    s.assert_stopped_after(true, &url);
    println!(
        "{url}: {} bytes; first contact {:.2} s, exit {:.2} s",
        t.total_length,
        contact.as_secs_f64(),
        took.as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Tests

/// A torrent whose only tracker is UDP (BEP 15) downloads.
#[test]
fn download_through_a_udp_tracker_only() {
    download_through("trk-udp", 0x0D_D0, |port| format!("udp://127.0.0.1:{port}/announce"));
}

/// A tracker given by host name (`localhost`) is resolved (on rill's helper thread) and used.
#[test]
fn download_through_an_http_tracker_by_host_name() {
    download_through("trk-http-name", 0x4E_A3E, |port| format!("http://localhost:{port}/announce"));
}

/// BEP 12: the first tier is dead (a silent UDP port and an HTTP port that accepts and never replies), the second
/// is opentracker. rill announces to every tier at once, so it reaches the seeder at once and finishes long before
/// any tracker time-out; it did try the dead tier too.
#[test]
fn dead_first_tier_does_not_hold_up_the_download() {
    let s = Swarm::start("trk-dead-tier", 2, 0, 0xDEAD, deadline_in(60));
    let silent = SilentUdp::start();
    let hanging = HangingHttp::start();
    let working = format!("http://127.0.0.1:{}/announce", s.port());
    let (dead_udp, dead_http) = (silent.url(), hanging.url());
    let t = s.retrack("tiers.torrent", &[&[&dead_udp, &dead_http], &[&working]]);

    let (started, wall) = (Instant::now(), SystemTime::now());
    let (rill, out) = s.spawn_rill("rill", &t, "out", &[]);
    s.wait_rill_success(&rill, "download with a dead first tier");
    let took = started.elapsed();
    let contact = s.rill_contact(wall);

    s.assert_downloaded(&out);
    let (datagrams, accepted) = (silent.datagrams(), hanging.accepted());
    let tried = format!(
        "dead UDP {dead_udp}: {datagrams} datagram(s); hanging HTTP {dead_http}: {accepted} connection(s), requests \
         {:?}",
        hanging.requests()
    );
    assert!(
        contact < FIRST_CONTACT_BOUND,
        "rill reached the seeder {contact:?} after start: it waited for the dead first tier ({tried})"
    );
    // Completion plus the `stopped` grace (at most ~3 s) still well inside one tracker time-out.
    assert!(
        took < TRACKER_TIMEOUT - Duration::from_secs(3),
        "rill took {took:?} to download and exit: it sat out a tracker time-out ({tried})"
    );
    assert!(datagrams + accepted > 0, "rill never announced to the first tier ({tried})");
    if accepted > 0 {
        let requests = hanging.requests();
        assert!(
            requests.iter().any(|r| r.starts_with("GET /announce?")),
            "the hanging tracker got no announce: {requests:?}"
        );
    }
    // Through the second tier (that `completed` arrives is the business of the other tests).
    s.assert_stopped_after(false, &working);
    println!(
        "dead first tier: first contact {:.2} s, exit {:.2} s; {tried}",
        contact.as_secs_f64(),
        took.as_secs_f64()
    );
}

/// The whole lifecycle as opentracker counts it, with rill staying on as a seeder (`--seed`) until SIGINT:
/// `started` (a leecher while it downloads from a throttled seeder), `completed` (a seeder, completed count 1),
/// `stopped` on exit (gone again). `rill info --scrape` prints opentracker's real counts, over HTTP and UDP.
#[test]
fn opentracker_counts_started_completed_and_stopped() {
    // ~2 MiB from a seeder throttled to 1 MB/s: rill is a leecher for about two seconds.
    let s = Swarm::start("trk-lifecycle", 2, 1_000_000, 0x11FE, deadline_in(60));
    let http_url = format!("http://127.0.0.1:{}/announce", s.port());
    let udp_url = format!("udp://127.0.0.1:{}/announce", s.port());
    let t = s.retrack("rill.torrent", &[&[&http_url]]);
    let both = s.retrack("scrape.torrent", &[&[&http_url], &[&udp_url]]);
    s.wait_counts(counts(1, 0, 0), 5, "before rill starts: the seeder alone");
    let info = s.info_scrape(&both, "rill-info-before");
    assert_eq!(info, [scrape_line(&http_url, counts(1, 0, 0)), scrape_line(&udp_url, counts(1, 0, 0))]);

    let (rill, out) = s.spawn_rill("rill", &t, "out", &["--seed"]);
    s.wait_counts(counts(1, 1, 0), 20, "rill's `started`: one leecher");
    s.wait_counts(counts(2, 0, 1), 20, "rill's `completed`: two seeders, one completed");
    rill.assert_running();
    s.assert_downloaded(&out);
    let info = s.info_scrape(&both, "rill-info-seeding");
    assert_eq!(info, [scrape_line(&http_url, counts(2, 0, 1)), scrape_line(&udp_url, counts(2, 0, 1))]);

    let signalled = Instant::now();
    rill.signal(SIGINT);
    let status = rill.wait_exit(deadline_within(s.deadline, 10));
    let stop_took = signalled.elapsed();
    assert!(status.success(), "rill after SIGINT: {}", describe(status));
    assert!(stop_took < Duration::from_secs(5), "rill took {stop_took:?} to stop (the `stopped` wait is ~3 s)");
    s.wait_counts(counts(1, 0, 1), 3, "rill's `stopped`: the seeder alone again, one completed");
    let info = s.info_scrape(&both, "rill-info-after");
    assert_eq!(info, [scrape_line(&http_url, counts(1, 0, 1)), scrape_line(&udp_url, counts(1, 0, 1))]);
    assert!(s.seeder.uploaded_bytes() >= s.base.total_length, "the seeder did not serve the download");
    println!("lifecycle: stop took {:.2} s", stop_took.as_secs_f64());
}
