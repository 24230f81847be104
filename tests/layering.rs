//! The sans-I/O boundary, enforced (STYLE §7.3 rule 1): scans `src/**/*.rs` and fails, listing
//! `file:line`, when
//! - anything outside `src/event_loop/` names mio or a socket type;
//! - anything outside `src/time.rs` and `src/main.rs` reads the clock (`Instant::now`, `SystemTime::now`),
//!   or anything outside `src/event_loop/` and `src/time.rs` names the loop's `Clock`;
//! - anything outside `src/storage/` opens files (`std::fs`, `File::open`, `OpenOptions`,
//!   `rustix::fs`);
//! - anything outside the named places starts a thread (the storage helpers, the DNS helper and the
//!   stdout writer);
//! - a top-level module imports one above it in [`LAYERS`] (arrows between modules point one way, down);
//! - anything outside `src/rng.rs` reads OS entropy (`getrandom`, `/dev/urandom`): machines get an
//!   `rng::Entropy`, so tests can hand them a seeded one;
//! - anything outside `src/observe/` and `src/main.rs` prints (`println!`, `print!`, `eprintln!`, `eprint!`,
//!   `io::stdout`, `io::stderr`): the loop must never block on a slow terminal or pipe;
//! - anything outside `src/storage/verify.rs` makes a `VerifiedPiece` (`VerifiedPiece::new`): holding one
//!   proves the piece's hash was checked.
//!
//! Comment lines (`//`, `//!`, `///`) are ignored. Test-only code (`#[cfg(test)]` modules, inline or in
//! their own files) is a driver like the loop and may make temporary directories, start threads, print and
//! vouch for pieces, so it is exempt from those rules: it must still never read the clock or open a socket.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::path::Path;

/// One boundary: these names may appear only under the `allowed` path prefixes.
struct Rule {
    name: &'static str,
    needles: &'static [&'static str],
    allowed: &'static [&'static str],
    /// Whether `#[cfg(test)]` code is exempt.
    test_code_exempt: bool,
}

const RULES: &[Rule] = &[
    Rule {
        name: "sockets outside the event loop",
        needles: &["mio::", "mio ::", "use mio", "std::net::Tcp", "UdpSocket", "TcpStream", "TcpListener"],
        allowed: &["src/event_loop/"],
        test_code_exempt: false,
    },
    Rule {
        name: "clock read outside time.rs",
        needles: &["Instant::now", "SystemTime::now"],
        allowed: &["src/time.rs", "src/main.rs"],
        test_code_exempt: false,
    },
    Rule {
        name: "the loop's Clock outside the event loop",
        needles: &["Clock"],
        allowed: &["src/event_loop/", "src/time.rs"],
        test_code_exempt: false,
    },
    Rule {
        name: "OS entropy outside rng.rs",
        needles: &["getrandom", "/dev/urandom", "/dev/random"],
        allowed: &["src/rng.rs"],
        test_code_exempt: false,
    },
    Rule {
        name: "file access outside storage",
        needles: &["std::fs", "File::open", "File::create", "OpenOptions", "rustix::fs"],
        allowed: &["src/storage/"],
        test_code_exempt: true,
    },
    Rule {
        name: "a thread outside the places the README names",
        needles: &["thread::spawn", "thread::Builder", "std::thread"],
        allowed: &["src/storage/", "src/event_loop/trackers.rs", "src/observe/output.rs", "src/observe/trace.rs"],
        test_code_exempt: true,
    },
    Rule {
        name: "printing outside observe and main",
        needles: &["println!", "print!", "eprintln!", "eprint!", "io::stdout", "io::stderr", "std::io::stdout"],
        allowed: &["src/observe/", "src/main.rs"],
        test_code_exempt: true,
    },
    Rule {
        name: "a VerifiedPiece made outside storage's verify",
        needles: &["VerifiedPiece::new"],
        allowed: &["src/storage/verify.rs"],
        test_code_exempt: true,
    },
];

/// The top-level modules of `src/`, lowest first: each may import only those before it.
const LAYERS: &[&str] = &[
    "time",
    "rng",
    "bitfield",
    "bencode",
    "geometry",
    "verdict",
    "http",
    "metainfo",
    "magnet",
    "wire",
    "metadata",
    "dht",
    "timer_wheel",
    "utp",
    "swarm",
    "peer",
    "tracker",
    "storage",
    "torrent",
    "engine",
    "rpc",
    "observe",
    "daemon",
    "cli",
    "event_loop",
];

/// The top-level module a file belongs to (`src/peer/session.rs` → `peer`); `None` for the crate roots.
fn top_module(file: &str) -> Option<&str> {
    let rest = file.strip_prefix("src/")?;
    let top = rest.split('/').next()?;
    let top = top.strip_suffix(".rs").unwrap_or(top);
    (!matches!(top, "lib" | "main")).then_some(top)
}

/// The top-level modules a line names through `crate::`: `crate::a::b`, `use crate::{a, b::c};`.
fn crate_refs(line: &str) -> Vec<String> {
    let mut refs = vec![];
    for (at, _) in line.match_indices("crate::") {
        let rest = &line[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or("");
            for item in group.split(',') {
                let name: String = item.trim().chars().take_while(|&c| is_ident(c)).collect();
                if !name.is_empty() && name != "self" {
                    refs.push(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
            if !name.is_empty() {
                refs.push(name);
            }
        }
    }
    refs
}

/// Imports that point up (or sideways into an unlisted module), outside test code.
fn upward_imports(files: &[(String, String)]) -> Vec<Violation> {
    let mut test_bases: HashSet<String> = HashSet::new();
    for (file, source) in files {
        test_bases.extend(test_code(file, source).1);
    }
    let layer = |m: &str| LAYERS.iter().position(|l| *l == m);
    let mut found = vec![];
    for (file, source) in files {
        let Some(top) = top_module(file) else { continue };
        if test_bases.iter().any(|base| file == &format!("{base}.rs") || file.starts_with(&format!("{base}/"))) {
            continue;
        }
        let (test_lines, _) = test_code(file, source);
        for (n, line) in source.lines().enumerate() {
            if is_comment(line) || test_lines[n] {
                continue;
            }
            for target in crate_refs(line) {
                if target == top {
                    continue;
                }
                let ok = match (layer(top), layer(&target)) {
                    (Some(from), Some(to)) => to < from,
                    _ => false,
                };
                if !ok {
                    found.push(Violation {
                        file: file.clone(),
                        line: n + 1,
                        rule: "an import that points up (or into a module missing from LAYERS)",
                        text: line.trim().to_string(),
                    });
                }
            }
        }
    }
    found
}

#[derive(Debug, PartialEq, Eq)]
struct Violation {
    file: String,
    line: usize,
    rule: &'static str,
    text: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}: `{}`", self.file, self.line, self.rule, self.text)
    }
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// `needle` occurs in `line` as a whole name: not the tail or head of a longer identifier.
fn mentions(line: &str, needle: &str) -> bool {
    line.match_indices(needle).any(|(at, _)| {
        let before_ok = !needle.starts_with(is_ident) || !line[..at].chars().next_back().is_some_and(is_ident);
        let after_ok = !needle.ends_with(is_ident) || !line[at + needle.len()..].chars().next().is_some_and(is_ident);
        before_ok && after_ok
    })
}

/// `use std::{fs, io};` names `std::fs` without spelling it.
fn imports_fs_in_a_group(line: &str) -> bool {
    let Some(rest) = line.trim_start().strip_prefix("use std::{") else {
        return false;
    };
    rest.split(|c: char| !is_ident(c)).any(|word| word == "fs")
}

/// `use std::io::{self, stdout};` names `io::stdout` without spelling it.
fn imports_stdio_in_a_group(line: &str) -> bool {
    let Some(rest) = line.trim_start().strip_prefix("use std::io::{") else {
        return false;
    };
    rest.split(|c: char| !is_ident(c)).any(|word| word == "stdout" || word == "stderr")
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with("//")
}

/// Where the module declared by `mod name;` in `file` lives, as a directory prefix and a file stem.
fn child_module_base(file: &str, name: &str) -> String {
    let (dir, base) = file.rsplit_once('/').unwrap_or(("", file));
    if matches!(base, "lib.rs" | "main.rs" | "mod.rs") {
        format!("{dir}/{name}")
    } else {
        format!("{dir}/{}/{name}", base.trim_end_matches(".rs"))
    }
}

/// Lines of `source` inside `#[cfg(test)] mod … { … }` blocks, and the modules declared test-only as
/// `#[cfg(test)] mod name;` (returned as path bases, see `child_module_base`).
fn test_code(file: &str, source: &str) -> (Vec<bool>, Vec<String>) {
    let lines: Vec<&str> = source.lines().collect();
    let mut inside = vec![false; lines.len()];
    let mut children = vec![];
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() != "#[cfg(test)]" {
            i += 1;
            continue;
        }
        // The item the attribute applies to, past further attributes and comments.
        let mut j = i + 1;
        while j < lines.len() && (lines[j].trim().starts_with("#[") || is_comment(lines[j])) {
            j += 1;
        }
        let Some(item) = lines.get(j).map(|l| l.trim()) else {
            break;
        };
        let decl = item.trim_start_matches("pub(crate) ").trim_start_matches("pub(super) ").trim_start_matches("pub ");
        if let Some(name) = decl.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
            children.push(child_module_base(file, name.trim()));
            i = j + 1;
            continue;
        }
        // An inline item: mark it up to its closing brace (braces in comments are skipped; the few in
        // strings are balanced format placeholders).
        let mut depth = 0i32;
        let mut opened = false;
        let mut k = i;
        while k < lines.len() {
            inside[k] = true;
            if !is_comment(lines[k]) {
                for c in lines[k].chars() {
                    match c {
                        '{' => {
                            depth += 1;
                            opened = true;
                        }
                        '}' => depth -= 1,
                        _ => {}
                    }
                }
            }
            if (opened && depth <= 0) || (!opened && lines[k].trim_end().ends_with(';')) {
                break;
            }
            k += 1;
        }
        i = k + 1;
    }
    (inside, children)
}

/// Checks one file. `test_only_file` is true for a file whose whole module is `#[cfg(test)]`.
fn scan_file(file: &str, source: &str, test_only_file: bool) -> Vec<Violation> {
    let (test_lines, _) = test_code(file, source);
    let mut found = vec![];
    for (n, line) in source.lines().enumerate() {
        if is_comment(line) {
            continue;
        }
        let in_test_code = test_only_file || test_lines[n];
        for rule in RULES {
            if rule.allowed.iter().any(|prefix| file.starts_with(prefix)) {
                continue;
            }
            if rule.test_code_exempt && in_test_code {
                continue;
            }
            let hit = rule.needles.iter().any(|needle| mentions(line, needle))
                || (rule.needles.contains(&"std::fs") && imports_fs_in_a_group(line))
                || (rule.needles.contains(&"io::stdout") && imports_stdio_in_a_group(line));
            if hit {
                found.push(Violation {
                    file: file.to_string(),
                    line: n + 1,
                    rule: rule.name,
                    text: line.trim().to_string(),
                });
            }
        }
    }
    found
}

/// Checks a whole tree of `(path relative to the crate, source)` pairs.
fn scan_tree(files: &[(String, String)]) -> Vec<Violation> {
    let mut test_bases: HashSet<String> = HashSet::new();
    for (file, source) in files {
        test_bases.extend(test_code(file, source).1);
    }
    let is_test_only = |file: &str| {
        test_bases.iter().any(|base| file == format!("{base}.rs") || file.starts_with(&format!("{base}/")))
    };
    files.iter().flat_map(|(file, source)| scan_file(file, source, is_test_only(file))).collect()
}

/// Every `.rs` file under `dir`, as paths relative to `root` with `/` separators.
fn collect_sources(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect_sources(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).expect("under the crate root");
            let rel = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            let source = fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            out.push((rel, source));
        }
    }
}

fn crate_sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![];
    collect_sources(root, &root.join("src"), &mut files);
    files.sort();
    files
}

// ---- the real tree --------------------------------------------------------------------------------

#[test]
fn src_respects_the_sans_io_layering() {
    let violations = scan_tree(&crate_sources());
    let listing: Vec<String> = violations.iter().map(ToString::to_string).collect();
    assert!(violations.is_empty(), "layering violations (STYLE §7.3 rule 1):\n{}", listing.join("\n"));
}

#[test]
fn top_level_modules_import_only_downward() {
    let violations = upward_imports(&crate_sources());
    let listing: Vec<String> = violations.iter().map(ToString::to_string).collect();
    assert!(
        violations.is_empty(),
        "imports against the module order (tests/layering.rs LAYERS):\n{}",
        listing.join("\n")
    );
}

#[test]
fn every_top_level_module_has_a_layer() {
    let files = crate_sources();
    let mut tops: Vec<&str> = files.iter().filter_map(|(f, _)| top_module(f)).collect();
    tops.sort();
    tops.dedup();
    let missing: Vec<&&str> = tops.iter().filter(|t| !LAYERS.contains(t) && **t != "sim").collect();
    assert!(missing.is_empty(), "add these modules to LAYERS in tests/layering.rs: {missing:?}");
}

#[test]
fn the_walk_sees_the_whole_crate() {
    let files = crate_sources();
    let names: Vec<&str> = files.iter().map(|(f, _)| f.as_str()).collect();
    for expected in [
        "src/lib.rs",
        "src/main.rs",
        "src/time.rs",
        "src/event_loop/mod.rs",
        "src/storage/mod.rs",
        "src/peer/session.rs",
        "src/wire/mod.rs",
    ] {
        assert!(names.contains(&expected), "{expected} not scanned; saw {names:?}");
    }
}

#[test]
fn the_owning_modules_do_use_what_they_own() {
    // If these ever stop matching, the needles have drifted from how the code is written.
    let files = crate_sources();
    let source = |name: &str| &files.iter().find(|(f, _)| f == name).expect(name).1;
    assert!(source("src/time.rs").lines().any(|l| mentions(l, "Instant::now")));
    assert!(source("src/storage/nofollow.rs").lines().any(|l| mentions(l, "rustix::fs")));
    assert!(source("src/rng.rs").lines().any(|l| !is_comment(l) && mentions(l, "getrandom")));
    assert!(source("src/main.rs").lines().any(|l| !is_comment(l) && mentions(l, "io::stdout")));
    assert!(source("src/storage/verify.rs").lines().any(|l| !is_comment(l) && mentions(l, "VerifiedPiece::new")));
    let event_loop = files.iter().filter(|(f, _)| f.starts_with("src/event_loop/"));
    assert!(event_loop.flat_map(|(_, s)| s.lines()).any(|l| mentions(l, "mio::")));
}

// ---- the scanner on fake files --------------------------------------------------------------------

fn fake(files: &[(&str, &str)]) -> Vec<Violation> {
    let files: Vec<(String, String)> = files.iter().map(|(f, s)| (f.to_string(), s.to_string())).collect();
    scan_tree(&files)
}

fn lines_of(violations: &[Violation]) -> Vec<(String, usize)> {
    violations.iter().map(|v| (v.file.clone(), v.line)).collect()
}

#[test]
fn a_socket_in_protocol_code_is_reported_with_file_and_line() {
    let found =
        fake(&[("src/peer/session.rs", "use std::io;\nuse mio::net::TcpStream;\nfn f(s: std::net::TcpStream) {}\n")]);
    assert_eq!(lines_of(&found), [("src/peer/session.rs".to_string(), 2), ("src/peer/session.rs".to_string(), 3)]);
    assert_eq!(
        found[0].to_string(),
        "src/peer/session.rs:2: sockets outside the event loop: `use mio::net::TcpStream;`"
    );
}

#[test]
fn every_socket_spelling_is_caught() {
    for line in [
        "use mio;",
        "let p = mio :: Poll::new();",
        "let s: UdpSocket;",
        "TcpListener::bind(a)",
        "use std::net::TcpStream;",
        "use mio::{Interest, Token};",
    ] {
        assert_eq!(fake(&[("src/tracker/udp.rs", line)]).len(), 1, "missed `{line}`");
    }
}

#[test]
fn names_that_merely_contain_a_needle_are_not_reported() {
    let found =
        fake(&[("src/tracker/mod.rs", "let kimio::x = 1; struct MyTcpStreamish; let clock_like = ClockSkew;\n")]);
    assert_eq!(found, []);
}

#[test]
fn a_clock_read_outside_time_is_reported() {
    let found = fake(&[
        ("src/swarm/choker.rs", "let t = std::time::Instant::now();\n"),
        ("src/observe/ui.rs", "let w = SystemTime::now();\n"),
        ("src/torrent.rs", "let c = crate::time::Clock::start();\n"),
        ("src/time.rs", "let o = std::time::Instant::now();\n"),
        ("src/main.rs", "let seed = SystemTime::now();\n"),
        ("src/event_loop/mod.rs", "let clock = Clock::start();\n"),
    ]);
    let files: Vec<&str> = found.iter().map(|v| v.file.as_str()).collect();
    assert_eq!(files, ["src/swarm/choker.rs", "src/observe/ui.rs", "src/torrent.rs"]);
}

#[test]
fn file_access_outside_storage_is_reported() {
    let found = fake(&[
        ("src/peer/session.rs", "let f = File::open(p)?;\n"),
        ("src/metainfo.rs", "use std::fs;\n"),
        ("src/tracker/mod.rs", "use std::{fs, io};\n"),
        ("src/observe/trace.rs", "let f = OpenOptions::new();\n"),
        ("src/storage/mod.rs", "use std::fs::{self, File, OpenOptions};\n"),
        ("src/main.rs", "let bytes = std::fs::read(path)?;\n"),
    ]);
    let files: Vec<&str> = found.iter().map(|v| v.file.as_str()).collect();
    assert_eq!(
        files,
        ["src/peer/session.rs", "src/metainfo.rs", "src/tracker/mod.rs", "src/observe/trace.rs", "src/main.rs"]
    );
}

#[test]
fn os_entropy_outside_rng_is_reported_even_in_test_code() {
    let found = fake(&[
        ("src/peer/mod.rs", "getrandom::fill(&mut id[8..])?;\n"),
        ("src/main.rs", "let seed = getrandom::u64()?;\n"),
        ("src/tracker/udp.rs", "#[cfg(test)]\nmod tests {\n    fn t() { let x = getrandom::u32(); }\n}\n"),
        ("src/rng.rs", "getrandom::fill(&mut reserve).map_err(EntropyError)?;\n"),
    ]);
    let files: Vec<&str> = found.iter().map(|v| v.file.as_str()).collect();
    assert_eq!(files, ["src/peer/mod.rs", "src/main.rs", "src/tracker/udp.rs"]);
}

#[test]
fn comment_lines_are_ignored() {
    let found = fake(&[(
        "src/peer/mod.rs",
        "//! Must not: name mio:: or std::fs.\n/// Unlike Instant::now, this is pure.\n    // a TcpStream would go here\n",
    )]);
    assert_eq!(found, []);
}

#[test]
fn test_code_may_make_temp_dirs_but_never_read_the_clock_or_open_sockets() {
    let lib = "pub mod peer;\n#[cfg(test)]\npub mod sim;\n";
    let peer = "pub mod session;\n#[cfg(test)]\nmod tests;\n";
    let inline = "fn f() {}\n#[cfg(test)]\nmod tests {\n    fn g() {\n        std::fs::create_dir_all(d);\n    }\n}\nfn h() { std::fs::read(p); }\n";
    let found = fake(&[
        ("src/lib.rs", lib),
        ("src/peer/mod.rs", peer),
        ("src/sim.rs", "std::fs::create_dir_all(&p);\nlet t = Instant::now();\n"),
        ("src/peer/tests.rs", "std::fs::remove_dir_all(&p);\nuse mio::Poll;\n"),
        ("src/swarm/mod.rs", inline),
        ("src/tracker/mod.rs", "std::fs::read(p);\n"),
    ]);
    assert_eq!(
        lines_of(&found),
        [
            ("src/sim.rs".to_string(), 2),
            ("src/peer/tests.rs".to_string(), 2),
            ("src/swarm/mod.rs".to_string(), 8),
            ("src/tracker/mod.rs".to_string(), 1),
        ]
    );
}

#[test]
fn an_upward_import_is_reported_but_test_code_and_downward_imports_are_not() {
    let files: Vec<(String, String)> = [
        ("src/wire/mod.rs", "use crate::peer::PeerMisbehaved;\nuse crate::{geometry, metainfo::InfoHash};\n"),
        ("src/peer/session.rs", "use crate::wire::{self, Frame};\nuse crate::{swarm, torrent::Torrent};\n"),
        ("src/swarm/mod.rs", "fn f() {}\n#[cfg(test)]\nmod tests {\n    use crate::peer::PeerSession;\n}\n"),
        ("src/newthing.rs", "use crate::time::Timestamp;\n"),
    ]
    .iter()
    .map(|(f, s)| (f.to_string(), s.to_string()))
    .collect();
    let found = upward_imports(&files);
    assert_eq!(
        lines_of(&found),
        [
            ("src/wire/mod.rs".to_string(), 1),
            ("src/peer/session.rs".to_string(), 2),
            ("src/newthing.rs".to_string(), 1),
        ]
    );
}

#[test]
fn protocol_state_importing_storage_is_an_upward_arrow() {
    // `VerifiedPiece` lives in `verdict`, below both: swarm, peer and tracker never need `storage`.
    let files: Vec<(String, String)> = [
        ("src/swarm/mod.rs", "use crate::storage::verify::VerifiedPiece;\nuse crate::verdict::VerifiedPiece;\n"),
        ("src/peer/session.rs", "use crate::storage::Storage;\n"),
        ("src/storage/verify.rs", "use crate::verdict::VerifiedPiece;\nuse crate::geometry::Geometry;\n"),
        ("src/torrent.rs", "use crate::storage::{verify, Storage};\n"),
    ]
    .iter()
    .map(|(f, s)| (f.to_string(), s.to_string()))
    .collect();
    assert_eq!(
        lines_of(&upward_imports(&files)),
        [("src/swarm/mod.rs".to_string(), 1), ("src/peer/session.rs".to_string(), 1)]
    );
}

#[test]
fn a_thread_outside_the_allowed_places_is_reported() {
    let found = fake(&[
        ("src/peer/session.rs", "std::thread::spawn(move || {});\n"),
        ("src/storage/mod.rs", "std::thread::Builder::new().name(n).spawn(f)?;\n"),
        ("src/event_loop/trackers.rs", "let h = std::thread::spawn(f);\n"),
    ]);
    assert_eq!(lines_of(&found), [("src/peer/session.rs".to_string(), 1)]);
}

#[test]
fn printing_outside_observe_and_main_is_reported_but_not_in_test_code() {
    let found = fake(&[
        ("src/peer/mod.rs", "pub mod session;\n#[cfg(test)]\nmod tests;\n"),
        ("src/peer/session.rs", "println!(\"x\");\nprint!(\"y\");\n"),
        ("src/swarm/mod.rs", "eprintln!(\"x\");\neprint!(\"y\");\nlet o = io::stdout();\n"),
        ("src/tracker/mod.rs", "let e = std::io::stderr().lock();\nuse std::io::{self, stdout};\n"),
        ("src/torrent.rs", "let o = std::io::stdout();\nwrite!(out, \"{x}\")?;\nlog::info!(\"x\");\n"),
        ("src/observe/ui.rs", "println!(\"{line}\");\n"),
        ("src/main.rs", "let mut out = std::io::stdout().lock();\neprintln!(\"rill: {e}\");\n"),
        ("src/peer/tests.rs", "println!(\"debugging a test\");\n"),
        ("src/swarm/choker.rs", "fn f() {}\n#[cfg(test)]\nmod tests {\n    fn g() { eprintln!(\"t\"); }\n}\n"),
    ]);
    assert_eq!(
        lines_of(&found),
        [
            ("src/peer/session.rs".to_string(), 1),
            ("src/peer/session.rs".to_string(), 2),
            ("src/swarm/mod.rs".to_string(), 1),
            ("src/swarm/mod.rs".to_string(), 2),
            ("src/swarm/mod.rs".to_string(), 3),
            ("src/tracker/mod.rs".to_string(), 1),
            ("src/tracker/mod.rs".to_string(), 2),
            ("src/torrent.rs".to_string(), 1),
        ]
    );
    assert!(found.iter().all(|v| v.rule == "printing outside observe and main"), "{found:?}");
}

#[test]
fn a_verified_piece_made_outside_storage_verify_is_reported() {
    let found = fake(&[
        ("src/storage/verify.rs", "Ok(matches.then(|| VerifiedPiece::new(piece)))\n"),
        ("src/swarm/mod.rs", "let v = VerifiedPiece::new(3);\nfn f(v: VerifiedPiece) {}\n"),
        ("src/storage/mod.rs", "crate::verdict::VerifiedPiece::new(0)\n"),
        ("src/peer/mod.rs", "#[cfg(test)]\nmod tests {\n    let v = VerifiedPiece::new(1);\n}\n"),
    ]);
    assert_eq!(lines_of(&found), [("src/swarm/mod.rs".to_string(), 1), ("src/storage/mod.rs".to_string(), 1)]);
}

#[test]
fn child_modules_resolve_like_rustc() {
    assert_eq!(child_module_base("src/lib.rs", "sim"), "src/sim");
    assert_eq!(child_module_base("src/peer/mod.rs", "tests"), "src/peer/tests");
    assert_eq!(child_module_base("src/tracker.rs", "tests"), "src/tracker/tests");
}
