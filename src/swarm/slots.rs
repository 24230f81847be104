//! Connection slots: who may take one of `--max-peers`, and which peer gives its slot up for a newcomer.
//!
//! Owns: the split between incoming and outgoing slots, the per-address cap, and the ranking of peers by
//! how useless they are (libtorrent's peer turnover, in miniature).
//! Must not: open, accept or close anything, or read the clock. The loop describes its connections as
//! `PeerUse` snapshots with `now`, and carries out the `Admission` it gets back.
//!
//! # Rules
//!
//! - **Outgoing reserve.** `reserved_outgoing(max)` slots (a fifth of `--max-peers`, at least 2, at most
//!   half) are for connections we dial: incoming connections take at most `max - reserve`. Fifty idle
//!   strangers can then never keep a downloader from dialling its real seeder.
//! - **One connection per address**, as libtorrent's default (`allow_multiple_connections_per_ip` off):
//!   a second connection from or to an IP we are already connected to is refused. **Loopback is exempt**:
//!   every peer of a test (and of a host's local clients) is 127.0.0.1 or ::1, told apart only by port.
//! - **Replacement when full.** A newcomer (incoming, or a candidate we want to dial) takes the slot of
//!   the least useful peer, if one is evictable; otherwise it is refused (incoming) or waits (dial).
//!   Evictable, most useless first:
//!   1. still handshaking `HANDSHAKE_GRACE` after the connection came up (an honest peer answers within
//!      a round trip; the session drops it anyway at `HANDSHAKE_TIMEOUT`);
//!   2. seed meets seed;
//!   3. not interesting either way, once `INTEREST_GRACE` has passed since it connected;
//!   4. nothing exchanged for `IDLE_AFTER` (counted from the connection, so a new peer has that long).
//!
//!   Within a rank the one idle longest goes first. A peer that sent us payload or that we served within
//!   `IDLE_AFTER` is **never** evicted, nor is a connect of ours still in progress (it times out on its own).
//! - **Handshakes in progress** (listener floods). At most `MAX_HANDSHAKING` incoming connections may be
//!   waiting for their handshake (plain or MSE) at once, whatever `--max-peers` says. At the cap the
//!   **oldest** gives way to the newcomer if it has waited `HANDSHAKE_STALE` (an honest peer sends its
//!   handshake within a round trip, so one silent for that long is almost surely a stale flood
//!   connection); if even the oldest is fresher, the **newcomer** is refused (a burst of honest connects
//!   keeps the ones whose handshakes are on their way). Evicting the oldest means a flood that stops
//!   short of the handshake cannot hold the listener for the whole `HANDSHAKE_TIMEOUT`: to keep newcomers
//!   out it must open `MAX_HANDSHAKING` fresh connections every `HANDSHAKE_STALE`. Each waiting
//!   connection costs its connection slot (about 1 KiB), no read buffer until it sends and
//!   `HANDSHAKE_READ_CAPACITY` after, and a descriptor, so the cap bounds memory and descriptors; the
//!   handshake deadline closes each.

use std::net::IpAddr;
use std::time::Duration;

use crate::time::{secs, Timestamp};

/// A connection still handshaking this long after it came up may give its slot to a newcomer.
pub const HANDSHAKE_GRACE: Duration = secs(5);
/// A peer interested in nothing of ours and holding nothing we want may give its slot up after this.
pub const INTEREST_GRACE: Duration = secs(5);
/// A peer with no payload either way for this long may give its slot up.
pub const IDLE_AFTER: Duration = secs(60);

/// Incoming connections that may be waiting for their handshake at once.
pub const MAX_HANDSHAKING: usize = 64;
/// At the cap, a connection waiting for its handshake this long gives way to a newcomer.
pub const HANDSHAKE_STALE: Duration = secs(1);

/// A peer connected to us while `waiting` (key, when it connected) incoming connections still await their
/// handshake: `Admit`, `Replace` the oldest, or `Full` (refuse the newcomer). See the module doc.
pub fn on_handshaking<K: Copy>(waiting: impl Iterator<Item = (K, Timestamp)>, now: Timestamp) -> Admission<K> {
    let (mut count, mut oldest) = (0, None::<(K, Timestamp)>);
    for (key, at) in waiting {
        count += 1;
        if oldest.map_or(true, |(_, t)| at < t) {
            oldest = Some((key, at));
        }
    }
    match oldest {
        _ if count < MAX_HANDSHAKING => Admission::Admit,
        Some((key, at)) if now.saturating_since(at) >= HANDSHAKE_STALE => Admission::Replace(key),
        _ => Admission::Full,
    }
}

/// Slots of `max_peers` that incoming connections may not take: a fifth, at least 2, at most half.
pub fn reserved_outgoing(max_peers: usize) -> usize {
    (max_peers / 5).max(2).min(max_peers / 2)
}

/// What the policy needs to know about one live connection (closing ones are left out by the caller).
#[derive(Clone, Copy, Debug)]
pub struct PeerUse<K> {
    pub key: K,
    pub ip: IpAddr,
    pub outgoing: bool,
    /// Our connect is still in progress.
    pub connecting: bool,
    /// The BitTorrent handshake is done.
    pub handshaken: bool,
    /// When the TCP connection came up (accepted, or our connect was started).
    pub connected_at: Timestamp,
    /// The last payload byte received from or sent to this peer.
    pub last_payload: Option<Timestamp>,
    pub am_interested: bool,
    pub peer_interested: bool,
    pub peer_seed: bool,
    /// The connection is for the torrent the newcomer is for (an incoming one whose torrent is not known
    /// yet: false). Only these count for the one-connection-per-address cap: a peer seeding two torrents
    /// we want gets a connection for each, as every client opens one per torrent.
    pub same_swarm: bool,
}

/// The policy's answer for a newcomer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission<K> {
    /// A slot is free.
    Admit,
    /// Close `K` to make room, then admit.
    Replace(K),
    /// No room and nobody to replace.
    Full,
    /// Already connected to this (non-loopback) address.
    SameAddress,
}

/// Why a peer may be evicted; lower ranks go first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Useless {
    StillHandshaking,
    SeedMeetsSeed,
    NoInterest,
    Idle,
}

#[derive(Clone, Copy, Debug)]
pub struct SlotPolicy {
    max_peers: usize,
    reserved_outgoing: usize,
}

impl SlotPolicy {
    pub fn new(max_peers: usize) -> Self {
        SlotPolicy { max_peers, reserved_outgoing: reserved_outgoing(max_peers) }
    }

    pub fn max_incoming(&self) -> usize {
        self.max_peers - self.reserved_outgoing
    }

    /// A peer connected to us from `ip`.
    pub fn on_incoming<K: Copy>(
        &self,
        ip: IpAddr,
        peers: &[PeerUse<K>],
        we_seed: bool,
        now: Timestamp,
    ) -> Admission<K> {
        if holds_address(ip, peers) {
            return Admission::SameAddress;
        }
        let incoming = peers.iter().filter(|p| !p.outgoing).count();
        if incoming < self.max_incoming() && peers.len() < self.max_peers {
            return Admission::Admit;
        }
        // Over the incoming share, only another incoming connection can make room (the reserve stays).
        let only_incoming = incoming >= self.max_incoming();
        match least_useful(peers.iter().filter(|p| !only_incoming || !p.outgoing), we_seed, now) {
            Some(key) => Admission::Replace(key),
            None => Admission::Full,
        }
    }

    /// We would like to dial `ip`.
    pub fn on_dial<K: Copy>(&self, ip: IpAddr, peers: &[PeerUse<K>], we_seed: bool, now: Timestamp) -> Admission<K> {
        if holds_address(ip, peers) {
            return Admission::SameAddress;
        }
        if peers.len() < self.max_peers {
            return Admission::Admit;
        }
        match least_useful(peers.iter(), we_seed, now) {
            Some(key) => Admission::Replace(key),
            None => Admission::Full,
        }
    }
}

/// Whether a connection to `ip` exists and `ip` is subject to the one-per-address cap.
fn holds_address<K>(ip: IpAddr, peers: &[PeerUse<K>]) -> bool {
    !ip.to_canonical().is_loopback() && peers.iter().any(|p| p.same_swarm && p.ip.to_canonical() == ip.to_canonical())
}

/// The evictable peer to go first, if any.
fn least_useful<'a, K: Copy + 'a>(
    peers: impl Iterator<Item = &'a PeerUse<K>>,
    we_seed: bool,
    now: Timestamp,
) -> Option<K> {
    peers
        .filter_map(|p| uselessness(p, we_seed, now).map(|why| (why, p.last_payload.unwrap_or(p.connected_at), p.key)))
        .min_by_key(|&(why, since, _)| (why, since))
        .map(|(_, _, key)| key)
}

/// Why `p` may be evicted at `now`, or `None` if it keeps its slot.
fn uselessness<K>(p: &PeerUse<K>, we_seed: bool, now: Timestamp) -> Option<Useless> {
    let age = now - p.connected_at;
    if p.connecting {
        return None;
    }
    // Sending us data or being served: never.
    if p.last_payload.is_some_and(|at| now - at < IDLE_AFTER) {
        return None;
    }
    if !p.handshaken {
        return (age >= HANDSHAKE_GRACE).then_some(Useless::StillHandshaking);
    }
    if we_seed && p.peer_seed {
        return Some(Useless::SeedMeetsSeed);
    }
    if !p.am_interested && !p.peer_interested && age >= INTEREST_GRACE {
        return Some(Useless::NoInterest);
    }
    let idle_since = p.last_payload.unwrap_or(p.connected_at);
    (now - idle_since >= IDLE_AFTER).then_some(Useless::Idle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::millis;

    const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn handshaking_below_the_cap_admits() {
        let t0 = Timestamp::from_secs(10);
        let waiting: Vec<(u32, Timestamp)> = (0..MAX_HANDSHAKING as u32 - 1).map(|k| (k, t0)).collect();
        assert_eq!(on_handshaking(waiting.into_iter(), t0), Admission::Admit);
    }

    #[test]
    fn handshaking_at_the_cap_replaces_the_oldest_once_stale() {
        let t0 = Timestamp::from_secs(10);
        // Connected one a millisecond; key 7 is the oldest.
        let mut waiting: Vec<(u32, Timestamp)> =
            (0..MAX_HANDSHAKING as u32).map(|k| (k, t0 + millis(u64::from(k) + 10))).collect();
        waiting[7].1 = t0;
        assert_eq!(on_handshaking(waiting.iter().copied(), t0 + HANDSHAKE_STALE), Admission::Replace(7));
        assert_eq!(on_handshaking(waiting.iter().copied(), t0 + HANDSHAKE_STALE - millis(1)), Admission::Full);
    }

    #[test]
    fn handshaking_burst_of_fresh_connections_refuses_the_newcomer() {
        let t0 = Timestamp::from_secs(10);
        let waiting: Vec<(u32, Timestamp)> = (0..MAX_HANDSHAKING as u32 * 2).map(|k| (k, t0)).collect();
        assert_eq!(on_handshaking(waiting.into_iter(), t0 + millis(500)), Admission::Full);
    }

    /// A handshaken incoming peer that has said and done nothing since `t`.
    fn idle(key: u32, at: Timestamp) -> PeerUse<u32> {
        PeerUse {
            key,
            ip: LOOPBACK,
            outgoing: false,
            connecting: false,
            handshaken: true,
            connected_at: at,
            last_payload: None,
            am_interested: false,
            peer_interested: false,
            peer_seed: false,
            same_swarm: true,
        }
    }

    fn many_idle(n: u32, at: Timestamp) -> Vec<PeerUse<u32>> {
        (0..n).map(|k| idle(k, at)).collect()
    }

    // ---- shares ---------------------------------------------------------------------------------

    #[test]
    fn reserve_is_a_fifth_at_least_two_at_most_half() {
        assert_eq!(reserved_outgoing(50), 10);
        assert_eq!(reserved_outgoing(10), 2);
        assert_eq!(reserved_outgoing(4), 2);
        assert_eq!(reserved_outgoing(3), 1);
        assert_eq!(reserved_outgoing(1), 0, "one slot stays usable both ways");
    }

    #[test]
    fn incoming_stops_at_its_share_while_dials_still_fit() {
        let t0 = Timestamp::ZERO;
        let policy = SlotPolicy::new(50);
        let peers = many_idle(39, t0);
        assert_eq!(policy.on_incoming(LOOPBACK, &peers, false, t0), Admission::Admit);
        let peers = many_idle(40, t0);
        assert_eq!(policy.on_incoming(LOOPBACK, &peers, false, t0), Admission::Full, "all in their grace period");
        assert_eq!(policy.on_dial(LOOPBACK, &peers, false, t0), Admission::Admit, "the reserve is free");
    }

    #[test]
    fn incoming_over_its_share_never_replaces_an_outgoing_peer() {
        let t0 = Timestamp::ZERO;
        let policy = SlotPolicy::new(10);
        let mut peers = many_idle(8, t0 + secs(100));
        let mut ours = idle(99, t0);
        ours.outgoing = true;
        peers.push(ours);
        // Our own connection is the idlest, but it sits in the reserve.
        let later = t0 + secs(100) + INTEREST_GRACE;
        assert!(matches!(policy.on_incoming(LOOPBACK, &peers, false, later), Admission::Replace(k) if k != 99));
        assert_eq!(policy.on_dial(LOOPBACK, &peers, false, later), Admission::Admit);
    }

    // ---- per address ----------------------------------------------------------------------------

    #[test]
    fn one_connection_per_address_except_loopback() {
        let t0 = Timestamp::ZERO;
        let policy = SlotPolicy::new(50);
        let mut p = idle(1, t0);
        p.ip = ip(7);
        let peers = vec![p, idle(2, t0)];
        assert_eq!(policy.on_incoming(ip(7), &peers, false, t0), Admission::SameAddress);
        assert_eq!(policy.on_dial(ip(7), &peers, false, t0), Admission::SameAddress);
        let mapped = IpAddr::V6(std::net::Ipv4Addr::new(10, 0, 0, 7).to_ipv6_mapped());
        assert_eq!(policy.on_incoming(mapped, &peers, false, t0), Admission::SameAddress, "v4-mapped is the same");
        assert_eq!(policy.on_incoming(ip(8), &peers, false, t0), Admission::Admit);
        assert_eq!(policy.on_incoming(LOOPBACK, &peers, false, t0), Admission::Admit, "loopback is exempt");
        let v6_loopback = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
        assert_eq!(policy.on_dial(v6_loopback, &[idle(3, t0)], false, t0), Admission::Admit);
    }

    // ---- replacement ----------------------------------------------------------------------------

    #[test]
    fn idle_peers_give_way_once_their_grace_is_over() {
        let t0 = Timestamp::ZERO;
        let policy = SlotPolicy::new(50);
        let peers = many_idle(40, t0);
        let before = t0 + INTEREST_GRACE - millis(1);
        assert_eq!(policy.on_incoming(LOOPBACK, &peers, false, before), Admission::Full);
        assert!(matches!(policy.on_incoming(LOOPBACK, &peers, false, t0 + INTEREST_GRACE), Admission::Replace(_)));
    }

    #[test]
    fn a_peer_moving_payload_is_never_replaced() {
        let t0 = Timestamp::ZERO;
        let policy = SlotPolicy::new(2);
        // One sends us data; the other we serve. Neither is "interested" right now.
        let mut a = idle(1, t0);
        a.last_payload = Some(t0 + secs(100));
        let mut b = idle(2, t0);
        b.last_payload = Some(t0 + secs(130));
        let peers = [a, b];
        let now = t0 + secs(159);
        assert_eq!(policy.on_incoming(LOOPBACK, &peers, false, now), Admission::Full);
        assert_eq!(policy.on_dial(LOOPBACK, &peers, false, now), Admission::Full);
        // A minute after its last block, the first one is idle.
        let now = t0 + secs(160);
        assert_eq!(policy.on_dial(LOOPBACK, &peers, false, now), Admission::Replace(1));
    }

    #[test]
    fn interested_but_idle_peer_goes_after_a_minute() {
        let t0 = Timestamp::ZERO;
        let policy = SlotPolicy::new(2);
        let mut a = idle(1, t0);
        a.peer_interested = true;
        let mut b = idle(2, t0);
        b.am_interested = true;
        let peers = [a, b];
        assert_eq!(policy.on_dial(LOOPBACK, &peers, false, t0 + IDLE_AFTER - millis(1)), Admission::Full);
        assert!(matches!(policy.on_dial(LOOPBACK, &peers, false, t0 + IDLE_AFTER), Admission::Replace(_)));
    }

    #[test]
    fn ranking_handshaking_then_seed_meets_seed_then_no_interest_then_idle() {
        let t0 = Timestamp::ZERO;
        let now = t0 + secs(1000);
        let policy = SlotPolicy::new(4);
        let mut idle_long = idle(4, t0);
        idle_long.am_interested = true;
        let no_interest = idle(3, now - secs(10));
        let mut seed = idle(2, now - secs(10));
        seed.peer_seed = true;
        seed.am_interested = true;
        let mut handshaking = idle(1, now - secs(10));
        handshaking.handshaken = false;
        let mut peers = vec![idle_long, no_interest, seed, handshaking];
        let mut order = Vec::new();
        while let Admission::Replace(k) = policy.on_dial(LOOPBACK, &peers, true, now) {
            order.push(k);
            peers.retain(|p| p.key != k);
            peers.push(PeerUse { key: 100, connected_at: now, ..idle(100, now) });
        }
        assert_eq!(order, [1, 2, 3, 4]);
    }

    #[test]
    fn seed_meets_seed_only_when_we_seed() {
        let t0 = Timestamp::ZERO;
        let policy = SlotPolicy::new(2);
        let mut a = idle(1, t0);
        a.peer_seed = true;
        a.am_interested = true;
        let peers = [a, a];
        assert_eq!(policy.on_dial(LOOPBACK, &peers, false, t0 + secs(1)), Admission::Full);
        assert_eq!(policy.on_dial(LOOPBACK, &peers, true, t0 + secs(1)), Admission::Replace(1));
    }

    #[test]
    fn handshaking_peer_has_a_short_grace_and_our_connects_none_to_lose() {
        let t0 = Timestamp::ZERO;
        let policy = SlotPolicy::new(2);
        let mut shaking = idle(1, t0);
        shaking.handshaken = false;
        let mut dialling = idle(2, t0);
        dialling.outgoing = true;
        dialling.connecting = true;
        dialling.handshaken = false;
        let peers = [shaking, dialling];
        assert_eq!(policy.on_dial(LOOPBACK, &peers, false, t0 + HANDSHAKE_GRACE - millis(1)), Admission::Full);
        assert_eq!(policy.on_dial(LOOPBACK, &peers, false, t0 + secs(1000)), Admission::Replace(1));
    }

    #[test]
    fn longest_idle_goes_first_within_a_rank() {
        let t0 = Timestamp::ZERO;
        let policy = SlotPolicy::new(3);
        let mut a = idle(1, t0);
        a.last_payload = Some(t0 + secs(20));
        let b = idle(2, t0 + secs(10));
        let mut c = idle(3, t0);
        c.last_payload = Some(t0 + secs(5));
        let peers = [a, b, c];
        assert_eq!(policy.on_dial(LOOPBACK, &peers, false, t0 + secs(500)), Admission::Replace(3));
    }
}
