//! UDP tracker replies (BEP 15): `tracker::udp::decode_reply` on any datagram, and the compact peer lists
//! an announce reply carries.
//!
//! Invariants: never a panic; only datagrams of 8..=`MAX_REPLY_LEN` bytes decode; the fields are the bytes at
//! their BEP 15 offsets; the peer list is the datagram's tail and yields one address per whole 6- (IPv4) or
//! 18-byte (IPv6) entry, each re-encoding to its bytes.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use rill::tracker::codec::{compact_v4, compact_v6, encode_compact};
use rill::tracker::udp::{decode_reply, Reply, MAX_REPLY_LEN};

fn be32(d: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]])
}

fn check_peers(peers: &[u8], entry: usize, addrs: Vec<SocketAddr>) {
    assert_eq!(addrs.len(), peers.len() / entry);
    let mut out = Vec::new();
    for addr in addrs {
        encode_compact(addr, &mut out);
    }
    assert_eq!(&out[..], &peers[..peers.len() / entry * entry]);
}

fuzz_target!(|data: &[u8]| {
    let reply = match decode_reply(data) {
        Ok(reply) => reply,
        Err(e) => {
            assert!(data.len() < 20 || data.len() > MAX_REPLY_LEN || be32(data, 0) > 3, "{e}");
            assert!(!e.to_string().contains('\n'));
            return;
        }
    };
    assert!(data.len() >= 8 && data.len() <= MAX_REPLY_LEN);
    assert_eq!(reply.transaction_id(), be32(data, 4));
    match reply {
        Reply::Connect { connection_id, .. } => {
            assert_eq!(be32(data, 0), 0);
            assert!(data.len() >= 16);
            assert_eq!(connection_id >> 32, u64::from(be32(data, 8)));
        }
        Reply::Announce { interval, leechers, seeders, peers, .. } => {
            assert_eq!(be32(data, 0), 1);
            assert_eq!((interval, leechers, seeders), (be32(data, 8), be32(data, 12), be32(data, 16)));
            assert_eq!(peers, &data[20..]);
            check_peers(peers, 6, compact_v4(peers).collect());
            check_peers(peers, 18, compact_v6(peers).collect());
        }
        Reply::Scrape { seeders, completed, leechers, .. } => {
            assert_eq!(be32(data, 0), 2);
            assert_eq!((seeders, completed, leechers), (be32(data, 8), be32(data, 12), be32(data, 16)));
        }
        Reply::Error { message, .. } => {
            assert_eq!(be32(data, 0), 3);
            assert_eq!(message, &data[8..]);
        }
    }
});
