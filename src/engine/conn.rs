//! One peer connection as the engine sees it: whatever transport carries it, its read buffer, the
//! encryption stage in front of the BitTorrent stream, and (once the torrent is known) its session.
//!
//! Owns: the per-connection state the engine keeps between events (timer entry, closing, backpressure
//! flags), the MSE responder stage, and bytes queued before a session exists (MSE replies).
//! Must not: name a socket type (input is any `io::Read`, output any `io::Write`: TCP today, uTP next,
//! memory pipes in the simulation), or decide protocol (the session, the torrent core and the engine do).

use std::io;
use std::net::SocketAddr;

use crate::metainfo::InfoHash;
use crate::peer::buffers::ReadBuf;
use crate::peer::session::{PeerSession, Phase};
use crate::peer::{DropReason, PeerMisbehaved};
use crate::swarm::PeerNo;
use crate::time::Timestamp;
use crate::timer_wheel::TimerId;
use crate::wire::mse;

use super::TorrentId;

/// Where an incoming connection stands on Message Stream Encryption.
pub enum Encryption {
    /// Plain BitTorrent (our own connections, or the peer's first byte said so).
    Plain,
    /// Incoming, first byte not seen yet.
    Undecided(Box<mse::Responder>),
    /// The peer opened with MSE; the handshake is running.
    Handshaking(Box<mse::Responder>),
}

pub struct PeerConn {
    pub no: PeerNo,
    pub addr: SocketAddr,
    pub outgoing: bool,
    /// `None`: incoming, and the peer has not named the torrent yet.
    pub torrent: Option<TorrentId>,
    /// Created once the torrent is known (at once for our own connections).
    pub session: Option<PeerSession>,
    pub read: ReadBuf,
    pub encryption: Encryption,
    /// The torrent an MSE handshake named: the BitTorrent handshake inside must name the same.
    pub mse_torrent: Option<InfoHash>,
    /// Bytes to send before the session's own (MSE replies, when there is no session yet).
    pub pre_out: Vec<u8>,
    /// Before a session exists: when to give up on the peer's handshake.
    pub handshake_deadline: Timestamp,
    /// The connection's wheel entry and when it fires.
    pub timer: Option<(TimerId, Timestamp)>,
    /// Set once the connection is to be reaped at the end of the turn; events for it are ignored.
    pub closing: Option<DropReason>,
    /// Reading stopped because our send queue is above its high-water mark.
    pub paused: bool,
    /// Already queued on the engine's backlog.
    pub in_backlog: bool,
    /// Already queued for output.
    pub in_transmit: bool,
    pub connected_at: Timestamp,
    /// The last payload received from or sent to this peer (for the slot policy).
    pub last_payload: Option<Timestamp>,
}

impl PeerConn {
    pub fn is_connecting(&self) -> bool {
        self.session.as_ref().is_some_and(|s| s.phase() == Phase::AwaitingConnect)
    }

    pub fn is_handshaken(&self) -> bool {
        self.session.as_ref().is_some_and(|s| s.peer_id.is_some())
    }

    /// Bytes waiting to be written.
    pub fn pending_output(&self) -> &[u8] {
        if !self.pre_out.is_empty() {
            return &self.pre_out;
        }
        self.session.as_ref().map_or(&[], |s| s.pending_output())
    }

    pub fn output_written(&mut self, n: usize, now: Timestamp) {
        if !self.pre_out.is_empty() {
            self.pre_out.drain(..n.min(self.pre_out.len()));
        } else if let Some(s) = &mut self.session {
            s.output_written(n, now);
        }
    }

    pub fn wants_input(&self) -> bool {
        self.session.as_ref().map_or(true, PeerSession::wants_input)
    }

    fn queue_raw(&mut self, bytes: &[u8]) {
        match &mut self.session {
            Some(s) if self.pre_out.is_empty() => s.queue_raw(bytes),
            _ => self.pre_out.extend_from_slice(bytes),
        }
    }

    /// Drives an MSE handshake over the bytes read so far. True once the stream is plain BitTorrent.
    /// `torrent` maps an MSE `req2` key to one of the engine's torrents.
    pub fn run_encryption_handshake(
        &mut self,
        torrent: impl Fn(&[u8; 20]) -> Option<InfoHash> + Copy,
    ) -> Result<bool, DropReason> {
        loop {
            match std::mem::replace(&mut self.encryption, Encryption::Plain) {
                Encryption::Plain => return Ok(true),
                Encryption::Undecided(responder) => match self.read.unparsed_mut().first() {
                    None => {
                        self.encryption = Encryption::Undecided(responder);
                        return Ok(false);
                    }
                    Some(&first) if mse::looks_encrypted(first) => {
                        self.encryption = Encryption::Handshaking(responder);
                    }
                    Some(_) => return Ok(true),
                },
                Encryption::Handshaking(mut responder) => match responder.on_bytes(self.read.unparsed_mut(), torrent) {
                    mse::Step::NeedMore => {
                        self.encryption = Encryption::Handshaking(responder);
                        return Ok(false);
                    }
                    mse::Step::Reply { consumed, reply } => {
                        self.read.consume(consumed);
                        self.queue_raw(&reply);
                        self.encryption = Encryption::Handshaking(responder);
                    }
                    mse::Step::Done { consumed, reply, info_hash, .. } => {
                        self.read.consume(consumed);
                        self.queue_raw(&reply);
                        self.mse_torrent = Some(info_hash);
                        log::debug!("{}: encrypted handshake done, plaintext selected", self.addr);
                        return Ok(true);
                    }
                    mse::Step::Fail => return Err(PeerMisbehaved::WrongProtocolString.into()),
                },
            }
        }
    }
}

/// Reads once from `src` into the connection's buffer: `Ok(0)` is the peer closing.
pub fn fill(conn: &mut PeerConn, src: &mut impl io::Read) -> Result<Option<usize>, DropReason> {
    match conn.read.fill_from(src) {
        Ok(0) => Err(DropReason::ClosedByPeer),
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Some(0)),
        Err(e) => Err(DropReason::Io(e.kind())),
    }
}
