//! Building a v1 `.torrent` (`rill create`): the piece size rule and the bencoded bytes.
//!
//! Owns: choosing a piece length from the total size, and encoding a file list, piece hashes and the
//! optional keys (trackers as BEP 12 tiers, BEP 19 `url-list`, BEP 27 `private`, `source`, `comment`)
//! into canonical bencode (dictionary keys in byte order, as BEP 3 requires, so every client computes the
//! same info-hash from the same bytes).
//! Must not: read files or the clock. `storage::scan` walks the folder and hashes the data; `main` supplies
//! the creation date and writes the output.

/// Smallest piece length `rill create` picks (one block).
pub const MIN_PIECE_LENGTH: u32 = 16 * 1024;
/// Largest piece length `rill create` picks on its own; `--piece-size` may not exceed it either.
pub const MAX_PIECE_LENGTH: u32 = 16 * 1024 * 1024;
/// The piece count the default aims at: with a power-of-two length the torrent ends up with 1,000 to
/// 2,000 pieces, as mktorrent and libtorrent choose for mid-sized content.
const TARGET_PIECES: u64 = 1_000;

/// The default piece length for `total` bytes: the smallest power of two in 16 KiB..=16 MiB that keeps the
/// piece count at or below 2,000 (so 1,000–2,000 pieces wherever the bounds allow).
pub fn default_piece_length(total: u64) -> u32 {
    let want = total.div_ceil(2 * TARGET_PIECES).max(1);
    let length = want.next_power_of_two().clamp(MIN_PIECE_LENGTH as u64, MAX_PIECE_LENGTH as u64);
    length as u32
}

/// One file of the content, in the order it is laid out (and hashed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewFile {
    /// Path components below the torrent's top folder; empty for a single-file torrent.
    pub components: Vec<Vec<u8>>,
    pub length: u64,
}

/// Everything that goes into a new torrent besides the data's hashes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewTorrent {
    /// The top folder (multi-file) or the file name (single file).
    pub name: Vec<u8>,
    /// `files` of a multi-file torrent; a single file when `single_file` is set.
    pub files: Vec<NewFile>,
    pub single_file: bool,
    pub piece_length: u32,
    /// Tracker tiers (BEP 12), each a list of announce URLs.
    pub trackers: Vec<Vec<String>>,
    pub web_seeds: Vec<String>,
    pub private: bool,
    pub comment: Option<String>,
    pub source: Option<String>,
    pub created_by: String,
    /// Seconds since the Unix epoch.
    pub creation_date: Option<u64>,
}

impl NewTorrent {
    pub fn total_length(&self) -> u64 {
        self.files.iter().map(|f| f.length).sum()
    }

    /// How many pieces the layout has; the hashes passed to [`NewTorrent::encode`] must match.
    pub fn piece_count(&self) -> u64 {
        self.total_length().div_ceil(self.piece_length as u64)
    }

    /// The `.torrent` bytes. `pieces` is the concatenated SHA-1 of every piece, 20 bytes each.
    pub fn encode(&self, pieces: &[u8]) -> Vec<u8> {
        debug_assert_eq!(pieces.len() as u64, self.piece_count() * 20, "one hash per piece");
        let mut out = Vec::with_capacity(pieces.len() + 256 + self.files.len() * 48);
        out.push(b'd');
        // Keys in byte order: announce, announce-list, comment, created by, creation date, info, url-list.
        if let Some(first) = self.trackers.iter().flatten().next() {
            put_str(&mut out, b"announce");
            put_str(&mut out, first.as_bytes());
            let tiers_used = self.trackers.iter().filter(|t| !t.is_empty()).count();
            if tiers_used > 1 || self.trackers.iter().any(|t| t.len() > 1) {
                put_str(&mut out, b"announce-list");
                out.push(b'l');
                for tier in self.trackers.iter().filter(|t| !t.is_empty()) {
                    out.push(b'l');
                    for url in tier {
                        put_str(&mut out, url.as_bytes());
                    }
                    out.push(b'e');
                }
                out.push(b'e');
            }
        }
        if let Some(comment) = &self.comment {
            put_str(&mut out, b"comment");
            put_str(&mut out, comment.as_bytes());
        }
        put_str(&mut out, b"created by");
        put_str(&mut out, self.created_by.as_bytes());
        if let Some(date) = self.creation_date {
            put_str(&mut out, b"creation date");
            put_int(&mut out, date);
        }
        put_str(&mut out, b"info");
        self.encode_info(&mut out, pieces);
        if !self.web_seeds.is_empty() {
            put_str(&mut out, b"url-list");
            out.push(b'l');
            for url in &self.web_seeds {
                put_str(&mut out, url.as_bytes());
            }
            out.push(b'e');
        }
        out.push(b'e');
        out
    }

    /// The `info` dictionary; keys in byte order: files | length, name, piece length, pieces, private, source.
    fn encode_info(&self, out: &mut Vec<u8>, pieces: &[u8]) {
        out.push(b'd');
        if self.single_file {
            put_str(out, b"length");
            put_int(out, self.total_length());
        } else {
            put_str(out, b"files");
            out.push(b'l');
            for file in &self.files {
                // Keys in byte order: length, path.
                out.push(b'd');
                put_str(out, b"length");
                put_int(out, file.length);
                put_str(out, b"path");
                out.push(b'l');
                for component in &file.components {
                    put_str(out, component);
                }
                out.push(b'e');
                out.push(b'e');
            }
            out.push(b'e');
        }
        put_str(out, b"name");
        put_str(out, &self.name);
        put_str(out, b"piece length");
        put_int(out, self.piece_length as u64);
        put_str(out, b"pieces");
        put_str(out, pieces);
        if self.private {
            put_str(out, b"private");
            put_int(out, 1);
        }
        if let Some(source) = &self.source {
            put_str(out, b"source");
            put_str(out, source.as_bytes());
        }
        out.push(b'e');
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(s);
}

fn put_int(out: &mut Vec<u8>, n: u64) {
    out.push(b'i');
    out.extend_from_slice(n.to_string().as_bytes());
    out.push(b'e');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::Metainfo;

    #[test]
    fn default_piece_length_keeps_1000_to_2000_pieces_within_bounds() {
        assert_eq!(default_piece_length(0), MIN_PIECE_LENGTH);
        assert_eq!(default_piece_length(10 * 1024 * 1024), MIN_PIECE_LENGTH);
        for total in [100u64 << 20, 700 << 20, 1 << 30, 4 << 30, 20 << 30] {
            let pieces = total.div_ceil(default_piece_length(total) as u64);
            assert!((1_000..=2_000).contains(&pieces), "{total}: {pieces} pieces");
        }
        assert_eq!(default_piece_length(1 << 40), MAX_PIECE_LENGTH);
    }

    fn two_files() -> NewTorrent {
        NewTorrent {
            name: b"folder".to_vec(),
            files: vec![
                NewFile { components: vec![b"a".to_vec(), b"x.bin".to_vec()], length: 20_000 },
                NewFile { components: vec![b"empty".to_vec()], length: 0 },
                NewFile { components: vec![b"z.txt".to_vec()], length: 13_000 },
            ],
            single_file: false,
            piece_length: 16_384,
            trackers: vec![vec!["http://127.0.0.1:1/announce".into()], vec!["udp://127.0.0.1:2".into()]],
            web_seeds: vec!["http://127.0.0.1:3/".into()],
            private: true,
            comment: Some("hello".into()),
            source: Some("rill-test".into()),
            created_by: "rill test".into(),
            creation_date: Some(1_700_000_000),
        }
    }

    #[test]
    fn encoded_torrent_parses_back_with_every_field() {
        let t = two_files();
        assert_eq!(t.piece_count(), 3);
        let pieces: Vec<u8> = (0..60).collect();
        let bytes = t.encode(&pieces);
        crate::bencode::whole_value_span(&bytes).expect("valid bencode");
        let m = Metainfo::from_bytes(&bytes).expect("parses");
        assert_eq!(m.name, "folder");
        assert_eq!(m.piece_length, 16_384);
        assert_eq!(m.total_length, 33_000);
        assert_eq!(m.piece_hashes.len(), 3);
        assert_eq!(m.piece_hashes[1], <[u8; 20]>::try_from(&pieces[20..40]).unwrap());
        assert!(m.private);
        assert_eq!(m.comment.as_deref(), Some("hello"));
        assert_eq!(m.trackers, [vec!["http://127.0.0.1:1/announce".to_string()], vec!["udp://127.0.0.1:2".into()]]);
        assert_eq!(m.web_seeds, ["http://127.0.0.1:3/"]);
        // `url-list` may also be one string; blanks and repeats are dropped.
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let one = text.replace("8:url-listl19:http://127.0.0.1:3/ee", "8:url-list19:http://127.0.0.1:4/e");
        assert_eq!(Metainfo::from_bytes(one.as_bytes()).unwrap().web_seeds, ["http://127.0.0.1:4/"]);
        let odd = text.replace("8:url-listl19:http://127.0.0.1:3/ee", "8:url-listl0:i3e2:ab2:abee");
        assert_eq!(Metainfo::from_bytes(odd.as_bytes()).unwrap().web_seeds, ["ab"]);
        let paths: Vec<_> = m.files.iter().map(|f| (f.path.to_string_lossy().into_owned(), f.length)).collect();
        assert_eq!(
            paths,
            [("folder/a/x.bin".into(), 20_000), ("folder/empty".into(), 0), ("folder/z.txt".into(), 13_000)]
        );
    }

    #[test]
    fn keys_are_in_byte_order_so_the_encoding_is_canonical() {
        let bytes = two_files().encode(&[7; 60]);
        let text = String::from_utf8_lossy(&bytes);
        let order = ["8:announce", "13:announce-list", "7:comment", "10:created by", "13:creation date", "4:info"];
        let at: Vec<usize> = order.iter().map(|k| text.find(k).unwrap_or_else(|| panic!("{k} missing"))).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}");
        let info = ["5:files", "4:name", "12:piece length", "6:pieces", "7:private", "6:source"];
        let at: Vec<usize> = info.iter().map(|k| text.find(k).unwrap()).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}");
        assert!(text.ends_with("8:url-listl19:http://127.0.0.1:3/ee"));
    }

    #[test]
    fn single_file_torrent_has_length_and_no_announce_list_for_one_tracker() {
        let t = NewTorrent {
            name: b"one.iso".to_vec(),
            files: vec![NewFile { components: vec![], length: 40_000 }],
            single_file: true,
            piece_length: 32_768,
            trackers: vec![vec!["http://127.0.0.1:1/announce".into()]],
            created_by: "rill".into(),
            ..NewTorrent::default()
        };
        let bytes = t.encode(&[1; 40]);
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("announce-list"));
        assert!(!text.contains("private"));
        let m = Metainfo::from_bytes(&bytes).unwrap();
        assert_eq!(m.files.len(), 1);
        assert_eq!(m.files[0].path.to_string_lossy(), "one.iso");
        assert_eq!(m.total_length, 40_000);
    }
}
