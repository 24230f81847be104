//! Debian's opentracker on loopback.
//!
//! Debian builds it with an info-hash whitelist (`-w FILE`, read relative to its chroot dir `-d DIR`, reloaded on
//! SIGHUP): a hash that is not listed gets "Requested download is not authorized". It refuses to run as root without
//! `-u nobody`. It serves HTTP on `-p` and UDP on `-P`; we give both the same free port.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::bencode::{self, Value};
use super::torrent::Torrent;
use super::{free_port, http, lifetime_until, require_tool, running_as_root, wait_for, wait_port_open, Proc, SIGHUP};

pub struct Opentracker {
    pub port: u16,
    dir: PathBuf,
    proc: Proc,
}

/// `http://127.0.0.1:PORT/announce`.
pub fn announce_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/announce")
}

impl Opentracker {
    /// Picks a port for a tracker to be started later with [`Opentracker::start`], so that torrents can carry its
    /// announce URL before their info-hash is whitelisted.
    pub fn reserve_port() -> u16 {
        free_port()
    }

    /// Starts opentracker on 127.0.0.1:`port` (TCP and UDP) with `info_hashes` whitelisted, under `dir/opentracker`,
    /// and waits until it answers and accepts announces for them.
    #[track_caller]
    pub fn start(dir: &Path, port: u16, info_hashes: &[[u8; 20]], deadline: Instant) -> Opentracker {
        require_tool("opentracker", "opentracker");
        let root = dir.join("opentracker");
        fs::create_dir_all(&root).unwrap_or_else(|e| panic!("create {}: {e}", root.display()));
        write_whitelist(&root, info_hashes);
        let mut cmd = Command::new("opentracker");
        let p = port.to_string();
        cmd.args(["-i", "127.0.0.1", "-p", &p, "-P", &p]).arg("-d").arg(&root).args(["-w", "whitelist"]);
        if running_as_root() {
            cmd.args(["-u", "nobody"]);
        }
        let proc = Proc::spawn("opentracker", &cmd, &dir.join("logs"), lifetime_until(deadline));
        wait_port_open(port, deadline, "opentracker");
        let t = Opentracker { port, dir: root, proc };
        for ih in info_hashes {
            t.wait_authorized(ih, deadline);
        }
        t
    }

    /// A torrent made by `make` (given the announce URL) for a tracker on a fresh port, and that tracker, started
    /// under `dir` with the torrent's info-hash whitelisted: the usual first step of a loopback swarm.
    #[track_caller]
    pub fn with_torrent(dir: &Path, deadline: Instant, make: impl FnOnce(&str) -> Torrent) -> (Torrent, Opentracker) {
        let port = Opentracker::reserve_port();
        let torrent = make(&announce_url(port));
        let tracker = Opentracker::start(dir, port, &[torrent.info_hash], deadline);
        (torrent, tracker)
    }

    pub fn announce_url(&self) -> String {
        announce_url(self.port)
    }

    pub fn proc(&self) -> &Proc {
        &self.proc
    }

    /// Replaces the whitelist and makes opentracker reload it (SIGHUP); waits until the new hashes are accepted.
    #[track_caller]
    pub fn whitelist(&self, info_hashes: &[[u8; 20]], deadline: Instant) {
        write_whitelist(&self.dir, info_hashes);
        self.proc.signal(SIGHUP);
        for ih in info_hashes {
            self.wait_authorized(ih, deadline);
        }
    }

    /// Probes with a start/stop announce pair from a made-up peer (port 1, nothing listens there) until the tracker
    /// accepts the hash. The stop removes the made-up peer again.
    #[track_caller]
    fn wait_authorized(&self, ih: &[u8; 20], deadline: Instant) {
        let hex = bencode::hex(ih);
        wait_for(deadline, &format!("opentracker to accept info-hash {hex}"), || {
            self.proc.assert_running();
            let started = self.announce(ih, "started").ok()?;
            let _ = self.announce(ih, "stopped");
            match started.get("failure reason") {
                None => Some(()),
                Some(_) => None,
            }
        });
    }

    fn announce(&self, ih: &[u8; 20], event: &str) -> Result<Value, String> {
        let path = format!(
            "/announce?info_hash={}&peer_id=-RIGPRB-000000000000&port=1&uploaded=0&downloaded=0&left=1&compact=1\
             &numwant=0&event={event}",
            bencode::percent_encode(ih)
        );
        let r = http::get(self.port, &path).map_err(|e| e.to_string())?;
        bencode::decode(&r.body)
    }

    /// `(complete, incomplete)` from an HTTP scrape, or `None` when the tracker does not know the hash (yet).
    pub fn scrape(&self, ih: &[u8; 20]) -> Option<(u64, u64)> {
        let r = http::get(self.port, &format!("/scrape?info_hash={}", bencode::percent_encode(ih))).ok()?;
        let v = bencode::decode(&r.body).ok()?;
        let Some(Value::Dict(files)) = v.get("files") else {
            return None;
        };
        let (_, stats) = files.iter().find(|(k, _)| k.as_slice() == ih)?;
        let n = |k| stats.get(k).and_then(Value::as_int).unwrap_or(0) as u64;
        Some((n("complete"), n("incomplete")))
    }

    /// Waits until at least `n` seeders have announced `ih`.
    #[track_caller]
    pub fn wait_seeders(&self, ih: &[u8; 20], n: u64, deadline: Instant) {
        wait_for(deadline, &format!("{n} seeder(s) to announce to opentracker"), || {
            self.proc.assert_running();
            self.scrape(ih).filter(|(complete, _)| *complete >= n)
        });
    }
}

fn write_whitelist(root: &Path, info_hashes: &[[u8; 20]]) {
    let text: String = info_hashes.iter().map(|h| format!("{}\n", bencode::hex(h))).collect();
    let path = root.join("whitelist");
    let tmp = root.join("whitelist.tmp");
    fs::write(&tmp, text).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    fs::rename(&tmp, &path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}
