//! The resume file: which pieces are verified, and the size and modification time of each data file
//! when that was recorded.
//!
//! Owns: the format (a bencoded dictionary, versioned) — pure `encode` and `decode` — and the rule for
//! trusting it: a file whose size or mtime differs from the record has its pieces checked again.
//! Must not: touch files itself; `Storage::save_resume` and `Storage::load_resume` do the I/O (atomic
//! write: temporary file, fsync, rename, fsync of the directory).
//!
//! The file is `DIR/.rill-<info-hash in hex>.resume` (temporary: `….resume.tmp`), so its name has a fixed
//! length whatever the torrent's name. Older versions used `DIR/.<name>.rill-resume`: it is read once and
//! moved to the new name. It is read only up to `max_encoded_len` bytes: a larger one is not this
//! torrent's.
//!
//! ```text
//! d 7:version i1e  9:info-hash 20:<raw>  6:pieces <bitfield bytes>
//!   5:files l l i<size>e i<mtime seconds>e i<mtime nanoseconds>e e ... e e
//! ```

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

pub const FORMAT_VERSION: i64 = 1;

/// Size and modification time of one data file (padding files are not listed; a missing file is
/// recorded as size −1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    pub size: i64,
    pub mtime_secs: i64,
    pub mtime_nanos: i64,
}

impl FileStamp {
    pub const MISSING: FileStamp = FileStamp { size: -1, mtime_secs: 0, mtime_nanos: 0 };
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumeData {
    pub info_hash: [u8; 20],
    /// Wire-order bitfield of verified pieces.
    pub pieces: Vec<u8>,
    /// One stamp per file of the layout, in order (padding files included, as `MISSING`).
    pub files: Vec<FileStamp>,
}

#[derive(Serialize, Deserialize)]
struct Raw {
    version: i64,
    #[serde(rename = "info-hash")]
    info_hash: ByteBuf,
    pieces: ByteBuf,
    files: Vec<(i64, i64, i64)>,
}

/// Why a resume file was not used (it is then ignored and the data checked by hashing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResumeError {
    Malformed,
    UnknownVersion(i64),
    OtherTorrent,
    WrongShape,
}

impl std::fmt::Display for ResumeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResumeError::Malformed => write!(f, "resume file is not readable"),
            ResumeError::UnknownVersion(v) => write!(f, "resume file has unknown version {v}"),
            ResumeError::OtherTorrent => write!(f, "resume file belongs to another torrent"),
            ResumeError::WrongShape => write!(f, "resume file does not match the torrent's layout"),
        }
    }
}

/// `.rill-<40 hex digits>.resume`, in the download directory.
pub fn file_name(info_hash: &[u8; 20]) -> String {
    let hex: String = info_hash.iter().map(|b| format!("{b:02x}")).collect();
    format!(".rill-{hex}.resume")
}

/// The temporary a save writes before renaming it over `file_name`.
/// `.rill-<info-hash in hex>.torrent`: a magnet's fetched metadata, kept beside the resume file so a restart
/// does not fetch it again.
pub fn metadata_file_name(info_hash: &[u8; 20]) -> String {
    let hex: String = info_hash.iter().map(|b| format!("{b:02x}")).collect();
    format!(".rill-{hex}.torrent")
}

pub fn temp_name(info_hash: &[u8; 20]) -> String {
    format!("{}.tmp", file_name(info_hash))
}

/// The name older versions used, `.<top folder or file>.rill-resume`; `None` where that name could not
/// exist (longer than a file name may be).
pub fn legacy_name(top: &std::ffi::OsStr) -> Option<std::ffi::OsString> {
    /// NAME_MAX on Linux file systems.
    const MAX_NAME: usize = 255;
    let mut name = std::ffi::OsString::from(".");
    name.push(top);
    name.push(".rill-resume");
    (!top.is_empty() && name.len() <= MAX_NAME).then_some(name)
}

/// The largest resume file `encode` makes for a torrent of `piece_bytes` bitfield bytes and
/// `file_count` layout files (every stamp at its widest): reading stops past it.
pub fn max_encoded_len(piece_bytes: usize, file_count: usize) -> u64 {
    // `d5:filesl` … `e9:info-hash20:<20>6:pieces<digits>:<bitfield>7:versioni<digits>ee`, with room to spare.
    const FIXED: u64 = 128;
    // `l` + 3 × `i<at most 20 characters>e` + `e`.
    const PER_FILE: u64 = 2 + 3 * 22;
    FIXED + piece_bytes as u64 + (file_count as u64).saturating_mul(PER_FILE)
}

pub fn encode(data: &ResumeData) -> Vec<u8> {
    let raw = Raw {
        version: FORMAT_VERSION,
        info_hash: ByteBuf::from(data.info_hash.to_vec()),
        pieces: ByteBuf::from(data.pieces.clone()),
        files: data.files.iter().map(|s| (s.size, s.mtime_secs, s.mtime_nanos)).collect(),
    };
    // Serialising plain integers and byte strings cannot fail.
    serde_bencode::to_bytes(&raw).unwrap_or_default()
}

/// Decodes and checks a resume file against the torrent it should belong to.
pub fn decode(
    bytes: &[u8],
    info_hash: &[u8; 20],
    piece_bytes: usize,
    file_count: usize,
) -> Result<ResumeData, ResumeError> {
    let raw: Raw = serde_bencode::from_bytes(bytes).map_err(|_| ResumeError::Malformed)?;
    if raw.version != FORMAT_VERSION {
        return Err(ResumeError::UnknownVersion(raw.version));
    }
    if raw.info_hash.as_slice() != info_hash {
        return Err(ResumeError::OtherTorrent);
    }
    if raw.pieces.len() != piece_bytes || raw.files.len() != file_count {
        return Err(ResumeError::WrongShape);
    }
    Ok(ResumeData {
        info_hash: *info_hash,
        pieces: raw.pieces.into_vec(),
        files: raw
            .files
            .into_iter()
            .map(|(size, mtime_secs, mtime_nanos)| FileStamp { size, mtime_secs, mtime_nanos })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ResumeData {
        ResumeData {
            info_hash: [9; 20],
            pieces: vec![0b1010_0000, 0xff],
            files: vec![FileStamp { size: 100, mtime_secs: 1_700_000_000, mtime_nanos: 12 }, FileStamp::MISSING],
        }
    }

    #[test]
    fn the_bound_holds_the_widest_resume_file() {
        let widest = FileStamp { size: i64::MIN, mtime_secs: i64::MIN, mtime_nanos: i64::MIN };
        for (pieces, files) in [(0, 0), (1, 1), (125_000, 3), (7, 10_000)] {
            let data = ResumeData { info_hash: [0xff; 20], pieces: vec![0xff; pieces], files: vec![widest; files] };
            let len = encode(&data).len() as u64;
            assert!(len <= max_encoded_len(pieces, files), "{len} > bound for {pieces} bytes, {files} files");
            assert!(max_encoded_len(pieces, files) < len + 200, "the bound is loose for {pieces}, {files}");
        }
    }

    #[test]
    fn names_are_short_whatever_the_torrent_is_called() {
        assert_eq!(file_name(&[0xab; 20]), format!(".rill-{}.resume", "ab".repeat(20)));
        assert_eq!(temp_name(&[0; 20]), format!(".rill-{}.resume.tmp", "0".repeat(40)));
        let long = "n".repeat(250);
        assert_eq!(legacy_name(std::ffi::OsStr::new(&long)), None, "`.<250 bytes>.rill-resume` cannot exist");
        assert_eq!(legacy_name(std::ffi::OsStr::new("t")).unwrap(), ".t.rill-resume");
        assert_eq!(legacy_name(std::ffi::OsStr::new("")), None);
    }

    #[test]
    fn resume_round_trips() {
        let bytes = encode(&sample());
        assert_eq!(decode(&bytes, &[9; 20], 2, 2), Ok(sample()));
    }

    #[test]
    fn resume_for_another_torrent_or_shape_is_refused() {
        let bytes = encode(&sample());
        assert_eq!(decode(&bytes, &[8; 20], 2, 2), Err(ResumeError::OtherTorrent));
        assert_eq!(decode(&bytes, &[9; 20], 3, 2), Err(ResumeError::WrongShape));
        assert_eq!(decode(&bytes, &[9; 20], 2, 1), Err(ResumeError::WrongShape));
        assert_eq!(decode(b"garbage", &[9; 20], 2, 2), Err(ResumeError::Malformed));
        let mut truncated = bytes.clone();
        truncated.truncate(bytes.len() - 3);
        assert_eq!(decode(&truncated, &[9; 20], 2, 2), Err(ResumeError::Malformed));
        let mut future = bytes.clone();
        let at = future.windows(12).position(|w| w == b"7:versioni1e").unwrap();
        future[at + 10] = b'2';
        assert_eq!(decode(&future, &[9; 20], 2, 2), Err(ResumeError::UnknownVersion(2)));
    }
}
