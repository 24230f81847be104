//! The peers others announced to us (BEP 5 `announce_peer`), served in `get_peers` replies.
//!
//! Owns: a bounded map info-hash → peers with expiry ([`PEER_TTL`], 30 minutes as libtorrent and BEP 5
//! practice). At most `max_hashes` info-hashes (new ones are refused when full, after expired entries are
//! dropped) and `max_peers` per info-hash (a new peer replaces the oldest). Must not: check tokens or
//! rate limits (the caller has), or read the clock.
//!
//! BEP 5: <https://www.bittorrent.org/beps/bep_0005.html>.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::node_id::NodeId;
use crate::time::{secs, Timestamp};

pub const PEER_TTL: Duration = secs(30 * 60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    New,
    Refreshed,
    /// A full swarm: the oldest peer made room.
    ReplacedOldest,
    /// Too many info-hashes: refused.
    Full,
}

pub struct PeerStore {
    swarms: HashMap<NodeId, Vec<(SocketAddr, Timestamp)>>,
    max_hashes: usize,
    max_peers: usize,
}

impl PeerStore {
    pub fn new(max_hashes: usize, max_peers: usize) -> Self {
        PeerStore { swarms: HashMap::new(), max_hashes, max_peers }
    }

    pub fn announce(&mut self, now: Timestamp, info_hash: NodeId, peer: SocketAddr) -> Stored {
        if self.max_peers == 0 {
            return Stored::Full;
        }
        if !self.swarms.contains_key(&info_hash) && self.swarms.len() >= self.max_hashes {
            self.expire(now);
            if self.swarms.len() >= self.max_hashes {
                return Stored::Full;
            }
        }
        let max = self.max_peers;
        let peers = self.swarms.entry(info_hash).or_insert_with(|| Vec::with_capacity(max.min(16)));
        // Kept oldest first: a refreshed peer moves to the end.
        if let Some(i) = peers.iter().position(|p| p.0 == peer) {
            peers.remove(i);
            peers.push((peer, now));
            return Stored::Refreshed;
        }
        if peers.len() < max {
            if peers.len() == peers.capacity() {
                // Doubling, but never past `max`: a full swarm holds exactly `max` entries (50, not 64).
                peers.reserve_exact(peers.len().max(1).min(max - peers.len()));
            }
            peers.push((peer, now));
            return Stored::New;
        }
        peers.remove(0);
        peers.push((peer, now));
        Stored::ReplacedOldest
    }

    /// Up to `max` live peers of `info_hash` in the family of `v4`, freshest first, appended to `out`.
    pub fn peers(&self, now: Timestamp, info_hash: &NodeId, v4: bool, max: usize, out: &mut Vec<SocketAddr>) {
        let Some(peers) = self.swarms.get(info_hash) else { return };
        let start = out.len();
        out.extend(peers.iter().filter(|p| p.0.is_ipv4() == v4 && now.saturating_since(p.1) < PEER_TTL).map(|p| p.0));
        // Kept oldest first, so reversed is freshest first.
        out[start..].reverse();
        out.truncate(start + max);
    }

    /// Drops expired peers and empty swarms.
    pub fn expire(&mut self, now: Timestamp) {
        self.swarms.retain(|_, peers| {
            peers.retain(|p| now.saturating_since(p.1) < PEER_TTL);
            !peers.is_empty()
        });
    }

    pub fn hashes(&self) -> usize {
        self.swarms.len()
    }
    pub fn peer_count(&self) -> usize {
        self.swarms.values().map(Vec::len).sum()
    }
    /// The most peers stored for one info-hash.
    pub fn most_peers(&self) -> usize {
        self.swarms.values().map(Vec::len).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(b: u8) -> NodeId {
        NodeId([b; 20])
    }

    #[test]
    fn bounded_per_hash_and_in_hashes_with_expiry() {
        let mut s = PeerStore::new(2, 3);
        let t = Timestamp::from_secs(10);
        let p = |i: u16| SocketAddr::from(([10, 0, 0, 1], i));
        assert_eq!(s.announce(t, h(1), p(1)), Stored::New);
        assert_eq!(s.announce(t, h(1), p(1)), Stored::Refreshed);
        assert_eq!(s.announce(t + secs(1), h(1), p(2)), Stored::New);
        assert_eq!(s.announce(t + secs(2), h(1), p(3)), Stored::New);
        assert_eq!(s.announce(t + secs(3), h(1), p(4)), Stored::ReplacedOldest);
        let mut out = Vec::new();
        s.peers(t + secs(3), &h(1), true, 10, &mut out);
        assert_eq!(out, vec![p(4), p(3), p(2)], "freshest first");
        assert!(!out.contains(&p(1)), "the oldest was replaced");
        out.clear();
        s.peers(t, &h(1), false, 10, &mut out);
        assert!(out.is_empty(), "no IPv6 peers");
        assert_eq!(s.announce(t, h(2), p(1)), Stored::New);
        assert_eq!(s.announce(t, h(3), p(1)), Stored::Full);
        assert_eq!(s.hashes(), 2);
        // After 30 minutes everything has expired and room is made.
        assert_eq!(s.announce(t + PEER_TTL + secs(5), h(3), p(1)), Stored::New);
        assert_eq!(s.hashes(), 1);
        out.clear();
        s.peers(t + PEER_TTL + secs(5), &h(3), true, 10, &mut out);
        assert_eq!(out, vec![p(1)]);
        s.expire(t + PEER_TTL * 3);
        assert_eq!((s.hashes(), s.peer_count()), (0, 0));
        let mut none = PeerStore::new(0, 0);
        assert_eq!(none.announce(t, h(1), p(1)), Stored::Full, "a zero-sized store stores nothing");
    }
}
