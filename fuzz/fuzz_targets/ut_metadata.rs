//! BEP 9 `ut_metadata` messages: `wire::ut_metadata::decode` on a peer's payload.
//!
//! Invariants: never a panic; a data message's bytes are the tail of the payload (they start where the bencoded
//! dictionary ends); requests and rejects re-encode to messages that decode the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rill::wire::ut_metadata::{decode, encode_reject, encode_request, MetadataMessage};

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Ok(MetadataMessage::Data { data: bytes, .. }) => {
            assert!(bytes.len() < data.len());
            assert_eq!(&data[data.len() - bytes.len()..], bytes);
        }
        Ok(MetadataMessage::Request { piece }) => {
            let mut out = Vec::new();
            encode_request(piece, &mut out);
            assert_eq!(decode(&out), Ok(MetadataMessage::Request { piece }));
        }
        Ok(MetadataMessage::Reject { piece }) => {
            let mut out = Vec::new();
            encode_reject(piece, &mut out);
            assert_eq!(decode(&out), Ok(MetadataMessage::Reject { piece }));
        }
        Err(_) => {}
    }
});
