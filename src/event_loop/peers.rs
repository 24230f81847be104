//! Peer connections: socket + read buffer + `PeerSession`, and the I/O around them.
//!
//! Owns: non-blocking connects and their completion check, accepting, reading until `WouldBlock` into the
//! connection's `ReadBuf` and handing frames to the session, writing its output until `WouldBlock`,
//! serving blocks from storage into its write buffer, and closing.
//! Must not: decide protocol; every decision is the session's, the swarm's or the choker's.
//!
//! Every connection is registered once for READABLE | WRITABLE (edge-triggered) and never re-registered:
//! with edge triggering an idle writable socket costs nothing, and backpressure is applied by not reading
//! (a paused connection is put back on the loop's backlog when its send queue drains, because the data
//! already waiting will not raise a new edge).

use std::io::{self, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;

use crate::peer::buffers::ReadBuf;
use crate::peer::session::{Effect, Phase, PeerSession, TorrentContext};
use crate::peer::DropReason;
use crate::storage::{verify, Storage, StorageError};
use crate::swarm::{PeerNo, Swarm};
use crate::time::Timestamp;
use crate::timer_wheel::TimerId;

/// Bytes read from one peer per readiness event before others get a turn.
pub const READ_BUDGET: usize = 1024 * 1024;

pub struct Connection {
    pub socket: TcpStream,
    pub addr: SocketAddr,
    pub read: ReadBuf,
    pub session: PeerSession,
    /// The peer's wheel entry and when it fires.
    pub timer: Option<(TimerId, Timestamp)>,
    /// Set once the connection is to be reaped at the end of the turn; events for it are ignored.
    pub closing: Option<DropReason>,
    /// Reading stopped because our send queue is above its high-water mark.
    pub paused: bool,
    /// Already queued on the loop's backlog.
    pub in_backlog: bool,
}

/// Why processing a peer's input stopped.
pub enum InputError {
    Drop(DropReason),
    /// Data is at risk: rill must stop.
    Fatal(StorageError),
}

impl From<DropReason> for InputError {
    fn from(r: DropReason) -> Self {
        InputError::Drop(r)
    }
}

/// What a read pass ended with.
pub enum ReadOutcome {
    /// Drained to `WouldBlock`.
    Drained,
    /// Budget spent or paused with data possibly waiting: try again later.
    MoreLater,
}

/// The torrent-wide state a peer's input can touch.
pub struct Shared<'a> {
    pub ctx: &'a TorrentContext,
    pub swarm: &'a mut Swarm,
    pub storage: &'a mut Storage,
    pub piece_hashes: &'a [[u8; 20]],
    /// Pieces verified during this call, for the loop to announce to every peer.
    pub verified: &'a mut Vec<u32>,
    /// Peers that contributed to a piece that failed its hash check.
    pub failed_contributors: &'a mut Vec<PeerNo>,
}

impl Connection {
    pub fn new(socket: TcpStream, addr: SocketAddr, session: PeerSession, ctx: &TorrentContext) -> Self {
        Connection {
            socket,
            addr,
            read: ReadBuf::new(&ctx.limits),
            session,
            timer: None,
            closing: None,
            paused: false,
            in_backlog: false,
        }
    }

    /// Our connect finished or failed (a writable or error event while `AwaitingConnect`).
    /// `Ok(false)`: not yet (a spurious event).
    pub fn check_connected(&mut self) -> Result<bool, DropReason> {
        if let Ok(Some(e)) | Err(e) = self.socket.take_error() {
            return Err(DropReason::ConnectFailed(e.kind()));
        }
        match self.socket.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(DropReason::ConnectFailed(e.kind())),
        }
    }

    /// Reads until `WouldBlock`, the budget, or backpressure, handing every whole frame to the session.
    pub fn read_and_process(&mut self, shared: &mut Shared<'_>, now: Timestamp) -> Result<ReadOutcome, InputError> {
        let mut budget = READ_BUDGET;
        loop {
            if !self.session.wants_input() {
                self.paused = true;
                return Ok(ReadOutcome::MoreLater);
            }
            match self.read.fill_from(&mut self.socket) {
                Ok(0) => return Err(DropReason::ClosedByPeer.into()),
                Ok(n) => {
                    self.process(shared, now)?;
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        return Ok(ReadOutcome::MoreLater);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadOutcome::Drained),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DropReason::Io(e.kind()).into()),
            }
        }
    }

    /// Parses and handles every whole frame in the read buffer.
    fn process(&mut self, shared: &mut Shared<'_>, now: Timestamp) -> Result<(), InputError> {
        if self.session.phase() == Phase::AwaitingHandshake {
            let hs = self.read.next_handshake().map_err(DropReason::from)?;
            match hs {
                Some(hs) => self.session.on_handshake(&hs, shared.ctx, shared.swarm, now)?,
                None => return Ok(()),
            }
        }
        while let Some(frame) = self.read.next_frame(&shared.ctx.limits).map_err(DropReason::from)? {
            match self.session.on_frame(frame, shared.ctx, shared.swarm, now)? {
                Effect::Nothing => {}
                Effect::StoreBlock { block, data, piece_complete } => {
                    let offset = shared.ctx.geometry.piece_offset(block.piece) + u64::from(block.offset);
                    shared.storage.write(offset, data).map_err(InputError::Fatal)?;
                    if piece_complete {
                        verify_completed_piece(shared, block.piece)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Serves queued requests from storage and writes until `WouldBlock` or nothing is left.
    /// Returns payload bytes served.
    pub fn flush(&mut self, storage: &mut Storage, geometry_offset: impl Fn(u32) -> u64, upload_allowance: &mut u64, now: Timestamp) -> Result<u64, InputError> {
        let mut served = 0;
        loop {
            while *upload_allowance > 0 {
                let block = self
                    .session
                    .serve_next(|block, buf| storage.read(geometry_offset(block.piece) + u64::from(block.offset), buf))
                    .map_err(InputError::Fatal)?;
                match block {
                    Some(b) => {
                        served += u64::from(b.len);
                        *upload_allowance = upload_allowance.saturating_sub(u64::from(b.len));
                    }
                    None => break,
                }
            }
            let pending = self.session.pending_output();
            if pending.is_empty() {
                return Ok(served);
            }
            match self.socket.write(pending) {
                Ok(0) => return Err(DropReason::Io(io::ErrorKind::WriteZero).into()),
                Ok(n) => self.session.output_written(n, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(served),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DropReason::Io(e.kind()).into()),
            }
        }
    }
}

/// Finishes a complete piece's hash (reading back only the blocks not hashed on arrival) and records the
/// verdict in the swarm.
pub fn verify_completed_piece(shared: &mut Shared<'_>, piece: u32) -> Result<(), InputError> {
    let Some((hasher, hashed)) = shared.swarm.take_hasher(piece) else {
        return Ok(());
    };
    let expected = &shared.piece_hashes[piece as usize];
    let verdict = verify::finish_piece(shared.storage, &shared.ctx.geometry, piece, hasher, hashed, expected)
        .map_err(InputError::Fatal)?;
    match verdict {
        Some(verified) => {
            shared.swarm.on_piece_verified(verified);
            shared.verified.push(piece);
        }
        None => {
            log::info!("piece {piece} failed its hash check; fetching it again");
            let contributors = shared.swarm.on_piece_failed(piece);
            shared.failed_contributors.extend(contributors);
        }
    }
    Ok(())
}
