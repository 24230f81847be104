//! A slow disk for the tests: `tests/peers/slowfs.py`, a passthrough FUSE filesystem (python3-fusepy) mounted
//! over an empty directory of the test, backed by another, whose writes stall by 200 ms now and then.
//!
//! [`SlowFs::mount`] checks what mounting needs (`/dev/fuse`, `fusermount`, fusepy for the Debian python) and
//! fails loudly, naming the fix, when something is missing: a test that needs a slow disk never passes without
//! one. The filesystem runs in the foreground as a [`Proc`] of the test; [`SlowFs::unmount`] (and dropping it,
//! even while the test is failing) sends it SIGTERM, waits a bounded time for libfuse to unmount, and falls back
//! to `fusermount -u -z`, so no mount outlives the test.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::json::{self, Json};
use super::{deadline_in, lifetime_until, mkdir, peer_script, require_tool, signal, wait_until, Proc, PYTHON, SIGTERM};

/// How the filesystem stalls writes (`slowfs.py` options).
#[derive(Clone, Copy, Debug)]
pub struct Stalls {
    /// How long a stalled write waits.
    pub delay: Duration,
    /// Writes that arrive during the first `window` of every `period` (counted from the mount) stall...
    pub period: Duration,
    pub window: Duration,
    /// ... or, when non-zero, every `every`th write instead.
    pub every: u32,
}

impl Stalls {
    /// Every write in the first 850 ms of every 1.7 s waits 200 ms: a card that stalls half of the time. Not
    /// "the first half of every second": that period locks in step with a 1 s timer (one delayed tick lands
    /// the next ones just after each stall, so a loop blocked on the disk still shows samples 1.01 s apart),
    /// while with 1.7 s a tick that a stall delays to its end puts the next one inside the next stall.
    pub const HALF_THE_TIME: Stalls = Stalls {
        delay: Duration::from_millis(200),
        period: Duration::from_millis(1700),
        window: Duration::from_millis(850),
        every: 0,
    };
}

/// `/proc/self/mountinfo` escapes blanks, tabs, newlines and backslashes in paths as `\ooo`.
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The filesystem type mounted at `path` (`fuse.slowfs` for ours), if anything is mounted there: what `mount`
/// lists, read from `/proc/self/mountinfo`.
pub fn mounted_at(path: &Path) -> Option<String> {
    let table = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.to_string_lossy();
    table.lines().rev().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mount_point = left.split(' ').nth(4)?;
        (unescape_mount_path(mount_point) == want).then(|| right.split(' ').next().unwrap_or("").to_string())
    })
}

/// A mounted `slowfs.py`.
pub struct SlowFs {
    proc: Proc,
    mount: PathBuf,
    backing: PathBuf,
    status_path: PathBuf,
    log_dir: PathBuf,
}

impl SlowFs {
    /// Mounts `slowfs.py` over `dir/NAME` (created empty), backed by `dir/NAME-backing`, and waits until the
    /// kernel lists the mount. Panics with the reason (and the script's log) when mounting is not possible here.
    #[track_caller]
    pub fn mount(dir: &Path, name: &str, stalls: Stalls, deadline: Instant) -> SlowFs {
        assert!(
            Path::new("/dev/fuse").exists(),
            "/dev/fuse is missing: the slow-disk test needs FUSE (load the `fuse` kernel module; in a container, \
             give it `--device /dev/fuse --cap-add SYS_ADMIN`). It fails rather than skips: a skipped test is no \
             evidence."
        );
        require_tool("fusermount", "fuse");
        require_tool(PYTHON, "python3");
        let fusepy = Command::new(PYTHON)
            .args(["-c", "import fusepy"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            fusepy,
            "{PYTHON} cannot import fusepy (Debian package python3-fusepy, which brings libfuse2). Run \
             `scripts/test`: it installs every tool the integration tests need."
        );
        let mount = mkdir(&dir.join(name));
        let backing = mkdir(&dir.join(format!("{name}-backing")));
        let status_path = dir.join(format!("{name}-status.json"));
        let log_dir = dir.join("logs");
        let lifetime = lifetime_until(deadline);
        let mut cmd = Command::new(PYTHON);
        cmd.arg("-u")
            .arg(peer_script("slowfs.py"))
            .arg("--backing")
            .arg(&backing)
            .arg("--mount")
            .arg(&mount)
            .arg("--status")
            .arg(&status_path)
            .arg("--delay-ms")
            .arg(stalls.delay.as_millis().to_string())
            .arg("--period-ms")
            .arg(stalls.period.as_millis().to_string())
            .arg("--window-ms")
            .arg(stalls.window.as_millis().to_string())
            .arg("--every")
            .arg(stalls.every.to_string())
            .arg("--max-life")
            .arg(lifetime.as_secs().to_string());
        let proc = Proc::spawn(name, &cmd, &log_dir, lifetime);
        let fs = SlowFs { proc, mount, backing, status_path, log_dir };
        wait_until(deadline.min(deadline_in(15)), &format!("{name} to be mounted at {}", fs.mount.display()), || {
            if let Some(status) = fs.proc.exited() {
                panic!(
                    "slowfs.py could not mount {} ({}): is mounting FUSE allowed here (root or a setuid \
                     fusermount, CAP_SYS_ADMIN in a container)? Its stderr:\n{}",
                    fs.mount.display(),
                    super::describe(status),
                    fs.proc.stderr()
                );
            }
            mounted_at(&fs.mount).is_some_and(|t| t == "fuse.slowfs")
                && fs.status().and_then(|s| s.get("mounted").and_then(Json::as_bool)) == Some(true)
        });
        fs
    }

    /// The mounted directory: what the program under test writes to.
    pub fn mount_point(&self) -> &Path {
        &self.mount
    }

    /// The real directory behind it.
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    pub fn proc(&self) -> &Proc {
        &self.proc
    }

    /// The script's last status: counts of writes, stalled writes, reads, fsyncs, errors by operation.
    pub fn status(&self) -> Option<Json> {
        json::parse(&fs::read_to_string(&self.status_path).ok()?).ok()
    }

    /// The last status as the script wrote it, for a report.
    pub fn status_text(&self) -> String {
        fs::read_to_string(&self.status_path).unwrap_or_default().trim().to_string()
    }

    /// A number from the last status (0 when missing).
    pub fn count(&self, key: &str) -> u64 {
        self.status().and_then(|s| s.get(key).and_then(Json::as_u64)).unwrap_or(0)
    }

    /// Whether the kernel still lists the mount.
    pub fn is_mounted(&self) -> bool {
        mounted_at(&self.mount).is_some()
    }

    /// Unmounts, within a few seconds, whatever the state: SIGTERM to the script (libfuse leaves its loop and
    /// unmounts lazily, so open files do not keep the mount), then `fusermount -u -z` and `umount -l` if the
    /// mount is still listed. Returns what it took, in words, for the test's report. Never panics (it runs in
    /// `Drop`, maybe while the test is failing).
    pub fn unmount(&self) -> String {
        let mut steps = Vec::new();
        if self.proc.exited().is_none() {
            if let Some(pid) = self.proc.program_pid() {
                signal(pid, SIGTERM);
                steps.push("SIGTERM");
            }
        }
        let until = Instant::now() + Duration::from_secs(5);
        while (self.proc.exited().is_none() || self.is_mounted()) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        for (tool, args) in [("fusermount", ["-u", "-z"]), ("umount", ["-l", "--"])] {
            if !self.is_mounted() {
                break;
            }
            steps.push(tool);
            // Bounded like everything else: `timeout 5 TOOL ARGS MOUNT`.
            let _ = Command::new("timeout")
                .arg("5")
                .arg(tool)
                .args(args)
                .arg(&self.mount)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        self.proc.kill();
        let outcome = if self.is_mounted() { "STILL MOUNTED" } else { "unmounted" };
        format!("{outcome} after {}", if steps.is_empty() { "nothing".into() } else { steps.join(", ") })
    }

    /// The directory of the script's log files.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }
}

impl Drop for SlowFs {
    fn drop(&mut self) {
        if self.is_mounted() || self.proc.exited().is_none() {
            let how = self.unmount();
            eprintln!("[rig] {}: {how}", self.mount.display());
        }
    }
}
