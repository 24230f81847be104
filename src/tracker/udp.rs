//! UDP tracker protocol (BEP 15, <https://www.bittorrent.org/beps/bep_0015.html>): packets and one exchange.
//!
//! Owns: the byte layout of connect, announce, scrape and error packets (all big-endian), and
//! `UdpExchange`, the state machine of one announce or scrape: connect → request, a random transaction id
//! checked with the action on every reply, a connection id reused for up to one minute, retransmission
//! after 15·2ⁿ s; transaction-id namespaces, so that several torrents' trackers share one UDP socket and
//! a reply is routed to its torrent by its transaction id alone (`udp_reply_namespace`).
//! Must not: own a socket, read the clock, or pick which tracker to ask (that is `Trackers`).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::codec;
use super::error::TrackerError;
use super::message::{AnnounceParams, AnnounceReply, Answer, ScrapeCounts, MAX_PEERS_PER_REPLY};
use crate::metainfo::InfoHash;
use crate::rng::Entropy;
use crate::time::{secs, Timestamp};

/// BEP 15: the magic constant of a connect request.
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;
/// BEP 15: "a client can use a connection ID until one minute after it has received it".
pub const CONNECTION_ID_LIFETIME: Duration = secs(60);
/// BEP 15: "If a response is not received after 15 * 2 ^ n seconds, the client should retransmit".
pub const RETRANSMIT_BASE: Duration = secs(15);
/// BEP 15: "n ... up to 8 (3840 seconds)".
pub const MAX_RETRANSMIT_EXPONENT: u32 = 8;

pub const CONNECT_LEN: usize = 16;
pub const ANNOUNCE_LEN: usize = 98;
pub const SCRAPE_LEN: usize = 16 + 20;
/// Announce reply header before the peer entries.
const ANNOUNCE_REPLY_HEADER: usize = 20;
/// Replies longer than this (a full 18-byte peer list at our peer cap) are ignored as oversized.
pub const MAX_REPLY_LEN: usize = ANNOUNCE_REPLY_HEADER + codec::COMPACT_V6_LEN * MAX_PEERS_PER_REPLY;

/// Bits at the top of every transaction id that name the `Trackers` which drew it (its namespace, one per
/// torrent), so that the driver routes a reply on a shared socket without asking each torrent. The other
/// `32 - TXN_NAMESPACE_BITS` bits (20) are random, from the `Entropy` (the OS CSPRNG in production): an
/// off-path forger must guess those and also send from the tracker's address.
pub const TXN_NAMESPACE_BITS: u32 = 12;
const TXN_RANDOM_BITS: u32 = 32 - TXN_NAMESPACE_BITS;
const TXN_RANDOM_MASK: u32 = (1 << TXN_RANDOM_BITS) - 1;
/// Namespaces are `0..TXN_NAMESPACES`.
pub const TXN_NAMESPACES: u32 = 1 << TXN_NAMESPACE_BITS;

/// A fresh transaction id in `namespace` (`< TXN_NAMESPACES`; higher bits are dropped): the namespace in
/// the top bits, random bits from `entropy` below.
pub fn draw_transaction_id(namespace: u16, entropy: &mut Entropy) -> u32 {
    debug_assert!(u32::from(namespace) < TXN_NAMESPACES, "namespace {namespace} out of range");
    let namespace = u32::from(namespace) & (TXN_NAMESPACES - 1);
    namespace << TXN_RANDOM_BITS | entropy.next_u32() & TXN_RANDOM_MASK
}

/// The namespace a transaction id was drawn in.
pub fn txn_namespace_of(transaction_id: u32) -> u16 {
    // The shift leaves TXN_NAMESPACE_BITS (12) bits, which fit.
    u16::try_from(transaction_id >> TXN_RANDOM_BITS).unwrap_or(u16::MAX)
}

/// The namespace of a BEP 15 reply, read before any other check: the top `TXN_NAMESPACE_BITS` of its
/// transaction id (bytes 4..8, after the action). `None` when the datagram is too short to hold one.
pub fn udp_reply_namespace(datagram: &[u8]) -> Option<u16> {
    let id: [u8; 4] = datagram.get(4..8)?.try_into().ok()?;
    Some(txn_namespace_of(u32::from_be_bytes(id)))
}

const ACTION_CONNECT: u32 = 0;
const ACTION_ANNOUNCE: u32 = 1;
const ACTION_SCRAPE: u32 = 2;
const ACTION_ERROR: u32 = 3;

pub fn encode_connect(transaction_id: u32) -> [u8; CONNECT_LEN] {
    let mut p = [0u8; CONNECT_LEN];
    p[0..8].copy_from_slice(&PROTOCOL_ID.to_be_bytes());
    p[8..12].copy_from_slice(&ACTION_CONNECT.to_be_bytes());
    p[12..16].copy_from_slice(&transaction_id.to_be_bytes());
    p
}

/// The 98-byte announce: `ip` 0 (the tracker uses the source address), `num_want` as asked (-1 would be
/// "default"; we always ask for a number), our stable `key`.
pub fn encode_announce(connection_id: u64, transaction_id: u32, a: &AnnounceParams) -> [u8; ANNOUNCE_LEN] {
    let mut p = [0u8; ANNOUNCE_LEN];
    p[0..8].copy_from_slice(&connection_id.to_be_bytes());
    p[8..12].copy_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
    p[12..16].copy_from_slice(&transaction_id.to_be_bytes());
    p[16..36].copy_from_slice(&a.info_hash.0);
    p[36..56].copy_from_slice(&a.peer_id);
    p[56..64].copy_from_slice(&a.transfer.downloaded.to_be_bytes());
    p[64..72].copy_from_slice(&a.transfer.left.to_be_bytes());
    p[72..80].copy_from_slice(&a.transfer.uploaded.to_be_bytes());
    p[80..84].copy_from_slice(&(a.event as u32).to_be_bytes());
    // 84..88: ip 0.
    p[88..92].copy_from_slice(&a.key.to_be_bytes());
    let num_want = i32::try_from(a.numwant).unwrap_or(i32::MAX);
    p[92..96].copy_from_slice(&num_want.to_be_bytes());
    p[96..98].copy_from_slice(&a.port.to_be_bytes());
    p
}

pub fn encode_scrape(connection_id: u64, transaction_id: u32, info_hash: &InfoHash) -> [u8; SCRAPE_LEN] {
    let mut p = [0u8; SCRAPE_LEN];
    p[0..8].copy_from_slice(&connection_id.to_be_bytes());
    p[8..12].copy_from_slice(&ACTION_SCRAPE.to_be_bytes());
    p[12..16].copy_from_slice(&transaction_id.to_be_bytes());
    p[16..36].copy_from_slice(&info_hash.0);
    p
}

/// A tracker's datagram, borrowed where it lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    Connect {
        transaction_id: u32,
        connection_id: u64,
    },
    Announce {
        transaction_id: u32,
        interval: u32,
        leechers: u32,
        seeders: u32,
        /// Compact entries: 6 bytes each from an IPv4 tracker, 18 from an IPv6 one.
        peers: &'a [u8],
    },
    /// The counts of the first (our only) info-hash.
    Scrape {
        transaction_id: u32,
        seeders: u32,
        completed: u32,
        leechers: u32,
    },
    Error {
        transaction_id: u32,
        message: &'a [u8],
    },
}

impl Reply<'_> {
    pub fn transaction_id(&self) -> u32 {
        match *self {
            Reply::Connect { transaction_id, .. }
            | Reply::Announce { transaction_id, .. }
            | Reply::Scrape { transaction_id, .. }
            | Reply::Error { transaction_id, .. } => transaction_id,
        }
    }
}

/// Why a datagram was not taken as a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpError {
    /// Shorter than its action's fixed part.
    Short {
        len: usize,
    },
    Oversized {
        len: usize,
    },
    UnknownAction(u32),
}

impl fmt::Display for UdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UdpError::Short { len } => write!(f, "short datagram ({len} bytes)"),
            UdpError::Oversized { len } => write!(f, "oversized datagram ({len} bytes)"),
            UdpError::UnknownAction(a) => write!(f, "unknown action {a}"),
        }
    }
}

fn be_u32(d: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&d[at..at + 4]);
    u32::from_be_bytes(b)
}

/// Decodes any reply; lengths are checked before every read.
pub fn decode_reply(d: &[u8]) -> Result<Reply<'_>, UdpError> {
    if d.len() < 8 {
        return Err(UdpError::Short { len: d.len() });
    }
    if d.len() > MAX_REPLY_LEN {
        return Err(UdpError::Oversized { len: d.len() });
    }
    let action = be_u32(d, 0);
    let transaction_id = be_u32(d, 4);
    let need = |n: usize| {
        if d.len() < n {
            Err(UdpError::Short { len: d.len() })
        } else {
            Ok(())
        }
    };
    match action {
        ACTION_CONNECT => {
            need(CONNECT_LEN)?;
            let mut id = [0u8; 8];
            id.copy_from_slice(&d[8..16]);
            Ok(Reply::Connect { transaction_id, connection_id: u64::from_be_bytes(id) })
        }
        ACTION_ANNOUNCE => {
            need(ANNOUNCE_REPLY_HEADER)?;
            Ok(Reply::Announce {
                transaction_id,
                interval: be_u32(d, 8),
                leechers: be_u32(d, 12),
                seeders: be_u32(d, 16),
                peers: &d[ANNOUNCE_REPLY_HEADER..],
            })
        }
        ACTION_SCRAPE => {
            need(8 + 12)?;
            Ok(Reply::Scrape {
                transaction_id,
                seeders: be_u32(d, 8),
                completed: be_u32(d, 12),
                leechers: be_u32(d, 16),
            })
        }
        ACTION_ERROR => Ok(Reply::Error { transaction_id, message: &d[8..] }),
        other => Err(UdpError::UnknownAction(other)),
    }
}

// ---------------------------------------------------------------------------------------------------------
// One exchange.

/// A connection id and when we got it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionId {
    pub id: u64,
    pub obtained: Timestamp,
}

impl ConnectionId {
    pub fn is_fresh(&self, now: Timestamp) -> bool {
        now < self.obtained + CONNECTION_ID_LIFETIME
    }
}

/// What the exchange is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UdpWork {
    Announce(AnnounceParams),
    Scrape(InfoHash),
}

/// Retransmission schedule: the n-th retransmission goes out `base · 2ⁿ` after the previous send; after
/// the send numbered `max_exponent` goes unanswered for its wait, the exchange fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retransmit {
    pub base: Duration,
    pub max_exponent: u32,
}

impl Default for Retransmit {
    fn default() -> Self {
        Retransmit { base: RETRANSMIT_BASE, max_exponent: MAX_RETRANSMIT_EXPONENT }
    }
}

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Send {
    pub addr: SocketAddr,
    pub datagram: Vec<u8>,
}

/// The result of one input.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do (not due, or a datagram that is not ours).
    Idle,
    Send(Send),
    Done(Result<Answer, TrackerError>),
}

/// Where the exchange stands, named for what it awaits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Awaiting {
    ConnectReply,
    RequestReply { connection_id: u64 },
}

/// One announce or scrape to one tracker.
///
/// Invariants: `addrs` is not empty; `deadline` is when the packet in flight is due for retransmission;
/// `attempt` (the n of 15·2ⁿ) never exceeds `schedule.max_exponent`.
#[derive(Debug)]
pub struct UdpExchange {
    work: UdpWork,
    addrs: Vec<SocketAddr>,
    awaiting: Awaiting,
    /// Every transaction id this exchange draws carries it (see `TXN_NAMESPACE_BITS`).
    namespace: u16,
    transaction_id: u32,
    attempt: u32,
    schedule: Retransmit,
    deadline: Timestamp,
    /// The newest connection id this exchange learned, for the tracker's cache.
    learned: Option<ConnectionId>,
}

impl UdpExchange {
    /// Starts with the first packet: the request itself when `connection` is still fresh, else a connect.
    /// `addrs` must not be empty (the caller resolved the host); retransmissions rotate through them.
    /// Transaction ids are drawn in `namespace`.
    pub fn start(
        work: UdpWork,
        addrs: Vec<SocketAddr>,
        connection: Option<ConnectionId>,
        schedule: Retransmit,
        namespace: u16,
        now: Timestamp,
        entropy: &mut Entropy,
    ) -> (UdpExchange, Step) {
        debug_assert!(!addrs.is_empty(), "the caller resolved at least one address");
        let awaiting = match connection {
            Some(c) if c.is_fresh(now) => Awaiting::RequestReply { connection_id: c.id },
            _ => Awaiting::ConnectReply,
        };
        let mut exchange = UdpExchange {
            work,
            addrs,
            awaiting,
            namespace,
            transaction_id: draw_transaction_id(namespace, entropy),
            attempt: 0,
            schedule,
            deadline: now,
            learned: connection,
        };
        let step = exchange.transmit(now);
        (exchange, step)
    }

    pub fn transaction_id(&self) -> u32 {
        self.transaction_id
    }

    pub fn next_deadline(&self) -> Timestamp {
        self.deadline
    }

    pub fn connection(&self) -> Option<ConnectionId> {
        self.learned
    }

    /// True when `from` is one of the addresses this exchange talks to.
    pub fn talks_to(&self, from: SocketAddr) -> bool {
        self.addrs.contains(&from)
    }

    /// Sends (or re-sends) the packet for the current state to the next address in turn.
    fn transmit(&mut self, now: Timestamp) -> Step {
        let datagram = match (self.awaiting, &self.work) {
            (Awaiting::ConnectReply, _) => encode_connect(self.transaction_id).to_vec(),
            (Awaiting::RequestReply { connection_id }, UdpWork::Announce(p)) => {
                encode_announce(connection_id, self.transaction_id, p).to_vec()
            }
            (Awaiting::RequestReply { connection_id }, UdpWork::Scrape(h)) => {
                encode_scrape(connection_id, self.transaction_id, h).to_vec()
            }
        };
        let addr = self.addrs[self.attempt as usize % self.addrs.len()];
        self.deadline = now + self.schedule.base.saturating_mul(1 << self.attempt);
        Step::Send(Send { addr, datagram })
    }

    /// Retransmits when the wait ran out, going back to connect if the connection id expired meanwhile;
    /// fails once the last wait ran out. A call before the deadline does nothing.
    pub fn on_timeout(&mut self, now: Timestamp, entropy: &mut Entropy) -> Step {
        if now < self.deadline {
            return Step::Idle;
        }
        if self.attempt >= self.schedule.max_exponent {
            return Step::Done(Err(TrackerError::TimedOut));
        }
        self.attempt += 1;
        if let Awaiting::RequestReply { .. } = self.awaiting {
            if !self.learned.is_some_and(|c| c.is_fresh(now)) {
                // BEP 15: the connection id expired; get a new one before asking again.
                self.awaiting = Awaiting::ConnectReply;
                self.learned = None;
                self.transaction_id = draw_transaction_id(self.namespace, entropy);
            }
        }
        self.transmit(now)
    }

    /// A reply whose transaction id is ours (the caller routed it by `transaction_id()`); `from` must be
    /// one of our tracker's addresses and the action must match what we await, or it is ignored.
    /// A reply that came over IPv6 carries 18-byte peer entries.
    pub fn on_reply(&mut self, from: SocketAddr, reply: &Reply<'_>, now: Timestamp, entropy: &mut Entropy) -> Step {
        if reply.transaction_id() != self.transaction_id || !self.talks_to(from) {
            return Step::Idle;
        }
        match (*reply, self.awaiting, &self.work) {
            (Reply::Error { message, .. }, _, _) => {
                // Our connection id may be what it objects to: never reuse it.
                self.learned = None;
                Step::Done(Err(TrackerError::Failure(codec::sanitize(message))))
            }
            (Reply::Connect { connection_id, .. }, Awaiting::ConnectReply, _) => {
                self.learned = Some(ConnectionId { id: connection_id, obtained: now });
                self.awaiting = Awaiting::RequestReply { connection_id };
                self.transaction_id = draw_transaction_id(self.namespace, entropy);
                self.attempt = 0;
                self.transmit(now)
            }
            (
                Reply::Announce { interval, leechers, seeders, peers, .. },
                Awaiting::RequestReply { .. },
                UdpWork::Announce(_),
            ) => {
                let peers = if from.is_ipv6() {
                    codec::compact_v6(peers).take(MAX_PEERS_PER_REPLY).collect()
                } else {
                    codec::compact_v4(peers).take(MAX_PEERS_PER_REPLY).collect()
                };
                Step::Done(Ok(Answer::Announce(AnnounceReply {
                    interval: Some(Duration::from_secs(u64::from(interval))),
                    min_interval: None,
                    tracker_id: None,
                    seeders: Some(seeders),
                    leechers: Some(leechers),
                    peers,
                    warning: None,
                })))
            }
            (Reply::Scrape { seeders, completed, leechers, .. }, Awaiting::RequestReply { .. }, UdpWork::Scrape(_)) => {
                Step::Done(Ok(Answer::Scrape(ScrapeCounts { seeders, leechers, completed })))
            }
            // Our transaction id with the wrong action: a confused or forged reply.
            _ => Step::Idle,
        }
    }
}

#[cfg(test)]
#[path = "udp_tests.rs"]
mod tests;
