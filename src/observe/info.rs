//! `rill info`: a torrent described for a person.
//!
//! Owns: the text `rill info FILE.torrent` prints. Must not: print it, or read the file (`main` does both).
//!
//! Every string from the torrent passes through [`printable`] first: a hostile name or comment must not be
//! able to send escape sequences to the user's terminal or break the one-field-per-line layout.

use std::borrow::Cow;
use std::io::{self, Write};

use crate::metainfo::{Metainfo, NoteReason};
use crate::observe::units;

/// The description of `m`, as [`write_info`] writes it.
pub fn render_info(m: &Metainfo) -> String {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = write_info(m, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes the description of `m` to `out`, line by line (a torrent with 200,000 files is never held as one
/// string): name, info-hash, piece size and count, total size, privacy, the numbered file list (numbered as
/// `Metainfo::selectable_files`, the numbers `--files` takes; a name rill mapped to a safe one says what it
/// was mapped from, a symlink shows its target), the entries skipped, and the trackers by tier.
pub fn write_info(m: &Metainfo, out: &mut dyn Write) -> io::Result<()> {
    let field = |out: &mut dyn Write, label: &str, value: &str| writeln!(out, "{:<12}{value}", format!("{label}:"));
    let name = match &m.mapped.name_from {
        Some(from) => format!("{}  (mapped from \"{}\")", printable(&m.name), printable(from)),
        None => printable(&m.name).into_owned(),
    };
    field(out, "name", &name)?;
    field(out, "info-hash", &m.info_hash.to_string())?;
    field(out, "piece size", &format!("{} ({} bytes)", units::bytes(m.piece_length.into()), m.piece_length))?;
    field(out, "pieces", &m.piece_count().to_string())?;
    field(out, "total size", &format!("{} ({} bytes)", units::bytes(m.total_length), m.total_length))?;
    field(out, "private", if m.private { "yes (trackers only: no DHT, no PEX)" } else { "no" })?;
    if let Some(comment) = &m.comment {
        field(out, "comment", &printable(comment))?;
    }
    if let Some(created_by) = &m.created_by {
        field(out, "created by", &printable(created_by))?;
    }

    let skipped = |i: usize| m.mapped.note(i).is_some_and(|note| note.reason == NoteReason::SymlinkSkipped);
    let (padding_count, padding_bytes) = m
        .files
        .iter()
        .enumerate()
        .filter(|&(i, f)| f.padding && !skipped(i))
        .fold((0u64, 0u64), |(n, len), (_, f)| (n + 1, len + f.length));
    let count = m.selectable_files().count();
    let mut files_line = count.to_string();
    if padding_count > 0 {
        files_line.push_str(&format!(
            " (and {padding_count} padding file{}, {}, not written to disk)",
            if padding_count == 1 { "" } else { "s" },
            units::bytes(padding_bytes)
        ));
    }
    field(out, "files", &files_line)?;
    let index_width = count.saturating_sub(1).to_string().len();
    let size_width = m.selectable_files().map(|(_, f)| units::bytes(f.length).len()).max().unwrap_or(0);
    let mut file_index = 0;
    for (n, f) in m.selectable_files() {
        // `selectable_files` skips padding: find the layout index for the mapping notes.
        while m.files.get(file_index).is_some_and(|g| g.padding) {
            file_index += 1;
        }
        let size = units::bytes(f.length);
        write!(out, "  {n:>index_width$}  {size:>size_width$}  {}", printable(&f.display_path()))?;
        if let Some(target) = &f.symlink_target {
            write!(out, " -> {}", printable(&target.to_string_lossy()))?;
        }
        if let Some(note) = m.mapped.note(file_index) {
            write!(out, "  (mapped from \"{}\")", printable(&note.original))?;
        }
        writeln!(out)?;
        file_index += 1;
    }
    let mut skipped_notes = m.mapped.files.iter().filter(|note| note.reason == NoteReason::SymlinkSkipped).peekable();
    if skipped_notes.peek().is_some() {
        writeln!(out, "skipped:")?;
        for note in skipped_notes {
            let path = m.files.get(note.file).map(|f| f.display_path().into_owned()).unwrap_or_default();
            writeln!(
                out,
                "  {}  (symlink to \"{}\", which is not in the torrent: not created)",
                printable(&path),
                printable(&note.original)
            )?;
        }
    }

    if m.trackers.is_empty() {
        writeln!(out, "trackers:   none")?;
    } else {
        writeln!(out, "trackers:")?;
        for (tier, urls) in m.trackers.iter().enumerate() {
            for (n, url) in urls.iter().enumerate() {
                let label = if n == 0 { format!("tier {}:", tier + 1) } else { String::new() };
                writeln!(out, "  {label:<9}{}", printable(url))?;
            }
        }
    }
    if !m.web_seeds.is_empty() {
        writeln!(out, "web seeds:")?;
        for url in &m.web_seeds {
            let note = if url.starts_with("https://") { "  (skipped: rill has no HTTPS support)" } else { "" };
            writeln!(out, "  {}{note}", printable(url))?;
        }
    }
    Ok(())
}

/// `text` with control characters (escape sequences, newlines) written as Rust escapes.
pub(crate) fn printable(text: &str) -> Cow<'_, str> {
    if text.chars().any(char::is_control) {
        Cow::Owned(
            text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect(),
        )
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::metainfo::{FileEntry, InfoHash};

    fn entry(path: &str, length: u64, offset: u64, padding: bool) -> FileEntry {
        FileEntry { path: PathBuf::from(path), length, offset, padding, symlink_target: None }
    }

    fn hybrid_like() -> Metainfo {
        let files = vec![
            entry("multi/a/one.bin", 20_000, 0, false),
            entry("multi/.pad/12768", 12_768, 20_000, true),
            entry("multi/empty.dat", 0, 32_768, false),
            entry("multi/readme.txt", 1000, 32_768, false),
        ];
        Metainfo {
            info_hash: InfoHash([0xab; 20]),
            name: "multi".into(),
            piece_length: 16_384,
            piece_hashes: vec![[0; 20]; 3],
            total_length: 33_768,
            files,
            trackers: vec![
                vec!["http://127.0.0.1:6969/announce".into(), "udp://127.0.0.1:6969".into()],
                vec!["http://127.0.0.1:6970/announce".into()],
            ],
            private: true,
            comment: Some("made for a test".into()),
            created_by: None,
            web_seeds: Vec::new(),
            mapped: Default::default(),
        }
    }

    #[test]
    fn info_lists_fields_numbered_files_and_tiers() {
        let text = render_info(&hybrid_like());
        let expected = "\
name:       multi
info-hash:  abababababababababababababababababababab
piece size: 16.0 KiB (16384 bytes)
pieces:     3
total size: 33.0 KiB (33768 bytes)
private:    yes (trackers only: no DHT, no PEX)
comment:    made for a test
files:      3 (and 1 padding file, 12.5 KiB, not written to disk)
  0  19.5 KiB  multi/a/one.bin
  1       0 B  multi/empty.dat
  2    1000 B  multi/readme.txt
trackers:
  tier 1:  http://127.0.0.1:6969/announce
           udp://127.0.0.1:6969
  tier 2:  http://127.0.0.1:6970/announce
";
        assert_eq!(text, expected, "got:\n{text}");
    }

    #[test]
    fn info_without_trackers_or_padding() {
        let mut m = hybrid_like();
        m.trackers.clear();
        m.files.retain(|f| !f.padding);
        m.private = false;
        m.comment = None;
        m.created_by = Some("rill".into());
        let text = render_info(&m);
        assert!(text.contains("\nfiles:      3\n"), "{text}");
        assert!(text.contains("\nprivate:    no\n"), "{text}");
        assert!(text.contains("\ncreated by: rill\n"), "{text}");
        assert!(text.ends_with("trackers:   none\n"), "{text}");
        m.web_seeds = vec!["http://127.0.0.1:1/".into(), "https://example.org/x".into()];
        let mut out = Vec::new();
        write_info(&m, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.ends_with(
                "web seeds:\n  http://127.0.0.1:1/\n  https://example.org/x  (skipped: rill has no HTTPS support)\n"
            ),
            "{text}"
        );
        assert!(!text.contains("comment"), "{text}");
    }

    #[test]
    fn info_numbers_align_past_ten_files() {
        let mut m = hybrid_like();
        m.files = (0..12).map(|i| entry(&format!("multi/f{i}"), 100, i * 100, false)).collect();
        let text = render_info(&m);
        assert!(text.contains("\n   0  100 B  multi/f0\n"), "{text}");
        assert!(text.contains("\n  11  100 B  multi/f11\n"), "{text}");
    }

    #[test]
    fn info_escapes_control_characters_from_the_torrent() {
        let mut m = hybrid_like();
        m.name = "evil\u{1b}[2Jname".into();
        m.comment = Some("two\nlines".into());
        m.files[0].path = "multi/\u{7}bell".into();
        let text = render_info(&m);
        assert!(!text.contains('\u{1b}') && !text.contains('\u{7}'), "{text}");
        assert!(text.contains("name:       evil\\u{1b}[2Jname\n"), "{text}");
        assert!(text.contains("comment:    two\\nlines\n"), "{text}");
        assert!(text.contains("multi/\\u{7}bell"), "{text}");
    }

    #[test]
    fn info_shows_mapped_names_symlinks_and_skipped_entries() {
        use crate::metainfo::{Mapping, NoteReason, PathNote};
        let mut m = hybrid_like();
        m.name = "ab".into();
        m.files.push(FileEntry { symlink_target: Some("a/one.bin".into()), ..entry("ab/link", 0, 33_768, false) });
        m.files.push(entry("ab/escape", 0, 33_768, true));
        m.mapped = Mapping {
            name_from: Some("a/b".into()),
            files: vec![
                PathNote { file: 2, original: "multi/./empty.dat".into(), reason: NoteReason::Sanitised },
                PathNote { file: 5, original: "../../etc".into(), reason: NoteReason::SymlinkSkipped },
            ],
        };
        let text = render_info(&m);
        assert!(text.starts_with("name:       ab  (mapped from \"a/b\")\n"), "{text}");
        // The skipped symlink is not counted as padding, nor numbered.
        assert!(text.contains("\nfiles:      4 (and 1 padding file, 12.5 KiB, not written to disk)\n"), "{text}");
        assert!(text.contains("\n  1       0 B  multi/empty.dat  (mapped from \"multi/./empty.dat\")\n"), "{text}");
        assert!(text.contains("\n  3       0 B  ab/link -> a/one.bin\n"), "{text}");
        assert!(
            text.contains(
                "\nskipped:\n  ab/escape  (symlink to \"../../etc\", which is not in the torrent: not created)\n"
            ),
            "{text}"
        );
    }
}
