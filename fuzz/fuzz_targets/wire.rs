//! The peer wire codec: `wire::decode` over a stream of frames, the 68-byte handshake, and the bitfield's
//! wire form.
//!
//! Input: 4 bytes choosing the frame limit (as a piece count for `FrameLimits::for_torrent`, or a raw
//! `max_body` when the top bit is set), then the stream.
//!
//! Invariants: never a panic; a frame uses `4 <= len <= input` bytes and at most `max_body` after its prefix;
//! every proper prefix of a frame is `NeedMore`; `decode(encode(f)) == f` and `encode(f)` is the input bytes
//! (for ids we know); `NeedMore` only when the frame is really incomplete; a handshake round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rill::bitfield::Bitfield;
use rill::wire::handshake::{Handshake, HANDSHAKE_LEN};
use rill::wire::{decode, encode, Decoded, Frame, FrameLimits};

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let head = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    let limits = if head & 0x8000_0000 != 0 {
        FrameLimits { max_body: head & 0x0001_ffff }
    } else {
        FrameLimits::for_torrent(head & 0x00ff_ffff)
    };
    let stream = &data[4..];

    // The handshake parser on the same bytes.
    match Handshake::parse(stream) {
        Ok(Some(hs)) => {
            let mut out = Vec::new();
            hs.encode(&mut out);
            assert_eq!(&out[..], &stream[..HANDSHAKE_LEN]);
            assert_eq!(Handshake::parse(&out), Ok(Some(hs)));
        }
        Ok(None) => assert!(stream.len() < HANDSHAKE_LEN),
        Err(_) => {}
    }

    let mut rest = stream;
    let mut frames = 0usize;
    loop {
        match decode(rest, &limits) {
            Ok(Decoded::NeedMore) => {
                if rest.len() >= 4 {
                    let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
                    assert!(len <= limits.max_body);
                    assert!(rest.len() < 4 + len as usize, "NeedMore with a whole frame present");
                }
                break;
            }
            Ok(Decoded::Frame { frame, len }) => {
                assert!(len >= 4 && len <= rest.len(), "frame length {len} of {}", rest.len());
                assert!(len - 4 <= limits.max_body as usize);
                let bytes = &rest[..len];
                // Any proper prefix of a whole frame is incomplete, not an error nor a frame.
                for cut in [0, 1, 3, 4, len / 2, len - 1] {
                    if cut < len {
                        assert_eq!(decode(&bytes[..cut], &limits), Ok(Decoded::NeedMore), "prefix {cut}");
                    }
                }
                let mut out = Vec::new();
                encode(&frame, &mut out);
                if !matches!(frame, Frame::Unknown { .. }) {
                    assert_eq!(&out[..], bytes, "encode(decode(x)) == x");
                }
                match decode(&out, &limits) {
                    Ok(Decoded::Frame { frame: again, len }) => {
                        assert_eq!(again, frame);
                        assert_eq!(len, out.len());
                    }
                    other => panic!("re-decoding {frame:?} gave {other:?}"),
                }
                if let Frame::Bitfield(bits) = frame {
                    let n = (bits.len() as u32).saturating_mul(8);
                    for pieces in [n, n.saturating_sub(1), n.saturating_sub(7)] {
                        if let Ok(b) = Bitfield::from_wire(bits, pieces) {
                            assert_eq!(b.as_bytes(), bits);
                            assert!(b.count_ones() <= pieces);
                            assert_eq!(b.iter_ones().count() as u32, b.count_ones());
                        }
                    }
                }
                rest = &rest[len..];
                frames += 1;
            }
            Err(e) => {
                assert!(!e.to_string().contains('\n'));
                break;
            }
        }
    }
    assert!(frames <= stream.len() / 4);
});
