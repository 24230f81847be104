//! Piece verification: the only way to make a `VerifiedPiece` (the type lives in `verdict`).
//!
//! Owns: comparing a piece's SHA-1 with the metainfo's, from a running hash plus the bytes read back from
//! disk. Must not: touch peers. A `VerifiedPiece` in hand proves the check was done (a capability type,
//! as rustls uses for its verified handshake states); `tests/layering.rs` keeps its constructor here.

use sha1::{Digest, Sha1};

use super::{Storage, StorageError};
use crate::geometry::{Geometry, BLOCK_LEN};
use crate::verdict::VerifiedPiece;

/// Finishes a piece's hash: `hasher` covers its first `hashed_blocks` blocks; the rest is read back from
/// `storage`. `Ok(None)` means the hash did not match.
pub fn finish_piece(
    storage: &mut Storage,
    geometry: &Geometry,
    piece: u32,
    mut hasher: Sha1,
    hashed_blocks: u32,
    expected: &[u8; 20],
) -> Result<Option<VerifiedPiece>, StorageError> {
    let done = u64::from(hashed_blocks) * u64::from(BLOCK_LEN);
    let len = u64::from(geometry.piece_len(piece));
    if done < len {
        storage.hash_range(geometry.piece_offset(piece) + done, len - done, &mut hasher)?;
    }
    Ok((hasher.finalize().as_slice() == expected).then(|| VerifiedPiece::new(piece)))
}

/// Finishes a piece's hash from its place in the layout: `hasher` covers its first `hashed` bytes; the rest
/// of the `len` bytes at `at` is read back from `storage`. `Ok(None)` means the hash did not match.
pub fn finish_range(
    storage: &mut Storage,
    piece: u32,
    at: u64,
    len: u64,
    mut hasher: Sha1,
    hashed: u64,
    expected: &[u8; 20],
) -> Result<Option<VerifiedPiece>, StorageError> {
    if hashed < len {
        storage.hash_range(at + hashed, len - hashed, &mut hasher)?;
    }
    Ok((hasher.finalize().as_slice() == expected).then(|| VerifiedPiece::new(piece)))
}

/// Hashes a whole piece from disk (checking existing data, seeding, resume).
pub fn check_piece(
    storage: &mut Storage,
    geometry: &Geometry,
    piece: u32,
    expected: &[u8; 20],
) -> Result<Option<VerifiedPiece>, StorageError> {
    finish_piece(storage, geometry, piece, Sha1::new(), 0, expected)
}

#[cfg(test)]
pub(crate) fn assume_verified(piece: u32) -> VerifiedPiece {
    VerifiedPiece::new(piece)
}

/// Hashes every piece in `pieces` from disk; returns the ones that verify. `progress(done, total)` is
/// called after each piece.
pub fn check_pieces(
    storage: &mut Storage,
    geometry: &Geometry,
    hashes: &[[u8; 20]],
    pieces: impl Iterator<Item = u32>,
    mut on_verified: impl FnMut(VerifiedPiece),
    mut progress: impl FnMut(u32),
) -> Result<(), StorageError> {
    for (done, piece) in pieces.enumerate() {
        if let Some(v) = check_piece(storage, geometry, piece, &hashes[piece as usize])? {
            on_verified(v);
        }
        progress(done as u32 + 1);
    }
    Ok(())
}

/// What the start-up check found.
pub struct Restored {
    /// Pieces hashed in this run and found right (each through a `VerifiedPiece`).
    pub have: crate::bitfield::Bitfield,
    /// Pieces the resume file vouches for, not hashed in this run: "unconfirmed". They are neither had nor
    /// advertised until the swarm confirms them (`Swarm::next_unconfirmed`), so a block of one is never
    /// served before it is hashed in this run.
    pub unconfirmed: crate::bitfield::Bitfield,
    /// How many pieces are in `unconfirmed`.
    pub trusted: u32,
    /// Pieces hashed (because no record vouched for them).
    pub checked: u32,
    /// `progress` asked to stop (a signal): pieces not reached are in neither bitfield.
    pub interrupted: bool,
}

/// What is on disk before any hashing: the pieces the resume file vouches for, and those to hash.
pub struct RestorePlan {
    /// Pieces the resume file vouches for (see [`Restored::unconfirmed`]).
    pub unconfirmed: crate::bitfield::Bitfield,
    /// How many pieces are in `unconfirmed`.
    pub trusted: u32,
    /// Pieces whose files exist and are long enough: to hash, lowest first.
    pub to_check: Vec<u32>,
}

/// Decides what is already on disk, without hashing: pieces the resume file records as verified are taken
/// as unconfirmed when every file they touch still has the recorded size and mtime; every other piece
/// whose files exist is to be hashed. `recheck` hashes everything.
pub fn plan_restore(
    storage: &Storage,
    geometry: &Geometry,
    resume: Option<&super::resume::ResumeData>,
    recheck: bool,
) -> RestorePlan {
    use crate::bitfield::Bitfield;
    let n = geometry.piece_count();
    let stamps = storage.file_stamps();
    let layout: Vec<(u64, u64, bool)> = storage.layout().collect();
    let recorded = resume.filter(|_| !recheck).map(|r| Bitfield::from_wire(&r.pieces, n));
    let file_trusted: Vec<bool> = (0..layout.len())
        .map(|i| match resume {
            Some(r) if !recheck => layout[i].2 || r.files[i] == stamps[i],
            _ => false,
        })
        .collect();
    // For each piece: whether all its files are trusted, and whether all its real files exist and are long
    // enough to hold it (otherwise hashing is pointless).
    let mut to_check = Vec::new();
    let mut unconfirmed = Bitfield::new(n);
    let mut trusted = 0;
    let mut first_file = 0;
    for piece in 0..n {
        let start = geometry.piece_offset(piece);
        let end = start + u64::from(geometry.piece_len(piece));
        while first_file < layout.len() && layout[first_file].0 + layout[first_file].1 <= start {
            first_file += 1;
        }
        let mut all_trusted = true;
        let mut present = true;
        let mut i = first_file;
        while i < layout.len() && layout[i].0 < end {
            let (offset, length, padding) = layout[i];
            if length > 0 && !padding {
                all_trusted &= file_trusted[i];
                let needed = (end.min(offset + length) - offset) as i64;
                present &= stamps[i].size >= needed;
            }
            i += 1;
        }
        let recorded_ok = matches!(&recorded, Some(Ok(bits)) if bits.get(piece));
        if recorded_ok && all_trusted && present {
            unconfirmed.set(piece);
            trusted += 1;
        } else if present {
            to_check.push(piece);
        }
    }
    RestorePlan { unconfirmed, trusted, to_check }
}

/// [`plan_restore`], then hashes the planned pieces in one go. `progress(done, total)` reports the hashing
/// and returns false to stop it early (`Restored::interrupted`).
pub fn restore(
    storage: &mut Storage,
    geometry: &Geometry,
    hashes: &[[u8; 20]],
    resume: Option<&super::resume::ResumeData>,
    recheck: bool,
    mut progress: impl FnMut(u32, u32) -> bool,
) -> Result<Restored, StorageError> {
    let RestorePlan { unconfirmed, trusted, to_check } = plan_restore(storage, geometry, resume, recheck);
    let mut have = crate::bitfield::Bitfield::new(geometry.piece_count());
    let total = to_check.len() as u32;
    let mut checked = 0;
    let mut interrupted = false;
    for piece in to_check {
        if let Some(v) = check_piece(storage, geometry, piece, &hashes[piece as usize])? {
            have.set(v.piece());
        }
        checked += 1;
        if !progress(checked, total) {
            interrupted = true;
            break;
        }
    }
    Ok(Restored { have, unconfirmed, trusted, checked, interrupted })
}
