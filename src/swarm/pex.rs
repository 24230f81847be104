//! Peer exchange (BEP 11, `ut_pex`) with one connected peer: what to tell it, and what to take from it.
//!
//! Owns: per connection, the set of addresses we told the peer about (so the next message carries only the
//! difference: `added` and `dropped`), the once-a-minute pace of our messages, and the filter on the peer's
//! messages (at most [`MAX_LEARNED_PER_MESSAGE`] new addresses per message and [`MAX_LEARNED_PER_PEER`] per
//! connection, no duplicates, never our own address, never port 0 or an unspecified, multicast or broadcast
//! address, and local addresses only from a local peer, as libtorrent does: a peer on the internet must not
//! steer us at hosts on our own network).
//! Must not: encode or decode bytes itself (`wire::pex` does), know extension ids (the session's BEP 10 registry
//! does), decide whom to dial (the caller feeds what `on_message` returns to `Candidates`), or run for a private
//! torrent (BEP 27: the caller never creates one there, and never advertises `ut_pex`).
//!
//! Call order, per connection that advertised `ut_pex` in its extended handshake:
//! 1. [`PeerExchange::with_remote`] (or [`PeerExchange::new`], which trusts any address) once the extended
//!    handshakes are exchanged;
//! 2. [`PeerExchange::poll_message`] right away (the first message is allowed at once), then whenever the driver's
//!    tick or [`PeerExchange::next_deadline`] comes; a `Some(payload)` is sent as an extended message with the id
//!    the peer assigned to `ut_pex`;
//! 3. [`PeerExchange::on_message`] for every `ut_pex` message the peer sends; the addresses go to `Candidates`.
//!
//! <https://www.bittorrent.org/beps/bep_0011.html>

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::time::{secs, Timestamp};
use crate::wire::pex::{self, PexError};

/// Least time between two of our messages to one peer (BEP 11 and the clients' convention: at most one a
/// minute; libtorrent and Transmission do the same).
pub const MESSAGE_INTERVAL: Duration = secs(60);

/// Most peers in the `added` lists of one of our messages, both families together, and likewise in the
/// `dropped` lists (the clients' convention; some drop a peer that sends more). The rest wait for the next.
pub const MAX_ADDED_PER_MESSAGE: usize = 50;
pub const MAX_DROPPED_PER_MESSAGE: usize = 50;

/// Most new addresses taken from one message of the peer.
pub const MAX_LEARNED_PER_MESSAGE: usize = 50;

/// Most addresses taken from one connection in all; after that its messages are decoded and ignored, so a
/// peer cannot fill the address book by itself.
pub const MAX_LEARNED_PER_PEER: usize = 300;

/// PEX state for one connection.
#[derive(Clone, Debug)]
pub struct PeerExchange {
    /// Addresses our messages told the peer about (in `added`) and not yet took back (in `dropped`).
    /// Invariant: every entry is [`is_exchangeable`]. Bounded: it only grows while every dropped peer fits in
    /// one message, so it holds at most the caller's connected peers plus [`MAX_DROPPED_PER_MESSAGE`].
    sent: BTreeSet<SocketAddr>,
    /// When our last message went out; `None` before the first.
    last_sent: Option<Timestamp>,
    /// Addresses the peer told us about and we passed on. Invariant: `heard.len() <= MAX_LEARNED_PER_PEER`.
    heard: BTreeSet<SocketAddr>,
    /// Whether the peer may tell us about local addresses (loopback, private, link-local): only when it is
    /// local itself.
    local_ok: bool,
}

impl PeerExchange {
    /// PEX with a peer whose own address is not known: every address is taken.
    pub fn new() -> Self {
        PeerExchange { sent: BTreeSet::new(), last_sent: None, heard: BTreeSet::new(), local_ok: true }
    }

    /// PEX with the peer at `remote`: local addresses are taken from it only if `remote` is local too.
    pub fn with_remote(remote: SocketAddr) -> Self {
        PeerExchange { local_ok: is_local(canonical(remote).ip()), ..Self::new() }
    }

    /// Our next message, if one is due: the encoded `ut_pex` payload, with `added` = the `connected` peers not
    /// told before and `dropped` = the peers told before that are no longer `connected`. `None` when it is
    /// less than [`MESSAGE_INTERVAL`] since the last message, or when nothing changed.
    ///
    /// `connected` are the listening addresses of our other connected peers (never the peer itself: the caller
    /// leaves it out); addresses that cannot be dialled are left out. No flags: see
    /// [`PeerExchange::poll_message_with_flags`]. A returned message must be sent: its peers count as told.
    #[must_use]
    pub fn poll_message(&mut self, connected: &[SocketAddr], now: Timestamp) -> Option<Vec<u8>> {
        self.message(connected.iter().map(|&addr| (addr, 0)), now)
    }

    /// As [`PeerExchange::poll_message`], with each peer's `added.f` flags (`wire::pex::flags`, e.g. `SEED`
    /// when the peer has every piece, `PREFERS_ENCRYPTION`, `REACHABLE` when we dialled it).
    #[must_use]
    pub fn poll_message_with_flags(&mut self, connected: &[(SocketAddr, u8)], now: Timestamp) -> Option<Vec<u8>> {
        self.message(connected.iter().copied(), now)
    }

    fn message(
        &mut self,
        connected: impl Iterator<Item = (SocketAddr, u8)> + Clone,
        now: Timestamp,
    ) -> Option<Vec<u8>> {
        if self.next_deadline().is_some_and(|due| now < due) {
            return None;
        }
        let mut added: Vec<(SocketAddr, u8)> = Vec::new();
        for (addr, flags) in connected.clone() {
            let addr = canonical(addr);
            if added.len() == MAX_ADDED_PER_MESSAGE {
                break;
            }
            if is_exchangeable(addr) && !self.sent.contains(&addr) && !added.iter().any(|a| a.0 == addr) {
                added.push((addr, flags));
            }
        }
        let still: BTreeSet<SocketAddr> = connected.map(|(addr, _)| canonical(addr)).collect();
        let dropped: Vec<SocketAddr> =
            self.sent.iter().filter(|a| !still.contains(a)).take(MAX_DROPPED_PER_MESSAGE).copied().collect();
        if added.is_empty() && dropped.is_empty() {
            return None;
        }
        for addr in &dropped {
            self.sent.remove(addr);
        }
        self.sent.extend(added.iter().map(|a| a.0));
        self.last_sent = Some(now);
        let mut out = Vec::new();
        pex::encode(&added, &dropped, &mut out);
        Some(out)
    }

    /// The earliest time our next message may go out; `None` before the first one (it may go at once).
    #[must_use]
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.last_sent.map(|t| t + MESSAGE_INTERVAL)
    }

    /// A `ut_pex` message from the peer: the addresses in its `added` lists worth dialling. Never more than
    /// [`MAX_LEARNED_PER_MESSAGE`], none it told us before, none of `own` (our listening addresses; one with
    /// an unspecified IP stands for every loopback address on its port), none that cannot be dialled, no local
    /// one from a peer that is not local (see [`PeerExchange::with_remote`]); nothing at all once
    /// [`MAX_LEARNED_PER_PEER`] came from this connection. `dropped` is ignored: a third party's
    /// word does not close our connections. A payload that is not a valid `ut_pex` dictionary is an error (the
    /// caller may drop the peer).
    pub fn on_message(&mut self, payload: &[u8], own: &[SocketAddr]) -> Result<Vec<SocketAddr>, PexError> {
        let msg = pex::decode(payload)?;
        let room = MAX_LEARNED_PER_MESSAGE.min(MAX_LEARNED_PER_PEER.saturating_sub(self.heard.len()));
        let mut learned = Vec::new();
        for (addr, _flags) in msg.added {
            if learned.len() == room {
                break;
            }
            let addr = canonical(addr);
            let allowed = self.local_ok || !is_local(addr.ip());
            if allowed && is_exchangeable(addr) && !is_own(addr, own) && self.heard.insert(addr) {
                learned.push(addr);
            }
        }
        Ok(learned)
    }

    /// How many addresses this connection gave us in all.
    pub fn learned_total(&self) -> usize {
        self.heard.len()
    }
}

impl Default for PeerExchange {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether an address may be told to or taken from a peer: a port, and an IP that names one host.
pub fn is_exchangeable(addr: SocketAddr) -> bool {
    let ip = addr.ip();
    addr.port() != 0
        && !ip.is_unspecified()
        && !ip.is_multicast()
        && !matches!(ip, IpAddr::V4(v4) if v4 == Ipv4Addr::BROADCAST)
}

/// Loopback, private (RFC 1918, IPv6 unique-local `fc00::/7`) or link-local: a host on our own network.
pub fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it is, so one host is one entry.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

fn is_own(addr: SocketAddr, own: &[SocketAddr]) -> bool {
    own.iter().any(|&o| {
        let o = canonical(o);
        o == addr || (o.port() == addr.port() && o.ip().is_unspecified() && addr.ip().is_loopback())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::pex::{decode, encode, flags, PexMessage};

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn v4s(n: u16) -> Vec<SocketAddr> {
        (1..=n).map(|i| SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 6881))).collect()
    }

    #[track_caller]
    fn sent(pex: &mut PeerExchange, connected: &[SocketAddr], now: Timestamp) -> PexMessage {
        let payload = pex.poll_message(connected, now).expect("a message is due");
        decode(&payload).expect("our message decodes")
    }

    fn payload(added: &[SocketAddr]) -> Vec<u8> {
        let added: Vec<(SocketAddr, u8)> = added.iter().map(|&a| (a, 0)).collect();
        let mut out = Vec::new();
        encode(&added, &[], &mut out);
        out
    }

    fn added_addrs(msg: &PexMessage) -> Vec<SocketAddr> {
        msg.added.iter().map(|a| a.0).collect()
    }

    // --- Sending ---------------------------------------------------------------------------------------------

    #[test]
    fn sending_first_message_goes_at_once_with_both_families() {
        let t0 = Timestamp::from_secs(5);
        let mut pex = PeerExchange::new();
        assert_eq!(pex.next_deadline(), None, "the first message may go at once");
        let connected = [a("10.0.0.1:6881"), a("[2001:db8::1]:51413"), a("10.0.0.2:1")];
        let msg = sent(&mut pex, &connected, t0);
        assert_eq!(added_addrs(&msg), [connected[0], connected[2], connected[1]]);
        assert!(msg.dropped.is_empty());
        assert_eq!(pex.next_deadline(), Some(t0 + MESSAGE_INTERVAL));
    }

    #[test]
    fn sending_waits_a_minute_then_sends_only_the_difference() {
        let t0 = Timestamp::ZERO;
        let mut pex = PeerExchange::new();
        let (p1, p2, p3, p6) = (a("10.0.0.1:1000"), a("10.0.0.2:2000"), a("10.0.0.3:3000"), a("[::2]:6000"));
        sent(&mut pex, &[p1, p2, p6], t0);
        assert_eq!(pex.poll_message(&[p1, p3], t0 + secs(59)), None, "too early");
        let msg = sent(&mut pex, &[p1, p3], t0 + secs(60));
        assert_eq!(added_addrs(&msg), [p3]);
        assert_eq!(msg.dropped, [p2, p6], "dropped in both families");
        assert_eq!(pex.poll_message(&[p1, p3], t0 + secs(200)), None, "nothing changed");
        assert_eq!(pex.next_deadline(), Some(t0 + secs(120)), "an empty poll does not restart the minute");
        let msg = sent(&mut pex, &[p1, p3, p2], t0 + secs(201));
        assert_eq!(added_addrs(&msg), [p2], "a peer dropped and back is added again");
    }

    #[test]
    fn sending_nothing_to_tell_is_none_and_keeps_the_first_message_free() {
        let t0 = Timestamp::ZERO;
        let mut pex = PeerExchange::new();
        assert_eq!(pex.poll_message(&[], t0), None);
        assert_eq!(pex.next_deadline(), None);
        let p = a("10.0.0.1:1000");
        assert_eq!(added_addrs(&sent(&mut pex, &[p], t0 + secs(1))), [p], "a peer that connects later is told");
    }

    #[test]
    fn sending_caps_added_and_dropped_at_fifty_and_keeps_the_rest_for_later() {
        let t0 = Timestamp::ZERO;
        let mut pex = PeerExchange::new();
        let mut many = v4s(60);
        many.extend((1..=10u16).map(|i| SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, i], 6881))));
        let msg = sent(&mut pex, &many, t0);
        assert_eq!(msg.added.len(), MAX_ADDED_PER_MESSAGE, "both families count towards the cap");
        assert_eq!(added_addrs(&msg), many[..50]);
        let msg = sent(&mut pex, &many, t0 + secs(60));
        assert_eq!(added_addrs(&msg), many[50..], "the rest come in the next message");
        let msg = sent(&mut pex, &[], t0 + secs(120));
        assert!(msg.added.is_empty());
        assert_eq!(msg.dropped.len(), MAX_DROPPED_PER_MESSAGE);
        let msg = sent(&mut pex, &[], t0 + secs(180));
        assert_eq!(msg.dropped.len(), 20);
        assert_eq!(pex.poll_message(&[], t0 + secs(240)), None, "every drop told");
    }

    #[test]
    fn sending_flags_are_carried_and_bad_or_repeated_addresses_left_out() {
        let t0 = Timestamp::ZERO;
        let mut pex = PeerExchange::new();
        let seed = (a("10.0.0.1:1000"), flags::SEED | flags::REACHABLE);
        let v6 = (a("[2001:db8::7]:7000"), flags::PREFERS_ENCRYPTION);
        let connected = [
            seed,
            (a("10.0.0.2:0"), 0),
            (a("0.0.0.0:1"), 0),
            (a("255.255.255.255:1"), 0),
            (a("224.0.0.1:1"), 0),
            (a("[::]:1"), 0),
            (a("[ff02::1]:1"), 0),
            (a("[::ffff:10.0.0.1]:1000"), 0),
            v6,
            seed,
        ];
        let payload = pex.poll_message_with_flags(&connected, t0).unwrap();
        assert_eq!(decode(&payload).unwrap().added, [seed, v6]);
    }

    // --- Receiving -------------------------------------------------------------------------------------------

    #[test]
    fn receiving_takes_both_families_once_and_never_our_own() {
        let own = [a("127.0.0.1:6881"), a("[::1]:6881")];
        let mut pex = PeerExchange::new();
        let (p4, p6) = (a("127.0.0.1:7000"), a("[::1]:7000"));
        let got = pex.on_message(&payload(&[p4, own[0], p6, own[1]]), &own).unwrap();
        assert_eq!(got, [p4, p6]);
        let p = a("10.1.1.1:1");
        let got = pex.on_message(&payload(&[p4, p6, p, a("[::ffff:127.0.0.1]:7000")]), &own).unwrap();
        assert_eq!(got, [p], "no address this peer told us before");
        assert_eq!(pex.learned_total(), 3);
    }

    #[test]
    fn receiving_an_unspecified_own_address_stands_for_loopback_on_its_port() {
        let own = [a("0.0.0.0:6881"), a("[::]:6881")];
        let mut pex = PeerExchange::new();
        let got = pex
            .on_message(&payload(&[a("127.0.0.1:6881"), a("[::1]:6881"), a("10.0.0.1:6881"), a("127.0.0.1:1")]), &own)
            .unwrap();
        assert_eq!(got, [a("10.0.0.1:6881"), a("127.0.0.1:1")]);
    }

    #[test]
    fn receiving_skips_port_zero_unspecified_multicast_and_broadcast() {
        let mut pex = PeerExchange::new();
        // Port 0 never gets past the codec; write it by hand.
        let mut bytes = b"d5:added12:".to_vec();
        bytes.extend([10, 0, 0, 1, 0, 0, 10, 0, 0, 2, 0x1a, 0xe1]);
        bytes.push(b'e');
        assert_eq!(pex.on_message(&bytes, &[]).unwrap(), [a("10.0.0.2:6881")]);
        let bad = [a("0.0.0.0:1"), a("255.255.255.255:1"), a("239.1.2.3:1"), a("[::]:1"), a("[ff05::2]:1")];
        assert_eq!(pex.on_message(&payload(&bad), &[]).unwrap(), []);
        assert_eq!(pex.learned_total(), 1);
    }

    #[test]
    fn receiving_caps_each_message_and_the_connection_total() {
        let mut pex = PeerExchange::new();
        let mut total = 0;
        let mut port = 1u16;
        for round in 0.. {
            // 50 IPv4 and 50 IPv6 each time: the codec keeps 50 of each family, we take 50 in all.
            let fresh: Vec<SocketAddr> = (0..50)
                .flat_map(|_| {
                    port += 1;
                    [
                        SocketAddr::from(([10, 9, 8, 7], port)),
                        SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], port)),
                    ]
                })
                .collect();
            let got = pex.on_message(&payload(&fresh), &[]).unwrap();
            assert!(got.len() <= MAX_LEARNED_PER_MESSAGE, "round {round}: {} taken", got.len());
            if got.is_empty() {
                break;
            }
            total += got.len();
        }
        assert_eq!(total, MAX_LEARNED_PER_PEER);
        assert_eq!(pex.learned_total(), MAX_LEARNED_PER_PEER);
    }

    #[test]
    fn receiving_local_addresses_only_from_a_local_peer() {
        let local = [a("127.0.0.1:1"), a("10.1.2.3:1"), a("172.16.0.1:1"), a("192.168.1.1:1"), a("169.254.0.1:1")];
        let local6 = [a("[::1]:1"), a("[fd00::1]:1"), a("[fe80::1]:1")];
        let public = [a("203.0.113.5:1"), a("[2001:db8::5]:1")];
        let all: Vec<SocketAddr> = local.iter().chain(&local6).chain(&public).copied().collect();
        for remote in [a("203.0.113.9:6881"), a("[2001:db8::9]:6881"), a("[::ffff:8.8.8.8]:1")] {
            let mut pex = PeerExchange::with_remote(remote);
            assert_eq!(pex.on_message(&payload(&all), &[]).unwrap(), public, "from {remote}");
        }
        // The codec gives IPv4 entries before IPv6 ones.
        let (mut v4_first, v6): (Vec<SocketAddr>, Vec<SocketAddr>) = all.iter().partition(|a| a.is_ipv4());
        v4_first.extend(v6);
        for remote in [a("127.0.0.1:6881"), a("192.168.0.7:6881"), a("[fe80::2]:6881"), a("[::ffff:10.0.0.1]:1")] {
            let mut pex = PeerExchange::with_remote(remote);
            assert_eq!(pex.on_message(&payload(&all), &[]).unwrap(), v4_first, "from {remote}");
        }
        assert_eq!(PeerExchange::new().on_message(&payload(&all), &[]).unwrap(), v4_first, "no remote: no filter");
    }

    #[test]
    fn receiving_malformed_payloads_is_an_error_and_changes_nothing() {
        let mut pex = PeerExchange::new();
        assert!(matches!(pex.on_message(b"d5:added5:12345e", &[]), Err(PexError::BadList("added"))));
        assert!(matches!(pex.on_message(b"i3e", &[]), Err(PexError::Bencode(_))));
        assert!(matches!(pex.on_message(b"", &[]), Err(PexError::Bencode(_))));
        let deep = format!("d1:x{}{}e", "l".repeat(100_000), "e".repeat(100_000));
        assert!(pex.on_message(deep.as_bytes(), &[]).is_err());
        assert_eq!(pex.learned_total(), 0);
        // Dropped lists and unknown keys are ignored.
        let p = a("10.0.0.1:1");
        let mut bytes = Vec::new();
        encode(&[(p, flags::SEED)], &[a("10.0.0.2:2")], &mut bytes);
        assert_eq!(pex.on_message(&bytes, &[]).unwrap(), [p]);
    }

    #[test]
    fn two_sides_converge_on_each_others_peers() {
        // What one side sends, the other takes, and a second identical message adds nothing.
        let t0 = Timestamp::ZERO;
        let (mut ours, mut theirs) = (PeerExchange::new(), PeerExchange::new());
        let connected = [a("127.0.0.1:7001"), a("[::1]:7002")];
        let msg = ours.poll_message(&connected, t0).unwrap();
        assert_eq!(theirs.on_message(&msg, &[a("127.0.0.1:9")]).unwrap(), connected);
        assert_eq!(theirs.on_message(&msg, &[a("127.0.0.1:9")]).unwrap(), []);
    }
}
