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
use crate::peer::session::{PeerSession, TorrentContext};
use crate::peer::DropReason;
use crate::time::Timestamp;
use crate::timer_wheel::TimerId;
use crate::torrent::{InputError, Torrent};

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
    pub connected_at: Timestamp,
}

/// What a read pass ended with.
pub enum ReadOutcome {
    /// Drained to `WouldBlock`.
    Drained,
    /// Budget spent or paused with data possibly waiting: try again later.
    MoreLater,
}

impl Connection {
    pub fn new(
        socket: TcpStream,
        addr: SocketAddr,
        session: PeerSession,
        ctx: &TorrentContext,
        now: Timestamp,
    ) -> Self {
        Connection {
            socket,
            addr,
            read: ReadBuf::new(&ctx.limits),
            session,
            timer: None,
            closing: None,
            paused: false,
            in_backlog: false,
            connected_at: now,
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

    /// Reads until `WouldBlock`, `budget` bytes, or backpressure, handing every whole frame to the session.
    pub fn read_and_process(
        &mut self,
        torrent: &mut Torrent,
        budget: usize,
        now: Timestamp,
    ) -> Result<ReadOutcome, InputError> {
        let mut budget = budget.min(READ_BUDGET);
        loop {
            if !self.session.wants_input() {
                self.paused = true;
                return Ok(ReadOutcome::MoreLater);
            }
            match self.read.fill_from(&mut self.socket) {
                Ok(0) => return Err(DropReason::ClosedByPeer.into()),
                Ok(n) => {
                    torrent.process_input(&mut self.read, &mut self.session, now)?;
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

    /// Serves queued requests (within `allowance` bytes) and writes until `WouldBlock` or nothing is left.
    pub fn flush(&mut self, torrent: &mut Torrent, allowance: &mut u64, now: Timestamp) -> Result<(), InputError> {
        loop {
            torrent.serve(&mut self.session, allowance).map_err(InputError::Fatal)?;
            let pending = self.session.pending_output();
            if pending.is_empty() {
                return Ok(());
            }
            match self.socket.write(pending) {
                Ok(0) => return Err(DropReason::Io(io::ErrorKind::WriteZero).into()),
                Ok(n) => self.session.output_written(n, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DropReason::Io(e.kind()).into()),
            }
        }
    }
}
