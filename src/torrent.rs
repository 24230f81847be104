//! One torrent's core: the shared context, the swarm and the storage, and how a session's effects are
//! carried out against them.
//!
//! Owns: turning a peer's parsed input into session calls and effects (write a block, finish and verify
//! a piece, remember verified pieces for the `have` broadcast), and serving a session's queued requests
//! from storage into its write buffer.
//! Must not: touch sockets or the clock. The event loop and the in-memory simulation both drive it, so
//! what the simulation checks is what the loop runs.

use crate::geometry::BlockRef;
use crate::peer::buffers::ReadBuf;
use crate::peer::session::{Effect, PeerSession, Phase, TorrentContext};
use crate::peer::DropReason;
use crate::storage::{verify, Storage, StorageError};
use crate::swarm::bans::BanList;
use crate::swarm::{BlockArrival, PeerNo, Swarm};
use crate::time::Timestamp;

/// Why processing a peer's input stopped.
#[derive(Debug)]
pub enum InputError {
    /// Hang up on this peer.
    Drop(DropReason),
    /// Data is at risk: rill must stop.
    Fatal(StorageError),
}

impl From<DropReason> for InputError {
    fn from(r: DropReason) -> Self {
        InputError::Drop(r)
    }
}

pub struct Torrent {
    pub ctx: TorrentContext,
    pub swarm: Swarm,
    pub storage: Storage,
    pub piece_hashes: Vec<[u8; 20]>,
    /// Pieces verified since the loop last announced them to every peer.
    pub verified: Vec<u32>,
    /// Peers to disconnect and never talk to again (they sent data that failed verification); the driver
    /// drains this after every input.
    pub to_ban: Vec<PeerNo>,
    /// Pieces that failed their hash check since the engine last took them (for the trace).
    pub failed: Vec<u32>,
    /// Unconfirmed pieces that passed their check (see `confirm_some`): the driver announces them
    /// (`PeerSession::on_we_confirmed`, not `on_we_have`: they were never wanted) and drains this.
    pub confirmed: Vec<u32>,
    /// Unconfirmed pieces whose data no longer matched: the driver prints one line for each, tells every
    /// session (`PeerSession::on_piece_wanted`) and drains this.
    pub confirm_failed: Vec<u32>,
    /// The raw info dictionary, served to peers that ask (BEP 9); `None` when not known as bytes.
    pub info: Option<Vec<u8>>,
    /// ut_pex payloads received (peer, payload), for the engine's peer exchange; drained every turn and
    /// bounded per turn.
    pub pex_in: Vec<(PeerNo, Vec<u8>)>,
    bans: BanList,
}

/// ut_pex payloads kept per turn at most (more are dropped: a peer exchange is once a minute per peer).
const MAX_PEX_PER_TURN: usize = 64;

/// How much unconfirmed data `confirm_some` hashes per call (at least one piece): the loop calls it once
/// a turn, so peers wait at most this long for their turn (~4 ms at SHA-1 speed from the page cache).
pub const CONFIRM_PER_TURN_BYTES: u64 = 4 * 1024 * 1024;

impl Torrent {
    pub fn new(ctx: TorrentContext, swarm: Swarm, storage: Storage, piece_hashes: Vec<[u8; 20]>) -> Self {
        Torrent {
            ctx,
            swarm,
            storage,
            piece_hashes,
            verified: Vec::new(),
            to_ban: Vec::new(),
            failed: Vec::new(),
            confirmed: Vec::new(),
            confirm_failed: Vec::new(),
            info: None,
            pex_in: Vec::new(),
            bans: BanList::default(),
        }
    }

    /// Parses and handles every whole frame in `read` (the handshake first, if it is awaited).
    pub fn process_input(
        &mut self,
        read: &mut ReadBuf,
        session: &mut PeerSession,
        now: Timestamp,
    ) -> Result<(), InputError> {
        if !take_handshake(read, session, &self.ctx, &mut self.swarm, now)? {
            return Ok(());
        }
        while let Some(frame) = read.next_frame(&self.ctx.limits).map_err(DropReason::from)? {
            match session.on_frame(frame, &self.ctx, &mut self.swarm, now)? {
                Effect::Nothing | Effect::ExtendedHandshake => {}
                Effect::Metadata(payload) => serve_metadata(self.info.as_deref(), session, payload),
                Effect::Pex(payload) => {
                    if !self.ctx.private && self.pex_in.len() < MAX_PEX_PER_TURN {
                        self.pex_in.push((session.no, payload.to_vec()));
                    }
                }
                Effect::StoreBlock { block, data, piece_complete } => {
                    let offset = self.ctx.geometry.piece_offset(block.piece) + u64::from(block.offset);
                    self.storage.write(offset, data).map_err(InputError::Fatal)?;
                    if piece_complete {
                        self.verify_completed_piece(block.piece).map_err(InputError::Fatal)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A block from a source other than a peer session (a web seed): recorded in the swarm as from `no`,
    /// written, and the piece verified when it is complete. False for a duplicate (nothing written).
    pub fn store_block(&mut self, no: PeerNo, block: &BlockRef, data: &[u8]) -> Result<bool, StorageError> {
        match self.swarm.on_block(block, data, no, true) {
            BlockArrival::Duplicate => Ok(false),
            BlockArrival::Fresh { piece_complete } => {
                let offset = self.ctx.geometry.piece_offset(block.piece) + u64::from(block.offset);
                self.storage.write(offset, data)?;
                if piece_complete {
                    self.verify_completed_piece(block.piece)?;
                }
                Ok(true)
            }
        }
    }

    /// Finishes a complete piece's hash (reading back only the blocks not hashed on arrival) and records
    /// the verdict in the swarm.
    pub fn verify_completed_piece(&mut self, piece: u32) -> Result<(), StorageError> {
        let Some((hasher, hashed)) = self.swarm.take_hasher(piece) else {
            return Ok(());
        };
        let expected = &self.piece_hashes[piece as usize];
        let geometry = self.ctx.geometry;
        match verify::finish_piece(&mut self.storage, &geometry, piece, hasher, hashed, expected)? {
            Some(verified) => {
                self.swarm.on_piece_verified(verified);
                self.verified.push(piece);
            }
            None => {
                log::info!("piece {piece} failed its hash check; fetching it again");
                self.failed.push(piece);
                let contributors = self.swarm.on_piece_failed(piece);
                let banned = self.bans.on_piece_failed(&contributors);
                self.to_ban.extend(banned);
            }
        }
        Ok(())
    }

    /// Confirms unconfirmed pieces (trusted from the resume file, not hashed in this run): hashes them
    /// from disk, lowest first, until `budget` bytes are done (at least one piece). A piece that verifies
    /// becomes had and joins `confirmed`; one that does not becomes missing and joins `confirm_failed`. Returns whether unconfirmed pieces remain.
    pub fn confirm_some(&mut self, budget: u64) -> Result<bool, StorageError> {
        let geometry = self.ctx.geometry;
        let mut hashed = 0u64;
        while let Some(piece) = self.swarm.next_unconfirmed() {
            if hashed > 0 && hashed >= budget {
                break;
            }
            let expected = &self.piece_hashes[piece as usize];
            match verify::check_piece(&mut self.storage, &geometry, piece, expected)? {
                Some(verified) => {
                    self.swarm.on_piece_verified(verified);
                    self.confirmed.push(piece);
                }
                None => {
                    self.swarm.on_confirm_failed(piece);
                    self.confirm_failed.push(piece);
                }
            }
            hashed += u64::from(geometry.piece_len(piece));
        }
        Ok(self.swarm.has_unconfirmed())
    }

    pub fn is_banned(&self, no: PeerNo) -> bool {
        self.bans.is_banned(no)
    }

    /// Serves the session's queued requests from storage while `allowance` bytes remain and its send
    /// queue has room. Returns the payload bytes served.
    pub fn serve(&mut self, session: &mut PeerSession, allowance: &mut u64) -> Result<u64, StorageError> {
        let mut served = 0;
        while *allowance > 0 {
            let geometry = self.ctx.geometry;
            let storage = &mut self.storage;
            let block = session.serve_next(|block, buf| {
                storage.read(geometry.piece_offset(block.piece) + u64::from(block.offset), buf)
            })?;
            let Some(block) = block else {
                break;
            };
            served += u64::from(block.len);
            *allowance = allowance.saturating_sub(u64::from(block.len));
        }
        self.swarm.on_uploaded(served);
        Ok(served)
    }
}

/// Answers a peer's ut_metadata request from the raw info dictionary (or rejects it when we do not have it,
/// or the piece is out of range). Data and rejects from the peer mean nothing once we have the metadata.
pub fn serve_metadata(info: Option<&[u8]>, session: &mut PeerSession, payload: &[u8]) {
    use crate::peer::session::PeerExtension;
    use crate::wire::ut_metadata::{self, MetadataMessage};
    let Ok(MetadataMessage::Request { piece }) = ut_metadata::decode(payload) else {
        return;
    };
    let mut reply = Vec::with_capacity(ut_metadata::METADATA_PIECE_LEN as usize + 64);
    if info.and_then(|info| ut_metadata::encode_data(piece, info, &mut reply)).is_none() {
        reply.clear();
        ut_metadata::encode_reject(piece, &mut reply);
    }
    session.send_extended(PeerExtension::Metadata, &reply);
}

/// Hands the peer's 68-byte handshake to the session if it awaits one. False while it is incomplete.
pub fn take_handshake(
    read: &mut ReadBuf,
    session: &mut PeerSession,
    ctx: &TorrentContext,
    swarm: &mut Swarm,
    now: Timestamp,
) -> Result<bool, DropReason> {
    if session.phase() != Phase::AwaitingHandshake {
        return Ok(true);
    }
    match read.next_handshake().map_err(DropReason::from)? {
        Some(hs) => session.on_handshake(&hs, ctx, swarm, now).map(|()| true),
        None => Ok(false),
    }
}
