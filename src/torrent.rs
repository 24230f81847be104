//! One torrent's core: the shared context, the swarm and the storage, and how a session's effects are
//! carried out against them.
//!
//! Owns: turning a peer's parsed input into session calls and effects (queue a block's write and, when
//! its piece is complete, the piece's verdict on the disk queue; take the verdicts back and remember
//! verified pieces for the `have` broadcast), and serving a session's queued requests through disk reads.
//! Must not: touch sockets or the clock. The event loop and the in-memory simulation both drive it, so
//! what the simulation checks is what the loop runs.

use crate::geometry::BlockRef;
use crate::peer::buffers::ReadBuf;
use crate::peer::session::{Effect, PeerSession, Phase, TorrentContext};
use crate::peer::DropReason;
use std::sync::Arc;

use crate::storage::disk::{DiskQueue, DiskTarget, Job, Purpose};
use crate::storage::{Storage, StorageError};
use crate::swarm::bans::BanList;
use crate::swarm::{BlockArrival, PeerNo, Swarm};
use crate::time::Timestamp;
use crate::verdict::VerifiedPiece;

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
    /// The storage, shared with the disk executor: the transfer reaches it only through jobs.
    pub disk: Arc<DiskTarget>,
    /// The engine's number for this torrent, carried by its disk jobs.
    pub owner: usize,
    /// Every file of the layout, padding too: (path relative to the download directory, offset, length,
    /// padding), copied from storage so the loop never waits on the storage lock for it.
    pub files: Vec<(std::path::PathBuf, u64, u64, bool)>,
    /// Unconfirmed pieces below this were queued for confirmation; bytes of them still being hashed.
    confirm_cursor: u32,
    confirming_bytes: u64,
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

/// How much unconfirmed data is queued for hashing at once (the disk thread hashes it beside the loop).
pub const CONFIRM_IN_FLIGHT_BYTES: u64 = 8 * 1024 * 1024;

impl Torrent {
    pub fn new(ctx: TorrentContext, swarm: Swarm, storage: Storage, piece_hashes: Vec<[u8; 20]>) -> Self {
        let files = storage.files().map(|(p, o, l, pad)| (p.to_path_buf(), o, l, pad)).collect();
        Torrent {
            ctx,
            swarm,
            disk: DiskTarget::new(storage),
            owner: 0,
            files,
            confirm_cursor: 0,
            confirming_bytes: 0,
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
    /// Blocks go to the disk queue: the caller makes sure it has room for every block `read` can hold.
    pub fn process_input(
        &mut self,
        read: &mut ReadBuf,
        session: &mut PeerSession,
        disk: &mut DiskQueue,
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
                    self.queue_write(disk, &block, data, piece_complete);
                }
            }
        }
        Ok(())
    }

    /// A block from a source other than a peer session (a web seed): recorded in the swarm as from `no`,
    /// and queued for writing (with the piece's verdict when it is complete). False for a duplicate
    /// (nothing written).
    pub fn store_block(&mut self, no: PeerNo, block: &BlockRef, data: &[u8], disk: &mut DiskQueue) -> bool {
        match self.swarm.on_block(block, data, no, true) {
            BlockArrival::Duplicate => false,
            BlockArrival::Fresh { piece_complete } => {
                self.queue_write(disk, block, data, piece_complete);
                true
            }
        }
    }

    fn queue_write(&mut self, disk: &mut DiskQueue, block: &BlockRef, data: &[u8], piece_complete: bool) {
        let geometry = self.ctx.geometry;
        let at = geometry.piece_offset(block.piece) + u64::from(block.offset);
        disk.write(&self.disk, self.owner, *block, at, data);
        if piece_complete {
            disk.push(self.verify_job(block.piece, Purpose::Download));
        }
    }

    /// The job that hashes `piece` and judges it against the metainfo's hash.
    pub fn verify_job(&self, piece: u32, purpose: Purpose) -> Job {
        let geometry = self.ctx.geometry;
        Job::Verify {
            target: Arc::clone(&self.disk),
            owner: self.owner,
            piece,
            at: geometry.piece_offset(piece),
            len: geometry.piece_len(piece),
            expected: self.piece_hashes[piece as usize],
            purpose,
        }
    }

    /// The verdict on a downloaded piece came back from the disk queue: recorded in the swarm (a failed
    /// piece goes back to the pool, and peers that keep sending bad data are banned).
    pub fn on_verdict(&mut self, piece: u32, verdict: Option<VerifiedPiece>) {
        match verdict {
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
    }

    /// Confirms unconfirmed pieces (trusted from the resume file, not hashed in this run): queues their
    /// hashing from disk, lowest first, with at most `CONFIRM_IN_FLIGHT_BYTES` of them in the queue at once.
    /// Verdicts come back through `on_confirm_verdict`.
    pub fn confirm_some(&mut self, disk: &mut DiskQueue) {
        let geometry = self.ctx.geometry;
        let n = geometry.piece_count();
        while self.confirming_bytes < CONFIRM_IN_FLIGHT_BYTES && self.confirm_cursor < n {
            let piece = self.confirm_cursor;
            self.confirm_cursor += 1;
            if !self.swarm.is_unconfirmed(piece) {
                continue;
            }
            self.confirming_bytes += u64::from(geometry.piece_len(piece));
            disk.push(self.verify_job(piece, Purpose::Confirm));
        }
    }

    /// A confirmation's verdict: a piece that verifies becomes had and joins `confirmed`; one that does
    /// not becomes missing and joins `confirm_failed`.
    pub fn on_confirm_verdict(&mut self, piece: u32, verdict: Option<VerifiedPiece>) {
        self.confirming_bytes = self.confirming_bytes.saturating_sub(u64::from(self.ctx.geometry.piece_len(piece)));
        if !self.swarm.is_unconfirmed(piece) {
            return;
        }
        match verdict {
            Some(verified) => {
                self.swarm.on_piece_verified(verified);
                self.confirmed.push(piece);
            }
            None => {
                self.swarm.on_confirm_failed(piece);
                self.confirm_failed.push(piece);
            }
        }
    }

    pub fn is_banned(&self, no: PeerNo) -> bool {
        self.bans.is_banned(no)
    }

    /// Takes the session's queued requests to serve while `allowance` bytes remain, its send queue has
    /// room and the disk queue has buffers for reads, and queues a read for each (`tag` names the peer
    /// to the engine). Returns the payload bytes taken.
    pub fn serve(&mut self, session: &mut PeerSession, allowance: &mut u64, disk: &mut DiskQueue, tag: u64) -> u64 {
        let mut taken = 0;
        while *allowance > 0 && disk.read_room() {
            let Some(block) = session.next_to_serve(disk.serve_ahead) else {
                break;
            };
            let at = self.ctx.geometry.piece_offset(block.piece) + u64::from(block.offset);
            disk.read(&self.disk, self.owner, tag, block, at);
            taken += u64::from(block.len);
            *allowance = allowance.saturating_sub(u64::from(block.len));
        }
        taken
    }

    /// A block read for `session` came back: it goes out.
    pub fn on_read(&mut self, session: &mut PeerSession, block: &BlockRef, data: &[u8]) {
        session.send_block(block, data);
        self.swarm.on_uploaded(u64::from(block.len));
    }
}

/// A torrent's core with the engine's disk queue, for a source of blocks other than a peer session (a web
/// seed) that cannot pause its input: it may take a few buffers over the queue's pool.
pub struct TorrentIo<'a> {
    pub core: &'a mut Torrent,
    pub disk: &'a mut DiskQueue,
}

impl TorrentIo<'_> {
    /// See [`Torrent::store_block`].
    pub fn store_block(&mut self, no: PeerNo, block: &BlockRef, data: &[u8]) -> bool {
        self.core.store_block(no, block, data, self.disk)
    }
}

impl std::ops::Deref for TorrentIo<'_> {
    type Target = Torrent;
    fn deref(&self) -> &Torrent {
        self.core
    }
}

impl std::ops::DerefMut for TorrentIo<'_> {
    fn deref_mut(&mut self) -> &mut Torrent {
        self.core
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
