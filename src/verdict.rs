//! `VerifiedPiece`: the proof that a piece's bytes hash to the metainfo's SHA-1.
//!
//! Owns: the type, low in the module order so that `storage` (which makes it) and `swarm` (which takes
//! it) both see it without an arrow between them. Must not: hash or read anything.
//!
//! Only `storage::verify` may construct one, after the hash matched: a `VerifiedPiece` in hand proves the
//! check was done (a capability type, as rustls uses for its verified handshake states). The field is
//! private, and `tests/layering.rs` fails on `VerifiedPiece::new` anywhere but `src/storage/verify.rs`
//! (test code excepted).

/// Proof that a piece's bytes hash to the metainfo's SHA-1.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub struct VerifiedPiece {
    piece: u32,
}

impl VerifiedPiece {
    /// Only for `storage::verify`, once the piece's hash matched (see the module doc).
    pub fn new(piece: u32) -> Self {
        VerifiedPiece { piece }
    }

    pub fn piece(&self) -> u32 {
        self.piece
    }
}
