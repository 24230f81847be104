//! Safe names for every file: odd but harmless paths are mapped, never refused.
//!
//! Owns: the mapping from a torrent's names to relative paths under the download directory, and the notes
//! that say what was mapped. Must not: touch the file system.
//!
//! The rules follow libtorrent's `sanitize_append_path_element` and `resolve_duplicate_filenames` (written
//! anew here), so a torrent maps to the same layout in rill and in libtorrent-based clients for the common
//! cases, and the mapping is a pure function of the torrent: a later run maps it the same way.
//! - A component loses every `/`, `\` and NUL. What is left of it, if empty, `.` or `..`, becomes `_`: each
//!   component of the torrent stays one component on disk, and none can climb out or be absolute. One longer
//!   than 240 bytes is cut there, keeping a short extension, so that it fits a file name.
//! - The torrent name is cleaned the same way; if nothing usable is left, a multi-file torrent's folder is
//!   named by the info-hash in hex (a single-file torrent with no usable name is refused, as libtorrent does).
//! - Two files with the same path (ASCII case ignored, so that case-insensitive file systems are safe too),
//!   or a file whose path is a folder of another file: the later one, or the file that is in the folder's
//!   way, gets `.1` (`.2`, …) before its extension. Padding files are never created and take part in none
//!   of this.
//! - A BEP 47 symlink keeps its target (relative to the torrent's top folder, `.`/`..` components dropped)
//!   only if that target is a file or folder of the torrent, possibly through other symlinks of the torrent;
//!   otherwise the entry is skipped: it becomes a zero-length entry that is not created, with a note.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use super::{FileEntry, NoteReason, PathNote};

/// `component` with separators and NUL removed and shortened to fit a file name; `_` if nothing usable is left.
pub(super) fn component(component: &str) -> Cow<'_, str> {
    let cleaned = shorten(strip(component));
    if unusable(&cleaned) {
        Cow::Borrowed("_")
    } else {
        cleaned
    }
}

/// The torrent name with separators and NUL removed and shortened, or `None` if nothing usable is left.
pub(super) fn name(name: &str) -> Option<Cow<'_, str>> {
    let cleaned = shorten(strip(name));
    (!unusable(&cleaned)).then_some(cleaned)
}

/// Longest component kept whole, in bytes: file systems allow 255, and libtorrent cuts at 240 so that an
/// extension and a `.N` suffix still fit.
const MAX_COMPONENT: usize = 240;

/// `text` cut after the character that reaches [`MAX_COMPONENT`] bytes, keeping an extension found in its last
/// 10 bytes (libtorrent's rule, so both name a long file the same).
fn shorten(text: Cow<'_, str>) -> Cow<'_, str> {
    if text.len() <= MAX_COMPONENT {
        return text;
    }
    let Some((start, cut)) =
        text.char_indices().map(|(at, c)| (at, at + c.len_utf8())).find(|&(_, end)| end >= MAX_COMPONENT)
    else {
        return text;
    };
    let after = text.len().saturating_sub(10).max(start) + 1;
    let extension = text.get(after..).and_then(|tail| tail.rfind('.')).map(|dot| after + dot);
    let mut short = String::with_capacity(MAX_COMPONENT + 10);
    short.push_str(&text[..cut]);
    if let Some(dot) = extension {
        short.push_str(&text[dot..]);
    }
    Cow::Owned(short)
}

/// A symlink target component: `None` for `.` and `..` (dropped, as libtorrent does), else as [`component`].
pub(super) fn target_component(part: &str) -> Option<Cow<'_, str>> {
    (part != "." && part != "..").then(|| component(part))
}

fn strip(text: &str) -> Cow<'_, str> {
    if text.contains(['/', '\\', '\0']) {
        Cow::Owned(text.chars().filter(|c| !matches!(c, '/' | '\\' | '\0')).collect())
    } else {
        Cow::Borrowed(text)
    }
}

fn unusable(component: &str) -> bool {
    matches!(component, "" | "." | "..")
}

/// `a` and `b` (paths of `/`-separated components) compared component by component, ASCII case folded: a
/// path sorts right before the paths inside it.
fn cmp_folded(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.split('/'), b.split('/'));
    loop {
        match (a.next(), b.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let order = x.bytes().map(|c| c.to_ascii_lowercase()).cmp(y.bytes().map(|c| c.to_ascii_lowercase()));
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

/// `inner` lies inside the folder `outer` (ASCII case folded).
fn inside_folded(outer: &str, inner: &str) -> bool {
    inner.len() > outer.len()
        && inner.as_bytes()[outer.len()] == b'/'
        && inner.as_bytes()[..outer.len()].eq_ignore_ascii_case(outer.as_bytes())
}

fn text(file: &FileEntry) -> &str {
    // Paths are built from `String`s joined with `/`, so they are always UTF-8.
    file.path.to_str().unwrap_or("")
}

/// Files that would be created on disk: not padding.
fn created(file: &FileEntry) -> bool {
    !file.padding
}

/// Renames files whose path another file already has (earlier in the layout) or that is a folder of another
/// file. Records a note for each. Costs one `u32` per file and a sort; nothing per file is allocated.
pub(super) fn resolve_collisions(files: &mut [FileEntry], notes: &mut Vec<PathNote>) {
    let mut sorted: Vec<u32> = (0..files.len() as u32).filter(|&i| created(&files[i as usize])).collect();
    let path = |i: u32| text(&files[i as usize]);
    sorted.sort_unstable_by(|&a, &b| cmp_folded(path(a), path(b)).then(a.cmp(&b)));

    let mut to_rename: Vec<u32> = Vec::new();
    let mut group = 0;
    while group < sorted.len() {
        let first = path(sorted[group]);
        let mut end = group + 1;
        while end < sorted.len() && cmp_folded(path(sorted[end]), first) == Ordering::Equal {
            end += 1;
        }
        let is_folder = sorted.get(end).is_some_and(|&next| inside_folded(first, path(next)));
        let keep = if is_folder { group } else { group + 1 };
        to_rename.extend_from_slice(&sorted[keep..end]);
        group = end;
    }
    if to_rename.is_empty() {
        return;
    }
    to_rename.sort_unstable();

    // A name is taken if a file has it, a file lies inside it, or a rename already chose it.
    let taken_by_layout = |candidate: &str| {
        let at = sorted.partition_point(|&i| cmp_folded(path(i), candidate) == Ordering::Less);
        sorted.get(at).is_some_and(|&i| {
            let other = path(i);
            cmp_folded(other, candidate) == Ordering::Equal || inside_folded(candidate, other)
        })
    };
    let mut chosen: HashSet<String> = HashSet::new();
    let mut next_suffix: HashMap<String, u32> = HashMap::new();
    let mut renames: Vec<(usize, String)> = Vec::with_capacity(to_rename.len());
    for &i in &to_rename {
        let original = path(i);
        let last = original.rfind('/').map_or(0, |slash| slash + 1);
        let split = match original[last..].rfind('.') {
            Some(dot) if dot > 0 => last + dot,
            _ => original.len(),
        };
        let (base, extension) = original.split_at(split);
        let key = original.to_ascii_lowercase();
        let mut n = next_suffix.get(&key).copied().unwrap_or(1);
        let candidate = loop {
            let candidate = format!("{base}.{n}{extension}");
            n += 1;
            if !taken_by_layout(&candidate) && !chosen.contains(&candidate.to_ascii_lowercase()) {
                break candidate;
            }
        };
        next_suffix.insert(key, n);
        chosen.insert(candidate.to_ascii_lowercase());
        renames.push((i as usize, candidate));
    }
    drop(sorted);
    // The notes so far are in file order (one per file): found by binary search, so that a torrent of
    // thousands of duplicates costs no quadratic scan.
    let sorted_notes = notes.len();
    for (i, candidate) in renames {
        match notes[..sorted_notes].binary_search_by_key(&i, |note| note.file) {
            Ok(at) => notes[at].reason = NoteReason::Duplicate,
            Err(_) => {
                let original = text(&files[i]).to_owned();
                notes.push(PathNote { file: i, original, reason: NoteReason::Duplicate });
            }
        }
        files[i].path = PathBuf::from(candidate);
    }
    notes.sort_by_key(|note| note.file);
}

/// Keeps the target of each symlink entry that names a file or folder of the torrent (through other
/// symlinks too, each followed at most once); skips the others with a note. `targets` holds, per symlink
/// entry, its target as the torrent spells it. `name` is the torrent's top folder.
pub(super) fn check_symlinks(
    name: &str,
    files: &mut [FileEntry],
    targets: Vec<(usize, String)>,
    notes: &mut Vec<PathNote>,
) {
    if targets.is_empty() {
        return;
    }
    let top = format!("{name}/");
    let full = |target: &PathBuf| format!("{top}{}", target.to_str().unwrap_or(""));
    let mut skipped = Vec::new();
    {
        let concrete: HashSet<&str> =
            files.iter().filter(|f| created(f) && f.symlink_target.is_none()).map(text).collect();
        let mut folders: HashSet<&str> = HashSet::new();
        for file in files.iter().filter(|f| created(f)) {
            let path = text(file);
            for (at, _) in path.match_indices('/') {
                folders.insert(&path[..at]);
            }
        }
        let links: HashMap<&str, String> = files
            .iter()
            .filter_map(|f| f.symlink_target.as_ref().filter(|_| created(f)).map(|t| (text(f), full(t))))
            .collect();
        for (i, _) in &targets {
            let Some(target) = files[*i].symlink_target.as_ref() else { continue };
            if target.as_os_str().is_empty() || !resolves(full(target), &concrete, &folders, &links) {
                skipped.push(*i);
            }
        }
    }
    if skipped.is_empty() {
        return;
    }
    // `targets` and `skipped` are in file order.
    let is_skipped = |i: usize| skipped.binary_search(&i).is_ok();
    notes.retain(|note| !is_skipped(note.file));
    for (i, original) in targets {
        if is_skipped(i) {
            let file = &mut files[i];
            file.symlink_target = None;
            file.padding = true;
            notes.push(PathNote { file: i, original, reason: NoteReason::SymlinkSkipped });
        }
    }
    notes.sort_by_key(|note| note.file);
}

/// Symlinks followed while resolving one target, at most: Linux gives up after 40 too (`ELOOP`), and the bound
/// keeps a crafted chain of links from costing quadratic time.
const MAX_LINKS_FOLLOWED: usize = 40;

/// `target` (a full path, top folder first) reaches a file, folder or symlink of the torrent.
fn resolves(
    mut target: String,
    concrete: &HashSet<&str>,
    folders: &HashSet<&str>,
    links: &HashMap<&str, String>,
) -> bool {
    let mut followed: HashSet<String> = HashSet::new();
    'restart: loop {
        for (at, _) in target.match_indices('/') {
            let branch = &target[..at];
            if folders.contains(branch) {
                continue;
            }
            match links.get(branch) {
                Some(link) if followed.len() < MAX_LINKS_FOLLOWED && followed.insert(branch.to_owned()) => {
                    target = format!("{link}{}", &target[at..]);
                    continue 'restart;
                }
                _ => return false,
            }
        }
        let last = target.as_str();
        return concrete.contains(last) || folders.contains(last) || links.contains_key(last);
    }
}

/// The first path two torrents sharing a download directory would both use, if any: the same file, or a
/// file of one where the other needs a folder. (Within one torrent the mapping above keeps paths apart;
/// across torrents nothing can, so such a pair must not run together.) Paths are relative to the directory.
pub fn overlap<'a>(a: &[&'a std::path::Path], b: &[&'a std::path::Path]) -> Option<&'a std::path::Path> {
    use std::collections::HashSet;
    use std::path::Path;
    let folders = |files: &[&'a Path]| -> HashSet<&'a Path> {
        files.iter().flat_map(|p| p.ancestors().skip(1)).filter(|p| !p.as_os_str().is_empty()).collect()
    };
    let (a_files, b_files): (HashSet<&Path>, HashSet<&Path>) =
        (a.iter().copied().collect(), b.iter().copied().collect());
    let (a_folders, b_folders) = (folders(a), folders(b));
    a.iter()
        .copied()
        .find(|p| b_files.contains(p) || b_folders.contains(p))
        .or_else(|| b.iter().copied().find(|p| a_folders.contains(p)))
        .or_else(|| a_files.iter().copied().find(|p| b_folders.contains(p)))
}

#[cfg(test)]
mod overlap_tests {
    use super::overlap;
    use std::path::Path;

    #[test]
    fn same_file_or_file_in_a_folders_way_overlaps_and_siblings_do_not() {
        let p = Path::new;
        assert_eq!(overlap(&[p("x/a"), p("x/b")], &[p("x/b")]), Some(p("x/b")));
        assert_eq!(overlap(&[p("thing")], &[p("thing/inner")]), Some(p("thing")));
        assert_eq!(overlap(&[p("thing/inner")], &[p("thing")]), Some(p("thing")));
        assert_eq!(overlap(&[p("x/a")], &[p("x/b"), p("y")]), None, "a shared folder is fine");
        assert_eq!(overlap(&[], &[p("y")]), None);
    }
}
