//! A rill process for the tests that read its debug log (connections, handshakes), and the checks they share:
//! its log lines, no error lines, a clean stop, a download that ends by itself.

use std::path::Path;
use std::time::Instant;

use super::peers::{describe_peers, wait_with_peers, Peer};
use super::seeding::{listening_port, RillPeer};
use super::torrent::Torrent;
use super::{deadline_within, describe, lifetime_until, mkdir, rill_command, wait_for, Proc};

/// `rill SUB TORRENT -d DATA --no-ui --port 0 [extra…]` as process `name`, logging at debug level (the assertions
/// read the connection and handshake lines), through `rill_command`; waits until it listens.
#[track_caller]
pub fn spawn_rill(
    dir: &Path,
    name: &str,
    sub: &str,
    t: &Torrent,
    data: &Path,
    extra: &[&str],
    deadline: Instant,
) -> RillPeer {
    let mut cmd = rill_command();
    cmd.arg(sub).arg(&t.path).arg("-d").arg(mkdir(data)).args(["--no-ui", "--port", "0"]).args(extra);
    cmd.env("RUST_LOG", "info,rill=debug");
    let proc = Proc::spawn(name, &cmd, &dir.join("logs"), lifetime_until(deadline));
    let port = wait_for(deadline, &format!("{name} to print `listening on port N`"), || {
        let port = listening_port(&proc.stdout());
        if port.is_none() {
            proc.assert_running();
        }
        port
    });
    RillPeer { proc, port }
}

/// rill's log lines that contain `what`.
pub fn lines_with<'a>(log: &'a str, what: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(what)).collect()
}

/// No panic and no `rill: …` error line in rill's stderr.
#[track_caller]
pub fn assert_no_rill_errors(rill: &Proc) {
    let err = rill.stderr();
    assert!(!err.contains("panicked"), "rill panicked:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("rill: ")).collect();
    assert!(lines.is_empty(), "rill reported errors: {lines:#?}");
}

/// Ctrl-C to rill; it must stop cleanly (exit 0) without errors.
#[track_caller]
pub fn stop_rill(rill: &RillPeer, deadline: Instant) {
    let status = rill.interrupt(deadline_within(deadline, 15));
    assert!(status.success(), "{} did not exit 0 after SIGINT: {}", rill.proc.name(), describe(status));
    assert_no_rill_errors(&rill.proc);
}

/// Waits for `rill download` to exit by itself (it does once complete), checking that `others` keep running;
/// asserts exit 0.
#[track_caller]
pub fn wait_download_done(rill: &RillPeer, others: &[&dyn Peer], deadline: Instant) {
    let status =
        wait_with_peers(others, deadline, &format!("{} to complete and exit", rill.proc.name()), || rill.proc.exited());
    assert!(status.success(), "{} failed: {}; {}", rill.proc.name(), describe(status), describe_peers(others));
    assert_no_rill_errors(&rill.proc);
}
