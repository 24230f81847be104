//! `PeerSession` transcripts under simulated time (STYLE §7.12 item 2): frames in, frames out, and the
//! swarm's view of every block, grouped by the phase the session is in.

use std::time::Duration;

use super::buffers::SERVE_AHEAD;
use super::pipeline::{INITIAL_DEPTH, REQUEST_TIMEOUT};
use super::session::{
    Effect, PeerSession, Phase, TorrentContext, CONNECT_TIMEOUT, DROP_SILENT_AFTER, HANDSHAKE_TIMEOUT, KEEPALIVE_AFTER,
    MAX_QUEUED_REQUESTS, OUR_REQQ,
};
use super::{DropReason, PeerMisbehaved};
use crate::bitfield::Bitfield;
use crate::geometry::{BlockRef, Geometry, BLOCK_LEN};
use crate::metainfo::InfoHash;
use crate::storage::verify::assume_verified;
use crate::swarm::{BlockState, PeerNo, Swarm};
use crate::time::{millis, secs, Timestamp};
use crate::wire::extension;
use crate::wire::handshake::{Handshake, HANDSHAKE_LEN, RESERVED_EXTENSION_PROTOCOL, RESERVED_FAST};
use crate::wire::{decode, Decoded, Frame, FrameLimits, PIECE_HEADER_LEN};

// ---- the torrent --------------------------------------------------------------------------------

const INFO_HASH: InfoHash = InfoHash([0x11; 20]);
const OUR_ID: [u8; 20] = *b"-RL0001-ourpeerid000";
const THEIR_ID: [u8; 20] = *b"-TR3000-theirpeerid0";
const LISTEN_PORT: u16 = 6881;

/// 20 pieces of four 16 KiB blocks, the last piece short: one full block and a 100-byte one.
const PIECES: u32 = 20;
const PIECE_LEN: u32 = 4 * BLOCK_LEN;
const LAST_PIECE_LEN: u32 = BLOCK_LEN + 100;
/// Wire bitfields for `PIECES` pieces (4 spare bits).
const ALL: [u8; 3] = [0xff, 0xff, 0xf0];
const NONE: [u8; 3] = [0, 0, 0];

/// Block payloads are slices of this.
static DATA: [u8; BLOCK_LEN as usize] = [0x5A; BLOCK_LEN as usize];

fn geometry() -> Geometry {
    Geometry::new(PIECE_LEN, u64::from(PIECES - 1) * u64::from(PIECE_LEN) + u64::from(LAST_PIECE_LEN))
}

fn context() -> TorrentContext {
    TorrentContext {
        info_hash: INFO_HASH,
        our_peer_id: OUR_ID,
        geometry: geometry(),
        limits: FrameLimits::for_torrent(PIECES),
        listen_port: Some(LISTEN_PORT),
        metadata_size: None,
        private: false,
        dht_port: None,
        awaiting_metadata: false,
    }
}

/// We have nothing and want everything.
fn leecher() -> Swarm {
    Swarm::new(geometry(), Bitfield::new(PIECES), Bitfield::full(PIECES), false)
}

/// We have `pieces` (verified the way the loop does it) and want the rest.
fn having(pieces: &[u32]) -> Swarm {
    let mut swarm = leecher();
    for &p in pieces {
        let _contributors = swarm.on_piece_verified(assume_verified(p));
    }
    swarm
}

fn their_handshake(reserved: [u8; 8]) -> Handshake {
    Handshake { reserved, info_hash: INFO_HASH, peer_id: THEIR_ID }
}

const PLAIN: [u8; 8] = [0; 8];

fn with_extensions() -> [u8; 8] {
    let mut reserved = [0; 8];
    reserved[RESERVED_EXTENSION_PROTOCOL.0] |= RESERVED_EXTENSION_PROTOCOL.1;
    reserved
}

/// What we set: BEP 10 and BEP 6.
fn ours() -> [u8; 8] {
    let mut reserved = with_extensions();
    reserved[RESERVED_FAST.0] |= RESERVED_FAST.1;
    reserved
}

/// A peer with the fast extension (and not BEP 10).
fn fast_only() -> [u8; 8] {
    let mut reserved = [0; 8];
    reserved[RESERVED_FAST.0] |= RESERVED_FAST.1;
    reserved
}

fn block(piece: u32, index: u32) -> BlockRef {
    geometry().block_ref(piece, index)
}

// ---- harness --------------------------------------------------------------------------------------

/// One session, the swarm it shares, and the simulated clock.
struct Conn {
    ctx: TorrentContext,
    swarm: Swarm,
    peer: PeerSession,
    now: Timestamp,
}

const PEER: PeerNo = PeerNo(7);

fn outgoing(t0: Timestamp, swarm: Swarm) -> Conn {
    let ctx = context();
    let peer = PeerSession::outgoing(PEER, &ctx, t0);
    Conn { ctx, swarm, peer, now: t0 }
}

fn incoming(t0: Timestamp, swarm: Swarm) -> Conn {
    let ctx = context();
    let peer = PeerSession::incoming(PEER, &ctx, t0);
    Conn { ctx, swarm, peer, now: t0 }
}

/// What a session sent, owned, so transcripts compare with `assert_eq!`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum OwnedFrame {
    Handshake(Handshake),
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have(u32),
    Bitfield(Vec<u8>),
    Request(BlockRef),
    Piece { block: BlockRef, data: Vec<u8> },
    Cancel(BlockRef),
    Port(u16),
    HaveAll,
    HaveNone,
    Reject(BlockRef),
    Suggest(u32),
    AllowedFast(u32),
    Extended { ext_id: u8, payload: Vec<u8> },
    Unknown(u8),
}

impl From<Frame<'_>> for OwnedFrame {
    fn from(frame: Frame<'_>) -> Self {
        let b = |piece, offset, len| BlockRef { piece, offset, len };
        match frame {
            Frame::KeepAlive => OwnedFrame::KeepAlive,
            Frame::Choke => OwnedFrame::Choke,
            Frame::Unchoke => OwnedFrame::Unchoke,
            Frame::Interested => OwnedFrame::Interested,
            Frame::NotInterested => OwnedFrame::NotInterested,
            Frame::Have { piece } => OwnedFrame::Have(piece),
            Frame::Bitfield(bits) => OwnedFrame::Bitfield(bits.to_vec()),
            Frame::Request { piece, offset, len } => OwnedFrame::Request(b(piece, offset, len)),
            Frame::Piece { piece, offset, data } => {
                OwnedFrame::Piece { block: b(piece, offset, data.len() as u32), data: data.to_vec() }
            }
            Frame::Cancel { piece, offset, len } => OwnedFrame::Cancel(b(piece, offset, len)),
            Frame::Port(port) => OwnedFrame::Port(port),
            Frame::HaveAll => OwnedFrame::HaveAll,
            Frame::HaveNone => OwnedFrame::HaveNone,
            Frame::RejectRequest { piece, offset, len } => OwnedFrame::Reject(b(piece, offset, len)),
            Frame::SuggestPiece { piece } => OwnedFrame::Suggest(piece),
            Frame::AllowedFast { piece } => OwnedFrame::AllowedFast(piece),
            Frame::Extended { ext_id, payload } => OwnedFrame::Extended { ext_id, payload: payload.to_vec() },
            Frame::Unknown { id } => OwnedFrame::Unknown(id),
        }
    }
}

/// Decodes everything `peer` has queued (a handshake first, if there is one), then marks it written at
/// `now`, as the loop's flush would.
#[track_caller]
fn sent_by(peer: &mut PeerSession, now: Timestamp) -> Vec<OwnedFrame> {
    let bytes = peer.pending_output().to_vec();
    let mut frames = vec![];
    let mut at = 0;
    if bytes.first() == Some(&19) {
        let hs = Handshake::parse(&bytes).expect("a well-formed handshake").expect("a whole handshake");
        frames.push(OwnedFrame::Handshake(hs));
        at = HANDSHAKE_LEN;
    }
    let limits = FrameLimits::for_torrent(PIECES);
    while at < bytes.len() {
        match decode(&bytes[at..], &limits) {
            Ok(Decoded::Frame { frame, len }) => {
                frames.push(frame.into());
                at += len;
            }
            other => panic!("output is not whole frames at byte {at}: {other:?}"),
        }
    }
    peer.output_written(bytes.len(), now);
    frames
}

#[track_caller]
fn sent_frames(c: &mut Conn) -> Vec<OwnedFrame> {
    sent_by(&mut c.peer, c.now)
}

#[track_caller]
fn nothing_sent(c: &mut Conn) {
    assert_eq!(sent_frames(c), [], "expected silence");
}

/// The requests among `frames`, which must all be requests.
#[track_caller]
fn requests(frames: &[OwnedFrame]) -> Vec<BlockRef> {
    frames
        .iter()
        .map(|f| match f {
            OwnedFrame::Request(b) => *b,
            other => panic!("expected only requests, got {other:?}"),
        })
        .collect()
}

/// The peer sends a frame that needs nothing from the loop.
#[track_caller]
fn peer_sends(c: &mut Conn, frame: Frame<'_>) {
    match c.peer.on_frame(frame, &c.ctx, &mut c.swarm, c.now) {
        // An extended handshake is recorded in the session; the effect only tells the caller.
        Ok(Effect::Nothing | Effect::ExtendedHandshake) => {}
        other => panic!("{frame:?}: {other:?}"),
    }
}

/// The peer sends `block` filled from `DATA`.
#[track_caller]
fn peer_sends_block(c: &mut Conn, block: BlockRef) -> Effect<'static> {
    let frame = Frame::Piece { piece: block.piece, offset: block.offset, data: &DATA[..block.len as usize] };
    c.peer
        .on_frame(frame, &c.ctx, &mut c.swarm, c.now)
        .unwrap_or_else(|reason| panic!("{block:?} dropped the peer: {reason}"))
}

/// The peer sends `frame` and we hang up.
#[track_caller]
fn drops_on(c: &mut Conn, frame: Frame<'_>) -> DropReason {
    match c.peer.on_frame(frame, &c.ctx, &mut c.swarm, c.now) {
        Err(reason) => reason,
        Ok(effect) => panic!("{frame:?} was accepted: {effect:?}"),
    }
}

#[track_caller]
fn peer_handshakes(c: &mut Conn, reserved: [u8; 8]) {
    c.peer.on_handshake(&their_handshake(reserved), &c.ctx, &mut c.swarm, c.now).expect("handshake accepted");
}

/// Time-driven work at `t`.
fn timeout_at(c: &mut Conn, t: Timestamp) -> Result<(), DropReason> {
    c.now = t;
    c.peer.on_timeout(&mut c.swarm, t)
}

fn misbehaved(m: PeerMisbehaved) -> Result<(), DropReason> {
    Err(DropReason::Misbehaved(m))
}

/// An incoming connection whose handshakes are exchanged (peer without extensions); output drained.
fn handshaken(t0: Timestamp, swarm: Swarm) -> Conn {
    let mut c = incoming(t0, swarm);
    peer_handshakes(&mut c, PLAIN);
    let _ = sent_frames(&mut c);
    c
}

/// `handshaken`, then the peer's bitfield; output drained.
fn active(t0: Timestamp, swarm: Swarm, bits: &[u8]) -> Conn {
    let mut c = handshaken(t0, swarm);
    peer_sends(&mut c, Frame::Bitfield(bits));
    let _ = sent_frames(&mut c);
    c
}

/// A seed that has just unchoked us, and the requests we sent it.
fn unchoked_by_seed(t0: Timestamp) -> (Conn, Vec<BlockRef>) {
    let mut c = active(t0, leecher(), &ALL);
    peer_sends(&mut c, Frame::Unchoke);
    let sent = requests(&sent_frames(&mut c));
    (c, sent)
}

/// A leecher we serve: we have pieces 0 and 1, it is interested, and we unchoked it.
fn serving(t0: Timestamp) -> Conn {
    let mut c = active(t0, having(&[0, 1]), &NONE);
    peer_sends(&mut c, Frame::Interested);
    c.peer.set_choking(false);
    assert_eq!(sent_frames(&mut c), [OwnedFrame::Unchoke]);
    c
}

fn request(b: BlockRef) -> Frame<'static> {
    Frame::Request { piece: b.piece, offset: b.offset, len: b.len }
}

// ---- awaiting connect -----------------------------------------------------------------------------

#[test]
fn awaiting_connect_sends_nothing_then_our_handshake_on_connect() {
    let t0 = Timestamp::ZERO;
    let mut c = outgoing(t0, leecher());
    assert_eq!(c.peer.phase(), Phase::AwaitingConnect);
    assert!(c.peer.is_outgoing());
    nothing_sent(&mut c);
    assert_eq!(c.peer.next_deadline(), Some(t0 + CONNECT_TIMEOUT));
    c.now = t0 + secs(1);
    c.peer.on_connected(&c.ctx, c.now);
    assert_eq!(
        sent_frames(&mut c),
        [OwnedFrame::Handshake(Handshake { reserved: ours(), info_hash: INFO_HASH, peer_id: OUR_ID })]
    );
    assert_eq!(c.peer.phase(), Phase::AwaitingHandshake);
    assert_eq!(c.peer.next_deadline(), Some(t0 + secs(1) + HANDSHAKE_TIMEOUT));
}

#[test]
fn awaiting_connect_times_out_at_connect_timeout() {
    let t0 = Timestamp::from_secs(5);
    let mut c = outgoing(t0, leecher());
    assert_eq!(timeout_at(&mut c, t0 + CONNECT_TIMEOUT - millis(1)), Ok(()));
    nothing_sent(&mut c);
    assert_eq!(timeout_at(&mut c, t0 + CONNECT_TIMEOUT), Err(DropReason::ConnectTimedOut));
}

#[test]
fn awaiting_connect_waits_far_past_keepalive_for_nothing_but_the_connect_deadline() {
    // No silence or keep-alive timer runs before the connection exists.
    let t0 = Timestamp::ZERO;
    let mut c = outgoing(t0, leecher());
    assert_eq!(timeout_at(&mut c, t0 + millis(9_999)), Ok(()));
    nothing_sent(&mut c);
}

// ---- awaiting handshake ---------------------------------------------------------------------------

#[test]
fn awaiting_handshake_wrong_info_hash_drops_peer() {
    let t0 = Timestamp::ZERO;
    let mut c = incoming(t0, leecher());
    let mut hs = their_handshake(PLAIN);
    hs.info_hash = InfoHash([0x22; 20]);
    assert_eq!(c.peer.on_handshake(&hs, &c.ctx, &mut c.swarm, t0), misbehaved(PeerMisbehaved::WrongInfoHash));
    nothing_sent(&mut c);
}

#[test]
fn awaiting_handshake_our_own_peer_id_drops_peer() {
    let t0 = Timestamp::ZERO;
    let mut c = outgoing(t0, leecher());
    c.peer.on_connected(&c.ctx, t0);
    let _ = sent_frames(&mut c);
    let mut hs = their_handshake(with_extensions());
    hs.peer_id = OUR_ID;
    assert_eq!(c.peer.on_handshake(&hs, &c.ctx, &mut c.swarm, t0), misbehaved(PeerMisbehaved::OwnPeerId));
    nothing_sent(&mut c);
}

#[test]
fn awaiting_handshake_incoming_is_answered_with_ours() {
    let t0 = Timestamp::ZERO;
    let mut c = incoming(t0, leecher());
    assert_eq!(c.peer.phase(), Phase::AwaitingHandshake);
    nothing_sent(&mut c);
    peer_handshakes(&mut c, PLAIN);
    assert_eq!(
        sent_frames(&mut c),
        [OwnedFrame::Handshake(Handshake { reserved: ours(), info_hash: INFO_HASH, peer_id: OUR_ID })],
        "no extended handshake to a peer without the BEP 10 bit, no bitfield when we have nothing"
    );
    assert_eq!(c.peer.phase(), Phase::AwaitingFirstMessage);
    assert_eq!(c.peer.peer_id, Some(THEIR_ID));
}

#[test]
fn awaiting_handshake_incoming_with_extension_bit_gets_our_extended_handshake() {
    let t0 = Timestamp::ZERO;
    let mut c = incoming(t0, leecher());
    peer_handshakes(&mut c, with_extensions());
    let frames = sent_frames(&mut c);
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert!(matches!(frames[0], OwnedFrame::Handshake(hs) if hs.peer_id == OUR_ID));
    let OwnedFrame::Extended { ext_id, payload } = &frames[1] else {
        panic!("not an extended handshake: {:?}", frames[1]);
    };
    assert_eq!(*ext_id, extension::HANDSHAKE_ID);
    let ours = extension::parse_handshake(payload).expect("a bencoded dictionary");
    assert_eq!(ours.reqq, Some(OUR_REQQ));
    assert!(ours.client.is_some_and(|v| v.starts_with("rill ")));
    let port = format!("1:pi{LISTEN_PORT}e");
    assert!(payload.windows(port.len()).any(|w| w == port.as_bytes()), "listen port advertised");
}

#[test]
fn awaiting_handshake_outgoing_does_not_repeat_our_handshake() {
    let t0 = Timestamp::ZERO;
    let mut c = outgoing(t0, leecher());
    c.peer.on_connected(&c.ctx, t0);
    let _ = sent_frames(&mut c);
    peer_handshakes(&mut c, with_extensions());
    let frames = sent_frames(&mut c);
    assert!(matches!(frames[..], [OwnedFrame::Extended { ext_id: 0, .. }]), "{frames:?}");
}

#[test]
fn awaiting_handshake_we_send_our_bitfield_when_we_have_pieces() {
    let t0 = Timestamp::ZERO;
    let mut c = incoming(t0, having(&[0, 19]));
    peer_handshakes(&mut c, PLAIN);
    let frames = sent_frames(&mut c);
    assert_eq!(frames[1..], [OwnedFrame::Bitfield(vec![0x80, 0x00, 0x10])]);
}

#[test]
fn awaiting_handshake_times_out_at_handshake_timeout() {
    let t0 = Timestamp::from_secs(3);
    let mut c = incoming(t0, leecher());
    assert_eq!(c.peer.next_deadline(), Some(t0 + HANDSHAKE_TIMEOUT));
    assert_eq!(timeout_at(&mut c, t0 + HANDSHAKE_TIMEOUT - millis(1)), Ok(()));
    nothing_sent(&mut c);
    assert_eq!(timeout_at(&mut c, t0 + HANDSHAKE_TIMEOUT), Err(DropReason::HandshakeTimedOut));
}

#[test]
fn awaiting_handshake_deadline_counts_from_the_connect() {
    let t0 = Timestamp::ZERO;
    let mut c = outgoing(t0, leecher());
    let connected = t0 + secs(8);
    c.now = connected;
    c.peer.on_connected(&c.ctx, connected);
    let _ = sent_frames(&mut c);
    assert_eq!(timeout_at(&mut c, t0 + CONNECT_TIMEOUT), Ok(()));
    assert_eq!(timeout_at(&mut c, connected + HANDSHAKE_TIMEOUT), Err(DropReason::HandshakeTimedOut));
}

#[test]
fn awaiting_handshake_a_frame_first_is_misbehaviour() {
    let t0 = Timestamp::ZERO;
    let mut c = incoming(t0, leecher());
    assert_eq!(drops_on(&mut c, Frame::Interested), DropReason::Misbehaved(PeerMisbehaved::MessageBeforeHandshake));
}

#[test]
fn awaiting_handshake_is_over_once_the_handshake_arrives() {
    let t0 = Timestamp::ZERO;
    let mut c = incoming(t0, leecher());
    peer_handshakes(&mut c, PLAIN);
    let _ = sent_frames(&mut c);
    // The handshake deadline no longer applies.
    assert_eq!(timeout_at(&mut c, t0 + HANDSHAKE_TIMEOUT), Ok(()));
    nothing_sent(&mut c);
}

// ---- awaiting first message -----------------------------------------------------------------------

#[test]
fn first_message_bitfield_after_extended_handshake_is_accepted_and_a_later_one_adds_pieces() {
    let t0 = Timestamp::ZERO;
    let mut c = incoming(t0, leecher());
    peer_handshakes(&mut c, with_extensions());
    let _ = sent_frames(&mut c);
    peer_sends(&mut c, Frame::Extended { ext_id: 0, payload: b"d1:md11:ut_metadatai3ee4:reqqi500e1:v4:teste" });
    assert_eq!(c.peer.phase(), Phase::AwaitingFirstMessage);
    peer_sends(&mut c, Frame::Bitfield(&ALL));
    assert_eq!(sent_frames(&mut c), [OwnedFrame::Interested]);
    assert!(c.peer.is_peer_seed());
    assert_eq!(c.swarm.availability(0), 1);
    assert_eq!(c.peer.phase(), Phase::Active);
    // aria2 sends a whole bitfield later instead of several `have`s: it adds to what the peer has.
    peer_sends(&mut c, Frame::Bitfield(&ALL));
    assert_eq!(c.swarm.availability(0), 1, "pieces already known are not counted twice");
    assert!(c.peer.is_peer_seed());
}

#[test]
fn first_message_keep_alive_and_port_keep_the_bitfield_window_open() {
    let t0 = Timestamp::ZERO;
    let mut c = handshaken(t0, leecher());
    peer_sends(&mut c, Frame::KeepAlive);
    peer_sends(&mut c, Frame::Port(6881));
    peer_sends(&mut c, Frame::Bitfield(&ALL));
    assert_eq!(sent_frames(&mut c), [OwnedFrame::Interested]);
}

#[test]
fn first_message_bitfield_of_wrong_length_drops_peer() {
    let t0 = Timestamp::ZERO;
    let mut c = handshaken(t0, leecher());
    assert_eq!(
        drops_on(&mut c, Frame::Bitfield(&[0xff, 0xff])),
        DropReason::Misbehaved(PeerMisbehaved::BitfieldWrongLength { got: 2, want: 3 })
    );
    let mut c = handshaken(t0, leecher());
    assert_eq!(
        drops_on(&mut c, Frame::Bitfield(&[0xff, 0xff, 0xf0, 0])),
        DropReason::Misbehaved(PeerMisbehaved::BitfieldWrongLength { got: 4, want: 3 })
    );
}

#[test]
fn first_message_bitfield_with_spare_bits_set_drops_peer() {
    let t0 = Timestamp::ZERO;
    let mut c = handshaken(t0, leecher());
    assert_eq!(
        drops_on(&mut c, Frame::Bitfield(&[0xff, 0xff, 0xf1])),
        DropReason::Misbehaved(PeerMisbehaved::BitfieldSpareBits)
    );
}

#[test]
fn first_message_bitfield_of_pieces_we_have_leaves_us_uninterested() {
    let t0 = Timestamp::ZERO;
    let mut c = handshaken(t0, having(&[0]));
    peer_sends(&mut c, Frame::Bitfield(&[0x80, 0, 0]));
    nothing_sent(&mut c);
    assert!(!c.peer.is_am_interested());
}

#[test]
fn first_message_have_all_stands_for_a_full_bitfield() {
    let t0 = Timestamp::ZERO;
    let mut c = handshaken(t0, leecher());
    peer_sends(&mut c, Frame::HaveAll);
    assert_eq!(sent_frames(&mut c), [OwnedFrame::Interested]);
    assert!(c.peer.is_peer_seed());
    assert_eq!(drops_on(&mut c, Frame::HaveNone), DropReason::Misbehaved(PeerMisbehaved::BitfieldNotFirst));
}

#[test]
fn active_late_bitfield_is_a_union_with_what_the_peer_had() {
    let t0 = Timestamp::ZERO;
    let mut c = handshaken(t0, leecher());
    peer_sends(&mut c, Frame::Have { piece: 1 });
    assert_eq!(sent_frames(&mut c), [OwnedFrame::Interested]);
    // Pieces 0 and 2, without 1: the peer still has 1.
    peer_sends(&mut c, Frame::Bitfield(&[0b1010_0000, 0, 0]));
    assert!(c.peer.peer_has().get(0) && c.peer.peer_has().get(1) && c.peer.peer_has().get(2));
    assert_eq!((c.swarm.availability(0), c.swarm.availability(1)), (1, 1));
    assert_eq!(
        drops_on(&mut c, Frame::Bitfield(&[0xff, 0xff, 0xff])),
        DropReason::Misbehaved(PeerMisbehaved::BitfieldSpareBits),
        "a late bitfield is checked like a first one"
    );
}

// ---- active: interest -----------------------------------------------------------------------------

#[test]
fn active_have_out_of_range_drops_peer() {
    let t0 = Timestamp::ZERO;
    let mut c = active(t0, leecher(), &NONE);
    assert_eq!(
        drops_on(&mut c, Frame::Have { piece: PIECES }),
        DropReason::Misbehaved(PeerMisbehaved::IndexOutOfRange { index: PIECES })
    );
    let mut c = active(t0, leecher(), &NONE);
    assert_eq!(
        drops_on(&mut c, Frame::Have { piece: u32::MAX }),
        DropReason::Misbehaved(PeerMisbehaved::IndexOutOfRange { index: u32::MAX })
    );
}

#[test]
fn active_have_of_a_piece_we_want_makes_us_interested_once() {
    let t0 = Timestamp::ZERO;
    let mut c = active(t0, leecher(), &NONE);
    assert!(!c.peer.is_am_interested());
    peer_sends(&mut c, Frame::Have { piece: 3 });
    assert_eq!(sent_frames(&mut c), [OwnedFrame::Interested]);
    assert_eq!(c.swarm.availability(3), 1);
    peer_sends(&mut c, Frame::Have { piece: 4 });
    peer_sends(&mut c, Frame::Have { piece: 3 });
    nothing_sent(&mut c);
    assert_eq!(c.swarm.availability(3), 1, "a repeated have is counted once");
}

#[test]
fn active_have_of_a_piece_we_have_is_not_interesting() {
    let t0 = Timestamp::ZERO;
    let mut c = active(t0, having(&[3]), &NONE);
    peer_sends(&mut c, Frame::Have { piece: 3 });
    nothing_sent(&mut c);
    assert!(!c.peer.is_am_interested());
}

#[test]
fn active_we_have_sends_have_and_not_interested_when_nothing_else_is_wanted() {
    let t0 = Timestamp::ZERO;
    let mut c = active(t0, leecher(), &NONE);
    peer_sends(&mut c, Frame::Have { piece: 3 });
    assert_eq!(sent_frames(&mut c), [OwnedFrame::Interested]);
    peer_sends(&mut c, Frame::Unchoke);
    let asked = requests(&sent_frames(&mut c));
    assert_eq!(asked, (0..4).map(|i| block(3, i)).collect::<Vec<_>>());
    for (i, b) in asked.iter().enumerate() {
        let effect = peer_sends_block(&mut c, *b);
        let Effect::StoreBlock { block, data, piece_complete } = effect else {
            panic!("{effect:?}");
        };
        assert_eq!((block, data.len()), (*b, b.len as usize));
        assert_eq!(piece_complete, i == 3, "complete with the fourth block");
    }
    nothing_sent(&mut c);
    let _contributors = c.swarm.on_piece_verified(assume_verified(3));
    c.peer.on_we_have(3, &mut c.swarm, c.now);
    assert_eq!(sent_frames(&mut c), [OwnedFrame::Have(3), OwnedFrame::NotInterested]);
    assert!(!c.peer.is_am_interested());
}

#[test]
fn active_we_have_keeps_interest_while_the_peer_has_more() {
    let t0 = Timestamp::ZERO;
    let mut c = active(t0, leecher(), &ALL);
    let _contributors = c.swarm.on_piece_verified(assume_verified(5));
    c.peer.on_we_have(5, &mut c.swarm, c.now);
    assert_eq!(sent_frames(&mut c), [OwnedFrame::Have(5)]);
    assert!(c.peer.is_am_interested());
}

/// We have nothing hashed; the resume file vouches for every piece but 19 (all unconfirmed).
fn trusting() -> Swarm {
    let mut unconfirmed = Bitfield::full(PIECES);
    unconfirmed.clear(19);
    leecher().with_unconfirmed(&unconfirmed)
}

#[test]
fn active_unconfirmed_pieces_are_not_advertised_and_requests_for_them_are_misbehaviour() {
    let t0 = Timestamp::ZERO;
    let mut c = incoming(t0, trusting());
    peer_handshakes(&mut c, PLAIN);
    let sent = sent_frames(&mut c);
    assert!(!sent.iter().any(|f| matches!(f, OwnedFrame::Bitfield(_))), "nothing hashed, nothing advertised: {sent:?}");
    peer_sends(&mut c, Frame::Bitfield(&NONE));
    peer_sends(&mut c, Frame::Interested);
    c.peer.set_choking(false);
    let _ = sent_frames(&mut c);
    assert_eq!(
        drops_on(&mut c, request(block(4, 0))),
        DropReason::Misbehaved(PeerMisbehaved::RequestedMissingPiece { piece: 4 })
    );
}

#[test]
fn active_confirmed_piece_is_announced_without_using_up_interest() {
    let t0 = Timestamp::ZERO;
    // The peer has everything: only piece 19 (not vouched for) is interesting.
    let mut c = active(t0, trusting(), &ALL);
    assert!(c.peer.is_am_interested());
    for p in 0..5 {
        let _contributors = c.swarm.on_piece_verified(assume_verified(p));
        c.peer.on_we_confirmed(p);
    }
    assert_eq!(sent_frames(&mut c), (0..5).map(OwnedFrame::Have).collect::<Vec<_>>());
    assert!(c.peer.is_am_interested(), "piece 19 is still wanted");
}

#[test]
fn active_piece_that_fails_its_confirmation_makes_the_peer_interesting() {
    let t0 = Timestamp::ZERO;
    let mut unconfirmed = Bitfield::full(PIECES);
    unconfirmed.clear(19);
    let swarm = having(&[19]).with_unconfirmed(&unconfirmed);
    let mut c = active(t0, swarm, &ALL);
    assert!(!c.peer.is_am_interested(), "nothing to fetch while the rest is unconfirmed");
    c.swarm.on_confirm_failed(6);
    c.peer.on_piece_wanted(6, &mut c.swarm, c.now);
    assert_eq!(sent_frames(&mut c), [OwnedFrame::Interested]);
    peer_sends(&mut c, Frame::Unchoke);
    let asked = requests(&sent_frames(&mut c));
    assert_eq!(asked, (0..4).map(|i| block(6, i)).collect::<Vec<_>>(), "only the failed piece is fetched");
}

// ---- active: downloading --------------------------------------------------------------------------

#[test]
fn active_unchoke_sends_a_full_pipeline_of_16_kib_requests() {
    let t0 = Timestamp::ZERO;
    let (c, sent) = unchoked_by_seed(t0);
    assert_eq!(sent.len(), INITIAL_DEPTH as usize);
    assert_eq!(sent.len(), c.peer.pipeline().target() as usize);
    assert_eq!(c.peer.pipeline().active(), INITIAL_DEPTH);
    let g = geometry();
    let mut seen = std::collections::HashSet::new();
    for b in &sent {
        assert!(b.len <= BLOCK_LEN && b.len > 0, "{b:?}");
        assert!(b.piece < PIECES, "{b:?}");
        assert_eq!(b.offset % BLOCK_LEN, 0, "{b:?}");
        assert_eq!(*b, g.block_ref(b.piece, b.offset / BLOCK_LEN), "{b:?}");
        assert!(seen.insert(*b), "{b:?} requested twice");
        assert_eq!(c.swarm.block_state(b), Some(BlockState::Requested { owners: 1 }));
    }
    c.swarm.check_invariants();
}

#[test]
fn active_the_peers_reqq_caps_the_pipeline() {
    let t0 = Timestamp::ZERO;
    let mut c = incoming(t0, leecher());
    peer_handshakes(&mut c, with_extensions());
    peer_sends(&mut c, Frame::Extended { ext_id: 0, payload: b"d4:reqqi3ee" });
    peer_sends(&mut c, Frame::Bitfield(&ALL));
    let _ = sent_frames(&mut c);
    peer_sends(&mut c, Frame::Unchoke);
    assert_eq!(requests(&sent_frames(&mut c)).len(), 3);
    assert_eq!(c.peer.extended.as_ref().and_then(|e| e.reqq), Some(3));
}

#[test]
fn active_uninterested_unchoke_sends_no_requests() {
    let t0 = Timestamp::ZERO;
    let mut c = active(t0, leecher(), &NONE);
    peer_sends(&mut c, Frame::Unchoke);
    nothing_sent(&mut c);
    assert!(!c.peer.is_peer_choking());
}

#[test]
fn active_requested_block_is_stored_and_replaced_by_a_new_request() {
    let t0 = Timestamp::ZERO;
    let (mut c, sent) = unchoked_by_seed(t0);
    c.now = t0 + millis(40);
    let effect = peer_sends_block(&mut c, sent[0]);
    assert_eq!(effect, Effect::StoreBlock { block: sent[0], data: &DATA[..], piece_complete: false });
    assert_eq!(c.swarm.block_state(&sent[0]), Some(BlockState::Received));
    let more = requests(&sent_frames(&mut c));
    // The answered request is replaced, and slow start adds one more: the depth doubles per round trip.
    assert_eq!(more.len(), 2, "the pipeline is topped up and grows");
    assert!(more.iter().all(|b| !sent.contains(b)));
    assert_eq!(c.peer.pipeline().target(), INITIAL_DEPTH + 1);
    assert_eq!(c.peer.downloaded, u64::from(BLOCK_LEN));
    assert_eq!(c.peer.last_block_at, Some(t0 + millis(40)));
    assert_eq!(c.peer.pipeline().min_rtt(), Some(millis(40)));
}

#[test]
fn active_block_we_did_not_request_is_misbehaviour() {
    let t0 = Timestamp::ZERO;
    let (mut c, sent) = unchoked_by_seed(t0);
    let never = block(PIECES - 1, 1);
    assert!(!sent.contains(&never));
    assert_eq!(
        drops_on(&mut c, Frame::Piece { piece: never.piece, offset: never.offset, data: &DATA[..never.len as usize] }),
        DropReason::Misbehaved(PeerMisbehaved::UnrequestedBlock { piece: never.piece, offset: never.offset })
    );
}

#[test]
fn active_block_off_our_grid_or_of_the_wrong_length_is_unrequested() {
    let t0 = Timestamp::ZERO;
    let (mut c, sent) = unchoked_by_seed(t0);
    let b = sent[0];
    let cases = [(b.offset + 1, BLOCK_LEN as usize), (b.offset, BLOCK_LEN as usize - 1), (b.offset, 0)];
    for (offset, len) in cases {
        let (mut c2, _) = unchoked_by_seed(t0);
        assert_eq!(
            drops_on(&mut c2, Frame::Piece { piece: b.piece, offset, data: &DATA[..len] }),
            DropReason::Misbehaved(PeerMisbehaved::UnrequestedBlock { piece: b.piece, offset }),
            "{len} bytes at {offset}"
        );
    }
    // A block of a piece index past the end is unrequested too.
    assert_eq!(
        drops_on(&mut c, Frame::Piece { piece: PIECES, offset: 0, data: &DATA[..] }),
        DropReason::Misbehaved(PeerMisbehaved::UnrequestedBlock { piece: PIECES, offset: 0 })
    );
}

#[test]
fn active_second_copy_of_a_block_is_unrequested() {
    let t0 = Timestamp::ZERO;
    let (mut c, sent) = unchoked_by_seed(t0);
    let _ = peer_sends_block(&mut c, sent[0]);
    assert_eq!(
        drops_on(&mut c, Frame::Piece { piece: sent[0].piece, offset: sent[0].offset, data: &DATA[..] }),
        DropReason::Misbehaved(PeerMisbehaved::UnrequestedBlock { piece: sent[0].piece, offset: sent[0].offset })
    );
}

#[test]
fn active_choke_returns_requests_to_the_pool_but_late_blocks_are_accepted() {
    let t0 = Timestamp::ZERO;
    let (mut c, sent) = unchoked_by_seed(t0);
    c.now = t0 + millis(10);
    peer_sends(&mut c, Frame::Choke);
    nothing_sent(&mut c);
    assert!(c.peer.is_peer_choking());
    assert_eq!(c.peer.pipeline().active(), 0);
    for b in &sent {
        assert_eq!(c.swarm.block_state(b), Some(BlockState::Free), "{b:?}");
    }
    // A block that crossed the choke on the wire is still ours.
    c.now = t0 + millis(20);
    let effect = peer_sends_block(&mut c, sent[5]);
    assert!(matches!(effect, Effect::StoreBlock { block, .. } if block == sent[5]), "{effect:?}");
    assert_eq!(c.swarm.block_state(&sent[5]), Some(BlockState::Received));
    nothing_sent(&mut c);
    c.swarm.check_invariants();
    // Unchoked again: the pool is asked anew.
    peer_sends(&mut c, Frame::Unchoke);
    assert_eq!(requests(&sent_frames(&mut c)).len(), INITIAL_DEPTH as usize);
}

#[test]
fn active_block_re_requested_after_a_choke_answers_the_open_request() {
    // Seeders rotate their unchoke slots every 10-30 s. After choke and unchoke the same blocks are asked
    // again; each one that arrives answers its open request, and no cancel is due for it.
    let t0 = Timestamp::ZERO;
    let (mut c, sent) = unchoked_by_seed(t0);
    peer_sends(&mut c, Frame::Choke);
    c.now = t0 + secs(10);
    peer_sends(&mut c, Frame::Unchoke);
    let again = requests(&sent_frames(&mut c));
    let sorted = |mut v: Vec<BlockRef>| {
        v.sort_by_key(|b| (b.piece, b.offset));
        v
    };
    assert_eq!(sorted(again.clone()), sorted(sent), "the pool hands out the same blocks again");
    c.now = t0 + secs(10) + millis(50);
    let effect = peer_sends_block(&mut c, again[0]);
    assert!(matches!(effect, Effect::StoreBlock { .. }), "{effect:?}");
    assert!(!c.peer.pipeline().is_requested(&again[0]), "the block arrived, yet its request is still open");
    assert_eq!(c.peer.pipeline().active(), INITIAL_DEPTH + 1, "one answered, one new, one of slow start");
    assert_eq!(
        c.swarm.drain_endgame_taken().collect::<Vec<_>>(),
        [],
        "no other peer has this block in flight: the loop must not send a cancel"
    );
}

#[test]
fn active_reject_request_returns_the_block_to_the_pool() {
    let t0 = Timestamp::ZERO;
    let (mut c, sent) = unchoked_by_seed(t0);
    let b = sent[2];
    peer_sends(&mut c, Frame::RejectRequest { piece: b.piece, offset: b.offset, len: b.len });
    assert_eq!(c.peer.pipeline().active(), INITIAL_DEPTH - 1);
    assert_eq!(c.swarm.block_state(&b), Some(BlockState::Free));
}

// ---- active: timers -------------------------------------------------------------------------------

#[test]
fn active_request_time_out_returns_blocks_to_the_pool() {
    let t0 = Timestamp::ZERO;
    let (mut c, sent) = unchoked_by_seed(t0);
    assert_eq!(c.peer.next_deadline(), Some(t0 + REQUEST_TIMEOUT));
    c.now = t0 + secs(1);
    peer_sends(&mut c, Frame::KeepAlive);
    assert_eq!(timeout_at(&mut c, t0 + REQUEST_TIMEOUT - millis(1)), Ok(()));
    nothing_sent(&mut c);
    assert_eq!(timeout_at(&mut c, t0 + REQUEST_TIMEOUT), Ok(()));
    // Every request went back to the pool; a stalled peer is then trusted with one at a time.
    let again = requests(&sent_frames(&mut c));
    assert_eq!(again.len(), 1, "{again:?}");
    assert!(c.peer.pipeline().is_snubbed());
    assert_eq!(c.peer.pipeline().active(), 1);
    for b in sent.iter().filter(|b| **b != again[0]) {
        assert_eq!(c.swarm.block_state(b), Some(BlockState::Free), "{b:?}");
    }
    assert_eq!(c.swarm.block_state(&again[0]), Some(BlockState::Requested { owners: 1 }));
    c.swarm.check_invariants();
}

#[test]
fn active_block_arriving_after_its_time_out_is_accepted() {
    let t0 = Timestamp::ZERO;
    let (mut c, sent) = unchoked_by_seed(t0);
    assert_eq!(timeout_at(&mut c, t0 + REQUEST_TIMEOUT), Ok(()));
    let again = requests(&sent_frames(&mut c));
    let late = *sent.iter().rev().find(|b| !again.contains(b)).unwrap();
    c.now = t0 + REQUEST_TIMEOUT + secs(1);
    let effect = peer_sends_block(&mut c, late);
    assert!(matches!(effect, Effect::StoreBlock { block, .. } if block == late), "{effect:?}");
    assert!(!c.peer.pipeline().is_snubbed(), "a block ends the snub");
}

#[test]

fn active_block_re_requested_after_its_time_out_answers_the_open_request() {
    // After a time-out the picker hands the same peer one of its timed-out blocks again. When that block
    // arrives it answers the open request: the pipeline has room again and nobody has to cancel.
    let t0 = Timestamp::ZERO;
    let (mut c, sent) = unchoked_by_seed(t0);
    assert_eq!(timeout_at(&mut c, t0 + REQUEST_TIMEOUT), Ok(()));
    let again = requests(&sent_frames(&mut c));
    assert_eq!(again.len(), 1);
    assert!(sent.contains(&again[0]), "the re-request is for a timed-out block");
    c.now = t0 + REQUEST_TIMEOUT + secs(1);
    let effect = peer_sends_block(&mut c, again[0]);
    assert!(matches!(effect, Effect::StoreBlock { .. }), "{effect:?}");
    assert_eq!(c.swarm.block_state(&again[0]), Some(BlockState::Received));
    assert!(!c.peer.pipeline().is_requested(&again[0]), "the block arrived, yet its request is still open");
    assert_eq!(
        c.swarm.drain_endgame_taken().collect::<Vec<_>>(),
        [],
        "no other peer has this block in flight: the loop must not send a cancel"
    );
    assert_eq!(requests(&sent_frames(&mut c)).len(), 1, "the answered request is replaced");
}

#[test]
fn active_silent_peer_gets_keepalive_then_is_dropped() {
    let t0 = Timestamp::ZERO;
    let mut c = active(t0, leecher(), &NONE);
    assert_eq!(c.peer.next_deadline(), Some(t0 + KEEPALIVE_AFTER));
    assert_eq!(timeout_at(&mut c, t0 + KEEPALIVE_AFTER - millis(1)), Ok(()));
    nothing_sent(&mut c);
    assert_eq!(timeout_at(&mut c, t0 + KEEPALIVE_AFTER), Ok(()));
    assert_eq!(sent_frames(&mut c), [OwnedFrame::KeepAlive]);
    assert_eq!(c.peer.next_deadline(), Some(t0 + DROP_SILENT_AFTER));
    assert_eq!(timeout_at(&mut c, t0 + DROP_SILENT_AFTER - millis(1)), Ok(()));
    nothing_sent(&mut c);
    assert_eq!(timeout_at(&mut c, t0 + DROP_SILENT_AFTER), Err(DropReason::Silent));
}

#[test]
fn active_keepalive_counts_from_our_last_send() {
    let t0 = Timestamp::ZERO;
    let mut c = active(t0, having(&[0]), &NONE);
    c.now = t0 + secs(60);
    peer_sends(&mut c, Frame::Interested);
    c.peer.set_choking(false);
    assert_eq!(sent_frames(&mut c), [OwnedFrame::Unchoke]);
    assert_eq!(timeout_at(&mut c, t0 + KEEPALIVE_AFTER), Ok(()));
    nothing_sent(&mut c);
    assert_eq!(timeout_at(&mut c, t0 + secs(60) + KEEPALIVE_AFTER), Ok(()));
    assert_eq!(sent_frames(&mut c), [OwnedFrame::KeepAlive]);
}

#[test]

fn active_keepalive_due_while_output_is_stuck_asks_for_a_later_wake_up() {
    // The socket stopped taking bytes: the Unchoke queued at 10 s is never flushed. At 120 s the keep-alive
    // is due but not sent (output is pending). The session must then name a deadline after `now`, or a
    // loop that re-arms at `next_deadline()` fires it again in the same turn, for ever.
    let t0 = Timestamp::ZERO;
    let mut c = active(t0, having(&[0]), &NONE);
    c.now = t0 + secs(10);
    peer_sends(&mut c, Frame::Interested);
    c.peer.set_choking(false);
    let now = t0 + KEEPALIVE_AFTER;
    assert_eq!(timeout_at(&mut c, now), Ok(()));
    assert_eq!(timeout_at(&mut c, now), Ok(()), "a second wake-up changes nothing");
    let next = c.peer.next_deadline().expect("an active session has timers");
    assert!(next > now, "next_deadline {next} is not after now {now}");
}

#[test]
fn active_any_input_resets_the_silence_timer() {
    let t0 = Timestamp::ZERO;
    let mut c = active(t0, leecher(), &NONE);
    c.now = t0 + secs(100);
    peer_sends(&mut c, Frame::KeepAlive);
    assert_eq!(timeout_at(&mut c, t0 + DROP_SILENT_AFTER), Ok(()));
    assert_eq!(timeout_at(&mut c, t0 + secs(100) + DROP_SILENT_AFTER), Err(DropReason::Silent));
}

#[test]
fn active_spurious_wake_up_does_nothing() {
    let t0 = Timestamp::ZERO;
    let (mut c, sent) = unchoked_by_seed(t0);
    for t in [t0, t0 + millis(1), t0 + secs(29)] {
        assert_eq!(timeout_at(&mut c, t), Ok(()));
        nothing_sent(&mut c);
    }
    assert_eq!(c.peer.pipeline().active(), sent.len() as u32);
}

#[test]
fn every_phase_acts_exactly_at_next_deadline() {
    // `next_deadline` and `on_timeout` read one timer table: a wake-up a microsecond early changes nothing
    // (no bytes, same deadline, same requests), and the wake-up at the deadline does the timer's work.
    let t0 = Timestamp::from_secs(3);
    let early = |c: &mut Conn| {
        let due = c.peer.next_deadline().expect("every session has a deadline");
        let active = c.peer.pipeline().active();
        assert_eq!(timeout_at(c, due - Duration::from_micros(1)), Ok(()));
        nothing_sent(c);
        assert_eq!(c.peer.next_deadline(), Some(due));
        assert_eq!(c.peer.pipeline().active(), active);
        due
    };
    let mut c = outgoing(t0, leecher());
    let due = early(&mut c);
    assert_eq!(timeout_at(&mut c, due), Err(DropReason::ConnectTimedOut));

    let mut c = incoming(t0, leecher());
    let due = early(&mut c);
    assert_eq!(timeout_at(&mut c, due), Err(DropReason::HandshakeTimedOut));

    let (mut c, sent) = unchoked_by_seed(t0);
    let due = early(&mut c);
    assert_eq!(due, t0 + REQUEST_TIMEOUT);
    assert_eq!(timeout_at(&mut c, due), Ok(()));
    assert_eq!(requests(&sent_frames(&mut c)).len(), 1, "all {} requests timed out, one is re-sent", sent.len());
    let due = early(&mut c);
    assert_eq!(due, t0 + REQUEST_TIMEOUT + REQUEST_TIMEOUT, "the re-sent request times out next");

    let mut c = active(t0, leecher(), &NONE);
    let due = early(&mut c);
    assert_eq!(timeout_at(&mut c, due), Ok(()));
    assert_eq!(sent_frames(&mut c), [OwnedFrame::KeepAlive]);
    let due = early(&mut c);
    assert_eq!(timeout_at(&mut c, due), Err(DropReason::Silent));
}

// ---- active: serving ------------------------------------------------------------------------------

#[test]
fn active_request_while_we_choke_is_ignored() {
    let t0 = Timestamp::ZERO;
    let mut c = active(t0, having(&[0]), &NONE);
    peer_sends(&mut c, Frame::Interested);
    assert!(c.peer.is_am_choking());
    peer_sends(&mut c, request(block(0, 0)));
    assert_eq!(c.peer.queued_requests(), 0);
    let served = c.peer.serve_next(|_, _| Ok::<(), ()>(()));
    assert_eq!(served, Ok(None));
    nothing_sent(&mut c);
}

#[test]
fn active_oversized_request_drops_peer() {
    let t0 = Timestamp::ZERO;
    let mut c = serving(t0);
    assert_eq!(
        drops_on(&mut c, Frame::Request { piece: 0, offset: 0, len: BLOCK_LEN + 1 }),
        DropReason::Misbehaved(PeerMisbehaved::OversizedRequest { len: BLOCK_LEN + 1 })
    );
}

#[test]
fn active_request_for_a_piece_we_do_not_have_drops_peer() {
    let t0 = Timestamp::ZERO;
    let mut c = serving(t0);
    assert_eq!(
        drops_on(&mut c, request(block(5, 0))),
        DropReason::Misbehaved(PeerMisbehaved::RequestedMissingPiece { piece: 5 })
    );
}

#[test]
fn active_request_outside_the_piece_drops_peer() {
    let t0 = Timestamp::ZERO;
    let cases = [(0, PIECE_LEN - 10, 20), (0, PIECE_LEN, 1), (0, 0, 0), (PIECES, 0, BLOCK_LEN), (1, u32::MAX, 2)];
    for (piece, offset, len) in cases {
        let mut c = serving(t0);
        assert_eq!(
            drops_on(&mut c, Frame::Request { piece, offset, len }),
            DropReason::Misbehaved(PeerMisbehaved::BadRequest { piece, offset, len }),
            "{len} bytes at {piece}+{offset}"
        );
    }
}

#[test]
fn active_request_flood_drops_peer() {
    let t0 = Timestamp::ZERO;
    let mut c = serving(t0);
    // Distinct one-byte requests: any span inside a piece is legal.
    for i in 0..MAX_QUEUED_REQUESTS as u32 {
        peer_sends(&mut c, Frame::Request { piece: 0, offset: i, len: 1 });
    }
    assert_eq!(c.peer.queued_requests(), MAX_QUEUED_REQUESTS);
    assert_eq!(
        drops_on(&mut c, Frame::Request { piece: 1, offset: 0, len: 1 }),
        DropReason::Misbehaved(PeerMisbehaved::RequestFlood)
    );
}

#[test]
fn active_repeated_request_is_queued_once() {
    let t0 = Timestamp::ZERO;
    let mut c = serving(t0);
    peer_sends(&mut c, request(block(0, 1)));
    peer_sends(&mut c, request(block(0, 1)));
    assert_eq!(c.peer.queued_requests(), 1);
}

#[test]
fn active_cancel_removes_a_queued_request() {
    let t0 = Timestamp::ZERO;
    let mut c = serving(t0);
    peer_sends(&mut c, request(block(0, 0)));
    peer_sends(&mut c, request(block(1, 2)));
    peer_sends(&mut c, Frame::Cancel { piece: 0, offset: 0, len: BLOCK_LEN });
    assert_eq!(c.peer.queued_requests(), 1);
    let served = c.peer.serve_next(|_, out| {
        out.fill(0xC3);
        Ok::<(), ()>(())
    });
    assert_eq!(served, Ok(Some(block(1, 2))));
    assert_eq!(sent_frames(&mut c), [OwnedFrame::Piece { block: block(1, 2), data: vec![0xC3; BLOCK_LEN as usize] }]);
    assert_eq!(c.peer.uploaded, u64::from(BLOCK_LEN));
    assert_eq!(c.peer.serve_next(|_, _| Ok::<(), ()>(())), Ok(None));
}

#[test]
fn active_cancel_of_something_never_asked_is_ignored() {
    let t0 = Timestamp::ZERO;
    let mut c = serving(t0);
    peer_sends(&mut c, request(block(0, 0)));
    peer_sends(&mut c, Frame::Cancel { piece: 0, offset: 0, len: 100 });
    assert_eq!(c.peer.queued_requests(), 1);
}

#[test]
fn active_failed_disk_read_sends_nothing() {
    let t0 = Timestamp::ZERO;
    let mut c = serving(t0);
    peer_sends(&mut c, request(block(0, 0)));
    assert_eq!(c.peer.serve_next(|_, _| Err("disk on fire")), Err("disk on fire"));
    nothing_sent(&mut c);
    assert_eq!(c.peer.uploaded, 0);
}

#[test]
fn active_serving_stops_filling_the_send_buffer_past_serve_ahead() {
    let t0 = Timestamp::ZERO;
    let mut c = serving(t0);
    // Far more than the send buffer may hold: distinct 16 KiB spans of pieces 0 and 1.
    for piece in 0..2 {
        for offset in (0..=PIECE_LEN - BLOCK_LEN).step_by(1024) {
            peer_sends(&mut c, Frame::Request { piece, offset, len: BLOCK_LEN });
        }
    }
    let queued = c.peer.queued_requests();
    let mut served = 0;
    while let Ok(Some(_)) = c.peer.serve_next(|_, _| Ok::<(), ()>(())) {
        served += 1;
    }
    let message = BLOCK_LEN as usize + PIECE_HEADER_LEN;
    // As many whole messages as fit in `SERVE_AHEAD`, and at least one.
    assert!(
        served >= 1 && served * message <= SERVE_AHEAD.max(message) && (served + 1) * message > SERVE_AHEAD,
        "served {served}"
    );
    assert!(c.peer.wants_input());
    assert_eq!(c.peer.queued_requests(), queued - served);
    let _ = sent_frames(&mut c);
    assert!(matches!(c.peer.serve_next(|_, _| Ok::<(), ()>(())), Ok(Some(_))));
}

#[test]
fn active_choking_the_peer_discards_its_queue() {
    let t0 = Timestamp::ZERO;
    let mut c = serving(t0);
    peer_sends(&mut c, request(block(0, 0)));
    c.peer.set_choking(true);
    assert_eq!(sent_frames(&mut c), [OwnedFrame::Choke]);
    assert_eq!(c.peer.queued_requests(), 0);
    c.peer.set_choking(true);
    nothing_sent(&mut c);
}

#[test]
fn active_not_interested_discards_the_peers_queue() {
    let t0 = Timestamp::ZERO;
    let mut c = serving(t0);
    peer_sends(&mut c, request(block(0, 0)));
    peer_sends(&mut c, Frame::NotInterested);
    assert!(!c.peer.is_peer_interested());
    assert_eq!(c.peer.queued_requests(), 0);
}

// ---- endgame ----------------------------------------------------------------------------------------

#[test]
fn endgame_block_taken_elsewhere_is_cancelled_once_and_its_copy_still_accepted() {
    let t0 = Timestamp::ZERO;
    let (mut c, sent) = unchoked_by_seed(t0);
    let b = sent[3];
    c.peer.on_block_taken(&b);
    assert_eq!(sent_frames(&mut c), [OwnedFrame::Cancel(b)]);
    assert_eq!(c.peer.pipeline().active(), INITIAL_DEPTH - 1);
    c.peer.on_block_taken(&b);
    c.peer.on_block_taken(&block(PIECES - 1, 1));
    nothing_sent(&mut c);
    // The cancel crossed the block on the wire: not misbehaviour.
    let effect = peer_sends_block(&mut c, b);
    assert!(matches!(effect, Effect::StoreBlock { .. }), "{effect:?}");
}

#[test]
fn endgame_two_peers_share_the_last_piece_and_the_slower_one_cancels() {
    let t0 = Timestamp::ZERO;
    let ctx = context();
    // Everything but piece 0 is verified.
    let mut have = Bitfield::full(PIECES);
    have.clear(0);
    let mut swarm = Swarm::new(geometry(), have, Bitfield::full(PIECES), false);
    let mut fast = PeerSession::incoming(PeerNo(1), &ctx, t0);
    let mut slow = PeerSession::incoming(PeerNo(2), &ctx, t0);
    for peer in [&mut fast, &mut slow] {
        peer.on_handshake(&their_handshake(PLAIN), &ctx, &mut swarm, t0).unwrap();
        for frame in [Frame::Bitfield(&ALL), Frame::Unchoke] {
            assert_eq!(peer.on_frame(frame, &ctx, &mut swarm, t0), Ok(Effect::Nothing));
        }
    }
    let to_fast = sent_by(&mut fast, t0);
    let to_slow = sent_by(&mut slow, t0);
    let piece0: Vec<BlockRef> = (0..4).map(|i| block(0, i)).collect();
    for to in [&to_fast, &to_slow] {
        assert!(
            matches!(to[..3], [OwnedFrame::Handshake(_), OwnedFrame::Bitfield(_), OwnedFrame::Interested]),
            "{to:?}"
        );
    }
    assert_eq!(requests(&to_fast[3..]), piece0, "{to_fast:?}");
    let last_first: Vec<BlockRef> = piece0.iter().rev().copied().collect();
    assert_eq!(requests(&to_slow[3..]), last_first, "endgame: the same blocks again, the last requested first");
    assert_eq!(swarm.block_state(&piece0[0]), Some(BlockState::Requested { owners: 2 }));
    // The fast peer delivers block 0: the slow one must cancel it.
    let t1 = t0 + millis(30);
    let frame = Frame::Piece { piece: 0, offset: 0, data: &DATA[..] };
    let effect = fast.on_frame(frame, &ctx, &mut swarm, t1).unwrap();
    assert!(matches!(effect, Effect::StoreBlock { .. }), "{effect:?}");
    let taken: Vec<BlockRef> = swarm.drain_endgame_taken().collect();
    assert_eq!(taken, [piece0[0]]);
    for b in &taken {
        fast.on_block_taken(b);
        slow.on_block_taken(b);
    }
    assert_eq!(sent_by(&mut fast, t1), []);
    assert_eq!(sent_by(&mut slow, t1), [OwnedFrame::Cancel(piece0[0])]);
    // The slow copy arrives anyway: wasted, not stored, not misbehaviour.
    let effect = slow.on_frame(frame, &ctx, &mut swarm, t1 + millis(5));
    assert_eq!(effect, Ok(Effect::Nothing));
    assert_eq!(swarm.totals.wasted, u64::from(BLOCK_LEN));
    swarm.check_invariants();
}

// ---- closing ----------------------------------------------------------------------------------------

#[test]
fn closed_peer_gives_its_blocks_and_its_pieces_back() {
    let t0 = Timestamp::ZERO;
    let (mut c, sent) = unchoked_by_seed(t0);
    assert_eq!(c.swarm.availability(0), 1);
    c.peer.on_closed(&mut c.swarm);
    for b in &sent {
        assert_eq!(c.swarm.block_state(b), Some(BlockState::Free), "{b:?}");
    }
    assert!((0..PIECES).all(|p| c.swarm.availability(p) == 0));
    c.swarm.check_invariants();
}

// ---- BEP 10 dispatch and the metadata phase ------------------------------------------------------

#[test]
fn extended_messages_come_out_by_our_ids_and_go_out_by_the_peers() {
    use crate::peer::session::PeerExtension;
    use crate::wire::extension::{OUR_UT_METADATA, OUR_UT_PEX};
    let t0 = Timestamp::ZERO;
    let mut c = incoming(t0, leecher());
    peer_handshakes(&mut c, with_extensions());
    let ours = sent_frames(&mut c);
    let ext = ours.iter().find_map(|f| match f {
        OwnedFrame::Extended { ext_id: 0, payload } => Some(payload.clone()),
        _ => None,
    });
    let hs = crate::wire::extension::parse_handshake(&ext.expect("our extended handshake")).expect("parses");
    assert_eq!((hs.ut_metadata, hs.ut_pex), (Some(OUR_UT_METADATA), Some(OUR_UT_PEX)));
    assert!(!c.peer.send_extended(PeerExtension::Metadata, b"x"), "not before the peer offers it");
    let effect = c.peer.on_frame(
        Frame::Extended { ext_id: 0, payload: b"d1:md11:ut_metadatai7e6:ut_pexi9eee" },
        &c.ctx,
        &mut c.swarm,
        t0,
    );
    assert_eq!(effect, Ok(Effect::ExtendedHandshake));
    let effect = c.peer.on_frame(Frame::Extended { ext_id: OUR_UT_METADATA, payload: b"m" }, &c.ctx, &mut c.swarm, t0);
    assert_eq!(effect, Ok(Effect::Metadata(b"m")));
    let effect = c.peer.on_frame(Frame::Extended { ext_id: OUR_UT_PEX, payload: b"p" }, &c.ctx, &mut c.swarm, t0);
    assert_eq!(effect, Ok(Effect::Pex(b"p")));
    let effect = c.peer.on_frame(Frame::Extended { ext_id: 77, payload: b"?" }, &c.ctx, &mut c.swarm, t0);
    assert_eq!(effect, Ok(Effect::Nothing), "an extension we never offered is ignored");
    assert!(c.peer.send_extended(PeerExtension::Metadata, b"x"));
    assert!(c.peer.send_extended(PeerExtension::Pex, b"y"));
    let sent = sent_frames(&mut c);
    assert!(sent.contains(&OwnedFrame::Extended { ext_id: 7, payload: b"x".to_vec() }));
    assert!(sent.contains(&OwnedFrame::Extended { ext_id: 9, payload: b"y".to_vec() }));
}

#[test]
fn before_the_metadata_a_session_records_what_the_peer_has_and_applies_it_on_upgrade() {
    let t0 = Timestamp::ZERO;
    let mut phase = crate::engine::magnet::MetadataPhase::new(INFO_HASH, OUR_ID, None, None, t0);
    let mut s = PeerSession::incoming(PeerNo(5), &phase.ctx, t0);
    let hs = Handshake { reserved: with_extensions(), info_hash: INFO_HASH, peer_id: THEIR_ID };
    s.on_handshake(&hs, &phase.ctx, &mut phase.swarm, t0).expect("handshake");
    assert!(s.is_awaiting_metadata());
    // A bitfield of the real size (unknown yet), haves, a request: recorded or ignored, never an error.
    let mut bits = Bitfield::new(PIECES);
    bits.set(0);
    for frame in [
        Frame::Bitfield(bits.as_bytes()),
        Frame::Have { piece: 3 },
        Frame::Have { piece: 5_000_000 },
        Frame::Request { piece: 0, offset: 0, len: 16384 },
        Frame::Unchoke,
    ] {
        assert_eq!(s.on_frame(frame, &phase.ctx, &mut phase.swarm, t0), Ok(Effect::Nothing), "{frame:?}");
    }
    // The metadata arrived: the real torrent's context and swarm.
    let ctx = context();
    let mut swarm = leecher();
    s.upgrade(&ctx, &mut swarm, t0);
    assert!(!s.is_awaiting_metadata());
    assert!(s.peer_has().get(0) && s.peer_has().get(3) && s.peer_has().count_ones() == 2);
    assert_eq!(swarm.availability(3), 1, "the recorded pieces count in the swarm");
    assert!(s.is_am_interested(), "it has pieces we want");
    assert!(!s.is_peer_choking(), "the unchoke before the metadata still holds");
}

// ---- fast extension (BEP 6) -----------------------------------------------------------------------

/// The peer's address in the fast tests; its allowed-fast set for `INFO_HASH` and `PIECES` comes from
/// `fast::allowed_fast_set`.
const PEER_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 0, 0, 9);

fn reject(b: BlockRef) -> Frame<'static> {
    Frame::RejectRequest { piece: b.piece, offset: b.offset, len: b.len }
}

/// An incoming fast peer whose handshake arrived; what we sent is drained and returned.
fn fast_handshaken(t0: Timestamp, swarm: Swarm) -> (Conn, Vec<OwnedFrame>) {
    let mut c = incoming(t0, swarm);
    c.peer.set_peer_ip(PEER_IP.into());
    peer_handshakes(&mut c, fast_only());
    let sent = sent_frames(&mut c);
    assert!(c.peer.is_fast());
    (c, sent)
}

/// A fast seed (it sent `have all`) that has just unchoked us, and the requests we sent it.
fn fast_seed_unchoked(t0: Timestamp) -> (Conn, Vec<BlockRef>) {
    let (mut c, _) = fast_handshaken(t0, leecher());
    peer_sends(&mut c, Frame::HaveAll);
    assert_eq!(sent_frames(&mut c), [OwnedFrame::Interested]);
    peer_sends(&mut c, Frame::Unchoke);
    let sent = requests(&sent_frames(&mut c));
    assert_eq!(sent.len(), INITIAL_DEPTH as usize);
    (c, sent)
}

/// A fast leecher we serve: we have pieces 0 and 1, it has nothing, is interested, and we unchoked it.
/// Returns the allowed-fast set we offered it.
fn fast_serving(t0: Timestamp) -> (Conn, Vec<u32>) {
    let (mut c, _) = fast_handshaken(t0, having(&[0, 1]));
    peer_sends(&mut c, Frame::HaveNone);
    peer_sends(&mut c, Frame::Interested);
    let offered: Vec<u32> = sent_frames(&mut c)
        .into_iter()
        .map(|f| match f {
            OwnedFrame::AllowedFast(p) => p,
            other => panic!("expected only allowed-fast offers, got {other:?}"),
        })
        .collect();
    c.peer.set_choking(false);
    assert_eq!(sent_frames(&mut c), [OwnedFrame::Unchoke]);
    (c, offered)
}

#[test]
fn fast_our_handshake_sets_the_bit_and_a_peer_without_it_is_not_fast() {
    let t0 = Timestamp::ZERO;
    let mut c = incoming(t0, leecher());
    peer_handshakes(&mut c, PLAIN);
    let hs = match &sent_frames(&mut c)[0] {
        OwnedFrame::Handshake(hs) => *hs,
        other => panic!("{other:?}"),
    };
    assert!(hs.supports(RESERVED_FAST) && hs.supports(RESERVED_EXTENSION_PROTOCOL));
    assert!(!c.peer.is_fast());
}

#[test]
fn fast_have_none_and_have_all_replace_an_empty_and_a_full_bitfield() {
    let t0 = Timestamp::ZERO;
    let (_, sent) = fast_handshaken(t0, leecher());
    assert_eq!(sent[1..], [OwnedFrame::HaveNone], "we have nothing");
    let mut all = leecher();
    for p in 0..PIECES {
        let _ = all.on_piece_verified(assume_verified(p));
    }
    let (_, sent) = fast_handshaken(t0, all);
    assert_eq!(sent[1..], [OwnedFrame::HaveAll], "we have everything");
    let (_, sent) = fast_handshaken(t0, having(&[0]));
    assert_eq!(sent[1..], [OwnedFrame::Bitfield(vec![0x80, 0, 0])], "a partial set is still a bitfield");
}

#[test]
fn fast_have_all_counts_in_availability_and_have_none_counts_nothing() {
    let t0 = Timestamp::ZERO;
    let (mut c, _) = fast_handshaken(t0, leecher());
    peer_sends(&mut c, Frame::HaveAll);
    assert!(c.peer.is_peer_seed());
    assert!((0..PIECES).all(|p| c.swarm.availability(p) == 1));
    c.peer.on_closed(&mut c.swarm);
    assert!((0..PIECES).all(|p| c.swarm.availability(p) == 0), "a closed seed no longer counts");

    let (mut c, _) = fast_handshaken(t0, leecher());
    peer_sends(&mut c, Frame::HaveNone);
    nothing_sent(&mut c);
    assert!(!c.peer.is_am_interested());
    peer_sends(&mut c, Frame::Have { piece: 3 });
    assert_eq!(sent_frames(&mut c), [OwnedFrame::Interested]);
    assert_eq!(c.swarm.availability(3), 1);
    assert_eq!(drops_on(&mut c, Frame::HaveNone), DropReason::Misbehaved(PeerMisbehaved::BitfieldNotFirst));
}

/// aria2 opens with `have none` and, once complete, sends `have all` in place of its pending `have`s: the
/// peer has every piece from then on, each counted once in availability; a late `have none` is still a drop.
#[test]
fn fast_late_have_all_from_a_peer_that_completed_means_every_piece() {
    let t0 = Timestamp::ZERO;
    let (mut c, _) = fast_handshaken(t0, leecher());
    peer_sends(&mut c, Frame::HaveNone);
    peer_sends(&mut c, Frame::Have { piece: 3 });
    assert_eq!(sent_frames(&mut c), [OwnedFrame::Interested]);
    peer_sends(&mut c, Frame::HaveAll);
    nothing_sent(&mut c);
    assert!(c.peer.is_peer_seed());
    assert!((0..PIECES).all(|p| c.swarm.availability(p) == 1), "each piece counted once");
    c.peer.on_closed(&mut c.swarm);
    assert!((0..PIECES).all(|p| c.swarm.availability(p) == 0), "a closed seed no longer counts");

    let (mut c, _) = fast_handshaken(t0, leecher());
    peer_sends(&mut c, Frame::HaveNone);
    peer_sends(&mut c, Frame::HaveAll);
    assert_eq!(sent_frames(&mut c), [OwnedFrame::Interested]);
    assert!(c.peer.is_peer_seed());
    assert_eq!(drops_on(&mut c, Frame::HaveNone), DropReason::Misbehaved(PeerMisbehaved::BitfieldNotFirst));
}

#[test]
fn fast_choke_keeps_our_requests_until_the_peer_rejects_them() {
    let t0 = Timestamp::ZERO;
    let (mut c, sent) = fast_seed_unchoked(t0);
    c.now = t0 + millis(10);
    peer_sends(&mut c, Frame::Choke);
    assert!(c.peer.is_peer_choking());
    assert_eq!(c.peer.pipeline().active(), INITIAL_DEPTH, "a fast choke discards nothing");
    assert!(matches!(c.swarm.block_state(&sent[0]), Some(BlockState::Requested { .. })));
    // The peer still serves one of them after its choke.
    let effect = peer_sends_block(&mut c, sent[0]);
    assert!(matches!(effect, Effect::StoreBlock { .. }), "{effect:?}");
    nothing_sent(&mut c);
    // It rejects another: only that one goes back to the pool, and nothing is asked while choked.
    peer_sends(&mut c, reject(sent[1]));
    assert_eq!(c.swarm.block_state(&sent[1]), Some(BlockState::Free));
    assert_eq!(c.peer.pipeline().active(), INITIAL_DEPTH - 2);
    assert_eq!(c.peer.rejects_received, 1);
    nothing_sent(&mut c);
    // A second reject of the same request answers nothing: tolerated, counted once.
    peer_sends(&mut c, reject(sent[1]));
    assert_eq!(c.peer.rejects_received, 1);
    for b in &sent[2..] {
        peer_sends(&mut c, reject(*b));
    }
    assert_eq!(c.peer.pipeline().active(), 0);
    assert_eq!(c.peer.pipeline().next_deadline(), None, "every request was answered");
    c.swarm.check_invariants();
    // Unchoked again: the rejected blocks are asked anew.
    peer_sends(&mut c, Frame::Unchoke);
    let again = requests(&sent_frames(&mut c));
    assert!(again.contains(&sent[1]), "{again:?}");
}

#[test]
fn fast_reject_off_our_block_grid_drops_the_peer() {
    let t0 = Timestamp::ZERO;
    let (mut c, _) = fast_seed_unchoked(t0);
    assert_eq!(
        drops_on(&mut c, Frame::RejectRequest { piece: 0, offset: 100, len: BLOCK_LEN }),
        DropReason::Misbehaved(PeerMisbehaved::UnrequestedReject { piece: 0, offset: 100, len: BLOCK_LEN })
    );
    assert!(matches!(
        drops_on(&mut c, Frame::RejectRequest { piece: PIECES, offset: 0, len: BLOCK_LEN }),
        DropReason::Misbehaved(PeerMisbehaved::UnrequestedReject { .. })
    ));
}

#[test]
fn fast_reject_answers_a_cancelled_request() {
    let t0 = Timestamp::ZERO;
    let (mut c, sent) = fast_seed_unchoked(t0);
    c.peer.on_block_taken(&sent[4]);
    assert_eq!(sent_frames(&mut c), [OwnedFrame::Cancel(sent[4])]);
    peer_sends(&mut c, reject(sent[4]));
    assert_eq!(c.peer.rejects_received, 0, "the cancel was ours: nothing to return");
    assert!(peer_sends_block_is_unrequested(&mut c, sent[4]), "its one answer came: a block now is unrequested");
}

fn peer_sends_block_is_unrequested(c: &mut Conn, block: BlockRef) -> bool {
    let frame = Frame::Piece { piece: block.piece, offset: block.offset, data: &DATA[..block.len as usize] };
    matches!(
        c.peer.on_frame(frame, &c.ctx, &mut c.swarm, c.now),
        Err(DropReason::Misbehaved(PeerMisbehaved::UnrequestedBlock { .. }))
    )
}

#[test]
fn fast_while_choked_we_request_only_the_peers_allowed_fast_pieces() {
    let t0 = Timestamp::ZERO;
    let (mut c, _) = fast_handshaken(t0, leecher());
    // A peer with pieces 2 and 5 (and no others) offers 5 and 7 as allowed fast.
    peer_sends(&mut c, Frame::Bitfield(&[0b0010_0100, 0, 0]));
    assert_eq!(sent_frames(&mut c), [OwnedFrame::Interested]);
    peer_sends(&mut c, Frame::AllowedFast { piece: 5 });
    let asked = requests(&sent_frames(&mut c));
    assert_eq!(asked, (0..4).map(|i| block(5, i)).collect::<Vec<_>>(), "all of piece 5, nothing else");
    peer_sends(&mut c, Frame::AllowedFast { piece: 7 });
    nothing_sent(&mut c);
    // The peer gets piece 7: it may be asked for it at once.
    peer_sends(&mut c, Frame::Have { piece: 7 });
    let asked = requests(&sent_frames(&mut c));
    assert_eq!(asked, (0..4).map(|i| block(7, i)).collect::<Vec<_>>());
    // Blocks of piece 5 arrive; nothing outside the allowed set follows them.
    for i in 0..4 {
        let _ = peer_sends_block(&mut c, block(5, i));
    }
    nothing_sent(&mut c);
    assert_eq!(c.peer.allowed_fast_in(), [5, 7]);
    // Unchoked, piece 2 is asked for too.
    peer_sends(&mut c, Frame::Unchoke);
    assert!(requests(&sent_frames(&mut c)).contains(&block(2, 0)));
    assert_eq!(
        drops_on(&mut c, Frame::AllowedFast { piece: PIECES }),
        DropReason::Misbehaved(PeerMisbehaved::IndexOutOfRange { index: PIECES })
    );
}

#[test]
fn fast_allowed_fast_from_a_peer_without_the_extension_is_ignored() {
    let t0 = Timestamp::ZERO;
    let mut c = active(t0, leecher(), &ALL);
    let _ = sent_frames(&mut c);
    peer_sends(&mut c, Frame::AllowedFast { piece: 5 });
    peer_sends(&mut c, Frame::SuggestPiece { piece: 5 });
    nothing_sent(&mut c);
    // And its choke still discards our requests (BEP 3).
    peer_sends(&mut c, Frame::Unchoke);
    assert_eq!(requests(&sent_frames(&mut c)).len(), INITIAL_DEPTH as usize);
    peer_sends(&mut c, Frame::Choke);
    assert_eq!(c.peer.pipeline().active(), 0);
}

#[test]
fn fast_the_allowed_fast_set_is_offered_once_on_interest_without_pieces_the_peer_has() {
    let t0 = Timestamp::ZERO;
    let expected = crate::peer::fast::allowed_fast_set(PEER_IP, &INFO_HASH, PIECES, 10);
    let (mut c, _) = fast_handshaken(t0, having(&[0]));
    let first = expected[0];
    peer_sends(&mut c, Frame::Have { piece: first });
    let _ = sent_frames(&mut c);
    peer_sends(&mut c, Frame::Interested);
    let offered: Vec<OwnedFrame> = expected[1..].iter().map(|&p| OwnedFrame::AllowedFast(p)).collect();
    assert_eq!(sent_frames(&mut c), offered);
    assert_eq!(c.peer.allowed_fast_out(), &expected[1..]);
    peer_sends(&mut c, Frame::NotInterested);
    peer_sends(&mut c, Frame::Interested);
    nothing_sent(&mut c);
    // No address known (an IPv6 peer, or the loop did not say): no set.
    let mut c = incoming(t0, leecher());
    c.peer.set_peer_ip("::1".parse::<std::net::IpAddr>().unwrap());
    peer_handshakes(&mut c, fast_only());
    peer_sends(&mut c, Frame::HaveNone);
    let _ = sent_frames(&mut c);
    peer_sends(&mut c, Frame::Interested);
    nothing_sent(&mut c);
}

#[test]
fn fast_requests_we_will_not_serve_are_rejected() {
    let t0 = Timestamp::ZERO;
    let (mut c, _) = fast_handshaken(t0, having(&[0, 1]));
    peer_sends(&mut c, Frame::HaveNone);
    // Choked and not allowed fast.
    peer_sends(&mut c, request(block(0, 0)));
    assert_eq!(sent_frames(&mut c), [OwnedFrame::Reject(block(0, 0))]);
    // A piece we do not have: rejected, not a reason to hang up.
    c.peer.set_choking(false);
    let _ = sent_frames(&mut c);
    peer_sends(&mut c, request(block(4, 0)));
    assert_eq!(sent_frames(&mut c), [OwnedFrame::Reject(block(4, 0))]);
    // A cancelled request still queued is rejected; not-interested rejects the rest.
    peer_sends(&mut c, request(block(0, 1)));
    peer_sends(&mut c, request(block(0, 2)));
    peer_sends(&mut c, request(block(1, 0)));
    peer_sends(&mut c, Frame::Cancel { piece: 0, offset: BLOCK_LEN, len: BLOCK_LEN });
    assert_eq!(sent_frames(&mut c), [OwnedFrame::Reject(block(0, 1))]);
    peer_sends(&mut c, Frame::NotInterested);
    assert_eq!(sent_frames(&mut c), [OwnedFrame::Reject(block(0, 2)), OwnedFrame::Reject(block(1, 0))]);
    assert_eq!(c.peer.queued_requests(), 0);
    assert_eq!(c.peer.rejects_sent, 5);
    // Still malformed requests drop the peer, as without the extension.
    assert_eq!(
        drops_on(&mut c, Frame::Request { piece: 0, offset: 0, len: BLOCK_LEN + 1 }),
        DropReason::Misbehaved(PeerMisbehaved::OversizedRequest { len: BLOCK_LEN + 1 })
    );
}

#[test]
fn fast_requests_over_our_queue_are_rejected() {
    let t0 = Timestamp::ZERO;
    let (mut c, _) = fast_serving(t0);
    // Distinct one-byte requests: any span inside a piece is legal.
    for i in 0..MAX_QUEUED_REQUESTS as u32 {
        peer_sends(&mut c, Frame::Request { piece: 0, offset: i, len: 1 });
    }
    nothing_sent(&mut c);
    peer_sends(&mut c, Frame::Request { piece: 1, offset: 0, len: 1 });
    assert_eq!(sent_frames(&mut c), [OwnedFrame::Reject(BlockRef { piece: 1, offset: 0, len: 1 })]);
    assert_eq!(c.peer.queued_requests(), MAX_QUEUED_REQUESTS);
}

#[test]
fn fast_choking_rejects_the_queue_except_allowed_fast_requests_which_are_still_served() {
    let t0 = Timestamp::ZERO;
    let (mut c, offered) = fast_serving(t0);
    assert!(!offered.is_empty(), "the peer gets an allowed-fast set");
    // We have pieces 0 and 1; the set for `PEER_IP` holds 1 and not 0.
    let allowed_had: Vec<u32> = offered.iter().copied().filter(|p| *p < 2).collect();
    assert_eq!(allowed_had, [1]);
    peer_sends(&mut c, request(block(0, 0)));
    peer_sends(&mut c, request(block(1, 0)));
    c.peer.set_choking(true);
    let mut expected = vec![OwnedFrame::Choke];
    for p in [0, 1] {
        if !allowed_had.contains(&p) {
            expected.push(OwnedFrame::Reject(block(p, 0)));
        }
    }
    assert_eq!(sent_frames(&mut c), expected);
    assert_eq!(c.peer.queued_requests(), allowed_had.len());
    // What stayed queued is served while we choke.
    let mut served = vec![];
    while let Some(b) = c
        .peer
        .serve_next(|_, buf| -> Result<(), ()> {
            buf.fill(1);
            Ok(())
        })
        .unwrap()
    {
        served.push(b.piece);
    }
    assert_eq!(served, allowed_had);
}

#[test]
fn fast_a_choked_peer_is_served_its_allowed_fast_pieces_only_a_few_times_over() {
    let t0 = Timestamp::ZERO;
    let (mut c, offered) = fast_serving(t0);
    assert!(offered.contains(&1));
    c.peer.set_choking(true);
    let _ = sent_frames(&mut c);
    let serve_all = |c: &mut Conn| {
        let fill = |_: &BlockRef, buf: &mut [u8]| -> Result<(), ()> {
            buf.fill(1);
            Ok(())
        };
        // As the engine does: serve what the send buffer takes, write it out, again until nothing is served.
        loop {
            let mut served = false;
            while c.peer.serve_next(fill).unwrap().is_some() {
                served = true;
            }
            let _ = sent_frames(c);
            if !served {
                break;
            }
        }
    };
    // 3 × 10 pieces' worth may be served while choked: piece 1 (four blocks) 30 times over.
    for round in 0..30 {
        for i in 0..4 {
            peer_sends(&mut c, request(block(1, i)));
        }
        serve_all(&mut c);
        assert_eq!(c.peer.rejects_sent, 0, "round {round}");
    }
    peer_sends(&mut c, request(block(1, 0)));
    assert_eq!(sent_frames(&mut c), [OwnedFrame::Reject(block(1, 0))]);
    // Unchoked, it is served as any peer.
    c.peer.set_choking(false);
    let _ = sent_frames(&mut c);
    peer_sends(&mut c, request(block(1, 0)));
    assert_eq!(c.peer.queued_requests(), 1);
}

#[test]
fn before_the_metadata_a_fast_peer_hears_have_none_not_have_all() {
    let t0 = Timestamp::ZERO;
    let mut phase = crate::engine::magnet::MetadataPhase::new(INFO_HASH, OUR_ID, None, None, t0);
    let mut s = PeerSession::incoming(PeerNo(6), &phase.ctx, t0);
    let hs = Handshake { reserved: fast_only(), info_hash: INFO_HASH, peer_id: THEIR_ID };
    s.on_handshake(&hs, &phase.ctx, &mut phase.swarm, t0).expect("handshake");
    let mut sent = s.pending_output().to_vec();
    // Our handshake (68 bytes), then `have none` (length 1, id 0x0f); never `have all` (0x0e).
    let after: Vec<u8> = sent.split_off(HANDSHAKE_LEN);
    assert_eq!(after, [0, 0, 0, 1, 0x0f], "{after:?}");
}

#[test]
fn a_lone_have_may_wait_and_goes_out_with_the_next_message() {
    let t0 = Timestamp::ZERO;
    let ctx = context();
    let mut swarm = Swarm::new(geometry(), Bitfield::new(PIECES), Bitfield::full(PIECES), false);
    let mut peer = PeerSession::incoming(PeerNo(1), &ctx, t0);
    peer.on_handshake(&their_handshake(PLAIN), &ctx, &mut swarm, t0).unwrap();
    assert_eq!(peer.on_frame(Frame::Bitfield(&ALL), &ctx, &mut swarm, t0), Ok(Effect::Nothing));
    assert!(peer.has_urgent_output(), "handshake, bitfield and interest go at once");
    sent_by(&mut peer, t0);
    assert!(!peer.has_urgent_output());
    // Two pieces verified while the peer chokes us: only haves are queued, and they may wait.
    for piece in [3, 4] {
        swarm.on_piece_verified(crate::storage::verify::assume_verified(piece));
        peer.on_we_have(piece, &mut swarm, t0);
        assert!(!peer.has_urgent_output(), "a lone have waits");
    }
    assert_eq!(peer.pending_output().len(), 2 * 9);
    // The unchoke brings requests: everything goes, the haves first.
    assert_eq!(peer.on_frame(Frame::Unchoke, &ctx, &mut swarm, t0), Ok(Effect::Nothing));
    assert!(peer.has_urgent_output());
    // A have queued behind output that must go now does not make it wait.
    swarm.on_piece_verified(crate::storage::verify::assume_verified(5));
    peer.on_we_have(5, &mut swarm, t0);
    assert!(peer.has_urgent_output());
    let sent = sent_by(&mut peer, t0);
    assert_eq!(sent[..2], [OwnedFrame::Have(3), OwnedFrame::Have(4)], "{sent:?}");
    assert_eq!(sent.last(), Some(&OwnedFrame::Have(5)), "{sent:?}");
    assert!(!requests(&sent[2..sent.len() - 1]).is_empty(), "{sent:?}");
    assert!(!peer.has_urgent_output());
}
