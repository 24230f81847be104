//! Running a download to completion: rill (the binary under test), or — to validate the rig itself — a real
//! leecher in its place (aria2c, python3-libtorrent), so that when a rill test fails, only rill can be the problem.

use std::path::Path;
use std::time::{Duration, Instant};

use super::peers::{wait_with_peers, Aria2, LibtorrentPeer, LtOptions, Peer};
use super::torrent::Torrent;
use super::{describe, free_port, lifetime_until, rill_command, Proc};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leecher {
    Rill,
    Aria2,
    Libtorrent,
}

/// Starts `rill download TORRENT -d OUT --no-ui --port FREE [--peer P]… [extra…]` as process `rill` (logs in
/// `dir/logs/rill.{out,err}`).
pub fn spawn_rill_download(
    dir: &Path,
    torrent: &Torrent,
    out: &Path,
    peers: &[String],
    extra: &[&str],
    deadline: Instant,
) -> Proc {
    spawn_rill_download_many(dir, &[torrent], out, peers, extra, deadline)
}

/// `rill download T1 T2 … -d OUT --no-ui --port FREE [--peer P]… [extra…]`: several torrents in one process.
pub fn spawn_rill_download_many(
    dir: &Path,
    torrents: &[&Torrent],
    out: &Path,
    peers: &[String],
    extra: &[&str],
    deadline: Instant,
) -> Proc {
    let mut cmd = rill_command();
    cmd.arg("download").args(torrents.iter().map(|t| &t.path)).arg("-d").arg(out).arg("--no-ui");
    cmd.arg("--port").arg(free_port().to_string());
    for p in peers {
        cmd.arg("--peer").arg(p);
    }
    cmd.args(extra).env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
    Proc::spawn("rill", &cmd, &dir.join("logs"), lifetime_until(deadline))
}

/// Downloads `torrent` into `out` with `who`, from the tracker's peers plus `direct` peers (where the leecher
/// supports that), while checking that every one of `seeders` stays up. Panics (dumping every log) unless the
/// leecher finishes successfully before `deadline`. Returns the wall time of the download.
#[track_caller]
pub fn download(
    who: Leecher,
    dir: &Path,
    torrent: &Torrent,
    out: &Path,
    direct: &[String],
    seeders: &[&dyn Peer],
    deadline: Instant,
) -> Duration {
    std::fs::create_dir_all(out).unwrap_or_else(|e| panic!("create {}: {e}", out.display()));
    let started = Instant::now();
    match who {
        Leecher::Rill => {
            let rill = spawn_rill_download(dir, torrent, out, direct, &[], deadline);
            let status = wait_with_peers(seeders, deadline, "rill download to exit", || rill.exited());
            let elapsed = started.elapsed();
            if !status.success() {
                panic!("rill download failed: {}", describe(status));
            }
            elapsed
        }
        Leecher::Aria2 => {
            let a = Aria2::leech(dir, "aria2c-leecher", torrent, out, deadline);
            let status = wait_with_peers(seeders, deadline, "aria2c leecher to exit", || a.proc().exited());
            assert!(status.success(), "aria2c leecher failed: {}", describe(status));
            started.elapsed()
        }
        Leecher::Libtorrent => {
            let opts = LtOptions { peers: direct.to_vec(), exit_when_done: true, ..LtOptions::default() };
            let p = LibtorrentPeer::start(dir, "libtorrent-leecher", torrent, out, &opts, deadline);
            wait_with_peers(seeders, deadline, "libtorrent leecher to complete", || {
                if p.is_complete() {
                    return Some(());
                }
                p.proc().assert_running();
                None
            });
            let elapsed = started.elapsed();
            p.proc().wait_exit(Instant::now() + Duration::from_secs(10));
            elapsed
        }
    }
}
