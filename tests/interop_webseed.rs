//! Web seeds (BEP 19) and IPv6 peers (BEP 7), issue 13, against real software on loopback.
//!
//! Web seeds: torrents made by `rill create --web-seed http://127.0.0.1:PORT/` (and a magnet's `ws=`) whose web
//! seed is `tests/peers/webseed.py`, a Range-capable HTTP server that counts the requests and bytes it served (or
//! serves corrupt bytes, 404s, or redirects in a loop). rill downloads byte-identical from the web seed alone
//! (single-file, and a multi-file tree whose pieces span files and whose names need percent-encoding); from a web
//! seed and a python3-libtorrent seeder together, both rate-limited, using both; past a corrupt web seed, a 404 one
//! and a redirect loop (each given up, or backed off, while the peer delivers); and from a magnet link whose
//! metadata comes from a peer and whose data comes from its `ws=` web seed too.
//!
//! IPv6: a small test tracker (`tests/peers/tracker6.py`, on 127.0.0.1) answers every announce with a `peers6`
//! string only, naming a python3-libtorrent seeder that listens on `[::1]` alone: rill must dial it over IPv6.
//! A machine with no `::1` fails that test loudly.
//!
//! Judged by exit codes, byte-identical trees, the web seed's and the peers' own counters, and rill's own lines.
//! Every process is bounded in time and killed by PID; every wait has a deadline.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::content::{self, assert_same_tree, Content, KIB, MIB};
use common::json::{self, Json};
use common::leecher::spawn_rill_download;
use common::peers::{describe_peers, wait_with_peers, LibtorrentPeer, LtOptions, Peer};
use common::torrent::Torrent;
use common::{
    deadline_in, deadline_within, describe, free_port, lifetime_until, mkdir, peer_script, require_tool, rill_command,
    run_tool, wait_for, wait_port_open, wait_until, Proc, TempDir, PYTHON,
};

// ---------------------------------------------------------------------------------------------------------------
// The rig: webseed.py, tracker6.py, rill create

/// `tests/peers/webseed.py` serving the files under `root` on 127.0.0.1.
struct WebSeedServer {
    name: String,
    proc: Proc,
    port: u16,
    status_path: PathBuf,
    /// On [::1] (`--ipv6`) rather than 127.0.0.1.
    ipv6: bool,
}

impl WebSeedServer {
    /// Starts it with `flags` (e.g. `--corrupt`, `--rate N`) and waits until it listens.
    #[track_caller]
    fn start(dir: &Path, name: &str, root: &Path, flags: &[&str], deadline: Instant) -> WebSeedServer {
        require_tool(PYTHON, "python3");
        let port = free_port();
        let status_path = mkdir(&dir.join(name)).join("status.json");
        let lifetime = lifetime_until(deadline);
        let mut cmd = Command::new(PYTHON);
        cmd.arg("-u")
            .arg(peer_script("webseed.py"))
            .arg("--root")
            .arg(root)
            .arg("--port")
            .arg(port.to_string())
            .arg("--status")
            .arg(&status_path)
            .arg("--max-life")
            .arg(lifetime.as_secs().to_string())
            .args(flags);
        let proc = Proc::spawn(name, &cmd, &dir.join("logs"), lifetime);
        let ipv6 = flags.contains(&"--ipv6");
        let ws = WebSeedServer { name: name.to_string(), proc, port, status_path, ipv6 };
        let addr = ws.host_port();
        wait_until(deadline_within(deadline, 20), &format!("{name} to listen on {addr}"), || {
            ws.proc.assert_running();
            TcpStream::connect(addr.as_str()).is_ok()
        });
        ws
    }

    fn host_port(&self) -> String {
        if self.ipv6 {
            format!("[::1]:{}", self.port)
        } else {
            format!("127.0.0.1:{}", self.port)
        }
    }

    /// Its base URL, as a torrent's `url-list` names it.
    fn url(&self) -> String {
        format!("http://{}/", self.host_port())
    }

    /// The URL paths (decoded) of the ranges it served, the last 50.
    fn paths_served(&self) -> BTreeSet<String> {
        let Some(s) = self.status() else {
            return BTreeSet::new();
        };
        s.get("ranges")
            .and_then(Json::as_array)
            .unwrap_or(&[])
            .iter()
            .filter_map(|r| r.as_array().and_then(|r| r.first()).and_then(Json::as_str).map(str::to_string))
            .collect()
    }

    fn status(&self) -> Option<Json> {
        json::parse(&fs::read_to_string(&self.status_path).ok()?).ok()
    }

    fn num(&self, key: &str) -> u64 {
        self.status().and_then(|s| s.get(key).and_then(Json::as_u64)).unwrap_or(0)
    }

    /// Requests it answered (whatever the answer).
    fn requests(&self) -> u64 {
        self.num("requests")
    }

    /// Body bytes it sent.
    fn bytes(&self) -> u64 {
        self.num("bytes")
    }

    /// "web seed N: R requests, B bytes served", for messages.
    fn describe(&self) -> String {
        format!("{} ({}): {} requests, {} B served", self.name, self.url(), self.requests(), self.bytes())
    }
}

/// `tests/peers/tracker6.py` on 127.0.0.1, answering every announce with `peers6` naming `peers6` only.
struct Tracker6 {
    proc: Proc,
    port: u16,
    status_path: PathBuf,
}

impl Tracker6 {
    #[track_caller]
    fn start(dir: &Path, port: u16, peers6: &[String], deadline: Instant) -> Tracker6 {
        require_tool(PYTHON, "python3");
        let status_path = mkdir(&dir.join("tracker6")).join("status.json");
        let lifetime = lifetime_until(deadline);
        let mut cmd = Command::new(PYTHON);
        cmd.arg("-u")
            .arg(peer_script("tracker6.py"))
            .arg("--port")
            .arg(port.to_string())
            .arg("--status")
            .arg(&status_path)
            .arg("--max-life")
            .arg(lifetime.as_secs().to_string());
        for p in peers6 {
            cmd.arg("--peer6").arg(p);
        }
        let proc = Proc::spawn("tracker6", &cmd, &dir.join("logs"), lifetime);
        wait_port_open(port, deadline_within(deadline, 20), "tracker6");
        Tracker6 { proc, port, status_path }
    }

    /// The info-hashes (hex) of the announces it answered, in order.
    fn announced_hashes(&self) -> Vec<String> {
        let Some(s) = fs::read_to_string(&self.status_path).ok().and_then(|t| json::parse(&t).ok()) else {
            return Vec::new();
        };
        s.get("announces")
            .and_then(Json::as_array)
            .unwrap_or(&[])
            .iter()
            .filter_map(|a| a.get("info_hash").and_then(Json::as_str).map(str::to_string))
            .collect()
    }
}

/// `rill create CONTENT -o DIR/t.torrent --piece-size 64k [--web-seed URL]… [--tracker URL]`.
#[track_caller]
fn rill_create(dir: &Path, c: &Content, web_seeds: &[String], tracker: Option<&str>, deadline: Instant) -> Torrent {
    let out = dir.join("t.torrent");
    let mut cmd = rill_command();
    cmd.arg("create").arg(c.path()).arg("-o").arg(&out).arg("--piece-size").arg("64k");
    for w in web_seeds {
        cmd.arg("--web-seed").arg(w);
    }
    if let Some(t) = tracker {
        cmd.arg("--tracker").arg(t);
    }
    run_tool("rill-create", &cmd, &dir.join("logs"), deadline);
    let t = Torrent::load(&out);
    assert_eq!(t.piece_length, 64 * KIB, "rill create ignored --piece-size");
    t
}

/// The content a web seed serves lives in `dir/www/<name>`: `www` is its root.
fn www(dir: &Path) -> PathBuf {
    mkdir(&dir.join("www"))
}

/// A single file of `len` bytes whose name needs percent-encoding in a URL.
fn single_file(dir: &Path, len: u64, seed: u64) -> Content {
    content::write_single(&www(dir), "web seed single.bin", len, seed)
}

/// A tree whose pieces (64 KiB) span files: files smaller than a piece, names with a space and a '%', nested
/// folders, a zero-length file (nothing to ask the web seed for), a total that leaves the last piece short.
fn web_tree(dir: &Path, seed: u64) -> Content {
    let files: &[(&str, u64)] = &[
        ("a.txt", 1_000),
        ("with space.bin", 200_001),
        ("sub dir/tiny.dat", 5_000),
        ("sub dir/deeper/big one.bin", MIB + 333),
        ("sub dir/100% sure.txt", 70_000),
        ("empty", 0),
        ("z.bin", 3 * 64 * KIB + 17),
    ];
    content::write_tree(&www(dir), "web tree", files, seed)
}

/// A python3-libtorrent seeder of `t` from its own copy of `c`, uploading at most `upload_limit` B/s (0: no
/// limit), never announcing (rill is given its address): waits until it seeds.
#[track_caller]
fn lt_seeder(dir: &Path, t: &Torrent, c: &Content, upload_limit: u64, deadline: Instant) -> LibtorrentPeer {
    let data = c.copy_to(&dir.join("lt-seeder-data"));
    let opts = LtOptions { seed: true, no_tracker: true, upload_limit, ..LtOptions::default() };
    let s = LibtorrentPeer::start(dir, "lt-seeder", t, &data, &opts, deadline);
    s.wait_seeding(deadline);
    s
}

/// Waits until `rill` exits, checking that every one of `peers` (and web seed) stays up; panics unless it
/// exited 0. Returns the seconds it took from `started`.
#[track_caller]
fn wait_rill_done(
    rill: &Proc,
    peers: &[&dyn Peer],
    seeds: &[&WebSeedServer],
    started: Instant,
    deadline: Instant,
) -> f64 {
    let status = wait_with_peers(peers, deadline, "rill download to exit", || {
        for w in seeds {
            w.proc.assert_running();
        }
        rill.exited()
    });
    let secs = started.elapsed().as_secs_f64();
    assert!(status.success(), "rill download failed: {}", describe(status));
    assert_no_panic(rill);
    secs
}

#[track_caller]
fn assert_no_panic(rill: &Proc) {
    let err = rill.stderr();
    assert!(!err.contains("panicked"), "{} panicked:\n{err}", rill.name());
}

/// rill's `web seed URL: given up: WHY` line on stdout (the view's news), if any.
fn given_up_line(rill: &Proc, url: &str) -> Option<String> {
    let prefix = format!("web seed {url}: given up: ");
    rill.stdout().lines().find(|l| l.contains(&prefix)).map(str::to_string)
}

/// Waits (briefly: counters lag the wire) until `seeder`'s own counter shows more than `bytes` uploaded.
#[track_caller]
fn wait_uploaded_over(seeder: &dyn Peer, bytes: u64, deadline: Instant) -> u64 {
    wait_for(
        deadline_within(deadline, 10),
        &format!("{} to report over {bytes} B uploaded ({})", seeder.name(), describe_peers(&[seeder])),
        || Some(seeder.uploaded_bytes()).filter(|&n| n > bytes),
    )
}

/// The output of `c` under `out`.
fn output_of(c: &Content, out: &Path) -> PathBuf {
    out.join(&c.name)
}

// ---------------------------------------------------------------------------------------------------------------
// 1. A web seed as the only source

/// rill downloads `c` from webseed.py (started with `flags`) alone: no tracker, no peer, no DHT. Each file was
/// asked for at its own URL (base + name [+ path], percent-encoded; webseed.py decodes it to find the file).
fn web_seed_only(label: &str, make: fn(&Path, u64) -> Content, flags: &[&str]) {
    let deadline = deadline_in(120);
    let dir = TempDir::new(label);
    let c = make(dir.path(), 1);
    let ws = WebSeedServer::start(dir.path(), "webseed", &www(dir.path()), flags, deadline);
    let t = rill_create(dir.path(), &c, &[ws.url()], None, deadline);
    let out = mkdir(&dir.join("out"));
    let started = Instant::now();
    let rill = spawn_rill_download(dir.path(), &t, &out, &[], &["--no-dht"], deadline);
    let secs = wait_rill_done(&rill, &[], &[&ws], started, deadline);
    assert_same_tree(&c.path(), &output_of(&c, &out));
    // Every byte came from the web seed: nothing else was there (it may have sent a little more, e.g. a span cut
    // short by the end of the download, never less).
    assert!(ws.bytes() >= c.total, "the web seed served less than the content: {}", ws.describe());
    let want: BTreeSet<String> = if c.files.is_empty() {
        [format!("/{}", c.name)].into()
    } else {
        c.files.iter().filter(|(_, len)| *len > 0).map(|(rel, _)| format!("/{}/{}", c.name, rel.display())).collect()
    };
    assert_eq!(ws.paths_served(), want, "the files asked for (decoded URL paths), {}", ws.describe());
    eprintln!("[{label}] {} B from the web seed alone in {secs:.2} s; {}", c.total, ws.describe());
}

#[test]
fn web_seed_alone_single_file() {
    web_seed_only("ws-single", |dir, seed| single_file(dir, 3 * MIB + 12_345, seed), &[]);
}

#[test]
fn web_seed_alone_multi_file() {
    web_seed_only("ws-multi", web_tree, &[]);
}

/// A web seed at `http://[::1]:PORT/`: an IPv6 literal in the URL.
#[test]
fn web_seed_alone_on_ipv6_loopback() {
    require_ipv6_loopback();
    web_seed_only("ws-ipv6", web_tree, &["--ipv6"]);
}

/// `--down-limit` holds for a web seed's bodies as for peers' blocks: 4 MiB at 1 MiB/s cannot take less than
/// about 3.75 s (the bucket starts with a quarter second of rate), where loopback alone takes a fraction of one.
#[test]
fn web_seed_alone_keeps_to_the_download_limit() {
    let deadline = deadline_in(120);
    let dir = TempDir::new("ws-limit");
    let c = single_file(dir.path(), 4 * MIB, 7);
    let ws = WebSeedServer::start(dir.path(), "webseed", &www(dir.path()), &[], deadline);
    let t = rill_create(dir.path(), &c, &[ws.url()], None, deadline);
    let out = mkdir(&dir.join("out"));
    let started = Instant::now();
    let rill = spawn_rill_download(dir.path(), &t, &out, &[], &["--no-dht", "--down-limit", "1M"], deadline);
    let secs = wait_rill_done(&rill, &[], &[&ws], started, deadline);
    assert_same_tree(&c.path(), &output_of(&c, &out));
    assert!(secs >= 3.5, "4 MiB came from the web seed in {secs:.2} s, faster than a 1 MiB/s limit allows");
    eprintln!("[ws-limit] 4 MiB from the web seed at --down-limit 1M in {secs:.2} s; {}", ws.describe());
}

// ---------------------------------------------------------------------------------------------------------------
// 2. A web seed and a peer together

/// Both rate-limited to 256 KiB/s, 4 MiB: each alone would take 16 s, so rill uses both.
#[test]
fn web_seed_and_libtorrent_seeder_both_used() {
    let deadline = deadline_in(150);
    let dir = TempDir::new("ws-both");
    let c = content::write_tree(
        &www(dir.path()),
        "both sources",
        &[("first part.bin", 2 * MIB + 4_321), ("second/part two.bin", 2 * MIB - 999)],
        2,
    );
    let rate = 256 * KIB;
    let ws = WebSeedServer::start(dir.path(), "webseed", &www(dir.path()), &["--rate", &rate.to_string()], deadline);
    let t = rill_create(dir.path(), &c, &[ws.url()], None, deadline);
    let seeder = lt_seeder(dir.path(), &t, &c, rate, deadline);
    let out = mkdir(&dir.join("out"));
    let started = Instant::now();
    let rill = spawn_rill_download(dir.path(), &t, &out, &[seeder.addr()], &["--no-dht"], deadline);
    let secs = wait_rill_done(&rill, &[&seeder], &[&ws], started, deadline);
    assert_same_tree(&c.path(), &output_of(&c, &out));
    // The counters settle a little after rill exits (the seeder writes its status every 0.2 s, the web seed
    // after each request): together they cover the content.
    let (from_peer, from_web) = wait_for(
        deadline_within(deadline, 10),
        &format!("the two sources to account for {} B: {}; {}", c.total, describe_peers(&[&seeder]), ws.describe()),
        || {
            let (p, w) = (seeder.uploaded_bytes(), ws.bytes());
            (p + w >= c.total).then_some((p, w))
        },
    );
    // At least a piece each: both sources really carried the download.
    assert!(from_peer >= t.piece_length, "the peer sent only {from_peer} B");
    assert!(from_web >= t.piece_length, "the web seed sent only {from_web} B: {}", ws.describe());
    eprintln!(
        "[ws-both] {} B in {secs:.2} s: {from_web} B from the web seed ({} requests), {from_peer} B from {}",
        c.total,
        ws.requests(),
        seeder.name()
    );
}

// ---------------------------------------------------------------------------------------------------------------
// 3, 4. Web seeds that fail, and a peer that does not

/// rill downloads `c` from a libtorrent seeder (at `peer_rate` B/s) and a misbehaving webseed.py (`flags`);
/// returns rill's process (exited 0, data byte-identical), the web seed and the seeder for further checks.
fn bad_web_seed_and_peer(
    label: &str,
    flags: &[&str],
    peer_rate: u64,
    deadline: Instant,
    dir: &TempDir,
) -> (Proc, WebSeedServer, LibtorrentPeer, Torrent, f64) {
    let c = single_file(dir.path(), 2 * MIB + 777, 3);
    let ws = WebSeedServer::start(dir.path(), "webseed", &www(dir.path()), flags, deadline);
    let t = rill_create(dir.path(), &c, &[ws.url()], None, deadline);
    let seeder = lt_seeder(dir.path(), &t, &c, peer_rate, deadline);
    let out = mkdir(&dir.join("out"));
    let started = Instant::now();
    let rill = spawn_rill_download(dir.path(), &t, &out, &[seeder.addr()], &["--no-dht"], deadline);
    let secs = wait_rill_done(&rill, &[&seeder], &[&ws], started, deadline);
    assert_same_tree(&c.path(), &output_of(&c, &out));
    assert!(ws.requests() > 0, "[{label}] rill never asked the web seed: {}", ws.describe());
    wait_uploaded_over(&seeder, 0, deadline);
    (rill, ws, seeder, t, secs)
}

#[test]
fn corrupt_web_seed_is_given_up_and_the_peer_finishes() {
    let deadline = deadline_in(150);
    let dir = TempDir::new("ws-corrupt");
    let (rill, ws, seeder, t, secs) = bad_web_seed_and_peer("ws-corrupt", &["--corrupt"], 512 * KIB, deadline, &dir);
    let line = given_up_line(&rill, &ws.url())
        .unwrap_or_else(|| panic!("no `web seed {}: given up` line on rill's stdout:\n{}", ws.url(), rill.stdout()));
    assert!(line.contains("hash"), "the given-up line should say the data failed the hash check: {line}");
    // The peer carried the whole download: everything the web seed sent was thrown away.
    let from_peer = wait_uploaded_over(&seeder, t.total_length - 1, deadline);
    eprintln!("[ws-corrupt] done in {secs:.2} s; {from_peer} B from the peer; {}; rill said: {line}", ws.describe());
}

#[test]
fn web_seed_answering_404_is_backed_off_and_the_peer_finishes() {
    let deadline = deadline_in(150);
    let dir = TempDir::new("ws-404");
    let (rill, ws, seeder, t, secs) = bad_web_seed_and_peer("ws-404", &["--not-found"], 512 * KIB, deadline, &dir);
    let log = rill.stderr();
    assert!(
        log.contains(&format!("web seed {}: HTTP 404", ws.url())),
        "rill's log should say the web seed answered HTTP 404:\n{log}"
    );
    let from_peer = wait_uploaded_over(&seeder, t.total_length - 1, deadline);
    // Backed off after the 404 (15 s first): one request, or very few, in a download of a few seconds.
    assert!(ws.requests() <= 2, "a 404 web seed asked again without backing off: {}", ws.describe());
    eprintln!("[ws-404] done in {secs:.2} s; {from_peer} B from the peer; {}", ws.describe());
}

#[test]
fn redirect_loop_web_seed_is_given_up_and_the_peer_finishes() {
    let deadline = deadline_in(150);
    let dir = TempDir::new("ws-loop");
    let (rill, ws, _seeder, _t, secs) =
        bad_web_seed_and_peer("ws-loop", &["--redirect-loop"], 512 * KIB, deadline, &dir);
    let line = given_up_line(&rill, &ws.url())
        .unwrap_or_else(|| panic!("no `web seed {}: given up` line on rill's stdout:\n{}", ws.url(), rill.stdout()));
    assert!(line.contains("redirect"), "the given-up line should name the redirect loop: {line}");
    // More than 5 redirects in a row: the 6th is not followed; and nothing after that.
    let requests = ws.requests();
    assert!((6..=7).contains(&requests), "expected 6 requests (the first and 5 redirects), saw {}", ws.describe());
    eprintln!("[ws-loop] done in {secs:.2} s; {}; rill said: {line}", ws.describe());
}

#[test]
fn web_seed_ignoring_range_is_given_up_and_the_peer_finishes() {
    let deadline = deadline_in(150);
    let dir = TempDir::new("ws-norange");
    let (rill, ws, _seeder, _t, secs) = bad_web_seed_and_peer("ws-norange", &["--no-range"], 512 * KIB, deadline, &dir);
    let line = given_up_line(&rill, &ws.url())
        .unwrap_or_else(|| panic!("no `web seed {}: given up` line on rill's stdout:\n{}", ws.url(), rill.stdout()));
    assert!(line.contains("Range"), "the given-up line should say the server ignores Range: {line}");
    eprintln!("[ws-norange] done in {secs:.2} s; {}; rill said: {line}", ws.describe());
}

// ---------------------------------------------------------------------------------------------------------------
// 5. A magnet link's `ws=`

/// `%`-encodes a query value.
fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The metadata can only come from a peer (`x.pe=`); once it has arrived, the web seed (`ws=`) is used too: the
/// peer is slow (128 KiB/s), the web seed is not.
#[test]
fn magnet_web_seed_is_used_once_the_metadata_arrives() {
    let deadline = deadline_in(150);
    let dir = TempDir::new("ws-magnet");
    let c = web_tree(dir.path(), 5);
    let ws = WebSeedServer::start(dir.path(), "webseed", &www(dir.path()), &[], deadline);
    // The torrent the seeder has names no web seed: only the magnet link does.
    let t = rill_create(dir.path(), &c, &[], None, deadline);
    let seeder = lt_seeder(dir.path(), &t, &c, 128 * KIB, deadline);
    let link = format!(
        "magnet:?xt=urn:btih:{}&dn={}&ws={}&x.pe={}",
        t.hex_hash(),
        query_escape(&c.name),
        query_escape(&ws.url()),
        seeder.addr()
    );
    let out = mkdir(&dir.join("out"));
    let started = Instant::now();
    let mut cmd = rill_command();
    cmd.arg("download").arg(&link).arg("-d").arg(&out).arg("--no-ui").arg("--no-dht");
    cmd.arg("--port").arg(free_port().to_string());
    cmd.env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
    let rill = Proc::spawn("rill", &cmd, &dir.join("logs"), lifetime_until(deadline));
    let secs = wait_rill_done(&rill, &[&seeder], &[&ws], started, deadline);
    assert_same_tree(&c.path(), &output_of(&c, &out));
    let from_web = ws.bytes();
    assert!(from_web >= t.piece_length, "the magnet's web seed was not used: {}", ws.describe());
    let stdout = rill.stdout();
    assert!(stdout.contains("metadata: "), "rill should say where the metadata came from:\n{stdout}");
    eprintln!(
        "[ws-magnet] {} B in {secs:.2} s: {from_web} B from the web seed, {} B from {}",
        c.total,
        seeder.uploaded_bytes(),
        seeder.name()
    );
}

// ---------------------------------------------------------------------------------------------------------------
// 6. IPv6 peers from a tracker's `peers6`

/// Panics unless this machine has an IPv6 loopback: the test needs it, and a skip would pass unnoticed.
#[track_caller]
fn require_ipv6_loopback() {
    if let Err(e) = TcpListener::bind("[::1]:0") {
        panic!(
            "this machine has no IPv6 loopback (binding [::1]:0 failed: {e}): the IPv6 peer test needs ::1 \
             (enable IPv6 on lo: sysctl net.ipv6.conf.lo.disable_ipv6=0)"
        );
    }
}

#[test]
fn ipv6_peer_from_tracker_peers6() {
    require_ipv6_loopback();
    let deadline = deadline_in(120);
    let dir = TempDir::new("peers6");
    let c = single_file(dir.path(), 3 * MIB + 99, 6);
    let tracker_port = free_port();
    let t = rill_create(dir.path(), &c, &[], Some(&format!("http://127.0.0.1:{tracker_port}/announce")), deadline);
    // The seeder listens on [::1] only (and never announces): the tracker's peers6 is the one way to it.
    let data = c.copy_to(&dir.join("lt-seeder-data"));
    let opts = LtOptions { seed: true, no_tracker: true, bind6: true, ..LtOptions::default() };
    let seeder = LibtorrentPeer::start(dir.path(), "lt-seeder6", &t, &data, &opts, deadline);
    seeder.wait_seeding(deadline);
    let v6 = format!("[::1]:{}", seeder.port);
    wait_until(deadline_within(deadline, 20), &format!("lt-seeder6 to listen on {v6}"), || {
        seeder.proc().assert_running();
        std::net::TcpStream::connect(v6.as_str()).is_ok()
    });
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", seeder.port)).is_err(),
        "lt-seeder6 should not listen on 127.0.0.1:{}",
        seeder.port
    );
    let tracker = Tracker6::start(dir.path(), tracker_port, std::slice::from_ref(&v6), deadline);
    let out = mkdir(&dir.join("out"));
    let started = Instant::now();
    let rill = spawn_rill_download(dir.path(), &t, &out, &[], &["--no-dht"], deadline);
    let secs = wait_rill_done(&rill, &[&seeder], &[], started, deadline);
    tracker.proc.assert_running();
    assert_same_tree(&c.path(), &output_of(&c, &out));
    assert!(
        tracker.announced_hashes().contains(&t.hex_hash()),
        "rill never announced to the test tracker on port {}: {:?}",
        tracker.port,
        tracker.announced_hashes()
    );
    let sent = wait_uploaded_over(&seeder, t.total_length - 1, deadline);
    // Every connection the seeder had (from its peer alerts: even one shorter than a status period) was on ::1.
    let peers: Vec<String> = seeder
        .status()
        .and_then(|s| s.get("peer_ids").and_then(Json::as_object).map(|o| o.iter().map(|(k, _)| k.clone()).collect()))
        .unwrap_or_default();
    assert!(!peers.is_empty(), "lt-seeder6 records no peer connection");
    for addr in &peers {
        assert!(addr.starts_with("::1:"), "lt-seeder6 had a peer that is not on ::1: {addr}");
    }
    eprintln!("[peers6] {} B from {v6} in {secs:.2} s ({sent} B sent by the seeder; peers {peers:?})", c.total);
}
