//! Torrents made by real tools: `transmission-create` (Transmission 3.00) and python3-libtorrent
//! (`tests/peers/make_torrent.py`). Both take the announce URL of the test tracker.
//!
//! Know your tool: transmission-create leaves zero-length files out of the torrent; libtorrent keeps them, and
//! without `v1_only` makes a hybrid v1+v2 torrent with BEP 47 padding files (`.pad/N`) between files, which
//! Transmission 3.00 and aria2 do not understand (they look for the pad files on disk).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::bencode::{self, Value};
use super::content::Content;
use super::{peer_script, require_python_libtorrent, require_tool, run_tool, PYTHON};

#[derive(Clone, Debug)]
pub struct Torrent {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub info_hash: [u8; 20],
    pub name: String,
    pub piece_length: u64,
    pub num_pieces: u64,
    /// Total length of the torrent's files, padding files included.
    pub total_length: u64,
    /// Whether some `files` entry is a BEP 47 padding file.
    pub has_padding: bool,
    /// Whether the `info` carries v2 keys (hybrid torrent).
    pub hybrid: bool,
}

impl Torrent {
    #[track_caller]
    pub fn load(path: &Path) -> Torrent {
        let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let meta = bencode::decode(&bytes).unwrap_or_else(|e| panic!("{} is not bencode: {e}", path.display()));
        let info = meta.get("info").expect("no info");
        let name = info.get("name").and_then(Value::as_str).expect("no name").to_string();
        let piece_length = info.get("piece length").and_then(Value::as_int).expect("no piece length") as u64;
        let num_pieces = info.get("pieces").and_then(Value::as_bytes).map(|p| p.len() as u64 / 20).unwrap_or(0);
        let (total_length, has_padding) = match info.get("files").and_then(Value::as_list) {
            Some(files) => (
                files.iter().filter_map(|f| f.get("length").and_then(Value::as_int)).sum::<i64>() as u64,
                files.iter().any(|f| f.get("attr").and_then(Value::as_str).is_some_and(|a| a.contains('p'))),
            ),
            None => (info.get("length").and_then(Value::as_int).expect("no length") as u64, false),
        };
        Torrent {
            path: path.to_path_buf(),
            info_hash: bencode::info_hash(&bytes),
            hybrid: info.get("meta version").is_some(),
            bytes,
            name,
            piece_length,
            num_pieces,
            total_length,
            has_padding,
        }
    }

    pub fn hex_hash(&self) -> String {
        bencode::hex(&self.info_hash)
    }

    /// Bytes in the last piece.
    pub fn last_piece_length(&self) -> u64 {
        self.total_length - (self.num_pieces - 1) * self.piece_length
    }
}

/// `transmission-create -s PIECE_KIB -t ANNOUNCE -o OUT CONTENT`.
#[track_caller]
pub fn transmission_create(
    content: &Content,
    announce: &str,
    piece_kib: u32,
    out: &Path,
    deadline: Instant,
) -> Torrent {
    require_tool("transmission-create", "transmission-cli");
    let mut cmd = Command::new("transmission-create");
    cmd.arg("-s").arg(piece_kib.to_string()).arg("-t").arg(announce).arg("-o").arg(out).arg(content.path());
    run_tool("transmission-create", &cmd, &log_dir(out), deadline);
    let t = Torrent::load(out);
    assert_eq!(t.piece_length, piece_kib as u64 * 1024, "transmission-create ignored the piece size");
    t
}

/// `tests/peers/make_torrent.py` with python3-libtorrent: hybrid v1+v2 (with padding files) unless `v1_only`.
#[track_caller]
pub fn libtorrent_create(
    content: &Content,
    announce: &str,
    piece_size: u64,
    v1_only: bool,
    out: &Path,
    deadline: Instant,
) -> Torrent {
    libtorrent_create_with(content, announce, piece_size, v1_only, false, out, deadline)
}

/// As [`libtorrent_create`], with `private` = 1 in the info dictionary when `private` (BEP 27).
#[track_caller]
pub fn libtorrent_create_with(
    content: &Content,
    announce: &str,
    piece_size: u64,
    v1_only: bool,
    private: bool,
    out: &Path,
    deadline: Instant,
) -> Torrent {
    require_python_libtorrent();
    let mut cmd = Command::new(PYTHON);
    cmd.arg(peer_script("make_torrent.py"))
        .arg(content.path())
        .arg(out)
        .arg("--tracker")
        .arg(announce)
        .arg("--piece-size")
        .arg(piece_size.to_string());
    if v1_only {
        cmd.arg("--v1-only");
    }
    if private {
        cmd.arg("--private");
    }
    let printed = run_tool("make_torrent", &cmd, &log_dir(out), deadline);
    let t = Torrent::load(out);
    assert_eq!(printed.trim(), t.hex_hash(), "libtorrent's info-hash differs from the rig's");
    t
}

fn log_dir(out: &Path) -> PathBuf {
    out.parent().unwrap_or(Path::new(".")).join("logs")
}
