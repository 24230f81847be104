//! Byte-exact codec tests (STYLE §7.12 items 1 and 4): static byte arrays for every message kind, encoding
//! into a buffer pre-filled with `0xA5` (smoltcp's `test_construct` trick), `NeedMore` for every truncation,
//! one named test per malformed case, and a seeded mutation test.

use super::handshake::{Handshake, HANDSHAKE_LEN, RESERVED_EXTENSION_PROTOCOL, RESERVED_FAST};
use super::*;
use crate::metainfo::InfoHash;
use crate::rng::Rng;

/// Limits of a 100-piece torrent: room for a 16 KiB block and a BEP 9 metadata block.
fn limits() -> FrameLimits {
    FrameLimits::for_torrent(100)
}

/// Bytes the encoder must never touch.
const CANARY: u8 = 0xA5;
const CANARY_LEN: usize = 16;

// ---- fixtures ---------------------------------------------------------------------------------

static KEEP_ALIVE: [u8; 4] = [0, 0, 0, 0];
static CHOKE: [u8; 5] = [0, 0, 0, 1, 0];
static UNCHOKE: [u8; 5] = [0, 0, 0, 1, 1];
static INTERESTED: [u8; 5] = [0, 0, 0, 1, 2];
static NOT_INTERESTED: [u8; 5] = [0, 0, 0, 1, 3];
static HAVE: [u8; 9] = [0, 0, 0, 5, 4, 0x01, 0x02, 0x03, 0x04];
static BITFIELD: [u8; 8] = [0, 0, 0, 4, 5, 0xff, 0x0f, 0x80];
static REQUEST: [u8; 17] = [0, 0, 0, 13, 6, 0, 0, 0, 7, 0, 0, 0x40, 0, 0, 0, 0x40, 0];
static PIECE: [u8; 16] = [0, 0, 0, 12, 7, 0, 0, 0, 9, 0, 0, 0x80, 0, 0xde, 0xad, 0xbe];
static CANCEL: [u8; 17] = [0, 0, 0, 13, 8, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x40, 0];
static PORT: [u8; 7] = [0, 0, 0, 3, 9, 0x1a, 0xe1];
static SUGGEST_PIECE: [u8; 9] = [0, 0, 0, 5, 13, 0, 0, 0, 42];
static HAVE_ALL: [u8; 5] = [0, 0, 0, 1, 14];
static HAVE_NONE: [u8; 5] = [0, 0, 0, 1, 15];
static REJECT_REQUEST: [u8; 17] = [0, 0, 0, 13, 16, 0, 0, 0, 3, 0, 0, 0xc0, 0, 0, 0, 0x01, 0x2c];
static ALLOWED_FAST: [u8; 9] = [0, 0, 0, 5, 17, 0xff, 0xff, 0xff, 0xfe];
static EXTENDED: [u8; 14] = [0, 0, 0, 10, 20, 0, b'd', b'4', b':', b'r', b'e', b'q', b'q', b'e'];
static EXTENDED_EMPTY_PAYLOAD: [u8; 6] = [0, 0, 0, 2, 20, 3];
static UNKNOWN_EMPTY: [u8; 5] = [0, 0, 0, 1, 99];

/// Every valid frame kind with the bytes it encodes to exactly.
fn fixtures() -> Vec<(&'static [u8], Frame<'static>)> {
    vec![
        (&KEEP_ALIVE, Frame::KeepAlive),
        (&CHOKE, Frame::Choke),
        (&UNCHOKE, Frame::Unchoke),
        (&INTERESTED, Frame::Interested),
        (&NOT_INTERESTED, Frame::NotInterested),
        (&HAVE, Frame::Have { piece: 0x0102_0304 }),
        (&BITFIELD, Frame::Bitfield(&BITFIELD[5..])),
        (&REQUEST, Frame::Request { piece: 7, offset: 0x4000, len: 0x4000 }),
        (&PIECE, Frame::Piece { piece: 9, offset: 0x8000, data: &PIECE[13..] }),
        (&CANCEL, Frame::Cancel { piece: 0x100, offset: 0, len: 0x4000 }),
        (&PORT, Frame::Port(6881)),
        (&SUGGEST_PIECE, Frame::SuggestPiece { piece: 42 }),
        (&HAVE_ALL, Frame::HaveAll),
        (&HAVE_NONE, Frame::HaveNone),
        (&REJECT_REQUEST, Frame::RejectRequest { piece: 3, offset: 0xc000, len: 300 }),
        (&ALLOWED_FAST, Frame::AllowedFast { piece: 0xffff_fffe }),
        (&EXTENDED, Frame::Extended { ext_id: 0, payload: b"d4:reqqe" }),
        (&EXTENDED_EMPTY_PAYLOAD, Frame::Extended { ext_id: 3, payload: &[] }),
        (&UNKNOWN_EMPTY, Frame::Unknown { id: 99 }),
    ]
}

// ---- helpers ----------------------------------------------------------------------------------

/// Decodes `bytes` as exactly one frame.
#[track_caller]
fn decode_one(bytes: &[u8]) -> Frame<'_> {
    match decode(bytes, &limits()) {
        Ok(Decoded::Frame { frame, len }) => {
            assert_eq!(len, bytes.len(), "consumed length of {frame:?}");
            frame
        }
        other => panic!("{bytes:02x?} did not decode to one frame: {other:?}"),
    }
}

/// Encodes `frame` after `CANARY_LEN` canary bytes and returns what was appended.
#[track_caller]
fn encode_after_canary(frame: &Frame<'_>) -> Vec<u8> {
    let mut out = vec![CANARY; CANARY_LEN];
    encode(frame, &mut out);
    assert!(out[..CANARY_LEN].iter().all(|&b| b == CANARY), "encoder touched bytes before its own");
    out.split_off(CANARY_LEN)
}

/// The bytes decode to `frame`, also with a following frame behind them, and `frame` encodes to them.
#[track_caller]
fn assert_round_trip(bytes: &[u8], frame: Frame<'_>) {
    assert_eq!(decode_one(bytes), frame);
    let mut followed = bytes.to_vec();
    followed.extend_from_slice(&HAVE);
    assert_eq!(
        decode(&followed, &limits()),
        Ok(Decoded::Frame { frame, len: bytes.len() }),
        "a following frame changes nothing"
    );
    assert_eq!(encode_after_canary(&frame), bytes, "encoding {frame:?}");
}

#[track_caller]
fn assert_malformed(bytes: &[u8], want: DecodeError) {
    assert_eq!(decode(bytes, &limits()), Err(want), "decoding {bytes:02x?}");
}

// ---- valid frames: byte-exact round trips -----------------------------------------------------

#[test]
fn keep_alive_round_trips() {
    assert_round_trip(&KEEP_ALIVE, Frame::KeepAlive);
}

#[test]
fn choke_round_trips() {
    assert_round_trip(&CHOKE, Frame::Choke);
}

#[test]
fn unchoke_round_trips() {
    assert_round_trip(&UNCHOKE, Frame::Unchoke);
}

#[test]
fn interested_round_trips() {
    assert_round_trip(&INTERESTED, Frame::Interested);
}

#[test]
fn not_interested_round_trips() {
    assert_round_trip(&NOT_INTERESTED, Frame::NotInterested);
}

#[test]
fn have_round_trips() {
    assert_round_trip(&HAVE, Frame::Have { piece: 0x0102_0304 });
}

#[test]
fn bitfield_round_trips() {
    assert_round_trip(&BITFIELD, Frame::Bitfield(&[0xff, 0x0f, 0x80]));
}

#[test]
fn empty_bitfield_is_left_to_the_session() {
    // The codec does not know the piece count: length checks belong to the session.
    assert_round_trip(&[0, 0, 0, 1, 5], Frame::Bitfield(&[]));
}

#[test]
fn request_round_trips() {
    assert_round_trip(&REQUEST, Frame::Request { piece: 7, offset: 0x4000, len: 0x4000 });
}

#[test]
fn piece_round_trips() {
    assert_round_trip(&PIECE, Frame::Piece { piece: 9, offset: 0x8000, data: &[0xde, 0xad, 0xbe] });
}

#[test]
fn piece_with_a_full_16_kib_block_round_trips() {
    let data: Vec<u8> = (0..crate::geometry::BLOCK_LEN).map(|i| i as u8).collect();
    let mut bytes = vec![0x00, 0x00, 0x40, 0x09, 7, 0, 0, 0, 1, 0, 0, 0x40, 0];
    bytes.extend_from_slice(&data);
    assert_round_trip(&bytes, Frame::Piece { piece: 1, offset: 0x4000, data: &data });
}

#[test]
fn piece_with_empty_block_is_left_to_the_session() {
    // Eight bytes of header and no data is well formed; the session rejects the block itself.
    assert_round_trip(&[0, 0, 0, 9, 7, 0, 0, 0, 1, 0, 0, 0, 0], Frame::Piece { piece: 1, offset: 0, data: &[] });
}

#[test]
fn piece_header_encodes_like_a_whole_piece() {
    let mut out = vec![CANARY; CANARY_LEN];
    encode_piece_header(9, 0x8000, 3, &mut out);
    assert!(out[..CANARY_LEN].iter().all(|&b| b == CANARY));
    assert_eq!(&out[CANARY_LEN..], &PIECE[..PIECE_HEADER_LEN]);
    assert_eq!(PIECE_HEADER_LEN, 13);
}

#[test]
fn cancel_round_trips() {
    assert_round_trip(&CANCEL, Frame::Cancel { piece: 0x100, offset: 0, len: 0x4000 });
    assert_eq!(CANCEL.len(), REQUEST_FRAME_LEN);
}

#[test]
fn port_round_trips() {
    assert_round_trip(&PORT, Frame::Port(6881));
}

#[test]
fn suggest_piece_round_trips() {
    assert_round_trip(&SUGGEST_PIECE, Frame::SuggestPiece { piece: 42 });
}

#[test]
fn have_all_round_trips() {
    assert_round_trip(&HAVE_ALL, Frame::HaveAll);
}

#[test]
fn have_none_round_trips() {
    assert_round_trip(&HAVE_NONE, Frame::HaveNone);
}

#[test]
fn reject_request_round_trips() {
    assert_round_trip(&REJECT_REQUEST, Frame::RejectRequest { piece: 3, offset: 0xc000, len: 300 });
}

#[test]
fn allowed_fast_round_trips() {
    assert_round_trip(&ALLOWED_FAST, Frame::AllowedFast { piece: 0xffff_fffe });
}

#[test]
fn extended_round_trips() {
    assert_round_trip(&EXTENDED, Frame::Extended { ext_id: 0, payload: b"d4:reqqe" });
}

#[test]
fn extended_with_only_an_ext_id_round_trips() {
    assert_round_trip(&EXTENDED_EMPTY_PAYLOAD, Frame::Extended { ext_id: 3, payload: &[] });
}

#[test]
fn unknown_id_without_payload_round_trips() {
    assert_round_trip(&UNKNOWN_EMPTY, Frame::Unknown { id: 99 });
}

#[test]
fn unknown_id_is_skipped_whole_and_the_stream_goes_on() {
    // PROTOCOL-NOTES: ids without a negotiated extension are skipped within the length limit.
    let mut bytes = vec![0, 0, 0, 6, 21, 1, 2, 3, 4, 5];
    bytes.extend_from_slice(&HAVE);
    let Ok(Decoded::Frame { frame, len }) = decode(&bytes, &limits()) else { panic!("not a frame") };
    assert_eq!((frame, len), (Frame::Unknown { id: 21 }, 10));
    assert_eq!(decode_one(&bytes[len..]), Frame::Have { piece: 0x0102_0304 });
}

#[test]
fn unknown_id_at_the_length_limit_is_skipped() {
    let max = limits().max_body;
    let mut bytes = max.to_be_bytes().to_vec();
    bytes.push(200);
    bytes.resize(4 + max as usize, 0x55);
    assert_eq!(decode_one(&bytes), Frame::Unknown { id: 200 });
}

#[test]
fn every_fixture_decodes_back_to_back_from_one_buffer() {
    let mut stream = vec![];
    for (bytes, _) in fixtures() {
        stream.extend_from_slice(bytes);
    }
    let mut at = 0;
    for (bytes, frame) in fixtures() {
        match decode(&stream[at..], &limits()) {
            Ok(Decoded::Frame { frame: got, len }) => {
                assert_eq!((got, len), (frame, bytes.len()));
                at += len;
            }
            other => panic!("at byte {at}: {other:?}"),
        }
    }
    assert_eq!(at, stream.len());
    assert_eq!(decode(&stream[at..], &limits()), Ok(Decoded::NeedMore));
}

#[test]
fn every_truncation_of_every_frame_needs_more() {
    for (bytes, frame) in fixtures() {
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut], &limits()), Ok(Decoded::NeedMore), "{frame:?} cut to {cut} bytes");
        }
    }
}

#[test]
fn frame_limits_cover_a_block_a_metadata_piece_and_a_large_bitfield() {
    let small = FrameLimits::for_torrent(1);
    assert!(small.max_body >= 1 + 8 + crate::geometry::BLOCK_LEN);
    assert!(small.max_body >= 2 + 16 * 1024);
    let huge = FrameLimits::for_torrent(1_000_000);
    assert!(huge.max_body > 125_000, "room for the id and 125,000 bitfield bytes");
}

// ---- malformed frames: one test per case ------------------------------------------------------

#[test]
fn frame_longer_than_limit_is_rejected_on_the_prefix_alone() {
    let max = limits().max_body;
    // Only the 4-byte prefix is present: no waiting for a body that may never come.
    assert_malformed(&(max + 1).to_be_bytes(), DecodeError::FrameTooLong { len: max + 1, max });
    assert_malformed(&[0xff, 0xff, 0xff, 0xff], DecodeError::FrameTooLong { len: u32::MAX, max });
    assert_malformed(&[0xff, 0xff, 0xff, 0xff, 7, 0, 0], DecodeError::FrameTooLong { len: u32::MAX, max });
}

#[test]
fn frame_at_the_limit_waits_for_its_body() {
    let max = limits().max_body;
    let mut bytes = max.to_be_bytes().to_vec();
    bytes.push(id::PIECE);
    assert_eq!(decode(&bytes, &limits()), Ok(Decoded::NeedMore));
}

#[test]
fn handshake_bytes_read_as_a_frame_are_too_long() {
    // A second handshake (or one parsed as a frame) starts 0x13 'B' 'i' 't': far beyond any limit.
    let mut hs = vec![];
    Handshake { reserved: [0; 8], info_hash: InfoHash([1; 20]), peer_id: [2; 20] }.encode(&mut hs);
    assert!(matches!(decode(&hs, &limits()), Err(DecodeError::FrameTooLong { .. })));
}

#[test]
fn choke_with_payload_is_bad_length() {
    assert_malformed(&[0, 0, 0, 2, 0, 0], DecodeError::BadLength { id: id::CHOKE, len: 2 });
}

#[test]
fn unchoke_with_payload_is_bad_length() {
    assert_malformed(&[0, 0, 0, 2, 1, 0], DecodeError::BadLength { id: id::UNCHOKE, len: 2 });
}

#[test]
fn interested_with_payload_is_bad_length() {
    assert_malformed(&[0, 0, 0, 3, 2, 0, 0], DecodeError::BadLength { id: id::INTERESTED, len: 3 });
}

#[test]
fn not_interested_with_payload_is_bad_length() {
    assert_malformed(&[0, 0, 0, 2, 3, 9], DecodeError::BadLength { id: id::NOT_INTERESTED, len: 2 });
}

#[test]
fn have_with_3_bytes_is_bad_length() {
    assert_malformed(&[0, 0, 0, 4, 4, 0, 0, 1], DecodeError::BadLength { id: id::HAVE, len: 4 });
}

#[test]
fn have_with_5_bytes_is_bad_length() {
    assert_malformed(&[0, 0, 0, 6, 4, 0, 0, 0, 1, 0], DecodeError::BadLength { id: id::HAVE, len: 6 });
}

#[test]
fn request_with_13_bytes_is_bad_length() {
    let mut bytes = REQUEST.to_vec();
    bytes[3] = 14;
    bytes.push(0);
    assert_malformed(&bytes, DecodeError::BadLength { id: id::REQUEST, len: 14 });
}

#[test]
fn request_with_11_bytes_is_bad_length() {
    let mut bytes = REQUEST.to_vec();
    bytes[3] = 12;
    bytes.pop();
    assert_malformed(&bytes, DecodeError::BadLength { id: id::REQUEST, len: 12 });
}

#[test]
fn piece_shorter_than_its_8_byte_header_is_bad_length() {
    for body in 1..9u8 {
        let mut bytes = vec![0, 0, 0, body, 7];
        bytes.resize(4 + usize::from(body), 0);
        assert_malformed(&bytes, DecodeError::BadLength { id: id::PIECE, len: u32::from(body) });
    }
}

#[test]
fn cancel_with_wrong_length_is_bad_length() {
    let mut bytes = CANCEL.to_vec();
    bytes[3] = 9;
    bytes.truncate(4 + 9);
    assert_malformed(&bytes, DecodeError::BadLength { id: id::CANCEL, len: 9 });
}

#[test]
fn port_with_3_bytes_is_bad_length() {
    assert_malformed(&[0, 0, 0, 4, 9, 0x1a, 0xe1, 0], DecodeError::BadLength { id: id::PORT, len: 4 });
}

#[test]
fn suggest_piece_with_wrong_length_is_bad_length() {
    assert_malformed(&[0, 0, 0, 3, 13, 0, 1], DecodeError::BadLength { id: id::SUGGEST_PIECE, len: 3 });
}

#[test]
fn have_all_with_payload_is_bad_length() {
    assert_malformed(&[0, 0, 0, 2, 14, 1], DecodeError::BadLength { id: id::HAVE_ALL, len: 2 });
}

#[test]
fn have_none_with_payload_is_bad_length() {
    assert_malformed(&[0, 0, 0, 2, 15, 0], DecodeError::BadLength { id: id::HAVE_NONE, len: 2 });
}

#[test]
fn reject_request_with_wrong_length_is_bad_length() {
    let mut bytes = REJECT_REQUEST.to_vec();
    bytes[3] = 16;
    bytes.extend_from_slice(&[0, 0, 0]);
    assert_malformed(&bytes, DecodeError::BadLength { id: id::REJECT_REQUEST, len: 16 });
}

#[test]
fn allowed_fast_with_wrong_length_is_bad_length() {
    assert_malformed(&[0, 0, 0, 6, 17, 0, 0, 0, 1, 2], DecodeError::BadLength { id: id::ALLOWED_FAST, len: 6 });
}

#[test]
fn extended_with_empty_body_is_bad_length() {
    assert_malformed(&[0, 0, 0, 1, 20], DecodeError::BadLength { id: id::EXTENDED, len: 1 });
}

// ---- handshake ----------------------------------------------------------------------------------

static HANDSHAKE: [u8; HANDSHAKE_LEN] = {
    let mut b = [0u8; HANDSHAKE_LEN];
    b[0] = 19;
    let proto = b"BitTorrent protocol";
    let mut i = 0;
    while i < 19 {
        b[1 + i] = proto[i];
        i += 1;
    }
    b[20 + 5] = 0x10;
    b[20 + 7] = 0x05;
    let mut j = 0;
    while j < 20 {
        b[28 + j] = 0xA0 + j as u8;
        b[48 + j] = b'a' + j as u8;
        j += 1;
    }
    b
};

fn handshake_fixture() -> Handshake {
    let mut info_hash = [0; 20];
    let mut peer_id = [0; 20];
    for j in 0..20 {
        info_hash[j] = 0xA0 + j as u8;
        peer_id[j] = b'a' + j as u8;
    }
    Handshake { reserved: [0, 0, 0, 0, 0, 0x10, 0, 0x05], info_hash: InfoHash(info_hash), peer_id }
}

#[test]
fn handshake_round_trips_byte_exact() {
    let hs = Handshake::parse(&HANDSHAKE).unwrap().unwrap();
    assert_eq!(hs, handshake_fixture());
    assert!(hs.supports(RESERVED_EXTENSION_PROTOCOL));
    assert!(hs.supports(RESERVED_FAST));
    let mut out = vec![CANARY; CANARY_LEN];
    hs.encode(&mut out);
    assert!(out[..CANARY_LEN].iter().all(|&b| b == CANARY));
    assert_eq!(&out[CANARY_LEN..], &HANDSHAKE[..]);
    // Bytes after the handshake (the first frames) are not its business.
    let mut longer = HANDSHAKE.to_vec();
    longer.extend_from_slice(&INTERESTED);
    assert_eq!(Handshake::parse(&longer), Ok(Some(handshake_fixture())));
}

#[test]
fn every_truncation_of_the_handshake_waits() {
    for cut in 0..HANDSHAKE_LEN {
        assert_eq!(Handshake::parse(&HANDSHAKE[..cut]), Ok(None), "cut to {cut} bytes");
    }
}

#[test]
fn handshake_with_any_protocol_byte_changed_is_rejected_as_soon_as_it_arrives() {
    for at in 0..20 {
        let mut bytes = HANDSHAKE;
        bytes[at] ^= 0x20;
        assert_eq!(Handshake::parse(&bytes[..=at]), Err(DecodeError::WrongProtocolString), "byte {at} changed");
        assert_eq!(Handshake::parse(&bytes), Err(DecodeError::WrongProtocolString));
    }
}

// ---- seeded mutation ----------------------------------------------------------------------------

const MUTATION_ROUNDS: usize = 20_000;
const MUTATION_SEED: u64 = 0x5EED_0003;

/// Owned storage for a random valid frame's payload, so the frame can borrow it.
fn random_frame<'a>(rng: &mut Rng, payload: &'a mut Vec<u8>) -> Frame<'a> {
    payload.clear();
    payload.resize(rng.below(64) as usize, 0);
    rng.fill(payload);
    let (a, b, c) = (rng.next_u32(), rng.next_u32(), rng.next_u32());
    match rng.below(18) {
        0 => Frame::KeepAlive,
        1 => Frame::Choke,
        2 => Frame::Unchoke,
        3 => Frame::Interested,
        4 => Frame::NotInterested,
        5 => Frame::Have { piece: a },
        6 => Frame::Bitfield(payload),
        7 => Frame::Request { piece: a, offset: b, len: c },
        8 => Frame::Piece { piece: a, offset: b, data: payload },
        9 => Frame::Cancel { piece: a, offset: b, len: c },
        10 => Frame::Port(a as u16),
        11 => Frame::HaveAll,
        12 => Frame::HaveNone,
        13 => Frame::RejectRequest { piece: a, offset: b, len: c },
        14 => Frame::SuggestPiece { piece: a },
        15 => Frame::AllowedFast { piece: a },
        16 => Frame::Extended { ext_id: a as u8, payload },
        _ => {
            let known = [0..=9, 13..=17, 20..=20];
            let mut id = a as u8;
            while known.iter().any(|r| r.contains(&id)) {
                id = id.wrapping_add(1);
            }
            Frame::Unknown { id }
        }
    }
}

/// How often each outcome was seen, so the mutation test proves it reached every branch.
#[derive(Default, Debug)]
struct Tally {
    frames: u32,
    unknown: u32,
    need_more: u32,
    too_long: u32,
    bad_length: u32,
}

/// Decodes every frame of `input` in turn, checking the codec's contract on each step.
fn check_stream(input: &[u8], limits: &FrameLimits, seed_note: &str, tally: &mut Tally) {
    let mut at = 0;
    loop {
        let rest = &input[at..];
        match decode(rest, limits) {
            Ok(Decoded::NeedMore) => {
                if rest.len() >= 4 {
                    let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
                    assert!(len <= limits.max_body, "{seed_note}: NeedMore for an over-long frame");
                    assert!(rest.len() < 4 + len as usize, "{seed_note}: NeedMore with the whole frame present");
                }
                tally.need_more += 1;
                return;
            }
            Ok(Decoded::Frame { frame, len }) => {
                assert!(len >= 4 && len <= rest.len(), "{seed_note}: consumed {len} of {}", rest.len());
                let mut again = vec![];
                encode(&frame, &mut again);
                match frame {
                    // The payload of an unknown message is skipped, not kept.
                    Frame::Unknown { id } => {
                        assert_eq!(rest[4], id, "{seed_note}");
                        assert_eq!(again, [0, 0, 0, 1, id], "{seed_note}");
                        tally.unknown += 1;
                    }
                    _ => assert_eq!(again, &rest[..len], "{seed_note}: encode(decode(x)) != x"),
                }
                tally.frames += 1;
                at += len;
            }
            Err(DecodeError::FrameTooLong { len, max }) => {
                assert_eq!(max, limits.max_body, "{seed_note}");
                assert!(len > max, "{seed_note}");
                tally.too_long += 1;
                return;
            }
            Err(DecodeError::BadLength { id, len }) => {
                assert_eq!(rest[4], id, "{seed_note}");
                assert!(len <= limits.max_body && rest.len() >= 4 + len as usize, "{seed_note}");
                tally.bad_length += 1;
                return;
            }
            Err(other) => panic!("{seed_note}: the codec reported {other:?}"),
        }
    }
}

#[test]
fn mutated_frames_never_panic_and_valid_ones_round_trip() {
    let mut rng = Rng::seeded(MUTATION_SEED);
    let fixtures = fixtures();
    let mut payload = vec![];
    let mut tally = Tally::default();
    for round in 0..MUTATION_ROUNDS {
        let note = format!("seed {MUTATION_SEED:#x} round {round}");
        // Small limits too, so over-long prefixes are common.
        let limits = if rng.below(4) == 0 { FrameLimits { max_body: 16 } } else { limits() };
        let mut input = vec![];
        match rng.below(5) {
            // A random valid frame: it decodes to itself and every truncation waits.
            0 => {
                let frame = random_frame(&mut rng, &mut payload);
                encode(&frame, &mut input);
                if input.len() - 4 <= limits.max_body as usize {
                    assert_eq!(decode(&input, &limits), Ok(Decoded::Frame { frame, len: input.len() }), "{note}");
                    let cut = rng.below(input.len() as u64) as usize;
                    assert_eq!(decode(&input[..cut], &limits), Ok(Decoded::NeedMore), "{note}: cut {cut}");
                }
            }
            // Random bytes.
            1 => {
                input.resize(rng.below(48) as usize, 0);
                rng.fill(&mut input);
            }
            // A plausible header (small length, any id) and a random body.
            2 => {
                let body = rng.below(24) as u32;
                input.extend_from_slice(&body.to_be_bytes());
                input.resize(4 + body as usize + rng.below(4) as usize, 0);
                rng.fill(&mut input[4..]);
            }
            // Bit flips over a run of fixtures.
            3 => {
                for _ in 0..=rng.below(3) {
                    let (bytes, _) = fixtures[rng.below(fixtures.len() as u64) as usize];
                    input.extend_from_slice(bytes);
                }
                for _ in 0..=rng.below(3) {
                    let bit = rng.below(input.len() as u64 * 8);
                    input[(bit / 8) as usize] ^= 1 << (bit % 8);
                }
            }
            // A truncated fixture.
            _ => {
                let (bytes, _) = fixtures[rng.below(fixtures.len() as u64) as usize];
                input.extend_from_slice(&bytes[..rng.below(bytes.len() as u64) as usize]);
                assert_eq!(decode(&input, &limits), Ok(Decoded::NeedMore), "{note}");
            }
        }
        check_stream(&input, &limits, &note, &mut tally);
    }
    let t = &tally;
    assert!(
        [t.frames, t.unknown, t.need_more, t.too_long, t.bad_length].iter().all(|&n| n > 100),
        "some outcome was hardly exercised: {tally:?}"
    );
}

#[test]
fn mutated_handshakes_never_panic() {
    let mut rng = Rng::seeded(MUTATION_SEED ^ 0x68);
    for round in 0..MUTATION_ROUNDS / 4 {
        let mut bytes = HANDSHAKE.to_vec();
        let bit = rng.below(bytes.len() as u64 * 8);
        bytes[(bit / 8) as usize] ^= 1 << (bit % 8);
        bytes.truncate(rng.below(bytes.len() as u64 + 1) as usize);
        match Handshake::parse(&bytes) {
            Ok(Some(hs)) => {
                let mut out = vec![];
                hs.encode(&mut out);
                assert_eq!(out, bytes, "round {round}");
            }
            Ok(None) => assert!(bytes.len() < HANDSHAKE_LEN, "round {round}"),
            Err(e) => assert_eq!(e, DecodeError::WrongProtocolString, "round {round}"),
        }
    }
}

#[test]
fn mutated_extended_handshakes_never_panic() {
    let valid: &[u8] =
        b"d1:md11:ut_metadatai3e6:ut_pexi1ee13:metadata_sizei31235e1:pi6881e4:reqqi500e1:v16:libtorrent 2.0.8e";
    let mut rng = Rng::seeded(MUTATION_SEED ^ 0x10);
    for _ in 0..MUTATION_ROUNDS / 4 {
        let mut bytes = valid.to_vec();
        for _ in 0..=rng.below(3) {
            let at = rng.below(bytes.len() as u64) as usize;
            bytes[at] = rng.next_u32() as u8;
        }
        bytes.truncate(rng.below(bytes.len() as u64 + 1) as usize);
        if let Some(hs) = extension::parse_handshake(&bytes) {
            assert!(hs.reqq != Some(0), "a zero reqq would stall the pipeline");
            assert!(hs.client.as_ref().map_or(true, |c| c.len() <= 64 * 3));
        }
    }
}
