//! Piece picking: which block to ask a peer for next.
//!
//! Owns: the order of requests — the peer's current piece first, then pieces others started (finish
//! partial pieces first), then a new piece, rarest first (or in order with `--sequential`); and endgame,
//! where blocks already requested elsewhere are requested again once nothing is free. A peer fast enough
//! to fetch a piece on its own takes whole pieces: it finishes only pieces nobody is fetching, starts a
//! new one, and joins another peer's piece only when nothing new is left for it.
//! Must not: send anything or know about timers; it only reserves blocks in `Swarm`.

use super::{BlockState, PartialPiece, Swarm};
use crate::bitfield::Bitfield;
use crate::geometry::BlockRef;

/// In endgame a block may be in flight at this many peers at once.
pub const ENDGAME_MAX_OWNERS: u8 = 3;
/// A peer takes endgame duplicates only once it has fewer than this many requests of its own in flight:
/// a fast peer first drains its own pipeline, then takes over what slow peers still hold. (It also keeps
/// the duplicate search, which looks at every block in flight, off the common path.)
pub const ENDGAME_PEER_DEPTH: u32 = 8;

/// A peer that would fetch a piece in at most this long on its own takes whole pieces (libtorrent's
/// `whole_pieces_threshold` is the same 20 s): slower peers join pieces others are fetching, so no piece
/// waits minutes on one slow peer.
pub const WHOLE_PIECE_SECS: f64 = 20.0;

/// Whether a peer sending `rate` bytes a second should take whole pieces of `piece_len` bytes. A peer
/// whose rate is not measured yet is given the benefit of the doubt.
pub fn prefers_whole_pieces(rate: f64, piece_len: u32) -> bool {
    rate <= 0.0 || rate * WHOLE_PIECE_SECS >= f64::from(piece_len)
}

pub struct PickerState {
    sequential: bool,
    /// Where the next scan for a new piece starts (rotates, so peers spread over the torrent).
    cursor: u32,
    /// A lower bound on the availability of any missing piece: a candidate this rare cannot be beaten,
    /// so the scan stops there. Exact after every full scan, lowered when a peer leaves.
    min_availability: u16,
}

impl PickerState {
    pub fn new(sequential: bool) -> Self {
        PickerState { sequential, cursor: 0, min_availability: 0 }
    }
    pub fn lower_min_availability(&mut self, a: u16) {
        self.min_availability = self.min_availability.min(a);
    }
}

fn first_free(swarm: &mut Swarm, piece: u32) -> Option<BlockRef> {
    let pp = swarm.partial.get_mut(&piece)?;
    if pp.free == 0 {
        return None;
    }
    // No block below `first_free` is free, so the scan starts there (blocks go out in order).
    let from = pp.first_free as usize;
    let i = from + pp.blocks[from..].iter().position(|b| *b == BlockState::Free)?;
    pp.blocks[i] = BlockState::Requested { owners: 1 };
    pp.free -= 1;
    pp.first_free = i as u32 + 1;
    Some(swarm.geometry.block_ref(piece, i as u32))
}

pub(super) fn reserve_block(
    swarm: &mut Swarm,
    peer_has: &Bitfield,
    hint: &mut Option<u32>,
    whole_pieces: bool,
    endgame: Option<&dyn Fn(&BlockRef) -> bool>,
) -> Option<BlockRef> {
    // 1. The piece this peer is filling.
    if let Some(piece) = *hint {
        if let Some(b) = first_free(swarm, piece) {
            return Some(b);
        }
    }
    // A peer that takes whole pieces leaves the pieces others are fetching to them: a piece that comes
    // from one peer arrives in order and is hashed as it is written, where one split across peers has
    // its out-of-order blocks read back from the disk. (In sequential mode the order matters more.)
    let whole_pieces = whole_pieces && !swarm.picker.sequential;
    // 2. Pieces in progress that still have free blocks: finish what is started. With whole pieces, only
    //    those nobody is fetching now (their peer left or choked us).
    if let Some(piece) = pick_started(swarm, peer_has, |pp| !whole_pieces || pp.in_flight() == 0) {
        *hint = Some(piece);
        return first_free(swarm, piece);
    }
    // 3. A new piece, while any is left unstarted.
    if let Some(piece) = pick_new_piece(swarm, peer_has).filter(|_| swarm.unstarted > 0) {
        swarm.start_piece(piece);
        *hint = Some(piece);
        return first_free(swarm, piece);
    }
    // 4. Nothing new is left this peer has: share pieces others are fetching.
    if whole_pieces {
        if let Some(piece) = pick_started(swarm, peer_has, |_| true) {
            *hint = Some(piece);
            return first_free(swarm, piece);
        }
    }
    // 5. Endgame: every block we still need is requested; ask this peer too for one it does not have
    //    in flight, the least-shared first; among those the one likely to arrive last: peers fetch a
    //    piece's blocks in order, so the last requested block of the least complete piece (the deepest
    //    in its peer's queue). `endgame` is `None` while the peer still has enough of its own.
    let already_requested = endgame?;
    let mut best: Option<(u8, u32, BlockRef)> = None;
    for pp in swarm.partial.values() {
        if !peer_has.get(pp.piece) {
            continue;
        }
        for (i, state) in pp.blocks.iter().enumerate().rev() {
            if let BlockState::Requested { owners } = *state {
                let better = match best {
                    None => true,
                    Some((o, received, _)) => owners < o || (owners == o && pp.received < received),
                };
                if owners >= ENDGAME_MAX_OWNERS || !better {
                    continue;
                }
                let block = swarm.geometry.block_ref(pp.piece, i as u32);
                if !already_requested(&block) {
                    best = Some((owners, pp.received, block));
                }
            }
        }
    }
    let (owners, _, block) = best?;
    if let Some(pp) = swarm.partial.get_mut(&block.piece) {
        pp.blocks[block.index() as usize] = BlockState::Requested { owners: owners + 1 };
    }
    Some(block)
}

/// The started piece with free blocks the peer has and `eligible` accepts, the most complete first (in
/// order when sequential).
fn pick_started(swarm: &Swarm, peer_has: &Bitfield, eligible: impl Fn(&PartialPiece) -> bool) -> Option<u32> {
    swarm
        .partial
        .values()
        .filter(|pp| pp.is_joinable() && peer_has.get(pp.piece) && eligible(pp))
        .min_by_key(|pp| if swarm.picker.sequential { pp.piece } else { u32::MAX - pp.received })
        .map(|pp| pp.piece)
}

/// The rarest missing, wanted piece the peer has and nobody has started; in order when sequential.
fn pick_new_piece(swarm: &mut Swarm, peer_has: &Bitfield) -> Option<u32> {
    let n = swarm.geometry.piece_count();
    if n == 0 {
        return None;
    }
    let candidate = |swarm: &Swarm, p: u32| peer_has.get(p) && swarm.wants(p) && !swarm.partial.contains_key(&p);
    if swarm.picker.sequential {
        return (0..n).find(|&p| candidate(swarm, p));
    }
    let start = swarm.picker.cursor % n;
    let floor = swarm.picker.min_availability;
    let mut best: Option<(u16, u32)> = None;
    let mut global_min = u16::MAX;
    let mut scanned_all = true;
    for step in 0..n {
        let p = (start + step) % n;
        if !swarm.wants(p) {
            continue;
        }
        let a = swarm.availability[p as usize];
        global_min = global_min.min(a);
        if !candidate(swarm, p) || best.is_some_and(|(b, _)| b <= a) {
            continue;
        }
        best = Some((a, p));
        if a <= floor {
            scanned_all = false;
            break;
        }
    }
    if scanned_all {
        swarm.picker.min_availability = if global_min == u16::MAX { 0 } else { global_min };
    }
    let (_, piece) = best?;
    swarm.picker.cursor = piece + 1;
    Some(piece)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::{Geometry, BLOCK_LEN};
    use crate::swarm::PeerNo;

    fn swarm(pieces: u32, sequential: bool) -> Swarm {
        let g = Geometry::new(2 * BLOCK_LEN, u64::from(pieces) * u64::from(2 * BLOCK_LEN));
        Swarm::new(g, Bitfield::new(pieces), Bitfield::full(pieces), sequential)
    }

    #[test]
    fn rarest_piece_first_then_blocks_of_the_same_piece() {
        let mut s = swarm(4, false);
        let all = Bitfield::full(4);
        s.on_peer_bitfield(&all);
        s.on_peer_bitfield(&all);
        let mut rare = Bitfield::new(4);
        rare.set(2);
        s.on_peer_bitfield(&rare); // piece 2 is the only one three peers do not all have... it is the most common
        let mut only3 = Bitfield::new(4);
        for p in [0, 1, 3] {
            only3.set(p);
        }
        s.on_peer_bitfield(&only3); // availability: 0,1,3 → 3; 2 → 3 as well
        s.on_peer_gone(&only3); // back to 0,1,3 → 2; 2 → 3
        let mut hint = None;
        let b = s.reserve_block(&all, &mut hint, true, None).unwrap();
        assert_ne!(b.piece, 2, "piece 2 is the most available, never the first pick");
        let b2 = s.reserve_block(&all, &mut hint, true, None).unwrap();
        assert_eq!((b2.piece, b2.offset), (b.piece, BLOCK_LEN), "same piece, next block");
        s.check_invariants();
    }

    #[test]
    fn a_piece_refetched_from_one_peer_after_a_hash_failure_is_taken_over_once_that_peer_lets_go() {
        let mut s = swarm(1, false);
        let all = Bitfield::full(1);
        let mut h = None;
        for _ in 0..2 {
            let b = s.reserve_block(&all, &mut h, true, None).unwrap();
            s.on_block(&b, &vec![0; b.len as usize], PeerNo(1), true);
        }
        s.on_piece_failed(0);
        // One peer re-fetches it: first block in, second in flight. Nobody else may join.
        let mut owner = None;
        let b0 = s.reserve_block(&all, &mut owner, true, None).unwrap();
        let b1 = s.reserve_block(&all, &mut owner, true, None).unwrap();
        s.on_block(&b0, &vec![0; b0.len as usize], PeerNo(2), true);
        let mut other = None;
        assert_eq!(s.reserve_block(&all, &mut other, true, None), None, "the piece is one peer's while it fetches");
        // That peer goes (its request released): the last block is free for anyone.
        s.release_block(&b1);
        let taken = s.reserve_block(&all, &mut other, true, None);
        assert_eq!(taken, Some(b1), "a half-fetched exclusive piece nobody fetches must not stall the download");
        s.check_invariants();
    }

    #[test]
    fn partial_pieces_are_finished_before_new_ones() {
        let mut s = swarm(4, true);
        let all = Bitfield::full(4);
        let mut hint_a = None;
        let a = s.reserve_block(&all, &mut hint_a, true, None).unwrap();
        assert_eq!(a.piece, 0);
        let mut hint_b = None;
        let b = s.reserve_block(&all, &mut hint_b, true, None).unwrap();
        assert_eq!((b.piece, b.offset), (0, BLOCK_LEN), "joins the started piece");
        let c = s.reserve_block(&all, &mut hint_b, true, None).unwrap();
        assert_eq!(c.piece, 1, "piece 0 has no free block left");
    }

    #[test]
    fn a_fast_peer_takes_whole_pieces_and_a_slow_one_joins() {
        let mut s = swarm(3, false);
        let all = Bitfield::full(3);
        s.on_peer_bitfield(&all);
        let mut a = None;
        let a0 = s.reserve_block(&all, &mut a, true, None).unwrap();
        // Peer b takes a piece of its own rather than the free block of a's piece.
        let mut b = None;
        let b0 = s.reserve_block(&all, &mut b, true, None).unwrap();
        assert_ne!(b0.piece, a0.piece, "a fast peer starts its own piece");
        assert_eq!(b0.offset, 0);
        // A slow peer joins a started piece instead of starting the last one.
        let mut slow = None;
        let joined = s.reserve_block(&all, &mut slow, false, None).unwrap();
        assert!(joined.piece == a0.piece || joined.piece == b0.piece, "a slow peer shares: {joined:?}");
        assert_eq!(joined.offset, BLOCK_LEN);
        s.check_invariants();
    }

    #[test]
    fn a_whole_piece_peer_finishes_abandoned_pieces_first_and_shares_once_nothing_is_new() {
        let mut s = swarm(2, false);
        let all = Bitfield::full(2);
        s.on_peer_bitfield(&all);
        // Peer a fetched the first block of a piece, then left with the second in flight.
        let mut a = None;
        let a0 = s.reserve_block(&all, &mut a, true, None).unwrap();
        let a1 = s.reserve_block(&all, &mut a, true, None).unwrap();
        s.on_block(&a0, &vec![0; a0.len as usize], PeerNo(1), true);
        s.release_block(&a1);
        // Peer b finishes that piece before starting the other one: nobody is fetching it.
        let mut b = None;
        assert_eq!(s.reserve_block(&all, &mut b, true, None), Some(a1));
        // Peer c starts the untouched piece; then peer d, with nothing new left, shares c's piece.
        let mut c = None;
        let c0 = s.reserve_block(&all, &mut c, true, None).unwrap();
        assert_ne!(c0.piece, a1.piece);
        let mut d = None;
        let d0 = s.reserve_block(&all, &mut d, true, None).unwrap();
        assert_eq!((d0.piece, d0.offset), (c0.piece, BLOCK_LEN), "nothing new left: it shares");
        s.check_invariants();
    }

    #[test]
    fn whole_pieces_for_peers_that_fetch_a_piece_within_the_threshold() {
        let piece = 4 << 20;
        assert!(prefers_whole_pieces(0.0, piece), "an unmeasured peer gets the benefit of the doubt");
        assert!(prefers_whole_pieces(1_000_000.0, piece));
        assert!(!prefers_whole_pieces(100_000.0, piece), "40 s for a piece: it shares");
    }

    #[test]
    fn released_blocks_return_to_the_pool_and_endgame_duplicates() {
        let mut s = swarm(1, false);
        let all = Bitfield::full(1);
        let mut h = None;
        let b0 = s.reserve_block(&all, &mut h, true, None).unwrap();
        let b1 = s.reserve_block(&all, &mut h, true, None).unwrap();
        s.release_block(&b0);
        assert_eq!(s.block_state(&b0), Some(BlockState::Free));
        let again = s.reserve_block(&all, &mut h, true, None).unwrap();
        assert_eq!(again, b0);
        // Everything requested: a second peer gets an endgame duplicate it does not have in flight.
        let mut h2 = None;
        let dup = s.reserve_block(&all, &mut h2, true, Some(&|b: &BlockRef| *b == b0)).unwrap();
        assert_eq!(dup, b1);
        // A third peer: the least-shared block first, b0, then the one requested last, b1.
        let mut h3 = None;
        assert_eq!(s.reserve_block(&all, &mut h3, true, Some(&|_: &BlockRef| false)), Some(b0));
        assert_eq!(s.reserve_block(&all, &mut h3, true, Some(&|b: &BlockRef| *b == b0)), Some(b1));
        for b in [b0, b1] {
            s.release_block(&b); // the third peer lets go
        }
        assert_eq!(s.block_state(&b1), Some(BlockState::Requested { owners: 2 }));
        assert_eq!(
            s.on_block(&b1, &[0; BLOCK_LEN as usize], PeerNo(1), true),
            BlockArrival::Fresh { piece_complete: false }
        );
        assert_eq!(s.drain_endgame_taken().collect::<Vec<_>>(), vec![b1]);
        assert_eq!(s.on_block(&b1, &[0; BLOCK_LEN as usize], PeerNo(2), true), BlockArrival::Duplicate);
        assert_eq!(s.totals.wasted, u64::from(BLOCK_LEN));
        s.check_invariants();
    }

    use crate::swarm::BlockArrival;
}
