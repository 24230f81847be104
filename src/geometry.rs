//! Piece and block arithmetic: how a torrent's bytes split into pieces and 16 KiB blocks.
//!
//! Owns: `Geometry` (piece lengths, block counts, last-piece and last-block lengths), `BlockRef`, and
//! validation of peer-supplied indexes (`Geometry::block`, `Geometry::piece`).
//! Must not: hold any state beyond the layout; it is `Copy` and pure.

/// Every request we send is for at most this many bytes; real clients drop peers asking for more.
pub const BLOCK_LEN: u32 = 16 * 1024;

/// One block of one piece, as a request, a received piece message or a served block names it.
/// Only `Geometry` builds one from peer input, so a `BlockRef` in hand is always in range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockRef {
    pub piece: u32,
    pub offset: u32,
    pub len: u32,
}

impl BlockRef {
    /// The block's number within its piece.
    pub fn index(&self) -> u32 {
        self.offset / BLOCK_LEN
    }
}

/// The layout of one torrent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    piece_length: u32,
    total_length: u64,
    piece_count: u32,
}

impl Geometry {
    /// `piece_length` > 0 and `piece_count == ceil(total / piece_length)` are the metainfo's checks.
    pub fn new(piece_length: u32, total_length: u64) -> Self {
        debug_assert!(piece_length > 0);
        let piece_count = total_length.div_ceil(u64::from(piece_length)) as u32;
        Geometry { piece_length, total_length, piece_count }
    }

    pub fn piece_count(&self) -> u32 {
        self.piece_count
    }
    pub fn total_length(&self) -> u64 {
        self.total_length
    }
    pub fn piece_length(&self) -> u32 {
        self.piece_length
    }

    /// Offset of the piece's first byte in the torrent's layout.
    pub fn piece_offset(&self, piece: u32) -> u64 {
        u64::from(piece) * u64::from(self.piece_length)
    }

    /// Length of `piece`; the last one is usually short.
    pub fn piece_len(&self, piece: u32) -> u32 {
        let start = self.piece_offset(piece);
        let end = (start + u64::from(self.piece_length)).min(self.total_length);
        end.saturating_sub(start) as u32
    }

    pub fn blocks_in_piece(&self, piece: u32) -> u32 {
        self.piece_len(piece).div_ceil(BLOCK_LEN)
    }

    /// Blocks in a full-length piece: the size of per-piece block tables.
    pub fn max_blocks_per_piece(&self) -> u32 {
        self.piece_length.div_ceil(BLOCK_LEN)
    }

    /// The `block`-th block of `piece` (both in range, our own numbers).
    pub fn block_ref(&self, piece: u32, block: u32) -> BlockRef {
        let offset = block * BLOCK_LEN;
        let len = (self.piece_len(piece) - offset).min(BLOCK_LEN);
        BlockRef { piece, offset, len }
    }

    /// A piece index from the wire, if it names a piece of this torrent.
    pub fn piece(&self, raw: u32) -> Option<u32> {
        (raw < self.piece_count).then_some(raw)
    }

    /// A block from the wire (request, piece, cancel): in range and no longer than `max_len`.
    /// It need not be aligned to our 16 KiB grid (peers may request any span).
    pub fn block(&self, piece: u32, offset: u32, len: u32, max_len: u32) -> Option<BlockRef> {
        let piece = self.piece(piece)?;
        let end = u64::from(offset) + u64::from(len);
        (len > 0 && len <= max_len && end <= u64::from(self.piece_len(piece))).then_some(BlockRef {
            piece,
            offset,
            len,
        })
    }

    /// A block from the wire that must match our own 16 KiB grid exactly (blocks we requested).
    pub fn aligned_block(&self, piece: u32, offset: u32, len: u32) -> Option<BlockRef> {
        let piece = self.piece(piece)?;
        if offset % BLOCK_LEN != 0 || offset >= self.piece_len(piece) {
            return None;
        }
        let expected = self.block_ref(piece, offset / BLOCK_LEN);
        (expected.len == len).then_some(expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_last_piece_and_short_last_block() {
        // 3 pieces of 32 KiB, the last holding 16 KiB + 100 bytes.
        let g = Geometry::new(32 * 1024, 64 * 1024 + 16 * 1024 + 100);
        assert_eq!(g.piece_count(), 3);
        assert_eq!(g.piece_len(0), 32 * 1024);
        assert_eq!(g.piece_len(2), 16 * 1024 + 100);
        assert_eq!(g.blocks_in_piece(2), 2);
        assert_eq!(g.block_ref(2, 1), BlockRef { piece: 2, offset: 16 * 1024, len: 100 });
        assert_eq!(g.max_blocks_per_piece(), 2);
    }

    #[test]
    fn wire_blocks_are_range_checked() {
        let g = Geometry::new(32 * 1024, 40_000);
        assert!(g.piece(2).is_none());
        assert!(g.block(1, 0, 40_000 - 32 * 1024, BLOCK_LEN).is_some());
        assert!(g.block(1, 1, 40_000 - 32 * 1024, BLOCK_LEN).is_none(), "runs past the piece");
        assert!(g.block(0, 0, BLOCK_LEN + 1, BLOCK_LEN).is_none(), "oversized");
        assert!(g.block(0, 0, 0, BLOCK_LEN).is_none(), "empty");
        assert!(g.block(0, u32::MAX, 2, BLOCK_LEN).is_none(), "no overflow");
        assert_eq!(g.aligned_block(1, 0, 40_000 - 32 * 1024), Some(g.block_ref(1, 0)));
        assert!(g.aligned_block(0, 100, BLOCK_LEN).is_none());
        assert!(g.aligned_block(0, 0, 100).is_none());
    }
}
