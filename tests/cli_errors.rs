//! The CLI's contract for bad input (issue 3): a malformed torrent or bad usage gives exit code 2 and a one-line
//! error on stderr, and writes nothing. Plus `rill info` on a good torrent, whose info-hash must come from the raw
//! bytes of `info` (unknown keys included).

mod common;

use std::path::Path;

use common::bencode::{self, Value};
use common::content::is_empty_dir;
use common::{deadline_in, free_port, rill_command, Proc, TempDir};

/// What a run of rill left: exit code, stdout, stderr.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `rill ARGS…` to completion (20 s at most), with `RUST_LOG` unset so that only rill's own messages appear.
fn rill(dir: &Path, label: &str, args: &[&str]) -> Run {
    let mut cmd = rill_command();
    cmd.args(args).env_remove("RUST_LOG").current_dir(dir);
    let p = Proc::spawn(label, &cmd, &dir.join("logs"), std::time::Duration::from_secs(25));
    let status = p.wait_exit(deadline_in(20));
    Run { code: status.code(), stdout: p.stdout(), stderr: p.stderr() }
}

#[track_caller]
fn assert_usage_error(run: &Run, what: &str) {
    assert_eq!(run.code, Some(2), "{what}: expected exit code 2, got {:?}; stderr: {:?}", run.code, run.stderr);
    let lines: Vec<&str> = run.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{what}: expected a one-line error on stderr, got {:?}", run.stderr);
}

/// A well-formed info dictionary of a multi-file torrent, 3 pieces of 16 KiB over 40,000 bytes.
fn good_info() -> Value {
    Value::dict(vec![
        (
            "files",
            Value::List(vec![
                Value::dict(vec![
                    ("length", Value::int(30_000)),
                    ("path", Value::List(vec![Value::str("a"), Value::str("b.bin")])),
                ]),
                Value::dict(vec![("length", Value::int(10_000)), ("path", Value::List(vec![Value::str("c.bin")]))]),
            ]),
        ),
        ("name", Value::str("good")),
        ("piece length", Value::int(16_384)),
        ("pieces", Value::Bytes(vec![0xAB; 60])),
    ])
}

fn torrent_with_info(info: Value) -> Vec<u8> {
    Value::dict(vec![("announce", Value::str("http://127.0.0.1:1/announce")), ("info", info)]).encode()
}

fn with_file_path(path: Vec<Value>) -> Vec<u8> {
    let mut info = good_info();
    info.set(
        "files",
        Value::List(vec![
            Value::dict(vec![("length", Value::int(30_000)), ("path", Value::List(path))]),
            Value::dict(vec![("length", Value::int(10_000)), ("path", Value::List(vec![Value::str("c.bin")]))]),
        ]),
    );
    torrent_with_info(info)
}

fn malformed_torrents() -> Vec<(&'static str, Vec<u8>)> {
    let mut cases: Vec<(&'static str, Vec<u8>)> = vec![
        ("not bencode", b"this is not a torrent file\n".to_vec()),
        ("truncated bencode", {
            let t = torrent_with_info(good_info());
            t[..t.len() / 2].to_vec()
        }),
        // Odd but harmless paths (`..`, `.`, empty components, separators, NUL, a `..` name) are mapped to safe
        // names, not refused: tests/metainfo_sanitise.rs. What cannot be mapped is still refused.
        ("a path that is not a list of strings", with_file_path(vec![Value::int(7)])),
        ("an empty path list", with_file_path(vec![])),
        ("a single-file torrent whose name is only NULs", {
            let info = Value::dict(vec![
                ("length", Value::int(40_000)),
                ("name", Value::str("\0\0\0\0")),
                ("piece length", Value::int(16_384)),
                ("pieces", Value::Bytes(vec![0xAB; 60])),
            ]);
            torrent_with_info(info)
        }),
        ("no name", {
            let mut info = good_info();
            if let Value::Dict(d) = &mut info {
                d.retain(|(k, _)| k != b"name");
            }
            torrent_with_info(info)
        }),
    ];
    let mut info = good_info();
    info.set("piece length", Value::int(0));
    cases.push(("piece length 0", torrent_with_info(info)));
    let mut info = good_info();
    info.set("pieces", Value::Bytes(vec![0xAB; 59]));
    cases.push(("pieces not a multiple of 20", torrent_with_info(info)));
    let mut info = good_info();
    info.set("pieces", Value::Bytes(vec![0xAB; 40]));
    cases.push(("pieces inconsistent with the total length", torrent_with_info(info)));
    cases.push(("negative file length", {
        let mut info = good_info();
        info.set(
            "files",
            Value::List(vec![Value::dict(vec![
                ("length", Value::int(-5)),
                ("path", Value::List(vec![Value::str("n")])),
            ])]),
        );
        torrent_with_info(info)
    }));
    cases.push((
        "no info dictionary",
        Value::dict(vec![("announce", Value::str("http://127.0.0.1:1/announce"))]).encode(),
    ));
    cases.push(("v2-only torrent", {
        let info = Value::dict(vec![
            (
                "file tree",
                Value::dict(vec![(
                    "f.bin",
                    Value::dict(vec![(
                        "",
                        Value::dict(vec![("length", Value::int(1000)), ("pieces root", Value::Bytes(vec![7; 32]))]),
                    )]),
                )]),
            ),
            ("meta version", Value::int(2)),
            ("name", Value::str("v2only")),
            ("piece length", Value::int(16_384)),
        ]);
        torrent_with_info(info)
    }));
    cases
}

#[test]
fn malformed_torrents_exit_2_with_one_line_and_write_nothing() {
    let dir = TempDir::new("cli-malformed");
    let mut failures = Vec::new();
    for (i, (what, bytes)) in malformed_torrents().into_iter().enumerate() {
        let torrent = dir.join(format!("bad{i}.torrent"));
        std::fs::write(&torrent, &bytes).unwrap();
        let out = dir.mkdir(format!("out{i}"));
        let (t, o, port) = (torrent.to_string_lossy().into_owned(), out.to_string_lossy().into_owned(), free_port());
        let run = rill(
            dir.path(),
            &format!("download{i}"),
            &["download", &t, "-d", &o, "--no-ui", "--port", &port.to_string()],
        );
        let check = std::panic::catch_unwind(|| {
            assert_usage_error(&run, &format!("download, {what}"));
            assert!(is_empty_dir(&out), "download, {what}: wrote into the output dir");
        });
        if check.is_err() {
            failures.push(format!("download with a torrent with {what}"));
        }
        let run = rill(dir.path(), &format!("info{i}"), &["info", &t]);
        if std::panic::catch_unwind(|| assert_usage_error(&run, &format!("info, {what}"))).is_err() {
            failures.push(format!("info with a torrent with {what}"));
        }
    }
    assert!(failures.is_empty(), "rill did not exit 2 with a one-line error for: {failures:#?}");
}

#[test]
fn bad_usage_exits_2() {
    let dir = TempDir::new("cli-usage");
    let good = dir.join("good.torrent");
    std::fs::write(&good, torrent_with_info(good_info())).unwrap();
    let g = good.to_string_lossy().into_owned();
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("no arguments", vec![]),
        ("unknown subcommand", vec!["frobnicate"]),
        ("download without a torrent", vec!["download"]),
        ("unknown flag", vec!["download", &g, "--no-such-flag"]),
        ("bad port", vec!["download", &g, "--port", "not-a-port"]),
        ("info without a torrent", vec!["info"]),
        ("one file for --trace and --stats-json", vec!["download", &g, "--trace", "x", "--stats-json", "x"]),
    ];
    for (i, (what, args)) in cases.iter().enumerate() {
        let run = rill(dir.path(), &format!("usage{i}"), args);
        assert_usage_error(&run, what);
    }
    // Nothing was downloaded into the working directory by the bad `download` calls.
    let stray: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "good.torrent" && n != "logs")
        .collect();
    assert!(stray.is_empty(), "bad usage left files behind: {stray:?}");
}

/// `--trace` or `--stats-json` where nothing can be written: exit 1 with one line naming the path, before the
/// engine runs (so no trace is silently lost).
#[test]
fn unwritable_trace_or_stats_file_exits_1_with_one_line() {
    let dir = TempDir::new("cli-trace-path");
    let good = dir.join("good.torrent");
    std::fs::write(&good, torrent_with_info(good_info())).unwrap();
    let g = good.to_string_lossy().into_owned();
    let missing = dir.join("no-such-dir").join("out.json").to_string_lossy().into_owned();
    let out = dir.join("out").to_string_lossy().into_owned();
    let port = free_port().to_string();
    for flag in ["--trace", "--stats-json"] {
        let args = ["download", &g, "-d", &out, "--no-ui", "--no-dht", "--port", &port, flag, &missing];
        let run = rill(dir.path(), flag.trim_start_matches('-'), &args);
        assert_eq!(run.code, Some(1), "{flag}: exit {:?}, stderr {:?}", run.code, run.stderr);
        let lines: Vec<&str> = run.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{flag}: {:?}", run.stderr);
        assert!(lines[0].contains("cannot write") && lines[0].contains("no-such-dir"), "{flag}: {}", lines[0]);
    }
}

#[test]
fn help_exits_0() {
    let dir = TempDir::new("cli-help");
    for args in [vec!["--help"], vec!["download", "--help"]] {
        let run = rill(dir.path(), "help", &args);
        assert_eq!(run.code, Some(0), "rill {args:?}: exit {:?}, stderr {:?}", run.code, run.stderr);
        assert!(run.stdout.contains("download"), "rill {args:?} does not mention `download`: {}", run.stdout);
    }
}

/// `rill info` shows the info-hash of the raw `info` bytes: unknown keys (`source`, `x_cross_seed`) are part of it.
#[test]
fn info_shows_name_and_raw_info_hash() {
    let dir = TempDir::new("cli-info");
    let mut info = good_info();
    info.set("source", Value::str("RILLTEST"));
    info.set("x_cross_seed", Value::str("abc123"));
    let bytes = torrent_with_info(info);
    let path = dir.join("unknown-keys.torrent");
    std::fs::write(&path, &bytes).unwrap();
    let run = rill(dir.path(), "info", &["info", &path.to_string_lossy()]);
    assert_eq!(run.code, Some(0), "rill info: exit {:?}, stderr {:?}", run.code, run.stderr);
    let hash = bencode::hex(&bencode::info_hash(&bytes));
    assert!(
        run.stdout.to_ascii_lowercase().contains(&hash),
        "rill info does not show info-hash {hash}:\n{}",
        run.stdout
    );
    assert!(run.stdout.contains("good"), "rill info does not show the name:\n{}", run.stdout);
    assert!(
        run.stdout.contains("b.bin") && run.stdout.contains("c.bin"),
        "rill info does not list the files:\n{}",
        run.stdout
    );
}

/// `rill info MAGNET` (issue 11): prints what the link holds, exit 0; a malformed link is one line, exit 2.
#[test]
fn info_on_magnet_links() {
    let dir = TempDir::new("cli-magnet");
    let good = "magnet:?xt=urn:btih:YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK&dn=My+Name&tr=udp%3A%2F%2F127.0.0.1%3A6969\
                &x.pe=[::1]:6881&ws=http://127.0.0.1:8000/";
    let run = rill(dir.path(), "info-magnet", &["info", good]);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    for want in [
        "name:       My Name",
        "info-hash:  c12fe1c06bba254a9dc9f519b335aa7c1367a88a",
        "1  udp://127.0.0.1:6969",
        "1  [::1]:6881",
        "1  http://127.0.0.1:8000/",
    ] {
        assert!(run.stdout.contains(want), "missing {want:?} in:\n{}", run.stdout);
    }
    for (link, what) in [
        ("magnet:?dn=no-hash", "no xt=urn:btih"),
        ("magnet:?xt=urn:btih:1234", "bad info-hash"),
        ("magnet:?xt=urn:btmh:1220aaaa", "v2-only magnet links are not supported"),
        ("magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a&x.pe=nope", "bad peer address"),
        ("magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a&tr=%G0", "percent-encoding"),
    ] {
        let run = rill(dir.path(), "info-bad-magnet", &["info", link]);
        assert_usage_error(&run, link);
        assert!(run.stderr.contains(what), "{link}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{link}: printed {}", run.stdout);
    }
}
