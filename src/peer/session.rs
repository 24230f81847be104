//! One remote peer's BEP 3 protocol state machine.
//!
//! Owns: the connection's phase, choke and interest flags both ways, the peer's bitfield, our request
//! pipeline to it, its request queue to us, its timers (connect, handshake, keep-alive, silence, request
//! time-outs) and the bytes we queue for it.
//! Must not: touch sockets, files or the clock, or see another session. Input is bytes-as-frames and `now`;
//! output is bytes appended to its `WriteBuf`, an `Effect` for the loop, and `next_deadline()`.
//! With the fast extension (BEP 6, both sides set the reserved bit) every request gets exactly one answer,
//! a block or a `reject`: we reject what we will not serve (a choked peer's requests outside its
//! allowed-fast set, pieces we lack, requests over our queue, cancelled ones still queued); a choke from the
//! peer keeps our requests open until it rejects them; and each side may request its allowed-fast pieces
//! while choked. Without it, BEP 3 rules as before.
//! Deadlines live in one `TimerTable` (see `peer::timer`): each input sets or stops the timers it moves,
//! `next_deadline()` is the table's minimum and `on_timeout()` handles exactly the timers that are due.
//!
//! Call order for the loop, after any `on_*` call: perform the returned effect; flush `pending_output()`;
//! move the peer's wheel entry if `next_deadline()` moved earlier; update the socket interest from
//! `wants_input()` / `pending_output()`.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Duration;

use crate::bitfield::{Bitfield, BitfieldError};
use crate::geometry::{BlockRef, Geometry, BLOCK_LEN};
use crate::metainfo::InfoHash;
use crate::peer::buffers::WriteBuf;
use crate::peer::fast::ALLOWED_FAST_COUNT;
use crate::peer::pipeline::Pipeline;
use crate::peer::timer::{Timer, TimerTable};
use crate::peer::trace::{SessionEvent, SessionTrace};
use crate::peer::{DropReason, PeerMisbehaved};
use crate::swarm::picker::{prefers_whole_pieces, ENDGAME_PEER_DEPTH};
use crate::swarm::{BlockArrival, PeerNo, Swarm};
use crate::time::{secs, Timestamp};
use crate::wire::extension::{self, ExtendedHandshake};
use crate::wire::handshake::{Handshake, RESERVED_DHT, RESERVED_EXTENSION_PROTOCOL, RESERVED_FAST};
use crate::wire::{self, Frame, FrameLimits};

mod bep6;

/// A connect attempt that has not completed by then is abandoned.
pub const CONNECT_TIMEOUT: Duration = secs(10);
/// The handshake must arrive this soon after the connection is up.
pub const HANDSHAKE_TIMEOUT: Duration = secs(20);
/// Send a keep-alive after this long without sending anything (BEP 3 suggests two minutes).
pub const KEEPALIVE_AFTER: Duration = secs(120);
/// Drop a peer we have heard nothing from for this long.
pub const DROP_SILENT_AFTER: Duration = secs(180);
/// Requests we queue from one peer before it counts as a flood (we advertise half of it as `reqq`).
pub const MAX_QUEUED_REQUESTS: usize = 2000;
/// Our advertised BEP 10 `reqq`: a fast leecher keeps this many requests with us (16 MiB at 16 KiB), enough
/// for the bandwidth-delay product of a fast link with some delay; the queue costs 12 bytes a request.
pub const OUR_REQQ: u32 = 1000;
/// Largest block we serve. 16 KiB, as Transmission and libtorrent enforce: a peer asking for more is
/// dropped.
pub const MAX_SERVED_BLOCK: u32 = BLOCK_LEN;
/// Allowed-fast pieces we take from one peer (BEP 6 sets are about 10); more are ignored, so a peer cannot
/// make the set, and the search in it, large.
pub const MAX_ALLOWED_FAST_IN: usize = 32;
/// A peer we choke is served at most this many times its allowed-fast set's size in bytes (as pieces), as
/// libtorrent allows three pieces' worth for each allowed-fast piece.
pub const ALLOWED_FAST_SERVE_FACTOR: u64 = 3;

/// What every session of one torrent shares, fixed for the torrent's life.
#[derive(Clone, Debug)]
pub struct TorrentContext {
    pub info_hash: InfoHash,
    pub our_peer_id: [u8; 20],
    pub geometry: Geometry,
    pub limits: FrameLimits,
    pub listen_port: Option<u16>,
    /// The size of the info dictionary we can serve (BEP 9); `None` when we do not have it.
    pub metadata_size: Option<u32>,
    /// A private torrent (BEP 27): no peer exchange.
    pub private: bool,
    /// The UDP port of our DHT node, when this torrent uses the DHT (BEP 5): the handshake sets the DHT
    /// bit and a peer that sets it too is sent a `port` message.
    pub dht_port: Option<u16>,
    /// Only the info-hash is known (a magnet link): sessions record what the peer says it has, for later,
    /// and take part in nothing that needs pieces.
    pub awaiting_metadata: bool,
}

/// Named for what the session waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Our TCP connect is in progress.
    AwaitingConnect,
    /// Connected (or accepted); the peer's 68-byte handshake has not arrived.
    AwaitingHandshake,
    /// Handshakes exchanged; a bitfield is legal only now.
    AwaitingFirstMessage,
    Active,
}

/// The extensions we may send a peer (when its extended handshake offered them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerExtension {
    Metadata,
    Pex,
}

/// What the loop must do for this frame; everything else already happened inside.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub enum Effect<'a> {
    Nothing,
    /// Fresh data for a block we asked for: write it straight from the read buffer. If the piece is now
    /// complete, the loop verifies it next.
    StoreBlock {
        block: BlockRef,
        data: &'a [u8],
        piece_complete: bool,
    },
    /// The peer's extended handshake arrived (now in `PeerSession::extended`).
    ExtendedHandshake,
    /// A ut_metadata message (BEP 9) for the caller to decode with `wire::ut_metadata`.
    Metadata(&'a [u8]),
    /// A ut_pex message (BEP 11) for the caller to decode with `wire::pex`.
    Pex(&'a [u8]),
}

/// What a peer said it has while the torrent's size was unknown (a magnet link's metadata phase), kept to
/// be applied once the metadata arrives.
#[derive(Default)]
struct UnknownPieces {
    /// The peer's bitfield, as sent.
    bitfield: Option<Vec<u8>>,
    /// `have`s, as a bit set by index (indices past [`MAX_RECORDED_HAVE`] are dropped).
    haves: Vec<u8>,
    have_all: bool,
}

/// Highest piece index a `have` is recorded for before the metadata arrives (16 MiB of metadata holds at
/// most 838,860 piece hashes).
const MAX_RECORDED_HAVE: u32 = 1 << 20;

pub struct PeerSession {
    pub no: PeerNo,
    phase: Phase,
    outgoing: bool,
    /// Every deadline of this session; `next_deadline()` is their minimum.
    timers: TimerTable,
    am_choking: bool,
    am_interested: bool,
    peer_choking: bool,
    peer_interested: bool,
    peer_has: Bitfield,
    /// Pieces the peer has that we want: interest is `interesting > 0`.
    interesting: u32,
    /// Whether `peer_has` is counted in the swarm's availability.
    counted: bool,
    pipeline: Pipeline,
    /// The piece this peer filled last; the picker tries it first.
    hint: Option<u32>,
    /// Requests the peer made of us, oldest first.
    requests: VecDeque<BlockRef>,
    out: WriteBuf,
    /// `out` holds nothing but `have` messages queued since it was last written, this many bytes (0: not
    /// so). They may wait for the next message that must go now, or the loop's once-a-second flush: a
    /// piece verified while 20 peers are connected is then not 20 sends of 9 bytes (Transmission batches
    /// its haves too). See `has_urgent_output`.
    lazy_len: usize,
    pub peer_id: Option<[u8; 20]>,
    pub extended: Option<ExtendedHandshake>,
    peer_supports_extensions: bool,
    /// The DHT port from the peer's last `port` message (BEP 5), until the engine takes it.
    peer_dht_port: Option<u16>,
    /// Both sides set the BEP 6 bit (we always do): rejects are explicit, `have all`/`have none` and
    /// allowed-fast sets are used.
    fast: bool,
    /// The peer's address, for the allowed-fast set we offer it (the loop tells us; see `set_peer_ip`).
    peer_ip: Option<IpAddr>,
    /// Pieces we offered the peer as allowed fast: served while we choke it. Empty until it is interested.
    allowed_out: Vec<u32>,
    /// Whether `allowed_out` was computed and sent (once per connection).
    allowed_out_sent: bool,
    /// Pieces the peer offered us as allowed fast (at most `MAX_ALLOWED_FAST_IN`).
    allowed_in: Vec<u32>,
    /// `allowed_in` ∩ `peer_has`: what we may request while the peer chokes us. Allocated with the first
    /// allowed-fast piece.
    fast_pickable: Option<Bitfield>,
    /// Requests of ours the peer rejected while we still expected them (BEP 6).
    pub rejects_received: u64,
    /// Requests of the peer we rejected (BEP 6).
    pub rejects_sent: u64,
    /// Payload bytes served while we choked the peer (its allowed-fast requests).
    served_while_choked: u64,
    /// Requests taken to serve whose blocks are being read from disk.
    reading: u32,
    /// Payload bytes received from / sent to this peer.
    pub downloaded: u64,
    pub uploaded: u64,
    upload_sample: u64,
    upload_rate: f64,
    /// When the peer last sent us a block (for snubbing).
    pub last_block_at: Option<Timestamp>,
    /// Endgame cancels sent to this peer.
    pub cancels_sent: u64,
    /// `Some` while the torrent awaits its metadata (see `TorrentContext::awaiting_metadata`).
    unknown_pieces: Option<Box<UnknownPieces>>,
    /// `--trace`: what happened since the engine last took it; `None` when not tracing.
    trace: Option<Box<SessionTrace>>,
}

impl PeerSession {
    /// A session for a connection we are opening.
    pub fn outgoing(no: PeerNo, ctx: &TorrentContext, now: Timestamp) -> Self {
        let mut s = Self::new(no, ctx, now, true);
        s.phase = Phase::AwaitingConnect;
        s.timers.set(Timer::Connect, now + CONNECT_TIMEOUT);
        s
    }

    /// A session for a connection a peer opened to us.
    pub fn incoming(no: PeerNo, ctx: &TorrentContext, now: Timestamp) -> Self {
        let mut s = Self::new(no, ctx, now, false);
        s.timers.set(Timer::Handshake, now + HANDSHAKE_TIMEOUT);
        s
    }

    /// Silence and keep-alive count from `now`. They run in every phase: the connect and handshake
    /// deadlines are far shorter, so before the handshake only those can come due.
    fn new(no: PeerNo, ctx: &TorrentContext, now: Timestamp, outgoing: bool) -> Self {
        let mut timers = TimerTable::default();
        timers.set(Timer::Silence, now + DROP_SILENT_AFTER);
        timers.set(Timer::KeepAlive, now + KEEPALIVE_AFTER);
        PeerSession {
            no,
            phase: Phase::AwaitingHandshake,
            outgoing,
            timers,
            am_choking: true,
            am_interested: false,
            peer_choking: true,
            peer_interested: false,
            peer_has: Bitfield::new(ctx.geometry.piece_count()),
            interesting: 0,
            counted: false,
            pipeline: Pipeline::new(now),
            hint: None,
            requests: VecDeque::new(),
            out: WriteBuf::default(),
            lazy_len: 0,
            peer_id: None,
            extended: None,
            peer_supports_extensions: false,
            peer_dht_port: None,
            fast: false,
            peer_ip: None,
            allowed_out: Vec::new(),
            allowed_out_sent: false,
            allowed_in: Vec::new(),
            fast_pickable: None,
            rejects_received: 0,
            rejects_sent: 0,
            served_while_choked: 0,
            reading: 0,
            downloaded: 0,
            uploaded: 0,
            upload_sample: 0,
            upload_rate: 0.0,
            last_block_at: None,
            cancels_sent: 0,
            unknown_pieces: ctx.awaiting_metadata.then(Box::default),
            trace: None,
        }
    }

    // ---- getters ------------------------------------------------------------------------------

    pub fn phase(&self) -> Phase {
        self.phase
    }
    pub fn is_outgoing(&self) -> bool {
        self.outgoing
    }
    pub fn is_am_choking(&self) -> bool {
        self.am_choking
    }
    pub fn is_am_interested(&self) -> bool {
        self.am_interested
    }
    pub fn is_peer_choking(&self) -> bool {
        self.peer_choking
    }
    pub fn is_peer_interested(&self) -> bool {
        self.peer_interested
    }
    pub fn peer_has(&self) -> &Bitfield {
        &self.peer_has
    }
    pub fn is_peer_seed(&self) -> bool {
        self.peer_has.is_full()
    }
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }
    pub fn download_rate(&self) -> f64 {
        self.pipeline.rate()
    }
    pub fn upload_rate(&self) -> f64 {
        self.upload_rate
    }
    pub fn queued_requests(&self) -> usize {
        self.requests.len()
    }
    /// Both sides support the fast extension (BEP 6).
    pub fn is_fast(&self) -> bool {
        self.fast
    }
    /// The pieces we offered the peer as allowed fast.
    pub fn allowed_fast_out(&self) -> &[u32] {
        &self.allowed_out
    }
    /// The pieces the peer offered us as allowed fast.
    pub fn allowed_fast_in(&self) -> &[u32] {
        &self.allowed_in
    }

    /// The peer's address, known to the loop: call before the handshake arrives. It decides the BEP 6
    /// allowed-fast set we offer (IPv4 only); without it none is offered.
    pub fn set_peer_ip(&mut self, ip: IpAddr) {
        self.peer_ip = Some(ip.to_canonical());
    }

    // ---- trace --------------------------------------------------------------------------------

    /// Records `SessionEvent`s from now on, for the engine to take with `drain_trace`.
    pub fn enable_trace(&mut self) {
        self.trace.get_or_insert_with(Box::default);
    }

    /// Hands the events recorded since the last call to `f`, oldest first; returns how many were lost
    /// to the bound.
    pub fn drain_trace(&mut self, f: impl FnMut(SessionEvent)) -> u64 {
        self.trace.as_mut().map_or(0, |t| t.drain(f))
    }

    fn record(&mut self, event: SessionEvent) {
        if let Some(t) = self.trace.as_mut() {
            t.record(event);
        }
    }

    // ---- output -------------------------------------------------------------------------------

    pub fn pending_output(&self) -> &[u8] {
        self.out.pending()
    }
    /// The same bytes, to encrypt in place (RC4) before they are first written.
    pub fn pending_output_mut(&mut self) -> &mut [u8] {
        self.out.pending_mut()
    }
    pub fn output_written(&mut self, n: usize, now: Timestamp) {
        if n > 0 {
            self.timers.set(Timer::KeepAlive, now + KEEPALIVE_AFTER);
            self.lazy_len = 0;
        }
        self.out.consume(n);
    }
    /// Output that should be written now: anything but `have` messages alone (those wait for company or
    /// the loop's next once-a-second flush).
    pub fn has_urgent_output(&self) -> bool {
        let n = self.out.pending().len();
        n > 0 && n != self.lazy_len
    }
    /// Queues a `have`, which alone may wait (`lazy_len`).
    fn send_have(&mut self, piece: u32) {
        let only_haves = self.out.pending().is_empty() || !self.has_urgent_output();
        self.send(Frame::Have { piece });
        self.lazy_len = if only_haves { self.out.pending().len() } else { 0 };
    }
    /// False while our send backlog is above the high-water mark: stop reading this peer (and so stop
    /// taking its requests) until it drains.
    pub fn wants_input(&self) -> bool {
        !self.out.is_above_high_water()
    }
    /// Once a second or so: the send buffer gives back memory a quiet peer no longer needs.
    pub fn on_buffer_tick(&mut self, now: Timestamp) {
        self.out.on_tick(now);
    }
    /// Bytes of memory the send buffer holds.
    pub fn output_capacity(&self) -> usize {
        self.out.capacity()
    }

    /// Bytes of a stage before the BitTorrent handshake (the MSE reply), queued as they are.
    pub fn queue_raw(&mut self, bytes: &[u8]) {
        self.out.tail().extend_from_slice(bytes);
    }

    fn send(&mut self, frame: Frame<'_>) {
        wire::encode(&frame, self.out.tail());
    }

    // ---- inputs -------------------------------------------------------------------------------

    /// Our outgoing connect completed: say hello.
    pub fn on_connected(&mut self, ctx: &TorrentContext, now: Timestamp) {
        debug_assert_eq!(self.phase, Phase::AwaitingConnect);
        self.phase = Phase::AwaitingHandshake;
        self.timers.stop(Timer::Connect);
        self.timers.set(Timer::Handshake, now + HANDSHAKE_TIMEOUT);
        self.timers.set(Timer::Silence, now + DROP_SILENT_AFTER);
        self.send_handshake(ctx);
    }

    fn send_handshake(&mut self, ctx: &TorrentContext) {
        let mut reserved = [0u8; 8];
        reserved[RESERVED_EXTENSION_PROTOCOL.0] |= RESERVED_EXTENSION_PROTOCOL.1;
        reserved[RESERVED_FAST.0] |= RESERVED_FAST.1;
        if ctx.dht_port.is_some() {
            reserved[RESERVED_DHT.0] |= RESERVED_DHT.1;
        }
        Handshake { reserved, info_hash: ctx.info_hash, peer_id: ctx.our_peer_id }.encode(self.out.tail());
    }

    /// The peer's handshake arrived.
    pub fn on_handshake(
        &mut self,
        hs: &Handshake,
        ctx: &TorrentContext,
        swarm: &mut Swarm,
        now: Timestamp,
    ) -> Result<(), DropReason> {
        if hs.info_hash != ctx.info_hash {
            return Err(PeerMisbehaved::WrongInfoHash.into());
        }
        if hs.peer_id == ctx.our_peer_id {
            return Err(PeerMisbehaved::OwnPeerId.into());
        }
        self.timers.set(Timer::Silence, now + DROP_SILENT_AFTER);
        if !self.outgoing {
            self.send_handshake(ctx);
        }
        self.peer_id = Some(hs.peer_id);
        self.record(SessionEvent::Handshake { peer_id: hs.peer_id, reserved: hs.reserved });
        self.peer_supports_extensions = hs.supports(RESERVED_EXTENSION_PROTOCOL);
        self.fast = hs.supports(RESERVED_FAST);
        if self.peer_supports_extensions {
            let mut payload = Vec::with_capacity(64);
            let (port, size, pex) = (ctx.listen_port, ctx.metadata_size, !ctx.private);
            extension::encode_handshake(OUR_REQQ, port, size, pex, self.peer_ip, &mut payload);
            self.send(Frame::Extended { ext_id: extension::HANDSHAKE_ID, payload: &payload });
        }
        let have = swarm.have();
        // Before a magnet's metadata there are no pieces: an empty bitfield is "full", but we have nothing
        // (a `have all` then would make seeds drop us as a fellow seed).
        if self.fast && have.is_full() && !have.is_empty() {
            self.send(Frame::HaveAll);
        } else if self.fast && have.count_ones() == 0 {
            self.send(Frame::HaveNone);
        } else if have.count_ones() > 0 {
            self.send(Frame::Bitfield(have.as_bytes()));
        }
        if let (Some(port), true) = (ctx.dht_port, hs.supports(RESERVED_DHT)) {
            self.send(Frame::Port(port));
        }
        self.phase = Phase::AwaitingFirstMessage;
        self.timers.stop(Timer::Handshake);
        Ok(())
    }

    /// One frame from the peer.
    pub fn on_frame<'a>(
        &mut self,
        frame: Frame<'a>,
        ctx: &TorrentContext,
        swarm: &mut Swarm,
        now: Timestamp,
    ) -> Result<Effect<'a>, DropReason> {
        self.timers.set(Timer::Silence, now + DROP_SILENT_AFTER);
        let first = self.phase == Phase::AwaitingFirstMessage;
        match self.phase {
            // Real clients (libtorrent, Transmission) send their BEP 10 handshake before the bitfield, and
            // some a keep-alive or DHT port: those do not end the window in which a bitfield is legal.
            Phase::AwaitingFirstMessage
                if matches!(frame, Frame::Extended { .. } | Frame::KeepAlive | Frame::Port(_)) => {}
            Phase::AwaitingFirstMessage => self.phase = Phase::Active,
            Phase::Active => {}
            Phase::AwaitingConnect | Phase::AwaitingHandshake => {
                return Err(PeerMisbehaved::MessageBeforeHandshake.into())
            }
        }
        if let Some(unknown) = self.unknown_pieces.as_deref_mut() {
            // No pieces exist yet: record what the peer has, track choke and interest, ignore the rest.
            match frame {
                Frame::Bitfield(bits) => unknown.bitfield = Some(bits.to_vec()),
                Frame::Have { piece } if piece < MAX_RECORDED_HAVE => {
                    let byte = (piece / 8) as usize;
                    if unknown.haves.len() <= byte {
                        unknown.haves.resize(byte + 1, 0);
                    }
                    unknown.haves[byte] |= 0x80 >> (piece % 8);
                }
                Frame::HaveAll => unknown.have_all = true,
                Frame::Choke | Frame::Unchoke => {
                    self.peer_choking = frame == Frame::Choke;
                    self.record(SessionEvent::PeerChoke(self.peer_choking));
                }
                Frame::Interested | Frame::NotInterested => {
                    self.peer_interested = frame == Frame::Interested;
                    self.record(SessionEvent::PeerInterested(self.peer_interested));
                }
                Frame::Extended { .. } | Frame::KeepAlive | Frame::Port(_) => return self.on_common_frame(frame, ctx),
                _ => {}
            }
            return Ok(Effect::Nothing);
        }
        let geometry = &ctx.geometry;
        match frame {
            Frame::Port(_) => return self.on_common_frame(frame, ctx),
            Frame::KeepAlive | Frame::Unknown { .. } => {}
            // BEP 6 allows ignoring suggestions; without the extension they are tolerated as before.
            Frame::SuggestPiece { .. } => {}
            Frame::AllowedFast { piece } if self.fast => {
                let piece = geometry.piece(piece).ok_or(PeerMisbehaved::IndexOutOfRange { index: piece })?;
                self.on_allowed_fast(piece, swarm, now);
            }
            Frame::AllowedFast { .. } => {}
            Frame::Choke if self.fast => {
                // BEP 6: a choke no longer discards our requests; the peer rejects each one it will not
                // serve (and may still serve some, its allowed-fast ones first of all).
                self.peer_choking = true;
                self.record(SessionEvent::PeerChoke(true));
            }
            Frame::Choke => {
                // BEP 3 without the fast extension: a choke discards every request we had out.
                // They go back to the pool at once; blocks already in flight are still accepted.
                self.peer_choking = true;
                self.record(SessionEvent::PeerChoke(true));
                self.pipeline.release_all(|b| swarm.release_block(b));
                self.sync_request_timer();
            }
            Frame::Unchoke => {
                self.peer_choking = false;
                self.record(SessionEvent::PeerChoke(false));
                self.fill_requests(swarm, now);
            }
            Frame::Interested => {
                self.peer_interested = true;
                self.record(SessionEvent::PeerInterested(true));
                if self.fast && !self.allowed_out_sent {
                    self.send_allowed_fast_set(ctx);
                }
            }
            Frame::NotInterested => {
                self.peer_interested = false;
                self.record(SessionEvent::PeerInterested(false));
                self.reject_queued(|_| true);
            }
            Frame::Have { piece } => {
                let piece = geometry.piece(piece).ok_or(PeerMisbehaved::IndexOutOfRange { index: piece })?;
                self.record(SessionEvent::Have { piece });
                self.add_piece(piece, swarm);
                self.update_interest(swarm, now);
            }
            Frame::Bitfield(bits) => {
                let wire_error = |e| match e {
                    BitfieldError::WrongLength { got, want } => PeerMisbehaved::BitfieldWrongLength { got, want },
                    BitfieldError::SpareBits => PeerMisbehaved::BitfieldSpareBits,
                };
                if first {
                    self.peer_has.assign_from_wire(bits).map_err(wire_error)?;
                    self.on_peer_pieces_replaced(swarm);
                } else {
                    // BEP 3 allows a bitfield only first, but aria2 sends a whole bitfield in place of
                    // several `have`s whenever that is shorter. Peers never lose pieces: take the union,
                    // as for a lazy bitfield followed by haves.
                    let later = Bitfield::from_wire(bits, geometry.piece_count()).map_err(wire_error)?;
                    for piece in later.iter_ones() {
                        self.add_piece(piece, swarm);
                    }
                }
                self.record(SessionEvent::Bitfield { pieces: self.peer_has.count_ones() });
                self.update_interest(swarm, now);
            }
            Frame::HaveAll | Frame::HaveNone if first => {
                // BEP 6 stand-ins for a full or an empty bitfield (tolerated from peers without the
                // extension too, as before).
                if frame == Frame::HaveAll {
                    self.peer_has = Bitfield::full(geometry.piece_count());
                    self.on_peer_pieces_replaced(swarm);
                }
                self.record(SessionEvent::Bitfield { pieces: self.peer_has.count_ones() });
                self.update_interest(swarm, now);
            }
            Frame::HaveAll => {
                // Only first in BEP 6, but aria2 sends `have all` in place of its pending `have`s once it
                // completes, as it sends a late bitfield otherwise: the peer now has every piece.
                for piece in 0..geometry.piece_count() {
                    self.add_piece(piece, swarm);
                }
                self.record(SessionEvent::Bitfield { pieces: self.peer_has.count_ones() });
                self.update_interest(swarm, now);
            }
            Frame::HaveNone => return Err(PeerMisbehaved::BitfieldNotFirst.into()),
            Frame::Request { piece, offset, len } => self.on_request(piece, offset, len, geometry, swarm)?,
            Frame::Cancel { piece, offset, len } => {
                if let Some(block) = geometry.aligned_block(piece, offset, len) {
                    self.record(SessionEvent::CancelReceived(block));
                }
                // BEP 6: a cancelled request still queued is answered with a reject.
                self.reject_queued(|b| b.piece == piece && b.offset == offset && b.len == len);
            }
            Frame::RejectRequest { piece, offset, len } if self.fast => {
                // BEP 6: a reject for a request never sent SHOULD close the connection. One off our block
                // grid cannot answer any request of ours; one on it may answer a request we released and
                // have since forgotten (see `pipeline::LATE_GRACE`), so it is let pass.
                let block = geometry.aligned_block(piece, offset, len).ok_or(PeerMisbehaved::UnrequestedReject {
                    piece,
                    offset,
                    len,
                })?;
                self.record(SessionEvent::RejectReceived(block));
                if self.pipeline.on_reject(&block) == Some(true) {
                    self.rejects_received += 1;
                    swarm.release_block(&block);
                }
                self.sync_request_timer();
                self.fill_requests(swarm, now);
            }
            Frame::RejectRequest { piece, offset, len } => {
                if let Some(block) = geometry.aligned_block(piece, offset, len) {
                    if self.pipeline.release(&block) {
                        swarm.release_block(&block);
                    }
                    self.sync_request_timer();
                }
            }
            Frame::Piece { piece, offset, data } => {
                let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
                let block = geometry
                    .aligned_block(piece, offset, len)
                    .ok_or(PeerMisbehaved::UnrequestedBlock { piece, offset })?;
                let entry =
                    self.pipeline.on_block(&block, now).ok_or(PeerMisbehaved::UnrequestedBlock { piece, offset })?;
                self.sync_request_timer();
                self.downloaded += u64::from(len);
                self.last_block_at = Some(now);
                let arrival = swarm.on_block(&block, data, self.no, !entry.released);
                if self.trace.is_some() {
                    let fresh = matches!(arrival, BlockArrival::Fresh { .. });
                    self.record(SessionEvent::Block { block, latency: now - entry.sent_at, fresh });
                }
                self.fill_requests(swarm, now);
                if let BlockArrival::Fresh { piece_complete } = arrival {
                    return Ok(Effect::StoreBlock { block, data, piece_complete });
                }
            }
            Frame::Extended { .. } => return self.on_common_frame(frame, ctx),
        }
        Ok(Effect::Nothing)
    }

    /// Frames handled the same with or without metadata: BEP 10 extended messages.
    fn on_common_frame<'a>(&mut self, frame: Frame<'a>, _ctx: &TorrentContext) -> Result<Effect<'a>, DropReason> {
        let (ext_id, payload) = match frame {
            Frame::Extended { ext_id, payload } => (ext_id, payload),
            Frame::Port(port) => {
                if port != 0 {
                    self.peer_dht_port = Some(port);
                }
                return Ok(Effect::Nothing);
            }
            _ => return Ok(Effect::Nothing),
        };
        match ext_id {
            extension::HANDSHAKE_ID => {
                let Some(hs) = extension::parse_handshake(payload) else {
                    return Ok(Effect::Nothing);
                };
                if let Some(reqq) = hs.reqq {
                    self.pipeline.set_peer_limit(reqq);
                }
                self.record(SessionEvent::Extended {
                    reqq: hs.reqq,
                    ut_metadata: hs.ut_metadata.is_some(),
                    ut_pex: hs.ut_pex.is_some(),
                    upload_only: hs.upload_only,
                });
                self.extended = Some(hs);
                Ok(Effect::ExtendedHandshake)
            }
            extension::OUR_UT_METADATA => Ok(Effect::Metadata(payload)),
            extension::OUR_UT_PEX => Ok(Effect::Pex(payload)),
            // Extensions we did not offer: ignored, as BEP 10 allows.
            _ => Ok(Effect::Nothing),
        }
    }

    /// Sends an extended message the peer offered (`ut_metadata` or `ut_pex`); false if it did not.
    pub fn send_extended(&mut self, extension: PeerExtension, payload: &[u8]) -> bool {
        let id = self.extended.as_ref().and_then(|hs| match extension {
            PeerExtension::Metadata => hs.ut_metadata,
            PeerExtension::Pex => hs.ut_pex,
        });
        match id {
            Some(ext_id) => {
                self.send(Frame::Extended { ext_id, payload });
                true
            }
            None => false,
        }
    }

    /// The DHT port the peer announced in a `port` message since the last call (BEP 5).
    pub fn take_peer_dht_port(&mut self) -> Option<u16> {
        self.peer_dht_port.take()
    }

    /// Still in the metadata phase (see `TorrentContext::awaiting_metadata`).
    pub fn is_awaiting_metadata(&self) -> bool {
        self.unknown_pieces.is_some()
    }

    /// The metadata arrived and the torrent is ready: applies what the peer said it has (its bitfield,
    /// `have`s, `have all`) to a bitfield of the real size, tells the peer which pieces we have (as `have`s:
    /// a bitfield is legal only as the first message), and takes part in the swarm from now on. A recorded
    /// bitfield of the wrong length is ignored (the peer's `have`s after this still count).
    pub fn upgrade(&mut self, ctx: &TorrentContext, swarm: &mut Swarm, now: Timestamp) {
        let Some(unknown) = self.unknown_pieces.take() else {
            return;
        };
        let n = ctx.geometry.piece_count();
        self.peer_has = Bitfield::new(n);
        if unknown.have_all {
            self.peer_has = Bitfield::full(n);
        } else {
            if let Some(Ok(bits)) = unknown.bitfield.as_deref().map(|b| Bitfield::from_wire(b, n)) {
                self.peer_has = bits;
            }
            for (byte, bits) in unknown.haves.iter().enumerate() {
                for bit in 0..8 {
                    let piece = (byte * 8 + bit) as u32;
                    if bits & (0x80 >> bit) != 0 && piece < n {
                        self.peer_has.set(piece);
                    }
                }
            }
        }
        self.on_peer_pieces_replaced(swarm);
        for piece in swarm.have().iter_ones() {
            self.send(Frame::Have { piece });
        }
        if self.phase == Phase::AwaitingFirstMessage {
            self.phase = Phase::Active;
        }
        self.update_interest(swarm, now);
    }

    fn on_request(
        &mut self,
        piece: u32,
        offset: u32,
        len: u32,
        geometry: &Geometry,
        swarm: &Swarm,
    ) -> Result<(), PeerMisbehaved> {
        if len > MAX_SERVED_BLOCK {
            return Err(PeerMisbehaved::OversizedRequest { len });
        }
        let block = geometry.block(piece, offset, len, MAX_SERVED_BLOCK).ok_or(PeerMisbehaved::BadRequest {
            piece,
            offset,
            len,
        })?;
        if !swarm.have().get(piece) {
            if self.fast {
                // BEP 6: it may be an allowed-fast piece we offered before we had it.
                self.reject(block);
                return Ok(());
            }
            return Err(PeerMisbehaved::RequestedMissingPiece { piece });
        }
        if self.am_choking && !self.allowed_out.contains(&piece) {
            // BEP 3: requests from a choked peer are ignored (it may not know yet); BEP 6: rejected.
            if self.fast {
                self.reject(block);
            }
            return Ok(());
        }
        if self.am_choking {
            // An allowed-fast piece: served while choked, but only a few times over (libtorrent allows
            // three pieces' worth per piece), so a choked peer cannot download it again and again.
            let cap = ALLOWED_FAST_SERVE_FACTOR * ALLOWED_FAST_COUNT as u64 * u64::from(geometry.piece_len(0));
            if self.served_while_choked >= cap {
                self.reject(block);
                return Ok(());
            }
        }
        if self.requests.len() >= MAX_QUEUED_REQUESTS {
            if self.fast {
                self.reject(block);
                return Ok(());
            }
            return Err(PeerMisbehaved::RequestFlood);
        }
        if !self.requests.contains(&block) {
            self.requests.push_back(block);
        }
        Ok(())
    }

    fn add_piece(&mut self, piece: u32, swarm: &mut Swarm) {
        if self.peer_has.set(piece) {
            swarm.on_peer_have(piece);
            if swarm.wants(piece) {
                self.interesting += 1;
            }
            if self.allowed_in.contains(&piece) {
                self.mark_fast_pickable(piece);
            }
        }
        self.counted = true;
    }

    fn on_peer_pieces_replaced(&mut self, swarm: &mut Swarm) {
        if self.counted {
            // Only reachable via a tolerated HaveAll after a lazy start; keep availability exact.
            swarm.on_peer_gone(&self.peer_has);
        }
        swarm.on_peer_bitfield(&self.peer_has);
        self.counted = true;
        self.recount_interest(swarm);
        for i in 0..self.allowed_in.len() {
            let piece = self.allowed_in[i];
            if self.peer_has.get(piece) {
                self.mark_fast_pickable(piece);
            }
        }
    }

    /// Recomputes which of the peer's pieces we want (after a bitfield, or a change of file selection).
    pub fn recount_interest(&mut self, swarm: &Swarm) {
        self.interesting = self.peer_has.iter_ones().filter(|&p| swarm.wants(p)).count() as u32;
    }

    fn update_interest(&mut self, swarm: &mut Swarm, now: Timestamp) {
        let want = self.interesting > 0;
        if want != self.am_interested {
            self.am_interested = want;
            self.record(SessionEvent::AmInterested(want));
            self.send(if want { Frame::Interested } else { Frame::NotInterested });
        }
        if want {
            self.fill_requests(swarm, now); // while choked, only allowed-fast pieces
        }
    }

    /// Requests blocks until the pipeline is at its target depth or the picker has nothing for us.
    /// While the peer chokes us, only its allowed-fast pieces (BEP 6) are asked for.
    fn fill_requests(&mut self, swarm: &mut Swarm, now: Timestamp) {
        if !self.am_interested {
            return;
        }
        let choked_pickable = match (&self.fast_pickable, self.peer_choking) {
            (_, false) => None,
            (Some(pickable), true) if self.fast => Some(pickable),
            (_, true) => return,
        };
        // Top up in batches of a sixteenth of the depth, so a deep pipeline sends requests a few dozen
        // at a time (one write, one packet) rather than one per arriving block.
        let batch = (self.pipeline.target() / 16).max(1);
        if self.pipeline.active() + batch > self.pipeline.target() && self.pipeline.active() > 0 {
            return;
        }
        let has = choked_pickable.unwrap_or(&self.peer_has);
        // The hint is tried without looking at `has`: while choked, only an allowed-fast one will do.
        let mut hint = self.hint.filter(|&p| has.get(p));
        let whole_pieces = prefers_whole_pieces(self.pipeline.rate(), swarm.geometry().piece_length());
        while self.pipeline.has_room() {
            let pipeline = &self.pipeline;
            let is_requested = |b: &BlockRef| pipeline.is_requested(b);
            let endgame =
                (pipeline.active() < ENDGAME_PEER_DEPTH).then_some(&is_requested as &dyn Fn(&BlockRef) -> bool);
            let Some(block) = swarm.reserve_block(has, &mut hint, whole_pieces, endgame) else {
                break;
            };
            self.pipeline.push(block, now);
            if let Some(t) = self.trace.as_mut() {
                t.record(SessionEvent::Request(block));
            }
            wire::encode(&Frame::Request { piece: block.piece, offset: block.offset, len: block.len }, self.out.tail());
        }
        if hint.is_some() {
            self.hint = hint;
        }
        self.sync_request_timer();
    }

    /// The pipeline changed: its next deadline is the `Requests` timer.
    fn sync_request_timer(&mut self) {
        self.timers.set_or_stop(Timer::Requests, self.pipeline.next_deadline());
    }

    /// We verified `piece`: tell the peer, and drop interest if it has nothing else we want.
    pub fn on_we_have(&mut self, piece: u32, swarm: &mut Swarm, now: Timestamp) {
        if matches!(self.phase, Phase::AwaitingConnect | Phase::AwaitingHandshake) {
            return; // our bitfield, sent after the handshake, will include it
        }
        self.send_have(piece);
        if self.peer_has.get(piece) {
            self.interesting = self.interesting.saturating_sub(1);
        }
        self.update_interest(swarm, now);
    }

    /// A piece we held unconfirmed (trusted from the resume file, so never advertised and never wanted)
    /// passed its check: tell the peer. It was never counted in `interesting`, so interest is unchanged.
    pub fn on_we_confirmed(&mut self, piece: u32) {
        if matches!(self.phase, Phase::AwaitingConnect | Phase::AwaitingHandshake) {
            return; // our bitfield, sent after the handshake, will include it
        }
        self.send_have(piece);
    }

    /// A piece we did not want (it was unconfirmed) became wanted (it failed its check): if the peer has
    /// it, it is interesting now.
    pub fn on_piece_wanted(&mut self, piece: u32, swarm: &mut Swarm, now: Timestamp) {
        if matches!(self.phase, Phase::AwaitingConnect | Phase::AwaitingHandshake) {
            return; // the peer's bitfield, still to come, is counted against what we want then
        }
        if self.peer_has.get(piece) && swarm.wants(piece) {
            self.interesting += 1;
            self.update_interest(swarm, now);
        }
    }

    /// Another peer delivered `block` first (endgame): cancel our request for it.
    pub fn on_block_taken(&mut self, block: &BlockRef) {
        if self.pipeline.release(block) {
            self.cancels_sent += 1;
            self.record(SessionEvent::CancelSent(*block));
            self.send(Frame::Cancel { piece: block.piece, offset: block.offset, len: block.len });
            self.sync_request_timer();
        }
    }

    /// Choke or unchoke the peer (the choker decided).
    pub fn set_choking(&mut self, choke: bool) {
        if choke == self.am_choking {
            return;
        }
        self.am_choking = choke;
        self.record(SessionEvent::AmChoke(choke));
        if choke {
            // BEP 3: choking discards the peer's queued requests. BEP 6: choke first, then reject each
            // one, except those for allowed-fast pieces, which are still served.
            self.out.shrink_if_idle();
            self.send(Frame::Choke);
            if self.fast {
                let allowed = std::mem::take(&mut self.allowed_out);
                self.reject_queued(|b| !allowed.contains(&b.piece));
                self.allowed_out = allowed;
            } else {
                self.requests.clear();
            }
            self.requests.shrink_to(64);
        } else {
            self.send(Frame::Unchoke);
        }
    }

    /// The oldest queued request to serve, if any and what is queued to send plus what is being read for
    /// this peer (`reading`) stays under `ahead` bytes: the caller reads it from disk and hands the bytes
    /// to `send_block` (or `read_failed`). The engine sizes `ahead` to how many peers it serves: room for a
    /// few blocks in flight keeps one fast peer's disk round trips covered, and with many peers each keeps
    /// about `SERVE_AHEAD` (the socket's own buffer does the rest).
    pub fn next_to_serve(&mut self, ahead: usize) -> Option<BlockRef> {
        // While we choke a fast peer its queue holds only allowed-fast requests (the rest were rejected).
        if self.am_choking && !self.fast {
            return None;
        }
        // The block taken must fit too: a send queue's memory doubles past each power of two.
        let message = wire::PIECE_HEADER_LEN + crate::geometry::BLOCK_LEN as usize;
        if self.out.len() + (self.reading as usize + 1) * message > ahead {
            return None;
        }
        let block = self.requests.pop_front()?;
        self.reading += 1;
        Some(block)
    }

    /// The peer has requests queued that we would serve.
    pub fn has_requests_to_serve(&self) -> bool {
        !self.requests.is_empty() && (!self.am_choking || self.fast)
    }

    /// Blocks taken by `next_to_serve` and not yet sent.
    pub fn reading(&self) -> u32 {
        self.reading
    }

    /// A block taken by `next_to_serve` was read: it goes out (even if the peer cancelled or we choked
    /// since: it was asked for, and a peer takes a block it requested).
    pub fn send_block(&mut self, block: &BlockRef, data: &[u8]) {
        self.reading = self.reading.saturating_sub(1);
        let tail = self.out.tail();
        wire::encode_piece_header(block.piece, block.offset, block.len, tail);
        tail.extend_from_slice(data);
        self.uploaded += u64::from(block.len);
        self.upload_sample += u64::from(block.len);
        if self.am_choking {
            self.served_while_choked += u64::from(block.len);
        }
    }

    /// `next_to_serve`, `read` in place, then `send_block`: for tests that serve without a disk queue.
    #[cfg(test)]
    pub fn serve_next<E>(
        &mut self,
        read: impl FnOnce(&BlockRef, &mut [u8]) -> Result<(), E>,
    ) -> Result<Option<BlockRef>, E> {
        let Some(block) = self.next_to_serve(crate::peer::buffers::SERVE_AHEAD) else {
            return Ok(None);
        };
        let mut buf = vec![0; block.len as usize];
        if let Err(e) = read(&block, &mut buf) {
            self.read_failed();
            return Err(e);
        }
        self.send_block(&block, &buf);
        Ok(Some(block))
    }

    /// A block taken by `next_to_serve` could not be read (the torrent is failing): it is forgotten.
    pub fn read_failed(&mut self) {
        self.reading = self.reading.saturating_sub(1);
    }

    /// Time-driven work at `now`: handles each timer that is due, in `Timer::ALL` order (those that end the
    /// session first). A call with nothing due does nothing.
    pub fn on_timeout(&mut self, swarm: &mut Swarm, now: Timestamp) -> Result<(), DropReason> {
        for timer in Timer::ALL {
            if !self.timers.is_expired(timer, now) {
                continue;
            }
            match timer {
                Timer::Connect => return Err(DropReason::ConnectTimedOut),
                Timer::Handshake => return Err(DropReason::HandshakeTimedOut),
                Timer::Silence => return Err(DropReason::Silent),
                Timer::KeepAlive => {
                    // With output still queued the peer will hear from us anyway; either way the next
                    // keep-alive is due a full interval from now (and the deadline never stays in the past).
                    if self.out.is_empty() {
                        self.send(Frame::KeepAlive);
                    }
                    self.timers.set(Timer::KeepAlive, now + KEEPALIVE_AFTER);
                }
                Timer::Requests => {
                    let expired = self.pipeline.expire(now, |b| swarm.release_block(b));
                    if expired > 0 {
                        log::debug!("peer {}: requests timed out", self.no.0);
                        self.record(SessionEvent::RequestsTimedOut { count: expired });
                    }
                    self.sync_request_timer();
                    self.fill_requests(swarm, now);
                }
            }
        }
        Ok(())
    }

    /// Once a second: rate samples and pipeline sizing.
    pub fn on_rate_sample(&mut self, swarm: &mut Swarm, now: Timestamp, dt: Duration) {
        self.pipeline.on_rate_sample(now);
        log::trace!(
            "peer {}: down {:.0} B/s, min rtt {:?}, pipeline {}/{}",
            self.no.0,
            self.pipeline.rate(),
            self.pipeline.min_rtt(),
            self.pipeline.active(),
            self.pipeline.target()
        );
        let secs = dt.as_secs_f64();
        if secs > 0.0 {
            let sample = self.upload_sample as f64 / secs;
            self.upload_rate = 0.7 * self.upload_rate + 0.3 * sample;
        }
        self.upload_sample = 0;
        self.fill_requests(swarm, now);
    }

    /// The earliest moment `on_timeout` has work: the earliest running timer.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.timers.next()
    }

    /// The connection is gone: give its blocks back and stop counting its pieces.
    pub fn on_closed(&mut self, swarm: &mut Swarm) {
        if self.peer_id.is_some() {
            log::info!(
                "peer {}: closed; fast extension {}, {} requests rejected by the peer, {} rejected by us, {} requests timed out",
                self.no.0,
                if self.fast { "on" } else { "off" },
                self.rejects_received,
                self.rejects_sent,
                self.pipeline.timed_out_total()
            );
        }
        self.pipeline.clear(|b| swarm.release_block(b));
        self.sync_request_timer();
        if self.counted {
            swarm.on_peer_gone(&self.peer_has);
            self.counted = false;
        }
    }
}
