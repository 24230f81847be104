//! rill's tracker machines and I/O driver against Debian's real `opentracker` on loopback.
//!
//! Each test starts its own opentracker (HTTP and UDP on one free port, an info-hash whitelist in its chroot,
//! `-u nobody` when root), drives `Trackers` + `TrackerDriver` in a `TrackerLoop` (the engine's tracker
//! dispatch without the engine), and checks what the tracker saw. Every process is wrapped in coreutils `timeout` and killed by PID on drop;
//! every wait has a deadline. A missing `opentracker` is a loud failure, never a skip.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod common;

use common::free_port;
use rill::event_loop::scrape::{scrape, ScrapeOutcome, TrackerLoop};
use rill::metainfo::InfoHash;
use rill::rng::{Entropy, Rng};
use rill::tracker::{ClientIdentity, ScrapeCounts, Timeouts, TrackerEvent, TrackerState, Trackers, Transfer};

/// Hard lifetime of every opentracker, even if this test binary dies.
const TRACKER_LIFETIME_SECS: u64 = 120;

// ---- the opentracker rig ----------------------------------------------------------------------------

struct Opentracker {
    port: u16,
    dir: PathBuf,
    /// The `timeout` wrapper; SIGTERM to it is forwarded to opentracker.
    child: Child,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn percent(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

fn running_as_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("run id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn unique_info_hash() -> InfoHash {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut rng = Rng::seeded(u64::from(std::process::id()) << 16 | n);
    let mut h = [0u8; 20];
    rng.fill(&mut h);
    InfoHash(h)
}

impl Opentracker {
    #[track_caller]
    fn start(info_hashes: &[InfoHash]) -> Opentracker {
        let found = Command::new("sh").args(["-c", "command -v opentracker"]).output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "opentracker is not installed: run `apt-get install -y opentracker` (this test does not skip)"
        );
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("rill-opentracker-{}-{port}", std::process::id()));
        fs::create_dir_all(&dir).expect("create opentracker dir");
        let list: String = info_hashes.iter().map(|h| format!("{}\n", hex(&h.0))).collect();
        // Read after chroot into `dir`, as user nobody: a relative path and world-readable modes.
        fs::write(dir.join("whitelist"), list).expect("write whitelist");
        fs::write(dir.join("opentracker.conf"), "access.whitelist whitelist\n").expect("write config");
        let p = port.to_string();
        let mut cmd = Command::new("timeout");
        cmd.args(["-s", "KILL", &TRACKER_LIFETIME_SECS.to_string(), "opentracker"])
            .args(["-i", "127.0.0.1", "-p", &p, "-P", &p])
            .arg("-d")
            .arg(&dir)
            .arg("-f")
            .arg(dir.join("opentracker.conf"));
        if running_as_root() {
            cmd.args(["-u", "nobody"]);
        }
        let log = fs::File::create(dir.join("log")).expect("create log");
        cmd.stdin(Stdio::null()).stdout(log.try_clone().expect("clone log")).stderr(log);
        let child = cmd.spawn().expect("spawn opentracker");
        let mut tracker = Opentracker { port, dir, child };
        tracker.wait_ready(info_hashes, Instant::now() + Duration::from_secs(10));
        tracker
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// Waits for the port, then until the whitelist is in force for every hash.
    #[track_caller]
    fn wait_ready(&mut self, info_hashes: &[InfoHash], deadline: Instant) {
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("opentracker exited early ({status}): {}", self.log());
            }
            let ready = info_hashes.iter().all(|h| {
                self.get(&format!(
                    "/announce?info_hash={}&peer_id=-PROBE0-000000000000&port=1&uploaded=0&downloaded=0&left=0\
                     &compact=1&numwant=0&event=stopped",
                    percent(&h.0)
                ))
                .is_some_and(|body| !body.windows(14).any(|w| w == b"failure reason"))
            });
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "opentracker not ready on port {}: {}", self.port, self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A plain blocking GET with short time-outs; the body, or `None`.
    fn get(&self, target: &str) -> Option<Vec<u8>> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(s, "GET {target} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut response = Vec::new();
        s.read_to_end(&mut response).ok()?;
        let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
        Some(response[split + 4..].to_vec())
    }

    fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}/announce", self.port)
    }

    fn udp_url(&self) -> String {
        format!("udp://127.0.0.1:{}/announce", self.port)
    }
}

impl Drop for Opentracker {
    fn drop(&mut self) {
        // SIGTERM to `timeout` is forwarded to opentracker; SIGKILL to the wrapper as a fallback.
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("opentracker log (kept in {}):\n{}", self.dir.display(), self.log());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

// ---- a client: Trackers + TrackerDriver on a mio loop, as the engine drives them ---------------------

struct Client {
    lp: TrackerLoop,
    trackers: Trackers,
    rng: Rng,
    transfer: Transfer,
    peers: Vec<SocketAddr>,
    announced: usize,
    errors: Vec<String>,
}

impl Client {
    fn new(tiers: &[&[&str]], info_hash: InfoHash, port: u16) -> Client {
        let tiers: Vec<Vec<String>> = tiers.iter().map(|t| t.iter().map(|s| s.to_string()).collect()).collect();
        let lp = TrackerLoop::new().expect("tracker loop");
        let mut rng = Rng::seeded(u64::from(port));
        let mut peer_id = *b"-RL0001-000000000000";
        peer_id[8..].copy_from_slice(format!("{port:012}").as_bytes());
        let identity = ClientIdentity { info_hash, peer_id, port, key: u32::from(port) * 7, numwant: 50 };
        let trackers = Trackers::new(&tiers, identity, Entropy::seeded(1), &mut rng, lp.now());
        Client {
            lp,
            trackers,
            rng,
            transfer: Transfer { uploaded: 0, downloaded: 0, left: 1 << 20 },
            peers: Vec::new(),
            announced: 0,
            errors: Vec::new(),
        }
    }

    /// Turns the loop until `done` holds or `limit` passes; true if `done` held.
    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Client) -> bool) -> bool {
        let end = self.lp.now() + limit;
        loop {
            if done(self) {
                return true;
            }
            if self.lp.now() >= end {
                return false;
            }
            let mut seen = Vec::new();
            self.lp
                .turn(&mut self.trackers, self.transfer, &mut self.rng, end, &mut |e| seen.push(e))
                .expect("loop turn");
            seen.into_iter().for_each(|e| self.record(e));
        }
    }

    fn pump(&mut self) {
        let mut seen = Vec::new();
        self.lp.pump(&mut self.trackers, &mut |e| seen.push(e));
        seen.into_iter().for_each(|e| self.record(e));
    }

    fn record(&mut self, event: TrackerEvent) {
        match event {
            TrackerEvent::Peers(p) => self.peers.extend(p),
            TrackerEvent::Announced { .. } => self.announced += 1,
            TrackerEvent::Error { url, message } | TrackerEvent::Warning { url, message } => {
                self.errors.push(format!("{url}: {message}"));
            }
            TrackerEvent::Requested { .. } | TrackerEvent::Scraped { .. } => {}
        }
    }

    #[track_caller]
    fn announce_once(&mut self) {
        let before = self.announced;
        let ok = self.run_until(Duration::from_secs(10), |c| c.announced > before);
        assert!(ok, "no announce answered in 10 s: {:?}", self.errors);
    }

    fn complete(&mut self) {
        self.transfer = Transfer { uploaded: 1000, downloaded: 1 << 20, left: 0 };
        let now = self.lp.now();
        self.trackers.on_completed(now, self.transfer);
        self.pump();
        self.announce_once();
    }

    #[track_caller]
    fn stop(&mut self) {
        let now = self.lp.now();
        self.trackers.on_stop(now, self.transfer);
        self.pump();
        let ok = self.run_until(Duration::from_secs(10), |c| c.trackers.is_stopped());
        assert!(ok, "stopped announces did not finish");
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[track_caller]
fn counts(outcome: &ScrapeOutcome) -> ScrapeCounts {
    match &outcome.result {
        Ok(c) => *c,
        Err(e) => panic!("scrape of {} failed: {e}", outcome.url),
    }
}

// ---- tests ------------------------------------------------------------------------------------------

#[test]
fn http_announce_lists_a_second_identity() {
    let hash = unique_info_hash();
    let ot = Opentracker::start(&[hash]);
    let url = ot.http_url();
    let mut a = Client::new(&[&[&url]], hash, 7001);
    a.announce_once();
    let mut b = Client::new(&[&[&url]], hash, 7002);
    b.announce_once();
    assert_eq!(b.peers, [loopback(7001)], "b sees a, and not itself");
    let status = &b.trackers.status()[0];
    assert_eq!(status.state, TrackerState::Working);
    assert_eq!(status.peers, 2, "opentracker lists the announcer too; rill skips it");
    assert_eq!(status.leechers, Some(2));
    assert!(status.next_announce.is_some());
    assert!(a.errors.is_empty() && b.errors.is_empty(), "{:?} {:?}", a.errors, b.errors);
}

#[test]
fn udp_announce_lists_a_second_identity() {
    let hash = unique_info_hash();
    let ot = Opentracker::start(&[hash]);
    let url = ot.udp_url();
    let mut a = Client::new(&[&[&url]], hash, 7101);
    a.announce_once();
    let mut b = Client::new(&[&[&url]], hash, 7102);
    b.announce_once();
    assert_eq!(b.peers, [loopback(7101)]);
    assert_eq!(b.trackers.status()[0].leechers, Some(2));
    assert!(b.errors.is_empty(), "{:?}", b.errors);
}

#[test]
fn host_names_resolve_off_the_loop_for_http_and_udp() {
    let hash = unique_info_hash();
    let ot = Opentracker::start(&[hash]);
    let http = format!("http://localhost:{}/announce", ot.port);
    let udp = format!("udp://localhost:{}", ot.port);
    let mut a = Client::new(&[&[&http]], hash, 7201);
    a.announce_once();
    let mut b = Client::new(&[&[&udp]], hash, 7202);
    b.announce_once();
    assert_eq!(b.peers, [loopback(7201)]);
    // Without a reachable DNS server the lookup may hang: the request's own time-out ends it then.
    let mut c = Client::new(&[&["http://no-such-host.invalid/announce"]], hash, 7203);
    c.trackers.set_timeouts(Timeouts { http: Duration::from_secs(3), ..Timeouts::default() });
    let failed = c.run_until(Duration::from_secs(6), |c| !c.errors.is_empty());
    assert!(failed, "an unresolvable name is a tracker error");
    assert!(c.errors[0].contains("cannot resolve host"), "{:?}", c.errors);
}

#[test]
fn dead_first_tier_still_gives_peers_within_a_second() {
    let hash = unique_info_hash();
    let ot = Opentracker::start(&[hash]);
    // A UDP port nobody reads and an HTTP port whose kernel accepts connections nobody answers.
    let silent_udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let hanging_http = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let dead_udp = format!("udp://127.0.0.1:{}/announce", silent_udp.local_addr().unwrap().port());
    let dead_http = format!("http://127.0.0.1:{}/announce", hanging_http.local_addr().unwrap().port());
    let mut seeder = Client::new(&[&[&ot.udp_url()]], hash, 7301);
    seeder.announce_once();
    for (i, working) in [ot.http_url(), ot.udp_url()].iter().enumerate() {
        let mut c = Client::new(&[&[&dead_udp, &dead_http], &[working]], hash, 7310 + i as u16);
        let started = Instant::now();
        let got = c.run_until(Duration::from_secs(5), |c| !c.peers.is_empty());
        let took = started.elapsed();
        assert!(got, "no peers through tier 2 ({working})");
        assert!(took < Duration::from_secs(1), "peers took {took:?} through {working}");
        assert!(c.peers.contains(&loopback(7301)));
        let status = c.trackers.status();
        assert_eq!(status.iter().filter(|s| s.state == TrackerState::Announcing).count(), 1, "{status:?}");
    }
}

#[test]
fn scrape_counts_follow_started_completed_and_stopped() {
    let hash = unique_info_hash();
    let ot = Opentracker::start(&[hash]);
    let tiers = vec![vec![ot.udp_url()], vec![ot.http_url()]];
    let both = |expected: (u32, u32, u32), when: &str| {
        let outcomes = scrape(&tiers, hash, Duration::from_secs(5));
        assert_eq!(outcomes.len(), 2);
        for o in &outcomes {
            let c = counts(o);
            assert_eq!((c.seeders, c.leechers, c.completed), expected, "{when}: {o}");
            assert_eq!(o.to_string(), format!("{}: {c}", o.url));
        }
    };
    // Leecher over UDP, then another over HTTP.
    let mut a = Client::new(&[&[&ot.udp_url()]], hash, 7401);
    a.announce_once();
    let mut b = Client::new(&[&[&ot.http_url()]], hash, 7402);
    b.announce_once();
    both((0, 2, 0), "two started leechers");
    a.complete();
    both((1, 1, 1), "after a's completed (udp)");
    b.complete();
    both((2, 0, 2), "after b's completed (http)");
    a.stop();
    b.stop();
    both((0, 0, 2), "after both stopped");
    assert_eq!(a.trackers.status()[0].state, TrackerState::Stopped);
    assert!(a.errors.is_empty() && b.errors.is_empty(), "{:?} {:?}", a.errors, b.errors);
}

#[test]
fn scrape_reports_unknown_and_unreachable_trackers_per_line() {
    let hash = unique_info_hash();
    let ot = Opentracker::start(&[hash]);
    let silent_udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let dead = format!("udp://127.0.0.1:{}", silent_udp.local_addr().unwrap().port());
    let tiers = vec![vec![ot.http_url(), "http://127.0.0.1:1/a".to_string()], vec![dead.clone()]];
    let started = Instant::now();
    let outcomes = scrape(&tiers, hash, Duration::from_secs(2));
    assert!(started.elapsed() < Duration::from_secs(4));
    let lines: Vec<String> = outcomes.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    // Nobody announced yet: opentracker does not list the torrent.
    assert_eq!(lines[0], format!("{}: error: tracker does not know this torrent", ot.http_url()));
    assert_eq!(lines[1], "http://127.0.0.1:1/a: error: tracker has no scrape url");
    assert_eq!(lines[2], format!("{dead}: error: timed out"));
}
