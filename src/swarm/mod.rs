//! Torrent-wide shared state: what we have, what every connected peer has, and who is fetching which block.
//!
//! Owns: the verified-piece bitfield, per-piece availability, pieces in progress with per-block ownership
//! and their running SHA-1, transfer totals, and `check_invariants()`.
//! Must not: do I/O. Sessions reach each other only through this state; the loop carries out the rest.
//!
//! A piece is in exactly one of four states: missing (no `PartialPiece`, not in `have`), in progress
//! (a `PartialPiece` exists), unconfirmed (in `unconfirmed`: the resume file vouches for it but it was not
//! hashed in this run), or verified (in `have`). Only a `VerifiedPiece`, which only `storage::verify` can
//! make, moves a piece into `have`.
//!
//! Unconfirmed pieces (the seeding check, issue 9): they are not had, so they are neither advertised
//! (bitfield, `have`) nor served, and they count in `left`, so a download is never complete while one
//! remains. They are not wanted from peers either (the data is most likely right). The driver confirms
//! them in the background, a bounded amount per turn (`next_unconfirmed`, then `on_piece_verified` or
//! `on_confirm_failed`); one that fails becomes missing, and a download fetches it again. Since an
//! unconfirmed piece was never advertised, a failure has no `have` to take back.

pub mod bans;
pub mod candidates;
pub mod choker;
pub mod pex;
pub mod picker;
pub mod slots;
pub mod throttle;

use std::collections::BTreeMap;

use crate::bitfield::Bitfield;
use crate::geometry::{BlockRef, Geometry};
use crate::verdict::VerifiedPiece;

/// A peer's identity for the life of the process (slab slots are reused; these are not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerNo(pub u64);

/// One block's state inside a piece in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockState {
    Free,
    /// Requested from `owners` peers (more than one only in endgame).
    Requested {
        owners: u8,
    },
    Received,
}

/// A piece being downloaded.
#[derive(Clone)]
pub struct PartialPiece {
    pub piece: u32,
    /// One entry per block of this piece.
    blocks: Vec<BlockState>,
    /// Blocks in `Received`.
    received: u32,
    /// Blocks in `Free`.
    free: u32,
    /// Invariant: no block before this index is `Free`.
    first_free: u32,
    /// Peers that sent blocks of this piece (for bans after a hash failure).
    contributors: Vec<PeerNo>,
    /// The piece failed its hash check once: fetch it again from one peer only, so a second failure
    /// names the culprit.
    exclusive: bool,
}

impl PartialPiece {
    pub fn is_complete(&self) -> bool {
        self.received as usize == self.blocks.len()
    }
    pub fn has_free(&self) -> bool {
        self.free > 0
    }
    /// Another peer may join this piece: it has free blocks, and it is not being re-fetched from one
    /// peer after a hash failure. Once that peer has nothing of it in flight (it left, or choked us and
    /// its requests were released), anyone may finish it: a piece nobody may take would stall the
    /// download for good.
    pub fn is_joinable(&self) -> bool {
        let n = self.blocks.len() as u32;
        self.free > 0 && !(self.exclusive && self.free < n && self.in_flight() > 0)
    }
    /// Blocks requested and not yet in.
    pub fn in_flight(&self) -> u32 {
        self.blocks.len() as u32 - self.free - self.received
    }
}

/// What a received block meant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockArrival {
    /// New data: write it. `piece_complete` once every block of the piece is in.
    Fresh { piece_complete: bool },
    /// We already had these bytes (endgame duplicate, or a late block): count as waste, write nothing.
    Duplicate,
}

/// Transfer totals for the UI, trackers and summaries (payload bytes only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub downloaded: u64,
    pub uploaded: u64,
    /// Bytes received that were not needed (duplicates, failed pieces).
    pub wasted: u64,
    pub hash_failures: u32,
}

pub struct Swarm {
    geometry: Geometry,
    have: Bitfield,
    /// Pieces we want (file selection); a piece is wanted if any wanted file overlaps it.
    wanted: Bitfield,
    /// Wanted pieces neither verified nor in progress: when none is left, only endgame can add requests.
    unstarted: u32,
    /// Bytes still needed of wanted pieces, and of wanted pieces in all.
    left: u64,
    wanted_total: u64,
    /// How many connected peers have each piece.
    availability: Vec<u16>,
    /// Ordered, so picking is deterministic for a given input (the simulation relies on it).
    partial: BTreeMap<u32, PartialPiece>,
    /// Block tables of finished pieces, reused for the next ones.
    spare_blocks: Vec<Vec<BlockState>>,
    /// Picker scan position and bookkeeping.
    picker: picker::PickerState,
    pub totals: Totals,
    /// Blocks that arrived while other peers also had them requested (endgame): the loop sends cancels.
    taken_in_endgame: Vec<BlockRef>,
    /// Pieces the resume file vouches for that were not hashed in this run. Invariant: disjoint from
    /// `have` and from `partial`; not counted in `unstarted`.
    unconfirmed: Bitfield,
    /// Invariant: no piece before this index is in `unconfirmed` (pieces are confirmed in order).
    confirm_cursor: u32,
}

impl Swarm {
    pub fn new(geometry: Geometry, have: Bitfield, wanted: Bitfield, sequential: bool) -> Self {
        let n = geometry.piece_count();
        debug_assert_eq!(have.len(), n);
        let left = (0..n).filter(|&p| wanted.get(p) && !have.get(p)).map(|p| u64::from(geometry.piece_len(p))).sum();
        let wanted_total = wanted.iter_ones().map(|p| u64::from(geometry.piece_len(p))).sum();
        let unstarted = (0..n).filter(|&p| wanted.get(p) && !have.get(p)).count() as u32;
        Swarm {
            geometry,
            have,
            wanted,
            left,
            unstarted,
            wanted_total,
            availability: vec![0; n as usize],
            partial: BTreeMap::new(),
            spare_blocks: Vec::new(),
            picker: picker::PickerState::new(sequential),
            totals: Totals::default(),
            taken_in_endgame: Vec::new(),
            unconfirmed: Bitfield::new(n),
            confirm_cursor: 0,
        }
    }

    /// Adds the pieces the resume file vouches for without a hash in this run (`verify::Restored`'s
    /// `unconfirmed`). Pieces already had are ignored.
    pub fn with_unconfirmed(mut self, unconfirmed: &Bitfield) -> Self {
        debug_assert_eq!(unconfirmed.len(), self.geometry.piece_count());
        for p in unconfirmed.iter_ones() {
            if !self.have.get(p) && self.unconfirmed.set(p) && self.wanted.get(p) {
                self.unstarted -= 1;
            }
        }
        self.confirm_cursor = 0;
        self
    }

    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }
    pub fn have(&self) -> &Bitfield {
        &self.have
    }
    /// A piece to fetch from peers: wanted, not had, and not waiting for its confirmation.
    pub fn wants(&self, piece: u32) -> bool {
        self.wanted.get(piece) && !self.have.get(piece) && !self.unconfirmed.get(piece)
    }
    /// Bytes of wanted pieces not yet verified.
    pub fn left(&self) -> u64 {
        self.left
    }
    /// `left`, with the pieces the resume file vouches for counted as had: what trackers are told. A seed
    /// restarted from its resume file is a seed from its first announce (libtorrent, which trusts resume
    /// data, says the same), not a leecher until its next announce half an hour later; a piece that then
    /// fails its confirmation counts again from the next announce.
    pub fn left_vouched(&self) -> u64 {
        let vouched: u64 = self
            .unconfirmed
            .iter_ones()
            .filter(|&p| self.wanted.get(p))
            .map(|p| u64::from(self.geometry.piece_len(p)))
            .sum();
        self.left.saturating_sub(vouched)
    }
    /// Bytes of all wanted pieces, verified or not.
    pub fn wanted_bytes(&self) -> u64 {
        self.wanted_total
    }
    /// Every wanted piece is verified (in this run, or confirmed in this run): never while a wanted piece
    /// is unconfirmed.
    pub fn is_complete(&self) -> bool {
        self.left == 0
    }

    // ---- unconfirmed pieces -------------------------------------------------------------------

    /// The next piece to confirm (hash from disk), lowest first; `None` once none is left. The driver
    /// reports the verdict with `on_piece_verified` or `on_confirm_failed` before asking again.
    pub fn next_unconfirmed(&mut self) -> Option<u32> {
        let n = self.geometry.piece_count();
        while self.confirm_cursor < n && !self.unconfirmed.get(self.confirm_cursor) {
            self.confirm_cursor += 1;
        }
        (self.confirm_cursor < n).then_some(self.confirm_cursor)
    }

    pub fn has_unconfirmed(&self) -> bool {
        self.unconfirmed.count_ones() > 0
    }

    pub fn is_unconfirmed(&self, piece: u32) -> bool {
        self.unconfirmed.get(piece)
    }

    /// An unconfirmed piece did not hash right: its data changed since the resume file recorded it. It
    /// becomes missing; if it is wanted, the picker fetches it again.
    pub fn on_confirm_failed(&mut self, piece: u32) {
        if self.unconfirmed.clear(piece) && self.wanted.get(piece) {
            self.unstarted += 1;
        }
    }

    /// What the resume file should record: verified pieces, and unconfirmed ones (still vouched for by
    /// the file they came from; a save must not make the next start hash them again).
    pub fn recorded(&self) -> Bitfield {
        let mut bits = self.have.clone();
        for p in self.unconfirmed.iter_ones() {
            bits.set(p);
        }
        bits
    }
    pub fn is_seed(&self) -> bool {
        self.have.is_full()
    }
    pub fn partial_count(&self) -> usize {
        self.partial.len()
    }

    // ---- availability -------------------------------------------------------------------------

    pub fn on_peer_have(&mut self, piece: u32) {
        let a = &mut self.availability[piece as usize];
        *a = a.saturating_add(1);
    }
    pub fn on_peer_bitfield(&mut self, bits: &Bitfield) {
        for p in bits.iter_ones() {
            self.on_peer_have(p);
        }
    }
    /// A peer left: its pieces no longer count.
    pub fn on_peer_gone(&mut self, bits: &Bitfield) {
        for p in bits.iter_ones() {
            let a = &mut self.availability[p as usize];
            *a = a.saturating_sub(1);
            self.picker.lower_min_availability(*a);
        }
    }
    pub fn availability(&self, piece: u32) -> u16 {
        self.availability[piece as usize]
    }

    // ---- blocks -------------------------------------------------------------------------------

    /// Reserves the next block to request from a peer that has `peer_has`. `hint` is the piece this peer
    /// filled last; it is tried first, so one fast peer tends to fetch whole pieces in order.
    /// `whole_pieces`: the peer is fast enough to fetch a piece on its own (see [`picker::prefers_whole_pieces`]),
    /// so it starts a new piece before joining one another peer is fetching.
    /// `already_requested` tells whether this peer has a block in flight (checked only in endgame).
    pub fn reserve_block(
        &mut self,
        peer_has: &Bitfield,
        hint: &mut Option<u32>,
        whole_pieces: bool,
        endgame: Option<&dyn Fn(&BlockRef) -> bool>,
    ) -> Option<BlockRef> {
        picker::reserve_block(self, peer_has, hint, whole_pieces, endgame)
    }

    /// A request for `block` is no longer outstanding at one peer (timed out, choked, peer gone).
    pub fn release_block(&mut self, block: &BlockRef) {
        if let Some(pp) = self.partial.get_mut(&block.piece) {
            let state = &mut pp.blocks[block.index() as usize];
            if let BlockState::Requested { owners } = *state {
                *state = if owners > 1 {
                    BlockState::Requested { owners: owners - 1 }
                } else {
                    pp.free += 1;
                    pp.first_free = pp.first_free.min(block.index());
                    BlockState::Free
                };
            }
        }
    }

    /// A block we requested arrived from `peer` (fresh data is then written and hashed on the disk queue).
    /// `was_active` is false for a late copy of a request already given back to the pool: then every
    /// current owner of the block should cancel, not only the others in endgame.
    pub fn on_block(&mut self, block: &BlockRef, data: &[u8], peer: PeerNo, was_active: bool) -> BlockArrival {
        let Some(pp) = self.partial.get_mut(&block.piece) else {
            self.totals.wasted += data.len() as u64;
            return BlockArrival::Duplicate;
        };
        let index = block.index();
        let state = &mut pp.blocks[index as usize];
        match *state {
            BlockState::Received => {
                self.totals.wasted += data.len() as u64;
                return BlockArrival::Duplicate;
            }
            BlockState::Requested { owners } => {
                if owners > u8::from(was_active) {
                    self.taken_in_endgame.push(*block);
                }
            }
            BlockState::Free => pp.free -= 1,
        }
        *state = BlockState::Received;
        pp.received += 1;
        if !pp.contributors.contains(&peer) {
            pp.contributors.push(peer);
        }
        self.totals.downloaded += data.len() as u64;
        BlockArrival::Fresh { piece_complete: pp.is_complete() }
    }

    /// Blocks that arrived while other peers had them requested too (endgame, or a late copy); those peers
    /// should cancel.
    pub fn drain_endgame_taken(&mut self) -> std::vec::Drain<'_, BlockRef> {
        self.taken_in_endgame.drain(..)
    }

    pub fn has_endgame_taken(&self) -> bool {
        !self.taken_in_endgame.is_empty()
    }

    /// The piece passed its hash check: it is ours. Returns the peers that contributed to it.
    pub fn on_piece_verified(&mut self, verified: VerifiedPiece) -> Vec<PeerNo> {
        let piece = verified.piece();
        self.unconfirmed.clear(piece);
        let contributors = match self.partial.remove(&piece) {
            Some(pp) => {
                self.spare_blocks.push(pp.blocks);
                pp.contributors
            }
            None => Vec::new(),
        };
        if self.have.set(piece) && self.wanted.get(piece) {
            self.left -= u64::from(self.geometry.piece_len(piece));
        }
        contributors
    }

    /// The piece failed its hash check: every block goes back to the pool. Returns its contributors.
    pub fn on_piece_failed(&mut self, piece: u32) -> Vec<PeerNo> {
        self.totals.hash_failures += 1;
        self.totals.wasted += u64::from(self.geometry.piece_len(piece));
        match self.partial.get_mut(&piece) {
            Some(pp) => {
                for b in pp.blocks.iter_mut() {
                    *b = BlockState::Free;
                }
                pp.free = pp.blocks.len() as u32;
                pp.first_free = 0;
                pp.received = 0;
                pp.exclusive = true;
                std::mem::take(&mut pp.contributors)
            }
            None => Vec::new(),
        }
    }

    /// Payload uploaded to a peer.
    pub fn on_uploaded(&mut self, bytes: u64) {
        self.totals.uploaded += bytes;
    }

    fn start_piece(&mut self, piece: u32) -> &mut PartialPiece {
        self.unstarted -= 1;
        let n = self.geometry.blocks_in_piece(piece) as usize;
        let mut blocks = self.spare_blocks.pop().unwrap_or_default();
        blocks.clear();
        blocks.resize(n, BlockState::Free);
        self.partial.entry(piece).or_insert(PartialPiece {
            piece,
            blocks,
            received: 0,
            free: n as u32,
            first_free: 0,
            contributors: Vec::new(),
            exclusive: false,
        })
    }

    /// Asserts the invariants the simulation checks after every step.
    pub fn check_invariants(&self) {
        for (piece, pp) in &self.partial {
            assert_eq!(*piece, pp.piece);
            assert!(!self.have.get(*piece), "piece {piece} both verified and in progress");
            let free = pp.blocks.iter().filter(|b| **b == BlockState::Free).count() as u32;
            let received = pp.blocks.iter().filter(|b| **b == BlockState::Received).count() as u32;
            assert_eq!(free, pp.free, "free count of piece {piece}");
            assert_eq!(received, pp.received, "received count of piece {piece}");
            let first = pp.blocks.iter().position(|b| *b == BlockState::Free).unwrap_or(pp.blocks.len()) as u32;
            assert!(pp.first_free <= first, "a free block before first_free in piece {piece}");
            assert!(!self.unconfirmed.get(*piece), "piece {piece} both unconfirmed and in progress");
        }
        for p in self.unconfirmed.iter_ones() {
            assert!(!self.have.get(p), "piece {p} both verified and unconfirmed");
            assert!(p >= self.confirm_cursor, "unconfirmed piece {p} behind the cursor");
        }
        let left: u64 = (0..self.geometry.piece_count())
            .filter(|&p| self.wanted.get(p) && !self.have.get(p))
            .map(|p| u64::from(self.geometry.piece_len(p)))
            .sum();
        assert_eq!(left, self.left, "bytes left");
        let unstarted = (0..self.geometry.piece_count())
            .filter(|&p| {
                self.wanted.get(p) && !self.have.get(p) && !self.partial.contains_key(&p) && !self.unconfirmed.get(p)
            })
            .count() as u32;
        assert_eq!(unstarted, self.unstarted, "unstarted pieces");
    }

    /// Owners of a block, for invariant checks in tests.
    pub fn block_state(&self, block: &BlockRef) -> Option<BlockState> {
        self.partial.get(&block.piece).map(|pp| pp.blocks[block.index() as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::verify::assume_verified;

    /// 4 pieces of 32 KiB; piece 0 hashed at start, pieces 1 and 2 vouched for by the resume file.
    fn restored(wanted: Bitfield) -> Swarm {
        let geometry = Geometry::new(32 * 1024, 4 * 32 * 1024);
        let mut have = Bitfield::new(4);
        have.set(0);
        let mut unconfirmed = Bitfield::new(4);
        for p in [0, 1, 2] {
            unconfirmed.set(p);
        }
        Swarm::new(geometry, have, wanted, false).with_unconfirmed(&unconfirmed)
    }

    #[test]
    fn unconfirmed_pieces_are_neither_had_nor_wanted_but_count_as_left() {
        let s = restored(Bitfield::full(4));
        s.check_invariants();
        assert!(!s.is_unconfirmed(0), "a piece hashed at start stays had");
        assert_eq!(s.have().iter_ones().collect::<Vec<_>>(), [0], "only hashed pieces are advertised");
        assert!(!s.wants(1) && !s.wants(2) && s.wants(3), "unconfirmed pieces are not fetched");
        assert_eq!(s.left(), 3 * 32 * 1024, "unconfirmed pieces are not complete");
        assert_eq!(s.left_vouched(), 32 * 1024, "but trackers hear that only piece 3 is missing");
        assert!(!s.is_complete());
        assert_eq!(s.recorded().iter_ones().collect::<Vec<_>>(), [0, 1, 2], "a save keeps them");
    }

    #[test]
    fn unconfirmed_pieces_are_confirmed_in_order_by_a_verified_piece_only() {
        let mut s = restored(Bitfield::full(4));
        assert_eq!(s.next_unconfirmed(), Some(1));
        assert_eq!(s.next_unconfirmed(), Some(1), "asking again without a verdict gives the same piece");
        let _ = s.on_piece_verified(assume_verified(1));
        s.check_invariants();
        assert!(s.have().get(1) && !s.is_unconfirmed(1));
        assert_eq!(s.next_unconfirmed(), Some(2));
        let _ = s.on_piece_verified(assume_verified(2));
        assert_eq!(s.next_unconfirmed(), None);
        assert!(!s.has_unconfirmed());
        assert_eq!(s.left(), 32 * 1024, "only piece 3 is left to download");
        s.check_invariants();
    }

    #[test]
    fn unconfirmed_piece_that_fails_becomes_missing_and_wanted_again_in_a_download() {
        let mut s = restored(Bitfield::full(4));
        assert_eq!(s.next_unconfirmed(), Some(1));
        s.on_confirm_failed(1);
        s.check_invariants();
        assert!(!s.have().get(1) && !s.is_unconfirmed(1));
        assert!(s.wants(1), "a download fetches it again");
        assert_eq!(s.left_vouched(), 2 * 32 * 1024, "and trackers hear of it from the next announce");
        assert!(!s.recorded().get(1), "a save no longer vouches for it");
        assert_eq!(s.totals.hash_failures, 0, "no peer sent anything bad");
        assert_eq!(s.next_unconfirmed(), Some(2));
    }

    #[test]
    fn unconfirmed_piece_that_fails_in_a_seed_is_dropped_not_fetched() {
        // `rill seed` wants only what it hashed at start.
        let mut only_hashed = Bitfield::new(4);
        only_hashed.set(0);
        let mut s = restored(only_hashed);
        assert!(s.is_complete(), "a seed reports nothing left to trackers");
        s.on_confirm_failed(1);
        let _ = s.on_piece_verified(assume_verified(2));
        s.check_invariants();
        assert!(!s.wants(1) && !s.have().get(1));
        assert_eq!(s.have().iter_ones().collect::<Vec<_>>(), [0, 2]);
        assert!(s.is_complete());
    }
}
