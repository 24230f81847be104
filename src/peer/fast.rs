//! BEP 6 (fast extension) allowed-fast set: the pieces a peer may request from us while choked.
//!
//! Owns: the set's computation, as the BEP defines it (the peer's IPv4 address masked to /24, then SHA-1
//! chained over it and the info-hash, four bytes at a time, each taken modulo the piece count).
//! Must not: send anything or keep per-peer state; the session decides when to offer and honour the set.
//!
//! <https://www.bittorrent.org/beps/bep_0006.html#allowed-fast>

use std::net::Ipv4Addr;

use sha1::{Digest, Sha1};

use crate::metainfo::InfoHash;

/// How many pieces a peer is offered, as libtorrent and the BEP's example use.
pub const ALLOWED_FAST_COUNT: usize = 10;

/// The first `k` pieces of the allowed-fast set for a peer at `ip` (at most `piece_count` of them).
/// IPv6 peers get no set (the BEP defines it for IPv4 only).
pub fn allowed_fast_set(ip: Ipv4Addr, info_hash: &InfoHash, piece_count: u32, k: usize) -> Vec<u32> {
    let k = k.min(piece_count as usize);
    let mut set: Vec<u32> = Vec::with_capacity(k);
    if k == 0 {
        return set;
    }
    // 1. x = (ip & 0xffffff00) ++ info_hash
    let mut x = [0u8; 24];
    x[..4].copy_from_slice(&(u32::from(ip) & 0xffff_ff00).to_be_bytes());
    x[4..].copy_from_slice(&info_hash.0);
    let mut digest: [u8; 20] = Sha1::digest(x).into();
    // 2. While the set is short: every 4 bytes of the digest give an index; then hash the digest again.
    loop {
        for word in digest.chunks_exact(4) {
            let index = u32::from_be_bytes([word[0], word[1], word[2], word[3]]) % piece_count;
            if !set.contains(&index) {
                set.push(index);
                if set.len() == k {
                    return set;
                }
            }
        }
        digest = Sha1::digest(digest).into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example in BEP 6: 80.4.4.200, an info-hash of 0xaa bytes, 1313 pieces.
    #[test]
    fn matches_the_beps_example() {
        let ip = Ipv4Addr::new(80, 4, 4, 200);
        let hash = InfoHash([0xaa; 20]);
        assert_eq!(allowed_fast_set(ip, &hash, 1313, 7), [1059, 431, 808, 1217, 287, 376, 1188]);
        assert_eq!(allowed_fast_set(ip, &hash, 1313, 9), [1059, 431, 808, 1217, 287, 376, 1188, 353, 508]);
    }

    #[test]
    fn same_slash_24_same_set_and_small_torrents_terminate() {
        let hash = InfoHash([7; 20]);
        let a = allowed_fast_set(Ipv4Addr::new(10, 1, 2, 3), &hash, 500, ALLOWED_FAST_COUNT);
        let b = allowed_fast_set(Ipv4Addr::new(10, 1, 2, 250), &hash, 500, ALLOWED_FAST_COUNT);
        assert_eq!(a, b);
        assert_eq!(a.len(), ALLOWED_FAST_COUNT);
        let mut tiny = allowed_fast_set(Ipv4Addr::new(1, 2, 3, 4), &hash, 3, ALLOWED_FAST_COUNT);
        tiny.sort();
        assert_eq!(tiny, [0, 1, 2]);
        assert!(allowed_fast_set(Ipv4Addr::new(1, 2, 3, 4), &hash, 0, ALLOWED_FAST_COUNT).is_empty());
    }
}
