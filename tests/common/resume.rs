//! The rig for issue 6 (resume, stops, bans, file selection, disk errors): several `rill download` runs of the
//! same command in one test (each with its own log files), reading what rill prints (progress lines, the restore
//! line, `stopped:`, `wasted:`, the one-line error), the resume file beside the data, the seeders' own upload
//! counters summed over both runs, a hostile peer (`tests/peers/hostile_peer.py`) that sends garbage, and a full
//! disk made from a small tmpfs in a private mount namespace (`unshare --mount`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::bencode::{self, Value};
use super::json::{self, Json};
use super::peers::Peer;
use super::torrent::Torrent;
use super::{
    free_port, lifetime_until, mkdir, peer_script, require_tool, rill_command, wait_for, wait_port_open, Proc, PYTHON,
};

pub const SIGINT: i32 = 2;

/// `RUST_LOG` for rill: `rill=info` (the tests read its `banned` lines), then the caller's `RUST_LOG`, whose
/// directives win (e.g. `RUST_LOG=rill=debug` for a peer's whole lifecycle).
pub fn rill_log_filter() -> String {
    match std::env::var("RUST_LOG") {
        Ok(caller) if !caller.trim().is_empty() => format!("rill=info,{caller}"),
        _ => "rill=info".into(),
    }
}

/// `rill download TORRENT -d OUT --no-ui --port PORT [--peer P]… [extra…]` as process `name` (logs in
/// `dir/logs/NAME.{out,err}`), so that two runs of the same command keep separate logs.
pub fn rill_download_command(torrent: &Torrent, out: &Path, port: u16, peers: &[String], extra: &[&str]) -> Command {
    let mut cmd = rill_command();
    cmd.arg("download").arg(&torrent.path).arg("-d").arg(out).arg("--no-ui");
    cmd.arg("--port").arg(port.to_string());
    for p in peers {
        cmd.arg("--peer").arg(p);
    }
    cmd.args(extra).env("RUST_LOG", rill_log_filter());
    cmd
}

pub fn spawn_rill(dir: &Path, name: &str, cmd: &Command, deadline: Instant) -> Proc {
    Proc::spawn(name, cmd, &dir.join("logs"), lifetime_until(deadline))
}

// ---------------------------------------------------------------------------------------------------------------
// What rill prints

/// The percentage of the last plain progress line (`" 40.0%  4.0 MiB / 10.0 MiB  down …"`, maybe prefixed by a
/// `[state]`).
pub fn last_progress_percent(stdout: &str) -> Option<f64> {
    stdout.lines().rev().find_map(|l| l.split_whitespace().find_map(|w| w.strip_suffix('%')?.parse::<f64>().ok()))
}

/// rill's start-up line `N of M pieces already here (T from the resume file, C checked)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlreadyHere {
    pub have: u64,
    pub total: u64,
    pub trusted: u64,
    pub checked: u64,
}

pub fn already_here(stdout: &str) -> Option<AlreadyHere> {
    let line = stdout.lines().find(|l| l.contains("pieces already here"))?;
    let nums: Vec<u64> =
        line.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).filter_map(|s| s.parse().ok()).collect();
    match nums[..] {
        [have, total, trusted, checked] => Some(AlreadyHere { have, total, trusted, checked }),
        _ => None,
    }
}

/// rill's closing line after a stop: `stopped: X of Y verified`.
pub fn stopped_line(stdout: &str) -> Option<&str> {
    stdout.lines().find(|l| l.starts_with("stopped:"))
}

/// rill's `wasted: X (N bytes), K pieces failed verification` line: `(N, K)`.
pub fn wasted(stdout: &str) -> Option<(u64, u64)> {
    let line = stdout.lines().find(|l| l.starts_with("wasted:"))?;
    let bytes = line.split_once('(')?.1.split_once(" bytes")?.0.trim().parse().ok()?;
    let failed = line.rsplit_once(", ")?.1.split_whitespace().next()?.parse().ok()?;
    Some((bytes, failed))
}

/// The lines of rill's stderr that are not env_logger records (`[… LEVEL target] …`): its own error lines.
pub fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| !l.starts_with('[') && !l.trim().is_empty()).collect()
}

// ---------------------------------------------------------------------------------------------------------------
// The resume file

/// `OUT/.rill-<info-hash in hex>.resume`.
pub fn resume_path(out: &Path, torrent: &Torrent) -> PathBuf {
    out.join(format!(".rill-{}.resume", torrent.hex_hash()))
}

/// How many pieces the resume file records as verified, if it exists and is bencode with a `pieces` bitfield.
pub fn resume_pieces(path: &Path) -> Option<u32> {
    let bytes = std::fs::read(path).ok()?;
    let v = bencode::decode(&bytes).ok()?;
    let pieces = v.get("pieces").and_then(Value::as_bytes)?;
    Some(pieces.iter().map(|b| b.count_ones()).sum())
}

// ---------------------------------------------------------------------------------------------------------------
// Seeders' counters

/// The payload the seeders say they uploaded, summed.
pub fn total_uploaded(seeders: &[&dyn Peer]) -> u64 {
    seeders.iter().map(|s| s.uploaded_bytes()).sum()
}

/// Waits until the seeders' summed upload counters reach `at_least` and then stay unchanged for a second (some
/// clients report with a lag); returns the settled sum.
#[track_caller]
pub fn settled_upload(seeders: &[&dyn Peer], at_least: u64, deadline: Instant) -> u64 {
    let mut last = (u64::MAX, Instant::now());
    wait_for(deadline, &format!("the seeders' upload counters to reach {at_least} bytes and settle"), || {
        let now = total_uploaded(seeders);
        if now != last.0 {
            last = (now, Instant::now());
            return None;
        }
        (now >= at_least && last.1.elapsed() >= Duration::from_secs(1)).then_some(now)
    })
}

// ---------------------------------------------------------------------------------------------------------------
// The hostile peer

/// `tests/peers/hostile_peer.py`: claims every piece, unchokes, answers each request with garbage, and records
/// every connection (who closed it and when) in a JSON status file.
pub struct HostilePeer {
    proc: Proc,
    pub port: u16,
    status_path: PathBuf,
}

/// One connection as the hostile peer saw it.
#[derive(Clone, Debug)]
pub struct HostileConnection {
    pub peer: String,
    pub accepted_at: f64,
    pub handshake: bool,
    pub blocks_sent: u64,
    pub closed_at: Option<f64>,
    pub closed_by: Option<String>,
}

impl HostilePeer {
    #[track_caller]
    pub fn start(dir: &Path, name: &str, torrent: &Torrent, deadline: Instant) -> HostilePeer {
        require_tool(PYTHON, "python3");
        let home = mkdir(&dir.join(name));
        let port = free_port();
        let status_path = home.join("status.json");
        let lifetime = lifetime_until(deadline);
        let mut cmd = Command::new(PYTHON);
        cmd.arg("-u")
            .arg(peer_script("hostile_peer.py"))
            .arg("--torrent")
            .arg(&torrent.path)
            .arg("--port")
            .arg(port.to_string())
            .arg("--status")
            .arg(&status_path)
            .arg("--max-life")
            .arg(lifetime.as_secs().to_string());
        let proc = Proc::spawn(name, &cmd, &dir.join("logs"), lifetime);
        wait_port_open(port, deadline, name);
        HostilePeer { proc, port, status_path }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn proc(&self) -> &Proc {
        &self.proc
    }

    pub fn status(&self) -> Option<Json> {
        json::parse(&std::fs::read_to_string(&self.status_path).ok()?).ok()
    }

    pub fn connections(&self) -> Vec<HostileConnection> {
        let Some(s) = self.status() else { return Vec::new() };
        let Some(list) = s.get("connections").and_then(Json::as_array) else { return Vec::new() };
        list.iter()
            .map(|c| HostileConnection {
                peer: c.get("peer").and_then(Json::as_str).unwrap_or("").to_string(),
                accepted_at: c.get("accepted_at").and_then(Json::as_f64).unwrap_or(0.0),
                handshake: c.get("handshake").and_then(Json::as_bool) == Some(true),
                blocks_sent: c.get("blocks_sent").and_then(Json::as_u64).unwrap_or(0),
                closed_at: c.get("closed_at").and_then(Json::as_f64),
                closed_by: c.get("closed_by").and_then(Json::as_str).map(str::to_string),
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// A full disk

/// How to get a private mount namespace here: `unshare --mount` (root), else `unshare --user --map-root-user
/// --mount` (an unprivileged user namespace). `None` when neither may mount a tmpfs (probed on `probe_dir`).
pub fn private_mount_namespace(probe_dir: &Path) -> Option<Vec<&'static str>> {
    require_tool("unshare", "util-linux");
    let candidates: [&[&'static str]; 2] = [&["--mount"], &["--user", "--map-root-user", "--mount"]];
    candidates.into_iter().map(<[&str]>::to_vec).find(|args| {
        Command::new("unshare")
            .args(args)
            .arg("sh")
            .arg("-c")
            .arg(r#"mount -t tmpfs -o size=64k tmpfs "$0""#)
            .arg(probe_dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    })
}

/// `unshare NS_ARGS sh -c 'mount -t tmpfs -o size=SIZE tmpfs MOUNTPOINT && exec "$@"' MOUNTPOINT PROGRAM ARGS…`:
/// `cmd` runs with a tmpfs of `size` (e.g. `"2m"`) over `mountpoint`, visible only in its private mount namespace
/// (unshare makes the namespace's mounts private, so nothing leaks to the host, and the tmpfs goes away with the
/// process). `unshare` and `sh` exec, so the program keeps the PID the rig started.
pub fn in_private_tmpfs(ns_args: &[&str], cmd: &Command, mountpoint: &Path, size: &str) -> Command {
    let mut wrapped = Command::new("unshare");
    wrapped
        .args(ns_args)
        .arg("sh")
        .arg("-c")
        .arg(format!(r#"mount -t tmpfs -o size={size} tmpfs "$0" && exec "$@""#))
        .arg(mountpoint)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    wrapped
}
