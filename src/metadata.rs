//! Fetching a torrent's info dictionary from peers (BEP 9) when only its info-hash is known (a magnet link).
//!
//! Owns: the metadata's size (the one most peers offer, within [`MAX_METADATA_SIZE`]), which peer is asked
//! for which 16 KiB piece (spread over peers, at most [`MAX_IN_FLIGHT_PER_PEER`] each), re-asking on a
//! reject or after [`REQUEST_TIMEOUT`], assembly, and the SHA-1 check against the info-hash. A peer that
//! answers with the wrong size or length is reported as misbehaving; when the whole fails its hash every
//! peer that contributed is banned from the fetch and never asked again.
//! Must not: send anything, parse the info dictionary, or read the clock (time comes in as `now`).
//! Sans-I/O: `on_*` in, `poll_request` and `next_deadline` out; the caller encodes requests with
//! `wire::ut_metadata`.
//!
//! <https://www.bittorrent.org/beps/bep_0009.html>

use std::fmt;
use std::time::Duration;

use sha1::{Digest, Sha1};

use crate::metainfo::InfoHash;
use crate::time::{secs, Timestamp};
use crate::wire::ut_metadata::METADATA_PIECE_LEN;

/// Largest metadata accepted (a 200,000-file torrent's info is about 20 MiB; real ones are far smaller).
pub const MAX_METADATA_SIZE: u32 = 16 * 1024 * 1024;
/// A request unanswered this long is given to another peer.
pub const REQUEST_TIMEOUT: Duration = secs(10);
/// Requests outstanding to one peer at once.
pub const MAX_IN_FLIGHT_PER_PEER: u8 = 4;

/// Who a peer is, for this machine: the caller's connection number.
pub type PeerKey = u64;

/// Why a peer's message was not taken; the caller drops the peer for `SizeMismatch` and `BadLength`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetadataMisbehaved {
    /// `total_size` differs from the size being fetched.
    SizeMismatch { got: u32, want: u32 },
    /// A piece of the wrong length.
    BadLength { piece: u32, got: usize, want: usize },
}

impl fmt::Display for MetadataMisbehaved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MetadataMisbehaved::SizeMismatch { got, want } => {
                write!(f, "metadata total_size {got}, but {want} is being fetched")
            }
            MetadataMisbehaved::BadLength { piece, got, want } => {
                write!(f, "metadata piece {piece} of {got} bytes, expected {want}")
            }
        }
    }
}

/// What a data message led to.
#[derive(Debug, PartialEq, Eq)]
pub enum DataOutcome {
    /// Stored; more pieces to come.
    Stored,
    /// Not asked of this peer (late after a time-out, or unsolicited): ignored.
    Unrequested,
    Misbehaved(MetadataMisbehaved),
    /// Every piece is here and the SHA-1 matches: the raw info dictionary.
    Complete(Vec<u8>),
    /// Every piece is here and the SHA-1 does not match: these peers sent parts of it and are banned; the
    /// fetch starts over with the others.
    HashFailed {
        banned: Vec<PeerKey>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PieceState {
    Missing,
    Requested { peer: PeerKey, at: Timestamp },
    Received { from: PeerKey },
}

#[derive(Clone, Copy, Debug)]
struct Peer {
    key: PeerKey,
    /// The `metadata_size` it advertised (already within bounds).
    offered: u32,
    in_flight: u8,
    banned: bool,
}

/// One torrent's metadata fetch.
///
/// Invariants: `buf.len()` and `pieces.len()` match `size` (both empty while `size` is `None`); a piece is
/// `Requested` by peer P exactly `P.in_flight` times over all pieces.
#[derive(Debug)]
pub struct MetadataFetch {
    info_hash: InfoHash,
    size: Option<u32>,
    buf: Vec<u8>,
    pieces: Vec<PieceState>,
    peers: Vec<Peer>,
    /// Peers that ever got a request, for the status line.
    asked: u32,
}

impl MetadataFetch {
    pub fn new(info_hash: InfoHash) -> Self {
        MetadataFetch { info_hash, size: None, buf: vec![], pieces: vec![], peers: vec![], asked: 0 }
    }

    /// A peer's extended handshake said it has the metadata, `metadata_size` bytes of it. A size of 0,
    /// above [`MAX_METADATA_SIZE`], or from a banned peer is ignored (the peer is never asked).
    pub fn on_peer_offers(&mut self, key: PeerKey, metadata_size: u32) {
        if metadata_size == 0 || metadata_size > MAX_METADATA_SIZE {
            return;
        }
        match self.peers.iter_mut().find(|p| p.key == key) {
            Some(p) if p.banned => {}
            Some(p) if p.in_flight == 0 => p.offered = metadata_size,
            Some(_) => {}
            None => self.peers.push(Peer { key, offered: metadata_size, in_flight: 0, banned: false }),
        }
    }

    /// The peer is gone: its requests go back to the pool. A banned peer stays remembered.
    pub fn on_peer_gone(&mut self, key: PeerKey) {
        self.release_requests_of(key);
        self.peers.retain(|p| p.key != key || p.banned);
    }

    /// The next piece to ask `key` for, if any; the caller sends the request at once.
    pub fn poll_request(&mut self, key: PeerKey, now: Timestamp) -> Option<u32> {
        self.choose_size();
        let size = self.size?;
        let peer = self.peers.iter().position(|p| p.key == key)?;
        let p = self.peers[peer];
        if p.banned || p.offered != size || p.in_flight >= MAX_IN_FLIGHT_PER_PEER {
            return None;
        }
        let piece = self.pieces.iter().position(|s| *s == PieceState::Missing)?;
        self.pieces[piece] = PieceState::Requested { peer: key, at: now };
        if self.peers[peer].in_flight == 0
            && !self.pieces.iter().any(|s| matches!(s, PieceState::Received { from } if *from == key))
        {
            self.asked += 1;
        }
        self.peers[peer].in_flight += 1;
        Some(piece as u32)
    }

    /// The peer will not send `piece`.
    pub fn on_reject(&mut self, key: PeerKey, piece: u32) {
        if let Some(PieceState::Requested { peer, .. }) = self.pieces.get(piece as usize).copied() {
            if peer == key {
                self.pieces[piece as usize] = PieceState::Missing;
                self.in_flight_done(key);
            }
        }
    }

    pub fn on_data(&mut self, key: PeerKey, piece: u32, total_size: u32, data: &[u8]) -> DataOutcome {
        let Some(size) = self.size else { return DataOutcome::Unrequested };
        match self.pieces.get(piece as usize) {
            Some(PieceState::Requested { peer, .. }) if *peer == key => {}
            _ => return DataOutcome::Unrequested,
        }
        self.pieces[piece as usize] = PieceState::Missing;
        self.in_flight_done(key);
        if total_size != size {
            return DataOutcome::Misbehaved(MetadataMisbehaved::SizeMismatch { got: total_size, want: size });
        }
        let start = piece as usize * METADATA_PIECE_LEN as usize;
        let want = (size as usize - start).min(METADATA_PIECE_LEN as usize);
        if data.len() != want {
            return DataOutcome::Misbehaved(MetadataMisbehaved::BadLength { piece, got: data.len(), want });
        }
        self.buf[start..start + want].copy_from_slice(data);
        self.pieces[piece as usize] = PieceState::Received { from: key };
        if !self.pieces.iter().all(|s| matches!(s, PieceState::Received { .. })) {
            return DataOutcome::Stored;
        }
        if Sha1::digest(&self.buf).as_slice() == self.info_hash.0 {
            let info = std::mem::take(&mut self.buf);
            self.pieces.clear();
            return DataOutcome::Complete(info);
        }
        let mut banned: Vec<PeerKey> = self
            .pieces
            .iter()
            .filter_map(|s| if let PieceState::Received { from } = s { Some(*from) } else { None })
            .collect();
        banned.sort_unstable();
        banned.dedup();
        for p in self.peers.iter_mut().filter(|p| banned.contains(&p.key)) {
            p.banned = true;
        }
        self.reset();
        DataOutcome::HashFailed { banned }
    }

    /// Requests older than [`REQUEST_TIMEOUT`] go back to the pool. A call with nothing due does nothing.
    pub fn on_timeout(&mut self, now: Timestamp) {
        for i in 0..self.pieces.len() {
            if let PieceState::Requested { peer, at } = self.pieces[i] {
                if now >= at + REQUEST_TIMEOUT {
                    self.pieces[i] = PieceState::Missing;
                    self.in_flight_done(peer);
                }
            }
        }
    }

    /// When the oldest request times out.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.pieces
            .iter()
            .filter_map(|s| if let PieceState::Requested { at, .. } = s { Some(*at + REQUEST_TIMEOUT) } else { None })
            .min()
    }

    /// Whether `key` was banned for sending part of metadata that failed its hash.
    pub fn is_banned(&self, key: PeerKey) -> bool {
        self.peers.iter().any(|p| p.key == key && p.banned)
    }

    /// (pieces received, pieces in all) once the size is known.
    pub fn progress(&self) -> Option<(u32, u32)> {
        let received = self.pieces.iter().filter(|s| matches!(s, PieceState::Received { .. })).count();
        self.size.map(|_| (received as u32, self.pieces.len() as u32))
    }

    /// Peers asked for at least one piece so far.
    pub fn peers_asked(&self) -> u32 {
        self.asked
    }

    /// Fixes the size to fetch, once nothing is in flight: the size the most unbanned peers offer (the
    /// smaller one on a tie), so one liar cannot pick it alone.
    fn choose_size(&mut self) {
        if self.size.is_some() {
            return;
        }
        let mut best: Option<(usize, u32)> = None;
        for p in self.peers.iter().filter(|p| !p.banned) {
            let votes = self.peers.iter().filter(|q| !q.banned && q.offered == p.offered).count();
            let better = match best {
                None => true,
                Some((v, s)) => votes > v || (votes == v && p.offered < s),
            };
            if better {
                best = Some((votes, p.offered));
            }
        }
        if let Some((_, size)) = best {
            self.size = Some(size);
            self.buf = vec![0; size as usize];
            self.pieces = vec![PieceState::Missing; size.div_ceil(METADATA_PIECE_LEN) as usize];
        }
    }

    fn reset(&mut self) {
        self.size = None;
        self.buf = vec![];
        self.pieces.clear();
        for p in &mut self.peers {
            p.in_flight = 0;
        }
    }

    fn release_requests_of(&mut self, key: PeerKey) {
        for s in &mut self.pieces {
            if matches!(s, PieceState::Requested { peer, .. } if *peer == key) {
                *s = PieceState::Missing;
            }
        }
        if let Some(p) = self.peers.iter_mut().find(|p| p.key == key) {
            p.in_flight = 0;
        }
    }

    fn in_flight_done(&mut self, key: PeerKey) {
        if let Some(p) = self.peers.iter_mut().find(|p| p.key == key) {
            p.in_flight = p.in_flight.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::ZERO;

    /// A 40,000-byte info dictionary (3 pieces) and its hash.
    fn info() -> (Vec<u8>, InfoHash) {
        let bytes: Vec<u8> = (0..40_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let hash = InfoHash(Sha1::digest(&bytes).into());
        (bytes, hash)
    }

    fn piece(info: &[u8], i: u32) -> &[u8] {
        let start = i as usize * 16_384;
        &info[start..(start + 16_384).min(info.len())]
    }

    #[test]
    fn pieces_spread_over_peers_assemble_and_verify() {
        let (info, hash) = info();
        let mut f = MetadataFetch::new(hash);
        f.on_peer_offers(1, 40_000);
        f.on_peer_offers(2, 40_000);
        assert_eq!(f.poll_request(1, T0), Some(0));
        assert_eq!(f.poll_request(2, T0), Some(1));
        assert_eq!(f.poll_request(2, T0), Some(2));
        assert_eq!(f.poll_request(1, T0), None, "nothing left to ask");
        assert_eq!(f.progress(), Some((0, 3)));
        assert_eq!(f.peers_asked(), 2);
        assert_eq!(f.on_data(2, 2, 40_000, piece(&info, 2)), DataOutcome::Stored);
        assert_eq!(f.on_data(1, 0, 40_000, piece(&info, 0)), DataOutcome::Stored);
        assert_eq!(f.on_data(2, 1, 40_000, piece(&info, 1)), DataOutcome::Complete(info.clone()));
    }

    #[test]
    fn a_wrong_hash_bans_the_contributors_and_starts_over_with_others() {
        let (info, hash) = info();
        let mut f = MetadataFetch::new(hash);
        f.on_peer_offers(1, 40_000);
        for i in 0..3 {
            assert_eq!(f.poll_request(1, T0), Some(i));
        }
        let mut bad = piece(&info, 1).to_vec();
        bad[5] ^= 1;
        f.on_data(1, 0, 40_000, piece(&info, 0));
        f.on_data(1, 1, 40_000, &bad);
        assert_eq!(f.on_data(1, 2, 40_000, piece(&info, 2)), DataOutcome::HashFailed { banned: vec![1] });
        assert!(f.is_banned(1));
        assert_eq!(f.poll_request(1, T0), None, "a banned peer is never asked again");
        f.on_peer_offers(1, 40_000);
        assert_eq!(f.poll_request(1, T0), None);
        f.on_peer_offers(2, 40_000);
        assert_eq!(f.poll_request(2, T0), Some(0));
    }

    #[test]
    fn a_lying_size_is_outvoted_and_a_mismatched_answer_is_misbehaviour() {
        let (info, hash) = info();
        let mut f = MetadataFetch::new(hash);
        f.on_peer_offers(9, 15_000_000); // a liar
        f.on_peer_offers(1, 40_000);
        f.on_peer_offers(2, 40_000);
        assert_eq!(f.poll_request(9, T0), None, "the liar's size lost the vote");
        assert_eq!(f.poll_request(1, T0), Some(0));
        assert_eq!(
            f.on_data(1, 0, 39_999, piece(&info, 0)),
            DataOutcome::Misbehaved(MetadataMisbehaved::SizeMismatch { got: 39_999, want: 40_000 })
        );
        assert_eq!(f.poll_request(2, T0), Some(0), "the piece went back to the pool");
        assert_eq!(
            f.on_data(2, 0, 40_000, &info[..100]),
            DataOutcome::Misbehaved(MetadataMisbehaved::BadLength { piece: 0, got: 100, want: 16_384 })
        );
        // Sizes of 0 or above the cap are never trusted.
        let mut g = MetadataFetch::new(hash);
        g.on_peer_offers(1, 0);
        g.on_peer_offers(2, MAX_METADATA_SIZE + 1);
        assert_eq!(g.poll_request(1, T0), None);
        assert_eq!(g.poll_request(2, T0), None);
        assert_eq!(g.progress(), None);
    }

    #[test]
    fn rejects_and_time_outs_hand_pieces_to_others_and_late_data_is_ignored() {
        let (info, hash) = info();
        let mut f = MetadataFetch::new(hash);
        f.on_peer_offers(1, 40_000);
        f.on_peer_offers(2, 40_000);
        assert_eq!(f.poll_request(1, T0), Some(0));
        f.on_reject(1, 0);
        assert_eq!(f.poll_request(2, T0), Some(0));
        assert_eq!(f.next_deadline(), Some(T0 + REQUEST_TIMEOUT));
        f.on_timeout(T0 + secs(9));
        assert_eq!(f.poll_request(1, T0 + secs(9)), Some(1));
        f.on_timeout(T0 + REQUEST_TIMEOUT);
        assert_eq!(f.poll_request(1, T0 + REQUEST_TIMEOUT), Some(0), "piece 0 timed out at peer 2");
        assert_eq!(f.on_data(2, 0, 40_000, piece(&info, 0)), DataOutcome::Unrequested);
        assert_eq!(f.on_data(3, 2, 40_000, piece(&info, 2)), DataOutcome::Unrequested);
        f.on_peer_gone(1);
        assert_eq!(f.poll_request(2, T0 + REQUEST_TIMEOUT), Some(0), "peer 1's pieces went back");
    }

    #[test]
    fn in_flight_per_peer_is_capped() {
        let hash = InfoHash([1; 20]);
        let mut f = MetadataFetch::new(hash);
        f.on_peer_offers(1, MAX_METADATA_SIZE);
        let asked: Vec<u32> = (0..10).filter_map(|_| f.poll_request(1, T0)).collect();
        assert_eq!(asked.len(), MAX_IN_FLIGHT_PER_PEER as usize);
    }
}
