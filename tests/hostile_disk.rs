//! Issue 9, "trust nothing on disk", with the real binary and a real seeder on loopback: someone who can write
//! to the download directory plants a symbolic link at a data file, at a folder of the torrent's tree, a dangling
//! one, or one at the resume file's temporary name. rill must refuse it (exit 1, exactly one line on stderr naming
//! the path) and write nothing outside the directory, although a seeder stands ready to send the data. A resume
//! file that is huge, a FIFO, or a link to `/dev/zero` must not hang rill or grow its memory (it runs under a
//! 512 MiB address-space limit). A torrent name of 250 bytes downloads to completion (its resume file's name no
//! longer grows with it), and a data file deleted during a download is reported within seconds.
//!
//! Every process is bounded in time and killed by PID; on failure every process's log tail is printed and the
//! test's directory is kept.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::content::{self, assert_same_tree, Content, KIB, MIB};
use common::peers::{describe_peers, wait_with_peers, LibtorrentPeer, Peer};
use common::resume::{error_lines, resume_path, resume_pieces, rill_download_command, spawn_rill};
use common::torrent::{self, Torrent};
use common::{deadline_in, deadline_within, describe, free_port, require_tool, run_tool, Proc, TempDir};

/// The address-space limit rill runs under in the resume-file tests: far below what reading a huge resume file
/// (or `/dev/zero`) would take, far above what rill needs.
const ADDRESS_SPACE_LIMIT: u64 = 512 * MIB;

/// A deleted data file must be reported within this time: rill looks every 2 s on its 1 s timer, so at most
/// 3 s. (Before, only the next resume save noticed it, 5 s or more later, or never if no piece completed.)
const VANISHED_WITHIN: Duration = Duration::from_secs(4);

/// The small tree every refusal test uses: a file at the top, one in a folder, one two folders deep.
const TREE: &[(&str, u64)] =
    &[("a.bin", 300_001), ("sub/b.bin", 200_003), ("sub/deeper/c.bin", 100_007), ("z.bin", 50_009)];

/// A torrent of `content` made by transmission-create. Its announce URL is a loopback port nobody listens on: rill
/// and the seeder meet through `--peer`.
#[track_caller]
fn make_torrent(dir: &TempDir, content: &Content, piece_kib: u32, deadline: Instant) -> Torrent {
    let announce = format!("http://127.0.0.1:{}/announce", free_port());
    torrent::transmission_create(content, &announce, piece_kib, &dir.join("t.torrent"), deadline)
}

/// python3-libtorrent seeding a copy of `content` at `upload_limit` bytes/s (0: unlimited).
#[track_caller]
fn seeder(dir: &TempDir, content: &Content, t: &Torrent, upload_limit: u64, deadline: Instant) -> LibtorrentPeer {
    let data = content.copy_to(&dir.mkdir("seed-data"));
    LibtorrentPeer::seed(dir.path(), "libtorrent", t, &data, upload_limit, deadline)
}

/// A folder outside the download directory with one file in it, standing for "anywhere else on the machine".
struct Outside {
    dir: PathBuf,
}

impl Outside {
    fn new(dir: &TempDir) -> Outside {
        let dir = dir.mkdir("outside");
        fs::write(dir.join("precious"), b"must stay as it is").unwrap();
        Outside { dir }
    }

    fn file(&self) -> PathBuf {
        self.dir.join("precious")
    }

    #[track_caller]
    fn assert_untouched(&self) {
        let mut names: Vec<String> =
            fs::read_dir(&self.dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, ["precious"], "rill created something outside the download directory");
        assert_eq!(fs::read(self.file()).unwrap(), b"must stay as it is", "rill wrote to a file outside");
    }
}

/// Runs rill (no `RUST_LOG`: only what it says by default) until it exits, with the seeder (if any) checked to be
/// alive meanwhile.
#[track_caller]
fn run_rill(dir: &TempDir, cmd: &mut Command, seeders: &[&dyn Peer], deadline: Instant) -> (Proc, i32) {
    cmd.env_remove("RUST_LOG");
    let rill = spawn_rill(dir.path(), "rill", cmd, deadline);
    let status = wait_with_peers(seeders, deadline, "rill to exit", || rill.exited());
    let code = status.code().unwrap_or_else(|| panic!("rill did not exit by itself: {}", describe(status)));
    (rill, code)
}

/// rill exited 1 with exactly one line on stderr, `rill: refusing PATH: …`, naming `path` and saying `what`.
#[track_caller]
fn assert_refused(rill: &Proc, code: i32, path: &Path, what: &str) {
    let stderr = rill.stderr();
    assert_eq!(code, 1, "rill should exit 1, not {code}; stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr, got:\n{stderr}");
    let line = lines[0];
    let named = format!("rill: refusing {}: ", path.display());
    assert!(line.starts_with(&named), "{line:?} does not start with {named:?}");
    assert!(line.contains(what), "{line:?} does not say {what:?}");
}

/// The refusal scenario: the tree under `out`, prepared by `plant`, with a seeder ready to send everything.
#[track_caller]
fn refuses(label: &str, plant: impl FnOnce(&Path, &Torrent, &Outside) -> PathBuf) {
    let deadline = deadline_in(60);
    let dir = TempDir::new(label);
    let content = content::write_tree(&dir.mkdir("content"), "hostile", TREE, 0x5_1AB);
    let t = make_torrent(&dir, &content, 32, deadline);
    let lt = seeder(&dir, &content, &t, 0, deadline);
    let outside = Outside::new(&dir);
    let out = dir.mkdir("out");
    let planted = plant(&out, &t, &outside);
    let mut cmd = rill_download_command(&t, &out, free_port(), &[lt.addr()], &[]);
    let (rill, code) = run_rill(&dir, &mut cmd, &[&lt], deadline);
    assert_refused(&rill, code, &planted, "a symbolic link");
    outside.assert_untouched();
    assert!(fs::symlink_metadata(&planted).unwrap().file_type().is_symlink(), "the planted link was replaced");
    println!("{label}: {}; {}", rill.stderr().trim(), describe_peers(&[&lt]));
}

fn symlink(target: &Path, link: &Path) {
    fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, link).unwrap_or_else(|e| panic!("symlink {}: {e}", link.display()));
}

#[test]
fn a_symlink_at_a_data_file_is_refused_and_nothing_outside_is_written() {
    refuses("hostile-link-file", |out, _, outside| {
        let link = out.join("hostile/sub/b.bin");
        symlink(&outside.file(), &link);
        link
    });
}

#[test]
fn a_symlink_at_a_folder_of_the_tree_is_refused_and_nothing_is_created_through_it() {
    refuses("hostile-link-folder", |out, _, outside| {
        let link = out.join("hostile/sub");
        symlink(&outside.dir, &link);
        link
    });
}

#[test]
fn a_dangling_symlink_at_a_data_file_is_refused_and_its_target_never_created() {
    refuses("hostile-link-dangling", |out, _, outside| {
        let link = out.join("hostile/a.bin");
        symlink(&outside.dir.join("created-through-the-link"), &link);
        link
    });
}

#[test]
fn a_symlink_at_the_temporary_resume_name_is_refused() {
    refuses("hostile-link-resume-tmp", |out, t, outside| {
        let mut name = resume_path(out, t).into_os_string();
        name.push(".tmp");
        let link = PathBuf::from(name);
        symlink(&outside.file(), &link);
        link
    });
}

// ---- the resume file ------------------------------------------------------------------------------------------

/// `prlimit --as=LIMIT -- <cmd>`: rill under an address-space limit (prlimit execs it, keeping the PID).
fn under_memory_limit(cmd: &Command) -> Command {
    require_tool("prlimit", "util-linux");
    let mut limited = Command::new("prlimit");
    limited.arg(format!("--as={ADDRESS_SPACE_LIMIT}")).arg("--").arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => limited.env(k, v),
            None => limited.env_remove(k),
        };
    }
    limited
}

/// A resume file of 4 GiB (sparse) is not read: rill warns, checks the data instead and completes the download
/// from the seeder, within its address-space limit; the resume file it leaves is a normal one.
#[test]
fn a_huge_resume_file_is_ignored_with_a_warning_and_the_download_completes() {
    let deadline = deadline_in(60);
    let dir = TempDir::new("hostile-resume-huge");
    let content = content::write_tree(&dir.mkdir("content"), "hostile", TREE, 0x5_1AC);
    let t = make_torrent(&dir, &content, 32, deadline);
    let lt = seeder(&dir, &content, &t, 0, deadline);
    let out = dir.mkdir("out");
    let resume = resume_path(&out, &t);
    fs::File::create(&resume).unwrap().set_len(4 << 30).unwrap();
    let cmd = rill_download_command(&t, &out, free_port(), &[lt.addr()], &[]);
    let (rill, code) = run_rill(&dir, &mut under_memory_limit(&cmd), &[&lt], deadline);
    let stderr = rill.stderr();
    assert_eq!(code, 0, "rill should complete despite a huge resume file; stderr:\n{stderr}");
    assert_same_tree(&content.path(), &out.join(&t.name));
    let warning = stderr.lines().find(|l| l.contains("WARN") && l.contains(&*resume.to_string_lossy()));
    assert!(
        warning.is_some_and(|w| w.contains("checking the data")),
        "no warning naming {}:\n{stderr}",
        resume.display()
    );
    let size = fs::metadata(&resume).unwrap().len();
    assert!(size < 64 * KIB, "the resume file was not rewritten: {size} bytes");
    assert_eq!(resume_pieces(&resume), Some(t.num_pieces as u32), "the new resume file records every piece");
    println!("huge resume file: {}", warning.unwrap_or_default());
}

/// The resume-file scenario without data: rill must stop at once (exit 1, one line naming the file) and never
/// hang on the file or read it.
#[track_caller]
fn refuses_resume_file(label: &str, plant: impl FnOnce(&Path), what: &str) {
    let deadline = deadline_in(30);
    let dir = TempDir::new(label);
    let content = content::write_tree(&dir.mkdir("content"), "hostile", TREE, 0x5_1AD);
    let t = make_torrent(&dir, &content, 32, deadline);
    let out = dir.mkdir("out");
    let resume = resume_path(&out, &t);
    plant(&resume);
    let cmd = rill_download_command(&t, &out, free_port(), &[], &[]);
    let started = Instant::now();
    let (rill, code) = run_rill(&dir, &mut under_memory_limit(&cmd), &[], deadline_within(deadline, 15));
    assert_refused(&rill, code, &resume, what);
    println!("{label}: exit 1 after {:.2} s: {}", started.elapsed().as_secs_f64(), rill.stderr().trim());
}

#[test]
fn a_fifo_at_the_resume_file_is_an_error_not_a_hang() {
    refuses_resume_file(
        "hostile-resume-fifo",
        |resume| {
            require_tool("mkfifo", "coreutils");
            let mut cmd = Command::new("mkfifo");
            cmd.arg(resume);
            run_tool("mkfifo", &cmd, &resume.parent().unwrap().join("../logs"), deadline_in(10));
        },
        "a FIFO, not a regular file",
    );
}

#[test]
fn a_resume_file_linked_to_dev_zero_is_an_error_in_bounded_memory() {
    refuses_resume_file("hostile-resume-dev-zero", |resume| symlink(Path::new("/dev/zero"), resume), "a symbolic link");
}

// ---- long names, vanished files --------------------------------------------------------------------------------

/// A torrent named with 250 bytes: `.<name>.rill-resume` would not fit a file name; the resume file is named by
/// the info-hash, so the download completes and leaves a resume file.
#[test]
fn a_torrent_name_of_250_bytes_downloads_to_completion() {
    let deadline = deadline_in(60);
    let dir = TempDir::new("hostile-long-name");
    let name = format!("{}-long-name", "x".repeat(240));
    assert_eq!(name.len(), 250);
    let files: &[(&str, u64)] = &[("part.bin", 700_001), ("sub/more.bin", 300_007)];
    let content = content::write_tree(&dir.mkdir("content"), &name, files, 0x250);
    let t = make_torrent(&dir, &content, 64, deadline);
    assert_eq!(t.name, name);
    // libtorrent cuts every path element to 240 bytes on disk (its name has no extension to keep): its copy of the
    // data sits under the cut name.
    let data = dir.mkdir("seed-data");
    content::copy_tree(&content.path(), &data.join(&name[..240]));
    let lt = LibtorrentPeer::seed(dir.path(), "libtorrent", &t, &data, 0, deadline);
    let out = dir.mkdir("out");
    let mut cmd = rill_download_command(&t, &out, free_port(), &[lt.addr()], &[]);
    let (rill, code) = run_rill(&dir, &mut cmd, &[&lt], deadline);
    assert_eq!(code, 0, "rill failed on a 250-byte torrent name:\n{}", rill.stderr());
    // rill cuts a path element over 240 bytes too (keeping an extension; this name has none), as libtorrent does.
    assert_same_tree(&content.path(), &out.join(&name[..240]));
    assert_eq!(resume_pieces(&resume_path(&out, &t)), Some(t.num_pieces as u32), "no complete resume file");
    println!("250-byte name: {}", rill.stdout().lines().last().unwrap_or_default());
}

/// A data file deleted while a throttled seeder is still sending: rill says so within seconds (exit 1, one line
/// naming the file), long before the download could have ended.
#[test]
fn a_data_file_deleted_during_the_download_is_reported_within_seconds() {
    let deadline = deadline_in(90);
    let dir = TempDir::new("hostile-vanished");
    let content = content::write_single(&dir.mkdir("content"), "victim.bin", 6 * MIB + 4_097, 0xDE1);
    let t = make_torrent(&dir, &content, 64, deadline);
    let rate = 300_000;
    let lt = seeder(&dir, &content, &t, rate, deadline);
    let out = dir.mkdir("out");
    let data = out.join(&t.name);
    let cmd = rill_download_command(&t, &out, free_port(), &[lt.addr()], &[]);
    let rill = spawn_rill(dir.path(), "rill", &cmd, deadline);
    wait_with_peers(&[&lt], deadline, "the seeder to have sent 15 % of the torrent to rill", || {
        rill.assert_running();
        (lt.uploaded_bytes() >= t.total_length * 15 / 100 && data.exists()).then_some(())
    });
    fs::remove_file(&data).unwrap();
    let deleted = Instant::now();
    let status =
        wait_with_peers(&[&lt], deadline_within(deadline, 20), "rill to notice the deleted file", || rill.exited());
    let took = deleted.elapsed();
    let stderr = rill.stderr();
    assert_eq!(status.code(), Some(1), "rill should exit 1, not {}; stderr:\n{stderr}", describe(status));
    assert!(took <= VANISHED_WITHIN, "rill took {:.1} s to notice the deleted file", took.as_secs_f64());
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "exactly one error line, got:\n{}", errors.join("\n"));
    let named = format!("rill: file vanished: {}: ", data.display());
    assert!(errors[0].starts_with(&named), "{:?} does not start with {named:?}", errors[0]);
    let left = t.total_length.saturating_sub(lt.uploaded_bytes());
    assert!(left > 0, "the download had ended anyway");
    println!(
        "deleted at {:.0} %: rill exited 1 after {:.2} s ({:.1} s of data still to come): {}",
        (t.total_length - left) as f64 * 100.0 / t.total_length as f64,
        took.as_secs_f64(),
        left as f64 / rate as f64,
        errors[0]
    );
    assert!(!data.exists(), "rill recreated the deleted file");
}
