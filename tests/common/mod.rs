//! The rig for rill's integration tests: real BitTorrent software on loopback only.
//!
//! Vocabulary, so that a test reads as a scenario:
//! - [`TempDir`]: a per-test directory under `std::env::temp_dir()`, removed on success, kept on failure.
//! - [`free_port`], [`port_open`], [`wait_port_open`]: no fixed ports anywhere; tests run as parallel threads.
//! - [`deadline_in`], [`wait_until`], [`wait_for`]: every wait is on a condition with a deadline, never a fixed sleep.
//! - [`Proc`]: a child process in its own process group, wrapped in coreutils `timeout` (a hard lifetime even if
//!   this test binary dies), stdout/stderr to log files, killed by PID (group) on drop, its log tail printed when
//!   the test is failing.
//! - [`content`]: deterministic pseudo-random files and trees, and a byte-for-byte tree comparison.
//! - [`torrent`]: torrents made by real tools (`transmission-create`, python3-libtorrent).
//! - [`tracker::Opentracker`]: Debian's opentracker with an info-hash whitelist.
//! - [`peers`]: real seeders and leechers (transmission-daemon, python3-libtorrent, aria2c, qbittorrent-nox).
//! - [`dht`]: a private mainline DHT of python3-libtorrent nodes on loopback, and a KRPC flooder.
//! - [`slowfs`]: a slow disk, a passthrough FUSE filesystem whose writes stall now and then, always unmounted.
//!
//! A missing tool is a loud failure saying to run `scripts/test` (which installs everything), never a skip.
#![allow(dead_code)]

pub mod bencode;
pub mod content;
pub mod dht;
pub mod http;
pub mod json;
pub mod leecher;
pub mod listeners;
pub mod peers;
pub mod resume;
pub mod rill_checks;
pub mod seeding;
pub mod slowfs;
pub mod torrent;
pub mod tracker;
pub mod webdriver;

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The Debian interpreter: python3-libtorrent is installed for it, not for a pyenv or venv `python3` on PATH.
pub const PYTHON: &str = "/usr/bin/python3";

/// The binary under test, built by cargo for this integration test.
pub fn rill_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rill"))
}

/// A command running the binary under test. It never reaches outside the machine: the built-in DHT
/// routers are forbidden (`RILL_FORBID_DHT_ROUTERS`: without `--dht-bootstrap` the DHT starts from no one
/// and keeps no state file unless `--state-dir` is given).
pub fn rill_command() -> Command {
    let mut cmd = Command::new(rill_bin());
    cmd.env("RILL_FORBID_DHT_ROUTERS", "1");
    cmd
}

/// `tests/peers/NAME`: the python helper scripts.
pub fn peer_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers").join(name)
}

mod sys {
    extern "C" {
        pub fn kill(pid: i32, sig: i32) -> i32;
        pub fn geteuid() -> u32;
    }
}
pub const SIGHUP: i32 = 1;
pub const SIGKILL: i32 = 9;
pub const SIGTERM: i32 = 15;

/// Sends `sig` to one process.
pub fn signal(pid: u32, sig: i32) -> bool {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { sys::kill(pid as i32, sig) == 0 }
}

/// Sends `sig` to a whole process group.
pub fn signal_group(pgid: u32, sig: i32) -> bool {
    // SAFETY: as above; a negative pid names the process group.
    unsafe { sys::kill(-(pgid as i32), sig) == 0 }
}

pub fn running_as_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { sys::geteuid() == 0 }
}

/// Panics, naming the tool and the fix, when `program` is not on PATH.
pub fn require_tool(program: &str, package: &str) {
    let found = if program.contains('/') {
        Path::new(program).exists()
    } else {
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file())).unwrap_or(false)
    };
    assert!(
        found,
        "`{program}` is not installed (Debian package {package}). Run `scripts/test`: it installs every tool the \
         integration tests need."
    );
}

/// Panics unless the Debian python3 can import libtorrent.
pub fn require_python_libtorrent() {
    require_tool(PYTHON, "python3");
    let ok = Command::new(PYTHON)
        .args(["-c", "import libtorrent"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{PYTHON} cannot import libtorrent (Debian package python3-libtorrent). Run `scripts/test`: it installs \
         every tool the integration tests need."
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Temporary directories

/// `p`, created as a directory (with its parents).
pub fn mkdir(p: &Path) -> PathBuf {
    fs::create_dir_all(p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
    p.to_path_buf()
}

/// A fresh directory for one test. Removed on drop, unless the thread is panicking (or `RILL_TEST_KEEP` is set):
/// then it is kept and its path printed, so the logs and data can be inspected.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let path = std::env::temp_dir().join(format!("rill-test-{label}-{}-{n}-{nanos:09}", std::process::id()));
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self/rel`, creating nothing.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }

    /// `self/rel`, created as a directory.
    pub fn mkdir(&self, rel: impl AsRef<Path>) -> PathBuf {
        let p = self.path.join(rel);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("[rig] test failed: kept {} for inspection", self.path.display());
        } else if std::env::var_os("RILL_TEST_KEEP").is_some() {
            eprintln!("[rig] RILL_TEST_KEEP: kept {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Ports

/// A loopback port that is free for both TCP and UDP right now, and never handed out twice by this process (tests
/// run as parallel threads). It is bound by whoever uses it later (often another process), so it is drawn from
/// below the kernel's ephemeral range: a port from `:0` could meanwhile become the local port of some test's
/// outgoing connection (every client here connects a lot), and the listener would fail with "address in use".
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = if ephemeral_low > 12_000 { (10_000, ephemeral_low) } else { (49_152, 65_535) };
    // Test processes run side by side: each draws from its own pseudo-random sequence.
    let mut x = u64::from(std::process::id()) << 32
        | u64::from(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos()));
    for _ in 0..10_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = low + (x % u64::from(high - low)) as u16;
        let tcp_free = TcpListener::bind(("127.0.0.1", port)).is_ok();
        if tcp_free
            && UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner()).insert(port)
            && claim_across_processes(port)
        {
            return port;
        }
    }
    panic!("no free loopback port found");
}

/// Test binaries run side by side, and a port is often handed out seconds before its user binds it (a tracker
/// started after its torrents are made): another process could pick the same still-unbound port meanwhile.
/// opentracker binds with SO_REUSEPORT, so two of them then share the port and the kernel splits connections
/// between them (seen in CI: an announce answered by the other test's tracker, "not authorized"). A port is
/// therefore also claimed in a directory all test processes share, by creating a file named after it; a claim
/// older than half an hour (no test lives that long) is stale and may be taken over.
fn claim_across_processes(port: u16) -> bool {
    let dir = std::env::temp_dir().join("rill-test-ports");
    if fs::create_dir_all(&dir).is_err() {
        return true; // no shared directory: the bind check alone
    }
    let path = dir.join(port.to_string());
    let create = || fs::OpenOptions::new().write(true).create_new(true).open(&path);
    match create() {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let stale = fs::metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|at| at.elapsed().unwrap_or_default() > Duration::from_secs(30 * 60));
            stale && fs::remove_file(&path).is_ok() && create().is_ok()
        }
        Err(_) => true,
    }
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

pub fn wait_port_open(port: u16, deadline: Instant, what: &str) {
    wait_until(deadline, &format!("{what} to listen on 127.0.0.1:{port}"), || port_open(port));
}

// ---------------------------------------------------------------------------------------------------------------
// Waiting on conditions

pub fn deadline_in(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

/// The earlier of `deadline` and now + `secs`.
pub fn deadline_within(deadline: Instant, secs: u64) -> Instant {
    deadline.min(deadline_in(secs))
}

const POLL: Duration = Duration::from_millis(50);

/// Polls `cond` until it holds; panics with `what` once `deadline` passes.
#[track_caller]
pub fn wait_until(deadline: Instant, what: &str, mut cond: impl FnMut() -> bool) {
    wait_for(deadline, what, || cond().then_some(()))
}

/// Polls `f` until it returns `Some`; panics with `what` once `deadline` passes.
#[track_caller]
pub fn wait_for<T>(deadline: Instant, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        let now = Instant::now();
        if now >= deadline {
            panic!("timed out after {:.1} s waiting for {what}", (now - started).as_secs_f64());
        }
        std::thread::sleep(POLL.min(deadline - now));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Processes

/// A child process under the rig's control.
///
/// It runs as `timeout -k 3 LIFETIME program args…` in a process group of its own, so it dies by itself even if
/// this test binary is killed. Its stdout goes to `LOGDIR/NAME.out` and its stderr to `LOGDIR/NAME.err`. Dropping a
/// `Proc` sends SIGTERM to the group, then SIGKILL after a short grace, and reaps it; when the thread is panicking
/// (a failing test) it first prints the tail of both logs.
pub struct Proc {
    name: String,
    pid: u32,
    child: RefCell<Child>,
    status: Cell<Option<ExitStatus>>,
    out: PathBuf,
    err: PathBuf,
    command_line: String,
}

impl Proc {
    /// Starts `cmd` (program, args, env and working dir are taken from it) with a hard `lifetime`.
    #[track_caller]
    pub fn spawn(name: &str, cmd: &Command, log_dir: &Path, lifetime: Duration) -> Proc {
        let program = cmd.get_program().to_string_lossy().into_owned();
        let args: Vec<OsString> = cmd.get_args().map(|a| a.to_owned()).collect();
        let command_line = std::iter::once(program.clone())
            .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(" ");

        fs::create_dir_all(log_dir).unwrap_or_else(|e| panic!("create {}: {e}", log_dir.display()));
        let out = log_dir.join(format!("{name}.out"));
        let err = log_dir.join(format!("{name}.err"));
        let out_file = File::create(&out).unwrap_or_else(|e| panic!("create {}: {e}", out.display()));
        let mut err_file = File::create(&err).unwrap_or_else(|e| panic!("create {}: {e}", err.display()));
        let _ = writeln!(err_file, "$ {command_line}");

        let secs = lifetime.as_secs().max(1);
        let mut wrapped = Command::new("timeout");
        wrapped.args(["-k", "3", &secs.to_string()]).arg(cmd.get_program()).args(&args);
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => wrapped.env(k, v),
                None => wrapped.env_remove(k),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            wrapped.current_dir(dir);
        }
        wrapped.stdin(Stdio::null()).stdout(out_file).stderr(err_file).process_group(0);
        let child = wrapped.spawn().unwrap_or_else(|e| panic!("spawn {name} ({command_line}): {e}"));
        Proc {
            name: name.to_string(),
            pid: child.id(),
            child: RefCell::new(child),
            status: Cell::new(None),
            out,
            err,
            command_line,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The PID of the `timeout` wrapper, which is also the process group id. Signals sent to it are forwarded to the
    /// real program.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status, once the process has exited (non-blocking).
    pub fn exited(&self) -> Option<ExitStatus> {
        if let Some(s) = self.status.get() {
            return Some(s);
        }
        let s = self.child.borrow_mut().try_wait().ok().flatten();
        self.status.set(s);
        s
    }

    /// Panics (with the log tail) if the process has exited. For use inside `wait_until` conditions, so that a
    /// crashed peer fails the test at once instead of at the deadline.
    #[track_caller]
    pub fn assert_running(&self) {
        if let Some(s) = self.exited() {
            panic!("{} exited unexpectedly ({}); command: {}", self.name, describe(s), self.command_line);
        }
    }

    /// Waits for the process to exit by itself before `deadline`.
    #[track_caller]
    pub fn wait_exit(&self, deadline: Instant) -> ExitStatus {
        wait_for(deadline, &format!("{} to exit", self.name), || self.exited())
    }

    /// The PID of the program itself (the `timeout` wrapper's child), once it has been forked.
    pub fn program_pid(&self) -> Option<u32> {
        let children = fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.pid)).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    /// Sends a signal to the program itself. Not to the `timeout` wrapper: it would forward the signal but also arm
    /// its SIGKILL timer (`-k`), killing the program a few seconds later.
    #[track_caller]
    pub fn signal(&self, sig: i32) {
        self.assert_running();
        let pid = wait_for(deadline_in(5), &format!("{} to be forked", self.name), || self.program_pid());
        signal(pid, sig);
    }

    pub fn stdout(&self) -> String {
        fs::read(&self.out).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// Its stderr, without the `$ command` line the rig writes first.
    pub fn stderr(&self) -> String {
        let all = fs::read(&self.err).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        match all.split_once('\n') {
            Some((first, rest)) if first.starts_with("$ ") => rest.to_string(),
            _ => all,
        }
    }

    /// Prints the last lines of both logs to stderr (captured by the test harness, shown on failure).
    pub fn dump_logs(&self) {
        eprintln!(
            "[rig] ===== {} (pid {}) status: {} =====",
            self.name,
            self.pid,
            match self.exited() {
                Some(s) => describe(s),
                None => "running".into(),
            }
        );
        eprintln!("[rig] $ {}", self.command_line);
        for (label, path) in [("stdout", &self.out), ("stderr", &self.err)] {
            eprintln!("[rig] ----- {} {label} ({}) -----", self.name, path.display());
            eprintln!("{}", tail(path, 60, 12_000));
        }
    }

    /// Stops the whole process group: SIGTERM, a short grace, then SIGKILL; reaps the child.
    pub fn kill(&self) {
        if self.exited().is_none() {
            signal_group(self.pid, SIGTERM);
            let grace = Instant::now() + Duration::from_secs(2);
            while self.exited().is_none() && Instant::now() < grace {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // The group may outlive its leader (children of a daemon): kill whatever is left, then reap.
        signal_group(self.pid, SIGKILL);
        if self.exited().is_none() {
            let _ = self.child.borrow_mut().wait().map(|s| self.status.set(Some(s)));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let failing = std::thread::panicking();
        self.kill();
        if failing {
            self.dump_logs();
        }
    }
}

/// "exit code 2" / "killed by signal 9" / "timed out (timeout wrapper)".
pub fn describe(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(124), _) => "timed out: killed by its timeout wrapper (exit 124)".into(),
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => format!("{s:?}"),
    }
}

/// The last `lines` lines of a file, at most `max_bytes` of it.
pub fn tail(path: &Path, lines: usize, max_bytes: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("(no {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max_bytes);
    let _ = f.seek(SeekFrom::Start(start));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    all[from..].join("\n")
}

/// Runs a short-lived tool to completion within `deadline`; panics with its output unless it exits 0.
/// Returns its stdout.
#[track_caller]
pub fn run_tool(name: &str, cmd: &Command, log_dir: &Path, deadline: Instant) -> String {
    let lifetime = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1);
    let p = Proc::spawn(name, cmd, log_dir, lifetime);
    let status = p.wait_exit(deadline);
    if !status.success() {
        p.dump_logs();
        panic!("{name} failed: {}", describe(status));
    }
    p.stdout()
}

/// Seconds left before `deadline` plus a margin: the lifetime to give a process that must outlive the test's waits.
pub fn lifetime_until(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(10)
}
