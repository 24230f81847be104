//! Trackers: every tracker of one torrent, as sans-I/O state machines.
//!
//! Owns: BEP 12 tiers, the announce lifecycle (started / completed / stopped, interval, back-off), HTTP
//! (BEP 3, BEP 23) and UDP (BEP 15) announce and scrape encoding and decoding.
//! Must not: touch sockets, DNS, files or the clock. It asks the loop for I/O with `TrackerIo` and is told
//! what happened through `on_*` calls; `now` comes in with every call.
//!
//! Call order for the driver, after any `on_*` call: drain `poll_io()`, drain `poll_event()`, then re-read
//! `next_deadline()`.

use std::net::SocketAddr;

use crate::metainfo::InfoHash;
use crate::rng::Rng;
use crate::time::Timestamp;

/// Identity and numbers sent with every announce.
#[derive(Clone, Debug)]
pub struct ClientIdentity {
    pub info_hash: InfoHash,
    pub peer_id: [u8; 20],
    /// The port we accept peers on (0 when not listening).
    pub port: u16,
    /// BEP 7/15 `key`, stable for the session.
    pub key: u32,
    pub numwant: u32,
}

/// Transfer totals for `uploaded`, `downloaded`, `left`; the loop passes the current figures each call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transfer {
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
}

/// A request id handed out in `TrackerIo`, echoed back by the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IoId(pub u64);

/// I/O the tracker machines ask the loop to perform.
#[derive(Debug)]
pub enum TrackerIo {
    /// Resolve `host`; answer with `on_resolved(id, ..)`.
    Resolve { id: IoId, host: String, port: u16 },
    /// Connect to `addr`, write `request`, feed every byte read to `on_http_data(id, ..)`, and report the
    /// end of the stream with `on_http_closed(id, ..)`.
    HttpRequest { id: IoId, addr: SocketAddr, request: Vec<u8> },
    /// Close the HTTP connection `id` now (done, or timed out); no further calls for it.
    HttpClose { id: IoId },
    /// Send one datagram from the shared UDP socket of the address family of `addr`.
    UdpSend { addr: SocketAddr, datagram: Vec<u8> },
}

/// What the trackers learned, for the swarm, the log and the UI.
#[derive(Debug)]
pub enum TrackerEvent {
    /// New peer addresses (deduplicated across trackers by the swarm).
    Peers(Vec<SocketAddr>),
    /// A tracker's `warning message`, or an error (failure reason, timeout, bad reply): one line for the log.
    Warning { url: String, message: String },
    Error { url: String, message: String },
}

/// All trackers of one torrent.
pub struct Trackers {
    _private: (),
}

impl Trackers {
    pub fn new(tiers: &[Vec<String>], identity: ClientIdentity, rng: &mut Rng, now: Timestamp) -> Self {
        let _ = (tiers, identity, rng, now);
        Trackers { _private: () }
    }
    /// Starts whatever is due at `now` (announces, retransmissions, time-outs).
    pub fn on_timeout(&mut self, now: Timestamp, transfer: Transfer, rng: &mut Rng) {
        let _ = (now, transfer, rng);
    }
    pub fn next_deadline(&self) -> Option<Timestamp> {
        None
    }
    pub fn poll_io(&mut self) -> Option<TrackerIo> {
        None
    }
    pub fn poll_event(&mut self) -> Option<TrackerEvent> {
        None
    }
    pub fn on_resolved(&mut self, id: IoId, result: Result<Vec<SocketAddr>, String>, now: Timestamp) {
        let _ = (id, result, now);
    }
    pub fn on_http_data(&mut self, id: IoId, data: &[u8], now: Timestamp) {
        let _ = (id, data, now);
    }
    /// The connection ended: `Ok` for an orderly close by the server, `Err` with the reason otherwise.
    pub fn on_http_closed(&mut self, id: IoId, result: Result<(), std::io::ErrorKind>, now: Timestamp) {
        let _ = (id, result, now);
    }
    pub fn on_datagram(&mut self, from: SocketAddr, data: &[u8], now: Timestamp) {
        let _ = (from, data, now);
    }
    /// The last piece verified: send `completed` once.
    pub fn on_completed(&mut self, now: Timestamp, transfer: Transfer) {
        let _ = (now, transfer);
    }
    /// rill is exiting: send `stopped` to every tracker that knows us.
    pub fn on_stop(&mut self, now: Timestamp, transfer: Transfer) {
        let _ = (now, transfer);
    }
    /// True once every `stopped` announce has been answered or timed out.
    pub fn is_stopped(&self) -> bool {
        true
    }
}
