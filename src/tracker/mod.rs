//! Trackers: every tracker of one torrent, as sans-I/O state machines.
//!
//! Owns: BEP 12 tiers, the announce lifecycle (started / completed / stopped, interval, back-off), HTTP
//! (BEP 3, BEP 23, BEP 48) and UDP (BEP 15) announce and scrape encoding and decoding, the host-name cache,
//! peer de-duplication across trackers, and per-tracker status for the UI.
//! Must not: touch sockets, DNS, files or the clock. It asks the loop for I/O with `TrackerIo` and is told
//! what happened through `on_*` calls; `now` comes in with every call.
//!
//! Call order for the driver, after any `on_*` call: drain `poll_io()`, drain `poll_event()`, then re-read
//! `next_deadline()`. New announces only start inside `on_timeout`, `on_completed` and `on_stop` (the calls
//! that carry the current `Transfer`), so an `on_*` call that lets a tier fall back sets a deadline of `now`.
//!
//! # Tiers (BEP 12) and dead trackers
//!
//! Tiers keep their order and each tier's trackers are shuffled once with the seeded `Rng`. **Every tier
//! announces at the same time, one tracker per tier** (Transmission's behaviour), so a dead first tier
//! never delays peers from the second: in the time a working tier-2 tracker takes to answer, rill has peers.
//!
//! **But at most `MAX_IN_FLIGHT` HTTP exchanges (8, each a TCP socket) and `MAX_UDP_IN_FLIGHT` UDP
//! exchanges (512, on the one shared UDP socket) run at once** per torrent; due tiers wait their turn in
//! tier order. A torrent with thousands of trackers therefore costs a handful of sockets, and nothing per
//! waiting tracker beyond its URL and schedule. So that dead trackers do not hold the queue, an announce
//! to a tracker that has **never answered** gives its slot up after `FIRST_ANSWER_PATIENCE` (1 s, less while
//! many tiers queue: see `tiers::patience_for`; doubling with each unanswered try up to the request's own limit) while
//! another tier waits; it counts as a failure of that tracker, so its tier moves on or backs off and it
//! is tried again later. A tracker that answered before has `ANSWERED_PATIENCE` (15 s) instead, so a few
//! trackers that answer once and then go silent cannot hold every slot for a UDP retransmission schedule.
//! Within a tier, trackers are tried in order: an unusable URL, a name that does not resolve or a refused
//! connection moves on at once; an HTTP tracker that accepts and never answers moves on after
//! `Timeouts::http` (15 s); a silent UDP tracker after its first 15 s wait when another tracker of the tier
//! is left to try, and only after the full BEP 15 schedule (15·2ⁿ s, n ≤ 8) when it is the tier's last.
//! The first tracker that answers moves to the front of its tier and is used until it fails. When a whole
//! tier fails, it waits a back-off (60 s doubling to 1 h) and starts again from its front.
//!
//! # Lifecycle
//!
//! Each tracker gets `started` the first time we announce to it, `completed` once after `on_completed`
//! (unless it first heard of us as a seed), and `stopped` from `on_stop` only if it answered us before,
//! with a short time-out (`Timeouts::stop`). Re-announces follow `max(interval, min interval)` clamped
//! to 30 s .. 4 h; `tracker id` is echoed; `key` and `numwant` come from `ClientIdentity`.

pub mod codec;
pub mod error;
pub mod http;
pub mod message;
mod request;
mod resolve;
mod status;
mod tiers;
pub mod udp;

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

pub use codec::{TrackerUrl, UrlError};
pub use error::TrackerError;
pub use message::{AnnounceParams, AnnounceReply, Event, ScrapeCounts};
pub use status::{TrackerState, TrackerStatus};
pub use udp::{udp_reply_namespace, Retransmit, TXN_NAMESPACE_BITS};

use crate::metainfo::InfoHash;
use crate::rng::{Entropy, Rng};
use crate::time::{secs, Timestamp};
use request::{Request, Slot};
use resolve::HostCache;
use udp::ConnectionId;

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
    /// Send one datagram from the shared UDP socket of the address family of `addr`; report a failed send
    /// with `on_udp_send_failed` (a lost datagram is not a failure).
    UdpSend { addr: SocketAddr, datagram: Vec<u8> },
}

/// Where whoever performs `TrackerIo` gets the next request and reports what happened: one `Trackers`
/// (the scrape loop), or the engine, which namespaces the ids of many torrents' `Trackers` and routes back.
pub trait TrackerIoSink {
    fn poll_io(&mut self) -> Option<TrackerIo>;
    fn on_resolved(&mut self, id: IoId, result: Result<Vec<SocketAddr>, String>, now: Timestamp);
    fn on_http_data(&mut self, id: IoId, data: &[u8], now: Timestamp);
    fn on_http_closed(&mut self, id: IoId, result: Result<(), std::io::ErrorKind>, now: Timestamp);
    /// A datagram arrived on the shared UDP socket (the engine also finds DHT and uTP ones among them).
    fn on_datagram(&mut self, from: SocketAddr, data: &[u8], now: Timestamp);
    fn on_udp_send_failed(&mut self, addr: SocketAddr, kind: std::io::ErrorKind, now: Timestamp);
    /// How many bytes of HTTP exchange `id` may be read now: a web seed's under a rate limit. At 0 the
    /// driver holds the connection unread and asks again later (`TrackerDriver::retry_held`); trackers'
    /// own exchanges are never held.
    fn http_read_allowance(&self, id: IoId) -> usize {
        let _ = id;
        usize::MAX
    }
}

impl TrackerIoSink for Trackers {
    fn poll_io(&mut self) -> Option<TrackerIo> {
        Trackers::poll_io(self)
    }
    fn on_resolved(&mut self, id: IoId, result: Result<Vec<SocketAddr>, String>, now: Timestamp) {
        Trackers::on_resolved(self, id, result, now)
    }
    fn on_http_data(&mut self, id: IoId, data: &[u8], now: Timestamp) {
        Trackers::on_http_data(self, id, data, now)
    }
    fn on_http_closed(&mut self, id: IoId, result: Result<(), std::io::ErrorKind>, now: Timestamp) {
        Trackers::on_http_closed(self, id, result, now)
    }
    fn on_datagram(&mut self, from: SocketAddr, data: &[u8], now: Timestamp) {
        Trackers::on_datagram(self, from, data, now)
    }
    fn on_udp_send_failed(&mut self, addr: SocketAddr, kind: std::io::ErrorKind, now: Timestamp) {
        Trackers::on_udp_send_failed(self, addr, kind, now)
    }
}

/// What the trackers learned, for the swarm, the log and the UI.
#[derive(Debug)]
pub enum TrackerEvent {
    /// An announce to `url` starts (for `--trace`; nothing else needs it).
    Requested {
        url: String,
        event: Event,
    },
    /// Peer addresses no tracker of this torrent gave before (de-duplicated across trackers here).
    Peers(Vec<SocketAddr>),
    /// A tracker's `warning message`, or an error (failure reason, timeout, bad reply): one line for the log.
    Warning {
        url: String,
        message: String,
    },
    Error {
        url: String,
        message: String,
    },
    /// An announce succeeded: how many peers it listed (new or not) and the swarm counts it gave.
    Announced {
        url: String,
        event: Event,
        peers: usize,
        seeders: Option<u32>,
        leechers: Option<u32>,
    },
    /// A scrape started by `scrape()` finished.
    Scraped {
        url: String,
        result: Result<ScrapeCounts, TrackerError>,
    },
}

/// Time limits; the defaults are the production values, tests shorten them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// One HTTP request, from lookup to the end of the body (also bounds a lookup for UDP).
    pub http: Duration,
    /// BEP 15 retransmission for UDP trackers.
    pub udp: Retransmit,
    /// How long `stopped` announces may take when rill exits.
    pub stop: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { http: secs(15), udp: Retransmit::default(), stop: secs(5) }
    }
}

/// One tracker URL and what we know about it.
#[derive(Debug)]
struct Tracker {
    url_text: String,
    tier: usize,
    /// Boxed: a tracker waiting its turn holds no request state.
    announce: Option<Box<Request>>,
    scrape: Option<Box<Request>>,
    /// BEP 15 connection id, shared by this tracker's exchanges.
    connection: Option<ConnectionId>,
    /// It answered an announce: it knows us, so it gets `stopped`.
    started_ok: bool,
    /// It got `completed` (or first heard of us as a seed after we completed).
    completed_sent: bool,
    /// rill is stopping while this tracker's `completed` is in flight: send `stopped` once it ends.
    stop_after_completed: bool,
    tracker_id: Option<Vec<u8>>,
    state: TrackerState,
    last_announce: Option<Timestamp>,
    peers: usize,
    seeders: Option<u32>,
    leechers: Option<u32>,
    last_error: Option<String>,
    /// Announces in a row that ended without an answer while it never answered (lengthens its patience).
    unanswered: u32,
}

impl Tracker {
    /// A tracker never asked, in tier `tier`.
    fn fresh(url_text: String, tier: usize) -> Tracker {
        Tracker {
            url_text,
            tier,
            announce: None,
            scrape: None,
            connection: None,
            started_ok: false,
            completed_sent: false,
            stop_after_completed: false,
            tracker_id: None,
            state: TrackerState::Idle,
            last_announce: None,
            peers: 0,
            seeders: None,
            leechers: None,
            last_error: None,
            unanswered: 0,
        }
    }

    /// The URL, parsed when a request starts (a tracker waiting its turn keeps only the text).
    fn url(&self) -> Result<TrackerUrl, UrlError> {
        TrackerUrl::parse(&self.url_text)
    }

    /// Which budget its exchanges count against (see `Budget`).
    fn budget(&self) -> Budget {
        let scheme = self.url_text.get(..6).unwrap_or("");
        if scheme.eq_ignore_ascii_case("udp://") {
            Budget::Datagrams
        } else {
            Budget::Sockets
        }
    }

    /// Requests in flight (announce and scrape count apart).
    fn requests(&self) -> usize {
        usize::from(self.announce.is_some()) + usize::from(self.scrape.is_some())
    }
}

/// Exchanges in flight are limited per kind of cost. An HTTP exchange holds a TCP socket (a file descriptor
/// peers need too); a UDP exchange is a few datagrams on the one shared UDP socket and a hundred bytes of
/// state, so many more of them may wait for an answer at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Budget {
    Sockets,
    Datagrams,
}

impl Budget {
    fn limit(self) -> usize {
        match self {
            Budget::Sockets => MAX_IN_FLIGHT,
            Budget::Datagrams => MAX_UDP_IN_FLIGHT,
        }
    }
}

/// One BEP 12 tier.
///
/// Invariants: `order` is not empty and holds tracker indices of this tier; `pos < order.len()`;
/// `next_at` is `None` exactly while `order[pos]` has an announce in flight (or announcing is off).
#[derive(Debug)]
struct Tier {
    order: Vec<usize>,
    pos: usize,
    next_at: Option<Timestamp>,
    /// Whole-tier failures in a row, for the back-off.
    failures: u32,
    /// A re-announce the user asks for (`reannounce`) may start from then: the answering tracker's
    /// minimum interval after its answer.
    manual_from: Timestamp,
}

/// All trackers of one torrent.
pub struct Trackers {
    identity: ClientIdentity,
    trackers: Vec<Tracker>,
    tiers: Vec<Tier>,
    hosts: HostCache,
    io: VecDeque<TrackerIo>,
    events: VecDeque<TrackerEvent>,
    /// Every peer address already handed out in `TrackerEvent::Peers`.
    known_peers: HashSet<SocketAddr>,
    /// The figures from the latest call that carried them.
    transfer: Transfer,
    /// UDP transaction ids (BEP 15: a guessed one lets an off-path attacker forge replies): the OS
    /// source in production.
    entropy: Entropy,
    /// The top `TXN_NAMESPACE_BITS` of every UDP transaction id we draw; replies in another are not ours.
    txn_namespace: u16,
    next_io: u64,
    timeouts: Timeouts,
    /// Trackers with a request in flight (announce, scrape or both), in no order. Every per-request scan
    /// walks this list, never all trackers.
    active: Vec<usize>,
    /// Trackers whose scrape waits for a free slot.
    scrape_queue: VecDeque<usize>,
    /// `start_queued_scrapes` is running.
    starting_scrapes: bool,
    /// False for a scrape-only instance.
    announcing: bool,
    completed: bool,
    /// Set by `on_stop`: no new announces; `stopped` requests run until this deadline.
    stop_deadline: Option<Timestamp>,
}

/// A tracker list as `Trackers` uses it: each URL trimmed, empty ones and repeats (in any tier) left out, then
/// empty tiers left out. Front-ends number trackers by their place in this list.
pub fn normalize_tiers(tiers: &[Vec<String>]) -> Vec<Vec<String>> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut out = Vec::with_capacity(tiers.len());
    for urls in tiers {
        let tier: Vec<String> =
            urls.iter().map(|u| u.trim()).filter(|u| !u.is_empty() && seen.insert(u)).map(str::to_string).collect();
        if !tier.is_empty() {
            out.push(tier);
        }
    }
    out
}

impl Trackers {
    /// `tiers` as in the metainfo (`announce-list`, or `[[announce]]`); empty tiers and repeated URLs are
    /// dropped. The first announce to every tier is due at `now`.
    /// `entropy` draws the UDP transaction ids (the OS source in production); `rng` only shuffles tiers.
    pub fn new(
        tiers: &[Vec<String>],
        identity: ClientIdentity,
        entropy: Entropy,
        rng: &mut Rng,
        now: Timestamp,
    ) -> Self {
        let mut own = Rng::seeded(rng.next_u64());
        let tiers = normalize_tiers(tiers);
        // Sized up front: a torrent may list tens of thousands of trackers, and doubling would hold two copies.
        let count: usize = tiers.iter().map(Vec::len).sum();
        let mut trackers = Vec::with_capacity(count);
        let mut tier_list = Vec::with_capacity(tiers.len());
        for urls in tiers {
            let mut order = Vec::with_capacity(urls.len());
            for text in urls {
                order.push(trackers.len());
                trackers.push(Tracker::fresh(text, tier_list.len()));
            }
            own.shuffle(&mut order);
            tier_list.push(Tier { order, pos: 0, next_at: Some(now), failures: 0, manual_from: now });
        }
        Trackers {
            identity,
            trackers,
            tiers: tier_list,
            hosts: HostCache::default(),
            io: VecDeque::new(),
            events: VecDeque::new(),
            known_peers: HashSet::new(),
            transfer: Transfer::default(),
            entropy,
            txn_namespace: 0,
            next_io: 0,
            active: Vec::new(),
            scrape_queue: VecDeque::new(),
            starting_scrapes: false,
            timeouts: Timeouts::default(),
            announcing: true,
            completed: false,
            stop_deadline: None,
        }
    }

    /// An instance that never announces, for `rill info --scrape`: call `scrape(now)` and wait for
    /// `TrackerEvent::Scraped` until `is_scraping()` is false.
    pub fn scrape_only(
        tiers: &[Vec<String>],
        info_hash: InfoHash,
        entropy: Entropy,
        rng: &mut Rng,
        now: Timestamp,
    ) -> Self {
        let identity = ClientIdentity { info_hash, peer_id: [0; 20], port: 0, key: 0, numwant: 0 };
        let mut trackers = Trackers::new(tiers, identity, entropy, rng, now);
        trackers.announcing = false;
        for tier in &mut trackers.tiers {
            tier.next_at = None;
        }
        trackers
    }

    /// Draws every UDP transaction id in namespace `ns` (`ns < 4096`, see `TXN_NAMESPACE_BITS`): `ns` in
    /// the top 12 bits and 20 random bits below. Several torrents' `Trackers` share one UDP socket, each
    /// with its own namespace, and the driver routes a reply by `udp_reply_namespace`. The default is 0.
    /// Call it before the first `on_timeout`: exchanges already started keep their namespace.
    #[must_use]
    pub fn with_txn_namespace(mut self, ns: u16) -> Self {
        debug_assert!(u32::from(ns) < udp::TXN_NAMESPACES, "namespace {ns} out of range");
        self.txn_namespace = ns & (udp::TXN_NAMESPACES - 1) as u16;
        self
    }

    /// The namespace of our UDP transaction ids (see `with_txn_namespace`).
    pub fn txn_namespace(&self) -> u16 {
        self.txn_namespace
    }

    /// Who we say we are to trackers (the `key` included).
    pub fn identity(&self) -> &ClientIdentity {
        &self.identity
    }

    /// Replaces the time limits; affects requests started afterwards.
    pub fn set_timeouts(&mut self, timeouts: Timeouts) {
        self.timeouts = timeouts;
    }

    /// Starts whatever is due at `now` (announces, retransmissions, time-outs). A call with nothing due
    /// does nothing. `rng` is not needed: transaction ids come from the `Entropy` given to `new`, so that
    /// replies (which arrive without one) can draw them too.
    pub fn on_timeout(&mut self, now: Timestamp, transfer: Transfer, rng: &mut Rng) {
        let _ = rng;
        self.transfer = transfer;
        self.expire_requests(now);
        self.give_up_impatient(now);
        self.start_due_announces(now);
    }

    /// The earliest moment `on_timeout` has work. While every slot is taken, a due tier only counts from
    /// the moment an unanswered tracker's patience runs out (before that there is nothing to do for it).
    #[must_use]
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let announcing = self.announcing && self.stop_deadline.is_none();
        // Per budget: a due tier counts at once while its budget has room; while it is full, from the moment
        // an unanswered tracker of the same budget runs out of patience (before that, and for the other
        // budget's trackers, there is nothing to do for it: waking then would spin).
        let tier_due = [Budget::Sockets, Budget::Datagrams]
            .into_iter()
            .filter(|_| announcing)
            .filter_map(|budget| {
                let due = self
                    .tiers
                    .iter()
                    .filter(|tier| self.trackers[tier.order[tier.pos]].budget() == budget)
                    .filter_map(|tier| tier.next_at)
                    .min()?;
                if self.has_room(budget) {
                    Some(due)
                } else {
                    self.earliest_patience_end(budget).map(|patience| due.max(patience))
                }
            })
            .min();
        let requests = self
            .active
            .iter()
            .flat_map(|&t| [&self.trackers[t].announce, &self.trackers[t].scrape])
            .filter_map(|r| r.as_deref().and_then(Request::deadline))
            .min();
        [tier_due, requests].into_iter().flatten().min()
    }

    /// Requests in flight against `budget` (a tracker's announce and scrape count apart).
    fn in_flight_of(&self, budget: Budget) -> usize {
        self.active.iter().map(|&t| &self.trackers[t]).filter(|tr| tr.budget() == budget).map(Tracker::requests).sum()
    }

    /// Requests in flight, of either kind.
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.active.iter().map(|&t| self.trackers[t].requests()).sum()
    }

    fn has_room(&self, budget: Budget) -> bool {
        self.in_flight_of(budget) < budget.limit()
    }

    pub fn poll_io(&mut self) -> Option<TrackerIo> {
        self.io.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<TrackerEvent> {
        self.events.pop_front()
    }

    /// The user asks for more peers now: every tier waiting for its next announce whose tracker's
    /// minimum interval has passed announces at once (a tier with a request in flight or backing off
    /// after failures is left alone, so asking again and again cannot flood a tracker).
    pub fn reannounce(&mut self, now: Timestamp, transfer: Transfer) {
        self.transfer = transfer;
        for tier in &mut self.tiers {
            if tier.failures == 0 && tier.manual_from <= now && tier.next_at.is_some_and(|at| at > now) {
                tier.next_at = Some(now);
            }
        }
        self.start_due_announces(now);
    }

    /// The last piece verified: send `completed` once, now, to every tier's tracker that knows us.
    pub fn on_completed(&mut self, now: Timestamp, transfer: Transfer) {
        self.transfer = transfer;
        if self.completed {
            return;
        }
        self.completed = true;
        if !self.announcing || self.stop_deadline.is_some() {
            return;
        }
        for i in 0..self.tiers.len() {
            let t = self.tiers[i].order[self.tiers[i].pos];
            let tracker = &self.trackers[t];
            if tracker.started_ok && !tracker.completed_sent && tracker.announce.is_none() {
                self.tiers[i].next_at = Some(now);
            }
        }
        self.start_due_announces(now);
    }

    /// rill is exiting: cancel what is in flight and send `stopped` to every tracker that answered us.
    pub fn on_stop(&mut self, now: Timestamp, transfer: Transfer) {
        self.transfer = transfer;
        if self.stop_deadline.is_some() {
            return;
        }
        let deadline = now + self.timeouts.stop;
        self.stop_deadline = Some(deadline);
        for tier in &mut self.tiers {
            tier.next_at = None;
        }
        let announcing = self.announcing;
        for t in 0..self.trackers.len() {
            self.cancel(t, Slot::Scrape);
            // A `completed` still in flight is let finish (the tracker's completed count depends on it);
            // `stopped` follows it, within the same deadline.
            let completing = self.trackers[t].announce.as_ref().and_then(|r| r.event()) == Some(Event::Completed);
            if completing {
                self.trackers[t].stop_after_completed = true;
                continue;
            }
            self.cancel(t, Slot::Announce);
            let tracker = &mut self.trackers[t];
            if !tracker.started_ok || !announcing {
                if tracker.state == TrackerState::Announcing {
                    tracker.state = TrackerState::Stopped;
                }
                continue;
            }
            self.send_stopped(t, deadline, now);
        }
    }

    /// Sends `stopped` to tracker `t` (it knows us), failing at `deadline`.
    fn send_stopped(&mut self, t: usize, deadline: Timestamp, now: Timestamp) {
        self.trackers[t].state = TrackerState::Stopping;
        let params = self.announce_params(t, Event::Stopped);
        let schedule = Retransmit {
            base: self.timeouts.udp.base.min(STOP_RETRANSMIT),
            max_exponent: udp::MAX_RETRANSMIT_EXPONENT,
        };
        self.begin_announce(t, params, Some(deadline), schedule, now);
    }

    /// True once `on_stop` was called and every `stopped` announce has been answered or timed out.
    pub fn is_stopped(&self) -> bool {
        self.stop_deadline.is_some() && self.trackers.iter().all(|t| t.announce.is_none())
    }

    /// Scrapes every tracker once (BEP 48 over HTTP, action 2 over UDP); each answer arrives as
    /// `TrackerEvent::Scraped`. A tracker whose scrape is still running is not asked again.
    pub fn scrape(&mut self, now: Timestamp) {
        if self.scrape_queue.is_empty() {
            let idle = (0..self.trackers.len()).filter(|&t| self.trackers[t].scrape.is_none());
            self.scrape_queue.extend(idle);
        }
        self.start_queued_scrapes(now);
    }

    /// Starts queued scrapes while a slot is free. A scrape that ends at once (a bad URL, a cached failed
    /// lookup) calls back in here through `finish`; the guard keeps that from recursing.
    fn start_queued_scrapes(&mut self, now: Timestamp) {
        if self.starting_scrapes {
            return;
        }
        self.starting_scrapes = true;
        while let Some(&t) = self.scrape_queue.front() {
            if !self.has_room(self.trackers[t].budget()) {
                break;
            }
            self.scrape_queue.pop_front();
            let target = match self.trackers[t].url() {
                Err(e) => Err(TrackerError::Url(e)),
                Ok(url) => url.scrape_url().ok_or(TrackerError::NoScrape),
            };
            match target {
                Ok(target) => self.begin_scrape(t, target, now),
                Err(e) => {
                    let url = self.trackers[t].url_text.clone();
                    self.events.push_back(TrackerEvent::Scraped { url, result: Err(e) });
                }
            }
        }
        self.starting_scrapes = false;
    }

    pub fn is_scraping(&self) -> bool {
        !self.scrape_queue.is_empty() || self.active.iter().any(|&t| self.trackers[t].scrape.is_some())
    }
}

/// HTTP exchanges with trackers in flight at once, per torrent (announces and scrapes; `stopped` announces on
/// exit go only to trackers that answered and are not counted). Each holds a TCP socket.
const MAX_IN_FLIGHT: usize = 8;
/// UDP exchanges in flight at once, per torrent: they share the one UDP socket and hold no descriptor, only
/// their request state (a few hundred bytes) and one 16-byte connect datagram per try, so a list of thousands of
/// silent UDP trackers is gone through in a few seconds.
const MAX_UDP_IN_FLIGHT: usize = 512;
/// How long an announce to a tracker that never answered may hold its slot while others wait; doubles with
/// each unanswered try (up to `MAX_PATIENCE_DOUBLINGS` times), and never extends the request's own limits.
/// A tracker that is merely slow is asked again later with twice the patience.
const FIRST_ANSWER_PATIENCE: Duration = secs(1);
const MAX_PATIENCE_DOUBLINGS: u32 = 3;
/// The same for a tracker that answered before: one BEP 15 retransmission wait.
const ANSWERED_PATIENCE: Duration = secs(15);

/// `stopped` announces over UDP are retransmitted at least this often, inside `Timeouts::stop`.
const STOP_RETRANSMIT: Duration = secs(1);

#[cfg(test)]
mod mutation_tests;
#[cfg(test)]
mod tests;
