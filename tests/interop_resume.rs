//! Issue 6 on loopback against real seeders: rill resumes after `kill -9` and after Ctrl-C without fetching the
//! data again, bans a peer that sends garbage while still completing from an honest seeder, downloads only the
//! files `--files` selects, and fails cleanly (exit 1, one line naming the path) on a full disk.
//!
//! Every process is bounded in time and killed by PID; on failure every process's log tail is printed and the
//! test's directory is kept. Progress is judged from the seeders' own upload counters (libtorrent's status file,
//! aria2's RPC), never from fixed sleeps.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::content::{self, assert_same_tree, first_difference, Content, KIB, MIB};
use common::peers::{describe_peers, wait_with_peers, Aria2, LibtorrentPeer, Peer};
use common::resume::{
    already_here, error_lines, in_private_tmpfs, last_progress_percent, private_mount_namespace, resume_path,
    resume_pieces, rill_download_command, settled_upload, spawn_rill, stopped_line, total_uploaded, wasted,
    AlreadyHere, HostilePeer, SIGINT,
};
use common::torrent::{self, Torrent};
use common::tracker::Opentracker;
use common::{
    bencode::{self, Value},
    deadline_in, deadline_within, describe, free_port, rill_command, run_tool, wait_for, Proc, TempDir, SIGKILL,
};

/// Upload limit of each seeder in the resume tests (bytes/s): slow enough that rill is caught mid-download,
/// fast enough that the whole file stays well under its time budget.
const SEEDER_RATE: u64 = 400_000;

/// The seeders may send at most this multiple of the torrent over a killed run and its restart (issue 6).
const MAX_SENT_AFTER_KILL: f64 = 1.25;

/// After a graceful stop only the pieces that were half-way are fetched again: "little". With one seeder at
/// 600 kB/s the pipeline spans about four 128 KiB pieces, so a stop loses up to ~0.5 MB of this 6 MB torrent:
/// measured 1.085-1.10x on the 2-core machine (the more loaded, the deeper the pipeline). A resume file that
/// recorded nothing would give about 1.4x.
const MAX_SENT_AFTER_CTRL_C: f64 = 1.15;

/// python3-libtorrent seeding a copy of `content` (under `libtorrent-data`) at `upload_limit` bytes/s (0: unlimited),
/// once `tracker` lists it as the torrent's one seeder.
#[track_caller]
fn libtorrent_seeder(
    dir: &TempDir,
    content: &Content,
    t: &Torrent,
    upload_limit: u64,
    tracker: &Opentracker,
    deadline: Instant,
) -> LibtorrentPeer {
    let data = content.copy_to(&dir.mkdir("libtorrent-data"));
    let lt = LibtorrentPeer::seed(dir.path(), "libtorrent", t, &data, upload_limit, deadline);
    tracker.wait_seeders(&t.info_hash, 1, deadline);
    lt
}

/// Runs `cmd` again as `rill-2`: it must finish (exit 0) with a byte-identical copy and say which pieces were
/// already here. Returns the process (kept, so that its logs are printed if a later check fails), its stdout and
/// that report.
#[track_caller]
fn restart_to_completion(
    dir: &TempDir,
    cmd: &Command,
    seeders: &[&dyn Peer],
    content: &Content,
    out: &Path,
    t: &Torrent,
    deadline: Instant,
) -> (Proc, String, AlreadyHere) {
    let second = spawn_rill(dir.path(), "rill-2", cmd, deadline);
    let status = wait_with_peers(seeders, deadline, "the restarted rill to finish", || second.exited());
    assert!(status.success(), "the restarted rill failed: {}", describe(status));
    assert_same_tree(&content.path(), &out.join(&t.name));
    let stdout = second.stdout();
    let here = already_here(&stdout)
        .unwrap_or_else(|| panic!("the restarted rill did not say which pieces were already here:\n{stdout}"));
    (second, stdout, here)
}

#[track_caller]
fn assert_killed(status: std::process::ExitStatus) {
    use std::os::unix::process::ExitStatusExt;
    // The `timeout` wrapper reports its child's death by a signal as 128 + signal (or dies of it itself).
    let killed = status.signal() == Some(SIGKILL) || status.code() == Some(128 + SIGKILL);
    assert!(killed, "rill should have died of SIGKILL, not {}", describe(status));
}

/// (1) `kill -9` at about 40 %, then the same command again: the download completes byte-identical, and the
/// seeders (by their own counters) sent less than 1.25 × the torrent over both runs.
#[test]
fn kill_9_at_40_percent_then_restart_completes_without_refetching() {
    let deadline = deadline_in(100);
    let dir = TempDir::new("resume-kill9");
    let content = content::standard_tree(&dir.mkdir("content"), "rill-resume", 0x6B11_0009);
    let (t, tracker) = Opentracker::with_torrent(dir.path(), deadline, |announce| {
        torrent::libtorrent_create(&content, announce, 256 * KIB, true, &dir.join("kill9.torrent"), deadline)
    });
    let lt_data = content.copy_to(&dir.mkdir("libtorrent-data"));
    let aria_data = content.copy_to(&dir.mkdir("aria2-data"));
    let lt = LibtorrentPeer::seed(dir.path(), "libtorrent", &t, &lt_data, SEEDER_RATE, deadline);
    let aria = Aria2::seed(dir.path(), "aria2c", &t, &aria_data, Some(SEEDER_RATE), deadline);
    tracker.wait_seeders(&t.info_hash, 2, deadline);
    let seeders: [&dyn Peer; 2] = [&lt, &aria];

    let out = dir.mkdir("out");
    let cmd = rill_download_command(&t, &out, free_port(), &[lt.addr(), aria.addr()], &[]);
    let first = spawn_rill(dir.path(), "rill-1", &cmd, deadline);
    let target = t.total_length * 2 / 5;
    wait_with_peers(&seeders, deadline, "the seeders to have sent 40 % of the torrent to rill", || {
        first.assert_running();
        (total_uploaded(&seeders) >= target).then_some(())
    });
    first.signal(SIGKILL);
    assert_killed(first.wait_exit(deadline_within(deadline, 10)));
    let sent_first = total_uploaded(&seeders);
    let recorded = resume_pieces(&resume_path(&out, &t));
    println!(
        "killed at {:.0} % sent (rill's last line: {:?} %); the resume file recorded {recorded:?} of {} pieces",
        sent_first as f64 * 100.0 / t.total_length as f64,
        last_progress_percent(&first.stdout()),
        t.num_pieces
    );

    let (_second, stdout, here) = restart_to_completion(&dir, &cmd, &seeders, &content, &out, &t, deadline);
    assert!(here.have > 0, "the restart kept nothing of the first run: {here:?}");
    assert!(stdout.lines().any(|l| l.starts_with("done:")), "no summary line:\n{stdout}");

    let sent = settled_upload(&seeders, t.total_length, deadline_within(deadline, 15));
    let ratio = sent as f64 / t.total_length as f64;
    println!(
        "kill -9 then restart: {} pieces already here ({} from the resume file, {} checked); the seeders sent {sent} \
         bytes for a {} byte torrent: {ratio:.3}×, re-download fraction {:.1} %; {}",
        here.have,
        here.trusted,
        here.checked,
        t.total_length,
        (ratio - 1.0) * 100.0,
        describe_peers(&seeders)
    );
    assert!(
        ratio < MAX_SENT_AFTER_KILL,
        "the seeders sent {sent} bytes ({ratio:.3}× the torrent) over the killed run and its restart; at most \
         {MAX_SENT_AFTER_KILL}× is allowed ({sent_first} before the kill; restart: {here:?})"
    );
}

/// (2) Ctrl-C (SIGINT): rill exits 0 within a few seconds, prints `stopped: X of Y verified`, tells the tracker it
/// stopped and leaves a resume file; the same command again trusts that file, completes byte-identical and fetches
/// little again.
#[test]
fn ctrl_c_then_restart_resumes_from_the_resume_file() {
    let deadline = deadline_in(90);
    let dir = TempDir::new("resume-ctrl-c");
    let content = content::write_single(&dir.mkdir("content"), "interrupted.bin", 6 * MIB + 4_321, 0xC7_41C);
    let (t, tracker) = Opentracker::with_torrent(dir.path(), deadline, |announce| {
        torrent::transmission_create(&content, announce, 128, &dir.join("ctrl-c.torrent"), deadline)
    });
    let lt = libtorrent_seeder(&dir, &content, &t, SEEDER_RATE + 200_000, &tracker, deadline);
    let seeders: [&dyn Peer; 1] = [&lt];

    let out = dir.mkdir("out");
    let cmd = rill_download_command(&t, &out, free_port(), &[lt.addr()], &[]);
    let first = spawn_rill(dir.path(), "rill-1", &cmd, deadline);
    // rill has announced itself as a leecher...
    wait_for(deadline, "opentracker to list rill as a leecher", || {
        first.assert_running();
        tracker.scrape(&t.info_hash).filter(|(_, incomplete)| *incomplete >= 1)
    });
    let target = t.total_length * 2 / 5;
    wait_with_peers(&seeders, deadline, "the seeder to have sent 40 % of the torrent to rill", || {
        first.assert_running();
        (total_uploaded(&seeders) >= target).then_some(())
    });
    first.signal(SIGINT);
    let signalled = Instant::now();
    let status = first.wait_exit(deadline_within(deadline, 15));
    let took = signalled.elapsed();
    assert!(status.success(), "rill should exit 0 after Ctrl-C, not {}", describe(status));
    assert!(took.as_secs_f64() < 5.0, "rill took {:.1} s to stop after Ctrl-C", took.as_secs_f64());
    let stdout = first.stdout();
    let stopped = stopped_line(&stdout).unwrap_or_else(|| panic!("no `stopped:` line after Ctrl-C:\n{stdout}"));
    // ...and said `stopped` on its way out.
    wait_for(deadline_within(deadline, 5), "opentracker to drop rill after its `stopped` announce", || {
        tracker.scrape(&t.info_hash).filter(|(_, incomplete)| *incomplete == 0)
    });
    let recorded = resume_pieces(&resume_path(&out, &t))
        .unwrap_or_else(|| panic!("no readable resume file {} after Ctrl-C", resume_path(&out, &t).display()));
    assert!(recorded > 0, "the resume file records no piece after Ctrl-C at ~40 %");
    let sent_first = total_uploaded(&seeders);
    println!(
        "Ctrl-C: exited 0 after {:.2} s: {stopped:?}; the resume file records {recorded} pieces",
        took.as_secs_f64()
    );

    let (_second, _, here) = restart_to_completion(&dir, &cmd, &seeders, &content, &out, &t, deadline);
    assert_eq!(
        here.trusted, recorded as u64,
        "after a clean stop every piece in the resume file should be trusted without hashing: {here:?}"
    );

    let sent = settled_upload(&seeders, t.total_length, deadline_within(deadline, 15));
    let ratio = sent as f64 / t.total_length as f64;
    println!(
        "Ctrl-C then restart: {here:?}; the seeder sent {sent} bytes ({sent_first} before the stop) for {} bytes: \
         {ratio:.3}×",
        t.total_length
    );
    assert!(
        ratio < MAX_SENT_AFTER_CTRL_C,
        "the seeder sent {ratio:.3}× the torrent over the stopped run and its restart ({sent_first} bytes before \
         the stop; restart: {here:?})"
    );
}

/// (3) A hostile peer claims every piece and answers every request with garbage; an honest, throttled libtorrent
/// seeder has the real data. rill completes byte-identical, reports the failed pieces, and bans the hostile peer:
/// it disconnects it and never connects again for the rest of the download (which lasts longer than rill's 15 s
/// redial delay), and logs `banned`.
#[test]
fn hostile_peer_sending_garbage_is_banned_and_the_download_completes() {
    let deadline = deadline_in(100);
    let dir = TempDir::new("resume-hostile");
    let content = content::write_single(&dir.mkdir("content"), "contested.bin", 3 * MIB + 600 * KIB + 7, 0xBAD);
    let (t, tracker) = Opentracker::with_torrent(dir.path(), deadline, |announce| {
        torrent::transmission_create(&content, announce, 64, &dir.join("hostile.torrent"), deadline)
    });
    // Slow enough that the hostile peer (which answers at once) takes requests, and that the download outlasts
    // rill's redial delay by a margin after the ban.
    let honest = libtorrent_seeder(&dir, &content, &t, 200_000, &tracker, deadline);
    let hostile = HostilePeer::start(dir.path(), "hostile", &t, deadline);
    let seeders: [&dyn Peer; 1] = [&honest];

    let out = dir.mkdir("out");
    let cmd = rill_download_command(&t, &out, free_port(), &[hostile.addr(), honest.addr()], &[]);
    let rill = spawn_rill(dir.path(), "rill", &cmd, deadline);
    let status = wait_with_peers(&seeders, deadline, "rill to finish", || {
        hostile.proc().assert_running();
        rill.exited()
    });
    let finished = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(status.success(), "rill failed: {}", describe(status));
    assert_same_tree(&content.path(), &out.join(&t.name));

    let stdout = rill.stdout();
    let stderr = rill.stderr();
    let (wasted_bytes, failed) =
        wasted(&stdout).unwrap_or_else(|| panic!("rill reported no `wasted:` line after garbage:\n{stdout}"));
    assert!(failed >= 1 && wasted_bytes > 0, "rill should report failed pieces and wasted bytes: {stdout}");
    let banned = format!("{}: banned", hostile.addr());
    assert!(
        stderr.contains(&banned),
        "rill's log has no `{banned}` line (RUST_LOG={})",
        common::resume::rill_log_filter()
    );
    assert!(
        !stderr.contains(&format!("{}: banned", honest.addr())),
        "rill banned the honest seeder too:\n{}",
        stderr.lines().filter(|l| l.contains("banned")).collect::<Vec<_>>().join("\n")
    );

    // Only connections that handshook: the rig's own port probe (connect, close) shows up too.
    let conns: Vec<_> = hostile.connections().into_iter().filter(|c| c.handshake).collect();
    let served: Vec<_> = conns.iter().filter(|c| c.blocks_sent > 0).collect();
    assert!(!served.is_empty(), "rill never took a block from the hostile peer: {conns:?}");
    let first_close = conns
        .iter()
        .filter_map(|c| c.closed_at.map(|at| (at, c)))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap_or_else(|| panic!("rill never disconnected the hostile peer: {conns:?}"));
    assert_eq!(
        first_close.1.closed_by.as_deref(),
        Some("remote"),
        "the hostile peer's connection should have been closed by rill: {conns:?}"
    );
    let redials: Vec<_> = conns.iter().filter(|c| c.accepted_at > first_close.0).collect();
    assert!(redials.is_empty(), "rill connected to the banned peer again: {redials:?}");
    println!(
        "hostile peer: {} blocks of garbage sent; rill: {failed} pieces failed, {wasted_bytes} bytes wasted; banned \
         {:.1} s before the download ended, no reconnection since; {}",
        served.iter().map(|c| c.blocks_sent).sum::<u64>(),
        finished - first_close.0,
        describe_peers(&seeders)
    );
}

/// `rill info`'s numbering: the non-padding files of the torrent, in order, as (path inside the torrent, length).
fn numbered_files(t: &Torrent) -> Vec<(String, u64)> {
    let meta = bencode::decode(&t.bytes).expect("torrent");
    let files = meta.get("info").and_then(|i| i.get("files")).and_then(Value::as_list).expect("a multi-file torrent");
    files
        .iter()
        .filter(|f| !f.get("attr").and_then(Value::as_str).is_some_and(|a| a.contains('p')))
        .map(|f| {
            let path = f.get("path").and_then(Value::as_list).expect("path");
            let parts: Vec<&str> = path.iter().map(|p| p.as_str().expect("utf-8 path")).collect();
            (parts.join("/"), f.get("length").and_then(Value::as_int).expect("length") as u64)
        })
        .collect()
}

/// `0,2-3,5` from sorted indices.
fn file_list_arg(indices: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < indices.len() {
        let mut j = i;
        while j + 1 < indices.len() && indices[j + 1] == indices[j] + 1 {
            j += 1;
        }
        parts.push(if i == j { indices[i].to_string() } else { format!("{}-{}", indices[i], indices[j]) });
        i = j + 1;
    }
    parts.join(",")
}

/// (4) `--files` on a hybrid torrent whose BEP 47 padding files are left out of the numbering: the selected files
/// arrive byte-identical, the unselected ones are never created in full, and the seeder sent far less than the
/// whole torrent.
#[test]
fn files_selection_downloads_only_the_chosen_files() {
    let deadline = deadline_in(60);
    let dir = TempDir::new("resume-files");
    let files: &[(&str, u64)] = &[
        ("a-keep.bin", 700_001),
        ("b/skip-big.bin", 3 * MIB + 5),
        ("c/keep-1.bin", 300_000),
        ("c/keep-2.bin", 123_457),
        ("d/e/skip.bin", MIB + 77),
        ("f-keep.bin", 500_003),
    ];
    let content = content::write_tree(&dir.mkdir("content"), "selection", files, 0xF11E5);
    let (t, tracker) = Opentracker::with_torrent(dir.path(), deadline, |announce| {
        torrent::libtorrent_create(&content, announce, 64 * KIB, false, &dir.join("files.torrent"), deadline)
    });
    assert!(t.has_padding, "libtorrent should have made a hybrid torrent with padding files");
    let lt = libtorrent_seeder(&dir, &content, &t, 0, &tracker, deadline);

    let numbered = numbered_files(&t);
    assert_eq!(numbered.len(), files.len(), "{numbered:?}");
    let keep: Vec<usize> = (0..numbered.len()).filter(|&i| numbered[i].0.contains("keep")).collect();
    let list = file_list_arg(&keep);
    // The numbers are the ones `rill info` prints.
    let mut info = rill_command();
    info.arg("info").arg(&t.path);
    let printed = run_tool("rill-info", &info, &dir.join("logs"), deadline);
    for (i, (path, _)) in numbered.iter().enumerate() {
        let line = printed.lines().find(|l| l.trim_start().starts_with(&format!("{i} ")));
        assert!(
            line.is_some_and(|l| l.ends_with(path.as_str())),
            "`rill info` does not list {path} as file {i}:\n{printed}"
        );
    }

    let out = dir.mkdir("out");
    let cmd = rill_download_command(&t, &out, free_port(), &[lt.addr()], &["--files", &list]);
    let rill = spawn_rill(dir.path(), "rill", &cmd, deadline);
    let seeders: [&dyn Peer; 1] = [&lt];
    let status = wait_with_peers(&seeders, deadline, "rill to finish", || rill.exited());
    assert!(status.success(), "rill --files {list} failed: {}", describe(status));

    let (src, dst) = (content.path(), out.join(&t.name));
    let mut wanted_bytes = 0;
    for (i, (path, len)) in numbered.iter().enumerate() {
        let got = dst.join(path);
        if keep.contains(&i) {
            wanted_bytes += len;
            match first_difference(&src.join(path), &got) {
                Ok(None) => {}
                Ok(Some(off)) => panic!("selected file {i} {} differs at byte {off}", got.display()),
                Err(e) => panic!("selected file {i}: {e}"),
            }
        } else {
            let size = std::fs::metadata(&got).map(|m| m.len()).ok();
            assert!(size.is_none_or(|s| s < *len), "unselected file {i} {} was created in full", got.display());
        }
    }
    assert!(!dst.join(".pad").exists(), "padding files were written to disk");
    let sent = settled_upload(&seeders, wanted_bytes, deadline_within(deadline, 15));
    let skipped = t.total_length - wanted_bytes;
    assert!(
        sent < wanted_bytes + skipped / 2,
        "the seeder sent {sent} bytes for {wanted_bytes} selected bytes of {}: unselected files were fetched",
        t.total_length
    );
    println!(
        "--files {list}: {wanted_bytes} selected bytes of {}; the seeder sent {sent}; unselected on disk: {:?}",
        t.total_length,
        numbered
            .iter()
            .enumerate()
            .filter(|(i, _)| !keep.contains(i))
            .map(|(_, (p, _))| (p.clone(), std::fs::metadata(dst.join(p)).map(|m| m.len()).ok()))
            .collect::<Vec<_>>()
    );
}

/// (5) A full disk: rill downloads into a 2 MiB tmpfs (mounted in a private mount namespace, so the host never
/// sees it) a torrent three times that size. It must exit 1 with one error line naming the path, and no panic.
#[test]
fn full_disk_fails_with_one_line_naming_the_path() {
    let deadline = deadline_in(60);
    let dir = TempDir::new("resume-disk-full");
    let probe = dir.mkdir("probe");
    let ns = private_mount_namespace(&probe).unwrap_or_else(|| {
        panic!(
            "cannot mount a tmpfs in a private mount namespace here (neither `unshare --mount` nor `unshare --user \
             --map-root-user --mount` may): run the tests as root, or where user namespaces are allowed"
        )
    });
    let content = content::write_single(&dir.mkdir("content"), "too-big.bin", 6 * MIB + 99, 0xF0_11);
    let (t, tracker) = Opentracker::with_torrent(dir.path(), deadline, |announce| {
        torrent::transmission_create(&content, announce, 256, &dir.join("full.torrent"), deadline)
    });
    let lt = libtorrent_seeder(&dir, &content, &t, 0, &tracker, deadline);

    let small = dir.mkdir("small-disk");
    let cmd = rill_download_command(&t, &small, free_port(), &[lt.addr()], &[]);
    let rill = spawn_rill(dir.path(), "rill", &in_private_tmpfs(&ns, &cmd, &small, "2m"), deadline);
    let seeders: [&dyn Peer; 1] = [&lt];
    let status = wait_with_peers(&seeders, deadline, "rill to give up on the full disk", || rill.exited());
    let stderr = rill.stderr();
    assert!(!stderr.contains("panicked"), "rill panicked on a full disk:\n{stderr}");
    assert_eq!(status.code(), Some(1), "rill should exit 1 on a full disk, not {}", describe(status));
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "expected exactly one error line, got:\n{}", errors.join("\n"));
    let line = errors[0];
    assert!(line.starts_with("rill: "), "{line}");
    let data_path = small.join(&t.name);
    assert!(
        line.contains(&*data_path.to_string_lossy()) || line.contains(&*small.to_string_lossy()),
        "the error does not name the path under {}: {line}",
        small.display()
    );
    assert!(content::is_empty_dir(&small), "the tmpfs leaked out of its mount namespace: {}", small.display());
    println!("full disk (namespace: unshare {}): exit 1: {line}", ns.join(" "));
}

/// The tests' own helpers, without the network.
#[test]
fn file_list_arg_groups_ranges() {
    assert_eq!(file_list_arg(&[0, 2, 3, 5]), "0,2-3,5");
    assert_eq!(file_list_arg(&[1, 2, 3]), "1-3");
    assert_eq!(file_list_arg(&[4]), "4");
}
