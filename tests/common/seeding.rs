//! rill as the one who gives (issue 4): `rill seed` and `rill download --seed` on a port of its own choosing, and a
//! python3-libtorrent leecher that can be tied to rill alone, with the per-peer counters to prove where its payload
//! came from.
//!
//! - [`RillPeer`]: rill started with `--port 0 --no-ui`; it prints `listening on port N` first, which is how the
//!   test learns the port. Stopped with SIGINT (Ctrl-C), after which it must exit 0.
//! - [`LtLeecher`]: `tests/peers/lt_peer.py` as a leecher, optionally with `--no-tracker` (it never announces, so
//!   nobody but its `--peer`s and whoever dials it can reach it). Every status file is one consistent snapshot:
//!   [`LtLeecher::snapshot`] reads the totals, the clock and the live per-peer records together. rill is
//!   recognised by its peer id (`-RL…`), whichever side dialled.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Instant;

use super::dht::{self, DhtStatus, LtDht};
use super::json::{self, Json};
use super::peers::{LtPeerLaunch, LtSource, Peer};
use super::torrent::Torrent;
use super::{free_port, lifetime_until, mkdir, port_open, rill_command, wait_for, wait_until, Proc};

pub const SIGINT: i32 = 2;

/// `-RL` in hex: the start of every peer id rill makes (`-RL0001-…`).
pub const RILL_PEER_ID_HEX_PREFIX: &str = "2d524c";

// ---------------------------------------------------------------------------------------------------------------
// rill

/// A running `rill seed` or `rill download` that listens on a port it picked (`--port 0`).
pub struct RillPeer {
    pub proc: Proc,
    pub port: u16,
}

impl RillPeer {
    /// `rill seed TORRENT -d DATA_DIR --no-ui --port 0 [extra…]`, as process `name`; waits until it listens (its
    /// data check may still be running: it prints `N of M pieces already here` when done).
    #[track_caller]
    pub fn seed(dir: &Path, name: &str, torrent: &Torrent, data_dir: &Path, extra: &[&str], deadline: Instant) -> Self {
        RillPeer::spawn(dir, name, "seed", torrent, data_dir, extra, deadline)
    }

    /// `rill download TORRENT -d OUT --no-ui --port 0 [extra…]` (add `--seed` to keep it running once complete).
    #[track_caller]
    pub fn download(dir: &Path, name: &str, torrent: &Torrent, out: &Path, extra: &[&str], deadline: Instant) -> Self {
        mkdir(out);
        RillPeer::spawn(dir, name, "download", torrent, out, extra, deadline)
    }

    #[track_caller]
    fn spawn(
        dir: &Path,
        name: &str,
        sub: &str,
        torrent: &Torrent,
        data_dir: &Path,
        extra: &[&str],
        deadline: Instant,
    ) -> Self {
        let proc = spawn_rill(dir, name, sub, &[torrent], data_dir, 0, extra, deadline);
        let port = wait_for(deadline, &format!("{name} to print `listening on port N`"), || {
            let port = listening_port(&proc.stdout());
            if port.is_none() {
                proc.assert_running();
            }
            port
        });
        assert_ne!(port, 0, "{name} printed port 0");
        RillPeer { proc, port }
    }

    /// `rill seed T1 T2 … -d DATA_DIR --no-ui --port P [extra…]`: several torrents in one process, on a free port
    /// picked here (so nothing depends on how a multi-torrent run words its output); waits until it accepts
    /// connections.
    #[track_caller]
    pub fn seed_many(
        dir: &Path,
        name: &str,
        torrents: &[&Torrent],
        data_dir: &Path,
        extra: &[&str],
        deadline: Instant,
    ) -> Self {
        let port = free_port();
        let proc = spawn_rill(dir, name, "seed", torrents, data_dir, port, extra, deadline);
        wait_until(deadline, &format!("{name} to accept connections on 127.0.0.1:{port}"), || {
            proc.assert_running();
            port_open(port)
        });
        RillPeer { proc, port }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Ctrl-C: SIGINT to rill itself, then waits for it to exit.
    #[track_caller]
    pub fn interrupt(&self, deadline: Instant) -> ExitStatus {
        self.proc.signal(SIGINT);
        self.proc.wait_exit(deadline)
    }
}

/// `rill SUB T1 [T2 …] -d DATA_DIR --no-ui --port PORT [extra…]` as process `name`, logging at debug level
/// (connection drops and their reasons are logged there, and are what a failure needs).
#[allow(clippy::too_many_arguments)]
#[track_caller]
fn spawn_rill(
    dir: &Path,
    name: &str,
    sub: &str,
    torrents: &[&Torrent],
    data_dir: &Path,
    port: u16,
    extra: &[&str],
    deadline: Instant,
) -> Proc {
    let mut cmd = rill_command();
    cmd.arg(sub).args(torrents.iter().map(|t| &t.path)).arg("-d").arg(data_dir);
    cmd.args(["--no-ui", "--port", &port.to_string()]).args(extra);
    cmd.env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info,rill=debug".into()));
    Proc::spawn(name, &cmd, &dir.join("logs"), lifetime_until(deadline))
}

/// The port from a `listening on port N` line.
pub fn listening_port(stdout: &str) -> Option<u16> {
    stdout.lines().find_map(|l| l.trim().strip_prefix("listening on port ")?.trim().parse().ok())
}

// ---------------------------------------------------------------------------------------------------------------
// A python3-libtorrent leecher with per-peer evidence

/// Options for [`LtLeecher::start`].
#[derive(Clone, Debug, Default)]
pub struct LtLeechOptions {
    /// `IP:PORT`s it dials (and redials).
    pub peers: Vec<String>,
    /// Never announce to the torrent's trackers (`--no-tracker`).
    pub no_tracker: bool,
    /// Bytes per second; 0 for unlimited.
    pub download_limit: u64,
    /// Its MSE/PE policy (`--encryption`).
    pub encryption: LtEncryption,
    /// The mainline DHT on (a private loopback DHT; off by default).
    pub dht: Option<LtDht>,
    /// uTP only, TCP off both ways (`--utp-only`; off by default: TCP only).
    pub utp: bool,
}

/// A libtorrent peer's encryption policy (`lt_peer.py --encryption`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LtEncryption {
    /// libtorrent's defaults: it opens with an MSE handshake and accepts plaintext ones.
    #[default]
    Default,
    /// Plain BitTorrent only, both ways: no MSE handshake at all.
    Disabled,
    /// Every connection must start with the MSE handshake (plaintext handshakes are dropped both ways); the
    /// plaintext crypto method stays allowed inside it, since rill's responder selects it.
    Forced,
    /// As `Forced`, with RC4 the only crypto method inside (`allowed_enc_level` = RC4, `prefer_rc4`): every
    /// connection it keeps is RC4-encrypted both ways.
    Rc4,
}

impl LtEncryption {
    pub fn arg(self) -> &'static str {
        match self {
            LtEncryption::Default => "default",
            LtEncryption::Disabled => "disabled",
            LtEncryption::Forced => "forced",
            LtEncryption::Rc4 => "rc4",
        }
    }
}

/// One remote peer in a leecher's snapshot.
#[derive(Clone, Debug)]
pub struct PeerStat {
    pub addr: String,
    pub client: String,
    pub peer_id_hex: String,
    /// Payload it sent us / we sent it over this connection.
    pub downloaded: u64,
    pub uploaded: u64,
    /// Pieces it has, as far as the leecher knows.
    pub num_pieces: u64,
    pub seed: bool,
    /// An MSE handshake selected RC4 on this connection (the stream is encrypted).
    pub rc4: bool,
    /// An MSE handshake selected plaintext on this connection.
    pub plaintext_encrypted: bool,
    /// The connection is over uTP (libtorrent's `utp_socket` flag), not TCP.
    pub utp: bool,
}

impl PeerStat {
    pub fn is_rill(&self) -> bool {
        self.peer_id_hex.starts_with(RILL_PEER_ID_HEX_PREFIX)
    }
}

/// One status file: everything in it was taken at the same moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Seconds since the script started (its monotonic clock).
    pub elapsed: f64,
    /// Payload downloaded in total.
    pub downloaded: u64,
    pub complete: bool,
    /// Whether it has the info dictionary (always, when started from a .torrent).
    pub has_metadata: bool,
    /// Started from a magnet link: seconds from adding the torrent to receiving its metadata, once it has.
    pub metadata_at: Option<f64>,
    /// The connections open at that moment.
    pub peers: Vec<PeerStat>,
    /// Every peer ever connected, with its highest totals (keyed by ip:port), as far as the status writes caught it.
    pub seen: Vec<PeerStat>,
    /// (ip:port, peer id hex) of every connection that got past the handshake, including those that came and went
    /// between two status writes.
    pub peer_ids: Vec<(String, String)>,
}

impl Snapshot {
    /// One `lt_peer.py` status file (a leecher's or a seeder's).
    pub fn parse(s: &Json) -> Snapshot {
        let peer = |addr: String, v: &Json| {
            let n = |f| v.get(f).and_then(Json::as_u64).unwrap_or(0);
            let text = |f| v.get(f).and_then(Json::as_str).unwrap_or("").to_string();
            PeerStat {
                addr,
                client: text("client"),
                peer_id_hex: text("peer_id"),
                downloaded: n("total_download"),
                uploaded: n("total_upload"),
                num_pieces: n("num_pieces"),
                seed: v.get("seed").and_then(Json::as_bool).unwrap_or(false),
                rc4: v.get("rc4").and_then(Json::as_bool).unwrap_or(false),
                plaintext_encrypted: v.get("plaintext_encrypted").and_then(Json::as_bool).unwrap_or(false),
                utp: v.get("utp").and_then(Json::as_bool).unwrap_or(false),
            }
        };
        let peers = s
            .get("peers")
            .and_then(Json::as_array)
            .unwrap_or(&[])
            .iter()
            .map(|v| {
                let ip = v.get("ip").and_then(Json::as_str).unwrap_or("?");
                let port = v.get("port").and_then(Json::as_u64).unwrap_or(0);
                peer(format!("{ip}:{port}"), v)
            })
            .collect();
        let seen = s
            .get("peers_seen")
            .and_then(Json::as_object)
            .unwrap_or(&[])
            .iter()
            .map(|(k, v)| peer(k.clone(), v))
            .collect();
        let peer_ids = s
            .get("peer_ids")
            .and_then(Json::as_object)
            .unwrap_or(&[])
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
            .collect();
        Snapshot {
            peer_ids,
            elapsed: s.get("elapsed").and_then(Json::as_f64).unwrap_or(0.0),
            downloaded: s.get("total_payload_download").and_then(Json::as_u64).unwrap_or(0),
            complete: s.get("is_seeding").and_then(Json::as_bool) == Some(true),
            has_metadata: s.get("has_metadata").and_then(Json::as_bool) == Some(true),
            metadata_at: s.get("metadata_at").and_then(Json::as_f64),
            peers,
            seen,
        }
    }

    /// Payload received from rill, over every connection with it ever seen.
    pub fn received_from_rill(&self) -> u64 {
        self.seen.iter().filter(|p| p.is_rill()).map(|p| p.downloaded).sum()
    }

    /// Whether every peer it ever exchanged handshakes with was rill (and there was one), and no one else ever sent
    /// it payload. Then all of `downloaded` came from rill. (The per-peer totals lag behind `downloaded`: a connection
    /// closed at completion leaves the peer records before its last bytes are counted there.)
    pub fn had_only_rill(&self) -> bool {
        let is_rill = |id: &String| id.starts_with(RILL_PEER_ID_HEX_PREFIX);
        !self.peer_ids.is_empty()
            && self.peer_ids.iter().all(|(_, id)| is_rill(id))
            && self.seen.iter().all(|p| p.is_rill() || p.downloaded == 0)
    }

    /// A short account of every peer ever seen, for messages.
    pub fn describe(&self) -> String {
        let mut s =
            format!("at {:.1} s: {} B downloaded, complete {}; peers:", self.elapsed, self.downloaded, self.complete);
        for p in &self.seen {
            s.push_str(&format!(
                " [{} {:?} id {} down {} up {}{}{}{}]",
                p.addr,
                p.client,
                p.peer_id_hex.get(..16).unwrap_or(&p.peer_id_hex),
                p.downloaded,
                p.uploaded,
                if p.is_rill() { " (rill)" } else { "" },
                if p.rc4 {
                    " RC4"
                } else if p.plaintext_encrypted {
                    " MSE-plaintext"
                } else {
                    ""
                },
                if p.utp { " uTP" } else { "" }
            ));
        }
        let ids: Vec<String> =
            self.peer_ids.iter().map(|(a, id)| format!("{a}={}", id.get(..16).unwrap_or(id))).collect();
        s.push_str(&format!("; handshakes: {}", ids.join(" ")));
        s
    }
}

/// `tests/peers/lt_peer.py` as a leecher into `save_dir`.
pub struct LtLeecher {
    name: String,
    proc: Proc,
    pub port: u16,
    status_path: PathBuf,
}

impl LtLeecher {
    #[track_caller]
    pub fn start(
        dir: &Path,
        name: &str,
        torrent: &Torrent,
        save_dir: &Path,
        opts: &LtLeechOptions,
        deadline: Instant,
    ) -> LtLeecher {
        LtLeecher::start_from(dir, name, LtSource::Torrent(torrent), save_dir, opts, deadline)
    }

    /// As [`LtLeecher::start`], from a .torrent or a magnet link.
    #[track_caller]
    pub fn start_from(
        dir: &Path,
        name: &str,
        source: LtSource,
        save_dir: &Path,
        opts: &LtLeechOptions,
        deadline: Instant,
    ) -> LtLeecher {
        let LtPeerLaunch { mut cmd, port, status_path, lifetime } =
            LtPeerLaunch::from_source(dir, name, source, save_dir, deadline);
        cmd.arg("--download-limit").arg(opts.download_limit.to_string());
        cmd.arg("--encryption").arg(opts.encryption.arg());
        if opts.no_tracker {
            cmd.arg("--no-tracker");
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
        LtLeecher { name: name.to_string(), proc, port, status_path }
    }

    /// The last status the script wrote, if any.
    pub fn snapshot(&self) -> Option<Snapshot> {
        let text = fs::read_to_string(&self.status_path).ok()?;
        json::parse(&text).ok().map(|j| Snapshot::parse(&j))
    }

    /// What its last status says about the DHT (all defaults without `--dht`).
    pub fn dht(&self) -> DhtStatus {
        dht::read_status(&self.status_path).map(|s| DhtStatus::parse(&s)).unwrap_or_default()
    }

    /// The first snapshot that satisfies `f`, checking that the leecher and every one of `others` keeps running.
    #[track_caller]
    pub fn wait_snapshot(
        &self,
        others: &[&Proc],
        deadline: Instant,
        what: &str,
        mut f: impl FnMut(&Snapshot) -> bool,
    ) -> Snapshot {
        let mut last = None;
        let started = Instant::now();
        loop {
            if let Some(s) = self.snapshot() {
                if f(&s) {
                    return s;
                }
                last = Some(s);
            }
            self.proc.assert_running();
            for p in others {
                p.assert_running();
            }
            if Instant::now() >= deadline {
                let seen = last.map(|s| s.describe()).unwrap_or_else(|| "no status yet".into());
                panic!(
                    "timed out after {:.1} s waiting for {} to see {what}; its last status {seen}",
                    started.elapsed().as_secs_f64(),
                    self.name
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    #[track_caller]
    pub fn wait_complete(&self, others: &[&Proc], deadline: Instant) -> Snapshot {
        self.wait_snapshot(others, deadline, "its download complete", |s| s.complete)
    }
}

impl Peer for LtLeecher {
    fn name(&self) -> &str {
        &self.name
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn uploaded_bytes(&self) -> u64 {
        self.snapshot().map(|s| s.seen.iter().map(|p| p.uploaded).sum()).unwrap_or(0)
    }
    fn downloaded_bytes(&self) -> u64 {
        self.snapshot().map(|s| s.downloaded).unwrap_or(0)
    }
    fn proc(&self) -> &Proc {
        &self.proc
    }
}
