//! BEP 11 peer exchange: `wire::pex::decode` on a peer's payload, and our encoding of what it decoded.
//!
//! Invariants: never a panic; at most `MAX_PEERS_PER_MESSAGE` addresses per list and family; no port 0;
//! encoding a decoded message and decoding it again gives the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rill::wire::pex::{decode, encode, MAX_PEERS_PER_MESSAGE};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = decode(data) else { return };
    let count = |v6: bool| msg.added.iter().filter(|a| a.0.is_ipv6() == v6).count();
    assert!(count(false) <= MAX_PEERS_PER_MESSAGE && count(true) <= MAX_PEERS_PER_MESSAGE);
    assert!(msg.dropped.len() <= 2 * MAX_PEERS_PER_MESSAGE);
    assert!(msg.added.iter().all(|a| a.0.port() != 0) && msg.dropped.iter().all(|a| a.port() != 0));
    let mut again = Vec::new();
    encode(&msg.added, &msg.dropped, &mut again);
    let round = decode(&again).expect("our own encoding decodes");
    assert_eq!(round.dropped, msg.dropped);
    let mut want = msg.added.clone();
    want.sort_by_key(|a| a.0.is_ipv6());
    assert_eq!(round.added, want);
});
