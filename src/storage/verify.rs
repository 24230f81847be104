//! Piece verification: the only way to make a `VerifiedPiece`.
//!
//! Owns: comparing a piece's SHA-1 with the metainfo's, from a running hash plus the bytes read back from
//! disk. Must not: touch peers. A `VerifiedPiece` in hand proves the check was done (a capability type,
//! as rustls uses for its verified handshake states).

use sha1::{Digest, Sha1};

use super::{Storage, StorageError};
use crate::geometry::{Geometry, BLOCK_LEN};

/// Proof that a piece's bytes hash to the metainfo's SHA-1. Only this module can make one.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub struct VerifiedPiece {
    piece: u32,
}

impl VerifiedPiece {
    pub fn piece(&self) -> u32 {
        self.piece
    }
}

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
    Ok((hasher.finalize().as_slice() == expected).then_some(VerifiedPiece { piece }))
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
    VerifiedPiece { piece }
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
