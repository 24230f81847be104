//! One peer connection as the engine sees it: whatever transport carries it, its read buffer, the
//! encryption stage in front of the BitTorrent stream, and (once the torrent is known) its session.
//!
//! Owns: the per-connection state the engine keeps between events (timer entry, closing, backpressure
//! flags), and bytes queued before a session exists (MSE replies). The encryption stage itself is
//! `peer::encryption`.
//! Must not: name a socket type (input is any `io::Read`, output any `io::Write`: TCP today, uTP next,
//! memory pipes in the simulation), or decide protocol (the session, the torrent core and the engine do).

use std::io;
use std::net::SocketAddr;

use crate::metainfo::InfoHash;
use crate::peer::buffers::ReadBuf;
use crate::peer::encryption::{Encryption, Stage};
use crate::peer::session::{PeerSession, Phase};
use crate::peer::DropReason;
use crate::swarm::PeerNo;
use crate::time::Timestamp;
use crate::timer_wheel::TimerId;
use crate::wire::mse::Streams;

use super::TorrentId;

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
    /// On the engine's list of connections waiting for room in the disk queue's pool.
    pub disk_waiting: bool,
    /// On the engine's list of connections waiting for the pool's read share.
    pub read_waiting: bool,
    /// Already queued on the engine's backlog.
    pub in_backlog: bool,
    /// Already queued for output.
    pub in_transmit: bool,
    pub connected_at: Timestamp,
    /// The last payload received from or sent to this peer (for the slot policy).
    pub last_payload: Option<Timestamp>,
    /// It has sent us payload (counted once in the torrent's `peers_used`).
    pub sent_us_payload: bool,
    /// Peer exchange with this peer (BEP 11): what we told it, what it told us.
    pub pex: crate::swarm::pex::PeerExchange,
    /// The peer's `yourip` went to the DHT's vote on our external address.
    pub your_ip_noted: bool,
    /// RC4 on the stream, when an MSE handshake selected it.
    pub cipher: Option<Cipher>,
    /// This connection opened with MSE (ours) or answered one (theirs).
    pub mse: bool,
    /// Its peer id was compared with the torrent's other connections' (one connection per peer, whatever
    /// the address family or port it came from).
    pub peer_id_checked: bool,
    /// TCP (the driver's socket) or uTP (the engine's mux).
    pub transport: super::utp::Transport,
    /// The session's payload totals (down, up) at the last trace rate sample.
    pub traced: (u64, u64),
}

/// RC4 both ways after an MSE handshake that selected it. Bytes are decrypted in place as they are read
/// and encrypted in place in the session's send buffer just before they are first written, so each byte
/// passes the cipher once and nothing is copied.
pub struct Cipher {
    streams: Box<Streams>,
    /// How many bytes at the front of the session's pending output are already encrypted.
    encrypted: usize,
}

impl PeerConn {
    /// A connection we dial (`torrent` and `session` given) or one that dialled us (neither, until its
    /// handshake names the torrent).
    pub fn new(
        no: PeerNo,
        addr: SocketAddr,
        torrent: Option<TorrentId>,
        session: Option<PeerSession>,
        read: ReadBuf,
        encryption: Encryption,
        now: Timestamp,
    ) -> Self {
        PeerConn {
            no,
            addr,
            outgoing: session.is_some(),
            torrent,
            session,
            read,
            encryption,
            mse_torrent: None,
            pre_out: Vec::new(),
            handshake_deadline: now,
            timer: None,
            closing: None,
            paused: false,
            disk_waiting: false,
            read_waiting: false,
            in_backlog: false,
            in_transmit: false,
            connected_at: now,
            last_payload: None,
            sent_us_payload: false,
            pex: crate::swarm::pex::PeerExchange::with_remote(addr),
            your_ip_noted: false,
            cipher: None,
            mse: false,
            peer_id_checked: false,
            transport: super::utp::Transport::Tcp,
            traced: (0, 0),
        }
    }

    pub fn is_connecting(&self) -> bool {
        self.session.as_ref().is_some_and(|s| s.phase() == Phase::AwaitingConnect)
    }

    pub fn is_handshaken(&self) -> bool {
        self.session.as_ref().is_some_and(|s| s.peer_id.is_some())
    }

    /// Bytes waiting to be written: MSE messages first; the session's bytes not before our own MSE
    /// handshake is done (they go out in the method it selects).
    pub fn pending_output(&self) -> &[u8] {
        if !self.pre_out.is_empty() {
            return &self.pre_out;
        }
        if self.encryption.is_initiating() {
            return &[];
        }
        self.session.as_ref().map_or(&[], |s| s.pending_output())
    }

    /// Whether `pending_output` should be written now: MSE messages do; the session says for its own
    /// (`PeerSession::has_urgent_output`: lone `have` messages may wait).
    pub fn has_urgent_output(&self) -> bool {
        if !self.pre_out.is_empty() {
            return true;
        }
        !self.encryption.is_initiating() && self.session.as_ref().is_some_and(PeerSession::has_urgent_output)
    }

    /// `pending_output`, encrypting what the session queued since the last call first (with RC4).
    pub fn next_output(&mut self) -> &[u8] {
        if let (Some(cipher), Some(session), true) =
            (self.cipher.as_mut(), self.session.as_mut(), self.pre_out.is_empty())
        {
            let pending = session.pending_output_mut();
            if cipher.encrypted < pending.len() {
                cipher.streams.encrypt.apply(&mut pending[cipher.encrypted..]);
                cipher.encrypted = pending.len();
            }
        }
        self.pending_output()
    }

    pub fn output_written(&mut self, n: usize, now: Timestamp) {
        if !self.pre_out.is_empty() {
            self.pre_out.drain(..n.min(self.pre_out.len()));
        } else if let Some(s) = &mut self.session {
            s.output_written(n, now);
            if let Some(cipher) = &mut self.cipher {
                cipher.encrypted = cipher.encrypted.saturating_sub(n);
            }
        }
    }

    /// Where the peer accepts connections: the address we dialled, or for one that dialled us the port its
    /// extended handshake gave (`None` without one).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        if self.outgoing {
            return Some(self.addr);
        }
        let port = self.session.as_ref()?.extended.as_ref()?.listen_port?;
        Some(SocketAddr::new(self.addr.ip(), port))
    }

    /// Once a second: buffers a quiet connection no longer needs go back (`peer::buffers` has the rules).
    pub fn on_buffer_tick(&mut self, now: Timestamp) {
        self.read.on_tick(now);
        if let Some(session) = &mut self.session {
            session.on_buffer_tick(now);
        }
        if self.pre_out.is_empty() && self.pre_out.capacity() > 0 {
            self.pre_out = Vec::new();
        }
    }

    /// Bytes of buffer memory the connection holds now (read, write, MSE replies).
    pub fn buffer_bytes(&self) -> usize {
        self.read.capacity() + self.session.as_ref().map_or(0, PeerSession::output_capacity) + self.pre_out.capacity()
    }

    pub fn wants_input(&self) -> bool {
        self.session.as_ref().map_or(true, PeerSession::wants_input)
    }

    /// Runs the encryption stage over the bytes read so far. True once the stream is plain BitTorrent.
    /// `torrent` maps an MSE `req2` key to one of the engine's torrents.
    pub fn run_encryption_stage(
        &mut self,
        torrent: impl Fn(&[u8; 20]) -> Option<InfoHash> + Copy,
    ) -> Result<bool, DropReason> {
        let PeerConn { encryption, read, pre_out, .. } = self;
        // MSE messages go out before anything the session has queued (our handshake, when we dialled).
        let send = |bytes: &[u8]| pre_out.extend_from_slice(bytes);
        match encryption.advance(read, torrent, send)? {
            Stage::Pending => Ok(false),
            Stage::Ready { named, streams, decrypted } => {
                if let Some(info_hash) = named {
                    let method = if streams.is_some() { "RC4" } else { "plaintext" };
                    log::debug!("{}: encrypted handshake done, {method} selected", self.addr);
                    self.mse_torrent = Some(info_hash);
                    self.mse = true;
                }
                if let Some(mut streams) = streams {
                    // What came after the initial payload is already the RC4 stream.
                    streams.decrypt.apply(&mut self.read.unparsed_mut()[decrypted..]);
                    self.cipher = Some(Cipher { streams, encrypted: 0 });
                }
                Ok(true)
            }
        }
    }
}

/// Reads once from `src` into the connection's buffer (decrypting it in place under RC4): `Ok(0)` is the
/// peer closing.
pub fn fill(conn: &mut PeerConn, src: &mut impl io::Read) -> Result<Option<usize>, DropReason> {
    match conn.read.fill_from(src) {
        Ok(0) => Err(DropReason::ClosedByPeer),
        Ok(n) => {
            if let Some(cipher) = &mut conn.cipher {
                let unparsed = conn.read.unparsed_mut();
                let len = unparsed.len();
                cipher.streams.decrypt.apply(&mut unparsed[len - n..]);
            }
            Ok(Some(n))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Some(0)),
        Err(e) => Err(DropReason::Io(e.kind())),
    }
}
