//! rill daemon's own web page (issue 15) in Debian's headless chromium, driven through chromium-driver's W3C
//! WebDriver protocol on loopback: a python3-libtorrent seeder behind opentracker for each of two torrents; the
//! page adds one by .torrent upload (WebDriver types the file's path into the `<input type=file>`) and one by
//! magnet link, lists both to 100 %, shows one torrent's files, pauses and resumes it (the RPC agrees), shows an
//! RPC error in its error line, fits a phone-sized window, and removes both (one with its data). The first
//! torrent's name is HTML (`<img … onerror=…>`): the page must show it as text.
//!
//! Judged by what the page shows (its stable hooks, documented at the top of `src/rpc/page.html`), by the RPC
//! itself, and by the files on disk. Screenshots are kept in `target/test-artifacts/` (the path is printed).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::bencode;
use common::content::{self, assert_same_tree, Content, KIB, MIB};
use common::http;
use common::json::{self, Json};
use common::peers::{LibtorrentPeer, LtOptions};
use common::torrent::{self, Torrent};
use common::tracker::Opentracker;
use common::webdriver::Browser;
use common::{deadline_in, free_port, rill_command, wait_for, wait_port_open, wait_until, Proc, TempDir};

/// A torrent's row as the page shows it.
#[derive(Debug)]
struct Row {
    id: u64,
    hash: String,
    status: u64,
    pct: String,
    state: String,
    name: String,
}

const ROWS_JS: &str = "return [...document.querySelectorAll('#list .torrent')].map(d => ({id: +d.dataset.id, \
    hash: d.dataset.hash || '', status: +d.dataset.status, pct: d.querySelector('.pct').textContent, \
    state: d.querySelector('.state').textContent, name: d.querySelector('.name').textContent}));";

fn rows(b: &Browser) -> Vec<Row> {
    let v = b.eval(ROWS_JS);
    let s = |r: &Json, k: &str| r.get(k).and_then(Json::as_str).unwrap_or("").to_string();
    let n = |r: &Json, k: &str| r.get(k).and_then(Json::as_u64).unwrap_or(u64::MAX);
    v.as_array()
        .unwrap_or(&[])
        .iter()
        .map(|r| Row {
            id: n(r, "id"),
            hash: s(r, "hash"),
            status: n(r, "status"),
            pct: s(r, "pct"),
            state: s(r, "state"),
            name: s(r, "name"),
        })
        .collect()
}

fn row(b: &Browser, hash: &str) -> Option<Row> {
    rows(b).into_iter().find(|r| r.hash == hash)
}

/// One RPC call as any client makes it: the 409 handshake, then the request with the session id.
fn rpc(port: u16, body: &str) -> Json {
    let path = "/transmission/rpc";
    let first = http::request(port, "POST", path, &[], body.as_bytes()).expect("RPC request");
    assert_eq!(first.status, 409, "a request without a session id gets 409");
    let sid = first.header("X-Transmission-Session-Id").expect("409 carries the session id").to_string();
    let r = http::request(port, "POST", path, &[("X-Transmission-Session-Id", &sid)], body.as_bytes())
        .expect("RPC request");
    assert_eq!(r.status, 200, "{}", r.text());
    json::parse(&r.text()).expect("RPC answers JSON")
}

/// The RPC's view: (hash, status) of every torrent.
fn rpc_torrents(port: u16) -> Vec<(String, u64)> {
    let j = rpc(port, r#"{"method":"torrent-get","arguments":{"fields":["hashString","status"]}}"#);
    j.at(&["arguments", "torrents"])
        .and_then(Json::as_array)
        .unwrap_or(&[])
        .iter()
        .map(|t| {
            let hash = t.get("hashString").and_then(Json::as_str).unwrap_or("").to_string();
            (hash, t.get("status").and_then(Json::as_u64).unwrap_or(u64::MAX))
        })
        .collect()
}

fn rpc_status(port: u16, hash: &str) -> Option<u64> {
    rpc_torrents(port).into_iter().find(|(h, _)| h == hash).map(|(_, s)| s)
}

fn seeder(dir: &Path, name: &str, t: &Torrent, c: &Content, deadline: Instant) -> LibtorrentPeer {
    let data = c.copy_to(&dir.join(format!("{name}-data")));
    let opts = LtOptions { seed: true, ..LtOptions::default() };
    let p = LibtorrentPeer::start(dir, name, t, &data, &opts, deadline);
    p.wait_seeding(deadline);
    p
}

/// `target/test-artifacts/NAME`, kept after the test (beside the binaries under test).
fn artifact(name: &str) -> PathBuf {
    let target = common::rill_bin().parent().and_then(Path::parent).map(Path::to_path_buf).expect("target dir");
    let dir = target.join("test-artifacts");
    fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir.join(name)
}

fn save_screenshot(b: &Browser, name: &str) -> PathBuf {
    let png = b.screenshot_png();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "the screenshot is a PNG");
    let path = artifact(name);
    fs::write(&path, &png).expect("write the screenshot");
    eprintln!("[web] screenshot: {} ({} bytes)", path.display(), png.len());
    path
}

/// `rill daemon` on a free loopback RPC port, with no DHT; waits until the RPC port accepts connections.
fn start_daemon(dir: &Path, out: &Path, extra: &[&str], deadline: Instant) -> (Proc, u16) {
    let rpc_port = free_port();
    (start_daemon_on(dir, "daemon", rpc_port, out, extra, deadline), rpc_port)
}

fn start_daemon_on(dir: &Path, name: &str, rpc_port: u16, out: &Path, extra: &[&str], deadline: Instant) -> Proc {
    let mut cmd = rill_command();
    cmd.arg("daemon")
        .arg("-d")
        .arg(out)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--rpc-bind")
        .arg(format!("127.0.0.1:{rpc_port}"))
        .args(["--port", "0", "--no-dht"])
        .args(extra)
        .env("RUST_LOG", "info");
    let daemon = Proc::spawn(name, &cmd, &dir.join("logs"), common::lifetime_until(deadline));
    wait_port_open(rpc_port, deadline, "rill daemon's RPC");
    daemon
}

#[test]
fn the_web_page_adds_lists_pauses_resumes_and_removes_torrents_in_headless_chromium() {
    let deadline = deadline_in(240);
    let dir = TempDir::new("daemon-web");
    let port = Opentracker::reserve_port();
    let announce = common::tracker::announce_url(port);
    // A name a stranger chose: if the page ever parsed it as HTML, the image's error handler would retitle it.
    let hostile = "tree <img src=x onerror=document.title='pwned'>";
    let a = content::small_tree(&dir.mkdir("content-a"), hostile, 0x3EB_0001);
    let ta = torrent::libtorrent_create(&a, &announce, 64 * KIB, true, &dir.join("a.torrent"), deadline);
    let c = content::write_single(&dir.mkdir("content-b"), "single-b.bin", 3 * MIB + 4321, 0x3EB_0002);
    let tb = torrent::libtorrent_create(&c, &announce, 64 * KIB, true, &dir.join("b.torrent"), deadline);
    let tracker = Opentracker::start(dir.path(), port, &[ta.info_hash, tb.info_hash], deadline);
    let _seed_a = seeder(dir.path(), "seeder-a", &ta, &a, deadline);
    let _seed_b = seeder(dir.path(), "seeder-b", &tb, &c, deadline);
    tracker.wait_seeders(&ta.info_hash, 1, deadline);
    tracker.wait_seeders(&tb.info_hash, 1, deadline);

    let out = dir.mkdir("out");
    let (daemon, rpc_port) = start_daemon(dir.path(), &out, &[], deadline);

    let started = Instant::now();
    let b = Browser::start(dir.path(), 1100, 900, deadline);
    eprintln!("[web] chromium session up in {:.1} s", started.elapsed().as_secs_f64());
    b.goto(&format!("http://127.0.0.1:{rpc_port}/"));
    // The page's first refresh went through the 409 handshake: the empty list is shown, no error.
    b.wait_visible("#empty", deadline);
    let err = b.find("#err").expect("#err");
    assert!(!b.displayed(&err), "no RPC error on an empty daemon: {}", b.text(&err));
    assert!(b.text(&b.find("#totals").expect("#totals")).contains("0 torrents"));

    // A .torrent file through the file input.
    let hash_a = bencode::hex(&ta.info_hash);
    let hash_b = bencode::hex(&tb.info_hash);
    b.send_keys(&b.find("#file").expect("#file"), &ta.path.to_string_lossy());
    wait_for(deadline, "the uploaded torrent in the list", || row(&b, &hash_a));
    // A magnet link through the text box.
    let link = format!(
        "magnet:?xt=urn:btih:{hash_b}&dn={}&tr={}",
        bencode::percent_encode(tb.name.as_bytes()),
        bencode::percent_encode(announce.as_bytes())
    );
    b.send_keys(&b.find("#magnet").expect("#magnet"), &link);
    b.click(&b.find("#add-magnet").expect("#add-magnet"));
    wait_for(deadline, "the magnet in the list", || row(&b, &hash_b));
    assert!(b.text(&b.find("#msg").expect("#msg")).starts_with("Added "), "the page says what it added");

    let done = wait_for(deadline, "both torrents at 100.0 % on the page", || {
        let rs = rows(&b);
        (rs.len() == 2 && rs.iter().all(|r| r.pct == "100.0%")).then_some(rs)
    });
    assert_same_tree(&a.path(), &out.join(&ta.name));
    assert_same_tree(&c.path(), &out.join(&tb.name));
    assert_eq!(done.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 2], "rows in RPC id order: {done:?}");
    let ra = done.iter().find(|r| r.hash == hash_a).expect("row a");
    assert_eq!(ra.name, ta.name, "the name is shown as text, exactly");
    assert_eq!(b.eval("return document.title;").as_str(), Some("rill"), "no script from a torrent name ran");
    assert_eq!(b.eval("return document.querySelectorAll('#list img, #detail img').length;").as_u64(), Some(0));
    wait_until(deadline, "both seeding on the page", || rows(&b).iter().all(|r| r.state == "seeding"));

    // One torrent's files.
    let sel_a = format!(".torrent[data-hash=\"{hash_a}\"]");
    b.click(&b.find(&format!("{sel_a} .name")).expect("a's name"));
    b.wait_visible("#detail", deadline);
    let files = wait_for(deadline, "a's files in the detail pane", || {
        let v = b.eval(
            "return [...document.querySelectorAll('#files tr.file')].map(r => \
             r.querySelector('.fname').textContent + '|' + r.querySelector('.fpct').textContent);",
        );
        let list: Vec<String> = v.as_array()?.iter().filter_map(|s| s.as_str().map(str::to_string)).collect();
        (list.len() == 4).then_some(list)
    });
    for f in ["one.bin", "sub/two.bin", "sub/deeper/three.bin", "zero-length"] {
        assert!(files.iter().any(|l| l.ends_with(&format!("{f}|100.0%"))), "{f} at 100.0 % in {files:?}");
    }
    assert_eq!(b.text(&b.find("#detail-name").expect("#detail-name")), ta.name);
    assert!(b.find("#peers").is_some());

    // Pause: the page and the RPC agree it is stopped; it keeps its progress.
    b.click(&b.find(&format!("{sel_a} .pause")).expect("a's pause button"));
    wait_until(deadline, "a stopped on the page", || {
        row(&b, &hash_a).is_some_and(|r| r.state == "stopped" && r.status == 0 && r.pct == "100.0%")
    });
    assert_eq!(rpc_status(rpc_port, &hash_a), Some(0), "the RPC says stopped too");
    assert!(!b.displayed(&b.find(&format!("{sel_a} .pause")).expect("pause")), "no pause on a stopped torrent");
    let shot = save_screenshot(&b, "daemon-web.png");

    // An RPC error is shown in the error line, as the RPC's `result` string.
    b.send_keys(&b.find("#magnet").expect("#magnet"), "magnet:?xt=urn:btih:nothex");
    b.click(&b.find("#add-magnet").expect("#add-magnet"));
    let shown = b.wait_visible("#err", deadline);
    let text = b.text(&shown);
    let direct = rpc(rpc_port, r#"{"method":"torrent-add","arguments":{"filename":"magnet:?xt=urn:btih:nothex"}}"#);
    let result = direct.get("result").and_then(Json::as_str).unwrap_or("").to_string();
    assert!(result != "success" && text == result, "the page shows the RPC's result {result:?}: {text:?}");

    // Resume.
    b.click(&b.find(&format!("{sel_a} .resume")).expect("a's resume button"));
    wait_until(deadline, "a seeding again on the page", || row(&b, &hash_a).is_some_and(|r| r.status == 6));
    assert_eq!(rpc_status(rpc_port, &hash_a), Some(6), "the RPC says seeding too");
    // Any action that succeeds clears the error line.
    assert!(!b.displayed(&b.find("#err").expect("#err")), "the error line is cleared");

    // A phone-sized window: nothing wider than the screen.
    b.set_window_size(390, 844);
    wait_until(deadline, "the page to fit a 390 px wide window", || {
        b.eval("return document.documentElement.scrollWidth <= window.innerWidth && window.innerWidth <= 420;")
            .as_bool()
            == Some(true)
    });
    save_screenshot(&b, "daemon-web-phone.png");
    b.set_window_size(1100, 900);

    // Remove b with its data, then a keeping its data.
    let sel_b = format!(".torrent[data-hash=\"{hash_b}\"]");
    b.click(&b.find(&format!("{sel_b} .remove")).expect("b's remove button"));
    b.click(&b.wait_visible(&format!("{sel_b} .rm-delete"), deadline));
    wait_until(deadline, "b gone from the page", || row(&b, &hash_b).is_none());
    assert!(rpc_torrents(rpc_port).iter().all(|(h, _)| *h != hash_b), "b gone from the RPC");
    wait_until(deadline, "b's data deleted", || !out.join(&tb.name).exists());
    b.click(&b.find(&format!("{sel_a} .remove")).expect("a's remove button"));
    b.click(&b.wait_visible(&format!("{sel_a} .rm-keep"), deadline));
    wait_until(deadline, "a gone from the page", || rows(&b).is_empty());
    b.wait_visible("#empty", deadline);
    assert!(!b.displayed(&b.find("#detail").expect("#detail")), "no detail for a removed torrent");
    assert!(rpc_torrents(rpc_port).is_empty(), "the RPC lists nothing");
    assert_same_tree(&a.path(), &out.join(&ta.name));

    drop(b);
    daemon.assert_running();
    eprintln!(
        "[web] passed in {:.1} s from the browser's start; screenshot kept at {}",
        started.elapsed().as_secs_f64(),
        shot.display()
    );
}

#[test]
fn behind_rpc_auth_the_page_is_refused_without_credentials_and_works_with_them() {
    let deadline = deadline_in(90);
    let dir = TempDir::new("daemon-web-auth");
    let out = dir.mkdir("out");
    let (daemon, rpc_port) = start_daemon(dir.path(), &out, &["--rpc-auth", "alice:s3cret"], deadline);
    let b = Browser::start(dir.path(), 900, 700, deadline);

    // No credentials: a 401, not the page.
    b.goto(&format!("http://127.0.0.1:{rpc_port}/"));
    assert!(b.find("#magnet").is_none(), "the page is not served without credentials");

    // With them (in the URL, as a user may bookmark it): the page and each of its RPC calls get through.
    b.goto(&format!("http://alice:s3cret@127.0.0.1:{rpc_port}/"));
    b.wait_visible("#empty", deadline);
    assert!(!b.displayed(&b.find("#err").expect("#err")), "no RPC error with credentials");
    // A magnet whose swarm is nowhere (no tracker, no DHT) is still added, listed, and removable.
    let hash = "0123456789abcdef0123456789abcdef01234567";
    b.send_keys(&b.find("#magnet").expect("#magnet"), &format!("magnet:?xt=urn:btih:{hash}&dn=lonely"));
    b.click(&b.find("#add-magnet").expect("#add-magnet"));
    let r = wait_for(deadline, "the magnet in the list", || row(&b, hash));
    assert_eq!(r.name, "lonely");
    assert_eq!(r.pct, "metadata…", "a magnet without metadata says so");
    assert_eq!(rpc_torrents_auth(rpc_port).len(), 1);
    let sel = format!(".torrent[data-hash=\"{hash}\"]");
    b.click(&b.find(&format!("{sel} .remove")).expect("remove button"));
    b.click(&b.wait_visible(&format!("{sel} .rm-delete"), deadline));
    b.wait_visible("#empty", deadline);
    assert!(rpc_torrents_auth(rpc_port).is_empty(), "removed through the page");

    // The daemon goes away: the page says so in its error line. It comes back (a new session id, so the next
    // call gets a 409 first): the page carries on by itself and the error line clears.
    daemon.signal(common::SIGTERM);
    assert!(daemon.wait_exit(deadline).success());
    let err = b.wait_visible("#err", deadline);
    assert!(!b.text(&err).is_empty());
    let auth = ["--rpc-auth", "alice:s3cret"];
    let again = start_daemon_on(dir.path(), "daemon-2", rpc_port, &out, &auth, deadline);
    wait_until(deadline, "the error line to clear once the daemon is back", || {
        !b.displayed(&b.find("#err").expect("#err"))
    });
    assert!(b.displayed(&b.find("#empty").expect("#empty")));
    drop(b);
    again.assert_running();
}

/// The daemon's torrents, asked with alice's credentials.
fn rpc_torrents_auth(port: u16) -> Vec<Json> {
    let auth = ("Authorization", "Basic YWxpY2U6czNjcmV0"); // alice:s3cret
    let body = br#"{"method":"torrent-get","arguments":{"fields":["hashString"]}}"#;
    let first = http::request(port, "POST", "/transmission/rpc", &[auth], body).expect("RPC request");
    let sid = first.header("X-Transmission-Session-Id").expect("409 carries the session id").to_string();
    let r = http::request(port, "POST", "/transmission/rpc", &[auth, ("X-Transmission-Session-Id", &sid)], body)
        .expect("RPC request");
    let j = json::parse(&r.text()).expect("RPC answers JSON");
    j.at(&["arguments", "torrents"]).and_then(Json::as_array).unwrap_or(&[]).to_vec()
}
