//! `rill info MAGNET`: what a magnet link holds, described for a person.
//!
//! Owns: the text. Must not: print it (`main` does), or fetch anything the link names.

use std::fmt::Write as _;

use super::info::printable;
use crate::magnet::Magnet;

/// Name (if any), info-hash, trackers one per tier, peers and web seeds. Ends with a newline.
pub fn render_magnet(m: &Magnet) -> String {
    // Writing to a String cannot fail.
    let mut out = String::new();
    let name = m.name.as_deref().map(printable);
    let _ = writeln!(out, "name:       {}", name.as_deref().unwrap_or("(none given; known once the metadata arrives)"));
    let _ = writeln!(out, "info-hash:  {}", m.info_hash);
    let _ = writeln!(out, "metadata:   not in the link (fetched from peers: files, sizes and pieces come with it)");
    let lists: [(&str, Vec<String>); 3] = [
        ("trackers", m.trackers.iter().flatten().map(|t| printable(t).into_owned()).collect()),
        ("peers", m.peers.iter().map(|p| p.to_string()).collect()),
        ("web seeds", m.web_seeds.iter().map(|w| printable(w).into_owned()).collect()),
    ];
    for (label, items) in lists {
        if items.is_empty() {
            let _ = writeln!(out, "{:<12}none", format!("{label}:"));
        } else {
            let _ = writeln!(out, "{label}:");
            for (i, item) in items.iter().enumerate() {
                let _ = writeln!(out, "  {:>2}  {item}", i + 1);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_everything_the_link_holds_and_hides_control_characters() {
        let m = Magnet::parse(
            "magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a&dn=Bad%1B%5B2Jname\
             &tr=udp://127.0.0.1:1&tr=http://127.0.0.1:2/a&x.pe=127.0.0.1:3",
        )
        .unwrap();
        let text = render_magnet(&m);
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(text.contains("info-hash:  c12fe1c06bba254a9dc9f519b335aa7c1367a88a"), "{text}");
        assert!(text.contains("trackers:\n   1  udp://127.0.0.1:1\n   2  http://127.0.0.1:2/a\n"), "{text}");
        assert!(text.contains("peers:\n   1  127.0.0.1:3\n"), "{text}");
        assert!(text.contains("web seeds:  none\n"), "{text}");
    }
}
