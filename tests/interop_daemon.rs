//! `rill daemon` driven by real Transmission front-end software on loopback (issue 15): Debian's
//! `transmission-remote` adds a .torrent and a magnet link (each seeded by python3-libtorrent behind
//! opentracker), lists them to 100 %, shows one, stops and starts it, reads the session, removes one with its data;
//! the daemon restarted (SIGTERM, and after kill -9) comes back with the same torrents, states and progress and
//! fetches nothing again (its seeders are gone by then); `--rpc-auth` admits `-n user:pass` and refuses a wrong
//! password; hostile RPC clients (malformed JSON, a 100 MB body, a slowloris, 500 connections, no or a stale
//! session id, a foreign Host) get the right answer or are cut off while a transfer keeps going; the watch folder
//! takes a valid torrent and marks a malformed one.
//!
//! Judged by transmission-remote's own output, the HTTP answers on the wire, and the files on disk. Every process
//! is bounded in time and killed by PID; tools are installed by `scripts/test`.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::bencode;
use common::content::{self, assert_same_tree, Content, KIB, MIB};
use common::peers::{LibtorrentPeer, LtOptions};
use common::torrent::{self, Torrent};
use common::tracker::Opentracker;
use common::{deadline_in, free_port, require_tool, rill_command, wait_for, wait_port_open, wait_until, Proc, TempDir};

/// A running `rill daemon`.
struct Daemon {
    proc: Proc,
    rpc: u16,
}

/// `rill daemon -d OUT --state-dir STATE --rpc-bind 127.0.0.1:FREE --port 0 --no-dht [extra…]`, waiting until
/// its RPC port accepts connections.
fn start_daemon(dir: &Path, name: &str, out: &Path, state: &Path, extra: &[&str], deadline: Instant) -> Daemon {
    let rpc = free_port();
    let mut cmd = rill_command();
    cmd.arg("daemon")
        .arg("-d")
        .arg(out)
        .arg("--state-dir")
        .arg(state)
        .arg("--rpc-bind")
        .arg(format!("127.0.0.1:{rpc}"))
        .args(["--port", "0", "--no-dht"])
        .args(extra)
        .env("RUST_LOG", "info");
    let proc = Proc::spawn(name, &cmd, &dir.join("logs"), common::lifetime_until(deadline));
    wait_port_open(rpc, deadline, name);
    Daemon { proc, rpc }
}

static TOOL_RUNS: AtomicU32 = AtomicU32::new(0);

/// `transmission-remote 127.0.0.1:RPC ARGS…`: whether it exited 0, and what it printed (stdout then stderr).
fn remote(dir: &Path, d: &Daemon, args: &[&str]) -> (bool, String) {
    require_tool("transmission-remote", "transmission-cli");
    let mut cmd = Command::new("transmission-remote");
    cmd.arg(format!("127.0.0.1:{}", d.rpc)).args(args);
    let n = TOOL_RUNS.fetch_add(1, Ordering::Relaxed);
    let p = Proc::spawn(&format!("remote-{n}"), &cmd, &dir.join("logs"), Duration::from_secs(30));
    let status = p.wait_exit(Instant::now() + Duration::from_secs(25));
    (status.success(), format!("{}{}", p.stdout(), p.stderr()))
}

/// As [`remote`], and it must succeed.
#[track_caller]
fn remote_ok(dir: &Path, d: &Daemon, args: &[&str]) -> String {
    let (ok, text) = remote(dir, d, args);
    if !ok {
        d.proc.dump_logs();
        panic!("transmission-remote {args:?} failed:\n{text}");
    }
    text
}

/// `-l`'s rows: (id, percent done text, status and name text).
fn list(dir: &Path, d: &Daemon) -> Vec<(u32, String, String)> {
    let text = remote_ok(dir, d, &["-l"]);
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let id = words.next()?.trim_end_matches('*').parse().ok()?;
            let done = words.next()?.to_string();
            Some((id, done, line.to_string()))
        })
        .collect()
}

fn magnet_link(info_hash: &[u8; 20], name: &str, tracker: &str) -> String {
    format!(
        "magnet:?xt=urn:btih:{}&dn={}&tr={}",
        bencode::hex(info_hash),
        bencode::percent_encode(name.as_bytes()),
        bencode::percent_encode(tracker.as_bytes())
    )
}

/// `-t ID -i`'s `State:` value.
fn state_of(dir: &Path, d: &Daemon, id: u32) -> String {
    let text = remote_ok(dir, d, &["-t", &id.to_string(), "-i"]);
    text.lines().find_map(|l| l.trim().strip_prefix("State: ")).unwrap_or("").to_string()
}

fn percent_of(dir: &Path, d: &Daemon, id: u32) -> String {
    let text = remote_ok(dir, d, &["-t", &id.to_string(), "-i"]);
    text.lines().find_map(|l| l.trim().strip_prefix("Percent Done: ")).unwrap_or("").to_string()
}

/// A seeder of `t` from a copy of `c`, announcing to the tracker.
fn seeder(dir: &Path, name: &str, t: &Torrent, c: &Content, upload_limit: u64, deadline: Instant) -> LibtorrentPeer {
    let data = c.copy_to(&dir.join(format!("{name}-data")));
    let opts = LtOptions { seed: true, upload_limit, ..LtOptions::default() };
    let p = LibtorrentPeer::start(dir, name, t, &data, &opts, deadline);
    p.wait_seeding(deadline);
    p
}

// ---------------------------------------------------------------------------------------------------------------
// 1. transmission-remote drives the daemon; the daemon comes back after SIGTERM and after kill -9

#[test]
fn transmission_remote_adds_lists_stops_starts_and_removes_and_the_daemon_restores_its_torrents() {
    let deadline = deadline_in(150);
    let dir = TempDir::new("daemon-remote");
    let port = Opentracker::reserve_port();
    let announce = common::tracker::announce_url(port);
    let a = content::small_tree(&dir.mkdir("content-a"), "tree-a", 0xDAE_0001);
    let ta = torrent::libtorrent_create(&a, &announce, 64 * KIB, true, &dir.join("a.torrent"), deadline);
    let b = content::write_single(&dir.mkdir("content-b"), "single-b.bin", 3 * MIB + 777, 0xDAE_0002);
    let tb = torrent::libtorrent_create(&b, &announce, 64 * KIB, true, &dir.join("b.torrent"), deadline);
    let tracker = Opentracker::start(dir.path(), port, &[ta.info_hash, tb.info_hash], deadline);
    let seed_a = seeder(dir.path(), "seeder-a", &ta, &a, 0, deadline);
    let seed_b = seeder(dir.path(), "seeder-b", &tb, &b, 0, deadline);
    tracker.wait_seeders(&ta.info_hash, 1, deadline);
    tracker.wait_seeders(&tb.info_hash, 1, deadline);

    let out = dir.mkdir("out");
    let state = dir.join("state");
    let d = start_daemon(dir.path(), "daemon", &out, &state, &[], deadline);
    let added = remote_ok(dir.path(), &d, &["-a", &ta.path.to_string_lossy()]);
    assert!(added.contains("success"), "{added}");
    let link = magnet_link(&tb.info_hash, &tb.name, &announce);
    let added = remote_ok(dir.path(), &d, &["-a", &link]);
    assert!(added.contains("success"), "{added}");
    // The same torrent again is a duplicate, not a second entry.
    remote(dir.path(), &d, &["-a", &ta.path.to_string_lossy()]);

    let rows = wait_for(deadline, "both torrents at 100 % in transmission-remote -l", || {
        let rows = list(dir.path(), &d);
        (rows.len() == 2 && rows.iter().all(|(_, done, _)| done == "100%")).then_some(rows)
    });
    assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2], "{rows:?}");
    assert_same_tree(&a.path(), &out.join(&ta.name));
    assert_same_tree(&b.path(), &out.join(&tb.name));

    let news = d.proc.stdout();
    assert!(news.contains(&format!("{}: tracker ", ta.name)), "the daemon's lines name their torrent:\n{news}");
    let info = remote_ok(dir.path(), &d, &["-t", "1", "-i"]);
    assert!(info.contains(&format!("Name: {}", ta.name)), "{info}");
    assert!(info.contains(&format!("Hash: {}", bencode::hex(&ta.info_hash))), "{info}");
    assert!(info.contains("Total size:"), "{info}");
    let files = remote_ok(dir.path(), &d, &["-t", "1", "-f"]);
    assert!(files.contains("one.bin") && files.contains("three.bin"), "{files}");
    // Tracker stats as transmission-remote reads them (it skips an entry that lacks any key it wants).
    let trackers = remote_ok(dir.path(), &d, &["-t", "1", "-it"]);
    assert!(trackers.contains(&format!("Tracker 0: http://127.0.0.1:{port}")), "{trackers}");
    assert!(trackers.contains("Got a list of"), "opentracker answered: {trackers}");

    remote_ok(dir.path(), &d, &["-t", "1", "-S"]);
    wait_until(deadline, "torrent 1 stopped", || state_of(dir.path(), &d, 1) == "Stopped");
    assert_eq!(percent_of(dir.path(), &d, 1), "100%", "a stopped torrent keeps showing its progress");
    remote_ok(dir.path(), &d, &["-t", "1", "-s"]);
    wait_until(deadline, "torrent 1 seeding again", || {
        let s = state_of(dir.path(), &d, 1);
        s == "Seeding" || s == "Idle"
    });
    // Verify: a full check, back to 100 % from the data on disk. Unwanting a file is kept.
    remote_ok(dir.path(), &d, &["-t", "1", "-v"]);
    wait_until(deadline, "torrent 1 checked again and seeding", || {
        let s = state_of(dir.path(), &d, 1);
        (s == "Seeding" || s == "Idle") && percent_of(dir.path(), &d, 1) == "100%"
    });
    remote_ok(dir.path(), &d, &["-t", "1", "-G", "0"]);
    wait_until(deadline, "file 0 of torrent 1 unwanted", || {
        let files = remote_ok(dir.path(), &d, &["-t", "1", "-f"]);
        files.lines().any(|l| l.trim_start().starts_with("0:") && l.contains(" No "))
    });
    let session = remote_ok(dir.path(), &d, &["-si"]);
    assert!(session.contains("rill") && session.contains("RPC version"), "{session}");
    let stats = remote_ok(dir.path(), &d, &["-st"]);
    assert!(stats.contains("CURRENT SESSION"), "{stats}");

    // Seed ratios: the session's shows in -si; a torrent's own ratio of 0 stops it at once, as Transmission
    // shows a torrent that reached its ratio ("Finished"); -SR lifts it and a start seeds again.
    remote_ok(dir.path(), &d, &["-gsr", "0.5"]);
    let session = remote_ok(dir.path(), &d, &["-si"]);
    assert!(session.contains("Default seed ratio limit: 0.5"), "{session}");
    remote_ok(dir.path(), &d, &["-t", "1", "-sr", "0"]);
    wait_until(deadline, "torrent 1 finished at its seed ratio of 0", || state_of(dir.path(), &d, 1) == "Finished");
    remote_ok(dir.path(), &d, &["-t", "1", "-SR"]);
    remote_ok(dir.path(), &d, &["-t", "1", "-s"]);
    wait_until(deadline, "torrent 1 seeding again without a ratio", || {
        let s = state_of(dir.path(), &d, 1);
        s == "Seeding" || s == "Idle"
    });

    // Tracker edits: -td adds a second opentracker, which rill announces to at once (as a seed: no other
    // peer knows that tracker); -tr 0 removes the first, leaving the new one as tracker 0.
    let port2 = Opentracker::reserve_port();
    let tracker2 = Opentracker::start(&dir.mkdir("tracker-2"), port2, &[ta.info_hash], deadline);
    let announce2 = common::tracker::announce_url(port2);
    remote_ok(dir.path(), &d, &["-t", "1", "-td", &announce2]);
    tracker2.wait_seeders(&ta.info_hash, 1, deadline);
    let trackers = remote_ok(dir.path(), &d, &["-t", "1", "-it"]);
    assert!(trackers.contains(&format!("Tracker 0: http://127.0.0.1:{port}")), "{trackers}");
    assert!(trackers.contains(&format!("Tracker 1: http://127.0.0.1:{port2}")), "{trackers}");
    let (ok, text) = remote(dir.path(), &d, &["-t", "1", "-td", "https://127.0.0.1:9/announce"]);
    assert!(!ok && text.contains("unsupported url scheme"), "a tracker rill cannot use is refused: {text}");
    remote_ok(dir.path(), &d, &["-t", "1", "-tr", "0"]);
    let trackers = remote_ok(dir.path(), &d, &["-t", "1", "-it"]);
    assert!(trackers.contains(&format!("Tracker 0: http://127.0.0.1:{port2}")), "{trackers}");
    assert!(!trackers.contains(&format!("127.0.0.1:{port}")), "the first tracker is gone: {trackers}");

    // Turtle mode: -as puts the alternative limits (-asd/-asu, kB/s) in force instead of the session's, -AS
    // takes them out again; -si shows which.
    remote_ok(dir.path(), &d, &["-asd", "120", "-asu", "40", "-as"]);
    let session = remote_ok(dir.path(), &d, &["-si"]);
    assert!(session.contains("Enabled turtle limit: 40"), "{session}");
    assert!(session.contains("Enabled turtle limit: 120"), "{session}");
    remote_ok(dir.path(), &d, &["-AS"]);
    let session = remote_ok(dir.path(), &d, &["-si"]);
    assert!(session.contains("Disabled turtle limit: 40"), "{session}");

    // Its own speed limits (kB/s of 1000), on top of the session's; -U lifts the upload one again.
    remote_ok(dir.path(), &d, &["-t", "1", "-d", "200", "-u", "300"]);
    let info = remote_ok(dir.path(), &d, &["-t", "1", "-i"]);
    assert!(info.contains("Download Limit: 200") && info.contains("Upload Limit: 300"), "{info}");
    remote_ok(dir.path(), &d, &["-t", "1", "-U"]);
    let info = remote_ok(dir.path(), &d, &["-t", "1", "-i"]);
    assert!(info.contains("Download Limit: 200") && info.contains("Upload Limit: Unlimited"), "{info}");

    // --move: the files go to another folder under the download root, resume file included, and the torrent
    // seeds from there without a full check; a folder outside the root is refused.
    let moved = out.join("moved");
    remote_ok(dir.path(), &d, &["-t", "1", "--move", &moved.to_string_lossy()]);
    wait_until(deadline, "torrent 1 moved and seeding from its new folder", || {
        let info = remote_ok(dir.path(), &d, &["-t", "1", "-i"]);
        let s = state_of(dir.path(), &d, 1);
        info.contains(&format!("Location: {}", moved.display())) && (s == "Seeding" || s == "Idle")
    });
    assert_same_tree(&a.path(), &moved.join(&ta.name));
    assert!(!out.join(&ta.name).exists(), "nothing is left in the old folder");
    // It started again from its resume file: a seed from its first announce (the pieces the file vouches for
    // count as had for trackers while they are confirmed), not a leecher until the next one.
    wait_until(deadline, "opentracker 2 to count the restarted rill as its one seeder, no leecher", || {
        tracker2.scrape(&ta.info_hash) == Some((1, 0))
    });
    let (ok, text) = remote(dir.path(), &d, &["-t", "1", "--move", "/tmp"]);
    assert!(!ok && text.contains("outside"), "a folder outside the download root is refused: {text}");
    let log = d.proc.stderr();
    assert!(log.contains(&format!("file(s) moved to {}", moved.display())), "{log}");

    remote_ok(dir.path(), &d, &["-t", "2", "--remove-and-delete"]);
    wait_until(deadline, "torrent 2 gone from the list", || list(dir.path(), &d).iter().all(|r| r.0 != 2));
    wait_until(deadline, "torrent 2's data deleted", || !out.join(&tb.name).exists());

    // Stop torrent 1 again, then SIGTERM: it must come back stopped, at 100 %, with nothing to fetch.
    remote_ok(dir.path(), &d, &["-t", "1", "-S"]);
    wait_until(deadline, "torrent 1 stopped", || state_of(dir.path(), &d, 1) == "Stopped");
    d.proc.signal(15);
    let status = d.proc.wait_exit(deadline);
    assert!(status.success(), "the daemon's exit after SIGTERM: {}", common::describe(status));
    drop(seed_a);
    drop(seed_b);

    let d = start_daemon(dir.path(), "daemon-2", &out, &state, &[], deadline);
    let rows = list(dir.path(), &d);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(state_of(dir.path(), &d, 1), "Stopped");
    assert_eq!(percent_of(dir.path(), &d, 1), "100%");
    let info = remote_ok(dir.path(), &d, &["-t", "1", "-i"]);
    assert!(info.contains("Ratio Limit: Unlimited"), "the torrent's seed ratio mode is kept: {info}");
    assert!(info.contains("Seeding Time:"), "its seeding time is kept (secondsSeeding): {info}");
    assert!(info.contains("Download Limit: 200"), "its own speed limit is kept: {info}");
    let trackers = remote_ok(dir.path(), &d, &["-t", "1", "-it"]);
    assert!(
        trackers.contains(&format!("Tracker 0: http://127.0.0.1:{port2}")) && !trackers.contains("Tracker 1:"),
        "the edited tracker list is kept: {trackers}"
    );
    remote_ok(dir.path(), &d, &["-t", "1", "-s"]);
    wait_until(deadline, "torrent 1 seeding from its resume file, no seeder left", || {
        state_of(dir.path(), &d, 1) == "Seeding" || state_of(dir.path(), &d, 1) == "Idle"
    });
    assert_eq!(percent_of(dir.path(), &d, 1), "100%");
    // Its totals carry over stops, verifies and restarts (a front-end's ratio column must not reset).
    let info = remote_ok(dir.path(), &d, &["-t", "1", "-i"]);
    let downloaded = info.lines().find_map(|l| l.trim().strip_prefix("Downloaded: ")).unwrap_or("");
    assert!(!downloaded.is_empty() && downloaded != "None", "downloaded-ever after a restart: {info}");

    // kill -9: the state file written at the last change is all there is; wait until it says "started".
    let state_file = state.join("daemon.json");
    wait_until(deadline, "the state file to record the start", || {
        fs::read_to_string(&state_file).is_ok_and(|s| s.contains("\"stopped\": false"))
    });
    d.proc.signal(9);
    d.proc.wait_exit(deadline);
    let d = start_daemon(dir.path(), "daemon-3", &out, &state, &[], deadline);
    wait_until(deadline, "torrent 1 back and complete after kill -9", || {
        let rows = list(dir.path(), &d);
        rows.len() == 1 && rows[0].1 == "100%" && (rows[0].2.contains("Seeding") || rows[0].2.contains("Idle"))
    });
    assert_same_tree(&a.path(), &moved.join(&ta.name));
    d.proc.signal(15);
    assert!(d.proc.wait_exit(deadline).success());
}

// ---------------------------------------------------------------------------------------------------------------
// 2. Credentials

#[test]
fn rpc_auth_admits_the_right_password_and_answers_401_to_a_wrong_one() {
    let deadline = deadline_in(40);
    let dir = TempDir::new("daemon-auth");
    let out = dir.mkdir("out");
    let d = start_daemon(dir.path(), "daemon", &out, &dir.join("state"), &["--rpc-auth", "alice:s3cret"], deadline);
    let listed = remote_ok(dir.path(), &d, &["-n", "alice:s3cret", "-l"]);
    assert!(listed.contains("Sum:"), "{listed}");
    let (ok, text) = remote(dir.path(), &d, &["-n", "alice:wrong", "-l"]);
    assert!(!ok && text.contains("401"), "a wrong password must be refused with 401: {text}");
    let (ok, text) = remote(dir.path(), &d, &["-l"]);
    assert!(!ok && text.contains("401"), "no credentials must be refused with 401: {text}");
}

// ---------------------------------------------------------------------------------------------------------------
// 3. Hostile RPC clients while a transfer runs

/// One raw HTTP exchange: sends `request`, reads until the server closes or `limit` passes; returns what came back.
fn raw(port: u16, request: &[u8], limit: Duration) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the RPC port");
    s.set_read_timeout(Some(limit)).unwrap();
    let _ = s.write_all(request);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                // One answer is enough when the connection stays open.
                if got.windows(4).any(|w| w == b"\r\n\r\n") && !request.is_empty() {
                    if let Some(len) = content_length(&got) {
                        let head = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                        if got.len() >= head + len {
                            break;
                        }
                    }
                }
            }
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn content_length(response: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(response);
    text.lines().find_map(|l| l.strip_prefix("Content-Length: ")).and_then(|v| v.trim().parse().ok())
}

fn session_id(port: u16) -> String {
    let answer = raw(
        port,
        b"POST /transmission/rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}",
        Duration::from_secs(5),
    );
    assert!(answer.starts_with("HTTP/1.1 409"), "no session id must get 409: {answer}");
    answer
        .lines()
        .find_map(|l| l.strip_prefix("X-Transmission-Session-Id: "))
        .map(|v| v.trim().to_string())
        .expect("the 409 carries the session id")
}

fn post(session: &str, host: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /transmission/rpc HTTP/1.1\r\nHost: {host}\r\nX-Transmission-Session-Id: {session}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn hostile_rpc_clients_get_the_right_answer_or_are_cut_off_while_a_download_goes_on() {
    let deadline = deadline_in(120);
    let dir = TempDir::new("daemon-hostile");
    let port = Opentracker::reserve_port();
    let announce = common::tracker::announce_url(port);
    let c = content::write_single(&dir.mkdir("content"), "slow.bin", 6 * MIB + 5, 0xDAE_0003);
    let t = torrent::libtorrent_create(&c, &announce, 64 * KIB, true, &dir.join("t.torrent"), deadline);
    let tracker = Opentracker::start(dir.path(), port, &[t.info_hash], deadline);
    // Slow enough that the download spans the attacks (about 6 s).
    let _seed = seeder(dir.path(), "seeder", &t, &c, MIB, deadline);
    tracker.wait_seeders(&t.info_hash, 1, deadline);
    let out = dir.mkdir("out");
    let d = start_daemon(dir.path(), "daemon", &out, &dir.join("state"), &[], deadline);
    remote_ok(dir.path(), &d, &["-a", &t.path.to_string_lossy()]);
    let p = d.rpc;
    let limit = Duration::from_secs(5);

    let sid = session_id(p);
    let stale = raw(p, &post("0123456789", "127.0.0.1", r#"{"method":"session-get"}"#), limit);
    assert!(stale.starts_with("HTTP/1.1 409"), "a stale session id must get 409: {stale}");
    let foreign = raw(p, &post(&sid, "evil.example.com:9091", r#"{"method":"session-get"}"#), limit);
    assert!(foreign.starts_with("HTTP/1.1 421"), "a foreign Host must get 421: {foreign}");
    let bad_json = raw(p, &post(&sid, "127.0.0.1", "{\"method\": torrent-get"), limit);
    assert!(bad_json.starts_with("HTTP/1.1 200") && bad_json.contains("\"result\""), "{bad_json}");
    assert!(!bad_json.contains("\"success\""), "malformed JSON must not succeed: {bad_json}");
    let huge = format!(
        "POST /transmission/rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Transmission-Session-Id: {sid}\r\nContent-Length: {}\r\n\r\n",
        100 << 20
    );
    let answer = raw(p, huge.as_bytes(), limit);
    assert!(answer.starts_with("HTTP/1.1 413"), "a 100 MB body must get 413 before it is sent: {answer}");

    // A slowloris: a request head trickled byte by byte is cut off at the server's deadline.
    let mut slow = TcpStream::connect(("127.0.0.1", p)).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let trickle =
        b"POST /transmission/rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let cut_off = wait_for(Instant::now() + Duration::from_secs(25), "the slowloris to be cut off", || {
        for b in trickle.iter() {
            if slow.write_all(std::slice::from_ref(b)).is_err() {
                return Some(String::new());
            }
            let mut buf = [0u8; 512];
            match slow.read(&mut buf) {
                Ok(0) => return Some(String::new()),
                Ok(n) => return Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(_) => {}
            }
        }
        None
    });
    assert!(cut_off.is_empty() || cut_off.starts_with("HTTP/1.1 408"), "{cut_off}");

    // 500 connections at once: the server stays at its cap, and a fresh client is answered afterwards.
    let flood: Vec<TcpStream> = (0..500).filter_map(|_| TcpStream::connect(("127.0.0.1", p)).ok()).collect();
    assert!(flood.len() >= 400, "only {} connections opened", flood.len());
    let answer = raw(p, &post(&sid, "127.0.0.1", r#"{"method":"session-get","tag":9}"#), limit);
    assert!(answer.contains("\"tag\":9"), "a client after the flood must be served: {answer}");
    drop(flood);

    // Through it all the transfer went on.
    wait_until(deadline, "the download to finish", || list(dir.path(), &d).first().is_some_and(|r| r.1 == "100%"));
    assert_same_tree(&c.path(), &out.join(&t.name));
    d.proc.signal(15);
    assert!(d.proc.wait_exit(deadline).success());
}

// ---------------------------------------------------------------------------------------------------------------
// 4. The watch folder

#[test]
fn the_watch_folder_adds_a_valid_torrent_and_marks_a_malformed_one() {
    let deadline = deadline_in(60);
    let dir = TempDir::new("daemon-watch");
    let c = content::write_single(&dir.mkdir("content"), "w.bin", MIB, 0xDAE_0004);
    let t =
        torrent::libtorrent_create(&c, "http://127.0.0.1:1/announce", 64 * KIB, true, &dir.join("w.torrent"), deadline);
    let watch = dir.mkdir("watch");
    let out = dir.mkdir("out");
    let d =
        start_daemon(dir.path(), "daemon", &out, &dir.join("state"), &["--watch", &watch.to_string_lossy()], deadline);
    fs::copy(&t.path, watch.join("good.torrent")).unwrap();
    fs::write(watch.join("bad.torrent"), b"d4:infoi3ee").unwrap();
    let marked = |name: &str| -> PathBuf { watch.join(name) };
    wait_until(deadline, "good.torrent renamed .added", || marked("good.torrent.added").exists());
    wait_until(deadline, "bad.torrent renamed .invalid", || marked("bad.torrent.invalid").exists());
    let rows = list(dir.path(), &d);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].2.contains(&t.name), "{rows:?}");
    let log = d.proc.stderr();
    assert!(log.contains("bad.torrent"), "a line must say why bad.torrent was refused:\n{log}");
}
