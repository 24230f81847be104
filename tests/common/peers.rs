//! Real BitTorrent clients as loopback peers: transmission-daemon, python3-libtorrent (`tests/peers/lt_peer.py`),
//! aria2c and qbittorrent-nox. Each binds 127.0.0.1 only, with DHT, local peer discovery, UPnP/NAT-PMP and PEX off,
//! lives in its own directory under the test's temp dir, and reports its own payload counters through its RPC (or
//! status file), so a test can assert that every seeder really sent data.
//!
//! Seeders only serve peers that are interested and that they unchoke; Transmission 3.00 never dials 127.x peers a
//! tracker hands it (it only accepts incoming connections), aria2c speaks only HTTP trackers without DHT.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::dht::{DhtStatus, LtDht};
use super::json::{self, quote, Json};
use super::seeding::{LtEncryption, Snapshot};
use super::torrent::Torrent;
use super::{
    free_port, http, lifetime_until, mkdir, peer_script, require_python_libtorrent, require_tool, wait_for,
    wait_port_open, wait_until, Proc, PYTHON,
};

/// What every peer in the rig can tell about itself.
pub trait Peer {
    fn name(&self) -> &str;
    /// Its peer-wire listen port on 127.0.0.1.
    fn port(&self) -> u16;
    /// Payload bytes it uploaded, from its own counters.
    fn uploaded_bytes(&self) -> u64;
    /// Payload bytes it downloaded, from its own counters.
    fn downloaded_bytes(&self) -> u64;
    fn proc(&self) -> &Proc;

    /// `127.0.0.1:PORT`, e.g. for `rill download --peer`.
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }
}

fn parse_json(what: &str, body: &[u8]) -> Json {
    let text = String::from_utf8_lossy(body);
    json::parse(&text).unwrap_or_else(|e| panic!("{what}: bad JSON ({e}): {text}"))
}

// ---------------------------------------------------------------------------------------------------------------
// transmission-daemon

/// transmission-daemon (3.00) with its own config dir, RPC on a loopback port, peers on another.
///
/// RPC: the first call answers 409 with an `X-Transmission-Session-Id` header to send back. `speed-limit-up` is in
/// kB/s (1000 bytes). A torrent added with existing data is verified before it seeds.
pub struct TransmissionDaemon {
    name: String,
    proc: Proc,
    pub rpc_port: u16,
    pub peer_port: u16,
    session_id: RefCell<String>,
    torrent_id: RefCell<Option<i64>>,
}

impl TransmissionDaemon {
    /// Starts a daemon under `dir/NAME`; `up_limit_kb` in kB/s (1000 bytes/s), `None` for unlimited.
    #[track_caller]
    pub fn start(dir: &Path, name: &str, up_limit_kb: Option<u32>, deadline: Instant) -> TransmissionDaemon {
        require_tool("transmission-daemon", "transmission-daemon");
        let home = mkdir(&dir.join(name));
        let config = mkdir(&home.join("config"));
        let downloads = mkdir(&home.join("downloads"));
        let (rpc_port, peer_port) = (free_port(), free_port());
        let settings = format!(
            r#"{{
    "alt-speed-enabled": false,
    "alt-speed-time-enabled": false,
    "bind-address-ipv4": "127.0.0.1",
    "bind-address-ipv6": "::1",
    "blocklist-enabled": false,
    "cache-size-mb": 4,
    "dht-enabled": false,
    "download-dir": {downloads},
    "download-queue-enabled": false,
    "encryption": 0,
    "idle-seeding-limit-enabled": false,
    "incomplete-dir-enabled": false,
    "lpd-enabled": false,
    "message-level": 2,
    "peer-limit-global": 200,
    "peer-limit-per-torrent": 100,
    "peer-port": {peer_port},
    "peer-port-random-on-start": false,
    "pex-enabled": false,
    "port-forwarding-enabled": false,
    "queue-stalled-enabled": false,
    "ratio-limit-enabled": false,
    "rpc-authentication-required": false,
    "rpc-bind-address": "127.0.0.1",
    "rpc-enabled": true,
    "rpc-host-whitelist-enabled": false,
    "rpc-port": {rpc_port},
    "rpc-whitelist": "127.0.0.1,::1",
    "rpc-whitelist-enabled": true,
    "scrape-paused-torrents-enabled": false,
    "seed-queue-enabled": false,
    "speed-limit-down-enabled": false,
    "speed-limit-up": {up},
    "speed-limit-up-enabled": {up_on},
    "start-added-torrents": true,
    "trash-original-torrent-files": false,
    "utp-enabled": false,
    "watch-dir-enabled": false
}}
"#,
            downloads = quote(&downloads.to_string_lossy()),
            up = up_limit_kb.unwrap_or(0),
            up_on = up_limit_kb.is_some(),
        );
        fs::write(config.join("settings.json"), settings).expect("write settings.json");
        let mut cmd = Command::new("transmission-daemon");
        cmd.arg("--foreground").arg("--config-dir").arg(&config).arg("--log-info");
        let proc = Proc::spawn(name, &cmd, &dir.join("logs"), lifetime_until(deadline));
        wait_port_open(rpc_port, deadline, &format!("{name} RPC"));
        TransmissionDaemon {
            name: name.to_string(),
            proc,
            rpc_port,
            peer_port,
            session_id: RefCell::new(String::new()),
            torrent_id: RefCell::new(None),
        }
    }

    /// Starts a daemon seeding `torrent` from `data_dir` (which holds `data_dir/<name>`), and waits until it has
    /// verified the data and is seeding.
    #[track_caller]
    pub fn seed(
        dir: &Path,
        name: &str,
        torrent: &Torrent,
        data_dir: &Path,
        up_limit_kb: Option<u32>,
        deadline: Instant,
    ) -> TransmissionDaemon {
        let t = TransmissionDaemon::start(dir, name, up_limit_kb, deadline);
        t.add_torrent(torrent, data_dir);
        t.wait_seeding(deadline);
        t
    }

    /// One RPC call; handles the 409 session-id exchange. Returns the whole answer.
    #[track_caller]
    pub fn rpc(&self, method: &str, arguments: &str) -> Json {
        let body = format!(r#"{{"method":{},"arguments":{arguments}}}"#, quote(method));
        for _ in 0..3 {
            let sid = self.session_id.borrow().clone();
            let r = http::request(
                self.rpc_port,
                "POST",
                "/transmission/rpc",
                &[("X-Transmission-Session-Id", &sid), ("Content-Type", "application/json")],
                body.as_bytes(),
            )
            .unwrap_or_else(|e| panic!("{} RPC {method}: {e}", self.name));
            if r.status == 409 {
                let id = r.header("X-Transmission-Session-Id").expect("409 without session id").to_string();
                *self.session_id.borrow_mut() = id;
                continue;
            }
            assert_eq!(r.status, 200, "{} RPC {method}: HTTP {}: {}", self.name, r.status, r.text());
            let j = parse_json(&format!("{} RPC {method}", self.name), &r.body);
            let result = j.get("result").and_then(Json::as_str).unwrap_or("");
            assert_eq!(result, "success", "{} RPC {method} failed: {}", self.name, r.text());
            return j;
        }
        panic!("{} RPC {method}: session id exchange did not settle", self.name);
    }

    /// Adds a torrent file whose data is (or will be) in `download_dir/<name>`.
    #[track_caller]
    pub fn add_torrent(&self, torrent: &Torrent, download_dir: &Path) {
        let args = format!(
            r#"{{"filename":{},"download-dir":{},"paused":false}}"#,
            quote(&torrent.path.to_string_lossy()),
            quote(&download_dir.to_string_lossy())
        );
        let j = self.rpc("torrent-add", &args);
        let added = j
            .at(&["arguments", "torrent-added"])
            .or_else(|| j.at(&["arguments", "torrent-duplicate"]))
            .unwrap_or_else(|| panic!("{}: torrent-add answered {j:?}", self.name));
        let id = added.get("id").and_then(Json::as_f64).expect("torrent id") as i64;
        *self.torrent_id.borrow_mut() = Some(id);
    }

    /// The torrent's fields from `torrent-get`.
    #[track_caller]
    pub fn torrent(&self) -> Json {
        let id = self.torrent_id.borrow().expect("no torrent added");
        let args = format!(
            r#"{{"ids":[{id}],"fields":["id","status","percentDone","recheckProgress","leftUntilDone","uploadedEver",
            "downloadedEver","error","errorString","peersConnected","haveValid","sizeWhenDone"]}}"#
        );
        let j = self.rpc("torrent-get", &args);
        j.at(&["arguments", "torrents"]).and_then(Json::as_array).and_then(|a| a.first()).cloned().expect("torrent")
    }

    /// Waits until the data is verified and the torrent is seeding (status 6, nothing left).
    #[track_caller]
    pub fn wait_seeding(&self, deadline: Instant) {
        wait_until(deadline, &format!("{} to verify its data and seed", self.name), || {
            self.proc.assert_running();
            let t = self.torrent();
            let err = t.get("error").and_then(Json::as_u64).unwrap_or(0);
            assert_eq!(err, 0, "{}: torrent error: {:?}", self.name, t.get("errorString"));
            let status = t.get("status").and_then(Json::as_u64);
            let left = t.get("leftUntilDone").and_then(Json::as_u64);
            status == Some(6) && left == Some(0)
        });
    }
}

impl Peer for TransmissionDaemon {
    fn name(&self) -> &str {
        &self.name
    }
    fn port(&self) -> u16 {
        self.peer_port
    }
    fn uploaded_bytes(&self) -> u64 {
        self.torrent().get("uploadedEver").and_then(Json::as_u64).unwrap_or(0)
    }
    fn downloaded_bytes(&self) -> u64 {
        self.torrent().get("downloadedEver").and_then(Json::as_u64).unwrap_or(0)
    }
    fn proc(&self) -> &Proc {
        &self.proc
    }
}

// ---------------------------------------------------------------------------------------------------------------
// python3-libtorrent

/// `python3 -u tests/peers/lt_peer.py`, ready to run as peer `name` under `dir/NAME`; the caller adds its role's
/// options and spawns `cmd` with `lifetime`.
pub struct LtPeerLaunch {
    pub cmd: Command,
    /// Its peer-wire listen port on 127.0.0.1.
    pub port: u16,
    /// The JSON status file the script rewrites every 0.2 s.
    pub status_path: PathBuf,
    pub lifetime: Duration,
}

/// What a libtorrent peer starts from: a .torrent file, or only a magnet link (`--magnet`: it fetches the metadata
/// over ut_metadata first).
#[derive(Clone, Copy, Debug)]
pub enum LtSource<'a> {
    Torrent(&'a Torrent),
    Magnet(&'a str),
}

impl LtPeerLaunch {
    /// The script for `torrent`, saving into `save_dir` (created), on a free port, living until `deadline` (and a
    /// margin).
    #[track_caller]
    pub fn new(dir: &Path, name: &str, torrent: &Torrent, save_dir: &Path, deadline: Instant) -> LtPeerLaunch {
        LtPeerLaunch::from_source(dir, name, LtSource::Torrent(torrent), save_dir, deadline)
    }

    /// As [`LtPeerLaunch::new`], from a .torrent or a magnet link.
    #[track_caller]
    pub fn from_source(dir: &Path, name: &str, source: LtSource, save_dir: &Path, deadline: Instant) -> LtPeerLaunch {
        require_python_libtorrent();
        let home = mkdir(&dir.join(name));
        mkdir(save_dir);
        let port = free_port();
        let status_path = home.join("status.json");
        let lifetime = lifetime_until(deadline);
        let mut cmd = Command::new(PYTHON);
        cmd.arg("-u").arg(peer_script("lt_peer.py"));
        match source {
            LtSource::Torrent(t) => cmd.arg("--torrent").arg(&t.path),
            LtSource::Magnet(link) => cmd.arg("--magnet").arg(link),
        };
        cmd.arg("--save")
            .arg(save_dir)
            .arg("--port")
            .arg(port.to_string())
            .arg("--status")
            .arg(&status_path)
            .arg("--max-life")
            .arg(lifetime.as_secs().to_string());
        LtPeerLaunch { cmd, port, status_path, lifetime }
    }
}

/// Options for [`LibtorrentPeer::start`].
#[derive(Clone, Debug, Default)]
pub struct LtOptions {
    /// The data is complete in the save dir: check it, then seed.
    pub seed: bool,
    /// Bytes per second; 0 for unlimited. Applies to loopback peers too.
    pub upload_limit: u64,
    pub download_limit: u64,
    /// `IP:PORT`s to connect to directly (besides the tracker's peers).
    pub peers: Vec<String>,
    /// Leave once the download is complete.
    pub exit_when_done: bool,
    /// Peer exchange (ut_pex) on: it tells its peers about each other and dials peers it is told about.
    pub pex: bool,
    /// Never announce: its only peers are `peers` (and whoever dials it).
    pub no_tracker: bool,
    /// The mainline DHT on (a private loopback DHT; off by default).
    pub dht: Option<LtDht>,
    /// Its MSE/PE policy (`--encryption`).
    pub encryption: LtEncryption,
    /// Listen on `[::1]:port` (and dial from ::1) instead of 127.0.0.1: an IPv6 peer (BEP 7).
    pub bind6: bool,
    /// uTP only, TCP off both ways (`--utp-only`; off by default: TCP only).
    pub utp: bool,
}

/// A python3-libtorrent session (`tests/peers/lt_peer.py`), seeder or leecher. Its state comes from the JSON
/// status file the script rewrites every 0.2 s.
pub struct LibtorrentPeer {
    name: String,
    proc: Proc,
    pub port: u16,
    status_path: PathBuf,
}

impl LibtorrentPeer {
    /// Starts the peer; `save_dir` holds (or will hold) `save_dir/<name>`.
    #[track_caller]
    pub fn start(
        dir: &Path,
        name: &str,
        torrent: &Torrent,
        save_dir: &Path,
        opts: &LtOptions,
        deadline: Instant,
    ) -> LibtorrentPeer {
        let LtPeerLaunch { mut cmd, port, status_path, lifetime } =
            LtPeerLaunch::new(dir, name, torrent, save_dir, deadline);
        cmd.arg("--upload-limit")
            .arg(opts.upload_limit.to_string())
            .arg("--download-limit")
            .arg(opts.download_limit.to_string())
            .arg("--encryption")
            .arg(opts.encryption.arg());
        if opts.seed {
            cmd.arg("--seed");
        }
        if opts.exit_when_done {
            cmd.arg("--exit-when-done");
        }
        if opts.pex {
            cmd.arg("--pex");
        }
        if opts.no_tracker {
            cmd.arg("--no-tracker");
        }
        if opts.bind6 {
            cmd.arg("--bind6");
        }
        if opts.utp {
            cmd.arg("--utp-only");
        }
        for p in &opts.peers {
            cmd.arg("--peer").arg(p);
        }
        if let Some(dht) = &opts.dht {
            dht.add_args(&mut cmd);
        }
        let proc = Proc::spawn(name, &cmd, &dir.join("logs"), lifetime);
        LibtorrentPeer { name: name.to_string(), proc, port, status_path }
    }

    /// A seeder of `torrent` from `data_dir`, waiting until it has checked the data and seeds.
    #[track_caller]
    pub fn seed(
        dir: &Path,
        name: &str,
        torrent: &Torrent,
        data_dir: &Path,
        upload_limit: u64,
        deadline: Instant,
    ) -> LibtorrentPeer {
        let opts = LtOptions { seed: true, upload_limit, ..LtOptions::default() };
        let p = LibtorrentPeer::start(dir, name, torrent, data_dir, &opts, deadline);
        p.wait_seeding(deadline);
        p
    }

    /// The last status the script wrote, if any.
    pub fn status(&self) -> Option<Json> {
        let text = fs::read_to_string(&self.status_path).ok()?;
        json::parse(&text).ok()
    }

    /// What its last status says about the DHT (all defaults without `--dht`).
    pub fn dht(&self) -> DhtStatus {
        self.status().map(|s| DhtStatus::parse(&s)).unwrap_or_default()
    }

    /// Its last status as a snapshot: totals and every peer it has seen, with their totals and encryption.
    pub fn snapshot(&self) -> Option<Snapshot> {
        self.status().map(|s| Snapshot::parse(&s))
    }

    fn num(&self, key: &str) -> u64 {
        self.status().and_then(|s| s.get(key).and_then(Json::as_u64)).unwrap_or(0)
    }

    #[track_caller]
    pub fn wait_seeding(&self, deadline: Instant) {
        wait_until(deadline, &format!("{} to check its data and seed", self.name), || {
            self.proc.assert_running();
            let Some(s) = self.status() else { return false };
            let err = s.get("error").and_then(Json::as_str).unwrap_or("");
            assert!(err.is_empty(), "{}: torrent error: {err}", self.name);
            s.get("is_seeding").and_then(Json::as_bool) == Some(true)
        });
    }

    /// Whether it has every piece (its last status says it seeds).
    pub fn is_complete(&self) -> bool {
        self.status().and_then(|s| s.get("is_seeding").and_then(Json::as_bool)) == Some(true)
    }

    /// Waits until the download is complete (the script may exit right after with `exit_when_done`).
    #[track_caller]
    pub fn wait_complete(&self, deadline: Instant) {
        wait_until(deadline, &format!("{} to complete its download", self.name), || {
            let done = self.is_complete();
            if !done {
                self.proc.assert_running();
            }
            done
        });
    }

    /// Every peer it ever had a connection with: (ip:port, client, payload uploaded to it, downloaded from it).
    pub fn peers_seen(&self) -> Vec<(String, String, u64, u64)> {
        let Some(s) = self.status() else {
            return Vec::new();
        };
        let Some(seen) = s.get("peers_seen").and_then(Json::as_object) else {
            return Vec::new();
        };
        seen.iter()
            .map(|(k, v)| {
                let n = |f| v.get(f).and_then(Json::as_u64).unwrap_or(0);
                let client = v.get("client").and_then(Json::as_str).unwrap_or("").to_string();
                (k.clone(), client, n("total_upload"), n("total_download"))
            })
            .collect()
    }
}

impl Peer for LibtorrentPeer {
    fn name(&self) -> &str {
        &self.name
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn uploaded_bytes(&self) -> u64 {
        self.num("total_payload_upload")
    }
    fn downloaded_bytes(&self) -> u64 {
        self.num("total_payload_download")
    }
    fn proc(&self) -> &Proc {
        &self.proc
    }
}

// ---------------------------------------------------------------------------------------------------------------
// aria2c

/// aria2c with JSON-RPC on a loopback port. It finds peers through HTTP trackers only (no DHT, LPD or PEX here),
/// binds 127.0.0.1 (`--interface`), and stops by itself when this test process exits (`--stop-with-process`).
pub struct Aria2 {
    name: String,
    proc: Proc,
    pub port: u16,
    pub rpc_port: u16,
    /// Its working directory, where its log (`aria2.log`) is.
    home: PathBuf,
}

impl Aria2 {
    /// With `rpc`, JSON-RPC is served (and aria2c then keeps running after its downloads end).
    fn start(
        dir: &Path,
        name: &str,
        torrent: &Torrent,
        data_dir: &Path,
        rpc: bool,
        extra: &[String],
        deadline: Instant,
    ) -> Aria2 {
        require_tool("aria2c", "aria2");
        let home = mkdir(&dir.join(name));
        mkdir(data_dir);
        let (port, rpc_port) = (free_port(), if rpc { free_port() } else { 0 });
        let mut cmd = Command::new("aria2c");
        cmd.current_dir(&home)
            .arg("--no-conf=true")
            .arg(format!("--dir={}", data_dir.display()))
            .arg(format!("--listen-port={port}"))
            .arg("--interface=127.0.0.1")
            .arg("--disable-ipv6=true")
            .arg("--enable-dht=false")
            .arg("--enable-dht6=false")
            .arg("--bt-enable-lpd=false")
            .arg("--enable-peer-exchange=false")
            .arg(format!("--enable-rpc={rpc}"))
            .arg("--rpc-listen-all=false")
            .arg(format!("--rpc-listen-port={}", if rpc { rpc_port } else { 6800 }))
            .arg(format!("--stop-with-process={}", std::process::id()))
            .arg("--file-allocation=none")
            .arg("--allow-overwrite=false")
            .arg("--auto-file-renaming=false")
            .arg("--bt-save-metadata=false")
            .arg("--follow-torrent=false")
            .arg("--summary-interval=0")
            .arg("--show-console-readout=false")
            .arg("--console-log-level=notice")
            .arg("--log=aria2.log")
            .arg("--log-level=info")
            .args(extra)
            .arg(&torrent.path);
        let proc = Proc::spawn(name, &cmd, &dir.join("logs"), lifetime_until(deadline));
        if rpc {
            wait_port_open(rpc_port, deadline, &format!("{name} RPC"));
        }
        Aria2 { name: name.to_string(), proc, port, rpc_port, home }
    }

    /// Seeds `torrent` from `data_dir` (`-V --seed-ratio=0.0`: check the data, then seed for ever);
    /// `up_limit` in bytes per second. Waits until the check is done and it seeds.
    #[track_caller]
    pub fn seed(
        dir: &Path,
        name: &str,
        torrent: &Torrent,
        data_dir: &Path,
        up_limit: Option<u64>,
        deadline: Instant,
    ) -> Aria2 {
        let mut extra = vec!["--check-integrity=true".to_string(), "--seed-ratio=0.0".to_string()];
        if let Some(l) = up_limit {
            extra.push(format!("--max-overall-upload-limit={l}"));
        }
        let a = Aria2::start(dir, name, torrent, data_dir, true, &extra, deadline);
        a.wait_seeding(deadline);
        a
    }

    /// Downloads `torrent` into `out_dir` (peers from the tracker) and exits when done (`--seed-time=0`). No RPC
    /// (it would keep aria2c running): its counters are not available, only its exit status and its log.
    #[track_caller]
    pub fn leech(dir: &Path, name: &str, torrent: &Torrent, out_dir: &Path, deadline: Instant) -> Aria2 {
        Aria2::leech_with(dir, name, torrent, out_dir, &[], deadline)
    }

    /// As [`Aria2::leech`], with more aria2c options (e.g. `--bt-require-crypto=true`).
    #[track_caller]
    pub fn leech_with(
        dir: &Path,
        name: &str,
        torrent: &Torrent,
        out_dir: &Path,
        options: &[&str],
        deadline: Instant,
    ) -> Aria2 {
        let mut extra = vec!["--seed-time=0".to_string()];
        extra.extend(options.iter().map(|o| o.to_string()));
        Aria2::start(dir, name, torrent, out_dir, false, &extra, deadline)
    }

    /// aria2c's own log (`--log`, at info level), for what it says about the connections.
    pub fn log(&self) -> String {
        fs::read_to_string(self.home.join("aria2.log")).unwrap_or_default()
    }

    /// One JSON-RPC call; returns its `result`, or `None` when aria2 does not answer (e.g. it has exited).
    pub fn rpc(&self, method: &str, params: &str) -> Option<Json> {
        if self.rpc_port == 0 {
            return None;
        }
        let body = format!(r#"{{"jsonrpc":"2.0","id":"rig","method":{},"params":{params}}}"#, quote(method));
        let r =
            http::request(self.rpc_port, "POST", "/jsonrpc", &[("Content-Type", "application/json")], body.as_bytes())
                .ok()?;
        let j = parse_json(&format!("{} RPC {method}", self.name), &r.body);
        if let Some(e) = j.get("error") {
            panic!("{} RPC {method}: {e:?}", self.name);
        }
        j.get("result").cloned()
    }

    /// The (only) download's status from `aria2.tellActive`.
    pub fn download(&self) -> Option<Json> {
        let keys = r#"[["gid","status","seeder","totalLength","completedLength","uploadLength","verifiedLength",
                    "verifyIntegrityPending","connections","errorMessage"]]"#;
        self.rpc("aria2.tellActive", keys).and_then(|r| r.as_array().and_then(|a| a.first().cloned()))
    }

    #[track_caller]
    pub fn wait_seeding(&self, deadline: Instant) {
        wait_until(deadline, &format!("{} to check its data and seed", self.name), || {
            self.proc.assert_running();
            let Some(d) = self.download() else {
                return false;
            };
            let n = |k| d.get(k).and_then(Json::as_u64);
            d.get("seeder").and_then(Json::as_bool) == Some(true)
                && d.get("verifyIntegrityPending").is_none()
                && d.get("verifiedLength").is_none()
                && n("completedLength") == n("totalLength")
        });
    }
}

impl Peer for Aria2 {
    fn name(&self) -> &str {
        &self.name
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn uploaded_bytes(&self) -> u64 {
        self.download().and_then(|d| d.get("uploadLength").and_then(Json::as_u64)).unwrap_or(0)
    }
    fn downloaded_bytes(&self) -> u64 {
        self.download().and_then(|d| d.get("completedLength").and_then(Json::as_u64)).unwrap_or(0)
    }
    fn proc(&self) -> &Proc {
        &self.proc
    }
}

// ---------------------------------------------------------------------------------------------------------------
// qbittorrent-nox

/// qbittorrent-nox (4.5) with its own `--profile` dir: legal notice accepted in the config (or it waits on a
/// prompt), Web UI on a loopback port without login from localhost, DHT/LSD/PeX off, several connections per IP,
/// bound to `lo`, rate limits applied to LAN peers. Torrents are added over the Web API (multipart).
pub struct Qbittorrent {
    name: String,
    proc: Proc,
    pub port: u16,
    pub webui_port: u16,
    hash: RefCell<String>,
}

impl Qbittorrent {
    #[track_caller]
    pub fn start(dir: &Path, name: &str, deadline: Instant) -> Qbittorrent {
        require_tool("qbittorrent-nox", "qbittorrent-nox");
        let home = mkdir(&dir.join(name));
        let config = mkdir(&home.join("qBittorrent/config"));
        let downloads = mkdir(&home.join("downloads"));
        let (port, webui_port) = (free_port(), free_port());
        let conf = format!(
            "[LegalNotice]\n\
             Accepted=true\n\
             \n\
             [BitTorrent]\n\
             Session\\AddTrackersEnabled=false\n\
             Session\\AnonymousModeEnabled=false\n\
             Session\\BTProtocol=TCP\n\
             Session\\DHTEnabled=false\n\
             Session\\DefaultSavePath={downloads}\n\
             Session\\Encryption=0\n\
             Session\\GlobalMaxRatio=-1\n\
             Session\\IgnoreLimitsOnLAN=false\n\
             Session\\Interface=lo\n\
             Session\\InterfaceAddress=127.0.0.1\n\
             Session\\InterfaceName=lo\n\
             Session\\LSDEnabled=false\n\
             Session\\MultiConnectionsPerIp=true\n\
             Session\\PeXEnabled=false\n\
             Session\\Port={port}\n\
             Session\\QueueingSystemEnabled=false\n\
             Session\\TempPathEnabled=false\n\
             \n\
             [Network]\n\
             PortForwardingEnabled=false\n\
             \n\
             [Preferences]\n\
             Connection\\ResolvePeerCountries=false\n\
             Connection\\UPnP=false\n\
             General\\Locale=en\n\
             WebUI\\Address=127.0.0.1\n\
             WebUI\\CSRFProtection=false\n\
             WebUI\\Enabled=true\n\
             WebUI\\HostHeaderValidation=false\n\
             WebUI\\LocalHostAuth=false\n\
             WebUI\\Port={webui_port}\n\
             WebUI\\UseUPnP=false\n",
            downloads = downloads.display(),
        );
        fs::write(config.join("qBittorrent.conf"), conf).expect("write qBittorrent.conf");
        let mut cmd = Command::new("qbittorrent-nox");
        cmd.arg(format!("--profile={}", home.display())).arg(format!("--webui-port={webui_port}"));
        cmd.env("HOME", &home).env("QT_QPA_PLATFORM", "offscreen");
        let proc = Proc::spawn(name, &cmd, &dir.join("logs"), lifetime_until(deadline));
        wait_port_open(webui_port, deadline, &format!("{name} Web UI"));
        Qbittorrent { name: name.to_string(), proc, port, webui_port, hash: RefCell::new(String::new()) }
    }

    /// Starts qbittorrent-nox seeding `torrent` from `data_dir` (`up_limit` in bytes per second) and waits until it
    /// has checked the data and seeds.
    #[track_caller]
    pub fn seed(
        dir: &Path,
        name: &str,
        torrent: &Torrent,
        data_dir: &Path,
        up_limit: Option<u64>,
        deadline: Instant,
    ) -> Qbittorrent {
        let q = Qbittorrent::start(dir, name, deadline);
        q.add_torrent(torrent, data_dir, up_limit);
        q.wait_seeding(deadline);
        q
    }

    #[track_caller]
    pub fn add_torrent(&self, torrent: &Torrent, save_dir: &Path, up_limit: Option<u64>) {
        let save = save_dir.to_string_lossy().into_owned();
        let limit = up_limit.unwrap_or(0).to_string();
        let fields = [
            ("savepath", save.as_str()),
            ("paused", "false"),
            ("skip_checking", "false"),
            ("contentLayout", "Original"),
            ("autoTMM", "false"),
            ("upLimit", limit.as_str()),
        ];
        let (ctype, body) = http::multipart(&fields, &[("torrents", "t.torrent", &torrent.bytes)]);
        let r = http::request(self.webui_port, "POST", "/api/v2/torrents/add", &[("Content-Type", &ctype)], &body)
            .unwrap_or_else(|e| panic!("{}: torrents/add: {e}", self.name));
        assert!(
            r.status == 200 && r.text().trim() == "Ok.",
            "{}: torrents/add: HTTP {}: {}",
            self.name,
            r.status,
            r.text()
        );
        *self.hash.borrow_mut() = torrent.hex_hash();
    }

    /// The torrent's entry from `/api/v2/torrents/info`, found by `infohash_v1` (for a hybrid torrent
    /// qBittorrent's `hash` is the truncated v2 hash).
    pub fn torrent(&self) -> Option<Json> {
        let r = http::get(self.webui_port, "/api/v2/torrents/info").ok()?;
        if r.status != 200 {
            return None;
        }
        let list = parse_json(&format!("{} torrents/info", self.name), &r.body);
        let want = self.hash.borrow();
        list.as_array()?.iter().find(|t| t.get("infohash_v1").and_then(Json::as_str) == Some(want.as_str())).cloned()
    }

    #[track_caller]
    pub fn wait_seeding(&self, deadline: Instant) {
        wait_until(deadline, &format!("{} to check its data and seed", self.name), || {
            self.proc.assert_running();
            let Some(t) = self.torrent() else {
                return false;
            };
            let state = t.get("state").and_then(Json::as_str).unwrap_or("");
            assert!(!matches!(state, "error" | "missingFiles"), "{}: torrent state {state}: {t:?}", self.name);
            matches!(state, "uploading" | "stalledUP" | "forcedUP" | "queuedUP")
                && t.get("progress").and_then(Json::as_f64) == Some(1.0)
        });
    }
}

impl Peer for Qbittorrent {
    fn name(&self) -> &str {
        &self.name
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn uploaded_bytes(&self) -> u64 {
        self.torrent().and_then(|t| t.get("uploaded").and_then(Json::as_u64)).unwrap_or(0)
    }
    fn downloaded_bytes(&self) -> u64 {
        self.torrent().and_then(|t| t.get("downloaded").and_then(Json::as_u64)).unwrap_or(0)
    }
    fn proc(&self) -> &Proc {
        &self.proc
    }
}

/// A one-line account of what each peer sent and received, for failure messages and test logs.
pub fn describe_peers(peers: &[&dyn Peer]) -> String {
    let mut s = String::new();
    for p in peers {
        let _ = write!(
            s,
            "{} (port {}): up {} B, down {} B; ",
            p.name(),
            p.port(),
            p.uploaded_bytes(),
            p.downloaded_bytes()
        );
    }
    s
}

/// Waits until `wanted` (typically: a leecher's counters) holds, checking that every `peer` is still running.
#[track_caller]
pub fn wait_with_peers<T>(peers: &[&dyn Peer], deadline: Instant, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    wait_for(deadline, what, || {
        for p in peers {
            p.proc().assert_running();
        }
        f()
    })
}
