//! Issue 14's live view in a real pseudo-terminal: rill runs in a tmux pane (a private tmux server on its own
//! socket) downloading from a real python3-libtorrent seeder on loopback. The pane must show the full-screen view
//! (the progress bar, a row for the seeder with its decoded client) on the alternate screen with the cursor hidden,
//! and draw again for a narrower window. `q`, Ctrl-C or SIGTERM stops rill gracefully with exit 0, a run that fails
//! exits 1, and every time the terminal is given back as it was: main screen (the line printed before rill is there
//! again), cursor shown, and cooked mode (`stty -a` run in the pane afterwards shows `icanon` and `echo` back on).
//!
//! Every wait is on a condition with a deadline; rill runs under `timeout`, the tmux server is killed by PID.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::content::{self, MIB};
use common::peers::{LibtorrentPeer, Peer};
use common::torrent;
use common::{deadline_in, free_port, require_tool, rill_bin, signal, wait_for, TempDir, SIGKILL, SIGTERM};

/// A tmux server of our own (`tmux -L NAME`), with one detached session; killed with its panes on drop.
struct Tmux {
    socket: String,
    server_pid: Option<u32>,
}

impl Tmux {
    /// A `cols`×`rows` session running `sh SCRIPT`.
    fn start(label: &str, script: &Path, cols: u16, rows: u16) -> Tmux {
        require_tool("tmux", "tmux");
        let socket = format!("rill-test-{label}-{}", std::process::id());
        let mut t = Tmux { socket, server_pid: None };
        let cmd = format!("sh {}", script.display());
        t.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "view",
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
            &cmd,
        ]);
        t.server_pid = t.display("#{pid}").trim().parse().ok();
        t
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.arg("-u").arg("-L").arg(&self.socket).env_remove("TMUX").stdin(Stdio::null());
        cmd
    }

    #[track_caller]
    fn run(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().unwrap_or_else(|e| panic!("tmux {args:?}: {e}"));
        assert!(out.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The pane's visible text.
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "view"])
    }

    /// A tmux format of the pane (`#{alternate_on}`, `#{cursor_flag}`).
    fn display(&self, format: &str) -> String {
        self.run(&["display-message", "-p", "-t", "view", format])
    }

    fn keys(&self, keys: &str) {
        self.run(&["send-keys", "-t", "view", keys]);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(out) = self.command().args(["capture-pane", "-p", "-t", "view"]).output() {
                eprintln!("--- the pane ---\n{}", String::from_utf8_lossy(&out.stdout));
            }
        }
        let _ = self.command().arg("kill-server").output();
        if let Some(pid) = self.server_pid {
            signal(pid, SIGKILL);
        }
    }
}

/// The pane's script: a line before rill, rill (its pid in `rill.pid`, its stderr in `rill.err`, 60 s at most:
/// `timeout --foreground` keeps it in the terminal's foreground process group, where it may read keys and set
/// modes), its exit code, then the terminal's modes as the shell sees them.
fn write_script(dir: &Path, args: &[String]) -> PathBuf {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let script = format!(
        "cd '{dir}'\nexport RILL_FORBID_DHT_ROUTERS=1\nprintf 'BEFORE-RILL\\n'\n\
         sh -c 'echo $$ > rill.pid; exec timeout --foreground -k 3 60 \"$0\" \"$@\" 2> rill.err' '{rill}' {args}\n\
         echo \"RILL-EXIT=$?\"\nstty -a > stty.txt\nexec sleep 120\n",
        dir = dir.display(),
        rill = rill_bin().display(),
        args = quoted.join(" "),
    );
    let path = dir.join("pane.sh");
    fs::write(&path, script).expect("write the pane script");
    path
}

/// The pane after rill ended: exit `code`, main screen back with what was there before, cursor shown, cooked
/// mode. Returns rill's stderr.
#[track_caller]
fn assert_restored(tmux: &Tmux, dir: &Path, code: i32, deadline: Instant) -> String {
    let screen = wait_for(deadline, "rill to exit and the pane's shell to go on", || {
        let s = tmux.screen();
        (s.contains("RILL-EXIT=") && dir.join("stty.txt").exists()).then_some(s)
    });
    let err = fs::read_to_string(dir.join("rill.err")).unwrap_or_default();
    assert!(screen.contains(&format!("RILL-EXIT={code}")), "rill did not exit {code}:\n{screen}\nstderr:\n{err}");
    assert!(!err.contains("panicked"), "rill panicked:\n{err}");
    assert!(screen.contains("BEFORE-RILL"), "the main screen is not back:\n{screen}");
    assert!(!screen.contains("q quit"), "the view is still on the screen:\n{screen}");
    assert_eq!(tmux.display("#{alternate_on} #{cursor_flag}").trim(), "0 1", "alternate screen off, cursor shown");
    let stty =
        wait_for(deadline, "stty's output", || fs::read_to_string(dir.join("stty.txt")).ok().filter(|s| !s.is_empty()));
    let flags: Vec<&str> = stty.split_whitespace().collect();
    for flag in ["icanon", "echo", "isig", "icrnl"] {
        assert!(flags.contains(&flag), "the terminal is still raw ({flag} is off):\n{stty}");
    }
    err
}

/// Downloading from a throttled libtorrent seeder: the view shows the bar and the seeder's row; `q` quits.
#[test]
fn view_shows_the_download_and_q_quits_restoring_the_terminal() {
    let deadline = deadline_in(90);
    let dir = TempDir::new("live-view-q");
    let content = content::write_single(&dir.mkdir("content"), "payload.bin", 24 * MIB, 0x71E3);
    let announce = format!("http://127.0.0.1:{}/announce", free_port());
    let t = torrent::transmission_create(&content, &announce, 256, &dir.join("t.torrent"), deadline);
    let seed_data = content.copy_to(&dir.mkdir("seed-data"));
    // 1 MB/s: the download is still going when the view is looked at.
    let seeder = LibtorrentPeer::seed(dir.path(), "libtorrent", &t, &seed_data, 1_000_000, deadline);
    let out = dir.mkdir("out");
    let args: Vec<String> = vec![
        "download".into(),
        dir.join("t.torrent").display().to_string(),
        "-d".into(),
        out.display().to_string(),
        "--port".into(),
        free_port().to_string(),
        "--no-dht".into(),
        "--peer".into(),
        seeder.addr(),
    ];
    let script = write_script(dir.path(), &args);
    let tmux = Tmux::start("q", &script, 120, 40);

    let row_start = format!("127.0.0.1:{}", seeder.port());
    let screen = wait_for(deadline, "the view with a progress bar and the seeder's row", || {
        seeder.proc().assert_running();
        let s = tmux.screen();
        let row = s.lines().find(|l| l.starts_with(&row_start) && l.contains("libtorrent"))?;
        (s.contains("[#") && s.contains("downloading") && row.contains("/s")).then(|| s.clone())
    });
    assert!(screen.starts_with("rill  down "), "the header first:\n{screen}");
    assert!(screen.contains("payload.bin"), "{screen}");
    assert!(screen.contains("peers of payload.bin (1, sorted by busiest)"), "{screen}");
    assert_eq!(tmux.display("#{alternate_on} #{cursor_flag}").trim(), "1 0", "alternate screen on, cursor hidden");

    // A narrower terminal (SIGWINCH): the table drops its least important columns.
    tmux.run(&["resize-window", "-t", "view", "-x", "70", "-y", "30"]);
    wait_for(deadline, "the view redrawn for 70 columns", || {
        let s = tmux.screen();
        let header = s.lines().find(|l| l.starts_with("address"))?.to_string();
        (header.contains("client") && !header.contains("share") && s.contains("[#")).then_some(())
    });

    // `s` cycles the sort column; the view redraws at once.
    tmux.keys("s");
    wait_for(deadline, "the sort column to change", || tmux.screen().contains("sorted by down").then_some(()));

    tmux.keys("q");
    assert_restored(&tmux, dir.path(), 0, deadline);
    let screen = tmux.screen();
    assert!(screen.contains("stopped: "), "the interrupted download's summary:\n{screen}");
}

/// `rill seed` of a small torrent in a pane, once its view shows it seeding.
fn seed_under_the_view(dir: &TempDir, label: &str, deadline: Instant) -> Tmux {
    let content = content::write_single(&dir.mkdir("content"), "seeded.bin", 2 * MIB, 0x7E57);
    let announce = format!("http://127.0.0.1:{}/announce", free_port());
    torrent::transmission_create(&content, &announce, 64, &dir.join("t.torrent"), deadline);
    let args: Vec<String> = vec![
        "seed".into(),
        dir.join("t.torrent").display().to_string(),
        "-d".into(),
        content.parent.display().to_string(),
        "--port".into(),
        free_port().to_string(),
        "--no-dht".into(),
    ];
    let script = write_script(dir.path(), &args);
    let tmux = Tmux::start(label, &script, 80, 24);
    wait_for(deadline, "the seeding view", || {
        let s = tmux.screen();
        (s.contains("seeded.bin  seeding") && s.contains("[####")).then_some(())
    });
    assert!(tmux.screen().contains("100.0%"), "{}", tmux.screen());
    tmux
}

/// `rill seed` under the view, stopped by SIGTERM: the same clean exit and restored terminal.
#[test]
fn sigterm_under_the_view_restores_the_terminal() {
    let deadline = deadline_in(60);
    let dir = TempDir::new("live-view-term");
    let tmux = seed_under_the_view(&dir, "term", deadline);
    let pid: u32 =
        wait_for(deadline, "rill's pid", || fs::read_to_string(dir.join("rill.pid")).ok()?.trim().parse().ok());
    // `timeout` passes the signal on to rill.
    assert!(signal(pid, SIGTERM), "SIGTERM to rill");
    assert_restored(&tmux, dir.path(), 0, deadline);
}

/// Ctrl-C is a key in raw mode: it stops rill as `q` and SIGINT do.
#[test]
fn ctrl_c_under_the_view_stops_rill_and_restores_the_terminal() {
    let deadline = deadline_in(60);
    let dir = TempDir::new("live-view-ctrl-c");
    let tmux = seed_under_the_view(&dir, "ctrl-c", deadline);
    tmux.keys("C-c");
    assert_restored(&tmux, dir.path(), 0, deadline);
}

/// A run that fails under the view (a symbolic link planted at the data file: refused, exit 1) gives the terminal
/// back too, and its error reaches stderr.
#[test]
fn an_error_under_the_view_restores_the_terminal() {
    let deadline = deadline_in(60);
    let dir = TempDir::new("live-view-error");
    let content = content::write_single(&dir.mkdir("content"), "payload.bin", 2 * MIB, 0xE440);
    let announce = format!("http://127.0.0.1:{}/announce", free_port());
    torrent::transmission_create(&content, &announce, 64, &dir.join("t.torrent"), deadline);
    let out = dir.mkdir("out");
    let outside = dir.mkdir("outside").join("precious");
    fs::write(&outside, b"must stay as it is").expect("write the outside file");
    std::os::unix::fs::symlink(&outside, out.join("payload.bin")).expect("plant the link");
    let args: Vec<String> = vec![
        "download".into(),
        dir.join("t.torrent").display().to_string(),
        "-d".into(),
        out.display().to_string(),
        "--port".into(),
        free_port().to_string(),
        "--no-dht".into(),
    ];
    let script = write_script(dir.path(), &args);
    let tmux = Tmux::start("error", &script, 100, 30);
    let err = assert_restored(&tmux, dir.path(), 1, deadline);
    assert!(err.contains("payload.bin"), "the error names the file:\n{err}");
    assert_eq!(fs::read(&outside).expect("the outside file"), b"must stay as it is");
}
