//! BEP 10 extended handshake: `wire::extension::parse_handshake` on a peer's payload.
//!
//! Input: 6 bytes (our `reqq` and listen port, for the encode side), then the peer's payload.
//!
//! Invariants: never a panic; a parsed handshake keeps its values in range (`reqq` > 0, `ut_metadata` in
//! 1..=255, `v` cut to 64 bytes before decoding); only a bencoded dictionary parses; ours round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rill::wire::extension::{encode_handshake, parse_handshake};
use serde_bencode::value::Value;

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let reqq = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    let port = u16::from_be_bytes([data[4], data[5]]);
    let payload = &data[6..];

    if let Some(hs) = parse_handshake(payload) {
        assert!(matches!(serde_bencode::from_bytes::<Value>(payload), Ok(Value::Dict(_))));
        assert!(hs.reqq.is_none_or(|n| n > 0));
        assert!(hs.ut_metadata.is_none_or(|n| n >= 1));
        assert!(hs.ut_pex.is_none_or(|n| n >= 1));
        assert!(hs.listen_port.is_none_or(|p| p != 0));
        // At most 64 bytes, each of which becomes at most one 3-byte U+FFFD.
        assert!(hs.client.as_ref().is_none_or(|c| c.len() <= 64 * 3));
    }

    let mut ours = Vec::new();
    let size = u32::from(port).checked_mul(reqq).filter(|&s| s > 0);
    let pex = port % 2 == 0;
    let your_ip = (port % 3 == 0).then(|| std::net::IpAddr::from([10, 0, (port >> 8) as u8, port as u8]));
    encode_handshake(reqq, Some(port), size, pex, your_ip, &mut ours);
    let hs = parse_handshake(&ours).expect("our own handshake parses");
    assert_eq!(hs.reqq, Some(reqq).filter(|&n| n > 0));
    assert_eq!(hs.metadata_size, size);
    assert_eq!(hs.ut_pex.is_some(), pex);
    assert_eq!(hs.listen_port, Some(port).filter(|&p| p != 0));
    assert!(hs.client.is_some_and(|c| c.starts_with("rill ")));
    assert_eq!(hs.your_ip, your_ip);
});
